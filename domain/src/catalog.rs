//! Every event type and schema version with its JSON Schema (of the whole
//! envelope as published on Kafka) and one sample message. The command
//! `pivotal schemas write` turns this into the files under `schemas/events/`.

use chrono::{TimeZone as _, Utc};
use schemars::{JsonSchema, Schema, schema_for};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::customer::{self, *};
use crate::envelope::{EventEnvelope, EventMetadata};
use crate::organization::{self as org, *};
use crate::permissions::{Grant, Operator};
use crate::pricing::{Discount, TaxMode};
use crate::quote::{self, *};
use crate::rate_card::{self, *};
use crate::user::{self as usr, *};
use crate::values::{Currency, Email, Name, Preferences, TimeZone};

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
        aggregate_id: match aggregate_type {
            crate::organization::AGGREGATE_TYPE => SAMPLE_ORGANIZATION,
            crate::user::AGGREGATE_TYPE => SAMPLE_USER,
            crate::rate_card::AGGREGATE_TYPE => SAMPLE_RATE_CARD,
            crate::quote::AGGREGATE_TYPE => SAMPLE_QUOTE,
            _ => SAMPLE_CUSTOMER,
        }
        .to_string(),
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
    let a = customer::AGGREGATE_TYPE;
    let v = customer::SCHEMA_VERSION;
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
    .into_iter()
    .chain(organization_entries())
    .chain(user_entries())
    .chain(rate_card_entries())
    .chain(quote_entries())
    .collect()
}

const SAMPLE_RATE_CARD: Uuid = Uuid::from_u128(0x0192_f3a0_7c00_7000_8000_0000_0000_0ca2);
const SAMPLE_QUOTE: Uuid = Uuid::from_u128(0x0192_f3a0_7c00_7000_8000_0000_0000_0904);

fn sample_entry() -> RateEntry {
    RateEntry {
        entry_id: Uuid::from_u128(0x0192_f3a0_7c00_7000_8000_0000_0000_0e01),
        name: name("Senior developer"),
        unit: Unit::Hours,
        rates: vec![Rate {
            currency: Currency::parse("", "NZD").unwrap_or_else(|_| unreachable!()),
            amount: rust_decimal::Decimal::new(18_000, 2),
            effective_from: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
        }],
    }
}

fn rate_card_entries() -> Vec<CatalogEntry> {
    let a = rate_card::AGGREGATE_TYPE;
    let v = rate_card::SCHEMA_VERSION;
    let r = SAMPLE_RATE_CARD;
    vec![
        entry(
            a,
            "rate_card.created",
            v,
            1,
            RateCardCreated {
                rate_card_id: r,
                organization_id: SAMPLE_ORGANIZATION,
                name: name("Standard rates 2026"),
                customer_id: None,
            },
        ),
        entry(
            a,
            "rate_card.renamed",
            v,
            2,
            RateCardRenamed {
                rate_card_id: r,
                name: name("Standard rates"),
            },
        ),
        entry(
            a,
            "rate_card.entry.set",
            v,
            3,
            RateEntrySet {
                rate_card_id: r,
                entry: sample_entry(),
            },
        ),
        entry(
            a,
            "rate_card.entry.removed",
            v,
            4,
            RateEntryRemoved {
                rate_card_id: r,
                entry_id: sample_entry().entry_id,
            },
        ),
        entry(
            a,
            "rate_card.archived",
            v,
            5,
            RateCardArchived { rate_card_id: r },
        ),
    ]
}

fn sample_content() -> QuoteContent {
    let entry = sample_entry();
    QuoteContent {
        customer_id: SAMPLE_CUSTOMER,
        title: name("Website rebuild"),
        description: Some("Discovery, design and build".into()),
        currency: Currency::parse("", "NZD").unwrap_or_else(|_| unreachable!()),
        valid_until: chrono::NaiveDate::from_ymd_opt(2026, 2, 4).unwrap_or_default(),
        terms: Some("50% on acceptance".into()),
        notes: None,
        tax_mode: TaxMode::Exclusive,
        discount: Some(Discount::Percent(rust_decimal::Decimal::new(5, 0))),
        lines: vec![QuoteLine {
            line_id: Uuid::from_u128(0x0192_f3a0_7c00_7000_8000_0000_0000_0111),
            description: name("Senior developer"),
            quantity: rust_decimal::Decimal::new(40, 0),
            unit: Unit::Hours,
            unit_price: rust_decimal::Decimal::new(18_000, 2),
            rate_source: Some(RateSource {
                rate_card_id: SAMPLE_RATE_CARD,
                entry_id: entry.entry_id,
                entry_name: entry.name.as_str().to_owned(),
            }),
            discount: None,
            tax_rate: rust_decimal::Decimal::new(15, 0),
            optional: false,
            selected: false,
        }],
    }
}

