//! The relay against a broker of its own that is down at first, then killed
//! (SIGKILL) and restarted on the same storage: nothing is lost.

use std::time::Duration;

use pivotal_domain::customer::{Customer, CustomerCommand};
use pivotal_domain::envelope::Actor;
use pivotal_event_store::commands::AggregateStore;
use pivotal_event_store::log;
use pivotal_test_support::TestEnv;
use pivotal_test_support::commands::context;
use uuid::Uuid;

use crate::harness::{
    broker_report, free_port, horizon_report, log_warnings_to_test_output, relay_caught_up_within,
    spawn_relay, start_broker, store_events, verify_topic,
};

/// Creates a customer named `name` (one event) and returns its id.
pub async fn create_customer(store: &AggregateStore<Customer>, actor: Actor, name: &str) -> Uuid {
    pivotal_test_support::commands::create_customer(store, actor, name, name, &[]).await
}

/// Appends `count` customers, each created and archived (two events).
pub async fn append(store: &AggregateStore<Customer>, actor: Actor, count: usize) {
    let context = context(actor);
    for i in 0..count {
        let id = create_customer(store, actor, &format!("Outage {i}")).await;
        store
            .execute(
                &id.to_string(),
                None,
                CustomerCommand::Archive {
                    actor,
                    reason: Some("outage test".into()),
                },
                &context,
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_waits_out_a_broker_outage_and_loses_nothing() {
    log_warnings_to_test_output();
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pf-broker-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = TestEnv::new().await;
    env.settings.kafka.brokers = format!("127.0.0.1:{port}");
    let store = AggregateStore::<Customer>::new(env.pool.clone());
    let actor = Actor {
        organization_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
    };

    // The broker is down: the relay retries and moves nothing.
    let (_relay, status) = spawn_relay(&env);
    append(&store, actor, 20).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let checkpoint = log::load_checkpoint(&env.pool, &env.settings.relay.name)
        .await
        .unwrap();
    assert_eq!(
        checkpoint,
        log::Checkpoint::default(),
        "nothing can be published without a broker"
    );

    // The broker comes up: everything is published.
    let mut broker = start_broker(&dir, port);
    let caught_up = relay_caught_up_within(&env, Duration::from_secs(90)).await;
    assert!(
        caught_up,
        "relay did not catch up within 90 s of the broker's start; relay: {:?}; {}; {}",
        *status.borrow(),
        horizon_report(&env).await,
        broker_report(&dir, &mut broker)
    );

    // The broker is killed, more commands arrive, the broker restarts on
    // the same storage: the relay catches up again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(broker);
    append(&store, actor, 20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut broker = start_broker(&dir, port);
    let caught_up = relay_caught_up_within(&env, Duration::from_secs(120)).await;
    assert!(
        caught_up,
        "relay did not catch up within 120 s of the broker's restart; relay: {:?}; {}; {}",
        *status.borrow(),
        horizon_report(&env).await,
        broker_report(&dir, &mut broker)
    );

    let stored = store_events(&env).await;
    assert_eq!(stored.len(), 80);
    verify_topic(&env, &stored, true).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A broker whose port is taken exits (tansu creates its storage first,
/// then fails to bind); `start_broker` says so at once, with the broker's
/// own error, instead of handing the test a broker that is not there.
#[test]
fn a_broker_that_cannot_take_its_port_fails_its_start_with_its_log() {
    let port = free_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = std::panic::catch_unwind(|| start_broker(dir.path(), port));
    let message = match started {
        Ok(_) => panic!("a broker started on a port another socket holds"),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .expect("a formatted message"),
    };
    assert!(
        message.contains(&format!("the broker on port {port} did not come up")),
        "{message}"
    );
    assert!(message.contains("the broker is exited"), "{message}");
    assert!(message.contains("AddrInUse"), "{message}");
}
