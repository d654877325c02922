//! The event history of an aggregate, read from the event store itself, the
//! complete record auditors replay.

use async_graphql::{ID, Json, SimpleObject};
use pivotal_event_store::log;
use sqlx::PgPool;
use uuid::Uuid;

use crate::errors;
use crate::scalars::Instant;

#[derive(SimpleObject, Debug, Clone)]
pub struct EventMetadata {
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub source: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
}

/// One event, as in its published envelope, with its global position.
#[derive(SimpleObject, Debug, Clone)]
pub struct HistoryEvent {
    pub id: ID,
    #[graphql(name = "type")]
    pub event_type: String,
    pub aggregate_id: String,
    pub aggregate_type: String,
    pub organization_id: ID,
    pub user_id: Option<ID>,
    pub timestamp: Instant,
    pub version: i64,
    pub schema_version: String,
    /// Global position in the event log.
    pub position: i64,
    pub metadata: EventMetadata,
    pub data: Json<serde_json::Value>,
}

pub async fn of_aggregate(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    organization: Uuid,
) -> async_graphql::Result<Vec<HistoryEvent>> {
    let events = log::aggregate_history(pool, aggregate_type, aggregate_id)
        .await
        .map_err(errors::database)?;
    let mut out = Vec::with_capacity(events.len());
    for mut logged in events {
        let (schema_version, position) =
            (std::mem::take(&mut logged.event_version), logged.position);
        let envelope = logged.into_envelope().map_err(errors::internal)?;
        let data: serde_json::Value =
            serde_json::from_str(envelope.data.get()).map_err(errors::internal)?;
        if envelope.organization_id != organization {
            continue;
        }
        out.push(HistoryEvent {
            id: ID(envelope.id.to_string()),
            event_type: envelope.event_type,
            aggregate_id: envelope.aggregate_id,
            aggregate_type: envelope.aggregate_type,
            organization_id: ID(envelope.organization_id.to_string()),
            user_id: envelope.user_id.map(|u| ID(u.to_string())),
            timestamp: envelope.timestamp.into(),
            version: i64::try_from(envelope.version).unwrap_or(i64::MAX),
            schema_version,
            position,
            metadata: EventMetadata {
                correlation_id: envelope.metadata.correlation_id,
                causation_id: envelope.metadata.causation_id,
                source: envelope.metadata.source,
                user_agent: envelope.metadata.user_agent,
                ip_address: envelope.metadata.ip_address,
            },
            data: Json(data),
        });
    }
    Ok(out)
}
