//! `/v1/organization` (the caller's tenant: name, settings, security
//! policy), `/v1/roles` (built-in and custom roles) and
//! `/v1/permissions/check` (`checkPermission`).

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use pivotal_domain::organization::{
    CustomRole, Organization, OrganizationCommand, OrganizationSettings, OrganizationState,
    QuoteSettings, SecurityPolicy, TaxSettings,
};
use pivotal_domain::permissions::{
    Decision, Grant, Permission, RoleDefinition, Subject, built_in_roles, evaluate,
};
use pivotal_domain::values::{Currency, FieldError, Name, TaxNumber, TimeZone, Validator};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::access;
use crate::customers::{accepted_in, optional, validated};
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, IfMatch, JsonBody, RequestMeta};
use crate::idempotent::Reply;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/organization", get(get_organization))
        .route("/v1/organization/rename", post(rename))
        .route("/v1/organization/settings", put(change_settings))
        .route("/v1/organization/security-policy", put(change_policy))
        .route("/v1/roles", get(list_roles))
        .route("/v1/roles/{key}", put(put_role).delete(remove_role))
        .route("/v1/permissions/check", post(check_permission))
}

async fn load(state: &AppState, caller: &Caller) -> Result<(OrganizationState, u64), ApiError> {
    let (org, version): (Organization, u64) = state
        .identity
        .organizations()
        .load(&caller.0.claims.org.to_string())
        .await?;
    let found = org
        .visible_to(&caller.0.actor())
        .cloned()
        .ok_or(ApiError::NotFound("organization"))?;
    Ok((found, version))
}

async fn execute(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    expected: IfMatch,
    command: OrganizationCommand,
) -> Result<Response, ApiError> {
    let id = caller.0.claims.org;
    let outcome = state
        .identity
        .organizations()
        .execute(&id.to_string(), expected.0, command, &meta.context(caller))
        .await?;
    Ok(accepted_in("/v1/organization", StatusCode::OK, id, &outcome).into_response())
}

/// The organization as the write side knows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationBody {
    pub id: Uuid,
    pub version: u64,
    pub name: String,
    #[schema(value_type = Object)]
    pub settings: OrganizationSettings,
    #[schema(value_type = Object)]
    pub security_policy: SecurityPolicy,
}

