//! Helpers for end-to-end tests of the `furrow` binary: run it as real processes (a proxy on a config
//! file or a config source, `furrow control`, agents) and talk to them with real clients (`redis-cli`,
//! `mariadb`, raw RESP and HTTP). A test that needs set-up another test already has should find it
//! here rather than copy it; the console tests' browser is in `tests/webdriver/mod.rs`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of the `furrow` binary built for these tests.
pub fn furrow_bin() -> &'static str {
    env!("CARGO_BIN_EXE_furrow")
}

/// A `furrow` child process whose log is a file; killed on drop unless it has exited.
pub struct LoggedChild {
    /// The process; `None` once [`LoggedChild::wait_exit`] has seen it exit.
    pub child: Option<Child>,
    /// The file its log goes to.
    pub log: PathBuf,
}

impl LoggedChild {
    /// Starts `furrow --log LEVEL proxy --config CONFIG EXTRA...` with its stderr in `log`; does not
    /// wait for it to serve.
    pub fn proxy(level: &str, config: &Path, extra: &[&str], log: PathBuf) -> Self {
        Self::proxy_env(level, config, extra, &[], log)
    }

    /// [`LoggedChild::proxy`] with environment variables (e.g. a test failpoint).
    pub fn proxy_env(
        level: &str,
        config: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Self {
        let child = Command::new(furrow_bin())
            .args(["--log", level, "proxy", "--config"])
            .arg(config)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn furrow");
        Self {
            child: Some(child),
            log,
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (nothing once it has exited).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Waits for the process to exit; panics with its log after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "furrow did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `furrow proxy` process on a config file in its own temp dir; killed on drop.
pub struct FurrowProcess {
    process: LoggedChild,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl FurrowProcess {
    /// Writes `config` and starts `furrow proxy`, waiting until the admin port answers.
    pub fn start(config: &str, admin_port: u16) -> Self {
        Self::start_env(config, admin_port, &[])
    }

    /// [`FurrowProcess::start`] with environment variables (e.g. a test failpoint).
    pub fn start_env(config: &str, admin_port: u16, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("furrow.toml");
        std::fs::write(&path, config).expect("write config");
        let process =
            LoggedChild::proxy_env("debug", &path, &[], env, dir.path().join("furrow.log"));
        let mut p = Self {
            process,
            _dir: dir,
            config: path,
        };
        p.wait_admin(admin_port);
        p
    }

    /// Kills the process with SIGKILL and starts it again on the same config file (whatever it
    /// holds now; the log is appended to `furrow.log.N`), waiting until the admin port answers.
    pub fn kill_and_restart(&mut self, admin_port: u16) {
        // A process that already exited (waited for) is only started again.
        if self.process.child.is_some() {
            self.process.signal(libc::SIGKILL);
            self.process.wait_exit(Duration::from_secs(10));
        }
        let n = (1..)
            .find(|i| !self._dir.path().join(format!("furrow.log.{i}")).exists())
            .unwrap_or(1);
        self.process = LoggedChild::proxy(
            "debug",
            &self.config,
            &[],
            self._dir.path().join(format!("furrow.log.{n}")),
        );
        self.wait_admin(admin_port);
    }

    fn wait_admin(&mut self, admin_port: u16) {
        let p = self;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // PONG (not just a connect) means the admin thread runs, and so do its signal handlers.
            let reply = redis_cli(admin_port, &["PING"]);
            if reply == "PONG" || reply.starts_with("NOAUTH") {
                break;
            }
            let exited = p
                .process
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("furrow exited early ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "furrow did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The config file the process runs on (rewrite it and reload to change the config).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        self.process.signal(sig);
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout)
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

/// A plain RESP client connection to a proxy listener: (writer, buffered reader of the same socket).
pub type RespConn = (TcpStream, BufReader<TcpStream>);

/// Opens a [`RespConn`] to `127.0.0.1:port` with a 10 s read timeout.
pub fn resp_connect(port: u16) -> RespConn {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (stream.try_clone().expect("clone"), BufReader::new(stream))
}

/// One RESP request on an open connection; returns the first reply line, or a bulk reply's
/// body (`$-1` stays as it is).
pub fn resp_roundtrip(conn: &mut RespConn, args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.0.write_all(req.as_bytes()).expect("write");
    let mut line = String::new();
    conn.1.read_line(&mut line).expect("read");
    if line.starts_with('$') && !line.starts_with("$-1") {
        let mut body = String::new();
        conn.1.read_line(&mut body).expect("read");
        return body.trim_end().to_string();
    }
    line.trim_end().to_string()
}

/// A raw HTTP/1.1 GET, returning the whole response text.
pub fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
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

/// Polls `f` for up to 20 s (the browser tests' patience) until it returns true; panics naming `what`.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process started by hand (`furrow control`, `agent`, `worker`, a proxy on a config source),
/// killed and reaped when dropped, however the test ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The config of a proxy with one MySQL listener `db` on `127.0.0.1:listen` in front of group `main`
/// (its primary at `primary`, reached with the test kit's app credentials) and one client user `app`
/// (password `app-secret`, the one [`mariadb`] logs in with). `proxy_extra` and `group_extra` are
/// TOML lines, each ending in a newline, added to `[proxy]` (`metrics = ...`,
/// `shutdown_grace_ms = ...`) and to `[mysql_groups.main]` (`replicas = [...]`, `slow_query_ms = ...`).
pub fn mysql_proxy_config(
    admin: u16,
    listen: u16,
    primary: impl std::fmt::Display,
    proxy_extra: &str,
    group_extra: &str,
) -> String {
    format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\n{proxy_extra}\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{listen}\"\ngroup = \"main\"\n\n\
         [mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\n\
         primary = {{ name = \"primary\", address = \"{primary}\" }}\n{group_extra}\n\
         [users.app]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\n",
        testkit::APP_USER,
        testkit::APP_PASSWORD,
    )
}

/// Runs `q` with the real `mariadb` client as the proxies' `app` user (password `app-secret`) on
/// `port`, in batch mode without column names; returns its trimmed stdout, panics with its stderr
/// when it fails.
pub fn mariadb(port: u16, q: &str) -> String {
    mariadb_with(port, &[], q)
}

/// Like [`mariadb`] with `database` as the default database (`-D`).
pub fn mariadb_in(port: u16, database: &str, q: &str) -> String {
    mariadb_with(port, &["-D", database], q)
}

/// Like [`mariadb`] with extra client options (`--comments`, `-D DB`, ...) before the statement.
pub fn mariadb_with(port: u16, opts: &[&str], q: &str) -> String {
    mariadb_as(port, "app", "app-secret", opts, q)
}

/// Like [`mariadb_with`], logged in as `user` with `password`.
pub fn mariadb_as(port: u16, user: &str, password: &str, opts: &[&str], q: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", user])
        .arg(format!("-p{password}"))
        .args(opts)
        .args(["--batch", "--skip-column-names", "-e", q])
        .output()
        .expect("mariadb client");
    assert!(
        out.status.success(),
        "{q}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts `furrow proxy --config-source URL` with `token` as `FURROW_TOKEN`, its stderr to `log`.
/// The caller owns the child (wrap it in [`Process`] to have it killed on drop).
pub fn spawn_config_source_proxy(url: &str, token: &str, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log");
    Command::new(furrow_bin())
        .args(["proxy", "--config-source", url])
        .env("FURROW_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn furrow proxy")
}

/// Starts `furrow agent --server SERVER --token TOKEN --host HOST --dir DIR` followed by `extra`
/// (`--poll-ms`, `--var NAME=VALUE`, ...), its stderr to `log`. The caller owns the child (wrap it
/// in [`Process`] to have it killed on drop).
pub fn spawn_agent(
    server: &str,
    token: &str,
    host: &str,
    dir: &Path,
    extra: &[&str],
    log: &Path,
) -> Child {
    let log = std::fs::File::create(log).expect("log");
    Command::new(furrow_bin())
        .args([
            "agent", "--server", server, "--token", token, "--host", host,
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn furrow agent")
}

/// The `config_generation` a proxy's admin `INFO` reports (`None` until it answers with one).
pub fn config_generation(admin: u16) -> Option<u64> {
    redis_cli(admin, &["INFO"])
        .lines()
        .find_map(|l| l.strip_prefix("config_generation:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The admin token of the control centers that [`ControlCenter::start`] starts.
pub const CONTROL_TOKEN: &str = "test-admin-token";

/// A `furrow control` process on a SQLite store in `dir`, killed when dropped.
pub struct ControlCenter {
    pub child: std::process::Child,
    pub port: u16,
    /// The admin token it was started with; [`ControlCenter::call`] sends it.
    pub token: String,
}

impl ControlCenter {
    /// Starts it on `127.0.0.1:port` with [`CONTROL_TOKEN`], waiting until `/healthz` answers 200.
    pub fn start(dir: &std::path::Path, port: u16) -> Self {
        Self::start_with(dir, port, CONTROL_TOKEN, &[])
    }

    /// Like [`ControlCenter::start`] with admin token `token` and `extra` command-line arguments
    /// (`--envs DEV`, `--report-ttl-s 600`, ...); its stderr goes to `dir/control.log`.
    pub fn start_with(dir: &std::path::Path, port: u16, token: &str, extra: &[&str]) -> Self {
        let log = std::fs::File::create(dir.join("control.log")).expect("control log");
        let child = std::process::Command::new(furrow_bin())
            .args([
                "control",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-token",
                token,
            ])
            .arg("--store")
            .arg(format!("sqlite:{}", dir.join("control.db").display()))
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn furrow control");
        let c = ControlCenter {
            child,
            port,
            token: token.to_string(),
        };
        wait_until(Duration::from_secs(15), || {
            bearer_http(port, token, "GET", "/healthz", None).0 == 200
        });
        c
    }

    /// An API call with its admin token; panics unless 2xx; the body as JSON (`Null` if not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        api_call(self.port, &self.token, method, path, body)
    }
}

impl Drop for ControlCenter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `furrow control` on a reserved loopback port with one environment, `DEV`, and a [`BlockingApi`]
/// client of it: what the console's browser tests start from.
pub struct DevControl {
    pub center: ControlCenter,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    pub api: BlockingApi,
    _port: testkit::PortLease,
}

impl DevControl {
    /// Starts it with admin token `token`, its store and log in `dir`; returns once it answers.
    pub fn start(dir: &Path, token: &str) -> Self {
        let port = testkit::reserve_port().expect("port");
        let center = ControlCenter::start_with(dir, port.port(), token, &["--envs", "DEV"]);
        let base = format!("http://127.0.0.1:{}", port.port());
        let api = BlockingApi::new(&base, token);
        DevControl {
            center,
            base,
            api,
            _port: port,
        }
    }
}

/// The control service's own API client ([`control::client::ApiClient`]) on a current-thread
/// runtime, for tests that call the API from plain (non-async) test code.
pub struct BlockingApi {
    pub rt: tokio::runtime::Runtime,
    pub client: control::client::ApiClient,
}

impl BlockingApi {
    /// A client of the service at `base` (`http://127.0.0.1:PORT`) sending `token`.
    pub fn new(base: &str, token: &str) -> Self {
        BlockingApi {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            client: control::client::ApiClient::new(base, Some(token)),
        }
    }

    /// An API call; panics with the client's error unless it succeeds.
    pub fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        self.rt
            .block_on(self.client.call(method, path, body.as_ref()))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

/// A bearer-token API call with a JSON body; panics unless the status is 2xx; returns the body as
/// JSON (`Null` when it is not JSON).
pub fn api_call(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let (status, text) = bearer_http(port, token, method, path, body.map(|b| b.to_string()));
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// Like [`bearer_http`] with a JSON body, the answer parsed as JSON (`Null` when it is not JSON).
pub fn bearer_json(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, text) = bearer_http(port, token, method, path, body.map(|b| b.to_string()));
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A minimal HTTP/1.1 request with the admin token [`CONTROL_TOKEN`]; returns (status, body).
pub fn control_http(port: u16, method: &str, path: &str, body: Option<String>) -> (u16, String) {
    bearer_http(port, CONTROL_TOKEN, method, path, body)
}

/// A minimal HTTP/1.1 request with `Authorization: Bearer TOKEN` and a JSON body; returns
/// (status, body), or (0, "") when nothing answers on `port`.
pub fn bearer_http(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let body = body.unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
