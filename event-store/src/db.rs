//! Connection pool and schema migrations.

use std::str::FromStr;
use std::time::Duration;

use pivotal_settings::DatabaseSettings;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// A pool whose sessions are named `application` in `pg_stat_activity`
/// (and so in the relay's warning about what holds the log horizon, and
/// in PostgreSQL's own logs), unless the URL names them itself
/// (`?application_name=...`).
pub async fn connect(
    settings: &DatabaseSettings,
    application: &str,
) -> Result<PgPool, sqlx::Error> {
    pool_options(settings)
        .connect_with(connect_options(settings, application)?)
        .await
}

/// The settings' URL's options, named as [`named_options`] names them.
fn connect_options(
    settings: &DatabaseSettings,
    application: &str,
) -> Result<PgConnectOptions, sqlx::Error> {
    named_options(settings.url.expose_secret(), application)
}

/// The options of the URL `url`, with `application_name` set to
/// `application` where the URL sets none: for pools made outside
/// [`connect`] (the benchmark's, the test environment's), so every session
/// on the server says whose it is.
pub fn named_options(url: &str, application: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(if options.get_application_name().is_some() {
        options
    } else {
        options.application_name(application)
    })
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
    application: &str,
) -> Result<PgPool, sqlx::Error> {
    connect_with_parameters(
        settings,
        application,
        &[(
            "statement_timeout",
            statement_timeout.as_millis().to_string(),
        )],
    )
    .await
}

/// A pool whose every session starts with PostgreSQL's run-time
/// parameters `parameters` (name and value) set, as the URL's `options`
/// would set them: for a process whose statements want the planner told
/// something of their data (the projector's `random_page_cost`, ADR
/// 0057). A value the server refuses fails the connection, naming it.
pub async fn connect_with_parameters(
    settings: &DatabaseSettings,
    application: &str,
    parameters: &[(&str, String)],
) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(settings, application)?.options(
        parameters
            .iter()
            .map(|(name, value)| (*name, value.as_str())),
    );
    pool_options(settings).connect_with(options).await
}

/// How long after its last use a pooled connection is handed out again
/// without a round trip to the server first (HikariCP's alive-bypass
/// window, with its default): under load every connection is back in use
/// within microseconds, and testing each one before each use was a round
/// trip more for every statement a pool runs (the pool still tests each
/// connection when it comes back, which sqlx always does). A connection
/// idle longer is tested first, so one the server closed while it sat idle
/// (a restart, an idle timeout, a failover) is replaced instead of failing
/// a request (ADR 0054).
pub const ALIVE_BYPASS_WINDOW: Duration = Duration::from_millis(500);

fn pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ALIVE_BYPASS_WINDOW {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Applies the event store's migrations, leaving other migrators' rows alone.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    // Versions 1000-1999. Read-model owners keep their own migrators with
    // other version ranges in the same database, hence `ignore_missing`.
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> DatabaseSettings {
        DatabaseSettings {
            url: url.to_owned().into(),
            max_connections: 1,
            acquire_timeout_secs: 1,
            append_writers: std::num::NonZeroUsize::MIN,
        }
    }

    #[test]
    fn sessions_are_named_after_the_process_unless_the_url_names_them() {
        let unnamed = settings("postgres://pivotal@db:5432/pivotal");
        let options = connect_options(&unnamed, "pivotal-relay").unwrap();
        assert_eq!(options.get_application_name(), Some("pivotal-relay"));
        let named = settings("postgres://pivotal@db:5432/pivotal?application_name=relay-eu-1");
        let options = connect_options(&named, "pivotal-relay").unwrap();
        assert_eq!(options.get_application_name(), Some("relay-eu-1"));
    }
}
