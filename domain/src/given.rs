//! given/when/then for the aggregates' unit tests:
//! `given::<Product>([events]).when(command).then([events])`.

use crate::{Aggregate, DomainError};

pub struct Given<A: Aggregate> {
    state: A::State,
}

pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let state = events
        .into_iter()
        .fold(A::State::default(), |s, e| A::evolve(s, &e));
    Given { state }
}

pub struct When<A: Aggregate> {
    outcome: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: A::Command) -> When<A> {
        When {
            outcome: A::decide(&self.state, command),
        }
    }
}

impl<A: Aggregate> When<A>
where
    A::Event: std::fmt::Debug + PartialEq,
{
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        assert_eq!(self.outcome, Ok(expected));
    }

    /// The command is accepted and changes nothing (a repeat).
    #[track_caller]
    pub fn then_nothing(self) {
        self.then([]);
    }

    #[track_caller]
    pub fn then_error(self, expected: DomainError) {
        assert_eq!(self.outcome, Err(expected));
    }
}
