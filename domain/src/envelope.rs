//! The event envelope every published event travels in, exactly the
//! architecture document's `IBaseEvent` with `IEventMetadata`, plus the
//! [`Actor`] and [`CommandContext`] from which the APIs fill it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The most bytes an event's envelope may take as JSON: the value of its
/// Kafka record. The producer's `message.max.bytes` and the event topics'
/// `max.message.bytes` are set from it (with room for the record's headers),
/// and the domain's bounds keep every event below it: the largest quote a
/// client can send (500 lines, every field at its bound) makes a record of
/// about 0.97 MB, within 3% of Kafka's default limit of 1 MB (ADR 0029).
pub const MAX_EVENT_BYTES: usize = 2 * 1024 * 1024;

/// `IEventMetadata`: where a change came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// Shared by every event caused by one request (`X-Correlation-Id`).
    pub correlation_id: String,
    /// Id of the message that caused this one (the request id for commands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The process that accepted the command, e.g. `command-api`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

/// `IBaseEvent` with its `data`: the JSON value of every Kafka message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope<T> {
    /// UUIDv7 of this event.
    pub id: Uuid,
    /// Event type, e.g. `customer.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub aggregate_id: String,
    /// Aggregate type, e.g. `customer`.
    pub aggregate_type: String,
    pub organization_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// When the command that produced the event was accepted.
    pub timestamp: DateTime<Utc>,
    /// Version of the aggregate after this event (1 for the first event).
    pub version: u64,
    pub metadata: EventMetadata,
    /// The event's own facts; its shape is given by `type` and the schema version.
    pub data: T,
}

/// Who issues a command: taken from the verified access token, never from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub organization_id: Uuid,
    pub user_id: Uuid,
}

/// Everything the envelope needs besides the event itself, gathered by the API
/// from the token and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    pub actor: Actor,
    pub timestamp: DateTime<Utc>,
    pub metadata: EventMetadata,
    /// The request's `Idempotency-Key`, stored beside the events (not
    /// published) so that a retry after a crash can find what was appended.
    pub idempotency_key: Option<String>,
}

/// Keys of the per-commit metadata map stored beside each event.
pub mod keys {
    pub const ORGANIZATION_ID: &str = "organizationId";
    pub const USER_ID: &str = "userId";
    pub const TIMESTAMP: &str = "timestamp";
    pub const CORRELATION_ID: &str = "correlationId";
    pub const CAUSATION_ID: &str = "causationId";
    pub const SOURCE: &str = "source";
    pub const USER_AGENT: &str = "userAgent";
    pub const IP_ADDRESS: &str = "ipAddress";
    pub const IDEMPOTENCY_KEY: &str = "idempotencyKey";
}

/// Why a stored metadata map could not be read back into an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored event metadata is missing or has an invalid `{0}`")]
pub struct MetadataError(pub &'static str);

impl CommandContext {
    /// The flat string map stored in the event store's `metadata` column.
    pub fn to_store_metadata(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        map.insert(
            keys::ORGANIZATION_ID.into(),
            self.actor.organization_id.to_string(),
        );
        map.insert(keys::USER_ID.into(), self.actor.user_id.to_string());
        map.insert(
            keys::TIMESTAMP.into(),
            self.timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        map.insert(
            keys::CORRELATION_ID.into(),
            self.metadata.correlation_id.clone(),
        );
        map.insert(keys::SOURCE.into(), self.metadata.source.clone());
        let optional = [
            (keys::CAUSATION_ID, &self.metadata.causation_id),
            (keys::USER_AGENT, &self.metadata.user_agent),
            (keys::IP_ADDRESS, &self.metadata.ip_address),
            (keys::IDEMPOTENCY_KEY, &self.idempotency_key),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.into(), value.clone());
            }
        }
        map
    }
}

impl CommandContext {
    /// The most bytes the published envelope of an event decided in this
    /// context can take (the value of its Kafka record, see
    /// [`MAX_EVENT_BYTES`]): the envelope's fields as the relay fills them
    /// from the stored metadata, plus the whole stored payload
    /// (`payload_bytes`), of which the envelope's `data` is a part.
    pub fn envelope_bytes(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        version: u64,
        payload_bytes: usize,
    ) -> usize {
        let envelope = EventEnvelope {
            id: Uuid::max(),
            event_type: event_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            aggregate_type: aggregate_type.to_owned(),
            organization_id: self.actor.organization_id,
            user_id: Some(self.actor.user_id),
            // Stored (and published) to the microsecond: never longer.
            timestamp: self.timestamp,
            version,
            metadata: self.metadata.clone(),
            data: (),
        };
        serde_json::to_vec(&envelope)
            .map_or(usize::MAX, |json| json.len())
            .saturating_add(payload_bytes)
    }
}

/// The envelope fields recovered from a stored metadata map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMetadata {
    pub organization_id: Uuid,
    pub user_id: Option<Uuid>,
    pub timestamp: DateTime<Utc>,
    pub metadata: EventMetadata,
}

