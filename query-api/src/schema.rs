//! The schema, independent of the transport.

use async_graphql::{Context, EmptyMutation, MergedObject, Schema};
use pivotal_auth::Principal;
use pivotal_domain::permissions::Permission;
use sqlx::PgPool;

use crate::errors;

#[derive(Debug, MergedObject, Default)]
pub struct Query(
    crate::customers::CustomerQuery,
    crate::identity::IdentityQuery,
    crate::quotes::QuoteQuery,
    crate::search::SearchQuery,
    crate::dashboard::DashboardQuery,
);

pub type PivotalSchema = Schema<Query, EmptyMutation, crate::live::SubscriptionRoot>;

/// Largest page a connection returns.
pub const MAX_PAGE: usize = 100;

/// Deepest query answered. The introspection query current GraphQL tooling
/// sends (graphql-js 17, graphql-core 3.3: a type reference followed
/// through nine levels of `ofType`, under `__schema`, `types`, `fields`,
/// `args` and `type`, to its `name`) is 15 deep, and async-graphql counts
/// introspection fields like any other; the data graph itself is
/// shallower, and cost is bounded by the complexity limit as well.
pub const MAX_DEPTH: usize = 15;

pub fn build(pool: PgPool) -> PivotalSchema {
    build_with(pool, true, crate::live::Changes::default(), None)
}

/// The schema, optionally without introspection (`query_api.introspection`),
/// with the search engine serving `search` (without one, `search` answers
/// `SEARCH_UNAVAILABLE`).
pub fn build_with(
    pool: PgPool,
    introspection: bool,
    changes: crate::live::Changes,
    search: Option<crate::search::Engine>,
) -> PivotalSchema {
    let mut builder = Schema::build(
        Query::default(),
        EmptyMutation,
        crate::live::SubscriptionRoot,
    )
    .data(pool)
    .data(changes)
    .extension(crate::errors::Codes)
    // Behind `Codes`, so that a parse failure is coded either way.
    .extension(crate::documents::Documents::default())
    .limit_depth(MAX_DEPTH)
    .limit_complexity(2_000);
    if let Some(engine) = search {
        builder = builder.data(engine);
    }
    if introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

/// The SDL, as committed in `schemas/schema.graphql`.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        EmptyMutation,
        crate::live::SubscriptionRoot,
    )
    .finish()
    .sdl()
}

/// The authenticated caller.
pub fn principal<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Principal> {
    ctx.data_opt::<Principal>()
        .ok_or_else(|| errors::coded(errors::UNAUTHENTICATED, "a bearer token is required"))
}

/// The caller, after checking `permission`.
pub fn caller<'a>(
    ctx: &'a Context<'_>,
    permission: Permission,
) -> async_graphql::Result<&'a Principal> {
    let principal = principal(ctx)?;
    if principal.has(permission) {
        Ok(principal)
    } else {
        Err(errors::coded(
            errors::FORBIDDEN,
            format!("the token does not grant {permission}"),
        ))
    }
}

pub fn pool<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a PgPool> {
    ctx.data::<PgPool>()
}

/// A `totalCount` from the counts kept beside a list's rows (ADR 0041):
/// the sum of `counted` in `table` over `organization`'s statuses, or over
/// `statuses` only when there are any.
pub fn kept_count(
    table: &str,
    counted: &str,
    organization: uuid::Uuid,
    statuses: &[&'static str],
) -> sqlx::QueryBuilder<'static, sqlx::Postgres> {
    let mut count = sqlx::QueryBuilder::new(format!(
        "SELECT coalesce(sum({counted}), 0)::int8 FROM {table} WHERE organization_id = "
    ));
    count.push_bind(organization);
    if !statuses.is_empty() {
        count
            .push(" AND status = ANY(")
            .push_bind(statuses.to_vec())
            .push(")");
    }
    count
}

/// A connection's `totalCount`: runs `count`, a statement that answers one
/// `int8` (a `SELECT count(*)` with the list's filters, ADR 0040, or a sum
/// of kept counts, ADR 0041).
pub async fn total_count(
    pool: &PgPool,
    mut count: sqlx::QueryBuilder<'_, sqlx::Postgres>,
) -> async_graphql::Result<i64> {
    let (total,): (i64,) = count
        .build_query_as()
        .fetch_one(pool)
        .await
        .map_err(errors::database)?;
    Ok(total)
}
