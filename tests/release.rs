//! Release management end to end, with real processes only: a `furrow control` with its SQLite store,
//! `furrow agent`s as the hosts, and the released artifact a small Python HTTP server the agents' hooks
//! stop, install, start and health-check. Canary analysis judges what the agents' probes measure.
//!
//! Bounded: probes every 20 ms, canary verdicts on 40 samples per group, pauses of a fraction of a second;
//! each test runs in seconds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BlockingApi, config_generation, furrow_bin, http_get, spawn_config_source_proxy};
use serde_json::{Value as Json, json};

const TOKEN: &str = "release-admin-token";

/// A loopback port reserved against the other test processes (testkit's lock files) for the rest of this
/// test process (nextest runs each test in a process of its own).
fn free_port() -> u16 {
    let lease = testkit::reserve_port().expect("port");
    let port = lease.port();
    std::mem::forget(lease);
    port
}

/// A child process killed on drop, with its output in a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[String], log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(furrow_bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A control process, its agents, and the servers their hooks started (killed on drop, through the pid
/// files the hooks wrote).
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    control: Option<Proc>,
    agents: Vec<Proc>,
    api: BlockingApi,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.agents.clear();
        for entry in walk(self.dir.path()) {
            if entry.file_name().is_some_and(|n| n == "pid")
                && let Ok(pid) = std::fs::read_to_string(&entry)
            {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
    }
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let api = BlockingApi::new(&format!("http://127.0.0.1:{port}"), TOKEN);
        let mut c = Cluster {
            dir,
            port,
            control: None,
            agents: Vec::new(),
            api,
        };
        c.start_control();
        c.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
        c
    }

    fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start_control(&mut self) {
        let store = format!("sqlite:{}", self.dir.path().join("control.db").display());
        let args: Vec<String> = [
            "--log",
            "info",
            "control",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--store",
            &store,
            "--admin-token",
            TOKEN,
            "--envs",
            "DEV",
            "--artifact-root",
            self.dir.path().to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let p = Proc::spawn(&args, self.dir.path().join(format!("control-{n}.log")));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !http_get_ok(self.port, "/healthz") {
            assert!(
                Instant::now() < deadline,
                "control did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.control = Some(p);
    }

    fn kill_control(&mut self) {
        if let Some(mut p) = self.control.take() {
            p.kill();
        }
    }

    /// Starts `furrow agent --host HOST` whose hooks serve on `port`.
    fn agent(&mut self, host: &str, port: u16, group: &str) {
        self.agent_with(host, port, group, &[]);
    }

    /// Like [`Cluster::agent`], with more `--var NAME=VALUE`s for the hooks.
    fn agent_with(&mut self, host: &str, port: u16, group: &str, vars: &[String]) {
        let dir = self.dir.path().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        let args: Vec<String> = [
            "--log",
            "info",
            "agent",
            "--server",
            &self.server(),
            "--token",
            TOKEN,
            "--host",
            host,
            "--dir",
            dir.to_str().unwrap(),
            "--var",
            &format!("PORT={port}"),
            "--label",
            &format!("group={group}"),
            "--poll-ms",
            "5000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(vars.iter().flat_map(|v| ["--var".to_string(), v.clone()]))
        .collect();
        self.agents.push(Proc::spawn(
            &args,
            self.dir.path().join(format!("agent-{host}.log")),
        ));
    }

    fn call(&self, method: &str, path: &str, body: Option<Json>) -> Result<Json, String> {
        self.api
            .rt
            .block_on(self.api.client.call(method, path, body.as_ref()))
            .map_err(|e| e.to_string())
    }

    fn ok(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        self.call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.logs()))
    }

    /// `furrow ctl release ...`: the JSON it prints.
    fn ctl(&self, args: &[&str]) -> Json {
        let out = Command::new(furrow_bin())
            .args([
                "ctl",
                "--server",
                &self.server(),
                "--token",
                TOKEN,
                "release",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "furrow ctl release {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for p in self.control.iter().chain(&self.agents) {
            s.push_str(&format!("--- {}\n{}\n", p.log.display(), p.log()));
        }
        s
    }

    /// Waits (bounded) until deployment `id` satisfies `f`.
    fn until(&self, id: u64, what: &str, secs: u64, f: impl Fn(&Json) -> bool) -> Json {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(d) = self.call("GET", &format!("/v1/release/deployments/{id}"), None) {
                if f(&d) {
                    return d;
                }
                if Instant::now() >= deadline {
                    panic!("{what}: {d:#}\n{}", self.logs());
                }
            } else if Instant::now() >= deadline {
                panic!("{what}: control unreachable\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn deploy(&self, project: &str, stage: &str, version: &str) -> u64 {
        let d = self.ok(
            "POST",
            &format!("/v1/release/projects/{project}/stages/{stage}/deploy"),
            Some(json!({"version": version})),
        );
        d["id"].as_u64().unwrap()
    }

    fn add_version(&self, project: &str, name: &str, artifact: Json) {
        self.ok(
            "POST",
            &format!("/v1/release/projects/{project}/versions"),
            Some(json!({"name": name, "artifact": artifact})),
        );
        let g = self.ok(
            "POST",
            &format!("/v1/release/projects/{project}/versions/{name}/gate"),
            None,
        );
        assert_eq!(g["status"], "passed");
    }
}

fn http_get_ok(port: u16, path: &str) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        && http_get(port, path).starts_with("HTTP/1.1 200")
}

fn state(d: &Json) -> &str {
    d["state"].as_str().unwrap_or("")
}

/// What the server on `port` answers on `/`: (status line, body).
fn serving(port: u16) -> (String, String) {
    let text = http_get(port, "/");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The released service: answers its version on every path; a broken version answers 500 except on
/// `/health` (so it passes its health hook and only canary analysis can catch it).
fn server_script(version: &str, broken: bool) -> String {
    format!(
        r#"import http.server, sys
VERSION = "{version}"
BROKEN = {broken}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if BROKEN and self.path != "/health" else 200
        body = VERSION.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
        broken = if broken { "True" } else { "False" }
    )
}

/// Hooks: stop waits until the port is free, start runs the script in the background, health asks
/// `/health`.
fn hooks() -> Json {
    let port_open = r#"python3 -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1', int(sys.argv[1]))) == 0 else 1)" $FURROW_VAR_PORT"#;
    json!({
        "stop": format!("if [ -f pid ]; then kill $(cat pid) 2>/dev/null; rm -f pid; i=0; while {port_open} && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; fi"),
        "install": "cp \"$FURROW_ARTIFACT\" server.py",
        "start": "nohup python3 server.py $FURROW_VAR_PORT > server.log 2>&1 & echo $! > pid",
        "health": r#"python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:%s/health' % sys.argv[1], timeout=1)" $FURROW_VAR_PORT"#,
        "health_timeout_ms": 10000,
    })
}

/// Project `web` of app `shop`: the [`hooks`], a probe of `/` on each host's `PORT` every 20 ms, and
/// `stages`.
fn web_project(stages: Json) -> Json {
    json!({
        "app": "shop",
        "hooks": hooks(),
        "probe": {"url": "http://127.0.0.1:${PORT}/", "interval_ms": 20},
        "stages": stages,
    })
}

#[test]
fn release_three_agents_dev_to_live_with_approval_then_a_failing_canary_rolls_back() {
    let mut c = Cluster::new();
    c.ok(
        "POST",
        "/v1/users",
        Some(json!({"name": "lee", "roles": ["lead"]})),
    );
    let lee = c.ok("POST", "/v1/tokens", Some(json!({"user": "lee"})))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ports = [free_port(), free_port(), free_port()];
    for (i, host) in ["h1", "h2", "h3"].iter().enumerate() {
        c.agent(host, ports[i], if i == 0 { "dev" } else { "live" });
    }
    c.ok(
        "PUT",
        "/v1/release/projects/web",
        Some(web_project(json!([
            {"name": "dev", "hosts": ["h1"]},
            {"name": "live", "hosts": ["h2", "h3"], "batches": [{"count": 1}, "rest"], "pause_ms": 200,
             "approval": {"approvers": ["user:lee"], "count": 1},
             "window": {"allow": ["* 00:00-24:00"]},
             // Latency is left out here: on a loaded CI machine two Python servers' medians can differ
             // by any factor; the latency test is covered by canary's unit tests.
             "canary": {"min_samples": 40, "max_wait_ms": 20000, "latency": false}},
        ]))),
    );
    let approve = |id: u64| {
        BlockingApi::new(&c.server(), &lee).ok(
            "POST",
            &format!("/v1/release/deployments/{id}/approve"),
            None,
        );
    };
    // v1 through dev, then live with an approval (first release of live: no baseline, no canary).
    c.add_version("web", "v1", json!({"inline": server_script("v1", false)}));
    let id = c.deploy("web", "dev", "v1");
    c.until(id, "v1 on dev", 30, |d| state(d) == "succeeded");
    assert_eq!(serving(ports[0]), ("HTTP/1.0 200 OK".into(), "v1".into()));
    let id = c.deploy("web", "live", "v1");
    c.until(id, "awaiting approval", 10, |d| {
        state(d) == "awaiting_approval"
    });
    approve(id);
    let d = c.until(id, "v1 on live", 30, |d| state(d) == "succeeded");
    assert_eq!(d["batches"], json!([["h2"], ["h3"]]));
    for p in &ports[1..] {
        assert_eq!(serving(*p).1, "v1");
    }
    // v2 (good) through the CLI: canary on h2 against h3, passes, promoted to h3.
    let v2 = c.dir.path().join("v2.py");
    std::fs::write(&v2, server_script("v2", false)).unwrap();
    c.ctl(&["add-version", "web", "v2", "--file", v2.to_str().unwrap()]);
    assert_eq!(
        c.ctl(&["gate", "web", "v2", "--wait", "10"])["status"],
        "passed"
    );
    let id = c.ctl(&["deploy", "web", "dev", "v2"])["id"]
        .as_u64()
        .unwrap();
    c.until(id, "v2 on dev", 30, |d| state(d) == "succeeded");
    let id = c.ctl(&["deploy", "web", "live", "v2"])["id"]
        .as_u64()
        .unwrap();
    c.until(id, "awaiting approval", 10, |d| {
        state(d) == "awaiting_approval"
    });
    approve(id);
    let d = c.until(id, "v2 on live", 60, |d| {
        matches!(
            state(d),
            "succeeded" | "failed" | "rolled_back" | "cancelled"
        )
    });
    assert_eq!(state(&d), "succeeded", "{d:#}");
    assert_eq!(d["canary"]["pass"], true, "{d:#}");
    assert!(d["canary"]["canary"]["requests"].as_u64().unwrap() >= 40);
    for p in &ports[1..] {
        assert_eq!(serving(*p), ("HTTP/1.0 200 OK".into(), "v2".into()));
    }
    // v3 answers 500: it passes its health hook (dev succeeds) but fails canary analysis on live, and is
    // rolled back automatically; live keeps serving v2.
    c.add_version("web", "v3", json!({"inline": server_script("v3", true)}));
    let id = c.deploy("web", "dev", "v3");
    c.until(id, "v3 on dev", 30, |d| state(d) == "succeeded");
    let id = c.deploy("web", "live", "v3");
    c.until(id, "awaiting approval", 10, |d| {
        state(d) == "awaiting_approval"
    });
    approve(id);
    let d = c.until(id, "v3 rolled back", 60, |d| {
        matches!(state(d), "rolled_back" | "succeeded" | "failed")
    });
    assert_eq!(state(&d), "rolled_back", "{d:#}");
    assert_eq!(d["canary"]["pass"], false);
    let reason = d["canary"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("error rate 1.0000 vs baseline 0.0000"),
        "{reason}"
    );
    assert_eq!(d["hosts"]["h2"]["version"], "v2");
    assert!(d["hosts"].get("h3").is_none(), "the rest never got v3");
    for p in &ports[1..] {
        assert_eq!(serving(*p), ("HTTP/1.0 200 OK".into(), "v2".into()));
    }
    let p = c.ok("GET", "/v1/release/projects/web", None);
    assert_eq!(p["stages"][1]["state"]["version"], "v2");
    assert_eq!(p["stages"][0]["state"]["version"], "v3");
    // Rollback of live to v1 and a restart, through the same batches.
    let d = c.ctl(&["rollback", "web", "live", "v1"]);
    let id = d["id"].as_u64().unwrap();
    c.until(id, "rolled back to v1", 30, |d| state(d) == "succeeded");
    for p in &ports[1..] {
        assert_eq!(serving(*p).1, "v1");
    }
    let pid_before = std::fs::read_to_string(c.dir.path().join("h3/web/pid")).unwrap();
    let id = c.ctl(&["restart", "web", "live"])["id"].as_u64().unwrap();
    let d = c.until(id, "restarted", 30, |d| state(d) == "succeeded");
    assert_eq!(d["version"], "v1");
    let pid_after = std::fs::read_to_string(c.dir.path().join("h3/web/pid")).unwrap();
    assert_ne!(pid_before, pid_after, "a restart starts a new process");
    assert_eq!(serving(ports[2]).1, "v1");
    c.kill_control();
}

#[test]
fn release_control_and_agent_restart_mid_rollout_resumes_it() {
    let mut c = Cluster::new();
    let ports = [free_port(), free_port(), free_port()];
    for (i, host) in ["h1", "h2", "h3"].iter().enumerate() {
        c.agent(host, ports[i], "live");
    }
    c.ok(
        "PUT",
        "/v1/release/projects/web",
        Some(json!({
            "app": "shop",
            "hooks": hooks(),
            "stages": [{"name": "live", "hosts": ["h1", "h2", "h3"],
                        "batches": [{"count": 1}, {"count": 1}, "rest"], "pause_ms": 1500}],
        })),
    );
    c.add_version("web", "v1", json!({"inline": server_script("v1", false)}));
    let id = c.deploy("web", "live", "v1");
    c.until(id, "first batch done, pausing", 30, |d| {
        state(d) == "pausing"
    });
    // The control service and the agent of a host not reached yet go down together.
    c.kill_control();
    c.agents[2].kill();
    assert_eq!(
        serving(ports[0]).1,
        "v1",
        "the host done before the restart serves"
    );
    c.start_control();
    std::thread::sleep(Duration::from_millis(300));
    c.agent("h3", ports[2], "live");
    let d = c.until(id, "resumed and finished", 60, |d| {
        matches!(
            state(d),
            "succeeded" | "failed" | "rolled_back" | "cancelled"
        )
    });
    assert_eq!(state(&d), "succeeded", "{d:#}");
    let batches: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["what"] == "batch")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(batches.len(), 3, "each batch once: {batches:?}");
    for p in ports {
        assert_eq!(serving(p).1, "v1");
    }
    // Idempotent: the same version again finds it installed and healthy on every host and restarts nothing.
    let pid = |h: &str| std::fs::read_to_string(c.dir.path().join(h).join("web/pid")).unwrap();
    let before: Vec<String> = ["h1", "h2", "h3"].iter().map(|h| pid(h)).collect();
    let id = c.deploy("web", "live", "v1");
    let d = c.until(id, "redeployed", 30, |d| state(d) == "succeeded");
    assert!(
        d["hosts"]["h2"]["message"]
            .as_str()
            .unwrap()
            .contains("already installed and healthy"),
        "{d:#}"
    );
    let after: Vec<String> = ["h1", "h2", "h3"].iter().map(|h| pid(h)).collect();
    assert_eq!(before, after, "no process was restarted");
}

#[test]
fn release_plan_deploys_two_services_in_dependency_order() {
    let mut c = Cluster::new();
    let ports = [free_port(), free_port()];
    c.agent("h1", ports[0], "a");
    c.agent("h2", ports[1], "b");
    let project = |hosts: &[&str], deps: &[&str]| {
        json!({"app": "shop", "hooks": hooks(), "depends_on": deps,
               "stages": [{"name": "dev", "hosts": hosts}]})
    };
    c.ok(
        "PUT",
        "/v1/release/projects/db",
        Some(project(&["h1"], &[])),
    );
    c.ok(
        "PUT",
        "/v1/release/projects/api",
        Some(project(&["h2"], &["db"])),
    );
    c.add_version("db", "1", json!({"inline": server_script("db-1", false)}));
    c.add_version("api", "1", json!({"inline": server_script("api-1", false)}));
    let plan = c.ctl(&["plan", "dev", "api=1", "db=1"]);
    let ids: Vec<u64> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert_eq!(plan[0]["project"], "db");
    let db = c.until(ids[0], "db released", 30, |d| state(d) == "succeeded");
    let api = c.until(ids[1], "api released", 30, |d| state(d) == "succeeded");
    let at = |d: &Json, what: &str| {
        d["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["what"] == what)
            .and_then(|e| e["at_ms"].as_u64())
            .unwrap()
    };
    assert!(
        at(&api, "batch") >= at(&db, "succeeded"),
        "api started before db was released:\n{db:#}\n{api:#}"
    );
    assert_eq!(serving(ports[0]).1, "db-1");
    assert_eq!(serving(ports[1]).1, "api-1");
    // A cycle is refused, naming it.
    let e = c
        .call(
            "PUT",
            "/v1/release/projects/db",
            Some(project(&["h1"], &["api"])),
        )
        .unwrap_err();
    assert!(e.contains("dependency cycle: api -> db -> api"), "{e}");
}

/// Sends `n` pipelined SETs to a Redis listener; returns how many answered `+OK` (bounded by a 3 s read
/// timeout).
fn redis_sets(port: u16, n: usize) -> usize {
    use std::io::{BufRead, Write};
    let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut req = String::new();
    for i in 0..n {
        req.push_str(&format!(
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{i}\r\n",
            i.to_string().len()
        ));
    }
    if w.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut r = std::io::BufReader::new(s);
    let mut ok = 0;
    for _ in 0..n {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        ok += usize::from(line.starts_with("+OK"));
    }
    ok
}

/// Furrow's own routing rules as a project: a bundle of proxy-config items canaried on one of two proxies
/// (the configuration center's gray release by label), judged on the proxies' reported error rates and
/// listener latency against the other proxy, then promoted; a bundle that breaks the canary proxy's backend
/// is abandoned and the draft restored, and so is one that sends its backend traffic down a slow path.
#[test]
fn release_routing_rules_canaried_on_one_of_two_proxies() {
    let redis = testkit::RedisServer::start().expect("redis");
    let c = Cluster::new();
    c.ok("POST", "/v1/apps", Some(json!({"name": "edge"})));
    c.ok(
        "POST",
        "/v1/apps/edge/namespaces",
        Some(json!({"name": "proxy", "public": false, "review": false})),
    );
    let ns = "/v1/apps/edge/envs/DEV/clusters/default/namespaces/proxy";
    let (admin, listen) = ([free_port(), free_port()], [free_port(), free_port()]);
    let doc = format!(
        "[proxy]\nexecutors = 1\nshutdown_grace_ms = 100\n\n[[listeners]]\nname = \"cache\"\nkind = \"redis\"\n\
         address = \"127.0.0.1:1\"\ngroup = \"cache\"\n\n[redis_groups.cache]\ndistribution = \"ketama\"\n\
         servers = [{{ name = \"r0\", address = \"{}\" }}]\n",
        redis.addr()
    );
    c.ok(
        "PUT",
        &format!("{ns}/items/config"),
        Some(json!({"value": {"type": "document", "value": {"format": "toml", "text": doc}}})),
    );
    // Each proxy's admin and listener address by its instance id.
    let per_instance = |a: String, b: String| {
        json!({"value": {"type": "rules", "value": {
            "rules": [{"when": [{"op": "eq", "attr": "instance", "value": "p1"}], "value": a}],
            "default": b}}})
    };
    let addr = |p: u16| format!("127.0.0.1:{p}");
    c.ok(
        "PUT",
        &format!("{ns}/items/config.proxy.admin"),
        Some(per_instance(addr(admin[0]), addr(admin[1]))),
    );
    c.ok(
        "PUT",
        &format!("{ns}/items/config.listeners.0.address"),
        Some(per_instance(addr(listen[0]), addr(listen[1]))),
    );
    c.ok("POST", &format!("{ns}/publish"), Some(json!({})));
    let mut proxies = Vec::new();
    for (id, canary) in [("p1", "yes"), ("p2", "no")] {
        let url = format!(
            "{}/edge/DEV/default/proxy?instance={id}&labels=canary:{canary}&health_ms=200",
            c.server()
        );
        let log = c.dir.path().join(format!("{id}.log"));
        let child = spawn_config_source_proxy(&url, TOKEN, &log);
        proxies.push(Proc { child, log });
    }
    for a in admin {
        common::wait_until(Duration::from_secs(15), || config_generation(a) == Some(1));
    }
    c.ok(
        "PUT",
        "/v1/release/projects/edge-rules",
        Some(json!({
            "app": "edge",
            "kind": {"routing": {"app": "edge", "namespace": "proxy", "canary_labels": {"canary": "yes"}}},
            // latency_factor 4: the p99 of 75 requests over loopback on a busy 2-core CI machine moves 2x between
            // proxies with no change at all (seen: 3.1 ms vs 1.5 ms); the 25 ms relay below is still 16x.
            "stages": [{"name": "dev", "env": "DEV", "canary": {"min_samples": 60, "max_wait_ms": 30000, "latency_factor": 4.0}}],
        })),
    );
    let grace = |v: i64| {
        json!({"config.proxy.shutdown_grace_ms": {"type": "integer", "value": v}}).to_string()
    };
    c.add_version("edge-rules", "1", json!({"inline": grace(300)}));
    let shows = |a: u16, what: &str| common::redis_cli(a, &["SHOW", "CONFIG"]).contains(what);
    // Drives traffic through both proxies until the deployment is over; checks the gray split once.
    let run = |id: u64| {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let d = c.ok("GET", &format!("/v1/release/deployments/{id}"), None);
            if matches!(
                state(&d),
                "succeeded" | "failed" | "rolled_back" | "cancelled"
            ) {
                return d;
            }
            assert!(Instant::now() < deadline, "{d:#}\n{}", c.logs());
            // One command per connection: a proxy whose backend is gone may close a connection after its
            // first error, which would leave the rest of a pipeline uncounted.
            for _ in 0..5 {
                for p in listen {
                    redis_sets(p, 1);
                }
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    };
    let id = c.deploy("edge-rules", "dev", "1");
    c.until(id, "gray published", 10, |d| state(d) == "analysing");
    common::wait_until(Duration::from_secs(10), || {
        shows(admin[0], "shutdown_grace_ms = 300")
    });
    assert!(
        shows(admin[1], "shutdown_grace_ms = 100"),
        "only the canary proxy has the gray release"
    );
    let d = run(id);
    assert_eq!(state(&d), "succeeded", "{d:#}");
    assert_eq!(d["canary"]["pass"], true);
    assert!(d["canary"]["baseline"]["requests"].as_u64().unwrap() >= 60);
    // Judged on the proxies' listener latency too (their windows' p99s arrived with the reports).
    assert!(
        d["canary"]["baseline"]["p99_us"].as_u64().unwrap() > 0,
        "{d:#}"
    );
    assert!(
        d["canary"]["canary"]["p99_us"].as_u64().unwrap() > 0,
        "{d:#}"
    );
    common::wait_until(Duration::from_secs(10), || {
        shows(admin[1], "shutdown_grace_ms = 300")
    });
    // A bundle pointing the canary's backend at a closed port: its clients get errors, the other proxy's
    // do not; the gray release is abandoned, the draft restored, and both proxies keep the promoted config.
    let dead = free_port();
    let bundle = json!({"config.redis_groups.cache.servers.0.address":
        {"type": "string", "value": format!("127.0.0.1:{dead}")}});
    c.add_version("edge-rules", "2", json!({"inline": bundle.to_string()}));
    let id = c.deploy("edge-rules", "dev", "2");
    let d = run(id);
    eprintln!("{d:#}");
    assert_eq!(state(&d), "rolled_back", "{d:#}");
    assert!(
        d["canary"]["reason"]
            .as_str()
            .unwrap()
            .contains("error rate"),
        "{d:#}"
    );
    let gone = c
        .call(
            "GET",
            &format!("{ns}/items/config.redis_groups.cache.servers.0.address"),
            None,
        )
        .unwrap_err();
    assert!(
        gone.contains("404"),
        "the draft item the bundle added is removed again: {gone}"
    );
    common::wait_until(Duration::from_secs(10), || redis_sets(listen[0], 5) == 5);
    assert_eq!(redis_sets(listen[1], 5), 5);
    let p = c.ok("GET", "/v1/release/projects/edge-rules", None);
    assert_eq!(p["stages"][0]["state"]["version"], "1");
    // A bundle pointing the canary's backend at a slow path (a relay to the same Redis that holds each
    // command 25 ms): no errors, but the canary proxy's listener latency (from its health windows) is far
    // above the other's; rolled back on latency — on the median, and on the p99 too when the windows
    // timed enough requests for one (`control::release::canary::TAIL_MIN`; this load gives a window
    // a few dozen).
    let slow = slow_relay(redis.addr().to_string(), Duration::from_millis(25));
    let bundle = json!({"config.redis_groups.cache.servers.0.address":
        {"type": "string", "value": format!("127.0.0.1:{slow}")}});
    c.add_version("edge-rules", "3", json!({"inline": bundle.to_string()}));
    let id = c.deploy("edge-rules", "dev", "3");
    let d = run(id);
    eprintln!("{d:#}");
    assert_eq!(state(&d), "rolled_back", "{d:#}");
    let reason = d["canary"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("median latency") && reason.contains("proxy windows"),
        "{d:#}"
    );
    assert!(!reason.contains("error rate"), "{d:#}");
    assert!(
        d["canary"]["canary"]["p99_us"].as_u64().unwrap() >= 25_000,
        "{d:#}"
    );
    let p = c.ok("GET", "/v1/release/projects/edge-rules", None);
    assert_eq!(p["stages"][0]["state"]["version"], "1");
    common::wait_until(Duration::from_secs(10), || {
        !shows(admin[0], &format!("127.0.0.1:{slow}"))
    });
    drop(proxies);
}

/// A TCP relay to `target` that holds every chunk a client sends for `delay` before forwarding it (the
/// answers come back at once): a slow path to a real server. Its threads end with their connections.
fn slow_relay(target: String, delay: Duration) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    std::thread::sleep(delay);
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// Service canaries also judge the proxies on the hosts (a proxy whose instance id is the host's name) on
/// the health windows those proxies report to the center. The reports are posted here the way `furrow
/// proxy --config-source` posts them (`POST /v1/reports` with `health`): the agents' probes see two
/// healthy versions, but the proxy on the canary host reports 30 % of its clients' requests failing
/// against none on the baseline's — the canary fails on the proxies' windows and is rolled back.
#[test]
fn release_canary_judges_the_proxies_windows_on_its_hosts() {
    let mut c = Cluster::new();
    let ports = [free_port(), free_port()];
    for (i, host) in ["h1", "h2"].iter().enumerate() {
        c.agent(host, ports[i], "live");
    }
    c.ok(
        "PUT",
        "/v1/release/projects/web",
        Some(web_project(json!([
            {"name": "live", "hosts": ["h1", "h2"], "batches": [{"count": 1}, "rest"],
             "canary": {"min_samples": 40, "max_wait_ms": 20000, "latency": false}},
        ]))),
    );
    c.add_version("web", "v1", json!({"inline": server_script("v1", false)}));
    let id = c.deploy("web", "live", "v1");
    c.until(id, "v1 on live", 30, |d| state(d) == "succeeded");
    c.add_version("web", "v2", json!({"inline": server_script("v2", false)}));
    c.ok(
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "proxy", "public": false, "review": false})),
    );
    // The proxies on h1 and h2: a window every 100 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reporter = {
        let (stop, server) = (stop.clone(), c.server());
        std::thread::spawn(move || {
            let api = BlockingApi::new(&server, TOKEN);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (id, errors) in [("h1", 6), ("h2", 0)] {
                    let r = json!({"app": "shop", "env": "DEV", "cluster": "default", "namespace": "proxy",
                        "id": id, "ip": "127.0.0.1", "labels": {}, "releases": [1], "version": 1,
                        "health": {"requests": 20, "errors": errors, "window_ms": 100}});
                    api.ok("POST", "/v1/reports", Some(r));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let id = c.deploy("web", "live", "v2");
    let d = c.until(id, "v2 judged", 60, |d| {
        matches!(state(d), "rolled_back" | "succeeded" | "failed")
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reporter.join().unwrap();
    assert_eq!(state(&d), "rolled_back", "{d:#}");
    assert_eq!(d["canary"]["pass"], false, "{d:#}");
    let reason = d["canary"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("proxies' windows: error rate 0.3000 vs baseline 0.0000"),
        "{reason}"
    );
    for p in &ports {
        assert_eq!(serving(*p).1, "v1");
    }
}

/// A traced version of the released service: besides `/` (which the agents probe and which always
/// answers 200) it serves `/api`, and sends a server span for every `/api` request to the control node
/// over OTLP/JSON, as an instrumented service does (resource `service.name=web`, `host.name` its agent's
/// host, `service.version`; batched every 100 ms). `mode`: `ok`, `errors` (`/api` answers 500, span
/// status error) or `slow` (`/api` takes 40 ms more).
fn traced_script(version: &str, mode: &str) -> String {
    format!(
        r#"import http.server, json, os, sys, threading, time, urllib.request
VERSION = "{version}"
MODE = "{mode}"
HOST = os.environ["FURROW_VAR_HOST"]
TRACES = os.environ["FURROW_VAR_TRACES"]
spans = []
lock = threading.Lock()
def attr(k, v):
    return {{"key": k, "value": {{"stringValue": v}}}}
def flush():
    while True:
        time.sleep(0.1)
        with lock:
            batch = spans[:]
            del spans[:]
        if not batch:
            continue
        body = {{"resourceSpans": [{{"resource": {{"attributes": [attr("service.name", "web"), attr("host.name", HOST), attr("service.version", VERSION)]}},
                 "scopeSpans": [{{"spans": batch}}]}}]}}
        req = urllib.request.Request(TRACES, data=json.dumps(body).encode(),
            headers={{"Content-Type": "application/json", "Authorization": "Bearer {TOKEN}"}})
        try:
            urllib.request.urlopen(req, timeout=2).read()
        except Exception as e:
            print("export failed:", e, file=sys.stderr, flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        start = time.time_ns()
        api = self.path.startswith("/api")
        code = 500 if api and MODE == "errors" else 200
        if api and MODE == "slow":
            time.sleep(0.04)
        body = VERSION.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if api:
            span = {{"traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": "GET /api", "kind": 2,
                    "startTimeUnixNano": str(start), "endTimeUnixNano": str(time.time_ns()),
                    "status": {{"code": 2 if code >= 500 else 1}}}}
            with lock:
                spans.append(span)
    def log_message(self, *a):
        pass
threading.Thread(target=flush, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#
    )
}

#[test]
fn release_canary_judges_the_services_own_spans_on_its_hosts() {
    let mut c = Cluster::new();
    let ports = [free_port(), free_port()];
    let traces = format!("TRACES={}/v1/traces", c.server());
    for (i, host) in ["h1", "h2"].iter().enumerate() {
        c.agent_with(
            host,
            ports[i],
            "live",
            &[format!("HOST={host}"), traces.clone()],
        );
    }
    let project = |max_wait_ms: u64| {
        web_project(json!([
            {"name": "live", "hosts": ["h1", "h2"], "batches": [{"count": 1}, "rest"],
             "canary": {"min_samples": 40, "max_wait_ms": max_wait_ms, "latency_factor": 3.0}},
        ]))
    };
    c.ok("PUT", "/v1/release/projects/web", Some(project(30_000)));
    c.add_version("web", "v1", json!({"inline": traced_script("v1", "ok")}));
    let id = c.deploy("web", "live", "v1");
    c.until(id, "v1 on live", 30, |d| state(d) == "succeeded");
    // Traffic on /api of both hosts for the whole test: what the spans measure (the probes never see it).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let baseline_only = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, baseline_only) = (stop.clone(), baseline_only.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let skip = usize::from(baseline_only.load(std::sync::atomic::Ordering::SeqCst));
                for p in ports.into_iter().skip(skip) {
                    // Refused while a host restarts: no request then, no span either.
                    if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", p)) {
                        use std::io::{Read, Write};
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = conn.write_all(
                            b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                        );
                        let _ = conn.read_to_end(&mut Vec::new());
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let judged = |d: &Json| matches!(state(d), "rolled_back" | "succeeded" | "failed");

    // A healthy canary passes on the probes and on its spans.
    c.add_version("web", "v2", json!({"inline": traced_script("v2", "ok")}));
    let d = c.until(c.deploy("web", "live", "v2"), "v2 judged", 60, judged);
    assert_eq!(state(&d), "succeeded", "{d:#}\n{}", c.logs());
    let spans = &d["canary"]["spans"];
    assert_eq!(spans["pass"], true, "{d:#}");
    assert!(spans["canary"]["requests"].as_u64().unwrap() >= 40, "{d:#}");
    assert!(
        spans["baseline"]["requests"].as_u64().unwrap() >= 40,
        "{d:#}"
    );
    assert_eq!(spans["canary"]["errors"], 0, "{d:#}");
    assert!(
        d["canary"]["reason"]
            .as_str()
            .unwrap()
            .contains("; spans: no significant regression"),
        "{d:#}"
    );

    // A canary whose /api fails: its probes pass, its spans do not → rolled back.
    c.add_version(
        "web",
        "v3",
        json!({"inline": traced_script("v3", "errors")}),
    );
    let d = c.until(c.deploy("web", "live", "v3"), "v3 judged", 60, judged);
    assert_eq!(state(&d), "rolled_back", "{d:#}");
    let reason = d["canary"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("spans: error rate 1.0000 vs baseline 0.0000"),
        "{reason}"
    );
    for p in ports {
        assert_eq!(serving(p).1, "v2");
    }

    // A canary whose /api is slow: same error rate, the spans' median latency fails it.
    c.add_version("web", "v4", json!({"inline": traced_script("v4", "slow")}));
    let d = c.until(c.deploy("web", "live", "v4"), "v4 judged", 60, judged);
    assert_eq!(state(&d), "rolled_back", "{d:#}");
    let reason = d["canary"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("spans: median latency"), "{reason}");
    assert!(
        d["canary"]["canary"]["p50_us"].as_u64().unwrap() >= 40_000,
        "{d:#}"
    );
    for p in ports {
        assert_eq!(serving(p).1, "v2");
    }

    // The canary sends no span while the baseline does: the spans' verdict is required and waits (the
    // deployment shows the live span counts), then the analysis is inconclusive and rolled back.
    c.ok("PUT", "/v1/release/projects/web", Some(project(4_000)));
    baseline_only.store(true, std::sync::atomic::Ordering::SeqCst);
    c.add_version("web", "v5", json!({"inline": traced_script("v5", "ok")}));
    let id = c.deploy("web", "live", "v5");
    let d = c.until(id, "live span counts", 30, |d| {
        d["samples"]["spans"]["baseline"].as_u64().unwrap_or(0) > 0 || judged(d)
    });
    assert_eq!(state(&d), "analysing", "{d:#}");
    assert_eq!(d["samples"]["spans"]["canary"], 0, "{d:#}");
    let d = c.until(id, "v5 judged", 60, judged);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.join().unwrap();
    assert_eq!(state(&d), "rolled_back", "{d:#}");
    let failed = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["what"] == "failed")
        .expect("a failed event");
    let why = failed["detail"].as_str().unwrap();
    assert!(
        why.starts_with("canary analysis inconclusive:") && why.contains(", 0 canary and "),
        "{why}"
    );
    for p in ports {
        assert_eq!(serving(p).1, "v2");
    }
    // The spans keep their hosts and versions (errors are always kept by the tail sampler): the search
    // finds the failing canary's by its resource attributes, and they say where they came from.
    let found = c.ok(
        "GET",
        "/v1/trace/search?service=web&status=error&attr=service.version%3Dv3,host.name%3Dh1&limit=5",
        None,
    );
    let found = found["traces"].as_array().expect("search results");
    assert!(!found.is_empty(), "no span of v3 on h1 found");
    let t = found[0]["trace_id"].as_str().unwrap();
    let trace = c.ok("GET", &format!("/v1/trace/traces/{t}"), None);
    let text = trace.to_string();
    assert!(
        text.contains(r#""host":"h1""#) && text.contains(r#""version":"v3""#),
        "{trace:#}"
    );
    let none = c.ok(
        "GET",
        "/v1/trace/search?service=web&attr=service.version%3Dv3,host.name%3Dh2&limit=5",
        None,
    );
    assert_eq!(none["traces"].as_array().map(Vec::len), Some(0), "{none:#}");
}

/// The build gate runs as a job on a live `furrow worker` (a real worker process of the jobs service):
/// its commands run in order in the project's repository on the worker, each one's log and exit code
/// kept with the version, the runner named; a failing command stops the gate there; with no live worker
/// (none yet, or the worker stopped) the control node's local runner runs it.
#[test]
fn release_gate_runs_on_a_live_jobs_worker_else_locally() {
    let c = Cluster::new();
    let repo = c.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let project = |commands: Json| {
        c.ok(
            "PUT",
            "/v1/release/projects/gated",
            Some(json!({
                "app": "shop",
                "repo": repo.to_str().unwrap(),
                "gate": {"commands": commands, "timeout_ms": 20000},
                "stages": [{"name": "dev", "env": "DEV", "hosts": ["h1"]}],
            })),
        )
    };
    // FURROW_JOB is set by the jobs worker only: it tells who ran the command.
    project(json!([
        "echo job=$FURROW_JOB; pwd; echo made > proof.txt",
        "test -f proof.txt && echo lint ok"
    ]));
    let gate = |v: &str| -> Json {
        c.ok(
            "POST",
            "/v1/release/projects/gated/versions",
            Some(json!({"name": v, "artifact": {"inline": "x"}})),
        );
        c.ok(
            "POST",
            &format!("/v1/release/projects/gated/versions/{v}/gate"),
            None,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ver = c.ok(
                "GET",
                &format!("/v1/release/projects/gated/versions/{v}"),
                None,
            );
            if ver["gate"]["status"] != "running" {
                return ver["gate"].clone();
            }
            assert!(Instant::now() < deadline, "{ver:#}\n{}", c.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let g = gate("v1");
    assert_eq!(g["status"], "passed", "{g:#}");
    assert_eq!(g["runner"], "local", "{g:#}");
    assert!(
        g["commands"][0]["log"]
            .as_str()
            .unwrap()
            .starts_with("job=\n"),
        "{g:#}"
    );
    std::fs::remove_file(repo.join("proof.txt")).unwrap();
    // A real worker joins: the gate becomes a job run on it.
    let args: Vec<String> = [
        "worker",
        "--server",
        &c.server(),
        "--token",
        TOKEN,
        "--id",
        "w1",
        "--beat-ms",
        "300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut worker = Proc::spawn(&args, c.dir.path().join("worker.log"));
    common::wait_until(Duration::from_secs(15), || {
        c.ok("GET", "/v1/jobs/workers", None)
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["id"] == "w1" && w["live"] == true))
    });
    let g = gate("v2");
    assert_eq!(g["status"], "passed", "{g:#}\n{}", worker.log());
    let runner = g["runner"].as_str().unwrap();
    assert!(
        runner.starts_with("worker w1 (job run DEV/release-gate-gated/"),
        "{g:#}"
    );
    let cmds = g["commands"].as_array().unwrap();
    assert_eq!(cmds.len(), 2, "{g:#}");
    assert_eq!(
        cmds[0]["log"].as_str().unwrap(),
        format!("job=release-gate-gated\n{}\n", repo.display()),
        "{g:#}"
    );
    assert_eq!(
        (cmds[0]["exit"].as_i64(), cmds[1]["exit"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(cmds[1]["log"], "lint ok\n");
    assert!(repo.join("proof.txt").exists(), "ran in the repository");
    // The job's run keeps the whole log too.
    let runs = c.ok("GET", "/v1/jobs/DEV/release-gate-gated/runs", None);
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs:#}");
    assert_eq!(runs[0]["state"], "ok", "{runs:#}");
    // A failing command stops the gate there.
    project(json!(["echo a", "echo bad >&2; exit 4", "echo never"]));
    let g = gate("v3");
    assert_eq!(g["status"], "failed", "{g:#}");
    assert!(
        g["runner"].as_str().unwrap().starts_with("worker w1"),
        "{g:#}"
    );
    let cmds = g["commands"].as_array().unwrap();
    assert_eq!(cmds.len(), 2, "{g:#}");
    assert_eq!(
        (cmds[1]["exit"].as_i64(), cmds[1]["log"].as_str()),
        (Some(4), Some("bad\n")),
        "{g:#}"
    );
    // The worker stops (SIGTERM: it deregisters): the local runner again.
    let pid = worker.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = worker.child.wait();
    common::wait_until(Duration::from_secs(15), || {
        !c.ok("GET", "/v1/jobs/workers", None)
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["live"] == true))
    });
    project(json!(["echo job=$FURROW_JOB"]));
    let g = gate("v4");
    assert_eq!(
        (g["status"].as_str(), g["runner"].as_str()),
        (Some("passed"), Some("local")),
        "{g:#}"
    );
    assert_eq!(g["commands"][0]["log"], "job=\n");
    worker.kill();
}
