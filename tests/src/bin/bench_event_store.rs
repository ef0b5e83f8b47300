//! Event store benchmarks, each against its floor measured in the same run
//! on the same database:
//!
//! - appends of 1 and 10 events with 1 and 16 concurrent writers, against
//!   plain multi-row `INSERT`s of the same rows into an equivalent table;
//! - reading the whole log in global order (documents parsed, as JSON text,
//!   and as JSON text from one streamed query), against `COPY` out of the
//!   events table;
//! - the relay publishing to the broker, against a bare idempotent producer
//!   sending the same payloads, without headers and with the relay's
//!   CloudEvents headers.
//!
//! It also reports each process's peak resident memory.
//!
//! Run with `make bench-event-store` (see BENCHMARKS.md). PostgreSQL keeps
//! its default durability (fsync on) here, unlike in the tests.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use event_relay::{self as relay, RelayConfig, RelayMetrics};
use event_store::{Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use futures::{StreamExt, TryStreamExt};
use harness::infra;
use harness::memory::PeakMemory;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "Event store benchmarks against PostgreSQL and broker floors")]
struct Args {
    /// Seconds each append case runs (store and floor alike).
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Events in the log for the read-all comparison.
    #[arg(long, default_value_t = 500_000)]
    read_events: u64,
    /// Rounds of each comparison; the median of each side is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Events the relay publishes.
    #[arg(long, default_value_t = 50_000)]
    relay_events: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    harness::bench::main(run(args))
}

/// Starts the containers, measures, and removes the containers again
/// (each measurement stops its own Kafka clients first).
async fn run(args: Args) -> anyhow::Result<()> {
    let bench = infra::start_for_benchmark().await?;
    let result = measure(&bench, &args).await;
    drop(bench);
    result
}

async fn measure(bench: &infra::BenchInfra, args: &Args) -> anyhow::Result<()> {
    let (pg_base, brokers) = (bench.pg_base.clone(), bench.brokers.clone());
    let watch = PeakMemory::watch(bench)?;

    let mut rows = Vec::new();
    let pool = database(&pg_base, "bench_append").await?;
    let store = EventStore::new(pool.clone());
    store.migrate().await?;
    sqlx::query(
        "create table floor_events (like events including defaults including identity
                                    including constraints including indexes)",
    )
    .execute(&pool)
    .await?;
    for (writers, batch) in [(1, 1), (16, 1), (1, 10), (16, 10)] {
        let duration = Duration::from_secs(args.seconds);
        let (mut floors, mut ours) = (Vec::new(), Vec::new());
        // Alternate floor and store so that both see the same machine.
        for _ in 0..args.rounds {
            sqlx::query("truncate floor_events").execute(&pool).await?;
            floors.push({
                let pool = pool.clone();
                run_writers(writers, duration, move |w, i| {
                    floor_insert(pool.clone(), w, i, batch)
                })
                .await
            });
            ours.push({
                let store = store.clone();
                run_writers(writers, duration, move |w, i| {
                    store_append(store.clone(), w, i, batch)
                })
                .await
            });
        }
        let (ours, floor) = (median(ours), median(floors));
        eprintln!("append {batch}x{writers}: {ours:.0} vs floor {floor:.0} events/s");
        rows.push(row(
            &format!("append, {batch} event(s) per append, {writers} writer(s)"),
            "events/s",
            ours,
            floor,
            "plain INSERT",
        ));
    }

    let pool = database(&pg_base, "bench_read").await?;
    let store = EventStore::new(pool.clone());
    store.migrate().await?;
    fill(&pool, args.read_events).await?;
    let (mut copies, mut reads, mut raw_reads, mut streamed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        copies.push(copy_out(&pool).await?);
        reads.push(read_all(&store, Parsed).await?);
        raw_reads.push(read_all(&store, Raw).await?);
        streamed.push(stream_all(&store).await?);
    }
    let copies = median(copies);
    rows.push(row(
        "read all in global order, documents parsed (`read_all`)",
        "events/s",
        median(reads),
        copies,
        "COPY out",
    ));
    rows.push(row(
        "read all in global order, documents as stored JSON text (`read_all_raw`)",
        "events/s",
        median(raw_reads),
        copies,
        "COPY out",
    ));
    rows.push(row(
        "read all in global order, as JSON text, one streamed query (`stream_all_raw`)",
        "events/s",
        median(streamed),
        copies,
        "COPY out",
    ));

    let pool = database(&pg_base, "bench_relay").await?;
    let store = EventStore::new(pool.clone());
    store.migrate().await?;
    fill(&pool, args.relay_events).await?;
    let producer = bare_producer(&brokers, &store, None).await?;
    let with_headers = bare_producer(&brokers, &store, Some(RELAY_SOURCE)).await?;
    let relayed = relay_all(&brokers, &store, args.relay_events).await?;
    rows.push(row(
        "relay to the broker (CloudEvents)",
        "events/s",
        relayed,
        producer,
        "bare producer",
    ));
    rows.push(row(
        "relay to the broker (CloudEvents)",
        "events/s",
        relayed,
        with_headers,
        "bare producer, same headers",
    ));

    println!("| case | ours | floor | ratio |");
    println!("|---|---|---|---|");
    for line in rows {
        println!("{line}");
    }
    println!();
    println!("{}", watch.report("the event store benchmarks").await?);
    Ok(())
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn row(case: &str, unit: &str, ours: f64, floor: f64, floor_name: &str) -> String {
    format!(
        "| {case} | {ours:.0} {unit} | {floor:.0} {unit} ({floor_name}) | {:.0}% |",
        100.0 * ours / floor
    )
}

