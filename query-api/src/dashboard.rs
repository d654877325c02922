//! `dashboard`: per-organization figures (records per status, quote totals
//! per status and currency, open quotes, recent changes), read from the
//! Redis read model the projector keeps exact, or from PostgreSQL when Redis
//! is unreachable, not filled yet, or does not yet hold the record a
//! request's consistency token wrote (ADR 0061). Both sources give the same
//! figures.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, TimeZone, Utc};
use pivotal_domain::quote::QuoteStatus;
use pivotal_domain::values::Currency;
use pivotal_projectors::dashboard::{self as figures, KINDS};
use pivotal_search::EntityKind;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::consistency::{ConsistencyToken, Reached};
use crate::errors;
use crate::scalars::Instant;
use crate::schema::{pool, principal};
use crate::search::SearchType;

/// Most recent changes a dashboard lists.
const RECENT_MAX: i32 = 50;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum DashboardSource {
    Redis,
    Database,
}

#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub currency: String,
    /// Rounded to the currency's minor unit.
    pub amount: String,
}

#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct StatusFigure {
    pub status: String,
    pub count: i64,
    /// Quotes: the total of the quotes in this status, per currency.
    pub totals: Vec<Money>,
}

#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct RecentChange {
    #[graphql(name = "type")]
    pub kind: SearchType,
    pub id: ID,
    pub changed_at: Instant,
}

#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct Dashboard {
    /// Where the figures came from.
    pub source: DashboardSource,
    /// Quotes per status (null without quotes:read).
    pub quotes: Option<Vec<StatusFigure>>,
    /// Quotes not yet accepted, declined, expired or cancelled.
    pub open_quotes: Option<StatusFigure>,
    /// Customers per status (null without customers:read).
    pub customers: Option<Vec<StatusFigure>>,
    /// Users per status (null without users:read).
    pub users: Option<Vec<StatusFigure>>,
    /// The records changed last, newest first, of the types the caller may read.
    pub recently_changed: Vec<RecentChange>,
}

/// (status, currency) -> (count, total in ten-thousandths), per kind.
type Counters = BTreeMap<&'static str, BTreeMap<(String, String), (i64, i64)>>;

fn money(currency: &str, ten_thousandths: i64) -> Money {
    let amount = Decimal::new(ten_thousandths, 4);
    let amount = Currency::parse("", currency)
        .map(|c| c.round(amount))
        .unwrap_or(amount);
    Money {
        currency: currency.to_owned(),
        amount: amount.to_string(),
    }
}

fn by_status(entries: &BTreeMap<(String, String), (i64, i64)>) -> Vec<StatusFigure> {
    let mut statuses: BTreeMap<&str, StatusFigure> = BTreeMap::new();
    for ((status, currency), (count, total)) in entries {
        if *count == 0 {
            continue;
        }
        let figure = statuses
            .entry(status.as_str())
            .or_insert_with(|| StatusFigure {
                status: status.clone(),
                count: 0,
                totals: Vec::new(),
            });
        figure.count += count;
        if !currency.is_empty() {
            figure.totals.push(money(currency, *total));
        }
    }
    statuses.into_values().collect()
}

fn open_quotes(entries: &BTreeMap<(String, String), (i64, i64)>) -> StatusFigure {
    let mut count = 0;
    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    for ((status, currency), (n, total)) in entries {
        let open = serde_json::from_value::<QuoteStatus>(serde_json::json!(status))
            .is_ok_and(|s| !s.is_final());
        if open && *n > 0 {
            count += n;
            *totals.entry(currency.as_str()).or_default() += total;
        }
    }
    StatusFigure {
        status: "open".into(),
        count,
        totals: totals.into_iter().map(|(c, t)| money(c, t)).collect(),
    }
}

/// The type of a dashboard kind (`customer`, `quote`, `user`).
fn record_type(kind: &str) -> Option<SearchType> {
    EntityKind::parse(kind).map(SearchType::of)
}

/// The Redis figures, which every request may read, with or without a
/// consistency token (the by-id cache is left out of a request with one).
#[derive(Clone, Debug)]
pub struct RedisFigures(pub crate::cache::ReadCache);

/// A record the Redis figures must hold, at `version` or later, before
/// they may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holding {
    kind: &'static str,
    id: Uuid,
    version: i64,
}

