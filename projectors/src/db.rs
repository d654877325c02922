//! The projector's connections, and the read models' migrations
//! (versions 2000-2999).

use pivotal_settings::Settings;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The projector's pool: sessions named `application`, whose planner
/// prices a page read out of order at `projector.random_page_cost`
/// (ADR 0057). The projector looks a batch's rows up by key in read
/// models that are in memory; at the server's default of 4 the planner
/// priced a few hundred index probes above a scan of the whole table,
/// and scanned it for every batch.
pub async fn connect(settings: &Settings, application: &str) -> Result<PgPool, sqlx::Error> {
    pivotal_event_store::db::connect_with_parameters(
        &settings.database,
        application,
        &[(
            "random_page_cost",
            settings.projector.random_page_cost.get().to_string(),
        )],
    )
    .await
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}
