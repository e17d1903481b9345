//! The scheduler: firing due triggers, placing items on workers, leases, retries, run completion, DAG
//! successors, stop, history and retention — every step one short transaction on the runtime tables
//! (`super::db`), run by every control node.
//!
//! - **Triggers** (`furrow_job_triggers`, one row per job): each node, every 50 ms, claims the due rows with
//!   `FOR UPDATE SKIP LOCKED`, inserts the runs and their items and moves `next_ms`, in one transaction. A
//!   run's id is `ENV/JOB/SCHEDULED_MS` (primary key), so a firing time can never produce two runs, even
//!   across nodes. Two nodes share the due triggers rather than serialize on one lock; a node that dies
//!   holds nothing once MariaDB drops its connection.
//! - **Items** wait `pending` until a worker polls; the node it polls claims pending items with `SKIP
//!   LOCKED`, keeps those the worker can run (kind, labels, free CPU and memory) and marks them `running` with
//!   a lease. Worker heartbeats extend the leases; an item whose lease or deadline passed is taken back by
//!   whichever node looks first (every 500 ms): re-run (at-least-once), `lost` (at-most-once), or failed by
//!   timeout with retries.
//! - **Completion** locks the run row first (then its items), so the last two items of a run finishing on
//!   two nodes at once cannot both miss the end. After the commit: the next fixed-delay firing, failure
//!   alerts, and the jobs that run after this one (under their trigger row's lock, so two upstreams finishing
//!   together fire the successor once).
//!
//! Clock: node clocks must agree within a fraction of a lease (NTP).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::db::{DbError, Dialect, JobDb, Row, Sess, num, opt_num, text};
use super::model::{Delivery, JobRec, JobSpec, Kind, Misfire, Resources, Schedule, UpstreamPolicy};
use super::model::{MAP_IDX, MAX_REDUCE_INPUT, REDUCE_IDX};
use super::span::{ItemSpan, RunSpan};
use crate::center::Center;
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::now_ms;
use crate::trace::model::SpanRec;

/// A trigger fired later than this is a misfire (its policy applies).
pub const MISFIRE_GRACE_MS: i64 = 1_000;
/// Extra time past an item's timeout before a node takes it back from a silent worker.
pub const DEADLINE_GRACE_MS: i64 = 5_000;
/// The most bytes of log kept per item (the tail).
pub const MAX_LOG: usize = 64 * 1024;
/// The most bytes of result kept per item.
pub const MAX_RESULT: usize = 16 * 1024;

/// Settings of the jobs runtime.
#[derive(Clone, Debug)]
pub struct JobsOptions {
    /// Worker and item lease: a worker silent this long is dead and its items are taken back.
    pub lease_ms: i64,
    /// Runs (with their items and logs) ended longer ago are deleted.
    pub retention_ms: i64,
}

impl Default for JobsOptions {
    fn default() -> Self {
        JobsOptions {
            lease_ms: 3_000,
            retention_ms: 7 * 86_400_000,
        }
    }
}

/// Counters of this node.
#[derive(Default)]
pub struct JobStats {
    /// Runs fired by schedule.
    pub fired: AtomicU64,
    /// Items handed to workers.
    pub dispatched: AtomicU64,
    /// Items taken back from dead or late workers.
    pub reaped: AtomicU64,
    /// Items finished (reported by workers).
    pub finished: AtomicU64,
    /// Run and item spans handed to the trace collector.
    pub spans: AtomicU64,
    /// Spans the collector refused (queue full).
    pub spans_dropped: AtomicU64,
    /// Lateness of the last scheduled firings, ms (at most 10,000 kept).
    pub lateness: Mutex<VecDeque<u64>>,
    /// Runs that ended on this node, by (env, job, state).
    pub runs: Mutex<BTreeMap<(String, String, String), u64>>,
}

/// The jobs runtime of one control node.
pub struct Jobs {
    /// The runtime tables.
    pub db: JobDb,
    /// This node's id (in runs' `node` column).
    pub node: String,
    /// Woken when this node creates pending items (long-polling workers look at once).
    pub notify: tokio::sync::Notify,
    /// Options.
    pub opts: JobsOptions,
    /// Counters.
    pub stats: JobStats,
    synced: Mutex<HashMap<(String, String), u64>>,
    /// A runtime row named a job this node does not know (yet) or knows at an older revision: the next
    /// scheduler step catches up with the store before deciding about it (see [`Jobs::tick`]).
    stale: AtomicBool,
    last_reap: AtomicU64,
    last_retention: AtomicU64,
}

/// What a worker advertises.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerInfo {
    /// Unique id.
    pub id: String,
    /// CPU it offers, thousandths of a core.
    pub cpu_milli: u64,
    /// Memory it offers, MiB.
    pub mem_mb: u64,
    /// What it runs: `shell`, `http`, `sql`, `redis`, `fn:NAME`.
    pub kinds: Vec<String>,
    /// Labels jobs can ask for.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// An item handed to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The run id.
    pub run: String,
    /// The item index.
    pub idx: i64,
    /// Environment.
    pub env: String,
    /// Job.
    pub job: String,
    /// The item's parameters.
    pub params: Json,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// What to run.
    pub kind: Kind,
    /// Kill it after this long.
    pub timeout_ms: u64,
    /// What it was placed with.
    pub resources: Resources,
    /// The W3C `traceparent` of this attempt's span (the run's trace; see `jobs::span`).
    #[serde(default)]
    pub traceparent: String,
}

/// A worker's report on an item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemReport {
    /// The run id.
    pub run: String,
    /// The item index.
    pub idx: i64,
    /// `ok`, `failed`, `timeout`, `stopped`, or `handback` (not run: give it to another worker).
    pub status: String,
    /// The process exit status, if any.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// A short result (bounded).
    #[serde(default)]
    pub result: String,
    /// Captured output (the tail is kept).
    #[serde(default)]
    pub log: String,
}

/// A run that just ended (what happens after the commit).
#[derive(Clone, Debug)]
pub struct RunDone {
    run: String,
    env: String,
    job: String,
    state: String,
    cause: String,
    detail: String,
    fired_ms: i64,
    ended_ms: i64,
}

/// The run id of a firing.
pub fn run_id(env: &str, job: &str, scheduled_ms: i64) -> String {
    format!("{env}/{job}/{scheduled_ms:013}")
}

/// The `host:port` an HTTP job calls (an item span's peer in the dependency graph).
fn http_peer(spec: &JobSpec) -> Option<String> {
    let Kind::Http { url, .. } = &spec.kind else {
        return None;
    };
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    Some(rest.split('/').next().unwrap_or(rest).to_string())
}

/// The environment and job of a run id (`None` when it is not one).
fn run_job(run: &str) -> Option<(&str, &str)> {
    let (rest, _ms) = run.rsplit_once('/')?;
    rest.split_once('/')
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

fn head(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn opt(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "NULL".into())
}

/// A live worker as read for placement.
#[derive(Clone, Debug)]
struct LiveWorker {
    id: String,
    cpu: u64,
    mem: u64,
    kinds: Vec<String>,
    labels: BTreeMap<String, String>,
}

fn live_workers(s: &mut Sess<'_>, now: i64) -> std::result::Result<Vec<LiveWorker>, DbError> {
    let rows = s.q(&format!(
        "SELECT id, cpu_milli, mem_mb, kinds, labels FROM furrow_job_workers WHERE lease_ms >= {now} AND draining = 0"
    ))?;
    Ok(rows
        .iter()
        .map(|r| LiveWorker {
            id: text(r, 0),
            cpu: num(r, 1).max(0) as u64,
            mem: num(r, 2).max(0) as u64,
            kinds: serde_json::from_str(&text(r, 3)).unwrap_or_default(),
            labels: serde_json::from_str(&text(r, 4)).unwrap_or_default(),
        })
        .collect())
}

fn runs_kind(w: &LiveWorker, spec: &JobSpec) -> bool {
    runs_item_kind(w, spec, &spec.kind)
}

/// Whether `w` runs items of `kind` (the job's kind, or its map or reduce step's) with `spec`'s labels.
fn runs_item_kind(w: &LiveWorker, spec: &JobSpec, kind: &super::model::Kind) -> bool {
    let cap = kind.capability();
    w.kinds.contains(&cap) && spec.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v))
}

/// Whether some live worker could ever run an item of `spec`; else the reason.
pub fn placement(spec: &JobSpec, workers: &[WorkerInfo]) -> std::result::Result<(), String> {
    let ws: Vec<LiveWorker> = workers
        .iter()
        .map(|w| LiveWorker {
            id: w.id.clone(),
            cpu: w.cpu_milli,
            mem: w.mem_mb,
            kinds: w.kinds.clone(),
            labels: w.labels.clone(),
        })
        .collect();
    place(spec, &ws)
}

