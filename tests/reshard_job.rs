//! The `RESHARD` job through the `furrow` binary, with two real mariadbd (one shard each): 4 → 8
//! hash partitions of `orders` while four client connections insert, update and delete through
//! the sharded listener and read back each write. Every acknowledged write must be in both
//! layouts at the cut-over (checksums equal with writes paused) and after it; reads stay correct
//! during and after; the pause is reported (printed, checked only against a generous bound);
//! `RESHARD CONFIRM` puts the new rule into the file, `RESHARD ABORT` after the cut-over gives the
//! old layout back. Refusals while a table reshards: non-deterministic functions, writes in a
//! transaction, DDL. A larger table measures the cut-over's pause with the whole table verified
//! under it and with only what changed since the last pass; a lost dual write (a test failpoint)
//! fails the cut-over and RESUME repairs it; a proxy killed mid-copy resumes from its progress
//! file. A proxy configured from a real `furrow control` reshards the same way, its config edits
//! published in the namespace's item, and resumes after a kill from the progress file next to its
//! snapshot file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{
    ControlCenter, FurrowProcess, Process, api_call, config_generation, redis_cli,
    spawn_config_source_proxy, wait_until,
};
use proxy_mysql::shard::reshard::Table;
use serde_json::json;

/// Rows before the reshard.
const ROWS: i64 = 3000;
/// Client connections writing during the reshard.
const WRITERS: i64 = 4;

/// The model of the table: id → (user_id, note), as acknowledged.
type Model = BTreeMap<i64, (i64, String)>;

/// What the writers saw: the model, problems, and ids whose last write was cut off by a proxy
/// restart (applied or not: either is right).
struct Written {
    model: Model,
    problems: Vec<String>,
    uncertain: BTreeSet<i64>,
}

struct Setup {
    dbs: Vec<testkit::MariaDb>,
    proxy: FurrowProcess,
    admin: u16,
    listen: u16,
}

fn mariadb(port: u16, q: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            "app",
            "-papp-secret",
            "app",
        ])
        .args(["--batch", "--skip-column-names", "-e", q])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn setup() -> Setup {
    setup_with(ROWS, &[])
}

/// Two servers, the proxy (with `env`), `orders` and `orders_v2` created, `rows` rows in `orders`.
fn setup_with(rows: i64, env: &[(&str, &str)]) -> Setup {
    let (admin, metrics, listen) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let (dbs, cfg) = servers_and_config(admin.port(), metrics.port(), listen.port());
    let proxy = FurrowProcess::start_env(&cfg, admin.port(), env);
    let listen = listen.port();
    create_and_fill(listen, rows);
    Setup {
        dbs,
        proxy,
        admin: admin.port(),
        listen,
    }
}

/// Two servers with a schema each, and the proxy's config over them (admin, metrics and listener
/// ports given).
fn servers_and_config(admin: u16, metrics: u16, listen: u16) -> (Vec<testkit::MariaDb>, String) {
    let dbs = testkit::MariaDb::start_many(2, testkit::MariaDbConfig::new()).expect("mariadbd");
    dbs[0].sql("CREATE DATABASE app_0").expect("schema");
    dbs[1].sql("CREATE DATABASE app_1").expect("schema");
    let cfg = config_over(&dbs, admin, metrics, listen);
    (dbs, cfg)
}

/// A proxy's config over the two servers `dbs` (admin, metrics and listener ports given).
fn config_over(dbs: &[testkit::MariaDb], admin: u16, metrics: u16, listen: u16) -> String {
    let group = |name: &str, db: &testkit::MariaDb| {
        format!(
            "[mysql_groups.{name}]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"{name}p\", address = \"{}\" }}\n\n",
            testkit::APP_USER,
            testkit::APP_PASSWORD,
            db.addr()
        )
    };
    let cfg = format!(
        "[proxy]\nexecutors = 2\nadmin = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{}\"\ngroup = \"g0\"\n\n\
         {}{}\
         [sharding.app]\nlistener = \"db\"\n\
         shards = [ {{ name = \"s0\", group = \"g0\", schema = \"app_0\" }}, {{ name = \"s1\", group = \"g1\", schema = \"app_1\" }} ]\n\n\
         # the table being resharded\n\
         [[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_{{0..3}}\"\n\n\
         [[sharding.app.tables]]\nname = \"orders_v2\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_v2_{{0..7}}\"\n\n\
         [users.app]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\n",
        admin,
        metrics,
        listen,
        group("g0", &dbs[0]),
        group("g1", &dbs[1]),
    );
    cfg
}

/// `orders` and `orders_v2` created through the listener, `rows` rows in `orders`.
fn create_and_fill(listen: u16, rows: i64) {
    for t in ["orders", "orders_v2"] {
        mariadb(
            listen,
            &format!(
                "CREATE TABLE {t} (id BIGINT PRIMARY KEY, user_id INT NOT NULL, note VARCHAR(60))"
            ),
        )
        .expect("create");
    }
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("({i}, {}, 'row {i}')", i * 7 % 1000))
            .collect();
        mariadb(
            listen,
            &format!(
                "INSERT INTO orders (id, user_id, note) VALUES {}",
                values.join(", ")
            ),
        )
        .expect("insert");
    }
}

fn initial_model(rows: i64) -> Model {
    (1..=rows)
        .map(|i| (i, (i * 7 % 1000, format!("row {i}"))))
        .collect()
}

