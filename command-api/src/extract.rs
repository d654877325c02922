//! Extractors: the authenticated caller, JSON bodies with precise errors
//! (every struct in them read only from a JSON object, [`object_only`]),
//! request metadata for the event envelope, `If-Match` and `Idempotency-Key`;
//! and the bodies' date and time fields, read with errors that say how to
//! write one.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use chrono::{DateTime, NaiveDate, Utc};
use pivotal_auth::Principal;
use pivotal_domain::envelope::{CommandContext, EventMetadata};
use pivotal_domain::permissions::Permission;
use pivotal_domain::pricing::Discount;
use pivotal_domain::values::FieldError;
use rust_decimal::Decimal;
use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;
use crate::{AppState, CORRELATION_ID, REQUEST_ID};

pub mod object_only;

use object_only::ObjectOnly;

/// The verified caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.0.has(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(permission.to_string()))
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| ApiError::Unauthenticated(pivotal_auth::AuthError::Malformed))?,
            ),
        };
        let principal = state.verifier.verify_header(header).await?;
        if state
            .identity
            .revocations()
            .is_revoked(&principal.claims)
            .await
            .map_err(|e| ApiError::Unavailable(format!("redis: {e}")))?
        {
            return Err(ApiError::Unauthenticated(pivotal_auth::AuthError::Revoked));
        }
        Ok(Self(principal))
    }
}

/// Where a request came from, for the event metadata.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub correlation_id: String,
    pub request_id: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub idempotency_key: Option<String>,
}

impl RequestMeta {
    pub fn context(&self, caller: &Caller) -> CommandContext {
        CommandContext {
            idempotency_key: self.idempotency_key.clone(),
            actor: caller.0.actor(),
            timestamp: chrono::Utc::now(),
            metadata: EventMetadata {
                correlation_id: self.correlation_id.clone(),
                causation_id: Some(self.request_id.clone()),
                source: "command-api".into(),
                user_agent: self.user_agent.clone(),
                ip_address: self.ip_address.clone(),
            },
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let text = |name: &axum::http::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Self {
            correlation_id: text(&CORRELATION_ID).unwrap_or_default(),
            request_id: text(&REQUEST_ID).unwrap_or_default(),
            user_agent: text(&header::USER_AGENT).map(|ua| ua.chars().take(512).collect()),
            ip_address: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_string()),
            // Validated by the `IdempotencyKey` extractor of the same request.
            idempotency_key: text(&axum::http::HeaderName::from_static("idempotency-key")),
        })
    }
}

/// `If-Match: "N"`: the aggregate version the caller expects.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let bad = || ApiError::BadHeader {
            header: "If-Match",
            detail: "must be an ETag returned by this API, such as \"3\"".into(),
        };
        let raw = value.to_str().map_err(|_| bad())?.trim();
        let raw = raw.strip_prefix("W/").unwrap_or(raw);
        let unquoted = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        unquoted
            .parse::<u64>()
            .map(|v| Self(Some(v)))
            .map_err(|_| bad())
    }
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        match value.to_str() {
            Ok(v) if !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(Self(Some(v.to_owned())))
            }
            _ => Err(ApiError::BadHeader {
                header: "Idempotency-Key",
                detail: "must be 1 to 255 visible ASCII characters".into(),
            }),
        }
    }
}

/// A JSON request body with its raw bytes (for idempotency hashing).
///
/// Wrong media type: 415. Over the size limit: 413. Not JSON: 400. JSON of
/// the wrong shape (missing or unknown fields, wrong types): 422 with the
/// JSON pointer of the offending field.
#[derive(Debug)]
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| {
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let raw = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else if let Some(late) = pivotal_telemetry::body::timed_out(&rejection) {
                    ApiError::BodyTimedOut(late)
                } else {
                    ApiError::UnreadableBody(rejection.body_text())
                }
            })?;
        let value = parse_json(&raw)?;
        Ok(Self { value, raw })
    }
}

/// Parses a JSON object, telling syntax errors (400) from shape errors
/// (422; a body that is not an object among them, and a nested struct given
/// as anything but an object).
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so that truncated or garbled bodies are 400.
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    // Every body is an object: serde would read a struct from an array of
    // its fields in order, and its message for `null` names a Rust type.
    if !value.is_object() {
        return Err(ApiError::Validation(vec![FieldError::new(
            String::new(),
            "invalid_type",
            "the body must be a JSON object",
        )]));
    }
    // No string may hold U+0000: PostgreSQL's text and jsonb cannot, so
    // one would be accepted here and then refused by every read model.
    let mut nul = Vec::new();
    find_nul(&value, &mut String::new(), &mut nul);
    if !nul.is_empty() {
        return Err(ApiError::Validation(nul));
    }
    // A nested struct, too, is read only from an object.
    serde_path_to_error::deserialize(ObjectOnly(value)).map_err(|error| {
        let pointer = pointer_of(error.path());
        let inner = error.into_inner().to_string();
        let code = if inner.starts_with("missing field") {
            "required"
        } else if inner.starts_with("unknown field") {
            "unknown_field"
        } else {
            "invalid_type"
        };
        let pointer = match (code, inner.split('`').nth(1)) {
            // For a missing field the path names its parent object.
            ("required", Some(field)) => {
                format!("{}/{field}", pointer.trim_end_matches('/'))
            }
            _ => pointer,
        };
        ApiError::Validation(vec![FieldError::new(pointer, code, inner)])
    })
}

