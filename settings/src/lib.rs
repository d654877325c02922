//! Configuration of every Pivotal Flow process.
//!
//! Layers, later ones winning: built-in defaults (suitable for the local
//! development services), an optional TOML file named by `PIVOTAL_CONFIG`, then
//! environment variables prefixed `PIVOTAL_` with `__` between levels
//! (`PIVOTAL_DATABASE__URL`, `PIVOTAL_KAFKA__BROKERS`). Unknown keys are
//! rejected, and secrets are wrapped in [`secrecy::SecretString`] so they never
//! appear in `Debug` output or logs.
//!
//! # Layout
//!
//! - [`Settings`]: the whole tree, one section per concern.
//! - [`Settings::load`]: the layering above; [`Settings::load_from`] for tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(#[from] Box<figment::Error>);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub command_api: HttpSettings,
    pub query_api: HttpSettings,
    pub relay: RelaySettings,
    pub projector: ProjectorSettings,
    pub quotes: QuotesSettings,
    pub search: SearchSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
}

/// Which search engine serves `search` and receives the search projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchEngineKind {
    /// Embedded index on local disk (one node: development, tests, small
    /// installations).
    Tantivy,
    /// An Elasticsearch cluster (multi-node deployments).
    Elasticsearch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    pub engine: SearchEngineKind,
    /// tantivy: directory holding the index generations and the pointer to
    /// the live one.
    pub dir: PathBuf,
    /// Elasticsearch: base URL of the cluster.
    pub url: String,
    /// Elasticsearch: the alias queries use; index names start with it.
    pub index: String,
    /// tantivy: the writer's indexing memory, in MiB (at least 15).
    pub writer_memory_mib: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotesSettings {
    /// Organizations' own PDF templates: `{dir}/{organization id}/{name}.typ`.
    /// Empty: built-in templates only.
    pub templates_dir: String,
    /// How often the command API looks for sent quotes past their date.
    pub expiry_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://` URL of the event store and the read models. The
    /// default, on the loopback interface, turns TLS off (`sslmode=disable`):
    /// there it protects nothing and costs both ends CPU on every round trip.
    /// A database reached over a network is given `sslmode=verify-full`.
    pub url: SecretString,
    pub max_connections: u32,
    /// Seconds to wait for a pooled connection.
    pub acquire_timeout_secs: u64,
    /// Append statements in flight per aggregate type in the command API.
    /// Commands that arrive while every writer is busy share the next
    /// statement (ADR 0038): fewer writers share more under load, more
    /// writers wait less when idle. At least 1.
    pub append_writers: std::num::NonZeroUsize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// First part of every topic name: `{prefix}.{aggregate}.events`.
    pub topic_prefix: String,
    /// Partitions of each topic created at start-up. The default, 1, is
    /// for the single-node development broker, which answers every fetch
    /// by querying each partition in turn: idle, three partitions a topic
    /// cost it 40% of a core, one 16% (ADR 0025). Deployments set more (the
    /// compose file 6, the Kubernetes base 12): partitions are how
    /// projectors scale out.
    pub partitions: i32,
    pub replication_factor: i32,
    pub client_id: String,
    /// Longest a projector's fetch waits for data (`fetch.wait.max.ms`).
    /// Apache Kafka answers a waiting fetch as soon as data arrives, so
    /// there a long wait (its default is 500) costs no freshness and
    /// spares the broker idle requests. The development broker, tansu,
    /// holds every fetch for the whole wait, so there the wait is added to
    /// freshness: the default, 50, is set for it.
    pub fetch_wait_ms: u32,
    /// How often a projector commits its group offsets to the broker
    /// (`auto.commit.interval.ms`). A projector stores each batch's
    /// offsets once the batch is committed in PostgreSQL, and librdkafka
    /// commits the stored ones at this interval, when a partition is
    /// revoked and at shutdown. After a crash, at most this much is
    /// delivered again, which the projections' versions turn into no-ops
    /// (ADR 0032).
    pub commit_interval_ms: u32,
    /// How long the group coordinator waits for a projector's heartbeat
    /// before it expires the member and hands its partitions to the others
    /// (`session.timeout.ms`; heartbeats go every fifth of it). The default,
    /// 10 s, moves a dead projector's partitions quickly; a deployment whose
    /// projectors pause longer (a throttled CPU limit, noisy
    /// neighbours) sets more, within the broker's own bounds
    /// (`group.min.session.timeout.ms` and `group.max.session.timeout.ms`,
    /// 6 s to 30 min by default). Below `projector.out_of_group_limit_ms`
    /// less the rebalance timeout (30 s), or an ordinary failover turns the
    /// projector unready (`Settings::advisories`).
    pub session_timeout_ms: std::num::NonZeroU32,
}

