//! Helpers for end-to-end tests of the `furrow` binary: run it as a real process on a config file,
//! talk to it with real clients.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of the `furrow` binary built for these tests.
pub fn furrow_bin() -> &'static str {
    env!("CARGO_BIN_EXE_furrow")
}

/// A `furrow proxy` process on a config file in its own temp dir; killed on drop.
pub struct FurrowProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl FurrowProcess {
    /// Writes `config` and starts `furrow proxy`, waiting until the admin port answers.
    pub fn start(config: &str, admin_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("furrow.toml");
        std::fs::write(&path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("furrow.log")).expect("log file");
        let child = Command::new(furrow_bin())
            .args(["--log", "debug", "proxy", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn furrow");
        let mut p = Self {
            child: Some(child),
            dir,
            config: path,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // PONG (not just a connect) means the admin thread runs, and so do its signal handlers.
            let reply = redis_cli(admin_port, &["PING"]);
            if reply == "PONG" || reply.starts_with("NOAUTH") {
                break;
            }
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("furrow exited early ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "furrow did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// The config file the process runs on (rewrite it and reload to change the config).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("furrow.log")).unwrap_or_default()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                self.child = None;
                return s;
            }
            assert!(Instant::now() < deadline, "furrow did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FurrowProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `redis-cli -p PORT ARGS...` and returns its trimmed stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    redis_cli_with(port, &[], args)
}

/// Like [`redis_cli`] with extra options before the command.
pub fn redis_cli_with(port: u16, opts: &[&str], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(opts)
        .args(args)
        .output()
        .expect("redis-cli (apt-get install -y redis-tools)");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// A raw HTTP/1.1 GET, returning the whole response text.
pub fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Polls `f` until it returns true; panics after `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The admin token of the control centers that [`ControlCenter`] starts.
pub const CONTROL_TOKEN: &str = "test-admin-token";

/// A `furrow control` process on a SQLite store in `dir`, killed when dropped.
pub struct ControlCenter {
    pub child: std::process::Child,
    pub port: u16,
}

impl ControlCenter {
    pub fn start(dir: &std::path::Path, port: u16) -> Self {
        let child = std::process::Command::new(furrow_bin())
            .args([
                "control",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-token",
                CONTROL_TOKEN,
            ])
            .arg("--store")
            .arg(format!("sqlite:{}", dir.join("control.db").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn furrow control");
        let c = ControlCenter { child, port };
        wait_until(Duration::from_secs(15), || {
            control_http(port, "GET", "/healthz", None).0 == 200
        });
        c
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (status, text) = control_http(self.port, method, path, body.map(|b| b.to_string()));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for ControlCenter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request with the admin token; returns (status, body).
pub fn control_http(port: u16, method: &str, path: &str, body: Option<String>) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let body = body.unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {CONTROL_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if std::io::Write::write_all(&mut s, req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
