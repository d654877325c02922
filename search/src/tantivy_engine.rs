//! The embedded engine: a tantivy index on local disk.
//!
//! `{dir}/CURRENT` names the live generation, `{dir}/{generation}/` holds
//! each index. The projector (one writer at a time, coordinated through
//! PostgreSQL) upserts into the live generation; the query API opens the
//! generation `CURRENT` names and reloads it when the index's `meta.json`
//! changes, so a commit is visible to the next search. A rebuild writes a new
//! generation and replaces `CURRENT` with one `rename`, the alias switch of
//! this engine; the generation before the previous one is removed.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use uuid::Uuid;

use crate::{
    EntityKind, Highlight, IndexBuild, SearchDocument, SearchEngine, SearchError, SearchHit,
    SearchPage, SearchRequest, fuzziness, highlight, query_words, term_matches,
};

const POINTER: &str = "CURRENT";
const ANALYZER: &str = "folding";

#[derive(Debug, Clone, Copy)]
struct Fields {
    key: Field,
    org: Field,
    kind: Field,
    id: Field,
    status: Field,
    title: Field,
    body: Field,
    created: Field,
    version: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        key: builder.add_text_field("key", STRING | STORED),
        org: builder.add_text_field("org", STRING),
        kind: builder.add_text_field("kind", STRING | STORED),
        id: builder.add_text_field("id", STRING | STORED),
        status: builder.add_text_field("status", STRING | STORED),
        title: builder.add_text_field("title", text.clone()),
        body: builder.add_text_field("body", text),
        created: builder.add_date_field(
            "created",
            DateOptions::default()
                .set_indexed()
                .set_fast()
                .set_stored()
                .set_precision(DateTimePrecision::Seconds),
        ),
        version: builder.add_u64_field("version", INDEXED | STORED),
    };
    (builder.build(), fields)
}

/// Letters and digits, lower-cased and folded to ASCII (`Müller` finds
/// `muller`); the same analysis for documents and queries.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn open_index(path: &Path) -> Result<Index, SearchError> {
    let index = Index::open_in_dir(path)?;
    index.tokenizers().register(ANALYZER, analyzer());
    Ok(index)
}

fn create_index(path: &Path) -> Result<Index, SearchError> {
    std::fs::create_dir_all(path).map_err(|e| SearchError::Index(e.to_string()))?;
    let (schema, _) = schema();
    let index = Index::create_in_dir(path, schema)?;
    index.tokenizers().register(ANALYZER, analyzer());
    Ok(index)
}

fn io(error: std::io::Error) -> SearchError {
    SearchError::Index(error.to_string())
}

/// `at` as the index keeps instants: nanoseconds in 64 bits, from 1677 to
/// 2262. An instant beyond is taken as the nearest one kept (a bound of a
/// search, say: no record is created outside that span), rather than
/// overflowing.
fn to_tantivy_date(at: DateTime<Utc>) -> tantivy::DateTime {
    const NANOS: i64 = 1_000_000_000;
    let seconds = at.timestamp().clamp(i64::MIN / NANOS, i64::MAX / NANOS);
    tantivy::DateTime::from_timestamp_secs(seconds)
}

struct Writer {
    writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
}

struct Reader {
    generation: String,
    reader: IndexReader,
    meta_modified: Option<SystemTime>,
}

struct Inner {
    root: PathBuf,
    writer_memory: usize,
    fields: Fields,
    /// Serializes writers within this process.
    writer: Mutex<()>,
    reader: Mutex<Option<Reader>>,
}