/// How long a rebalance may wait for members to rejoin
/// (`max.poll.interval.ms`, which librdkafka also sends as the rebalance
/// timeout). Batches take well under a second.
pub const REBALANCE_TIMEOUT_MS: u32 = 30_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: SecretString,
    /// First part of every key this deployment writes.
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// Public keys accepted for access tokens, by key id.
    pub public_keys: Vec<PublicKeySettings>,
    /// The key that signs new access tokens (command API). Its public half
    /// must be listed in `public_keys`.
    pub signing_key: Option<SigningKeySettings>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
    /// Where processes that do not issue tokens (the query API) fetch the
    /// JSON Web Key Set. Empty: use `public_keys` directly.
    pub jwks_url: String,
    /// How long a fetched key set is used before it is fetched again.
    pub jwks_refresh_secs: u64,
    /// Lifetime of access tokens (`expiresIn`), in seconds.
    pub access_token_ttl_secs: i64,
    /// Lifetime of a refresh-token family from sign-in, in seconds.
    pub refresh_token_ttl_secs: i64,
    /// Lifetime of the MFA challenge issued after a correct password.
    pub mfa_challenge_ttl_secs: i64,
    /// Lifetime of an invitation to set a password.
    pub invitation_ttl_secs: i64,
    /// 32-byte key (base64) that encrypts MFA secrets at rest.
    pub vault_key_file: PathBuf,
    pub password: PasswordSettings,
    pub lockout: LockoutSettings,
    pub rate_limit: RateLimitSettings,
}

/// argon2id cost; the defaults are OWASP's recommendation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Shortest accepted password, in characters.
    pub min_length: usize,
}

/// Temporary lock after repeated failed sign-ins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutSettings {
    pub max_failures: u32,
    pub window_secs: u64,
    pub lock_secs: u64,
}

/// Limits on the sign-in endpoints, per client IP and per account (email).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub per_ip: u32,
    pub per_account: u32,
    pub window_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeySettings {
    pub kid: String,
    /// Path of an Ed25519 public key in PEM (SPKI) form.
    pub pem_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeySettings {
    pub kid: String,
    /// Path of an Ed25519 private key in PEM (PKCS#8) form.
    pub pem_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// How long a connection may take to send a request's headers,
    /// counted from when it may send one: a client sending them slowly,
    /// and a keep-alive connection idle that long, are closed. 0 is
    /// refused: it would close every connection at once.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: std::num::NonZeroU64,
    /// How long a request's body may take to arrive, counted from its
    /// headers: a client trickling it is answered 408 (the command API's
    /// `request_timeout` problem, the query API's `BAD_REQUEST` with
    /// `reason: request_timeout`). 0 is refused: it would refuse every
    /// body.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: std::num::NonZeroU64,
    /// Query API: longest wait for the read models to reach a consistency
    /// token before answering `STALE_READ`.
    #[serde(default = "default_consistency_wait_ms")]
    pub consistency_wait_ms: u64,
    /// Query API: how long a subscription socket may stay open without
    /// sending `connection_init` and having it checked; it is then closed
    /// with 4408 (the `graphql-transport-ws` protocol's "Connection
    /// initialisation timeout"). 0 is refused: it would close every socket
    /// at once.
    #[serde(default = "default_socket_init_timeout_ms")]
    pub socket_init_timeout_ms: std::num::NonZeroU64,
    /// Query API: how often a subscription socket is sent a WebSocket
    /// ping; a socket from which nothing (its pong included) has arrived
    /// by the next one is closed, so a peer that went away without
    /// closing does not keep its socket and subscriptions. 0 is refused.
    #[serde(default = "default_socket_ping_interval_ms")]
    pub socket_ping_interval_ms: std::num::NonZeroU64,
    /// Query API: whether GraphQL introspection is answered.
    #[serde(default = "default_true")]
    pub introspection: bool,
    /// Query API: bytes of entities its in-process cache keeps (keys, JSON
    /// and a fixed overhead per entry); 0 keeps none in process.
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// Query API: GraphQL operations over HTTP executed at once (at least
    /// one; the query API refuses to start with 0); more wait for a slot in
    /// arrival order.
    #[serde(default = "default_max_concurrent_queries")]
    pub max_concurrent_queries: usize,
    /// Query API: GraphQL operations over HTTP that may wait for a slot at
    /// once; one more is answered 503 with `Retry-After` (code
    /// `OVERLOADED`) at once instead of queueing. 0 queues none.
    #[serde(default = "default_max_waiting_queries")]
    pub max_waiting_queries: usize,
    /// Query API: the longest a GraphQL operation over HTTP waits for a
    /// slot before it is answered 503 with `Retry-After` (code
    /// `OVERLOADED`).
    #[serde(default = "default_max_slot_wait_ms")]
    pub max_slot_wait_ms: u64,
    /// The longest one SQL statement may run on the API's pool
    /// (PostgreSQL's `statement_timeout`); PostgreSQL cancels it then. In
    /// the query API the field fails with `QUERY_TIMEOUT`, so a
    /// pathological read cannot hold a connection and a slot for good; in
    /// the command API the command is answered 503 with `Retry-After` and
    /// nothing of it is stored, so a stalled database (a lock held, a disk
    /// that does not answer) cannot hold requests, connections and the
    /// aggregate's turn for good. 0 is refused: it would turn the limit
    /// off.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: std::num::NonZeroU64,
}

fn default_true() -> bool {
    true
}

fn default_header_timeout_ms() -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(30_000).unwrap_or(std::num::NonZeroU64::MIN)
}

