//! The rollout engine: a state machine per deployment, advanced by the server's ticker (every 50 ms, on
//! whichever node runs it) through ordinary transactions. Everything it needs to resume is in the stored
//! [`Deployment`]: its state, batch, timers and each host's progress, so a control restart (or another
//! control node taking over a shared store) continues where it was; agents re-poll and re-run what is still
//! assigned to them.
//!
//! ```text
//! Waiting ──deps ok──▶ AwaitingApproval ──approved──▶ AwaitingWindow ──open──▶ Running(batch 0)
//!    │                                                                           │ all hosts done
//!    └─dep failed─▶ Cancelled          ┌───────────── Pausing ◀── pass ── Analysing (canary, batch 0)
//!                                      ▼                                         │ fail / host failed
//!                               Running(batch k) ── last batch done ─▶ Succeeded  ▼
//!                                                                   RollingBack ─▶ RolledBack | Failed
//! ```
//!
//! Rollbacks and restarts skip approvals and windows: they are the way out of an incident.
//!
//! What is only in memory (per node): canary probe samples (an analysis interrupted by a restart starts its
//! sample window again), agents' last poll times, webhook deliveries not yet made (at most once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::canary::{Samples, Verdict, WindowLatency, judge};
use super::model::*;
use crate::center::{Center, system_user};
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::now_ms;
use crate::ops::Tx;

/// Sample chunks kept per (project, host, version).
const MAX_CHUNKS: usize = 512;
/// A service counts as traced for canary analysis when its hosts sent entry spans this long before the
/// analysis began (or since): then its spans' verdict is required, and waited for.
const TRACED_WITHIN_MS: u64 = 60_000;
/// Webhook deliveries queued (beyond it they are dropped and counted).
const WEBHOOK_QUEUE: usize = 1_024;

/// Sample chunks with their arrival time, per (project, host, version).
type SampleChunks = HashMap<(String, String, String), VecDeque<(u64, Samples)>>;

/// One proxy health window: arrival ms, instance, releases it runs, requests, errors, and its listeners'
/// latency summaries.
type Window = (u64, String, Vec<u64>, u64, u64, Vec<WindowLatency>);

/// Proxies' health windows per namespace path.
type Windows = HashMap<String, VecDeque<Window>>;

/// Listeners' latency summaries kept per window (a proxy has a few listeners).
const MAX_LISTENERS_PER_WINDOW: usize = 16;

/// Windows kept per namespace path.
const MAX_WINDOWS: usize = 4_096;

/// A queued webhook delivery: server, path, body.
type Delivery = (String, String, Vec<u8>);

/// What one node of the release service holds in memory.
pub struct Runtime {
    /// Probe samples by (project, host, version): chunks with their arrival time.
    samples: Mutex<SampleChunks>,
    /// Proxies' report windows, for routing projects' canaries.
    windows: Mutex<Windows>,
    /// Agents' last poll, ms.
    pub seen: Mutex<HashMap<String, u64>>,
    /// Gates running on this node: (project, version).
    pub gates: Mutex<Vec<(String, String)>>,
    /// The last event number sent to webhooks, per deployment.
    notified: Mutex<HashMap<u64, u64>>,
    webhook_tx: Mutex<Option<std::sync::mpsc::SyncSender<Delivery>>>,
    /// Webhook deliveries dropped (queue full) or failed.
    pub webhooks_dropped: AtomicU64,
    /// Webhook deliveries made.
    pub webhooks_sent: AtomicU64,
    /// Deployment steps committed.
    pub steps: AtomicU64,
    /// Gates running now (bounded).
    pub gates_running: AtomicUsize,
    /// Who runs build gates: the local runner until the jobs service installs its worker.
    runner: std::sync::RwLock<std::sync::Arc<dyn super::gate::GateRunner>>,
    started_ms: u64,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// An empty runtime.
    pub fn new() -> Self {
        Runtime {
            samples: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            gates: Mutex::new(Vec::new()),
            notified: Mutex::new(HashMap::new()),
            webhook_tx: Mutex::new(None),
            webhooks_dropped: AtomicU64::new(0),
            webhooks_sent: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            gates_running: AtomicUsize::new(0),
            runner: std::sync::RwLock::new(std::sync::Arc::new(super::gate::LocalRunner)),
            started_ms: now_ms(),
        }
    }

    /// Adds an agent's probe samples.
    pub fn add_samples(&self, project: &str, host: &str, version: &str, s: Samples) {
        let Ok(mut m) = self.samples.lock() else {
            return;
        };
        if m.len() >= 10_000 && !m.contains_key(&(project.into(), host.into(), version.into())) {
            return;
        }
        let q = m
            .entry((project.into(), host.into(), version.into()))
            .or_default();
        if q.len() >= MAX_CHUNKS {
            q.pop_front();
        }
        q.push_back((now_ms(), s));
    }

