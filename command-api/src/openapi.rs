//! The OpenAPI 3.1 document, generated from the handlers' annotations, served
//! at `/openapi.json` with an interactive page (Swagger UI) at `/docs`. A committed copy
//! lives at `schemas/openapi.json`; a test fails when it drifts.

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;
use crate::{auth, customers, organization, users};

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Pivotal Flow command API",
        description = "Commands on Pivotal Flow's aggregates. Every accepted command returns the aggregate version (also the ETag) and the global position of its last event, a consistency token for the query API. Errors are application/problem+json with a stable code.",
        version = "1.0.0",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        auth::jwks,
        auth::sign_up,
        auth::login,
        auth::verify_mfa,
        auth::refresh,
        auth::logout,
        auth::introspect,
        auth::accept_invitation,
        auth::change_password,
        auth::mfa_status,
        auth::begin_mfa,
        auth::confirm_mfa,
        auth::disable_mfa,
        auth::regenerate_codes,
        users::create_user,
        users::get_user,
        users::update_profile,
        users::change_email,
        users::deactivate,
        users::reactivate,
        users::lock,
        users::unlock,
        users::user_roles,
        users::assign_role,
        users::revoke_role,
        organization::get_organization,
        organization::rename,
        organization::change_settings,
        organization::change_policy,
        organization::list_roles,
        organization::put_role,
        organization::remove_role,
        organization::check_permission,
        customers::create_customer,
        customers::get_customer,
        customers::rename_customer,
        customers::change_contact,
        customers::change_billing,
        customers::change_tags,
        customers::archive_customer,
        customers::restore_customer,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign-up, sign-in, MFA, token refresh, logout and introspection"),
        (name = "me", description = "The caller's own password and multi-factor authentication"),
        (name = "users", description = "People of the organization, their status and roles"),
        (name = "organization", description = "The caller's organization and its policies"),
        (name = "roles", description = "Built-in and custom roles; permission checks"),
        (name = "customers", description = "Customers of the organization")
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON (the form committed under `schemas/`).
pub fn document_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default() + "\n"
}

/// `/openapi.json` and the Swagger UI at `/docs`, whose assets are compiled
/// into the binary (no network needed by the page).
pub fn routes() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
