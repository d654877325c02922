//! Execution slots over HTTP (`query_api.max_concurrent_queries`): an
//! operation beyond them waits for one, one beyond the queue
//! (`query_api.max_waiting_queries`) is turned away with 503, as is one
//! that waited longer than `query_api.max_slot_wait_ms`, and waits for a
//! consistency token hold none.

use std::time::Duration;

use pivotal_domain::customer::{Customer, CustomerCommand};
use pivotal_domain::envelope::Actor;
use pivotal_domain::values::Name;
use pivotal_event_store::commands::AggregateStore;
use pivotal_test_support::{eventually, http};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{code, context, fixture, is_retryable_503};

async fn post(url: String, token: String, query: String, header: Option<String>) -> Value {
    let mut request = http()
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query}));
    if let Some(position) = header {
        request = request.header("x-consistency-token", position);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Locks the customers' read model and sends a list, which takes a slot
/// and waits for the lock: returns once it waits there, with the lock's
/// transaction (commit it to let the list through) and the list's answer.
async fn a_list_held_by_a_lock(
    pool: &sqlx::PgPool,
    url: &str,
    token: &str,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<Value>,
) {
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE rm_customers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let list = tokio::spawn(post(
        url.to_owned(),
        token.to_owned(),
        "{ customers(first: 2) { edges { node { legalName } } } }".into(),
        None,
    ));
    let blocked = eventually(Duration::from_secs(10), || async {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks
             WHERE relation = 'rm_customers'::regclass AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (waiting > 0).then_some(())
    })
    .await;
    assert!(blocked.is_some(), "the list reached the locked table");
    (lock, list)
}

/// Commits `lock`: the list held behind it answers its page.
async fn the_list_answers_once_unlocked(
    lock: sqlx::Transaction<'static, sqlx::Postgres>,
    list: tokio::task::JoinHandle<Value>,
) {
    lock.commit().await.unwrap();
    let list = list.await.unwrap();
    assert_eq!(
        list["data"]["customers"]["edges"][0]["node"]["legalName"], "Alpha Limited",
        "{list}"
    );
}

/// Commits `lock`: the list held behind it answers its page, and `second`
/// (a `__typename` query) answers after it.
async fn both_answer_once_unlocked(
    lock: sqlx::Transaction<'static, sqlx::Postgres>,
    list: tokio::task::JoinHandle<Value>,
    second: tokio::task::JoinHandle<Value>,
) {
    the_list_answers_once_unlocked(lock, list).await;
    assert_eq!(
        second.await.unwrap(),
        json!({"data": {"__typename": "Query"}})
    );
}

/// `refused` is the 503 of an operation turned away for want of a slot:
/// `Retry-After`, the code `OVERLOADED`, a message saying `why`, no data.
async fn is_overloaded(refused: pivotal_test_support::reqwest::Response, why: &str) {
    let body = is_retryable_503(refused, "OVERLOADED").await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(why)),
        "{body}"
    );
    assert!(body.get("data").is_none_or(Value::is_null), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_beyond_the_slots_waits_for_one() {
    let mut f = fixture().await;
    f.env.settings.query_api.max_concurrent_queries = 1;
    let (url, _stop) = f.env.spawn_query_api().await;
    let token = f.env.token(f.org, &["member"]);
    // The customers' read model is locked, so a list holds the only slot
    // while it waits for the lock.
    let (lock, list) = a_list_held_by_a_lock(&f.env.pool, &url, &token).await;
    let second = tokio::spawn(post(url, token, "{ __typename }".into(), None));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second operation waits for the slot"
    );
    assert!(!list.is_finished());
    both_answer_once_unlocked(lock, list, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_beyond_the_queue_is_503_with_retry_after_and_costs_the_others_nothing() {
    let mut f = fixture().await;
    f.env.settings.query_api.max_concurrent_queries = 1;
    f.env.settings.query_api.max_waiting_queries = 1;
    let (url, _stop) = f.env.spawn_query_api().await;
    let token = f.env.token(f.org, &["member"]);
    // The list holds the only slot, waiting for the lock...
    let (lock, list) = a_list_held_by_a_lock(&f.env.pool, &url, &token).await;
    // ...the second waits in the queue's one place...
    let second = tokio::spawn(post(
        url.clone(),
        token.clone(),
        "{ __typename }".into(),
        None,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second operation is queued");
    // ...and the third is turned away at once.
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        http()
            .post(format!("{url}/graphql"))
            .bearer_auth(&token)
            .json(&json!({"query": "{ customers(first: 1) { totalCount } }"}))
            .send(),
    )
    .await
    .expect("the third operation is answered at once, not queued")
    .unwrap();
    is_overloaded(
        refused,
        "every execution slot (1) is taken and the queue for them (1) is full",
    )
    .await;
    // The refusal cost the others nothing: both answer once the lock goes,
    // and the next operation is let in.
    both_answer_once_unlocked(lock, list, second).await;
    let after = post(url, token, "{ __typename }".into(), None).await;
    assert_eq!(after, json!({"data": {"__typename": "Query"}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_waits_for_a_slot_at_most_the_longest_wait_then_503() {
    let mut f = fixture().await;
    f.env.settings.query_api.max_concurrent_queries = 1;
    f.env.settings.query_api.max_slot_wait_ms = 300;
    let (url, _stop) = f.env.spawn_query_api().await;
    let token = f.env.token(f.org, &["member"]);
    // The list holds the only slot, waiting for the lock, for longer than
    // the second may wait for it.
    let (lock, list) = a_list_held_by_a_lock(&f.env.pool, &url, &token).await;
    let started = std::time::Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        http()
            .post(format!("{url}/graphql"))
            .bearer_auth(&token)
            .json(&json!({"query": "{ __typename }"}))
            .send(),
    )
    .await
    .expect("the second operation is answered once its wait is over")
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    is_overloaded(refused, "no execution slot (of 1) came free within 300 ms").await;
    assert!(!list.is_finished(), "the list still holds its slot");
    // The list answers once the lock goes, and the next operation is let
    // in.
    the_list_answers_once_unlocked(lock, list).await;
    let after = post(url, token, "{ __typename }".into(), None).await;
    assert_eq!(after, json!({"data": {"__typename": "Query"}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_consistency_token_hold_no_slot() {
    let mut f = fixture().await;
    f.env.settings.query_api.max_concurrent_queries = 1;
    f.env.settings.query_api.consistency_wait_ms = 3000;
    let (url, _stop) = f.env.spawn_query_api().await;
    let token = f.env.token(f.org, &["member"]);
    // A rename the read models never apply here (no projector runs).
    let (id,): (Uuid,) = sqlx::query_as(
        "SELECT id FROM rm_customers WHERE organization_id = $1 ORDER BY legal_name LIMIT 1",
    )
    .bind(f.org)
    .fetch_one(&f.env.pool)
    .await
    .unwrap();
    let actor = Actor {
        organization_id: f.org,
        user_id: Uuid::now_v7(),
    };
    let renamed = AggregateStore::<Customer>::new(f.env.pool.clone())
        .execute(
            &id.to_string(),
            None,
            CustomerCommand::Rename {
                actor,
                legal_name: Name::parse("", "Renamed Limited").unwrap(),
                display_name: Name::parse("", "Renamed").unwrap(),
            },
            &context(actor),
        )
        .await
        .unwrap();
    let position = renamed.position().unwrap();
    let field =
        format!(r#"{{ customer(id: "{id}", consistencyToken: "{position}") {{ legalName }} }}"#);
    let by_argument = tokio::spawn(post(url.clone(), token.clone(), field, None));
    let by_header = tokio::spawn(post(
        url.clone(),
        token.clone(),
        "{ customers(first: 1) { edges { node { legalName } } } }".into(),
        Some(position.to_string()),
    ));
    // Both are waiting for the token now (its first check takes
    // milliseconds); a third operation still finds the slot free.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let plain = post(url, token, "{ __typename }".into(), None).await;
    assert_eq!(plain, json!({"data": {"__typename": "Query"}}));
    assert!(!by_argument.is_finished(), "the field is still waiting");
    assert!(!by_header.is_finished(), "the request is still waiting");
    let by_argument = by_argument.await.unwrap();
    assert_eq!(code(&by_argument), "STALE_READ", "{by_argument}");
    let by_header = by_header.await.unwrap();
    assert_eq!(code(&by_header), "STALE_READ", "{by_header}");
}

#[tokio::test]
async fn no_slots_is_refused_at_start_up() {
    let mut env = pivotal_test_support::TestEnv::new().await;
    env.settings.query_api.max_concurrent_queries = 0;
    let refused = pivotal_query_api::Application::build(&env.settings, env.pool.clone()).await;
    let error = refused.err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("invalid setting: query_api.max_concurrent_queries must be at least 1")
    );
}
