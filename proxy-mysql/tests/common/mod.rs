//! Test harness: a real primary + replicas from the testkit and the proxy running in-process on a
//! free loopback port, driven by real clients (the `mariadb` CLI, Python drivers, sysbench).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::{BackendRegistry, Executors, ListenerCtx, Shared, SnapshotHub, StatsRegistry};
use testkit::{APP_PASSWORD, APP_USER, MariaDbReplicaSet, PortLease};

/// Password of the proxy user `app`.
pub const APP_SECRET: &str = "app-secret";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `[users.NAME]` block with both hashes of `password`.
pub fn user_block(name: &str, password: &str, extra: &str) -> String {
    let native = codec::mysql::auth::native_password_hash(password.as_bytes());
    let sha = codec::mysql::auth::caching_sha2_hash(password.as_bytes());
    format!(
        "[users.{name}]\npassword_native = \"*{}\"\npassword_sha256 = \"{}\"\n{extra}\n",
        hex(&native).to_uppercase(),
        hex(&sha)
    )
}

/// The standard config: listener `db` on `port`, group `main` over `rs`, users `app` (split),
/// `primaryonly` (read_policy primary), `reporter` (replica_only), `narrow` (schema `app` only),
/// `faraway` (hosts 10.0.0.0/8 only).
pub fn config_toml(
    port: u16,
    primary: SocketAddr,
    replicas: &[SocketAddr],
    group_extra: &str,
) -> String {
    let reps: Vec<String> = replicas
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "{{ name = \"replica{}\", address = \"{a}\", weight = 1 }}",
                i + 1
            )
        })
        .collect();
    let mut s = format!(
        "[proxy]\nexecutors = 1\nshutdown_grace_ms = 2000\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{port}\"\ngroup = \"main\"\n\n\
         [mysql_groups.main]\nuser = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n\
         primary = {{ name = \"primary\", address = \"{primary}\" }}\nreplicas = [{}]\n\
         {lag}health_interval_ms = 200\npool_max = 8\nconnect_timeout_ms = 1000\n{group_extra}\n\n",
        reps.join(", "),
        lag = if group_extra.contains("max_replica_lag_ms") {
            ""
        } else {
            "max_replica_lag_ms = 2000\n"
        },
    );
    s.push_str(&user_block("app", APP_SECRET, ""));
    s.push_str(&user_block(
        "primaryonly",
        APP_SECRET,
        "read_policy = \"primary\"",
    ));
    s.push_str(&user_block(
        "reporter",
        APP_SECRET,
        "read_policy = \"replica_only\"",
    ));
    s.push_str(&user_block("narrow", APP_SECRET, "schemas = [\"app\"]"));
    s.push_str(&user_block(
        "faraway",
        APP_SECRET,
        "hosts = [\"10.0.0.0/8\"]",
    ));
    s
}

/// A running in-process proxy.
pub struct Proxy {
    /// The client port.
    pub addr: SocketAddr,
    /// The snapshot hub (publish a new config to reload).
    pub hub: SnapshotHub,
    /// Backend states.
    pub backends: Arc<BackendRegistry>,
    /// The listener's counters (requests, errors ...).
    pub listener_stats: Arc<runtime::ListenerStats>,
    /// What the executors share (the MySQL statistics are read through it).
    pub shared: Shared,
    shutdown: tokio::sync::watch::Sender<bool>,
    executors: Option<Executors>,
    _lease: PortLease,
}

impl Proxy {
    /// Starts the proxy with `make(port)` as its config.
    pub fn start(make: impl FnOnce(u16) -> String) -> Proxy {
        let lease = testkit::reserve_port().expect("port");
        let toml = make(lease.port());
        let config = router::config::parse("test.toml", &toml).expect("config");
        let addr = config.listeners[0].address;
        let hub = SnapshotHub::new(config.clone(), "test");
        let backends = Arc::new(BackendRegistry::new(&config));
        let stats = Arc::new(StatsRegistry::default());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let shared = Shared {
            logins: Default::default(),
            registries: Default::default(),
            snapshots: hub.clone(),
            stats: stats.clone(),
            backends: backends.clone(),
            shutdown: rx,
        };
        let listener_stats = stats.register("db", "mysql", &addr.to_string());
        let std_listener = runtime::bind_reuseport(addr, 128).expect("bind");
        let slot = std::sync::Mutex::new(Some(std_listener));
        let counters = listener_stats.clone();
        let kept_shared = shared.clone();
        let executors = Executors::start(1, "test-mysql", move |core| {
            let l = slot.lock().expect("lock").take();
            let shared = shared.clone();
            let listener_stats = listener_stats.clone();
            async move {
                let Some(l) = l else { return };
                let listener = tokio::net::TcpListener::from_std(l).expect("listener");
                proxy_mysql::serve(ListenerCtx {
                    name: "db".into(),
                    core,
                    listener,
                    stats: listener_stats,
                    shared,
                })
                .await;
            }
        })
        .expect("executors");
        let p = Proxy {
            addr,
            hub,
            backends,
            listener_stats: counters,
            shared: kept_shared,
            shutdown: tx,
            executors: Some(executors),
            _lease: lease,
        };
        // Let the first health round measure lag.
        std::thread::sleep(Duration::from_millis(600));
        p
    }

