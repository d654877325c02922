//! Every error of the command API, mapped to a status and an
//! `application/problem+json` body (RFC 9457) in exactly one place.

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use pivotal_domain::customer::CustomerError;
use pivotal_domain::organization::OrganizationError;
use pivotal_domain::user::UserError;
use pivotal_domain::values::FieldError;
use pivotal_event_store::commands::ExecuteError;
use pivotal_identity::IdentityError;
use serde::Serialize;
use utoipa::ToSchema;

/// A problem details body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// URI reference naming the problem type, e.g. `/problems/validation_failed`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Stable machine-readable code.
    pub code: String,
    /// Field-level errors (validation only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    /// The aggregate's current version (version conflicts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemField {
    /// JSON pointer into the request body.
    pub pointer: String,
    pub code: String,
    pub message: String,
}

impl From<FieldError> for ProblemField {
    fn from(e: FieldError) -> Self {
        Self {
            pointer: e.pointer,
            code: e.code.to_owned(),
            message: e.message,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body could not be read to its end: the connection broke off
    /// before the length its head promised had arrived, or hyper could not
    /// make out its framing.
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    /// The query string is not of the operation's form: a parameter given
    /// twice, or one the operation does not take in the form it takes.
    #[error("the query string is invalid: {0}")]
    InvalidQuery(String),
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("authentication failed: {0}")]
    Unauthenticated(#[from] pivotal_auth::AuthError),
    #[error("the token does not grant {0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("no such route")]
    NoRoute,
    #[error("{0} is not a method of this route; the Allow header lists the ones it takes")]
    MethodNotAllowed(Method),
    #[error("version conflict")]
    VersionConflict { expected: u64, current: u64 },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the request body is larger than the limit")]
    TooLarge,
    #[error(transparent)]
    BodyTimedOut(pivotal_telemetry::body::BodyTimedOut),
    #[error(transparent)]
    EventTooLarge(pivotal_event_store::commands::TooLarge),
    #[error("requests must be sent as application/json")]
    UnsupportedMediaType,
    #[error("invalid {header} header: {detail}")]
    BadHeader {
        header: &'static str,
        detail: String,
    },
    #[error("the idempotency key was used with a different request")]
    IdempotencyMismatch,
    #[error("a request with this idempotency key is still being processed")]
    IdempotencyInProgress,
    #[error("{message}")]
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
        retry_after_secs: Option<u64>,
    },
    #[error("this operation needs a token obtained with multi-factor authentication")]
    MfaRequired,
    #[error("a backing service is unavailable; retry shortly")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON"),
            Self::InvalidQuery(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "Invalid query string",
            ),
            Self::UnreadableBody(_) => (
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "Unreadable body",
            ),
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Validation failed",
            ),
            Self::Unauthenticated(e) => (StatusCode::UNAUTHORIZED, e.code(), "Unauthenticated"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            Self::NoRoute => (StatusCode::NOT_FOUND, "route_not_found", "Not found"),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            Self::VersionConflict { .. } => {
                (StatusCode::CONFLICT, "version_conflict", "Version conflict")
            }
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code, "Conflict"),
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            Self::BodyTimedOut(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "Request timeout",
            ),
            Self::EventTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "event_too_large",
                "Change too large",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            Self::BadHeader { .. } => (StatusCode::BAD_REQUEST, "invalid_header", "Invalid header"),
            Self::IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
            Self::IdempotencyInProgress => (
                StatusCode::CONFLICT,
                "idempotency_key_in_progress",
                "Request in progress",
            ),
            Self::Refused { status, code, .. } => (
                *status,
                code,
                status.canonical_reason().unwrap_or("Refused"),
            ),
            Self::MfaRequired => (StatusCode::FORBIDDEN, "mfa_required", "Forbidden"),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal error",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn problem(&self, instance: Option<&str>) -> Problem {
        let (status, code, title) = self.parts();
        let code = match self {
            Self::NotFound(what) => format!("{what}_not_found"),
            _ => code.to_owned(),
        };
        let detail = match self {
            // Internal causes are logged, never shown.
            Self::Internal(_) | Self::Unavailable(_) => {
                "the request could not be completed; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        Problem {
            problem_type: format!("/problems/{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            instance: instance.map(str::to_owned),
            code,
            errors: match self {
                Self::Validation(errors) => {
                    errors.iter().cloned().map(ProblemField::from).collect()
                }
                _ => Vec::new(),
            },
            current_version: match self {
                Self::VersionConflict { current, .. } => Some(*current),
                _ => None,
            },
        }
    }

    pub fn into_response_for(self, instance: &str) -> Response {
        self.into_problem_response(Some(instance))
    }

    fn into_problem_response(self, instance: Option<&str>) -> Response {
        match &self {
            Self::Internal(cause) => tracing::error!(error = %cause, "request failed"),
            Self::Unavailable(cause) => {
                tracing::warn!(error = %cause, "backing service unavailable")
            }
            _ => {}
        }
        let problem = self.problem(instance);
        let mut response = (self.status(), Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status() == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let retry_after = match &self {
            Self::Refused {
                retry_after_secs, ..
            } => *retry_after_secs,
            Self::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Self::VersionConflict { current, .. } = self
            && let Ok(value) = HeaderValue::from_str(&format!("\"{current}\""))
        {
            headers.insert(header::ETAG, value);
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_problem_response(None)
    }
}

impl From<CustomerError> for ApiError {
    fn from(error: CustomerError) -> Self {
        match error {
            CustomerError::NotFound => Self::NotFound("customer"),
            CustomerError::ReasonTooLong => Self::Validation(vec![FieldError::new(
                "/reason",
                "too_long",
                error.to_string(),
            )]),
            other => Self::Conflict {
                code: other.code(),
                message: other.to_string(),
            },
        }
    }
}

impl<E> From<ExecuteError<E>> for ApiError
where
    E: std::error::Error + Into<ApiError>,
{
    fn from(error: ExecuteError<E>) -> Self {
        match error {
            ExecuteError::Domain(e) => e.into(),
            ExecuteError::VersionConflict { expected, current } => {
                Self::VersionConflict { expected, current }
            }
            ExecuteError::Store(cause) => Self::Internal(cause),
            ExecuteError::Unavailable(cause) => Self::Unavailable(cause),
            ExecuteError::TooLarge(too_large) => Self::EventTooLarge(too_large),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        match error {
            UserError::NotFound => Self::NotFound("user"),
            UserError::InvalidReason => Self::Validation(vec![FieldError::new(
                "/reason",
                error.code(),
                error.to_string(),
            )]),
            UserError::LockInPast => Self::Validation(vec![FieldError::new(
                "/until",
                error.code(),
                error.to_string(),
            )]),
            UserError::SelfAction => {
                Self::refused(StatusCode::FORBIDDEN, error.code(), error.to_string())
            }
            other => Self::Conflict {
                code: other.code(),
                message: other.to_string(),
            },
        }
    }
}

impl From<OrganizationError> for ApiError {
    fn from(error: OrganizationError) -> Self {
        match error {
            OrganizationError::NotFound => Self::NotFound("organization"),
            OrganizationError::RoleNotFound(_) => Self::NotFound("role"),
            other => Self::Conflict {
                code: other.code(),
                message: other.to_string(),
            },
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(error: IdentityError) -> Self {
        use StatusCode as S;
        let message = error.to_string();
        let refuse = |status, code: &'static str| Self::refused(status, code, message.clone());
        match error {
            IdentityError::Validation(errors) => Self::Validation(errors),
            IdentityError::InvalidCredentials => refuse(S::UNAUTHORIZED, "invalid_credentials"),
            IdentityError::WrongCurrentPassword => Self::Validation(vec![FieldError::new(
                "/currentPassword",
                "invalid_current_password",
                message,
            )]),
            IdentityError::AccountLocked { .. } => refuse(S::FORBIDDEN, "account_locked"),
            IdentityError::AccountDeactivated => refuse(S::FORBIDDEN, "account_deactivated"),
            IdentityError::TooManyAttempts { retry_after_secs } => Self::Refused {
                status: S::TOO_MANY_REQUESTS,
                code: "account_temporarily_locked",
                message,
                retry_after_secs: Some(retry_after_secs),
            },
            IdentityError::RateLimited { retry_after_secs } => Self::Refused {
                status: S::TOO_MANY_REQUESTS,
                code: "rate_limited",
                message,
                retry_after_secs: Some(retry_after_secs),
            },
            IdentityError::EmailTaken => Self::Conflict {
                code: "email_taken",
                message,
            },
            IdentityError::InvalidRefreshToken => refuse(S::UNAUTHORIZED, "invalid_refresh_token"),
            IdentityError::RefreshTokenReused => refuse(S::UNAUTHORIZED, "refresh_token_reused"),
            IdentityError::InvalidChallenge => refuse(S::UNAUTHORIZED, "invalid_mfa_challenge"),
            IdentityError::InvalidCode => {
                Self::Validation(vec![FieldError::new("/code", "invalid_mfa_code", message)])
            }
            IdentityError::NoPendingEnrolment => Self::Conflict {
                code: "mfa_enrolment_not_started",
                message,
            },
            IdentityError::InvalidInvitation => refuse(S::UNAUTHORIZED, "invalid_invitation"),
            IdentityError::User(e) => e.into(),
            IdentityError::Organization(e) => e.into(),
            IdentityError::Conflict => Self::Conflict {
                code: "concurrent_modification",
                message,
            },
            IdentityError::Unavailable(cause) => Self::Unavailable(cause),
            IdentityError::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if pivotal_event_store::commands::is_unavailable(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

/// Fallback for unknown routes.
pub async fn not_found(uri: Uri) -> Response {
    ApiError::NoRoute.into_response_for(uri.path())
}

/// Fallback for a known route asked with a method it does not take; the
/// router adds the `Allow` header.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::MethodNotAllowed(method).into_response_for(uri.path())
}
