//! The quotes kept per organization and status (`rm_quote_counts`, ADR
//! 0041's update for quotes) against a real PostgreSQL: two batches that
//! move the counts of two organizations in crossed order wait for each
//! other instead of deadlocking, and the counts equal the rows after; a
//! quote's row is written under its own organization only.
#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, Utc};
use pivotal_domain::envelope::{Actor, EventEnvelope, EventMetadata};
use pivotal_domain::pricing::TaxMode;
use pivotal_domain::quote::{Quote, QuoteCommand, QuoteContent, QuoteLine};
use pivotal_domain::rate_card::Unit;
use pivotal_domain::values::{Currency, Name};
use pivotal_projectors::framework::Envelope;
use pivotal_projectors::quotes::QuotesProjection;
use pivotal_test_support::TestEnv;
use uuid::Uuid;

mod crossed;
use crossed::{Held, apply_committed, counts_and_rows, cross};

fn content() -> QuoteContent {
    QuoteContent {
        customer_id: Uuid::now_v7(),
        title: Name::parse("", "Site survey").unwrap(),
        description: None,
        currency: Currency::parse("", "NZD").unwrap(),
        valid_until: NaiveDate::from_ymd_opt(2027, 6, 30).unwrap(),
        terms: None,
        notes: None,
        tax_mode: TaxMode::Exclusive,
        discount: None,
        lines: vec![QuoteLine {
            line_id: Uuid::now_v7(),
            description: Name::parse("", "Survey").unwrap(),
            quantity: "2".parse().unwrap(),
            unit: Unit::Days,
            unit_price: "1200".parse().unwrap(),
            rate_source: None,
            discount: None,
            tax_rate: "15".parse().unwrap(),
            optional: false,
            selected: false,
        }],
    }
}

/// One quote of `organization`, decided by the domain: its events from
/// creation through `steps` (each command given the author and the
/// approver), as the envelopes the projector reads, and the quote itself
/// to go on from.
struct Drafted {
    quote: Quote,
    id: Uuid,
    organization: Uuid,
    version: u64,
}

impl Drafted {
    fn new(organization: Uuid) -> (Self, Envelope) {
        let mut drafted = Self {
            quote: Quote::default(),
            id: Uuid::now_v7(),
            organization,
            version: 0,
        };
        let create = QuoteCommand::Create {
            actor: drafted.author(),
            quote_id: drafted.id,
            number: format!("Q-{}", drafted.id.simple()),
            content: content(),
        };
        let mut events = drafted.decide(create);
        (drafted, events.remove(0))
    }

    fn author(&self) -> Actor {
        Actor {
            organization_id: self.organization,
            user_id: Uuid::from_u128(1),
        }
    }

    fn approver(&self) -> Actor {
        Actor {
            organization_id: self.organization,
            user_id: Uuid::from_u128(2),
        }
    }

    fn submit(&mut self) -> Envelope {
        let submit = QuoteCommand::SubmitForApproval {
            actor: self.author(),
            threshold: "0".parse().unwrap(),
        };
        self.decide(submit).remove(0)
    }

    fn approve(&mut self) -> Envelope {
        let approve = QuoteCommand::Approve {
            actor: self.approver(),
            comment: None,
        };
        self.decide(approve).remove(0)
    }

    fn send(&mut self) -> Envelope {
        let send = QuoteCommand::Send {
            actor: self.author(),
        };
        self.decide(send).remove(0)
    }

    fn decide(&mut self, command: QuoteCommand) -> Vec<Envelope> {
        let events = self.quote.decide(command).unwrap();
        events
            .into_iter()
            .map(|event| {
                self.version += 1;
                let json = serde_json::to_value(&event).unwrap();
                cqrs_es::Aggregate::apply(&mut self.quote, event);
                EventEnvelope {
                    id: Uuid::now_v7(),
                    event_type: json["type"].as_str().unwrap().to_owned(),
                    aggregate_id: self.id.to_string(),
                    aggregate_type: pivotal_domain::quote::AGGREGATE_TYPE.to_owned(),
                    organization_id: self.organization,
                    user_id: None,
                    timestamp: Utc::now(),
                    version: self.version,
                    metadata: EventMetadata {
                        correlation_id: "quote-counts".into(),
                        causation_id: None,
                        source: "tests".into(),
                        user_agent: None,
                        ip_address: None,
                    },
                    data: serde_json::value::to_raw_value(&json["data"]).unwrap(),
                }
            })
            .collect()
    }
}