/// Whether an error means the connection to the proxy was lost (a restart).
fn lost(e: &str) -> bool {
    [
        "Lost",
        "Broken pipe",
        "reset",
        "closed",
        "os error",
        "end of file",
        "EOF",
        "refused",
        "onnection",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// One client connection writing through the listener: inserts of new ids (`rows + 1 + i *
/// WRITERS + w`, next to the table's keys), updates and deletes of rows it owns (`id % WRITERS ==
/// w`; plus `id_base`), each acknowledged write read back at once. Returns its rows of the model. `restarts`:
/// a lost connection is a proxy restart: the write in flight is uncertain, the writer connects
/// again.
fn writer(
    listen: u16,
    w: i64,
    id_base: i64,
    rows: i64,
    restarts: bool,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Written {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let addr = format!("127.0.0.1:{listen}");
        let connect = || Table::open(&addr, "app", "app-secret", "app", "orders");
        let mut c = connect().await.expect("connect to the listener");
        let mut model: Model = initial_model(rows)
            .into_iter()
            .filter(|(id, _)| id % WRITERS == w)
            .collect();
        let mut problems = Vec::new();
        let mut uncertain = BTreeSet::new();
        let mut i: i64 = 0;
        while !stop.load(Relaxed) && problems.len() < 5 {
            i += 1;
            let (sql, id, user, after) = match i % 4 {
                // A new row.
                0 | 1 => {
                    let id = id_base + rows + 1 + i * WRITERS + w;
                    let user = (id * 13) % 1000;
                    let note = format!("w{w} new {i}");
                    (
                        format!(
                            "INSERT INTO orders (id, user_id, note) VALUES ({id}, {user}, '{note}')"
                        ),
                        id,
                        user,
                        Some((user, note)),
                    )
                }
                // An update of an old row (the copier may be holding it) or of a new one.
                2 => {
                    let keys: Vec<i64> = model.keys().copied().collect();
                    let Some(&id) = keys.get((i as usize * 37) % keys.len().max(1)) else {
                        continue;
                    };
                    let user = model[&id].0;
                    let note = format!("w{w} upd {i}");
                    (
                        format!(
                            "UPDATE orders SET note = '{note}' WHERE user_id = {user} AND id = {id}"
                        ),
                        id,
                        user,
                        Some((user, note)),
                    )
                }
                _ => {
                    let keys: Vec<i64> = model.keys().copied().collect();
                    let Some(&id) = keys.get((i as usize * 53) % keys.len().max(1)) else {
                        continue;
                    };
                    let user = model[&id].0;
                    (
                        format!("DELETE FROM orders WHERE user_id = {user} AND id = {id}"),
                        id,
                        user,
                        None,
                    )
                }
            };
            match c.query(&sql).await {
                Ok(_) => {
                    acked.fetch_add(1, Relaxed);
                    match &after {
                        Some(v) => {
                            model.insert(id, v.clone());
                        }
                        None => {
                            model.remove(&id);
                        }
                    }
                }
                // Cut off by a restart: applied or not; connect again.
                Err(e) if restarts && lost(&e) => {
                    model.remove(&id);
                    uncertain.insert(id);
                    c = reconnect(&connect).await;
                    continue;
                }
                // Not acknowledged (e.g. a lock wait or deadlock): not applied.
                Err(e) => {
                    if !e.contains("Deadlock") && !e.contains("Lock wait") {
                        problems.push(format!("{sql}: {e}"));
                    }
                    continue;
                }
            }
            // Read it back through the listener.
            let read = c
                .query(&format!(
                    "SELECT user_id, note FROM orders WHERE user_id = {user} AND id = {id}"
                ))
                .await;
            let want: Vec<Vec<Option<String>>> = after
                .iter()
                .map(|(u, n)| vec![Some(u.to_string()), Some(n.clone())])
                .collect();
            match read {
                Ok(rows) if rows == want => {}
                Ok(rows) => problems.push(format!("read after `{sql}`: {rows:?}, want {want:?}")),
                Err(e) if restarts && lost(&e) => c = reconnect(&connect).await,
                Err(e) => problems.push(format!("read after `{sql}`: {e}")),
            }
        }
        Written {
            model,
            problems,
            uncertain,
        }
    })
}

/// Connects again while a restarted proxy comes back (30 s at most).
async fn reconnect<F: std::future::Future<Output = Result<Table, String>>>(
    connect: &impl Fn() -> F,
) -> Table {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect().await {
            Ok(t) => return t,
            Err(e) => assert!(Instant::now() < deadline, "no proxy to reconnect to: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(admin: u16) -> String {
    redis_cli(admin, &["RESHARD", "STATUS"])
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
}

fn wait_phase(admin: u16, phase: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(admin);
        if field(&s, "phase") == phase {
            return s;
        }
        assert!(
            Instant::now() < deadline && !s.contains("failed:"),
            "no phase {phase}:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every row of the layout `tables` (physical names, spread over the two servers by block).
fn layout_rows(dbs: &[testkit::MariaDb], tables: &[String]) -> Model {
    let mut m = Model::new();
    let n = tables.len();
    for (p, t) in tables.iter().enumerate() {
        let s = p * 2 / n;
        let rows = dbs[s]
            .sql(&format!("SELECT id, user_id, note FROM app_{s}.{t}"))
            .expect("layout rows");
        for r in rows {
            let cell = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let id: i64 = cell(0).parse().expect("id");
            assert!(
                m.insert(id, (cell(1).parse().expect("user"), cell(2)))
                    .is_none(),
                "id {id} twice in the layout"
            );
        }
    }
    m
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Through the listener: the whole table, in key order.
fn proxy_rows(listen: u16) -> Model {
    let text = mariadb(listen, "SELECT id, user_id, note FROM orders ORDER BY id").expect("select");
    text.lines()
        .map(|l| {
            let mut f = l.split('\t');
            let id = f.next().and_then(|v| v.parse().ok()).unwrap_or(-1);
            let user = f.next().and_then(|v| v.parse().ok()).unwrap_or(-1);
            (id, (user, f.next().unwrap_or("").to_string()))
        })
        .collect()
}

struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Written>>,
}

fn start_load(listen: u16) -> Load {
    start_load_with(listen, ROWS, false)
}

fn start_load_with(listen: u16, rows: i64, restarts: bool) -> Load {
    let all: Vec<(u16, i64, i64)> = (0..WRITERS).map(|w| (listen, w, 0)).collect();
    start_load_on(&all, rows, restarts)
}

/// Writers `w` through the listeners given with them, their new keys from `id_base` on (each `w`
/// of `0..WRITERS` at most once: the writers own disjoint keys).
fn start_load_on(writers: &[(u16, i64, i64)], rows: i64, restarts: bool) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let threads = writers
        .iter()
        .map(|&(listen, w, base)| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || writer(listen, w, base, rows, restarts, stop, acked))
        })
        .collect();
    Load {
        stop,
        acked,
        threads,
    }
}

fn stop_load(load: Load) -> Model {
    let (model, uncertain) = stop_load_uncertain(load);
    assert!(uncertain.is_empty(), "{uncertain:?}");
    model
}

/// The acknowledged model and the ids a restart left uncertain.
fn stop_load_uncertain(load: Load) -> (Model, BTreeSet<i64>) {
    load.stop.store(true, Relaxed);
    let mut model = Model::new();
    let mut uncertain = BTreeSet::new();
    for t in load.threads {
        let w = t.join().expect("writer");
        assert!(w.problems.is_empty(), "writer problems: {:#?}", w.problems);
        model.extend(w.model);
        uncertain.extend(w.uncertain);
    }
    (model, uncertain)
}

/// The pause in milliseconds as `RESHARD STATUS` reports it.
fn pause_ms(status: &str) -> f64 {
    field(status, "cut-over pause")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn reshard_four_to_eight_under_writes_then_confirm() {
    let s = setup();
    let admin = s.admin;
    let load = start_load(s.listen);
    std::thread::sleep(Duration::from_millis(300));

    let started = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "40",
        ],
    );
    assert!(started.contains("reshard of `orders` started"), "{started}");
    // PAUSE lands before the copier's first batch (it waits for the reload to reach every core).
    let paused = redis_cli(admin, &["RESHARD", "PAUSE"]);
    assert!(paused.contains("pausing"), "{paused}");
    let st = wait_phase(admin, "Paused", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(700));
    let st2 = status(admin);
    assert_eq!(
        field(&st, "rows copied"),
        field(&st2, "rows copied"),
        "copied while paused:\n{st2}"
    );
    assert!(field(&st2, "phase") == "Paused", "{st2}");
    assert!(
        redis_cli(admin, &["RESHARD", "CONFIRM"])
            .contains("cannot Confirm a reshard that is Paused")
    );
    assert!(redis_cli(admin, &["RESHARD", "RESUME"]).contains("copying"));
    assert!(
        redis_cli(admin, &["RESHARD", "START", "app", "orders", "orders_v2"]).contains("running")
    );

    let cut = wait_phase(admin, "CutOver", Duration::from_secs(120));
    println!("{cut}");
    assert!(
        field(&cut, "last verify").contains("with writes paused"),
        "{cut}"
    );
    assert!(
        field(&cut, "last verify").contains("checksums equal"),
        "{cut}"
    );
    assert_eq!(
        field(&cut, "rows copied")
            .parse::<i64>()
            .ok()
            .map(|r| r >= ROWS / 2),
        Some(true),
        "{cut}"
    );
    let pause = pause_ms(&cut);
    println!("cut-over pause: {pause} ms");
    assert!(pause > 0.0 && pause < 30_000.0, "{cut}");
    let file = std::fs::read_to_string(s.proxy.config_path()).expect("config");
    assert!(
        file.contains("reshard_phase = \"cutover\"")
            && file.contains("# the table being resharded"),
        "{file}"
    );

    // More writes with the new layout serving; then refusals while the table still reshards.
    std::thread::sleep(Duration::from_millis(800));
    let acked = load.acked.load(Relaxed);
    let model = stop_load(load);
    println!("acknowledged writes: {acked}");
    assert!(acked > 50, "the load did not run: {acked}");
    for (sql, why) in [
        (
            "UPDATE orders SET note = NOW() WHERE user_id = 7 AND id = 1",
            "NOW gives each layout its own value",
        ),
        (
            "INSERT INTO orders (id, user_id, note) VALUES (9, 9, UUID())",
            "UUID",
        ),
        (
            "BEGIN; UPDATE orders SET note = 'x' WHERE user_id = 7 AND id = 1; COMMIT",
            "not inside a transaction",
        ),
        ("ALTER TABLE orders ADD COLUMN extra INT", "DDL on it"),
        (
            "INSERT INTO orders_v2 (id, user_id, note) VALUES (9, 9, 'x')",
            "written by the reshard only",
        ),
    ] {
        let e = mariadb(s.listen, sql).err().unwrap_or_default();
        assert!(
            e.contains("1235") && e.contains("is being resharded") && e.contains(why),
            "{sql}: {e}"
        );
    }
    // Both layouts hold exactly the acknowledged writes; the listener reads the new one.
    assert_eq!(
        layout_rows(&s.dbs, &names("orders_v2_", 8)),
        model,
        "new layout"
    );
    assert_eq!(
        layout_rows(&s.dbs, &names("orders_", 4)),
        model,
        "old layout"
    );
    assert_eq!(proxy_rows(s.listen), model, "reads through the listener");

    // CONFIRM: the new rule is the table's; writes reach the new layout only.
    assert!(redis_cli(admin, &["RESHARD", "CONFIRM"]).contains("confirming"));
    let done = wait_phase(admin, "Confirmed", Duration::from_secs(10));
    assert!(done.contains("done (confirmed)"), "{done}");
    let file = std::fs::read_to_string(s.proxy.config_path()).expect("config");
    assert!(!file.contains("reshard_to"), "{file}");
    assert!(file.contains("name = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_v2_{0..7}\""), "{file}");
    mariadb(
        s.listen,
        "INSERT INTO orders (id, user_id, note) VALUES (5000000, 5, 'after')",
    )
    .expect("insert");
    let mut after = model.clone();
    after.insert(5_000_000, (5, "after".into()));
    assert_eq!(layout_rows(&s.dbs, &names("orders_v2_", 8)), after);
    assert_eq!(layout_rows(&s.dbs, &names("orders_", 4)), model);
    assert_eq!(proxy_rows(s.listen), after);
    // Non-deterministic functions are fine again.
    mariadb(
        s.listen,
        "UPDATE orders SET note = NOW() WHERE user_id = 5 AND id = 5000000",
    )
    .expect("now");
}

#[test]
fn reshard_abort_while_copying_and_after_cut_over() {
    let s = setup();
    let admin = s.admin;
    assert!(redis_cli(admin, &["RESHARD", "ABORT"]).contains("no reshard has run"));
    let e = redis_cli(
        admin,
        &["RESHARD", "START", "app", "orders", "orders", "BATCH", "10"],
    );
    assert!(e.contains("tables of its own"), "{e}");
    let e = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "0",
        ],
    );
    assert!(e.contains("BATCH takes 1 to"), "{e}");
    let load = start_load(s.listen);
    // ABORT while copying (paused before the first batch): the marks leave the file.
    let started = redis_cli(admin, &["RESHARD", "START", "app", "orders", "orders_v2"]);
    assert!(started.contains("started"), "{started}");
    assert!(redis_cli(admin, &["RESHARD", "PAUSE"]).contains("pausing"));
    wait_phase(admin, "Paused", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(redis_cli(admin, &["RESHARD", "ABORT"]).contains("aborting"));
    let st = wait_phase(admin, "Aborted", Duration::from_secs(10));
    assert!(st.contains("done (aborted"), "{st}");
    let file = std::fs::read_to_string(s.proxy.config_path()).expect("config");
    assert!(!file.contains("reshard_"), "{file}");
    // The dual writes meanwhile left rows in the new tables: empty them to start again.
    for q in 0..8 {
        s.dbs[q / 4]
            .sql(&format!("TRUNCATE TABLE app_{}.orders_v2_{q}", q / 4))
            .expect("truncate");
    }
    let started = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "100",
        ],
    );
    assert!(started.contains("started"), "{started}");
    let cut = wait_phase(admin, "CutOver", Duration::from_secs(120));
    println!("{cut}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(redis_cli(admin, &["RESHARD", "ABORT"]).contains("aborting"));
    let st = wait_phase(admin, "Aborted", Duration::from_secs(10));
    assert!(st.contains("done (aborted"), "{st}");
    // Writes go on against the old layout alone.
    std::thread::sleep(Duration::from_millis(500));
    let model = stop_load(load);
    let file = std::fs::read_to_string(s.proxy.config_path()).expect("config");
    assert!(
        !file.contains("reshard_") && file.contains("physical = \"orders_{0..3}\""),
        "{file}"
    );
    assert_eq!(
        layout_rows(&s.dbs, &names("orders_", 4)),
        model,
        "old layout"
    );
    assert_eq!(proxy_rows(s.listen), model, "reads through the listener");
    // The new tables keep their rows: a new START refuses them.
    let e = redis_cli(admin, &["RESHARD", "START", "app", "orders", "orders_v2"]);
    assert!(e.contains("must start empty"), "{e}");
    // Non-deterministic writes are allowed again.
    mariadb(
        s.listen,
        "UPDATE orders SET note = NOW() WHERE user_id = 7 AND id = 1",
    )
    .expect("now");
}

