//! The release service's HTTP routes under `/v1/release`, merged into the control router (same auth, error
//! bodies, metrics). `P` = `/v1/release/projects/{project}`; see `docs/release.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::canary::Samples;
use super::gate::{GateJob, MAX_GATES};
use super::model::*;
use super::ops::{AGENT_ENV, ProjectInput, VersionInput, check_revision, is_agent, level_on};
use crate::api::{Res, body, ok, qnum, user};
use crate::center::{Center, system_user};
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Level, User, now_ms};
use crate::state::State;

type C = AxState<Arc<Center>>;
type Q = Query<HashMap<String, String>>;

/// The most bytes of a file artifact served.
pub const MAX_ARTIFACT: u64 = 64 * 1024 * 1024;

/// The release routes (state: the center).
pub fn routes() -> Router<Arc<Center>> {
    let p = "/v1/release/projects/{project}";
    Router::new()
        .route("/v1/release/projects", get(list_projects))
        .route(p, get(get_project).put(put_project))
        .route(
            &format!("{p}/versions"),
            get(list_versions).post(add_version),
        )
        .route(&format!("{p}/versions/{{version}}"), get(get_version))
        .route(&format!("{p}/versions/{{version}}/gate"), post(run_gate))
        .route(&format!("{p}/versions/{{version}}/artifact"), get(artifact))
        .route(&format!("{p}/diff"), get(diff))
        .route(&format!("{p}/stages/{{stage}}/deploy"), post(deploy))
        .route("/v1/release/plans", post(plan))
        .route("/v1/release/deployments", get(list_deployments))
        .route("/v1/release/deployments/{id}", get(get_deployment))
        .route(
            "/v1/release/deployments/{id}/{action}",
            post(deployment_action),
        )
        .route("/v1/release/agents", get(list_agents).post(register_agent))
        .route(
            "/v1/release/agents/{host}/assignments",
            get(agent_assignments),
        )
        .route("/v1/release/agents/{host}/report", post(agent_report))
        .route("/v1/release/agents/{host}/samples", post(agent_samples))
}

fn project_readable(st: &State, u: &User, name: &str, stage: Option<&str>) -> Result<Project> {
    let p = st.release.projects.get(name).ok_or_else(|| {
        ControlError::not_found(format!("unknown project {name:?}")).with_field("project")
    })?;
    if !is_agent(u) && level_on(st, u, p, stage) < Level::Read {
        return Err(ControlError::forbidden(format!(
            "user {:?} cannot read release project {name:?}",
            u.name
        )));
    }
    Ok(p.clone())
}

async fn list_projects(AxState(c): C, h: HeaderMap) -> Res {
    let u = user(&c, &h)?;
    ok(c.read(|st| {
        st.release
            .projects
            .values()
            .filter(|p| level_on(st, &u, p, None) >= Level::Read)
            .map(|p| {
                let stages: BTreeMap<&str, Option<&str>> = p
                    .stages
                    .iter()
                    .map(|s| (s.name.as_str(), st.release.stage_version(&p.name, &s.name)))
                    .collect();
                json!({"project": p, "stages": stages})
            })
            .collect::<Vec<_>>()
    })?)
}

async fn get_project(AxState(c): C, h: HeaderMap, Path(name): Path<String>) -> Res {
    let u = user(&c, &h)?;
    ok(c.read(|st| {
        let p = project_readable(st, &u, &name, None)?;
        let stages: Vec<_> = p
            .stages
            .iter()
            .map(|s| {
                json!({
                    "stage": s.name,
                    "state": st.release.stages.get(&(name.clone(), s.name.clone())),
                    "active": st.release.active_on(&name, &s.name).map(|d| d.id),
                })
            })
            .collect();
        Ok::<_, ControlError>(json!({"project": p, "stages": stages}))
    })??)
}

