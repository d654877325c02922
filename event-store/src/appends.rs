//! Appends of concurrent commands share a statement.
//!
//! Each command's events are one [`Append`]: rows for postgres-es's
//! `events` table, encoded on the command's own task. An [`Appender`]
//! (one per [`AggregateStore`](crate::commands::AggregateStore)) writes
//! them with at most [`WRITERS`] statements at a time: a command that
//! finds a writer free goes alone, and the commands that arrive while
//! every writer is busy go together in the next statement, one
//! `INSERT ... SELECT FROM UNNEST` that commits them all at once. Under
//! load that is one round trip, one transaction and one commit record for
//! many commands instead of one each; with a writer free no command waits
//! for another (ADR 0038).
//!
//! One statement is atomic: the commands in it are all stored or none is.
//! When one of them collides with a stored event (another writer's,
//! ADR 0023), the statement stores nothing, and each of its commands is
//! written again alone, so that only the one that collided is told so.
//! Any other failure is every command's answer, as it would have been
//! alone: a statement that may have committed is never written again.
//! Among the commands written alone, one whose statement fails other than
//! by a collision does not fail the ones after it: they are written on
//! another connection.
//! Rows go in the order of their aggregate ids, so two statements
//! (of two processes) wait for each other's keys in one order and cannot
//! deadlock.
//!
//! A writer keeps its connection from one statement to the next while
//! commands keep coming (at most [`db::ALIVE_BYPASS_WINDOW`] after its last
//! use), instead of handing it back to the pool after each statement:
//! sqlx tests every connection that comes back with a round trip of its
//! own, and under load that was one more round trip for every statement.
//! A connection whose statement failed other than by a collision goes
//! back to the pool (which tests it, and discards it if broken), and every
//! kept connection goes back once no command came for that long (ADR 0054).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::commands::{CommittedEvent, is_unavailable};
use crate::db;

/// Statements in flight per aggregate type and process.
pub const WRITERS: usize = 4;

/// A statement takes further commands while it has fewer rows than this…
const MOST_ROWS: usize = 500;
/// … and fewer payload bytes than this.
const MOST_BYTES: usize = 8 * 1024 * 1024;

/// One command's events, as rows of `events`.
#[derive(Debug, Clone, Default)]
pub struct Append {
    pub aggregate_id: String,
    pub sequences: Vec<i64>,
    pub types: Vec<String>,
    pub versions: Vec<String>,
    pub payloads: Vec<String>,
    /// The command's metadata, the same on each of its rows.
    pub metadata: String,
}

impl Append {
    fn rows(&self) -> usize {
        self.sequences.len()
    }

    fn bytes(&self) -> usize {
        self.payloads.iter().map(String::len).sum::<usize>() + self.metadata.len()
    }
}

/// Why an append was not stored.
#[derive(Debug)]
pub enum Failure {
    /// An event's sequence is taken: another writer came first.
    Conflict,
    /// The store could not be reached; the message says why.
    Unavailable(String),
    /// The store refused the statement; the message says why.
    Store(String),
}

impl Failure {
    fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            other if is_unavailable(other) => Self::Unavailable(other.to_string()),
            other => Self::Store(other.to_string()),
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<CommittedEvent>, Failure>>;

struct Job {
    append: Append,
    reply: Reply,
}

/// Writes one aggregate type's appends, several to a statement under load.
pub struct Appender {
    pool: PgPool,
    aggregate_type: &'static str,
    writers: usize,
    /// Started by the first append, on the runtime it runs on.
    queue: OnceLock<mpsc::UnboundedSender<Job>>,
    /// Appends queued for a writer (a gauge for tests and metrics).
    waiting: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("type", &self.aggregate_type)
            .field("writers", &self.writers)
            .finish()
    }
}

