//! The operations endpoint of processes that serve no API (relay,
//! projector): `/healthz`, `/readyz` (PostgreSQL answers within a second)
//! and `/metrics`.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx::PgPool;

async fn ready(State(pool): State<PgPool>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let limit = std::time::Duration::from_secs(1);
    let postgres = tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&pool)).await;
    let ok = matches!(postgres, Ok(Ok(_)));
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": {"postgres": if ok { "ok" } else { "unavailable" }},
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Binds `listen` and serves the endpoints until `shutdown` resolves;
/// returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    pool: PgPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    crate::metrics::handle();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(crate::metrics::endpoint))
        .with_state(pool);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "operations endpoint stopped");
        }
    });
    tracing::info!(%address, "operations endpoint (/healthz, /readyz, /metrics)");
    Ok(address)
}