async fn put_project(AxState(c): C, h: HeaderMap, Path(name): Path<String>, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let input: ProjectInput = body(&b)?;
    ok(c.write(u, move |tx| tx.put_project(&name, input.clone()))
        .await?)
}

async fn list_versions(AxState(c): C, h: HeaderMap, Path(name): Path<String>) -> Res {
    let u = user(&c, &h)?;
    ok(c.read(|st| {
        project_readable(st, &u, &name, None)?;
        Ok::<_, ControlError>(
            st.release
                .versions
                .values()
                .filter(|v| v.project == name)
                .cloned()
                .collect::<Vec<_>>(),
        )
    })??)
}

async fn add_version(AxState(c): C, h: HeaderMap, Path(name): Path<String>, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let input: VersionInput = body(&b)?;
    if let Artifact::File(path) = &input.artifact {
        check_artifact_path(c.options().artifact_root.as_deref(), path)?;
    }
    ok(c.write(u, move |tx| tx.add_version(&name, input.clone()))
        .await?)
}

async fn get_version(
    AxState(c): C,
    h: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Res {
    let u = user(&c, &h)?;
    ok(c.read(|st| {
        project_readable(st, &u, &name, None)?;
        st.release.version(&name, &version).cloned().ok_or_else(|| {
            ControlError::not_found(format!("unknown version {version:?} of {name:?}"))
                .with_field("version")
        })
    })??)
}

/// Starts the build gate of a version on the node's gate runner (`Runtime::set_gate_runner`; the local
/// runner by default), on a thread of its own; answers at once with the
/// run (`running`, or `passed` for a project without gate commands). Poll the version for the outcome.
async fn run_gate(
    AxState(c): C,
    h: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Res {
    let u = user(&c, &h)?;
    let rt = &c.release;
    if rt.gates_running.fetch_add(1, Ordering::SeqCst) >= MAX_GATES {
        rt.gates_running.fetch_sub(1, Ordering::SeqCst);
        return Err(ControlError::bad(
            "gate",
            format!("{MAX_GATES} gates are running on this node; retry later"),
        )
        .into());
    }
    let key = (name.clone(), version.clone());
    if let Ok(mut g) = rt.gates.lock() {
        g.push(key.clone());
    }
    let runner = c.release.gate_runner();
    // The jobs service's `furrow worker`, when one that runs shell items is live; else the node's runner.
    let c_probe = c.clone();
    let worker = tokio::task::spawn_blocking(move || super::jobgate::live_shell_worker(&c_probe))
        .await
        .ok()
        .flatten();
    let runner_name = match &worker {
        Some(w) => format!("jobs (worker {w} live)"),
        None => runner.name().to_string(),
    };
    let (n, v) = (name.clone(), version.clone());
    let started = c
        .write(u, move |tx| tx.gate_start(&n, &v, &runner_name))
        .await;
    let (run, needs_commands) = match started {
        Ok(x) => x,
        Err(e) => {
            gate_done(&c, &key);
            return Err(e.into());
        }
    };
    if !needs_commands {
        gate_done(&c, &key);
        return ok(run);
    }
    let job = c.read(|st| {
        let p = st.release.projects.get(&name)?;
        let ver = st.release.version(&name, &version)?;
        Some(GateJob {
            project: name.clone(),
            version: version.clone(),
            revision: ver.revision.clone(),
            dir: if p.repo.is_empty() {
                std::env::temp_dir()
            } else {
                p.repo.clone().into()
            },
            commands: p.gate.commands.clone(),
            timeout: Duration::from_millis(p.gate.timeout_ms.unwrap_or(600_000)),
        })
    })?;
    let Some(job) = job else {
        gate_done(&c, &key);
        return Err(ControlError::not_found("the project or version went away").into());
    };
    let c2 = c.clone();
    let spawned = std::thread::Builder::new()
        .name("furrow-release-gate".into())
        .spawn(move || {
            let (runs, by) = match worker.map(|_| super::jobgate::run(&c2, &job)) {
                Some(Ok((runs, by))) => (runs, Some(by)),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, project = %job.project, "gate job not started; running the gate locally");
                    (runner.run(&job), Some(runner.name().to_string()))
                }
                None => (runner.run(&job), None),
            };
            let sys = system_user();
            if let Err(e) = c2.mutate(&sys, |tx| {
                tx.gate_finish(&job.project, &job.version, runs.clone(), by.as_deref())
            }) {
                tracing::warn!(error = %e, "recording a gate run failed");
            }
            gate_done(&c2, &(job.project.clone(), job.version.clone()));
        });
    if let Err(e) = spawned {
        gate_done(&c, &key);
        return Err(
            ControlError::new(ErrorCode::Internal, format!("cannot start the gate: {e}")).into(),
        );
    }
    ok(run)
}