/// Rows of the larger table (the pause measurement).
const LARGE: i64 = 50_000;

/// Truncates the new layout's tables (after an ABORT, to start again).
fn empty_new_layout(dbs: &[testkit::MariaDb]) {
    for q in 0..8 {
        dbs[q / 4]
            .sql(&format!("TRUNCATE TABLE app_{}.orders_v2_{q}", q / 4))
            .expect("truncate");
    }
}

#[test]
fn reshard_large_table_pause_whole_table_vs_changed_keys() {
    let s = setup_with(LARGE, &[]);
    let admin = s.admin;
    let load = start_load_with(s.listen, LARGE, false);
    std::thread::sleep(Duration::from_millis(300));
    let e = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "VERIFY",
            "some",
        ],
    );
    assert!(e.contains("VERIFY takes `changed` or `full`"), "{e}");

    // Before: the cut-over verifies the whole table with writes paused.
    let started = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "500",
            "VERIFY",
            "full",
        ],
    );
    assert!(started.contains("started"), "{started}");
    let full = wait_phase(admin, "CutOver", Duration::from_secs(300));
    println!("{full}");
    let verified = field(&full, "last verify");
    assert!(
        verified.contains("with writes paused (whole table)")
            && verified.contains("checksums equal"),
        "{full}"
    );
    assert!(redis_cli(admin, &["RESHARD", "ABORT"]).contains("aborting"));
    wait_phase(admin, "Aborted", Duration::from_secs(10));
    empty_new_layout(&s.dbs);

    // After: only what changed since the last pass.
    let started = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "500",
        ],
    );
    assert!(started.contains("started"), "{started}");
    let changed = wait_phase(admin, "CutOver", Duration::from_secs(300));
    println!("{changed}");
    let verified = field(&changed, "last verify");
    assert!(
        verified.contains("with writes paused (changed since the last pass)")
            && verified.contains("checksums equal"),
        "{changed}"
    );
    println!(
        "cut-over pause, {LARGE} rows: whole table {} ms, changed keys {} ms",
        pause_ms(&full),
        pause_ms(&changed)
    );
    std::thread::sleep(Duration::from_millis(300));
    let model = stop_load(load);
    assert_eq!(
        layout_rows(&s.dbs, &names("orders_v2_", 8)),
        model,
        "new layout"
    );
    assert_eq!(
        layout_rows(&s.dbs, &names("orders_", 4)),
        model,
        "old layout"
    );
}