    /// Publishes a new config (as the admin's CONFIG RELOAD does).
    pub fn reload(&self, toml: &str) {
        let config = router::config::parse("reload.toml", toml).expect("config");
        self.backends.sync(&config);
        self.hub.publish(config, "reload");
    }

    /// Runs `query` through the proxy with the mariadb CLI as `user`.
    pub fn sql(&self, user: &str, query: &str) -> testkit::Result<Vec<Vec<Option<String>>>> {
        testkit::sql_at(self.addr, user, APP_SECRET, None, query)
    }

    /// Runs `query` as `app` and returns the first cell.
    pub fn value(&self, query: &str) -> String {
        self.sql("app", query)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten()
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(e) = self.executors.take() {
            e.join();
        }
    }
}

/// Starts a primary with `n` replicas and a database `app` with a table `t`, replicated.
pub fn replica_set(n: usize) -> MariaDbReplicaSet {
    let rs = MariaDbReplicaSet::start(n).expect("replica set");
    rs.primary()
        .sql(
            "CREATE DATABASE IF NOT EXISTS app; CREATE DATABASE IF NOT EXISTS other; \
             CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100))",
        )
        .expect("schema");
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    rs
}

/// Proxy over `rs` with the standard config.
pub fn proxy_for(rs: &MariaDbReplicaSet, group_extra: &str) -> Proxy {
    let primary = rs.primary().addr();
    let replicas: Vec<SocketAddr> = rs.replicas().iter().map(|r| r.addr()).collect();
    let extra = group_extra.to_string();
    Proxy::start(move |port| config_toml(port, primary, &replicas, &extra))
}

