//! The `Customer` aggregate: a client of the organization, with the details
//! quotes and invoices need.
//!
//! Every command carries the [`Actor`] taken from the access token. A customer
//! belongs to exactly one organization; a command from another organization is
//! answered as if the customer did not exist.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Actor;
use crate::values::{Address, Currency, Email, Name, PaymentTerms, Phone, Tags, TaxNumber};

/// Aggregate type, used as the `aggregateType` of events and in topic names.
pub const AGGREGATE_TYPE: &str = "customer";

/// Version of every customer event's `data` schema.
pub const SCHEMA_VERSION: u32 = 1;
/// Longest archive reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CustomerStatus {
    #[default]
    Active,
    Archived,
}

impl CustomerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }
}

/// Contact details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub email: Option<Email>,
    pub phone: Option<Phone>,
}

/// Billing details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Billing {
    pub billing_address: Option<Address>,
    pub tax_number: Option<TaxNumber>,
    pub currency: Currency,
    pub payment_terms_days: PaymentTerms,
}

/// Everything needed to register a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCustomer {
    pub legal_name: Name,
    pub display_name: Name,
    pub contact: Contact,
    pub billing: Billing,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    Create {
        actor: Actor,
        customer_id: Uuid,
        customer: NewCustomer,
    },
    Rename {
        actor: Actor,
        legal_name: Name,
        display_name: Name,
    },
    ChangeContact {
        actor: Actor,
        contact: Contact,
    },
    ChangeBilling {
        actor: Actor,
        billing: Billing,
    },
    ChangeTags {
        actor: Actor,
        tags: Tags,
    },
    Archive {
        actor: Actor,
        reason: Option<String>,
    },
    Restore {
        actor: Actor,
    },
}

impl CustomerCommand {
    pub fn actor(&self) -> Actor {
        match self {
            Self::Create { actor, .. }
            | Self::Rename { actor, .. }
            | Self::ChangeContact { actor, .. }
            | Self::ChangeBilling { actor, .. }
            | Self::ChangeTags { actor, .. }
            | Self::Archive { actor, .. }
            | Self::Restore { actor } => *actor,
        }
    }
}

/// `customer.created` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerCreated {
    pub customer_id: Uuid,
    pub organization_id: Uuid,
    pub legal_name: Name,
    pub display_name: Name,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub billing_address: Option<Address>,
    pub tax_number: Option<TaxNumber>,
    pub currency: Currency,
    pub payment_terms_days: PaymentTerms,
    pub tags: Tags,
}

/// `customer.renamed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerRenamed {
    pub customer_id: Uuid,
    pub legal_name: Name,
    pub display_name: Name,
}

/// `customer.contact.changed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerContactChanged {
    pub customer_id: Uuid,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
}

/// `customer.billing.changed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerBillingChanged {
    pub customer_id: Uuid,
    pub billing_address: Option<Address>,
    pub tax_number: Option<TaxNumber>,
    pub currency: Currency,
    pub payment_terms_days: PaymentTerms,
}

/// `customer.tags.changed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerTagsChanged {
    pub customer_id: Uuid,
    pub tags: Tags,
}

/// `customer.archived` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerArchived {
    pub customer_id: Uuid,
    pub reason: Option<String>,
}

/// `customer.restored` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerRestored {
    pub customer_id: Uuid,
}

/// Customer events, stored as `{"type": "...", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum CustomerEvent {
    #[serde(rename = "customer.created")]
    Created(CustomerCreated),
    #[serde(rename = "customer.renamed")]
    Renamed(CustomerRenamed),
    #[serde(rename = "customer.contact.changed")]
    ContactChanged(CustomerContactChanged),
    #[serde(rename = "customer.billing.changed")]
    BillingChanged(CustomerBillingChanged),
    #[serde(rename = "customer.tags.changed")]
    TagsChanged(CustomerTagsChanged),
    #[serde(rename = "customer.archived")]
    Archived(CustomerArchived),
    #[serde(rename = "customer.restored")]
    Restored(CustomerRestored),
}

impl CustomerEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Created(_) => "customer.created",
            Self::Renamed(_) => "customer.renamed",
            Self::ContactChanged(_) => "customer.contact.changed",
            Self::BillingChanged(_) => "customer.billing.changed",
            Self::TagsChanged(_) => "customer.tags.changed",
            Self::Archived(_) => "customer.archived",
            Self::Restored(_) => "customer.restored",
        }
    }
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        SCHEMA_VERSION.to_string()
    }
}