fn place(spec: &JobSpec, workers: &[LiveWorker]) -> std::result::Result<(), String> {
    let cap = spec.kind.capability();
    let able: Vec<&LiveWorker> = workers.iter().filter(|w| runs_kind(w, spec)).collect();
    if able.is_empty() {
        let labels = if spec.labels.is_empty() {
            String::new()
        } else {
            format!(" with labels {:?}", spec.labels)
        };
        return Err(format!(
            "fits nowhere: no live worker runs {cap:?}{labels} ({} live workers)",
            workers.len()
        ));
    }
    let need = spec.resources;
    if able
        .iter()
        .any(|w| w.cpu >= need.cpu_milli && w.mem >= need.mem_mb)
    {
        return Ok(());
    }
    let mut sizes: Vec<String> = able
        .iter()
        .take(5)
        .map(|w| format!("{} ({} mCPU, {} MiB)", w.id, w.cpu, w.mem))
        .collect();
    if able.len() > 5 {
        sizes.push(format!("{} more", able.len() - 5));
    }
    Err(format!(
        "fits nowhere: an item needs {} mCPU and {} MiB; the live workers running {cap:?} offer {}",
        need.cpu_milli,
        need.mem_mb,
        sizes.join(", ")
    ))
}

/// The firing times due at `now` starting from `next_ms`, per the misfire policy, and the next time to
/// wait for.
pub fn due_times(spec: &JobSpec, next_ms: i64, now: i64) -> (Vec<i64>, Option<i64>) {
    let cron = spec.cron().ok().flatten();
    let step = |t: i64| -> Option<i64> {
        match &spec.schedule {
            Schedule::Cron { .. } => cron.as_ref().and_then(|(c, z)| c.next_after(t, z)),
            Schedule::Rate { every_ms } => Some(t + *every_ms as i64),
            _ => None,
        }
    };
    if !matches!(spec.schedule, Schedule::Cron { .. } | Schedule::Rate { .. }) {
        // One-off and fixed delay: fire once; fixed delay waits for the run's end.
        return (vec![next_ms], None);
    }
    let mut due = vec![next_ms];
    let mut t = next_ms;
    while due.len() <= 100 {
        match step(t) {
            Some(n) if n <= now => {
                due.push(n);
                t = n;
            }
            _ => break,
        }
    }
    let Some(&last) = due.last() else {
        return (vec![], step(now));
    };
    let late = now - next_ms > MISFIRE_GRACE_MS || due.len() > 1;
    let fires = if !late {
        due
    } else {
        match spec.misfire {
            Misfire::FireAll => {
                due.truncate(100);
                due
            }
            Misfire::FireOnce => vec![last],
            Misfire::Skip => due
                .into_iter()
                .filter(|t| now - t <= MISFIRE_GRACE_MS)
                .collect(),
        }
    };
    // `last` is the latest due time (unless 101 were due), so the step after it is in the future.
    let next = match spec.misfire {
        Misfire::FireAll => step(*fires.last().unwrap_or(&last)),
        _ => step(last),
    };
    (fires, next)
}

/// The first firing time after saving (or resuming) at `now`.
pub fn first_time(spec: &JobSpec, now: i64) -> Option<i64> {
    match &spec.schedule {
        Schedule::Cron { .. } => spec
            .cron()
            .ok()
            .flatten()
            .and_then(|(c, z)| c.next_after(now, &z)),
        Schedule::Rate { every_ms } => Some(now + *every_ms as i64),
        Schedule::Delay { delay_ms } => Some(now + *delay_ms as i64),
        Schedule::Once { at_ms } => Some(*at_ms as i64),
        Schedule::Manual => None,
    }
}

