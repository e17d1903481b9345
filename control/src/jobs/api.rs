//! The jobs HTTP routes, merged into the configuration center's router (same auth, JSON errors, body limit,
//! metrics). `JOB` = `/v1/jobs/{env}/{job}`; see `docs/jobs.md`.
//!
//! Workers talk to the same routes: register, heartbeat, long-poll for items (`POST
//! /v1/jobs/workers/{id}/poll` waits up to `wait_ms` and answers as soon as items are placed on it), report
//! results. They need an administrator or a user with the role `jobs-worker`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::model::JobSpec;
use super::ops::check_level;
use super::sched::{ItemReport, Jobs, WorkerInfo, run_id};
use crate::api::{Res, body, ok, qnum, user};
use crate::center::Center;
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Level, User};

type C = AxState<Arc<Center>>;
type JobPath = Path<(String, String)>;

/// The jobs routes (state: the center).
pub fn routes() -> Router<Arc<Center>> {
    let job = "/v1/jobs/{env}/{job}";
    Router::new()
        .route("/v1/jobs/workers", get(list_workers).post(register))
        .route("/v1/jobs/workers/{id}", axum::routing::delete(deregister))
        .route("/v1/jobs/workers/{id}/beat", post(beat))
        .route("/v1/jobs/workers/{id}/poll", post(poll))
        .route("/v1/jobs/workers/{id}/done", post(done))
        .route("/v1/jobs/stats", get(stats))
        .route("/v1/jobs/{env}", get(list_jobs))
        .route(job, get(get_job).put(put_job).delete(delete_job))
        .route(&format!("{job}/pause"), post(pause))
        .route(&format!("{job}/resume"), post(resume))
        .route(&format!("{job}/trigger"), post(trigger))
        .route(&format!("{job}/runs"), get(list_runs))
        .route(&format!("{job}/runs/{{ms}}"), get(get_run))
        .route(&format!("{job}/runs/{{ms}}/stop"), post(stop))
}

fn runtime(c: &Center) -> Result<Arc<Jobs>> {
    c.jobs.get().cloned().ok_or_else(|| {
        ControlError::new(
            ErrorCode::StoreUnavailable,
            "the jobs runtime is not running on this node",
        )
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))?
}

fn worker_user(u: &User) -> Result<()> {
    if u.admin || u.roles.iter().any(|r| r == "jobs-worker") {
        return Ok(());
    }
    Err(ControlError::forbidden(format!(
        "user {:?} is not a worker (role jobs-worker) nor an administrator",
        u.name
    )))
}

fn can_read(c: &Center, u: &User, env: &str, name: &str) -> Result<super::JobRec> {
    c.read(|st| {
        let j = st.jobs.get(env, name).cloned().ok_or_else(|| {
            ControlError::not_found(format!("unknown job {name:?} in {env}")).with_field("job")
        })?;
        check_level(st, u, &j.spec.app, name, Level::MaskedRead)?;
        Ok(j)
    })?
}

async fn list_jobs(AxState(c): C, h: HeaderMap, Path(env): Path<String>) -> Res {
    let u = user(&c, &h)?;
    let list = c.read(|st| {
        st.jobs
            .jobs
            .values()
            .filter(|j| j.env == env && st.level(&u, &j.spec.app, &j.name) >= Level::MaskedRead)
            .map(|j| j.masked())
            .collect::<Vec<_>>()
    })?;
    let next = match c.jobs.get() {
        Some(j) => {
            let j = j.clone();
            blocking(move || j.next_times()).await.unwrap_or_default()
        }
        None => Default::default(),
    };
    let out: Vec<_> = list
        .into_iter()
        .map(|j| {
            let n = next
                .get(&(j.env.clone(), j.name.clone()))
                .copied()
                .flatten();
            json!({"job": j, "next_ms": n})
        })
        .collect();
    ok(out)
}

async fn get_job(AxState(c): C, h: HeaderMap, Path((env, name)): JobPath) -> Res {
    let u = user(&c, &h)?;
    ok(can_read(&c, &u, &env, &name)?.masked())
}

async fn put_job(AxState(c): C, h: HeaderMap, Path((env, name)): JobPath, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    let spec: JobSpec = body(&b)?;
    let j = c
        .write(u, move |tx| tx.put_job(&env, &name, spec.clone()))
        .await?;
    ok(j.masked())
}

async fn delete_job(AxState(c): C, h: HeaderMap, Path((env, name)): JobPath) -> Res {
    let u = user(&c, &h)?;
    c.write(u, move |tx| tx.delete_job(&env, &name)).await?;
    ok(json!({"deleted": true}))
}

async fn pause(AxState(c): C, h: HeaderMap, Path((env, name)): JobPath) -> Res {
    let u = user(&c, &h)?;
    let j = c
        .write(u, move |tx| tx.pause_job(&env, &name, true))
        .await?;
    ok(j.masked())
}

async fn resume(AxState(c): C, h: HeaderMap, Path((env, name)): JobPath) -> Res {
    let u = user(&c, &h)?;
    let j = c
        .write(u, move |tx| tx.pause_job(&env, &name, false))
        .await?;
    ok(j.masked())
}

async fn trigger(AxState(c): C, h: HeaderMap, Path((env, name)): JobPath) -> Res {
    let u = user(&c, &h)?;
    let rt = runtime(&c)?;
    let job = c
        .write(u, move |tx| {
            tx.job_action(&env, &name, "jobs.trigger", json!({}))
        })
        .await?;
    let run = blocking(move || rt.trigger(&job)).await?;
    ok(json!({"run": run}))
}

