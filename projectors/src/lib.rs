//! Projectors: Kafka consumer-group members that turn published events into
//! read models.
//!
//! Each message is applied by every projection that follows its aggregate
//! type, inside one PostgreSQL transaction per batch that also records, per
//! projection, the last applied version of each aggregate (except for the
//! search queue, which is idempotent and keeps none) and the next Kafka
//! offset. Redelivered events are therefore no-ops, the versions an event
//! skips are read from the event store and applied before it (a topic can
//! hold a record sent again after its successors), and Kafka offsets are
//! committed only after the transaction. The read models outside PostgreSQL keep the same contract by
//! writing idempotently by version: the search index
//! through a pending queue written in the batch transaction, the Redis
//! dashboard through per-record versions checked in Redis itself.
//!
//! # Layout
//!
//! - [`framework`]: the [`framework::Projection`] trait, version bookkeeping,
//!   the consumer loop ([`framework::run`]) and rebuilds ([`framework::rebuild`]).
//! - [`customers`]: the `rm_customers` read model.
//! - [`identity`]: the `rm_organizations` and `rm_users` read models.
//! - [`quotes`]: the `rm_rate_cards` and `rm_quotes` read models.
//! - [`search`]: the search projection, its indexer and index rebuilds.
//! - [`dashboard`]: per-organization counters and recent changes in Redis.
//! - [`membership`]: the consumer's place in its group, for `/readyz`.
//! - [`unconsumed`]: partitions no member of the group consumes, and the rejoin that mends it.
//! - [`redis_link`]: the Redis connection of the post-commit work, left
//!   alone for a while after a failure so an outage never slows a batch.
//! - [`db`]: the projector's connection pool (its planner costs, ADR 0057)
//!   and the read models' migrations.

pub mod customers;
pub mod dashboard;
pub mod db;
pub mod framework;
pub mod identity;
pub mod membership;
pub mod quotes;
pub mod redis_link;
pub mod search;
pub mod unconsumed;

/// Every projection this process runs.
pub fn all_projections() -> Vec<Box<dyn framework::Projection>> {
    vec![
        Box::new(customers::CustomersProjection),
        Box::new(identity::OrganizationsProjection),
        Box::new(identity::UsersProjection),
        Box::new(quotes::RateCardsProjection),
        Box::new(quotes::QuotesProjection),
        // After the read models: it reads nothing, but records what the
        // indexer must take from them once the batch commits.
        Box::new(search::SearchProjection),
    ]
}
