//! A subscription socket whose `connection_init` check takes its time
//! (ADR 0049): pings unanswered while the check runs (async-graphql reads
//! nothing from the socket meanwhile, so no pong can be seen) do not close
//! it; a check that outlasts the wait for initialisation does, with 4408.

use std::time::Duration;

use async_graphql_axum::GraphQLProtocol;
use axum::extract::WebSocketUpgrade;
use pivotal_query_api::socket::{self, Timing};
use pivotal_test_support::TestEnv;
use pivotal_test_support::socket::{self as client, Received, Socket};
use serde_json::json;

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

/// Opens a `graphql-transport-ws` socket and sends `connection_init`.
async fn initialised(url: &str) -> Socket {
    let mut socket = client::open(url, "graphql-transport-ws").await;
    client::init(&mut socket, json!({})).await;
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
        client::next(&mut socket, Duration::from_secs(10)).await,
        Received::Message(json!({"type": "connection_ack"}))
    );
    // Answered pings keep it open for ten more intervals.
    assert_eq!(
        client::next(&mut socket, every * 10).await,
        Received::Nothing
    );
    client::send(&mut socket, &json!({"type": "ping"})).await;
    assert_eq!(
        client::next(&mut socket, Duration::from_secs(5)).await,
        Received::Message(json!({"type": "pong"}))
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
        client::next(&mut socket, Duration::from_secs(10)).await,
        Received::Closed(
            socket::codes::INIT_TIMEOUT,
            "Connection initialisation timeout".to_owned()
        )
    );
}
