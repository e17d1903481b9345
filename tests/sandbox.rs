//! `furrow sandbox --json`: the README's "try it" command starts real backends and the proxies, prints
//! every endpoint as one JSON line, serves real clients, and removes everything on Ctrl-C (SIGINT).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{mariadb_as, redis_cli};

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("address with port")
}

#[test]
fn sandbox_serves_real_clients_and_cleans_up_on_ctrl_c() {
    let mut child = Command::new(common::furrow_bin())
        .args(["sandbox", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn furrow sandbox");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(l) if !l.is_empty() => l,
        other => {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "no JSON line ({other:?}); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let redis = port_of(v["redis"].as_str().expect("redis"));
    let mysql = port_of(v["mysql"].as_str().expect("mysql"));
    let admin = port_of(v["admin"].as_str().expect("admin"));
    let backends = v["backends"].as_array().expect("backends").clone();
    assert_eq!(
        backends.len(),
        8,
        "3 redis + primary + 2 replicas + 2 shards: {v}"
    );

    // Redis through the proxy, keys spread over the three servers.
    for i in 0..30 {
        assert_eq!(
            redis_cli(redis, &["SET", &format!("key:{i}"), &i.to_string()]),
            "OK"
        );
    }
    assert_eq!(redis_cli(redis, &["GET", "key:7"]), "7");
    let mut holding = 0;
    for b in backends.iter().filter(|b| b["kind"] == "redis") {
        let n: u64 = redis_cli(port_of(b["address"].as_str().expect("addr")), &["DBSIZE"])
            .parse()
            .expect("int");
        holding += usize::from(n > 0);
    }
    assert!(holding >= 2, "keys should be spread over the shards");
    assert!(redis_cli(admin, &["INFO"]).contains("listener_db:kind=mysql"));

    // MySQL through the proxy with the printed user and password, with the real `mariadb` client.
    let (user, pw) = (
        v["user"].as_str().expect("user"),
        v["password"].as_str().expect("password"),
    );
    assert_eq!(mariadb_as(mysql, user, pw, &[], "SELECT 40 + 2"), "42");

    // The sharded database: DDL creates every physical table, rows spread over the shard servers, and
    // a cross-shard aggregate comes back merged.
    let sharded = port_of(v["mysql_sharded"].as_str().expect("mysql_sharded"));
    let app_sql = |q: &str| mariadb_as(sharded, user, pw, &["-D", "app"], q);
    app_sql("CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id INT, amount DECIMAL(10,2))");
    let values: Vec<String> = (1..=40).map(|u| format!("({u}, {u}.50)")).collect();
    app_sql(&format!(
        "INSERT INTO orders (user_id, amount) VALUES {}",
        values.join(",")
    ));
    assert_eq!(
        app_sql("SELECT COUNT(*), SUM(amount) FROM orders"),
        "40\t840.00"
    );
    assert_eq!(
        app_sql("SELECT user_id FROM orders ORDER BY amount DESC LIMIT 3"),
        "40\n39\n38"
    );
    let (buser, bpw) = (
        v["backend_user"].as_str().expect("user"),
        v["backend_password"].as_str().expect("pw"),
    );
    let mut per_server = Vec::new();
    for b in backends
        .iter()
        .filter(|b| b["role"] == "shard" && b["kind"] == "mariadb")
    {
        let port = port_of(b["address"].as_str().expect("addr"));
        let tables = mariadb_as(
            port,
            buser,
            bpw,
            &[],
            "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_NAME LIKE 'orders\\_%'",
        );
        let tables: Vec<&str> = tables.lines().collect();
        assert_eq!(
            tables.len(),
            4,
            "each shard server holds 4 of the 8 physical tables: {tables:?}"
        );
        let rows: u64 = tables
            .iter()
            .map(|t| {
                mariadb_as(port, buser, bpw, &[], &format!("SELECT COUNT(*) FROM {t}"))
                    .parse::<u64>()
                    .expect("count")
            })
            .sum();
        per_server.push(rows);
    }
    assert_eq!(per_server.iter().sum::<u64>(), 40, "{per_server:?}");
    assert!(
        per_server.iter().all(|n| *n > 0),
        "rows on both shard servers: {per_server:?}"
    );

    // Ctrl-C: the process exits and every backend is gone.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sandbox did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for b in &backends {
        let port = port_of(b["address"].as_str().expect("addr"));
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "backend {b} still listening after the sandbox stopped"
        );
    }
}
