//! Tokens already verified, remembered until they expire, so that a caller
//! who sends the same token again (the orchestrator's service credential
//! on every step call, a client's session) costs a map look-up instead of
//! a signature check. A signature check is what made the claims true, and
//! the remembered answer is only given for the very same token text,
//! while the key that verified it is still the one its key set holds (a
//! key set read again gives its keys new ids, `jwks::Key::id`), and
//! before its `exp` (with the same leeway verification allows).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use super::Role;

/// Tokens remembered; when full, all are forgotten (each costs one more
/// signature check). A token is a few hundred bytes.
const CAPACITY: usize = 4_096;

/// What a verified token said, and what its answer depends on.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Which of the authenticator's issuers signed it, and the `kid` and
    /// id of the key that verified the signature.
    pub issuer: usize,
    pub kid: Option<String>,
    pub key_id: u64,
    /// Seconds since the Unix epoch past which it is no longer accepted:
    /// its `exp` plus the leeway.
    pub valid_until: u64,
    pub subject: String,
    pub roles: BTreeSet<Role>,
}

#[derive(Default)]
pub struct VerifiedTokens {
    tokens: Mutex<HashMap<Box<str>, Verified>>,
}

impl VerifiedTokens {
    /// What `token` was verified as, if it was and is still within its
    /// time at `now` (seconds since the Unix epoch). The caller still
    /// checks the key.
    pub fn get(&self, token: &str, now: u64) -> Option<Verified> {
        let tokens = self.lock();
        let verified = tokens.get(token)?;
        (now <= verified.valid_until).then(|| verified.clone())
    }

    /// Remembers what `token` was verified as.
    pub fn put(&self, token: &str, verified: Verified) {
        let mut tokens = self.lock();
        if tokens.len() >= CAPACITY && !tokens.contains_key(token) {
            tokens.clear();
        }
        tokens.insert(token.into(), verified);
    }

    /// Forgets `token` (its key is no longer the set's).
    pub fn forget(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Verified>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(valid_until: u64) -> Verified {
        Verified {
            issuer: 0,
            kid: Some("k".into()),
            key_id: 7,
            valid_until,
            subject: "orchestrator".into(),
            roles: BTreeSet::from([Role::Service]),
        }
    }

    #[test]
    fn a_token_is_remembered_until_it_expires() {
        let tokens = VerifiedTokens::default();
        tokens.put("a.b.c", verified(1_000));
        assert_eq!(tokens.get("a.b.c", 999).unwrap().subject, "orchestrator");
        assert_eq!(tokens.get("a.b.c", 1_000).unwrap().key_id, 7);
        assert!(tokens.get("a.b.c", 1_001).is_none());
    }

    #[test]
    fn only_the_same_text_is_remembered() {
        let tokens = VerifiedTokens::default();
        tokens.put("a.b.c", verified(1_000));
        assert!(tokens.get("a.b.d", 10).is_none());
        assert!(tokens.get("a.b.", 10).is_none());
        tokens.forget("a.b.c");
        assert!(tokens.get("a.b.c", 10).is_none());
    }

    #[test]
    fn a_full_memo_starts_again() {
        let tokens = VerifiedTokens::default();
        for i in 0..CAPACITY {
            tokens.put(&format!("token-{i}"), verified(1_000));
        }
        assert!(tokens.get("token-0", 10).is_some());
        tokens.put("one more", verified(1_000));
        assert!(tokens.get("token-0", 10).is_none());
        assert!(tokens.get("one more", 10).is_some());
    }
}
