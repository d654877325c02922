//! The query API's two-level cache: coherent across replicas once each has
//! heard of the projection, and answering from PostgreSQL while Redis is
//! down.

use std::time::Duration;

use pivotal_test_support::socket::{self as client, Socket};
use pivotal_test_support::{TestEnv, eventually, http};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{
    create_customer, free_port, rename_customer, spawn_projector, spawn_projector_with,
    spawn_relay, start_redis,
};

async fn name_of(query: &str, token: &str, id: &str) -> Value {
    name_at(query, token, id, None).await
}

/// The customer's name and version, read with `consistency` as the
/// `X-Consistency-Token` header when given.
async fn name_at(query: &str, token: &str, id: &str, consistency: Option<&str>) -> Value {
    let mut request = http()
        .post(format!("{query}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": format!(r#"{{ customer(id: "{id}") {{ legalName version }} }}"#)}));
    if let Some(consistency) = consistency {
        request = request.header("x-consistency-token", consistency);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body}");
    body["data"]["customer"].clone()
}

/// A subscription to customer `id`'s changes on the replica at `query`.
async fn follow(query: &str, token: &str, id: &str) -> Socket {
    let mut socket = client::open(&client::url_of(query), "graphql-transport-ws").await;
    client::init(
        &mut socket,
        json!({"authorization": format!("Bearer {token}")}),
    )
    .await;
    let ack = client::message(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(ack, json!({"type": "connection_ack"}));
    client::subscribe(
        &mut socket,
        "1",
        &format!(r#"subscription {{ customerChanged(id: "{id}") {{ version }} }}"#),
    )
    .await;
    socket
}

/// Waits until `socket` delivers the change to `version`: its replica has
/// then dropped any older cache entry (it does so before telling
/// subscribers).
async fn heard_of(socket: &mut Socket, version: i64) {
    loop {
        let message = client::message(socket, Duration::from_secs(30)).await;
        assert_eq!(message["type"], "next", "{message}");
        if message["payload"]["data"]["customerChanged"]["version"] == version {
            return;
        }
    }
}

async fn projected_version(env: &TestEnv, id: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>(
        "SELECT coalesce(max(version), 0) FROM projection_versions
         WHERE projection = 'customers' AND aggregate_id = $1",
    )
    .bind(id)
    .fetch_one(&env.pool)
    .await
    .unwrap()
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_never_serve_an_entry_older_than_a_change_they_announced() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (a, _qa) = env.spawn_query_api().await;
    let (b, _qb) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let token = env.token(Uuid::now_v7(), &["owner"]);
    let created: Value = http()
        .post(format!("{commands}/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"legalName": "Cached 1", "currency": "NZD"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut feeds = [follow(&a, &token, &id).await, follow(&b, &token, &id).await];
    // Time for both subscriptions to start before the first change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reached = eventually(Duration::from_secs(30), || async {
        (projected_version(&env, &id).await >= 1).then_some(())
    })
    .await;
    assert!(reached.is_some());
    for n in 2..=6 {
        if n > 2 {
            for feed in &mut feeds {
                heard_of(feed, n - 1).await;
            }
        }
        // Both replicas read (and cache) the current version...
        for replica in [&a, &b, &a, &b] {
            let seen = name_of(replica, &token, &id).await;
            assert_eq!(seen["legalName"], format!("Cached {}", n - 1), "{seen}");
        }
        // ...then the customer changes.
        let renamed = http()
            .post(format!("{commands}/v1/customers/{id}/rename"))
            .bearer_auth(&token)
            .json(&json!({"legalName": format!("Cached {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(renamed.status(), 200);
    }
    // Once a replica has told its subscribers of the last change (the
    // projector announces it after its commit), it never serves the old
    // entry: not even once, no retries.
    for feed in &mut feeds {
        heard_of(feed, 6).await;
    }
    use secrecy::ExposeSecret;
    let mut redis = redis::Client::open(env.settings.redis.url.expose_secret())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let version: Option<i64> = redis::cmd("GET")
        .arg(format!(
            "{}:ver:customer:{id}",
            env.settings.redis.key_prefix
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(version, Some(6), "raised with the announcement");
    for replica in [&a, &b] {
        let seen = name_of(replica, &token, &id).await;
        assert_eq!(seen["legalName"], "Cached 6", "{seen}");
        assert_eq!(seen["version"], 6);
    }
    let entries: Vec<String> = redis::cmd("KEYS")
        .arg(format!(
            "{}:cache:customer:*",
            env.settings.redis.key_prefix
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "the entry is cached in Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_keep_answering_while_redis_is_down() {
    let port = free_port();
    let redis = start_redis(port);
    let mut env = TestEnv::new().await;
    env.settings.redis.url = format!("redis://127.0.0.1:{port}").into();
    let (commands, _c) = env.spawn_command_api().await;
    let (query, _q) = env.spawn_query_api().await;
    let token = env.token(Uuid::now_v7(), &["owner"]);
    let created: Value = http()
        .post(format!("{commands}/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"legalName": "Resilient", "currency": "NZD"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    pivotal_test_support::wait_for_horizon(&env.pool).await;
    pivotal_projectors::framework::rebuild(
        &env.pool,
        &pivotal_projectors::customers::CustomersProjection,
        None,
    )
    .await
    .unwrap();
    assert_eq!(name_of(&query, &token, &id).await["legalName"], "Resilient");
    for api in [&commands, &query] {
        let ready = http().get(format!("{api}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    }
    drop(redis);
    for _ in 0..3 {
        assert_eq!(name_of(&query, &token, &id).await["legalName"], "Resilient");
    }
    // The dashboard answers from PostgreSQL.
    let dashboard: Value = http()
        .post(format!("{query}/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "{ dashboard { source customers { status count } } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        dashboard["data"]["dashboard"],
        json!({"source": "DATABASE", "customers": [{"status": "active", "count": 1}]}),
        "{dashboard}"
    );
    // Not ready while a dependency is down, naming it.
    for api in [&commands, &query] {
        let ready = http().get(format!("{api}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        let body: Value = ready.json().await.unwrap();
        assert_eq!(
            body,
            json!({"status": "not_ready", "checks": {"postgres": "ok", "redis": "unavailable"}})
        );
    }
    // Back on the same port: still answering, and ready again.
    let _redis = start_redis(port);
    for _ in 0..3 {
        assert_eq!(name_of(&query, &token, &id).await["legalName"], "Resilient");
    }
    let ready = eventually(Duration::from_secs(20), || async {
        let q = http().get(format!("{query}/readyz")).send().await.ok()?;
        let c = http().get(format!("{commands}/readyz")).send().await.ok()?;
        (q.status() == 200 && c.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready again once Redis is back");
}

/// The window ADR 0014 names, held open: the projector has committed a
/// change but not yet raised the entity's version key in Redis (here it
/// cannot reach Redis at all), so the cache still serves the older entry.
/// A query carrying the change's consistency token, as a header or as the
/// field's argument, reads past the cache and sees the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_with_the_token_sees_the_write_the_cache_has_not_learnt_of() {
    let mut env = TestEnv::new().await;
    env.settings.query_api.consistency_wait_ms = 30_000;
    let (commands, _c) = env.spawn_command_api().await;
    let (query, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let mut cut_off = env.settings.clone();
    cut_off.redis.url = format!("redis://127.0.0.1:{}", free_port()).into();
    let _projector = spawn_projector_with(&env, cut_off);
    let token = env.token(Uuid::now_v7(), &["owner"]);
    let (id, _) = create_customer(&commands, &token, "Window 1").await;
    let projected = eventually(Duration::from_secs(60), || async {
        (projected_version(&env, &id).await >= 1).then_some(())
    })
    .await;
    assert!(projected.is_some());
    // Read (and cached) at version 1.
    for _ in 0..2 {
        assert_eq!(name_of(&query, &token, &id).await["version"], 1);
    }
    let consistency = rename_customer(&commands, &token, &id, "Window 2").await;
    let projected = eventually(Duration::from_secs(60), || async {
        (projected_version(&env, &id).await >= 2).then_some(())
    })
    .await;
    assert!(projected.is_some());
    // The window is open: the read model holds version 2, the cache
    // version 1.
    let (name,): (String,) =
        sqlx::query_as("SELECT legal_name FROM rm_customers WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(name, "Window 2");
    let cached = name_of(&query, &token, &id).await;
    assert_eq!(cached, json!({"legalName": "Window 1", "version": 1}));
    // With the token: the change, both ways of sending it.
    assert_eq!(
        name_at(&query, &token, &id, Some(&consistency)).await,
        json!({"legalName": "Window 2", "version": 2})
    );
    let with_argument = crate::harness::graphql(
        &query,
        &token,
        &format!(
            r#"query($token: ConsistencyToken) {{ customer(id: "{id}", consistencyToken: $token) {{ legalName version }} }}"#
        ),
        json!({"token": consistency}),
    )
    .await;
    assert_eq!(
        with_argument["data"]["customer"],
        json!({"legalName": "Window 2", "version": 2}),
        "{with_argument}"
    );
}
