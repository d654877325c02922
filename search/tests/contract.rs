//! The engine contract, run against the embedded engine always and against
//! Elasticsearch when `PIVOTAL_TEST_ELASTICSEARCH_URL` names a cluster
//! (`docker compose -f docker-compose.kafka.yml run --rm search-contract`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use pivotal_search::elastic::ElasticEngine;
use pivotal_search::tantivy_engine::TantivyEngine;
use pivotal_search::{EntityKind, SearchDocument, SearchEngine, SearchError, SearchRequest};
use uuid::Uuid;

fn engines() -> Vec<(Arc<dyn SearchEngine>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut engines: Vec<(Arc<dyn SearchEngine>, Option<tempfile::TempDir>)> = vec![(
        Arc::new(TantivyEngine::open(dir.path(), 20).unwrap()),
        Some(dir),
    )];
    if let Ok(url) = std::env::var("PIVOTAL_TEST_ELASTICSEARCH_URL") {
        let alias = format!("pf-contract-{}", Uuid::new_v4().simple());
        engines.push((Arc::new(ElasticEngine::new(&url, &alias).unwrap()), None));
    }
    engines
}

fn doc(org: Uuid, kind: EntityKind, title: &str, body: &str, version: u64) -> SearchDocument {
    SearchDocument {
        organization_id: org,
        kind,
        id: Uuid::new_v4(),
        version,
        status: "active".into(),
        title: title.into(),
        body: body.into(),
        created_at: Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
    }
}

fn request(org: Uuid, text: &str) -> SearchRequest {
    SearchRequest {
        organization_id: org,
        text: text.into(),
        kinds: EntityKind::ALL.to_vec(),
        statuses: vec![],
        created_from: None,
        created_to: None,
        offset: 0,
        limit: 10,
    }
}

async fn titles(engine: &dyn SearchEngine, request: &SearchRequest) -> Vec<String> {
    engine
        .search(request)
        .await
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.title)
        .collect()
}

#[tokio::test]
async fn exact_prefix_and_typo_matches_with_highlights() {
    for (engine, _dir) in engines() {
        let org = Uuid::new_v4();
        engine
            .upsert(&[
                doc(
                    org,
                    EntityKind::Customer,
                    "Harbour Lights Ltd",
                    "ana@harbour.test",
                    1,
                ),
                doc(
                    org,
                    EntityKind::Customer,
                    "Kauri Timber",
                    "orders@kauri.test",
                    1,
                ),
                doc(
                    org,
                    EntityKind::User,
                    "Zoë Müller",
                    "zoe@pivotal.test manager",
                    1,
                ),
            ])
            .await
            .unwrap();
        let name = engine.name();
        assert_eq!(
            titles(engine.as_ref(), &request(org, "kauri")).await,
            ["Kauri Timber"],
            "{name}: exact"
        );
        assert_eq!(
            titles(engine.as_ref(), &request(org, "Harb")).await,
            ["Harbour Lights Ltd"],
            "{name}: prefix"
        );
        assert_eq!(
            titles(engine.as_ref(), &request(org, "harbuor lights")).await,
            ["Harbour Lights Ltd"],
            "{name}: transposed letters"
        );
        assert_eq!(
            titles(engine.as_ref(), &request(org, "timbr")).await,
            ["Kauri Timber"],
            "{name}: missing letter"
        );
        assert_eq!(
            titles(engine.as_ref(), &request(org, "muller")).await,
            ["Zoë Müller"],
            "{name}: accents fold"
        );
        assert!(
            titles(engine.as_ref(), &request(org, "kauri harbour"))
                .await
                .is_empty(),
            "{name}: every word must match"
        );
        let page = engine.search(&request(org, "harbour")).await.unwrap();
        assert_eq!(page.total, 1);
        let hit = &page.hits[0];
        assert_eq!(hit.kind, EntityKind::Customer);
        let title = hit
            .highlights
            .iter()
            .find(|h| h.field == "title")
            .map(|h| h.snippet.as_str());
        assert_eq!(
            title,
            Some("<em>Harbour</em> Lights Ltd"),
            "{name}: title highlight"
        );
        let body = hit
            .highlights
            .iter()
            .find(|h| h.field == "body")
            .map(|h| h.snippet.as_str());
        assert!(
            body.is_some_and(|b| b.contains("<em>harbour</em>")),
            "{name}: body highlight {body:?}"
        );
    }
}

