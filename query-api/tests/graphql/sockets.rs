//! A subscription socket whose `connection_init` check takes its time
//! (ADR 0049): pings unanswered while the check runs (async-graphql reads
//! nothing from the socket meanwhile, so no pong can be seen) do not close
//! it; a check that outlasts the wait for initialisation does, with 4408.

use std::time::Duration;

use async_graphql_axum::GraphQLProtocol;
use axum::extract::WebSocketUpgrade;
use futures::{SinkExt, StreamExt};
use pivotal_query_api::socket::{self, Timing};
use pivotal_test_support::TestEnv;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Serves [`socket::serve`] at a fresh address with `timing`, its
/// `connection_init` check taking `check` and then accepting; answers the
/// socket's URL.
async fn served_with_a_check(env: &TestEnv, timing: Timing, check: Duration) -> String {
    let schema = pivotal_query_api::schema::build(env.pool.clone());
    let app = axum::Router::new().route(
        "/ws",
        axum::routing::get(
            move |protocol: GraphQLProtocol, upgrade: WebSocketUpgrade| async move {
                upgrade
                    .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
                    .on_upgrade(move |ws| {
                        socket::serve(ws, schema, protocol, timing, move |_, _| async move {
                            tokio::time::sleep(check).await;
                            Ok(async_graphql::Data::default())
                        })
                    })
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("ws://{address}/ws")
}

/// What the server sends next within `wait`, pings and pongs aside
/// (reading answers the server's pings): a message's JSON, or a close
/// frame's code and reason; `None` when nothing came.
async fn next(socket: &mut Socket, wait: Duration) -> Option<Result<Value, (u16, String)>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()?
            .expect("a frame before the end")
            .unwrap();
        match message {
            Message::Text(text) => return Some(Ok(serde_json::from_str(text.as_str()).unwrap())),
            Message::Close(frame) => {
                let frame = frame.expect("a close frame with a code");
                return Some(Err((u16::from(frame.code), frame.reason.to_string())));
            }
            _ => {}
        }
    }
}

/// Opens a `graphql-transport-ws` socket and sends `connection_init`.
async fn initialised(url: &str) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::text(
            json!({"type": "connection_init", "payload": {}}).to_string(),
        ))
        .await
        .unwrap();
    socket
}

/// A check seven ping intervals long (within the wait): the socket is
/// acknowledged, not closed (before pings were excused during the check,
/// the second unanswered one closed it with 1001), and stays open while
/// it answers.
#[tokio::test]
async fn pings_unanswered_during_the_check_do_not_close_the_socket() {
    let env = TestEnv::new().await;
    let every = Duration::from_millis(200);
    let timing = Timing {
        init_timeout: Duration::from_secs(5),
        ping_interval: every,
    };
    let url = served_with_a_check(&env, timing, every * 7).await;
    let mut socket = initialised(&url).await;
    assert_eq!(
        next(&mut socket, Duration::from_secs(10)).await,
        Some(Ok(json!({"type": "connection_ack"})))
    );
    // Answered pings keep it open for ten more intervals.
    assert_eq!(next(&mut socket, every * 10).await, None);
    socket
        .send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut socket, Duration::from_secs(5)).await,
        Some(Ok(json!({"type": "pong"})))
    );
}

/// A check longer than the wait for initialisation: the socket is closed
/// with 4408 before any `connection_ack`.
#[tokio::test]
async fn a_check_that_outlasts_the_wait_closes_the_socket() {
    let env = TestEnv::new().await;
    let timing = Timing {
        init_timeout: Duration::from_millis(300),
        ping_interval: Duration::from_secs(30),
    };
    let url = served_with_a_check(&env, timing, Duration::from_secs(5)).await;
    let mut socket = initialised(&url).await;
    assert_eq!(
        next(&mut socket, Duration::from_secs(10)).await,
        Some(Err((
            socket::codes::INIT_TIMEOUT,
            "Connection initialisation timeout".to_owned()
        )))
    );
}
