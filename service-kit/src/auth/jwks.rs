//! Key sets (RFC 7517) from a file or an identity provider's URL, cached.
//!
//! - A set is used for at most `max_age` after it was read; after that it
//!   is read again, and if that fails no key is trusted (fail closed).
//! - A token naming a `kid` the set does not hold makes the set be read
//!   again at once, but no more than once every `refetch_floor`, so a
//!   stream of tokens with made-up key ids cannot turn into a stream of
//!   requests to the identity provider.
//! - After a failed read, with no set left in hand, the set is read again
//!   no more than once every `refetch_floor` either, so an outage of the
//!   provider does not become a request to it per token.
//! - A file is read again as soon as it changes (its modification time or
//!   size), which also covers a symbolic link swapped to a new file.
//! - Only asymmetric signature keys are kept; each is pinned to the
//!   algorithms its type allows (its `alg` if it names one), so a token
//!   cannot choose, say, HS256 with the public key as the secret.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::Mutex;

/// Where a key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Url(String),
}

impl Source {
    /// `http://` and `https://` are URLs; anything else is a file path.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("http://") || text.starts_with("https://") {
            Self::Url(text.to_owned())
        } else {
            Self::File(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Url(url) => write!(f, "{url}"),
        }
    }
}

/// A verification key and the algorithms a token signed with it may use.
#[derive(Clone)]
pub struct Key {
    pub decoding: DecodingKey,
    pub algorithms: Vec<Algorithm>,
    /// Unique to this key as read this time: reading the set again gives
    /// every key a new one, so a token verified with the key before is
    /// verified again rather than remembered (`auth::verified`).
    pub id: u64,
}

#[derive(Default)]
struct Cached {
    by_kid: HashMap<String, Key>,
    /// Keys without a `kid`, tried for tokens without one.
    anonymous: Vec<Key>,
    read_at: Option<Instant>,
    last_attempt: Option<Instant>,
    /// For a file: what it looked like when read.
    file_stamp: Option<(SystemTime, u64)>,
}

pub struct KeySet {
    source: Source,
    max_age: Duration,
    refetch_floor: Duration,
    http: reqwest::Client,
    cached: Mutex<Cached>,
}

impl KeySet {
    pub fn new(source: Source, max_age: Duration, refetch_floor: Duration) -> Self {
        Self {
            source,
            max_age,
            refetch_floor,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a client without TLS settings builds"),
            cached: Mutex::new(Cached::default()),
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The key a token with `kid` names, if the set holds one now.
    pub async fn key(&self, kid: Option<&str>) -> Option<Key> {
        let mut cached = self.cached.lock().await;
        let stale = match cached.read_at {
            None => true,
            Some(at) => at.elapsed() >= self.max_age || self.file_changed(&cached),
        };
        // With no set in hand because the last read failed, the set is
        // read again no more than once every `refetch_floor` (a file as
        // soon as it changes): an outage of the identity provider must
        // not turn every request into a request to it, each waiting for
        // its timeout while holding the lock.
        let failed_recently = cached.read_at.is_none()
            && cached
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.refetch_floor)
            && !self.file_changed(&cached);
        if stale && failed_recently {
            return None;
        }
        if stale {
            self.refresh(&mut cached).await;
        }
        if let Some(key) = find(&cached, kid) {
            return Some(key);
        }
        // An unknown key id: the provider may have rotated its keys.
        let may_fetch = cached
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.refetch_floor);
        if kid.is_some() && may_fetch && !stale {
            self.refresh(&mut cached).await;
            return find(&cached, kid);
        }
        None
    }

    fn file_changed(&self, cached: &Cached) -> bool {
        match &self.source {
            Source::File(path) => file_stamp(path) != cached.file_stamp,
            Source::Url(_) => false,
        }
    }