fn default_body_timeout_ms() -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(30_000).unwrap_or(std::num::NonZeroU64::MIN)
}

fn default_statement_timeout_ms() -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(5_000).unwrap_or(std::num::NonZeroU64::MIN)
}

fn default_socket_init_timeout_ms() -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(3_000).unwrap_or(std::num::NonZeroU64::MIN)
}

fn default_socket_ping_interval_ms() -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(30_000).unwrap_or(std::num::NonZeroU64::MIN)
}

fn default_consistency_wait_ms() -> u64 {
    5000
}

fn default_cache_bytes() -> u64 {
    8 * 1024 * 1024
}

fn default_max_concurrent_queries() -> usize {
    64
}

fn default_max_waiting_queries() -> usize {
    1024
}

fn default_max_slot_wait_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// Name of the checkpoint row (one per relay deployment).
    pub name: String,
    pub batch_size: i64,
    /// Batches handed to the producer ahead of the broker's
    /// acknowledgements (at least 1: one at a time). 1 by default: with 4,
    /// the benchmark's relay phase ran about 10% faster on the development
    /// broker, but one run in twenty-two stalled its pipeline (unexplained).
    pub batches_in_flight: usize,
    /// Idle wait between polls of the event log, in milliseconds.
    pub poll_interval_ms: u64,
    /// Longest back-off after a failure, in milliseconds.
    pub max_backoff_ms: u64,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub ops_listen: SocketAddr,
    /// How long the oldest committed event may wait behind a transaction
    /// still open in the cluster (the horizon, ADR 0002) before the relay
    /// names that transaction in a warning and in its status. 0 is refused.
    #[serde(default = "default_held_warning_ms")]
    pub held_warning_ms: std::num::NonZeroU64,
}

fn default_held_warning_ms() -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(10_000).unwrap_or(std::num::NonZeroU64::MIN)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorSettings {
    /// Kafka consumer group.
    pub group_id: String,
    /// Most messages applied in one database transaction.
    pub batch_size: usize,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub ops_listen: SocketAddr,
    /// How long the consumer may hold no place in its group (joining,
    /// rebalancing, waiting for a coordinator) before `/readyz` says it is
    /// not ready. Longer than a session timeout plus a rebalance timeout.
    pub out_of_group_limit_ms: u64,
    /// What the projector's sessions tell PostgreSQL's planner a page read
    /// out of order costs, against 1 for a page read in order (the
    /// server's `random_page_cost`, 4 by default: a spinning disk's
    /// ratio). The read models a projector looks rows up in by key are
    /// in memory, where the default priced a few hundred index probes
    /// above a scan of the whole table (ADR 0057).
    pub random_page_cost: PlannerCost,
}

/// A planner cost constant: a finite number above zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannerCost(f64);

