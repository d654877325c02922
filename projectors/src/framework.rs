//! The projection framework.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use pivotal_domain::envelope::EventEnvelope;
use pivotal_event_store::log::{self, Checkpoint};
use pivotal_messaging::{headers, topics};
use pivotal_settings::Settings;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::value::RawValue;
use sqlx::{PgConnection, PgPool};

use crate::membership::Membership;
use crate::redis_link::RedisLink;

/// An event as a projection sees it. Its `data` stays the JSON text it
/// was stored and published as: each projection reads its own types from
/// it (a `&RawValue` is a `serde` deserializer), with no JSON tree in
/// between.
pub type Envelope = EventEnvelope<Box<RawValue>>;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{aggregate_type} {aggregate_id}: expected version {expected}, got {got}")]
    Gap {
        aggregate_type: String,
        aggregate_id: String,
        expected: i64,
        got: i64,
    },
    #[error("event {0} has data that does not match its type: {1}")]
    Data(uuid::Uuid, String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topics: {0}")]
    Topics(#[from] topics::TopicError),
    #[error("search engine: {0}")]
    Search(String),
}

/// Aborts a background task when the projector loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One read model.
#[async_trait]
pub trait Projection: Send + Sync {
    /// Stable name, used in the bookkeeping tables.
    fn name(&self) -> &'static str;
    /// Aggregate types whose events it follows.
    fn aggregate_types(&self) -> &'static [&'static str];
    /// Applies one event; called at most once per aggregate version.
    async fn apply(&self, conn: &mut PgConnection, event: &Envelope)
    -> Result<(), ProjectionError>;
    /// Applies events in order, each called at most once per aggregate
    /// version. One by one unless the projection writes a batch at once.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[&Envelope],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(&mut *conn, event).await?;
        }
        Ok(())
    }
    /// The one table holding the read model (unqualified: rebuilds fill a
    /// copy of it in another schema through `search_path`).
    fn table(&self) -> &'static str;
    /// Whether each row of the read model is written by the events of one
    /// aggregate only (no row sums up or refers to several aggregates), and
    /// no unique value passes from one aggregate's row to another's. A
    /// rebuild then writes each batch on several connections at once, each
    /// with the events of some of the aggregates: they touch disjoint rows
    /// and never wait for each other.
    fn rows_per_aggregate(&self) -> bool {
        false
    }
    /// Whether the framework keeps this projection's version of each
    /// aggregate (the default), so that it sees each version once and in
    /// order. A projection whose writes are idempotent and need no order
    /// (a queue of records to index again, at the highest version seen)
    /// says no: it is handed every event of its types in each batch,
    /// duplicates included, and costs no `projection_versions` row. Every
    /// aggregate type it follows must also be followed by a projection that
    /// keeps versions: that projection's version is what read-your-writes
    /// waits for, and it is written in the same transaction.
    fn keeps_versions(&self) -> bool {
        true
    }
    /// Statements a rebuild's switch runs, in its transaction and under
    /// the projection's lock, once the rebuilt table has replaced the live
    /// one: what the live table carried that a copy made like it lacks
    /// (its triggers), and what is kept from its rows elsewhere.
    fn after_switch(&self) -> &'static [&'static str] {
        &[]
    }
}

/// What happened to one event in one projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    Duplicate,
}

fn lock_key(projection: &str) -> String {
    format!("pivotal-projection:{projection}")
}

/// Applies `event` to `projection` unless it was applied before; refuses a
/// version that skips ahead. Must run inside a transaction.
pub async fn apply_once(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    event: &Envelope,
    position: Option<i64>,
) -> Result<Applied, ProjectionError> {
    let key = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
    let mut versions = Versions::load(&mut *conn, projection, [key]).await?;
    let applied = versions.admit(event, position)?;
    if applied == Applied::Applied {
        projection.apply(&mut *conn, event).await?;
    }
    versions.store(conn).await?;
    Ok(applied)
}

/// A projection and the aggregates (type, id) whose versions it needs.
pub type Aggregates<'p, 'k> = (&'p dyn Projection, Vec<(&'k str, &'k str)>);

/// The version bookkeeping of one projection over a batch of events, read
/// once, kept in memory while the batch applies and written once: a few
/// statements per batch instead of three per event. The events it admits
/// are then applied together (`Projection::apply_batch`).
pub struct Versions<'p> {
    projection: &'p dyn Projection,
    /// By aggregate type, then id, so that an event's aggregate is looked
    /// up by its strings without copying them (a rebuild admits hundreds of
    /// thousands of events).
    current: HashMap<String, HashMap<String, Known, FastHash>, FastHash>,
    position: Option<i64>,
}

/// The hasher of the maps a rebuild fills per event: faster than the
/// standard library's SipHash, and still seeded per process. Their keys
/// are aggregate ids from the event store.
pub(crate) type FastHash = foldhash::fast::RandomState;

/// An aggregate's last applied version, and whether it moved since the
/// versions were loaded (and so is to be written).
#[derive(Debug, Clone, Copy)]
struct Known {
    version: i64,
    changed: bool,
}

impl std::fmt::Debug for Versions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versions")
            .field("projection", &self.projection.name())
            .field("aggregates", &self.len())
            .field(
                "changed",
                &self.known().filter(|(_, _, known)| known.changed).count(),
            )
            .field("position", &self.position)
            .finish()
    }
}

