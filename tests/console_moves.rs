//! The console's online-moves page end to end in a real headless Chromium (as `tests/console.rs`), against a
//! real `furrow control` and a real `furrow proxy --config-source` in front of two real redis-servers (a
//! slots group: r1 holds every slot, r2 was just added) and a real MariaDB holding two shards of a sharded
//! MySQL listener:
//! - Redis: the slot table and the plan as the admin port gives them (keys per server checked against
//!   `DBSIZE` too); a range moved from the page at a low rate, its progress while it runs, stopped from the
//!   page (the range stays published as moving), moved again to the end; then every key is on the server
//!   its slot names (`KEYS *` on each redis-server), readable through the proxy, and the center's item
//!   names the new owner. The moves are in the audit log; a user with `read` only is refused;
//! - MySQL: the reshard status and the dry-run plan exactly as the admin port answers them.
//!
//! PNGs go to `target/tmp/console-screenshots/` (7x-*.png).

mod common;
mod webdriver;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use common::{
    ControlCenter, Process, api_call, bearer_json, config_generation, mariadb, redis_cli,
    resp_connect, resp_roundtrip, spawn_config_source_proxy, wait_until,
};
use serde_json::json;
use webdriver::Browser;

const TOKEN: &str = "console-moves-admin";
const KEYS: usize = 400;

