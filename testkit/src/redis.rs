//! Single `redis-server` instances: plain, password-protected, cluster-enabled or replicas.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binary::find_binary;
use crate::error::{Error, Result};
use crate::port::{PortLease, reserve_port};
use crate::process::{Probe, ServerProcess, instance_dir, start_parallel};
use crate::resp::{Connection, Reply};

/// How many times a start is retried when the port turns out to be taken.
const START_ATTEMPTS: usize = 5;

/// Options for a [`RedisServer`]; build with the chained setters.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    password: Option<String>,
    cluster_enabled: bool,
    replica_of: Option<SocketAddr>,
    extra: Vec<String>,
    startup_timeout: Duration,
    tls: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            password: None,
            cluster_enabled: false,
            replica_of: None,
            extra: Vec::new(),
            startup_timeout: Duration::from_secs(20),
            tls: false,
        }
    }
}

impl RedisConfig {
    /// Defaults: no password, standalone, no persistence, 20 s startup timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `AUTH <password>` (also used as `masterauth` for replicas).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Turns on `cluster-enabled yes` (the cluster bus gets its own reserved port).
    pub fn cluster_enabled(mut self, enabled: bool) -> Self {
        self.cluster_enabled = enabled;
        self
    }

    /// Makes the server a replica of `primary` (`replicaof`).
    pub fn replica_of(mut self, primary: SocketAddr) -> Self {
        self.replica_of = Some(primary);
        self
    }

    /// Appends a raw `redis.conf` line, e.g. `"maxmemory 10mb"`.
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }

    /// Also serves TLS on a port of its own ([`RedisServer::tls_addr`]) with the kit's
    /// [`crate::TestCerts`] (server certificate for localhost/127.0.0.1/::1, clients not asked for
    /// certificates: `tls-auth-clients no`). The plain port stays open for the kit's own commands
    /// ([`RedisServer::cmd`], the readiness probe).
    pub fn tls(mut self, enabled: bool) -> Self {
        self.tls = enabled;
        self
    }

    /// How long to wait for the server to answer `PING`.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }
}

/// A running `redis-server` on 127.0.0.1, killed and cleaned up on drop.
#[derive(Debug)]
pub struct RedisServer {
    process: ServerProcess,
    config: RedisConfig,
    port: PortLease,
    cluster_port: Option<PortLease>,
    tls_port: Option<PortLease>,
    conf_path: PathBuf,
    // Last: dropped after the process is killed.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a standalone server with default options.
    pub fn start() -> Result<Self> {
        Self::start_with(RedisConfig::new())
    }

