//! Read-your-writes. Every accepted command returns the global position of
//! its last event as `X-Consistency-Token`. A query that sends it back waits,
//! up to `query_api.consistency_wait_ms`, until every projection that
//! follows that event's aggregate type has applied it; after that bound it
//! fails with `STALE_READ` instead of answering from older data.
//!
//! The token travels either as the `X-Consistency-Token` header (the whole
//! request waits before it runs) or as the `consistencyToken` argument of a
//! root field (that field waits, [`honour`]); both give the same answer.
//!
//! A field that reaches another aggregate from a record read under a token
//! (a quote's `customer`) waits too, in that aggregate's own projections,
//! for its last event at or below the token's position ([`related`]): what
//! the writer had seen of it when the token's command ran. Those waits of
//! one request are batched ([`RelatedLoader`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::dataloader::{DataLoader, Loader};

use sqlx::PgPool;
use uuid::Uuid;

use crate::slots::{Slot, aside};

/// Why a consistency token could not be honoured.
#[derive(Debug, thiserror::Error)]
pub enum ConsistencyError {
    #[error("the consistency token must be a position returned by the command API")]
    Invalid,
    #[error("the read models have not caught up with position {position} within {waited_ms} ms")]
    Stale { position: i64, waited_ms: u128 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Projections (by name) that follow `aggregate_type`; with
/// `keeping_versions`, only those that keep versions (the others write in
/// the same transaction as one of them).
fn projections_of(aggregate_type: &str, keeping_versions: bool) -> Vec<&'static str> {
    pivotal_projectors::all_projections()
        .iter()
        .filter(|p| p.aggregate_types().contains(&aggregate_type))
        .filter(|p| !keeping_versions || p.keeps_versions())
        .map(|p| p.name())
        .collect()
}

/// The event a request's consistency token names, once the PostgreSQL read
/// models have applied it. Resolvers that read a model kept outside
/// PostgreSQL (the search index) wait for it too, within what is left of the
/// same bound.
#[derive(Debug, Clone)]
pub struct Reached {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The event's version of its aggregate.
    pub sequence: i64,
    pub deadline: Instant,
}

/// A token as a GraphQL argument.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ConsistencyToken(pub String);

async_graphql::scalar!(
    ConsistencyToken,
    "ConsistencyToken",
    "The X-Consistency-Token a command answered with (the global position of its last event). A field given one answers only once the read models hold that write; if they cannot within the configured wait, the field fails with STALE_READ."
);

/// The longest wait for a token (`query_api.consistency_wait_ms`), in the
/// request's data. Without it a resolver waits [`DEFAULT_BOUND`].
#[derive(Debug, Clone, Copy)]
pub struct Bound(pub Duration);

/// The wait of a schema used without the HTTP layer (the setting's default).
pub const DEFAULT_BOUND: Duration = Duration::from_millis(5_000);

/// The token a root field honours: its own `consistencyToken` argument,
/// waited for here, or else the request's header, already waited for.
/// `Some` means the PostgreSQL read models hold the token's event, so the
/// field must read them rather than a cache.
pub async fn honour(
    ctx: &async_graphql::Context<'_>,
    argument: Option<&ConsistencyToken>,
) -> async_graphql::Result<Option<Reached>> {
    let Some(ConsistencyToken(raw)) = argument else {
        return Ok(ctx.data_opt::<Reached>().cloned());
    };
    let principal = crate::schema::principal(ctx)?;
    let bound = ctx.data_opt::<Bound>().map_or(DEFAULT_BOUND, |b| b.0);
    wait(
        crate::schema::pool(ctx)?,
        principal.claims.org,
        raw,
        bound,
        slot(ctx),
    )
    .await
    .map(Some)
    .map_err(into_graphql)
}

/// The request's execution slot, if it has one (requests over HTTP).
pub fn slot<'a>(ctx: &async_graphql::Context<'a>) -> Option<&'a Slot> {
    ctx.data_opt::<Arc<Slot>>().map(Arc::as_ref)
}

