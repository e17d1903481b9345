//! XA two-phase commit across shards (`xa = true`) against real servers: two MariaDB instances
//! with two shard schemas each (4 shards), the proxy in-process. What the servers counted
//! (`Com_xa_*`), what they hold (`XA RECOVER`, the rows) and what the client was told are checked.
//! The proxy killed between prepare and commit is in the workspace's `tests/xa_recovery.rs` (it
//! needs the `furrow` binary as its own process).

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
