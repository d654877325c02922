//! The HTTP face of a GraphQL response, as GraphQL over HTTP has it: its
//! media type picked by the request's `Accept` (ADR 0048), its status,
//! and its errors counted by code (`graphql_errors_total`).
//!
//! - `application/graphql-response+json` when the client asks for it (it
//!   is named, and not ranked below `application/json`): a request error
//!   (the operation does not parse, the schema refuses it, the request
//!   carries no valid token) is a 4xx: 400, or 401 with
//!   `WWW-Authenticate: Bearer`.
//! - `application/json` otherwise (no `Accept`, `*/*`, `application/json`,
//!   or nothing this API can send): a request error is 200, as clients
//!   of that media type expect.
//!
//! In both, a request error's body has `errors` and no `data` (nothing
//! was executed); a response whose every error is retryable and whose
//! root fields hold no value is 503 with `Retry-After` (ADR 0045); a body
//! that holds no operation keeps the status its refusal names (ADR 0046).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::errors;

/// What a GraphQL response is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `application/json`: request errors are 200.
    Json,
    /// `application/graphql-response+json`: request errors are 4xx.
    GraphqlResponse,
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

impl Media {
    /// The media type `headers` ask for: `application/graphql-response+json`
    /// when `Accept` names it with a weight above 0 and no lower than that
    /// of `application/json` (named or through a wildcard); otherwise
    /// `application/json`, the media type of clients that predate the
    /// other, and of those that accept anything.
    pub fn negotiate(headers: &HeaderMap) -> Self {
        let mut graphql: Option<f32> = None;
        let mut json: Option<f32> = None;
        let mut wildcard: Option<f32> = None;
        for value in headers.get_all(header::ACCEPT) {
            let Ok(value) = value.to_str() else { continue };
            for range in value.split(',') {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or_default().trim();
                let weight = parts
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                    .map_or(Some(1.0), |(_, q)| q.trim().parse::<f32>().ok());
                let Some(weight) = weight else { continue };
                let slot = if media.eq_ignore_ascii_case(GRAPHQL_RESPONSE) {
                    &mut graphql
                } else if media.eq_ignore_ascii_case("application/json") {
                    &mut json
                } else if media == "*/*" || media.eq_ignore_ascii_case("application/*") {
                    &mut wildcard
                } else {
                    continue;
                };
                *slot = Some(slot.map_or(weight, |w: f32| w.max(weight)));
            }
        }
        let json = json.or(wildcard).unwrap_or(0.0);
        match graphql {
            Some(weight) if weight > 0.0 && weight >= json => Self::GraphqlResponse,
            _ => Self::Json,
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Json => "application/json",
            Self::GraphqlResponse => GRAPHQL_RESPONSE,
        })
    }
}

/// Whether `response` is a request error: nothing was executed because
/// the operation does not parse, the schema refuses it, or the request
/// carries no valid token (every error says so and there is no data).
fn request_error(response: &async_graphql::Response) -> Option<StatusCode> {
    if response.errors.is_empty() || response.data != async_graphql::Value::Null {
        return None;
    }
    let mut status = StatusCode::BAD_REQUEST;
    for error in &response.errors {
        match errors::code_of(error) {
            Some(errors::GRAPHQL_PARSE_FAILED | errors::GRAPHQL_VALIDATION_FAILED) => {}
            Some(errors::UNAUTHENTICATED) => status = StatusCode::UNAUTHORIZED,
            _ => return None,
        }
    }
    Some(status)
}

/// Whether `data` holds no value: null, or an object of nulls.
fn answered_nothing(data: &async_graphql::Value) -> bool {
    match data {
        async_graphql::Value::Null => true,
        async_graphql::Value::Object(fields) => {
            fields.values().all(|v| *v == async_graphql::Value::Null)
        }
        _ => false,
    }
}

