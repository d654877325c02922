//! The relay's producer refusing records: a fatal error (raised with
//! librdkafka's own test hook, ADR 0028), after which the relay replaces
//! it, both when idle and while records are on their way; and a queue too
//! small for a batch, which the relay publishes in parts; and a record
//! refused for good (too large), which the log waits behind until the limit
//! is raised. Nothing is lost or reordered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pivotal_domain::customer::{Customer, CustomerCommand};
use pivotal_domain::envelope::Actor;
use pivotal_domain::values::Name;
use pivotal_event_store::commands::AggregateStore;
use pivotal_kafka_fault::raise_fatal_error;
use pivotal_test_support::commands::context;
use pivotal_test_support::{TestEnv, eventually};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer};
use uuid::Uuid;

use crate::broker_outage::{append, create_customer};
use crate::harness::{relay_caught_up, spawn_relay_making, store_events, verify_topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_with_a_fatal_error_is_replaced_and_nothing_is_lost() {
    let env = TestEnv::new().await;
    let store = AggregateStore::<Customer>::new(env.pool.clone());
    let actor = Actor {
        organization_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
    };
    // Every producer the relay makes, kept here to be broken.
    let made: Arc<Mutex<Vec<FutureProducer>>> = Arc::default();
    let keep = Arc::clone(&made);
    let (_relay, status) = spawn_relay_making(
        &env,
        env.settings.clone(),
        Box::new(move |kafka| {
            let producer: FutureProducer = pivotal_messaging::config::producer(kafka).create()?;
            keep.lock().unwrap().push(producer.clone());
            Ok(producer)
        }),
    );
    let producer = |n: usize| made.lock().unwrap()[n].clone();

    append(&store, actor, 10).await;
    relay_caught_up(&env, Duration::from_secs(60)).await;
    assert_eq!(status.borrow().producers, 1);

    // Idle: the broken producer refuses the next batch.
    let first = producer(0);
    raise_fatal_error(first.client(), c"test: a partition's sequence is broken").unwrap();
    assert!(first.client().fatal_error().is_some());
    append(&store, actor, 10).await;
    relay_caught_up(&env, Duration::from_secs(60)).await;
    assert_eq!(status.borrow().producers, 2, "{:?}", status.borrow());
    assert_eq!(made.lock().unwrap().len(), 2);
    assert!(producer(1).client().fatal_error().is_none());

    // Busy: the producer breaks while writers keep the relay publishing.
    let writer = {
        let store = AggregateStore::<Customer>::new(env.pool.clone());
        tokio::spawn(async move { append(&store, actor, 100).await })
    };
    let published = status.borrow().published;
    let moving = eventually(Duration::from_secs(60), || async {
        (status.borrow().published > published).then_some(())
    })
    .await;
    assert!(moving.is_some(), "the relay published nothing new");
    raise_fatal_error(producer(1).client(), c"test: broken mid-stream").unwrap();
    writer.await.unwrap();
    // Should the relay have published everything before the error, these
    // meet the broken producer.
    append(&store, actor, 5).await;
    relay_caught_up(&env, Duration::from_secs(90)).await;
    assert_eq!(status.borrow().producers, 3, "{:?}", status.borrow());

    // Every event is on the topic, each aggregate's in order.
    let stored = store_events(&env).await;
    assert_eq!(stored.len(), 250);
    verify_topic(&env, &stored, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_larger_than_the_producer_queue_are_published_in_parts() {
    let mut env = TestEnv::new().await;
    env.settings.relay.batch_size = 50;
    let store = AggregateStore::<Customer>::new(env.pool.clone());
    let actor = Actor {
        organization_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
    };
    // Room for 7 records until the broker acknowledges them, so every batch
    // of 50 meets a full queue.
    let (_relay, status) = spawn_relay_making(
        &env,
        env.settings.clone(),
        Box::new(|kafka| {
            let mut config: ClientConfig = pivotal_messaging::config::producer(kafka);
            config.set("queue.buffering.max.messages", "7");
            config.create()
        }),
    );
    append(&store, actor, 60).await;
    relay_caught_up(&env, Duration::from_secs(90)).await;
    assert_eq!(status.borrow().producers, 1, "{:?}", status.borrow());

    // Nothing failed, so nothing was sent twice.
    let stored = store_events(&env).await;
    assert_eq!(stored.len(), 120);
    verify_topic(&env, &stored, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_refused_for_good_blocks_the_log_until_the_limit_is_raised() {
    let env = TestEnv::new().await;
    let store = AggregateStore::<Customer>::new(env.pool.clone());
    let actor = Actor {
        organization_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
    };
    append(&store, actor, 3).await;
    let id = create_customer(&store, actor, "Before the large one").await;
    // Names of 200 four-byte characters: a record of over 1,600 bytes,
    // above the 1,500 the producer takes below; every other record here
    // is well under it.
    let long = Name::parse("", &"\u{1D11E}".repeat(Name::MAX_CHARS)).unwrap();
    let renamed = store
        .execute(
            &id.to_string(),
            None,
            CustomerCommand::Rename {
                actor,
                legal_name: long.clone(),
                display_name: long,
            },
            &context(actor),
        )
        .await
        .unwrap();
    let large = renamed.events[0].clone();
    append(&store, actor, 2).await;
    let stored = store_events(&env).await;
    assert_eq!(stored.len(), 12);
    let at = stored
        .iter()
        .position(|e| e.event_id == large.event_id)
        .unwrap();
    assert_eq!(at, 7, "the large record comes after seven others");

    // The producer's limit, until it is raised.
    let raised = Arc::new(AtomicBool::new(false));
    let made: Arc<Mutex<Vec<FutureProducer>>> = Arc::default();
    let (limit, keep) = (Arc::clone(&raised), Arc::clone(&made));
    let (_relay, status) = spawn_relay_making(
        &env,
        env.settings.clone(),
        Box::new(move |kafka| {
            let mut config: ClientConfig = pivotal_messaging::config::producer(kafka);
            if !limit.load(Ordering::SeqCst) {
                config.set("message.max.bytes", "1500");
            }
            let producer: FutureProducer = config.create()?;
            keep.lock().unwrap().push(producer.clone());
            Ok(producer)
        }),
    );

    // The relay publishes the seven before it, then stops at it and says
    // which event it is, and why.
    let blocked = eventually(Duration::from_secs(60), || async {
        status.borrow().blocked.clone()
    })
    .await
    .expect("the relay never reported the refused record");
    assert_eq!(blocked.record.event_id, large.event_id);
    assert_eq!(blocked.record.position, large.position);
    assert!(blocked.record.bytes > 1500, "{blocked:?}");
    assert!(
        blocked.error.to_string().contains("too large"),
        "{blocked:?}"
    );
    assert_eq!(status.borrow().checkpoint, stored[6].checkpoint());
    assert_eq!(status.borrow().published, 7);
    // Its lag is still measured while it is blocked: the large record and
    // the four after it.
    let lag = eventually(Duration::from_secs(30), || async {
        (status.borrow().lag_events == 5).then_some(())
    })
    .await;
    assert!(lag.is_some(), "lag never measured: {:?}", status.borrow());
    // Retried and refused again, it stays where it is: nothing after it is
    // published, and the topic holds exactly the seven.
    tokio::time::sleep(Duration::from_millis(2 * env.settings.relay.max_backoff_ms)).await;
    assert_eq!(status.borrow().published, 7);
    assert_eq!(
        status.borrow().blocked.as_ref().map(|b| b.record.event_id),
        Some(large.event_id)
    );
    verify_topic(&env, &stored[..7], false).await;

    // The limit raised (here the producer's own, so a new producer: the
    // relay makes one after a fatal error), the relay carries on from the
    // refused record and reports itself unblocked.
    raised.store(true, Ordering::SeqCst);
    let first = made.lock().unwrap()[0].clone();
    raise_fatal_error(
        first.client(),
        c"test: replace the producer with a higher limit",
    )
    .unwrap();
    relay_caught_up(&env, Duration::from_secs(60)).await;
    let unblocked = eventually(Duration::from_secs(10), || async {
        let s = status.borrow();
        s.blocked.is_none().then_some(s.published)
    })
    .await;
    assert_eq!(unblocked, Some(12), "{:?}", status.borrow());
    assert_eq!(status.borrow().producers, 2);
    verify_topic(&env, &stored, false).await;
}
