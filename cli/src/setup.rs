//! Database set-up shared by every subcommand.

use pivotal_event_store::PgPool;
use pivotal_settings::Settings;

/// Connects to a database that `pivotal migrate` has prepared, its sessions
/// named `application` unless the URL names them. Long-running processes
/// do not migrate at start-up: that is one step (a Job), run once.
pub async fn connect(settings: &Settings, application: &str) -> anyhow::Result<PgPool> {
    Ok(pivotal_event_store::db::connect(&settings.database, application).await?)
}

/// Connects and applies the event store's and the read models' migrations.
pub async fn database(settings: &Settings, application: &str) -> anyhow::Result<PgPool> {
    let pool = connect(settings, application).await?;
    pivotal_event_store::db::migrate(&pool).await?;
    pivotal_projectors::db::migrate(&pool).await?;
    Ok(pool)
}
