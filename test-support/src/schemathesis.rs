//! Runs Schemathesis (installed by `scripts/services.sh` in the tools'
//! virtual environment) the way the contract tests do: a crate's
//! `tests/contract/` directory holds its configuration
//! (`schemathesis.toml`) and hooks (`hooks.py`); the hooks are told where
//! to write the refusals they let through (`PIVOTAL_CONTRACT_FILTERED`).

use std::path::Path;
use std::process::Stdio;

/// What a run printed, and the refusals its hooks let through.
#[derive(Debug)]
pub struct Run {
    pub succeeded: bool,
    pub stdout: String,
    pub stderr: String,
    /// One line per refusal the hooks let through (empty when none).
    pub filtered: String,
}

impl Run {
    /// Panics with everything Schemathesis printed unless the run passed.
    pub fn assert_passed(&self, what: &str) {
        assert!(
            self.succeeded,
            "Schemathesis found {what} at odds:\n{}\n{}",
            self.stdout, self.stderr
        );
    }

    /// Whether every one of `count` operations was tested.
    pub fn tested(&self, count: usize) -> bool {
        self.stdout.contains(&format!("Tested: {count}"))
    }
}

/// Runs `st run location` with the configuration and hooks in `contract`,
/// authenticated by bearer `token`, with `env` for the hooks.
pub async fn run(contract: &Path, location: &str, token: &str, env: &[(&str, &str)]) -> Run {
    let st = crate::installed_tool("venv/bin/st");
    let report = std::env::temp_dir().join(format!("pivotal-contract-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&report).unwrap();
    let filtered = report.join("filtered.txt");
    let output = tokio::process::Command::new(st)
        .arg("--config-file")
        .arg(contract.join("schemathesis.toml"))
        .arg("run")
        .arg(location)
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("--report-dir")
        .arg(&report)
        .env("PYTHONPATH", contract)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PIVOTAL_CONTRACT_FILTERED", &filtered)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let run = Run {
        succeeded: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        filtered: std::fs::read_to_string(&filtered).unwrap_or_default(),
    };
    let _ = std::fs::remove_dir_all(&report);
    run
}