#[test]
fn reshard_lost_dual_write_fails_the_cut_over_and_resume_repairs_it() {
    // The failpoint drops the other layout's half of the first INSERT dual-written once the
    // verifier tracks changed keys: only the re-verify of changed keys can see it.
    let s = setup_with(ROWS, &[("FURROW_TEST_FAILPOINT", "reshard-skip-other")]);
    let admin = s.admin;
    let load = start_load(s.listen);
    std::thread::sleep(Duration::from_millis(300));
    let started = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "100",
        ],
    );
    assert!(started.contains("started"), "{started}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let refused = loop {
        let st = status(admin);
        if field(&st, "cut-over pause").contains("refused") {
            break st;
        }
        assert!(
            Instant::now() < deadline && field(&st, "phase") != "CutOver",
            "the cut-over did not see the lost write:\n{st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("{refused}");
    assert_eq!(field(&refused, "phase"), "Paused", "{refused}");
    assert!(
        field(&refused, "last verify").contains("with writes paused (changed since the last pass)")
            && field(&refused, "last verify").contains("1 ranges differ"),
        "{refused}"
    );
    // RESUME re-copies what differs, verifies again and cuts over.
    assert!(redis_cli(admin, &["RESHARD", "RESUME"]).contains("copying"));
    let cut = wait_phase(admin, "CutOver", Duration::from_secs(120));
    println!("{cut}");
    assert!(
        field(&cut, "last verify").contains("checksums equal"),
        "{cut}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let model = stop_load(load);
    assert_eq!(
        layout_rows(&s.dbs, &names("orders_v2_", 8)),
        model,
        "new layout"
    );
    assert_eq!(
        layout_rows(&s.dbs, &names("orders_", 4)),
        model,
        "old layout"
    );
}

#[test]
fn reshard_resumes_after_the_proxy_is_killed_mid_copy() {
    const ROWS_KILL: i64 = 20_000;
    let mut s = setup_with(ROWS_KILL, &[]);
    let admin = s.admin;
    let load = start_load_with(s.listen, ROWS_KILL, true);
    std::thread::sleep(Duration::from_millis(300));
    let started = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "50",
        ],
    );
    assert!(started.contains("started"), "{started}");
    // Mid-copy: past the first partition's first rows, well before the end.
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let st = status(admin);
        let rows: i64 = field(&st, "rows copied").parse().unwrap_or(0);
        if rows >= 2_000 {
            break st;
        }
        assert!(
            Instant::now() < deadline && field(&st, "phase") == "Copying",
            "{st}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("{before}");
    s.proxy.kill_and_restart(admin);
    let file =
        std::path::PathBuf::from(format!("{}.reshard-state", s.proxy.config_path().display()));
    let saved = std::fs::read_to_string(&file).expect("progress file");
    assert!(saved.contains("new_rule = \"orders_v2\""), "{saved}");

    // The restarted proxy shows the interrupted job; START is refused; RESUME goes on.
    let st = status(admin);
    println!("{st}");
    assert!(st.contains("interrupted (the proxy restarted)"), "{st}");
    assert_eq!(field(&st, "phase"), "Paused", "{st}");
    let resumed_rows: i64 = field(&st, "rows copied").parse().unwrap_or(0);
    assert!(resumed_rows >= 2_000, "{st}");
    assert_ne!(field(&st, "key reached"), "-", "{st}");
    let e = redis_cli(admin, &["RESHARD", "START", "app", "orders", "orders_v2"]);
    assert!(e.contains("marked as resharding"), "{e}");
    let r = redis_cli(admin, &["RESHARD", "RESUME"]);
    assert!(r.contains("copying again from partition"), "{r}");
    // A dual write cut off between its two layouts' commits by the kill leaves its row in one
    // layout: the cut-over then refuses, and RESUME re-copies what differs.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut repaired = 0;
    let cut = loop {
        let st = status(admin);
        if field(&st, "phase") == "CutOver" {
            break st;
        }
        if field(&st, "phase") == "Paused" && field(&st, "cut-over pause").contains("refused") {
            println!("refused after the restart:\n{st}");
            repaired += 1;
            assert!(repaired <= 2, "{st}");
            assert!(redis_cli(admin, &["RESHARD", "RESUME"]).contains("copying"));
        }
        assert!(Instant::now() < deadline && !st.contains("failed:"), "{st}");
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("{cut}");
    assert!(
        field(&cut, "last verify").contains("checksums equal"),
        "{cut}"
    );
    let copied: i64 = field(&cut, "rows copied").parse().unwrap_or(0);
    assert!(copied >= ROWS_KILL / 2, "{cut}");

    // Killed again after the cut-over: the restarted proxy serves the new layout (the file says
    // `cutover`) and shows the job waiting for CONFIRM or ABORT.
    std::thread::sleep(Duration::from_millis(300));
    s.proxy.kill_and_restart(admin);
    let st = status(admin);
    println!("{st}");
    assert!(st.contains("interrupted after the cut-over"), "{st}");
    assert_eq!(field(&st, "phase"), "CutOver", "{st}");
    std::thread::sleep(Duration::from_millis(500));
    let (model, uncertain) = stop_load_uncertain(load);
    println!("writes cut off by the restarts: {uncertain:?}");
    // Every acknowledged write is in both layouts (a write the kill cut off may be in one only:
    // after the cut-over nothing verifies the old layout again; docs/sharding.md).
    let known = |m: Model| -> Model {
        m.into_iter()
            .filter(|(id, _)| !uncertain.contains(id))
            .collect()
    };
    assert_eq!(
        known(layout_rows(&s.dbs, &names("orders_v2_", 8))),
        model,
        "new layout"
    );
    assert_eq!(
        known(layout_rows(&s.dbs, &names("orders_", 4))),
        model,
        "old layout"
    );
    assert_eq!(
        known(proxy_rows(s.listen)),
        model,
        "reads through the listener"
    );
    // CONFIRM finishes the interrupted job; the progress file goes.
    let c = redis_cli(admin, &["RESHARD", "CONFIRM"]);
    assert!(c.contains("confirmed"), "{c}");
    let conf = std::fs::read_to_string(s.proxy.config_path()).expect("config");
    assert!(
        !conf.contains("reshard_to") && conf.contains("physical = \"orders_v2_{0..7}\""),
        "{conf}"
    );
    wait_phase(admin, "Confirmed", Duration::from_secs(10));
    assert!(!file.exists());
}

#[test]
fn reshard_interrupted_by_a_restart_can_be_aborted() {
    let mut s = setup();
    let admin = s.admin;
    let started = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "10",
        ],
    );
    assert!(started.contains("started"), "{started}");
    assert!(redis_cli(admin, &["RESHARD", "PAUSE"]).contains("pausing"));
    wait_phase(admin, "Paused", Duration::from_secs(5));
    s.proxy.kill_and_restart(admin);
    let st = status(admin);
    assert!(st.contains("interrupted (the proxy restarted)"), "{st}");
    // The marks are still in the file: writes are dual-written after the restart.
    mariadb(
        s.listen,
        "INSERT INTO orders (id, user_id, note) VALUES (900001, 1, 'after restart')",
    )
    .expect("insert");
    assert_eq!(
        layout_rows(&s.dbs, &names("orders_v2_", 8)).get(&900_001),
        Some(&(1, "after restart".to_string()))
    );
    let e = redis_cli(admin, &["RESHARD", "PAUSE"]);
    assert!(e.contains("cannot Pause a reshard that is Paused"), "{e}");
    let a = redis_cli(admin, &["RESHARD", "ABORT"]);
    assert!(a.contains("aborted"), "{a}");
    let st = status(admin);
    assert_eq!(field(&st, "phase"), "Aborted", "{st}");
    let conf = std::fs::read_to_string(s.proxy.config_path()).expect("config");
    assert!(!conf.contains("reshard_"), "{conf}");
    let progress = format!("{}.reshard-state", s.proxy.config_path().display());
    assert!(!std::path::Path::new(&progress).exists());
    // The old layout alone is written again.
    mariadb(
        s.listen,
        "INSERT INTO orders (id, user_id, note) VALUES (900002, 2, 'after abort')",
    )
    .expect("insert");
    assert!(!layout_rows(&s.dbs, &names("orders_v2_", 8)).contains_key(&900_002));
    assert_eq!(
        proxy_rows(s.listen).get(&900_002),
        Some(&(2, "after abort".to_string()))
    );
}

