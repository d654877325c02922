//! The operations endpoint of processes that serve no API (relay,
//! projector): `/healthz`, `/readyz` (PostgreSQL answers within a second,
//! and the process's own [`Check`]s pass) and `/metrics`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx::PgPool;

/// A readiness check of the process's own: its name in `/readyz` and a
/// function that says whether it passes and in a few words why.
pub struct Check {
    pub name: &'static str,
    pub probe: Box<dyn Fn() -> (bool, String) + Send + Sync>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

struct Ops {
    pool: PgPool,
    checks: Vec<Check>,
}

async fn ready(State(ops): State<Arc<Ops>>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let limit = std::time::Duration::from_secs(1);
    let postgres = tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&ops.pool)).await;
    let mut ready = matches!(postgres, Ok(Ok(_)));
    let mut checks = serde_json::Map::new();
    checks.insert(
        "postgres".into(),
        (if ready { "ok" } else { "unavailable" }).into(),
    );
    for check in &ops.checks {
        let (ok, detail) = (check.probe)();
        ready &= ok;
        checks.insert(check.name.into(), detail.into());
    }
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": checks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// How long the operations endpoint waits for a request's headers, and
/// keeps an idle connection (hyper's default).
const OPS_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds `listen` and serves the endpoints until `shutdown` resolves;
/// returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    pool: PgPool,
    checks: Vec<Check>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    crate::metrics::handle();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(crate::metrics::endpoint))
        .with_state(Arc::new(Ops { pool, checks }));
    tokio::spawn(async move {
        if let Err(error) =
            crate::serve::serve(listener, router, OPS_HEADER_TIMEOUT, shutdown).await
        {
            tracing::warn!(%error, "operations endpoint stopped");
        }
    });
    tracing::info!(%address, "operations endpoint (/healthz, /readyz, /metrics)");
    Ok(address)
}
