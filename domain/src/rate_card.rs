//! The `RateCard` aggregate: named roles or services ("Senior developer",
//! hourly) with a rate per currency, each effective from a date. An
//! organization has a default card (chosen on the organization); a customer
//! may have its own. Quotes copy the rate they used, so changing a rate never
//! changes a priced quote.

use chrono::NaiveDate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Actor;
use crate::values::{Currency, FieldError, Name};

pub const AGGREGATE_TYPE: &str = "rate_card";
pub const SCHEMA_VERSION: u32 = 1;
/// Most entries on one card.
pub const MAX_ENTRIES: usize = 200;
/// Most characters of an entry's name.
pub const MAX_ENTRY_NAME_CHARS: usize = 100;

/// What a quantity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Hours,
    Days,
    Each,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hours => "hours",
            Self::Days => "days",
            Self::Each => "each",
        }
    }
}

/// A rate in one currency from a date on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    pub currency: Currency,
    pub amount: Decimal,
    pub effective_from: NaiveDate,
}

/// One role or service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateEntry {
    pub entry_id: Uuid,
    pub name: Name,
    pub unit: Unit,
    pub rates: Vec<Rate>,
}

impl RateEntry {
    /// Checks the rates: not negative, at most four decimals, one rate per
    /// currency and date.
    pub fn validate(
        entry_id: Uuid,
        name: Name,
        unit: Unit,
        mut rates: Vec<Rate>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if rates.is_empty() {
            errors.push(FieldError::new(
                "/rates",
                "required",
                "give at least one rate",
            ));
        }
        for (i, rate) in rates.iter().enumerate() {
            if rate.amount < Decimal::ZERO || rate.amount.normalize().scale() > 4 {
                errors.push(FieldError::new(
                    format!("/rates/{i}/amount"),
                    "invalid_amount",
                    "a rate is not negative and has at most 4 decimals",
                ));
            }
            if rates[..i]
                .iter()
                .any(|r| r.currency == rate.currency && r.effective_from == rate.effective_from)
            {
                errors.push(FieldError::new(
                    format!("/rates/{i}"),
                    "duplicate",
                    "one rate per currency and date",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        rates.sort_by(|a, b| {
            (a.currency.as_str(), a.effective_from).cmp(&(b.currency.as_str(), b.effective_from))
        });
        Ok(Self {
            entry_id,
            name,
            unit,
            rates,
        })
    }

    /// The rate in `currency` effective on `on`: the latest from-date not after it.
    pub fn rate_on(&self, currency: Currency, on: NaiveDate) -> Option<Decimal> {
        self.rates
            .iter()
            .filter(|r| r.currency == currency && r.effective_from <= on)
            .max_by_key(|r| r.effective_from)
            .map(|r| r.amount)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateCardCommand {
    Create {
        actor: Actor,
        rate_card_id: Uuid,
        name: Name,
        customer_id: Option<Uuid>,
    },
    Rename {
        actor: Actor,
        name: Name,
    },
    PutEntry {
        actor: Actor,
        entry: RateEntry,
    },
    RemoveEntry {
        actor: Actor,
        entry_id: Uuid,
    },
    Archive {
        actor: Actor,
    },
}

impl RateCardCommand {
    pub fn actor(&self) -> Actor {
        match self {
            Self::Create { actor, .. }
            | Self::Rename { actor, .. }
            | Self::PutEntry { actor, .. }
            | Self::RemoveEntry { actor, .. }
            | Self::Archive { actor } => *actor,
        }
    }
}

/// `rate_card.created` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateCardCreated {
    pub rate_card_id: Uuid,
    pub organization_id: Uuid,
    pub name: Name,
    /// The customer this card is for; none for a general card.
    pub customer_id: Option<Uuid>,
}

/// `rate_card.renamed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateCardRenamed {
    pub rate_card_id: Uuid,
    pub name: Name,
}

/// `rate_card.entry.set` v1: an entry added or replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateEntrySet {
    pub rate_card_id: Uuid,
    pub entry: RateEntry,
}

/// `rate_card.entry.removed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateEntryRemoved {
    pub rate_card_id: Uuid,
    pub entry_id: Uuid,
}

/// `rate_card.archived` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateCardArchived {
    pub rate_card_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum RateCardEvent {
    #[serde(rename = "rate_card.created")]
    Created(RateCardCreated),
    #[serde(rename = "rate_card.renamed")]
    Renamed(RateCardRenamed),
    #[serde(rename = "rate_card.entry.set")]
    EntrySet(RateEntrySet),
    #[serde(rename = "rate_card.entry.removed")]
    EntryRemoved(RateEntryRemoved),
    #[serde(rename = "rate_card.archived")]
    Archived(RateCardArchived),
}

impl RateCardEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Created(_) => "rate_card.created",
            Self::Renamed(_) => "rate_card.renamed",
            Self::EntrySet(_) => "rate_card.entry.set",
            Self::EntryRemoved(_) => "rate_card.entry.removed",
            Self::Archived(_) => "rate_card.archived",
        }
    }
}

