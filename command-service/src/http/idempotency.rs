//! `Idempotency-Key` on POST requests: the same key with the same request
//! returns the first response (status and body) without running the
//! command again; the same key with a different request is 422
//! `idempotency-key-reused`. A key belongs to its caller: it is stored and
//! ids are derived from it together with the token's `sub` ([`scoped`]),
//! so another caller's same key is a new request, and the middleware runs
//! inside the route table's guard, so a replay reaches only a caller whose
//! token and roles were checked again. Keys are kept for `retention` (24 hours by
//! default) in PostgreSQL, so every replica and restart sees them.
//!
//! Concurrent requests with one key: the first inserts the key and runs;
//! the others wait (bounded) for its response. A request that fails with a
//! 5xx gives its key up so it can be retried. If the process dies while
//! running a request, the key is taken over after `abandon_after`; the
//! command then runs again, and because its event ids are derived from the
//! key (see `RequestContext::event_id`), the event store recognises the
//! events it already stored instead of appending them twice.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::extract::BODY_LIMIT;
use super::problem::{ApiError, Problem};

pub const HEADER: &str = "idempotency-key";

/// On a response that repeats a stored one (`true`): the request itself
/// was not run, whatever else it carried besides its key and body.
pub const REPLAYED: &str = "idempotent-replayed";

/// Namespace of request fingerprints (uuid v5).
const FINGERPRINT: Uuid = Uuid::from_u128(0x6f1c_2a7e_9d3b_4c55_8e21_0b7a_44d1_9c10);

#[derive(Clone)]
pub struct Idempotency {
    pub pool: PgPool,
    pub retention: Duration,
    pub abandon_after: Duration,
    pub wait_for_first: Duration,
}

/// The key of a request, if it carries a valid one (checked by the
/// middleware), for handlers to derive ids from.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

/// A key as stored: the caller's subject, a line break (which a header
/// value cannot hold, so no (subject, key) pair can pass for another), and
/// the key.
pub fn scoped(subject: &str, key: &str) -> String {
    format!("{subject}\n{key}")
}

/// Middleware for POST routes, inside the route table's guard.
pub async fn middleware(State(keys): State<Idempotency>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    // Every route that gets here has a rule that needs a token.
    let Some(subject) = request
        .extensions()
        .get::<service_kit::auth::Caller>()
        .map(|caller| caller.subject.clone())
    else {
        return service_kit::auth::unauthorized("this request needs a bearer token")
            .into_response();
    };
    match handle(&keys, &subject, key, request, next).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(
    keys: &Idempotency,
    subject: &str,
    key: HeaderValue,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => scoped(subject, k),
        _ => {
            return Err(Problem::validation(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
            .into());
        }
    };
    let (mut parts, body) = request.into_parts();
    let (bytes, hash) = fingerprint(&parts, body).await?;
    let deadline = Instant::now() + keys.wait_for_first;
    loop {
        if claim(keys, &key, hash).await? {
            parts.extensions.insert(IdempotencyKey(key.clone()));
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            return finish(keys, &key, response).await;
        }
        match stored(keys, &key).await? {
            // Expired or abandoned between our claim and our look: claim again.
            None => continue,
            Some(row) if row.hash != hash => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency key reused",
                    "this Idempotency-Key was used with a different request",
                )
                .into());
            }
            Some(row) if row.status.is_some() => return Ok(row.into_response()),
            Some(_) if Instant::now() >= deadline => {
                return Err(Problem::busy(
                    "a request with this Idempotency-Key is still being handled; retry later",
                )
                .into());
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The request's body, read whole, and the fingerprint a repeat must
/// match: its method, path and body.
async fn fingerprint(
    parts: &axum::http::request::Parts,
    body: Body,
) -> Result<(axum::body::Bytes, Uuid), ApiError> {
    let bytes = to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::from(Problem::validation(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("must be at most {BODY_LIMIT} bytes"),
        ))
    })?;
    let mut fingerprint = Vec::with_capacity(bytes.len() + 64);
    fingerprint.extend_from_slice(parts.method.as_str().as_bytes());
    fingerprint.push(b' ');
    fingerprint.extend_from_slice(parts.uri.path().as_bytes());
    fingerprint.push(b'\n');
    fingerprint.extend_from_slice(&bytes);
    Ok((bytes, Uuid::new_v5(&FINGERPRINT, &fingerprint)))
}

/// Inserts the key unless a live one exists; true if this request owns it.
async fn claim(keys: &Idempotency, key: &str, hash: Uuid) -> Result<bool, ApiError> {
    // Expired keys, and requests abandoned mid-way (their process died), are
    // replaced; anything else stays.
    let claimed = sqlx::query(
        "insert into idempotency_keys (key, request_hash) values ($1, $2)
         on conflict (key) do update
           set request_hash = excluded.request_hash, status = null, content_type = null,
               etag = null, body = null, created_at = now(), completed_at = null
           where idempotency_keys.created_at < now() - make_interval(secs => $3)
              or (idempotency_keys.status is null
                  and idempotency_keys.created_at < now() - make_interval(secs => $4))
         returning key",
    )
    .bind(key)
    .bind(hash)
    .bind(keys.retention.as_secs_f64())
    .bind(keys.abandon_after.as_secs_f64())
    .fetch_optional(&keys.pool)
    .await
    .map_err(internal)?;
    Ok(claimed.is_some())
}

struct StoredResponse {
    hash: Uuid,
    status: Option<i16>,
    content_type: Option<String>,
    etag: Option<String>,
    body: Option<Vec<u8>>,
}

impl IntoResponse for StoredResponse {
    fn into_response(self) -> Response {
        let status = self
            .status
            .and_then(|s| StatusCode::from_u16(s as u16).ok())
            .unwrap_or(StatusCode::OK);
        let mut response = (status, self.body.unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        for (name, value) in [
            (header::CONTENT_TYPE, self.content_type),
            (header::ETAG, self.etag),
        ] {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(name, value);
            }
        }
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

async fn stored(keys: &Idempotency, key: &str) -> Result<Option<StoredResponse>, ApiError> {
    let row = sqlx::query(
        "select request_hash, status, content_type, etag, body from idempotency_keys
         where key = $1 and created_at >= now() - make_interval(secs => $2)",
    )
    .bind(key)
    .bind(keys.retention.as_secs_f64())
    .fetch_optional(&keys.pool)
    .await
    .map_err(internal)?;
    Ok(row.map(|row| StoredResponse {
        hash: row.get("request_hash"),
        status: row.get("status"),
        content_type: row.get("content_type"),
        etag: row.get("etag"),
        body: row.get("body"),
    }))
}

/// Stores the response for repeats, or gives the key up after a 5xx.
async fn finish(keys: &Idempotency, key: &str, response: Response) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    if parts.status.is_server_error() {
        sqlx::query("delete from idempotency_keys where key = $1")
            .bind(key)
            .execute(&keys.pool)
            .await
            .map_err(internal)?;
        return Ok(Response::from_parts(parts, body));
    }
    let bytes: Bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| internal(anyhow::anyhow!(e)))?;
    let text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    sqlx::query(
        "update idempotency_keys
         set status = $2, content_type = $3, etag = $4, body = $5, completed_at = now()
         where key = $1",
    )
    .bind(key)
    .bind(parts.status.as_u16() as i16)
    .bind(text(header::CONTENT_TYPE))
    .bind(text(header::ETAG))
    .bind(bytes.as_ref())
    .execute(&keys.pool)
    .await
    .map_err(internal)?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

fn internal(error: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(error.into().context("idempotency keys"))
}
