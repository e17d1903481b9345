//! `furrow agent`: the deployment agent on a host.
//!
//! It registers its host (with labels: `group=...` places it in a batch group), then long-polls its
//! assignments. For each one it fetches the artifact (checked against its SHA-256), runs the project's hooks —
//! stop, install, start, then health until it passes or times out (a restart skips the install) — and
//! reports `working`, then `done` or `failed` with the hook's output tail. Meanwhile it probes every project
//! it runs that has a probe and sends the samples (requests, errors, latencies) for canary analysis.
//!
//! Idempotent and resumable: what it installed is recorded in `DIR/state.json` after each assignment; an
//! assignment for the version already installed only re-runs the health hook (and the full sequence when
//! that fails). Nothing else is remembered: after an agent restart the control service still lists the
//! unfinished assignment and the agent runs it again from the start (hooks must be idempotent); after a
//! control restart the agent's polls fail, it retries with backoff and goes on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::canary::{MAX_LATENCIES, Samples};
use super::model::{Hooks, Probe};
use crate::client::{ApiClient, ClientError, encode};

/// `furrow agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The control service.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// The API token of a user with the role `agent` (default: $FURROW_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// The host name this agent serves (as listed in the stages' hosts).
    #[arg(long)]
    pub host: String,
    /// Its working directory: artifacts, project directories, state.
    #[arg(long)]
    pub dir: PathBuf,
    /// A label, `k=v` (repeatable); `group=NAME` puts the host in a batch group.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// A variable for hooks (`FURROW_VAR_K`) and probe URLs (`${K}`), `K=V` (repeatable).
    #[arg(long = "var")]
    pub vars: Vec<String>,
    /// Long-poll timeout, ms.
    #[arg(long, default_value_t = 30_000)]
    pub poll_ms: u64,
}

/// What the agent installed, per project (`DIR/state.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LocalState {
    /// Project → installed version and its probe.
    pub projects: BTreeMap<String, Installed>,
}

/// One installed project.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Installed {
    /// The version.
    pub version: String,
    /// Its probe, if the project has one.
    pub probe: Option<Probe>,
}

/// One assignment, as the service lists it.
#[derive(Clone, Debug, Deserialize)]
struct Assignment {
    deployment: u64,
    project: String,
    version: String,
    #[serde(default)]
    restart: bool,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    hooks: Hooks,
    #[serde(default)]
    probe: Option<Probe>,
}

fn pairs(list: &[String], what: &str) -> Result<BTreeMap<String, String>, String> {
    list.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("{what} {kv:?} is not K=V"))
        })
        .collect()
}

struct Agent {
    api: ApiClient,
    host: String,
    dir: PathBuf,
    vars: BTreeMap<String, String>,
    state: Mutex<LocalState>,
}

