//! Data-path trust (issue 15, MySQL): statements and packets that tried to get past a user's
//! restrictions or the proxy's memory bounds, each against real servers and, where the item is
//! about clients, real clients.
//!
//! - executable comments (`/*M!`, `/*!`) are code for routing and rules;
//! - hints only narrow what a user may do (`allow_hints`, `replica_only`, writes never on replicas);
//! - packets before login are capped;
//! - login nonces from the OS CSPRNG, sequence ids checked, libmariadb's caching_sha2 start.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use codec::mysql::consts::capability::*;
use codec::mysql::{ErrPacket, HandshakeResponse41, HandshakeV10};
use common::*;

/// Whether the replica's replication threads are both running.
fn replicating(replica: &testkit::MariaDb) -> bool {
    let (cols, rows) = replica
        .sql_with_columns("SHOW SLAVE STATUS")
        .expect("slave status");
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (Some(io), Some(sql)) = (col("Slave_IO_Running"), col("Slave_SQL_Running")) else {
        return false;
    };
    rows.first()
        .is_some_and(|r| r[io].as_deref() == Some("Yes") && r[sql].as_deref() == Some("Yes"))
}

/// A raw connection that has read the proxy's initial handshake.
fn greet(addr: std::net::SocketAddr) -> (TcpStream, HandshakeV10) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let p = read_packet(&mut s).expect("handshake");
    (s, HandshakeV10::decode(p.1).expect("handshake v10"))
}

/// One packet `(seq, payload)`, or `None` at EOF / reset.
fn read_packet(s: &mut TcpStream) -> Option<(u8, bytes::Bytes)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((h[3], bytes::Bytes::from(body)))
}

fn send(s: &mut TcpStream, seq: u8, payload: &[u8]) {
    let mut out = bytes::BytesMut::new();
    codec::mysql::encode_packet(seq, payload, &mut out);
    s.write_all(&out).expect("write");
}

/// A handshake response for `app` answering `scramble` with `plugin` (`auth` computed by the
/// caller; empty for "no answer").
fn response(user: &str, plugin: &'static str, auth: Vec<u8>) -> Vec<u8> {
    let r = HandshakeResponse41 {
        capabilities: CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_LONG_PASSWORD
            | CLIENT_TRANSACTIONS
            | CLIENT_MULTI_RESULTS,
        max_packet_size: 1 << 24,
        charset: 45,
        mariadb_capabilities: 0,
        username: bytes::Bytes::copy_from_slice(user.as_bytes()),
        auth_response: bytes::Bytes::from(auth),
        database: None,
        auth_plugin_name: Some(bytes::Bytes::from_static(plugin.as_bytes())),
        connect_attrs: Vec::new(),
    };
    let mut out = bytes::BytesMut::new();
    r.encode(&mut out);
    out.to_vec()
}

/// Whether the peer has closed (EOF or reset) within the read timeout.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

// ---------------------------------------------------------------- item 1

#[test]
fn executable_comments_are_code_for_routing_and_rules() {
    let rs = replica_set(1);
    rs.primary()
        .sql("CREATE TABLE app.victim (id INT PRIMARY KEY)")
        .expect("victim");
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    let proxy = proxy_for(
        &rs,
        "[[mysql_groups.main.rules]]\nmatch = \"DROP TABLE *\"\naction = \"deny\"\n",
    );
    let out = python(
        r#"
import os, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"], autocommit=True)
cur = c.cursor()
for sql in ["/*M!100000 DROP TABLE app.victim */", "/*M! DROP TABLE app.victim */",
            "/*!50000 DROP TABLE app.victim */", "/*!DROP TABLE app.victim*/"]:
    try:
        cur.execute(sql)
        print("ran", sql)
    except pymysql.MySQLError as e:
        print("refused", e.args[0])
cur.execute("/*M!100000 INSERT INTO app.t (v) VALUES ('m-comment') */")
cur.execute("/*M! INSERT INTO app.t (v) VALUES ('m-comment-2') */")
print("inserted")
"#,
        proxy.addr.port(),
    )
    .expect("pymysql");
    assert_eq!(out.matches("refused 1142").count(), 4, "{out}");
    assert!(!out.contains("ran"), "{out}");
    assert!(out.contains("inserted"), "{out}");
    // The table is still there, on both servers.
    for s in [rs.primary(), &rs.replicas()[0]] {
        assert_eq!(
            rows(
                s,
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app' AND table_name = 'victim'"
            ),
            ["1"]
        );
    }
    // The inserts ran on the primary (not on the replica) and replicated; replication is intact.
    assert_eq!(
        rows(
            rs.primary(),
            "SELECT COUNT(*) FROM app.t WHERE v LIKE 'm-comment%'"
        ),
        ["2"]
    );
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    assert_eq!(
        rows(
            &rs.replicas()[0],
            "SELECT COUNT(*) FROM app.t WHERE v LIKE 'm-comment%'"
        ),
        ["2"]
    );
    assert!(replicating(&rs.replicas()[0]));
}

