//! The read models' schema against a real PostgreSQL: the tables the
//! dashboard and the search indexer read by id alone (`id = ANY($1)`, their
//! queues carry no organization) have an index led by `id`, so those reads
//! do not scan the whole table.
#![allow(clippy::unwrap_used)]

use pivotal_projectors::dashboard::KINDS;
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