impl PlannerCost {
    /// The cost, finite and above zero.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PlannerCost {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if value.is_finite() && value > 0.0 {
            Ok(Self(value))
        } else {
            Err(serde::de::Error::custom(format!(
                "{value} is not a cost: a finite number above zero is"
            )))
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json` (default) or `pretty`.
    pub format: String,
    /// `tracing` filter directive, e.g. `info,sqlx=warn`.
    pub filter: String,
}

/// OpenTelemetry traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP collector, e.g. `http://otel-collector:4318`
    /// (spans go to `/v1/traces` below it). Empty: no traces are exported.
    pub otlp_endpoint: String,
    /// Share of new traces recorded, 0.0 to 1.0. A request that arrives with a
    /// sampled `traceparent` is always recorded (parent-based sampling).
    pub trace_sample_ratio: f64,
}

const DEFAULTS: &str = r#"
[database]
url = "postgres://postgres@127.0.0.1:5432/pivotal_flow?sslmode=disable"
max_connections = 20
acquire_timeout_secs = 5
append_writers = 4

[kafka]
brokers = "127.0.0.1:9092"
topic_prefix = "pivotal"
partitions = 1
replication_factor = 1
client_id = "pivotal-flow"
fetch_wait_ms = 50
commit_interval_ms = 1000
session_timeout_ms = 10000

[redis]
url = "redis://127.0.0.1:6379"
key_prefix = "pf"

[auth]
issuer = "pivotal-flow"
audience = "pivotal-flow-api"
leeway_secs = 30
public_keys = [{ kid = "dev-2026-1", pem_file = "config/dev/jwt-public-key.pem" }]
signing_key = { kid = "dev-2026-1", pem_file = "config/dev/jwt-signing-key.pem" }
jwks_url = ""
jwks_refresh_secs = 300
access_token_ttl_secs = 3600
refresh_token_ttl_secs = 2592000
mfa_challenge_ttl_secs = 300
invitation_ttl_secs = 604800
vault_key_file = "config/dev/vault-key"

[auth.password]
memory_kib = 19456
iterations = 2
parallelism = 1
min_length = 12

[auth.lockout]
max_failures = 5
window_secs = 900
lock_secs = 900

[auth.rate_limit]
per_ip = 30
per_account = 10
window_secs = 60

[command_api]
listen = "127.0.0.1:8080"
body_limit_bytes = 1048576
header_timeout_ms = 30000
body_timeout_ms = 30000
statement_timeout_ms = 5000

[query_api]
listen = "127.0.0.1:8081"
body_limit_bytes = 1048576
header_timeout_ms = 30000
body_timeout_ms = 30000
consistency_wait_ms = 5000
socket_init_timeout_ms = 3000
socket_ping_interval_ms = 30000
introspection = true
cache_bytes = 8388608
max_concurrent_queries = 64
max_waiting_queries = 1024
max_slot_wait_ms = 10000
statement_timeout_ms = 5000

[relay]
name = "main"
batch_size = 500
batches_in_flight = 1
poll_interval_ms = 20
max_backoff_ms = 5000
ops_listen = "127.0.0.1:9101"
held_warning_ms = 10000

[projector]
group_id = "pivotal-projectors"
batch_size = 500
ops_listen = "127.0.0.1:9102"
out_of_group_limit_ms = 60000
random_page_cost = 1.1

[quotes]
templates_dir = ""
expiry_interval_secs = 60

[search]
engine = "tantivy"
dir = "var/search"
url = ""
index = "pivotal-search"
writer_memory_mib = 20

[log]
format = "json"
filter = "info,sqlx::postgres::notice=warn"

[telemetry]
otlp_endpoint = ""
trace_sample_ratio = 1.0
"#;

impl Settings {
    /// Defaults, then the file named by `PIVOTAL_CONFIG`, then `PIVOTAL_*` variables.
    pub fn load() -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Ok(path) = std::env::var("PIVOTAL_CONFIG") {
            figment = figment.merge(Toml::file_exact(path));
        }
        // Every setting lives in a section (`PIVOTAL_SECTION__KEY`); other
        // `PIVOTAL_*` variables belong to the scripts and tests
        // (`PIVOTAL_CONFIG`, `PIVOTAL_TEST_KAFKA`, `PIVOTAL_TOOLS_DIR`...).
        figment = figment.merge(
            Env::prefixed("PIVOTAL_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        figment.extract().map_err(|e| SettingsError(Box::new(e)))
    }

    /// Defaults overridden by `overrides` (any serializable tree), for tests.
    pub fn load_from<T: Serialize>(overrides: &T) -> Result<Self, SettingsError> {
        Figment::from(Toml::string(DEFAULTS))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| SettingsError(Box::new(e)))
    }

