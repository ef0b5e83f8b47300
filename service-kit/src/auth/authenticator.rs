//! The [`Authenticator`]: which issuers are trusted with which key set,
//! and what a token must satisfy to be believed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::Value;

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
        let header = asymmetric_header(token)?;
        let issuer = self.issuer(token)?;
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
        Ok((subject, roles))
    }

    /// The trusted issuer the token names. The issuer picks the key set;
    /// the signature check that follows is what makes the claim true.
    fn issuer(&self, token: &str) -> Result<&Issuer, Refused> {
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| refuse("the token's claims are not JSON"))?;
        let iss = unverified["iss"]
            .as_str()
            .ok_or_else(|| refuse("the token names no issuer"))?;
        self.inner
            .issuers
            .iter()
            .find(|i| i.name == iss)
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
