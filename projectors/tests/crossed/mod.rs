//! Two batches caught mid-way: each applied on a transaction of its own,
//! in a task, and a way to see that one waits for a lock. Shared by the
//! tests showing that batches moving kept counts in crossed order wait for
//! each other instead of deadlocking (ADR 0041): [`cross`] runs the whole
//! crossing, [`counts_and_rows`] reads what it left; [`apply_committed`]
//! applies a batch in a transaction of its own.

use std::time::Duration;

use pivotal_projectors::framework::{Envelope, Projection, ProjectionError};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// A count row held `FOR UPDATE` by a third transaction while the two
/// batches start, so that both are caught mid-way.
pub struct Held<'a> {
    /// The counts' table (`rm_customer_counts`, `rm_quote_counts`).
    pub table: &'a str,
    pub organization: Uuid,
    pub status: &'a str,
}

/// Applies `seed` and commits; then, with `held` locked by a third
/// transaction, starts `first` and sees it wait, starts `second` and sees
/// it wait (for `first`), lets go, and returns both batches' results.
pub async fn cross<P: Projection + Copy + 'static>(
    pool: &PgPool,
    projection: P,
    seed: &[Envelope],
    held: Held<'_>,
    first: Vec<Envelope>,
    second: Vec<Envelope>,
) -> (Result<(), ProjectionError>, Result<(), ProjectionError>) {
    apply_committed(pool, &projection, &seed.iter().collect::<Vec<_>>()).await;

    let mut holder = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT 1 FROM {} WHERE organization_id = $1 AND status = $2 FOR UPDATE",
        held.table
    ))
    .bind(held.organization)
    .bind(held.status)
    .execute(&mut *holder)
    .await
    .unwrap();

    let (one, one_task) = spawn_batch(pool, projection, first).await;
    assert!(
        waits_for_a_lock(pool, one).await,
        "the first batch never waited for the held count"
    );
    let (other, other_task) = spawn_batch(pool, projection, second).await;
    assert!(
        waits_for_a_lock(pool, other).await,
        "the second batch never waited for the first"
    );
    holder.commit().await.unwrap();
    (finished(one_task).await, finished(other_task).await)
}

/// The counts in `table` (column `counted`) other than 0, and the rows of
/// `rows` counted the same way, each by organization and status in key
/// order.
pub async fn counts_and_rows(
    pool: &PgPool,
    table: &str,
    counted: &str,
    rows: &str,
) -> (Vec<(Uuid, String, i64)>, Vec<(Uuid, String, i64)>) {
    let counts = sqlx::query_as(&format!(
        "SELECT organization_id, status, {counted} FROM {table} WHERE {counted} <> 0
         ORDER BY organization_id, status"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    let rows = sqlx::query_as(&format!(
        "SELECT organization_id, status, count(*) FROM {rows}
         GROUP BY organization_id, status ORDER BY organization_id, status"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    (counts, rows)
}

/// Applies `events` with `projection` on a transaction of its own and
/// commits.
pub async fn apply_committed<P: Projection>(pool: &PgPool, projection: &P, events: &[&Envelope]) {
    let mut tx = pool.begin().await.unwrap();
    projection.apply_batch(&mut tx, events).await.unwrap();
    tx.commit().await.unwrap();
}

/// Applies `events` with `projection` on a transaction of its own and
/// commits, in a task; returns the transaction's backend pid and the task.
async fn spawn_batch<P: Projection + 'static>(
    pool: &PgPool,
    projection: P,
    events: Vec<Envelope>,
) -> (i32, JoinHandle<Result<(), ProjectionError>>) {
    let mut tx = pool.begin().await.unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        projection
            .apply_batch(&mut tx, &events.iter().collect::<Vec<_>>())
            .await?;
        tx.commit().await?;
        Ok(())
    });
    (pid, task)
}

/// Whether the backend `pid` comes to wait for a lock within 10 s.
async fn waits_for_a_lock(pool: &PgPool, pid: i32) -> bool {
    pivotal_test_support::eventually(Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            let (waits,): (bool,) = sqlx::query_as(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false)
                 FROM pg_stat_activity WHERE pid = $1",
            )
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap();
            waits.then_some(())
        }
    })
    .await
    .is_some()
}

/// The result of a batch's task, which must end within 30 s.
async fn finished(task: JoinHandle<Result<(), ProjectionError>>) -> Result<(), ProjectionError> {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
}
