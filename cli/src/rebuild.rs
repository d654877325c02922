//! `pivotal rebuild`: rebuilds read models beside the live ones and switches
//! atomically, printing a progress bar and the rate reached.

use indicatif::{ProgressBar, ProgressStyle};
use pivotal_settings::Settings;
use secrecy::ExposeSecret;
use sqlx::PgPool;

fn bar(name: &str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")?
            .progress_chars("=> "),
    );
    bar.set_message(name.to_owned());
    Ok(bar)
}

fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Rebuilds `target`: a projection's table by name, `search`, `dashboard`
/// or `all`.
pub async fn run(settings: &Settings, pool: &PgPool, target: &str) -> anyhow::Result<()> {
    let tables: Vec<_> = pivotal_projectors::all_projections()
        .into_iter()
        // The search projection only queues work for the indexer; its
        // rebuild is the index rebuild below.
        .filter(|p| p.name() != "search")
        .filter(|p| target == "all" || p.name() == target)
        .collect();
    let search = target == "all" || target == "search";
    let dashboard = target == "all" || target == "dashboard";
    if tables.is_empty() && !search && !dashboard {
        let mut known: Vec<&str> = pivotal_projectors::all_projections()
            .iter()
            .map(|p| p.name())
            .filter(|n| *n != "search")
            .collect();
        known.extend(["search", "dashboard", "all"]);
        anyhow::bail!(
            "unknown read model {target:?}; one of: {}",
            known.join(", ")
        );
    }
    for projection in tables {
        let bar = bar(projection.name())?;
        let report =
            pivotal_projectors::framework::rebuild(pool, projection.as_ref(), Some(&bar)).await?;
        bar.finish();
        println!(
            "{}: {} events replayed, {} applied in {:.2} s ({:.0} events/s)",
            projection.name(),
            report.events,
            report.applied,
            report.seconds,
            report.events_per_second()
        );
    }
    if dashboard {
        let client = redis::Client::open(settings.redis.url.expose_secret())?;
        let mut redis = client.get_connection_manager().await?;
        let bar = bar("dashboard")?;
        let report = pivotal_projectors::dashboard::rebuild(
            pool,
            &mut redis,
            &settings.redis.key_prefix,
            Some(&bar),
        )
        .await?;
        bar.finish();
        println!(
            "dashboard: {} records into generation {} in {:.2} s ({:.0} records/s)",
            report.records,
            report.generation,
            report.seconds,
            rate(report.records, report.seconds)
        );
    }
    if search {
        let engine = pivotal_search::open(&settings.search)?;
        let bar = bar("search")?;
        let report =
            pivotal_projectors::search::rebuild_index(pool, engine.as_ref(), Some(&bar)).await?;
        bar.finish();
        println!(
            "search: {} documents into index {} ({}) in {:.2} s ({:.0} documents/s)",
            report.documents,
            report.index,
            engine.name(),
            report.seconds,
            rate(report.documents, report.seconds)
        );
    }
    Ok(())
}
