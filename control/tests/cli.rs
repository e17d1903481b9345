//! `furrow ctl config ...` against a real service (the entry point the binary wires in).

mod common;

use std::process::ExitCode;

use clap::Parser;
use common::*;
use control::cli::{CtlArgs, run_ctl};

#[derive(Parser)]
struct Top {
    #[command(flatten)]
    ctl: CtlArgs,
}

fn ctl(server: &str, token: &str, args: &[&str]) -> ExitCode {
    let mut argv = vec!["ctl", "--server", server, "--token", token];
    argv.extend_from_slice(args);
    run_ctl(Top::try_parse_from(argv).unwrap().ctl)
}

fn ns_path() -> String {
    ns("shop", "DEV", "default", "app")
}

#[test]
fn ctl_covers_the_edit_publish_rollback_cycle() {
    let srv = start("sqlite::memory:");
    let server = format!("http://{}", srv.addr);
    let api = Api::new(&srv, ADMIN_TOKEN);
    let ok = ExitCode::SUCCESS;
    let run = |args: &[&str]| ctl(&server, ADMIN_TOKEN, args);
    assert_eq!(run(&["config", "create-app", "shop"]), ok);
    assert_eq!(run(&["config", "create-namespace", "shop", "app"]), ok);
    let ns = ["--app", "shop", "--env", "DEV", "--ns", "app"];
    fn cmd<'a>(ns: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut v: Vec<&str> = vec!["config"];
        v.extend_from_slice(&extra[..1]);
        v.extend_from_slice(ns);
        v.extend_from_slice(&extra[1..]);
        v
    }
    let with = |extra: &[&'static str]| cmd(&ns, extra);
    assert_eq!(
        run(&with(&["set", "port", "8080", "--type", "integer"])),
        ok
    );
    assert_eq!(
        run(&with(&["set", "port", "9090", "--type", "integer"])),
        ok,
        "set updates with the current version"
    );
    assert_ne!(run(&with(&["set", "port", "x", "--type", "integer"])), ok);
    assert_ne!(run(&with(&["set", "doc", "a = ", "--type", "toml"])), ok);
    assert_eq!(
        run(&with(&["set", "hosts", "[\"a\"]", "--type", "list"])),
        ok
    );
    assert_eq!(run(&with(&["list-add", "hosts", "b"])), ok);
    // Issue 17, item 7: a JSON object is sent as JSON (and refused: list elements are scalars), not stored
    // as its text.
    assert_ne!(run(&with(&["list-add", "hosts", "{\"nested\":1}"])), ok);
    assert_eq!(run(&with(&["list-add", "hosts", "3"])), ok);
    assert_eq!(
        api.ok("GET", &format!("{}/items/hosts", ns_path()), None)["value"]["value"],
        serde_json::json!(["a", "b", 3])
    );
    assert_eq!(run(&with(&["list-remove", "hosts", "2"])), ok);
    assert_eq!(run(&with(&["publish", "-m", "first"])), ok);
    let c = config(&api, "shop", "DEV", "default", "app", "");
    assert_eq!(c["items"]["port"]["value"]["value"], 9090);
    assert_eq!(
        c["items"]["hosts"]["value"]["value"],
        serde_json::json!(["a", "b"])
    );
    let first = c["releases"][0].as_u64().unwrap().to_string();
    assert_eq!(run(&with(&["set", "port", "1", "--type", "integer"])), ok);
    assert_eq!(
        run(&with(&["publish", "--mode", "gray", "--instance", "p1"])),
        ok
    );
    assert_eq!(
        config(&api, "shop", "DEV", "default", "app", "instance=p1")["items"]["port"]["value"]["value"],
        1
    );
    assert_eq!(run(&cmd(&ns, &["rollback", &first])), ok);
    assert_eq!(run(&["config", "audit", "--limit", "5"]), ok);
    assert_eq!(run(&with(&["releases"])), ok);
    // Dynamic values evaluated for a context (issue 17).
    assert_eq!(
        run(&with(&["evaluate", "--key", "port", "--ctx", "region=eu"])),
        ok
    );
    assert_ne!(run(&with(&["evaluate", "--ctx", "region"])), ok);
    assert_ne!(run(&with(&["evaluate", "--key", "nope"])), ok);
    // Issue 17: scheduled publishes, tokens, rollouts and usage from the CLI.
    assert_eq!(run(&with(&["set", "port", "2", "--type", "integer"])), ok);
    assert_eq!(
        run(&with(&["publish", "--mode", "scheduled", "--at", "+3600"])),
        ok
    );
    assert_eq!(run(&with(&["scheduled"])), ok);
    let sched = api.ok("GET", &format!("{}/scheduled", ns_path()), None)[0]["id"].to_string();
    assert_eq!(run(&cmd(&ns, &["cancel-scheduled", &sched])), ok);
    assert_ne!(run(&cmd(&ns, &["cancel-scheduled", &sched])), ok);
    assert_eq!(
        run(&["config", "create-token", "admin", "--ttl-s", "60"]),
        ok
    );
    assert_eq!(run(&["config", "tokens"]), ok);
    assert_ne!(run(&["config", "revoke-token", "0000"]), ok);
    assert_eq!(run(&with(&["set", "port", "3", "--type", "integer"])), ok);
    assert_eq!(
        run(&with(&[
            "publish",
            "--mode",
            "rolling",
            "--batch",
            "50%",
            "--interval-ms",
            "3600000",
            "--max-error-rate",
            "0.05"
        ])),
        ok
    );
    let gate = &api.ok("GET", &format!("{}/rollouts", ns_path()), None)[0]["health"];
    assert_eq!(
        gate,
        &serde_json::json!({"max_error_rate": 0.05, "min_requests": 20})
    );
    assert_ne!(
        run(&with(&["publish", "--mode", "rolling"])),
        ok,
        "--batch is required"
    );
    assert_eq!(run(&with(&["rollouts"])), ok);
    let roll = api.ok("GET", &format!("{}/rollouts", ns_path()), None)[0]["release"].to_string();
    assert_eq!(run(&cmd(&ns, &["rollout", &roll, "abort"])), ok);
    assert_ne!(run(&cmd(&ns, &["rollout", &roll, "explode"])), ok);
    assert_eq!(run(&with(&["usage", "--unused-for-ms", "1000"])), ok);
    assert_eq!(run(&with(&["usage", "--key", "port"])), ok);
    // Errors exit non-zero: unknown namespace, bad token, unreachable service.
    assert_ne!(
        run(&[
            "config", "items", "--app", "shop", "--env", "DEV", "--ns", "nope"
        ]),
        ok
    );
    assert_ne!(ctl(&server, "wrong", &["config", "apps"]), ok);
    assert_ne!(
        ctl("http://127.0.0.1:1", ADMIN_TOKEN, &["config", "apps"]),
        ok
    );
}

