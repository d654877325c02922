use pivotal_test_support::{Stopper, TestEnv, http};
use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};
use uuid::Uuid;

/// A running command API for one organization.
pub struct TestApp {
    pub env: TestEnv,
    pub url: String,
    pub org: Uuid,
    pub token: String,
    pub client: reqwest::Client,
    _stop: Stopper,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with adjusted settings.
    pub async fn spawn_with(adjust: impl FnOnce(&mut pivotal_settings::Settings)) -> Self {
        let mut env = TestEnv::new().await;
        adjust(&mut env.settings);
        let (url, stop) = env.spawn_command_api().await;
        let org = Uuid::now_v7();
        let token = env.token(org, &["manager"]);
        Self {
            env,
            url,
            org,
            token,
            client: http(),
            _stop: stop,
        }
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.client
            .put(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    pub async fn create_customer(&self, legal_name: &str) -> Value {
        let response = self
            .post("/v1/customers")
            .json(&json!({"legalName": legal_name, "currency": "NZD", "email": "ap@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    /// The OpenAPI document the API serves.
    pub async fn openapi_document(&self) -> Value {
        self.get("/openapi.json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn event_count(&self) -> i64 {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
            .fetch_one(&self.env.pool)
            .await
            .unwrap();
        count
    }
}

/// Asserts a problem+json answer with `status` and `code`; returns the body.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// The JSON pointers of a validation problem's `errors`, in order.
pub fn error_pointers(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect()
}