/// The embedded search engine.
#[derive(Clone)]
pub struct TantivyEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TantivyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TantivyEngine")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl TantivyEngine {
    /// The index root `dir` (created by the first write).
    pub fn open(dir: &Path, writer_memory_mib: usize) -> Result<Self, SearchError> {
        Ok(Self {
            inner: Arc::new(Inner {
                root: dir.to_path_buf(),
                writer_memory: writer_memory_mib.max(15) * 1024 * 1024,
                fields: schema().1,
                writer: Mutex::new(()),
                reader: Mutex::new(None),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, SearchError> + Send + 'static,
    ) -> Result<T, SearchError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| SearchError::Index(format!("search task failed: {e}")))?
    }
}

/// The live generation named by `CURRENT`.
fn current(root: &Path) -> Result<Option<String>, SearchError> {
    match std::fs::read_to_string(root.join(POINTER)) {
        Ok(name) => Ok(Some(name.trim().to_owned()).filter(|n| !n.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// Points `CURRENT` at `generation` atomically (write aside, rename).
fn point_to(root: &Path, generation: &str) -> Result<(), SearchError> {
    let aside = root.join(format!("{POINTER}.{}", Uuid::new_v4().simple()));
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&aside).map_err(io)?;
        file.write_all(generation.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&aside, root.join(POINTER)).map_err(io)
}

fn to_document(f: Fields, document: &SearchDocument) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_text(f.key, document.key());
    doc.add_text(f.org, document.organization_id.to_string());
    doc.add_text(f.kind, document.kind.as_str());
    doc.add_text(f.id, document.id.to_string());
    doc.add_text(f.status, &document.status);
    doc.add_text(f.title, &document.title);
    doc.add_text(f.body, &document.body);
    doc.add_date(f.created, to_tantivy_date(document.created_at));
    doc.add_u64(f.version, document.version);
    doc
}

impl Inner {
    fn current(&self) -> Result<Option<String>, SearchError> {
        current(&self.root)
    }

    fn new_generation(&self) -> String {
        format!(
            "g{}-{}",
            Utc::now().format("%Y%m%d%H%M%S%3f"),
            &Uuid::new_v4().simple().to_string()[..6]
        )
    }

    fn open_writer(&self, index: &Index) -> Result<Writer, SearchError> {
        let writer = index.writer_with_num_threads(1, self.writer_memory)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Writer { writer, reader })
    }

    fn upsert(&self, documents: &[SearchDocument]) -> Result<(), SearchError> {
        let generation = match self.current()? {
            Some(generation) => generation,
            None => {
                let generation = self.new_generation();
                create_index(&self.root.join(&generation))?;
                point_to(&self.root, &generation)?;
                generation
            }
        };
        let _guard = self
            .writer
            .lock()
            .map_err(|_| SearchError::Index("writer lock poisoned".into()))?;
        // A writer per call, released after the commit: several projector
        // processes on one node take turns (the caller serializes them).
        let index = open_index(&self.root.join(&generation))?;
        let mut writer = self.open_writer(&index)?;
        let searcher = writer.reader.searcher();
        let mut newest: HashMap<String, &SearchDocument> = HashMap::new();
        for document in documents {
            let entry = newest.entry(document.key()).or_insert(document);
            if document.version > entry.version {
                *entry = document;
            }
        }
        let mut changed = false;
        for (key, document) in newest {
            let term = Term::from_field_text(self.fields.key, &key);
            let found = searcher.search(
                &TermQuery::new(term.clone(), IndexRecordOption::Basic),
                &TopDocs::with_limit(1).order_by_score(),
            )?;
            if let Some((_, address)) = found.first() {
                let stored: TantivyDocument = searcher.doc(*address)?;
                let indexed = stored
                    .get_first(self.fields.version)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                if indexed >= document.version {
                    continue;
                }
            }
            writer.writer.delete_term(term);
            writer
                .writer
                .add_document(to_document(self.fields, document))?;
            changed = true;
        }
        if changed {
            writer.writer.commit()?;
        }
        writer.writer.wait_merging_threads()?;
        Ok(())
    }

    /// The reader of the live generation, reloaded if the index changed.
    fn reader(&self) -> Result<Option<IndexReader>, SearchError> {
        let Some(generation) = self.current()? else {
            return Ok(None);
        };
        let meta = self.root.join(&generation).join("meta.json");
        let modified = std::fs::metadata(&meta).and_then(|m| m.modified()).ok();
        let mut guard = self
            .reader
            .lock()
            .map_err(|_| SearchError::Index("reader lock poisoned".into()))?;
        match guard.as_mut() {
            Some(reader) if reader.generation == generation => {
                if reader.meta_modified != modified {
                    reader.reader.reload()?;
                    reader.meta_modified = modified;
                }
            }
            _ => {
                let index = open_index(&self.root.join(&generation))?;
                let reader = index
                    .reader_builder()
                    .reload_policy(ReloadPolicy::Manual)
                    .try_into()?;
                *guard = Some(Reader {
                    generation,
                    reader,
                    meta_modified: modified,
                });
            }
        }
        Ok(guard.as_ref().map(|r| r.reader.clone()))
    }

    fn search(&self, request: &SearchRequest) -> Result<SearchPage, SearchError> {
        let mut analyzer = analyzer();
        let mut terms: Vec<String> = Vec::new();
        for word in query_words(&request.text) {
            let mut stream = analyzer.token_stream(&word);
            while let Some(token) = stream.next() {
                if !terms.contains(&token.text) {
                    terms.push(token.text.clone());
                }
            }
        }
        if terms.is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        let Some(reader) = self.reader()? else {
            return Ok(SearchPage::default());
        };
        if request.limit == 0 || request.kinds.is_empty() {
            return Ok(SearchPage::default());
        }
        let query = self.query(request, &terms);
        let searcher = reader.searcher();
        let (top, total) = searcher.search(
            &query,
            &(
                TopDocs::with_limit(request.limit)
                    .and_offset(request.offset)
                    .order_by_score(),
                Count,
            ),
        )?;
        let f = self.fields;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field: Field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let (Some(kind), Ok(id)) = (
                EntityKind::parse(&text(f.kind)),
                Uuid::parse_str(&text(f.id)),
            ) else {
                continue;
            };
            let mut highlights = Vec::new();
            for (name, field) in [("title", f.title), ("body", f.body)] {
                let value = text(field);
                if let Some(snippet) = highlight_field(&mut analyzer, &value, &terms) {
                    highlights.push(Highlight {
                        field: name.to_owned(),
                        snippet,
                    });
                }
            }
            hits.push(SearchHit {
                kind,
                id,
                score,
                status: text(f.status),
                title: text(f.title),
                version: doc
                    .get_first(f.version)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                highlights,
            });
        }
        Ok(SearchPage {
            total: total as u64,
            hits,
        })
    }

    fn query(&self, request: &SearchRequest, terms: &[String]) -> BooleanQuery {
        let f = self.fields;
        let filter = |query: Box<dyn Query>| -> (Occur, Box<dyn Query>) {
            (Occur::Must, Box::new(BoostQuery::new(query, 0.0)))
        };
        let exact = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let any_of = |field: Field, values: Vec<&str>| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(
                values
                    .into_iter()
                    .map(|v| (Occur::Should, exact(field, v)))
                    .collect(),
            ))
        };
        let mut clauses = vec![
            filter(exact(f.org, &request.organization_id.to_string())),
            filter(any_of(
                f.kind,
                request.kinds.iter().map(|k| k.as_str()).collect(),
            )),
        ];
        if !request.statuses.is_empty() {
            clauses.push(filter(any_of(
                f.status,
                request.statuses.iter().map(String::as_str).collect(),
            )));
        }
        if request.created_from.is_some() || request.created_to.is_some() {
            let bound = |at: Option<DateTime<Utc>>, inclusive: bool| match at {
                None => Bound::Unbounded,
                Some(at) => {
                    let term = Term::from_field_date_for_search(f.created, to_tantivy_date(at));
                    if inclusive {
                        Bound::Included(term)
                    } else {
                        Bound::Excluded(term)
                    }
                }
            };
            clauses.push(filter(Box::new(RangeQuery::new(
                bound(request.created_from, true),
                bound(request.created_to, false),
            ))));
        }
        for (position, term) in terms.iter().enumerate() {
            let is_last = position + 1 == terms.len();
            let distance = fuzziness(term.chars().count());
            let mut alternatives: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for (field, weight) in [(f.title, 2.0), (f.body, 1.0)] {
                let t = Term::from_field_text(field, term);
                alternatives.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(TermQuery::new(t.clone(), IndexRecordOption::WithFreqs)),
                        weight * 2.0,
                    )),
                ));
                if distance > 0 {
                    alternatives.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(
                            Box::new(FuzzyTermQuery::new(t.clone(), distance, true)),
                            weight * 0.5,
                        )),
                    ));
                }
                if is_last {
                    alternatives.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(
                            Box::new(FuzzyTermQuery::new_prefix(t, 0, true)),
                            weight,
                        )),
                    ));
                }
            }
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(alternatives))));
        }
        BooleanQuery::new(clauses)
    }

    fn begin_rebuild(&self) -> Result<TantivyBuild, SearchError> {
        let generation = self.new_generation();
        let index = create_index(&self.root.join(&generation))?;
        let writer = index.writer_with_num_threads(1, self.writer_memory)?;
        Ok(TantivyBuild {
            root: self.root.clone(),
            generation,
            writer: Some(writer),
            fields: self.fields,
        })
    }
}

