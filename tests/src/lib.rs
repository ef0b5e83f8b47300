//! Test harness for the platform's integration tests.
//!
//! - [`infra`] starts PostgreSQL and a Kafka-protocol broker in containers
//!   with testcontainers, once per test binary, from the image names that
//!   `make test` recorded (or `POSTGRES_IMAGE` / `KAFKA_IMAGE` /
//!   `KAFKA_KIND`).
//! - [`TestEnv`] gives each test its own database and topic prefix on those
//!   shared containers, so tests run in parallel without seeing each other.
//! - [`services`] starts the real services in-process on port 0.
//! - [`proxy`] puts a fault-injecting HTTP proxy in front of a service.
//! - [`platform`] starts every service on one [`TestEnv`], ready.
//! - [`gateway`] puts the real gateway (nginx, from compose's template) in
//!   front of them.
//! - [`prometheus`] runs a real Prometheus (Debian's, with compose's start
//!   script and alert rules) scraping them, and finds `promtool`.
//! - [`browser`] drives a headless Chromium through chromedriver
//!   (WebDriver), for the console's tests.
//! - [`otlp`] receives the spans every test's services export (the test
//!   binary's telemetry is installed once, exporting there).
//! - [`eventually`] is the only way tests wait: bounded polling with a
//!   deadline.
//!
//! Logs stay silent unless `TEST_LOG=1`.

pub mod auth;
pub mod bench;
pub mod browser;
pub mod chaos;
pub mod gateway;
pub mod infra;
pub mod memory;
pub mod otlp;
pub mod platform;
pub mod prometheus;
pub mod proxy;
pub mod services;

mod env;
mod wait;

pub use env::TestEnv;
pub use wait::eventually;