fn gate_done(c: &Center, key: &(String, String)) {
    let rt = &c.release;
    if let Ok(mut g) = rt.gates.lock()
        && let Some(i) = g.iter().position(|k| k == key)
    {
        g.remove(i);
    }
    rt.gates_running.fetch_sub(1, Ordering::SeqCst);
}

/// A file artifact must be under the artifact root (`furrow control --artifact-root`): without one, file
/// artifacts are refused — anyone who may add a version could otherwise have any file the service can read
/// served back to them.
fn check_artifact_path(root: Option<&std::path::Path>, path: &str) -> Result<()> {
    let Some(root) = root else {
        return Err(ControlError::bad(
            "artifact",
            "file artifacts need `furrow control --artifact-root DIR`; use an inline artifact",
        ));
    };
    let p = std::path::Path::new(path);
    let lexically_inside = p.is_absolute()
        && p.starts_with(root)
        && !p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    if !lexically_inside {
        return Err(ControlError::bad(
            "artifact",
            format!("file artifacts must be under {}", root.display()),
        ));
    }
    Ok(())
}

/// The artifact's bytes (agents, or readers of the project). A file artifact is read at fetch time, at most
/// [`MAX_ARTIFACT`] bytes; the `x-furrow-sha256` header carries its digest.
async fn artifact(
    AxState(c): C,
    h: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Res {
    let u = user(&c, &h)?;
    let art = c.read(|st| {
        project_readable(st, &u, &name, None)?;
        st.release
            .version(&name, &version)
            .map(|v| v.artifact.clone())
            .ok_or_else(|| {
                ControlError::not_found(format!("unknown version {version:?} of {name:?}"))
                    .with_field("version")
            })
    })??;
    let bytes = match art {
        Artifact::Inline(s) => s.into_bytes(),
        Artifact::File(path) => {
            let root = c.options().artifact_root.clone();
            tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
                // Checked again as it resolves now (a symbolic link must not lead outside the root).
                let resolved = std::fs::canonicalize(&path).map_err(|e| {
                    ControlError::not_found(format!("artifact {path}: {e}")).with_field("artifact")
                })?;
                let root = root
                    .and_then(|r| std::fs::canonicalize(r).ok())
                    .ok_or_else(|| {
                        ControlError::bad("artifact", "file artifacts need an artifact root")
                    })?;
                if !resolved.starts_with(&root) {
                    return Err(ControlError::forbidden(format!(
                        "artifact {path} resolves outside the artifact root"
                    )));
                }
                let meta = std::fs::metadata(&resolved).map_err(|e| {
                    ControlError::not_found(format!("artifact {path}: {e}")).with_field("artifact")
                })?;
                if meta.len() > MAX_ARTIFACT {
                    return Err(ControlError::new(
                        ErrorCode::PayloadTooLarge,
                        format!(
                            "artifact {path} is {} bytes, more than {MAX_ARTIFACT}",
                            meta.len()
                        ),
                    ));
                }
                std::fs::read(&resolved)
                    .map_err(|e| ControlError::not_found(format!("artifact {path}: {e}")))
            })
            .await
            .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))??
        }
    };
    let digest = super::engine::hex_sha256(&bytes);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::HeaderName::from_static("x-furrow-sha256"), digest),
        ],
        bytes,
    )
        .into_response())
}

