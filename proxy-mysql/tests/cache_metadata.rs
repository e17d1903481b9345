//! MariaDB's MARIADB_CLIENT_CACHE_METADATA through the read/write-split listener: the proxy's
//! backend connections negotiate it (executions of prepared statements then come without column
//! definitions the connection already has) and clients that ask for it get it too. Checked with
//! a raw client at the packet level, because what matters is exactly which definitions a client
//! is sent and which it is left to reuse:
//! - a client that caches metadata and is known to read the EOF after a skipped block (libmariadb)
//!   gets executions without definitions while the ones it holds
//!   are current, whichever backend connection ran them;
//! - a client that does not gets every execution with its definitions (put back by the proxy),
//!   sequence ids continuous;
//! - after the table changes, both get the new definitions: also when the connection that runs
//!   the execution prepared the statement after the change (the server then leaves the new
//!   definitions out, and the client still holds the old ones: the proxy puts them back).

mod common;

use std::time::Duration;

use codec::mysql::ColumnDefinition;
use codec::mysql::consts::capability::MARIADB_CLIENT_CACHE_METADATA;
use common::*;

/// One execution's reply as the client received it.
#[derive(Debug)]
struct Reply {
    /// The column count payload (with the metadata-follows byte when the client caches).
    count: Vec<u8>,
    /// Definitions sent with it (none when left out).
    defs: Vec<ColumnDefinition>,
    /// Row payloads.
    rows: Vec<Vec<u8>>,
}

fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xFE) && p.len() < 9
}

/// COM_STMT_PREPARE; returns the statement id and its column definitions.
fn prepare(c: &mut RawClient, sql: &str) -> (u32, Vec<ColumnDefinition>) {
    let mut p = vec![0x16];
    p.extend_from_slice(sql.as_bytes());
    c.send(0, &p);
    let ok = c.read().payload;
    assert_eq!(ok.first(), Some(&0), "prepare failed: {ok:?}");
    let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    let cols = u16::from_le_bytes([ok[5], ok[6]]);
    let params = u16::from_le_bytes([ok[7], ok[8]]);
    for _ in 0..params {
        c.read();
    }
    if params > 0 {
        assert!(is_eof(&c.read().payload));
    }
    let mut defs = Vec::new();
    for _ in 0..cols {
        defs.push(ColumnDefinition::decode(c.read().payload).expect("definition"));
    }
    if cols > 0 {
        assert!(is_eof(&c.read().payload));
    }
    (id, defs)
}

/// COM_STMT_EXECUTE of `id` with one BIGINT parameter; checks the sequence ids run on from 1.
fn execute(c: &mut RawClient, id: u32, param: i64, caches: bool) -> Reply {
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0]);
    p.extend_from_slice(&[0, 1, 0x08, 0]);
    p.extend_from_slice(&param.to_le_bytes());
    c.send(0, &p);
    let mut seq = 1u8;
    let mut next = |c: &mut RawClient| {
        let pk = c.read();
        assert_eq!(pk.seq, seq, "sequence ids run on");
        seq = seq.wrapping_add(1);
        pk.payload.to_vec()
    };
    let count = next(c);
    assert_ne!(count.first(), Some(&0xFF), "execution failed: {count:?}");
    let n = usize::from(count[0]);
    let follow = if caches {
        assert_eq!(
            count.len(),
            2,
            "a count with its metadata-follows byte: {count:?}"
        );
        count[1] == 1
    } else {
        assert_eq!(count.len(), 1, "a classic count: {count:?}");
        true
    };
    let mut defs = Vec::new();
    if follow {
        for _ in 0..n {
            defs.push(ColumnDefinition::decode(next(c).into()).expect("definition"));
        }
    }
    assert!(is_eof(&next(c)), "EOF after the definitions");
    let mut rows = Vec::new();
    loop {
        let r = next(c);
        if is_eof(&r) {
            break;
        }
        rows.push(r);
    }
    Reply { count, defs, rows }
}

/// Kills every connection of the proxy's backend user on `dbs` (the proxy opens new ones).
fn kill_backend_connections(dbs: &[&testkit::MariaDb]) {
    for db in dbs {
        let ids = db
            .sql(&format!(
                "SELECT id FROM information_schema.processlist WHERE user = '{}'",
                testkit::APP_USER
            ))
            .expect("processlist");
        for row in ids {
            if let Some(Some(id)) = row.first() {
                let _ = db.sql(&format!("KILL {id}"));
            }
        }
    }
}

