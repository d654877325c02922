//! Events held above the horizon (ADR 0002) by a transaction left open
//! elsewhere in the cluster: the relay names that transaction, the oldest
//! of those open (ADR 0050), publishes nothing of them while it is open,
//! and publishes them, in order and once each, as soon as it ends.

use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use pivotal_test_support::{TestEnv, eventually, postgres_server};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use uuid::Uuid;

use crate::harness::{create_customer, spawn_relay_with, store_events, verify_topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_held_by_a_transaction_open_in_another_database_name_it_and_follow_its_end() {
    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    settings.relay.held_warning_ms = NonZeroU64::new(300).unwrap();
    let (url, _api) = env.spawn_command_api().await;
    let token = env.token(Uuid::now_v7(), &["manager"]);
    let (_relay, status) = spawn_relay_with(&env, settings);

    // A transaction with an id, in another database of the same cluster,
    // left open: every transaction id after it is above the horizon.
    let application = format!(
        "horizon-holder-{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let mut blocker =
        PgConnectOptions::from_str(&format!("{}/postgres?sslmode=disable", postgres_server()))
            .unwrap()
            .application_name(&application)
            .connect()
            .await
            .unwrap();
    let pid = hold_the_horizon(&mut blocker).await;
    // A younger one in the test's own database: the older holds the
    // horizon, and is the one named.
    let mut younger = env.pool.acquire().await.unwrap().detach();
    hold_the_horizon(&mut younger).await;

    let (_id, _) = create_customer(&url, &token, "Held Limited").await;
    let held = eventually(Duration::from_secs(30), || {
        let status = status.clone();
        async move {
            let held = status.borrow().held.clone()?;
            held.holder
                .as_ref()
                .is_some_and(|holder| holder.pid == pid)
                .then_some(held)
        }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the relay never named the open transaction: {:?}",
            *status.borrow()
        )
    });
    assert!(held.events >= 1, "{held:?}");
    assert!(held.oldest_ms >= 300, "{held:?}");
    let holder = held.holder.unwrap();
    assert_eq!(holder.database.as_deref(), Some("postgres"));
    assert_eq!(holder.application.as_deref(), Some(application.as_str()));
    assert_eq!(holder.state.as_deref(), Some("idle in transaction"));
    assert!(holder.open_seconds.is_some(), "{holder:?}");
    // Nothing of the held events went out.
    assert_eq!(status.borrow().published, 0);

    // Once the transaction ends, the events go out and the relay says
    // nothing is held.
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut younger).await.unwrap();
    eventually(Duration::from_secs(30), || {
        let status = status.clone();
        async move {
            let status = status.borrow();
            (status.published >= 1 && status.held.is_none()).then_some(())
        }
    })
    .await
    .unwrap_or_else(|| panic!("the held events never went out: {:?}", *status.borrow()));
    let stored = store_events(&env).await;
    assert!(!stored.is_empty());
    let (_, distinct) = verify_topic(&env, &stored, false).await;
    assert_eq!(distinct, stored.len());
}

/// Begins a transaction on `conn` and gives it a transaction id; returns
/// the connection's process id.
async fn hold_the_horizon(conn: &mut PgConnection) -> i32 {
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *conn)
        .await
        .unwrap();
    pid
}