impl<'p> Versions<'p> {
    /// Reads and locks the versions of `aggregates` (type, id) of one
    /// projection: [`Versions::load_all`] for one.
    pub async fn load<'k>(
        conn: &mut PgConnection,
        projection: &'p dyn Projection,
        aggregates: impl IntoIterator<Item = (&'k str, &'k str)>,
    ) -> Result<Self, ProjectionError> {
        let mut all =
            Self::load_all(conn, vec![(projection, aggregates.into_iter().collect())]).await?;
        Ok(all.pop().unwrap_or_else(|| Self::empty(projection)))
    }

    /// Reads and locks the versions of the aggregates (type, id) each
    /// projection names, in one statement whatever the number of
    /// projections, and returns one bookkeeping per projection in the order
    /// given (names must differ). Rows are locked in key order so that two
    /// projectors locking overlapping batches wait instead of deadlocking.
    /// An aggregate not seen before gets a row at version 0 first, so it is
    /// locked too: two projectors that briefly hold the same partition
    /// during a rebalance then apply its first events one after the other,
    /// and the second sees what the first applied, instead of both starting
    /// from nothing and the later commit setting the version (and the read
    /// model) back. Nothing is sent when no projection names an aggregate,
    /// and nothing is read for a projection that keeps no versions
    /// ([`Projection::keeps_versions`]).
    pub async fn load_all<'k>(
        conn: &mut PgConnection,
        wanted: Vec<Aggregates<'p, 'k>>,
    ) -> Result<Vec<Self>, ProjectionError> {
        let keys: std::collections::BTreeSet<(&str, &str, &str)> = wanted
            .iter()
            .filter(|(projection, _)| projection.keeps_versions())
            .flat_map(|(projection, keys)| {
                keys.iter()
                    .map(|(aggregate_type, id)| (projection.name(), *aggregate_type, *id))
            })
            .collect();
        let mut all: Vec<Self> = wanted
            .iter()
            .map(|(projection, _)| Self::empty(*projection))
            .collect();
        if keys.is_empty() {
            return Ok(all);
        }
        let mut names = Vec::with_capacity(keys.len());
        let mut types = Vec::with_capacity(keys.len());
        let mut ids = Vec::with_capacity(keys.len());
        for (name, aggregate_type, id) in keys {
            names.push(name);
            types.push(aggregate_type);
            ids.push(id);
        }
        // One statement: each key is found through the primary key (the
        // conflict's arbiter index), whatever plan the statement has. A
        // join of the keys with the table was planned once per connection
        // and kept: planned while the table was small, it scanned the
        // whole table for every batch as the table grew (ADR 0056).
        // `DO UPDATE` to the same version locks an existing row as
        // `FOR UPDATE` would and returns its version; a new row comes back
        // at 0. Keys are unique (a set) and go in key order.
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "INSERT INTO projection_versions AS v (projection, aggregate_type, aggregate_id, version)
             SELECT k.projection, k.aggregate_type, k.aggregate_id, 0
             FROM UNNEST($1::text[], $2::text[], $3::text[])
                  WITH ORDINALITY AS k(projection, aggregate_type, aggregate_id, n)
             ORDER BY k.n
             ON CONFLICT (projection, aggregate_type, aggregate_id)
             DO UPDATE SET version = v.version
             RETURNING v.projection, v.aggregate_type, v.aggregate_id, v.version",
        )
        .bind(&names)
        .bind(&types)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for (name, aggregate_type, id, version) in rows {
            if let Some(versions) = all.iter_mut().find(|v| v.projection.name() == name) {
                versions.current.entry(aggregate_type).or_default().insert(
                    id,
                    Known {
                        version,
                        changed: false,
                    },
                );
            }
        }
        Ok(all)
    }

    /// Bookkeeping that knows no version yet (a rebuild's empty copy).
    fn empty(projection: &'p dyn Projection) -> Self {
        Self {
            projection,
            current: HashMap::default(),
            position: None,
        }
    }

    /// How many aggregates' versions it holds.
    fn len(&self) -> usize {
        self.current.values().map(HashMap::len).sum()
    }

    /// The last version applied of one aggregate (0: none).
    fn version(&self, aggregate_type: &str, aggregate_id: &str) -> i64 {
        self.current
            .get(aggregate_type)
            .and_then(|ids| ids.get(aggregate_id))
            .map_or(0, |known| known.version)
    }

    /// Every aggregate's (type, id, version).
    fn known(&self) -> impl Iterator<Item = (&str, &str, Known)> {
        self.current.iter().flat_map(|(aggregate_type, ids)| {
            ids.iter()
                .map(move |(id, known)| (aggregate_type.as_str(), id.as_str(), *known))
        })
    }

    /// Whether `event` is to be applied: not when its version was applied
    /// before; an error for a version that skips ahead. An admitted event
    /// counts as applied from here on (the caller applies it in the same
    /// transaction). The aggregate must be among those loaded. A projection
    /// that keeps no versions is given every event.
    pub fn admit(
        &mut self,
        event: &Envelope,
        position: Option<i64>,
    ) -> Result<Applied, ProjectionError> {
        if !self.projection.keeps_versions() {
            self.reached(position);
            return Ok(Applied::Applied);
        }
        let current = self.version(&event.aggregate_type, &event.aggregate_id);
        let version = i64::try_from(event.version).unwrap_or(i64::MAX);
        if version <= current {
            return Ok(Applied::Duplicate);
        }
        if version != current + 1 {
            return Err(ProjectionError::Gap {
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                expected: current + 1,
                got: version,
            });
        }
        let moved = Known {
            version,
            changed: true,
        };
        // Copies of the type and id only for an aggregate seen first.
        let ids = match self.current.get_mut(event.aggregate_type.as_str()) {
            Some(ids) => ids,
            None => self
                .current
                .entry(event.aggregate_type.clone())
                .or_default(),
        };
        match ids.get_mut(event.aggregate_id.as_str()) {
            Some(known) => *known = moved,
            None => {
                ids.insert(event.aggregate_id.clone(), moved);
            }
        }
        self.reached(position);
        Ok(Applied::Applied)
    }

    /// Raises the highest position applied.
    fn reached(&mut self, position: Option<i64>) {
        if let Some(position) = position {
            self.position = Some(self.position.map_or(position, |p| p.max(position)));
        }
    }

    /// Writes the versions that moved and the highest position applied:
    /// [`Versions::store_all`] for one projection.
    pub async fn store(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        Self::store_all(conn, vec![self]).await
    }

    /// Writes the versions that moved and the highest position applied of
    /// several projections: one statement for the versions and one for the
    /// positions, each sent only when there is something to write.
    pub async fn store_all(conn: &mut PgConnection, all: Vec<Self>) -> Result<(), ProjectionError> {
        Self::write(conn, all, true).await
    }

    /// Writes the versions into bookkeeping that holds none of this
    /// projection's (a rebuild's copy, before its key is added): plain
    /// inserts, with no conflict to look for and no index to maintain.
    async fn store_new(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        Self::write(conn, vec![self], false).await
    }

    /// Writes the versions that moved, as upserts (`upsert`) or as plain
    /// inserts, and the highest positions applied.
    async fn write(
        conn: &mut PgConnection,
        all: Vec<Self>,
        upsert: bool,
    ) -> Result<(), ProjectionError> {
        let mut changed: Vec<(&str, &str, &str, i64)> = all
            .iter()
            .flat_map(|versions| {
                versions.known().filter(|(_, _, known)| known.changed).map(
                    |(aggregate_type, id, known)| {
                        (
                            versions.projection.name(),
                            aggregate_type,
                            id,
                            known.version,
                        )
                    },
                )
            })
            .collect();
        if !changed.is_empty() {
            // Upserts in key order (this transaction holds their locks
            // already); plain inserts go to a rebuild's copy, which no
            // other transaction writes.
            if upsert {
                changed.sort_unstable();
            }
            let mut names = Vec::with_capacity(changed.len());
            let mut types = Vec::with_capacity(changed.len());
            let mut ids = Vec::with_capacity(changed.len());
            let mut versions = Vec::with_capacity(changed.len());
            for (name, aggregate_type, id, version) in changed {
                names.push(name);
                types.push(aggregate_type);
                ids.push(id);
                versions.push(version);
            }
            sqlx::query(if upsert {
                "INSERT INTO projection_versions (projection, aggregate_type, aggregate_id, version)
                 SELECT p, t, i, v FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) AS k(p, t, i, v)
                 ON CONFLICT (projection, aggregate_type, aggregate_id)
                   DO UPDATE SET version = EXCLUDED.version"
            } else {
                "INSERT INTO projection_versions (projection, aggregate_type, aggregate_id, version)
                 SELECT p, t, i, v FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) AS k(p, t, i, v)"
            })
            .bind(&names)
            .bind(&types)
            .bind(&ids)
            .bind(&versions)
            .execute(&mut *conn)
            .await?;
        }
        let (names, positions): (Vec<&str>, Vec<i64>) = all
            .iter()
            .filter_map(|v| Some((v.projection.name(), v.position?)))
            .unzip();
        if !names.is_empty() {
            sqlx::query(
                "INSERT INTO projection_positions (projection, last_position, updated_at)
                 SELECT p, l, now() FROM UNNEST($1::text[], $2::bigint[]) AS k(p, l)
                 ORDER BY p
                 ON CONFLICT (projection) DO UPDATE
                   SET last_position = greatest(projection_positions.last_position, EXCLUDED.last_position),
                       updated_at = now()",
            )
            .bind(&names)
            .bind(&positions)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// Consumes the event topics in the configured group and applies every
/// projection until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    pool: PgPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProjectionError> {
    let membership = Membership::from_settings(&settings.projector);
    run_with(settings, pool, membership, shutdown).await
}

