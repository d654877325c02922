//! Version bookkeeping against a real PostgreSQL: duplicates are no-ops,
//! gaps are refused and change nothing; batches moving the same counts wait
//! for each other rather than deadlock; a row is written under its own
//! organization only.
#![allow(clippy::unwrap_used)]

use chrono::Utc;
use pivotal_domain::envelope::{EventEnvelope, EventMetadata};
use pivotal_projectors::customers::CustomersProjection;
use pivotal_projectors::framework::{Applied, Envelope, ProjectionError, apply_once};
use pivotal_projectors::search::SearchProjection;
use pivotal_test_support::TestEnv;
use serde_json::{Value, json};
use uuid::Uuid;

mod crossed;
use crossed::{Held, apply_committed, counts_and_rows, cross};

fn event(customer: Uuid, org: Uuid, version: u64, event_type: &str, data: Value) -> Envelope {
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
        data: serde_json::value::to_raw_value(&data).unwrap(),
    }
}

/// The creation of `customer` in `org`, at version 1.
fn created(customer: Uuid, org: Uuid) -> Envelope {
    event(
        customer,
        org,
        1,
        "customer.created",
        serde_json::to_value(pivotal_domain::customer::sample_created(customer, org)).unwrap(),
    )
}

#[tokio::test]
async fn duplicates_are_no_ops_and_gaps_are_refused() {
    let env = TestEnv::new().await;
    let (customer, org) = (Uuid::now_v7(), Uuid::now_v7());
    let created = created(customer, org);
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

/// The customers projection folds events in memory and writes each row once
/// per batch: one event per transaction and the whole history in one batch
/// give the same row, and every event type lands in its columns.
#[tokio::test]
async fn customer_rows_are_the_same_one_by_one_and_in_one_batch() {
    use pivotal_projectors::framework::{Projection, Versions};

    let env = TestEnv::new().await;
    let history = |customer: Uuid, org: Uuid| {
        let c = customer.to_string();
        vec![
            event(
                customer,
                org,
                1,
                "customer.created",
                json!({
                "customerId": c, "organizationId": org, "legalName": "Kōwhai Consulting Limited",
                "displayName": "Kōwhai", "email": "a@kowhai.example.com", "phone": "+6495550100",
                "billingAddress": {"line1": "12 Queen Street", "city": "Auckland", "postalCode": "1010", "country": "NZ"},
                "taxNumber": "123-456-789", "currency": "NZD", "paymentTermsDays": 20, "tags": ["consulting"]}),
            ),
            event(
                customer,
                org,
                2,
                "customer.contact.changed",
                json!({
                "customerId": c, "email": "b@kowhai.example.com", "phone": null}),
            ),
            event(
                customer,
                org,
                3,
                "customer.billing.changed",
                json!({
                "customerId": c, "billingAddress": {"line1": "1 Lambton Quay", "line2": "Level 3",
                "city": "Wellington", "region": "Wellington", "country": "NZ"},
                "taxNumber": null, "currency": "AUD", "paymentTermsDays": 30}),
            ),
            event(
                customer,
                org,
                4,
                "customer.tags.changed",
                json!({"customerId": c, "tags": ["a", "b"]}),
            ),
            event(
                customer,
                org,
                5,
                "customer.archived",
                json!({"customerId": c, "reason": "merged"}),
            ),
            event(
                customer,
                org,
                6,
                "customer.restored",
                json!({"customerId": c}),
            ),
            event(
                customer,
                org,
                7,
                "customer.archived",
                json!({"customerId": c, "reason": "closed"}),
            ),
            event(
                customer,
                org,
                8,
                "customer.renamed",
                json!({
                "customerId": c, "legalName": "Kōwhai Limited", "displayName": "Kōwhai Ltd"}),
            ),
            event(
                customer,
                org,
                9,
                "customer.from.the.future",
                json!({"customerId": c}),
            ),
        ]
    };
    let org = Uuid::now_v7();
    let (one_by_one, batched) = (Uuid::now_v7(), Uuid::now_v7());
    for e in history(one_by_one, org) {
        let mut tx = env.pool.begin().await.unwrap();
        assert_eq!(
            apply_once(&mut tx, &CustomersProjection, &e, None)
                .await
                .unwrap(),
            Applied::Applied
        );
        tx.commit().await.unwrap();
    }
    let events = history(batched, org);
    let mut tx = env.pool.begin().await.unwrap();
    let mut versions = Versions::load(
        &mut tx,
        &CustomersProjection,
        events
            .iter()
            .map(|e| (e.aggregate_type.as_str(), e.aggregate_id.as_str())),
    )
    .await
    .unwrap();
    for e in &events {
        assert_eq!(versions.admit(e, None).unwrap(), Applied::Applied);
    }
    let refs: Vec<&Envelope> = events.iter().collect();
    CustomersProjection
        .apply_batch(&mut tx, &refs)
        .await
        .unwrap();
    versions.store(&mut tx).await.unwrap();
    tx.commit().await.unwrap();

    let row = |id: Uuid| {
        let pool = env.pool.clone();
        async move {
            let (row,): (Value,) = sqlx::query_as(
                "SELECT to_jsonb(c) - 'id' - 'created_at' - 'updated_at' - 'created_by' - 'updated_by'
                 FROM rm_customers c WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
            row
        }
    };
    let expected = json!({
        "organization_id": org, "legal_name": "Kōwhai Limited", "display_name": "Kōwhai Ltd",
        "email": "b@kowhai.example.com", "phone": null,
        "billing_line1": "1 Lambton Quay", "billing_line2": "Level 3", "billing_city": "Wellington",
        "billing_region": "Wellington", "billing_postal_code": null, "billing_country": "NZ",
        "tax_number": null, "currency": "AUD", "payment_terms_days": 30, "tags": ["a", "b"],
        "status": "archived", "archive_reason": "closed", "version": 8,
    });
    assert_eq!(row(one_by_one).await, expected);
    assert_eq!(row(batched).await, expected);
    let (versions,): (i64,) = sqlx::query_as(
        "SELECT version FROM projection_versions WHERE projection = 'customers' AND aggregate_id = $1",
    )
    .bind(batched.to_string())
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        versions, 9,
        "the unknown event moves the version, not the row"
    );

    // One batch creating a customer and changing one that exists: the
    // existing row is read and changed, the new one starts from its
    // creation.
    let newcomer = Uuid::now_v7();
    // Tags with the characters an array's text quotes or escapes.
    let tricky_tags = json!([
        "c",
        "\"quoted\"",
        "back\\slash",
        "a,b {c}",
        "NULL",
        "",
        " kōwhai "
    ]);
    let mut mixed = history(newcomer, org);
    mixed.truncate(1);
    mixed.push(event(
        batched,
        org,
        10,
        "customer.tags.changed",
        json!({"customerId": batched.to_string(), "tags": tricky_tags.clone()}),
    ));
    mixed.push(event(
        newcomer,
        org,
        2,
        "customer.renamed",
        json!({
        "customerId": newcomer.to_string(), "legalName": "Rātā Limited", "displayName": "Rātā"}),
    ));
    // A third customer, created and untagged in the same batch.
    let untagged = Uuid::now_v7();
    mixed.extend(history(untagged, org).into_iter().take(1));
    mixed.push(event(
        untagged,
        org,
        2,
        "customer.tags.changed",
        json!({"customerId": untagged.to_string(), "tags": []}),
    ));
    let mut tx = env.pool.begin().await.unwrap();
    let refs: Vec<&Envelope> = mixed.iter().collect();
    CustomersProjection
        .apply_batch(&mut tx, &refs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut changed = expected.clone();
    changed["tags"] = tricky_tags;
    changed["version"] = json!(10);
    assert_eq!(row(batched).await, changed);
    let created = row(newcomer).await;
    assert_eq!(
        (
            &created["legal_name"],
            &created["email"],
            &created["tags"],
            &created["version"]
        ),
        (
            &json!("Rātā Limited"),
            &json!("a@kowhai.example.com"),
            &json!(["consulting"]),
            &json!(2)
        )
    );
    let untagged = row(untagged).await;
    assert_eq!(
        (&untagged["tags"], &untagged["version"]),
        (&json!([]), &json!(2))
    );

    // Events of a customer that was never created change nothing.
    let ghost = Uuid::now_v7();
    let mut tx = env.pool.begin().await.unwrap();
    let orphan = event(
        ghost,
        org,
        1,
        "customer.renamed",
        json!({
        "customerId": ghost, "legalName": "Ghost Limited", "displayName": "Ghost"}),
    );
    CustomersProjection.apply(&mut tx, &orphan).await.unwrap();
    tx.commit().await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM rm_customers WHERE id = $1")
        .bind(ghost)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

/// The search projection keeps no versions: it takes every event, repeated
/// and late ones too, its queue holds the highest version seen, it writes no
/// `projection_versions` row, and its position still moves.
#[tokio::test]
async fn a_projection_keeping_no_versions_takes_every_event_and_writes_none() {
    let env = TestEnv::new().await;
    let (customer, org) = (Uuid::now_v7(), Uuid::now_v7());
    let renamed = |version| {
        event(
            customer,
            org,
            version,
            "customer.renamed",
            json!({"customerId": customer, "legalName": "Renamed Ltd", "displayName": "Renamed"}),
        )
    };
    let mut tx = env.pool.begin().await.unwrap();
    for (version, position) in [(3, 30), (1, 10), (3, 30), (2, 20)] {
        assert_eq!(
            apply_once(
                &mut tx,
                &SearchProjection,
                &renamed(version),
                Some(position)
            )
            .await
            .unwrap(),
            Applied::Applied,
            "version {version}"
        );
    }
    tx.commit().await.unwrap();
    let (pending,): (i64,) = sqlx::query_as(
        "SELECT version FROM search_pending WHERE aggregate_type = 'customer' AND aggregate_id = $1",
    )
    .bind(customer.to_string())
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(pending, 3);
    let (versions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM projection_versions WHERE projection = 'search'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(versions, 0);
    let (position,): (i64,) = sqlx::query_as(
        "SELECT last_position FROM projection_positions WHERE projection = 'search'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(position, 30);
}

/// Two batches on different partitions that move the same organizations'
/// counts in crossed order: one archives a customer of the second
/// organization and creates one in the first, the other archives one of
/// the first and creates one in the second. Written as they were before
/// ADR 0041's update (the update trigger's counts, then the insert
/// trigger's), each would hold what the other waits for. A third
/// transaction holds one count so that both are caught mid-write; once it
/// lets go, both must commit, and the counts must equal the rows.
#[tokio::test]
async fn batches_moving_counts_in_crossed_order_wait_for_each_other_instead_of_deadlocking() {
    let env = TestEnv::new().await;
    let mut orgs = [Uuid::now_v7(), Uuid::now_v7()];
    orgs.sort();
    let [first, second] = orgs;
    let archived = |customer: Uuid, org: Uuid, version: u64| {
        event(
            customer,
            org,
            version,
            "customer.archived",
            json!({"customerId": customer, "reason": null}),
        )
    };
    // Each organization: one active customer, one archived.
    let active = [Uuid::now_v7(), Uuid::now_v7()];
    let mut seed = Vec::new();
    for (org, customer) in orgs.into_iter().zip(active) {
        let gone = Uuid::now_v7();
        seed.extend([
            created(customer, org),
            created(gone, org),
            archived(gone, org, 2),
        ]);
    }
    let (one, other) = cross(
        &env.pool,
        CustomersProjection,
        &seed,
        Held {
            table: "rm_customer_counts",
            organization: second,
            status: "archived",
        },
        vec![
            archived(active[1], second, 2),
            created(Uuid::now_v7(), first),
        ],
        vec![
            archived(active[0], first, 2),
            created(Uuid::now_v7(), second),
        ],
    )
    .await;
    assert!(one.is_ok(), "first batch: {one:?}");
    assert!(other.is_ok(), "second batch: {other:?}");

    let (counts, rows) =
        counts_and_rows(&env.pool, "rm_customer_counts", "customers", "rm_customers").await;
    assert_eq!(counts, rows);
    let expected: Vec<(Uuid, String, i64)> = orgs
        .into_iter()
        .flat_map(|org| [(org, "active".into(), 1), (org, "archived".into(), 2)])
        .collect();
    assert_eq!(counts, expected);
}

/// A rebuild's catch-up writes its copy of `rm_customers`, found first on
/// its `search_path`: it neither locks nor creates a live count.
#[tokio::test]
async fn a_rebuilds_copy_touches_no_live_count() {
    use pivotal_projectors::framework::Projection;

    let env = TestEnv::new().await;
    let (customer, org) = (Uuid::now_v7(), Uuid::now_v7());
    let created = created(customer, org);
    let mut tx = env.pool.begin().await.unwrap();
    for statement in [
        "CREATE SCHEMA copy",
        "CREATE TABLE copy.rm_customers (LIKE public.rm_customers INCLUDING ALL)",
        "SET LOCAL search_path TO copy, public",
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    CustomersProjection
        .apply_batch(&mut tx, &[&created])
        .await
        .unwrap();
    let (copied,): (i64,) = sqlx::query_as("SELECT count(*) FROM copy.rm_customers")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let (counts,): (i64,) = sqlx::query_as("SELECT count(*) FROM public.rm_customer_counts")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!((copied, counts), (1, 0));
}

/// A customer's row is keyed by its id alone (ADR 0058): events naming
/// the same id under another organization neither take the row over nor
/// write a second one, nor write the row again: a creation (written
/// without reading, refused by the upsert's guard) and a change (read by
/// id, the other organization's row left out of the batch).
#[tokio::test]
async fn an_id_under_another_organization_leaves_the_row_as_it_is() {
    let env = TestEnv::new().await;
    let (customer, org, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut taken =
        serde_json::to_value(pivotal_domain::customer::sample_created(customer, other)).unwrap();
    taken["legalName"] = json!("Other Organization Ltd");
    taken["displayName"] = json!("Other");
    let taken = event(customer, other, 2, "customer.created", taken);
    let renamed = event(
        customer,
        other,
        3,
        "customer.renamed",
        json!({"customerId": customer, "legalName": "Renamed Ltd", "displayName": "Renamed"}),
    );
    let apply = async |event: &Envelope| {
        apply_committed(&env.pool, &CustomersProjection, &[event]).await;
    };
    // The rows under the id, with the transaction that wrote each.
    let rows = async || -> Vec<(Uuid, String, i64, String)> {
        sqlx::query_as(
            "SELECT organization_id, legal_name, version, xmin::text FROM rm_customers
             WHERE id = $1",
        )
        .bind(customer)
        .fetch_all(&env.pool)
        .await
        .unwrap()
    };
    apply(&created(customer, org)).await;
    let before = rows().await;
    assert_eq!(before.len(), 1);
    assert_eq!((before[0].0, before[0].2), (org, 1));
    apply(&taken).await;
    assert_eq!(rows().await, before);
    apply(&renamed).await;
    assert_eq!(rows().await, before);
}

/// The versions a batch locks are found through the primary key, whatever
/// the table held when the connection first ran the statement: a join of
/// the batch's keys with the table, planned once while the table was
/// small, scanned all of it for every batch after it grew (ADR 0056).
#[tokio::test]
async fn a_batch_reads_only_its_own_versions_however_the_table_grew() {
    use pivotal_projectors::framework::Versions;
    use sqlx::Connection;
    let env = TestEnv::new().await;
    let mut conn = env.pool.acquire().await.unwrap();
    let lock = async |conn: &mut sqlx::PgConnection, count: usize| {
        let ids: Vec<String> = (0..count).map(|_| Uuid::now_v7().to_string()).collect();
        let mut tx = conn.begin().await.unwrap();
        let before = reads(&mut tx, "projection_versions_customers").await;
        Versions::load(
            &mut tx,
            &CustomersProjection,
            ids.iter().map(|id| ("customer", id.as_str())),
        )
        .await
        .unwrap();
        let after = reads(&mut tx, "projection_versions_customers").await;
        tx.commit().await.unwrap();
        let [scans, scanned, _] = read_during(before, after);
        (scans, scanned)
    };
    // Batches on a nearly empty table, more than the five a prepared
    // statement is planned afresh for.
    for _ in 0..10 {
        lock(&mut conn, 50).await;
    }
    sqlx::query(
        "INSERT INTO projection_versions
         SELECT 'customers', 'customer', gen_random_uuid()::text, 1
         FROM generate_series(1, 20000)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    assert_eq!(lock(&mut conn, 50).await, (0, 0), "no row read by a scan");
}

/// What the session has read of `table`: scans, rows read by scans, and
/// rows fetched through indexes. The view holds what the session has not
/// yet reported as well as the current transaction's own figures, so a
/// batch's are the difference across it ([`read_during`]).
async fn reads(conn: &mut sqlx::PgConnection, table: &str) -> [i64; 3] {
    let (scans, scanned, fetched): (i64, i64, i64) = sqlx::query_as(
        "SELECT seq_scan, seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables
         WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(conn)
    .await
    .unwrap();
    [scans, scanned, fetched]
}

/// What was read of `table` between two [`reads`].
fn read_during(before: [i64; 3], after: [i64; 3]) -> [i64; 3] {
    [0, 1, 2].map(|i| after[i] - before[i])
}

/// A batch's customers, and the dashboard's and the search indexer's
/// lookups of them by id, are read through the indexes on the projector's
/// own connections, whatever the table held when the connection first
/// ran them (ADR 0057): planned with the batch's keys, and with reads out
/// of order priced as the projector's settings say, the planner probes
/// the indexes for 500 keys in 40,000 rows instead of scanning them all,
/// and probes the key on `id`, not an index led by the organization that
/// holds all 40,000 (ADR 0058).
#[tokio::test]
async fn a_batch_reads_its_customers_through_the_indexes_however_the_table_grew() {
    use pivotal_projectors::framework::Projection;
    use pivotal_search::EntityKind;
    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    settings.database.max_connections = 1;
    let pool = pivotal_projectors::db::connect(&settings, "pivotal-projector")
        .await
        .unwrap();
    let (cost,): (String,) = sqlx::query_as("SHOW random_page_cost")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(cost, settings.projector.random_page_cost.get().to_string());
    sqlx::query("ALTER TABLE rm_customers SET (autovacuum_enabled = false)")
        .execute(&env.pool)
        .await
        .unwrap();
    let org = Uuid::now_v7();
    // One batch on the projector's connection: the customers' events, then
    // the two lookups of their ids; what it read of rm_customers by scans
    // (scans, rows) and the rows it fetched through indexes.
    let batch = async |events: Vec<Envelope>| {
        let ids: Vec<Uuid> = events
            .iter()
            .map(|e| e.aggregate_id.parse().unwrap())
            .collect();
        let refs: Vec<&Envelope> = events.iter().collect();
        let mut tx = pool.begin().await.unwrap();
        let before = reads(&mut tx, "rm_customers").await;
        CustomersProjection
            .apply_batch(&mut tx, &refs)
            .await
            .unwrap();
        let figures = pivotal_projectors::dashboard::figures(&mut tx, "customer", &ids)
            .await
            .unwrap();
        let documents = pivotal_projectors::search::documents(&mut tx, EntityKind::Customer, &ids)
            .await
            .unwrap();
        assert_eq!((figures.len(), documents.len()), (ids.len(), ids.len()));
        let after = reads(&mut tx, "rm_customers").await;
        tx.commit().await.unwrap();
        let [scans, scanned, fetched] = read_during(before, after);
        ((scans, scanned), fetched)
    };
    // Batches on a nearly empty table, more than the five a prepared
    // statement is planned afresh for: each creates 50 customers and
    // changes the tags of the 50 the one before created, so each but the
    // first reads rows.
    let mut earlier: Vec<Uuid> = Vec::new();
    for _ in 0..10 {
        let new: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        let mut events: Vec<Envelope> = new.iter().map(|id| created(*id, org)).collect();
        events.extend(earlier.iter().map(|customer| {
            event(
                *customer,
                org,
                2,
                "customer.tags.changed",
                json!({"customerId": customer, "tags": ["early"]}),
            )
        }));
        batch(events).await;
        earlier = new;
    }
    // Rows as wide as the API's customers, as many as a benchmark run
    // leaves.
    let grown: Vec<(Uuid,)> = sqlx::query_as(
        "INSERT INTO rm_customers (organization_id, id, legal_name, display_name, email, phone,
                                   billing_line1, billing_city, billing_postal_code,
                                   billing_country, tax_number, currency, payment_terms_days,
                                   tags, status, version, created_at, updated_at)
         SELECT $1, gen_random_uuid(), 'Customer ' || n || ' Limited', 'Customer ' || n,
                'accounts' || n || '@customer.example.com', '+6495550100', '12 Queen Street',
                'Auckland', '1010', 'NZ', '123-456-789', 'NZD', 20, ARRAY['t' || n], 'active',
                1, now(), now()
         FROM generate_series(1, 40000) AS n
         RETURNING id",
    )
    .bind(org)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let changes: Vec<Envelope> = grown
        .iter()
        .step_by(80)
        .map(|(customer,)| {
            event(
                *customer,
                org,
                2,
                "customer.tags.changed",
                json!({"customerId": customer, "tags": ["grown"]}),
            )
        })
        .collect();
    assert_eq!(changes.len(), 500);
    let (scans, fetched) = batch(changes).await;
    assert_eq!(scans, (0, 0), "no row read by a scan");
    // Each customer's row fetched once by each of the four reads: the
    // batch's load, its upsert's conflict check, the two lookups.
    assert!(
        fetched <= 4 * 500,
        "{fetched} rows fetched through indexes for 500 customers"
    );
}
