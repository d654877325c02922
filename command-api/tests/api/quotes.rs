//! Rate cards and quotes over HTTP: pricing from rate cards, gap-free
//! numbers under concurrency, the approval workflow with four eyes, revisions,
//! expiry, refusals with pointers, and PDFs read back with pdftotext.

use std::io::Write;
use std::process::Command;

use pivotal_domain::quote::Quote;
use pivotal_event_store::commands::AggregateStore;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, error_pointers};
use crate::identity::{Identity, PASSWORD, unique_email};

struct Shop<'a> {
    api: Identity<'a>,
    owner: String,
    manager: String,
    customer: String,
    card: String,
    entry: String,
}

async fn shop<'a>(app: &'a TestApp, threshold: &str) -> Shop<'a> {
    let api = Identity::new(&app.url);
    let owner = api
        .sign_up("Kōwhai Consulting", &unique_email("owner"))
        .await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let manager_email = unique_email("manager");
    api.create_user(&owner, &manager_email, &["manager"]).await;
    let manager = api.login_ok(&manager_email, PASSWORD).await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let settings = api
        .put(
            "/v1/organization/settings",
            &owner,
            json!({"defaultCurrency": "NZD", "timeZone": "Pacific/Auckland", "fiscalYearStartMonth": 4,
                   "tax": {"registrationNumber": "123-456-789", "defaultRateBasisPoints": 1500, "pricesIncludeTax": false},
                   "quotes": {"approvalThreshold": threshold, "validityDays": 30}}),
        )
        .await;
    assert_eq!(settings.status(), 200, "{:?}", settings.text().await);
    let customer: Value = api
        .post(
            "/v1/customers",
            Some(&owner),
            json!({"legalName": "Tūī Design Limited", "currency": "NZD",
                   "billingAddress": {"line1": "1 Queen Street", "city": "Auckland", "country": "NZ"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let card: Value = api
        .post(
            "/v1/rate-cards",
            Some(&owner),
            json!({"name": "Standard 2026"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let card = card["id"].as_str().unwrap().to_owned();
    let entry = uuid::Uuid::now_v7().to_string();
    let put = api
        .put(
            &format!("/v1/rate-cards/{card}/entries/{entry}"),
            &owner,
            json!({"name": "Senior developer", "unit": "hours", "rates": [
                {"currency": "NZD", "amount": "180.00", "effectiveFrom": "2026-01-01"},
                {"currency": "NZD", "amount": "195.00", "effectiveFrom": "2099-01-01"},
                {"currency": "AUD", "amount": "165.00", "effectiveFrom": "2026-01-01"}]}),
        )
        .await;
    assert_eq!(put.status(), 200, "{:?}", put.text().await);
    Shop {
        api,
        owner,
        manager,
        customer: customer["id"].as_str().unwrap().to_owned(),
        card,
        entry,
    }
}

fn quote_body(shop: &Shop<'_>) -> Value {
    json!({
        "customerId": shop.customer,
        "title": "Website rebuild",
        "description": "Discovery, design and build",
        "rateCardId": shop.card,
        "terms": "50% on acceptance",
        "discount": {"type": "percent", "value": "5"},
        "lines": [
            {"rateEntryId": shop.entry, "quantity": "12.5", "discount": {"type": "percent", "value": "10"}},
            {"description": "Travel", "quantity": "1", "unitPrice": "245.55", "taxRate": "0",
             "discount": {"type": "amount", "value": "45.55"}},
            {"description": "Extended support", "quantity": "3", "unitPrice": "100", "optional": true}
        ]
    })
}

async fn create(shop: &Shop<'_>, body: Value) -> Value {
    let r = shop.api.post("/v1/quotes", Some(&shop.owner), body).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    r.json().await.unwrap()
}

#[tokio::test]
async fn quote_flow_from_draft_to_acceptance() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "1000").await;
    let quote = create(&shop, quote_body(&shop)).await;
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(quote["number"], format!("Q-{year}-0001"));
    assert_eq!(quote["status"], "draft");
    // The rate came from the card (the 2099 rate is not yet effective).
    let line = &quote["content"]["lines"][0];
    assert_eq!(line["unitPrice"], "180.00");
    assert_eq!(line["unit"], "hours");
    assert_eq!(line["description"], "Senior developer");
    assert_eq!(line["rateSource"]["entryName"], "Senior developer");
    let pricing = &quote["pricing"];
    assert_eq!(pricing["subtotal"], "2495.55");
    assert_eq!(pricing["netTotal"], "2113.75");
    assert_eq!(pricing["taxTotal"], "288.56");
    assert_eq!(pricing["total"], "2402.31");
    let id = quote["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/quotes/{id}");

    // Changing the rate does not change the priced quote.
    let put = shop
        .api
        .put(
            &format!("/v1/rate-cards/{}/entries/{}", shop.card, shop.entry),
            &shop.owner,
            json!({"name": "Senior developer", "unit": "hours",
                   "rates": [{"currency": "NZD", "amount": "999", "effectiveFrom": "2026-01-01"}]}),
        )
        .await;
    assert_eq!(put.status(), 200);
    let again: Value = shop.api.get(&path, &shop.owner).await.json().await.unwrap();
    assert_eq!(again["pricing"]["total"], "2402.31");

    // Sending needs approval first; above the threshold an approver who is
    // not the author.
    let early = shop
        .api
        .post(&format!("{path}/send"), Some(&shop.owner), json!({}))
        .await;
    let body = assert_problem(early, 409, "illegal_transition").await;
    assert!(body["detail"].as_str().unwrap().contains("draft"));
    let submitted: Value = shop
        .api
        .post(&format!("{path}/submit"), Some(&shop.owner), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(submitted["status"], "pending_approval");
    let own = shop
        .api
        .post(&format!("{path}/approve"), Some(&shop.owner), json!({}))
        .await;
    assert_problem(own, 403, "four_eyes").await;
    let no_reason = shop
        .api
        .post(
            &format!("{path}/reject"),
            Some(&shop.manager),
            json!({"reason": " "}),
        )
        .await;
    assert_problem(no_reason, 422, "validation_failed").await;
    let approved = shop
        .api
        .post(
            &format!("{path}/approve"),
            Some(&shop.manager),
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(approved.status(), 200);
    let sent: Value = shop
        .api
        .post(&format!("{path}/send"), Some(&shop.owner), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sent["status"], "sent");

    // Editing a sent quote starts revision 2, back in draft.
    let mut edited = quote_body(&shop);
    edited["title"] = json!("Website rebuild, phase 1");
    edited["lines"][0] =
        json!({"description": "Senior developer", "quantity": "10", "unitPrice": "180"});
    let revised: Value = shop
        .api
        .put(&path, &shop.owner, edited)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(revised["revision"], 2);
    assert_eq!(revised["status"], "draft");
    assert_eq!(
        revised["earlierRevisions"][0]["pricing"]["total"],
        "2402.31"
    );
    for step in ["submit", "approve", "send"] {
        let token = if step == "approve" {
            &shop.manager
        } else {
            &shop.owner
        };
        let r = shop
            .api
            .post(&format!("{path}/{step}"), Some(token), json!({}))
            .await;
        assert_eq!(r.status(), 200, "{step}: {:?}", r.text().await);
    }
    let accepted: Value = shop
        .api
        .post(
            &format!("{path}/accept"),
            Some(&shop.owner),
            json!({"by": "Jane Client"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["decidedBy"], "Jane Client");
    let late = shop.api.delete(&path, &shop.owner).await;
    let body = assert_problem(late, 409, "illegal_transition").await;
    assert!(body["detail"].as_str().unwrap().contains("accepted"));

    let (changes,): (Vec<String>,) = sqlx::query_as(
        "SELECT array_agg((payload -> 'data' ->> 'oldStatus') || '>' || (payload -> 'data' ->> 'newStatus') ORDER BY sequence)
         FROM events WHERE aggregate_id = $1 AND event_type = 'quote.status.changed'",
    )
    .bind(&id)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(
        changes,
        [
            "draft>pending_approval",
            "pending_approval>approved",
            "approved>sent",
            "sent>draft",
            "draft>pending_approval",
            "pending_approval>approved",
            "approved>sent",
            "sent>accepted",
        ]
    );
}

#[tokio::test]
async fn concurrent_creation_gives_unique_gap_free_numbers() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "0").await;
    let mut bodies: Vec<Value> = (0..16).map(|_| quote_body(&shop)).collect();
    // Invalid creations in between take no number.
    for i in [3, 9] {
        bodies[i]["lines"][1]["quantity"] = json!("-1");
    }
    let responses = futures::future::join_all(
        bodies
            .into_iter()
            .map(|b| shop.api.post("/v1/quotes", Some(&shop.owner), b)),
    )
    .await;
    let mut numbers = Vec::new();
    for r in responses {
        match r.status().as_u16() {
            201 => numbers.push(
                r.json::<Value>().await.unwrap()["number"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            422 => {}
            other => panic!("unexpected {other}"),
        }
    }
    numbers.sort();
    let year = chrono::Utc::now().format("%Y").to_string();
    let expected: Vec<String> = (1..=14).map(|n| format!("Q-{year}-{n:04}")).collect();
    assert_eq!(numbers, expected);
}

#[tokio::test]
async fn bad_quotes_are_refused_field_by_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "0").await;
    let before = app.event_count().await;
    let mut body = quote_body(&shop);
    body["lines"][0]["quantity"] = json!("-2");
    body["lines"][1]["discount"] = json!({"type": "percent", "value": "150"});
    body["currency"] = json!("XYZ");
    let r = shop.api.post("/v1/quotes", Some(&shop.owner), body).await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["pointer"], "/currency");

    let mut body = quote_body(&shop);
    body["lines"][0]["quantity"] = json!("-2");
    body["lines"][1]["discount"] = json!({"type": "percent", "value": "150"});
    let r = shop.api.post("/v1/quotes", Some(&shop.owner), body).await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    let pointers = error_pointers(&problem);
    assert_eq!(pointers, ["/lines/0/quantity", "/lines/1/discount/value"]);

    // The card has no rate in this currency.
    let mut body = quote_body(&shop);
    body["currency"] = json!("USD");
    let r = shop.api.post("/v1/quotes", Some(&shop.owner), body).await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "rate_card_currency_mismatch");
    assert_eq!(problem["errors"][0]["pointer"], "/lines/0/rateEntryId");

    let mut body = quote_body(&shop);
    body["customerId"] = json!(uuid::Uuid::now_v7());
    let r = shop.api.post("/v1/quotes", Some(&shop.owner), body).await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "unknown_customer");

    let mut body = quote_body(&shop);
    body["lines"][1]["discount"] = json!({"type": "amount", "value": "300"});
    let r = shop.api.post("/v1/quotes", Some(&shop.owner), body).await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "discount_exceeds_amount");

    let r = shop
        .api
        .post(
            "/v1/quotes",
            Some(&shop.owner),
            json!({"customerId": shop.customer, "title": "x", "lines": "many"}),
        )
        .await;
    assert_problem(r, 422, "validation_failed").await;
    assert_eq!(app.event_count().await, before, "nothing was written");
    let (counters,): (i64,) = sqlx::query_as("SELECT count(*) FROM quote_number_counters")
        .fetch_one(&app.env.pool)
        .await
        .unwrap();
    assert_eq!(counters, 0, "no number was taken");

    // A member reads quotes but cannot write or approve them.
    let member_email = unique_email("member");
    shop.api
        .create_user(&shop.owner, &member_email, &["member"])
        .await;
    let member = shop.api.login_ok(&member_email, PASSWORD).await;
    let member = member["accessToken"].as_str().unwrap();
    let r = shop
        .api
        .post("/v1/quotes", Some(member), quote_body(&shop))
        .await;
    let body = assert_problem(r, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("quotes:write"));
}

#[tokio::test]
async fn the_accountant_approves_up_to_the_limit() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "0").await;
    let accountant_email = unique_email("accountant");
    shop.api
        .create_user(&shop.owner, &accountant_email, &["accountant"])
        .await;
    let accountant = shop.api.login_ok(&accountant_email, PASSWORD).await;
    let accountant = accountant["accessToken"].as_str().unwrap().to_owned();
    for (hours, allowed) in [("10", true), ("100", false)] {
        let mut body = quote_body(&shop);
        body["lines"] =
            json!([{"description": "Work", "quantity": hours, "unitPrice": "900", "taxRate": "0"}]);
        body["discount"] = Value::Null;
        let quote = create(&shop, body).await;
        let path = format!("/v1/quotes/{}", quote["id"].as_str().unwrap());
        shop.api
            .post(&format!("{path}/submit"), Some(&shop.owner), json!({}))
            .await;
        let r = shop
            .api
            .post(&format!("{path}/approve"), Some(&accountant), json!({}))
            .await;
        if allowed {
            assert_eq!(r.status(), 200, "9,000.00 is within 10,000.00");
        } else {
            let body = assert_problem(r, 403, "forbidden").await;
            assert!(body["detail"].as_str().unwrap().contains("quotes:approve"));
        }
    }
}

