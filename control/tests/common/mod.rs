//! Shared helpers for the control integration tests: a server on loopback and a blocking API client.

#![allow(dead_code)]

use std::time::Duration;

use control::center::Center;
use control::client::{ApiClient, ClientError};
use control::server::Server;
use serde_json::{Value as Json, json};

pub const ADMIN_TOKEN: &str = "root-token";

/// The secret-item key of test servers.
pub const TEST_KEY: &str = "t1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

pub fn test_keys() -> Option<std::sync::Arc<control::secret::Keyring>> {
    Some(std::sync::Arc::new(
        control::secret::Keyring::parse(TEST_KEY).unwrap(),
    ))
}

pub fn start(store_url: &str) -> Server {
    start_on(store_url, "127.0.0.1:0")
}

/// A server whose center options `tune` adjusts.
pub fn start_with(
    store_url: &str,
    tune: impl FnOnce(&mut control::center::CenterOptions),
) -> Server {
    let store = control::store::open(store_url).unwrap();
    let envs = ["DEV", "FAT", "UAT", "PRO"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut opts = control::center::CenterOptions::new(envs, "admin", Some(ADMIN_TOKEN));
    opts.secret_keys = test_keys();
    tune(&mut opts);
    let center = Center::open_with(store, opts).unwrap();
    Server::start(center, "127.0.0.1:0", 2).unwrap()
}

/// Creates user `name` with a token and a grant of `level` on app `shop`, namespace `*`; returns the token.
pub fn user_with(api: &Api, name: &str, level: &str) -> String {
    api.ok("POST", "/v1/users", Some(json!({"name": name})));
    if level != "none" {
        api.ok(
            "PUT",
            "/v1/permissions",
            Some(json!({"subject": format!("user:{name}"), "app": "shop", "namespace": "*", "level": level})),
        );
    }
    api.ok("POST", "/v1/tokens", Some(json!({"user": name})))["token"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn start_on(store_url: &str, addr: &str) -> Server {
    let store = control::store::open(store_url).unwrap();
    let envs = ["DEV", "FAT", "UAT", "PRO"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut opts = control::center::CenterOptions::new(envs, "admin", Some(ADMIN_TOKEN));
    opts.secret_keys = test_keys();
    let center = Center::open_with(store, opts).unwrap();
    Server::start(center, addr, 2).unwrap()
}

pub struct Api {
    rt: tokio::runtime::Runtime,
    pub client: ApiClient,
}

impl Api {
    pub fn new(server: &Server, token: &str) -> Api {
        Api::nodes(&format!("http://{}", server.addr), token)
    }

    /// A client of several nodes (`http://A,http://B`): calls move on while a node is down or draining.
    pub fn nodes(servers: &str, token: &str) -> Api {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Api {
            rt,
            client: ApiClient::new(servers, Some(token)),
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Json>) -> Result<Json, ClientError> {
        self.rt
            .block_on(self.client.call(method, path, body.as_ref()))
    }

    pub fn status(
        &self,
        method: &str,
        path: &str,
        body: Option<Json>,
        timeout: Duration,
    ) -> Result<(u16, Json), ClientError> {
        self.rt.block_on(
            self.client
                .call_status(method, path, body.as_ref(), timeout),
        )
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        match self.call(method, path, body) {
            Ok(v) => v,
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    /// The error status, code and field of a call expected to fail.
    pub fn err(
        &self,
        method: &str,
        path: &str,
        body: Option<Json>,
    ) -> (u16, String, Option<String>) {
        match self.call(method, path, body) {
            Err(ClientError::Api { status, error }) => {
                let code = serde_json::to_value(error.code)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string();
                (status, code, error.field)
            }
            other => panic!("{method} {path}: expected an error, got {other:?}"),
        }
    }
}

pub fn ns(app: &str, env: &str, cluster: &str, ns: &str) -> String {
    format!("/v1/apps/{app}/envs/{env}/clusters/{cluster}/namespaces/{ns}")
}

pub fn set(api: &Api, nsp: &str, key: &str, value: Json) -> Json {
    let path = format!("{nsp}/items/{key}");
    let version = api
        .call("GET", &path, None)
        .ok()
        .and_then(|i| i["version"].as_u64());
    api.ok(
        "PUT",
        &path,
        Some(json!({"value": value, "version": version})),
    )
}

pub fn publish(api: &Api, nsp: &str, body: Json) -> Json {
    api.ok("POST", &format!("{nsp}/publish"), Some(body))
}

pub fn string(s: &str) -> Json {
    json!({"type": "string", "value": s})
}

pub fn int(i: i64) -> Json {
    json!({"type": "integer", "value": i})
}

/// Creates app `shop` with namespace `app`, app `pay` owning public namespace `common`, cluster `east` for both in PRO.
pub fn seed(api: &Api) {
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api.ok("POST", "/v1/apps", Some(json!({"name": "pay"})));
    api.ok(
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "app"})),
    );
    api.ok(
        "POST",
        "/v1/apps/pay/namespaces",
        Some(json!({"name": "common", "public": true})),
    );
    api.ok(
        "POST",
        "/v1/apps/shop/envs/PRO/clusters",
        Some(json!({"name": "east"})),
    );
    api.ok(
        "POST",
        "/v1/apps/pay/envs/PRO/clusters",
        Some(json!({"name": "east"})),
    );
}

pub fn config(api: &Api, app: &str, env: &str, cluster: &str, ns: &str, query: &str) -> Json {
    api.ok(
        "GET",
        &format!("/v1/configs/{app}/{env}/{cluster}/{ns}?{query}"),
        None,
    )
}

/// Parks `watchers` long-polls on one namespace, publishes a change, checks that every watcher got
/// exactly that release, and returns the sorted publish→response latencies. `around_publish` runs
/// just before the publish and its closure just after every response arrived (e.g. to read CPU time).
pub fn fan_out<M: FnOnce() -> Box<dyn FnOnce()>>(
    watchers: usize,
    around_publish: M,
) -> Vec<std::time::Duration> {
    use std::time::Instant;
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "k", int(1));
    publish(&api, &p, json!({}));
    let since = config(&api, "shop", "DEV", "default", "app", "")["version"]
        .as_u64()
        .unwrap();
    let server = format!("http://{}", srv.addr);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rss0 = testkit::rss::rss();
    let tasks: Vec<_> = (0..watchers)
        .map(|i| {
            let c = ApiClient::new(&server, Some(ADMIN_TOKEN));
            rt.spawn(async move {
                let path = format!(
                    "/v1/watch?app=shop&env=DEV&namespace=app&since={since}&timeout=20000&instance=w{i}"
                );
                let r = c.call_status("GET", &path, None, Duration::from_secs(30)).await;
                (r, Instant::now())
            })
        })
        .collect();
    // Wait until every watcher is parked on the server.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = api
            .status("GET", "/metrics", None, Duration::from_secs(5))
            .unwrap();
        let text = m.as_str().unwrap().to_string();
        let active = text
            .lines()
            .find_map(|l| l.strip_prefix("furrow_control_watches_active "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if active >= watchers {
            break;
        }
        assert!(Instant::now() < deadline, "only {active} watchers parked");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Client and server share this process: an upper bound of what one idle long-poll costs the service.
    let grown = testkit::rss::rss().saturating_sub(rss0);
    println!(
        "{watchers} idle long-polls: +{} KiB resident, <= {} bytes per watcher (client side included)",
        grown / 1024,
        grown / watchers as u64
    );
    set(&api, &p, "k", int(2));
    let after = around_publish();
    let t0 = Instant::now();
    let rel = publish(&api, &p, json!({}))["release"].as_u64().unwrap();
    let mut lat = Vec::with_capacity(watchers);
    for t in tasks {
        let (r, at) = rt.block_on(t).unwrap();
        let (status, body) = r.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["releases"], json!([rel]));
        assert_eq!(body["items"]["k"]["value"]["value"], 2);
        lat.push(at.saturating_duration_since(t0));
    }
    after();
    lat.sort();
    println!(
        "{watchers} watchers: p50 {:?} p99 {:?} max {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat[lat.len() - 1]
    );
    lat
}

/// One gauge or counter of `/metrics` (0 when absent).
pub fn metric_value(api: &Api, name: &str) -> u64 {
    let (_, m) = api
        .status("GET", "/metrics", None, Duration::from_secs(5))
        .unwrap();
    m.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Parks `watchers` registry long-polls (`/v1/registry/watch`) on one service with one instance, takes
/// the instance offline, checks that every watcher got the change (no instance left to discover), and
/// returns the sorted change→response latencies (printed with p50/p99/max and the server's CPU).
pub fn registry_fan_out(watchers: usize) -> Vec<std::time::Duration> {
    use std::time::Instant;
    const SVC: &str = "/v1/registry/DEV/services/orders";
    testkit::rss::raise_nofile(2 * watchers as u64 + 256);
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d", "ttl_ms": 60000})),
    );
    admin.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    admin.ok(
        "POST",
        &format!("{SVC}/instances"),
        Some(json!({"id": "x", "ip": "127.0.0.1", "port": 1})),
    );
    let rev = admin.ok("GET", &format!("{SVC}/discover"), None)["rev"]
        .as_u64()
        .unwrap();
    let addr = format!("http://{}", server.addr);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..watchers)
        .map(|_| {
            let c = ApiClient::new(&addr, Some(ADMIN_TOKEN));
            rt.spawn(async move {
                let path =
                    format!("/v1/registry/watch?env=DEV&service=orders&since={rev}&timeout=60000");
                let r = c
                    .call_status("GET", &path, None, Duration::from_secs(90))
                    .await
                    .unwrap();
                (r, Instant::now())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric_value(&admin, "furrow_control_watches_active") < watchers as u64 {
        assert!(Instant::now() < deadline, "watchers did not park");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu0 = thread_cpu_seconds("furrow-control");
    let sent = Instant::now();
    admin.ok("POST", &format!("{SVC}/instances/x/offline"), None);
    let mut lat: Vec<Duration> = rt.block_on(async {
        let mut out = Vec::with_capacity(watchers);
        for t in tasks {
            let ((status, body), at) = t.await.unwrap();
            assert_eq!(status, 200);
            assert_eq!(body["instances"], json!([]));
            out.push(at.saturating_duration_since(sent));
        }
        out
    });
    let cpu = thread_cpu_seconds("furrow-control") - cpu0;
    lat.sort();
    println!(
        "{watchers} registry watchers: p50 {:?}, p99 {:?}, max {:?}; server CPU for the change and the responses {:.0} ms",
        lat[watchers / 2],
        lat[watchers * 99 / 100],
        lat[watchers - 1],
        cpu * 1000.0
    );
    lat
}

/// User+system CPU seconds of this process's threads whose name starts with `prefix` (Linux).
pub fn thread_cpu_seconds(prefix: &str) -> f64 {
    let mut total = 0.0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<f64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0.0))
                .collect();
            total += (f[11] + f[12]) / 100.0;
        }
    }
    total
}
