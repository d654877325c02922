//! Full-text search over Pivotal Flow's records, behind one interface with
//! two engines:
//!
//! - [`tantivy_engine::TantivyEngine`], embedded, the default: an index on
//!   local disk written by the projector and read by the query API on the
//!   same node (development, tests, single-node installations);
//! - [`elastic::ElasticEngine`], an Elasticsearch cluster through its REST
//!   bulk, search and alias APIs, for multi-node deployments.
//!
//! Both keep the same contract, which one test suite checks against each:
//! documents are upserted idempotently by aggregate version (a lower or equal
//! version never replaces a higher one), every query is scoped to one
//! organization, words match exactly, by prefix (the last word, as typed) and
//! with typos (edit distance 1 for words of 3 to 5 characters, 2 beyond), and
//! hits carry highlighted fields. Rebuilds write a new index beside the live
//! one and switch to it atomically (a pointer file or an alias), so searches
//! keep answering meanwhile.
//!
//! # Layout
//!
//! - [`SearchDocument`], [`SearchRequest`], [`SearchPage`]: what goes in
//!   and comes out.
//! - [`SearchEngine`] and [`IndexBuild`]: the engine interface.
//! - [`open`]: the engine the settings select.
//! - [`query_words`], [`fuzziness`], [`highlight`]: query rules shared by
//!   both engines.

pub mod elastic;
pub mod tantivy_engine;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pivotal_settings::{SearchEngineKind, SearchSettings};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Kinds of record the index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Customer,
    Quote,
    User,
}

impl EntityKind {
    pub const ALL: [EntityKind; 3] = [EntityKind::Customer, EntityKind::Quote, EntityKind::User];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Customer => "customer",
            EntityKind::Quote => "quote",
            EntityKind::User => "user",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == value)
    }

    /// The aggregate type whose events change this kind of record.
    pub fn aggregate_type(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record as the index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchDocument {
    pub organization_id: Uuid,
    pub kind: EntityKind,
    pub id: Uuid,
    /// The aggregate version the document reflects.
    pub version: u64,
    pub status: String,
    /// The record's name (weighted above `body`).
    pub title: String,
    /// Other searchable text: email, tags, customer, roles...
    pub body: String,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
}

impl SearchDocument {
    /// The document's identity in the index.
    pub fn key(&self) -> String {
        key(self.kind, self.id)
    }
}

pub(crate) fn key(kind: EntityKind, id: Uuid) -> String {
    format!("{}:{}", kind.as_str(), id)
}

/// A search, always within one organization.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub organization_id: Uuid,
    pub text: String,
    /// Kinds to search; never empty (callers pass the kinds the user may read).
    pub kinds: Vec<EntityKind>,
    /// Statuses to keep; empty keeps all.
    pub statuses: Vec<String>,
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub created_to: Option<DateTime<Utc>>,
    pub offset: usize,
    pub limit: usize,
}

/// A highlighted field of a hit: the field's text with matches in `<em>`,
/// HTML-escaped otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Highlight {
    pub field: String,
    pub snippet: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub kind: EntityKind,
    pub id: Uuid,
    pub score: f32,
    pub status: String,
    pub title: String,
    pub version: u64,
    pub highlights: Vec<Highlight>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchPage {
    /// Every match, not only this page.
    pub total: u64,
    pub hits: Vec<SearchHit>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the search text has no word to look for")]
    EmptyQuery,
    #[error("search index: {0}")]
    Index(String),
    #[error("search engine unreachable: {0}")]
    Unavailable(String),
    #[error("search engine refused the request: {0}")]
    Refused(String),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(error: tantivy::TantivyError) -> Self {
        SearchError::Index(error.to_string())
    }
}

/// A search engine holding the organization-scoped index.
#[async_trait]
pub trait SearchEngine: Send + Sync + fmt::Debug {
    /// Which engine this is (`tantivy`, `elasticsearch`).
    fn name(&self) -> &'static str;
    /// Adds or replaces documents, each only if its version is above the
    /// indexed one; visible to searches when this returns.
    async fn upsert(&self, documents: &[SearchDocument]) -> Result<(), SearchError>;
    /// Runs a search.
    async fn search(&self, request: &SearchRequest) -> Result<SearchPage, SearchError>;
    /// Starts a new, empty index beside the live one.
    async fn begin_rebuild(&self) -> Result<Box<dyn IndexBuild>, SearchError>;
    /// The name of the index searches currently use, if there is one.
    async fn live_index(&self) -> Result<Option<String>, SearchError>;
}

