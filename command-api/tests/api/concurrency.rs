//! Optimistic concurrency and idempotency under concurrent requests.

use futures::future::join_all;
use pivotal_domain::customer::{Customer, CustomerCommand, sample_new_customer};
use pivotal_domain::envelope::{Actor, CommandContext, EventMetadata};
use pivotal_domain::values::Name;
use pivotal_event_store::commands::{AggregateStore, AppendError, Decided, ExecuteError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn of_concurrent_writers_expecting_one_version_exactly_one_wins() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();
    let requests = (0..12).map(|i| {
        app.post(&format!("/v1/customers/{id}/rename"))
            .header("if-match", "\"1\"")
            .json(&json!({"legalName": format!("Acme {i}")}))
            .send()
    });
    let responses = join_all(requests).await;
    let mut winners = 0;
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => winners += 1,
            409 => {
                let problem = assert_problem(response, 409, "version_conflict").await;
                assert_eq!(problem["currentVersion"], 2);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn writers_without_expectations_all_succeed_in_sequence() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();
    let versions = change_tags_at_once(&app, id, 8).await;
    assert_eq!(versions, (2..=9).collect::<Vec<_>>());
    assert_eq!(app.event_count().await, 9);
}

/// Sends `writers` tag changes of customer `id` at once, none expecting a
/// version; asserts each is accepted and returns the versions they
/// reached, in order.
async fn change_tags_at_once(app: &TestApp, id: &str, writers: usize) -> Vec<u64> {
    let requests = (0..writers).map(|i| {
        app.put(&format!("/v1/customers/{id}/tags"))
            .json(&json!({"tags": [format!("t{i}")]}))
            .send()
    });
    let mut versions: Vec<u64> = Vec::new();
    for response in join_all(requests).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        versions.push(body["version"].as_u64().unwrap());
    }
    versions.sort_unstable();
    versions
}

#[tokio::test]
async fn writers_on_one_aggregate_take_turns_and_waste_no_insert() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();
    let versions = change_tags_at_once(&app, id, 24).await;
    assert_eq!(versions, (2..=25).collect::<Vec<_>>());
    // Every insert that collides on the primary key still draws a global
    // position, which is then never used: gapless positions mean that no
    // command was decided on a version another had already committed.
    let (count, first, last): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), min(global_position), max(global_position) FROM events
         WHERE aggregate_id = $1",
    )
    .bind(id)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(count, 25);
    assert_eq!(last - first + 1, count, "positions {first}..={last}");
}

