//! The request extractors live in `service_kit::http` (every service
//! shares them); re-exported here for the routes.

pub use service_kit::http::extract::{BODY_LIMIT, JsonBody, PathParam, QueryParams};