/// A new index being filled; searches use the old one until [`IndexBuild::publish`].
#[async_trait]
pub trait IndexBuild: Send {
    fn index_name(&self) -> &str;
    async fn add(&mut self, documents: &[SearchDocument]) -> Result<(), SearchError>;
    /// Makes the new index the live one in one atomic step and retires the
    /// previous generation.
    async fn publish(self: Box<Self>) -> Result<(), SearchError>;
}

/// The engine the settings select.
pub fn open(settings: &SearchSettings) -> Result<Arc<dyn SearchEngine>, SearchError> {
    Ok(match settings.engine {
        SearchEngineKind::Tantivy => Arc::new(tantivy_engine::TantivyEngine::open(
            &settings.dir,
            settings.writer_memory_mib,
        )?),
        SearchEngineKind::Elasticsearch => {
            Arc::new(elastic::ElasticEngine::new(&settings.url, &settings.index)?)
        }
    })
}

/// The words of a search text: split at anything but letters and digits,
/// the first 16 kept (a query is not a document).
pub fn query_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(16)
        .map(str::to_owned)
        .collect()
}

/// Edit distance allowed for a word of `chars` characters (Elasticsearch's
/// `AUTO`): exact up to 2, one edit up to 5, two beyond.
pub fn fuzziness(chars: usize) -> u8 {
    match chars {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

/// Whether an indexed token matches a (normalized) query term: equal, within
/// the term's edit distance (transpositions count as one), or, for the last
/// term, starting with it.
pub fn term_matches(token: &str, term: &str, is_last: bool) -> bool {
    if token == term || (is_last && token.starts_with(term)) {
        return true;
    }
    let distance = usize::from(fuzziness(term.chars().count()));
    distance > 0 && strsim::osa_distance(token, term) <= distance
}

/// Escapes text for HTML (snippets wrap matches in `<em>` and escape the rest).
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// Wraps the byte ranges `matches` (sorted, non-overlapping) of `text` in
/// `<em>`; `None` when nothing matched.
pub fn highlight(text: &str, matches: &[std::ops::Range<usize>]) -> Option<String> {
    if matches.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + matches.len() * 9);
    let mut at = 0;
    for range in matches {
        if range.start < at || range.end > text.len() {
            continue;
        }
        out.push_str(&escape_html(&text[at..range.start]));
        out.push_str("<em>");
        out.push_str(&escape_html(&text[range.clone()]));
        out.push_str("</em>");
        at = range.end;
    }
    out.push_str(&escape_html(&text[at..]));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_at_punctuation() {
        assert_eq!(
            query_words("  Q-2026-0001 ana@acme.test  O'Neil"),
            vec!["Q", "2026", "0001", "ana", "acme", "test", "O", "Neil"]
        );
        assert!(query_words(" -- ").is_empty());
    }

    #[test]
    fn fuzziness_follows_word_length() {
        assert_eq!(fuzziness(2), 0);
        assert_eq!(fuzziness(4), 1);
        assert_eq!(fuzziness(9), 2);
    }

    #[test]
    fn terms_match_by_typo_and_prefix() {
        assert!(term_matches("harbour", "harbor", false));
        assert!(term_matches("harbour", "hrabour", false), "transposition");
        assert!(!term_matches("harbour", "harb", false));
        assert!(term_matches("harbour", "harb", true));
        assert!(!term_matches("ab", "ac", false), "short words are exact");
    }

    #[test]
    fn highlights_escape_and_wrap() {
        assert_eq!(
            highlight("Smith & <Sons> Smith", &[0..5, 15..20]).as_deref(),
            Some("<em>Smith</em> &amp; &lt;Sons&gt; <em>Smith</em>")
        );
        assert_eq!(highlight("x", &[]), None);
    }
}
