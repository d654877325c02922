//! `/v1/customers`: create, read (write-side state), rename, change contact,
//! billing and tags, archive and restore.
//!
//! Request bodies are wire types; `TryFrom`-style parsers turn them into the
//! domain's value objects, reporting every bad field with its JSON pointer.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use pivotal_domain::customer::{
    Billing, Contact, Customer, CustomerCommand, CustomerState, NewCustomer,
};
use pivotal_domain::envelope::Actor;
use pivotal_domain::permissions::Permission;
use pivotal_domain::values::{
    Address, AddressInput, Currency, Email, FieldError, Name, PaymentTerms, Phone, Tags, TaxNumber,
    Validator,
};
use pivotal_event_store::commands::Outcome;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::extract::{Caller, IdempotencyKey, IfMatch, JsonBody, RequestMeta};
use crate::idempotent::{self, Reply};
use crate::{AppState, CONSISTENCY_TOKEN};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/customers", post(create_customer))
        .route("/v1/customers/{id}", get(get_customer))
        .route("/v1/customers/{id}/rename", post(rename_customer))
        .route("/v1/customers/{id}/contact", put(change_contact))
        .route("/v1/customers/{id}/billing", put(change_billing))
        .route("/v1/customers/{id}/tags", put(change_tags))
        .route("/v1/customers/{id}/archive", post(archive_customer))
        .route("/v1/customers/{id}/restore", post(restore_customer))
}

/// A postal address.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressBody {
    #[schema(required = true, schema_with = crate::shapes::name)]
    pub line1: Option<String>,
    #[schema(schema_with = crate::shapes::name_or_blank)]
    pub line2: Option<String>,
    #[schema(required = true, schema_with = crate::shapes::name)]
    pub city: Option<String>,
    #[schema(schema_with = crate::shapes::region)]
    pub region: Option<String>,
    #[schema(schema_with = crate::shapes::postal_code)]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 code, e.g. `NZ`.
    #[schema(required = true, schema_with = crate::shapes::country)]
    pub country: Option<String>,
}

impl AddressBody {
    fn parse(&self, pointer: &str) -> Result<Address, Vec<FieldError>> {
        Address::parse(
            pointer,
            &AddressInput {
                line1: self.line1.clone(),
                line2: self.line2.clone(),
                city: self.city.clone(),
                region: self.region.clone(),
                postal_code: self.postal_code.clone(),
                country: self.country.clone(),
            },
        )
    }

    fn from_domain(address: &Address) -> Self {
        Self {
            line1: Some(address.line1.as_str().to_owned()),
            line2: address.line2.as_ref().map(|n| n.as_str().to_owned()),
            city: Some(address.city.as_str().to_owned()),
            region: address.region.as_ref().map(|n| n.as_str().to_owned()),
            postal_code: address.postal_code.as_ref().map(|n| n.as_str().to_owned()),
            country: Some(address.country.as_str().to_owned()),
        }
    }
}

/// Registers a customer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCustomerBody {
    #[schema(schema_with = crate::shapes::name)]
    pub legal_name: String,
    #[schema(schema_with = crate::shapes::display_name)]
    pub display_name: Option<String>,
    #[schema(schema_with = crate::shapes::email_or_blank)]
    pub email: Option<String>,
    /// International format, e.g. `+64 9 555 0100`.
    #[schema(schema_with = crate::shapes::phone_or_blank)]
    pub phone: Option<String>,
    pub billing_address: Option<AddressBody>,
    #[schema(schema_with = crate::shapes::tax_number_or_blank)]
    pub tax_number: Option<String>,
    /// ISO 4217 code, e.g. `NZD`.
    #[schema(schema_with = crate::shapes::currency)]
    pub currency: String,
    /// Days until invoices are due; 0 to 365, default 20.
    #[schema(schema_with = crate::shapes::payment_terms)]
    #[serde(default, deserialize_with = "crate::extract::optional_integer")]
    pub payment_terms_days: Option<i64>,
    #[serde(default)]
    #[schema(schema_with = crate::shapes::tags)]
    pub tags: Vec<String>,
}

fn parse_contact(v: &mut Validator, email: Option<&str>, phone: Option<&str>) -> Option<Contact> {
    let email = v.check(optional(email, |raw| Email::parse("/email", raw)));
    let phone = v.check(optional(phone, |raw| Phone::parse("/phone", raw)));
    Some(Contact {
        email: email?,
        phone: phone?,
    })
}

pub(crate) fn optional<T>(
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, FieldError>,
) -> Result<Option<T>, FieldError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => parse(value).map(Some),
    }
}

