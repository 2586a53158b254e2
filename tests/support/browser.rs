//! A real browser for the web page's tests: Debian's headless Chromium,
//! driven through chromedriver over the W3C WebDriver protocol (JSON over
//! HTTP, spoken here with reqwest; no WebDriver crate). `scripts/setup`
//! installs both. Each [`Browser`] is its own chromedriver on a free
//! loopback port with its own profile directory, so tests run in parallel.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::DEADLINE;

/// The WebDriver key code of Tab.
pub const TAB: &str = "\u{E004}";

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile_dir::Dir,
}

/// A temporary directory removed on drop (the browser profile).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// An element of the page, by its WebDriver reference.
#[derive(Clone, Debug)]
pub struct Element(String);

/// A WebDriver answer's JSON.
fn parse(response: reqwest::blocking::Response) -> Result<Value, String> {
    let text = response.text().map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a browser session.
    pub fn start() -> Browser {
        let (chromium, driver) = (
            Path::new("/usr/bin/chromium"),
            Path::new("/usr/bin/chromedriver"),
        );
        assert!(
            chromium.exists() && driver.exists(),
            "the browser tests need Debian's chromium and chromium-driver: run ./scripts/setup"
        );
        let profile = std::env::temp_dir().join(format!("wt-chrome-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&profile).unwrap();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        // A port can be taken between finding and binding it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver");
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + DEADLINE;
            let mut ready = false;
            while Instant::now() < deadline {
                if let Ok(r) = http.get(format!("{base}/status")).send()
                    && parse(r).is_ok_and(|v| v["value"]["ready"] == true)
                {
                    ready = true;
                    break;
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !ready {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            let caps = json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                        "--window-size=1400,1000",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }}});
            let answer: Value = http
                .post(format!("{base}/session"))
                .header("content-type", "application/json")
                .body(caps.to_string())
                .send()
                .map_err(|e| e.to_string())
                .and_then(parse)
                .expect("a WebDriver session");
            let session = answer["value"]["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no session: {answer}"))
                .to_string();
            return Browser {
                driver: child,
                base,
                session,
                http,
                _profile: tempfile_dir::Dir(profile),
            };
        }
        panic!("chromedriver did not start");
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer: Value = request
            .send()
            .map_err(|e| e.to_string())
            .and_then(parse)
            .expect("WebDriver answers");
        answer["value"].clone()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// The first element matching `css` now, if any.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        let found = self.post("/element", json!({ "using": "css selector", "value": css }));
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .filter(|_| found.get("error").is_none())
            .map(|id| Element(id.to_string()))
    }

    /// Waits until an element matches `css` and its text contains `text`; returns it.
    pub fn wait_text(&self, css: &str, text: &str) -> Element {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = String::new();
        loop {
            if let Some(e) = self.try_find(css) {
                seen = self.text(&e);
                if seen.contains(text) {
                    return e;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no `{css}` containing {text:?} (last seen: {seen:?}); page: {}",
                self.page_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for an element matching `css`.
    pub fn wait(&self, css: &str) -> Element {
        self.wait_text(css, "")
    }

    /// An element's rendered text.
    pub fn text(&self, e: &Element) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/text", e.0),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// The whole page's text.
    pub fn page_text(&self) -> String {
        self.run("return document.body.innerText;", json!([]))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Clicks an element.
    pub fn click(&self, e: &Element) {
        self.post(&format!("/element/{}/click", e.0), json!({}));
    }

    /// Types into an element.
    pub fn type_into(&self, e: &Element, text: &str) {
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }));
    }

    /// Presses `key` (a WebDriver key code, e.g. [`TAB`]) on the focused element.
    pub fn press(&self, key: &str) {
        self.post(
            "/actions",
            json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
                { "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }
            ]}]}),
        );
    }

    /// Saves a screenshot of the viewport as PNG.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.call(reqwest::Method::GET, "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }

    /// Where a test's screenshots go: `docs/images/` when
    /// `WASMTRIGGER_UPDATE_SCREENSHOTS=1`, else the target directory.
    pub fn screenshot_path(name: &str) -> PathBuf {
        if std::env::var("WASMTRIGGER_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            super::repo().join("docs/images").join(name)
        } else {
            super::modules()
                .parent()
                .unwrap()
                .join("screenshots")
                .join(name)
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
