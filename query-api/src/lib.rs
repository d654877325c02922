//! The query API: async-graphql over axum at `/graphql` (POST, or GET with
//! the query in the query string; GET without one serves GraphiQL),
//! serving the read models and the event history. Every query is scoped
//! to the organization in the caller's access token.
//!
//! # Layout
//!
//! - [`schema`]: the GraphQL schema, independent of the transport; tests call
//!   [`schema::build`] and `execute` directly.
//! - [`customers`]: `customer(id)` and the `customers` connection.
//! - [`identity`]: `me`, `user`, the `users` connection, `roles` and
//!   `organization`.
//! - [`quotes`]: `quote(id)`, the `quotes` connection and `rateCards`.
//! - [`search`]: `search`, served by the configured search engine.
//! - [`dashboard`]: `dashboard`, from the Redis read model or PostgreSQL.
//! - [`history`]: the event history of an aggregate (auditors).
//! - [`live`]: subscriptions over WebSocket, fed by the projectors through
//!   Redis.
//! - [`cache`]: the two-level (in-process, Redis) cache of by-id lookups,
//!   kept coherent by version keys the projector writes and by the change
//!   feed's announcements.
//! - [`consistency`]: read-your-writes with `X-Consistency-Token` or a root
//!   field's `consistencyToken` argument.
//! - [`cursor`]: the connections' page cursors, the error for a cursor
//!   this API did not hand out, and the forward/backward reading of a
//!   keyset page (`Window`).
//! - [`request`]: reading an operation from an HTTP POST's body or a GET's
//!   query string, and the `BAD_REQUEST` answer to a request that holds
//!   none (or, over GET, holds something other than a query).
//! - [`media`]: the HTTP face of a response: `application/json` or
//!   `application/graphql-response+json` as `Accept` picks, its status,
//!   its errors counted.
//! - [`slots`]: how many operations over HTTP execute at once.
//! - [`socket`]: a subscription socket's wait for `connection_init`, its
//!   pings, and the close codes of the `graphql-transport-ws` protocol.
//! - [`errors`]: GraphQL error codes (`extensions.code`).
//! - [`scalars`]: the `NaiveDate` and `DateTime` scalars, checked in
//!   validation.
//! - [`documents`]: parsed operations kept by their text, so that a front
//!   end's repeated operations are parsed once.
//! - [`Application`]: the axum transport, with token verification against
//!   the key set at `auth.jwks_url` (fetched and cached) or the configured
//!   public keys.

pub mod cache;
pub mod consistency;
pub mod cursor;
pub mod customers;
pub mod dashboard;
pub mod documents;
pub mod errors;
pub mod history;
pub mod identity;
pub mod live;
pub mod media;
pub mod quotes;
pub mod request;
pub mod scalars;
pub mod schema;
pub mod search;
pub mod slots;
pub mod socket;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use media::Media;
use pivotal_auth::revocation::Revocations;
use pivotal_auth::{AuthError, TokenVerifier};
use pivotal_settings::Settings;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

/// The handlers' state behind one reference count, since axum clones it
/// for every request (a deep clone allocated each time).
#[derive(Clone)]
struct HttpState(Arc<HttpShared>);

impl std::ops::Deref for HttpState {
    type Target = HttpShared;

    fn deref(&self) -> &HttpShared {
        &self.0
    }
}

struct HttpShared {
    schema: schema::PivotalSchema,
    verifier: Arc<TokenVerifier>,
    revocations: Revocations,
    pool: PgPool,
    consistency_wait: std::time::Duration,
    socket_init_timeout: std::time::Duration,
    socket_ping_interval: std::time::Duration,
    cache: cache::ReadCache,
    slots: slots::Slots,
}

