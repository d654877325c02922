//! Database set-up shared by every subcommand.

use pivotal_event_store::PgPool;
use pivotal_settings::Settings;

/// Connects and applies the event store's and the read models' migrations.
pub async fn database(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = pivotal_event_store::db::connect(&settings.database).await?;
    pivotal_event_store::db::migrate(&pool).await?;
    pivotal_projectors::db::migrate(&pool).await?;
    Ok(pool)
}
