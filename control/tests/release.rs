//! Release management over HTTP on a real server (embedded store): project validation and dependency
//! cycles, the build gate (real commands, bounded logs) and the code diff (a real git repository),
//! permissions per project and stage with audit rows, approvals and windows, dependency-ordered plans and
//! webhooks. The agent here is an API client with the `agent` role reporting progress, as `furrow agent`
//! does; the end-to-end tests with real `furrow agent` processes are in the workspace's `tests/release.rs`.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value as Json, json};

const P: &str = "/v1/release/projects";

fn setup() -> (control::server::Server, Api) {
    let server = start("sqlite::memory:");
    let api = Api::new(&server, ADMIN_TOKEN);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    (server, api)
}

/// A user with roles and a token.
fn user(api: &Api, name: &str, roles: &[&str]) -> String {
    api.ok(
        "POST",
        "/v1/users",
        Some(json!({"name": name, "roles": roles})),
    );
    api.ok("POST", "/v1/tokens", Some(json!({"user": name})))["token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn grant(api: &Api, subject: &str, ns: &str, level: &str) {
    api.ok(
        "PUT",
        "/v1/permissions",
        Some(json!({"subject": subject, "app": "shop", "namespace": ns, "level": level})),
    );
}

/// Waits (bounded) until the deployment satisfies `f`; returns it.
fn until(api: &Api, id: u64, what: &str, f: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = api.ok("GET", &format!("/v1/release/deployments/{id}"), None);
        if f(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{what}: {d:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state(d: &Json) -> &str {
    d["state"].as_str().unwrap()
}

/// Plays the agent of `host`: reports every assignment of version `version` done (or failed).
fn agent_finish(agent: &Api, host: &str, ok: bool) -> usize {
    let list = agent.ok(
        "GET",
        &format!("/v1/release/agents/{host}/assignments?timeout=2000"),
        None,
    );
    let list = list.as_array().unwrap().clone();
    for a in &list {
        let body = json!({"deployment": a["deployment"], "version": a["version"],
            "phase": if ok { "done" } else { "failed" }, "message": "hooks ran"});
        let r = agent.ok(
            "POST",
            &format!("/v1/release/agents/{host}/report"),
            Some(body),
        );
        assert_eq!(r["accepted"], true);
    }
    list.len()
}

fn new_version(api: &Api, project: &str, name: &str) {
    api.ok(
        "POST",
        &format!("{P}/{project}/versions"),
        Some(json!({"name": name, "artifact": {"inline": format!("echo {name}")}})),
    );
    let g = api.ok("POST", &format!("{P}/{project}/versions/{name}/gate"), None);
    assert_eq!(
        g["status"], "passed",
        "no gate commands: releasable at once"
    );
}

#[test]
fn release_projects_are_validated_and_cycles_are_refused_by_name() {
    let (_s, api) = setup();
    let bad = |body: Json| api.err("PUT", &format!("{P}/web"), Some(body));
    assert_eq!(
        bad(
            json!({"app": "shop", "stages": [{"name": "live", "window": {"allow": ["mon 9-17"]}}]})
        ),
        (
            400,
            "bad_request".into(),
            Some("stages/0/window/allow/0".into())
        )
    );
    let canary = |trace_service: &str| {
        json!({"app": "shop", "probe": {"url": "http://127.0.0.1:1/"},
            "stages": [{"name": "live", "hosts": ["a", "b"], "batches": [{"count": 1}, "rest"],
                "canary": {"trace_service": trace_service}}]})
    };
    assert_eq!(
        bad(canary("")),
        (
            400,
            "bad_request".into(),
            Some("stages/0/canary/trace_service".into())
        )
    );
    assert_eq!(
        bad(canary("a\u{1}b")).2.as_deref(),
        Some("stages/0/canary/trace_service")
    );
    assert_eq!(
        bad(
            json!({"app": "shop", "stages": [{"name": "live", "hosts": ["a", "b"],
            "batches": [{"count": 1}, "rest"], "canary": {}}]})
        )
        .2,
        Some("stages/0/canary".into()),
        "canary without a probe"
    );
    assert_eq!(
        bad(json!({"app": "shop", "stages": [{"name": "a"}, {"name": "a"}]})).2,
        Some("stages/1/name".into())
    );
    assert_eq!(
        bad(json!({"app": "shop", "stages": [{"name": "x", "approval": {"count": 1}}]})).2,
        Some("stages/0/approval/approvers".into())
    );
    assert_eq!(bad(json!({"app": "shop", "depends_on": ["nope"]})).0, 404);
    assert_eq!(
        bad(json!({"app": "shop", "shtages": []})).2,
        Some("shtages".into())
    );
    assert_eq!(bad(json!({"app": "nope"})).2, Some("app".into()));
    // The default pipeline.
    let web = api.ok("PUT", &format!("{P}/web"), Some(json!({"app": "shop"})));
    let names: Vec<&str> = web["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev", "qa", "staging", "live"]);
    api.ok(
        "PUT",
        &format!("{P}/api"),
        Some(json!({"app": "shop", "depends_on": ["web"]})),
    );
    api.ok(
        "PUT",
        &format!("{P}/db"),
        Some(json!({"app": "shop", "depends_on": ["api"]})),
    );
    let e = api
        .call(
            "PUT",
            &format!("{P}/web"),
            Some(json!({"app": "shop", "depends_on": ["db"]})),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("dependency cycle: api -> web -> db -> api"),
        "{msg}"
    );
    let web = api.ok("GET", &format!("{P}/web"), None);
    assert_eq!(
        web["project"]["depends_on"],
        json!([]),
        "the refused change left nothing"
    );
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn release_gate_runs_commands_keeps_bounded_logs_and_shows_the_code_diff() {
    let (_s, api) = setup();
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q"]);
    std::fs::write(repo.path().join("app.py"), "print('v1')\n").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-qm", "one"]);
    let rev1 = git(repo.path(), &["rev-parse", "HEAD"]);
    std::fs::write(repo.path().join("app.py"), "print('v2')\n").unwrap();
    git(repo.path(), &["commit", "-qam", "two"]);
    let rev2 = git(repo.path(), &["rev-parse", "HEAD"]);
    api.ok(
        "PUT",
        &format!("{P}/web"),
        Some(json!({"app": "shop", "repo": repo.path(), "gate": {"commands": [
            "test -f app.py && echo tests pass",
            "git cat-file -e $FURROW_REVISION && grep -q v2 app.py && echo lint ok || { echo lint failed >&2; exit 4; }",
        ]}, "stages": [{"name": "dev", "hosts": ["h1"]}]})),
    );
    for (v, rev) in [("1", &rev1), ("2", &rev2)] {
        api.ok(
            "POST",
            &format!("{P}/web/versions"),
            Some(json!({"name": v, "artifact": {"inline": "x"}, "revision": rev})),
        );
    }
    // Not releasable before its gate passed.
    let (status, _, field) = api.err(
        "POST",
        &format!("{P}/web/stages/dev/deploy"),
        Some(json!({"version": "2"})),
    );
    assert_eq!((status, field.as_deref()), (400, Some("version")));
    let wait_gate = |v: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ver = api.ok("GET", &format!("{P}/web/versions/{v}"), None);
            if ver["gate"]["status"] != "running" {
                return ver["gate"].clone();
            }
            assert!(Instant::now() < deadline, "gate of {v} still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(
        api.ok("POST", &format!("{P}/web/versions/2/gate"), None)["status"],
        "running"
    );
    let g = wait_gate("2");
    assert_eq!(g["status"], "passed", "{g:#}");
    assert_eq!(
        g["commands"][0]["log"].as_str().unwrap().trim(),
        "tests pass"
    );
    assert_eq!(g["commands"][1]["log"].as_str().unwrap().trim(), "lint ok");
    assert_eq!(g["runner"], "local");
    // A version whose revision is not in the repository fails the second command; the run stops there.
    api.ok(
        "POST",
        &format!("{P}/web/versions"),
        Some(json!({"name": "3", "artifact": {"inline": "x"}, "revision": "0000000000000000000000000000000000000000"})),
    );
    api.ok("POST", &format!("{P}/web/versions/3/gate"), None);
    let g = wait_gate("3");
    assert_eq!(g["status"], "failed");
    assert_eq!(g["commands"][1]["exit"], 4);
    assert!(
        g["commands"][1]["log"]
            .as_str()
            .unwrap()
            .contains("lint failed")
    );
    let (status, _, _) = api.err(
        "POST",
        &format!("{P}/web/stages/dev/deploy"),
        Some(json!({"version": "3"})),
    );
    assert_eq!(status, 400, "a failed gate is not releasable");
    // The code diff between two revisions, and precise refusals.
    let d = api.ok("GET", &format!("{P}/web/diff?from={rev1}&to={rev2}"), None);
    let text = d["diff"].as_str().unwrap();
    assert!(
        text.contains("-print('v1')") && text.contains("+print('v2')"),
        "{text}"
    );
    assert_eq!(d["truncated"], false);
    assert_eq!(
        api.err(
            "GET",
            &format!("{P}/web/diff?from=--output=/tmp/x&to={rev2}"),
            None
        )
        .2,
        Some("from".into())
    );
    assert_eq!(
        api.err("GET", &format!("{P}/web/diff?version=2"), None).2,
        Some("stage".into()),
        "no version live yet to compare with"
    );
}

#[test]
fn release_permissions_approvals_windows_and_audit() {
    let (_s, api) = setup();
    let dev = user(&api, "dana", &[]);
    let lead = user(&api, "lee", &["lead"]);
    let other = user(&api, "olga", &[]);
    let agent = user(&api, "agent1", &["agent"]);
    let (dev, lead, other, agent) = (
        Api::new(&_s, &dev),
        Api::new(&_s, &lead),
        Api::new(&_s, &other),
        Api::new(&_s, &agent),
    );
    agent.ok("POST", "/v1/release/agents", Some(json!({"host": "h1"})));
    agent.ok("POST", "/v1/release/agents", Some(json!({"host": "h2"})));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let project = |freeze: bool| {
        let freeze = if freeze {
            json!([{"from_ms": now - 60_000, "to_ms": now + 3_600_000, "reason": "launch week"}])
        } else {
            json!([])
        };
        json!({"app": "shop", "stages": [
            {"name": "dev", "hosts": ["h1"]},
            {"name": "live", "hosts": ["h2"], "approval": {"approvers": ["role:lead"], "count": 1},
             "window": {"allow": ["* 00:00-24:00"], "freeze": freeze}},
        ]})
    };
    // Defining a project needs publish on it.
    assert_eq!(
        dev.err("PUT", &format!("{P}/web"), Some(project(true))).0,
        403
    );
    api.ok("PUT", &format!("{P}/web"), Some(project(true)));
    assert_eq!(dev.err("GET", &format!("{P}/web"), None).0, 403);
    grant(&api, "user:dana", "release:web:dev", "edit");
    grant(&api, "user:dana", "release:web", "read");
    assert_eq!(
        dev.err(
            "POST",
            &format!("{P}/web/versions"),
            Some(json!({"name": "1", "artifact": {"inline": "x"}}))
        )
        .0,
        403,
        "edit on the project is needed"
    );
    grant(&api, "user:dana", "release:web", "edit");
    new_version(&dev, "web", "1");
    // Past the first stage a version must have gone through the stage before.
    assert_eq!(
        dev.err(
            "POST",
            &format!("{P}/web/stages/live/deploy"),
            Some(json!({"version": "1"}))
        )
        .2,
        Some("stage".into())
    );
    let d = dev.ok(
        "POST",
        &format!("{P}/web/stages/dev/deploy"),
        Some(json!({"version": "1"})),
    );
    let id = d["id"].as_u64().unwrap();
    until(&api, id, "assigned", |d| state(d) == "running");
    assert_eq!(agent_finish(&agent, "h1", true), 1);
    until(&api, id, "dev succeeded", |d| state(d) == "succeeded");
    // Live: dana has edit on dev only.
    assert_eq!(
        other
            .err(
                "POST",
                &format!("{P}/web/stages/live/deploy"),
                Some(json!({"version": "1"}))
            )
            .0,
        403
    );
    grant(&api, "user:dana", "release:web:live", "edit");
    let d = dev.ok(
        "POST",
        &format!("{P}/web/stages/live/deploy"),
        Some(json!({"version": "1"})),
    );
    let id = d["id"].as_u64().unwrap();
    until(&api, id, "awaiting approval", |d| {
        state(d) == "awaiting_approval"
    });
    let approve = format!("/v1/release/deployments/{id}/approve");
    assert_eq!(dev.err("POST", &approve, None).0, 403, "not an approver");
    assert_eq!(other.err("POST", &approve, None).0, 403);
    // Who started it cannot approve it, even with the role.
    api.ok(
        "POST",
        "/v1/users",
        Some(json!({"name": "dana", "roles": ["lead"]})),
    );
    let e = dev.call("POST", &approve, None).unwrap_err().to_string();
    assert!(e.contains("cannot approve"), "{e}");
    lead.ok("POST", &approve, None);
    let d = until(&api, id, "window closed by the freeze", |d| {
        d["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["what"] == "window_closed")
    });
    assert_eq!(state(&d), "awaiting_window");
    assert!(d["events"].to_string().contains("launch week"));
    api.ok("PUT", &format!("{P}/web"), Some(project(false)));
    until(&api, id, "running after the freeze", |d| {
        state(d) == "running"
    });
    assert_eq!(agent_finish(&agent, "h2", true), 1);
    until(&api, id, "live succeeded", |d| state(d) == "succeeded");
    let p = api.ok("GET", &format!("{P}/web"), None);
    assert_eq!(p["stages"][1]["state"]["version"], "1");
    // A late or foreign report changes nothing.
    let r = agent.ok(
        "POST",
        "/v1/release/agents/h2/report",
        Some(json!({"deployment": id, "version": "1", "phase": "failed"})),
    );
    assert_eq!(r["accepted"], false);
    assert_eq!(
        dev.err("GET", "/v1/release/agents/h1/assignments?timeout=1", None)
            .0,
        403,
        "not an agent"
    );
    // Every action is in the audit log, the refusals too.
    let audit = api.ok("GET", "/v1/audit?limit=500", None).to_string();
    for action in [
        "release.project.create",
        "release.project.update",
        "release.version.create",
        "release.gate.start",
        "release.deploy.start",
        "release.deploy.approve",
        "release.deploy.step",
        "release.agent.register",
        "denied",
    ] {
        assert!(audit.contains(action), "no {action} in the audit log");
    }
}

#[test]
fn release_plan_deploys_in_dependency_order_and_cancels_dependents_of_a_failure() {
    let (s, api) = setup();
    let agent = Api::new(&s, &user(&api, "agent1", &["agent"]));
    for h in ["h1", "h2"] {
        agent.ok("POST", "/v1/release/agents", Some(json!({"host": h})));
    }
    api.ok(
        "PUT",
        &format!("{P}/db"),
        Some(json!({"app": "shop", "stages": [{"name": "dev", "hosts": ["h1"]}]})),
    );
    api.ok(
        "PUT",
        &format!("{P}/api"),
        Some(json!({"app": "shop", "depends_on": ["db"], "stages": [{"name": "dev", "hosts": ["h2"]}]})),
    );
    for p in ["db", "api"] {
        new_version(&api, p, "1");
        new_version(&api, p, "2");
    }
    let plan = api.ok(
        "POST",
        "/v1/release/plans",
        Some(json!({"stage": "dev", "versions": {"api": "1", "db": "1"}})),
    );
    let order: Vec<&str> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["project"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["db", "api"]);
    let (db, apid) = (
        plan[0]["id"].as_u64().unwrap(),
        plan[1]["id"].as_u64().unwrap(),
    );
    assert_eq!(plan[1]["after"], json!([db]));
    until(&api, db, "db running", |d| state(d) == "running");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        state(&api.ok("GET", &format!("/v1/release/deployments/{apid}"), None)),
        "waiting"
    );
    assert_eq!(
        agent_finish(&agent, "h2", true),
        0,
        "api's host has nothing before db is done"
    );
    agent_finish(&agent, "h1", true);
    until(&api, apid, "api running", |d| state(d) == "running");
    agent_finish(&agent, "h2", true);
    until(&api, apid, "api succeeded", |d| state(d) == "succeeded");
    // A failed dependency cancels the dependents.
    let plan = api.ok(
        "POST",
        "/v1/release/plans",
        Some(json!({"stage": "dev", "versions": {"api": "2", "db": "2"}})),
    );
    let (db, apid) = (
        plan[0]["id"].as_u64().unwrap(),
        plan[1]["id"].as_u64().unwrap(),
    );
    until(&api, db, "db running", |d| state(d) == "running");
    agent_finish(&agent, "h1", false);
    // db goes back to version 1 on h1 (its previous version) ...
    let d = until(&api, db, "db rolling back", |d| state(d) == "rolling_back");
    assert_eq!(d["hosts"]["h1"]["version"], "1");
    agent_finish(&agent, "h1", true);
    until(&api, db, "db rolled back", |d| state(d) == "rolled_back");
    let d = until(&api, apid, "api cancelled", |d| state(d) == "cancelled");
    assert!(
        d["events"]
            .to_string()
            .contains(&format!("dependency deployment {db}"))
    );
    // A rollback to an earlier version and a restart go through the same batches.
    let r = api.ok(
        "POST",
        &format!("{P}/db/stages/dev/deploy"),
        Some(json!({"kind": "restart"})),
    );
    let rid = r["id"].as_u64().unwrap();
    let d = until(&api, rid, "restart running", |d| state(d) == "running");
    assert_eq!(d["hosts"]["h1"]["restart"], true);
    assert_eq!(d["version"], "1");
    agent_finish(&agent, "h1", true);
    until(&api, rid, "restart done", |d| state(d) == "succeeded");
    assert_eq!(
        api.err(
            "POST",
            &format!("{P}/db/stages/dev/deploy"),
            Some(json!({"version": "2", "kind": "rollback"}))
        )
        .2,
        Some("version".into()),
        "2 never ran on db/dev"
    );
}

/// A webhook receiver: collects request bodies.
fn webhook_sink() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Json>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/release", l.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        assert!(head.starts_with("POST /hooks/release "), "{head}");
                        g.lock().unwrap().push(serde_json::from_str(body).unwrap());
                        break;
                    }
                }
            }
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn release_events_reach_webhooks() {
    let (s, api) = setup();
    let agent = Api::new(&s, &user(&api, "agent1", &["agent"]));
    agent.ok("POST", "/v1/release/agents", Some(json!({"host": "h1"})));
    let (url, got) = webhook_sink();
    api.ok(
        "PUT",
        &format!("{P}/web"),
        Some(
            json!({"app": "shop", "webhooks": [url], "stages": [{"name": "dev", "hosts": ["h1"]}]}),
        ),
    );
    new_version(&api, "web", "1");
    let d = api.ok(
        "POST",
        &format!("{P}/web/stages/dev/deploy"),
        Some(json!({"version": "1"})),
    );
    let id = d["id"].as_u64().unwrap();
    until(&api, id, "running", |d| state(d) == "running");
    agent_finish(&agent, "h1", true);
    until(&api, id, "succeeded", |d| state(d) == "succeeded");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let whats: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["event"]["what"].as_str().unwrap().to_string())
            .collect();
        if whats.contains(&"succeeded".to_string()) {
            assert_eq!(
                whats.first().map(String::as_str),
                Some("created"),
                "{whats:?}"
            );
            assert!(
                whats.contains(&"batch".to_string()) && whats.contains(&"host_done".to_string()),
                "{whats:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "webhooks so far: {whats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = got.lock().unwrap()[0].clone();
    assert_eq!(
        (body["project"].as_str(), body["deployment"].as_u64()),
        (Some("web"), Some(id))
    );
}

#[test]
fn release_routing_projects_are_validated() {
    let (_s, api) = setup();
    api.ok("POST", "/v1/apps", Some(json!({"name": "edge"})));
    api.ok(
        "POST",
        "/v1/apps/edge/namespaces",
        Some(json!({"name": "proxy", "public": false, "review": false})),
    );
    let kind = json!({"routing": {"app": "edge", "namespace": "proxy", "canary_labels": {"canary": "yes"}}});
    assert_eq!(
        api.err(
            "PUT",
            &format!("{P}/rules"),
            Some(json!({"app": "edge", "kind": kind, "stages": [{"name": "dev"}]}))
        )
        .2,
        Some("stages/0/env".into()),
        "dev is not an environment of the center"
    );
    let no_labels = json!({"routing": {"app": "edge", "namespace": "proxy", "canary_labels": {}}});
    assert_eq!(
        api.err(
            "PUT",
            &format!("{P}/rules"),
            Some(json!({"app": "edge", "kind": no_labels}))
        )
        .2,
        Some("kind/routing/canary_labels".into())
    );
    api.ok(
        "PUT",
        &format!("{P}/rules"),
        Some(json!({"app": "edge", "kind": kind, "stages": [{"name": "dev", "env": "DEV", "canary": {}}]})),
    );
    for bad in [
        json!({"file": "/etc/hosts"}),
        json!({"inline": "not json"}),
        json!({"inline": "{}"}),
    ] {
        assert_eq!(
            api.err(
                "POST",
                &format!("{P}/rules/versions"),
                Some(json!({"name": "1", "artifact": bad}))
            )
            .2,
            Some("artifact".into())
        );
    }
    new_version_with(
        &api,
        "rules",
        "1",
        json!({"inline": json!({"k": {"type": "integer", "value": 1}}).to_string()}),
    );
    assert_eq!(
        api.err(
            "POST",
            &format!("{P}/rules/stages/dev/deploy"),
            Some(json!({"kind": "restart"}))
        )
        .0,
        400
    );
    // A user who may deploy the project but not publish the namespace is refused.
    let dana = user(&api, "dana", &[]);
    api.ok(
        "PUT",
        "/v1/permissions",
        Some(json!({"subject": "user:dana", "app": "edge", "namespace": "release:rules", "level": "edit"})),
    );
    let dana = Api::new(&_s, &dana);
    let e = dana
        .call(
            "POST",
            &format!("{P}/rules/stages/dev/deploy"),
            Some(json!({"version": "1"})),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs Publish to release routing rules"), "{e}");
    // Without any proxy reporting, the gray release waits for samples; cancelling abandons it.
    let ns = "/v1/apps/edge/envs/DEV/clusters/default/namespaces/proxy";
    let grays = || api.ok("GET", &format!("{ns}/grays"), None);
    let d = api.ok(
        "POST",
        &format!("{P}/rules/stages/dev/deploy"),
        Some(json!({"version": "1"})),
    );
    let id = d["id"].as_u64().unwrap();
    until(&api, id, "gray published", |d| state(d) == "analysing");
    assert_eq!(grays().as_array().unwrap().len(), 1, "{}", grays());
    api.ok(
        "POST",
        &format!("/v1/release/deployments/{id}/cancel"),
        None,
    );
    assert_eq!(grays(), json!([]));
    // No samples within max_wait_ms: inconclusive is a failure; the gray release is abandoned and the
    // draft item the bundle added removed again.
    api.ok(
        "PUT",
        &format!("{P}/rules"),
        Some(json!({"app": "edge", "kind": kind, "stages": [{"name": "dev", "env": "DEV", "canary": {"max_wait_ms": 200}}]})),
    );
    api.ok("DELETE", &format!("{ns}/items/k"), None);
    let d = api.ok(
        "POST",
        &format!("{P}/rules/stages/dev/deploy"),
        Some(json!({"version": "1"})),
    );
    let id = d["id"].as_u64().unwrap();
    let d = until(&api, id, "inconclusive", |d| d["state"] == "rolled_back");
    assert!(d["events"].to_string().contains("inconclusive"), "{d:#}");
    assert_eq!(grays(), json!([]));
    assert_eq!(api.err("GET", &format!("{ns}/items/k"), None).0, 404);
}

fn new_version_with(api: &Api, project: &str, name: &str, artifact: Json) {
    api.ok(
        "POST",
        &format!("{P}/{project}/versions"),
        Some(json!({"name": name, "artifact": artifact})),
    );
    api.ok("POST", &format!("{P}/{project}/versions/{name}/gate"), None);
}

#[test]
fn release_file_artifacts_stay_under_the_artifact_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("app.tar"), b"artifact bytes").unwrap();
    std::fs::write(outside.path().join("secret"), b"not yours").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link")).unwrap();
    let add = |api: &Api, name: &str, file: String| {
        api.call(
            "POST",
            &format!("{P}/web/versions"),
            Some(json!({"name": name, "artifact": {"file": file}})),
        )
    };
    // Without a root, file artifacts are refused.
    let (_s, api) = setup();
    api.ok("PUT", &format!("{P}/web"), Some(json!({"app": "shop"})));
    let e = add(&api, "1", root.path().join("app.tar").display().to_string()).unwrap_err();
    assert!(e.to_string().contains("--artifact-root"), "{e}");
    drop((_s, api));
    let r = root.path().to_path_buf();
    let server = start_with("sqlite::memory:", move |o| o.artifact_root = Some(r));
    let api = Api::new(&server, ADMIN_TOKEN);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api.ok("PUT", &format!("{P}/web"), Some(json!({"app": "shop"})));
    let base = root.path().display().to_string();
    for bad in [
        outside.path().join("secret").display().to_string(),
        format!("{base}/../secret"),
        "relative/app.tar".to_string(),
    ] {
        let e = add(&api, "x", bad.clone()).unwrap_err();
        assert!(e.to_string().contains("artifact"), "{bad}: {e}");
    }
    add(&api, "1", format!("{base}/app.tar")).unwrap();
    add(&api, "2", format!("{base}/link")).unwrap();
    // Not JSON: the client hands the body back as a string.
    let got = api.ok("GET", &format!("{P}/web/versions/1/artifact"), None);
    assert_eq!(got, "artifact bytes");
    // A symbolic link that leads outside the root is refused when fetched.
    let (status, _, _) = api.err("GET", &format!("{P}/web/versions/2/artifact"), None);
    assert_eq!(status, 403);
}

/// The jobs service's worker plugs in behind `GateRunner`; here a runner that records what it was given.
struct RecordingRunner(std::sync::Mutex<Vec<String>>);

impl control::release::gate::GateRunner for RecordingRunner {
    fn name(&self) -> &str {
        "worker"
    }

    fn run(
        &self,
        job: &control::release::gate::GateJob,
    ) -> Vec<control::release::model::CommandRun> {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}/{}@{}", job.project, job.version, job.revision));
        job.commands
            .iter()
            .map(|c| control::release::model::CommandRun {
                command: c.clone(),
                exit: Some(0),
                ms: 1,
                log: "ok".into(),
                truncated: false,
            })
            .collect()
    }
}

#[test]
fn release_gates_run_on_an_installed_runner() {
    let (s, api) = setup();
    let runner = std::sync::Arc::new(RecordingRunner(Default::default()));
    s.center.release.set_gate_runner(runner.clone());
    api.ok(
        "PUT",
        &format!("{P}/web"),
        Some(json!({"app": "shop", "gate": {"commands": ["make test", "make lint"]}})),
    );
    api.ok(
        "POST",
        &format!("{P}/web/versions"),
        Some(json!({"name": "1", "artifact": {"inline": "x"}, "revision": "abc"})),
    );
    assert_eq!(
        api.ok("POST", &format!("{P}/web/versions/1/gate"), None)["runner"],
        "worker"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.ok("GET", &format!("{P}/web/versions/1"), None)["gate"]["status"] == "running" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let g = api.ok("GET", &format!("{P}/web/versions/1"), None)["gate"].clone();
    assert_eq!(
        (
            g["status"].as_str(),
            g["commands"].as_array().unwrap().len()
        ),
        (Some("passed"), 2)
    );
    assert_eq!(*runner.0.lock().unwrap(), ["web/1@abc"]);
}