fn parse_billing(
    v: &mut Validator,
    address: Option<&AddressBody>,
    tax_number: Option<&str>,
    currency: &str,
    terms: Option<i64>,
) -> Option<Billing> {
    let billing_address = v.check_all(match address {
        Some(body) => body.parse("/billingAddress").map(Some),
        None => Ok(None),
    });
    let tax_number = v.check(optional(tax_number, |raw| {
        TaxNumber::parse("/taxNumber", raw)
    }));
    let currency = v.check(Currency::parse("/currency", currency));
    let payment_terms_days = v.check(PaymentTerms::parse(
        "/paymentTermsDays",
        terms.unwrap_or(20),
    ));
    Some(Billing {
        billing_address: billing_address?,
        tax_number: tax_number?,
        currency: currency?,
        payment_terms_days: payment_terms_days?,
    })
}

impl CreateCustomerBody {
    fn parse(&self) -> Result<NewCustomer, Vec<FieldError>> {
        let mut v = Validator::new();
        let legal_name = v.check(Name::parse("/legalName", &self.legal_name));
        let display_name = v.check(Name::parse(
            "/displayName",
            self.display_name.as_deref().unwrap_or(&self.legal_name),
        ));
        let contact = parse_contact(&mut v, self.email.as_deref(), self.phone.as_deref());
        let billing = parse_billing(
            &mut v,
            self.billing_address.as_ref(),
            self.tax_number.as_deref(),
            &self.currency,
            self.payment_terms_days,
        );
        let tags = v.check_all(Tags::parse("/tags", &self.tags));
        v.finish(|| {
            Some(NewCustomer {
                legal_name: legal_name?,
                display_name: display_name?,
                contact: contact?,
                billing: billing?,
                tags: tags?,
            })
        })
    }
}

/// Changes the legal and display names.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameBody {
    #[schema(schema_with = crate::shapes::name)]
    pub legal_name: String,
    #[schema(schema_with = crate::shapes::display_name)]
    pub display_name: Option<String>,
}

/// Replaces the contact details (absent fields are cleared).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContactBody {
    #[schema(schema_with = crate::shapes::email_or_blank)]
    pub email: Option<String>,
    #[schema(schema_with = crate::shapes::phone_or_blank)]
    pub phone: Option<String>,
}

/// Replaces the billing details (absent optional fields are cleared).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BillingBody {
    pub billing_address: Option<AddressBody>,
    #[schema(schema_with = crate::shapes::tax_number_or_blank)]
    pub tax_number: Option<String>,
    #[schema(schema_with = crate::shapes::currency)]
    pub currency: String,
    #[schema(schema_with = crate::shapes::payment_terms)]
    #[serde(default, deserialize_with = "crate::extract::optional_integer")]
    pub payment_terms_days: Option<i64>,
}

/// Replaces the tags.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsBody {
    #[schema(schema_with = crate::shapes::tags)]
    pub tags: Vec<String>,
}

/// Archives the customer.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveBody {
    #[schema(schema_with = crate::shapes::archive_reason)]
    pub reason: Option<String>,
}

/// One event appended by a command.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppendedEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Aggregate version after this event.
    pub version: u64,
    /// Global position in the event log.
    pub position: i64,
}

/// The result of an accepted command.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandAccepted {
    pub id: Uuid,
    /// Aggregate version after the command; also the `ETag`.
    pub version: u64,
    /// Global position of the last appended event: a consistency token the
    /// query side can wait for. Absent when the command changed nothing.
    pub position: Option<i64>,
    pub events: Vec<AppendedEvent>,
}

/// The customer as the write side knows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerBody {
    pub id: Uuid,
    pub version: u64,
    pub legal_name: String,
    pub display_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub billing_address: Option<AddressBody>,
    pub tax_number: Option<String>,
    pub currency: String,
    pub payment_terms_days: u16,
    pub tags: Vec<String>,
    /// `active` or `archived`.
    pub status: String,
}

impl CustomerBody {
    fn new(state: &CustomerState, version: u64) -> Self {
        Self {
            id: state.id,
            version,
            legal_name: state.legal_name.as_str().to_owned(),
            display_name: state.display_name.as_str().to_owned(),
            email: state.contact.email.as_ref().map(|e| e.as_str().to_owned()),
            phone: state.contact.phone.as_ref().map(|p| p.as_str().to_owned()),
            billing_address: state
                .billing
                .billing_address
                .as_ref()
                .map(AddressBody::from_domain),
            tax_number: state
                .billing
                .tax_number
                .as_ref()
                .map(|t| t.as_str().to_owned()),
            currency: state.billing.currency.as_str().to_owned(),
            payment_terms_days: state.billing.payment_terms_days.days(),
            tags: state.tags.as_slice().to_vec(),
            status: state.status.as_str().to_owned(),
        }
    }
}

fn accepted(status: StatusCode, id: Uuid, outcome: &Outcome) -> Reply {
    accepted_in("/v1/customers", status, id, outcome)
}

