//! The PostgreSQL event store.
//!
//! Commands run through cqrs-es on postgres-es's `events` table, which the
//! project's own migrations extend with a global log order (`tx_id`,
//! `global_position`), a UUIDv7 `event_id` and the time of recording. See
//! `docs/adr/0002-event-log-order.md` for why the log is read below the
//! snapshot's `xmin` horizon.
//!
//! # Layout
//!
//! - [`db`]: connection pool and migrations.
//! - [`commands`]: [`commands::AggregateStore`] runs a command on its aggregate with an
//!   optional expected version, appends its events in one statement and
//!   reports them with their global positions
//!   (`docs/adr/0027-one-statement-appends.md`); it remembers the state
//!   its last commit left each aggregate in (within a bound in bytes per
//!   type), as a hint the
//!   store's sequence check keeps honest
//!   (`docs/adr/0023-remembered-aggregates.md`).
//! - [`appends`]: the appends of commands that arrive while every writer
//!   is busy share one statement and one commit
//!   (`docs/adr/0038-appends-share-a-statement.md`).
//! - [`turns`]: commands on one aggregate run one at a time within a
//!   process, so they do not collide with each other
//!   (`docs/adr/0036-commands-take-turns-per-aggregate.md`).
//! - [`log`]: the ordered, gap-free reading of the log that the relay and
//!   rebuilds follow, and the relay's checkpoints.
//! - [`idempotency`]: stored responses for requests that carry an idempotency key.

pub mod appends;
pub mod commands;
pub mod db;
pub mod idempotency;
pub mod log;
pub mod turns;

pub use sqlx::PgPool;
