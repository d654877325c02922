//! Execution slots: at most `query_api.max_concurrent_queries` GraphQL
//! operations over HTTP execute at once (ADR 0043). A request beyond that
//! waits for a slot after its token is verified and before its operation
//! is parsed, so a burst of requests costs their bodies while they wait,
//! not the parsed documents, loaders, rows and answers of their execution;
//! slots are taken in arrival order.
//!
//! A field waiting for the read models to reach a consistency token gives
//! its request's slot back for the wait ([`Slot::aside`]) once the first
//! check shows the token is not yet applied, and takes a slot again before
//! it reads: a projector falling behind then delays the reads that asked
//! for its writes, not every read queued behind them.
//!
//! Operations over the WebSocket (subscriptions, and queries sent on a
//! socket) take no slot: nothing here bounds them but the sockets open
//! and the operations each one starts.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of one query API process.
#[derive(Debug, Clone)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
}

/// Counts the requests waiting for a slot in the `graphql_waiting`
/// gauge while it lives (also when the request is dropped while waiting).
struct Waiting;

impl Waiting {
    fn start() -> Self {
        metrics::gauge!("graphql_waiting").increment(1.0);
        Self
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("graphql_waiting").decrement(1.0);
    }
}

impl Slots {
    /// `slots` operations at once (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(slots.max(1))),
        }
    }

    /// Waits for a free slot, held by the returned [`Slot`] until it is
    /// dropped.
    pub async fn take(&self) -> Arc<Slot> {
        let permit = {
            let _waiting = Waiting::start();
            acquire(&self.semaphore).await
        };
        Arc::new(Slot {
            semaphore: self.semaphore.clone(),
            held: Mutex::new(Held {
                waits: 0,
                permit: Some(permit),
            }),
        })
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.semaphore.available_permits()
    }
}

async fn acquire(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    semaphore
        .clone()
        .acquire_owned()
        .await
        .expect("the slots' semaphore is never closed")
}

#[derive(Debug)]
struct Held {
    /// Fields of the request waiting for a token now.
    waits: usize,
    /// The request's slot, given back while `waits` > 0.
    permit: Option<OwnedSemaphorePermit>,
}

/// One request's slot.
#[derive(Debug)]
pub struct Slot {
    semaphore: Arc<Semaphore>,
    held: Mutex<Held>,
}

/// One field's wait in [`Slot::aside`]: counted in `Held::waits` until it
/// ends, or until it is dropped unfinished (its request went away).
struct Aside<'a>(&'a Slot);

impl Drop for Aside<'_> {
    fn drop(&mut self) {
        self.0.held().waits -= 1;
    }
}

impl Slot {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `wait` with the slot given back, and takes one again once the
    /// last of the request's fields waiting this way is done.
    pub async fn aside<F: Future>(&self, wait: F) -> F::Output {
        let aside = {
            let mut held = self.held();
            held.waits += 1;
            held.permit = None;
            Aside(self)
        };
        let output = wait.await;
        drop(aside);
        let wanted = |held: &Held| held.waits == 0 && held.permit.is_none();
        if wanted(&self.held()) {
            let permit = {
                let _waiting = Waiting::start();
                acquire(&self.semaphore).await
            };
            // Unless another field began waiting meanwhile, or one that
            // ended with this one took a slot first.
            let mut held = self.held();
            if wanted(&held) {
                held.permit = Some(permit);
            }
        }
        output
    }
}

/// [`Slot::aside`] when there is a slot (requests over HTTP), else `wait`
/// as it is.
pub async fn aside<F: Future>(slot: Option<&Slot>, wait: F) -> F::Output {
    match slot {
        Some(slot) => slot.aside(wait).await,
        None => wait.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_is_held_until_dropped_and_given_back_aside() {
        let slots = Slots::new(2);
        let first = slots.take().await;
        let second = slots.take().await;
        assert_eq!(slots.free(), 0);
        // A third request waits until a slot is free.
        let third = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take().await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        // The first request's field waits for a token: its slot goes to the
        // third request meanwhile, and comes back once the third is done.
        let (back, release) = tokio::sync::oneshot::channel::<()>();
        let waiting = tokio::spawn({
            let first = first.clone();
            async move { first.aside(async { release.await.ok() }).await }
        });
        let third = third.await.unwrap();
        assert_eq!(slots.free(), 0);
        back.send(()).unwrap();
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "no slot is free for the first request"
        );
        drop(third);
        assert_eq!(waiting.await.unwrap(), Some(()));
        assert_eq!(slots.free(), 0);
        drop((first, second));
        assert_eq!(slots.free(), 2);
    }

    #[tokio::test]
    async fn a_wait_dropped_unfinished_leaves_the_slot_to_be_taken_again() {
        let slots = Slots::new(1);
        let slot = slots.take().await;
        // A field's wait that never ends is dropped with its request...
        let dropped = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            slot.aside(std::future::pending::<()>()),
        )
        .await;
        assert!(dropped.is_err());
        assert_eq!(slots.free(), 1, "the slot was given back for the wait");
        // ...and a later wait of the same request takes a slot again at its
        // end, as if the dropped one had never been.
        slot.aside(async {}).await;
        assert_eq!(slots.free(), 0);
        drop(slot);
        assert_eq!(slots.free(), 1);
    }
}
