//! The [`Authenticator`]: which issuers are trusted with which key set,
//! and what a token must satisfy to be believed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::Value;

use super::verified::{Verified, VerifiedTokens};
use super::{AuthConfig, Grant, KeySet, REFETCH_FLOOR, Refused, Role, Source};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// A trusted issuer and where its keys are.
struct Issuer {
    name: String,
    keys: Arc<KeySet>,
}

/// Verifies bearer tokens; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: Vec<Issuer>,
    audience: String,
    roles_claim: Vec<String>,
    grants: Vec<Grant>,
    verified: VerifiedTokens,
}

/// A refusal for one of the fixed reasons (the others carry the
/// verifier's error).
fn refuse(why: &str) -> Refused {
    Refused(why.to_owned())
}

impl Authenticator {
    /// From the settings; an issuer without any key set is logged and
    /// trusted with none (its tokens are refused).
    pub fn new(config: &AuthConfig) -> Self {
        Self::with_refetch_floor(config, REFETCH_FLOOR)
    }

    pub fn with_refetch_floor(config: &AuthConfig, refetch_floor: Duration) -> Self {
        let default_source = config
            .jwks_url
            .as_deref()
            .map(|url| Source::Url(url.to_owned()))
            .or_else(|| config.jwks_file.clone().map(Source::File));
        let mut shared: Option<Arc<KeySet>> = None;
        let mut issuers = Vec::new();
        for entry in config
            .issuers
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            let (name, source) = match entry.split_once('=') {
                Some((name, source)) => (name.trim(), Some(Source::parse(source.trim()))),
                None => (entry, None),
            };
            let keys = match source {
                Some(source) => Arc::new(KeySet::new(source, config.jwks_max_age, refetch_floor)),
                None => match (&shared, &default_source) {
                    (Some(keys), _) => Arc::clone(keys),
                    (None, Some(source)) => {
                        let keys = Arc::new(KeySet::new(
                            source.clone(),
                            config.jwks_max_age,
                            refetch_floor,
                        ));
                        shared = Some(Arc::clone(&keys));
                        keys
                    }
                    (None, None) => {
                        tracing::error!(
                            issuer = name,
                            "no key set for this issuer (set AUTH_JWKS_FILE or AUTH_JWKS_URL): \
                             its tokens are refused"
                        );
                        continue;
                    }
                },
            };
            issuers.push(Issuer {
                name: name.to_owned(),
                keys,
            });
        }
        if issuers.is_empty() {
            tracing::error!("no trusted issuer has a key set: every token is refused");
        }
        Self {
            inner: Arc::new(Inner {
                issuers,
                audience: config.audience.clone(),
                roles_claim: config.roles_claim.split('.').map(str::to_owned).collect(),
                grants: config.grants.clone(),
                verified: VerifiedTokens::default(),
            }),
        }
    }

    /// Reads every key set once, so the first request does not wait for
    /// it (a failure is logged; requests try again).
    pub async fn warm_up(&self) {
        for issuer in &self.inner.issuers {
            let _ = issuer.keys.key(Some("")).await;
        }
    }

    /// The subject and roles of a valid token.
    pub async fn verify(&self, token: &str) -> Result<(String, BTreeSet<Role>), Refused> {
        if let Some(known) = self.remembered(token).await {
            return Ok(known);
        }
        let header = asymmetric_header(token)?;
        let (index, issuer) = self.issuer(token)?;
        let key = issuer
            .keys
            .key(header.kid.as_deref())
            .await
            .ok_or_else(|| refuse("no trusted key has the token's key id"))?;
        if !key.algorithms.contains(&header.alg) {
            return Err(refuse("the token's algorithm does not fit its key"));
        }
        let validation = self.validation(header.alg, &issuer.name);
        let claims = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .map_err(|error| Refused(format!("the token is not valid: {error}")))?
            .claims;
        let subject = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refuse("the token has no subject"))?
            .to_owned();
        let roles = self.roles(&claims, &issuer.name, &subject);
        // `exp` is required, so a verified token has one.
        if let Some(exp) = claims["exp"].as_f64() {
            self.inner.verified.put(
                token,
                Verified {
                    issuer: index,
                    kid: header.kid,
                    key_id: key.id,
                    valid_until: (exp as u64).saturating_add(LEEWAY_SECS),
                    subject: subject.clone(),
                    roles: roles.clone(),
                },
            );
        }
        Ok((subject, roles))
    }

    /// What `token` was verified as before, if it has not expired since
    /// and the key that verified it is still the one its issuer's key set
    /// holds under its `kid` (the set is read again as `verify` would).
    async fn remembered(&self, token: &str) -> Option<(String, BTreeSet<Role>)> {
        let now = jsonwebtoken::get_current_timestamp();
        let known = self.inner.verified.get(token, now)?;
        let issuer = &self.inner.issuers[known.issuer];
        let key = issuer.keys.key(known.kid.as_deref()).await;
        if key.is_none_or(|key| key.id != known.key_id) {
            self.inner.verified.forget(token);
            return None;
        }
        Some((known.subject, known.roles))
    }

    /// The trusted issuer the token names, and its place among them. The
    /// issuer picks the key set; the signature check that follows is what
    /// makes the claim true.
    fn issuer(&self, token: &str) -> Result<(usize, &Issuer), Refused> {
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| refuse("the token's claims are not JSON"))?;
        let iss = unverified["iss"]
            .as_str()
            .ok_or_else(|| refuse("the token names no issuer"))?;
        self.inner
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == iss)
            .ok_or_else(|| refuse("the token's issuer is not trusted"))
    }

    /// What a token of `issuer` signed with `alg` must satisfy: `exp`,
    /// `iss`, `aud` and `sub` present, the audience and issuer these, and
    /// `exp` and `nbf` within the leeway.
    fn validation(&self, alg: Algorithm, issuer: &str) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_issuer(&[issuer]);
        validation
    }

    /// The roles of verified claims (those the roles claim names, and the
    /// grants of this issuer and subject), each with the roles it includes.
    fn roles(&self, claims: &Value, issuer: &str, subject: &str) -> BTreeSet<Role> {
        let mut roles = BTreeSet::new();
        let mut at = claims;
        for part in &self.inner.roles_claim {
            at = &at[part.as_str()];
        }
        for name in at
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if let Some(role) = Role::parse(name) {
                roles.extend(role.includes());
            }
        }
        // The issuer is the verified one here: a grant cannot be claimed.
        for grant in &self.inner.grants {
            if grant.issuer == issuer && grant.subject == subject {
                roles.extend(grant.roles.iter().flat_map(|role| role.includes()));
            }
        }
        roles
    }
}

