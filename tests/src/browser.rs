//! A real browser for the console's tests: Debian's Chromium, headless,
//! driven through `chromedriver` over the W3C WebDriver protocol (plain
//! HTTP and JSON, spoken here with reqwest; the few commands the tests
//! need do not justify a client crate).
//!
//! [`Browser::start`] runs `chromedriver --port=<free port>` as a child
//! process in a process group of its own and opens a session; dropping the
//! browser kills that group (chromedriver and the Chromium it started), so
//! a failed test leaves nothing running. Waiting is bounded polling
//! ([`Browser::patiently`], which saves what the page showed when it
//! gives up); screenshots go under the cargo target
//! directory, `console-screenshots/`, and are checked not to be blank.

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use serde_json::{Value, json};

use crate::eventually;

/// The key W3C WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for the page may take: sagas move within seconds on a
/// busy small machine, and the page polls the API every few seconds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A headless Chromium with one WebDriver session.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

/// A reference to an element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Self {
        let port = free_port();
        let driver = Command::new(program("CHROMEDRIVER", &["chromedriver"]))
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log_or_null())
            .stderr(log_or_null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver (Debian's chromium-driver; `make test` installs it)");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            driver,
            http,
            session: String::new(),
        };
        eventually(Duration::from_secs(30), "chromedriver ready", || async {
            let status: Value = browser
                .http
                .get(format!("{base}/status"))
                .send()
                .await?
                .json()
                .await?;
            ensure!(status["value"]["ready"] == true, "{status}");
            Ok(())
        })
        .await;
        let chromium = program(
            "CHROME_BIN",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        }}});
        let answer = browser
            .send(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(capabilities),
            )
            .await
            .expect("a WebDriver session");
        browser.session = format!(
            "{base}/session/{}",
            answer["sessionId"].as_str().expect("a session id")
        );
        browser
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let answer: Value = response.json().await.context("a WebDriver answer")?;
        if !status.is_success() {
            bail!(
                "{method} {url}: {status}: {} {}",
                answer["value"]["error"],
                answer["value"]["message"]
            );
        }
        Ok(answer["value"].clone())
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.send(method, &format!("{}{path}", self.session), body)
            .await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e:#}"));
    }

    /// The first element matching the CSS selector, if any now.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        found[ELEMENT]
            .as_str()
            .map(|id| Element(id.to_owned()))
            .with_context(|| format!("no element for {css}: {found}"))
    }

    /// Every element matching the CSS selector now.
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
            .collect())
    }

    /// Waits until an element matches, and returns it.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.patiently(&format!("an element {css}"), || self.find(css))
            .await
    }

    /// Waits until the element's visible text contains `text`; returns
    /// that text.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> String {
        self.patiently(&format!("{css} showing {text:?}"), || async {
            let shown = self.text(&self.find(css).await?).await?;
            ensure!(shown.contains(text), "it shows {shown:?}");
            Ok(shown)
        })
        .await
    }

    /// Polls `check` until it succeeds, at most [`PATIENCE`]; when it
    /// never does, saves what the page showed (`failed-<n>.png`, and its
    /// text in the panic message) and panics.
    pub async fn patiently<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let error = match check().await {
                Ok(value) => return value,
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                let shown = self
                    .execute("return document.body.innerText;", vec![])
                    .await;
                let name = format!("failed-{}", std::process::id());
                let saved = self.save_screenshot(&name).await;
                panic!(
                    "{what}: still failing after {PATIENCE:?}: {error:#}\n\
                     the page ({}) showed:\n{}",
                    saved.display(),
                    shown.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element's visible text.
    pub async fn text(&self, element: &Element) -> anyhow::Result<String> {
        let text = self
            .command(
                reqwest::Method::GET,
                &format!("/element/{}/text", element.0),
                None,
            )
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// Clicks the element matching `css` (waiting for it).
    pub async fn click(&self, css: &str) {
        self.patiently(&format!("clicking {css}"), || async {
            let element = self.find(css).await?;
            self.command(
                reqwest::Method::POST,
                &format!("/element/{}/click", element.0),
                None,
            )
            .await?;
            Ok(())
        })
        .await;
    }

    /// Types `text` into the element matching `css`, after clearing it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css).await;
        let path = format!("/element/{}", element.0);
        self.command(reqwest::Method::POST, &format!("{path}/clear"), None)
            .await
            .unwrap_or_else(|e| panic!("clearing {css}: {e:#}"));
        self.command(
            reqwest::Method::POST,
            &format!("{path}/value"),
            Some(json!({"text": text})),
        )
        .await
        .unwrap_or_else(|e| panic!("typing into {css}: {e:#}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
        .unwrap_or_else(|e| panic!("running a script: {e:#}"))
    }

    /// What the page wrote to the browser's console since the last call
    /// (its errors, and Chromium's own: a Content-Security-Policy refusal,
    /// a failed request), one line each.
    pub async fn console_messages(&self) -> Vec<String> {
        let entries = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await
            .expect("the browser's console log");
        entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| format!("{} {}", entry["level"], entry["message"]))
            .collect()
    }

    /// The page's address now.
    pub async fn url(&self) -> String {
        let url = self
            .command(reqwest::Method::GET, "/url", None)
            .await
            .expect("the current URL");
        url.as_str().unwrap_or_default().to_owned()
    }

    /// Saves a PNG of the viewport as `<target>/console-screenshots/<name>.png`,
    /// checks it is not blank, and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let path = self.save_screenshot(name).await;
        let png = std::fs::read(&path).expect("reading the screenshot back");
        let colours = distinct_colours(&png).expect("a PNG screenshot");
        assert!(
            colours >= MIN_COLOURS,
            "screenshot {} is blank: {colours} colours",
            path.display()
        );
        path
    }

    async fn save_screenshot(&self, name: &str) -> PathBuf {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await
            .expect("a screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 text"))
            .expect("a base64 screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("making the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("saving the screenshot");
        path
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(self) {
        let _ = self
            .send(reqwest::Method::DELETE, &self.session, None)
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A page that drew anything (text, a table, a badge) has far more
/// colours than this; a blank or single-colour page has one or two.
const MIN_COLOURS: usize = 16;

/// How many distinct colours a PNG holds (counting stops at a few hundred).
pub fn distinct_colours(png: &[u8]) -> anyhow::Result<usize> {
    let mut decoder = png::Decoder::new(png);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buffer)?;
    let pixel = frame.color_type.samples();
    let mut seen = std::collections::HashSet::new();
    for colour in buffer[..frame.buffer_size()].chunks_exact(pixel) {
        seen.insert(colour.to_vec());
        if seen.len() >= 512 {
            break;
        }
    }
    Ok(seen.len())
}

/// `<target>/console-screenshots`: `CARGO_TARGET_DIR` when set, else the
/// directory above the test binary's `debug/deps`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            // <target>/<profile>/deps/<binary>
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("console-screenshots")
}

/// The program named by the environment variable, else the first of
/// `names` found on `PATH`, else the first name as is.
fn program(variable: &str, names: &[&str]) -> String {
    if let Some(set) = std::env::var_os(variable).filter(|v| !v.is_empty()) {
        return set.to_string_lossy().into_owned();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .find_map(|name| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| is_file(candidate))
        })
        .map_or_else(
            || names[0].to_owned(),
            |found| found.to_string_lossy().into_owned(),
        )
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn log_or_null() -> Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let data: Vec<u8> = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .flat_map(|(x, y)| pixel(x, y))
            .collect();
        writer.write_image_data(&data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn a_blank_screenshot_has_too_few_colours_and_a_drawn_one_enough() {
        let blank = png_of(64, 64, |_, _| [255, 255, 255]);
        assert_eq!(distinct_colours(&blank).unwrap(), 1);
        let drawn = png_of(64, 64, |x, y| [x as u8 * 4, y as u8 * 4, 0]);
        assert!(distinct_colours(&drawn).unwrap() >= MIN_COLOURS);
        assert!(distinct_colours(b"not a png").is_err());
    }
}