/// [`run`], recording the consumer's place in its group in `membership`
/// (the operations endpoint's readiness check).
pub async fn run_with(
    settings: Settings,
    pool: PgPool,
    membership: Membership,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProjectionError> {
    let projections = crate::all_projections();
    let aggregate_types: Vec<&str> = projections
        .iter()
        .flat_map(|p| p.aggregate_types().iter().copied())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // Every outcome at 0 from the start, so that an alert on a counter's
    // increase sees its first count.
    for outcome in ["assigned", "revoked", "failed"] {
        metrics::counter!("consumer_group_rebalances_total", "outcome" => outcome).increment(0);
    }
    let mut attempt = 0u32;
    let topic_names = loop {
        match topics::ensure_event_topics(&settings.kafka, &aggregate_types).await {
            Ok(names) => break names,
            Err(error) => {
                attempt += 1;
                tracing::warn!(error = %error, "cannot reach the broker to check topics, retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(25)))).await;
            }
        }
    };
    let consumer: std::sync::Arc<StreamConsumer<ProjectorContext>> = std::sync::Arc::new(
        pivotal_messaging::config::consumer(&settings.kafka, &settings.projector.group_id)
            .set("statistics.interval.ms", "5000")
            .create_with_context(ProjectorContext {
                membership: membership.clone(),
            })?,
    );
    let names: Vec<&str> = topic_names.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    // Rejoins the group when a partition no member consumes has waited
    // past the limit (ADR 0034, third update).
    let _watch_unconsumed = AbortOnDrop(tokio::spawn(crate::unconsumed::watch(
        consumer.clone(),
        topic_names.clone(),
        pool.clone(),
        membership,
        Duration::from_millis(settings.projector.out_of_group_limit_ms),
    )));
    for advisory in settings.advisories() {
        tracing::warn!(%advisory, "settings sit badly together");
    }
    tracing::info!(group = %settings.projector.group_id, topics = ?names, "projector consuming");
    let batch_size = settings.projector.batch_size.max(1);
    let mut redis = {
        use secrecy::ExposeSecret;
        RedisLink::new(settings.redis.url.expose_secret())
    };
    let notifier = Notifier::new(&settings.redis.key_prefix);
    let mut dashboard =
        crate::dashboard::DashboardWriter::new(pool.clone(), &settings.redis.key_prefix);
    let engine = pivotal_search::open(&settings.search)
        .map_err(|e| ProjectionError::Search(e.to_string()))?;
    let wake_indexer = std::sync::Arc::new(tokio::sync::Notify::new());
    let indexer = tokio::spawn(
        crate::search::SearchIndexer::new(pool.clone(), engine)
            .run(wake_indexer.clone(), std::future::pending()),
    );
    let _stop_indexer = AbortOnDrop(indexer);
    dashboard.after_commit(&mut redis, &[]).await;
    let mut dashboard_tick = tokio::time::interval(Duration::from_secs(5));
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            () = &mut shutdown => {
                // Every applied batch is in PostgreSQL already; committing
                // its offsets to the group saves the next member redelivering
                // it.
                if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(%error, "no offsets to commit at shutdown");
                }
                tracing::info!("projector stopped");
                return Ok(());
            }
            _ = dashboard_tick.tick() => {
                // Fills the dashboard after a Redis flush or outage even
                // when no event arrives.
                dashboard.after_commit(&mut redis, &[]).await;
                report_lag(&pool, &projections).await;
                continue;
            }
            message = consumer.recv() => message,
        };
        let first = match first {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(error = %error, "consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < batch_size {
            match tokio::time::timeout(Duration::from_millis(5), consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message),
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        // A batch that cannot be applied (PostgreSQL down, a deadlock) is
        // retried as it is, in place: no seek, so no partition can be left
        // behind, and the messages stay in order. Shutdown still wins.
        let started = Instant::now();
        let applied = loop {
            match apply_batch(&pool, &projections, &batch).await {
                Ok(applied) => break applied,
                Err(error) => {
                    failures += 1;
                    tracing::error!(error = %error, "batch not applied, it will be retried");
                    let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                    tokio::select! {
                        () = &mut shutdown => {
                            tracing::info!("projector stopped with a batch not applied; it will be redelivered");
                            return Ok(());
                        }
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        failures = 0;
        metrics::counter!("projector_applied_total").increment(batch.len() as u64);
        metrics::histogram!("projector_batch_seconds").record(started.elapsed().as_secs_f64());
        let AppliedBatch { offsets, events } = applied;
        wake_indexer.notify_one();
        notifier.announce(&mut redis, &events).await;
        let touched: Vec<(&'static str, uuid::Uuid)> = events
            .iter()
            .filter_map(|e| {
                let kind = crate::dashboard::KINDS
                    .iter()
                    .find(|(k, _)| *k == e.aggregate_type)?
                    .0;
                Some((kind, uuid::Uuid::parse_str(&e.aggregate_id).ok()?))
            })
            .collect();
        dashboard.after_commit(&mut redis, &touched).await;
        // Committed to the group with the next interval's commit (ADR
        // 0032); a batch redelivered before then is a no-op (its versions).
        if let Err(error) = consumer.store_offsets(&offsets) {
            tracing::warn!(error = %error, "offsets not stored");
        }
    }
}

/// [`unapplied`]'s statement for a position near the log's end, public so
/// that its plan can be checked: the events after the position `$1`,
/// counted when of the types `$2`. The types are a filter, not a
/// condition an index could serve, so the position index reads the few
/// events after the position whatever the statistics say of the types.
pub const UNAPPLIED_NEAR_END: &str = "SELECT count(*) FILTER (WHERE e.aggregate_type = ANY($2)),
        extract(epoch FROM now() - min(e.recorded_at) FILTER (WHERE e.aggregate_type = ANY($2)))::float8
 FROM events e
 WHERE e.global_position > $1";

/// [`unapplied`]'s statement for a position far back, public so that its
/// plan can be checked: the events of the types `$2` after the position
/// `$1`, by whichever index the planner finds cheaper.
pub const UNAPPLIED_FAR_BACK: &str =
    "SELECT count(*), extract(epoch FROM now() - min(e.recorded_at))::float8
 FROM events e
 WHERE e.aggregate_type = ANY($2) AND e.global_position > $1";

/// [`unapplied`]'s statement for a projection that has applied nothing,
/// public so that its plan can be checked: every event of the types `$1`,
/// through the primary key.
pub const UNAPPLIED_ALL: &str =
    "SELECT count(*), extract(epoch FROM now() - min(e.recorded_at))::float8
 FROM events e
 WHERE e.aggregate_type = ANY($1)";

/// Positions to the log's end up to which [`unapplied`] reads every event
/// after a projection's position: a busy projection's lag is a few
/// hundred events.
pub const NEAR_END: i64 = 10_000;

/// What a projection has not applied yet: the events of its types after
/// the last position it applied.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Unapplied {
    pub events: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_seconds: Option<f64>,
}

/// The events of `types` after the last position `projection` applied,
/// read through an index (`log::begin_by_index`, ADR 0053): one
/// projection's [`unapplied_each`].
pub async fn unapplied(
    pool: &PgPool,
    projection: &str,
    types: &[&str],
) -> Result<Unapplied, sqlx::Error> {
    let mut each = unapplied_each(pool, &[(projection, types)]).await?;
    Ok(each.pop().unwrap_or_default())
}

/// What each of `projections` (name, aggregate types) has not applied,
/// in the order given, read in one transaction through an index
/// (`log::begin_by_index`, ADR 0053). The projections' positions and the
/// log's last are read first, in one statement. A position within
/// [`NEAR_END`] of the end (a busy projection's) is counted through the
/// position index alone ([`UNAPPLIED_NEAR_END`]); one further back (a
/// projection whose types change rarely, or one catching up) with the
/// types as a condition too ([`UNAPPLIED_FAR_BACK`]), planned afresh each
/// time with the position as a value, so that the primary key can read the
/// types' few events; without a position, every event of the types
/// ([`UNAPPLIED_ALL`]).
pub async fn unapplied_each(
    pool: &PgPool,
    projections: &[(&str, &[&str])],
) -> Result<Vec<Unapplied>, sqlx::Error> {
    if projections.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = projections.iter().map(|(name, _)| *name).collect();
    let mut tx = log::begin_by_index(pool).await?;
    let positions: Vec<(Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT (SELECT last_position FROM projection_positions WHERE projection = k.name),
                (SELECT max(global_position) FROM events)
         FROM UNNEST($1::text[]) WITH ORDINALITY AS k(name, n)
         ORDER BY k.n",
    )
    .bind(&names)
    .fetch_all(&mut *tx)
    .await?;
    let mut each = Vec::with_capacity(projections.len());
    for ((_, types), (position, end)) in projections.iter().zip(positions) {
        let query = match position {
            None => sqlx::query_as(UNAPPLIED_ALL).bind(*types),
            Some(position) => {
                let statement = if end.unwrap_or(0) - position <= NEAR_END {
                    UNAPPLIED_NEAR_END
                } else {
                    UNAPPLIED_FAR_BACK
                };
                sqlx::query_as(statement).bind(position).bind(*types)
            }
        };
        let (events, oldest_seconds) = query.persistent(false).fetch_one(&mut *tx).await?;
        each.push(Unapplied {
            events,
            oldest_seconds,
        });
    }
    tx.commit().await?;
    Ok(each)
}

/// Sets `projection_lag_events` and `projection_lag_seconds` per projection
/// (events of its types after the last position it applied, and the age of
/// the oldest), read in one transaction ([`unapplied_each`]).
async fn report_lag(pool: &PgPool, projections: &[Box<dyn Projection>]) {
    let wanted: Vec<(&'static str, &'static [&'static str])> = projections
        .iter()
        .map(|projection| (projection.name(), projection.aggregate_types()))
        .collect();
    match unapplied_each(pool, &wanted).await {
        Ok(each) => {
            for ((name, _), lag) in wanted.iter().zip(each) {
                metrics::gauge!("projection_lag_events", "projection" => *name)
                    .set(lag.events as f64);
                metrics::gauge!("projection_lag_seconds", "projection" => *name)
                    .set(lag.oldest_seconds.unwrap_or(0.0));
            }
        }
        Err(error) => tracing::debug!(%error, "cannot measure projection lag"),
    }
}

/// The projector's consumer context. Its rebalance callbacks keep the
/// member's [`Membership`]. It turns librdkafka's own statistics
/// (every five seconds, `statistics.interval.ms`) into
/// `consumer_lag_messages` per topic and partition this member owns: the
/// partition's high watermark, as the last fetch response gave it, minus
/// the offset after the last batch this member applied (its stored
/// offset), or before its first batch the offset the group has committed,
/// as Kafka's own tools count it. The committed offset trails the applied
/// one by up to a commit interval (ADR 0032). No request beyond the
/// fetches themselves, so watching lag adds no load to the broker.
#[derive(Debug, Clone)]
pub struct ProjectorContext {
    membership: Membership,
}

impl rdkafka::ClientContext for ProjectorContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.membership.report();
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // -1 is librdkafka's internal unassigned partition.
                if *partition < 0 {
                    continue;
                }
                let lag = if stats.fetch_state == "none" {
                    // Not (or no longer) this member's: it owes nothing, so
                    // a rebalance leaves no stale figure behind to be added
                    // to the new owner's.
                    0
                } else if stats.consumer_lag_stored >= 0 {
                    stats.consumer_lag_stored
                } else if stats.consumer_lag >= 0 {
                    stats.consumer_lag
                } else {
                    // Owned, but nothing applied or committed yet: not known.
                    continue;
                };
                metrics::gauge!(
                    "consumer_lag_messages",
                    "topic" => topic.clone(),
                    "partition" => partition.to_string(),
                )
                .set(lag as f64);
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ProjectorContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        match rebalance {
            Rebalance::Assign(partitions) => {
                metrics::counter!("consumer_group_rebalances_total", "outcome" => "assigned")
                    .increment(1);
                tracing::info!(partitions = partitions.count(), "partitions assigned");
                self.membership.assigned(partitions.count());
            }
            Rebalance::Revoke(partitions) => {
                metrics::counter!("consumer_group_rebalances_total", "outcome" => "revoked")
                    .increment(1);
                tracing::info!(partitions = partitions.count(), "partitions revoked");
                self.membership.left("revoked");
            }
            Rebalance::Error(error) => {
                metrics::counter!("consumer_group_rebalances_total", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(%error, "rebalance failed");
                self.membership.left("rebalance failed");
            }
        }
    }
}

/// Sets a version key unless it already holds a higher version (a
/// redelivered event never lowers it).
const RAISE_VERSION: &str = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') \
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end return 0";

static RAISE_VERSION_SCRIPT: std::sync::LazyLock<crate::redis_link::PipelinedScript> =
    std::sync::LazyLock::new(|| crate::redis_link::PipelinedScript::new(RAISE_VERSION));

/// Announces applied events on Redis (`{prefix}:changes:{organization}`) for
/// the query API's subscriptions. Best effort: the read models are already
/// committed, so a Redis outage only delays nothing but live updates.
struct Notifier {
    prefix: String,
}

impl Notifier {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    async fn announce(&self, redis: &mut RedisLink, events: &[Envelope]) {
        if events.is_empty() {
            return;
        }
        let Some(mut connection) = redis.connection().await else {
            return;
        };
        // One transaction: a version is raised only with its announcement,
        // which the query API's cache relies on to drop older entries.
        let mut pipe = redis::pipe();
        pipe.atomic();
        RAISE_VERSION_SCRIPT.load(&mut pipe);
        for event in events {
            let change = serde_json::json!({
                "type": event.event_type,
                "aggregateType": event.aggregate_type,
                "aggregateId": event.aggregate_id,
                "version": event.version,
                "timestamp": event.timestamp,
                "organizationId": event.organization_id,
            });
            // The query API's cache serves an entry only at this version.
            RAISE_VERSION_SCRIPT
                .call(&mut pipe, 1)
                .arg(format!(
                    "{}:ver:{}:{}",
                    self.prefix, event.aggregate_type, event.aggregate_id
                ))
                .arg(event.version)
                .ignore();
            // Announced after the version is raised, so a subscriber that
            // queries at once never meets the older cache entry.
            pipe.publish(
                format!("{}:changes:{}", self.prefix, event.organization_id),
                change.to_string(),
            )
            .ignore();
        }
        match pipe.query_async::<()>(&mut connection).await {
            Ok(()) => redis.succeeded(),
            Err(error) => {
                tracing::warn!(%error, "live notifications not published");
                redis.failed();
            }
        }
    }
}

fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    message.headers().and_then(|h| {
        h.iter()
            .find(|header| header.key == name)
            .and_then(|header| header.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    })
}

/// An event of a batch: from a message, or read from the event store to
/// fill a gap the topic left (see [`fill_gaps`]).
struct Pending<'b> {
    message: Option<&'b BorrowedMessage<'b>>,
    event: Envelope,
    position: Option<i64>,
}

impl Pending<'_> {
    /// The event's span, open until the batch is committed: that is when
    /// its change becomes visible.
    fn span(&self) -> tracing::Span {
        let event = &self.event;
        let Some(message) = self.message else {
            return tracing::info_span!(
                "project",
                otel.name = %format!("project {}", event.event_type),
                event.id = %event.id,
                event.version = event.version,
                event.from_store = true,
            );
        };
        let span = tracing::info_span!(
            "project",
            otel.name = %format!("project {}", event.event_type),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.destination.name = message.topic(),
            messaging.kafka.destination.partition = message.partition(),
            messaging.kafka.message.offset = message.offset(),
            event.id = %event.id,
            event.version = event.version,
        );
        pivotal_telemetry::trace::set_parent(&span, |key| header(message, key));
        span
    }
}

/// A batch applied and committed: the offsets to commit to the group, and
/// every event in the order applied (with those read from the store).
struct AppliedBatch {
    offsets: TopicPartitionList,
    events: Vec<Envelope>,
}

fn follows(projection: &dyn Projection, event: &Envelope) -> bool {
    projection
        .aggregate_types()
        .contains(&event.aggregate_type.as_str())
}

/// Applies a batch in one transaction.
async fn apply_batch(
    pool: &PgPool,
    projections: &[Box<dyn Projection>],
    batch: &[BorrowedMessage<'_>],
) -> Result<AppliedBatch, ProjectionError> {
    let mut tx = pool.begin().await?;
    let lock_keys: Vec<String> = projections.iter().map(|p| lock_key(p.name())).collect();
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtext(k)) FROM UNNEST($1::text[]) AS k")
        .bind(&lock_keys)
        .execute(&mut *tx)
        .await?;
    let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut events = Vec::with_capacity(batch.len());
    for message in batch {
        next_offsets.insert(
            (message.topic().to_owned(), message.partition()),
            message.offset() + 1,
        );
        let Some(payload) = message.payload() else {
            tracing::error!(
                topic = message.topic(),
                offset = message.offset(),
                "message without a value skipped"
            );
            continue;
        };
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(event) => events.push(Pending {
                position: header(message, headers::POSITION).and_then(|p| p.parse().ok()),
                message: Some(message),
                event,
            }),
            Err(error) => {
                tracing::error!(error = %error, topic = message.topic(), offset = message.offset(), "message is not an event envelope, skipped");
            }
        }
    }
    let wanted: Vec<Aggregates<'_, '_>> = projections
        .iter()
        .map(|projection| {
            let aggregates = events
                .iter()
                .map(|p| &p.event)
                .filter(|e| follows(projection.as_ref(), e))
                .map(|e| (e.aggregate_type.as_str(), e.aggregate_id.as_str()))
                .collect();
            (projection.as_ref(), aggregates)
        })
        .collect();
    let mut versions = Versions::load_all(&mut tx, wanted).await?;
    let events = fill_gaps(&mut tx, &versions, events).await?;
    let mut spans = Vec::with_capacity(events.len());
    let mut admitted: Vec<Vec<&Envelope>> = vec![Vec::new(); projections.len()];
    for pending in &events {
        let event = &pending.event;
        let span = pending.span();
        for ((projection, versions), admitted) in projections
            .iter()
            .zip(versions.iter_mut())
            .zip(admitted.iter_mut())
        {
            if follows(projection.as_ref(), event)
                && span.in_scope(|| versions.admit(event, pending.position))? == Applied::Applied
            {
                admitted.push(event);
            }
        }
        spans.push(span);
    }
    for (projection, admitted) in projections.iter().zip(&admitted) {
        if admitted.is_empty() {
            continue;
        }
        let span = tracing::info_span!(
            "apply",
            projection = projection.name(),
            events = admitted.len()
        );
        tracing::Instrument::instrument(projection.apply_batch(&mut tx, admitted), span).await?;
    }
    Versions::store_all(&mut tx, versions).await?;
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), next) in &next_offsets {
        offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    tx.commit().await?;
    drop(spans);
    Ok(AppliedBatch {
        offsets,
        events: events.into_iter().map(|p| p.event).collect(),
    })
}

/// Puts before each event the versions of its aggregate that the topic
/// skipped, read from the event store.
///
/// A topic holds each aggregate's events in version order, but not always
/// without a hole: a record may fail to be delivered while its successors
/// go through and be sent again after them (a delivery that timed out, a
/// relay that lost its lock with records in flight), and a projection added
/// later meets aggregates whose first events it never saw. Refused as a gap,
/// such an event would be retried for ever: its partition moves on only once
/// it is applied. Every version below one that was published is committed in
/// the store, so the missing ones are read from there and applied first; the
/// records that bring them later are duplicates. Should the store lack them
/// too, nothing is filled and the event is refused as a gap.
async fn fill_gaps<'b>(
    conn: &mut PgConnection,
    versions: &[Versions<'_>],
    events: Vec<Pending<'b>>,
) -> Result<Vec<Pending<'b>>, ProjectionError> {
    let mut reached: HashMap<(String, String), i64> = HashMap::new();
    let mut filled = Vec::with_capacity(events.len());
    for pending in events {
        let event = &pending.event;
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        // The lowest version any projection following the aggregate holds:
        // the others take what it is missing as duplicates.
        let known = reached.get(&key).copied().or_else(|| {
            versions
                .iter()
                .filter(|v| v.projection.keeps_versions() && follows(v.projection, event))
                .map(|v| v.version(&key.0, &key.1))
                .min()
        });
        let Some(known) = known else {
            filled.push(pending);
            continue;
        };
        let version = i64::try_from(event.version).unwrap_or(i64::MAX);
        if version > known + 1 {
            let missing =
                log::aggregate_versions(&mut *conn, &key.0, &key.1, known + 1, version - 1).await?;
            if i64::try_from(missing.len()) == Ok(version - known - 1) {
                tracing::warn!(
                    aggregate_type = %key.0,
                    aggregate_id = %key.1,
                    from = known + 1,
                    to = version - 1,
                    "versions the topic skipped are applied from the event store"
                );
                metrics::counter!("projector_events_from_store_total")
                    .increment(missing.len() as u64);
                for logged in missing {
                    let (id, position) = (logged.event_id, logged.position);
                    let event = logged
                        .into_envelope()
                        .map_err(|e| ProjectionError::Data(id, e.to_string()))?;
                    filled.push(Pending {
                        message: None,
                        event,
                        position: Some(position),
                    });
                }
            }
        }
        reached.insert(key, known.max(version));
        filled.push(pending);
    }
    Ok(filled)
}

/// Progress of a rebuild.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildReport {
    pub events: u64,
    pub applied: u64,
    pub seconds: f64,
    /// The versions outgrew [`RebuildLimits::versions_in_memory`] and were
    /// kept in the copy's bookkeeping table from then on.
    pub versions_written_out: bool,
    /// Seconds spent catching up beside the live projector.
    pub catch_up_seconds: f64,
    /// Seconds spent making the copy logged and building its indexes.
    pub index_seconds: f64,
    /// Of [`RebuildReport::index_seconds`], the seconds until the copy
    /// was made logged (its rows rewritten once into the write-ahead log)
    /// and its index builds began; the versions are written out from the
    /// start of the phase, beside both.
    pub logged_seconds: f64,
    /// Seconds under the projection's lock: the last events replayed and
    /// the copy switched in (the live projector waits this long).
    pub switch_seconds: f64,
    /// Of [`RebuildReport::switch_seconds`], the seconds until the lock
    /// was held and the last events replayed; the rest swapped the
    /// versions' partition and replaced the table.
    pub replay_seconds: f64,
}

