//! Events larger than Kafka takes (ADR 0030): the event store refuses them
//! before anything of their command is appended, and the command API
//! answers 413 with its own problem code. No route can make one today (the
//! domain's bounds keep the largest event, a quote's, under half the
//! limit), so an aggregate of this test's own writes them.

use axum::body::to_bytes;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use pivotal_command_api::error::ApiError;
use pivotal_domain::customer::CustomerError;
use pivotal_domain::envelope::{Actor, CommandContext, EventMetadata, MAX_EVENT_BYTES};
use pivotal_event_store::commands::{AggregateStore, ExecuteError};
use pivotal_test_support::TestEnv;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Notes of any length: one event per text written.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Note {
    written: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Written {
    text: String,
}

impl DomainEvent for Written {
    fn event_type(&self) -> String {
        "note.written".into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Aggregate for Note {
    const TYPE: &'static str = "note";
    type Command = Vec<String>;
    type Event = Written;
    type Error = CustomerError;
    type Services = ();

    async fn handle(
        &mut self,
        texts: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for text in texts {
            sink.write(Written { text }, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, _event: Self::Event) {
        self.written += 1;
    }
}

async fn stored(env: &TestEnv, id: &str) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    count
}

#[tokio::test]
async fn an_event_larger_than_kafka_takes_is_refused_with_its_whole_command() {
    let env = TestEnv::new().await;
    let store = AggregateStore::<Note>::new(env.pool.clone());
    let context = CommandContext {
        actor: Actor {
            organization_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
        },
        timestamp: chrono::Utc::now(),
        metadata: EventMetadata {
            correlation_id: "event-size".into(),
            causation_id: None,
            source: "tests".into(),
            user_agent: None,
            ip_address: None,
        },
        idempotency_key: None,
    };

    // Just under the limit, with room for the envelope: appended.
    let fits = "x".repeat(MAX_EVENT_BYTES - 2048);
    let outcome = store
        .execute("n-1", None, vec![fits], &context)
        .await
        .unwrap();
    assert_eq!(outcome.version, 1);

    // A command whose second event is over it: refused, its first (small)
    // event with it.
    let refused = store
        .execute(
            "n-1",
            None,
            vec!["small".into(), "y".repeat(MAX_EVENT_BYTES)],
            &context,
        )
        .await;
    let Err(ExecuteError::TooLarge(too_large)) = refused else {
        panic!("not refused as too large: {refused:?}");
    };
    assert_eq!(too_large.event_type, "note.written");
    assert_eq!(too_large.limit, MAX_EVENT_BYTES);
    assert!(too_large.bytes > MAX_EVENT_BYTES, "{too_large:?}");
    assert_eq!(stored(&env, "n-1").await, 1);
    let (_, version) = store.load("n-1").await.unwrap();
    assert_eq!(version, 1);

    // Over HTTP: 413 with a problem naming the event and the limit.
    let response = ApiError::from(ExecuteError::<CustomerError>::TooLarge(too_large.clone()))
        .into_response_for("/v1/notes/n-1");
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value =
        serde_json::from_slice(&to_bytes(response.into_body(), 64 * 1024).await.unwrap()).unwrap();
    assert_eq!(body["code"], "event_too_large");
    assert_eq!(body["status"], 413);
    assert_eq!(body["instance"], "/v1/notes/n-1");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("note.written")
            && detail.contains(&too_large.bytes.to_string())
            && detail.contains(&MAX_EVENT_BYTES.to_string()),
        "{detail}"
    );
}
