//! The OpenAPI document held to what the API does, by Schemathesis: a
//! property-based tester that reads the document the API serves, sends
//! every operation requests it derives from it (its examples, the
//! boundaries of each constraint, random well-formed and malformed
//! bodies, parameters and headers) and checks each answer: no 5xx; a
//! status, content type, headers and body the document gives for that
//! operation; a well-formed request not refused as malformed (422, 400)
//! and a malformed one not accepted; no operation answering without its
//! credentials; a missing required header refused; a method the path
//! lacks answered 405. `scripts/services.sh` installs it in the tools'
//! virtual environment; `tests/contract/` holds its configuration and
//! the hooks that put in the references the document cannot know.

use std::path::PathBuf;

use serde_json::json;

use crate::helpers::TestApp;
use crate::identity::{Identity, PASSWORD, unique_email};

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_answers_as_the_openapi_document_says() {
    // Sign-up is limited per address: Schemathesis sends it hundreds of
    // requests from one.
    let app = TestApp::spawn_with(|s| {
        s.auth.rate_limit.per_ip = 1_000_000;
        s.auth.rate_limit.per_account = 1_000_000;
    })
    .await;
    let api = Identity::new(&app.url);
    let owner = api.sign_up("Contract Ltd", &unique_email("owner")).await;
    let token = owner["accessToken"].as_str().unwrap().to_owned();

    // What requests refer to: a customer, a rate card with an entry, a
    // quote, a user.
    let create = |path: &'static str, body: serde_json::Value| {
        let (api, token) = (&api, &token);
        async move {
            let response = api.post(path, Some(token), body).await;
            assert_eq!(
                response.status(),
                201,
                "{path}: {:?}",
                response.text().await
            );
            let created: serde_json::Value = response.json().await.unwrap();
            created["id"].as_str().unwrap().to_owned()
        }
    };
    let customer = create(
        "/v1/customers",
        json!({"legalName": "Kauri Ltd", "currency": "NZD"}),
    )
    .await;
    let card = create("/v1/rate-cards", json!({"name": "Standard"})).await;
    // The one the archive operation is sent: Schemathesis reuses the ids
    // it has seen in answers, and the card quotes refer to must stay live.
    let spare_card = create("/v1/rate-cards", json!({"name": "Spare"})).await;
    let entry = uuid::Uuid::now_v7().to_string();
    let put = api
        .put(
            &format!("/v1/rate-cards/{card}/entries/{entry}"),
            &token,
            json!({"name": "Consulting", "unit": "hours",
                   "rates": [{"currency": "NZD", "amount": "150", "effectiveFrom": "2020-01-01"}]}),
        )
        .await;
    assert!(put.status().is_success(), "{:?}", put.text().await);
    let quote = create(
        "/v1/quotes",
        json!({"customerId": customer, "rateCardId": card, "title": "Discovery",
               "lines": [{"rateEntryId": entry, "quantity": "2"}]}),
    )
    .await;
    let user = create(
        "/v1/users",
        json!({"email": unique_email("member"), "firstName": "Mere", "lastName": "Tane",
               "password": PASSWORD}),
    )
    .await;

    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    let run = pivotal_test_support::schemathesis::run(
        &contract,
        &format!("{}/openapi.json", app.url),
        &token,
        &[
            ("PIVOTAL_CONTRACT_CUSTOMER", &customer),
            ("PIVOTAL_CONTRACT_RATE_CARD", &card),
            ("PIVOTAL_CONTRACT_RATE_ENTRY", &entry),
            ("PIVOTAL_CONTRACT_SPARE_RATE_CARD", &spare_card),
            ("PIVOTAL_CONTRACT_QUOTE", &quote),
            ("PIVOTAL_CONTRACT_USER", &user),
        ],
    )
    .await;
    run.assert_passed("the API and its document");
    // The refusals let through as depending on context, for the record.
    eprintln!(
        "{}\nrefusals that depend on context:\n{}",
        run.stdout, run.filtered
    );
    // It ran: every operation of the document was tested.
    let operations = app.openapi_document().await["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    assert!(
        run.tested(operations),
        "{operations} operations in the document:\n{}",
        run.stdout
    );
}
