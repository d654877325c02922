//! Dashboard figures per organization, kept in Redis by the projector.
//!
//! For quotes, customers and users: how many there are in each status and,
//! for quotes, their total per status and currency; and the records changed
//! most recently. Each record's contribution is remembered beside the
//! counters (its version, status and amount), and one Lua script moves a
//! record from its old contribution to its new one only when the new version
//! is higher. Replays, redeliveries and catch-ups are therefore harmless and
//! the figures stay exact.
//!
//! Keys live in a generation named by `{prefix}:dash:current`:
//!
//! - `{prefix}:dash:{gen}:{org}:{kind}`: hash of `n:{status}:{currency}`
//!   (records) and, for quotes, `t:{status}:{currency}` (their total in
//!   ten-thousandths); the currency is empty for customers and users;
//! - `{prefix}:dash:{gen}:{org}:recent`: sorted set of `{kind}:{id}` by the
//!   time of the last change (the newest 100 kept);
//! - `{prefix}:dash:{gen}:s:{kind}:{id}`: hash of the record's contribution.
//!
//! The figures are derived from the PostgreSQL read models, so they can be
//! rebuilt at any time: [`rebuild`] fills a new generation from them, points
//! `current` at it and catches up once more. A missing `current` (Redis
//! flushed, or never filled) means "not ready": the query API then answers
//! from PostgreSQL and the projector fills a generation. After Redis was
//! unreachable, or when the projector starts, the live generation is caught
//! up from the read models.

use std::sync::LazyLock;
use std::time::Instant;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::redis_link::{PipelinedScript, RedisLink};

/// Newest changes kept per organization.
pub const RECENT_KEPT: isize = 100;

/// Moves one record's contribution to the counters, if its version is newer.
/// KEYS: contribution, counters, recent. ARGV: version, status, currency
/// ('' for none), amount, member, changed-at ms, recent-kept.
const APPLY: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v >= tonumber(ARGV[1]) then return 0 end
local old = redis.call('HMGET', KEYS[1], 's', 'c', 'm')
if old[1] then
  local was = old[1] .. ':' .. old[2]
  redis.call('HINCRBY', KEYS[2], 'n:' .. was, -1)
  if old[2] ~= '' then
    redis.call('HINCRBY', KEYS[2], 't:' .. was, -tonumber(old[3]))
  end
end
local now = ARGV[2] .. ':' .. ARGV[3]
redis.call('HINCRBY', KEYS[2], 'n:' .. now, 1)
if ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[2], 't:' .. now, ARGV[4])
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2], 'c', ARGV[3], 'm', ARGV[4])
redis.call('ZADD', KEYS[3], 'GT', ARGV[6], ARGV[5])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[7]) + 1))
return 1
";

static APPLY_SCRIPT: LazyLock<PipelinedScript> = LazyLock::new(|| PipelinedScript::new(APPLY));

/// Kinds of record the dashboard counts, with their read-model table.
pub const KINDS: [(&str, &str); 3] = [
    ("customer", "rm_customers"),
    ("quote", "rm_quotes"),
    ("user", "rm_users"),
];

pub fn current_key(prefix: &str) -> String {
    format!("{prefix}:dash:current")
}

pub fn counters_key(prefix: &str, generation: &str, organization: Uuid, kind: &str) -> String {
    format!("{prefix}:dash:{generation}:{organization}:{kind}")
}

pub fn recent_key(prefix: &str, generation: &str, organization: Uuid) -> String {
    format!("{prefix}:dash:{generation}:{organization}:recent")
}

/// The hash of one record's contribution (`v`: its version).
pub fn contribution_key(prefix: &str, generation: &str, kind: &str, id: Uuid) -> String {
    format!("{prefix}:dash:{generation}:s:{kind}:{id}")
}

/// One record's contribution, read from its read model.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub kind: &'static str,
    pub organization_id: Uuid,
    pub id: Uuid,
    pub version: i64,
    pub status: String,
    /// Quotes: currency and total in ten-thousandths.
    pub amount: Option<(String, i64)>,
    pub changed_at: DateTime<Utc>,
}

