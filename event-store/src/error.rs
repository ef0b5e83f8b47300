use uuid::Uuid;

use crate::ExpectedVersion;

/// What can go wrong in the event store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another writer changed the stream first; reload and decide again.
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    ConcurrencyConflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    /// An event id is already stored with other content.
    #[error("event {event_id} is already stored with different content")]
    EventIdReused { event_id: Uuid },
    #[error("an append needs at least one event")]
    EmptyAppend,
    #[error("stream {0} appears twice in one append")]
    DuplicateStream(String),
    #[error("upcasting {event_type} from schema version {from}: {reason}")]
    Upcast {
        event_type: String,
        from: i32,
        reason: String,
    },
    /// A stored document that could not be parsed or written out again
    /// (while upcasting an event read as JSON text).
    #[error("an event's stored document: {0}")]
    Document(#[source] serde_json::Error),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl Error {
    pub fn is_concurrency_conflict(&self) -> bool {
        matches!(self, Self::ConcurrencyConflict { .. })
    }
}
