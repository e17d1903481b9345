//! XA two-phase commit across shards (`xa = true`) against real servers: two MariaDB instances
//! with two shard schemas each (4 shards), the proxy in-process. What the servers counted
//! (`Com_xa_*`), what they hold (`XA RECOVER`, the rows) and what the client was told are checked.
//! The proxy killed (SIGKILL) between prepare and commit runs as a process of its own: this test
//! binary started again with only `xa_child_proxy`, killed by the test-only failpoint
//! `FURROW_TEST_FAILPOINT`, then started again to recover.

mod common;
#[path = "common/shard.rs"]
mod shard;

use common::RawClient;
use shard::{Layout, Setup};
use testkit::MariaDb;

/// 4 shards, `orders` hashed on user_id into 8 tables: partition p = user_id % 8 lives on shard
/// p / 2 (shards s0, s1 on server a; s2, s3 on server b); XA on.
fn setup() -> Setup {
    let s = Setup::with(Layout {
        group_a: String::new(),
        b_connect_timeout_ms: 1000,
        group_b: String::new(),
        sharding: "xa = true\nworker_id = 3".into(),
        tables:
            "[[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n\
                 physical = \"orders_{0..7}\"\n\n"
                .into(),
        reference: false,
    });
    s.sql("CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id INT NOT NULL, amount INT NOT NULL)");
    s
}

/// A global status counter of `server` (e.g. `COM_XA_PREPARE`).
fn counter(server: &MariaDb, name: &str) -> u64 {
    server
        .sql_value(&format!(
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = '{name}'"
        ))
        .expect("status")
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

/// `(COM_XA_START, COM_XA_PREPARE, COM_XA_COMMIT, COM_XA_ROLLBACK)` of both servers, summed.
fn xa_counters(s: &Setup) -> [u64; 4] {
    let mut out = [0; 4];
    for srv in &s.servers {
        for (k, n) in [
            "COM_XA_START",
            "COM_XA_PREPARE",
            "COM_XA_COMMIT",
            "COM_XA_ROLLBACK",
        ]
        .iter()
        .enumerate()
        {
            out[k] += counter(srv, n);
        }
    }
    out
}

/// Prepared XA branches on both servers.
fn prepared(s: &Setup) -> usize {
    s.servers
        .iter()
        .map(|srv| srv.sql("XA RECOVER").expect("xa recover").len())
        .sum()
}

/// Rows of `orders` on every shard, by partition.
fn stored(s: &Setup) -> Vec<u64> {
    (0..8)
        .map(|p| s.count_on(p / 2, &format!("orders_{p}"), ""))
        .collect()
}

/// Decision rows on every shard.
fn decisions(s: &Setup) -> u64 {
    (0..4).map(|i| s.count_on(i, "furrow_xa_log", "")).sum()
}

/// Sends a COM_QUERY and reads one reply packet.
fn query(c: &mut RawClient, sql: &str) -> bytes::Bytes {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    c.send(0, &p);
    c.read().payload
}

fn assert_ok(p: &[u8], what: &str) {
    assert_eq!(
        p.first(),
        Some(&0),
        "{what}: OK expected: {:?}",
        String::from_utf8_lossy(p)
    );
}

/// An ERR packet's code and message.
fn err_of(p: &[u8]) -> (u16, String) {
    assert_eq!(
        p.first(),
        Some(&0xff),
        "ERR expected: {:?}",
        String::from_utf8_lossy(p)
    );
    let code = u16::from_le_bytes([p[1], p[2]]);
    (code, String::from_utf8_lossy(&p[9..]).into_owned())
}

#[test]
fn xa_commits_across_shards_and_a_single_shard_stays_one_phase() {
    let s = setup();
    // Recovery at start-up created the decision log on every shard (count_on fails otherwise).
    assert_eq!(decisions(&s), 0);

    // One shard (partitions 0 and 1 are both on s0): plain BEGIN/COMMIT, no XA statement.
    let before = xa_counters(&s);
    s.sql(
        "BEGIN; INSERT INTO orders (id, user_id, amount) VALUES (1, 0, 10); INSERT INTO orders (id, user_id, amount) VALUES (2, 1, 20); COMMIT",
    );
    assert_eq!(
        xa_counters(&s),
        before,
        "a single-shard transaction uses no XA"
    );
    assert_eq!(stored(&s), vec![1, 1, 0, 0, 0, 0, 0, 0]);

    // Three shards (s1 first: the coordinator; s2 and s3 on server b: XA branches).
    s.sql(
        "BEGIN; INSERT INTO orders (id, user_id, amount) VALUES (3, 2, 30); INSERT INTO orders (id, user_id, amount) VALUES (4, 5, 40); \
         INSERT INTO orders (id, user_id, amount) VALUES (5, 7, 50); COMMIT",
    );
    let after = xa_counters(&s);
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2],
            after[3] - before[3]
        ],
        [2, 2, 2, 0],
        "two branches started, prepared and committed"
    );
    assert_eq!(stored(&s), vec![1, 1, 1, 0, 0, 1, 0, 1]);
    assert_eq!(
        decisions(&s),
        0,
        "the decision row is deleted once every branch committed"
    );
    assert_eq!(prepared(&s), 0);

    // A scatter write in a transaction (every shard joins at once), then ROLLBACK.
    let before = xa_counters(&s);
    s.sql("BEGIN; UPDATE orders SET amount = amount + 1; ROLLBACK");
    let after = xa_counters(&s);
    assert_eq!(
        after[0] - before[0],
        3,
        "three branches besides the coordinator"
    );
    assert_eq!(after[3] - before[3], 3, "and all three rolled back");
    assert_eq!(
        s.sql("SELECT SUM(amount) FROM orders"),
        vec![vec![Some("150".to_string())]]
    );
    // The same committed: every shard sees it.
    s.sql("BEGIN; UPDATE orders SET amount = amount + 1; COMMIT");
    assert_eq!(
        s.sql("SELECT SUM(amount) FROM orders"),
        vec![vec![Some("155".to_string())]]
    );
    // autocommit = 0 takes the same path.
    s.sql("SET autocommit = 0; DELETE FROM orders WHERE user_id IN (0, 7); COMMIT");
    assert_eq!(stored(&s), vec![0, 1, 1, 0, 0, 1, 0, 0]);
    assert_eq!(prepared(&s), 0);
    assert_eq!(decisions(&s), 0);
}

