use std::time::Duration;

use pivotal_event_store::log;
use pivotal_test_support::{TestEnv, eventually};
use uuid::Uuid;

use crate::harness::{
    assert_read_model_equals_replay, projection_caught_up, relay_caught_up, spawn_process,
    spawn_relay, store_events, verify_topic,
};
use crate::ordering::concurrent_load;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_killed_mid_stream_resumes_without_gaps() {
    let env = TestEnv::new().await;
    let (url, _api) = env.spawn_command_api().await;
    let token = env.token(Uuid::now_v7(), &["manager"]);
    let mut relay = spawn_process(&env, "relay");

    // Kill the relay (SIGKILL) while the writers are still writing, as soon
    // as it has published something.
    let load = {
        let url = url.clone();
        let token = token.clone();
        tokio::spawn(async move { concurrent_load(&url, &token).await })
    };
    let name = env.settings.relay.name.clone();
    let published = eventually(Duration::from_secs(60), || async {
        let (total,): (i64,) = sqlx::query_as(
            "SELECT coalesce(max(published_total), 0) FROM relay_checkpoints WHERE relay_name = $1",
        )
        .bind(&name)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        (total > 0).then_some(total)
    })
    .await
    .expect("the relay never published");
    relay.0.kill().unwrap();
    relay.0.wait().unwrap();
    let accepted = load.await.unwrap();
    let stored = store_events(&env).await;
    assert_eq!(stored.len(), accepted);
    let checkpoint = log::load_checkpoint(&env.pool, &name).await.unwrap();
    let behind = log::behind(&env.pool, checkpoint).await.unwrap().events;
    assert!(
        behind > 0,
        "the relay was killed before it finished ({published} published)"
    );

    drop(relay);
    let _relay = spawn_process(&env, "relay");
    relay_caught_up(&env, Duration::from_secs(90)).await;
    verify_topic(&env, &stored, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projector_killed_mid_batch_leaves_an_exact_read_model() {
    let env = TestEnv::new().await;
    let (url, _api) = env.spawn_command_api().await;
    let token = env.token(Uuid::now_v7(), &["manager"]);
    let (_relay, _) = spawn_relay(&env);
    // Load first, so that the projector meets a long backlog.
    concurrent_load(&url, &token).await;
    relay_caught_up(&env, Duration::from_secs(60)).await;

    let mut projector = spawn_process(&env, "projector");
    let applied = eventually(Duration::from_secs(60), || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM projection_versions WHERE projection = 'customers'",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        (n > 0).then_some(n)
    })
    .await;
    assert!(applied.is_some(), "the projector never applied a batch");
    projector.0.kill().unwrap();
    projector.0.wait().unwrap();
    drop(projector);

    // A new process in the same group finishes the work once the group
    // coordinator has expired the dead member (session timeout, 10 s), as a
    // supervisor restarting a crashed pod would; the redelivered part of the
    // killed batch must be a no-op.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let live = spawn_process(&env, "projector");
    projection_caught_up(&env, Duration::from_secs(90)).await;
    drop(live);
    let stored = store_events(&env).await;
    let (versions,): (i64,) = sqlx::query_as("SELECT coalesce(sum(version), 0)::bigint FROM projection_versions WHERE projection = 'customers'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(
        versions as usize,
        stored.len(),
        "every event applied exactly once"
    );
    assert_read_model_equals_replay(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_one_relay_is_active_and_a_standby_takes_over() {
    let env = TestEnv::new().await;
    let (first, mut first_status) = spawn_relay(&env);
    first_status.wait_for(|s| s.leader).await.unwrap();
    let (_second, second_status) = spawn_relay(&env);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !second_status.borrow().leader,
        "two relays were active at once"
    );
    drop(first);
    let mut second_status = second_status;
    tokio::time::timeout(
        Duration::from_secs(20),
        second_status.wait_for(|s| s.leader),
    )
    .await
    .expect("the standby relay never took over")
    .unwrap();
    // The new leader publishes what is written from now on.
    let store = pivotal_event_store::commands::AggregateStore::new(env.pool.clone());
    let actor = pivotal_domain::envelope::Actor {
        organization_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
    };
    crate::broker_outage::append(&store, actor, 3).await;
    relay_caught_up(&env, Duration::from_secs(30)).await;
    assert_eq!(second_status.borrow().published, 6);
}
