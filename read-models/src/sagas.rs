//! The saga list's filter (`GET /v1/sagas`), which the orchestrator's bulk
//! retry takes too, so both select exactly the same sagas from `rm_sagas`.

use chrono::{DateTime, Utc};
use domain::saga::{SagaStatus, SagaStep};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};

/// The longest `failure` text searched for.
pub const MAX_FAILURE_TEXT: usize = 200;
/// The longest `stuck_for` (ten years, in seconds).
pub const MAX_STUCK_FOR: u64 = 10 * 365 * 24 * 3600;

/// Which sagas: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SagaFilter {
    /// In this status.
    pub status: Option<SagaStatus>,
    /// Whose current step is this one.
    pub step: Option<SagaStep>,
    /// Whose failure reason or a step's last error contains this text
    /// (case-insensitive).
    #[schema(min_length = 1, max_length = 200)]
    pub failure: Option<String>,
    /// Some step of which was attempted (or its undoing) at least this
    /// often.
    pub min_attempts: Option<u32>,
    /// Not ended (completed or compensated) and with no progress for at
    /// least this many seconds.
    #[schema(maximum = 315_360_000)]
    pub stuck_for: Option<u64>,
    /// Placed at or after this instant.
    pub placed_from: Option<DateTime<Utc>>,
    /// Placed before this instant.
    pub placed_to: Option<DateTime<Utc>>,
}

/// A filter that cannot select anything sensible: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl SagaFilter {
    /// Refuses texts too long to search for, stuck times past any saga's
    /// age, and a time range that ends before it starts.
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |field, message: String| Err(Invalid { field, message });
        if let Some(text) = &self.failure
            && (text.is_empty() || text.chars().count() > MAX_FAILURE_TEXT)
        {
            return invalid(
                "failure",
                format!("must be 1 to {MAX_FAILURE_TEXT} characters"),
            );
        }
        if self.stuck_for.is_some_and(|s| s > MAX_STUCK_FOR) {
            return invalid(
                "stuck_for",
                format!("must be at most {MAX_STUCK_FOR} seconds"),
            );
        }
        if let (Some(from), Some(to)) = (self.placed_from, self.placed_to)
            && to < from
        {
            return invalid("placed_to", "must not be before placed_from".into());
        }
        Ok(())
    }

    /// Adds the filter's conditions to a query over `rm_sagas` that
    /// already has a `where` clause (each as `and ...`); only the
    /// conditions given, so the planner sees a plain query.
    pub fn push_conditions(&self, query: &mut QueryBuilder<Postgres>) {
        if let Some(status) = self.status {
            query.push(" and status = ").push_bind(status.as_str());
        }
        if let Some(step) = self.step {
            query.push(" and current_step = ").push_bind(step.as_str());
        }
        if let Some(text) = &self.failure {
            query
                .push(" and errors ilike ")
                .push_bind(format!("%{}%", escape_like(text)))
                .push(" escape '\\'");
        }
        if let Some(attempts) = self.min_attempts {
            query
                .push(" and attempts >= ")
                .push_bind(i64::from(attempts));
        }
        if let Some(seconds) = self.stuck_for {
            query
                .push(" and status not in ('completed', 'compensated') and updated_at <= now() - ")
                .push_bind(seconds as f64)
                .push(" * interval '1 second'");
        }
        if let Some(from) = self.placed_from {
            query.push(" and started_at >= ").push_bind(from);
        }
        if let Some(to) = self.placed_to {
            query.push(" and started_at < ").push_bind(to);
        }
    }
}

/// `text` with `LIKE`'s wildcards taken literally.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(filter: &SagaFilter) -> String {
        let mut query = QueryBuilder::new("select 1 from rm_sagas where true");
        filter.push_conditions(&mut query);
        query.sql().as_str().to_owned()
    }

    #[test]
    fn only_the_conditions_given_are_added() {
        assert_eq!(
            sql(&SagaFilter::default()),
            "select 1 from rm_sagas where true"
        );
        let filter = SagaFilter {
            status: Some(SagaStatus::Failed),
            min_attempts: Some(3),
            ..SagaFilter::default()
        };
        assert_eq!(
            sql(&filter),
            "select 1 from rm_sagas where true and status = $1 and attempts >= $2"
        );
    }

    #[test]
    fn a_failure_text_is_searched_for_literally() {
        assert_eq!(escape_like(r"50%_off\"), r"50\%\_off\\");
    }

    #[test]
    fn filters_read_from_json_and_refuse_what_cannot_select_sensibly() {
        let filter: SagaFilter = serde_json::from_value(serde_json::json!({
            "status": "failed", "step": "charge_payment", "stuck_for": 60,
            "placed_from": "2026-12-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(filter.status, Some(SagaStatus::Failed));
        assert!(filter.validate().is_ok());
        assert!(
            serde_json::from_value::<SagaFilter>(serde_json::json!({"stauts": "failed"})).is_err()
        );
        let backwards = SagaFilter {
            placed_from: Some(Utc::now()),
            placed_to: Some(Utc::now() - chrono::Duration::days(1)),
            ..SagaFilter::default()
        };
        assert_eq!(backwards.validate().unwrap_err().field, "placed_to");
        let empty = SagaFilter {
            failure: Some(String::new()),
            ..SagaFilter::default()
        };
        assert_eq!(empty.validate().unwrap_err().field, "failure");
    }
}

#[cfg(test)]
mod schema_tests {
    use utoipa::PartialSchema;

    use super::*;

    #[test]
    fn the_schema_states_the_bounds_validate_checks() {
        let schema = serde_json::to_value(SagaFilter::schema()).unwrap();
        let properties = &schema["properties"];
        assert_eq!(properties["failure"]["maxLength"], MAX_FAILURE_TEXT);
        assert_eq!(properties["failure"]["minLength"], 1);
        assert_eq!(properties["stuck_for"]["maximum"], MAX_STUCK_FOR);
        assert_eq!(schema["additionalProperties"], false);
    }
}
