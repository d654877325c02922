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
);

pub type PivotalSchema = Schema<Query, EmptyMutation, crate::live::SubscriptionRoot>;

/// Largest page a connection returns.
pub const MAX_PAGE: usize = 100;

pub fn build(pool: PgPool) -> PivotalSchema {
    build_with(pool, true, crate::live::Changes::default())
}

/// The schema, optionally without introspection (`query_api.introspection`).
pub fn build_with(
    pool: PgPool,
    introspection: bool,
    changes: crate::live::Changes,
) -> PivotalSchema {
    let builder = Schema::build(
        Query::default(),
        EmptyMutation,
        crate::live::SubscriptionRoot,
    )
    .data(pool)
    .data(changes)
    .limit_depth(12)
    .limit_complexity(2_000);
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

/// The caller, after checking `permission`.
pub fn caller<'a>(
    ctx: &'a Context<'_>,
    permission: Permission,
) -> async_graphql::Result<&'a Principal> {
    let principal = ctx
        .data_opt::<Principal>()
        .ok_or_else(|| errors::coded(errors::UNAUTHENTICATED, "a bearer token is required"))?;
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
