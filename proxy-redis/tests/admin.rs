//! What the admin port shows (per-command metrics, hot keys, big keys) and backend credentials.

mod common;

use std::time::Duration;

use common::{Proxy, config, redis_servers};
use testkit::{RedisConfig, RedisServer};

#[test]
fn metrics_hot_keys_and_big_keys_are_published() {
    let servers = redis_servers(2);
    let toml =
        config(&servers, "ketama", "").replace("name = \"cache\"", "name = \"metrics-listener\"");
    let proxy = Proxy::start(&toml, 1);
    let mut c = proxy.connect();
    for i in 0..400 {
        c.cmd(&["GET", "the-hot-key"]);
        c.cmd(&["GET", &format!("cold:{i}")]);
    }
    let big = "x".repeat(64 * 1024);
    assert_eq!(c.cmd(&["SET", "the-big-key", &big]), "+OK");
    assert!(c.cmd(&["NOSUCH"]).starts_with("-ERR unknown command"));
    std::thread::sleep(proxy_redis::metrics::PUBLISH_EVERY * 3);
    let all = proxy_redis::admin_metrics(&proxy.shared);
    let m = all
        .iter()
        .find(|l| l.listener == "metrics-listener")
        .expect("listener metrics");
    let get = m
        .commands
        .iter()
        .find(|c| c.name == "get")
        .expect("get counted");
    assert_eq!(get.calls, 800);
    assert_eq!(get.errors, 0);
    assert_eq!(get.latency_us.iter().sum::<u64>(), 800);
    let set = m
        .commands
        .iter()
        .find(|c| c.name == "set")
        .expect("set counted");
    assert_eq!(set.calls, 1);
    assert_eq!(
        m.hot_keys.first().map(|k| k.key.as_str()),
        Some("the-hot-key"),
        "{:?}",
        m.hot_keys
    );
    assert!(m.hot_keys.len() <= proxy_redis::metrics::TOP_K);
    assert!(
        m.big_keys
            .iter()
            .any(|k| k.key == "the-big-key" && k.value >= 64 * 1024),
        "{:?}",
        m.big_keys
    );
    let totals = proxy.shared.stats.totals();
    let t = totals
        .iter()
        .find(|t| t.name == "metrics-listener")
        .expect("listener totals");
    assert_eq!(t.requests, 802);
    assert_eq!(t.connections, 1);
    assert_eq!(t.accepted, 1);
    assert!(t.errors >= 1);
    assert!(t.bytes_in > 64 * 1024 && t.bytes_out > 0);
    drop(c);
    drop(proxy);
}

#[test]
fn backend_passwords_are_sent_on_connect() {
    let secured: Vec<RedisServer> = (0..2)
        .map(|_| RedisServer::start_with(RedisConfig::new().password("b-secret")).expect("redis"))
        .collect();
    let proxy = Proxy::start(&config(&secured, "modula", "password = \"b-secret\""), 1);
    let mut c = proxy.connect();
    for i in 0..10 {
        assert_eq!(c.cmd(&["SET", &format!("pw:{i}"), "1"]), "+OK");
    }
    assert_eq!(c.cmd(&["DBSIZE"]), ":10");
    assert_eq!(c.cmd(&["SELECT", "1"]), "+OK");
    assert_eq!(c.cmd(&["SET", "db1", "1"]), "+OK");
    // A wrong backend password is a clear error, not a hang.
    let wrong = Proxy::start(&config(&secured, "modula", "password = \"nope\""), 1);
    let mut w = wrong.connect();
    let r = w.cmd(&["GET", "pw:1"]);
    assert!(
        r.starts_with("-ERR backend") && r.contains("handshake failed"),
        "{r}"
    );
}

#[test]
fn shutdown_closes_idle_clients() {
    let servers = redis_servers(1);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 2);
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["SET", "a", "1"]), "+OK");
    let t0 = std::time::Instant::now();
    drop(proxy);
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(c.read(), "<closed>");
}
