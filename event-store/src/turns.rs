//! Commands on one aggregate take turns within a process.
//!
//! Two commands on one aggregate decided at once on the same version
//! cannot both commit: the second collides with the first's event on the
//! primary key, and is read back and decided again (ADR 0023). Within a
//! process that race is avoidable, and costly under load: a wasted insert,
//! an error in PostgreSQL's log, a read of the aggregate's events and a
//! second decision. So [`Turns`] lets one command at a time run on each
//! aggregate of a process; the next starts from the state the last one
//! left (the remembered state) and commits without colliding. Writers in
//! other processes still meet at the primary key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One async lock per aggregate with a command running or waiting; an
/// aggregate's lock is dropped with its last turn.
#[derive(Debug, Default)]
pub struct Turns {
    locks: Mutex<Locks>,
}

#[derive(Debug, Default)]
struct Locks {
    by_aggregate: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// At this many locks, those nobody holds or waits for are swept (a
    /// waiter cancelled at the wrong moment can leave one behind).
    sweep_at: usize,
}

/// The fewest locks a sweep waits for.
const SWEEP_AT_LEAST: usize = 1024;

/// A command's turn on its aggregate: the next command on it starts when
/// this is dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    turns: &'a Turns,
    aggregate_id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turns {
    fn locks(&self) -> MutexGuard<'_, Locks> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the commands on `aggregate_id` that came first.
    pub async fn take(&self, aggregate_id: &str) -> Turn<'_> {
        let lock = {
            let mut locks = self.locks();
            if locks.by_aggregate.len() >= locks.sweep_at.max(SWEEP_AT_LEAST) {
                locks
                    .by_aggregate
                    .retain(|_, lock| Arc::strong_count(lock) > 1);
                locks.sweep_at = locks.by_aggregate.len() * 2;
            }
            match locks.by_aggregate.get(aggregate_id) {
                Some(lock) => lock.clone(),
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks
                        .by_aggregate
                        .insert(aggregate_id.to_owned(), lock.clone());
                    lock
                }
            }
        };
        Turn {
            turns: self,
            aggregate_id: aggregate_id.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// How many aggregates have a command running or waiting (and, until
    /// a sweep, locks left by cancelled waiters).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks().by_aggregate.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut locks = self.turns.locks();
        drop(self.guard.take());
        if locks
            .by_aggregate
            .get(&self.aggregate_id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.by_aggregate.remove(&self.aggregate_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::time::Duration;

    #[tokio::test]
    async fn one_command_at_a_time_per_aggregate_and_none_between_aggregates() {
        let turns = Turns::default();
        let first = turns.take("a").await;
        // Another aggregate's command does not wait.
        let other = turns.take("b").await;
        assert_eq!(turns.len(), 2);
        // The same aggregate's waits until the first is dropped.
        let second = turns.take("a");
        tokio::pin!(second);
        assert!((&mut second).now_or_never().is_none());
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second command's turn comes");
        drop(other);
        assert_eq!(turns.len(), 1);
        drop(second);
        assert!(turns.is_empty());
    }

    #[tokio::test]
    async fn locks_left_by_cancelled_waiters_are_swept() {
        let turns = Turns::default();
        for n in 1..SWEEP_AT_LEAST {
            let id = format!("a{n}");
            let held = turns.take(&id).await;
            // A waiter given up while the turn is held.
            let waiting = turns.take(&id);
            tokio::pin!(waiting);
            assert!((&mut waiting).now_or_never().is_none());
            drop(held);
        }
        // Each cancelled waiter left its aggregate's lock behind.
        assert_eq!(turns.len(), SWEEP_AT_LEAST - 1);
        let held = turns.take("x").await;
        assert_eq!(turns.len(), SWEEP_AT_LEAST);
        // At the bound, the next take sweeps the locks nobody holds.
        let other = turns.take("y").await;
        assert_eq!(turns.len(), 2);
        drop((held, other));
        assert!(turns.is_empty());
    }
}
