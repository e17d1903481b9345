//! Multi-key splitting, same-shard checks, fan-out aggregation and unknown commands.

mod common;

use common::{Proxy, allow_admin, config, dist, redis_servers, total_keys};

#[test]
fn mget_mset_del_exists_split_over_shards() {
    let servers = redis_servers(3);
    let toml = config(&servers, "modula", "");
    let d = dist(&toml);
    let proxy = Proxy::start(&toml, 1);
    let mut c = proxy.connect();
    let keys: Vec<String> = (0..20).map(|i| format!("mk{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for (i, k) in keys.iter().enumerate() {
        mset.push(k.clone());
        mset.push(format!("val{i}"));
    }
    let args: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(c.cmd(&args), "+OK");
    // Each key landed on its shard.
    let mut shards_used = std::collections::BTreeSet::new();
    for (i, k) in keys.iter().enumerate() {
        let s = d.server_for_key(k.as_bytes());
        shards_used.insert(s);
        assert_eq!(servers[s].cmd(&["GET", k]), format!("val{i}"));
    }
    assert!(shards_used.len() >= 2, "test keys should span shards");
    // MGET in key order with a missing key in the middle.
    let reply = c.cmd(&["MGET", "mk3", "nosuchkey", "mk0", "mk17"]);
    assert_eq!(reply, "[val3, nil, val0, val17]");
    assert_eq!(c.cmd(&["EXISTS", "mk1", "mk2", "nosuch", "mk1"]), ":3");
    assert_eq!(c.cmd(&["DEL", "mk1", "mk2", "nosuch", "mk5"]), ":3");
    assert_eq!(c.cmd(&["EXISTS", "mk1", "mk2", "mk5"]), ":0");
    assert_eq!(c.cmd(&["TOUCH", "mk0", "mk3"]), ":2");
    assert_eq!(c.cmd(&["UNLINK", "mk0", "mk3"]), ":2");
}

#[test]
fn same_shard_commands_and_crossslot() {
    let servers = redis_servers(3);
    let toml = config(&servers, "ketama", "");
    let d = dist(&toml);
    let proxy = Proxy::start(&toml, 1);
    let mut c = proxy.connect();
    // Hash tags keep keys together.
    assert_eq!(c.cmd(&["SADD", "{u1}:a", "x", "y"]), ":2");
    assert_eq!(c.cmd(&["SADD", "{u1}:b", "y", "z"]), ":2");
    assert_eq!(c.cmd(&["SINTERSTORE", "{u1}:c", "{u1}:a", "{u1}:b"]), ":1");
    assert_eq!(c.cmd(&["RENAME", "{u1}:c", "{u1}:d"]), "+OK");
    assert_eq!(c.cmd(&["SMEMBERS", "{u1}:d"]), "[y]");
    assert_eq!(c.cmd(&["MSETNX", "{u1}:e", "1", "{u1}:f", "2"]), ":1");
    assert_eq!(
        c.cmd(&[
            "EVAL",
            "return redis.call('GET', KEYS[1]) .. ARGV[1]",
            "2",
            "{u1}:e",
            "{u1}:f",
            "!"
        ]),
        "1!"
    );
    // Two keys on different shards.
    let (a, b) = find_pair(&d);
    let r = c.cmd(&["RENAME", &a, &b]);
    assert!(r.starts_with("-CROSSSLOT"), "{r}");
    let r = c.cmd(&["MSETNX", &a, "1", &b, "2"]);
    assert!(r.starts_with("-CROSSSLOT"), "{r}");
    let r = c.cmd(&["EVAL", "return 1", "2", &a, &b]);
    assert!(r.starts_with("-CROSSSLOT"), "{r}");
    // The connection still works.
    assert_eq!(c.cmd(&["PING"]), "+PONG");
}

fn find_pair(d: &router::redis::Distribution) -> (String, String) {
    let a = "pair:0".to_string();
    let sa = d.server_for_key(a.as_bytes());
    for i in 1..1000 {
        let b = format!("pair:{i}");
        if d.server_for_key(b.as_bytes()) != sa {
            return (a, b);
        }
    }
    panic!("no pair of keys on different shards");
}

#[test]
fn fan_out_commands_aggregate_every_shard() {
    let servers = redis_servers(3);
    // CONFIG SET and FLUSHALL below: an open listener refuses them unless allowed.
    let toml = allow_admin(&config(&servers, "modula", ""));
    let proxy = Proxy::start(&toml, 1);
    let mut c = proxy.connect();
    for i in 0..30 {
        assert_eq!(c.cmd(&["SET", &format!("f{i}"), "v"]), "+OK");
    }
    let direct = total_keys(&servers);
    assert_eq!(direct, 30);
    assert_eq!(c.cmd(&["DBSIZE"]), ":30");
    let keys = c.cmd(&["KEYS", "f*"]);
    assert_eq!(keys.matches("f").count(), 30, "{keys}");
    // SCAN walks every shard; the cursor ends at 0.
    let mut cursor = "0".to_string();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        c.send(&["SCAN", &cursor, "COUNT", "7"]);
        let reply = c.read();
        let inner = reply.trim_start_matches('[').trim_end_matches(']');
        let (cur, rest) = inner.split_once(", ").expect("two elements");
        for k in rest
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(", ")
            .filter(|s| !s.is_empty())
        {
            seen.insert(k.to_string());
        }
        cursor = cur.to_string();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 30);
    let rk = c.cmd(&["RANDOMKEY"]);
    assert!(rk.starts_with('f'), "{rk}");
    // INFO is one merged INFO: the keyspace of all shards together; the proxy's section and the
    // per-shard detail come with the default sections.
    let info = c.cmd(&["INFO", "keyspace"]);
    assert_eq!(info, "# Keyspace\r\ndb0:keys=30,expires=0,avg_ttl=0\r\n");
    let info = c.cmd(&["INFO"]);
    assert_eq!(info.matches("\r\nshard_").count(), 3, "{info}");
    assert!(info.contains("proxy:furrow"));
    let sha = c.cmd(&["SCRIPT", "LOAD", "return 7"]);
    assert_eq!(sha.len(), 40, "{sha}");
    assert_eq!(
        c.cmd(&[
            "SCRIPT",
            "EXISTS",
            &sha,
            "0000000000000000000000000000000000000000"
        ]),
        "[:1, :0]"
    );
    for s in &servers {
        let r = s.cmd(&["SCRIPT", "EXISTS", &sha]);
        assert!(
            r.contains('1') && !r.contains('0'),
            "script loaded on every shard: {r}"
        );
    }
    assert_eq!(c.cmd(&["EVALSHA", &sha, "0"]), ":7");
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        "+OK"
    );
    for s in &servers {
        assert!(
            s.cmd(&["CONFIG", "GET", "maxmemory-policy"])
                .contains("allkeys-lru")
        );
    }
    assert_eq!(c.cmd(&["FLUSHALL"]), "+OK");
    assert_eq!(c.cmd(&["DBSIZE"]), ":0");
}

