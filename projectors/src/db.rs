//! Migrations of the read models (versions 2000-2999).

use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}
