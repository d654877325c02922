//! `/v1/rate-cards` and `/v1/quotes`: the seed's Quotation Service over REST.
//!
//! Quote numbers come from a per-organization, per-year counter incremented
//! in the transaction that appends `quote.created`, so they are unique and
//! gap-free (docs/adr/0011). Unit prices taken from rate cards are copied
//! into the quote with their source.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{Datelike, NaiveDate, Utc};
use pivotal_domain::customer::Customer;
use pivotal_domain::envelope::Actor;
use pivotal_domain::organization::{Organization, OrganizationState};
use pivotal_domain::permissions::Permission;
use pivotal_domain::pricing::{Discount, TaxMode};
use pivotal_domain::quote::{
    MAX_TEXT_CHARS, Quote, QuoteCommand, QuoteContent, QuoteError, QuoteLine, QuoteState,
    RateSource,
};
use pivotal_domain::rate_card::{
    Rate, RateCard, RateCardCommand, RateCardError, RateCardState, RateEntry, Unit,
};
use pivotal_domain::values::{Currency, FieldError, Name, Validator};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::access;
use crate::customers::{accepted_in, validated};
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, IdempotencyKey, IfMatch, JsonBody, RequestMeta};
use crate::idempotent::{self, Reply};

pub const QUOTES_READ: Permission = Permission::new("quotes", "read");
pub const QUOTES_WRITE: Permission = Permission::new("quotes", "write");
pub const QUOTES_APPROVE: Permission = Permission::new("quotes", "approve");
pub const RATE_CARDS_READ: Permission = Permission::new("rate_cards", "read");
pub const RATE_CARDS_WRITE: Permission = Permission::new("rate_cards", "write");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/rate-cards", post(create_rate_card))
        .route("/v1/rate-cards/{id}", get(get_rate_card))
        .route("/v1/rate-cards/{id}/rename", post(rename_rate_card))
        .route(
            "/v1/rate-cards/{id}/entries/{entry}",
            put(put_entry).delete(remove_entry),
        )
        .route("/v1/rate-cards/{id}/archive", post(archive_rate_card))
        .route("/v1/quotes", post(create_quote))
        .route(
            "/v1/quotes/{id}",
            get(get_quote).put(update_quote).delete(delete_quote),
        )
        .route("/v1/quotes/{id}/submit", post(submit_quote))
        .route("/v1/quotes/{id}/approve", post(approve_quote))
        .route("/v1/quotes/{id}/reject", post(reject_quote))
        .route("/v1/quotes/{id}/send", post(send_quote))
        .route("/v1/quotes/{id}/accept", post(accept_quote))
        .route("/v1/quotes/{id}/decline", post(decline_quote))
        .route("/v1/quotes/{id}/cancel", post(cancel_quote))
        .route("/v1/quotes/{id}/pdf", get(quote_pdf))
        .route("/v1/quote-templates", get(list_templates))
}

impl From<QuoteError> for ApiError {
    fn from(error: QuoteError) -> Self {
        match error {
            QuoteError::NotFound => Self::NotFound("quote"),
            QuoteError::Pricing(errors) => Self::Validation(errors),
            QuoteError::ReasonRequired => Self::Validation(vec![FieldError::new(
                "/reason",
                "reason_required",
                error.to_string(),
            )]),
            QuoteError::FourEyes => {
                Self::refused(StatusCode::FORBIDDEN, error.code(), error.to_string())
            }
            other => Self::Conflict {
                code: other.code(),
                message: other.to_string(),
            },
        }
    }
}

impl From<RateCardError> for ApiError {
    fn from(error: RateCardError) -> Self {
        match error {
            RateCardError::NotFound => Self::NotFound("rate_card"),
            RateCardError::EntryNotFound(_) => Self::NotFound("rate_entry"),
            other => Self::Conflict {
                code: other.code(),
                message: other.to_string(),
            },
        }
    }
}

fn uuid_of(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(what))
}

async fn organization(state: &AppState, actor: &Actor) -> Result<OrganizationState, ApiError> {
    let (org, _): (Organization, u64) = state
        .identity
        .organizations()
        .load(&actor.organization_id.to_string())
        .await?;
    org.visible_to(actor)
        .cloned()
        .ok_or(ApiError::NotFound("organization"))
}

async fn rate_card(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
) -> Result<(RateCardState, u64), ApiError> {
    let (card, version): (RateCard, u64) = state.rate_cards.load(&id.to_string()).await?;
    let found = card
        .visible_to(actor)
        .cloned()
        .ok_or(ApiError::NotFound("rate_card"))?;
    Ok((found, version))
}