impl Appender {
    /// An appender with at most `writers` statements in flight (at least one).
    pub fn new(pool: PgPool, aggregate_type: &'static str, writers: usize) -> Self {
        Self {
            pool,
            aggregate_type,
            writers: writers.max(1),
            queue: OnceLock::new(),
            waiting: Arc::default(),
        }
    }

    /// The pool the statements run on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends queued and not yet taken by a writer.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Stores `append` and reports its events as stored, in sequence order.
    pub async fn append(&self, append: Append) -> Result<Vec<CommittedEvent>, Failure> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(write_queue(
                self.pool.clone(),
                self.aggregate_type,
                self.writers,
                receiver,
                self.waiting.clone(),
            ));
            sender
        });
        let (reply, answer) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        match queue.send(Job { append, reply }) {
            Ok(()) => answer.await.unwrap_or_else(|_| {
                Err(Failure::Unavailable(
                    "the append was interrupted; whether it was stored is unknown".into(),
                ))
            }),
            // The writers' runtime has ended (a store used on a later
            // runtime): write on this task.
            Err(mpsc::error::SendError(job)) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                insert(&self.pool, self.aggregate_type, &[&job.append])
                    .await
                    .map_err(|e| Failure::of(&e))
                    .map(|rows| split(&[&job.append], rows).pop().unwrap_or_default())
            }
        }
    }
}

/// The writers' connections between two statements, each with when it
/// was last used, the latest last.
#[derive(Default)]
struct Kept(Mutex<Vec<(PoolConnection<Postgres>, Instant)>>);

impl Kept {
    /// The connection used last, if within the window; older ones go back
    /// to the pool.
    fn take(&self) -> Option<PoolConnection<Postgres>> {
        let mut stale = Vec::new();
        let fresh = {
            let mut kept = self.0.lock().ok()?;
            match kept.pop() {
                Some((conn, used)) if used.elapsed() < db::ALIVE_BYPASS_WINDOW => Some(conn),
                Some(old) => {
                    stale.push(old);
                    stale.append(&mut kept);
                    None
                }
                None => None,
            }
        };
        drop(stale);
        fresh
    }

    fn keep(&self, conn: PoolConnection<Postgres>) {
        if let Ok(mut kept) = self.0.lock() {
            kept.push((conn, Instant::now()));
        }
    }

    /// Hands every kept connection back to the pool.
    fn release(&self) {
        let all = self
            .0
            .lock()
            .map(|mut kept| std::mem::take(&mut *kept))
            .unwrap_or_default();
        drop(all);
    }
}

/// Takes queued appends as writers come free: each statement takes every
/// append waiting when its writer came free, within its bounds.
async fn write_queue(
    pool: PgPool,
    aggregate_type: &'static str,
    writers: usize,
    mut queue: mpsc::UnboundedReceiver<Job>,
    waiting: Arc<AtomicUsize>,
) {
    let free = Arc::new(Semaphore::new(writers));
    let kept = Arc::new(Kept::default());
    loop {
        let first = match tokio::time::timeout(db::ALIVE_BYPASS_WINDOW, queue.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            // Quiet: the connections go back to the pool.
            Err(_) => {
                kept.release();
                continue;
            }
        };
        let Ok(writer) = free.clone().acquire_owned().await else {
            return;
        };
        let (mut rows, mut bytes) = (first.append.rows(), first.append.bytes());
        let mut jobs = vec![first];
        while rows < MOST_ROWS && bytes < MOST_BYTES {
            let Ok(job) = queue.try_recv() else { break };
            rows += job.append.rows();
            bytes += job.append.bytes();
            jobs.push(job);
        }
        waiting.fetch_sub(jobs.len(), Ordering::Relaxed);
        let pool = pool.clone();
        let kept = kept.clone();
        tokio::spawn(async move {
            let conn = match kept.take() {
                Some(conn) => Ok(conn),
                None => pool.acquire().await,
            };
            match conn {
                Ok(conn) => {
                    if let Some(conn) = write(&pool, conn, aggregate_type, jobs).await {
                        kept.keep(conn);
                    }
                }
                Err(error) => {
                    for job in jobs {
                        let _ = job.reply.send(Err(Failure::of(&error)));
                    }
                }
            }
            drop(writer);
        });
    }
}

