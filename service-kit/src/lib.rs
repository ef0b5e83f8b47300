//! The plumbing every service binary shares, so that each service's own crate
//! holds only its behaviour.
//!
//! - [`auth`]: bearer tokens verified against the trusted issuers' key
//!   sets, roles, and the route table that admits each route's callers.
//! - [`backoff`]: [`backoff::Backoff`], the one retry policy type: how
//!   long every retry of the platform waits.
//! - [`config`]: the settings common to all services (PostgreSQL, Kafka,
//!   logging), parsed by clap from flags or environment variables.
//! - [`consumer`]: the settings of the Kafka consumers and their batched
//!   offset commits.
//! - [`telemetry`]: structured JSON logs through `tracing`.
//! - [`db`]: the platform's PostgreSQL roles (created by `orders-db
//!   bootstrap`) and the check that a service's migrations were applied.
//! - [`deps`]: the PostgreSQL pool and Kafka client a service depends on, and
//!   the readiness check over both.
//! - [`http`]: problem documents (RFC 9457) and extractors that produce them.
//! - [`metrics`]: the metric registry every service exports (one
//!   namespace for the platform's own metrics), the request-duration
//!   histogram, the pool's gauges, and the scrape's two formats.
//! - [`ops`]: the `/health/live`, `/health/ready` and `/metrics` routes.
//! - [`progress`]: whether each worker (a consumer, the relay) keeps up:
//!   stall detection, and the restart loop under every worker, which also
//!   recreates a stalled worker's Kafka client.
//! - [`shutdown`]: one cancellation token, cancelled on SIGTERM or Ctrl-C,
//!   shared by the HTTP server and every worker loop.
//! - [`serve`]: runs an axum router until that token is cancelled.
//!
//! It also sets the global allocator of every program that links it (the
//! services and the benchmarks): mimalloc instead of the system's malloc.
//! The services allocate and free many small, short-lived buffers per
//! request (JSON documents, rows, HTTP messages), which glibc's malloc
//! serves slowly enough to show in their CPU time (BENCHMARKS.md).

pub mod auth;
pub mod backoff;
pub mod config;
pub mod consumer;
pub mod db;
pub mod deps;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod progress;
pub mod shutdown;
pub mod telemetry;

mod serve;

pub use config::CommonConfig;
pub use deps::Deps;
pub use serve::{serve, service_main};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