    /// The built-in defaults.
    pub fn defaults() -> Result<Self, SettingsError> {
        Figment::from(Toml::string(DEFAULTS))
            .extract()
            .map_err(|e| SettingsError(Box::new(e)))
    }

    /// Settings that are each valid but sit badly together, as sentences
    /// for the process to log at start. A session timeout that with the
    /// rebalance timeout reaches `projector.out_of_group_limit_ms` makes a
    /// projector report itself out of its group (`/readyz` 503) during an
    /// ordinary failover: a flap, not a fault, and a short limit is a fair
    /// choice where readiness should turn quickly (the tests use 3 s).
    pub fn advisories(&self) -> Vec<String> {
        let session = u64::from(self.kafka.session_timeout_ms.get());
        let limit = self.projector.out_of_group_limit_ms;
        let mut advisories = Vec::new();
        if session + u64::from(REBALANCE_TIMEOUT_MS) >= limit {
            advisories.push(format!(
                "kafka.session_timeout_ms ({session}) plus the rebalance timeout \
                 ({REBALANCE_TIMEOUT_MS}) reaches projector.out_of_group_limit_ms \
                 ({limit}): the projector will report itself out of its group \
                 while an ordinary rebalance waits for a departed member"
            ));
        }
        advisories
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_are_valid() {
        let settings = Settings::defaults().unwrap();
        assert_eq!(settings.kafka.topic_prefix, "pivotal");
        assert_eq!(settings.command_api.body_limit_bytes, 1024 * 1024);
    }

    #[test]
    fn overrides_win_and_secrets_do_not_print() {
        #[derive(Serialize)]
        struct Db {
            url: &'static str,
        }
        #[derive(Serialize)]
        struct Overrides {
            database: Db,
        }
        let settings = Settings::load_from(&Overrides {
            database: Db {
                url: "postgres://user:hunter2@db/x",
            },
        })
        .unwrap();
        assert_eq!(
            settings.database.url.expose_secret(),
            "postgres://user:hunter2@db/x"
        );
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        #[derive(Serialize)]
        struct Kafka {
            brokerz: &'static str,
        }
        #[derive(Serialize)]
        struct Overrides {
            kafka: Kafka,
        }
        let error = Settings::load_from(&Overrides {
            kafka: Kafka { brokerz: "x" },
        })
        .unwrap_err();
        assert!(error.to_string().contains("brokerz"), "{error}");
    }

    #[test]
    fn a_limit_that_is_not_a_whole_number_of_milliseconds_is_refused_by_name() {
        #[derive(Serialize)]
        struct Projector {
            out_of_group_limit_ms: &'static str,
        }
        #[derive(Serialize)]
        struct Overrides {
            projector: Projector,
        }
        for value in ["a minute", "-1"] {
            let error = Settings::load_from(&Overrides {
                projector: Projector {
                    out_of_group_limit_ms: value,
                },
            })
            .unwrap_err();
            assert!(
                error.to_string().contains("out_of_group_limit_ms"),
                "{value}: {error}"
            );
        }
        let defaults = Settings::defaults().unwrap();
        assert_eq!(defaults.projector.out_of_group_limit_ms, 60_000);
    }

    #[test]
    fn a_page_cost_that_is_not_a_finite_number_above_zero_is_refused_by_name() {
        #[derive(Serialize)]
        struct Projector {
            random_page_cost: f64,
        }
        #[derive(Serialize)]
        struct Overrides {
            projector: Projector,
        }
        let with = |random_page_cost| {
            Settings::load_from(&Overrides {
                projector: Projector { random_page_cost },
            })
        };
        for value in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = with(value).unwrap_err().to_string();
            assert!(
                error.contains("random_page_cost") && error.contains("not a cost"),
                "{value}: {error}"
            );
        }
        assert_eq!(with(2.5).unwrap().projector.random_page_cost.get(), 2.5);
        let defaults = Settings::defaults().unwrap();
        assert_eq!(defaults.projector.random_page_cost.get(), 1.1);
    }

