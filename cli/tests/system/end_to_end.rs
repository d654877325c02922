use std::time::Duration;

use pivotal_event_store::log;
use pivotal_test_support::{TestEnv, eventually, http, json_of, read_topic};
use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{spawn_projector, spawn_relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_reaches_the_store_the_topic_the_read_model_and_graphql() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (queries, _q) = env.spawn_query_api().await;
    let (_relay, _) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let org = Uuid::now_v7();
    let token = env.token(org, &["owner"]);
    let client = http();

    let created: Value = client
        .post(format!("{commands}/v1/customers"))
        .bearer_auth(&token)
        .header("x-correlation-id", "e2e-1")
        .json(&json!({"legalName": "Kowhai Consulting Limited", "currency": "NZD", "tags": ["consulting"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let renamed = client
        .post(format!("{commands}/v1/customers/{id}/rename"))
        .bearer_auth(&token)
        .header("if-match", "\"1\"")
        .json(&json!({"legalName": "Kowhai Group Limited", "displayName": "Kowhai Group"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    let archived = client
        .post(format!("{commands}/v1/customers/{id}/archive"))
        .bearer_auth(&token)
        .json(&json!({"reason": "merged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(archived.status(), 200);

    // 1. The store.
    let history = log::aggregate_history(&env.pool, "customer", &id)
        .await
        .unwrap();
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["customer.created", "customer.renamed", "customer.archived"]
    );

    // 2. The topic, read by a plain consumer.
    let brokers = env.settings.kafka.brokers.clone();
    let topic = env.topic("customer");
    let messages = tokio::task::spawn_blocking(move || {
        read_topic(&brokers, &topic, 3, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(messages.len(), 3);
    for (message, stored) in messages.iter().zip(&history) {
        assert_eq!(message.key(), Some(id.as_bytes()));
        let value = json_of(message);
        assert_eq!(value["id"], stored.event_id.to_string());
        assert_eq!(value["type"], stored.event_type);
        assert_eq!(value["aggregateType"], "customer");
        assert_eq!(value["aggregateId"], id);
        assert_eq!(value["organizationId"], org.to_string());
        assert_eq!(value["version"], stored.sequence);
        assert!(value["userId"].is_string() && value["timestamp"].is_string());
        assert_eq!(value["metadata"]["source"], "command-api");
        let headers = message.headers().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        assert_eq!(
            header("event-type").as_deref(),
            Some(stored.event_type.as_str())
        );
        assert_eq!(header("schema-version").as_deref(), Some("1"));
        assert_eq!(header("position"), Some(stored.position.to_string()));
        assert_eq!(
            header("correlation-id"),
            Some(
                value["metadata"]["correlationId"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            )
        );
    }
    assert_eq!(json_of(&messages[0])["metadata"]["correlationId"], "e2e-1");
    assert_eq!(json_of(&messages[2])["data"]["reason"], "merged");

    // 3. The read model.
    let row = eventually(Duration::from_secs(30), || async {
        sqlx::query_as::<_, (String, String, i64)>(
            "SELECT display_name, status, version FROM rm_customers WHERE organization_id = $1 AND id = $2::uuid",
        )
        .bind(org)
        .bind(&id)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
        .filter(|r| r.2 == 3)
    })
    .await
    .expect("the read model never reached version 3");
    assert_eq!(row, ("Kowhai Group".to_owned(), "archived".to_owned(), 3));

    // 4. GraphQL, scoped to the organization.
    let query = json!({"query": format!(
        "{{ customer(id: \"{id}\") {{ displayName legalName status archiveReason version tags history {{ type version }} }} }}"
    )});
    let answer: Value = client
        .post(format!("{queries}/graphql"))
        .bearer_auth(&token)
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let customer = &answer["data"]["customer"];
    assert_eq!(customer["displayName"], "Kowhai Group", "{answer}");
    assert_eq!(customer["legalName"], "Kowhai Group Limited");
    assert_eq!(customer["status"], "ARCHIVED");
    assert_eq!(customer["archiveReason"], "merged");
    assert_eq!(customer["version"], 3);
    assert_eq!(customer["tags"], json!(["consulting"]));
    assert_eq!(customer["history"].as_array().unwrap().len(), 3);

    let stranger = env.token(Uuid::now_v7(), &["owner"]);
    let answer: Value = client
        .post(format!("{queries}/graphql"))
        .bearer_auth(&stranger)
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["data"]["customer"],
        Value::Null,
        "another organization sees nothing"
    );
}
