//! The OpenAPI 3.1 document, generated from the handlers' annotations, served
//! at `/openapi.json` with an interactive page (Swagger UI) at `/docs`. A committed copy
//! lives at `schemas/openapi.json`; a test fails when it drifts.

use axum::Router;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;
use crate::{auth, customers, organization, quotes, users};

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

/// The answers any operation may give besides its own, added where an
/// operation does not name them itself, so that a client generated from
/// the document knows every status it can meet: 503 when a backing
/// service is down or a statement ran past
/// `command_api.statement_timeout_ms`; for an operation that takes a body,
/// 400 for a body that is not JSON, 408 when it did not arrive within
/// `command_api.body_timeout_ms` (ADR 0046), 415 for another content type
/// and 422 for JSON of the wrong shape; for one under the bearer scheme,
/// 401 and 403; for one with an id in its path, 404; for one that takes
/// `If-Match`, 400 for a value that is no ETag and 409 for a stale one;
/// for one that takes `Idempotency-Key`, 400 for a key of another form.
/// Those two headers are also given the forms the API takes (a `pattern`)
/// and a description saying so.
#[derive(Debug)]
struct CommonResponses;

/// The `If-Match` values [`crate::extract::IfMatch`] takes: a version as an
/// ETag, `"3"`, also weak (`W/"3"`) or bare (`3`).
const IF_MATCH_PATTERN: &str = r#"^\s*(W/)?("[0-9]{1,19}"|[0-9]{1,19})\s*$"#;
const IF_MATCH_RULE: &str = "The version the change expects, as the ETag this API returned for it, such as \"3\" (W/\"3\" and 3 are taken too): another version is 409 (version_conflict), another form 400 (invalid_header)";
/// The `Idempotency-Key` values [`crate::extract::IdempotencyKey`] takes.
const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";
const IDEMPOTENCY_KEY_RULE: &str = "Makes retries safe: a retry with the same key and body gets the first answer, not a second change. 1 to 255 visible ASCII characters; another form is 400 (invalid_header)";

impl CommonResponses {
    fn problem(description: &str) -> utoipa::openapi::ResponseBuilder {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new().description(description).content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
    }

    /// Gives a header parameter the form the API takes (`pattern`) and
    /// says what it is (`rule`).
    fn shape_header(parameter: &mut Parameter, pattern: &str, rule: &str) {
        use utoipa::openapi::{ObjectBuilder, Type};
        parameter.schema = Some(RefOr::T(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern))
                .into(),
        ));
        parameter.description = Some(rule.to_owned());
    }

    fn retry_after() -> utoipa::openapi::Header {
        use utoipa::openapi::{HeaderBuilder, ObjectBuilder, Type};
        HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            ))
            .description(Some("Seconds to wait before retrying"))
            .build()
    }
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let secured = operation
                    .security
                    .as_ref()
                    .is_some_and(|requirements| !requirements.is_empty());
                let (mut in_path, mut if_match, mut idempotency_key) = (false, false, false);
                for parameter in operation.parameters.iter_mut().flatten() {
                    let RefOr::T(parameter) = parameter else {
                        continue;
                    };
                    in_path |= parameter.parameter_in == ParameterIn::Path;
                    if parameter.parameter_in != ParameterIn::Header {
                        continue;
                    }
                    if parameter.name.eq_ignore_ascii_case("If-Match") {
                        if_match = true;
                        Self::shape_header(parameter, IF_MATCH_PATTERN, IF_MATCH_RULE);
                    } else if parameter.name.eq_ignore_ascii_case("Idempotency-Key") {
                        idempotency_key = true;
                        Self::shape_header(
                            parameter,
                            IDEMPOTENCY_KEY_PATTERN,
                            IDEMPOTENCY_KEY_RULE,
                        );
                    }
                }
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| Self::problem(description).build().into());
                };
                // A 400 names each thing of this operation's that can be
                // malformed.
                let malformed: Vec<&str> = [
                    (
                        operation.request_body.is_some(),
                        "the body is not JSON (malformed_json), or the connection broke off before all of it arrived (unreadable_body)",
                    ),
                    (
                        if_match,
                        "If-Match is not an ETag this API returned, such as \"3\" (invalid_header)",
                    ),
                    (
                        idempotency_key,
                        "Idempotency-Key is not 1 to 255 visible ASCII characters (invalid_header)",
                    ),
                ]
                .into_iter()
                .filter_map(|(applies, what)| applies.then_some(what))
                .collect();
                if !malformed.is_empty() {
                    let described = malformed.join("; or ");
                    let mut described = described.chars();
                    let first = described.next().map(|c| c.to_uppercase().to_string());
                    add("400", &(first.unwrap_or_default() + described.as_str()));
                }
                if operation.request_body.is_some() {
                    add(
                        "415",
                        "The body is not sent as application/json (unsupported_media_type)",
                    );
                    add(
                        "422",
                        "The body is JSON but not of the operation's shape: a field missing, unknown or of the wrong type, or a value out of its range; `errors` names each with a JSON pointer (validation_failed)",
                    );
                }
                if secured {
                    add(
                        "401",
                        "The bearer token is missing, malformed, signed by an unknown key, expired, invalid or revoked (token_missing, token_malformed, token_unknown_key, token_expired, token_invalid, token_revoked)",
                    );
                    add(
                        "403",
                        "The token does not grant what the operation needs, or the organization requires a multi-factor sign-in for it (forbidden, mfa_required)",
                    );
                }
                if in_path {
                    add(
                        "404",
                        "Nothing the path names exists in the caller's organization (a code naming what, such as customer_not_found)",
                    );
                }
                if if_match {
                    add(
                        "409",
                        "If-Match names a version that is no longer the current one; `currentVersion` says which is (version_conflict)",
                    );
                }
                if operation.request_body.is_some() {
                    add(
                        "408",
                        "The body did not arrive within command_api.body_timeout_ms of the headers (request_timeout)",
                    );
                }
                let responses = &mut operation.responses.responses;
                responses.entry("503".to_owned()).or_insert_with(|| {
                    Self::problem(
                        "A backing service is unavailable, or a statement ran past command_api.statement_timeout_ms; nothing was changed; retry after Retry-After (service_unavailable)",
                    )
                    .header("Retry-After", Self::retry_after())
                    .build()
                    .into()
                });
            }
        }
    }
}

