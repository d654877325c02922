//! Test helpers that speak the domain, against the real local services.
//!
//! Every [`TestEnv`] gets its own PostgreSQL database (migrated), its own
//! Kafka topic prefix, relay name and consumer group, so tests run in
//! parallel without seeing each other.
//!
//! # Layout
//!
//! - [`TestEnv`]: database, settings and token minting for one test.
//! - [`TestEnv::spawn_command_api`] / [`TestEnv::spawn_query_api`] (or
//!   [`TestEnv::spawn_command_api_on`] / [`TestEnv::spawn_query_api_on`] a
//!   pool of their own): in-process servers on free ports.
//! - [`commands`]: a command's context, and a customer created straight
//!   through the event store.
//! - [`read_topic`]: reads a topic from the beginning with a plain consumer.
//! - [`trickle`]: sends a request's body a byte at a time over a raw socket.
//! - [`socket`]: a GraphQL-over-WebSocket client that tells a message, a
//!   close frame and silence apart.
//! - [`RedisServer`]: a private `redis-server`, for tests that stop Redis
//!   or drop its clients.
//! - [`installed_tool`]: a tool `scripts/services.sh` installs (the
//!   validators, promtool, Prometheus, Schemathesis).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod commands;
mod redis_server;
pub mod schemathesis;
pub mod socket;

pub use redis_server::RedisServer;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pivotal_auth::{TokenIssuer, TokenRequest};
use pivotal_event_store::db::named_options;
use pivotal_settings::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The HTTP client [`http`] builds, for tests that name its types.
pub use reqwest;

/// A tool `scripts/services.sh` installs in the tools directory
/// (`PIVOTAL_TOOLS_DIR`, by default `~/.cache/pivotal-flow`), such as
/// `venv/bin/st`. Panics, naming the script, when it is not there.
pub fn installed_tool(relative: &str) -> PathBuf {
    let tools = std::env::var("PIVOTAL_TOOLS_DIR").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/pivotal-flow"),
        PathBuf::from,
    );
    let tool = tools.join(relative);
    assert!(
        tool.exists(),
        "{} is missing: scripts/services.sh installs it",
        tool.display()
    );
    tool
}

/// Connection parameters of every test database: the servers tests use are
/// on the loopback interface, where TLS protects nothing.
const CONNECTION_PARAMETERS: &str = "?sslmode=disable";

