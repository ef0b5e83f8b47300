use serde::{Deserialize, Serialize};

/// Why the business refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("insufficient stock of {sku}: {requested} requested, {available} available")]
    InsufficientStock {
        sku: String,
        requested: i64,
        available: i64,
    },
    #[error("payment declined: balance {balance_cents} is below {amount_cents}")]
    PaymentDeclined {
        balance_cents: i64,
        amount_cents: i64,
    },
    #[error("shipping to {country} is not available")]
    ShippingUnavailable { country: String },
    #[error("{0}")]
    Conflict(String),
}

impl DomainError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The saga's rejection reason this error stands for, if it is one of
    /// the three business failures.
    pub fn rejection_reason(&self) -> Option<RejectionReason> {
        match self {
            Self::InsufficientStock { .. } => Some(RejectionReason::InsufficientStock),
            Self::PaymentDeclined { .. } => Some(RejectionReason::PaymentDeclined),
            Self::ShippingUnavailable { .. } => Some(RejectionReason::ShippingUnavailable),
            _ => None,
        }
    }
}

/// Why an order was rejected (the contract's `rejection_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    InsufficientStock,
    PaymentDeclined,
    ShippingUnavailable,
}
