//! `customer(id)` and `customers(...)`, read from `rm_customers`.

use async_graphql::connection::{Connection, Edge, EmptyFields, query};
use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use pivotal_domain::permissions::Permission;
use pivotal_projectors::customers::CustomerRow;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::consistency::ConsistencyToken;
use crate::cursor::{OrderDirection, PageCursor};
use crate::errors;
use crate::history::{self, HistoryEvent};
use crate::scalars::Instant;
use crate::schema::{caller, pool};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum CustomerStatus {
    Active,
    Archived,
}

impl CustomerStatus {
    fn column(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct Address {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// A customer of the organization.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Customer {
    pub id: ID,
    pub legal_name: String,
    pub display_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub billing_address: Option<Address>,
    pub tax_number: Option<String>,
    /// ISO 4217.
    pub currency: String,
    pub payment_terms_days: i32,
    pub tags: Vec<String>,
    pub status: CustomerStatus,
    pub archive_reason: Option<String>,
    /// Aggregate version this row reflects.
    pub version: i64,
    pub created_at: Instant,
    pub updated_at: Instant,
    #[graphql(skip)]
    organization_id: Uuid,
    #[graphql(skip)]
    uuid: Uuid,
}

impl From<CustomerRow> for Customer {
    fn from(r: CustomerRow) -> Self {
        let billing_address = match (r.billing_line1, r.billing_city, r.billing_country) {
            (Some(line1), Some(city), Some(country)) => Some(Address {
                line1,
                line2: r.billing_line2,
                city,
                region: r.billing_region,
                postal_code: r.billing_postal_code,
                country,
            }),
            _ => None,
        };
        Self {
            id: ID(r.id.to_string()),
            legal_name: r.legal_name,
            display_name: r.display_name,
            email: r.email,
            phone: r.phone,
            billing_address,
            tax_number: r.tax_number,
            currency: r.currency,
            payment_terms_days: r.payment_terms_days,
            tags: r.tags,
            status: if r.status == "archived" {
                CustomerStatus::Archived
            } else {
                CustomerStatus::Active
            },
            archive_reason: r.archive_reason,
            version: r.version,
            created_at: r.created_at.into(),
            updated_at: r.updated_at.into(),
            organization_id: r.organization_id,
            uuid: r.id,
        }
    }
}

#[ComplexObject]
impl Customer {
    /// Every event of this customer, oldest first (needs `events:read`).
    async fn history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<HistoryEvent>> {
        let principal = caller(ctx, Permission::EVENTS_READ)?;
        if principal.claims.org != self.organization_id {
            return Ok(Vec::new());
        }
        history::of_aggregate(
            pool(ctx)?,
            "customer",
            &self.uuid.to_string(),
            self.organization_id,
        )
        .await
    }
}

#[derive(InputObject, Debug, Default, Clone)]
pub struct CustomerFilter {
    pub status: Option<CustomerStatus>,
    /// Case-insensitive match on legal name, display name or email.
    pub search: Option<String>,
    /// Customers carrying this tag.
    pub tag: Option<String>,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum CustomerOrderField {
    #[default]
    DisplayName,
    CreatedAt,
    UpdatedAt,
}

#[derive(InputObject, Debug, Default, Clone, Copy)]
pub struct CustomerOrder {
    #[graphql(default)]
    pub field: CustomerOrderField,
    #[graphql(default)]
    pub direction: OrderDirection,
}

/// Position of a customer in one ordering: the sort key and the id.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CustomerCursor {
    /// Which ordering the cursor belongs to.
    o: String,
    /// Sort key as text (the name as PostgreSQL lower-cases it, or RFC 3339
    /// time).
    k: String,
    id: Uuid,
}

impl crate::cursor::Ordered for CustomerCursor {
    fn ordering(&self) -> &str {
        &self.o
    }
}

/// What a page of customers says about the whole list: counted only when
/// a query selects it, so a page that does not ask pays for no count.
#[derive(Debug)]
pub struct ConnectionInfo {
    pool: sqlx::PgPool,
    organization: Uuid,
    filter: CustomerFilter,
}

#[Object]
impl ConnectionInfo {
    /// Every customer the filter matches, not only this page.
    async fn total_count(&self) -> async_graphql::Result<i64> {
        let filter = &self.filter;
        let count = if given(filter.search.as_deref()).is_some()
            || given(filter.tag.as_deref()).is_some()
        {
            let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM rm_customers");
            push_filters(&mut count, self.organization, filter);
            count
        } else {
            // Filtered by status at most: the counts kept beside the rows
            // (ADR 0041), a row or two instead of the whole list.
            crate::schema::kept_count(
                "rm_customer_counts",
                "customers",
                self.organization,
                filter.status.map(|s| s.column()).as_slice(),
            )
        };
        crate::schema::total_count(&self.pool, count).await
    }
}

pub type CustomerConnection =
    Connection<PageCursor<CustomerCursor>, Customer, ConnectionInfo, EmptyFields>;

#[derive(Debug, Default)]
pub struct CustomerQuery;

fn sort_expr(field: CustomerOrderField) -> &'static str {
    match field {
        CustomerOrderField::DisplayName => "lower(display_name)",
        CustomerOrderField::CreatedAt => "created_at",
        CustomerOrderField::UpdatedAt => "updated_at",
    }
}

/// A row of a page: the customer and its name's sort key as PostgreSQL
/// lower-cases it. The cursor carries that key, not Rust's lower case of
/// the name: the two differ for some letters (a final capital sigma is
/// `ς` in Rust and `σ` in PostgreSQL; a dotted capital I is `i̇` in Rust
/// and `i` in PostgreSQL), and a cursor compared in SQL against a key of
/// another lower case would start the next page at the wrong row,
/// repeating its own row or skipping others.
#[derive(sqlx::FromRow)]
struct ListedCustomer {
    #[sqlx(flatten)]
    row: CustomerRow,
    name_key: String,
}

fn sort_key(field: CustomerOrderField, c: &Customer, name_key: String) -> String {
    match field {
        CustomerOrderField::DisplayName => name_key,
        CustomerOrderField::CreatedAt => c
            .created_at
            .0
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        CustomerOrderField::UpdatedAt => c
            .updated_at
            .0
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
}

fn order_name(order: CustomerOrder) -> String {
    format!("{:?}:{:?}", order.field, order.direction)
}

/// A text filter's value, unless it is absent or blank (a blank one
/// filters nothing).
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|s| !s.is_empty())
}

