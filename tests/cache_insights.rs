//! Cache insights through the real binary in front of two real Redis servers: the admin port's
//! `CACHE INSIGHTS` reads each server's `INFO` and reports hit ratios, memory and key balance,
//! keys without TTL under a `volatile-*` policy and memory growth towards `maxmemory`.

mod common;

use common::{FurrowProcess, redis_cli};

/// The data row of `server` in the `# shards` table, as cells.
fn row(out: &str, server: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(server))
        .unwrap_or_else(|| panic!("no row for {server}: {out}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn cache_insights_read_info_and_give_advice() {
    let servers = testkit::RedisServer::start_many(2, testkit::RedisConfig::new()).expect("redis");
    let (admin, listen) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let cfg = format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{}\"\n\n\
         [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"\ngroup = \"cache\"\n\n\
         [redis_groups.cache]\ndistribution = \"ketama\"\nservers = [\n\
           {{ name = \"r0\", address = \"{}\" }},\n  {{ name = \"r1\", address = \"{}\" }},\n]\n",
        admin.port(),
        listen.port(),
        servers[0].addr(),
        servers[1].addr()
    );
    let _p = FurrowProcess::start(&cfg, admin.port());
    let r1 = servers[1].port();

    // Through the proxy: 50 keys written and read back (hits), 150 reads of keys never written.
    for i in 0..50 {
        assert_eq!(
            redis_cli(listen.port(), &["SET", &format!("k{i}"), "v"]),
            "OK"
        );
        assert_eq!(redis_cli(listen.port(), &["GET", &format!("k{i}")]), "v");
    }
    for i in 0..150 {
        assert_eq!(
            redis_cli(listen.port(), &["GET", &format!("missing{i}")]),
            ""
        );
    }
    let first = redis_cli(admin.port(), &["CACHE", "INSIGHTS"]);
    let (a, b) = (row(&first, "r0"), row(&first, "r1"));
    // GROUP SERVER ADDRESS USED_MEMORY MAXMEMORY KEYS NO_TTL HITS MISSES HIT_PCT EVICTED
    let num = |r: &[String], i: usize| r[i].parse::<u64>().expect("a number");
    assert_eq!(num(&a, 5) + num(&b, 5), 50, "{first}");
    assert_eq!(num(&a, 7) + num(&b, 7), 50, "{first}");
    assert_eq!(num(&a, 8) + num(&b, 8), 150, "{first}");
    assert!(first.contains("low hit rate on r"), "{first}");

    // Skew r1 directly (600 keys, no TTL) under maxmemory with a volatile policy; it is then
    // imbalanced, its keys are never evicted, and its memory grows between two runs.
    redis_cli(r1, &["CONFIG", "SET", "maxmemory", "64mb"]);
    redis_cli(r1, &["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    let fill =
        "for i = 1, 600 do redis.call('SET', 'skew:' .. i, string.rep('x', 1000)) end return 1";
    assert_eq!(redis_cli(r1, &["EVAL", fill, "0"]), "1");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = redis_cli(admin.port(), &["CACHE", "INSIGHTS", "cache"]);
    assert!(second.contains("imbalanced shards: r1"), "{second}");
    assert!(
        second.contains("have no TTL under maxmemory-policy volatile-lru"),
        "{second}"
    );
    assert!(
        second.contains("r1 grows") && second.contains("maxmemory in about"),
        "{second}"
    );
    assert_eq!(row(&second, "r1")[4], (64u64 << 20).to_string(), "{second}");
    // The on-demand thread snapshot lists the executor (one core here) and the admin thread.
    let threads = redis_cli(admin.port(), &["SHOW", "THREADS"]);
    let names: Vec<&str> = threads
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(
        names.contains(&"furrow-0") && names.contains(&"furrow-admin"),
        "{threads}"
    );
    // A stopped server is reported, the other still read.
    drop(servers);
    let third = redis_cli(admin.port(), &["CACHE", "INSIGHTS"]);
    assert!(
        third.contains("r0 (") && third.contains("not read"),
        "{third}"
    );
}
