//! `bench control`: the config center's own measurements (`control/tests/perf.rs`, ignored tests
//! run in an optimized build), their printed lines collected into the report.

use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::report::{Machine, now};
use crate::{Opts, loads, workspace_root};

/// The command that runs the measurements.
pub const ARGS: &[&str] = &[
    "test",
    "-p",
    "control",
    "--profile",
    "bench",
    "--test",
    "perf",
    "--",
    "--ignored",
    "--nocapture",
    "--test-threads",
    "1",
];

/// What the config center's measurements printed, and the figures read from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ControlReport {
    /// UTC date and time.
    pub date: String,
    /// Where it ran.
    pub machine: Machine,
    /// The command.
    pub command: String,
    /// The measurement lines it printed.
    pub lines: Vec<String>,
    /// Config reads per wall second (one server worker thread).
    pub reads_per_s: Option<f64>,
    /// Config reads per second of server CPU.
    pub reads_per_cpu_s: Option<f64>,
    /// p99 from a publish to a watcher's response, ms (1,000 watchers).
    pub watch_p99_ms: Option<f64>,
    /// Why there are no figures.
    pub error: Option<String>,
}

/// Runs the measurements (hard limit: 10 minutes, builds included).
pub fn run(_opts: &Opts) -> ControlReport {
    let command = format!("cargo {}", ARGS.join(" "));
    eprintln!("bench: {command}");
    let mut r = ControlReport {
        date: now(),
        machine: Machine::detect(),
        command,
        ..ControlReport::default()
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = loads::run_with_limit(
        Command::new(cargo).args(ARGS).current_dir(workspace_root()),
        Duration::from_secs(600),
    );
    match out {
        Err(e) => r.error = Some(format!("running cargo test: {e}")),
        Ok(o) => {
            parse_into(&o.text, &mut r);
            if o.timed_out {
                r.error = Some("did not finish within 10 minutes (killed)".into());
            } else if !o.success {
                r.error = Some(format!("cargo test failed: {}", loads::tail(&o.text, 3)));
            }
        }
    }
    r
}

/// Reads the measurement lines of `text` into `r`.
pub fn parse_into(text: &str, r: &mut ControlReport) {
    // libtest prints `test NAME ... ` before a test's own output, on the same line.
    let from = |line: &str, marker: &str| line.find(marker).map(|i| line[i..].to_string());
    for raw in text.lines() {
        let line = from(raw, "config reads:")
            .or_else(|| from(raw, "server CPU for the publish"))
            .or_else(|| from(raw, "idle watcher, service side"))
            .or_else(|| {
                raw.contains(" watchers: p50 ")
                    .then(|| raw.trim().to_string())
            })
            .unwrap_or_default();
        let line = line.as_str();
        if let Some(rest) = line.strip_prefix("config reads:") {
            r.lines.push(line.to_string());
            // "N in D = X/s wall (...); server CPU C s = Y reads per CPU-second"
            r.reads_per_s = rest
                .split_once(" = ")
                .and_then(|(_, v)| v.split_once("/s").map(|x| x.0.trim().to_string()))
                .and_then(|v| v.parse().ok());
            r.reads_per_cpu_s = rest
                .rsplit_once(" = ")
                .and_then(|(_, v)| v.split_whitespace().next().map(str::to_string))
                .and_then(|v| v.parse().ok());
        } else if line.contains(" watchers: p50 ") {
            r.lines.push(line.to_string());
            r.watch_p99_ms = line
                .split_once(" p99 ")
                .and_then(|(_, v)| v.split_whitespace().next())
                .and_then(duration_ms);
        } else if line.starts_with("server CPU for the publish")
            || line.starts_with("idle watcher, service side")
        {
            r.lines.push(line.to_string());
        }
    }
}

/// A `Duration` as Debug prints it (`12.5ms`, `950µs`, `1.2s`, `3ns`) in milliseconds.
pub fn duration_ms(s: &str) -> Option<f64> {
    let units = [
        ("ms", 1.0),
        ("µs", 1e-3),
        ("us", 1e-3),
        ("ns", 1e-6),
        ("s", 1e3),
    ];
    units.iter().find_map(|(u, f)| {
        s.strip_suffix(u)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let near = |s: &str, want: f64| {
            let got = duration_ms(s).unwrap();
            assert!((got - want).abs() < 1e-9, "{s}: {got} != {want}");
        };
        near("12.5ms", 12.5);
        near("950µs", 0.95);
        near("1.5s", 1500.0);
        near("3ns", 3e-6);
        assert_eq!(duration_ms("bogus"), None);
    }

    #[test]
    fn parses_the_printed_lines() {
        let text = "running 2 tests\n\
test config_reads_per_second_on_one_core ... config reads: 412345 in 5.001s = 82451/s wall (server: 1 worker thread); server CPU 4.10 s = 100572 reads per CPU-second\n\
ok\n\
test a_publish_reaches_1000_watchers ... server CPU for the publish and 1000 responses: 85 ms\n\
1000 watchers: p50 21.3ms p99 38.9ms max 40.2ms\n\
test memory_per_idle_watcher ... idle watcher, service side: 22312 bytes resident each (2000 parked long-polls, bare-socket clients)\n";
        let mut r = ControlReport::default();
        parse_into(text, &mut r);
        assert_eq!(r.reads_per_s, Some(82451.0));
        assert_eq!(r.reads_per_cpu_s, Some(100572.0));
        assert_eq!(r.watch_p99_ms, Some(38.9));
        assert_eq!(r.lines.len(), 4);
        assert!(r.lines[3].starts_with("idle watcher, service side: 22312 bytes"));
        assert!(r.lines[0].starts_with("config reads: 412345"));
        assert!(r.lines[1].starts_with("server CPU for the publish"));
    }
}
