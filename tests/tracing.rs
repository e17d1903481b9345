//! Full-link tracing end to end: a Python service instrumented with the OpenTelemetry SDK (from PyPI)
//! calls MySQL and Redis through a real `furrow proxy` with a W3C trace context (a sqlcommenter
//! comment in the SQL, `FURROW TRACEPARENT` on the Redis connection); a real `furrow control` collects
//! the SDK's span and the proxy's spans. The collector returns one trace with the app span as the root
//! and the proxy spans as its children, and the dependency graph shows app → proxy → backends with
//! counts equal to the calls made. Then the collector is stopped: statements keep being answered and
//! the proxy drops and counts their spans.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{FurrowProcess, redis_cli, wait_until};
use serde_json::Value as Json;

const TOKEN: &str = "trace-test-token";

/// The instrumented application: one `checkout` span around 3 SQL statements and 2 Redis commands.
/// With `--no-sdk` it runs the same calls under a fixed context without exporting anything itself.
const APP: &str = r#"
import sys
import pymysql, redis
endpoint, mysql_port, redis_port, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def calls(tp):
    db = pymysql.connect(host="127.0.0.1", port=mysql_port, user="app", password="app-secret")
    cur = db.cursor()
    for i in range(3):
        cur.execute(f"SELECT {i} + 1 /*traceparent='{tp}'*/")
        assert cur.fetchone()[0] == i + 1
    db.close()
    r = redis.Redis(host="127.0.0.1", port=redis_port)
    assert r.execute_command("FURROW", "TRACEPARENT", tp) in (b"OK", "OK", True)
    r.set("trace:k", "v")
    assert r.get("trace:k") == b"v"
    r.close()

if mode == "--no-sdk":
    calls("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    print("done")
    sys.exit(0)

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
    endpoint=endpoint + "/v1/traces", headers={"authorization": "Bearer " + mode})))
tracer = provider.get_tracer("shop")
with tracer.start_as_current_span("checkout") as span:
    ctx = span.get_span_context()
    calls("00-%032x-%016x-01" % (ctx.trace_id, ctx.span_id))
provider.shutdown()
print("%032x %016x" % (ctx.trace_id, ctx.span_id))
"#;

struct Control {
    child: Child,
    port: u16,
}

