//! The Rust MySQL driver (`mysql_async`) through the proxy: login with both password plugins, the
//! text protocol, read/write split, server-side prepared statements with typed values, session
//! state isolation between pooled driver connections, server errors and `COM_CHANGE_USER`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use mysql_async::prelude::*;
use mysql_async::{
    ChangeUserOpts, Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts, Value,
};
use testkit::MariaDbReplicaSet;

use common::*;

/// Driver options for `user` through the proxy at `addr`, schema `app`.
///
/// `prefer_socket(false)` matters: by default the driver reads `@@socket` after login and, the
/// server being on loopback, reconnects to that Unix socket, which is the backend's own socket
/// and would bypass the proxy.
fn opts(addr: SocketAddr, user: &str, password: &str) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass(Some(password))
        .db_name(Some("app"))
        .prefer_socket(false)
}

/// The server error code of a driver error, or a panic naming `what`.
fn server_code(what: &str, e: mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state),
        other => panic!("{what}: expected a server error, got {other:?}"),
    }
}

#[test]
fn mysql_async_through_the_proxy() {
    let rs = replica_set(2);
    let primary = rs.primary().addr();
    let replicas: Vec<SocketAddr> = rs.replicas().iter().map(|r| r.addr()).collect();
    // `shaonly` has only a caching_sha2_password hash: the driver answers the handshake with
    // mysql_native_password and the proxy switches it to caching_sha2_password.
    let proxy = Proxy::start(move |port| {
        let sha_only: String = user_block("shaonly", APP_SECRET, "")
            .lines()
            .filter(|l| !l.starts_with("password_native"))
            .map(|l| format!("{l}\n"))
            .collect();
        config_toml(port, primary, &replicas, "") + &sha_only
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        login(proxy.addr).await;
        reads_spread_and_transactions(&rs, proxy.addr).await;
        text_protocol_writes(&rs, proxy.addr).await;
        prepared_statements(&rs, proxy.addr).await;
        session_isolation(proxy.addr).await;
        server_errors(proxy.addr).await;
        change_user(proxy.addr).await;
    });
}

/// 1. Connect and authenticate with mysql_native_password, with caching_sha2_password (after an
///    auth switch), and a wrong password is refused with 1045.
async fn login(addr: SocketAddr) {
    for user in ["app", "shaonly"] {
        let mut c = Conn::new(opts(addr, user, APP_SECRET))
            .await
            .unwrap_or_else(|e| panic!("login as {user}: {e}"));
        let who: Option<(String, String)> = c
            .query_first("SELECT DATABASE(), 'hello'")
            .await
            .expect("first query");
        assert_eq!(
            who,
            Some(("app".to_string(), "hello".to_string())),
            "{user}"
        );
        c.ping().await.expect("ping");
        c.disconnect().await.expect("disconnect");
    }
    for user in ["app", "shaonly"] {
        let e = Conn::new(opts(addr, user, "wrong-password"))
            .await
            .expect_err("a wrong password must be refused");
        let (code, state) = server_code("wrong password", e);
        assert_eq!((code, state.as_str()), (1045, "28000"), "{user}");
    }
}

/// 3. Autocommit reads go to the replicas; reads inside an explicit transaction stay on the
///    primary. Runs on fresh connections, before any write (a write opens a read-your-writes
///    window during which the session reads from the primary).
async fn reads_spread_and_transactions(rs: &MariaDbReplicaSet, addr: SocketAddr) {
    let replica_ids: BTreeSet<u32> = rs.replicas().iter().map(|r| r.server_id()).collect();
    let primary_id = rs.primary().server_id();
    let mut c = Conn::new(opts(addr, "app", APP_SECRET))
        .await
        .expect("connect");

    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let id: Option<u32> = c.query_first("SELECT @@server_id").await.expect("read");
        seen.insert(id.expect("a row"));
    }
    assert_eq!(
        seen, replica_ids,
        "text reads should reach every replica and only replicas"
    );

    // The same through one prepared statement executed many times: the proxy prepares it on
    // each backend connection it picks.
    let stmt = c.prep("SELECT @@server_id, ? + 1").await.expect("prepare");
    let mut seen = BTreeSet::new();
    for i in 0..40i64 {
        let row: Option<(u32, i64)> = c.exec_first(&stmt, (i,)).await.expect("exec");
        let (id, next) = row.expect("a row");
        assert_eq!(next, i + 1);
        seen.insert(id);
    }
    assert_eq!(
        seen, replica_ids,
        "prepared reads should reach every replica"
    );

    // Inside a transaction, text and prepared reads stay on the primary.
    let mut tx = c.start_transaction(TxOpts::default()).await.expect("begin");
    for _ in 0..10 {
        let id: Option<u32> = tx.query_first("SELECT @@server_id").await.expect("read");
        assert_eq!(
            id,
            Some(primary_id),
            "a read in a transaction left the primary"
        );
        let row: Option<(u32, i64)> = tx.exec_first(&stmt, (1i64,)).await.expect("exec");
        assert_eq!(row, Some((primary_id, 2)));
    }
    tx.rollback().await.expect("rollback");

    // After the transaction, reads spread again.
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let id: Option<u32> = c.query_first("SELECT @@server_id").await.expect("read");
        seen.insert(id.expect("a row"));
    }
    assert_eq!(seen, replica_ids, "reads after the transaction");
    c.close(stmt).await.expect("close statement");
    c.disconnect().await.expect("disconnect");
}

