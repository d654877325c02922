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
//! - [`organization`]: the `Organization` aggregate (the tenant): settings,
//!   security policy and custom roles.
//! - [`user`]: the `User` aggregate: profile, status, locks, roles, MFA state
//!   and login statistics. No secret ever enters its events.
//! - [`permissions`]: the RBAC model: grants of `resource:action` with
//!   conditions, the six built-in roles and [`permissions::evaluate`].
//! - [`pricing`]: the pricing engine: exact decimals, per-line rounding,
//!   discounts and tax-exclusive or tax-inclusive taxes by rate.
//! - [`rate_card`]: the `RateCard` aggregate: roles and services with rates
//!   per currency and effective dates.
//! - [`quote`]: the `Quote` aggregate: content, pricing snapshot, revisions
//!   and the approval workflow.
//! - [`catalog`]: every event type and version with its JSON Schema and a sample,
//!   the source of the committed files under `schemas/`.

pub mod catalog;
pub mod customer;
pub mod envelope;
pub mod organization;
pub mod permissions;
pub mod pricing;
pub mod quote;
pub mod rate_card;
pub mod user;
pub mod values;