async fn database(base: &str, name: &str) -> anyhow::Result<PgPool> {
    let url = infra::create_database(base, name).await?;
    Ok(PgPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await?)
}

/// Runs `writers` tasks for `duration`, each calling `body(writer,
/// iteration)` in a loop; returns events written per second.
async fn run_writers<F, Fut>(writers: usize, duration: Duration, body: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let body = Arc::new(body);
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (body, written) = (Arc::clone(&body), Arc::clone(&written));
        tasks.spawn(async move {
            let mut iteration = 0;
            while Instant::now() < deadline {
                let n = body(writer, iteration).await.expect("writing");
                written.fetch_add(n, Ordering::Relaxed);
                iteration += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    written.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn metadata() -> Metadata {
    Metadata {
        correlation_id: Uuid::new_v4().to_string(),
        causation_id: Uuid::new_v4().to_string(),
        ..Metadata::default()
    }
}

fn payload(i: u64) -> serde_json::Value {
    json!({ "sku": format!("sku-{}", i % 100), "quantity": i % 7 + 1, "order_id": Uuid::new_v4() })
}

async fn store_append(
    store: EventStore,
    writer: usize,
    iteration: u64,
    batch: usize,
) -> anyhow::Result<u64> {
    let events = (0..batch as u64)
        .map(|i| NewEvent::new("InventoryReserved", payload(i), metadata()))
        .collect();
    // Twenty streams per writer: appends land on existing, growing streams.
    let stream = format!("product-w{writer}-{}", iteration % 20);
    store
        .append(&[StreamAppend::new(stream, ExpectedVersion::Any, events)])
        .await?;
    Ok(batch as u64)
}

/// The same rows as `store_append`, inserted with one plain multi-row
/// `INSERT` (versions chosen by the client, nothing checked).
async fn floor_insert(
    pool: PgPool,
    writer: usize,
    iteration: u64,
    batch: usize,
) -> anyhow::Result<u64> {
    let stream = format!("floor-w{writer}-{iteration}");
    let ids: Vec<Uuid> = (0..batch).map(|_| Uuid::now_v7()).collect();
    let streams = vec![stream; batch];
    let versions: Vec<i64> = (1..=batch as i64).collect();
    let types = vec!["InventoryReserved"; batch];
    let schema_versions = vec![1i32; batch];
    let data: Vec<serde_json::Value> = (0..batch as u64).map(payload).collect();
    let metadata: Vec<serde_json::Value> = (0..batch)
        .map(|_| serde_json::to_value(metadata()).expect("json"))
        .collect();
    sqlx::query(
        "insert into floor_events (event_id, stream_id, version, type, schema_version, data, metadata)
         select * from unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[])",
    )
    .bind(&ids)
    .bind(&streams)
    .bind(&versions)
    .bind(&types)
    .bind(&schema_versions)
    .bind(&data)
    .bind(&metadata)
    .execute(&pool)
    .await?;
    Ok(batch as u64)
}

/// Fills the log with `events` events over 1,000 streams, 50,000 per
/// transaction.
async fn fill(pool: &PgPool, events: u64) -> anyhow::Result<()> {
    eprintln!("filling the log with {events} events");
    let mut from = 0i64;
    while (from as u64) < events {
        let to = (from + 50_000).min(events as i64) - 1;
        sqlx::query(
            "insert into events (event_id, stream_id, version, type, schema_version, data, metadata)
             select gen_random_uuid(), 'product-' || (g % 1000), g / 1000 + 1, 'InventoryReserved', 1,
                    jsonb_build_object('sku', 'sku-' || (g % 100), 'quantity', g % 7 + 1,
                                       'order_id', gen_random_uuid()),
                    jsonb_build_object('correlation_id', gen_random_uuid(),
                                       'causation_id', gen_random_uuid())
             from generate_series($1::bigint, $2::bigint) g",
        )
        .bind(from)
        .bind(to)
        .execute(pool)
        .await
        .context("filling the log")?;
        from = to + 1;
    }
    sqlx::query("vacuum analyze events").execute(pool).await?;
    Ok(())
}

async fn copy_out(pool: &PgPool) -> anyhow::Result<f64> {
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut rows = 0u64;
    let mut stream = conn.copy_out_raw("copy events to stdout").await?;
    while let Some(chunk) = stream.try_next().await? {
        rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// How [`read_all`] reads the documents.
#[derive(Clone, Copy)]
enum Documents {
    Parsed,
    Raw,
}
use Documents::{Parsed, Raw};

async fn read_all(store: &EventStore, documents: Documents) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut after = Checkpoint::START;
    let mut read = 0u64;
    loop {
        let (last, count) = match documents {
            Parsed => {
                let batch = store.read_all(after, 5_000).await?;
                (batch.last().map(|e| e.checkpoint()), batch.len())
            }
            Raw => {
                let batch = store.read_all_raw(after, 5_000).await?;
                (batch.last().map(|e| e.checkpoint()), batch.len())
            }
        };
        let Some(last) = last else { break };
        after = last;
        read += count as u64;
    }
    Ok(read as f64 / started.elapsed().as_secs_f64())
}

/// The whole log through [`EventStore::stream_all_raw`], metadata included.
async fn stream_all(store: &EventStore) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut events = store.stream_all_raw(Checkpoint::START, true);
    let mut read = 0u64;
    while let Some(event) = events.next().await {
        event?;
        read += 1;
    }
    Ok(read as f64 / started.elapsed().as_secs_f64())
}

fn kafka(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("log_level", "3");
    config
}

/// The CloudEvents `source` the relay is given here.
const RELAY_SOURCE: &str = "/bench";

/// Publishes the same payloads as the relay would, straight from memory;
/// with the relay's CloudEvents headers (built as it sends, as the relay
/// does) when `source` is given.
async fn bare_producer(
    brokers: &str,
    store: &EventStore,
    source: Option<&str>,
) -> anyhow::Result<f64> {
    let mut payloads = Vec::new();
    let mut after = Checkpoint::START;
    loop {
        let batch = store.read_all_raw(after, 5_000).await?;
        let Some(last) = batch.last() else { break };
        after = last.checkpoint();
        for event in batch {
            let payload = serde_json::to_vec(&event)?;
            payloads.push((event, payload));
        }
    }
    let topic = if source.is_some() {
        "bench.floor-headers"
    } else {
        "bench.floor"
    };
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        kafka(brokers).create()?;
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                topic,
                6,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await?;
    let producer: FutureProducer = kafka(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let started = Instant::now();
    for chunk in payloads.chunks(1_000) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for (event, payload) in chunk {
            let record = FutureRecord::to(topic)
                .key(event.stream_id.as_str())
                .payload(payload.as_slice());
            let record = match source {
                Some(source) => record.headers(relay::cloudevents_headers(source, event)),
                None => record,
            };
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for delivery in deliveries {
            delivery.await?.map_err(|(e, _)| e)?;
        }
    }
    Ok(payloads.len() as f64 / started.elapsed().as_secs_f64())
}

async fn relay_all(brokers: &str, store: &EventStore, events: u64) -> anyhow::Result<f64> {
    let stop = CancellationToken::new();
    let metrics = RelayMetrics::default();
    let config = RelayConfig::new("bench.events", RELAY_SOURCE);
    let started = Instant::now();
    let relay = tokio::spawn(relay::run(
        store.clone(),
        kafka(brokers),
        config,
        metrics.clone(),
        |_| std::future::pending(),
        stop.clone(),
    ));
    let deadline = started + Duration::from_secs(600);
    while metrics.published.get() < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    // Stopped (its producer flushed and closed) whether or not it finished.
    stop.cancel();
    relay.await?;
    anyhow::ensure!(
        metrics.published.get() >= events,
        "the relay published only {} in {elapsed:?}",
        metrics.published.get()
    );
    Ok(events as f64 / elapsed.as_secs_f64())
}
