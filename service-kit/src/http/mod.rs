//! HTTP plumbing every API shares: errors as RFC 9457 problem documents and
//! request extractors whose failures are such problems, never panics or
//! plain-text rejections.

pub mod extract;
pub mod limits;
pub mod problem;
pub mod trace;

pub use extract::{BODY_LIMIT, JsonBody, PathParam, QueryParams};
pub use limits::Limits;
pub use problem::{ApiError, ApiResult, FieldError, Problem, ProblemBody};
