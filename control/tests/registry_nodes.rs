//! The registry on two control nodes over one test-kit MariaDB: an instance registered and kept alive by a
//! real Python process (stdlib HTTP) on node A is discovered on node B; killing the process turns it
//! unhealthy on both nodes; a watcher on B is woken by a change made on A; beats moving to node B move the
//! lease there, and A's old lease does not mark the instance unhealthy.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use control::center::Center;
use control::server::Server;
use serde_json::{Value as Json, json};

const SVC: &str = "/v1/registry/DEV/services/orders";

fn node(url: &str) -> Server {
    let store = control::store::open(url).unwrap();
    let envs = vec!["DEV".to_string(), "PRO".to_string()];
    let center: Arc<Center> = Center::open(store, envs, "admin", Some(ADMIN_TOKEN)).unwrap();
    Server::start(center, "127.0.0.1:0", 2).unwrap()
}

/// Instance `id` as a node sees it (None until that node knows the service and the instance).
fn instance(api: &Api, id: &str) -> Option<Json> {
    api.call("GET", SVC, None).ok()?["instances"]
        .as_array()?
        .iter()
        .find(|i| i["id"] == id)
        .cloned()
}

/// Waits (bounded) until `pred` holds for instance `id` on `api`'s node.
fn until(api: &Api, id: &str, what: &str, pred: impl Fn(&Json) -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if instance(api, id).is_some_and(|i| pred(&i)) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: {:?}", instance(api, id));
        std::thread::sleep(Duration::from_millis(20));
    }
}

const PY: &str = r#"
import json, sys, time, urllib.request
base, token, svc = sys.argv[1], sys.argv[2], sys.argv[3]
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status
call("POST", svc + "/instances", {"id": "py-1", "ip": "127.0.0.1", "port": 8080, "version": "1.4.2",
     "metadata": {"lang": "python"}})
print("registered", flush=True)
while True:
    call("PUT", svc + "/instances/py-1/beat")
    time.sleep(0.2)
"#;