#[tokio::test]
async fn sent_quotes_expire_once_after_their_date() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "100000").await;
    let quote = create(&shop, quote_body(&shop)).await;
    let id = quote["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/quotes/{id}");
    for step in ["submit", "send"] {
        let r = shop
            .api
            .post(&format!("{path}/{step}"), Some(&shop.owner), json!({}))
            .await;
        assert_eq!(r.status(), 200, "{step}");
    }
    pivotal_test_support::wait_for_horizon(&app.env.pool).await;
    pivotal_projectors::framework::rebuild(
        &app.env.pool,
        &pivotal_projectors::quotes::QuotesProjection,
        None,
    )
    .await
    .unwrap();
    let store = AggregateStore::<Quote>::new(app.env.pool.clone());
    let valid_until: chrono::NaiveDate = quote["content"]["validUntil"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let on_the_day = pivotal_command_api::quotes::expire_due(&app.env.pool, &store, valid_until)
        .await
        .unwrap();
    assert_eq!(on_the_day, 0, "valid through its last day");
    let next_day = valid_until.succ_opt().unwrap();
    let expired = pivotal_command_api::quotes::expire_due(&app.env.pool, &store, next_day)
        .await
        .unwrap();
    assert_eq!(expired, 1);
    // The read model still says sent; the aggregate refuses a second expiry.
    let again = pivotal_command_api::quotes::expire_due(&app.env.pool, &store, next_day)
        .await
        .unwrap();
    assert_eq!(again, 0);
    let fetched: Value = shop.api.get(&path, &shop.owner).await.json().await.unwrap();
    assert_eq!(fetched["status"], "expired");
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM events WHERE aggregate_id = $1
         AND payload -> 'data' ->> 'newStatus' = 'expired'",
    )
    .bind(&id)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(count, 1);
}

