//! The search projection.
//!
//! [`SearchProjection`] runs inside the projector's batch transaction like
//! every projection and records, in `search_pending`, which records changed
//! and to which version. The [`SearchIndexer`] then builds their documents
//! from the read models and upserts them into the search engine, deleting
//! the pending rows only after the engine accepted them. A crash anywhere
//! leaves the rows in place and the next drain writes them again, which the
//! engines' version check makes harmless. One indexer writes at a time (a
//! PostgreSQL advisory lock), which the embedded engine needs and which also
//! lets [`rebuild_index`] hold writes back while it fills a new index.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pivotal_search::{EntityKind, SearchDocument, SearchEngine};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::framework::{Envelope, Projection, ProjectionError};

const INDEX_LOCK: &str = "pivotal-search-index";
/// Most pending records one write to the engine takes. Each write is, for
/// the embedded engine, a writer, a new segment (its indexing memory and a
/// term dictionary per field, built from scratch) and an fsync, whatever
/// the number of records, so a drain writes everything pending at once up
/// to this many (ADR 0015, "Update: one write a second"); more pending
/// take more writes in the same drain. The records and their documents are
/// held while written: 5,000 took the projector's peak resident memory to
/// 141 MiB, 2,000 to 121 (ADR 0015, "Update: 2,000 records a write").
const DRAIN_BATCH: i64 = 2000;
/// Least time from one drain's start to the next one's: under a steady
/// stream of changes the index takes one write per interval instead of
/// one per projector batch, and a change waits at most this long more to
/// become searchable, as with Elasticsearch's default refresh interval.
/// A change after a quiet second is written at once.
const DRAIN_SPACING: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct SearchProjection;

