//! Who is asking: the correlation id (service-kit's request-id layer makes
//! one when the caller sent none, and echoes it), the trace context, the
//! `If-Match` precondition, and a fresh id for the command, which becomes
//! the `causation_id` of the events it appends.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use event_store::Metadata;
use uuid::Uuid;

use super::problem::{ApiError, Problem};

/// Everything a command handler needs to know about the request besides
/// its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub correlation_id: String,
    pub command_id: Uuid,
    /// The W3C trace context stored with the events: the request's own
    /// span when spans are exported (so consumers link to the span that
    /// appended them), else the caller's `traceparent`, if well formed.
    pub traceparent: Option<String>,
    /// The version `If-Match` requires, if the header was sent.
    pub if_match: Option<u64>,
    /// The request's `Idempotency-Key` scoped to its caller (see
    /// `idempotency::scoped`), when it carries one.
    pub idempotency_key: Option<String>,
    /// The subject of the caller's token, recorded as `actor` in the
    /// metadata of every event this request appends.
    pub actor: Option<String>,
    /// The event that caused what this request appends, when it acts for
    /// one (a saga step's call, for the saga's event that started it);
    /// otherwise the command itself is the cause.
    pub caused_by_event: Option<String>,
}

/// Namespace of ids derived from idempotency keys (uuid v5).
const KEYED: Uuid = Uuid::from_u128(0x2b8e_55c1_07f4_4a9d_b3e6_91c0_5d27_aa01);

impl RequestContext {
    /// A new id for what this command creates (an order, a customer). With
    /// an idempotency key it is derived from the key, so a repeat that runs
    /// again names the same thing.
    pub fn new_id(&self, what: &str) -> Uuid {
        match &self.idempotency_key {
            Some(_) => Uuid::new_v5(&self.command_id, what.as_bytes()),
            None => Uuid::now_v7(),
        }
    }

    /// The id of the `index`-th event this command appends to `stream_id`;
    /// derived from the idempotency key when there is one, so the event
    /// store recognises a repeat of an append it already stored.
    pub fn event_id(&self, stream_id: &str, index: usize) -> Uuid {
        match &self.idempotency_key {
            Some(_) => Uuid::new_v5(&self.command_id, format!("{stream_id}/{index}").as_bytes()),
            None => Uuid::now_v7(),
        }
    }

    /// This context acting for an event: what it appends is correlated by
    /// `correlation_id` and caused by `event_id`, where given.
    pub fn caused_by(mut self, correlation_id: Option<String>, event_id: Option<String>) -> Self {
        if let Some(correlation_id) = correlation_id {
            self.correlation_id = correlation_id;
        }
        self.caused_by_event = event_id;
        self
    }

    /// Metadata for events this request's command appends.
    pub fn metadata(&self) -> Metadata {
        let metadata = Metadata {
            correlation_id: self.correlation_id.clone(),
            causation_id: self
                .caused_by_event
                .clone()
                .unwrap_or_else(|| self.command_id.to_string()),
            traceparent: self.traceparent.clone(),
            ..Metadata::default()
        };
        match &self.actor {
            Some(actor) => metadata.with_actor(actor),
            None => metadata,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let correlation_id = service_kit::http::trace::correlation_id(&parts.headers);
        let idempotency_key = parts
            .extensions
            .get::<super::idempotency::IdempotencyKey>()
            .map(|k| k.0.clone());
        let command_id = match &idempotency_key {
            Some(key) => Uuid::new_v5(&KEYED, key.as_bytes()),
            None => Uuid::now_v7(),
        };
        let actor = parts
            .extensions
            .get::<service_kit::auth::Caller>()
            .map(|caller| caller.subject.clone());
        Ok(Self {
            correlation_id,
            command_id,
            idempotency_key,
            actor,
            caused_by_event: None,
            traceparent: service_kit::telemetry::current_traceparent()
                .or_else(|| traceparent(&parts.headers)),
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
