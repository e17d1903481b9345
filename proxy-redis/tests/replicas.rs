//! Replica reads (`read_from`) and Redis Sentinel failover, against real servers.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{PROXY_KEYS, Proxy, Sentinel, cache_config};
use testkit::{RedisConfig, RedisServer};

/// A primary and one replica of it, with the link up.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start().expect("primary");
    let replica =
        RedisServer::start_with(RedisConfig::new().replica_of(primary.addr())).expect("replica");
    wait_for(Duration::from_secs(20), "replication link up", || {
        replica
            .cmd(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    (primary, replica)
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `calls` of `cmdstat_<name>` in `INFO commandstats` (0 when the command never ran).
fn calls(server: &RedisServer, name: &str) -> u64 {
    let info = server.cmd(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{name}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("calls count"))
}

fn group(primary: &RedisServer, replica: &RedisServer, extra: &str) -> String {
    let group = format!(
        "servers = [{{ name = \"r1\", address = \"{}\", replicas = [\"{}\"] }}]\n{extra}",
        primary.addr(),
        replica.addr()
    );
    format!("{PROXY_KEYS}{}", cache_config(&group))
}

#[test]
fn reads_go_to_the_replica_and_writes_to_the_primary() {
    let (primary, replica) = primary_and_replica();
    let proxy = Proxy::start(&group(&primary, &replica, "read_from = \"replica\""), 1);
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["SET", "k", "v1"]), "+OK");
    wait_for(Duration::from_secs(10), "replication of k", || {
        replica.cmd(&["GET", "k"]) == "v1"
    });
    primary.cmd(&["CONFIG", "RESETSTAT"]);
    replica.cmd(&["CONFIG", "RESETSTAT"]);
    for _ in 0..20 {
        assert_eq!(c.cmd(&["GET", "k"]), "v1");
    }
    assert_eq!(c.cmd(&["MGET", "k", "nope"]), "[v1, nil]");
    assert_eq!(c.cmd(&["STRLEN", "k"]), ":2");
    // The replica answered every read (its stats were reset after the direct GET above).
    assert_eq!(calls(&replica, "get"), 20);
    assert_eq!(calls(&replica, "mget"), 1);
    assert_eq!(calls(&replica, "strlen"), 1);
    assert_eq!(calls(&primary, "get"), 0);
    assert_eq!(calls(&primary, "mget"), 0);
    // Writes go to the primary (a replica would answer -READONLY).
    assert_eq!(c.cmd(&["SET", "k", "v2"]), "+OK");
    assert_eq!(c.cmd(&["INCR", "n"]), ":1");
    assert_eq!(calls(&primary, "set"), 1);
    assert_eq!(calls(&primary, "incr"), 1);
    // A registry entry exists for the replica, with its role.
    let states = proxy.shared.backends.all();
    let r = states
        .iter()
        .find(|s| s.address == replica.addr().to_string())
        .expect("replica state");
    assert_eq!(r.role, runtime::backend::Role::Replica);
    assert_eq!(r.name, format!("r1@{}", replica.addr()));
}

#[test]
fn read_from_primary_keeps_reads_on_the_primary() {
    let (primary, replica) = primary_and_replica();
    let proxy = Proxy::start(&group(&primary, &replica, ""), 1);
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["SET", "k", "v"]), "+OK");
    primary.cmd(&["CONFIG", "RESETSTAT"]);
    replica.cmd(&["CONFIG", "RESETSTAT"]);
    for _ in 0..5 {
        assert_eq!(c.cmd(&["GET", "k"]), "v");
    }
    assert_eq!(calls(&primary, "get"), 5);
    assert_eq!(calls(&replica, "get"), 0);
}

#[test]
fn a_dead_replica_falls_back_to_the_primary() {
    let (primary, mut replica) = primary_and_replica();
    let toml = group(
        &primary,
        &replica,
        "read_from = \"prefer_replica\"\neject_after = 1\nretry_after_ms = 60000",
    );
    let proxy = Proxy::start(&toml, 1);
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["SET", "k", "v"]), "+OK");
    wait_for(Duration::from_secs(10), "replication of k", || {
        replica.cmd(&["GET", "k"]) == "v"
    });
    assert_eq!(c.cmd(&["GET", "k"]), "v");
    replica.kill();
    primary.cmd(&["CONFIG", "RESETSTAT"]);
    // The read in flight when the replica dies may fail; the replica is then ejected and reads go
    // to the primary.
    let first = c.cmd(&["GET", "k"]);
    assert!(first == "v" || first.contains("unavailable"), "{first}");
    for _ in 0..5 {
        assert_eq!(c.cmd(&["GET", "k"]), "v");
    }
    assert!(calls(&primary, "get") >= 5);
    let r = proxy
        .shared
        .backends
        .all()
        .into_iter()
        .find(|s| s.role == runtime::backend::Role::Replica)
        .expect("replica state");
    assert_eq!(r.state_word(), "ejected");
}

impl Sentinel {
    /// Starts a sentinel monitoring `primary` as `name` (quorum 1, down after 1000 ms).
    fn start(name: &str, primary: &RedisServer) -> Sentinel {
        let s = Sentinel::spawn("sentinel", |port, dir| {
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {pport} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 10000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.display(),
                pport = primary.port(),
            )
        });
        wait_for(Duration::from_secs(10), "sentinel up", || {
            s.cli(&["PING"]).contains("PONG")
        });
        s
    }

    fn addr(&self) -> String {
        self.lease.addr().to_string()
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.lease.port().to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

#[test]
fn sentinel_failover_is_followed_without_restart() {
    let (mut primary, replica) = primary_and_replica();
    let sentinel = Sentinel::start("mymaster", &primary);
    // The sentinel learns of the replica from the primary's INFO.
    wait_for(Duration::from_secs(20), "sentinel sees the replica", || {
        sentinel
            .cli(&["SENTINEL", "REPLICAS", "mymaster"])
            .contains(&replica.port().to_string())
    });
    // The configured address is wrong on purpose: the sentinel's answer wins.
    let toml = cache_config(&format!(
        r#"sentinels = ["{}"]
eject_after = 1
retry_after_ms = 60000
request_timeout_ms = 1000
servers = [{{ name = "shard1", sentinel_master = "mymaster", address = "127.0.0.1:1" }}]"#,
        sentinel.addr()
    ));
    let proxy = Proxy::start(&toml, 2);
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["SET", "a", "1"]), "+OK");
    assert_eq!(primary.cmd(&["GET", "a"]), "1");
    primary.kill();
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(40) {
        // The client that was connected before the failover keeps working.
        last = c.cmd(&["SET", "a", "2"]);
        if last == "+OK" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last, "+OK", "writes never succeeded after the failover");
    assert!(
        replica
            .cmd(&["INFO", "replication"])
            .contains("role:master"),
        "the replica was promoted"
    );
    assert_eq!(replica.cmd(&["GET", "a"]), "2");
    let mut fresh = proxy.connect();
    assert_eq!(fresh.cmd(&["GET", "a"]), "2");
    assert_eq!(fresh.cmd(&["SET", "b", "3"]), "+OK");
    assert_eq!(replica.cmd(&["GET", "b"]), "3");
}
