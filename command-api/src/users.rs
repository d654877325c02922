//! `/v1/users`: create (or invite), read, profile, email, deactivate and
//! reactivate (`deleteUser`), lock and unlock (`lockUser`), roles
//! (`getUserRoles`, `assignRole`, revoke). A user of another organization
//! is always 404, never 403.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use pivotal_domain::permissions::{Permission, RoleDefinition};
use pivotal_domain::user::{Profile, UserCommand, UserState};
use pivotal_domain::values::{Email, Name, Phone, Preferences, TimeZone, Validator};
use pivotal_identity::{NewUser, PublicUser};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::access::{self, user_context};
use crate::auth::origin;
use crate::customers::{accepted_in, optional, validated};
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, IfMatch, JsonBody, RequestMeta};
use crate::idempotent::Reply;

const USERS: &str = "/v1/users";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(create_user))
        .route("/v1/users/{id}", get(get_user))
        .route("/v1/users/{id}/profile", put(update_profile))
        .route("/v1/users/{id}/email", put(change_email))
        .route("/v1/users/{id}/deactivate", post(deactivate))
        .route("/v1/users/{id}/reactivate", post(reactivate))
        .route("/v1/users/{id}/lock", post(lock))
        .route("/v1/users/{id}/unlock", post(unlock))
        .route("/v1/users/{id}/roles", get(user_roles).post(assign_role))
        .route("/v1/users/{id}/roles/{role}", delete(revoke_role))
}

fn user_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("user"))
}