#[test]
fn a_branch_that_fails_rolls_back_every_shard() {
    let s = setup();

    // A branch whose connection dies before the commit (killed on its server).
    let mut c = RawClient::login(s.proxy.addr, "app", None);
    assert_ok(&query(&mut c, "BEGIN"), "BEGIN");
    assert_ok(
        &query(
            &mut c,
            "INSERT INTO orders (id, user_id, amount) VALUES (1, 1, 10)",
        ),
        "s0",
    );
    assert_ok(
        &query(
            &mut c,
            "INSERT INTO orders (id, user_id, amount) VALUES (2, 5, 20)",
        ),
        "s2",
    );
    let b = &s.servers[1];
    let thread = b
        .sql_value("SELECT trx_mysql_thread_id FROM information_schema.innodb_trx")
        .expect("trx")
        .expect("the branch's transaction on server b");
    b.sql(&format!("KILL {thread}")).expect("kill");
    let (code, msg) = err_of(&query(&mut c, "COMMIT"));
    assert_eq!(code, 1402, "{msg}");
    assert!(msg.contains("rolled back on every shard"), "{msg}");
    assert!(msg.contains("shard s2"), "{msg}");
    assert_eq!(
        stored(&s),
        vec![0; 8],
        "the coordinator's row is rolled back too"
    );
    assert_eq!(prepared(&s), 0);

    // A failure after every branch prepared: the coordinator cannot log the decision (its log
    // table was dropped under it), so the prepared branches are rolled back.
    let before = xa_counters(&s);
    assert_ok(&query(&mut c, "BEGIN"), "BEGIN");
    assert_ok(
        &query(
            &mut c,
            "INSERT INTO orders (id, user_id, amount) VALUES (3, 1, 30)",
        ),
        "s0",
    );
    assert_ok(
        &query(
            &mut c,
            "INSERT INTO orders (id, user_id, amount) VALUES (4, 3, 40)",
        ),
        "s1",
    );
    assert_ok(
        &query(
            &mut c,
            "INSERT INTO orders (id, user_id, amount) VALUES (5, 5, 50)",
        ),
        "s2",
    );
    s.servers[0]
        .sql("DROP TABLE app_0.furrow_xa_log")
        .expect("drop the log");
    let (code, msg) = err_of(&query(&mut c, "COMMIT"));
    assert_eq!(code, 1402, "{msg}");
    assert!(
        msg.contains("coordinator shard s0 refused the decision log INSERT"),
        "{msg}"
    );
    let after = xa_counters(&s);
    assert_eq!(after[1] - before[1], 2, "both branches were prepared");
    assert_eq!(after[3] - before[3], 2, "and rolled back");
    assert_eq!(stored(&s), vec![0; 8]);
    assert_eq!(prepared(&s), 0);

    // The session goes on: a transaction without s0 as coordinator commits.
    assert_ok(&query(&mut c, "BEGIN"), "BEGIN");
    assert_ok(
        &query(
            &mut c,
            "INSERT INTO orders (id, user_id, amount) VALUES (6, 3, 60)",
        ),
        "s1",
    );
    assert_ok(
        &query(
            &mut c,
            "INSERT INTO orders (id, user_id, amount) VALUES (7, 6, 70)",
        ),
        "s3",
    );
    assert_ok(&query(&mut c, "COMMIT"), "COMMIT");
    assert_eq!(stored(&s), vec![0, 0, 0, 1, 0, 0, 1, 0]);
}

