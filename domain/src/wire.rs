//! How domain events travel: a type name plus a JSON object, the shape the
//! event store stores. Every event enum is adjacently tagged, so
//! `{"type": name, "data": {...}}` round-trips through serde.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::de::value::MapDeserializer;
use serde_json::Value;
use serde_json::value::RawValue;

/// A domain event enum that can be split into (type, data) and rebuilt.
pub trait Event: Serialize + DeserializeOwned + Sized {
    /// The type name stored with the event.
    fn event_type(&self) -> &'static str;

    /// The current schema version of this event type's data.
    fn schema_version(&self) -> i32 {
        1
    }

    /// The event's data, without its type name.
    fn data(&self) -> Value {
        let mut tagged = serde_json::to_value(self).expect("domain events are JSON");
        tagged["data"].take()
    }

    /// Rebuilds an event from its stored type name and data, reading the
    /// data in place (replays decode every event, so no copy is made).
    fn decode(event_type: &str, data: &(impl EventData + ?Sized)) -> Result<Self, DecodeError> {
        data.tagged(event_type).map_err(|source| DecodeError {
            event_type: event_type.to_owned(),
            source,
        })
    }
}

/// An event's stored data as [`Event::decode`] takes it: parsed into a
/// `Value`, or the JSON text the store holds, which replays decode straight
/// into the event's type without building a `Value` first.
pub trait EventData {
    /// Deserializes `{"type": event_type, "data": self}`.
    fn tagged<E: DeserializeOwned>(&self, event_type: &str) -> serde_json::Result<E>;
}

impl EventData for Value {
    fn tagged<E: DeserializeOwned>(&self, event_type: &str) -> serde_json::Result<E> {
        let tag = Value::String(event_type.to_owned());
        E::deserialize(MapDeserializer::<_, serde_json::Error>::new(
            [("type", &tag), ("data", self)].into_iter(),
        ))
    }
}

impl EventData for RawValue {
    fn tagged<E: DeserializeOwned>(&self, event_type: &str) -> serde_json::Result<E> {
        let tag = serde_json::value::to_raw_value(event_type)?;
        E::deserialize(MapDeserializer::<_, serde_json::Error>::new(
            [("type", &*tag), ("data", self)].into_iter(),
        ))
    }
}

impl<D: EventData + ?Sized> EventData for Box<D> {
    fn tagged<E: DeserializeOwned>(&self, event_type: &str) -> serde_json::Result<E> {
        (**self).tagged(event_type)
    }
}

/// A stored event that is not one of this aggregate's, or not in its shape.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode a {event_type} event: {source}")]
pub struct DecodeError {
    pub event_type: String,
    pub source: serde_json::Error,
}

/// Implements [`Event::event_type`] from the variant names.
macro_rules! event_names {
    ($enum:ident { $($variant:ident),+ $(,)? }) => {
        impl $crate::wire::Event for $enum {
            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => stringify!($variant),)+
                }
            }
        }
    };
}
pub(crate) use event_names;
