//! Aggregates kept warm between commands: the state each stream had when
//! this process last appended to it, so that the next command on it is
//! decided without reading the stream (a popular product's load is its
//! snapshot plus up to `SNAPSHOT_EVERY` events, read and folded).
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
//! An entry is taken out while a command uses it, so commands on the same
//! stream at the same moment load it instead (as they would without this);
//! the one that appends puts its state back, unless a later one is kept.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::Aggregate;

use crate::commands::Loaded;

/// Streams kept; when full, everything is forgotten and refilled (a
/// forgotten stream costs one load).
const CAPACITY: usize = 20_000;

#[derive(Clone, Default)]
pub struct Warm {
    kept: Arc<Mutex<HashMap<String, Kept>>>,
}

struct Kept {
    version: u64,
    /// A `Loaded<A>` for the stream's aggregate `A`.
    loaded: Box<dyn Any + Send>,
}

impl Warm {
    /// The kept state of `stream_id`, which is no longer kept; `None` if
    /// there is none (or it was kept as another aggregate).
    pub fn take<A>(&self, stream_id: &str) -> Option<Loaded<A>>
    where
        A: Aggregate + 'static,
        A::State: Send,
    {
        let kept = self.lock().remove(stream_id)?;
        kept.loaded
            .downcast::<Loaded<A>>()
            .ok()
            .map(|loaded| *loaded)
    }

    /// Keeps `loaded` as the state of `stream_id`, unless the same or a
    /// later version is kept already.
    pub fn keep<A>(&self, stream_id: &str, loaded: Loaded<A>)
    where
        A: Aggregate + 'static,
        A::State: Send,
    {
        let mut kept = self.lock();
        if kept
            .get(stream_id)
            .is_some_and(|current| current.version >= loaded.version)
        {
            return;
        }
        if kept.len() >= CAPACITY {
            kept.clear();
        }
        kept.insert(
            stream_id.to_owned(),
            Kept {
                version: loaded.version,
                loaded: Box::new(loaded),
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use domain::customer::Customer;
    use domain::product::Product;

    use super::*;

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

    #[test]
    fn a_kept_state_is_taken_once() {
        let warm = Warm::default();
        warm.keep("product-a", product_at(3, 7));
        let taken = warm.take::<Product>("product-a").expect("kept");
        assert_eq!((taken.version, taken.state.on_hand), (3, 7));
        assert!(warm.take::<Product>("product-a").is_none());
    }

    #[test]
    fn an_older_state_does_not_replace_a_later_one() {
        let warm = Warm::default();
        warm.keep("product-a", product_at(5, 9));
        warm.keep("product-a", product_at(4, 1));
        warm.keep("product-a", product_at(5, 2));
        assert_eq!(warm.take::<Product>("product-a").unwrap().state.on_hand, 9);
        warm.keep("product-a", product_at(6, 3));
        warm.keep("product-a", product_at(7, 4));
        assert_eq!(warm.take::<Product>("product-a").unwrap().version, 7);
    }

    #[test]
    fn a_state_kept_as_another_aggregate_is_not_found() {
        let warm = Warm::default();
        warm.keep("product-a", product_at(1, 1));
        assert!(warm.take::<Customer>("product-a").is_none());
        assert!(warm.take::<Product>("product-b").is_none());
    }
}
