//! The values the store takes and returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

/// What the caller expects a stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// The expectation of a caller that read the stream at `version`
    /// (0: the stream did not exist).
    pub fn at(version: u64) -> Self {
        match version {
            0 => Self::NoStream,
            v => Self::Exact(v),
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Who caused an event and in which conversation; free keys are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub correlation_id: String,
    pub causation_id: String,
    /// W3C trace context of the request that caused the event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl Metadata {
    /// The field naming who wrote an event (a token's subject, or the
    /// process that wrote on its own account).
    pub const ACTOR: &'static str = "actor";

    /// This metadata with `actor` as who wrote the event.
    pub fn with_actor(mut self, actor: &str) -> Self {
        self.extra
            .insert(Self::ACTOR.to_owned(), Value::from(actor));
        self
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique; appending the same id again with the same content returns the
    /// first result instead of storing a duplicate.
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Metadata,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, data: Value, metadata: Metadata) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata,
        }
    }

    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    pub fn with_schema_version(mut self, schema_version: i32) -> Self {
        self.schema_version = schema_version;
        self
    }
}

/// The events to append to one stream, with the version it must be at.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    pub fn new(
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        Self {
            stream_id: stream_id.into(),
            expected,
            events,
        }
    }
}

/// Where one appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub event_id: Uuid,
    pub version: u64,
    pub position: i64,
}

/// A place in the global read order: everything up to and including this
/// (transaction, position) pair has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Checkpoint {
    pub transaction_id: i64,
    pub position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const START: Checkpoint = Checkpoint {
        transaction_id: 0,
        position: 0,
    };
}

/// An event as stored. `D` holds its two documents, `data` and
/// `metadata`: parsed (`Value`, the default), or as the JSON text the store
/// holds ([`RawEvent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent<D = Value> {
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: u64,
    pub position: i64,
    /// The writing transaction; with `position` it orders the global log.
    #[serde(skip)]
    pub transaction_id: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub data: D,
    pub metadata: D,
    pub recorded_at: DateTime<Utc>,
}

/// An event with its documents left as the JSON text the store holds: what
/// a reader that passes them on (the relay) or decodes them straight into
/// its own types (a rebuild) takes, so that no `Value` is built for them.
/// It serializes to the same JSON as a [`RecordedEvent`].
pub type RawEvent = RecordedEvent<Box<RawValue>>;

impl<D> RecordedEvent<D> {
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }

    /// The event with both its documents turned by `convert`.
    fn map_documents<E, Err>(
        self,
        convert: impl Fn(D) -> Result<E, Err>,
    ) -> Result<RecordedEvent<E>, Err> {
        Ok(RecordedEvent {
            data: convert(self.data)?,
            metadata: convert(self.metadata)?,
            event_id: self.event_id,
            stream_id: self.stream_id,
            version: self.version,
            position: self.position,
            transaction_id: self.transaction_id,
            event_type: self.event_type,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
        })
    }
}

impl RawEvent {
    /// The event with its documents parsed.
    pub fn parse(self) -> serde_json::Result<RecordedEvent> {
        self.map_documents(|document| serde_json::from_str(document.get()))
    }

    /// The W3C trace context in the metadata, if any (see
    /// [`Metadata::traceparent`]); the rest of the document is skipped
    /// over, not parsed into values.
    pub fn traceparent(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Trace {
            traceparent: Option<String>,
        }
        serde_json::from_str::<Trace>(self.metadata.get())
            .ok()?
            .traceparent
    }
}

impl RecordedEvent {
    /// The event with its documents as JSON text.
    pub fn to_raw(self) -> serde_json::Result<RawEvent> {
        self.map_documents(|document| serde_json::value::to_raw_value(&document))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(metadata: Value) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::now_v7(),
            stream_id: "order-1".into(),
            version: 3,
            position: 17,
            transaction_id: 9,
            event_type: "OrderPlaced".into(),
            schema_version: 2,
            data: json!({ "total_cents": 1250, "note": "café \"x\" \n" }),
            metadata,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn a_raw_event_serializes_as_the_parsed_one_and_parses_back_to_it() {
        let parsed = event(json!({ "correlation_id": "c", "causation_id": "d" }));
        let raw = parsed.clone().to_raw().unwrap();
        assert_eq!(
            serde_json::to_value(&raw).unwrap(),
            serde_json::to_value(&parsed).unwrap()
        );
        assert_eq!(raw.checkpoint(), parsed.checkpoint());
        assert_eq!(raw.parse().unwrap(), parsed);
    }

    #[test]
    fn a_raw_events_trace_context_is_read_from_its_metadata() {
        let traced = event(json!({
            "correlation_id": "c",
            "nested": { "traceparent": "not this one" },
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        }));
        assert_eq!(
            traced.to_raw().unwrap().traceparent().as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let untraced = event(json!({ "correlation_id": "c" }));
        assert_eq!(untraced.to_raw().unwrap().traceparent(), None);
        assert_eq!(event(json!(null)).to_raw().unwrap().traceparent(), None);
    }
}
