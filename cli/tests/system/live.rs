//! Subscriptions over WebSocket (`graphql-transport-ws`): a client gets the
//! change after a command has reached the read model; a client of another
//! organization gets nothing; a bad token is refused at connection_init,
//! and counted once.
//! Queries over the socket read like those over HTTP, consistency token
//! included. A socket is closed with the protocol's codes.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pivotal_test_support::socket::{self as client, Received, Socket, closed_with, subscribe};
use pivotal_test_support::{TestEnv, http};
use serde_json::{Value, json};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::harness::{
    free_port, post_accepted, spawn_process_with, spawn_projector, spawn_relay, wait_healthy,
};

/// How long a test waits for the server to close a socket.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Connects and sends `connection_init`; returns the socket and the first answer.
async fn connect(base: &str, token: &str) -> (Socket, Received) {
    let mut socket = open(base, token).await;
    let answer = client::next(&mut socket, Duration::from_secs(5)).await;
    (socket, answer)
}

/// Opens a socket speaking `protocol`, and sends nothing.
async fn open_silent(base: &str, protocol: &str) -> Socket {
    client::open(&client::url_of(base), protocol).await
}

/// Opens a socket and sends `connection_init` with `token`.
async fn open(base: &str, token: &str) -> Socket {
    let mut socket = open_silent(base, "graphql-transport-ws").await;
    client::init(
        &mut socket,
        json!({"authorization": format!("Bearer {token}")}),
    )
    .await;
    socket
}

/// `graphql_errors_total{code="UNAUTHENTICATED"}` on the query API's
/// `/metrics`.
async fn unauthenticated_counted(base: &str) -> f64 {
    let metrics = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"graphql_errors_total{code="UNAUTHENTICATED"} "#)?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Each way a socket ends early is closed with the `graphql-transport-ws`
/// protocol's code (ADR 0049): no `connection_init` in time 4408 (the
/// older protocol's sockets too), a message the protocol does not define
/// 4400, `subscribe` before `connection_ack` 4401. A socket whose
/// `connection_init` was checked stays open past the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_closed_with_the_protocols_codes() {
    let mut env = TestEnv::new().await;
    let wait = Duration::from_millis(1_000);
    env.settings.query_api.socket_init_timeout_ms =
        NonZeroU64::new(u64::try_from(wait.as_millis()).unwrap()).unwrap();
    let (queries, _q) = env.spawn_query_api().await;
    let opened = Instant::now();
    let mut silent = open_silent(&queries, "graphql-transport-ws").await;
    let mut silent_legacy = open_silent(&queries, "graphql-ws").await;

    let mut confused = open_silent(&queries, "graphql-transport-ws").await;
    client::send(&mut confused, &json!({"type": "nonsense"})).await;
    // serde's error names every message type, longer than a close frame
    // holds: it is cut to fit.
    let (code, reason) = closed_with(&mut confused, CLOSE_WAIT).await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.starts_with("unknown variant `nonsense`"), "{reason}");
    assert_eq!(reason.len(), 123, "{reason}");

    let mut early = open_silent(&queries, "graphql-transport-ws").await;
    subscribe(&mut early, "1", "subscription { customerChanged { id } }").await;
    assert_eq!(
        closed_with(&mut early, CLOSE_WAIT).await,
        (4401, "The handshake is not completed.".to_owned())
    );

    let token = env.token(Uuid::now_v7(), &["owner"]);
    let (mut initialised, ack) = connect(&queries, &token).await;
    assert_eq!(ack, Received::Message(json!({"type": "connection_ack"})));

    for socket in [&mut silent, &mut silent_legacy] {
        assert_eq!(
            closed_with(socket, CLOSE_WAIT).await,
            (4408, "Connection initialisation timeout".to_owned())
        );
        assert!(
            opened.elapsed() >= wait,
            "closed after {:?}",
            opened.elapsed()
        );
    }
    tokio::time::sleep(wait * 2).await;
    client::send(&mut initialised, &json!({"type": "ping"})).await;
    assert_eq!(
        client::next(&mut initialised, Duration::from_secs(5)).await,
        Received::Message(json!({"type": "pong"}))
    );
}

/// The frames the server sent (opcode, payload) read from the socket's
/// TCP stream itself until the server closed it, without tungstenite:
/// reading through it would answer the pings (and fail on the closed
/// connection when it did). The server's frames are unmasked and small.
async fn raw_frames_until_closed(socket: &mut Socket) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let MaybeTlsStream::Plain(tcp) = socket.get_mut() else {
        panic!("a plain TCP socket");
    };
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let mut frames = Vec::new();
    let mut rest = bytes.as_slice();
    while let [head, length, tail @ ..] = rest {
        let length = usize::from(*length);
        assert!(length < 126 && tail.len() >= length, "{bytes:?}");
        frames.push((head & 0x0f, tail[..length].to_vec()));
        rest = &tail[length..];
    }
    frames
}

