//! The configuration center service core: the in-memory state behind a lock, the store, push notification,
//! scheduled publishes, instance reports and counters. Thread-safe; the HTTP layer is in `api`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::hash_token;
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Instance, User, now_ms};
use crate::ops::Tx;
use crate::state::{Change, State};
use crate::store::Store;

type CacheKey = (String, u64, Vec<u64>, bool);

/// The usage of one namespace instance: key → instance id → (last read ms, reads).
pub type KeyUsage = HashMap<String, HashMap<String, (u64, u64)>>;

/// Whether an instance applied a release or refused it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// The configuration is in use.
    #[default]
    Applied,
    /// The instance refused the configuration (e.g. a proxy rejecting an invalid document) and keeps its
    /// previous one; `reason` says why.
    Rejected,
}

/// What an instance reports after applying (or refusing) a configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The application.
    pub app: String,
    /// The environment.
    pub env: String,
    /// The cluster.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The instance.
    #[serde(flatten)]
    pub instance: Instance,
    /// The release ids applied (or, when rejected, refused).
    pub releases: Vec<u64>,
    /// The config version applied (or refused).
    pub version: u64,
    /// Applied or rejected.
    #[serde(default)]
    pub status: ReportStatus,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When reported or last seen watching (ms since the epoch; set by the service).
    #[serde(default)]
    pub at_ms: u64,
    /// Requests and errors over the instance's last report window (the rollouts' error-rate gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::model::HealthWindow>,
    /// Request latency per listener over the same window (kept in the console's history).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<crate::model::ListenerLatency>,
}

/// The releases an instance reported and the sum of its health windows since the rollouts last looked.
type PendingHealth = (Vec<u64>, crate::model::HealthWindow);

/// The fields a report body may carry (the instance is flattened, so serde cannot refuse unknown ones).
pub const REPORT_FIELDS: &[&str] = &[
    "app",
    "env",
    "cluster",
    "namespace",
    "id",
    "ip",
    "labels",
    "releases",
    "version",
    "status",
    "reason",
    "at_ms",
    "health",
    "latency",
];

/// Service counters for `/metrics`.
#[derive(Default, Debug)]
pub struct Metrics {
    /// HTTP requests served.
    pub requests: AtomicU64,
    /// Config reads served.
    pub config_reads: AtomicU64,
    /// Watches currently waiting.
    pub watches_active: AtomicI64,
    /// Watches answered with a newer config.
    pub watch_changes: AtomicU64,
    /// Committed changes.
    pub commits: AtomicU64,
    /// Error responses by status class (4xx, 5xx).
    pub errors_4xx: AtomicU64,
    /// 5xx error responses.
    pub errors_5xx: AtomicU64,
}

/// Settings of a configuration center beyond its store.
#[derive(Clone, Debug)]
pub struct CenterOptions {
    /// The environments.
    pub envs: Vec<String>,
    /// The bootstrap administrator.
    pub admin: String,
    /// Its token; when it differs from the stored bootstrap token, that one (and every token minted under it)
    /// is revoked.
    pub admin_token: Option<String>,
    /// Releases kept per namespace instance (0: all).
    pub keep_releases: usize,
    /// How long an instance report lives without a new report or watch from that instance.
    pub report_ttl: Duration,
    /// The most instance reports held; the oldest is dropped beyond it.
    pub max_reports: usize,
    /// How long a write waits for the store (and for the writer before it) before answering 503.
    pub write_wait: Duration,
    /// The keys secret items are sealed with at rest (None: secret items are refused).
    pub secret_keys: Option<Arc<crate::secret::Keyring>>,
    /// The span collector's settings.
    pub trace: crate::trace::TraceOptions,
    /// Release management: the directory file artifacts must be under (None: file artifacts are refused).
    pub artifact_root: Option<std::path::PathBuf>,
}

impl CenterOptions {
    /// Defaults: keep 100 releases per namespace instance, reports live 10 minutes, at most 10,000 reports,
    /// writes wait at most 5 s.
    pub fn new(envs: Vec<String>, admin: &str, admin_token: Option<&str>) -> Self {
        CenterOptions {
            envs,
            admin: admin.into(),
            admin_token: admin_token.map(str::to_string),
            keep_releases: 100,
            report_ttl: Duration::from_secs(600),
            max_reports: 10_000,
            write_wait: Duration::from_secs(5),
            secret_keys: None,
            trace: crate::trace::TraceOptions::default(),
            artifact_root: None,
        }
    }
}

