//! Who is asking: the correlation id (echoed on every response), the W3C
//! trace context, the `If-Match` precondition, and a fresh id for the
//! command, which becomes the `causation_id` of the events it appends.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use event_store::Metadata;
use uuid::Uuid;

use super::problem::{ApiError, Problem};

pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The request's correlation id, put in the request's extensions by
/// [`correlation`].
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

/// Middleware: takes `X-Correlation-Id` from the request (or makes one) and
/// returns it on the response.
pub async fn correlation(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    request.extensions_mut().insert(CorrelationId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// Everything a command handler needs to know about the request besides
/// its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub correlation_id: String,
    pub command_id: Uuid,
    pub traceparent: Option<String>,
    /// The version `If-Match` requires, if the header was sent.
    pub if_match: Option<u64>,
}

impl RequestContext {
    /// Metadata for events this request's command appends.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            correlation_id: self.correlation_id.clone(),
            causation_id: self.command_id.to_string(),
            traceparent: self.traceparent.clone(),
            ..Metadata::default()
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let correlation_id = parts
            .extensions
            .get::<CorrelationId>()
            .map_or_else(|| Uuid::new_v4().to_string(), |c| c.0.clone());
        Ok(Self {
            correlation_id,
            command_id: Uuid::now_v7(),
            traceparent: traceparent(&parts.headers),
            if_match: if_match(&parts.headers)?,
        })
    }
}

/// `traceparent` when it has the W3C shape `00-<32 hex>-<16 hex>-<2 hex>`.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2);
    valid.then(|| value.to_ascii_lowercase())
}

/// `If-Match: "7"` (quotes optional) is version 7.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    let unquoted = text.trim_start_matches("W/").trim_matches('"');
    unquoted.parse().map(Some).map_err(|_| {
        Problem::validation(
            StatusCode::BAD_REQUEST,
            "If-Match",
            "must be a version as returned in ETag, for example \"3\"",
        )
        .into()
    })
}

/// The `ETag` of an aggregate at `version`.
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn if_match_takes_quoted_and_bare_versions() {
        assert_eq!(if_match(&headers("if-match", "\"7\"")).unwrap(), Some(7));
        assert_eq!(if_match(&headers("if-match", "7")).unwrap(), Some(7));
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert!(if_match(&headers("if-match", "\"seven\"")).is_err());
    }

    #[test]
    fn only_well_formed_traceparents_are_kept() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            traceparent(&headers("traceparent", good)).as_deref(),
            Some(good)
        );
        assert_eq!(traceparent(&headers("traceparent", "00-abc-def-01")), None);
    }
}