/// `response` as `media`, its errors counted: 503 with `Retry-After` when
/// nothing was answered and only because a dependency was unavailable
/// (every error retryable, every root field null), so that load
/// balancers, proxies and HTTP clients see a retryable failure, as they
/// do from the command API; a request error as `media` has it; else 200.
pub fn respond(response: async_graphql::Response, media: Media) -> Response {
    errors::count(&response.errors);
    let unavailable = errors::all_retryable(&response.errors) && answered_nothing(&response.data);
    let refused = request_error(&response);
    let status = match (unavailable, refused, media) {
        (true, _, _) => StatusCode::SERVICE_UNAVAILABLE,
        (false, Some(status), Media::GraphqlResponse) => status,
        _ => StatusCode::OK,
    };
    let body = if refused.is_some() {
        serde_json::json!({ "errors": response.errors }).to_string()
    } else {
        serde_json::to_string(&response).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot serialize a GraphQL response");
            serde_json::json!({"errors": [{"message": "the response could not be serialized",
                "extensions": {"code": errors::INTERNAL}}]})
            .to_string()
        })
    };
    let mut answer = (status, body).into_response();
    let headers = answer.headers_mut();
    headers.insert(header::CONTENT_TYPE, media.content_type());
    headers.extend(response.http_headers);
    if unavailable {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(errors::RETRY_AFTER_SECONDS),
        );
    } else if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    answer
}

/// A request refused before it held an operation (ADR 0046, 0047): `status`
/// whatever the media type, the error counted, no `data`.
pub fn refuse(error: async_graphql::ServerError, status: StatusCode, media: Media) -> Response {
    errors::count(std::slice::from_ref(&error));
    let mut answer = (status, serde_json::json!({ "errors": [error] }).to_string()).into_response();
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(accept: Option<&str>) -> Media {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        }
        Media::negotiate(&headers)
    }

    #[test]
    fn the_graphql_media_type_is_sent_to_clients_that_ask_for_it() {
        for accept in [
            "application/graphql-response+json",
            "Application/GraphQL-Response+JSON",
            "application/graphql-response+json, application/json;q=0.9",
            "application/json;q=0.9, application/graphql-response+json",
            "application/graphql-response+json;charset=utf-8, */*;q=0.1",
            "application/json, application/graphql-response+json",
        ] {
            assert_eq!(accepting(Some(accept)), Media::GraphqlResponse, "{accept}");
        }
        for accept in [
            None,
            Some("*/*"),
            Some("application/json"),
            Some("application/*"),
            Some("text/html"),
            Some("application/graphql-response+json;q=0"),
            Some("application/graphql-response+json;q=0.5, application/json"),
            Some("application/graphql-response+json;q=0.5, */*"),
            Some("application/graphql-response+json;q=x"),
        ] {
            assert_eq!(accepting(accept), Media::Json, "{accept:?}");
        }
    }

    fn failed(code: &'static str) -> async_graphql::ServerError {
        errors::coded(code, "no").into_server_error(async_graphql::Pos::default())
    }

    #[test]
    fn request_errors_are_told_from_errors_in_execution() {
        let response = |codes: &[&'static str]| {
            async_graphql::Response::from_errors(codes.iter().map(|c| failed(c)).collect())
        };
        assert_eq!(
            request_error(&response(&[errors::GRAPHQL_PARSE_FAILED])),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            request_error(&response(&[
                errors::GRAPHQL_VALIDATION_FAILED,
                errors::GRAPHQL_VALIDATION_FAILED
            ])),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            request_error(&response(&[errors::UNAUTHENTICATED])),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(request_error(&response(&[errors::INTERNAL])), None);
        assert_eq!(request_error(&response(&[errors::UNAVAILABLE])), None);
        assert_eq!(request_error(&response(&[])), None);
        let mut partial = response(&[errors::GRAPHQL_VALIDATION_FAILED]);
        partial.data = async_graphql::Value::from_json(serde_json::json!({"me": null})).unwrap();
        assert_eq!(request_error(&partial), None);
    }
}
