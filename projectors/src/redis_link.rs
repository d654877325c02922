//! The projector's connection to Redis, for what follows a committed batch:
//! live notifications and the dashboard.
//!
//! Redis is never on the read models' path. While it cannot be reached, a
//! batch does not pay for a reconnection: after a failure Redis is left
//! alone for a while (half a second, doubling up to five), and each attempt
//! is a single bounded connect. Work skipped meanwhile is what a Redis
//! outage loses anyway (notifications), or is caught up afterwards (the
//! dashboard).

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// One Redis connection shared by the projector's post-commit work.
pub struct RedisLink {
    client: Option<redis::Client>,
    connection: Option<ConnectionManager>,
    /// No attempt before this instant (after a failure).
    retry_at: Option<Instant>,
    failures: u32,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("connected", &self.connection.is_some())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    pub fn new(url: &str) -> Self {
        let client = redis::Client::open(url)
            .map_err(|error| tracing::warn!(%error, "invalid Redis URL; no live notifications or dashboard"))
            .ok();
        Self {
            client,
            connection: None,
            retry_at: None,
            failures: 0,
        }
    }

    /// A connection, or none while Redis is being left alone after a
    /// failure (or cannot be reached now).
    pub async fn connection(&mut self) -> Option<ConnectionManager> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        if self.connection.is_none() {
            let client = self.client.as_ref()?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(0);
            match client.get_connection_manager_with_config(config).await {
                Ok(connection) => self.connection = Some(connection),
                Err(error) => {
                    tracing::warn!(%error, "cannot reach Redis; notifications and dashboard wait");
                    self.failed();
                    return None;
                }
            }
        }
        self.connection.clone()
    }

    /// Reports a failed call: the connection is dropped (the next attempt
    /// connects afresh) and Redis is left alone for a while.
    pub fn failed(&mut self) {
        self.connection = None;
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(Instant::now() + pause_after(self.failures));
    }

    /// Reports a call that worked.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }
}

/// How long Redis is left alone after `failures` failures in a row.
fn pause_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_PAUSE
        .saturating_mul(1 << doublings)
        .min(LONGEST_PAUSE)
}

/// A Lua script that pipelines call by its SHA1 (`EVALSHA`) after loading
/// it once (`SCRIPT LOAD`) at the head of the same pipeline. A call sends
/// the hash instead of the script's text, and Redis finds the script by it
/// instead of hashing the text again; a Redis that has lost its scripts
/// since the last pipeline (a restart, `SCRIPT FLUSH`) is given it back by
/// the pipeline's own load, which runs before its calls on the connection.
pub struct PipelinedScript {
    code: &'static str,
    script: redis::Script,
}

impl std::fmt::Debug for PipelinedScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedScript")
            .field("hash", &self.script.get_hash())
            .finish_non_exhaustive()
    }
}

impl PipelinedScript {
    pub fn new(code: &'static str) -> Self {
        Self {
            code,
            script: redis::Script::new(code),
        }
    }

    /// Adds the load to `pipe`, before any [`call`](Self::call).
    pub fn load<'p>(&self, pipe: &'p mut redis::Pipeline) -> &'p mut redis::Pipeline {
        pipe.cmd("SCRIPT").arg("LOAD").arg(self.code).ignore()
    }

    /// Adds a call with `keys` keys to `pipe`; the caller adds the keys,
    /// then the arguments.
    pub fn call<'p>(&self, pipe: &'p mut redis::Pipeline, keys: usize) -> &'p mut redis::Pipeline {
        pipe.cmd("EVALSHA").arg(self.script.get_hash()).arg(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_five_seconds() {
        let pauses: Vec<u128> = (1..=7).map(|n| pause_after(n).as_millis()).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(pause_after(u32::MAX), LONGEST_PAUSE);
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_left_alone_after_a_failure() {
        // A port nothing listens on: the first attempt fails, the next one
        // within the pause is not made at all.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut link = RedisLink::new(&format!("redis://127.0.0.1:{port}"));
        assert!(link.connection().await.is_none());
        assert_eq!(link.failures, 1);
        assert!(link.connection().await.is_none());
        assert_eq!(link.failures, 1, "no second attempt within the pause");
        link.retry_at = Some(Instant::now());
        assert!(link.connection().await.is_none());
        assert_eq!(link.failures, 2, "an attempt once the pause is over");
    }
}
