use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pivotal_event_store::log::{self, LoggedEvent};
use pivotal_relay::RelayStatus;
use pivotal_test_support::{TestEnv, eventually, http, json_of, read_topic_until, workspace_root};
use rdkafka::Message;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

/// A background task stopped when dropped.
pub struct Task(Option<oneshot::Sender<()>>);

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

pub fn spawn_relay(env: &TestEnv) -> (Task, watch::Receiver<RelayStatus>) {
    spawn_relay_with(env, env.settings.clone())
}

/// [`spawn_relay`] with other settings.
pub fn spawn_relay_with(
    env: &TestEnv,
    settings: pivotal_settings::Settings,
) -> (Task, watch::Receiver<RelayStatus>) {
    spawn_relay_making(
        env,
        settings,
        Box::new(|kafka| pivotal_messaging::config::producer(kafka).create()),
    )
}

/// [`spawn_relay_with`], its producers made by `make_producer`.
pub fn spawn_relay_making(
    env: &TestEnv,
    settings: pivotal_settings::Settings,
    make_producer: Box<pivotal_relay::MakeProducer>,
) -> (Task, watch::Receiver<RelayStatus>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let (status_tx, status_rx) = watch::channel(RelayStatus::default());
    let pool = env.pool.clone();
    tokio::spawn(async move {
        pivotal_relay::run_with_producers(
            settings,
            pool,
            async move {
                let _ = stopped.await;
            },
            status_tx,
            make_producer,
        )
        .await
        .unwrap();
    });
    (Task(Some(stop)), status_rx)
}

pub fn spawn_projector(env: &TestEnv) -> Task {
    spawn_projector_with(env, env.settings.clone())
}