/// The GraphQL error of a token that cannot be honoured.
pub fn into_graphql(error: ConsistencyError) -> async_graphql::Error {
    graphql_error(&error)
}

fn graphql_error(error: &ConsistencyError) -> async_graphql::Error {
    match error {
        ConsistencyError::Invalid => crate::errors::bad_input(error.to_string()),
        ConsistencyError::Stale { .. } => {
            crate::errors::coded(crate::errors::STALE_READ, error.to_string())
        }
        ConsistencyError::Database(e) => crate::errors::database(e),
    }
}

/// Waits until the event at `raw` (a token) is in every read model that
/// follows it. Tokens of another organization's events are refused like
/// unknown ones. A request's `slot` is given back while it waits.
pub async fn wait(
    pool: &PgPool,
    organization: Uuid,
    raw: &str,
    bound: Duration,
    slot: Option<&Slot>,
) -> Result<Reached, ConsistencyError> {
    let position: i64 = raw
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or(ConsistencyError::Invalid)?;
    let event: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence FROM events
         WHERE global_position = $1 AND metadata ->> 'organizationId' = $2",
    )
    .bind(position)
    .bind(organization.to_string())
    .fetch_optional(pool)
    .await?;
    let (aggregate_type, aggregate_id, sequence) = event.ok_or(ConsistencyError::Invalid)?;
    let deadline = Instant::now() + bound;
    let (ids, sequences) = ([aggregate_id.clone()], [sequence]);
    poll(position, deadline, slot, || {
        applied(pool, &aggregate_type, &ids, &sequences)
    })
    .await?;
    Ok(Reached {
        position,
        aggregate_type,
        aggregate_id,
        sequence,
        deadline,
    })
}