    /// Starts a server with `config`, retrying on another port if its port was taken.
    pub fn start_with(config: RedisConfig) -> Result<Self> {
        let binary = find_binary("redis-server")?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&binary, config.clone()) {
                Ok(server) => return Ok(server),
                Err(e) if e.is_addr_in_use() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::NoFreePort {
            tried: START_ATTEMPTS,
            dir: crate::port::shared_dir(),
        }))
    }

    /// Starts `n` independent servers in parallel (e.g. shards behind the proxy).
    pub fn start_many(n: usize, config: RedisConfig) -> Result<Vec<Self>> {
        start_parallel(n, "redis-server", || Self::start_with(config.clone()))
    }

    /// One start attempt on freshly reserved ports.
    fn try_start(binary: &Path, config: RedisConfig) -> Result<Self> {
        let port = reserve_port()?;
        let cluster_port = if config.cluster_enabled {
            Some(reserve_port()?)
        } else {
            None
        };
        let tls_port = if config.tls {
            Some(reserve_port()?)
        } else {
            None
        };
        let dir = instance_dir("redis")?;
        let conf_path = dir.path().join("redis.conf");
        let mut conf = vec![
            format!("port {}", port.port()),
            "bind 127.0.0.1".to_string(),
            format!("dir {}", dir.path().display()),
            "daemonize no".into(),
            "protected-mode no".into(),
            "save \"\"".into(),
            "appendonly no".into(),
            "logfile \"\"".into(),
            "loglevel notice".into(),
            "repl-diskless-sync-delay 0".into(),
        ];
        if let Some(password) = &config.password {
            conf.push(format!("requirepass {password}"));
            conf.push(format!("masterauth {password}"));
        }
        if let Some(cluster_port) = &cluster_port {
            conf.push("cluster-enabled yes".into());
            conf.push(format!("cluster-port {}", cluster_port.port()));
            conf.push("cluster-config-file nodes.conf".into());
            conf.push("cluster-node-timeout 3000".into());
        }
        if let Some(tls_port) = &tls_port {
            let certs = crate::TestCerts::get()?;
            conf.push(format!("tls-port {}", tls_port.port()));
            conf.push(format!("tls-cert-file {}", certs.cert.display()));
            conf.push(format!("tls-key-file {}", certs.key.display()));
            conf.push(format!("tls-ca-cert-file {}", certs.ca.display()));
            conf.push("tls-auth-clients no".into());
        }
        if let Some(primary) = config.replica_of {
            conf.push(format!("replicaof {} {}", primary.ip(), primary.port()));
        }
        conf.extend(config.extra.iter().cloned());
        std::fs::write(&conf_path, conf.join("\n") + "\n")
            .map_err(|e| Error::io(format!("writing {}", conf_path.display()), e))?;
        let process = ServerProcess::spawn(
            format!("redis-server 127.0.0.1:{}", port.port()),
            binary,
            &[conf_path.display().to_string()],
            dir.path().join("redis.log"),
        )?;
        let mut server = RedisServer {
            process,
            config,
            port,
            cluster_port,
            tls_port,
            conf_path,
            dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Waits until the server answers `PING` (with `AUTH` when a password is set).
    fn wait_ready(&mut self) -> Result<()> {
        let addr = self.addr();
        let password = self.config.password.clone();
        let timeout = self.config.startup_timeout;
        self.process.wait_ready(timeout, || {
            let Ok(mut conn) = Connection::connect(addr, Duration::from_millis(500)) else {
                return Probe::NotYet;
            };
            if let Some(password) = &password {
                match conn.call(&["AUTH", password]) {
                    Ok(Reply::Simple(_)) => {}
                    Ok(Reply::Error(e)) if !e.starts_with("LOADING") => {
                        return Probe::Fatal(format!("AUTH failed: {e}"));
                    }
                    _ => return Probe::NotYet,
                }
            }
            match conn.call(&["PING"]) {
                Ok(Reply::Simple(_)) => Probe::Ready,
                _ => Probe::NotYet,
            }
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port.port()))
    }

    /// `127.0.0.1:<tls-port>` of a server started with [`RedisConfig::tls`].
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port
            .as_ref()
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p.port())))
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// The cluster bus port when cluster mode is on.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port.as_ref().map(PortLease::port)
    }

    /// `redis://[:password@]127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.config.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port()),
            None => format!("redis://127.0.0.1:{}", self.port()),
        }
    }

    /// The password, if any.
    pub fn password(&self) -> Option<&str> {
        self.config.password.as_deref()
    }

    /// The options the server was started with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The instance directory (config, log, `nodes.conf`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log (stdout and stderr of `redis-server`).
    pub fn log_path(&self) -> &Path {
        self.process.log()
    }

    /// The OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Runs one command and renders the reply as text; panics (with the log path) on any failure.
    ///
    /// Replies render as: simple/bulk strings as is, integers in decimal, nil as `""`, arrays one
    /// element per line. Use [`Self::try_cmd`] when an error reply is expected.
    pub fn cmd(&self, args: &[&str]) -> String {
        match self.try_cmd(args) {
            Ok(text) => text,
            Err(e) => panic!("redis command {args:?} failed: {e}"),
        }
    }

    /// Runs one command (authenticating first if needed); an error reply becomes [`Error::Server`].
    pub fn try_cmd(&self, args: &[&str]) -> Result<String> {
        let server = format!(
            "redis-server {} (log: {})",
            self.addr(),
            self.log_path().display()
        );
        let io = |e: std::io::Error| Error::io(format!("talking to {server}"), e);
        let mut conn = Connection::connect(self.addr(), Duration::from_secs(10)).map_err(io)?;
        if let Some(password) = &self.config.password
            && let Reply::Error(message) = conn.call(&["AUTH", password]).map_err(io)?
        {
            return Err(Error::Server { server, message });
        }
        match conn.call(args).map_err(io)? {
            Reply::Error(message) => Err(Error::Server { server, message }),
            reply => Ok(reply.to_text()),
        }
    }

    /// True while the process exists (running or paused).
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Shuts the server down with SIGTERM (SIGKILL after 10 s); [`Self::restart`] brings it back.
    pub fn stop(&mut self) -> Result<()> {
        self.process.stop(Duration::from_secs(10))
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOPs the server: connections hang until [`Self::resume`].
    pub fn pause(&mut self) -> Result<()> {
        self.process.pause()
    }

    /// SIGCONTs a paused server.
    pub fn resume(&mut self) -> Result<()> {
        self.process.resume()
    }

    /// Starts a stopped or killed server again on the same port, directory and config.
    pub fn restart(&mut self) -> Result<()> {
        self.process.kill();
        let binary = find_binary("redis-server")?;
        self.process = ServerProcess::spawn(
            format!("redis-server 127.0.0.1:{}", self.port()),
            &binary,
            &[self.conf_path.display().to_string()],
            self.dir.path().join("redis.log"),
        )?;
        self.wait_ready()
    }
}
