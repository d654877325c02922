//! A quote from draft through approval and sending to acceptance over the
//! real APIs, with its events on Kafka in order and the read model and
//! GraphQL following; another organization sees none of it.

use std::time::Duration;

use pivotal_domain::pricing::MAX_LINES;
use pivotal_domain::quote::MAX_TEXT_CHARS;
use pivotal_domain::rate_card::MAX_ENTRY_NAME_CHARS;
use pivotal_domain::values::Name;
use pivotal_test_support::{TestEnv, eventually, http, json_of, read_topic};
use rdkafka::Message;
use serde_json::{Value, json};

use crate::harness::{assert_quote_counts_match_rows, spawn_projector, spawn_relay};

const PASSWORD: &str = "quote flow passphrase";

struct Client {
    url: String,
}

impl Client {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> Value {
        let mut request = match method {
            "PUT" => http().put(format!("{}{path}", self.url)),
            _ => http().post(format!("{}{path}", self.url)),
        }
        .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// POSTs `body` to `path` and returns the new resource's id.
    async fn create(&self, path: &str, token: &str, body: Value) -> String {
        self.call("POST", path, Some(token), body).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

async fn sign_up(api: &Client, org: &str) -> (String, String) {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let owner = api
        .call(
            "POST",
            "/v1/auth/signup",
            None,
            json!({"organization": {"name": org, "defaultCurrency": "NZD"},
                   "user": {"email": email, "password": PASSWORD, "firstName": "O", "lastName": "Wner"}}),
        )
        .await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let manager_email = format!("m-{email}");
    api.call(
        "POST",
        "/v1/users",
        Some(&owner),
        json!({"email": manager_email, "firstName": "Ma", "lastName": "Nager",
               "roles": ["manager"], "password": PASSWORD}),
    )
    .await;
    let manager = api
        .call(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": manager_email, "password": PASSWORD}),
        )
        .await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    (owner, manager)
}

/// The answer to `query` from the query API at `queries`, or none if it
/// could not be had.
async fn graphql(queries: &str, token: &str, query: &str) -> Option<Value> {
    http()
        .post(format!("{queries}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draft_approval_sent_accepted_reaches_kafka_the_read_model_and_graphql() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (queries, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let api = Client { url: commands };
    let (owner, manager) = sign_up(&api, "Rātā Studio").await;
    let (stranger, _) = sign_up(&api, "Elsewhere Ltd").await;

    let customer = api
        .create(
            "/v1/customers",
            &owner,
            json!({"legalName": "Harbour Bridge Engineering", "currency": "NZD"}),
        )
        .await;
    let quote = api
        .call(
            "POST",
            "/v1/quotes",
            Some(&owner),
            json!({"customerId": customer, "title": "Bridge inspection",
                   "lines": [{"description": "Inspection", "quantity": "2", "unit": "days", "unitPrice": "1500", "taxRate": "15"},
                             {"description": "Report", "quantity": "1", "unitPrice": "400", "taxRate": "0"}]}),
        )
        .await;
    let id = quote["id"].as_str().unwrap().to_owned();
    assert_eq!(quote["pricing"]["total"], "3850.00");
    let path = format!("/v1/quotes/{id}");
    api.call("POST", &format!("{path}/submit"), Some(&owner), json!({}))
        .await;
    api.call(
        "POST",
        &format!("{path}/approve"),
        Some(&manager),
        json!({}),
    )
    .await;
    api.call("POST", &format!("{path}/send"), Some(&owner), json!({}))
        .await;
    api.call(
        "POST",
        &format!("{path}/accept"),
        Some(&owner),
        json!({"by": "Pat Client"}),
    )
    .await;

    // Kafka: every event of the quote, in version order, keyed by its id.
    let topic = env.topic("quote");
    let messages = read_topic(
        &env.settings.kafka.brokers,
        &topic,
        5,
        Duration::from_secs(60),
    );
    let mine: Vec<Value> = messages
        .iter()
        .filter(|m| m.key() == Some(id.as_bytes()))
        .map(json_of)
        .collect();
    let summary: Vec<(u64, String)> = mine
        .iter()
        .map(|m| {
            let label = match m["type"].as_str().unwrap() {
                "quote.status.changed" => m["data"]["newStatus"].as_str().unwrap().to_owned(),
                other => other.to_owned(),
            };
            (m["version"].as_u64().unwrap(), label)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "quote.created".to_owned()),
            (2, "pending_approval".to_owned()),
            (3, "approved".to_owned()),
            (4, "sent".to_owned()),
            (5, "accepted".to_owned()),
        ]
    );
    assert_eq!(mine[0]["data"]["quoteNumber"], quote["number"]);
    assert_eq!(mine[0]["data"]["totalAmount"], "3850.00");

    // The read model and GraphQL follow.
    let query = format!(
        r#"{{ quote(id: "{id}") {{ number status revision totals {{ total tax net }} taxes {{ rate tax }}
              lines {{ description unit total }} statusHistory {{ from to customerContact }} pdfPath }}
           quotes(filter: {{status: ACCEPTED}}) {{ totalCount }} }}"#
    );
    // The quote and the count are read by two statements (ADR 0040):
    // wait for an answer in which both have seen the last batch.
    let answer = eventually(Duration::from_secs(30), || async {
        let body = graphql(&queries, &owner, &query).await?;
        (body["data"]["quote"]["status"] == "ACCEPTED" && body["data"]["quotes"]["totalCount"] == 1)
            .then_some(body)
    })
    .await
    .expect("the read model reached the accepted quote, counted once");
    let q = &answer["data"]["quote"];
    assert_eq!(q["number"], quote["number"]);
    assert_eq!(q["totals"]["total"], "3850.00");
    assert_eq!(q["totals"]["tax"], "450.00");
    assert_eq!(
        q["taxes"],
        json!([{"rate": "0", "tax": "0.00"}, {"rate": "15", "tax": "450.00"}])
    );
    assert_eq!(q["lines"][0]["unit"], "days");
    let history: Vec<&str> = q["statusHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        ["pending_approval", "approved", "sent", "accepted"]
    );
    assert_eq!(q["statusHistory"][3]["customerContact"], "Pat Client");

