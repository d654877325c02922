//! A GraphQL-over-WebSocket client for tests: opens a socket speaking a
//! subprotocol, sends the protocol's messages and reads what the server
//! sends, telling a message, a close frame and silence apart.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client socket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the server sent next, pings and pongs aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A protocol message, as JSON.
    Message(Value),
    /// A close frame's code and reason.
    Closed(u16, String),
    /// Nothing within the wait.
    Nothing,
}

/// The WebSocket URL of the query API's `/graphql/ws` at an HTTP `base`.
#[must_use]
pub fn url_of(base: &str) -> String {
    format!("{}/graphql/ws", base.replacen("http", "ws", 1))
}

/// Opens a socket at `url` speaking `protocol`, and sends nothing.
pub async fn open(url: &str, protocol: &str) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

/// Sends one protocol message.
pub async fn send(socket: &mut Socket, message: &Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// Sends `connection_init` with `payload`.
pub async fn init(socket: &mut Socket, payload: Value) {
    send(
        socket,
        &json!({"type": "connection_init", "payload": payload}),
    )
    .await;
}

/// Sends `subscribe` for `query` with operation id `id`.
pub async fn subscribe(socket: &mut Socket, id: &str, query: &str) {
    send(
        socket,
        &json!({"id": id, "type": "subscribe", "payload": {"query": query}}),
    )
    .await;
}

/// What the server sends next within `wait` (reading answers its pings).
///
/// # Panics
/// When the connection ends without a close frame, fails, or is closed by
/// a frame without a code: a server that closes a socket says why.
pub async fn next(socket: &mut Socket, wait: Duration) -> Received {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Ok(frame) = tokio::time::timeout_at(deadline, socket.next()).await else {
            return Received::Nothing;
        };
        match frame.expect("a close frame before the connection ends") {
            Ok(Message::Text(text)) => {
                return Received::Message(serde_json::from_str(text.as_str()).unwrap());
            }
            Ok(Message::Close(frame)) => {
                let frame = frame.expect("a close frame with a code");
                return Received::Closed(u16::from(frame.code), frame.reason.to_string());
            }
            Ok(_) => {}
            Err(e) => panic!("the socket failed: {e}"),
        }
    }
}

/// The message the server sends next within `wait`.
///
/// # Panics
/// When the socket is closed or nothing comes in time.
pub async fn message(socket: &mut Socket, wait: Duration) -> Value {
    match next(socket, wait).await {
        Received::Message(message) => message,
        other => panic!("a message within {wait:?}, not {other:?}"),
    }
}

/// The code and reason of the close frame the server sends next, messages
/// before it skipped.
///
/// # Panics
/// When no close frame comes within `wait`.
pub async fn closed_with(socket: &mut Socket, wait: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(socket, left).await {
            Received::Closed(code, reason) => return (code, reason),
            Received::Message(_) => {}
            Received::Nothing => panic!("the server closes the socket within {wait:?}"),
        }
    }
}
