//! The command-service's errors as problems: [`ApiError`] is service-kit's,
//! and this maps the domain's refusals and the event store's errors onto
//! it (`?` cannot: neither type is this crate's, so [`OrProblem`] does it at
//! the call).

use axum::http::StatusCode;
use domain::saga::api;
use domain::{DomainError, RejectionReason};

pub use service_kit::http::problem::{ApiError, ApiResult, FieldError, Problem, ProblemBody};

/// The problem a failed store call is for the client.
pub fn store_error(error: event_store::Error) -> ApiError {
    match error {
        // A race lost and not decided again: repeating may succeed.
        event_store::Error::ConcurrencyConflict { .. } => Problem::busy(error.to_string()).into(),
        event_store::Error::EventIdReused { .. } => Problem::conflict(error.to_string()).into(),
        other => ApiError::Internal(anyhow::Error::new(other)),
    }
}

/// The problem a business refusal is for the client.
pub fn refusal(error: DomainError) -> ApiError {
    let detail = error.to_string();
    let problem = match error {
        DomainError::AlreadyExists { .. } | DomainError::Conflict(_) => Problem::conflict(detail),
        DomainError::NotFound { .. } => Problem::not_found(detail),
        DomainError::Invalid { field, message } => {
            Problem::validation(StatusCode::UNPROCESSABLE_ENTITY, field, message)
        }
        DomainError::InsufficientStock { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            api::problem::refusal(RejectionReason::InsufficientStock),
            "Insufficient stock",
            detail,
        ),
        DomainError::PaymentDeclined { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            api::problem::refusal(RejectionReason::PaymentDeclined),
            "Payment declined",
            detail,
        ),
        DomainError::ShippingUnavailable { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            api::problem::refusal(RejectionReason::ShippingUnavailable),
            "Shipping unavailable",
            detail,
        ),
    };
    problem.into()
}

/// A domain or store result as a handler's: `store.read_stream(..).await.or_problem()?`.
pub trait OrProblem<T> {
    fn or_problem(self) -> ApiResult<T>;
}

impl<T> OrProblem<T> for Result<T, event_store::Error> {
    fn or_problem(self) -> ApiResult<T> {
        self.map_err(store_error)
    }
}

impl<T> OrProblem<T> for Result<T, DomainError> {
    fn or_problem(self) -> ApiResult<T> {
        self.map_err(refusal)
    }
}
