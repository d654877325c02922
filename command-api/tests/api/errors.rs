//! Every error status: a problem+json body with a stable code, and nothing appended.

use std::num::NonZeroU64;
use std::time::Duration;

use pivotal_test_support::{TestEnv, break_off, http, trickle};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, error_pointers};

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    let response = app
        .post("/v1/customers")
        .header("content-type", "application/json")
        .body(r#"{"legalName": "Acme", "currency": "#)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed_json").await;
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn missing_garbled_expired_and_foreign_tokens_are_401() {
    let app = TestApp::spawn().await;
    let body = json!({"legalName": "Acme", "currency": "NZD"});
    let url = format!("{}/v1/customers", app.url);

    let response = app.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_problem(response, 401, "token_missing").await;

    let response = app
        .client
        .post(&url)
        .bearer_auth("not.a.jwt")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "token_malformed").await;

    let mut claims = app
        .env
        .issuer
        .claims(&pivotal_auth::TokenRequest::for_roles(
            Uuid::now_v7(),
            app.org,
            &["owner"],
        ));
    claims.exp = chrono::Utc::now().timestamp() - 600;
    let expired = app.env.issuer.sign(&claims).unwrap();
    let response = app
        .client
        .post(&url)
        .bearer_auth(expired)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "token_expired").await;

    let mut claims = app
        .env
        .issuer
        .claims(&pivotal_auth::TokenRequest::for_roles(
            Uuid::now_v7(),
            app.org,
            &["owner"],
        ));
    claims.iss = "someone-else".into();
    let foreign = app.env.issuer.sign(&claims).unwrap();
    let response = app
        .client
        .post(&url)
        .bearer_auth(foreign)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "token_invalid").await;

    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_token_without_write_permission_is_403() {
    let app = TestApp::spawn().await;
    let member = app.env.token(app.org, &["member"]);
    let response = app
        .client
        .post(format!("{}/v1/customers", app.url))
        .bearer_auth(member)
        .json(&json!({"legalName": "Acme", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "forbidden").await;
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn invalid_fields_are_422_with_a_pointer_for_each() {
    let app = TestApp::spawn().await;
    let response = app
        .post("/v1/customers")
        .json(&json!({
            "legalName": "   ",
            "email": "not-an-email",
            "phone": "12345",
            "currency": "XXY",
            "paymentTermsDays": 400,
            "billingAddress": {"line1": "1 Main St", "country": "Atlantis"},
            "tags": ["ok", ""]
        }))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422, "validation_failed").await;
    let pointers: Vec<(&str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["pointer"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    for expected in [
        ("/legalName", "required"),
        ("/email", "invalid_email"),
        ("/phone", "invalid_phone"),
        ("/currency", "invalid_currency"),
        ("/paymentTermsDays", "out_of_range"),
        ("/billingAddress/city", "required"),
        ("/billingAddress/country", "invalid_country"),
        ("/tags/1", "invalid_tag"),
    ] {
        assert!(
            pointers.contains(&expected),
            "{expected:?} missing from {pointers:?}"
        );
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn wrong_shapes_are_422_with_the_field_named() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"currency": "NZD"}), "/legalName", "required"),
        (
            json!({"legalName": "A", "currency": "NZD", "colour": "red"}),
            "/colour",
            "unknown_field",
        ),
        (
            json!({"legalName": 42, "currency": "NZD"}),
            "/legalName",
            "invalid_type",
        ),
        (
            json!({"legalName": "A", "currency": "NZD", "tags": ["a", 7]}),
            "/tags/1",
            "invalid_type",
        ),
        // JSON Schema's integers include 30.0, not 30.5.
        (
            json!({"legalName": "A", "currency": "NZD", "paymentTermsDays": 30.5}),
            "/paymentTermsDays",
            "invalid_type",
        ),
    ];
    for (body, pointer, code) in cases {
        let response = app.post("/v1/customers").json(&body).send().await.unwrap();
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
        assert_eq!(problem["errors"][0]["code"], code, "{problem}");
    }
    // A body that is not an object, even an array of the fields in order
    // (which serde alone would read as one), is refused as a whole.
    for body in [
        json!([
            "Array Limited",
            "Array",
            null,
            null,
            null,
            null,
            "NZD",
            null,
            []
        ]),
        json!(null),
        json!("Acme"),
        json!(42),
    ] {
        let response = app.post("/v1/customers").json(&body).send().await.unwrap();
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(
            problem["errors"],
            json!([{"pointer": "", "code": "invalid_type",
                    "message": "the body must be a JSON object"}]),
            "{body}: {problem}"
        );
    }
    assert_eq!(app.event_count().await, 0);
    // An integer written with a zero fraction is that integer.
    let response = app
        .post("/v1/customers")
        .json(&json!({"legalName": "A", "currency": "NZD", "paymentTermsDays": 30.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer: serde_json::Value = app
        .get(&format!("/v1/customers/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(customer["paymentTermsDays"], 30, "{customer}");
}

#[tokio::test]
async fn nul_characters_are_refused_wherever_they_are() {
    let app = TestApp::spawn().await;
    let response = app
        .post("/v1/customers")
        .json(&json!({"legalName": "Nul Ltd", "currency": "NZD",
                      "tags": ["ok", "b\u{0}d"], "billingAddress": {"line1": "1 Queen St\u{0}",
                      "city": "Auckland", "country": "NZ"}}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 422, "validation_failed").await;
    let pointers = error_pointers(&problem);
    assert_eq!(pointers, ["/billingAddress/line1", "/tags/1"], "{problem}");
    assert!(
        problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["code"] == "invalid_characters"),
        "{problem}"
    );
    // In a free-form object's key too.
    let response = app
        .put("/v1/users/01a25025-8fa2-7351-9fd5-750075de4dba/profile")
        .json(&json!({"firstName": "A", "lastName": "B", "preferences": {"th\u{0}eme": "dark"}}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(
        problem["errors"][0]["pointer"], "/preferences/th\u{0}eme",
        "{problem}"
    );
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn decimals_are_read_only_from_strings() {
    let app = TestApp::spawn().await;
    let customer = app.create_customer("Decimal Ltd").await;
    let customer = customer["id"].as_str().unwrap();
    let line = |field: &str, value: serde_json::Value| {
        let mut line = json!({"description": "Design", "quantity": "2", "unitPrice": "150"});
        line[field] = value;
        json!({"customerId": customer, "title": "Site", "lines": [line]})
    };
    for (body, pointer) in [
        (line("quantity", json!(2)), "/lines/0/quantity"),
        (line("unitPrice", json!(150.5)), "/lines/0/unitPrice"),
        (line("taxRate", json!(15)), "/lines/0/taxRate"),
        (line("quantity", json!("1e3")), "/lines/0/quantity"),
        (line("quantity", json!(" 2")), "/lines/0/quantity"),
        (
            line("discount", json!({"type": "percent", "value": 10})),
            "/lines/0/discount/value",
        ),
    ] {
        let response = app.post("/v1/quotes").json(&body).send().await.unwrap();
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
        assert_eq!(problem["errors"][0]["code"], "invalid_type", "{problem}");
    }
    // Refused before anything is loaded or written (the quotes tests
    // create quotes from the same lines written as strings).
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn nested_objects_are_read_only_from_objects() {
    let app = TestApp::spawn().await;
    let customer = Uuid::now_v7();
    let sequence = "invalid type: sequence, expected a JSON object";
    // serde alone reads each of these arrays as the struct of its fields
    // in order (a discount as its tag and value).
    let cases = [
        (
            "/v1/customers",
            json!({"legalName": "A", "currency": "NZD",
                   "billingAddress": ["1 Queen St", null, "Auckland", null, "1010", "NZ"]}),
            "/billingAddress",
            sequence,
        ),
        (
            "/v1/customers",
            json!({"legalName": "A", "currency": "NZD", "billingAddress": "1 Queen St"}),
            "/billingAddress",
            "invalid type: string \"1 Queen St\", expected a JSON object",
        ),
        (
            "/v1/quotes",
            json!({"customerId": customer, "title": "Q",
                   "lines": [["Design", "2", "hours", "150"]]}),
            "/lines/0",
            sequence,
        ),
        (
            "/v1/quotes",
            json!({"customerId": customer, "title": "Q", "discount": ["percent", "10"],
                   "lines": [{"description": "Design", "quantity": "2", "unitPrice": "150"}]}),
            "/discount",
            sequence,
        ),
        (
            "/v1/quotes",
            json!({"customerId": customer, "title": "Q",
                   "lines": [{"description": "Design", "quantity": "2", "unitPrice": "150",
                              "discount": null}, null]}),
            "/lines/1",
            "invalid type: null, expected a JSON object",
        ),
        (
            "/v1/auth/signup",
            json!({"organization": ["Acme", "NZD"],
                   "user": {"email": "a@example.com", "password": "correct horse battery",
                            "firstName": "A", "lastName": "B"}}),
            "/organization",
            sequence,
        ),
    ];
    for (path, body, pointer, message) in cases {
        let response = app.post(path).json(&body).send().await.unwrap();
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(
            problem["errors"],
            json!([{"pointer": pointer, "code": "invalid_type", "message": message}]),
            "{path} {body}: {problem}"
        );
    }
    let puts = [
        (
            "/v1/organization/settings",
            json!({"defaultCurrency": "NZD", "timeZone": "UTC", "fiscalYearStartMonth": 4,
                   "tax": [null, 1500, false]}),
            "/tax",
        ),
        (
            "/v1/roles/sales-lead",
            json!({"name": "Sales lead", "grants": [["customers", "read"]]}),
            "/grants/0",
        ),
        (
            "/v1/roles/sales-lead",
            json!({"name": "Sales lead",
                   "grants": [{"resource": "customers", "action": "read",
                               "conditions": [["ownerId", "eq", "me"]]}]}),
            "/grants/0/conditions/0",
        ),
    ];
    for (path, body, pointer) in puts {
        let response = app.put(path).json(&body).send().await.unwrap();
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(
            problem["errors"],
            json!([{"pointer": pointer, "code": "invalid_type", "message": sequence}]),
            "{path} {body}: {problem}"
        );
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn unknown_and_foreign_ids_are_404() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();

    let response = app
        .get(&format!("/v1/customers/{}", Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "customer_not_found").await;
    let response = app.get("/v1/customers/not-a-uuid").send().await.unwrap();
    assert_problem(response, 404, "customer_not_found").await;

    // Another organization sees nothing of it, reading or writing.
    let stranger = app.env.token(Uuid::now_v7(), &["owner"]);
    let response = app
        .client
        .get(format!("{}/v1/customers/{id}", app.url))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "customer_not_found").await;
    let response = app
        .client
        .post(format!("{}/v1/customers/{id}/rename", app.url))
        .bearer_auth(&stranger)
        .json(&json!({"legalName": "Stolen"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "customer_not_found").await;
    let response = app
        .client
        .post(format!("{}/v1/customers/{id}/archive", app.url))
        .bearer_auth(&stranger)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "customer_not_found").await;
    let response = app.get("/v1/nothing-here").send().await.unwrap();
    assert_problem(response, 404, "route_not_found").await;
    // A route asked with a method it does not take: 405, with the methods
    // it does take.
    let response = app
        .client
        .delete(format!("{}/v1/customers", app.url))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    let body = assert_problem(response, 405, "method_not_allowed").await;
    assert_eq!(
        body["detail"],
        "DELETE is not a method of this route; the Allow header lists the ones it takes"
    );
    assert_eq!(body["instance"], "/v1/customers");
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn stale_if_match_is_409_with_the_current_version() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();
    let rename = |name: &str, version: &str| {
        app.post(&format!("/v1/customers/{id}/rename"))
            .header("if-match", version)
            .json(&json!({"legalName": name}))
    };
    let response = rename("Acme One", "\"1\"").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = rename("Acme Two", "\"1\"").send().await.unwrap();
    assert_eq!(response.headers()["etag"], "\"2\"");
    let problem = assert_problem(response, 409, "version_conflict").await;
    assert_eq!(problem["currentVersion"], 2);
    let response = rename("Acme Two", "soon").send().await.unwrap();
    assert_problem(response, 400, "invalid_header").await;
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn illegal_transitions_are_409() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();
    let response = app
        .post(&format!("/v1/customers/{id}/restore"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "customer_not_archived").await;
    let response = app
        .post(&format!("/v1/customers/{id}/archive"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .post(&format!("/v1/customers/{id}/archive"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "customer_already_archived").await;
    let response = app
        .put(&format!("/v1/customers/{id}/tags"))
        .json(&json!({"tags": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "customer_archived").await;
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn oversized_bodies_are_413_and_wrong_media_types_415() {
    let app = TestApp::spawn().await;
    let huge = json!({"legalName": "A", "currency": "NZD", "tags": ["x".repeat(1024 * 1024)]});
    let response = app.post("/v1/customers").json(&huge).send().await.unwrap();
    assert_problem(response, 413, "payload_too_large").await;

    let response = app
        .post("/v1/customers")
        .header("content-type", "text/plain")
        .body(r#"{"legalName": "A", "currency": "NZD"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
    let response = app
        .post("/v1/customers")
        .body(r#"{"legalName": "A", "currency": "NZD"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_bad_correlation_id_is_400() {
    let app = TestApp::spawn().await;
    let response = app
        .post("/v1/customers")
        .header("x-correlation-id", "x".repeat(200))
        .json(&json!({"legalName": "A", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    let problem: Value = assert_problem(response, 400, "invalid_header").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("X-Correlation-Id")
    );
    assert_eq!(app.event_count().await, 0);
}

/// The request line and headers of a customer's creation with a JSON body
/// of `length` bytes, for tests that send the body themselves.
fn create_customer_head(token: &str, length: usize) -> String {
    format!(
        "POST /v1/customers HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_body_trickled_past_the_deadline_is_408_and_appends_nothing() {
    let app = TestApp::spawn_with(|s| {
        s.command_api.body_timeout_ms = NonZeroU64::new(400).unwrap();
    })
    .await;
    let body = br#"{"legalName": "Acme Trickle", "currency": "NZD"}"#;
    let head = create_customer_head(&app.token, body.len());
    let trickled = trickle(&app.url, &head, body, Duration::from_millis(100)).await;
    assert_eq!(trickled.answer.status, 408, "{trickled:?}");
    assert_eq!(trickled.answer.content_type, "application/problem+json");
    let problem: Value = serde_json::from_str(&trickled.answer.body).unwrap();
    assert_eq!(problem["code"], "request_timeout", "{problem}");
    assert_eq!(problem["status"], 408);
    assert_eq!(problem["instance"], "/v1/customers");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("within 400 ms"),
        "{problem}"
    );
    assert!(
        trickled.sent < body.len(),
        "answered only once the whole body was sent"
    );
    // The rest of the body is not read: the connection is closed, so that
    // its bytes are never taken for a next request.
    assert!(trickled.closed, "the connection stayed open after the 408");
    assert_eq!(app.event_count().await, 0);

    // The same body sent in time is taken, and its connection kept for
    // the next request.
    let trickled = trickle(&app.url, &head, body, Duration::from_millis(1)).await;
    assert_eq!(trickled.answer.status, 201, "{trickled:?}");
    assert!(
        !trickled.closed,
        "a connection whose request was read whole was closed"
    );
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn a_body_broken_off_is_400_unreadable_body_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let body = br#"{"legalName": "Acme Broken", "currency": "NZD"}"#;
    let head = create_customer_head(&app.token, body.len());
    // Half of the body, then the client's side of the connection ends.
    let answer = break_off(&app.url, &head, &body[..body.len() / 2]).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.content_type, "application/problem+json");
    let problem: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(problem["code"], "unreadable_body", "{problem}");
    assert_eq!(problem["title"], "Unreadable body");
    assert_eq!(problem["instance"], "/v1/customers");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("the request body could not be read"),
        "{problem}"
    );
    assert_eq!(app.event_count().await, 0);

    // The whole body is taken.
    let answer = app
        .post("/v1/customers")
        .header("content-type", "application/json")
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn a_command_whose_statement_outlasts_the_statement_timeout_is_503_and_stores_nothing() {
    let mut env = TestEnv::new().await;
    env.settings.command_api.statement_timeout_ms = NonZeroU64::new(300).unwrap();
    let pool = pivotal_command_api::connect(&env.settings).await.unwrap();
    let (url, _stop) = env.spawn_command_api_on(pool).await;
    let token = env.token(Uuid::now_v7(), &["manager"]);
    let client = http();
    let created: Value = client
        .post(format!("{url}/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"legalName": "Stalled Ltd", "currency": "NZD"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let stored = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    assert_eq!(stored().await, 1);
    let tag = async || {
        client
            .put(format!("{url}/v1/customers/{id}/tags"))
            .bearer_auth(&token)
            .json(&json!({"tags": ["stalled"]}))
            .send()
            .await
            .unwrap()
    };

    // Another transaction keeps every writer out of the event store (reads
    // go on): the append waits, and PostgreSQL cancels it at the timeout.
    // The lock is only let go once the answer is in.
    let mut blocker = env.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let refused = tag().await;
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_problem(refused, 503, "service_unavailable").await;
    blocker.rollback().await.unwrap();
    assert_eq!(stored().await, 1, "a cancelled append stored nothing");

    // Once the store answers again, the same command is taken.
    let accepted = tag().await;
    assert_eq!(accepted.status(), 200);
    assert_eq!(stored().await, 2);
}

/// Every operation of the served OpenAPI document, sent each kind of bad
/// input it can be sent, answers with a status the document names for it,
/// as problem+json, and stores nothing: no token (an operation under the
/// bearer scheme), a body in another content type, a body that is not JSON
/// and one of the wrong shape (an operation that takes a body), ids that
/// name nothing (an operation with a path) and an If-Match that is no ETag.
/// A client generated from the document meets no status it was not told
/// of.
#[tokio::test]
async fn every_operation_documents_the_status_of_each_bad_input() {
    let app = TestApp::spawn().await;
    let document = app.openapi_document().await;
    let events = app.event_count().await;
    let mut checked = 0;
    for (template, item) in document["paths"].as_object().unwrap() {
        // Every path parameter a fresh id: it names nothing.
        let path = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    Uuid::now_v7().to_string()
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().unwrap() {
            let documented = &operation["responses"];
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            let takes_body = operation.get("requestBody").is_some();
            let if_match = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["in"] == "header" && p["name"] == "If-Match");
            let in_path = template.contains('{');
            let request = |token: bool| {
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let request = app.client.request(method, format!("{}{path}", app.url));
                if token {
                    request.bearer_auth(&app.token)
                } else {
                    request
                }
            };
            let mut cases: Vec<(&str, reqwest::RequestBuilder)> = Vec::new();
            if secured {
                cases.push(("no token", request(false)));
            }
            if takes_body {
                cases.push((
                    "text/plain",
                    request(true)
                        .header("content-type", "text/plain")
                        .body("hello"),
                ));
                cases.push((
                    "not JSON",
                    request(true)
                        .header("content-type", "application/json")
                        .body("{\"a\": "),
                ));
                cases.push((
                    "wrong shape",
                    request(true).json(&json!({"noSuchField": [1, 2, 3]})),
                ));
            }
            // An empty object where the operation takes a body, so that
            // what is refused is the path or the header.
            let with_empty_body = |request: reqwest::RequestBuilder| {
                if takes_body {
                    request.json(&json!({}))
                } else {
                    request
                }
            };
            if in_path {
                cases.push(("ids naming nothing", with_empty_body(request(true))));
            }
            if if_match {
                cases.push((
                    "If-Match no ETag",
                    with_empty_body(request(true).header("if-match", "n*B")),
                ));
            }
            for (case, request) in cases {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let what = format!(
                    "{} {template}, {case}: {status} {body}",
                    method.to_uppercase()
                );
                assert!(
                    documented[status.to_string()].is_object(),
                    "undocumented status: {what}"
                );
                assert!(status >= 400, "bad input accepted: {what}");
                assert_eq!(
                    content_type.as_deref(),
                    Some("application/problem+json"),
                    "{what}"
                );
                assert!(body["code"].is_string(), "{what}");
                checked += 1;
            }
        }
    }
    // The document's every operation, not a handful.
    assert!(checked > 150, "{checked} requests");
    assert_eq!(app.event_count().await, events, "bad input stored events");
}
