//! Logging, metrics, traces and health for every process: `tracing` with JSON lines (or a
//! readable format for development), filtered by the configured directive or `RUST_LOG`, and
//! OpenTelemetry spans over OTLP when a collector is configured.
//!
//! # Layout
//!
//! - [`init`]: installs the global subscriber once per process.
//! - [`body`]: a deadline for each request's body, counted from its headers.
//! - [`readiness`]: the dependency checks behind the APIs' `/readyz`.
//! - [`metrics`]: the Prometheus recorder, `/metrics` and the HTTP middleware.
//! - [`ops`]: `/healthz`, `/readyz` and `/metrics` for the relay and projector.
//! - [`serve`]: serves a router over HTTP/1.1 with a header timeout that also closes idle connections.
//! - [`trace`]: the OTLP exporter and W3C trace-context propagation (HTTP, event store, Kafka).

pub mod body;
pub mod metrics;
pub mod ops;
pub mod serve;
pub mod trace;

use pivotal_settings::{LogSettings, TelemetrySettings};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

fn filter(settings: &LogSettings) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber: logs to stderr and, when
/// `telemetry.otlp_endpoint` is set and `service` is named, spans to the
/// OTLP collector. Returns the exporter, to be shut down when the process
/// ends. Safe to call more than once (later calls install nothing), so tests
/// that start several processes in one binary may call it.
pub fn init(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
    service: Option<&'static str>,
) -> Result<Option<trace::Tracer>, trace::TraceSetupError> {
    let tracer = match service {
        Some(service) => trace::Tracer::from_settings(telemetry, service)?,
        None => None,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if log.format == "pretty" {
        fmt.compact().with_filter(filter(log)).boxed()
    } else {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter(log))
            .boxed()
    };
    let mut layers: Vec<Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>> = vec![fmt];
    if let Some(tracer) = &tracer {
        layers.push(tracer.layer().with_filter(filter(log)).boxed());
    }
    let _already_set = tracing_subscriber::registry().with(layers).try_init();
    Ok(tracer)
}

/// Readiness of a process that serves requests: PostgreSQL and Redis each
/// answer within a second. Returns whether both do and the body of
/// `/readyz` naming each dependency's state.
pub async fn readiness(
    pool: &sqlx::PgPool,
    redis: &pivotal_auth::revocation::Revocations,
) -> (bool, serde_json::Value) {
    let limit = std::time::Duration::from_secs(1);
    let postgres = tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(pool)).await;
    let redis = tokio::time::timeout(limit, redis.ping()).await;
    let postgres_ok = matches!(postgres, Ok(Ok(_)));
    let redis_ok = matches!(redis, Ok(Ok(())));
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let ready = postgres_ok && redis_ok;
    (
        ready,
        serde_json::json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {"postgres": word(postgres_ok), "redis": word(redis_ok)},
        }),
    )
}
