//! What a message on the events topic holds, for the relay that writes it
//! and the consumers that read it.

use anyhow::Context;
use event_store::{RawEvent, RecordedEvent};
use rdkafka::message::{Header, OwnedHeaders};

/// What the relay puts in a Kafka message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageFormat {
    /// One event per message, keyed by its stream id, with the CloudEvents
    /// binary-mode headers (`ce_specversion`, `ce_id`, `ce_source`,
    /// `ce_type`, `ce_time`, `ce_subject`, `content-type`) and
    /// `traceparent` when the event carries one.
    #[default]
    CloudEvents,
    /// One event per message, keyed by its stream id, without headers: a
    /// broker that stores every header as a row of its own (tansu with
    /// sqlite) publishes and serves several times more events per second.
    Plain,
    /// The events of one publish round and partition in one message, a
    /// JSON array in log order, without key or headers. tansu's work goes
    /// with the number of records (it inserts each one and queries its
    /// headers on every fetch), so it does much less work for the same
    /// events (BENCHMARKS.md).
    /// Consumers see fewer, larger messages.
    Batch,
}

impl MessageFormat {
    /// The names the settings use.
    pub const NAMES: [&str; 3] = ["cloudevents", "plain", "batch"];
}

impl std::str::FromStr for MessageFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "cloudevents" => Ok(Self::CloudEvents),
            "plain" => Ok(Self::Plain),
            "batch" => Ok(Self::Batch),
            other => Err(format!(
                "unknown message format {other:?}; one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// The largest batch message the relay builds, in bytes of JSON; a round's
/// events beyond it go into further messages (an event larger than this
/// goes alone). Well under the 1 MB that brokers and librdkafka accept by
/// default.
pub const BATCH_MESSAGE_BYTES: usize = 256 * 1024;

/// The partition of a stream's events: the CRC-32 of its id modulo the
/// partition count, which is what librdkafka's default partitioner
/// (`consistent_random`) picks for that key, so a topic filled before the
/// relay chose partitions itself keeps every stream where it was.
pub fn partition_of(stream_id: &str, partitions: i32) -> i32 {
    const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    (CRC32.checksum(stream_id.as_bytes()) % partitions.max(1) as u32) as i32
}

/// The events a message holds: one event or, from a [`MessageFormat::Batch`]
/// relay, a JSON array of them.
/// Logs a message whose event the event store does not bear out (see
/// `event_store::EventStore::verify`): where it came from, what it
/// claimed and why it is ignored.
pub fn warn_forged(
    message: &impl rdkafka::Message,
    claimed: &RecordedEvent,
    forgery: &event_store::Forgery,
) {
    tracing::warn!(
        topic = %message.topic(), partition = message.partition(), offset = message.offset(),
        event_id = %claimed.event_id, stream_id = %claimed.stream_id,
        event_type = %claimed.event_type, reason = %forgery,
        "a message's event is not in the event store as claimed; ignored"
    );
}

pub fn decode(payload: &[u8]) -> serde_json::Result<Vec<RecordedEvent>> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(payload),
        _ => serde_json::from_slice(payload).map(|event| vec![event]),
    }
}

/// The events of `batch` grouped by partition, each group as JSON arrays
/// of at most [`BATCH_MESSAGE_BYTES`] (or one event), in log order.
pub(crate) fn batch_messages(
    batch: &[RawEvent],
    partitions: i32,
) -> anyhow::Result<Vec<(i32, Vec<u8>)>> {
    let mut open: Vec<Option<Vec<u8>>> = vec![None; partitions.max(1) as usize];
    let mut messages = Vec::new();
    let mut json = Vec::new();
    for event in batch {
        let partition = partition_of(&event.stream_id, partitions);
        json.clear();
        serde_json::to_writer(&mut json, event).context("encoding an event")?;
        let slot = &mut open[partition as usize];
        if let Some(message) = slot
            && message.len() + 1 + json.len() + 1 > BATCH_MESSAGE_BYTES
        {
            messages.push((partition, close(slot.take().expect("open"))));
        }
        match slot {
            Some(message) => {
                message.push(b',');
                message.extend_from_slice(&json);
            }
            None => {
                let mut message = Vec::with_capacity(BATCH_MESSAGE_BYTES.min(json.len() * 64));
                message.push(b'[');
                message.extend_from_slice(&json);
                *slot = Some(message);
            }
        }
    }
    for (partition, slot) in open.into_iter().enumerate() {
        if let Some(message) = slot {
            messages.push((partition as i32, close(message)));
        }
    }
    Ok(messages)
}

