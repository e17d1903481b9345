//! The worker: registers with a control node, heartbeats with a lease, long-polls for items, runs them
//! (shell, HTTP, SQL on a shard, Redis on a shard, registered Rust functions), sends log tails with its
//! heartbeats and results when done, and on shutdown finishes or hands back what it holds.
//!
//! The same library is `furrow worker` (shell, HTTP, SQL, Redis) and the in-process mode: an application
//! builds a [`Worker`], [`Worker::register`]s its functions (`fn:NAME` kinds) and starts it.
//!
//! Why long-poll rather than push: the worker opens every connection (it may sit behind NAT), any control
//! node can answer, and a poll that returns items is also the acknowledgement that the worker took them.
//!
//! Shell items run as `sh -c` in a process group of their own (a stop kills the whole group), in a cgroup v2
//! of their own with the job's memory and CPU when the worker has a usable `--cgroup` directory
//! (`super::cgroup`), else with the job's memory as the address-space rlimit (`RLIMIT_AS`).
//! Output (stdout and stderr interleaved) is kept as a bounded tail.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::cgroup::Limiter;
use super::model::Kind;
use super::sched::{Assignment, ItemReport, MAX_LOG};
use crate::client::{ApiClient, ClientError, encode};

/// A registered in-process function: gets the item, returns a short result or an error.
pub type JobFn = Arc<dyn Fn(&ItemCtx) -> Result<String, String> + Send + Sync>;

/// What an in-process function sees of its item.
pub struct ItemCtx {
    /// The item's parameters.
    pub params: Json,
    /// Environment, job, run id, item index, attempt.
    pub env: String,
    /// The job.
    pub job: String,
    /// The run id.
    pub run: String,
    /// The item index.
    pub idx: i64,
    /// The attempt, from 1.
    pub attempt: i64,
    /// The W3C `traceparent` of this attempt (pass it on to traced calls so they join the run's trace).
    pub traceparent: String,
    cancel: Arc<AtomicBool>,
    log: Arc<Mutex<LogTail>>,
}

impl ItemCtx {
    /// Whether the item was stopped (or the worker is shutting down): return soon.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Appends a line to the item's log.
    pub fn log(&self, line: &str) {
        if let Ok(mut l) = self.log.lock() {
            l.push(line.as_bytes());
            l.push(b"\n");
        }
    }
}

/// A bounded tail of output.
#[derive(Default)]
struct LogTail {
    buf: Vec<u8>,
    dropped: u64,
    /// Bytes written so far when the last heartbeat sent the tail (a tail that did not change is not
    /// sent again).
    sent_at: u64,
}

impl LogTail {
    fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        if self.buf.len() > MAX_LOG {
            let cut = self.buf.len() - MAX_LOG;
            self.buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    fn written(&self) -> u64 {
        self.dropped + self.buf.len() as u64
    }

    /// The last `max` bytes, for a heartbeat.
    fn tail_text(&self, max: usize) -> String {
        let from = self.buf.len().saturating_sub(max);
        String::from_utf8_lossy(&self.buf[from..]).into_owned()
    }

    fn text(&self) -> String {
        let body = String::from_utf8_lossy(&self.buf);
        if self.dropped > 0 {
            format!("[{} earlier bytes dropped]\n{body}", self.dropped)
        } else {
            body.into_owned()
        }
    }
}

/// The most log bytes one heartbeat carries (all items together; at least 256 bytes per item).
const BEAT_LOG_BUDGET: usize = 512 * 1024;

/// Settings of a worker.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// `http://HOST:PORT` of a control node.
    pub server: String,
    /// A token of an administrator or a user with the role `jobs-worker`.
    pub token: Option<String>,
    /// Unique id.
    pub id: String,
    /// CPU offered, thousandths of a core.
    pub cpu_milli: u64,
    /// Memory offered, MiB.
    pub mem_mb: u64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Built-in kinds it runs (`shell`, `http`, `sql`, `redis`); registered functions are added.
    pub kinds: Vec<String>,
    /// The most items at once (1–1,024).
    pub slots: usize,
    /// On shutdown, how long running items may finish before they are killed and handed back.
    pub grace: Duration,
    /// Heartbeat period (a third of the service's lease by default: 1 s).
    pub beat: Duration,
    /// A delegated cgroup v2 directory for per-item limits of shell items (see `jobs::cgroup`); without
    /// one, or when it cannot be used, `RLIMIT_AS`.
    pub cgroup: Option<std::path::PathBuf>,
    /// An environment of the service registry: the worker also registers there as an instance of
    /// `furrow-worker` (`super::reglink`), so that operators see it and can take it offline (drain).
    pub registry_env: Option<String>,
    /// The address the registry instance shows (a worker accepts no connections: it is for operators).
    pub registry_ip: String,
}

