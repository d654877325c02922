//! Sign-up, sign-in and tokens (`/v1/auth/*`, no access token needed), the
//! caller's own password and MFA (`/v1/me/*`), and the public key set at
//! `/.well-known/jwks.json`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pivotal_domain::organization::{OrganizationSettings, QuoteSettings, TaxSettings};
use pivotal_domain::user::Profile;
use pivotal_domain::values::{Currency, Email, Name, Preferences, TimeZone, Validator};
use pivotal_identity::{AuthResult, LoginOutcome, MfaSetup, Origin, SecondFactor, SignUp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::access;
use crate::customers::validated;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, JsonBody, RequestMeta};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/auth/signup", post(sign_up))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/mfa/verify", post(verify_mfa))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/introspect", post(introspect))
        .route("/v1/auth/invitations/accept", post(accept_invitation))
        .route("/v1/me/password", post(change_password))
        .route("/v1/me/mfa", get(mfa_status))
        .route("/v1/me/mfa/totp", post(begin_mfa))
        .route("/v1/me/mfa/totp/confirm", post(confirm_mfa))
        .route("/v1/me/mfa/disable", post(disable_mfa))
        .route("/v1/me/mfa/recovery-codes", post(regenerate_codes))
}

pub(crate) fn origin(meta: &RequestMeta) -> Origin {
    Origin {
        metadata: pivotal_domain::envelope::EventMetadata {
            correlation_id: meta.correlation_id.clone(),
            causation_id: Some(meta.request_id.clone()),
            source: "command-api".into(),
            user_agent: meta.user_agent.clone(),
            ip_address: meta.ip_address.clone(),
        },
    }
}

/// Tokens must never be cached by intermediaries.
fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "The Ed25519 public keys that verify access tokens")))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.jwks.as_ref().clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The new organization.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignUpOrganization {
    #[schema(schema_with = crate::shapes::name)]
    pub name: String,
    /// ISO 4217, e.g. `NZD`.
    #[schema(schema_with = crate::shapes::currency)]
    pub default_currency: String,
    /// IANA time zone; default `UTC`.
    #[schema(schema_with = crate::shapes::organization_time_zone)]
    pub time_zone: Option<String>,
    /// 1 to 12; default 1 (January).
    #[schema(schema_with = crate::shapes::optional_month)]
    #[serde(default, deserialize_with = "crate::extract::optional_integer")]
    pub fiscal_year_start_month: Option<i64>,
}

/// The first owner.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignUpUser {
    #[schema(schema_with = crate::shapes::email)]
    pub email: String,
    /// At least 12 characters.
    #[schema(schema_with = crate::shapes::password)]
    pub password: String,
    #[schema(schema_with = crate::shapes::person_name)]
    pub first_name: String,
    #[schema(schema_with = crate::shapes::person_name)]
    pub last_name: String,
    #[schema(schema_with = crate::shapes::owner_time_zone)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignUpBody {
    pub organization: SignUpOrganization,
    pub user: SignUpUser,
}

/// `IAuthResult`: tokens and the signed-in user (never a secret of theirs).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthResultBody {
    pub access_token: String,
    /// Opaque; rotated on every use.
    pub refresh_token: String,
    pub token_type: String,
    /// Seconds the access token lives (3600).
    pub expires_in: i64,
    #[schema(value_type = Object)]
    pub user: serde_json::Value,
}

impl From<AuthResult> for AuthResultBody {
    fn from(r: AuthResult) -> Self {
        Self {
            access_token: r.access_token,
            refresh_token: r.refresh_token,
            token_type: r.token_type.to_owned(),
            expires_in: r.expires_in,
            user: serde_json::to_value(r.user).unwrap_or_default(),
        }
    }
}

