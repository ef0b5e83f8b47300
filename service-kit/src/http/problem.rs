//! Errors as RFC 9457 problem documents (`application/problem+json`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
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
    /// Seconds after which the same request may well succeed: sent as
    /// `Retry-After` (a conflict that is contention, not a refusal).
    pub retry_after: Option<u32>,
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
            retry_after: None,
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

    /// A conflict that passes: other writers kept winning, or the same
    /// request is still being handled. Repeating it later is expected to
    /// work, and `Retry-After` says so (a plain [`Problem::conflict`] will
    /// not change by being repeated).
    pub fn busy(detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::conflict(detail)
        }
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
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl Problem {
    /// The 500 every service answers for a failure of its own: the cause is
    /// logged (by whoever holds it), never shown.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed; it was logged",
        )
    }
}

/// Every error a handler can return: a problem for the client, or an
/// internal failure that is logged once, with its cause chain, and shown
/// only as [`Problem::internal`].
///
/// Each service maps its own errors onto it where they arise (command-service
/// the domain's and the event store's, query-service a missing read model).
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

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        // 42P01: a table does not exist yet. The only tables a service
        // reads without having waited for their migrations are the
        // projector's read models, which the query-service reads: not
        // ready, rather than broken.
        if let sqlx::Error::Database(db) = &error
            && db.code().as_deref() == Some("42P01")
        {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Read models not ready",
                "the projector has not created the read models yet",
            )
            .into();
        }
        Self::Internal(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Problem(problem) => problem.into_response(),
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                Problem::internal().into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_passing_conflict_says_when_to_retry() {
        let busy = Problem::busy("the products kept changing").into_response();
        assert_eq!(busy.status(), StatusCode::CONFLICT);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            busy.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );

        let refused = Problem::conflict("the SKU exists").into_response();
        assert_eq!(refused.status(), StatusCode::CONFLICT);
        assert!(!refused.headers().contains_key(header::RETRY_AFTER));
    }
}