/// Why a customer command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    /// The customer does not exist, or belongs to another organization.
    #[error("customer not found")]
    NotFound,
    #[error("a customer with this id already exists")]
    AlreadyExists,
    #[error("the customer is archived; restore it before changing it")]
    Archived,
    #[error("the customer is already archived")]
    AlreadyArchived,
    #[error("the customer is not archived")]
    NotArchived,
    #[error("archive reason must be at most {MAX_REASON_CHARS} characters")]
    ReasonTooLong,
}

impl CustomerError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "customer_not_found",
            Self::AlreadyExists => "customer_already_exists",
            Self::Archived => "customer_archived",
            Self::AlreadyArchived => "customer_already_archived",
            Self::NotArchived => "customer_not_archived",
            Self::ReasonTooLong => "reason_too_long",
        }
    }
}

/// The state needed to decide on commands (and to answer a write-side read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub state: Option<CustomerState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub legal_name: Name,
    pub display_name: Name,
    pub contact: Contact,
    pub billing: Billing,
    pub tags: Tags,
    pub status: CustomerStatus,
}

impl Customer {
    /// The state if it exists and belongs to `actor`'s organization.
    pub fn visible_to(&self, actor: &Actor) -> Option<&CustomerState> {
        self.state
            .as_ref()
            .filter(|s| s.organization_id == actor.organization_id)
    }

    fn active_state(&self, actor: &Actor) -> Result<&CustomerState, CustomerError> {
        let state = self.visible_to(actor).ok_or(CustomerError::NotFound)?;
        match state.status {
            CustomerStatus::Active => Ok(state),
            CustomerStatus::Archived => Err(CustomerError::Archived),
        }
    }

    /// Pure decision: the events a command produces from the current state.
    /// A command that would change nothing produces no event.
    pub fn decide(&self, command: CustomerCommand) -> Result<Vec<CustomerEvent>, CustomerError> {
        let actor = command.actor();
        let events = match command {
            CustomerCommand::Create {
                customer_id,
                customer,
                ..
            } => {
                if self.state.is_some() {
                    return Err(CustomerError::AlreadyExists);
                }
                vec![CustomerEvent::Created(CustomerCreated {
                    customer_id,
                    organization_id: actor.organization_id,
                    legal_name: customer.legal_name,
                    display_name: customer.display_name,
                    email: customer.contact.email,
                    phone: customer.contact.phone,
                    billing_address: customer.billing.billing_address,
                    tax_number: customer.billing.tax_number,
                    currency: customer.billing.currency,
                    payment_terms_days: customer.billing.payment_terms_days,
                    tags: customer.tags,
                })]
            }
            CustomerCommand::Rename {
                legal_name,
                display_name,
                ..
            } => {
                let state = self.active_state(&actor)?;
                if state.legal_name == legal_name && state.display_name == display_name {
                    vec![]
                } else {
                    vec![CustomerEvent::Renamed(CustomerRenamed {
                        customer_id: state.id,
                        legal_name,
                        display_name,
                    })]
                }
            }
            CustomerCommand::ChangeContact { contact, .. } => {
                let state = self.active_state(&actor)?;
                if state.contact == contact {
                    vec![]
                } else {
                    vec![CustomerEvent::ContactChanged(CustomerContactChanged {
                        customer_id: state.id,
                        email: contact.email,
                        phone: contact.phone,
                    })]
                }
            }
            CustomerCommand::ChangeBilling { billing, .. } => {
                let state = self.active_state(&actor)?;
                if state.billing == billing {
                    vec![]
                } else {
                    vec![CustomerEvent::BillingChanged(CustomerBillingChanged {
                        customer_id: state.id,
                        billing_address: billing.billing_address,
                        tax_number: billing.tax_number,
                        currency: billing.currency,
                        payment_terms_days: billing.payment_terms_days,
                    })]
                }
            }
            CustomerCommand::ChangeTags { tags, .. } => {
                let state = self.active_state(&actor)?;
                if state.tags == tags {
                    vec![]
                } else {
                    vec![CustomerEvent::TagsChanged(CustomerTagsChanged {
                        customer_id: state.id,
                        tags,
                    })]
                }
            }
            CustomerCommand::Archive { reason, .. } => {
                let state = self.visible_to(&actor).ok_or(CustomerError::NotFound)?;
                if state.status == CustomerStatus::Archived {
                    return Err(CustomerError::AlreadyArchived);
                }
                let reason = reason
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty());
                if reason
                    .as_ref()
                    .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
                {
                    return Err(CustomerError::ReasonTooLong);
                }
                vec![CustomerEvent::Archived(CustomerArchived {
                    customer_id: state.id,
                    reason,
                })]
            }
            CustomerCommand::Restore { .. } => {
                let state = self.visible_to(&actor).ok_or(CustomerError::NotFound)?;
                if state.status == CustomerStatus::Active {
                    return Err(CustomerError::NotArchived);
                }
                vec![CustomerEvent::Restored(CustomerRestored {
                    customer_id: state.id,
                })]
            }
        };
        Ok(events)
    }
}