impl RebuildReport {
    pub fn events_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.events as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// How a rebuild divides its work. [`RebuildLimits::default`] is what
/// [`rebuild`] uses; smaller limits exist so tests reach every path of a
/// rebuild with little data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildLimits {
    /// Events read from the log and applied per transaction.
    pub batch: i64,
    /// Most aggregate versions kept in memory while catching up (about 100
    /// bytes each). Past this many they are written to the copy's
    /// bookkeeping table, and from then on read and written per batch.
    pub versions_in_memory: usize,
    /// Connections a batch is written on at once while the versions are
    /// in memory, for a projection whose rows are each one aggregate's
    /// ([`Projection::rows_per_aggregate`]); one otherwise. One more reads
    /// ahead.
    pub writers: usize,
}

impl Default for RebuildLimits {
    fn default() -> Self {
        Self {
            batch: 10_000,
            versions_in_memory: 1_000_000,
            writers: 2,
        }
    }
}

fn shadow_schema(projection: &str) -> String {
    format!("rebuild_{projection}")
}

/// The name of `projection`'s own partition of `projection_versions`
/// (ADR 0068).
fn versions_partition(projection: &str) -> String {
    format!("projection_versions_{projection}")
}

/// Creates `{schema}.{table}` like `public.{table}`, with the same
/// constraints (its other indexes come later, [`shadow_index_statements`]),
/// and empty copies of the bookkeeping tables. The table and the copy of
/// the positions are unlogged while the copy fills: nothing written to them
/// goes through the write-ahead log, and a server crash empties them, which
/// costs nothing, since a rebuild that fails starts again from an empty
/// copy. The table that replaces the live one is made logged before its
/// indexes are built ([`rebuild_with`]); the positions' copy never is, since
/// the switch copies its row into the logged table. The versions' copy is
/// logged from the start: it becomes the projection's partition of the live
/// versions at the switch, and is usually written once, at the end of the
/// catch-up, where inserting into a logged table costs less than making an
/// unlogged one logged afterwards (which rewrites it, key and all). It
/// holds only `projection`'s versions (a check constraint), which lets the
/// switch attach it without reading it.
async fn create_shadow(
    conn: &mut PgConnection,
    projection: &str,
    schema: &str,
    table: &str,
) -> Result<(), ProjectionError> {
    for statement in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
        format!(
            "CREATE UNLOGGED TABLE {schema}.{table} (LIKE public.{table} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING IDENTITY)"
        ),
        // Its key is added once the versions kept in memory are written
        // ([`key_shadow_versions`]): building it then is cheaper than
        // maintaining it row by row.
        format!(
            "CREATE TABLE {schema}.projection_versions
               (LIKE public.projection_versions INCLUDING DEFAULTS, CHECK (projection = {}))",
            sql_literal(projection)
        ),
        format!(
            "CREATE UNLOGGED TABLE {schema}.projection_positions (LIKE public.projection_positions INCLUDING ALL)"
        ),
    ] {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    copy_constraints(conn, schema, table, table).await
}

