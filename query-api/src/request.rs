//! Reading a GraphQL operation from an HTTP request, as GraphQL over HTTP
//! has it: from a POST, a body of `Content-Type: application/json`
//! holding one object, `{"query", "operationName", "variables",
//! "extensions"}`, read within `query_api.body_limit_bytes` and
//! `query_api.body_timeout_ms`; from a GET, the same four as query
//! parameters, `variables` and `extensions` as JSON text. A GET carries
//! queries only: a mutation or a subscription in one is refused with 405
//! `method_not_allowed` and `Allow: POST` before anything executes.
//!
//! A body that is not one is answered before anything executes, with a
//! GraphQL error coded `BAD_REQUEST` whose `reason` names what was wrong
//! and an HTTP status that says the same: 415 `unsupported_media_type`
//! (another content type, a multipart upload among them: the schema takes
//! no files), 413 `payload_too_large`, 408 `request_timeout` (the body
//! did not arrive in time, ADR 0046), 400 `unreadable_body` (the
//! connection broke off), `malformed_json`, `batch_not_supported` (an
//! array of operations) or `not_a_graphql_request` (JSON of another
//! shape). Each is counted in `graphql_errors_total{code="BAD_REQUEST"}`,
//! as are a path the API does not serve (404 `route_not_found`) and a
//! route asked with a method it does not take (405 `method_not_allowed`,
//! with the route's `Allow`).

use async_graphql::ErrorExtensions as _;
use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::errors;
use crate::media::Media;

/// One GraphQL operation read from a request's body, and the media type its
/// answer is sent as.
#[derive(Debug)]
pub struct Operation {
    pub request: async_graphql::Request,
    /// What the answer is sent as (the request's `Accept`).
    pub media: Media,
}

/// Why a request's body is not a GraphQL operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    /// `extensions.reason`: what was wrong, for a client to act on.
    pub reason: &'static str,
    pub message: String,
    /// What the answer is sent as (the request's `Accept`).
    pub media: Media,
}

impl Refused {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            media: Media::Json,
        }
    }

    /// The refusal, sent as `media`.
    #[must_use]
    pub fn as_media(self, media: Media) -> Self {
        Self { media, ..self }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let reason = self.reason;
        let status = self.status;
        let error = async_graphql::Error::new(self.message).extend_with(|_, e| {
            e.set("code", errors::BAD_REQUEST);
            e.set("reason", reason);
        });
        let mut answer = crate::media::refuse(
            error.into_server_error(async_graphql::Pos::default()),
            status,
            self.media,
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            answer
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        }
        answer
    }
}

/// Fallback for a route asked with a method it does not take (a `PUT` of
/// `/graphql`, say): 405 `method_not_allowed`, with the `Allow` header the
/// router sets for that route.
pub async fn method_not_allowed(method: Method) -> Response {
    let mut answer = Refused::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not a method of this route; the Allow header lists the ones it takes"),
    )
    .into_response();
    answer.headers_mut().remove(header::ALLOW);
    answer
}

/// Fallback for a path the query API does not serve: 404 `route_not_found`.
pub async fn no_route() -> Response {
    Refused::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route: GraphQL is served at /graphql, and over WebSocket at /graphql/ws",
    )
    .into_response()
}

/// The parameters of a GET that carry an operation.
const PARAMETERS: [&str; 4] = ["query", "operationName", "variables", "extensions"];

/// The operation in a GET's query string, or why there is none; `None`
/// when the query string names none of `query`, `operationName`,
/// `variables` and `extensions` (GraphiQL is served). Other parameters
/// (a cache buster, say) are ignored; one of the four given twice is
/// refused, as is `variables` or `extensions` that is not JSON.
pub fn from_query_string(uri: &Uri) -> Option<Result<async_graphql::Request, Refused>> {
    let bad = |reason, message: String| Refused::new(StatusCode::BAD_REQUEST, reason, message);
    let pairs = match Query::<Vec<(String, String)>>::try_from_uri(uri) {
        Ok(Query(pairs)) => pairs,
        Err(rejection) => {
            return Some(Err(bad(
                "not_a_graphql_request",
                format!(
                    "the query string could not be read: {}",
                    rejection.body_text()
                ),
            )));
        }
    };
    let mut operation = serde_json::Map::new();
    for (name, value) in pairs {
        if !PARAMETERS.contains(&name.as_str()) {
            continue;
        }
        if operation.contains_key(&name) {
            return Some(Err(bad(
                "not_a_graphql_request",
                format!("the query string gives {name} more than once"),
            )));
        }
        let value = if name == "variables" || name == "extensions" {
            match serde_json::from_str(&value) {
                Ok(json) => json,
                Err(error) => {
                    return Some(Err(bad(
                        "malformed_json",
                        format!("the {name} parameter is not valid JSON: {error}"),
                    )));
                }
            }
        } else {
            serde_json::Value::String(value)
        };
        operation.insert(name, value);
    }
    if operation.is_empty() {
        return None;
    }
    Some(parse(
        serde_json::Value::Object(operation).to_string().as_bytes(),
    ))
}