    async fn refresh(&self, cached: &mut Cached) {
        cached.last_attempt = Some(Instant::now());
        let stamp = match &self.source {
            Source::File(path) => file_stamp(path),
            Source::Url(_) => None,
        };
        match self.read().await.and_then(|text| parse(&text)) {
            Ok((by_kid, anonymous)) => {
                if by_kid.is_empty() && anonymous.is_empty() {
                    tracing::warn!(source = %self.source, "the key set holds no usable signature key");
                }
                *cached = Cached {
                    by_kid,
                    anonymous,
                    read_at: cached.last_attempt,
                    last_attempt: cached.last_attempt,
                    file_stamp: stamp,
                };
            }
            Err(error) => {
                let expired = cached.read_at.is_none_or(|at| at.elapsed() >= self.max_age);
                tracing::warn!(
                    source = %self.source,
                    error = format!("{error:#}"),
                    expired,
                    "reading the key set failed"
                );
                if expired {
                    // Fail closed: no key is trusted past its maximum age.
                    cached.by_kid.clear();
                    cached.anonymous.clear();
                    cached.read_at = None;
                }
            }
        }
    }

    async fn read(&self) -> anyhow::Result<String> {
        match &self.source {
            Source::File(path) => tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("reading {}", path.display())),
            Source::Url(url) => {
                let response = self.http.get(url).send().await?;
                let status = response.status();
                if !status.is_success() {
                    bail!("{url} answered {status}");
                }
                Ok(response.text().await?)
            }
        }
    }
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn find(cached: &Cached, kid: Option<&str>) -> Option<Key> {
    match kid {
        Some(kid) => cached.by_kid.get(kid).cloned(),
        None => cached.anonymous.first().cloned(),
    }
}

type Parsed = (HashMap<String, Key>, Vec<Key>);

/// The usable keys of a JWKS document. A key that is not an asymmetric
/// signature key, or cannot be read, is skipped (an identity provider
/// publishes encryption keys in the same set).
pub fn parse(text: &str) -> anyhow::Result<Parsed> {
    let document: Value = serde_json::from_str(text).context("the key set is not JSON")?;
    let Some(keys) = document["keys"].as_array() else {
        bail!("the key set has no `keys` array");
    };
    let mut by_kid = HashMap::new();
    let mut anonymous = Vec::new();
    for value in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
            continue;
        };
        let Some(key) = usable(&jwk) else {
            continue;
        };
        match &jwk.common.key_id {
            Some(kid) => {
                by_kid.insert(kid.clone(), key);
            }
            None => anonymous.push(key),
        }
    }
    Ok((by_kid, anonymous))
}

fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let allowed: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) => match params.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return None,
        },
        // Symmetric keys are never trusted: whoever can verify could sign;
        // key types added to the crate later are not trusted until listed.
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => allowed,
        Some(named) => {
            let named = algorithm_of(named)?;
            if !allowed.contains(&named) {
                return None;
            }
            vec![named]
        }
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    static READ: AtomicU64 = AtomicU64::new(1);
    Some(Key {
        decoding,
        algorithms,
        id: READ.fetch_add(1, Ordering::Relaxed),
    })
}

fn algorithm_of(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_encryption_keys_are_dropped_and_the_rest_pinned() {
        let text = r#"{"keys": [
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "odd", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"}
        ]}"#;
        let (by_kid, anonymous) = parse(text).unwrap();
        assert!(anonymous.is_empty());
        assert_eq!(by_kid.keys().collect::<Vec<_>>(), ["ed"]);
        assert_eq!(by_kid["ed"].algorithms, [Algorithm::EdDSA]);
    }

    #[tokio::test]
    async fn a_key_file_that_appears_after_a_failed_read_is_read_at_once() {
        let dir = std::env::temp_dir().join(format!("jwks-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        let keys = KeySet::new(
            Source::File(path.clone()),
            Duration::from_secs(600),
            Duration::from_secs(600),
        );
        assert!(keys.key(Some("ed")).await.is_none(), "no file yet");
        std::fs::write(
            &path,
            r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
        )
        .unwrap();
        assert!(
            keys.key(Some("ed")).await.is_some(),
            "the new file is read although the refetch floor has not passed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(parse("{}").is_err());
        assert!(parse("not json").is_err());
    }
}