/// The PDF's text (pdftotext) and its document information (pdfinfo).
fn pdf_text(pdf: &[u8]) -> (String, String) {
    let mut file = tempfile_path();
    file.1.write_all(pdf).unwrap();
    let path = file.0.to_str().unwrap();
    let text = Command::new("pdftotext")
        .args(["-layout", path, "-"])
        .output()
        .expect("pdftotext (poppler-utils) is installed by scripts/services.sh");
    let info = Command::new("pdfinfo").arg(path).output().unwrap();
    let _ = std::fs::remove_file(&file.0);
    assert!(text.status.success() && info.status.success());
    (
        String::from_utf8(text.stdout).unwrap(),
        String::from_utf8(info.stdout).unwrap(),
    )
}

fn tempfile_path() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("quote-{}.pdf", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

#[tokio::test]
async fn quote_pdfs_carry_number_customer_lines_and_totals() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "0").await;
    let quote = create(&shop, quote_body(&shop)).await;
    let path = format!("/v1/quotes/{}/pdf", quote["id"].as_str().unwrap());
    let templates: Value = shop
        .api
        .get("/v1/quote-templates", &shop.owner)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = templates["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["compact", "standard"]);
    for (query, paper_points) in [
        ("", 595),
        ("?paper=letter", 612),
        ("?template=compact", 595),
    ] {
        let r = shop.api.get(&format!("{path}{query}"), &shop.owner).await;
        assert_eq!(r.status(), 200, "{query}: {:?}", r.headers());
        assert_eq!(r.headers()["content-type"], "application/pdf");
        let pdf = r.bytes().await.unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        let (text, info) = pdf_text(&pdf);
        let width = info
            .lines()
            .find(|l| l.starts_with("Page size:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_default();
        assert!(
            width.starts_with(&paper_points.to_string()),
            "{query}: page width {paper_points} pt in\n{info}"
        );
        for expected in [
            quote["number"].as_str().unwrap(),
            "Tūī Design Limited",
            "Senior developer",
            "Travel",
            "Extended support",
            "2402.31",
        ] {
            assert!(text.contains(expected), "{query}: {expected} in\n{text}");
        }
        if query.is_empty() {
            for expected in [
                "1923.75",
                "288.56",
                "2113.75",
                "Kōwhai Consulting",
                "15% on 1923.75",
            ] {
                assert!(text.contains(expected), "{expected} in\n{text}");
            }
        }
    }
    let r = shop
        .api
        .get(&format!("{path}?template=../../etc/passwd"), &shop.owner)
        .await;
    assert_problem(r, 422, "validation_failed").await;
    let r = shop.api.get(&format!("{path}?paper=a3"), &shop.owner).await;
    assert_problem(r, 422, "validation_failed").await;
    // A parameter given twice is a malformed query, said as a problem.
    let r = shop
        .api
        .get(&format!("{path}?paper=a4&paper=letter"), &shop.owner)
        .await;
    let problem = assert_problem(r, 400, "invalid_query").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("paper"),
        "{problem}"
    );
}

#[tokio::test]
async fn cards_are_chosen_customer_first_then_the_default() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "0").await;
    // The organization's default card is the shop's card.
    let settings = shop
        .api
        .put(
            "/v1/organization/settings",
            &shop.owner,
            json!({"defaultCurrency": "NZD", "timeZone": "Pacific/Auckland", "fiscalYearStartMonth": 4,
                   "tax": {"defaultRateBasisPoints": 1500, "pricesIncludeTax": false},
                   "quotes": {"approvalThreshold": "0", "validityDays": 14, "defaultRateCardId": shop.card}}),
        )
        .await;
    assert_eq!(settings.status(), 200);
    let line = |entry: &str| json!([{"rateEntryId": entry, "quantity": "1"}]);
    let mut body =
        json!({"customerId": shop.customer, "title": "Default card", "lines": line(&shop.entry)});
    let quote = create(&shop, body.clone()).await;
    assert_eq!(quote["content"]["lines"][0]["unitPrice"], "180.00");
    assert_eq!(quote["content"]["lines"][0]["taxRate"], "15.00");
    let valid_until: chrono::NaiveDate = quote["content"]["validUntil"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        valid_until,
        chrono::Utc::now().date_naive() + chrono::Days::new(14)
    );

    // The customer's own card wins once the read model knows it.
    let own: Value = shop
        .api
        .post(
            "/v1/rate-cards",
            Some(&shop.owner),
            json!({"name": "Tūī rates", "customerId": shop.customer}),
        )
        .await
        .json()
        .await
        .unwrap();
    let own_card = own["id"].as_str().unwrap();
    let own_entry = uuid::Uuid::now_v7().to_string();
    shop.api
        .put(
            &format!("/v1/rate-cards/{own_card}/entries/{own_entry}"),
            &shop.owner,
            json!({"name": "Senior developer (Tūī)", "unit": "hours",
                   "rates": [{"currency": "NZD", "amount": "170", "effectiveFrom": "2026-01-01"}]}),
        )
        .await;
    pivotal_test_support::wait_for_horizon(&app.env.pool).await;
    pivotal_projectors::framework::rebuild(
        &app.env.pool,
        &pivotal_projectors::quotes::RateCardsProjection,
        None,
    )
    .await
    .unwrap();
    body["lines"] = line(&own_entry);
    let quote = create(&shop, body.clone()).await;
    assert_eq!(quote["content"]["lines"][0]["unitPrice"], "170");
    assert_eq!(
        quote["content"]["lines"][0]["rateSource"]["rateCardId"],
        own_card
    );
    // An entry of the default card is not on the customer's card.
    body["lines"] = line(&shop.entry);
    let r = shop.api.post("/v1/quotes", Some(&shop.owner), body).await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "unknown_rate_entry");
}

