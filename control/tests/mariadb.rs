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
