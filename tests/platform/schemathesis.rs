//! Schemathesis (property-based tests generated from an OpenAPI document)
//! against every listener of the platform: `st run --checks all` over each
//! listener's own `/openapi.json`, with a token that may call every route
//! of it, on a platform of its own (its own database and topics, so the
//! rebuilds, retries and orders it causes touch nothing else). Every
//! answer must be what the document says: documented statuses, bodies
//! and content types, bounds that the service really enforces, 401 without
//! the token, 405 with `Allow` for another method, and no server error.
//!
//! `make test` installs schemathesis (`compose/test.sh`), names its program
//! in `SCHEMATHESIS` and runs this test on its own after the rest
//! (`cargo test -p tests --test platform -- --ignored schemathesis::`). `tests/schemathesis.toml` says, per
//! operation, which answers the contract gives to requests that are valid
//! by the schema but refused by the state they meet (an unknown customer
//! in an order is 422; a version `If-Match` does not find is 412), or by a
//! rule between two parameters that a schema cannot state;
//! `tests/schemathesis_hooks.py` drops only the refusal of a reused
//! `Idempotency-Key`, which schemathesis sends again with another body.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::platform::fast_retries;
use harness::services::{self, RunningService};
use harness::{TestEnv, eventually};

/// Cases per operation in the fuzzing phase; the examples and coverage
/// phases add their own, bounded by the document. Enough to find a bound
/// the document does not state; small enough that the whole test takes a
/// few minutes on two cores.
const MAX_EXAMPLES: u32 = 15;

/// The same cases on every run unless `SCHEMATHESIS_SEED` says otherwise.
const SEED: &str = "25";

/// The `st` program: `SCHEMATHESIS`, else where `make test` installs it.
fn schemathesis() -> PathBuf {
    if let Some(set) = std::env::var_os("SCHEMATHESIS").filter(|v| !v.is_empty()) {
        return PathBuf::from(set);
    }
    let installed = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/orders-platform/schemathesis/bin/st");
    assert!(
        installed.is_file(),
        "schemathesis is not installed: run `make test` (compose/test.sh installs it into \
         ~/.cache/orders-platform/schemathesis), or set SCHEMATHESIS to its `st` program"
    );
    installed
}

/// One listener to test: its name, URL and the token that may call all of
/// its routes.
struct Listener {
    name: &'static str,
    url: String,
    token: String,
}

/// What one run found.
struct Run {
    name: &'static str,
    passed: bool,
    summary: String,
    output: String,
    took: Duration,
}

async fn run(st: &PathBuf, listener: &Listener, workdir: &std::path::Path) -> Run {
    let started = Instant::now();
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let output = tokio::process::Command::new(st)
        .current_dir(workdir)
        .args([
            "--config-file",
            concat!(env!("CARGO_MANIFEST_DIR"), "/schemathesis.toml"),
            "run",
            &format!("{}/openapi.json", listener.url),
            "--checks",
            "all",
            "--header",
            &format!("Authorization: Bearer {}", listener.token),
            "--max-examples",
            &MAX_EXAMPLES.to_string(),
            "--seed",
            &seed,
            // One worker: Python 3.11 can fail parsing source in two
            // threads at once (hypothesis describing a strategy: "AST
            // constructor recursion depth mismatch"), an error of the tool
            // that would fail the run.
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .env("NO_COLOR", "1")
        .env(
            "SCHEMATHESIS_HOOKS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/schemathesis_hooks.py"),
        )
        .output()
        .await
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    // What was generated and found ("639 generated, 8 found 8 unique
    // failures, 8 skipped") and the closing line ("8 failures, 3 warnings
    // in 16.29s").
    let lines: Vec<&str> = stdout
        .lines()
        .map(|line| line.trim_matches(|c: char| c == '=' || c.is_whitespace()))
        .filter(|line| !line.is_empty())
        .collect();
    let generated = lines.iter().rfind(|line| line.contains(" generated"));
    let summary = format!(
        "{}; {}",
        generated.unwrap_or(&"(nothing generated)"),
        lines.last().unwrap_or(&"(no output)")
    );
    let mut text = stdout.clone();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Run {
        name: listener.name,
        passed: output.status.success(),
        summary,
        output: text,
        took: started.elapsed(),
    }
}

// On its own, after the rest (compose/test.sh): its thousands of requests,
// projection rebuilds among them, would otherwise load the machine under
// the tests that time contention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run on its own by make test (compose/test.sh), after the rest"]
async fn every_listener_answers_as_its_document_says() {
    let st = schemathesis();
    let env = TestEnv::new().await;
    let command = services::command_service(&env).await;
    let internal = command.internal_url.clone().expect("an internal listener");
    let projector = services::projector(&env).await;
    // A `min_version` no read model reaches is 504 when the wait ends: a
    // short wait keeps the cases that ask for one quick.
    let query = services::query_service_with(&env, |config| {
        config.min_version_timeout_ms = 200;
    })
    .await;
    let orchestrator = services::saga_orchestrator(&env, &internal, fast_retries).await;
    let admin = harness::auth::token("admin", "schemathesis-admin");
    let service = harness::auth::token("service", "schemathesis-service");
    let listeners = [
        ("command-service", &command.url, &admin),
        ("command-service (internal)", &internal, &service),
        ("query-service", &query.url, &admin),
        ("saga-orchestrator", &orchestrator.url, &admin),
        ("projector", &projector.url, &admin),
    ]
    .map(|(name, url, token)| Listener {
        name,
        url: url.clone(),
        token: token.clone(),
    });
    let client = reqwest::Client::new();
    for listener in &listeners {
        let url = format!("{}/openapi.json", listener.url);
        eventually(Duration::from_secs(60), listener.name, || async {
            client.get(&url).send().await?.error_for_status()?;
            Ok(())
        })
        .await;
    }
    ready(&client, &[&command, &query, &projector, &orchestrator]).await;

    let workdir = std::env::temp_dir().join(format!("schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).expect("a working directory for schemathesis");
    let mut runs = Vec::new();
    for listener in &listeners {
        let run = run(&st, listener, &workdir).await;
        eprintln!(
            "schemathesis, {}: {} ({:.0} s)",
            run.name,
            run.summary,
            run.took.as_secs_f64()
        );
        runs.push(run);
    }
    std::fs::remove_dir_all(&workdir).ok();
    let failed: Vec<String> = runs
        .iter()
        .filter(|run| !run.passed)
        .map(|run| format!("===== {}: {}\n{}", run.name, run.summary, run.output))
        .collect();
    assert!(
        failed.is_empty(),
        "schemathesis found failures:\n{}",
        failed.join("\n")
    );
}

/// Waits until every service says it is ready.
async fn ready(client: &reqwest::Client, services: &[&RunningService]) {
    for service in services {
        let url = format!("{}/health/ready", service.url);
        eventually(Duration::from_secs(60), "services ready", || async {
            client.get(&url).send().await?.error_for_status()?;
            Ok(())
        })
        .await;
    }
}
