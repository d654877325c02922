//! The global event log, read in a stable order without ever skipping an event.
//!
//! `global_position` comes from a sequence, and concurrent transactions commit
//! out of sequence order: a reader that remembers "the highest position seen"
//! would skip a row whose transaction commits later with a lower position.
//! Every row therefore also records the id of the transaction that wrote it
//! (`tx_id`). A reader only takes rows whose `tx_id` is below the `xmin` of
//! its snapshot: every transaction below that horizon has finished, so no
//! row can still appear there. Within the horizon, rows are read in
//! `(tx_id, global_position)` order, and the reader's cursor is that pair.
//! Per aggregate, this order is the version order: a transaction can only
//! write version n+1 after reading version n committed, so it got its
//! transaction id later.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use pivotal_domain::envelope::{EventEnvelope, MetadataError, StoredMetadata};
use serde::Deserialize;
use serde_json::value::RawValue;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A reader's position in the log: everything at or before it has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    pub tx_id: i64,
    pub position: i64,
}

/// One row of the log.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub tx_id: i64,
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The event's own facts: the stored payload's `data`, as the JSON text
    /// it was stored as (`null` for an event without any). Every reader
    /// either passes it on as it is (the relay, the history) or reads its
    /// own types from it, so no JSON tree is built in between.
    pub data: Box<RawValue>,
    pub metadata: HashMap<String, String>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("event {0} has a negative sequence")]
    Sequence(Uuid),
}

impl LoggedEvent {
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tx_id: self.tx_id,
            position: self.position,
        }
    }

    /// The published envelope: `IBaseEvent` fields with the event's `data`.
    pub fn envelope(&self) -> Result<EventEnvelope<&RawValue>, EnvelopeError> {
        self.assemble(
            StoredMetadata::from_store(&self.metadata)?,
            self.event_type.clone(),
            self.aggregate_id.clone(),
            self.aggregate_type.clone(),
            &self.data,
        )
    }

    /// [`LoggedEvent::envelope`], owning the row's strings and `data`
    /// instead of copying them (a rebuild decodes every event it reads).
    pub fn into_envelope(mut self) -> Result<EventEnvelope<Box<RawValue>>, EnvelopeError> {
        let data = std::mem::take(&mut self.data);
        let event_type = std::mem::take(&mut self.event_type);
        let aggregate_id = std::mem::take(&mut self.aggregate_id);
        let aggregate_type = std::mem::take(&mut self.aggregate_type);
        let stored = StoredMetadata::from_owned_store(std::mem::take(&mut self.metadata))?;
        self.assemble(stored, event_type, aggregate_id, aggregate_type, data)
    }

    fn assemble<T>(
        &self,
        stored: StoredMetadata,
        event_type: String,
        aggregate_id: String,
        aggregate_type: String,
        data: T,
    ) -> Result<EventEnvelope<T>, EnvelopeError> {
        Ok(EventEnvelope {
            id: self.event_id,
            event_type,
            aggregate_id,
            aggregate_type,
            organization_id: stored.organization_id,
            user_id: stored.user_id,
            timestamp: stored.timestamp,
            version: u64::try_from(self.sequence)
                .map_err(|_| EnvelopeError::Sequence(self.event_id))?,
            metadata: stored.metadata,
            data,
        })
    }
}

/// The stored payload as far as it is read: the domain event, adjacently
/// tagged, whose `data` is kept as text. Its tag is skipped without being
/// copied.
#[derive(Deserialize)]
struct StoredPayload {
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

type Row = (
    i64,
    i64,
    Uuid,
    String,
    String,
    i64,
    String,
    String,
    sqlx::types::Json<StoredPayload>,
    sqlx::types::Json<HashMap<String, String>>,
    DateTime<Utc>,
);

fn from_row(row: Row) -> LoggedEvent {
    LoggedEvent {
        tx_id: row.0,
        position: row.1,
        event_id: row.2,
        aggregate_type: row.3,
        aggregate_id: row.4,
        sequence: row.5,
        event_type: row.6,
        event_version: row.7,
        data: row.8.0.data.unwrap_or_else(|| RawValue::NULL.to_owned()),
        metadata: row.9.0,
        recorded_at: row.10,
    }
}

const COLUMNS: &str =
    "(tx_id::text)::bigint, global_position, event_id, aggregate_type, aggregate_id,
     sequence, event_type, event_version, payload, metadata, recorded_at";

/// Up to `limit` events after `after`, in log order, all below the horizon.
///
/// The order names the table's columns: the select list's
/// `(tx_id::text)::bigint` is also called `tx_id`, and ordering by that
/// expression would sort every remaining event instead of reading the
/// `events_log_order` index.
pub async fn read_after(
    executor: impl PgExecutor<'_>,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE (tx_id, global_position) > (($1::bigint)::text::xid8, $2)
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY events.tx_id, events.global_position
         LIMIT $3"
    );
    // Decoded as the rows arrive, into a vector sized once: a batch of
    // thousands of events takes megabytes, and growing it would copy them
    // and fault in fresh pages at every doubling.
    let mut events = Vec::with_capacity(usize::try_from(limit.clamp(0, 100_000)).unwrap_or(0));
    let mut rows = sqlx::query_as::<_, Row>(&sql)
        .bind(after.tx_id)
        .bind(after.position)
        .bind(limit)
        .fetch(executor);
    while let Some(row) = rows.try_next().await? {
        events.push(from_row(row));
    }
    Ok(events)
}