impl Aggregate for Customer {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CustomerEvent::Created(e) => {
                self.state = Some(CustomerState {
                    id: e.customer_id,
                    organization_id: e.organization_id,
                    legal_name: e.legal_name,
                    display_name: e.display_name,
                    contact: Contact {
                        email: e.email,
                        phone: e.phone,
                    },
                    billing: Billing {
                        billing_address: e.billing_address,
                        tax_number: e.tax_number,
                        currency: e.currency,
                        payment_terms_days: e.payment_terms_days,
                    },
                    tags: e.tags,
                    status: CustomerStatus::Active,
                });
            }
            other => {
                let Some(state) = self.state.as_mut() else {
                    return;
                };
                match other {
                    CustomerEvent::Created(_) => {}
                    CustomerEvent::Renamed(e) => {
                        state.legal_name = e.legal_name;
                        state.display_name = e.display_name;
                    }
                    CustomerEvent::ContactChanged(e) => {
                        state.contact = Contact {
                            email: e.email,
                            phone: e.phone,
                        };
                    }
                    CustomerEvent::BillingChanged(e) => {
                        state.billing = Billing {
                            billing_address: e.billing_address,
                            tax_number: e.tax_number,
                            currency: e.currency,
                            payment_terms_days: e.payment_terms_days,
                        };
                    }
                    CustomerEvent::TagsChanged(e) => state.tags = e.tags,
                    CustomerEvent::Archived(_) => state.status = CustomerStatus::Archived,
                    CustomerEvent::Restored(_) => state.status = CustomerStatus::Active,
                }
            }
        }
    }
}

/// The command input that creates [`sample_created`]'s customer, for tests.
pub fn sample_new_customer() -> NewCustomer {
    let c = sample_created(Uuid::nil(), Uuid::nil());
    NewCustomer {
        legal_name: c.legal_name,
        display_name: c.display_name,
        contact: Contact {
            email: c.email,
            phone: c.phone,
        },
        billing: Billing {
            billing_address: c.billing_address,
            tax_number: c.tax_number,
            currency: c.currency,
            payment_terms_days: c.payment_terms_days,
        },
        tags: c.tags,
    }
}

