//! The `Quote` aggregate: the seed's Quotation Service.
//!
//! A quote carries its content (customer, title, lines, discount, terms) and
//! the pricing computed from it, so what was quoted never changes when rates
//! do. Every status change is an explicit command with a
//! `quote.status.changed` event carrying the old and new status and the
//! reason. Editing a quote that was sent starts a new revision; earlier
//! revisions stay in the history and the read model.

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Actor;
use crate::pricing::{self, Discount, PriceLine, PricingInput, QuotePricing, TaxMode};
use crate::rate_card::Unit;
use crate::values::{Currency, FieldError, Name};

pub const AGGREGATE_TYPE: &str = "quote";
pub const SCHEMA_VERSION: u32 = 1;
/// Most characters of a quote's description, terms and notes.
pub const MAX_TEXT_CHARS: usize = 5000;
/// Longest decision reason or comment, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuoteStatus {
    Draft,
    PendingApproval,
    Approved,
    Rejected,
    Sent,
    Accepted,
    Declined,
    Expired,
    Cancelled,
}

impl std::fmt::Display for QuoteStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl QuoteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::PendingApproval => "pending_approval",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Sent => "sent",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// No command changes a quote in these states.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Accepted | Self::Declined | Self::Expired | Self::Cancelled
        )
    }
}

/// Where a line's unit price came from: a rate card entry's rate, copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateSource {
    pub rate_card_id: Uuid,
    pub entry_id: Uuid,
    /// The entry's name when the rate was taken.
    pub entry_name: String,
}

/// One line of a quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteLine {
    pub line_id: Uuid,
    pub description: Name,
    pub quantity: Decimal,
    pub unit: Unit,
    pub unit_price: Decimal,
    pub rate_source: Option<RateSource>,
    pub discount: Option<Discount>,
    /// Percent.
    pub tax_rate: Decimal,
    pub optional: bool,
    /// For optional lines: whether the customer takes it.
    pub selected: bool,
}

/// Everything a quote says, apart from its number and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteContent {
    pub customer_id: Uuid,
    pub title: Name,
    pub description: Option<String>,
    pub currency: Currency,
    pub valid_until: NaiveDate,
    pub terms: Option<String>,
    pub notes: Option<String>,
    pub tax_mode: TaxMode,
    pub discount: Option<Discount>,
    /// In display order.
    pub lines: Vec<QuoteLine>,
}

