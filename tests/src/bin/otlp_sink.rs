//! An OTLP/HTTP sink: takes `POST /v1/traces` in any encoding, answers 200
//! and discards it, printing every 10 s how many requests and bytes it took.
//! For measuring the cost of exporting spans (BENCHMARKS.md) where no
//! collector can be pulled.
//!
//! `otlp-sink [ADDRESS]`, by default `127.0.0.1:4318` (OTLP/HTTP's port).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;

#[derive(Default)]
struct Taken {
    requests: AtomicU64,
    bytes: AtomicU64,
}

async fn take(State(taken): State<Arc<Taken>>, body: Bytes) {
    taken.requests.fetch_add(1, Ordering::Relaxed);
    taken.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4318".into());
    let taken = Arc::new(Taken::default());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!("otlp-sink: listening on {address}");
    let report = Arc::clone(&taken);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        loop {
            every.tick().await;
            eprintln!(
                "otlp-sink: {} requests, {} bytes",
                report.requests.load(Ordering::Relaxed),
                report.bytes.load(Ordering::Relaxed)
            );
        }
    });
    let app = Router::new()
        .route("/v1/traces", post(take))
        .with_state(taken);
    axum::serve(listener, app).await?;
    Ok(())
}
