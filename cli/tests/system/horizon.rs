//! Events held above the horizon (ADR 0002) by a transaction left open
//! elsewhere in the cluster: the relay names that transaction, the one at
//! the horizon (ADR 0050), publishes nothing of them while it is open, and
//! publishes them, in order and once each, as soon as it ends. What the
//! relay may name of it, by kind and by the privileges of its role, is
//! checked on a server of the test's own, where no other test's
//! transaction takes the horizon.

use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use pivotal_event_store::log::{HoldingSession, HorizonHolder, horizon_holder};
use pivotal_test_support::{TestEnv, eventually, postgres_server};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgConnection, PgPool};
use uuid::Uuid;

use crate::harness::{create_customer, spawn_relay_with, store_events, verify_topic};
use crate::private_postgres::PrivatePostgres;

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
    let (pid, transaction) = hold_the_horizon(&mut blocker).await;
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
                .and_then(|holder| holder.session.as_ref())
                .is_some_and(|session| session.pid == pid)
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
    assert_eq!(holder.transaction, transaction);
    assert_eq!(holder.prepared, None);
    let session = holder.session.unwrap();
    assert_eq!(session.database.as_deref(), Some("postgres"));
    assert_eq!(session.application.as_deref(), Some(application.as_str()));
    assert_eq!(session.state.as_deref(), Some("idle in transaction"));
    assert!(session.open_seconds.is_some(), "{session:?}");
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
/// the connection's process id and the transaction's id (as an `xid`).
async fn hold_the_horizon(conn: &mut PgConnection) -> (i32, i64) {
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    sqlx::query_as("SELECT pg_backend_pid(), pg_current_xact_id()::xid::text::bigint")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_named_is_the_transaction_at_the_horizon_with_what_the_role_may_see() {
    let server = PrivateServer::start();
    let admin = server.pool("postgres").await;
    assert_eq!(horizon_holder(&admin).await.unwrap(), None, "nothing runs");
    sqlx::query("CREATE ROLE watcher LOGIN")
        .execute(&admin)
        .await
        .unwrap();
    let watcher = server.pool("watcher").await;

    // An open transaction holds nothing back until one begun after it
    // commits.
    let mut other = server.connect("postgres", "the-holder").await;
    let (pid, transaction) = hold_the_horizon(&mut other).await;
    let mut younger = server.connect("watcher", "younger").await;
    let (younger_pid, younger_transaction) = hold_the_horizon(&mut younger).await;
    assert_eq!(horizon_holder(&admin).await.unwrap(), None);
    // Then another role's session holds the horizon, and is named before
    // the watcher's own younger one. Without pg_read_all_stats the
    // watcher sees whose it is, not its state or how long it has been
    // open.
    commit_one(&admin).await;
    assert_eq!(
        horizon_holder(&watcher).await.unwrap().unwrap(),
        HorizonHolder {
            transaction,
            session: Some(HoldingSession {
                pid,
                database: Some("postgres".into()),
                user: Some("postgres".into()),
                application: Some("the-holder".into()),
                state: None,
                open_seconds: None,
            }),
            prepared: None
        }
    );
    // A superuser sees those too, and so does a member of
    // pg_read_all_stats.
    assert_session_named(&admin, transaction, pid).await;
    sqlx::query("GRANT pg_read_all_stats TO watcher")
        .execute(&admin)
        .await
        .unwrap();
    assert_session_named(&watcher, transaction, pid).await;
    // Once it ends, the younger one holds the horizon.
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let holder = horizon_holder(&admin).await.unwrap().unwrap();
    assert_eq!(holder.transaction, younger_transaction);
    let session = holder.session.unwrap();
    assert_eq!(
        (session.pid, session.user.as_deref()),
        (younger_pid, Some("watcher"))
    );
    sqlx::query("ROLLBACK").execute(&mut younger).await.unwrap();
    assert_eq!(horizon_holder(&admin).await.unwrap(), None);

    // A prepared transaction belongs to no session, and holds the horizon
    // after its session has gone.
    let mut preparing = server.connect("postgres", "preparing").await;
    let (_, prepared) = hold_the_horizon(&mut preparing).await;
    sqlx::query("PREPARE TRANSACTION 'pf-held'")
        .execute(&mut preparing)
        .await
        .unwrap();
    drop(preparing);
    commit_one(&admin).await;
    let holder = horizon_holder(&watcher).await.unwrap().unwrap();
    assert_eq!(holder.transaction, prepared);
    assert_eq!(holder.session, None);
    let named = holder.prepared.unwrap();
    assert_eq!(
        (
            named.gid.as_str(),
            named.database.as_str(),
            named.owner.as_str()
        ),
        ("pf-held", "postgres", "postgres")
    );
    assert!(named.prepared_seconds >= 0, "{named:?}");
    sqlx::query("ROLLBACK PREPARED 'pf-held'")
        .execute(&admin)
        .await
        .unwrap();
    assert_eq!(horizon_holder(&watcher).await.unwrap(), None);
}

/// Commits a transaction with an id, as an event's would be: one that a
/// transaction begun before it and still open holds above the horizon
/// (until then, an open transaction holds nothing back, and none is at
/// the horizon).
async fn commit_one(pool: &PgPool) {
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(pool)
        .await
        .unwrap();
}

/// Checks that `pool`'s role sees the session `pid`, of `postgres` in the
/// `postgres` database, idle in `transaction`, at the horizon, and how
/// long it has been open.
async fn assert_session_named(pool: &PgPool, transaction: i64, pid: i32) {
    let holder = horizon_holder(pool).await.unwrap().unwrap();
    assert_eq!(holder.transaction, transaction);
    assert_eq!(holder.prepared, None);
    let session = holder.session.expect("the session at the horizon");
    assert_eq!(session.pid, pid);
    assert_eq!(session.database.as_deref(), Some("postgres"));
    assert_eq!(session.user.as_deref(), Some("postgres"));
    assert_eq!(session.application.as_deref(), Some("the-holder"));
    assert_eq!(session.state.as_deref(), Some("idle in transaction"));
    assert!(session.open_seconds.is_some_and(|s| s >= 0), "{session:?}");
}

/// A PostgreSQL server of the test's own where no other test's transaction
/// takes the horizon: autovacuum off (an automatic `ANALYZE` takes a
/// transaction id), prepared transactions allowed.
struct PrivateServer(PrivatePostgres);

impl PrivateServer {
    fn start() -> Self {
        Self(PrivatePostgres::start(&[
            "autovacuum=off",
            "max_prepared_transactions=2",
            "fsync=off",
        ]))
    }

    fn options(&self, user: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.0.port())
            .username(user)
            .database("postgres")
    }

    async fn pool(&self, user: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(self.options(user))
            .await
            .unwrap()
    }

    async fn connect(&self, user: &str, application: &str) -> PgConnection {
        self.options(user)
            .application_name(application)
            .connect()
            .await
            .unwrap()
    }
}
