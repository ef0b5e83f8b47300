//! HTTP plumbing shared by the routes: problem documents, extractors, and
//! the request context.

pub mod context;
pub mod extract;
pub mod idempotency;
pub mod problem;

pub use context::{RequestContext, etag};
pub use extract::{JsonBody, PathParam, QueryParams};
pub use problem::{ApiError, ApiResult, OrProblem, Problem};
