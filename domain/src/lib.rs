//! The order platform's business rules, with no I/O.
//!
//! Each aggregate module (`product`, `customer`, `order`, `shipment`) has
//! its events (the wire format stored in the event store and published to
//! Kafka, shared by every service), its state, its commands, and two pure
//! functions: `decide(&state, command) -> Result<Vec<Event>, DomainError>`
//! and `evolve(state, &event) -> state`. Commands that would change nothing
//! (a repeated reservation for the same order, say) decide no events, which
//! is what makes the saga's steps safe to retry.
//!
//! `stream` makes every stream id (`order-<uuid>`, `product-<sku>`, ...).
//!
//! `saga` is the order fulfilment saga's record: its events (stream
//! `saga-<order uuid>`) and the state they fold into, shared by the
//! orchestrator, which writes them, and the projector, which shows them.
//!
//! Money is integer cents throughout.

pub mod customer;
mod error;
pub mod order;
pub mod product;
pub mod saga;
pub mod shipment;
pub mod stream;
mod wire;

#[cfg(test)]
mod given;

pub use error::{DomainError, RejectionReason};
pub use wire::{DecodeError, Event, EventData};

/// The largest quantity a line, reservation or restock may carry.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// The largest amount of money one price, deposit or order may carry
/// (ten billion in whole units), so no sum of them can overflow.
pub const MAX_CENTS: i64 = 1_000_000_000_000;

/// One aggregate's types and its two pure functions.
pub trait Aggregate {
    /// Names the state in stored snapshots. It is part of what is stored:
    /// unlike a Rust type name it does not change when code is renamed or
    /// built by another compiler. A snapshot under any other name is
    /// ignored and the state folded from the events again.
    const SNAPSHOT_TYPE: &'static str;

    type State: Default;
    type Command;
    type Event: Event;

    /// What happens if `command` is carried out now: the events to append,
    /// none if it would change nothing, or why it is refused.
    fn decide(state: &Self::State, command: Self::Command)
    -> Result<Vec<Self::Event>, DomainError>;

    /// The state after `event`.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
}
