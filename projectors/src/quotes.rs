//! The rate cards and quotes read models (`rm_rate_cards`, `rm_quotes`),
//! folded with the domain's own `apply` like the identity read models.

use async_trait::async_trait;
use pivotal_domain::quote::{self, Quote};
use pivotal_domain::rate_card::{self, RateCard};
use sqlx::PgConnection;

use crate::framework::{Envelope, Projection, ProjectionError};
use crate::identity::{fold, id, json};

#[derive(Debug, Clone, Copy)]
pub struct RateCardsProjection;

#[async_trait]
impl Projection for RateCardsProjection {
    fn name(&self) -> &'static str {
        "rate_cards"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[rate_card::AGGREGATE_TYPE]
    }

    fn table(&self) -> &'static str {
        "rm_rate_cards"
    }

    fn rows_per_aggregate(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let card_id = id(envelope)?;
        let card: RateCard = fold(
            conn,
            "SELECT state FROM rm_rate_cards WHERE organization_id = $1 AND id = $2 FOR UPDATE",
            card_id,
            envelope,
        )
        .await?;
        let Some(state) = card.state.as_ref() else {
            return Err(ProjectionError::Data(
                envelope.id,
                "event applied to a rate card that was never created".into(),
            ));
        };
        sqlx::query(
            "INSERT INTO rm_rate_cards (organization_id, id, name, customer_id, archived, state, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (organization_id, id) DO UPDATE SET name = $3, customer_id = $4,
               archived = $5, state = $6, version = $7, updated_at = $8",
        )
        .bind(state.organization_id)
        .bind(card_id)
        .bind(state.name.as_str())
        .bind(state.customer_id)
        .bind(state.archived)
        .bind(sqlx::types::Json(json(&card)))
        .bind(i64::try_from(envelope.version).unwrap_or(i64::MAX))
        .bind(envelope.timestamp)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct QuotesProjection;

#[async_trait]
impl Projection for QuotesProjection {
    fn name(&self) -> &'static str {
        "quotes"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[quote::AGGREGATE_TYPE]
    }

    fn table(&self) -> &'static str {
        "rm_quotes"
    }

    fn rows_per_aggregate(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let quote_id = id(envelope)?;
        let quote: Quote = fold(
            conn,
            "SELECT state FROM rm_quotes WHERE organization_id = $1 AND id = $2 FOR UPDATE",
            quote_id,
            envelope,
        )
        .await?;
        let Some(state) = quote.state.as_ref() else {
            return Err(ProjectionError::Data(
                envelope.id,
                "event applied to a quote that was never created".into(),
            ));
        };
        sqlx::query(
            "INSERT INTO rm_quotes (organization_id, id, number, customer_id, title, status, currency,
                total, valid_until, revision, state, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::numeric, $9, $10, $11, $12, $13, $13)
             ON CONFLICT (organization_id, id) DO UPDATE SET customer_id = $4, title = $5,
               status = $6, currency = $7, total = $8::numeric, valid_until = $9, revision = $10,
               state = $11, version = $12, updated_at = $13",
        )
        .bind(state.organization_id)
        .bind(quote_id)
        .bind(&state.number)
        .bind(state.content.customer_id)
        .bind(state.content.title.as_str())
        .bind(state.status.as_str())
        .bind(state.content.currency.as_str())
        .bind(state.pricing.total.to_string())
        .bind(state.content.valid_until)
        .bind(i32::try_from(state.revision).unwrap_or(i32::MAX))
        .bind(sqlx::types::Json(json(&quote)))
        .bind(i64::try_from(envelope.version).unwrap_or(i64::MAX))
        .bind(envelope.timestamp)
        .execute(conn)
        .await?;
        Ok(())
    }
}
