//! The platform's own signing key: an Ed25519 key pair whose public half
//! every service trusts through a JSON Web Key Set, and whose private half
//! mints tokens (`make token`, the orchestrator's renewing credential, the
//! tests). In production the keys come from an identity provider instead
//! and none of this runs.
//!
//! Ed25519 because it is an asymmetric algorithm with one fixed curve and
//! no parameters to get wrong, its keys are 32 bytes, and signing is cheap
//! enough to mint a token per test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};

/// An Ed25519 signing key with its key id.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct Claims {
    pub issuer: String,
    pub audience: String,
    pub subject: String,
    pub roles: Vec<String>,
    /// How long the token is valid from now.
    pub ttl: Duration,
}

#[derive(Serialize)]
struct Payload<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    roles: &'a [String],
    iat: u64,
    nbf: u64,
    exp: u64,
}

impl SigningKey {
    /// A new key from the operating system's random numbers.
    pub fn generate(kid: &str) -> Self {
        let seed: [u8; 32] = rand::random();
        Self {
            kid: kid.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// Reads a key written by [`SigningKey::to_pem`] (PKCS #8).
    pub fn from_pem(kid: &str, pem: &str) -> anyhow::Result<Self> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|error| anyhow::anyhow!("not an Ed25519 PKCS #8 key: {error}"))?;
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    /// The private key as PKCS #8 PEM; store it readable by its owner only.
    pub fn to_pem(&self) -> anyhow::Result<String> {
        let pem = self
            .key
            .to_pkcs8_pem(Default::default())
            .map_err(|error| anyhow::anyhow!("encoding the key: {error}"))?;
        Ok(pem.to_string())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
        })
    }

    /// A key set holding just this key's public half.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// A signed token (EdDSA) with `claims`, issued now.
    pub fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        self.mint_raw(&Payload {
            iss: &claims.issuer,
            aud: &claims.audience,
            sub: &claims.subject,
            roles: &claims.roles,
            iat: now,
            nbf: now,
            exp: now + claims.ttl.as_secs(),
        })
    }

    /// A signed token with any payload: for tests that need a malformed
    /// one (no `exp`, say) with a valid signature.
    pub fn mint_raw(&self, payload: &impl Serialize) -> anyhow::Result<String> {
        let der = self
            .key
            .to_pkcs8_der()
            .map_err(|error| anyhow::anyhow!("encoding the key: {error}"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, payload, &EncodingKey::from_ed_der(der.as_bytes()))
            .context("signing the token")
    }
}

impl std::fmt::Debug for SigningKey {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}