/// Batch one approves a quote of organization B (moving B's
/// `pending_approval` and `approved`) and then creates one in A (A's
/// `draft`); batch two submits a quote of A (A's `draft` and
/// `pending_approval`) and then sends one of B (B's `approved` and
/// `sent`). One statement per event, in event order: one would hold B's
/// `approved` while it waits for A's `draft`, two A's `draft` while it
/// waits for B's `approved`, and PostgreSQL would abort one. A third
/// transaction holds B's `pending_approval` so that both are caught
/// mid-way; once it lets go, both must commit.
#[tokio::test]
async fn batches_moving_quote_counts_in_crossed_order_wait_for_each_other() {
    let env = TestEnv::new().await;
    let mut orgs = [Uuid::now_v7(), Uuid::now_v7()];
    orgs.sort();
    let [a, b] = orgs;

    // B: one quote awaiting approval, one approved; A: one draft.
    let (mut awaiting, created_awaiting) = Drafted::new(b);
    let (mut approved, created_approved) = Drafted::new(b);
    let (mut draft, created_draft) = Drafted::new(a);
    let seed = [
        created_awaiting,
        awaiting.submit(),
        created_approved,
        approved.submit(),
        approved.approve(),
        created_draft,
    ];
    let (_, created_later) = Drafted::new(a);
    let (one, other) = cross(
        &env.pool,
        QuotesProjection,
        &seed,
        Held {
            table: "rm_quote_counts",
            organization: b,
            status: "pending_approval",
        },
        vec![awaiting.approve(), created_later],
        vec![draft.submit(), approved.send()],
    )
    .await;
    assert!(one.is_ok(), "first batch: {one:?}");
    assert!(other.is_ok(), "second batch: {other:?}");

    let (counts, rows) = counts_and_rows(&env.pool, "rm_quote_counts", "quotes", "rm_quotes").await;
    assert_eq!(counts, rows);
    let expected: Vec<(Uuid, String, i64)> = vec![
        (a, "draft".into(), 1),
        (a, "pending_approval".into(), 1),
        (b, "approved".into(), 1),
        (b, "sent".into(), 1),
    ];
    assert_eq!(counts, expected);
}

/// A quote's row is keyed by its id alone (ADR 0058): a creation naming
/// the same id under another organization neither takes the row over nor
/// writes a second one, and moves no count.
#[tokio::test]
async fn an_id_under_another_organization_leaves_the_quote_as_it_is() {
    let env = TestEnv::new().await;
    let (drafted, created) = Drafted::new(Uuid::now_v7());
    let mut taken = Drafted {
        quote: Quote::default(),
        id: drafted.id,
        organization: Uuid::now_v7(),
        version: 0,
    };
    let create = QuoteCommand::Create {
        actor: taken.author(),
        quote_id: taken.id,
        number: "Q-TAKEN".into(),
        content: content(),
    };
    let taken = taken.decide(create).remove(0);
    let rows = async || -> Vec<(Uuid, String, Uuid, i64)> {
        sqlx::query_as(
            "SELECT organization_id, number, customer_id, version FROM rm_quotes WHERE id = $1",
        )
        .bind(drafted.id)
        .fetch_all(&env.pool)
        .await
        .unwrap()
    };
    let apply = async |event: &Envelope| {
        apply_committed(&env.pool, &QuotesProjection, &[event]).await;
    };
    apply(&created).await;
    let before = rows().await;
    assert_eq!(before.len(), 1);
    assert_eq!((before[0].0, before[0].3), (drafted.organization, 1));
    apply(&taken).await;
    assert_eq!(rows().await, before);
    let (counts, quotes) =
        counts_and_rows(&env.pool, "rm_quote_counts", "quotes", "rm_quotes").await;
    assert_eq!(counts, quotes);
    assert_eq!(counts, vec![(drafted.organization, "draft".into(), 1)]);
}