fn push_filters(qb: &mut QueryBuilder<'_, Postgres>, organization: Uuid, filter: &CustomerFilter) {
    qb.push(" WHERE organization_id = ").push_bind(organization);
    if let Some(status) = filter.status {
        qb.push(" AND status = ").push_bind(status.column());
    }
    if let Some(search) = given(filter.search.as_deref()) {
        let escaped = search
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        qb.push(" AND (legal_name ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR display_name ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR email ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(tag) = given(filter.tag.as_deref()) {
        qb.push(" AND tags @> ARRAY[")
            .push_bind(tag.to_lowercase())
            .push("]::text[]");
    }
}

/// Appends `AND (key, id) > (cursor's key, id)` (or `<`); a time key that
/// is no RFC 3339 time is a cursor this API did not hand out.
fn push_cursor(
    qb: &mut QueryBuilder<'_, Postgres>,
    field: CustomerOrderField,
    cursor: &CustomerCursor,
    greater: bool,
) -> async_graphql::Result<()> {
    let op = if greater { ">" } else { "<" };
    qb.push(format!(" AND ({}, id) {op} (", sort_expr(field)));
    match field {
        CustomerOrderField::DisplayName => {
            qb.push_bind(cursor.k.clone());
        }
        CustomerOrderField::CreatedAt | CustomerOrderField::UpdatedAt => {
            let at = DateTime::parse_from_rfc3339(&cursor.k)
                .map_err(|_| errors::bad_input(crate::cursor::MalformedCursor.to_string()))?;
            qb.push_bind(at.with_timezone(&Utc));
        }
    }
    qb.push(", ").push_bind(cursor.id).push(")");
    Ok(())
}

#[Object]
impl CustomerQuery {
    /// One customer of the caller's organization, or null.
    async fn customer(
        &self,
        ctx: &Context<'_>,
        id: ID,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<Option<Customer>> {
        let principal = caller(ctx, Permission::CUSTOMERS_READ)?;
        let Ok(id) = Uuid::parse_str(&id) else {
            return Err(errors::bad_input("id is not a customer id"));
        };
        let fresh = crate::consistency::honour(ctx, consistency_token.as_ref())
            .await?
            .is_some();
        let organization = principal.claims.org;
        let pool = pool(ctx)?.clone();
        let load = || async move {
            let row: Option<CustomerRow> =
                sqlx::query_as("SELECT * FROM rm_customers WHERE organization_id = $1 AND id = $2")
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
        let row = crate::cache::lookup(ctx, fresh, "customer", organization, id, load).await?;
        Ok(row.map(Customer::from))
    }

    /// Customers of the caller's organization, as a Relay connection.
    #[allow(clippy::too_many_arguments)]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A page's `endCursor`: the rows after it.")] after: Option<String>,
        #[graphql(desc = "A page's `startCursor`: the rows before it.")] before: Option<String>,
        #[graphql(
            desc = "Rows from the start, or after `after`: 0 to 100 (20 when neither `first` nor `last` is given; `first` wins when both are)."
        )]
        first: Option<i32>,
        #[graphql(desc = "Rows from the end, or before `before`: 0 to 100.")] last: Option<i32>,
        filter: Option<CustomerFilter>,
        order_by: Option<CustomerOrder>,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<CustomerConnection> {
        let principal = caller(ctx, Permission::CUSTOMERS_READ)?;
        let organization = principal.claims.org;
        let pool = pool(ctx)?.clone();
        let filter = filter.unwrap_or_default();
        let order = order_by.unwrap_or_default();
        crate::cursor::page_sizes(first, last)?;
        crate::consistency::honour(ctx, consistency_token.as_ref()).await?;
        let result = query(
            after,
            before,
            first,
            last,
            |after: Option<PageCursor<CustomerCursor>>,
             before: Option<PageCursor<CustomerCursor>>,
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
                    "SELECT *, lower(display_name) AS name_key FROM rm_customers",
                );
                push_filters(&mut qb, organization, &filter);
                if let Some(after) = &after {
                    push_cursor(&mut qb, order.field, after, forward_asc)?;
                }
                if let Some(before) = &before {
                    push_cursor(&mut qb, order.field, before, !forward_asc)?;
                }
                let dir = window.sql_direction(order.direction);
                qb.push(format!(
                    " ORDER BY {} {dir}, id {dir} LIMIT ",
                    sort_expr(order.field)
                ))
                .push_bind(window.fetch());
                let rows: Vec<ListedCustomer> = qb
                    .build_query_as()
                    .fetch_all(&pool)
                    .await
                    .map_err(errors::database)?;
                let (rows, has_previous, has_next) =
                    window.page(rows, after.is_some(), before.is_some());
                let mut connection = Connection::with_additional_fields(
                    has_previous,
                    has_next,
                    ConnectionInfo {
                        pool: pool.clone(),
                        organization,
                        filter: filter.clone(),
                    },
                );
                connection.edges.extend(rows.into_iter().map(|listed| {
                    let customer = Customer::from(listed.row);
                    let cursor = CustomerCursor {
                        o: order_name(order),
                        k: sort_key(order.field, &customer, listed.name_key),
                        id: customer.uuid,
                    };
                    Edge::new(PageCursor(cursor), customer)
                }));
                Ok::<_, async_graphql::Error>(connection)
            },
        )
        .await;
        result.map_err(errors::keep_code)
    }
}

/// Batches customer lookups of one request: a page of quotes with their
/// customers costs one customer query, not one per quote.
#[derive(Debug, Clone)]
pub struct CustomerLoader {
    pool: sqlx::PgPool,
    organization: Uuid,
}

impl CustomerLoader {
    pub fn new(pool: sqlx::PgPool, organization: Uuid) -> Self {
        Self { pool, organization }
    }
}

impl async_graphql::dataloader::Loader<Uuid> for CustomerLoader {
    type Value = Customer;
    type Error = std::sync::Arc<sqlx::Error>;

    async fn load(
        &self,
        keys: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Customer>, Self::Error> {
        let rows: Vec<CustomerRow> = sqlx::query_as(
            "SELECT * FROM rm_customers WHERE organization_id = $1 AND id = ANY($2)",
        )
        .bind(self.organization)
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(std::sync::Arc::new)?;
        Ok(rows
            .into_iter()
            .map(|row| (row.id, Customer::from(row)))
            .collect())
    }
}