/// Runs the agent until Ctrl-C / SIGTERM.
pub fn run(args: AgentArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("furrow agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: AgentArgs) -> Result<(), String> {
    crate::model::check_name("host", &args.host).map_err(|e| e.message)?;
    let labels = pairs(&args.labels, "label")?;
    let vars = pairs(&args.vars, "var")?;
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("FURROW_TOKEN").ok());
    let state = std::fs::read(args.dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let agent = Arc::new(Agent {
        api: ApiClient::new(&args.server, token.as_deref()),
        host: args.host.clone(),
        dir: args.dir.clone(),
        vars,
        state: Mutex::new(state),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let prober = tokio::spawn(probe_loop(agent.clone()));
        tokio::select! {
            r = main_loop(agent.clone(), labels, args.poll_ms) => r?,
            _ = shutdown() => {}
        }
        prober.abort();
        Ok(())
    })
}

async fn shutdown() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn main_loop(
    agent: Arc<Agent>,
    labels: BTreeMap<String, String>,
    poll_ms: u64,
) -> Result<(), String> {
    let mut backoff = Duration::from_millis(100);
    let mut registered = false;
    loop {
        if !registered {
            let body = json!({"host": agent.host, "labels": labels});
            match agent
                .api
                .call("POST", "/v1/release/agents", Some(&body))
                .await
            {
                Ok(_) => {
                    registered = true;
                    backoff = Duration::from_millis(100);
                    tracing::info!(host = agent.host, "agent registered");
                }
                Err(ClientError::Api { status, error })
                    if (400..500).contains(&status) && status != 404 =>
                {
                    return Err(format!("registration refused: {error}"));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "registration failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            continue;
        }
        let path = format!(
            "/v1/release/agents/{}/assignments?timeout={poll_ms}",
            encode(&agent.host)
        );
        let list = match agent
            .api
            .call_status("GET", &path, None, Duration::from_millis(poll_ms + 5_000))
            .await
        {
            Ok((_, j)) => {
                backoff = Duration::from_millis(100);
                j
            }
            Err(ClientError::Api { status: 404, .. }) => {
                registered = false;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "assignments poll failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let list: Vec<Assignment> = serde_json::from_value(list).unwrap_or_default();
        for a in list {
            execute(&agent, a).await;
        }
    }
}

async fn report(agent: &Agent, a: &Assignment, phase: &str, message: &str) {
    let body = json!({"deployment": a.deployment, "version": a.version, "phase": phase, "message": message});
    let path = format!("/v1/release/agents/{}/report", encode(&agent.host));
    // Retried a few times: a report lost to a control restart is re-sent by running the assignment again.
    for i in 0..20u64 {
        match agent.api.call("POST", &path, Some(&body)).await {
            Ok(_) => return,
            Err(ClientError::Api { status, .. }) if status < 500 => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100 * (i + 1).min(10))).await,
        }
    }
}

async fn execute(agent: &Arc<Agent>, a: Assignment) {
    tracing::info!(
        project = a.project,
        version = a.version,
        deployment = a.deployment,
        "assignment"
    );
    report(agent, &a, "working", "started").await;
    let result = run_assignment(agent, &a).await;
    match result {
        Ok(msg) => {
            if let Ok(mut st) = agent.state.lock() {
                st.projects.insert(
                    a.project.clone(),
                    Installed {
                        version: a.version.clone(),
                        probe: a.probe.clone(),
                    },
                );
                let _ = save_state(&agent.dir, &st);
            }
            report(agent, &a, "done", &msg).await;
        }
        Err(msg) => {
            tracing::warn!(
                project = a.project,
                version = a.version,
                error = msg,
                "assignment failed"
            );
            report(agent, &a, "failed", &msg).await;
        }
    }
}

fn save_state(dir: &Path, st: &LocalState) -> std::io::Result<()> {
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(st).unwrap_or_default())?;
    std::fs::rename(tmp, dir.join("state.json"))
}

async fn run_assignment(agent: &Arc<Agent>, a: &Assignment) -> Result<String, String> {
    let pdir = agent.dir.join(&a.project);
    let vdir = pdir.join("versions").join(&a.version);
    std::fs::create_dir_all(&vdir).map_err(|e| format!("{}: {e}", vdir.display()))?;
    let artifact = vdir.join("artifact");
    let installed = agent
        .state
        .lock()
        .ok()
        .and_then(|s| s.projects.get(&a.project).map(|i| i.version.clone()));
    if !a.restart && installed.as_deref() == Some(a.version.as_str()) {
        // Already there (a repeated assignment after a restart of either side): just check health.
        if hook(agent, a, &pdir, &artifact, "health").await.is_ok() {
            return Ok(format!("{} already installed and healthy", a.version));
        }
    }
    if !a.restart {
        fetch(agent, a, &artifact).await?;
    }
    hook(agent, a, &pdir, &artifact, "stop").await?;
    if !a.restart {
        hook(agent, a, &pdir, &artifact, "install").await?;
    }
    hook(agent, a, &pdir, &artifact, "start").await?;
    hook(agent, a, &pdir, &artifact, "health").await?;
    Ok(format!(
        "{} {}",
        a.version,
        if a.restart { "restarted" } else { "installed" }
    ))
}

async fn fetch(agent: &Agent, a: &Assignment, to: &Path) -> Result<(), String> {
    if let (Some(want), Ok(have)) = (&a.sha256, std::fs::read(to))
        && &super::engine::hex_sha256(&have) == want
    {
        return Ok(());
    }
    let path = format!(
        "/v1/release/projects/{}/versions/{}/artifact",
        encode(&a.project),
        encode(&a.version)
    );
    let resp = crate::http::request(
        &agent.api.server,
        "GET",
        &path,
        agent.api.token.as_deref(),
        None,
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| format!("fetching the artifact: {e}"))?;
    if resp.status != 200 {
        return Err(format!(
            "fetching the artifact: HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    if let Some(want) = &a.sha256
        && &super::engine::hex_sha256(&resp.body) != want
    {
        return Err("the artifact's SHA-256 does not match".into());
    }
    let tmp = to.with_extension("part");
    // Agent files are small and local; the agent's runtime has nothing latency-critical to block.
    std::fs::write(&tmp, &resp.body).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))
}

/// Runs one hook (`sh -c`) in the project directory; the health hook is retried until it passes or its
/// timeout. Returns the output's tail on failure.
async fn hook(
    agent: &Arc<Agent>,
    a: &Assignment,
    pdir: &Path,
    artifact: &Path,
    which: &str,
) -> Result<(), String> {
    let cmd = match which {
        "stop" => &a.hooks.stop,
        "install" => &a.hooks.install,
        "start" => &a.hooks.start,
        _ => &a.hooks.health,
    }
    .clone();
    if cmd.is_empty() {
        return Ok(());
    }
    let health_limit = Duration::from_millis(a.hooks.health_timeout_ms.unwrap_or(10_000));
    let started = Instant::now();
    let mut n = 0u32;
    loop {
        n += 1;
        let (agent2, pdir2, artifact2, cmd2, a2) = (
            agent.clone(),
            pdir.to_path_buf(),
            artifact.to_path_buf(),
            cmd.clone(),
            (a.project.clone(), a.version.clone()),
        );
        let log = pdir.join(format!("hook-{which}.log"));
        let r = tokio::task::spawn_blocking(move || {
            let mut c = std::process::Command::new("sh");
            c.arg("-c")
                .arg(&cmd2)
                .current_dir(&pdir2)
                .env("FURROW_ARTIFACT", &artifact2)
                .env("FURROW_PROJECT", &a2.0)
                .env("FURROW_VERSION", &a2.1)
                .env("FURROW_DIR", &pdir2)
                .env("FURROW_HOST", &agent2.host);
            for (k, v) in &agent2.vars {
                c.env(format!("FURROW_VAR_{k}"), v);
            }
            super::gate::run_captured(c, &log, Duration::from_secs(120), 4096)
        })
        .await
        .map_err(|e| format!("{which}: {e}"))?;
        if r.exit == Some(0) {
            return Ok(());
        }
        if which != "health" || started.elapsed() >= health_limit {
            return Err(format!(
                "{which} hook failed (exit {:?}, attempt {n}): {}",
                r.exit,
                r.log.trim()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expand(url: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = url.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// Probes every installed project that has a probe and sends the samples every 500 ms.
async fn probe_loop(agent: Arc<Agent>) {
    let mut pending: HashMap<(String, String), Samples> = HashMap::new();
    let mut last_flush = Instant::now();
    loop {
        let targets: Vec<(String, String, Probe)> = agent
            .state
            .lock()
            .map(|s| {
                s.projects
                    .iter()
                    .filter_map(|(p, i)| {
                        i.probe.clone().map(|pr| (p.clone(), i.version.clone(), pr))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let interval = targets
            .iter()
            .map(|t| t.2.interval_ms.unwrap_or(50))
            .min()
            .unwrap_or(200);
        for (project, version, probe) in targets {
            let Some((server, path)) = super::ops::split_url(&expand(&probe.url, &agent.vars))
            else {
                continue;
            };
            let t = Instant::now();
            let r = crate::http::request(&server, "GET", &path, None, None, Duration::from_secs(1))
                .await;
            let us = t.elapsed().as_micros() as u64;
            let s = pending.entry((project, version)).or_default();
            s.requests += 1;
            match r {
                Ok(resp) if resp.status < 500 => {}
                _ => s.errors += 1,
            }
            if s.latencies_us.len() < MAX_LATENCIES {
                s.latencies_us.push(us);
            }
        }
        if last_flush.elapsed() >= Duration::from_millis(500) && !pending.is_empty() {
            last_flush = Instant::now();
            let path = format!("/v1/release/agents/{}/samples", encode(&agent.host));
            for ((project, version), s) in pending.drain() {
                let body: Json = json!({"project": project, "version": version, "requests": s.requests,
                    "errors": s.errors, "latencies_us": s.latencies_us});
                let _ = agent.api.call("POST", &path, Some(&body)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(interval)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_expand_in_probe_urls() {
        let vars: BTreeMap<String, String> = [("PORT".to_string(), "8080".to_string())].into();
        assert_eq!(
            expand("http://127.0.0.1:${PORT}/x", &vars),
            "http://127.0.0.1:8080/x"
        );
        assert!(pairs(&["a=b".into(), "c".into()], "label").is_err());
    }
}