/// The code diff between two revisions: `?from=REV&to=REV`, or `?version=V[&stage=S]` for the diff between
/// the version the stage (default: the last one) runs and the candidate.
async fn diff(AxState(c): C, h: HeaderMap, Path(name): Path<String>, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let (repo, from, to) = c.read(|st| {
        let p = project_readable(st, &u, &name, None)?;
        if p.repo.is_empty() {
            return Err(ControlError::bad(
                "repo",
                format!("project {name:?} has no repository"),
            ));
        }
        let rev_of = |v: &str| {
            st.release
                .version(&name, v)
                .map(|x| x.revision.clone())
                .filter(|r| !r.is_empty())
                .ok_or_else(|| {
                    ControlError::bad("version", format!("version {v:?} has no revision"))
                })
        };
        let (from, to) = match (q.get("from"), q.get("to"), q.get("version")) {
            (Some(f), Some(t), _) => (f.clone(), t.clone()),
            (_, _, Some(v)) => {
                let stage = q
                    .get("stage")
                    .cloned()
                    .or_else(|| p.stages.last().map(|s| s.name.clone()))
                    .unwrap_or_default();
                let live = st.release.stage_version(&name, &stage).ok_or_else(|| {
                    ControlError::bad(
                        "stage",
                        format!("{name}/{stage} runs no version to compare with"),
                    )
                })?;
                (rev_of(live)?, rev_of(v)?)
            }
            _ => {
                return Err(ControlError::bad(
                    "version",
                    "give version=V or from=REV&to=REV",
                ));
            }
        };
        check_revision("from", &from)?;
        check_revision("to", &to)?;
        Ok((p.repo.clone(), from, to))
    })??;
    let (f, t) = (from.clone(), to.clone());
    let r = tokio::task::spawn_blocking(move || {
        super::gate::git_diff(std::path::Path::new(&repo), &f, &t)
    })
    .await
    .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))?;
    let (text, truncated) = r.map_err(|m| ControlError::bad("revision", m))?;
    ok(json!({"from": from, "to": to, "diff": text, "truncated": truncated}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    kind: DeployKind,
}

async fn deploy(
    AxState(c): C,
    h: HeaderMap,
    Path((name, stage)): Path<(String, String)>,
    b: Bytes,
) -> Res {
    let u = user(&c, &h)?;
    let r: DeployBody = body(&b)?;
    ok(c.write(u, move |tx| {
        tx.start_deployment(&name, &stage, r.version.as_deref(), r.kind, Vec::new())
    })
    .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    stage: String,
    versions: BTreeMap<String, String>,
    /// Also order by the dependencies observed in traces (default true).
    #[serde(default = "yes")]
    observed: bool,
    /// How far back traces count, seconds (default one day).
    #[serde(default)]
    observed_since_s: Option<u64>,
}

fn yes() -> bool {
    true
}

async fn plan(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let r: PlanBody = body(&b)?;
    let observed = if r.observed {
        observed_calls(&c, r.observed_since_s.unwrap_or(86_400).max(1)).await?
    } else {
        Vec::new()
    };
    ok(
        c.write(u, move |tx| tx.start_plan(&r.stage, &r.versions, &observed))
            .await?,
    )
}

/// The call edges `(caller, callee)` between services in the tracing service's dependency graph over the
/// last `secs` seconds (off the async workers: the span store is behind a lock).
async fn observed_calls(c: &Arc<Center>, secs: u64) -> Result<Vec<(String, String)>> {
    let c = c.clone();
    let since_ns = crate::model::now_ms()
        .saturating_sub(secs.saturating_mul(1000))
        .saturating_mul(1_000_000);
    let g = tokio::task::spawn_blocking(move || {
        c.trace
            .with_store(|st| crate::trace::query::dependencies(st.traces(), since_ns, secs as f64))
    })
    .await
    .map_err(|e| ControlError::new(ErrorCode::Internal, format!("dependency graph: {e}")))??;
    Ok(g["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["from"].as_str()?.to_string(),
                e["to"].as_str()?.to_string(),
            ))
        })
        .collect())
}