/// Adds the components the request fields' shapes refer to
/// ([`crate::shapes::components`]).
#[derive(Debug)]
struct Shapes;

impl Modify for Shapes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, schema) in crate::shapes::components() {
            components.schemas.insert(name.to_owned(), schema);
        }
        crate::shapes::across_fields(&mut components.schemas);
        // Role keys in paths: a custom role's where one is defined, any
        // role's where one is assigned or revoked.
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                ("GET", &mut item.get),
                ("PUT", &mut item.put),
                ("POST", &mut item.post),
                ("DELETE", &mut item.delete),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                for parameter in operation.parameters.iter_mut().flatten() {
                    let RefOr::T(parameter) = parameter else {
                        continue;
                    };
                    if parameter.parameter_in != ParameterIn::Path {
                        continue;
                    }
                    let shape = match (method, path.as_str(), parameter.name.as_str()) {
                        ("PUT", "/v1/roles/{key}", "key") => crate::shapes::custom_role_key(),
                        (_, _, "key" | "role") => crate::shapes::role_key(),
                        _ => continue,
                    };
                    parameter.schema =
                        Some(RefOr::T(utoipa::openapi::schema::Schema::Object(shape)));
                }
            }
        }
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Pivotal Flow command API",
        description = "Commands on Pivotal Flow's aggregates. Every accepted command returns the aggregate version (also the ETag) and the global position of its last event, a consistency token for the query API. Errors are application/problem+json with a stable code. No string in a request body may contain U+0000 (422, invalid_characters).",
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
        quotes::create_rate_card,
        quotes::get_rate_card,
        quotes::rename_rate_card,
        quotes::put_entry,
        quotes::remove_entry,
        quotes::archive_rate_card,
        quotes::create_quote,
        quotes::get_quote,
        quotes::update_quote,
        quotes::delete_quote,
        quotes::cancel_quote,
        quotes::submit_quote,
        quotes::approve_quote,
        quotes::reject_quote,
        quotes::send_quote,
        quotes::accept_quote,
        quotes::decline_quote,
        quotes::list_templates,
        quotes::quote_pdf,
    ),
    modifiers(&BearerAuth, &CommonResponses, &Shapes),
    tags(
        (name = "auth", description = "Sign-up, sign-in, MFA, token refresh, logout and introspection"),
        (name = "me", description = "The caller's own password and multi-factor authentication"),
        (name = "users", description = "People of the organization, their status and roles"),
        (name = "organization", description = "The caller's organization and its policies"),
        (name = "roles", description = "Built-in and custom roles; permission checks"),
        (name = "customers", description = "Customers of the organization"),
        (name = "quotes", description = "Rate cards, quotes and their approval workflow, quote PDFs and templates")
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON (the form committed under `schemas/`).
pub fn document_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default() + "\n"
}

/// Every command the document describes, as `commands_total` names it:
/// method and route template of each operation that changes data.
pub fn commands() -> Vec<(&'static str, String)> {
    let document = ApiDoc::openapi();
    let mut commands = Vec::new();
    for (path, item) in &document.paths.paths {
        let operations = [
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ];
        for (method, operation) in operations {
            if operation.is_some() {
                commands.push((method, path.clone()));
            }
        }
    }
    commands
}

/// `/openapi.json` and the Swagger UI at `/docs`, whose assets are compiled
/// into the binary (no network needed by the page).
pub fn routes() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
