//! GraphQL errors carry a stable `extensions.code`, the GraphQL face of the
//! REST API's problem codes.

use async_graphql::{Error, ErrorExtensions};

pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
pub const STALE_READ: &str = "STALE_READ";
pub const OVERLOADED: &str = "OVERLOADED";

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

/// Logs the cause, shows nothing of it.
pub fn internal(cause: impl std::fmt::Display) -> Error {
    tracing::error!(error = %cause, "query failed");
    coded(
        INTERNAL,
        "the query could not be completed; it has been logged",
    )
}
