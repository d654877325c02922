//! The command API: axum REST endpoints under `/v1`, each turning a request
//! into a command on its aggregate and appending the resulting events to the
//! PostgreSQL event store (cqrs-es on postgres-es).
//!
//! Every endpoint but `/healthz`, `/.well-known/jwks.json` and the sign-in
//! endpoints under `/v1/auth` requires a bearer access token this system
//! issued; the organization always comes from the token. Errors are
//! `application/problem+json` (RFC 9457) with a stable `code`.
//!
//! # Layout
//!
//! - [`Application`]: builds the router and binds the listener; [`Application::run`]
//!   serves until the shutdown future resolves. [`connect`] makes its pool,
//!   whose statements PostgreSQL cancels past `command_api.statement_timeout_ms`.
//! - [`error`]: [`error::ApiError`], the only place errors become statuses.
//! - [`extract`]: extractors for the caller ([`extract::Caller`]), JSON bodies,
//!   request metadata, `If-Match` and `Idempotency-Key`, and the bodies'
//!   date and time fields.
//! - [`auth`]: sign-up, sign-in, MFA, refresh, logout, introspection
//!   (`/v1/auth/*`), the caller's password and MFA (`/v1/me/*`) and the key
//!   set at `/.well-known/jwks.json`.
//! - [`users`]: the `/v1/users` resources and role assignment.
//! - [`organization`]: the caller's organization, custom roles and
//!   `/v1/permissions/check`.
//! - [`access`]: conditional permissions and the MFA policy for sensitive
//!   operations.
//! - [`customers`]: the `/v1/customers` resources.
//! - [`quotes`]: rate cards and quotes (`/v1/rate-cards`, `/v1/quotes`),
//!   gap-free quote numbers and the approval workflow.
//! - [`pdf`]: quote PDFs rendered with Typst from template files.
//! - [`idempotent`]: replaying stored responses for retried requests.
//! - [`openapi`]: the OpenAPI 3.1 document and its interactive page;
//!   [`shapes`]: the forms its request fields take, built from the checks.

pub mod access;
pub mod auth;
pub mod customers;
pub mod error;
pub mod extract;
pub mod idempotent;
pub mod openapi;
pub mod organization;
pub mod pdf;
pub mod quotes;
pub mod shapes;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use pivotal_auth::{Jwks, TokenVerifier};
use pivotal_domain::customer::Customer;
use pivotal_domain::quote::Quote;
use pivotal_domain::rate_card::RateCard;
use pivotal_event_store::commands::AggregateStore;
use pivotal_identity::Identity;
use pivotal_settings::Settings;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

/// Shared state of the handlers, behind one reference count: axum clones
/// the state for every request and for every extractor that takes it, and
/// a deep clone of [`Shared`] allocated its strings and keys each time
/// (and zeroed the secrets among them when dropped).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler reads: the pool, the aggregate stores, token
/// verification and the identity service.
#[derive(Debug)]
pub struct Shared {
    pub pool: PgPool,
    pub customers: Arc<AggregateStore<Customer>>,
    pub quotes: Arc<AggregateStore<Quote>>,
    pub rate_cards: Arc<AggregateStore<RateCard>>,
    /// Organizations' own quote templates.
    pub templates_dir: Option<std::path::PathBuf>,
    pub verifier: Arc<TokenVerifier>,
    pub identity: Identity,
    pub jwks: Arc<Jwks>,
}

