//! Request extractors whose failures are problem documents, never panics
//! or plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::problem::Problem;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body; malformed JSON is 400, a body of the wrong shape (wrong
/// type, missing field, unknown enum value) 422 naming the field, a body
/// over 1 MiB 413, another content type 415.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let mime = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(Problem::validation(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type",
                "must be application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection_status(&rejection);
                Problem::validation(status, "body", rejection.body_text())
            })?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(value) => Ok(Self(value)),
            Err(error) => {
                let path = error.path().to_string();
                let inner = error.into_inner();
                let problem = if inner.is_syntax() || inner.is_eof() {
                    Problem::validation(
                        StatusCode::BAD_REQUEST,
                        "body",
                        format!("malformed JSON: {inner}"),
                    )
                } else {
                    let field = if path == "." { "body".to_owned() } else { path };
                    Problem::validation(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        field,
                        strip_position(&inner.to_string()),
                    )
                };
                Err(problem)
            }
        }
    }
}

fn rejection_status(rejection: &BytesRejection) -> StatusCode {
    let status = rejection.status();
    if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// serde_json appends " at line 1 column 17"; the field already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A path parameter that must parse as `T`; otherwise 400 naming it.
pub struct PathParam<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParam<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::validation(
                StatusCode::BAD_REQUEST,
                "path",
                rejection.body_text(),
            )),
        }
    }
}

/// Query parameters that must parse as `T`; otherwise 400 naming them.
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::validation(
                StatusCode::BAD_REQUEST,
                "query",
                rejection.body_text(),
            )),
        }
    }
}
