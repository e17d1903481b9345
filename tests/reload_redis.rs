//! Hot reload through the real binary in front of real Redis servers: connections survive reloads, a
//! new snapshot changes routing for new requests, a broken file changes nothing, and admin
//! `BACKEND OFFLINE` is visible in `SHOW BACKENDS`.

mod common;

use std::time::Duration;

use common::{FurrowProcess, redis_cli, resp_connect, resp_roundtrip};

fn config(
    admin: u16,
    metrics: u16,
    listen: u16,
    servers: &[&testkit::RedisServer],
    timeout_ms: u32,
) -> String {
    let mut s = format!(
        "[proxy]\nexecutors = 2\nadmin = \"127.0.0.1:{admin}\"\nmetrics = \"127.0.0.1:{metrics}\"\n\n\
         [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{listen}\"\ngroup = \"cache\"\n\n\
         [redis_groups.cache]\ndistribution = \"ketama\"\nrequest_timeout_ms = {timeout_ms}\nservers = [\n"
    );
    for (i, r) in servers.iter().enumerate() {
        s.push_str(&format!(
            "  {{ name = \"r{i}\", address = \"{}\" }},\n",
            r.addr()
        ));
    }
    s.push_str("]\n");
    s
}

/// A proxy in front of `server` (a 5 s request timeout) on ports reserved against parallel tests:
/// (the process, its admin, metrics and listener ports).
fn start_in_front_of(
    server: &testkit::RedisServer,
) -> (
    FurrowProcess,
    testkit::PortLease,
    testkit::PortLease,
    testkit::PortLease,
) {
    let port = || testkit::reserve_port().expect("port");
    let (admin, metrics, listen) = (port(), port(), port());
    let p = FurrowProcess::start(
        &config(admin.port(), metrics.port(), listen.port(), &[server], 5000),
        admin.port(),
    );
    (p, admin, metrics, listen)
}

#[test]
fn reloads_keep_connections_and_apply_to_new_requests() {
    let a = testkit::RedisServer::start().expect("redis");
    let b = testkit::RedisServer::start().expect("redis");
    let (p, admin, metrics, listen) = start_in_front_of(&a);

    let mut conn = resp_connect(listen.port());
    assert_eq!(resp_roundtrip(&mut conn, &["SET", "k1", "v1"]), "+OK");
    assert_eq!(a.cmd(&["GET", "k1"]), "v1");

    // Move the group to server b: the open connection keeps working and new requests go to b.
    std::fs::write(
        p.config_path(),
        config(admin.port(), metrics.port(), listen.port(), &[&b], 5000),
    )
    .expect("write");
    assert_eq!(
        redis_cli(admin.port(), &["CONFIG", "RELOAD"]),
        "OK generation 2"
    );
    assert_eq!(resp_roundtrip(&mut conn, &["SET", "k2", "v2"]), "+OK");
    assert_eq!(b.cmd(&["GET", "k2"]), "v2");
    assert_eq!(a.cmd(&["EXISTS", "k2"]), "0");
    assert_eq!(resp_roundtrip(&mut conn, &["GET", "k2"]), "v2");

    // A broken file: rejected, routing unchanged, the connection unaffected.
    std::fs::write(p.config_path(), "[[listeners]]\nname = \"cache\"\n").expect("write");
    let reply = redis_cli(admin.port(), &["CONFIG", "RELOAD"]);
    assert!(reply.starts_with("ERR config rejected"), "{reply}");
    assert_eq!(resp_roundtrip(&mut conn, &["SET", "k3", "v3"]), "+OK");
    assert_eq!(b.cmd(&["GET", "k3"]), "v3");

    // Changing the listener set needs a restart and is refused as such.
    let moved = config(admin.port(), metrics.port(), listen.port() + 1, &[&b], 5000);
    std::fs::write(p.config_path(), moved).expect("write");
    let reply = redis_cli(admin.port(), &["CONFIG", "RELOAD"]);
    assert!(reply.contains("need a restart"), "{reply}");
    assert_eq!(resp_roundtrip(&mut conn, &["PING"]), "+PONG");
}