fn highlight_field(analyzer: &mut TextAnalyzer, text: &str, terms: &[String]) -> Option<String> {
    let mut ranges = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        let hit = terms
            .iter()
            .enumerate()
            .any(|(i, term)| term_matches(&token.text, term, i + 1 == terms.len()));
        if hit {
            ranges.push(token.offset_from..token.offset_to);
        }
    }
    highlight(text, &ranges)
}

#[async_trait]
impl SearchEngine for TantivyEngine {
    fn name(&self) -> &'static str {
        "tantivy"
    }

    async fn upsert(&self, documents: &[SearchDocument]) -> Result<(), SearchError> {
        if documents.is_empty() {
            return Ok(());
        }
        let documents = documents.to_vec();
        self.blocking(move |inner| inner.upsert(&documents)).await
    }

    async fn search(&self, request: &SearchRequest) -> Result<SearchPage, SearchError> {
        let request = request.clone();
        self.blocking(move |inner| inner.search(&request)).await
    }

    async fn begin_rebuild(&self) -> Result<Box<dyn IndexBuild>, SearchError> {
        let build = self.blocking(|inner| inner.begin_rebuild()).await?;
        Ok(Box::new(build))
    }

    async fn live_index(&self) -> Result<Option<String>, SearchError> {
        self.blocking(|inner| inner.current()).await
    }
}