/// Loads a user of the caller's organization, or 404.
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(UserState, u64), ApiError> {
    let (user, version) = state.identity.users().load(&id.to_string()).await?;
    let found = user
        .visible_to(&caller.0.actor())
        .cloned()
        .ok_or(ApiError::NotFound("user"))?;
    Ok((found, version))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserBody {
    #[schema(schema_with = crate::shapes::email)]
    pub email: String,
    #[schema(schema_with = crate::shapes::person_name)]
    pub first_name: String,
    #[schema(schema_with = crate::shapes::person_name)]
    pub last_name: String,
    #[schema(schema_with = crate::shapes::phone_or_blank)]
    pub phone: Option<String>,
    #[schema(schema_with = crate::shapes::user_time_zone)]
    pub time_zone: Option<String>,
    /// Role keys, built-in or the organization's; default `["member"]`.
    #[schema(schema_with = crate::shapes::role_keys)]
    pub roles: Option<Vec<String>>,
    /// Without a password the user is invited: the response carries a
    /// one-time invitation token for `/v1/auth/invitations/accept`.
    #[schema(schema_with = crate::shapes::optional_password)]
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedUserBody {
    pub id: Uuid,
    pub version: u64,
    pub position: Option<i64>,
    #[schema(value_type = Object)]
    pub user: serde_json::Value,
    /// Shown once; only for invited users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_token: Option<String>,
}

fn parse_profile(
    v: &mut Validator,
    first: &str,
    last: &str,
    phone: Option<&str>,
    tz: Option<&str>,
    preferences: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Option<Profile> {
    let first = v.check(Name::parse_bounded(
        "/firstName",
        first,
        Name::PERSON_MAX_CHARS,
    ));
    let last = v.check(Name::parse_bounded(
        "/lastName",
        last,
        Name::PERSON_MAX_CHARS,
    ));
    let phone = v.check(optional(phone, |raw| Phone::parse("/phone", raw)));
    let tz = v.check(match tz {
        Some(tz) => TimeZone::parse("/timeZone", tz),
        None => Ok(TimeZone::utc()),
    });
    let preferences = v.check_all(match preferences {
        Some(p) => Preferences::parse("/preferences", p),
        None => Ok(Preferences::default()),
    });
    Some(Profile {
        first_name: first?,
        last_name: last?,
        phone: phone?,
        time_zone: tz?,
        preferences: preferences?,
    })
}

#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = CreateUserBody,
    responses(
        (status = 201, description = "User created (or invited)", body = CreatedUserBody),
        (status = 403, description = "Token lacks users:create", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, unknown role or weak password", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: JsonBody<CreateUserBody>,
) -> Result<Response, ApiError> {
    caller.require(Permission::USERS_CREATE)?;
    let b = &body.value;
    let mut v = Validator::new();
    let email = v.check(Email::parse("/email", &b.email));
    let profile = parse_profile(
        &mut v,
        &b.first_name,
        &b.last_name,
        b.phone.as_deref(),
        b.time_zone.as_deref(),
        None,
    );
    let roles: BTreeSet<String> = b
        .roles
        .clone()
        .unwrap_or_else(|| vec!["member".into()])
        .into_iter()
        .collect();
    if roles.is_empty() {
        v.push(pivotal_domain::values::FieldError::new(
            "/roles",
            "required",
            "a user needs at least one role",
        ));
    }
    let request = validated(v.finish(|| {
        Some(NewUser {
            email: email?,
            profile: profile?,
            roles: roles.clone(),
            password: b.password.clone(),
        })
    }))?;
    if request.roles.contains("owner") && !caller.0.claims.roles.iter().any(|r| r == "owner") {
        return Err(ApiError::Forbidden("roles:assign (owner)".into()));
    }
    let created = state
        .identity
        .create_user(caller.0.actor(), request, &origin(&meta))
        .await?;
    let body = CreatedUserBody {
        id: created.user.id,
        version: created.outcome.version,
        position: created.outcome.position(),
        user: serde_json::to_value(&created.user).unwrap_or_default(),
        invitation_token: created.invitation_token,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = format!("{USERS}/{}", created.user.id).parse() {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = format!("\"{}\"", created.outcome.version).parse() {
        headers.insert(header::ETAG, v);
    }
    if let Some(p) = created.outcome.position()
        && let Ok(v) = p.to_string().parse()
    {
        headers.insert(crate::CONSISTENCY_TOKEN, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The user without any secret; ETag is its version"),
        (status = 404, description = "Unknown user (or another organization's)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    let (found, version) = visible(&state, &caller, id).await?;
    if found.id != caller.0.claims.sub {
        caller.require(Permission::USERS_READ)?;
    }
    let reply = Reply {
        status: StatusCode::OK,
        body: serde_json::to_value(PublicUser::of(&found)).unwrap_or_default(),
        headers: vec![(header::ETAG, format!("\"{version}\""))],
    };
    Ok(reply.into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileBody {
    #[schema(schema_with = crate::shapes::person_name)]
    pub first_name: String,
    #[schema(schema_with = crate::shapes::person_name)]
    pub last_name: String,
    #[schema(schema_with = crate::shapes::phone_or_blank)]
    pub phone: Option<String>,
    #[schema(schema_with = crate::shapes::user_time_zone)]
    pub time_zone: Option<String>,
    #[schema(schema_with = crate::shapes::preferences)]
    pub preferences: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Runs a user command through the identity service and answers with the
/// `CommandAccepted` body.
async fn run(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: Uuid,
    expected: IfMatch,
    command: UserCommand,
) -> Result<Response, ApiError> {
    let (outcome, _) = state
        .identity
        .execute_user(caller.0.actor(), id, expected.0, command, &origin(meta))
        .await
        .map_err(|e| match e {
            pivotal_identity::IdentityError::Conflict if expected.0.is_some() => {
                ApiError::Conflict {
                    code: "version_conflict",
                    message: "the user changed since the version you sent".into(),
                }
            }
            other => other.into(),
        })?;
    Ok(accepted_in(USERS, StatusCode::OK, id, &outcome).into_response())
}

#[utoipa::path(put, path = "/v1/users/{id}/profile", tag = "users", request_body = ProfileBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses(
        (status = 200, description = "Updated"),
        (status = 403, description = "Neither users:update nor the user themself", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update_profile(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<ProfileBody>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    visible(&state, &caller, id).await?;
    access::authorize(&state, &caller, Permission::USERS_UPDATE, user_context(id)).await?;
    let b = &body.value;
    let mut v = Validator::new();
    let profile = parse_profile(
        &mut v,
        &b.first_name,
        &b.last_name,
        b.phone.as_deref(),
        b.time_zone.as_deref(),
        b.preferences.as_ref(),
    );
    let profile = validated(v.finish(|| profile))?;
    let command = UserCommand::UpdateProfile {
        actor: caller.0.actor(),
        profile,
    };
    run(&state, &caller, &meta, id, expected, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailBody {
    #[schema(schema_with = crate::shapes::email)]
    pub email: String,
}

#[utoipa::path(put, path = "/v1/users/{id}/email", tag = "users", request_body = EmailBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses(
        (status = 200, description = "Changed; the new address signs in"),
        (status = 403, description = "Not allowed, or the organization requires an MFA token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn change_email(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<EmailBody>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    visible(&state, &caller, id).await?;
    access::authorize(&state, &caller, Permission::USERS_UPDATE, user_context(id)).await?;
    access::sensitive(&state, &caller).await?;
    let email = validated(Email::parse("/email", &body.value.email).map_err(|e| vec![e]))?;
    let command = UserCommand::ChangeEmail {
        actor: caller.0.actor(),
        email,
    };
    run(&state, &caller, &meta, id, expected, command).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = DeactivationBody)]
pub struct ReasonBody {
    #[schema(schema_with = crate::shapes::optional_user_reason)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/users/{id}/deactivate", tag = "users", request_body = ReasonBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses(
        (status = 200, description = "Deactivated: cannot sign in; every session is revoked; history keeps the user"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn deactivate(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<ReasonBody>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    visible(&state, &caller, id).await?;
    caller.require(Permission::USERS_DEACTIVATE)?;
    let command = UserCommand::Deactivate {
        actor: caller.0.actor(),
        reason: body.value.reason.clone(),
    };
    run(&state, &caller, &meta, id, expected, command).await
}

#[utoipa::path(post, path = "/v1/users/{id}/reactivate", tag = "users", request_body = crate::auth::EmptyBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Active again"), (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn reactivate(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    _body: JsonBody<crate::auth::EmptyBody>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    visible(&state, &caller, id).await?;
    caller.require(Permission::USERS_DEACTIVATE)?;
    let command = UserCommand::Reactivate {
        actor: caller.0.actor(),
    };
    run(&state, &caller, &meta, id, expected, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockBody {
    #[schema(schema_with = crate::shapes::user_reason)]
    pub reason: String,
    /// End of a temporary lock; absent locks until unlocked.
    #[serde(default, deserialize_with = "crate::extract::optional_time")]
    pub until: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/v1/users/{id}/lock", tag = "users", request_body = LockBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Locked; every session is revoked"), (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn lock(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<LockBody>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    visible(&state, &caller, id).await?;
    caller.require(Permission::USERS_LOCK)?;
    let command = UserCommand::Lock {
        actor: caller.0.actor(),
        reason: body.value.reason.clone(),
        until: body.value.until,
    };
    run(&state, &caller, &meta, id, expected, command).await
}

#[utoipa::path(post, path = "/v1/users/{id}/unlock", tag = "users", request_body = crate::auth::EmptyBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Unlocked; failed sign-in counters cleared"), (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn unlock(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    _body: JsonBody<crate::auth::EmptyBody>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    visible(&state, &caller, id).await?;
    caller.require(Permission::USERS_LOCK)?;
    let command = UserCommand::Unlock {
        actor: caller.0.actor(),
    };
    run(&state, &caller, &meta, id, expected, command).await
}

/// `getUserRoles`: the user's roles with what each grants.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRolesBody {
    pub user_id: Uuid,
    #[schema(value_type = Vec<Object>)]
    pub roles: Vec<RoleDefinition>,
}

#[utoipa::path(get, path = "/v1/users/{id}/roles", tag = "users",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = UserRolesBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn user_roles(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserRolesBody>, ApiError> {
    let id = user_id(&id)?;
    let (found, _) = visible(&state, &caller, id).await?;
    if found.id != caller.0.claims.sub {
        caller.require(Permission::ROLES_READ)?;
    }
    let roles = state
        .identity
        .role_definitions(found.organization_id, found.roles.iter())
        .await?;
    Ok(Json(UserRolesBody { user_id: id, roles }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignRoleBody {
    #[schema(schema_with = crate::shapes::role_key)]
    pub role: String,
}

/// Roles: only an owner grants or takes the owner role; the role must exist.
async fn check_role_change(state: &AppState, caller: &Caller, role: &str) -> Result<(), ApiError> {
    caller.require(Permission::ROLES_ASSIGN)?;
    access::sensitive(state, caller).await?;
    if role == "owner" && !caller.0.claims.roles.iter().any(|r| r == "owner") {
        return Err(ApiError::Forbidden("roles:assign (owner)".into()));
    }
    let known = state
        .identity
        .role_definitions(caller.0.claims.org, [&role.to_owned()])
        .await?;
    if known.is_empty() {
        return Err(ApiError::Validation(vec![
            pivotal_domain::values::FieldError::new(
                "/role",
                "unknown_role",
                format!("role {role} is not defined"),
            ),
        ]));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/users/{id}/roles", tag = "users", request_body = AssignRoleBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Assigned; effective at the user's next token"),
        (status = 403, description = "Lacks roles:assign, owner role by a non-owner, or MFA required", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already assigned", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown role", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn assign_role(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<AssignRoleBody>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    visible(&state, &caller, id).await?;
    check_role_change(&state, &caller, &body.value.role).await?;
    let command = UserCommand::AssignRole {
        actor: caller.0.actor(),
        role: body.value.role.clone(),
    };
    run(&state, &caller, &meta, id, expected, command).await
}

#[utoipa::path(delete, path = "/v1/users/{id}/roles/{role}", tag = "users",
    params(("id" = Uuid, Path), ("role" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Revoked"), (status = 409, description = "Not held, or the user's last role", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn revoke_role(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path((id, role)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = user_id(&id)?;
    visible(&state, &caller, id).await?;
    caller.require(Permission::ROLES_ASSIGN)?;
    access::sensitive(&state, &caller).await?;
    if role == "owner" && !caller.0.claims.roles.iter().any(|r| r == "owner") {
        return Err(ApiError::Forbidden("roles:assign (owner)".into()));
    }
    let command = UserCommand::RevokeRole {
        actor: caller.0.actor(),
        role,
    };
    run(&state, &caller, &meta, id, expected, command).await
}