/// `text` as an SQL string literal.
fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Gives the copy `{schema}.{table}` the constraints of `public.{table}`:
/// its key, unique and check constraints, each named as the live one with
/// its leading `table` replaced by `named` (the same names, for a table's
/// own copy).
async fn copy_constraints(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    named: &str,
) -> Result<(), ProjectionError> {
    let constraints: Vec<(String, String)> = sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid = format('public.%I', $1::text)::regclass AND contype IN ('p', 'u', 'x', 'c')",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    for (name, definition) in constraints {
        let name = name.replacen(table, named, 1);
        sqlx::query(&format!(
            "ALTER TABLE {schema}.{table} ADD CONSTRAINT \"{name}\" {definition}"
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Writes the versions a rebuild kept in memory into the copy's
/// bookkeeping, which holds none of them, then gives it its key, named as
/// the projection's partition's is: from here on, it is read and written
/// per batch.
async fn key_shadow_versions(
    conn: &mut PgConnection,
    schema: &str,
    versions: Versions<'_>,
) -> Result<(), ProjectionError> {
    let partition = versions_partition(versions.projection.name());
    versions.store_new(&mut *conn).await?;
    copy_constraints(conn, schema, "projection_versions", &partition).await
}

/// The statements that give the copy the live table's other indexes (same
/// names). They run once the copy is filled, which is far cheaper than
/// maintaining the indexes row by row while it fills.
async fn shadow_index_statements(
    pool: &PgPool,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, ProjectionError> {
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
         WHERE i.indrelid = format('public.%I', $1::text)::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    Ok(indexes
        .into_iter()
        .map(|(definition,)| {
            definition.replacen(
                &format!(" ON public.{table} "),
                &format!(" ON {schema}.{table} "),
                1,
            )
        })
        .collect())
}

/// One batch of the log as a rebuild applies it: how many events were read,
/// where reading stopped, and the followed events decoded, with their
/// positions.
struct ReadBatch {
    read: usize,
    checkpoint: Option<Checkpoint>,
    events: Vec<(Envelope, i64)>,
}

/// Batches as the read-ahead hands them to a rebuild.
type BatchReceiver = tokio::sync::mpsc::Receiver<Result<ReadBatch, ProjectionError>>;

/// Batches read and decoded ahead of a rebuild's writers, at most.
const READ_AHEAD: usize = 2;

/// Reads up to `limit` events after `checkpoint` and decodes those of
/// `types`.
async fn read_batch(
    executor: impl sqlx::PgExecutor<'_>,
    types: &[&str],
    checkpoint: Checkpoint,
    limit: i64,
) -> Result<ReadBatch, ProjectionError> {
    let batch = log::read_after(executor, checkpoint, limit).await?;
    let read = batch.len();
    let checkpoint = batch.last().map(log::LoggedEvent::checkpoint);
    // Sized once: a batch's events take megabytes, and growing the vector
    // would copy them and fault in fresh pages at every doubling.
    let mut events = Vec::with_capacity(read);
    for logged in batch {
        if types.contains(&logged.aggregate_type.as_str()) {
            let (id, position) = (logged.event_id, logged.position);
            let event = logged
                .into_envelope()
                .map_err(|e| ProjectionError::Data(id, e.to_string()))?;
            events.push((event, position));
        }
    }
    Ok(ReadBatch {
        read,
        checkpoint,
        events,
    })
}

/// Reads the log ahead of a rebuild's writers, on a connection of its own:
/// up to [`READ_AHEAD`] batches are read and decoded while the writers
/// apply earlier ones. Stops after the first batch shorter than `limit`
/// (caught up).
fn read_ahead(
    pool: &PgPool,
    types: &'static [&'static str],
    mut checkpoint: Checkpoint,
    limit: i64,
) -> (BatchReceiver, AbortOnDrop) {
    let (sender, receiver) = tokio::sync::mpsc::channel(READ_AHEAD);
    let pool = pool.clone();
    let reader = tokio::spawn(async move {
        loop {
            let batch = read_batch(&pool, types, checkpoint, limit).await;
            let last = match &batch {
                Ok(batch) => {
                    checkpoint = batch.checkpoint.unwrap_or(checkpoint);
                    i64::try_from(batch.read).unwrap_or(i64::MAX) < limit
                }
                Err(_) => true,
            };
            if sender.send(batch).await.is_err() || last {
                return;
            }
        }
    });
    (receiver, AbortOnDrop(reader))
}

/// Applies a read batch to the shadow copy (the caller's transaction has
/// `search_path` on the shadow schema). With `known`, the versions this
/// rebuild has applied so far are kept there instead of in the copy's
/// bookkeeping table (which then holds none of them): nothing is read or
/// written per batch, and the caller writes them once with
/// [`Versions::store`]. Without it, they are read and written per batch.
async fn apply_read<'p>(
    conn: &mut PgConnection,
    projection: &'p dyn Projection,
    batch: &ReadBatch,
    report: &mut RebuildReport,
    progress: Option<&indicatif::ProgressBar>,
    known: Option<&mut Versions<'p>>,
) -> Result<(), ProjectionError> {
    let mut loaded = None;
    let versions = match known {
        Some(known) => known,
        None => loaded.insert(
            Versions::load(
                &mut *conn,
                projection,
                batch
                    .events
                    .iter()
                    .map(|(e, _)| (e.aggregate_type.as_str(), e.aggregate_id.as_str())),
            )
            .await?,
        ),
    };
    let admitted = admit_read(batch, versions, report)?;
    if !admitted.is_empty() {
        projection.apply_batch(&mut *conn, &admitted).await?;
    }
    if let Some(versions) = loaded {
        versions.store(conn).await?;
    }
    if let Some(bar) = progress {
        bar.inc(report.events - bar.position());
    }
    Ok(())
}

/// The events of a read batch that `versions` admits, in order, counted in
/// `report`: references for `batch.events.iter()`, the events themselves
/// for `batch.events.into_iter()`.
fn admit<E: std::borrow::Borrow<Envelope>>(
    events: impl ExactSizeIterator<Item = (E, i64)>,
    versions: &mut Versions<'_>,
    report: &mut RebuildReport,
) -> Result<Vec<E>, ProjectionError> {
    let mut admitted = Vec::with_capacity(events.len());
    for (event, position) in events {
        report.events += 1;
        if versions.admit(event.borrow(), Some(position))? == Applied::Applied {
            admitted.push(event);
        }
    }
    report.applied += admitted.len() as u64;
    Ok(admitted)
}

/// The events of `batch` that `versions` admits, in order, counted in
/// `report`.
fn admit_read<'b>(
    batch: &'b ReadBatch,
    versions: &mut Versions<'_>,
    report: &mut RebuildReport,
) -> Result<Vec<&'b Envelope>, ProjectionError> {
    admit(
        batch
            .events
            .iter()
            .map(|(event, position)| (event, *position)),
        versions,
        report,
    )
}

