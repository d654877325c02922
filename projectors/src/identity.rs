//! The organizations and users read models (`rm_organizations`,
//! `rm_users`). Each row keeps the aggregate's state, folded with the
//! domain's own `apply`, so the read model can never disagree with the
//! write side about what an event means.

use async_trait::async_trait;
use cqrs_es::Aggregate;
use pivotal_domain::organization::{self, Organization};
use pivotal_domain::user::{self, User};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::framework::{Envelope, Projection, ProjectionError};

/// The domain event of `envelope`, read from the stored form (adjacently
/// tagged): its type and its `data`, put back together as JSON text.
pub(crate) fn event<E: DeserializeOwned>(envelope: &Envelope) -> Result<E, ProjectionError> {
    #[derive(Serialize)]
    struct Tagged<'e> {
        #[serde(rename = "type")]
        event_type: &'e str,
        data: &'e RawValue,
    }
    let invalid = |e: serde_json::Error| ProjectionError::Data(envelope.id, e.to_string());
    let tagged = serde_json::to_string(&Tagged {
        event_type: &envelope.event_type,
        data: &envelope.data,
    })
    .map_err(invalid)?;
    serde_json::from_str(&tagged).map_err(invalid)
}

pub(crate) fn id(envelope: &Envelope) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&envelope.aggregate_id)
        .map_err(|e| ProjectionError::Data(envelope.id, e.to_string()))
}

pub(crate) async fn current<A: DeserializeOwned + Default>(
    conn: &mut PgConnection,
    sql: &str,
    organization_id: Uuid,
    id: Uuid,
) -> Result<A, ProjectionError> {
    let row: Option<(sqlx::types::Json<serde_json::Value>,)> = sqlx::query_as(sql)
        .bind(organization_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some((state,)) => serde_json::from_value(state.0).unwrap_or_default(),
        None => A::default(),
    })
}

/// The aggregate's state in the read model (`sql` selects it by
/// organization and id), with `envelope`'s event applied by the domain.
pub(crate) async fn fold<A>(
    conn: &mut PgConnection,
    sql: &str,
    id: Uuid,
    envelope: &Envelope,
) -> Result<A, ProjectionError>
where
    A: Aggregate + DeserializeOwned + Default,
    A::Event: DeserializeOwned,
{
    let e: A::Event = event(envelope)?;
    let mut aggregate: A = current(conn, sql, envelope.organization_id, id).await?;
    aggregate.apply(e);
    Ok(aggregate)
}

pub(crate) fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

#[derive(Debug, Clone, Copy)]
pub struct OrganizationsProjection;

#[async_trait]
impl Projection for OrganizationsProjection {
    fn name(&self) -> &'static str {
        "organizations"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[organization::AGGREGATE_TYPE]
    }

    fn table(&self) -> &'static str {
        "rm_organizations"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let org_id = id(envelope)?;
        let org: Organization = fold(
            conn,
            "SELECT state FROM rm_organizations WHERE id = $1 AND id = $2 FOR UPDATE",
            org_id,
            envelope,
        )
        .await?;
        let Some(state) = org.state.as_ref() else {
            return Err(ProjectionError::Data(
                envelope.id,
                "event applied to an organization that was never created".into(),
            ));
        };
        sqlx::query(
            "INSERT INTO rm_organizations (id, name, default_currency, time_zone, state, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (id) DO UPDATE SET name = $2, default_currency = $3, time_zone = $4,
               state = $5, version = $6, updated_at = $7",
        )
        .bind(org_id)
        .bind(state.name.as_str())
        .bind(state.settings.default_currency.as_str())
        .bind(state.settings.time_zone.as_str())
        .bind(sqlx::types::Json(json(&org)))
        .bind(i64::try_from(envelope.version).unwrap_or(i64::MAX))
        .bind(envelope.timestamp)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UsersProjection;

#[async_trait]
impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[user::AGGREGATE_TYPE]
    }

    fn table(&self) -> &'static str {
        "rm_users"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let user_id = id(envelope)?;
        let user: User = fold(
            conn,
            "SELECT state FROM rm_users WHERE organization_id = $1 AND id = $2 FOR UPDATE",
            user_id,
            envelope,
        )
        .await?;
        let Some(state) = user.state.as_ref() else {
            return Err(ProjectionError::Data(
                envelope.id,
                "event applied to a user that was never created".into(),
            ));
        };
        let roles: Vec<&str> = state.roles.iter().map(String::as_str).collect();
        sqlx::query(
            "INSERT INTO rm_users (organization_id, id, email, first_name, last_name, status, roles,
                mfa_enabled, last_login_at, login_count, state, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
             ON CONFLICT (organization_id, id) DO UPDATE SET email = $3, first_name = $4,
               last_name = $5, status = $6, roles = $7, mfa_enabled = $8, last_login_at = $9,
               login_count = $10, state = $11, version = $12, updated_at = $13",
        )
        .bind(state.organization_id)
        .bind(user_id)
        .bind(state.email.as_str())
        .bind(state.profile.first_name.as_str())
        .bind(state.profile.last_name.as_str())
        .bind(state.status.as_str())
        .bind(&roles)
        .bind(state.mfa_enabled)
        .bind(state.last_login_at)
        .bind(i64::try_from(state.login_count).unwrap_or(i64::MAX))
        .bind(sqlx::types::Json(json(&user)))
        .bind(i64::try_from(envelope.version).unwrap_or(i64::MAX))
        .bind(envelope.timestamp)
        .execute(conn)
        .await?;
        Ok(())
    }
}