impl WorkerOptions {
    /// Defaults: every built-in kind, 4 slots, 1 core, 1 GiB, 10 s grace, 1 s heartbeat.
    pub fn new(server: &str, token: Option<&str>, id: &str) -> Self {
        WorkerOptions {
            server: server.into(),
            token: token.map(str::to_string),
            id: id.into(),
            cpu_milli: 1000,
            mem_mb: 1024,
            labels: BTreeMap::new(),
            kinds: ["shell", "http", "sql", "redis", "reshard"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            slots: 4,
            grace: Duration::from_secs(10),
            beat: Duration::from_secs(1),
            cgroup: None,
            registry_env: None,
            registry_ip: "127.0.0.1".into(),
        }
    }
}

/// A worker being configured.
pub struct Worker {
    opts: WorkerOptions,
    fns: HashMap<String, JobFn>,
    limiter: Arc<Limiter>,
}

struct Held {
    cancel: Arc<AtomicBool>,
    handback: Arc<AtomicBool>,
    pid: Arc<Mutex<Option<i32>>>,
    log: Arc<Mutex<LogTail>>,
}

type HeldMap = Arc<Mutex<HashMap<(String, i64), Held>>>;

/// A started worker.
pub struct WorkerHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    limits: String,
}

impl WorkerHandle {
    /// How shell items are limited (cgroup v2 or rlimits, and why), for the start-up message.
    pub fn limits(&self) -> &str {
        &self.limits
    }

    /// Graceful shutdown: stop taking items, let running ones finish within the grace period, hand back
    /// the rest, deregister; waits for it.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The flag that starts a graceful shutdown (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Waits until the worker has stopped.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn kill_group(pid: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals the process group; no memory is touched.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

impl Worker {
    /// A worker with these options (at most 1,024 slots).
    pub fn new(mut opts: WorkerOptions) -> Self {
        opts.slots = opts.slots.clamp(1, 1024);
        Worker {
            opts,
            fns: HashMap::new(),
            limiter: Arc::new(Limiter::Rlimit("not probed".into())),
        }
    }

    /// Registers an in-process function for jobs of kind `{"type": "fn", "name": NAME}`.
    pub fn register(
        &mut self,
        name: &str,
        f: impl Fn(&ItemCtx) -> Result<String, String> + Send + Sync + 'static,
    ) {
        self.fns.insert(name.to_string(), Arc::new(f));
    }

