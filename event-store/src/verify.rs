//! Telling the events a broker's message claims to carry from the events the
//! store holds.
//!
//! The broker is a trust boundary: whoever can reach it can publish to the
//! events topic, and a message's content is only a claim. A message says
//! *which* event it carries (its id); what that event is (stream, version,
//! position, type, data, metadata) is read from the store, in one
//! statement per batch. A consumer acts only on the stored events
//! [`EventStore::verify`] hands back; a claim the store does not bear out
//! is set aside with why, for the consumer to count and log.

use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;

use crate::{EventStore, RecordedEvent, Result};

/// Why a message's event is not acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forgery {
    /// The store holds no event with its id.
    NotStored,
    /// The store holds an event with its id, but these fields differ.
    Differs(Vec<&'static str>),
}

impl Forgery {
    /// A short name, for a metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotStored => "not_stored",
            Self::Differs(_) => "differs",
        }
    }
}

impl fmt::Display for Forgery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStored => f.write_str("no event with its id is in the event store"),
            Self::Differs(fields) => write!(
                f,
                "it differs from the stored event with its id in {}",
                fields.join(", ")
            ),
        }
    }
}

/// An event a message claimed, that the store does not bear out.
#[derive(Debug, Clone)]
pub struct Forged<T> {
    pub claimed: RecordedEvent,
    /// Where the claim came from (the caller's tag: a message, say).
    pub origin: T,
    pub forgery: Forgery,
}

/// What [`EventStore::verify`] found.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    /// The stored events, as this process reads them (upcast), each with the
    /// tag of the claim it bears out, in the order they were claimed.
    pub genuine: Vec<(RecordedEvent, T)>,
    pub forged: Vec<Forged<T>>,
}

impl EventStore {
    /// Checks events decoded from messages against the store, with one
    /// [`EventStore::read_by_ids`] for all of them, and returns the stored
    /// events in their place (see [`Verified`]). `T` tags each claim with
    /// where it came from.
    pub async fn verify<T>(&self, claimed: Vec<(RecordedEvent, T)>) -> Result<Verified<T>> {
        let ids: Vec<Uuid> = claimed.iter().map(|(event, _)| event.event_id).collect();
        let stored = self.read_by_ids(&ids).await?;
        Ok(sort_claims(claimed, stored))
    }
}

/// Where a stored event is while claims are sorted.
enum Slot {
    Unclaimed(RecordedEvent),
    /// Moved into `genuine` at this index by an earlier claim: a batch may
    /// carry one event twice (a redelivery next to its first delivery).
    Claimed(usize),
}

fn sort_claims<T>(claimed: Vec<(RecordedEvent, T)>, stored: Vec<RecordedEvent>) -> Verified<T> {
    let mut slots: HashMap<Uuid, Slot> = stored
        .into_iter()
        .map(|event| (event.event_id, Slot::Unclaimed(event)))
        .collect();
    let mut verified = Verified {
        genuine: Vec::with_capacity(claimed.len()),
        forged: Vec::new(),
    };
    for (claim, origin) in claimed {
        let Some(slot) = slots.get_mut(&claim.event_id) else {
            verified.forged.push(Forged {
                claimed: claim,
                origin,
                forgery: Forgery::NotStored,
            });
            continue;
        };
        let stored = match slot {
            Slot::Unclaimed(event) => &*event,
            Slot::Claimed(index) => &verified.genuine[*index].0,
        };
        let fields = differing_fields(stored, &claim);
        if !fields.is_empty() {
            verified.forged.push(Forged {
                claimed: claim,
                origin,
                forgery: Forgery::Differs(fields),
            });
            continue;
        }
        let index = verified.genuine.len();
        let event = match std::mem::replace(slot, Slot::Claimed(index)) {
            Slot::Unclaimed(event) => event,
            Slot::Claimed(first) => {
                *slot = Slot::Claimed(first);
                verified.genuine[first].0.clone()
            }
        };
        verified.genuine.push((event, origin));
    }
    verified
}

