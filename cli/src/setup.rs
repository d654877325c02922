//! Database set-up shared by every subcommand.

use pivotal_event_store::PgPool;
use pivotal_settings::Settings;

/// Connects to a database that `pivotal migrate` has prepared. Long-running
/// processes do not migrate at start-up: that is one step (a Job), run once.
pub async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    Ok(pivotal_event_store::db::connect(&settings.database).await?)
}

/// Connects and applies the event store's and the read models' migrations.
pub async fn database(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = connect(settings).await?;
    pivotal_event_store::db::migrate(&pool).await?;
    pivotal_projectors::db::migrate(&pool).await?;
    Ok(pool)
}
