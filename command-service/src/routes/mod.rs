//! The public write API of ../shared/CONTRACT.md, one module per resource.

pub mod customers;
pub mod orders;
pub mod products;
pub mod steps;
pub mod streams;
pub mod trace;
