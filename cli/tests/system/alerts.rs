//! The alerting rules of `monitoring/alerts.yml` evaluated by a real
//! Prometheus (the binary of Debian's `prometheus` package, which
//! `scripts/services.sh` unpacks beside promtool) scraping the four
//! processes: every metric the rules select is one the processes serve,
//! every rule evaluates, none is even pending while the system is healthy,
//! and killing relays raises the alerts that say so, and only those.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use pivotal_test_support::{TestEnv, eventually, http, workspace_root};
use serde_json::{Value, json};

use crate::harness::{Process, free_port, spawn_process_with, text_at, wait_healthy};

/// Starts Prometheus on `port`, scraping `jobs` (name, targets) every
/// second and evaluating the project's rules every second.
fn start_prometheus(dir: &std::path::Path, port: u16, jobs: &[(&str, Vec<String>)]) -> Process {
    let mut config = String::from(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n",
    );
    config.push_str(&format!(
        "rule_files: [\"{}\"]\nscrape_configs:\n",
        workspace_root().join("monitoring/alerts.yml").display()
    ));
    for (job, targets) in jobs {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs: [{{targets: {targets:?}}}]\n"
        ));
    }
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(pivotal_test_support::installed_tool(
        "prometheus/usr/bin/prometheus",
    ))
    .arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .unwrap();
    Process(child)
}

/// `GET /api/v1/<path>?<query>`'s `data`, once Prometheus answers.
async fn api(prometheus: &str, path: &str, query: &[(&str, &str)]) -> Option<Value> {
    let url = url::Url::parse_with_params(&format!("{prometheus}/api/v1/{path}"), query).ok()?;
    let body: Value = http().get(url).send().await.ok()?.json().await.ok()?;
    (body["status"] == "success").then(|| body["data"].clone())
}

