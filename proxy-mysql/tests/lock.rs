//! `SELECT furrow_lock('name', timeout_s)` / `SELECT furrow_unlock('name')` on the read/write-split
//! listener, against a real MariaDB primary with two proxies in front of it (two independent
//! in-process proxies: two fleets members sharing nothing but the primary) and raw protocol
//! clients: mutual exclusion across proxies, FIFO waiters, a lock released when its holder's
//! connection dies, strictly increasing fencing tokens.

mod common;

use std::time::Duration;

use common::{RawClient, proxy_for, replica_set, wait_until};

/// Runs `sql` (a one-value SELECT) and returns the value, or the ERR's code and message.
fn select_u64(c: &mut RawClient, sql: &str) -> Result<u64, (u16, String)> {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    c.send(0, &p);
    let first = c.read().payload;
    if first.first() == Some(&0xff) {
        let code = u16::from_le_bytes([first[1], first[2]]);
        return Err((code, String::from_utf8_lossy(&first[9..]).into_owned()));
    }
    assert_eq!(first.as_ref(), &[1], "one column");
    let _def = c.read();
    let _eof = c.read();
    let row = c.read().payload;
    let _eof = c.read();
    let len = row[0] as usize;
    Ok(std::str::from_utf8(&row[1..1 + len])
        .expect("utf8")
        .parse()
        .expect("a number"))
}

#[test]
fn locks_exclude_across_proxies_queue_fifo_and_fence() {
    let rs = replica_set(0);
    let (p1, p2) = (proxy_for(&rs, ""), proxy_for(&rs, ""));
    let primary = rs.primary();
    let waiting = || {
        primary
            .sql_value(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT GET_LOCK(%'",
            )
            .expect("processlist")
            .unwrap_or_default()
    };

    // A holds the lock through proxy 1; B, through proxy 2, cannot get it.
    let mut a = RawClient::login(p1.addr, "app", None);
    let t1 = select_u64(&mut a, "SELECT furrow_lock('job', 5)").expect("A locks");
    assert!(t1 >= 1);
    assert_eq!(
        select_u64(&mut a, "SELECT furrow_lock('job', 5)"),
        Ok(t1),
        "held already: same token"
    );
    let mut b = RawClient::login(p2.addr, "app", None);
    assert_eq!(
        select_u64(&mut b, "SELECT furrow_lock('job', 0)"),
        Ok(0),
        "held through the other proxy"
    );
    assert_eq!(
        select_u64(&mut b, "SELECT furrow_unlock('job')"),
        Ok(0),
        "B holds nothing"
    );

    // C (proxy 2) then D (proxy 1) wait, in that order.
    let (p1a, p2a) = (p1.addr, p2.addr);
    let c = std::thread::spawn(move || {
        let mut c = RawClient::login(p2a, "app", None);
        let t = select_u64(&mut c, "SELECT furrow_lock('job', 60)");
        (c, t)
    });
    wait_until("C waits", Duration::from_secs(20), || waiting() == "1");
    let d = std::thread::spawn(move || {
        let mut d = RawClient::login(p1a, "app", None);
        let t = select_u64(&mut d, "SELECT furrow_lock('job', 60)");
        (d, t)
    });
    wait_until("D waits", Duration::from_secs(20), || waiting() == "2");

    // A unlocks: C, the first waiter, gets the next token; D keeps waiting.
    assert_eq!(select_u64(&mut a, "SELECT furrow_unlock('job')"), Ok(1));
    let (c_conn, t2) = c.join().expect("C");
    assert_eq!(t2, Ok(t1 + 1), "FIFO: C first, with the next token");
    assert_eq!(waiting(), "1", "D still waits");
    // C's client dies without unlocking (its socket closes, as when the process is killed):
    // the lease ends with it and D gets the lock.
    drop(c_conn);
    let (mut d_conn, t3) = d.join().expect("D");
    assert_eq!(t3, Ok(t1 + 2), "D next, with a larger token");
    assert_eq!(select_u64(&mut b, "SELECT furrow_lock('job', 0)"), Ok(0));
    assert_eq!(
        select_u64(&mut d_conn, "SELECT furrow_unlock('job')"),
        Ok(1)
    );
    assert_eq!(
        select_u64(&mut b, "SELECT furrow_lock('job', 0)"),
        Ok(t1 + 3),
        "free again; tokens only grow"
    );
    // Other names are independent locks with their own tokens.
    assert_eq!(select_u64(&mut a, "SELECT furrow_lock('other', 0)"), Ok(1));

    // Malformed calls get a precise error.
    let (code, msg) = select_u64(&mut a, "SELECT furrow_lock('job')").expect_err("no timeout");
    assert_eq!(code, 1582, "{msg}");
    assert!(
        msg.contains("usage: SELECT furrow_lock('name', timeout_s)"),
        "{msg}"
    );
}