    /// Starts it on a thread of its own (a small runtime; items run on its blocking pool).
    pub fn start(mut self) -> std::io::Result<WorkerHandle> {
        self.limiter = Arc::new(Limiter::new(self.opts.cgroup.as_deref()));
        let limits = self.limiter.describe();
        if self.opts.cgroup.is_some() && matches!(*self.limiter, Limiter::Rlimit(_)) {
            tracing::warn!("{limits}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(self.opts.slots.max(1) * 2 + 4)
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("furrow-worker-{}", self.opts.id))
            .spawn(move || {
                rt.block_on(run(self, s));
                rt.shutdown_timeout(Duration::from_millis(500));
            })?;
        Ok(WorkerHandle {
            stop,
            thread: Some(thread),
            limits,
        })
    }
}

async fn register(api: &ApiClient, w: &Worker) -> Result<(), ClientError> {
    let mut kinds = w.opts.kinds.clone();
    kinds.extend(w.fns.keys().map(|k| format!("fn:{k}")));
    let body = json!({"id": w.opts.id, "cpu_milli": w.opts.cpu_milli, "mem_mb": w.opts.mem_mb,
        "kinds": kinds, "labels": w.opts.labels});
    api.call("POST", "/v1/jobs/workers", Some(&body))
        .await
        .map(|_| ())
}

async fn run(w: Worker, stop: Arc<AtomicBool>) {
    let api = ApiClient::new(&w.opts.server, w.opts.token.as_deref());
    let base = format!("/v1/jobs/workers/{}", encode(&w.opts.id));
    let mut delay = Duration::from_millis(100);
    loop {
        match register(&api, &w).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "worker registration failed; retrying");
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::info!(id = %w.opts.id, "worker registered");
    let w = Arc::new(w);
    let reg = w.opts.registry_env.clone().map(|env| {
        let (api, w, stop) = (api.clone(), w.clone(), stop.clone());
        tokio::spawn(registry_instance(api, w, env, stop))
    });
    let held: HeldMap = Arc::new(Mutex::new(HashMap::new()));
    let draining = Arc::new(AtomicBool::new(false));
    // Heartbeats.
    let beat = {
        let (api, w, held, draining, base) = (
            api.clone(),
            w.clone(),
            held.clone(),
            draining.clone(),
            base.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(w.opts.beat).await;
                // Log tails that changed since the last beat, within a budget that keeps the beat far below
                // the service's 2 MiB body limit however many items run.
                let running: Vec<Json> = held
                    .lock()
                    .map(|h| {
                        let per_item = (BEAT_LOG_BUDGET / h.len().max(1)).clamp(256, MAX_LOG);
                        h.iter()
                            .map(|((run, idx), x)| {
                                let log = x.log.lock().ok().and_then(|mut l| {
                                    let w = l.written();
                                    (w != l.sent_at).then(|| {
                                        l.sent_at = w;
                                        l.tail_text(per_item)
                                    })
                                });
                                match log {
                                    Some(log) => json!({"run": run, "idx": idx, "log": log}),
                                    None => json!({"run": run, "idx": idx}),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let body = json!({"running": running, "draining": draining.load(Ordering::SeqCst)});
                match api.call("POST", &format!("{base}/beat"), Some(&body)).await {
                    Ok(v) => {
                        for s in v["stop"].as_array().cloned().unwrap_or_default() {
                            let key = (
                                s["run"].as_str().unwrap_or("").to_string(),
                                s["idx"].as_i64().unwrap_or(-1),
                            );
                            if let Ok(h) = held.lock()
                                && let Some(x) = h.get(&key)
                            {
                                x.cancel.store(true, Ordering::SeqCst);
                                if let Ok(p) = x.pid.lock()
                                    && let Some(pid) = *p
                                {
                                    kill_group(pid);
                                }
                            }
                        }
                    }
                    Err(ClientError::Api { status: 404, .. }) => {
                        let _ = register(&api, &w).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "worker heartbeat failed"),
                }
            }
        })
    };
    // Polling: the long-poll runs as a task of its own so that a shutdown never waits for it.
    // Reports go through one task that sends whatever has piled up as one batch (one request, one
    // transaction per run on the service).
    let (report_tx, mut report_rx) = tokio::sync::mpsc::channel::<ItemReport>(4096);
    let reporter = {
        let (api, held, path) = (api.clone(), held.clone(), format!("{base}/done"));
        tokio::spawn(async move {
            while let Some(first) = report_rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match report_rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let body = json!({ "reports": batch });
                for attempt in 0..5 {
                    match api.call("POST", &path, Some(&body)).await {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, attempt, "item reports failed");
                            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                        }
                    }
                }
                if let Ok(mut h) = held.lock() {
                    for r in &batch {
                        h.remove(&(r.run.clone(), r.idx));
                    }
                }
            }
        })
    };
    let items_ctx = ItemsCtx {
        w: w.clone(),
        held: held.clone(),
        stop: stop.clone(),
        reports: report_tx,
    };
    let mut inflight: Option<tokio::task::JoinHandle<Result<(u16, Json), ClientError>>> = None;
    while !stop.load(Ordering::SeqCst) {
        if inflight.is_none() {
            let busy = held.lock().map(|h| h.len()).unwrap_or(0);
            let free = w.opts.slots.saturating_sub(busy);
            if free == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let (api, path) = (api.clone(), format!("{base}/poll"));
            let body = json!({"max": free, "wait_ms": 2000});
            inflight = Some(tokio::spawn(async move {
                api.call_status("POST", &path, Some(&body), Duration::from_secs(10))
                    .await
            }));
        }
        let Some(task) = inflight.as_mut() else {
            continue;
        };
        let r = tokio::select! {
            r = task => r,
            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
        };
        inflight = None;
        match r {
            Ok(Ok((_, v))) => {
                let items: Vec<Assignment> =
                    serde_json::from_value(v["items"].clone()).unwrap_or_default();
                for a in items {
                    items_ctx.start(a);
                }
            }
            Ok(Err(ClientError::Api { status: 404, .. })) => {
                let _ = register(&api, &w).await;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "worker poll failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => tracing::warn!(error = %e, "worker poll task"),
        }
    }
    // Graceful shutdown: no new items; running ones get the grace period, then are killed and handed back.
    draining.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + w.opts.grace;
    while held.lock().map(|h| !h.is_empty()).unwrap_or(false) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Ok(h) = held.lock() {
        for x in h.values() {
            x.handback.store(true, Ordering::SeqCst);
            x.cancel.store(true, Ordering::SeqCst);
            if let Ok(p) = x.pid.lock()
                && let Some(pid) = *p
            {
                kill_group(pid);
            }
        }
    }
    // A poll still in flight may bring items: they are handed back at once (the stop flag is set).
    if let Some(task) = inflight
        && let Ok(Ok((_, v))) = task.await
    {
        let items: Vec<Assignment> = serde_json::from_value(v["items"].clone()).unwrap_or_default();
        for a in items {
            items_ctx.start(a);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while held.lock().map(|h| !h.is_empty()).unwrap_or(false) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    beat.abort();
    drop(items_ctx);
    let _ = tokio::time::timeout(Duration::from_secs(5), reporter).await;
    let _ = api.call("DELETE", &base, None).await;
    if let Some(reg) = reg
        && let Ok(Some(r)) = reg.await
    {
        let _ = tokio::task::spawn_blocking(move || r.deregister()).await;
    }
    tracing::info!(id = %w.opts.id, "worker stopped");
}

/// Registers the worker as an instance of `furrow-worker` in `env` (id = worker id; metadata: slots, CPU,
/// memory, kinds, labels), retrying with backoff until it succeeds or the worker stops; the registration's
/// own thread heartbeats it at the worker's heartbeat period. Returns it (for deregistration on shutdown).
async fn registry_instance(
    api: ApiClient,
    w: Arc<Worker>,
    env: String,
    stop: Arc<AtomicBool>,
) -> Option<crate::registry::client::Registration> {
    let mut metadata = BTreeMap::new();
    metadata.insert("slots".to_string(), w.opts.slots.to_string());
    metadata.insert("cpu_milli".to_string(), w.opts.cpu_milli.to_string());
    metadata.insert("mem_mb".to_string(), w.opts.mem_mb.to_string());
    let mut kinds = w.opts.kinds.clone();
    kinds.extend(w.fns.keys().map(|k| format!("fn:{k}")));
    metadata.insert("kinds".to_string(), kinds.join(","));
    for (k, v) in &w.opts.labels {
        metadata.insert(format!("label.{k}"), v.clone());
    }
    let input = crate::registry::ops::InstanceInput {
        id: w.opts.id.clone(),
        ip: w.opts.registry_ip.clone(),
        // Workers listen nowhere; the registry wants a port: 1 marks "no endpoint".
        port: 1,
        metadata,
        ..Default::default()
    };
    let beat = w.opts.beat;
    let mut delay = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) {
        let (api, env, input) = (api.clone(), env.clone(), input.clone());
        let r = tokio::task::spawn_blocking(move || {
            crate::registry::client::Registration::start(
                api,
                &env,
                super::reglink::WORKER_SERVICE,
                input,
                Some(beat),
            )
        })
        .await;
        match r {
            Ok(Ok(reg)) => {
                tracing::info!(id = %w.opts.id, "worker registered in the service registry");
                return Some(reg);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "registry registration failed; retrying"),
            Err(e) => tracing::warn!(error = %e, "registry registration task"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    None
}

/// What starting an item needs.
struct ItemsCtx {
    w: Arc<Worker>,
    held: HeldMap,
    stop: Arc<AtomicBool>,
    reports: tokio::sync::mpsc::Sender<ItemReport>,
}

impl ItemsCtx {
    /// Runs an assigned item on a task of its own and reports it; during shutdown it is handed back
    /// without running.
    fn start(&self, a: Assignment) {
        let x = Held {
            cancel: Arc::new(AtomicBool::new(false)),
            handback: Arc::new(AtomicBool::new(false)),
            pid: Arc::new(Mutex::new(None)),
            log: Arc::new(Mutex::new(LogTail::default())),
        };
        let (cancel, handback, pid, log) = (
            x.cancel.clone(),
            x.handback.clone(),
            x.pid.clone(),
            x.log.clone(),
        );
        if let Ok(mut h) = self.held.lock() {
            h.insert((a.run.clone(), a.idx), x);
        }
        if self.stop.load(Ordering::SeqCst) {
            handback.store(true, Ordering::SeqCst);
            cancel.store(true, Ordering::SeqCst);
        }
        let (w, reports) = (self.w.clone(), self.reports.clone());
        tokio::spawn(async move {
            let mut rep = if cancel.load(Ordering::SeqCst) {
                ItemReport {
                    run: a.run.clone(),
                    idx: a.idx,
                    status: "handback".into(),
                    exit_code: None,
                    result: String::new(),
                    log: String::new(),
                }
            } else {
                execute(&w, &a, cancel.clone(), pid, log.clone()).await
            };
            if handback.load(Ordering::SeqCst) {
                rep.status = "handback".into();
            }
            // Bounded: at most one report per held item is ever queued.
            let _ = reports.send(rep).await;
        });
    }
}

fn subst(s: &str, params: &Json) -> String {
    let shard = params["shard"].as_str().unwrap_or("");
    let index = params["index"]
        .as_i64()
        .map(|i| i.to_string())
        .unwrap_or_default();
    s.replace("{shard}", shard).replace("{index}", &index)
}

fn report(
    a: &Assignment,
    status: &str,
    exit_code: Option<i64>,
    result: String,
    log: &Arc<Mutex<LogTail>>,
) -> ItemReport {
    ItemReport {
        run: a.run.clone(),
        idx: a.idx,
        status: status.into(),
        exit_code,
        result,
        log: log.lock().map(|l| l.text()).unwrap_or_default(),
    }
}

async fn execute(
    w: &Worker,
    a: &Assignment,
    cancel: Arc<AtomicBool>,
    pid: Arc<Mutex<Option<i32>>>,
    log: Arc<Mutex<LogTail>>,
) -> ItemReport {
    let timeout = Duration::from_millis(a.timeout_ms);
    let (a2, c2, l2) = (a.clone(), cancel.clone(), log.clone());
    let outcome: Result<(String, Option<i64>, String), String> = match &a.kind {
        Kind::Shell { command } => {
            let cmd = command.clone();
            let lim = w.limiter.clone();
            tokio::task::spawn_blocking(move || run_shell(&cmd, &a2, &lim, timeout, &c2, &pid, &l2))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        }
        Kind::Http {
            method,
            url,
            body,
            ca_file,
        } => {
            let body = body.clone().unwrap_or_else(|| a.params.clone());
            match run_http(
                method,
                url,
                &body,
                ca_file.as_deref(),
                &a.traceparent,
                timeout,
            )
            .await
            {
                Ok((code, text)) if (200..300).contains(&code) => {
                    Ok(("ok".into(), Some(code as i64), text))
                }
                Ok((code, text)) => Ok(("failed".into(), Some(code as i64), text)),
                Err(e) => Err(e),
            }
        }
        Kind::Sql {
            listener,
            user,
            password,
            database,
            sql,
            shards,
        } if a.idx == super::model::MAP_IDX => {
            let (listener, user, password, database, shards, sql) = (
                listener.clone(),
                user.clone(),
                password.clone(),
                database.clone(),
                shards.clone(),
                sql.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let src = super::map_step::SqlSource {
                    listener: &listener,
                    user: &user,
                    password: &password,
                    database: &database,
                    shards: &shards,
                };
                super::map_step::sql_items(&src, &sql, timeout)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map(|r| ("ok".to_string(), None, r))
        }
        Kind::Redis { shards, command } if a.idx == super::model::MAP_IDX => {
            let (shards, command) = (shards.clone(), command.clone());
            tokio::task::spawn_blocking(move || {
                super::map_step::redis_items(&shards, &command, timeout)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map(|r| ("ok".to_string(), None, r))
        }
        Kind::Sql {
            listener,
            user,
            password,
            database,
            sql,
            ..
        } => {
            let (listener, user, password, database) = (
                listener.clone(),
                user.clone(),
                password.clone(),
                database.clone(),
            );
            let sql = subst(sql, &a.params);
            let shard = a.params["shard"].as_str().unwrap_or("").to_string();
            tokio::task::spawn_blocking(move || {
                run_sql(
                    &listener, &user, &password, &database, &shard, &sql, timeout,
                )
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map(|r| ("ok".to_string(), None, r))
        }
        Kind::Redis { command, .. } => {
            let args: Vec<String> = command.iter().map(|c| subst(c, &a.params)).collect();
            let addr = a.params["shard"].as_str().unwrap_or("").to_string();
            tokio::task::spawn_blocking(move || run_redis(&addr, &args, timeout))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        }
        Kind::Reshard {
            admin,
            sharding,
            table,
            rule,
            batch,
            verify,
            peers,
            rate,
            confirm,
        } => {
            let mut start: Vec<String> = ["RESHARD", "START", sharding, table, rule]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if let Some(b) = batch {
                start.extend(["BATCH".to_string(), b.to_string()]);
            }
            if let Some(v) = verify {
                start.extend(["VERIFY".to_string(), v.clone()]);
            }
            if !peers.is_empty() {
                start.extend(["PEERS".to_string(), peers.join(",")]);
            }
            if let Some(r) = rate {
                start.extend(["RATE".to_string(), r.to_string()]);
            }
            let (addr, confirm) = (admin.clone(), *confirm);
            tokio::task::spawn_blocking(move || {
                run_reshard(&addr, &start, confirm, timeout, &c2, &l2)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        }
        Kind::Fn { name } => match w.fns.get(name).cloned() {
            None => Err(format!("no function {name:?} registered in this worker")),
            Some(f) => {
                let ctx = ItemCtx {
                    params: a.params.clone(),
                    env: a.env.clone(),
                    job: a.job.clone(),
                    run: a.run.clone(),
                    idx: a.idx,
                    attempt: a.attempt,
                    traceparent: a.traceparent.clone(),
                    cancel: cancel.clone(),
                    log: log.clone(),
                };
                let task = tokio::task::spawn_blocking(move || f(&ctx));
                match tokio::time::timeout(timeout, task).await {
                    Err(_) => Ok((
                        "timeout".into(),
                        None,
                        "timed out (the function keeps running until it checks cancelled())".into(),
                    )),
                    Ok(Err(e)) => Err(format!("the function panicked: {e}")),
                    Ok(Ok(Ok(r))) => Ok(("ok".into(), None, r)),
                    Ok(Ok(Err(e))) => Ok(("failed".into(), None, e)),
                }
            }
        },
    };
    match outcome {
        Ok((status, code, result)) => {
            let status = if cancel.load(Ordering::SeqCst) && status != "ok" {
                "stopped"
            } else {
                status.as_str()
            };
            report(a, status, code, result, &log)
        }
        Err(e) => report(
            a,
            if cancel.load(Ordering::SeqCst) {
                "stopped"
            } else {
                "failed"
            },
            None,
            e,
            &log,
        ),
    }
}

fn run_shell(
    cmd: &str,
    a: &Assignment,
    limiter: &Limiter,
    timeout: Duration,
    cancel: &AtomicBool,
    pid: &Mutex<Option<i32>>,
    log: &Arc<Mutex<LogTail>>,
) -> Result<(String, Option<i64>, String), String> {
    use std::os::unix::process::CommandExt;
    let mem = a.resources.mem_mb;
    let cg = match limiter {
        Limiter::Cgroup(root) if mem > 0 || a.resources.cpu_milli > 0 => Some(
            root.item(mem, a.resources.cpu_milli)
                .map_err(|e| format!("cgroup for the item: {e}"))?,
        ),
        _ => None,
    };
    let procs_fd = cg.as_ref().map(|c| c.procs_fd()).unwrap_or(-1);
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .env("FURROW_PARAMS", a.params.to_string())
        .env("FURROW_ITEM", a.idx.to_string())
        .env("FURROW_JOB", &a.job)
        .env("FURROW_ENV", &a.env)
        .env("FURROW_RUN", &a.run)
        .env("FURROW_ATTEMPT", a.attempt.to_string())
        // W3C trace context for instrumented programs (OpenTelemetry SDKs read TRACEPARENT from the
        // environment): their spans become children of this item's span in the run's trace.
        .env("TRACEPARENT", &a.traceparent)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, write, setrlimit).
    unsafe {
        c.pre_exec(move || {
            libc::setsid();
            if procs_fd >= 0 {
                // "0": move the writing process (this child) into the item's cgroup.
                if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if mem > 0 {
                let bytes = (mem as libc::rlim_t).saturating_mul(1024 * 1024);
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                libc::setrlimit(libc::RLIMIT_AS, &lim);
            }
            Ok(())
        });
    }
    let mut child = c.spawn().map_err(|e| format!("spawn sh: {e}"))?;
    let id = child.id() as i32;
    if let Ok(mut p) = pid.lock() {
        *p = Some(id);
    }
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut l) = log.lock() {
                    l.push(&buf[..n]);
                }
            }
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(format!("wait: {e}")),
        }
        if cancel.load(Ordering::SeqCst) {
            kill_group(id);
        } else if Instant::now() >= deadline {
            timed_out = true;
            kill_group(id);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The group may still hold the pipes (a background child): do not wait on readers for long.
    kill_group(id);
    for r in readers {
        let _ = r.join();
    }
    if let Ok(mut p) = pid.lock() {
        *p = None;
    }
    let code = status.code().map(i64::from);
    if cg.as_ref().is_some_and(|c| c.oom_killed()) {
        return Ok((
            "failed".into(),
            code,
            format!("killed by its memory limit (cgroup memory.max {mem} MiB)"),
        ));
    }
    drop(cg);
    if timed_out {
        return Ok((
            "timeout".into(),
            code,
            format!("killed after {} ms", timeout.as_millis()),
        ));
    }
    if cancel.load(Ordering::SeqCst) {
        return Ok(("stopped".into(), code, "killed: stopped".into()));
    }
    let ok = status.success();
    let result = match code {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".into(),
    };
    Ok((if ok { "ok" } else { "failed" }.into(), code, result))
}

async fn run_http(
    method: &str,
    url: &str,
    body: &Json,
    ca_file: Option<&str>,
    traceparent: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let bytes = body.to_string().into_bytes();
    let send = if method == "GET" || method == "DELETE" {
        None
    } else {
        Some(bytes.as_slice())
    };
    let headers: &[(&str, &str)] = if traceparent.is_empty() {
        &[]
    } else {
        &[("traceparent", traceparent)]
    };
    super::https::call(url, method, headers, send, ca_file, timeout).await
}

fn run_sql(
    listener: &str,
    user: &str,
    password: &str,
    database: &str,
    shard: &str,
    sql: &str,
    timeout: Duration,
) -> Result<String, String> {
    let url = crate::mysql::MysqlUrl {
        user: user.into(),
        password: password.into(),
        addr: listener.into(),
        database: "furrow".into(),
    };
    let mut c = crate::mysql::Conn::connect(&url, timeout.min(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    if !database.is_empty() {
        c.query(&format!("USE `{}`", database.replace('`', "``")))
            .map_err(|e| e.to_string())?;
    }
    let text = format!("/* furrow:shard={shard} */ {sql}");
    let rows = c.query(&text).map_err(|e| e.to_string())?;
    let rows: Vec<Vec<Json>> = rows
        .iter()
        .take(100)
        .map(|r| {
            r.iter()
                .map(|c| match c {
                    Some(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
                    None => Json::Null,
                })
                .collect()
        })
        .collect();
    Ok(json!({"shard": shard, "rows": rows}).to_string())
}

/// A Redis reply as JSON (aggregates cut at 100 elements).
pub(super) fn frame_json(f: &codec::resp::Frame) -> Json {
    use codec::resp::Frame;
    match f {
        Frame::Simple(b) | Frame::Bulk(b) | Frame::Double(b) | Frame::BigNumber(b) => {
            Json::String(String::from_utf8_lossy(b).into_owned())
        }
        Frame::Error(b) | Frame::BlobError(b) => json!({"error": String::from_utf8_lossy(b)}),
        Frame::Integer(i) => json!(i),
        Frame::Boolean(b) => json!(b),
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => {
            Json::Array(v.iter().take(100).map(frame_json).collect())
        }
        Frame::Map(m) => Json::Array(
            m.iter()
                .take(100)
                .map(|(k, v)| json!([frame_json(k), frame_json(v)]))
                .collect(),
        ),
        Frame::Attribute { value, .. } => frame_json(value),
        Frame::Verbatim { text, .. } => Json::String(String::from_utf8_lossy(text).into_owned()),
        Frame::NullBulk | Frame::NullArray | Frame::Null => Json::Null,
    }
}

/// How often a reshard item asks `RESHARD STATUS`.
const RESHARD_POLL: Duration = Duration::from_millis(500);

/// A reshard item: START, then STATUS every [`RESHARD_POLL`] (each change of its phase, partition,
/// rows copied or last verify logged as one line) until the cut-over, CONFIRM when `confirm` and
/// STATUS until confirmed. The result is the last STATUS. A stopped item pauses the copy
/// (`RESHARD PAUSE`; RESUME or ABORT it on the admin port or in the console); a timed-out one
/// leaves the reshard running.
fn run_reshard(
    addr: &str,
    start: &[String],
    confirm: bool,
    timeout: Duration,
    cancel: &AtomicBool,
    log: &Mutex<LogTail>,
) -> Result<(String, Option<i64>, String), String> {
    let deadline = std::time::Instant::now() + timeout;
    let call = |args: &[&str]| -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let f = super::map_step::redis_call(addr, &args, Duration::from_secs(30), 1 << 16, 16)
            .map_err(|e| e.to_string())?;
        let j = frame_json(&f);
        let text = j
            .as_str()
            .or_else(|| j["error"].as_str())
            .map_or_else(|| j.to_string(), str::to_string);
        if f.is_error() {
            Err(format!("{}: {text}", args[..2].join(" ")))
        } else {
            Ok(text)
        }
    };
    let note = |line: &str| {
        if let Ok(mut l) = log.lock() {
            l.push(line.as_bytes());
            l.push(b"\n");
        }
    };
    let field = |status: &str, name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_string()
    };
    let started = start.iter().map(String::as_str).collect::<Vec<_>>();
    note(call(&started)?.trim());
    let (mut last, mut logged) = (String::new(), String::new());
    let mut confirming = false;
    loop {
        if cancel.load(Ordering::Relaxed) {
            let paused = call(&["RESHARD", "PAUSE"]).unwrap_or_else(|e| e);
            note(&format!("stopped: {}", paused.trim()));
            return Err(format!("stopped: {}", paused.trim()));
        }
        if std::time::Instant::now() >= deadline {
            return Ok((
                "timeout".into(),
                None,
                format!("timed out; the reshard goes on in the proxy (RESHARD STATUS):\n{last}"),
            ));
        }
        std::thread::sleep(RESHARD_POLL);
        let status = call(&["RESHARD", "STATUS"])?;
        let headline = status.lines().next().unwrap_or_default();
        let phase = field(&status, "phase");
        let line = format!(
            "phase {phase}, partition {}, rows copied {}, last verify: {}",
            field(&status, "partition"),
            field(&status, "rows copied"),
            field(&status, "last verify")
        );
        if line != logged {
            note(&line);
            logged = line;
        }
        last = status.clone();
        if headline.contains(": failed:") || headline.contains(": interrupted") {
            return Ok(("failed".into(), None, status));
        }
        match phase.as_str() {
            "CutOver" if !confirm => {
                note(&format!(
                    "cut over ({}); not confirmed, as configured",
                    field(&status, "cut-over pause")
                ));
                return Ok(("ok".into(), None, status));
            }
            "CutOver" if !confirming => {
                note(&format!("cut over ({})", field(&status, "cut-over pause")));
                note(call(&["RESHARD", "CONFIRM"])?.trim());
                confirming = true;
            }
            "Confirmed" => return Ok(("ok".into(), None, status)),
            "Aborted" => return Ok(("failed".into(), None, status)),
            _ => {}
        }
    }
}

fn run_redis(
    addr: &str,
    args: &[String],
    timeout: Duration,
) -> Result<(String, Option<i64>, String), String> {
    let f = super::map_step::redis_call(addr, args, timeout, 1 << 20, 1 << 20)
        .map_err(|e| e.to_string())?;
    let failed = f.is_error();
    let text = json!({"shard": addr, "reply": frame_json(&f)}).to_string();
    Ok((if failed { "failed" } else { "ok" }.into(), None, text))
}
