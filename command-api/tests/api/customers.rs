use pivotal_event_store::log;
use serde_json::{Value, json};

use crate::helpers::TestApp;

#[tokio::test]
async fn create_returns_version_position_etag_and_location() {
    let app = TestApp::spawn().await;
    let response = app
        .post("/v1/customers")
        .header("x-correlation-id", "corr-create-1")
        .header("user-agent", "api-tests/1.0")
        .json(&json!({
            "legalName": "  Kowhai Consulting Limited ",
            "displayName": "Kowhai",
            "email": "Accounts@Kowhai.Example.com",
            "phone": "+64 9 555 0100",
            "billingAddress": {"line1": "12 Queen Street", "city": "Auckland", "country": "nz"},
            "taxNumber": "123-456-789",
            "currency": "nzd",
            "paymentTermsDays": 30,
            "tags": ["VIP", "vip", "retail"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert_eq!(response.headers()["x-correlation-id"], "corr-create-1");
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["version"], 1);
    assert!(body["position"].as_i64().unwrap() > 0);
    assert_eq!(body["events"][0]["type"], "customer.created");

    // The write side reads back the normalized values.
    let response = app
        .get(&format!("/v1/customers/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let customer: Value = response.json().await.unwrap();
    assert_eq!(customer["legalName"], "Kowhai Consulting Limited");
    assert_eq!(customer["email"], "Accounts@kowhai.example.com");
    assert_eq!(customer["phone"], "+6495550100");
    assert_eq!(customer["currency"], "NZD");
    assert_eq!(customer["billingAddress"]["country"], "NZ");
    assert_eq!(customer["tags"], json!(["vip", "retail"]));
    assert_eq!(customer["status"], "active");

    // The stored event carries the seed's envelope.
    let history = log::aggregate_history(&app.env.pool, "customer", &id)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    let envelope = history[0].envelope().unwrap();
    assert_eq!(envelope.event_type, "customer.created");
    assert_eq!(envelope.aggregate_type, "customer");
    assert_eq!(envelope.organization_id, app.org);
    assert_eq!(envelope.version, 1);
    assert_eq!(envelope.metadata.correlation_id, "corr-create-1");
    assert_eq!(envelope.metadata.source, "command-api");
    assert_eq!(
        envelope.metadata.user_agent.as_deref(),
        Some("api-tests/1.0")
    );
    assert_eq!(envelope.metadata.ip_address.as_deref(), Some("127.0.0.1"));
    assert!(envelope.metadata.causation_id.is_some());
    assert_eq!(envelope.id.get_version_num(), 7, "event ids are UUIDv7");
    let data: Value = serde_json::from_str(envelope.data.get()).unwrap();
    assert_eq!(data["legalName"], "Kowhai Consulting Limited");
}

#[tokio::test]
async fn correlation_id_is_generated_when_absent() {
    let app = TestApp::spawn().await;
    let response = app
        .post("/v1/customers")
        .json(&json!({"legalName": "Acme", "currency": "USD"}))
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&generated).unwrap().get_version_num(),
        7
    );
    let body: Value = response.json().await.unwrap();
    let history = log::aggregate_history(&app.env.pool, "customer", body["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        history[0].envelope().unwrap().metadata.correlation_id,
        generated
    );
}

#[tokio::test]
async fn full_lifecycle_appends_one_event_per_change() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme Limited").await;
    let id = created["id"].as_str().unwrap();
    let steps: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (
            app.post(&format!("/v1/customers/{id}/rename"))
                .json(&json!({"legalName": "Acme Group Limited", "displayName": "Acme"})),
            "customer.renamed",
        ),
        (
            app.put(&format!("/v1/customers/{id}/contact"))
                .json(&json!({"email": "billing@acme.example.com", "phone": "+1 415 555 0100"})),
            "customer.contact.changed",
        ),
        (
            app.put(&format!("/v1/customers/{id}/billing")).json(&json!({
                "billingAddress": {"line1": "1 Market St", "city": "San Francisco", "region": "CA", "postalCode": "94105", "country": "US"},
                "taxNumber": "94-1234567", "currency": "USD", "paymentTermsDays": 45
            })),
            "customer.billing.changed",
        ),
        (
            app.put(&format!("/v1/customers/{id}/tags")).json(&json!({"tags": ["enterprise"]})),
            "customer.tags.changed",
        ),
        (
            app.post(&format!("/v1/customers/{id}/archive")).json(&json!({"reason": "merged"})),
            "customer.archived",
        ),
        (
            app.post(&format!("/v1/customers/{id}/restore")).json(&json!({})),
            "customer.restored",
        ),
    ];
    let mut last_position = created["position"].as_i64().unwrap();
    for (version, (request, event_type)) in (2..).zip(steps) {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["etag"],
            format!("\"{version}\"").as_str()
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["version"], version);
        assert_eq!(body["events"][0]["type"], event_type);
        let position = body["position"].as_i64().unwrap();
        assert!(position > last_position);
        last_position = position;
    }
    let customer: Value = app
        .get(&format!("/v1/customers/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(customer["displayName"], "Acme");
    assert_eq!(customer["billingAddress"]["postalCode"], "94105");
    assert_eq!(customer["paymentTermsDays"], 45);
    assert_eq!(customer["status"], "active");
    assert_eq!(customer["version"], 7);
    assert_eq!(app.event_count().await, 7);
}

#[tokio::test]
async fn a_command_that_changes_nothing_appends_nothing() {
    let app = TestApp::spawn().await;
    let created = app.create_customer("Acme").await;
    let id = created["id"].as_str().unwrap();
    let response = app
        .post(&format!("/v1/customers/{id}/rename"))
        .json(&json!({"legalName": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["position"], Value::Null);
    assert_eq!(body["events"], json!([]));
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn openapi_document_and_docs_page_are_served() {
    let app = TestApp::spawn().await;
    let doc = app.openapi_document().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/v1/customers"]["post"].is_object());
    // Quotes and rate cards are documented with the rest.
    for (path, method) in [
        ("/v1/rate-cards", "post"),
        ("/v1/rate-cards/{id}", "get"),
        ("/v1/quotes", "post"),
        ("/v1/quotes/{id}", "get"),
        ("/v1/quotes/{id}/approve", "post"),
        ("/v1/quotes/{id}/pdf", "get"),
        ("/v1/quote-templates", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    // Every operation names the 503 any may give; those that take a body,
    // the 408 of a body that came too late.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            assert!(
                responses["503"]["headers"]["Retry-After"].is_object(),
                "{method} {path}"
            );
            assert_eq!(
                responses["408"].is_object(),
                operation.get("requestBody").is_some(),
                "{method} {path}"
            );
        }
    }
    let page = app
        .client
        .get(format!("{}/docs/", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("swagger")
    );
    // The UI is served from the binary and points at the local document.
    let init = app
        .client
        .get(format!("{}/docs/swagger-initializer.js", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    assert!(!init.contains("https://"), "{init}");
    let health = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
