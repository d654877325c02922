//! The lag measures against a real PostgreSQL: what they count, and that
//! they read the few events after a position through an index, never the
//! whole log, on a log the planner has no statistics for (ADR 0053).
#![allow(clippy::unwrap_used)]

use pivotal_event_store::log::{self, Checkpoint};
use pivotal_projectors::framework::{
    NEAR_END, UNAPPLIED_ALL, UNAPPLIED_FAR_BACK, UNAPPLIED_NEAR_END, unapplied, unapplied_each,
};
use pivotal_test_support::TestEnv;
use serde_json::Value;
use sqlx::PgPool;

/// Appends `count` events of `aggregate_type`, each of its own aggregate
/// (named from `prefix`), in one transaction; returns the log position of
/// the last.
async fn append(pool: &PgPool, aggregate_type: &str, prefix: &str, count: i64) -> Checkpoint {
    let (tx_id, position): (i64, i64) = sqlx::query_as(
        "WITH appended AS (
           INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                               payload, metadata)
           SELECT $1, $2 || g, 1, $1 || '.created', '1',
                  json_build_object('data', json_build_object('note', repeat('x', 300))), '{}'
           FROM generate_series(1, $3::bigint) AS g
           RETURNING tx_id, global_position)
         SELECT (tx_id::text)::bigint, global_position FROM appended
         ORDER BY global_position DESC LIMIT 1",
    )
    .bind(aggregate_type)
    .bind(prefix)
    .bind(count)
    .fetch_one(pool)
    .await
    .unwrap();
    Checkpoint { tx_id, position }
}

/// Every node of an `EXPLAIN (FORMAT JSON)` plan, depth first.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut found = vec![plan];
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            found.extend(nodes(child));
        }
    }
    found
}

/// The plan PostgreSQL chooses for `statement` with `binds` in a
/// [`log::begin_by_index`] transaction, as the measures run it; asserts
/// that it reads `events` through an index, with no parallel worker.
async fn assert_read_by_index(pool: &PgPool, statement: &str, binds: impl BindAll) {
    let mut tx = log::begin_by_index(pool).await.unwrap();
    let explain = format!("EXPLAIN (FORMAT JSON) {statement}");
    let (plan,): (sqlx::types::Json<Value>,) = binds
        .bind_all(sqlx::query_as(&explain))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let root = &plan.0[0]["Plan"];
    let all = nodes(root);
    let on_events: Vec<&str> = all
        .iter()
        .filter(|n| n["Relation Name"] == "events")
        .map(|n| n["Node Type"].as_str().unwrap())
        .collect();
    assert!(!on_events.is_empty(), "no scan of events in {root:#}");
    assert!(
        on_events
            .iter()
            .all(|t| matches!(*t, "Index Scan" | "Index Only Scan" | "Bitmap Heap Scan")),
        "events read by {on_events:?} in {root:#}"
    );
    assert!(
        all.iter()
            .all(|n| !n["Node Type"].as_str().unwrap().starts_with("Gather")),
        "parallel workers in {root:#}"
    );
}

type Query<'q> = sqlx::query::QueryAs<
    'q,
    sqlx::Postgres,
    (sqlx::types::Json<Value>,),
    sqlx::postgres::PgArguments,
>;