/// Writes `jobs` in one statement, or each alone if one of them collided;
/// returns the connection if it is fit to keep (its statements either ran
/// or collided).
async fn write(
    pool: &PgPool,
    mut conn: PoolConnection<Postgres>,
    aggregate_type: &'static str,
    mut jobs: Vec<Job>,
) -> Option<PoolConnection<Postgres>> {
    metrics::histogram!("event_store_append_commands", "aggregate" => aggregate_type)
        .record(jobs.len() as f64);
    jobs.sort_by(|a, b| a.append.aggregate_id.cmp(&b.append.aggregate_id));
    let appends: Vec<&Append> = jobs.iter().map(|j| &j.append).collect();
    match insert(&mut *conn, aggregate_type, &appends).await {
        Ok(rows) => {
            let split = split(&appends, rows);
            for (job, events) in jobs.into_iter().zip(split) {
                let _ = job.reply.send(Ok(events));
            }
            Some(conn)
        }
        Err(error) if jobs.len() > 1 && stored_nothing(&error) => {
            tracing::debug!(commands = jobs.len(), %error, "an append collided; writing each alone");
            write_each(pool, conn, aggregate_type, jobs).await
        }
        Err(error) => {
            for job in jobs {
                let _ = job.reply.send(Err(Failure::of(&error)));
            }
            stored_nothing(&error).then_some(conn)
        }
    }
}

/// Writes each of `jobs` alone, in order, the first on `conn`. A statement
/// that failed other than by a collision may have broken its connection:
/// its connection goes back to the pool (which tests it) and the next
/// command is written on another, so that one command's failure is not the
/// others'. When no connection can be had, that is the answer of every
/// command left.
async fn write_each(
    pool: &PgPool,
    conn: PoolConnection<Postgres>,
    aggregate_type: &'static str,
    jobs: Vec<Job>,
) -> Option<PoolConnection<Postgres>> {
    let mut conn = Some(conn);
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        let mut this = match conn.take() {
            Some(conn) => conn,
            None => match pool.acquire().await {
                Ok(conn) => conn,
                Err(error) => {
                    for job in std::iter::once(job).chain(jobs) {
                        let _ = job.reply.send(Err(Failure::of(&error)));
                    }
                    return None;
                }
            },
        };
        let one = [&job.append];
        let answer = match insert(&mut *this, aggregate_type, &one).await {
            Ok(rows) => {
                conn = Some(this);
                Ok(split(&one, rows).pop().unwrap_or_default())
            }
            Err(error) => {
                if stored_nothing(&error) {
                    conn = Some(this);
                }
                Err(Failure::of(&error))
            }
        };
        let _ = job.reply.send(answer);
    }
    conn
}

/// Whether `error` left the statement without effect and says one of its
/// commands (not the store) is the cause: a taken sequence, or a deadlock
/// (which the ordered rows keep from happening among this project's own
/// statements).
fn stored_nothing(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.is_unique_violation() || db.code().as_deref() == Some("40P01"))
}

/// A stored event: id, aggregate id, type, sequence, global position.
type Row = (Uuid, String, String, i64, i64);