/// The admin token of the center in the center-configured tests.
const CENTER_TOKEN: &str = "reshard-center-admin";
/// The namespace the center-configured proxy follows.
const CENTER_NS: &str = "/v1/apps/shop/envs/DEV/clusters/default/namespaces/db";

/// A `furrow control` whose namespace `shop/db` holds the proxy's config (two servers, as
/// [`servers_and_config`]), and a `furrow proxy --config-source` following it with a snapshot file
/// in `dir`; the tables created and `rows` rows in `orders`.
struct CenterSetup {
    dbs: Vec<testkit::MariaDb>,
    _control: ControlCenter,
    proxy: Process,
    cport: u16,
    admin: u16,
    listen: u16,
    dir: tempfile::TempDir,
    _ports: [testkit::PortLease; 4],
}

/// Creates app `shop`, namespace `db` and its `config` item holding `cfg` (a TOML document) on the
/// center at `cport` (not published).
fn seed_namespace(cport: u16, cfg: &str) {
    let api = |method: &str, path: &str, body: Option<serde_json::Value>| {
        api_call(cport, CENTER_TOKEN, method, path, body)
    };
    api("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api(
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "db"})),
    );
    api(
        "PUT",
        &format!("{CENTER_NS}/items/config"),
        Some(json!({"value": {"type": "document", "value": {"format": "toml", "text": cfg}}})),
    );
}

impl CenterSetup {
    fn start(rows: i64) -> CenterSetup {
        let ports = [(); 4].map(|()| testkit::reserve_port().expect("port"));
        let (cport, admin, listen) = (ports[0].port(), ports[1].port(), ports[3].port());
        let (dbs, cfg) = servers_and_config(admin, ports[2].port(), listen);
        let dir = tempfile::tempdir().expect("tempdir");
        let control = ControlCenter::start_with(dir.path(), cport, CENTER_TOKEN, &[]);
        let api = |method: &str, path: &str, body: Option<serde_json::Value>| {
            api_call(cport, CENTER_TOKEN, method, path, body)
        };
        seed_namespace(cport, &cfg);
        api(
            "POST",
            &format!("{CENTER_NS}/publish"),
            Some(json!({"message": "first"})),
        );
        let proxy = Process(Self::spawn(cport, dir.path(), 0));
        wait_until(Duration::from_secs(20), || {
            config_generation(admin) == Some(1)
        });
        create_and_fill(listen, rows);
        CenterSetup {
            dbs,
            _control: control,
            proxy,
            cport,
            admin,
            listen,
            dir,
            _ports: ports,
        }
    }

    /// The proxy process (its log `proxy.log.N`), snapshot file `dir/proxy-snapshot.json`.
    fn spawn(cport: u16, dir: &std::path::Path, n: usize) -> std::process::Child {
        spawn_config_source_proxy(
            &format!(
                "http://127.0.0.1:{cport}/shop/DEV/default/db?instance=p1&snapshot={}",
                dir.join("proxy-snapshot.json").display()
            ),
            CENTER_TOKEN,
            &dir.join(format!("proxy.log.{n}")),
        )
    }

    fn api(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        api_call(self.cport, CENTER_TOKEN, method, path, body)
    }