async fn list_deployments(AxState(c): C, h: HeaderMap, Query(q): Q) -> Res {
    let u = user(&c, &h)?;
    let limit = qnum(&q, "limit")?.unwrap_or(100).min(1000) as usize;
    let active = q.get("active").is_some_and(|v| v == "true");
    ok(c.read(|st| {
        st.release
            .deployments
            .values()
            .rev()
            .filter(|d| q.get("project").is_none_or(|p| p == &d.project))
            .filter(|d| q.get("stage").is_none_or(|s| s == &d.stage))
            .filter(|d| !active || !d.state.finished())
            .filter(|d| {
                st.release.projects.get(&d.project).is_some_and(|p| {
                    is_agent(&u) || level_on(st, &u, p, Some(&d.stage)) >= Level::Read
                })
            })
            .take(limit)
            .cloned()
            .collect::<Vec<_>>()
    })?)
}

async fn get_deployment(AxState(c): C, h: HeaderMap, Path(id): Path<u64>) -> Res {
    let u = user(&c, &h)?;
    let d = c.read(|st| {
        let d = st.release.deployments.get(&id).cloned().ok_or_else(|| {
            ControlError::not_found(format!("unknown deployment {id}")).with_field("deployment")
        })?;
        project_readable(st, &u, &d.project, Some(&d.stage))?;
        // The traced service whose spans the canary analysis judges.
        let service = st
            .release
            .projects
            .get(&d.project)
            .and_then(|p| p.stage(&d.stage))
            .and_then(|s| s.canary.as_ref())
            .and_then(|c| c.trace_service.clone())
            .unwrap_or_else(|| d.project.clone());
        Ok::<_, ControlError>((d, service))
    })??;
    let (d, service) = d;
    let counts = |(canary, baseline): (super::canary::Samples, super::canary::Samples)| {
        json!({"canary": canary.requests, "canary_errors": canary.errors,
            "baseline": baseline.requests, "baseline_errors": baseline.errors})
    };
    let samples = super::engine::current_samples(&c.release, &d).map(|s| {
        let mut j = counts(s);
        if let Some(spans) = super::engine::current_span_samples(&c.trace.signals, &d, &service) {
            j["spans"] = counts(spans);
        }
        j
    });
    let mut v = serde_json::to_value(&d).unwrap_or_default();
    if let (Some(obj), Some(s)) = (v.as_object_mut(), samples) {
        obj.insert("samples".into(), s);
    }
    ok(v)
}