#[test]
fn unknown_and_unsupported_commands_answer_at_once() {
    let servers = redis_servers(2);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 1);
    let mut c = proxy.connect();
    assert_eq!(
        c.cmd(&["FOO", "bar", "baz"]),
        "-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' "
    );
    let r = c.cmd(&["MONITOR"]);
    assert!(r.starts_with("-ERR unknown command 'MONITOR'"), "{r}");
    let r = c.cmd(&["CLUSTER", "INFO"]);
    assert!(r.contains("unknown command"), "{r}");
    let r = c.cmd(&["CONFIG", "NOPE"]);
    assert!(r.starts_with("-ERR unknown subcommand 'NOPE'"), "{r}");
    let r = c.cmd(&["GET"]);
    assert_eq!(r, "-ERR wrong number of arguments for 'get' command");
    assert_eq!(c.cmd(&["ECHO", "hi"]), "hi");
    assert_eq!(c.cmd(&["PING", "x"]), "x");
}

#[test]
fn select_uses_per_db_backend_connections() {
    let servers = redis_servers(2);
    let toml = config(&servers, "ketama", "");
    let d = dist(&toml);
    let proxy = Proxy::start(&toml, 1);
    let mut a = proxy.connect();
    let mut b = proxy.connect();
    assert_eq!(a.cmd(&["SELECT", "3"]), "+OK");
    assert_eq!(a.cmd(&["SET", "dbkey", "three"]), "+OK");
    assert_eq!(b.cmd(&["SET", "dbkey", "zero"]), "+OK");
    assert_eq!(a.cmd(&["GET", "dbkey"]), "three");
    assert_eq!(b.cmd(&["GET", "dbkey"]), "zero");
    let s = d.server_for_key(b"dbkey");
    assert_eq!(servers[s].cmd(&["GET", "dbkey"]), "zero");
    let r = a.cmd(&["SELECT", "99"]);
    assert!(r.starts_with("-ERR"), "{r}");
}