    #[test]
    fn a_held_warning_of_zero_is_refused_by_name() {
        #[derive(Serialize)]
        struct Relay {
            held_warning_ms: u64,
        }
        #[derive(Serialize)]
        struct Overrides {
            relay: Relay,
        }
        let error = Settings::load_from(&Overrides {
            relay: Relay { held_warning_ms: 0 },
        })
        .unwrap_err();
        assert!(error.to_string().contains("held_warning_ms"), "{error}");
        let taken = Settings::load_from(&Overrides {
            relay: Relay {
                held_warning_ms: 250,
            },
        })
        .unwrap();
        assert_eq!(taken.relay.held_warning_ms.get(), 250);
        let defaults = Settings::defaults().unwrap();
        assert_eq!(defaults.relay.held_warning_ms.get(), 10_000);
    }

    #[test]
    fn a_session_timeout_is_a_setting_and_one_that_leaves_no_room_for_a_rebalance_is_advised_against()
     {
        let defaults = Settings::defaults().unwrap();
        assert_eq!(defaults.kafka.session_timeout_ms.get(), 10_000);
        assert!(
            defaults.advisories().is_empty(),
            "{:?}",
            defaults.advisories()
        );
        let with = |session: i64, limit: i64| {
            use std::collections::BTreeMap;
            Settings::load_from(&BTreeMap::from([
                ("kafka", BTreeMap::from([("session_timeout_ms", session)])),
                (
                    "projector",
                    BTreeMap::from([("out_of_group_limit_ms", limit)]),
                ),
            ]))
        };
        let longer = with(45_000, 90_000).unwrap();
        assert_eq!(longer.kafka.session_timeout_ms.get(), 45_000);
        assert!(longer.advisories().is_empty());
        let advised = with(45_000, 60_000).unwrap().advisories();
        assert!(
            advised.len() == 1
                && advised[0].contains("kafka.session_timeout_ms (45000)")
                && advised[0].contains("projector.out_of_group_limit_ms (60000)"),
            "{advised:?}"
        );
        for session in [0, -1] {
            let error = with(session, 60_000).unwrap_err().to_string();
            assert!(error.contains("session_timeout_ms"), "{session}: {error}");
        }
    }

    #[test]
    fn append_writers_are_at_least_one() {
        #[derive(Serialize)]
        struct Database {
            append_writers: i64,
        }
        #[derive(Serialize)]
        struct Overrides {
            database: Database,
        }
        for value in [0, -2] {
            let error = Settings::load_from(&Overrides {
                database: Database {
                    append_writers: value,
                },
            })
            .unwrap_err();
            assert!(
                error.to_string().contains("append_writers"),
                "{value}: {error}"
            );
        }
        let two = Settings::load_from(&Overrides {
            database: Database { append_writers: 2 },
        })
        .unwrap();
        assert_eq!(two.database.append_writers.get(), 2);
        let defaults = Settings::defaults().unwrap();
        assert_eq!(defaults.database.append_writers.get(), 4);
    }

    #[test]
    fn timeouts_are_above_zero() {
        use std::collections::BTreeMap;
        let shared = [
            "header_timeout_ms",
            "body_timeout_ms",
            "statement_timeout_ms",
        ];
        let sockets = ["socket_init_timeout_ms", "socket_ping_interval_ms"];
        let keys = shared
            .iter()
            .flat_map(|key| [("command_api", *key), ("query_api", *key)])
            .chain(sockets.iter().map(|key| ("query_api", *key)));
        for (api, key) in keys {
            for value in [0, -1] {
                let overrides = BTreeMap::from([(api, BTreeMap::from([(key, value)]))]);
                let error = Settings::load_from(&overrides).unwrap_err();
                assert!(
                    error.to_string().contains(key),
                    "{api}.{key} {value}: {error}"
                );
            }
        }
        let defaults = Settings::defaults().unwrap();
        assert_eq!(defaults.query_api.socket_init_timeout_ms.get(), 3_000);
        assert_eq!(defaults.query_api.socket_ping_interval_ms.get(), 30_000);
        for api in [&defaults.command_api, &defaults.query_api] {
            assert_eq!(api.header_timeout_ms.get(), 30_000);
            assert_eq!(api.body_timeout_ms.get(), 30_000);
            assert_eq!(api.statement_timeout_ms.get(), 5_000);
        }
    }
}
