//! Two jobs runtimes (two control nodes) over one test-kit MariaDB, driven step by step in-process with no
//! ticker, so that one node is *behind* the store exactly when it matters: another node created a job and
//! fired it a moment ago, and this node's snapshot (caught up every 50 ms by the server's ticker) does
//! not hold it yet.
//!
//! This is the cause of the flaky `tests/jobs.rs::a_killed_worker_s_item_runs_again_elsewhere` ("timed out
//! waiting for the item to run on w1"): the job was saved and triggered through node B, w1 polled node A,
//! and node A — not yet caught up — took the pending item for one of a deleted job and failed it. The
//! same lag made a node delete another node's fresh trigger row, and apply a report without the job's
//! retry policy. Here the lag is made certain rather than left to timing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::ADMIN_TOKEN;
use control::center::Center;
use control::jobs::sched::{ItemReport, WorkerInfo};
use control::jobs::{Jobs, JobsOptions};
use serde_json::json;

fn center(url: &str) -> (Arc<Center>, Arc<Jobs>) {
    let store = control::store::open(url).unwrap();
    let c = Center::open(store, vec!["DEV".into()], "admin", Some(ADMIN_TOKEN)).unwrap();
    let j = control::jobs::attach(&c, url, JobsOptions::default()).unwrap();
    (c, j)
}

fn put(c: &Center, name: &str, spec: serde_json::Value) {
    let admin = c.authenticate(Some(ADMIN_TOKEN)).unwrap();
    let spec: control::jobs::JobSpec = serde_json::from_value(spec).unwrap();
    c.mutate(&admin, |tx| tx.put_job("DEV", name, spec.clone()))
        .unwrap();
}

fn known(c: &Center, name: &str) -> bool {
    c.read(|st| st.jobs.get("DEV", name).is_some()).unwrap()
}

#[test]
fn a_node_behind_the_store_does_not_take_new_jobs_for_deleted_ones() {
    let db = testkit::MariaDb::start().expect("start MariaDB");
    let url = format!("{}/furrow_jobs_lag", db.url());
    let (a, ja) = center(&url);
    let (b, jb) = center(&url);
    let (e, je) = center(&url);
    let admin = b.authenticate(Some(ADMIN_TOKEN)).unwrap();
    b.mutate(&admin, |tx| tx.create_app("shop", "")).unwrap();
    ja.register(&WorkerInfo {
        id: "w1".into(),
        cpu_milli: 1000,
        mem_mb: 1000,
        kinds: vec!["shell".into()],
        ..Default::default()
    })
    .unwrap();

    // Saved and fired through B; A has not caught up.
    put(
        &b,
        "slow",
        json!({"app": "shop", "retries": 1, "backoff_ms": 10,
               "kind": {"type": "shell", "command": "sleep 1"}}),
    );
    let job = b
        .read(|st| st.jobs.get("DEV", "slow").cloned())
        .unwrap()
        .unwrap();
    let run = jb.trigger(&job).unwrap();
    assert!(!known(&a, "slow"), "node A must be behind for this test");
    let got = ja.claim(&a, "w1", 4).unwrap();
    assert_eq!(got.len(), 1, "node A hands out the new job's item");
    assert_eq!(got[0].run, run);
    let r = jb.run(&run).unwrap();
    assert_eq!(r["item_list"][0]["state"], "running", "{r}");
    assert_eq!(r["item_list"][0]["worker"], "w1", "{r}");
    // The traceparent names the run's trace and this attempt's span.
    let tp = &got[0].traceparent;
    assert_eq!(tp, &control::jobs::span::traceparent(&run, 0, 1));

    // A failure reported to a node that is behind (E, opened before the job existed and never caught up)
    // still gets the job's retry policy (retries: 1), not "no policy: failed".
    assert!(!known(&e, "slow"));
    let fail = ItemReport {
        run: run.clone(),
        idx: 0,
        status: "failed".into(),
        exit_code: Some(1),
        result: "exit status 1".into(),
        log: String::new(),
    };
    assert!(je.finish(&e, "w1", &fail).unwrap(), "report accepted");
    let r = jb.run(&run).unwrap();
    assert_eq!(
        r["item_list"][0]["state"], "pending",
        "retried, not failed for want of a policy: {r}"
    );
    // The attempt is a span of the run's trace, in the collector of the node that saw it end.
    assert!(e.trace.settle(Duration::from_secs(5)));
    let (trace, root) = control::jobs::span::run_ids(&run);
    let spans = e
        .trace
        .with_store(|s| s.trace(u128::from_be_bytes(trace)).map(|x| x.to_vec()))
        .unwrap()
        .unwrap_or_default();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let sp = &spans[0];
    assert_eq!(&*sp.service, "furrow-jobs");
    assert_eq!(
        sp.span.span_id,
        control::jobs::span::item_span_id(&run, 0, 1)
    );
    assert_eq!(sp.span.parent_id, root);
    assert!(sp.is_error());
    assert_eq!(sp.attr_text("furrow.worker").as_deref(), Some("w1"));
    assert_eq!(sp.attr_text("furrow.exit_code").as_deref(), Some("1"));

    // A trigger row saved through B is not deleted by A's scheduler step while A is behind.
    put(
        &b,
        "tick",
        json!({"app": "shop", "schedule": {"type": "rate", "every_ms": 200},
               "kind": {"type": "shell", "command": "true"}}),
    );
    jb.tick(&b).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!known(&a, "tick"), "node A must be behind for this test");
    ja.tick(&a).unwrap();
    let next = jb.next_times().unwrap();
    assert!(
        next.get(&("DEV".to_string(), "tick".to_string()))
            .is_some_and(|n| n.is_some()),
        "the trigger row survives a node that is behind: {next:?}"
    );
    // Its next step catches up and fires it.
    ja.tick(&a).unwrap();
    assert!(
        known(&a, "tick"),
        "caught up after seeing an unknown job's row"
    );
    let runs = jb.runs("DEV", "tick", 10).unwrap();
    assert!(
        runs.iter().any(|r| r["node"] == ja.node.as_str()),
        "node A fired it once caught up: {runs:?}"
    );

    // A job deleted for real: its pending items are failed as such (after catching up).
    put(
        &b,
        "gone",
        json!({"app": "shop", "kind": {"type": "shell", "command": "true"}}),
    );
    let job = b
        .read(|st| st.jobs.get("DEV", "gone").cloned())
        .unwrap()
        .unwrap();
    let gone_run = jb.trigger(&job).unwrap();
    b.mutate(&admin, |tx| tx.delete_job("DEV", "gone")).unwrap();
    let mut other = ja.claim(&a, "w1", 4).unwrap();
    other.retain(|x| x.run == gone_run);
    assert!(other.is_empty(), "no item of a deleted job is handed out");
    let r = jb.run(&gone_run).unwrap();
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["item_list"][0]["result"], "job deleted", "{r}");
}