/// A total as stored (ten-thousandths) from a read model's amount.
pub fn to_ten_thousandths(amount: Decimal) -> i64 {
    let mut scaled = amount.round_dp(4);
    scaled.rescale(4);
    i64::try_from(scaled.mantissa()).unwrap_or(i64::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Organization, id, version, status, currency, total, last change.
type FigureRow = (
    Uuid,
    Uuid,
    i64,
    String,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
);

/// The figures of records `ids` of `kind`, from its read model, looked up
/// with unnamed statements planned with the ids each time, as
/// [`crate::search::documents`] does (ADR 0039).
pub async fn figures(
    conn: &mut PgConnection,
    kind: &'static str,
    ids: &[Uuid],
) -> Result<Vec<Figure>, sqlx::Error> {
    let rows: Vec<FigureRow> = match kind {
        "quote" => {
            sqlx::query_as(
                "SELECT organization_id, id, version, status, currency, total::text, updated_at
                 FROM rm_quotes WHERE id = ANY($1)",
            )
            .bind(ids)
            .persistent(false)
            .fetch_all(conn)
            .await?
        }
        _ => {
            let table = KINDS
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or("rm_customers", |(_, t)| *t);
            sqlx::query_as(&format!(
                "SELECT organization_id, id, version, status, NULL::text, NULL::text, updated_at
                 FROM {table} WHERE id = ANY($1)"
            ))
            .bind(ids)
            .persistent(false)
            .fetch_all(conn)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(
            |(organization_id, id, version, status, currency, total, changed_at)| {
                let amount = currency.zip(total).map(|(c, t)| {
                    (
                        c,
                        to_ten_thousandths(t.parse::<Decimal>().unwrap_or_default()),
                    )
                });
                Figure {
                    kind,
                    organization_id,
                    id,
                    version,
                    status,
                    amount,
                    changed_at,
                }
            },
        )
        .collect())
}

/// Applies `figures` to `generation` in one pipeline.
pub async fn apply(
    redis: &mut ConnectionManager,
    prefix: &str,
    generation: &str,
    figures: &[Figure],
) -> Result<(), redis::RedisError> {
    if figures.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    APPLY_SCRIPT.load(&mut pipe);
    for figure in figures {
        let (currency, amount) = figure
            .amount
            .as_ref()
            .map_or((String::new(), 0), |(c, a)| (c.clone(), *a));
        APPLY_SCRIPT
            .call(&mut pipe, 3)
            .arg(contribution_key(prefix, generation, figure.kind, figure.id))
            .arg(counters_key(
                prefix,
                generation,
                figure.organization_id,
                figure.kind,
            ))
            .arg(recent_key(prefix, generation, figure.organization_id))
            .arg(figure.version)
            .arg(&figure.status)
            .arg(currency)
            .arg(amount)
            .arg(format!("{}:{}", figure.kind, figure.id))
            .arg(figure.changed_at.timestamp_millis())
            .arg(RECENT_KEPT)
            .ignore();
    }
    pipe.query_async::<()>(redis).await
}

/// Applies every record of the read models to `generation`; returns how
/// many records were read.
pub async fn fill(
    pool: &PgPool,
    redis: &mut ConnectionManager,
    prefix: &str,
    generation: &str,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<u64, DashboardError> {
    let mut conn = pool.acquire().await?;
    let mut count = 0;
    for (kind, table) in KINDS {
        let ids: Vec<(Uuid,)> = sqlx::query_as(&format!("SELECT id FROM {table} ORDER BY id"))
            .fetch_all(&mut *conn)
            .await?;
        let ids: Vec<Uuid> = ids.into_iter().map(|(id,)| id).collect();
        if let Some(bar) = progress {
            bar.inc_length(ids.len() as u64);
        }
        for chunk in ids.chunks(1000) {
            let figures = figures(&mut conn, kind, chunk).await?;
            apply(redis, prefix, generation, &figures).await?;
            count += chunk.len() as u64;
            if let Some(bar) = progress {
                bar.inc(chunk.len() as u64);
            }
        }
    }
    Ok(count)
}

fn new_generation() -> String {
    Uuid::now_v7().simple().to_string()
}

/// Unlinks the keys matching `pattern` that `remove` selects.
async fn unlink_where(
    redis: &mut ConnectionManager,
    pattern: &str,
    remove: impl Fn(&str) -> bool,
) -> Result<(), redis::RedisError> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        let doomed: Vec<&String> = keys.iter().filter(|k| remove(k)).collect();
        if !doomed.is_empty() {
            redis::cmd("UNLINK")
                .arg(&doomed)
                .query_async::<()>(redis)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Removes every key of the generations other than `keep`.
async fn remove_other_generations(
    redis: &mut ConnectionManager,
    prefix: &str,
    keep: &str,
) -> Result<(), redis::RedisError> {
    let current = current_key(prefix);
    let live = format!("{prefix}:dash:{keep}:");
    unlink_where(redis, &format!("{prefix}:dash:*"), |k| {
        k != current && !k.starts_with(&live)
    })
    .await
}

/// What a dashboard rebuild did.
#[derive(Debug, Clone)]
pub struct DashboardRebuildReport {
    pub generation: String,
    pub records: u64,
    pub seconds: f64,
}

/// Fills a new generation from the read models, switches to it, catches up
/// what changed meanwhile and removes the old generations.
pub async fn rebuild(
    pool: &PgPool,
    redis: &mut ConnectionManager,
    prefix: &str,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<DashboardRebuildReport, DashboardError> {
    let started = Instant::now();
    let generation = new_generation();
    let records = fill(pool, redis, prefix, &generation, progress).await?;
    redis::cmd("SET")
        .arg(current_key(prefix))
        .arg(&generation)
        .query_async::<()>(redis)
        .await?;
    // The projector wrote to the old generation until the switch; everything
    // it wrote is in the read models, so one more pass makes the new one exact.
    fill(pool, redis, prefix, &generation, None).await?;
    remove_other_generations(redis, prefix, &generation).await?;
    Ok(DashboardRebuildReport {
        generation,
        records,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The projector's side: applies the records each batch changed, and keeps
/// the live generation exact across Redis outages, flushes and restarts.
pub struct DashboardWriter {
    pool: PgPool,
    prefix: String,
    /// The live generation must be caught up from the read models before
    /// it is trusted again (start, or a failed write).
    behind: bool,
}

impl std::fmt::Debug for DashboardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardWriter")
            .field("prefix", &self.prefix)
            .field("behind", &self.behind)
            .finish_non_exhaustive()
    }
}

impl DashboardWriter {
    pub fn new(pool: PgPool, prefix: &str) -> Self {
        Self {
            pool,
            prefix: prefix.to_owned(),
            behind: true,
        }
    }

    /// Brings the dashboard up to date with the records `touched` (kind, id)
    /// after their read models committed. Failures leave it marked behind,
    /// to be caught up on the next call Redis answers.
    pub async fn after_commit(&mut self, redis: &mut RedisLink, touched: &[(&'static str, Uuid)]) {
        let Some(mut connection) = redis.connection().await else {
            self.behind = true;
            return;
        };
        match self.update(&mut connection, touched).await {
            Ok(()) => redis.succeeded(),
            Err(error) => {
                tracing::warn!(%error, "dashboard not updated; it will catch up");
                self.behind = true;
                if matches!(error, DashboardError::Redis(_)) {
                    redis.failed();
                }
            }
        }
    }

    async fn update(
        &mut self,
        redis: &mut ConnectionManager,
        touched: &[(&'static str, Uuid)],
    ) -> Result<(), DashboardError> {
        let prefix = self.prefix.clone();
        let current: Option<String> = redis::cmd("GET")
            .arg(current_key(&prefix))
            .query_async(redis)
            .await?;
        let Some(generation) = current else {
            // Never filled, or flushed: fill a generation, and publish it
            // unless another projector published one first.
            let generation = new_generation();
            fill(&self.pool, redis, &prefix, &generation, None).await?;
            let published: bool = redis::cmd("SET")
                .arg(current_key(&prefix))
                .arg(&generation)
                .arg("NX")
                .query_async::<Option<String>>(redis)
                .await?
                .is_some();
            if !published {
                remove_generation(redis, &prefix, &generation).await?;
            }
            self.behind = false;
            return Ok(());
        };
        if self.behind {
            fill(&self.pool, redis, &prefix, &generation, None).await?;
            self.behind = false;
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        for (kind, _) in KINDS {
            let ids: Vec<Uuid> = touched
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, id)| *id)
                .collect();
            if !ids.is_empty() {
                let figures = figures(&mut conn, kind, &ids).await?;
                apply(redis, &prefix, &generation, &figures).await?;
            }
        }
        Ok(())
    }
}

async fn remove_generation(
    redis: &mut ConnectionManager,
    prefix: &str,
    generation: &str,
) -> Result<(), redis::RedisError> {
    unlink_where(redis, &format!("{prefix}:dash:{generation}:*"), |_| true).await
}
