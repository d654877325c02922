//! The relay: follows the event log in PostgreSQL and publishes every
//! committed event to Kafka.
//!
//! - Topic per aggregate type (`{prefix}.{aggregate}.events`), key = aggregate
//!   id, value = the JSON envelope, headers with event id, type, schema
//!   version, correlation id, organization and global position.
//! - Idempotent producer with `acks=all`; the checkpoint moves only after the
//!   broker acknowledged every message of a batch. A crash between the two
//!   republishes that batch (at-least-once); consumers deduplicate by event id
//!   and aggregate version.
//! - Optionally pipelined: with `relay.batches_in_flight` above 1 (the
//!   default is 1), the next batches are read and handed to the producer
//!   while earlier ones await their acknowledgements; the checkpoint still
//!   moves batch by batch, in order. After a failure, every batch in flight
//!   is settled before the relay resends from the checkpoint.
//! - A batch the producer's queue has no room for
//!   (`queue.buffering.max.messages`) ends at the last record it took; the
//!   rest follow once that part is acknowledged. A full queue is back
//!   pressure, not a failure.
//! - One active relay per name: it holds a PostgreSQL advisory lock on a
//!   dedicated connection, and reads and checkpoints through that same
//!   connection, so a relay that lost its lock cannot move the checkpoint.
//!   Others wait on the lock and take over when the holder dies.
//!   `relay_active` is 1 on the instance holding the lock, 0 on the others.
//! - When the broker is down it retries with exponential back-off and loses
//!   nothing; it logs its lag (events and seconds) as it goes.
//! - A producer with a fatal error (librdkafka's idempotent producer gives
//!   up for good when it cannot keep a partition's sequence) is replaced by
//!   a new one once everything in flight is settled, and publishing resumes
//!   from the checkpoint (ADR 0028).
//! - When part of a batch fails, the checkpoint first moves past the
//!   records acknowledged before the first failure, so only the rest is
//!   sent again.
//! - A record refused for good (too large for the producer or the topic,
//!   invalid to the broker, not permitted) is never skipped: the log waits
//!   behind it, as it must to stay in order. The relay says so once at
//!   error level, names the event in [`RelayStatus::blocked`] and
//!   `relay_blocked`, retries it alone at the longest back-off, and
//!   carries on once an operator has raised the limit (ADR 0030).
//! - Its lag (`relay_lag_events`, `relay_lag_seconds`) is measured every
//!   two seconds also while publishing fails, so that it grows for alerts
//!   while the broker is down or the log is blocked.
//! - Events committed while an older transaction anywhere in the cluster
//!   is still open wait above the horizon (ADR 0002); how many and how
//!   long the oldest has waited are measured with the lag
//!   (`relay_held_events`, `relay_held_seconds`). Once the oldest has
//!   waited `relay.held_warning_ms`, the relay names the transaction that
//!   holds them, the one at the horizon (a session's: process id,
//!   database, user, application, state, how long open; a prepared one's:
//!   gid, database, owner) in a warning, at most every 30 s, and in
//!   [`RelayStatus::held`] (ADR 0050).
//!
//! # Layout
//!
//! - [`run`]: the process loop (leadership, batches, back-off).
//! - [`publish`]: turning a logged event into a Kafka record and awaiting acks.

pub mod publish;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use pivotal_event_store::log::{self, Checkpoint, HorizonHolder};
use pivotal_messaging::topics;
use pivotal_settings::{KafkaSettings, Settings};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

/// How often the relay measures its lag (`relay_lag_events`, `relay_lag_seconds`).
const LAG_REPORT: Duration = Duration::from_secs(2);

/// Least time between two warnings about the same held events.
const HELD_WARNING_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topics: {0}")]
    Topics(#[from] topics::TopicError),
    #[error("event {0} cannot be published: {1}")]
    Envelope(String, String),
    #[error("delivery failed: {0}")]
    Delivery(String),
    #[error("{0}")]
    Refused(Box<publish::Refusal>),
}

/// What the relay reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    pub leader: bool,
    pub checkpoint: Checkpoint,
    pub published: u64,
    /// The most batches that awaited the broker's acknowledgements at once.
    pub most_in_flight: usize,
    /// Producers made: one at the start and one for each replaced after a
    /// fatal error.
    pub producers: u64,
    /// Events committed after the checkpoint, as last measured.
    pub lag_events: i64,
    /// The record the log waits behind while Kafka refuses it for good.
    pub blocked: Option<publish::Refusal>,
    /// Events that have waited above the horizon for
    /// `relay.held_warning_ms` or longer, as last measured.
    pub held: Option<Held>,
}

