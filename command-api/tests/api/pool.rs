//! The pool every process makes (`pivotal_event_store::db`), against a real
//! PostgreSQL: a connection used within the alive-bypass window is handed
//! out again untested, one idle longer is tested first, so a connection
//! the server closed while it sat idle is replaced instead of failing a
//! request (ADR 0054).

use std::time::Duration;

use pivotal_event_store::commands::is_unavailable;
use pivotal_event_store::db::ALIVE_BYPASS_WINDOW;
use pivotal_test_support::{TestEnv, eventually, http};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::assert_problem;

/// The server process behind the pool's one connection.
async fn backend(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

/// Has the server close the sessions of `application` on the test's
/// database, as a restart or an idle timeout would, and waits until they
/// are gone; returns how many there were.
async fn terminate(env: &TestEnv, application: &str) -> usize {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(application)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    for pid in &pids {
        let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), || async {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&pids)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        (left == 0).then_some(())
    })
    .await
    .expect("the terminated sessions end");
    pids.len()
}

/// Asks the command API at `url` to create a customer named `name`.
fn create_customer(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    name: String,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    client
        .post(format!("{url}/v1/customers"))
        .bearer_auth(token)
        .json(&json!({"legalName": name, "currency": "NZD"}))
        .send()
}

async fn one_connection_pool(env: &TestEnv, application: &str) -> PgPool {
    let mut settings = env.settings.database.clone();
    settings.max_connections = 1;
    pivotal_event_store::db::connect(&settings, application)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_connection_used_back_to_back_is_kept_and_one_closed_while_idle_is_replaced() {
    let env = TestEnv::new().await;
    let pool = one_connection_pool(&env, "pivotal-pool-idle").await;
    let first = backend(&pool).await.unwrap();
    for _ in 0..20 {
        assert_eq!(backend(&pool).await.unwrap(), first);
    }
    assert_eq!(terminate(&env, "pivotal-pool-idle").await, 1);
    tokio::time::sleep(ALIVE_BYPASS_WINDOW + Duration::from_millis(200)).await;
    let second = backend(&pool)
        .await
        .expect("a connection idle past the window is tested, and replaced when closed");
    assert_ne!(second, first);
    assert_eq!(pool.size(), 1);
}

#[tokio::test]
async fn a_connection_closed_within_the_window_fails_one_statement_as_unavailable_and_is_replaced()
{
    let env = TestEnv::new().await;
    let pool = one_connection_pool(&env, "pivotal-pool-recent").await;
    let first = backend(&pool).await.unwrap();
    assert_eq!(terminate(&env, "pivotal-pool-recent").await, 1);
    // Handed out untested if this runs within the window (a slow machine
    // may be past it, and then the test replaces it first).
    match backend(&pool).await {
        Ok(other) => assert_ne!(other, first),
        Err(error) => assert!(is_unavailable(&error), "{error:?}"),
    }
    let next = backend(&pool)
        .await
        .expect("the closed connection is not handed out again");
    assert_ne!(next, first);
}

#[tokio::test]
async fn a_command_after_the_server_closed_the_apis_idle_connection_is_stored() {
    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    // Room for the quote expiry sweep, which holds a connection (its
    // lock) while the commands it runs take another.
    settings.database.max_connections = 2;
    let pool = pivotal_command_api::connect(&settings).await.unwrap();
    let (url, _stop) = env.spawn_command_api_on(pool).await;
    let token = env.token(Uuid::now_v7(), &["manager"]);
    let client = http();
    let create = |name: &str| create_customer(&client, &url, &token, name.to_owned());
    let before = create("Before").await.unwrap();
    assert_eq!(before.status(), 201, "{:?}", before.text().await);
    assert!(terminate(&env, "pivotal-command-api").await >= 1);

    // Within the window: stored, or refused as unavailable and not stored.
    let within = create("Within").await.unwrap();
    let within_stored = within.status() == 201;
    if !within_stored {
        let retry_after = within.headers().get("retry-after").cloned();
        assert_problem(within, 503, "service_unavailable").await;
        assert!(retry_after.is_some());
    }
    tokio::time::sleep(ALIVE_BYPASS_WINDOW + Duration::from_millis(200)).await;
    let after = create("After").await.unwrap();
    assert_eq!(after.status(), 201, "{:?}", after.text().await);

    // Past the window the API's connection is tested before use: the
    // server closing it costs no request.
    assert!(terminate(&env, "pivotal-command-api").await >= 1);
    tokio::time::sleep(ALIVE_BYPASS_WINDOW + Duration::from_millis(200)).await;
    assert_eq!(create("Idle").await.unwrap().status(), 201);

    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'data'->>'legalName' FROM events WHERE event_type = 'customer.created'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    names.sort();
    let mut expected = vec!["After", "Before", "Idle"];
    if within_stored {
        expected.push("Within");
        expected.sort_unstable();
    }
    assert_eq!(names, expected);
}

#[tokio::test]
async fn the_append_writers_hand_their_connections_back_once_commands_stop() {
    let env = TestEnv::new().await;
    let pool = pivotal_command_api::connect(&env.settings).await.unwrap();
    let (url, _stop) = env.spawn_command_api_on(pool.clone()).await;
    let token = env.token(Uuid::now_v7(), &["manager"]);
    let client = http();
    let created = futures::future::join_all(
        (0..24).map(|n| create_customer(&client, &url, &token, format!("Customer {n}"))),
    )
    .await;
    for response in created {
        assert_eq!(response.unwrap().status(), 201);
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'customer.created'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(stored, 24);
    // Kept between statements while commands come, back in the pool
    // within twice the window once they stop.
    eventually(Duration::from_secs(5), || async {
        (pool.size() > 0 && pool.num_idle() == pool.size() as usize).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{} of {} connections still out of the pool",
            pool.size() as usize - pool.num_idle(),
            pool.size()
        )
    });
}
