//! Read/write splitting, transactions, hints, policies and session-state isolation through the proxy,
//! with the `mariadb` CLI against a real primary and two replicas.

mod common;

use std::collections::HashSet;

use common::*;

fn cli1(p: &Proxy, q: &str) -> String {
    cli(p.addr.port(), "app", q)
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .join("\n")
}

#[test]
fn reads_to_replicas_writes_to_primary_and_state_isolation() {
    let rs = replica_set(2);
    // The split itself, without read-your-writes (on by default, tested in security2.rs): reads
    // right after a COMMIT go back to the replicas.
    let proxy = proxy_for(&rs, "read_your_writes_mode = \"off\"");
    let primary_id = rs.primary().server_id().to_string();
    let replica_ids: HashSet<String> = rs
        .replicas()
        .iter()
        .map(|r| r.server_id().to_string())
        .collect();

    // Reads spread over both replicas, never the primary.
    let mut seen = HashSet::new();
    for _ in 0..30 {
        seen.insert(proxy.value("SELECT @@server_id"));
    }
    assert!(
        seen.is_subset(&replica_ids),
        "reads went to {seen:?}, replicas are {replica_ids:?}"
    );
    assert_eq!(seen.len(), 2, "both replicas should get reads: {seen:?}");

    // A write reaches the primary (and replicates).
    proxy
        .sql("app", "INSERT INTO app.t (v) VALUES ('via-proxy')")
        .expect("insert");
    assert_eq!(
        rs.primary()
            .sql_value("SELECT COUNT(*) FROM app.t WHERE v = 'via-proxy'")
            .expect("q"),
        Some("1".into())
    );

    // Inside a transaction, reads stay on the primary; after COMMIT they go back to replicas.
    let rows = proxy
        .sql(
            "app",
            "BEGIN; SELECT @@server_id; INSERT INTO app.t (v) VALUES ('in-txn'); SELECT @@server_id; COMMIT; SELECT @@server_id",
        )
        .expect("txn");
    assert_eq!(rows[0][0].as_deref(), Some(primary_id.as_str()));
    assert_eq!(rows[1][0].as_deref(), Some(primary_id.as_str()));
    assert!(
        replica_ids.contains(rows[2][0].as_deref().unwrap_or("")),
        "{rows:?}"
    );

    // autocommit = 0 keeps everything on the primary.
    let rows = proxy
        .sql(
            "app",
            "SET autocommit = 0; SELECT @@server_id; COMMIT; SELECT @@server_id",
        )
        .expect("autocommit");
    assert!(
        rows.iter()
            .all(|r| r[0].as_deref() == Some(primary_id.as_str())),
        "{rows:?}"
    );

    // Locking reads go to the primary.
    assert_eq!(
        proxy.value("SELECT @@server_id FROM app.t LIMIT 1 FOR UPDATE"),
        primary_id
    );

    // Hints.
    assert_eq!(
        cli1(&proxy, "/* furrow:primary */ SELECT @@server_id"),
        primary_id
    );
    assert_eq!(
        cli1(&proxy, "/* furrow:backend=replica2 */ SELECT @@server_id"),
        rs.replica(1).server_id().to_string()
    );
    assert!(replica_ids.contains(&cli1(&proxy, "/* furrow:replica */ SELECT @@server_id")));
    let err = cli(
        proxy.addr.port(),
        "app",
        "/* furrow:backend=nope */ SELECT 1",
    )
    .expect_err("unknown backend");
    assert!(err.to_string().contains("unknown backend 'nope'"), "{err}");

    // Per-user read policies.
    let rows = proxy
        .sql("primaryonly", "SELECT @@server_id")
        .expect("primaryonly");
    assert_eq!(rows[0][0].as_deref(), Some(primary_id.as_str()));
    let rows = proxy
        .sql("reporter", "SELECT @@server_id")
        .expect("reporter");
    assert!(replica_ids.contains(rows[0][0].as_deref().unwrap_or("")));
    let err = proxy
        .sql("reporter", "INSERT INTO app.t (v) VALUES ('nope')")
        .expect_err("replica_only write");
    assert!(err.to_string().contains("1290"), "{err}");

    // LAST_INSERT_ID() after an insert in the same session.
    let rows = proxy
        .sql(
            "app",
            "INSERT INTO app.t (v) VALUES ('lid'); SELECT LAST_INSERT_ID()",
        )
        .expect("lid");
    let id = rows[0][0].clone().unwrap_or_default();
    assert_eq!(
        rs.primary()
            .sql_value(&format!("SELECT v FROM app.t WHERE id = {id}"))
            .expect("q"),
        Some("lid".into())
    );

    // Session state never leaks: client A sets state on the pooled connections, client B sees
    // defaults (the proxy runs one executor, so both share one pool).
    let defaults = proxy
        .sql(
            "app",
            "SELECT @@session.sql_mode, @x, DATABASE(), @@session.wait_timeout",
        )
        .expect("defaults");
    proxy
        .sql(
            "app",
            "SET @x = 1; SET SESSION sql_mode = 'ANSI_QUOTES'; SET SESSION wait_timeout = 77; USE other; \
             SELECT @x, @@session.sql_mode, DATABASE()",
        )
        .expect("client A");
    for _ in 0..6 {
        let b = proxy
            .sql(
                "app",
                "SELECT @@session.sql_mode, @x, DATABASE(), @@session.wait_timeout",
            )
            .expect("client B");
        assert_eq!(b, defaults, "client B saw another client's state");
    }
    // A schema chosen with USE does not stick to the pooled connection for the next client.
    let port = proxy.addr.port();
    for _ in 0..3 {
        cli(port, "app", "/* furrow:backend=replica1 */ USE other").expect("client A uses other");
        let b = cli(
            port,
            "app",
            "/* furrow:backend=replica1 */ SELECT DATABASE(), @@server_id",
        )
        .expect("client B");
        assert!(
            b[0].starts_with("NULL\t"),
            "client B inherited a schema: {b:?}"
        );
        let c = testkit::sql_at(
            proxy.addr,
            "app",
            APP_SECRET,
            Some("app"),
            "SELECT DATABASE()",
        )
        .expect("client C with a schema");
        assert_eq!(c[0][0].as_deref(), Some("app"));
    }
    // Replayed state follows the session across connections and servers.
    let rows = cli(
        proxy.addr.port(),
        "app",
        "SET SESSION sql_mode = 'ANSI_QUOTES'; USE app; SELECT @@session.sql_mode, DATABASE(); \
         SELECT @@session.sql_mode, DATABASE(); /* furrow:primary */ SELECT @@session.sql_mode, DATABASE()",
    )
    .expect("replay");
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r, "ANSI_QUOTES\tapp", "{rows:?}");
    }
    // Temporary tables pin the session (they exist only on one connection).
    let rows = proxy
        .sql(
            "app",
            "CREATE TEMPORARY TABLE app.tmp1 (a INT); INSERT INTO app.tmp1 VALUES (5); SELECT a FROM app.tmp1; SELECT a FROM app.tmp1",
        )
        .expect("temp table");
    assert_eq!(rows, vec![vec![Some("5".into())], vec![Some("5".into())]]);
    let err = proxy
        .sql("app", "SELECT * FROM app.tmp1")
        .expect_err("temp table leaked");
    assert!(err.to_string().contains("1146"), "{err}");
}

