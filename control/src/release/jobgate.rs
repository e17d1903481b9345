//! The build gate as a job on a `furrow worker` (the jobs service), when one is live.
//!
//! The gate's commands become one `shell` item of the job `release-gate-PROJECT` (in the environment of
//! the project's first stage, owned by the project's application): a script that sets `FURROW_PROJECT`,
//! `FURROW_VERSION`, `FURROW_REVISION`, `cd`s into the project's repository (on the worker's host) and runs the commands in order, stopping at the first failure, with
//! a marker line around each (`@@furrow-gate I start MS` / `@@furrow-gate I exit CODE MS`). The item's log
//! tail (64 KiB, the jobs service's own bound) is split back into the commands' logs and exit codes,
//! which are kept with the version like the local runner's. The job's time limit is the gate's per-command
//! limit times the number of commands (at most a day); the control node polls the run every 200 ms.
//! When no live worker runs `shell` items (or the jobs runtime is absent), the local runner is used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::gate::{GateJob, MAX_LOG};
use super::model::CommandRun;
use crate::center::{Center, system_user};

/// The prefix of the marker lines the gate script prints.
const MARK: &str = "@@furrow-gate ";

/// A live, not draining, worker that runs shell items, if any: its id.
pub fn live_shell_worker(c: &Center) -> Option<String> {
    let jobs = c.jobs.get()?;
    let workers = jobs.workers().ok()?;
    workers
        .iter()
        .find(|w| {
            w["live"] == true
                && w["draining"] == false
                && w["kinds"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "shell"))
        })
        .and_then(|w| w["id"].as_str().map(str::to_string))
}

/// Quotes a string for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script one item runs. Each command's stderr goes into stdout (`2>&1`): the worker reads
/// the two from separate pipes, so a command's stderr could otherwise arrive after its end marker
/// and be lost from its log.
pub fn script(job: &GateJob) -> String {
    let mut s = format!(
        "export FURROW_PROJECT={} FURROW_VERSION={} FURROW_REVISION={}\ncd {} || {{ echo 'cannot enter the repository on this worker'; exit 97; }}\n",
        sh_quote(&job.project),
        sh_quote(&job.version),
        sh_quote(&job.revision),
        sh_quote(&job.dir.to_string_lossy())
    );
    for (i, cmd) in job.commands.iter().enumerate() {
        s.push_str(&format!(
            "printf '\\n{MARK}{i} start %s\\n' \"$(date +%s%3N)\"\nsh -c {} 2>&1\nrc=$?\nprintf '\\n{MARK}{i} exit %s %s\\n' \"$rc\" \"$(date +%s%3N)\"\n[ \"$rc\" -eq 0 ] || exit \"$rc\"\n",
            sh_quote(cmd)
        ));
    }
    s
}

