//! A fault-injecting HTTP proxy for tests: forwards every request to a
//! target service, except those whose path contains one of the configured
//! fragments, which get a 503 problem as if the service were failing, or
//! are forwarded only after a delay, as if it were slow. The rules change
//! at run time, so a test can make a service "unavailable" for a while and
//! then bring it back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Shared {
    target: String,
    failing: Arc<Mutex<Vec<String>>>,
    slow: Arc<Mutex<Vec<(String, Duration)>>>,
    client: reqwest::Client,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    failing: Arc<Mutex<Vec<String>>>,
    slow: Arc<Mutex<Vec<(String, Duration)>>>,
    stop: CancellationToken,
}

impl FaultProxy {
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("binding the proxy");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let failing = Arc::new(Mutex::new(Vec::new()));
        let slow = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            target: target.trim_end_matches('/').to_owned(),
            failing: Arc::clone(&failing),
            slow: Arc::clone(&slow),
            client: reqwest::Client::new(),
        };
        let app = Router::new().fallback(forward).with_state(shared);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        Self {
            url,
            failing,
            slow,
            stop,
        }
    }

    /// Requests whose path contains any of `fragments` fail with 503 from
    /// now on (`""` matches every request); an empty list lets everything
    /// through.
    pub fn fail(&self, fragments: &[&str]) {
        *self.failing.lock().expect("not poisoned") =
            fragments.iter().map(|f| (*f).to_owned()).collect();
    }

    /// Requests whose path contains any of `fragments` are forwarded
    /// only after `delay` from now on, replacing earlier delays.
    pub fn slow_down(&self, fragments: &[&str], delay: Duration) {
        *self.slow.lock().expect("not poisoned") =
            fragments.iter().map(|f| ((*f).to_owned(), delay)).collect();
    }

    /// Lets everything through at once.
    pub fn heal(&self) {
        self.fail(&[]);
        self.slow_down(&[], Duration::ZERO);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let fails = shared
        .failing
        .lock()
        .expect("not poisoned")
        .iter()
        .any(|fragment| path.contains(fragment.as_str()));
    if fails {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"type":"/problems/unavailable","title":"Unavailable","status":503,"detail":"fault injected by the test proxy"}"#,
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        return response;
    }
    let delay = shared
        .slow
        .lock()
        .expect("not poisoned")
        .iter()
        .find(|(fragment, _)| path.contains(fragment.as_str()))
        .map(|(_, delay)| *delay);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let method = request.method().clone();
    let headers = request.headers().clone();
    let Ok(body) = to_bytes(request.into_body(), 2 * 1024 * 1024).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut outgoing = shared
        .client
        .request(method, format!("{}{path}", shared.target))
        .body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    match outgoing.send().await {
        Ok(upstream) => {
            let status = upstream.status();
            let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
            let bytes = upstream.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// A TCP proxy that either forwards connections to a target or swallows
/// them: a connection accepted while it is closed stays open and never gets
/// an answer, the way a hung broker behaves (the client sees neither data
/// nor a refusal). Connections accepted while open are forwarded for their
/// whole life. It stops when dropped.
pub struct BlackHole {
    /// `127.0.0.1:PORT`
    pub addr: String,
    open: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
}

impl BlackHole {
    /// A proxy to `target` (`host:port`), closed.
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("binding the TCP proxy");
        let addr = listener.local_addr().expect("local address").to_string();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (target, is_open, stopped) = (target.to_owned(), Arc::clone(&open), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                };
                let forward = is_open.load(std::sync::atomic::Ordering::SeqCst);
                let (target, stopped) = (target.clone(), stopped.clone());
                tokio::spawn(async move {
                    if !forward {
                        // Hold the connection, answer nothing.
                        stopped.cancelled().await;
                        return;
                    }
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        tokio::select! {
                            () = stopped.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        }
                    }
                });
            }
        });
        Self { addr, open, stop }
    }

    /// From now on, new connections are forwarded.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