/// The configuration center.
pub struct Center {
    state: RwLock<State>,
    store: Box<dyn Store>,
    /// Held by the one writer at a time; holds the store revision this node's state reflects.
    commit_lock: Mutex<u64>,
    /// One channel per (environment, namespace name): every layer a watcher resolves shares both, so a commit
    /// wakes only the watchers of the namespaces it changed. Channels nobody listens to are pruned.
    watchers: Mutex<HashMap<(String, String), tokio::sync::watch::Sender<u64>>>,
    prune_watchers_at: AtomicU64,
    /// Set when the node starts shutting down (`server::serve`): watches end with 503 `draining`.
    draining: std::sync::atomic::AtomicBool,
    /// Reports by (instance id, namespace path), with a sequence number of the last news (eviction order:
    /// several reports arrive within one millisecond).
    reports: Mutex<HashMap<(String, String), (u64, Report)>>,
    report_seq: AtomicU64,
    /// Health windows received since the rollouts last looked, summed per (instance, namespace path) while
    /// the reported releases stay the same: a window is never missed, however short the instances'
    /// interval and however late the poll.
    pending_health: Mutex<HashMap<(String, String), PendingHealth>>,
    /// Key usage: namespace instance path → key → instance → (last read ms, reads).
    usage: Mutex<HashMap<String, KeyUsage>>,
    usage_entries: AtomicU64,
    /// When this node started tracking usage (it is kept in memory only).
    pub started_ms: u64,
    /// Serialized config responses by (namespace path, version, release ids, masked); cleared on every commit.
    cache: RwLock<HashMap<CacheKey, axum::body::Bytes>>,
    opts: CenterOptions,
    /// Counters.
    pub metrics: Metrics,
    /// The service registry's heartbeat leases held by this node.
    pub registry: crate::registry::lease::Leases,
    /// The jobs runtime, when attached (`crate::jobs::attach`).
    pub jobs: std::sync::OnceLock<Arc<crate::jobs::Jobs>>,
    /// The span collector.
    pub trace: crate::trace::Collector,
    /// Release management's in-memory part (probe samples, running gates, webhooks).
    pub release: crate::release::Runtime,
    /// The proxies' health windows as bounded time series (the console's charts with history).
    pub history: crate::web::history::History,
}

/// The user scheduled publishes run as.
pub fn system_user() -> User {
    User {
        name: "system".into(),
        roles: vec![],
        admin: true,
        password: None,
        token: None,
    }
}

fn poisoned<T>(_: T) -> ControlError {
    ControlError::new(ErrorCode::Internal, "state lock poisoned")
}

/// Background work: a store failure is returned (the poll backs off), anything else is logged so that one
/// bad scheduled publish or rollout does not stall the others or the catch-up.
fn store_error_or_log(e: ControlError, what: &str) -> Result<()> {
    if matches!(e.code, ErrorCode::StoreUnavailable | ErrorCode::Stale) {
        return Err(e);
    }
    tracing::warn!(error = %e, "{what} failed");
    Ok(())
}

fn busy(wait: Duration) -> ControlError {
    ControlError::new(
        ErrorCode::StoreUnavailable,
        format!(
            "the store did not answer within {} ms; nothing was applied",
            wait.as_millis()
        ),
    )
}

impl Center {
    /// Loads the state from the store and makes sure the bootstrap administrator (and its token) exist.
    pub fn open(
        store: Box<dyn Store>,
        envs: Vec<String>,
        admin: &str,
        admin_token: Option<&str>,
    ) -> Result<Arc<Center>> {
        Self::open_with(store, CenterOptions::new(envs, admin, admin_token))
    }

