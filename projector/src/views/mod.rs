//! The read models as pure folds: for each projection, the row one stream
//! folds into and how one stored event changes it. No I/O here; `store`
//! loads and writes the rows, `live` and `rebuild` feed them events.

pub mod customers;
pub mod orders;
pub mod products;
pub mod sagas;

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
    pub(crate) fn out_of_place(event: &RecordedEvent, message: &'static str) -> Self {
        Self::OutOfPlace {
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            message,
        }
    }
}

/// The projections, each owning one table and one stream category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    Orders,
    Products,
    Customers,
    Sagas,
}

impl Projection {
    pub const ALL: [Projection; 4] = [
        Projection::Orders,
        Projection::Products,
        Projection::Customers,
        Projection::Sagas,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Products => "products",
            Self::Customers => "customers",
            Self::Sagas => "sagas",
        }
    }

    pub fn parse(name: &str) -> Option<Projection> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The table the query-service reads.
    pub fn table(self) -> &'static str {
        match self {
            Self::Orders => "rm_orders",
            Self::Products => "rm_products",
            Self::Customers => "rm_customers",
            Self::Sagas => "rm_sagas",
        }
    }

    /// The stream category this projection folds.
    pub fn stream_prefix(self) -> &'static str {
        match self {
            Self::Orders => "order-",
            Self::Products => "product-",
            Self::Customers => "customer-",
            Self::Sagas => "saga-",
        }
    }

    /// The projection that folds `stream_id`, if any (shipments have none).
    pub fn for_stream(stream_id: &str) -> Option<Projection> {
        Self::ALL
            .into_iter()
            .find(|p| stream_id.starts_with(p.stream_prefix()))
    }

    /// The table's key column and its SQL type.
    pub fn key(self) -> (&'static str, &'static str) {
        match self {
            Self::Orders | Self::Sagas => ("order_id", "uuid"),
            Self::Products => ("sku", "text"),
            Self::Customers => ("customer_id", "uuid"),
        }
    }

    /// Every column with its SQL type, in table order: the record type
    /// rows are written through (`jsonb_to_recordset`).
    pub fn columns(self) -> &'static str {
        match self {
            Self::Orders => {
                "order_id uuid, customer_id uuid, status text, lines jsonb, total_cents bigint, \
                 shipping_address jsonb, rejection_reason text, tracking_number text, \
                 created_at timestamptz, updated_at timestamptz, version bigint"
            }
            Self::Products => {
                "sku text, name text, price_cents bigint, on_hand bigint, reserved bigint, \
                 available bigint, version bigint"
            }
            Self::Customers => {
                "customer_id uuid, name text, email text, balance_cents bigint, version bigint"
            }
            Self::Sagas => {
                "order_id uuid, status text, current_step text, failure_reason text, \
                 started_at timestamptz, updated_at timestamptz, finished_at timestamptz, \
                 state jsonb, detail jsonb, version bigint"
            }
        }
    }

    /// A small number naming the projection in advisory locks.
    pub fn lock_id(self) -> i32 {
        self as i32
    }
}

/// One stream's row in a projection's table.
pub trait View: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const PROJECTION: Projection;

    /// The stream version this row was built up to.
    fn version(&self) -> u64;

    /// The row a stream's first event creates.
    fn create(event: &RecordedEvent) -> Result<Self, ApplyError>;

    /// Applies the stream's next event; on error the row is unchanged.
    fn update(&mut self, event: &RecordedEvent) -> Result<(), ApplyError>;

    /// Applies `event`, the next version of the row's stream (the first
    /// when there is no row yet); on error `row` is unchanged.
    fn apply(row: &mut Option<Self>, event: &RecordedEvent) -> Result<(), ApplyError> {
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
