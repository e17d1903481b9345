//! Two control nodes on one test-kit MariaDB: a change made on one is served and pushed by the other, and
//! conflicting writes through both nodes are resolved by optimistic versioning.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use control::center::Center;
use control::server::Server;
use serde_json::json;

fn node(url: &str) -> Server {
    let store = control::store::open(url).unwrap();
    let envs = vec!["DEV".to_string(), "PRO".to_string()];
    let center: Arc<Center> = Center::open(store, envs, "admin", Some(ADMIN_TOKEN)).unwrap();
    Server::start(center, "127.0.0.1:0", 2).unwrap()
}

#[test]
fn two_nodes_share_one_mariadb() {
    let db = testkit::MariaDb::start().expect("start MariaDB");
    let url = format!("{}/furrow_control", db.url());
    let a = node(&url);
    let b = node(&url);
    let api_a = Api::new(&a, ADMIN_TOKEN);
    let api_b = Api::new(&b, ADMIN_TOKEN);
    api_a.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api_a.ok(
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "app"})),
    );
    let p = ns("shop", "DEV", "default", "app");
    set(&api_a, &p, "k", int(1));
    publish(&api_a, &p, json!({}));
    // Node B sees node A's release (after its catch-up poll).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(c) = api_b.call("GET", "/v1/configs/shop/DEV/default/app", None)
            && c["items"]["k"]["value"]["value"] == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B never saw node A's publish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let since = config(&api_b, "shop", "DEV", "default", "app", "")["version"]
        .as_u64()
        .unwrap();
    // A watcher on node B is woken by a publish on node A.
    let server_b = format!("http://{}", b.addr);
    let watcher = std::thread::spawn(move || {
        let c = control::client::ApiClient::new(&server_b, Some(ADMIN_TOKEN));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = format!("/v1/watch?app=shop&env=DEV&namespace=app&since={since}&timeout=20000");
        let r = rt
            .block_on(c.call_status("GET", &path, None, Duration::from_secs(30)))
            .unwrap();
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(200));
    set(&api_a, &p, "k", int(2));
    let t0 = Instant::now();
    publish(&api_a, &p, json!({"message": "via A"}));
    let ((status, body), at) = watcher.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["items"]["k"]["value"]["value"], 2);
    println!(
        "publish on A -> watcher on B: {:?}",
        at.saturating_duration_since(t0)
    );
    // Concurrent edits through both nodes from the same version: one wins, the other gets 409.
    let v = api_b.ok("GET", &format!("{p}/items/k"), None)["version"]
        .as_u64()
        .unwrap();
    let body = |x: i64| Some(json!({"value": int(x), "version": v}));
    let ra = api_a.call("PUT", &format!("{p}/items/k"), body(10));
    let rb = api_b.call("PUT", &format!("{p}/items/k"), body(20));
    assert!(ra.is_ok());
    match rb {
        Err(control::client::ClientError::Api { status: 409, error }) => {
            assert_eq!(error.code, control::ErrorCode::VersionConflict)
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    // A restarted node loads everything from the shared store.
    drop(api_b);
    b.stop();
    let c = node(&url);
    let api_c = Api::new(&c, ADMIN_TOKEN);
    assert_eq!(
        api_c.ok("GET", &format!("{p}/items/k"), None)["value"]["value"],
        10
    );
    assert_eq!(
        config(&api_c, "shop", "DEV", "default", "app", "")["items"]["k"]["value"]["value"],
        2
    );
    let releases = api_c.ok("GET", &format!("{p}/releases"), None);
    assert_eq!(releases["releases"].as_array().unwrap().len(), 2);
}

/// Issue 17, item 3: a stalled store (mariadbd stopped with SIGSTOP) does not freeze the node: health checks
/// and reads are served from memory, writes answer 503 after the bounded wait; all recover with the store.
#[test]
fn a_stalled_store_does_not_freeze_the_node() {
    let mut db = testkit::MariaDb::start().expect("start MariaDB");
    let url = format!("{}/furrow_control", db.url());
    let store = control::store::open(&url).unwrap();
    let mut opts =
        control::center::CenterOptions::new(vec!["DEV".to_string()], "admin", Some(ADMIN_TOKEN));
    opts.write_wait = Duration::from_millis(500);
    let srv = Server::start(Center::open_with(store, opts).unwrap(), "127.0.0.1:0", 2).unwrap();
    let api = Api::new(&srv, ADMIN_TOKEN);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api.ok(
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "app"})),
    );
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "k", int(1));
    publish(&api, &p, json!({}));
    db.pause().unwrap();
    // More concurrent writers than the service has workers: none may hold a worker.
    let server = format!("http://{}", srv.addr);
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let server = server.clone();
            let path = format!("{p}/items/w{i}");
            std::thread::spawn(move || {
                let c = control::client::ApiClient::new(&server, Some(ADMIN_TOKEN));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(c.call_status(
                    "PUT",
                    &path,
                    Some(&json!({"value": int(i)})),
                    Duration::from_secs(60),
                ))
            })
        })
        .collect();
    let short = Duration::from_secs(5);
    for _ in 0..20 {
        let (s, _) = api
            .status("GET", "/healthz", None, short)
            .expect("health check answered");
        assert_eq!(s, 200);
        let (s, c) = api
            .status("GET", "/v1/configs/shop/DEV/default/app", None, short)
            .expect("config read answered from memory");
        assert_eq!((s, &c["items"]["k"]["value"]["value"]), (200, &json!(1)));
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in writers {
        match w.join().unwrap() {
            Err(control::client::ClientError::Api { status: 503, error }) => {
                assert_eq!(error.code, control::ErrorCode::StoreUnavailable)
            }
            other => panic!("expected 503 while the store is stalled, got {other:?}"),
        }
    }
    db.resume().unwrap();
    // Writes work again once the store answers (the stalled writer's connection is replaced first).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match api.status(
            "PUT",
            &format!("{p}/items/after"),
            Some(json!({"value": int(2)})),
            Duration::from_secs(30),
        ) {
            Ok((200, _)) => break,
            // An earlier try was committed after its answer timed out: also recovered.
            Err(control::client::ClientError::Api { status: 409, .. }) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "writes never recovered: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    assert_eq!(
        api.ok("GET", &format!("{p}/items/after"), None)["value"]["value"],
        2
    );
}