impl Jobs {
    /// Opens the runtime tables next to the store `url`.
    pub fn open(url: &str, opts: JobsOptions) -> Result<Jobs> {
        let mut id = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| ControlError::new(ErrorCode::Internal, "no randomness"))?;
        Ok(Jobs {
            db: JobDb::open(url)?,
            node: id.iter().map(|b| format!("{b:02x}")).collect(),
            notify: tokio::sync::Notify::new(),
            opts,
            stats: JobStats::default(),
            synced: Mutex::new(HashMap::new()),
            stale: AtomicBool::new(false),
            last_reap: AtomicU64::new(0),
            last_retention: AtomicU64::new(0),
        })
    }

    fn jobs_of(&self, c: &Center) -> Result<BTreeMap<(String, String), JobRec>> {
        c.read(|st| st.jobs.jobs.clone())
    }

    /// The definitions after applying what other nodes committed to the store. A runtime row (item,
    /// trigger, report) can name a job that another node created a moment ago and that this node's snapshot
    /// (caught up every 50 ms) does not hold yet: "not in my snapshot" only means "deleted" once the snapshot
    /// is known to be current.
    fn jobs_current(&self, c: &Center) -> Result<BTreeMap<(String, String), JobRec>> {
        c.catch_up()?;
        self.jobs_of(c)
    }

    /// One scheduler step: sync triggers with the definitions, fire what is due, take back expired items
    /// (every 500 ms), delete old history (every minute). Blocking.
    pub fn tick(&self, c: &Center) -> Result<()> {
        let now = now_ms() as i64;
        // `fresh`: the snapshot was caught up just now, so a job it lacks is really gone.
        let fresh = self.stale.swap(false, Ordering::Relaxed);
        let jobs = if fresh {
            self.jobs_current(c)?
        } else {
            self.jobs_of(c)?
        };
        self.sync(&jobs, now)?;
        let mut done = Vec::new();
        for _ in 0..20 {
            let (n, d) = self.fire_due(&jobs, now, fresh)?;
            done.extend(d);
            if n < 50 {
                break;
            }
        }
        if now as u64 >= self.last_reap.load(Ordering::Relaxed) + 500 {
            self.last_reap.store(now as u64, Ordering::Relaxed);
            self.registry_sweep(c)?;
            done.extend(self.reap(c, &jobs, now, fresh)?);
        }
        if now as u64 >= self.last_retention.load(Ordering::Relaxed) + 60_000 {
            self.last_retention.store(now as u64, Ordering::Relaxed);
            self.retention(now)?;
        }
        self.after_runs(c, done);
        Ok(())
    }

    /// Makes the trigger rows follow the definitions: a new or changed job (new `rev`) restarts its trigger
    /// from now; a deleted job loses it. Each node does it for the changes it sees; the row keeps the
    /// highest revision, so two nodes agree.
    fn sync(&self, jobs: &BTreeMap<(String, String), JobRec>, now: i64) -> Result<()> {
        let mut synced = self
            .synced
            .lock()
            .map_err(|_| ControlError::new(ErrorCode::Internal, "lock poisoned"))?;
        let changed: Vec<&JobRec> = jobs
            .iter()
            .filter(|(k, j)| synced.get(*k) != Some(&j.rev))
            .map(|(_, j)| j)
            .collect();
        let gone: Vec<(String, String)> = synced
            .keys()
            .filter(|k| !jobs.contains_key(*k))
            .cloned()
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(());
        }
        self.db.tx_sched(|s| {
            for j in &changed {
                let next = opt(first_time(&j.spec, now));
                let (env, job) = (s.lit(&j.env), s.lit(&j.name));
                let sql = match s.dialect() {
                    Dialect::Mysql => format!(
                        "INSERT INTO furrow_job_triggers (env, job, rev, next_ms) VALUES ({env}, {job}, {rev}, {next}) \
                         ON DUPLICATE KEY UPDATE next_ms = IF(rev < VALUES(rev), VALUES(next_ms), next_ms), \
                         rev = GREATEST(rev, VALUES(rev))",
                        rev = j.rev
                    ),
                    Dialect::Sqlite => format!(
                        "INSERT INTO furrow_job_triggers (env, job, rev, next_ms) VALUES ({env}, {job}, {rev}, {next}) \
                         ON CONFLICT (env, job) DO UPDATE SET next_ms = CASE WHEN rev < excluded.rev THEN excluded.next_ms \
                         ELSE next_ms END, rev = MAX(rev, excluded.rev)",
                        rev = j.rev
                    ),
                };
                s.q(&sql)?;
            }
            for (env, job) in &gone {
                let sql = format!(
                    "DELETE FROM furrow_job_triggers WHERE env = {} AND job = {}",
                    s.lit(env),
                    s.lit(job)
                );
                s.q(&sql)?;
            }
            Ok(())
        })?;
        for j in changed {
            synced.insert((j.env.clone(), j.name.clone()), j.rev);
        }
        for k in gone {
            synced.remove(&k);
        }
        Ok(())
    }

    /// Claims up to 50 due triggers and fires them; returns how many were claimed and the runs that ended at
    /// once (refused placement). A trigger whose job this node does not know, or knows at an older revision
    /// than the row's, is left alone unless the snapshot is `fresh` (another node saved it a moment ago; the
    /// next step catches up and decides).
    fn fire_due(
        &self,
        jobs: &BTreeMap<(String, String), JobRec>,
        now: i64,
        fresh: bool,
    ) -> Result<(usize, Vec<RunDone>)> {
        let (n, done, fired) = self.db.tx_sched(|s| {
            let rows = s.q(&format!(
                "SELECT env, job, next_ms, rev FROM furrow_job_triggers WHERE next_ms IS NOT NULL AND next_ms <= {now} \
                 ORDER BY next_ms LIMIT 50{}",
                s.skip_locked()
            ))?;
            if rows.is_empty() {
                return Ok((0, vec![], vec![]));
            }
            let workers = live_workers(s, now)?;
            let mut done = Vec::new();
            let mut fired = Vec::new();
            for r in &rows {
                let (env, name, next_ms) = (text(r, 0), text(r, 1), num(r, 2));
                let key = format!("env = {} AND job = {}", s.lit(&env), s.lit(&name));
                let job = match jobs.get(&(env.clone(), name.clone())) {
                    Some(job) if fresh || job.rev as i64 >= num(r, 3) => job,
                    None if fresh => {
                        s.q(&format!("DELETE FROM furrow_job_triggers WHERE {key}"))?;
                        continue;
                    }
                    _ => {
                        self.stale.store(true, Ordering::Relaxed);
                        continue;
                    }
                };
                let (times, next) = due_times(&job.spec, next_ms, now);
                if !job.paused {
                    for t in &times {
                        if let Some(d) = create_run(s, job, *t, "schedule", now, &workers, &self.node)? {
                            done.push(d);
                        }
                        fired.push((now - t).max(0) as u64);
                    }
                }
                s.q(&format!(
                    "UPDATE furrow_job_triggers SET next_ms = {} WHERE {key}",
                    opt(next)
                ))?;
            }
            Ok((rows.len(), done, fired))
        })?;
        if !fired.is_empty() {
            self.stats
                .fired
                .fetch_add(fired.len() as u64, Ordering::Relaxed);
            if let Ok(mut l) = self.stats.lateness.lock() {
                for f in fired {
                    if l.len() >= 10_000 {
                        l.pop_front();
                    }
                    l.push_back(f);
                }
            }
            self.notify.notify_waiters();
        }
        Ok((n, done))
    }

    /// Fires a job by hand now (`cause`: `manual`). Refused with the reason when it fits on no live worker.
    pub fn trigger(&self, job: &JobRec) -> Result<String> {
        let mut last = None;
        for attempt in 0..5 {
            let now = now_ms() as i64;
            let at = now + attempt;
            let r = self.db.tx(|s| {
                let exists = s.q(&format!(
                    "SELECT id FROM furrow_job_runs WHERE id = {}",
                    s.lit(&run_id(&job.env, &job.name, at))
                ))?;
                if !exists.is_empty() {
                    return Ok(None);
                }
                let workers = live_workers(s, now)?;
                if let Err(reason) = place(&job.spec, &workers) {
                    return Ok(Some(Err(reason)));
                }
                create_run(s, job, at, "manual", now, &workers, &self.node)?;
                Ok(Some(Ok(run_id(&job.env, &job.name, at))))
            })?;
            match r {
                Some(Ok(id)) => {
                    self.notify.notify_waiters();
                    return Ok(id);
                }
                Some(Err(reason)) => return Err(ControlError::bad("resources", reason)),
                None => last = Some(at),
            }
        }
        Err(ControlError::new(
            ErrorCode::AlreadyExists,
            format!("a run at {last:?} already exists; retry"),
        ))
    }

    /// Registers (or re-registers) a worker. Items a previous incarnation of it was running are taken back at
    /// the next reap.
    pub fn register(&self, w: &WorkerInfo) -> Result<()> {
        let now = now_ms() as i64;
        let kinds = serde_json::to_string(&w.kinds).unwrap_or_default();
        let labels = serde_json::to_string(&w.labels).unwrap_or_default();
        self.db.tx(|s| {
            let id = s.lit(&w.id);
            s.q(&format!("DELETE FROM furrow_job_workers WHERE id = {id}"))?;
            s.q(&format!(
                "INSERT INTO furrow_job_workers (id, cpu_milli, mem_mb, kinds, labels, lease_ms, started_ms, node, draining) \
                 VALUES ({id}, {}, {}, {}, {}, {}, {now}, {}, 0)",
                w.cpu_milli,
                w.mem_mb,
                s.lit(&kinds),
                s.lit(&labels),
                now + self.opts.lease_ms,
                s.lit(&self.node)
            ))?;
            s.q(&format!(
                "UPDATE furrow_job_items SET lease_ms = 0 WHERE worker = {id} AND state = 'running'"
            ))?;
            Ok(())
        })
    }

    /// Removes a worker; its running items are taken back at the next reap.
    pub fn deregister(&self, id: &str) -> Result<()> {
        self.db.tx(|s| {
            let id = s.lit(id);
            s.q(&format!("DELETE FROM furrow_job_workers WHERE id = {id}"))?;
            s.q(&format!(
                "UPDATE furrow_job_items SET lease_ms = 0 WHERE worker = {id} AND state = 'running'"
            ))?;
            Ok(())
        })
    }

    /// A worker's heartbeat: extends its lease and its items' leases, stores the log tails it sends, and
    /// answers the items it must stop (stop requested, or no longer its own).
    ///
    /// `reg` is what the service registry says of the worker (`super::reglink`): offline drains it (no new
    /// items, here and in placement), unhealthy also leaves its items' leases expired, so the next reap takes
    /// them back per the job's policy and the beat after that tells the worker to stop them.
    pub fn beat(
        &self,
        worker: &str,
        running: &[(String, i64, Option<String>)],
        draining: bool,
        reg: super::reglink::Verdict,
    ) -> Result<Vec<(String, i64)>> {
        let draining = draining || !reg.takes_items();
        let gone = reg == super::reglink::Verdict::Unhealthy;
        let now = now_ms() as i64;
        let lease = now + self.opts.lease_ms;
        self.db.tx(|s| {
            let id = s.lit(worker);
            let known = s.q(&format!("SELECT id FROM furrow_job_workers WHERE id = {id}"))?;
            if known.is_empty() {
                return Err(DbError("unknown worker".into(), true));
            }
            s.q(&format!(
                "UPDATE furrow_job_workers SET lease_ms = {lease}, draining = {} WHERE id = {id}",
                draining as i32
            ))?;
            s.q(&format!(
                "UPDATE furrow_job_items SET lease_ms = {} WHERE worker = {id} AND state = 'running'",
                if gone { 0 } else { lease }
            ))?;
            let mine = s.q(&format!(
                "SELECT run, idx, stop FROM furrow_job_items WHERE worker = {id} AND state = 'running'"
            ))?;
            let mine: HashMap<(String, i64), i64> =
                mine.iter().map(|r| ((text(r, 0), num(r, 1)), num(r, 2))).collect();
            let mut stop = Vec::new();
            for (run, idx, log) in running {
                match mine.get(&(run.clone(), *idx)) {
                    None | Some(1) => stop.push((run.clone(), *idx)),
                    _ => {
                        if let Some(log) = log {
                            let sql = format!(
                                "UPDATE furrow_job_items SET log = {} WHERE run = {} AND idx = {idx}",
                                s.lit(&tail(log, MAX_LOG)),
                                s.lit(run)
                            );
                            s.q(&sql)?;
                        }
                    }
                }
            }
            Ok(stop)
        })
        .map_err(|e| {
            if e.message.contains("unknown worker") {
                ControlError::not_found(format!("unknown worker {worker:?}: register again"))
                    .with_field("worker")
            } else {
                e
            }
        })
    }

    /// Hands up to `max` pending items to `worker`, as many as fit in what it has free. Blocking; the HTTP
    /// route long-polls around it.
    pub fn claim(&self, c: &Center, worker: &str, max: usize) -> Result<Vec<Assignment>> {
        let jobs = self.jobs_of(c)?;
        let (mut out, unknown) = self.claim_pass(c, &jobs, worker, max, false)?;
        if unknown && out.len() < max {
            // Items of a job this node has not caught up with yet (created through another node a moment
            // ago): look again with a current snapshot rather than take them for items of a deleted job.
            let jobs = self.jobs_current(c)?;
            let (more, _) = self.claim_pass(c, &jobs, worker, max - out.len(), true)?;
            out.extend(more);
        }
        Ok(out)
    }

    /// One claim transaction. Items whose job is not in `jobs` are failed as deleted when `fresh` (the
    /// snapshot was just caught up with the store), else left pending and reported by the returned flag.
    fn claim_pass(
        &self,
        c: &Center,
        jobs: &BTreeMap<(String, String), JobRec>,
        worker: &str,
        max: usize,
        fresh: bool,
    ) -> Result<(Vec<Assignment>, bool)> {
        let now = now_ms() as i64;
        let mut done = Vec::new();
        let mut orphan_runs: Vec<String> = Vec::new();
        let mut unknown = false;
        let out = self.db.tx(|s| {
            let id = s.lit(worker);
            let w = s.q(&format!(
                "SELECT id, cpu_milli, mem_mb, kinds, labels, draining FROM furrow_job_workers WHERE id = {id}"
            ))?;
            let Some(w) = w.first() else {
                return Err(DbError("unknown worker".into(), true));
            };
            if num(w, 5) != 0 {
                return Ok(vec![]);
            }
            let me = LiveWorker {
                id: text(w, 0),
                cpu: num(w, 1).max(0) as u64,
                mem: num(w, 2).max(0) as u64,
                kinds: serde_json::from_str(&text(w, 3)).unwrap_or_default(),
                labels: serde_json::from_str(&text(w, 4)).unwrap_or_default(),
            };
            let running = s.q(&format!(
                "SELECT env, job FROM furrow_job_items WHERE worker = {id} AND state = 'running'"
            ))?;
            let (mut cpu, mut mem) = (me.cpu as i64, me.mem as i64);
            for r in &running {
                if let Some(j) = jobs.get(&(text(r, 0), text(r, 1))) {
                    cpu -= j.spec.resources.cpu_milli as i64;
                    mem -= j.spec.resources.mem_mb as i64;
                }
            }
            let cands = s.q(&format!(
                "SELECT run, idx, env, job, params, attempts FROM furrow_job_items WHERE state = 'pending' \
                 AND not_before_ms <= {now} ORDER BY not_before_ms, run, idx LIMIT 64{}",
                s.skip_locked()
            ))?;
            let mut out = Vec::new();
            for r in &cands {
                if out.len() >= max {
                    break;
                }
                let (run, idx) = (text(r, 0), num(r, 1));
                let Some(job) = jobs.get(&(text(r, 2), text(r, 3))) else {
                    if !fresh {
                        unknown = true;
                        continue;
                    }
                    let sql = format!(
                        "UPDATE furrow_job_items SET state = 'failed', result = 'job deleted', ended_ms = {now} \
                         WHERE run = {} AND idx = {idx}",
                        s.lit(&run)
                    );
                    s.q(&sql)?;
                    orphan_runs.push(run);
                    continue;
                };
                let need = job.spec.resources;
                if !runs_item_kind(&me, &job.spec, job.spec.kind_of(idx))
                    || need.cpu_milli as i64 > cpu
                    || need.mem_mb as i64 > mem
                {
                    continue;
                }
                cpu -= need.cpu_milli as i64;
                mem -= need.mem_mb as i64;
                let sql = format!(
                    "UPDATE furrow_job_items SET state = 'running', worker = {id}, lease_ms = {}, deadline_ms = {}, \
                     attempts = attempts + 1, started_ms = {now}, ended_ms = NULL, exit_code = NULL \
                     WHERE run = {} AND idx = {idx}",
                    now + self.opts.lease_ms,
                    now + job.spec.timeout_ms as i64 + DEADLINE_GRACE_MS,
                    s.lit(&run)
                );
                s.q(&sql)?;
                let traceparent = super::span::traceparent(&run, idx, num(r, 5) + 1);
                out.push(Assignment {
                    run,
                    idx,
                    env: job.env.clone(),
                    job: job.name.clone(),
                    params: serde_json::from_str(&text(r, 4)).unwrap_or(Json::Null),
                    attempt: num(r, 5) + 1,
                    kind: job.spec.kind_of(idx).clone(),
                    timeout_ms: job.spec.timeout_ms,
                    resources: need,
                    traceparent,
                });
            }
            Ok(out)
        });
        let out = out.map_err(|e| {
            if e.message.contains("unknown worker") {
                ControlError::not_found(format!("unknown worker {worker:?}: register again"))
                    .with_field("worker")
            } else {
                e
            }
        })?;
        // Items of deleted jobs may have ended their runs.
        for r in orphan_runs {
            if let Some(d) = self.db.tx(|s| {
                let rl = s.lit(&r);
                s.q(&format!(
                    "SELECT state FROM furrow_job_runs WHERE id = {rl}{}",
                    s.for_update()
                ))?;
                complete(s, &r, now)
            })? {
                done.push(d);
            }
        }
        self.after_runs(c, done);
        self.stats
            .dispatched
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok((out, unknown))
    }

    /// A worker's result for an item. Stale reports (the item was taken back and given to another worker)
    /// are ignored and answered `false`.
    pub fn finish(&self, c: &Center, worker: &str, rep: &ItemReport) -> Result<bool> {
        Ok(self
            .finish_many(c, worker, std::slice::from_ref(rep))?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Several reports at once: one transaction per run (its row locked once, its end checked once), so a
    /// worker finishing many small items costs a few transactions rather than one each.
    pub fn finish_many(&self, c: &Center, worker: &str, reps: &[ItemReport]) -> Result<Vec<bool>> {
        for (i, r) in reps.iter().enumerate() {
            if !matches!(
                r.status.as_str(),
                "ok" | "failed" | "timeout" | "stopped" | "handback"
            ) {
                return Err(ControlError::bad(
                    &format!("reports/{i}/status"),
                    format!(
                        "unknown status {:?}: ok, failed, timeout, stopped or handback",
                        r.status
                    ),
                ));
            }
        }
        let now = now_ms() as i64;
        let mut jobs = self.jobs_of(c)?;
        // A report on a job created through another node a moment ago: catch up first, or its retry
        // policy would be taken for "none".
        if reps.iter().any(|r| {
            run_job(&r.run)
                .is_some_and(|(e, j)| !jobs.contains_key(&(e.to_string(), j.to_string())))
        }) {
            jobs = self.jobs_current(c)?;
        }
        let mut by_run: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in reps.iter().enumerate() {
            by_run.entry(r.run.as_str()).or_default().push(i);
        }
        let mut accepted = vec![false; reps.len()];
        let mut done = Vec::new();
        let mut spans = Vec::new();
        for (run, idxs) in by_run {
            let (acc, d, sp) = self.db.tx(|s| {
                let rl = s.lit(run);
                let locked = s.q(&format!(
                    "SELECT state FROM furrow_job_runs WHERE id = {rl}{}",
                    s.for_update()
                ))?;
                if locked.is_empty() {
                    return Ok((vec![], None, vec![]));
                }
                let mut acc = Vec::new();
                let mut sp = Vec::new();
                for &i in &idxs {
                    if finish_item(s, &jobs, worker, &reps[i], now, &mut sp)? {
                        acc.push(i);
                    }
                }
                Ok((acc, complete(s, run, now)?, sp))
            })?;
            spans.extend(sp);
            for i in acc {
                accepted[i] = true;
            }
            done.extend(d);
        }
        let n = accepted.iter().filter(|a| **a).count();
        self.stats.finished.fetch_add(n as u64, Ordering::Relaxed);
        if reps
            .iter()
            .zip(&accepted)
            .any(|(r, a)| *a && r.status == "handback")
        {
            self.notify.notify_waiters();
        }
        self.record_spans(c, spans);
        self.after_runs(c, done);
        Ok(accepted)
    }

    /// Applies the service registry's verdicts (`super::reglink`) to the workers table between heartbeats:
    /// a worker the registry has offline or unhealthy is marked draining (placement and "fits nowhere" skip
    /// it within one reap period, not one heartbeat); an unhealthy one also has its running items' leases
    /// ended, so the reap that follows takes them back per the job's delivery policy. This is what moves the
    /// items of a worker that stopped beating (SIGSTOP, a hung host) as soon as the registry's TTL says so,
    /// even when the jobs lease is longer; a worker that still beats gets the same answer from `beat`.
    fn registry_sweep(&self, c: &Center) -> Result<()> {
        let listed: Vec<(String, super::reglink::Verdict)> = c
            .read(|st| {
                st.registry
                    .instances
                    .iter()
                    .filter(|((_, svc), _)| svc == super::reglink::WORKER_SERVICE)
                    .flat_map(|(_, insts)| insts.keys().cloned().collect::<Vec<_>>())
                    .collect::<BTreeSet<String>>()
            })?
            .into_iter()
            .map(|id| {
                let v = super::reglink::verdict(c, &id);
                (id, v)
            })
            .filter(|(_, v)| !v.takes_items())
            .collect();
        if listed.is_empty() {
            return Ok(());
        }
        self.db.tx_sched(|s| {
            for (id, v) in &listed {
                let id = s.lit(id);
                s.q(&format!(
                    "UPDATE furrow_job_workers SET draining = 1 WHERE id = {id} AND draining = 0"
                ))?;
                if *v == super::reglink::Verdict::Unhealthy {
                    s.q(&format!(
                        "UPDATE furrow_job_items SET lease_ms = 0 WHERE worker = {id} AND state = 'running' AND lease_ms > 0"
                    ))?;
                }
            }
            Ok(())
        })
    }

    /// Takes back items whose worker went silent (lease) or overran (deadline).
    /// An item of a job this node does not know is left for the next step (caught up) unless `fresh`: its
    /// retry and delivery policy are not known here.
    fn reap(
        &self,
        c: &Center,
        jobs: &BTreeMap<(String, String), JobRec>,
        now: i64,
        fresh: bool,
    ) -> Result<Vec<RunDone>> {
        let runs = self.db.tx_sched(|s| {
            s.q(&format!(
                "SELECT DISTINCT run FROM furrow_job_items WHERE state = 'running' AND (lease_ms < {now} OR deadline_ms < {now}) LIMIT 20"
            ))
        })?;
        let mut done = Vec::new();
        let mut reaped = 0;
        for r in runs {
            let run = text(&r, 0);
            let (n, d, sp) = self.db.tx_sched(|s| {
                let mut sp = Vec::new();
                let rl = s.lit(&run);
                if s.q(&format!("SELECT state FROM furrow_job_runs WHERE id = {rl}{}", s.skip_locked()))?.is_empty() {
                    // Another node is on it (or the run is gone).
                    let gone = s.q(&format!("SELECT id FROM furrow_job_runs WHERE id = {rl}"))?.is_empty();
                    if gone {
                        s.q(&format!("DELETE FROM furrow_job_items WHERE run = {rl}"))?;
                    }
                    return Ok((0, None, sp));
                }
                let items = s.q(&format!(
                    "SELECT idx, env, job, attempts, stop, worker, lease_ms, deadline_ms, started_ms FROM furrow_job_items \
                     WHERE run = {rl} AND state = 'running' AND (lease_ms < {now} OR deadline_ms < {now}){}",
                    s.for_update()
                ))?;
                let mut taken = 0;
                for it in &items {
                    let idx = num(it, 0);
                    let spec = jobs.get(&(text(it, 1), text(it, 2))).map(|j| &j.spec);
                    if spec.is_none() && !fresh {
                        self.stale.store(true, Ordering::Relaxed);
                        continue;
                    }
                    taken += 1;
                    let attempts = num(it, 3);
                    let worker = text(it, 5).replace('\'', "");
                    let timed_out = opt_num(it, 7).is_some_and(|d| d < now);
                    let retries = spec.map(|sp| sp.retries as i64).unwrap_or(0);
                    let at_most_once = spec.is_some_and(|sp| sp.delivery == Delivery::AtMostOnce);
                    let (state, why) = if num(it, 4) != 0 {
                        ("stopped", format!("stopped; worker {worker} did not confirm"))
                    } else if timed_out {
                        if attempts <= retries {
                            ("pending", format!("attempt {attempts} timed out on {worker}"))
                        } else {
                            ("failed", format!("timed out on {worker}"))
                        }
                    } else if at_most_once {
                        ("lost", format!("worker {worker} died; at-most-once: not run again"))
                    } else if attempts > retries + 3 {
                        ("failed", format!("worker {worker} died; {attempts} attempts lost"))
                    } else {
                        ("pending", format!("worker {worker} died; run again elsewhere"))
                    };
                    let (env, job) = (text(it, 1), text(it, 2));
                    let peer = spec.and_then(http_peer);
                    sp.push(
                        ItemSpan {
                            run: &run,
                            env: &env,
                            job: &job,
                            idx,
                            attempt: attempts,
                            worker: &worker,
                            state: if state == "pending" { "retry" } else { state },
                            exit_code: None,
                            result: &why,
                            peer: peer.as_deref(),
                            started_ms: opt_num(it, 8).unwrap_or(now),
                            ended_ms: now,
                        }
                        .record(),
                    );
                    let sql = if state == "pending" {
                        format!(
                            "UPDATE furrow_job_items SET state = 'pending', worker = NULL, lease_ms = NULL, \
                             not_before_ms = {now}, result = {} WHERE run = {rl} AND idx = {idx}",
                            s.lit(&why)
                        )
                    } else {
                        format!(
                            "UPDATE furrow_job_items SET state = '{state}', ended_ms = {now}, result = {} \
                             WHERE run = {rl} AND idx = {idx}",
                            s.lit(&why)
                        )
                    };
                    s.q(&sql)?;
                }
                Ok((taken, complete(s, &run, now)?, sp))
            })?;
            self.record_spans(c, sp);
            self.stats.reaped.fetch_add(n as u64, Ordering::Relaxed);
            reaped += n;
            done.extend(d);
        }
        if reaped > 0 {
            self.notify.notify_waiters();
        }
        Ok(done)
    }

    /// Stops a run: pending items are stopped at once, running ones are killed by their workers (told with
    /// their next heartbeat).
    pub fn stop(&self, c: &Center, run: &str) -> Result<Json> {
        let now = now_ms() as i64;
        let d = self.db.tx(|s| {
            let rl = s.lit(run);
            let st = s.q(&format!("SELECT state FROM furrow_job_runs WHERE id = {rl}{}", s.for_update()))?;
            let Some(st) = st.first() else {
                return Err(DbError("unknown run".into(), true));
            };
            if text(st, 0) != "running" {
                return Ok(None);
            }
            s.q(&format!(
                "UPDATE furrow_job_items SET state = 'stopped', ended_ms = {now}, result = 'stopped before it started' \
                 WHERE run = {rl} AND state = 'pending'"
            ))?;
            s.q(&format!(
                "UPDATE furrow_job_items SET stop = 1 WHERE run = {rl} AND state = 'running'"
            ))?;
            complete(s, run, now)
        });
        let d = d.map_err(|e| {
            if e.message.contains("unknown run") {
                ControlError::not_found(format!("unknown run {run:?}")).with_field("run")
            } else {
                e
            }
        })?;
        self.after_runs(c, d.into_iter().collect());
        self.run(run)
    }

    /// Deletes runs (with their items and logs) that ended before the retention period, and workers gone for
    /// an hour.
    fn retention(&self, now: i64) -> Result<()> {
        let cutoff = now - self.opts.retention_ms;
        self.db.tx_sched(|s| {
            s.q(&format!(
                "DELETE FROM furrow_job_items WHERE run IN (SELECT id FROM furrow_job_runs WHERE ended_ms < {cutoff})"
            ))?;
            s.q(&format!("DELETE FROM furrow_job_runs WHERE ended_ms < {cutoff}"))?;
            s.q(&format!(
                "DELETE FROM furrow_job_workers WHERE lease_ms < {}",
                now - 3_600_000
            ))?;
            Ok(())
        })
    }

    /// Hands spans to this node's trace collector (best effort: a full collector queue drops them, counted
    /// in `furrow_jobs_spans_dropped_total`).
    fn record_spans(&self, c: &Center, spans: Vec<SpanRec>) {
        if spans.is_empty() {
            return;
        }
        let n = spans.len() as u64;
        match c.trace.ingest(spans) {
            Ok(_) => self.stats.spans.fetch_add(n, Ordering::Relaxed),
            Err(_) => self.stats.spans_dropped.fetch_add(n, Ordering::Relaxed),
        };
    }

    /// After commits: the next fixed-delay firing, failure alerts, and successors in the DAG (which may end
    /// more runs: skipped ones cascade).
    fn after_runs(&self, c: &Center, mut done: Vec<RunDone>) {
        let mut guard = 0;
        while let Some(d) = done.pop() {
            guard += 1;
            if guard > 10_000 {
                break;
            }
            self.record_spans(
                c,
                vec![
                    RunSpan {
                        run: &d.run,
                        env: &d.env,
                        job: &d.job,
                        cause: &d.cause,
                        state: &d.state,
                        detail: &d.detail,
                        fired_ms: d.fired_ms,
                        ended_ms: d.ended_ms,
                    }
                    .record(),
                ],
            );
            if let Ok(mut m) = self.stats.runs.lock() {
                *m.entry((d.env.clone(), d.job.clone(), d.state.clone()))
                    .or_default() += 1;
            }
            let find = || c.read(|st| st.jobs.get(&d.env, &d.job).cloned());
            let job = match find() {
                Ok(Some(job)) => job,
                // Not caught up with the node that created it: its alert and successors still apply.
                Ok(None) if c.catch_up().is_ok() => match find() {
                    Ok(Some(job)) => job,
                    _ => continue,
                },
                _ => continue,
            };
            let now = now_ms() as i64;
            if let Schedule::Delay { delay_ms } = job.spec.schedule
                && d.cause == "schedule"
            {
                let r = self.db.tx(|s| {
                    let sql = format!(
                        "UPDATE furrow_job_triggers SET next_ms = {} WHERE env = {} AND job = {} AND next_ms IS NULL",
                        now + delay_ms as i64,
                        s.lit(&d.env),
                        s.lit(&d.job)
                    );
                    s.q(&sql)?;
                    Ok(())
                });
                if let Err(e) = r {
                    tracing::warn!(error = %e, job = %d.job, "fixed-delay trigger");
                }
            }
            if d.state == "failed"
                && let Some(a) = &job.spec.alert
            {
                alert(a, &d);
            }
            let downs: Vec<JobRec> = c
                .read(|st| st.jobs.downstream(&d.env, &d.job).cloned().collect())
                .unwrap_or_default();
            for down in downs {
                match self.dag_check(&down, now) {
                    Ok(Some(more)) => done.push(more),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, job = %down.name, "DAG successor"),
                }
            }
        }
    }

    /// Fires `down` when every upstream has finished since its last run: all succeeded → a run; one failed
    /// → nothing (`block`) or a `skipped` run (`skip`, returned so its own successors are looked at).
    fn dag_check(&self, down: &JobRec, now: i64) -> Result<Option<RunDone>> {
        if down.paused {
            return Ok(None);
        }
        let created = self.db.tx(|s| {
            let (env, job) = (s.lit(&down.env), s.lit(&down.name));
            // Successor checks of one job are serialized on its trigger row (every job has one once the
            // sync saw it; a job created an instant ago gets it here, the insert holding the lock).
            let locked = s.q(&format!(
                "SELECT next_ms FROM furrow_job_triggers WHERE env = {env} AND job = {job}{}",
                s.for_update()
            ))?;
            if locked.is_empty() {
                s.q(&format!(
                    "INSERT INTO furrow_job_triggers (env, job, rev, next_ms) VALUES ({env}, {job}, 0, NULL)"
                ))?;
            }
            let last = s.q(&format!(
                "SELECT MAX(fired_ms) FROM furrow_job_runs WHERE env = {env} AND job = {job}"
            ))?;
            let last = last.first().and_then(|r| opt_num(r, 0)).unwrap_or(-1);
            let mut failed = Vec::new();
            for u in &down.spec.after {
                let r = s.q(&format!(
                    "SELECT state, ended_ms FROM furrow_job_runs WHERE env = {env} AND job = {} AND ended_ms IS NOT NULL \
                     ORDER BY ended_ms DESC LIMIT 1",
                    s.lit(u)
                ))?;
                match r.first() {
                    Some(r) if num(r, 1) > last => {
                        if text(r, 0) != "ok" {
                            failed.push(format!("{u} {}", text(r, 0)));
                        }
                    }
                    _ => return Ok(None),
                }
            }
            let mut at = now;
            while !s
                .q(&format!(
                    "SELECT id FROM furrow_job_runs WHERE id = {}",
                    s.lit(&run_id(&down.env, &down.name, at))
                ))?
                .is_empty()
            {
                at += 1;
            }
            if failed.is_empty() {
                let workers = live_workers(s, now)?;
                return create_run(s, down, at, "dag", now, &workers, &self.node).map(|d| d.map(Ok));
            }
            match down.spec.on_upstream_failure {
                UpstreamPolicy::Block => Ok(None),
                UpstreamPolicy::Skip => {
                    let detail = format!("skipped: upstream {}", failed.join(", "));
                    insert_run(s, down, at, "dag", now, "skipped", Some(now), 0, &detail, &self.node)?;
                    Ok(Some(Err(RunDone {
                        run: run_id(&down.env, &down.name, at),
                        env: down.env.clone(),
                        job: down.name.clone(),
                        state: "skipped".into(),
                        cause: "dag".into(),
                        detail,
                        fired_ms: now,
                        ended_ms: now,
                    })))
                }
            }
        })?;
        self.notify.notify_waiters();
        Ok(match created {
            Some(Ok(d)) | Some(Err(d)) => Some(d),
            None => None,
        })
    }

    /// Runs of a job, newest first.
    pub fn runs(&self, env: &str, job: &str, limit: usize) -> Result<Vec<Json>> {
        self.db.tx(|s| {
            let rows = s.q(&format!(
                "SELECT id, scheduled_ms, fired_ms, node, cause, state, ended_ms, items, detail FROM furrow_job_runs \
                 WHERE env = {} AND job = {} ORDER BY scheduled_ms DESC LIMIT {}",
                s.lit(env),
                s.lit(job),
                limit.clamp(1, 1000)
            ))?;
            Ok(rows.iter().map(run_json).collect())
        })
    }

    /// A run with its items (and their logs).
    pub fn run(&self, run: &str) -> Result<Json> {
        let r = self.db.tx(|s| {
            let rl = s.lit(run);
            let rows = s.q(&format!(
                "SELECT id, scheduled_ms, fired_ms, node, cause, state, ended_ms, items, detail FROM furrow_job_runs WHERE id = {rl}"
            ))?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            let mut out = run_json(r);
            let items = s.q(&format!(
                "SELECT idx, params, state, worker, attempts, started_ms, ended_ms, exit_code, result, log, not_before_ms \
                 FROM furrow_job_items WHERE run = {rl} ORDER BY idx"
            ))?;
            out["item_list"] = Json::Array(
                items
                    .iter()
                    .map(|i| {
                        json!({
                            "idx": num(i, 0),
                            "params": serde_json::from_str::<Json>(&text(i, 1)).unwrap_or(Json::Null),
                            "state": text(i, 2),
                            "worker": i[3],
                            "attempts": num(i, 4),
                            "started_ms": opt_num(i, 5),
                            "ended_ms": opt_num(i, 6),
                            "exit_code": opt_num(i, 7),
                            "result": i[8],
                            "log": i[9],
                            "not_before_ms": num(i, 10),
                        })
                    })
                    .collect(),
            );
            Ok(Some(out))
        })?;
        r.ok_or_else(|| ControlError::not_found(format!("unknown run {run:?}")).with_field("run"))
    }

    /// The registered workers (live or not).
    pub fn workers(&self) -> Result<Vec<Json>> {
        let now = now_ms() as i64;
        self.db.tx(|s| {
            let rows = s.q(
                "SELECT id, cpu_milli, mem_mb, kinds, labels, lease_ms, started_ms, node, draining FROM furrow_job_workers ORDER BY id",
            )?;
            let mut out = Vec::new();
            for r in &rows {
                let id = text(r, 0);
                let running = s.q(&format!(
                    "SELECT COUNT(*) FROM furrow_job_items WHERE worker = {} AND state = 'running'",
                    s.lit(&id)
                ))?;
                out.push(json!({
                    "id": id,
                    "cpu_milli": num(r, 1),
                    "mem_mb": num(r, 2),
                    "kinds": serde_json::from_str::<Json>(&text(r, 3)).unwrap_or(Json::Null),
                    "labels": serde_json::from_str::<Json>(&text(r, 4)).unwrap_or(Json::Null),
                    "live": num(r, 5) >= now,
                    "lease_ms": num(r, 5),
                    "started_ms": num(r, 6),
                    "node": text(r, 7),
                    "draining": num(r, 8) != 0,
                    "running": running.first().map(|x| num(x, 0)).unwrap_or(0),
                }));
            }
            Ok(out)
        })
    }

    /// The next firing time of each job's trigger.
    pub fn next_times(&self) -> Result<HashMap<(String, String), Option<i64>>> {
        self.db.tx(|s| {
            let rows = s.q("SELECT env, job, next_ms FROM furrow_job_triggers")?;
            Ok(rows
                .iter()
                .map(|r| ((text(r, 0), text(r, 1)), opt_num(r, 2)))
                .collect())
        })
    }

    /// This node's counters and the lateness percentiles of its recent firings.
    pub fn stats_json(&self) -> Json {
        let mut l: Vec<u64> = self
            .stats
            .lateness
            .lock()
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default();
        l.sort_unstable();
        let pct = |p: f64| -> Option<u64> {
            if l.is_empty() {
                None
            } else {
                l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
                    .copied()
            }
        };
        json!({
            "node": self.node,
            "fired": self.stats.fired.load(Ordering::Relaxed),
            "dispatched": self.stats.dispatched.load(Ordering::Relaxed),
            "finished": self.stats.finished.load(Ordering::Relaxed),
            "reaped": self.stats.reaped.load(Ordering::Relaxed),
            "spans": self.stats.spans.load(Ordering::Relaxed),
            "spans_dropped": self.stats.spans_dropped.load(Ordering::Relaxed),
            "lateness_ms": {"samples": l.len(), "p50": pct(0.5), "p99": pct(0.99), "max": l.last()},
        })
    }
}

