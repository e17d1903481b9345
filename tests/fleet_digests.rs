//! The center's fleet-wide SQL views over real processes: `furrow control` and two `furrow proxy
//! --config-source` processes (one namespace each) in front of one real MariaDB. Statements run
//! through both proxies; `/v1/trace/fleet/digests` merges the two digest tables (counts summed,
//! histograms added), `/v1/trace/fleet/index-advice` carries each proxy's `INDEX ADVICE`, and
//! `/v1/trace/fleet/slow` (and `furrow ctl trace slow`) gathers both proxies' slow logs newest first,
//! with the caller's trace id of a statement that carried a sqlcommenter `traceparent`;
//! `/v1/trace/processes` lists the control node and both proxies with their process figures.

mod common;

use std::time::Duration;

use common::{
    CONTROL_TOKEN, ControlCenter, Process, mariadb_in, mariadb_with, mysql_proxy_config, redis_cli,
    spawn_config_source_proxy, wait_until,
};
use serde_json::json;

#[test]
fn the_center_merges_every_proxys_digests_and_advice() {
    let db = testkit::MariaDb::start().expect("mariadb");
    db.sql(
        "CREATE DATABASE shop; USE shop; \
         CREATE TABLE items (id INT PRIMARY KEY, sku INT NOT NULL); \
         INSERT INTO items SELECT seq, seq % 100 FROM seq_1_to_5000; ANALYZE TABLE items;",
    )
    .expect("schema");
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<_> = (0..5)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let center = ControlCenter::start(dir.path(), ports[0].port());
    center.call("POST", "/v1/apps", Some(json!({"name": "shop"})));
    let mut proxies = Vec::new();
    let mut sql_ports = Vec::new();
    for (i, name) in ["proxy-a", "proxy-b"].iter().enumerate() {
        let (admin, sql) = (ports[1 + 2 * i].port(), ports[2 + 2 * i].port());
        let config = mysql_proxy_config(admin, sql, db.addr(), "shutdown_grace_ms = 100\n", "");
        center.call(
            "POST",
            "/v1/apps/shop/namespaces",
            Some(json!({"name": name})),
        );
        let nsp = format!("/v1/apps/shop/envs/DEV/clusters/default/namespaces/{name}");
        center.call(
            "PUT",
            &format!("{nsp}/items/config"),
            Some(
                json!({"value": {"type": "document", "value": {"format": "toml", "text": config}}}),
            ),
        );
        center.call(
            "POST",
            &format!("{nsp}/publish"),
            Some(json!({"message": "proxy config"})),
        );
        proxies.push(Process(spawn_config_source_proxy(
            &format!(
                "http://127.0.0.1:{}/shop/DEV/default/{name}?instance={name}&ip=127.0.0.1",
                ports[0].port()
            ),
            CONTROL_TOKEN,
            &dir.path().join(format!("{name}.log")),
        )));
        wait_until(Duration::from_secs(20), || {
            redis_cli(admin, &["PING"]) == "PONG"
        });
        sql_ports.push(sql);
    }
    // Every statement is slow (the threshold is the lower of the group's and this one).
    let admins = [ports[1].port(), ports[3].port()];
    for admin in admins {
        assert_eq!(redis_cli(admin, &["SLOWLOG", "THRESHOLD", "0"]), "OK");
    }
    // 3 lookups through proxy-a, 5 through proxy-b: one fingerprint.
    for (port, n) in [(sql_ports[0], 3), (sql_ports[1], 5)] {
        for i in 0..n {
            assert_eq!(
                mariadb_in(
                    port,
                    "shop",
                    &format!("SELECT COUNT(*) FROM items WHERE sku = {i}")
                ),
                "50"
            );
        }
    }
    let mut view = serde_json::Value::Null;
    wait_until(Duration::from_secs(20), || {
        view = center.call("GET", "/v1/trace/fleet/digests?limit=10", None);
        view["answered"] == 2
            && view["digests"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["count"] == 8)
    });
    let d = view["digests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["text"]
                .as_str()
                .unwrap_or_default()
                .contains("FROM ITEMS WHERE SKU = ?")
        })
        .unwrap_or_else(|| panic!("{view}"));
    assert_eq!(
        (d["count"].clone(), d["proxies"].clone()),
        (json!(8), json!(2)),
        "{view}"
    );
    let hist_total: u64 = d["hist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(hist_total, 8, "{view}");
    assert!(
        d["p99_us"].as_u64().unwrap() <= d["max_us"].as_u64().unwrap(),
        "{view}"
    );

    // The fleet slow log: both proxies' statements, newest first; then one with a caller's trace
    // context (sqlcommenter, kept by the client's --comments) through proxy-b is the newest entry.
    std::thread::sleep(Duration::from_millis(5));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(
        mariadb_with(
            sql_ports[1],
            &["-D", "shop", "--comments"],
            &format!(
                "SELECT COUNT(*) FROM items WHERE sku = 77 \
                 /*traceparent='00-{trace_id}-00f067aa0ba902b7-01'*/"
            ),
        ),
        "50"
    );
    let mut slow = serde_json::Value::Null;
    wait_until(Duration::from_secs(20), || {
        slow = center.call("GET", "/v1/trace/fleet/slow?limit=100", None);
        slow["answered"] == 2
            && slow["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["digest"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("ITEMS WHERE SKU = ?")
                })
                .count()
                == 9
    });
    let entries = slow["entries"].as_array().unwrap();
    let ats: Vec<u64> = entries
        .iter()
        .map(|e| e["at_ms"].as_u64().unwrap())
        .collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]), "newest first: {slow}");
    let newest = &entries[0];
    assert_eq!(newest["trace_id"], trace_id, "{slow}");
    assert_eq!(
        newest["proxy"].as_str().map(|k| k.contains("proxy-b")),
        Some(true),
        "{slow}"
    );
    assert!(
        !newest["digest"].as_str().unwrap().contains("77"),
        "literals stay in the proxy: {slow}"
    );
    let lookups: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| {
            e["digest"]
                .as_str()
                .unwrap_or_default()
                .contains("ITEMS WHERE SKU = ?")
        })
        .collect();
    let per_proxy = |p: &str| {
        lookups
            .iter()
            .filter(|e| e["proxy"].as_str().unwrap_or_default().contains(p))
            .count()
    };
    assert_eq!(
        (per_proxy("proxy-a"), per_proxy("proxy-b")),
        (3, 6),
        "{slow}"
    );
    assert!(
        lookups.iter().all(|e| e["took_us"].as_u64().unwrap() > 0),
        "{slow}"
    );
    // The same view from the CLI, bounded by --limit.
    let out = std::process::Command::new(common::furrow_bin())
        .args([
            "ctl",
            "--server",
            &format!("http://127.0.0.1:{}", ports[0].port()),
        ])
        .args(["--token", CONTROL_TOKEN, "trace", "slow", "--limit", "2"])
        .output()
        .expect("furrow ctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(cli["entries"].as_array().map(Vec::len), Some(2), "{cli}");
    assert_eq!(cli["entries"][0]["trace_id"], trace_id, "{cli}");

    // Every Furrow process of the fleet: this control node and both proxies, with their own figures
    // (read from each proxy's admin INFO).
    let procs = center.call("GET", "/v1/trace/processes", None);
    let list = procs["processes"].as_array().unwrap();
    assert_eq!(
        (list.len(), procs["answered"].as_u64()),
        (3, Some(3)),
        "{procs}"
    );
    assert_eq!(
        (list[0]["role"].as_str(), list[0]["pid"].as_u64()),
        (Some("control"), Some(u64::from(center.child.id()))),
        "{procs}"
    );
    for (i, name) in ["proxy-a", "proxy-b"].iter().enumerate() {
        let p = list
            .iter()
            .find(|p| p["key"].as_str().unwrap_or_default().ends_with(name))
            .unwrap_or_else(|| panic!("{name}: {procs}"));
        assert_eq!(p["role"], "proxy", "{procs}");
        assert_eq!(
            p["pid"].as_u64(),
            Some(u64::from(proxies[i].0.id())),
            "{procs}"
        );
        assert!(p["rss_bytes"].as_u64().unwrap() > 0, "{procs}");
        assert!(
            p["threads"].as_u64().unwrap() >= 2,
            "executor and admin: {procs}"
        );
    }

    // Each proxy's advice through the center: the lookup scans the table without an index on sku.
    let advice = center.call("GET", "/v1/trace/fleet/index-advice?n=5", None);
    let list = advice["proxies"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{advice}");
    for p in list {
        let text = p["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("ALTER TABLE `shop`.`items` ADD INDEX `furrow_sku` (`sku`)"),
            "{advice}"
        );
        let table = &p["advice"][0];
        assert_eq!(table["name"], "advice", "{advice}");
        assert_eq!(table["rows"][0][1], "shop.items", "{advice}");
    }
}
