//! Access tokens revoked before they expire. Deactivating or locking a user,
//! changing a password and detecting refresh-token theft end every session
//! of the user at once: the time is recorded in Redis (shared by every API
//! process) for as long as a token issued before it could live, and tokens
//! whose `jti` (a UUIDv7, so a millisecond timestamp) is older are refused.

//!
//! A process that checks tokens on every request keeps a copy of the
//! revocations in memory ([`Revocations::follow`], ADR 0021): it subscribes
//! to the revocations channel, then loads every revocation Redis holds, and
//! answers from memory only while that subscription is known to be up (a
//! PING every second). Otherwise, and until the copy is loaded again, every
//! check reads Redis as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::Claims;

#[derive(Clone)]
pub struct Revocations {
    redis: ConnectionManager,
    prefix: String,
    /// Longest a token lives (access-token lifetime plus clock leeway).
    horizon_secs: u64,
    view: Option<Arc<View>>,
}

/// This process's copy of the revocations: user → tokens issued before
/// this time (ms since the epoch) are refused.
#[derive(Debug, Default)]
struct View {
    /// True only while the subscription is up and the copy was loaded after
    /// it began, so that no revocation can be missing from it.
    live: AtomicBool,
    before: RwLock<HashMap<Uuid, u64>>,
}

impl View {
    fn record(&self, user: Uuid, before_ms: u64) {
        if let Ok(mut map) = self.before.write() {
            let entry = map.entry(user).or_default();
            *entry = (*entry).max(before_ms);
        }
    }

    /// Forgets revocations that no unexpired token can be older than.
    fn prune(&self, now_ms: u64, horizon_secs: u64) {
        if let Ok(mut map) = self.before.write() {
            map.retain(|_, before| before.saturating_add(horizon_secs * 1000) >= now_ms);
        }
    }

    fn lookup(&self, user: Uuid) -> Option<Option<u64>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.before.read().ok().map(|map| map.get(&user).copied())
    }
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default()
}

/// Whether a token with `jti` is refused when its user's tokens issued
/// before `before` (if any) are.
fn refused(before: Option<u64>, jti: Uuid) -> bool {
    match before {
        None => false,
        Some(before) => issued_ms(jti).is_none_or(|issued| issued < before),
    }
}

/// How often the subscription is checked with a PING, and how long its
/// answer may take before the copy stops being trusted.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// How long a revocation must be remembered: as long as a token issued just
/// before it could still be accepted (lifetime, leeway, a minute's margin).
pub fn horizon_secs(auth: &pivotal_settings::AuthSettings) -> u64 {
    u64::try_from(auth.access_token_ttl_secs).unwrap_or(3600) + auth.leeway_secs + 60
}

/// Milliseconds since the epoch encoded in a UUIDv7.
fn issued_ms(jti: Uuid) -> Option<u64> {
    let (secs, nanos) = jti.get_timestamp()?.to_unix();
    Some(secs * 1000 + u64::from(nanos) / 1_000_000)
}

impl Revocations {
    pub fn new(redis: ConnectionManager, prefix: &str, horizon_secs: u64) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            horizon_secs: horizon_secs.max(1),
            view: None,
        }
    }

    /// Keeps a copy of the revocations in this process, current through a
    /// subscription to `url`'s revocations channel, and answers
    /// [`is_revoked`](Self::is_revoked) from it while the subscription is
    /// up. The follower task ends when every clone of the returned value is
    /// dropped.
    pub fn follow(mut self, url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let view = Arc::new(View::default());
        let follower = Follower {
            view: Arc::downgrade(&view),
            client,
            redis: self.redis.clone(),
            prefix: self.prefix.clone(),
            horizon_secs: self.horizon_secs,
        };
        tokio::spawn(follower.run());
        self.view = Some(view);
        Ok(self)
    }

    /// Whether checks are answered from this process's copy (false without
    /// [`follow`](Self::follow), or while its subscription is down).
    pub fn answers_from_memory(&self) -> bool {
        self.view
            .as_ref()
            .is_some_and(|v| v.live.load(Ordering::Acquire))
    }

    fn channel(prefix: &str) -> String {
        format!("{prefix}:revocations")
    }

    /// Connects to `url`. Commands time out after half a second, so a
    /// Redis outage costs a caller that long, not a hang.
    pub async fn connect(url: &str, prefix: &str, horizon_secs: u64) -> redis::RedisResult<Self> {
        let timeout = Some(std::time::Duration::from_millis(500));
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let redis = redis::Client::open(url)?
            .get_connection_manager_with_config(config)
            .await?;
        Ok(Self::new(redis, prefix, horizon_secs))
    }

    /// Whether Redis answers (readiness checks).
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }

    fn key(&self, user_id: Uuid) -> String {
        format!("{}:tokens-revoked-before:{user_id}", self.prefix)
    }

    /// Refuses every access token of `user_id` issued until now: recorded
    /// (for the horizon) and announced to every following process in one
    /// transaction, and in this process's copy at once.
    pub async fn revoke_user(&self, user_id: Uuid) -> redis::RedisResult<()> {
        let now_ms = now_ms();
        let mut conn = self.redis.clone();
        let () = redis::pipe()
            .atomic()
            .set_ex(self.key(user_id), now_ms, self.horizon_secs)
            .ignore()
            .publish(Self::channel(&self.prefix), format!("{user_id}:{now_ms}"))
            .ignore()
            .query_async(&mut conn)
            .await?;
        if let Some(view) = &self.view {
            view.record(user_id, now_ms);
        }
        Ok(())
    }

    /// Whether `claims` belong to a token issued before its user's sessions
    /// were ended. A `jti` that is not a UUIDv7 counts as revoked then.
    pub async fn is_revoked(&self, claims: &Claims) -> redis::RedisResult<bool> {
        if let Some(before) = self.view.as_ref().and_then(|v| v.lookup(claims.sub)) {
            return Ok(refused(before, claims.jti));
        }
        let mut conn = self.redis.clone();
        let before: Option<u64> = conn.get(self.key(claims.sub)).await?;
        Ok(refused(before, claims.jti))
    }
}

