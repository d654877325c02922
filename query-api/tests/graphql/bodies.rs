//! Request bodies that hold no GraphQL operation: refused before anything
//! executes, each with a status, `BAD_REQUEST` and a reason, and counted.

use std::num::NonZeroU64;
use std::time::Duration;

use pivotal_test_support::{TestEnv, break_off, http, trickle};
use serde_json::Value;
use uuid::Uuid;

use crate::errors_counted;

fn refusal(answer: &Value) -> (&str, &str) {
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{answer}");
    assert!(answer.get("data").is_none_or(Value::is_null), "{answer}");
    (
        errors[0]["extensions"]["code"].as_str().unwrap(),
        errors[0]["extensions"]["reason"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn a_body_that_holds_no_operation_is_refused_with_a_status_and_a_reason() {
    let mut env = TestEnv::new().await;
    env.settings.query_api.body_limit_bytes = 4096;
    env.settings.query_api.body_timeout_ms = NonZeroU64::new(400).unwrap();
    let (url, _stop) = env.spawn_query_api().await;
    let token = env.token(Uuid::now_v7(), &["member"]);
    let before = errors_counted("BAD_REQUEST");
    let operation = r#"{"query": "{ __typename }"}"#;
    let large = format!(
        r#"{{"query": "{{ __typename }}", "variables": {{"pad": "{}"}}}}"#,
        "x".repeat(8192)
    );
    let cases: [(Option<&str>, &str, u16, &str); 9] = [
        (
            Some("application/json"),
            r#"{"query": "#,
            400,
            "malformed_json",
        ),
        (Some("application/json"), "", 400, "malformed_json"),
        (
            Some("application/json"),
            r#"[{"query": "{ __typename }"}]"#,
            400,
            "batch_not_supported",
        ),
        (
            Some("application/json"),
            r#"{"query": 7}"#,
            400,
            "not_a_graphql_request",
        ),
        (Some("text/plain"), operation, 415, "unsupported_media_type"),
        (
            Some("multipart/form-data; boundary=b"),
            "--b\r\ncontent-disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--b--\r\n",
            415,
            "unsupported_media_type",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "query=%7B__typename%7D",
            415,
            "unsupported_media_type",
        ),
        (None, operation, 415, "unsupported_media_type"),
        (Some("application/json"), &large, 413, "payload_too_large"),
    ];
    let client = http();
    for (content_type, body, status, reason) in cases {
        let mut request = client
            .post(format!("{url}/graphql"))
            .bearer_auth(&token)
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{content_type:?} {body:.40}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            refusal(&answer),
            ("BAD_REQUEST", reason),
            "{content_type:?} {body:.40}"
        );
    }

    // A body sent a byte every 100 ms is answered once its 400 ms are up.
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        operation.len()
    );
    let trickled = trickle(
        &url,
        &head,
        operation.as_bytes(),
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(trickled.answer.status, 408, "{trickled:?}");
    let body: Value = serde_json::from_str(&trickled.answer.body).unwrap();
    assert_eq!(refusal(&body), ("BAD_REQUEST", "request_timeout"));
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("within 400 ms"),
        "{body}"
    );
    assert!(
        trickled.sent < operation.len(),
        "answered only once complete"
    );
    // The rest of the body is not read: the connection is closed, so that
    // its bytes are never taken for a next request.
    assert!(trickled.closed, "the connection stayed open after the 408");

    // A body the client broke off half way is unreadable.
    let answer = break_off(&url, &head, &operation.as_bytes()[..operation.len() / 2]).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(refusal(&body), ("BAD_REQUEST", "unreadable_body"));
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("the request body could not be read"),
        "{body}"
    );

    // Every refusal counted; a well-formed operation still answered.
    let refused = errors_counted("BAD_REQUEST") - before;
    assert!(refused >= 11.0, "{refused} counted of 11");
    let answer: Value = client
        .post(format!("{url}/graphql"))
        .bearer_auth(&token)
        .header("content-type", "application/json; charset=utf-8")
        .body(operation)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["data"]["__typename"], "Query", "{answer}");
}