/// 2. Text-protocol writes reach the primary, with the insert id and affected rows the driver
///    reports; a committed transaction is there too, a rolled back one is not.
async fn text_protocol_writes(rs: &MariaDbReplicaSet, addr: SocketAddr) {
    let mut c = Conn::new(opts(addr, "app", APP_SECRET))
        .await
        .expect("connect");
    c.query_drop("INSERT INTO t (v) VALUES ('rust-text')")
        .await
        .expect("insert");
    assert_eq!(c.affected_rows(), 1);
    let id = c.last_insert_id().expect("insert id");
    let on_primary = rs
        .primary()
        .sql_value(&format!("SELECT v FROM app.t WHERE id = {id}"))
        .expect("primary");
    assert_eq!(on_primary.as_deref(), Some("rust-text"));
    // Read back through the proxy (read-your-writes, or forced with a hint).
    let v: Option<String> = c
        .query_first(format!(
            "/* furrow:primary */ SELECT v FROM t WHERE id = {id}"
        ))
        .await
        .expect("read back");
    assert_eq!(v.as_deref(), Some("rust-text"));
    let rows: Vec<(i64, String)> = c
        .query("/* furrow:primary */ SELECT id, v FROM t WHERE v = 'rust-text' ORDER BY id")
        .await
        .expect("query");
    assert_eq!(rows, vec![(id as i64, "rust-text".to_string())]);

    let mut tx = c.start_transaction(TxOpts::default()).await.expect("begin");
    tx.query_drop("INSERT INTO t (v) VALUES ('rust-committed')")
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    let mut tx = c.start_transaction(TxOpts::default()).await.expect("begin");
    tx.query_drop("INSERT INTO t (v) VALUES ('rust-rolled-back')")
        .await
        .expect("insert");
    tx.rollback().await.expect("rollback");
    let counts = rs
        .primary()
        .sql_value(
            "SELECT CONCAT(SUM(v = 'rust-committed'), '/', SUM(v = 'rust-rolled-back')) FROM app.t",
        )
        .expect("primary");
    assert_eq!(counts.as_deref(), Some("1/0"));
    c.disconnect().await.expect("disconnect");
}

