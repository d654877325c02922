//! Queries in a GET's query string (GraphQL over HTTP): answered as the
//! same operation POSTed is; a mutation or a subscription refused with 405;
//! a query string that holds no operation refused with a reason; paths and
//! methods the API does not serve refused with theirs.

use pivotal_test_support::{http, reqwest};
use serde_json::{Value, json};

use crate::{code, errors_counted, fixture};

struct Answer {
    status: u16,
    allow: Option<String>,
    body: Value,
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn get(url: &str, token: Option<&str>, parameters: &[(&str, &str)]) -> Answer {
    let mut target = reqwest::Url::parse(&format!("{url}/graphql")).unwrap();
    for (name, value) in parameters {
        target.query_pairs_mut().append_pair(name, value);
    }
    let mut request = http().get(target);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    // Every answer to a GET is the caller's own: no cache keeps it.
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("private, no-store")
    );
    Answer {
        status: response.status().as_u16(),
        allow: header(&response, "allow"),
        body: response.json().await.unwrap(),
    }
}

fn reason(answer: &Answer) -> (&str, &str) {
    let error = &answer.body["errors"][0]["extensions"];
    (
        error["code"].as_str().unwrap_or("none"),
        error["reason"].as_str().unwrap_or("none"),
    )
}

#[tokio::test]
async fn a_query_in_a_get_is_answered_as_the_same_query_posted() {
    let f = fixture().await;
    let (url, _stop) = f.env.spawn_query_api().await;
    let token = f.env.token(f.org, &["member"]);
    let before = errors_counted("BAD_REQUEST");

    let query = "{ customers(first: 3, orderBy: {field: DISPLAY_NAME}) { totalCount edges { node { displayName } } } }";
    let got = get(&url, Some(&token), &[("query", query)]).await;
    let posted: Value = http()
        .post(format!("{url}/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body["data"]["customers"]["totalCount"], 12,
        "{}",
        got.body
    );
    assert_eq!(got.body, posted);

    // An operation picked by name from two, with its variables.
    let document = "query Mine { me { id } } \
        query Archived($first: Int!, $filter: CustomerFilter) { \
          customers(first: $first, filter: $filter) { totalCount edges { node { status } } } }";
    let got = get(
        &url,
        Some(&token),
        &[
            ("query", document),
            ("operationName", "Archived"),
            (
                "variables",
                &json!({"first": 10, "filter": {"status": "ARCHIVED"}}).to_string(),
            ),
            ("_", "cache-buster, ignored"),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let customers = &got.body["data"]["customers"];
    assert_eq!(customers["totalCount"], 4, "{}", got.body);
    let edges = customers["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 4);
    assert!(edges.iter().all(|e| e["node"]["status"] == "ARCHIVED"));

    // The same checks as a POST: a token, the document's syntax, the
    // schema.
    let got = get(&url, None, &[("query", query)]).await;
    assert_eq!(code(&got.body), "UNAUTHENTICATED", "{}", got.body);
    assert!(got.body["data"].is_null());
    let got = get(&url, Some(&token), &[("query", "{ customers(first: 1) {")]).await;
    assert_eq!((got.status, code(&got.body)), (200, "GRAPHQL_PARSE_FAILED"));
    let got = get(&url, Some(&token), &[("query", "{ nothingHere }")]).await;
    assert_eq!(
        (got.status, code(&got.body)),
        (200, "GRAPHQL_VALIDATION_FAILED")
    );

    // What a GET may not carry: 405, naming POST.
    for (document, name) in [
        ("mutation { archive }", None),
        ("subscription { changes { id } }", None),
        ("query Q { me { id } } mutation M { archive }", Some("M")),
    ] {
        let mut parameters = vec![("query", document)];
        if let Some(name) = name {
            parameters.push(("operationName", name));
        }
        let got = get(&url, Some(&token), &parameters).await;
        assert_eq!(got.status, 405, "{document}: {}", got.body);
        assert_eq!(got.allow.as_deref(), Some("POST"));
        assert_eq!(reason(&got), ("BAD_REQUEST", "method_not_allowed"));
        assert!(got.body.get("data").is_none_or(Value::is_null));
    }

    // A query string that holds no operation.
    for (parameters, expected) in [
        (
            &[("query", query), ("query", query)][..],
            "not_a_graphql_request",
        ),
        (
            &[("operationName", "Archived")][..],
            "not_a_graphql_request",
        ),
        (
            &[("query", query), ("variables", "{\"first\": ")][..],
            "malformed_json",
        ),
        (
            &[("query", query), ("variables", "[1, 2]")][..],
            "not_a_graphql_request",
        ),
    ] {
        let got = get(&url, Some(&token), parameters).await;
        assert_eq!(got.status, 400, "{parameters:?}: {}", got.body);
        assert_eq!(reason(&got), ("BAD_REQUEST", expected), "{parameters:?}");
    }
    let refused = errors_counted("BAD_REQUEST") - before;
    assert!(refused >= 7.0, "{refused} counted of 7");

    // Without an operation, GraphiQL.
    let page = http()
        .get(format!("{url}/graphql?_=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );
}

/// A path the query API does not serve is 404 `route_not_found`; a route
/// asked with a method it does not take is 405 `method_not_allowed` with
/// the route's own `Allow`; both as GraphQL errors, counted as the other
/// refusals are.
#[tokio::test]
async fn paths_and_methods_not_served_are_refused_with_a_reason() {
    let f = fixture().await;
    let (url, _stop) = f.env.spawn_query_api().await;
    let before = errors_counted("BAD_REQUEST");
    for (method, path, status, expected, allow) in [
        (
            "PUT",
            "/graphql",
            405,
            "method_not_allowed",
            Some("GET,HEAD,POST"),
        ),
        (
            "DELETE",
            "/graphql",
            405,
            "method_not_allowed",
            Some("GET,HEAD,POST"),
        ),
        (
            "POST",
            "/healthz",
            405,
            "method_not_allowed",
            Some("GET,HEAD"),
        ),
        ("GET", "/graphql/nothing", 404, "route_not_found", None),
        ("POST", "/", 404, "route_not_found", None),
    ] {
        let response = http()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{url}{path}"),
            )
            .send()
            .await
            .unwrap();
        let got = Answer {
            status: response.status().as_u16(),
            allow: header(&response, "allow"),
            body: response.json().await.unwrap(),
        };
        assert_eq!(got.status, status, "{method} {path}: {}", got.body);
        assert_eq!(got.allow.as_deref(), allow, "{method} {path}");
        assert_eq!(reason(&got), ("BAD_REQUEST", expected), "{method} {path}");
        assert!(
            got.body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            got.body
        );
    }
    let refused = errors_counted("BAD_REQUEST") - before;
    assert!(refused >= 5.0, "{refused} counted of 5");
}
