//! Running a command on its aggregate.
//!
//! [`AggregateStore::execute`] loads the aggregate through cqrs-es's
//! `PersistedEventStore` on postgres-es, checks the caller's expected version,
//! lets the aggregate decide, and appends its events to postgres-es's table
//! in one statement that returns their global positions
//! (`docs/adr/0027-one-statement-appends.md`), shared with the commands
//! that wait for a writer at the same time ([`crate::appends`],
//! `docs/adr/0038-appends-share-a-statement.md`). The primary key on
//! `(aggregate_type, aggregate_id, sequence)` refuses a second writer of a
//! sequence, so two writers on one aggregate never both win.

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventStore};
use pivotal_domain::envelope::{CommandContext, MAX_EVENT_BYTES};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use uuid::Uuid;

use crate::appends::{Append, Appender, Failure};

/// The metadata stored beside each event: the command's context and the
/// trace context of the current span (`traceparent`, `tracestate`), which
/// the relay carries on into Kafka headers.
fn store_metadata(context: &CommandContext) -> std::collections::HashMap<String, String> {
    let mut metadata = context.to_store_metadata();
    for (key, value) in pivotal_telemetry::trace::current_context() {
        metadata.insert(key.to_owned(), value);
    }
    metadata
}

/// One event as committed: what a response and a consistency token need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    /// Aggregate version after this event.
    pub sequence: u64,
    /// Position in the global log (`events.global_position`).
    pub position: i64,
}

/// The result of a command that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Aggregate version after the command (unchanged when no event was emitted).
    pub version: u64,
    pub events: Vec<CommittedEvent>,
}

impl Outcome {
    /// Global position of the last event, the consistency token for readers.
    pub fn position(&self) -> Option<i64> {
        self.events.iter().map(|e| e.position).max()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(E),
    /// The caller expected another version (or lost a race while expecting one).
    #[error("expected version {expected}, current version is {current}")]
    VersionConflict { expected: u64, current: u64 },
    /// The store answered unexpectedly.
    #[error("event store failure: {0}")]
    Store(String),
    /// The store could not be reached (down, restarting, out of
    /// connections): worth retrying shortly.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// An event would be larger than Kafka takes; nothing was appended.
    #[error(transparent)]
    TooLarge(TooLarge),
}

/// An event whose published envelope would exceed
/// [`MAX_EVENT_BYTES`](pivotal_domain::envelope::MAX_EVENT_BYTES): it is
/// refused before it is appended, since a committed event that Kafka
/// cannot take would stop the whole log behind it (ADR 0030).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the change makes a {event_type} event of {bytes} bytes; events are limited to {limit} bytes"
)]
pub struct TooLarge {
    pub event_type: String,
    /// The envelope's length, at most.
    pub bytes: usize,
    pub limit: usize,
}

/// Whether `error`, or any error it wraps, is a PostgreSQL failure worth
/// retrying shortly rather than a refusal: I/O, TLS, pool exhaustion, or
/// SQLSTATE class 08 (connection exception), 57P01-57P03 (shutdown, crash,
/// starting up), 53300 (too many connections) and 57014 (a statement
/// cancelled: by `statement_timeout`, or by an operator).
pub fn is_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(sqlx) = e.downcast_ref::<sqlx::Error>() {
            return match sqlx {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300" | "57014")
                }),
                _ => false,
            };
        }
        current = e.source();
    }
    false
}

fn from_sqlx<E: std::error::Error>(error: sqlx::Error) -> ExecuteError<E> {
    if is_unavailable(&error) {
        ExecuteError::Unavailable(error.to_string())
    } else {
        ExecuteError::Store(error.to_string())
    }
}

/// How often a command without an expected version is retried after losing a
/// race to a concurrent writer.
const RETRIES_WITHOUT_EXPECTATION: usize = 8;

/// Most memory for the remembered state of one aggregate type, in bytes of
/// the states' JSON form (their size in memory is of the same order).
pub const REMEMBERED_BYTES: u64 = 8 * 1024 * 1024;

/// The remembered state of one aggregate: the state and version reached
/// with this process's last commit on it, and its weight, measured once
/// when it is remembered.
#[derive(Clone)]
struct Remembered<A> {
    state: A,
    version: usize,
    weight: u64,
}

/// Weighs a remembered aggregate by its id and its state's JSON length.
#[derive(Debug, Clone, Copy)]
struct ByLength;

impl<A> quick_cache::Weighter<String, Remembered<A>> for ByLength {
    fn weight(&self, key: &String, value: &Remembered<A>) -> u64 {
        key.len() as u64 + value.weight
    }
}

