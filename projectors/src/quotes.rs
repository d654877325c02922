//! The rate cards and quotes read models (`rm_rate_cards`, `rm_quotes`),
//! folded with the domain's own `apply` like the identity read models;
//! quotes per organization and status (`rm_quote_counts`) kept beside
//! them by triggers (ADR 0041, "Update: quotes").

use std::collections::BTreeSet;

use async_trait::async_trait;
use pivotal_domain::quote::{self, Quote, QuoteStatus, QuoteStatusChanged};
use pivotal_domain::rate_card::{self, RateCard};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::customers::lock_counts;
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

    /// The rebuilt table gets the triggers that keep `rm_quote_counts`,
    /// and the counts are taken from it afresh (ADR 0041).
    fn after_switch(&self) -> &'static [&'static str] {
        &["SELECT public.rm_quote_counts_attach()"]
    }

    /// Locks the counts the batch moves, in key order, then applies its
    /// events one by one (each statement's triggers move its counts).
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[&Envelope],
    ) -> Result<(), ProjectionError> {
        lock_counts(
            &mut *conn,
            "SELECT rm_quote_counts_lock($1, $2)",
            &counts_moved(events),
        )
        .await?;
        for event in events {
            self.apply(&mut *conn, event).await?;
        }
        Ok(())
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
             ON CONFLICT (id) DO UPDATE SET customer_id = $4, title = $5,
               status = $6, currency = $7, total = $8::numeric, valid_until = $9, revision = $10,
               state = $11, version = $12, updated_at = $13
             WHERE rm_quotes.organization_id = EXCLUDED.organization_id",
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

/// The counts (organization, status) that `events` move: a quote created
/// adds to `draft`, a status change takes from its old status and adds to
/// its new one. Read from the events themselves, before anything is
/// applied; an event that cannot be read moves nothing here (its `apply`
/// reports it).
fn counts_moved(events: &[&Envelope]) -> BTreeSet<(Uuid, &'static str)> {
    let mut moved = BTreeSet::new();
    for event in events {
        match event.event_type.as_str() {
            "quote.created" => {
                moved.insert((event.organization_id, QuoteStatus::Draft.as_str()));
            }
            "quote.status.changed" => {
                if let Ok(change) = serde_json::from_str::<QuoteStatusChanged>(event.data.get()) {
                    moved.insert((event.organization_id, change.old_status.as_str()));
                    moved.insert((event.organization_id, change.new_status.as_str()));
                }
            }
            _ => {}
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use pivotal_domain::envelope::{EventEnvelope, EventMetadata};
    use serde_json::value::RawValue;

    fn event(organization: Uuid, event_type: &str, data: &str) -> Envelope {
        EventEnvelope {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            aggregate_id: Uuid::now_v7().to_string(),
            aggregate_type: quote::AGGREGATE_TYPE.to_owned(),
            organization_id: organization,
            user_id: None,
            timestamp: chrono::Utc::now(),
            version: 1,
            metadata: EventMetadata {
                correlation_id: "counts".into(),
                causation_id: None,
                source: "tests".into(),
                user_agent: None,
                ip_address: None,
            },
            data: RawValue::from_string(data.to_owned()).unwrap(),
        }
    }

    fn changed(organization: Uuid, from: &str, to: &str) -> Envelope {
        event(
            organization,
            "quote.status.changed",
            &serde_json::json!({"quoteId": Uuid::now_v7(), "oldStatus": from, "newStatus": to,
                "reason": null, "changedBy": null, "customerContact": null,
                "at": "2026-12-04T10:00:00Z"})
            .to_string(),
        )
    }

    #[test]
    fn a_batch_moves_the_counts_its_creations_and_status_changes_name() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let events = [
            changed(b, "sent", "accepted"),
            event(a, "quote.created", "{}"),
            event(a, "quote.updated", "{}"),
            changed(a, "draft", "pending_approval"),
            event(b, "quote.status.changed", "{\"not\": \"a change\"}"),
        ];
        let batch: Vec<&Envelope> = events.iter().collect();
        let moved: Vec<(Uuid, &str)> = counts_moved(&batch).into_iter().collect();
        // Each once, in key order (organization, then status).
        assert_eq!(
            moved,
            [
                (a, "draft"),
                (a, "pending_approval"),
                (b, "accepted"),
                (b, "sent"),
            ]
        );
        let edits = [event(a, "quote.updated", "{}")];
        assert!(counts_moved(&edits.iter().collect::<Vec<_>>()).is_empty());
    }
}