/// A fully populated sample, used by tests and by the schema catalog.
pub fn sample_created(customer_id: Uuid, organization_id: Uuid) -> CustomerCreated {
    let parse = |r: Result<Name, crate::values::FieldError>| r.unwrap_or_else(|e| panic!("{e}"));
    CustomerCreated {
        customer_id,
        organization_id,
        legal_name: parse(Name::parse("", "Kowhai Consulting Limited")),
        display_name: parse(Name::parse("", "Kowhai Consulting")),
        email: Email::parse("", "accounts@kowhai.example.com").ok(),
        phone: Phone::parse("", "+64 9 555 0100").ok(),
        billing_address: Address::parse(
            "",
            &crate::values::AddressInput {
                line1: Some("12 Queen Street".into()),
                city: Some("Auckland".into()),
                postal_code: Some("1010".into()),
                country: Some("NZ".into()),
                ..Default::default()
            },
        )
        .ok(),
        tax_number: TaxNumber::parse("", "123-456-789").ok(),
        currency: Currency::parse("", "NZD").unwrap_or_else(|e| panic!("{e}")),
        payment_terms_days: PaymentTerms::parse("", 20).unwrap_or_else(|e| panic!("{e}")),
        tags: Tags::parse("", &["consulting".into(), "priority".into()]).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Framework = TestFramework<Customer>;

    fn actor() -> Actor {
        Actor {
            organization_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
        }
    }

    fn other_actor() -> Actor {
        Actor {
            organization_id: Uuid::from_u128(9),
            user_id: Uuid::from_u128(10),
        }
    }

    fn created() -> CustomerEvent {
        CustomerEvent::Created(sample_created(Uuid::from_u128(3), actor().organization_id))
    }

    fn new_customer() -> NewCustomer {
        sample_new_customer()
    }

    fn name(raw: &str) -> Name {
        Name::parse("", raw).unwrap()
    }

    fn archived() -> CustomerEvent {
        CustomerEvent::Archived(CustomerArchived {
            customer_id: Uuid::from_u128(3),
            reason: None,
        })
    }

    #[tokio::test]
    async fn create_emits_created() {
        Framework::with(())
            .given_no_previous_events()
            .when_async(CustomerCommand::Create {
                actor: actor(),
                customer_id: Uuid::from_u128(3),
                customer: new_customer(),
            })
            .await
            .then_expect_events(vec![created()]);
    }

    #[tokio::test]
    async fn create_twice_is_refused() {
        Framework::with(())
            .given(vec![created()])
            .when_async(CustomerCommand::Create {
                actor: actor(),
                customer_id: Uuid::from_u128(3),
                customer: new_customer(),
            })
            .await
            .then_expect_error(CustomerError::AlreadyExists);
    }

    #[tokio::test]
    async fn rename_emits_renamed() {
        Framework::with(())
            .given(vec![created()])
            .when_async(CustomerCommand::Rename {
                actor: actor(),
                legal_name: name("Kowhai Group Limited"),
                display_name: name("Kowhai Group"),
            })
            .await
            .then_expect_events(vec![CustomerEvent::Renamed(CustomerRenamed {
                customer_id: Uuid::from_u128(3),
                legal_name: name("Kowhai Group Limited"),
                display_name: name("Kowhai Group"),
            })]);
    }

    #[tokio::test]
    async fn rename_to_same_names_emits_nothing() {
        Framework::with(())
            .given(vec![created()])
            .when_async(CustomerCommand::Rename {
                actor: actor(),
                legal_name: name("Kowhai Consulting Limited"),
                display_name: name("Kowhai Consulting"),
            })
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn unknown_customer_is_not_found() {
        Framework::with(())
            .given_no_previous_events()
            .when_async(CustomerCommand::Restore { actor: actor() })
            .await
            .then_expect_error(CustomerError::NotFound);
    }

    #[tokio::test]
    async fn another_organization_sees_not_found() {
        Framework::with(())
            .given(vec![created()])
            .when_async(CustomerCommand::Rename {
                actor: other_actor(),
                legal_name: name("Stolen"),
                display_name: name("Stolen"),
            })
            .await
            .then_expect_error(CustomerError::NotFound);
    }

    #[tokio::test]
    async fn change_contact_emits_event() {
        let contact = Contact {
            email: Some(Email::parse("", "new@kowhai.example.com").unwrap()),
            phone: None,
        };
        Framework::with(())
            .given(vec![created()])
            .when_async(CustomerCommand::ChangeContact {
                actor: actor(),
                contact: contact.clone(),
            })
            .await
            .then_expect_events(vec![CustomerEvent::ContactChanged(
                CustomerContactChanged {
                    customer_id: Uuid::from_u128(3),
                    email: contact.email,
                    phone: None,
                },
            )]);
    }

    #[tokio::test]
    async fn archived_customer_cannot_be_changed() {
        Framework::with(())
            .given(vec![created(), archived()])
            .when_async(CustomerCommand::ChangeTags {
                actor: actor(),
                tags: Tags::default(),
            })
            .await
            .then_expect_error(CustomerError::Archived);
    }

    #[tokio::test]
    async fn archive_then_restore() {
        Framework::with(())
            .given(vec![created()])
            .when_async(CustomerCommand::Archive {
                actor: actor(),
                reason: Some("  merged  ".into()),
            })
            .await
            .then_expect_events(vec![CustomerEvent::Archived(CustomerArchived {
                customer_id: Uuid::from_u128(3),
                reason: Some("merged".into()),
            })]);
        Framework::with(())
            .given(vec![created(), archived()])
            .when_async(CustomerCommand::Restore { actor: actor() })
            .await
            .then_expect_events(vec![CustomerEvent::Restored(CustomerRestored {
                customer_id: Uuid::from_u128(3),
            })]);
    }

    #[tokio::test]
    async fn archive_twice_and_restore_active_are_refused() {
        Framework::with(())
            .given(vec![created(), archived()])
            .when_async(CustomerCommand::Archive {
                actor: actor(),
                reason: None,
            })
            .await
            .then_expect_error(CustomerError::AlreadyArchived);
        Framework::with(())
            .given(vec![created()])
            .when_async(CustomerCommand::Restore { actor: actor() })
            .await
            .then_expect_error(CustomerError::NotArchived);
    }

    #[tokio::test]
    async fn overlong_archive_reason_is_refused() {
        Framework::with(())
            .given(vec![created()])
            .when_async(CustomerCommand::Archive {
                actor: actor(),
                reason: Some("x".repeat(501)),
            })
            .await
            .then_expect_error(CustomerError::ReasonTooLong);
    }

    #[test]
    fn stored_payload_is_type_and_data() {
        let value = serde_json::to_value(created()).unwrap();
        assert_eq!(value["type"], "customer.created");
        assert_eq!(value["data"]["legalName"], "Kowhai Consulting Limited");
        assert_eq!(value["data"]["currency"], "NZD");
        let back: CustomerEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, created());
    }
}
