//! The read models' schema against a real PostgreSQL: the tables the
//! dashboard and the search indexer read by id alone (`id = ANY($1)`, their
//! queues carry no organization) have an index led by `id`, unique where
//! ids are, and those reads are planned with their ids, so they do not scan
//! the whole table.
#![allow(clippy::unwrap_used)]

use pivotal_projectors::dashboard::KINDS;
use pivotal_search::EntityKind;
use pivotal_test_support::TestEnv;

#[tokio::test]
async fn tables_read_by_id_alone_have_an_index_led_by_id() {
    let env = TestEnv::new().await;
    for (kind, table) in KINDS {
        let (led_by_id,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (
               SELECT 1 FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = $1::regclass AND a.attname = 'id')",
        )
        .bind(table)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert!(led_by_id, "{table} ({kind}) has no index led by id");
    }
}

/// Customers' and quotes' ids are their aggregates' ids, unique across
/// organizations, and their keys say so (ADR 0039, 0058): before the table
/// has statistics, a lookup of 300 ids is then estimated at 300 rows, not
/// at the whole table (half a percent of it per id), so the planner has
/// no reason to scan it.
#[tokio::test]
async fn a_lookup_of_many_ids_is_estimated_at_their_number_without_statistics() {
    let env = TestEnv::new().await;
    for table in ["rm_customers", "rm_quotes"] {
        // Each unique index of the table: whether it is the key, and its
        // columns.
        let unique: Vec<(bool, Vec<String>)> = sqlx::query_as(
            "SELECT i.indisprimary,
                    array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, o)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                          ORDER BY k.o)
             FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique
             ORDER BY 1 DESC, 2",
        )
        .bind(table)
        .fetch_all(&env.pool)
        .await
        .unwrap();
        // The key is the id alone, and no other unique index repeats it.
        assert_eq!(
            unique.first(),
            Some(&(true, vec!["id".into()])),
            "{table}: {unique:?}"
        );
        assert_eq!(
            unique
                .iter()
                .filter(|(_, columns)| columns == &["id"])
                .count(),
            1,
            "{table}: {unique:?}"
        );
    }
    sqlx::query("ALTER TABLE rm_customers SET (autovacuum_enabled = false)")
        .execute(&env.pool)
        .await
        .unwrap();
    let ids: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "INSERT INTO rm_customers (organization_id, id, legal_name, display_name, currency,
                                   payment_terms_days, status, version, created_at, updated_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'Customer ' || n, 'Customer ' || n, 'NZD',
                20, 'active', 1, now(), now()
         FROM generate_series(1, 20000) AS n
         RETURNING id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let wanted: Vec<uuid::Uuid> = ids.iter().step_by(60).map(|(id,)| *id).take(300).collect();
    assert_eq!(wanted.len(), 300);
    let (reltuples,): (f32,) =
        sqlx::query_as("SELECT reltuples FROM pg_class WHERE oid = 'rm_customers'::regclass")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(reltuples < 0.0, "the table has statistics: {reltuples}");
    let (plan,): (serde_json::Value,) = sqlx::query_as(
        "EXPLAIN (FORMAT JSON) SELECT id, version FROM rm_customers WHERE id = ANY($1)",
    )
    .bind(&wanted)
    .persistent(false)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let estimated = plan[0]["Plan"]["Plan Rows"].as_f64().unwrap();
    assert!(
        (300.0..=600.0).contains(&estimated),
        "estimated {estimated} rows for 300 ids: {plan}"
    );
}

/// Named statements on the pool's one connection whose text contains `part`.
async fn named_statements(pool: &sqlx::PgPool, part: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT statement FROM pg_prepared_statements WHERE strpos(statement, $1) > 0",
    )
    .bind(part)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The dashboard's and the search indexer's lookups by id are unnamed
/// statements, planned with each batch's ids (ADR 0039): after a dozen
/// batches the connection holds no prepared statement of theirs, whose
/// generic plan could go on scanning a table that has grown since.
#[tokio::test]
async fn lookups_by_id_are_planned_with_each_batch_of_ids() {
    let env = TestEnv::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&env.database_url)
        .await
        .unwrap();
    let ids: Vec<uuid::Uuid> = (0..300).map(|_| uuid::Uuid::new_v4()).collect();
    for _ in 0..12 {
        let mut conn = pool.acquire().await.unwrap();
        for (kind, _) in KINDS {
            let figures = pivotal_projectors::dashboard::figures(&mut conn, kind, &ids)
                .await
                .unwrap();
            assert!(figures.is_empty());
        }
        for kind in [EntityKind::Customer, EntityKind::Quote, EntityKind::User] {
            let documents = pivotal_projectors::search::documents(&mut conn, kind, &ids)
                .await
                .unwrap();
            assert!(documents.is_empty());
        }
    }
    assert_eq!(
        named_statements(&pool, "id = ANY($1)").await,
        Vec::<String>::new()
    );
    // The view lists the named statements a connection prepared.
    let _: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT id FROM rm_users WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(named_statements(&pool, "id = ANY($1)").await.len(), 1);
}
