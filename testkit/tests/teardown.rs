//! Servers must not outlive a test process that aborts (PR_SET_PDEATHSIG) or panics (Drop).

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the child process that plays the crashing test.
const CHILD_ENV: &str = "TESTKIT_TEARDOWN_CHILD";

/// The crashing test: starts servers from a short-lived thread, prints their ports, then acts.
// Ignored on purpose, not pending: this is the child half of the teardown tests below, which run it
// with `--ignored --exact` in a separate process (CHILD_ENV set) and then abort or panic it.
#[test]
#[ignore = "helper run by the other tests in a child process"]
fn crashing_helper() {
    let Some(mode) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // Started on a thread that exits before the process does: servers must survive that.
    let (redis, mariadb) = std::thread::spawn(|| {
        (
            testkit::RedisServer::start().unwrap(),
            testkit::MariaDb::start().unwrap(),
        )
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(redis.cmd(&["PING"]), "PONG");
    assert_eq!(mariadb.sql_value("SELECT 1").unwrap(), Some("1".into()));
    println!("PORTS {} {}", redis.port(), mariadb.port());
    if mode == "abort" {
        std::process::abort();
    }
    panic!("test failure with servers running");
}

/// Runs the helper in `mode` and returns the ports it reported.
fn run_helper(mode: &str) -> Vec<u16> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crashing_helper",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, mode)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the helper must crash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PORTS "))
        .unwrap_or_else(|| {
            panic!(
                "helper printed no ports: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split(' ').map(|p| p.parse().unwrap()).collect()
}

/// Waits until nothing accepts connections on `port`.
fn assert_port_closes(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "server on port {port} outlived its test process"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn servers_die_when_the_test_process_aborts() {
    for port in run_helper("abort") {
        assert_port_closes(port);
    }
}

#[test]
fn servers_die_when_a_test_panics() {
    for port in run_helper("panic") {
        assert_port_closes(port);
    }
}
