//! Operations features through the proxy: SQL deny rules, rate and concurrency limits, result size
//! cap, statement timeout, slow log, digests and audit log; plus COM_CHANGE_USER,
//! COM_RESET_CONNECTION and multi-statements from real drivers.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn rules_limits_timeouts_and_logs() {
    let rs = replica_set(1);
    let dir = tempfile_dir();
    let audit = format!("{dir}/audit.log");
    let extra = format!(
        "max_result_bytes = 100000\nquery_timeout_ms = 1500\nslow_query_ms = 300\naudit_log = \"{audit}\"\n\
         [[mysql_groups.main.rules]]\nmatch = \"DELETE FROM *\"\naction = \"deny\"\nmessage = \"use the archive job\"\n\
         [[mysql_groups.main.rules]]\nmatch = \"SELECT ?, ?, ?\"\naction = \"limit\"\nqps = 2\nper = \"user\"\n\
         [[mysql_groups.main.rules]]\nmatch = \"SELECT SLEEP (?)\"\naction = \"limit\"\nconcurrency = 1\n"
    );
    let proxy = proxy_for(&rs, &extra);
    let port = proxy.addr.port();

    let e = proxy
        .sql("app", "DELETE FROM app.t WHERE id = 1")
        .expect_err("denied");
    assert!(
        e.to_string().contains("1142") && e.to_string().contains("use the archive job"),
        "{e}"
    );

    let e = proxy
        .sql("app", &"SELECT 1, 2, 3; ".repeat(12))
        .expect_err("qps");
    assert!(e.to_string().contains("1226"), "{e}");
    // Another user has its own budget.
    proxy
        .sql("primaryonly", "SELECT 1, 2, 3")
        .expect("other user's budget");

    let slow = std::thread::spawn(move || cli(port, "app", "SELECT SLEEP(1.2)"));
    wait_until("first sleep running", Duration::from_secs(5), || {
        rs.replica(0)
            .sql_value("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(1.2)'")
            .ok()
            .flatten()
            .as_deref()
            == Some("1")
    });
    let e = cli(port, "app", "SELECT SLEEP(0.1)").expect_err("concurrency");
    assert!(e.contains("1226"), "{e}");
    slow.join().expect("join").expect("the first sleep runs");

    let e = proxy
        .sql("app", "SELECT REPEAT('a', 200000)")
        .expect_err("result cap");
    assert!(e.to_string().contains("max_result_bytes"), "{e}");
    assert_eq!(proxy.value("SELECT LENGTH(REPEAT('a', 1000))"), "1000");

    let started = Instant::now();
    let e = proxy.sql("app", "SELECT SLEEP(5)").expect_err("timeout");
    assert!(e.to_string().contains("1969"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "timeout took {:?}",
        started.elapsed()
    );
    // The backend query was killed, not left running.
    wait_until("backend query killed", Duration::from_secs(5), || {
        let n = rs.replica(0).sql_value(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(5)%'",
        );
        n.ok().flatten().as_deref() == Some("0")
    });

    let (slow_log, _) = proxy_mysql::slow_log(&proxy.shared, 100);
    assert!(
        slow_log.iter().any(|s| s.sql.contains("SLEEP(1.2)")),
        "{slow_log:?}"
    );
    let (digests, _) = proxy_mysql::digests(&proxy.shared);
    let sleep = digests
        .iter()
        .find(|d| d.text == "SELECT SLEEP (?)")
        .expect("digest");
    assert!(sleep.count >= 2 && sleep.errors >= 1, "{sleep:?}");

    let text = audit_log_with(&audit, &["DELETE FROM app.t", "SLEEP(1.2)"]);
    let line = line_with(&text, "DELETE FROM");
    assert!(
        line.contains("\"error\":1142") && line.contains("\"user\":\"app\""),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> String {
    let d = std::env::temp_dir().join(format!("furrow-ops-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&d).expect("dir");
    d.to_string_lossy().into_owned()
}

#[test]
fn change_user_reset_connection_and_multi_statements() {
    let rs = replica_set(1);
    let proxy = proxy_for(&rs, "");
    let out = python(
        r#"
import os, mysql.connector
c = mysql.connector.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"], use_pure=True)
cur = c.cursor()
cur.execute("SET @v = 42")
cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
cur.execute("SELECT @v, @@session.sql_mode")
print("before", cur.fetchall())
c.cmd_reset_connection()
cur = c.cursor()
cur.execute("SELECT @v, @@session.sql_mode = 'ANSI_QUOTES'")
print("after-reset", cur.fetchall())
c.cmd_change_user(username="primaryonly", password=os.environ["PASSWORD"], database="app")
cur = c.cursor()
cur.execute("SELECT CURRENT_USER() IS NOT NULL, DATABASE()")
print("changed", cur.fetchall())
try:
    c.cmd_change_user(username="app", password="wrong")
    print("bad change accepted")
except mysql.connector.Error as e:
    print("change-errno", e.errno)
"#,
        proxy.addr.port(),
    )
    .expect("connector");
    assert!(out.contains("before [(42, 'ANSI_QUOTES')]"), "{out}");
    assert!(out.contains("after-reset [(None, 0)]"), "{out}");
    assert!(out.contains("changed [(1, 'app')]"), "{out}");
    assert!(out.contains("change-errno 1045"), "{out}");

    let out = python(
        r#"
import os, pymysql
from pymysql.constants import CLIENT
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"], client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True)
cur = c.cursor()
cur.execute("SELECT 1; SELECT 2, 3; INSERT INTO app.t (v) VALUES ('multi')")
res = [cur.fetchall()]
while cur.nextset():
    res.append(cur.fetchall())
print("multi", res)
d = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"])
try:
    d.cursor().execute("SELECT 1; SELECT 2")
    print("multi accepted without the flag")
except pymysql.err.MySQLError as e:
    print("noflag-errno", e.args[0])
"#,
        proxy.addr.port(),
    )
    .expect("pymysql multi");
    assert!(out.contains("multi [((1,),), ((2, 3),), "), "{out}");
    assert!(out.contains("noflag-errno 1064"), "{out}");
}
