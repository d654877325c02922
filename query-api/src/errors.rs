//! GraphQL errors carry a stable `extensions.code`, the GraphQL face of the
//! REST API's problem codes.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    Error, ErrorExtensions, Response, ServerError, ServerResult, ValidationResult, Variables,
};
use futures::StreamExt as _;
use futures::stream::BoxStream;

pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
pub const STALE_READ: &str = "STALE_READ";
pub const OVERLOADED: &str = "OVERLOADED";
/// The HTTP request carries no GraphQL operation: its body is not JSON,
/// not one operation, too large, too slow or of another content type;
/// `extensions.reason` says which ([`crate::request`]).
pub const BAD_REQUEST: &str = "BAD_REQUEST";
/// The operation is not GraphQL (a syntax error).
pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// The operation does not fit the schema (an unknown field, a missing
/// argument, a variable of the wrong type, too deep or too complex).
pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
/// PostgreSQL, which holds the read models, could not be reached (down,
/// restarting, out of connections, or no pooled connection came free in
/// time): retry after `extensions.retryAfterSeconds`.
pub const UNAVAILABLE: &str = "UNAVAILABLE";
/// A statement ran past `query_api.statement_timeout_ms` and PostgreSQL
/// cancelled it: narrow the query, or retry.
pub const QUERY_TIMEOUT: &str = "QUERY_TIMEOUT";

/// Every code an error may carry, the values of the
/// `graphql_errors_total{code}` metric.
pub const CODES: [&str; 12] = [
    BAD_REQUEST,
    UNAUTHENTICATED,
    FORBIDDEN,
    BAD_USER_INPUT,
    INTERNAL,
    STALE_READ,
    OVERLOADED,
    UNAVAILABLE,
    QUERY_TIMEOUT,
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    crate::search::SEARCH_UNAVAILABLE,
];

/// The code of `error`, if it is one of [`CODES`].
pub fn code_of(error: &ServerError) -> Option<&'static str> {
    let code = error.extensions.as_ref()?.get("code")?;
    CODES
        .iter()
        .find(|c| *code == async_graphql::Value::from(**c))
        .copied()
}

/// Counts `errors` by code in `graphql_errors_total`.
pub fn count(errors: &[ServerError]) {
    for error in errors {
        let code = code_of(error).unwrap_or("OTHER");
        metrics::counter!("graphql_errors_total", "code" => code).increment(1);
    }
}

/// Every series of `graphql_errors_total` at 0, so that alerts on them see
/// a value from the start.
pub fn register_counts() {
    for code in CODES {
        metrics::counter!("graphql_errors_total", "code" => code).increment(0);
    }
}

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