/// The token's header, if it is a JWT signed with an asymmetric algorithm:
/// with a symmetric one, a public key could serve as the secret.
fn asymmetric_header(token: &str) -> Result<Header, Refused> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| refuse("the token is not a JWT signed with an asymmetric algorithm"))?;
    if matches!(
        header.alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(refuse("symmetric algorithms are not accepted"));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PLATFORM_AUDIENCE;
    use crate::auth::keys::{Claims, SigningKey};

    fn mint(key: &SigningKey, ttl: Duration) -> String {
        key.mint(&Claims {
            issuer: "test-issuer".into(),
            audience: PLATFORM_AUDIENCE.into(),
            subject: "orchestrator".into(),
            roles: vec!["service".into()],
            ttl,
        })
        .unwrap()
    }

    /// A token verified once is answered from memory while its key stays
    /// the set's; once the set holds another key under the same `kid`, the
    /// same token is checked again, and refused.
    #[tokio::test]
    async fn a_remembered_token_is_refused_once_its_key_is_replaced() {
        let dir = std::env::temp_dir().join(format!("auth-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        let first = SigningKey::generate("k");
        let second = SigningKey::generate("k");
        std::fs::write(&path, first.jwks().to_string()).unwrap();
        let auth = Authenticator::new(&AuthConfig {
            jwks_file: Some(path.clone()),
            jwks_url: None,
            issuers: vec!["test-issuer".into()],
            audience: PLATFORM_AUDIENCE.into(),
            jwks_max_age: Duration::from_secs(600),
            roles_claim: "roles".into(),
            grants: Vec::new(),
        });
        let token = mint(&first, Duration::from_secs(600));
        for _ in 0..2 {
            let (subject, roles) = auth.verify(&token).await.expect("verified");
            assert_eq!(subject, "orchestrator");
            assert_eq!(roles.into_iter().collect::<Vec<_>>(), [Role::Service]);
        }
        assert!(
            auth.inner
                .verified
                .get(&token, jsonwebtoken::get_current_timestamp())
                .is_some(),
            "remembered"
        );
        // Another size, so the change shows whatever the clock's grain.
        std::fs::write(&path, format!("{}\n", second.jwks())).unwrap();
        let refused = auth.verify(&token).await.expect_err("the old key's token");
        assert!(refused.0.contains("not valid"), "{}", refused.0);
        auth.verify(&mint(&second, Duration::from_secs(600)))
            .await
            .expect("the new key's token");
        // A token another key signed with the same claims is not the
        // remembered one.
        let forged = mint(&SigningKey::generate("k"), Duration::from_secs(600));
        assert!(auth.verify(&forged).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
