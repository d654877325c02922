//! Read-your-writes: a query that sends back a command's consistency token
//! always sees that command's effect; when the read models cannot catch up
//! in time the answer is `STALE_READ`, never stale data. The token travels
//! as the `X-Consistency-Token` header or as a root field's
//! `consistencyToken` argument; both are held to the same.

use pivotal_test_support::{TestEnv, graphql_answer as graphql, http};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{post_accepted, sign_up, spawn_projector, spawn_relay};

/// `query` with `$token` bound to `consistency`: the token as an argument.
async fn graphql_with_argument(url: &str, token: &str, consistency: &str, query: &str) -> Value {
    crate::harness::graphql(url, token, query, json!({"token": consistency})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_with_the_token_always_sees_the_write() {
    let mut env = TestEnv::new().await;
    // Generous under a loaded machine: the property is that the answer is
    // never older than the write, however long the projector takes.
    env.settings.query_api.consistency_wait_ms = 30_000;
    let (commands, _c) = env.spawn_command_api().await;
    let (queries, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let org = Uuid::now_v7();
    let token = env.token(org, &["owner"]);
    let created = http()
        .post(format!("{commands}/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"legalName": "Version 0", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    let created_token = created.headers()["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The first answer also waits for the projector to join its group.
    let first = graphql(
        &queries,
        &token,
        Some(&created_token),
        &format!(r#"{{ customer(id: "{id}") {{ legalName }} }}"#),
    )
    .await;
    assert_eq!(
        first["data"]["customer"]["legalName"], "Version 0",
        "{first}"
    );
    for n in 1..=20 {
        // A read without the token may fill the caches with the old name.
        graphql(
            &queries,
            &token,
            None,
            &format!(r#"{{ customer(id: "{id}") {{ legalName }} }}"#),
        )
        .await;
        let name = format!("Version {n}");
        let renamed = http()
            .post(format!("{commands}/v1/customers/{id}/rename"))
            .bearer_auth(&token)
            .json(&json!({"legalName": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(renamed.status(), 200);
        let consistency = renamed.headers()["x-consistency-token"]
            .to_str()
            .unwrap()
            .to_owned();
        // Every other time as the argument, which passes the caches by.
        let answer = if n % 2 == 0 {
            graphql(
                &queries,
                &token,
                Some(&consistency),
                &format!(r#"{{ customer(id: "{id}") {{ legalName }} }}"#),
            )
            .await
        } else {
            graphql_with_argument(
                &queries,
                &token,
                &consistency,
                &format!(
                    r#"query($token: ConsistencyToken) {{ customer(id: "{id}", consistencyToken: $token) {{ legalName }} }}"#
                ),
            )
            .await
        };
        assert_eq!(answer["data"]["customer"]["legalName"], name, "{answer}");
    }

    // Someone else's token, or garbage, is bad input.
    let stranger = env.token(Uuid::now_v7(), &["owner"]);
    for (who, value) in [(&stranger, "1"), (&token, "not-a-position"), (&token, "-5")] {
        let answer = graphql(&queries, who, Some(value), "{ customers { totalCount } }").await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{value}: {answer}"
        );
        let answer = graphql_with_argument(
            &queries,
            who,
            value,
            "query($token: ConsistencyToken) { customers(consistencyToken: $token) { totalCount } }",
        )
        .await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{value} as the argument: {answer}"
        );
        assert_eq!(
            answer["errors"][0]["path"],
            json!(["customers"]),
            "{answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_projector_the_answer_is_stale_read_not_old_data() {
    let mut env = TestEnv::new().await;
    env.settings.query_api.consistency_wait_ms = 300;
    let (commands, _c) = env.spawn_command_api().await;
    let (queries, _q) = env.spawn_query_api().await;
    let org = Uuid::now_v7();
    let token = env.token(org, &["owner"]);
    let created = http()
        .post(format!("{commands}/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"legalName": "Unprojected", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    let consistency = created.headers()["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer = graphql(
        &queries,
        &token,
        Some(&consistency),
        "{ customers { totalCount } }",
    )
    .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "STALE_READ",
        "{answer}"
    );
    assert!(answer.get("data").is_none_or(Value::is_null));
    // The same as the argument of one field: that field fails, the other
    // answers from the read model as it is.
    let answer = graphql_with_argument(
        &queries,
        &token,
        &consistency,
        "query($token: ConsistencyToken) { dashboard(consistencyToken: $token) { source } me { displayName } }",
    )
    .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "STALE_READ",
        "{answer}"
    );
    assert_eq!(
        answer["errors"][0]["path"],
        json!(["dashboard"]),
        "{answer}"
    );
    // Without the token the (stale) read model answers as usual.
    let answer = graphql(&queries, &token, None, "{ customers { totalCount } }").await;
    assert_eq!(answer["data"]["customers"]["totalCount"], 0);
}

fn search_query(text: &str, types: &str) -> String {
    format!(
        r#"{{ search(query: "{text}", types: [{types}]) {{ edges {{ node {{ type id }} }} }} }}"#
    )
}

fn hit_ids(answer: &Value) -> Vec<String> {
    answer["data"]["search"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no search result: {answer}"))
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn post(url: &str, token: &str, body: Value) -> (Value, String) {
    let response = post_accepted(url, token, &body).await;
    let consistency = response.headers()["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.json().await.unwrap(), consistency)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_with_the_token_waits_for_the_index() {
    let mut env = TestEnv::new().await;
    env.settings.query_api.consistency_wait_ms = 30_000;
    let (commands, _c) = env.spawn_command_api().await;
    let (queries, _q) = env.spawn_query_api().await;
    // A second replica that waits no more than half a second.
    env.settings.query_api.consistency_wait_ms = 500;
    let (impatient, _i) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    // Quotes need an organization (its numbering and defaults).
    let token = sign_up(&commands, "Read Your Searches").await;

    // Each answer is the first search after the command: no retries.
    let (customer, consistency) = post(
        &format!("{commands}/v1/customers"),
        &token,
        json!({"legalName": "Kereru Glass", "currency": "NZD"}),
    )
    .await;
    let customer = customer["id"].as_str().unwrap().to_owned();
    let answer = graphql(
        &queries,
        &token,
        Some(&consistency),
        &search_query("kereru", "CUSTOMER"),
    )
    .await;
    assert_eq!(hit_ids(&answer), [customer.as_str()], "{answer}");

    let (quote, consistency) = post(
        &format!("{commands}/v1/quotes"),
        &token,
        json!({"customerId": customer, "title": "Atrium skylights",
               "lines": [{"description": "Fitting", "quantity": "2", "unit": "days", "unitPrice": "900", "taxRate": "15"}]}),
    )
    .await;
    let quote = quote["id"].as_str().unwrap().to_owned();
    // This time the token is the search's argument.
    let answer = graphql_with_argument(
        &queries,
        &token,
        &consistency,
        r#"query($token: ConsistencyToken) { search(query: "skylights", types: [QUOTE], consistencyToken: $token) { edges { node { type id } } } }"#,
    )
    .await;
    assert_eq!(hit_ids(&answer), [quote.as_str()], "{answer}");

    // A customer's rename re-indexes its quotes (they carry its name): the
    // token of the rename waits for those too.
    let (_, consistency) = post(
        &format!("{commands}/v1/customers/{customer}/rename"),
        &token,
        json!({"legalName": "Tui Glazing"}),
    )
    .await;
    let answer = graphql(
        &queries,
        &token,
        Some(&consistency),
        &search_query("tui", "QUOTE"),
    )
    .await;
    assert_eq!(hit_ids(&answer), [quote.as_str()], "{answer}");

    // With the indexer held back, the PostgreSQL read models answer the
    // token but a search fails with STALE_READ rather than miss the write
    // (on the replica that waits half a second).
    let mut lock = <sqlx::PgConnection as sqlx::Connection>::connect(&env.database_url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext('pivotal-search-index'))")
        .execute(&mut lock)
        .await
        .unwrap();
    let (_, consistency) = post(
        &format!("{commands}/v1/customers/{customer}/rename"),
        &token,
        json!({"legalName": "Huia Windows"}),
    )
    .await;
    // (The patient replica: the projector may be slow on a loaded machine.)
    let by_id = graphql(
        &queries,
        &token,
        Some(&consistency),
        &format!(r#"{{ customer(id: "{customer}") {{ legalName }} }}"#),
    )
    .await;
    assert_eq!(
        by_id["data"]["customer"]["legalName"], "Huia Windows",
        "{by_id}"
    );
    let stale = graphql(
        &impatient,
        &token,
        Some(&consistency),
        &search_query("huia", "CUSTOMER"),
    )
    .await;
    assert_eq!(
        stale["errors"][0]["extensions"]["code"], "STALE_READ",
        "{stale}"
    );
    assert!(stale["data"].is_null(), "{stale}");
    let stale = graphql_with_argument(
        &impatient,
        &token,
        &consistency,
        r#"query($token: ConsistencyToken) { search(query: "huia", types: [CUSTOMER], consistencyToken: $token) { totalCount } }"#,
    )
    .await;
    assert_eq!(
        stale["errors"][0]["extensions"]["code"], "STALE_READ",
        "{stale}"
    );
    sqlx::query("SELECT pg_advisory_unlock(hashtext('pivotal-search-index'))")
        .execute(&mut lock)
        .await
        .unwrap();
    let answer = graphql(
        &queries,
        &token,
        Some(&consistency),
        &search_query("huia", "CUSTOMER QUOTE"),
    )
    .await;
    let mut found = hit_ids(&answer);
    found.sort();
    let mut expected = vec![customer.clone(), quote.clone()];
    expected.sort();
    assert_eq!(found, expected, "{answer}");
}