// ----- rate cards -------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRateCardBody {
    #[schema(schema_with = crate::shapes::name)]
    pub name: String,
    /// A card of one customer; quotes for it use this card first.
    pub customer_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/v1/rate-cards", tag = "quotes", request_body = CreateRateCardBody,
    responses((status = 201, description = "Created"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_rate_card(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: JsonBody<CreateRateCardBody>,
) -> Result<Response, ApiError> {
    caller.require(RATE_CARDS_WRITE)?;
    let actor = caller.0.actor();
    let name = validated(Name::parse("/name", &body.value.name).map_err(|e| vec![e]))?;
    if let Some(customer_id) = body.value.customer_id {
        let (customer, _): (Customer, u64) = state.customers.load(&customer_id.to_string()).await?;
        if customer.visible_to(&actor).is_none() {
            return Err(ApiError::Validation(vec![FieldError::new(
                "/customerId",
                "unknown_customer",
                "no such customer in this organization",
            )]));
        }
    }
    let id = Uuid::now_v7();
    let outcome = state
        .rate_cards
        .create(
            &id.to_string(),
            RateCardCommand::Create {
                actor,
                rate_card_id: id,
                name,
                customer_id: body.value.customer_id,
            },
            &meta.context(&caller),
        )
        .await?;
    Ok(accepted_in("/v1/rate-cards", StatusCode::CREATED, id, &outcome).into_response())
}

#[utoipa::path(get, path = "/v1/rate-cards/{id}", tag = "quotes", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The card with its entries"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_rate_card(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(RATE_CARDS_READ)?;
    let (card, version) = rate_card(&state, &caller.0.actor(), uuid_of(&id, "rate_card")?).await?;
    Ok(Reply {
        status: StatusCode::OK,
        body: serde_json::json!({
            "id": card.id,
            "version": version,
            "name": card.name,
            "customerId": card.customer_id,
            "archived": card.archived,
            "entries": card.entries,
        }),
        headers: vec![(header::ETAG, format!("\"{version}\""))],
    }
    .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameBody {
    #[schema(schema_with = crate::shapes::name)]
    pub name: String,
}

async fn card_command(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    expected: IfMatch,
    id: Uuid,
    command: RateCardCommand,
) -> Result<Response, ApiError> {
    let outcome = state
        .rate_cards
        .execute(&id.to_string(), expected.0, command, &meta.context(caller))
        .await?;
    Ok(accepted_in("/v1/rate-cards", StatusCode::OK, id, &outcome).into_response())
}

#[utoipa::path(post, path = "/v1/rate-cards/{id}/rename", tag = "quotes", request_body = NameBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Renamed")), security(("bearer" = [])))]
pub async fn rename_rate_card(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<NameBody>,
) -> Result<Response, ApiError> {
    caller.require(RATE_CARDS_WRITE)?;
    let id = uuid_of(&id, "rate_card")?;
    let name = validated(Name::parse("/name", &body.value.name).map_err(|e| vec![e]))?;
    let command = RateCardCommand::Rename {
        actor: caller.0.actor(),
        name,
    };
    card_command(&state, &caller, &meta, expected, id, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateBody {
    #[schema(schema_with = crate::shapes::currency)]
    pub currency: String,
    #[schema(schema_with = crate::shapes::rate_amount)]
    #[serde(deserialize_with = "crate::extract::decimal")]
    pub amount: Decimal,
    #[schema(value_type = String, format = Date)]
    #[serde(deserialize_with = "crate::extract::date")]
    pub effective_from: NaiveDate,
}

// The values `Unit` takes, named in the OpenAPI document so that a client
// knows them before it is refused (the domain type derives no ToSchema).
/// What a quantity counts.
#[derive(Debug, ToSchema)]
#[schema(as = Unit)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum UnitName {
    Hours,
    Days,
    Each,
}

// The values `TaxMode` takes, named in the OpenAPI document.
/// Whether entered prices exclude or include tax.
#[derive(Debug, ToSchema)]
#[schema(as = TaxMode)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum TaxModeName {
    Exclusive,
    Inclusive,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryBody {
    #[schema(schema_with = crate::shapes::entry_name)]
    pub name: String,
    #[schema(value_type = UnitName)]
    pub unit: Unit,
    #[schema(min_items = 1)]
    pub rates: Vec<RateBody>,
}

#[utoipa::path(put, path = "/v1/rate-cards/{id}/entries/{entry}", tag = "quotes", request_body = EntryBody,
    params(("id" = Uuid, Path), ("entry" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Entry added or replaced"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_entry(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path((id, entry)): Path<(String, String)>,
    body: JsonBody<EntryBody>,
) -> Result<Response, ApiError> {
    caller.require(RATE_CARDS_WRITE)?;
    let id = uuid_of(&id, "rate_card")?;
    let entry_id = uuid_of(&entry, "rate_entry")?;
    let b = &body.value;
    let mut v = Validator::new();
    let name = v.check(Name::parse_bounded(
        "/name",
        &b.name,
        pivotal_domain::rate_card::MAX_ENTRY_NAME_CHARS,
    ));
    let mut rates = Vec::new();
    for (i, rate) in b.rates.iter().enumerate() {
        if let Some(currency) = v.check(Currency::parse(
            &format!("/rates/{i}/currency"),
            &rate.currency,
        )) {
            rates.push(Rate {
                currency,
                amount: rate.amount,
                effective_from: rate.effective_from,
            });
        }
    }
    let name = validated(v.finish(|| name))?;
    let entry = validated(RateEntry::validate(entry_id, name, b.unit, rates))?;
    let command = RateCardCommand::PutEntry {
        actor: caller.0.actor(),
        entry,
    };
    card_command(&state, &caller, &meta, expected, id, command).await
}

#[utoipa::path(delete, path = "/v1/rate-cards/{id}/entries/{entry}", tag = "quotes",
    params(("id" = Uuid, Path), ("entry" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Removed"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn remove_entry(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path((id, entry)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(RATE_CARDS_WRITE)?;
    let id = uuid_of(&id, "rate_card")?;
    let command = RateCardCommand::RemoveEntry {
        actor: caller.0.actor(),
        entry_id: uuid_of(&entry, "rate_entry")?,
    };
    card_command(&state, &caller, &meta, expected, id, command).await
}

#[utoipa::path(post, path = "/v1/rate-cards/{id}/archive", tag = "quotes", request_body = crate::auth::EmptyBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Archived")), security(("bearer" = [])))]
pub async fn archive_rate_card(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    _body: JsonBody<crate::auth::EmptyBody>,
) -> Result<Response, ApiError> {
    caller.require(RATE_CARDS_WRITE)?;
    let id = uuid_of(&id, "rate_card")?;
    let command = RateCardCommand::Archive {
        actor: caller.0.actor(),
    };
    card_command(&state, &caller, &meta, expected, id, command).await
}

// ----- quotes -----------------------------------------------------------

/// One line; the unit price comes from `rateEntryId` unless given.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineBody {
    #[schema(schema_with = crate::shapes::line_description)]
    pub description: Option<String>,
    #[schema(schema_with = crate::shapes::quantity)]
    #[serde(deserialize_with = "crate::extract::decimal")]
    pub quantity: Decimal,
    /// Defaults to the rate entry's unit, else `each`.
    #[schema(value_type = Option<UnitName>)]
    pub unit: Option<Unit>,
    #[schema(schema_with = crate::shapes::unit_price)]
    #[serde(default, deserialize_with = "crate::extract::optional_decimal")]
    pub unit_price: Option<Decimal>,
    /// An entry of the quote's rate card.
    pub rate_entry_id: Option<Uuid>,
    /// `{"type": "percent"|"amount", "value": "10"}`.
    #[schema(schema_with = crate::shapes::discount)]
    #[serde(default, deserialize_with = "crate::extract::optional_discount")]
    pub discount: Option<Discount>,
    /// Percent; defaults to the organization's default rate.
    #[schema(schema_with = crate::shapes::tax_rate)]
    #[serde(default, deserialize_with = "crate::extract::optional_decimal")]
    pub tax_rate: Option<Decimal>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub selected: bool,
}

/// `createQuote` / `updateQuote`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuoteBody {
    pub customer_id: Uuid,
    #[schema(schema_with = crate::shapes::name)]
    pub title: String,
    #[schema(schema_with = crate::shapes::quote_text)]
    pub description: Option<String>,
    /// ISO 4217; defaults to the customer's billing currency.
    #[schema(schema_with = crate::shapes::quote_currency)]
    pub currency: Option<String>,
    /// Defaults to today plus the organization's validity days.
    #[schema(value_type = Option<String>, format = Date)]
    #[serde(default, deserialize_with = "crate::extract::optional_date")]
    pub valid_until: Option<NaiveDate>,
    #[schema(schema_with = crate::shapes::quote_text)]
    pub terms: Option<String>,
    #[schema(schema_with = crate::shapes::quote_text)]
    pub notes: Option<String>,
    /// Defaults to the organization's tax setting.
    #[schema(value_type = Option<TaxModeName>)]
    pub tax_mode: Option<TaxMode>,
    #[schema(schema_with = crate::shapes::discount)]
    #[serde(default, deserialize_with = "crate::extract::optional_discount")]
    pub discount: Option<Discount>,
    /// Card for `rateEntryId` lines; defaults to the customer's own card,
    /// then the organization's default card.
    pub rate_card_id: Option<Uuid>,
    #[schema(min_items = 1, max_items = 500)]
    pub lines: Vec<LineBody>,
}

fn text(v: &mut Validator, pointer: &str, raw: Option<&str>, max: usize) -> Option<Option<String>> {
    match raw.map(str::trim).filter(|t| !t.is_empty()) {
        None => Some(None),
        Some(t) if t.chars().count() > max => {
            v.push(FieldError::new(
                pointer,
                "too_long",
                format!("must be at most {max} characters"),
            ));
            None
        }
        Some(t) => Some(Some(t.to_owned())),
    }
}

/// Picks the rate card for a quote: the one named, else the customer's own
/// (from the read model), else the organization's default.
async fn quote_rate_card(
    state: &AppState,
    actor: &Actor,
    named: Option<Uuid>,
    customer_id: Uuid,
    org: &OrganizationState,
) -> Result<Option<RateCardState>, ApiError> {
    let id = match named {
        Some(id) => Some(id),
        None => {
            let own: Option<(Uuid,)> = sqlx::query_as(
                "SELECT id FROM rm_rate_cards
                 WHERE organization_id = $1 AND customer_id = $2 AND NOT archived
                 ORDER BY created_at DESC LIMIT 1",
            )
            .bind(actor.organization_id)
            .bind(customer_id)
            .fetch_optional(&state.pool)
            .await?;
            own.map(|(id,)| id)
                .or(org.settings.quotes.default_rate_card_id)
        }
    };
    let Some(id) = id else { return Ok(None) };
    match rate_card(state, actor, id).await {
        Ok((card, _)) if !card.archived => Ok(Some(card)),
        Ok(_) => Err(ApiError::Validation(vec![FieldError::new(
            "/rateCardId",
            "rate_card_archived",
            "the rate card is archived",
        )])),
        Err(ApiError::NotFound(_)) if named.is_some() => {
            Err(ApiError::Validation(vec![FieldError::new(
                "/rateCardId",
                "unknown_rate_card",
                "no such rate card",
            )]))
        }
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(other) => Err(other),
    }
}

/// Turns a request body into quote content, resolving rates, defaults and
/// the customer; every problem is reported with its pointer.
async fn content(
    state: &AppState,
    actor: &Actor,
    body: &QuoteBody,
    existing_lines: &[QuoteLine],
) -> Result<QuoteContent, ApiError> {
    let org = organization(state, actor).await?;
    let (customer, _): (Customer, u64) =
        state.customers.load(&body.customer_id.to_string()).await?;
    let Some(customer) = customer.visible_to(actor).cloned() else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "/customerId",
            "unknown_customer",
            "no such customer in this organization",
        )]));
    };
    let card = quote_rate_card(state, actor, body.rate_card_id, customer.id, &org).await?;
    let mut v = Validator::new();
    let title = v.check(Name::parse("/title", &body.title));
    let description = text(
        &mut v,
        "/description",
        body.description.as_deref(),
        MAX_TEXT_CHARS,
    );
    let terms = text(&mut v, "/terms", body.terms.as_deref(), MAX_TEXT_CHARS);
    let notes = text(&mut v, "/notes", body.notes.as_deref(), MAX_TEXT_CHARS);
    let currency = match &body.currency {
        Some(raw) => v.check(Currency::parse("/currency", raw)),
        None => Some(customer.billing.currency),
    };
    let today = Utc::now().date_naive();
    let valid_until = body
        .valid_until
        .unwrap_or_else(|| today + chrono::Days::new(u64::from(org.settings.quotes.validity_days)));
    if valid_until < today {
        v.push(FieldError::new(
            "/validUntil",
            "in_the_past",
            "a quote is valid until today or later",
        ));
    }
    let default_tax = Decimal::new(i64::from(org.settings.tax.default_rate_basis_points), 2);
    let tax_mode = body
        .tax_mode
        .unwrap_or(if org.settings.tax.prices_include_tax {
            TaxMode::Inclusive
        } else {
            TaxMode::Exclusive
        });
    let mut lines = Vec::with_capacity(body.lines.len());
    for (i, line) in body.lines.iter().enumerate() {
        let at = |field: &str| format!("/lines/{i}/{field}");
        let entry = match (line.rate_entry_id, &card) {
            (None, _) => None,
            (Some(entry_id), Some(card)) => {
                match card.entries.iter().find(|e| e.entry_id == entry_id) {
                    Some(entry) => Some(entry),
                    None => {
                        v.push(FieldError::new(
                            at("rateEntryId"),
                            "unknown_rate_entry",
                            "the quote's rate card has no such entry",
                        ));
                        continue;
                    }
                }
            }
            (Some(_), None) => {
                v.push(FieldError::new(
                    at("rateEntryId"),
                    "no_rate_card",
                    "the quote has no rate card: name one with rateCardId",
                ));
                continue;
            }
        };
        let unit_price = match (line.unit_price, entry, currency) {
            (Some(price), _, _) => Some(price),
            (None, Some(entry), Some(currency)) => match entry.rate_on(currency, today) {
                Some(rate) => Some(rate),
                None => {
                    v.push(FieldError::new(
                        at("rateEntryId"),
                        "rate_card_currency_mismatch",
                        format!(
                            "the rate card entry {} has no {currency} rate effective today",
                            entry.name.as_str()
                        ),
                    ));
                    None
                }
            },
            (None, Some(_), None) => None,
            (None, None, _) => {
                v.push(FieldError::new(
                    at("unitPrice"),
                    "required",
                    "give a unit price or a rate entry",
                ));
                None
            }
        };
        let description = match (&line.description, entry) {
            (Some(d), _) => v.check(Name::parse(&at("description"), d)),
            (None, Some(entry)) => Some(entry.name.clone()),
            (None, None) => {
                v.push(FieldError::new(
                    at("description"),
                    "required",
                    "a line needs a description",
                ));
                None
            }
        };
        let (Some(unit_price), Some(description)) = (unit_price, description) else {
            continue;
        };
        // Unchanged lines keep their id across edits.
        let line_id = existing_lines
            .get(i)
            .map_or_else(Uuid::now_v7, |existing| existing.line_id);
        lines.push(QuoteLine {
            line_id,
            description,
            quantity: line.quantity,
            unit: line.unit.or(entry.map(|e| e.unit)).unwrap_or(Unit::Each),
            unit_price,
            rate_source: match (line.unit_price, entry, &card) {
                (None, Some(entry), Some(card)) => Some(RateSource {
                    rate_card_id: card.id,
                    entry_id: entry.entry_id,
                    entry_name: entry.name.as_str().to_owned(),
                }),
                _ => None,
            },
            discount: line.discount,
            tax_rate: line.tax_rate.unwrap_or(default_tax),
            optional: line.optional,
            selected: line.selected,
        });
    }
    if body.lines.is_empty() {
        v.push(FieldError::new(
            "/lines",
            "required",
            "a quote needs a line",
        ));
    }
    let content = validated(v.finish(|| {
        Some(QuoteContent {
            customer_id: customer.id,
            title: title?,
            description: description?,
            currency: currency?,
            valid_until,
            terms: terms?,
            notes: notes?,
            tax_mode,
            discount: body.discount,
            lines,
        })
    }))?;
    // Pricing errors (negative quantities, discounts over 100%...) as 422.
    content.price().map_err(ApiError::Validation)?;
    Ok(content)
}

