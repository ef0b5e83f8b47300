//! The saga's steps, declared once: [`SagaStep`] names them in the order
//! they run, and [`SagaStep::spec`] gives each its row (its name, the step
//! API actions that carry it out and undo it, the business refusal it can
//! raise). Everything else, in every crate, reads the row, so adding a step
//! is adding a variant, its row (the `match` in `spec` does not compile
//! without it) and its handler in command-service.
//!
//! [`PerStep`] holds one value per step, keyed by step, for the state kept
//! about each (attempts, times).

use std::ops::{Index, IndexMut};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::api::{Action, action};
use crate::RejectionReason;

/// The saga's steps, in the order they run. Compensation runs them
/// backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SagaStep {
    ReserveInventory,
    ChargePayment,
    CreateShipment,
}

/// One step's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSpec {
    /// Its name in events, read models and the contract's `steps` (serde's
    /// name for the variant; a test keeps the two equal).
    pub name: &'static str,
    /// The step API action that carries it out.
    pub run: Action,
    /// The step API action that undoes it; `None` for a step with nothing
    /// to undo, which compensation passes over.
    pub undo: Option<Action>,
    /// The business refusal the step can raise (its code is the order's
    /// `rejection_reason`); a step that fails for good in another way
    /// (past its deadline) rejects the order with it too.
    pub refusal: RejectionReason,
    /// Whether the detail of its success is the order's tracking number.
    pub yields_tracking_number: bool,
}

impl SagaStep {
    /// Every step, in the order they run.
    pub const ALL: [SagaStep; 3] = [
        SagaStep::ReserveInventory,
        SagaStep::ChargePayment,
        SagaStep::CreateShipment,
    ];

    /// The step's row: what every crate knows about it.
    pub const fn spec(self) -> StepSpec {
        match self {
            Self::ReserveInventory => StepSpec {
                name: "reserve_inventory",
                run: action!("reserve-inventory"),
                undo: Some(action!("release-inventory")),
                refusal: RejectionReason::InsufficientStock,
                yields_tracking_number: false,
            },
            Self::ChargePayment => StepSpec {
                name: "charge_payment",
                run: action!("charge-payment"),
                undo: Some(action!("refund-payment")),
                refusal: RejectionReason::PaymentDeclined,
                yields_tracking_number: false,
            },
            Self::CreateShipment => StepSpec {
                name: "create_shipment",
                run: action!("create-shipment"),
                undo: Some(action!("cancel-shipment")),
                refusal: RejectionReason::ShippingUnavailable,
                yields_tracking_number: true,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    pub fn parse(name: &str) -> Option<SagaStep> {
        Self::ALL.into_iter().find(|step| step.as_str() == name)
    }

    /// The first step of every saga.
    pub const FIRST: SagaStep = Self::ALL[0];

    /// The step after this one, if any.
    pub fn next(self) -> Option<SagaStep> {
        Self::ALL.get(self.position() + 1).copied()
    }

    /// Whether compensation has anything to undo for this step.
    pub fn can_be_undone(self) -> bool {
        self.spec().undo.is_some()
    }

    fn position(self) -> usize {
        Self::ALL
            .iter()
            .position(|step| *step == self)
            .expect("every step is in SagaStep::ALL")
    }
}

/// The rejection a step that failed for good stands for. A business refusal
/// names it exactly; a step that could not be completed in time is
/// rejected with its own step's code.
pub fn rejection_of(step: SagaStep) -> RejectionReason {
    step.spec().refusal
}

/// The code of a rejection, as a business refusal stores it in
/// `StepFailed.error` and the order's `rejection_reason` shows it.
pub fn code(reason: RejectionReason) -> &'static str {
    match reason {
        RejectionReason::InsufficientStock => "insufficient_stock",
        RejectionReason::PaymentDeclined => "payment_declined",
        RejectionReason::ShippingUnavailable => "shipping_unavailable",
    }
}

/// The business refusal a step's error is, if it is one (its code, as
/// [`code`] writes it); any other error is technical.
pub fn refusal(error: &str) -> Option<RejectionReason> {
    SagaStep::ALL
        .into_iter()
        .map(rejection_of)
        .find(|reason| code(*reason) == error)
}

/// One `T` per step, keyed by step. Stored (in read models) as the list of
/// values in step order, as the fixed arrays it replaces were; a list
/// stored before a step was added is completed with that step's blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerStep<T>(Vec<T>);

/// A value for a step that nothing has happened to yet.
pub trait Blank {
    fn blank(step: SagaStep) -> Self;
}

impl<T: Default> Blank for T {
    fn blank(_: SagaStep) -> Self {
        T::default()
    }
}

impl<T> PerStep<T> {
    pub fn from_fn(blank: impl FnMut(SagaStep) -> T) -> Self {
        Self(SagaStep::ALL.map(blank).into())
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (SagaStep, &T)> {
        SagaStep::ALL.into_iter().zip(&self.0)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.0.iter()
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> {
        self.0.iter_mut()
    }
}

impl<T: Blank> Default for PerStep<T> {
    fn default() -> Self {
        Self::from_fn(T::blank)
    }
}

impl<T> Index<SagaStep> for PerStep<T> {
    type Output = T;

    fn index(&self, step: SagaStep) -> &T {
        &self.0[step.position()]
    }
}

impl<T> IndexMut<SagaStep> for PerStep<T> {
    fn index_mut(&mut self, step: SagaStep) -> &mut T {
        &mut self.0[step.position()]
    }
}

impl<T: Serialize> Serialize for PerStep<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de> + Blank> Deserialize<'de> for PerStep<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut values = Vec::<T>::deserialize(deserializer)?;
        if values.len() > SagaStep::ALL.len() {
            return Err(D::Error::custom(format!(
                "{} steps stored, {} known",
                values.len(),
                SagaStep::ALL.len()
            )));
        }
        for step in &SagaStep::ALL[values.len()..] {
            values.push(T::blank(*step));
        }
        Ok(Self(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_steps_name_is_the_one_serde_gives_it() {
        for step in SagaStep::ALL {
            assert_eq!(serde_json::to_value(step).unwrap(), step.as_str());
            assert_eq!(SagaStep::parse(step.as_str()), Some(step));
        }
    }

    #[test]
    fn steps_follow_each_other_in_the_tables_order() {
        assert_eq!(SagaStep::FIRST, SagaStep::ReserveInventory);
        assert_eq!(
            SagaStep::ReserveInventory.next(),
            Some(SagaStep::ChargePayment)
        );
        assert_eq!(SagaStep::CreateShipment.next(), None);
    }

    #[test]
    fn per_step_values_are_stored_in_step_order_and_completed_when_fewer() {
        let mut attempts = PerStep::<u32>::default();
        attempts[SagaStep::ChargePayment] = 2;
        let stored = serde_json::to_value(&attempts).unwrap();
        assert_eq!(stored, serde_json::json!([0, 2, 0]));
        let short: PerStep<u32> = serde_json::from_value(serde_json::json!([4])).unwrap();
        assert_eq!(short[SagaStep::ReserveInventory], 4);
        assert_eq!(short[SagaStep::CreateShipment], 0);
        assert!(serde_json::from_value::<PerStep<u32>>(serde_json::json!([1, 2, 3, 4])).is_err());
    }
}