/// The fields in which a claim differs from the stored event with its id.
///
/// The data is compared only at the same schema version: a relay whose
/// upcasters differ from this process's (during a rolling upgrade)
/// publishes a stored event in another shape, which is no forgery, and
/// what is acted on is the stored event as this process upcasts it. The
/// transaction id is not published, so it is not compared.
fn differing_fields(stored: &RecordedEvent, claim: &RecordedEvent) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut differs = |field, same: bool| {
        if !same {
            fields.push(field);
        }
    };
    differs("stream_id", stored.stream_id == claim.stream_id);
    differs("version", stored.version == claim.version);
    differs("position", stored.position == claim.position);
    differs("type", stored.event_type == claim.event_type);
    differs("recorded_at", stored.recorded_at == claim.recorded_at);
    differs(
        "data",
        stored.schema_version != claim.schema_version || stored.data == claim.data,
    );
    differs("metadata", stored.metadata == claim.metadata);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(stream_id: &str, version: u64) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::now_v7(),
            stream_id: stream_id.into(),
            version,
            position: 40 + version as i64,
            transaction_id: 7,
            event_type: "MoneyDeposited".into(),
            schema_version: 1,
            data: json!({ "amount_cents": 500 }),
            metadata: json!({ "correlation_id": "c", "causation_id": "c" }),
            recorded_at: chrono::Utc::now(),
        }
    }

    /// The event as a consumer decodes it from a message: the relay does not
    /// publish the transaction id.
    fn published(event: &RecordedEvent) -> RecordedEvent {
        serde_json::from_slice(&serde_json::to_vec(event).unwrap()).unwrap()
    }

    #[test]
    fn a_published_event_is_borne_out_by_the_store_and_the_stored_one_is_handed_back() {
        let event = stored("customer-a", 2);
        let verified = sort_claims(vec![(published(&event), "m1")], vec![event.clone()]);
        assert!(verified.forged.is_empty());
        assert_eq!(verified.genuine, vec![(event, "m1")]);
        assert_eq!(verified.genuine[0].0.transaction_id, 7, "the stored row");
    }

    #[test]
    fn an_event_the_store_does_not_hold_is_forged() {
        let event = stored("order-x", 1);
        let verified = sort_claims(vec![(published(&event), ())], Vec::new());
        assert!(verified.genuine.is_empty());
        assert_eq!(verified.forged.len(), 1);
        assert_eq!(verified.forged[0].forgery, Forgery::NotStored);
        assert_eq!(verified.forged[0].forgery.kind(), "not_stored");
    }

    #[test]
    fn a_stored_events_id_with_other_content_is_forged_and_names_what_differs() {
        let event = stored("customer-a", 2);
        let mut bigger = published(&event);
        bigger.data = json!({ "amount_cents": 5_000_000 });
        let mut moved = published(&event);
        moved.stream_id = "customer-b".into();
        moved.version = 1;
        let verified = sort_claims(
            vec![(bigger, 1), (moved, 2), (published(&event), 3)],
            vec![event.clone()],
        );
        assert_eq!(verified.genuine, vec![(event, 3)]);
        let forged: Vec<_> = verified
            .forged
            .iter()
            .map(|f| (f.origin, f.forgery.clone()))
            .collect();
        assert_eq!(
            forged,
            vec![
                (1, Forgery::Differs(vec!["data"])),
                (2, Forgery::Differs(vec!["stream_id", "version"])),
            ]
        );
        assert_eq!(
            verified.forged[0].forgery.to_string(),
            "it differs from the stored event with its id in data"
        );
    }

    #[test]
    fn an_event_claimed_twice_is_handed_back_twice_in_the_claimed_order() {
        let (first, second) = (stored("product-p", 1), stored("product-p", 2));
        let claims = vec![
            (published(&second), 'a'),
            (published(&first), 'b'),
            (published(&second), 'c'),
        ];
        let verified = sort_claims(claims, vec![first.clone(), second.clone()]);
        assert!(verified.forged.is_empty());
        assert_eq!(
            verified.genuine,
            vec![(second.clone(), 'a'), (first, 'b'), (second, 'c')]
        );
    }

    #[test]
    fn another_schema_version_is_no_forgery_and_the_stored_shape_is_used() {
        let event = stored("customer-a", 2);
        let mut upcast = published(&event);
        upcast.schema_version = 2;
        upcast.data = json!({ "amount": { "cents": 500 } });
        let verified = sort_claims(vec![(upcast, ())], vec![event.clone()]);
        assert!(verified.forged.is_empty());
        assert_eq!(verified.genuine, vec![(event, ())]);
    }
}
