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
/// over 1 MiB 413, another content type 415. A text holding U+0000 is 422
/// too: PostgreSQL stores no such text (in `text` or `jsonb`), so it would
/// otherwise fail where it is written. A whole number written with a
/// fraction of zero (`3.0`) is the integer it is, as JSON Schema has it.
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
        if let Some(at) = nul_escape(&bytes) {
            return Err(Problem::validation(
                StatusCode::UNPROCESSABLE_ENTITY,
                "body",
                format!("a text holds U+0000 (at byte {at}), which no stored text may"),
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(value) => Ok(Self(value)),
            // Rarely taken: read again with `1.0` as `1`.
            Err(error) if error.inner().to_string().contains("floating point") => {
                deserialize_whole_floats(&bytes).map(Self)
            }
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

/// The body read as a JSON value whose whole floats are integers, then as
/// `T`; the problems are those of the first reading.
fn deserialize_whole_floats<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        Problem::validation(
            StatusCode::BAD_REQUEST,
            "body",
            format!("malformed JSON: {error}"),
        )
    })?;
    whole_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        Problem::validation(
            StatusCode::UNPROCESSABLE_ENTITY,
            field,
            strip_position(&error.into_inner().to_string()),
        )
    })
}

fn whole_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                && float.fract() == 0.0
            {
                // `i64::MIN as f64` is -2^63 exactly, `u64::MAX as f64` 2^64.
                if (i64::MIN as f64..-(i64::MIN as f64)).contains(&float) {
                    *number = (float as i64).into();
                } else if (0.0..u64::MAX as f64).contains(&float) {
                    *number = (float as u64).into();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

/// Where the body has the escape `\u0000` inside a string, if it does: a
/// backslash that is not itself escaped, then `u0000`. (A raw NUL byte is
/// no valid JSON, which the parser refuses.)
fn nul_escape(bytes: &[u8]) -> Option<usize> {
    let mut backslashes = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if *byte == b'\\' {
            backslashes += 1;
            continue;
        }
        let escaped = backslashes % 2 == 1;
        backslashes = 0;
        if escaped && *byte == b'u' && bytes[i + 1..].starts_with(b"0000") {
            return Some(i - 1);
        }
    }
    None
}

/// A path or query that holds U+0000 (`%00`), which no stored text may.
fn holds_nul(text: &str) -> bool {
    text.contains("%00")
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
        if holds_nul(parts.uri.path()) {
            return Err(Problem::validation(
                StatusCode::BAD_REQUEST,
                "path",
                "holds U+0000, which no stored text may",
            ));
        }
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
        if parts.uri.query().is_some_and(holds_nul) {
            return Err(Problem::validation(
                StatusCode::BAD_REQUEST,
                "query",
                "holds U+0000, which no stored text may",
            ));
        }
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

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        count: u32,
        name: String,
    }

    async fn read(body: &'static str) -> Result<Body, Problem> {
        let request = Request::post("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        JsonBody::<Body>::from_request(request, &())
            .await
            .map(|b| b.0)
    }

    #[tokio::test]
    async fn a_whole_float_is_an_integer_and_a_fraction_is_not() {
        let read_ok = read(r#"{"count": 3873.0, "name": "a"}"#).await.unwrap();
        assert_eq!(read_ok.count, 3873);
        let refused = read(r#"{"count": 1.5, "name": "a"}"#).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.errors[0].field, "count");
    }

    #[tokio::test]
    async fn a_text_holding_nul_is_refused_and_an_escaped_backslash_is_not_one() {
        let refused = read(r#"{"count": 1, "name": "a\u0000b"}"#)
            .await
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        let text = read(r#"{"count": 1, "name": "a\\u0000b"}"#).await.unwrap();
        assert_eq!(text.name, "a\\u0000b");
    }
}
