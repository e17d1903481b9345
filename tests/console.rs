//! The web console end to end, in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven
//! over WebDriver by `webdriver/mod.rs`), against a real `furrow control`, a real `furrow proxy
//! --config-source` and real backends from the test kit (a Redis primary with a replica, a MariaDB):
//! log in, edit a setting (the API's type and schema errors shown at the field), see the draft diff,
//! publish and watch the proxy apply it, look at releases and instances, take a backend offline and see
//! the reads move to the primary, find a slow query, the registry and the review queue, the phone-width
//! layout, a rollback the proxy applies, logout, and a read-only user (logged in with a password)
//! refused. A PNG of each page goes to
//! `target/tmp/console-screenshots/` (printed at the start).

mod common;
mod webdriver;

use std::time::Duration;

use common::{
    ControlCenter, Process, api_call, config_generation, mariadb, redis_cli,
    spawn_config_source_proxy, wait_until,
};
use serde_json::json;
use webdriver::Browser;

const TOKEN: &str = "console-admin-token";

/// The `REQUESTS` of backend `name` in `SHOW BACKENDS`.
fn backend_requests(admin: u16, name: &str) -> u64 {
    redis_cli(admin, &["SHOW", "BACKENDS"])
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().nth(6)?.parse().ok())
        .unwrap_or_else(|| panic!("no backend {name}"))
}

/// On a proxy's page: opens the Backends tab and takes `cache/REPLICA` offline, through the
/// confirmation dialog.
fn take_offline(b: &Browser, replica: &str, long: Duration) {
    b.click("#tab-backends");
    b.wait_text("#backends-table", long, |t| t.contains(replica));
    b.click(&format!(
        "button[aria-label=\"Take cache/{replica} offline\"]"
    ));
    b.confirm();
}

