//! The route table: each route with the roles it admits, building the
//! router and its guard from one list.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use uuid::Uuid;

use super::{Authenticator, Caller, Role, forbidden, unauthorized};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (the contract's short list).
    Public,
    /// A verified token with any of these roles (or one that includes
    /// it: see [`Role::includes`]). With [`Role::Customer`] listed, a
    /// customer is admitted too, scoped to their own data
    /// ([`Caller::customer`]).
    Roles(&'static [Role]),
}

impl Access {
    /// Reads of the write, read and operator APIs.
    pub const READ: Access = Access::Roles(&[Role::Reader]);
    /// Reads a customer may make of their own data.
    pub const READ_OWN: Access = Access::Roles(&[Role::Reader, Role::Customer]);
    /// Writes of the public write API.
    pub const WRITE: Access = Access::Roles(&[Role::Writer]);
    /// Writes a customer may make for themselves.
    pub const WRITE_OWN: Access = Access::Roles(&[Role::Writer, Role::Customer]);
    /// Operator actions.
    pub const OPERATE: Access = Access::Roles(&[Role::Operator]);
    /// The saga's internal step API.
    pub const SERVICE: Access = Access::Roles(&[Role::Service]);

    /// Whether a caller holding `roles` (with what they include) may call.
    pub fn admits(self, roles: &BTreeSet<Role>) -> bool {
        match self {
            Access::Public => true,
            Access::Roles(allowed) => allowed.iter().any(|role| roles.contains(role)),
        }
    }
}

/// One route and its access rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Method,
    /// In axum's syntax, `/v1/orders/{id}`.
    pub path: &'static str,
    pub access: Access,
}

/// Routes with their rules; [`RouteTable::build`] makes the router.
pub struct RouteTable<S> {
    rules: Vec<Rule>,
    router: Router<S>,
}

impl<S: Clone + Send + Sync + 'static> Default for RouteTable<S> {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            router: Router::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> RouteTable<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `method path` served by `handler`, admitting `access`.
    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        self.router = self.router.route(path, on(filter, handler));
        self.rules.push(Rule {
            method,
            path,
            access,
        });
        self
    }

    pub fn get<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.route(Method::GET, path, access, handler)
    }

    pub fn post<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.route(Method::POST, path, access, handler)
    }

    /// Merges a router that serves exactly `paths` with `GET`, all public
    /// (the operational endpoints: `service_kit::ops`).
    pub fn public(mut self, paths: &[&'static str], router: Router<S>) -> Self {
        for path in paths {
            self.rules.push(Rule {
                method: Method::GET,
                path,
                access: Access::Public,
            });
        }
        self.router = self.router.merge(router);
        self
    }

    /// Both tables' routes and rules.
    pub fn merge(mut self, other: RouteTable<S>) -> Self {
        self.rules.extend(other.rules);
        self.router = self.router.merge(other.router);
        self
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The router with every route behind its rule.
    pub fn build(self, auth: Authenticator) -> Router<S> {
        self.build_with(auth, |router| router)
    }

    /// Like [`RouteTable::build`], with `inner` wrapping the routes inside
    /// the guard: a layer there (idempotency, say) sees only requests
    /// whose token and roles were checked.
    pub fn build_with(
        self,
        auth: Authenticator,
        inner: impl FnOnce(Router<S>) -> Router<S>,
    ) -> Router<S> {
        let mut rules: HashMap<&'static str, Vec<(Method, Access)>> = HashMap::new();
        for rule in &self.rules {
            rules
                .entry(rule.path)
                .or_default()
                .push((rule.method.clone(), rule.access));
        }
        let guard = Arc::new(Guard { auth, rules });
        inner(self.router)
            .route_layer(axum::middleware::from_fn_with_state(guard, check))
            .method_not_allowed_fallback(method_not_allowed)
    }
}

struct Guard {
    auth: Authenticator,
    /// By path template, each method's access.
    rules: HashMap<&'static str, Vec<(Method, Access)>>,
}

/// Admits the request by its route's rule, or answers 401/403.
async fn check(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    let access = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| guard.rules.get(path.as_str()))
        .and_then(|methods| methods.iter().find(|(m, _)| *m == method))
        .map(|(_, access)| *access);
    // A matched route without a rule cannot be built by the table; if one
    // ever shows up, it is refused.
    let Some(access) = access else {
        return forbidden("this route has no access rule").into_response();
    };
    let Access::Roles(allowed) = access else {
        return next.run(request).await;
    };
    let token = match bearer(&request) {
        Ok(token) => token,
        Err(problem) => return problem.into_response(),
    };
    let (subject, roles) = match guard.auth.verify(token).await {
        Ok(verified) => verified,
        Err(refused) => return unauthorized(refused.0).into_response(),
    };
    let broader = allowed
        .iter()
        .any(|role| *role != Role::Customer && roles.contains(role));
    let customer = if broader {
        None
    } else if allowed.contains(&Role::Customer) && roles.contains(&Role::Customer) {
        match Uuid::parse_str(&subject) {
            Ok(id) => Some(id),
            Err(_) => {
                return forbidden("a customer token's subject must be the customer's id (a UUID)")
                    .into_response();
            }
        }
    } else {
        return forbidden(format!(
            "this request needs one of the roles {}",
            allowed
                .iter()
                .map(|role| role.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into_response();
    };
    request.extensions_mut().insert(Caller {
        subject,
        roles,
        customer,
    });
    next.run(request).await
}

/// 405 as a problem document (axum's own has an empty body).
async fn method_not_allowed() -> Response {
    crate::http::Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not take that method",
    )
    .into_response()
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(request: &Request) -> Result<&str, super::AuthProblem> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(unauthorized("this request needs a bearer token"));
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(unauthorized(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}
