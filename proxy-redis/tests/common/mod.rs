//! Test harness: real redis-servers (testkit) and the proxy in-process on its own executors.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime::{BackendRegistry, Executors, ListenerCtx, Shared, SnapshotHub, StatsRegistry};
use testkit::RedisServer;

/// A proxy running in this process.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Config publisher (for reload tests).
    pub hub: SnapshotHub,
    /// Shared state (backend registry for admin tests).
    pub shared: Shared,
    shutdown: tokio::sync::watch::Sender<bool>,
    executors: Option<Executors>,
}

impl Proxy {
    /// Starts the proxy for the first listener of `toml` on `cores` executors.
    pub fn start(toml: &str, cores: usize) -> Proxy {
        let config =
            router::config::parse("test.toml", toml).unwrap_or_else(|e| panic!("config: {e}"));
        let listener_name = config.listeners[0].name.clone();
        let backends = Arc::new(BackendRegistry::new(&config));
        let hub = SnapshotHub::new(config, "test");
        let stats = Arc::new(StatsRegistry::default());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let shared = Shared {
            logins: Default::default(),
            registries: Default::default(),
            snapshots: hub.clone(),
            stats: stats.clone(),
            backends,
            shutdown: rx,
        };
        let first =
            runtime::bind_reuseport("127.0.0.1:0".parse().expect("addr"), 1024).expect("bind");
        let addr = first.local_addr().expect("addr");
        let mut sockets = vec![Some(first)];
        for _ in 1..cores {
            sockets.push(Some(runtime::bind_reuseport(addr, 1024).expect("bind")));
        }
        let sockets = Arc::new(Mutex::new(sockets));
        let shared2 = shared.clone();
        let executors = Executors::start(cores, "proxy-test", move |core| {
            let std_listener = sockets.lock().expect("lock")[core].take().expect("socket");
            let shared = shared2.clone();
            let name = listener_name.clone();
            async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("from_std");
                let stats = shared.stats.register(&name, "redis", &addr.to_string());
                proxy_redis::serve(ListenerCtx {
                    name,
                    core,
                    listener,
                    stats,
                    shared,
                })
                .await;
            }
        })
        .expect("executors");
        Proxy {
            addr,
            hub,
            shared,
            shutdown: tx,
            executors: Some(executors),
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A raw client connection.
    pub fn connect(&self) -> Raw {
        Raw::connect(self.addr)
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

/// Starts `n` redis-servers.
pub fn redis_servers(n: usize) -> Vec<RedisServer> {
    (0..n)
        .map(|_| RedisServer::start().expect("redis-server"))
        .collect()
}

/// A config with listener `cache` (redis, group `cache`) and group `cache` made of `group` (its
/// keys: servers, distribution, ...).
pub fn cache_config(group: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "cache"
kind = "redis"
address = "127.0.0.1:6400"
group = "cache"

[redis_groups.cache]
{group}
"#
    )
}

/// `[proxy]` keys for the tests: a short shutdown grace.
pub const PROXY_KEYS: &str = "\n[proxy]\nshutdown_grace_ms = 500\n";

/// A group config over `servers` with `distribution` and extra group lines.
pub fn config(servers: &[RedisServer], distribution: &str, extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{{ name = \"r{}\", address = \"{}\" }}", i + 1, s.addr()))
        .collect();
    let group = format!(
        "distribution = \"{distribution}\"\nhash_tag = \"{{}}\"\nservers = [{}]\n{extra}",
        list.join(", ")
    );
    format!("{PROXY_KEYS}{}", cache_config(&group))
}

/// The keys stored on `servers` altogether (`DBSIZE` of each, read directly).
pub fn total_keys(servers: &[RedisServer]) -> usize {
    servers
        .iter()
        .map(|s| {
            s.cmd(&["DBSIZE"])
                .trim_start_matches(':')
                .parse::<usize>()
                .unwrap_or(0)
        })
        .sum()
}

/// `n` RESP-encoded `SET {prefix}{i} v{i}` commands in one buffer (a pipeline).
pub fn set_pipeline(prefix: &str, n: usize) -> Vec<u8> {
    let mut pipe = Vec::new();
    for i in 0..n {
        let (k, v) = (format!("{prefix}{i}"), format!("v{i}"));
        pipe.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
    }
    pipe
}

/// The key distribution of group `cache` in `toml` (from [`config`]).
pub fn dist(toml: &str) -> router::redis::Distribution {
    let cfg = router::config::parse("t", toml).expect("config");
    router::redis::group_distribution(cfg.redis_group("cache").expect("group")).expect("dist")
}

/// A key of `prefix` on each of `n` shards: `keys[s]` maps to shard `s` (the first of
/// `{prefix}0`, `{prefix}1`, ... that does).
pub fn key_per_shard(d: &router::redis::Distribution, n: usize, prefix: &str) -> Vec<String> {
    let mut keys = vec![String::new(); n];
    for i in 0..100_000 {
        let k = format!("{prefix}{i}");
        let s = d.server_for_key(k.as_bytes());
        if keys[s].is_empty() {
            keys[s] = k;
        }
        if keys.iter().all(|k| !k.is_empty()) {
            break;
        }
    }
    keys
}

/// `toml` (from [`config`]) with `allow_admin_commands = true` on its listener.
pub fn allow_admin(toml: &str) -> String {
    toml.replacen(
        "group = \"cache\"\n",
        "group = \"cache\"\nallow_admin_commands = true\n",
        1,
    )
}

/// A minimal blocking RESP client over raw bytes (exact replies).
pub struct Raw {
    r: BufReader<TcpStream>,
}

impl Raw {
    /// Connects.
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Raw {
            r: BufReader::new(s),
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, b: &[u8]) {
        self.r.get_mut().write_all(b).expect("write");
    }

    /// Sends a command.
    pub fn send(&mut self, args: &[&str]) {
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend(format!("${}\r\n{}\r\n", a.len(), a).bytes());
        }
        self.send_raw(&b);
    }

    /// Reads one reply as text (`+x`, `-x`, `:n`, `$x` / `nil`, arrays as `[a, b]`).
    pub fn read(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read");
        if line.is_empty() {
            return "<closed>".into();
        }
        let line = line.trim_end_matches("\r\n").to_string();
        let (t, rest) = line.split_at(1);
        match t {
            "+" | "-" | ":" | "," | "#" | "(" => line,
            "_" => "nil".into(),
            "$" | "=" | "!" => {
                let n: i64 = rest.parse().expect("len");
                if n < 0 {
                    return "nil".into();
                }
                let mut buf = vec![0u8; n as usize + 2];
                self.r.read_exact(&mut buf).expect("bulk");
                buf.truncate(n as usize);
                String::from_utf8_lossy(&buf).into_owned()
            }
            "*" | "~" | ">" | "%" => {
                let n: i64 = rest.parse().expect("count");
                if n < 0 {
                    return "nil".into();
                }
                let n = if t == "%" { n * 2 } else { n };
                let items: Vec<String> = (0..n).map(|_| self.read()).collect();
                format!("[{}]", items.join(", "))
            }
            _ => format!("?{line}"),
        }
    }

    /// Reads one raw line (with its CRLF).
    pub fn read_raw_line(&mut self, out: &mut Vec<u8>) {
        self.r.read_until(b'\n', out).expect("read");
    }

    /// Sends a command and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> String {
        self.send(args);
        self.read()
    }
}

