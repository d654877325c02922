//! The Elasticsearch adapter: REST bulk, search and alias APIs.
//!
//! Queries and writes go through the alias (`search.index`). Indexes are
//! `{alias}-{generation}` with the explicit mapping below (dynamic fields
//! refused). Upserts use external versioning with the aggregate version, so
//! Elasticsearch itself refuses a lower or equal version (409, expected and
//! ignored). A rebuild fills a new index and moves the alias to it in one
//! `_aliases` call.

use async_trait::async_trait;
use chrono::Utc;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    EntityKind, Highlight, IndexBuild, SearchDocument, SearchEngine, SearchError, SearchHit,
    SearchPage, SearchRequest, query_words,
};

/// Index settings and mappings: text analyzed like the embedded engine
/// (standard tokenizer, lower case, ASCII folding), everything else exact.
pub fn index_definition() -> Value {
    json!({
        "settings": {
            "analysis": {
                "analyzer": {
                    "folding": {
                        "type": "custom",
                        "tokenizer": "standard",
                        "filter": ["lowercase", "asciifolding"]
                    }
                }
            }
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "organizationId": { "type": "keyword" },
                "kind": { "type": "keyword" },
                "id": { "type": "keyword" },
                "status": { "type": "keyword" },
                "title": { "type": "text", "analyzer": "folding" },
                "body": { "type": "text", "analyzer": "folding" },
                "createdAt": { "type": "date" },
                "version": { "type": "long" }
            }
        }
    })
}

/// The search body for `request` (the same matching rules as the embedded
/// engine: every word must match, exactly, with typos (`AUTO`), or, for the
/// last word, as a prefix; title weighted above body).
pub fn search_body(request: &SearchRequest) -> Result<Value, SearchError> {
    let words = query_words(&request.text);
    if words.is_empty() {
        return Err(SearchError::EmptyQuery);
    }
    let mut filter = vec![
        json!({ "term": { "organizationId": request.organization_id.to_string() } }),
        json!({ "terms": { "kind": request.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>() } }),
    ];
    if !request.statuses.is_empty() {
        filter.push(json!({ "terms": { "status": request.statuses } }));
    }
    if request.created_from.is_some() || request.created_to.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(from) = request.created_from {
            range.insert("gte".into(), json!(from.to_rfc3339()));
        }
        if let Some(to) = request.created_to {
            range.insert("lt".into(), json!(to.to_rfc3339()));
        }
        filter.push(json!({ "range": { "createdAt": range } }));
    }
    let last = words.len() - 1;
    let must: Vec<Value> = words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let mut should = Vec::new();
            for (field, weight) in [("title", 2.0), ("body", 1.0)] {
                should.push(json!({ "match": { field: { "query": word, "boost": weight * 2.0 } } }));
                should.push(json!({ "match": { field: {
                    "query": word, "fuzziness": "AUTO", "boost": weight * 0.5 } } }));
                if i == last {
                    should.push(
                        json!({ "match_bool_prefix": { field: { "query": word, "boost": weight } } }),
                    );
                }
            }
            json!({ "bool": { "should": should, "minimum_should_match": 1 } })
        })
        .collect();
    Ok(json!({
        "from": request.offset,
        "size": request.limit,
        "track_total_hits": true,
        "query": { "bool": { "filter": filter, "must": must } },
        "highlight": {
            "pre_tags": ["<em>"],
            "post_tags": ["</em>"],
            "encoder": "html",
            "fields": {
                "title": { "number_of_fragments": 0 },
                "body": { "number_of_fragments": 0 }
            }
        }
    }))
}

fn source(document: &SearchDocument) -> Value {
    json!({
        "organizationId": document.organization_id.to_string(),
        "kind": document.kind.as_str(),
        "id": document.id.to_string(),
        "status": document.status,
        "title": document.title,
        "body": document.body,
        "createdAt": document.created_at.to_rfc3339(),
        "version": document.version,
    })
}