/// Base URL of the PostgreSQL server used by tests.
pub fn postgres_server() -> String {
    std::env::var("PIVOTAL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn kafka_brokers() -> String {
    std::env::var("PIVOTAL_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The repository root (where `config/` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The search engine of one test: the embedded engine in a private
/// directory, or, when `PIVOTAL_TEST_ELASTICSEARCH_URL` names a cluster,
/// Elasticsearch under a private alias.
fn search_settings(id: &str) -> Value {
    match std::env::var("PIVOTAL_TEST_ELASTICSEARCH_URL") {
        Ok(url) if !url.is_empty() => json!({
            "engine": "elasticsearch",
            "url": url,
            "index": format!("pf-test-{}", &id[..12]),
        }),
        _ => json!({
            "engine": "tantivy",
            "dir": std::env::temp_dir().join(format!("pivotal-search-{id}")),
        }),
    }
}

/// One test's private slice of the real services.
#[derive(Debug)]
pub struct TestEnv {
    pub settings: Settings,
    pub pool: PgPool,
    pub database_url: String,
    pub issuer: TokenIssuer,
    /// Settings overrides, also usable as environment variables for child processes.
    pub overrides: Value,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_postgres(&postgres_server()).await
    }

    /// A test environment on the PostgreSQL server at `server`
    /// (`postgres://user@host:port`).
    pub async fn with_postgres(server: &str) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let db = format!("pf_test_{id}");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(
                named_options(
                    &format!("{server}/postgres{CONNECTION_PARAMETERS}"),
                    "pivotal-test",
                )
                .unwrap(),
            )
            .await
            .expect("PostgreSQL must run on 127.0.0.1:5432 (scripts/services.sh starts it)");
        sqlx::query(&format!("CREATE DATABASE \"{db}\""))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let database_url = format!("{server}/{db}{CONNECTION_PARAMETERS}");
        let root = workspace_root();
        let overrides = json!({
            "database": { "url": database_url, "max_connections": 30 },
            "kafka": {
                "brokers": kafka_brokers(),
                "topic_prefix": format!("t{}", &id[..12]),
                "partitions": 3,
            },
            "auth": {
                "public_keys": [{ "kid": "dev-2026-1", "pem_file": root.join("config/dev/jwt-public-key.pem") }],
                "signing_key": { "kid": "dev-2026-1", "pem_file": root.join("config/dev/jwt-signing-key.pem") },
                "vault_key_file": root.join("config/dev/vault-key"),
            },
            "redis": { "key_prefix": format!("t{}", &id[..12]) },
            "command_api": { "listen": "127.0.0.1:0" },
            "query_api": { "listen": "127.0.0.1:0" },
            // Small batches: a relay under test load crosses many batch boundaries.
            "relay": { "name": format!("relay-{}", &id[..8]), "batch_size": 25, "poll_interval_ms": 10, "ops_listen": "127.0.0.1:0" },
            "projector": { "group_id": format!("group-{id}"), "ops_listen": "127.0.0.1:0" },
            "search": search_settings(&id),
            "log": { "format": "pretty", "filter": "warn" },
        });
        let settings = Settings::load_from(&overrides).unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(30)
            .connect_with(named_options(&database_url, "pivotal-test").unwrap())
            .await
            .unwrap();
        pivotal_event_store::db::migrate(&pool).await.unwrap();
        pivotal_projectors::db::migrate(&pool).await.unwrap();
        let issuer = TokenIssuer::from_settings(&settings.auth).unwrap().unwrap();
        Self {
            settings,
            pool,
            database_url,
            issuer,
            overrides,
        }
    }

    /// A token for a new user of `organization` with `roles`.
    pub fn token(&self, organization: Uuid, roles: &[&str]) -> String {
        self.issuer
            .mint(&TokenRequest::for_roles(
                Uuid::now_v7(),
                organization,
                roles,
            ))
            .unwrap()
    }

    /// Environment variables that make a `pivotal` child process use this env.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let s = &self.settings;
        vec![
            ("PIVOTAL_DATABASE__URL".into(), self.database_url.clone()),
            ("PIVOTAL_KAFKA__BROKERS".into(), s.kafka.brokers.clone()),
            (
                "PIVOTAL_KAFKA__PARTITIONS".into(),
                s.kafka.partitions.to_string(),
            ),
            (
                "PIVOTAL_REDIS__URL".into(),
                s.redis.url.expose_secret().to_owned(),
            ),
            (
                "PIVOTAL_KAFKA__TOPIC_PREFIX".into(),
                s.kafka.topic_prefix.clone(),
            ),
            ("PIVOTAL_RELAY__NAME".into(), s.relay.name.clone()),
            (
                "PIVOTAL_RELAY__BATCH_SIZE".into(),
                s.relay.batch_size.to_string(),
            ),
            (
                "PIVOTAL_RELAY__POLL_INTERVAL_MS".into(),
                s.relay.poll_interval_ms.to_string(),
            ),
            (
                "PIVOTAL_PROJECTOR__GROUP_ID".into(),
                s.projector.group_id.clone(),
            ),
            ("PIVOTAL_RELAY__OPS_LISTEN".into(), "127.0.0.1:0".into()),
            ("PIVOTAL_PROJECTOR__OPS_LISTEN".into(), "127.0.0.1:0".into()),
            (
                "PIVOTAL_REDIS__KEY_PREFIX".into(),
                s.redis.key_prefix.clone(),
            ),
            (
                "PIVOTAL_AUTH__VAULT_KEY_FILE".into(),
                s.auth.vault_key_file.display().to_string(),
            ),
            (
                "PIVOTAL_SEARCH__ENGINE".into(),
                serde_json::to_value(s.search.engine)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ),
            (
                "PIVOTAL_SEARCH__DIR".into(),
                s.search.dir.display().to_string(),
            ),
            ("PIVOTAL_SEARCH__URL".into(), s.search.url.clone()),
            ("PIVOTAL_SEARCH__INDEX".into(), s.search.index.clone()),
            ("PIVOTAL_LOG__FORMAT".into(), "pretty".into()),
            ("PIVOTAL_LOG__FILTER".into(), "info".into()),
        ]
    }

    /// Starts the command API in-process; returns its base URL and a stopper.
    pub async fn spawn_command_api(&self) -> (String, Stopper) {
        self.spawn_command_api_on(self.pool.clone()).await
    }

    /// Starts the command API in-process on `pool` (the pool
    /// `pivotal_command_api::connect` makes, say); returns its base URL and
    /// a stopper.
    pub async fn spawn_command_api_on(&self, pool: PgPool) -> (String, Stopper) {
        let app = pivotal_command_api::Application::build(&self.settings, pool)
            .await
            .unwrap();
        let url = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        (url, Stopper(Some(stop)))
    }

    /// Starts the query API in-process; returns its base URL and a stopper.
    pub async fn spawn_query_api(&self) -> (String, Stopper) {
        self.spawn_query_api_on(self.pool.clone()).await
    }

    /// Starts the query API in-process on `pool` (the pool
    /// `pivotal_query_api::connect` makes, say); returns its base URL and a
    /// stopper.
    pub async fn spawn_query_api_on(&self, pool: PgPool) -> (String, Stopper) {
        let app = pivotal_query_api::Application::build(&self.settings, pool)
            .await
            .unwrap();
        let url = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        (url, Stopper(Some(stop)))
    }

    pub fn topic(&self, aggregate_type: &str) -> String {
        pivotal_messaging::topics::event_topic(&self.settings.kafka.topic_prefix, aggregate_type)
    }
}