    /// The namespace's `config` item's text.
    fn item_text(&self) -> String {
        self.api("GET", &format!("{CENTER_NS}/items/config"), None)["value"]["value"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// The same reshard on a proxy configured from the center (`furrow proxy --config-source`): the
/// marks, the cut-over's switch and CONFIRM's rule are published in the namespace's `config` item
/// (comments kept) and the progress file lies next to the proxy's snapshot file. A draft with
/// other unpublished changes refuses the start.
#[test]
fn reshard_center_configured_proxy_under_writes_then_confirm() {
    let c = CenterSetup::start(ROWS);
    let (dbs, admin, listen, dir, nsp) = (&c.dbs, c.admin, c.listen, c.dir.path(), CENTER_NS);
    let api = |method: &str, path: &str, body: Option<serde_json::Value>| c.api(method, path, body);
    let item_text = || c.item_text();

    // Refused while the namespace has a draft change (the proxy's publish would release it).
    api(
        "PUT",
        &format!("{nsp}/items/note"),
        Some(json!({"value": {"type": "string", "value": "half-done"}})),
    );
    let refused = redis_cli(admin, &["RESHARD", "START", "app", "orders", "orders_v2"]);
    assert!(
        refused.contains("the namespace has unpublished changes (note)"),
        "{refused}"
    );
    api("DELETE", &format!("{nsp}/items/note"), None);

    let load = start_load(listen);
    std::thread::sleep(Duration::from_millis(300));
    let started = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "40",
        ],
    );
    assert!(started.contains("reshard of `orders` started"), "{started}");
    let progress = dir.join("proxy-snapshot.json.reshard-state");
    let cut = wait_phase(admin, "CutOver", Duration::from_secs(120));
    println!("{cut}");
    assert!(
        field(&cut, "last verify").contains("with writes paused")
            && field(&cut, "last verify").contains("checksums equal"),
        "{cut}"
    );
    println!("cut-over pause (center): {} ms", pause_ms(&cut));
    let text = item_text();
    assert!(
        text.contains("reshard_to = \"orders_v2\"\nreshard_phase = \"cutover\"")
            && text.contains("# the table being resharded"),
        "{text}"
    );
    let saved = std::fs::read_to_string(&progress).expect("progress file");
    assert!(saved.contains("phase = \"cutover\""), "{saved}");

    std::thread::sleep(Duration::from_millis(800));
    let acked = load.acked.load(Relaxed);
    let model = stop_load(load);
    assert!(acked > 50, "the load did not run: {acked}");
    assert_eq!(
        layout_rows(dbs, &names("orders_v2_", 8)),
        model,
        "new layout"
    );
    assert_eq!(layout_rows(dbs, &names("orders_", 4)), model, "old layout");
    assert_eq!(proxy_rows(listen), model, "reads through the listener");

    assert!(redis_cli(admin, &["RESHARD", "CONFIRM"]).contains("confirming"));
    let done = wait_phase(admin, "Confirmed", Duration::from_secs(20));
    assert!(done.contains("done (confirmed)"), "{done}");
    let text = item_text();
    assert!(!text.contains("reshard_"), "{text}");
    assert!(
        text.contains("# the table being resharded\n[[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_v2_{0..7}\""),
        "{text}"
    );
    assert!(!progress.exists(), "the progress file is left");
    // The namespace's releases: the first, then mark, cut-over and confirm, each alone.
    let diff = api("GET", &format!("{nsp}/diff"), None);
    assert!(
        ["added", "removed", "changed"]
            .iter()
            .all(|k| diff[*k].as_object().is_none_or(|o| o.is_empty())),
        "{diff}"
    );
    mariadb(
        listen,
        "INSERT INTO orders (id, user_id, note) VALUES (5000000, 5, 'after')",
    )
    .expect("insert");
    let mut after = model.clone();
    after.insert(5_000_000, (5, "after".into()));
    assert_eq!(layout_rows(dbs, &names("orders_v2_", 8)), after);
    assert_eq!(layout_rows(dbs, &names("orders_", 4)), model);
}

/// A center-configured proxy killed while a reshard is paused mid-copy: restarted from the center
/// (the marks are in its config), it shows the job as interrupted at the partition and key of the
/// progress file next to its snapshot file; RESUME copies on from there and the cut-over and
/// CONFIRM publish as before.
#[test]
fn reshard_center_configured_proxy_resumes_after_a_kill() {
    let mut c = CenterSetup::start(LARGE / 5);
    let admin = c.admin;
    let started = redis_cli(
        admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "50",
        ],
    );
    assert!(started.contains("started"), "{started}");
    wait_until(Duration::from_secs(60), || {
        field(&status(admin), "rows copied")
            .parse::<i64>()
            .is_ok_and(|r| r >= 1000)
    });
    assert!(redis_cli(admin, &["RESHARD", "PAUSE"]).contains("pausing"));
    let paused = wait_phase(admin, "Paused", Duration::from_secs(10));
    // The copier stops after its batch: wait until the progress file has the status's key.
    let progress = c.dir.path().join("proxy-snapshot.json.reshard-state");
    let mut before = String::new();
    wait_until(Duration::from_secs(10), || {
        let s = status(admin);
        let key = field(&s, "key reached").to_string();
        let saved = std::fs::read_to_string(&progress).unwrap_or_default();
        before = s.clone();
        key != "-" && saved.contains(&format!("after = \"{key}\""))
    });
    assert!(field(&paused, "phase") == "Paused", "{paused}");
    let (rows, key, partition) = (
        field(&before, "rows copied").to_string(),
        field(&before, "key reached").to_string(),
        field(&before, "partition").to_string(),
    );
    let _ = c.proxy.0.kill();
    let _ = c.proxy.0.wait();
    c.proxy = Process(CenterSetup::spawn(c.cport, c.dir.path(), 1));
    wait_until(Duration::from_secs(20), || {
        config_generation(admin).is_some()
    });
    let st = status(admin);
    assert!(
        st.contains("interrupted (the proxy restarted)")
            && field(&st, "rows copied") == rows
            && field(&st, "key reached") == key
            && field(&st, "partition") == partition,
        "before the kill:\n{before}\nafter:\n{st}"
    );
    let resumed = redis_cli(admin, &["RESHARD", "RESUME"]);
    assert!(resumed.contains(&format!("after key {key}")), "{resumed}");
    let cut = wait_phase(admin, "CutOver", Duration::from_secs(120));
    assert!(
        field(&cut, "last verify").contains("checksums equal"),
        "{cut}"
    );
    assert!(redis_cli(admin, &["RESHARD", "CONFIRM"]).contains("confirming"));
    wait_phase(admin, "Confirmed", Duration::from_secs(20));
    let text = c.item_text();
    assert!(
        !text.contains("reshard_") && text.contains("physical = \"orders_v2_{0..7}\""),
        "{text}"
    );
    assert!(!progress.exists());
    let model = initial_model(LARGE / 5);
    assert_eq!(layout_rows(&c.dbs, &names("orders_v2_", 8)), model);
    assert_eq!(proxy_rows(c.listen), model);
}

/// Two proxies over the same servers, each with its own config file: `a` runs the job, `b` is
/// its peer (`PEERS`). `b_env`: the peer's environment (a test failpoint).
struct Fleet {
    dbs: Vec<testkit::MariaDb>,
    a: FurrowProcess,
    a_admin: u16,
    a_listen: u16,
    b: FurrowProcess,
    b_admin: u16,
    b_listen: u16,
}

fn fleet(a_env: &[(&str, &str)], b_env: &[(&str, &str)]) -> Fleet {
    let ports: Vec<u16> = (0..6)
        .map(|_| testkit::reserve_port().expect("port").port())
        .collect();
    let (dbs, cfg_a) = servers_and_config(ports[0], ports[1], ports[2]);
    let a = FurrowProcess::start_env(&cfg_a, ports[0], a_env);
    create_and_fill(ports[2], ROWS);
    let b = FurrowProcess::start_env(
        &config_over(&dbs, ports[3], ports[4], ports[5]),
        ports[3],
        b_env,
    );
    Fleet {
        dbs,
        a,
        a_admin: ports[0],
        a_listen: ports[2],
        b,
        b_admin: ports[3],
        b_listen: ports[5],
    }
}

impl Fleet {
    fn peer(&self) -> String {
        format!("127.0.0.1:{}", self.b_admin)
    }

    fn start(&self) -> String {
        redis_cli(
            self.a_admin,
            &[
                "RESHARD",
                "START",
                "app",
                "orders",
                "orders_v2",
                "BATCH",
                "200",
                "PEERS",
                &self.peer(),
            ],
        )
    }