/// A socket is pinged every `query_api.socket_ping_interval_ms` (ADR
/// 0049): one that answers (tungstenite does as it reads) stays open; one
/// from which nothing arrives between two pings is closed with 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_do_not_answer_pings_are_closed() {
    let mut env = TestEnv::new().await;
    let every = Duration::from_millis(300);
    env.settings.query_api.socket_ping_interval_ms =
        NonZeroU64::new(u64::try_from(every.as_millis()).unwrap()).unwrap();
    let (queries, _q) = env.spawn_query_api().await;
    let token = env.token(Uuid::now_v7(), &["owner"]);
    let (mut answering, ack) = connect(&queries, &token).await;
    assert_eq!(ack, Received::Message(json!({"type": "connection_ack"})));
    let (mut silent, ack) = connect(&queries, &token).await;
    assert_eq!(ack, Received::Message(json!({"type": "connection_ack"})));

    let until = Instant::now() + every * 10;
    let mut pings = 0;
    while let Ok(message) = tokio::time::timeout_at(until.into(), answering.next()).await {
        match message {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("only pings while idle: {other:?}"),
        }
    }
    assert!(pings >= 5, "{pings} pings in ten intervals");
    client::send(&mut answering, &json!({"type": "ping"})).await;
    assert_eq!(
        client::next(&mut answering, Duration::from_secs(5)).await,
        Received::Message(json!({"type": "pong"}))
    );

    // The silent one has been sent its pings and then a close frame (a
    // ping that came with the acknowledgement is in tungstenite's buffer
    // rather than the stream's).
    let frames = raw_frames_until_closed(&mut silent).await;
    let (close, pings) = frames.split_last().expect("frames");
    assert!(pings.iter().all(|(opcode, _)| *opcode == 0x9), "{frames:?}");
    assert_eq!(close.0, 0x8, "{frames:?}");
    assert_eq!(close.1[..2], 1001u16.to_be_bytes(), "{frames:?}");
    assert_eq!(&close.1[2..], b"no answer to ping", "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_see_their_changes_and_only_theirs() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (queries, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let org = Uuid::now_v7();
    let owner = env.token(org, &["owner"]);
    let stranger = env.token(Uuid::now_v7(), &["owner"]);
    let created: Value = http()
        .post(format!("{commands}/v1/customers"))
        .bearer_auth(&owner)
        .json(&json!({"legalName": "Live Limited", "currency": "NZD"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    let (mut mine, ack) = connect(&queries, &owner).await;
    assert_eq!(ack, Received::Message(json!({"type": "connection_ack"})));
    subscribe(
        &mut mine,
        "1",
        &format!(
            r#"subscription {{ customerChanged(id: "{id}") {{ type aggregateId version }} }}"#
        ),
    )
    .await;
    let (mut theirs, ack) = connect(&queries, &stranger).await;
    assert_eq!(ack, Received::Message(json!({"type": "connection_ack"})));
    subscribe(
        &mut theirs,
        "1",
        "subscription { changes { type aggregateId } }",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let renamed = http()
        .post(format!("{commands}/v1/customers/{id}/rename"))
        .bearer_auth(&owner)
        .json(&json!({"legalName": "Live Group Limited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);

    // The owner's subscription delivers the rename (perhaps after the
    // creation, if the projector applied it after the subscription began).
    let mut seen = Vec::new();
    loop {
        let message = client::message(&mut mine, Duration::from_secs(30)).await;
        assert_eq!(message["type"], "next", "{message}");
        let change = &message["payload"]["data"]["customerChanged"];
        assert_eq!(change["aggregateId"], id);
        seen.push(change["type"].as_str().unwrap().to_owned());
        if seen.last().is_some_and(|t| t == "customer.renamed") {
            break;
        }
    }
    // When the notification arrives, the read model already has the change.
    let body: Value = http()
        .post(format!("{queries}/graphql"))
        .bearer_auth(&owner)
        .json(&json!({"query": format!(r#"{{ customer(id: "{id}") {{ legalName }} }}"#)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["customer"]["legalName"], "Live Group Limited");

    // Another organization hears nothing, on a socket still open.
    assert_eq!(
        client::next(&mut theirs, Duration::from_secs(2)).await,
        Received::Nothing
    );
}

/// A `connection_init` without a good token is refused: the socket is
/// closed (4403, Forbidden) with why, and each refusal is counted once as
/// the `UNAUTHENTICATED` it would be over HTTP. The query API runs as a
/// process of its own, so its `/metrics` counts this test's refusals only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sockets_are_counted_once_each() {
    let env = TestEnv::new().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let _queries = spawn_process_with(
        &env,
        "query-api",
        &[("PIVOTAL_QUERY_API__LISTEN", listen.clone())],
    );
    let queries = format!("http://{listen}");
    wait_healthy(&queries, "the query API").await;
    assert_eq!(unauthenticated_counted(&queries).await, 0.0);

    let mut malformed = open(&queries, "not-a-token").await;
    assert_eq!(
        closed_with(&mut malformed, CLOSE_WAIT).await,
        (4403, "the bearer token is malformed".to_owned())
    );
    assert_eq!(unauthenticated_counted(&queries).await, 1.0);

    let mut missing = open_silent(&queries, "graphql-transport-ws").await;
    client::init(&mut missing, json!({})).await;
    assert_eq!(
        closed_with(&mut missing, CLOSE_WAIT).await,
        (4403, "the bearer token is missing".to_owned())
    );
    assert_eq!(unauthenticated_counted(&queries).await, 2.0);

    // A good token is not counted.
    let (_accepted, ack) = connect(&queries, &env.token(Uuid::now_v7(), &["member"])).await;
    assert_eq!(ack, Received::Message(json!({"type": "connection_ack"})));
    assert_eq!(unauthenticated_counted(&queries).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quote_subscribers_see_each_status_change_in_order() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (queries, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let owner = crate::harness::sign_up(&commands, "Live Quotes").await;
    let approver = crate::harness::add_user(&commands, &owner, "Appro", "Ver", &["manager"]).await;
    let customer = post(
        &commands,
        "/v1/customers",
        &owner,
        json!({"legalName": "Live Quote Client", "currency": "NZD"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let quote = post(
        &commands,
        "/v1/quotes",
        &owner,
        json!({"customerId": customer, "title": "Live quote",
               "lines": [{"description": "Work", "quantity": "1", "unitPrice": "100"}]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut socket, ack) = connect(&queries, &owner).await;
    assert_eq!(ack, Received::Message(json!({"type": "connection_ack"})));
    subscribe(
        &mut socket,
        "q",
        &format!(
            r#"subscription {{ quoteChanged(id: "{quote}") {{ type aggregateId version }} }}"#
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (step, token) in [("submit", &owner), ("approve", &approver), ("send", &owner)] {
        post(
            &commands,
            &format!("/v1/quotes/{quote}/{step}"),
            token,
            json!({}),
        )
        .await;
    }
    // Every change after the subscription began, in version order, ending
    // with the third status change (version 4 of the quote).
    let mut versions = Vec::new();
    loop {
        let message = client::message(&mut socket, Duration::from_secs(30)).await;
        assert_eq!(message["type"], "next", "{message}");
        let change = &message["payload"]["data"]["quoteChanged"];
        assert_eq!(change["aggregateId"], quote.as_str());
        assert_eq!(
            change["type"],
            if change["version"] == 1 {
                "quote.created"
            } else {
                "quote.status.changed"
            }
        );
        versions.push(change["version"].as_i64().unwrap());
        if versions.last() == Some(&4) {
            break;
        }
    }
    assert!(versions.ends_with(&[2, 3, 4]), "{versions:?}");
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_over_the_socket_honour_a_consistency_token() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (queries, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let owner = crate::harness::sign_up(&commands, "Socket Reads").await;
    let customer = post(
        &commands,
        "/v1/customers",
        &owner,
        json!({"legalName": "Socket Client", "currency": "NZD"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = post_accepted(
        &format!("{commands}/v1/quotes"),
        &owner,
        &json!({"customerId": customer, "title": "Socket quote",
               "lines": [{"description": "Work", "quantity": "1", "unitPrice": "100"}]}),
    )
    .await;
    let consistency = created.headers()["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let quote = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut socket, ack) = connect(&queries, &owner).await;
    assert_eq!(ack, Received::Message(json!({"type": "connection_ack"})));
    // The first read after the command: the quote is there, with its
    // customer (loaded through the connection's DataLoader).
    let read = r#"query($id: ID!, $token: ConsistencyToken) {
        quote(id: $id, consistencyToken: $token) { title customer { legalName } } }"#;
    client::send(
        &mut socket,
        &json!({"id": "r", "type": "subscribe", "payload": {
            "query": read, "variables": {"id": quote, "token": consistency}}}),
    )
    .await;
    let answer = client::message(&mut socket, Duration::from_secs(30)).await;
    assert_eq!(answer["type"], "next", "{answer}");
    assert_eq!(
        answer["payload"]["data"]["quote"],
        json!({"title": "Socket quote", "customer": {"legalName": "Socket Client"}}),
        "{answer}"
    );
    let done = client::message(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(done["type"], "complete", "{done}");
    // A token that is not a position of this organization is bad input.
    client::send(
        &mut socket,
        &json!({"id": "b", "type": "subscribe", "payload": {
            "query": read, "variables": {"id": quote, "token": "not-a-position"}}}),
    )
    .await;
    let answer = client::message(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(
        answer["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{answer}"
    );
}

async fn post(base: &str, path: &str, token: &str, body: Value) -> Value {
    post_accepted(&format!("{base}{path}"), token, &body)
        .await
        .json()
        .await
        .unwrap()
}
