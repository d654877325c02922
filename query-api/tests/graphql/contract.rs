//! The GraphQL schema held to what the query API does, by Schemathesis: it
//! reads the schema by introspection, sends every root field queries it
//! derives from it (arguments of every kind, nested selections to the
//! schema's depth, well-formed and malformed) and checks each answer: no
//! 5xx and no `INTERNAL_SERVER_ERROR`; a JSON object whose `data` never
//! holds null where the schema says non-null; a well-formed query not
//! refused as malformed and a malformed one refused; and no warning (a
//! field whose well-formed queries never returned data tested only its
//! checks). `scripts/services.sh` installs it in the tools' virtual
//! environment; `tests/contract/` holds its configuration and the hooks.

use std::path::PathBuf;

use pivotal_test_support::{TestEnv, graphql_answer, post_command};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn every_field_answers_as_the_graphql_schema_says() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;

    // What queries can find: an organization with a customer, a quote for
    // it and a second user.
    let (owner, _) = post_command(
        &commands,
        "/v1/auth/signup",
        None,
        json!({"organization": {"name": "Contract Ltd", "defaultCurrency": "NZD"},
               "user": {"email": format!("{}@example.com", uuid::Uuid::new_v4().simple()),
                        "password": "contract passphrase", "firstName": "Aroha", "lastName": "Owner"}}),
    )
    .await;
    let token = owner["accessToken"].as_str().unwrap().to_owned();
    let create = |path: &'static str, body: Value| {
        let (commands, token) = (&commands, &token);
        async move {
            let (created, _) = post_command(commands, path, Some(token), body).await;
            created["id"].as_str().unwrap().to_owned()
        }
    };
    let customer = create(
        "/v1/customers",
        json!({"legalName": "Kauri Ltd", "currency": "NZD", "tags": ["timber"]}),
    )
    .await;
    let user = create(
        "/v1/users",
        json!({"email": format!("{}@example.com", uuid::Uuid::new_v4().simple()),
               "firstName": "Mere", "lastName": "Tane", "roles": ["member"]}),
    )
    .await;
    let (quote, consistency) = post_command(
        &commands,
        "/v1/quotes",
        Some(&token),
        json!({"customerId": customer, "title": "Discovery",
               "lines": [{"description": "Workshop", "quantity": "2", "unitPrice": "150"}]}),
    )
    .await;
    let quote = quote["id"].as_str().unwrap().to_owned();
    assert!(!consistency.is_empty());
    // The read models rebuilt, and what they queued for the search index
    // indexed as the live indexer does (a token of the quote's command is
    // then honoured by `search` too).
    crate::project(&env, None).await;
    let engine = pivotal_search::open(&env.settings.search).unwrap();
    pivotal_projectors::search::SearchIndexer::new(env.pool.clone(), engine)
        .drain()
        .await
        .unwrap();
    let (queries, _q) = env.spawn_query_api().await;
    // A cursor each list handed out (its first page's end, in its default
    // ordering): a random string is never one, so well-formed queries are
    // given these instead and reach the keyset reads behind them.
    let pages = graphql_answer(
        &queries,
        &token,
        None,
        "{ customers { pageInfo { endCursor } } users { pageInfo { endCursor } }
           quotes { pageInfo { endCursor } } search(query: \"Kauri\") { pageInfo { endCursor } } }",
    )
    .await;
    let cursors: serde_json::Map<String, Value> = ["customers", "users", "quotes", "search"]
        .into_iter()
        .map(|list| {
            let cursor = &pages["data"][list]["pageInfo"]["endCursor"];
            assert!(cursor.is_string(), "{pages}");
            (list.to_owned(), cursor.clone())
        })
        .collect();

    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    let cursors = Value::Object(cursors).to_string();
    let run = pivotal_test_support::schemathesis::run(
        &contract,
        &format!("{queries}/graphql"),
        &token,
        &[
            ("PIVOTAL_CONTRACT_CUSTOMER", &customer),
            ("PIVOTAL_CONTRACT_QUOTE", &quote),
            ("PIVOTAL_CONTRACT_USER", &user),
            ("PIVOTAL_CONTRACT_CONSISTENCY_TOKEN", &consistency),
            ("PIVOTAL_CONTRACT_CURSORS", &cursors),
        ],
    )
    .await;
    run.assert_passed("the query API and its schema");
    eprintln!(
        "{}\nrefusals by rules the schema cannot state:\n{}",
        run.stdout, run.filtered
    );
    // It ran: every root field of the schema was tested.
    let schema = graphql_answer(
        &queries,
        &token,
        None,
        "{ __schema { queryType { fields { name } } } }",
    )
    .await;
    let fields = schema["data"]["__schema"]["queryType"]["fields"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        run.tested(fields),
        "{fields} root fields in the schema:\n{}",
        run.stdout
    );
}