/// Inserts the rows of `appends` in one statement, which commits by itself
/// (given a pool) or with the caller's transaction (given a connection in
/// one).
pub async fn insert<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    aggregate_type: &str,
    appends: &[&Append],
) -> Result<Vec<Row>, sqlx::Error> {
    let rows: usize = appends.iter().map(|a| a.rows()).sum();
    let mut ids = Vec::with_capacity(rows);
    let mut sequences = Vec::with_capacity(rows);
    let mut types = Vec::with_capacity(rows);
    let mut versions = Vec::with_capacity(rows);
    let mut payloads = Vec::with_capacity(rows);
    let mut metadata = Vec::with_capacity(rows);
    for append in appends {
        for row in 0..append.rows() {
            ids.push(append.aggregate_id.as_str());
            sequences.push(append.sequences[row]);
            types.push(append.types[row].as_str());
            versions.push(append.versions[row].as_str());
            payloads.push(append.payloads[row].as_str());
            metadata.push(append.metadata.as_str());
        }
    }
    sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                             event_version, payload, metadata)
         SELECT $1, e.aggregate_id, e.sequence, e.event_type, e.event_version,
                e.payload::json, e.metadata::json
         FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
              AS e(aggregate_id, sequence, event_type, event_version, payload, metadata)
         RETURNING event_id, aggregate_id, event_type, sequence, global_position",
    )
    .bind(aggregate_type)
    .bind(&ids)
    .bind(&sequences)
    .bind(&types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadata)
    .fetch_all(executor)
    .await
}

/// Each append's events among the stored `rows`, in sequence order.
pub fn split(appends: &[&Append], rows: Vec<Row>) -> Vec<Vec<CommittedEvent>> {
    let mut split: Vec<Vec<CommittedEvent>> = appends
        .iter()
        .map(|a| Vec::with_capacity(a.rows()))
        .collect();
    // By aggregate and sequence: a statement may hold two appends of one
    // aggregate (the first one's command was dropped while it waited).
    let index: HashMap<(&str, i64), usize> = if appends.len() > 1 {
        appends
            .iter()
            .enumerate()
            .flat_map(|(i, a)| {
                a.sequences
                    .iter()
                    .map(move |s| ((a.aggregate_id.as_str(), *s), i))
            })
            .collect()
    } else {
        HashMap::new()
    };
    for (event_id, aggregate_id, event_type, sequence, position) in rows {
        let at = if appends.len() > 1 {
            index.get(&(aggregate_id.as_str(), sequence)).copied()
        } else {
            Some(0)
        };
        if let Some(events) = at.and_then(|i| split.get_mut(i)) {
            events.push(CommittedEvent {
                event_id,
                event_type,
                sequence: u64::try_from(sequence).unwrap_or_default(),
                position,
            });
        }
    }
    for events in &mut split {
        events.sort_by_key(|e| e.sequence);
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(id: &str, sequences: &[i64]) -> Append {
        Append {
            aggregate_id: id.into(),
            sequences: sequences.to_vec(),
            types: sequences.iter().map(|s| format!("t{s}")).collect(),
            versions: sequences.iter().map(|_| "1.0".into()).collect(),
            payloads: sequences.iter().map(|_| "{}".into()).collect(),
            metadata: "{}".into(),
        }
    }

    #[test]
    fn stored_rows_go_back_to_their_appends_in_sequence_order() {
        let (a, b) = (append("a", &[4, 5]), append("b", &[1]));
        let id = |n: u128| Uuid::from_u128(n);
        let rows = vec![
            (id(3), "b".into(), "t1".into(), 1, 12),
            (id(2), "a".into(), "t5".into(), 5, 11),
            (id(1), "a".into(), "t4".into(), 4, 10),
        ];
        let split = split(&[&a, &b], rows);
        let seen: Vec<Vec<(Uuid, &str, u64, i64)>> = split
            .iter()
            .map(|events| {
                events
                    .iter()
                    .map(|e| (e.event_id, e.event_type.as_str(), e.sequence, e.position))
                    .collect()
            })
            .collect();
        assert_eq!(
            seen,
            [
                vec![(id(1), "t4", 4, 10), (id(2), "t5", 5, 11)],
                vec![(id(3), "t1", 1, 12)],
            ]
        );
    }

    #[test]
    fn an_append_counts_its_rows_and_payload_bytes() {
        let a = append("a", &[1, 2, 3]);
        assert_eq!(a.rows(), 3);
        assert_eq!(a.bytes(), 3 * 2 + 2);
    }
}
