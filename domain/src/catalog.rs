//! Every event type and schema version with its JSON Schema (of the whole
//! envelope as published on Kafka) and one sample message. The command
//! `pivotal schemas write` turns this into the files under `schemas/events/`.

use chrono::{TimeZone, Utc};
use schemars::{JsonSchema, Schema, schema_for};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::customer::{self, *};
use crate::envelope::{EventEnvelope, EventMetadata};

/// One event type at one schema version.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub aggregate_type: &'static str,
    pub event_type: &'static str,
    pub version: u32,
    pub schema: Schema,
    pub sample: Value,
}

impl CatalogEntry {
    /// File stem under `schemas/events/`, e.g. `customer.created.v1`.
    pub fn file_stem(&self) -> String {
        format!("{}.v{}", self.event_type, self.version)
    }
}

fn entry<T: JsonSchema + Serialize>(
    aggregate_type: &'static str,
    event_type: &'static str,
    version: u32,
    sequence: u64,
    data: T,
) -> CatalogEntry {
    let mut schema = schema_for!(EventEnvelope<T>);
    schema.insert(
        "$id".into(),
        Value::String(format!(
            "pivotal-flow/events/{event_type}.v{version}.schema.json"
        )),
    );
    schema.insert(
        "title".into(),
        Value::String(format!("{event_type} v{version}")),
    );
    let envelope = EventEnvelope {
        id: Uuid::from_u128(0x0192_f3a0_7c00_7000_8000_0000_0000_0000 + u128::from(sequence)),
        event_type: event_type.to_owned(),
        aggregate_id: SAMPLE_CUSTOMER.to_string(),
        aggregate_type: aggregate_type.to_owned(),
        organization_id: SAMPLE_ORGANIZATION,
        user_id: Some(SAMPLE_USER),
        timestamp: Utc
            .with_ymd_and_hms(2026, 1, 5, 9, 30, 0)
            .single()
            .unwrap_or_default(),
        version: sequence,
        metadata: EventMetadata {
            correlation_id: "0192f3a0-7c00-7000-8000-00000000c0de".into(),
            causation_id: Some("0192f3a0-7c00-7000-8000-00000000ca05".into()),
            source: "command-api".into(),
            user_agent: Some("curl/8.5.0".into()),
            ip_address: Some("203.0.113.7".into()),
        },
        data,
    };
    CatalogEntry {
        aggregate_type,
        event_type,
        version,
        schema,
        sample: serde_json::to_value(envelope).unwrap_or(Value::Null),
    }
}

const SAMPLE_CUSTOMER: Uuid = Uuid::from_u128(0x0192_f3a0_7c00_7000_8000_0000_0000_0c05);
const SAMPLE_ORGANIZATION: Uuid = Uuid::from_u128(0x0192_f3a0_7c00_7000_8000_0000_0000_0049);
const SAMPLE_USER: Uuid = Uuid::from_u128(0x0192_f3a0_7c00_7000_8000_0000_0000_0005);

/// The catalog, in a stable order.
pub fn catalog() -> Vec<CatalogEntry> {
    let created = customer::sample_created(SAMPLE_CUSTOMER, SAMPLE_ORGANIZATION);
    let a = AGGREGATE_TYPE;
    let v = SCHEMA_VERSION;
    vec![
        entry(a, "customer.created", v, 1, created.clone()),
        entry(
            a,
            "customer.renamed",
            v,
            2,
            CustomerRenamed {
                customer_id: SAMPLE_CUSTOMER,
                legal_name: created.display_name.clone(),
                display_name: created.display_name.clone(),
            },
        ),
        entry(
            a,
            "customer.contact.changed",
            v,
            3,
            CustomerContactChanged {
                customer_id: SAMPLE_CUSTOMER,
                email: created.email.clone(),
                phone: None,
            },
        ),
        entry(
            a,
            "customer.billing.changed",
            v,
            4,
            CustomerBillingChanged {
                customer_id: SAMPLE_CUSTOMER,
                billing_address: created.billing_address.clone(),
                tax_number: None,
                currency: created.currency,
                payment_terms_days: created.payment_terms_days,
            },
        ),
        entry(
            a,
            "customer.tags.changed",
            v,
            5,
            CustomerTagsChanged {
                customer_id: SAMPLE_CUSTOMER,
                tags: created.tags.clone(),
            },
        ),
        entry(
            a,
            "customer.archived",
            v,
            6,
            CustomerArchived {
                customer_id: SAMPLE_CUSTOMER,
                reason: Some("merged into another customer".into()),
            },
        ),
        entry(
            a,
            "customer.restored",
            v,
            7,
            CustomerRestored {
                customer_id: SAMPLE_CUSTOMER,
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::DomainEvent;

    #[test]
    fn catalog_covers_every_customer_event_type_once() {
        let entries = catalog();
        let mut types: Vec<&str> = entries.iter().map(|e| e.event_type).collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), entries.len());
        // Every sample's data parses back into the domain event of its type.
        for entry in &entries {
            let stored =
                serde_json::json!({"type": entry.event_type, "data": entry.sample["data"]});
            let event: CustomerEvent = serde_json::from_value(stored).unwrap();
            assert_eq!(event.event_type(), entry.event_type);
            assert_eq!(entry.sample["type"], entry.event_type);
        }
    }
}