// ---------------------------------------------------------------- item 2

#[test]
fn hints_only_narrow_what_a_user_may_do() {
    let rs = replica_set(1);
    let primary = rs.primary().addr();
    let replicas = [rs.replicas()[0].addr()];
    let proxy = Proxy::start(move |port| {
        let mut s = config_toml(port, primary, &replicas, "");
        s.push_str(&user_block("nohints", APP_SECRET, "allow_hints = false"));
        s
    });
    let port = proxy.addr.port();
    let primary_id = rs.primary().server_id().to_string();
    let replica_id = rs.replicas()[0].server_id().to_string();
    let run = |user: &str, sql: &str| cli(port, user, sql);
    let err = |user: &str, sql: &str| match run(user, sql) {
        Ok(rows) => panic!("{user}: {sql}: expected an error, got {rows:?}"),
        Err(e) => e,
    };
    let ok =
        |user: &str, sql: &str| run(user, sql).unwrap_or_else(|e| panic!("{user}: {sql}: {e}"));

    // A replica_only user: a hint naming the primary neither writes nor reads there.
    let e = err(
        "reporter",
        "/* furrow:backend=primary */ INSERT INTO app.t (v) VALUES ('hint-r1')",
    );
    assert!(e.contains("ERROR 1290"), "{e}");
    let e = err(
        "reporter",
        "/* furrow:backend=primary */ SELECT @@server_id",
    );
    assert!(
        e.contains("ERROR 1227") && e.contains("replica_only"),
        "{e}"
    );
    // `furrow:primary` is a preference that the policy overrules.
    assert_eq!(
        ok("reporter", "/* furrow:primary */ SELECT @@server_id"),
        [replica_id.as_str()]
    );

    // Writes never go to a replica: a named replica is refused, `furrow:replica` is overruled.
    for sql in [
        "/* furrow:backend=replica1 */ INSERT INTO app.t (v) VALUES ('hint-w1')",
        "/* furrow:backend=replica1 */ DELETE FROM app.t WHERE v = 'nothing'",
        "/* furrow:backend=replica1 */ CREATE TABLE app.hinted (id INT)",
        "/* furrow:backend=replica1 */ BEGIN",
    ] {
        let e = err("app", sql);
        assert!(
            e.contains("ERROR 1290") && e.contains("replica"),
            "{sql}: {e}"
        );
    }
    ok(
        "app",
        "/* furrow:replica */ INSERT INTO app.t (v) VALUES ('hint-w2')",
    );
    assert_eq!(
        rows(
            rs.primary(),
            "SELECT v FROM app.t WHERE v LIKE 'hint-%' ORDER BY v"
        ),
        ["hint-w2"]
    );
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    assert_eq!(
        rows(
            &rs.replicas()[0],
            "SELECT v FROM app.t WHERE v LIKE 'hint-%' ORDER BY v"
        ),
        ["hint-w2"]
    );
    assert_eq!(
        rows(
            &rs.replicas()[0],
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'hinted'"
        ),
        ["0"]
    );
    assert!(replicating(&rs.replicas()[0]));
    // Reads (and a read-only transaction) may still be sent to a named replica or the primary.
    assert_eq!(
        ok("app", "/* furrow:backend=replica1 */ SELECT @@server_id"),
        [replica_id.as_str()]
    );
    assert_eq!(
        ok("app", "/* furrow:backend=primary */ SELECT @@server_id"),
        [primary_id.as_str()]
    );
    assert_eq!(
        ok(
            "app",
            "/* furrow:backend=replica1 */ START TRANSACTION READ ONLY; SELECT @@server_id; COMMIT"
        ),
        [replica_id.as_str()]
    );
    // A transaction on a replica never carries a write there: neither a replica_only user's
    // (its BEGIN runs on a replica) nor one a hinted read opened with autocommit off.
    let e = err(
        "reporter",
        "BEGIN; INSERT INTO app.t (v) VALUES ('txn-r'); COMMIT",
    );
    assert!(e.contains("ERROR 1290"), "{e}");
    let e = err(
        "app",
        "SET autocommit = 0; /* furrow:backend=replica1 */ SELECT COUNT(*) FROM app.t; \
         INSERT INTO app.t (v) VALUES ('txn-w'); COMMIT",
    );
    assert!(e.contains("ERROR 1290") && e.contains("replica1"), "{e}");
    for s in [rs.primary(), &rs.replicas()[0]] {
        assert_eq!(
            rows(s, "SELECT COUNT(*) FROM app.t WHERE v LIKE 'txn-%'"),
            ["0"]
        );
    }
    assert!(replicating(&rs.replicas()[0]));

    // allow_hints = false: every hint is ignored (reads go where the policy sends them).
    for sql in [
        "/* furrow:backend=primary */ SELECT @@server_id",
        "/* furrow:primary */ SELECT @@server_id",
    ] {
        assert_eq!(ok("nohints", sql), [replica_id.as_str()], "{sql}");
    }
    assert_eq!(
        ok("nohints", "/* furrow:backend=nosuch */ SELECT 1"),
        ["1"],
        "an ignored hint is not even resolved"
    );
}

