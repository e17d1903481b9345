//! A proxy whose backends come from the service registry (`[registry]`, `servers_from`, `primary_from`,
//! `replicas_from`): `furrow control` and `furrow proxy` as real processes, real Redis servers and a real
//! MariaDB primary with replicas, and Python clients (redis-py, PyMySQL) keeping load on both listeners
//! while instances are registered and deregistered. No request may fail: the removed instances stay up
//! (healthy backends), so every error would be the proxy's. (A Redis GET right after its SET may miss when
//! the shard set changes between the two: ketama moves about 1/N of the keys; those are counted apart.) Then the center is killed: the proxy keeps
//! serving its last discovery, and a second proxy starts from the snapshot files alone.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{FurrowProcess, http_get, redis_cli, wait_until};
use testkit::{APP_PASSWORD, APP_USER};

use common::{CONTROL_TOKEN as TOKEN, ControlCenter as Center};
const SECRET: &str = "app-secret";

impl Center {
    /// A live service of app `edge` in DEV with a long lease (the test does not beat).
    fn service(&self, name: &str) {
        let svc = format!("/v1/registry/DEV/services/{name}");
        self.call(
            "PUT",
            &svc,
            Some(serde_json::json!({"app": "edge", "owner": "team-edge",
                "docs": "https://wiki.invalid/edge", "ttl_ms": 600000})),
        );
        self.call(
            "POST",
            &format!("{svc}/live"),
            Some(serde_json::json!({"live": true})),
        );
    }

    fn register(&self, service: &str, id: &str, addr: std::net::SocketAddr) {
        self.call(
            "POST",
            &format!("/v1/registry/DEV/services/{service}/instances"),
            Some(serde_json::json!({"id": id, "ip": addr.ip().to_string(), "port": addr.port()})),
        );
    }