#[tokio::test]
async fn organizations_bring_their_own_templates() {
    let dir = std::env::temp_dir().join(format!("pf-templates-{}", uuid::Uuid::new_v4()));
    let templates_dir = dir.display().to_string();
    let app = TestApp::spawn_with(|s| s.quotes.templates_dir = templates_dir).await;
    let shop = shop(&app, "0").await;
    let me: Value = shop
        .api
        .get("/v1/organization", &shop.owner)
        .await
        .json()
        .await
        .unwrap();
    let org_dir = dir.join(me["id"].as_str().unwrap());
    std::fs::create_dir_all(&org_dir).unwrap();
    std::fs::write(
        org_dir.join("letterhead.typ"),
        "#let data = json(\"/data.json\")\n#set page(paper: data.paper)\n= Letterhead quote #data.number for #data.customer.name\nTotal: #data.totals.total\n",
    )
    .unwrap();
    let templates: Value = shop
        .api
        .get("/v1/quote-templates", &shop.owner)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = templates["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["compact", "letterhead", "standard"]);
    let quote = create(&shop, quote_body(&shop)).await;
    let r = shop
        .api
        .get(
            &format!(
                "/v1/quotes/{}/pdf?template=letterhead",
                quote["id"].as_str().unwrap()
            ),
            &shop.owner,
        )
        .await;
    assert_eq!(r.status(), 200);
    let (text, _) = pdf_text(&r.bytes().await.unwrap());
    assert!(text.contains("Letterhead quote"), "{text}");
    assert!(text.contains("2402.31"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_retried_creation_with_its_idempotency_key_creates_one_quote() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "0").await;
    let send = || {
        shop.api
            .client
            .post(format!("{}/v1/quotes", app.url))
            .bearer_auth(&shop.owner)
            .header("idempotency-key", "quote-retry-1")
            .json(&quote_body(&shop))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["number"], first["number"]);
    let (quotes,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'quote.created'")
            .fetch_one(&app.env.pool)
            .await
            .unwrap();
    assert_eq!(quotes, 1);
    // The same key with another body is refused.
    let mut other = quote_body(&shop);
    other["title"] = json!("Something else");
    let reused = shop
        .api
        .client
        .post(format!("{}/v1/quotes", app.url))
        .bearer_auth(&shop.owner)
        .header("idempotency-key", "quote-retry-1")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_problem(reused, 422, "idempotency_key_reused").await;
}

/// A 422 whose one error says that `text`, at `pointer`, is not a date.
async fn assert_not_a_date(response: reqwest::Response, pointer: &str, text: &str) {
    let problem = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(
        problem["errors"],
        json!([{"pointer": pointer, "code": "invalid_type",
                "message": format!("{text:?} is not a calendar date written YYYY-MM-DD, such as 2026-12-31")}])
    );
}

#[tokio::test]
async fn bad_rate_cards_and_quote_settings_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "0").await;
    let before = app.event_count().await;
    let entry = format!(
        "/v1/rate-cards/{}/entries/{}",
        shop.card,
        uuid::Uuid::now_v7()
    );
    let r = shop
        .api
        .put(
            &entry,
            &shop.owner,
            json!({"name": "", "unit": "hours", "rates": [
                {"currency": "NZD", "amount": "-1", "effectiveFrom": "2026-01-01"},
                {"currency": "XYZ", "amount": "10", "effectiveFrom": "2026-01-01"}]}),
        )
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    let pointers = error_pointers(&problem);
    assert_eq!(pointers, ["/name", "/rates/1/currency"]);
    let r = shop
        .api
        .put(
            &entry,
            &shop.owner,
            json!({"name": "Tester", "unit": "hours", "rates": [
                {"currency": "NZD", "amount": "-1", "effectiveFrom": "2026-01-01"},
                {"currency": "NZD", "amount": "90", "effectiveFrom": "2026-01-01"}]}),
        )
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    let codes: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["invalid_amount", "duplicate"]);
    let r = shop
        .api
        .put(
            &entry,
            &shop.owner,
            json!({"name": "Tester", "unit": "weeks", "rates": []}),
        )
        .await;
    assert_problem(r, 422, "validation_failed").await;
    let r = shop
        .api
        .put(
            &entry,
            &shop.owner,
            json!({"name": "Tester", "unit": "hours", "rates": []}),
        )
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["pointer"], "/rates");
    let r = shop
        .api
        .post(
            "/v1/rate-cards",
            Some(&shop.owner),
            json!({"name": "Theirs", "customerId": uuid::Uuid::now_v7()}),
        )
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "unknown_customer");
    // Dates that are none: each refused at its field, saying how to write one.
    let r = shop
        .api
        .put(
            &entry,
            &shop.owner,
            json!({"name": "Tester", "unit": "hours", "rates": [
                {"currency": "NZD", "amount": "90", "effectiveFrom": "2026-02-30"}]}),
        )
        .await;
    assert_not_a_date(r, "/rates/0/effectiveFrom", "2026-02-30").await;
    let r = shop
        .api
        .post(
            "/v1/quotes",
            Some(&shop.owner),
            json!({"customerId": shop.customer, "title": "Dated", "validUntil": "next week",
                   "lines": [{"description": "Work", "quantity": "1", "unitPrice": "100"}]}),
        )
        .await;
    assert_not_a_date(r, "/validUntil", "next week").await;
    let r = shop
        .api
        .get(
            &format!("/v1/rate-cards/{}", uuid::Uuid::now_v7()),
            &shop.owner,
        )
        .await;
    assert_problem(r, 404, "rate_card_not_found").await;

    let r = shop
        .api
        .put(
            "/v1/organization/settings",
            &shop.owner,
            json!({"defaultCurrency": "NZD", "timeZone": "Nowhere/Special", "fiscalYearStartMonth": 0,
                   "tax": {"defaultRateBasisPoints": 20000, "pricesIncludeTax": false},
                   "quotes": {"approvalThreshold": "-5", "validityDays": 0}}),
        )
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    let mut pointers = error_pointers(&problem);
    pointers.sort_unstable();
    assert_eq!(
        pointers,
        [
            "/fiscalYearStartMonth",
            "/quotes/approvalThreshold",
            "/quotes/validityDays",
            "/tax/defaultRateBasisPoints",
            "/timeZone",
        ]
    );
    // Rate cards are managed by those allowed to.
    let member_email = unique_email("member");
    shop.api
        .create_user(&shop.owner, &member_email, &["member"])
        .await;
    let member = shop.api.login_ok(&member_email, PASSWORD).await;
    let r = shop
        .api
        .post(
            "/v1/rate-cards",
            Some(member["accessToken"].as_str().unwrap()),
            json!({"name": "Mine"}),
        )
        .await;
    let body = assert_problem(r, 403, "forbidden").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("rate_cards:write")
    );
    assert_eq!(
        app.event_count().await,
        before + 2,
        "only the member's creation and sign-in were recorded"
    );
}