/// [`spawn_projector`] with other settings.
pub fn spawn_projector_with(env: &TestEnv, settings: pivotal_settings::Settings) -> Task {
    let (stop, stopped) = oneshot::channel::<()>();
    let pool = env.pool.clone();
    tokio::spawn(async move {
        pivotal_projectors::framework::run(settings, pool, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Task(Some(stop))
}

/// A `pivotal` child process, killed (SIGKILL) when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_process(env: &TestEnv, subcommand: &str) -> Process {
    spawn_process_with(env, subcommand, &[])
}

/// [`spawn_process`] with extra environment variables.
pub fn spawn_process_with(env: &TestEnv, subcommand: &str, extra: &[(&str, String)]) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_pivotal"))
        .arg(subcommand)
        .envs(env.child_env())
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Process(child)
}

/// The body of `GET url` as text; `None` while nothing answers there.
pub async fn text_at(url: &str) -> Option<String> {
    http().get(url).send().await.ok()?.text().await.ok()
}

/// Waits up to 30 s for the process serving `base` (`http://host:port`)
/// to answer `/healthz` with 200; `what` names it in the failure.
pub async fn wait_healthy(base: &str, what: &str) {
    eventually(Duration::from_secs(30), || async {
        http()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{what} never answered /healthz"));
}

/// Every event in the store, in log order, once all of them are below the
/// horizon (transactions of parallel tests elsewhere in the cluster may hold
/// it back for a moment).
pub async fn store_events(env: &TestEnv) -> Vec<LoggedEvent> {
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let all = eventually(Duration::from_secs(60), || async {
        let mut all = Vec::new();
        let mut checkpoint = log::Checkpoint::default();
        loop {
            let batch = log::read_after(&env.pool, checkpoint, 5000).await.unwrap();
            let Some(last) = batch.last() else { break };
            checkpoint = last.checkpoint();
            all.extend(batch);
        }
        (all.len() as i64 == total).then_some(all)
    })
    .await;
    all.expect("the log horizon never passed every committed event")
}

/// Sends the warnings and errors of the processes a test runs in its own
/// tokio runtime (relay, projector) to the test's captured output, which
/// the test runner prints when the test fails. Once per test binary; later
/// calls do nothing.
pub fn log_warnings_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
}

/// Waits until the relay's checkpoint covers every event in the store.
pub async fn relay_caught_up(env: &TestEnv, timeout: Duration) {
    if !relay_caught_up_within(env, timeout).await {
        panic!(
            "relay did not catch up within {timeout:?}; {}",
            horizon_report(env).await
        );
    }
}

/// How many of the store's events the relay may not read yet (at or above
/// the horizon: a transaction anywhere in the cluster that began before
/// them is still open), and the oldest open transactions: what a test
/// that waited in vain for the relay says.
pub async fn horizon_report(env: &TestEnv) -> String {
    let above: Result<(i64,), _> = sqlx::query_as(
        "SELECT count(*) FROM events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())",
    )
    .fetch_one(&env.pool)
    .await;
    // Database, state, seconds open, query.
    type Open = (Option<String>, Option<String>, Option<f64>, Option<String>);
    let oldest: Result<Vec<Open>, _> = sqlx::query_as(
        "SELECT datname::text, state,
                    extract(epoch FROM now() - xact_start)::float8,
                    left(query, 160)
             FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
             ORDER BY xact_start LIMIT 5",
    )
    .fetch_all(&env.pool)
    .await;
    format!(
        "events at or above the horizon: {:?}; oldest open transactions \
         (database, state, seconds, query): {:?}",
        above.map(|(n,)| n),
        oldest
    )
}

/// Whether the relay's checkpoint came to cover every event in the store
/// within `timeout`.
pub async fn relay_caught_up_within(env: &TestEnv, timeout: Duration) -> bool {
    let name = env.settings.relay.name.clone();
    eventually(timeout, || async {
        let checkpoint = log::load_checkpoint(&env.pool, &name).await.unwrap();
        let behind = log::behind(&env.pool, checkpoint).await.unwrap().events;
        (behind == 0).then_some(())
    })
    .await
    .is_some()
}

/// Waits until the customers projection has applied every customer event.
pub async fn projection_caught_up(env: &TestEnv, timeout: Duration) {
    let done = eventually(timeout, || async {
        let (missing,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM (
                SELECT aggregate_id, max(sequence) AS version FROM events
                WHERE aggregate_type = 'customer' GROUP BY aggregate_id) e
             LEFT JOIN projection_versions p
               ON p.projection = 'customers' AND p.aggregate_type = 'customer' AND p.aggregate_id = e.aggregate_id
             WHERE p.version IS DISTINCT FROM e.version",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        (missing == 0).then_some(())
    })
    .await;
    if done.is_none() {
        let diagnosis = projection_diagnosis(env).await;
        panic!("projection did not catch up within {timeout:?}\n{diagnosis}");
    }
}

/// What a stalled customers projection looks like: aggregates behind, and
/// the group's committed offsets against the partitions' ends.
async fn projection_diagnosis(env: &TestEnv) -> String {
    let behind: Result<Vec<(String, i64, Option<i64>)>, _> = sqlx::query_as(
        "SELECT e.aggregate_id, e.version, p.version FROM (
            SELECT aggregate_id, max(sequence) AS version FROM events
            WHERE aggregate_type = 'customer' GROUP BY aggregate_id) e
         LEFT JOIN projection_versions p
           ON p.projection = 'customers' AND p.aggregate_type = 'customer' AND p.aggregate_id = e.aggregate_id
         WHERE p.version IS DISTINCT FROM e.version
         ORDER BY e.aggregate_id LIMIT 10",
    )
    .fetch_all(&env.pool)
    .await;
    let brokers = env.settings.kafka.brokers.clone();
    let group = env.settings.projector.group_id.clone();
    let topic = env.topic("customer");
    let group_view = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = match rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
        {
            Ok(consumer) => consumer,
            Err(error) => return format!("no consumer: {error}"),
        };
        let timeout = Duration::from_secs(5);
        let partitions = match consumer.fetch_metadata(Some(&topic), timeout) {
            Ok(metadata) => metadata
                .topics()
                .first()
                .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                .unwrap_or_default(),
            Err(error) => return format!("no metadata: {error}"),
        };
        let mut list = rdkafka::TopicPartitionList::new();
        for p in &partitions {
            list.add_partition(&topic, *p);
        }
        let committed = consumer.committed_offsets(list, timeout);
        partitions
            .iter()
            .map(|p| {
                let end = consumer
                    .fetch_watermarks(&topic, *p, timeout)
                    .map(|(_, high)| high.to_string())
                    .unwrap_or_else(|e| e.to_string());
                let offset = committed
                    .as_ref()
                    .ok()
                    .and_then(|c| c.find_partition(&topic, *p))
                    .map(|e| format!("{:?}", e.offset()))
                    .unwrap_or_else(|| "?".into());
                format!("partition {p}: end {end}, group committed {offset}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
    .await
    .unwrap_or_else(|e| e.to_string());
    format!(
        "behind (aggregate, stored, projected): {behind:?}\n\
         group {}: {group_view}",
        env.settings.projector.group_id
    )
}

/// Reads the customer topic until every stored event was seen, then checks
/// that per aggregate no version was ever skipped and every stored event is
/// there. Returns (messages read, distinct events).
pub async fn verify_topic(
    env: &TestEnv,
    stored: &[LoggedEvent],
    allow_duplicates: bool,
) -> (usize, usize) {
    verify_topic_of(env, "customer", stored, allow_duplicates).await
}

/// [`verify_topic`] for the topic of `aggregate_type`; `stored` holds that
/// type's events.
pub async fn verify_topic_of(
    env: &TestEnv,
    aggregate_type: &str,
    stored: &[LoggedEvent],
    allow_duplicates: bool,
) -> (usize, usize) {
    let expected: HashSet<String> = stored.iter().map(|e| e.event_id.to_string()).collect();
    let brokers = env.settings.kafka.brokers.clone();
    let topic = env.topic(aggregate_type);
    let wanted = expected.clone();
    let messages = tokio::task::spawn_blocking(move || {
        // Event ids seen so far, and how many messages they came from.
        let seen = std::cell::RefCell::new((0usize, HashSet::new()));
        read_topic_until(&brokers, &topic, Duration::from_secs(120), |messages| {
            let mut seen = seen.borrow_mut();
            let (read, ids) = &mut *seen;
            for m in &messages[*read..] {
                if let Some(id) = json_of(m)["id"].as_str() {
                    ids.insert(id.to_owned());
                }
            }
            *read = messages.len();
            wanted.is_subset(ids)
        })
    })
    .await
    .unwrap();
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for message in &messages {
        let value: Value = json_of(message);
        let key = std::str::from_utf8(message.key().unwrap())
            .unwrap()
            .to_owned();
        assert_eq!(
            value["aggregateId"],
            key.as_str(),
            "key is the aggregate id"
        );
        per_key
            .entry(key)
            .or_default()
            .push(value["version"].as_u64().unwrap());
        seen.insert(value["id"].as_str().unwrap().to_owned());
    }
    let missing: Vec<_> = expected.difference(&seen).collect();
    if !missing.is_empty() {
        let lost: Vec<(i64, i64)> = stored
            .iter()
            .filter(|e| missing.contains(&&e.event_id.to_string()))
            .map(|e| (e.position, e.sequence))
            .collect();
        eprintln!(
            "read {} messages; missing (position, version): {lost:?}",
            messages.len()
        );
    }
    assert!(
        missing.is_empty(),
        "{} events never reached the topic",
        missing.len()
    );
    assert_eq!(
        seen.len(),
        expected.len(),
        "the topic holds events that are not in the store"
    );
    let mut store_max: BTreeMap<String, u64> = BTreeMap::new();
    for e in stored {
        let v = store_max.entry(e.aggregate_id.clone()).or_default();
        *v = (*v).max(e.sequence as u64);
    }
    for (key, versions) in &per_key {
        // Within a partition, an aggregate's versions never skip ahead; a
        // redelivered batch may repeat versions already seen.
        let mut highest = 0;
        for &v in versions {
            assert!(
                v <= highest + 1,
                "{key}: version {v} arrived after {highest}: {versions:?}"
            );
            highest = highest.max(v);
        }
        assert_eq!(Some(&highest), store_max.get(key), "{key}");
        if !allow_duplicates {
            assert_eq!(versions, &(1..=highest).collect::<Vec<_>>(), "{key}");
        }
    }
    (messages.len(), seen.len())
}

/// The read model as comparable JSON rows.
pub async fn read_model(env: &TestEnv) -> Vec<Value> {
    sqlx::query_as::<_, (Value,)>(
        "SELECT to_jsonb(c) FROM rm_customers c ORDER BY organization_id, id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(v,)| v)
    .collect()
}

/// Asserts that the customers kept per organization and status
/// (`rm_customer_counts`, ADR 0041) are the rows of `rm_customers`, counted
/// in the same snapshot: no count differs, none is missing, none is left
/// over (a status with no customers may keep a count of 0).
pub async fn assert_customer_counts_match_rows(env: &TestEnv) {
    assert_counts_match_rows(env, "rm_customer_counts", "customers", "rm_customers").await;
}

/// Asserts that the quotes kept per organization and status
/// (`rm_quote_counts`, ADR 0041) are the rows of `rm_quotes`, as
/// [`assert_customer_counts_match_rows`] does for customers.
pub async fn assert_quote_counts_match_rows(env: &TestEnv) {
    assert_counts_match_rows(env, "rm_quote_counts", "quotes", "rm_quotes").await;
}

async fn assert_counts_match_rows(env: &TestEnv, counts: &str, column: &str, rows: &str) {
    let (differences,): (Value,) = sqlx::query_as(&format!(
        "WITH kept AS (SELECT organization_id, status, {column} AS n FROM {counts}
                       WHERE {column} <> 0),
              rows AS (SELECT organization_id, status, count(*) AS n FROM {rows}
                       GROUP BY organization_id, status)
         SELECT coalesce(jsonb_agg(d), '[]') FROM (
           (SELECT 'kept' AS side, * FROM kept EXCEPT SELECT 'kept', * FROM rows)
           UNION ALL
           (SELECT 'rows' AS side, * FROM rows EXCEPT SELECT 'rows', * FROM kept)) d"
    ))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        differences,
        serde_json::json!([]),
        "{counts} differ from the rows of {rows}"
    );
}

/// Asserts that the live read model equals a replay of the event store,
/// and its kept counts its rows before and after.
pub async fn assert_read_model_equals_replay(env: &TestEnv) {
    pivotal_test_support::wait_for_horizon(&env.pool).await;
    assert_customer_counts_match_rows(env).await;
    let live = read_model(env).await;
    let projection = pivotal_projectors::customers::CustomersProjection;
    let report = pivotal_projectors::framework::rebuild(&env.pool, &projection, None)
        .await
        .unwrap();
    let replayed = read_model(env).await;
    assert!(report.events > 0);
    assert_eq!(live.len(), replayed.len());
    assert_eq!(
        live, replayed,
        "read model differs from a replay of the store"
    );
    assert_customer_counts_match_rows(env).await;
}

/// Password of the users the system tests create.
pub const PASSWORD: &str = "system test passphrase";

async fn post_ok(url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = pivotal_test_support::http().post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status} {body}");
    body
}

/// Signs up a new organization named `name` (its owner is "Olive Owner");
/// returns the owner's access token.
pub async fn sign_up(commands: &str, name: &str) -> String {
    let email = format!("owner-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = post_ok(
        format!("{commands}/v1/auth/signup"),
        None,
        serde_json::json!({"organization": {"name": name, "defaultCurrency": "NZD"},
               "user": {"email": email, "password": PASSWORD, "firstName": "Olive", "lastName": "Owner"}}),
    )
    .await;
    body["accessToken"].as_str().unwrap().to_owned()
}

/// Adds a user with `roles` to the owner's organization and signs them in;
/// returns their access token.
pub async fn add_user(
    commands: &str,
    owner: &str,
    first: &str,
    last: &str,
    roles: &[&str],
) -> String {
    let email = format!(
        "{}-{}@example.com",
        first.to_lowercase(),
        uuid::Uuid::new_v4().simple()
    );
    post_ok(
        format!("{commands}/v1/users"),
        Some(owner),
        serde_json::json!({"email": email, "firstName": first, "lastName": last,
               "roles": roles, "password": PASSWORD}),
    )
    .await;
    let body = post_ok(
        format!("{commands}/v1/auth/login"),
        None,
        serde_json::json!({"email": email, "password": PASSWORD}),
    )
    .await;
    body["accessToken"].as_str().unwrap().to_owned()
}

/// A TCP port free at the time of asking, and never handed out before in
/// this test process.
///
/// Taken below the kernel's ephemeral range (32768 and up on Linux), so a
/// service stopped and started again on it by a test never finds it taken
/// by another test's outgoing connection in between. The tests of this
/// binary run side by side: a port handed to one test's service, free
/// until that service binds it or again while a test has it stopped, is
/// never handed to another.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let start = (hasher.finish() % u64::from(COUNT)) as u16;
    let port = (0..COUNT)
        .map(|i| FIRST + (start + i) % COUNT)
        .filter(|port| !handed_out.contains(port))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range");
    handed_out.insert(port);
    port
}

/// Drawn at random, 500 free ports would repeat one almost surely (the
/// birthday bound over 12,000 ports): every one handed out here differs.
#[test]
fn free_ports_are_never_handed_out_twice() {
    let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
    let distinct: BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), ports.len());
    assert!(ports.iter().all(|port| (20_000..32_000).contains(port)));
}

