//! Rebuilding a table read model beside the live one while commands keep
//! changing it and queries keep reading it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pivotal_projectors::framework::{RebuildLimits, RebuildReport};
use pivotal_test_support::{TestEnv, http};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{
    assert_read_model_equals_replay, graphql, projection_caught_up, spawn_projector, spawn_relay,
};

const CUSTOMERS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_rebuild_never_shows_a_half_built_model() {
    let report = rebuild_under_load(RebuildLimits::default()).await;
    assert!(!report.versions_written_out, "{report:?}");
}

/// The path a rebuild of more than a million aggregates takes, with limits
/// that reach it on a few dozen: batches of seven events, and the versions
/// written out of memory once there are more than ten. From then on every
/// batch reads and writes its versions in the copy's bookkeeping table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_whose_versions_outgrow_memory_never_shows_a_half_built_model() {
    let report = rebuild_under_load(RebuildLimits {
        batch: 7,
        versions_in_memory: 10,
        writers: 2,
    })
    .await;
    assert!(report.versions_written_out, "{report:?}");
}

/// Several batches, each written on three connections at once, the events
/// of each customer on one of them, with the versions kept in memory to the
/// end. The first batch holds the creation and the first rename of half
/// the customers, the second both renames of the other half: a customer's
/// events split across connections would leave rows that differ from a
/// replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_writing_each_batch_on_several_connections_equals_a_replay() {
    let report = rebuild_under_load(RebuildLimits {
        batch: 60,
        versions_in_memory: 1_000,
        writers: 3,
    })
    .await;
    assert!(!report.versions_written_out, "{report:?}");
    assert!(report.events >= 3 * CUSTOMERS as u64, "{report:?}");
}

/// Rebuilds the customers table with `limits` while commands change
/// customers and queries count them; checks the result equals a replay.
async fn rebuild_under_load(limits: RebuildLimits) -> RebuildReport {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (query_api, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let token = env.token(Uuid::now_v7(), &["owner"]);
    let mut ids = Vec::new();
    for i in 0..CUSTOMERS {
        let created: Value = http()
            .post(format!("{commands}/v1/customers"))
            .bearer_auth(&token)
            .json(&json!({"legalName": format!("Rebuilt {i}"), "currency": "NZD"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    // Two renames each, in turn: the log starts with every customer's
    // creation, then two rounds of changes over all of them.
    for round in 0..2 {
        for (i, id) in ids.iter().enumerate() {
            let response = http()
                .post(format!("{commands}/v1/customers/{id}/rename"))
                .bearer_auth(&token)
                .json(&json!({"legalName": format!("Rebuilt {i} round {round}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        }
    }
    projection_caught_up(&env, Duration::from_secs(60)).await;

    let stop = Arc::new(AtomicBool::new(false));
    // Commands keep changing customers during the rebuild...
    let writer = {
        let (stop, commands, token, ids) =
            (stop.clone(), commands.clone(), token.clone(), ids.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[n % ids.len()];
                let response = http()
                    .put(format!("{commands}/v1/customers/{id}/tags"))
                    .bearer_auth(&token)
                    .json(&json!({"tags": [format!("round-{n}")]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                n += 1;
            }
            n
        })
    };
    // ...and queries never see a missing or half-built table.
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, query_api, token, reads) = (
            stop.clone(),
            query_api.clone(),
            token.clone(),
            reads.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body: Value = http()
                    .post(format!("{query_api}/graphql"))
                    .bearer_auth(&token)
                    .json(&json!({"query": "{ customers(first: 1) { totalCount } }"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(body.get("errors").is_none(), "{body}");
                assert_eq!(body["data"]["customers"]["totalCount"], CUSTOMERS, "{body}");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = pivotal_projectors::framework::rebuild_with(
        &env.pool,
        &pivotal_projectors::customers::CustomersProjection,
        None,
        limits,
    )
    .await
    .unwrap();
    assert!(report.events >= CUSTOMERS as u64, "{report:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let changes = writer.await.unwrap();
    reader.await.unwrap();
    assert!(changes > 0 && reads.load(Ordering::Relaxed) > 0);

    // The table kept its indexes and names, and the live projector carried
    // on from the rebuilt versions: the model equals a replay.
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'rm_customers'
         ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let indexes: Vec<&str> = indexes.iter().map(|(n,)| n.as_str()).collect();
    assert_eq!(
        indexes,
        [
            "rm_customers_by_created",
            "rm_customers_by_name",
            "rm_customers_by_status",
            "rm_customers_by_updated",
            "rm_customers_pkey",
            "rm_customers_tags"
        ]
    );
    let leftovers: (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild_%'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(leftovers.0, 0);
    projection_caught_up(&env, Duration::from_secs(60)).await;
    let last = &ids[(changes - 1) % ids.len()];
    let tags: (Vec<String>,) = sqlx::query_as("SELECT tags FROM rm_customers WHERE id = $1::uuid")
        .bind(last)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(tags.0, [format!("round-{}", changes - 1)]);

    // The rebuilt table took over the triggers that keep the counts (ADR
    // 0041): an archive after the switch moves one customer from the
    // active count to the archived one.
    let triggers: Vec<(String,)> = sqlx::query_as(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'public.rm_customers'::regclass
         ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let triggers: Vec<&str> = triggers.iter().map(|(n,)| n.as_str()).collect();
    assert_eq!(
        triggers,
        [
            "rm_customer_counts_deleted",
            "rm_customer_counts_inserted",
            "rm_customer_counts_truncated",
            "rm_customer_counts_updated"
        ]
    );
    let response = http()
        .post(format!("{commands}/v1/customers/{}/archive", ids[0]))
        .bearer_auth(&token)
        .json(&json!({"reason": "after the rebuild"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    projection_caught_up(&env, Duration::from_secs(60)).await;
    let body = graphql(
        &query_api,
        &token,
        "{ active: customers(first: 1, filter: {status: ACTIVE}) { totalCount }
           archived: customers(first: 1, filter: {status: ARCHIVED}) { totalCount } }",
        Value::Null,
    )
    .await;
    assert_eq!(
        body["data"]["active"]["totalCount"],
        CUSTOMERS - 1,
        "{body}"
    );
    assert_eq!(body["data"]["archived"]["totalCount"], 1, "{body}");
    assert_read_model_equals_replay(&env).await;
    report
}