/// `furrow ctl registry ...` and `furrow ctl rules ...` end to end (issue 18).
#[test]
fn ctl_drives_the_registry_and_rules() {
    let srv = start("sqlite::memory:");
    let server = format!("http://{}", srv.addr);
    let api = Api::new(&srv, ADMIN_TOKEN);
    let ok = ExitCode::SUCCESS;
    let run = |args: &[&str]| ctl(&server, ADMIN_TOKEN, args);
    assert_eq!(
        ctl(&server, ADMIN_TOKEN, &["config", "create-app", "shop"]),
        ok
    );
    let svc = ["--env", "DEV", "orders"];
    fn join<'a>(svc: &[&'a str], cmd: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut v: Vec<&str> = cmd.to_vec();
        v.extend_from_slice(svc);
        v.extend_from_slice(extra);
        v
    }
    let with = |cmd: &[&'static str], extra: &[&str]| -> Vec<String> {
        join(&svc, cmd, extra)
            .into_iter()
            .map(String::from)
            .collect()
    };
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    };
    assert_eq!(
        run(&with(&["registry", "put-service"], &["--app", "shop"])),
        ok
    );
    assert_ne!(
        run(&with(&["registry", "live"], &[])),
        ok,
        "the publishing gate refuses a service without owner"
    );
    assert_eq!(
        run(&with(
            &["registry", "put-service"],
            &[
                "--app",
                "shop",
                "--owner",
                "team",
                "--docs",
                "https://d",
                "--dep",
                "users"
            ]
        )),
        ok
    );
    assert_eq!(run(&with(&["registry", "live"], &[])), ok);
    assert_eq!(
        run(&with(
            &["registry", "register"],
            &[
                "--ip",
                "127.0.0.1",
                "--port",
                "9000",
                "--id",
                "i1",
                "--tag",
                "zone=a",
                "--instance-version",
                "2.0"
            ]
        )),
        ok
    );
    assert_ne!(
        run(&with(
            &["registry", "register"],
            &["--ip", "127.0.0.1", "--port", "9001", "--tag", "zone"]
        )),
        ok,
        "a tag without = is refused"
    );
    assert_eq!(run(&with(&["registry", "beat"], &["i1"])), ok);
    assert_eq!(run(&with(&["registry", "offline"], &["i1"])), ok);
    let d = api.ok("GET", "/v1/registry/DEV/services/orders/discover", None);
    assert_eq!(d["instances"], serde_json::json!([]));
    assert_eq!(run(&with(&["registry", "online"], &["i1"])), ok);
    assert_eq!(run(&with(&["registry", "weight"], &["i1", "7"])), ok);
    let d = api.ok("GET", "/v1/registry/DEV/services/orders/discover", None);
    assert_eq!(d["instances"][0]["weight"], 7);
    assert_eq!(d["instances"][0]["tags"]["zone"], "a");
    let rev = d["rev"].as_u64().unwrap().to_string();
    assert_eq!(
        run(&with(
            &["registry", "watch"],
            &["--since", &rev, "--timeout-ms", "100"]
        )),
        ok,
        "a watch that times out prints nothing and succeeds"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.json");
    std::fs::write(
        &file,
        r#"[{"kind": "access", "allow": false, "callers": ["crawler"]},
            {"kind": "route", "version": "2.*", "percent": 100}]"#,
    )
    .unwrap();
    let file = file.display().to_string();
    assert_eq!(
        run(&with(
            &["rules", "publish"],
            &["--file", &file, "--version", "0"]
        )),
        ok
    );
    assert_ne!(
        run(&with(
            &["rules", "publish"],
            &["--file", &file, "--version", "0"]
        )),
        ok,
        "a stale version is refused"
    );
    let set = api.ok("GET", "/v1/registry/DEV/services/orders/rules", None);
    assert_eq!(set["version"], 1);
    assert_eq!(
        run(&with(&["rules", "check"], &["--caller", "crawler"])),
        ok
    );
    assert_eq!(run(&with(&["registry", "deregister"], &["i1"])), ok);
    assert_ne!(run(&with(&["registry", "deregister"], &["i1"])), ok);
    assert_eq!(run(&with(&["registry", "show"], &[])), ok);
    assert_eq!(
        ctl(
            &server,
            ADMIN_TOKEN,
            &["registry", "services", "--env", "DEV"]
        ),
        ok
    );
    assert_eq!(ctl(&server, ADMIN_TOKEN, &["registry", "stats"]), ok);

    // --check sets the service's active health check; --review-rules makes publishes pending.
    assert_eq!(
        run(&with(
            &["registry", "put-service"],
            &[
                "--app",
                "shop",
                "--owner",
                "team",
                "--docs",
                "https://d",
                "--check",
                "http",
                "--check-interval-ms",
                "2000",
                "--check-timeout-ms",
                "300",
                "--check-path",
                "/healthz",
                "--review-rules"
            ]
        )),
        ok
    );
    let shown = api.ok("GET", "/v1/registry/DEV/services/orders", None);
    assert_eq!(
        shown["service"]["check"],
        serde_json::json!({"kind": "http", "interval_ms": 2000, "timeout_ms": 300, "path": "/healthz"})
    );
    assert_eq!(shown["service"]["review_rules"], true);
    assert_eq!(
        run(&with(
            &["rules", "publish"],
            &["--file", &file, "--version", "1"]
        )),
        ok
    );
    assert_eq!(run(&with(&["rules", "pending"], &[])), ok);
    assert_ne!(
        run(&with(&["rules", "approve"], &[])),
        ok,
        "the author may not approve"
    );
    assert_eq!(run(&with(&["rules", "reject"], &[])), ok);
    let pending = api.ok(
        "GET",
        "/v1/registry/DEV/services/orders/rules/pending",
        None,
    );
    assert!(pending.is_null(), "{pending}");
}