/// Refuses integer argument `name` outside `min..=max` (`BAD_USER_INPUT`
/// naming the argument and the bound it passed).
pub fn in_range(name: &str, value: i32, min: i64, max: i64) -> async_graphql::Result<()> {
    let value = i64::from(value);
    let message = if value < min {
        format!("{name} must be at least {min}")
    } else if value > max {
        format!("{name} must be at most {max}")
    } else {
        return Ok(());
    };
    Err(bad_input(message))
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
    // Before the check for unavailability, which counts a cancelled
    // statement in.
    if let sqlx::Error::Database(db) = error
        && db.code().as_deref() == Some(QUERY_CANCELED)
    {
        tracing::warn!(%error, "read model query timed out");
        return coded(
            QUERY_TIMEOUT,
            "the query ran past the read models' time limit and was cancelled; narrow it (a smaller page, a tighter filter) or retry",
        );
    }
    if pivotal_event_store::commands::is_unavailable(error) {
        tracing::warn!(%error, "read models unavailable");
        return unavailable(
            UNAVAILABLE,
            "the read models' database is unavailable; retry shortly",
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
pub fn all_retryable(errors: &[ServerError]) -> bool {
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

/// Gives every error a code: a syntax error `GRAPHQL_PARSE_FAILED`, an
/// operation the schema refuses `GRAPHQL_VALIDATION_FAILED`, an argument
/// value that cannot be read as its type (async-graphql's `Failed to
/// parse`) or a variable given no value `BAD_USER_INPUT`, and any other
/// error raised without one `INTERNAL_SERVER_ERROR` (its message logged
/// and replaced). Errors that have a code keep it.
#[derive(Debug)]
pub struct Codes;

impl ExtensionFactory for Codes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Codes)
    }
}

/// Whether `error` has an `extensions.code`.
fn has_code(error: &ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
}

/// Codes `error` with `code` unless it has a code.
fn give_code(error: &mut ServerError, code: &'static str) {
    if !has_code(error) {
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
}

fn with_code(mut error: ServerError, code: &'static str) -> ServerError {
    give_code(&mut error, code);
    error
}

/// An error raised while executing that has no code: an argument or a
/// variable that cannot be read, an operation that cannot run here (no
/// field's path: a subscription sent over HTTP), or else a defect.
fn coded_in_execution(error: ServerError) -> ServerError {
    if has_code(&error) {
        return error;
    }
    // async-graphql's own words for an argument or a variable that cannot
    // be read (a wording change fails the tests that send such input):
    // validation refuses most such values first, but a scalar that does
    // not check its input there (`is_valid`) is read only here.
    if ["Failed to parse", "Expected input type", "Variable "]
        .iter()
        .any(|words| error.message.starts_with(words))
    {
        return with_code(error, BAD_USER_INPUT);
    }
    if error.path.is_empty() {
        return with_code(error, GRAPHQL_VALIDATION_FAILED);
    }
    tracing::error!(error = %error.message, path = ?error.path, "field failed without a code");
    let mut error = with_code(error, INTERNAL);
    error.message = "the query could not be completed; it has been logged".into();
    error
}

#[async_trait::async_trait]
impl Extension for Codes {
    /// Errors raised between validation and execution (an operation name
    /// the document does not hold, or none given for a document of
    /// several) are the operation's: `GRAPHQL_VALIDATION_FAILED`.
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        for error in &mut response.errors {
            give_code(error, GRAPHQL_VALIDATION_FAILED);
        }
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|error| with_code(error, GRAPHQL_PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|error| with_code(error, GRAPHQL_VALIDATION_FAILED))
                .collect()
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        code_in_execution(&mut response);
        response
    }

    /// Operations over WebSocket come as streams, which pass through
    /// neither `request` (an unknown `operationName` is refused before
    /// `execute`) nor, for a subscription's events, `execute`: each
    /// response a stream yields is coded here, as over HTTP, and its
    /// errors counted in `graphql_errors_total` (HTTP responses are
    /// counted where they are sent).
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut response| {
                code_in_execution(&mut response);
                count(&response.errors);
                response
            })
            .boxed()
    }
}

fn code_in_execution(response: &mut Response) {
    response.errors = std::mem::take(&mut response.errors)
        .into_iter()
        .map(coded_in_execution)
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(error: &ServerError) -> Option<String> {
        match error.extensions.as_ref()?.get("code")? {
            async_graphql::Value::String(code) => Some(code.clone()),
            _ => None,
        }
    }

    #[test]
    fn an_error_raised_in_execution_without_a_code_is_given_one() {
        let argument = coded_in_execution(ServerError::new(
            r#"Failed to parse "Int": the value is -1, must be greater than or equal to 0"#,
            None,
        ));
        assert_eq!(code_of(&argument).as_deref(), Some(BAD_USER_INPUT));
        assert!(argument.message.contains("-1"), "the message is kept");
        let mut kind = ServerError::new(r#"Expected input type "NaiveDate", found 5."#, None);
        kind.path = vec![async_graphql::PathSegment::Field("quotes".into())];
        assert_eq!(
            code_of(&coded_in_execution(kind)).as_deref(),
            Some(BAD_USER_INPUT)
        );

        let operation = coded_in_execution(ServerError::new(
            "Subscriptions are not supported on this transport.",
            None,
        ));
        assert_eq!(
            code_of(&operation).as_deref(),
            Some(GRAPHQL_VALIDATION_FAILED)
        );

        let mut other = ServerError::new("Data `PgPool` does not exist.", None);
        other.path = vec![async_graphql::PathSegment::Field("customers".into())];
        let other = coded_in_execution(other);
        assert_eq!(code_of(&other).as_deref(), Some(INTERNAL));
        assert!(!other.message.contains("PgPool"), "the cause is not shown");

        let coded = coded_in_execution(
            coded(STALE_READ, "not yet").into_server_error(async_graphql::Pos::default()),
        );
        assert_eq!(code_of(&coded).as_deref(), Some(STALE_READ));
        assert_eq!(coded.message, "not yet");
    }
}