/// Every event of one aggregate, in version order (for auditors and tests).
pub async fn aggregate_history(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// The events of one aggregate from version `from` to `to` (both included),
/// in version order: what a reader that met a later version first is
/// missing.
pub async fn aggregate_versions(
    executor: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence BETWEEN $3 AND $4
         ORDER BY sequence"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(from)
        .bind(to)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// The checkpoint of relay `name` (the log's start when it has none).
pub async fn load_checkpoint(
    executor: impl PgExecutor<'_>,
    name: &str,
) -> Result<Checkpoint, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT (last_tx_id::text)::bigint, last_position FROM relay_checkpoints WHERE relay_name = $1",
    )
    .bind(name)
    .fetch_optional(executor)
    .await?;
    Ok(
        row.map_or_else(Checkpoint::default, |(tx_id, position)| Checkpoint {
            tx_id,
            position,
        }),
    )
}

/// Moves relay `name`'s checkpoint forward (never backward) and counts what it published.
pub async fn save_checkpoint(
    executor: impl PgExecutor<'_>,
    name: &str,
    checkpoint: Checkpoint,
    published: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_checkpoints (relay_name, last_tx_id, last_position, published_total, updated_at)
         VALUES ($1, ($2::bigint)::text::xid8, $3, $4, now())
         ON CONFLICT (relay_name) DO UPDATE
           SET last_tx_id = EXCLUDED.last_tx_id,
               last_position = EXCLUDED.last_position,
               published_total = relay_checkpoints.published_total + EXCLUDED.published_total,
               updated_at = now()
         WHERE (relay_checkpoints.last_tx_id, relay_checkpoints.last_position)
             < (EXCLUDED.last_tx_id, EXCLUDED.last_position)",
    )
    .bind(name)
    .bind(checkpoint.tx_id)
    .bind(checkpoint.position)
    .bind(published)
    .execute(executor)
    .await?;
    Ok(())
}

/// What a reader at a checkpoint has not read yet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Behind {
    /// Events committed after the checkpoint.
    pub events: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_seconds: Option<f64>,
    /// Of those, the events at or above the horizon: committed, but not
    /// readable until every transaction that began before them has ended.
    pub held_events: i64,
    /// Age of the oldest held event, in seconds.
    pub held_seconds: Option<f64>,
}

/// [`behind`]'s statement, public so that its plan can be checked.
pub const BEHIND: &str = "SELECT count(*),
        extract(epoch FROM now() - min(e.recorded_at))::float8,
        count(*) FILTER (WHERE e.tx_id >= h.xmin),
        extract(epoch FROM now() - min(e.recorded_at) FILTER (WHERE e.tx_id >= h.xmin))::float8
 FROM events e, (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) h
 WHERE (e.tx_id, e.global_position) > (($1::bigint)::text::xid8, $2)";

/// Begins a transaction whose statements read `events` through its
/// indexes, never whole: sequential scans are off and no parallel worker
/// is started. For the lag measures, which count the few events after a
/// position every few seconds: the planner cannot know how few (a range
/// bound given as a parameter, or beyond the statistics of a table that
/// grows by thousands of rows a second, is estimated at a third of the
/// table), and chose a parallel sequential scan of the whole log, which
/// grows without end, on every core there is (ADR 0053).
pub async fn begin_by_index(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT set_config('enable_seqscan', 'off', true),
                set_config('max_parallel_workers_per_gather', '0', true)",
    )
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// The events committed after `after`, and those of them that wait for
/// the horizon, measured in one statement, read through the log order's
/// index ([`begin_by_index`]).
pub async fn behind(pool: &PgPool, after: Checkpoint) -> Result<Behind, sqlx::Error> {
    let mut tx = begin_by_index(pool).await?;
    let (events, oldest_seconds, held_events, held_seconds) = sqlx::query_as(BEHIND)
        .bind(after.tx_id)
        .bind(after.position)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Behind {
        events,
        oldest_seconds,
        held_events,
        held_seconds,
    })
}

