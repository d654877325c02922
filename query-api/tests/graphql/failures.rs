//! Reads that fail because of the database: a statement past
//! `query_api.statement_timeout_ms` is cancelled by PostgreSQL and answered
//! `QUERY_TIMEOUT`; a database that cannot be reached is answered
//! `UNAVAILABLE` with `retryAfterSeconds`, and with HTTP 503 and
//! `Retry-After` when nothing else was answered. Neither is ever
//! `INTERNAL_SERVER_ERROR`.

use std::time::Duration;

use pivotal_test_support::{http, reqwest};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{code, fixture, is_retryable_503};

async fn post(url: &str, token: &str, query: &str) -> reqwest::Response {
    http()
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
}

const LIST: &str = "{ customers(first: 2) { edges { node { legalName } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_past_the_statement_timeout_is_cancelled_as_query_timeout() {
    let mut f = fixture().await;
    f.env.settings.query_api.statement_timeout_ms = std::num::NonZeroU64::new(300).unwrap();
    let pool = pivotal_query_api::connect(&f.env.settings).await.unwrap();
    let (url, _stop) = f.env.spawn_query_api_on(pool.clone()).await;
    let token = f.env.token(f.org, &["member"]);

    // The read model is locked for longer than the limit: the list waits
    // for the lock until PostgreSQL cancels its statement.
    let mut lock = f.env.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE rm_customers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let answer = post(&url, &token, LIST).await;
    assert_eq!(answer.status(), 200, "a timeout is no dependency failure");
    assert!(answer.headers().get("retry-after").is_none());
    let body: Value = answer.json().await.unwrap();
    assert_eq!(code(&body), "QUERY_TIMEOUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("time limit")),
        "{body}"
    );
    assert!(
        body["errors"][0]["extensions"]["retryAfterSeconds"].is_null(),
        "{body}"
    );
    assert!(body["data"].is_null(), "{body}");

    // The lock outlives the cancelled statement: the table stays locked
    // and the cancelled read changed nothing.
    let (waiting,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_locks
         WHERE relation = 'rm_customers'::regclass AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&f.env.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 0, "nothing waits for the lock once cancelled");
    lock.commit().await.unwrap();

    // The pool's connections stay usable: the next read answers.
    let answer = post(&url, &token, LIST).await;
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body["data"]["customers"]["edges"][0]["node"]["legalName"], "Alpha Limited",
        "{body}"
    );

    // The limit is on every connection of the pool, as PostgreSQL sees it.
    let (limit,): (String,) = sqlx::query_as("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(limit, "300ms");
}

/// `answer` is a 503 for a database that could not be reached:
/// `Retry-After: 1`, every error `UNAVAILABLE` with `retryAfterSeconds`.
async fn is_unavailable(answer: reqwest::Response) -> Value {
    let body = is_retryable_503(answer, "UNAVAILABLE").await;
    for error in body["errors"].as_array().unwrap() {
        assert!(
            !error["message"]
                .as_str()
                .unwrap_or("")
                .contains("127.0.0.1"),
            "the cause is logged, not shown: {body}"
        );
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_while_the_database_cannot_be_reached_are_unavailable() {
    let f = fixture().await;
    // A pool whose server refuses every connection: PostgreSQL down (a
    // port just freed, which nothing listens on).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&format!(
            "postgres://postgres@127.0.0.1:{closed}/none?sslmode=disable"
        ))
        .unwrap();
    let (url, _stop) = f.env.spawn_query_api_on(down).await;
    let token = f.env.token(f.org, &["member"]);

    // A list (a non-null field: no data at all) and a lookup (a nullable
    // field: no value) are 503.
    let list = is_unavailable(post(&url, &token, LIST).await).await;
    assert!(list["data"].is_null(), "{list}");
    let lookup = is_unavailable(
        post(
            &url,
            &token,
            &format!("{{ customer(id: \"{}\") {{ legalName }} }}", Uuid::now_v7()),
        )
        .await,
    )
    .await;
    assert!(lookup["data"]["customer"].is_null(), "{lookup}");

    // A consistency token cannot be checked either.
    let waited = http()
        .post(format!("{url}/graphql"))
        .bearer_auth(&token)
        .header("x-consistency-token", "1")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    is_unavailable(waited).await;

    // Part of an answer is still an answer: 200, the failed field's error
    // says when to retry.
    let partial = post(
        &url,
        &token,
        &format!(
            "{{ __typename customer(id: \"{}\") {{ legalName }} }}",
            Uuid::now_v7()
        ),
    )
    .await;
    assert_eq!(partial.status(), 200);
    let partial: Value = partial.json().await.unwrap();
    assert_eq!(partial["data"]["__typename"], "Query", "{partial}");
    assert!(partial["data"]["customer"].is_null(), "{partial}");
    assert_eq!(code(&partial), "UNAVAILABLE", "{partial}");
    assert_eq!(partial["errors"][0]["extensions"]["retryAfterSeconds"], 1);
}