/// Stops an in-process server when dropped.
#[derive(Debug)]
pub struct Stopper(Option<oneshot::Sender<()>>);

impl Drop for Stopper {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads every partition of `topic` from the beginning with a plain consumer
/// (no group) until `done` says so or `timeout` passed.
pub fn read_topic_until(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))
            && let Some(t) = metadata.topics().first()
            && !t.partitions().is_empty()
        {
            break t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut messages = Vec::new();
    while !done(&messages) && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            messages.push(message.detach());
        }
    }
    messages
}

/// [`read_topic_until`] `expected` messages arrived.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    read_topic_until(brokers, topic, timeout, |m| m.len() >= expected)
}

/// The JSON value of a message.
pub fn json_of(message: &OwnedMessage) -> Value {
    serde_json::from_slice(message.payload().unwrap_or_default()).unwrap()
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every committed event is below the log's horizon, i.e. until
/// no transaction elsewhere in the cluster (a parallel test's, say) can hide
/// part of the log from a reader such as a rebuild.
pub async fn wait_for_horizon(pool: &PgPool) {
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let passed = eventually(Duration::from_secs(60), || async {
        let (visible,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM events WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (visible == total).then_some(())
    })
    .await;
    assert!(
        passed.is_some(),
        "the log horizon never passed every committed event"
    );
}

/// An HTTP client for tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // Below the servers' 30 s header timeout (ADR 0044), so no request
        // goes out on a pooled connection the server is closing.
        .pool_idle_timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// What a server answered a request whose body was trickled to it.
#[derive(Debug)]
pub struct Trickled {
    pub answer: RawAnswer,
    /// The body's bytes sent by the time the answer was complete.
    pub sent: usize,
    /// Whether the server closed the connection within [`CLOSE_WAIT`] of
    /// its answer, while the client still held it open (writing the rest
    /// of the body, if any, then nothing).
    pub closed: bool,
}

/// How long [`trickle`] waits, after the answer, for the server to close
/// the connection.
pub const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Sends `head` (a request line and headers, ending in a blank line) to
/// the server at `base` (`http://host:port`), then `body` one byte every
/// `every`, while reading the answer; returns it once complete (its
/// `content-length` read), with how many of the body's bytes had been
/// sent by then and whether the server then closed the connection.
pub async fn trickle(base: &str, head: &str, body: &[u8], every: Duration) -> Trickled {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let (head, body) = (head.to_owned(), body.to_vec());
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await.unwrap();
        for byte in body {
            tokio::time::sleep(every).await;
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            counted.fetch_add(1, Ordering::SeqCst);
        }
        // The write side stays open until the answer is in: hyper takes a
        // client's half-close for the end of the connection.
        std::future::pending::<()>().await;
        drop(writer);
    });
    let answer = read_answer(&mut reader).await;
    let sent = sent.load(Ordering::SeqCst);
    // The sender still holds the connection open: only the server can
    // close it now.
    let mut buffer = [0u8; 4096];
    let closed = tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    sender.abort();
    Trickled {
        answer,
        sent,
        closed,
    }
}

/// An HTTP/1.1 answer read off a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Reads one answer from `reader`: its head, then its body to its
/// `content-length` (or to the end of the connection).
async fn read_answer(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> RawAnswer {
    use tokio::io::AsyncReadExt;

    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let (head, body) = loop {
        let read = reader.read(&mut buffer).await.unwrap();
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if read == 0 || length.is_some_and(|length| body.len() >= length) {
                break (head.to_owned(), body.to_owned());
            }
        }
        assert!(read > 0, "the connection closed without an answer: {text}");
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_default();
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    RawAnswer {
        status,
        content_type,
        body,
    }
}

/// Sends `head` (a request line and headers, ending in a blank line) and
/// the start of a body, `part`, shorter than the `content-length` the head
/// promised, to the server at `base`; then ends its side of the
/// connection, as a client that breaks off does, and reads the answer.
pub async fn break_off(base: &str, head: &str, part: &[u8]) -> RawAnswer {
    use tokio::io::AsyncWriteExt;

    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(part).await.unwrap();
    stream.shutdown().await.unwrap();
    read_answer(&mut stream).await
}

/// Posts `body` to the command API at `{url}{path}`, as `token`'s bearer
/// when given, and checks it succeeded; answers the response's body (null
/// when it has none) and its `X-Consistency-Token` (empty when it has none).
pub async fn post_command(
    url: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (Value, String) {
    let mut request = http().post(format!("{url}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let consistency = response
        .headers()
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.json().await.unwrap_or(Value::Null), consistency)
}

/// The answer to a GraphQL POST to `{url}/graphql`, errors included, with
/// `consistency` as the `X-Consistency-Token` header when given.
pub async fn graphql_answer(
    url: &str,
    token: &str,
    consistency: Option<&str>,
    query: &str,
) -> Value {
    let mut request = http()
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&serde_json::json!({"query": query}));
    if let Some(c) = consistency {
        request = request.header("x-consistency-token", c);
    }
    request.send().await.unwrap().json().await.unwrap()
}
