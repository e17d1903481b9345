//! A tiny W3C WebDriver client over `std::net::TcpStream`, driving Debian's headless Chromium through the
//! system `chromedriver` (`apt-get install chromium chromium-driver`; nothing is downloaded). Only what the
//! console tests use: navigate, find, click, type, read text, run a script, resize, screenshot.
//!
//! Why our own and not a crate: the protocol is a handful of JSON-over-HTTP calls, the workspace already has
//! serde_json, and every WebDriver crate brings an async HTTP stack with it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
    _port: testkit::PortLease,
    /// Where [`Browser::screenshot`] writes.
    pub shots: PathBuf,
}

/// The Chromium binary (Debian's `/usr/bin/chromium` is a wrapper script around it).
fn chromium() -> Option<PathBuf> {
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Panics, naming the packages to install, unless the browser and its driver are installed.
pub fn require() {
    assert!(
        available(),
        "this test needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver (.ci/run installs them)"
    );
}

/// Whether the browser and its driver are installed.
pub fn available() -> bool {
    chromium().is_some() && Path::new("/usr/bin/chromedriver").exists()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session at 1280×900; screenshots go to `shots`.
    pub fn start(shots: &Path) -> Browser {
        let binary = chromium().expect(
            "chromium is not installed: apt-get install -y chromium chromium-driver (see .ci/run)",
        );
        let lease = testkit::reserve_port().expect("port");
        let port = lease.port();
        let profile = tempfile::tempdir().expect("tempdir");
        let log_path = profile.path().join("chromedriver.log");
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
            _port: lease,
            shots: shots.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = b.raw("GET", "/status", None);
            if status.as_ref().is_ok_and(|v| v["value"]["ready"] == true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start: {status:?}\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--force-device-scale-factor=1",
                         format!("--user-data-dir={}", b._profile.path().display())],
            },
        }}});
        let v = b.raw("POST", "/session", Some(&caps)).expect("new session");
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {v}"))
            .to_string();
        std::fs::create_dir_all(shots).expect("screenshot dir");
        b
    }

    fn raw(&self, method: &str, path: &str, body: Option<&Json>) -> Result<Json, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        // Read the head, then exactly Content-Length bytes: chromedriver does not always close the
        // connection after its answer, even when asked to.
        let mut out = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        let head_end = loop {
            if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed before the answer".into());
            }
            out.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&out[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        match length {
            Some(len) => {
                while out.len() < head_end + len {
                    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
            None => {
                s.read_to_end(&mut out).map_err(|e| e.to_string())?;
            }
        }
        let raw_body = String::from_utf8_lossy(&out[head_end..]).into_owned();
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(&raw_body)
        } else {
            raw_body
        };
        let v: Json = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["value"].get("error").is_some() {
            return Err(format!(
                "{}: {}",
                v["value"]["error"], v["value"]["message"]
            ));
        }
        Ok(v)
    }

    /// A session command; panics with the driver's message on error.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn try_cmd(&self, method: &str, path: &str, body: Option<Json>) -> Result<Json, String> {
        self.raw(
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
        .map(|v| v["value"].clone())
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    /// The first element matching `css`, waiting up to 15 s for it to appear.
    pub fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.try_cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            );
            if let Some(id) = found.as_ref().ok().and_then(|v| v[ELEMENT].as_str()) {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {found:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `act` on the element matching `css`. The console re-renders the panels it polls, so
    /// an element found can be replaced before a command reaches it: the driver then answers
    /// "stale element reference" without having acted, and `act` runs again on the fresh element
    /// matching `css` (for up to 15 s; any other error panics).
    fn on_fresh(&self, css: &str, act: impl Fn(&str) -> Result<Json, String>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let id = self.find(css);
            match act(&id) {
                Ok(_) => return,
                Err(e) if e.contains("stale element reference") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{css}: {e}"),
            }
        }
    }

    /// Clicks the element matching `css` (scrolled into view first).
    pub fn click(&self, css: &str) {
        self.on_fresh(css, |id| {
            self.try_script(
                "arguments[0].scrollIntoView({block: 'center'});",
                vec![json!({ELEMENT: id})],
            )?;
            self.try_cmd("POST", &format!("/element/{id}/click"), Some(json!({})))
        });
    }

    /// Replaces the value of the input matching `css` with `text`.
    pub fn fill(&self, css: &str, text: &str) {
        self.on_fresh(css, |id| {
            self.try_cmd("POST", &format!("/element/{id}/clear"), Some(json!({})))?;
            self.try_cmd(
                "POST",
                &format!("/element/{id}/value"),
                Some(json!({"text": text})),
            )
        });
    }

    /// Selects `value` in the `<select>` matching `css`.
    pub fn choose(&self, css: &str, value: &str) {
        self.on_fresh(css, |id| {
            self.try_script(
                "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'));",
                vec![json!({ELEMENT: id}), json!(value)],
            )
        });
    }

    /// The visible text of the element matching `css` ("" when there is none yet).
    pub fn text(&self, css: &str) -> String {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            vec![json!(css)],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Waits until the text of `css` satisfies `f`; returns it.
    pub fn wait_text(&self, css: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.text(css);
            if f(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {css}; it shows: {t}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Runs `script` in the page (synchronous; `return` gives the value).
    pub fn script(&self, script: &str, args: Vec<Json>) -> Json {
        self.try_script(script, args)
            .unwrap_or_else(|e| panic!("POST /execute/sync: {e}"))
    }

    /// [`Browser::script`], the driver's error returned.
    fn try_script(&self, script: &str, args: Vec<Json>) -> Result<Json, String> {
        self.try_cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The rows of the console table matching `table` (a CSS selector) as their cells' text.
    pub fn table_rows(&self, table: &str) -> Vec<Vec<String>> {
        let v = self.script(
            "return [...document.querySelectorAll(arguments[0] + ' tbody tr')].map(tr => [...tr.cells].map(td => td.innerText.trim()));",
            vec![json!(table)],
        );
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Waits for the console's confirmation dialog and confirms it.
    pub fn confirm(&self) {
        self.find("#confirm[open]");
        self.click("#confirm-ok");
    }

    /// The window's size in CSS pixels.
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Saves a PNG of the viewport as `shots/NAME.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().unwrap_or_default()).expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Standard base64 (with padding) to bytes.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' { 0 } else { val(c)? };
            n |= v << (18 - 6 * i);
        }
        let b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(
            &b[..3usize
                .saturating_sub(pad)
                .min(chunk.len().saturating_sub(1))],
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips_known_vectors() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(super::base64_decode(enc).unwrap(), dec.as_bytes());
        }
        assert!(super::base64_decode("Zm9v!").is_none());
    }
}