/// Committed events the relay cannot read yet because a transaction that
/// began before them is still open (ADR 0002, ADR 0050).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub events: i64,
    /// How long the oldest of them has waited, in milliseconds.
    pub oldest_ms: u64,
    /// The transaction at the horizon (the oldest running in the
    /// cluster); none when it had ended by the time the relay looked, or
    /// could not be looked up.
    pub holder: Option<HorizonHolder>,
}

/// Makes the relay's Kafka producer, at the start and again whenever the
/// one in use has a fatal error.
pub type MakeProducer = dyn Fn(&KafkaSettings) -> Result<FutureProducer, KafkaError> + Send + Sync;

/// Runs the relay until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    pool: PgPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RelayError> {
    let (status, _) = watch::channel(RelayStatus::default());
    run_with_status(settings, pool, shutdown, status).await
}

/// [`run`], publishing its [`RelayStatus`] on `status`.
pub async fn run_with_status(
    settings: Settings,
    pool: PgPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
    status: watch::Sender<RelayStatus>,
) -> Result<(), RelayError> {
    run_with_producers(
        settings,
        pool,
        shutdown,
        status,
        Box::new(|kafka| pivotal_messaging::config::producer(kafka).create()),
    )
    .await
}

/// [`run_with_status`] with its producers made by `make_producer`.
pub async fn run_with_producers(
    settings: Settings,
    pool: PgPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
    status: watch::Sender<RelayStatus>,
    make_producer: Box<MakeProducer>,
) -> Result<(), RelayError> {
    let producer = make_producer(&settings.kafka)?;
    status.send_modify(|s| s.producers = 1);
    metrics::gauge!("relay_blocked").set(0.0);
    metrics::gauge!("relay_active").set(0.0);
    // At 0 from the start, so that an alert on its increase sees the first.
    metrics::counter!("relay_producers_replaced_total").increment(0);
    let mut relay = Relay {
        settings,
        pool,
        producer,
        make_producer,
        ensured: HashSet::new(),
        status,
        last_lag_report: Instant::now(),
        last_held_warning: None,
    };
    tokio::select! {
        () = shutdown => {
            tracing::info!("relay stopping");
            Ok(())
        }
        result = relay.lead_forever() => result,
    }
}

/// A batch handed to the producer whose acknowledgements are awaited.
struct InFlight {
    /// Its last event: the checkpoint once it is acknowledged.
    last: Checkpoint,
    count: usize,
    pending: publish::Pending,
}

struct Relay {
    settings: Settings,
    pool: PgPool,
    producer: FutureProducer,
    make_producer: Box<MakeProducer>,
    ensured: HashSet<String>,
    status: watch::Sender<RelayStatus>,
    last_lag_report: Instant,
    /// When the held events were last warned about, while they still are.
    last_held_warning: Option<Instant>,
}

impl Relay {
    fn backoff(&self, attempt: u32) -> Duration {
        let base = 100u64.saturating_mul(1 << attempt.min(10));
        Duration::from_millis(base.min(self.settings.relay.max_backoff_ms))
    }

