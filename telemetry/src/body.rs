//! A request's body must arrive within a deadline counted from its
//! headers.
//!
//! hyper bounds how long a connection may take to send a request's
//! headers (ADR 0044), but nothing bounds its body: a client that sends
//! `Content-Length: 1000` and then a byte every few seconds holds a
//! connection, a task and whatever the handler took before reading the
//! body (a database connection, a slot) for as long as it likes.
//! tower-http's body timeout is no bound here: it times each wait between
//! two chunks, so a byte now and then resets it. [`deadline`] gives every
//! request's body one deadline, `timeout` after the request's headers
//! were read; reading past it fails with [`BodyTimedOut`], which the
//! APIs answer with 408 (ADR 0046).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Reading a request's body failed because it had not all arrived within
/// the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within {} ms of its headers", .0.as_millis())]
pub struct BodyTimedOut(pub Duration);

/// Middleware (`axum::middleware::from_fn_with_state(timeout, deadline)`)
/// that gives the request's body a deadline `timeout` from now.
pub async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let request = request.map(|body| Body::new(Deadline::new(body, timeout)));
    next.run(request).await
}

/// The [`BodyTimedOut`] in `error`'s chain of sources, if any: how an
/// extractor's rejection tells a body that came too late from one that
/// broke off or was malformed.
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<BodyTimedOut> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(timed_out) = e.downcast_ref::<BodyTimedOut>() {
            return Some(*timed_out);
        }
        current = e.source();
    }
    None
}

/// A body that fails with [`BodyTimedOut`] once its deadline has passed
/// and it still has not all arrived. Frames that have arrived are handed
/// out first, so a body that came in time is never refused because its
/// reader was late.
struct Deadline {
    inner: Body,
    timeout: Duration,
    at: Instant,
    /// Set the first time the inner body has nothing to hand out: a body
    /// that arrives at once (the usual case) costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

impl Deadline {
    fn new(inner: Body, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            at: Instant::now() + timeout,
            sleep: None,
            expired: false,
        }
    }
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let at = this.at;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired = true;
                Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(this.timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Serves `/` under a body deadline of `timeout`: the handler waits
    /// `read_after`, then reads the body and answers with its length, or
    /// 408 and the error when reading it timed out, or 400 when it failed
    /// otherwise.
    async fn server(timeout: Duration, read_after: Duration) -> SocketAddr {
        let router = Router::new()
            .route(
                "/",
                post(move |body: Body| async move {
                    tokio::time::sleep(read_after).await;
                    match axum::body::to_bytes(body, 1 << 20).await {
                        Ok(bytes) => (StatusCode::OK, bytes.len().to_string()),
                        Err(error) => match timed_out(&error) {
                            Some(late) => (StatusCode::REQUEST_TIMEOUT, late.to_string()),
                            None => (StatusCode::BAD_REQUEST, error.to_string()),
                        },
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(timeout, deadline));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(crate::serve::serve(
            listener,
            router,
            Duration::from_secs(30),
            std::future::pending(),
        ));
        address
    }

    /// Reads one answer: its head and a body of its `content-length`.
    async fn answer(stream: &mut (impl AsyncRead + Unpin)) -> String {
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            let read = stream.read(&mut buffer).await.unwrap();
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n")
                && let Some(length) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|l| l.trim().parse::<usize>().ok())
                && body.len() >= length
            {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn a_body_trickled_past_the_deadline_is_refused_and_one_in_time_is_read() {
        let address = server(Duration::from_millis(400), Duration::ZERO).await;

        // Twenty bytes promised, one sent every 100 ms: each wait is
        // short, the whole is not.
        let (mut reader, mut writer) = TcpStream::connect(address).await.unwrap().into_split();
        let sent = Arc::new(AtomicUsize::new(0));
        let counted = sent.clone();
        tokio::spawn(async move {
            writer
                .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r\n")
                .await
                .unwrap();
            for _ in 0..20 {
                if writer.write_all(b"a").await.is_err() {
                    break;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let text = answer(&mut reader).await;
        let sent_by_then = sent.load(Ordering::SeqCst);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            text.ends_with("the request body did not arrive within 400 ms of its headers"),
            "{text}"
        );
        assert!(
            sent_by_then < 20,
            "answered only once the body was complete"
        );

        // Ten bytes at once, on a fresh connection.
        let mut fast = TcpStream::connect(address).await.unwrap();
        fast.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\naaaaaaaaaa")
            .await
            .unwrap();
        let text = answer(&mut fast).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("\r\n\r\n10"), "{text}");
    }

    #[tokio::test]
    async fn a_body_that_arrived_in_time_is_read_however_late_its_reader_is() {
        let address = server(Duration::from_millis(100), Duration::from_millis(300)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nabcd")
            .await
            .unwrap();
        let text = answer(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("\r\n\r\n4"), "{text}");
    }

    #[test]
    fn a_timeout_is_found_among_the_sources_of_an_error() {
        let wrapped = axum::Error::new(BodyTimedOut(Duration::from_secs(2)));
        assert_eq!(
            timed_out(&wrapped),
            Some(BodyTimedOut(Duration::from_secs(2)))
        );
        let other = axum::Error::new(std::io::Error::other("reset"));
        assert_eq!(timed_out(&other), None);
    }
}
