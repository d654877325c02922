//! `me`, `user(id)`, `users(...)`, `roles` and `organization`, read from
//! `rm_users` and `rm_organizations`. The rows hold the aggregates' states,
//! which have no secret fields: nothing here could expose a password hash,
//! MFA secret, recovery code or refresh token.

use async_graphql::connection::{Connection, Edge, EmptyFields, query};
use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use pivotal_domain::organization::Organization as OrganizationAggregate;
use pivotal_domain::permissions::{Permission, RoleDefinition, built_in_roles};
use pivotal_domain::user::{User as UserAggregate, UserState};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::consistency::ConsistencyToken;
use crate::cursor::OrderDirection;
use crate::cursor::PageCursor;
use crate::errors;
use crate::history::{self, HistoryEvent};
use crate::scalars::Instant;
use crate::schema::{caller, pool};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum UserStatus {
    /// Invited; no password chosen yet.
    Invited,
    Active,
    /// Cannot sign in; kept for history.
    Deactivated,
}

impl UserStatus {
    fn column(self) -> &'static str {
        match self {
            Self::Invited => "invited",
            Self::Active => "active",
            Self::Deactivated => "deactivated",
        }
    }
}

/// A person of the organization. No field can hold a secret.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct User {
    pub id: ID,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    /// IANA time zone.
    pub time_zone: String,
    pub preferences: Json<serde_json::Map<String, serde_json::Value>>,
    pub status: UserStatus,
    pub roles: Vec<String>,
    pub locked: bool,
    pub lock_reason: Option<String>,
    pub locked_until: Option<Instant>,
    pub mfa_enabled: bool,
    pub last_login_at: Option<Instant>,
    pub login_count: i64,
    /// Aggregate version this row reflects.
    pub version: i64,
    pub created_at: Instant,
    pub updated_at: Instant,
    #[graphql(skip)]
    organization_id: Uuid,
    #[graphql(skip)]
    uuid: Uuid,
}

#[derive(sqlx::FromRow, Debug, Serialize, Deserialize)]
struct UserRow {
    state: sqlx::types::Json<UserAggregate>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_name: String,
    id: Uuid,
}

impl User {
    fn of(state: &UserState, row: &UserRow) -> Self {
        let lock = state.locked_at(Utc::now());
        Self {
            id: ID(state.id.to_string()),
            email: state.email.as_str().to_owned(),
            first_name: state.profile.first_name.as_str().to_owned(),
            last_name: state.profile.last_name.as_str().to_owned(),
            phone: state.profile.phone.as_ref().map(|p| p.as_str().to_owned()),
            time_zone: state.profile.time_zone.as_str().to_owned(),
            preferences: Json(state.profile.preferences.as_map().clone()),
            status: match state.status {
                pivotal_domain::user::UserStatus::Invited => UserStatus::Invited,
                pivotal_domain::user::UserStatus::Active => UserStatus::Active,
                pivotal_domain::user::UserStatus::Deactivated => UserStatus::Deactivated,
            },
            roles: state.roles.iter().cloned().collect(),
            locked: lock.is_some(),
            lock_reason: lock.map(|l| l.reason.clone()),
            locked_until: lock.and_then(|l| l.until).map(Into::into),
            mfa_enabled: state.mfa_enabled,
            last_login_at: state.last_login_at.map(Into::into),
            login_count: i64::try_from(state.login_count).unwrap_or(i64::MAX),
            version: row.version,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
            organization_id: state.organization_id,
            uuid: state.id,
        }
    }

    fn from_row(row: &UserRow) -> Option<Self> {
        row.state.0.state.as_ref().map(|s| Self::of(s, row))
    }
}

#[ComplexObject]
impl User {
    /// Every event of this user, oldest first (needs `events:read`).
    async fn history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<HistoryEvent>> {
        let principal = caller(ctx, Permission::EVENTS_READ)?;
        if principal.claims.org != self.organization_id {
            return Ok(Vec::new());
        }
        history::of_aggregate(
            pool(ctx)?,
            "user",
            &self.uuid.to_string(),
            self.organization_id,
        )
        .await
    }