#[tokio::test]
async fn a_retried_request_returns_the_first_response_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let body = json!({"legalName": "Acme", "currency": "NZD"});
    let first = app
        .post("/v1/customers")
        .header("idempotency-key", "create-acme-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.unwrap();

    // Same key, same body (other formatting): the stored response.
    let retry = app
        .post("/v1/customers")
        .header("idempotency-key", "create-acme-1")
        .header("content-type", "application/json")
        .body(r#"{ "currency": "NZD", "legalName": "Acme" }"#)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["location"], location);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry, first);
    assert_eq!(app.event_count().await, 1);

    // Same key, different body: refused, nothing appended.
    let other = app
        .post("/v1/customers")
        .header("idempotency-key", "create-acme-1")
        .json(&json!({"legalName": "Other", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    assert_problem(other, 422, "idempotency_key_reused").await;
    assert_eq!(app.event_count().await, 1);

    // The key is scoped to the organization: another one may use it.
    let stranger = app.env.token(uuid::Uuid::now_v7(), &["owner"]);
    let theirs = app
        .client
        .post(format!("{}/v1/customers", app.url))
        .bearer_auth(stranger)
        .header("idempotency-key", "create-acme-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 201);
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn concurrent_retries_with_one_key_append_once() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();
    let requests = (0..10).map(|_| {
        app.post(&format!("/v1/customers/{id}/archive"))
            .header("idempotency-key", "archive-once")
            .json(&json!({"reason": "duplicate"}))
            .send()
    });
    let mut ok = 0;
    for response in join_all(requests).await {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            409 => {
                assert_eq!(response.headers()["retry-after"], "1");
                assert_problem(response, 409, "idempotency_key_in_progress").await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 1);
    assert_eq!(app.event_count().await, 2, "archived exactly once");
}

#[tokio::test]
async fn a_refused_command_is_replayed_as_refused() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();
    for _ in 0..2 {
        let response = app
            .post(&format!("/v1/customers/{id}/restore"))
            .header("idempotency-key", "restore-1")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_problem(response, 409, "customer_not_archived").await;
    }
    assert_eq!(app.event_count().await, 1);
}

/// Makes a key look like its request died after `seconds` without a response.
async fn abandon(app: &TestApp, key: &str) {
    let changed = sqlx::query(
        "UPDATE idempotency_keys SET status_code = NULL, response_body = NULL, response_headers = NULL,
                completed_at = NULL, created_at = now() - interval '1 minute'
         WHERE idempotency_key = $1",
    )
    .bind(key)
    .execute(&app.env.pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1);
}

#[tokio::test]
async fn a_retry_after_a_crash_between_commit_and_response_appends_nothing() {
    let app = TestApp::spawn().await;
    let body = json!({"legalName": "Acme", "currency": "NZD"});
    let first: Value = app
        .post("/v1/customers")
        .header("idempotency-key", "crash-after-commit")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The process died after the events committed, before the response was stored.
    abandon(&app, "crash-after-commit").await;

    let retry = app
        .post("/v1/customers")
        .header("idempotency-key", "crash-after-commit")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(
        retry.headers()["location"],
        format!("/v1/customers/{}", first["id"].as_str().unwrap()).as_str()
    );
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry, first, "the answer is rebuilt from the stored events");
    assert_eq!(app.event_count().await, 1);
    // And it is stored again for later retries.
    let again = app
        .post("/v1/customers")
        .header("idempotency-key", "crash-after-commit")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn a_retry_after_a_crash_before_commit_runs_the_command() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();
    let rename = || {
        app.post(&format!("/v1/customers/{id}/rename"))
            .header("idempotency-key", "crash-before-commit")
            .json(&json!({"legalName": "Acme Renamed"}))
    };
    // A first attempt that claimed the key and died before appending.
    sqlx::query(
        "INSERT INTO idempotency_keys (organization_id, idempotency_key, request_hash, created_at)
         VALUES ($1, 'crash-before-commit', 'other', now() - interval '1 minute')",
    )
    .bind(app.org)
    .execute(&app.env.pool)
    .await
    .unwrap();
    // With another body hash it is still a reuse of the key.
    assert_problem(
        rename().send().await.unwrap(),
        422,
        "idempotency_key_reused",
    )
    .await;

    sqlx::query("UPDATE idempotency_keys SET request_hash = $1 WHERE idempotency_key = 'crash-before-commit'")
        .bind(stored_hash_of(&app, id).await)
        .execute(&app.env.pool)
        .await
        .unwrap();
    let response = rename().send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 2);
    assert_eq!(app.event_count().await, 2);
}

/// The hash the API stores for the rename request above, learnt by sending
/// it once under a throwaway key in another organization.
async fn stored_hash_of(app: &TestApp, id: &str) -> String {
    let stranger = app.env.token(uuid::Uuid::now_v7(), &["owner"]);
    let _ = app
        .client
        .post(format!("{}/v1/customers/{id}/rename", app.url))
        .bearer_auth(stranger)
        .header("idempotency-key", "hash-probe")
        .json(&json!({"legalName": "Acme Renamed"}))
        .send()
        .await
        .unwrap();
    let (hash,): (String,) = sqlx::query_as(
        "SELECT request_hash FROM idempotency_keys WHERE idempotency_key = 'hash-probe'",
    )
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    hash
}

/// A creation starts from the empty aggregate without reading the store.
/// Should its id exist after all, it is refused as a version conflict (the
/// stored version named) and appends nothing.
#[tokio::test]
async fn a_creation_under_an_id_that_exists_is_a_version_conflict() {
    let app = TestApp::spawn().await;
    let existing: Uuid = app.create_customer("Acme").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = AggregateStore::<Customer>::new(app.env.pool.clone());
    let (actor, context) = command_context(app.org);
    let create = |id: Uuid| CustomerCommand::Create {
        actor,
        customer_id: id,
        customer: sample_new_customer(),
    };

    let refused = store
        .create(&existing.to_string(), create(existing), &context)
        .await;
    assert!(
        matches!(
            refused,
            Err(ExecuteError::VersionConflict {
                expected: 0,
                current: 1
            })
        ),
        "{refused:?}"
    );
    assert_eq!(app.event_count().await, 1);

    let fresh = Uuid::now_v7();
    let outcome = store
        .create(&fresh.to_string(), create(fresh), &context)
        .await
        .unwrap();
    assert_eq!(outcome.version, 1);
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(app.event_count().await, 2);
}

/// The stored (event id, sequence, global position) of `id`'s events from
/// `from` on.
async fn stored_from(app: &TestApp, id: &str, from: i64) -> Vec<(Uuid, u64, i64)> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT event_id, sequence, global_position FROM events
         WHERE aggregate_id = $1 AND sequence >= $2 ORDER BY sequence",
    )
    .bind(id)
    .bind(from)
    .fetch_all(&app.env.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(event_id, sequence, position)| (event_id, sequence as u64, position))
        .collect()
}

/// Events as reported: (event id, sequence, global position), as
/// [`stored_from`] reads them.
fn as_stored(events: &[pivotal_event_store::commands::CommittedEvent]) -> Vec<(Uuid, u64, i64)> {
    events
        .iter()
        .map(|e| (e.event_id, e.sequence, e.position))
        .collect()
}

/// The events of one command are appended by one statement: all of them or
/// none, each reported with the event id and global position it was stored
/// under, and read back by postgres-es like any other event.
#[tokio::test]
async fn the_events_of_one_command_are_appended_together_or_not_at_all() {
    let app = TestApp::spawn().await;
    let store = AggregateStore::<Customer>::new(app.env.pool.clone());
    let (actor, context) = command_context(app.org);
    // On a connection outside any transaction: the statement commits both.
    let id = app.create_customer("Acme").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let decided = two_renames(&store, actor, &id).await;
    let mut conn = app.env.pool.acquire().await.unwrap();
    let committed = store.append(&mut conn, &decided, &context).await.unwrap();
    drop(conn);
    let reported = as_stored(&committed);
    let stored = stored_from(&app, &id, 2).await;
    assert_eq!(reported, stored);
    assert_eq!(stored.iter().map(|s| s.1).collect::<Vec<_>>(), [2, 3]);
    assert!(stored[0].2 < stored[1].2, "{stored:?}");
    assert_eq!(
        committed
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["customer.renamed", "customer.renamed"]
    );
    let (_, version) = store.load(&id).await.unwrap();
    assert_eq!(version, 3);
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT payload->'data'->>'legalName' FROM events
         WHERE aggregate_id = $1 AND sequence > 1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(names, [("One".to_owned(),), ("Two".to_owned(),)]);

    // A command run by the store reports its event as stored, too.
    let outcome = store
        .execute(&id, Some(3), rename(actor, "Three"), &context)
        .await
        .unwrap();
    let reported = as_stored(&outcome.events);
    assert_eq!(reported, stored_from(&app, &id, 4).await);
    assert_eq!(outcome.position(), Some(reported[0].2));

    // The second event's sequence is taken (as if another writer got there
    // first): the first, which alone would fit, is not appended either.
    let other = app.create_customer("Other").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let decided = two_renames(&store, actor, &other).await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                             event_version, payload, metadata)
         SELECT aggregate_type, aggregate_id, 3, event_type, event_version, payload, metadata
         FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(&other)
    .execute(&app.env.pool)
    .await
    .unwrap();
    let before = app.event_count().await;
    let mut conn = app.env.pool.acquire().await.unwrap();
    let refused = store.append(&mut conn, &decided, &context).await;
    assert!(matches!(refused, Err(AppendError::Conflict)), "{refused:?}");
    drop(conn);
    assert_eq!(app.event_count().await, before);
    assert!(stored_from(&app, &other, 2).await.iter().all(|s| s.1 != 2));
}