    // Another organization: 404 on REST, null and nothing in GraphQL.
    let foreign = http()
        .get(format!("{}{path}", api.url))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    let pdf = http()
        .get(format!("{}{path}/pdf", api.url))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.status(), 404);
    let body: Value = http()
        .post(format!("{queries}/graphql"))
        .bearer_auth(&stranger)
        .json(&json!({"query": format!(r#"{{ quote(id: "{id}") {{ id }} quotes {{ totalCount }} }}"#)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["quote"], Value::Null);
    assert_eq!(body["data"]["quotes"]["totalCount"], 0);

    // The counts kept beside the rows (ADR 0041) equal the rows, and
    // again after a rebuild; a quote created after it is counted by the
    // rebuilt table's triggers.
    assert_quote_counts_match_rows(&env).await;
    let report = pivotal_projectors::framework::rebuild(
        &env.pool,
        &pivotal_projectors::quotes::QuotesProjection,
        None,
    )
    .await
    .unwrap();
    assert!(report.events >= 5, "{report:?}");
    assert_quote_counts_match_rows(&env).await;
    let second = api
        .create(
            "/v1/quotes",
            &owner,
            json!({"customerId": customer, "title": "Second inspection",
                   "lines": [{"description": "Inspection", "quantity": "1", "unitPrice": "1500"}]}),
        )
        .await;
    let totals = r#"{ all: quotes { totalCount } drafts: quotes(filter: {status: DRAFT}) { totalCount }
                      accepted: quotes(filter: {status: ACCEPTED}) { totalCount } }"#;
    // The three totals are three statements, each with its own snapshot
    // (ADR 0040), so one answer can hold some from before the second
    // quote's batch and some from after it: wait for an answer from after.
    let answer = eventually(Duration::from_secs(30), || async {
        let body = graphql(&queries, &owner, totals).await?;
        (body["data"]["drafts"]["totalCount"] == 1 && body["data"]["all"]["totalCount"] == 2)
            .then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("the second quote {second} was counted"));
    assert_eq!(answer["data"]["accepted"]["totalCount"], 1, "{answer}");
    assert_quote_counts_match_rows(&env).await;

    // Those totals are read from the kept counts: a count moved by hand
    // shows in them, not in a total the rows are counted for (a search).
    sqlx::query("UPDATE rm_quote_counts SET quotes = quotes + 100 WHERE status = 'accepted'")
        .execute(&env.pool)
        .await
        .unwrap();
    let body = graphql(
        &queries,
        &owner,
        r#"{ kept: quotes(filter: {status: ACCEPTED}) { totalCount }
            counted: quotes(filter: {status: ACCEPTED, search: "bridge"}) { totalCount } }"#,
    )
    .await
    .unwrap();
    assert_eq!(body["data"]["kept"]["totalCount"], 101, "{body}");
    assert_eq!(body["data"]["counted"]["totalCount"], 1, "{body}");
}

/// The largest quote a client can send (500 lines, every field at its
/// bound, in the characters that take the most bytes) makes an event of
/// about 1 MB: it reaches its topic and its read model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_largest_quote_reaches_kafka_and_its_read_model() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let api = Client { url: commands };
    let (owner, _) = sign_up(&api, "Kauri Works").await;
    let customer = api
        .create(
            "/v1/customers",
            &owner,
            json!({"legalName": "Large Orders Limited", "currency": "NZD"}),
        )
        .await;
    let name = "\u{1D11E}".repeat(Name::MAX_CHARS);
    let card = api
        .create("/v1/rate-cards", &owner, json!({"name": name}))
        .await;
    let entry = uuid::Uuid::now_v7().to_string();
    api.call(
        "PUT",
        &format!("/v1/rate-cards/{card}/entries/{entry}"),
        Some(&owner),
        json!({"name": "\u{1D11E}".repeat(MAX_ENTRY_NAME_CHARS), "unit": "hours", "rates": [
            {"currency": "NZD", "amount": "180.00", "effectiveFrom": "2026-01-01"}]}),
    )
    .await;
    let text = "\u{1}".repeat(MAX_TEXT_CHARS);
    let lines: Vec<Value> = (0..MAX_LINES)
        .map(|_| {
            json!({"description": name, "quantity": "999999999.9999", "rateEntryId": entry, "discount": {"type": "percent", "value": "12.3456"},
                   "taxRate": "15.1234"})
        })
        .collect();
    let quote = api
        .call(
            "POST",
            "/v1/quotes",
            Some(&owner),
            json!({"customerId": customer, "title": name, "description": text, "terms": text,
                   "notes": text, "rateCardId": card, "lines": lines}),
        )
        .await;
    let id = quote["id"].as_str().unwrap().to_owned();

    let messages = pivotal_test_support::read_topic_until(
        &env.settings.kafka.brokers,
        &env.topic("quote"),
        Duration::from_secs(60),
        |messages| messages.iter().any(|m| m.key() == Some(id.as_bytes())),
    );
    let record = messages
        .iter()
        .find(|m| m.key() == Some(id.as_bytes()))
        .expect("the quote's event is on its topic");
    let size = record.payload().map_or(0, <[u8]>::len);
    assert!(size > 950_000, "{size} bytes");
    let event = json_of(record);
    assert_eq!(event["type"], "quote.created");
    assert_eq!(
        event["data"]["content"]["lines"].as_array().map(Vec::len),
        Some(MAX_LINES)
    );

    let projected = eventually(Duration::from_secs(60), || async {
        sqlx::query_as::<_, (i64,)>("SELECT version FROM rm_quotes WHERE id = $1")
            .bind(uuid::Uuid::parse_str(&id).unwrap())
            .fetch_optional(&env.pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(projected, Some((1,)));
}