/// The length of `value`'s JSON form, counted without building it.
fn json_length<T: serde::Serialize>(value: &T) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a state that cannot be serialized
    // weighs what was counted before the failure.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Commands and reads of one aggregate type.
///
/// The state each aggregate reached with the last command this process
/// committed on it is remembered (up to [`REMEMBERED_BYTES`] per type, least
/// recently used forgotten first), so the next command on it need not read
/// its events back. Commands on one aggregate run one at a time in a
/// process ([`Turns`](crate::turns::Turns)), each on the state the last
/// one left. Remembered state is
/// only a hint: another process may have appended since. It can only lead
/// to a commit, and a commit on a stale version collides with the stored
/// event of that sequence and is retried on the stored state; every other
/// answer (a refusal, nothing to do, another expected version) is decided
/// again on the stored state before it is given.
pub struct AggregateStore<A: Aggregate> {
    store: PersistedEventStore<PostgresEventRepository, A>,
    remembered: quick_cache::sync::Cache<String, Remembered<A>, ByLength>,
    turns: crate::turns::Turns,
    appender: Appender,
}

impl<A: Aggregate> std::fmt::Debug for AggregateStore<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateStore")
            .field("type", &A::TYPE)
            .finish()
    }
}

impl<A> AggregateStore<A>
where
    A: Aggregate<Services = ()> + Clone + 'static,
    A::Command: Clone + Send,
    A::Error: Send,
{
    pub fn new(pool: PgPool) -> Self {
        Self::remembering(pool, REMEMBERED_BYTES)
    }

    /// A store that remembers at most `bytes` of aggregate state (see
    /// [`REMEMBERED_BYTES`]).
    pub fn remembering(pool: PgPool, bytes: u64) -> Self {
        let store =
            PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
        // A hint for the table's size: states of about 500 bytes.
        let estimated = usize::try_from(bytes / 500).unwrap_or(usize::MAX).max(16);
        Self {
            appender: Appender::new(pool, A::TYPE, crate::appends::WRITERS),
            store,
            remembered: quick_cache::sync::Cache::with_weighter(estimated, bytes, ByLength),
            turns: crate::turns::Turns::default(),
        }
    }

    /// The same store with at most `writers` append statements in flight
    /// (at least one; [`WRITERS`](crate::appends::WRITERS) by default).
    pub fn with_writers(self, writers: usize) -> Self {
        let pool = self.appender.pool().clone();
        Self {
            appender: Appender::new(pool, A::TYPE, writers),
            ..self
        }
    }

    /// Commands' appends waiting for a free writer.
    pub fn appends_waiting(&self) -> usize {
        self.appender.waiting()
    }

    /// How many aggregates' states are remembered, and their weight in bytes.
    pub fn remembered(&self) -> (usize, u64) {
        (self.remembered.len(), self.remembered.weight())
    }

    /// Current state and version (0 when the aggregate has no events).
    pub async fn load(&self, aggregate_id: &str) -> Result<(A, u64), ExecuteError<A::Error>> {
        let context = self
            .store
            .load_aggregate(aggregate_id)
            .await
            .map_err(store_error)?;
        Ok((context.aggregate, context.current_sequence as u64))
    }

    /// Runs `command` on the aggregate `aggregate_id`.
    ///
    /// With `expected_version`, the command is refused unless the aggregate is
    /// at exactly that version when it commits. Without it, a lost race is
    /// retried on fresh state a few times.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        expected_version: Option<u64>,
        command: A::Command,
        context: &CommandContext,
    ) -> Result<Outcome, ExecuteError<A::Error>> {
        self.run(
            aggregate_id,
            Start::Load(expected_version),
            command,
            context,
        )
        .await
    }

    /// Runs `command`, which creates the aggregate `aggregate_id` under an
    /// id just made for it, on the empty aggregate without reading the store
    /// first (one statement fewer). Should an aggregate with that id exist
    /// after all, the first event's sequence collides with its first event
    /// and the command is refused as a version conflict, as
    /// [`execute`](Self::execute) expecting version 0 refuses it.
    pub async fn create(
        &self,
        aggregate_id: &str,
        command: A::Command,
        context: &CommandContext,
    ) -> Result<Outcome, ExecuteError<A::Error>> {
        self.run(aggregate_id, Start::Empty, command, context).await
    }

    #[tracing::instrument(
        name = "execute",
        skip_all,
        fields(otel.name = %format!("execute {}", A::TYPE), aggregate.id = aggregate_id)
    )]
    async fn run(
        &self,
        aggregate_id: &str,
        start: Start,
        command: A::Command,
        context: &CommandContext,
    ) -> Result<Outcome, ExecuteError<A::Error>> {
        let expected_version = match start {
            Start::Load(expected) => expected,
            Start::Empty => Some(0),
        };
        // The commands before this one on the aggregate, in this process,
        // commit first (ADR 0036).
        let _turn = self.turns.take(aggregate_id).await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let empty = || EventStoreAggregateContext {
                aggregate_id: aggregate_id.to_owned(),
                aggregate: A::default(),
                current_sequence: 0,
                current_snapshot: None,
            };
            // Remembered state only on the first attempt: a retry follows a
            // collision or a doubt, and reads the store.
            let remembered = match start {
                Start::Load(expected) if attempt == 1 => self
                    .remembered
                    .get(aggregate_id)
                    .filter(|r| expected.is_none_or(|e| e == r.version as u64)),
                _ => None,
            };
            let from_memory = remembered.is_some();
            let mut loaded = match (start, remembered) {
                (_, Some(remembered)) => EventStoreAggregateContext {
                    aggregate: remembered.state,
                    current_sequence: remembered.version,
                    ..empty()
                },
                (Start::Empty, None) => empty(),
                (Start::Load(_), None) => self
                    .store
                    .load_aggregate(aggregate_id)
                    .await
                    .map_err(store_error)?,
            };
            let current = loaded.current_sequence as u64;
            if let Some(expected) = expected_version
                && expected != current
            {
                return Err(ExecuteError::VersionConflict { expected, current });
            }
            let sink = cqrs_es::event_sink::EventSink::<A>::default();
            let decided = loaded.aggregate.handle(command.clone(), &(), &sink).await;
            let events = sink.collect().await;
            if from_memory && (decided.is_err() || events.is_empty()) {
                // A refusal or a no-op is given only on the stored state.
                continue;
            }
            decided.map_err(ExecuteError::Domain)?;
            if events.is_empty() {
                return Ok(Outcome {
                    version: current,
                    events: Vec::new(),
                });
            }
            let mut after = loaded.aggregate.clone();
            for event in &events {
                after.apply(event.clone());
            }
            let append = match encode::<A>(aggregate_id, current, &events, context) {
                Ok(append) => append,
                Err(Unwritable::TooLarge(too_large)) => {
                    return Err(ExecuteError::TooLarge(too_large));
                }
                Err(Unwritable::Encode(error)) => {
                    return Err(from_sqlx(sqlx::Error::Encode(Box::new(error))));
                }
            };
            match self.appender.append(append).await {
                Ok(committed) => {
                    let last = committed.last().map_or(current, |e| e.sequence);
                    let weight = json_length(&after);
                    self.remembered.insert(
                        aggregate_id.to_owned(),
                        Remembered {
                            state: after,
                            version: usize::try_from(last).unwrap_or(usize::MAX),
                            weight,
                        },
                    );
                    return Ok(Outcome {
                        version: last,
                        events: committed,
                    });
                }
                Err(Failure::Conflict) => {
                    self.remembered.remove(aggregate_id);
                    if expected_version.is_some() || attempt > RETRIES_WITHOUT_EXPECTATION {
                        let (_, now) = self.load(aggregate_id).await?;
                        return Err(ExecuteError::VersionConflict {
                            expected: expected_version.unwrap_or(current),
                            current: now,
                        });
                    }
                    tracing::debug!(
                        aggregate_id,
                        attempt,
                        "lost a race, retrying on fresh state"
                    );
                }
                Err(Failure::Unavailable(error)) => return Err(ExecuteError::Unavailable(error)),
                Err(Failure::Store(error)) => return Err(ExecuteError::Store(error)),
            }
        }
    }
}

