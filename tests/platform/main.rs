//! Integration tests of the whole platform, one binary with a module per
//! area. Each test gets its own database and topic prefix from
//! `harness::TestEnv`; the containers are shared.

mod api_docs;
mod broker;
mod broker_trust;
mod chaos;
mod console;
mod customers;
mod daily_sales;
mod database_roles;
mod event_store;
mod gateway;
mod health;
mod jwks_rotation;
mod metrics;
mod read_side;
mod relay;
mod sagas;
mod schemathesis;
mod security;
mod stalls;
mod steps;
mod traces;
mod write_api;
