//! Aggregates kept warm between commands, and commands on one stream taken
//! in turn.
//!
//! A command on a stream first claims it ([`Warm::claim`]): commands on the
//! same stream in this process wait for each other, in arrival order,
//! instead of deciding on the same version and racing to append (all but
//! one would conflict, wait a backoff and decide again). A popular product
//! reserved by many sagas at once is then appended to one command after
//! the other, each deciding on the state the one before it left.
//!
//! The claim holds the state the stream had when this process last
//! appended to it, so that the next command on it is decided without
//! reading the stream (a popular product's load is its snapshot plus up to
//! `SNAPSHOT_EVERY` events, read and folded).
//!
//! A kept state may be stale: another replica, or anything else writing to
//! the event store, may have appended since. That is safe because of what
//! a kept state is used for:
//! - a command decided on it appends expecting its version, so if the
//!   stream moved, the append conflicts, nothing is written, and the
//!   command is decided again on a fresh load;
//! - a refusal or a command that changes nothing is never answered from a
//!   kept state alone (nothing would catch a stale one): it is decided again
//!   on a fresh load (`commands::decide_fresh_unless_appending`).
//!
//! Claims never wait in a cycle: a command claims one stream, or several
//! (an order's products) at once in the order of their names, and claims
//! nothing more until it has answered and let them go.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Streams remembered; when full, those no command holds or awaits are
/// forgotten (a forgotten stream costs one load).
const CAPACITY: usize = 20_000;

/// The state kept for a stream, behind the lock its commands take turns
/// on; `None` while a command that took it has not put it back.
type Slot = Arc<tokio::sync::Mutex<Option<Kept>>>;

