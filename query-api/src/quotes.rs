//! `quote(id)`, `quotes(...)` and `rateCards`, read from `rm_quotes` and
//! `rm_rate_cards`. Money is an exact decimal string in the quote's
//! currency.

use async_graphql::connection::{Connection, Edge, EmptyFields, query};
use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use pivotal_domain::permissions::Permission;
use pivotal_domain::pricing::{Discount, QuotePricing};
use pivotal_domain::quote::{Quote as QuoteAggregate, QuoteState};
use pivotal_domain::rate_card::RateCard as RateCardAggregate;
use pivotal_domain::values::TimeZone;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::consistency::{ConsistencyToken, Reached};
use crate::cursor::{OrderDirection, PageCursor};
use crate::errors;
use crate::history::{self, HistoryEvent};
use crate::scalars::{Date, Instant};
use crate::schema::{caller, pool};

const QUOTES_READ: Permission = Permission::new("quotes", "read");
const RATE_CARDS_READ: Permission = Permission::new("rate_cards", "read");

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum QuoteStatus {
    Draft,
    PendingApproval,
    Approved,
    Rejected,
    Sent,
    Accepted,
    Declined,
    Expired,
    Cancelled,
}

impl QuoteStatus {
    fn column(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::PendingApproval => "pending_approval",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Sent => "sent",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    fn of(status: pivotal_domain::quote::QuoteStatus) -> Self {
        use pivotal_domain::quote::QuoteStatus as S;
        match status {
            S::Draft => Self::Draft,
            S::PendingApproval => Self::PendingApproval,
            S::Approved => Self::Approved,
            S::Rejected => Self::Rejected,
            S::Sent => Self::Sent,
            S::Accepted => Self::Accepted,
            S::Declined => Self::Declined,
            S::Expired => Self::Expired,
            S::Cancelled => Self::Cancelled,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct QuoteLine {
    pub number: i32,
    pub description: String,
    pub quantity: String,
    pub unit: String,
    pub unit_price: String,
    /// `percent` or `amount`, with its value; null without a discount.
    pub discount_type: Option<String>,
    pub discount_value: Option<String>,
    pub tax_rate: String,
    pub optional: bool,
    pub selected: bool,
    /// Name of the rate card entry the price came from.
    pub rate_entry: Option<String>,
    pub amount: String,
    pub line_discount: String,
    pub quote_discount: String,
    pub net: String,
    pub tax: String,
    pub total: String,
    /// False for an optional line not selected.
    pub included: bool,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct TaxLine {
    pub rate: String,
    pub taxable: String,
    pub tax: String,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct QuoteTotals {
    pub subtotal: String,
    pub line_discounts: String,
    pub quote_discount: String,
    pub net: String,
    pub tax: String,
    pub total: String,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct QuoteRevision {
    pub revision: i32,
    pub title: String,
    pub lines: Vec<QuoteLine>,
    pub totals: QuoteTotals,
    pub taxes: Vec<TaxLine>,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct StatusChange {
    pub from: String,
    pub to: String,
    pub reason: Option<String>,
    pub changed_by: Option<ID>,
    pub customer_contact: Option<String>,
    pub at: Instant,
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Quote {
    pub id: ID,
    pub number: String,
    pub status: QuoteStatus,
    pub revision: i32,
    pub customer_id: ID,
    pub title: String,
    pub description: Option<String>,
    pub currency: String,
    pub valid_until: Date,
    pub terms: Option<String>,
    pub notes: Option<String>,
    /// `exclusive` or `inclusive`.
    pub tax_mode: String,
    pub lines: Vec<QuoteLine>,
    pub totals: QuoteTotals,
    pub taxes: Vec<TaxLine>,
    /// Earlier revisions, oldest first.
    pub revisions: Vec<QuoteRevision>,
    pub author_id: ID,
    pub approved_by: Option<ID>,
    /// Where the PDF is rendered (command API).
    pub pdf_path: String,
    pub version: i64,
    pub created_at: Instant,
    pub updated_at: Instant,
    #[graphql(skip)]
    organization_id: Uuid,
    #[graphql(skip)]
    uuid: Uuid,
    /// The token the quote was read under, which its `customer` honours.
    #[graphql(skip)]
    reached: Option<Reached>,
}

fn lines(content: &pivotal_domain::quote::QuoteContent, pricing: &QuotePricing) -> Vec<QuoteLine> {
    content
        .lines
        .iter()
        .zip(&pricing.lines)
        .enumerate()
        .map(|(i, (l, p))| {
            let (discount_type, discount_value) = match l.discount {
                None => (None, None),
                Some(Discount::Percent(v)) => (Some("percent".to_owned()), Some(v.to_string())),
                Some(Discount::Amount(v)) => (Some("amount".to_owned()), Some(v.to_string())),
            };
            QuoteLine {
                number: i32::try_from(i + 1).unwrap_or(i32::MAX),
                description: l.description.as_str().to_owned(),
                quantity: l.quantity.normalize().to_string(),
                unit: l.unit.as_str().to_owned(),
                unit_price: l.unit_price.to_string(),
                discount_type,
                discount_value,
                tax_rate: p.tax_rate.to_string(),
                optional: l.optional,
                selected: l.selected,
                rate_entry: l.rate_source.as_ref().map(|s| s.entry_name.clone()),
                amount: p.amount.to_string(),
                line_discount: p.line_discount.to_string(),
                quote_discount: p.quote_discount.to_string(),
                net: p.net.to_string(),
                tax: p.tax.to_string(),
                total: p.total.to_string(),
                included: p.included,
            }
        })
        .collect()
}

fn totals(p: &QuotePricing) -> QuoteTotals {
    QuoteTotals {
        subtotal: p.subtotal.to_string(),
        line_discounts: p.line_discounts.to_string(),
        quote_discount: p.quote_discount.to_string(),
        net: p.net_total.to_string(),
        tax: p.tax_total.to_string(),
        total: p.total.to_string(),
    }
}

fn taxes(p: &QuotePricing) -> Vec<TaxLine> {
    p.taxes
        .iter()
        .map(|t| TaxLine {
            rate: t.rate.to_string(),
            taxable: t.taxable.to_string(),
            tax: t.tax.to_string(),
        })
        .collect()
}

#[derive(sqlx::FromRow, Debug, Serialize, Deserialize)]
struct QuoteRow {
    state: sqlx::types::Json<QuoteAggregate>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Quote {
    fn of(s: &QuoteState, row: &QuoteRow, reached: Option<&Reached>) -> Self {
        Self {
            id: ID(s.id.to_string()),
            number: s.number.clone(),
            status: QuoteStatus::of(s.status),
            revision: i32::try_from(s.revision).unwrap_or(i32::MAX),
            customer_id: ID(s.content.customer_id.to_string()),
            title: s.content.title.as_str().to_owned(),
            description: s.content.description.clone(),
            currency: s.content.currency.as_str().to_owned(),
            valid_until: s.content.valid_until.into(),
            terms: s.content.terms.clone(),
            notes: s.content.notes.clone(),
            tax_mode: match s.content.tax_mode {
                pivotal_domain::pricing::TaxMode::Exclusive => "exclusive".into(),
                pivotal_domain::pricing::TaxMode::Inclusive => "inclusive".into(),
            },
            lines: lines(&s.content, &s.pricing),
            totals: totals(&s.pricing),
            taxes: taxes(&s.pricing),
            revisions: s
                .earlier_revisions
                .iter()
                .map(|r| QuoteRevision {
                    revision: i32::try_from(r.revision).unwrap_or(i32::MAX),
                    title: r.content.title.as_str().to_owned(),
                    lines: lines(&r.content, &r.pricing),
                    totals: totals(&r.pricing),
                    taxes: taxes(&r.pricing),
                })
                .collect(),
            author_id: ID(s.author_id.to_string()),
            approved_by: s.approved_by.map(|u| ID(u.to_string())),
            pdf_path: format!("/v1/quotes/{}/pdf", s.id),
            version: row.version,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
            organization_id: s.organization_id,
            uuid: s.id,
            reached: reached.cloned(),
        }
    }

    fn from_row(row: &QuoteRow, reached: Option<&Reached>) -> Option<Self> {
        row.state
            .0
            .state
            .as_ref()
            .map(|s| Self::of(s, row, reached))
    }
}

#[ComplexObject]
impl Quote {
    /// The customer (needs `customers:read`); batched across a page. Under
    /// a consistency token, as of that token: a change to the customer
    /// made before the token's command is shown.
    async fn customer(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<crate::customers::Customer>> {
        caller(ctx, Permission::CUSTOMERS_READ)?;
        let loader =
            ctx.data::<async_graphql::dataloader::DataLoader<crate::customers::CustomerLoader>>()?;
        let id = Uuid::parse_str(&self.customer_id).map_err(errors::internal)?;
        if let Some(reached) = &self.reached {
            crate::consistency::related(ctx, reached, "customer", id).await?;
        }
        loader.load_one(id).await.map_err(errors::database)
    }

    /// Every status change, oldest first (from the event history).
    async fn status_history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<StatusChange>> {
        let principal = caller(ctx, QUOTES_READ)?;
        if principal.claims.org != self.organization_id {
            return Ok(Vec::new());
        }
        let events = history::of_aggregate(
            pool(ctx)?,
            "quote",
            &self.uuid.to_string(),
            self.organization_id,
        )
        .await?;
        Ok(events
            .into_iter()
            .filter(|e| e.event_type == "quote.status.changed")
            .filter_map(|e| {
                let d = &e.data.0;
                Some(StatusChange {
                    from: d.get("oldStatus")?.as_str()?.to_owned(),
                    to: d.get("newStatus")?.as_str()?.to_owned(),
                    reason: d.get("reason").and_then(|r| r.as_str()).map(str::to_owned),
                    changed_by: d
                        .get("changedBy")
                        .and_then(|r| r.as_str())
                        .map(|u| ID(u.to_owned())),
                    customer_contact: d
                        .get("customerContact")
                        .and_then(|r| r.as_str())
                        .map(str::to_owned),
                    at: e.timestamp,
                })
            })
            .collect())
    }

    /// Every event of this quote, oldest first (needs `events:read`).
    async fn history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<HistoryEvent>> {
        let principal = caller(ctx, Permission::EVENTS_READ)?;
        if principal.claims.org != self.organization_id {
            return Ok(Vec::new());
        }
        history::of_aggregate(
            pool(ctx)?,
            "quote",
            &self.uuid.to_string(),
            self.organization_id,
        )
        .await
    }
}

#[derive(InputObject, Debug, Default, Clone)]
pub struct QuoteFilter {
    /// In this status (not with `statuses`).
    pub status: Option<QuoteStatus>,
    /// In any of these statuses (not with `status`): the open pipeline,
    /// say, as `[PENDING_APPROVAL, APPROVED, SENT]`.
    pub statuses: Option<Vec<QuoteStatus>>,
    pub customer_id: Option<ID>,
    /// Created on or after this date, as the organization's time zone
    /// has it begin.
    pub created_from: Option<Date>,
    /// Created on or before this date, as the organization's time zone
    /// has it end.
    pub created_to: Option<Date>,
    /// Valid until this date or later (expiring on or after it).
    pub valid_until_from: Option<Date>,
    /// Valid until this date or earlier (expiring on or before it).
    pub valid_until_to: Option<Date>,
    /// Case-insensitive match on number or title.
    pub search: Option<String>,
}

impl QuoteFilter {
    /// The statuses a quote must be in, as the rows spell them: `status`'s
    /// or `statuses`', none for any status.
    fn status_columns(&self) -> Vec<&'static str> {
        self.status
            .iter()
            .chain(self.statuses.iter().flatten())
            .map(|s| s.column())
            .collect()
    }

    /// Refuses a filter that could only be a mistake (`BAD_USER_INPUT`):
    /// `status` and `statuses` together (which one was meant?), `statuses`
    /// naming none, and a date range that ends before it starts (naming
    /// both bounds). Each would match nothing or not what was asked.
    fn check(&self) -> async_graphql::Result<()> {
        match &self.statuses {
            Some(_) if self.status.is_some() => {
                return Err(errors::bad_input("give status or statuses, not both"));
            }
            Some(statuses) if statuses.is_empty() => {
                return Err(errors::bad_input("statuses must name at least one status"));
            }
            _ => {}
        }
        for (from_name, from, to_name, to) in [
            (
                "createdFrom",
                self.created_from,
                "createdTo",
                self.created_to,
            ),
            (
                "validUntilFrom",
                self.valid_until_from,
                "validUntilTo",
                self.valid_until_to,
            ),
        ] {
            if let (Some(from), Some(to)) = (from, to)
                && from > to
            {
                return Err(errors::bad_input(format!(
                    "{from_name} ({from}) must be on or before {to_name} ({to})"
                )));
            }
        }
        Ok(())
    }
}

/// The instants a quote's creation is filtered between: the start of
/// `createdFrom`'s day and the start of the day after `createdTo`'s, as
/// the organization's time zone has them begin (its settings'
/// `timeZone`), so that a day is the organization's day, not UTC's.
#[derive(Debug, Clone, Copy, Default)]
struct CreatedBetween {
    from: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
}

impl CreatedBetween {
    async fn of(
        pool: &sqlx::PgPool,
        organization: Uuid,
        filter: &QuoteFilter,
    ) -> async_graphql::Result<Self> {
        if filter.created_from.is_none() && filter.created_to.is_none() {
            return Ok(Self::default());
        }
        let stored: Option<(String,)> =
            sqlx::query_as("SELECT time_zone FROM rm_organizations WHERE id = $1")
                .bind(organization)
                .fetch_optional(pool)
                .await
                .map_err(errors::database)?;
        // An organization its projection has not written yet is taken as
        // UTC, as it is created unless it names another zone.
        let zone = stored
            .and_then(|(name,)| TimeZone::parse("", &name).ok())
            .unwrap_or_else(TimeZone::utc);
        Ok(Self {
            from: filter.created_from.map(|day| zone.start_of(day.0)),
            before: filter
                .created_to
                .and_then(|day| day.0.succ_opt())
                .map(|day| zone.start_of(day)),
        })
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum QuoteOrderField {
    #[default]
    CreatedAt,
    Number,
    Total,
    ValidUntil,
    /// The last change: the most recently changed first with `DESC`.
    UpdatedAt,
}

/// Quotes are listed newest first unless asked otherwise.
#[derive(InputObject, Debug, Clone, Copy)]
pub struct QuoteOrder {
    #[graphql(default)]
    pub field: QuoteOrderField,
    #[graphql(default_with = "OrderDirection::Desc")]
    pub direction: OrderDirection,
}

impl Default for QuoteOrder {
    fn default() -> Self {
        Self {
            field: QuoteOrderField::default(),
            direction: OrderDirection::Desc,
        }
    }
}

/// What a page of quotes says about the whole list: counted only when a
/// query selects it, so a page that does not ask pays for no count.
#[derive(Debug)]
pub struct QuoteConnectionInfo {
    pool: sqlx::PgPool,
    organization: Uuid,
    filter: QuoteFilter,
    customer: Option<Uuid>,
    created: CreatedBetween,
}

#[Object]
impl QuoteConnectionInfo {
    /// Every quote the filter matches, not only this page.
    async fn total_count(&self) -> async_graphql::Result<i64> {
        let filter = &self.filter;
        let by_status_at_most = self.customer.is_none()
            && filter.created_from.is_none()
            && filter.created_to.is_none()
            && filter.valid_until_from.is_none()
            && filter.valid_until_to.is_none()
            && filter.search.as_deref().is_none_or(|s| s.trim().is_empty());
        let count = if by_status_at_most {
            // The counts kept beside the rows (ADR 0041), a row or two
            // instead of the organization's quotes.
            crate::schema::kept_count(
                "rm_quote_counts",
                "quotes",
                self.organization,
                &filter.status_columns(),
            )
        } else {
            let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM rm_quotes");
            push_filters(
                &mut count,
                self.organization,
                filter,
                self.customer,
                self.created,
            );
            count
        };
        crate::schema::total_count(&self.pool, count).await
    }
}

/// Position of a quote in one ordering (ADR 0059): the ordering's name,
/// the quote's sort key as text and its id. A page read after it starts
/// where it left off however many quotes were added or changed before it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuoteCursor {
    /// Which ordering the cursor belongs to.
    o: String,
    /// Sort key as text: RFC 3339 time, number, decimal total or ISO date.
    k: String,
    id: Uuid,
}

impl crate::cursor::Ordered for QuoteCursor {
    fn ordering(&self) -> &str {
        &self.o
    }
}

/// The columns of a listed quote its cursor is made of.
#[derive(sqlx::FromRow)]
struct ListedQuote {
    #[sqlx(flatten)]
    row: QuoteRow,
    id: Uuid,
    number: String,
    /// The total's exact text (`total::text`), named apart from the column
    /// so that `ORDER BY total` sorts the number, not its text.
    total_text: String,
    valid_until: NaiveDate,
}

impl QuoteOrderField {
    /// The column the list is sorted by. Numbers are unique within an
    /// organization, so they need no id after them; every other ordering
    /// breaks ties by id. Each is served by an index led by the
    /// organization (ADR 0059).
    fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::Number => "number",
            Self::Total => "total",
            Self::ValidUntil => "valid_until",
            Self::UpdatedAt => "updated_at",
        }
    }

    fn tie_broken(self) -> bool {
        self != Self::Number
    }

    fn key(self, quote: &ListedQuote) -> String {
        match self {
            Self::CreatedAt => quote
                .row
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            Self::Number => quote.number.clone(),
            Self::Total => quote.total_text.clone(),
            Self::ValidUntil => quote.valid_until.to_string(),
            Self::UpdatedAt => quote
                .row
                .updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }

    /// Appends `AND (column, id) > (key, id)` (or `<`) for a cursor of
    /// this ordering; a key that is not of the column's type is a cursor
    /// this API did not hand out.
    fn push_bound(
        self,
        qb: &mut QueryBuilder<'_, Postgres>,
        cursor: &QuoteCursor,
        greater: bool,
    ) -> async_graphql::Result<()> {
        let malformed = || errors::bad_input(crate::cursor::MalformedCursor.to_string());
        let op = if greater { ">" } else { "<" };
        let column = self.column();
        if self.tie_broken() {
            qb.push(format!(" AND ({column}, id) {op} ("));
        } else {
            qb.push(format!(" AND {column} {op} "));
        }
        match self {
            Self::CreatedAt | Self::UpdatedAt => {
                let at = DateTime::parse_from_rfc3339(&cursor.k).map_err(|_| malformed())?;
                qb.push_bind(at.with_timezone(&Utc));
            }
            Self::Number => {
                qb.push_bind(cursor.k.clone());
            }
            Self::Total => {
                let total: rust_decimal::Decimal = cursor.k.parse().map_err(|_| malformed())?;
                qb.push_bind(total.to_string()).push("::numeric");
            }
            Self::ValidUntil => {
                let day: NaiveDate = cursor.k.parse().map_err(|_| malformed())?;
                qb.push_bind(day);
            }
        }
        if self.tie_broken() {
            qb.push(", ").push_bind(cursor.id).push(")");
        }
        Ok(())
    }
}

fn order_name(order: QuoteOrder) -> String {
    format!("{:?}:{:?}", order.field, order.direction)
}

pub type QuoteConnection = Connection<
    PageCursor<QuoteCursor>,
    Quote,
    QuoteConnectionInfo,
    EmptyFields,
    async_graphql::connection::DefaultConnectionName,
    async_graphql::connection::DefaultEdgeName,
>;

fn push_filters(
    qb: &mut QueryBuilder<'_, Postgres>,
    organization: Uuid,
    filter: &QuoteFilter,
    customer: Option<Uuid>,
    created: CreatedBetween,
) {
    qb.push(" WHERE organization_id = ").push_bind(organization);
    let statuses = filter.status_columns();
    if !statuses.is_empty() {
        qb.push(" AND status = ANY(").push_bind(statuses).push(")");
    }
    if let Some(customer) = customer {
        qb.push(" AND customer_id = ").push_bind(customer);
    }
    if let Some(from) = created.from {
        qb.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(before) = created.before {
        qb.push(" AND created_at < ").push_bind(before);
    }
    if let Some(from) = filter.valid_until_from {
        qb.push(" AND valid_until >= ").push_bind(from.0);
    }
    if let Some(to) = filter.valid_until_to {
        qb.push(" AND valid_until <= ").push_bind(to.0);
    }
    if let Some(search) = filter.search.as_ref().filter(|s| !s.trim().is_empty()) {
        // ILIKE lower-cases the pattern with PostgreSQL's lower case, as
        // it does the titles (ADR 0060).
        let pattern = format!(
            "%{}%",
            search
                .trim()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        qb.push(" AND (number ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR title ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
}

/// A rate card and its entries.
#[derive(SimpleObject, Debug, Clone)]
pub struct RateCard {
    pub id: ID,
    pub name: String,
    pub customer_id: Option<ID>,
    pub archived: bool,
    /// `[{entryId, name, unit, rates: [{currency, amount, effectiveFrom}]}]`.
    pub entries: Json<serde_json::Value>,
    pub version: i64,
}

#[derive(Debug, Default)]
pub struct QuoteQuery;

#[Object]
impl QuoteQuery {
    /// One quote of the caller's organization, or null.
    async fn quote(
        &self,
        ctx: &Context<'_>,
        id: ID,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<Option<Quote>> {
        let principal = caller(ctx, QUOTES_READ)?;
        let Ok(id) = Uuid::parse_str(&id) else {
            return Err(errors::bad_input("id is not a quote id"));
        };
        let reached = crate::consistency::honour(ctx, consistency_token.as_ref()).await?;
        let organization = principal.claims.org;
        let pool = pool(ctx)?.clone();
        let load = || async move {
            let row: Option<QuoteRow> = sqlx::query_as(
                "SELECT state, version, created_at, updated_at FROM rm_quotes
                 WHERE organization_id = $1 AND id = $2",
            )
            .bind(organization)
            .bind(id)
            .fetch_optional(&pool)
            .await
            .map_err(errors::database)?;
            Ok(row.map(|r| {
                let version = r.version;
                (r, version)
            }))
        };
        let fresh = reached.is_some();
        let row = crate::cache::lookup(ctx, fresh, "quote", organization, id, load).await?;
        Ok(row
            .as_ref()
            .and_then(|row| Quote::from_row(row, reached.as_ref())))
    }

    /// Quotes of the caller's organization, as a Relay connection: `first`
    /// and `after` forward, `last` and `before` backward.
    #[allow(clippy::too_many_arguments)]
    async fn quotes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A page's `endCursor`: the rows after it.")] after: Option<String>,
        #[graphql(desc = "A page's `startCursor`: the rows before it.")] before: Option<String>,
        #[graphql(
            desc = "Rows from the start, or after `after`: 0 to 100 (20 when neither `first` nor `last` is given; `first` wins when both are)."
        )]
        first: Option<i32>,
        #[graphql(desc = "Rows from the end, or before `before`: 0 to 100.")] last: Option<i32>,
        filter: Option<QuoteFilter>,
        order_by: Option<QuoteOrder>,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<QuoteConnection> {
        let principal = caller(ctx, QUOTES_READ)?;
        let organization = principal.claims.org;
        let pool = pool(ctx)?.clone();
        let filter = filter.unwrap_or_default();
        let order = order_by.unwrap_or_default();
        crate::cursor::page_sizes(first, last)?;
        filter.check()?;
        let customer = match &filter.customer_id {
            None => None,
            Some(id) => Some(
                Uuid::parse_str(id).map_err(|_| errors::bad_input("customerId is not an id"))?,
            ),
        };
        let reached = crate::consistency::honour(ctx, consistency_token.as_ref()).await?;
        let created = CreatedBetween::of(&pool, organization, &filter).await?;
        let result = query(
            after,
            before,
            first,
            last,
            |after: Option<PageCursor<QuoteCursor>>,
             before: Option<PageCursor<QuoteCursor>>,
             first,
             last| async move {
                let window = crate::cursor::window(
                    after.as_ref(),
                    before.as_ref(),
                    &order_name(order),
                    first,
                    last,
                )?;
                let forward_asc = order.direction == OrderDirection::Asc;
                let mut qb = QueryBuilder::<Postgres>::new(
                    "SELECT state, version, created_at, updated_at, id, number, total::text AS total_text,
                            valid_until
                     FROM rm_quotes",
                );
                push_filters(&mut qb, organization, &filter, customer, created);
                if let Some(after) = &after {
                    order.field.push_bound(&mut qb, after, forward_asc)?;
                }
                if let Some(before) = &before {
                    order.field.push_bound(&mut qb, before, !forward_asc)?;
                }
                let dir = window.sql_direction(order.direction);
                qb.push(format!(" ORDER BY {} {dir}", order.field.column()));
                if order.field.tie_broken() {
                    qb.push(format!(", id {dir}"));
                }
                qb.push(" LIMIT ").push_bind(window.fetch());
                let rows: Vec<ListedQuote> = qb
                    .build_query_as()
                    .fetch_all(&pool)
                    .await
                    .map_err(errors::database)?;
                let (rows, has_previous, has_next) =
                    window.page(rows, after.is_some(), before.is_some());
                let mut connection = Connection::with_additional_fields(
                    has_previous,
                    has_next,
                    QuoteConnectionInfo {
                        pool: pool.clone(),
                        organization,
                        filter: filter.clone(),
                        customer,
                        created,
                    },
                );
                connection.edges.extend(rows.iter().filter_map(|listed| {
                    let quote = Quote::from_row(&listed.row, reached.as_ref())?;
                    let cursor = QuoteCursor {
                        o: order_name(order),
                        k: order.field.key(listed),
                        id: listed.id,
                    };
                    Some(Edge::new(PageCursor(cursor), quote))
                }));
                Ok::<_, async_graphql::Error>(connection)
            },
        )
        .await;
        result.map_err(errors::keep_code)
    }

    /// The organization's rate cards, archived ones last.
    async fn rate_cards(
        &self,
        ctx: &Context<'_>,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<Vec<RateCard>> {
        let principal = caller(ctx, RATE_CARDS_READ)?;
        crate::consistency::honour(ctx, consistency_token.as_ref()).await?;
        let rows: Vec<(sqlx::types::Json<RateCardAggregate>, i64)> = sqlx::query_as(
            "SELECT state, version FROM rm_rate_cards WHERE organization_id = $1
             ORDER BY archived, lower(name), id",
        )
        .bind(principal.claims.org)
        .fetch_all(pool(ctx)?)
        .await
        .map_err(errors::database)?;
        Ok(rows
            .into_iter()
            .filter_map(|(state, version)| {
                let s = state.0.state?;
                Some(RateCard {
                    id: ID(s.id.to_string()),
                    name: s.name.as_str().to_owned(),
                    customer_id: s.customer_id.map(|c| ID(c.to_string())),
                    archived: s.archived,
                    entries: Json(serde_json::to_value(&s.entries).unwrap_or_default()),
                    version,
                })
            })
            .collect())
    }
}