/// Refuses (405, `method_not_allowed`) an operation a GET may not carry:
/// a mutation or a subscription. The document is parsed here, once (the
/// execution reuses it); one that does not parse, or names no operation it
/// holds, is left to the execution to answer as it answers a POST.
pub fn only_query(request: &mut async_graphql::Request) -> Result<(), Refused> {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return Ok(());
    };
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name.as_str()),
        (DocumentOperations::Multiple(_), None) => None,
    };
    let refused = |message: &str| {
        Err(Refused::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        ))
    };
    match operation.map(|operation| operation.node.ty) {
        Some(OperationType::Mutation) => refused("a mutation is sent with POST, not GET"),
        Some(OperationType::Subscription) => {
            refused("a subscription is served over WebSocket at /graphql/ws, not over GET")
        }
        Some(OperationType::Query) | None => Ok(()),
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
        let media = Media::negotiate(request.headers());
        match read(request, state).await {
            Ok(request) => Ok(Self { request, media }),
            Err(refused) => Err(refused.as_media(media)),
        }
    }
}

/// The operation in `request`'s body, or why there is none.
async fn read<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<async_graphql::Request, Refused> {
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
                None => "operations are sent as application/json; the request has no Content-Type"
                    .to_owned(),
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
    parse(&body)
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

    fn from_get(query: &str) -> Option<Result<async_graphql::Request, Refused>> {
        from_query_string(&format!("/graphql?{query}").parse::<Uri>().unwrap())
    }

    #[test]
    fn a_get_carries_an_operation_in_its_query_string() {
        let request = from_get(
            "query=query%20Q(%24id%3A%20ID!)%20%7B%20customer(id%3A%20%24id)%20%7B%20id%20%7D%20%7D\
             &operationName=Q&variables=%7B%22id%22%3A%22x%22%7D&extensions=%7B%7D&_=17",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            request.query,
            "query Q($id: ID!) { customer(id: $id) { id } }"
        );
        assert_eq!(request.operation_name.as_deref(), Some("Q"));
        assert_eq!(
            request.variables.into_value().into_json().unwrap(),
            serde_json::json!({"id": "x"})
        );
        // Without any of the four, GraphiQL is served.
        assert!(from_get("").is_none());
        assert!(from_get("_=17").is_none());
    }

    #[test]
    fn a_get_that_is_not_one_operation_says_why() {
        for (query, reason) in [
            (
                "query=%7B%20me%20%7B%20id%20%7D%20%7D&query=x",
                "not_a_graphql_request",
            ),
            ("operationName=Q", "not_a_graphql_request"),
            ("query=", "not_a_graphql_request"),
            ("query=x&variables=%7Bid", "malformed_json"),
            ("query=x&extensions=nope", "malformed_json"),
            ("query=x&variables=%5B1%5D", "not_a_graphql_request"),
        ] {
            let refused = from_get(query).unwrap().unwrap_err();
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(refused.reason, reason, "{query}");
        }
    }

    #[test]
    fn a_get_carries_queries_only() {
        let checked = |query: &str, name: Option<&str>| {
            let mut request = async_graphql::Request::new(query);
            if let Some(name) = name {
                request = request.operation_name(name);
            }
            only_query(&mut request).map_err(|refused| (refused.status, refused.reason))
        };
        let refused = Err((StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
        assert_eq!(checked("{ me { id } }", None), Ok(()));
        assert_eq!(checked("query Q { me { id } }", None), Ok(()));
        assert_eq!(checked("mutation { archive }", None), refused);
        assert_eq!(checked("subscription { changes { id } }", None), refused);
        let two = "query Q { me { id } } mutation M { archive }";
        assert_eq!(checked(two, Some("Q")), Ok(()));
        assert_eq!(checked(two, Some("M")), refused);
        // Left to the execution, which answers them as it answers a POST.
        assert_eq!(checked(two, None), Ok(()));
        assert_eq!(checked(two, Some("Other")), Ok(()));
        assert_eq!(checked("{ me { id }", None), Ok(()));
    }

    #[test]
    fn a_refused_method_names_the_one_allowed() {
        let refused = Refused::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "x");
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        let other = Refused::new(StatusCode::BAD_REQUEST, "malformed_json", "x").into_response();
        assert!(other.headers().get(header::ALLOW).is_none());
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
