//! A client's own XA transactions (`XA START ... END ... PREPARE ... COMMIT`, `XA RECOVER`,
//! `XA ROLLBACK`) on the read/write-split listener, through the `mariadb` CLI against a real
//! primary with a replica: every XA statement runs on the primary and pins the session there, so
//! the branch's reads see its own writes and a prepared branch can be finished from another
//! connection.

mod common;

use common::{proxy_for, replica_set};

#[test]
fn client_xa_is_pinned_to_the_primary_and_passed_through() {
    let rs = replica_set(1);
    let p = proxy_for(&rs, "");
    let primary = rs.primary();
    let count = |v: &str| {
        primary
            .sql_value(&format!("SELECT COUNT(*) FROM app.t WHERE v = '{v}'"))
            .expect("count")
            .unwrap_or_default()
    };

    // One branch from start to commit on one connection: the read inside the branch runs on
    // the primary (on the replica it would not see the uncommitted row).
    let rows = p
        .sql(
            "app",
            "XA START 'c1'; INSERT INTO app.t (v) VALUES ('xa1'); \
             SELECT COUNT(*) FROM app.t WHERE v = 'xa1'; XA END 'c1'; XA PREPARE 'c1'; \
             XA COMMIT 'c1'",
        )
        .expect("xa c1");
    assert_eq!(rows, vec![vec![Some("1".to_string())]]);
    assert_eq!(count("xa1"), "1");

    // A branch prepared and left by its connection...
    p.sql(
        "app",
        "XA START 'c2', 'b1'; INSERT INTO app.t (v) VALUES ('xa2'); XA END 'c2', 'b1'; \
         XA PREPARE 'c2', 'b1'",
    )
    .expect("xa c2");
    assert_eq!(count("xa2"), "0", "prepared, not committed");
    // ...is listed by XA RECOVER through the proxy (from the primary) and rolled back from
    // another connection.
    let rows = p.sql("app", "XA RECOVER").expect("xa recover");
    assert!(
        rows.iter()
            .any(|r| r.last().cloned().flatten().as_deref() == Some("c2b1")),
        "{rows:?}"
    );
    p.sql("app", "XA ROLLBACK 'c2', 'b1'").expect("xa rollback");
    assert_eq!(count("xa2"), "0");
    assert!(primary.sql("XA RECOVER").expect("recover").is_empty());

    // A one-phase commit, and the server's own errors passed through as they are.
    p.sql(
        "app",
        "XA START 'c3'; INSERT INTO app.t (v) VALUES ('xa3'); XA END 'c3'; XA COMMIT 'c3' ONE PHASE",
    )
    .expect("xa c3");
    assert_eq!(count("xa3"), "1");
    let e = p
        .sql("app", "XA START 'c4'; XA COMMIT 'c4'")
        .expect_err("commit of an active branch");
    assert!(e.to_string().contains("1399"), "{e}");
    let e = p
        .sql("app", "XA ROLLBACK 'nosuch'")
        .expect_err("unknown xid");
    assert!(e.to_string().contains("1397"), "{e}");
}