#[test]
fn authentication_and_access_errors() {
    let rs = replica_set(1);
    let proxy = proxy_for(&rs, "");
    let e =
        testkit::sql_at(proxy.addr, "app", "wrong", None, "SELECT 1").expect_err("bad password");
    assert!(
        e.to_string().contains("1045") && e.to_string().contains("Access denied for user 'app'"),
        "{e}"
    );
    let e = testkit::sql_at(proxy.addr, "ghost", APP_SECRET, None, "SELECT 1")
        .expect_err("no such user");
    assert!(e.to_string().contains("1045"), "{e}");
    let e = proxy.sql("faraway", "SELECT 1").expect_err("host");
    assert!(e.to_string().contains("1130"), "{e}");
    let e = testkit::sql_at(proxy.addr, "narrow", APP_SECRET, Some("other"), "SELECT 1")
        .expect_err("schema");
    assert!(e.to_string().contains("1044"), "{e}");
    let ok = testkit::sql_at(
        proxy.addr,
        "narrow",
        APP_SECRET,
        Some("app"),
        "SELECT DATABASE()",
    )
    .expect("allowed");
    assert_eq!(ok[0][0].as_deref(), Some("app"));
    let e = proxy.sql("narrow", "USE other").expect_err("use");
    assert!(e.to_string().contains("1044"), "{e}");
    let e = testkit::sql_at(proxy.addr, "app", APP_SECRET, Some("nosuchdb"), "SELECT 1")
        .expect_err("unknown db");
    assert!(e.to_string().contains("1049"), "{e}");
    let e = proxy
        .sql(
            "app",
            "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE app.t",
        )
        .expect_err("local infile");
    assert!(
        e.to_string().contains("1148") || e.to_string().contains("not allowed"),
        "{e}"
    );
    // Still serving.
    assert_eq!(proxy.value("SELECT 1"), "1");
}
