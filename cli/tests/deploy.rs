//! The deployment files, validated offline by real validators: the compose
//! file against the Compose Specification schema, every kustomize overlay
//! (rendered) against the Kubernetes API schemas in strict mode, plus the
//! project's rules (probes, requests and limits, Services that select
//! pods), and the monitoring files with promtool: the Prometheus
//! configurations with their rules, the rules' unit tests, a runbook
//! section for every alert. `scripts/services.sh` installs the validators.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validate(tree: &Path) -> Output {
    let python = pivotal_test_support::installed_tool("venv/bin/python");
    let promtool = pivotal_test_support::installed_tool("prometheus/usr/bin/promtool");
    Command::new(python)
        .arg(root().join("scripts/validate_deploy.py"))
        .arg(tree)
        .env("PIVOTAL_PROMTOOL", promtool)
        .output()
        .unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the deployment files in a temporary directory.
fn copy_of_deployment() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("docker-compose.kafka.yml"),
        dir.path().join("docker-compose.kafka.yml"),
    )
    .unwrap();
    copy_tree(&root().join("k8s"), &dir.path().join("k8s"));
    copy_tree(&root().join("monitoring"), &dir.path().join("monitoring"));
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    std::fs::copy(
        root().join("docs/runbook.md"),
        dir.path().join("docs/runbook.md"),
    )
    .unwrap();
    dir
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn compose_file_and_every_overlay_are_valid() {
    let output = validate(&root());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("docker-compose.kafka.yml: valid"),
        "{stdout}"
    );
    for overlay in ["development", "production"] {
        assert!(
            stdout.contains(&format!("k8s/overlays/{overlay}: ")),
            "{stdout}"
        );
    }
    for checked in [
        "monitoring/prometheus.yml: valid, with its rules",
        "monitoring/prometheus-kubernetes.yml: valid, with the rules of k8s/base/alert-rules.yaml",
        "monitoring/alerts.test.yml: every test passed",
    ] {
        assert!(stdout.contains(checked), "{stdout}");
    }
}

#[test]
fn the_validators_catch_broken_files() {
    let cases: [(&str, &str, &str, &str); 8] = [
        // A compose service key the specification does not have.
        (
            "docker-compose.kafka.yml",
            "    image: postgres:16",
            "    image: postgres:16\n    imagee: postgres:17",
            "docker-compose.kafka.yml",
        ),
        // A field the Deployment schema does not have (strict mode).
        (
            "k8s/base/relay.yaml",
            "  replicas: 2\n",
            "  replicas: 2\n  replica: 2\n",
            "Deployment/relay",
        ),
        // A wrong type.
        (
            "k8s/base/projector.yaml",
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds: thirty",
            "Deployment/projector",
        ),
        // A container without a readiness probe.
        (
            "k8s/base/query-api.yaml",
            "readinessProbe:",
            "startupProbe:",
            "has no readinessProbe",
        ),
        // An alerting rule that is not PromQL.
        (
            "monitoring/alerts.yml",
            "expr: max(relay_blocked) == 1",
            "expr: max(relay_blocked) ==",
            "monitoring/prometheus.yml",
        ),
        // A threshold its unit tests do not expect.
        (
            "monitoring/alerts.yml",
            "max(relay_lag_seconds) > 30",
            "max(relay_lag_seconds) > 60",
            "alertname: PivotalRelayLagging",
        ),
        // The ConfigMap's copy of the rules broken.
        (
            "k8s/base/alert-rules.yaml",
            "expr: max(relay_blocked) == 1",
            "expr: max(relay_blocked) ==",
            "monitoring/prometheus-kubernetes.yml",
        ),
        // An alert without its runbook section.
        (
            "docs/runbook.md",
            "## PivotalRelayBlocked",
            "## Blocked",
            "no section for PivotalRelayBlocked",
        ),
    ];
    for (file, from, to, named) in cases {
        let copy = copy_of_deployment();
        replace_in(&copy.path().join(file), from, to);
        let output = validate(copy.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file}: {to:?} passed validation");
        assert!(stderr.contains(named), "{file}: {stderr}");
    }
}
