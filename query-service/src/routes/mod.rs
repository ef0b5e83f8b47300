pub mod customers;
pub mod orders;
pub mod products;
pub mod reports;
pub mod sagas;