#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = SignUpBody,
    responses(
        (status = 201, description = "Organization and owner created; signed in", body = AuthResultBody),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or weak password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address", body = Problem, content_type = "application/problem+json")))]
pub async fn sign_up(
    State(state): State<AppState>,
    meta: RequestMeta,
    body: JsonBody<SignUpBody>,
) -> Result<Response, ApiError> {
    let b = &body.value;
    let mut v = Validator::new();
    let org_name = v.check(Name::parse("/organization/name", &b.organization.name));
    let currency = v.check(Currency::parse(
        "/organization/defaultCurrency",
        &b.organization.default_currency,
    ));
    let org_tz = v.check(match &b.organization.time_zone {
        Some(tz) => TimeZone::parse("/organization/timeZone", tz),
        None => Ok(TimeZone::utc()),
    });
    let month = v.check(OrganizationSettings::validate_month(
        "/organization/fiscalYearStartMonth",
        b.organization.fiscal_year_start_month.unwrap_or(1),
    ));
    let email = v.check(Email::parse("/user/email", &b.user.email));
    let first = v.check(Name::parse_bounded(
        "/user/firstName",
        &b.user.first_name,
        Name::PERSON_MAX_CHARS,
    ));
    let last = v.check(Name::parse_bounded(
        "/user/lastName",
        &b.user.last_name,
        Name::PERSON_MAX_CHARS,
    ));
    let user_tz = v.check(match &b.user.time_zone {
        Some(tz) => TimeZone::parse("/user/timeZone", tz),
        None => Ok(org_tz.clone().unwrap_or_else(TimeZone::utc)),
    });
    let request = validated(v.finish(|| {
        Some(SignUp {
            organization_name: org_name?,
            settings: OrganizationSettings {
                default_currency: currency?,
                time_zone: org_tz?,
                fiscal_year_start_month: month?,
                tax: TaxSettings::default(),
                quotes: QuoteSettings::default(),
            },
            email: email?,
            password: b.user.password.clone(),
            profile: Profile {
                first_name: first?,
                last_name: last?,
                phone: None,
                time_zone: user_tz?,
                preferences: Preferences::default(),
            },
        })
    }))?;
    let result = state.identity.sign_up(request, &origin(&meta)).await?;
    Ok(no_store(StatusCode::CREATED, AuthResultBody::from(result)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

/// A correct password of a user with MFA: complete at `/v1/auth/mfa/verify`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaChallengeBody {
    pub mfa_required: bool,
    pub challenge: String,
    /// Seconds the challenge stays valid.
    pub expires_in: i64,
    pub methods: Vec<String>,
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in, or an MFA challenge (`mfaRequired: true`)", body = AuthResultBody),
        (status = 401, description = "Wrong email or password (the same answer for both)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Account deactivated or locked by an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited or temporarily locked after failures; see Retry-After", body = Problem, content_type = "application/problem+json")))]
pub async fn login(
    State(state): State<AppState>,
    meta: RequestMeta,
    body: JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    let outcome = state
        .identity
        .login(&body.value.email, &body.value.password, &origin(&meta))
        .await?;
    Ok(match outcome {
        LoginOutcome::Authenticated(result) => {
            no_store(StatusCode::OK, AuthResultBody::from(*result))
        }
        LoginOutcome::MfaRequired {
            challenge,
            expires_in,
        } => no_store(
            StatusCode::OK,
            MfaChallengeBody {
                mfa_required: true,
                challenge,
                expires_in,
                methods: vec!["totp".into(), "recovery_code".into()],
            },
        ),
    })
}

/// Exactly one of `code` (TOTP) and `recoveryCode`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyMfaBody {
    pub challenge: String,
    pub code: Option<String>,
    pub recovery_code: Option<String>,
}

fn factor(code: Option<&str>, recovery: Option<&str>) -> Result<SecondFactor, ApiError> {
    match (code, recovery) {
        (Some(c), None) => Ok(SecondFactor::Totp(c.to_owned())),
        (None, Some(r)) => Ok(SecondFactor::RecoveryCode(r.to_owned())),
        _ => Err(ApiError::Validation(vec![
            pivotal_domain::values::FieldError::new(
                "/code",
                "one_factor_required",
                "send exactly one of `code` and `recoveryCode`",
            ),
        ])),
    }
}

