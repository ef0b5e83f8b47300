//! A loopback proxy in front of the Docker socket that lowers the API version
//! in request paths to what the engine supports.
//!
//! testcontainers 0.28 speaks the Docker API through bollard 0.21, which puts
//! `/v1.53/` in every path and does not negotiate; Debian's Docker 20.10
//! engine answers anything above 1.41 with "client version is too new". The
//! requests testcontainers makes (create, start, inspect, logs, stop,
//! remove) mean the same at 1.41, so rewriting the prefix is enough.
//! `compose/docker-api.sh` starts this shim and points `DOCKER_HOST` at it
//! only when the engine is older than bollard's version.
//!
//! Whoever can talk to the Docker API is root on the host, so the shim must
//! not widen who can: it listens on a Unix socket of mode 0600, owned by
//! the user running it, inside a directory that only that user may enter
//! (`docker-api.sh` makes one with `mktemp -d`), never on TCP, where any
//! local user or container on the host's network could reach it.
//!
//! Usage: `docker-api-shim ENGINE_SOCKET LISTEN_SOCKET`; it prints the
//! socket it listens on once it accepts connections.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(listen)) = (args.next(), args.next()) else {
        bail!("usage: docker-api-shim ENGINE_SOCKET LISTEN_SOCKET");
    };
    let (socket, listen) = (PathBuf::from(socket), PathBuf::from(listen));

    let engine_version = engine_api_version(&socket).await?;
    let listener = listen_privately(&listen)?;
    println!(
        "docker-api-shim: unix://{} -> {} (API {engine_version})",
        listen.display(),
        socket.display()
    );

    let target = Arc::new((socket, engine_version));
    loop {
        let (stream, _) = listener.accept().await?;
        let target = Arc::clone(&target);
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(request, Arc::clone(&target)));
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                eprintln!("docker-api-shim: connection failed: {error}");
            }
        });
    }
}

/// A Unix socket at `path` that only this user may connect to: mode 0600,
/// in a directory no one else may enter (checked, since the socket exists
/// with the umask's mode for a moment before its mode is set).
fn listen_privately(path: &Path) -> anyhow::Result<UnixListener> {
    let directory = path
        .parent()
        .context("the listening socket's path has no directory")?;
    let metadata =
        std::fs::metadata(directory).with_context(|| format!("reading {}", directory.display()))?;
    if metadata.permissions().mode() & 0o077 != 0
        || metadata.uid() != std::fs::metadata("/proc/self")?.uid()
    {
        bail!(
            "{} must belong to this user and be closed to others (mode 0700)",
            directory.display()
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("removing {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Asks the engine for the highest API version it supports.
async fn engine_api_version(socket: &Path) -> anyhow::Result<String> {
    let request = Request::get("/version")
        .header("host", "docker")
        .body(Empty::<Bytes>::new())?;
    let response = send(socket, request)
        .await
        .map_err(|error| anyhow::anyhow!("asking the Docker engine for its version: {error}"))?;
    let body = response.into_body().collect().await?.to_bytes();
    let version: serde_json::Value = serde_json::from_slice(&body)?;
    match version["ApiVersion"].as_str() {
        Some(v) => Ok(v.to_owned()),
        None => bail!("the Docker engine did not report ApiVersion"),
    }
}

async fn forward(
    mut request: Request<Incoming>,
    target: Arc<(PathBuf, String)>,
) -> Result<Response<Incoming>, BoxError> {
    let (socket, engine_version) = &*target;
    if let Some(lowered) = lower_version(request.uri(), engine_version) {
        *request.uri_mut() = lowered;
    }
    send(socket, request).await
}

async fn send<B>(socket: &Path, request: Request<B>) -> Result<Response<Incoming>, BoxError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when the response body has been read.
        let _ = connection.await;
    });
    Ok(sender.send_request(request).await?)
}

/// `/v1.53/containers/create?x` becomes `/v1.41/containers/create?x` when the
/// engine supports 1.41; paths without a version, or with one the engine
/// supports, are left alone.
fn lower_version(uri: &Uri, engine_version: &str) -> Option<Uri> {
    let path_and_query = uri.path_and_query()?.as_str();
    let rest = path_and_query.strip_prefix("/v")?;
    let (version, tail) = rest.split_once('/')?;
    if parse_version(version)? <= parse_version(engine_version)? {
        return None;
    }
    format!("/v{engine_version}/{tail}").parse().ok()
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_are_lowered_and_others_kept() {
        let lowered = |p: &str| lower_version(&p.parse().unwrap(), "1.41").map(|u| u.to_string());
        assert_eq!(
            lowered("/v1.53/containers/create?name=x").as_deref(),
            Some("/v1.41/containers/create?name=x")
        );
        assert_eq!(lowered("/v1.41/containers/json"), None);
        assert_eq!(lowered("/v1.40/containers/json"), None);
        assert_eq!(lowered("/_ping"), None);
    }
}
