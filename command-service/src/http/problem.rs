//! Errors as RFC 9457 problem documents (`application/problem+json`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::DomainError;
use serde::Serialize;

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A client-facing error: its status, slug, title and detail.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// A request that cannot be carried out as sent, with what is wrong.
    pub fn validation(
        status: StatusCode,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (field, message) = (field.into(), message.into());
        let mut problem = Self::new(
            status,
            "validation",
            "The request is not valid",
            format!("{field}: {message}"),
        );
        problem.errors.push(FieldError { field, message });
        problem
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "Precondition failed",
            detail,
        )
    }
}

/// An RFC 9457 problem document as sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemBody {
    /// `/problems/<slug>`
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation problems: each invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: format!("/problems/{}", self.slug),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

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
            event_store::Error::ConcurrencyConflict { .. } => {
                Problem::conflict(error.to_string()).into()
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
