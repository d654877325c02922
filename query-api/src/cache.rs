//! The seed's multi-level cache for entity-by-id lookups: L1 in process
//! (`quick_cache`), L2 in Redis, PostgreSQL behind both.
//!
//! Coherence by keyspace versioning: after committing, the projector sets
//! `{prefix}:ver:{type}:{id}` to the entity's projected version (never
//! lowering it), then announces the change on the change feed (see
//! [`crate::live`]). An L2 entry is served only when its version equals that
//! key. A reader that fills the cache after a miss sets the version key only
//! if none exists (`SET NX`), so it can never hide a newer projection.
//!
//! An L1 entry is served on the change feed's word while the feed is up
//! (ADR 0055): the feed drops every entry older than an announced change, so
//! an entry the feed vouches for needs no round trip to Redis. It vouches
//! only for entries stored since it last (re)subscribed, and only when no
//! announcement that could concern the entry arrived while it was being
//! read ([`Coherence`]); any other L1 entry is served only when its version
//! equals the version key, as L2's are. A replica therefore serves an entry
//! older than the last projected event only between the projector's
//! announcement and the replica's feed receiving it, and never when it may
//! have missed one (feed down, an unreadable announcement, no PING answer
//! within [`crate::live`]'s deadline).
//!
//! Redis down or flushed: every lookup goes to PostgreSQL (slower, no
//! errors) and entries refill once Redis answers again; a flush removes the
//! version keys, so no L2 entry and no L1 entry the feed does not vouch for
//! is served.
//!
//! L1 keeps each entity as its JSON text, shared (`Arc<str>`), and is
//! bounded by the bytes it holds (`query_api.cache_bytes`), not by a count
//! of entries whose size nothing limits: a hit clones a pointer and parses
//! the text, where a tree of `serde_json::Value` would be cloned node by
//! node and take several times the text's size (ADR 0042).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Seconds an L2 entry lives without being read again.
const L2_TTL_SECS: u64 = 300;
/// Longest wait for Redis before falling back to PostgreSQL.
const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
/// Bytes an L1 entry costs besides its key's and its JSON's: the cache's
/// slot, the key's and the text's allocation headers, the version.
const L1_ENTRY_OVERHEAD: u64 = 96;
/// An entity's JSON size the L1 sizes its table for (a customer's is 400
/// to 800 bytes).
const L1_TYPICAL_ENTRY: u64 = 700;

/// Locks that order L1 stores against the change feed's removals, by key
/// hash (see [`Coherence`]).
const STRIPES: usize = 256;

/// An L1 entry: an entity's projected version, its JSON text, and the feed
/// session that vouches for it (0: none, its version is checked in Redis).
#[derive(Debug, Clone)]
struct L1Entry {
    version: i64,
    json: Arc<str>,
    vouched: u64,
}

/// Weighs an L1 entry by the bytes it keeps alive.
#[derive(Debug, Clone, Copy)]
struct L1Bytes;

impl quick_cache::Weighter<String, L1Entry> for L1Bytes {
    fn weight(&self, key: &String, entry: &L1Entry) -> u64 {
        (key.len() + entry.json.len()) as u64 + L1_ENTRY_OVERHEAD
    }
}

/// Version key of an entity, as the projector writes it.
pub fn version_key(prefix: &str, aggregate_type: &str, id: &str) -> String {
    format!("{prefix}:ver:{aggregate_type}:{id}")
}

fn entry_key(prefix: &str, aggregate_type: &str, organization: Uuid, id: Uuid) -> String {
    format!("{prefix}:cache:{aggregate_type}:{organization}:{id}")
}

/// What lets the change feed vouch for L1 entries.
///
/// `feed` counts the feed's transitions: odd while it is up, so each
/// subscription is a session of its own number and a session that ended
/// vouches for nothing. Each stripe counts the announcements applied to the
/// keys that hash to it. A reader takes a [`Ticket`] (the session and its
/// key's stripe count) before it reads the version key, L2 or PostgreSQL;
/// its entry is stored as vouched for only if, under the stripe's lock,
/// both are unchanged. An announcement applied in between (for this key or
/// another of its stripe) leaves the entry to be checked in Redis; one
/// applied after finds the entry stored and drops it if it is older. Both
/// happen under the stripe's lock, so neither can fall between the other's
/// check and its effect.
#[derive(Debug)]
struct Coherence {
    feed: AtomicU64,
    hasher: std::hash::RandomState,
    stripes: Box<[Mutex<u64>]>,
    applied: AtomicU64,
}

/// A reader's view of the feed before it reads, to be checked when it
/// stores what it read.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    feed: u64,
    stripe: usize,
    announcements: u64,
}

