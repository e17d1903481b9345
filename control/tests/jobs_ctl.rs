//! `furrow ctl job ...` against a real service with an in-process worker (the Rust client library), on the
//! embedded store: put from a file, list, show, trigger, runs, run, pause, resume, stop, workers, stats,
//! delete; errors exit 1.

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use common::*;
use control::center::Center;
use control::cli::{CtlArgs, run_ctl};
use control::server::Server;
use serde_json::json;

#[derive(Parser)]
struct Top {
    #[command(flatten)]
    ctl: CtlArgs,
}

fn ctl(server: &str, args: &[&str]) -> ExitCode {
    let mut argv = vec!["ctl", "--server", server, "--token", ADMIN_TOKEN];
    argv.extend_from_slice(args);
    run_ctl(Top::try_parse_from(argv).unwrap().ctl)
}

#[test]
fn ctl_job_drives_jobs_with_an_in_process_worker() {
    let store = control::store::open("sqlite::memory:").unwrap();
    let center = Center::open(store, vec!["DEV".into()], "admin", Some(ADMIN_TOKEN)).unwrap();
    control::jobs::attach(&center, "sqlite::memory:", Default::default()).unwrap();
    let srv = Server::start(center, "127.0.0.1:0", 2).unwrap();
    let server = format!("http://{}", srv.addr);
    let api = Api::new(&srv, ADMIN_TOKEN);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));

    let mut opts = control::jobs::worker::WorkerOptions::new(&server, Some(ADMIN_TOKEN), "lib-1");
    opts.kinds = vec![];
    opts.beat = Duration::from_millis(200);
    let mut w = control::jobs::worker::Worker::new(opts);
    w.register("greet", |ctx| {
        Ok(format!(
            "hello {}",
            ctx.params["who"].as_str().unwrap_or("?")
        ))
    });
    let worker = w.start().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.json");
    std::fs::write(
        &file,
        json!({"app": "shop", "kind": {"type": "fn", "name": "greet"}, "items": [{"who": "a"}, {"who": "b"}]}).to_string(),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let ok = ExitCode::SUCCESS;
    let fail = ExitCode::FAILURE;
    assert_eq!(
        ctl(
            &server,
            &["job", "put", "--env", "DEV", "greet", "--file", f]
        ),
        ok
    );
    assert_eq!(ctl(&server, &["job", "list", "--env", "DEV"]), ok);
    assert_eq!(ctl(&server, &["job", "show", "--env", "DEV", "greet"]), ok);
    assert_eq!(ctl(&server, &["job", "show", "--env", "DEV", "nope"]), fail);
    std::fs::write(&file, "{\"app\": \"shop\", \"kind\": {\"type\": \"fn\"}}").unwrap();
    assert_eq!(
        ctl(&server, &["job", "put", "--env", "DEV", "bad", "--file", f]),
        fail
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while api.ok("GET", "/v1/jobs/workers", None)[0]["live"] != true {
        assert!(Instant::now() < deadline, "worker registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ctl(&server, &["job", "trigger", "--env", "DEV", "greet"]),
        ok
    );
    let run = loop {
        let runs = api.ok("GET", "/v1/jobs/DEV/greet/runs", None);
        if runs[0]["state"] == "ok" {
            break runs[0].clone();
        }
        assert!(Instant::now() < deadline, "run ended: {runs}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let ms = run["scheduled_ms"].to_string();
    let detail = api.ok("GET", &format!("/v1/jobs/DEV/greet/runs/{ms}"), None);
    let results: Vec<&str> = detail["item_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["hello a", "hello b"]);
    assert_eq!(ctl(&server, &["job", "runs", "--env", "DEV", "greet"]), ok);
    assert_eq!(
        ctl(&server, &["job", "run", "--env", "DEV", "greet", &ms]),
        ok
    );
    assert_eq!(
        ctl(&server, &["job", "run", "--env", "DEV", "greet", "12"]),
        fail
    );
    assert_eq!(
        ctl(&server, &["job", "stop", "--env", "DEV", "greet", "12"]),
        fail
    );
    assert_eq!(ctl(&server, &["job", "pause", "--env", "DEV", "greet"]), ok);
    assert_eq!(api.ok("GET", "/v1/jobs/DEV/greet", None)["paused"], true);
    assert_eq!(
        ctl(&server, &["job", "trigger", "--env", "DEV", "greet"]),
        fail
    );
    assert_eq!(
        ctl(&server, &["job", "resume", "--env", "DEV", "greet"]),
        ok
    );
    assert_eq!(ctl(&server, &["job", "workers"]), ok);
    assert_eq!(ctl(&server, &["job", "stats"]), ok);
    assert_eq!(
        ctl(&server, &["job", "delete", "--env", "DEV", "greet"]),
        ok
    );
    assert_eq!(
        ctl(&server, &["job", "show", "--env", "DEV", "greet"]),
        fail
    );
    worker.shutdown();
    assert!(
        api.ok("GET", "/v1/jobs/workers", None)
            .as_array()
            .unwrap()
            .is_empty(),
        "deregistered on shutdown"
    );
}