impl Jobs {
    /// Prometheus text: this node's counters and its runs by job and state.
    pub fn metrics_text(&self) -> String {
        let st = &self.stats;
        let mut out = format!(
            "# TYPE furrow_jobs_fired_total counter\nfurrow_jobs_fired_total {}\n\
             # TYPE furrow_jobs_dispatched_total counter\nfurrow_jobs_dispatched_total {}\n\
             # TYPE furrow_jobs_items_finished_total counter\nfurrow_jobs_items_finished_total {}\n\
             # TYPE furrow_jobs_items_reaped_total counter\nfurrow_jobs_items_reaped_total {}\n\
             # TYPE furrow_jobs_spans_total counter\nfurrow_jobs_spans_total {}\n\
             # TYPE furrow_jobs_spans_dropped_total counter\nfurrow_jobs_spans_dropped_total {}\n\
             # TYPE furrow_jobs_runs_total counter\n",
            st.fired.load(Ordering::Relaxed),
            st.dispatched.load(Ordering::Relaxed),
            st.finished.load(Ordering::Relaxed),
            st.reaped.load(Ordering::Relaxed),
            st.spans.load(Ordering::Relaxed),
            st.spans_dropped.load(Ordering::Relaxed),
        );
        if let Ok(m) = st.runs.lock() {
            for ((env, job, state), n) in m.iter() {
                out.push_str(&format!(
                    "furrow_jobs_runs_total{{env=\"{env}\",job=\"{job}\",state=\"{state}\"}} {n}\n"
                ));
            }
        }
        out
    }
}

