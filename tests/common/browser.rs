//! Headless Chromium for tests, driven through chromedriver: the WebDriver protocol is
//! JSON over HTTP, so a handful of requests with reqwest replaces a client library.
//! Debian's `chromium` and `chromium-driver` packages (installed by scripts/test.sh).
//! Everything stays on loopback; the browser gets a fresh profile directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::cluster::{free_port, wait_listening, Proc};

/// The key WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium flags that work as root on a machine without a display or network.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A chromedriver process and one browser session, both ended when dropped.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Proc,
    /// Where screenshots go.
    pub shots: PathBuf,
    /// The viewport asked for (the window also has room for browser chrome).
    size: (u32, u32),
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height` window,
    /// its profile and the driver's log under `scratch`; screenshots go to `shots`.
    /// Panics with instructions when Chromium or its driver is not installed: a browser
    /// test must never pass by not running.
    pub async fn start(scratch: &Path, shots: &Path, width: u32, height: u32) -> Browser {
        let driver_bin = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]).expect(
            "chromedriver not found: install Debian's chromium and chromium-driver \
                 (./scripts/test.sh does: apt-get install chromium chromium-driver)",
        );
        let chromium = find(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"]).expect(
            "chromium not found: install Debian's chromium and chromium-driver \
             (./scripts/test.sh does: apt-get install chromium chromium-driver)",
        );
        std::fs::create_dir_all(shots).expect("create the screenshot directory");
        let port = free_port();
        let driver = Proc::spawn(
            vec![
                driver_bin.display().to_string(),
                format!("--port={port}"),
                "--allowed-ips=127.0.0.1".into(),
            ],
            scratch.join("chromedriver.log"),
        );
        wait_listening(&format!("127.0.0.1:{port}"));
        let profile = scratch.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={width},{height}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let created = send(
            &http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            &caps,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver could not start Chromium: {e}\ndriver log:\n{}",
                driver.log_text()
            )
        });
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        let browser = Browser {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            shots: shots.to_path_buf(),
            size: (width, height),
        };
        browser.emulate(None).await;
        browser
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        send(&self.http, method, &url, &body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    /// Loads `url` and waits for it (the document, not its scripts' requests).
    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `return` a JSON-able value) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Polls `script` every 100 ms until it returns something other than `null` or
    /// `false`, and returns that. After `timeout` saves a screenshot named after `what`
    /// and panics with the last value.
    pub async fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            if Instant::now() > deadline {
                let name = format!(
                    "FAILED-{}",
                    what.replace(|c: char| !c.is_alphanumeric(), "-")
                );
                self.screenshot(&name).await;
                panic!("the page never showed: {what} (within {timeout:?}; last value {v}); see {name}.png");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The reference of the element `css` selects (panics if none).
    pub async fn element(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Clicks the element `css` selects, as a user would (WebDriver scrolls it into
    /// view and fails if something covers it).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// Clears the input `css` selects and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            json!({}),
        )
        .await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Emulates a phone's `width`×`height` screen (device pixel ratio 2), or with
    /// `None` the desktop viewport asked for at start — through the DevTools protocol,
    /// which sets the viewport exactly and has no minimum window size.
    pub async fn emulate(&self, screen: Option<(u32, u32)>) {
        let (w, h) = self.size;
        self.metrics(Some(
            screen.map_or((w, h, 1, false), |(w, h)| (w, h, 2, true)),
        ))
        .await;
    }

    /// Saves the whole page, not only the window, at `width` CSS pixels.
    pub async fn screenshot_full(&self, name: &str, width: u32) -> PathBuf {
        self.metrics(Some((width, 1000, 1, false))).await;
        let height = self
            .js("return document.documentElement.scrollHeight;")
            .await
            .as_u64()
            .unwrap_or(1000) as u32;
        self.metrics(Some((width, height, 1, false))).await;
        self.js("window.scrollTo(0, 0); return null;").await;
        let path = self.screenshot(name).await;
        self.emulate(None).await;
        path
    }

    async fn metrics(&self, screen: Option<(u32, u32, u32, bool)>) {
        let body = match screen {
            Some((width, height, scale, mobile)) => json!({
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile},
            }),
            None => json!({"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}}),
        };
        self.cmd(reqwest::Method::POST, "/goog/cdp/execute", body)
            .await;
    }

    /// Saves what the browser shows as `<shots>/<name>.png` and returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self
            .cmd(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is not base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session (closing Chromium) and the driver.
    pub fn quit(self) {
        drop(self);
    }
}

impl Drop for Browser {
    /// Ends the session even when a test panicked, so no Chromium outlives the test:
    /// a plain blocking DELETE (this may run outside any runtime), then the driver.
    fn drop(&mut self) {
        if let Some((addr, path)) = self
            .session
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|i| (&rest[..i], &rest[i..])))
        {
            let req =
                format!("DELETE {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let _ = super::raw_request(addr, req.as_bytes());
        }
        self.driver.terminate();
    }
}

/// One WebDriver command: its `value`, or the error the driver answered.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &Value,
) -> Result<Value, String> {
    let mut req = http.request(method, url);
    if !body.is_null() {
        req = req.json(body);
    }
    let res = req
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = res.status();
    let v: Value = res
        .json()
        .await
        .map_err(|e| format!("{status}: not JSON: {e}"))?;
    if !status.is_success() {
        return Err(format!("{status}: {}", v["value"]));
    }
    Ok(v["value"].clone())
}