    /// [`Center::open`] with all options.
    pub fn open_with(store: Box<dyn Store>, opts: CenterOptions) -> Result<Arc<Center>> {
        for e in &opts.envs {
            crate::model::check_name("env", e)?;
        }
        let store: Box<dyn Store> = Box::new(crate::secret::SealingStore::new(
            store,
            opts.secret_keys.clone(),
        ));
        let mut st = State::new(opts.envs.clone());
        st.keep_releases = opts.keep_releases;
        st.secrets = opts.secret_keys.is_some();
        let (rev, recs) = store.load()?;
        for rec in recs {
            st.apply(Change::Put(rec));
        }
        let opts_trace = opts.trace.clone();
        let center = Arc::new(Center {
            state: RwLock::new(st),
            store,
            commit_lock: Mutex::new(rev),
            watchers: Mutex::new(HashMap::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
            prune_watchers_at: AtomicU64::new(1024),
            reports: Mutex::new(HashMap::new()),
            report_seq: AtomicU64::new(0),
            pending_health: Mutex::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
            usage_entries: AtomicU64::new(0),
            started_ms: now_ms(),
            cache: RwLock::new(HashMap::new()),
            opts,
            metrics: Metrics::default(),
            registry: crate::registry::lease::Leases::new(),
            jobs: std::sync::OnceLock::new(),
            trace: crate::trace::Collector::start(&opts_trace)?,
            release: crate::release::Runtime::new(),
            history: Default::default(),
        });
        let sys = system_user();
        let admin = center.opts.admin.clone();
        let has_admin = center.read(|st| st.users.get(&admin).is_some_and(|u| u.admin))?;
        if !has_admin {
            center.mutate(&sys, |tx| {
                tx.put_user(User {
                    name: admin.clone(),
                    roles: vec![],
                    admin: true,
                    password: None,
                    token: None,
                })
            })?;
        }
        if let Some(tok) = center.opts.admin_token.clone() {
            let known = center.read(|st| {
                st.tokens
                    .get(&hash_token(&tok))
                    .is_some_and(|t| t.user == admin && t.bootstrap)
            })?;
            if !known {
                center.mutate(&sys, |tx| tx.replace_bootstrap_token(&tok, &admin))?;
            }
        }
        Ok(center)
    }

    /// The options the center runs with.
    pub fn options(&self) -> &CenterOptions {
        &self.opts
    }

    /// Runs `f` on the state under the read lock.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T> {
        let st = self.state.read().map_err(poisoned)?;
        Ok(f(&st))
    }

    /// [`Center::mutate`] for async callers: runs on the blocking pool, so a stalled store never holds an async
    /// worker (reads and health checks keep being served), and answers `store_unavailable` (503) when the
    /// write did not complete within `write_wait`. A write answered 503 that was already inside the store
    /// when the wait ran out may still commit when the store comes back (as with any timeout); its changes
    /// then reach memory through the catch-up poll.
    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        actor: User,
        f: impl FnMut(&mut Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let c = self.clone();
        let wait = self.opts.write_wait;
        let task = tokio::task::spawn_blocking(move || c.mutate(&actor, f));
        match tokio::time::timeout(wait + Duration::from_millis(500), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(ControlError::new(ErrorCode::Internal, e.to_string())),
            Err(_) => Err(busy(wait)),
        }
    }