/// Where [`AggregateStore::run`] starts a command.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// From the stored aggregate, expecting a version or not.
    Load(Option<u64>),
    /// From the empty aggregate, not read: a creation under a new id.
    Empty,
}

/// A command decided but not yet committed: the events it produces on top
/// of `version`. [`AggregateStore::append`] commits them inside a caller's
/// transaction, so that other rows (the credential vault) commit or roll
/// back with them.
#[derive(Debug)]
pub struct Decided<A: Aggregate> {
    pub aggregate_id: String,
    /// Aggregate version the events were decided on.
    pub version: u64,
    /// State after the events.
    pub state: A,
    pub events: Vec<A::Event>,
}

/// Why [`AggregateStore::append`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended to the aggregate first; decide again.
    #[error("the aggregate changed since the command was decided")]
    Conflict,
    #[error("event store failure: {0}")]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    TooLarge(TooLarge),
}

impl<A> AggregateStore<A>
where
    A: Aggregate<Services = ()> + 'static,
    A::Command: Clone + Send,
    A::Error: Send,
{
    /// Loads the aggregate and runs `command` on it without committing.
    pub async fn decide(
        &self,
        aggregate_id: &str,
        expected_version: Option<u64>,
        command: A::Command,
    ) -> Result<Decided<A>, ExecuteError<A::Error>> {
        let loaded = self
            .store
            .load_aggregate(aggregate_id)
            .await
            .map_err(store_error)?;
        let version = loaded.current_sequence as u64;
        if let Some(expected) = expected_version
            && expected != version
        {
            return Err(ExecuteError::VersionConflict {
                expected,
                current: version,
            });
        }
        let mut state = loaded.aggregate;
        let sink = cqrs_es::event_sink::EventSink::<A>::default();
        state
            .handle(command, &(), &sink)
            .await
            .map_err(ExecuteError::Domain)?;
        let events = sink.collect().await;
        Ok(Decided {
            aggregate_id: aggregate_id.to_owned(),
            version,
            state,
            events,
        })
    }

    /// Appends decided events in the caller's transaction, in one
    /// statement of their own. The rows are postgres-es's (same columns,
    /// payload and metadata as its `PostgresEventRepository` writes), so
    /// the aggregate loads them like any other; its primary key on (type,
    /// id, sequence) still refuses a second writer of a sequence, which is
    /// reported as [`AppendError::Conflict`].
    pub async fn append(
        &self,
        conn: &mut sqlx::PgConnection,
        decided: &Decided<A>,
        context: &CommandContext,
    ) -> Result<Vec<CommittedEvent>, AppendError> {
        let append = encode::<A>(
            &decided.aggregate_id,
            decided.version,
            &decided.events,
            context,
        )?;
        let one = [&append];
        match crate::appends::insert(conn, A::TYPE, &one).await {
            Ok(rows) => Ok(crate::appends::split(&one, rows).pop().unwrap_or_default()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(AppendError::Conflict)
            }
            Err(other) => Err(AppendError::Store(other)),
        }
    }
}

