//! Two batches caught mid-way: each applied on a transaction of its own,
//! in a task, and a way to see that one waits for a lock. Shared by the
//! tests showing that batches moving kept counts in crossed order wait for
//! each other instead of deadlocking (ADR 0041).

use std::time::Duration;

use pivotal_projectors::framework::{Envelope, Projection, ProjectionError};
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// Applies `events` with `projection` on a transaction of its own and
/// commits, in a task; returns the transaction's backend pid and the task.
pub async fn spawn_batch<P: Projection + 'static>(
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
pub async fn waits_for_a_lock(pool: &PgPool, pid: i32) -> bool {
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
pub async fn finished(
    task: JoinHandle<Result<(), ProjectionError>>,
) -> Result<(), ProjectionError> {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
}
