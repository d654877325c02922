//! The media type of an answer, as `Accept` picks it: with
//! `application/graphql-response+json`, a request error (no parse, no
//! validation, no token) is a 4xx without `data`; with `application/json`
//! (or no `Accept`) it is a 200 without `data`; errors in execution are
//! 200 in both.

use pivotal_test_support::http;
use serde_json::{Value, json};

use crate::{code, fixture};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

struct Answer {
    status: u16,
    content_type: String,
    authenticate: Option<String>,
    body: Value,
}

async fn post(url: &str, token: Option<&str>, accept: Option<&str>, body: String) -> Answer {
    let mut request = http()
        .post(format!("{url}/graphql"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: response.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        authenticate: header("www-authenticate"),
        body: response.json().await.unwrap(),
    }
}

fn operation(query: &str) -> String {
    json!({ "query": query }).to_string()
}

#[tokio::test]
async fn request_errors_are_4xx_for_clients_that_accept_the_graphql_media_type() {
    let f = fixture().await;
    let (url, _stop) = f.env.spawn_query_api().await;
    let token = f.env.token(f.org, &["member"]);
    let modern = Some("application/graphql-response+json, application/json;q=0.9");

    // Answered: 200 in either media type, each named.
    let query = operation("{ customers(first: 2) { totalCount } }");
    let got = post(&url, Some(&token), modern, query.clone()).await;
    assert_eq!(
        (got.status, got.content_type.as_str()),
        (200, GRAPHQL_RESPONSE)
    );
    assert_eq!(got.body["data"]["customers"]["totalCount"], 12);
    let legacy = post(&url, Some(&token), Some("application/json"), query.clone()).await;
    assert_eq!(
        (legacy.status, legacy.content_type.as_str()),
        (200, "application/json")
    );
    assert_eq!(legacy.body, got.body);
    let anything = post(&url, Some(&token), None, query.clone()).await;
    assert_eq!(anything.content_type, "application/json");

    // Request errors: nothing executed, no `data`; 4xx only for the
    // GraphQL media type.
    for (token, body, status, expected) in [
        (
            Some(&token),
            operation("{ customers(first: 2) {"),
            400,
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            Some(&token),
            operation("{ nothingHere }"),
            400,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (None, query.clone(), 401, "UNAUTHENTICATED"),
    ] {
        let got = post(&url, token.map(String::as_str), modern, body.clone()).await;
        assert_eq!(got.status, status, "{body}: {}", got.body);
        assert_eq!(got.content_type, GRAPHQL_RESPONSE);
        assert_eq!(code(&got.body), expected);
        assert!(got.body.get("data").is_none(), "{}", got.body);
        assert_eq!(
            got.authenticate.as_deref(),
            (status == 401).then_some("Bearer"),
            "{body}"
        );
        let legacy = post(&url, token.map(String::as_str), None, body.clone()).await;
        assert_eq!(legacy.status, 200, "{body}: {}", legacy.body);
        assert_eq!(legacy.content_type, "application/json");
        assert_eq!(code(&legacy.body), expected);
        assert!(legacy.body.get("data").is_none(), "{}", legacy.body);
    }

    // An error in execution is not a request error: 200 with `data`.
    let got = post(
        &url,
        Some(&token),
        modern,
        operation(r#"{ customer(id: "not-an-id") { id } }"#),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(code(&got.body), "BAD_USER_INPUT");
    assert!(got.body.get("data").is_some(), "{}", got.body);

    // A body that holds no operation keeps its status, in the media type
    // asked for.
    let got = post(&url, Some(&token), modern, "{\"query\": ".to_owned()).await;
    assert_eq!(
        (got.status, got.content_type.as_str()),
        (400, GRAPHQL_RESPONSE)
    );
    assert_eq!(
        got.body["errors"][0]["extensions"]["reason"],
        "malformed_json"
    );
    let got = post(&url, Some(&token), None, "{\"query\": ".to_owned()).await;
    assert_eq!(
        (got.status, got.content_type.as_str()),
        (400, "application/json")
    );
}