/// A bound, ready-to-serve command API.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    expiry_interval: std::time::Duration,
    /// How long a connection may take to send a request's headers, or
    /// stay idle between requests (ADR 0044).
    header_timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot load token keys: {0}")]
    Keys(#[from] pivotal_auth::KeyError),
    #[error("{0}")]
    Identity(#[from] pivotal_identity::service::SetupError),
    #[error("cannot bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");

/// The command API's pool: the database settings, with every statement
/// limited to `command_api.statement_timeout_ms` (a command whose
/// statement PostgreSQL cancels is answered 503 with `Retry-After`, and
/// nothing of it is stored; ADR 0046).
pub async fn connect(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    pivotal_event_store::db::connect_with_statement_timeout(
        &settings.database,
        std::time::Duration::from_millis(settings.command_api.statement_timeout_ms.get()),
        "pivotal-command-api",
    )
    .await
}

impl Application {
    /// Builds the router on an existing pool (the one [`connect`] makes) and binds `settings.command_api.listen`
    /// (port 0 picks a free port).
    pub async fn build(settings: &Settings, pool: PgPool) -> Result<Self, StartError> {
        // The command API issues tokens, so it verifies them with the key set
        // it publishes.
        let (identity, jwks) = Identity::from_settings(settings, pool.clone()).await?;
        let verifier = identity.verifier();
        let writers = settings.database.append_writers.get();
        let state = AppState(Arc::new(Shared {
            customers: Arc::new(AggregateStore::new(pool.clone()).with_writers(writers)),
            quotes: Arc::new(AggregateStore::new(pool.clone()).with_writers(writers)),
            rate_cards: Arc::new(AggregateStore::new(pool.clone()).with_writers(writers)),
            templates_dir: Some(settings.quotes.templates_dir.clone())
                .filter(|d| !d.is_empty())
                .map(std::path::PathBuf::from),
            pool,
            verifier,
            identity,
            jwks: Arc::new(jwks),
        }));
        let listen = settings.command_api.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| StartError::Bind(listen, e))?;
        Ok(Self {
            listener,
            router: router(state.clone(), &settings.command_api),
            state,
            expiry_interval: std::time::Duration::from_secs(
                settings.quotes.expiry_interval_secs.max(1),
            ),
            header_timeout: std::time::Duration::from_millis(
                settings.command_api.header_timeout_ms.get(),
            ),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), "command api listening");
        // The scheduled expiry of sent quotes, on one replica at a time.
        let state = self.state.clone();
        let interval = self.expiry_interval;
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let today = chrono::Utc::now().date_naive();
                match quotes::expire_due(&state.pool, &state.quotes, today).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "quotes expired"),
                    Err(error) => tracing::warn!(%error, "quote expiry sweep failed"),
                }
            }
        });
        // Every request carries the caller's address (`ConnectInfo`) for
        // the events' metadata.
        let served = pivotal_telemetry::serve::serve(
            self.listener,
            self.router,
            self.header_timeout,
            shutdown,
        )
        .await;
        sweeper.abort();
        served
    }
}

/// The complete router, with the body limit and body deadline of
/// `http`.
pub fn router(state: AppState, http: &pivotal_settings::HttpSettings) -> Router {
    let commands = openapi::commands();
    pivotal_telemetry::metrics::register_commands(
        commands
            .iter()
            .map(|(method, route)| (*method, route.as_str())),
    );
    Router::new()
        .merge(auth::routes())
        .merge(users::routes())
        .merge(organization::routes())
        .merge(customers::routes())
        .merge(quotes::routes())
        .merge(openapi::routes())
        .route("/healthz", get(health))
        .route("/metrics", get(pivotal_telemetry::metrics::endpoint))
        .route("/readyz", get(ready))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(http.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            std::time::Duration::from_millis(http.body_timeout_ms.get()),
            pivotal_telemetry::body::deadline,
        ))
        .layer(middleware::from_fn(problem_instance))
        .layer(middleware::from_fn(correlation))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(pivotal_telemetry::trace::http_span)
                .on_response(pivotal_telemetry::trace::http_response),
        )
        .layer(middleware::from_fn(
            pivotal_telemetry::metrics::track_commands,
        ))
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

/// Readiness: PostgreSQL and Redis answer within a second; 503 naming what
/// does not, so the orchestrator stops routing traffic here meanwhile.
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    readiness(&state.pool, state.identity.revocations()).await
}

/// Checks PostgreSQL and Redis for `/readyz`.
async fn readiness(pool: &PgPool, redis: &pivotal_auth::revocation::Revocations) -> Response {
    use axum::response::IntoResponse;
    let (ready, body) = pivotal_telemetry::readiness(pool, redis).await;
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Fills `instance` (the request path) into problem bodies that lack it, so
/// handlers need not know their own path.
async fn problem_instance(request: Request<axum::body::Body>, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut problem) if problem.get("instance").is_none() => {
            problem["instance"] = serde_json::Value::String(path);
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            axum::body::Body::from(serde_json::to_vec(&problem).unwrap_or_default())
        }
        _ => axum::body::Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// Accepts or assigns the correlation id and a request id, and echoes both.
async fn correlation(mut request: Request<axum::body::Body>, next: Next) -> Response {
    let supplied = request.headers().get(&CORRELATION_ID).cloned();
    let correlation = match supplied {
        Some(value) => {
            let valid = value.to_str().is_ok_and(|v| {
                !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
            });
            if !valid {
                return error::ApiError::BadHeader {
                    header: "X-Correlation-Id",
                    detail: "must be 1 to 128 visible ASCII characters".into(),
                }
                .into_response_for(request.uri().path());
            }
            value
        }
        None => HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
    };
    let request_id = HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"));
    request
        .headers_mut()
        .insert(CORRELATION_ID, correlation.clone());
    request.headers_mut().insert(REQUEST_ID, request_id.clone());
    let span = tracing::info_span!(
        "request",
        correlation_id = correlation.to_str().unwrap_or_default(),
        request_id = request_id.to_str().unwrap_or_default(),
    );
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    response.headers_mut().insert(CORRELATION_ID, correlation);
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}