/// Where a rebuild's catch-up stands, and what it writes with.
struct CatchUp<'a> {
    pool: &'a PgPool,
    projection: &'a dyn Projection,
    /// `SET LOCAL search_path` to the shadow schema.
    search_path: &'a str,
    progress: Option<&'a indicatif::ProgressBar>,
    report: RebuildReport,
    /// After the last batch applied (or handed to a writer).
    checkpoint: Checkpoint,
}

impl CatchUp<'_> {
    /// Applies batches from `batches` on `writers` connections at once,
    /// while the versions fit in memory (`versions.len() <= limit`); returns
    /// the first batch it did not apply, if the versions outgrew memory
    /// before the log ran out. Only for a projection whose rows are each
    /// one aggregate's ([`Projection::rows_per_aggregate`]): the events of
    /// one aggregate all go to one connection, in their order, so the
    /// connections write disjoint rows and never wait for each other.
    ///
    /// Each writer takes its share of a batch as soon as it has applied its
    /// share of the one before, in a transaction of its own, so one slow
    /// commit holds up only its own connection; the batches are admitted
    /// (versions, in order) here and handed on. The copy is invisible until
    /// the switch, and a rebuild that fails starts again from an empty
    /// copy, so the transactions need not commit together. Every writer has
    /// committed when this returns.
    async fn spread(
        &mut self,
        batches: &mut BatchReceiver,
        versions: &mut Versions<'_>,
        limit: usize,
        writers: usize,
    ) -> Result<Option<ReadBatch>, ProjectionError> {
        use std::hash::BuildHasher;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..writers.max(1))
            .map(|_| tokio::sync::mpsc::channel::<Vec<Envelope>>(1))
            .unzip();
        let (pool, projection, search_path) = (self.pool, self.projection, self.search_path);
        let write =
            futures::future::try_join_all(receivers.into_iter().map(|mut shares| async move {
                while let Some(share) = shares.recv().await {
                    let share: Vec<&Envelope> = share.iter().collect();
                    let mut tx = pool.begin().await?;
                    sqlx::query(search_path).execute(&mut *tx).await?;
                    projection.apply_batch(&mut tx, &share).await?;
                    tx.commit().await?;
                }
                Ok::<_, ProjectionError>(())
            }));
        let dispatch = async move {
            let left = async {
                let hasher = FastHash::default();
                let count = senders.len() as u64;
                while let Some(batch) = batches.recv().await {
                    let mut batch = batch?;
                    if versions.len() > limit {
                        return Ok(Some(batch));
                    }
                    let checkpoint = batch.checkpoint.take();
                    let admitted = admit(batch.events.into_iter(), versions, &mut self.report)?;
                    // Each share sized exactly (see `read_batch`).
                    let targets: Vec<usize> = admitted
                        .iter()
                        .map(|event| {
                            let share = hasher
                                .hash_one((&event.aggregate_type, &event.aggregate_id))
                                % count;
                            usize::try_from(share).unwrap_or_default()
                        })
                        .collect();
                    let mut sizes = vec![0; senders.len()];
                    for target in &targets {
                        sizes[*target] += 1;
                    }
                    let mut shares: Vec<Vec<Envelope>> =
                        sizes.into_iter().map(Vec::with_capacity).collect();
                    for (event, target) in admitted.into_iter().zip(targets) {
                        shares[target].push(event);
                    }
                    for (sender, share) in senders.iter().zip(shares) {
                        // A writer that stopped failed; its error is the one
                        // `write` returns.
                        if !share.is_empty() && sender.send(share).await.is_err() {
                            return Ok(None);
                        }
                    }
                    if let Some(bar) = self.progress {
                        bar.inc(self.report.events - bar.position());
                    }
                    if let Some(last) = checkpoint {
                        self.checkpoint = last;
                    }
                }
                Ok::<_, ProjectionError>(None)
            }
            .await;
            // Closing the channels lets each writer finish its last share.
            drop(senders);
            left
        };
        let (left, _) = futures::future::try_join(dispatch, write).await?;
        Ok(left)
    }
}

/// Reads the next batch after `checkpoint` in `conn`'s transaction and
/// applies it; returns how many events were read (0: none left).
async fn replay(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    checkpoint: &mut Checkpoint,
    report: &mut RebuildReport,
    progress: Option<&indicatif::ProgressBar>,
    limit: i64,
) -> Result<usize, ProjectionError> {
    let batch = read_batch(&mut *conn, projection.aggregate_types(), *checkpoint, limit).await?;
    if let Some(last) = batch.checkpoint {
        *checkpoint = last;
    }
    apply_read(conn, projection, &batch, report, progress, None).await?;
    Ok(batch.read)
}

/// Rebuilds `projection` from the event store, the source of truth, beside
/// the live read model: a copy of its table in the schema
/// `rebuild_{projection}` is filled in batches while the live projector
/// keeps applying events to the live table and queries keep reading it.
/// Once the copy has caught up, the projection's lock is taken (the live
/// projector pauses for the last few events), the remaining events are
/// replayed and the copy replaces the live table and its version
/// bookkeeping in one transaction. Queries never see a half-built model.
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<RebuildReport, ProjectionError> {
    rebuild_with(pool, projection, progress, RebuildLimits::default()).await
}