// ---------------------------------------------------------------- item 5

#[test]
fn packets_before_login_are_capped() {
    let rs = replica_set(1);
    let proxy = proxy_for(&rs, "");
    let before = testkit::rss::status_kib("VmRSS").unwrap_or(0);

    // A "415 MB" handshake response: refused when its header arrives, never buffered.
    let (mut s, _) = greet(proxy.addr);
    let mut writer = s.try_clone().expect("clone");
    let pusher = std::thread::spawn(move || {
        let mut out = Vec::new();
        out.extend_from_slice(&[0xFF, 0xFF, 0xFF, 1]); // a full 16 MiB fragment, continued
        let chunk = vec![b'x'; 1 << 20];
        let _ = writer.write_all(&out);
        let mut sent = 0usize;
        while sent < 415 << 20 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let (seq, payload) = read_packet(&mut s).expect("an ERR before the close");
    let e = ErrPacket::decode(payload).expect("err packet");
    assert_eq!((seq, e.code, e.sql_state), (2, 1153, Some(*b"08S01")));
    assert!(closed(&mut s));
    let sent = pusher.join().expect("pusher");
    let grown = testkit::rss::status_kib("VmRSS")
        .unwrap_or(0)
        .saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB while the client pushed {sent} bytes"
    );

    // Just over the cap (many connection attributes): refused as well.
    let (mut s, hs) = greet(proxy.addr);
    let auth = codec::mysql::auth::native_password_scramble(APP_SECRET.as_bytes(), hs.scramble());
    let mut big = response("app", "mysql_native_password", auth);
    big.resize(20 * 1024, b'a');
    send(&mut s, 1, &big);
    let (_, payload) = read_packet(&mut s).expect("err");
    assert_eq!(ErrPacket::decode(payload).expect("err").code, 1153);
    assert!(closed(&mut s));

    // After login, packets up to max_allowed_packet are fine again.
    let mut c = RawClient::login(proxy.addr, "app", None);
    let long = "y".repeat(200 * 1024);
    c.send(0, format!("\x03SELECT LENGTH('{long}')").as_bytes());
    let mut replies = Vec::new();
    while replies.len() < 5 {
        replies.push(c.read().payload);
    }
    assert!(
        replies.iter().any(|p| p.as_ref() == b"\x06204800"),
        "{:?}",
        replies.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    assert_eq!(proxy.value("SELECT 1"), "1");
}

// ---------------------------------------------------------------- item 6

#[test]
fn login_nonces_sequence_ids_and_the_caching_sha2_start() {
    let rs = replica_set(1);
    let primary = rs.primary().addr();
    let replicas = [rs.replicas()[0].addr()];
    let proxy = Proxy::start(move |port| {
        let mut s = config_toml(port, primary, &replicas, "");
        // A user with only the caching_sha2_password hash.
        let sha = codec::mysql::auth::caching_sha2_hash(APP_SECRET.as_bytes());
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        s.push_str(&format!("[users.shaonly]\npassword_sha256 = \"{hex}\"\n"));
        s
    });

    // Nonces: printable, no NUL, never repeated.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let (_, hs) = greet(proxy.addr);
        let nonce = hs.scramble().to_vec();
        assert_eq!(nonce.len(), 20);
        assert!(nonce.iter().all(|b| (33..=126).contains(b)), "{nonce:?}");
        assert!(seen.insert(nonce), "a nonce repeated");
    }

    // A handshake response with a wrong sequence id: ERR 1156, then the close.
    for bad in [0u8, 2, 7] {
        let (mut s, hs) = greet(proxy.addr);
        let auth =
            codec::mysql::auth::native_password_scramble(APP_SECRET.as_bytes(), hs.scramble());
        send(&mut s, bad, &response("app", "mysql_native_password", auth));
        let (_, payload) = read_packet(&mut s).expect("err");
        let e = ErrPacket::decode(payload).expect("err packet");
        assert_eq!((e.code, e.sql_state), (1156, Some(*b"08S01")), "seq {bad}");
        assert!(closed(&mut s), "seq {bad}");
    }

    // caching_sha2_password with an empty first answer (what libmariadb sends when the announced
    // plugin is another): switched, then logged in with the switched plugin's answer. The
    // answer to the switch must carry the next sequence id.
    for (good, expect_ok) in [(true, true), (false, false)] {
        let (mut s, _) = greet(proxy.addr);
        send(
            &mut s,
            1,
            &response("app", "caching_sha2_password", Vec::new()),
        );
        let (seq, payload) = read_packet(&mut s).expect("auth switch");
        assert_eq!(payload.first(), Some(&0xFE), "{payload:?}");
        let sw = codec::mysql::AuthSwitchRequest::decode(payload).expect("switch");
        assert_eq!(sw.plugin_name.as_ref(), b"mysql_native_password");
        let auth =
            codec::mysql::auth::native_password_scramble(APP_SECRET.as_bytes(), sw.scramble());
        send(&mut s, if good { seq + 1 } else { seq + 3 }, &auth);
        let (_, payload) = read_packet(&mut s).expect("reply");
        if expect_ok {
            assert_eq!(payload.first(), Some(&0), "{payload:?}");
        } else {
            assert_eq!(ErrPacket::decode(payload).expect("err").code, 1156);
            assert!(closed(&mut s));
        }
    }

    // The same start in COM_CHANGE_USER: switched, then changed.
    let (mut s, hs) = greet(proxy.addr);
    let auth = codec::mysql::auth::native_password_scramble(APP_SECRET.as_bytes(), hs.scramble());
    send(&mut s, 1, &response("app", "mysql_native_password", auth));
    assert_eq!(read_packet(&mut s).expect("ok").1.first(), Some(&0));
    let mut cu = b"\x11shaonly\x00\x00\x00".to_vec();
    cu.extend_from_slice(&45u16.to_le_bytes());
    cu.extend_from_slice(b"caching_sha2_password\x00");
    send(&mut s, 0, &cu);
    let (seq, payload) = read_packet(&mut s).expect("auth switch");
    let sw = codec::mysql::AuthSwitchRequest::decode(payload).expect("switch");
    assert_eq!(sw.plugin_name.as_ref(), b"caching_sha2_password");
    let auth = codec::mysql::auth::caching_sha2_scramble(APP_SECRET.as_bytes(), sw.scramble());
    send(&mut s, seq + 1, &auth);
    let (_, fast) = read_packet(&mut s).expect("fast auth");
    assert_eq!(fast.as_ref(), [0x01, 0x03]);
    assert_eq!(read_packet(&mut s).expect("ok").1.first(), Some(&0));

    // The real mariadb CLI, with caching_sha2_password as its default plugin and with its usual
    // default, for an account with both hashes and one with only the SHA-256 hash.
    for user in ["app", "shaonly"] {
        for plugin in [
            None,
            Some("caching_sha2_password"),
            Some("mysql_native_password"),
        ] {
            let mut cmd = mariadb_cli(proxy.addr.port(), user, APP_SECRET);
            if let Some(p) = plugin {
                cmd.arg(format!("--default-auth={p}"));
            }
            let out = cmd.args(["-e", "SELECT 42"]).output().expect("mariadb");
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "42",
                "{user} with {plugin:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A wrong password is still refused.
        let out = mariadb_cli(proxy.addr.port(), user, "wrong")
            .args(["--default-auth=caching_sha2_password", "-e", "SELECT 1"])
            .output()
            .expect("mariadb");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("1045"),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Python drivers log in as before (PyMySQL: mysql_native_password; mysql-connector:
    // caching_sha2_password computed on the first scramble, and after a switch).
    let out = python(
        r#"
import os, pymysql, mysql.connector
port = int(os.environ["PORT"]); pw = os.environ["PASSWORD"]
for user in ["app", "shaonly"]:
    c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw)
    cur = c.cursor(); cur.execute("SELECT 1"); print("pymysql", user, cur.fetchone()[0])
    for plugin in ["caching_sha2_password", "mysql_native_password"]:
        c = mysql.connector.connect(host="127.0.0.1", port=port, user=user, password=pw, auth_plugin=plugin, use_pure=True)
        cur = c.cursor(); cur.execute("SELECT 1"); print("connector", user, plugin, cur.fetchone()[0])
"#,
        proxy.addr.port(),
    )
    .expect("python drivers");
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" 1")).count(),
        6,
        "{out}"
    );
}

