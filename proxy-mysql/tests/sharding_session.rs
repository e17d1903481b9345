//! The session side of the sharded listener against real servers (two MariaDB instances with two
//! schemas each, 4 shards), with real clients (the `mariadb` CLI, PyMySQL, mysqlclient) and a raw
//! protocol client: `autocommit = 0` as an implicit transaction, multi-statements, `DROP TABLE a,
//! b`, `USE` and `CREATE DATABASE`, and the ops features (rules, limits, audit and slow logs,
//! circuit breaking) on a sharded listener.

mod common;
#[path = "common/shard.rs"]
mod shard;

use std::time::Duration;

use common::{RawClient, audit_log_with, line_with, python, wait_until};
use shard::{Layout, Setup, config};
use testkit::{MariaDb, MariaDbConfig};

const AUTOCOMMIT: u16 = 0x0002;
const IN_TRANS: u16 = 0x0001;
const MORE_RESULTS: u16 = 0x0008;

/// The sharded layout: 4 shards (`group_extra` goes into `shard_a`, the listener's group; server
/// b's group breaks its circuit after 2 failures); `orders` hashed on user_id into 8 tables,
/// `countries` broadcast.
fn layout(group_extra: &str) -> Layout {
    Layout {
        group_a: group_extra.into(),
        b_connect_timeout_ms: 1000,
        group_b: "circuit_break_after = 2\ncircuit_open_ms = 60000".into(),
        sharding: "broadcast = [\"countries\"]".into(),
        tables:
            "[[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n\
                 physical = \"orders_{0..7}\"\n\n"
                .into(),
        reference: false,
    }
}

