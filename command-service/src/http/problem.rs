//! The command-service's handler error: a problem for the client, or an
//! internal failure; domain and event-store errors map onto problems here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::DomainError;

pub use service_kit::http::problem::{FieldError, Problem, ProblemBody};

/// Every error a handler can return: a problem for the client, or an
/// internal failure that is logged once and shown only as a 500.
#[derive(Debug)]
pub enum ApiError {
    Problem(Problem),
    Internal(anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self::Problem(problem)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
}

impl From<event_store::Error> for ApiError {
    fn from(error: event_store::Error) -> Self {
        match error {
            // A race lost and not decided again: repeating may succeed.
            event_store::Error::ConcurrencyConflict { .. } => {
                Problem::busy(error.to_string()).into()
            }
            event_store::Error::EventIdReused { .. } => Problem::conflict(error.to_string()).into(),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let detail = error.to_string();
        let problem = match error {
            DomainError::AlreadyExists { .. } | DomainError::Conflict(_) => {
                Problem::conflict(detail)
            }
            DomainError::NotFound { .. } => Problem::not_found(detail),
            DomainError::Invalid { field, message } => {
                Problem::validation(StatusCode::UNPROCESSABLE_ENTITY, field, message)
            }
            DomainError::InsufficientStock { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "insufficient-stock",
                "Insufficient stock",
                detail,
            ),
            DomainError::PaymentDeclined { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "payment-declined",
                "Payment declined",
                detail,
            ),
            DomainError::ShippingUnavailable { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "shipping-unavailable",
                "Shipping unavailable",
                detail,
            ),
        };
        problem.into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Problem(problem) => problem.into_response(),
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the request could not be completed; it was logged",
                )
                .into_response()
            }
        }
    }
}