/// A bound, ready-to-serve query API.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    /// Follows the change feed on Redis while the API runs.
    feed: tokio::task::JoinHandle<()>,
    /// How long a connection may take to send a request's headers, or
    /// stay idle between requests (ADR 0044).
    header_timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot load token keys: {0}")]
    Keys(#[from] pivotal_auth::KeyError),
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot open the search engine: {0}")]
    Search(String),
    #[error("invalid setting: {0}")]
    Setting(&'static str),
}

/// The query API's pool: the database settings, with every statement
/// limited to `query_api.statement_timeout_ms`.
pub async fn connect(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    pivotal_event_store::db::connect_with_statement_timeout(
        &settings.database,
        std::time::Duration::from_millis(settings.query_api.statement_timeout_ms.get()),
        "pivotal-query-api",
    )
    .await
}

impl Application {
    pub async fn build(settings: &Settings, pool: PgPool) -> Result<Self, StartError> {
        if settings.query_api.max_concurrent_queries == 0 {
            return Err(StartError::Setting(
                "query_api.max_concurrent_queries must be at least 1",
            ));
        }
        // The recorder first (it is otherwise installed by the first
        // request), so that the series registered at 0 below exist.
        pivotal_telemetry::metrics::handle();
        errors::register_counts();
        let verifier = Arc::new(TokenVerifier::from_settings(&settings.auth)?);
        let revocations = Revocations::connect(
            settings.redis.url.expose_secret(),
            &settings.redis.key_prefix,
            pivotal_auth::revocation::horizon_secs(&settings.auth),
        )
        .await?
        .follow(settings.redis.url.expose_secret())?;
        let search = pivotal_search::open(&settings.search)
            .map_err(|e| StartError::Search(e.to_string()))?;
        let cache = cache::ReadCache::new(
            settings.redis.url.expose_secret(),
            &settings.redis.key_prefix,
            settings.query_api.cache_bytes,
        );
        let changes = live::Changes::default();
        let feed = changes.follow_redis(
            settings.redis.url.expose_secret().to_owned(),
            settings.redis.key_prefix.clone(),
            cache.clone(),
        );
        let state = HttpState(Arc::new(HttpShared {
            consistency_wait: std::time::Duration::from_millis(
                settings.query_api.consistency_wait_ms,
            ),
            socket_init_timeout: std::time::Duration::from_millis(
                settings.query_api.socket_init_timeout_ms.get(),
            ),
            socket_ping_interval: std::time::Duration::from_millis(
                settings.query_api.socket_ping_interval_ms.get(),
            ),
            pool: pool.clone(),
            schema: schema::build_with(
                pool,
                settings.query_api.introspection,
                changes.clone(),
                Some(search),
            ),
            cache,
            slots: slots::Slots::new(
                settings.query_api.max_concurrent_queries,
                settings.query_api.max_waiting_queries,
                std::time::Duration::from_millis(settings.query_api.max_slot_wait_ms),
            ),
            verifier,
            revocations,
        }));
        let router = Router::new()
            .route("/graphql", get(graphql_get).post(graphql))
            .route("/graphql/ws", get(subscriptions))
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(pivotal_telemetry::metrics::endpoint))
            .route(
                "/readyz",
                get(|State(state): State<HttpState>| async move {
                    let (ready, body) =
                        pivotal_telemetry::readiness(&state.pool, &state.revocations).await;
                    let status = if ready {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, axum::Json(body))
                }),
            )
            .fallback(request::no_route)
            .method_not_allowed_fallback(request::method_not_allowed)
            .layer(DefaultBodyLimit::max(settings.query_api.body_limit_bytes))
            .layer(axum::middleware::from_fn_with_state(
                std::time::Duration::from_millis(settings.query_api.body_timeout_ms.get()),
                pivotal_telemetry::body::deadline,
            ))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(pivotal_telemetry::trace::http_span)
                    .on_response(pivotal_telemetry::trace::http_response),
            )
            .layer(axum::middleware::from_fn(
                pivotal_telemetry::metrics::track_http,
            ))
            .with_state(state);
        let listen = settings.query_api.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| StartError::Bind(listen, e))?;
        Ok(Self {
            listener,
            router,
            feed,
            header_timeout: std::time::Duration::from_millis(
                settings.query_api.header_timeout_ms.get(),
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
        tracing::info!(addr = %self.local_addr(), "query api listening");
        let served = pivotal_telemetry::serve::serve(
            self.listener,
            self.router,
            self.header_timeout,
            shutdown,
        )
        .await;
        self.feed.abort();
        served
    }
}

async fn graphiql() -> impl IntoResponse {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

/// Subscriptions: `graphql-transport-ws` (or the older `graphql-ws`); the
/// `connection_init` payload carries `{"authorization": "Bearer ..."}`.
async fn subscriptions(
    State(state): State<HttpState>,
    protocol: async_graphql_axum::GraphQLProtocol,
    upgrade: axum::extract::WebSocketUpgrade,
) -> axum::response::Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let verifier = state.verifier.clone();
            let revocations = state.revocations.clone();
            let bound = consistency::Bound(state.consistency_wait);
            let pool = state.pool.clone();
            socket::serve(
                socket,
                state.schema.clone(),
                protocol,
                socket::Timing {
                    init_timeout: state.socket_init_timeout,
                    ping_interval: state.socket_ping_interval,
                },
                move |payload, progress| async move {
                    let header = payload
                        .get("authorization")
                        .or_else(|| payload.get("Authorization"))
                        .and_then(serde_json::Value::as_str);
                    let principal = verifier
                        .verify_header(header)
                        .await
                        .map_err(|error| refuse_socket(&error, &progress))?;
                    let revoked = revocations
                        .is_revoked(&principal.claims)
                        .await
                        .unwrap_or_else(|error| {
                            tracing::warn!(%error, "revocations unavailable");
                            false
                        });
                    if revoked {
                        return Err(refuse_socket(&AuthError::Revoked, &progress));
                    }
                    // Queries over the socket batch `Quote.customer` like
                    // those over HTTP (one set of loaders per connection:
                    // they batch, they do not cache).
                    let mut data = async_graphql::Data::default();
                    insert_loaders(&mut data, &pool, principal.claims.org, None);
                    data.insert(principal);
                    data.insert(bound);
                    Ok(data)
                },
            )
        })
}

