//! Version bookkeeping against a real PostgreSQL: duplicates are no-ops,
//! gaps are refused and change nothing.
#![allow(clippy::unwrap_used)]

use chrono::Utc;
use pivotal_domain::envelope::{EventEnvelope, EventMetadata};
use pivotal_projectors::customers::CustomersProjection;
use pivotal_projectors::framework::{Applied, ProjectionError, apply_once};
use pivotal_test_support::TestEnv;
use serde_json::{Value, json};
use uuid::Uuid;

fn event(
    customer: Uuid,
    org: Uuid,
    version: u64,
    event_type: &str,
    data: Value,
) -> EventEnvelope<Value> {
    EventEnvelope {
        id: Uuid::now_v7(),
        event_type: event_type.into(),
        aggregate_id: customer.to_string(),
        aggregate_type: "customer".into(),
        organization_id: org,
        user_id: Some(Uuid::now_v7()),
        timestamp: Utc::now(),
        version,
        metadata: EventMetadata {
            correlation_id: "c".into(),
            causation_id: None,
            source: "tests".into(),
            user_agent: None,
            ip_address: None,
        },
        data,
    }
}

#[tokio::test]
async fn duplicates_are_no_ops_and_gaps_are_refused() {
    let env = TestEnv::new().await;
    let (customer, org) = (Uuid::now_v7(), Uuid::now_v7());
    let created = event(
        customer,
        org,
        1,
        "customer.created",
        serde_json::to_value(pivotal_domain::customer::sample_created(customer, org)).unwrap(),
    );
    let renamed = event(
        customer,
        org,
        2,
        "customer.renamed",
        json!({"customerId": customer, "legalName": "Renamed Ltd", "displayName": "Renamed"}),
    );
    let archived = event(
        customer,
        org,
        3,
        "customer.archived",
        json!({"customerId": customer, "reason": null}),
    );

    let mut tx = env.pool.begin().await.unwrap();
    assert_eq!(
        apply_once(&mut tx, &CustomersProjection, &created, Some(1))
            .await
            .unwrap(),
        Applied::Applied
    );
    assert_eq!(
        apply_once(&mut tx, &CustomersProjection, &created, Some(1))
            .await
            .unwrap(),
        Applied::Duplicate
    );
    tx.commit().await.unwrap();

    // Version 3 before version 2: refused, nothing written.
    let mut tx = env.pool.begin().await.unwrap();
    let error = apply_once(&mut tx, &CustomersProjection, &archived, Some(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ProjectionError::Gap {
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{error}"
    );
    tx.rollback().await.unwrap();
    let (status, version): (String, i64) =
        sqlx::query_as("SELECT status, version FROM rm_customers WHERE id = $1")
            .bind(customer)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), version), ("active", 1));

    let mut tx = env.pool.begin().await.unwrap();
    for e in [&renamed, &archived, &renamed] {
        apply_once(&mut tx, &CustomersProjection, e, None)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let (name, status, version): (String, String, i64) =
        sqlx::query_as("SELECT display_name, status, version FROM rm_customers WHERE id = $1")
            .bind(customer)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        (name.as_str(), status.as_str(), version),
        ("Renamed", "archived", 3)
    );
}