    /// Takes the commit lock, waiting at most `write_wait` (a stalled store holds it in the writer before).
    fn lock_commit(&self) -> Result<std::sync::MutexGuard<'_, u64>> {
        let deadline = std::time::Instant::now() + self.opts.write_wait;
        loop {
            match self.commit_lock.try_lock() {
                Ok(g) => return Ok(g),
                Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned(())),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(busy(self.opts.write_wait));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// Prepares a change as `actor`, commits it to the store, then applies it; wakes the watchers of the
    /// namespaces it pushed. When another node changed a shared store first, catches up and prepares the
    /// change again. A refused attempt (`forbidden`, `review_required`) is recorded in the audit log.
    /// Blocking: async code calls [`Center::write`].
    pub fn mutate<T>(&self, actor: &User, mut f: impl FnMut(&mut Tx) -> Result<T>) -> Result<T> {
        let mut rev = self.lock_commit()?;
        let mut attempt = 0;
        loop {
            let prepared = {
                let st = self.state.read().map_err(poisoned)?;
                let mut tx = Tx::new(&st, actor);
                match f(&mut tx) {
                    Ok(out) => {
                        let (changes, pushed, seq) = tx.finish();
                        Ok((out, changes, pushed, seq))
                    }
                    Err(e)
                        if matches!(e.code, ErrorCode::Forbidden | ErrorCode::ReviewRequired) =>
                    {
                        tx.denied(&e);
                        let (changes, _, _) = tx.finish();
                        Err((e, changes))
                    }
                    Err(e) => Err((e, Vec::new())),
                }
            };
            let (out, changes, pushed, seq) = match prepared {
                Ok(p) => p,
                Err((e, audit)) => {
                    if !audit.is_empty()
                        && let Ok(new_rev) = self.store.commit(*rev, &audit)
                    {
                        *rev = new_rev;
                        self.apply(audit)?;
                    }
                    return Err(e);
                }
            };
            if changes.is_empty() {
                return Ok(out);
            }
            match self.store.commit(*rev, &changes) {
                Ok(new_rev) => *rev = new_rev,
                Err(e) if e.code == ErrorCode::Stale && attempt < 5 => {
                    attempt += 1;
                    self.catch_up_locked(&mut rev)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            self.apply(changes)?;
            self.metrics.commits.fetch_add(1, Ordering::Relaxed);
            self.wake(
                pushed
                    .iter()
                    .map(|k| (k.env.as_str(), k.namespace.as_str())),
                seq,
            );
            return Ok(out);
        }
    }

    fn apply(&self, changes: Vec<Change>) -> Result<()> {
        let mut st = self.state.write().map_err(poisoned)?;
        for c in changes {
            st.apply(c);
        }
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
        Ok(())
    }

    fn wake<'a>(&self, keys: impl Iterator<Item = (&'a str, &'a str)>, seq: u64) {
        let Ok(w) = self.watchers.lock() else { return };
        for (env, ns) in keys {
            if let Some(tx) = w.get(&(env.to_string(), ns.to_string())) {
                tx.send_replace(seq);
            }
        }
    }

    /// Applies what other nodes committed to a shared store, waking the watchers of namespaces whose publish
    /// state changed.
    pub fn catch_up(&self) -> Result<usize> {
        let mut rev = self.lock_commit()?;
        self.catch_up_locked(&mut rev)
    }

    fn catch_up_locked(&self, rev: &mut u64) -> Result<usize> {
        let (new_rev, changes) = self.store.changes_since(*rev)?;
        *rev = new_rev;
        if changes.is_empty() {
            return Ok(0);
        }
        let n = changes.len();
        let mut touched: Vec<(String, String)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Put(crate::state::Rec::NsState { ns, .. }) => {
                    Some((ns.env.clone(), ns.namespace.clone()))
                }
                Change::Put(crate::state::Rec::Registry(r)) => r.wake_key(),
                _ => None,
            })
            .collect();
        touched.extend(crate::release::engine::wake_keys(&changes));
        self.apply(changes)?;
        if !touched.is_empty() {
            let seq = self.read(|st| st.seq)?;
            self.wake(touched.iter().map(|(e, n)| (e.as_str(), n.as_str())), seq);
        }
        Ok(n)
    }

    /// The cached body for a resolved config, or builds and caches it with `build`.
    pub fn cached_body(
        &self,
        key: CacheKey,
        build: impl FnOnce() -> Result<axum::body::Bytes>,
    ) -> Result<axum::body::Bytes> {
        if let Some(b) = self.cache.read().map_err(poisoned)?.get(&key) {
            return Ok(b.clone());
        }
        let body = build()?;
        let mut cache = self.cache.write().map_err(poisoned)?;
        if cache.len() >= 10_000 {
            cache.clear();
        }
        cache.insert(key, body.clone());
        Ok(body)
    }

