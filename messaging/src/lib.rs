//! Kafka plumbing shared by the relay and the projectors. Nothing here assumes
//! a particular broker: it runs unchanged against Apache Kafka and against the
//! Kafka-compatible broker used in development and CI.
//!
//! # Layout
//!
//! - [`topics`]: topic naming (`{prefix}.{aggregate}.events`, docs/adr/0003) and
//!   creation through the Admin API.
//! - [`config`]: producer (idempotent, `acks=all`) and consumer (manual
//!   commits) client configurations.
//! - [`headers`]: the names of the message headers.

pub mod config;
pub mod headers;
pub mod topics;