/// A generation being built by a rebuild.
pub struct TantivyBuild {
    root: PathBuf,
    generation: String,
    writer: Option<IndexWriter<TantivyDocument>>,
    fields: Fields,
}

impl std::fmt::Debug for TantivyBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TantivyBuild")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IndexBuild for TantivyBuild {
    fn index_name(&self) -> &str {
        &self.generation
    }

    async fn add(&mut self, documents: &[SearchDocument]) -> Result<(), SearchError> {
        let Some(writer) = self.writer.as_ref() else {
            return Err(SearchError::Index("rebuild already published".into()));
        };
        for document in documents {
            writer.add_document(to_document(self.fields, document))?;
        }
        Ok(())
    }

    async fn publish(mut self: Box<Self>) -> Result<(), SearchError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(SearchError::Index("rebuild already published".into()));
        };
        let root = self.root.clone();
        let generation = self.generation.clone();
        tokio::task::spawn_blocking(move || -> Result<(), SearchError> {
            writer.commit()?;
            writer.wait_merging_threads()?;
            let previous = current(&root)?;
            point_to(&root, &generation)?;
            // Keep the previous generation (a reader or writer may still
            // hold it for a moment); remove the older ones.
            for entry in std::fs::read_dir(&root).map_err(io)? {
                let entry = entry.map_err(io)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let keep = name == generation || Some(&name) == previous.as_ref();
                if !keep
                    && name.starts_with('g')
                    && entry.path().is_dir()
                    && let Err(error) = std::fs::remove_dir_all(entry.path())
                {
                    tracing::warn!(%error, generation = name, "old search index not removed");
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| SearchError::Index(format!("search task failed: {e}")))?
    }
}
