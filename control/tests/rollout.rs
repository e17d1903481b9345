//! Gray auto-rolling publish (issue 17): batches of the known instances at an interval, pause/resume,
//! automatic stop on a rejection, abort and rollback, promotion at the end.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value as Json, json};

const P: &str = "/v1/apps/shop/envs/DEV/clusters/default/namespaces/app";

fn report(api: &Api, id: &str, releases: &[u64], rejected: Option<&str>) {
    let mut b = json!({"app": "shop", "env": "DEV", "cluster": "default", "namespace": "app", "id": id,
                       "ip": "", "labels": {}, "releases": releases, "version": 0});
    if let Some(why) = rejected {
        b["status"] = json!("rejected");
        b["reason"] = json!(why);
    }
    api.ok("POST", "/v1/reports", Some(b));
}

fn rollout(api: &Api, id: u64) -> Json {
    api.ok("GET", &format!("{P}/rollouts"), None)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["release"] == id)
        .cloned()
        .unwrap()
}

/// Polls until `f` holds on the rollout, acting as the selected instances' clients meanwhile (each reports
/// the gray release as applied, except those in `silent`).
fn wait(api: &Api, id: u64, what: &str, silent: &[&str], f: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rollout(api, id);
        if f(&r) {
            return r;
        }
        for inst in r["selected"].as_array().unwrap() {
            let inst = inst.as_str().unwrap();
            if !silent.contains(&inst) {
                report(api, inst, &[id], None);
            }
        }
        assert!(Instant::now() < deadline, "{what}: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn value_for(api: &Api, inst: &str) -> Json {
    config(
        api,
        "shop",
        "DEV",
        "default",
        "app",
        &format!("instance={inst}"),
    )["items"]["k"]["value"]["value"]
        .clone()
}

fn setup() -> (control::server::Server, Api, u64) {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    set(&api, P, "k", int(1));
    let base = publish(&api, P, json!({}))["release"].as_u64().unwrap();
    for i in 0..5 {
        report(&api, &format!("i{i}"), &[base], None);
    }
    set(&api, P, "k", int(2));
    (srv, api, base)
}

#[test]
fn a_rollout_goes_batch_by_batch_and_promotes() {
    let (_srv, api, base) = setup();
    let started = publish(
        &api,
        P,
        json!({"mode": "rolling", "batch": {"count": 2}, "interval_ms": 100}),
    );
    let id = started["release"].as_u64().unwrap();
    // Another rollout of the same namespace instance is refused while this one runs.
    assert_eq!(
        api.err(
            "POST",
            &format!("{P}/publish"),
            Some(json!({"mode": "rolling", "batch": {"count": 1}, "interval_ms": 1}))
        )
        .0,
        409
    );
    let r = wait(&api, id, "first batch", &[], |r| {
        r["selected"].as_array().unwrap().len() >= 2
    });
    let first: Vec<String> = r["selected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().into())
        .collect();
    assert_eq!(
        value_for(&api, &first[0]),
        2,
        "a selected instance sees the gray release"
    );
    let done = wait(&api, id, "promotion", &[], |r| r["status"] == "done");
    assert_eq!(done["selected"].as_array().unwrap().len(), 5);
    let current = api.ok("GET", &format!("{P}/releases"), None)["current"]
        .as_u64()
        .unwrap();
    assert_eq!(done["promoted"], current);
    assert_eq!(value_for(&api, "someone-new"), 2, "promoted to everyone");
    assert_eq!(api.ok("GET", &format!("{P}/grays"), None), json!([]));
    // Rollback after the promotion returns to the release before the rollout.
    let rb = api.ok("POST", &format!("{P}/rollouts/{id}/rollback"), None);
    assert_eq!(rb["status"], "rolled_back");
    assert_eq!(value_for(&api, "i0"), 1);
    let releases = api.ok("GET", &format!("{P}/releases"), None);
    let cur = releases["current"].as_u64().unwrap();
    let rel = api.ok("GET", &format!("/v1/releases/{cur}"), None);
    assert_eq!(rel["kind"], json!({"kind": "rollback", "to": base}));
    // Audit trail of the rollout.
    let audit = api.ok("GET", "/v1/audit?limit=100", None).to_string();
    for a in [
        "rollout.start",
        "rollout.batch",
        "rollout.done",
        "rollout.rollback",
    ] {
        assert!(audit.contains(a), "{a} missing");
    }
}

#[test]
fn a_rejection_stops_the_rollout_and_abort_brings_everyone_back() {
    let (_srv, api, _) = setup();
    let id = publish(
        &api,
        P,
        json!({"mode": "rolling", "batch": {"percent": 40}, "interval_ms": 3_600_000}),
    )["release"]
        .as_u64()
        .unwrap();
    // 40% of 5 is 2 per batch; the next batch is an hour away.
    let r = wait(&api, id, "first batch", &[], |r| {
        r["selected"].as_array().unwrap().len() == 2
    });
    let first: Vec<&str> = r["selected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Pause and resume: resuming makes the next batch due now, but it holds while the first batch has not
    // applied the release (the health gate).
    assert_eq!(
        api.ok("POST", &format!("{P}/rollouts/{id}/pause"), None)["status"],
        "paused"
    );
    assert_eq!(
        api.err("POST", &format!("{P}/rollouts/{id}/pause"), None).0,
        409
    );
    assert_eq!(
        api.ok("POST", &format!("{P}/rollouts/{id}/resume"), None)["status"],
        "running"
    );
    let held = wait(&api, id, "health gate", &first, |r| {
        r["waiting"].as_array().unwrap().len() == 2
    });
    assert_eq!(held["selected"].as_array().unwrap().len(), 2);
    wait(&api, id, "second batch", &[], |r| {
        r["selected"].as_array().unwrap().len() == 4
    });
    // An instance of a batch rejects the release: the rollout stops by itself at once (the next batch is
    // still an hour away).
    let victim = r["selected"][0].as_str().unwrap().to_string();
    report(&api, &victim, &[id], Some("invalid backend address"));
    let stopped = wait(&api, id, "automatic stop", &[&victim], |r| {
        r["status"] == "stopped"
    });
    assert!(
        stopped["reason"]
            .as_str()
            .unwrap()
            .contains("invalid backend address"),
        "{stopped}"
    );
    assert_eq!(
        stopped["selected"].as_array().unwrap().len(),
        4,
        "no batch after the rejection"
    );
    // Abort: the gray release is abandoned, everyone is back on the main release.
    assert_eq!(
        api.ok("POST", &format!("{P}/rollouts/{id}/abort"), None)["status"],
        "aborted"
    );
    assert_eq!(api.ok("GET", &format!("{P}/grays"), None), json!([]));
    assert_eq!(value_for(&api, &victim), 1);
    assert_eq!(
        api.err("POST", &format!("{P}/rollouts/{id}/resume"), None)
            .0,
        409
    );
    assert_eq!(
        api.err("POST", &format!("{P}/rollouts/{id}/explode"), None)
            .0,
        404
    );
    // Bad batch specs.
    for batch in [
        json!({}),
        json!({"count": 0}),
        json!({"percent": 101}),
        json!({"count": 1, "percent": 5}),
    ] {
        assert_eq!(
            api.err(
                "POST",
                &format!("{P}/publish"),
                Some(json!({"mode": "rolling", "batch": batch, "interval_ms": 1}))
            )
            .2,
            Some("batch".into())
        );
    }
    // Permissions: an editor may not steer a rollout.
    let ed = Api::new(&_srv, &user_with(&api, "ed", "edit"));
    assert_eq!(
        ed.err("POST", &format!("{P}/rollouts/{id}/pause"), None).0,
        403
    );
}

/// The error-rate gate: real clients send health windows from their consumer's counters (as `furrow proxy`
/// does from its listeners' request and error counters); errors on an instance without the gray release
/// change nothing, a selected instance whose error rate passes the rollout's threshold stops it.
#[test]
fn a_rollout_stops_when_a_selected_instance_reports_too_many_errors() {
    use std::sync::{Arc, Mutex};

    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    set(&api, P, "k", int(1));
    publish(&api, P, json!({}));
    let mut clients = Vec::new();
    let mut counters = Vec::new();
    for id in ["c1", "c2"] {
        // One lock for both counters: a window must not see requests without their errors.
        let c: Arc<Mutex<(u64, u64)>> = Arc::default();
        let probe = c.clone();
        let mut o = control::client::ClientOptions::new(
            &format!("http://{}", srv.addr),
            "shop",
            "DEV",
            "app",
        );
        o.token = Some(ADMIN_TOKEN.into());
        o.instance.id = id.into();
        o.poll_timeout = Duration::from_secs(2);
        o.health_interval = Duration::from_millis(100);
        o.health = Some(control::client::HealthProbe(Arc::new(move || {
            *probe.lock().unwrap()
        })));
        clients.push(control::client::ConfigClient::start(o, None).unwrap());
        counters.push(c);
    }
    let add = |i: usize, requests: u64, errors: u64| {
        let mut c = counters[i].lock().unwrap();
        c.0 += requests;
        c.1 += errors;
    };
    set(&api, P, "k", int(2));
    let (status, _, field) = api.err(
        "POST",
        &format!("{P}/publish"),
        Some(
            json!({"mode": "rolling", "batch": {"count": 1}, "interval_ms": 1000,
                    "health": {"max_error_rate": 1.5}}),
        ),
    );
    assert_eq!(
        (status, field.as_deref()),
        (400, Some("health/max_error_rate"))
    );
    let id = publish(
        &api,
        P,
        json!({"mode": "rolling", "batch": {"count": 1}, "interval_ms": 600_000,
               "health": {"max_error_rate": 0.1, "min_requests": 10}}),
    )["release"]
        .as_u64()
        .unwrap();
    // The first batch (c1) is due at once; the next one only in ten minutes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while clients[0].current().get_i64("k") != Some(2) {
        assert!(Instant::now() < deadline, "c1 never got the gray release");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rollout(&api, id)["selected"], json!(["c1"]));

    // c2 fails a lot but runs the main release; c1 is healthy (5% errors): the center holds both windows
    // and the rollout keeps running.
    add(1, 100, 90);
    add(0, 100, 5);
    let seen = |inst: &str, f: &dyn Fn(&Json) -> bool| {
        api.ok("GET", &format!("{P}/instances"), None)
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == inst && f(&r["health"]))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(seen("c1", &|h| h["errors"] == 5) && seen("c2", &|h| h["errors"] == 90)) {
        assert!(Instant::now() < deadline, "health windows never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rollout(&api, id)["status"], "running");

    // c1 now fails 40% of its requests: the rollout stops by itself and says why.
    add(0, 50, 20);
    // (`wait` would post reports of its own, without the clients' health windows.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = rollout(&api, id);
        if r["status"] == "stopped" {
            break r;
        }
        assert!(Instant::now() < deadline, "never stopped: {r}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("\"c1\"") && reason.contains("error rate 40.0%"),
        "{reason}"
    );
    for c in clients {
        c.stop();
    }
}
