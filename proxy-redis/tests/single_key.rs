//! Single-key routing through multiplexed backends, checked against the shards directly.

mod common;

use common::{Proxy, config, redis_servers};

#[test]
fn keys_land_on_the_shard_the_distribution_names() {
    for distribution in ["slots", "ketama", "modula"] {
        check_placement(distribution);
    }
}

fn check_placement(distribution: &str) {
    let servers = redis_servers(3);
    let extra = if distribution == "slots" {
        r#"slots = [{ range = "0-5000", server = "r1" }, { range = "5001-10000", server = "r2" }, { range = "10001-16383", server = "r3" }]"#
    } else {
        ""
    };
    let toml = config(&servers, distribution, extra);
    let proxy = Proxy::start(&toml, 1);
    let cfg = router::config::parse("t", &toml).expect("config");
    let dist =
        router::redis::group_distribution(cfg.redis_group("cache").expect("group")).expect("dist");
    let mut c = proxy.connect();
    let mut per_shard = [0usize; 3];
    for i in 0..60 {
        let key = format!("key:{i}");
        assert_eq!(c.cmd(&["SET", &key, &format!("v{i}")]), "+OK");
        let shard = dist.server_for_key(key.as_bytes());
        per_shard[shard] += 1;
        // The value is on that shard and on no other.
        for (s, server) in servers.iter().enumerate() {
            let got = server.cmd(&["GET", &key]);
            if s == shard {
                assert_eq!(got, format!("v{i}"), "key {key} on shard {s}");
            } else {
                assert_ne!(got, format!("v{i}"), "key {key} must not be on shard {s}");
            }
        }
    }
    assert!(
        per_shard.iter().filter(|&&n| n > 0).count() >= 2,
        "{distribution}: keys spread over shards: {per_shard:?}"
    );
    for i in 0..60 {
        assert_eq!(c.cmd(&["GET", &format!("key:{i}")]), format!("v{i}"));
    }
    assert_eq!(c.cmd(&["INCR", "counter"]), ":1");
    assert_eq!(c.cmd(&["INCR", "counter"]), ":2");
}

#[test]
fn pipelines_from_many_clients_keep_their_order() {
    let servers = redis_servers(2);
    let proxy = Proxy::start(&config(&servers, "modula", "connections = 2"), 1);
    let mut clients: Vec<_> = (0..8).map(|_| proxy.connect()).collect();
    for (ci, c) in clients.iter_mut().enumerate() {
        let mut batch = Vec::new();
        for i in 0..200 {
            let key = format!("c{ci}:k{i}");
            batch.extend(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{i}\r\n",
                    key.len(),
                    i.to_string().len()
                )
                .bytes(),
            );
            batch.extend(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).bytes());
        }
        c.send_raw(&batch);
    }
    for c in clients.iter_mut() {
        for i in 0..200 {
            assert_eq!(c.read(), "+OK");
            assert_eq!(c.read(), i.to_string());
        }
    }
}