/// Runs `redis-cli -p port args...` and returns its stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// A Redis Sentinel process (`redis-server --sentinel`) on a reserved loopback port, its config and
/// log in a directory of its own; killed and its directory removed on drop.
pub struct Sentinel {
    /// The sentinel's port.
    pub lease: testkit::PortLease,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Sentinel {
    /// Starts `redis-server --sentinel` with the config `conf(port, dir)` (its reserved port and
    /// its directory, named `furrow-{kind}-PID-PORT`); does not wait for it to answer.
    pub fn spawn(kind: &str, conf: impl FnOnce(u16, &std::path::Path) -> String) -> Sentinel {
        let lease = testkit::reserve_port().expect("port");
        let dir = std::env::temp_dir().join(format!(
            "furrow-{kind}-{}-{}",
            std::process::id(),
            lease.port()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("sentinel.conf");
        std::fs::write(&path, conf(lease.port(), &dir)).expect("sentinel.conf");
        let log = std::fs::File::create(dir.join("sentinel.log")).expect("log");
        let child =
            std::process::Command::new(testkit::find_binary("redis-server").expect("redis-server"))
                .arg(&path)
                .arg("--sentinel")
                .stdout(std::process::Stdio::from(log.try_clone().expect("log")))
                .stderr(std::process::Stdio::from(log))
                .spawn()
                .expect("start sentinel");
        Sentinel { lease, child, dir }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