/// Sends SIGTERM to `process` and waits up to `limit` for it to exit;
/// returns its exit status.
pub fn terminate(process: &mut Process, limit: Duration) -> Option<std::process::ExitStatus> {
    let pid = process.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = process.0.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Asserts that every table read model equals a replay of the event store:
/// each projection's table is read, rebuilt from the store and read again;
/// and that the customer counts are the customers' rows before and after.
pub async fn assert_every_read_model_equals_replay(env: &TestEnv) {
    pivotal_test_support::wait_for_horizon(&env.pool).await;
    assert_customer_counts_match_rows(env).await;
    for projection in pivotal_projectors::all_projections() {
        if projection.name() == "search" {
            // A work queue for the indexer, not a read model.
            continue;
        }
        let table = projection.table();
        let read = || async {
            sqlx::query_as::<_, (Value,)>(&format!(
                "SELECT to_jsonb(t) FROM {table} t ORDER BY to_jsonb(t)::text"
            ))
            .fetch_all(&env.pool)
            .await
            .unwrap()
        };
        let live = read().await;
        pivotal_projectors::framework::rebuild(&env.pool, projection.as_ref(), None)
            .await
            .unwrap();
        let replayed = read().await;
        assert_eq!(
            live.len(),
            replayed.len(),
            "{table}: row count differs from a replay"
        );
        assert!(
            live == replayed,
            "{table} differs from a replay of the store"
        );
    }
    assert_customer_counts_match_rows(env).await;
}

/// The tansu binary installed by `scripts/services.sh`.
pub fn tansu() -> String {
    std::env::var("PIVOTAL_TANSU").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/pivotal-flow/tansu-0.6.0/bin/tansu")
    })
}