#[test]
fn executions_leave_out_definitions_only_for_clients_that_hold_them() {
    let rs = replica_set(2);
    rs.primary()
        .sql("INSERT INTO app.t (id, v) VALUES (1, 'one'), (2, 'two')")
        .expect("rows");
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    let proxy = proxy_for(&rs, "");

    let (mut cached, ext) = RawClient::login_with(
        proxy.addr,
        "app",
        Some("app"),
        MARIADB_CLIENT_CACHE_METADATA,
        0,
        Some("libmariadb"),
    );
    assert_eq!(
        ext, MARIADB_CLIENT_CACHE_METADATA,
        "the proxy offers cached metadata as MariaDB does"
    );
    let mut plain = RawClient::login(proxy.addr, "app", Some("app"));
    // Any other client that caches metadata (here one that asks for CLIENT_DEPRECATE_EOF too,
    // not granted, as mysql_async does) gets every execution's definitions: a driver may skip
    // them only together with DEPRECATE_EOF, and misread the EOF that follows a skipped block.
    let (mut eofless, ext2) = RawClient::login_with(
        proxy.addr,
        "app",
        Some("app"),
        MARIADB_CLIENT_CACHE_METADATA,
        codec::mysql::consts::capability::CLIENT_DEPRECATE_EOF,
        Some("mysql_async"),
    );
    assert_eq!(ext2, MARIADB_CLIENT_CACHE_METADATA);
    let sql = "SELECT id, v FROM t WHERE id = ?";
    let (a, a_defs) = prepare(&mut cached, sql);
    let (b, b_defs) = prepare(&mut plain, sql);
    let (e, e_defs) = prepare(&mut eofless, sql);
    assert_eq!(a_defs, b_defs);
    assert_eq!(a_defs, e_defs);
    assert_eq!(a_defs[1].column_length, 400, "VARCHAR(100) in utf8mb4");

    // Steady state: reads spread over both replicas (each connection prepares the statement
    // once); the caching client is never sent definitions, the plain one always.
    for i in 0..8 {
        let r = execute(&mut cached, a, 1 + i % 2, true);
        assert_eq!(
            r.count,
            [2, 0],
            "definitions left out for the caching client"
        );
        assert!(r.defs.is_empty());
        let s = execute(&mut plain, b, 1 + i % 2, false);
        assert_eq!(
            s.defs, a_defs,
            "the plain client gets the definitions every time"
        );
        assert_eq!(r.rows, s.rows, "same rows either way");
        assert_eq!(r.rows.len(), 1);
        let t = execute(&mut eofless, e, 1 + i % 2, true);
        assert_eq!(t.count, [2, 1], "definitions always follow for this client");
        assert_eq!(t.defs, a_defs);
        assert_eq!(t.rows, s.rows);
    }

    // The column changes: both clients are sent the new definitions.
    proxy
        .sql("app", "ALTER TABLE app.t MODIFY v VARCHAR(50)")
        .expect("alter");
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    let mut held = a_defs.clone();
    for i in 0..6 {
        let r = execute(&mut cached, a, 1 + i % 2, true);
        if r.count[1] == 1 {
            held = r.defs.clone();
        }
        assert_eq!(
            held[1].column_length, 200,
            "the caching client holds the new definitions"
        );
        let s = execute(&mut plain, b, 1 + i % 2, false);
        assert_eq!(s.defs[1].column_length, 200);
        assert_eq!(r.rows, s.rows);
    }

    // The caching client prepares again, and the column changes back while its connections
    // go: the new ones prepare the statement after the change, so the server leaves the
    // definitions out of their executions — but the client holds the old ones, and must be
    // sent the connection's.
    let (a2, a2_defs) = prepare(&mut cached, sql);
    assert_eq!(a2_defs[1].column_length, 200);
    proxy
        .sql("app", "ALTER TABLE app.t MODIFY v VARCHAR(100)")
        .expect("alter back");
    rs.wait_caught_up(Duration::from_secs(30))
        .expect("caught up");
    let all: Vec<&testkit::MariaDb> = std::iter::once(rs.primary())
        .chain(rs.replicas().iter())
        .collect();
    kill_backend_connections(&all);
    // Idle connections are checked once they are older than the pool's stale-check age.
    std::thread::sleep(Duration::from_millis(1500));
    let r = execute(&mut cached, a2, 2, true);
    assert_eq!(
        r.count,
        [2, 1],
        "definitions put back for a client holding other ones"
    );
    assert_eq!(r.defs[1].column_length, 400);
    assert_eq!(r.rows.len(), 1);
    // Now it holds the connection's: left out again.
    for i in 0..4 {
        let r = execute(&mut cached, a2, 1 + i % 2, true);
        assert_eq!(r.count, [2, 0], "execution {i}");
    }
    // The plain client, whose connections are new too, is sent them as always.
    let s = execute(&mut plain, b, 2, false);
    assert_eq!(s.defs[1].column_length, 400);
}