#[tokio::test]
async fn organizations_never_see_each_other() {
    for (engine, _dir) in engines() {
        let (mine, theirs) = (Uuid::new_v4(), Uuid::new_v4());
        engine
            .upsert(&[
                doc(mine, EntityKind::Customer, "Shared Name Co", "", 1),
                doc(theirs, EntityKind::Customer, "Shared Name Co", "", 1),
                doc(
                    theirs,
                    EntityKind::Quote,
                    "Q-2026-0001 Secret project",
                    "",
                    1,
                ),
            ])
            .await
            .unwrap();
        let page = engine.search(&request(mine, "shared")).await.unwrap();
        assert_eq!(page.total, 1, "{}", engine.name());
        assert!(
            engine
                .search(&request(mine, "secret"))
                .await
                .unwrap()
                .hits
                .is_empty()
        );
        assert!(
            engine
                .search(&request(Uuid::new_v4(), "shared"))
                .await
                .unwrap()
                .hits
                .is_empty()
        );
    }
}

#[tokio::test]
async fn versions_only_move_forward() {
    for (engine, _dir) in engines() {
        let org = Uuid::new_v4();
        let mut document = doc(org, EntityKind::Customer, "Original Name", "", 2);
        engine.upsert(&[document.clone()]).await.unwrap();
        // A redelivered older version changes nothing.
        let mut older = document.clone();
        older.version = 1;
        older.title = "Stale Name".into();
        engine.upsert(&[older]).await.unwrap();
        assert_eq!(
            titles(engine.as_ref(), &request(org, "original")).await,
            ["Original Name"]
        );
        assert!(
            titles(engine.as_ref(), &request(org, "stale"))
                .await
                .is_empty()
        );
        // The next version replaces it; the old text is gone.
        document.version = 3;
        document.title = "Renamed Co".into();
        engine
            .upsert(&[document.clone(), document.clone()])
            .await
            .unwrap();
        assert_eq!(
            titles(engine.as_ref(), &request(org, "renamed")).await,
            ["Renamed Co"]
        );
        assert!(
            titles(engine.as_ref(), &request(org, "original"))
                .await
                .is_empty()
        );
        let page = engine.search(&request(org, "renamed")).await.unwrap();
        assert_eq!(page.hits[0].version, 3);
    }
}