#[test]
fn the_console_operates_the_suite_in_a_real_browser() {
    webdriver::require();
    let primary = testkit::RedisServer::start().expect("redis primary");
    let replica =
        testkit::RedisServer::start_with(testkit::RedisConfig::new().replica_of(primary.addr()))
            .expect("redis replica");
    let db = testkit::MariaDb::start().expect("mariadb");
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let (cport, admin, cache, sql) = (
        ports[0].port(),
        ports[1].port(),
        ports[2].port(),
        ports[3].port(),
    );

    let _control = ControlCenter::start_with(dir.path(), cport, TOKEN, &["--report-ttl-s", "600"]);

    // The proxy's whole config lives in the center: a Redis listener reading from the replica, a MySQL
    // listener logging statements slower than 200 ms.
    let config = format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\nshutdown_grace_ms = 100\n\n\
         [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{cache}\"\ngroup = \"cache\"\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{sql}\"\ngroup = \"main\"\n\n\
         [redis_groups.cache]\nread_from = \"replica\"\n\
         servers = [{{ name = \"r1\", address = \"{}\", replicas = [\"{}\"] }}]\n\n\
         [mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"primary\", address = \"{}\" }}\n\
         slow_query_ms = 200\n\n\
         [users.app]\nlisteners = [\"db\"]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\n",
        primary.addr(),
        replica.addr(),
        testkit::APP_USER,
        testkit::APP_PASSWORD,
        db.addr(),
    );
    api_call(
        cport,
        TOKEN,
        "POST",
        "/v1/apps",
        Some(json!({"name": "shop"})),
    );
    api_call(
        cport,
        TOKEN,
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "proxy"})),
    );
    api_call(
        cport,
        TOKEN,
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "flags", "review": true})),
    );
    let nsp = "/v1/apps/shop/envs/DEV/clusters/default/namespaces/proxy";
    api_call(
        cport,
        TOKEN,
        "PUT",
        &format!("{nsp}/items/config"),
        Some(json!({"value": {"type": "document", "value": {"format": "toml", "text": config}}})),
    );
    api_call(
        cport,
        TOKEN,
        "POST",
        &format!("{nsp}/publish"),
        Some(json!({"message": "first config"})),
    );
    // A draft waiting for review, and a registered service.
    api_call(
        cport,
        TOKEN,
        "PUT",
        "/v1/apps/shop/envs/DEV/clusters/default/namespaces/flags/items/new_checkout",
        Some(json!({"value": {"type": "boolean", "value": true}})),
    );
    api_call(
        cport,
        TOKEN,
        "PUT",
        "/v1/registry/DEV/services/orders",
        Some(
            json!({"app": "shop", "owner": "team-orders", "docs": "Order service",
                    "ttl_ms": 3_600_000, "dependencies": ["payments", "inventory"]}),
        ),
    );
    api_call(
        cport,
        TOKEN,
        "PUT",
        "/v1/registry/DEV/services/payments",
        Some(json!({"app": "shop", "owner": "team-pay", "docs": "Payments"})),
    );
    api_call(
        cport,
        TOKEN,
        "POST",
        "/v1/registry/DEV/services/orders/instances",
        Some(json!({"id": "orders-1", "ip": "127.0.0.1", "port": 8080, "version": "1.4.2"})),
    );

    let _proxy = Process(spawn_config_source_proxy(
        &format!(
            "http://127.0.0.1:{cport}/shop/DEV/default/proxy?instance=proxy-1&ip=127.0.0.1&health_ms=300"
        ),
        TOKEN,
        &dir.path().join("proxy.log"),
    ));
    let generation = || config_generation(admin);
    wait_until(Duration::from_secs(20), || generation() == Some(1));

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    eprintln!("console screenshots: {}", shots.display());
    let b = Browser::start(&shots);
    let base = format!("http://127.0.0.1:{cport}/");
    let long = Duration::from_secs(15);

    // Login: a wrong token is refused with the API's error, the right one opens the console.
    b.goto(&base);
    b.find("#login-token");
    b.screenshot("01-login");
    b.fill("#login-token", "not-a-token");
    b.click("#login-submit");
    b.wait_text("#login-error", long, |t| t.contains("unauthorized"));
    b.fill("#login-token", TOKEN);
    b.click("#login-submit");
    b.wait_text("#who", long, |t| t.contains("admin"));
    let cookie_visible = b.script("return document.cookie;", vec![]);
    assert_eq!(cookie_visible, json!(""), "the session cookie is HttpOnly");

    // Configuration: the tree, the draft items.
    b.goto(&format!(
        "{base}#/config?app=shop&env=DEV&cluster=default&ns=proxy"
    ));
    b.wait_text("#items-table", long, |t| t.contains("config"));
    b.screenshot("02-config-items");

    // A new setting item: the API's type error, then its schema error, shown at the value field.
    b.click("#add-item");
    b.fill("#item-key", "config.proxy.shutdown_grace_ms");
    b.choose("#item-type", "integer");
    b.fill("#item-value", "\"soon\"");
    b.click("#item-save");
    let err = b.wait_text("#item-value-err", long, |t| !t.is_empty());
    assert!(err.contains("bad_request"), "{err}");
    b.fill("#item-schema", r#"{"type": "integer", "maximum": 60000}"#);
    b.fill("#item-value", "999999");
    b.click("#item-save");
    let err = b.wait_text("#item-value-err", long, |t| t.contains("schema_violation"));
    assert!(err.contains("60000"), "{err}");
    b.screenshot("03-item-validation");
    b.fill("#item-value", "1234");
    b.click("#item-save");
    b.wait_text("#items-table", long, |t| {
        t.contains("config.proxy.shutdown_grace_ms")
    });

    // Inheritance: where each resolved value comes from.
    b.click("#tab-layers");
    b.wait_text("#resolved-table", long, |t| t.contains("shop/default"));
    b.screenshot("04-inheritance");

    // Draft diff, then publish through the confirmation dialog; the proxy applies it.
    b.click("#tab-publish");
    b.wait_text("#draft-diff", long, |t| {
        t.contains("config.proxy.shutdown_grace_ms") && t.contains("1234")
    });
    b.fill("#publish-message", "grace from the console");
    b.screenshot("05-diff-publish");
    b.click("#publish-submit");
    b.confirm();
    b.wait_text("#publish-result", long, |t| t.contains("Published release"));
    wait_until(long, || generation() == Some(2));
    assert!(redis_cli(admin, &["SHOW", "CONFIG"]).contains("shutdown_grace_ms = 1234"));

    // Releases with their diff; instances with the release each runs.
    b.click("#tab-releases");
    b.wait_text("#releases-table", long, |t| {
        t.contains("grace from the console")
    });
    b.click("#releases-table tbody tr:first-child button");
    b.wait_text("#release-detail", long, |t| {
        t.contains("config.proxy.shutdown_grace_ms")
    });
    b.screenshot("06-releases");
    b.click("#tab-instances");
    b.wait_text("#instances-table", long, |t| t.contains("proxy-1"));
    b.screenshot("07-instances");

    // The fleet, then the proxy with its new generation.
    b.goto(&format!("{base}#/proxies"));
    // The fleet shows each proxy's own config generation, asked from its admin port.
    b.wait_text("#proxies-table", long, |t| t.contains("proxy-1"));
    wait_until(long, || {
        b.table_rows("#proxies-table")
            .first()
            .is_some_and(|r| r.get(5).map(String::as_str) == Some("2"))
    });
    b.screenshot("08-proxies");
    b.click(".proxy-link");
    b.wait_text("#proxy-summary", long, |t| {
        t.contains("config generation 2") && t.contains("shutdown_grace_ms = 1234")
    });

    // Reads go to the replica; traffic for the charts (sampled every 2 s).
    let r1_replica = format!("r1@{}", replica.addr());
    assert_eq!(redis_cli(cache, &["SET", "hot", "v"]), "OK");
    let before = backend_requests(admin, &r1_replica);
    for _ in 0..6 {
        for _ in 0..10 {
            redis_cli(cache, &["GET", "hot"]);
        }
        std::thread::sleep(Duration::from_millis(1100));
    }
    wait_until(long, || backend_requests(admin, &r1_replica) >= before + 60);
    b.wait_text("#tabpanel", long, |t| !t.contains("Collecting samples"));
    // The center's own history (the health windows the proxy sends with its reports, every 300 ms here)
    // is there as soon as the page opens, and counts the reads above.
    b.goto(&format!(
        "{base}#/proxy?key=shop/DEV/default/proxy/proxy-1&tab=overview&reload=1"
    ));
    b.wait_text("#proxy-history-count", long, |t| {
        t.contains("windows reported")
            && t.split("total ")
                .nth(1)
                .and_then(|x| x.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 60)
    });
    b.find("#proxy-history svg.chart polyline");
    // Latency per listener from the same windows: the redis listener's chart has points.
    b.wait_text("#proxy-latency-count", long, |t| t.contains("cache "));
    b.find("#proxy-latency svg.chart polyline");
    b.find("#proxy-latency svg.chart circle");
    b.screenshot("09-proxy-overview");

    // Take the replica offline from the console: reads move to the primary.
    take_offline(&b, &r1_replica, long);
    b.wait_text("#backends-table", long, |t| t.contains("offline"));
    let (p0, r0) = (
        backend_requests(admin, "r1"),
        backend_requests(admin, &r1_replica),
    );
    for _ in 0..20 {
        assert_eq!(redis_cli(cache, &["GET", "hot"]), "v");
    }
    // The reads moved to the primary (counters are bumped just after the replies go out: wait for them).
    wait_until(long, || backend_requests(admin, "r1") >= p0 + 20);
    assert_eq!(
        backend_requests(admin, &r1_replica),
        r0,
        "no read reached the offline replica"
    );
    // The console's table shows the same.
    b.click("#tab-listeners");
    b.click("#tab-backends");
    b.wait_text("#backends-table", long, |t| t.contains("offline"));
    let table = b.table_rows("#backends-table");
    let primary_row = table
        .iter()
        .find(|r| r.get(1).map(String::as_str) == Some("r1"))
        .expect("primary row");
    assert!(
        primary_row[6].parse::<u64>().unwrap_or(0) >= p0 + 20,
        "{primary_row:?}"
    );
    b.screenshot("10-backends-offline");
    b.click(&format!(
        "button[aria-label=\"Put cache/{r1_replica} online\"]"
    ));
    b.confirm();
    wait_until(long, || {
        redis_cli(admin, &["SHOW", "BACKENDS"])
            .lines()
            .any(|l| l.contains(&r1_replica) && l.contains(" up "))
    });

    // A slow query through the MySQL listener shows up in the slow log.
    assert_eq!(mariadb(sql, "SELECT SLEEP(0.3)"), "0");
    b.click("#tab-slowlog");
    b.wait_text("#slowlog-table", long, |t| t.contains("SLEEP(0.3)"));
    b.screenshot("11-slowlog");
    b.click("#tab-digests");
    b.wait_text("#digests-table", long, |t| t.contains("SLEEP"));
    b.click("#tab-commandstats");
    b.wait_text("#commandstats-table-cache", long, |t| t.contains("get"));
    b.screenshot("11b-commandstats");

    // Registry and review queue.
    b.goto(&format!("{base}#/registry?env=DEV&service=orders"));
    b.wait_text("#reg-instances-table", long, |t| t.contains("orders-1"));
    let graph = b.script(
        "return [...document.querySelectorAll('#deps-graph li')].map(li => li.textContent);",
        vec![],
    );
    assert_eq!(
        graph,
        json!(["orders depends on payments", "orders depends on inventory"])
    );
    b.screenshot("12-registry");
    b.goto(&format!("{base}#/review?env=DEV"));
    b.wait_text("#review-table", long, |t| t.contains("flags"));
    b.screenshot("13-review-queue");

    // Phone width: one column, the navigation behind a menu button.
    b.resize(390, 844);
    b.goto(&format!(
        "{base}#/config?app=shop&env=DEV&cluster=default&ns=proxy"
    ));
    b.wait_text("#items-table", long, |t| t.contains("config"));
    let layout = b.script(
        "return [getComputedStyle(document.getElementById('menu-toggle')).display, getComputedStyle(document.getElementById('nav')).display];",
        vec![],
    );
    assert_ne!(layout[0], "none", "the menu button shows at phone width");
    assert_eq!(layout[1], "none", "the navigation folds behind it");
    b.screenshot("14-phone-config");
    b.resize(1280, 900);

    // Roll back to the first release from the Releases tab: the proxy returns to the old grace period.
    let first = api_call(cport, TOKEN, "GET", &format!("{nsp}/releases"), None)["releases"]
        .as_array()
        .and_then(|r| r.last())
        .and_then(|r| r["id"].as_u64())
        .expect("first release");
    b.goto(&format!(
        "{base}#/config?app=shop&env=DEV&cluster=default&ns=proxy&tab=releases"
    ));
    b.click(&format!(
        "button[aria-label=\"Roll back to release {first}\"]"
    ));
    b.confirm();
    wait_until(long, || generation() == Some(3));
    let running = redis_cli(admin, &["SHOW", "CONFIG"]);
    assert!(running.contains("shutdown_grace_ms = 100"), "{running}");
    b.wait_text("#releases-table", long, |t| t.contains("rollback"));

    // Logout ends the session; a read-only user may look but not edit.
    b.click("#logout");
    b.find("#login-token");
    let status = b.script(
        "const r = new XMLHttpRequest(); r.open('GET', '/v1/whoami', false); r.send(); return r.status;",
        vec![],
    );
    assert_eq!(status, json!(401));
    api_call(
        cport,
        TOKEN,
        "POST",
        "/v1/users",
        Some(json!({"name": "viewer"})),
    );
    api_call(
        cport,
        TOKEN,
        "PUT",
        "/v1/permissions",
        Some(json!({"subject": "user:viewer", "app": "shop", "namespace": "*", "level": "read"})),
    );
    api_call(
        cport,
        TOKEN,
        "PUT",
        "/v1/users/viewer/password",
        Some(json!({"password": "viewer-password"})),
    );
    // This time with a user name and password.
    b.click("#login-mode-password");
    b.fill("#login-user", "viewer");
    b.fill("#login-password", "viewer-password");
    b.screenshot("15-login-password");
    b.click("#login-submit");
    b.wait_text("#who", long, |t| t.contains("viewer"));
    b.goto(&format!(
        "{base}#/config?app=shop&env=DEV&cluster=default&ns=proxy"
    ));
    b.wait_text("#items-table", long, |t| t.contains("config"));
    b.click("#add-item");
    b.fill("#item-key", "sneaky");
    b.fill("#item-value", "x");
    b.click("#item-save");
    b.wait_text("#item-error", long, |t| t.contains("forbidden"));
    b.goto(&format!("{base}#/proxies"));
    b.click(".proxy-link");
    take_offline(&b, &r1_replica, long);
    b.wait_text("#tabpanel", long, |t| t.contains("forbidden"));
    assert!(
        !redis_cli(admin, &["SHOW", "BACKENDS"]).contains("offline"),
        "a reader cannot take a backend offline"
    );
}