impl Control {
    fn start(port: u16) -> Self {
        let child = Command::new(common::furrow_bin())
            .args(["control", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-token", TOKEN, "--store", "sqlite::memory:"])
            .args(["--trace-sample-rate", "1", "--trace-decision-ms", "200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn furrow control");
        let c = Control { child, port };
        wait_until(Duration::from_secs(15), || c.get("/healthz").0 == 200);
        c
    }

    fn get(&self, path: &str) -> (u16, String) {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        if s.write_all(req.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// A request with a JSON body as the administrator; the JSON answer (status 200 or 201 asserted).
    fn call(&self, method: &str, path: &str, body: &Json) -> Json {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("control");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = body.to_string();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(
            matches!(out.get(9..12), Some("200" | "201")),
            "{method} {path}: {out}"
        );
        serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap()
    }

    fn json(&self, path: &str) -> Json {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_app(args: &[String]) -> String {
    let py = testkit::python().expect("python venv");
    let out = Command::new(py)
        .arg("-c")
        .arg(APP)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "app failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn info_field(admin: u16, name: &str) -> u64 {
    redis_cli(admin, &["INFO"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn app_and_proxy_spans_form_one_trace_and_the_graph_counts_the_calls() {
    let db = testkit::MariaDb::start().expect("mariadb");
    let rs = testkit::RedisServer::start().expect("redis");
    let ports: Vec<_> = (0..4)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let (admin, mysql, redis, ctl) = (
        ports[0].port(),
        ports[1].port(),
        ports[2].port(),
        ports[3].port(),
    );
    let control = Control::start(ctl);
    let cfg = format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{mysql}\"\ngroup = \"main\"\n\n\
         [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{redis}\"\ngroup = \"c\"\n\n\
         [mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"primary\", address = \"{}\" }}\n\n\
         [redis_groups.c]\nservers = [{{ name = \"r1\", address = \"{}\" }}]\n\n\
         [users.app]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\nlisteners = [\"db\"]\n\n\
         [tracing]\nendpoint = \"http://127.0.0.1:{ctl}\"\ntoken = \"{TOKEN}\"\n\
         head_sample_percent = 0\nslow_ms = 60000\nflush_ms = 50\n",
        testkit::APP_USER,
        testkit::APP_PASSWORD,
        db.addr(),
        rs.addr(),
    );
    let proxy = FurrowProcess::start(&cfg, admin);
    let endpoint = format!("http://127.0.0.1:{ctl}");
    let out = run_app(&[
        endpoint.clone(),
        mysql.to_string(),
        redis.to_string(),
        TOKEN.to_string(),
    ]);
    let (trace_id, app_span) = out.split_once(' ').expect("trace and span ids");

    // One trace: the app's span and, as its children, 3 MySQL and 2 Redis spans of the proxy.
    let mut tree = Json::Null;
    wait_until(Duration::from_secs(15), || {
        let (status, body) = control.get(&format!("/v1/trace/traces/{trace_id}"));
        tree = serde_json::from_str(&body).unwrap_or(Json::Null);
        status == 200 && tree["spans"] == 6
    });
    let roots = tree["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{tree}");
    let root = &roots[0];
    assert_eq!(
        (root["service"].as_str(), root["name"].as_str()),
        (Some("shop"), Some("checkout"))
    );
    assert_eq!(root["span_id"], app_span);
    let kids = root["children"].as_array().unwrap();
    assert_eq!(kids.len(), 5, "{tree}");
    for k in kids {
        assert_eq!(k["service"], "furrow-proxy");
        assert_eq!(k["parent_id"], app_span);
        assert_eq!(k["trace_id"], trace_id);
    }
    let system = |s: &str| {
        kids.iter()
            .filter(|k| k["attributes"]["db.system"] == s)
            .count()
    };
    assert_eq!((system("mysql"), system("redis")), (3, 2));
    let sql = kids
        .iter()
        .find(|k| k["attributes"]["db.system"] == "mysql")
        .unwrap();
    assert_eq!(
        sql["attributes"]["db.statement"], "SELECT ? + ?",
        "literals are masked: {sql}"
    );
    assert_eq!(sql["attributes"]["db.user"], "app");

    // The dependency graph: app → proxy → backends, with the counts of the calls made.
    let deps = control.json("/v1/trace/dependencies?since_s=600");
    let calls = |from: &str, to: &str| {
        deps["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .map(|e| e["calls"].as_u64().unwrap())
    };
    assert_eq!(calls("shop", "furrow-proxy"), Some(5), "{deps}");
    assert_eq!(calls("furrow-proxy", "mysql:primary"), Some(3), "{deps}");
    assert_eq!(calls("furrow-proxy", "redis:r1"), Some(2), "{deps}");
    let search = control.json("/v1/trace/search?service=furrow-proxy&attr=db.system%3Dredis");
    assert_eq!(search["traces"][0]["trace_id"], trace_id);
    let slow = control.json("/v1/trace/services/furrow-proxy/slowest");
    assert!(
        slow["operations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["operation"] == "SELECT ? + ?")
    );
    // The same through the CLI: the call tree as text, the graph as JSON.
    let ctl_cmd = |args: &[&str]| {
        let out = Command::new(common::furrow_bin())
            .args(["ctl", "--server", &endpoint, "--token", TOKEN, "trace"])
            .args(args)
            .output()
            .expect("furrow ctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = ctl_cmd(&["get", trace_id]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].starts_with("shop checkout "), "{text}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("  furrow-proxy SELECT ? + ? "))
            .count(),
        3,
        "{text}"
    );
    let deps: Json = serde_json::from_str(&ctl_cmd(&["deps", "--since-s", "600"])).unwrap();
    assert_eq!(deps["edges"].as_array().unwrap().len(), 3, "{deps}");
    let sql = control.json("/v1/trace/sql?since_s=600");
    let d = &sql["digests"][0];
    assert_eq!(
        (d["digest"].as_str(), d["calls"].as_u64()),
        (Some("SELECT ? + ?"), Some(3)),
        "{sql}"
    );
    assert_eq!(d["slow_samples"][0]["trace_id"], trace_id);
    assert!(
        info_field(admin, "process_threads") >= 2,
        "executor + admin threads"
    );
    assert!(info_field(admin, "process_rss_bytes") > 0);
    let p = control.json("/v1/process");
    assert!(
        p["threads"].as_u64().unwrap() >= 1 && p["open_fds"].as_u64().unwrap() >= 1,
        "{p}"
    );
    let sent = info_field(admin, "trace_spans_sent");
    assert!(sent >= 5, "trace_spans_sent:{sent}");

    // The collector stops: every call is still answered; the proxy's spans are dropped and counted.
    drop(control);
    run_app(&[
        endpoint,
        mysql.to_string(),
        redis.to_string(),
        "--no-sdk".to_string(),
    ]);
    wait_until(Duration::from_secs(15), || {
        info_field(admin, "trace_spans_failed") + info_field(admin, "trace_spans_dropped") >= 5
    });
    assert_eq!(info_field(admin, "trace_spans_sent"), sent);
    drop(proxy);
}

/// A scatter statement on a sharded listener: one span for the statement and, as its children, one
/// span per shard it ran on; the dependency graph counts one call to each shard.
#[test]
fn a_scatter_statement_has_a_child_span_per_shard() {
    let db = testkit::MariaDb::start().expect("mariadb");
    for s in ["app_0", "app_1"] {
        db.sql(&format!("CREATE DATABASE {s}")).unwrap();
        db.sql(&format!(
            "CREATE TABLE {s}.orders (user_id INT PRIMARY KEY, total INT)"
        ))
        .unwrap();
    }
    db.sql("INSERT INTO app_0.orders VALUES (2, 10), (4, 20)")
        .unwrap();
    db.sql("INSERT INTO app_1.orders VALUES (1, 5)").unwrap();
    let ports: Vec<_> = (0..3)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let (admin, mysql, ctl) = (ports[0].port(), ports[1].port(), ports[2].port());
    let control = Control::start(ctl);
    let cfg = format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{mysql}\"\ngroup = \"main\"\n\n\
         [mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"primary\", address = \"{}\" }}\n\n\
         [users.app]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\n\n\
         [sharding.app]\nlistener = \"db\"\n\
         shards = [ {{ name = \"s0\", group = \"main\", schema = \"app_0\" }}, {{ name = \"s1\", group = \"main\", schema = \"app_1\" }} ]\n\n\
         [[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n\n\
         [tracing]\nendpoint = \"http://127.0.0.1:{ctl}\"\ntoken = \"{TOKEN}\"\n\
         head_sample_percent = 0\nslow_ms = 60000\nflush_ms = 50\n",
        testkit::APP_USER,
        testkit::APP_PASSWORD,
        db.addr(),
    );
    let _proxy = FurrowProcess::start(&cfg, admin);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &mysql.to_string(), "-u", "app", "-papp-secret"])
        .args(["--comments", "--batch", "--skip-column-names", "-e"])
        .arg(format!(
            "SELECT COUNT(*), SUM(total) FROM orders /*traceparent='00-{trace_id}-00f067aa0ba902b7-01'*/"
        ))
        .output()
        .expect("mariadb client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3\t35");

    let mut tree = Json::Null;
    wait_until(Duration::from_secs(15), || {
        let (status, body) = control.get(&format!("/v1/trace/traces/{trace_id}"));
        tree = serde_json::from_str(&body).unwrap_or(Json::Null);
        status == 200 && tree["spans"] == 3
    });
    let root = &tree["roots"][0];
    assert_eq!(root["parent_id"], "00f067aa0ba902b7", "{tree}");
    assert_eq!(root["attributes"]["furrow.backend"], "shards");
    let mut shards: Vec<&str> = root["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attributes"]["furrow.shard"].as_str().unwrap())
        .collect();
    shards.sort_unstable();
    assert_eq!(shards, ["s0", "s1"], "{tree}");
    let deps = control.json("/v1/trace/dependencies?since_s=600");
    for s in ["mysql:s0", "mysql:s1"] {
        let e = deps["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["to"] == s);
        assert_eq!(
            e.map(|e| e["calls"].clone()),
            Some(serde_json::json!(1)),
            "{deps}"
        );
    }

    // A streamed scatter (a sorted read: merged as the rows arrive) has its child per shard too.
    let streamed = "0af7651916cd43dd8448eb211c80319c";
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &mysql.to_string(), "-u", "app", "-papp-secret"])
        .args(["--comments", "--batch", "--skip-column-names", "-e"])
        .arg(format!(
            "SELECT user_id FROM orders ORDER BY user_id /*traceparent='00-{streamed}-b7ad6b7169203331-01'*/"
        ))
        .output()
        .expect("mariadb client");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1\n2\n4");
    wait_until(Duration::from_secs(15), || {
        let (status, body) = control.get(&format!("/v1/trace/traces/{streamed}"));
        tree = serde_json::from_str(&body).unwrap_or(Json::Null);
        status == 200 && tree["spans"] == 3
    });
    let root = &tree["roots"][0];
    assert_eq!(root["attributes"]["furrow.backend"], "shards", "{tree}");
    let mut shards: Vec<&str> = root["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attributes"]["furrow.shard"].as_str().unwrap())
        .collect();
    shards.sort_unstable();
    assert_eq!(shards, ["s0", "s1"], "{tree}");
}

/// A collector and a Furrow with one Redis listener (`cache`, group `c`) over `servers` (named
/// `r1`, `r2`, ...), exporting its spans at `head_percent` % head sampling (`slow_ms` out of reach).
struct TracedRedis {
    control: Control,
    _proxy: FurrowProcess,
    admin: u16,
    redis: u16,
    _ports: Vec<testkit::PortLease>,
}

impl TracedRedis {
    fn start(servers: &[&testkit::RedisServer], head_percent: u8) -> TracedRedis {
        let ports: Vec<_> = (0..3)
            .map(|_| testkit::reserve_port().expect("port"))
            .collect();
        let (admin, redis, ctl) = (ports[0].port(), ports[1].port(), ports[2].port());
        let control = Control::start(ctl);
        let list: Vec<String> = servers
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{{ name = \"r{}\", address = \"{}\" }}", i + 1, r.addr()))
            .collect();
        let cfg = format!(
            "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\n\n\
             [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{redis}\"\ngroup = \"c\"\n\n\
             [redis_groups.c]\nservers = [{}]\n\n\
             [tracing]\nendpoint = \"http://127.0.0.1:{ctl}\"\ntoken = \"{TOKEN}\"\n\
             head_sample_percent = {head_percent}\nslow_ms = 60000\nflush_ms = 50\n",
            list.join(", "),
        );
        TracedRedis {
            control,
            _proxy: FurrowProcess::start(&cfg, admin),
            admin,
            redis,
            _ports: ports,
        }
    }
}

/// A Redis command split over servers (MSET over two shards) has a span per server part, each a child
/// of the connection's `FURROW TRACEPARENT` context; a malformed context is refused. A failed command
/// without a context is traced although nothing is head-sampled; a successful one is not.
#[test]
fn a_split_redis_command_has_a_span_per_server() {
    let r1 = testkit::RedisServer::start().expect("redis");
    let r2 = testkit::RedisServer::start().expect("redis");
    let t = TracedRedis::start(&[&r1, &r2], 0);
    let (control, redis) = (&t.control, t.redis);
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let tp = format!("00-{trace_id}-b7ad6b7169203331-01");
    let mut mset = vec!["MSET".to_string()];
    for i in 0..20 {
        mset.push(format!("k{i}"));
        mset.push(i.to_string());
    }
    // One connection: the context, the split command, then a malformed context (refused).
    let script = format!(
        "FURROW TRACEPARENT {tp}\n{}\nFURROW TRACEPARENT 00-nothex\n",
        mset.join(" ")
    );
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["OK", "OK"], "{out}");
    assert!(lines[2].contains("invalid traceparent"), "{out}");

    let mut tree = Json::Null;
    wait_until(Duration::from_secs(15), || {
        let (status, body) = control.get(&format!("/v1/trace/traces/{trace_id}"));
        tree = serde_json::from_str(&body).unwrap_or(Json::Null);
        status == 200 && tree["spans"] == 2
    });
    let mut backends: Vec<&str> = tree["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["name"], "MSET");
            assert_eq!(s["parent_id"], "b7ad6b7169203331");
            s["attributes"]["furrow.backend"].as_str().unwrap()
        })
        .collect();
    backends.sort_unstable();
    assert_eq!(backends, ["r1", "r2"], "{tree}");

    // Without a context and at 0 % head sampling, a command is traced only when it fails: the
    // failed INCR gets a root span with status error, the SET before it none.
    assert_eq!(
        common::redis_cli(redis, &["SET", "plain", "v"]),
        "OK",
        "the SET answers"
    );
    assert!(common::redis_cli(redis, &["INCR", "plain"]).contains("not an integer"));
    let mut found = Json::Null;
    wait_until(Duration::from_secs(15), || {
        found = control.json("/v1/trace/search?service=furrow-proxy&operation=INCR&status=error");
        found["traces"].as_array().is_some_and(|t| t.len() == 1)
    });
    let id = found["traces"][0]["trace_id"].as_str().unwrap().to_string();
    let (_, body) = control.get(&format!("/v1/trace/traces/{id}"));
    let tree: Json = serde_json::from_str(&body).unwrap();
    let span = &tree["roots"][0];
    assert_eq!(span["name"], "INCR", "{tree}");
    assert_eq!(span["status"], "error", "{tree}");
    assert!(span.get("parent_id").is_none(), "a root: {tree}");
    let backend = span["attributes"]["furrow.backend"].as_str().unwrap();
    assert_eq!(
        span["attributes"]["peer.service"],
        format!("redis:{backend}"),
        "{tree}"
    );
    assert_eq!(span["attributes"]["client.address"], "127.0.0.1", "{tree}");
    let sets = control.json("/v1/trace/search?service=furrow-proxy&operation=SET");
    assert_eq!(sets["traces"].as_array().map(Vec::len), Some(0), "{sets}");
}

/// At 100 % head sampling and without a caller's context every command gets a root span made at
/// its reply (`Dest::Sampled`: no wrapper), a failed one with status error, each naming its
/// command, server, client and reply size.
#[test]
fn head_sampled_commands_get_root_spans() {
    let r1 = testkit::RedisServer::start().expect("redis");
    let t = TracedRedis::start(&[&r1], 100);
    let (control, redis, admin) = (&t.control, t.redis, t.admin);
    assert_eq!(common::redis_cli(redis, &["SET", "hs", "value"]), "OK");
    assert_eq!(common::redis_cli(redis, &["GET", "hs"]), "value");
    assert!(common::redis_cli(redis, &["INCR", "hs"]).contains("not an integer"));
    let span_of = |op: &str| {
        let mut found = Json::Null;
        wait_until(Duration::from_secs(15), || {
            found = control.json(&format!(
                "/v1/trace/search?service=furrow-proxy&operation={op}"
            ));
            found["traces"].as_array().is_some_and(|t| t.len() == 1)
        });
        let id = found["traces"][0]["trace_id"].as_str().unwrap().to_string();
        let (_, body) = control.get(&format!("/v1/trace/traces/{id}"));
        let tree: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(tree["spans"], 1, "{tree}");
        let span = tree["roots"][0].clone();
        assert_eq!(span["name"], op, "{tree}");
        assert!(span.get("parent_id").is_none(), "a root: {tree}");
        assert_eq!(span["attributes"]["furrow.backend"], "r1", "{tree}");
        assert_eq!(span["attributes"]["peer.service"], "redis:r1", "{tree}");
        assert_eq!(span["attributes"]["client.address"], "127.0.0.1", "{tree}");
        assert_eq!(span["attributes"]["furrow.listener"], "cache", "{tree}");
        span
    };
    let get = span_of("GET");
    assert_ne!(get["status"], "error", "{get}");
    // `$5\r\nvalue\r\n`
    assert_eq!(get["attributes"]["furrow.reply_bytes"], 11, "{get}");
    assert_ne!(span_of("SET")["status"], "error");
    assert_eq!(span_of("INCR")["status"], "error");
    assert!(info_field(admin, "trace_spans_sent") >= 3);
}

/// A proxy sending with an ingest-only token (a user whose only grant is level `none` with
/// `trace_ingest` on the application `furrow-proxy`, its `service_name`): its spans are taken. The same
/// token on a proxy whose `service_name` names another application has its spans rejected (OTLP
/// partial success, counted by the collector), and the proxy keeps serving.
#[test]
fn a_proxy_sends_its_spans_with_an_ingest_only_token() {
    let r1 = testkit::RedisServer::start().expect("redis");
    let ports: Vec<_> = (0..5)
        .map(|_| testkit::reserve_port().expect("port"))
        .collect();
    let ctl = ports[0].port();
    let control = Control::start(ctl);
    control.call(
        "POST",
        "/v1/apps",
        &serde_json::json!({"name": "furrow-proxy"}),
    );
    control.call(
        "POST",
        "/v1/users",
        &serde_json::json!({"name": "proxy-bot"}),
    );
    control.call(
        "PUT",
        "/v1/permissions",
        &serde_json::json!({"subject": "user:proxy-bot", "app": "furrow-proxy", "namespace": "*",
            "level": "none", "trace_ingest": true}),
    );
    let token = control.call(
        "POST",
        "/v1/tokens",
        &serde_json::json!({"user": "proxy-bot"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let start = |admin: u16, redis: u16, service: &str| {
        let cfg = format!(
            "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\n\n\
             [[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{redis}\"\ngroup = \"c\"\n\n\
             [redis_groups.c]\nservers = [{{ name = \"r1\", address = \"{}\" }}]\n\n\
             [tracing]\nendpoint = \"http://127.0.0.1:{ctl}\"\ntoken = \"{token}\"\nservice_name = \"{service}\"\n\
             head_sample_percent = 100\nflush_ms = 50\n",
            r1.addr(),
        );
        FurrowProcess::start(&cfg, admin)
    };
    let (admin, redis) = (ports[1].port(), ports[2].port());
    let _proxy = start(admin, redis, "furrow-proxy");
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let script = format!("FURROW TRACEPARENT 00-{trace_id}-eee19b7ec3c1b174-01\nSET k v\n");
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["OK", "OK"]
    );
    let mut tree = Json::Null;
    wait_until(Duration::from_secs(15), || {
        let (status, body) = control.get(&format!("/v1/trace/traces/{trace_id}"));
        tree = serde_json::from_str(&body).unwrap_or(Json::Null);
        status == 200 && tree["spans"] == 1
    });
    assert_eq!(tree["roots"][0]["service"], "furrow-proxy", "{tree}");
    assert_eq!(control.json("/v1/trace/stats")["spans_rejected"], 0);

    // The same token, another service name: refused span by span, the proxy unaffected.
    let (admin2, redis2) = (ports[3].port(), ports[4].port());
    let _other = start(admin2, redis2, "billing");
    assert_eq!(redis_cli(redis2, &["SET", "k2", "v"]), "OK");
    wait_until(Duration::from_secs(15), || {
        control.json("/v1/trace/stats")["spans_rejected"].as_u64() >= Some(1)
    });
    assert_eq!(redis_cli(redis2, &["GET", "k2"]), "v");
    // The proxy got answers (200 with partial success), not failures.
    assert!(info_field(admin2, "trace_spans_sent") >= 1);
    assert_eq!(info_field(admin2, "trace_spans_failed"), 0);
}