/// The task behind [`Revocations::follow`].
struct Follower {
    view: Weak<View>,
    client: redis::Client,
    redis: ConnectionManager,
    prefix: String,
    horizon_secs: u64,
}

impl Follower {
    async fn run(self) {
        let mut pause = Duration::from_millis(200);
        loop {
            let outcome = self.follow_once().await;
            let Some(view) = self.view.upgrade() else {
                return;
            };
            view.live.store(false, Ordering::Release);
            drop(view);
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "revocation subscription down; checking Redis per request");
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Subscribes, loads, then applies announcements until the subscription
    /// fails (an error) or the view is dropped (`Ok`).
    async fn follow_once(&self) -> redis::RedisResult<()> {
        let pubsub = tokio::time::timeout(PING_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| link_error("connecting timed out"))??;
        let (mut sink, mut stream) = pubsub.split();
        sink.subscribe(Revocations::channel(&self.prefix)).await?;
        // Subscribed first, loaded second: a revocation made meanwhile is
        // in the load, the stream or both (merging keeps the latest).
        let loading_since = now_ms();
        let loaded = self.load().await?;
        {
            let Some(view) = self.view.upgrade() else {
                return Ok(());
            };
            // The copy becomes what Redis holds (a Redis that lost its
            // revocations loses them here too), except revocations recorded
            // since the load began: this process's own may have landed
            // after the load read their keys.
            if let Ok(mut map) = view.before.write() {
                map.retain(|_, before| *before >= loading_since);
            }
            for (user, before) in loaded {
                view.record(user, before);
            }
            view.live.store(true, Ordering::Release);
        }
        let mut ticks = tokio::time::interval(PING_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err(link_error("subscription closed"));
                    };
                    let Some(view) = self.view.upgrade() else {
                        return Ok(());
                    };
                    match message.get_payload::<String>().ok().as_deref().and_then(parse_announcement) {
                        Some((user, before)) => view.record(user, before),
                        None => tracing::warn!("unreadable revocation announcement"),
                    }
                }
                _ = ticks.tick() => {
                    tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| link_error("PING timed out"))??;
                    let Some(view) = self.view.upgrade() else {
                        return Ok(());
                    };
                    view.prune(now_ms(), self.horizon_secs);
                }
            }
        }
    }

    /// Every revocation Redis holds.
    async fn load(&self) -> redis::RedisResult<Vec<(Uuid, u64)>> {
        let marker = format!("{}:tokens-revoked-before:", self.prefix);
        let mut conn = self.redis.clone();
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter = conn
                .scan_options::<String>(
                    redis::ScanOptions::default()
                        .with_pattern(format!("{marker}*"))
                        .with_count(1000),
                )
                .await?;
            while let Some(key) = iter.next_item().await {
                keys.push(key?);
            }
        }
        let mut loaded = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let values: Vec<Option<u64>> = conn.mget(chunk).await?;
            for (key, value) in chunk.iter().zip(values) {
                if let (Some(user), Some(before)) = (
                    key.strip_prefix(&marker)
                        .and_then(|u| Uuid::parse_str(u).ok()),
                    value,
                ) {
                    loaded.push((user, before));
                }
            }
        }
        Ok(loaded)
    }
}

