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
//! At most `query_api.max_waiting_queries` requests wait for a slot at
//! once: one more finds the queue full ([`Overloaded::QueueFull`]) and is
//! answered 503 with `Retry-After` at once, so that a burst beyond what the
//! process can serve costs neither memory nor a wait the client would give
//! up on. A request waits at most `query_api.max_slot_wait_ms` for its
//! slot ([`Overloaded::WaitedTooLong`], the same 503): when the slots are
//! held by slow operations, the queue moves too slowly for its length to
//! bound the wait. A field taking a slot back after its token wait is
//! never refused: its request was let in.
//!
//! Operations over the WebSocket (subscriptions, and queries sent on a
//! socket) take no slot: nothing here bounds them but the sockets open
//! and the operations each one starts.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of one query API process.
#[derive(Debug, Clone)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    /// The number of slots.
    size: usize,
    /// Requests waiting in [`Slots::take`] now.
    waiting: Arc<AtomicUsize>,
    /// The most that may wait there at once.
    max_waiting: usize,
    /// The longest one may wait there.
    max_wait: Duration,
}

/// A request refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    /// Every slot is taken and the queue for them is full.
    #[error(
        "the query API is at capacity: every execution slot ({slots}) is taken and the queue for them ({waiting}) is full; retry shortly"
    )]
    QueueFull { slots: usize, waiting: usize },
    /// No slot came free within the longest wait.
    #[error(
        "the query API is at capacity: no execution slot (of {slots}) came free within {waited_ms} ms; retry shortly"
    )]
    WaitedTooLong { slots: usize, waited_ms: u128 },
}

impl Overloaded {
    /// The `reason` label of `graphql_overloaded_total`.
    fn reason(&self) -> &'static str {
        match self {
            Self::QueueFull { .. } => "queue_full",
            Self::WaitedTooLong { .. } => "waited_too_long",
        }
    }

    fn counted(self) -> Self {
        metrics::counter!("graphql_overloaded_total", "reason" => self.reason()).increment(1);
        self
    }
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

/// One place in the queue of [`Slots::take`], counted until it is dropped.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    /// `slots` operations at once (at least one), at most `max_waiting`
    /// more waiting for a slot, each at most `max_wait`.
    pub fn new(slots: usize, max_waiting: usize, max_wait: Duration) -> Self {
        // Every series exists from the start, at 0 until something waits
        // or is refused, so that alerts on them see a value.
        metrics::gauge!("graphql_waiting").increment(0.0);
        for reason in ["queue_full", "waited_too_long"] {
            metrics::counter!("graphql_overloaded_total", "reason" => reason).increment(0);
        }
        Self {
            semaphore: Arc::new(Semaphore::new(slots.max(1))),
            size: slots.max(1),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            max_wait,
        }
    }

    /// A free slot at once, or after waiting in arrival order; refused
    /// when every slot is taken and `max_waiting` requests wait already,
    /// or when none comes free within `max_wait`. The slot is held by the
    /// returned [`Slot`] until it is dropped.
    pub async fn take(&self) -> Result<Arc<Slot>, Overloaded> {
        let permit = match self.semaphore.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let before = self.waiting.fetch_add(1, Ordering::AcqRel);
                let queued = Queued(&self.waiting);
                if before >= self.max_waiting {
                    return Err(Overloaded::QueueFull {
                        slots: self.size,
                        waiting: before,
                    }
                    .counted());
                }
                let _waiting = Waiting::start();
                let Ok(permit) =
                    tokio::time::timeout(self.max_wait, acquire(&self.semaphore)).await
                else {
                    return Err(Overloaded::WaitedTooLong {
                        slots: self.size,
                        waited_ms: self.max_wait.as_millis(),
                    }
                    .counted());
                };
                drop(queued);
                permit
            }
        };
        Ok(Arc::new(Slot {
            semaphore: self.semaphore.clone(),
            held: Mutex::new(Held {
                waits: 0,
                permit: Some(permit),
            }),
        }))
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
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

    /// A wait no test reaches.
    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_slot_is_held_until_dropped_and_given_back_aside() {
        let slots = Slots::new(2, 8, LONG);
        let first = slots.take().await.unwrap();
        let second = slots.take().await.unwrap();
        assert_eq!(slots.free(), 0);
        // A third request waits until a slot is free.
        let third = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take().await.unwrap() }
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
        let slots = Slots::new(1, 8, LONG);
        let slot = slots.take().await.unwrap();
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

    /// `future`'s output, which must come without waiting for a slot.
    async fn at_once<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(5), future)
            .await
            .expect("answered at once, not queued")
    }

    #[tokio::test]
    async fn a_request_beyond_the_queue_is_refused_and_a_place_freed_is_taken_again() {
        let slots = Slots::new(1, 2, LONG);
        let held = slots.take().await.unwrap();
        let queue = |slots: &Slots| {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take().await.map(drop) })
        };
        let first = queue(&slots);
        let second = queue(&slots);
        while slots.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        // The queue is full: one more is refused at once, and nothing of it
        // stays counted.
        let refused = at_once(slots.take()).await.map(drop);
        assert_eq!(
            refused,
            Err(Overloaded::QueueFull {
                slots: 1,
                waiting: 2
            })
        );
        assert_eq!(slots.waiting(), 2);
        // A waiting request that goes away frees its place.
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(slots.waiting(), 1);
        let third = queue(&slots);
        while slots.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        drop(held);
        assert_eq!(second.await.unwrap(), Ok(()));
        assert_eq!(third.await.unwrap(), Ok(()));
        assert_eq!(slots.waiting(), 0);
        assert_eq!(slots.free(), 1);
    }

    #[tokio::test]
    async fn with_no_queue_only_a_free_slot_lets_a_request_in() {
        let slots = Slots::new(2, 0, LONG);
        let first = slots.take().await.unwrap();
        let second = slots.take().await.unwrap();
        assert_eq!(
            at_once(slots.take()).await.map(drop),
            Err(Overloaded::QueueFull {
                slots: 2,
                waiting: 0
            })
        );
        drop(first);
        let third = slots.take().await.unwrap();
        drop((second, third));
        assert_eq!(slots.free(), 2);
        assert_eq!(slots.waiting(), 0);
    }

    #[tokio::test]
    async fn a_request_waits_at_most_the_longest_wait_and_leaves_the_queue() {
        let slots = Slots::new(1, 8, Duration::from_millis(100));
        let held = slots.take().await.unwrap();
        let started = std::time::Instant::now();
        let refused = at_once(slots.take()).await.map(drop);
        assert_eq!(
            refused,
            Err(Overloaded::WaitedTooLong {
                slots: 1,
                waited_ms: 100
            })
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(slots.waiting(), 0, "the refused request left the queue");
        // A slot freed within the wait is taken.
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take().await.map(drop) }
        });
        while slots.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        drop(held);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(slots.free(), 1);
    }
}
