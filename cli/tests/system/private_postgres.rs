//! A PostgreSQL cluster of one test's own, from the machine's newest
//! PostgreSQL binaries (`/usr/lib/postgresql/N/bin`, where Debian puts them
//! and `scripts/services.sh` installs them), on a free port, so that a test
//! may stop it or keep other tests' transactions out of it. Run as the
//! `postgres` user when the tests run as root (PostgreSQL refuses root).
//! Stopped, and its files removed, when dropped.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::free_port;

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    as_postgres: bool,
    /// `-c` settings beyond the listener's.
    settings: Vec<String>,
}

impl PrivatePostgres {
    /// Initializes a cluster (trust authentication, superuser `postgres`)
    /// and starts it with `settings` (`name=value`).
    pub fn start(settings: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // `/proc/self` belongs to the process's effective user.
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if as_postgres {
            let chown = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(
                chown.success(),
                "chown -R postgres {}",
                dir.path().display()
            );
        }
        let cluster = Self {
            dir,
            port: free_port(),
            bin: newest_bin(),
            as_postgres,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        let init = cluster
            .command("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(cluster.data())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        cluster.pg_ctl(&["start"]);
        cluster
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT`, without a database.
    pub fn server(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Runs `pg_ctl ACTION…` on the cluster, waiting up to 60 s for it.
    pub fn pg_ctl(&self, action: &[&str]) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        for setting in &self.settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(self.log())
            .args(["-w", "-t", "60"])
            .args(action)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {action:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn newest_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .expect("PostgreSQL's binaries in /usr/lib/postgresql (scripts/services.sh)")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|version| root.join(format!("{version}/bin/pg_ctl")).exists())
        .max()
        .expect("a PostgreSQL server in /usr/lib/postgresql");
    root.join(format!("{newest}/bin"))
}
