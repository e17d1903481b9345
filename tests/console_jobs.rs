//! The console's jobs page end to end in a real headless Chromium (as `tests/console.rs`), against a real
//! `furrow control` and a real `furrow worker`: the jobs list with the dependency graph, a job's runs,
//! triggering and pausing through the confirmation dialog, a run's items with worker and log.

mod common;
mod webdriver;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DevControl, Process, furrow_bin, wait_for};
use serde_json::json;
use webdriver::Browser;

const TOKEN: &str = "console-jobs-token";

#[test]
fn console_jobs_page() {
    webdriver::require();
    let dir = tempfile::tempdir().unwrap();
    let control = DevControl::start(dir.path(), TOKEN);
    let (base, api) = (&control.base, &control.api);
    let _worker = Process(
        Command::new(furrow_bin())
            .args([
                "worker",
                "--server",
                base,
                "--token",
                TOKEN,
                "--id",
                "w1",
                "--beat-ms",
                "300",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("worker.log")).unwrap())
            .spawn()
            .expect("spawn furrow worker"),
    );
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api.ok(
        "PUT",
        "/v1/jobs/DEV/extract",
        Some(json!({"app": "shop", "description": "nightly extract",
        "kind": {"type": "shell", "command": "echo hello from extract"}})),
    );
    api.ok(
        "PUT",
        "/v1/jobs/DEV/load",
        Some(json!({"app": "shop", "after": ["extract"],
        "kind": {"type": "shell", "command": "true"}})),
    );
    wait_for("the worker", || {
        api.ok("GET", "/v1/jobs/workers", None)[0]["live"] == true
    });
    api.ok("POST", "/v1/jobs/DEV/extract/trigger", None);
    wait_for("load after extract", || {
        api.ok("GET", "/v1/jobs/DEV/load/runs", None)[0]["state"] == "ok"
    });

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let b = Browser::start(&shots);
    let long = Duration::from_secs(15);
    b.goto(&format!("{base}/"));
    b.fill("#login-token", TOKEN);
    b.click("#login-submit");
    b.wait_text("#who", long, |t| t.contains("admin"));

    b.goto(&format!("{base}/#/jobs?env=DEV"));
    b.wait_text("#jobs-table", long, |t| {
        t.contains("extract") && t.contains("load") && t.contains("manual")
    });
    b.find("#jobs-graph svg");
    b.screenshot("20-jobs");

    b.goto(&format!("{base}/#/jobs?env=DEV&job=extract"));
    b.wait_text("#runs-table", long, |t| {
        t.contains("manual") && t.contains("ok")
    });
    b.click("#job-trigger");
    b.confirm();
    wait_for("a second run", || {
        api.ok("GET", "/v1/jobs/DEV/extract/runs", None)
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    let runs = api.ok("GET", "/v1/jobs/DEV/extract/runs", None);
    let ms = runs[1]["scheduled_ms"].to_string();
    b.goto(&format!("{base}/#/jobs?env=DEV&job=extract&run={ms}"));
    b.wait_text("#run-detail", long, |t| {
        t.contains("w1") && t.contains("hello from extract")
    });
    b.screenshot("21-job-run");

    b.click("#job-pause");
    b.confirm();
    wait_for("paused", || {
        api.ok("GET", "/v1/jobs/DEV/extract", None)["paused"] == true
    });
    b.find("#job-resume");
    let audit = api.ok("GET", "/v1/audit?limit=50", None);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"jobs.trigger") && actions.contains(&"jobs.pause"),
        "{actions:?}"
    );
}