/// What a consistency token asks of the Redis figures (ADR 0061): nothing
/// (`Some(None)`) when its event changed none of the tables they come
/// from; its record at the event's version when the event is one of a
/// counted record's; `None`, they cannot answer for it, when its event
/// feeds those tables through another aggregate.
fn holding(reached: &Reached) -> Option<Option<Holding>> {
    let aggregate_type = reached.aggregate_type.as_str();
    let feeds_the_figures = pivotal_projectors::all_projections().iter().any(|p| {
        KINDS.iter().any(|(_, table)| *table == p.table())
            && p.aggregate_types().contains(&aggregate_type)
    });
    if !feeds_the_figures {
        return Some(None);
    }
    let (kind, _) = KINDS.iter().find(|(kind, _)| *kind == aggregate_type)?;
    let id = Uuid::parse_str(&reached.aggregate_id).ok()?;
    Some(Some(Holding {
        kind,
        id,
        version: reached.sequence,
    }))
}

/// The Redis figures, unless Redis is unreachable, has none (never
/// filled, or flushed), or lacks `holding` at its version.
async fn from_redis(
    cache: &crate::cache::ReadCache,
    organization: Uuid,
    recent: isize,
    holding: Option<Holding>,
) -> Option<(Counters, Vec<(String, f64)>)> {
    let mut redis = cache.connection().await?;
    let prefix = cache.prefix();
    let generation: Option<String> = redis::cmd("GET")
        .arg(figures::current_key(prefix))
        .query_async(&mut redis)
        .await
        .map_err(|error| tracing::debug!(%error, "dashboard: Redis read failed"))
        .ok()?;
    let generation = generation?;
    let mut pipe = redis::pipe();
    for (kind, _) in KINDS {
        pipe.cmd("HGETALL").arg(figures::counters_key(
            prefix,
            &generation,
            organization,
            kind,
        ));
    }
    pipe.cmd("ZREVRANGE")
        .arg(figures::recent_key(prefix, &generation, organization))
        .arg(0)
        .arg(recent - 1)
        .arg("WITHSCORES");
    type Fields = BTreeMap<String, i64>;
    type Read = (Fields, Fields, Fields, Vec<(String, f64)>);
    let failed = |error: redis::RedisError| tracing::debug!(%error, "dashboard: Redis read failed");
    // With the record's version read in the same pipeline, so the figures
    // are those of a generation that holds it.
    let (customers, quotes, users, recent) = match holding {
        None => pipe
            .query_async::<Read>(&mut redis)
            .await
            .map_err(failed)
            .ok()?,
        Some(holding) => {
            pipe.cmd("HGET")
                .arg(figures::contribution_key(
                    prefix,
                    &generation,
                    holding.kind,
                    holding.id,
                ))
                .arg("v");
            let (customers, quotes, users, recent, held): (
                Fields,
                Fields,
                Fields,
                Vec<(String, f64)>,
                Option<i64>,
            ) = pipe.query_async(&mut redis).await.map_err(failed).ok()?;
            if held.is_none_or(|version| version < holding.version) {
                return None;
            }
            (customers, quotes, users, recent)
        }
    };
    let mut counters = Counters::new();
    for ((kind, _), fields) in KINDS.iter().zip([customers, quotes, users]) {
        let entries = counters.entry(kind).or_default();
        for (field, value) in fields {
            let Some((tag, rest)) = field.split_once(':') else {
                continue;
            };
            let Some((status, currency)) = rest.rsplit_once(':') else {
                continue;
            };
            let entry = entries
                .entry((status.to_owned(), currency.to_owned()))
                .or_default();
            match tag {
                "n" => entry.0 = value,
                "t" => entry.1 = value,
                _ => {}
            }
        }
    }
    Some((counters, recent))
}

