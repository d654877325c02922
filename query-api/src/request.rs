//! Reading a GraphQL operation from an HTTP POST, as GraphQL over HTTP
//! has it: a body of `Content-Type: application/json` holding one object,
//! `{"query", "operationName", "variables", "extensions"}`, read within
//! `query_api.body_limit_bytes` and `query_api.body_timeout_ms`.
//!
//! A body that is not one is answered before anything executes, with a
//! GraphQL error coded `BAD_REQUEST` whose `reason` names what was wrong
//! and an HTTP status that says the same: 415 `unsupported_media_type`
//! (another content type, a multipart upload among them: the schema takes
//! no files), 413 `payload_too_large`, 408 `request_timeout` (the body
//! did not arrive in time, ADR 0046), 400 `unreadable_body` (the
//! connection broke off), `malformed_json`, `batch_not_supported` (an
//! array of operations) or `not_a_graphql_request` (JSON of another
//! shape). Each is counted in `graphql_errors_total{code="BAD_REQUEST"}`.

use async_graphql::ErrorExtensions as _;
use async_graphql_axum::GraphQLResponse;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::errors;

/// One GraphQL operation read from a request's body.
#[derive(Debug)]
pub struct Operation(pub async_graphql::Request);

/// Why a request's body is not a GraphQL operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    /// `extensions.reason`: what was wrong, for a client to act on.
    pub reason: &'static str,
    pub message: String,
}

impl Refused {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let reason = self.reason;
        let error = async_graphql::Error::new(self.message).extend_with(|_, e| {
            e.set("code", errors::BAD_REQUEST);
            e.set("reason", reason);
        });
        let response = async_graphql::Response::from_errors(vec![
            error.into_server_error(async_graphql::Pos::default()),
        ]);
        errors::count(&response.errors);
        (self.status, GraphQLResponse::from(response)).into_response()
    }
}

/// Whether `value` names JSON (`application/json`, with or without
/// parameters).
fn is_json(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

impl<S: Send + Sync> FromRequest<S> for Operation {
    type Rejection = Refused;

    async fn from_request(request: Request, state: &S) -> Result<Self, Refused> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        if !content_type.as_deref().is_some_and(is_json) {
            return Err(Refused::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                match content_type {
                    Some(other) => format!("operations are sent as application/json, not {other}"),
                    None => {
                        "operations are sent as application/json; the request has no Content-Type"
                            .to_owned()
                    }
                },
            ));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Refused::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than query_api.body_limit_bytes allows",
                    )
                } else if let Some(late) = pivotal_telemetry::body::timed_out(&rejection) {
                    Refused::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        late.to_string(),
                    )
                } else {
                    Refused::new(
                        StatusCode::BAD_REQUEST,
                        "unreadable_body",
                        format!(
                            "the request body could not be read: {}",
                            rejection.body_text()
                        ),
                    )
                }
            })?;
        parse(&body).map(Self)
    }
}

/// The operation in `body`, or why there is none.
pub fn parse(body: &[u8]) -> Result<async_graphql::Request, Refused> {
    let bad = |reason, message: String| Refused::new(StatusCode::BAD_REQUEST, reason, message);
    if body.trim_ascii_start().starts_with(b"[") {
        return Err(bad(
            "batch_not_supported",
            "one operation per request: an array of operations is not accepted".to_owned(),
        ));
    }
    let request: async_graphql::Request = serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            bad(
                "not_a_graphql_request",
                format!(
                    "the body is not a GraphQL request (an object with a query string, and optionally operationName, variables and extensions): {error}"
                ),
            )
        } else {
            bad(
                "malformed_json",
                format!("the body is not valid JSON: {error}"),
            )
        }
    })?;
    // async-graphql takes a missing query as an empty one (for persisted
    // queries, which this API does not take).
    if request.query.trim().is_empty() {
        return Err(bad(
            "not_a_graphql_request",
            "the request has no query: send the operation's text as \"query\"".to_owned(),
        ));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_is_read_with_its_name_and_variables() {
        let request = parse(
            br#" {"query": "query Q($id: ID!) { customer(id: $id) { id } }", "operationName": "Q", "variables": {"id": "x"}}"#,
        )
        .unwrap();
        assert_eq!(request.operation_name.as_deref(), Some("Q"));
        assert_eq!(
            request.variables.into_value().into_json().unwrap(),
            serde_json::json!({"id": "x"})
        );
    }

    #[test]
    fn a_body_that_is_not_one_operation_says_why() {
        for (body, reason) in [
            (&br#"{"query": "{ me { id } }""#[..], "malformed_json"),
            (b"not json", "malformed_json"),
            (b"", "malformed_json"),
            (br#"[{"query": "{ me { id } }"}]"#, "batch_not_supported"),
            (br#" [ ]"#, "batch_not_supported"),
            (br#"{"operationName": "Q"}"#, "not_a_graphql_request"),
            (br#"{"query": "  "}"#, "not_a_graphql_request"),
            (br#"{"query": 7}"#, "not_a_graphql_request"),
            (br#""{ me { id } }""#, "not_a_graphql_request"),
        ] {
            let refused = parse(body).unwrap_err();
            assert_eq!(refused.status, StatusCode::BAD_REQUEST);
            assert_eq!(refused.reason, reason, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn json_is_named_with_or_without_parameters() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("multipart/form-data; boundary=x"));
        assert!(!is_json("application/graphql"));
        assert!(!is_json("text/plain"));
    }
}