fn run_json(r: &Row) -> Json {
    json!({
        "id": text(r, 0),
        "scheduled_ms": num(r, 1),
        "fired_ms": num(r, 2),
        "node": text(r, 3),
        "cause": text(r, 4),
        "state": text(r, 5),
        "ended_ms": opt_num(r, 6),
        "items": num(r, 7),
        "detail": r[8],
    })
}

#[allow(clippy::too_many_arguments)]
fn insert_run(
    s: &mut Sess<'_>,
    job: &JobRec,
    at: i64,
    cause: &str,
    now: i64,
    state: &str,
    ended: Option<i64>,
    items: usize,
    detail: &str,
    node: &str,
) -> std::result::Result<(), DbError> {
    let sql = format!(
        "INSERT INTO furrow_job_runs (id, env, job, scheduled_ms, fired_ms, node, cause, state, ended_ms, items, detail) \
         VALUES ({}, {}, {}, {at}, {now}, {}, {}, '{state}', {}, {items}, {})",
        s.lit(&run_id(&job.env, &job.name, at)),
        s.lit(&job.env),
        s.lit(&job.name),
        s.lit(node),
        s.lit(cause),
        opt(ended),
        if detail.is_empty() {
            "NULL".to_string()
        } else {
            s.lit(detail)
        }
    );
    s.q(&sql)?;
    Ok(())
}