/// Waits until `f` is true (polling), panicking with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The test kit's Python (a venv with the clients of `.ci/requirements.txt`, built on first use);
/// panics with the kit's message (e.g. which apt package to install) when it cannot be set up.
pub fn python_interpreter() -> std::path::PathBuf {
    testkit::python().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a Python script with `PORT` and `PASSWORD` in its environment; returns stdout.
pub fn python(script: &str, port: u16) -> Result<String, String> {
    let out = Command::new(python_interpreter())
        .arg("-c")
        .arg(script)
        .env("PORT", port.to_string())
        .env("PASSWORD", APP_SECRET)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "python failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The `mariadb` CLI (no option files, batch mode, no column names) for the server or proxy at
/// `port`, logging in as `user` with `password`; the caller adds its options and `--execute`.
pub fn mariadb_cli(port: u16, user: &str, password: &str) -> Command {
    let mut c = Command::new("mariadb");
    c.args([
        "--no-defaults",
        "--protocol=TCP",
        "--host=127.0.0.1",
        "--batch",
        "--skip-column-names",
    ])
    .arg(format!("--port={port}"))
    .arg(format!("--user={user}"))
    .arg(format!("--password={password}"));
    c
}

/// A finished client's stdout, or its stderr where it failed.
pub fn stdout_or_stderr(out: &std::process::Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs `query` with the `mariadb` CLI keeping comments (`--comments`, so hints reach the proxy);
/// returns the rows as tab-separated lines, or the client's error output.
pub fn cli(port: u16, user: &str, query: &str) -> Result<Vec<String>, String> {
    let out = mariadb_cli(port, user, APP_SECRET)
        .arg("--comments")
        .arg("--execute")
        .arg(query)
        .output()
        .map_err(|e| e.to_string())?;
    stdout_or_stderr(&out).map(|text| text.lines().map(str::to_string).collect())
}

/// The audit log at `path` once it holds every one of `needles` (waited for up to 5 s).
pub fn audit_log_with(path: &str, needles: &[&str]) -> String {
    wait_until("audit lines", Duration::from_secs(5), || {
        std::fs::read_to_string(path).is_ok_and(|t| needles.iter().all(|n| t.contains(n)))
    });
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first line of `text` that contains `needle` (empty if none does).
pub fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or("")
}

/// Rows of `query` on a server, as one string per row (cells joined by tabs).
pub fn rows(server: &testkit::MariaDb, query: &str) -> Vec<String> {
    server
        .sql(query)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| c.unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect()
}

/// A minimal blocking MySQL client for protocol-level tests (native password login).
pub struct RawClient {
    stream: std::net::TcpStream,
    buf: bytes::BytesMut,
}

impl RawClient {
    /// Connects and logs in as `user` with [`APP_SECRET`].
    pub fn login(addr: SocketAddr, user: &str, db: Option<&str>) -> RawClient {
        Self::login_with(addr, user, db, 0, 0, None).0
    }

    /// [`RawClient::login`] asking for MariaDB extended capabilities `mariadb` (answered as a
    /// MariaDB client does: CLIENT_LONG_PASSWORD left out when the server offers them) and for
    /// capabilities `extra` too, naming itself `client_name` (the `_client_name` connection
    /// attribute); returns the client and the extended capabilities negotiated.
    pub fn login_with(
        addr: SocketAddr,
        user: &str,
        db: Option<&str>,
        mariadb: u32,
        extra: u32,
        client_name: Option<&str>,
    ) -> (RawClient, u32) {
        use codec::mysql::consts::capability::*;
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut c = RawClient {
            stream,
            buf: bytes::BytesMut::new(),
        };
        let hs = codec::mysql::HandshakeV10::decode(c.read().payload).expect("handshake");
        let auth =
            codec::mysql::auth::native_password_scramble(APP_SECRET.as_bytes(), hs.scramble());
        let mut caps = CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_LONG_PASSWORD
            | CLIENT_TRANSACTIONS
            | CLIENT_MULTI_RESULTS
            | extra;
        if db.is_some() {
            caps |= CLIENT_CONNECT_WITH_DB;
        }
        if client_name.is_some() {
            caps |= CLIENT_CONNECT_ATTRS;
        }
        let ext = mariadb & hs.mariadb_capabilities();
        if ext != 0 {
            caps &= !CLIENT_LONG_PASSWORD;
        }
        let resp = codec::mysql::HandshakeResponse41 {
            capabilities: caps,
            max_packet_size: 1 << 24,
            charset: 45,
            mariadb_capabilities: ext,
            username: bytes::Bytes::copy_from_slice(user.as_bytes()),
            auth_response: bytes::Bytes::from(auth),
            database: db.map(|d| bytes::Bytes::copy_from_slice(d.as_bytes())),
            auth_plugin_name: Some(bytes::Bytes::from_static(b"mysql_native_password")),
            connect_attrs: client_name
                .map(|n| {
                    vec![(
                        bytes::Bytes::from_static(b"_client_name"),
                        bytes::Bytes::copy_from_slice(n.as_bytes()),
                    )]
                })
                .unwrap_or_default(),
        };
        let mut out = bytes::BytesMut::new();
        resp.encode(&mut out);
        c.send(1, &out);
        let ok = c.read();
        assert_eq!(
            ok.payload.first(),
            Some(&0),
            "login failed: {:?}",
            ok.payload
        );
        (c, ext)
    }

    /// Sends one packet.
    pub fn send(&mut self, seq: u8, payload: &[u8]) {
        use std::io::Write;
        let mut out = bytes::BytesMut::new();
        codec::mysql::encode_packet(seq, payload, &mut out);
        self.stream.write_all(&out).expect("write");
    }

    /// Reads one packet.
    pub fn read(&mut self) -> codec::mysql::Packet {
        use std::io::Read;
        let dec = codec::mysql::PacketDecoder::default();
        loop {
            if let Some(p) = dec.decode(&mut self.buf).expect("framing") {
                return p;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the server closed the connection (after reading what is left).
    pub fn closed(&mut self) -> bool {
        use std::io::Read;
        let mut chunk = [0u8; 4096];
        matches!(self.stream.read(&mut chunk), Ok(0) | Err(_))
    }
}
