//! The read cache's in-process level (L1) against a real Redis: entities
//! kept as their JSON text, weighed in bytes, bounded by
//! `query_api.cache_bytes`.

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
