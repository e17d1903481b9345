//! The `furrow` binary end to end: `check-config`, the admin port with real `redis-cli` and `nc`,
//! `/metrics`, and hot reload (admin command and SIGHUP) where a broken file leaves the old config serving.

mod common;

use std::time::Duration;

use common::{FurrowProcess, furrow_bin, redis_cli, redis_cli_with};

#[test]
fn check_config_accepts_the_examples() {
    let out = std::process::Command::new(furrow_bin())
        .arg("check-config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/furrow.toml"))
        .output()
        .expect("run furrow");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 listeners"));
}

#[test]
fn check_config_reports_every_problem_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[proxy]\nadmin = \"nowhere\"\n\n[[listeners]]\nname = \"x\"\nkind = \"redis\"\naddress = \"127.0.0.1:1\"\ngroup = \"g\"\ncolour = 1\n",
    )
    .expect("write");
    let out = std::process::Command::new(furrow_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run furrow");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert!(
        err.contains(&format!(
            "{p}:2:9: error: proxy.admin: invalid address `nowhere`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:8:9: error: listeners[0].group: unknown group `g`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:9:1: error: listeners[0].colour: unknown key `colour`"
        )),
        "{err}"
    );
    assert!(err.contains("3 problems"), "{err}");
}

#[test]
fn hash_password_prints_config_lines() {
    let out = std::process::Command::new(furrow_bin())
        .args(["hash-password", "app-secret"])
        .output()
        .expect("run furrow");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("password_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\""),
        "{s}"
    );
}

fn admin_only_config(admin: u16, metrics: u16, extra: &str) -> String {
    format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\nmetrics = \"127.0.0.1:{metrics}\"\n{extra}"
    )
}

#[test]
fn admin_port_answers_redis_cli_and_nc() {
    let admin = testkit::reserve_port().expect("port");
    let metrics = testkit::reserve_port().expect("port");
    let p = FurrowProcess::start(
        &admin_only_config(admin.port(), metrics.port(), ""),
        admin.port(),
    );
    assert_eq!(redis_cli(admin.port(), &["PING"]), "PONG");
    let info = redis_cli(admin.port(), &["INFO"]);
    assert!(info.contains("furrow_version:"), "{info}");
    assert!(info.contains("config_generation:1"), "{info}");
    let unknown = redis_cli(admin.port(), &["FROB"]);
    assert!(unknown.contains("unknown command 'FROB'"), "{unknown}");

    // nc speaks the inline protocol.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'PING\\r\\nSHOW CONFIG\\r\\nHELP\\r\\nQUIT\\r\\n' | nc -q 2 127.0.0.1 {}",
            admin.port()
        ))
        .output()
        .expect("nc");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("+PONG\r\n"), "{text}");
    assert!(text.contains("executors = 1"), "{text}");
    assert!(text.contains("CONFIG RELOAD"), "{text}"); // HELP (redis-cli answers HELP itself)

    let body = common::http_get(metrics.port(), "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("furrow_config_generation 1"), "{body}");
    let missing = common::http_get(metrics.port(), "/nope");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    drop(p);
}