/// GET: a query in the query string (GraphQL over HTTP), or, when the
/// query string names no operation, GraphiQL.
async fn graphql_get(
    State(state): State<HttpState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> axum::response::Response {
    let media = Media::negotiate(&headers);
    let mut answer = match request::from_query_string(&uri) {
        None => return graphiql().await.into_response(),
        Some(Err(refused)) => refused.as_media(media).into_response(),
        Some(Ok(mut operation)) => match request::only_query(&mut operation) {
            Ok(()) => execute(state, &headers, operation, media).await,
            Err(refused) => refused.as_media(media).into_response(),
        },
    };
    // An answer is the caller's own and read models move on: no cache
    // keeps it (the by-id cache behind the schema is kept coherent,
    // ADRs 0014 and 0055; an HTTP cache would not be).
    answer.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, no-store"),
    );
    answer
}

/// The refusal of a socket's `connection_init`: the socket is closed
/// (4403, [`socket`]) with the message as its reason, which carries no
/// `extensions.code`, so the refusal is counted here as the
/// `UNAUTHENTICATED` it would be over HTTP.
fn refuse_socket(error: &AuthError, progress: &socket::Progress) -> async_graphql::Error {
    progress.refused();
    let refused = errors::unauthenticated(error);
    errors::count(&[refused
        .clone()
        .into_server_error(async_graphql::Pos::default())]);
    refused
}

async fn graphql(
    State(state): State<HttpState>,
    headers: HeaderMap,
    operation: request::Operation,
) -> axum::response::Response {
    execute(state, &headers, operation.request, operation.media).await
}

/// Authenticates the caller, waits for a consistency token's position if
/// the request carries one, and executes `request` in an execution slot;
/// the answer is sent as `media`.
async fn execute(
    state: HttpState,
    headers: &HeaderMap,
    request: async_graphql::Request,
    media: Media,
) -> axum::response::Response {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("invalid"));
    let verified = match state.verifier.verify_header(header).await {
        Ok(principal) => match state.revocations.is_revoked(&principal.claims).await {
            Ok(false) => Ok(principal),
            Ok(true) => Err(errors::unauthenticated(&AuthError::Revoked)),
            // Reads stay available while Redis is down (docs/adr/0010); the
            // token itself was verified.
            Err(error) => {
                tracing::warn!(%error, "revocations unavailable; serving the verified token");
                Ok(principal)
            }
        },
        Err(error) => Err(errors::unauthenticated(&error)),
    };
    // Read-your-writes: wait for the read models to reach the token.
    let verified = match (verified, headers.get("x-consistency-token")) {
        (Ok(principal), Some(token)) => {
            let waited = consistency::wait(
                &state.pool,
                principal.claims.org,
                token.to_str().unwrap_or_default(),
                state.consistency_wait,
                None,
            )
            .await;
            waited
                .map(|reached| (principal, Some(reached)))
                .map_err(consistency::into_graphql)
        }
        (other, _) => other.map(|principal| (principal, None)),
    };
    match verified {
        Ok((principal, reached)) => {
            // Parsing and executing wait for a slot (ADR 0043), unless
            // the queue for them is full.
            let slot = match state.slots.take().await {
                Ok(slot) => slot,
                Err(overloaded) => return overloaded_response(&overloaded, media),
            };
            let mut request = request;
            insert_loaders(
                &mut request.data,
                &state.pool,
                principal.claims.org,
                Some(slot.clone()),
            );
            let request = request
                .data(consistency::Bound(state.consistency_wait))
                .data(dashboard::RedisFigures(state.cache.clone()))
                .data(principal)
                .data(slot);
            let response = state
                .schema
                .execute(if let Some(reached) = reached {
                    // A read with a consistency token goes to the read
                    // models: the cache learns of a projection only after
                    // the projector's commit (ADR 0014).
                    request.data(reached)
                } else {
                    request.data(state.cache.clone())
                })
                .await;
            media::respond(response, media)
        }
        Err(error) => media::respond(
            async_graphql::Response::from_errors(vec![
                error.into_server_error(async_graphql::Pos::default()),
            ]),
            media,
        ),
    }
}

/// 503 with `Retry-After: 1` and a GraphQL error coded `OVERLOADED`: every
/// slot is taken and the queue for them is full, or no slot came free
/// within the longest wait (ADR 0043).
fn overloaded_response(overloaded: &slots::Overloaded, media: Media) -> axum::response::Response {
    let error = errors::unavailable(errors::OVERLOADED, &overloaded.to_string());
    media::respond(
        async_graphql::Response::from_errors(vec![
            error.into_server_error(async_graphql::Pos::default()),
        ]),
        media,
    )
}

/// The batching loaders of one request (or one socket): `Quote.customer`
/// across a page, and the waits of fields read under a consistency token
/// (which give the request's `slot` back while they wait).
fn insert_loaders(
    data: &mut async_graphql::Data,
    pool: &sqlx::PgPool,
    organization: uuid::Uuid,
    slot: Option<Arc<slots::Slot>>,
) {
    data.insert(async_graphql::dataloader::DataLoader::new(
        customers::CustomerLoader::new(pool.clone(), organization),
        tokio::spawn,
    ));
    data.insert(async_graphql::dataloader::DataLoader::new(
        consistency::RelatedLoader::new(pool.clone(), slot),
        tokio::spawn,
    ));
}
