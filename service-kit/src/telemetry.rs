//! Structured logging through `tracing`.

use tracing_subscriber::EnvFilter;

/// Installs the process-wide log subscriber: JSON lines by default, or a
/// human-readable format. A second call (for example from tests that start
/// several services in one process) keeps the first subscriber.
pub fn init(format: &str, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = if format == "pretty" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
}