impl StoredMetadata {
    pub fn from_store(map: &HashMap<String, String>) -> Result<Self, MetadataError> {
        Self::from_fields(|key| map.get(key).filter(|v| !v.is_empty()).cloned())
    }

    /// [`StoredMetadata::from_store`], taking the map's strings instead of
    /// copying them.
    pub fn from_owned_store(mut map: HashMap<String, String>) -> Result<Self, MetadataError> {
        Self::from_fields(|key| map.remove(key).filter(|v| !v.is_empty()))
    }

    /// Reads the envelope's fields through `get`, which gives a key's
    /// non-empty value.
    fn from_fields(
        mut get: impl FnMut(&'static str) -> Option<String>,
    ) -> Result<Self, MetadataError> {
        let organization_id = get(keys::ORGANIZATION_ID)
            .and_then(|v| Uuid::parse_str(&v).ok())
            .ok_or(MetadataError(keys::ORGANIZATION_ID))?;
        let user_id = match get(keys::USER_ID) {
            Some(v) => Some(Uuid::parse_str(&v).map_err(|_| MetadataError(keys::USER_ID))?),
            None => None,
        };
        let timestamp = get(keys::TIMESTAMP)
            .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or(MetadataError(keys::TIMESTAMP))?;
        Ok(Self {
            organization_id,
            user_id,
            timestamp,
            metadata: EventMetadata {
                correlation_id: get(keys::CORRELATION_ID)
                    .ok_or(MetadataError(keys::CORRELATION_ID))?,
                causation_id: get(keys::CAUSATION_ID),
                source: get(keys::SOURCE).ok_or(MetadataError(keys::SOURCE))?,
                user_agent: get(keys::USER_AGENT),
                ip_address: get(keys::IP_ADDRESS),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_bytes_bound_the_published_envelope() {
        let context = CommandContext {
            actor: Actor {
                organization_id: Uuid::now_v7(),
                user_id: Uuid::now_v7(),
            },
            // Nanoseconds, which the store keeps to the microsecond.
            timestamp: DateTime::from_timestamp(1_790_000_000, 123_456_789).unwrap(),
            metadata: EventMetadata {
                correlation_id: "c-\u{1D11E}\"".into(),
                causation_id: Some("r-1".into()),
                source: "command-api".into(),
                user_agent: Some("agent/1.0 (\\)".into()),
                ip_address: Some("2001:db8::1".into()),
            },
            idempotency_key: Some("k-1".into()),
        };
        let payload = serde_json::json!({
            "type": "renamed",
            "data": {"name": "\u{1D11E}\"\n".repeat(100), "at": [1, 2.5, -3]}
        });
        let payload_json = serde_json::to_string(&payload).unwrap();
        // As the relay builds it: from the stored metadata and the payload's `data`.
        let stored = StoredMetadata::from_store(&context.to_store_metadata()).unwrap();
        let published = EventEnvelope {
            id: Uuid::now_v7(),
            event_type: "customer.renamed".into(),
            aggregate_id: "a-1".into(),
            aggregate_type: "customer".into(),
            organization_id: stored.organization_id,
            user_id: stored.user_id,
            timestamp: stored.timestamp,
            version: 12,
            metadata: stored.metadata,
            data: payload["data"].clone(),
        };
        let published = serde_json::to_vec(&published).unwrap().len();
        let bound = context.envelope_bytes(
            "customer",
            "a-1",
            "customer.renamed",
            12,
            payload_json.len(),
        );
        assert!(bound >= published, "{bound} < {published}");
        // Not by much: the payload's own wrapping and the dropped nanoseconds.
        assert!(bound - published < 64, "{bound} - {published}");
    }

    #[test]
    fn store_metadata_round_trips() {
        let context = CommandContext {
            actor: Actor {
                organization_id: Uuid::now_v7(),
                user_id: Uuid::now_v7(),
            },
            timestamp: Utc::now(),
            metadata: EventMetadata {
                correlation_id: "c-1".into(),
                causation_id: Some("r-1".into()),
                source: "command-api".into(),
                user_agent: None,
                ip_address: Some("127.0.0.1".into()),
            },
            idempotency_key: Some("k-1".into()),
        };
        let stored = StoredMetadata::from_store(&context.to_store_metadata()).unwrap();
        assert_eq!(stored.organization_id, context.actor.organization_id);
        assert_eq!(stored.user_id, Some(context.actor.user_id));
        assert_eq!(stored.metadata, context.metadata);
        assert_eq!(
            stored.timestamp.timestamp_micros(),
            context.timestamp.timestamp_micros()
        );
    }

    #[test]
    fn missing_organization_is_an_error() {
        let error = StoredMetadata::from_store(&HashMap::new()).unwrap_err();
        assert_eq!(error, MetadataError(keys::ORGANIZATION_ID));
    }
}
