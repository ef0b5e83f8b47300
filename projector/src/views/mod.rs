//! The read models as pure folds: for each projection, the row one stream
//! folds into and how one stored event changes it. No I/O here; `store`
//! loads and writes the rows, `live` and `rebuild` feed them events.

pub mod customers;
pub mod daily_sales;
pub mod orders;
pub mod products;
pub mod sagas;

use domain::EventData;
use event_store::RecordedEvent;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why an event cannot be applied; the message goes to the dead-letter
/// table with this as its reason.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Decode(#[from] domain::DecodeError),
    #[error("{event_type} at version {version} of {stream_id}: {message}")]
    OutOfPlace {
        stream_id: String,
        version: u64,
        event_type: String,
        message: &'static str,
    },
}

impl ApplyError {
    pub(crate) fn out_of_place<D>(event: &RecordedEvent<D>, message: &'static str) -> Self {
        Self::OutOfPlace {
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            message,
        }
    }
}

/// What a read model declares about itself (its table, columns, stream
/// category and key); each view holds its own (`View::DECLARATION`), from
/// the `read-models` crate the query-service reads too.
pub use read_models::Declaration;

/// The registry of read models: each variant names one view type, and
/// [`Projection::with_view`] is the only place that maps one to the other.
/// Adding a read model is a view module, its declaration in `read-models`,
/// a variant here (at the end: the order gives the advisory lock ids) with
/// its line in `with_view` and `ALL`, and a migration making its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    Orders,
    Products,
    Customers,
    Sagas,
    DailySales,
}

/// Something done with a read model's view type (see
/// [`Projection::with_view`]).
pub trait WithView {
    type Output;
    fn with<V: View>(self) -> Self::Output;
}

struct Declared;

impl WithView for Declared {
    type Output = Declaration;
    fn with<V: View>(self) -> Declaration {
        V::DECLARATION
    }
}

impl Projection {
    pub const ALL: [Projection; 5] = [
        Projection::Orders,
        Projection::Products,
        Projection::Customers,
        Projection::Sagas,
        Projection::DailySales,
    ];

    /// Runs `action` with this read model's view type.
    pub fn with_view<W: WithView>(self, action: W) -> W::Output {
        match self {
            Self::Orders => action.with::<orders::OrderRow>(),
            Self::Products => action.with::<products::ProductRow>(),
            Self::Customers => action.with::<customers::CustomerRow>(),
            Self::Sagas => action.with::<sagas::SagaRow>(),
            Self::DailySales => action.with::<daily_sales::OrderSales>(),
        }
    }

    pub fn declaration(self) -> Declaration {
        self.with_view(Declared)
    }

    pub fn name(self) -> &'static str {
        self.declaration().name
    }

    pub fn parse(name: &str) -> Option<Projection> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The table the query-service reads.
    pub fn table(self) -> &'static str {
        self.declaration().table
    }

    /// The stream category this projection folds.
    pub fn stream_prefix(self) -> &'static str {
        self.declaration().stream_prefix
    }

    /// Every projection that folds `stream_id` (none for shipments; one
    /// stream may feed several).
    pub fn taking(stream_id: &str) -> impl Iterator<Item = Projection> + '_ {
        Self::ALL
            .into_iter()
            .filter(move |p| p.declaration().takes(stream_id))
    }

    /// A small number naming the projection in advisory locks.
    pub fn lock_id(self) -> i32 {
        self as i32
    }
}

/// One stream's row in a projection's table.
pub trait View: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const DECLARATION: Declaration;

    /// The stream version this row was built up to.
    fn version(&self) -> u64;

    /// The row a stream's first event creates.
    fn create<D: EventData>(event: &RecordedEvent<D>) -> Result<Self, ApplyError>;

    /// Applies the stream's next event; on error the row is unchanged.
    fn update<D: EventData>(&mut self, event: &RecordedEvent<D>) -> Result<(), ApplyError>;

    /// Applies `event`, the next version of the row's stream (the first
    /// when there is no row yet); on error `row` is unchanged.
    fn apply<D: EventData>(
        row: &mut Option<Self>,
        event: &RecordedEvent<D>,
    ) -> Result<(), ApplyError> {
        match row {
            None => *row = Some(Self::create(event)?),
            Some(existing) => existing.update(event)?,
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use chrono::{DateTime, TimeZone, Utc};
    use domain::Event;
    use event_store::RecordedEvent;
    use uuid::Uuid;

    /// A stored event as the relay would deliver it.
    pub fn recorded(stream_id: &str, version: u64, event: &impl Event) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::new_v4(),
            stream_id: stream_id.to_owned(),
            version,
            position: version as i64,
            transaction_id: 1,
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            data: event.data(),
            metadata: serde_json::json!({"correlation_id": "c", "causation_id": "c"}),
            recorded_at: at(version),
        }
    }

    pub fn at(second: u64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000 + second as i64, 0).unwrap()
    }

    /// Folds events in order, panicking on the first that does not apply.
    pub fn fold<V: super::View>(events: &[RecordedEvent]) -> V {
        let mut row = None;
        for event in events {
            V::apply(&mut row, event).unwrap();
        }
        row.expect("at least one event")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn an_order_stream_feeds_both_read_models_that_take_it() {
        let taking: Vec<Projection> = Projection::taking("order-1").collect();
        assert_eq!(taking, [Projection::Orders, Projection::DailySales]);
        assert_eq!(
            Projection::taking("saga-1").collect::<Vec<_>>(),
            [Projection::Sagas]
        );
        assert_eq!(Projection::taking("shipment-1").count(), 0);
    }

    #[test]
    fn names_tables_and_locks_name_one_read_model_each() {
        let all = Projection::ALL;
        let distinct = |values: Vec<String>| values.iter().collect::<HashSet<_>>().len();
        assert_eq!(
            distinct(all.map(|p| p.name().to_owned()).to_vec()),
            all.len()
        );
        assert_eq!(
            distinct(all.map(|p| p.table().to_owned()).to_vec()),
            all.len()
        );
        assert_eq!(
            distinct(all.map(|p| p.lock_id().to_string()).to_vec()),
            all.len()
        );
        for projection in all {
            assert_eq!(Projection::parse(projection.name()), Some(projection));
        }
    }

    #[test]
    fn every_declaration_has_its_key_and_version_among_its_columns() {
        for projection in Projection::ALL {
            let declaration = projection.declaration();
            let columns: Vec<&str> = declaration.column_names().collect();
            assert_eq!(
                columns.first(),
                Some(&declaration.key.0),
                "{}",
                declaration.name
            );
            assert!(columns.contains(&"version"), "{}", declaration.name);
        }
    }
}