/// Creates a run with its pending items, or a failed run when no live worker could run it. Returns the
/// ended run in that case.
#[allow(clippy::too_many_arguments)]
fn create_run(
    s: &mut Sess<'_>,
    job: &JobRec,
    at: i64,
    cause: &str,
    now: i64,
    workers: &[LiveWorker],
    node: &str,
) -> std::result::Result<Option<RunDone>, DbError> {
    // A firing time that already has its run (a one-off job resumed after it fired) is not fired again;
    // a duplicate key would fail the whole claim transaction, for every trigger in it.
    let id = s.lit(&run_id(&job.env, &job.name, at));
    if !s
        .q(&format!("SELECT id FROM furrow_job_runs WHERE id = {id}"))?
        .is_empty()
    {
        return Ok(None);
    }
    if let Err(reason) = place(&job.spec, workers) {
        insert_run(
            s,
            job,
            at,
            cause,
            now,
            "failed",
            Some(now),
            0,
            &reason,
            node,
        )?;
        return Ok(Some(RunDone {
            run: run_id(&job.env, &job.name, at),
            env: job.env.clone(),
            job: job.name.clone(),
            state: "failed".into(),
            cause: cause.into(),
            detail: reason,
            fired_ms: now,
            ended_ms: now,
        }));
    }
    let items = job.spec.expand();
    insert_run(
        s,
        job,
        at,
        cause,
        now,
        "running",
        None,
        items.len(),
        "",
        node,
    )?;
    let run = s.lit(&run_id(&job.env, &job.name, at));
    let (env, name) = (s.lit(&job.env), s.lit(&job.name));
    if job.spec.map.is_some() {
        s.q(&format!(
            "INSERT INTO furrow_job_items (run, idx, env, job, params, state, not_before_ms, attempts, stop) \
             VALUES ({run}, {MAP_IDX}, {env}, {name}, '{{}}', 'pending', {now}, 0, 0)"
        ))?;
    }
    insert_items(s, &run, &env, &name, &items, now)?;
    Ok(None)
}