#[test]
fn console_moves_slots_and_reshard_in_a_real_browser() {
    webdriver::require();
    let servers: Vec<_> = (0..2)
        .map(|_| testkit::RedisServer::start().expect("redis-server"))
        .collect();
    let db = testkit::MariaDb::start().expect("mariadb");
    db.sql("CREATE DATABASE app_0; CREATE DATABASE app_1")
        .expect("schemas");
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
    let config = format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\nshutdown_grace_ms = 100\n\n\
         [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{cache}\"\ngroup = \"cache\"\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{sql}\"\ngroup = \"main\"\n\n\
         [redis_groups.cache]\ndistribution = \"slots\" # r2 was just added\n\
         servers = [{{ name = \"r1\", address = \"{}\" }}, {{ name = \"r2\", address = \"{}\" }}]\n\
         slots = [{{ range = \"0-16383\", server = \"r1\" }}]\n\n\
         [mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"primary\", address = \"{}\" }}\n\n\
         [sharding.app]\nlistener = \"db\"\n\
         shards = [ {{ name = \"s0\", group = \"main\", schema = \"app_0\" }}, {{ name = \"s1\", group = \"main\", schema = \"app_1\" }} ]\n\n\
         [[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_{{0..3}}\"\n\n\
         [[sharding.app.tables]]\nname = \"orders_v2\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_v2_{{0..7}}\"\n\n\
         [users.app]\nlisteners = [\"db\"]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\n",
        servers[0].addr(),
        servers[1].addr(),
        testkit::APP_USER,
        testkit::APP_PASSWORD,
        db.addr(),
    );
    let api = |method: &str, path: &str, body: Option<serde_json::Value>| {
        api_call(cport, TOKEN, method, path, body)
    };
    api("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api(
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "proxy"})),
    );
    let nsp = "/v1/apps/shop/envs/DEV/clusters/default/namespaces/proxy";
    api(
        "PUT",
        &format!("{nsp}/items/config"),
        Some(json!({"value": {"type": "document", "value": {"format": "toml", "text": config}}})),
    );
    api(
        "POST",
        &format!("{nsp}/publish"),
        Some(json!({"message": "first config"})),
    );
    // The proxy's token publishes the slot table while it moves (it needs `publish` there).
    let _proxy = Process(spawn_config_source_proxy(
        &format!(
            "http://127.0.0.1:{cport}/shop/DEV/default/proxy?instance=proxy-1&ip=127.0.0.1&health_ms=300"
        ),
        TOKEN,
        &dir.path().join("proxy.log"),
    ));
    wait_until(Duration::from_secs(20), || {
        config_generation(admin) == Some(1)
    });

    // Keys through the proxy (all on r1), and a small sharded table.
    let mut conn = resp_connect(cache);
    for i in 0..KEYS {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        assert_eq!(resp_roundtrip(&mut conn, &["SET", &k, &v]), "+OK");
    }
    assert_eq!(servers[0].cmd(&["DBSIZE"]).trim(), KEYS.to_string());
    mariadb(
        sql,
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id INT NOT NULL, note VARCHAR(40))",
    );
    mariadb(
        sql,
        "CREATE TABLE orders_v2 (id BIGINT PRIMARY KEY, user_id INT NOT NULL, note VARCHAR(40))",
    );
    let values: Vec<String> = (1..=80)
        .map(|i| format!("({i}, {}, 'note {i}')", i * 7))
        .collect();
    mariadb(
        sql,
        &format!(
            "INSERT INTO orders (id, user_id, note) VALUES {}",
            values.join(", ")
        ),
    );
    db.sql("ANALYZE TABLE app_0.orders_0, app_0.orders_1, app_1.orders_2, app_1.orders_3")
        .expect("analyze");

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    eprintln!("console screenshots: {}", shots.display());
    let b = Browser::start(&shots);
    let base = format!("http://127.0.0.1:{cport}/");
    let long = Duration::from_secs(30);
    b.goto(&base);
    b.fill("#login-token", TOKEN);
    b.click("#login-submit");
    b.wait_text("#who", long, |t| t.contains("admin"));

    // --- The slot table, from the proxy's page. ---
    let key = "shop/DEV/default/proxy/proxy-1";
    b.goto(&format!("{base}#/proxy?key={key}"));
    b.click("#proxy-moves");
    b.wait_text("#slots-table-cache", long, |t| t.contains("r1"));
    let show = redis_cli(admin, &["SLOTS", "SHOW", "cache"]);
    assert!(show.contains("  0-16383 r1\n"), "{show}");
    assert_eq!(
        b.table_rows("#slots-table-cache"),
        vec![vec!["0-16383", "16384", "r1", ""]],
        "{show}"
    );
    assert_eq!(
        b.text("#slots-job-state"),
        "No migration has run in this proxy process."
    );

    // --- The plan: keys per server as the admin port (and DBSIZE) say. ---
    b.click("#plan-submit");
    b.wait_text("#plan-moves", long, |t| t.contains("r2"));
    let plan = redis_cli(admin, &["SLOTS", "PLAN", "cache"]);
    let keys_now = |name: &str| -> String {
        plan.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no {name} in {plan}"))
            .to_string()
    };
    assert_eq!(keys_now("r1"), KEYS.to_string(), "{plan}");
    assert_eq!(keys_now("r2"), "0", "{plan}");
    let shown = b.table_rows("#plan-servers");
    assert_eq!(
        shown
            .iter()
            .map(|r| (r[0].as_str(), r[1].as_str()))
            .collect::<Vec<_>>(),
        vec![("r1", "400"), ("r2", "0")],
        "{shown:?}"
    );
    let moves = b.table_rows("#plan-moves");
    assert!(
        !moves.is_empty() && moves.iter().all(|m| m[1] == "r1" && m[2] == "r2"),
        "{moves:?}"
    );
    b.screenshot("70-moves-slots-plan");

    // --- A move is refused while the namespace has a draft change (a publish would release it too). ---
    api(
        "PUT",
        &format!("{nsp}/items/note"),
        Some(json!({"value": {"type": "string", "value": "half-done"}})),
    );
    b.fill("#plan-rate", "10");
    b.fill("#move-range", "0-8191");
    b.choose("#move-to", "r2");
    b.click("#move-submit");
    b.confirm();
    let refused = b.wait_text("#move-result", long, |t| t.contains("unpublished"));
    assert!(
        refused.contains("the namespace has unpublished changes (note)"),
        "{refused}"
    );
    api("DELETE", &format!("{nsp}/items/note"), None);

    // --- One range moved from the page, slowly: its progress, then stopped. ---
    b.click("#move-submit");
    b.confirm();
    b.wait_text("#move-started", long, |t| t.contains("migration started"));
    b.wait_text("#slots-job-state", long, |t| t.contains("running"));
    b.wait_text("#slots-job-left", long, |t| t.contains("0-8191 -> r2"));
    // The range is published as moving (the center's release reached the proxy).
    b.wait_text("#slots-table-cache", long, |t| t.contains("→ r2"));
    let moving = b.table_rows("#slots-table-cache");
    assert_eq!(
        moving,
        vec![
            vec!["0-8191", "8192", "r1", "→ r2"],
            vec!["8192-16383", "8192", "r1", ""]
        ]
    );
    b.wait_text("#slots-job-moved", long, |t| {
        t.parse::<u64>().is_ok_and(|n| n > 0)
    });
    b.script("window.scrollTo(0, 0); return 0;", vec![]);
    b.screenshot("71-moves-slots-running");
    b.click("#slots-stop");
    b.confirm();
    b.wait_text("#slots-job-state", long, |t| t.contains("stopped"));
    let stopped = redis_cli(admin, &["SLOTS", "SHOW", "cache"]);
    assert!(stopped.contains("0-8191 r1 -> r2 (moving)"), "{stopped}");
    assert!(stopped.contains(": stopped"), "{stopped}");

    // --- The same move again, without a rate: done. ---
    b.fill("#plan-rate", "0");
    b.click("#move-submit");
    b.confirm();
    b.wait_text("#slots-job-state", long, |t| t.contains("done"));
    b.wait_text("#slots-table-cache", long, |t| !t.contains("→"));
    assert_eq!(
        b.table_rows("#slots-table-cache"),
        vec![
            vec!["0-8191", "8192", "r2", ""],
            vec!["8192-16383", "8192", "r1", ""]
        ]
    );
    b.script("window.scrollTo(0, 0); return 0;", vec![]);
    b.screenshot("72-moves-slots-done");
    // Every key on its slot's server, none on two, every value readable through the proxy.
    let mut total = 0;
    for (s, server) in servers.iter().enumerate() {
        for k in server.cmd(&["KEYS", "*"]).lines().filter(|l| !l.is_empty()) {
            total += 1;
            let slot = router::redis::key_slot(k.as_bytes());
            assert_eq!(usize::from(slot <= 8191), s, "{k} (slot {slot})");
        }
    }
    assert_eq!(total, KEYS);
    assert!(servers[1].cmd(&["DBSIZE"]).trim() != "0");
    for i in 0..KEYS {
        assert_eq!(
            resp_roundtrip(&mut conn, &["GET", &format!("k{i}")]),
            format!("v{i}")
        );
    }
    let item = api("GET", &format!("{nsp}/items/config"), None);
    let text = item["value"]["value"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("{ range = \"0-8191\", server = \"r2\" }") && !text.contains("migrating_to"),
        "{text}"
    );
    assert!(text.contains("# r2 was just added"), "{text}");
    // The moves are audited with the proxy's answers.
    let audit = api("GET", &format!("/v1/audit?target=proxy/{key}"), None);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "proxy.slots.migrate",
            "proxy.slots.stop",
            "proxy.slots.migrate",
            "proxy.slots.migrate"
        ],
        "{audit}"
    );
    assert_eq!(audit[0]["actor"], "admin", "{audit}");
    assert_eq!(
        audit[0]["detail"]["command"],
        json!(["SLOTS", "MIGRATE", "cache", "0-8191", "r2"]),
        "{audit}"
    );
    assert!(
        audit[3]["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unpublished changes")),
        "{audit}"
    );
    // A user with read only sees the table but may not move.
    api(
        "POST",
        "/v1/users",
        Some(json!({"name": "viewer", "roles": []})),
    );
    let viewer = api(
        "POST",
        "/v1/tokens",
        Some(json!({"user": "viewer", "description": "viewer's"})),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        "PUT",
        "/v1/permissions",
        Some(
            json!({"subject": "user:viewer", "app": "shop", "namespace": "proxy", "level": "read"}),
        ),
    );
    let moves_path = format!("/console/api/proxies/{key}/moves/slots");
    let (status, seen) = bearer_json(cport, &viewer, "GET", &moves_path, None);
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["groups"][0]["ranges"][0]["server"], "r2", "{seen}");
    let (status, refused) = bearer_json(
        cport,
        &viewer,
        "POST",
        &moves_path,
        Some(json!({"action": "stop"})),
    );
    assert_eq!(status, 403, "{refused}");
    // Bad requests are refused before any proxy is asked, naming the field.
    let (status, bad) = bearer_json(
        cport,
        TOKEN,
        "POST",
        &moves_path,
        Some(json!({"action": "explode"})),
    );
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (400, Some("action")),
        "{bad}"
    );
    let (status, bad) = bearer_json(
        cport,
        TOKEN,
        "POST",
        &moves_path,
        Some(json!({"action": "migrate", "group": "cache", "range": "0-1 r2", "to": "r2"})),
    );
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (400, Some("range")),
        "{bad}"
    );
    // The proxy's own refusal comes back as the proxy said it.
    let (status, bad) = bearer_json(
        cport,
        TOKEN,
        "POST",
        &moves_path,
        Some(json!({"action": "migrate", "group": "cache", "range": "0-1", "to": "r9"})),
    );
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("group `cache` has no server `r9`")),
        "{bad}"
    );

    // --- MySQL: the reshard status and the dry run, as the admin port answers. ---
    b.goto(&format!("{base}#/moves?key={key}&tab=reshard"));
    let status = redis_cli(admin, &["RESHARD", "STATUS"]);
    b.wait_text("#reshard-title", long, |t| t == status.trim());
    assert_eq!(
        b.script(
            "return document.getElementById('reshard-pause').disabled;",
            vec![]
        ),
        json!(true)
    );
    b.fill("#reshard-sharding", "app");
    b.fill("#reshard-table", "orders");
    b.fill("#reshard-rule", "orders_v2");
    b.fill("#reshard-rate", "1000");
    b.click("#reshard-plan-submit");
    b.wait_text("#reshard-plan-table", long, |t| t.contains("orders_v2_4"));
    let plan = redis_cli(
        admin,
        &[
            "RESHARD",
            "PLAN",
            "app",
            "orders",
            "orders_v2",
            "RATE",
            "1000",
        ],
    );
    let want: Vec<Vec<String>> = plan
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('p') && l.contains(" -> "))
        .map(|l| {
            let (left, to) = l.split_once(" -> ").unwrap();
            let w: Vec<&str> = left.split_whitespace().collect();
            vec![
                format!("{} {}", w[0], w[1]),
                w[2].trim_start_matches('~').to_string(),
                w[4].trim_start_matches('~').to_string(),
                to.to_string(),
            ]
        })
        .collect();
    assert_eq!(want.len(), 4, "{plan}");
    assert_eq!(b.table_rows("#reshard-plan-table"), want, "{plan}");
    assert_eq!(
        b.text("#reshard-plan-title"),
        "reshard plan for `orders`: 4 -> 8 partitions"
    );
    let notes = b.text("#reshard-plan-notes");
    assert!(
        notes.contains("at 1000 bytes/s") && plan.contains(&notes),
        "{notes}"
    );
    b.screenshot("73-moves-reshard-plan");

    // Phone width: the page fits the screen (tables scroll in their own box).
    b.resize(390, 844);
    for tab in ["slots", "reshard"] {
        b.goto(&format!("{base}#/moves?key={key}&tab={tab}"));
        b.wait_text("#tabpanel", long, |t| {
            t.contains("r2") || t.contains("no reshard")
        });
        let overflow = b.script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        );
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "the {tab} tab is wider than a phone by {overflow} px"
        );
    }
    b.screenshot("74-moves-phone");

    // --- A running reshard paused and resumed from the page, then confirmed there. ---
    b.resize(1280, 900);
    // A transaction on the server holds `orders_0`'s rows: the copier's first locking read waits
    // for it, so the reshard is still copying (before or inside its first batch) when the page
    // pauses it.
    let mut holder = std::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &db.port().to_string()])
        .args(["-u", testkit::APP_USER])
        .arg(format!("-p{}", testkit::APP_PASSWORD))
        .args(["--batch", "--skip-column-names", "--unbuffered", "app_0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mariadb");
    let mut hold = holder.stdin.take().expect("stdin");
    writeln!(hold, "BEGIN; SELECT COUNT(*) FROM orders_0 FOR UPDATE;").expect("hold");
    let mut held = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut held)
        .expect("held");
    let in_p0: u64 = held.trim().parse().expect("rows of orders_0");
    assert!(in_p0 > 0 && in_p0 < 80, "{held}");
    let started = redis_cli(admin, &["RESHARD", "START", "app", "orders", "orders_v2"]);
    assert!(started.contains("reshard of `orders` started"), "{started}");
    b.goto(&format!("{base}#/moves?key={key}&tab=reshard"));
    b.wait_text("#reshard-state", long, |t| t == "running");
    b.wait_text("#reshard-phase", long, |t| t == "Copying");
    b.click("#reshard-pause");
    b.confirm();
    b.wait_text("#reshard-reply", long, |t| t.contains("pausing"));
    b.wait_text("#reshard-phase", long, |t| t == "Paused");
    // Let a batch in flight finish: the copier stops after it (partition 0's rows at most).
    writeln!(hold, "ROLLBACK;").expect("release");
    drop(hold);
    let _ = holder.wait();
    let copied = |s: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix("rows copied: "))
            .and_then(|n| n.parse::<u64>().ok())
    };
    std::thread::sleep(Duration::from_millis(700));
    let first = redis_cli(admin, &["RESHARD", "STATUS"]);
    std::thread::sleep(Duration::from_millis(700));
    let paused = redis_cli(admin, &["RESHARD", "STATUS"]);
    let n = copied(&paused);
    assert!(
        n == copied(&first)
            && n.is_some_and(|n| n == 0 || n == in_p0)
            && paused.contains("phase: Paused"),
        "copied on while paused:\n{first}\n{paused}"
    );
    let want = n.unwrap_or_default().to_string();
    b.wait_text("#reshard-fields dd[data-field='rows copied']", long, |t| {
        t == want
    });
    b.screenshot("75-moves-reshard-paused");
    b.click("#reshard-resume");
    b.confirm();
    b.wait_text("#reshard-reply", long, |t| t.contains("copying"));
    b.wait_text("#reshard-phase", long, |t| t == "CutOver");
    let cut = redis_cli(admin, &["RESHARD", "STATUS"]);
    assert!(cut.contains("checksums equal"), "{cut}");
    let text = api("GET", &format!("{nsp}/items/config"), None)["value"]["value"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("reshard_phase = \"cutover\""), "{text}");
    b.screenshot("76-moves-reshard-cutover");
    b.click("#reshard-confirm");
    b.confirm();
    b.wait_text("#reshard-phase", long, |t| t == "Confirmed");
    b.wait_text("#reshard-state", long, |t| t == "done (confirmed)");
    // The center's item has the new rule in the table's entry, no marks, its comments.
    let text = api("GET", &format!("{nsp}/items/config"), None)["value"]["value"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !text.contains("reshard_")
            && text.contains("name = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_v2_{0..7}\"")
            && text.contains("# r2 was just added"),
        "{text}"
    );
    let in_new: u64 = (0..8)
        .map(|p| {
            db.sql_value(&format!("SELECT COUNT(*) FROM app_{}.orders_v2_{p}", p / 4))
                .expect("count")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_default()
        })
        .sum();
    assert_eq!(in_new, 80);
    assert_eq!(mariadb(sql, "SELECT COUNT(*) FROM orders"), "80");
    let audit = api("GET", &format!("/v1/audit?target=proxy/{key}"), None);
    // Newest first.
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .filter(|a| a.starts_with("proxy.reshard."))
        .collect();
    assert_eq!(
        actions,
        [
            "proxy.reshard.confirm",
            "proxy.reshard.resume",
            "proxy.reshard.pause"
        ],
        "{audit}"
    );
}
