//! Prometheus metrics: one recorder per process, rendered at `/metrics`.
//!
//! Names (all processes expose the ones they produce):
//!
//! - `http_requests_total`, `http_request_duration_seconds` (histogram),
//!   labelled `method`, `route` (the matched route template, never the raw
//!   path) and `status`;
//! - `commands_total`, labelled `command` (method and route of the command
//!   API) and `outcome` (`accepted`, `invalid`, `denied`, `not_found`,
//!   `conflict`, `rate_limited`, `unavailable`, `failed`);
//! - `event_store_append_commands` (histogram, buckets 1 to 500) by
//!   `aggregate`: the commands each append statement of the command API
//!   carried (ADR 0038);
//! - `relay_lag_events`, `relay_lag_seconds`, `relay_published_total`,
//!   `relay_producers_replaced_total` (after a fatal producer error),
//!   `relay_blocked` (1 while Kafka refuses an event for good),
//!   `relay_active` (1 on the instance holding the publishing lock),
//!   `relay_held_events`, `relay_held_seconds` (ADR 0050);
//! - `projection_lag_events`, `projection_lag_seconds` by `projection`;
//!   `projector_applied_total`, `projector_batch_seconds`;
//! - `consumer_lag_messages` by `topic` and `partition`, from each
//!   projector for the partitions it owns (librdkafka's statistics: high
//!   watermark minus the offset after the last applied batch, or the
//!   group's committed offset before the first).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Commands per append statement, from one to the statement's most rows.
const COMMANDS_PER_STATEMENT_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 500.0];

/// Installs the process's recorder on first use and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("event_store_append_commands".into()),
                        COMMANDS_PER_STATEMENT_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// The Prometheus text exposition of every metric of this process.
pub fn render() -> String {
    handle().render()
}

/// `GET /metrics`.
pub async fn endpoint() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
        .into_response()
}

fn outcome(status: u16) -> &'static str {
    match status {
        200..=399 => "accepted",
        401 | 403 => "denied",
        404 => "not_found",
        409 | 412 => "conflict",
        429 => "rate_limited",
        400..=499 => "invalid",
        503 => "unavailable",
        _ => "failed",
    }
}

async fn track(request: Request, next: Next, commands: bool) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let labels = [
        ("method", method.as_str().to_owned()),
        ("route", route.clone()),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    let changes = !matches!(
        method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if commands && changes && route.starts_with("/v1/") {
        metrics::counter!(
            "commands_total",
            "command" => format!("{method} {route}"),
            "outcome" => outcome(status),
        )
        .increment(1);
    }
    response
}

/// Middleware recording the HTTP metrics of a request.
pub async fn track_http(request: Request, next: Next) -> Response {
    handle();
    track(request, next, false).await
}

/// [`track_http`], plus `commands_total` for requests that change data.
pub async fn track_commands(request: Request, next: Next) -> Response {
    handle();
    track(request, next, true).await
}

/// Registers `commands_total{outcome="failed"}` at 0 for each command
/// (method and route template), so that an alert on its increase sees
/// the first failure rather than a series that begins at 1.
pub fn register_commands<'a>(commands: impl IntoIterator<Item = (&'a str, &'a str)>) {
    handle();
    for (method, route) in commands {
        metrics::counter!(
            "commands_total",
            "command" => format!("{method} {route}"),
            "outcome" => "failed",
        )
        .increment(0);
    }
}
