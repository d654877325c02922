//! Fault injection for tests: a fatal error raised on a live librdkafka
//! client, the way librdkafka raises one itself.
//!
//! An idempotent producer that meets an error it cannot recover from
//! (a broker that lost acknowledged records, say) raises a fatal error:
//! from then on it refuses and fails every record. No broker can be made to
//! do that on demand, so librdkafka provides `rd_kafka_test_fatal_error`
//! for applications to test how they handle it. rust-rdkafka exposes it only
//! as a raw binding, so this crate is the one place in the workspace that
//! allows unsafe code (ADR 0028), and only tests depend on it.
//!
//! # Layout
//!
//! - [`raise_fatal_error`]: the one entry point.

use std::ffi::CStr;

use rdkafka::bindings::rd_kafka_test_fatal_error;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;

/// Raises a fatal error on `client` with `reason`, as librdkafka does when
/// an idempotent producer finds its sequence broken on the broker
/// (`OUT_OF_ORDER_SEQUENCE_NUMBER`). Afterwards `client.fatal_error()`
/// reports it, and a producer refuses every record.
///
/// # Errors
///
/// librdkafka's refusal: `PreviousInProgress` when the client already has
/// a fatal error.
pub fn raise_fatal_error<C: ClientContext>(
    client: &Client<C>,
    reason: &CStr,
) -> Result<(), RDKafkaErrorCode> {
    #[allow(unsafe_code)]
    // SAFETY: `client.native_ptr()` is the live handle `client` owns for as
    // long as the borrow lasts, and `reason` is a NUL-terminated string
    // that outlives the call (librdkafka copies it).
    let code = unsafe {
        rd_kafka_test_fatal_error(
            client.native_ptr(),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    match RDKafkaErrorCode::from(code) {
        RDKafkaErrorCode::NoError => Ok(()),
        refused => Err(refused),
    }
}