#[test]
fn show_config_masks_every_secret() {
    let admin = testkit::reserve_port().expect("port");
    let metrics = testkit::reserve_port().expect("port");
    let extra = "admin_password = \"adm-1\"\n\n\
         [mysql_groups.main]\nuser = \"backend\"\npassword = 'grp-2'\n\
         primary = { name = \"p\", address = \"127.0.0.1:1\" }\n\n\
         [users.app]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\n\
         password_sha256 = \"07a99d33e023ea491bc3f7b999efcfb76c32ff9abe1cf29ff3c5ee8b85ea015d\"\n\n\
         [users.other]\n\"password_sha256\"   =   \"24dad5785a77373f33eeb44289cdef2e252394ca4cfac4e71169b071d805f24f\"\n";
    let cfg = admin_only_config(admin.port(), metrics.port(), extra);
    let _p = FurrowProcess::start(&cfg, admin.port());
    assert_eq!(redis_cli(admin.port(), &["AUTH", "adm-1"]), "OK");
    let shown = redis_cli_with(
        admin.port(),
        &["-a", "adm-1", "--no-auth-warning"],
        &["SHOW", "CONFIG"],
    );
    assert!(shown.contains("[users.app]"), "{shown}");
    assert!(shown.contains("user = \"backend\""), "{shown}");
    for secret in [
        "adm-1",
        "grp-2",
        "6C7A370C07660BC788681B3238D93E08BD74303C",
        "07a99d33e023ea491bc3f7b999efcfb76c32ff9abe1cf29ff3c5ee8b85ea015d",
        "24dad5785a77373f33eeb44289cdef2e252394ca4cfac4e71169b071d805f24f",
    ] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    assert_eq!(shown.matches("\"***\"").count(), 5, "{shown}");
}

#[test]
fn admin_password_is_required_when_set() {
    let admin = testkit::reserve_port().expect("port");
    let metrics = testkit::reserve_port().expect("port");
    let cfg = admin_only_config(
        admin.port(),
        metrics.port(),
        "admin_password = \"s3cret\"\n",
    );
    let _p = FurrowProcess::start(&cfg, admin.port());
    assert!(redis_cli(admin.port(), &["INFO"]).contains("NOAUTH"));
    assert!(redis_cli(admin.port(), &["AUTH", "wrong"]).contains("WRONGPASS"));
    let out = common::redis_cli_with(
        admin.port(),
        &["-a", "s3cret", "--no-auth-warning"],
        &["INFO"],
    );
    assert!(out.contains("furrow_version:"), "{out}");
}

#[test]
fn broken_reload_keeps_the_running_config_and_good_reloads_apply() {
    let admin = testkit::reserve_port().expect("port");
    let metrics = testkit::reserve_port().expect("port");
    let good = admin_only_config(admin.port(), metrics.port(), "");
    let p = FurrowProcess::start(&good, admin.port());

    // A broken file: rejected with the same precise errors, generation stays 1.
    std::fs::write(
        p.config_path(),
        format!("{good}\n[[listeners]]\nname = 1\n"),
    )
    .expect("write");
    let reply = redis_cli(admin.port(), &["CONFIG", "RELOAD"]);
    assert!(reply.starts_with("ERR config rejected"), "{reply}");
    assert!(
        reply.contains("listeners[0].name: expected a string, found an integer"),
        "{reply}"
    );
    assert!(redis_cli(admin.port(), &["INFO"]).contains("config_generation:1"));

    // A valid change is applied.
    std::fs::write(p.config_path(), format!("{good}shutdown_grace_ms = 100\n")).expect("write");
    let reply = redis_cli(admin.port(), &["CONFIG", "RELOAD"]);
    assert_eq!(reply, "OK generation 2");
    assert!(redis_cli(admin.port(), &["SHOW", "CONFIG"]).contains("shutdown_grace_ms = 100"));

    // SIGHUP does the same.
    std::fs::write(p.config_path(), format!("{good}shutdown_grace_ms = 200\n")).expect("write");
    p.signal(libc::SIGHUP);
    common::wait_until(Duration::from_secs(10), || {
        redis_cli(admin.port(), &["INFO"]).contains("config_generation:3")
    });
    // and a broken file on SIGHUP changes nothing.
    std::fs::write(p.config_path(), "this is not toml").expect("write");
    p.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(redis_cli(admin.port(), &["INFO"]).contains("config_generation:3"));
    assert_eq!(redis_cli(admin.port(), &["PING"]), "PONG");
}

#[test]
fn sigterm_stops_the_process_cleanly() {
    let admin = testkit::reserve_port().expect("port");
    let metrics = testkit::reserve_port().expect("port");
    let mut p = FurrowProcess::start(
        &admin_only_config(admin.port(), metrics.port(), ""),
        admin.port(),
    );
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}
