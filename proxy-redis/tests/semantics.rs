//! Exact Redis semantics through the proxy (issue 15, Redis items 12, 14, 15, 16, 17, 18): pub/sub
//! confirmations, blocked clients in arrival order, SCRIPT/FUNCTION KILL of a busy shard, merged
//! INFO, RANDOMKEY, CLIENT REPLY / UNBLOCK, Redis's argument errors, slow readers and hung shards.
//! Real redis-servers (testkit); where Redis has the same feature, the proxy's replies are compared
//! with a direct redis-server's in the same test.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Proxy, Raw, allow_admin, config, dist, key_per_shard, redis_servers};
use testkit::RedisServer;

/// Reads `n` replies.
fn read_n(c: &mut Raw, n: usize) -> Vec<String> {
    (0..n).map(|_| c.read()).collect()
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

#[test]
fn item16_info_is_one_merged_info() {
    let servers = redis_servers(3);
    let toml = allow_admin(&config(&servers, "ketama", ""));
    let proxy = Proxy::start(&toml, 1);
    let direct = RedisServer::start().expect("redis-server");
    let mut p = proxy.connect();
    let mut d = Raw::connect(direct.addr());
    for i in 0..40 {
        let k = format!("k{i}");
        assert_eq!(p.cmd(&["SET", &k, "v"]), "+OK");
        assert_eq!(d.cmd(&["SET", &k, "v"]), "+OK");
    }
    for i in 0..5 {
        let k = format!("k{i}");
        assert_eq!(p.cmd(&["EXPIRE", &k, "1000"]), ":1");
        assert_eq!(d.cmd(&["EXPIRE", &k, "1000"]), ":1");
    }
    assert_eq!(p.cmd(&["SELECT", "2"]), "+OK");
    assert_eq!(d.cmd(&["SELECT", "2"]), "+OK");
    assert_eq!(p.cmd(&["SET", "x", "1"]), "+OK");
    assert_eq!(d.cmd(&["SET", "x", "1"]), "+OK");
    // The keyspace section is one section, with the totals a single server with these keys has
    // (avg_ttl differs by the milliseconds in between).
    let strip_ttl = |s: String| -> String {
        s.lines()
            .map(|l| l.split(",avg_ttl").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let got = p.cmd(&["INFO", "keyspace"]);
    assert_eq!(
        strip_ttl(got.clone()),
        strip_ttl(d.cmd(&["INFO", "keyspace"]))
    );
    assert!(
        got.starts_with("# Keyspace\r\ndb0:keys=40,expires=5,avg_ttl="),
        "{got:?}"
    );

    // The default INFO: one of each section, counters summed, per-shard detail at the end.
    let mut blocked = proxy.connect();
    blocked.send(&["BLPOP", "nothing-here", "0"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let info = loop {
        let info = p.cmd(&["INFO"]);
        if info.contains("\r\nblocked_clients:1\r\n") || Instant::now() > deadline {
            break info;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(info.contains("\r\nblocked_clients:1\r\n"), "{info}");
    for section in [
        "# Proxy",
        "# Server",
        "# Clients",
        "# Stats",
        "# Keyspace",
        "# Shards",
    ] {
        assert_eq!(
            info.matches(&format!("{section}\r\n")).count(),
            1,
            "{section} in {info}"
        );
    }
    let field = |name: &str| -> i64 {
        info.split("\r\n")
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    let per_shard: i64 = servers
        .iter()
        .map(|s| {
            s.cmd(&["INFO", "clients"])
                .lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0)
                - 1 // the probe itself
        })
        .sum();
    assert_eq!(field("connected_clients"), per_shard, "{info}");
    assert!(info.contains("\r\ndb0:keys=40,expires=5,"), "{info}");
    assert!(
        info.contains("\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n"),
        "{info}"
    );
    for (i, s) in servers.iter().enumerate() {
        assert!(
            info.contains(&format!(
                "\r\nshard_r{}:address={},role=master,",
                i + 1,
                s.addr()
            )),
            "{info}"
        );
    }
    assert!(field("total_commands_processed") > 40, "{info}");
    drop(blocked);
}

#[test]
fn item16_randomkey_picks_a_random_shard_with_keys() {
    let servers = redis_servers(3);
    let toml = config(&servers, "ketama", "");
    let keys = key_per_shard(&dist(&toml), 3, "rk");
    let proxy = Proxy::start(&toml, 1);
    let mut p = proxy.connect();
    assert_eq!(p.cmd(&["RANDOMKEY"]), "nil");
    // Only the last shard has a key: it is found every time.
    assert_eq!(p.cmd(&["SET", &keys[2], "v"]), "+OK");
    for _ in 0..20 {
        assert_eq!(p.cmd(&["RANDOMKEY"]), keys[2]);
    }
    for k in &keys {
        assert_eq!(p.cmd(&["SET", k, "v"]), "+OK");
    }
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        seen.insert(p.cmd(&["RANDOMKEY"]));
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(
        seen,
        keys.iter().cloned().collect(),
        "every shard is picked"
    );
}

#[test]
fn item16_client_reply_and_unblock_as_redis() {
    let servers = redis_servers(2);
    let proxy = Proxy::start(&allow_admin(&config(&servers, "ketama", "")), 1);
    let direct = RedisServer::start().expect("redis-server");
    // CLIENT REPLY: the same transcript from both (replies that are off never come).
    let script: &[&[&str]] = &[
        &["SET", "a", "1"],
        &["CLIENT", "REPLY", "OFF"],
        &["SET", "a", "2"],
        &["GET", "a"],
        &["MGET", "a", "b", "c"],
        &["NOPE"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", "a"],
        &["CLIENT", "REPLY", "SKIP"],
        &["GET", "a"],
        &["DEL", "a", "b", "c"],
        &["CLIENT", "REPLY", "OFF"],
        &["CLIENT", "REPLY", "SKIP"],
        &["ECHO", "off"],
        &["CLIENT", "REPLY", "ON"],
        &["CLIENT", "REPLY", "MAYBE"],
        &["EXISTS", "a"],
    ];
    let mut transcripts = Vec::new();
    for addr in [direct.addr(), proxy.addr] {
        let mut c = Raw::connect(addr);
        for cmd in script {
            c.send(cmd);
        }
        c.send(&["ECHO", "end"]);
        let mut t = Vec::new();
        loop {
            let r = c.read();
            if r == "end" || r == "<closed>" {
                break;
            }
            t.push(r);
        }
        transcripts.push(t);
    }
    assert_eq!(transcripts[1], transcripts[0]);
    assert_eq!(
        transcripts[0],
        ["+OK", "+OK", "2", ":1", "+OK", "-ERR syntax error", ":0"]
    );

    // CLIENT UNBLOCK: TIMEOUT gives the blocked client nil, ERROR Redis's error; an id that is not
    // blocked answers 0.
    for addr in [direct.addr(), proxy.addr] {
        for (how, want) in [
            ("TIMEOUT", "nil"),
            ("ERROR", "-UNBLOCKED client unblocked via CLIENT UNBLOCK"),
        ] {
            let mut a = Raw::connect(addr);
            let mut b = Raw::connect(addr);
            let id = a.cmd(&["CLIENT", "ID"]);
            let id = id.trim_start_matches(':').to_string();
            assert_eq!(b.cmd(&["CLIENT", "UNBLOCK", &id, how]), ":0");
            a.send(&["BLPOP", "unblock-me", "0"]);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let r = b.cmd(&["CLIENT", "UNBLOCK", &id, how]);
                if r == ":1" {
                    break;
                }
                assert_eq!(r, ":0");
                assert!(Instant::now() < deadline, "never blocked");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(a.read(), want, "{addr} {how}");
            assert_eq!(a.cmd(&["PING"]), "+PONG");
            assert_eq!(b.cmd(&["CLIENT", "UNBLOCK", &id, how]), ":0");
            assert_eq!(
                b.cmd(&["CLIENT", "UNBLOCK", &id, "SOON"]),
                "-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR"
            );
            assert_eq!(
                b.cmd(&["CLIENT", "UNBLOCK", "x"]),
                "-ERR value is not an integer or out of range"
            );
        }
    }
}

#[test]
fn item16_argument_errors_are_redis_errors() {
    let servers = redis_servers(3);
    let proxy = Proxy::start(&allow_admin(&config(&servers, "ketama", "")), 1);
    let direct = RedisServer::start().expect("redis-server");
    let mut p = proxy.connect();
    let mut d = Raw::connect(direct.addr());
    let cases: &[&[&str]] = &[
        &["MSETNX", "a", "1", "b"],
        &["MSETNX", "a"],
        &["MSET", "a", "1", "b"],
        &["LMPOP", "0", "a", "LEFT"],
        &["LMPOP", "-1", "a", "LEFT"],
        &["LMPOP", "x", "a", "LEFT"],
        &["LMPOP", "3", "a", "LEFT"],
        &["LMPOP", "2", "a", "b"],
        &["LMPOP", "1", "a", "UP"],
        &["BLMPOP", "0", "0", "a", "LEFT"],
        &["BLMPOP", "0", "5", "a", "LEFT"],
        &["SINTERCARD", "0", "a"],
        &["SINTERCARD", "2", "a"],
        &["SINTERCARD", "x", "a"],
        &["SINTERCARD", "1", "a", "LIMIT", "-1"],
        &["ZMPOP", "0", "a", "MIN"],
        &["ZMPOP", "1", "a", "UP"],
        &["BZMPOP", "0", "0", "a", "MIN"],
        &["ZUNION", "0", "a"],
        &["ZUNION", "3", "a", "b"],
        &["ZUNION", "x", "a"],
        &["ZINTER", "0", "a"],
        &["ZINTER", "2", "a"],
        &["ZDIFF", "0", "a"],
        &["ZDIFF", "2", "a"],
        &["ZUNIONSTORE", "d", "0", "a"],
        &["ZUNIONSTORE", "d", "2", "a"],
        &["ZINTERSTORE", "d", "x", "a"],
        &["ZDIFFSTORE", "d", "3", "a"],
        &["ZINTERCARD", "0", "a"],
        &["ZINTERCARD", "2", "a"],
        &["EVAL", "return 1", "2", "a"],
        &["EVAL", "return 1", "-1"],
        &["EVAL", "return 1", "x"],
        &[
            "EVALSHA",
            "0000000000000000000000000000000000000000",
            "3",
            "a",
        ],
        &["EVAL_RO", "return 1", "2", "a"],
        &["FCALL", "f", "2", "a"],
        &["FCALL", "f", "x"],
        &["FCALL_RO", "f", "-1"],
        &["XREAD", "STREAMS", "a"],
        &["XREAD", "STREAMS", "a", "b", "0"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a"],
        &["GEORADIUS", "a", "0", "0", "1", "km", "STORE"],
        &["SORT", "a", "STORE"],
        &["OBJECT", "FREQ"],
        &["BITOP", "AND", "d"],
        &["BITOP", "NOPE", "d", "a"],
        &["GET"],
        &["SET", "a"],
    ];
    let mut differ = Vec::new();
    for c in cases {
        let want = d.cmd(c);
        let got = p.cmd(c);
        if got != want {
            differ.push(format!("{c:?}: proxy {got:?} redis {want:?}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn item14_blocked_clients_are_served_in_arrival_order() {
    let servers = redis_servers(2);
    // Several cores: the clients of one key may be served by different cores.
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 4);
    let mut pusher = proxy.connect();
    let t0 = Instant::now();
    // (blocking command, push of item i, reply of the client that gets item i)
    type Case = (
        &'static [&'static str],
        fn(&str) -> Vec<String>,
        fn(&str) -> String,
    );
    let cases: [Case; 5] = [
        (
            &["BRPOPLPUSH", "{q}src", "{q}dst", "0"],
            |i| vec!["LPUSH".into(), "{q}src".into(), i.into()],
            |i| i.to_string(),
        ),
        (
            &["BLPOP", "{q}src", "0"],
            |i| vec!["RPUSH".into(), "{q}src".into(), i.into()],
            |i| format!("[{{q}}src, {i}]"),
        ),
        (
            &["BRPOP", "{q}src", "{q}other", "0"],
            |i| vec!["RPUSH".into(), "{q}src".into(), i.into()],
            |i| format!("[{{q}}src, {i}]"),
        ),
        (
            &["BLMOVE", "{q}src", "{q}dst", "LEFT", "RIGHT", "0"],
            |i| vec!["RPUSH".into(), "{q}src".into(), i.into()],
            |i| i.to_string(),
        ),
        (
            &["BZPOPMIN", "{q}z", "0"],
            |i| vec!["ZADD".into(), "{q}z".into(), "1".into(), i.into()],
            |i| format!("[{{q}}z, {i}, 1]"),
        ),
    ];
    // Blocked clients over both servers (the key lives on one of them).
    let blocked = || -> usize {
        servers
            .iter()
            .map(|s| {
                s.cmd(&["INFO", "clients"])
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("blocked_clients:"))
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0)
            })
            .sum()
    };
    for (blocking, push, reply) in cases {
        for round in 0..8 {
            let mut clients: Vec<Raw> = (0..3).map(|_| proxy.connect()).collect();
            for (n, c) in clients.iter_mut().enumerate() {
                c.send(blocking);
                // Arrival order is the order in which the server blocked them: wait until this
                // client is blocked there before the next one sends (on a loaded machine, sends
                // a few hundred microseconds apart can reach the proxy's cores in either order).
                let deadline = Instant::now() + Duration::from_secs(5);
                while blocked() < n + 1 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                assert_eq!(
                    blocked(),
                    n + 1,
                    "{blocking:?} round {round}: client {n} blocked"
                );
            }
            for (n, c) in clients.iter_mut().enumerate() {
                let item = format!("item{n}");
                let args = push(&item);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                // The push may come before the last client blocked; it is then served at once.
                assert!(pusher.cmd(&args).starts_with(':'));
                assert_eq!(
                    c.read(),
                    reply(&item),
                    "{blocking:?} round {round}: client {n}"
                );
                assert_eq!(c.cmd(&["PING"]), "+PONG");
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "took too long");
        }
        // Sent back to back: whatever order the cores see them in, every client is served once
        // and nobody hangs.
        for round in 0..4 {
            let mut clients: Vec<Raw> = (0..3).map(|_| proxy.connect()).collect();
            for c in clients.iter_mut() {
                c.send(blocking);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while blocked() < 3 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            let mut want = Vec::new();
            for n in 0..3 {
                let item = format!("item{n}");
                let args = push(&item);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                assert!(pusher.cmd(&args).starts_with(':'));
                want.push(reply(&item));
            }
            let mut got: Vec<String> = clients.iter_mut().map(|c| c.read()).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{blocking:?} back-to-back round {round}");
        }
    }
}

#[test]
fn item15_script_and_function_kill_reach_a_busy_shard() {
    let servers = redis_servers(2);
    let direct = RedisServer::start().expect("redis-server");
    for s in servers.iter().chain([&direct]) {
        // Redis serves other clients (SCRIPT KILL among them) once a script ran this long.
        assert_eq!(
            s.cmd(&["CONFIG", "SET", "busy-reply-threshold", "100"]),
            "OK"
        );
    }
    let toml = config(&servers, "ketama", "request_timeout_ms = 5000");
    let proxy = Proxy::start(&toml, 1);
    let lib =
        "#!lua name=spinlib\nredis.register_function('spin', function() while true do end end)";
    let mut transcripts = Vec::new();
    for addr in [direct.addr(), proxy.addr] {
        let mut a = Raw::connect(addr);
        let mut b = Raw::connect(addr);
        let mut t = Vec::new();
        t.push(b.cmd(&["SCRIPT", "KILL"]));
        t.push(b.cmd(&["FUNCTION", "KILL"]));
        t.push(b.cmd(&["FUNCTION", "LOAD", lib]));
        for (busy, kill) in [
            (
                &["EVAL", "while true do end", "0"][..],
                &["SCRIPT", "KILL"][..],
            ),
            (&["FCALL", "spin", "0"], &["FUNCTION", "KILL"]),
        ] {
            a.send(busy);
            std::thread::sleep(Duration::from_millis(300));
            let t0 = Instant::now();
            let deadline = t0 + Duration::from_secs(5);
            let killed = loop {
                let r = b.cmd(kill);
                // NOTBUSY only while the script has not started yet.
                if r != "-NOTBUSY No scripts in execution right now." || Instant::now() > deadline {
                    break r;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            t.push(killed);
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "{addr}: kill was slow"
            );
            t.push(a.read());
            t.push(a.cmd(&["PING"]));
        }
        transcripts.push(t);
    }
    assert_eq!(transcripts[1], transcripts[0]);
    assert_eq!(transcripts[0][3], "+OK");
    assert_eq!(transcripts[0][6], "+OK");
}

/// The peak resident memory of this process (the proxy runs in it), in MiB.
fn peak_rss_mib() -> u64 {
    testkit::rss::status_kib("VmHWM").map_or(0, |kb| kb / 1024)
}

#[test]
fn item18_a_slow_reader_does_not_stall_its_shard() {
    let servers = redis_servers(1);
    // One shared connection per server: the slow reader's replies and the others' share it.
    let toml = config(&servers, "ketama", "connections = 1");
    let proxy = Proxy::start(&toml, 1);
    let mut writer = proxy.connect();
    let big = "x".repeat(2 * 1024 * 1024);
    assert_eq!(writer.cmd(&["SET", "big", &big]), "+OK");
    let before = peak_rss_mib();
    // The slow reader asks for 60 large replies (120 MiB, twice its 64 MiB buffer limit) and
    // reads nothing for a while.
    let mut slow = proxy.connect();
    slow.send(&["GET", "big"]);
    std::thread::sleep(Duration::from_millis(100));
    let mut pipeline = Vec::new();
    for _ in 1..60 {
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    slow.send_raw(&pipeline);
    std::thread::sleep(Duration::from_millis(200));
    // Other clients of the shard are served at once meanwhile.
    let mut other = proxy.connect();
    let t0 = Instant::now();
    for i in 0..200 {
        let k = format!("o{i}");
        assert_eq!(other.cmd(&["SET", &k, "v"]), "+OK");
        assert_eq!(other.cmd(&["GET", &k]), "v");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "others waited: {:?}",
        t0.elapsed()
    );
    let grown = peak_rss_mib().saturating_sub(before);
    assert!(
        grown < 80,
        "the proxy buffered {grown} MiB for the slow reader"
    );
    // The slow reader is not dropped: it gets every reply once it reads.
    for n in 0..60 {
        assert_eq!(slow.read().len(), big.len(), "reply {n}");
    }
    assert_eq!(slow.cmd(&["PING"]), "+PONG");
}

#[test]
fn item17_a_hung_shard_is_ejected_and_its_errors_are_counted() {
    let mut servers = redis_servers(2);
    let toml = config(
        &servers,
        "ketama",
        "eject_after = 2\nretry_after_ms = 60000\nrequest_timeout_ms = 200",
    );
    let keys = key_per_shard(&dist(&toml), 2, "h");
    let proxy = Proxy::start(&toml, 1);
    let mut c = proxy.connect();
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, "v"]), "+OK");
    }
    servers[1].pause().expect("SIGSTOP");
    // Each request to the stopped shard times out; after eject_after of them in a row the shard
    // is ejected and its errors are immediate.
    let mut replies = Vec::new();
    let mut took = Vec::new();
    for _ in 0..4 {
        let t0 = Instant::now();
        replies.push(c.cmd(&["GET", &keys[1]]));
        took.push(t0.elapsed());
        // The healthy shard is unaffected.
        assert_eq!(c.cmd(&["GET", &keys[0]]), "v");
    }
    servers[1].resume().expect("SIGCONT");
    for r in &replies[..2] {
        assert!(r.contains("request timed out after 200 ms"), "{replies:?}");
    }
    for (r, t) in replies[2..].iter().zip(&took[2..]) {
        assert!(
            r.ends_with("unavailable: ejected after repeated failures"),
            "{replies:?}"
        );
        assert!(*t < Duration::from_millis(100), "{took:?}");
    }
    assert!(took[0] < Duration::from_secs(2), "{took:?}");
    // Every error the proxy made counts as an error of its command.
    std::thread::sleep(proxy_redis::metrics::PUBLISH_EVERY * 3);
    let get = proxy_redis::admin_metrics(&proxy.shared)
        .into_iter()
        .filter(|l| l.listener == "cache")
        .flat_map(|l| l.commands)
        .find(|c| c.name == "get")
        .expect("get stats");
    assert_eq!(get.errors, 4, "{get:?}");
    assert_eq!(get.calls, 8, "{get:?}");
}