/// Inserts `items` as the pending items 0.. of run `run` (`run`, `env` and `job` are SQL
/// literals), 200 to a statement.
fn insert_items(
    s: &mut Sess<'_>,
    run: &str,
    env: &str,
    job: &str,
    items: &[Json],
    now: i64,
) -> std::result::Result<(), DbError> {
    for (chunk_no, chunk) in items.chunks(200).enumerate() {
        let values: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "({run}, {}, {env}, {job}, {}, 'pending', {now}, 0, 0)",
                    chunk_no * 200 + i,
                    s.lit(&p.to_string())
                )
            })
            .collect();
        s.q(&format!(
            "INSERT INTO furrow_job_items (run, idx, env, job, params, state, not_before_ms, attempts, stop) VALUES {}",
            values.join(", ")
        ))?;
    }
    Ok(())
}

/// Applies one worker report to its item (the run row must be locked by the caller); false when stale (the
/// item is no longer running on that worker).
fn finish_item(
    s: &mut Sess<'_>,
    jobs: &BTreeMap<(String, String), JobRec>,
    worker: &str,
    rep: &ItemReport,
    now: i64,
    spans: &mut Vec<SpanRec>,
) -> std::result::Result<bool, DbError> {
    let run = s.lit(&rep.run);
    let idx = rep.idx;
    let row = s.q(&format!(
        "SELECT state, worker, attempts, env, job, stop, started_ms FROM furrow_job_items WHERE run = {run} AND idx = {idx}{}",
        s.for_update()
    ))?;
    let Some(r) = row.first() else {
        return Ok(false);
    };
    if text(r, 0) != "running" || text(r, 1) != worker {
        return Ok(false);
    }
    let attempts = num(r, 2);
    let stop = num(r, 5) != 0;
    let spec = jobs.get(&(text(r, 3), text(r, 4))).map(|j| &j.spec);
    let (result, log) = (head(&rep.result, MAX_RESULT), tail(&rep.log, MAX_LOG));
    if rep.status != "handback" {
        let (env, job) = (text(r, 3), text(r, 4));
        let peer = spec.and_then(http_peer);
        spans.push(
            ItemSpan {
                run: &rep.run,
                env: &env,
                job: &job,
                idx,
                attempt: attempts,
                worker,
                state: if stop && rep.status != "ok" {
                    "stopped"
                } else {
                    &rep.status
                },
                exit_code: rep.exit_code,
                result: &result,
                peer: peer.as_deref(),
                started_ms: opt_num(r, 6).unwrap_or(now),
                ended_ms: now,
            }
            .record(),
        );
    }
    let common = format!(
        "exit_code = {}, result = {}, log = {}",
        opt(rep.exit_code),
        s.lit(&result),
        s.lit(&log)
    );
    let sql = match rep.status.as_str() {
        "handback" => format!(
            "UPDATE furrow_job_items SET state = 'pending', worker = NULL, lease_ms = NULL, \
             attempts = attempts - 1, not_before_ms = {now}, result = {} WHERE run = {run} AND idx = {idx}",
            s.lit(&format!("handed back by {worker}"))
        ),
        "failed" | "timeout" if !stop && spec.is_some_and(|sp| attempts <= sp.retries as i64) => {
            let backoff = spec.map(|sp| sp.backoff_ms as i64).unwrap_or(1000);
            let wait = (backoff << (attempts - 1).clamp(0, 20)).min(3_600_000);
            format!(
                "UPDATE furrow_job_items SET state = 'pending', worker = NULL, lease_ms = NULL, \
                 not_before_ms = {}, {common} WHERE run = {run} AND idx = {idx}",
                now + wait
            )
        }
        st => format!(
            "UPDATE furrow_job_items SET state = '{}', ended_ms = {now}, {common} WHERE run = {run} AND idx = {idx}",
            match st {
                "ok" => "ok",
                "stopped" => "stopped",
                _ => "failed",
            }
        ),
    };
    s.q(&sql)?;
    if rep.status == "ok"
        && let Some(spec) = spec
    {
        if idx == MAP_IDX && spec.map.is_some() {
            mapped(s, spec, rep, now)?;
        } else if idx >= 0 && spec.reduce.is_some() {
            maybe_reduce(s, &rep.run, now)?;
        }
    }
    Ok(true)
}

/// The item list a map step printed: its result if that is a JSON array, else the last line of its output
/// that is one.
pub fn map_output(result: &str, log: &str) -> std::result::Result<Vec<Json>, String> {
    if let Ok(Json::Array(a)) = serde_json::from_str::<Json>(result.trim()) {
        return Ok(a);
    }
    for line in log.lines().rev() {
        let line = line.trim();
        if line.starts_with('[')
            && let Ok(Json::Array(a)) = serde_json::from_str::<Json>(line)
        {
            return Ok(a);
        }
    }
    Err(
        if log.starts_with('[') && log.contains("earlier bytes dropped]") {
            format!(
                "map output over {} KiB: no complete JSON array in its tail",
                MAX_LOG / 1024
            )
        } else {
            "the map step printed no JSON array of item parameters".to_string()
        },
    )
}

/// A map item just succeeded: creates the run's items from what it printed, or fails it with the reason.
fn mapped(
    s: &mut Sess<'_>,
    spec: &JobSpec,
    rep: &ItemReport,
    now: i64,
) -> std::result::Result<(), DbError> {
    let run = s.lit(&rep.run);
    let checked = map_output(&rep.result, &rep.log).and_then(|items| {
        if items.len() > super::model::MAX_ITEMS {
            return Err(format!(
                "the map step made {} items (at most {})",
                items.len(),
                super::model::MAX_ITEMS
            ));
        }
        if let Some(i) = items
            .iter()
            .position(|p| p.to_string().len() > MAX_REDUCE_INPUT)
        {
            return Err(format!(
                "item {i}'s parameters are over {} KiB",
                MAX_REDUCE_INPUT / 1024
            ));
        }
        Ok(items)
    });
    let items = match checked {
        Ok(items) => items,
        Err(why) => {
            let sql = format!(
                "UPDATE furrow_job_items SET state = 'failed', result = {} WHERE run = {run} AND idx = {MAP_IDX}",
                s.lit(&why)
            );
            s.q(&sql)?;
            return Ok(());
        }
    };
    let (env, job) = {
        let r = s.q(&format!(
            "SELECT env, job FROM furrow_job_items WHERE run = {run} AND idx = {MAP_IDX}"
        ))?;
        match r.first() {
            Some(r) => (s.lit(&text(r, 0)), s.lit(&text(r, 1))),
            None => return Ok(()),
        }
    };
    insert_items(s, &run, &env, &job, &items, now)?;
    s.q(&format!(
        "UPDATE furrow_job_runs SET items = {} WHERE id = {run}",
        items.len()
    ))?;
    if items.is_empty() && spec.reduce.is_some() {
        maybe_reduce(s, &rep.run, now)?;
    }
    Ok(())
}

/// The last non-empty line of an item's output, at most 1 KiB of it.
fn last_line(log: &str) -> String {
    let l = log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    tail(l, 1024)
}

