//! Logging for every process: `tracing` with JSON lines (or a readable format
//! for development), filtered by the configured directive or `RUST_LOG`.
//!
//! # Layout
//!
//! - [`init`]: installs the global subscriber once per process.

use pivotal_settings::LogSettings;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), so tests that start several processes in one binary may call it.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = if settings.format == "pretty" {
        builder.compact().try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
}