async fn list_runs(
    AxState(c): C,
    h: HeaderMap,
    Path((env, name)): JobPath,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Res {
    let u = user(&c, &h)?;
    can_read(&c, &u, &env, &name)?;
    let limit = qnum(&q, "limit")?.unwrap_or(50) as usize;
    let rt = runtime(&c)?;
    ok(blocking(move || rt.runs(&env, &name, limit)).await?)
}

async fn get_run(
    AxState(c): C,
    h: HeaderMap,
    Path((env, name, ms)): Path<(String, String, i64)>,
) -> Res {
    let u = user(&c, &h)?;
    can_read(&c, &u, &env, &name)?;
    let rt = runtime(&c)?;
    let id = run_id(&env, &name, ms);
    ok(blocking(move || rt.run(&id)).await?)
}

async fn stop(
    AxState(c): C,
    h: HeaderMap,
    Path((env, name, ms)): Path<(String, String, i64)>,
) -> Res {
    let u = user(&c, &h)?;
    let rt = runtime(&c)?;
    let id = run_id(&env, &name, ms);
    let detail = json!({"run": id});
    c.write(u, move |tx| {
        tx.job_action(&env, &name, "jobs.stop", detail.clone())
    })
    .await?;
    let c2 = c.clone();
    ok(blocking(move || rt.stop(&c2, &id)).await?)
}

async fn register(AxState(c): C, h: HeaderMap, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    worker_user(&u)?;
    let w: WorkerInfo = body(&b)?;
    crate::model::check_name("id", &w.id)?;
    if w.kinds.len() > 256 {
        return Err(ControlError::bad("kinds", "at most 256").into());
    }
    let rt = runtime(&c)?;
    let lease = rt.opts.lease_ms;
    blocking(move || rt.register(&w)).await?;
    ok(json!({"registered": true, "lease_ms": lease}))
}

async fn deregister(AxState(c): C, h: HeaderMap, Path(id): Path<String>) -> Res {
    let u = user(&c, &h)?;
    worker_user(&u)?;
    let rt = runtime(&c)?;
    blocking(move || rt.deregister(&id)).await?;
    ok(json!({"deregistered": true}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Running {
    run: String,
    idx: i64,
    #[serde(default)]
    log: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BeatBody {
    #[serde(default)]
    running: Vec<Running>,
    #[serde(default)]
    draining: bool,
}

async fn beat(AxState(c): C, h: HeaderMap, Path(id): Path<String>, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    worker_user(&u)?;
    let bb: BeatBody = body(&b)?;
    let rt = runtime(&c)?;
    let running: Vec<_> = bb
        .running
        .into_iter()
        .map(|r| (r.run, r.idx, r.log))
        .collect();
    let reg = super::reglink::verdict(&c, &id);
    let stop = blocking(move || rt.beat(&id, &running, bb.draining, reg)).await?;
    let stop: Vec<_> = stop
        .into_iter()
        .map(|(run, idx)| json!({"run": run, "idx": idx}))
        .collect();
    ok(json!({"stop": stop}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollBody {
    #[serde(default = "one")]
    max: usize,
    #[serde(default)]
    wait_ms: u64,
}

fn one() -> usize {
    1
}

async fn poll(AxState(c): C, h: HeaderMap, Path(id): Path<String>, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    worker_user(&u)?;
    let pb: PollBody = body(&b)?;
    let rt = runtime(&c)?;
    let deadline = Instant::now() + Duration::from_millis(pb.wait_ms.min(60_000));
    let max = pb.max.clamp(1, 64);
    loop {
        // A worker the registry has offline or unhealthy gets nothing (checked on every look, so an
        // operator's `offline` takes effect before the worker's next heartbeat).
        if !super::reglink::verdict(&c, &id).takes_items() {
            tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
            return ok(json!({"items": []}));
        }
        // Registered before looking, so a notification between the look and the wait is not lost.
        let notified = rt.notify.notified();
        let (c2, rt2, id2) = (c.clone(), rt.clone(), id.clone());
        let items = blocking(move || rt2.claim(&c2, &id2, max)).await?;
        if !items.is_empty() || Instant::now() >= deadline {
            return ok(json!({"items": items}));
        }
        // Other nodes create items too: look again at least every 100 ms.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        let _ = tokio::time::timeout(wait, notified).await;
    }
}

/// One report, or `{"reports": [...]}` (answered with one `accepted` flag per report).
#[derive(Deserialize)]
#[serde(untagged)]
enum DoneBody {
    Many(Reports),
    One(ItemReport),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reports {
    reports: Vec<ItemReport>,
}

async fn done(AxState(c): C, h: HeaderMap, Path(id): Path<String>, b: Bytes) -> Res {
    let u = user(&c, &h)?;
    worker_user(&u)?;
    let db: DoneBody = body(&b)?;
    let rt = runtime(&c)?;
    let c2 = c.clone();
    match db {
        DoneBody::One(rep) => {
            let accepted = blocking(move || rt.finish(&c2, &id, &rep)).await?;
            ok(json!({"accepted": accepted}))
        }
        DoneBody::Many(r) => {
            if r.reports.len() > 1024 {
                return Err(ControlError::bad("reports", "at most 1024 per request").into());
            }
            let accepted = blocking(move || rt.finish_many(&c2, &id, &r.reports)).await?;
            ok(json!({"accepted": accepted}))
        }
    }
}

async fn list_workers(AxState(c): C, h: HeaderMap) -> Res {
    let _u = user(&c, &h)?;
    let rt = runtime(&c)?;
    ok(blocking(move || rt.workers()).await?)
}

async fn stats(AxState(c): C, h: HeaderMap) -> Res {
    let _u = user(&c, &h)?;
    ok(runtime(&c)?.stats_json())
}
