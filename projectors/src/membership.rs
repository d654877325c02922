//! Where the projector's consumer stands in its group.
//!
//! librdkafka's rebalance callbacks say when the member is given its
//! partitions (an assignment, possibly empty when the group has more
//! members than partitions) and when it loses them (a revocation, a lost
//! session, a failed rebalance). Between the two it is out of the group:
//! joining, waiting for the leader's assignment, or waiting for a
//! coordinator. A rebalance takes seconds; a member out of its group for
//! longer than [`Membership`]'s limit consumes nothing and will not
//! recover by itself (a group the broker never completes, a coordinator
//! that stays away), so `/readyz` reports it, `consumer_group_unsettled_seconds`
//! counts it and the log says so once (ADR 0034).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared between the consumer's context and the operations endpoint.
#[derive(Debug, Clone)]
pub struct Membership {
    standing: Arc<Mutex<Standing>>,
    limit: Duration,
}

#[derive(Debug)]
struct Standing {
    /// Partitions held since the last assignment; `None` while out of the
    /// group.
    partitions: Option<usize>,
    /// When the member last entered or left the group (the process's
    /// start before the first assignment).
    since: Instant,
    /// Why it last left the group.
    reason: &'static str,
    /// Whether the log has said that this absence passed the limit.
    reported: bool,
}

/// A readiness verdict: ready or not, and a word for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub detail: String,
}

impl Membership {
    /// A member that has not joined yet; out of its group for longer than
    /// `limit` it is not ready.
    pub fn new(limit: Duration) -> Self {
        Self::starting_at(limit, Instant::now())
    }

    /// A member that has not joined yet, with the configured limit
    /// (`projector.out_of_group_limit_ms`).
    pub fn from_settings(settings: &pivotal_settings::ProjectorSettings) -> Self {
        Self::new(Duration::from_millis(settings.out_of_group_limit_ms))
    }

    fn starting_at(limit: Duration, now: Instant) -> Self {
        Self {
            standing: Arc::new(Mutex::new(Standing {
                partitions: None,
                since: now,
                reason: "joining",
                reported: false,
            })),
            limit,
        }
    }

    fn standing(&self) -> std::sync::MutexGuard<'_, Standing> {
        // A panic elsewhere cannot leave a `Standing` half written: every
        // update is a few plain assignments.
        self.standing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The group gave this member `partitions` partitions.
    pub fn assigned(&self, partitions: usize) {
        self.assigned_at(partitions, Instant::now());
    }

    fn assigned_at(&self, partitions: usize, now: Instant) {
        let mut standing = self.standing();
        if standing.reported {
            tracing::info!(
                partitions,
                absent_seconds = now.duration_since(standing.since).as_secs(),
                "the consumer is back in its group"
            );
        }
        metrics::gauge!("consumer_group_unsettled_seconds").set(0.0);
        *standing = Standing {
            partitions: Some(partitions),
            since: now,
            reason: "",
            reported: false,
        };
    }

    /// The member left its group: `reason` is `revoked` (a rebalance
    /// began, or the session was lost) or `rebalance failed`.
    pub fn left(&self, reason: &'static str) {
        self.left_at(reason, Instant::now());
    }

    fn left_at(&self, reason: &'static str, now: Instant) {
        let mut standing = self.standing();
        // An absence that goes on (a failed rebalance after a revocation)
        // keeps the time it began.
        if standing.partitions.is_some() {
            standing.since = now;
            standing.reported = false;
        }
        standing.partitions = None;
        standing.reason = reason;
    }

    /// Whether the member holds an assignment now (possibly empty).
    pub fn settled(&self) -> bool {
        self.standing().partitions.is_some()
    }