async fn from_database(
    pool: &sqlx::PgPool,
    organization: Uuid,
    recent: i64,
) -> Result<(Counters, Vec<(String, f64)>), sqlx::Error> {
    let mut counters = Counters::new();
    for (kind, table) in KINDS {
        // Customers from the counts kept beside their rows (ADR 0041), a
        // row per status; quotes' totals per currency and users (a firm's
        // people) are counted from their rows.
        let statement = match kind {
            "customer" => "SELECT status, ''::text, NULL::text, customers FROM rm_customer_counts
                 WHERE organization_id = $1"
                .to_owned(),
            "quote" => format!(
                "SELECT status, currency, sum(total)::text, count(*) FROM {table}
                 WHERE organization_id = $1 GROUP BY 1, 2"
            ),
            _ => format!(
                "SELECT status, ''::text, NULL::text, count(*) FROM {table}
                 WHERE organization_id = $1 GROUP BY 1, 2"
            ),
        };
        let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(&statement)
            .bind(organization)
            .fetch_all(pool)
            .await?;
        let entries = counters.entry(kind).or_default();
        for (status, currency, total, count) in rows {
            let total = total
                .and_then(|t| t.parse::<Decimal>().ok())
                .map_or(0, figures::to_ten_thousandths);
            entries.insert((status, currency), (count, total));
        }
    }
    let rows: Vec<(String, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "(SELECT 'customer', id, updated_at FROM rm_customers WHERE organization_id = $1
           ORDER BY updated_at DESC LIMIT $2)
         UNION ALL
         (SELECT 'quote', id, updated_at FROM rm_quotes WHERE organization_id = $1
           ORDER BY updated_at DESC LIMIT $2)
         UNION ALL
         (SELECT 'user', id, updated_at FROM rm_users WHERE organization_id = $1
           ORDER BY updated_at DESC LIMIT $2)
         ORDER BY 3 DESC LIMIT $2",
    )
    .bind(organization)
    .bind(recent)
    .fetch_all(pool)
    .await?;
    let recent = rows
        .into_iter()
        .map(|(kind, id, at)| (format!("{kind}:{id}"), at.timestamp_millis() as f64))
        .collect();
    Ok((counters, recent))
}

#[derive(Debug, Default)]
pub struct DashboardQuery;

#[Object]
impl DashboardQuery {
    /// The organization's dashboard figures.
    async fn dashboard(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10, desc = "Changes listed, newest first: 1 to 50.")] recent: i32,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<Dashboard> {
        errors::in_range("recent", recent, 1, i64::from(RECENT_MAX))?;
        let wanted = usize::try_from(recent).unwrap_or(10);
        let principal = principal(ctx)?;
        let organization = principal.claims.org;
        let readable =
            |kind: &str| record_type(kind).is_some_and(|t| principal.has(t.permission()));
        if !KINDS.iter().any(|(k, _)| readable(k)) {
            return Err(errors::coded(
                errors::FORBIDDEN,
                "the token grants reading none of customers, quotes or users",
            ));
        }
        // The newest changes of readable kinds: ask for enough to filter.
        let fetch = i64::from(RECENT_MAX) * 3;
        // Under a consistency token (an argument, or the request's
        // header), Redis answers only once it holds the token's record.
        let reached = crate::consistency::honour(ctx, consistency_token.as_ref()).await?;
        let holding = match &reached {
            Some(reached) => holding(reached),
            None => Some(None),
        };
        let cached = match (ctx.data_opt::<RedisFigures>(), holding) {
            (Some(RedisFigures(cache)), Some(holding)) => {
                from_redis(cache, organization, fetch as isize, holding).await
            }
            _ => None,
        };
        let (source, (counters, recent)) = match cached {
            Some(figures) => (DashboardSource::Redis, figures),
            None => (
                DashboardSource::Database,
                from_database(pool(ctx)?, organization, fetch)
                    .await
                    .map_err(errors::database)?,
            ),
        };
        let section = |kind: &str| {
            readable(kind).then(|| by_status(counters.get(kind).unwrap_or(&BTreeMap::new())))
        };
        let mut recently_changed = Vec::new();
        for (member, millis) in recent {
            let Some((kind, id)) = member.split_once(':') else {
                continue;
            };
            let (Some(record), true) = (record_type(kind), readable(kind)) else {
                continue;
            };
            let Some(at) = Utc.timestamp_millis_opt(millis as i64).single() else {
                continue;
            };
            recently_changed.push(RecentChange {
                kind: record,
                id: ID(id.to_owned()),
                changed_at: at.into(),
            });
            if recently_changed.len() >= wanted {
                break;
            }
        }
        Ok(Dashboard {
            source,
            quotes: section("quote"),
            open_quotes: readable("quote")
                .then(|| open_quotes(counters.get("quote").unwrap_or(&BTreeMap::new()))),
            customers: section("customer"),
            users: section("user"),
            recently_changed,
        })
    }
}
