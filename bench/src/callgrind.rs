//! `--callgrind`: Furrow's user-space instructions per request, counted by valgrind's callgrind.
//!
//! CPU seconds per request (the report's figure) move by ±20 % between runs on a shared 2-vCPU VM:
//! the kernel's share depends on how many wake-ups a load happens to cause. Instruction counts of
//! the proxy's own code do not: callgrind simulates the process and counts every instruction it
//! executes in user space, the same for the same binary and inputs whatever else the machine is
//! doing. This is the figure to compare two code paths of one process (a sharded point select
//! against an unsharded one, which make the same system calls) or two builds of Furrow.
//!
//! How: Furrow starts under `valgrind --tool=callgrind --instr-atstart=no` (no simulation while it
//! starts); around each of its loads the harness switches instrumentation on, zeroes the counters,
//! runs the load and reads the event totals with `callgrind_control -e Ir`, summed over threads.
//! Kernel time is not included, and the timings of such a run are meaningless (the simulated
//! process runs ~50× slower), so a `--callgrind` run writes only `docs/profiles/instructions.md`,
//! never the report. Use it with a bounded load, e.g.
//! `bench -- sharding --callgrind --targets furrow --max-requests 20000 --duration 60`.
//! `FURROW_CALLGRIND_KEEP=DIR` keeps each load's dump in DIR (for `callgrind_annotate --tree=caller`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The counts of this run, in load order.
static COUNTS: Mutex<Vec<Count>> = Mutex::new(Vec::new());

/// Keeps one load's count for [`markdown`].
pub fn record(c: Count) {
    COUNTS.lock().unwrap_or_else(|e| e.into_inner()).push(c);
}

/// The counts recorded so far.
pub fn take() -> Vec<Count> {
    let _ = std::fs::remove_dir_all(out_dir());
    std::mem::take(&mut *COUNTS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The valgrind command line that runs `bin` (a script that `exec`s it, so the pid is Furrow's).
pub fn wrapper(bin: &Path, dir: &Path) -> Result<PathBuf, String> {
    if crate::tools::find("valgrind").is_none() || crate::tools::find("callgrind_control").is_none()
    {
        return Err(
            "--callgrind needs valgrind and callgrind_control (apt-get install valgrind)".into(),
        );
    }
    let script = dir.join("furrow-callgrind.sh");
    std::fs::create_dir_all(out_dir()).map_err(|e| e.to_string())?;
    let out = out_dir().join("callgrind.out.%p");
    // FURROW_CALLGRIND_ARGS: more valgrind options, e.g. `--cache-sim=yes` for simulated cache
    // misses per function (kept dumps only: the report counts instructions).
    let extra = std::env::var("FURROW_CALLGRIND_ARGS").unwrap_or_default();
    let text = format!(
        "#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no {extra} --callgrind-out-file={} {} \"$@\"\n",
        out.display(),
        bin.display()
    );
    std::fs::write(&script, text).map_err(|e| format!("writing {}: {e}", script.display()))?;
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("chmod +x {} failed", script.display()));
    }
    Ok(script)
}

fn control(pid: u32, args: &[&str]) -> Result<String, String> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "callgrind_control {} {pid}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Switches counting on for `pid` from zero.
pub fn start(pid: u32) -> Result<(), String> {
    control(pid, &["-i", "on"])?;
    control(pid, &["-z"])?;
    Ok(())
}

/// Switches counting off and returns the instructions counted since [`start`] (all threads)
/// and the top functions by self instructions (from a dump of the counts, `callgrind_annotate`).
pub fn stop(pid: u32) -> Result<(u64, String), String> {
    let text = control(pid, &["-e", "Ir"])?;
    let total = total_ir(&text)
        .ok_or_else(|| format!("no Ir totals in callgrind_control output: {text}"))?;
    control(pid, &["--dump"])?;
    control(pid, &["-i", "off"])?;
    Ok((total, top_functions(&out_dir()).unwrap_or_default()))
}

/// Where callgrind writes its files in this harness run (removed with the last count).
fn out_dir() -> PathBuf {
    std::env::temp_dir().join(format!("furrow-callgrind-{}", std::process::id()))
}

/// The newest dump under `dir`, annotated: the functions with the most self instructions.
fn top_functions(dir: &Path) -> Option<String> {
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("callgrind.out.")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()?
        .1;
    let out = Command::new("callgrind_annotate")
        .arg("--threshold=90")
        .arg(&newest)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The function table follows the header; keep its first rows.
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("file:function"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .take(25)
        .collect();
    // FURROW_CALLGRIND_KEEP=DIR keeps every dump there (for `callgrind_annotate --tree=caller`).
    match std::env::var_os("FURROW_CALLGRIND_KEEP") {
        Some(keep) => {
            let _ = std::fs::create_dir_all(&keep);
            let name = newest.file_name().unwrap_or_default();
            let _ = std::fs::rename(&newest, Path::new(&keep).join(name));
        }
        None => {
            let _ = std::fs::remove_file(&newest);
        }
    }
    (!rows.is_empty()).then(|| rows.join("\n"))
}

/// Sums the per-thread counters of `callgrind_control -e Ir` output (lines `Th N  COUNT` after a
/// `Totals:` header; counts may carry thousands separators).
fn total_ir(text: &str) -> Option<u64> {
    let mut sum = 0u64;
    let mut seen = false;
    for line in text.lines() {
        let l = line.trim();
        let Some(rest) = l.strip_prefix("Th") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let _thread = parts.next()?;
        let count: String = parts
            .next()?
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        sum += count.parse::<u64>().ok()?;
        seen = true;
    }
    seen.then_some(sum)
}

/// One load's count.
pub struct Count {
    /// The load.
    pub load: String,
    /// The target (a Furrow listener).
    pub target: String,
    /// Requests the load completed.
    pub requests: u64,
    /// Instructions counted during the load.
    pub instructions: u64,
    /// The top functions by self instructions (`callgrind_annotate` rows).
    pub top: String,
}

/// The markdown written to `docs/profiles/instructions.md`.
pub fn markdown(counts: &[Count], command: &str, date: &str) -> String {
    let mut s = String::from("# Furrow user-space instructions per request (callgrind)\n\n");
    let _ = writeln!(
        s,
        "date: {date}  \ncommand: `{command}`\n\nCounted by valgrind's callgrind over every Furrow thread \
         while the load ran (see `bench/src/callgrind.rs`); kernel time is not included. The same binary \
         and load give the same counts within a few per cent whatever else the machine does.\n"
    );
    s.push_str("| load | target | requests | instructions / request |\n|---|---|---:|---:|\n");
    for c in counts {
        let per = if c.requests > 0 {
            format!("{:.0}", c.instructions as f64 / c.requests as f64)
        } else {
            "–".into()
        };
        let _ = writeln!(s, "| {} | {} | {} | {per} |", c.load, c.target, c.requests);
    }
    for c in counts.iter().filter(|c| !c.top.is_empty()) {
        let _ = writeln!(
            s,
            "\n## {} ({})\n\nSelf instructions by function over the whole load \
             (`callgrind_annotate`):\n\n```\n{}\n```",
            c.load, c.target, c.top
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_summed_over_threads() {
        let out = "PID 4242: target/release/furrow proxy --config x\n\
                   Totals:                Ir\n Th 1            12,345\n Th 2        1,000,000\n";
        assert_eq!(total_ir(out), Some(1_012_345));
        assert_eq!(total_ir("PID 1: x\nno counters\n"), None);
    }
}