    /// `/readyz`'s verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict_at(Instant::now())
    }

    fn verdict_at(&self, now: Instant) -> Verdict {
        let standing = self.standing();
        match standing.partitions {
            Some(partitions) => Verdict {
                ready: true,
                detail: format!("ok ({partitions} partitions)"),
            },
            None => {
                let absent = now.duration_since(standing.since);
                let ready = absent <= self.limit;
                let detail = if ready {
                    format!("{} ({} s)", standing.reason, absent.as_secs())
                } else {
                    format!(
                        "out of its group for {} s ({}; limit {} s)",
                        absent.as_secs(),
                        standing.reason,
                        self.limit.as_secs()
                    )
                };
                Verdict { ready, detail }
            }
        }
    }

    /// Publishes `consumer_group_unsettled_seconds` and logs, once per
    /// absence, an absence past the limit. Called with librdkafka's
    /// statistics, every few seconds.
    pub fn report(&self) {
        self.report_at(Instant::now());
    }

    fn report_at(&self, now: Instant) {
        let mut standing = self.standing();
        let absent = match standing.partitions {
            Some(_) => Duration::ZERO,
            None => now.duration_since(standing.since),
        };
        metrics::gauge!("consumer_group_unsettled_seconds").set(absent.as_secs_f64());
        if absent > self.limit && !standing.reported {
            standing.reported = true;
            tracing::error!(
                absent_seconds = absent.as_secs(),
                reason = standing.reason,
                limit_seconds = self.limit.as_secs(),
                "the consumer has held no place in its group for longer than a rebalance takes; \
                 it consumes nothing until the group coordinator completes a rebalance"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn a_member_that_never_joins_is_ready_until_the_limit_passes() {
        let start = Instant::now();
        let membership = Membership::starting_at(LIMIT, start);
        let early = membership.verdict_at(at(start, 59));
        assert!(early.ready);
        assert_eq!(early.detail, "joining (59 s)");
        let late = membership.verdict_at(at(start, 61));
        assert!(!late.ready);
        assert_eq!(
            late.detail,
            "out of its group for 61 s (joining; limit 60 s)"
        );
    }

    #[test]
    fn an_assignment_settles_the_member_even_with_no_partitions() {
        let start = Instant::now();
        let membership = Membership::starting_at(LIMIT, start);
        membership.assigned_at(0, at(start, 5));
        let verdict = membership.verdict_at(at(start, 500));
        assert!(verdict.ready);
        assert_eq!(verdict.detail, "ok (0 partitions)");
    }

    #[test]
    fn an_absence_is_timed_from_when_the_partitions_were_lost() {
        let start = Instant::now();
        let membership = Membership::starting_at(LIMIT, start);
        membership.assigned_at(3, at(start, 5));
        membership.left_at("revoked", at(start, 100));
        assert!(membership.verdict_at(at(start, 160)).ready);
        // A failed rebalance during the same absence does not restart it.
        membership.left_at("rebalance failed", at(start, 150));
        let verdict = membership.verdict_at(at(start, 161));
        assert!(!verdict.ready);
        assert_eq!(
            verdict.detail,
            "out of its group for 61 s (rebalance failed; limit 60 s)"
        );
        membership.assigned_at(3, at(start, 170));
        assert!(membership.verdict_at(at(start, 1000)).ready);
    }

    /// A writer shared by the subscriber and the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The log lines `f` writes.
    fn logged(f: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_log_reports_each_absence_once() {
        let start = Instant::now();
        let membership = Membership::starting_at(LIMIT, start);
        let log = logged(|| {
            membership.report_at(at(start, 61));
            membership.report_at(at(start, 65));
            membership.assigned_at(1, at(start, 66));
            membership.left_at("revoked", at(start, 70));
            membership.report_at(at(start, 100));
            membership.report_at(at(start, 131));
            membership.report_at(at(start, 140));
        });
        let kinds: Vec<(&str, &str)> = log
            .iter()
            .map(|line| {
                let level = line.split_whitespace().next().unwrap_or_default();
                let absent = line
                    .split_whitespace()
                    .find(|word| word.starts_with("absent_seconds="))
                    .unwrap_or_default();
                (level, absent)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("ERROR", "absent_seconds=61"),
                ("INFO", "absent_seconds=66"),
                ("ERROR", "absent_seconds=61"),
            ],
            "{log:#?}"
        );
        assert!(log[0].contains("reason=\"joining\""), "{log:#?}");
        assert!(log[2].contains("reason=\"revoked\""), "{log:#?}");
    }
}
