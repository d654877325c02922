//! Connection pool and schema migrations.

use std::time::Duration;

use pivotal_settings::DatabaseSettings;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
        .connect(settings.url.expose_secret())
        .await
}

/// Applies the event store's migrations, leaving other migrators' rows alone.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    // Versions 1000-1999. Read-model owners keep their own migrators with
    // other version ranges in the same database, hence `ignore_missing`.
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}
