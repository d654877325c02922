//! Search through the whole pipeline: commands, relay, Kafka, the search
//! projection and indexer, the engine the settings select (the embedded one
//! here; Elasticsearch when `PIVOTAL_TEST_ELASTICSEARCH_URL` is set) and
//! GraphQL `search`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pivotal_test_support::{TestEnv, eventually, http};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{add_user, sign_up, spawn_projector, spawn_relay};

const SEARCH: &str = r#"query($q: String!, $types: [SearchType!], $filter: SearchFilter, $first: Int, $after: String) {
  search(query: $q, types: $types, filter: $filter, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { type id title status version highlights { field snippet } } }
  }
}"#;

async fn search(query_api: &str, token: &str, variables: Value) -> Value {
    crate::harness::graphql(query_api, token, SEARCH, variables).await
}

fn titles(body: &Value) -> Vec<String> {
    body["data"]["search"]["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .map(|e| e["node"]["title"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn create_customer(commands: &str, token: &str, name: &str, email: &str) -> String {
    let created: Value = http()
        .post(format!("{commands}/v1/customers"))
        .bearer_auth(token)
        .json(&if email.is_empty() {
            json!({"legalName": name, "currency": "NZD"})
        } else {
            json!({"legalName": name, "email": email, "currency": "NZD"})
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"].as_str().expect("customer created").to_owned()
}

/// Waits until `query` finds exactly `expected` (titles, any order).
async fn until_found(query_api: &str, token: &str, query: &str, expected: &[&str]) -> Value {
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    let found = eventually(Duration::from_secs(30), || async {
        let body = search(query_api, token, json!({ "q": query })).await;
        let mut got = titles(&body);
        got.sort();
        (got == expected).then_some(body)
    })
    .await;
    match found {
        Some(body) => body,
        None => panic!(
            "search {query:?} never returned {expected:?}; last: {}",
            search(query_api, token, json!({ "q": query })).await
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_finds_typos_and_prefixes_within_the_organization() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (query_api, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let token = sign_up(&commands, "Search One").await;
    let other_token = sign_up(&commands, "Search Two").await;
    add_user(&commands, &token, "Mereana", "Harbourne", &["member"]).await;
    let harbour =
        create_customer(&commands, &token, "Harbour Lights Ltd", "ana@harbour.test").await;
    create_customer(&commands, &token, "Kauri Timber", "orders@kauri.test").await;
    create_customer(
        &commands,
        &other_token,
        "Harbour Freight",
        "hi@freight.test",
    )
    .await;
    let quote: Value = http()
        .post(format!("{commands}/v1/quotes"))
        .bearer_auth(&token)
        .json(&json!({"customerId": harbour, "title": "Wharf lighting upgrade",
               "lines": [{"description": "Design", "quantity": "3", "unit": "days", "unitPrice": "1200", "taxRate": "15"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let number = quote["number"]
        .as_str()
        .unwrap_or_else(|| panic!("quote not created: {quote}"))
        .to_owned();

    let quote_title = format!("{number} Wharf lighting upgrade");

    // A typo (the quote matches through its customer's name), then a
    // prefix; the other organization's customer never appears.
    let body = until_found(
        &query_api,
        &token,
        "harbor",
        &["Harbour Lights Ltd", quote_title.as_str()],
    )
    .await;
    let edges = body["data"]["search"]["edges"].as_array().unwrap();
    assert_eq!(
        edges[0]["node"]["type"], "CUSTOMER",
        "a match in the title ranks first: {body}"
    );
    let hit = &edges[0]["node"];
    assert_eq!(hit["type"], "CUSTOMER");
    assert_eq!(hit["id"], harbour.as_str());
    assert_eq!(hit["status"], "active");
    let highlights = hit["highlights"].as_array().unwrap();
    assert!(
        highlights
            .iter()
            .any(|h| h["field"] == "title" && h["snippet"] == "<em>Harbour</em> Lights Ltd"),
        "{highlights:?}"
    );
    until_found(&query_api, &token, "kau", &["Kauri Timber"]).await;
    until_found(&query_api, &other_token, "harbour", &["Harbour Freight"]).await;
    // Users by name (a typo), customers and users by the same word.
    until_found(&query_api, &token, "mereanna", &["Mereana Harbourne"]).await;
    let users = search(
        &query_api,
        &token,
        json!({ "q": "harbour", "types": ["USER"] }),
    )
    .await;
    assert_eq!(
        titles(&users),
        ["Mereana Harbourne"],
        "prefix of the last word: {users}"
    );
    // Quotes: by number and by their customer's name, filtered by type.
    until_found(&query_api, &token, "wharf", &[quote_title.as_str()]).await;
    let by_type = search(
        &query_api,
        &token,
        json!({ "q": "harbour", "types": ["QUOTE"] }),
    )
    .await;
    assert_eq!(titles(&by_type), [quote_title.as_str()], "{by_type}");
    let by_status = search(
        &query_api,
        &token,
        json!({ "q": "harbour", "types": ["CUSTOMER", "QUOTE"], "filter": { "statuses": ["draft"] } }),
    )
    .await;
    assert_eq!(titles(&by_status), [quote_title.as_str()], "{by_status}");

    // A rename replaces the document: the old name is gone.
    let renamed = http()
        .post(format!("{commands}/v1/customers/{harbour}/rename"))
        .bearer_auth(&token)
        .json(&json!({"legalName": "Lighthouse Partners", "displayName": "Lighthouse Partners"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    // The quote's document follows its customer's new name.
    let body = until_found(
        &query_api,
        &token,
        "lighthouse",
        &["Lighthouse Partners", quote_title.as_str()],
    )
    .await;
    let quote_hit = body["data"]["search"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["type"] == "QUOTE")
        .unwrap();
    assert_eq!(
        quote_hit["node"]["version"], quote["version"],
        "the quote's own version: {body}"
    );
    let old = search(
        &query_api,
        &token,
        json!({ "q": "lights", "types": ["CUSTOMER"] }),
    )
    .await;
    assert!(titles(&old).is_empty(), "{old}");
    // Nor does the quote match its customer's old name any more.
    let old = search(
        &query_api,
        &token,
        json!({ "q": "harbour", "types": ["QUOTE"] }),
    )
    .await;
    assert!(titles(&old).is_empty(), "{old}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_searches_get_specific_errors() {
    let env = TestEnv::new().await;
    let (query_api, _q) = env.spawn_query_api().await;
    let org = Uuid::now_v7();
    let token = env.token(org, &["owner"]);
    let cases = [
        (json!({ "q": " -- " }), "BAD_USER_INPUT", "letter or digit"),
        (
            json!({ "q": "x".repeat(201) }),
            "BAD_USER_INPUT",
            "at most 200",
        ),
        (
            json!({ "q": "a", "first": 101 }),
            "BAD_USER_INPUT",
            "first must be at most",
        ),
        (
            json!({ "q": "a", "types": [] }),
            "BAD_USER_INPUT",
            "at least one type",
        ),
        (
            json!({ "q": "a", "after": "not-a-cursor" }),
            "BAD_USER_INPUT",
            "",
        ),
        (
            json!({ "q": "a", "filter": { "createdFrom": "2026-02-01T00:00:00Z", "createdTo": "2026-01-01T00:00:00Z" } }),
            "BAD_USER_INPUT",
            "createdFrom (2026-02-01T00:00:00Z) must be before createdTo (2026-01-01T00:00:00Z)",
        ),
    ];
    for (variables, code, message) in cases {
        let body = search(&query_api, &token, variables.clone()).await;
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], code, "{variables}: {body}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{variables}: {body}"
        );
    }
    // Types the caller may not read are refused, naming the permission.
    let auditor = env.token(org, &["auditor"]);
    let no_token = http()
        .post(format!("{query_api}/graphql"))
        .json(&json!({ "query": SEARCH, "variables": { "q": "a" } }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        no_token["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    let body = search(&query_api, &auditor, json!({ "q": "a" })).await;
    assert!(
        body.get("errors").is_none(),
        "an auditor reads everything: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_switches_indexes_while_searches_keep_answering() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (query_api, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let org = Uuid::now_v7();
    let token = env.token(org, &["owner"]);
    for i in 0..30 {
        create_customer(&commands, &token, &format!("Rebuild Client {i}"), "").await;
    }
    let body = eventually(Duration::from_secs(30), || async {
        let body = search(&query_api, &token, json!({ "q": "rebuild", "first": 5 })).await;
        (body["data"]["search"]["totalCount"] == 30).then_some(body)
    })
    .await
    .expect("30 customers indexed");
    assert_eq!(body["data"]["search"]["pageInfo"]["hasNextPage"], true);

    // Searches run without pause while the index is rebuilt and switched.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let searcher = {
        let (stop, answered, query_api, token) = (
            stop.clone(),
            answered.clone(),
            query_api.clone(),
            token.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = search(&query_api, &token, json!({ "q": "rebuild", "first": 1 })).await;
                assert!(body.get("errors").is_none(), "{body}");
                assert_eq!(body["data"]["search"]["totalCount"], 30, "{body}");
                answered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let engine = pivotal_search::open(&env.settings.search).unwrap();
    let before = engine.live_index().await.unwrap();
    let report = pivotal_projectors::search::rebuild_index(&env.pool, engine.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(report.documents, 30);
    assert_ne!(before.as_deref(), Some(report.index.as_str()));
    assert_eq!(
        engine.live_index().await.unwrap().as_deref(),
        Some(report.index.as_str())
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    searcher.await.unwrap();
    assert!(answered.load(Ordering::Relaxed) > 0);

    // Changes after the switch go to the new index.
    create_customer(&commands, &token, "Rebuild Client late", "").await;
    let all = eventually(Duration::from_secs(30), || async {
        let body = search(&query_api, &token, json!({ "q": "rebuild" })).await;
        (body["data"]["search"]["totalCount"] == 31).then_some(())
    })
    .await;
    assert!(all.is_some(), "the indexer writes into the new index");
    // Pages walk every hit once.
    let mut seen = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let body = search(
            &query_api,
            &token,
            json!({ "q": "rebuild", "first": 10, "after": after }),
        )
        .await;
        let connection = &body["data"]["search"];
        for edge in connection["edges"].as_array().unwrap() {
            assert!(seen.insert(edge["node"]["id"].as_str().unwrap().to_owned()));
        }
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
    assert_eq!(seen.len(), 31);
}
