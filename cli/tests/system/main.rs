//! The whole pipeline on real services: command API, event store, relay,
//! Kafka, projectors, read model and GraphQL, including concurrency and
//! crashes of the relay and projector processes.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod alerts;
mod broker_outage;
mod cache;
mod crashes;
mod dashboard;
mod end_to_end;
mod faults;
mod gaps;
mod harness;
mod horizon;
mod live;
mod observability;
mod ordering;
mod private_postgres;
mod producer_errors;
mod quotes;
mod read_your_writes;
mod rebuild;
mod search;
mod secrets;
mod traces;
