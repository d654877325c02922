//! GraphQL errors carry a stable `extensions.code`, the GraphQL face of the
//! REST API's problem codes.

use async_graphql::{Error, ErrorExtensions};

pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
pub const STALE_READ: &str = "STALE_READ";
pub const OVERLOADED: &str = "OVERLOADED";
/// PostgreSQL, which holds the read models, could not be reached (down,
/// restarting, out of connections, or no pooled connection came free in
/// time): retry after `extensions.retryAfterSeconds`.
pub const UNAVAILABLE: &str = "UNAVAILABLE";
/// A statement ran past `query_api.statement_timeout_ms` and PostgreSQL
/// cancelled it: narrow the query, or retry.
pub const QUERY_TIMEOUT: &str = "QUERY_TIMEOUT";

/// Seconds a client is told to wait before retrying a request that failed
/// because a dependency was unavailable.
pub const RETRY_AFTER_SECONDS: u64 = 1;

pub fn coded(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

pub fn unauthenticated(error: &pivotal_auth::AuthError) -> Error {
    let reason = error.code();
    Error::new(error.to_string()).extend_with(|_, e| {
        e.set("code", UNAUTHENTICATED);
        e.set("reason", reason);
    })
}

pub fn bad_input(message: impl Into<String>) -> Error {
    coded(BAD_USER_INPUT, message)
}

/// An error as is when it has a code; otherwise (a malformed cursor, say)
/// as `BAD_USER_INPUT`.
pub fn keep_code(error: Error) -> Error {
    if error
        .extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
    {
        error
    } else {
        bad_input(error.message)
    }
}

/// A read model query's failure, by its cause: PostgreSQL unreachable is
/// `UNAVAILABLE` (retryable, with `retryAfterSeconds`), a statement
/// cancelled by the statement timeout is `QUERY_TIMEOUT`, anything else
/// `INTERNAL_SERVER_ERROR`. The cause is logged, never shown.
pub fn database(error: impl std::borrow::Borrow<sqlx::Error>) -> Error {
    let error = error.borrow();
    if pivotal_event_store::commands::is_unavailable(error) {
        tracing::warn!(%error, "read models unavailable");
        return unavailable(
            UNAVAILABLE,
            "the read models' database is unavailable; retry shortly",
        );
    }
    if let sqlx::Error::Database(db) = error
        && db.code().as_deref() == Some(QUERY_CANCELED)
    {
        tracing::warn!(%error, "read model query timed out");
        return coded(
            QUERY_TIMEOUT,
            "the query ran past the read models' time limit and was cancelled; narrow it (a smaller page, a tighter filter) or retry",
        );
    }
    internal(error)
}

/// SQLSTATE 57014: a statement cancelled, here by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

/// An error coded `code` that tells the client when to retry.
pub fn unavailable(code: &'static str, message: &str) -> Error {
    coded(code, message).extend_with(|_, e| e.set("retryAfterSeconds", RETRY_AFTER_SECONDS))
}

/// Whether there are `errors` and every one of them is retryable: a
/// dependency was unavailable and the error says when to retry
/// (`extensions.retryAfterSeconds`).
pub fn all_retryable(errors: &[async_graphql::ServerError]) -> bool {
    !errors.is_empty()
        && errors.iter().all(|error| {
            error
                .extensions
                .as_ref()
                .is_some_and(|x| x.get("retryAfterSeconds").is_some())
        })
}

/// Logs the cause, shows nothing of it.
pub fn internal(cause: impl std::fmt::Display) -> Error {
    tracing::error!(error = %cause, "query failed");
    coded(
        INTERNAL,
        "the query could not be completed; it has been logged",
    )
}
