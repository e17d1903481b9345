//! `bench micro`: runs the criterion benches of the hot pure code and collects their estimates.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use crate::report::{Machine, MicroBench, MicroReport, Report, now};
use crate::{Opts, workspace_root};

/// Packages whose benches are run.
pub const PACKAGES: &[&str] = &["codec", "router"];

/// The criterion bench targets of [`PACKAGES`] (named: `--benches` would also run the libraries'
/// libtest harness in bench mode, which rejects criterion's options).
pub const BENCHES: &[&str] = &["resp", "mysql", "routing"];

/// Runs `cargo bench` for [`PACKAGES`] and reads every estimate written during the run.
pub fn run(opts: &Opts, report: &mut Report) -> Result<(), String> {
    let root = workspace_root();
    let started = SystemTime::now();
    let mut args: Vec<String> = vec!["bench".into()];
    for p in PACKAGES {
        args.extend(["-p".into(), (*p).into()]);
    }
    for b in BENCHES {
        args.extend(["--bench".into(), (*b).into()]);
    }
    args.extend([
        "--".into(),
        "--warm-up-time".into(),
        "1".into(),
        "--measurement-time".into(),
        opts.micro_time.to_string(),
    ]);
    if !opts.micro_full {
        // criterion's quick mode: stops sampling once the estimate is stable (within 5 %).
        args.push("--quick".into());
    }
    let command = format!("cargo {}", args.join(" "));
    eprintln!("bench: {command}");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(&args)
        .current_dir(&root)
        .status()
        .map_err(|e| format!("running cargo bench: {e}"))?;
    if !status.success() {
        eprintln!("bench: cargo bench exited with {status}; collecting what it measured");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let mut benches = Vec::new();
    collect(&target.join("criterion"), started, &mut benches);
    benches.sort_by(|a, b| a.id.cmp(&b.id));
    if benches.is_empty() {
        return Err("no criterion estimates were written".into());
    }
    report.micro = Some(MicroReport {
        date: now(),
        machine: Machine::detect(),
        command,
        benches,
    });
    Ok(())
}

/// Walks `dir` for `new/benchmark.json` + `new/estimates.json` pairs written after `since`.
fn collect(dir: &Path, since: SystemTime, out: &mut Vec<MicroBench>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().is_some_and(|n| n == "new") {
            let fresh = std::fs::metadata(p.join("estimates.json"))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if fresh
                && let (Ok(b), Ok(est)) = (
                    std::fs::read_to_string(p.join("benchmark.json")),
                    std::fs::read_to_string(p.join("estimates.json")),
                )
                && let Some(m) = parse_estimates(&b, &est)
            {
                out.push(m);
            }
        } else if p.file_name().is_none_or(|n| n != "base" && n != "report") {
            collect(&p, since, out);
        }
    }
}

/// Builds one entry from criterion's `benchmark.json` and `estimates.json`.
pub fn parse_estimates(benchmark: &str, estimates: &str) -> Option<MicroBench> {
    let b: serde_json::Value = serde_json::from_str(benchmark).ok()?;
    let e: serde_json::Value = serde_json::from_str(estimates).ok()?;
    let id = b.get("full_id")?.as_str()?.to_string();
    let mean_ns = e.get("mean")?.get("point_estimate")?.as_f64()?;
    let median_ns = e.get("median")?.get("point_estimate")?.as_f64()?;
    let throughput = b.get("throughput").and_then(|t| {
        let secs = mean_ns / 1e9;
        if let Some(n) = t.get("Bytes").and_then(|v| v.as_f64()) {
            Some(format!("{:.0} MiB/s", n / secs / (1024.0 * 1024.0)))
        } else {
            t.get("Elements")
                .and_then(|v| v.as_f64())
                .map(|n| format!("{:.2} M elem/s", n / secs / 1e6))
        }
    });
    Some(MicroBench {
        id,
        mean_ns,
        median_ns,
        throughput,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_criterion_files() {
        let b = r#"{"group_id":"resp","function_id":"decode","value_str":"get","throughput":{"Bytes":1048576},"full_id":"resp/decode/get","directory_name":"resp/decode/get"}"#;
        let e = r#"{"mean":{"confidence_interval":{},"point_estimate":1000000.0,"standard_error":1.0},"median":{"point_estimate":990000.0}}"#;
        let m = parse_estimates(b, e).unwrap();
        assert_eq!(m.id, "resp/decode/get");
        assert_eq!(m.mean_ns, 1e6);
        assert_eq!(m.median_ns, 990_000.0);
        assert_eq!(m.throughput.as_deref(), Some("1000 MiB/s"));
        let b2 = r#"{"full_id":"x","throughput":null}"#;
        assert_eq!(parse_estimates(b2, e).unwrap().throughput, None);
        assert!(parse_estimates("{}", e).is_none());
    }
}