/// The quote as the write side knows it.
fn quote_reply(status: StatusCode, quote: &QuoteState, version: u64) -> Response {
    let mut body = serde_json::to_value(quote).unwrap_or_default();
    body["version"] = serde_json::json!(version);
    Reply {
        status,
        body,
        headers: vec![(header::ETAG, format!("\"{version}\""))],
    }
    .into_response()
}

#[utoipa::path(post, path = "/v1/quotes", tag = "quotes", request_body = QuoteBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a retry gets the first answer, not a second quote")),
    responses(
        (status = 201, description = "Created with the next quote number of the organization"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, unknown customer or rate entry, currency mismatch", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    key: IdempotencyKey,
    body: JsonBody<QuoteBody>,
) -> Response {
    let run = || async {
        caller.require(QUOTES_WRITE)?;
        let actor = caller.0.actor();
        let content = content(&state, &actor, &body.value, &[]).await?;
        let (quote, events) =
            create_numbered(&state.pool, &state.quotes, content, &meta.context(&caller)).await?;
        let mut json = serde_json::to_value(&quote).unwrap_or_default();
        json["version"] = serde_json::json!(1);
        let mut headers = vec![
            (header::ETAG, "\"1\"".to_owned()),
            (header::LOCATION, format!("/v1/quotes/{}", quote.id)),
        ];
        if let Some(position) = events.iter().map(|e| e.position).max() {
            headers.push((crate::CONSISTENCY_TOKEN, position.to_string()));
        }
        Ok(Reply {
            status: StatusCode::CREATED,
            body: json,
            headers,
        })
    };
    // A retry after a crash between commit and reply: answer from the events.
    let recover = |id: String, outcome: pivotal_event_store::commands::Outcome| {
        accepted_in(
            "/v1/quotes",
            StatusCode::CREATED,
            Uuid::parse_str(&id).unwrap_or_default(),
            &outcome,
        )
    };
    idempotent::run(
        &state,
        &caller,
        key,
        "POST /v1/quotes",
        &body.raw,
        run,
        recover,
    )
    .await
}

/// Creates a quote with the organization's next number: the counter is
/// incremented in the transaction that appends `quote.created`, so numbers
/// are unique and gap-free (ADR 0011).
pub async fn create_numbered(
    pool: &sqlx::PgPool,
    quotes: &pivotal_event_store::commands::AggregateStore<Quote>,
    content: QuoteContent,
    context: &pivotal_domain::envelope::CommandContext,
) -> Result<
    (
        QuoteState,
        Vec<pivotal_event_store::commands::CommittedEvent>,
    ),
    ApiError,
> {
    let actor = context.actor;
    let id = Uuid::now_v7();
    let year = Utc::now().year();
    let mut tx = pool.begin().await?;
    // The counter row stays locked until commit: concurrent creations of
    // one organization queue here, and a rollback returns the number.
    let (number,): (i32,) = sqlx::query_as(
        "INSERT INTO quote_number_counters (organization_id, year, last_number) VALUES ($1, $2, 1)
         ON CONFLICT (organization_id, year)
         DO UPDATE SET last_number = quote_number_counters.last_number + 1
         RETURNING last_number",
    )
    .bind(actor.organization_id)
    .bind(year)
    .fetch_one(&mut *tx)
    .await?;
    let decided = quotes
        .decide(
            &id.to_string(),
            Some(0),
            QuoteCommand::Create {
                actor,
                quote_id: id,
                number: format!("Q-{year}-{number:04}"),
                content,
            },
        )
        .await?;
    let events = quotes
        .append(&mut tx, &decided, context)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tx.commit().await?;
    let quote = decided
        .state
        .state
        .ok_or_else(|| ApiError::Internal("created quote has no state".into()))?;
    Ok((quote, events))
}

async fn load_quote(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<(QuoteState, u64), ApiError> {
    let id = uuid_of(id, "quote")?;
    let (quote, version): (Quote, u64) = state.quotes.load(&id.to_string()).await?;
    let found = quote
        .visible_to(actor)
        .cloned()
        .ok_or(ApiError::NotFound("quote"))?;
    Ok((found, version))
}

#[utoipa::path(get, path = "/v1/quotes/{id}", tag = "quotes", params(("id" = Uuid, Path)),
    responses((status = 200, description = "getQuoteById: content, pricing, status, revisions"),
        (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_quote(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(QUOTES_READ)?;
    let (quote, version) = load_quote(&state, &caller.0.actor(), &id).await?;
    Ok(quote_reply(StatusCode::OK, &quote, version))
}

async fn quote_command(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    expected: IfMatch,
    id: Uuid,
    command: QuoteCommand,
) -> Result<Response, ApiError> {
    let outcome = state
        .quotes
        .execute(&id.to_string(), expected.0, command, &meta.context(caller))
        .await?;
    let (quote, version) = load_quote(state, &caller.0.actor(), &id.to_string()).await?;
    let mut response = quote_reply(StatusCode::OK, &quote, version);
    if let Some(position) = outcome.position()
        && let Ok(v) = position.to_string().parse()
    {
        response.headers_mut().insert(crate::CONSISTENCY_TOKEN, v);
    }
    Ok(response)
}

#[utoipa::path(put, path = "/v1/quotes/{id}", tag = "quotes", request_body = QuoteBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Updated; a sent, submitted or approved quote gets a new revision back in draft"),
        (status = 409, description = "Accepted, declined, expired or cancelled", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<QuoteBody>,
) -> Result<Response, ApiError> {
    caller.require(QUOTES_WRITE)?;
    let actor = caller.0.actor();
    let (quote, _) = load_quote(&state, &actor, &id).await?;
    let content = content(&state, &actor, &body.value, &quote.content.lines).await?;
    let command = QuoteCommand::Update { actor, content };
    quote_command(&state, &caller, &meta, expected, quote.id, command).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReasonBody {
    #[schema(schema_with = crate::shapes::optional_quote_reason)]
    pub reason: Option<String>,
}

#[utoipa::path(delete, path = "/v1/quotes/{id}", tag = "quotes",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "deleteQuote: cancelled; the history is kept")),
    security(("bearer" = [])))]
pub async fn delete_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(QUOTES_WRITE)?;
    let (quote, _) = load_quote(&state, &caller.0.actor(), &id).await?;
    let command = QuoteCommand::Cancel {
        actor: caller.0.actor(),
        reason: None,
    };
    quote_command(&state, &caller, &meta, expected, quote.id, command).await
}

#[utoipa::path(post, path = "/v1/quotes/{id}/cancel", tag = "quotes", request_body = ReasonBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Cancelled"), (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn cancel_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<ReasonBody>,
) -> Result<Response, ApiError> {
    caller.require(QUOTES_WRITE)?;
    let (quote, _) = load_quote(&state, &caller.0.actor(), &id).await?;
    let command = QuoteCommand::Cancel {
        actor: caller.0.actor(),
        reason: body.value.reason.clone(),
    };
    quote_command(&state, &caller, &meta, expected, quote.id, command).await
}

#[utoipa::path(post, path = "/v1/quotes/{id}/submit", tag = "quotes", request_body = crate::auth::EmptyBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "pending_approval above the organization's threshold, else approved"),
        (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn submit_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    _body: JsonBody<crate::auth::EmptyBody>,
) -> Result<Response, ApiError> {
    caller.require(QUOTES_WRITE)?;
    let actor = caller.0.actor();
    let (quote, _) = load_quote(&state, &actor, &id).await?;
    let org = organization(&state, &actor).await?;
    let command = QuoteCommand::SubmitForApproval {
        actor,
        threshold: org.settings.quotes.approval_threshold,
    };
    quote_command(&state, &caller, &meta, expected, quote.id, command).await
}

/// Approving and rejecting need `quotes:approve`, possibly with conditions
/// on the quote (e.g. the accountant's amount limit).
async fn authorize_approval(
    state: &AppState,
    caller: &Caller,
    quote: &QuoteState,
) -> Result<(), ApiError> {
    let mut context = serde_json::Map::new();
    context.insert(
        "totalAmount".into(),
        serde_json::Value::String(quote.pricing.total.to_string()),
    );
    context.insert(
        "currency".into(),
        serde_json::Value::String(quote.content.currency.to_string()),
    );
    context.insert(
        "authorId".into(),
        serde_json::Value::String(quote.author_id.to_string()),
    );
    access::authorize(state, caller, QUOTES_APPROVE, context).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApproveBody {
    #[schema(schema_with = crate::shapes::optional_quote_reason)]
    pub comment: Option<String>,
}

#[utoipa::path(post, path = "/v1/quotes/{id}/approve", tag = "quotes", request_body = ApproveBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Approved"),
        (status = 403, description = "Lacks quotes:approve (for this amount), or is the author", body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn approve_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<ApproveBody>,
) -> Result<Response, ApiError> {
    let (quote, _) = load_quote(&state, &caller.0.actor(), &id).await?;
    authorize_approval(&state, &caller, &quote).await?;
    let command = QuoteCommand::Approve {
        actor: caller.0.actor(),
        comment: body.value.comment.clone(),
    };
    quote_command(&state, &caller, &meta, expected, quote.id, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RejectBody {
    #[schema(schema_with = crate::shapes::quote_reason)]
    pub reason: String,
}

#[utoipa::path(post, path = "/v1/quotes/{id}/reject", tag = "quotes", request_body = RejectBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Rejected"), (status = 422, description = "No reason", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn reject_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<RejectBody>,
) -> Result<Response, ApiError> {
    let (quote, _) = load_quote(&state, &caller.0.actor(), &id).await?;
    authorize_approval(&state, &caller, &quote).await?;
    let command = QuoteCommand::Reject {
        actor: caller.0.actor(),
        reason: body.value.reason.clone(),
    };
    quote_command(&state, &caller, &meta, expected, quote.id, command).await
}

#[utoipa::path(post, path = "/v1/quotes/{id}/send", tag = "quotes", request_body = crate::auth::EmptyBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Sent"), (status = 409, description = "Not approved", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn send_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    _body: JsonBody<crate::auth::EmptyBody>,
) -> Result<Response, ApiError> {
    caller.require(QUOTES_WRITE)?;
    let (quote, _) = load_quote(&state, &caller.0.actor(), &id).await?;
    let command = QuoteCommand::Send {
        actor: caller.0.actor(),
    };
    quote_command(&state, &caller, &meta, expected, quote.id, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionBody {
    #[schema(schema_with = crate::shapes::decided_by)]
    pub by: String,
    #[schema(schema_with = crate::shapes::optional_quote_reason)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/quotes/{id}/accept", tag = "quotes", request_body = DecisionBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Accepted (who and when recorded)"), (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn accept_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<DecisionBody>,
) -> Result<Response, ApiError> {
    caller.require(QUOTES_WRITE)?;
    let (quote, _) = load_quote(&state, &caller.0.actor(), &id).await?;
    let by = validated(Name::parse("/by", &body.value.by).map_err(|e| vec![e]))?;
    let command = QuoteCommand::Accept {
        actor: caller.0.actor(),
        accepted_by: by,
        at: Utc::now(),
    };
    quote_command(&state, &caller, &meta, expected, quote.id, command).await
}

#[utoipa::path(post, path = "/v1/quotes/{id}/decline", tag = "quotes", request_body = DecisionBody,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Declined"), (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn decline_quote(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    expected: IfMatch,
    Path(id): Path<String>,
    body: JsonBody<DecisionBody>,
) -> Result<Response, ApiError> {
    caller.require(QUOTES_WRITE)?;
    let (quote, _) = load_quote(&state, &caller.0.actor(), &id).await?;
    let by = validated(Name::parse("/by", &body.value.by).map_err(|e| vec![e]))?;
    let command = QuoteCommand::Decline {
        actor: caller.0.actor(),
        declined_by: by,
        reason: body.value.reason.clone(),
        at: Utc::now(),
    };
    quote_command(&state, &caller, &meta, expected, quote.id, command).await
}

// The values `paper` takes, named in the OpenAPI document.
/// A paper size.
#[derive(Debug, ToSchema)]
#[schema(as = Paper)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum PaperName {
    A4,
    Letter,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PdfQuery {
    /// A template name from `/v1/quote-templates`; default `standard`.
    pub template: Option<String>,
    /// `a4` (default) or `letter`.
    pub paper: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplatesBody {
    pub templates: Vec<crate::pdf::TemplateInfo>,
}

#[utoipa::path(get, path = "/v1/quote-templates", tag = "quotes",
    responses((status = 200, description = "getAvailableTemplates", body = TemplatesBody)),
    security(("bearer" = [])))]
pub async fn list_templates(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TemplatesBody>, ApiError> {
    caller.require(QUOTES_READ)?;
    Ok(Json(TemplatesBody {
        templates: crate::pdf::templates_of(state.templates_dir.as_deref(), caller.0.claims.org),
    }))
}

#[utoipa::path(get, path = "/v1/quotes/{id}/pdf", tag = "quotes",
    params(("id" = Uuid, Path),
        ("template" = Option<String>, Query, pattern = r"^[A-Za-z0-9_-]{1,64}$",
            description = "A template name from /v1/quote-templates; default standard"),
        ("paper" = inline(Option<PaperName>), Query, description = "Paper size; default a4")),
    responses((status = 200, description = "generateQuotePDF", content_type = "application/pdf"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "The query string repeats a parameter (invalid_query)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown template or paper", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn quote_pdf(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<PdfQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    caller.require(QUOTES_READ)?;
    let actor = caller.0.actor();
    let (quote, _) = load_quote(&state, &actor, &id).await?;
    let org = organization(&state, &actor).await?;
    let (customer, _): (Customer, u64) = state
        .customers
        .load(&quote.content.customer_id.to_string())
        .await?;
    let customer = customer
        .visible_to(&actor)
        .cloned()
        .ok_or(ApiError::NotFound("customer"))?;
    let template = query.template.unwrap_or_else(|| "standard".into());
    let paper = match query.paper.as_deref().unwrap_or("a4") {
        "a4" => crate::pdf::Paper::A4,
        "letter" => crate::pdf::Paper::Letter,
        _ => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "/paper",
                "unknown_paper",
                "paper is a4 or letter",
            )]));
        }
    };
    let bytes = crate::pdf::render(
        state.templates_dir.as_deref(),
        &template,
        paper,
        &org,
        &customer,
        &quote,
    )
    .await?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/pdf"),
    );
    if let Ok(v) = format!("inline; filename=\"{}.pdf\"", quote.number).parse() {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// Advisory-lock key of the expiry sweep (one replica sweeps at a time).
const EXPIRY_LOCK: i64 = 0x5049_564f_5145_5850;

/// The scheduled check: every sent quote whose valid-until date is before
/// `today` gets `quote.status.changed` to `expired`, once (the aggregate
/// refuses to expire a quote twice). Returns how many expired; 0 when
/// another replica holds the sweep.
pub async fn expire_due(
    pool: &sqlx::PgPool,
    quotes: &pivotal_event_store::commands::AggregateStore<Quote>,
    today: NaiveDate,
) -> Result<usize, sqlx::Error> {
    let mut lock = pool.acquire().await?;
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(EXPIRY_LOCK)
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Ok(0);
    }
    // On the lock's connection: a sweep with nothing due takes one
    // connection, not a second while it holds the first.
    let due: Result<Vec<(Uuid, Uuid)>, sqlx::Error> = sqlx::query_as(
        "SELECT organization_id, id FROM rm_quotes WHERE status = 'sent' AND valid_until < $1",
    )
    .bind(today)
    .fetch_all(&mut *lock)
    .await;
    let mut expired = 0;
    if let Ok(due) = &due {
        for (organization_id, id) in due {
            let actor = Actor {
                organization_id: *organization_id,
                user_id: Uuid::nil(),
            };
            let context = pivotal_domain::envelope::CommandContext {
                actor,
                timestamp: Utc::now(),
                metadata: pivotal_domain::envelope::EventMetadata {
                    correlation_id: format!("quote-expiry-{today}"),
                    causation_id: None,
                    source: "quote-expiry".into(),
                    user_agent: None,
                    ip_address: None,
                },
                idempotency_key: None,
            };
            match quotes
                .execute(
                    &id.to_string(),
                    None,
                    QuoteCommand::Expire { actor, today },
                    &context,
                )
                .await
            {
                Ok(outcome) if !outcome.events.is_empty() => expired += 1,
                Ok(_) => {}
                // Already expired, accepted or changed since the read model saw it.
                Err(pivotal_event_store::commands::ExecuteError::Domain(_)) => {}
                Err(error) => tracing::warn!(%error, quote = %id, "cannot expire a quote"),
            }
        }
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(EXPIRY_LOCK)
        .execute(&mut *lock)
        .await?;
    due.map(|_| expired)
}