// ---------------------------------------------------------------- items 1 and 2, sharded listener

#[test]
fn sharded_listener_refuses_mariadb_executable_comments_and_obeys_allow_hints() {
    let server = testkit::MariaDb::start().expect("server");
    server
        .sql("CREATE DATABASE app_0; CREATE DATABASE app_1")
        .expect("schemas");
    let a = server.addr();
    let proxy = Proxy::start(move |port| {
        let mut s = format!(
            "[proxy]\nexecutors = 1\nshutdown_grace_ms = 2000\n\n\
             [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{port}\"\ngroup = \"g\"\n\n\
             [mysql_groups.g]\nuser = \"{u}\"\npassword = \"{p}\"\n\
             primary = {{ name = \"a\", address = \"{a}\" }}\n\n\
             [sharding.app]\nlistener = \"db\"\n\
             shards = [{{ name = \"s0\", group = \"g\", schema = \"app_0\" }}, \
             {{ name = \"s1\", group = \"g\", schema = \"app_1\" }}]\n\n\
             [[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n\
             physical = \"orders_{{0..1}}\"\n\n",
            u = testkit::APP_USER,
            p = testkit::APP_PASSWORD,
        );
        s.push_str(&user_block("app", APP_SECRET, ""));
        s.push_str(&user_block("nohints", APP_SECRET, "allow_hints = false"));
        s
    });
    let port = proxy.addr.port();
    cli(
        port,
        "app",
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id INT NOT NULL)",
    )
    .expect("ddl");
    cli(
        port,
        "app",
        "INSERT INTO orders (id, user_id) VALUES (1, 1), (2, 2)",
    )
    .expect("insert");
    // The planner would read `/*M! ... */` as a comment while the shards run it: refused.
    let e = cli(
        port,
        "app",
        "SELECT COUNT(*) FROM orders /*M!100000 WHERE user_id = 1 */",
    )
    .expect_err("refused");
    assert!(e.contains("ERROR 1235") && e.contains("/*M!"), "{e}");
    // In a string it is only text.
    assert_eq!(
        cli(
            port,
            "app",
            "SELECT COUNT(*) FROM orders WHERE '/*M!' <> ''"
        )
        .expect("count"),
        ["2"]
    );
    // A shard hint is followed for `app` and ignored for a user with allow_hints = false.
    let e = cli(port, "app", "/* furrow:shard=nope */ SELECT 1").expect_err("unknown shard");
    assert!(e.contains("unknown shard `nope`"), "{e}");
    assert_eq!(
        cli(port, "nohints", "/* furrow:shard=nope */ SELECT 1").expect("ignored"),
        ["1"]
    );
}

