//! Data-path trust (issue 15, MySQL), second part, each against real servers with real clients:
//!
//! - item 4: deny rules apply to every statement of a multi-statement and to dynamic SQL
//!   (`PREPARE ... FROM '...'`, `EXECUTE IMMEDIATE '...'`); what cannot be checked (`PREPARE FROM
//!   @v`, `CALL`) is refused while rules exist;
//! - item 3: a user's `schemas` holds for every table reference of every statement;
//! - item 0: read-your-writes is the default;
//! - item 17: a stalled (SIGSTOP) replica does not hang its clients.

mod common;

use std::time::Duration;

use common::*;

/// Rows of `query` on a server, as one string per row (cells joined by tabs).
fn rows(server: &testkit::MariaDb, query: &str) -> Vec<String> {
    server
        .sql(query)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| c.unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect()
}

fn victim_exists(server: &testkit::MariaDb) -> bool {
    rows(
        server,
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app' AND table_name = 'victim'",
    ) == ["1"]
}

// ---------------------------------------------------------------- item 4

#[test]
fn deny_rules_hold_for_multi_statements_and_dynamic_sql() {
    let rs = replica_set(1);
    rs.primary()
        .sql(
            "CREATE TABLE app.victim (id INT PRIMARY KEY); \
             CREATE PROCEDURE app.dropper() DROP TABLE app.victim",
        )
        .expect("victim");
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    let proxy = proxy_for(
        &rs,
        "[[mysql_groups.main.rules]]\nmatch = \"CALL APP.REPORT*\"\naction = \"allow\"\n\
         [[mysql_groups.main.rules]]\nmatch = \"DROP TABLE *\"\naction = \"deny\"\n",
    );
    let out = python(
        r#"
import os, pymysql
from pymysql.constants import CLIENT
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"],
                    autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
def run(sql):
    try:
        cur.execute(sql)
        while cur.nextset():
            pass
        print("ran", sql)
    except pymysql.MySQLError as e:
        print("refused", e.args[0], sql)
for sql in ["SELECT 1; DROP TABLE app.victim",
            "SELECT 1 /*!; DROP TABLE app.victim */",
            "EXECUTE IMMEDIATE 'DROP TABLE app.victim'",
            "EXECUTE IMMEDIATE 'DROP ' 'TABLE app.victim'",
            "PREPARE s FROM 'DROP TABLE app.victim'",
            "PREPARE s FROM @q",
            "EXECUTE IMMEDIATE @q",
            "EXECUTE IMMEDIATE CONCAT('DROP ', 'TABLE app.victim')",
            "CALL app.dropper()"]:
    run(sql)
# What can be checked still runs.
cur.execute("SET @q = 'DROP TABLE app.victim'")
cur.execute("PREPARE ok FROM 'SELECT 40 + 2'")
cur.execute("EXECUTE ok")
print("executed", cur.fetchone()[0])
cur.execute("EXECUTE IMMEDIATE 'SELECT 7'")
print("immediate", cur.fetchone()[0])
cur.execute("SELECT 1; SELECT 2")
while cur.nextset():
    pass
print("multi ok")
"#,
        proxy.addr.port(),
    )
    .expect("pymysql");
    assert_eq!(out.matches("refused 1142").count(), 9, "{out}");
    assert!(!out.contains("ran "), "{out}");
    assert!(out.contains("executed 42"), "{out}");
    assert!(out.contains("immediate 7"), "{out}");
    assert!(out.contains("multi ok"), "{out}");
    // The mariadb CLI sends multi-statements as one COM_QUERY.
    let e = cli(
        proxy.addr.port(),
        "app",
        "SELECT 1; DROP TABLE app.victim; SELECT 2",
    )
    .expect_err("refused");
    assert!(e.contains("1142"), "{e}");
    assert!(victim_exists(rs.primary()));
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    assert!(victim_exists(&rs.replicas()[0]));
}

// ---------------------------------------------------------------- item 3

#[test]
fn schemas_hold_for_every_table_reference() {
    let rs = replica_set(1);
    rs.primary()
        .sql(
            "CREATE DATABASE secret; CREATE TABLE secret.creds (id INT PRIMARY KEY, pw VARCHAR(20)); \
             INSERT INTO secret.creds VALUES (1, 'hunter2'); INSERT INTO app.t (v) VALUES ('visible')",
        )
        .expect("secret");
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    let proxy = proxy_for(&rs, "");
    // The unrestricted user sees it (the table is there).
    assert_eq!(
        cli(proxy.addr.port(), "app", "SELECT pw FROM secret.creds").expect("app"),
        ["hunter2"]
    );
    let out = python(
        r#"
import os, pymysql
from pymysql.constants import CLIENT
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="narrow", password=os.environ["PASSWORD"],
                    database="app", autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
def run(sql):
    try:
        cur.execute(sql)
        rows = cur.fetchall()
        while cur.nextset():
            rows += cur.fetchall()
        print("ran", sql, rows)
    except pymysql.MySQLError as e:
        print("refused", e.args[0], sql)
for sql in ["SELECT * FROM secret.creds",
            "SELECT * FROM `secret`.`creds`",
            "SELECT pw FROM app.t AS secret JOIN secret.creds ON secret.id = creds.id",
            "SELECT (SELECT pw FROM secret.creds LIMIT 1)",
            "SELECT * FROM t WHERE id IN (SELECT id FROM secret.creds)",
            "SELECT secret.creds.pw FROM secret.creds",
            "SELECT user, password FROM mysql.user",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM performance_schema.threads",
            "DESC secret.creds",
            "SHOW CREATE TABLE secret.creds",
            "SHOW TABLES FROM secret",
            "SHOW COLUMNS FROM creds FROM secret",
            "SELECT 1; USE secret",
            "SELECT 1 /*!; SELECT * FROM secret.creds */",
            "INSERT INTO app.t (v) SELECT pw FROM secret.creds",
            "PREPARE s FROM 'SELECT * FROM secret.creds'",
            "EXECUTE IMMEDIATE 'SELECT * FROM mysql.user'"]:
    run(sql)
cur.execute("SET @q = 'SELECT * FROM secret.creds'")
for sql in ["PREPARE s FROM @q", "EXECUTE IMMEDIATE @q"]:
    run(sql)
# Within the allowed schema everything still works.
for sql in ["SELECT v FROM t WHERE v = 'visible'",
            "SELECT t.v FROM t WHERE t.v = 'visible'",
            "SELECT x.v FROM app.t AS x WHERE x.v = 'visible'",
            "SELECT app.t.v FROM app.t WHERE v = 'visible'",
            "SHOW TABLES",
            "SELECT 'secret.creds' AS v"]:
    run(sql)
"#,
        proxy.addr.port(),
    )
    .expect("pymysql");
    assert_eq!(out.matches("refused 1044").count(), 18, "{out}");
    assert_eq!(out.matches("refused 1142").count(), 2, "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    assert_eq!(out.matches("ran ").count(), 6, "{out}");
    assert_eq!(out.matches("(('visible',),)").count(), 4, "{out}");
    // The mariadb CLI, as the issue's reporter did.
    for q in [
        "SELECT user, password FROM mysql.user",
        "SELECT * FROM secret.creds",
    ] {
        let e =
            testkit::sql_at(proxy.addr, "narrow", APP_SECRET, Some("app"), q).expect_err("refused");
        assert!(e.to_string().contains("1044"), "{q}: {e}");
    }
}