#[test]
fn backend_offline_and_online_from_the_admin_port() {
    let a = testkit::RedisServer::start().expect("redis");
    let (_p, admin, metrics, listen) = start_in_front_of(&a);
    assert_eq!(redis_cli(listen.port(), &["SET", "x", "1"]), "OK");
    assert_eq!(redis_cli(admin.port(), &["BACKEND", "OFFLINE", "r0"]), "OK");
    let table = redis_cli(admin.port(), &["SHOW", "BACKENDS"]);
    assert!(table.contains("offline"), "{table}");
    let metrics_page = common::http_get(metrics.port(), "/metrics");
    assert!(
        metrics_page.contains("furrow_backend_up{group=\"cache\",backend=\"r0\",role=\"shard\"} 0"),
        "{metrics_page}"
    );
    let reply = redis_cli(listen.port(), &["GET", "x"]);
    assert!(
        reply.starts_with("ERR"),
        "offline backend must give an error, got {reply}"
    );
    assert_eq!(redis_cli(admin.port(), &["BACKEND", "ONLINE", "r0"]), "OK");
    assert_eq!(redis_cli(listen.port(), &["GET", "x"]), "1");
    let metrics_page = common::http_get(metrics.port(), "/metrics");
    assert!(
        metrics_page.contains("furrow_backend_up{group=\"cache\",backend=\"r0\",role=\"shard\"} 1")
    );
    assert!(metrics_page.contains("furrow_requests_total{listener=\"cache\",kind=\"redis\"}"));
    let missing = redis_cli(admin.port(), &["BACKEND", "OFFLINE", "nope"]);
    assert!(missing.contains("no backend named 'nope'"), "{missing}");
    let info = redis_cli(admin.port(), &["INFO"]);
    assert!(info.contains("listener_cache:kind=redis"), "{info}");
    let listener = info
        .lines()
        .find(|l| l.starts_with("listener_cache:"))
        .unwrap_or_default();
    assert!(
        !listener.contains("requests=0,"),
        "requests must be counted: {info}"
    );
}

#[test]
fn hot_keys_big_keys_and_command_stats_on_the_admin_port() {
    let a = testkit::RedisServer::start().expect("redis");
    let (_p, admin, metrics, listen) = start_in_front_of(&a);
    let mut conn = resp_connect(listen.port());
    assert_eq!(resp_roundtrip(&mut conn, &["SET", "hot:key", "1"]), "+OK");
    for _ in 0..400 {
        assert_eq!(resp_roundtrip(&mut conn, &["GET", "hot:key"]), "1");
    }
    let big = "x".repeat(20_000);
    assert_eq!(resp_roundtrip(&mut conn, &["SET", "big:key", &big]), "+OK");
    common::wait_until(Duration::from_secs(5), || {
        redis_cli(admin.port(), &["HOTKEYS"]).contains("hot:key")
            && redis_cli(admin.port(), &["BIGKEYS", "cache"]).contains("big:key")
    });
    let stats = redis_cli(admin.port(), &["COMMANDSTATS"]);
    let get_line = stats
        .lines()
        .find(|l| l.starts_with("get "))
        .unwrap_or_else(|| panic!("{stats}"));
    let calls: u64 = get_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("calls");
    assert_eq!(calls, 400, "{stats}");
    assert!(redis_cli(admin.port(), &["HOTKEYS", "nope"]).contains("no Redis listener matches"));
    let page = common::http_get(metrics.port(), "/metrics");
    assert!(
        page.contains("furrow_redis_command_calls_total{listener=\"cache\",command=\"get\"} 400"),
        "{page}"
    );
    assert!(
        page.contains("furrow_redis_hot_key_samples{listener=\"cache\",key=\"hot:key\"}"),
        "{page}"
    ); // One client waiting for each reply: every backend write carries exactly one request (a
    // write the kernel took only in part would add one more write).
    assert!(
        page.contains("furrow_redis_backend_requests_total{listener=\"cache\"} 402"),
        "{page}"
    );
    let writes: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("furrow_redis_backend_writes_total{listener=\"cache\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{page}"));
    assert!((402..=403).contains(&writes), "{page}");
    let info = redis_cli(admin.port(), &["INFO"]);
    assert!(
        info.contains("redis_backend_cache:writes=") && info.contains(",requests=402,"),
        "{info}"
    );
}