/// The `CommandAccepted` reply; `Location` is `{collection}/{id}` for 201.
pub(crate) fn accepted_in(
    collection: &str,
    status: StatusCode,
    id: Uuid,
    outcome: &Outcome,
) -> Reply {
    let body = CommandAccepted {
        id,
        version: outcome.version,
        position: outcome.position(),
        events: outcome
            .events
            .iter()
            .map(|e| AppendedEvent {
                id: e.event_id,
                event_type: e.event_type.clone(),
                version: e.sequence,
                position: e.position,
            })
            .collect(),
    };
    let mut headers = vec![(header::ETAG, format!("\"{}\"", outcome.version))];
    if let Some(position) = outcome.position() {
        headers.push((CONSISTENCY_TOKEN, position.to_string()));
    }
    if status == StatusCode::CREATED {
        headers.push((header::LOCATION, format!("{collection}/{id}")));
    }
    Reply {
        status,
        body: serde_json::to_value(body).unwrap_or_default(),
        headers: headers
            .into_iter()
            .map(|(n, v): (HeaderName, String)| (n, v))
            .collect(),
    }
}

fn customer_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("customer"))
}

/// Runs a command on an existing customer and answers 200 with the outcome.
async fn on_existing(
    state: &AppState,
    id: Uuid,
    expected: IfMatch,
    command: CustomerCommand,
    meta: &RequestMeta,
    caller: &Caller,
) -> Result<Reply, ApiError> {
    let outcome = state
        .customers
        .execute(&id.to_string(), expected.0, command, &meta.context(caller))
        .await?;
    Ok(accepted(StatusCode::OK, id, &outcome))
}

pub(crate) fn validated<T>(result: Result<T, Vec<FieldError>>) -> Result<T, ApiError> {
    result.map_err(ApiError::Validation)
}

fn actor(caller: &Caller) -> Actor {
    caller.0.actor()
}

#[utoipa::path(
    post, path = "/v1/customers", tag = "customers",
    request_body = CreateCustomerBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 201, description = "Customer created", body = CommandAccepted),
        (status = 400, description = "The body is not JSON (malformed_json), or the connection broke off before all of it arrived (unreadable_body)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks customers:write", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or idempotency key reused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_customer(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody<CreateCustomerBody>,
) -> Response {
    let run = || async {
        caller.require(Permission::CUSTOMERS_WRITE)?;
        let customer = validated(body.value.parse())?;
        let id = Uuid::now_v7();
        let command = CustomerCommand::Create {
            actor: actor(&caller),
            customer_id: id,
            customer,
        };
        let outcome = state
            .customers
            .create(&id.to_string(), command, &meta.context(&caller))
            .await?;
        Ok(accepted(StatusCode::CREATED, id, &outcome))
    };
    let recover = |id: String, outcome: Outcome| {
        accepted(
            StatusCode::CREATED,
            Uuid::parse_str(&id).unwrap_or_default(),
            &outcome,
        )
    };
    idempotent::run(
        &state,
        &caller,
        key,
        "POST /v1/customers",
        &body.raw,
        run,
        recover,
    )
    .await
}

#[utoipa::path(
    get, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The customer; ETag is its version", body = CustomerBody),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown customer (or another organization's)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Permission::CUSTOMERS_READ)?;
    let id = customer_id(&id)?;
    let (customer, version): (Customer, u64) = state.customers.load(&id.to_string()).await?;
    let found = customer
        .visible_to(&actor(&caller))
        .ok_or(ApiError::NotFound("customer"))?;
    let reply = Reply {
        status: StatusCode::OK,
        body: serde_json::to_value(CustomerBody::new(found, version)).unwrap_or_default(),
        headers: vec![(header::ETAG, format!("\"{version}\""))],
    };
    Ok(axum::response::IntoResponse::into_response(reply))
}

