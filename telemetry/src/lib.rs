//! Logging, metrics and health for every process: `tracing` with JSON lines (or a readable format
//! for development), filtered by the configured directive or `RUST_LOG`.
//!
//! # Layout
//!
//! - [`init`]: installs the global subscriber once per process.
//! - [`readiness`]: the dependency checks behind the APIs' `/readyz`.
//! - [`metrics`]: the Prometheus recorder, `/metrics` and the HTTP middleware.
//! - [`ops`]: `/healthz`, `/readyz` and `/metrics` for the relay and projector.

pub mod metrics;
pub mod ops;

use pivotal_settings::LogSettings;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), so tests that start several processes in one binary may call it.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = if settings.format == "pretty" {
        builder.compact().try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
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
