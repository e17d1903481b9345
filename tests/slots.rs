//! `SLOTS PLAN` / `SLOTS REBALANCE` on the admin port of the `furrow` binary: two servers are added
//! to a slots group that one server held, the plan is run while a pipelined client writes and
//! reads, and the config file ends naming the new owners.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use common::{FurrowProcess, redis_cli};

fn encode(args: &[&str]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        b.extend(format!("${}\r\n{}\r\n", a.len(), a).bytes());
    }
    b
}

/// One reply, as text (bulk: its data, nil: "nil", others: the line).
fn read(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read");
    let line = line.trim_end().to_string();
    if let Some(n) = line.strip_prefix('$') {
        let n: i64 = n.parse().expect("len");
        if n < 0 {
            return "nil".into();
        }
        let mut buf = vec![0u8; n as usize + 2];
        r.read_exact(&mut buf).expect("bulk");
        buf.truncate(n as usize);
        return String::from_utf8_lossy(&buf).into_owned();
    }
    line
}

fn connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (s.try_clone().expect("clone"), BufReader::new(s))
}

#[test]
fn rebalance_onto_added_servers_under_load() {
    let servers: Vec<_> = (0..3)
        .map(|_| testkit::RedisServer::start().expect("redis-server"))
        .collect();
    let (admin, metrics, listen) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let cfg = format!(
        "# slots test\n[proxy]\nexecutors = 2\nadmin = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\n\n\
         [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"\ngroup = \"cache\"\n\n\
         [redis_groups.cache]\ndistribution = \"slots\" # r2 and r3 were just added\n\
         servers = [{{ name = \"r1\", address = \"{}\" }}, {{ name = \"r2\", address = \"{}\" }}, {{ name = \"r3\", address = \"{}\" }}]\n\
         slots = [{{ range = \"0-16383\", server = \"r1\" }}]\n",
        admin.port(),
        metrics.port(),
        listen.port(),
        servers[0].addr(),
        servers[1].addr(),
        servers[2].addr()
    );
    let p = FurrowProcess::start(&cfg, admin.port());
    let (mut w, mut r) = connect(listen.port());
    let mut pipe = Vec::new();
    for i in 0..3000 {
        pipe.extend(encode(&["SET", &format!("k{i}"), &format!("v{i}")]));
    }
    w.write_all(&pipe).expect("write");
    for _ in 0..3000 {
        assert_eq!(read(&mut r), "+OK");
    }

    let plan = redis_cli(admin.port(), &["SLOTS", "PLAN", "cache"]);
    assert!(plan.contains("RANGE"), "{plan}");
    assert!(plan.contains(" r2 ") && plan.contains(" r3 "), "{plan}");

    // A pipelined client keeps writing and reading its own keys meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let port = listen.port();
    let stop2 = stop.clone();
    let load = std::thread::spawn(move || {
        let (mut w, mut r) = connect(port);
        let mut round = 0usize;
        let mut last = std::collections::HashMap::new();
        while !stop2.load(Relaxed) {
            let mut pipe = Vec::new();
            for j in 0..16 {
                let (k, v) = (
                    format!("load{}", (round * 16 + j) % 500),
                    format!("{round}.{j}"),
                );
                pipe.extend(encode(&["SET", &k, &v]));
                pipe.extend(encode(&["GET", &k]));
                last.insert(k, v);
            }
            w.write_all(&pipe).expect("write");
            for j in 0..16 {
                assert_eq!(read(&mut r), "+OK", "round {round}");
                assert_eq!(read(&mut r), format!("{round}.{j}"), "round {round}");
            }
            round += 1;
        }
        last
    });

    let started = redis_cli(
        admin.port(),
        &["SLOTS", "REBALANCE", "cache", "RATE", "5000"],
    );
    assert!(started.contains("migration started"), "{started}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = redis_cli(admin.port(), &["SLOTS", "SHOW"]);
        assert!(!s.contains("failed"), "{s}\n{}", p.log());
        if s.contains(": done;") {
            break;
        }
        let log = p.log();
        let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
        assert!(std::time::Instant::now() < deadline, "{s}\n{tail}");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Relaxed);
    let last = load.join().expect("load");
    let show = redis_cli(admin.port(), &["SLOTS", "SHOW", "cache"]);
    eprintln!("{show}");

    // The file names the new owners, keeps its comments, and no range is moving any more.
    let file = std::fs::read_to_string(p.config_path()).expect("config");
    assert!(file.contains("# r2 and r3 were just added"), "{file}");
    assert!(!file.contains("migrating_to"), "{file}");
    let config = router::config::load(p.config_path()).expect("valid config");
    let g = config.redis_group("cache").expect("group");
    let table = router::redis::group_distribution(g).expect("table");
    let mut per = [0usize; 3];
    for r in &g.slots {
        let s = g
            .servers
            .iter()
            .position(|s| s.name == r.server)
            .expect("server");
        per[s] += usize::from(r.end - r.start) + 1;
    }
    assert!(per.iter().all(|&n| n > 4000), "{per:?}");

    // Every key is readable, and on exactly the server the table names.
    let (mut w, mut r) = connect(listen.port());
    for i in 0..3000 {
        w.write_all(&encode(&["GET", &format!("k{i}")]))
            .expect("write");
        assert_eq!(read(&mut r), format!("v{i}"));
    }
    for (k, v) in &last {
        w.write_all(&encode(&["GET", k])).expect("write");
        assert_eq!(&read(&mut r), v, "{k}");
    }
    let mut total = 0;
    for (s, server) in servers.iter().enumerate() {
        let keys = server.cmd(&["KEYS", "*"]);
        for k in keys.lines().filter(|l| !l.is_empty()) {
            total += 1;
            assert_eq!(table.server_for_key(k.as_bytes()), s, "{k} on r{}", s + 1);
        }
    }
    assert_eq!(total, 3000 + last.len());
    let again = redis_cli(admin.port(), &["SLOTS", "PLAN", "cache"]);
    assert!(again.contains("KEYS AFTER"), "{again}");
    let refused = redis_cli(admin.port(), &["SLOTS", "MIGRATE", "cache", "0-10", "r9"]);
    assert!(refused.contains("no server `r9`"), "{refused}");
}

