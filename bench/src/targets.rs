//! Starting the targets: peer proxies (twemproxy, predixy, haproxy) and Furrow, each as a child process with
//! a generated config on a reserved loopback port, killed when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::loads::mysql_client::MyConn;
use crate::report::Role;

/// A process the harness started; SIGKILLed and reaped on drop (and on the harness's death).
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `program args`, output to `log`, dying with the harness (`PR_SET_PDEATHSIG`).
    pub fn spawn(program: &Path, args: &[String], log: PathBuf) -> Result<Proc, String> {
        let out =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        Ok(Proc { child, log })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        crate::loads::tail(&text, 5)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A target ready to receive load.
#[derive(Debug)]
pub struct Target {
    /// Name in the report.
    pub name: String,
    /// Role for ratios.
    pub role: Role,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The process whose CPU and memory are measured.
    pub pid: u32,
    /// The process, when the harness started it (None for direct: the backend is owned elsewhere).
    pub proc: Option<Proc>,
    /// Furrow's admin port (its `INFO` has the backend write counters).
    pub admin: Option<SocketAddr>,
    /// The span collector the target exports to (`furrow-traced`), kept running as long as it.
    pub collector: Option<Collector>,
    _lease: Option<testkit::PortLease>,
    _admin_lease: Option<testkit::PortLease>,
}

impl Target {
    /// A backend measured directly.
    pub fn direct(addr: SocketAddr, pid: u32) -> Target {
        Target {
            name: "direct".into(),
            role: Role::Direct,
            addr,
            pid,
            proc: None,
            admin: None,
            collector: None,
            _lease: None,
            _admin_lease: None,
        }
    }

    /// Whether the target process is still alive.
    pub fn alive(&mut self) -> bool {
        match &mut self.proc {
            Some(p) => p.alive(),
            None => crate::procfs::cpu_ticks(self.pid).is_some(),
        }
    }
}

/// Which protocol readiness probe to use.
#[derive(Debug, Clone)]
pub enum Probe {
    /// `PING` must answer `+PONG`.
    Redis,
    /// The port accepts connections (a TLS listener, whose protocol the probe does not speak).
    Connect,
    /// Log in and run `SELECT 1`.
    Mysql {
        /// User.
        user: String,
        /// Password.
        password: String,
    },
}

fn probe_once(addr: SocketAddr, probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Redis => {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            s.write_all(b"*1\r\n$4\r\nPING\r\n")
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            let reply = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            if reply == "+PONG" {
                Ok(())
            } else {
                Err(format!("PING answered {reply:?}"))
            }
        }
        Probe::Connect => TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Probe::Mysql { user, password } => {
            let mut c = MyConn::connect(addr, user, password, None).map_err(|e| e.to_string())?;
            c.query("SELECT 1").map(|_| ()).map_err(|e| e.to_string())
        }
    }
}

