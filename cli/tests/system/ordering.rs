use std::time::Duration;

use futures::future::join_all;
use pivotal_test_support::{TestEnv, http};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{
    assert_read_model_equals_replay, projection_caught_up, relay_caught_up, spawn_projector,
    spawn_relay, spawn_relay_with, store_events, verify_topic,
};

const WRITERS: usize = 8;
const COMMANDS_PER_WRITER: usize = 70;
const CUSTOMERS: usize = 16;

/// Creates `CUSTOMERS` customers, then lets `WRITERS` concurrent writers issue
/// commands over all of them. Returns the number of commands accepted.
pub async fn concurrent_load(url: &str, token: &str) -> usize {
    let client = http();
    let mut ids = Vec::new();
    for i in 0..CUSTOMERS {
        let created: Value = client
            .post(format!("{url}/v1/customers"))
            .bearer_auth(token)
            .json(&json!({"legalName": format!("Customer {i}"), "currency": "NZD"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let writers = (0..WRITERS).map(|w| {
        let client = client.clone();
        let ids = ids.clone();
        let url = url.to_owned();
        let token = token.to_owned();
        tokio::spawn(async move {
            let mut accepted = 0;
            for n in 0..COMMANDS_PER_WRITER {
                // Writers overlap: each walks the customers from another start.
                let id = &ids[(w * 5 + n) % ids.len()];
                let request = match n % 3 {
                    0 => client
                        .post(format!("{url}/v1/customers/{id}/rename"))
                        .json(&json!({"legalName": format!("Customer w{w} n{n}")})),
                    1 => client
                        .put(format!("{url}/v1/customers/{id}/tags"))
                        .json(&json!({"tags": [format!("w{w}"), format!("n{n}")]})),
                    _ => client
                        .put(format!("{url}/v1/customers/{id}/contact"))
                        .json(&json!({"email": format!("w{w}.n{n}@example.com")})),
                };
                let response = request.bearer_auth(&token).send().await.unwrap();
                assert_eq!(response.status(), 200, "{:?}", response.text().await);
                accepted += 1;
            }
            accepted
        })
    });
    CUSTOMERS
        + join_all(writers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .sum::<usize>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_every_event_published_once_in_order_and_projected_exactly() {
    let env = TestEnv::new().await;
    let (url, _api) = env.spawn_command_api().await;
    // The relay and projector run while the writers write.
    let (_relay, _) = spawn_relay(&env);
    let projector = spawn_projector(&env);
    let token = env.token(Uuid::now_v7(), &["manager"]);

    let accepted = concurrent_load(&url, &token).await;
    assert!(accepted >= 500 + CUSTOMERS);

    let stored = store_events(&env).await;
    assert_eq!(
        stored.len(),
        accepted,
        "every accepted command appended one event"
    );
    relay_caught_up(&env, Duration::from_secs(60)).await;
    let (messages, distinct) = verify_topic(&env, &stored, false).await;
    assert_eq!(messages, stored.len(), "each event published exactly once");
    assert_eq!(distinct, stored.len());

    projection_caught_up(&env, Duration::from_secs(60)).await;
    drop(projector);
    assert_read_model_equals_replay(&env).await;
}

/// A relay started on a backlog hands batches to the producer while earlier
/// ones await their acknowledgements; the topic still holds every event
/// once, each aggregate's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipelined_relay_publishes_a_backlog_once_in_order() {
    let env = TestEnv::new().await;
    let (url, _api) = env.spawn_command_api().await;
    let token = env.token(Uuid::now_v7(), &["manager"]);
    let accepted = concurrent_load(&url, &token).await;
    let stored = store_events(&env).await;
    assert_eq!(stored.len(), accepted);

    let mut settings = env.settings.clone();
    settings.relay.batch_size = 10;
    settings.relay.batches_in_flight = 4;
    let (_relay, mut status) = spawn_relay_with(&env, settings);
    let published = stored.len() as u64;
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| s.published >= published),
    )
    .await
    .expect("the relay did not publish the backlog within 60 s")
    .unwrap()
    .clone();
    assert_eq!(status.published, published, "{status:?}");
    assert!(status.most_in_flight > 1, "{status:?}");
    assert!(status.most_in_flight <= 4, "{status:?}");
    let (messages, distinct) = verify_topic(&env, &stored, false).await;
    assert_eq!(messages, stored.len(), "each event published exactly once");
    assert_eq!(distinct, stored.len());
}
