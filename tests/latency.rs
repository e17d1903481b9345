//! Per-listener request latency through the real binary in front of a real Redis and a real MariaDB, with
//! the real `redis-cli` and `mariadb` clients: admin `INFO` / `SHOW LISTENERS` quantiles and the Prometheus
//! histogram `furrow_listener_request_duration_seconds` count the requests and place them plausibly
//! (statements that sleep 20 ms on the server are at least that slow, within a bucket).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{FurrowProcess, http_get, mariadb, redis_cli, redis_cli_with, wait_until};

/// The `key=value` fields of the admin `INFO` line of `listener`.
fn info_fields(admin: u16, listener: &str) -> Vec<(String, u64)> {
    let info = redis_cli(admin, &["INFO"]);
    let prefix = format!("listener_{listener}:");
    let line = info
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()).map(str::to_string))
        .unwrap_or_else(|| panic!("no {prefix} in INFO:\n{info}"));
    line.split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn field(fields: &[(String, u64)], name: &str) -> u64 {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|x| x.1)
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
}

/// `(le, count)` of the histogram buckets of `listener` on the metrics page, and its `_count`.
fn histogram(page: &str, listener: &str) -> (Vec<(f64, u64)>, u64) {
    let name = "furrow_listener_request_duration_seconds";
    let labels = format!("{{listener=\"{listener}\",");
    let mut buckets = Vec::new();
    let mut count = None;
    for l in page.lines() {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        if let Some(rest) = series.strip_prefix(&format!("{name}_bucket{labels}")) {
            let le = rest
                .split("le=\"")
                .nth(1)
                .and_then(|x| x.split('"').next())
                .expect("le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le number")
            };
            buckets.push((le, value.parse().expect("bucket count")));
        } else if series.starts_with(&format!("{name}_count{labels}")) {
            count = Some(value.parse().expect("count"));
        }
    }
    (
        buckets,
        count.unwrap_or_else(|| panic!("no {name}_count for {listener}")),
    )
}

#[test]
fn listener_latency_in_info_listeners_and_metrics() {
    let redis = testkit::RedisServer::start().expect("redis-server");
    let db = testkit::MariaDb::start().expect("mariadb");
    let port = || testkit::reserve_port().expect("port");
    let (admin, metrics, cache, sql) = (port(), port(), port(), port());
    let cfg = format!(
        "[proxy]\nexecutors = 2\nadmin = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\n\n\
         [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"\ngroup = \"cache\"\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{}\"\ngroup = \"main\"\n\n\
         [redis_groups.cache]\nservers = [{{ name = \"r0\", address = \"{}\" }}]\n\n\
         [mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"primary\", address = \"{}\" }}\n\n\
         [users.app]\nlisteners = [\"db\"]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\n",
        admin.port(),
        metrics.port(),
        cache.port(),
        sql.port(),
        redis.addr(),
        testkit::APP_USER,
        testkit::APP_PASSWORD,
        db.addr(),
    );
    let _p = FurrowProcess::start(&cfg, admin.port());
    // Nothing timed yet.
    assert_eq!(
        field(&info_fields(admin.port(), "cache"), "latency_count"),
        0
    );

    // 300 Redis commands; 20 statements that sleep 20 ms on the server.
    redis_cli_with(cache.port(), &["-r", "150"], &["SET", "k", "v"]);
    redis_cli_with(cache.port(), &["-r", "150"], &["GET", "k"]);
    let sleeps = vec!["SELECT SLEEP(0.02)"; 20].join("; ");
    assert_eq!(mariadb(sql.port(), &sleeps), vec!["0"; 20].join("\n"));

    wait_until(Duration::from_secs(5), || {
        field(&info_fields(admin.port(), "cache"), "latency_count") >= 300
    });
    let c = info_fields(admin.port(), "cache");
    let (p50, p99, p999) = (
        field(&c, "p50_us"),
        field(&c, "p99_us"),
        field(&c, "p999_us"),
    );
    // The replies from Redis were timed; the quantiles are ordered and a loopback round trip is well
    // under a second (and takes at least a microsecond's bucket).
    assert!(field(&c, "latency_count") <= field(&c, "requests"), "{c:?}");
    assert_eq!(field(&c, "errors"), 0, "{c:?}");
    assert!(p50 <= p99 && p99 <= p999, "{c:?}");
    assert!(p999 < 1_000_000, "{c:?}");
    let d = info_fields(admin.port(), "db");
    assert!(field(&d, "latency_count") >= 20, "{d:?}");
    // At least 20 of the statements slept 20 ms: the median is at least that, within a bucket (25 %).
    assert!(field(&d, "p50_us") >= 15_000, "{d:?}");
    assert!(field(&d, "p50_us") <= field(&d, "p99_us"), "{d:?}");
    assert!(field(&d, "p999_us") < 10_000_000, "{d:?}");

    // The admin table shows the same quantiles.
    let table = redis_cli(admin.port(), &["SHOW", "LISTENERS"]);
    assert!(
        table.lines().next().unwrap_or("").contains("P99_US"),
        "{table}"
    );
    let db_row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("db "))
        .expect("db row")
        .split_whitespace()
        .collect();
    assert_eq!(db_row[db_row.len() - 3], field(&d, "p50_us").to_string());

    // The Prometheus histogram: cumulative, ending at +Inf with the count, and the sleeps above 16 ms.
    let page = http_get(metrics.port(), "/metrics");
    assert!(page.contains("# TYPE furrow_listener_request_duration_seconds histogram"));
    for (listener, at_least) in [("cache", 300), ("db", 20)] {
        let (buckets, count) = histogram(&page, listener);
        assert!(count >= at_least, "{listener}: {count}");
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)));
    }
    let (buckets, count) = histogram(&page, "db");
    let under_16ms = buckets
        .iter()
        .rfind(|b| b.0 <= 0.016384 + 1e-9)
        .map_or(0, |b| b.1);
    assert!(under_16ms + 20 <= count, "{buckets:?}");
}