/// [`rebuild`] with the given limits.
pub async fn rebuild_with(
    pool: &PgPool,
    projection: &dyn Projection,
    progress: Option<&indicatif::ProgressBar>,
    limits: RebuildLimits,
) -> Result<RebuildReport, ProjectionError> {
    let started = Instant::now();
    let name = projection.name();
    let table = projection.table();
    let schema = shadow_schema(name);
    {
        let mut conn = pool.acquire().await?;
        create_shadow(&mut conn, name, &schema, table).await?;
    }
    let types: Vec<String> = projection
        .aggregate_types()
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    if let Some(bar) = progress {
        let (total,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM events WHERE aggregate_type = ANY($1)")
                .bind(&types)
                .fetch_one(pool)
                .await?;
        bar.set_length(u64::try_from(total).unwrap_or_default());
    }
    let search_path = format!("SET LOCAL search_path TO {schema}, public");
    let mut catch_up = CatchUp {
        pool,
        projection,
        search_path: &search_path,
        progress,
        report: RebuildReport {
            events: 0,
            applied: 0,
            seconds: 0.0,
            versions_written_out: false,
            catch_up_seconds: 0.0,
            index_seconds: 0.0,
            logged_seconds: 0.0,
            switch_seconds: 0.0,
            replay_seconds: 0.0,
        },
        checkpoint: Checkpoint::default(),
    };
    // Catch up without blocking the live projector, with the versions in
    // memory (written out when there are too many, and at the end).
    let mut known = Some(Versions::empty(projection));
    let (mut batches, _reader) = read_ahead(
        pool,
        projection.aggregate_types(),
        catch_up.checkpoint,
        limits.batch,
    );
    let mut pending = None;
    if projection.rows_per_aggregate()
        && limits.writers > 1
        && let Some(versions) = known.as_mut()
    {
        pending = catch_up
            .spread(
                &mut batches,
                versions,
                limits.versions_in_memory,
                limits.writers,
            )
            .await?;
    }
    // One writer: for a projection whose rows span aggregates, and once the
    // versions have outgrown memory.
    loop {
        let batch = match pending.take() {
            Some(batch) => batch,
            None => match batches.recv().await {
                Some(batch) => batch?,
                None => break,
            },
        };
        let mut tx = pool.begin().await?;
        sqlx::query(&search_path).execute(&mut *tx).await?;
        apply_read(
            &mut tx,
            projection,
            &batch,
            &mut catch_up.report,
            progress,
            known.as_mut(),
        )
        .await?;
        if known
            .as_ref()
            .is_some_and(|k| k.len() > limits.versions_in_memory)
            && let Some(versions) = known.take()
        {
            key_shadow_versions(&mut tx, &schema, versions).await?;
            catch_up.report.versions_written_out = true;
        }
        tx.commit().await?;
        if let Some(last) = batch.checkpoint {
            catch_up.checkpoint = last;
        }
    }
    let CatchUp {
        mut report,
        mut checkpoint,
        ..
    } = catch_up;
    let caught_up = started.elapsed();
    // The versions kept in memory go to the copy's bookkeeping while the copy
    // is made logged (rewritten once into the write-ahead log, far cheaper
    // than logging each row as it was written) and then given its other
    // indexes, `writers` at once, each on a connection of its own (one index
    // build keeps one backend busy; builds on one table take compatible
    // locks). The index builds need only the logged table, so they start
    // beside the versions' write-out rather than after it: for 72,000
    // customers the write-out (inserts, key and statistics) took about twice
    // as long as making the copy logged while the versions' copy was
    // unlogged, and longer now that it is logged (ADR 0068). The versions'
    // copy gets statistics here, so that it goes live with them. The table gets its own once it
    // is live (below): an ANALYZE here would hold up the switch by about as
    // long as the index builds take.
    let store_versions = async {
        if let Some(versions) = known {
            let mut tx = pool.begin().await?;
            sqlx::query(&search_path).execute(&mut *tx).await?;
            key_shadow_versions(&mut tx, &schema, versions).await?;
            tx.commit().await?;
        }
        sqlx::query(&format!("ANALYZE {schema}.projection_versions"))
            .execute(pool)
            .await?;
        Ok::<_, ProjectionError>(())
    };
    let make_logged_and_index = async {
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET LOGGED"))
            .execute(pool)
            .await?;
        let logged = started.elapsed();
        futures::stream::iter(shadow_index_statements(pool, &schema, table).await?)
            .map(|statement| async move {
                sqlx::query(&statement).execute(pool).await?;
                Ok::<_, ProjectionError>(())
            })
            .buffer_unordered(limits.writers.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(logged)
    };
    let ((), logged) = futures::future::try_join(store_versions, make_logged_and_index).await?;
    let indexed = started.elapsed();
    // The last events and the switch, under the projection's lock.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(lock_key(name))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&search_path).execute(&mut *tx).await?;
    while replay(
        &mut tx,
        projection,
        &mut checkpoint,
        &mut report,
        progress,
        limits.batch,
    )
    .await?
        > 0
    {}
    let replayed = started.elapsed();
    // The copy's versions replace the live ones as the projection's
    // partition (ADR 0068): dropping the old partition and attaching the
    // copy costs the same whatever their size, where writing the rows that
    // differ held the lock for three joins over all of them and an insert
    // of each one the live side lacked (all of them, for a projection added
    // later: about 0.3 s for 72,000). Dropping a partition locks all of
    // `projection_versions`, so the other projections' batches wait for the
    // rest of the switch. It comes before the table's replacement: a
    // projector's batch locks its versions before it reads other
    // projections' tables (the search projection reads the customers), and
    // taking the two the other way round could deadlock with such a batch.
    // A projection whose versions are still in the default partition has
    // them deleted there instead, once; attaching then reads the default
    // partition.
    let partition = versions_partition(name);
    let live: Option<(String,)> = sqlx::query_as(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.inhparent = 'public.projection_versions'::regclass
           AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%L)', $1::text)",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    match live {
        Some((live,)) => {
            sqlx::query(&format!("DROP TABLE {live}"))
                .execute(&mut *tx)
                .await?;
        }
        None => {
            sqlx::query("DELETE FROM public.projection_versions WHERE projection = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
    }
    for statement in [
        format!("ALTER TABLE {schema}.projection_versions RENAME TO {partition}"),
        format!("ALTER TABLE {schema}.{partition} SET SCHEMA public"),
        format!(
            "ALTER TABLE public.projection_versions ATTACH PARTITION public.{partition} FOR VALUES IN ({})",
            sql_literal(name)
        ),
        format!("DROP TABLE public.{table}"),
        format!("ALTER TABLE {schema}.{table} SET SCHEMA public"),
    ] {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    for statement in projection.after_switch() {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    for statement in [
        "DELETE FROM public.projection_positions WHERE projection = $1".to_owned(),
        format!(
            "INSERT INTO public.projection_positions
             SELECT * FROM {schema}.projection_positions WHERE projection = $1"
        ),
    ] {
        sqlx::query(&statement).bind(name).execute(&mut *tx).await?;
    }
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    report.seconds = started.elapsed().as_secs_f64();
    report.catch_up_seconds = caught_up.as_secs_f64();
    report.index_seconds = (indexed - caught_up).as_secs_f64();
    report.logged_seconds = (logged - caught_up).as_secs_f64();
    report.switch_seconds = report.seconds - indexed.as_secs_f64();
    report.replay_seconds = (replayed - indexed).as_secs_f64();
    // Statistics for the new live table now, rather than whenever
    // autovacuum comes to it: until then the planner would guess. ANALYZE
    // blocks neither readers nor the live projector.
    sqlx::query(&format!("ANALYZE public.{table}"))
        .execute(pool)
        .await?;
    tracing::info!(
        projection = name,
        events = report.events,
        caught_up_s = report.catch_up_seconds,
        indexed_s = report.index_seconds,
        logged_s = report.logged_seconds,
        switched_s = report.switch_seconds,
        replayed_s = report.replay_seconds,
        "rebuild switched"
    );
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use pivotal_domain::customer::{Customer, CustomerCommand, sample_new_customer};
    use pivotal_domain::envelope::{Actor, CommandContext, EventMetadata};
    use pivotal_domain::values::Name;
    use pivotal_event_store::commands::AggregateStore;
    use pivotal_test_support::TestEnv;
    use uuid::Uuid;

    use super::*;
    use crate::customers::CustomersProjection;
    use crate::search::SearchProjection;

    /// A customer with three stored versions; returns its id.
    async fn customer_with_three_versions(env: &TestEnv) -> String {
        let actor = Actor {
            organization_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
        };
        let context = CommandContext {
            actor,
            timestamp: chrono::Utc::now(),
            metadata: EventMetadata {
                correlation_id: "gap-test".into(),
                causation_id: None,
                source: "projectors".into(),
                user_agent: None,
                ip_address: None,
            },
            idempotency_key: None,
        };
        let store = AggregateStore::<Customer>::new(env.pool.clone());
        let id = Uuid::now_v7();
        let create = CustomerCommand::Create {
            actor,
            customer_id: id,
            customer: sample_new_customer(),
        };
        store
            .create(&id.to_string(), create, &context)
            .await
            .unwrap();
        for name in ["Second Ltd", "Third Ltd"] {
            let rename = CustomerCommand::Rename {
                actor,
                legal_name: Name::parse("", name).unwrap(),
                display_name: Name::parse("", name).unwrap(),
            };
            store
                .execute(&id.to_string(), None, rename, &context)
                .await
                .unwrap();
        }
        id.to_string()
    }

    fn pending(event: Envelope) -> Pending<'static> {
        Pending {
            message: None,
            event,
            position: None,
        }
    }

    fn versions_of(events: &[Pending<'_>]) -> Vec<(u64, bool)> {
        events
            .iter()
            .map(|p| (p.event.version, p.position.is_some()))
            .collect()
    }

    /// A projection that keeps no versions (search) does not count as
    /// one that has seen nothing of an aggregate: only the versions kept
    /// decide what the topic skipped.
    #[tokio::test]
    async fn a_projection_keeping_no_versions_asks_for_no_filling() {
        let env = TestEnv::new().await;
        let id = customer_with_three_versions(&env).await;
        let stored = log::aggregate_versions(&env.pool, "customer", &id, 1, 3)
            .await
            .unwrap();
        let events: Vec<Envelope> = stored
            .into_iter()
            .map(|e| e.into_envelope().unwrap())
            .collect();
        let mut tx = env.pool.begin().await.unwrap();
        for event in &events[..2] {
            apply_once(&mut tx, &CustomersProjection, event, None)
                .await
                .unwrap();
        }
        let versions = Versions::load_all(
            &mut tx,
            vec![
                (&CustomersProjection, vec![("customer", id.as_str())]),
                (&SearchProjection, vec![("customer", id.as_str())]),
            ],
        )
        .await
        .unwrap();
        assert_eq!(versions[0].len(), 1);
        assert_eq!(versions[1].len(), 0);
        let filled = fill_gaps(&mut tx, &versions, vec![pending(events[2].clone())])
            .await
            .unwrap();
        assert_eq!(versions_of(&filled), [(3, false)]);
    }

    #[tokio::test]
    async fn skipped_versions_are_read_from_the_store_and_only_when_it_has_them_all() {
        let env = TestEnv::new().await;
        let id = customer_with_three_versions(&env).await;
        let third = log::aggregate_versions(&env.pool, "customer", &id, 3, 3)
            .await
            .unwrap()
            .remove(0)
            .into_envelope()
            .unwrap();
        let mut tx = env.pool.begin().await.unwrap();
        let projection = CustomersProjection;
        let versions = [
            Versions::load(&mut tx, &projection, [("customer", id.as_str())])
                .await
                .unwrap(),
        ];

        // Version 3 first: versions 1 and 2 come from the store (with
        // their positions), ahead of it; a duplicate of version 2 after
        // them is left as it is.
        let mut second = third.clone();
        second.version = 2;
        let filled = fill_gaps(
            &mut tx,
            &versions,
            vec![pending(third.clone()), pending(second)],
        )
        .await
        .unwrap();
        assert_eq!(
            versions_of(&filled),
            [(1, true), (2, true), (3, false), (2, false)]
        );
        let stored = log::aggregate_versions(&env.pool, "customer", &id, 1, 2)
            .await
            .unwrap();
        assert_eq!(filled[0].event.id, stored[0].event_id);
        assert_eq!(filled[1].event.id, stored[1].event_id);

        // Version 5, which skips a version the store lacks too: nothing is
        // filled, and the bookkeeping refuses it as a gap.
        let mut fifth = third;
        fifth.version = 5;
        let unfilled = fill_gaps(&mut tx, &versions, vec![pending(fifth)])
            .await
            .unwrap();
        assert_eq!(versions_of(&unfilled), [(5, false)]);
        let [mut versions] = versions;
        let refused = versions.admit(&unfilled[0].event, None);
        assert!(
            matches!(
                refused,
                Err(ProjectionError::Gap {
                    expected: 1,
                    got: 5,
                    ..
                })
            ),
            "{refused:?}"
        );
    }

    /// A rebuild whose writers fail on an event they cannot apply stops
    /// with that event's error instead of waiting on the other writer, and
    /// leaves the live read model as it was: the copy never replaces it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuild_whose_writer_fails_stops_with_its_error_and_keeps_the_live_model() {
        let env = TestEnv::new().await;
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(customer_with_three_versions(&env).await);
        }
        let limits = RebuildLimits {
            batch: 4,
            versions_in_memory: 1_000,
            writers: 2,
        };
        // A transaction open in another test's database holds the
        // cluster's horizon back, and a rebuild reads only below it.
        pivotal_test_support::wait_for_horizon(&env.pool).await;
        let report = rebuild_with(&env.pool, &CustomersProjection, None, limits)
            .await
            .unwrap();
        assert_eq!((report.events, report.applied), (18, 18), "{report:?}");
        // The phases divide the rebuild's time, each part within its
        // phase.
        let phases = report.catch_up_seconds + report.index_seconds + report.switch_seconds;
        assert!((phases - report.seconds).abs() < 1e-6, "{report:?}");
        assert!(
            (0.0..=report.index_seconds).contains(&report.logged_seconds)
                && (0.0..=report.switch_seconds).contains(&report.replay_seconds)
                && report.logged_seconds > 0.0
                && report.replay_seconds > 0.0,
            "{report:?}"
        );
        let live = || async {
            sqlx::query_as::<_, (Uuid, String)>(
                "SELECT id, legal_name FROM public.rm_customers ORDER BY id",
            )
            .fetch_all(&env.pool)
            .await
            .unwrap()
        };
        let before = live().await;
        assert_eq!(before.len(), 6);
        assert!(
            before.iter().all(|(_, name)| name == "Third Ltd"),
            "{before:?}"
        );

        // A fourth version of one customer whose data fits no customer
        // event: the writer it goes to fails on it.
        let (bad,): (Uuid,) = sqlx::query_as(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT aggregate_type, aggregate_id, 4, event_type, event_version,
                    (payload::jsonb || '{\"data\": {\"unexpected\": true}}'::jsonb)::json, metadata
             FROM events WHERE aggregate_type = 'customer' AND aggregate_id = $1 AND sequence = 3
             RETURNING event_id",
        )
        .bind(&ids[0])
        .fetch_one(&env.pool)
        .await
        .unwrap();
        pivotal_test_support::wait_for_horizon(&env.pool).await;
        let failed = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            rebuild_with(&env.pool, &CustomersProjection, None, limits),
        )
        .await
        .expect("the rebuild stops");
        assert!(
            matches!(&failed, Err(ProjectionError::Data(id, _)) if *id == bad),
            "{failed:?}"
        );
        assert_eq!(live().await, before);
    }

    /// Each event's `data` reaches its readers as the very text it was
    /// stored as, through both envelopes; an event stored without any has
    /// `null`.
    #[tokio::test]
    async fn the_log_hands_on_each_event_s_data_as_it_was_stored() {
        let env = TestEnv::new().await;
        let id = customer_with_three_versions(&env).await;
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT aggregate_type, aggregate_id, 4, event_type, event_version,
                    (payload::jsonb - 'data')::json, metadata
             FROM events WHERE aggregate_type = 'customer' AND aggregate_id = $1 AND sequence = 3",
        )
        .bind(&id)
        .execute(&env.pool)
        .await
        .unwrap();
        let stored: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT (payload -> 'data')::text FROM events
             WHERE aggregate_type = 'customer' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(&id)
        .fetch_all(&env.pool)
        .await
        .unwrap();
        assert_eq!(stored.len(), 4);
        assert!(stored[..3].iter().all(Option::is_some), "{stored:?}");
        assert_eq!(stored[3], None);

        let logged = log::aggregate_versions(&env.pool, "customer", &id, 1, 4)
            .await
            .unwrap();
        let borrowed: Vec<String> = logged
            .iter()
            .map(|e| e.envelope().unwrap().data.get().to_owned())
            .collect();
        let owned: Vec<String> = logged
            .into_iter()
            .map(|e| e.into_envelope().unwrap().data.get().to_owned())
            .collect();
        let expected: Vec<String> = stored
            .into_iter()
            .map(|data| data.unwrap_or_else(|| "null".into()))
            .collect();
        assert_eq!(borrowed, expected);
        assert_eq!(owned, expected);
    }

    /// The switch takes the versions before the projection's table: a
    /// projector's batch that holds other projections' versions and then
    /// reads this projection's table (as the search projection reads the
    /// customers) finishes, and so does the rebuild. Taken the other way
    /// round, each would wait for the other until PostgreSQL broke the
    /// deadlock by failing one.
    #[tokio::test]
    async fn a_batch_holding_versions_and_reading_the_rebuilt_table_does_not_deadlock_the_switch() {
        let env = TestEnv::new().await;
        customer_with_three_versions(&env).await;
        pivotal_test_support::wait_for_horizon(&env.pool).await;
        let mut batch = env.pool.begin().await.unwrap();
        let (batch_pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(&mut *batch)
            .await
            .unwrap();
        Versions::load(
            &mut batch,
            &crate::quotes::QuotesProjection,
            [("quote", "held")],
        )
        .await
        .unwrap();
        let pool = env.pool.clone();
        let rebuild = tokio::spawn(async move {
            rebuild_with(&pool, &CustomersProjection, None, RebuildLimits::default()).await
        });
        // Until the switch waits for the batch (or the rebuild has ended,
        // which it cannot without the batch's versions).
        loop {
            let (waiting,): (bool,) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))",
            )
            .bind(batch_pid)
            .fetch_one(&env.pool)
            .await
            .unwrap();
            if waiting || rebuild.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !rebuild.is_finished(),
            "the rebuild ended without waiting for the batch's versions: {:?}",
            rebuild.await
        );
        sqlx::query("SELECT count(*) FROM rm_customers")
            .execute(&mut *batch)
            .await
            .unwrap();
        batch.commit().await.unwrap();
        rebuild.await.unwrap().unwrap();
    }

    /// The switch leaves the projection's versions exactly as the replay
    /// found them, whatever the live ones were: a stale version is
    /// updated, a missing one inserted and one the store does not know
    /// deleted, and those of other projections are left alone; so too
    /// where the projection's versions were in the default partition.
    #[tokio::test]
    async fn a_rebuild_leaves_exactly_the_replayed_versions() {
        let env = TestEnv::new().await;
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(customer_with_three_versions(&env).await);
        }
        let limits = RebuildLimits {
            batch: 5,
            versions_in_memory: 1_000,
            writers: 2,
        };
        pivotal_test_support::wait_for_horizon(&env.pool).await;
        rebuild_with(&env.pool, &CustomersProjection, None, limits)
            .await
            .unwrap();
        let versions = |projection: &'static str| {
            let pool = env.pool.clone();
            async move {
                sqlx::query_as::<_, (String, String, i64)>(
                    "SELECT aggregate_type, aggregate_id, version FROM projection_versions
                     WHERE projection = $1 ORDER BY aggregate_type, aggregate_id",
                )
                .bind(projection)
                .fetch_all(&pool)
                .await
                .unwrap()
            }
        };
        let mut expected: Vec<(String, String, i64)> = ids
            .iter()
            .map(|id| ("customer".to_owned(), id.clone(), 3))
            .collect();
        expected.sort();
        assert_eq!(versions("customers").await, expected);

        for statement in [
            "UPDATE projection_versions SET version = 1
             WHERE projection = 'customers' AND aggregate_id = $1",
            "DELETE FROM projection_versions
             WHERE projection = 'customers' AND aggregate_id = $2",
            "INSERT INTO projection_versions VALUES
               ('customers', 'customer', 'not-in-the-store', 7),
               ('search', 'customer', $1, 2)",
        ] {
            sqlx::query(statement)
                .bind(&ids[0])
                .bind(&ids[1])
                .execute(&env.pool)
                .await
                .unwrap();
        }
        let rebuilt_as_replayed = async || {
            rebuild_with(&env.pool, &CustomersProjection, None, limits)
                .await
                .unwrap();
            assert_eq!(versions("customers").await, expected);
            assert_eq!(
                versions("search").await,
                [("customer".to_owned(), ids[0].clone(), 2)]
            );
        };
        rebuilt_as_replayed().await;
        // The table that went live, and the versions' partition, have
        // planner statistics already.
        let analyzed: Vec<(String, bool)> = sqlx::query_as(
            "SELECT relname::text, last_analyze IS NOT NULL FROM pg_stat_user_tables
             WHERE schemaname = 'public' AND relname IN ('rm_customers', 'projection_versions_customers')
             ORDER BY relname",
        )
        .fetch_all(&env.pool)
        .await
        .unwrap();
        assert_eq!(
            analyzed,
            [
                ("projection_versions_customers".to_owned(), true),
                ("rm_customers".to_owned(), true)
            ]
        );

        // A projection whose versions are in the default partition (one
        // added after the partitions were made) has them replaced there and
        // gets a partition of its own.
        for statement in [
            "ALTER TABLE projection_versions DETACH PARTITION projection_versions_customers",
            "INSERT INTO projection_versions SELECT * FROM projection_versions_customers",
            "DROP TABLE projection_versions_customers",
        ] {
            sqlx::query(statement).execute(&env.pool).await.unwrap();
        }
        // Not the text of the stale update above: a connection that ran
        // that one has it prepared with the two parameters bound there.
        sqlx::query(
            "UPDATE projection_versions SET version = 2
             WHERE projection = 'customers' AND aggregate_id = $1",
        )
        .bind(&ids[2])
        .execute(&env.pool)
        .await
        .unwrap();
        rebuilt_as_replayed().await;
        let partitions: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'projection_versions'::regclass
               AND EXISTS (SELECT 1 FROM projection_versions v
                           WHERE v.tableoid = c.oid AND v.projection = 'customers')",
        )
        .fetch_all(&env.pool)
        .await
        .unwrap();
        assert_eq!(
            partitions,
            [(
                "projection_versions_customers".to_owned(),
                "FOR VALUES IN ('customers')".to_owned()
            )]
        );
    }
}