impl QuoteContent {
    /// Prices the content; field errors point into the request body.
    pub fn price(&self) -> Result<QuotePricing, Vec<FieldError>> {
        pricing::calculate(&PricingInput {
            currency: self.currency,
            tax_mode: self.tax_mode,
            discount: self.discount,
            lines: self
                .lines
                .iter()
                .map(|l| PriceLine {
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    discount: l.discount,
                    tax_rate: l.tax_rate,
                    optional: l.optional,
                    selected: l.selected,
                })
                .collect(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteCommand {
    Create {
        actor: Actor,
        quote_id: Uuid,
        number: String,
        content: QuoteContent,
    },
    /// `updateQuote`: in draft or rejected, changes the current revision; once
    /// submitted, approved or sent, starts a new revision back in draft.
    Update {
        actor: Actor,
        content: QuoteContent,
    },
    /// Quotes whose total is above `threshold` need an approver; others are
    /// approved at once.
    SubmitForApproval {
        actor: Actor,
        threshold: Decimal,
    },
    Approve {
        actor: Actor,
        comment: Option<String>,
    },
    Reject {
        actor: Actor,
        reason: String,
    },
    Send {
        actor: Actor,
    },
    Accept {
        actor: Actor,
        accepted_by: Name,
        at: DateTime<Utc>,
    },
    Decline {
        actor: Actor,
        declined_by: Name,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// The scheduled check: a sent quote past its valid-until date.
    Expire {
        actor: Actor,
        today: NaiveDate,
    },
    /// `deleteQuote`: history is kept.
    Cancel {
        actor: Actor,
        reason: Option<String>,
    },
}

impl QuoteCommand {
    pub fn actor(&self) -> Actor {
        match self {
            Self::Create { actor, .. }
            | Self::Update { actor, .. }
            | Self::SubmitForApproval { actor, .. }
            | Self::Approve { actor, .. }
            | Self::Reject { actor, .. }
            | Self::Send { actor }
            | Self::Accept { actor, .. }
            | Self::Decline { actor, .. }
            | Self::Expire { actor, .. }
            | Self::Cancel { actor, .. } => *actor,
        }
    }
}

/// `quote.created` v1: the seed's fields plus the content and its pricing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteCreated {
    pub quote_id: Uuid,
    pub organization_id: Uuid,
    pub quote_number: String,
    pub customer_id: Uuid,
    /// Exact decimal string, e.g. "2402.31".
    pub total_amount: Decimal,
    pub currency: Currency,
    pub author_id: Uuid,
    pub content: QuoteContent,
    pub pricing: QuotePricing,
}

/// `quote.updated` v1: new content of the current or a new revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteUpdated {
    pub quote_id: Uuid,
    /// Revision this content belongs to (1 for the first).
    pub revision: u32,
    pub total_amount: Decimal,
    pub content: QuoteContent,
    pub pricing: QuotePricing,
}

/// `quote.status.changed` v1, as in the seed, plus who and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteStatusChanged {
    pub quote_id: Uuid,
    pub old_status: QuoteStatus,
    pub new_status: QuoteStatus,
    pub reason: Option<String>,
    /// The user who made the change (none for the scheduled expiry).
    pub changed_by: Option<Uuid>,
    /// For acceptance and declines: the customer's person.
    pub customer_contact: Option<Name>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum QuoteEvent {
    #[serde(rename = "quote.created")]
    Created(Box<QuoteCreated>),
    #[serde(rename = "quote.updated")]
    Updated(Box<QuoteUpdated>),
    #[serde(rename = "quote.status.changed")]
    StatusChanged(QuoteStatusChanged),
}

impl QuoteEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Created(_) => "quote.created",
            Self::Updated(_) => "quote.updated",
            Self::StatusChanged(_) => "quote.status.changed",
        }
    }
}

impl DomainEvent for QuoteEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        SCHEMA_VERSION.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("quote not found")]
    NotFound,
    #[error("a quote with this id already exists")]
    AlreadyExists,
    #[error("the quote is {current}; {action} is not possible")]
    IllegalTransition {
        current: QuoteStatus,
        action: &'static str,
    },
    #[error("the author of a quote cannot approve it")]
    FourEyes,
    #[error("the quote's pricing is invalid")]
    Pricing(Vec<FieldError>),
    #[error("a reason is required (1 to {MAX_REASON_CHARS} characters)")]
    ReasonRequired,
    #[error("the quote is valid until {valid_until}, which has not passed")]
    NotYetExpired { valid_until: NaiveDate },
}

impl QuoteError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "quote_not_found",
            Self::AlreadyExists => "quote_already_exists",
            Self::IllegalTransition { .. } => "illegal_transition",
            Self::FourEyes => "four_eyes",
            Self::Pricing(_) => "validation_failed",
            Self::ReasonRequired => "reason_required",
            Self::NotYetExpired { .. } => "not_yet_expired",
        }
    }
}

/// One revision as it stood when it was superseded or is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub revision: u32,
    pub content: QuoteContent,
    pub pricing: QuotePricing,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub state: Option<QuoteState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuoteState {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub number: String,
    pub author_id: Uuid,
    pub status: QuoteStatus,
    pub revision: u32,
    pub content: QuoteContent,
    pub pricing: QuotePricing,
    /// Superseded revisions, oldest first.
    pub earlier_revisions: Vec<Revision>,
    pub approved_by: Option<Uuid>,
    pub sent_at: Option<DateTime<Utc>>,
    pub decided_by: Option<Name>,
    pub decided_at: Option<DateTime<Utc>>,
}