    /// Waits for the cut-over, resuming after refusals whose cut-over line contains one of
    /// `refusals` (at most `max` of them); returns the status and the refusals' cut-over lines.
    fn cut_over_after(&self, refusals: &[&str], max: usize) -> (String, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut refused = Vec::new();
        loop {
            let st = status(self.a_admin);
            if field(&st, "phase") == "CutOver" {
                return (st, refused);
            }
            if field(&st, "phase") == "Paused" {
                println!("refused:\n{st}");
                let line = field(&st, "cut-over pause");
                assert!(
                    refusals.iter().any(|r| line.contains(r)) && refused.len() < max,
                    "{st}"
                );
                refused.push(line.to_string());
                assert!(redis_cli(self.a_admin, &["RESHARD", "RESUME"]).contains("copying"));
            }
            assert!(Instant::now() < deadline && !st.contains("failed:"), "{st}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Fleet::cut_over_after`] with one kind of refusal; how many there were.
    fn cut_over(&self, refusal: &str, max: usize) -> (String, usize) {
        let (st, refused) = self.cut_over_after(&[refusal], max);
        (st, refused.len())
    }

    /// Both layouts and the reads through both proxies are `model` (ids in `uncertain` left out).
    fn check(&self, model: &Model, uncertain: &BTreeSet<i64>) {
        let known = |m: Model| -> Model {
            m.into_iter()
                .filter(|(id, _)| !uncertain.contains(id))
                .collect()
        };
        let new = known(layout_rows(&self.dbs, &names("orders_v2_", 8)));
        assert_eq!(new.len(), model.len(), "new layout rows");
        assert!(new == *model, "new layout differs from the writers' model");
        assert!(
            known(layout_rows(&self.dbs, &names("orders_", 4))) == *model,
            "old layout differs from the writers' model"
        );
        assert!(
            known(proxy_rows(self.a_listen)) == *model,
            "reads through a"
        );
        assert!(
            known(proxy_rows(self.b_listen)) == *model,
            "reads through b"
        );
    }
}

/// Two proxies write the table during the whole reshard, the job on one with the other as its
/// peer. The peer loses one dual write once its keys are tracked (the `reshard-skip-other`
/// failpoint, on the peer only): an INSERT of a new key, outside the ranges the full pass cut,
/// so only the peer's dirty keys name it; the cut-over must refuse and RESUME repair it (were
/// the peer's keys ignored, the new layout would miss the row). After the cut-over both proxies'
/// config files say `cutover`, both layouts hold every acknowledged write, reads through both
/// proxies agree; CONFIRM writes the new rule into both files.
#[test]
fn reshard_fleet_two_proxies_cut_over_with_peer() {
    let f = fleet(&[], &[("FURROW_TEST_FAILPOINT", "reshard-skip-other")]);
    // The peer's one writer inserts far above the job proxy's writers, in rising order: the key
    // of its lost write is above every range the full pass cut (so no pass over those ranges
    // sees it), and the job proxy's own keys are all below (a proxy's keys outside the ranges
    // are recorded as one span, which must not cover it).
    let load = start_load_on(
        &[
            (f.a_listen, 0, 0),
            (f.a_listen, 1, 0),
            (f.b_listen, 2, 1_000_000),
            (f.a_listen, 3, 0),
        ],
        ROWS,
        false,
    );
    std::thread::sleep(Duration::from_millis(300));
    let started = f.start();
    assert!(started.contains("started"), "{started}");
    let st = status(f.a_admin);
    assert_eq!(field(&st, "peers"), f.peer(), "{st}");
    let (cut, refused) = f.cut_over("checksums differ", 2);
    println!("{cut}");
    assert!(
        refused >= 1,
        "the peer's lost dual write went unnoticed:\n{cut}"
    );
    assert!(
        field(&cut, "cut-over pause").contains("1 peers fenced"),
        "{cut}"
    );
    for p in [&f.a, &f.b] {
        let file = std::fs::read_to_string(p.config_path()).expect("config");
        assert!(file.contains("reshard_phase = \"cutover\""), "{file}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let acked = load.acked.load(Relaxed);
    let model = stop_load(load);
    println!("acknowledged writes: {acked}");
    f.check(&model, &BTreeSet::new());

    assert!(redis_cli(f.a_admin, &["RESHARD", "CONFIRM"]).contains("confirming"));
    wait_phase(f.a_admin, "Confirmed", Duration::from_secs(20));
    for p in [&f.a, &f.b] {
        let file = std::fs::read_to_string(p.config_path()).expect("config");
        assert!(
            !file.contains("reshard_to") && file.contains("physical = \"orders_v2_{0..7}\""),
            "{file}"
        );
    }
    mariadb(
        f.b_listen,
        "INSERT INTO orders (id, user_id, note) VALUES (5000000, 5, 'after')",
    )
    .expect("insert");
    let mut after = model.clone();
    after.insert(5_000_000, (5, "after".into()));
    assert!(layout_rows(&f.dbs, &names("orders_v2_", 8)) == after);
    assert!(proxy_rows(f.a_listen) == after);
}

/// A peer killed before the cut-over: the job stops (paused) naming it, nothing switched; the
/// peer started again, RESUME cuts over with it.
#[test]
fn reshard_fleet_peer_down_refuses_then_resumes() {
    let mut f = fleet(&[], &[]);
    let load = start_load_on(
        &[
            (f.a_listen, 0, 0),
            (f.a_listen, 1, 0),
            (f.b_listen, 2, 0),
            (f.b_listen, 3, 0),
        ],
        ROWS,
        true,
    );
    // Refused at START: a peer that does not answer, and the job proxy itself as a peer.
    let own = format!("127.0.0.1:{}", f.a_admin);
    for (peers, why) in [
        (format!("{},127.0.0.1:1", f.peer()), "peer 127.0.0.1:1: "),
        (own.clone(), "names this proxy's own admin port"),
    ] {
        let e = redis_cli(
            f.a_admin,
            &[
                "RESHARD",
                "START",
                "app",
                "orders",
                "orders_v2",
                "PEERS",
                &peers,
            ],
        );
        assert!(e.contains(why), "{e}");
    }
    let file = std::fs::read_to_string(f.a.config_path()).expect("config");
    assert!(!file.contains("reshard_to"), "{file}");
    let started = f.start();
    assert!(started.contains("started"), "{started}");
    assert!(redis_cli(f.a_admin, &["RESHARD", "PAUSE"]).contains("pausing"));
    wait_phase(f.a_admin, "Paused", Duration::from_secs(10));
    // The peer runs the copy phase from its own file (the job's APPLY).
    let file = std::fs::read_to_string(f.b.config_path()).expect("config");
    assert!(file.contains("reshard_phase = \"copy\""), "{file}");
    f.b.signal(libc::SIGKILL);
    f.b.wait_exit(Duration::from_secs(10));
    assert!(redis_cli(f.a_admin, &["RESHARD", "RESUME"]).contains("copying"));
    let deadline = Instant::now() + Duration::from_secs(45);
    let st = loop {
        let st = status(f.a_admin);
        if field(&st, "phase") == "Paused" {
            break st;
        }
        assert!(
            Instant::now() < deadline && field(&st, "phase") != "CutOver",
            "{st}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("{st}");
    assert!(st.contains(&format!("peer {}", f.peer())), "{st}");
    let file = std::fs::read_to_string(f.a.config_path()).expect("config");
    assert!(file.contains("reshard_phase = \"copy\""), "{file}");

    f.b.kill_and_restart(f.b_admin);
    assert!(redis_cli(f.a_admin, &["RESHARD", "RESUME"]).contains("copying"));
    let (cut, _) = f.cut_over("checksums differ", 2);
    println!("{cut}");
    let file = std::fs::read_to_string(f.b.config_path()).expect("config");
    assert!(file.contains("reshard_phase = \"cutover\""), "{file}");
    std::thread::sleep(Duration::from_millis(300));
    let (model, uncertain) = stop_load_uncertain(load);
    println!("writes cut off by the kill: {uncertain:?}");
    f.check(&model, &uncertain);
}

/// The peer refuses the first fence (the `reshard-refuse-fence` failpoint): the cut-over is
/// refused naming it, nothing switched, the job paused; RESUME tries again. Then the job's proxy is
/// killed while its peer is fenced (the `reshard-die-fenced` failpoint): the peer's writes go on
/// once the lease ends; the restarted job proxy resumes; the peer refuses its first switch (the
/// `reshard-refuse-cutover` failpoint): everyone is switched back and the job paused; RESUME cuts
/// over. Both layouts and the reads through both proxies hold the writers' model.
#[test]
fn reshard_fleet_job_proxy_killed_while_peer_fenced() {
    let mut f = fleet(
        &[("FURROW_TEST_FAILPOINT", "reshard-die-fenced")],
        &[(
            "FURROW_TEST_FAILPOINT",
            "reshard-refuse-fence,reshard-refuse-cutover",
        )],
    );
    let b_acked = Arc::new(AtomicU64::new(0));
    let stop_b = Arc::new(AtomicBool::new(false));
    let load = start_load_on(&[(f.a_listen, 0, 0), (f.a_listen, 1, 0)], ROWS, true);
    let b_writers: Vec<_> = [2, 3]
        .into_iter()
        .map(|w| {
            let (stop, acked, listen) = (stop_b.clone(), b_acked.clone(), f.b_listen);
            std::thread::spawn(move || writer(listen, w, 0, ROWS, false, stop, acked))
        })
        .collect();
    let started = f.start();
    assert!(started.contains("started"), "{started}");
    let refused = wait_phase(f.a_admin, "Paused", Duration::from_secs(45));
    println!("{refused}");
    assert!(
        field(&refused, "cut-over pause").contains(&format!(
            "refused: cannot fence every peer: peer {}",
            f.peer()
        )) && field(&refused, "cut-over pause").contains("reshard-refuse-fence"),
        "{refused}"
    );
    let file = std::fs::read_to_string(f.a.config_path()).expect("config");
    assert!(file.contains("reshard_phase = \"copy\""), "{file}");
    let file = std::fs::read_to_string(f.b.config_path()).expect("config");
    assert!(file.contains("reshard_phase = \"copy\""), "{file}");
    assert!(redis_cli(f.a_admin, &["RESHARD", "RESUME"]).contains("copying"));
    f.a.wait_exit(Duration::from_secs(45));
    // The peer is fenced now (the job died after fencing it): its writers wait, then go on
    // when the lease ends.
    let at_death = b_acked.load(Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while b_acked.load(Relaxed) < at_death + 20 {
        assert!(
            Instant::now() < deadline,
            "the peer's writes did not resume"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(f.b.log().contains("lease ended unrenewed"), "{}", f.b.log());

    f.a.kill_and_restart(f.a_admin);
    let st = status(f.a_admin);
    assert!(st.contains("interrupted"), "{st}");
    assert_eq!(field(&st, "peers"), f.peer(), "{st}");
    assert!(redis_cli(f.a_admin, &["RESHARD", "RESUME"]).contains("copying"));
    // The peer refuses its switch once: everyone goes back to `copy` before writes go on.
    let (cut, refused) = f.cut_over_after(&["checksums differ", "reshard-refuse-cutover"], 4);
    assert_eq!(
        refused
            .iter()
            .filter(|r| r.contains(&format!("refused: peer {}", f.peer())))
            .count(),
        1,
        "{refused:?}"
    );
    println!("{cut}");
    // Killed again after the cut-over: the restarted job proxy fences its peer and switches it
    // again (a peer that missed the switch would otherwise write the old layout first).
    let unfenced = |f: &Fleet| f.b.log().matches("reshard peer: writes go on").count();
    let before = unfenced(&f);
    std::thread::sleep(Duration::from_millis(300));
    f.a.kill_and_restart(f.a_admin);
    // Fenced, switched, unfenced (the job's thread lets go after the switch).
    wait_until(Duration::from_secs(20), || unfenced(&f) > before);
    let st = status(f.a_admin);
    assert!(
        st.contains("interrupted after the cut-over") && !st.contains("could not be switched"),
        "{st}"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop_b.store(true, Relaxed);
    let (mut model, uncertain) = stop_load_uncertain(load);
    for t in b_writers {
        let w = t.join().expect("writer");
        assert!(w.problems.is_empty(), "writer problems: {:#?}", w.problems);
        model.extend(w.model);
    }
    f.check(&model, &uncertain);
}

/// Two proxies following one center namespace (each gets its own admin, metrics and listener
/// address from rule items on its instance id), writers through both during the whole reshard,
/// the job on `p1` with `p2` as its peer: `p2` takes the marks and the cut-over from the
/// releases the job publishes (its `APPLY` waits until it runs them); both layouts and the reads
/// through both proxies hold the writers' model; `CONFIRM` publishes the rule for both.
#[test]
fn reshard_fleet_two_center_configured_proxies() {
    let ports: Vec<u16> = (0..7)
        .map(|_| testkit::reserve_port().expect("port").port())
        .collect();
    let (cport, a_admin, a_listen, b_admin, b_listen) =
        (ports[0], ports[1], ports[3], ports[4], ports[6]);
    let (dbs, cfg) = servers_and_config(a_admin, ports[2], a_listen);
    let dir = tempfile::tempdir().expect("tempdir");
    let _control = ControlCenter::start_with(dir.path(), cport, CENTER_TOKEN, &[]);
    let api = |method: &str, path: &str, body: Option<serde_json::Value>| {
        api_call(cport, CENTER_TOKEN, method, path, body)
    };
    seed_namespace(cport, &cfg);
    // p2's own addresses; p1 keeps the document's.
    for (path, p2, p1) in [
        ("config.proxy.admin", b_admin, a_admin),
        ("config.proxy.metrics", ports[5], ports[2]),
        ("config.listeners.0.address", b_listen, a_listen),
    ] {
        api(
            "PUT",
            &format!("{CENTER_NS}/items/{path}"),
            Some(json!({"value": {"type": "rules", "value": {
                "rules": [{"when": [{"op": "eq", "attr": "instance", "value": "p2"}],
                           "value": format!("127.0.0.1:{p2}")}],
                "default": format!("127.0.0.1:{p1}")}}})),
        );
    }
    api(
        "POST",
        &format!("{CENTER_NS}/publish"),
        Some(json!({"message": "first"})),
    );
    let spawn = |instance: &str| {
        Process(spawn_config_source_proxy(
            &format!(
                "http://127.0.0.1:{cport}/shop/DEV/default/db?instance={instance}&snapshot={}",
                dir.path()
                    .join(format!("{instance}-snapshot.json"))
                    .display()
            ),
            CENTER_TOKEN,
            &dir.path().join(format!("{instance}.log")),
        ))
    };
    let _a = spawn("p1");
    let _b = spawn("p2");
    for admin in [a_admin, b_admin] {
        wait_until(Duration::from_secs(20), || {
            config_generation(admin) == Some(1)
        });
    }
    create_and_fill(a_listen, ROWS);
    let load = start_load_on(
        &[
            (a_listen, 0, 0),
            (a_listen, 1, 0),
            (b_listen, 2, 0),
            (b_listen, 3, 0),
        ],
        ROWS,
        false,
    );
    std::thread::sleep(Duration::from_millis(300));
    let peer = format!("127.0.0.1:{b_admin}");
    let started = redis_cli(
        a_admin,
        &[
            "RESHARD",
            "START",
            "app",
            "orders",
            "orders_v2",
            "BATCH",
            "200",
            "PEERS",
            &peer,
        ],
    );
    assert!(started.contains("started"), "{started}");
    let cut = wait_phase(a_admin, "CutOver", Duration::from_secs(45));
    println!("{cut}");
    assert!(
        field(&cut, "cut-over pause").contains("1 peers fenced"),
        "{cut}"
    );
    let text = api("GET", &format!("{CENTER_NS}/items/config"), None)["value"]["value"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("reshard_phase = \"cutover\""), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    let model = stop_load(load);
    assert!(
        layout_rows(&dbs, &names("orders_v2_", 8)) == model,
        "new layout"
    );
    assert!(
        layout_rows(&dbs, &names("orders_", 4)) == model,
        "old layout"
    );
    assert!(proxy_rows(a_listen) == model, "reads through p1");
    assert!(proxy_rows(b_listen) == model, "reads through p2");
    let log = std::fs::read_to_string(dir.path().join("p2.log")).unwrap_or_default();
    assert!(
        log.contains("reshard peer: writes fenced") && log.contains("reshard peer: writes go on"),
        "{log}"
    );

    assert!(redis_cli(a_admin, &["RESHARD", "CONFIRM"]).contains("confirming"));
    wait_phase(a_admin, "Confirmed", Duration::from_secs(20));
    mariadb(
        b_listen,
        "INSERT INTO orders (id, user_id, note) VALUES (5000000, 5, 'after')",
    )
    .expect("insert");
    let mut after = model.clone();
    after.insert(5_000_000, (5, "after".into()));
    assert!(layout_rows(&dbs, &names("orders_v2_", 8)) == after);
    assert!(layout_rows(&dbs, &names("orders_", 4)) == model);
    assert!(proxy_rows(a_listen) == after);
}
