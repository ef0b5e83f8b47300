//! Who may call what: bearer tokens (JWT, RFC 7519) verified against the
//! trusted issuers' key sets, roles from the token, and one route table per
//! listener that says which roles each route admits.
//!
//! The route table is the only way a service declares a route: it builds
//! the axum router and the access rule of every route together, so a route
//! cannot exist without a rule, and the tests read the same table to try
//! every route with every role. A request to a route that is not public is
//! refused unless its token verifies (401) and carries a role the route
//! admits (403); an unknown path is 404 with or without a token, because
//! the rules run only for routes that matched.
//!
//! Verification is `jsonwebtoken`'s; this module only chooses what to
//! trust: the issuer (each with its own key set), the key (by `kid`), the
//! algorithm (pinned to the key's type, asymmetric only), the audience,
//! `exp` (required) and `nbf`, with 60 s of leeway for clocks.

mod authenticator;
pub mod jwks;
pub mod keys;
mod routes;
mod verified;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::http::Problem;
pub use authenticator::Authenticator;
pub use jwks::{KeySet, Source};
pub use routes::{Access, RouteTable, Rule};

/// The issuer and audience of the platform's own tokens (`make token`).
pub const PLATFORM_ISSUER: &str = "orders-platform";
pub const PLATFORM_AUDIENCE: &str = "orders-platform";

/// How often an unknown `kid` may make a key set be read again.
pub const REFETCH_FLOOR: Duration = Duration::from_secs(10);

/// Settings of token verification.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// The trusted issuers' key set as a JSON Web Key Set file; re-read
    /// when it changes.
    #[arg(long = "auth-jwks-file", env = "AUTH_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// The trusted issuers' key set at an identity provider's JWKS
    /// endpoint (Keycloak: `<realm URL>/protocol/openid-connect/certs`).
    #[arg(long = "auth-jwks-url", env = "AUTH_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Trusted token issuers (`iss`), comma-separated. An entry
    /// `issuer=<URL or file>` gives that issuer a key set of its own;
    /// the others use AUTH_JWKS_URL or AUTH_JWKS_FILE.
    #[arg(
        long = "auth-issuer",
        env = "AUTH_ISSUER",
        default_value = PLATFORM_ISSUER,
        value_delimiter = ','
    )]
    pub issuers: Vec<String>,

    /// The audience (`aud`) a token must name.
    #[arg(long = "auth-audience", env = "AUTH_AUDIENCE", default_value = PLATFORM_AUDIENCE)]
    pub audience: String,

    /// Longest a key set is used before it is read again: seconds, or
    /// with a unit (`90s`, `10m`, `1h`).
    #[arg(
        long = "auth-jwks-max-age",
        env = "AUTH_JWKS_MAX_AGE",
        default_value = "10m",
        value_parser = parse_duration
    )]
    pub jwks_max_age: Duration,

    /// The claim holding the token's roles, as a dotted path
    /// (Keycloak: `realm_access.roles`).
    #[arg(
        long = "auth-roles-claim",
        env = "AUTH_ROLES_CLAIM",
        default_value = "roles"
    )]
    pub roles_claim: String,

    /// Roles granted to one subject of one trusted issuer whatever its
    /// token's claims say, comma-separated entries `<issuer> <subject>
    /// <role>[+<role>...]`: for credentials whose issuer puts no roles in
    /// them, such as a Kubernetes service account's projected token
    /// (`https://kubernetes.default.svc.cluster.local
    /// system:serviceaccount:orders:saga-orchestrator service`).
    #[arg(long = "auth-grants", env = "AUTH_GRANTS", value_delimiter = ',', value_parser = parse_grant)]
    pub grants: Vec<Grant>,
}

/// Roles for one (issuer, subject), from `AUTH_GRANTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub issuer: String,
    pub subject: String,
    pub roles: Vec<Role>,
}

/// `<issuer> <subject> <role>[+<role>...]`.
pub fn parse_grant(text: &str) -> Result<Grant, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [issuer, subject, roles] = parts[..] else {
        return Err(format!(
            "`{text}`: a grant is `<issuer> <subject> <role>[+<role>...]`"
        ));
    };
    let roles = roles
        .split('+')
        .map(|name| Role::parse(name).ok_or_else(|| format!("`{name}` is not a role")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Grant {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        roles,
    })
}