async fn deployment_action(
    AxState(c): C,
    h: HeaderMap,
    Path((id, action)): Path<(u64, String)>,
) -> Res {
    let u = user(&c, &h)?;
    let d = if action == "approve" {
        c.write(u, move |tx| tx.approve(id)).await?
    } else {
        c.write(u, move |tx| tx.deployment_action(id, &action))
            .await?
    };
    ok(d)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentBody {
    host: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

async fn register_agent(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let r: AgentBody = body(&b)?;
    let host = r.host.clone();
    let a = c
        .write(u, move |tx| tx.register_agent(&r.host, r.labels.clone()))
        .await?;
    if let Ok(mut s) = c.release.seen.lock() {
        s.insert(host, now_ms());
    }
    ok(a)
}

async fn list_agents(AxState(c): C, h: HeaderMap) -> Res {
    user(&c, &h)?;
    let seen = super::engine::last_seen(&c.release);
    ok(c.read(|st| {
        st.release
            .agents
            .values()
            .map(|a| json!({"agent": a, "last_poll_ms": seen.get(&a.host)}))
            .collect::<Vec<_>>()
    })?)
}

/// Long-poll: answers the host's assignments at once when it has any, else when one is handed to it (a push
/// through the `("@release", HOST)` channel) or at `timeout` (default 30 s, max 300 s) with an empty list.
async fn agent_assignments(
    AxState(c): C,
    h: HeaderMap,
    Path(host): Path<String>,
    Query(q): Q,
) -> Res {
    let u = user(&c, &h)?;
    if !is_agent(&u) {
        return Err(ControlError::forbidden(format!("user {:?} is not an agent", u.name)).into());
    }
    let timeout = Duration::from_millis(qnum(&q, "timeout")?.unwrap_or(30_000).min(300_000));
    let known = c.read(|st| st.release.agents.contains_key(&host))?;
    if !known {
        return Err(
            ControlError::not_found(format!("unknown agent {host:?}: register first"))
                .with_field("host")
                .into(),
        );
    }
    let mut rx = c.subscribe(AGENT_ENV, &host);
    let deadline = tokio::time::Instant::now() + timeout;
    c.metrics.watches_active.fetch_add(1, Ordering::Relaxed);
    let out = loop {
        if let Ok(mut s) = c.release.seen.lock() {
            s.insert(host.clone(), now_ms());
        }
        let list = c.read(|st| super::engine::assignments(st, &host))?;
        if !list.is_empty() {
            break list;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break list },
            _ = tokio::time::sleep_until(deadline) => break list,
        }
    };
    c.metrics.watches_active.fetch_sub(1, Ordering::Relaxed);
    ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    deployment: u64,
    version: String,
    phase: HostPhase,
    #[serde(default)]
    message: String,
}

async fn agent_report(AxState(c): C, h: HeaderMap, Path(host): Path<String>, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let r: ReportBody = body(&b)?;
    let taken = c
        .write(u, move |tx| {
            tx.agent_report(&host, r.deployment, &r.version, r.phase, &r.message)
        })
        .await?;
    ok(json!({"accepted": taken}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplesBody {
    project: String,
    version: String,
    requests: u64,
    errors: u64,
    #[serde(default)]
    latencies_us: Vec<u64>,
}

/// Probe samples of one project's version on a host (held in memory for canary analysis).
async fn agent_samples(AxState(c): C, h: HeaderMap, Path(host): Path<String>, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    if !is_agent(&u) {
        return Err(ControlError::forbidden(format!("user {:?} is not an agent", u.name)).into());
    }
    let r: SamplesBody = body(&b)?;
    if r.latencies_us.len() > super::canary::MAX_LATENCIES {
        return Err(ControlError::bad("latencies_us", "at most 4096 latencies per report").into());
    }
    let samples = Samples {
        requests: r.requests,
        errors: r.errors.min(r.requests),
        latencies_us: r.latencies_us,
        windows: Vec::new(),
    };
    c.release
        .add_samples(&r.project, &host, &r.version, samples);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The release service's lines of `/metrics`.
pub fn metrics_text(c: &Center) -> Result<String> {
    let rt = &c.release;
    let (projects, active) = c.read(|st| {
        (
            st.release.projects.len(),
            st.release
                .deployments
                .values()
                .filter(|d| !d.state.finished())
                .count(),
        )
    })?;
    Ok(format!(
        "# TYPE furrow_release_projects gauge\nfurrow_release_projects {projects}\n\
         # TYPE furrow_release_deployments_active gauge\nfurrow_release_deployments_active {active}\n\
         # TYPE furrow_release_steps_total counter\nfurrow_release_steps_total {}\n\
         # TYPE furrow_release_webhooks_total counter\nfurrow_release_webhooks_total{{result=\"queued\"}} {}\n\
         furrow_release_webhooks_total{{result=\"dropped\"}} {}\n",
        rt.steps.load(Ordering::Relaxed),
        rt.webhooks_sent.load(Ordering::Relaxed),
        rt.webhooks_dropped.load(Ordering::Relaxed),
    ))
}
