//! The command API over HTTP against a real PostgreSQL: happy paths, every
//! error status, optimistic concurrency and idempotency.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod access;
mod concurrency;
mod contract;
mod customers;
mod errors;
mod event_size;
mod helpers;
mod identity;
mod pool;
mod quotes;
