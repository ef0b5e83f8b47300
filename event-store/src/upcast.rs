//! Schema evolution: functions that turn an event's data from one schema
//! version into the next, applied on read so callers only see the current
//! shape. Stored events are never rewritten.

use std::collections::HashMap;

use serde_json::Value;

use crate::{Error, RecordedEvent, Result};

type Step = Box<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// Upcasters registered per event type and schema version.
#[derive(Default)]
pub struct Upcasters {
    steps: HashMap<(String, i32), Step>,
}

impl Upcasters {
    /// Registers the step that turns `event_type` data of schema version
    /// `from` into version `from + 1`. Steps chain: a v1 event passes
    /// through 1→2, 2→3, ... until no step is registered.
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        from: i32,
        step: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.steps.insert((event_type.into(), from), Box::new(step));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether an event of this type and schema version would be changed.
    pub fn applies(&self, event_type: &str, schema_version: i32) -> bool {
        !self.is_empty()
            && self
                .steps
                .contains_key(&(event_type.to_owned(), schema_version))
    }

    pub fn upcast(&self, mut event: RecordedEvent) -> Result<RecordedEvent> {
        while let Some(step) = self
            .steps
            .get(&(event.event_type.clone(), event.schema_version))
        {
            event.data = step(event.data).map_err(|reason| Error::Upcast {
                event_type: event.event_type.clone(),
                from: event.schema_version,
                reason,
            })?;
            event.schema_version += 1;
        }
        Ok(event)
    }
}
