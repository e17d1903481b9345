//! Exact Redis semantics through the proxy (issue 15, Redis items 12, 14, 15, 16, 17, 18): pub/sub
//! confirmations, blocked clients in arrival order, SCRIPT/FUNCTION KILL of a busy shard, merged
//! INFO, RANDOMKEY, CLIENT REPLY / UNBLOCK, Redis's argument errors, slow readers and hung shards.
//! Real redis-servers (testkit); where Redis has the same feature, the proxy's replies are compared
//! with a direct redis-server's in the same test.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Proxy, Raw, allow_admin, config, redis_servers};
use testkit::RedisServer;

/// Sends every command on both connections and asserts the same reply from each.
fn same_replies(proxy: &mut Raw, direct: &mut Raw, commands: &[&[&str]]) -> Vec<String> {
    commands
        .iter()
        .map(|c| {
            let want = direct.cmd(c);
            let got = proxy.cmd(c);
            assert_eq!(got, want, "{c:?}: proxy vs redis-server");
            got
        })
        .collect()
}

/// Reads `n` replies.
fn read_n(c: &mut Raw, n: usize) -> Vec<String> {
    (0..n).map(|_| c.read()).collect()
}

fn dist(toml: &str) -> router::redis::Distribution {
    let cfg = router::config::parse("t", toml).expect("config");
    proxy_redis::route::distribution(cfg.redis_group("cache").expect("group")).expect("dist")
}

/// A key of `prefix` on each shard: `keys[s]` maps to shard `s`.
fn key_per_shard(d: &router::redis::Distribution, n: usize, prefix: &str) -> Vec<String> {
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

#[test]
fn item12_subscribe_is_confirmed_once_active() {
    let servers = redis_servers(3);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 1);
    let mut publisher = proxy.connect();
    let t0 = Instant::now();
    for i in 0..150 {
        let mut sub = proxy.connect();
        let ch = format!("ch{i}");
        assert_eq!(
            sub.cmd(&["SUBSCRIBE", &ch]),
            format!("[subscribe, {ch}, :1]")
        );
        assert_eq!(publisher.cmd(&["PUBLISH", &ch, "m"]), ":1", "try {i}");
        assert_eq!(sub.read(), format!("[message, {ch}, m]"));
        let pat = format!("p{i}.*");
        assert_eq!(
            sub.cmd(&["PSUBSCRIBE", &pat]),
            format!("[psubscribe, {pat}, :2]")
        );
        assert_eq!(
            publisher.cmd(&["PUBLISH", &format!("p{i}.x"), "n"]),
            ":1",
            "try {i}"
        );
        assert_eq!(sub.read(), format!("[pmessage, {pat}, p{i}.x, n]"));
        assert!(t0.elapsed() < Duration::from_secs(60));
    }

    // Several channels in one command: one confirmation each, after every shard confirmed.
    let mut sub = proxy.connect();
    sub.send(&["SUBSCRIBE", "a", "b", "c", "d"]);
    assert_eq!(
        read_n(&mut sub, 4),
        [
            "[subscribe, a, :1]",
            "[subscribe, b, :2]",
            "[subscribe, c, :3]",
            "[subscribe, d, :4]"
        ]
    );
    for ch in ["a", "b", "c", "d"] {
        assert_eq!(publisher.cmd(&["PUBLISH", ch, "x"]), ":1");
        assert_eq!(sub.read(), format!("[message, {ch}, x]"));
    }
    sub.send(&["UNSUBSCRIBE", "b", "zz"]);
    assert_eq!(
        read_n(&mut sub, 2),
        ["[unsubscribe, b, :3]", "[unsubscribe, zz, :3]"]
    );
    assert_eq!(publisher.cmd(&["PUBLISH", "b", "x"]), ":0");

    // UNSUBSCRIBE from a client that is not subscribed: one reply per channel, as Redis.
    let direct = RedisServer::start().expect("redis-server");
    for cmd in [
        &["UNSUBSCRIBE", "a", "b", "c"][..],
        &["PUNSUBSCRIBE", "x*", "y*"],
        &["SUNSUBSCRIBE", "s1", "s2"],
        &["UNSUBSCRIBE"],
        &["PUNSUBSCRIBE"],
    ] {
        let mut p = proxy.connect();
        let mut d = Raw::connect(direct.addr());
        let n = (cmd.len() - 1).max(1);
        p.send(cmd);
        d.send(cmd);
        let want = read_n(&mut d, n);
        assert_eq!(read_n(&mut p, n), want, "{cmd:?}");
        assert_eq!(
            p.cmd(&["PING"]),
            d.cmd(&["PING"]),
            "{cmd:?}: nothing else came"
        );
    }
}