/// Checks `check` every 10 ms until it holds; once `deadline` has passed
/// (after one last check), the token at `position` is `Stale`. When the
/// first check fails, the request's `slot` is given back until the wait
/// ends.
async fn poll<F, Fut>(
    position: i64,
    deadline: Instant,
    slot: Option<&Slot>,
    check: F,
) -> Result<(), ConsistencyError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<bool, ConsistencyError>>,
{
    let started = Instant::now();
    if check().await? {
        return Ok(());
    }
    aside(slot, async {
        loop {
            if Instant::now() >= deadline {
                return Err(ConsistencyError::Stale {
                    position,
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            if check().await? {
                return Ok(());
            }
        }
    })
    .await
}

/// Whether every projection of `aggregate_type` that keeps versions holds
/// each of `ids` at its `sequences` entry or later.
async fn applied(
    pool: &PgPool,
    aggregate_type: &str,
    ids: &[String],
    sequences: &[i64],
) -> Result<bool, ConsistencyError> {
    let projections = projections_of(aggregate_type, true);
    let expected = i64::try_from(projections.len() * ids.len()).unwrap_or(i64::MAX);
    let (applied,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM projection_versions v
         JOIN unnest($3::text[], $4::bigint[]) AS t(aggregate_id, sequence)
           ON v.aggregate_id = t.aggregate_id
         WHERE v.projection = ANY($1) AND v.aggregate_type = $2
           AND v.version >= t.sequence",
    )
    .bind(&projections)
    .bind(aggregate_type)
    .bind(ids)
    .bind(sequences)
    .fetch_one(pool)
    .await?;
    Ok(applied >= expected)
}

/// Waits until the search index holds the event `reached` names: the search
/// projection queues changed records in `search_pending` and the indexer
/// deletes a row only once the engine made the document searchable (the
/// embedded engine's commit, Elasticsearch's `refresh=wait_for`). A
/// customer's change also re-indexes its quotes, which carry its name, so
/// those are waited for too. Events of types the index does not hold need
/// no wait. A request's `slot` is given back while it waits.
pub async fn wait_indexed(
    pool: &PgPool,
    reached: &Reached,
    slot: Option<&Slot>,
) -> Result<(), ConsistencyError> {
    if !projections_of(&reached.aggregate_type, false).contains(&"search") {
        return Ok(());
    }
    let customer = (reached.aggregate_type == "customer")
        .then(|| Uuid::parse_str(&reached.aggregate_id).ok())
        .flatten();
    poll(reached.position, reached.deadline, slot, || async move {
        let (pending,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (
               SELECT 1 FROM search_pending
               WHERE aggregate_type = $1 AND aggregate_id = $2
             ) OR EXISTS (
               SELECT 1 FROM rm_quotes q JOIN search_pending p
                 ON p.aggregate_type = 'quote' AND p.aggregate_id = q.id::text
               WHERE q.customer_id = $3
             )",
        )
        .bind(&reached.aggregate_type)
        .bind(&reached.aggregate_id)
        .bind(customer)
        .fetch_one(pool)
        .await?;
        Ok(!pending)
    })
    .await
}

/// An aggregate a field reaches from a record read under a token, and the
/// token's bound: [`related`] waits until its projections hold every event
/// of it at or below `position`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Related {
    pub aggregate_type: &'static str,
    pub aggregate_id: Uuid,
    pub position: i64,
    pub deadline: Instant,
}

/// Waits until `aggregate_id` (of `aggregate_type`), reached from a record
/// read under `reached`, is in its read models as of the token: a quote's
/// customer renamed before the quote's command shows the new name, however
/// the two topics interleave at the projector. Through the request's
/// [`RelatedLoader`], so that a page of records waits in one round.
pub async fn related(
    ctx: &async_graphql::Context<'_>,
    reached: &Reached,
    aggregate_type: &'static str,
    aggregate_id: Uuid,
) -> async_graphql::Result<()> {
    let key = Related {
        aggregate_type,
        aggregate_id,
        position: reached.position,
        deadline: reached.deadline,
    };
    ctx.data::<DataLoader<RelatedLoader>>()?
        .load_one(key)
        .await
        .map(drop)
        .map_err(|e| graphql_error(&e))
}

/// Batches the [`related`] waits of one request, giving its `slot` back
/// while they wait.
#[derive(Debug, Clone)]
pub struct RelatedLoader {
    pool: PgPool,
    slot: Option<Arc<Slot>>,
}

impl RelatedLoader {
    pub fn new(pool: PgPool, slot: Option<Arc<Slot>>) -> Self {
        Self { pool, slot }
    }
}

impl Loader<Related> for RelatedLoader {
    type Value = ();
    type Error = Arc<ConsistencyError>;

    async fn load(&self, keys: &[Related]) -> Result<HashMap<Related, ()>, Self::Error> {
        let mut rounds: HashMap<(&'static str, i64, Instant), Vec<Related>> = HashMap::new();
        for key in keys {
            rounds
                .entry((key.aggregate_type, key.position, key.deadline))
                .or_default()
                .push(key.clone());
        }
        for round in rounds.values() {
            wait_related(&self.pool, round, self.slot.as_deref())
                .await
                .map_err(Arc::new)?;
        }
        Ok(keys.iter().map(|k| (k.clone(), ())).collect())
    }
}

/// [`related`] for aggregates of one type under one token: the last
/// sequence of each at or below the token's position (an aggregate with
/// none there is absent as of the token, and needs no wait), then the same
/// `projection_versions` check as [`wait`].
async fn wait_related(
    pool: &PgPool,
    keys: &[Related],
    slot: Option<&Slot>,
) -> Result<(), ConsistencyError> {
    let Some(first) = keys.first() else {
        return Ok(());
    };
    let ids: Vec<String> = keys.iter().map(|k| k.aggregate_id.to_string()).collect();
    let (ids, sequences): (Vec<String>, Vec<i64>) = sqlx::query_as::<_, (String, i64)>(
        "SELECT aggregate_id, max(sequence) FROM events
         WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND global_position <= $3
         GROUP BY aggregate_id",
    )
    .bind(first.aggregate_type)
    .bind(&ids)
    .bind(first.position)
    .fetch_all(pool)
    .await?
    .into_iter()
    .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    poll(first.position, first.deadline, slot, || {
        applied(pool, first.aggregate_type, &ids, &sequences)
    })
    .await
}
