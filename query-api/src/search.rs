//! `search(query, types, filter, first, after)`: full-text search over the
//! caller's organization, served by the configured search engine. With a
//! consistency token it answers only once the index holds the token's event
//! (or fails with `STALE_READ`).

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge, query};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::SecondsFormat;
use pivotal_domain::permissions::Permission;
use pivotal_search::{EntityKind, SearchEngine, SearchError, SearchRequest};
use serde::{Deserialize, Serialize};

use crate::consistency::{ConsistencyToken, into_graphql, wait_indexed};
use crate::cursor::PageCursor;
use crate::errors;
use crate::scalars::Instant;
use crate::schema::{MAX_PAGE, caller};

/// The search engine, as schema data.
pub type Engine = Arc<dyn SearchEngine>;

/// Longest accepted search text, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Deepest page reachable by cursors.
pub const MAX_OFFSET: usize = 10_000;

pub const SEARCH_UNAVAILABLE: &str = "SEARCH_UNAVAILABLE";

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum SearchType {
    Customer,
    Quote,
    User,
}

impl SearchType {
    fn kind(self) -> EntityKind {
        match self {
            SearchType::Customer => EntityKind::Customer,
            SearchType::Quote => EntityKind::Quote,
            SearchType::User => EntityKind::User,
        }
    }

    pub(crate) fn of(kind: EntityKind) -> Self {
        match kind {
            EntityKind::Customer => SearchType::Customer,
            EntityKind::Quote => SearchType::Quote,
            EntityKind::User => SearchType::User,
        }
    }

    /// What reading this type of record takes.
    pub(crate) fn permission(self) -> Permission {
        match self {
            SearchType::Customer => Permission::new("customers", "read"),
            SearchType::Quote => Permission::new("quotes", "read"),
            SearchType::User => Permission::new("users", "read"),
        }
    }
}

#[derive(InputObject, Debug, Default)]
pub struct SearchFilter {
    /// Keep records in these statuses (as the records spell them, e.g.
    /// `active`, `sent`).
    pub statuses: Option<Vec<String>>,
    /// Created at or after.
    pub created_from: Option<Instant>,
    /// Created before.
    pub created_to: Option<Instant>,
}