#[test]
fn two_nodes_agree_on_health_over_one_mariadb() {
    if Command::new("python3").arg("--version").output().is_err() {
        panic!("python3 is required by this test");
    }
    let db = testkit::MariaDb::start().expect("start MariaDB");
    let url = format!("{}/furrow_registry", db.url());
    let a = node(&url);
    let b = node(&url);
    let api_a = Api::new(&a, ADMIN_TOKEN);
    let api_b = Api::new(&b, ADMIN_TOKEN);
    api_a.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api_a.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d", "ttl_ms": 1500})),
    );
    api_a.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    let bot = user_with(&api_a, "py-bot", "edit");

    // A Python process registers on node A and beats every 200 ms.
    let mut py = Command::new("python3")
        .args(["-c", PY, &format!("http://{}", a.addr), &bot, SVC])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(py.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "registered");
    }
    let node_a = api_a.ok("GET", "/v1/registry/stats", None)["node"].clone();
    until(&api_b, "py-1", "B sees the registration", |i| {
        i["healthy"] == true && i["owner_node"] == node_a && i["metadata"]["lang"] == "python"
    });
    // Several TTLs of beats: still healthy on both, and the beats wrote nothing.
    std::thread::sleep(Duration::from_millis(3500));
    for api in [&api_a, &api_b] {
        assert_eq!(instance(api, "py-1").unwrap()["healthy"], true);
    }
    let stats = api_a.ok("GET", "/v1/registry/stats", None);
    assert!(stats["beats_in_memory"].as_u64().unwrap() >= 10, "{stats}");
    assert_eq!(stats["beats_written"], 0, "{stats}");

    // A watcher on node B, parked on the current revision.
    let rev = api_b.ok("GET", &format!("{SVC}/discover"), None)["rev"]
        .as_u64()
        .unwrap();
    let watcher = {
        let addr = format!("http://{}", b.addr);
        std::thread::spawn(move || {
            let c = control::client::ApiClient::new(&addr, Some(ADMIN_TOKEN));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let r = rt
                .block_on(c.call_status(
                    "GET",
                    &format!("/v1/registry/watch?env=DEV&service=orders&since={rev}&timeout=30000"),
                    None,
                    Duration::from_secs(40),
                ))
                .unwrap();
            (r, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(200));

    // Kill the instance: unhealthy on both nodes.
    py.kill().unwrap();
    let killed = Instant::now();
    py.wait().unwrap();
    let on_a = until(&api_a, "py-1", "A marks it unhealthy", |i| {
        i["healthy"] == false
    });
    let on_b = until(&api_b, "py-1", "B marks it unhealthy", |i| {
        i["healthy"] == false
    });
    println!(
        "killed → unhealthy: node A {:?}, node B {:?} (TTL 1.5 s)",
        on_a - killed,
        on_b - killed
    );
    let ((status, body), woke) = watcher.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body["instances"],
        json!([]),
        "the watcher on B sees it gone"
    );
    println!("watcher on B woken {:?} after the kill", woke - killed);

    // Beats moving between nodes move the lease: a beat on A (A owns it again, with a live lease), then
    // beats on B only. When A's lease runs out, A no longer owns the instance and writes nothing.
    let beat_a = Api::new(&a, &bot);
    let beat_b = Api::new(&b, &bot);
    beat_a.ok("PUT", &format!("{SVC}/instances/py-1/beat"), None);
    until(&api_b, "py-1", "B sees A's ownership", |i| {
        i["healthy"] == true && i["owner_node"] == node_a
    });
    beat_b.ok("PUT", &format!("{SVC}/instances/py-1/beat"), None);
    let node_b = api_b.ok("GET", "/v1/registry/stats", None)["node"].clone();
    until(&api_a, "py-1", "A sees B's ownership", |i| {
        i["healthy"] == true && i["owner_node"] == node_b
    });
    let deadline = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < deadline {
        beat_b.ok("PUT", &format!("{SVC}/instances/py-1/beat"), None);
        std::thread::sleep(Duration::from_millis(200));
    }
    for api in [&api_a, &api_b] {
        let i = instance(api, "py-1").unwrap();
        assert_eq!(
            (i["healthy"].clone(), i["owner_node"].clone()),
            (json!(true), node_b.clone())
        );
    }
    let stats_a = api_a.ok("GET", "/v1/registry/stats", None);
    assert_eq!(stats_a["leases"], 0, "A dropped its stale lease: {stats_a}");
}

/// A control node that dies leaves no instance healthy for ever: once it has been silent for
/// `NODE_DEAD_MS`, another node takes over its leases; instances that beat there stay healthy, the others
/// expire after their TTL.
#[test]
fn a_dead_nodes_leases_are_taken_over() {
    let db = testkit::MariaDb::start().expect("start MariaDB");
    let url = format!("{}/furrow_registry_takeover", db.url());
    let a = node(&url);
    let b = node(&url);
    let api_a = Api::new(&a, ADMIN_TOKEN);
    let api_b = Api::new(&b, ADMIN_TOKEN);
    api_a.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api_a.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d", "ttl_ms": 1000})),
    );
    api_a.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    for id in ["silent", "alive"] {
        api_a.ok(
            "POST",
            &format!("{SVC}/instances"),
            Some(json!({"id": id, "ip": "127.0.0.1", "port": 1})),
        );
    }
    let node_a = api_a.ok("GET", "/v1/registry/stats", None)["node"].clone();
    until(&api_b, "silent", "B sees the registration", |i| {
        i["owner_node"] == node_a
    });
    // Node A dies; "alive" moves its beats to B at once, "silent" never beats again.
    a.stop();
    let died = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beater = {
        let stop = stop.clone();
        let addr = format!("http://{}", b.addr);
        std::thread::spawn(move || {
            let c = control::client::ApiClient::new(&addr, Some(ADMIN_TOKEN));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                rt.block_on(c.call("PUT", &format!("{SVC}/instances/alive/beat"), None))
                    .unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let gone = until(
        &api_b,
        "silent",
        "B expires the dead node's instance",
        |i| i["healthy"] == false,
    );
    println!(
        "node died → its silent instance unhealthy on B: {:?}",
        gone - died
    );
    let alive = instance(&api_b, "alive").unwrap();
    let node_b = api_b.ok("GET", "/v1/registry/stats", None)["node"].clone();
    assert_eq!(
        (alive["healthy"].clone(), alive["owner_node"].clone()),
        (json!(true), node_b)
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    beater.join().unwrap();
    let stats = api_b.ok("GET", "/v1/registry/stats", None);
    assert!(stats["leases_taken_over"].as_u64().unwrap() >= 1, "{stats}");
}

/// A node with the jobs runtime attached, as `furrow control` runs: call statistics live in its tables.
fn node_with_runtime(url: &str) -> Server {
    let store = control::store::open(url).unwrap();
    let envs = vec!["DEV".to_string(), "PRO".to_string()];
    let center: Arc<Center> = Center::open(store, envs, "admin", Some(ADMIN_TOKEN)).unwrap();
    control::jobs::attach(&center, url, Default::default()).unwrap();
    Server::start(center, "127.0.0.1:0", 2).unwrap()
}

/// A report with a latency histogram: `fast` calls ≤ 1 ms and `slow` ones ≤ 50 ms.
fn report(reporter: &str, version: &str, fast: u64, slow: u64, errors: u64) -> Json {
    let mut buckets = vec![0u64; router::latency::BUCKETS];
    buckets[router::latency::bucket(900)] = fast;
    buckets[router::latency::bucket(45_000)] = slow;
    json!({"reporter": reporter, "calls": [{"version": version, "calls": fast + slow,
        "errors": errors, "latency_us": fast * 900 + slow * 45_000, "max_latency_us": 45_000,
        "buckets": buckets}]})
}

#[test]
fn call_statistics_are_shared_by_both_nodes_and_survive_a_restart() {
    let db = testkit::MariaDb::start().expect("start MariaDB");
    let url = format!("{}/furrow_registry_calls", db.url());
    let a = node_with_runtime(&url);
    let b = node_with_runtime(&url);
    let api_a = Api::new(&a, ADMIN_TOKEN);
    let api_b = Api::new(&b, ADMIN_TOKEN);
    api_a.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api_a.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d"})),
    );
    let calls = format!("{SVC}/calls");
    // B must know the service (its catch-up poll) before it takes reports for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api_b.call("GET", SVC, None).is_err() {
        assert!(Instant::now() < deadline, "B never saw the service");
        std::thread::sleep(Duration::from_millis(20));
    }
    // One reporter per node, on two versions; the library's recorder reports a third time on A.
    api_a.ok("POST", &calls, Some(report("app-1", "1.0", 98, 2, 1)));
    api_b.ok("POST", &calls, Some(report("app-2", "1.0", 100, 0, 0)));
    api_b.ok(
        "POST",
        &calls,
        Some(report("app-2", "2.0-canary", 10, 10, 5)),
    );
    let rec = control::registry::calls::CallRecorder::start(
        control::client::ApiClient::new(&format!("http://{}", a.addr), Some(ADMIN_TOKEN)),
        "DEV",
        "orders",
        "app-3",
        Duration::from_millis(100),
    )
    .unwrap();
    for _ in 0..4 {
        rec.record("2.0-canary", false, Duration::from_micros(700));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = api_b.ok("GET", &calls, None);
        if v["versions"][1]["calls"] == 24 {
            break;
        }
        assert!(Instant::now() < deadline, "the recorder's report: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    rec.stop();
    // Both nodes answer the same numbers, from the shared tables.
    let seen_a = api_a.ok("GET", &calls, None);
    let seen_b = api_b.ok("GET", &calls, None);
    assert_eq!(seen_a, seen_b);
    assert_eq!(seen_a["kept_in"], "store");
    assert_eq!(seen_a["reporters"], 3, "{seen_a}");
    let stable = &seen_a["versions"][0];
    assert_eq!(
        (&stable["version"], &stable["calls"], &stable["errors"]),
        (&json!("1.0"), &json!(200), &json!(1))
    );
    // 198 of 200 calls ≤ 1 ms: the median and the 99th percentile are the 1 ms bucket.
    assert_eq!(
        (&stable["p50_latency_ms"], &stable["p99_latency_ms"]),
        (&json!(1.0), &json!(1.0))
    );
    let canary = &seen_a["versions"][1];
    assert_eq!(
        (
            &canary["calls"],
            &canary["errors"],
            &canary["p99_latency_ms"]
        ),
        (&json!(24), &json!(5), &json!(50.0)),
        "{canary}"
    );
    assert!((canary["error_ratio"].as_f64().unwrap() - 5.0 / 24.0).abs() < 1e-9);
    // Both nodes stop; a fresh one over the same database answers the same totals.
    a.stop();
    b.stop();
    let c = node_with_runtime(&url);
    let seen_c = Api::new(&c, ADMIN_TOKEN).ok("GET", &calls, None);
    assert_eq!(seen_c["versions"], seen_a["versions"], "{seen_c}");
}