/// An instant query's single value, if it has exactly one.
async fn scalar(prometheus: &str, query: &str) -> Option<f64> {
    let data = api(prometheus, "query", &[("query", query)]).await?;
    let result = data["result"].as_array()?;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// The alerts now pending or firing, as (alert name, job, instance).
async fn active_alerts(prometheus: &str) -> Option<BTreeSet<(String, String, String)>> {
    let data = api(prometheus, "alerts", &[]).await?;
    Some(
        data["alerts"]
            .as_array()?
            .iter()
            .map(|alert| {
                let label = |name: &str| alert["labels"][name].as_str().unwrap_or("").to_owned();
                (label("alertname"), label("job"), label("instance"))
            })
            .collect(),
    )
}

/// The instance of the relay whose `relay_active` is 1, if one is.
async fn active_relay(prometheus: &str) -> Option<String> {
    let data = api(prometheus, "query", &[("query", "relay_active == 1")]).await?;
    data["result"][0]["metric"]["instance"]
        .as_str()
        .map(str::to_owned)
}

/// Whether `targets` targets are up and every rule has evaluated without
/// error.
async fn all_up_and_evaluated(prometheus: &str, targets: usize) -> bool {
    let Some(scraped) = api(prometheus, "targets", &[("state", "active")]).await else {
        return false;
    };
    let up = scraped["activeTargets"]
        .as_array()
        .map_or(0, |all| all.iter().filter(|t| t["health"] == "up").count());
    let Some(rules) = api(prometheus, "rules", &[]).await else {
        return false;
    };
    let groups = rules["groups"].as_array().cloned().unwrap_or_default();
    let healthy = !groups.is_empty()
        && groups.iter().all(|group| {
            group["rules"]
                .as_array()
                .is_some_and(|rules| rules.iter().all(|rule| rule["health"] == "ok"))
        });
    up == targets && healthy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerting_rules_watch_the_running_processes() {
    let env = TestEnv::new().await;
    let address = || format!("127.0.0.1:{}", free_port());
    let (command_at, query_at, projector_at) = (address(), address(), address());
    let relay_at = [address(), address()];
    let _commands = spawn_process_with(
        &env,
        "command-api",
        &[("PIVOTAL_COMMAND_API__LISTEN", command_at.clone())],
    );
    let _queries = spawn_process_with(
        &env,
        "query-api",
        &[("PIVOTAL_QUERY_API__LISTEN", query_at.clone())],
    );
    let _projector = spawn_process_with(
        &env,
        "projector",
        &[("PIVOTAL_PROJECTOR__OPS_LISTEN", projector_at.clone())],
    );
    let mut relays: Vec<Option<Process>> = relay_at
        .iter()
        .map(|at| {
            Some(spawn_process_with(
                &env,
                "relay",
                &[("PIVOTAL_RELAY__OPS_LISTEN", at.clone())],
            ))
        })
        .collect();
    for (at, what) in [
        (&command_at, "the command API"),
        (&query_at, "the query API"),
        (&projector_at, "the projector"),
        (&relay_at[0], "the first relay"),
        (&relay_at[1], "the second relay"),
    ] {
        wait_healthy(&format!("http://{at}"), what).await;
    }
    // A change through the pipeline, so that the series a change makes
    // (commands, consumer lag) exist.
    let base = format!("http://{command_at}");
    let token = env.token(uuid::Uuid::now_v7(), &["owner"]);
    let created = http()
        .post(format!("{base}/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"legalName": "Alerted Ltd", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let consuming = eventually(Duration::from_secs(90), || async {
        let text = text_at(&format!("http://{projector_at}/metrics")).await?;
        text.contains("consumer_lag_messages{").then_some(())
    })
    .await;
    assert!(consuming.is_some(), "the projector never reported its lag");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let jobs = [
        ("pivotal-command-api", vec![command_at.clone()]),
        ("pivotal-query-api", vec![query_at.clone()]),
        ("pivotal-relay", relay_at.to_vec()),
        ("pivotal-projector", vec![projector_at.clone()]),
    ];
    let _prometheus = start_prometheus(dir.path(), port, &jobs);
    let prometheus = format!("http://127.0.0.1:{port}");
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let ready = eventually(Duration::from_secs(60), || async {
        all_up_and_evaluated(&prometheus, 5).await.then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "targets never all up with every rule evaluated:\n{}",
        log()
    );

    // Every metric the rules select is one Prometheus scraped (`up` is
    // its own).
    let names: BTreeSet<String> = serde_json::from_value(
        api(&prometheus, "label/__name__/values", &[])
            .await
            .unwrap(),
    )
    .unwrap();
    let selected = alert_metric_names();
    assert!(
        selected.contains("relay_active")
            && selected.contains("http_request_duration_seconds_bucket")
            && selected.len() >= 15,
        "the rules' metric names were not read: {selected:?}"
    );
    let unserved: Vec<&String> = selected.difference(&names).collect();
    assert!(
        unserved.is_empty(),
        "monitoring/alerts.yml selects metrics no process serves: {unserved:?}"
    );

    // Healthy: once every target is scraped, no alert is even pending,
    // and exactly one of the two relays is the active one.
    let quiet = eventually(Duration::from_secs(30), || async {
        active_alerts(&prometheus).await.filter(BTreeSet::is_empty)
    })
    .await;
    assert!(
        quiet.is_some(),
        "alerts on a healthy system: {:?}",
        active_alerts(&prometheus).await
    );
    assert_eq!(scalar(&prometheus, "count(relay_active)").await, Some(2.0));
    let one_active = eventually(Duration::from_secs(30), || async {
        (scalar(&prometheus, "sum(relay_active)").await == Some(1.0)).then_some(())
    })
    .await;
    assert!(one_active.is_some(), "not exactly one relay active");
    let active_at = active_relay(&prometheus).await.unwrap();
    let first = relay_at.iter().position(|at| *at == active_at).unwrap();
    let second = 1 - first;

    // The active relay dies: that instance is down (pending), the standby
    // takes the lock, and nothing says the relay is missing.
    drop(relays[first].take());
    let expected = BTreeSet::from([(
        "PivotalProcessDown".to_owned(),
        "pivotal-relay".to_owned(),
        relay_at[first].clone(),
    )]);
    let seen = eventually(Duration::from_secs(30), || async {
        let taken_over = scalar(&prometheus, "sum(relay_active)").await == Some(1.0);
        let alerts = active_alerts(&prometheus).await?;
        (taken_over && alerts == expected).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "after the active relay died: alerts {:?}, sum(relay_active) {:?}",
        active_alerts(&prometheus).await,
        scalar(&prometheus, "sum(relay_active)").await
    );
    assert_eq!(
        active_relay(&prometheus).await.as_deref(),
        Some(relay_at[second].as_str())
    );

    // The last relay dies: no relay is up.
    drop(relays[second].take());
    let missing = eventually(Duration::from_secs(30), || async {
        let alerts = active_alerts(&prometheus).await?;
        alerts
            .contains(&(
                "PivotalProcessMissing".to_owned(),
                "pivotal-relay".to_owned(),
                String::new(),
            ))
            .then_some(alerts)
    })
    .await;
    let Some(alerts) = missing else {
        panic!("no relay up, yet: {:?}", active_alerts(&prometheus).await);
    };
    assert!(
        alerts.iter().all(|(_, job, _)| job == "pivotal-relay"),
        "alerts about other processes: {alerts:?}"
    );
}

/// The metric names the expressions of `monitoring/alerts.yml` select. Of
/// each expression's words, with string literals, label matchers, ranges
/// and grouping clauses left out, a metric name is one that is neither a
/// number, a function or aggregation (followed by `(`, or by its grouping
/// clause) nor an operator.
fn alert_metric_names() -> BTreeSet<String> {
    let text = include_str!("../../../monitoring/alerts.yml");
    let mut names = BTreeSet::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut expr = rest.trim().to_owned();
        if matches!(expr.as_str(), ">-" | ">" | "|" | "|-") {
            expr.clear();
            while let Some(next) = lines.next_if(|next| {
                next.len() - next.trim_start().len() > indent || next.trim().is_empty()
            }) {
                expr.push(' ');
                expr.push_str(next.trim());
            }
        }
        names.extend(selected_metrics(&expr));
    }
    names
}

fn selected_metrics(expr: &str) -> Vec<String> {
    const OPERATORS: [&str; 5] = ["and", "or", "unless", "bool", "offset"];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let skip_to = |from: usize, close: char| {
        chars[from..]
            .iter()
            .position(|&c| c == close)
            .map_or(chars.len(), |at| from + at + 1)
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = skip_to(i + 1, '"');
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut after = i;
            while after < chars.len() && chars[after] == ' ' {
                after += 1;
            }
            let next_word: String = chars[after..]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            // `sum by (job) (...)`: an aggregation with its grouping first.
            let called = chars.get(after) == Some(&'(')
                || (!LABEL_LISTS.contains(&word.as_str())
                    && matches!(next_word.as_str(), "by" | "without"));
            if called && LABEL_LISTS.contains(&word.as_str()) {
                i = skip_to(after + 1, ')');
            } else if !called && !OPERATORS.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}
