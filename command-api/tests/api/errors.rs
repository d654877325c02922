//! Every error status: a problem+json body with a stable code, and nothing appended.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem};

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
    ];
    for (body, pointer, code) in cases {
        let response = app.post("/v1/customers").json(&body).send().await.unwrap();
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
        assert_eq!(problem["errors"][0]["code"], code, "{problem}");
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
