//! `orders-auth`: the platform's own signing key for local use (`make up`,
//! `make token`): `keygen` makes the key pair once and writes its public key
//! set, `token` prints a token, and `renew` keeps a token file fresh for the
//! saga-orchestrator's `SERVICE_TOKEN_FILE`. In production the identity
//! provider does all of this and none of it runs.
//!
//! A keys directory holds `signing-key.pem` (the private key, mode 0600:
//! only `token` and `renew` read it) and `signing-key.kid` (its key id);
//! `keygen` also writes the public key set the services trust (mode 0644),
//! there or wherever `--jwks` says.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use service_kit::auth::keys::{Claims, SigningKey};
use service_kit::auth::{PLATFORM_AUDIENCE, PLATFORM_ISSUER};

const KEY_FILE: &str = "signing-key.pem";
const KID_FILE: &str = "signing-key.kid";
const JWKS_FILE: &str = "jwks.json";

#[derive(Parser)]
#[command(
    name = "orders-auth",
    version,
    about = "The platform's own signing key: make it, mint tokens, keep a token file fresh."
)]
enum Cli {
    /// Makes the signing key pair in DIR unless it is there, and writes its
    /// public key set (DIR/jwks.json) either way.
    Keygen {
        #[command(flatten)]
        keys: KeysDir,
        /// Where the public key set goes (default DIR/jwks.json); it may
        /// be anywhere readable, as the private key's directory should not.
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
    /// Prints a token signed with the key in DIR (the last line of output).
    Token {
        #[command(flatten)]
        keys: KeysDir,
        #[command(flatten)]
        claims: ClaimArgs,
    },
    /// Writes a token to FILE now and again every EVERY seconds, each time
    /// to a temporary file renamed over FILE, so a reader never sees half a
    /// token. Runs until SIGTERM or Ctrl-C.
    Renew {
        #[command(flatten)]
        keys: KeysDir,
        #[command(flatten)]
        claims: ClaimArgs,
        /// Where the token goes.
        #[arg(long, env = "ORDERS_AUTH_TOKEN_FILE")]
        out: PathBuf,
        /// Seconds between two tokens; keep it well under the TTL, so the
        /// reader re-reads the file before its token expires.
        #[arg(long, env = "ORDERS_AUTH_RENEW_EVERY", default_value_t = 1200)]
        every: u64,
    },
}

#[derive(clap::Args)]
struct KeysDir {
    /// The keys directory.
    #[arg(long = "keys-dir", env = "ORDERS_AUTH_KEYS_DIR")]
    dir: PathBuf,
}

#[derive(clap::Args)]
struct ClaimArgs {
    /// The token's roles, comma-separated (customer, reader, writer,
    /// operator, admin, service).
    #[arg(long, env = "ORDERS_AUTH_ROLE", value_delimiter = ',', required = true)]
    role: Vec<String>,
    /// The token's subject (`sub`); a customer's is their customer id.
    /// Default: `local-<role>`.
    #[arg(long, env = "ORDERS_AUTH_SUBJECT")]
    subject: Option<String>,
    /// How long the token is valid, in seconds.
    #[arg(long, env = "ORDERS_AUTH_TTL", default_value_t = 3600)]
    ttl: u64,
    #[arg(long, env = "ORDERS_AUTH_ISSUER", default_value = PLATFORM_ISSUER)]
    issuer: String,
    #[arg(long, env = "ORDERS_AUTH_AUDIENCE", default_value = PLATFORM_AUDIENCE)]
    audience: String,
}

impl ClaimArgs {
    fn claims(&self) -> anyhow::Result<Claims> {
        if self.ttl == 0 {
            bail!("the TTL must be at least one second");
        }
        let subject = match &self.subject {
            Some(subject) if !subject.is_empty() => subject.clone(),
            _ if self.role.iter().any(|r| r == "customer") => {
                bail!("a customer's token needs SUBJECT=<customer id>")
            }
            _ => format!("local-{}", self.role.join("-")),
        };
        Ok(Claims {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            subject,
            roles: self.role.clone(),
            ttl: Duration::from_secs(self.ttl),
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Keygen { keys, jwks } => {
            let jwks = jwks.unwrap_or_else(|| keys.dir.join(JWKS_FILE));
            keygen(&keys.dir, &jwks)
        }
        Cli::Token { keys, claims } => {
            let token = load(&keys.dir)?.mint(&claims.claims()?)?;
            println!("{token}");
            Ok(())
        }
        Cli::Renew {
            keys,
            claims,
            out,
            every,
        } => renew(&keys.dir, &claims, &out, Duration::from_secs(every.max(1))).await,
    }
}

fn keygen(dir: &Path, jwks_path: &Path) -> anyhow::Result<()> {
    // Only its owner may look inside: it holds the private key.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let key = if dir.join(KEY_FILE).exists() {
        load(dir)?
    } else {
        let kid = format!(
            "orders-platform-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let key = SigningKey::generate(&kid);
        write_new(&dir.join(KID_FILE), kid.as_bytes(), 0o600)?;
        write_new(&dir.join(KEY_FILE), key.to_pem()?.as_bytes(), 0o600)?;
        eprintln!("orders-auth: made signing key {kid} in {}", dir.display());
        key
    };
    let jwks = serde_json::to_vec_pretty(&key.jwks())?;
    replace(jwks_path, &jwks, 0o644)
}

fn load(dir: &Path) -> anyhow::Result<SigningKey> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (run `orders-auth keygen --keys-dir {}` first)",
                path.display(),
                dir.display()
            )
        })
    };
    SigningKey::from_pem(read(KID_FILE)?.trim(), &read(KEY_FILE)?)
}

async fn renew(dir: &Path, claims: &ClaimArgs, out: &Path, every: Duration) -> anyhow::Result<()> {
    let key = load(dir)?;
    if every >= Duration::from_secs(claims.ttl) {
        bail!(
            "renewing every {every:?} would let a {} s token expire",
            claims.ttl
        );
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let token = key.mint(&claims.claims()?)?;
        // Readable by the service that mounts the file; the directory it
        // lives in is what keeps it from everybody else.
        replace(out, format!("{token}\n").as_bytes(), 0o644)?;
        eprintln!(
            "orders-auth: wrote a {} s token to {}",
            claims.ttl,
            out.display()
        );
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Writes a file that must not exist yet, created with `mode` (never
/// readable by others, not even for a moment).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Replaces `path` atomically: a temporary file beside it, renamed over it.
fn replace(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&temporary);
    write_new(&temporary, contents, mode)?;
    // `mode` at creation is reduced by the umask; set it exactly.
    fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))?;
    fs::rename(&temporary, path)
        .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))?;
    Ok(())
}
