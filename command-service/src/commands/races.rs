//! The attempts of an optimistic-concurrency loop.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use service_kit::backoff::Backoff;

use crate::http::{ApiResult, Problem};

/// The races this process's commands lost: an append that found its
/// stream moved since the command decided. This process's own commands on
/// a stream take turns (`warm`), so each is another replica's or another
/// writer's append getting in first.
#[derive(Clone, Debug, Default)]
pub struct LostRaces(Counter);

impl LostRaces {
    pub fn register(registry: &mut Registry) -> Self {
        let lost = Self::default();
        registry.register(
            "command_lost_races",
            "Commands whose append found their stream moved by another writer, decided again",
            lost.0.clone(),
        );
        lost
    }
}

/// The attempts of an optimistic-concurrency loop: every decide-and-append
/// loop in this service counts and waits with one of these.
pub struct Races {
    policy: Backoff,
    what: String,
    attempt: u32,
    lost: bool,
    counted: LostRaces,
}

impl Races {
    /// Attempts as `policy` says; `what` says why they were given up; each
    /// race lost is counted in `counted`.
    pub fn new(policy: Backoff, what: impl Into<String>, counted: &LostRaces) -> Self {
        Self {
            policy,
            what: what.into(),
            attempt: 0,
            lost: false,
            counted: counted.clone(),
        }
    }

    /// The next attempt's number (from 1), after waiting if the last one
    /// lost its race; once `policy.attempts` are used up, a 409 `busy`
    /// problem (with `Retry-After`) saying `what`.
    pub async fn next(&mut self) -> ApiResult<u32> {
        if std::mem::take(&mut self.lost) {
            self.policy.sleep(self.attempt).await;
        }
        if self.attempt >= self.policy.attempts {
            return Err(Problem::busy(format!(
                "{}; gave up after {} attempts, try again",
                self.what, self.attempt
            ))
            .into());
        }
        self.attempt += 1;
        Ok(self.attempt)
    }

    /// The attempt lost its race: the next one waits first.
    pub fn lost(&mut self) {
        self.lost = true;
        self.counted.0.inc();
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    use super::*;

    #[tokio::test]
    async fn races_count_the_attempts_and_give_up_busy_after_the_last() {
        let counted = LostRaces::default();
        let mut races = Races::new(
            Backoff::CONTENTION.with_attempts(3),
            "s kept changing",
            &counted,
        );
        assert_eq!(races.next().await.unwrap(), 1);
        races.lost();
        assert_eq!(races.next().await.unwrap(), 2);
        // Decided again at once (no race lost): still counts.
        assert_eq!(races.next().await.unwrap(), 3);
        races.lost();
        let Err(gave_up) = races.next().await else {
            panic!("a fourth attempt");
        };
        let response = gave_up.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(counted.0.get(), 2, "each race lost is counted");
    }
}