impl AuthConfig {
    /// The platform's own issuer with its key set in `jwks_file`.
    pub fn platform(jwks_file: impl Into<PathBuf>) -> Self {
        Self {
            jwks_file: Some(jwks_file.into()),
            jwks_url: None,
            issuers: vec![PLATFORM_ISSUER.into()],
            audience: PLATFORM_AUDIENCE.into(),
            jwks_max_age: Duration::from_secs(600),
            roles_claim: "roles".into(),
            grants: Vec::new(),
        }
    }
}

/// `600`, `600s`, `10m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 600, 90s, 10m or 1h"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(value)),
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("`{text}`: the unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

/// A role a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Customer,
    Reader,
    Writer,
    Operator,
    Admin,
    Service,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Customer,
        Role::Reader,
        Role::Writer,
        Role::Operator,
        Role::Admin,
        Role::Service,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Operator => "operator",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }

    /// The roles this one includes (the contract's table): a writer and an
    /// operator may do all a reader may, an admin all of both.
    pub fn includes(self) -> &'static [Role] {
        match self {
            Self::Customer => &[Role::Customer],
            Self::Reader => &[Role::Reader],
            Self::Writer => &[Role::Writer, Role::Reader],
            Self::Operator => &[Role::Operator, Role::Reader],
            Self::Admin => &[Role::Admin, Role::Writer, Role::Operator, Role::Reader],
            Self::Service => &[Role::Service],
        }
    }
}

/// Who is calling, as their verified token says, and what the route they
/// called lets them see.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's `sub`.
    pub subject: String,
    /// Its roles, with those they include.
    pub roles: BTreeSet<Role>,
    /// Set when the route admitted the caller only as a customer: the
    /// customer (the token's `sub`) whose data alone it may touch.
    pub customer: Option<Uuid>,
}

impl Caller {
    /// True when the caller may see `customer_id`'s data through this
    /// route: anyone the route admits beyond the customer role, or that
    /// customer.
    pub fn may_see(&self, customer_id: Uuid) -> bool {
        self.customer.is_none_or(|own| own == customer_id)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The route table's guard puts it there for every route that is
        // not public; a handler asking for it on a public route is a bug,
        // and refusing is the safe way to fail.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| unauthorized("this request needs a bearer token").into_response())
    }
}

/// Why a token was refused (always a 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// 401 `unauthorized`, with the challenge RFC 6750 asks for.
pub fn unauthorized(detail: impl Into<String>) -> AuthProblem {
    AuthProblem {
        problem: Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        ),
        challenge: "Bearer",
    }
}

/// 403 `forbidden`.
pub fn forbidden(detail: impl Into<String>) -> AuthProblem {
    AuthProblem {
        problem: Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail),
        challenge: "Bearer error=\"insufficient_scope\"",
    }
}

/// A 401 or 403 problem with its `WWW-Authenticate` header.
#[derive(Debug)]
pub struct AuthProblem {
    pub problem: Problem,
    challenge: &'static str,
}

impl IntoResponse for AuthProblem {
    fn into_response(self) -> Response {
        let mut response = self.problem.into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(self.challenge),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("600").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10d").is_err());
    }

    #[test]
    fn a_grant_names_an_issuer_a_subject_and_roles() {
        assert_eq!(
            parse_grant("https://k8s.local system:serviceaccount:orders:saga service").unwrap(),
            Grant {
                issuer: "https://k8s.local".into(),
                subject: "system:serviceaccount:orders:saga".into(),
                roles: vec![Role::Service],
            }
        );
        assert_eq!(
            parse_grant("iss sub reader+operator").unwrap().roles,
            [Role::Reader, Role::Operator]
        );
        assert!(parse_grant("iss sub").is_err());
        assert!(parse_grant("iss sub root").is_err());
    }

    #[test]
    fn an_admin_includes_every_role_but_customer_and_service() {
        let included: BTreeSet<Role> = Role::Admin.includes().iter().copied().collect();
        assert!(included.contains(&Role::Writer) && included.contains(&Role::Operator));
        assert!(!included.contains(&Role::Service) && !included.contains(&Role::Customer));
    }
}
