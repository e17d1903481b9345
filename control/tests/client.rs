//! The client library against a real service: push, reports, snapshot fallback, restart on the same store.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use control::client::{ClientOptions, ConfigClient};
use serde_json::json;

fn options(server: &str, snapshot: Option<std::path::PathBuf>) -> ClientOptions {
    let mut o = ClientOptions::new(server, "shop", "DEV", "app");
    o.token = Some(ADMIN_TOKEN.into());
    o.instance.id = "proxy-1".into();
    o.instance.ip = "127.0.0.1".into();
    o.snapshot = snapshot;
    o.poll_timeout = Duration::from_secs(2);
    o.request_timeout = Duration::from_millis(500);
    o
}

#[test]
fn client_follows_publishes_and_reports_what_it_applied() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "k", int(1));
    let rules = json!({"type": "rules", "value": {"rules": [{"when": [{"op": "eq", "attr": "region", "value": "eu"}], "value": "eu-db"}], "default": "main-db"}});
    set(&api, &p, "db", rules);
    let r1 = publish(&api, &p, json!({}))["release"].as_u64().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let listener: control::client::Listener = Box::new(move |snap| {
        s2.fetch_add(1, Ordering::SeqCst);
        match snap.get_i64("k") {
            Some(k) if k < 0 => Err(format!("negative k {k}")),
            _ => Ok(()),
        }
    });
    let client = ConfigClient::start(
        options(&format!("http://{}", srv.addr), None),
        Some(listener),
    )
    .unwrap();
    assert_eq!(client.current().get_i64("k"), Some(1));
    // Dynamic values are evaluated locally with the caller's context.
    let mut ctx = BTreeMap::new();
    assert_eq!(
        client.current().evaluate("db", &ctx),
        Some(json!("main-db"))
    );
    ctx.insert("region".to_string(), "eu".to_string());
    assert_eq!(client.current().evaluate("db", &ctx), Some(json!("eu-db")));
    // The instance reported release r1.
    let reported = |id: u64| api.ok("GET", &format!("/v1/releases/{id}/instances"), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reported(r1).as_array().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no report for {r1}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(reported(r1)[0]["id"], "proxy-1");
    // A publish is pushed.
    set(&api, &p, "k", int(2));
    let r2 = publish(&api, &p, json!({}))["release"].as_u64().unwrap();
    let snap = client
        .wait_for(Duration::from_secs(5), |s| s.get_i64("k") == Some(2))
        .expect("push not received");
    assert_eq!(snap.releases, vec![r2]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reported(r2).as_array().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no report for {r2}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        reported(r1).as_array().unwrap().is_empty(),
        "the instance moved to r2"
    );
    // A config the listener rejects is not applied: the last good one stays. (Count offers before
    // publishing: the push can arrive before this thread looks.)
    let before = seen.load(Ordering::SeqCst);
    set(&api, &p, "k", int(-1));
    publish(&api, &p, json!({}));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.load(Ordering::SeqCst) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "listener never offered the bad config"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(client.current().get_i64("k"), Some(2));
    // The center shows the instance as rejected, with the listener's reason (issue 17, instance status).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let list = api.ok("GET", &format!("{p}/instances"), None);
        if list[0]["status"] == "rejected" {
            assert_eq!(list[0]["reason"], "negative k -1");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rejection shown: {list}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    client.stop();
}

#[test]
fn client_falls_back_to_its_snapshot_when_the_service_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let snap_path = dir.path().join("shop-app.json");
    let srv = start("sqlite::memory:");
    let server = format!("http://{}", srv.addr);
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "k", string("from-service"));
    publish(&api, &p, json!({}));
    let client = ConfigClient::start(options(&server, Some(snap_path.clone())), None).unwrap();
    assert!(!client.current().from_snapshot_file);
    assert!(snap_path.exists());
    // The service goes away: the client keeps serving the last known config.
    drop(api);
    srv.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(client.current().get_str("k"), Some("from-service"));
    client.stop();
    // Start-up with the service down: from the snapshot file.
    let client = ConfigClient::start(options(&server, Some(snap_path.clone())), None).unwrap();
    assert!(client.current().from_snapshot_file);
    assert_eq!(client.current().get_str("k"), Some("from-service"));
    client.stop();
    // No service and no snapshot: a clear error.
    let err = ConfigClient::start(
        options(&server, Some(dir.path().join("missing.json"))),
        None,
    )
    .err()
    .expect("must fail");
    assert!(err.to_string().contains("no configuration"), "{err}");
}

