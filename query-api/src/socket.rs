//! A subscription socket's lifecycle around async-graphql's protocol
//! handling: how long it may wait for `connection_init`, and the close
//! codes the `graphql-transport-ws` protocol names (ADR 0049).
//!
//! async-graphql closes a `graphql-transport-ws` socket with WebSocket
//! codes of its own: 1002 both for a refused `connection_init` and for a
//! message that is not the protocol's, 1011 for a `subscribe` before
//! `connection_ack`. The protocol gives each its code, and clients act on
//! them (a 4403 is not retried with the same token). Each close frame is
//! rewritten on its way out:
//!
//! | async-graphql | here | the protocol's meaning |
//! |---|---|---|
//! | 1002 after the `connection_init` was refused | 4403 | Forbidden |
//! | 1002 otherwise | 4400 | a message of a type or shape it does not define |
//! | 1011 | 4401 | Unauthorized: `subscribe` before `connection_ack` |
//!
//! The reason goes out as async-graphql wrote it, cut to the 123 bytes a
//! close frame holds (a message that does not parse is refused with
//! serde's error, which names every message type and runs longer; the
//! client would fail the whole frame). A socket of the older
//! `graphql-ws` protocol (subscriptions-transport-ws) answers those cases
//! with a `connection_error` message, as that protocol does, and is left
//! as it is.
//!
//! async-graphql waits for `connection_init` for as long as the socket
//! stays open, and for its check as long as the check takes. A socket
//! whose `connection_init` has not been sent and checked within
//! `query_api.socket_init_timeout_ms` of its opening is closed with 4408
//! ("Connection initialisation timeout"), whatever its protocol, so
//! neither an idle client nor a check that does not end can hold a
//! connection and its task for good.
//!
//! Nor does anything notice a peer that went away without closing (a
//! laptop shut, a network gone): its socket and subscriptions would stay
//! until TCP gave up, hours later. Every `query_api.socket_ping_interval_ms`
//! the socket is sent a WebSocket ping (a control frame, below the GraphQL
//! protocol: browsers and WebSocket libraries answer it themselves); a
//! socket from which nothing has arrived by the next one, its pong
//! included, is closed with 1001 ("no answer to ping"). While the
//! `connection_init` is checked, async-graphql reads nothing from the
//! socket, so a pong could not be seen: no ping interval ending then, or
//! in which the check ended, counts as unanswered.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};

use crate::schema::PivotalSchema;

/// The `graphql-transport-ws` protocol's close codes this module sends.
pub mod codes {
    /// A message of a type or shape the protocol does not define.
    pub const INVALID_MESSAGE: u16 = 4400;
    /// `subscribe` before `connection_ack`.
    pub const UNAUTHORIZED: u16 = 4401;
    /// `connection_init` refused.
    pub const FORBIDDEN: u16 = 4403;
    /// No `connection_init` in time.
    pub const INIT_TIMEOUT: u16 = 4408;
}

/// Where a socket's initialisation is: whether its `connection_init` was
/// received, whether its check has ended, and whether it was refused (the
/// close frames are rewritten by it).
#[derive(Debug, Default)]
pub struct Progress {
    initialising: AtomicBool,
    checked: AtomicBool,
    refused: AtomicBool,
}

impl Progress {
    /// `connection_init` arrived (its check may still be running).
    fn initialising(&self) {
        self.initialising.store(true, Ordering::Release);
    }

    /// `connection_init` was refused.
    pub fn refused(&self) {
        self.refused.store(true, Ordering::Release);
    }

    /// The check of `connection_init` has ended, accepted or refused.
    fn checked(&self) {
        self.checked.store(true, Ordering::Release);
    }

    /// `connection_init` arrived and its check has ended.
    fn has_initialised(&self) -> bool {
        self.checked.load(Ordering::Acquire)
    }

    /// `connection_init` arrived and its check is still running: nothing
    /// is read from the socket meanwhile.
    fn is_checking(&self) -> bool {
        self.initialising.load(Ordering::Acquire) && !self.checked.load(Ordering::Acquire)
    }

    /// The close frame a `graphql-transport-ws` socket sends instead of
    /// async-graphql's `code` (see the module's table).
    pub fn close_code(&self, code: u16) -> u16 {
        match code {
            1002 if self.refused.load(Ordering::Acquire) => codes::FORBIDDEN,
            1002 => codes::INVALID_MESSAGE,
            1011 => codes::UNAUTHORIZED,
            other => other,
        }
    }
}

/// Most bytes of a close frame's reason (RFC 6455: a control frame's
/// payload is at most 125 bytes, two of them the code).
pub const MAX_REASON_BYTES: usize = 123;

/// `reason` cut to [`MAX_REASON_BYTES`] at a character boundary.
pub fn fitted(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A socket's timers (`query_api.socket_init_timeout_ms`,
/// `query_api.socket_ping_interval_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The longest wait for `connection_init`.
    pub init_timeout: Duration,
    /// How often the socket is pinged, and how long it has to answer.
    pub ping_interval: Duration,
}

/// How a socket ended other than by async-graphql's protocol handling.
enum Ended {
    Served,
    NoInit,
    NoAnswer,
}

