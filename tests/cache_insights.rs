//! Cache insights through the real binary in front of two real Redis servers: the admin port's
//! `CACHE INSIGHTS` reads each server's `INFO` and reports hit ratios, memory and key balance,
//! keys without TTL under a `volatile-*` policy and memory growth towards `maxmemory`.

mod common;

use std::io::{Read, Write};

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
    // Big keys by reply size: a 520 KiB value written on the servers by a small request (so the
    // request-size sampler cannot see it) and read through the proxy 400 times (1 read in 32 is
    // sampled: missing all 400 has odds of about 3 in a million).
    const BIG: usize = 520 * 1024;
    let make = format!("redis.call('SET', 'big:blob', string.rep('x', {BIG})) return 1");
    for srv in &servers {
        assert_eq!(redis_cli(srv.port(), &["EVAL", &make, "0"]), "1");
    }
    let mut c = std::net::TcpStream::connect(("127.0.0.1", listen.port())).expect("connect");
    let want = format!("${BIG}\r\n").len() + BIG + 2;
    let mut buf = vec![0u8; want];
    for _ in 0..400 {
        c.write_all(b"*2\r\n$3\r\nGET\r\n$8\r\nbig:blob\r\n")
            .expect("write");
        c.read_exact(&mut buf).expect("the value");
        assert!(buf.starts_with(format!("${BIG}\r\n").as_bytes()));
    }
    let big = redis_cli(admin.port(), &["BIGKEYS"]);
    assert!(!big.contains("big:blob"), "requests were small: {big}");
    // The cores publish their samplers every 200 ms.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (insights, line) = loop {
        let insights = redis_cli(admin.port(), &["CACHE", "INSIGHTS", "cache"]);
        if let Some(l) = insights.lines().find(|l| l.ends_with(" big:blob")) {
            let l = l.to_string();
            break (insights, l);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no big reply row: {insights}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..2], ["cache", "cache"], "{insights}");
    let bytes: usize = cells[2].parse().expect("bytes");
    assert!((BIG..BIG + 64).contains(&bytes), "{insights}");
    assert!(
        insights.contains("oversized values: 1 key(s)") && insights.contains("\"big:blob\""),
        "{insights}"
    );
    // A stopped server is reported, the other still read.
    drop(servers);
    let third = redis_cli(admin.port(), &["CACHE", "INSIGHTS"]);
    assert!(
        third.contains("r0 (") && third.contains("not read"),
        "{third}"
    );
}