#[test]
fn client_xa_statements_are_refused_on_the_sharded_listener() {
    let s = setup();
    for q in [
        "XA START 'client1'",
        "xa recover",
        "/* note */ XA COMMIT 'client1'",
    ] {
        let e = s.sql_err(q);
        assert!(
            e.contains("1235") && e.contains("XA statements"),
            "{q}: {e}"
        );
    }
    assert_eq!(prepared(&s), 0);
}

/// The proxy as a process of its own, for the kill tests: this test binary run again with only
/// [`xa_child_proxy`] and the servers' addresses in its environment (`XA_CHILD_A`, `XA_CHILD_B`),
/// writing its port to `XA_CHILD_PORT_FILE` once it serves.
fn spawn_proxy(
    s: &[MariaDb],
    port_file: &std::path::Path,
    point: Option<&str>,
) -> std::process::Child {
    let _ = std::fs::remove_file(port_file);
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "xa_child_proxy",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("XA_CHILD_A", s[0].addr().to_string())
    .env("XA_CHILD_B", s[1].addr().to_string())
    .env("XA_CHILD_PORT_FILE", port_file)
    .env_remove("FURROW_TEST_FAILPOINT")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    if let Some(p) = point {
        cmd.env("FURROW_TEST_FAILPOINT", p);
    }
    let mut child = cmd.spawn().expect("spawn the proxy process");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(port_file).is_ok_and(|p| p.ends_with('\n')) {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the proxy process exited early"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy process did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// Not a test of its own: the proxy process of [`killed_at`] (does nothing unless spawned by it).
#[test]
fn xa_child_proxy() {
    let (Ok(a), Ok(b), Ok(file)) = (
        std::env::var("XA_CHILD_A"),
        std::env::var("XA_CHILD_B"),
        std::env::var("XA_CHILD_PORT_FILE"),
    ) else {
        return;
    };
    let layout = Layout {
        group_a: String::new(),
        b_connect_timeout_ms: 1000,
        group_b: String::new(),
        // The background resolver looks every 0.5 s and ends branches seen prepared for 4 s.
        sharding:
            "xa = true\nworker_id = 5\nxa_resolve_interval_ms = 500\nxa_resolve_grace_ms = 4000"
                .into(),
        tables:
            "[[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n\
                 physical = \"orders_{0..7}\"\n\n"
                .into(),
        reference: false,
    };
    let (a, b) = (a.parse().expect("a"), b.parse().expect("b"));
    let proxy = common::Proxy::start(move |port| shard::config(port, a, b, &layout));
    // Recovery runs before the listener accepts: once a statement is answered, it is done.
    proxy.sql("app", "SELECT 1").expect("the proxy serves");
    std::fs::write(&file, format!("{}\n", proxy.addr.port())).expect("port file");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Committed rows of the transaction of [`killed_at`]: user 1 on s0 (the coordinator), users 5
/// and 7 on s2 and s3.
fn txn_rows(s: &[MariaDb]) -> [u64; 3] {
    let count = |srv: &MariaDb, q: &str| -> u64 {
        srv.sql_value(q)
            .expect("count")
            .and_then(|v| v.parse().ok())
            .expect("a number")
    };
    [
        count(&s[0], "SELECT COUNT(*) FROM app_0.orders_1"),
        count(&s[1], "SELECT COUNT(*) FROM app_2.orders_5"),
        count(&s[1], "SELECT COUNT(*) FROM app_3.orders_7"),
    ]
}

/// Kills the proxy process (SIGKILL, by the test-only failpoint `point`) inside a commit over
/// three shards, starts it again, and checks that every branch ended as `committed` says.
fn killed_at(point: &str, committed: bool) {
    use std::os::unix::process::ExitStatusExt;
    let servers = MariaDb::start_many(2, testkit::MariaDbConfig::new()).expect("two servers");
    servers[0]
        .sql("CREATE DATABASE app_0; CREATE DATABASE app_1")
        .expect("schemas a");
    servers[1]
        .sql("CREATE DATABASE app_2; CREATE DATABASE app_3")
        .expect("schemas b");
    let port_file = std::env::temp_dir().join(format!(
        "furrow-xa-{}-{}.port",
        std::process::id(),
        servers[0].port()
    ));
    let addr = |f: &std::path::Path| -> std::net::SocketAddr {
        let p: u16 = std::fs::read_to_string(f)
            .expect("port")
            .trim()
            .parse()
            .expect("port number");
        std::net::SocketAddr::from(([127, 0, 0, 1], p))
    };
    let sql = |at, q: &str| testkit::sql_at(at, "app", common::APP_SECRET, None, q);
    let prepared = |s: &[MariaDb]| -> usize {
        s.iter()
            .map(|srv| srv.sql("XA RECOVER").expect("xa recover").len())
            .sum()
    };
    let decisions = |s: &[MariaDb]| -> Option<String> {
        s[0].sql_value("SELECT COUNT(*) FROM app_0.furrow_xa_log")
            .expect("log")
    };

    let mut proxy = spawn_proxy(&servers, &port_file, Some(point));
    let at = addr(&port_file);
    sql(
        at,
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id INT NOT NULL, amount INT NOT NULL)",
    )
    .expect("create");
    let r = sql(
        at,
        "BEGIN; INSERT INTO orders (id, user_id, amount) VALUES (1, 1, 10); \
         INSERT INTO orders (id, user_id, amount) VALUES (2, 5, 20); \
         INSERT INTO orders (id, user_id, amount) VALUES (3, 7, 30); COMMIT",
    );
    assert!(r.is_err(), "the proxy died during COMMIT: {r:?}");
    let st = proxy.wait().expect("wait");
    assert_eq!(st.signal(), Some(9), "killed by the failpoint: {st}");

    // The proxy is gone, both branches on server b prepared; the decision row exists only when
    // the kill came after the coordinator's COMMIT.
    assert_eq!(prepared(&servers), 2, "two branches left prepared");
    let want = u64::from(committed);
    assert_eq!(decisions(&servers), Some(want.to_string()));
    assert_eq!(txn_rows(&servers), [want, 0, 0]);

    // Started again: recovery resolves both branches the way the decision says.
    let mut proxy = spawn_proxy(&servers, &port_file, None);
    let at = addr(&port_file);
    assert_eq!(prepared(&servers), 0, "recovery resolved every branch");
    assert_eq!(txn_rows(&servers), [want, want, want]);
    assert_eq!(
        decisions(&servers),
        Some("0".into()),
        "the decision is forgotten once applied"
    );
    // The proxy serves on, with XA.
    sql(
        at,
        "BEGIN; INSERT INTO orders (id, user_id, amount) VALUES (4, 2, 40); \
         INSERT INTO orders (id, user_id, amount) VALUES (5, 6, 50); COMMIT",
    )
    .expect("a new transaction");
    assert_eq!(
        sql(at, "SELECT COUNT(*) FROM orders").expect("count"),
        vec![vec![Some((3 * want + 2).to_string())]]
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = std::fs::remove_file(&port_file);
}

#[test]
fn proxy_killed_after_prepare_before_the_decision_rolls_back_every_branch() {
    killed_at("xa-before-decision", false);
}

#[test]
fn proxy_killed_after_the_decision_commits_every_branch() {
    killed_at("xa-after-decision", true);
}

/// Leaves two branches prepared by the test-only failpoint `point` (fired once, the proxy keeps
/// running) inside a commit over three shards, then checks that the background resolver ends both
/// the way `committed` says while the same proxy process keeps serving, XA included.
fn resolved_while_serving(point: &str, committed: bool, told: &str) {
    let servers = MariaDb::start_many(2, testkit::MariaDbConfig::new()).expect("two servers");
    servers[0]
        .sql("CREATE DATABASE app_0; CREATE DATABASE app_1")
        .expect("schemas a");
    servers[1]
        .sql("CREATE DATABASE app_2; CREATE DATABASE app_3")
        .expect("schemas b");
    let port_file = std::env::temp_dir().join(format!(
        "furrow-xa-{}-{}.port",
        std::process::id(),
        servers[0].port()
    ));
    let mut proxy = spawn_proxy(&servers, &port_file, Some(point));
    let p: u16 = std::fs::read_to_string(&port_file)
        .expect("port")
        .trim()
        .parse()
        .expect("port number");
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let sql = |q: &str| testkit::sql_at(at, "app", common::APP_SECRET, None, q);
    let prepared = |s: &[MariaDb]| -> usize {
        s.iter()
            .map(|srv| srv.sql("XA RECOVER").expect("xa recover").len())
            .sum()
    };
    let decisions = |s: &[MariaDb]| -> Option<String> {
        s[0].sql_value("SELECT COUNT(*) FROM app_0.furrow_xa_log")
            .expect("log")
    };
    sql("CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id INT NOT NULL, amount INT NOT NULL)")
        .expect("create");
    let e = sql(
        "BEGIN; INSERT INTO orders (id, user_id, amount) VALUES (1, 1, 10); \
         INSERT INTO orders (id, user_id, amount) VALUES (2, 5, 20); \
         INSERT INTO orders (id, user_id, amount) VALUES (3, 7, 30); COMMIT",
    )
    .expect_err("the failpoint fails the COMMIT")
    .to_string();
    assert!(e.contains("1180") && e.contains(told), "{e}");
    // Both branches on server b are left prepared (the grace is 4 s), the coordinator's part is
    // as the decision says.
    let want = u64::from(committed);
    assert_eq!(prepared(&servers), 2, "two branches left prepared");
    assert_eq!(txn_rows(&servers), [want, 0, 0]);

    // The proxy serves on, XA transactions included (on other rows: the prepared branches hold
    // their row locks until they end).
    sql(
        "BEGIN; INSERT INTO orders (id, user_id, amount) VALUES (4, 2, 40); \
         INSERT INTO orders (id, user_id, amount) VALUES (5, 6, 50); COMMIT",
    )
    .expect("a new XA transaction while branches are prepared");

    // The resolver ends both branches as the decision says, and forgets the decision.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while prepared(&servers) > 0 || decisions(&servers) != Some("0".into()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the resolver did not end the branches: {} prepared, {:?} decision rows",
            prepared(&servers),
            decisions(&servers)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(txn_rows(&servers), [want, want, want]);
    assert!(
        proxy.try_wait().expect("wait").is_none(),
        "the same proxy process resolved them"
    );
    assert_eq!(
        sql("SELECT COUNT(*) FROM orders").expect("count"),
        vec![vec![Some((3 * want + 2).to_string())]]
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = std::fs::remove_file(&port_file);
}

#[test]
fn a_branch_whose_xa_commit_failed_is_committed_by_the_resolver() {
    resolved_while_serving("xa-keep-prepared", true, "XA COMMIT failed on shards s2");
}

#[test]
fn branches_of_a_coordinator_lost_at_commit_are_rolled_back_by_the_resolver() {
    resolved_while_serving("xa-lose-decision", false, "outcome unknown");
}
