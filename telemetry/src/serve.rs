//! Serving a router over HTTP/1.1: what `axum::serve` does (every request
//! carries the caller's address as `ConnectInfo<SocketAddr>`, WebSocket
//! upgrades work, a graceful shutdown stops accepting and lets the
//! requests in flight finish), plus the one connection limit it leaves
//! out (ADR 0044).
//!
//! hyper closes a connection that has not sent a request's headers within
//! the header timeout, counted from when the connection may send them: a
//! client trickling its headers a byte at a time, and a keep-alive
//! connection left idle, both hold a connection (and its buffers) no
//! longer than that. hyper defaults to 30 s, but only applies it with a
//! timer, which `axum::serve` does not give it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown` resolves, then waits for
/// the requests in flight. A connection that takes longer than
/// `header_timeout` to send a request's headers, or stays idle that long
/// between requests, is closed.
///
/// # Errors
///
/// None today: a failed accept (no file descriptor left, say) is logged
/// and retried a moment later, as `axum::serve` does.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // Dropping `stop` tells every connection to finish; each holds a
    // `done` until it has, so `finished` resolves once all have.
    let (stop, stopping) = watch::channel(());
    let (finished, done) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection; retrying in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            router.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let (mut stopping, done) = (stopping.clone(), done.clone());
        tokio::spawn(async move {
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stopping.changed() => {
                    // Answers the request in flight, if any, then closes.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, %remote, "connection closed with an error");
            }
            drop(done);
        });
    }
    drop(listener);
    drop((stop, done));
    finished.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;

    /// Serves a router answering `/` with the caller's address as it saw
    /// it and `/slow` after 300 ms; returns its address, a sender that
    /// stops it and its task.
    async fn server(
        header_timeout: Duration,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let router =
            Router::new()
                .route(
                    "/",
                    get(|ConnectInfo(remote): ConnectInfo<SocketAddr>| async move {
                        remote.to_string()
                    }),
                )
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        "slow"
                    }),
                );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, header_timeout, async {
            let _ = stopped.await;
        }));
        (address, stop, task)
    }

    /// Reads until the server closes the connection (or 5 s pass) and
    /// returns what it sent.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
                .await
                .expect("the server closed the connection within 5 s");
            match read {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&received).into_owned(),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    }

    #[tokio::test]
    async fn headers_not_sent_in_time_close_the_connection() {
        let (address, _stop, _task) = server(Duration::from_millis(300)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        let started = Instant::now();
        // Half a request, and nothing more.
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n")
            .await
            .unwrap();
        let received = until_closed(&mut stream).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(!received.contains("200 OK"), "{received}");
    }

    #[tokio::test]
    async fn a_keep_alive_connection_is_served_then_closed_once_idle() {
        let (address, _stop, _task) = server(Duration::from_millis(300)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        let local = stream.local_addr().unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let answered = Instant::now();
        let received = until_closed(&mut stream).await;
        // Answered with the caller's own address, then closed once idle
        // for the header timeout.
        assert!(received.starts_with("HTTP/1.1 200 OK"), "{received}");
        assert!(received.ends_with(&local.to_string()), "{received}");
        assert!(answered.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_shutdown_lets_the_request_in_flight_finish_and_accepts_no_more() {
        let (address, stop, task) = server(Duration::from_secs(30)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        let received = until_closed(&mut stream).await;
        assert!(received.starts_with("HTTP/1.1 200 OK"), "{received}");
        assert!(received.ends_with("slow"), "{received}");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serving ended once the connection closed")
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(address).await.is_err());
    }
}