#[async_trait]
impl Projection for SearchProjection {
    fn name(&self) -> &'static str {
        "search"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["customer", "quote", "user"]
    }

    fn table(&self) -> &'static str {
        "search_pending"
    }

    /// A pending row asks for a record to be indexed again at its highest
    /// version seen: an event seen twice, or late, asks for nothing new,
    /// and the read models it follows keep the versions.
    fn keeps_versions(&self) -> bool {
        false
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(conn, &[envelope]).await
    }

    /// Records every changed record at its highest version in one
    /// statement, with the quotes of every changed customer (a quote's
    /// document carries its customer's name, so they are indexed again).
    /// The rows are locked in key order, the order in which the indexer
    /// deletes them, so the two never deadlock.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[&Envelope],
    ) -> Result<(), ProjectionError> {
        let mut highest: std::collections::BTreeMap<(&str, &str), i64> =
            std::collections::BTreeMap::new();
        let mut customers = Vec::new();
        for event in events {
            let version = i64::try_from(event.version).unwrap_or(i64::MAX);
            let entry = highest
                .entry((event.aggregate_type.as_str(), event.aggregate_id.as_str()))
                .or_insert(version);
            *entry = (*entry).max(version);
            if event.aggregate_type == "customer"
                && let Ok(customer) = Uuid::parse_str(&event.aggregate_id)
            {
                customers.push(customer);
            }
        }
        if highest.is_empty() {
            return Ok(());
        }
        let mut types = Vec::with_capacity(highest.len());
        let mut ids = Vec::with_capacity(highest.len());
        let mut versions = Vec::with_capacity(highest.len());
        for ((aggregate_type, aggregate_id), version) in highest {
            types.push(aggregate_type);
            ids.push(aggregate_id);
            versions.push(version);
        }
        sqlx::query(
            "INSERT INTO search_pending (aggregate_type, aggregate_id, version)
             SELECT t, i, max(v) FROM (
               SELECT t, i, v FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(t, i, v)
               UNION ALL
               SELECT 'quote', q.id::text, q.version FROM rm_quotes q
               WHERE q.customer_id = ANY($4::uuid[])
             ) AS changed(t, i, v)
             GROUP BY t, i
             ORDER BY t, i
             ON CONFLICT (aggregate_type, aggregate_id)
               DO UPDATE SET version = greatest(search_pending.version, EXCLUDED.version)",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&versions)
        .bind(&customers)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The version of a quote's document: the quote's version in the high 32
/// bits and its customer's in the low ones, so that the document also
/// replaces the indexed one when only the customer changed (engines keep
/// the higher version). Both only grow, and a quote that changes customer
/// has a higher quote version, so the pair only grows too.
pub fn quote_document_version(quote: i64, customer: i64) -> u64 {
    let quote = u64::try_from(quote)
        .unwrap_or_default()
        .min(u64::from(u32::MAX >> 1));
    let customer = u64::try_from(customer)
        .unwrap_or_default()
        .min(u64::from(u32::MAX));
    (quote << 32) | customer
}

/// The quote's own version in a quote document's version.
pub fn quote_version_of_document(version: u64) -> u64 {
    version >> 32
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Search(#[from] pivotal_search::SearchError),
}

fn version(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

fn join(parts: &[Option<&str>]) -> String {
    parts
        .iter()
        .flatten()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Search documents of the records `ids` of `kind`, built from the read
/// models at their current versions.
///
/// The lookups are unnamed statements, planned on each execution with the
/// batch's ids (ADR 0039): a named one settles on a generic plan, and one
/// made while the table was small scans it whole until the table's
/// statistics change, testing each row against the ids one by one.
pub async fn documents(
    conn: &mut PgConnection,
    kind: EntityKind,
    ids: &[Uuid],
) -> Result<Vec<SearchDocument>, sqlx::Error> {
    type CustomerRow = (
        Uuid,
        Uuid,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Vec<String>,
        Option<String>,
        Option<String>,
        String,
        i64,
        DateTime<Utc>,
    );
    type QuoteRow = (
        Uuid,
        Uuid,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        i64,
        DateTime<Utc>,
        i64,
    );
    type UserRow = (
        Uuid,
        Uuid,
        String,
        String,
        String,
        Vec<String>,
        String,
        i64,
        DateTime<Utc>,
    );
    Ok(match kind {
        EntityKind::Customer => {
            let rows: Vec<CustomerRow> = sqlx::query_as(
                "SELECT organization_id, id, display_name, legal_name, email, phone, tax_number,
                        tags, billing_city, billing_country, status, version, created_at
                 FROM rm_customers WHERE id = ANY($1)",
            )
            .bind(ids)
            .persistent(false)
            .fetch_all(conn)
            .await?;
            rows.into_iter()
                .map(|r| {
                    let tags = r.7.join(" ");
                    SearchDocument {
                        organization_id: r.0,
                        kind,
                        id: r.1,
                        version: version(r.11),
                        status: r.10,
                        body: join(&[
                            (r.3 != r.2).then_some(r.3.as_str()),
                            r.4.as_deref(),
                            r.5.as_deref(),
                            r.6.as_deref(),
                            Some(tags.as_str()),
                            r.8.as_deref(),
                            r.9.as_deref(),
                        ]),
                        title: r.2,
                        created_at: r.12,
                    }
                })
                .collect()
        }
        EntityKind::Quote => {
            let rows: Vec<QuoteRow> = sqlx::query_as(
                "SELECT q.organization_id, q.id, q.number, q.title, q.status, q.currency,
                        q.total::text, c.display_name, q.version, q.created_at,
                        coalesce(c.version, 0)
                 FROM rm_quotes q
                 LEFT JOIN rm_customers c ON c.organization_id = q.organization_id AND c.id = q.customer_id
                 WHERE q.id = ANY($1)",
            )
            .bind(ids)
            .persistent(false)
            .fetch_all(conn)
            .await?;
            rows.into_iter()
                .map(|r| SearchDocument {
                    organization_id: r.0,
                    kind,
                    id: r.1,
                    version: quote_document_version(r.8, r.10),
                    title: format!("{} {}", r.2, r.3),
                    body: join(&[r.7.as_deref(), Some(&format!("{} {}", r.5, r.6))]),
                    status: r.4,
                    created_at: r.9,
                })
                .collect()
        }
        EntityKind::User => {
            let rows: Vec<UserRow> = sqlx::query_as(
                "SELECT organization_id, id, first_name, last_name, email, roles, status, version, created_at
                 FROM rm_users WHERE id = ANY($1)",
            )
            .bind(ids)
            .persistent(false)
            .fetch_all(conn)
            .await?;
            rows.into_iter()
                .map(|r| SearchDocument {
                    organization_id: r.0,
                    kind,
                    id: r.1,
                    version: version(r.7),
                    title: format!("{} {}", r.2, r.3),
                    body: join(&[Some(r.4.as_str()), Some(&r.5.join(" "))]),
                    status: r.6,
                    created_at: r.8,
                })
                .collect()
        }
    })
}

fn table_of(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Customer => "rm_customers",
        EntityKind::Quote => "rm_quotes",
        EntityKind::User => "rm_users",
    }
}

/// Writes pending records into the search engine.
#[derive(Debug, Clone)]
pub struct SearchIndexer {
    pool: PgPool,
    engine: Arc<dyn SearchEngine>,
}

impl SearchIndexer {
    pub fn new(pool: PgPool, engine: Arc<dyn SearchEngine>) -> Self {
        Self { pool, engine }
    }

    /// Indexes pending records until none is left; returns how many
    /// documents were sent. Returns at once when another process holds the
    /// index (an indexer elsewhere, or a rebuild).
    ///
    /// No row lock is held while the engine works: pending rows are read,
    /// indexed, then deleted up to the version indexed, so projector
    /// batches never wait on the engine. The index lock is a session
    /// advisory lock on a connection of the indexer's own, which closes
    /// (releasing it) if the indexer stops mid-drain.
    pub async fn drain(&self) -> Result<usize, IndexError> {
        let mut held = None;
        let result = self.drain_held(&mut held).await;
        if let Some(conn) = held {
            let _ = sqlx::Connection::close(conn).await;
        }
        result
    }

    /// [`SearchIndexer::drain`] on the connection `held` keeps from one
    /// drain to the next (its prepared statements too; a new one is opened
    /// when it holds none). A drain that ends well releases the index lock
    /// and keeps the connection; one that fails closes it, which releases
    /// the lock whatever state the session was left in.
    async fn drain_held(&self, held: &mut Option<PgConnection>) -> Result<usize, IndexError> {
        let conn = match held {
            Some(conn) => conn,
            None => held.insert(self.pool.acquire().await?.detach()),
        };
        let result = self.drain_on(conn).await;
        let released = match result {
            Ok(Some(_)) => sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
                .bind(INDEX_LOCK)
                .execute(&mut *conn)
                .await
                .is_ok(),
            Ok(None) => true,
            Err(_) => false,
        };
        if !released && let Some(conn) = held.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
        result.map(Option::unwrap_or_default)
    }

    /// Drains while holding the index lock; `None` when another session
    /// holds it. Leaves the lock held.
    async fn drain_on(&self, conn: &mut PgConnection) -> Result<Option<usize>, IndexError> {
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(INDEX_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(None);
        }
        let mut sent = 0;
        loop {
            let pending: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, version FROM search_pending
                 ORDER BY aggregate_type, aggregate_id LIMIT $1",
            )
            .bind(DRAIN_BATCH)
            .fetch_all(&mut *conn)
            .await?;
            if pending.is_empty() {
                return Ok(Some(sent));
            }
            let mut documents = Vec::with_capacity(pending.len());
            for kind in EntityKind::ALL {
                let ids: Vec<Uuid> = pending
                    .iter()
                    .filter(|(t, _, _)| t == kind.aggregate_type())
                    .filter_map(|(_, id, _)| Uuid::parse_str(id).ok())
                    .collect();
                if !ids.is_empty() {
                    documents.extend(self::documents(&mut *conn, kind, &ids).await?);
                }
            }
            self.engine.upsert(&documents).await?;
            sent += documents.len();
            // Done: every pending row at or below the version now indexed,
            // and rows whose record has no read-model row (nothing to index).
            let types: Vec<&str> = documents.iter().map(|d| d.kind.aggregate_type()).collect();
            let ids: Vec<String> = documents.iter().map(|d| d.id.to_string()).collect();
            // Pending rows hold the record's own version.
            let versions: Vec<i64> = documents
                .iter()
                .map(|d| match d.kind {
                    EntityKind::Quote => quote_version_of_document(d.version),
                    _ => d.version,
                })
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect();
            sqlx::query(
                // Locked in key order, as the projection locks them.
                "DELETE FROM search_pending p
                 WHERE (p.aggregate_type, p.aggregate_id) IN (
                   SELECT s.aggregate_type, s.aggregate_id
                   FROM search_pending s
                   JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS d(t, i, v)
                     ON s.aggregate_type = d.t AND s.aggregate_id = d.i AND s.version <= d.v
                   ORDER BY s.aggregate_type, s.aggregate_id
                   FOR UPDATE OF s)",
            )
            .bind(&types)
            .bind(&ids)
            .bind(&versions)
            .execute(&mut *conn)
            .await?;
            let indexed: HashSet<(&str, &str)> = types
                .iter()
                .copied()
                .zip(ids.iter().map(String::as_str))
                .collect();
            for (aggregate_type, aggregate_id, version) in &pending {
                if !indexed.contains(&(aggregate_type.as_str(), aggregate_id.as_str())) {
                    tracing::warn!(aggregate_type, aggregate_id, "no read-model row to index");
                    sqlx::query(
                        "DELETE FROM search_pending
                         WHERE aggregate_type = $1 AND aggregate_id = $2 AND version <= $3",
                    )
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            if i64::try_from(pending.len()).unwrap_or(0) < DRAIN_BATCH {
                return Ok(Some(sent));
            }
        }
    }

    /// Drains whenever `wake` fires and every second (rows left by a crash
    /// or by a rebuild that held the lock), at most once a second, until
    /// `shutdown` resolves.
    pub async fn run(
        self,
        wake: Arc<tokio::sync::Notify>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        let mut held = None;
        loop {
            let started = tokio::time::Instant::now();
            if let Err(error) = self.drain_held(&mut held).await {
                tracing::warn!(%error, "search indexing failed; retrying");
            }
            // A wake meanwhile is kept (a `Notify` permit) for below.
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep_until(started + DRAIN_SPACING) => {}
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// What a search index rebuild did.
#[derive(Debug, Clone)]
pub struct IndexRebuildReport {
    pub index: String,
    pub documents: u64,
    pub seconds: f64,
}

/// Rebuilds the search index from the read models into a new index, then
/// switches searches to it atomically. Searches keep using the old index
/// meanwhile; indexing waits (changes queue in `search_pending`) and
/// resumes into the new index.
pub async fn rebuild_index(
    pool: &PgPool,
    engine: &dyn SearchEngine,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<IndexRebuildReport, IndexError> {
    let started = Instant::now();
    let mut lock = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(INDEX_LOCK)
        .execute(&mut *lock)
        .await?;
    let result = async {
        let mut ids_by_kind = Vec::new();
        for kind in EntityKind::ALL {
            let ids: Vec<(Uuid,)> =
                sqlx::query_as(&format!("SELECT id FROM {} ORDER BY id", table_of(kind)))
                    .fetch_all(&mut *lock)
                    .await?;
            ids_by_kind.push((kind, ids.into_iter().map(|(id,)| id).collect::<Vec<_>>()));
        }
        if let Some(bar) = progress {
            bar.set_length(ids_by_kind.iter().map(|(_, ids)| ids.len() as u64).sum());
        }
        let mut build = engine.begin_rebuild().await?;
        let mut count = 0u64;
        for (kind, ids) in &ids_by_kind {
            for chunk in ids.chunks(1000) {
                let documents = self::documents(&mut lock, *kind, chunk).await?;
                build.add(&documents).await?;
                count += documents.len() as u64;
                if let Some(bar) = progress {
                    bar.inc(chunk.len() as u64);
                }
            }
        }
        let index = build.index_name().to_owned();
        build.publish().await?;
        Ok::<_, IndexError>(IndexRebuildReport {
            index,
            documents: count,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(INDEX_LOCK)
        .execute(&mut *lock)
        .await?;
    result
}

#[cfg(test)]
mod tests {
    use pivotal_test_support::TestEnv;

    use super::*;

    async fn backend(conn: &mut PgConnection) -> i32 {
        sqlx::query_as::<_, (i32,)>("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .unwrap()
            .0
    }

    /// The indexer's connection lives from one drain to the next, the
    /// index lock does not: another session (a rebuild) takes it between
    /// drains, and a drain meanwhile leaves the queue alone.
    #[tokio::test]
    async fn the_indexer_keeps_its_connection_but_not_the_index_lock_between_drains() {
        let env = TestEnv::new().await;
        let engine = pivotal_search::open(&env.settings.search).unwrap();
        let indexer = SearchIndexer::new(env.pool.clone(), engine);
        let mut held = None;
        assert_eq!(indexer.drain_held(&mut held).await.unwrap(), 0);
        let first = backend(held.as_mut().unwrap()).await;

        let mut other = env.pool.acquire().await.unwrap();
        let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(INDEX_LOCK)
            .fetch_one(&mut *other)
            .await
            .unwrap();
        assert!(taken, "the index lock outlived the drain");
        // A record with no read-model row: a drain drops it from the queue.
        let missing = Uuid::now_v7().to_string();
        sqlx::query("INSERT INTO search_pending VALUES ('customer', $1, 1)")
            .bind(&missing)
            .execute(&env.pool)
            .await
            .unwrap();
        let queued = || async {
            sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM search_pending")
                .fetch_one(&env.pool)
                .await
                .unwrap()
                .0
        };
        assert_eq!(indexer.drain_held(&mut held).await.unwrap(), 0);
        assert_eq!(
            queued().await,
            1,
            "drained while another session held the index"
        );

        sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(INDEX_LOCK)
            .execute(&mut *other)
            .await
            .unwrap();
        assert_eq!(indexer.drain_held(&mut held).await.unwrap(), 0);
        assert_eq!(queued().await, 0);
        assert_eq!(backend(held.as_mut().unwrap()).await, first);
    }

    /// The engine the settings select, with each write's size recorded.
    #[derive(Debug)]
    struct Recorded {
        engine: Arc<dyn SearchEngine>,
        writes: std::sync::Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl SearchEngine for Recorded {
        fn name(&self) -> &'static str {
            self.engine.name()
        }

        async fn upsert(
            &self,
            documents: &[SearchDocument],
        ) -> Result<(), pivotal_search::SearchError> {
            self.writes.lock().unwrap().push(documents.len());
            self.engine.upsert(documents).await
        }

        async fn search(
            &self,
            request: &pivotal_search::SearchRequest,
        ) -> Result<pivotal_search::SearchPage, pivotal_search::SearchError> {
            self.engine.search(request).await
        }

        async fn begin_rebuild(
            &self,
        ) -> Result<Box<dyn pivotal_search::IndexBuild>, pivotal_search::SearchError> {
            self.engine.begin_rebuild().await
        }

        async fn live_index(&self) -> Result<Option<String>, pivotal_search::SearchError> {
            self.engine.live_index().await
        }
    }

    /// Drains `records` customers left pending by the projection: what the
    /// drain reported, the records of each write to the engine, the rows
    /// left pending, and how many of the customers a search then finds.
    async fn drain_pending(records: i64) -> (usize, Vec<usize>, i64, u64) {
        let env = TestEnv::new().await;
        let organization = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO rm_customers (organization_id, id, legal_name, display_name, currency,
                                       payment_terms_days, status, version, created_at, updated_at)
             SELECT $1, gen_random_uuid(), 'Drained ' || n, 'Drained ' || n, 'NZD', 20,
                    'active', 2, now(), now()
             FROM generate_series(1, $2) AS n",
        )
        .bind(organization)
        .bind(records)
        .execute(&env.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO search_pending (aggregate_type, aggregate_id, version)
             SELECT 'customer', id::text, version FROM rm_customers WHERE organization_id = $1",
        )
        .bind(organization)
        .execute(&env.pool)
        .await
        .unwrap();
        let engine = Arc::new(Recorded {
            engine: pivotal_search::open(&env.settings.search).unwrap(),
            writes: std::sync::Mutex::new(Vec::new()),
        });
        let indexer = SearchIndexer::new(env.pool.clone(), engine.clone());

        let sent = indexer.drain().await.unwrap();
        let writes = engine.writes.lock().unwrap().clone();
        let (queued,): (i64,) = sqlx::query_as("SELECT count(*) FROM search_pending")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        let page = engine
            .search(&pivotal_search::SearchRequest {
                organization_id: organization,
                text: "drained".into(),
                kinds: vec![EntityKind::Customer],
                statuses: Vec::new(),
                created_from: None,
                created_to: None,
                offset: 0,
                limit: 10,
            })
            .await
            .unwrap();
        (sent, writes, queued, page.total)
    }

    /// What several projector batches left pending goes to the engine in
    /// one write (one segment for the embedded engine), and every record
    /// is then found.
    #[tokio::test]
    async fn a_drain_writes_everything_pending_in_one_write() {
        assert_eq!(drain_pending(1200).await, (1200, vec![1200], 0, 1200));
    }

    /// More pending than one write takes go in writes of at most
    /// `DRAIN_BATCH` records, all in the one drain.
    #[tokio::test]
    async fn a_drain_writes_more_than_a_write_takes_in_several() {
        let batch = usize::try_from(DRAIN_BATCH).unwrap();
        let (sent, writes, queued, found) = drain_pending(DRAIN_BATCH * 2 + 300).await;
        assert_eq!(sent, batch * 2 + 300);
        assert_eq!(writes, vec![batch, batch, 300]);
        assert_eq!(queued, 0);
        assert_eq!(found, u64::try_from(batch * 2 + 300).unwrap());
    }

    #[test]
    fn quote_document_versions_grow_with_the_quote_and_with_its_customer() {
        let v = quote_document_version;
        assert!(v(3, 7) < v(3, 8), "the customer changed");
        assert!(
            v(3, 9) < v(4, 1),
            "the quote changed (even to another customer)"
        );
        assert_eq!(quote_version_of_document(v(3, 9)), 3);
        assert_eq!(quote_version_of_document(v(0, 0)), 0);
        assert!(v(i64::MAX, i64::MAX) <= u64::try_from(i64::MAX).unwrap());
    }
}