macro_rules! command_endpoint {
    (
        $(#[$attr:meta])*
        $name:ident, $method:literal, $suffix:literal, $body:ty, |$caller:ident, $b:ident| $build:expr
    ) => {
        $(#[$attr])*
        pub async fn $name(
            State(state): State<AppState>,
            $caller: Caller,
            meta: RequestMeta,
            key: IdempotencyKey,
            expected: IfMatch,
            Path(id): Path<String>,
            body: JsonBody<$body>,
        ) -> Response {
            let path = format!("{} /v1/customers/{id}/{}", $method, $suffix);
            let run = || async {
                $caller.require(Permission::CUSTOMERS_WRITE)?;
                let id = customer_id(&id)?;
                let $b = &body.value;
                let command: CustomerCommand = $build?;
                on_existing(&state, id, expected, command, &meta, &$caller).await
            };
            let recover = |id: String, outcome: Outcome| {
                accepted(StatusCode::OK, Uuid::parse_str(&id).unwrap_or_default(), &outcome)
            };
            idempotent::run(&state, &$caller, key, &path, &body.raw, run, recover).await
        }
    };
}

command_endpoint!(
    #[utoipa::path(
        post, path = "/v1/customers/{id}/rename", tag = "customers", request_body = RenameBody,
        params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\""),
               ("Idempotency-Key" = Option<String>, Header)),
        responses(
            (status = 200, body = CommandAccepted), (status = 404, body = Problem, content_type = "application/problem+json"),
            (status = 409, description = "Version conflict or archived customer", body = Problem, content_type = "application/problem+json"),
            (status = 422, body = Problem, content_type = "application/problem+json")),
        security(("bearer" = [])))]
    rename_customer,
    "POST",
    "rename",
    RenameBody,
    |caller, b| {
        let mut v = Validator::new();
        let legal = v.check(Name::parse("/legalName", &b.legal_name));
        let display = v.check(Name::parse(
            "/displayName",
            b.display_name.as_deref().unwrap_or(&b.legal_name),
        ));
        validated(v.finish(|| {
            Some(CustomerCommand::Rename {
                actor: actor(&caller),
                legal_name: legal?,
                display_name: display?,
            })
        }))
    }
);

command_endpoint!(
    #[utoipa::path(
        put, path = "/v1/customers/{id}/contact", tag = "customers", request_body = ContactBody,
        params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
        responses(
            (status = 200, body = CommandAccepted), (status = 404, body = Problem, content_type = "application/problem+json"),
            (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
        security(("bearer" = [])))]
    change_contact,
    "PUT",
    "contact",
    ContactBody,
    |caller, b| {
        let mut v = Validator::new();
        let contact = parse_contact(&mut v, b.email.as_deref(), b.phone.as_deref());
        validated(v.finish(|| {
            Some(CustomerCommand::ChangeContact {
                actor: actor(&caller),
                contact: contact?,
            })
        }))
    }
);

command_endpoint!(
    #[utoipa::path(
        put, path = "/v1/customers/{id}/billing", tag = "customers", request_body = BillingBody,
        params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
        responses(
            (status = 200, body = CommandAccepted), (status = 404, body = Problem, content_type = "application/problem+json"),
            (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
        security(("bearer" = [])))]
    change_billing,
    "PUT",
    "billing",
    BillingBody,
    |caller, b| {
        let mut v = Validator::new();
        let billing = parse_billing(
            &mut v,
            b.billing_address.as_ref(),
            b.tax_number.as_deref(),
            &b.currency,
            b.payment_terms_days,
        );
        validated(v.finish(|| {
            Some(CustomerCommand::ChangeBilling {
                actor: actor(&caller),
                billing: billing?,
            })
        }))
    }
);

command_endpoint!(
    #[utoipa::path(
        put, path = "/v1/customers/{id}/tags", tag = "customers", request_body = TagsBody,
        params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
        responses(
            (status = 200, body = CommandAccepted), (status = 404, body = Problem, content_type = "application/problem+json"),
            (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
        security(("bearer" = [])))]
    change_tags,
    "PUT",
    "tags",
    TagsBody,
    |caller, b| {
        validated(Tags::parse("/tags", &b.tags)).map(|tags| CustomerCommand::ChangeTags {
            actor: actor(&caller),
            tags,
        })
    }
);

command_endpoint!(
    #[utoipa::path(
        post, path = "/v1/customers/{id}/archive", tag = "customers", request_body = ArchiveBody,
        params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
        responses(
            (status = 200, body = CommandAccepted), (status = 404, body = Problem, content_type = "application/problem+json"),
            (status = 409, description = "Already archived or version conflict", body = Problem, content_type = "application/problem+json")),
        security(("bearer" = [])))]
    archive_customer,
    "POST",
    "archive",
    ArchiveBody,
    |caller, b| {
        Ok::<_, ApiError>(CustomerCommand::Archive {
            actor: actor(&caller),
            reason: b.reason.clone(),
        })
    }
);

/// Restores an archived customer. The body may be `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {}

command_endpoint!(
    #[utoipa::path(
        post, path = "/v1/customers/{id}/restore", tag = "customers", request_body = RestoreBody,
        params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
        responses(
            (status = 200, body = CommandAccepted), (status = 404, body = Problem, content_type = "application/problem+json"),
            (status = 409, description = "Not archived or version conflict", body = Problem, content_type = "application/problem+json")),
        security(("bearer" = [])))]
    restore_customer,
    "POST",
    "restore",
    RestoreBody,
    |caller, _b| {
        Ok::<_, ApiError>(CustomerCommand::Restore {
            actor: actor(&caller),
        })
    }
);