impl Coherence {
    fn new() -> Self {
        metrics::gauge!("query_cache_feed_up").set(0.0);
        Self {
            feed: AtomicU64::new(0),
            hasher: std::hash::RandomState::new(),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            applied: AtomicU64::new(0),
        }
    }

    fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % STRIPES as u64) as usize
    }

    /// Whether the feed session `vouched` is the current one, still up.
    fn vouches(&self, vouched: u64) -> bool {
        vouched % 2 == 1 && self.feed.load(Ordering::Acquire) == vouched
    }

    fn ticket(&self, key: &str) -> Ticket {
        let stripe = self.stripe(key);
        let lock = self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ticket {
            feed: self.feed.load(Ordering::Acquire),
            stripe,
            announcements: *lock,
        }
    }

    /// Moves the feed to the next session if it is not up (`up`) or down.
    fn switch(&self, up: bool) {
        let _ = self
            .feed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state % 2 == u64::from(!up)).then_some(state + 1)
            });
        metrics::gauge!("query_cache_feed_up").set(if up { 1.0 } else { 0.0 });
    }
}

#[derive(Clone)]
pub struct ReadCache {
    url: String,
    prefix: String,
    redis: Arc<OnceCell<ConnectionManager>>,
    l1: Arc<quick_cache::sync::Cache<String, L1Entry, L1Bytes>>,
    coherence: Arc<Coherence>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ReadCache {
    /// A cache whose L1 holds at most `l1_bytes` of entries (keys, JSON and
    /// [`L1_ENTRY_OVERHEAD`] each); 0 keeps nothing in process.
    pub fn new(url: &str, prefix: &str, l1_bytes: u64) -> Self {
        let typical = L1_TYPICAL_ENTRY + L1_ENTRY_OVERHEAD;
        let estimated_entries = usize::try_from(l1_bytes / typical).unwrap_or(usize::MAX);
        Self {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            redis: Arc::new(OnceCell::new()),
            l1: Arc::new(quick_cache::sync::Cache::with_weighter(
                estimated_entries.max(1),
                l1_bytes,
                L1Bytes,
            )),
            coherence: Arc::new(Coherence::new()),
        }
    }

    /// The change feed has (re)subscribed: from now on it vouches for the
    /// L1 entries stored while it stays up.
    pub fn feed_up(&self) {
        self.coherence.switch(true);
    }

    /// The change feed is down (or may have missed an announcement): no L1
    /// entry is served without its version checked in Redis until it is up
    /// again, and nothing stored before then is vouched for after.
    pub fn feed_down(&self) {
        self.coherence.switch(false);
    }

    /// Whether the change feed vouches for L1 entries now.
    pub fn feed_is_up(&self) -> bool {
        self.coherence.feed.load(Ordering::Acquire) % 2 == 1
    }

    /// Applies an announced change: the L1 entry of the entity, if older
    /// than `version`, is dropped, and a read of it in flight stores what
    /// it read as not vouched for.
    pub fn announced(&self, aggregate_type: &str, organization: Uuid, id: Uuid, version: i64) {
        let key = entry_key(&self.prefix, aggregate_type, organization, id);
        let coherence = &self.coherence;
        let mut announcements = coherence.stripes[coherence.stripe(&key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *announcements += 1;
        if self.l1.get(&key).is_some_and(|e| e.version < version) {
            self.l1.remove(&key);
        }
        coherence.applied.fetch_add(1, Ordering::Release);
    }

    /// Announced changes applied so far.
    pub fn announcements_applied(&self) -> u64 {
        self.coherence.applied.load(Ordering::Acquire)
    }

    /// Stores an L1 entry, vouched for by the feed if `ticket` still holds.
    fn store(&self, key: String, version: i64, json: Arc<str>, ticket: Ticket) {
        let coherence = &self.coherence;
        let announcements = coherence.stripes[ticket.stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let holds = *announcements == ticket.announcements && coherence.vouches(ticket.feed);
        let vouched = if holds { ticket.feed } else { 0 };
        self.l1.insert(
            key,
            L1Entry {
                version,
                json,
                vouched,
            },
        );
    }

    /// Bytes the L1 entries hold now, as they are weighed against
    /// `query_api.cache_bytes`.
    pub fn l1_bytes(&self) -> u64 {
        self.l1.weight()
    }

    /// Entries in L1 now.
    pub fn l1_entries(&self) -> usize {
        self.l1.len()
    }

    /// The Redis key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection to Redis, or None while it is unreachable.
    pub async fn connection(&self) -> Option<ConnectionManager> {
        let connect = async {
            let client = redis::Client::open(self.url.as_str()).ok()?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_number_of_retries(0);
            client
                .get_connection_manager_with_config(config)
                .await
                .map_err(|error| tracing::debug!(%error, "cache: Redis unavailable"))
                .ok()
        };
        self.redis
            .get_or_try_init(|| async { connect.await.ok_or(()) })
            .await
            .ok()
            .cloned()
    }

    /// The entity `id` of `aggregate_type` in `organization`: from L1 or L2
    /// when their version is current, else from `load` (PostgreSQL), which
    /// returns the value with its version.
    pub async fn get<T, F, Fut>(
        &self,
        aggregate_type: &str,
        organization: Uuid,
        id: Uuid,
        load: F,
    ) -> Result<Option<T>, async_graphql::Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<(T, i64)>, async_graphql::Error>>,
    {
        let entry_key = entry_key(&self.prefix, aggregate_type, organization, id);
        let l1 = self.l1.get(&entry_key);
        // The usual case: an entry the change feed vouches for.
        if let Some(entry) = &l1
            && self.coherence.vouches(entry.vouched)
            && let Ok(value) = serde_json::from_str(&entry.json)
        {
            return Ok(Some(value));
        }
        let ticket = self.coherence.ticket(&entry_key);
        let version_key = version_key(&self.prefix, aggregate_type, &id.to_string());
        let redis = self.connection().await;
        if let Some(mut conn) = redis.clone() {
            // With an L1 entry, only its version is asked for; the L2 entry
            // only when L1 has none or an older one.
            let current: redis::RedisResult<(Option<i64>, Option<String>)> = if l1.is_some() {
                conn.get(&version_key).await.map(|version| (version, None))
            } else {
                redis::pipe()
                    .get(&version_key)
                    .get(&entry_key)
                    .query_async(&mut conn)
                    .await
            };
            match current {
                Ok((Some(version), l2)) => {
                    let stale_l1 = match l1 {
                        Some(entry) if entry.version == version => {
                            if let Ok(value) = serde_json::from_str(&entry.json) {
                                // Checked: the feed may vouch for it now.
                                if ticket.feed % 2 == 1 {
                                    self.store(entry_key, version, entry.json, ticket);
                                }
                                return Ok(Some(value));
                            }
                            false
                        }
                        Some(_) => true,
                        None => false,
                    };
                    let l2 = match l2 {
                        None if stale_l1 => conn
                            .get::<_, Option<String>>(&entry_key)
                            .await
                            .unwrap_or_else(|error| {
                                tracing::debug!(%error, "cache: Redis read failed");
                                None
                            }),
                        l2 => l2,
                    };
                    if let Some(raw) = l2
                        && let Ok((cached, json)) = serde_json::from_str::<(i64, &RawValue)>(&raw)
                        && cached == version
                        && let Ok(typed) = serde_json::from_str::<T>(json.get())
                    {
                        self.store(entry_key, version, Arc::from(json.get()), ticket);
                        return Ok(Some(typed));
                    }
                }
                Ok((None, _)) => {}
                Err(error) => tracing::debug!(%error, "cache: Redis read failed"),
            }
        }
        let loaded = load().await?;
        let Some((value, version)) = loaded else {
            return Ok(None);
        };
        if let (Some(mut conn), Ok(json)) = (redis, serde_json::value::to_raw_value(&value)) {
            let stored: redis::RedisResult<()> = async {
                // Never overwrite a version the projector wrote.
                let _: bool = conn.set_nx(&version_key, version).await?;
                let _: () = conn
                    .set_ex(
                        &entry_key,
                        serde_json::to_string(&(version, &json)).unwrap_or_default(),
                        L2_TTL_SECS,
                    )
                    .await?;
                Ok(())
            }
            .await;
            match stored {
                Ok(()) => self.store(entry_key, version, Arc::from(json.get()), ticket),
                Err(error) => tracing::debug!(%error, "cache: Redis write failed"),
            }
        }
        Ok(Some(value))
    }
}

/// `id` through the request's cache when it has one (reads that carry a
/// consistency token have none) and the field is not `fresh` (it honoured a
/// token of its own), else straight from `load`.
pub async fn lookup<T, F, Fut>(
    ctx: &async_graphql::Context<'_>,
    fresh: bool,
    aggregate_type: &str,
    organization: Uuid,
    id: Uuid,
    load: F,
) -> Result<Option<T>, async_graphql::Error>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<(T, i64)>, async_graphql::Error>>,
{
    match ctx.data_opt::<ReadCache>().filter(|_| !fresh) {
        Some(cache) => cache.get(aggregate_type, organization, id, load).await,
        None => Ok(load().await?.map(|(value, _)| value)),
    }
}