/// A rename of the customer to `to`, by `actor`.
fn rename(actor: Actor, to: &str) -> CustomerCommand {
    CustomerCommand::Rename {
        actor,
        legal_name: Name::parse("", to).unwrap(),
        display_name: Name::parse("", to).unwrap(),
    }
}

/// Two renames decided on version 1 of `id`, as one command's two events.
async fn two_renames(
    store: &AggregateStore<Customer>,
    actor: Actor,
    id: &str,
) -> Decided<Customer> {
    let first = store
        .decide(id, Some(1), rename(actor, "One"))
        .await
        .unwrap();
    let mut events = first.events.clone();
    events.extend(first.state.decide(rename(actor, "Two")).unwrap());
    Decided {
        aggregate_id: id.to_owned(),
        version: 1,
        state: first.state,
        events,
    }
}

/// A command run in this process, as the command API would run it.
fn command_context(organization_id: Uuid) -> (Actor, CommandContext) {
    let actor = Actor {
        organization_id,
        user_id: Uuid::now_v7(),
    };
    let context = CommandContext {
        actor,
        timestamp: chrono::Utc::now(),
        metadata: EventMetadata {
            correlation_id: "store-test".into(),
            causation_id: None,
            source: "command-api".into(),
            user_agent: None,
            ip_address: None,
        },
        idempotency_key: None,
    };
    (actor, context)
}