fn quote_entries() -> Vec<CatalogEntry> {
    let a = quote::AGGREGATE_TYPE;
    let v = quote::SCHEMA_VERSION;
    let content = sample_content();
    let pricing = content
        .price()
        .unwrap_or_else(|_| unreachable!("the sample prices"));
    let at = Utc
        .with_ymd_and_hms(2026, 1, 5, 9, 30, 0)
        .single()
        .unwrap_or_default();
    vec![
        entry(
            a,
            "quote.created",
            v,
            1,
            QuoteCreated {
                quote_id: SAMPLE_QUOTE,
                organization_id: SAMPLE_ORGANIZATION,
                quote_number: "Q-2026-0001".into(),
                customer_id: SAMPLE_CUSTOMER,
                total_amount: pricing.total,
                currency: content.currency,
                author_id: SAMPLE_USER,
                content: content.clone(),
                pricing: pricing.clone(),
            },
        ),
        entry(
            a,
            "quote.updated",
            v,
            2,
            QuoteUpdated {
                quote_id: SAMPLE_QUOTE,
                revision: 2,
                total_amount: pricing.total,
                content,
                pricing,
            },
        ),
        entry(
            a,
            "quote.status.changed",
            v,
            3,
            QuoteStatusChanged {
                quote_id: SAMPLE_QUOTE,
                old_status: QuoteStatus::Sent,
                new_status: QuoteStatus::Accepted,
                reason: None,
                changed_by: Some(SAMPLE_USER),
                customer_contact: Some(name("Jane Client")),
                at,
            },
        ),
    ]
}

fn name(raw: &str) -> Name {
    Name::parse("", raw).unwrap_or_else(|_| unreachable!("sample names are valid"))
}

fn organization_entries() -> Vec<CatalogEntry> {
    let a = org::AGGREGATE_TYPE;
    let v = org::SCHEMA_VERSION;
    let o = SAMPLE_ORGANIZATION;
    let settings = OrganizationSettings {
        default_currency: Currency::parse("", "NZD").unwrap_or_else(|_| unreachable!()),
        time_zone: TimeZone::parse("", "Pacific/Auckland").unwrap_or_else(|_| unreachable!()),
        fiscal_year_start_month: 4,
        tax: TaxSettings {
            registration_number: None,
            default_rate_basis_points: 1500,
            prices_include_tax: false,
        },
        quotes: QuoteSettings::default(),
    };
    let role = CustomRole {
        key: "sales-lead".into(),
        name: name("Sales lead"),
        description: Some("Approves quotes up to 5,000.00".into()),
        grants: vec![
            Grant::new("customers", "*"),
            Grant::new("quotes", "approve").when(
                "totalAmount",
                Operator::Lte,
                serde_json::json!(500_000),
            ),
        ],
    };
    vec![
        entry(
            a,
            "organization.created",
            v,
            1,
            OrganizationCreated {
                organization_id: o,
                name: name("Kōwhai Consulting"),
                settings: settings.clone(),
                created_by: SAMPLE_USER,
            },
        ),
        entry(
            a,
            "organization.renamed",
            v,
            2,
            OrganizationRenamed {
                organization_id: o,
                name: name("Kōwhai Consulting Ltd"),
            },
        ),
        entry(
            a,
            "organization.settings.changed",
            v,
            3,
            OrganizationSettingsChanged {
                organization_id: o,
                settings,
            },
        ),
        entry(
            a,
            "organization.security_policy.changed",
            v,
            4,
            SecurityPolicyChanged {
                organization_id: o,
                policy: SecurityPolicy {
                    require_mfa_for_sensitive_operations: true,
                },
            },
        ),
        entry(
            a,
            "organization.role.defined",
            v,
            5,
            RoleDefined {
                organization_id: o,
                role,
            },
        ),
        entry(
            a,
            "organization.role.removed",
            v,
            6,
            RoleRemoved {
                organization_id: o,
                key: "sales-lead".into(),
            },
        ),
    ]
}

