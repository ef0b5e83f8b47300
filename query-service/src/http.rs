//! What every read route shares: the error type, waiting for a read model
//! to reach a version, list cursors and limits.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use service_kit::http::Problem;
use tokio::time::Instant;
use uuid::Uuid;

pub use service_kit::http::{ApiError, ApiResult};

/// `?min_version=N` on single-aggregate reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MinVersion {
    /// Wait (up to 5 s by default) until the read model has caught up to
    /// this version of the aggregate; 504 if it does not. Versions are
    /// PostgreSQL `bigint`s.
    #[param(maximum = 9_223_372_036_854_775_807_u64)]
    pub min_version: Option<u64>,
}

/// How often a waiting read looks again.
const POLL: Duration = Duration::from_millis(20);

/// Reads a versioned row, waiting until it reaches `min_version` (when
/// given) for at most `timeout`. `what` names it in the problems: 404 when
/// it does not exist and nothing is awaited, 504 when it does not catch up.
pub async fn read_at_least<T, F, Fut>(
    what: &str,
    min_version: Option<u64>,
    timeout: Duration,
    version_of: impl Fn(&T) -> u64,
    mut read: F,
) -> ApiResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, sqlx::Error>>,
{
    // Versions are PostgreSQL bigints: anything above cannot be reached.
    if min_version.is_some_and(|wanted| wanted > i64::MAX as u64) {
        return Err(Problem::validation(
            StatusCode::BAD_REQUEST,
            "min_version",
            format!("must be a version, 0 to {}", i64::MAX),
        )
        .into());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let row = read().await?;
        let wanted = min_version.unwrap_or(0);
        match row {
            Some(row) if version_of(&row) >= wanted => return Ok(row),
            None if min_version.is_none() => {
                return Err(Problem::not_found(format!("{what} does not exist")).into());
            }
            current => {
                if Instant::now() >= deadline {
                    let have = current.as_ref().map_or(0, &version_of);
                    return Err(Problem::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "read-model-behind",
                        "Read model behind",
                        format!(
                            "{what} is at version {have} in the read model, and did not reach \
                             version {wanted} within {} ms",
                            timeout.as_millis()
                        ),
                    )
                    .into());
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// `ETag: "<version>"`.
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

/// A place in a newest-first list: the (time, id) of the last item
/// returned. Written as `<unix microseconds>.<uuid without dashes>`, which
/// needs no escaping in a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at.timestamp_micros(), self.id.simple())
    }

    pub fn decode(text: &str) -> Result<Cursor, Problem> {
        let invalid = || {
            Problem::validation(
                StatusCode::BAD_REQUEST,
                "cursor",
                "not a cursor this service returned",
            )
        };
        let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        Ok(Cursor {
            at: DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
            id: Uuid::try_parse(id).map_err(|_| invalid())?,
        })
    }
}

/// Default and largest page size of the lists.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

pub fn limit(limit: Option<u32>) -> Result<i64, Problem> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(i64::from(n)),
        _ => Err(Problem::validation(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written() {
        let cursor = Cursor {
            at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            id: Uuid::from_u128(0xabc),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn anything_else_is_not_a_cursor() {
        for text in ["", "abc", "12.", ".00000000000000000000000000000abc", "x.y"] {
            assert!(Cursor::decode(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn limits_outside_1_to_200_are_refused() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some(200)).unwrap(), 200);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(201)).is_err());
    }
}