fn reason(raw: Option<String>, required: bool) -> Result<Option<String>, QuoteError> {
    match raw.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()) {
        None if required => Err(QuoteError::ReasonRequired),
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(QuoteError::ReasonRequired),
        other => Ok(other),
    }
}

impl Quote {
    pub fn visible_to(&self, actor: &Actor) -> Option<&QuoteState> {
        self.state
            .as_ref()
            .filter(|s| s.organization_id == actor.organization_id)
    }

    pub fn decide(&self, command: QuoteCommand) -> Result<Vec<QuoteEvent>, QuoteError> {
        let actor = command.actor();
        if let QuoteCommand::Create {
            quote_id,
            number,
            content,
            ..
        } = command
        {
            if self.state.is_some() {
                return Err(QuoteError::AlreadyExists);
            }
            let pricing = content.price().map_err(QuoteError::Pricing)?;
            return Ok(vec![QuoteEvent::Created(Box::new(QuoteCreated {
                quote_id,
                organization_id: actor.organization_id,
                quote_number: number,
                customer_id: content.customer_id,
                total_amount: pricing.total,
                currency: content.currency,
                author_id: actor.user_id,
                content,
                pricing,
            }))]);
        }
        let state = self.visible_to(&actor).ok_or(QuoteError::NotFound)?;
        let quote_id = state.id;
        let now = Utc::now();
        let change =
            |new_status: QuoteStatus, reason: Option<String>, contact: Option<Name>, at| {
                QuoteEvent::StatusChanged(QuoteStatusChanged {
                    quote_id,
                    old_status: state.status,
                    new_status,
                    reason,
                    changed_by: Some(actor.user_id).filter(|u| !u.is_nil()),
                    customer_contact: contact,
                    at,
                })
            };
        let illegal = |action: &'static str| QuoteError::IllegalTransition {
            current: state.status,
            action,
        };
        use QuoteStatus as S;
        Ok(match command {
            QuoteCommand::Create { .. } => vec![],
            QuoteCommand::Update { content, .. } => {
                if state.status.is_final() {
                    return Err(illegal("editing"));
                }
                let pricing = content.price().map_err(QuoteError::Pricing)?;
                if content == state.content {
                    return Ok(vec![]);
                }
                let starts_revision =
                    matches!(state.status, S::PendingApproval | S::Approved | S::Sent);
                let revision = if starts_revision {
                    state.revision + 1
                } else {
                    state.revision
                };
                let mut events = vec![QuoteEvent::Updated(Box::new(QuoteUpdated {
                    quote_id,
                    revision,
                    total_amount: pricing.total,
                    content,
                    pricing,
                }))];
                if state.status != S::Draft {
                    events.push(change(
                        S::Draft,
                        Some(format!("edited; revision {revision}")),
                        None,
                        now,
                    ));
                }
                events
            }
            QuoteCommand::SubmitForApproval { threshold, .. } => {
                if state.status != S::Draft {
                    return Err(illegal("submitting for approval"));
                }
                if state.pricing.total > threshold {
                    vec![change(S::PendingApproval, None, None, now)]
                } else {
                    vec![change(
                        S::Approved,
                        Some(format!(
                            "total within the approval threshold of {threshold}"
                        )),
                        None,
                        now,
                    )]
                }
            }
            QuoteCommand::Approve { comment, .. } => {
                if state.status != S::PendingApproval {
                    return Err(illegal("approving"));
                }
                if state.author_id == actor.user_id {
                    return Err(QuoteError::FourEyes);
                }
                vec![change(S::Approved, reason(comment, false)?, None, now)]
            }
            QuoteCommand::Reject { reason: r, .. } => {
                if state.status != S::PendingApproval {
                    return Err(illegal("rejecting"));
                }
                vec![change(S::Rejected, reason(Some(r), true)?, None, now)]
            }
            QuoteCommand::Send { .. } => {
                if state.status != S::Approved {
                    return Err(illegal("sending"));
                }
                vec![change(S::Sent, None, None, now)]
            }
            QuoteCommand::Accept {
                accepted_by, at, ..
            } => {
                if state.status != S::Sent {
                    return Err(illegal("accepting"));
                }
                vec![change(S::Accepted, None, Some(accepted_by), at)]
            }
            QuoteCommand::Decline {
                declined_by,
                reason: r,
                at,
                ..
            } => {
                if state.status != S::Sent {
                    return Err(illegal("declining"));
                }
                vec![change(
                    S::Declined,
                    reason(r, false)?,
                    Some(declined_by),
                    at,
                )]
            }
            QuoteCommand::Expire { today, .. } => {
                if state.status != S::Sent {
                    return Err(illegal("expiring"));
                }
                if today <= state.content.valid_until {
                    return Err(QuoteError::NotYetExpired {
                        valid_until: state.content.valid_until,
                    });
                }
                vec![change(
                    S::Expired,
                    Some(format!("valid until {}", state.content.valid_until)),
                    None,
                    now,
                )]
            }
            QuoteCommand::Cancel { reason: r, .. } => {
                if state.status.is_final() {
                    return Err(illegal("cancelling"));
                }
                vec![change(S::Cancelled, reason(r, false)?, None, now)]
            }
        })
    }
}