    /// The gate runner in use.
    pub fn gate_runner(&self) -> std::sync::Arc<dyn super::gate::GateRunner> {
        match self.runner.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Installs another gate runner (the jobs service's `furrow worker`); gates started afterwards use it.
    pub fn set_gate_runner(&self, runner: std::sync::Arc<dyn super::gate::GateRunner>) {
        match self.runner.write() {
            Ok(mut r) => *r = runner,
            Err(p) => *p.into_inner() = runner,
        }
    }

    /// Adds a proxy's health window (from its report on a namespace instance path) with its listeners'
    /// latency over the window (at most [`MAX_LISTENERS_PER_WINDOW`] of them are kept).
    pub fn add_window(
        &self,
        ns_path: &str,
        instance: &str,
        releases: &[u64],
        health: crate::model::HealthWindow,
        latency: &[crate::model::ListenerLatency],
    ) {
        let (requests, errors) = (health.requests, health.errors);
        let latency: Vec<WindowLatency> = latency
            .iter()
            .filter(|l| l.count > 0)
            .take(MAX_LISTENERS_PER_WINDOW)
            .map(|l| WindowLatency {
                count: l.count,
                p50_us: l.p50_us,
                p99_us: l.p99_us,
            })
            .collect();
        let Ok(mut m) = self.windows.lock() else {
            return;
        };
        if m.len() >= 10_000 && !m.contains_key(ns_path) {
            return;
        }
        let q = m.entry(ns_path.to_string()).or_default();
        if q.len() >= MAX_WINDOWS {
            q.pop_front();
        }
        q.push_back((
            now_ms(),
            instance.to_string(),
            releases.to_vec(),
            requests,
            errors.min(requests),
            latency,
        ));
    }

    /// The proxies' windows on a namespace path since `since_ms`: (those running `gray`, the others), with
    /// their listeners' latency summaries.
    pub fn gray_samples(&self, ns_path: &str, gray: u64, since_ms: u64) -> (Samples, Samples) {
        let (mut canary, mut baseline) = (Samples::default(), Samples::default());
        if let Ok(m) = self.windows.lock()
            && let Some(q) = m.get(ns_path)
        {
            for (at, _, releases, requests, errors, latency) in q {
                if *at < since_ms {
                    continue;
                }
                let s = if releases.contains(&gray) {
                    &mut canary
                } else {
                    &mut baseline
                };
                s.requests += requests;
                s.errors += errors;
                s.add_windows(latency);
            }
        }
        (canary, baseline)
    }

    /// The health windows that proxies whose instance id is one of `hosts` reported since `since_ms` (on
    /// any namespace path): requests and errors of the clients of the proxy on that host, as service
    /// canaries see them next to the agents' probes. `None` when no such window arrived.
    pub fn host_windows(&self, hosts: &[String], since_ms: u64) -> Option<Samples> {
        let m = self.windows.lock().ok()?;
        let mut out = Samples::default();
        let mut seen = false;
        for q in m.values() {
            for (at, instance, _, requests, errors, latency) in q {
                if *at >= since_ms && hosts.iter().any(|h| h == instance) {
                    seen = true;
                    out.requests += requests;
                    out.errors += errors;
                    out.add_windows(latency);
                }
            }
        }
        seen.then_some(out)
    }

    /// The samples of `hosts` on `version` that arrived since `since_ms`.
    pub fn samples_since(
        &self,
        project: &str,
        hosts: &[String],
        version: &str,
        since_ms: u64,
    ) -> Samples {
        let mut out = Samples::default();
        let Ok(m) = self.samples.lock() else {
            return out;
        };
        for h in hosts {
            if let Some(q) = m.get(&(project.to_string(), h.clone(), version.to_string())) {
                for (at, s) in q {
                    if *at >= since_ms {
                        out.add(s);
                    }
                }
            }
        }
        out
    }

    /// Queues a webhook delivery (a thread of its own posts them, one at a time, 2 s each at most).
    pub fn notify(&self, url: &str, body: Vec<u8>) {
        let Some((server, path)) = super::ops::split_url(url) else {
            return;
        };
        let Ok(mut tx) = self.webhook_tx.lock() else {
            return;
        };
        if tx.is_none() {
            let (s, r) = std::sync::mpsc::sync_channel::<Delivery>(WEBHOOK_QUEUE);
            let spawned = std::thread::Builder::new()
                .name("furrow-release-webhooks".into())
                .spawn(move || deliver(r));
            if spawned.is_err() {
                self.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *tx = Some(s);
        }
        if let Some(s) = tx.as_ref()
            && s.try_send((server, path, body)).is_err()
        {
            self.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn deliver(r: std::sync::mpsc::Receiver<Delivery>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    while let Ok((server, path, body)) = r.recv() {
        let res = rt.block_on(crate::http::request(
            &server,
            "POST",
            &path,
            None,
            Some(&body),
            std::time::Duration::from_secs(2),
        ));
        match res {
            Ok(resp) if resp.status < 300 => {}
            Ok(resp) => tracing::warn!(
                server,
                path,
                status = resp.status,
                "release webhook refused"
            ),
            Err(e) => tracing::warn!(server, path, error = %e, "release webhook failed"),
        }
    }
}

/// The inputs of one step that are not in the store.
pub struct StepInput<'a> {
    /// Now, ms.
    pub now: u64,
    /// The node's samples.
    pub rt: &'a Runtime,
    /// The span collector's signals per service and host (None: not judged).
    pub spans: Option<&'a crate::trace::signals::SharedSignals>,
}

/// Spans' counts as canary samples (at most [`super::canary::MAX_LATENCIES`] latencies, the newest).
fn span_samples(c: Option<crate::trace::signals::Counts>) -> Samples {
    let c = c.unwrap_or_default();
    let mut s = Samples::default();
    s.add(&Samples {
        requests: c.requests,
        errors: c.errors,
        latencies_us: c.latencies_us,
        windows: Vec::new(),
    });
    s
}

/// One verdict from the probes' and, when present, the proxies' windows' and the spans' verdicts (each
/// None while its groups have too few samples): any failure fails at once (named by its signal); a pass
/// needs every signal present to have passed.
fn combine(
    probes: Option<Verdict>,
    proxies: Option<Option<Verdict>>,
    spans: Option<Option<Verdict>>,
) -> Option<Verdict> {
    if let Some(v) = probes.as_ref().filter(|v| !v.pass) {
        return Some(v.clone());
    }
    for (name, other) in [("proxies' windows", &proxies), ("spans", &spans)] {
        if let Some(Some(v)) = other
            && !v.pass
        {
            let mut v = v.clone();
            v.reason = format!("{name}: {}", v.reason);
            return Some(v);
        }
    }
    let mut v = probes?;
    if let Some(p) = proxies {
        v.reason = format!("{}; proxies' windows: {}", v.reason, p?.reason);
    }
    if let Some(sp) = spans {
        let sp = sp?;
        v.reason = format!("{}; spans: {}", v.reason, sp.reason);
        v.spans = Some(Box::new(sp));
    }
    Some(v)
}

fn start_batch(tx: &mut Tx, d: &mut Deployment, now: u64) {
    let restart = d.kind == DeployKind::Restart;
    let hosts = d.batches.get(d.batch).cloned().unwrap_or_default();
    for h in &hosts {
        d.hosts.insert(
            h.clone(),
            HostProgress {
                version: d.version.clone(),
                phase: HostPhase::Assigned,
                restart,
                message: String::new(),
                since_ms: now,
                batch: d.batch,
            },
        );
        tx.wake_agent(h);
    }
    d.state = DeployState::Running;
    d.event(
        now,
        "batch",
        format!(
            "batch {} of {}: {}",
            d.batch + 1,
            d.batches.len(),
            hosts.join(", ")
        ),
    );
}

fn fail(tx: &mut Tx, d: &mut Deployment, now: u64, reason: String) {
    d.event(now, "failed", reason);
    let target = match (&d.previous, d.kind) {
        (Some(p), DeployKind::Deploy | DeployKind::Rollback) => p.clone(),
        _ => {
            d.state = DeployState::Failed;
            return;
        }
    };
    let mut touched = Vec::new();
    for (host, h) in d.hosts.iter_mut() {
        if h.phase == HostPhase::Pending {
            continue;
        }
        *h = HostProgress {
            version: target.clone(),
            phase: HostPhase::Assigned,
            restart: false,
            message: String::new(),
            since_ms: now,
            batch: h.batch,
        };
        touched.push(host.clone());
    }
    for h in &touched {
        tx.wake_agent(h);
    }
    d.state = DeployState::RollingBack;
    d.event(
        now,
        "rollback",
        format!("returning {} to {target}", touched.join(", ")),
    );
}

fn succeed(tx: &mut Tx, d: &mut Deployment, now: u64) {
    d.state = DeployState::Succeeded;
    d.event(now, "succeeded", format!("{} runs {}", d.stage, d.version));
    let key = (d.project.clone(), d.stage.clone());
    let mut s = tx
        .st
        .release
        .stages
        .get(&key)
        .cloned()
        .unwrap_or(StageState {
            project: d.project.clone(),
            stage: d.stage.clone(),
            ..Default::default()
        });
    if !s.version.is_empty() && s.version != d.version {
        s.history.retain(|v| v != &s.version);
        s.history.push(s.version.clone());
        if s.history.len() > 50 {
            s.history.remove(0);
        }
    }
    s.version = d.version.clone();
    s.deployment = d.id;
    tx.put_rel(RelRec::Stage(s));
}

/// Timed-out hosts of the current work, as failures.
fn time_out(d: &mut Deployment, now: u64, limit: u64) {
    for (host, h) in d.hosts.iter_mut() {
        if matches!(h.phase, HostPhase::Assigned | HostPhase::Working)
            && now.saturating_sub(h.since_ms) > limit
        {
            h.phase = HostPhase::Failed;
            h.message = format!("{host}: no report from its agent within {limit} ms");
        }
    }
}

impl Tx<'_> {
    /// Advances one deployment as far as it can go now. Returns whether anything changed.
    pub fn release_step(&mut self, id: u64, input: &StepInput) -> Result<bool> {
        let Some(before) = self.st.release.deployments.get(&id).cloned() else {
            return Ok(false);
        };
        let mut d = before.clone();
        let now = input.now;
        let Some(p) = self.st.release.projects.get(&d.project).cloned() else {
            d.state = DeployState::Cancelled;
            d.event(now, "cancelled", "the project was removed");
            self.put_rel(RelRec::Deployment(d));
            return Ok(true);
        };
        let stage = p.stage(&d.stage).cloned().unwrap_or_default();
        let host_limit = stage.host_timeout_ms.unwrap_or(60_000);
        for _ in 0..8 {
            let state = d.state;
            match state {
                DeployState::Waiting => {
                    let deps: Vec<Option<DeployState>> = d
                        .after
                        .iter()
                        .map(|a| self.st.release.deployments.get(a).map(|x| x.state))
                        .collect();
                    if let Some(i) = deps
                        .iter()
                        .position(|s| s.is_none_or(|s| s.finished() && s != DeployState::Succeeded))
                    {
                        d.state = DeployState::Cancelled;
                        d.event(
                            now,
                            "cancelled",
                            format!("dependency deployment {} did not succeed", d.after[i]),
                        );
                    } else if deps.iter().all(|s| *s == Some(DeployState::Succeeded)) {
                        let need = stage.approval.count as usize;
                        d.state = if d.kind == DeployKind::Deploy && d.approvals.len() < need {
                            d.event(
                                now,
                                "awaiting_approval",
                                format!(
                                    "{need} approval(s) from {}",
                                    stage.approval.approvers.join(", ")
                                ),
                            );
                            DeployState::AwaitingApproval
                        } else {
                            DeployState::AwaitingWindow
                        };
                    }
                }
                DeployState::AwaitingApproval => {
                    if d.approvals.len() >= stage.approval.count as usize {
                        d.state = DeployState::AwaitingWindow;
                    }
                }
                DeployState::AwaitingWindow => {
                    let closed = if d.kind == DeployKind::Deploy {
                        super::window::closed_because(&stage.window, now)
                    } else {
                        None
                    };
                    match closed {
                        Some(why) => {
                            if d.events
                                .last()
                                .is_none_or(|e| e.what != "window_closed" || e.detail != why)
                            {
                                d.event(now, "window_closed", why);
                            }
                        }
                        None if p.routing().is_some() => {
                            self.routing_write(&mut d, &p, &stage, now)
                        }
                        None => {
                            d.batch = 0;
                            start_batch(self, &mut d, now);
                        }
                    }
                }
                DeployState::Running if p.routing().is_some() => {
                    self.routing_publish(&mut d, &p, &stage, now);
                }
                DeployState::Analysing if p.routing().is_some() => {
                    self.routing_judge(&mut d, &p, &stage, input);
                }
                DeployState::Running => {
                    time_out(&mut d, now, host_limit);
                    let batch = d.batches.get(d.batch).cloned().unwrap_or_default();
                    let phase = |h: &String| d.hosts.get(h).map(|x| x.phase).unwrap_or_default();
                    if let Some(h) = batch.iter().find(|h| phase(h) == HostPhase::Failed) {
                        let msg = d
                            .hosts
                            .get(h)
                            .map(|x| x.message.clone())
                            .unwrap_or_default();
                        fail(self, &mut d, now, format!("host {h} failed: {msg}"));
                    } else if batch.iter().all(|h| phase(h) == HostPhase::Done) {
                        let canary = stage.canary.is_some()
                            && d.kind == DeployKind::Deploy
                            && d.batch == 0
                            && d.batches.len() > 1
                            && d.previous.is_some();
                        if canary {
                            d.state = DeployState::Analysing;
                            d.timer_ms = now;
                            d.event(
                                now,
                                "canary",
                                format!("analysing {} against the baseline", batch.join(", ")),
                            );
                        } else {
                            self.next_batch(&mut d, &stage, now);
                        }
                    }
                }
                DeployState::Analysing => {
                    let spec = stage.canary.clone().unwrap_or_default();
                    let canary_hosts = d.batches.first().cloned().unwrap_or_default();
                    let baseline_hosts: Vec<String> =
                        d.batches.iter().skip(1).flatten().cloned().collect();
                    let prev = d.previous.clone().unwrap_or_default();
                    let c =
                        input
                            .rt
                            .samples_since(&d.project, &canary_hosts, &d.version, d.timer_ms);
                    let b = input
                        .rt
                        .samples_since(&d.project, &baseline_hosts, &prev, d.timer_ms);
                    // The proxies on the hosts (instance id = host), when there are any: their
                    // clients' error rate and, when they send it, their listeners' latency must pass
                    // too; until both groups have enough requests (and latency windows) the verdict
                    // waits (and runs into `max_wait_ms` like the probes).
                    let proxies = match (
                        input.rt.host_windows(&canary_hosts, d.timer_ms),
                        input.rt.host_windows(&baseline_hosts, d.timer_ms),
                    ) {
                        (None, None) => None,
                        (pc, pb) => Some(judge(
                            &spec,
                            &pc.unwrap_or_default(),
                            &pb.unwrap_or_default(),
                        )),
                    };
                    // The service's own spans from the hosts, when it is traced (entry spans from either
                    // group in the minute before the analysis or since): errors, median and p99 of the
                    // spans since the analysis began must pass too, and the verdict waits for them.
                    let service = spec.trace_service.as_deref().unwrap_or(&d.project);
                    let spans = input.spans.and_then(|g| {
                        let g = g.lock().ok()?;
                        let recent = d.timer_ms.saturating_sub(TRACED_WITHIN_MS);
                        let traced = g.since(service, &canary_hosts, recent).is_some()
                            || g.since(service, &baseline_hosts, recent).is_some();
                        traced.then(|| {
                            (
                                span_samples(g.since(service, &canary_hosts, d.timer_ms)),
                                span_samples(g.since(service, &baseline_hosts, d.timer_ms)),
                            )
                        })
                    });
                    let span_verdict = spans.as_ref().map(|(sc, sb)| judge(&spec, sc, sb));
                    let verdict = combine(judge(&spec, &c, &b), proxies, span_verdict);
                    match verdict {
                        Some(v) if v.pass => {
                            d.event(now, "canary_passed", v.reason.clone());
                            d.canary = Some(v);
                            self.next_batch(&mut d, &stage, now);
                        }
                        Some(v) => {
                            let reason = format!("canary analysis failed: {}", v.reason);
                            d.canary = Some(v);
                            fail(self, &mut d, now, reason);
                        }
                        None if now.saturating_sub(d.timer_ms) > spec.max_wait_ms => {
                            fail(
                                self,
                                &mut d,
                                now,
                                format!(
                                    "canary analysis inconclusive: {} canary and {} baseline samples{} after {} ms (need {})",
                                    c.requests,
                                    b.requests,
                                    spans
                                        .as_ref()
                                        .map(|(sc, sb)| format!(
                                            ", {} canary and {} baseline spans",
                                            sc.requests, sb.requests
                                        ))
                                        .unwrap_or_default(),
                                    spec.max_wait_ms,
                                    spec.min_samples
                                ),
                            );
                        }
                        None => {}
                    }
                }
                DeployState::Pausing => {
                    if now >= d.timer_ms {
                        start_batch(self, &mut d, now);
                    }
                }
                DeployState::RollingBack => {
                    time_out(&mut d, now, host_limit);
                    let touched: Vec<&HostProgress> = d
                        .hosts
                        .values()
                        .filter(|h| h.phase != HostPhase::Pending)
                        .collect();
                    if touched.iter().any(|h| h.phase == HostPhase::Failed) {
                        d.state = DeployState::Failed;
                        d.event(
                            now,
                            "rollback_failed",
                            "a host failed to return to the previous version",
                        );
                    } else if touched.iter().all(|h| h.phase == HostPhase::Done) {
                        d.state = DeployState::RolledBack;
                        d.event(
                            now,
                            "rolled_back",
                            format!(
                                "{} runs {} again",
                                d.stage,
                                d.previous.clone().unwrap_or_default()
                            ),
                        );
                    }
                }
                DeployState::Paused
                | DeployState::Succeeded
                | DeployState::Failed
                | DeployState::RolledBack
                | DeployState::Cancelled => {}
            }
            // A routing bundle written to the draft is published by the next step: a publish reads the draft
            // from the state, which this transaction's writes reach only once committed.
            if d.state == state || (p.routing().is_some() && state == DeployState::AwaitingWindow) {
                break;
            }
        }
        if d == before {
            return Ok(false);
        }
        let changed_state = d.state != before.state;
        if changed_state {
            let target = format!("release/{}/{}", d.project, d.stage);
            self.audit(
                "release.deploy.step",
                &target,
                serde_json::json!({"id": d.id, "from": before.state, "to": d.state}),
            );
        }
        self.put_rel(RelRec::Deployment(d));
        Ok(true)
    }

    /// Runs `f`; when it fails, drops whatever it added to the transaction (the deployment records the
    /// failure instead of the whole step failing on every tick).
    pub(crate) fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let (changes, seq, pushed, target) = (
            self.changes.len(),
            self.seq,
            self.pushed.len(),
            self.target.clone(),
        );
        let r = f(self);
        if r.is_err() {
            self.changes.truncate(changes);
            self.seq = seq;
            self.pushed.truncate(pushed);
            self.target = target;
        }
        r
    }

    /// Routing projects, step 1: the version's bundle into the namespace's draft (as the system user; the
    /// one who started the deployment was checked for publish on the namespace).
    fn routing_write(&mut self, d: &mut Deployment, p: &Project, stage: &Stage, now: u64) {
        let Some(t) = p.routing() else { return };
        let ns = t.ns(stage.env());
        let comment = format!("release {} {} (deployment {})", d.project, d.version, d.id);
        let r = self.guarded(|tx| {
            let v = tx
                .st
                .release
                .version(&d.project, &d.version)
                .ok_or_else(|| {
                    ControlError::not_found(format!("version {:?} is gone", d.version))
                })?;
            let items = super::ops::bundle(&v.artifact)?;
            let mut n = 0;
            for (k, value) in items {
                let cur = tx.st.drafts.get(&ns).and_then(|m| m.get(&k)).cloned();
                if cur.as_ref().is_some_and(|i| i.value == value) {
                    continue;
                }
                tx.put_item(
                    &ns,
                    &k,
                    crate::ops::ItemInput {
                        value,
                        schema: None,
                        secret: None,
                        comment: comment.clone(),
                        version: cur.map(|i| i.version),
                    },
                )?;
                n += 1;
            }
            Ok(n)
        });
        match r {
            Ok(n) => {
                d.state = DeployState::Running;
                d.event(
                    now,
                    "bundle",
                    format!("{n} item(s) written to the draft of {}", ns.path()),
                );
            }
            Err(e) => {
                d.state = DeployState::Failed;
                d.event(
                    now,
                    "failed",
                    format!("writing the bundle to {}: {}", ns.path(), e.message),
                );
            }
        }
    }

    /// Routing projects, step 2: publish the draft — as a gray release on the canary proxies (a deploy with
    /// canary analysis), else to everyone.
    fn routing_publish(&mut self, d: &mut Deployment, p: &Project, stage: &Stage, now: u64) {
        let Some(t) = p.routing() else { return };
        let ns = t.ns(stage.env());
        let canary = stage.canary.is_some() && d.kind == DeployKind::Deploy;
        let req = crate::ops::PublishRequest {
            message: format!("release {} {} (deployment {})", d.project, d.version, d.id),
            mode: if canary {
                crate::ops::PublishMode::Gray {
                    rule: crate::model::GrayRule {
                        labels: t.canary_labels.clone(),
                        ips: Vec::new(),
                        instances: Vec::new(),
                    },
                }
            } else {
                crate::ops::PublishMode::Immediate
            },
        };
        match self.guarded(|tx| tx.publish(&ns, &req)) {
            Ok(out) if canary => {
                d.gray = out.release;
                d.state = DeployState::Analysing;
                d.timer_ms = now;
                d.event(
                    now,
                    "canary",
                    format!(
                        "gray release {} on the proxies labelled {:?}, judged against the others",
                        out.release.unwrap_or(0),
                        t.canary_labels
                    ),
                );
            }
            Ok(out) => {
                d.event(
                    now,
                    "published",
                    format!("release {} of {}", out.release.unwrap_or(0), ns.path()),
                );
                succeed(self, d, now);
            }
            Err(e) if e.field.as_deref() == Some("draft") => {
                d.event(now, "unchanged", e.message);
                succeed(self, d, now);
            }
            Err(e) => self.routing_fail(
                d,
                p,
                stage,
                now,
                format!("publishing {}: {}", ns.path(), e.message),
            ),
        }
    }

    /// Routing projects, step 3: the proxies on the gray release against the others, on their reported
    /// error rate and listener latency; promote or abandon.
    fn routing_judge(&mut self, d: &mut Deployment, p: &Project, stage: &Stage, input: &StepInput) {
        let (Some(t), Some(gray)) = (p.routing(), d.gray) else {
            return;
        };
        let now = input.now;
        let ns = t.ns(stage.env());
        let spec = stage.canary.clone().unwrap_or_default();
        let (c, b) = input.rt.gray_samples(&ns.path(), gray, d.timer_ms);
        match judge(&spec, &c, &b) {
            Some(v) if v.pass => {
                let msg = format!(
                    "release {} {} (deployment {}): canary passed",
                    d.project, d.version, d.id
                );
                d.event(now, "canary_passed", v.reason.clone());
                d.canary = Some(v);
                match self.guarded(|tx| tx.promote(&ns, gray, &msg)) {
                    Ok(id) => {
                        d.event(
                            now,
                            "promoted",
                            format!("gray release {gray} promoted as release {id}"),
                        );
                        succeed(self, d, now);
                    }
                    Err(e) => self.routing_fail(
                        d,
                        p,
                        stage,
                        now,
                        format!("promoting {gray}: {}", e.message),
                    ),
                }
            }
            Some(v) => {
                let reason = format!("canary analysis failed: {}", v.reason);
                d.canary = Some(v);
                self.routing_fail(d, p, stage, now, reason);
            }
            None if now.saturating_sub(d.timer_ms) > spec.max_wait_ms => {
                let reason = format!(
                    "canary analysis inconclusive: {} canary and {} baseline requests after {} ms (need {})",
                    c.requests, b.requests, spec.max_wait_ms, spec.min_samples
                );
                self.routing_fail(d, p, stage, now, reason);
            }
            None => {}
        }
    }

    /// Routing projects: abandons the gray release and puts the draft's bundle keys back to the current
    /// release's values (so the next publish does not bring the rejected values back).
    fn routing_fail(
        &mut self,
        d: &mut Deployment,
        p: &Project,
        stage: &Stage,
        now: u64,
        reason: String,
    ) {
        d.event(now, "failed", reason);
        let Some(t) = p.routing() else { return };
        let ns = t.ns(stage.env());
        let Some(gray) = d.gray else {
            d.state = DeployState::Failed;
            return;
        };
        let version = d.version.clone();
        let project = d.project.clone();
        let r = self.guarded(|tx| {
            tx.abandon(&ns, gray)?;
            let keys: Vec<String> = tx
                .st
                .release
                .version(&project, &version)
                .and_then(|v| super::ops::bundle(&v.artifact).ok())
                .map(|b| b.into_keys().collect())
                .unwrap_or_default();
            let current = tx.st.current_items(&ns);
            for k in keys {
                let draft = tx.st.drafts.get(&ns).and_then(|m| m.get(&k)).cloned();
                match (current.get(&k), draft) {
                    (Some(cur), Some(dr)) if cur.value != dr.value => {
                        tx.put_item(
                            &ns,
                            &k,
                            crate::ops::ItemInput {
                                value: cur.value.clone(),
                                schema: None,
                                secret: None,
                                comment: format!("restored after deployment {} failed", d.id),
                                version: Some(dr.version),
                            },
                        )?;
                    }
                    (None, Some(dr)) => tx.delete_item(&ns, &k, Some(dr.version))?,
                    _ => {}
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                d.state = DeployState::RolledBack;
                d.event(
                    now,
                    "rolled_back",
                    format!("gray release {gray} abandoned; the draft restored"),
                );
            }
            Err(e) => {
                d.state = DeployState::Failed;
                d.event(
                    now,
                    "rollback_failed",
                    format!("abandoning gray release {gray}: {}", e.message),
                );
            }
        }
    }

    fn next_batch(&mut self, d: &mut Deployment, stage: &Stage, now: u64) {
        if d.batch + 1 >= d.batches.len() {
            succeed(self, d, now);
            return;
        }
        d.batch += 1;
        if stage.pause_ms > 0 {
            d.state = DeployState::Pausing;
            d.timer_ms = now + stage.pause_ms;
            d.event(
                now,
                "pause",
                format!("{} ms before batch {}", stage.pause_ms, d.batch + 1),
            );
        } else {
            start_batch(self, d, now);
        }
    }
}

/// One engine pass: fails gates interrupted by a restart, advances every unfinished deployment, sends
/// webhooks for new events. Called by the server's ticker (blocking context).
pub fn tick(c: &Center) -> Result<usize> {
    let rt = &c.release;
    let (active, stale_gates) = c.read(|st| {
        let active: Vec<u64> = st
            .release
            .deployments
            .values()
            .filter(|d| !d.state.finished() && d.state != DeployState::Paused)
            .map(|d| d.id)
            .collect();
        let running = rt.gates.lock().map(|g| g.clone()).unwrap_or_default();
        let stale: Vec<(String, String)> = st
            .release
            .versions
            .values()
            .filter(|v| v.gate.status == GateStatus::Running)
            .map(|v| (v.project.clone(), v.name.clone()))
            .filter(|k| !running.contains(k))
            .collect();
        (active, stale)
    })?;
    let sys = system_user();
    for (p, v) in stale_gates {
        // Only gates started before this node did: a gate started elsewhere on a shared store is that
        // node's (documented: gates run on the node that started them).
        let started = c.read(|st| {
            st.release
                .version(&p, &v)
                .map(|x| x.gate.started_ms)
                .unwrap_or(0)
        })?;
        if started >= rt.started_ms {
            continue;
        }
        let run = CommandRun {
            command: String::new(),
            exit: None,
            ms: 0,
            log: "interrupted: the control service restarted while the gate ran".into(),
            truncated: false,
        };
        c.mutate(&sys, |tx| tx.gate_finish(&p, &v, vec![run.clone()], None))?;
    }
    let mut n = 0;
    for id in &active {
        let input = StepInput {
            now: now_ms(),
            rt,
            spans: Some(&c.trace.signals),
        };
        match c.mutate(&sys, |tx| tx.release_step(*id, &input)) {
            Ok(true) => {
                n += 1;
                rt.steps.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) if matches!(e.code, ErrorCode::StoreUnavailable | ErrorCode::Stale) => {
                return Err(e);
            }
            Err(e) => tracing::warn!(error = %e, deployment = id, "release step failed"),
        }
    }
    send_webhooks(c)?;
    Ok(n)
}

/// Posts each deployment's events not sent yet to its project's webhooks.
fn send_webhooks(c: &Center) -> Result<()> {
    let rt = &c.release;
    let Ok(mut notified) = rt.notified.lock() else {
        return Err(ControlError::new(ErrorCode::Internal, "lock poisoned"));
    };
    let out: Vec<(String, Vec<u8>)> = c.read(|st| {
        if notified.len() > 2 * MAX_DEPLOYMENTS {
            notified.retain(|id, _| st.release.deployments.contains_key(id));
        }
        let mut out = Vec::new();
        for d in st.release.deployments.values() {
            let Some(p) = st.release.projects.get(&d.project) else { continue };
            let last = d.events.len() as u64 + d.events_dropped();
            let seen = *notified.entry(d.id).or_insert_with(|| {
                // First sight on this node: send what is new since it started, not the whole history.
                if d.created_ms >= rt.started_ms { 0 } else { last }
            });
            if p.webhooks.is_empty() || seen >= last {
                notified.insert(d.id, last);
                continue;
            }
            let first_new = seen.saturating_sub(d.events_dropped()) as usize;
            for e in d.events.iter().skip(first_new) {
                let body = serde_json::json!({
                    "project": d.project, "stage": d.stage, "version": d.version, "deployment": d.id,
                    "kind": d.kind, "state": d.state, "event": e,
                });
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                for w in &p.webhooks {
                    out.push((w.clone(), bytes.clone()));
                }
            }
            notified.insert(d.id, last);
        }
        out
    })?;
    drop(notified);
    for (url, body) in out {
        rt.notify(&url, body);
        rt.webhooks_sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

impl Deployment {
    /// How many events were dropped from the front of the bounded history.
    pub fn events_dropped(&self) -> u64 {
        self.events_total.saturating_sub(self.events.len() as u64)
    }
}

/// The agents' wake-up channels of the deployments among `changes` that have hosts with work (for changes
/// another node committed: its agents' long-polls here must not wait for their timeout).
pub fn wake_keys(changes: &[crate::state::Change]) -> Vec<(String, String)> {
    use crate::state::{Change, Rec};
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Put(Rec::Rel(RelRec::Deployment(d))) => Some(d),
            _ => None,
        })
        .flat_map(|d| {
            d.hosts
                .iter()
                .filter(|(_, h)| matches!(h.phase, HostPhase::Assigned))
                .map(|(host, _)| (super::ops::AGENT_ENV.to_string(), host.clone()))
        })
        .collect()
}

/// The assignments of an agent: the hosts' work in running deployments, oldest deployment first.
pub fn assignments(st: &crate::state::State, host: &str) -> Vec<serde_json::Value> {
    st.release
        .deployments
        .values()
        .filter(|d| matches!(d.state, DeployState::Running | DeployState::RollingBack))
        .filter_map(|d| {
            let h = d.hosts.get(host)?;
            if !matches!(h.phase, HostPhase::Assigned | HostPhase::Working) {
                return None;
            }
            let p = st.release.projects.get(&d.project)?;
            let v = st.release.version(&d.project, &h.version)?;
            Some(serde_json::json!({
                "deployment": d.id,
                "project": d.project,
                "stage": d.stage,
                "version": h.version,
                "restart": h.restart,
                "rollback": d.state == DeployState::RollingBack,
                "sha256": artifact_digest(v),
                "hooks": p.hooks,
                "probe": p.probe,
            }))
        })
        .collect()
}

/// The digest of an inline artifact (files are hashed when served).
fn artifact_digest(v: &Version) -> Option<String> {
    match &v.artifact {
        Artifact::Inline(s) => Some(hex_sha256(s.as_bytes())),
        Artifact::File(_) => None,
    }
}

/// Lower-case hex SHA-256.
pub fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Groups samples per deployment for display: (canary, baseline) of a deployment under analysis.
pub fn current_samples(rt: &Runtime, d: &Deployment) -> Option<(Samples, Samples)> {
    if d.state != DeployState::Analysing {
        return None;
    }
    let canary: Vec<String> = d.batches.first().cloned().unwrap_or_default();
    let base: Vec<String> = d.batches.iter().skip(1).flatten().cloned().collect();
    Some((
        rt.samples_since(&d.project, &canary, &d.version, d.timer_ms),
        rt.samples_since(
            &d.project,
            &base,
            d.previous.as_deref().unwrap_or(""),
            d.timer_ms,
        ),
    ))
}

/// The spans of a deployment under analysis so far: (canary hosts, baseline hosts) of `service`; None when
/// not analysing or when neither group sent an entry span since the analysis began.
pub fn current_span_samples(
    signals: &crate::trace::signals::SharedSignals,
    d: &Deployment,
    service: &str,
) -> Option<(Samples, Samples)> {
    if d.state != DeployState::Analysing {
        return None;
    }
    let canary: Vec<String> = d.batches.first().cloned().unwrap_or_default();
    let base: Vec<String> = d.batches.iter().skip(1).flatten().cloned().collect();
    let g = signals.lock().ok()?;
    match (
        g.since(service, &canary, d.timer_ms),
        g.since(service, &base, d.timer_ms),
    ) {
        (None, None) => None,
        (c, b) => Some((span_samples(c), span_samples(b))),
    }
}

/// Unused-agent bookkeeping: the hosts' last poll, for listings.
pub fn last_seen(rt: &Runtime) -> BTreeMap<String, u64> {
    rt.seen
        .lock()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HealthWindow, ListenerLatency};

    fn lat(listener: &str, count: u64, p99_us: u64) -> ListenerLatency {
        ListenerLatency {
            listener: listener.into(),
            count,
            p50_us: p99_us / 3,
            p99_us,
            p999_us: p99_us * 2,
        }
    }

    #[test]
    fn proxies_windows_carry_their_listeners_latency() {
        let rt = Runtime::new();
        let w = |requests, errors| HealthWindow {
            requests,
            errors,
            window_ms: 200,
        };
        let ns = "/edge/DEV/default/proxy";
        rt.add_window(
            ns,
            "p1",
            &[7, 9],
            w(30, 40),
            &[lat("cache", 30, 9_000), lat("idle", 0, 0)],
        );
        rt.add_window(ns, "p2", &[7], w(50, 1), &[lat("cache", 50, 300)]);
        rt.add_window("/other", "p3", &[9], w(5, 0), &[]);
        let (c, b) = rt.gray_samples(ns, 9, 0);
        assert_eq!(
            (c.requests, c.errors),
            (30, 30),
            "errors are capped by requests"
        );
        assert_eq!(
            c.windows,
            vec![WindowLatency {
                count: 30,
                p50_us: 3_000,
                p99_us: 9_000
            }],
            "a listener with no timed request is left out"
        );
        assert_eq!(
            (b.requests, b.windows.len(), b.windows[0].p99_us),
            (50, 1, 300)
        );
        let h = rt.host_windows(&["p2".into(), "p3".into()], 0).unwrap();
        assert_eq!((h.requests, h.windows.len()), (55, 1));
        assert!(rt.host_windows(&["p4".into()], 0).is_none());
        assert_eq!(
            rt.gray_samples(ns, 9, now_ms() + 1_000).0,
            Samples::default()
        );
        // A proxy with many listeners: bounded per window.
        let many: Vec<ListenerLatency> = (0..40).map(|i| lat(&format!("l{i}"), 1, 10)).collect();
        rt.add_window(ns, "p1", &[9], w(40, 0), &many);
        assert_eq!(
            rt.gray_samples(ns, 9, 0).0.windows.len(),
            1 + MAX_LISTENERS_PER_WINDOW
        );
    }
}
