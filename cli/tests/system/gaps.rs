//! A topic that skips versions of an aggregate does not stall the projector.
//!
//! A record can reach its topic after its successors: a delivery that failed
//! while later ones went through and was sent again, or records still in
//! flight from a relay that lost its lock. The projector then meets a version
//! above the next one; it reads the skipped versions from the event store and
//! applies them first (ADR 0004), so the partition moves on, and the records
//! that bring those versions later change nothing.

use std::time::Duration;

use pivotal_test_support::{TestEnv, read_topic_until};
use rdkafka::Message;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::{
    assert_read_model_equals_replay, create_customer, projection_caught_up, relay_caught_up,
    rename_customer, spawn_projector, spawn_relay, store_events,
};

async fn customer_row(env: &TestEnv, id: &str) -> Option<(String, i64)> {
    sqlx::query_as("SELECT legal_name, version FROM rm_customers WHERE id = $1::uuid")
        .bind(id)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_a_topic_skipped_are_applied_from_the_store_and_their_records_change_nothing() {
    let env = TestEnv::new().await;
    let (url, _api) = env.spawn_command_api().await;
    let token = env.token(Uuid::now_v7(), &["manager"]);
    let (id, _) = create_customer(&url, &token, "Skipped Ltd").await;
    rename_customer(&url, &token, &id, "Second Name Ltd").await;
    rename_customer(&url, &token, &id, "Third Name Ltd").await;

    // Only version 3 reaches the topic, published as the relay publishes.
    let stored = store_events(&env).await;
    assert_eq!(stored.len(), 3);
    let third = stored.iter().find(|e| e.sequence == 3).unwrap();
    pivotal_messaging::topics::ensure_event_topics(&env.settings.kafka, &["customer"])
        .await
        .unwrap();
    let producer: rdkafka::producer::FutureProducer =
        pivotal_messaging::config::producer(&env.settings.kafka)
            .create()
            .unwrap();
    pivotal_relay::publish::publish_batch(
        &producer,
        &env.settings.kafka.topic_prefix,
        std::slice::from_ref(third),
    )
    .await
    .unwrap();

    // Without filling the gap the projector would refuse version 3 for ever.
    let projector = spawn_projector(&env);
    projection_caught_up(&env, Duration::from_secs(60)).await;
    assert_eq!(
        customer_row(&env, &id).await,
        Some(("Third Name Ltd".to_owned(), 3))
    );

    // The relay then publishes the whole log: versions 1 to 3 again arrive
    // after version 3 and are duplicates; version 4 applies on top.
    let (_relay, _) = spawn_relay(&env);
    relay_caught_up(&env, Duration::from_secs(60)).await;
    rename_customer(&url, &token, &id, "Fourth Name Ltd").await;
    relay_caught_up(&env, Duration::from_secs(60)).await;
    projection_caught_up(&env, Duration::from_secs(60)).await;
    assert_eq!(
        customer_row(&env, &id).await,
        Some(("Fourth Name Ltd".to_owned(), 4))
    );

    // The topic really held the versions in the order 3, 1, 2, 3, 4.
    let topic = env.topic("customer");
    let messages = read_topic_until(
        &env.settings.kafka.brokers,
        &topic,
        Duration::from_secs(30),
        |m| m.len() >= 5,
    );
    let versions: Vec<u64> = messages
        .iter()
        .filter(|m| m.key() == Some(id.as_bytes()))
        .map(|m| {
            serde_json::from_slice::<Value>(m.payload().unwrap()).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, [3, 1, 2, 3, 4]);

    drop(projector);
    assert_read_model_equals_replay(&env).await;
}