    /// The user a bearer token authenticates (expired and revoked tokens do not).
    pub fn authenticate(&self, token: Option<&str>) -> Result<User> {
        let token = token
            .ok_or_else(|| ControlError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
        let hash = hash_token(token);
        let now = now_ms();
        let found = self.read(|st| match st.tokens.get(&hash) {
            Some(t) if t.expired(now) => Err("expired token"),
            Some(t) => st.users.get(&t.user).cloned().ok_or("unknown token"),
            None => Err("unknown token"),
        })?;
        let mut user = found
            .map_err(|m| ControlError::new(ErrorCode::Unauthorized, m))?
            .shown();
        user.token = Some(hash);
        Ok(user)
    }

    /// A receiver woken whenever a pushed change touches namespace `ns` of `env` (in any application or
    /// cluster).
    pub fn subscribe(&self, env: &str, ns: &str) -> tokio::sync::watch::Receiver<u64> {
        let mut w = match self.watchers.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        let at = self.prune_watchers_at.load(Ordering::Relaxed) as usize;
        if w.len() >= at {
            w.retain(|_, tx| tx.receiver_count() > 0);
            self.prune_watchers_at
                .store((w.len() * 2).max(1024) as u64, Ordering::Relaxed);
        }
        w.entry((env.to_string(), ns.to_string()))
            .or_insert_with(|| tokio::sync::watch::Sender::new(0))
            .subscribe()
    }

    /// Starts this node's shutdown: from now on watches answer 503 `draining` (clients move to another
    /// node), and every long-poll in progress is woken to answer so. Writes in flight still complete.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let mut w = match self.watchers.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        for tx in w.values() {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
        w.clear();
    }

    /// Whether this node is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// `Err(draining)` once this node is shutting down.
    pub fn check_not_draining(&self) -> Result<()> {
        if self.is_draining() {
            return Err(ControlError::new(
                ErrorCode::Draining,
                "this control node is shutting down; use another node",
            ));
        }
        Ok(())
    }

