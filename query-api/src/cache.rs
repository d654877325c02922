//! The seed's multi-level cache for entity-by-id lookups: L1 in process
//! (`quick_cache`), L2 in Redis, PostgreSQL behind both.
//!
//! Coherence by keyspace versioning: after committing, the projector sets
//! `{prefix}:ver:{type}:{id}` to the entity's projected version (never
//! lowering it). An entry, in either level, is served only when its version
//! equals that key, so no replica serves an entry older than the last
//! projected event for the entity, whatever notifications it missed. A
//! reader that fills the cache after a miss sets the version key only if
//! none exists (`SET NX`), so it can never hide a newer projection.
//!
//! Redis down or flushed: every lookup goes to PostgreSQL (slower, no
//! errors) and entries refill once Redis answers again; a flush removes the
//! version keys, so nothing cached before it is served.
//!
//! L1 keeps each entity as its JSON text, shared (`Arc<str>`), and is
//! bounded by the bytes it holds (`query_api.cache_bytes`), not by a count
//! of entries whose size nothing limits: a hit clones a pointer and parses
//! the text, where a tree of `serde_json::Value` would be cloned node by
//! node and take several times the text's size (ADR 0042).

use std::sync::Arc;
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

/// L1 entries: an entity's projected version and its JSON text.
type L1Entry = (i64, Arc<str>);

/// Weighs an L1 entry by the bytes it keeps alive.
#[derive(Debug, Clone, Copy)]
struct L1Bytes;

impl quick_cache::Weighter<String, L1Entry> for L1Bytes {
    fn weight(&self, key: &String, (_, json): &L1Entry) -> u64 {
        (key.len() + json.len()) as u64 + L1_ENTRY_OVERHEAD
    }
}

/// Version key of an entity, as the projector writes it.
pub fn version_key(prefix: &str, aggregate_type: &str, id: &str) -> String {
    format!("{prefix}:ver:{aggregate_type}:{id}")
}

fn entry_key(prefix: &str, aggregate_type: &str, organization: Uuid, id: Uuid) -> String {
    format!("{prefix}:cache:{aggregate_type}:{organization}:{id}")
}

#[derive(Clone)]
pub struct ReadCache {
    url: String,
    prefix: String,
    redis: Arc<OnceCell<ConnectionManager>>,
    l1: Arc<quick_cache::sync::Cache<String, L1Entry, L1Bytes>>,
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
        }
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
        let version_key = version_key(&self.prefix, aggregate_type, &id.to_string());
        let entry_key = entry_key(&self.prefix, aggregate_type, organization, id);
        let redis = self.connection().await;
        if let Some(mut conn) = redis.clone() {
            // With an L1 entry, only its version is asked for (the usual
            // case); the L2 entry only when L1 has none or an older one.
            let l1 = self.l1.get(&entry_key);
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
                        Some((cached, json)) if cached == version => {
                            if let Ok(value) = serde_json::from_str(&json) {
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
                        self.l1.insert(entry_key, (version, Arc::from(json.get())));
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
                Ok(()) => self.l1.insert(entry_key, (version, Arc::from(json.get()))),
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