// ---------------------------------------------------------------- item 5, the shared budget

/// A raw connection logged in as `app` (mysql_native_password).
fn login_raw(addr: std::net::SocketAddr) -> TcpStream {
    let (mut s, hs) = greet(addr);
    let auth = codec::mysql::auth::native_password_scramble(APP_SECRET.as_bytes(), hs.scramble());
    send(&mut s, 1, &response("app", "mysql_native_password", auth));
    let (_, ok) = read_packet(&mut s).expect("login reply");
    assert_eq!(ok.first(), Some(&0), "login: {ok:?}");
    s
}

/// A COM_QUERY `SELECT LENGTH('yyy...')` of about `len` bytes, as one packet on the wire.
fn big_query(len: usize) -> (Vec<u8>, usize) {
    let n = len - 20;
    let payload = format!("\x03SELECT LENGTH('{}')", "y".repeat(n)).into_bytes();
    let mut wire = bytes::BytesMut::new();
    codec::mysql::encode_packet(0, &payload, &mut wire);
    (wire.to_vec(), n)
}

/// Reads a text result's single row of a single column.
fn single_value(s: &mut TcpStream) -> Result<String, ErrPacket> {
    let (_, first) = read_packet(s).expect("reply");
    if first.first() == Some(&0xFF) {
        return Err(ErrPacket::decode(first).expect("err"));
    }
    let _def = read_packet(s).expect("column");
    let _eof = read_packet(s).expect("eof");
    let (_, row) = read_packet(s).expect("row");
    let _eof = read_packet(s).expect("eof");
    Ok(String::from_utf8_lossy(&row[1..]).into_owned())
}