/// An HTTP request on the metrics port with an optional bearer token: (status code, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

/// `furrow slots --admin ... <words>` with `FURROW_ADMIN_PASSWORD` = `password`: (success, stdout,
/// stderr).
fn furrow_slots(admin: u16, password: &str, words: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::furrow_bin())
        .args(["slots", "--admin", &format!("127.0.0.1:{admin}")])
        .args(words)
        .env("FURROW_ADMIN_PASSWORD", password)
        .output()
        .expect("furrow slots");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The slot commands over HTTP (metrics port, bearer admin password) and `furrow slots` (admin
/// port): a range moved through them ends on its new owner, every key readable.
#[test]
fn slot_migration_over_http_and_the_cli() {
    let servers: Vec<_> = (0..2)
        .map(|_| testkit::RedisServer::start().expect("redis-server"))
        .collect();
    let (admin, metrics, listen) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let cfg = format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{}\"\nadmin_password = \"s3cret\"\nmetrics = \"127.0.0.1:{}\"\n\n\
         [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"\ngroup = \"cache\"\n\n\
         [redis_groups.cache]\ndistribution = \"slots\"\n\
         servers = [{{ name = \"r1\", address = \"{}\" }}, {{ name = \"r2\", address = \"{}\" }}]\n\
         slots = [{{ range = \"0-16383\", server = \"r1\" }}]\n",
        admin.port(),
        metrics.port(),
        listen.port(),
        servers[0].addr(),
        servers[1].addr(),
    );
    let p = FurrowProcess::start(&cfg, admin.port());
    let (mut w, mut r) = connect(listen.port());
    let mut pipe = Vec::new();
    for i in 0..2000 {
        pipe.extend(encode(&["SET", &format!("k{i}"), &format!("v{i}")]));
    }
    w.write_all(&pipe).expect("write");
    for _ in 0..2000 {
        assert_eq!(read(&mut r), "+OK");
    }
    let m = metrics.port();

    // HTTP: the admin password is required; wrong methods, routes and parameters are refused.
    assert_eq!(http(m, "GET", "/slots", None).0, 401);
    assert_eq!(http(m, "GET", "/slots", Some("wrong")).0, 401);
    let (code, show) = http(m, "GET", "/slots", Some("s3cret"));
    assert_eq!(code, 200, "{show}");
    assert!(show.contains("cache"), "{show}");
    let (code, plan) = http(m, "GET", "/slots/plan/cache", Some("s3cret"));
    assert_eq!(code, 200, "{plan}");
    assert!(plan.contains("RANGE") && plan.contains(" r2 "), "{plan}");
    assert_eq!(
        http(m, "GET", "/slots/migrate/cache/0-4095/r2", Some("s3cret")).0,
        405
    );
    let (code, msg) = http(m, "POST", "/slots/migrate/cache/0-4095/r9", Some("s3cret"));
    assert_eq!(code, 400);
    assert!(msg.contains("no server `r9`"), "{msg}");
    let (code, msg) = http(m, "POST", "/slots/rebalance/cache?speed=1", Some("s3cret"));
    assert_eq!(code, 400);
    assert!(msg.contains("unknown parameter `speed`"), "{msg}");
    assert_eq!(http(m, "GET", "/slots/nothing/here", Some("s3cret")).0, 404);

    // The CLI: errors exit 1 with the admin port's message.
    let (ok, _, err) = furrow_slots(admin.port(), "wrong", &["show"]);
    assert!(!ok && err.contains("WRONGPASS"), "{err}");
    let (ok, _, err) = furrow_slots(admin.port(), "s3cret", &["migrate", "cache", "0-10"]);
    assert!(!ok && err.contains("usage: SLOTS MIGRATE"), "{err}");
    let (ok, out, err) = furrow_slots(admin.port(), "s3cret", &["plan", "cache"]);
    assert!(ok && out.contains("RANGE"), "{out}{err}");

    // Move 0-4095 to r2 over HTTP, follow it with the CLI.
    let (code, started) = http(
        m,
        "POST",
        "/slots/migrate/cache/0-4095/r2?rate=20000",
        Some("s3cret"),
    );
    assert_eq!(code, 200, "{started}");
    assert!(started.contains("migration started"), "{started}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, s, err) = furrow_slots(admin.port(), "s3cret", &["show", "cache"]);
        assert!(ok, "{err}");
        assert!(!s.contains("failed"), "{s}\n{}", p.log());
        if s.contains(": done;") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let file = std::fs::read_to_string(p.config_path()).expect("config");
    assert!(!file.contains("migrating_to"), "{file}");
    let config = router::config::load(p.config_path()).expect("valid config");
    let g = config.redis_group("cache").expect("group");
    assert!(
        g.slots
            .iter()
            .any(|s| s.start == 0 && s.end == 4095 && s.server == "r2"),
        "{file}"
    );
    // Every key readable through the proxy, and each on the server its slot names.
    let table = router::redis::group_distribution(g).expect("table");
    for i in 0..2000 {
        w.write_all(&encode(&["GET", &format!("k{i}")]))
            .expect("write");
        assert_eq!(read(&mut r), format!("v{i}"));
    }
    let mut total = 0;
    for (s, server) in servers.iter().enumerate() {
        for k in server.cmd(&["KEYS", "*"]).lines().filter(|l| !l.is_empty()) {
            total += 1;
            assert_eq!(table.server_for_key(k.as_bytes()), s, "{k}");
        }
    }
    assert_eq!(total, 2000);
    let (code, msg) = http(m, "POST", "/slots/stop", Some("s3cret"));
    assert_eq!(code, 200, "{msg}");
}