    /// How many (environment, namespace) wake-up channels exist (tests, metrics).
    pub fn watch_channels(&self) -> usize {
        self.watchers.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Runs the scheduled publishes that are due; returns how many ran.
    pub fn run_due(&self) -> Result<usize> {
        let now = now_ms();
        let due: Vec<u64> = self.read(|st| {
            st.scheduled
                .values()
                .filter(|s| s.at_ms <= now)
                .map(|s| s.id)
                .collect()
        })?;
        let sys = system_user();
        for id in &due {
            if let Err(e) = self.mutate(&sys, |tx| tx.run_scheduled(*id)) {
                store_error_or_log(e, "scheduled publish")?;
            }
        }
        Ok(due.len())
    }

    /// Advances the running rolling gray publishes (a batch when due, a stop on a rejection at once); returns
    /// how many were looked at.
    ///
    /// The population of a rollout is the instances with a live report on its namespace instance (for a
    /// `default`-cluster layer: on that namespace of that application in any cluster, since every cluster
    /// inherits it); an instance reporting the gray release as rejected stops the rollout.
    pub fn run_rollouts(&self) -> Result<usize> {
        let windows = std::mem::take(&mut *self.pending_health.lock().map_err(poisoned)?);
        let due: Vec<(u64, crate::model::NsKey)> = self.read(|st| {
            st.rollouts
                .values()
                .filter(|r| r.status == crate::model::RolloutStatus::Running)
                .map(|r| (r.release, r.ns.clone()))
                .collect()
        })?;
        if due.is_empty() {
            return Ok(0);
        }
        let reports = self.instances(None, None)?;
        let sys = system_user();
        for (id, ns) in &due {
            let mine: Vec<&Report> = reports
                .iter()
                .filter(|r| {
                    r.app == ns.app
                        && r.env == ns.env
                        && r.namespace == ns.namespace
                        && (r.cluster == ns.cluster || ns.cluster == crate::model::DEFAULT_CLUSTER)
                        && !r.instance.id.is_empty()
                })
                .collect();
            let mut population: Vec<String> = mine.iter().map(|r| r.instance.id.clone()).collect();
            population.sort();
            population.dedup();
            let rejected: Vec<(String, String)> = mine
                .iter()
                .filter(|r| r.status == ReportStatus::Rejected && r.releases.contains(id))
                .map(|r| (r.instance.id.clone(), r.reason.clone()))
                .collect();
            let applied: Vec<String> = mine
                .iter()
                .filter(|r| r.status == ReportStatus::Applied && r.releases.contains(id))
                .map(|r| r.instance.id.clone())
                .collect();
            // The windows summed since the last look, of instances that were running the gray release.
            let health: Vec<(String, crate::model::HealthWindow)> = windows
                .iter()
                .filter(|((inst, path), (releases, _))| {
                    releases.contains(id)
                        && mine.iter().any(|r| {
                            &r.instance.id == inst
                                && *path
                                    == format!("{}/{}/{}/{}", r.app, r.env, r.cluster, r.namespace)
                        })
                })
                .map(|((inst, _), (_, w))| (inst.clone(), *w))
                .collect();
            if let Err(e) = self.mutate(&sys, |tx| {
                tx.rollout_step(*id, &population, &applied, &rejected, &health)
            }) {
                store_error_or_log(e, "rollout step")?;
            }
        }
        Ok(due.len())
    }

    /// Records what an instance applied or rejected. The caller must hold at least `masked_read` on that
    /// namespace (checked by the API); reports expire after `report_ttl` without news from the instance, and
    /// at most `max_reports` are held (the oldest is dropped).
    pub fn report(&self, mut r: Report) -> Result<()> {
        let now = now_ms();
        r.at_ms = now;
        let key = (
            r.instance.id.clone(),
            format!("{}/{}/{}/{}", r.app, r.env, r.cluster, r.namespace),
        );
        let ttl = self.opts.report_ttl.as_millis() as u64;
        let mut reports = self.reports.lock().map_err(poisoned)?;
        if !reports.contains_key(&key) && reports.len() >= self.opts.max_reports {
            reports.retain(|_, (_, r)| now.saturating_sub(r.at_ms) < ttl);
            if reports.len() >= self.opts.max_reports
                && let Some(oldest) = reports
                    .iter()
                    .min_by_key(|(_, (seq, _))| *seq)
                    .map(|(k, _)| k.clone())
            {
                reports.remove(&oldest);
            }
        }
        if let Some(w) = r.health
            && r.status == ReportStatus::Applied
        {
            let mut pending = self.pending_health.lock().map_err(poisoned)?;
            let e = pending
                .entry(key.clone())
                .or_insert_with(|| (r.releases.clone(), Default::default()));
            if e.0 != r.releases {
                *e = (r.releases.clone(), Default::default());
            }
            e.1.requests = e.1.requests.saturating_add(w.requests);
            e.1.errors = e.1.errors.saturating_add(w.errors);
            e.1.window_ms = e.1.window_ms.saturating_add(w.window_ms);
        }
        if let Some(w) = r.health
            && r.status == ReportStatus::Applied
        {
            // Routing projects' canary analysis (release management) compares these per gray release.
            self.release
                .add_window(&key.1, &r.instance.id, &r.releases, w, &r.latency);
            self.history
                .record(&key.1, &r.instance.id, &w, &r.latency, now);
        }
        let seq = self.report_seq.fetch_add(1, Ordering::Relaxed);
        reports.insert(key, (seq, r));
        Ok(())
    }

    /// An instance watching a namespace instance is alive: its report there does not expire.
    pub fn touch(&self, instance: &str, ns_path: &str) {
        if instance.is_empty() {
            return;
        }
        if let Ok(mut reports) = self.reports.lock()
            && let Some((seq, r)) = reports.get_mut(&(instance.to_string(), ns_path.to_string()))
        {
            r.at_ms = now_ms();
            *seq = self.report_seq.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The live reports that include a release, or all live reports of a namespace instance path when `release`
    /// is None.
    pub fn instances(&self, release: Option<u64>, ns_path: Option<&str>) -> Result<Vec<Report>> {
        let now = now_ms();
        let ttl = self.opts.report_ttl.as_millis() as u64;
        let reports = self.reports.lock().map_err(poisoned)?;
        let mut out: Vec<Report> = reports
            .iter()
            .filter(|((_, p), (_, r))| {
                now.saturating_sub(r.at_ms) < ttl
                    && release.is_none_or(|id| r.releases.contains(&id))
                    && ns_path.is_none_or(|n| n == p)
            })
            .map(|(_, (_, r))| r.clone())
            .collect();
        out.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
        Ok(out)
    }

    /// Adds an instance's key reads (aggregated by its client since its last usage report). Bounded: beyond
    /// 100 entries per report allowed in memory (`max_reports` × 100) new (key, instance) pairs are dropped.
    pub fn record_usage(
        &self,
        ns_path: &str,
        instance: &str,
        reads: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let now = now_ms();
        let cap = (self.opts.max_reports as u64).saturating_mul(100);
        let mut usage = self.usage.lock().map_err(poisoned)?;
        let keys = usage.entry(ns_path.to_string()).or_default();
        for (k, n) in reads {
            let insts = keys.entry(k.clone()).or_default();
            match insts.get_mut(instance) {
                Some(e) => {
                    e.0 = now;
                    e.1 = e.1.saturating_add(*n);
                }
                None if self.usage_entries.load(Ordering::Relaxed) < cap => {
                    insts.insert(instance.to_string(), (now, *n));
                    self.usage_entries.fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Key usage of a namespace instance path: key → instance → (last read ms, reads).
    pub fn usage_of(&self, ns_path: &str) -> Result<KeyUsage> {
        Ok(self
            .usage
            .lock()
            .map_err(poisoned)?
            .get(ns_path)
            .cloned()
            .unwrap_or_default())
    }

    /// The number of instance reports held.
    pub fn report_count(&self) -> usize {
        self.reports.lock().map(|r| r.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Rec;
    use std::sync::atomic::AtomicBool;

    /// A store whose commits fail on demand.
    struct FlakyStore {
        fail: Arc<AtomicBool>,
    }

    impl Store for FlakyStore {
        fn load(&self) -> Result<(u64, Vec<Rec>)> {
            Ok((0, vec![]))
        }

        fn commit(&self, base: u64, _changes: &[Change]) -> Result<u64> {
            if self.fail.load(Ordering::SeqCst) {
                Err(ControlError::new(
                    ErrorCode::StoreUnavailable,
                    "disk on fire",
                ))
            } else {
                Ok(base + 1)
            }
        }
    }

    /// A store written before tokens had a `bootstrap` flag: changing the admin token still retires the old
    /// bootstrap token and what it minted (issue 17, item 5).
    #[test]
    fn a_new_admin_token_retires_a_legacy_bootstrap_token() {
        use crate::model::Token;
        let store = crate::store::SqliteStore::memory().unwrap();
        let legacy = |tok: &str, parent: Option<&str>, desc: &str| {
            Change::Put(Rec::Token(Token {
                hash: hash_token(tok),
                user: "admin".into(),
                description: desc.into(),
                parent: parent.map(hash_token),
                ..Default::default()
            }))
        };
        let admin = Change::Put(Rec::User(User {
            name: "admin".into(),
            admin: true,
            ..Default::default()
        }));
        store
            .commit(
                0,
                &[
                    admin,
                    legacy("old", None, "bootstrap"),
                    legacy("child", Some("old"), "ci"),
                    legacy("other", None, "ops"),
                ],
            )
            .unwrap();
        let c = Center::open(Box::new(store), vec!["DEV".into()], "admin", Some("new")).unwrap();
        for gone in ["old", "child"] {
            assert_eq!(
                c.authenticate(Some(gone)).unwrap_err().code,
                ErrorCode::Unauthorized,
                "{gone}"
            );
        }
        assert!(
            c.authenticate(Some("other")).is_ok(),
            "unrelated tokens stay"
        );
        assert!(c.authenticate(Some("new")).is_ok());
    }

    #[test]
    fn a_failed_commit_applies_nothing() {
        let fail = Arc::new(AtomicBool::new(false));
        let c = Center::open(
            Box::new(FlakyStore { fail: fail.clone() }),
            vec!["DEV".into()],
            "admin",
            Some("t"),
        )
        .unwrap();
        let admin = c.authenticate(Some("t")).unwrap();
        c.mutate(&admin, |tx| tx.create_app("a", "")).unwrap();
        let before = c
            .read(|st| (st.seq, st.audit.len(), st.apps.len()))
            .unwrap();
        fail.store(true, Ordering::SeqCst);
        let e = c.mutate(&admin, |tx| tx.create_app("b", "")).unwrap_err();
        assert_eq!(e.code, ErrorCode::StoreUnavailable);
        assert_eq!(
            c.read(|st| (st.seq, st.audit.len(), st.apps.len()))
                .unwrap(),
            before
        );
        fail.store(false, Ordering::SeqCst);
        c.mutate(&admin, |tx| tx.create_app("b", "")).unwrap();
        assert_eq!(c.read(|st| st.apps.len()).unwrap(), 2);
        assert_eq!(
            c.authenticate(Some("nope")).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            c.authenticate(None).unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }
}