    fn deregister(&self, service: &str, id: &str) {
        self.call(
            "DELETE",
            &format!("/v1/registry/DEV/services/{service}/instances/{id}"),
            None,
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Ports {
    redis: u16,
    mysql: u16,
    admin: u16,
    metrics: u16,
}

fn proxy_config(center: u16, snapshots: &std::path::Path, p: &Ports) -> String {
    let native = codec::mysql::auth::native_password_hash(SECRET.as_bytes());
    let sha = codec::mysql::auth::caching_sha2_hash(SECRET.as_bytes());
    format!(
        r#"[proxy]
executors = 1
admin = "127.0.0.1:{admin}"
metrics = "127.0.0.1:{metrics}"
shutdown_grace_ms = 200

[registry]
url = "http://127.0.0.1:{center}"
env = "DEV"
token = "{TOKEN}"
snapshot_dir = "{snap}"

[[listeners]]
name = "cache"
kind = "redis"
address = "127.0.0.1:{redis}"
group = "cache"

[[listeners]]
name = "db"
kind = "mysql"
address = "127.0.0.1:{mysql}"
group = "main"

[redis_groups.cache]
servers_from = "cache"

[mysql_groups.main]
user = "{APP_USER}"
password = "{APP_PASSWORD}"
primary_from = "db-primary"
replicas_from = "db-replicas"
max_replica_lag_ms = 5000
health_interval_ms = 200
pool_max = 8

[users.app]
listeners = ["db"]
password_native = "*{native}"
password_sha256 = "{sha}"
"#,
        admin = p.admin,
        metrics = p.metrics,
        redis = p.redis,
        mysql = p.mysql,
        snap = snapshots.display(),
        native = hex(&native).to_uppercase(),
        sha = hex(&sha),
    )
}

/// Keeps SET+GET on the Redis listener and `SELECT @@port` on the MySQL listener going from two
/// persistent connections each until STOP exists; writes its counts to PROGRESS every 100 ms.
const LOAD: &str = r#"
import json, os, random, threading, time
import pymysql, redis
stop, progress = os.environ["STOP"], os.environ["PROGRESS"]
st = {"redis_ok": 0, "redis_err": 0, "redis_moved": 0, "mysql_ok": 0, "mysql_err": 0, "ports": {}, "errors": []}
lock = threading.Lock()
def err(kind, e):
    with lock:
        st[kind + "_err"] += 1
        if len(st["errors"]) < 20:
            st["errors"].append("%s: %r" % (kind, e))
def redis_load():
    r = redis.Redis(host="127.0.0.1", port=int(os.environ["RPORT"]), socket_timeout=10)
    while not os.path.exists(stop):
        k = "k%d" % random.randrange(1000000)
        try:
            r.set(k, "v")
            moved = r.get(k) != b"v"
            with lock:
                st["redis_ok"] += 1
                st["redis_moved"] += moved
        except Exception as e:
            err("redis", e)
            time.sleep(0.05)
def mysql_load():
    c = None
    while not os.path.exists(stop):
        try:
            if c is None:
                c = pymysql.connect(host="127.0.0.1", port=int(os.environ["MPORT"]), user="app",
                                    password=os.environ["PASSWORD"], autocommit=True, read_timeout=10)
            with c.cursor() as cur:
                cur.execute("SELECT @@port")
                p = str(cur.fetchone()[0])
            with lock:
                st["mysql_ok"] += 1
                st["ports"][p] = st["ports"].get(p, 0) + 1
        except Exception as e:
            err("mysql", e)
            c = None
            time.sleep(0.05)
ts = [threading.Thread(target=f) for f in (redis_load, redis_load, mysql_load, mysql_load)]
for t in ts:
    t.start()
def dump():
    with lock:
        text = json.dumps(st)
    with open(progress + ".tmp", "w") as f:
        f.write(text)
    os.replace(progress + ".tmp", progress)
while any(t.is_alive() for t in ts):
    dump()
    time.sleep(0.1)
dump()
print(json.dumps(st))
"#;

struct Load {
    child: Child,
    stop: std::path::PathBuf,
    progress: std::path::PathBuf,
}

impl Load {
    fn start(dir: &std::path::Path, name: &str, redis: u16, mysql: u16) -> Load {
        let stop = dir.join(format!("{name}.stop"));
        let progress = dir.join(format!("{name}.json"));
        let child = Command::new(testkit::python().unwrap_or_else(|e| panic!("{e}")))
            .arg("-c")
            .arg(LOAD)
            .env("STOP", &stop)
            .env("PROGRESS", &progress)
            .env("RPORT", redis.to_string())
            .env("MPORT", mysql.to_string())
            .env("PASSWORD", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python");
        Load {
            child,
            stop,
            progress,
        }
    }

    fn progress(&self) -> serde_json::Value {
        std::fs::read_to_string(&self.progress)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn count(&self, key: &str) -> u64 {
        self.progress()[key].as_u64().unwrap_or(0)
    }

    fn port_reads(&self, port: u16) -> u64 {
        self.progress()["ports"][port.to_string()]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until both loads made `n` more requests.
    fn advance(&mut self, n: u64) {
        let (r, m) = (self.count("redis_ok"), self.count("mysql_ok"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.count("redis_ok") < r + n || self.count("mysql_ok") < m + n {
            if std::time::Instant::now() > deadline
                || self.child.try_wait().ok().flatten().is_some()
            {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = self.child.kill();
                    let _ = e.read_to_string(&mut err);
                }
                panic!("the load did not advance: {}\n{err}", self.progress());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> serde_json::Value {
        std::fs::write(&self.stop, b"").expect("stop file");
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let status = self.child.wait().expect("wait");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "load failed: {out}\n{err}");
        serde_json::from_str(out.trim()).expect("load result")
    }
}

fn generation(admin: u16) -> u64 {
    redis_cli(admin, &["INFO"])
        .lines()
        .find_map(|l| l.strip_prefix("config_generation:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn instances_metric(metrics: u16, service: &str) -> Option<u64> {
    let text = http_get(metrics, "/metrics");
    let prefix = format!("furrow_registry_service_instances{{service=\"{service}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

fn dbsize(r: &testkit::RedisServer) -> u64 {
    r.cmd(&["DBSIZE"]).trim().parse().unwrap_or(0)
}

#[test]
fn proxy_follows_registry_instances_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = testkit::RedisServer::start_many(3, Default::default()).expect("redis");
    let db = testkit::MariaDbReplicaSet::start(2).expect("mariadb");
    let cport = testkit::reserve_port().expect("port");
    let center = Center::start(dir.path(), cport.port());
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    for s in ["cache", "db-primary", "db-replicas"] {
        center.service(s);
    }
    center.register("cache", "r0", redis[0].addr());
    center.register("cache", "r1", redis[1].addr());
    center.register("db-primary", "primary", db.primary().addr());
    center.register("db-replicas", "replica0", db.replica(0).addr());

    let leases: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let ports = Ports {
        redis: leases[0].port(),
        mysql: leases[1].port(),
        admin: leases[2].port(),
        metrics: leases[3].port(),
    };
    let snapshots = dir.path().join("snapshots");
    drop(leases);
    let proxy = FurrowProcess::start(&proxy_config(cport.port(), &snapshots, &ports), ports.admin);
    assert_eq!(instances_metric(ports.metrics, "cache"), Some(2));
    assert!(
        redis_cli(ports.admin, &["INFO"]).contains("config_origin:"),
        "{}",
        proxy.log()
    );

    let mut load = Load::start(dir.path(), "load", ports.redis, ports.mysql);
    load.advance(50);
    assert!(
        load.port_reads(db.replica(0).port()) > 0,
        "{}",
        load.progress()
    );
    assert_eq!(dbsize(&redis[2]), 0);

    // An instance added to each service: a new snapshot, and traffic reaches the new backends.
    let g = generation(ports.admin);
    center.register("cache", "r2", redis[2].addr());
    center.register("db-replicas", "replica1", db.replica(1).addr());
    wait_until(Duration::from_secs(10), || {
        instances_metric(ports.metrics, "cache") == Some(3)
            && instances_metric(ports.metrics, "db-replicas") == Some(2)
            && generation(ports.admin) > g
    });
    wait_until(Duration::from_secs(15), || {
        dbsize(&redis[2]) > 0 && load.port_reads(db.replica(1).port()) > 0
    });

    // Instances removed (their servers keep running): no new traffic reaches them.
    center.deregister("cache", "r0");
    center.deregister("db-replicas", "replica0");
    wait_until(Duration::from_secs(10), || {
        instances_metric(ports.metrics, "cache") == Some(2)
            && instances_metric(ports.metrics, "db-replicas") == Some(1)
    });
    load.advance(20); // requests in flight on the old snapshot finish
    let (keys_r0, reads_r0) = (dbsize(&redis[0]), load.port_reads(db.replica(0).port()));
    load.advance(200);
    assert_eq!(dbsize(&redis[0]), keys_r0, "a removed shard got new keys");
    assert_eq!(
        load.port_reads(db.replica(0).port()),
        reads_r0,
        "a removed replica got reads"
    );

    // The center goes away: the proxy keeps serving its last discovery, and a reload of the file
    // resolves its services from what the proxy last saw.
    drop(center);
    load.advance(100);
    let text = std::fs::read_to_string(proxy.config_path()).expect("config");
    std::fs::write(
        proxy.config_path(),
        text.replace("shutdown_grace_ms = 200", "shutdown_grace_ms = 300"),
    )
    .expect("rewrite");
    let g = generation(ports.admin);
    let reply = redis_cli(ports.admin, &["CONFIG", "RELOAD"]);
    assert_eq!(reply, format!("OK generation {}", g + 1), "{}", proxy.log());
    assert_eq!(generation(ports.admin), g + 1);
    load.advance(100);
    let result = load.finish();
    assert_eq!(result["redis_err"], 0, "{result}");
    // A GET right after its SET may miss when the shard set changed between the two (ketama moves about
    // 1/N of the keys: the proxy is a cache router, not a migrator); never more than a handful here.
    assert!(result["redis_moved"].as_u64() < Some(100), "{result}");
    eprintln!("load: {result}");
    assert_eq!(result["mysql_err"], 0, "{result}");
    assert_eq!(
        instances_metric(ports.metrics, "cache"),
        Some(2),
        "{}",
        proxy.log()
    );

    // A second proxy starts with the center down, from the snapshot files alone.
    let leases: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let second = Ports {
        redis: leases[0].port(),
        mysql: leases[1].port(),
        admin: leases[2].port(),
        metrics: leases[3].port(),
    };
    drop(leases);
    let _proxy2 = FurrowProcess::start(
        &proxy_config(cport.port(), &snapshots, &second),
        second.admin,
    );
    assert_eq!(instances_metric(second.metrics, "cache"), Some(2));
    assert_eq!(
        redis_cli(second.redis, &["SET", "after", "yes"]),
        "OK",
        "second proxy"
    );
    assert_eq!(redis_cli(second.redis, &["GET", "after"]), "yes");
    drop(proxy);
}

#[test]
fn registry_errors_at_start_are_clear() {
    // The center is down and there is no snapshot: the proxy refuses to start and says why.
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = testkit::reserve_port().expect("port");
    let leases: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let ports = Ports {
        redis: leases[0].port(),
        mysql: leases[1].port(),
        admin: leases[2].port(),
        metrics: leases[3].port(),
    };
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        proxy_config(dead.port(), &dir.path().join("snap"), &ports),
    )
    .expect("write");
    let out = Command::new(common::furrow_bin())
        .args(["proxy", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("registry service `cache`") && err.contains("env DEV"),
        "{err}"
    );
    // check-config validates the file without asking the registry.
    let out = Command::new(common::furrow_bin())
        .args(["check-config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `SELECT 1` as user `app` in a loop on one connection: prints `ok refused first_error`, refusals being
/// ERR 1226 (a rate limit); other errors fail the script. PyMySQL's connect sends `SET NAMES`, a statement
/// the limit counts too: refused there, the script reports that one refusal.
const BURST: &str = r#"
import os, sys, pymysql
try:
    c = pymysql.connect(host="127.0.0.1", port=int(os.environ["MPORT"]), user="app",
                        password=os.environ["PASSWORD"], autocommit=True)
except pymysql.err.OperationalError as e:
    if e.args[0] != 1226:
        raise
    print(0, 1, e.args[1].replace(" ", "_"))
    sys.exit(0)
ok, refused, first = 0, 0, ""
for _ in range(int(os.environ["N"])):
    try:
        with c.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        ok += 1
    except pymysql.err.OperationalError as e:
        if e.args[0] != 1226:
            raise
        refused += 1
        first = first or e.args[1]
print(ok, refused, first.replace(" ", "_"))
"#;

/// Runs `BURST` (n statements); returns (ok, refused, first refusal message).
fn burst(mysql: u16, n: u32) -> (u32, u32, String) {
    let out = Command::new(testkit::python().unwrap_or_else(|e| panic!("{e}")))
        .arg("-c")
        .arg(BURST)
        .env("MPORT", mysql.to_string())
        .env("PASSWORD", SECRET)
        .env("N", n.to_string())
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut it = text.split_whitespace();
    let ok = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let refused = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (ok, refused, it.next().unwrap_or("").replace('_', " "))
}

fn metric(metrics: u16, line_prefix: &str) -> Option<u64> {
    http_get(metrics, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn proxy_enforces_governance_rules_of_its_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = testkit::RedisServer::start().expect("redis");
    let db = testkit::MariaDb::start().expect("mariadb");
    let cport = testkit::reserve_port().expect("port");
    let center = Center::start(dir.path(), cport.port());
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    for s in ["cache", "db-primary", "db-replicas", "edge-proxy"] {
        center.service(s);
    }
    center.register("cache", "r0", redis.addr());
    center.register("db-primary", "primary", db.addr());
    let leases: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let ports = Ports {
        redis: leases[0].port(),
        mysql: leases[1].port(),
        admin: leases[2].port(),
        metrics: leases[3].port(),
    };
    drop(leases);
    let config = proxy_config(cport.port(), &dir.path().join("snap"), &ports).replace(
        "env = \"DEV\"\n",
        "env = \"DEV\"\nservice = \"edge-proxy\"\n",
    );
    let proxy = FurrowProcess::start(&config, ports.admin);
    assert_eq!(
        metric(ports.metrics, "furrow_governance_rules_version "),
        Some(0),
        "{}",
        proxy.log()
    );
    assert_eq!(burst(ports.mysql, 30).1, 0, "no rules, no limit");

    let rules = "/v1/registry/DEV/services/edge-proxy/rules";
    let publish = |version: u64, rules_json: serde_json::Value| {
        center.call(
            "PUT",
            rules,
            Some(serde_json::json!({"rules": rules_json, "version": version})),
        );
    };
    // A per-user rate limit: 2 statements per second for `app`.
    publish(
        0,
        serde_json::json!([{"kind": "rate_limit", "qps": 2, "scope": "user", "only": ["app"]},
                           {"kind": "circuit_breaker", "strategy": "error_ratio", "threshold": 0.5,
                            "window_ms": 10000, "open_ms": 5000}]),
    );
    let published = std::time::Instant::now();
    wait_until(Duration::from_secs(5), || {
        metric(ports.metrics, "furrow_governance_rules_version ") == Some(1)
    });
    eprintln!("rules version 1 in force after {:?}", published.elapsed());
    let (ok, refused, msg) = burst(ports.mysql, 30);
    assert!(ok >= 1 && refused >= 15, "{ok} {refused} {msg}");
    assert!(
        msg.contains("governance rule 0 of edge-proxy, version 1"),
        "{msg}"
    );
    assert_eq!(
        metric(
            ports.metrics,
            "furrow_governance_rules{kind=\"rate_limit\",enforced=\"yes\"} "
        ),
        Some(1)
    );
    assert_eq!(
        metric(
            ports.metrics,
            "furrow_governance_rules{kind=\"circuit_breaker\",enforced=\"yes\"} "
        ),
        Some(1),
        "a ratio breaker is enforced on every backend"
    );
    // Redis is not rate limited.
    assert_eq!(redis_cli(ports.redis, &["PING"]), "PONG");

    // A deny list with the loopback network: new clients of both listeners are refused at connect.
    publish(
        1,
        serde_json::json!([{"kind": "access", "allow": false, "sources": ["127.0.0.0/8", "::1"]}]),
    );
    wait_until(Duration::from_secs(5), || {
        metric(ports.metrics, "furrow_governance_rules_version ") == Some(2)
    });
    assert_eq!(
        redis_cli(ports.redis, &["PING"]),
        "ERR client address refused by a governance rule"
    );
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "--host=127.0.0.1",
            "--user=app",
        ])
        .arg(format!("--port={}", ports.mysql))
        .arg(format!("--password={SECRET}"))
        .args(["--execute", "SELECT 1"])
        .output()
        .expect("mariadb");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("1130"), "{err}");
    assert!(
        metric(ports.metrics, "furrow_governance_refused_total ") >= Some(2),
        "{}",
        http_get(ports.metrics, "/metrics")
    );

    // An allow list with the loopback network and no limits: everything passes again.
    publish(
        2,
        serde_json::json!([{"kind": "access", "allow": true, "sources": ["127.0.0.0/8"]}]),
    );
    wait_until(Duration::from_secs(5), || {
        metric(ports.metrics, "furrow_governance_rules_version ") == Some(3)
    });
    assert_eq!(redis_cli(ports.redis, &["PING"]), "PONG");
    assert_eq!(burst(ports.mysql, 30).1, 0);
}

/// `SELECT 1` as user `app` on one connection for `SECS` seconds, 5 ms apart: prints `ok refused`
/// (refusals are ERR 1226; other errors fail the script).
const PACED: &str = r#"
import os, time, pymysql
ok, refused, c = 0, 0, None
end = time.monotonic() + float(os.environ["SECS"])
while time.monotonic() < end:
    try:
        if c is None:
            # The connect's SET NAMES is a statement the limit counts (and may refuse) too.
            c = pymysql.connect(host="127.0.0.1", port=int(os.environ["MPORT"]), user="app",
                                password=os.environ["PASSWORD"], autocommit=True)
        with c.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        ok += 1
    except pymysql.err.OperationalError as e:
        if e.args[0] != 1226:
            raise
        refused += 1
    time.sleep(0.005)
print(ok, refused)
"#;

/// Runs `PACED` against every port at once for `secs`; returns the statements admitted per port and
/// the seconds the runs took together.
fn paced(ports: &[u16], secs: f64) -> (Vec<u32>, f64) {
    let t0 = std::time::Instant::now();
    let children: Vec<_> = ports
        .iter()
        .map(|p| {
            Command::new(testkit::python().unwrap_or_else(|e| panic!("{e}")))
                .arg("-c")
                .arg(PACED)
                .env("MPORT", p.to_string())
                .env("PASSWORD", SECRET)
                .env("SECS", secs.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python")
        })
        .collect();
    let ok = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("python");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut it = text.split_whitespace();
            let ok: u32 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let refused: u32 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            assert!(refused > 0, "the limit was never reached: {text}");
            ok
        })
        .collect();
    (ok, t0.elapsed().as_secs_f64())
}

/// A cluster-wide limit (`"cluster": true`) is one budget for two proxies of the same service: they take
/// leases of tokens from the center's token service and together stay within it. With the center
/// killed, each falls back to its share (the limit divided by the proxies the center last counted).
#[test]
fn two_proxies_share_a_cluster_wide_limit_and_fall_back_to_their_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = testkit::RedisServer::start().expect("redis");
    let db = testkit::MariaDb::start().expect("mariadb");
    let cport = testkit::reserve_port().expect("port");
    let mut center = Center::start(dir.path(), cport.port());
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    for s in ["cache", "db-primary", "db-replicas", "edge-proxy"] {
        center.service(s);
    }
    center.register("cache", "r0", redis.addr());
    center.register("db-primary", "primary", db.addr());
    let qps = 10.0;
    center.call(
        "PUT",
        "/v1/registry/DEV/services/edge-proxy/rules",
        Some(serde_json::json!({"version": 0, "rules": [
            {"kind": "rate_limit", "qps": qps, "cluster": true}]})),
    );
    let mut proxies = Vec::new();
    let mut all = Vec::new();
    for i in 0..2 {
        let leases: Vec<_> = (0..4)
            .map(|_| testkit::reserve_port().expect("port"))
            .collect();
        let ports = Ports {
            redis: leases[0].port(),
            mysql: leases[1].port(),
            admin: leases[2].port(),
            metrics: leases[3].port(),
        };
        drop(leases);
        let config = proxy_config(cport.port(), &dir.path().join(format!("snap{i}")), &ports)
            .replace(
                "env = \"DEV\"\n",
                "env = \"DEV\"\nservice = \"edge-proxy\"\n",
            );
        proxies.push(FurrowProcess::start(&config, ports.admin));
        all.push(ports);
    }
    for p in &all {
        wait_until(Duration::from_secs(5), || {
            metric(p.metrics, "furrow_governance_token_service_up ") == Some(1)
        });
    }
    let mysql: Vec<u16> = all.iter().map(|p| p.mysql).collect();
    let (ok, secs) = paced(&mysql, 3.0);
    let total: u32 = ok.iter().sum();
    // One budget: one second of burst plus the rate, plus one lease per proxy (200 ms of its share; the
    // whole rate's before the center counted two clients). Two local limits would have admitted about
    // twice as much.
    let most = qps * (secs + 1.0) + 2.0 * (qps * 0.2).ceil();
    eprintln!("cluster-wide: {ok:?} admitted in {secs:.2}s (at most {most})");
    assert!(f64::from(total) <= most, "{ok:?} in {secs:.2}s");
    assert!(f64::from(total) >= qps * secs * 0.5, "{ok:?} in {secs:.2}s");
    assert!(ok.iter().all(|n| *n > 0), "{ok:?}");
    for p in &all {
        assert!(
            metric(
                p.metrics,
                "furrow_governance_cluster_calls_total{result=\"leased\"} "
            ) > Some(0)
        );
    }

    // The center dies: each proxy falls back to half the limit.
    let _ = center.child.kill();
    let _ = center.child.wait();
    for p in &all {
        wait_until(Duration::from_secs(10), || {
            // Statements wake the token fetcher, whose requests now fail.
            let _ = burst(p.mysql, 3);
            metric(p.metrics, "furrow_governance_token_service_up ") == Some(0)
        });
    }
    let (ok, secs) = paced(&mysql, 3.0);
    let share = qps / 2.0;
    eprintln!("fallback: {ok:?} admitted in {secs:.2}s (share {share}/s each)");
    for n in &ok {
        assert!(
            f64::from(*n) <= share * (secs + 1.0) + 1.0,
            "{ok:?} in {secs:.2}s"
        );
        assert!(f64::from(*n) >= share * secs * 0.5, "{ok:?} in {secs:.2}s");
    }
    for p in &all {
        assert!(
            metric(
                p.metrics,
                "furrow_governance_cluster_calls_total{result=\"fallback\"} "
            ) > Some(0)
        );
    }
    drop(proxies);
}

/// The instances of the proxy's own service in the registry: (id, kind tag, version).
fn own_instances(center: &Center) -> Vec<(String, String, String)> {
    let v = center.call("GET", "/v1/registry/DEV/services/edge-proxy", None);
    let mut out: Vec<_> = v["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["id"].as_str().unwrap_or("").to_string(),
                        i["tags"]["kind"].as_str().unwrap_or("").to_string(),
                        i["version"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `[registry] register = true`: each proxy registers its listeners as instances of its own service
/// (with the furrow version and the listener kind) and removes them on a graceful shutdown (SIGTERM),
/// while another proxy's instances stay. The backends are addresses where nothing listens: registration
/// does not depend on them.
#[test]
fn proxies_register_their_listeners_and_deregister_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cport = testkit::reserve_port().expect("port");
    let center = Center::start(dir.path(), cport.port());
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    for s in ["cache", "db-primary", "db-replicas", "edge-proxy"] {
        center.service(s);
    }
    let nowhere = testkit::reserve_port().expect("port");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", nowhere.port()).parse().unwrap();
    center.register("cache", "r0", addr);
    center.register("db-primary", "primary", addr);
    let mut proxies = Vec::new();
    let mut all = Vec::new();
    for i in 0..2 {
        let leases: Vec<_> = (0..4)
            .map(|_| testkit::reserve_port().expect("port"))
            .collect();
        let ports = Ports {
            redis: leases[0].port(),
            mysql: leases[1].port(),
            admin: leases[2].port(),
            metrics: leases[3].port(),
        };
        drop(leases);
        let config = proxy_config(cport.port(), &dir.path().join(format!("snap{i}")), &ports)
            .replace(
                "env = \"DEV\"\n",
                "env = \"DEV\"\nservice = \"edge-proxy\"\nregister = true\n",
            );
        proxies.push(FurrowProcess::start(&config, ports.admin));
        all.push(ports);
    }
    let id = |port: u16| format!("127.0.0.1-{port}");
    let version = env!("CARGO_PKG_VERSION").to_string();
    let mut want: Vec<_> = all
        .iter()
        .flat_map(|p| {
            [
                (id(p.redis), "redis".to_string(), version.clone()),
                (id(p.mysql), "mysql".to_string(), version.clone()),
            ]
        })
        .collect();
    want.sort();
    wait_until(Duration::from_secs(10), || own_instances(&center) == want);
    // Healthy: they beat.
    let d = center.call("GET", "/v1/registry/DEV/services/edge-proxy/discover", None);
    assert_eq!(d["instances"].as_array().map(|a| a.len()), Some(4), "{d}");
    assert_eq!(
        metric(all[0].metrics, "furrow_registry_registered_instances "),
        Some(2)
    );

    // A graceful shutdown of the first proxy removes its two instances, and only those.
    proxies[0].signal(libc::SIGTERM);
    let rest: Vec<_> = want
        .iter()
        .filter(|(i, _, _)| *i == id(all[1].redis) || *i == id(all[1].mysql))
        .cloned()
        .collect();
    wait_until(Duration::from_secs(10), || own_instances(&center) == rest);
}

/// Statements on one PyMySQL connection: prints one word per statement, `ok` or the error code
/// (`-` separates the groups of `Q`, which are separated by `;` and preceded by a pause of `PAUSE` s).
const STEPS: &str = r#"
import os, time, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["MPORT"]), user="app",
                    password=os.environ["PASSWORD"], autocommit=True)
out, first = [], ""
for i, group in enumerate(os.environ["Q"].split(";")):
    if i:
        time.sleep(float(os.environ["PAUSE"]))
        out.append("-")
    for q in group.split("|"):
        try:
            with c.cursor() as cur:
                cur.execute(q)
                cur.fetchall()
            out.append("ok")
        except pymysql.err.MySQLError as e:
            out.append(str(e.args[0]))
            first = first or e.args[1]
print(" ".join(out))
print(first)
"#;

/// A slow-call-ratio circuit breaker published to a running proxy: slow statements on the primary open
/// it (statements are refused with the usual "ejected" error, not sent), and after `open_ms` one probe
/// statement closes it again.
#[test]
fn a_slow_ratio_breaker_opens_on_slow_statements_and_a_probe_closes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = testkit::MariaDb::start().expect("mariadb");
    let cport = testkit::reserve_port().expect("port");
    let center = Center::start(dir.path(), cport.port());
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    for s in ["cache", "db-primary", "db-replicas", "edge-proxy"] {
        center.service(s);
    }
    let nowhere = testkit::reserve_port().expect("port");
    center.register(
        "cache",
        "r0",
        format!("127.0.0.1:{}", nowhere.port()).parse().unwrap(),
    );
    center.register("db-primary", "primary", db.addr());
    let leases: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let ports = Ports {
        redis: leases[0].port(),
        mysql: leases[1].port(),
        admin: leases[2].port(),
        metrics: leases[3].port(),
    };
    drop(leases);
    let config = proxy_config(cport.port(), &dir.path().join("snap"), &ports).replace(
        "env = \"DEV\"\n",
        "env = \"DEV\"\nservice = \"edge-proxy\"\n",
    );
    let _proxy = FurrowProcess::start(&config, ports.admin);
    center.call(
        "PUT",
        "/v1/registry/DEV/services/edge-proxy/rules",
        Some(serde_json::json!({"version": 0, "rules": [
            {"kind": "circuit_breaker", "strategy": "slow_ratio", "threshold": 0.5,
             "window_ms": 60000, "min_calls": 4, "slow_ms": 50, "open_ms": 1500}]})),
    );
    wait_until(Duration::from_secs(5), || {
        metric(ports.metrics, "furrow_governance_rules_version ") == Some(1)
    });
    assert_eq!(
        metric(
            ports.metrics,
            "furrow_governance_rules{kind=\"circuit_breaker\",enforced=\"yes\"} "
        ),
        Some(1)
    );
    let out = Command::new(testkit::python().unwrap_or_else(|e| panic!("{e}")))
        .arg("-c")
        .arg(STEPS)
        .env("MPORT", ports.mysql.to_string())
        .env("PASSWORD", SECRET)
        .env("PAUSE", "2")
        .env(
            "Q",
            [["SELECT SLEEP(0.1)"; 6].join("|"), "SELECT 1".into()].join("|")
                + ";SELECT 1|SELECT 1|SELECT 1",
        )
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let words: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    let msg = lines.next().unwrap_or("");
    let (before, after) = words.split_at(words.iter().position(|w| *w == "-").expect("groups"));
    // At least two slow statements ran before the window had min_calls, then the breaker opened: the
    // rest of the first group (the fast SELECT 1 included) was refused without reaching the server.
    assert_eq!(before[..2], ["ok", "ok"], "{text}");
    assert_eq!(before.last(), Some(&"1105"), "{text}");
    assert!(msg.contains("is ejected"), "{msg}");
    // After open_ms: the probe goes through and closes it.
    assert_eq!(after[1..], ["ok", "ok", "ok"], "{text}");
    // The trip shows per backend in the metrics.
    assert_eq!(
        metric(
            ports.metrics,
            "furrow_backend_ratio_trips_total{group=\"main\",backend=\"primary\",role=\"primary\"} "
        ),
        Some(1),
        "{}",
        http_get(ports.metrics, "/metrics")
    );
}

/// Redis commands through the proxy with redis-py, as users `app` and `other` (AUTH on the Redis
/// listener). MODE `queue`: N ECHOs as `app`, printing `ok refused seconds`. MODE `users`: N rounds of
/// one ECHO as `app` then one as `other`, printing `app_ok app_refused other_ok other_refused
/// first_refusal`. MODE `burst`: N ECHOs as `app`, printing `ok refused`. Refusals are the proxy's
/// rate-limit error; any other error fails the script.
const REDIS_LIMITS: &str = r#"
import os, time, redis
port, pw, n, mode = int(os.environ["RPORT"]), os.environ["PASSWORD"], int(os.environ["N"]), os.environ["MODE"]
def conn(user):
    # Connects (AUTH) with its first command; no CLIENT SETINFO, so every command counted is ECHO.
    return redis.Redis(host="127.0.0.1", port=port, username=user, password=pw,
                       lib_name=None, lib_version=None)
first = ""
def ping(c):
    global first
    try:
        c.execute_command("ECHO", "x")
        return 1
    except redis.exceptions.ResponseError as e:
        if "commands per second" not in str(e):
            raise
        first = first or str(e)
        return 0
app = conn("app")
if mode == "users":
    other = conn("other")
    a = o = 0
    for _ in range(n):
        a += ping(app)
        o += ping(other)
    print(a, n - a, o, n - o, first.replace(" ", "_"))
else:
    t = time.monotonic()
    ok = sum(ping(app) for _ in range(n))
    print(ok, n - ok, time.monotonic() - t)
"#;

/// Runs `REDIS_LIMITS`; returns its output words.
fn redis_limits(port: u16, mode: &str, n: u32) -> Vec<String> {
    let out = Command::new(testkit::python().unwrap_or_else(|e| panic!("{e}")))
        .arg("-c")
        .arg(REDIS_LIMITS)
        .env("RPORT", port.to_string())
        .env("PASSWORD", SECRET)
        .env("N", n.to_string())
        .env("MODE", mode)
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace().map(str::to_string).collect()
}

#[test]
fn rate_limits_queue_warm_up_and_count_per_redis_user_on_both_listeners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = testkit::RedisServer::start().expect("redis");
    let db = testkit::MariaDb::start().expect("mariadb");
    let cport = testkit::reserve_port().expect("port");
    let center = Center::start(dir.path(), cport.port());
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    for s in ["cache", "db-primary", "db-replicas", "edge-proxy"] {
        center.service(s);
    }
    center.register("cache", "r0", redis.addr());
    center.register("db-primary", "primary", db.addr());
    let leases: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let ports = Ports {
        redis: leases[0].port(),
        mysql: leases[1].port(),
        admin: leases[2].port(),
        metrics: leases[3].port(),
    };
    drop(leases);
    let sha = hex(&codec::mysql::auth::caching_sha2_hash(SECRET.as_bytes()));
    // `app` on both listeners, `other` on the Redis one: the Redis listener now asks for AUTH.
    let config = proxy_config(cport.port(), &dir.path().join("snap"), &ports)
        .replace(
            "env = \"DEV\"\n",
            "env = \"DEV\"\nservice = \"edge-proxy\"\n",
        )
        .replace("listeners = [\"db\"]", "listeners = [\"db\", \"cache\"]")
        + &format!("\n[users.other]\nlisteners = [\"cache\"]\npassword_sha256 = \"{sha}\"\n");
    let proxy = FurrowProcess::start(&config, ports.admin);
    let rules = "/v1/registry/DEV/services/edge-proxy/rules";
    let publish = |version: u64, rules_json: serde_json::Value| {
        center.call(
            "PUT",
            rules,
            Some(serde_json::json!({"rules": rules_json, "version": version})),
        );
        wait_until(Duration::from_secs(5), || {
            metric(ports.metrics, "furrow_governance_rules_version ") == Some(version + 1)
        });
    };
    let num = |w: &[String], i: usize| -> f64 { w[i].parse().expect("number") };

    // Queueing: 10 per second per user, waits up to 3 s. A client sending 20 in a row is paced, not
    // refused: 20 calls at 10/s take at least 1.9 s (the first goes at once).
    publish(
        0,
        serde_json::json!([{"kind": "rate_limit", "qps": 10, "scope": "user",
                            "control": {"mode": "queue", "max_wait_ms": 3000}}]),
    );
    let t = std::time::Instant::now();
    let (ok, refused, msg) = burst(ports.mysql, 20);
    let took = t.elapsed();
    assert_eq!((ok, refused), (20, 0), "{msg}\n{}", proxy.log());
    assert!(took >= Duration::from_millis(1700), "MySQL: {took:?}");
    let w = redis_limits(ports.redis, "queue", 20);
    assert_eq!((num(&w, 0), num(&w, 1)), (20.0, 0.0), "{w:?}");
    assert!(num(&w, 2) >= 1.7, "Redis: {w:?}");
    assert!(
        metric(
            ports.metrics,
            "furrow_governance_commands_total{result=\"queued\"} "
        ) >= Some(15),
        "{}",
        http_get(ports.metrics, "/metrics")
    );

    // Reject, per Redis user: 3 per second each. Interleaved, each user gets its own three.
    publish(
        1,
        serde_json::json!([{"kind": "rate_limit", "qps": 3, "scope": "user"}]),
    );
    let w = redis_limits(ports.redis, "users", 20);
    let (app_ok, app_refused, other_ok, other_refused) =
        (num(&w, 0), num(&w, 1), num(&w, 2), num(&w, 3));
    assert!(
        (2.0..=6.0).contains(&app_ok) && (2.0..=6.0).contains(&other_ok),
        "each user has a budget of its own: {w:?}"
    );
    assert!(app_refused >= 14.0 && other_refused >= 14.0, "{w:?}");
    let first = w[4].replace('_', " ");
    assert!(
        first.contains("user 'app'")
            && first.contains("governance rule 0 of edge-proxy, version 2"),
        "{first}"
    );
    assert!(
        metric(
            ports.metrics,
            "furrow_governance_commands_total{result=\"refused\"} "
        ) >= Some(28)
    );

    // Warm-up: 30 per second once warm, from a third of that over 10 s. Cold, a burst gets about one
    // token where a plain limit would let a full second's 30 through.
    publish(
        2,
        serde_json::json!([{"kind": "rate_limit", "qps": 30, "scope": "user",
                            "control": {"mode": "warm_up", "warm_up_s": 10}}]),
    );
    let w = redis_limits(ports.redis, "burst", 40);
    assert!(
        (1.0..=8.0).contains(&num(&w, 0)),
        "cold: far fewer than 30 of a burst pass: {w:?}"
    );
    // (PyMySQL's connect runs a statement of its own, which may take the one cold token.)
    let (ok, _, msg) = burst(ports.mysql, 40);
    assert!(ok <= 8, "MySQL cold: {ok} {msg}");
    // The same burst on a plain limit: the full second's worth.
    publish(
        3,
        serde_json::json!([{"kind": "rate_limit", "qps": 30, "scope": "user"}]),
    );
    let w = redis_limits(ports.redis, "burst", 40);
    assert!(num(&w, 0) >= 28.0, "plain: {w:?}");
    let (ok, _, msg) = burst(ports.mysql, 40);
    assert!(ok >= 27, "MySQL plain: {ok} {msg}");
}

#[test]
fn proxy_reports_its_calls_per_instance_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = testkit::RedisServer::start().expect("redis");
    let db = testkit::MariaDb::start().expect("mariadb");
    let cport = testkit::reserve_port().expect("port");
    let center = Center::start(dir.path(), cport.port());
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    for s in ["cache", "db-primary", "db-replicas"] {
        center.service(s);
    }
    let register = |service: &str, id: &str, addr: std::net::SocketAddr, version: &str| {
        center.call(
            "POST",
            &format!("/v1/registry/DEV/services/{service}/instances"),
            Some(serde_json::json!({"id": id, "ip": addr.ip().to_string(),
                                    "port": addr.port(), "version": version})),
        );
    };
    register("cache", "r0", redis.addr(), "7.2");
    register("db-primary", "primary", db.addr(), "11.4");
    let leases: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let ports = Ports {
        redis: leases[0].port(),
        mysql: leases[1].port(),
        admin: leases[2].port(),
        metrics: leases[3].port(),
    };
    drop(leases);
    let config = proxy_config(cport.port(), &dir.path().join("snap"), &ports)
        .replace("env = \"DEV\"\n", "env = \"DEV\"\nreport_calls_ms = 200\n");
    let proxy = FurrowProcess::start(&config, ports.admin);
    for i in 0..10 {
        assert_eq!(
            redis_cli(ports.redis, &["SET", &format!("k{i}"), "v"]),
            "OK"
        );
    }
    let (ok, refused, _) = burst(ports.mysql, 12);
    assert_eq!((ok, refused), (12, 0));
    let calls = |service: &str| {
        center.call(
            "GET",
            &format!("/v1/registry/DEV/services/{service}/calls"),
            None,
        )
    };
    wait_until(Duration::from_secs(10), || {
        let c = calls("cache");
        c["versions"][0]["version"] == "7.2" && c["versions"][0]["calls"].as_u64() >= Some(10)
    });
    wait_until(Duration::from_secs(10), || {
        let c = calls("db-primary");
        c["versions"][0]["version"] == "11.4" && c["versions"][0]["calls"].as_u64() >= Some(12)
    });
    let c = calls("cache");
    assert_eq!(c["reporters"], 1, "{c}");
    assert_eq!(c["versions"].as_array().map(Vec::len), Some(1), "{c}");
    assert_eq!(c["versions"][0]["errors"], 0, "{c}");
    assert!(c["versions"][0]["minute_calls"].as_u64() >= Some(10), "{c}");
    assert!(
        metric(ports.metrics, "furrow_registry_calls_reports_total ") >= Some(2),
        "{}",
        proxy.log()
    );
    // Per-call latencies: the proxy reports its backends' histograms, the center answers quantiles
    // (bucket bounds, router::latency) from the runtime tables.
    assert_eq!(c["kept_in"], "store", "{c}");
    let p50 = c["versions"][0]["p50_latency_ms"].as_f64().expect("p50");
    let p99 = c["versions"][0]["p99_latency_ms"].as_f64().expect("p99");
    assert!(p50 > 0.0 && p99 >= p50, "{c}");
    let primary = calls("db-primary");
    assert!(
        primary["versions"][0]["minute_p99_latency_ms"].as_f64() > Some(0.0),
        "{primary}"
    );
    // The statistics survive a restart of the center.
    let before = calls("db-primary")["versions"][0]["calls"].as_u64();
    drop(proxy);
    let before_after_proxy = calls("db-primary")["versions"][0]["calls"].as_u64();
    assert!(before_after_proxy >= before);
    drop(center);
    let center = Center::start(dir.path(), cport.port());
    let again = center.call("GET", "/v1/registry/DEV/services/db-primary/calls", None);
    assert_eq!(
        again["versions"][0]["calls"].as_u64(),
        before_after_proxy,
        "{again}"
    );
    assert_eq!(again["versions"][0]["version"], "11.4", "{again}");
}

/// Intervention rules published on a backend service shape the discovery the proxy follows: a cluster
/// switch sends every key to the other cluster's shard; a load share moves that share of the weight.
#[test]
fn proxy_follows_cluster_switch_and_load_share_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = testkit::RedisServer::start_many(2, Default::default()).expect("redis");
    let db = testkit::MariaDb::start().expect("mariadb");
    let cport = testkit::reserve_port().expect("port");
    let center = Center::start(dir.path(), cport.port());
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    for s in ["cache", "db-primary", "db-replicas"] {
        center.service(s);
    }
    for (id, r, cluster) in [("r-a", &redis[0], "a"), ("r-b", &redis[1], "b")] {
        center.call(
            "POST",
            "/v1/registry/DEV/services/cache/instances",
            Some(
                serde_json::json!({"id": id, "ip": r.addr().ip().to_string(),
                                    "port": r.addr().port(), "tags": {"cluster": cluster}}),
            ),
        );
    }
    center.register("db-primary", "primary", db.addr());
    let leases: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let ports = Ports {
        redis: leases[0].port(),
        mysql: leases[1].port(),
        admin: leases[2].port(),
        metrics: leases[3].port(),
    };
    drop(leases);
    let proxy = FurrowProcess::start(
        &proxy_config(cport.port(), &dir.path().join("snap"), &ports),
        ports.admin,
    );
    let set_keys = |prefix: &str, n: u32| {
        for i in 0..n {
            assert_eq!(
                redis_cli(
                    ports.redis,
                    &["SET", &format!("user:{}:{prefix}", i * 7919), "v"]
                ),
                "OK",
                "{}",
                proxy.log()
            );
        }
    };
    let flush = || {
        for r in &redis {
            let _ = redis_cli(r.port(), &["FLUSHALL"]);
        }
    };
    assert_eq!(instances_metric(ports.metrics, "cache"), Some(2));
    set_keys("x", 40);
    let (a0, b0) = (dbsize(&redis[0]), dbsize(&redis[1]));
    assert!(
        a0 > 0 && b0 > 0,
        "both shards take keys: {a0} {b0}\n{}\n{}",
        redis_cli(ports.admin, &["BACKEND", "LIST"]),
        center.call("GET", "/v1/registry/DEV/services/cache/discover", None)
    );
    flush();

    // Switch cluster a to b: the proxy's shard list has b's instance only.
    let publish = |version: u64, rules: serde_json::Value| {
        let g = generation(ports.admin);
        center.call(
            "PUT",
            "/v1/registry/DEV/services/cache/rules",
            Some(serde_json::json!({"rules": rules, "version": version})),
        );
        wait_until(Duration::from_secs(5), || generation(ports.admin) > g);
    };
    publish(
        0,
        serde_json::json!([{"kind": "cluster_switch", "from": "a", "to": "b"}]),
    );
    assert_eq!(instances_metric(ports.metrics, "cache"), Some(1));
    set_keys("y", 40);
    assert_eq!((dbsize(&redis[0]), dbsize(&redis[1])), (0, 40));
    flush();

    // Share 50 % of a's weight with b: a 50, b 150, so b takes about three quarters of the keys.
    publish(
        1,
        serde_json::json!([{"kind": "load_share", "from": "a", "to": "b", "percent": 50}]),
    );
    assert_eq!(instances_metric(ports.metrics, "cache"), Some(2));
    set_keys("z", 400);
    let (a, b) = (dbsize(&redis[0]), dbsize(&redis[1]));
    assert_eq!(a + b, 400);
    assert!(b > 240 && a > 40, "a {a}, b {b}");
}

/// Concurrency limits with real clients: a command (a statement) of `app` stays in flight on one
/// connection (BLPOP on an empty list; `SELECT SLEEP(5)`; each retried while the other connection's
/// command holds the slot) while a second connection of `app` sends commands until one is refused; the first is then released (a push to the list, straight to the
/// Redis server; the end of the sleep) and the second connection is served again. Prints one JSON
/// object.
const IN_FLIGHT: &str = r#"
import json, os, threading, time, pymysql, redis
rport, mport, pw = int(os.environ["RPORT"]), int(os.environ["MPORT"]), os.environ["PASSWORD"]
backend = redis.Redis(host="127.0.0.1", port=int(os.environ["BACKEND"]))
out = {}
def rconn(user):
    return redis.Redis(host="127.0.0.1", port=rport, username=user, password=pw,
                       lib_name=None, lib_version=None)
# Redis: BLPOP holds app's one command in flight.
held = rconn("app")
held.ping()
popped = []
def pop():
    # The probing connection's command may hold the one slot at this moment: try again.
    for _ in range(500):
        try:
            popped.append(held.blpop("gov-q", 30))
            return
        except redis.exceptions.ResponseError as e:
            if "concurrent commands" not in str(e):
                raise
            time.sleep(0.01)
t = threading.Thread(target=pop)
t.start()
second = rconn("app")
refused = ""
for _ in range(200):
    try:
        second.echo("x")
    except redis.exceptions.ResponseError as e:
        refused = str(e)
        break
    time.sleep(0.02)
out["redis_refused"] = refused
backend.lpush("gov-q", "v")
t.join()
out["redis_popped"] = [x.decode() for x in popped[0]] if popped and popped[0] else None
out["redis_after"] = second.echo("y").decode()
# MySQL: a sleeping statement holds app's one statement in flight.
def mconn():
    return pymysql.connect(host="127.0.0.1", port=mport, user="app", password=pw, autocommit=True)
sleeper, probe = mconn(), mconn()
def sleep():
    for _ in range(500):
        try:
            with sleeper.cursor() as c:
                c.execute("SELECT SLEEP(5)")
                c.fetchall()
            return
        except pymysql.err.OperationalError as e:
            if e.args[0] != 1226:
                raise
            time.sleep(0.01)
t = threading.Thread(target=sleep)
t.start()
refused = ""
while t.is_alive():
    try:
        with probe.cursor() as c:
            c.execute("SELECT 1")
            c.fetchall()
    except pymysql.err.OperationalError as e:
        refused = "%d %s" % (e.args[0], e.args[1])
        break
    time.sleep(0.02)
out["mysql_refused"] = refused
t.join()
with probe.cursor() as c:
    c.execute("SELECT 2")
    out["mysql_after"] = c.fetchall()[0][0]
print(json.dumps(out))
"#;

#[test]
fn concurrency_limits_caller_lists_and_several_ratio_breakers_in_both_proxies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = testkit::RedisServer::start().expect("redis");
    let db = testkit::MariaDb::start().expect("mariadb");
    let cport = testkit::reserve_port().expect("port");
    let center = Center::start(dir.path(), cport.port());
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    for s in ["cache", "db-primary", "db-replicas", "edge-proxy"] {
        center.service(s);
    }
    center.register("cache", "r0", redis.addr());
    center.register("db-primary", "primary", db.addr());
    let leases: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let ports = Ports {
        redis: leases[0].port(),
        mysql: leases[1].port(),
        admin: leases[2].port(),
        metrics: leases[3].port(),
    };
    drop(leases);
    let sha = hex(&codec::mysql::auth::caching_sha2_hash(SECRET.as_bytes()));
    let config = proxy_config(cport.port(), &dir.path().join("snap"), &ports)
        .replace(
            "env = \"DEV\"\n",
            "env = \"DEV\"\nservice = \"edge-proxy\"\n",
        )
        .replace("listeners = [\"db\"]", "listeners = [\"db\", \"cache\"]")
        + &format!("\n[users.other]\nlisteners = [\"cache\"]\npassword_sha256 = \"{sha}\"\n");
    let proxy = FurrowProcess::start(&config, ports.admin);
    let rules = "/v1/registry/DEV/services/edge-proxy/rules";
    let publish = |version: u64, rules_json: serde_json::Value| {
        center.call(
            "PUT",
            rules,
            Some(serde_json::json!({"rules": rules_json, "version": version})),
        );
        wait_until(Duration::from_secs(5), || {
            metric(ports.metrics, "furrow_governance_rules_version ") == Some(version + 1)
        });
    };
    let m = |prefix: &str| metric(ports.metrics, prefix);

    // One command in flight for `app` on either listener; `other` may not log in; two ratio
    // breakers, both in force.
    publish(
        0,
        serde_json::json!([
            {"kind": "rate_limit", "concurrency": 1, "scope": "user", "only": ["app"]},
            {"kind": "access", "allow": false, "callers": ["other"]},
            {"kind": "circuit_breaker", "strategy": "error_ratio", "threshold": 0.5,
             "window_ms": 10000, "min_calls": 50, "open_ms": 5000},
            {"kind": "circuit_breaker", "strategy": "slow_ratio", "threshold": 0.9,
             "window_ms": 10000, "min_calls": 50, "slow_ms": 10000, "open_ms": 5000}
        ]),
    );
    assert_eq!(
        m("furrow_governance_rules{kind=\"circuit_breaker\",enforced=\"yes\"} "),
        Some(2),
        "{}",
        http_get(ports.metrics, "/metrics")
    );
    assert_eq!(
        m("furrow_governance_rules{kind=\"circuit_breaker\",enforced=\"no\"} "),
        Some(0)
    );
    let out = Command::new(testkit::python().unwrap_or_else(|e| panic!("{e}")))
        .arg("-c")
        .arg(IN_FLIGHT)
        .env("RPORT", ports.redis.to_string())
        .env("MPORT", ports.mysql.to_string())
        .env("BACKEND", redis.addr().port().to_string())
        .env("PASSWORD", SECRET)
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    let redis_refused = v["redis_refused"].as_str().unwrap_or_default();
    assert!(
        redis_refused
            .contains("max number of concurrent commands reached for user 'app' (1 in flight)")
            && redis_refused.contains("governance rule 0 of edge-proxy, version 1"),
        "{v}"
    );
    assert_eq!(v["redis_popped"], serde_json::json!(["gov-q", "v"]), "{v}");
    assert_eq!(v["redis_after"], "y", "the reply freed the slot: {v}");
    let mysql_refused = v["mysql_refused"].as_str().unwrap_or_default();
    assert!(
        mysql_refused.starts_with("1226 ")
            && mysql_refused.contains("max_concurrent_statements")
            && mysql_refused.contains("governance rule 0 of edge-proxy, version 1"),
        "{v}"
    );
    assert_eq!(v["mysql_after"], 2, "{v}");
    assert!(
        m("furrow_governance_commands_total{result=\"over_concurrency\"} ") >= Some(1)
            && m("furrow_governance_statements_total{result=\"over_concurrency\"} ") >= Some(1),
        "{}",
        http_get(ports.metrics, "/metrics")
    );
    // The denied caller: refused at AUTH with NOPERM, not logged in (the next command wants AUTH).
    let mut conn = common::resp_connect(ports.redis);
    let r = common::resp_roundtrip(&mut conn, &["AUTH", "other", SECRET]);
    assert_eq!(
        r,
        "-NOPERM caller 'other' refused by a governance rule (governance rule 1 of edge-proxy, version 1)"
    );
    assert!(common::resp_roundtrip(&mut conn, &["PING"]).starts_with("-NOAUTH"));
    assert_eq!(
        redis_cli(
            ports.redis,
            &[
                "--user",
                "app",
                "--pass",
                SECRET,
                "--no-auth-warning",
                "PING"
            ]
        ),
        "PONG"
    );

    // An allow list of callers without `app`: its logins are refused on both listeners.
    publish(
        1,
        serde_json::json!([{"kind": "access", "allow": true, "callers": ["web"]}]),
    );
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "--host=127.0.0.1",
            "--user=app",
        ])
        .arg(format!("--port={}", ports.mysql))
        .arg(format!("--password={SECRET}"))
        .args(["--execute", "SELECT 1"])
        .output()
        .expect("mariadb");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("1045")
            && err.contains("caller refused (governance rule 0 of edge-proxy, version 2)"),
        "{err}"
    );
    let mut conn = common::resp_connect(ports.redis);
    let r = common::resp_roundtrip(&mut conn, &["AUTH", "app", SECRET]);
    assert!(r.starts_with("-NOPERM caller 'app'"), "{r}");
    assert!(
        m("furrow_governance_callers_refused_total ") == Some(3),
        "{}",
        http_get(ports.metrics, "/metrics")
    );
    // And with the rules gone, `app` is served again.
    publish(2, serde_json::json!([]));
    assert_eq!(burst(ports.mysql, 3), (3, 0, String::new()));
}