impl Aggregate for Quote {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = QuoteCommand;
    type Event = QuoteEvent;
    type Error = QuoteError;
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
            QuoteEvent::Created(e) => {
                self.state = Some(QuoteState {
                    id: e.quote_id,
                    organization_id: e.organization_id,
                    number: e.quote_number,
                    author_id: e.author_id,
                    status: QuoteStatus::Draft,
                    revision: 1,
                    content: e.content,
                    pricing: e.pricing,
                    earlier_revisions: Vec::new(),
                    approved_by: None,
                    sent_at: None,
                    decided_by: None,
                    decided_at: None,
                });
            }
            QuoteEvent::Updated(e) => {
                if let Some(s) = self.state.as_mut() {
                    if e.revision > s.revision {
                        s.earlier_revisions.push(Revision {
                            revision: s.revision,
                            content: s.content.clone(),
                            pricing: s.pricing.clone(),
                        });
                        s.revision = e.revision;
                        s.approved_by = None;
                    }
                    s.content = e.content;
                    s.pricing = e.pricing;
                }
            }
            QuoteEvent::StatusChanged(e) => {
                if let Some(s) = self.state.as_mut() {
                    s.status = e.new_status;
                    match e.new_status {
                        QuoteStatus::Approved => s.approved_by = e.changed_by,
                        QuoteStatus::Sent => s.sent_at = Some(e.at),
                        QuoteStatus::Accepted | QuoteStatus::Declined => {
                            s.decided_by = e.customer_contact;
                            s.decided_at = Some(e.at);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author() -> Actor {
        Actor {
            organization_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
        }
    }

    fn approver() -> Actor {
        Actor {
            organization_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(3),
        }
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn content(price: &str) -> QuoteContent {
        QuoteContent {
            customer_id: Uuid::from_u128(9),
            title: Name::parse("", "Website rebuild").unwrap(),
            description: None,
            currency: Currency::parse("", "NZD").unwrap(),
            valid_until: NaiveDate::from_ymd_opt(2026, 12, 31).unwrap(),
            terms: None,
            notes: None,
            tax_mode: TaxMode::Exclusive,
            discount: None,
            lines: vec![QuoteLine {
                line_id: Uuid::from_u128(10),
                description: Name::parse("", "Senior developer").unwrap(),
                quantity: d("10"),
                unit: Unit::Hours,
                unit_price: d(price),
                rate_source: None,
                discount: None,
                tax_rate: d("15"),
                optional: false,
                selected: false,
            }],
        }
    }

    fn run(quote: &mut Quote, command: QuoteCommand) -> Result<Vec<&'static str>, QuoteError> {
        let events = quote.decide(command)?;
        let names = events.iter().map(QuoteEvent::type_name).collect();
        for e in events {
            quote.apply(e);
        }
        Ok(names)
    }

    fn created(price: &str) -> Quote {
        let mut quote = Quote::default();
        run(
            &mut quote,
            QuoteCommand::Create {
                actor: author(),
                quote_id: Uuid::from_u128(5),
                number: "Q-2026-0001".into(),
                content: content(price),
            },
        )
        .unwrap();
        quote
    }

    fn status(quote: &Quote) -> QuoteStatus {
        quote.state.as_ref().unwrap().status
    }

    #[test]
    fn the_largest_quote_event_fits_in_a_kafka_record() {
        // Every bounded field at its bound, in characters that take the
        // most bytes: four in UTF-8 for names, six escaped in JSON for the
        // free texts (which may hold control characters).
        let name = Name::parse("", &"\u{1D11E}".repeat(Name::MAX_CHARS)).unwrap();
        let text = Some("\u{1}".repeat(MAX_TEXT_CHARS));
        let mut content = content("999999999.99");
        content.title = name.clone();
        content.description = text.clone();
        content.terms = text.clone();
        content.notes = text;
        content.discount = Some(Discount::Amount(d("1.01")));
        let line = content.lines[0].clone();
        content.lines = (0..crate::pricing::MAX_LINES)
            .map(|i| QuoteLine {
                line_id: Uuid::from_u128(u128::MAX - i as u128),
                description: name.clone(),
                quantity: d("999999999.9999"),
                rate_source: Some(RateSource {
                    rate_card_id: Uuid::from_u128(u128::MAX),
                    entry_id: Uuid::from_u128(u128::MAX),
                    entry_name: "\u{1D11E}".repeat(crate::rate_card::MAX_ENTRY_NAME_CHARS),
                }),
                discount: Some(Discount::Percent(d("12.3456"))),
                tax_rate: d("15.1234"),
                ..line.clone()
            })
            .collect();
        let events = Quote::default()
            .decide(QuoteCommand::Create {
                actor: author(),
                quote_id: Uuid::from_u128(5),
                number: "Q-2026-0001".into(),
                content,
            })
            .unwrap();
        let bytes = serde_json::to_vec(&events[0]).unwrap().len();
        // The envelope adds its ids, times and metadata (a user agent of at
        // most 512 characters, a correlation id of at most 128): far below
        // 64 KiB.
        assert!(
            bytes + 64 * 1024 <= crate::envelope::MAX_EVENT_BYTES,
            "{bytes} bytes"
        );
    }

    #[test]
    fn created_quotes_are_priced_drafts() {
        let quote = created("150");
        let s = quote.state.as_ref().unwrap();
        assert_eq!(s.status, QuoteStatus::Draft);
        assert_eq!(s.pricing.total, d("1725.00"));
        assert_eq!(s.revision, 1);
    }

    #[test]
    fn above_the_threshold_needs_another_approver() {
        let mut quote = created("150");
        let submit = |threshold: &str| QuoteCommand::SubmitForApproval {
            actor: author(),
            threshold: d(threshold),
        };
        run(&mut quote, submit("1000")).unwrap();
        assert_eq!(status(&quote), QuoteStatus::PendingApproval);
        assert_eq!(
            run(
                &mut quote,
                QuoteCommand::Approve {
                    actor: author(),
                    comment: None
                }
            ),
            Err(QuoteError::FourEyes)
        );
        run(
            &mut quote,
            QuoteCommand::Approve {
                actor: approver(),
                comment: Some("fine".into()),
            },
        )
        .unwrap();
        assert_eq!(status(&quote), QuoteStatus::Approved);
        assert_eq!(
            quote.state.as_ref().unwrap().approved_by,
            Some(approver().user_id)
        );

        // Within the threshold the quote is approved at once.
        let mut small = created("50");
        run(&mut small, submit("1000")).unwrap();
        assert_eq!(status(&small), QuoteStatus::Approved);
    }

    #[test]
    fn rejection_needs_a_reason_and_editing_reopens() {
        let mut quote = created("150");
        run(
            &mut quote,
            QuoteCommand::SubmitForApproval {
                actor: author(),
                threshold: d("0"),
            },
        )
        .unwrap();
        assert_eq!(
            run(
                &mut quote,
                QuoteCommand::Reject {
                    actor: approver(),
                    reason: " ".into()
                }
            ),
            Err(QuoteError::ReasonRequired)
        );
        run(
            &mut quote,
            QuoteCommand::Reject {
                actor: approver(),
                reason: "rate too low".into(),
            },
        )
        .unwrap();
        assert_eq!(status(&quote), QuoteStatus::Rejected);
        let events = run(
            &mut quote,
            QuoteCommand::Update {
                actor: author(),
                content: content("180"),
            },
        )
        .unwrap();
        assert_eq!(events, ["quote.updated", "quote.status.changed"]);
        assert_eq!(status(&quote), QuoteStatus::Draft);
        assert_eq!(quote.state.as_ref().unwrap().revision, 1);
    }

    #[test]
    fn editing_a_sent_quote_starts_a_revision() {
        let mut quote = created("150");
        for command in [
            QuoteCommand::SubmitForApproval {
                actor: author(),
                threshold: d("100000"),
            },
            QuoteCommand::Send { actor: author() },
        ] {
            run(&mut quote, command).unwrap();
        }
        assert_eq!(status(&quote), QuoteStatus::Sent);
        run(
            &mut quote,
            QuoteCommand::Update {
                actor: author(),
                content: content("160"),
            },
        )
        .unwrap();
        let s = quote.state.as_ref().unwrap();
        assert_eq!(s.revision, 2);
        assert_eq!(s.status, QuoteStatus::Draft);
        assert_eq!(s.earlier_revisions.len(), 1);
        assert_eq!(s.earlier_revisions[0].pricing.total, d("1725.00"));
        assert_eq!(s.pricing.total, d("1840.00"));
    }

    #[test]
    fn acceptance_expiry_and_illegal_transitions() {
        let mut quote = created("150");
        assert_eq!(
            run(&mut quote, QuoteCommand::Send { actor: author() }),
            Err(QuoteError::IllegalTransition {
                current: QuoteStatus::Draft,
                action: "sending"
            })
        );
        run(
            &mut quote,
            QuoteCommand::SubmitForApproval {
                actor: author(),
                threshold: d("100000"),
            },
        )
        .unwrap();
        run(&mut quote, QuoteCommand::Send { actor: author() }).unwrap();
        let mut expiring = quote.clone();
        let valid_until = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        assert_eq!(
            run(
                &mut expiring,
                QuoteCommand::Expire {
                    actor: author(),
                    today: valid_until
                }
            ),
            Err(QuoteError::NotYetExpired { valid_until })
        );
        run(
            &mut expiring,
            QuoteCommand::Expire {
                actor: author(),
                today: valid_until.succ_opt().unwrap(),
            },
        )
        .unwrap();
        assert_eq!(status(&expiring), QuoteStatus::Expired);
        // Expiry happens once.
        assert!(matches!(
            run(
                &mut expiring,
                QuoteCommand::Expire {
                    actor: author(),
                    today: valid_until.succ_opt().unwrap()
                }
            ),
            Err(QuoteError::IllegalTransition { .. })
        ));

        let at = Utc::now();
        run(
            &mut quote,
            QuoteCommand::Accept {
                actor: author(),
                accepted_by: Name::parse("", "Jane Client").unwrap(),
                at,
            },
        )
        .unwrap();
        let s = quote.state.as_ref().unwrap();
        assert_eq!(s.status, QuoteStatus::Accepted);
        assert_eq!(s.decided_at, Some(at));
        for command in [
            QuoteCommand::Cancel {
                actor: author(),
                reason: None,
            },
            QuoteCommand::Update {
                actor: author(),
                content: content("1"),
            },
        ] {
            assert!(matches!(
                run(&mut quote, command),
                Err(QuoteError::IllegalTransition {
                    current: QuoteStatus::Accepted,
                    ..
                })
            ));
        }
    }

    #[test]
    fn declines_record_who_and_why_and_rejected_quotes_wait_for_edits() {
        let mut quote = created("150");
        for command in [
            QuoteCommand::SubmitForApproval {
                actor: author(),
                threshold: d("100000"),
            },
            QuoteCommand::Send { actor: author() },
        ] {
            run(&mut quote, command).unwrap();
        }
        let at = Utc::now();
        let events = quote
            .decide(QuoteCommand::Decline {
                actor: author(),
                declined_by: Name::parse("", "Pat Client").unwrap(),
                reason: Some("went with another supplier".into()),
                at,
            })
            .unwrap();
        match &events[0] {
            QuoteEvent::StatusChanged(e) => {
                assert_eq!(
                    (e.old_status, e.new_status),
                    (QuoteStatus::Sent, QuoteStatus::Declined)
                );
                assert_eq!(e.reason.as_deref(), Some("went with another supplier"));
                assert_eq!(
                    e.customer_contact.as_ref().map(Name::as_str),
                    Some("Pat Client")
                );
            }
            other => panic!("{other:?}"),
        }
        for e in events {
            quote.apply(e);
        }
        assert!(quote.state.as_ref().unwrap().status.is_final());

        let mut rejected = created("150");
        run(
            &mut rejected,
            QuoteCommand::SubmitForApproval {
                actor: author(),
                threshold: d("0"),
            },
        )
        .unwrap();
        run(
            &mut rejected,
            QuoteCommand::Reject {
                actor: approver(),
                reason: "too cheap".into(),
            },
        )
        .unwrap();
        for command in [
            QuoteCommand::Send { actor: author() },
            QuoteCommand::SubmitForApproval {
                actor: author(),
                threshold: d("0"),
            },
            QuoteCommand::Approve {
                actor: approver(),
                comment: None,
            },
        ] {
            assert!(matches!(
                run(&mut rejected, command),
                Err(QuoteError::IllegalTransition {
                    current: QuoteStatus::Rejected,
                    ..
                })
            ));
        }
        // Unchanged content is not an edit.
        assert!(
            rejected
                .decide(QuoteCommand::Update {
                    actor: author(),
                    content: content("150")
                })
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn cancel_keeps_history_and_other_tenants_see_nothing() {
        let mut quote = created("150");
        run(
            &mut quote,
            QuoteCommand::Cancel {
                actor: author(),
                reason: Some("customer went elsewhere".into()),
            },
        )
        .unwrap();
        assert_eq!(status(&quote), QuoteStatus::Cancelled);
        let stranger = Actor {
            organization_id: Uuid::from_u128(77),
            user_id: Uuid::from_u128(2),
        };
        assert_eq!(
            quote.decide(QuoteCommand::Send { actor: stranger }),
            Err(QuoteError::NotFound)
        );
    }

    #[test]
    fn invalid_lines_are_refused_with_pointers() {
        let mut bad = content("150");
        bad.lines[0].quantity = d("-1");
        let errors = match Quote::default().decide(QuoteCommand::Create {
            actor: author(),
            quote_id: Uuid::from_u128(5),
            number: "Q-2026-0002".into(),
            content: bad,
        }) {
            Err(QuoteError::Pricing(errors)) => errors,
            other => panic!("{other:?}"),
        };
        assert_eq!(errors[0].pointer, "/lines/0/quantity");
    }
}