fn link_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "revocation subscription",
        what.to_owned(),
    ))
}

/// `user:ms`, as [`Revocations::revoke_user`] announces it.
fn parse_announcement(payload: &str) -> Option<(Uuid, u64)> {
    let (user, before) = payload.split_once(':')?;
    Some((Uuid::parse_str(user).ok()?, before.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_time_comes_from_the_uuid_v7() {
        let before = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        let issued = issued_ms(Uuid::now_v7()).unwrap();
        let after = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        assert!(before <= issued && issued <= after);
        assert_eq!(issued_ms(Uuid::new_v4()), None);
    }

    #[test]
    fn announcements_round_trip_and_garbage_is_refused() {
        let user = Uuid::now_v7();
        assert_eq!(
            parse_announcement(&format!("{user}:1700000000000")),
            Some((user, 1_700_000_000_000))
        );
        for garbage in ["", "x:1", &format!("{user}"), &format!("{user}:soon")] {
            assert_eq!(parse_announcement(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn the_copy_keeps_the_latest_time_and_forgets_expired_ones() {
        let view = View::default();
        let (old, recent) = (Uuid::now_v7(), Uuid::now_v7());
        view.record(recent, 5_000);
        view.record(recent, 4_000);
        view.record(old, 1_000);
        // Not trusted until loaded.
        assert_eq!(view.lookup(recent), None);
        view.live.store(true, Ordering::Release);
        assert_eq!(view.lookup(recent), Some(Some(5_000)));
        // A horizon of 2 s: at 4.5 s nothing issued before 1 s is alive.
        view.prune(4_500, 2);
        assert_eq!(view.lookup(old), Some(None));
        assert_eq!(view.lookup(recent), Some(Some(5_000)));
    }

    fn claims_of(user: Uuid) -> Claims {
        Claims {
            sub: user,
            org: Uuid::now_v7(),
            aud: "pivotal-flow".into(),
            iss: "test".into(),
            iat: 0,
            exp: 0,
            nbf: 0,
            jti: Uuid::now_v7(),
            roles: Vec::new(),
            permissions: Vec::new(),
            mfa: false,
        }
    }

    async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what} did not happen within 10 s");
    }

    /// A redis-server of the test's own (it drops every subscriber).
    struct OwnRedis(std::process::Child);

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn own_redis() -> (OwnRedis, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services.sh installs it)");
        let server = OwnRedis(child);
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        until("redis-server to answer", async || {
            client.get_multiplexed_async_connection().await.is_ok()
        })
        .await;
        (server, url)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_followed_copy_matches_redis_across_processes_and_reconnections() {
        let (_server, url) = own_redis().await;
        let prefix = "t";
        // "Another process": checks and revokes through Redis only.
        let other = Revocations::connect(&url, prefix, 3600).await.unwrap();
        let (early, later, offline) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (early_token, later_token, offline_token) =
            (claims_of(early), claims_of(later), claims_of(offline));
        tokio::time::sleep(Duration::from_millis(2)).await;
        other.revoke_user(early).await.unwrap();

        // Revocations made before following are loaded.
        let followed = Revocations::connect(&url, prefix, 3600)
            .await
            .unwrap()
            .follow(&url)
            .unwrap();
        until("loading", async || followed.answers_from_memory()).await;
        assert!(followed.is_revoked(&early_token).await.unwrap());
        assert!(!followed.is_revoked(&later_token).await.unwrap());
        // Another process's revocation arrives through the subscription.
        other.revoke_user(later).await.unwrap();
        until("the announcement", async || {
            followed.is_revoked(&later_token).await.unwrap()
        })
        .await;
        // A token issued after the revocation is accepted.
        assert!(!followed.is_revoked(&claims_of(later)).await.unwrap());

        // The answers come from memory: with the records gone from Redis,
        // the copy still refuses while a process without one accepts.
        let mut conn = other.redis.clone();
        let () = conn
            .del(&[other.key(early), other.key(later)])
            .await
            .unwrap();
        assert!(followed.answers_from_memory());
        assert!(followed.is_revoked(&later_token).await.unwrap());
        assert!(!other.is_revoked(&later_token).await.unwrap());

        // Redis drops the subscription: the copy is loaded again from Redis
        // (which no longer has the deleted records), and a revocation made
        // around the reconnection is not missed.
        let () = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "pubsub"])
            .query_async::<redis::Value>(&mut conn)
            .await
            .map(|_| ())
            .unwrap();
        other.revoke_user(offline).await.unwrap();
        until("reloading", async || {
            followed.answers_from_memory() && !followed.is_revoked(&later_token).await.unwrap()
        })
        .await;
        assert!(followed.is_revoked(&offline_token).await.unwrap());
    }
}
