//! Connection pool and schema migrations.

use std::str::FromStr;
use std::time::Duration;

use pivotal_settings::DatabaseSettings;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    pool_options(settings)
        .connect(settings.url.expose_secret())
        .await
}

/// A pool whose every connection has PostgreSQL cancel any statement that
/// runs longer than `statement_timeout` (SQLSTATE 57014). For the APIs,
/// whose statements answer a waiting client and are short: a cancelled
/// read fails its field, a cancelled append stores nothing (an append is
/// one statement, and PostgreSQL does not time out its commit) and the
/// command is answered 503. Not for migrations, rebuilds, the relay or
/// the projectors, whose long statements are progress.
pub async fn connect_with_statement_timeout(
    settings: &DatabaseSettings,
    statement_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(settings.url.expose_secret())?.options([(
        "statement_timeout",
        statement_timeout.as_millis().to_string(),
    )]);
    pool_options(settings).connect_with(options).await
}

fn pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
}

/// Applies the event store's migrations, leaving other migrators' rows alone.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    // Versions 1000-1999. Read-model owners keep their own migrators with
    // other version ranges in the same database, hence `ignore_missing`.
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}
