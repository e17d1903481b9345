//! Redis Cluster mode: slot map learned from the nodes, MOVED followed, fan-out to the masters.

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, cache_config};
use testkit::RedisCluster;

fn cluster_config(seed: &str) -> String {
    cache_config(&format!(
        "distribution = \"cluster\"\nservers = [{{ name = \"seed\", address = \"{seed}\" }}]"
    ))
}

#[test]
fn cluster_mode_routes_by_slot_and_follows_moved() {
    let cluster = RedisCluster::start(3, 0).expect("cluster");
    let seed = cluster.addrs()[0].to_string();
    let proxy = Proxy::start(&cluster_config(&seed), 1);
    let mut c = proxy.connect();
    // The very first commands may run before the slot map is loaded: MOVED is followed.
    for i in 0..100 {
        assert_eq!(
            c.cmd(&["SET", &format!("ck:{i}"), &i.to_string()]),
            "+OK",
            "key ck:{i}"
        );
    }
    for i in 0..100 {
        assert_eq!(c.cmd(&["GET", &format!("ck:{i}")]), i.to_string());
    }
    // Every key is on the node that owns its slot (a GET there answers the value, not MOVED).
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..100 {
        let key = format!("ck:{i}");
        let found: Vec<usize> = cluster
            .nodes()
            .iter()
            .enumerate()
            .filter(|(_, n)| n.try_cmd(&["GET", &key]).ok() == Some(i.to_string()))
            .map(|(j, _)| j)
            .collect();
        assert_eq!(found.len(), 1, "{key} on exactly one node: {found:?}");
        owners.insert(found[0]);
    }
    assert_eq!(owners.len(), 3);
    // Multi-key commands split by node; fan-out reaches every master.
    assert_eq!(
        c.cmd(&["MGET", "ck:1", "ck:2", "nokey", "ck:3"]),
        "[1, 2, nil, 3]"
    );
    assert_eq!(c.cmd(&["DBSIZE"]), ":100");
    assert_eq!(c.cmd(&["DEL", "ck:1", "ck:2", "ck:3"]), ":3");
    assert_eq!(c.cmd(&["DBSIZE"]), ":97");
    let r = c.cmd(&["RENAME", "ck:10", "ck:11"]);
    assert!(r == "+OK" || r.starts_with("-CROSSSLOT"), "{r}");
    assert_eq!(c.cmd(&["SET", "{grp}a", "1"]), "+OK");
    assert_eq!(c.cmd(&["RENAME", "{grp}a", "{grp}b"]), "+OK");
    // A slot moved behind the proxy's back: the MOVED reply is followed.
    let key = "ck:50";
    let slot: u16 = cluster.nodes()[0]
        .cmd(&["CLUSTER", "KEYSLOT", key])
        .trim_start_matches(':')
        .parse()
        .expect("slot");
    let ids: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.cmd(&["CLUSTER", "MYID"]))
        .collect();
    let from = (0..3)
        .find(|&j| cluster.nodes()[j].try_cmd(&["GET", key]).ok().as_deref() == Some("50"))
        .expect("owner");
    let to = (from + 1) % 3;
    let (src, dst) = (&cluster.nodes()[from], &cluster.nodes()[to]);
    let slot_s = slot.to_string();
    dst.cmd(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &ids[from]]);
    src.cmd(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &ids[to]]);
    let keys_in_slot = src.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"]);
    assert!(keys_in_slot.contains(key), "{keys_in_slot}");
    let migrate = src.cmd(&[
        "MIGRATE",
        "127.0.0.1",
        &dst.port().to_string(),
        key,
        "0",
        "5000",
    ]);
    assert!(migrate.contains("OK"), "{migrate}");
    // During the migration the source answers ASK: followed with ASKING.
    assert_eq!(c.cmd(&["GET", key]), "50");
    for n in cluster.nodes() {
        n.cmd(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &ids[to]]);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.cmd(&["GET", key]);
        if r == "50" {
            break;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.cmd(&["INCR", key]), ":51");
}

/// A cluster whose nodes speak TLS to clients and on the bus (`tls-cluster yes`: over a TLS
/// connection, CLUSTER SLOTS and MOVED name the nodes' TLS ports): the slot map is fetched and
/// redirections are followed over TLS, verified against the kit's CA.
#[test]
fn cluster_mode_over_tls() {
    let certs = testkit::TestCerts::get().expect("certs");
    let cluster = RedisCluster::start_with(
        3,
        0,
        testkit::RedisConfig::new()
            .tls(true)
            .config_line("tls-cluster yes"),
    )
    .expect("cluster");
    let seed = cluster.nodes()[0].tls_addr().expect("tls port").to_string();
    let toml = format!(
        "{}tls = {{ ca = {:?} }}\n",
        cluster_config(&seed),
        certs.ca.display().to_string()
    );
    let proxy = Proxy::start(&toml, 1);
    let mut c = proxy.connect();
    for i in 0..100 {
        assert_eq!(
            c.cmd(&["SET", &format!("tk:{i}"), &i.to_string()]),
            "+OK",
            "key tk:{i}"
        );
    }
    // Once the map is loaded, every key's node is asked directly.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..100 {
        assert_eq!(c.cmd(&["GET", &format!("tk:{i}")]), i.to_string());
    }
    assert_eq!(
        c.cmd(&["MGET", "tk:1", "tk:2", "nokey", "tk:3"]),
        "[1, 2, nil, 3]"
    );
    assert_eq!(c.cmd(&["DBSIZE"]), ":100");
}