#[test]
fn a_listener_wide_budget_bounds_packets_being_received() {
    let rs = replica_set(1);
    let primary = rs.primary().addr();
    let replicas = [rs.replicas()[0].addr()];
    let proxy = Proxy::start(move |port| {
        config_toml(port, primary, &replicas, "").replacen(
            "group = \"main\"\n",
            "group = \"main\"\nclient_buffer_budget = 1048576\n",
            1,
        )
    });
    let (query, n) = big_query(900 * 1024);
    // A holds most of the budget with a packet it has not finished sending.
    let mut a = login_raw(proxy.addr);
    a.write_all(&query[..700 * 1024]).expect("a: first part");
    std::thread::sleep(Duration::from_millis(500));
    // B's packet does not fit beside it: ERR 1041, then the close.
    let mut b = login_raw(proxy.addr);
    let mut bw = b.try_clone().expect("clone");
    let part = query[..700 * 1024].to_vec();
    let pusher = std::thread::spawn(move || {
        let _ = bw.write_all(&part);
    });
    let e = single_value(&mut b).expect_err("b refused");
    assert_eq!((e.code, e.sql_state), (1041, Some(*b"HY000")), "{e:?}");
    assert!(closed(&mut b));
    pusher.join().expect("pusher");
    // A finishes and gets its answer.
    a.write_all(&query[700 * 1024..]).expect("a: rest");
    assert_eq!(single_value(&mut a).expect("a's result"), n.to_string());
    // Its share is free again once it is answered: C's packet of the same size fits.
    std::thread::sleep(Duration::from_millis(200));
    let mut c = login_raw(proxy.addr);
    c.write_all(&query).expect("c");
    assert_eq!(single_value(&mut c).expect("c's result"), n.to_string());
    // Ordinary statements are not charged at all.
    assert_eq!(proxy.value("SELECT 1"), "1");
}

/// `mariadb` CLI login with `password`: Ok(stdout) or Err(stderr).
fn cli_login(port: u16, password: &str) -> Result<String, String> {
    let out = mariadb_cli(port, "app", password)
        .args(["--connect-timeout=10", "--execute", "SELECT 1"])
        .output()
        .expect("mariadb CLI");
    stdout_or_stderr(&out)
}

/// Issue 15 item 6: failed logins are throttled per address — after `max_login_failures` wrong
/// passwords within `login_block_ms` the address is refused at connect (1129, even with the right
/// password) until the window ends; a successful login clears the count.
#[test]
fn failed_logins_block_the_address_for_a_while() {
    let db = testkit::MariaDb::start().expect("mariadb");
    let primary = db.addr();
    let proxy = Proxy::start(move |port| {
        config_toml(port, primary, &[], "").replacen(
            "[proxy]\n",
            "[proxy]\nmax_login_failures = 3\nlogin_block_ms = 2000\n",
            1,
        )
    });
    let port = proxy.addr.port();
    // Two failures, then a success: the count starts again.
    for _ in 0..2 {
        let e = cli_login(port, "wrong").expect_err("wrong password");
        assert!(e.contains("ERROR 1045"), "{e}");
    }
    assert_eq!(cli_login(port, APP_SECRET).as_deref(), Ok("1\n"));
    for _ in 0..3 {
        let e = cli_login(port, "wrong").expect_err("wrong password");
        assert!(e.contains("ERROR 1045"), "{e}");
    }
    let started = std::time::Instant::now();
    let e = cli_login(port, APP_SECRET).expect_err("blocked");
    // (The CLI reports a refusal before its TLS attempt as error 2002 quoting the server's 1129.)
    assert!(
        e.contains("1129") && e.contains("blocked because of many failed logins"),
        "{e}"
    );
    // The block ends with its window.
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(started.elapsed()));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match cli_login(port, APP_SECRET) {
            Ok(out) => {
                assert_eq!(out, "1\n");
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.contains("1129"), "{e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("still blocked after the window: {e}"),
        }
    }
}