fn user_entries() -> Vec<CatalogEntry> {
    let a = usr::AGGREGATE_TYPE;
    let v = usr::SCHEMA_VERSION;
    let u = SAMPLE_USER;
    let at = Utc
        .with_ymd_and_hms(2026, 1, 5, 9, 30, 0)
        .single()
        .unwrap_or_default();
    let mut preferences = serde_json::Map::new();
    preferences.insert("theme".into(), "dark".into());
    let preferences = Preferences::parse("", &preferences).unwrap_or_default();
    let role = |role: &str| RoleChanged {
        user_id: u,
        role: role.into(),
    };
    let mfa = || MfaChanged {
        user_id: u,
        method: "totp".into(),
    };
    vec![
        entry(
            a,
            "user.created",
            v,
            1,
            UserCreated {
                user_id: u,
                email: Email::parse("", "aroha@example.co.nz").unwrap_or_else(|_| unreachable!()),
                first_name: name("Aroha"),
                last_name: name("Ngata"),
                organization_id: SAMPLE_ORGANIZATION,
                phone: None,
                time_zone: TimeZone::parse("", "Pacific/Auckland")
                    .unwrap_or_else(|_| unreachable!()),
                preferences: preferences.clone(),
                roles: vec!["owner".into()],
                status: UserStatus::Active,
            },
        ),
        entry(
            a,
            "user.invitation.accepted",
            v,
            2,
            InvitationAccepted { user_id: u },
        ),
        entry(
            a,
            "user.profile.updated",
            v,
            3,
            ProfileUpdated {
                user_id: u,
                first_name: name("Aroha"),
                last_name: name("Ngata-Smith"),
                phone: None,
                time_zone: TimeZone::utc(),
                preferences,
            },
        ),
        entry(
            a,
            "user.email.changed",
            v,
            4,
            EmailChanged {
                user_id: u,
                email: Email::parse("", "aroha@kowhai.example").unwrap_or_else(|_| unreachable!()),
            },
        ),
        entry(
            a,
            "user.password.changed",
            v,
            5,
            PasswordChanged { user_id: u },
        ),
        entry(
            a,
            "user.deactivated",
            v,
            6,
            UserDeactivated {
                user_id: u,
                reason: Some("left the company".into()),
            },
        ),
        entry(a, "user.reactivated", v, 7, UserReactivated { user_id: u }),
        entry(
            a,
            "user.locked",
            v,
            8,
            UserLocked {
                user_id: u,
                reason: "too many failed sign-in attempts".into(),
                until: Some(at + chrono::Duration::minutes(15)),
            },
        ),
        entry(a, "user.unlocked", v, 9, UserUnlocked { user_id: u }),
        entry(a, "user.role.assigned", v, 10, role("manager")),
        entry(a, "user.role.revoked", v, 11, role("member")),
        entry(
            a,
            "user.authenticated",
            v,
            12,
            UserAuthenticated {
                user_id: u,
                login_method: LoginMethod::PasswordTotp,
                ip_address: "203.0.113.7".into(),
                user_agent: "Mozilla/5.0".into(),
                at,
                login_count: 42,
            },
        ),
        entry(a, "user.mfa.enabled", v, 13, mfa()),
        entry(a, "user.mfa.disabled", v, 14, mfa()),
        entry(a, "user.mfa.recovery_codes.regenerated", v, 15, mfa()),
        entry(
            a,
            "user.session.ended",
            v,
            16,
            SessionEnded {
                user_id: u,
                family_id: Uuid::from_u128(0x0192_f3a0_7c00_7000_8000_0000_0000_f00d),
                reason: SessionEnd::TokenReuse,
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::DomainEvent;

    #[test]
    fn catalog_covers_every_event_type_once() {
        let entries = catalog();
        let mut types: Vec<&str> = entries.iter().map(|e| e.event_type).collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), entries.len());
        // Every sample's data parses back into the domain event of its type.
        for entry in &entries {
            let stored =
                serde_json::json!({"type": entry.event_type, "data": entry.sample["data"]});
            let parsed = match entry.aggregate_type {
                customer::AGGREGATE_TYPE => serde_json::from_value::<CustomerEvent>(stored)
                    .map(|e| e.event_type())
                    .unwrap(),
                org::AGGREGATE_TYPE => serde_json::from_value::<OrganizationEvent>(stored)
                    .map(|e| e.event_type())
                    .unwrap(),
                usr::AGGREGATE_TYPE => serde_json::from_value::<UserEvent>(stored)
                    .map(|e| e.event_type())
                    .unwrap(),
                rate_card::AGGREGATE_TYPE => serde_json::from_value::<RateCardEvent>(stored)
                    .map(|e| e.event_type())
                    .unwrap(),
                quote::AGGREGATE_TYPE => serde_json::from_value::<QuoteEvent>(stored)
                    .map(|e| e.event_type())
                    .unwrap(),
                other => panic!("unknown aggregate type {other}"),
            };
            assert_eq!(parsed, entry.event_type);
            assert_eq!(entry.sample["type"], entry.event_type);
        }
    }
}
