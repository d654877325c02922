//! The read cache's in-process level (L1) against a real Redis: entities
//! kept as their JSON text, weighed in bytes, bounded by
//! `query_api.cache_bytes`; served on the change feed's word while it is up,
//! and checked against the version key otherwise (ADR 0055).

use pivotal_query_api::cache::ReadCache;
use pivotal_test_support::TestEnv;
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Bytes an L1 entry costs besides its key and JSON (the cache module's
/// `L1_ENTRY_OVERHEAD`).
const OVERHEAD: u64 = 96;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entity {
    id: Uuid,
    name: String,
    source: String,
}

fn entity(id: Uuid, source: &str) -> Entity {
    Entity {
        id,
        name: format!("Entity {id} with a name of some length"),
        source: source.to_owned(),
    }
}

fn cache(env: &TestEnv, bytes: u64) -> ReadCache {
    ReadCache::new(
        env.settings.redis.url.expose_secret(),
        &env.settings.redis.key_prefix,
        bytes,
    )
}

/// `id` through `cache`, loaded (as PostgreSQL would) with `source` as its
/// source at version 1.
async fn read(cache: &ReadCache, org: Uuid, id: Uuid, source: &str) -> Entity {
    cache
        .get("entity", org, id, || async move {
            Ok(Some((entity(id, source), 1)))
        })
        .await
        .unwrap()
        .unwrap()
}

/// Removes the L2 entry of `id` from Redis (its version key stays), so a
/// later read is served by L1 or by the loader.
async fn drop_l2(env: &TestEnv, org: Uuid, id: Uuid) {
    let client = redis::Client::open(env.settings.redis.url.expose_secret()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let prefix = &env.settings.redis.key_prefix;
    let removed: i64 = conn
        .del(format!("{prefix}:cache:entity:{org}:{id}"))
        .await
        .unwrap();
    assert_eq!(removed, 1, "the first read wrote the L2 entry");
}

#[tokio::test]
async fn l1_serves_an_entity_from_its_json_and_weighs_it_in_bytes() {
    let env = TestEnv::new().await;
    let cache = cache(&env, 1024 * 1024);
    let (org, id) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(read(&cache, org, id, "store").await, entity(id, "store"));
    let key = format!("{}:cache:entity:{org}:{id}", env.settings.redis.key_prefix);
    let json = serde_json::to_string(&entity(id, "store")).unwrap();
    assert_eq!(cache.l1_entries(), 1);
    assert_eq!(cache.l1_bytes(), (key.len() + json.len()) as u64 + OVERHEAD);
    drop_l2(&env, org, id).await;
    // Neither L2 nor the loader: the same entity, parsed from L1's text.
    assert_eq!(read(&cache, org, id, "reloaded").await, entity(id, "store"));
}

#[tokio::test]
async fn l1_keeps_nothing_when_its_bound_is_zero() {
    let env = TestEnv::new().await;
    let cache = cache(&env, 0);
    let (org, id) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(read(&cache, org, id, "store").await, entity(id, "store"));
    assert_eq!((cache.l1_entries(), cache.l1_bytes()), (0, 0));
    drop_l2(&env, org, id).await;
    assert_eq!(
        read(&cache, org, id, "reloaded").await,
        entity(id, "reloaded")
    );
}

#[tokio::test]
async fn l1_holds_no_more_bytes_than_its_bound() {
    let env = TestEnv::new().await;
    let org = Uuid::now_v7();
    let one = {
        let id = Uuid::now_v7();
        let key = format!("{}:cache:entity:{org}:{id}", env.settings.redis.key_prefix);
        (key.len() + serde_json::to_string(&entity(id, "store")).unwrap().len()) as u64 + OVERHEAD
    };
    let bound = 10 * one;
    let cache = cache(&env, bound);
    for _ in 0..200 {
        let id = Uuid::now_v7();
        assert_eq!(read(&cache, org, id, "store").await, entity(id, "store"));
        assert!(cache.l1_bytes() <= bound, "{} > {bound}", cache.l1_bytes());
    }
    let entries = cache.l1_entries();
    assert!((1..=10).contains(&entries), "{entries} entries");
    assert_eq!(cache.l1_bytes(), entries as u64 * one);
}

/// `id` through `cache`, loaded (as PostgreSQL would) with `source` as its
/// source at `version`.
async fn read_at(cache: &ReadCache, org: Uuid, id: Uuid, source: &str, version: i64) -> Entity {
    cache
        .get("entity", org, id, || async move {
            Ok(Some((entity(id, source), version)))
        })
        .await
        .unwrap()
        .unwrap()
}

async fn redis_of(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Raises `id`'s version key as the projector does, but announces nothing.
async fn raise_silently(
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    id: Uuid,
    version: i64,
) {
    let () = redis
        .set(format!("{prefix}:ver:entity:{id}"), version)
        .await
        .unwrap();
}

/// Raises `id`'s version key and announces the change as the projector
/// does, and waits until `cache` has applied the announcement.
async fn announce(
    redis: &mut redis::aio::MultiplexedConnection,
    cache: &ReadCache,
    prefix: &str,
    (org, id): (Uuid, Uuid),
    version: i64,
) {
    raise_silently(redis, prefix, id, version).await;
    publish(redis, cache, prefix, (org, id), version).await;
}

/// Announces `id`'s change to `version` and waits until `cache` has
/// applied the announcement.
async fn publish(
    redis: &mut redis::aio::MultiplexedConnection,
    cache: &ReadCache,
    prefix: &str,
    (org, id): (Uuid, Uuid),
    version: i64,
) {
    let applied = cache.announcements_applied();
    let change = serde_json::json!({
        "type": "entity.changed",
        "aggregateType": "entity",
        "aggregateId": id,
        "version": version,
        "timestamp": "2026-01-01T00:00:00Z",
        "organizationId": org,
    });
    let _: i64 = redis
        .publish(format!("{prefix}:changes:{org}"), change.to_string())
        .await
        .unwrap();
    until("the announcement to be applied", || {
        cache.announcements_applied() > applied
    })
    .await;
}

/// Follows the change feed on `url` for `cache`, once it is up.
async fn follow(url: &str, prefix: &str, cache: &ReadCache) -> tokio::task::JoinHandle<()> {
    let feed = pivotal_query_api::live::Changes::default().follow_redis(
        url.to_owned(),
        prefix.to_owned(),
        cache.clone(),
    );
    until("the feed to be up", || cache.feed_is_up()).await;
    feed
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 10 s");
}

/// A cache following the change feed, with one entry stored at version 1
/// while the feed was up, then its version key raised to 2 without an
/// announcement and its L2 copy dropped: a read that asks Redis reloads
/// it, one served on the feed's word does not.
struct Vouched {
    cache: ReadCache,
    feed: tokio::task::JoinHandle<()>,
    redis: redis::aio::MultiplexedConnection,
    prefix: String,
    org: Uuid,
    id: Uuid,
}

async fn vouched(env: &TestEnv) -> Vouched {
    let url = env.settings.redis.url.expose_secret().to_owned();
    let prefix = env.settings.redis.key_prefix.clone();
    let cache = cache(env, 1024 * 1024);
    let feed = follow(&url, &prefix, &cache).await;
    let mut redis = redis_of(&url).await;
    let (org, id) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(read(&cache, org, id, "store").await, entity(id, "store"));
    raise_silently(&mut redis, &prefix, id, 2).await;
    drop_l2(env, org, id).await;
    Vouched {
        cache,
        feed,
        redis,
        prefix,
        org,
        id,
    }
}

#[tokio::test]
async fn the_change_feed_vouches_for_l1_entries_until_it_announces_a_newer_version() {
    let env = TestEnv::new().await;
    let Vouched {
        cache,
        feed,
        mut redis,
        prefix,
        org,
        id,
    } = vouched(&env).await;
    // A version key raised without an announcement (which the projector
    // never does) is not looked at: the feed vouches for the entry.
    assert_eq!(
        read_at(&cache, org, id, "reloaded", 2).await,
        entity(id, "store")
    );
    // Announced: the entry is dropped and the next read loads version 3.
    announce(&mut redis, &cache, &prefix, (org, id), 3).await;
    assert_eq!(cache.l1_entries(), 0);
    assert_eq!(
        read_at(&cache, org, id, "projected", 3).await,
        entity(id, "projected")
    );
    // An announcement of an older version (redelivered) keeps it.
    publish(&mut redis, &cache, &prefix, (org, id), 2).await;
    assert_eq!(
        read_at(&cache, org, id, "again", 3).await,
        entity(id, "projected")
    );
    feed.abort();
}

/// A notification the feed cannot read may have announced any change:
/// nothing stored before it is served on the feed's word after it.
#[tokio::test]
async fn an_unreadable_announcement_leaves_every_entry_to_be_checked() {
    let env = TestEnv::new().await;
    let Vouched {
        cache,
        feed,
        mut redis,
        prefix,
        org,
        id,
    } = vouched(&env).await;
    for garbage in ["not json", r#"{"type": "entity.changed"}"#] {
        let _: i64 = redis
            .publish(format!("{prefix}:changes:{org}"), garbage)
            .await
            .unwrap();
    }
    // Applied in order: once this one is, the garbage before it was read.
    publish(&mut redis, &cache, &prefix, (org, Uuid::now_v7()), 1).await;
    assert!(cache.feed_is_up(), "the feed carries on");
    assert_eq!(
        read_at(&cache, org, id, "reloaded", 2).await,
        entity(id, "reloaded")
    );
    feed.abort();
}

/// The race that versions were chosen over deletes for (ADR 0014): a
/// reader loads the entity, the projector commits and announces a newer
/// version, then the reader stores what it loaded. The entry is kept but
/// not vouched for, so the next read checks its version and loads again.
#[tokio::test]
async fn an_announcement_during_a_read_leaves_its_entry_to_be_checked() {
    let env = TestEnv::new().await;
    let url = env.settings.redis.url.expose_secret().to_owned();
    let prefix = env.settings.redis.key_prefix.clone();
    let cache = cache(&env, 1024 * 1024);
    let feed = follow(&url, &prefix, &cache).await;
    let (org, id) = (Uuid::now_v7(), Uuid::now_v7());
    let loaded = cache
        .get("entity", org, id, || {
            let (cache, url, prefix) = (cache.clone(), url.clone(), prefix.clone());
            async move {
                let mut redis = redis_of(&url).await;
                announce(&mut redis, &cache, &prefix, (org, id), 2).await;
                Ok(Some((entity(id, "before"), 1)))
            }
        })
        .await
        .unwrap();
    assert_eq!(loaded, Some(entity(id, "before")));
    assert_eq!(cache.l1_entries(), 1);
    assert_eq!(
        read_at(&cache, org, id, "after", 2).await,
        entity(id, "after")
    );
    feed.abort();
}

/// A feed that fails may have missed announcements: entries stored before
/// are checked against their version keys until the feed is up again and
/// the check has passed once more.
#[tokio::test]
async fn a_feed_that_failed_vouches_for_nothing_stored_before() {
    let server = pivotal_test_support::RedisServer::start();
    let prefix = "t";
    let cache = ReadCache::new(&server.url(), prefix, 1024 * 1024);
    let feed = follow(&server.url(), prefix, &cache).await;
    let mut redis = redis_of(&server.url()).await;
    let (org, id) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(read(&cache, org, id, "store").await, entity(id, "store"));
    let killed: redis::Value = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(killed, redis::Value::Int(1), "the feed's connection");
    until("the feed to be down", || !cache.feed_is_up()).await;
    // Missed while the feed was down.
    raise_silently(&mut redis, prefix, id, 2).await;
    assert_eq!(
        read_at(&cache, org, id, "missed", 2).await,
        entity(id, "missed")
    );
    until("the feed to be up again", || cache.feed_is_up()).await;
    // Stored while down: checked (version 2 is current), then vouched for.
    assert_eq!(
        read_at(&cache, org, id, "unused", 2).await,
        entity(id, "missed")
    );
    raise_silently(&mut redis, prefix, id, 3).await;
    assert_eq!(
        read_at(&cache, org, id, "unused", 3).await,
        entity(id, "missed")
    );
    feed.abort();
}