#[utoipa::path(post, path = "/v1/auth/mfa/verify", tag = "auth", request_body = VerifyMfaBody,
    responses(
        (status = 200, description = "Signed in with `mfa: true`", body = AuthResultBody),
        (status = 401, description = "Unknown, expired or used-up challenge", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong or replayed code", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address; see Retry-After (rate_limited)", body = Problem, content_type = "application/problem+json")))]
pub async fn verify_mfa(
    State(state): State<AppState>,
    meta: RequestMeta,
    body: JsonBody<VerifyMfaBody>,
) -> Result<Response, ApiError> {
    let b = &body.value;
    let second = factor(b.code.as_deref(), b.recovery_code.as_deref())?;
    let result = state
        .identity
        .verify_mfa(&b.challenge, second, &origin(&meta))
        .await?;
    Ok(no_store(StatusCode::OK, AuthResultBody::from(result)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses(
        (status = 200, description = "New access and refresh tokens; the old refresh token is spent", body = AuthResultBody),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token (reuse revokes the session)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address; see Retry-After (rate_limited)", body = Problem, content_type = "application/problem+json")))]
pub async fn refresh(
    State(state): State<AppState>,
    meta: RequestMeta,
    body: JsonBody<RefreshBody>,
) -> Result<Response, ApiError> {
    let result = state
        .identity
        .refresh(&body.value.refresh_token, &origin(&meta))
        .await?;
    Ok(no_store(StatusCode::OK, AuthResultBody::from(result)))
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshBody,
    responses((status = 204, description = "The session is revoked (also for unknown tokens, as RFC 7009 asks)")))]
pub async fn logout(
    State(state): State<AppState>,
    meta: RequestMeta,
    body: JsonBody<RefreshBody>,
) -> Result<StatusCode, ApiError> {
    state
        .identity
        .logout(&body.value.refresh_token, &origin(&meta))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntrospectBody {
    pub token: String,
}

#[utoipa::path(post, path = "/v1/auth/introspect", tag = "auth", request_body = IntrospectBody,
    responses(
        (status = 200, description = "`active` and, when active, the token's claims (RFC 7662)"),
        (status = 429, description = "Too many requests from this address; see Retry-After (rate_limited)", body = Problem, content_type = "application/problem+json")))]
pub async fn introspect(
    State(state): State<AppState>,
    meta: RequestMeta,
    body: JsonBody<IntrospectBody>,
) -> Result<Response, ApiError> {
    if let pivotal_identity::limits::Limit::Exceeded { retry_after_secs } = state
        .identity
        .limits()
        .hit_ip(&origin(&meta).ip())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
    {
        return Err(ApiError::Refused {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: "too many requests; try again later".into(),
            retry_after_secs: Some(retry_after_secs),
        });
    }
    let validation = state.identity.validate_token(&body.value.token).await?;
    Ok(no_store(StatusCode::OK, validation))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcceptInvitationBody {
    pub token: String,
    #[schema(schema_with = crate::shapes::password)]
    pub password: String,
}

#[utoipa::path(post, path = "/v1/auth/invitations/accept", tag = "auth", request_body = AcceptInvitationBody,
    responses(
        (status = 200, description = "Password set; signed in", body = AuthResultBody),
        (status = 401, description = "Invalid, expired or used invitation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Weak password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address; see Retry-After (rate_limited)", body = Problem, content_type = "application/problem+json")))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    meta: RequestMeta,
    body: JsonBody<AcceptInvitationBody>,
) -> Result<Response, ApiError> {
    let result = state
        .identity
        .accept_invitation(&body.value.token, &body.value.password, &origin(&meta))
        .await?;
    Ok(no_store(StatusCode::OK, AuthResultBody::from(result)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangePasswordBody {
    pub current_password: String,
    #[schema(schema_with = crate::shapes::password)]
    pub new_password: String,
}

#[utoipa::path(post, path = "/v1/me/password", tag = "me", request_body = ChangePasswordBody,
    responses(
        (status = 204, description = "Changed; every session of the user is revoked"),
        (status = 403, description = "The organization requires an MFA token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong current password or weak new one", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: JsonBody<ChangePasswordBody>,
) -> Result<StatusCode, ApiError> {
    access::sensitive(&state, &caller).await?;
    state
        .identity
        .change_password(
            caller.0.actor(),
            &body.value.current_password,
            &body.value.new_password,
            &origin(&meta),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An empty object.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// The caller's multi-factor authentication.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaStatusBody {
    pub enabled: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: i64,
}

#[utoipa::path(get, path = "/v1/me/mfa", tag = "me",
    responses((status = 200, body = MfaStatusBody)),
    security(("bearer" = [])))]
pub async fn mfa_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MfaStatusBody>, ApiError> {
    let actor = caller.0.actor();
    let user = state
        .identity
        .user(actor.organization_id, actor.user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(MfaStatusBody {
        enabled: user.mfa_enabled,
        recovery_codes_left: state.identity.recovery_codes_left(actor.user_id).await?,
    }))
}

/// TOTP set-up, shown once: add it to an authenticator app, then confirm.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaSetupBody {
    /// Base32 secret for manual entry.
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as a QR code (SVG).
    pub qr_code_svg: String,
}

impl From<MfaSetup> for MfaSetupBody {
    fn from(s: MfaSetup) -> Self {
        Self {
            secret: s.secret,
            otpauth_uri: s.otpauth_uri,
            qr_code_svg: s.qr_code_svg,
        }
    }
}

#[utoipa::path(post, path = "/v1/me/mfa/totp", tag = "me", request_body = EmptyBody,
    responses(
        (status = 200, description = "A new pending TOTP secret", body = MfaSetupBody),
        (status = 409, description = "MFA already enabled", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn begin_mfa(
    State(state): State<AppState>,
    caller: Caller,
    _body: JsonBody<EmptyBody>,
) -> Result<Response, ApiError> {
    let setup = state.identity.begin_mfa(caller.0.actor()).await?;
    Ok(no_store(StatusCode::OK, MfaSetupBody::from(setup)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CodeBody {
    /// A current 6-digit TOTP code.
    pub code: String,
}

/// Single-use recovery codes, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryCodesBody {
    pub recovery_codes: Vec<String>,
}

#[utoipa::path(post, path = "/v1/me/mfa/totp/confirm", tag = "me", request_body = CodeBody,
    responses(
        (status = 200, description = "MFA enabled; 10 recovery codes", body = RecoveryCodesBody),
        (status = 409, description = "No enrolment started, or already enabled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong code", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn confirm_mfa(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: JsonBody<CodeBody>,
) -> Result<Response, ApiError> {
    let codes = state
        .identity
        .confirm_mfa(caller.0.actor(), &body.value.code, &origin(&meta))
        .await?;
    Ok(no_store(
        StatusCode::OK,
        RecoveryCodesBody {
            recovery_codes: codes,
        },
    ))
}

/// Exactly one of `code` (TOTP) and `recoveryCode`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisableMfaBody {
    pub code: Option<String>,
    pub recovery_code: Option<String>,
}

#[utoipa::path(post, path = "/v1/me/mfa/disable", tag = "me", request_body = DisableMfaBody,
    responses(
        (status = 204, description = "MFA disabled"),
        (status = 403, description = "The organization requires an MFA token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA not enabled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong or replayed code", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn disable_mfa(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: JsonBody<DisableMfaBody>,
) -> Result<StatusCode, ApiError> {
    access::sensitive(&state, &caller).await?;
    let second = factor(
        body.value.code.as_deref(),
        body.value.recovery_code.as_deref(),
    )?;
    state
        .identity
        .disable_mfa(caller.0.actor(), second, &origin(&meta))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/me/mfa/recovery-codes", tag = "me", request_body = CodeBody,
    responses(
        (status = 200, description = "New recovery codes; the old ones no longer work", body = RecoveryCodesBody),
        (status = 409, description = "MFA not enabled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong code", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn regenerate_codes(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: JsonBody<CodeBody>,
) -> Result<Response, ApiError> {
    let codes = state
        .identity
        .regenerate_recovery_codes(caller.0.actor(), &body.value.code, &origin(&meta))
        .await?;
    Ok(no_store(
        StatusCode::OK,
        RecoveryCodesBody {
            recovery_codes: codes,
        },
    ))
}