/// Waits until `addr` answers the probe, up to `timeout`.
pub fn wait_ready(
    addr: SocketAddr,
    probe: &Probe,
    proc: Option<&mut Proc>,
    timeout: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    let mut proc = proc;
    loop {
        let res = probe_once(addr, probe);
        if res.is_ok() {
            return Ok(());
        }
        if let Some(p) = proc.as_deref_mut()
            && !p.alive()
        {
            return Err(format!("exited during start-up; log: {}", p.log_tail()));
        }
        if start.elapsed() > timeout {
            let log = proc
                .map(|p| format!("; log: {}", p.log_tail()))
                .unwrap_or_default();
            return Err(format!(
                "not ready after {timeout:?}: {}{log}",
                res.err().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lease() -> Result<testkit::PortLease, String> {
    testkit::reserve_port().map_err(|e| format!("reserving a port: {e}"))
}

/// twemproxy (`nutcracker`) configuration: ketama + fnv1a_64 over named servers.
pub fn twemproxy_config(
    listen: SocketAddr,
    stats_port: u16,
    servers: &[(String, SocketAddr)],
) -> String {
    let _ = stats_port;
    let mut s = format!(
        "bench:\n  listen: {listen}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  \
         auto_eject_hosts: false\n  server_connections: 1\n  preconnect: true\n  servers:\n"
    );
    for (name, addr) in servers {
        s.push_str(&format!("   - {addr}:1 {name}\n"));
    }
    s
}

/// Starts twemproxy over `servers` (name, address).
pub fn start_twemproxy(dir: &Path, servers: &[(String, SocketAddr)]) -> Result<Target, String> {
    let bin = crate::tools::find("nutcracker").ok_or("nutcracker not found")?;
    let port = lease()?;
    let stats = lease()?;
    let conf = dir.join("nutcracker.yml");
    std::fs::write(&conf, twemproxy_config(port.addr(), stats.port(), servers))
        .map_err(|e| e.to_string())?;
    let args: Vec<String> = vec![
        "-c".into(),
        conf.display().to_string(),
        "-s".into(),
        stats.port().to_string(),
        "-a".into(),
        "127.0.0.1".into(),
        "-v".into(),
        "4".into(),
    ];
    let mut proc = Proc::spawn(&bin, &args, dir.join("nutcracker.log"))?;
    wait_ready(
        port.addr(),
        &Probe::Redis,
        Some(&mut proc),
        Duration::from_secs(10),
    )?;
    drop(stats);
    Ok(Target {
        name: "twemproxy".into(),
        role: Role::Peer,
        addr: port.addr(),
        pid: proc.pid(),
        proc: Some(proc),
        admin: None,
        collector: None,
        _lease: Some(port),
        _admin_lease: None,
    })
}

/// predixy configuration: one worker thread, a standalone pool of one group per shard (named as
/// twemproxy's servers), keys spread by `crc16` modulo the group count. predixy has no ketama:
/// keys land on other shards than under twemproxy and Furrow, which the loads do not notice (every
/// key is on every shard and the key choice is uniform).
pub fn predixy_config(listen: SocketAddr, servers: &[(String, SocketAddr)]) -> String {
    let mut s = format!(
        "Name bench\nBind {listen}\nWorkerThreads 1\nClientTimeout 0\nLogVerbSample 0\nLogDebugSample 0\n\
         LogInfoSample 0\nLogNoticeSample 1\nLogWarnSample 1\nLogErrorSample 1\n\n\
         StandaloneServerPool {{\n    Hash crc16\n    Distribution modula\n    RefreshMethod fixed\n\
         \x20   ServerFailureLimit 10\n    ServerRetryTimeout 1\n"
    );
    for (name, addr) in servers {
        s.push_str(&format!("    Group {name} {{\n        + {addr}\n    }}\n"));
    }
    s.push_str("}\n");
    s
}

/// Starts predixy (built by `bench/peers/build.sh predixy`; `bin`) over `servers` (name, address).
pub fn start_predixy(
    bin: &Path,
    dir: &Path,
    servers: &[(String, SocketAddr)],
) -> Result<Target, String> {
    let port = lease()?;
    let conf = dir.join("predixy.conf");
    std::fs::write(&conf, predixy_config(port.addr(), servers)).map_err(|e| e.to_string())?;
    let args: Vec<String> = vec![conf.display().to_string()];
    let mut proc = Proc::spawn(bin, &args, dir.join("predixy.log"))?;
    wait_ready(
        port.addr(),
        &Probe::Redis,
        Some(&mut proc),
        Duration::from_secs(10),
    )?;
    Ok(Target {
        name: "predixy".into(),
        role: Role::Peer,
        addr: port.addr(),
        pid: proc.pid(),
        proc: Some(proc),
        admin: None,
        collector: None,
        _lease: Some(port),
        _admin_lease: None,
    })
}

/// haproxy configuration: `threads` threads, TCP mode, round-robin over `servers` per connection.
pub fn haproxy_config(listen: SocketAddr, servers: &[SocketAddr], threads: u32) -> String {
    let mut s = format!(
        "global\n  nbthread {threads}\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
         timeout client 120s\n  timeout server 120s\n\nfrontend fe\n  bind {listen}\n  default_backend be\n\n\
         backend be\n  balance roundrobin\n"
    );
    for (i, a) in servers.iter().enumerate() {
        s.push_str(&format!("  server s{i} {a}\n"));
    }
    s
}

/// Starts haproxy in TCP mode in front of `servers` with `threads` threads, as target `name`
/// (its config and log named after it).
pub fn start_haproxy(
    name: &str,
    threads: u32,
    dir: &Path,
    servers: &[SocketAddr],
    probe: &Probe,
) -> Result<Target, String> {
    let bin = crate::tools::find("haproxy").ok_or("haproxy not found")?;
    let port = lease()?;
    let conf = dir.join(format!("{name}.cfg"));
    std::fs::write(&conf, haproxy_config(port.addr(), servers, threads))
        .map_err(|e| e.to_string())?;
    let args: Vec<String> = vec!["-db".into(), "-f".into(), conf.display().to_string()];
    let mut proc = Proc::spawn(&bin, &args, dir.join(format!("{name}.log")))?;
    wait_ready(port.addr(), probe, Some(&mut proc), Duration::from_secs(10))?;
    Ok(Target {
        name: name.into(),
        role: Role::Peer,
        addr: port.addr(),
        pid: proc.pid(),
        proc: Some(proc),
        admin: None,
        collector: None,
        _lease: Some(port),
        _admin_lease: None,
    })
}

/// Starts Furrow with `config` (which must put its listener on `port`).
pub fn start_furrow(
    bin: &Path,
    dir: &Path,
    config: &str,
    executors: usize,
    port: testkit::PortLease,
    probe: &Probe,
    callgrind: bool,
) -> Result<Target, String> {
    let conf = dir.join("furrow.toml");
    let admin = lease()?;
    std::fs::write(&conf, with_admin(config, admin.addr())).map_err(|e| e.to_string())?;
    let args: Vec<String> = vec![
        "--log".into(),
        "warn".into(),
        "proxy".into(),
        "--config".into(),
        conf.display().to_string(),
        "--executors".into(),
        executors.to_string(),
    ];
    // Under callgrind (`--callgrind`) Furrow runs simulated: slower to start.
    let (bin, ready_in) = if callgrind {
        (
            crate::callgrind::wrapper(bin, dir)?,
            Duration::from_secs(120),
        )
    } else {
        (bin.to_path_buf(), Duration::from_secs(15))
    };
    let mut proc = Proc::spawn(&bin, &args, dir.join("furrow.log"))?;
    wait_ready(port.addr(), probe, Some(&mut proc), ready_in)?;
    Ok(Target {
        name: "furrow".into(),
        role: Role::Furrow,
        addr: port.addr(),
        pid: proc.pid(),
        proc: Some(proc),
        admin: Some(admin.addr()),
        collector: None,
        _lease: Some(port),
        _admin_lease: Some(admin),
    })
}

/// The bearer token of the [`Collector`] (the proxy sends it; loopback only).
pub const COLLECTOR_TOKEN: &str = "bench-collector-token";

/// Where a traced Furrow (the `furrow-traced` targets) sends its spans: a `furrow control` with
/// an in-memory store and tail sampling keeping every trace (`--trace-sample-rate 1`), or the
/// harness's own sink (`--collector sink`, [`crate::sink`]).
#[derive(Debug)]
pub struct Collector {
    /// Its HTTP address (`POST /v1/traces`).
    pub addr: SocketAddr,
    kind: CollectorKind,
}

#[derive(Debug)]
enum CollectorKind {
    /// `furrow control` (never measured: the proxy's CPU and instructions are).
    Control {
        proc: Proc,
        _lease: testkit::PortLease,
    },
    /// The harness's sink.
    Sink(crate::sink::Sink),
}

impl Collector {
    /// Starts the harness's sink at niceness `nice`.
    pub fn sink(nice: i32) -> Result<Collector, String> {
        let s = crate::sink::Sink::start(nice)?;
        Ok(Collector {
            addr: s.addr,
            kind: CollectorKind::Sink(s),
        })
    }

    /// What the collector took in, for the report's notes.
    pub fn intake(&self) -> String {
        match &self.kind {
            CollectorKind::Control { .. } => match self.get("/v1/trace/stats").and_then(|b| {
                serde_json::from_str::<serde_json::Value>(&b).map_err(|e| e.to_string())
            }) {
                Ok(v) => format!(
                    "its collector (`furrow control`, started by the harness) accepted {} spans and \
                     refused {} (503 when its queue is full: the proxy then pauses its exports, \
                     drops and counts, never waits)",
                    v["spans_accepted"], v["spans_refused"]
                ),
                Err(e) => format!("the collector's counters could not be read: {e}"),
            },
            CollectorKind::Sink(s) => {
                use std::sync::atomic::Ordering::Relaxed;
                format!(
                    "its collector was the harness's sink (`--collector sink`: reads each export \
                     whole, answers 200, decodes nothing): {} requests, {:.1} MiB of spans, read \
                     in {:.2} CPU-seconds of the shared cores{}",
                    s.stats.requests.load(Relaxed),
                    s.stats.body_bytes.load(Relaxed) as f64 / (1024.0 * 1024.0),
                    s.stats.cpu_ns.load(Relaxed) as f64 / 1e9,
                    match s.stats.malformed.load(Relaxed) {
                        0 => String::new(),
                        n => format!(", {n} malformed"),
                    }
                )
            }
        }
    }

    /// `GET path` with the token; the body when the answer is 200.
    pub fn get(&self, path: &str) -> Result<String, String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {COLLECTOR_TOKEN}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        match out.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
            _ => Err(format!(
                "GET {path}: {}",
                out.lines().next().unwrap_or("no answer")
            )),
        }
    }
}

/// Starts `bin control` as the span collector, its files in `dir`, at niceness `nice` (through
/// `nice(1)` unless 0).
pub fn start_collector(bin: &Path, dir: &Path, nice: i32) -> Result<Collector, String> {
    let port = lease()?;
    let mut args: Vec<String> = [
        "--log",
        "warn",
        "control",
        "--listen",
        &port.addr().to_string(),
        "--store",
        "sqlite::memory:",
        "--admin-token",
        COLLECTOR_TOKEN,
        "--trace-sample-rate",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proc = if nice == 0 {
        Proc::spawn(bin, &args, dir.join("collector.log"))?
    } else {
        let nice_bin = crate::tools::find("nice").ok_or("nice not found")?;
        args.splice(
            0..0,
            [
                "-n".to_string(),
                nice.to_string(),
                bin.display().to_string(),
            ],
        );
        Proc::spawn(&nice_bin, &args, dir.join("collector.log"))?
    };
    let mut c = Collector {
        addr: port.addr(),
        kind: CollectorKind::Control { proc, _lease: port },
    };
    let start = Instant::now();
    loop {
        let e = match c.get("/v1/trace/stats") {
            Ok(_) => return Ok(c),
            Err(e) => e,
        };
        let CollectorKind::Control { proc, .. } = &mut c.kind else {
            unreachable!("made as a control just above")
        };
        if !proc.alive() {
            return Err(format!("the collector exited; log: {}", proc.log_tail()));
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "the collector did not start: {e}; log: {}",
                proc.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `config` with a `[tracing]` table exporting every span (100 % head sampling) to `collector`.
pub fn with_tracing(config: &str, collector: SocketAddr, sample_percent: u8) -> String {
    format!(
        "{config}\n[tracing]\nendpoint = \"http://{collector}\"\ntoken = \"{COLLECTOR_TOKEN}\"\n\
         head_sample_percent = {sample_percent}\n"
    )
}

/// `config` with an admin port at `admin` (a `[proxy]` table first; the harness's configs have none).
pub fn with_admin(config: &str, admin: SocketAddr) -> String {
    format!("[proxy]\nadmin = \"{admin}\"\n\n{config}")
}

/// `config` (one listener, from [`furrow_redis_config`] or [`furrow_mysql_config`]) with TLS on
/// its listener, using the test kit's certificates; returns it with the CA clients verify with.
pub fn with_listener_tls(config: &str) -> Result<(String, PathBuf), String> {
    let c = testkit::TestCerts::get().map_err(|e| e.to_string())?;
    let at = config
        .find("\n\n")
        .ok_or("listener block not found in the Furrow config")?;
    let tls = format!(
        "\ntls = {{ cert = {:?}, key = {:?} }}",
        c.cert.display().to_string(),
        c.key.display().to_string()
    );
    let mut s = config.to_string();
    s.insert_str(at, &tls);
    Ok((s, c.ca.clone()))
}

/// Reserves the port a Furrow config will listen on.
pub fn furrow_port() -> Result<testkit::PortLease, String> {
    lease()
}

/// Furrow config for a Redis listener over ketama shards (same names and hash as twemproxy's).
pub fn furrow_redis_config(listen: SocketAddr, servers: &[(String, SocketAddr)]) -> String {
    let mut s = format!(
        "[[listeners]]\nname = \"bench\"\nkind = \"redis\"\naddress = \"{listen}\"\ngroup = \"shards\"\n\n\
         [redis_groups.shards]\ndistribution = \"ketama\"\nhash = \"fnv1a_64\"\nconnections = 1\nservers = [\n"
    );
    for (name, addr) in servers {
        s.push_str(&format!(
            "  {{ name = \"{name}\", address = \"{addr}\", weight = 1 }},\n"
        ));
    }
    s.push_str("]\n");
    s
}

/// Furrow config for a MySQL listener in front of one server, with a proxy user of the same name
/// and password as the backend account (so every target takes the same credentials).
pub fn furrow_mysql_config(
    listen: SocketAddr,
    backend: SocketAddr,
    user: &str,
    password: &str,
    hashes: &str,
) -> String {
    format!(
        "[[listeners]]\nname = \"bench\"\nkind = \"mysql\"\naddress = \"{listen}\"\ngroup = \"db\"\n\n\
         [mysql_groups.db]\nuser = \"{user}\"\npassword = \"{password}\"\nprimary = {{ name = \"db\", address = \"{backend}\" }}\n\
         replicas = []\n\n[users.{user}]\n{hashes}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn twemproxy_config_lists_named_servers() {
        let c = twemproxy_config(
            addr(1000),
            1001,
            &[("r1".into(), addr(7001)), ("r2".into(), addr(7002))],
        );
        assert!(c.contains("listen: 127.0.0.1:1000"));
        assert!(c.contains("distribution: ketama") && c.contains("hash: fnv1a_64"));
        assert!(c.contains("   - 127.0.0.1:7001:1 r1\n   - 127.0.0.1:7002:1 r2\n"));
    }

    #[test]
    fn predixy_config_has_one_group_per_shard() {
        let c = predixy_config(
            addr(1000),
            &[("r1".into(), addr(7001)), ("r2".into(), addr(7002))],
        );
        assert!(c.starts_with("Name bench\nBind 127.0.0.1:1000\nWorkerThreads 1\n"));
        assert!(c.contains("    Hash crc16\n    Distribution modula\n    RefreshMethod fixed\n"));
        assert!(c.contains("    ServerFailureLimit 10\n"));
        assert!(c.contains(
            "    Group r1 {\n        + 127.0.0.1:7001\n    }\n    Group r2 {\n        + 127.0.0.1:7002\n    }\n}\n"
        ));
    }

    #[test]
    fn haproxy_config_is_tcp_single_thread() {
        let c = haproxy_config(addr(1000), &[addr(7001), addr(7002)], 1);
        assert!(c.contains("mode tcp") && c.contains("nbthread 1"));
        assert!(c.contains("bind 127.0.0.1:1000"));
        assert!(c.contains("server s1 127.0.0.1:7002"));
        assert!(haproxy_config(addr(1000), &[addr(7001)], 2).contains("nbthread 2\n"));
    }

    #[test]
    fn furrow_configs() {
        let r = furrow_redis_config(addr(1000), &[("r1".into(), addr(7001))]);
        assert!(
            r.contains("kind = \"redis\"")
                && r.contains("{ name = \"r1\", address = \"127.0.0.1:7001\", weight = 1 }")
        );
        let m = furrow_mysql_config(
            addr(1000),
            addr(3307),
            "u",
            "p",
            "password_native = \"*AB\"",
        );
        assert!(m.contains("[users.u]\npassword_native = \"*AB\""));
        assert!(m.contains("primary = { name = \"db\", address = \"127.0.0.1:3307\" }"));
        let traced = with_tracing(&r, addr(9100), 100);
        assert!(traced.starts_with(&r));
        assert!(traced.ends_with(
            "\n[tracing]\nendpoint = \"http://127.0.0.1:9100\"\ntoken = \"bench-collector-token\"\nhead_sample_percent = 100\n"
        ));
        let with = with_admin(&r, addr(9000));
        assert!(with.starts_with("[proxy]\nadmin = \"127.0.0.1:9000\"\n\n[[listeners]]"));
    }

    #[test]
    fn proc_is_killed_on_drop() {
        let dir = std::env::temp_dir().join(format!("bench-proc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Proc::spawn(Path::new("/bin/sleep"), &["30".into()], dir.join("log")).unwrap();
        let pid = p.pid();
        assert!(p.alive());
        drop(p);
        assert!(crate::procfs::cpu_ticks(pid).is_none(), "reaped and gone");
        let _ = std::fs::remove_dir_all(dir);
    }
}