impl DomainEvent for RateCardEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        SCHEMA_VERSION.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateCardError {
    #[error("rate card not found")]
    NotFound,
    #[error("a rate card with this id already exists")]
    AlreadyExists,
    #[error("the rate card is archived")]
    Archived,
    #[error("the rate card has no entry {0}")]
    EntryNotFound(Uuid),
    #[error("a rate card has at most {MAX_ENTRIES} entries")]
    TooManyEntries,
}

impl RateCardError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "rate_card_not_found",
            Self::AlreadyExists => "rate_card_already_exists",
            Self::Archived => "rate_card_archived",
            Self::EntryNotFound(_) => "rate_entry_not_found",
            Self::TooManyEntries => "too_many_entries",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCard {
    pub state: Option<RateCardState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCardState {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: Name,
    pub customer_id: Option<Uuid>,
    pub entries: Vec<RateEntry>,
    pub archived: bool,
}

impl RateCard {
    pub fn visible_to(&self, actor: &Actor) -> Option<&RateCardState> {
        self.state
            .as_ref()
            .filter(|s| s.organization_id == actor.organization_id)
    }

    pub fn decide(&self, command: RateCardCommand) -> Result<Vec<RateCardEvent>, RateCardError> {
        let actor = command.actor();
        if let RateCardCommand::Create {
            rate_card_id,
            name,
            customer_id,
            ..
        } = command
        {
            if self.state.is_some() {
                return Err(RateCardError::AlreadyExists);
            }
            return Ok(vec![RateCardEvent::Created(RateCardCreated {
                rate_card_id,
                organization_id: actor.organization_id,
                name,
                customer_id,
            })]);
        }
        let state = self.visible_to(&actor).ok_or(RateCardError::NotFound)?;
        if state.archived {
            return Err(RateCardError::Archived);
        }
        let rate_card_id = state.id;
        Ok(match command {
            RateCardCommand::Create { .. } => vec![],
            RateCardCommand::Rename { name, .. } => {
                if name == state.name {
                    vec![]
                } else {
                    vec![RateCardEvent::Renamed(RateCardRenamed {
                        rate_card_id,
                        name,
                    })]
                }
            }
            RateCardCommand::PutEntry { entry, .. } => {
                match state.entries.iter().find(|e| e.entry_id == entry.entry_id) {
                    Some(existing) if *existing == entry => vec![],
                    None if state.entries.len() >= MAX_ENTRIES => {
                        return Err(RateCardError::TooManyEntries);
                    }
                    _ => vec![RateCardEvent::EntrySet(RateEntrySet {
                        rate_card_id,
                        entry,
                    })],
                }
            }
            RateCardCommand::RemoveEntry { entry_id, .. } => {
                if !state.entries.iter().any(|e| e.entry_id == entry_id) {
                    return Err(RateCardError::EntryNotFound(entry_id));
                }
                vec![RateCardEvent::EntryRemoved(RateEntryRemoved {
                    rate_card_id,
                    entry_id,
                })]
            }
            RateCardCommand::Archive { .. } => {
                vec![RateCardEvent::Archived(RateCardArchived { rate_card_id })]
            }
        })
    }
}

impl Aggregate for RateCard {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = RateCardCommand;
    type Event = RateCardEvent;
    type Error = RateCardError;
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
        if let RateCardEvent::Created(e) = &event {
            self.state = Some(RateCardState {
                id: e.rate_card_id,
                organization_id: e.organization_id,
                name: e.name.clone(),
                customer_id: e.customer_id,
                entries: Vec::new(),
                archived: false,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            RateCardEvent::Created(_) => {}
            RateCardEvent::Renamed(e) => s.name = e.name,
            RateCardEvent::EntrySet(e) => {
                match s
                    .entries
                    .iter_mut()
                    .find(|x| x.entry_id == e.entry.entry_id)
                {
                    Some(existing) => *existing = e.entry,
                    None => s.entries.push(e.entry),
                }
            }
            RateCardEvent::EntryRemoved(e) => s.entries.retain(|x| x.entry_id != e.entry_id),
            RateCardEvent::Archived(_) => s.archived = true,
        }
    }
}