#[derive(Clone, Default)]
pub struct Warm {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

struct Kept {
    version: u64,
    /// What a command kept: a `commands::Loaded<A>` for the stream's
    /// aggregate `A`.
    value: Box<dyn Any + Send>,
}

/// A command's turn on one stream: no other command of this process
/// claims the stream until it is dropped.
pub struct Claim {
    stream_id: String,
    kept: OwnedMutexGuard<Option<Kept>>,
}

impl Warm {
    /// Waits for the turn on `stream_id`, after every command that claimed
    /// it before.
    pub async fn claim(&self, stream_id: &str) -> Claim {
        let slot = {
            let mut slots = self.lock();
            if slots.len() >= CAPACITY && !slots.contains_key(stream_id) {
                // Only the map holds an idle slot.
                slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            slots.entry(stream_id.to_owned()).or_default().clone()
        };
        Claim {
            stream_id: stream_id.to_owned(),
            kept: slot.lock_owned().await,
        }
    }

    /// Claims every stream of `stream_ids` (each once), in the order of
    /// their names, so that two commands on overlapping sets never wait for
    /// each other in a cycle.
    pub async fn claim_all<'a>(&self, stream_ids: impl IntoIterator<Item = &'a str>) -> Vec<Claim> {
        let mut names: Vec<&str> = stream_ids.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        let mut claims = Vec::with_capacity(names.len());
        for name in names {
            claims.push(self.claim(name).await);
        }
        claims
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Claim {
    /// The claimed stream.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The kept state, which is no longer kept (a command that fails
    /// leaves the next one to load); `None` if there is none (or it was
    /// kept as another type).
    pub fn take<T: Any>(&mut self) -> Option<T> {
        let kept = self.kept.take()?;
        kept.value.downcast::<T>().ok().map(|value| *value)
    }

    /// Keeps `value` as the stream's state at `version`, unless the same
    /// or a later version is kept already.
    pub fn keep<T: Any + Send>(&mut self, version: u64, value: T) {
        if self
            .kept
            .as_ref()
            .is_some_and(|current| current.version >= version)
        {
            return;
        }
        *self.kept = Some(Kept {
            version,
            value: Box::new(value),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use domain::customer::Customer;
    use domain::product::Product;
    use futures::FutureExt;

    use super::*;
    use crate::commands::Loaded;

    fn product_at(version: u64, on_hand: i64) -> Loaded<Product> {
        Loaded {
            state: Product {
                on_hand,
                ..Product::default()
            },
            version,
            created_at: None,
            updated_at: None,
            snapshot_version: 0,
        }
    }

    async fn keep(warm: &Warm, stream_id: &str, loaded: Loaded<Product>) {
        warm.claim(stream_id).await.keep(loaded.version, loaded);
    }

    #[tokio::test]
    async fn a_kept_state_is_taken_once() {
        let warm = Warm::default();
        keep(&warm, "product-a", product_at(3, 7)).await;
        let mut claim = warm.claim("product-a").await;
        let taken = claim.take::<Loaded<Product>>().expect("kept");
        assert_eq!((taken.version, taken.state.on_hand), (3, 7));
        assert!(claim.take::<Loaded<Product>>().is_none());
        drop(claim);
        assert!(
            warm.claim("product-a")
                .await
                .take::<Loaded<Product>>()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_older_state_does_not_replace_a_later_one() {
        let warm = Warm::default();
        keep(&warm, "product-a", product_at(5, 9)).await;
        keep(&warm, "product-a", product_at(4, 1)).await;
        keep(&warm, "product-a", product_at(5, 2)).await;
        let mut claim = warm.claim("product-a").await;
        assert_eq!(claim.take::<Loaded<Product>>().unwrap().state.on_hand, 9);
        claim.keep(6, product_at(6, 3));
        claim.keep(7, product_at(7, 4));
        assert_eq!(claim.take::<Loaded<Product>>().unwrap().version, 7);
    }

    #[tokio::test]
    async fn a_state_kept_as_another_aggregate_is_not_found() {
        let warm = Warm::default();
        keep(&warm, "product-a", product_at(1, 1)).await;
        assert!(
            warm.claim("product-a")
                .await
                .take::<Loaded<Customer>>()
                .is_none()
        );
        assert!(
            warm.claim("product-b")
                .await
                .take::<Loaded<Product>>()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_claimed_stream_waits_for_its_holder_and_gets_what_it_kept() {
        let warm = Warm::default();
        keep(&warm, "product-a", product_at(1, 10)).await;
        let mut first = warm.claim("product-a").await;
        let mut second = Box::pin(warm.claim("product-a"));
        assert!((&mut second).now_or_never().is_none(), "waits its turn");
        // Other streams are not held up.
        assert!(warm.claim("product-b").now_or_never().is_some());
        let loaded = first.take::<Loaded<Product>>().unwrap();
        first.keep(2, product_at(loaded.version + 1, loaded.state.on_hand - 3));
        drop(first);
        let mut second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the turn passes on when the first claim is dropped");
        let after = second.take::<Loaded<Product>>().unwrap();
        assert_eq!((after.version, after.state.on_hand), (2, 7));
    }

    #[tokio::test]
    async fn claims_on_overlapping_streams_in_any_order_never_wait_in_a_cycle() {
        let warm = Warm::default();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let warm = warm.clone();
            tasks.push(tokio::spawn(async move {
                let mut streams = ["product-a", "product-b", "product-c", "product-a"];
                streams.rotate_left(i % 4);
                for _ in 0..200 {
                    let claims = warm.claim_all(streams.iter().copied()).await;
                    assert_eq!(claims.len(), 3, "each stream once");
                    tokio::task::yield_now().await;
                }
            }));
        }
        tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
            .await
            .expect("no deadlock")
            .into_iter()
            .for_each(|joined| joined.expect("the task did not panic"));
    }

    #[tokio::test]
    async fn a_full_map_forgets_idle_streams_but_not_a_claimed_one() {
        let warm = Warm::default();
        let mut held = warm.claim("product-held").await;
        held.keep(4, product_at(4, 4));
        for i in 0..CAPACITY {
            keep(&warm, &format!("product-{i}"), product_at(1, 1)).await;
        }
        assert!(warm.lock().len() <= CAPACITY, "bounded");
        assert!(
            warm.claim("product-held").now_or_never().is_none(),
            "still the same turn"
        );
        assert_eq!(held.take::<Loaded<Product>>().unwrap().version, 4);
    }
}
