//! The admin port's MySQL views through the real binary, with the real `mariadb` client in front of a
//! real MariaDB: query digests, the slow log, pools and the audit log.

mod common;

use std::time::Duration;

use common::{FurrowProcess, mariadb, mysql_proxy_config, redis_cli, wait_until};

#[test]
fn digests_slow_log_pools_and_audit_on_the_admin_port() {
    let db = testkit::MariaDb::start().expect("mariadb");
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.log");
    let (admin, metrics, listen) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let cfg = mysql_proxy_config(
        admin.port(),
        listen.port(),
        db.addr(),
        &format!("metrics = \"127.0.0.1:{}\"\n", metrics.port()),
        &format!(
            "slow_query_ms = 60000\naudit_log = \"{}\"\n",
            audit.display()
        ),
    );
    let _p = FurrowProcess::start(&cfg, admin.port());
    for i in 0..5 {
        assert_eq!(
            mariadb(listen.port(), &format!("SELECT {i} + 1")),
            (i + 1).to_string()
        );
    }
    wait_until(Duration::from_secs(5), || {
        redis_cli(admin.port(), &["SHOW", "DIGESTS"])
            .lines()
            .any(|l| l.contains("SELECT ? + ?") && l.split_whitespace().nth(1) == Some("5"))
    });
    // Nothing is slow at 60 s; at 0 ms everything is.
    assert!(!redis_cli(admin.port(), &["SHOW", "SLOWLOG"]).contains("SELECT 7"));
    assert_eq!(
        redis_cli(admin.port(), &["SLOWLOG", "THRESHOLD", "0"]),
        "OK"
    );
    mariadb(listen.port(), "SELECT 7");
    wait_until(Duration::from_secs(5), || {
        redis_cli(admin.port(), &["SHOW", "SLOWLOG"]).contains("SELECT 7")
    });
    // Pool gauges are published by each executor once a second.
    wait_until(Duration::from_secs(5), || {
        redis_cli(admin.port(), &["SHOW", "POOLS"]).contains(&db.addr().to_string())
    });
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&audit).is_ok_and(|a| a.contains("SELECT 7"))
    });
    assert!(redis_cli(admin.port(), &["SHOW", "AUDIT"]).contains("audit.log"));
    assert_eq!(redis_cli(admin.port(), &["DIGESTS", "RESET"]), "OK");
    wait_until(Duration::from_secs(5), || {
        !redis_cli(admin.port(), &["SHOW", "DIGESTS"]).contains("SELECT ? + ?")
    });
    let page = common::http_get(metrics.port(), "/metrics");
    assert!(
        page.contains("furrow_mysql_pool_open_connections{server=\"primary\""),
        "{page}"
    );
    // The five `SELECT {i} + 1` share one shape: at least four came from the statement cache
    // (counters are published once a second).
    let counter = |page: &str, name: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(5), || {
        let page = common::http_get(metrics.port(), "/metrics");
        counter(&page, "furrow_mysql_statement_cache_hits_total ") >= 4
            && counter(&page, "furrow_mysql_statement_cache_misses_total ") >= 1
    });
}