/// The transaction at the horizon: the oldest still running in the whole
/// cluster (a transaction in another database holds it as much as one in
/// this one), found by its id, the `xmin` of a snapshot taken for the
/// purpose. It is either a session's ([`HoldingSession`], in
/// `pg_stat_activity`) or a prepared transaction ([`PreparedHolder`], in
/// `pg_prepared_xacts`); neither only if it ended between the snapshot and
/// the look-up. No younger transaction is named in its place (ADR 0050).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HorizonHolder {
    /// The transaction's id (`xid`, as `pg_stat_activity.backend_xid` and
    /// `pg_prepared_xacts.transaction` show it).
    pub transaction: i64,
    pub session: Option<HoldingSession>,
    pub prepared: Option<PreparedHolder>,
}

/// The session whose open transaction holds the horizon. Every role sees
/// its process id, database, user and application; its state and how
/// long it has been open only a superuser, the same role or a member of
/// `pg_read_all_stats` sees. Its statement is left out: another session's
/// SQL may carry values that are no business of the relay's logs (ADR
/// 0050).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldingSession {
    pub pid: i32,
    pub database: Option<String>,
    pub user: Option<String>,
    pub application: Option<String>,
    /// `active`, `idle in transaction` and so on.
    pub state: Option<String>,
    /// How long its transaction has been open, in whole seconds.
    pub open_seconds: Option<i64>,
}

/// A prepared transaction (two-phase commit) holding the horizon: it
/// belongs to no session, and holds the horizon until a `COMMIT PREPARED`
/// or `ROLLBACK PREPARED` names its `gid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedHolder {
    pub gid: String,
    pub database: String,
    pub owner: String,
    /// How long ago it was prepared, in whole seconds.
    pub prepared_seconds: i64,
}

/// The transaction holding the horizon back ([`HorizonHolder`]); none when
/// nothing is held back: no transaction still running began before one
/// that has committed.
pub async fn horizon_holder(pool: &PgPool) -> Result<Option<HorizonHolder>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        transaction: i64,
        pid: Option<i32>,
        database: Option<String>,
        user: Option<String>,
        application: Option<String>,
        state: Option<String>,
        open_seconds: Option<i64>,
        gid: Option<String>,
        prepared_in: Option<String>,
        owner: Option<String>,
        prepared_seconds: Option<i64>,
    }
    // The snapshot's xmin is the oldest transaction id still running below
    // its xmax (one past the latest to have ended); with none running
    // below xmax it equals xmax, and nothing committed waits for anything.
    let row: Option<Row> = sqlx::query_as(
        "WITH h AS (
             SELECT pg_snapshot_xmin(s)::xid AS xid
             FROM pg_current_snapshot() s
             WHERE pg_snapshot_xmin(s) < pg_snapshot_xmax(s)
         )
         SELECT h.xid::text::bigint AS transaction,
                a.pid, a.datname::text AS database, a.usename::text AS \"user\",
                a.application_name AS application, a.state,
                extract(epoch FROM now() - a.xact_start)::bigint AS open_seconds,
                p.gid, p.database::text AS prepared_in, p.owner::text AS owner,
                extract(epoch FROM now() - p.prepared)::bigint AS prepared_seconds
         FROM h
         LEFT JOIN pg_stat_activity a ON a.backend_xid = h.xid AND a.pid <> pg_backend_pid()
         LEFT JOIN pg_prepared_xacts p ON p.transaction = h.xid
         LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| HorizonHolder {
        transaction: row.transaction,
        session: row.pid.map(|pid| HoldingSession {
            pid,
            database: row.database,
            user: row.user,
            application: row.application,
            state: row.state,
            open_seconds: row.open_seconds,
        }),
        prepared: row.gid.map(|gid| PreparedHolder {
            gid,
            database: row.prepared_in.unwrap_or_default(),
            owner: row.owner.unwrap_or_default(),
            prepared_seconds: row.prepared_seconds.unwrap_or(0),
        }),
    }))
}