/// A private tansu broker on `port` with its SQLite storage in `dir`, given
/// the index its fetch needs (`scripts/tansu-index.py`). Returns once it
/// listens on `port` (a line `ready in …ms` once bound); a broker that
/// exits first (its port taken, its storage unreadable) fails the test here
/// with its log. Its output, with its warnings and errors, goes to
/// `broker.log` in `dir`, appended to across restarts ([`broker_report`]).
pub fn start_broker(dir: &std::path::Path, port: u16) -> Process {
    let readies = || {
        std::fs::read_to_string(dir.join("broker.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with("ready in "))
            .count()
    };
    let earlier = readies();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))
        .expect("broker log");
    let child = Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--storage-engine",
            "sqlite://broker.db",
        ])
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdout(log.try_clone().expect("broker log"))
        .stderr(log)
        .spawn()
        .expect("tansu must be installed (scripts/services.sh)");
    let mut broker = Process(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while readies() == earlier {
        let exited = broker.0.try_wait().unwrap().is_some();
        assert!(
            !exited && std::time::Instant::now() < deadline,
            "the broker on port {port} did not come up; {}",
            broker_report(dir, &mut broker)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tansu-index.py");
    let indexed = Command::new("python3")
        .arg(script)
        .arg(dir.join("broker.db"))
        .status()
        .expect("python3 is installed by scripts/services.sh");
    assert!(
        indexed.success(),
        "{script} failed on the broker in {dir:?}"
    );
    broker
}

/// Whether `broker`, started by [`start_broker`] in `dir`, still runs, and
/// the last lines of its log: what a test that waited for it in vain says.
pub fn broker_report(dir: &std::path::Path, broker: &mut Process) -> String {
    let state = match broker.0.try_wait() {
        Ok(None) => "running".to_owned(),
        Ok(Some(status)) => format!("exited ({status})"),
        Err(error) => format!("unknown ({error})"),
    };
    let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("the broker is {state}; the end of its log:\n{tail}")
}

/// A private Redis on `port`, keeping nothing on disk.
pub fn start_redis(port: u16) -> pivotal_test_support::RedisServer {
    pivotal_test_support::RedisServer::on_port(port)
}

/// POSTs `body` as `token`'s caller and asserts a 2xx answer.
pub async fn post_accepted(url: &str, token: &str, body: &Value) -> reqwest::Response {
    let response = http()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response
}

/// Creates a customer named `legal_name` through the command API at
/// `commands`; returns its id and the command's consistency token.
pub async fn create_customer(commands: &str, token: &str, legal_name: &str) -> (String, String) {
    let response = post_accepted(
        &format!("{commands}/v1/customers"),
        token,
        &serde_json::json!({"legalName": legal_name, "currency": "NZD"}),
    )
    .await;
    let consistency = consistency_token(&response);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, consistency)
}

/// Renames customer `id`; returns the command's consistency token.
pub async fn rename_customer(commands: &str, token: &str, id: &str, legal_name: &str) -> String {
    let response = post_accepted(
        &format!("{commands}/v1/customers/{id}/rename"),
        token,
        &serde_json::json!({"legalName": legal_name}),
    )
    .await;
    consistency_token(&response)
}

fn consistency_token(response: &reqwest::Response) -> String {
    response.headers()["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Runs `query` with `variables` on the query API at `url` as `token`'s
/// caller; returns the GraphQL response.
pub async fn graphql(url: &str, token: &str, query: &str, variables: Value) -> Value {
    http()
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&serde_json::json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