fn close(mut message: Vec<u8>) -> Vec<u8> {
    message.push(b']');
    message
}

/// The CloudEvents binary-mode headers of an event published from `source`.
pub fn cloudevents_headers(source: &str, event: &RawEvent) -> OwnedHeaders {
    let id = event.event_id.to_string();
    let time = event
        .recorded_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let traceparent = event.traceparent();
    [
        ("ce_specversion", "1.0"),
        ("ce_id", id.as_str()),
        ("ce_source", source),
        ("ce_type", event.event_type.as_str()),
        ("ce_time", time.as_str()),
        ("ce_subject", event.stream_id.as_str()),
        ("content-type", "application/json"),
    ]
    .into_iter()
    .chain(traceparent.as_deref().map(|value| ("traceparent", value)))
    .fold(
        OwnedHeaders::new_with_capacity(8),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(stream_id: &str, version: u64, filler: usize) -> RawEvent {
        RecordedEvent {
            event_id: uuid::Uuid::now_v7(),
            stream_id: stream_id.into(),
            version,
            position: version as i64,
            transaction_id: 1,
            event_type: "Numbered".into(),
            schema_version: 1,
            data: json!({ "n": version, "filler": "x".repeat(filler) }),
            metadata: json!({ "correlation_id": "c", "causation_id": "c" }),
            recorded_at: chrono::Utc::now(),
        }
        .to_raw()
        .unwrap()
    }

    #[test]
    fn partitions_are_chosen_as_librdkafka_chooses_them_for_a_key() {
        // The CRC-32 check value: crc32("123456789") = 0xCBF43926.
        assert_eq!(
            partition_of("123456789", 1_000_003),
            (0xCBF4_3926_u32 % 1_000_003) as i32
        );
        assert_eq!(partition_of("123456789", 7), (0xCBF4_3926_u32 % 7) as i32);
        for stream in ["order-1", "product-SKU-1", "saga-2"] {
            assert!((0..2).contains(&partition_of(stream, 2)));
            assert_eq!(partition_of(stream, 1), 0);
        }
    }

    #[test]
    fn a_batch_message_holds_one_partitions_events_in_log_order() {
        let streams = ["order-a", "order-b", "product-c", "customer-d", "saga-e"];
        let batch: Vec<RawEvent> = (0..20)
            .map(|i| event(streams[i % streams.len()], i as u64, 10))
            .collect();
        let messages = batch_messages(&batch, 2).unwrap();
        assert!(messages.len() <= 2, "one message per partition");
        let mut seen = Vec::new();
        for (partition, payload) in &messages {
            let events = decode(payload).unwrap();
            assert!(!events.is_empty());
            for event in &events {
                assert_eq!(partition_of(&event.stream_id, 2), *partition);
            }
            let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
            assert!(
                versions.is_sorted(),
                "log order within a message: {versions:?}"
            );
            seen.extend(versions);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>(), "every event once");
    }

    #[test]
    fn a_large_round_is_split_into_messages_of_bounded_size_and_a_huge_event_goes_alone() {
        let mut batch: Vec<RawEvent> = (0..100).map(|i| event("order-a", i, 10_000)).collect();
        batch.push(event("order-a", 100, 2 * BATCH_MESSAGE_BYTES));
        batch.push(event("order-a", 101, 10));
        let messages = batch_messages(&batch, 1).unwrap();
        let mut versions = Vec::new();
        for (_, payload) in &messages {
            let events = decode(payload).unwrap();
            assert!(payload.len() <= BATCH_MESSAGE_BYTES || events.len() == 1);
            versions.extend(events.iter().map(|e| e.version));
        }
        assert!(messages.len() >= 5, "{} messages", messages.len());
        assert_eq!(versions, (0..102).collect::<Vec<_>>());
    }

    #[test]
    fn decode_reads_a_single_event_and_an_array() {
        let one = event("order-a", 1, 0);
        let single = serde_json::to_vec(&one).unwrap();
        assert_eq!(decode(&single).unwrap()[0].event_id, one.event_id);
        let array = batch_messages(std::slice::from_ref(&one), 1).unwrap();
        assert_eq!(decode(&array[0].1).unwrap()[0].event_id, one.event_id);
        assert!(decode(b"not json").is_err());
        assert!(decode(b"[{\"nope\": 1}]").is_err());
    }
}