    /// `firstName lastName`.
    async fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

/// One permission a role grants.
#[derive(SimpleObject, Debug, Clone)]
pub struct Grant {
    pub resource: String,
    pub action: String,
    /// `[{attribute, operator, value}]`; empty when unconditional.
    pub conditions: Json<serde_json::Value>,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct Role {
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    pub built_in: bool,
    pub grants: Vec<Grant>,
}

impl From<RoleDefinition> for Role {
    fn from(r: RoleDefinition) -> Self {
        Self {
            key: r.key,
            name: r.name,
            description: r.description,
            built_in: r.built_in,
            grants: r
                .grants
                .into_iter()
                .map(|g| Grant {
                    conditions: Json(serde_json::to_value(&g.conditions).unwrap_or_default()),
                    resource: g.resource,
                    action: g.action,
                })
                .collect(),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct TaxSettings {
    pub registration_number: Option<String>,
    /// 1500 = 15%.
    pub default_rate_basis_points: i32,
    pub prices_include_tax: bool,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct Organization {
    pub id: ID,
    pub name: String,
    /// ISO 4217.
    pub default_currency: String,
    pub time_zone: String,
    pub fiscal_year_start_month: i32,
    pub tax: TaxSettings,
    pub require_mfa_for_sensitive_operations: bool,
    pub version: i64,
    pub created_at: Instant,
    pub updated_at: Instant,
}

#[derive(InputObject, Debug, Default, Clone)]
pub struct UserFilter {
    pub status: Option<UserStatus>,
    /// Users holding this role.
    pub role: Option<String>,
    /// Case-insensitive match on name or email.
    pub search: Option<String>,
}

/// What a page of users says about the whole list: counted only when a
/// query selects it, so a page that does not ask pays for no count.
#[derive(Debug)]
pub struct UserConnectionInfo {
    pool: PgPool,
    organization: Uuid,
    filter: UserFilter,
}

#[Object]
impl UserConnectionInfo {
    /// Every user the filter matches, not only this page.
    async fn total_count(&self) -> async_graphql::Result<i64> {
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM rm_users");
        push_filters(&mut count, self.organization, &self.filter);
        crate::schema::total_count(&self.pool, count).await
    }
}

pub type UserConnection = Connection<
    PageCursor<UserCursor>,
    User,
    UserConnectionInfo,
    EmptyFields,
    async_graphql::connection::DefaultConnectionName,
    async_graphql::connection::DefaultEdgeName,
>;

/// What users are listed by.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum UserOrderField {
    /// Last name, then first name, ignoring case.
    #[default]
    Name,
    CreatedAt,
    /// The last change, a sign-in included (it counts the user's logins):
    /// the most recently changed first with `DESC`.
    UpdatedAt,
}

#[derive(InputObject, Debug, Default, Clone, Copy)]
pub struct UserOrder {
    #[graphql(default)]
    pub field: UserOrderField,
    #[graphql(default)]
    pub direction: OrderDirection,
}

fn order_name(order: UserOrder) -> String {
    format!("{:?}:{:?}", order.field, order.direction)
}

/// Position of a user in one ordering (ADR 0060): the ordering's name, the
/// user's sort keys as text and the id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserCursor {
    /// Which ordering the cursor belongs to.
    o: String,
    /// The last and first names as PostgreSQL lower-cases them, or the
    /// RFC 3339 time of creation or of the last change.
    k: Vec<String>,
    id: Uuid,
}

impl crate::cursor::Ordered for UserCursor {
    fn ordering(&self) -> &str {
        &self.o
    }
}

/// A listed user with the keys its cursor is made of, read from the
/// database: the names as PostgreSQL lower-cases them, which is what the
/// next page's bound is compared with (Rust's lower case differs for some
/// letters, ADR 0060).
#[derive(sqlx::FromRow)]
struct ListedUser {
    #[sqlx(flatten)]
    row: UserRow,
    last_key: String,
    first_key: String,
}

impl UserOrderField {
    /// The keys a page is sorted by, the id breaking ties; each ordering
    /// is an index led by the organization (`rm_users_by_name`,
    /// `rm_users_by_created`, `rm_users_by_updated`).
    fn keys(self) -> &'static str {
        match self {
            Self::Name => "lower(last_name), lower(first_name), id",
            Self::CreatedAt => "created_at, id",
            Self::UpdatedAt => "updated_at, id",
        }
    }

    fn cursor_keys(self, user: &ListedUser) -> Vec<String> {
        match self {
            Self::Name => vec![user.last_key.clone(), user.first_key.clone()],
            Self::CreatedAt => vec![
                user.row
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ],
            Self::UpdatedAt => vec![
                user.row
                    .updated_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ],
        }
    }

    /// Appends `AND (keys) > (cursor's keys)` (or `<`); keys that are not
    /// this ordering's (their number, or a time that is no RFC 3339 time)
    /// are a cursor this API did not hand out.
    fn push_bound(
        self,
        qb: &mut QueryBuilder<'_, Postgres>,
        cursor: &UserCursor,
        greater: bool,
    ) -> async_graphql::Result<()> {
        let malformed = || errors::bad_input(crate::cursor::MalformedCursor.to_string());
        let op = if greater { ">" } else { "<" };
        qb.push(format!(" AND ({}) {op} (", self.keys()));
        match (self, cursor.k.as_slice()) {
            (Self::Name, [last, first]) => {
                qb.push_bind(last.clone())
                    .push(", ")
                    .push_bind(first.clone());
            }
            (Self::CreatedAt | Self::UpdatedAt, [at]) => {
                let at = DateTime::parse_from_rfc3339(at).map_err(|_| malformed())?;
                qb.push_bind(at.with_timezone(&Utc));
            }
            _ => return Err(malformed()),
        }
        qb.push(", ").push_bind(cursor.id).push(")");
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct IdentityQuery;

#[derive(sqlx::FromRow)]
struct OrganizationRow {
    state: sqlx::types::Json<OrganizationAggregate>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

async fn organization_state(
    pool: &PgPool,
    organization: Uuid,
) -> async_graphql::Result<Option<OrganizationRow>> {
    let row: Option<OrganizationRow> = sqlx::query_as(
        "SELECT state, version, created_at, updated_at FROM rm_organizations WHERE id = $1",
    )
    .bind(organization)
    .fetch_optional(pool)
    .await
    .map_err(errors::database)?;
    Ok(row)
}

fn push_filters(qb: &mut QueryBuilder<'_, Postgres>, organization: Uuid, filter: &UserFilter) {
    qb.push(" WHERE organization_id = ").push_bind(organization);
    if let Some(status) = filter.status {
        qb.push(" AND status = ").push_bind(status.column());
    }
    if let Some(role) = &filter.role {
        qb.push(" AND ")
            .push_bind(role.clone())
            .push(" = ANY(roles)");
    }
    if let Some(search) = filter.search.as_ref().filter(|s| !s.trim().is_empty()) {
        // ILIKE lower-cases the pattern as it does the names, with
        // PostgreSQL's own lower case: a name is found by its own text
        // whatever its letters (Rust's lower case of the pattern compared
        // with PostgreSQL's of the name missed a final capital sigma).
        let pattern = format!(
            "%{}%",
            search
                .trim()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        qb.push(" AND ((first_name || ' ' || last_name) ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR email ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
}

#[Object]
impl IdentityQuery {
    /// The signed-in user.
    async fn me(
        &self,
        ctx: &Context<'_>,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<Option<User>> {
        let principal = ctx
            .data_opt::<pivotal_auth::Principal>()
            .ok_or_else(|| errors::coded(errors::UNAUTHENTICATED, "a bearer token is required"))?;
        crate::consistency::honour(ctx, consistency_token.as_ref()).await?;
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT state, version, created_at, updated_at, last_name, id FROM rm_users
             WHERE organization_id = $1 AND id = $2",
        )
        .bind(principal.claims.org)
        .bind(principal.claims.sub)
        .fetch_optional(pool(ctx)?)
        .await
        .map_err(errors::database)?;
        Ok(row.as_ref().and_then(User::from_row))
    }

    /// One user of the caller's organization, or null.
    async fn user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<Option<User>> {
        let principal = caller(ctx, Permission::USERS_READ)?;
        let Ok(id) = Uuid::parse_str(&id) else {
            return Err(errors::bad_input("id is not a user id"));
        };
        let fresh = crate::consistency::honour(ctx, consistency_token.as_ref())
            .await?
            .is_some();
        let organization = principal.claims.org;
        let pool = pool(ctx)?.clone();
        let load = || async move {
            let row: Option<UserRow> = sqlx::query_as(
                "SELECT state, version, created_at, updated_at, last_name, id FROM rm_users
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
        let row = crate::cache::lookup(ctx, fresh, "user", organization, id, load).await?;
        Ok(row.as_ref().and_then(User::from_row))
    }

    /// Users of the caller's organization, as a Relay connection: by last
    /// name then first name unless `orderBy` says otherwise, forward
    /// (`first`, `after`) or backward (`last`, `before`).
    #[allow(clippy::too_many_arguments)]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A page's `endCursor`: the rows after it.")] after: Option<String>,
        #[graphql(desc = "A page's `startCursor`: the rows before it.")] before: Option<String>,
        #[graphql(
            desc = "Rows from the start, or after `after`: 0 to 100 (20 when neither `first` nor `last` is given; `first` wins when both are)."
        )]
        first: Option<i32>,
        #[graphql(desc = "Rows from the end, or before `before`: 0 to 100.")] last: Option<i32>,
        filter: Option<UserFilter>,
        order_by: Option<UserOrder>,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<UserConnection> {
        let principal = caller(ctx, Permission::USERS_READ)?;
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
            |after: Option<PageCursor<UserCursor>>,
             before: Option<PageCursor<UserCursor>>,
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
                    "SELECT state, version, created_at, updated_at, last_name, id,
                            lower(last_name) AS last_key, lower(first_name) AS first_key
                     FROM rm_users",
                );
                push_filters(&mut qb, organization, &filter);
                if let Some(after) = &after {
                    order.field.push_bound(&mut qb, after, forward_asc)?;
                }
                if let Some(before) = &before {
                    order.field.push_bound(&mut qb, before, !forward_asc)?;
                }
                let dir = window.sql_direction(order.direction);
                let keys = order
                    .field
                    .keys()
                    .split(", ")
                    .map(|key| format!("{key} {dir}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                qb.push(format!(" ORDER BY {keys} LIMIT "))
                    .push_bind(window.fetch());
                let rows: Vec<ListedUser> = qb
                    .build_query_as()
                    .fetch_all(&pool)
                    .await
                    .map_err(errors::database)?;
                let (rows, has_previous, has_next) =
                    window.page(rows, after.is_some(), before.is_some());
                let mut connection = Connection::with_additional_fields(
                    has_previous,
                    has_next,
                    UserConnectionInfo {
                        pool: pool.clone(),
                        organization,
                        filter: filter.clone(),
                    },
                );
                connection.edges.extend(rows.iter().filter_map(|listed| {
                    let user = User::from_row(&listed.row)?;
                    let cursor = UserCursor {
                        o: order_name(order),
                        k: order.field.cursor_keys(listed),
                        id: listed.row.id,
                    };
                    Some(Edge::new(PageCursor(cursor), user))
                }));
                Ok::<_, async_graphql::Error>(connection)
            },
        )
        .await;
        result.map_err(errors::keep_code)
    }

    /// Built-in roles, then the organization's own.
    async fn roles(
        &self,
        ctx: &Context<'_>,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<Vec<Role>> {
        let principal = caller(ctx, Permission::ROLES_READ)?;
        crate::consistency::honour(ctx, consistency_token.as_ref()).await?;
        let mut roles: Vec<Role> = built_in_roles().into_iter().map(Role::from).collect();
        if let Some(row) = organization_state(pool(ctx)?, principal.claims.org).await?
            && let Some(state) = row.state.0.state
        {
            roles.extend(state.roles.iter().map(|r| Role::from(r.definition())));
        }
        Ok(roles)
    }

    /// The caller's organization.
    async fn organization(
        &self,
        ctx: &Context<'_>,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<Option<Organization>> {
        let principal = caller(ctx, Permission::ORGANIZATION_READ)?;
        crate::consistency::honour(ctx, consistency_token.as_ref()).await?;
        let Some(OrganizationRow {
            state,
            version,
            created_at,
            updated_at,
        }) = organization_state(pool(ctx)?, principal.claims.org).await?
        else {
            return Ok(None);
        };
        Ok(state.0.state.map(|s| Organization {
            id: ID(s.id.to_string()),
            name: s.name.as_str().to_owned(),
            default_currency: s.settings.default_currency.as_str().to_owned(),
            time_zone: s.settings.time_zone.as_str().to_owned(),
            fiscal_year_start_month: i32::from(s.settings.fiscal_year_start_month),
            tax: TaxSettings {
                registration_number: s
                    .settings
                    .tax
                    .registration_number
                    .as_ref()
                    .map(|t| t.as_str().to_owned()),
                default_rate_basis_points: i32::try_from(s.settings.tax.default_rate_basis_points)
                    .unwrap_or(i32::MAX),
                prices_include_tax: s.settings.tax.prices_include_tax,
            },
            require_mfa_for_sensitive_operations: s.policy.require_mfa_for_sensitive_operations,
            version,
            created_at: created_at.into(),
            updated_at: updated_at.into(),
        }))
    }
}
