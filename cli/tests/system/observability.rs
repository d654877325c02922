//! Metrics, health and graceful shutdown of every process: `/metrics` on
//! both APIs and on the relay's and projector's operations endpoint, their
//! `/readyz`, SIGTERM ending each process cleanly with its work
//! committed, and the projector's warning at start about settings that
//! sit badly together.

use std::time::Duration;

use pivotal_test_support::{TestEnv, eventually, http};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{
    broker_report, create_customer, free_port, projection_caught_up, spawn_process_with,
    spawn_projector_with, spawn_relay, start_broker, terminate, text_at,
};

/// The value of the sample `name{labels}` (labels in exposition order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Asserts that `series` is in `text` with a value of at least 1.
fn assert_counted(text: &str, series: &str) {
    assert!(
        sample(text, series).is_some_and(|v| v >= 1.0),
        "{series} missing or 0:\n{text}"
    );
}

async fn metrics(base: &str) -> String {
    let response = http().get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_process_exposes_metrics_and_stops_cleanly() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (queries, _q) = env.spawn_query_api().await;
    let relay_ops = format!("127.0.0.1:{}", free_port());
    let projector_ops = format!("127.0.0.1:{}", free_port());
    let mut relay = spawn_process_with(
        &env,
        "relay",
        &[("PIVOTAL_RELAY__OPS_LISTEN", relay_ops.clone())],
    );
    // No interval commit within the test: the offsets checked after
    // SIGTERM can only come from the shutdown's commit.
    let mut projector = spawn_process_with(
        &env,
        "projector",
        &[
            ("PIVOTAL_PROJECTOR__OPS_LISTEN", projector_ops.clone()),
            ("PIVOTAL_KAFKA__COMMIT_INTERVAL_MS", "3600000".into()),
        ],
    );
    let token = env.token(Uuid::now_v7(), &["owner"]);
    let created = http()
        .post(format!("{commands}/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"legalName": "Measured Ltd", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let refused = http()
        .post(format!("{commands}/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"legalName": "", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let queried: Value = http()
        .post(format!("{queries}/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "{ customers { totalCount } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(queried.get("errors").is_none(), "{queried}");
    let malformed = http()
        .post(format!("{queries}/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "{ customers( }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 200);

    // The APIs: requests by route and status, latency histograms, commands
    // by outcome (this test binary shares one recorder, so at least one).
    let text = metrics(&commands).await;
    for series in [
        r#"commands_total{command="POST /v1/customers",outcome="accepted"}"#,
        r#"commands_total{command="POST /v1/customers",outcome="invalid"}"#,
        r#"http_requests_total{method="POST",route="/v1/customers",status="201"}"#,
        r#"http_request_duration_seconds_count{method="POST",route="/v1/customers",status="422"}"#,
        r#"event_store_append_commands_count{aggregate="customer"}"#,
    ] {
        assert_counted(&text, series);
    }
    assert!(text.contains(r#"http_request_duration_seconds_bucket{method="POST",route="/v1/customers",status="201",le="0.05"}"#));
    // Every command's failures are counted from 0 before any is sent
    // (alerts watch their increase, ADR 0063), one series a command.
    let commands_known = pivotal_command_api::openapi::commands();
    assert!(commands_known.len() > 30, "{commands_known:?}");
    for (method, route) in &commands_known {
        let series = format!(r#"commands_total{{command="{method} {route}",outcome="failed"}}"#);
        assert!(
            sample(&text, &series).is_some(),
            "{series} missing:\n{text}"
        );
    }
    // Commands per append statement are counted in buckets, not quantiles.
    assert_counted(
        &text,
        r#"event_store_append_commands_bucket{aggregate="customer",le="+Inf"}"#,
    );
    let text = metrics(&queries).await;
    let series = r#"http_requests_total{method="POST",route="/graphql",status="200"}"#;
    assert_counted(&text, series);
    // GraphQL errors by code: the malformed query's, and every other code
    // from the start.
    assert_counted(
        &text,
        r#"graphql_errors_total{code="GRAPHQL_PARSE_FAILED"}"#,
    );
    for code in ["UNAVAILABLE", "QUERY_TIMEOUT", "INTERNAL_SERVER_ERROR"] {
        let series = format!(r#"graphql_errors_total{{code="{code}"}}"#);
        assert!(
            sample(&text, &series).is_some(),
            "{series} missing:\n{text}"
        );
    }
    // No operation is waiting for an execution slot once the queries are
    // answered (ADR 0043).
    assert_eq!(sample(&text, "graphql_waiting"), Some(0.0), "{text}");
    // Whether the change feed vouches for the in-process cache (ADR 0055;
    // 0 or 1, and other tests' APIs in this binary share the recorder).
    let feed_up = sample(&text, "query_cache_feed_up");
    assert!(matches!(feed_up, Some(v) if v == 0.0 || v == 1.0), "{text}");
    // Nor was any turned away, for a full queue or a long wait.
    for reason in ["queue_full", "waited_too_long"] {
        assert_eq!(
            sample(
                &text,
                &format!(r#"graphql_overloaded_total{{reason="{reason}"}}"#)
            ),
            Some(0.0),
            "{text}"
        );
    }

    // The relay and projector processes: lag reaches zero once the event
    // is through; readiness checks PostgreSQL.
    let relay_url = format!("http://{relay_ops}");
    let projector_url = format!("http://{projector_ops}");
    let through = eventually(Duration::from_secs(60), || async {
        let relay = text_at(&format!("{relay_url}/metrics")).await?;
        let projector = text_at(&format!("{projector_url}/metrics")).await?;
        let ok = sample(&relay, "relay_published_total") == Some(1.0)
            && sample(&relay, "relay_active") == Some(1.0)
            && sample(&relay, "relay_lag_events") == Some(0.0)
            && sample(&relay, "relay_blocked") == Some(0.0)
            && sample(&relay, "relay_held_events") == Some(0.0)
            && sample(&projector, "projector_applied_total") == Some(1.0)
            && sample(
                &projector,
                r#"projection_lag_events{projection="customers"}"#,
            ) == Some(0.0)
            && projector.contains("consumer_lag_messages{");
        ok.then_some(projector)
    })
    .await;
    assert!(
        through.is_some(),
        "relay and projector metrics never showed the event through"
    );
    // Each process's sessions carry its name, so `pg_stat_activity` (and
    // the relay's warning about the horizon) tell whose a session is; the
    // test environment's own pool (this query's) is `pivotal-test`.
    let (named,): (Vec<String>,) = sqlx::query_as(
        "SELECT coalesce(array_agg(DISTINCT application_name ORDER BY application_name), '{}')
         FROM pg_stat_activity
         WHERE datname = current_database() AND application_name LIKE 'pivotal-%'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        named,
        ["pivotal-projector", "pivotal-relay", "pivotal-test"]
    );
    let text = metrics(&projector_url).await;
    assert_eq!(sample(&text, "consumer_group_unsettled_seconds"), Some(0.0));
    assert_counted(
        &text,
        r#"consumer_group_rebalances_total{outcome="assigned"}"#,
    );
    let (ready, body) = readiness(&relay_url).await.unwrap();
    assert_eq!(ready, 200);
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"postgres": "ok"}})
    );
    // The one member of its group holds every partition of every topic
    // it follows.
    let (ready, body) = readiness(&projector_url).await.unwrap();
    assert_eq!(ready, 200);
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {
            "postgres": "ok",
            "consumer_group": format!("ok ({} partitions)", followed_partitions(&env)),
        }})
    );

    // SIGTERM: both exit 0, and the projector committed its group offsets.
    for (name, process) in [("projector", &mut projector), ("relay", &mut relay)] {
        let status = terminate(process, Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} did not stop cleanly: {status:?}"
        );
    }
    assert_eq!(
        committed_customer_offsets(&env),
        1,
        "the one customer event is committed for the group"
    );
}

/// `/readyz`'s status and body; `None` while the endpoint does not answer.
async fn readiness(base: &str) -> Option<(u16, Value)> {
    let response = http().get(format!("{base}/readyz")).send().await.ok()?;
    Some((response.status().as_u16(), response.json().await.ok()?))
}

/// Waits up to 90 s until the projector at `url` is ready and holds
/// `partitions` partitions in its group; otherwise says what its last
/// `/readyz` answer and its metrics were.
async fn settle_in_group(url: &str, partitions: usize) -> Result<(), String> {
    let last = std::sync::Mutex::new(None::<(u16, Value)>);
    let in_group = || async {
        let (status, body) = readiness(url).await?;
        let settled = status == 200
            && body["checks"]["consumer_group"] == format!("ok ({partitions} partitions)");
        *last.lock().unwrap() = Some((status, body));
        settled.then_some(())
    };
    if eventually(Duration::from_secs(90), in_group)
        .await
        .is_some()
    {
        return Ok(());
    }
    let last = last.lock().unwrap().take();
    Err(format!(
        "its last /readyz: {last:?}; its metrics: {}",
        metrics(url).await
    ))
}

/// Partitions of the topics the projector follows.
fn followed_partitions(env: &TestEnv) -> usize {
    let types: std::collections::HashSet<&str> = pivotal_projectors::all_projections()
        .iter()
        .flat_map(|p| p.aggregate_types().iter().copied())
        .collect();
    types.len() * env.settings.kafka.partitions as usize
}

/// A projector whose broker goes away loses its place in the group, and
/// `/readyz` says so once the absence outlasts its limit; it is ready again
/// once the broker is back and the group has given it its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_out_of_its_group_is_not_ready_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start_broker(dir.path(), port);
    let mut env = TestEnv::new().await;
    env.settings.kafka.brokers = format!("127.0.0.1:{port}");
    let ops = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{ops}");
    let _projector = spawn_process_with(
        &env,
        "projector",
        &[
            ("PIVOTAL_PROJECTOR__OPS_LISTEN", ops.clone()),
            ("PIVOTAL_PROJECTOR__OUT_OF_GROUP_LIMIT_MS", "3000".into()),
        ],
    );
    let partitions = followed_partitions(&env);
    // The broker already listens (`start_broker`); the first join creates
    // the topics and shares the machine with the other tests: as long as
    // the rejoin below.
    if let Err(last) = settle_in_group(&url, partitions).await {
        panic!(
            "the projector never settled in its group; {last}; {}",
            broker_report(dir.path(), &mut broker)
        );
    }

    drop(broker);
    // The session times out (10 s), the partitions are lost, and three
    // seconds later the projector is not ready.
    let out = eventually(Duration::from_secs(60), || async {
        let (status, body) = readiness(&url).await?;
        (status == 503).then_some(body)
    })
    .await
    .expect("the projector stayed ready with its broker gone");
    assert_eq!(out["status"], "not_ready");
    assert_eq!(out["checks"]["postgres"], "ok");
    let detail = out["checks"]["consumer_group"].as_str().unwrap();
    assert!(
        detail.starts_with("out of its group for ") && detail.ends_with("; limit 3 s)"),
        "{detail}"
    );
    // Published with librdkafka's statistics, every five seconds.
    let absent = eventually(Duration::from_secs(20), || async {
        let text = metrics(&url).await;
        sample(&text, "consumer_group_unsettled_seconds").filter(|s| *s > 3.0)
    })
    .await;
    assert!(absent.is_some(), "{}", metrics(&url).await);

    broker = start_broker(dir.path(), port);
    if let Err(last) = settle_in_group(&url, partitions).await {
        panic!(
            "the projector never rejoined its group after the broker came back; {last}; {}",
            broker_report(dir.path(), &mut broker)
        );
    }
    let text = metrics(&url).await;
    assert_eq!(
        sample(&text, "consumer_group_unsettled_seconds"),
        Some(0.0),
        "{text}"
    );
    drop(broker);
}

/// A member that dies holding partitions: on Apache Kafka the group gives
/// them to the survivor once the dead member's session expires. The
/// development broker expires the member but keeps the group formed with
/// the old assignment, so nothing consumes them while the survivor stays
/// settled and ready; the survivor rejoins once they have waited past its
/// limit (ADR 0034, third update), takes them, and applies every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_left_with_a_dead_member_are_taken_up_by_the_survivor() {
    let env = TestEnv::new().await;
    let limit = (
        "PIVOTAL_PROJECTOR__OUT_OF_GROUP_LIMIT_MS",
        "3000".to_owned(),
    );
    let (ops, doomed_ops) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (url, doomed_url) = (format!("http://{ops}"), format!("http://{doomed_ops}"));
    let _survivor = spawn_process_with(
        &env,
        "projector",
        &[("PIVOTAL_PROJECTOR__OPS_LISTEN", ops), limit.clone()],
    );
    let partitions = followed_partitions(&env);
    if let Err(last) = settle_in_group(&url, partitions).await {
        panic!("the first member never settled; {last}");
    }
    // A second member whose id sorts first ("a-doomed-…" before
    // "pivotal-flow-…"): the range assignor gives it the first two of each
    // topic's three partitions.
    let doomed = spawn_process_with(
        &env,
        "projector",
        &[
            ("PIVOTAL_PROJECTOR__OPS_LISTEN", doomed_ops),
            ("PIVOTAL_KAFKA__CLIENT_ID", "a-doomed".into()),
            limit,
        ],
    );
    for (member, held) in [(&doomed_url, partitions * 2 / 3), (&url, partitions / 3)] {
        if let Err(last) = settle_in_group(member, held).await {
            panic!("{member} never settled with {held} partitions; {last}");
        }
    }
    // SIGKILL: no LeaveGroup, no commit.
    drop(doomed);
    let (commands, _c) = env.spawn_command_api().await;
    let (_relay, _) = spawn_relay(&env);
    let token = env.token(Uuid::now_v7(), &["owner"]);
    // Enough customers that some land on the dead member's partitions
    // (all twelve on the survivor's one in three: 2 in a million).
    for n in 0..12 {
        create_customer(&commands, &token, &format!("Orphaned {n} Ltd")).await;
    }
    projection_caught_up(&env, Duration::from_secs(90)).await;
    if let Err(last) = settle_in_group(&url, partitions).await {
        panic!("the survivor never took every partition; {last}");
    }
    let text = metrics(&url).await;
    assert!(
        sample(&text, "consumer_group_rejoins_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

/// The sum of the projector group's committed offsets on the customer
/// topic's partitions (none committed counts 0).
fn committed_customer_offsets(env: &TestEnv) -> i64 {
    let consumer: BaseConsumer =
        pivotal_messaging::config::consumer(&env.settings.kafka, &env.settings.projector.group_id)
            .create()
            .unwrap();
    let topic = env.topic("customer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..env.settings.kafka.partitions {
        partitions.add_partition(&topic, partition);
    }
    consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// A running projector commits the offsets of the batches it applied to
/// its group on the commit interval (ADR 0032), with no shutdown: a
/// projector killed later is redelivered at most one interval's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_projector_commits_applied_offsets_on_its_interval() {
    let env = TestEnv::new().await;
    let (commands, _c) = env.spawn_command_api().await;
    let (_relay, _) = spawn_relay(&env);
    let mut settings = env.settings.clone();
    settings.kafka.commit_interval_ms = 200;
    let _projector = spawn_projector_with(&env, settings);
    let token = env.token(Uuid::now_v7(), &["owner"]);
    for n in 0..3 {
        create_customer(&commands, &token, &format!("Committed {n} Ltd")).await;
    }
    projection_caught_up(&env, Duration::from_secs(60)).await;
    let committed = eventually(Duration::from_secs(30), || async {
        let total = committed_customer_offsets(&env);
        (total == 3).then_some(total)
    })
    .await;
    assert_eq!(
        committed,
        Some(3),
        "the three applied customer events were never committed while the projector ran (last seen {})",
        committed_customer_offsets(&env)
    );
}

/// The warnings a projector logs from its start until it reports that it
/// consumes, read from its log (JSON lines on stderr) with `extra`
/// settings; the process is stopped once that line has come.
fn warnings_until_consuming(env: &TestEnv, extra: &[(&str, &str)]) -> Vec<Value> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_pivotal"))
        .arg("projector")
        .envs(env.child_env())
        .env("PIVOTAL_LOG__FORMAT", "json")
        .envs(extra.iter().copied())
        .current_dir(pivotal_test_support::workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut warnings = Vec::new();
    let consuming = loop {
        let Ok(line) = read.recv_timeout(Duration::from_secs(60)) else {
            break false;
        };
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if entry["message"] == "projector consuming" {
            break true;
        }
        if entry["level"] == "WARN" {
            warnings.push(entry);
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        consuming,
        "the projector never consumed; warnings: {warnings:?}"
    );
    warnings
}

/// A session timeout that with the rebalance timeout reaches
/// `projector.out_of_group_limit_ms` is logged once at the projector's
/// start, as a warning naming both settings; settings that leave room log
/// no such warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_warns_at_start_of_settings_that_sit_badly_together() {
    let env = TestEnv::new().await;
    let badly = |warnings: &[Value]| -> Vec<String> {
        warnings
            .iter()
            .filter(|w| w["message"] == "settings sit badly together")
            .map(|w| w["advisory"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let tight = warnings_until_consuming(
        &env,
        &[
            ("PIVOTAL_KAFKA__SESSION_TIMEOUT_MS", "10000"),
            ("PIVOTAL_PROJECTOR__OUT_OF_GROUP_LIMIT_MS", "40000"),
        ],
    );
    let advised = badly(&tight);
    assert_eq!(advised.len(), 1, "{tight:?}");
    assert!(
        advised[0].contains("kafka.session_timeout_ms (10000)")
            && advised[0].contains("projector.out_of_group_limit_ms (40000)"),
        "{advised:?}"
    );
    let roomy = warnings_until_consuming(
        &env,
        &[
            ("PIVOTAL_KAFKA__SESSION_TIMEOUT_MS", "10000"),
            ("PIVOTAL_PROJECTOR__OUT_OF_GROUP_LIMIT_MS", "60000"),
        ],
    );
    assert!(badly(&roomy).is_empty(), "{roomy:?}");
}
