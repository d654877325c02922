//! The Redis dashboard read model: exact figures, the same from Redis as
//! from PostgreSQL, unchanged by a full redelivery of the topics, and
//! refilled after its keys are flushed.

use std::time::Duration;

use pivotal_test_support::{TestEnv, eventually, http};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{add_user, sign_up, spawn_projector, spawn_relay};

const DASHBOARD: &str = "{ dashboard(recent: 5) {
  source
  quotes { status count totals { currency amount } }
  openQuotes { count totals { currency amount } }
  customers { status count }
  users { status count }
  recentlyChanged { type id }
} }";

/// The dashboard, under `consistency` when given (a consistency token).
async fn dashboard(query_api: &str, token: &str, consistency: Option<&str>) -> Value {
    let mut request = http()
        .post(format!("{query_api}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": DASHBOARD }));
    if let Some(position) = consistency {
        request = request.header("X-Consistency-Token", position);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body}");
    body["data"]["dashboard"].clone()
}

/// Where the dashboard's figures came from, with the token given as the
/// field's argument rather than the request's header.
async fn source_under_argument(query_api: &str, token: &str, position: &str) -> String {
    let query = format!("{{ dashboard(consistencyToken: \"{position}\") {{ source }} }}");
    let body: Value = post(
        format!("{query_api}/graphql"),
        token,
        json!({ "query": query }),
    )
    .await
    .json()
    .await
    .unwrap();
    body["data"]["dashboard"]["source"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

fn without_source(mut figures: Value) -> Value {
    figures.as_object_mut().unwrap().remove("source");
    figures
}

async fn post(url: String, token: &str, body: Value) -> reqwest::Response {
    http()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn flush_dashboard(env: &TestEnv) {
    let mut redis = redis::Client::open(env.settings.redis.url.expose_secret())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:dash:*", env.settings.redis.key_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_figures_are_exact_from_redis_and_from_postgres() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (query_api, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let token = sign_up(&commands, "Dashboard Org").await;
    let approver = add_user(&commands, &token, "Mana", "Ger", &["manager"]).await;
    let mut customers = Vec::new();
    for name in ["Dash One", "Dash Two", "Dash Three"] {
        let created: Value = post(
            format!("{commands}/v1/customers"),
            &token,
            json!({"legalName": name, "currency": "NZD"}),
        )
        .await
        .json()
        .await
        .unwrap();
        customers.push(created["id"].as_str().unwrap().to_owned());
    }
    let archived = post(
        format!("{commands}/v1/customers/{}/archive", customers[2]),
        &token,
        json!({"reason": "closed"}),
    )
    .await;
    assert_eq!(archived.status(), 200, "{}", archived.text().await.unwrap());
    let mut quotes = Vec::new();
    for (price, currency) in [("100", "NZD"), ("250.50", "NZD"), ("1000", "AUD")] {
        let created: Value = post(
            format!("{commands}/v1/quotes"),
            &token,
            json!({"customerId": customers[0], "title": "Dash work", "currency": currency,
                   "lines": [{"description": "Work", "quantity": "1", "unitPrice": price, "taxRate": "0"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
        quotes.push(created["id"].as_str().expect("quote created").to_owned());
    }
    // One quote goes through to accepted (no longer open).
    let path = format!("{commands}/v1/quotes/{}", quotes[0]);
    for (step, who) in [("submit", &token), ("approve", &approver), ("send", &token)] {
        let response = post(format!("{path}/{step}"), who, json!({})).await;
        assert!(
            response.status().is_success(),
            "{step}: {}",
            response.text().await.unwrap()
        );
    }
    let accepted = post(format!("{path}/accept"), &token, json!({"by": "Pat"})).await;
    let token_position = accepted
        .headers()
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a consistency token");
    assert!(accepted.status().is_success());

    let expected = json!({
        "quotes": [
            {"status": "accepted", "count": 1, "totals": [{"currency": "NZD", "amount": "100.00"}]},
            {"status": "draft", "count": 2, "totals": [
                {"currency": "AUD", "amount": "1000.00"}, {"currency": "NZD", "amount": "250.50"}]}
        ],
        "openQuotes": {"count": 2, "totals": [
            {"currency": "AUD", "amount": "1000.00"}, {"currency": "NZD", "amount": "250.50"}]},
        "customers": [{"status": "active", "count": 2}, {"status": "archived", "count": 1}],
        "users": [{"status": "active", "count": 2}]
    });
    let figures_of = |d: &Value| {
        let mut d = without_source(d.clone());
        d.as_object_mut().unwrap().remove("recentlyChanged");
        d
    };
    // Redis, then PostgreSQL: the same. The token covers the accepted
    // quote's own events (ADR 0012); the other records' events travel on
    // other partitions and may still be on their way, so the complete
    // figures are waited for.
    let from_redis = eventually(Duration::from_secs(30), || async {
        let d = dashboard(&query_api, &token, None).await;
        (d["source"] == "REDIS" && figures_of(&d) == expected).then_some(d)
    })
    .await;
    let Some(from_redis) = from_redis else {
        let last = dashboard(&query_api, &token, None).await;
        panic!("the Redis figures never matched: {last}");
    };
    assert_eq!(from_redis["recentlyChanged"][0]["id"], quotes[0].as_str());
    // Under the token, Redis answers: it holds the accepted quote at the
    // accepting event's version (ADR 0061).
    let under_token = dashboard(&query_api, &token, Some(&token_position)).await;
    assert_eq!(under_token, from_redis);
    // While Redis holds the quote only at an earlier version (the
    // projector commits the read models first, then writes Redis), the
    // token's figures come from PostgreSQL, the same.
    let mut redis = redis::Client::open(env.settings.redis.url.expose_secret())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let prefix = &env.settings.redis.key_prefix;
    let generation: String = redis::cmd("GET")
        .arg(pivotal_projectors::dashboard::current_key(prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    let held = pivotal_projectors::dashboard::contribution_key(
        prefix,
        &generation,
        "quote",
        quotes[0].parse().unwrap(),
    );
    let version: i64 = redis::cmd("HGET")
        .arg(&held)
        .arg("v")
        .query_async(&mut redis)
        .await
        .unwrap();
    let set_version = |version: i64| {
        let (mut redis, held) = (redis.clone(), held.clone());
        async move {
            redis::cmd("HSET")
                .arg(held)
                .arg("v")
                .arg(version)
                .query_async::<()>(&mut redis)
                .await
                .unwrap();
        }
    };
    set_version(version - 1).await;
    let from_postgres = dashboard(&query_api, &token, Some(&token_position)).await;
    assert_eq!(from_postgres["source"], "DATABASE");
    assert_eq!(
        without_source(from_postgres.clone()),
        without_source(from_redis.clone())
    );
    // The token as an argument of the field, as well as the header.
    let argument = source_under_argument(&query_api, &token, &token_position).await;
    assert_eq!(argument, "DATABASE");
    set_version(version).await;
    let argument = source_under_argument(&query_api, &token, &token_position).await;
    assert_eq!(argument, "REDIS");
    // A token whose event changed none of the records the figures count
    // (the organization renamed) leaves them to Redis.
    let renamed = post(
        format!("{commands}/v1/organization/rename"),
        &token,
        json!({"name": "Dashboard Org Renamed"}),
    )
    .await;
    assert_eq!(renamed.status(), 200, "{}", renamed.text().await.unwrap());
    let renamed_position = renamed
        .headers()
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a consistency token");
    let under_rename = dashboard(&query_api, &token, Some(&renamed_position)).await;
    assert_eq!(under_rename, from_redis);

    // Every event delivered again (a second consumer group from the start):
    // versions make it a no-op.
    let mut settings = env.settings.clone();
    settings.projector.group_id = format!("replay-{}", Uuid::now_v7());
    let second = tokio::spawn(pivotal_projectors::framework::run(
        settings,
        env.pool.clone(),
        tokio::time::sleep(Duration::from_secs(10)),
    ));
    second.await.unwrap().unwrap();
    let after_replay = dashboard(&query_api, &token, None).await;
    assert_eq!(after_replay["source"], "REDIS");
    assert_eq!(figures_of(&after_replay), expected);

    // Keys flushed: answered from PostgreSQL at once, then refilled.
    flush_dashboard(&env).await;
    let flushed = dashboard(&query_api, &token, None).await;
    assert_eq!(flushed["source"], "DATABASE");
    assert_eq!(figures_of(&flushed), expected);
    let refilled = eventually(Duration::from_secs(30), || async {
        let d = dashboard(&query_api, &token, None).await;
        (d["source"] == "REDIS").then_some(d)
    })
    .await
    .expect("the projector refills the dashboard");
    assert_eq!(figures_of(&refilled), expected);

    // A rebuild into a new generation gives the same figures.
    let mut redis = redis::Client::open(env.settings.redis.url.expose_secret())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let report = pivotal_projectors::dashboard::rebuild(
        &env.pool,
        &mut redis,
        &env.settings.redis.key_prefix,
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.records, 8, "3 customers, 3 quotes, 2 users");
    let rebuilt = dashboard(&query_api, &token, None).await;
    assert_eq!(rebuilt["source"], "REDIS");
    assert_eq!(figures_of(&rebuilt), expected);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:dash:*:s:*", env.settings.redis.key_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 8, "old generations removed: {keys:?}");

    // Another organization sees none of it.
    let stranger = dashboard(&query_api, &env.token(Uuid::now_v7(), &["owner"]), None).await;
    assert_eq!(stranger["quotes"], json!([]));
    assert_eq!(stranger["recentlyChanged"], json!([]));
}
