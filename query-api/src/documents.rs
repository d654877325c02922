//! Parsed GraphQL documents, kept by their text.
//!
//! A front end sends the same few operations over and over, with only the
//! variables changing, and async-graphql parses each request's text anew:
//! on the benchmark's by-id reads that parsing was 13% of the query API's
//! CPU time (its PEG parser checks the stack and a call limit at every
//! rule); with the documents kept, their copies took about 1%. [`Documents`] keeps each document that parsed, up to
//! [`MAX_TEXT`] bytes of text each and [`TEXT_BUDGET`] in all (least
//! recently used ones leave first), and hands a copy to the next request
//! with the same text. A text that failed to parse is not kept: it is
//! parsed, and refused, every time. Validation against the schema, which
//! depends on the variables, still runs for every request, as does the
//! removal of `@skip`ped fields (on the request's own copy).
//!
//! It sits behind [`crate::errors::Codes`], so a parse failure is coded
//! `GRAPHQL_PARSE_FAILED` either way. The document a request carries
//! already (a GET's, parsed to refuse a mutation) is kept like any other.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};

/// The longest text kept.
pub const MAX_TEXT: usize = 16 * 1024;
/// The texts' total length kept. A parsed document takes some 25 times its
/// text: with this budget full of short texts (about 3,000 by-id queries
/// with the id written in the text) the query API's peak RSS was about
/// 6 MiB higher.
pub const TEXT_BUDGET: u64 = 256 * 1024;

#[derive(Debug, Clone, Copy)]
struct TextBytes;

impl quick_cache::Weighter<String, ExecutableDocument> for TextBytes {
    fn weight(&self, text: &String, _: &ExecutableDocument) -> u64 {
        text.len() as u64
    }
}

/// The schema extension that keeps parsed documents.
#[derive(Clone)]
pub struct Documents {
    kept: Arc<quick_cache::sync::Cache<String, ExecutableDocument, TextBytes>>,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("kept", &self.kept.len())
            .finish()
    }
}

impl Default for Documents {
    fn default() -> Self {
        Self {
            // About 500-byte operations.
            kept: Arc::new(quick_cache::sync::Cache::with_weighter(
                512,
                TEXT_BUDGET,
                TextBytes,
            )),
        }
    }
}

impl Documents {
    /// How many documents are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

impl ExtensionFactory for Documents {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Extension for Documents {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(document) = self.kept.get(query) {
            metrics::counter!("graphql_documents_total", "parsed" => "kept").increment(1);
            return Ok(document);
        }
        let document = next.run(ctx, query, variables).await?;
        metrics::counter!("graphql_documents_total", "parsed" => "now").increment(1);
        if query.len() <= MAX_TEXT {
            self.kept.insert(query.to_owned(), document.clone());
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Request, Schema, Variables};
    use serde_json::json;

    use super::{Documents, MAX_TEXT};

    struct Query;

    #[Object]
    impl Query {
        async fn echo(&self, text: String) -> String {
            text
        }

        async fn nested(&self) -> Query {
            Query
        }
    }

    fn schema(documents: &Documents) -> Schema<Query, EmptyMutation, EmptySubscription> {
        Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(crate::errors::Codes)
            .extension(documents.clone())
            .limit_recursive_depth(8)
            .finish()
    }

    async fn run(
        schema: &Schema<Query, EmptyMutation, EmptySubscription>,
        query: &str,
        variables: serde_json::Value,
    ) -> serde_json::Value {
        let request = Request::new(query).variables(Variables::from_json(variables));
        serde_json::to_value(schema.execute(request).await).unwrap()
    }

    #[tokio::test]
    async fn a_text_parsed_once_answers_every_request_with_its_own_variables() {
        let documents = Documents::default();
        let schema = schema(&documents);
        let query = "query Q($t: String!, $s: Boolean!) { echo(text: $t) n: nested @skip(if: $s) { echo(text: $t) } }";
        let first = run(&schema, query, json!({"t": "a", "s": false})).await;
        assert_eq!(first, json!({"data": {"echo": "a", "n": {"echo": "a"}}}));
        assert_eq!(documents.len(), 1);
        // The kept copy: other variables, and a field skipped in this
        // request only.
        let second = run(&schema, query, json!({"t": "b", "s": true})).await;
        assert_eq!(second, json!({"data": {"echo": "b"}}));
        let third = run(&schema, query, json!({"t": "c", "s": false})).await;
        assert_eq!(third, json!({"data": {"echo": "c", "n": {"echo": "c"}}}));
        assert_eq!(documents.len(), 1);
        // Validation, which reads the variables, still runs for each request.
        let mistyped = run(&schema, query, json!({"t": 5, "s": false})).await;
        assert_eq!(
            mistyped["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{mistyped}"
        );
    }

    #[tokio::test]
    async fn texts_that_do_not_parse_or_are_long_are_not_kept() {
        let documents = Documents::default();
        let schema = schema(&documents);
        for _ in 0..2 {
            let broken = run(&schema, "{ echo(text: ", json!({})).await;
            assert_eq!(
                broken["errors"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED",
                "{broken}"
            );
            // Too deeply nested for the parser's limit: refused each time.
            let deep = format!(
                "{{{}echo(text: \"x\"){}}}",
                "nested {".repeat(10),
                "}".repeat(10)
            );
            let refused = run(&schema, &deep, json!({})).await;
            assert_eq!(
                refused["errors"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED",
                "{refused}"
            );
        }
        assert!(documents.is_empty());
        let long = format!("{{ echo(text: \"{}\") }}", "x".repeat(MAX_TEXT));
        let answered = run(&schema, &long, json!({})).await;
        assert_eq!(answered["data"]["echo"].as_str().unwrap().len(), MAX_TEXT);
        assert!(documents.is_empty());
    }
}
