//! Sign-in limits kept in Redis, shared by every command API replica:
//! sliding-window request limits per client IP and per account, and the
//! failure counter behind the temporary lockout. Keys are per email digest,
//! so unknown and known addresses behave the same way.

use std::time::{SystemTime, UNIX_EPOCH};

use pivotal_settings::{LockoutSettings, RateLimitSettings};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Allowed,
    /// Over the limit; the oldest counted request leaves the window in
    /// this many seconds (rounded up).
    Exceeded {
        retry_after_secs: u64,
    },
}

/// What a failed sign-in led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Failures so far in the current window.
    Counted(u32),
    /// This failure reached the threshold: locked for `lock_secs`.
    LockedNow { lock_secs: u64 },
}

#[derive(Clone)]
pub struct Limits {
    redis: ConnectionManager,
    prefix: String,
    rate: RateLimitSettings,
    lockout: LockoutSettings,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A sliding-window log: the scores of `KEYS[1]` are the times (ms) of the
/// requests counted in the last `ARGV[2]` ms. A request is counted when
/// fewer than `ARGV[3]` are; otherwise the answer is how long until the
/// oldest leaves the window. Refused requests are not counted, so a client
/// that keeps knocking is let in again once its window has room. Unlike
/// fixed windows, no two bursts can meet at a window boundary.
const SLIDING_WINDOW: &str = "local now = tonumber(ARGV[1]) local window = tonumber(ARGV[2]) \
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window) \
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then \
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES') \
  return math.max(1, tonumber(oldest[2]) + window - now) end \
redis.call('ZADD', KEYS[1], now, ARGV[4]) redis.call('PEXPIRE', KEYS[1], window) return 0";

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl Limits {
    pub fn new(
        redis: ConnectionManager,
        prefix: &str,
        rate: RateLimitSettings,
        lockout: LockoutSettings,
    ) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            rate,
            lockout,
        }
    }

    async fn hit(&self, scope: &str, id: &str, limit: u32) -> redis::RedisResult<Limit> {
        let window_ms = self.rate.window_secs.max(1).saturating_mul(1000);
        let key = format!("{}:rl:{scope}:{id}", self.prefix);
        let mut conn = self.redis.clone();
        let wait_ms: u64 = redis::cmd("EVAL")
            .arg(SLIDING_WINDOW)
            .arg(1)
            .arg(&key)
            .arg(now_millis())
            .arg(window_ms)
            .arg(limit)
            .arg(uuid::Uuid::new_v4().to_string())
            .query_async(&mut conn)
            .await?;
        Ok(if wait_ms == 0 {
            Limit::Allowed
        } else {
            Limit::Exceeded {
                retry_after_secs: wait_ms.div_ceil(1000),
            }
        })
    }

    /// Counts a sign-in request from `ip`.
    pub async fn hit_ip(&self, ip: &str) -> redis::RedisResult<Limit> {
        self.hit("ip", ip, self.rate.per_ip).await
    }

    /// Counts a sign-in request for the account `email_digest` (hex).
    pub async fn hit_account(&self, email_digest: &str) -> redis::RedisResult<Limit> {
        self.hit("account", email_digest, self.rate.per_account)
            .await
    }

    fn failures_key(&self, email_digest: &str) -> String {
        format!("{}:signin-failures:{email_digest}", self.prefix)
    }

    fn lock_key(&self, email_digest: &str) -> String {
        format!("{}:signin-lock:{email_digest}", self.prefix)
    }

    /// Seconds the account stays locked after too many failures, if locked.
    pub async fn locked_for(&self, email_digest: &str) -> redis::RedisResult<Option<u64>> {
        let mut conn = self.redis.clone();
        let ttl: i64 = conn.ttl(self.lock_key(email_digest)).await?;
        Ok(u64::try_from(ttl).ok().filter(|t| *t > 0))
    }

    /// Records a failed sign-in; the threshold within the window locks.
    pub async fn record_failure(&self, email_digest: &str) -> redis::RedisResult<Failure> {
        let key = self.failures_key(email_digest);
        let mut conn = self.redis.clone();
        let (count,): (u32,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.lockout.window_secs.max(1))
            .arg("NX")
            .ignore()
            .query_async(&mut conn)
            .await?;
        if count >= self.lockout.max_failures {
            let lock_secs = self.lockout.lock_secs.max(1);
            let _: () = redis::pipe()
                .atomic()
                .set_ex(self.lock_key(email_digest), 1, lock_secs)
                .del(&key)
                .query_async(&mut conn)
                .await?;
            Ok(Failure::LockedNow { lock_secs })
        } else {
            Ok(Failure::Counted(count))
        }
    }

    /// Forgets failures and any temporary lock (successful sign-in, unlock).
    pub async fn clear(&self, email_digest: &str) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        let _: () = conn
            .del(&[self.failures_key(email_digest), self.lock_key(email_digest)])
            .await?;
        Ok(())
    }
}