trait BindAll {
    fn bind_all(self, query: Query<'_>) -> Query<'_>;
}

impl BindAll for (i64, i64) {
    fn bind_all(self, query: Query<'_>) -> Query<'_> {
        query.bind(self.0).bind(self.1)
    }
}

impl BindAll for Vec<&'static str> {
    fn bind_all(self, query: Query<'_>) -> Query<'_> {
        query.bind(self)
    }
}

impl BindAll for (i64, Vec<&'static str>) {
    fn bind_all(self, query: Query<'_>) -> Query<'_> {
        query.bind(self.0).bind(self.1)
    }
}

#[tokio::test]
async fn the_relay_lag_counts_the_events_after_its_checkpoint_through_the_log_order() {
    let env = TestEnv::new().await;
    let checkpoint = append(&env.pool, "customer", "c", 150_000).await;
    append(&env.pool, "customer", "d", 7).await;
    append(&env.pool, "quote", "q", 5).await;

    let behind = log::behind(&env.pool, checkpoint).await.unwrap();
    assert_eq!(behind.events, 12);
    assert!(behind.oldest_seconds.is_some_and(|s| s >= 0.0));
    let everything = log::behind(&env.pool, Checkpoint::default()).await.unwrap();
    assert_eq!(everything.events, 150_012);
    let last = append(&env.pool, "customer", "e", 1).await;
    let none = log::behind(&env.pool, last).await.unwrap();
    assert_eq!((none.events, none.oldest_seconds), (0, None));

    assert_read_by_index(
        &env.pool,
        log::BEHIND,
        (checkpoint.tx_id, checkpoint.position),
    )
    .await;
}

#[tokio::test]
async fn a_projection_lag_counts_its_own_types_after_its_position_through_an_index() {
    let env = TestEnv::new().await;
    let first = append(&env.pool, "customer", "b", 1).await;
    let applied = append(&env.pool, "customer", "c", 149_999).await;
    append(&env.pool, "quote", "q", 5).await;
    append(&env.pool, "customer", "d", 7).await;
    sqlx::query(
        "INSERT INTO projection_positions (projection, last_position)
         VALUES ('customers', $1), ('search', $2), ('users', $2)",
    )
    .bind(applied.position)
    .bind(first.position)
    .execute(&env.pool)
    .await
    .unwrap();

    // Near the log's end: the events after the position, of its types.
    let customers = unapplied(&env.pool, "customers", &["customer"])
        .await
        .unwrap();
    assert_eq!(customers.events, 7);
    assert!(customers.oldest_seconds.is_some_and(|s| s >= 0.0));
    let both = unapplied(&env.pool, "customers", &["customer", "quote"])
        .await
        .unwrap();
    assert_eq!(both.events, 12);
    // Far back: catching up, or no event of its types since.
    let catching_up = unapplied(&env.pool, "search", &["customer"]).await.unwrap();
    assert_eq!(catching_up.events, 149_999 + 7);
    let users = unapplied(&env.pool, "users", &["user"]).await.unwrap();
    assert_eq!((users.events, users.oldest_seconds), (0, None));
    // Nothing applied: every event of its types.
    let quotes = unapplied(&env.pool, "quotes", &["quote"]).await.unwrap();
    assert_eq!(quotes.events, 5);

    // All of them in one transaction, in the order asked, each counted as
    // on its own (the ages grow between the reads, so only the counts and
    // whether there is an oldest are compared).
    let wanted: [(&str, &[&str]); 5] = [
        ("quotes", &["quote"]),
        ("customers", &["customer"]),
        ("users", &["user"]),
        ("search", &["customer"]),
        ("customers", &["customer", "quote"]),
    ];
    let each = unapplied_each(&env.pool, &wanted).await.unwrap();
    let counted: Vec<(i64, bool)> = each
        .iter()
        .map(|lag| (lag.events, lag.oldest_seconds.is_some()))
        .collect();
    assert_eq!(
        counted,
        [
            (5, true),
            (7, true),
            (0, false),
            (149_999 + 7, true),
            (12, true)
        ]
    );
    assert!(
        unapplied_each(&env.pool, &[]).await.unwrap().is_empty(),
        "nothing asked, nothing read"
    );

    const { assert!(NEAR_END < 149_999) };
    assert_read_by_index(
        &env.pool,
        UNAPPLIED_NEAR_END,
        (applied.position, vec!["customer"]),
    )
    .await;
    assert_read_by_index(
        &env.pool,
        UNAPPLIED_FAR_BACK,
        (first.position, vec!["user"]),
    )
    .await;
    assert_read_by_index(&env.pool, UNAPPLIED_ALL, vec!["quote"]).await;
}