/// A field of a hit with the matched words in `<em>` (the rest HTML-escaped).
#[derive(SimpleObject, Debug, Clone)]
pub struct SearchHighlight {
    pub field: String,
    pub snippet: String,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct SearchHit {
    #[graphql(name = "type")]
    pub kind: SearchType,
    pub id: ID,
    pub title: String,
    pub status: String,
    /// Relevance; hits come highest first.
    pub score: f64,
    /// The record's version the index reflects.
    pub version: i64,
    pub highlights: Vec<SearchHighlight>,
}

#[derive(SimpleObject, Debug)]
pub struct SearchInfo {
    /// Every match, not only this page.
    pub total_count: i64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SearchCursor {
    offset: usize,
}

pub type SearchConnection = Connection<
    PageCursor<SearchCursor>,
    SearchHit,
    SearchInfo,
    async_graphql::connection::EmptyFields,
    async_graphql::connection::DefaultConnectionName,
>;

#[derive(Debug, Default)]
pub struct SearchQuery;

#[Object]
impl SearchQuery {
    /// Records of the caller's organization matching `query`: every word
    /// must match, exactly, with a typo, or (the last word) as a prefix.
    /// `types` defaults to every type the caller may read.
    #[allow(clippy::too_many_arguments)]
    async fn search(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "query")] text: String,
        types: Option<Vec<SearchType>>,
        filter: Option<SearchFilter>,
        #[graphql(desc = "Hits on the page: 0 to 100 (20 when not given).")] first: Option<i32>,
        #[graphql(desc = "A page's `endCursor`: the hits after it.")] after: Option<String>,
        consistency_token: Option<ConsistencyToken>,
    ) -> async_graphql::Result<SearchConnection> {
        let principal = crate::schema::principal(ctx)?;
        let types = match types {
            Some(types) => {
                for t in &types {
                    caller(ctx, t.permission())?;
                }
                types
            }
            None => {
                let readable: Vec<SearchType> =
                    [SearchType::Customer, SearchType::Quote, SearchType::User]
                        .into_iter()
                        .filter(|t| principal.has(t.permission()))
                        .collect();
                if readable.is_empty() {
                    return Err(errors::coded(
                        errors::FORBIDDEN,
                        "the token grants reading none of customers, quotes or users",
                    ));
                }
                readable
            }
        };
        if types.is_empty() {
            return Err(errors::bad_input("types must name at least one type"));
        }
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(errors::bad_input(format!(
                "query must be at most {MAX_QUERY_CHARS} characters"
            )));
        }
        if pivotal_search::query_words(&text).is_empty() {
            return Err(errors::bad_input(
                "query must contain at least one letter or digit",
            ));
        }
        crate::cursor::page_sizes(first, None)?;
        let filter = filter.unwrap_or_default();
        if let (Some(from), Some(to)) = (filter.created_from, filter.created_to)
            && from >= to
        {
            let at = |t: Instant| t.0.to_rfc3339_opts(SecondsFormat::AutoSi, true);
            return Err(errors::bad_input(format!(
                "createdFrom ({}) must be before createdTo ({})",
                at(from),
                at(to)
            )));
        }
        let engine = ctx.data_opt::<Engine>().cloned().ok_or_else(|| {
            errors::coded(
                SEARCH_UNAVAILABLE,
                "search is not configured on this server",
            )
        })?;
        // Read-your-writes: once the PostgreSQL read models have the
        // token's event, wait for the index to have it too.
        if let Some(reached) = crate::consistency::honour(ctx, consistency_token.as_ref()).await? {
            wait_indexed(
                crate::schema::pool(ctx)?,
                &reached,
                crate::consistency::slot(ctx),
            )
            .await
            .map_err(into_graphql)?;
        }
        let organization = principal.claims.org;
        let result = query(
            after,
            None,
            first,
            None,
            |after: Option<PageCursor<SearchCursor>>,
             _before: Option<PageCursor<SearchCursor>>,
             first,
             _last| async move {
                let offset = after.map_or(0, |c| c.offset + 1);
                if offset > MAX_OFFSET {
                    return Err(errors::bad_input(format!(
                        "search pages end at {MAX_OFFSET} hits; narrow the query"
                    )));
                }
                let limit = first.unwrap_or(20).min(MAX_PAGE);
                let request = SearchRequest {
                    organization_id: organization,
                    text,
                    kinds: types.iter().map(|t| t.kind()).collect(),
                    statuses: filter.statuses.unwrap_or_default(),
                    created_from: filter.created_from.map(|t| t.0),
                    created_to: filter.created_to.map(|t| t.0),
                    offset,
                    limit,
                };
                let page = engine.search(&request).await.map_err(|e| match e {
                    SearchError::EmptyQuery => errors::bad_input(e.to_string()),
                    SearchError::Unavailable(_) => {
                        tracing::warn!(error = %e, "search engine unavailable");
                        errors::unavailable(
                            SEARCH_UNAVAILABLE,
                            "the search engine is unavailable; retry shortly",
                        )
                    }
                    other => errors::internal(other),
                })?;
                let total = i64::try_from(page.total).unwrap_or(i64::MAX);
                let more = (offset + page.hits.len()) < usize::try_from(page.total).unwrap_or(0);
                let mut connection = Connection::with_additional_fields(
                    offset > 0,
                    more,
                    SearchInfo { total_count: total },
                );
                connection
                    .edges
                    .extend(page.hits.into_iter().enumerate().map(|(i, hit)| {
                        Edge::new(
                            PageCursor(SearchCursor { offset: offset + i }),
                            SearchHit {
                                kind: SearchType::of(hit.kind),
                                id: ID(hit.id.to_string()),
                                title: hit.title,
                                status: hit.status,
                                score: f64::from(hit.score),
                                version: i64::try_from(match hit.kind {
                                    EntityKind::Quote => {
                                        pivotal_projectors::search::quote_version_of_document(
                                            hit.version,
                                        )
                                    }
                                    _ => hit.version,
                                })
                                .unwrap_or(i64::MAX),
                                highlights: hit
                                    .highlights
                                    .into_iter()
                                    .map(|h| SearchHighlight {
                                        field: h.field,
                                        snippet: h.snippet,
                                    })
                                    .collect(),
                            },
                        )
                    }));
                Ok::<_, async_graphql::Error>(connection)
            },
        )
        .await;
        result.map_err(errors::keep_code)
    }
}