/// 4. Server-side prepared statements: typed parameters and results round-trip, one statement
///    is executed many times, `exec_batch` and `exec_drop` write to the primary.
async fn prepared_statements(rs: &MariaDbReplicaSet, addr: SocketAddr) {
    let mut c = Conn::new(opts(addr, "app", APP_SECRET))
        .await
        .expect("connect");
    c.query_drop(
        "CREATE TABLE typed (id INT PRIMARY KEY AUTO_INCREMENT, n BIGINT, u BIGINT UNSIGNED, \
         small TINYINT, maybe INT NULL, s VARCHAR(100), dt DATETIME(6), d DECIMAL(12,4))",
    )
    .await
    .expect("create table");

    let quoted = r#"it's "quoted" \ with a backslash; DROP TABLE t; --"#;
    let when = Value::Date(2024, 2, 29, 13, 45, 30, 123_456);
    let insert = c
        .prep("INSERT INTO typed (n, u, small, maybe, s, dt, d) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .await
        .expect("prepare insert");
    assert_eq!(insert.num_params(), 7);
    c.exec_drop(
        &insert,
        (
            i64::MIN,
            u64::MAX,
            -5i8,
            None::<i32>,
            quoted,
            when.clone(),
            "12345.6789",
        ),
    )
    .await
    .expect("insert typed");
    let id = c.last_insert_id().expect("insert id");
    c.exec_drop(
        &insert,
        (7i64, 8u64, 9i8, 10i32, "plain", when.clone(), "-0.0001"),
    )
    .await
    .expect("second insert");
    let second = c.last_insert_id().expect("insert id");
    assert_ne!(id, second);

    // The row as the primary has it.
    let direct = rs
        .primary()
        .sql(&format!(
            "SELECT n, u, small, maybe, s, dt, d FROM app.typed WHERE id = {id}"
        ))
        .expect("primary");
    let row: Vec<Option<String>> = direct.into_iter().next().expect("row on the primary");
    let want: Vec<Option<String>> = vec![
        Some(i64::MIN.to_string()),
        Some(u64::MAX.to_string()),
        Some("-5".into()),
        None,
        Some(quoted.to_string()),
        Some("2024-02-29 13:45:30.123456".into()),
        Some("12345.6789".into()),
    ];
    assert_eq!(row, want, "the row on the primary");

    // Typed values back through the binary protocol.
    let select = c
        .prep("/* furrow:primary */ SELECT n, u, small, maybe, s, dt, d FROM typed WHERE id = ?")
        .await
        .expect("prepare select");
    type Typed = (i64, u64, i8, Option<i32>, String, Value, String);
    let got: Option<Typed> = c.exec_first(&select, (id,)).await.expect("select");
    assert_eq!(
        got,
        Some((
            i64::MIN,
            u64::MAX,
            -5,
            None,
            quoted.to_string(),
            when.clone(),
            "12345.6789".to_string()
        ))
    );
    let got: Option<Typed> = c.exec_first(&select, (second,)).await.expect("select");
    assert_eq!(
        got,
        Some((
            7,
            8,
            9,
            Some(10),
            "plain".to_string(),
            when.clone(),
            "-0.0001".to_string()
        ))
    );
    // And through the text protocol, for comparison.
    let text: Option<(String, Option<i32>, String)> = c
        .query_first(format!(
            "/* furrow:primary */ SELECT s, maybe, CAST(dt AS CHAR) FROM typed WHERE id = {id}"
        ))
        .await
        .expect("text select");
    assert_eq!(
        text,
        Some((
            quoted.to_string(),
            None,
            "2024-02-29 13:45:30.123456".to_string()
        ))
    );
    // A NULL parameter compares as NULL, not as 0 or ''.
    let is_null: Option<(Option<i64>, i64)> = c
        .exec_first("SELECT ?, ? IS NULL", (None::<i64>, None::<i64>))
        .await
        .expect("null param");
    assert_eq!(is_null, Some((None, 1)));

    // One statement text executed many times with different parameters: the driver prepares it
    // once (its statement cache) and executes the same statement id each time.
    for i in 0..100u64 {
        let row: Option<(u64, String)> = c
            .exec_first("SELECT ? * 2, ?", (i, format!("value-{i}'")))
            .await
            .expect("echo");
        assert_eq!(row, Some((i * 2, format!("value-{i}'"))));
    }

    // exec_batch: one prepared INSERT, many executions; exec_drop: a prepared UPDATE.
    c.exec_batch(
        "INSERT INTO t (v) VALUES (?)",
        (0..10).map(|i| (format!("rust-batch-{i}"),)),
    )
    .await
    .expect("exec_batch");
    let n = rs
        .primary()
        .sql_value("SELECT COUNT(*) FROM app.t WHERE v LIKE 'rust-batch-%'")
        .expect("primary");
    assert_eq!(n.as_deref(), Some("10"));
    c.exec_drop(
        "UPDATE t SET v = CONCAT(v, ?) WHERE v LIKE ?",
        ("!", "rust-batch-%"),
    )
    .await
    .expect("exec_drop update");
    assert_eq!(c.affected_rows(), 10);
    let n = rs
        .primary()
        .sql_value("SELECT COUNT(*) FROM app.t WHERE v LIKE 'rust-batch-%!'")
        .expect("primary");
    assert_eq!(n.as_deref(), Some("10"));

    c.close(insert).await.expect("close");
    c.close(select).await.expect("close");
    c.disconnect().await.expect("disconnect");

    // A driver statement cache of 2: the driver closes (COM_STMT_CLOSE) and re-prepares
    // statements all the time; the proxy's statement ids stay consistent.
    let mut c = Conn::new(opts(addr, "app", APP_SECRET).stmt_cache_size(2))
        .await
        .expect("connect");
    for round in 0..3i64 {
        for k in 0..8i64 {
            let sql = format!("SELECT ? + {k}, '{k}'");
            let row: Option<(i64, String)> = c.exec_first(sql, (round,)).await.expect("exec");
            assert_eq!(row, Some((round + k, k.to_string())));
        }
    }
    c.disconnect().await.expect("disconnect");

    // Many clients preparing the same text one after the other: the pooled backend connection
    // that already has it prepares it again for each (the client needs the server's prepare
    // reply) and closes the copy it replaces, so the servers do not accumulate one statement per
    // client (the proxy keeps at most one per text on each backend connection).
    let open_stmts = || -> u64 {
        std::iter::once(rs.primary())
            .chain(rs.replicas().iter())
            .map(|s| {
                s.sql_value(
                    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                     WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT'",
                )
                .expect("status")
                .and_then(|v| v.parse::<u64>().ok())
                .expect("Prepared_stmt_count")
            })
            .sum()
    };
    let before = open_stmts();
    for i in 0..30i64 {
        let mut c = Conn::new(opts(addr, "app", APP_SECRET))
            .await
            .expect("connect");
        let row: Option<i64> = c.exec_first("SELECT ? + 1000", (i,)).await.expect("exec");
        assert_eq!(row, Some(i + 1000));
        c.disconnect().await.expect("disconnect");
    }
    let after = open_stmts();
    assert!(
        after.saturating_sub(before) <= 10,
        "30 clients left {} statements open on the servers",
        after.saturating_sub(before)
    );
}

/// 5. Session state set on one pooled driver connection is not seen from another, and comes
///    back cleared once the driver resets the connection it returns to its pool.
async fn session_isolation(addr: SocketAddr) {
    let pool_opts = PoolOpts::default().with_constraints(PoolConstraints::new(0, 4).expect("pool"));
    let pool = Pool::new(Opts::from(
        opts(addr, "app", APP_SECRET).pool_opts(pool_opts),
    ));
    let mut a = pool.get_conn().await.expect("conn a");
    let mut b = pool.get_conn().await.expect("conn b");
    assert_ne!(a.id(), b.id());
    let default_mode: Option<String> = b
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .expect("sql_mode");
    assert_ne!(default_mode.as_deref(), Some("ANSI_QUOTES"));

    // A replayable setting: the proxy re-applies it on whichever backend connection serves `a`,
    // and never leaks it to `b`, even when `b` gets the backend connection `a` just used.
    a.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .expect("set sql_mode");
    for _ in 0..10 {
        for hint in ["", "/* furrow:primary */ "] {
            let mode_a: Option<String> = a
                .query_first(format!("{hint}SELECT @@SESSION.sql_mode"))
                .await
                .expect("a sql_mode");
            assert_eq!(mode_a.as_deref(), Some("ANSI_QUOTES"), "a ({hint})");
            let mode_b: Option<String> = b
                .query_first(format!("{hint}SELECT @@SESSION.sql_mode"))
                .await
                .expect("b sql_mode");
            assert_eq!(mode_b, default_mode, "b ({hint})");
            // The same for prepared statements.
            let prepared: Option<(String, i64)> = a
                .exec_first(format!("{hint}SELECT @@SESSION.sql_mode, ?"), (1,))
                .await
                .expect("a prepared");
            assert_eq!(
                prepared,
                Some(("ANSI_QUOTES".to_string(), 1)),
                "a prepared ({hint})"
            );
        }
    }

    // A user variable (not replayable: it pins `a` to one backend connection).
    a.query_drop("SET @x := 42").await.expect("set @x");
    for _ in 0..5 {
        let x_a: Option<Option<i64>> = a.query_first("SELECT @x").await.expect("a @x");
        assert_eq!(x_a, Some(Some(42)));
        let x_b: Option<Option<i64>> = b.query_first("SELECT @x").await.expect("b @x");
        assert_eq!(x_b, Some(None), "b sees a's user variable");
        let x_b: Option<Option<i64>> = b
            .exec_first("/* furrow:primary */ SELECT @x + ?", (0,))
            .await
            .expect("b @x prepared");
        assert_eq!(x_b, Some(None), "b sees a's user variable (prepared)");
    }

    // Back in the pool, the driver resets `a` (COM_RESET_CONNECTION): whichever connection the
    // pool hands out next has neither the variable nor the sql_mode.
    drop(a);
    drop(b);
    for _ in 0..4 {
        let mut c = pool.get_conn().await.expect("conn");
        let row: Option<(Option<i64>, String)> = c
            .query_first("/* furrow:primary */ SELECT @x, @@SESSION.sql_mode")
            .await
            .expect("after reset");
        assert_eq!(
            row,
            Some((None, default_mode.clone().unwrap_or_default())),
            "state survived the driver's reset"
        );
    }
    pool.disconnect().await.expect("pool disconnect");
}

/// 6. Server errors reach the driver as server errors with the server's code and SQLSTATE, and
///    the connection keeps working afterwards (text and prepared).
async fn server_errors(addr: SocketAddr) {
    let mut c = Conn::new(opts(addr, "app", APP_SECRET))
        .await
        .expect("connect");
    let e = c
        .query_drop("SELECT * FROM no_such_table")
        .await
        .expect_err("unknown table");
    assert_eq!(server_code("unknown table", e), (1146, "42S02".to_string()));
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("after 1146");
    assert_eq!(one, Some(1));

    let e = c.query_drop("SELEC 1").await.expect_err("syntax error");
    assert_eq!(server_code("syntax", e), (1064, "42000".to_string()));
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("after 1064");
    assert_eq!(one, Some(1));

    // Preparing a statement over an unknown table fails at prepare time.
    let e = c
        .prep("SELECT v FROM no_such_table WHERE id = ?")
        .await
        .expect_err("prepare over an unknown table");
    assert_eq!(server_code("prepare", e).0, 1146);

    // An execution error (duplicate key) leaves the statement and the connection usable.
    let insert = c
        .prep("INSERT INTO t (id, v) VALUES (?, ?)")
        .await
        .expect("prepare");
    c.exec_drop(&insert, (900_001, "rust-dup"))
        .await
        .expect("first insert");
    let e = c
        .exec_drop(&insert, (900_001, "rust-dup"))
        .await
        .expect_err("duplicate key");
    assert_eq!(server_code("duplicate", e), (1062, "23000".to_string()));
    c.exec_drop(&insert, (900_002, "rust-dup"))
        .await
        .expect("insert after the error");
    let n: Option<i64> = c
        .exec_first(
            "/* furrow:primary */ SELECT COUNT(*) FROM t WHERE v = ?",
            ("rust-dup",),
        )
        .await
        .expect("count");
    assert_eq!(n, Some(2));

    // An error inside a transaction: the transaction goes on and commits.
    let mut tx = c.start_transaction(TxOpts::default()).await.expect("begin");
    tx.query_drop("INSERT INTO t (v) VALUES ('rust-in-tx')")
        .await
        .expect("insert");
    let e = tx
        .query_drop("SELECT * FROM no_such_table")
        .await
        .expect_err("unknown table in a transaction");
    assert_eq!(server_code("in tx", e).0, 1146);
    tx.commit().await.expect("commit");
    let n: Option<i64> = c
        .query_first("/* furrow:primary */ SELECT COUNT(*) FROM t WHERE v = 'rust-in-tx'")
        .await
        .expect("count");
    assert_eq!(n, Some(1));
    c.close(insert).await.expect("close");

    c.disconnect().await.expect("disconnect");
}

/// 7. `COM_CHANGE_USER` (`Conn::change_user`) to each user, one of whom has only a
///    caching_sha2_password hash (the proxy switches the driver's mysql_native_password answer);
///    the session starts afresh in the new schema.
async fn change_user(addr: SocketAddr) {
    let mut c = Conn::new(opts(addr, "app", APP_SECRET))
        .await
        .expect("connect");
    for (user, db) in [("shaonly", "other"), ("app", "app"), ("shaonly", "app")] {
        c.query_drop("SET @y := 1").await.expect("set @y");
        c.change_user(
            ChangeUserOpts::default()
                .with_user(Some(user.to_string()))
                .with_pass(Some(APP_SECRET.to_string()))
                .with_db_name(Some(db.to_string())),
        )
        .await
        .unwrap_or_else(|e| panic!("change_user to {user}: {e}"));
        let row: Option<(String, Option<i64>, i64)> = c
            .exec_first("SELECT DATABASE(), @y, ? + 1", (1,))
            .await
            .expect("after change_user");
        assert_eq!(row, Some((db.to_string(), None, 2)), "{user}");
    }
    let e = c
        .change_user(
            ChangeUserOpts::default()
                .with_user(Some("shaonly".to_string()))
                .with_pass(Some("wrong-password".to_string())),
        )
        .await
        .expect_err("a wrong password must be refused");
    assert_eq!(server_code("change_user", e).0, 1045);
}
