//! Commands appended straight to the event store, as the command API
//! would append them, for tests that need events without HTTP.

use pivotal_domain::customer::{Billing, Contact, Customer, CustomerCommand, NewCustomer};
use pivotal_domain::envelope::{Actor, CommandContext, EventMetadata};
use pivotal_domain::values::{Currency, Name, PaymentTerms, Tags};
use pivotal_event_store::commands::AggregateStore;
use uuid::Uuid;

/// The correlation id of every command these helpers append.
pub const CORRELATION_ID: &str = "tests";

/// The context of a test's command by `actor`, now.
pub fn context(actor: Actor) -> CommandContext {
    CommandContext {
        actor,
        timestamp: chrono::Utc::now(),
        metadata: EventMetadata {
            correlation_id: CORRELATION_ID.into(),
            causation_id: None,
            source: "tests".into(),
            user_agent: None,
            ip_address: None,
        },
        idempotency_key: None,
    }
}

/// Creates a customer of `actor`'s organization (one event), legally
/// named `legal`, shown as `display`, tagged `tags`, in NZD; returns its
/// id.
pub async fn create_customer(
    store: &AggregateStore<Customer>,
    actor: Actor,
    legal: &str,
    display: &str,
    tags: &[&str],
) -> Uuid {
    let id = Uuid::now_v7();
    let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    let customer = NewCustomer {
        legal_name: Name::parse("", legal).unwrap(),
        display_name: Name::parse("", display).unwrap(),
        contact: Contact {
            email: None,
            phone: None,
        },
        billing: Billing {
            billing_address: None,
            tax_number: None,
            currency: Currency::parse("", "NZD").unwrap(),
            payment_terms_days: PaymentTerms::parse("", 20).unwrap(),
        },
        tags: Tags::parse("", &tags).unwrap(),
    };
    store
        .execute(
            &id.to_string(),
            Some(0),
            CustomerCommand::Create {
                actor,
                customer_id: id,
                customer,
            },
            &context(actor),
        )
        .await
        .unwrap();
    id
}
