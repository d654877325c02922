//! Requests with an `Idempotency-Key` header run at most once per
//! organization and key: a retry gets the first response (marked with
//! `Idempotent-Replayed: true`) and appends nothing; the same key with another
//! method, path or body is refused with 422.

use std::future::Future;

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pivotal_event_store::commands::Outcome;
use pivotal_event_store::idempotency::{self, Claim};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Caller, IdempotencyKey};

/// A successful command response, storable for replay.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(HeaderName, String)>,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

fn request_hash(method_and_path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method_and_path.as_bytes());
    hasher.update([0]);
    // Hash the canonical JSON so that whitespace or key order do not matter.
    let canonical = serde_json::from_slice::<Value>(body)
        .map(|v| v.to_string().into_bytes())
        .unwrap_or_else(|_| body.to_vec());
    hasher.update(&canonical);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `command` once per idempotency key (or always, without a key).
/// `recover` rebuilds the reply from the events an earlier, abandoned attempt
/// with the same key appended.
pub async fn run<F, Fut, R>(
    state: &AppState,
    caller: &Caller,
    key: IdempotencyKey,
    method_and_path: &str,
    body: &[u8],
    command: F,
    recover: R,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
    R: FnOnce(String, Outcome) -> Reply,
{
    let Some(key) = key.0 else {
        return match command().await {
            Ok(reply) => reply.into_response(),
            Err(error) => error.into_response_for(path_of(method_and_path)),
        };
    };
    let organization = caller.0.claims.org;
    let hash = request_hash(method_and_path, body);
    let instance = path_of(method_and_path);
    match idempotency::claim(&state.pool, organization, &key, &hash).await {
        Err(e) => ApiError::from(e).into_response_for(instance),
        Ok(Claim::Mismatch) => ApiError::IdempotencyMismatch.into_response_for(instance),
        Ok(Claim::InProgress) => {
            let mut response = ApiError::IdempotencyInProgress.into_response_for(instance);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Ok(Claim::Replay {
            status,
            body,
            headers,
        }) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                Json(body),
            )
                .into_response();
            restore_headers(response.headers_mut(), &headers);
            response.headers_mut().insert(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            );
            response
        }
        Ok(claim @ (Claim::Acquired | Claim::Abandoned)) => {
            let earlier = if claim == Claim::Abandoned {
                match idempotency::appended_with_key(&state.pool, organization, &key).await {
                    Ok(found) => found,
                    Err(e) => return ApiError::from(e).into_response_for(instance),
                }
            } else {
                None
            };
            let result = match earlier {
                Some((aggregate_id, outcome)) => {
                    tracing::warn!(
                        key,
                        aggregate_id,
                        "answering an abandoned idempotent request from its events"
                    );
                    Ok(recover(aggregate_id, outcome))
                }
                None => command().await,
            };
            let (status, body, headers, response) = match result {
                Ok(reply) => {
                    let headers: Map<String, Value> = reply
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), Value::String(v.clone())))
                        .collect();
                    (
                        reply.status,
                        reply.body.clone(),
                        Value::Object(headers),
                        reply.into_response(),
                    )
                }
                Err(error) if error.status().is_server_error() => {
                    // Nothing was decided: free the key so a retry runs again.
                    if let Err(e) = idempotency::release(&state.pool, organization, &key).await {
                        tracing::error!(error = %e, "cannot release idempotency key");
                    }
                    return error.into_response_for(instance);
                }
                Err(error) => {
                    let status = error.status();
                    let body =
                        serde_json::to_value(error.problem(Some(instance))).unwrap_or(Value::Null);
                    let headers = serde_json::json!({"content-type": "application/problem+json"});
                    (status, body, headers, error.into_response_for(instance))
                }
            };
            if let Err(e) = idempotency::complete(
                &state.pool,
                organization,
                &key,
                status.as_u16(),
                &body,
                &headers,
            )
            .await
            {
                tracing::error!(error = %e, "cannot store idempotent response");
            }
            response
        }
    }
}

fn path_of(method_and_path: &str) -> &str {
    method_and_path
        .split_once(' ')
        .map_or(method_and_path, |(_, p)| p)
}

fn restore_headers(target: &mut HeaderMap, stored: &Value) {
    if let Value::Object(map) = stored {
        for (name, value) in map {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                target.insert(name, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::request_hash;

    #[test]
    fn hash_ignores_formatting_but_not_content() {
        let a = request_hash("POST /v1/customers", br#"{"a":1, "b":2}"#);
        let b = request_hash("POST /v1/customers", br#"{ "b": 2, "a": 1 }"#);
        let c = request_hash("POST /v1/customers", br#"{"a":1,"b":3}"#);
        let d = request_hash("PUT /v1/customers", br#"{"a":1,"b":2}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
