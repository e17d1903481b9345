//! The build gate's runner and the code diff.
//!
//! A gate is a list of shell commands (tests, lint) run in the project's repository; the version becomes
//! releasable when all of them exit 0. They run behind [`GateRunner`], so the jobs service's `furrow worker`
//! can take them over later; until then [`LocalRunner`] runs them in the control process, on a thread of
//! their own (never on the async workers), at most [`MAX_GATES`] at a time, each command with a time limit
//! and its output captured to a file of which only the last [`MAX_LOG`] bytes are kept.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::model::CommandRun;

/// Output kept per command.
pub const MAX_LOG: u64 = 64 * 1024;
/// Gates running at once on one control node.
pub const MAX_GATES: usize = 4;
/// Bytes of a code diff shown.
pub const MAX_DIFF: u64 = 256 * 1024;

/// One gate run to do.
#[derive(Clone, Debug)]
pub struct GateJob {
    /// The project.
    pub project: String,
    /// The version.
    pub version: String,
    /// Its source revision.
    pub revision: String,
    /// Where to run (the repository; the temp dir when the project has none).
    pub dir: PathBuf,
    /// The commands.
    pub commands: Vec<String>,
    /// Limit per command.
    pub timeout: Duration,
}

/// Runs gate jobs. Blocking: called on a thread of its own.
pub trait GateRunner: Send + Sync {
    /// Its name, recorded with the run.
    fn name(&self) -> &str;
    /// Runs the commands in order, stopping at the first failure.
    fn run(&self, job: &GateJob) -> Vec<CommandRun>;
}

/// Runs gates as child processes of the control service.
pub struct LocalRunner;

impl GateRunner for LocalRunner {
    fn name(&self) -> &str {
        "local"
    }

    fn run(&self, job: &GateJob) -> Vec<CommandRun> {
        let mut out = Vec::new();
        for (i, cmd) in job.commands.iter().enumerate() {
            let log = std::env::temp_dir().join(format!(
                "furrow-gate-{}-{}-{}-{i}.log",
                std::process::id(),
                job.project,
                job.version
            ));
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(cmd)
                .current_dir(&job.dir)
                .env("FURROW_PROJECT", &job.project)
                .env("FURROW_VERSION", &job.version)
                .env("FURROW_REVISION", &job.revision);
            let r = run_captured(c, &log, job.timeout, MAX_LOG);
            let _ = std::fs::remove_file(&log);
            let ok = r.exit == Some(0);
            out.push(CommandRun {
                command: cmd.clone(),
                ..r
            });
            if !ok {
                break;
            }
        }
        out
    }
}

/// Runs a command with its output in `log` (in its own process group, killed as a whole at `timeout`);
/// returns its exit code, duration and the last `keep` bytes of output.
pub fn run_captured(mut c: Command, log: &Path, timeout: Duration, keep: u64) -> CommandRun {
    use std::os::unix::process::CommandExt as _;
    let started = Instant::now();
    let mut run = CommandRun::default();
    let file = match std::fs::File::create(log) {
        Ok(f) => f,
        Err(e) => {
            run.log = format!("cannot create the log file {}: {e}", log.display());
            return run;
        }
    };
    let (Ok(out), Ok(err)) = (file.try_clone(), file.try_clone()) else {
        run.log = "cannot share the log file".into();
        return run;
    };
    c.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            run.log = format!("cannot start: {e}");
            return run;
        }
    };
    let mut timed_out = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                run.exit = status.code();
                break;
            }
            Ok(None) if started.elapsed() >= timeout => {
                // The whole group: a shell's children (test runners) must not outlive the gate.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                run.log = format!("wait: {e}");
                return run;
            }
        }
    }
    run.ms = started.elapsed().as_millis() as u64;
    let (text, truncated) = tail(log, keep);
    run.log = text;
    run.truncated = truncated;
    if timed_out {
        run.log
            .push_str(&format!("\n[killed after {} ms]", timeout.as_millis()));
    }
    run
}

/// The last `keep` bytes of a file, as text, and whether the file was longer.
pub fn tail(path: &Path, keep: u64) -> (String, bool) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (String::new(), false);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(keep);
    if f.seek(SeekFrom::Start(from)).is_err() {
        return (String::new(), false);
    }
    let mut buf = Vec::with_capacity(keep.min(len) as usize);
    let _ = f.take(keep).read_to_end(&mut buf);
    (String::from_utf8_lossy(&buf).into_owned(), from > 0)
}

/// The code diff between two revisions of a repository: `git diff --stat` then the patch, at most
/// [`MAX_DIFF`] bytes (truncated: true when cut). Revisions are checked by the caller.
pub fn git_diff(repo: &Path, from: &str, to: &str) -> Result<(String, bool), String> {
    let log = std::env::temp_dir().join(format!(
        "furrow-diff-{}-{}.log",
        std::process::id(),
        DIFFS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut c = Command::new("git");
    c.arg("-C").arg(repo).args([
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--stat",
        "--patch",
        from,
        to,
        "--",
    ]);
    let r = run_captured(c, &log, Duration::from_secs(10), u64::MAX);
    let _ = std::fs::remove_file(&log);
    if r.exit != Some(0) {
        return Err(format!("git diff {from} {to}: {}", r.log.trim()));
    }
    let mut text = r.log;
    let truncated = text.len() as u64 > MAX_DIFF;
    if truncated {
        let mut cut = MAX_DIFF as usize;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Ok((text, truncated))
}

static DIFFS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cmds: &[&str], timeout_ms: u64) -> GateJob {
        GateJob {
            project: "p".into(),
            version: "v".into(),
            revision: "abc".into(),
            dir: std::env::temp_dir(),
            commands: cmds.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn runs_in_order_and_stops_at_the_first_failure() {
        let r = LocalRunner.run(&job(
            &[
                "echo rev=$FURROW_REVISION",
                "echo oops >&2; exit 3",
                "echo never",
            ],
            5_000,
        ));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].exit, Some(0));
        assert_eq!(r[0].log.trim(), "rev=abc");
        assert_eq!(r[1].exit, Some(3));
        assert_eq!(r[1].log.trim(), "oops");
    }

    #[test]
    fn logs_are_bounded_and_time_limits_kill() {
        let r = LocalRunner.run(&job(&["yes x | head -c 200000"], 5_000));
        assert_eq!(r[0].exit, Some(0));
        assert!(r[0].truncated);
        assert_eq!(r[0].log.len() as u64, MAX_LOG);
        let r = LocalRunner.run(&job(&["sleep 30"], 200));
        assert_eq!(r[0].exit, None);
        assert!(r[0].log.contains("killed after 200 ms"), "{}", r[0].log);
        assert!(r[0].ms < 10_000);
    }
}
