//! An ordered event log on PostgreSQL: appends with optimistic concurrency,
//! reads of one stream or of the whole log in global order without gaps, and
//! the relay that publishes the log to Kafka.
//!
//! The log itself is built under the event-store issue; until then this crate
//! is an empty member of the workspace.