/// Why a command's events cannot be written.
#[derive(Debug)]
enum Unwritable {
    TooLarge(TooLarge),
    Encode(serde_json::Error),
}

impl From<Unwritable> for AppendError {
    fn from(unwritable: Unwritable) -> Self {
        match unwritable {
            Unwritable::TooLarge(too_large) => Self::TooLarge(too_large),
            Unwritable::Encode(error) => Self::Store(sqlx::Error::Encode(Box::new(error))),
        }
    }
}

/// The rows of the events one command decided on top of `version`. An
/// event whose published envelope would be larger than [`MAX_EVENT_BYTES`]
/// is refused, so that nothing is written.
fn encode<A: Aggregate>(
    aggregate_id: &str,
    version: u64,
    events: &[A::Event],
    context: &CommandContext,
) -> Result<Append, Unwritable> {
    let metadata = serde_json::to_string(&store_metadata(context)).map_err(Unwritable::Encode)?;
    let mut append = Append {
        aggregate_id: aggregate_id.to_owned(),
        metadata,
        ..Append::default()
    };
    for (offset, event) in events.iter().enumerate() {
        let sequence = version.saturating_add(offset as u64 + 1);
        let event_type = event.event_type();
        let payload = serde_json::to_string(event).map_err(Unwritable::Encode)?;
        let bytes =
            context.envelope_bytes(A::TYPE, aggregate_id, &event_type, sequence, payload.len());
        if bytes > MAX_EVENT_BYTES {
            return Err(Unwritable::TooLarge(TooLarge {
                event_type,
                bytes,
                limit: MAX_EVENT_BYTES,
            }));
        }
        append
            .sequences
            .push(i64::try_from(sequence).unwrap_or(i64::MAX));
        append.types.push(event_type);
        append.versions.push(event.event_version());
        append.payloads.push(payload);
    }
    Ok(append)
}

fn store_error<E: std::error::Error>(error: AggregateError<E>) -> ExecuteError<E> {
    match error {
        AggregateError::UserError(e) => ExecuteError::Domain(e),
        AggregateError::AggregateConflict => {
            ExecuteError::Store("unexpected aggregate conflict".into())
        }
        AggregateError::DatabaseConnectionError(e) => ExecuteError::Unavailable(e.to_string()),
        other if std::error::Error::source(&other).is_some_and(is_unavailable) => {
            ExecuteError::Unavailable(other.to_string())
        }
        other => ExecuteError::Store(other.to_string()),
    }
}
