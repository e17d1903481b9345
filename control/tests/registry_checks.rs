//! Active health checks run by the center against real servers: a Redis server (PING), a MariaDB server
//! (greeting; with credentials a login and COM_PING), an HTTP server (the center's own `/healthz`, and a path that answers 404) and a closed port
//! (TCP). Killing a server turns its instance unhealthy (discovery drops it, watchers are pushed); a
//! restarted one turns healthy again. The services' leases are long (60 s), so only the checks decide.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value as Json, json};

fn svc(name: &str) -> String {
    format!("/v1/registry/DEV/services/{name}")
}

/// Creates a live service with `check` and registers `(id, port)` instances on 127.0.0.1.
fn service(admin: &Api, name: &str, check: Json, instances: &[(&str, u16)]) {
    admin.ok(
        "PUT",
        &svc(name),
        Some(
            json!({"app": "shop", "owner": "ops", "docs": "https://wiki/x", "ttl_ms": 60000,
                    "check": check}),
        ),
    );
    admin.ok(
        "POST",
        &format!("{}/live", svc(name)),
        Some(json!({"live": true})),
    );
    for (id, port) in instances {
        admin.ok(
            "POST",
            &format!("{}/instances", svc(name)),
            Some(json!({"id": id, "ip": "127.0.0.1", "port": port})),
        );
    }
}

/// The healthy instance ids of a service (from discovery), sorted.
fn healthy(admin: &Api, name: &str) -> Vec<String> {
    let d = admin.ok("GET", &format!("{}/discover", svc(name)), None);
    let mut v: Vec<String> = d["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["healthy"] == true)
                .filter_map(|i| i["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn until_healthy(admin: &Api, name: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = healthy(admin, name);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: healthy {now:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn registry_health_checks_follow_real_servers() {
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));

    // Bad checks are refused naming the field.
    assert_eq!(
        admin.err(
            "PUT",
            &svc("bad"),
            Some(json!({"app": "shop", "check": {"kind": "http", "path": "x"}}))
        ),
        (400, "bad_request".into(), Some("check.path".into()))
    );
    assert_eq!(
        admin
            .err(
                "PUT",
                &svc("bad"),
                Some(json!({"app": "shop", "check": {"kind": "smtp"}}))
            )
            .0,
        400
    );

    let mut redis = testkit::RedisServer::start().expect("redis");
    let mut db = testkit::MariaDb::start().expect("mariadb");
    let closed = testkit::reserve_port().expect("port");
    let fast = |kind: &str| json!({"kind": kind, "interval_ms": 1000, "timeout_ms": 500});
    service(&admin, "kv", fast("redis"), &[("r", redis.port())]);
    service(&admin, "db", fast("mysql"), &[("m", db.port())]);
    // With credentials a MySQL check logs in and sends COM_PING: a wrong password fails although the
    // server greets.
    let login = |password: &str| {
        json!({"kind": "mysql", "interval_ms": 1000, "timeout_ms": 500,
               "user": testkit::APP_USER, "password": password})
    };
    service(
        &admin,
        "dbauth",
        login(testkit::APP_PASSWORD),
        &[("m", db.port())],
    );
    service(&admin, "dbbad", login("wrong"), &[("m", db.port())]);
    assert_eq!(
        admin.err(
            "PUT",
            &svc("bad"),
            Some(json!({"app": "shop", "check": {"kind": "redis", "user": "u"}}))
        ),
        (400, "bad_request".into(), Some("check.user".into()))
    );
    service(&admin, "tcp", fast("tcp"), &[("closed", closed.port())]);
    let center_port = server.addr.port();
    service(
        &admin,
        "web",
        json!({"kind": "http", "interval_ms": 1000, "timeout_ms": 500, "path": "/healthz"}),
        &[("center", center_port)],
    );
    service(
        &admin,
        "web404",
        json!({"kind": "http", "interval_ms": 1000, "timeout_ms": 500, "path": "/no-such-page"}),
        &[("center", center_port)],
    );

    // Live servers stay healthy; the closed port and the 404 turn unhealthy.
    until_healthy(&admin, "tcp", &[]);
    until_healthy(&admin, "web404", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(healthy(&admin, "kv"), ["r"]);
    assert_eq!(healthy(&admin, "db"), ["m"]);
    until_healthy(&admin, "dbbad", &[]);
    assert_eq!(healthy(&admin, "dbauth"), ["m"]);
    // The password is never shown; sent back masked, it is kept.
    let shown = admin.ok("GET", &svc("dbauth"), None)["service"]["check"].clone();
    assert_eq!(shown["password"], "******");
    assert_eq!(shown["user"], testkit::APP_USER);
    admin.ok(
        "PUT",
        &svc("dbauth"),
        Some(
            json!({"app": "shop", "owner": "ops", "docs": "https://wiki/x", "ttl_ms": 60000,
                    "check": shown}),
        ),
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        healthy(&admin, "dbauth"),
        ["m"],
        "the kept password still logs in"
    );
    let listed = admin
        .ok("GET", "/v1/registry/DEV/services", None)
        .to_string();
    assert!(!listed.contains(testkit::APP_PASSWORD), "{listed}");
    assert_eq!(healthy(&admin, "web"), ["center"]);

    // Killed servers turn unhealthy; a restarted one healthy again.
    redis.kill();
    db.kill();
    let killed = Instant::now();
    until_healthy(&admin, "kv", &[]);
    until_healthy(&admin, "db", &[]);
    until_healthy(&admin, "dbauth", &[]);
    eprintln!("killed → both unhealthy in {:?}", killed.elapsed());
    redis.restart().expect("restart redis");
    until_healthy(&admin, "kv", &["r"]);

    let stats = admin.ok("GET", "/v1/registry/stats", None);
    assert!(stats["checks_passed"].as_u64() > Some(0), "{stats}");
    assert!(stats["checks_failed"].as_u64() > Some(0), "{stats}");
}
