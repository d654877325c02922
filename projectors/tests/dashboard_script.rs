//! The dashboard's Lua script against a real Redis: it is called by its
//! hash (`EVALSHA`), and each pipeline loads it first, so a Redis that has
//! lost its scripts (a restart, `SCRIPT FLUSH`) still applies every figure,
//! and a figure at a version already applied changes nothing.
#![allow(clippy::unwrap_used)]

use chrono::Utc;
use pivotal_projectors::dashboard::{Figure, apply, counters_key};
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;
use uuid::Uuid;

/// Redis where the settings put it (their default, or `PIVOTAL_REDIS__URL`).
async fn redis() -> ConnectionManager {
    let settings = pivotal_settings::Settings::load().unwrap();
    redis::Client::open(settings.redis.url.expose_secret())
        .unwrap()
        .get_connection_manager()
        .await
        .expect("Redis must run where the settings put it (scripts/services.sh starts it)")
}

fn customer(organization_id: Uuid, id: Uuid, version: i64, status: &str) -> Figure {
    Figure {
        kind: "customer",
        organization_id,
        id,
        version,
        status: status.to_owned(),
        amount: None,
        changed_at: Utc::now(),
    }
}

async fn counters(redis: &mut ConnectionManager, key: &str) -> Vec<(String, i64)> {
    let mut counters: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(key)
        .query_async(redis)
        .await
        .unwrap();
    counters.retain(|(_, n)| *n != 0);
    counters.sort();
    counters
}

/// Empties Redis's script cache, as a restart does.
async fn flush_scripts(redis: &mut ConnectionManager) {
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(redis)
        .await
        .unwrap();
}

#[tokio::test]
async fn figures_are_applied_after_redis_lost_its_scripts() {
    let mut redis = redis().await;
    let prefix = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    let generation = "g1";
    let organization = Uuid::new_v4();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let key = counters_key(&prefix, generation, organization, "customer");

    flush_scripts(&mut redis).await;
    apply(
        &mut redis,
        &prefix,
        generation,
        &[
            customer(organization, first, 1, "active"),
            customer(organization, second, 1, "active"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        counters(&mut redis, &key).await,
        [("n:active:".to_owned(), 2)]
    );

    // Lost again between two pipelines: the next one loads it back.
    flush_scripts(&mut redis).await;
    apply(
        &mut redis,
        &prefix,
        generation,
        &[
            customer(organization, second, 2, "archived"),
            // Redelivered at a version already applied: nothing moves.
            customer(organization, first, 1, "archived"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        counters(&mut redis, &key).await,
        [("n:active:".to_owned(), 1), ("n:archived:".to_owned(), 1)]
    );

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
}
