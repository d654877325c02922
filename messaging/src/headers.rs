//! Message headers set by the relay on every event. The value of a message is
//! the JSON envelope; these duplicate what consumers route on, so that they
//! can filter without parsing the body.

pub const EVENT_ID: &str = "event-id";
pub const EVENT_TYPE: &str = "event-type";
pub const SCHEMA_VERSION: &str = "schema-version";
pub const CORRELATION_ID: &str = "correlation-id";
pub const ORGANIZATION_ID: &str = "organization-id";
/// The event's global position in the store (the consistency token).
pub const POSITION: &str = "position";
pub const CONTENT_TYPE: &str = "content-type";
