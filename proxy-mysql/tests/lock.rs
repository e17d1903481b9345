//! `SELECT furrow_lock('name', timeout_s)` / `SELECT furrow_unlock('name')` on the read/write-split
//! listener, against a real MariaDB primary with two proxies in front of it (two independent
//! in-process proxies: two fleets members sharing nothing but the primary) and raw protocol
//! clients: mutual exclusion across proxies, FIFO waiters, a lock released when its holder's
//! connection dies, strictly increasing fencing tokens. The same calls on a sharded listener hold
//! their locks on the primary of the sharding's first shard.

mod common;
#[path = "common/shard.rs"]
mod shard;

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

/// Not a test of its own: a proxy process for [`a_holder_killed_with_sigkill_frees_the_lock`]
/// (does nothing unless that test spawns this binary with `LOCK_CHILD_PRIMARY` set).
#[test]
fn lock_child_proxy() {
    let (Ok(primary), Ok(file)) = (
        std::env::var("LOCK_CHILD_PRIMARY"),
        std::env::var("LOCK_CHILD_PORT_FILE"),
    ) else {
        return;
    };
    let primary: std::net::SocketAddr = primary.parse().expect("addr");
    let proxy = common::Proxy::start(move |port| common::config_toml(port, primary, &[], ""));
    std::fs::write(&file, format!("{}\n", proxy.addr.port())).expect("port file");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_lock() {
    let rs = replica_set(0);
    let p = proxy_for(&rs, "");
    let primary = rs.primary();
    let mut b = RawClient::login(p.addr, "app", None);

    // A holder proxy process killed with SIGKILL while its client holds the lock.
    let file = std::env::temp_dir().join(format!(
        "furrow-lock-{}-{}.port",
        std::process::id(),
        primary.port()
    ));
    let _ = std::fs::remove_file(&file);
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "lock_child_proxy", "--nocapture"])
        .env("LOCK_CHILD_PRIMARY", primary.addr().to_string())
        .env("LOCK_CHILD_PORT_FILE", &file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the proxy process");
    wait_until("the proxy process serves", Duration::from_secs(30), || {
        std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n'))
    });
    let port: u16 = std::fs::read_to_string(&file)
        .expect("port")
        .trim()
        .parse()
        .expect("port number");
    let mut a = RawClient::login(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "app",
        None,
    );
    let t1 = select_u64(&mut a, "SELECT furrow_lock('k9', 0)").expect("A locks via the child");
    assert_eq!(select_u64(&mut b, "SELECT furrow_lock('k9', 0)"), Ok(0));
    child.kill().expect("SIGKILL the proxy");
    child.wait().expect("reaped");
    let _ = std::fs::remove_file(&file);
    // The primary sees the proxy's connection close: B gets the lock within its wait.
    let t2 = select_u64(&mut b, "SELECT furrow_lock('k9', 30)").expect("B locks");
    assert_eq!(t2, t1 + 1);

    // A holder client process (PyMySQL) killed with SIGKILL while it holds the lock.
    assert_eq!(select_u64(&mut b, "SELECT furrow_unlock('k9')"), Ok(1));
    // (The client idles while it holds the lock: a session is noticed dead when it next reads
    // from its client, not in the middle of a statement.)
    let mut cli = std::process::Command::new(common::python_interpreter())
        .arg("-c")
        .arg(
            "import os, time, pymysql\n\
             c = pymysql.connect(host='127.0.0.1', port=int(os.environ['PORT']), user='app', \
             password=os.environ['PASSWORD'])\n\
             cur = c.cursor(); cur.execute(\"SELECT furrow_lock('k9', 0)\"); print(cur.fetchone())\n\
             time.sleep(120)\n",
        )
        .env("PORT", p.addr.port().to_string())
        .env("PASSWORD", common::APP_SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python client");
    wait_until("the client holds the lock", Duration::from_secs(20), || {
        primary
            .sql_value("SELECT IS_USED_LOCK('furrow:k9')")
            .expect("is_used_lock")
            .is_some()
    });
    let mut c = RawClient::login(p.addr, "app", None);
    assert_eq!(select_u64(&mut c, "SELECT furrow_lock('k9', 0)"), Ok(0));
    cli.kill().expect("SIGKILL the client");
    cli.wait().expect("reaped");
    let t3 = select_u64(&mut c, "SELECT furrow_lock('k9', 30)").expect("C locks");
    assert_eq!(t3, t2 + 2, "the client's token was t2 + 1");
}

#[test]
fn lock_connections_are_pooled_and_a_dead_idle_one_is_replaced() {
    let rs = replica_set(0);
    let p = proxy_for(&rs, "");
    let primary = rs.primary();
    let connections = || -> u64 {
        primary
            .sql_value(
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                 WHERE VARIABLE_NAME = 'CONNECTIONS'",
            )
            .expect("status")
            .expect("a value")
            .parse()
            .expect("a number")
    };
    let mut a = RawClient::login(p.addr, "app", None);
    let first = select_u64(&mut a, "SELECT furrow_lock('pool', 0)").expect("lock");
    // The lock's connection, as the primary sees it.
    let holder = primary
        .sql_value("SELECT IS_USED_LOCK('furrow:pool')")
        .expect("is_used_lock")
        .expect("held");
    assert_eq!(select_u64(&mut a, "SELECT furrow_unlock('pool')"), Ok(1));
    let before = connections();
    const CYCLES: u64 = 20;
    for i in 1..=CYCLES {
        assert_eq!(
            select_u64(&mut a, "SELECT furrow_lock('pool', 0)"),
            Ok(first + i)
        );
        assert_eq!(select_u64(&mut a, "SELECT furrow_unlock('pool')"), Ok(1));
    }
    // One new connection: the status query itself (without the pool: one per acquire).
    let opened = connections() - before;
    assert!(opened <= 2, "{opened} connections for {CYCLES} lock cycles");
    // The idle lock connection killed on the server: the next acquire still succeeds, on a new one.
    let holder_now = {
        let t = select_u64(&mut a, "SELECT furrow_lock('pool', 0)").expect("lock");
        assert_eq!(t, first + CYCLES + 1);
        primary
            .sql_value("SELECT IS_USED_LOCK('furrow:pool')")
            .expect("is_used_lock")
            .expect("held")
    };
    assert_eq!(holder_now, holder, "the same, pooled connection");
    assert_eq!(select_u64(&mut a, "SELECT furrow_unlock('pool')"), Ok(1));
    primary.sql(&format!("KILL {holder}")).expect("kill");
    assert_eq!(
        select_u64(&mut a, "SELECT furrow_lock('pool', 0)"),
        Ok(first + CYCLES + 2)
    );
    let replaced = primary
        .sql_value("SELECT IS_USED_LOCK('furrow:pool')")
        .expect("is_used_lock")
        .expect("held");
    assert_ne!(replaced, holder);
}

/// The sharded listener: `furrow_lock` / `furrow_unlock` hold their locks on the primary of the
/// sharding's first shard (server a), the same locks and tokens as a read/write-split listener
/// over that server.
#[test]
fn locks_on_a_sharded_listener_live_on_the_first_shards_primary() {
    let s = shard::Setup::with(shard::Layout {
        group_a: String::new(),
        b_connect_timeout_ms: 1000,
        group_b: String::new(),
        sharding: String::new(),
        tables: "[[sharding.app.tables]]\nname = \"t\"\nkey = \"id\"\nalgorithm = \"hash\"\n\n"
            .into(),
        reference: false,
    });
    s.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let waiting = |srv: &testkit::MariaDb| {
        srv.sql_value(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT GET_LOCK(%'",
        )
        .expect("processlist")
        .unwrap_or_default()
    };
    let at = s.proxy.addr;
    let mut a = RawClient::login(at, "app", None);
    let t1 = select_u64(&mut a, "  select FURROW_LOCK('job', 5);").expect("A locks");
    assert!(t1 >= 1);
    assert_eq!(
        select_u64(&mut a, "SELECT furrow_lock('job', 5)"),
        Ok(t1),
        "held already: same token"
    );
    // The lock is on server a (the first shard's), its token in server a's furrow.lock_tokens.
    assert_eq!(
        s.servers[0]
            .sql_value("SELECT IS_USED_LOCK('furrow:job') IS NOT NULL")
            .expect("lock state"),
        Some("1".into())
    );
    assert_eq!(
        s.servers[1]
            .sql_value("SELECT IS_USED_LOCK('furrow:job') IS NOT NULL")
            .expect("lock state"),
        Some("0".into())
    );
    assert_eq!(
        s.servers[0]
            .sql_value("SELECT token FROM furrow.lock_tokens WHERE name = 'job'")
            .expect("token"),
        Some(t1.to_string())
    );

    // B, through the same sharded listener, cannot get it; then waits for it.
    let mut b = RawClient::login(at, "app", None);
    assert_eq!(select_u64(&mut b, "SELECT furrow_lock('job', 0)"), Ok(0));
    assert_eq!(select_u64(&mut b, "SELECT furrow_unlock('job')"), Ok(0));
    let waiter = std::thread::spawn(move || {
        let t = select_u64(&mut b, "SELECT furrow_lock('job', 60)");
        (b, t)
    });
    wait_until("B waits", Duration::from_secs(20), || {
        waiting(&s.servers[0]) == "1"
    });
    // A's session goes on with sharded statements while it holds the lock.
    s.sql("INSERT INTO t (id, v) VALUES (1, 1), (2, 2), (3, 3)");
    assert_eq!(
        s.sql("SELECT COUNT(*) FROM t"),
        vec![vec![Some("3".to_string())]]
    );
    assert_eq!(select_u64(&mut a, "SELECT furrow_unlock('job')"), Ok(1));
    let (b, t2) = waiter.join().expect("B");
    assert_eq!(t2, Ok(t1 + 1), "B next, with the next token");

    // A read/write-split proxy over server a shares the locks and the tokens.
    let primary = s.servers[0].addr();
    let plain = common::Proxy::start(move |port| common::config_toml(port, primary, &[], ""));
    let mut c = RawClient::login(plain.addr, "app", None);
    assert_eq!(
        select_u64(&mut c, "SELECT furrow_lock('job', 0)"),
        Ok(0),
        "held through the sharded listener"
    );
    // B's client dies without unlocking: the lease ends with its connection.
    drop(b);
    wait_until("the lock is free", Duration::from_secs(20), || {
        select_u64(&mut c, "SELECT furrow_lock('job', 0)") == Ok(t1 + 2)
    });
    assert_eq!(
        select_u64(&mut a, "SELECT furrow_lock('job', 0)"),
        Ok(0),
        "held through the other proxy"
    );

    // Malformed calls get the same precise error.
    let (code, msg) = select_u64(&mut a, "SELECT furrow_unlock()").expect_err("no name");
    assert_eq!(code, 1582, "{msg}");
    assert!(msg.contains("usage: SELECT furrow_unlock('name')"), "{msg}");
}