#[test]
fn client_catches_up_when_the_service_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("control.db");
    let url = format!("sqlite:{}", db.display());
    let srv = start(&url);
    let addr = srv.addr;
    let server = format!("http://{addr}");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "k", int(1));
    publish(&api, &p, json!({}));
    let client =
        ConfigClient::start(options(&server, Some(dir.path().join("snap.json"))), None).unwrap();
    drop(api);
    srv.stop();
    // Restart on the same address and store, publish a change: the client picks it up.
    let srv = start_on(&url, &addr.to_string());
    let api = Api::new(&srv, ADMIN_TOKEN);
    // Reports live in the service's memory: the client reports again once it reconnects, unchanged.
    let r1 = client.current().releases[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while api
        .ok("GET", &format!("/v1/releases/{r1}/instances"), None)
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no report after the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    set(&api, &p, "k", int(2));
    publish(&api, &p, json!({}));
    assert!(
        client
            .wait_for(Duration::from_secs(10), |s| s.get_i64("k") == Some(2))
            .is_some(),
        "client did not catch up"
    );
    client.stop();
}

#[test]
fn restart_on_the_same_sqlite_file_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("control.db").display());
    let (before, releases, audit_len, version) = {
        let srv = start(&url);
        let api = Api::new(&srv, ADMIN_TOKEN);
        seed(&api);
        api.ok("POST", "/v1/users", Some(json!({"name": "bob"})));
        let bob_token = api.ok("POST", "/v1/tokens", Some(json!({"user": "bob"})))["token"]
            .as_str()
            .unwrap()
            .to_string();
        api.ok(
            "PUT",
            "/v1/permissions",
            Some(json!({"subject": "user:bob", "app": "shop", "namespace": "*", "level": "read"})),
        );
        let p = ns("shop", "PRO", "east", "app");
        set(&api, &p, "k", int(1));
        publish(&api, &p, json!({"message": "one"}));
        set(&api, &p, "k", int(2));
        publish(
            &api,
            &p,
            json!({"mode": "gray", "rule": {"instances": ["g"]}}),
        );
        set(&api, &p, "draft-only", string("x"));
        let c = config(&api, "shop", "PRO", "east", "app", "instance=g");
        let releases = api.ok("GET", &format!("{p}/releases"), None);
        let audit = api
            .ok("GET", "/v1/audit?limit=1000", None)
            .as_array()
            .unwrap()
            .len();
        srv.stop();
        (c, releases, audit, bob_token)
    };
    let srv = start(&url);
    let api = Api::new(&srv, ADMIN_TOKEN);
    let p = ns("shop", "PRO", "east", "app");
    assert_eq!(
        config(&api, "shop", "PRO", "east", "app", "instance=g"),
        before
    );
    assert_eq!(
        config(&api, "shop", "PRO", "east", "app", "")["items"]["k"]["value"]["value"],
        1
    );
    assert_eq!(api.ok("GET", &format!("{p}/releases"), None), releases);
    assert_eq!(
        api.ok("GET", &format!("{p}/items/draft-only"), None)["value"]["value"],
        "x"
    );
    assert!(
        api.ok("GET", "/v1/audit?limit=1000", None)
            .as_array()
            .unwrap()
            .len()
            >= audit_len
    );
    // Tokens and grants survive too.
    let bob = Api::new(&srv, &version);
    assert_eq!(bob.ok("GET", "/v1/whoami", None)["name"], "bob");
    assert_eq!(
        bob.ok("GET", &format!("{p}/items"), None)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // New ids keep increasing after the restart.
    set(&api, &p, "k", int(3));
    let r = publish(&api, &p, json!({}))["release"].as_u64().unwrap();
    assert!(r > before["releases"][0].as_u64().unwrap());
}

/// Usage tracking (issue 17): the client counts the keys it reads and sends the totals; the center lists the
/// keys nobody read and which instances read a key. A reader with no grant on the namespace cannot report.
#[test]
fn key_reads_are_tracked_per_instance() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "used", int(1));
    set(&api, &p, "idle", int(2));
    publish(&api, &p, json!({}));
    let mut o = options(&format!("http://{}", srv.addr), None);
    o.usage_interval = Some(Duration::from_millis(50));
    let client = ConfigClient::start(o, None).unwrap();
    for _ in 0..3 {
        assert_eq!(client.current().get_i64("used"), Some(1));
    }
    assert_eq!(client.current().get_i64("missing"), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let u = loop {
        let u = api.ok("GET", &format!("{p}/usage?unused_for_ms=3600000"), None);
        if u["keys"]["used"]["reads"] == 3 {
            break u;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reads never arrived: {u}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(u["unused"], json!(["idle"]));
    assert_eq!(u["keys"]["used"]["instances"], 1);
    assert_eq!(u["keys"]["idle"]["reads"], 0);
    let who = api.ok("GET", &format!("{p}/usage/used"), None);
    assert_eq!(who[0]["id"], "proxy-1");
    assert_eq!(who[0]["reads"], 3);
    client.stop();
    // Usage reports need a credential for the namespace.
    let nobody = Api::new(&srv, &user_with(&api, "nobody", "none"));
    let body =
        json!({"app": "shop", "env": "DEV", "namespace": "app", "id": "x", "reads": {"idle": 1}});
    assert_eq!(nobody.err("POST", "/v1/usage", Some(body)).0, 403);
}