/// Serves one subscription socket: async-graphql's protocol handling with
/// `init` checking `connection_init` (it reports a refusal to the
/// [`Progress`] it is given), the close codes rewritten, the socket closed
/// with 4408 if no `connection_init` has arrived and been checked within
/// `timing.init_timeout`, and with 1001 if nothing arrives between two
/// pings (while no check runs).
pub async fn serve<Init, InitFut>(
    socket: WebSocket,
    schema: PivotalSchema,
    protocol: GraphQLProtocol,
    timing: Timing,
    init: Init,
) where
    Init: FnOnce(serde_json::Value, Arc<Progress>) -> InitFut + Send + 'static,
    InitFut: Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    let transport_ws = socket
        .protocol()
        .is_some_and(|p| p.as_bytes() == b"graphql-transport-ws");
    let progress = Arc::new(Progress::default());
    let (sink, stream) = socket.split();
    // Anything from the peer (a message, a pong) shows it is there.
    let heard = Arc::new(AtomicBool::new(false));
    let hearing = Arc::clone(&heard);
    let stream = stream.inspect(move |_| hearing.store(true, Ordering::Release));
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    let outgoing = futures::sink::unfold(
        (Arc::clone(&sink), Arc::clone(&progress)),
        move |(sink, progress), message: Message| async move {
            let message = match message {
                Message::Close(Some(frame)) => Message::Close(Some(CloseFrame {
                    code: if transport_ws {
                        progress.close_code(frame.code)
                    } else {
                        frame.code
                    },
                    reason: fitted(frame.reason.as_str()).into(),
                })),
                other => other,
            };
            sink.lock().await.send(message).await?;
            Ok::<_, axum::Error>((sink, progress))
        },
    );
    let reporting = Arc::clone(&progress);
    let resumed = Arc::clone(&heard);
    let served = GraphQLWebSocket::new_with_pair(Box::pin(outgoing), stream, schema, protocol)
        .on_connection_init(move |payload| {
            reporting.initialising();
            let check = init(payload, Arc::clone(&reporting));
            async move {
                let outcome = check.await;
                reporting.checked();
                // Reading resumes: what arrived meanwhile (a pong) is
                // read now, so the interval the check ended in counts as
                // answered.
                resumed.store(true, Ordering::Release);
                outcome
            }
        })
        .serve();
    let waited = async {
        tokio::time::sleep(timing.init_timeout).await;
        if progress.has_initialised() {
            std::future::pending::<()>().await;
        }
    };
    let pinging = async {
        let every = timing.ping_interval;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pinged = false;
        loop {
            ticks.tick().await;
            let silent = !heard.swap(false, Ordering::AcqRel);
            if silent && pinged && !progress.is_checking() {
                return;
            }
            // A peer that stopped reading leaves the send waiting: that
            // is no answer either.
            let ping = async {
                sink.lock()
                    .await
                    .send(Message::Ping(Vec::new().into()))
                    .await
            };
            if !matches!(tokio::time::timeout(every, ping).await, Ok(Ok(()))) {
                return;
            }
            pinged = true;
        }
    };
    // The futures end with the `select!`, so async-graphql's handling no
    // longer holds the sink when a close frame is sent below.
    let ended = tokio::select! {
        () = served => Ended::Served,
        () = waited => Ended::NoInit,
        () = pinging => Ended::NoAnswer,
    };
    let (code, reason) = match ended {
        Ended::Served => return,
        Ended::NoInit => (codes::INIT_TIMEOUT, "Connection initialisation timeout"),
        Ended::NoAnswer => (1001, "no answer to ping"),
    };
    tracing::debug!(code, reason, "subscription socket closed");
    let close = async {
        sink.lock()
            .await
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await
    };
    // A peer that does not read cannot hold this task either.
    let _ = tokio::time::timeout(timing.ping_interval, close).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_the_protocol() {
        let progress = Progress::default();
        assert_eq!(progress.close_code(1002), codes::INVALID_MESSAGE);
        assert_eq!(progress.close_code(1011), codes::UNAUTHORIZED);
        assert_eq!(progress.close_code(4429), 4429);
        assert_eq!(progress.close_code(1000), 1000);
        assert!(!progress.is_checking());
        progress.initialising();
        assert!(progress.is_checking());
        assert!(!progress.has_initialised());
        assert_eq!(progress.close_code(1002), codes::INVALID_MESSAGE);
        progress.checked();
        assert!(!progress.is_checking());
        assert!(progress.has_initialised());
        progress.refused();
        assert_eq!(progress.close_code(1002), codes::FORBIDDEN);
        assert_eq!(progress.close_code(1011), codes::UNAUTHORIZED);
    }

    #[test]
    fn reasons_are_cut_to_fit_a_close_frame() {
        assert_eq!(
            fitted("the bearer token is malformed"),
            "the bearer token is malformed"
        );
        let exact = "a".repeat(MAX_REASON_BYTES);
        assert_eq!(fitted(&exact), exact);
        let long = "b".repeat(MAX_REASON_BYTES + 40);
        assert_eq!(fitted(&long), &long[..MAX_REASON_BYTES]);
        // 'é' is two bytes: 61 of them plus one byte leaves 123 = 1 + 122,
        // and the cut never splits one.
        let accented = format!("x{}", "é".repeat(70));
        let cut = fitted(&accented);
        assert_eq!(cut.len(), MAX_REASON_BYTES);
        assert!(accented.starts_with(cut));
        let odd = "é".repeat(70);
        assert_eq!(fitted(&odd).len(), MAX_REASON_BYTES - 1);
    }
}