/// The units and tax modes the OpenAPI document lists are exactly those the
/// API takes: each listed one is accepted where a body names it, and a
/// value not listed is refused at its field.
#[tokio::test]
async fn the_documented_units_and_tax_modes_are_the_ones_taken() {
    let app = TestApp::spawn().await;
    let shop = shop(&app, "1000000").await;
    let document = app.openapi_document().await;
    let listed = |schema: &str| -> Vec<String> {
        document["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} lists no values"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let units = listed("Unit");
    assert_eq!(units, ["hours", "days", "each"]);
    for unit in units.iter().map(String::as_str).chain(["weeks"]) {
        let entry = uuid::Uuid::now_v7();
        let put = shop
            .api
            .put(
                &format!("/v1/rate-cards/{}/entries/{entry}", shop.card),
                &shop.owner,
                json!({"name": "Tester", "unit": unit, "rates": [
                    {"currency": "NZD", "amount": "90", "effectiveFrom": "2026-01-01"}]}),
            )
            .await;
        if units.iter().any(|u| u == unit) {
            assert_eq!(put.status(), 200, "{unit}: {:?}", put.text().await);
        } else {
            let problem = assert_problem(put, 422, "validation_failed").await;
            assert_eq!(problem["errors"][0]["pointer"], "/unit", "{problem}");
        }
    }
    let modes = listed("TaxMode");
    assert_eq!(modes, ["exclusive", "inclusive"]);
    for mode in modes.iter().map(String::as_str).chain(["included"]) {
        let created = shop
            .api
            .post(
                "/v1/quotes",
                Some(&shop.owner),
                json!({"customerId": shop.customer, "title": "Taxed", "taxMode": mode,
                       "lines": [{"description": "Work", "quantity": "1", "unit": "days",
                                  "unitPrice": "100"}]}),
            )
            .await;
        if modes.iter().any(|m| m == mode) {
            assert_eq!(created.status(), 201, "{mode}: {:?}", created.text().await);
        } else {
            let problem = assert_problem(created, 422, "validation_failed").await;
            assert_eq!(problem["errors"][0]["pointer"], "/taxMode", "{problem}");
        }
    }
}