/// The Elasticsearch engine.
#[derive(Debug, Clone)]
pub struct ElasticEngine {
    client: Client,
    base: String,
    alias: String,
    /// The alias is known to exist (it is never removed, only moved), so
    /// upserts stop asking.
    alias_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ElasticEngine {
    pub fn new(url: &str, alias: &str) -> Result<Self, SearchError> {
        if url.is_empty() {
            return Err(SearchError::Index(
                "search.url is required for the elasticsearch engine".into(),
            ));
        }
        let client = Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| SearchError::Index(e.to_string()))?;
        Ok(Self {
            client,
            base: url.trim_end_matches('/').to_owned(),
            alias: alias.to_owned(),
            alias_ready: std::sync::Arc::default(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<RequestBody>,
    ) -> Result<(StatusCode, Value), SearchError> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        request = match body {
            Some(RequestBody::Json(value)) => request.json(&value),
            Some(RequestBody::NdJson(text)) => request
                .header("content-type", "application/x-ndjson")
                .body(text),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| SearchError::Unavailable(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| SearchError::Unavailable(e.to_string()))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn expect_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<RequestBody>,
    ) -> Result<Value, SearchError> {
        let (status, value) = self.call(method, path, body).await?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(SearchError::Refused(format!("{status}: {value}")))
        }
    }

    fn new_index_name(&self) -> String {
        format!(
            "{}-{}-{}",
            self.alias,
            Utc::now().format("%Y%m%d%H%M%S%3f"),
            &Uuid::new_v4().simple().to_string()[..6]
        )
    }

    /// The indexes the alias points at.
    async fn aliased(&self) -> Result<Vec<String>, SearchError> {
        let (status, value) = self
            .call(Method::GET, &format!("/_alias/{}", self.alias), None)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(SearchError::Refused(format!("{status}: {value}")));
        }
        Ok(value
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Creates the first index and its alias when there is none.
    async fn ensure_alias(&self) -> Result<(), SearchError> {
        use std::sync::atomic::Ordering;
        if self.alias_ready.load(Ordering::Relaxed) || !self.aliased().await?.is_empty() {
            self.alias_ready.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let mut definition = index_definition();
        definition["aliases"] = json!({ self.alias.clone(): { "is_write_index": true } });
        let (status, value) = self
            .call(
                Method::PUT,
                &format!("/{}-initial", self.alias),
                Some(RequestBody::Json(definition)),
            )
            .await?;
        let exists = value["error"]["type"] == "resource_already_exists_exception";
        if status.is_success() || exists {
            self.alias_ready.store(true, Ordering::Relaxed);
            Ok(())
        } else {
            Err(SearchError::Refused(format!("{status}: {value}")))
        }
    }

    async fn bulk(
        &self,
        index: &str,
        documents: &[SearchDocument],
        refresh: bool,
    ) -> Result<(), SearchError> {
        let mut body = String::new();
        for document in documents {
            let action = json!({ "index": {
                "_index": index,
                "_id": document.key(),
                "version": document.version,
                "version_type": "external",
            }});
            body.push_str(&action.to_string());
            body.push('\n');
            body.push_str(&source(document).to_string());
            body.push('\n');
        }
        let path = if refresh {
            "/_bulk?refresh=wait_for"
        } else {
            "/_bulk"
        };
        let value = self
            .expect_ok(Method::POST, path, Some(RequestBody::NdJson(body)))
            .await?;
        if value["errors"] == json!(true) {
            for item in value["items"].as_array().into_iter().flatten() {
                let result = &item["index"];
                // 409: an equal or higher version is indexed already.
                if result["status"]
                    .as_u64()
                    .is_some_and(|s| s >= 300 && s != 409)
                {
                    return Err(SearchError::Refused(result["error"].to_string()));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
enum RequestBody {
    Json(Value),
    NdJson(String),
}

fn parse_hit(hit: &Value) -> Option<SearchHit> {
    let source = &hit["_source"];
    let kind = EntityKind::parse(source["kind"].as_str()?)?;
    let id = Uuid::parse_str(source["id"].as_str()?).ok()?;
    let mut highlights = Vec::new();
    for field in ["title", "body"] {
        if let Some(snippet) = hit["highlight"][field][0].as_str() {
            highlights.push(Highlight {
                field: field.to_owned(),
                snippet: snippet.to_owned(),
            });
        }
    }
    Some(SearchHit {
        kind,
        id,
        score: hit["_score"].as_f64().unwrap_or_default() as f32,
        status: source["status"].as_str().unwrap_or_default().to_owned(),
        title: source["title"].as_str().unwrap_or_default().to_owned(),
        version: source["version"].as_u64().unwrap_or_default(),
        highlights,
    })
}

#[async_trait]
impl SearchEngine for ElasticEngine {
    fn name(&self) -> &'static str {
        "elasticsearch"
    }

    async fn upsert(&self, documents: &[SearchDocument]) -> Result<(), SearchError> {
        if documents.is_empty() {
            return Ok(());
        }
        self.ensure_alias().await?;
        self.bulk(&self.alias, documents, true).await
    }

    async fn search(&self, request: &SearchRequest) -> Result<SearchPage, SearchError> {
        let body = search_body(request)?;
        if request.limit == 0 || request.kinds.is_empty() {
            return Ok(SearchPage::default());
        }
        let (status, value) = self
            .call(
                Method::POST,
                &format!("/{}/_search", self.alias),
                Some(RequestBody::Json(body)),
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            // Nothing indexed yet.
            return Ok(SearchPage::default());
        }
        if !status.is_success() {
            return Err(SearchError::Refused(format!("{status}: {value}")));
        }
        let hits = value["hits"]["hits"]
            .as_array()
            .map(|hits| hits.iter().filter_map(parse_hit).collect())
            .unwrap_or_default();
        Ok(SearchPage {
            total: value["hits"]["total"]["value"].as_u64().unwrap_or_default(),
            hits,
        })
    }

    async fn begin_rebuild(&self) -> Result<Box<dyn IndexBuild>, SearchError> {
        let name = self.new_index_name();
        self.expect_ok(
            Method::PUT,
            &format!("/{name}"),
            Some(RequestBody::Json(index_definition())),
        )
        .await?;
        Ok(Box::new(ElasticBuild {
            engine: self.clone(),
            index: name,
        }))
    }

    async fn live_index(&self) -> Result<Option<String>, SearchError> {
        Ok(self.aliased().await?.into_iter().next())
    }
}

/// A new index being filled by a rebuild.
#[derive(Debug)]
pub struct ElasticBuild {
    engine: ElasticEngine,
    index: String,
}

#[async_trait]
impl IndexBuild for ElasticBuild {
    fn index_name(&self) -> &str {
        &self.index
    }

    async fn add(&mut self, documents: &[SearchDocument]) -> Result<(), SearchError> {
        if documents.is_empty() {
            return Ok(());
        }
        self.engine.bulk(&self.index, documents, false).await
    }

    async fn publish(self: Box<Self>) -> Result<(), SearchError> {
        let engine = &self.engine;
        engine
            .expect_ok(Method::POST, &format!("/{}/_refresh", self.index), None)
            .await?;
        let previous = engine.aliased().await?;
        let mut actions: Vec<Value> = previous
            .iter()
            .map(|index| json!({ "remove": { "index": index, "alias": engine.alias } }))
            .collect();
        actions.push(
            json!({ "add": { "index": self.index, "alias": engine.alias, "is_write_index": true } }),
        );
        engine
            .expect_ok(
                Method::POST,
                "/_aliases",
                Some(RequestBody::Json(json!({ "actions": actions }))),
            )
            .await?;
        // Keep the generation just replaced; remove older ones.
        let listed = engine
            .expect_ok(
                Method::GET,
                &format!("/_cat/indices/{}-*?format=json&h=index", engine.alias),
                None,
            )
            .await?;
        for entry in listed.as_array().into_iter().flatten() {
            let Some(name) = entry["index"].as_str() else {
                continue;
            };
            if name != self.index
                && !previous.iter().any(|p| p == name)
                && let Err(error) = engine
                    .expect_ok(Method::DELETE, &format!("/{name}"), None)
                    .await
            {
                tracing::warn!(%error, index = name, "old search index not removed");
            }
        }
        Ok(())
    }
}
