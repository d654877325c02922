//! Library side of the `pivotal` command: the generated files (event schemas,
//! OpenAPI document, GraphQL SDL), demo data and database set-up, shared by
//! the binary and the tests.
//!
//! # Layout
//!
//! - [`generated`]: renders and checks the committed files under `schemas/`.
//! - [`bench`]: `pivotal bench`, the benchmark with its baselines.
//! - [`speed`]: the machine's own speed, probed between the benchmark's
//!   phases.
//! - [`demo`]: the demo organization and its customers.
//! - [`setup`]: connecting and migrating every owner's tables.
//! - [`rebuild`]: `pivotal rebuild`, every kind of read model.

pub mod bench;
pub mod demo;
pub mod generated;
pub mod rebuild;
pub mod setup;
pub mod speed;