/// A sharded listener times its statements as a read/write-split one does: point statements routed
/// to one shard and scatters over both count in its histogram (INFO and Prometheus), and a statement
/// a shard refuses counts as an error.
#[test]
fn a_sharded_listener_times_its_statements() {
    let db = testkit::MariaDb::start().expect("mariadb");
    for s in ["app_0", "app_1"] {
        db.sql(&format!("CREATE DATABASE {s}")).unwrap();
        db.sql(&format!(
            "CREATE TABLE {s}.orders (user_id INT PRIMARY KEY, total INT)"
        ))
        .unwrap();
    }
    db.sql("INSERT INTO app_0.orders VALUES (2, 10), (4, 20)")
        .unwrap();
    db.sql("INSERT INTO app_1.orders VALUES (1, 5)").unwrap();
    let port = || testkit::reserve_port().expect("port");
    let (admin, metrics, sql) = (port(), port(), port());
    let cfg = format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\n\n\
         [[listeners]]\nname = \"shards\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{}\"\ngroup = \"main\"\n\n\
         [mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"primary\", address = \"{}\" }}\n\n\
         [users.app]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\n\n\
         [sharding.app]\nlistener = \"shards\"\n\
         shards = [ {{ name = \"s0\", group = \"main\", schema = \"app_0\" }}, {{ name = \"s1\", group = \"main\", schema = \"app_1\" }} ]\n\n\
         [[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n",
        admin.port(),
        metrics.port(),
        sql.port(),
        testkit::APP_USER,
        testkit::APP_PASSWORD,
        db.addr(),
    );
    let _p = FurrowProcess::start(&cfg, admin.port());
    let before = info_fields(admin.port(), "shards");
    assert_eq!(field(&before, "latency_count"), 0, "{before:?}");

    // 14 point statements that sleep 20 ms on their shard, 4 scatters over both shards.
    let mut batch = vec!["SELECT total, SLEEP(0.02) FROM orders WHERE user_id = 2"; 14];
    batch.extend(["SELECT COUNT(*) FROM orders"; 4]);
    let out = mariadb(sql.port(), &batch.join("; "));
    assert_eq!(out.lines().filter(|l| *l == "10\t0").count(), 14, "{out}");
    assert_eq!(out.lines().filter(|l| *l == "3").count(), 4, "{out}");
    // A statement every shard refuses (no such column): the client gets the server's ERR.
    let refused = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &sql.port().to_string(),
            "-u",
            "app",
        ])
        .args([
            "-papp-secret",
            "-e",
            "SELECT nope FROM orders WHERE user_id = 1",
        ])
        .output()
        .expect("mariadb client");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("1054"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    wait_until(Duration::from_secs(5), || {
        field(&info_fields(admin.port(), "shards"), "latency_count") >= 19
    });
    let d = info_fields(admin.port(), "shards");
    assert!(field(&d, "latency_count") <= field(&d, "requests"), "{d:?}");
    assert!(field(&d, "errors") >= 1, "{d:?}");
    // Most statements slept 20 ms: the median is at least that, within a bucket (25 %).
    assert!(field(&d, "p50_us") >= 15_000, "{d:?}");
    assert!(field(&d, "p50_us") <= field(&d, "p99_us"), "{d:?}");
    assert!(field(&d, "p999_us") < 10_000_000, "{d:?}");

    let page = http_get(metrics.port(), "/metrics");
    let (buckets, count) = histogram(&page, "shards");
    assert!(count >= 19, "{count}");
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)));
    let under_16ms = buckets
        .iter()
        .rfind(|b| b.0 <= 0.016384 + 1e-9)
        .map_or(0, |b| b.1);
    assert!(under_16ms + 14 <= count, "{buckets:?}");
}