/// Every string of `value` (object keys too) holding U+0000, as an error
/// at its JSON pointer.
fn find_nul(value: &serde_json::Value, pointer: &mut String, found: &mut Vec<FieldError>) {
    let refuse = |pointer: &str, found: &mut Vec<FieldError>| {
        found.push(FieldError::new(
            pointer,
            "invalid_characters",
            "must not contain the NUL character (U+0000)",
        ));
    };
    match value {
        serde_json::Value::String(text) if text.contains('\0') => refuse(pointer, found),
        serde_json::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{index}"));
                find_nul(item, pointer, found);
                pointer.truncate(len);
            }
        }
        serde_json::Value::Object(fields) => {
            for (key, item) in fields {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if key.contains('\0') {
                    refuse(pointer, found);
                } else {
                    find_nul(item, pointer, found);
                }
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { variant } => pointer.push_str(&format!("/{variant}")),
            Segment::Unknown => {}
        }
    }
    pointer
}

/// A calendar date written `YYYY-MM-DD` (for `deserialize_with`), refused
/// with a message that says how to write one.
pub fn date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveDate, D::Error> {
    parse_date(String::deserialize(deserializer)?)
}

/// [`date`], for a field that may be absent or null (with `default`).
pub fn optional_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<NaiveDate>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(parse_date)
        .transpose()
}

/// A decimal number written as a JSON string (for `deserialize_with`):
/// digits with an optional fraction, `-` allowed so that a negative value
/// meets the check that says why it is refused. A JSON number is refused:
/// amounts travel as strings, which no client rounds.
pub fn decimal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    parse_decimal(String::deserialize(deserializer)?)
}

/// [`decimal`], for a field that may be absent or null (with `default`).
pub fn optional_decimal<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Decimal>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(parse_decimal)
        .transpose()
}

fn parse_decimal<E: de::Error>(text: String) -> Result<Decimal, E> {
    let digits = text.strip_prefix('-').unwrap_or(&text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    let plain = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if plain(whole)
        && plain(fraction)
        && let Ok(value) = Decimal::from_str_exact(&text)
    {
        return Ok(value);
    }
    Err(E::custom(format!(
        "{text:?} is not a decimal number written as a string, such as \"12.50\""
    )))
}

/// A discount as a request writes it (for `deserialize_with`, a field
/// that may be absent or null): `{"type": "percent" | "amount", "value":
/// "<decimal>"}`, its value read as [`decimal`] reads one.
pub fn optional_discount<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Discount>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        tag = "type",
        content = "value",
        rename_all = "snake_case",
        deny_unknown_fields
    )]
    enum Written {
        Percent(#[serde(deserialize_with = "decimal")] Decimal),
        Amount(#[serde(deserialize_with = "decimal")] Decimal),
    }
    Ok(
        Option::<Written>::deserialize(deserializer)?.map(|written| match written {
            Written::Percent(value) => Discount::Percent(value),
            Written::Amount(value) => Discount::Amount(value),
        }),
    )
}

/// A JSON number that is an integer (for `deserialize_with`): `7` and
/// `7.0` alike, as JSON Schema's `integer` counts them; a fraction, or a
/// number beyond `i64`, is refused.
pub fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    whole(serde_json::Number::deserialize(deserializer)?)
}

/// [`integer`], for a field that may be absent or null (with `default`).
pub fn optional_integer<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(whole)
        .transpose()
}

fn whole<E: de::Error>(number: serde_json::Number) -> Result<i64, E> {
    if let Some(value) = number.as_i64() {
        return Ok(value);
    }
    number
        .as_f64()
        .filter(|value| value.fract() == 0.0 && value.abs() < 9.0e15)
        .map(|value| value as i64)
        .ok_or_else(|| E::custom(format!("{number} is not a whole number within range")))
}

/// A point in time written as RFC 3339 (for `deserialize_with`, a field
/// that may be absent or null), refused with a message that says how to
/// write one.
pub fn optional_time<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| {
            text.parse().map_err(|_| {
                de::Error::custom(format!(
                    "{text:?} is not a time written as RFC 3339, such as 2026-12-31T17:00:00Z"
                ))
            })
        })
        .transpose()
}

fn parse_date<E: de::Error>(text: String) -> Result<NaiveDate, E> {
    text.parse().map_err(|_| {
        E::custom(format!(
            "{text:?} is not a calendar date written YYYY-MM-DD, such as 2026-12-31"
        ))
    })
}