/// Splits an item's log into the commands' runs (those that started; a command whose end marker is
/// missing — killed, or its start cut from the log tail — has no exit code).
pub fn split_log(job: &GateJob, log: &str, truncated: bool) -> Vec<CommandRun> {
    let mut out: Vec<CommandRun> = Vec::new();
    let mut started: Option<(usize, u64)> = None;
    let mut text = String::new();
    let cut = |t: &str| -> (String, bool) {
        // Without the marker's own newlines; ending in one newline, like the local runner's logs.
        let t = t.trim_matches('\n').to_string();
        let t = if t.is_empty() { t } else { t + "\n" };
        if t.len() as u64 <= MAX_LOG {
            return (t, false);
        }
        let mut from = t.len() - MAX_LOG as usize;
        while !t.is_char_boundary(from) {
            from += 1;
        }
        (t[from..].to_string(), true)
    };
    for line in log.split('\n') {
        let Some(rest) = line.strip_prefix(MARK) else {
            text.push_str(line);
            text.push('\n');
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let i: Option<usize> = f.first().and_then(|x| x.parse().ok());
        match (i, f.get(1).copied()) {
            (Some(i), Some("start")) if i < job.commands.len() => {
                text.clear();
                started = Some((i, f.get(2).and_then(|x| x.parse().ok()).unwrap_or(0)));
            }
            (Some(i), Some("exit")) if started.is_some_and(|(s, _)| s == i) => {
                let t0 = started.take().map(|(_, t)| t).unwrap_or(0);
                let t1: u64 = f.get(3).and_then(|x| x.parse().ok()).unwrap_or(t0);
                let (log, cut_here) = cut(&text);
                out.push(CommandRun {
                    command: job.commands[i].clone(),
                    exit: f.get(2).and_then(|x| x.parse().ok()),
                    ms: t1.saturating_sub(t0),
                    log,
                    truncated: cut_here || (truncated && out.is_empty()),
                });
                text.clear();
            }
            _ => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    if let Some((i, _)) = started {
        let (log, cut_here) = cut(&text);
        out.push(CommandRun {
            command: job.commands[i].clone(),
            exit: None,
            ms: 0,
            log,
            truncated: cut_here || (truncated && out.is_empty()),
        });
    }
    out
}

/// Runs the gate as a job; Err when it could not be handed to the jobs service (the caller then runs it
/// locally). The commands' runs, and the worker that ran them.
pub fn run(c: &Arc<Center>, job: &GateJob) -> Result<(Vec<CommandRun>, String), String> {
    let jobs = c.jobs.get().cloned().ok_or("no jobs runtime")?;
    let (app, env) = c
        .read(|st| {
            let p = st.release.projects.get(&job.project)?;
            let env = p.stages.first().map(|s| s.env().to_string())?;
            Some((p.app.clone(), env))
        })
        .map_err(|e| e.to_string())?
        .ok_or("the project has no stage (no environment for its gate job)")?;
    let n = job.commands.len().max(1) as u64;
    let limit_ms = (job.timeout.as_millis() as u64)
        .saturating_mul(n)
        .clamp(1_000, 86_400_000);
    let name = format!("release-gate-{}", job.project);
    let spec: crate::jobs::model::JobSpec = serde_json::from_value(json!({
        "app": app,
        "description": format!("build gate of release project {} (release management)", job.project),
        "kind": {"type": "shell", "command": script(job)},
        "timeout_ms": limit_ms,
    }))
    .map_err(|e| format!("gate job: {e}"))?;
    let sys = system_user();
    c.mutate(&sys, |tx| tx.put_job(&env, &name, spec.clone()))
        .map_err(|e| format!("gate job {env}/{name}: {e}"))?;
    let rec = c
        .mutate(&sys, |tx| {
            tx.job_action(
                &env,
                &name,
                "jobs.trigger",
                json!({"release_gate": format!("{}/{}", job.project, job.version)}),
            )
        })
        .map_err(|e| format!("gate job {env}/{name}: {e}"))?;
    let id = jobs.trigger(&rec).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_millis(limit_ms) + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let r: Json = jobs.run(&id).map_err(|e| e.to_string())?;
        let state = r["state"].as_str().unwrap_or("");
        if state != "running" && state != "pending" && !state.is_empty() {
            let item = &r["item_list"][0];
            let worker = item["worker"].as_str().unwrap_or("").to_string();
            let log = item["log"].as_str().unwrap_or("");
            let mut runs = split_log(job, log, log.contains("bytes dropped"));
            if runs.is_empty() {
                runs.push(CommandRun {
                    command: job.commands.first().cloned().unwrap_or_default(),
                    exit: None,
                    ms: 0,
                    log: format!("gate job run {id} ended {state}: {} {log}", r["detail"]),
                    truncated: false,
                });
            }
            return Ok((runs, format!("worker {worker} (job run {id})")));
        }
        if Instant::now() > deadline {
            let _ = jobs.stop(c, &id);
            return Ok((
                vec![CommandRun {
                    command: job.commands.first().cloned().unwrap_or_default(),
                    exit: None,
                    ms: limit_ms,
                    log: format!("gate job run {id} did not end within {limit_ms} ms; stopped"),
                    truncated: false,
                }],
                format!("jobs (run {id})"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cmds: &[&str]) -> GateJob {
        GateJob {
            project: "web".into(),
            version: "v1".into(),
            revision: String::new(),
            dir: std::env::temp_dir(),
            commands: cmds.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_script_runs_in_order_and_its_log_splits_back() {
        let j = job(&["echo one", "echo 'two'; exit 3", "echo never"]);
        let env = job(&["echo $FURROW_PROJECT $FURROW_VERSION"]);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(&env))
            .output()
            .unwrap();
        let runs = split_log(&env, &String::from_utf8_lossy(&out.stdout), false);
        assert_eq!(runs[0].log, "web v1\n");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(&j))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        let runs = split_log(&j, &String::from_utf8_lossy(&out.stdout), false);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!((runs[0].exit, runs[0].log.as_str()), (Some(0), "one\n"));
        assert_eq!((runs[1].exit, runs[1].log.as_str()), (Some(3), "two\n"));
        assert_eq!(runs[1].command, "echo 'two'; exit 3");
        // A command killed before its end marker: no exit code.
        let runs = split_log(&j, "@@furrow-gate 0 start 5\npartial\n", false);
        assert_eq!((runs[0].exit, runs[0].log.as_str()), (None, "partial\n"));
        // Markers for commands that do not exist are plain output.
        assert!(split_log(&j, "@@furrow-gate 9 start 1\n", false).is_empty());
    }
}
