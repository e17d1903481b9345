//! Replica lag, dead replicas, a dead primary and a primary change by config reload, through the
//! proxy with the `mariadb` CLI.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

fn read_ids(proxy: &Proxy, n: usize) -> HashSet<String> {
    (0..n).map(|_| proxy.value("SELECT @@server_id")).collect()
}

#[test]
fn lagging_replicas_leave_and_return() {
    let rs = replica_set(2);
    let proxy = proxy_for(&rs, "");
    let r1 = rs.replica(0).server_id().to_string();
    let r2 = rs.replica(1).server_id().to_string();
    wait_until("both replicas readable", Duration::from_secs(10), || {
        read_ids(&proxy, 20).len() == 2
    });

    // Stopped SQL thread: Seconds_Behind_Master is NULL, so replica1 gets no reads.
    rs.stop_replica_sql(0).expect("stop sql");
    wait_until("replica1 out of reads", Duration::from_secs(10), || {
        read_ids(&proxy, 20) == HashSet::from([r2.clone()])
    });
    rs.start_replica_sql(0).expect("start sql");
    wait_until("replica1 back", Duration::from_secs(15), || {
        read_ids(&proxy, 20).contains(&r1)
    });

    // A delayed replica falls behind after a write and is taken out until it catches up.
    rs.set_replica_delay(1, 6).expect("delay");
    rs.primary()
        .sql("INSERT INTO app.t (v) VALUES ('lag')")
        .expect("write");
    wait_until("replica2 lagging", Duration::from_secs(15), || {
        rs.seconds_behind(1).ok().flatten().unwrap_or(0) > 2
    });
    wait_until("replica2 out of reads", Duration::from_secs(5), || {
        read_ids(&proxy, 20) == HashSet::from([r1.clone()])
    });
    wait_until(
        "replica2 back after catching up",
        Duration::from_secs(30),
        || read_ids(&proxy, 20).contains(&r2),
    );
    rs.set_replica_delay(1, 0).expect("undelay");

    // No replica usable: reads go to the primary.
    rs.stop_replica_sql(0).expect("stop 0");
    rs.stop_replica_sql(1).expect("stop 1");
    let p = rs.primary().server_id().to_string();
    wait_until("reads on the primary", Duration::from_secs(10), || {
        read_ids(&proxy, 10) == HashSet::from([p.clone()])
    });
    rs.start_replica_sql(0).expect("start 0");
    rs.start_replica_sql(1).expect("start 1");
}

#[test]
fn pooled_connections_survive_a_backend_restart() {
    let mut rs = replica_set(1);
    let proxy = proxy_for(&rs, "");
    proxy
        .sql("app", "INSERT INTO app.t (v) VALUES ('before')")
        .expect("write");
    rs.primary_mut().restart().expect("restart");
    let state = proxy.backends.get("main", "primary").expect("state");
    std::thread::sleep(Duration::from_millis(1200));
    wait_until("primary up again", Duration::from_secs(15), || {
        state.usable()
    });
    // The pooled connection was closed by the restart: it is noticed before use, not by a failed
    // write.
    proxy
        .sql("app", "INSERT INTO app.t (v) VALUES ('after-restart')")
        .expect("first write after the restart");
}

#[test]
fn dead_servers_and_primary_change_by_reload() {
    let mut rs = replica_set(2);
    let proxy = proxy_for(&rs, "");
    let r2 = rs.replica(1).server_id().to_string();
    wait_until("both replicas readable", Duration::from_secs(10), || {
        read_ids(&proxy, 20).len() == 2
    });

    // A killed replica: reads keep succeeding (retried elsewhere) and it is out within seconds.
    rs.replica_mut(0).kill();
    for _ in 0..20 {
        proxy.value("SELECT @@server_id");
    }
    wait_until("dead replica ejected", Duration::from_secs(5), || {
        read_ids(&proxy, 20) == HashSet::from([r2.clone()])
    });

    // A killed primary: writes fail with a clear error, reads continue on the replica.
    let primary_addr = rs.primary().addr();
    rs.primary_mut().kill();
    let msg = python(
        "import os, pymysql\nc = pymysql.connect(host='127.0.0.1', port=int(os.environ['PORT']), user='app', password=os.environ['PASSWORD'])\ntry:\n    c.cursor().execute(\"INSERT INTO app.t (v) VALUES ('lost')\")\n    print('no error')\nexcept Exception as e:\n    print('error', repr(e))\n",
        proxy.addr.port(),
    )
    .expect("python");
    assert!(msg.contains("error"), "{msg}");
    assert!(msg.contains("furrow") && msg.contains("'primary'"), "{msg}");
    assert_eq!(proxy.value("SELECT @@server_id"), r2);
    // Connecting with a schema still works (checked on a live server).
    let rows = testkit::sql_at(
        proxy.addr,
        "app",
        APP_SECRET,
        Some("app"),
        "SELECT DATABASE()",
    )
    .expect("connect with a schema while the primary is down");
    assert_eq!(rows[0][0].as_deref(), Some("app"));

    // Promote replica2 by config: stop replication there and publish a config naming it primary.
    let new_primary = rs.replica(1).addr();
    rs.replica(1)
        .sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0")
        .expect("promote");
    let toml = config_toml(proxy.addr.port(), new_primary, &[], "");
    proxy.reload(&toml);
    proxy
        .sql("app", "INSERT INTO app.t (v) VALUES ('after-failover')")
        .expect("write after reload");
    assert_eq!(
        rs.replica(1)
            .sql_value("SELECT COUNT(*) FROM app.t WHERE v = 'after-failover'")
            .expect("q"),
        Some("1".into())
    );
    assert_ne!(primary_addr, new_primary);
}

#[test]
fn read_your_writes_by_gtid() {
    let rs = replica_set(2);
    rs.set_replica_delay(0, 3).expect("delay 0");
    rs.set_replica_delay(1, 3).expect("delay 1");
    let proxy = proxy_for(
        &rs,
        "read_your_writes_mode = \"gtid\"\nmax_replica_lag_ms = 60000",
    );
    let primary = rs.primary().server_id().to_string();
    let out = python(
        r#"
import os, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"], autocommit=True)
cur = c.cursor()
cur.execute("SELECT @@server_id")
print("before", cur.fetchone()[0])
cur.execute("INSERT INTO app.t (v) VALUES ('ryw')")
lid = cur.lastrowid
cur.execute("SELECT v, @@server_id FROM app.t WHERE id = %s", (lid,))
print("own-write", cur.fetchone())
cur.execute("/* furrow:replica */ SELECT COUNT(*) FROM app.t WHERE id = %s", (lid,))
print("replica-count", cur.fetchone()[0])
"#,
        proxy.addr.port(),
    )
    .expect("python");
    let before = out
        .lines()
        .find_map(|l| l.strip_prefix("before "))
        .unwrap_or("");
    assert_ne!(
        before, primary,
        "reads go to replicas before any write: {out}"
    );
    assert!(
        out.contains(&format!("own-write ('ryw', {primary})")),
        "{out}"
    );
    // The replicas really are behind (so only GTID routing made the read see the write).
    assert!(out.contains("replica-count 0"), "{out}");
    rs.set_replica_delay(0, 0).expect("undelay 0");
    rs.set_replica_delay(1, 0).expect("undelay 1");
}