impl Setup {
    /// The setup with table `orders` created through the proxy.
    fn start(group_extra: &str) -> Setup {
        let s = Setup::with(layout(group_extra));
        s.sql(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id INT NOT NULL, \
             amount DECIMAL(10,2) NOT NULL, status VARCHAR(10) NOT NULL)",
        );
        s
    }

    /// Rows of `orders` stored on the shards (read on the servers directly).
    fn stored_orders(&self) -> u64 {
        (0..8)
            .map(|p| self.count_on(p / 2, &format!("orders_{p}"), ""))
            .sum()
    }

    fn python(&self, script: &str) -> String {
        python(script, self.proxy.addr.port()).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Sends a COM_QUERY and reads one reply packet.
fn query(c: &mut RawClient, sql: &str) -> bytes::Bytes {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    c.send(0, &p);
    c.read().payload
}

/// The status flags of an OK packet with one-byte affected rows and insert id.
fn ok_status(p: &[u8]) -> u16 {
    assert_eq!(
        p.first(),
        Some(&0),
        "OK expected: {:?}",
        String::from_utf8_lossy(p)
    );
    u16::from_le_bytes([p[3], p[4]])
}

#[test]
fn autocommit_off_is_an_implicit_transaction() {
    let s = Setup::start("");

    // The server's status flags, on a raw connection.
    let mut c = RawClient::login(s.proxy.addr, "app", None);
    let st = ok_status(&query(&mut c, "SET autocommit = 0"));
    assert_eq!(st & (AUTOCOMMIT | IN_TRANS), 0, "{st:#x}");
    let st = ok_status(&query(
        &mut c,
        "INSERT INTO orders (id, user_id, amount, status) VALUES (1, 1, 1.00, 'a'), (2, 2, 2.00, 'b'), (3, 3, 3.00, 'c')",
    ));
    assert_eq!(st & (AUTOCOMMIT | IN_TRANS), IN_TRANS, "{st:#x}");
    assert_eq!(s.stored_orders(), 0, "not committed yet");
    let st = ok_status(&query(&mut c, "ROLLBACK"));
    assert_eq!(st & (AUTOCOMMIT | IN_TRANS), 0, "{st:#x}");
    assert_eq!(s.stored_orders(), 0, "rolled back on every shard");
    // The next statement opens the next transaction; COMMIT ends it.
    ok_status(&query(
        &mut c,
        "INSERT INTO orders (id, user_id, amount, status) VALUES (1, 1, 1.00, 'a'), (2, 2, 2.00, 'b'), (3, 3, 3.00, 'c')",
    ));
    let st = ok_status(&query(&mut c, "COMMIT"));
    assert_eq!(st & (AUTOCOMMIT | IN_TRANS), 0, "{st:#x}");
    assert_eq!(s.stored_orders(), 3);
    // SET autocommit = 1 commits the open transaction.
    ok_status(&query(&mut c, "DELETE FROM orders WHERE user_id IN (1, 2)"));
    assert_eq!(s.stored_orders(), 3);
    let st = ok_status(&query(&mut c, "SET autocommit = 1"));
    assert_eq!(st & (AUTOCOMMIT | IN_TRANS), AUTOCOMMIT, "{st:#x}");
    assert_eq!(s.stored_orders(), 1, "committed by SET autocommit = 1");
    // Back in autocommit mode: every statement commits.
    ok_status(&query(
        &mut c,
        "INSERT INTO orders (id, user_id, amount, status) VALUES (4, 4, 4.00, 'd')",
    ));
    assert_eq!(s.stored_orders(), 2);
    // The other spellings.
    for set in [
        "SET autocommit=OFF",
        "SET @@autocommit = 0",
        "SET SESSION autocommit = 0",
        "set @@session.autocommit=0",
    ] {
        let st = ok_status(&query(&mut c, set));
        assert_eq!(st & AUTOCOMMIT, 0, "{set}: {st:#x}");
        let st = ok_status(&query(&mut c, "SET autocommit = ON"));
        assert_eq!(st & AUTOCOMMIT, AUTOCOMMIT, "{set}: {st:#x}");
    }
    drop(c);

    // The mariadb CLI (one statement per packet), across shards.
    let out = s.sql(
        "SET autocommit = 0; INSERT INTO orders (id, user_id, amount, status) VALUES (5, 5, 5.00, 'e'), (6, 6, 6.00, 'f'); \
         ROLLBACK; SELECT COUNT(*) FROM orders",
    );
    assert_eq!(out, vec![vec![Some("2".to_string())]]);
    s.sql("SET autocommit = 0; INSERT INTO orders (id, user_id, amount, status) VALUES (5, 5, 5.00, 'e'); COMMIT");
    assert_eq!(s.stored_orders(), 3);
    // Without COMMIT, a disconnect rolls back.
    s.sql("SET autocommit = 0; INSERT INTO orders (id, user_id, amount, status) VALUES (6, 6, 6.00, 'f')");
    assert_eq!(s.stored_orders(), 3);

    // mysqlclient's default connect sends SET autocommit=0 (autocommit off).
    let out = s.python(
        r#"
import os, MySQLdb
c = MySQLdb.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"], database="app")
print("autocommit", c.get_autocommit())
cur = c.cursor()
cur.execute("INSERT INTO orders (id, user_id, amount, status) VALUES (%s, %s, %s, %s)", (7, 7, "7.00", "it's"))
cur.execute("INSERT INTO orders (id, user_id, amount, status) VALUES (%s, %s, %s, %s)", (8, 8, "8.00", "a\\b"))
c.rollback()
cur.execute("SELECT COUNT(*) FROM orders")
print("after rollback", cur.fetchone()[0])
cur.execute("INSERT INTO orders (id, user_id, amount, status) VALUES (%s, %s, %s, %s)", (7, 7, "7.00", "it's"))
cur.execute("INSERT INTO orders (id, user_id, amount, status) VALUES (%s, %s, %s, %s)", (8, 8, "8.00", "a\\b"))
c.commit()
cur.execute("SELECT status FROM orders WHERE user_id IN (7, 8) ORDER BY user_id")
print("after commit", [r[0] for r in cur.fetchall()])
c.close()
"#,
    );
    assert!(out.contains("autocommit False"), "{out}");
    assert!(out.contains("after rollback 3"), "{out}");
    assert!(out.contains(r#"after commit ["it's", 'a\\b']"#), "{out}");
    assert_eq!(s.stored_orders(), 5);

    // PyMySQL with autocommit off (it reads the status flags to decide what to send).
    let out = s.python(
        r#"
import os, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"], autocommit=False)
print("autocommit", c.get_autocommit())
cur = c.cursor()
cur.execute("DELETE FROM orders")
c.rollback()
cur.execute("SELECT COUNT(*) FROM orders")
print("count", cur.fetchone()[0])
c.close()
"#,
    );
    assert!(out.contains("autocommit False"), "{out}");
    assert!(out.contains("count 5"), "{out}");
    assert_eq!(s.stored_orders(), 5);

    // DDL commits the open transaction (as on the server).
    s.sql(
        "SET autocommit = 0; INSERT INTO orders (id, user_id, amount, status) VALUES (9, 9, 9.00, 'g'); \
         CREATE TABLE notes (id INT PRIMARY KEY); ROLLBACK",
    );
    assert_eq!(s.stored_orders(), 6);
    // A SET of autocommit with other variables is refused rather than half applied.
    let e = s.sql_err("SET autocommit = 0, sql_mode = 'ANSI'");
    assert!(e.contains("1235"), "{e}");
}

#[test]
fn multi_statements_drop_of_several_tables_use_and_create_database() {
    let s = Setup::start("");
    s.sql("CREATE TABLE countries (code CHAR(2) PRIMARY KEY, name VARCHAR(20))");
    s.sql("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)");

    // Multi-statements: in order, each planned on its own, results in order.
    let out = s.python(
        r#"
import os, pymysql
from pymysql.constants import CLIENT
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"], autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
cur.execute("INSERT INTO orders (id, user_id, amount, status) VALUES (1, 1, 1.00, 'a;b'), (2, 2, 2.00, 'x'); SELECT 'one;' AS a /* ; */; SELECT user_id, status FROM orders ORDER BY user_id; SELECT COUNT(*) FROM orders")
sets = [cur.rowcount]
while cur.nextset():
    sets.append(cur.fetchall())
print("sets", sets)
try:
    cur.execute("INSERT INTO orders (id, user_id, amount, status) VALUES (3, 3, 3.00, 'c'); SELECT * FROM nope; INSERT INTO orders (id, user_id, amount, status) VALUES (4, 4, 4.00, 'd')")
    while cur.nextset():
        pass
except pymysql.err.MySQLError as e:
    print("error", e.args[0])
cur.execute("SELECT COUNT(*) FROM orders")
print("count", cur.fetchone()[0])
c.close()
"#,
    );
    assert!(
        out.contains("sets [2, (('one;',),), ((1, 'a;b'), (2, 'x')), ((2,),)]"),
        "{out}"
    );
    assert!(out.contains("error 1146"), "{out}");
    assert!(
        out.contains("count 3"),
        "the statement after the error did not run: {out}"
    );

    // mysqlclient enables multi-statements by default.
    let out = s.python(
        r#"
import os, MySQLdb
c = MySQLdb.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"], autocommit=True)
cur = c.cursor()
cur.execute("SELECT 1; SELECT user_id FROM orders WHERE user_id = 3; SELECT 'x'")
out = [cur.fetchall()]
while cur.nextset():
    out.append(cur.fetchall())
print("sets", out)
"#,
    );
    assert!(out.contains("sets [((1,),), ((3,),), (('x',),)]"), "{out}");

    // The flags and sequence ids on the wire; refused when the client did not enable them.
    let mut c = RawClient::login(s.proxy.addr, "app", None);
    let p = query(&mut c, "SELECT 1; SELECT 2");
    assert_eq!(p.first(), Some(&0xFF), "{p:?}");
    assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1064);
    // COM_SET_OPTION: multi-statements on.
    c.send(0, &[0x1B, 0, 0]);
    assert_eq!(c.read().payload.first(), Some(&0xFE));
    c.send(0, b"\x03DELETE FROM orders WHERE user_id = 3; SELECT 7");
    let ok = c.read();
    assert_eq!(ok.seq, 1);
    let st = ok_status(&ok.payload);
    assert_eq!(st & MORE_RESULTS, MORE_RESULTS, "{st:#x}");
    let mut seqs = vec![];
    let mut last = bytes::Bytes::new();
    for _ in 0..5 {
        let p = c.read();
        seqs.push(p.seq);
        last = p.payload;
    }
    assert_eq!(
        seqs,
        vec![2, 3, 4, 5, 6],
        "column count, definition, EOF, row, EOF"
    );
    assert_eq!(last.first(), Some(&0xFE));
    assert_eq!(u16::from_le_bytes([last[3], last[4]]) & MORE_RESULTS, 0);
    drop(c);

    // DROP TABLE a, b: each table's DROP planned on its own (sharded, unsharded, broadcast).
    s.sql("DROP TABLE orders, notes, countries");
    for shard in 0..4usize {
        let n = s.servers[shard / 2]
            .sql_value(&format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app_{shard}'"
            ))
            .expect("tables")
            .unwrap_or_default();
        assert_eq!(n, "0", "tables left on s{shard}");
    }
    let e = s.sql_err("DROP TABLE orders, notes");
    assert!(e.contains("1051"), "{e}");
    s.sql("DROP TABLE IF EXISTS orders, notes");

    // USE: the logical database (the sharding section's name) only.
    s.sql("USE app");
    let e = s.sql_err("USE app_0");
    assert!(
        e.contains("1049") && e.contains("Unknown database 'app_0'"),
        "{e}"
    );
    let out = s.python(
        r#"
import os, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"])
c.select_db("app")
try:
    c.select_db("nope")
except pymysql.err.MySQLError as e:
    print("error", e.args[0])
"#,
    );
    assert!(out.contains("error 1049"), "{out}");
    // CREATE DATABASE is refused with a clear error (nothing is created anywhere).
    let e = s.sql_err("CREATE DATABASE other");
    assert!(e.contains("1235") && e.contains("DATABASE"), "{e}");
    let e = s.sql_err("DROP SCHEMA IF EXISTS app_1");
    assert!(e.contains("1235"), "{e}");
    assert_eq!(
        s.servers[0]
            .sql_value("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name IN ('other', 'app_1')")
            .expect("schemata")
            .unwrap_or_default(),
        "1"
    );
}

#[test]
fn ops_features_apply_on_the_sharded_listener() {
    let dir = std::env::temp_dir().join(format!("furrow-shardsess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let audit = dir.join("audit.log").to_string_lossy().into_owned();
    let extra = format!(
        "slow_query_ms = 300\naudit_log = \"{audit}\"\n\
         [[mysql_groups.shard_a.rules]]\nmatch = \"DELETE FROM *\"\naction = \"deny\"\nmessage = \"use the archive job\"\n\
         [[mysql_groups.shard_a.rules]]\nmatch = \"SELECT ?, ?, ?\"\naction = \"limit\"\nqps = 2\nper = \"user\"\n\
         [[mysql_groups.shard_a.rules]]\nmatch = \"SELECT SLEEP (?)\"\naction = \"limit\"\nconcurrency = 1\n"
    );
    let mut s = Setup::start(&extra);
    let port = s.proxy.addr.port();

    // Deny rule.
    let e = s.sql_err("DELETE FROM orders WHERE user_id = 1");
    assert!(
        e.contains("1142") && e.contains("use the archive job"),
        "{e}"
    );
    // Rate limit.
    let e = s.sql_err(&"SELECT 1, 2, 3; ".repeat(12));
    assert!(e.contains("1226"), "{e}");
    // Concurrency limit.
    let slow = std::thread::spawn(move || common::cli(port, "app", "SELECT SLEEP(1.2)"));
    wait_until("first sleep running", Duration::from_secs(5), || {
        s.servers[0]
            .sql_value(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(1.2)'",
            )
            .ok()
            .flatten()
            .as_deref()
            == Some("1")
    });
    let e = common::cli(port, "app", "SELECT SLEEP(0.1)").expect_err("concurrency");
    assert!(e.contains("1226"), "{e}");
    slow.join().expect("join").expect("the first sleep runs");
    // Slow log.
    let (slow_log, _) = proxy_mysql::slow_log(&s.proxy.shared, 100);
    assert!(
        slow_log.iter().any(|e| e.sql.contains("SLEEP(1.2)")),
        "{slow_log:?}"
    );
    // Audit log: refused and run statements.
    s.sql("INSERT INTO orders (id, user_id, amount, status) VALUES (1, 1, 1.00, 'a')");
    let text = audit_log_with(&audit, &["DELETE FROM orders", "VALUES (1, 1, 1.00"]);
    let line = line_with(&text, "DELETE FROM");
    assert!(
        line.contains("\"error\":1142") && line.contains("\"user\":\"app\""),
        "{line}"
    );
    let line = line_with(&text, "INSERT INTO");
    assert!(line.contains("\"rows\":1"), "{line}");

    // Circuit breaking: with server b down, its shards fail, then are refused without trying.
    s.servers[1].stop().expect("stop b");
    // user_id 2 hashes to orders_2 on s1 (server a); user_id 5 to orders_5 on s2 (server b).
    let mut saw_open = false;
    for _ in 0..6 {
        let e = s.sql_err("SELECT * FROM orders WHERE user_id = 5");
        if e.contains("circuit open") {
            saw_open = true;
            break;
        }
    }
    assert!(saw_open, "the circuit of server b opened");
    s.sql("SELECT * FROM orders WHERE user_id = 2");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_connect_reports_a_missing_shard_schema() {
    let servers = MariaDb::start_many(2, MariaDbConfig::new()).expect("two servers");
    servers[0]
        .sql("CREATE DATABASE app_0; CREATE DATABASE app_1")
        .expect("schemas on a");
    servers[1]
        .sql("CREATE DATABASE app_2")
        .expect("schemas on b");
    let toml = config(1, servers[0].addr(), servers[1].addr(), &layout(""));
    let cfg = router::config::parse("t.toml", &toml).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let problems = rt.block_on(proxy_mysql::shard::check_shard_schemas(&cfg));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("shard `s3`") && problems[0].contains("schema `app_3` does not exist"),
        "{problems:?}"
    );
    servers[1].sql("CREATE DATABASE app_3").expect("app_3");
    assert_eq!(
        rt.block_on(proxy_mysql::shard::check_shard_schemas(&cfg)),
        Vec::<String>::new()
    );
}

/// Issue 15 item 3 on the sharded listener: a user limited to the logical database names no other
/// schema in any table reference (system schemas included); its own statements run.
#[test]
fn schemas_are_checked_on_every_statement_of_the_sharded_listener() {
    let s = Setup::start("");
    let port = s.proxy.addr.port();
    s.sql("INSERT INTO orders (id, user_id, amount, status) VALUES (1, 3, 1.5, 'new')");
    assert_eq!(
        common::cli(port, "narrow", "SELECT COUNT(*) FROM orders").as_deref(),
        Ok(&["1".to_string()][..])
    );
    assert_eq!(
        common::cli(
            port,
            "narrow",
            "SELECT COUNT(*) FROM app.orders WHERE user_id = 3"
        )
        .as_deref(),
        Ok(&["1".to_string()][..])
    );
    for q in [
        "SELECT user, password FROM mysql.user",
        "SELECT * FROM app_0.orders_0",
        "SELECT COUNT(*) FROM orders WHERE id IN (SELECT id FROM secret.t)",
        "SELECT table_name FROM information_schema.tables",
        "SELECT 1; SELECT * FROM mysql.user",
    ] {
        let e = common::cli(port, "narrow", q).expect_err(q);
        assert!(e.contains("ERROR 1044"), "{q}: {e}");
    }
}