/// A store remembers the state its last command left each aggregate in;
/// another process (the command API) changing the aggregate since must not
/// make it lose a change or give an answer decided on the old state.
#[tokio::test]
async fn remembered_state_another_process_changed_is_never_trusted() {
    let app = TestApp::spawn().await;
    let id = app.create_customer("Acme").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = AggregateStore::<Customer>::new(app.env.pool.clone());
    let (actor, context) = command_context(app.org);
    // This store renames (version 2) and remembers the name.
    let outcome = mine
        .execute(&id, None, rename(actor, "Mine"), &context)
        .await
        .unwrap();
    assert_eq!(outcome.version, 2);

    // The API renames it back on top (its own memory of version 1 from the
    // creation collides with version 2, and it retries on the store).
    let response = app
        .post(&format!("/v1/customers/{id}/rename"))
        .json(&json!({"legalName": "Theirs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 3);

    // Renaming to "Mine" again: nothing to do by this store's memory, a
    // rename by the stored state.
    let outcome = mine
        .execute(&id, None, rename(actor, "Mine"), &context)
        .await
        .unwrap();
    assert_eq!(outcome.version, 4);
    assert_eq!(outcome.events.len(), 1);
    // Expecting a version the aggregate has left: refused, naming the
    // stored version.
    let refused = mine
        .execute(&id, Some(3), rename(actor, "Other"), &context)
        .await;
    assert!(
        matches!(
            refused,
            Err(ExecuteError::VersionConflict {
                expected: 3,
                current: 4
            })
        ),
        "{refused:?}"
    );
    let (state, version) = mine.load(&id).await.unwrap();
    assert_eq!(version, 4);
    let renamed: Vec<(String,)> = sqlx::query_as(
        "SELECT payload->'data'->>'legalName' FROM events
         WHERE aggregate_id = $1 AND event_type = 'customer.renamed' ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&app.env.pool)
    .await
    .unwrap();
    let renamed: Vec<&str> = renamed.iter().map(|(name,)| name.as_str()).collect();
    assert_eq!(renamed, ["Mine", "Theirs", "Mine"], "{state:?}");
}

/// Remembered state is bounded by bytes, each state weighing its id and its
/// JSON form: with room for a few customers, a hundred creations leave only
/// some remembered, within the bound, and a command on a forgotten customer
/// reads it back from the store.
#[tokio::test]
async fn remembered_state_stays_within_its_bytes_and_forgotten_aggregates_are_read_back() {
    const BYTES: u64 = 4096;
    let app = TestApp::spawn().await;
    let store = AggregateStore::<Customer>::remembering(app.env.pool.clone(), BYTES);
    let (actor, context) = command_context(app.org);
    let mut ids = Vec::new();
    for _ in 0..100 {
        let id = Uuid::now_v7();
        let command = CustomerCommand::Create {
            actor,
            customer_id: id,
            customer: sample_new_customer(),
        };
        store
            .create(&id.to_string(), command, &context)
            .await
            .unwrap();
        ids.push(id.to_string());
    }
    let (count, weight) = store.remembered();
    assert!(count > 0 && count < 100, "{count} remembered");
    assert!(weight <= BYTES, "{weight} bytes remembered");
    // The customers differ only in their ids, so each weighs the same.
    let (state, _) = store.load(&ids[0]).await.unwrap();
    let each = 36 + serde_json::to_vec(&state).unwrap().len() as u64;
    assert_eq!(weight, count as u64 * each);

    for id in [&ids[0], &ids[99]] {
        let outcome = store
            .execute(id, None, rename(actor, "Renamed Ltd"), &context)
            .await
            .unwrap();
        assert_eq!(outcome.version, 2);
        let (state, version) = store.load(id).await.unwrap();
        assert_eq!(version, 2);
        assert_eq!(state.state.unwrap().legal_name.as_str(), "Renamed Ltd");
    }
    assert_eq!(app.event_count().await, 102);
}

/// Holds `events` against inserts (`LOCK TABLE ... IN SHARE MODE`) until
/// the returned transaction ends.
async fn hold_appends(app: &TestApp) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = app.env.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// Waits until `sessions` of this database wait for a lock.
async fn wait_for_lock_waiters(app: &TestApp, sessions: i64) {
    for _ in 0..500 {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.env.pool)
        .await
        .unwrap();
        if waiting >= sessions {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no {sessions} sessions waited for a lock");
}

/// Waits until `store` has `appends` waiting for its writer.
async fn wait_for_appends(store: &AggregateStore<Customer>, appends: usize) {
    for _ in 0..500 {
        if store.appends_waiting() == appends {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} appends waited, not {appends}", store.appends_waiting());
}

/// Creates a customer through `store` on a task of its own.
type Creation = (
    String,
    tokio::task::JoinHandle<Result<pivotal_event_store::commands::Outcome, String>>,
);

/// Creations queued on a store with one writer: the first has the writer
/// and waits at the held table (`lock`), the others wait for the writer.
struct Queued {
    store: std::sync::Arc<AggregateStore<Customer>>,
    lock: sqlx::Transaction<'static, sqlx::Postgres>,
    first: Creation,
    waiting: Vec<Creation>,
}

async fn queue_creations(app: &TestApp, waiting: usize) -> Queued {
    let store =
        std::sync::Arc::new(AggregateStore::<Customer>::new(app.env.pool.clone()).with_writers(1));
    let (actor, context) = command_context(app.org);
    let lock = hold_appends(app).await;
    let first = spawn_creation(&store, actor, &context);
    wait_for_lock_waiters(app, 1).await;
    wait_for_appends(&store, 0).await;
    let waiting: Vec<_> = (0..waiting)
        .map(|_| spawn_creation(&store, actor, &context))
        .collect();
    wait_for_appends(&store, waiting.len()).await;
    Queued {
        store,
        lock,
        first,
        waiting,
    }
}

fn spawn_creation(
    store: &std::sync::Arc<AggregateStore<Customer>>,
    actor: Actor,
    context: &CommandContext,
) -> Creation {
    spawn_creation_of(store, actor, context, Uuid::now_v7())
}

fn spawn_creation_of(
    store: &std::sync::Arc<AggregateStore<Customer>>,
    actor: Actor,
    context: &CommandContext,
    id: Uuid,
) -> Creation {
    let (store, context) = (store.clone(), context.clone());
    let task = tokio::spawn(async move {
        let command = CustomerCommand::Create {
            actor,
            customer_id: id,
            customer: sample_new_customer(),
        };
        store
            .create(&id.to_string(), command, &context)
            .await
            .map_err(|e| e.to_string())
    });
    (id.to_string(), task)
}

/// The distinct transactions that wrote the events of `ids`.
async fn transactions_of(app: &TestApp, ids: &[String]) -> i64 {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(DISTINCT tx_id::text) FROM events WHERE aggregate_id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    count
}

/// Commands that arrive while every writer is busy are appended by one
/// statement, in one transaction, each reported with its own events as
/// stored.
#[tokio::test]
async fn appends_waiting_for_a_writer_share_one_statement() {
    let app = TestApp::spawn().await;
    // The first creation takes the one writer and waits at the lock; ten
    // wait for the writer.
    let Queued {
        lock,
        first: (first, first_task),
        waiting,
        ..
    } = queue_creations(&app, 10).await;
    lock.commit().await.unwrap();

    let created = first_task.await.unwrap().unwrap();
    assert_eq!(
        as_stored(&created.events),
        stored_from(&app, &first, 1).await
    );
    let mut ids = Vec::new();
    for (id, task) in waiting {
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(outcome.version, 1);
        assert_eq!(
            as_stored(&outcome.events),
            stored_from(&app, &id, 1).await,
            "{id}"
        );
        ids.push(id);
    }
    assert_eq!(transactions_of(&app, &ids).await, 1);
    ids.push(first);
    assert_eq!(transactions_of(&app, &ids).await, 2);
    assert_eq!(app.event_count().await, 11);
}

/// Makes `id` a customer `mine` remembers at version 1, renamed since by
/// another process (`theirs`) to version 2.
async fn make_stale(
    mine: &AggregateStore<Customer>,
    theirs: &AggregateStore<Customer>,
    (actor, context): (Actor, &CommandContext),
    id: Uuid,
) {
    let command = CustomerCommand::Create {
        actor,
        customer_id: id,
        customer: sample_new_customer(),
    };
    mine.create(&id.to_string(), command, context)
        .await
        .unwrap();
    theirs
        .execute(&id.to_string(), None, rename(actor, "Theirs"), context)
        .await
        .unwrap();
}

type Renaming = tokio::task::JoinHandle<
    Result<
        pivotal_event_store::commands::Outcome,
        ExecuteError<<Customer as cqrs_es::Aggregate>::Error>,
    >,
>;

/// Renames `id` through `store` on a task of its own, expecting `expected`.
fn spawn_rename(
    store: &std::sync::Arc<AggregateStore<Customer>>,
    (actor, context): (Actor, &CommandContext),
    id: Uuid,
    expected: Option<u64>,
) -> Renaming {
    let (store, context) = (store.clone(), context.clone());
    tokio::spawn(async move {
        store
            .execute(&id.to_string(), expected, rename(actor, "Mine"), &context)
            .await
    })
}

/// The rename of a customer made stale by [`make_stale`], expecting the
/// version its store remembered, was refused.
async fn assert_refused_as_stale(refused: Renaming) {
    let refused = refused.await.unwrap();
    assert!(
        matches!(
            refused,
            Err(ExecuteError::VersionConflict {
                expected: 1,
                current: 2
            })
        ),
        "{refused:?}"
    );
}

/// A statement in which one command collides with a stored event stores
/// nothing; each of its commands is then written alone: the others
/// commit, the one that collided is retried on the stored state (without
/// an expected version) or refused (expecting the version it was decided
/// on).
#[tokio::test]
async fn a_collision_in_a_shared_statement_sends_each_command_alone() {
    let app = TestApp::spawn().await;
    let mine =
        std::sync::Arc::new(AggregateStore::<Customer>::new(app.env.pool.clone()).with_writers(1));
    let theirs = AggregateStore::<Customer>::new(app.env.pool.clone());
    let (actor, context) = command_context(app.org);
    // Two customers this store remembers at version 1, renamed since by
    // another process to version 2.
    let stale = [Uuid::now_v7(), Uuid::now_v7()];
    for id in stale {
        make_stale(&mine, &theirs, (actor, &context), id).await;
    }
    let before = app.event_count().await;

    let lock = hold_appends(&app).await;
    let (first, first_task) = spawn_creation(&mine, actor, &context);
    wait_for_lock_waiters(&app, 1).await;
    wait_for_appends(&mine, 0).await;
    let retried = spawn_rename(&mine, (actor, &context), stale[0], None);
    let refused = spawn_rename(&mine, (actor, &context), stale[1], Some(1));
    let creations: Vec<_> = (0..6)
        .map(|_| spawn_creation(&mine, actor, &context))
        .collect();
    wait_for_appends(&mine, 8).await;
    lock.commit().await.unwrap();

    let created = first_task.await.unwrap().unwrap();
    assert_eq!(
        as_stored(&created.events),
        stored_from(&app, &first, 1).await
    );
    let retried = retried.await.unwrap().unwrap();
    assert_eq!(retried.version, 3);
    assert_eq!(
        as_stored(&retried.events),
        stored_from(&app, &stale[0].to_string(), 3).await
    );
    assert_refused_as_stale(refused).await;
    assert!(stored_from(&app, &stale[1].to_string(), 3).await.is_empty());
    let mut ids = Vec::new();
    for (id, task) in creations {
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(
            as_stored(&outcome.events),
            stored_from(&app, &id, 1).await,
            "{id}"
        );
        ids.push(id);
    }
    // Written one by one after the shared statement stored nothing.
    assert_eq!(transactions_of(&app, &ids).await, 6);
    // The first creation, six more and the retried rename.
    assert_eq!(app.event_count().await, before + 8);
}

/// Starts a transaction that writes the first event of `id` and holds it
/// uncommitted: a statement that writes the same event waits for it.
async fn hold_first_event(app: &TestApp, id: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut held = app.env.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                             event_version, payload, metadata)
         VALUES ($1, $2, 1, 'Held', '1.0', '{}', '{}')",
    )
    .bind(<Customer as cqrs_es::Aggregate>::TYPE)
    .bind(id.to_string())
    .execute(&mut *held)
    .await
    .unwrap();
    held
}

/// After a collision in a shared statement its commands are written one
/// by one; when one of those statements loses its connection, that
/// command is told the store is unavailable and the ones after it are
/// written on another connection.
#[tokio::test]
async fn a_command_written_alone_that_loses_its_connection_does_not_fail_the_next() {
    let app = TestApp::spawn().await;
    let mine =
        std::sync::Arc::new(AggregateStore::<Customer>::new(app.env.pool.clone()).with_writers(1));
    let theirs = AggregateStore::<Customer>::new(app.env.pool.clone());
    let (actor, context) = command_context(app.org);
    // Rows go in the order of their ids: the stale rename's first, so the
    // shared statement collides before it reaches the others.
    let mut ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    ids.sort();
    let (stale, first, cut, next) = (ids[0], ids[1], ids[2], ids[3]);
    make_stale(&mine, &theirs, (actor, &context), stale).await;
    let before = app.event_count().await;

    // The first creation takes the one writer and waits for `held_first`;
    // the stale rename and two creations wait for the writer.
    let held_first = hold_first_event(&app, first).await;
    let held_cut = hold_first_event(&app, cut).await;
    let (_, first_task) = spawn_creation_of(&mine, actor, &context, first);
    wait_for_lock_waiters(&app, 1).await;
    wait_for_appends(&mine, 0).await;
    let refused = spawn_rename(&mine, (actor, &context), stale, Some(1));
    let (_, cut_task) = spawn_creation_of(&mine, actor, &context, cut);
    let (_, next_task) = spawn_creation_of(&mine, actor, &context, next);
    wait_for_appends(&mine, 3).await;
    held_first.rollback().await.unwrap();
    first_task.await.unwrap().unwrap();

    // The shared statement collided on the stale rename; written alone,
    // the rename is refused and the creation of `cut` waits for
    // `held_cut`. Its session ends there.
    let mut waiting = Vec::new();
    for _ in 0..500 {
        waiting = lock_waiters(&app).await;
        if !waiting.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(waiting.len(), 1, "no command waited for the held event");
    terminate(&app, &waiting).await;

    assert_refused_as_stale(refused).await;
    let cut_answer = cut_task.await.unwrap();
    assert!(
        cut_answer
            .as_ref()
            .is_err_and(|e| e.starts_with("event store unavailable")),
        "{cut_answer:?}"
    );
    let created = next_task.await.unwrap().unwrap();
    assert_eq!(
        as_stored(&created.events),
        stored_from(&app, &next.to_string(), 1).await
    );
    held_cut.rollback().await.unwrap();
    assert!(stored_from(&app, &cut.to_string(), 1).await.is_empty());
    assert!(stored_from(&app, &stale.to_string(), 3).await.is_empty());
    // The first creation and the one after the cut.
    assert_eq!(app.event_count().await, before + 2);
}

/// The sessions of this database waiting for a lock.
async fn lock_waiters(app: &TestApp) -> Vec<i32> {
    let pids: Vec<(i32,)> = sqlx::query_as(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_all(&app.env.pool)
    .await
    .unwrap();
    pids.into_iter().map(|(pid,)| pid).collect()
}

/// Ends the sessions `pids` (as a database restart would).
async fn terminate(app: &TestApp, pids: &[i32]) {
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(pids)
        .execute(&app.env.pool)
        .await
        .unwrap();
}

/// A shared statement whose connection ends is not written again: each of
/// its commands is told the store is unavailable, and nothing is stored.
#[tokio::test]
async fn a_shared_statement_cut_off_answers_each_of_its_commands_unavailable() {
    let app = TestApp::spawn().await;
    let Queued {
        store,
        lock,
        first: (_, first_task),
        waiting,
    } = queue_creations(&app, 5).await;
    // The first statement's session ends; the five go together next.
    let first = lock_waiters(&app).await;
    terminate(&app, &first).await;
    wait_for_appends(&store, 0).await;
    let mut shared = Vec::new();
    for _ in 0..500 {
        shared = lock_waiters(&app).await;
        shared.retain(|pid| !first.contains(pid));
        if !shared.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(shared.len(), 1, "the shared statement never waited");
    terminate(&app, &shared).await;

    let answers = std::iter::once(first_task).chain(waiting.into_iter().map(|(_, task)| task));
    for task in answers {
        let answer = task.await.unwrap();
        assert!(
            answer
                .as_ref()
                .is_err_and(|e| e.starts_with("event store unavailable")),
            "{answer:?}"
        );
    }
    lock.commit().await.unwrap();
    assert_eq!(app.event_count().await, 0);
}