/// Creates the reduce item once every item of the run succeeded (the run row is locked by the caller), or
/// fails the run's reduce step when their results are over [`MAX_REDUCE_INPUT`].
fn maybe_reduce(s: &mut Sess<'_>, run_id: &str, now: i64) -> std::result::Result<(), DbError> {
    let run = s.lit(run_id);
    let open = s.q(&format!(
        "SELECT COUNT(*) FROM furrow_job_items WHERE run = {run} AND (idx = {REDUCE_IDX} OR idx = {MAP_IDX} AND state <> 'ok' OR idx >= 0 AND state <> 'ok')"
    ))?;
    if open.first().map(|r| num(r, 0)).unwrap_or(1) != 0 {
        return Ok(());
    }
    // Item by item in pages: the logs are read one page at a time, never all at once.
    let mut results: Vec<String> = Vec::new();
    let (mut size, mut from, mut over) = (0usize, 0i64, false);
    loop {
        let page = s.q(&format!(
            "SELECT idx, result, log FROM furrow_job_items WHERE run = {run} AND idx >= {from} ORDER BY idx LIMIT 100"
        ))?;
        for r in &page {
            let one =
                json!({"idx": num(r, 0), "result": text(r, 1), "output": last_line(&text(r, 2))})
                    .to_string();
            size += one.len() + 1;
            if size > MAX_REDUCE_INPUT {
                over = true;
                break;
            }
            results.push(one);
        }
        if over || page.len() < 100 {
            break;
        }
        from = page.last().map(|r| num(r, 0) + 1).unwrap_or(from);
    }
    let (env, job) = {
        let r = s.q(&format!(
            "SELECT env, job FROM furrow_job_runs WHERE id = {run}"
        ))?;
        match r.first() {
            Some(r) => (s.lit(&text(r, 0)), s.lit(&text(r, 1))),
            None => return Ok(()),
        }
    };
    if over {
        let why = format!(
            "reduce not run: the items' results are over {} KiB (print less: the reduce step gets each item's last output line)",
            MAX_REDUCE_INPUT / 1024
        );
        s.q(&format!(
            "INSERT INTO furrow_job_items (run, idx, env, job, params, state, not_before_ms, attempts, stop, ended_ms, result) \
             VALUES ({run}, {REDUCE_IDX}, {env}, {job}, '{{}}', 'failed', {now}, 0, 0, {now}, {})",
            s.lit(&why)
        ))?;
        return Ok(());
    }
    let params = format!("{{\"results\":[{}]}}", results.join(","));
    s.q(&format!(
        "INSERT INTO furrow_job_items (run, idx, env, job, params, state, not_before_ms, attempts, stop) \
         VALUES ({run}, {REDUCE_IDX}, {env}, {job}, {}, 'pending', {now}, 0, 0)",
        s.lit(&params)
    ))?;
    Ok(())
}

/// Ends the run when none of its items is pending or running (the run row must be locked by the caller).
fn complete(
    s: &mut Sess<'_>,
    run: &str,
    now: i64,
) -> std::result::Result<Option<RunDone>, DbError> {
    let rl = s.lit(run);
    let counts = s.q(&format!(
        "SELECT state, COUNT(*) FROM furrow_job_items WHERE run = {rl} GROUP BY state"
    ))?;
    let mut by: HashMap<String, i64> = HashMap::new();
    for r in &counts {
        by.insert(text(r, 0), num(r, 1));
    }
    if by.contains_key("pending") || by.contains_key("running") {
        return Ok(None);
    }
    let bad = by.get("failed").copied().unwrap_or(0) + by.get("lost").copied().unwrap_or(0);
    let state = if bad > 0 {
        "failed"
    } else if by.contains_key("stopped") {
        "stopped"
    } else {
        "ok"
    };
    let detail = if bad > 0 {
        format!("{bad} item(s) failed or lost")
    } else {
        String::new()
    };
    let row = s.q(&format!(
        "SELECT env, job, cause, state, fired_ms FROM furrow_job_runs WHERE id = {rl}"
    ))?;
    let Some(r) = row.first() else {
        return Ok(None);
    };
    if text(r, 3) != "running" {
        return Ok(None);
    }
    s.q(&format!(
        "UPDATE furrow_job_runs SET state = '{state}', ended_ms = {now}, detail = {} WHERE id = {rl}",
        if detail.is_empty() { "NULL".to_string() } else { s.lit(&detail) }
    ))?;
    Ok(Some(RunDone {
        run: run.to_string(),
        env: text(r, 0),
        job: text(r, 1),
        state: state.into(),
        cause: text(r, 2),
        detail,
        fired_ms: num(r, 4),
        ended_ms: now,
    }))
}

/// Posts a failed run to a webhook, best effort, off the scheduler's thread.
fn alert(a: &super::model::Alert, d: &RunDone) {
    let body = json!({"event": "job.failed", "env": d.env, "job": d.job, "run": d.run,
        "state": d.state, "detail": d.detail});
    let (url, ca_file) = (a.webhook.clone(), a.ca_file.clone());
    let bytes = body.to_string().into_bytes();
    let Ok(h) = tokio::runtime::Handle::try_current() else {
        return;
    };
    h.spawn(async move {
        let r = super::https::call(
            &url,
            "POST",
            &[],
            Some(&bytes),
            ca_file.as_deref(),
            std::time::Duration::from_secs(3),
        )
        .await;
        match r {
            Err(e) => tracing::warn!(error = %e, %url, "job failure webhook"),
            Ok((status, _)) if !(200..300).contains(&status) => {
                tracing::warn!(status, %url, "job failure webhook refused")
            }
            Ok(_) => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: Json, misfire: &str) -> JobSpec {
        serde_json::from_value(json!({"app": "a", "schedule": schedule, "misfire": misfire,
            "kind": {"type": "shell", "command": "true"}}))
        .unwrap()
    }

    #[test]
    fn misfire_policies() {
        let every = json!({"type": "cron", "expr": "* * * * * *"});
        // On time: one firing, next second after.
        let (f, n) = due_times(&spec(every.clone(), "fire_once"), 10_000, 10_040);
        assert_eq!((f, n), (vec![10_000], Some(11_000)));
        // Five seconds missed.
        let (f, n) = due_times(&spec(every.clone(), "fire_once"), 10_000, 15_040);
        assert_eq!((f, n), (vec![15_000], Some(16_000)));
        let (f, n) = due_times(&spec(every.clone(), "fire_all"), 10_000, 15_040);
        assert_eq!(
            (f, n),
            (
                vec![10_000, 11_000, 12_000, 13_000, 14_000, 15_000],
                Some(16_000)
            )
        );
        let (f, n) = due_times(&spec(every.clone(), "skip"), 10_000, 15_040);
        assert_eq!((f, n), (vec![15_000], Some(16_000)));
        let (f, n) = due_times(
            &spec(json!({"type": "cron", "expr": "*/10 * * * * *"}), "skip"),
            10_000,
            15_040,
        );
        assert_eq!((f, n), (vec![], Some(20_000)));
        drop(every);
        let (f, n) = due_times(
            &spec(json!({"type": "rate", "every_ms": 300}), "fire_once"),
            1_000,
            1_050,
        );
        assert_eq!((f, n), (vec![1_000], Some(1_300)));
        let (f, n) = due_times(
            &spec(json!({"type": "delay", "delay_ms": 300}), "fire_once"),
            1_000,
            9_000,
        );
        assert_eq!((f, n), (vec![1_000], None));
    }

    #[test]
    fn placement_explains_refusals() {
        let mut s = spec(json!({"type": "manual"}), "fire_once");
        s.resources = Resources {
            cpu_milli: 4000,
            mem_mb: 512,
        };
        let w = |id: &str, cpu, kinds: &[&str]| WorkerInfo {
            id: id.into(),
            cpu_milli: cpu,
            mem_mb: 1024,
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            labels: BTreeMap::new(),
        };
        let e = placement(&s, &[w("w1", 2000, &["shell"]), w("w2", 1000, &["shell"])]).unwrap_err();
        assert!(
            e.contains("needs 4000 mCPU") && e.contains("w1 (2000 mCPU, 1024 MiB)"),
            "{e}"
        );
        assert!(placement(&s, &[w("w3", 8000, &["shell"])]).is_ok());
        let e = placement(&s, &[w("w4", 8000, &["http"])]).unwrap_err();
        assert!(e.contains("no live worker runs \"shell\""), "{e}");
    }

    #[test]
    fn sqlite_runtime_fires_claims_finishes() {
        let j = Jobs::open("sqlite::memory:", JobsOptions::default()).unwrap();
        let job = JobRec {
            env: "DEV".into(),
            name: "n".into(),
            spec: serde_json::from_value(
                json!({"app": "a", "kind": {"type": "shell", "command": "true"},
                "items": [{"x": 1}, {"x": 2}]}),
            )
            .unwrap(),
            paused: false,
            rev: 1,
        };
        let err = j.trigger(&job).unwrap_err();
        assert!(err.message.contains("fits nowhere"), "{err:?}");
        j.register(&WorkerInfo {
            id: "w1".into(),
            cpu_milli: 1000,
            mem_mb: 100,
            kinds: vec!["shell".into()],
            ..Default::default()
        })
        .unwrap();
        let run = j.trigger(&job).unwrap();
        let r = j.run(&run).unwrap();
        assert_eq!(r["state"], "running");
        assert_eq!(r["item_list"].as_array().unwrap().len(), 2);
        let stop = j
            .beat(
                "w1",
                &[("nope".into(), 0, None)],
                false,
                super::super::reglink::Verdict::NotListed,
            )
            .unwrap();
        assert_eq!(stop, vec![("nope".to_string(), 0)]);
        assert!(
            j.beat("w9", &[], false, super::super::reglink::Verdict::NotListed)
                .is_err()
        );
    }

    #[test]
    fn map_output_takes_the_result_or_the_last_array_line() {
        assert_eq!(
            map_output("[1, 2]", "[3]").unwrap(),
            vec![json!(1), json!(2)]
        );
        assert_eq!(
            map_output("exit status 0", "x\n[{\"a\": 1}]\n[2]\nnoise\n").unwrap(),
            vec![json!(2)]
        );
        assert_eq!(map_output("", "[bad\n[]\n").unwrap(), Vec::<Json>::new());
        assert!(
            map_output("exit status 0", "none")
                .unwrap_err()
                .contains("no JSON array")
        );
        let cut = format!("[100 earlier bytes dropped]\n{}", "1, 2, 3]");
        assert!(map_output("", &cut).unwrap_err().contains("over 64 KiB"));
    }
}