#[tokio::test]
async fn filters_by_kind_status_and_date_and_pages() {
    for (engine, _dir) in engines() {
        let org = Uuid::new_v4();
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut documents = Vec::new();
        for i in 0..25 {
            let mut d = doc(org, EntityKind::Quote, &format!("Fitout stage {i}"), "", 1);
            d.status = if i % 2 == 0 { "draft" } else { "sent" }.into();
            d.created_at = base + Duration::days(i);
            documents.push(d);
        }
        documents.push(doc(org, EntityKind::Customer, "Fitout Partners", "", 1));
        engine.upsert(&documents).await.unwrap();
        let name = engine.name();
        let all = engine.search(&request(org, "fitout")).await.unwrap();
        assert_eq!(all.total, 26, "{name}");
        let mut quotes = request(org, "fitout");
        quotes.kinds = vec![EntityKind::Quote];
        assert_eq!(engine.search(&quotes).await.unwrap().total, 25, "{name}");
        quotes.statuses = vec!["sent".into()];
        assert_eq!(engine.search(&quotes).await.unwrap().total, 12, "{name}");
        quotes.statuses.clear();
        quotes.created_from = Some(base + Duration::days(10));
        quotes.created_to = Some(base + Duration::days(15));
        assert_eq!(
            engine.search(&quotes).await.unwrap().total,
            5,
            "{name}: from inclusive, to exclusive"
        );
        // Bounds as far off as the API reads (four-digit years) are taken:
        // every quote lies between them (the embedded engine keeps instants
        // in 64-bit nanoseconds, from 1677 to 2262).
        for (from, to) in [((1293, 10, 25), (9999, 12, 31)), ((1, 1, 1), (2262, 4, 12))] {
            quotes.created_from = Some(
                Utc.with_ymd_and_hms(from.0, from.1, from.2, 0, 0, 0)
                    .unwrap(),
            );
            quotes.created_to = Some(Utc.with_ymd_and_hms(to.0, to.1, to.2, 0, 0, 0).unwrap());
            assert_eq!(
                engine.search(&quotes).await.unwrap().total,
                25,
                "{name}: {from:?} to {to:?}"
            );
        }
        quotes.created_from = Some(Utc.with_ymd_and_hms(1000, 1, 1, 0, 0, 0).unwrap());
        quotes.created_to = Some(Utc.with_ymd_and_hms(1600, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(engine.search(&quotes).await.unwrap().total, 0, "{name}");
        // Pages of 10 cover every hit once.
        let mut seen = std::collections::HashSet::new();
        for offset in [0, 10, 20] {
            let mut page = request(org, "fitout");
            page.offset = offset;
            for hit in engine.search(&page).await.unwrap().hits {
                assert!(seen.insert(hit.id), "{name}: a hit appeared on two pages");
            }
        }
        assert_eq!(seen.len(), 26, "{name}");
    }
}

#[tokio::test]
async fn an_empty_query_is_refused() {
    for (engine, _dir) in engines() {
        let error = engine
            .search(&request(Uuid::new_v4(), " -- "))
            .await
            .unwrap_err();
        assert!(
            matches!(error, SearchError::EmptyQuery),
            "{}: {error}",
            engine.name()
        );
    }
}

#[tokio::test]
async fn a_rebuild_switches_atomically_while_searches_continue() {
    for (engine, _dir) in engines() {
        let org = Uuid::new_v4();
        engine
            .upsert(&[doc(org, EntityKind::Customer, "Before Rebuild", "", 1)])
            .await
            .unwrap();
        let live_before = engine.live_index().await.unwrap();
        let mut build = engine.begin_rebuild().await.unwrap();
        build
            .add(&[doc(org, EntityKind::Customer, "After Rebuild", "", 1)])
            .await
            .unwrap();
        // The live index answers until the new one is published.
        assert_eq!(
            titles(engine.as_ref(), &request(org, "rebuild")).await,
            ["Before Rebuild"]
        );
        let new_name = build.index_name().to_owned();
        build.publish().await.unwrap();
        assert_eq!(
            engine.live_index().await.unwrap().as_deref(),
            Some(new_name.as_str())
        );
        assert_ne!(live_before.as_deref(), Some(new_name.as_str()));
        assert_eq!(
            titles(engine.as_ref(), &request(org, "rebuild")).await,
            ["After Rebuild"]
        );
        // Upserts go to the new index from now on.
        engine
            .upsert(&[doc(org, EntityKind::Customer, "Later Rebuild", "", 1)])
            .await
            .unwrap();
        let mut later = titles(engine.as_ref(), &request(org, "rebuild")).await;
        later.sort();
        assert_eq!(
            later,
            ["After Rebuild", "Later Rebuild"],
            "{}",
            engine.name()
        );
    }
}

/// The query API opens the embedded index the projector writes: another
/// engine on the same directory sees each commit at the next search, and
/// follows a rebuild to the new generation.
#[tokio::test]
async fn another_process_sees_commits_and_switches_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let writer = TantivyEngine::open(dir.path(), 20).unwrap();
    let reader = TantivyEngine::open(dir.path(), 20).unwrap();
    let org = Uuid::new_v4();
    assert!(
        titles(&reader, &request(org, "alpha")).await.is_empty(),
        "no index yet"
    );
    writer
        .upsert(&[doc(org, EntityKind::Customer, "Alpha Co", "", 1)])
        .await
        .unwrap();
    assert_eq!(titles(&reader, &request(org, "alpha")).await, ["Alpha Co"]);
    let mut build = writer.begin_rebuild().await.unwrap();
    build
        .add(&[doc(org, EntityKind::Customer, "Alpha Rebuilt", "", 1)])
        .await
        .unwrap();
    build.publish().await.unwrap();
    assert_eq!(
        titles(&reader, &request(org, "alpha")).await,
        ["Alpha Rebuilt"]
    );
}