    async fn lead_forever(&mut self) -> Result<(), RelayError> {
        let mut attempt = 0;
        loop {
            match self.lead_once().await {
                Ok(()) => attempt = 0,
                Err(error) => {
                    attempt += 1;
                    self.status.send_modify(|s| s.leader = false);
                    metrics::gauge!("relay_active").set(0.0);
                    let wait = self.backoff(attempt);
                    tracing::warn!(error = %error, wait_ms = wait.as_millis() as u64, "relay interrupted, retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Waits for the lock, then publishes until something fails.
    async fn lead_once(&mut self) -> Result<(), RelayError> {
        // A connection of its own, outside the pool: when this future is
        // dropped or fails, the session ends and the lock is released with it.
        let mut conn = self.pool.acquire().await?.detach();
        let name = format!("pivotal-relay:{}", self.settings.relay.name);
        loop {
            let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(&name)
                .fetch_one(&mut conn)
                .await?;
            if locked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::info!(relay = %self.settings.relay.name, "relay is the active instance");
        self.publish_loop(&mut conn).await
    }

    /// Reads batches after the checkpoint and hands them to the producer,
    /// up to `relay.batches_in_flight` ahead of the broker's
    /// acknowledgements; moves the checkpoint past each batch, in order,
    /// once every record of it is acknowledged. After a failure, what is
    /// still in flight is waited for before anything is sent again from the
    /// checkpoint, so a retry never overtakes a record sent before it.
    async fn publish_loop(&mut self, conn: &mut PgConnection) -> Result<(), RelayError> {
        let name = self.settings.relay.name.clone();
        let mut checkpoint = log::load_checkpoint(&mut *conn, &name).await?;
        self.status.send_modify(|s| {
            s.leader = true;
            s.checkpoint = checkpoint;
        });
        metrics::gauge!("relay_active").set(1.0);
        let depth = self.settings.relay.batches_in_flight.max(1);
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(depth);
        // The last event handed to the producer.
        let mut cursor = checkpoint;
        let mut failures = 0u32;
        loop {
            if in_flight.len() < depth && in_flight.back().is_none_or(|b| !b.pending.is_refused()) {
                // While a record refused for good blocks the log, it goes
                // alone, so the records after it (which the broker may take)
                // are not published at every retry.
                let size = if self.status.borrow().blocked.is_some() {
                    1
                } else {
                    self.settings.relay.batch_size
                };
                let batch = log::read_after(&mut *conn, cursor, size).await?;
                if let Some(last) = batch.last().map(log::LoggedEvent::checkpoint) {
                    self.ensure_topics(&batch).await?;
                    let prefix = &self.settings.kafka.topic_prefix;
                    match publish::enqueue(&self.producer, prefix, &batch) {
                        // The producer's queue has no room: wait below for
                        // the oldest batch in flight (or a moment).
                        Ok(pending) if pending.is_cut() && pending.handed() == 0 => {}
                        Ok(pending) => {
                            // The batch ends at the last record handed over
                            // (all of them unless the queue filled up or the
                            // producer refused the next); the rest are read
                            // again after it.
                            let handed = pending.handed();
                            let last = handed
                                .checked_sub(1)
                                .map_or(last, |i| batch[i].checkpoint());
                            in_flight.push_back(InFlight {
                                last,
                                count: handed,
                                pending,
                            });
                            cursor = last;
                            let now = in_flight.len();
                            self.status.send_if_modified(|s| {
                                let more = now > s.most_in_flight;
                                s.most_in_flight = s.most_in_flight.max(now);
                                more
                            });
                            continue;
                        }
                        Err(error) => {
                            self.retry_later(&mut in_flight, &mut failures, error, checkpoint)
                                .await?;
                            cursor = checkpoint;
                            continue;
                        }
                    }
                }
            }
            let Some(batch) = in_flight.pop_front() else {
                self.report_lag_when_due(checkpoint).await;
                // Keep the session (and its lock) demonstrably alive while idle.
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
                tokio::time::sleep(Duration::from_millis(self.settings.relay.poll_interval_ms))
                    .await;
                continue;
            };
            if let Err(failed) = batch.pending.acknowledged().await {
                // The records before the first that failed are on the
                // broker: the checkpoint moves past them, so that the retry
                // (every retry, while Kafka refuses a record for good) does
                // not publish them again.
                if let Some(record) = failed.acknowledged {
                    checkpoint = record.checkpoint();
                    self.advance(&mut *conn, &name, checkpoint, failed.count)
                        .await?;
                }
                self.retry_later(&mut in_flight, &mut failures, failed.error, checkpoint)
                    .await?;
                cursor = checkpoint;
                continue;
            }
            failures = 0;
            checkpoint = batch.last;
            self.advance(&mut *conn, &name, checkpoint, batch.count)
                .await?;
            let mut unblocked = None;
            self.status.send_modify(|s| unblocked = s.blocked.take());
            if let Some(blocked) = unblocked {
                tracing::info!(event.id = %blocked.record.event_id, position = blocked.record.position, "the refused event is published; the log moves again");
                metrics::gauge!("relay_blocked").set(0.0);
            }
            tracing::debug!(
                count = batch.count,
                position = batch.last.position,
                "batch published"
            );
            self.report_lag_when_due(checkpoint).await;
        }
    }

    /// Moves the checkpoint past `count` acknowledged records ending at
    /// `last`, through the connection holding the lock.
    async fn advance(
        &self,
        conn: &mut PgConnection,
        name: &str,
        last: Checkpoint,
        count: usize,
    ) -> Result<(), RelayError> {
        log::save_checkpoint(conn, name, last, count as i64).await?;
        self.status.send_modify(|s| {
            s.checkpoint = last;
            s.published += count as u64;
        });
        metrics::counter!("relay_published_total").increment(count as u64);
        Ok(())
    }

    /// After a batch failed: waits until every later batch in flight is
    /// settled (acknowledged or failed), replaces the producer if it has a
    /// fatal error, measures the lag when due, then backs off.
    async fn retry_later(
        &mut self,
        in_flight: &mut VecDeque<InFlight>,
        failures: &mut u32,
        error: RelayError,
        checkpoint: Checkpoint,
    ) -> Result<(), RelayError> {
        for batch in in_flight.drain(..) {
            // Its outcome does not matter: it is sent again after the
            // failed batch.
            let _ = batch.pending.acknowledged().await;
        }
        *failures += 1;
        let wait = match &error {
            RelayError::Refused(refusal) if refusal.is_permanent() => {
                self.block(refusal);
                Duration::from_millis(self.settings.relay.max_backoff_ms)
            }
            _ => {
                let wait = self.backoff(*failures);
                tracing::warn!(error = %error, wait_ms = wait.as_millis() as u64, "publishing failed, will retry from the checkpoint");
                wait
            }
        };
        self.replace_producer_if_fatal()?;
        self.report_lag_when_due(checkpoint).await;
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Records that the log waits behind a record Kafka refuses for good:
    /// logged at error level when first met (not on every retry), and shown
    /// in the status and `relay_blocked`.
    fn block(&self, refusal: &publish::Refusal) {
        let new = self.status.send_if_modified(|s| {
            let new = s.blocked.as_ref() != Some(refusal);
            if new {
                s.blocked = Some(refusal.clone());
            }
            new
        });
        if new {
            tracing::error!(
                event.id = %refusal.record.event_id,
                position = refusal.record.position,
                bytes = refusal.record.bytes,
                error = %refusal.error,
                "Kafka refuses this event for good; every later event waits behind it. \
                 Raise the limit it exceeds (the topic's max.message.bytes, the \
                 producer's message.max.bytes) or grant the permission; the relay \
                 keeps retrying"
            );
        }
        metrics::gauge!("relay_blocked").set(1.0);
    }

    /// A producer with a fatal error refuses every record from then on, so
    /// only a new one can publish. Called once nothing is in flight: the new
    /// producer (a new producer id, its sequences from zero) never races
    /// the old one's records.
    fn replace_producer_if_fatal(&mut self) -> Result<(), RelayError> {
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return Ok(());
        };
        tracing::error!(error = %reason, code = %code, "the producer has a fatal error; replacing it");
        let new = (self.make_producer)(&self.settings.kafka)?;
        let old = std::mem::replace(&mut self.producer, new);
        // Dropping a producer blocks: it purges, flushes (up to 0.5 s) and
        // joins its polling thread.
        tokio::task::spawn_blocking(move || drop(old));
        metrics::counter!("relay_producers_replaced_total").increment(1);
        self.status.send_modify(|s| s.producers += 1);
        Ok(())
    }

    async fn ensure_topics(&mut self, batch: &[log::LoggedEvent]) -> Result<(), RelayError> {
        let missing: Vec<&str> = batch
            .iter()
            .map(|e| e.aggregate_type.as_str())
            .filter(|t| !self.ensured.contains(*t))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        topics::ensure_event_topics(&self.settings.kafka, &missing).await?;
        self.ensured.extend(missing.into_iter().map(str::to_owned));
        Ok(())
    }

    /// Measures the lag if the last measurement is older than [`LAG_REPORT`].
    async fn report_lag_when_due(&mut self, checkpoint: Checkpoint) {
        if self.last_lag_report.elapsed() > LAG_REPORT {
            self.report_lag(checkpoint).await;
            self.last_lag_report = Instant::now();
        }
    }

    async fn report_lag(&mut self, checkpoint: Checkpoint) {
        match log::behind(&self.pool, checkpoint).await {
            Ok(behind) => {
                let events = behind.events;
                let seconds = behind.oldest_seconds.unwrap_or(0.0);
                self.status.send_if_modified(|s| {
                    let changed = s.lag_events != events;
                    s.lag_events = events;
                    changed
                });
                metrics::gauge!("relay_lag_events").set(events as f64);
                metrics::gauge!("relay_lag_seconds").set(seconds);
                metrics::gauge!("relay_held_events").set(behind.held_events as f64);
                metrics::gauge!("relay_held_seconds").set(behind.held_seconds.unwrap_or(0.0));
                tracing::debug!(
                    lag_events = events,
                    lag_seconds = seconds,
                    held_events = behind.held_events,
                    position = checkpoint.position,
                    "relay lag"
                );
                self.report_held(&behind).await;
            }
            Err(error) => tracing::warn!(error = %error, "cannot measure relay lag"),
        }
    }

    /// Names the transaction holding events back once the oldest has
    /// waited `relay.held_warning_ms`, in [`RelayStatus::held`] and in a
    /// warning (at most every [`HELD_WARNING_EVERY`]); clears both once
    /// nothing waits that long.
    async fn report_held(&mut self, behind: &log::Behind) {
        let limit = self.settings.relay.held_warning_ms.get();
        let oldest_ms = behind
            .held_seconds
            .map_or(0, |seconds| (seconds.max(0.0) * 1000.0) as u64);
        if behind.held_events == 0 || oldest_ms < limit {
            self.last_held_warning = None;
            self.status.send_if_modified(|s| s.held.take().is_some());
            return;
        }
        let (holder, looked_up) = match log::horizon_holder(&self.pool).await {
            Ok(holder) => (holder, true),
            Err(error) => {
                tracing::warn!(%error, "cannot look up the transaction holding the horizon");
                (None, false)
            }
        };
        if self
            .last_held_warning
            .is_none_or(|at| at.elapsed() >= HELD_WARNING_EVERY)
        {
            self.last_held_warning = Some(Instant::now());
            warn_held(behind.held_events, oldest_ms, holder.as_ref(), looked_up);
        }
        let held = Held {
            events: behind.held_events,
            oldest_ms,
            holder,
        };
        self.status.send_if_modified(|s| {
            let changed = s.held.as_ref() != Some(&held);
            s.held = Some(held);
            changed
        });
    }
}

/// The warning about events held above the horizon, naming what holds
/// them as far as the relay's role may see (ADR 0050).
fn warn_held(events: i64, oldest_ms: u64, holder: Option<&HorizonHolder>, looked_up: bool) {
    const MESSAGE: &str =
        "committed events wait for an older transaction to end before they can be published";
    let held_seconds = oldest_ms as f64 / 1000.0;
    let Some(holder) = holder else {
        let since = if looked_up {
            "it has ended since, and they go out with the next read"
        } else {
            "it could not be looked up"
        };
        tracing::warn!(held_events = events, held_seconds, "{MESSAGE}; {since}");
        return;
    };
    match (&holder.session, &holder.prepared) {
        (Some(s), _) => tracing::warn!(
            held_events = events,
            held_seconds,
            holder_transaction = holder.transaction,
            holder_pid = s.pid,
            holder_database = s.database.as_deref().unwrap_or(""),
            holder_user = s.user.as_deref().unwrap_or(""),
            holder_application = s.application.as_deref().unwrap_or(""),
            holder_state = s.state.as_deref().unwrap_or(""),
            holder_open_seconds = s.open_seconds.unwrap_or(0),
            "{MESSAGE}"
        ),
        (None, Some(p)) => tracing::warn!(
            held_events = events,
            held_seconds,
            holder_transaction = holder.transaction,
            holder_gid = p.gid.as_str(),
            holder_database = p.database.as_str(),
            holder_owner = p.owner.as_str(),
            holder_prepared_seconds = p.prepared_seconds,
            "{MESSAGE}: a prepared transaction, which COMMIT PREPARED or ROLLBACK PREPARED with its gid ends"
        ),
        (None, None) => tracing::warn!(
            held_events = events,
            held_seconds,
            holder_transaction = holder.transaction,
            "{MESSAGE}; it was in neither pg_stat_activity nor pg_prepared_xacts by the time \
             the relay looked"
        ),
    }
}
