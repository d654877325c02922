//! Pure business logic of Pivotal Flow.
//!
//! Nothing in this crate performs I/O: it holds the aggregates, their commands
//! and events, the value objects that make invalid input unrepresentable, the
//! event envelope shared by every process, and the permission rules.
//!
//! # Layout
//!
//! - [`values`]: value objects parsed at the edge (email, ISO 4217 currency,
//!   ISO 3166 country, phone, names, tags) and [`values::FieldError`], the
//!   field-level validation error with a JSON pointer.
//! - [`envelope`]: the event envelope (`IBaseEvent` / `IEventMetadata` of the
//!   architecture document) and the [`envelope::Actor`] who issues a command.
//! - [`customer`]: the `Customer` aggregate (cqrs-es), its commands, events and
//!   errors.
//! - [`permissions`]: `resource:action` permissions and the check used by the
//!   APIs.
//! - [`catalog`]: every event type and version with its JSON Schema and a sample,
//!   the source of the committed files under `schemas/`.

pub mod catalog;
pub mod customer;
pub mod envelope;
pub mod permissions;
pub mod values;
