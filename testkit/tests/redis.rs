//! Real redis-server instances and a real Redis Cluster.

use std::process::Command;

use testkit::{RedisCluster, RedisConfig, RedisServer};

#[test]
fn server_starts_and_answers() {
    let server = RedisServer::start().unwrap();
    assert_eq!(server.cmd(&["PING"]), "PONG");
    assert_eq!(server.cmd(&["SET", "k", "v"]), "OK");
    assert_eq!(server.cmd(&["GET", "k"]), "v");
    assert_eq!(server.cmd(&["INCRBY", "n", "41"]), "41");
    assert_eq!(server.cmd(&["GET", "missing"]), "");
    assert!(server.try_cmd(&["NOSUCHCOMMAND"]).is_err());
    // A real client sees the same data.
    let out = Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "GET", "k"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
}

#[test]
fn parallel_servers_get_different_ports() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(RedisServer::start);
        let b = s.spawn(RedisServer::start);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_ne!(a.port(), b.port());
    a.cmd(&["SET", "who", "a"]);
    b.cmd(&["SET", "who", "b"]);
    assert_eq!(a.cmd(&["GET", "who"]), "a");
    assert_eq!(b.cmd(&["GET", "who"]), "b");
}

#[test]
fn start_many_gives_independent_servers() {
    let servers = RedisServer::start_many(3, RedisConfig::new()).unwrap();
    for (i, s) in servers.iter().enumerate() {
        s.cmd(&["SET", "id", &i.to_string()]);
    }
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(s.cmd(&["GET", "id"]), i.to_string());
        assert_eq!(s.cmd(&["DBSIZE"]), "1");
    }
}

#[test]
fn password_and_replica_of() {
    let primary = RedisServer::start_with(RedisConfig::new().password("s3cret")).unwrap();
    let err = Command::new("redis-cli")
        .args(["-p", &primary.port().to_string(), "GET", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&err.stdout).contains("NOAUTH"));
    let replica = RedisServer::start_with(
        RedisConfig::new()
            .password("s3cret")
            .replica_of(primary.addr()),
    )
    .unwrap();
    primary.cmd(&["SET", "x", "42"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while replica.cmd(&["GET", "x"]) != "42" {
        assert!(std::time::Instant::now() < deadline, "replica never got x");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(replica.cmd(&["INFO", "replication"]).contains("role:slave"));
}

#[test]
fn stop_kill_pause_and_restart() {
    let mut server = RedisServer::start().unwrap();
    let port = server.port();
    let dir = server.dir().to_path_buf();
    server.cmd(&["SET", "k", "v"]);
    server.pause().unwrap();
    assert!(server.try_cmd_timeout_probe());
    server.resume().unwrap();
    assert_eq!(server.cmd(&["PING"]), "PONG");
    server.kill();
    assert!(!server.is_running());
    assert!(server.try_cmd(&["PING"]).is_err());
    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(server.cmd(&["PING"]), "PONG");
    server.stop().unwrap();
    assert!(!server.is_running());
    drop(server);
    assert!(!dir.exists(), "instance dir must be removed on drop");
}

/// Extension used by the pause test: a paused server does not answer within a short timeout.
trait PausedProbe {
    fn try_cmd_timeout_probe(&self) -> bool;
}

impl PausedProbe for RedisServer {
    fn try_cmd_timeout_probe(&self) -> bool {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(self.addr()).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        conn.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 16];
        conn.read(&mut buf).is_err()
    }
}

#[test]
fn cluster_routes_keys_across_nodes() {
    let cluster = RedisCluster::start(3, 1).unwrap();
    assert_eq!(cluster.nodes().len(), 6);
    for node in cluster.nodes() {
        assert!(node.cmd(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
    }
    // Keys with different slots land on different masters; -c follows the redirects.
    for i in 0..20 {
        let key = format!("key{i}");
        assert_eq!(cluster.cli(&["SET", &key, &format!("v{i}")]).unwrap(), "OK");
    }
    for i in 0..20 {
        assert_eq!(
            cluster.cli(&["GET", &format!("key{i}")]).unwrap(),
            format!("v{i}")
        );
    }
    let holders = cluster
        .nodes()
        .iter()
        .take(cluster.masters())
        .filter(|n| n.cmd(&["DBSIZE"]) != "0")
        .count();
    assert!(
        holders >= 2,
        "keys should spread over masters, got {holders}"
    );
    // A plain (non-cluster) request to the wrong node is redirected.
    let slot_owner_err = cluster
        .nodes()
        .iter()
        .take(3)
        .filter_map(|n| n.try_cmd(&["GET", "key0"]).err())
        .map(|e| e.to_string())
        .collect::<Vec<_>>();
    assert!(
        slot_owner_err.iter().any(|e| e.contains("MOVED")),
        "{slot_owner_err:?}"
    );
}

#[test]
fn bad_config_fails_with_the_log_tail() {
    let err = RedisServer::start_with(RedisConfig::new().config_line("no-such-directive 1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("exited unexpectedly"), "{err}");
    assert!(err.contains("redis.log"), "{err}");
    assert!(err.contains("no-such-directive"), "{err}");
}

#[test]
fn cluster_with_password() {
    let cluster = RedisCluster::start_with(3, 0, RedisConfig::new().password("pw")).unwrap();
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.cli(&["SET", "{a}1", "x"]).unwrap(), "OK");
    assert_eq!(cluster.cli(&["GET", "{a}1"]).unwrap(), "x");
    for node in cluster.nodes() {
        assert!(
            node.try_cmd(&["CLUSTER", "INFO"])
                .unwrap()
                .contains("cluster_state:ok")
        );
    }
}