#[utoipa::path(get, path = "/v1/organization", tag = "organization",
    responses((status = 200, body = OrganizationBody), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_organization(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(Permission::ORGANIZATION_READ)?;
    let (org, version) = load(&state, &caller).await?;
    let body = OrganizationBody {
        id: org.id,
        version,
        name: org.name.as_str().to_owned(),
        settings: org.settings,
        security_policy: org.policy,
    };
    Ok(Reply {
        status: StatusCode::OK,
        body: serde_json::to_value(body).unwrap_or_default(),
        headers: vec![(header::ETAG, format!("\"{version}\""))],
    }
    .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationNameBody {
    #[schema(schema_with = crate::shapes::name)]
    pub name: String,
}

#[utoipa::path(post, path = "/v1/organization/rename", tag = "organization", request_body = OrganizationNameBody,
    params(("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Renamed"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    body: JsonBody<OrganizationNameBody>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ORGANIZATION_UPDATE)?;
    let name = validated(Name::parse("/name", &body.value.name).map_err(|e| vec![e]))?;
    let command = OrganizationCommand::Rename {
        actor: caller.0.actor(),
        name,
    };
    execute(&state, &caller, &meta, expected, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaxBody {
    #[schema(schema_with = crate::shapes::tax_number_or_blank)]
    pub registration_number: Option<String>,
    /// Basis points: 1500 = 15%.
    #[schema(schema_with = crate::shapes::basis_points)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub default_rate_basis_points: i64,
    pub prices_include_tax: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsBody {
    #[schema(schema_with = crate::shapes::currency)]
    pub default_currency: String,
    #[schema(schema_with = crate::shapes::time_zone)]
    pub time_zone: String,
    #[schema(schema_with = crate::shapes::month)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub fiscal_year_start_month: i64,
    pub tax: TaxBody,
    /// Unchanged when absent.
    pub quotes: Option<QuoteSettingsBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuoteSettingsBody {
    #[schema(schema_with = crate::shapes::approval_threshold)]
    #[serde(deserialize_with = "crate::extract::decimal")]
    pub approval_threshold: rust_decimal::Decimal,
    /// 1 to 365.
    #[schema(schema_with = crate::shapes::validity_days)]
    #[serde(deserialize_with = "crate::extract::integer")]
    pub validity_days: i64,
    pub default_rate_card_id: Option<Uuid>,
}

#[utoipa::path(put, path = "/v1/organization/settings", tag = "organization", request_body = SettingsBody,
    params(("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Changed"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn change_settings(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    body: JsonBody<SettingsBody>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ORGANIZATION_UPDATE)?;
    let (current, _) = load(&state, &caller).await?;
    let b = &body.value;
    let mut v = Validator::new();
    let quotes = match &b.quotes {
        None => Some(current.settings.quotes.clone()),
        Some(q) => {
            if q.approval_threshold < rust_decimal::Decimal::ZERO {
                v.push(FieldError::new(
                    "/quotes/approvalThreshold",
                    "negative",
                    "the approval threshold is not negative",
                ));
            }
            let days = v.check(
                u16::try_from(q.validity_days)
                    .ok()
                    .filter(|d| (1..=365).contains(d))
                    .ok_or_else(|| {
                        FieldError::new(
                            "/quotes/validityDays",
                            "out_of_range",
                            "must be 1 to 365 days",
                        )
                    }),
            );
            days.map(|validity_days| QuoteSettings {
                approval_threshold: q.approval_threshold,
                validity_days,
                default_rate_card_id: q.default_rate_card_id,
            })
        }
    };
    let currency = v.check(Currency::parse("/defaultCurrency", &b.default_currency));
    let tz = v.check(TimeZone::parse("/timeZone", &b.time_zone));
    let month = v.check(OrganizationSettings::validate_month(
        "/fiscalYearStartMonth",
        b.fiscal_year_start_month,
    ));
    let registration = v.check(optional(b.tax.registration_number.as_deref(), |raw| {
        TaxNumber::parse("/tax/registrationNumber", raw)
    }));
    let rate = v.check(OrganizationSettings::validate_rate(
        "/tax/defaultRateBasisPoints",
        b.tax.default_rate_basis_points,
    ));
    let settings = validated(v.finish(|| {
        Some(OrganizationSettings {
            default_currency: currency?,
            time_zone: tz?,
            fiscal_year_start_month: month?,
            tax: TaxSettings {
                registration_number: registration?,
                default_rate_basis_points: rate?,
                prices_include_tax: b.tax.prices_include_tax,
            },
            quotes: quotes?,
        })
    }))?;
    let command = OrganizationCommand::ChangeSettings {
        actor: caller.0.actor(),
        settings,
    };
    execute(&state, &caller, &meta, expected, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyBody {
    pub require_mfa_for_sensitive_operations: bool,
}

#[utoipa::path(put, path = "/v1/organization/security-policy", tag = "organization", request_body = PolicyBody,
    params(("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Changed"), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn change_policy(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    body: JsonBody<PolicyBody>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ORGANIZATION_UPDATE)?;
    access::sensitive(&state, &caller).await?;
    let command = OrganizationCommand::ChangeSecurityPolicy {
        actor: caller.0.actor(),
        policy: SecurityPolicy {
            require_mfa_for_sensitive_operations: body.value.require_mfa_for_sensitive_operations,
        },
    };
    execute(&state, &caller, &meta, expected, command).await
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolesBody {
    #[schema(value_type = Vec<Object>)]
    pub roles: Vec<RoleDefinition>,
}

#[utoipa::path(get, path = "/v1/roles", tag = "roles",
    responses((status = 200, description = "Built-in roles, then the organization's own", body = RolesBody)),
    security(("bearer" = [])))]
pub async fn list_roles(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RolesBody>, ApiError> {
    caller.require(Permission::ROLES_READ)?;
    let (org, _) = load(&state, &caller).await?;
    let mut roles = built_in_roles();
    roles.extend(org.roles.iter().map(CustomRole::definition));
    Ok(Json(RolesBody { roles }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleBody {
    #[schema(schema_with = crate::shapes::role_name)]
    pub name: String,
    #[schema(schema_with = crate::shapes::role_description)]
    pub description: Option<String>,
    #[schema(schema_with = crate::shapes::grants)]
    pub grants: Vec<Grant>,
}

#[utoipa::path(put, path = "/v1/roles/{key}", tag = "roles", request_body = RoleBody,
    params(("key" = String, Path, description = "Lowercase key, e.g. sales-lead"), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Defined or redefined"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Reserved or invalid key, invalid grants", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_role(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(key): Path<String>,
    body: JsonBody<RoleBody>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ROLES_MANAGE)?;
    let b = &body.value;
    let role = CustomRole::validate(&key, &b.name, b.description.clone(), b.grants.clone());
    let role = validated(role)?;
    let command = OrganizationCommand::PutRole {
        actor: caller.0.actor(),
        role,
    };
    execute(&state, &caller, &meta, expected, command).await
}

#[utoipa::path(delete, path = "/v1/roles/{key}", tag = "roles",
    params(("key" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Removed; users keep the key but it grants nothing"),
        (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn remove_role(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ROLES_MANAGE)?;
    let command = OrganizationCommand::RemoveRole {
        actor: caller.0.actor(),
        key,
    };
    execute(&state, &caller, &meta, expected, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckBody {
    /// Default: the caller.
    pub user_id: Option<Uuid>,
    #[schema(schema_with = crate::shapes::identifier)]
    pub resource: String,
    #[schema(schema_with = crate::shapes::identifier)]
    pub action: String,
    /// Attributes the conditions are evaluated against.
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub allowed: bool,
    /// `granted`, `no_grant` or `conditions_not_met`.
    pub reason: String,
    /// The role whose grant allowed it.
    pub granted_by: Option<String>,
}

#[utoipa::path(post, path = "/v1/permissions/check", tag = "roles", request_body = CheckBody,
    responses((status = 200, body = CheckResult),
        (status = 403, description = "Checking another user needs users:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn check_permission(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody<CheckBody>,
) -> Result<Json<CheckResult>, ApiError> {
    let b = &body.value;
    let mut errors = Vec::new();
    for (pointer, value) in [("/resource", &b.resource), ("/action", &b.action)] {
        if !pivotal_domain::permissions::is_identifier(value) {
            errors.push(FieldError::new(
                pointer,
                "invalid_identifier",
                "must be 1 to 50 lowercase letters, digits, `_` or `-`",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let subject_id = b.user_id.unwrap_or(caller.0.claims.sub);
    if subject_id != caller.0.claims.sub {
        caller.require(Permission::USERS_READ)?;
    }
    let user = state
        .identity
        .user(caller.0.claims.org, subject_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let roles = state
        .identity
        .role_definitions(user.organization_id, user.roles.iter())
        .await?;
    let subject = Subject {
        user_id: user.id,
        organization_id: user.organization_id,
    };
    let context = b.context.clone().unwrap_or_default();
    if user.status != pivotal_domain::user::UserStatus::Active
        || user.locked_at(chrono::Utc::now()).is_some()
    {
        return Ok(Json(CheckResult {
            allowed: false,
            reason: "user_inactive".into(),
            granted_by: None,
        }));
    }
    let decision = evaluate(&roles, &subject, &b.resource, &b.action, &context);
    let (reason, granted_by) = match &decision {
        Decision::Allowed { role, .. } => ("granted", Some(role.clone())),
        Decision::NoGrant => ("no_grant", None),
        Decision::ConditionsNotMet => ("conditions_not_met", None),
    };
    Ok(Json(CheckResult {
        allowed: decision.allowed(),
        reason: reason.into(),
        granted_by,
    }))
}
