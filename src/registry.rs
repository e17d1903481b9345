//! Backends from the service registry: a proxy whose config names registry services (`servers_from`,
//! `primary_from`, `replicas_from`, with a `[registry]` table) resolves them through the control center and
//! follows their instances.
//!
//! How it fits the proxy: nothing on the data path knows about the registry. The file (or the
//! configuration center's document) is the **base** config; [`RegistryBackends`] keeps a
//! [`Discoverer`] per named service (long-poll push, its own thread, a snapshot file per service when
//! `snapshot_dir` is set) and turns the base plus the services' current instances into an ordinary
//! resolved [`Config`] with [`Config::with_endpoints`] (pure, validated like a file). A follower thread
//! (never a data-path executor) wakes on every discovery change, resolves again and publishes the result
//! through the same path as a reload (`Control::publish`): executors pick the new snapshot up between
//! requests, connections in flight finish on the old one, and the backend registry learns new servers
//! before the snapshot that names them is published. A resolution that fails (a primary service with two
//! instances, an empty Redis group) is refused and counted; the last good config keeps serving. When the
//! center is down, the discoverers keep their last state and the proxy keeps serving it; at start-up they
//! read their snapshot files.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use control::client::ApiClient;
use control::registry::calls::{CallReport, VersionCalls, calls_path};
use control::registry::client::{DiscoverOptions, Discoverer, Registration};
use control::registry::model::Discovery;
use control::registry::ops::InstanceInput;
use control::registry::rules::{BreakerStrategy, LimitMode, LimitScope, Rule, RuleSet};
use control::registry::tokens::{ClusterTokens, RuleBudget, TokenStats};
use router::config::{
    CallerList, CommandLimit, ConcurrencyLimit, Config, Endpoint, Governance, IpNet,
    MAX_RATIO_BREAKERS, MysqlRule, Pace, PaceBudgets, RatioBreaker, RegistrySettings, RuleAction,
    RulePer, SourceList,
};

/// Called by the follower after a discovery changed (set once the proxy's `Control` exists).
pub type OnChange = Box<dyn Fn() + Send + Sync>;

/// The registry side of a proxy process: the discoverers of the services its config names, the base
/// config, and counters for `/metrics`.
pub struct RegistryBackends {
    settings: RegistrySettings,
    api: ApiClient,
    inner: Mutex<Inner>,
    wake: Arc<tokio::sync::Notify>,
    handle: tokio::runtime::Handle,
    on_change: Arc<OnceLock<OnChange>>,
    /// Resolutions published (start-up, reloads and instance changes).
    pub applied: AtomicU64,
    /// Resolutions refused (the last good config stayed).
    pub rejected: AtomicU64,
    /// Client connections refused by source lists, over every rule set version.
    refused: Arc<AtomicU64>,
    /// Logins refused by caller lists, over every rule set version.
    refused_callers: Arc<AtomicU64>,
    /// The budgets of the Redis listeners' rate limits, kept across resolutions.
    budgets: Arc<PaceBudgets>,
    /// Call statistics reports the center accepted.
    calls_reported: AtomicU64,
    /// What the governance rules of the last published config enforce.
    governed: Mutex<Governed>,
    /// The token service client of the rule set version in force (cluster-wide limits).
    cluster: Mutex<Option<(u64, Arc<ClusterTokens>)>>,
    /// Its counters, over every version.
    token_stats: Arc<TokenStats>,
    /// The proxy's listeners registered as instances of its service (`register = true`).
    registrations: Mutex<Vec<Registration>>,
    /// Set at shutdown: registrations still being retried give up, late ones are undone.
    deregistering: std::sync::atomic::AtomicBool,
}

/// The governance rules of the proxy's own service as last applied: the version and, per rule kind,
/// how many are enforced and how many the proxy cannot enforce (see [`apply_rules`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Governed {
    /// The rule set version (0: none published).
    pub version: u64,
    /// `(kind, enforced, ignored)`.
    pub kinds: Vec<(&'static str, u32, u32)>,
}

struct Inner {
    base: Config,
    services: BTreeMap<String, Discoverer>,
    /// What the published config was resolved from: (service, rev, endpoints).
    last: Vec<(String, u64, Vec<Endpoint>)>,
}

/// A registry instance as a backend server: the instance id names it, `ip:port` (IPv6 in brackets).
/// `ip:port` (`[ip]:port` for IPv6), as backends are addressed.
fn address(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn endpoints(d: &Discovery) -> Vec<Endpoint> {
    d.instances
        .iter()
        .filter(|i| i.enabled && i.weight > 0)
        .map(|i| Endpoint {
            name: i.id.clone(),
            address: address(&i.ip, i.port),
            weight: i.weight,
        })
        .collect()
}

impl RegistryBackends {
    /// Starts following the services `base` names and returns the resolved config. Fails when a service
    /// cannot be read (center down and no snapshot file, a draft or unknown service) or does not resolve.
    pub fn start(base: Config) -> Result<(Arc<RegistryBackends>, Config), String> {
        let settings = base
            .proxy
            .registry
            .clone()
            .ok_or("the config has no [registry] table")?;
        if let Some(dir) = &settings.snapshot_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("registry.snapshot_dir {}: {e}", dir.display()))?;
        }
        let token = settings
            .token
            .clone()
            .or_else(|| std::env::var("FURROW_TOKEN").ok());
        let api = ApiClient::new(&settings.url, token.as_deref());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("registry runtime: {e}"))?;
        let handle = rt.handle().clone();
        let wake = Arc::new(tokio::sync::Notify::new());
        let on_change: Arc<OnceLock<OnChange>> = Arc::default();
        let (w, cb) = (wake.clone(), on_change.clone());
        std::thread::Builder::new()
            .name("furrow-registry".into())
            .spawn(move || {
                rt.block_on(async move {
                    loop {
                        w.notified().await;
                        // Coalesce a burst (several services changing together) into one publish.
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        if let Some(f) = cb.get() {
                            f();
                        }
                    }
                })
            })
            .map_err(|e| format!("registry thread: {e}"))?;
        let me = Arc::new(RegistryBackends {
            settings,
            api,
            inner: Mutex::new(Inner {
                base: base.clone(),
                services: BTreeMap::new(),
                last: Vec::new(),
            }),
            wake,
            handle,
            on_change,
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            refused: Arc::default(),
            refused_callers: Arc::default(),
            budgets: Arc::default(),
            calls_reported: AtomicU64::new(0),
            governed: Mutex::default(),
            cluster: Mutex::default(),
            token_stats: Arc::default(),
            registrations: Mutex::default(),
            deregistering: Default::default(),
        });
        let resolved = me.resolve(base)?;
        Ok((me, resolved))
    }

    /// Sets what the follower calls after a discovery changed, and runs it once (a change may have
    /// arrived between the start-up resolution and now).
    pub fn follow(&self, on_change: OnChange) {
        let _ = self.on_change.set(on_change);
        self.wake.notify_one();
    }

    /// Resolves a new base config (a reload): starts discoverers for services it names first, stops those
    /// it no longer names. The caller publishes the result.
    pub fn resolve(&self, base: Config) -> Result<Config, String> {
        match &base.proxy.registry {
            Some(s) if *s == self.settings => {}
            _ => {
                return Err(
                    "[registry] changes (added, removed, url, env, token, snapshot_dir, service) need \
                     a restart; the running config is unchanged"
                        .into(),
                );
            }
        }
        let mut inner = self.inner.lock().map_err(|_| "registry state poisoned")?;
        let wanted = self.wanted(&base);
        for s in &wanted {
            if !inner.services.contains_key(s) {
                let d = self.discover(s)?;
                inner.services.insert(s.clone(), d);
            }
        }
        let r = self.resolve_locked(&mut inner, &base, &wanted);
        if r.is_ok() {
            inner.services.retain(|s, _| wanted.contains(s));
            inner.base = base;
        }
        self.count(&r);
        r.map(|(c, _)| c)
    }

    /// The base config resolved with the services' latest instances, or None when nothing the config
    /// uses changed since the last resolution.
    pub fn resolve_latest(&self) -> Result<Option<(Config, String)>, String> {
        let mut inner = self.inner.lock().map_err(|_| "registry state poisoned")?;
        let base = inner.base.clone();
        let wanted = self.wanted(&base);
        let before = inner.last.clone();
        let r = self.resolve_locked(&mut inner, &base, &wanted);
        match r {
            Ok((c, origin)) => {
                let same = before.len() == inner.last.len()
                    && before
                        .iter()
                        .zip(&inner.last)
                        .all(|(a, b)| a.0 == b.0 && a.2 == b.2);
                if same {
                    return Ok(None);
                }
                self.applied.fetch_add(1, Ordering::Relaxed);
                Ok(Some((c, origin)))
            }
            Err(e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                // Keep the last good endpoints as the comparison point.
                inner.last = before;
                Err(e)
            }
        }
    }

    fn count<T>(&self, r: &Result<T, String>) {
        let c = if r.is_ok() {
            &self.applied
        } else {
            &self.rejected
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The services a base config needs: those its groups name, and the proxy's own (for its rules).
    fn wanted(&self, base: &Config) -> Vec<String> {
        let mut v = base.registry_services();
        if let Some(s) = &self.settings.service
            && !v.contains(s)
        {
            v.push(s.clone());
        }
        v
    }

    fn resolve_locked(
        &self,
        inner: &mut Inner,
        base: &Config,
        wanted: &[String],
    ) -> Result<(Config, String), String> {
        let mut used = Vec::new();
        let mut rules = None;
        for s in wanted {
            let d = inner
                .services
                .get(s)
                .map(|d| d.current())
                .ok_or_else(|| format!("registry service `{s}` is not followed"))?;
            if self.settings.service.as_ref() == Some(s) {
                rules = d.rules.clone();
                // The rule set version takes part in the comparison with the last resolution.
                used.push((
                    format!("{s}#rules"),
                    d.rev,
                    vec![Endpoint {
                        name: String::new(),
                        address: String::new(),
                        weight: rules.as_ref().map_or(0, |r| r.version as u32),
                    }],
                ));
                if !base.registry_services().contains(s) {
                    continue;
                }
            }
            used.push((s.clone(), d.rev, endpoints(&d)));
        }
        let lookup = |s: &str| {
            used.iter()
                .find(|(name, _, _)| name == s)
                .map(|(_, _, e)| e.clone())
        };
        let mut resolved = base.with_endpoints(&lookup)?;
        if self.settings.service.is_some() {
            let tokens = rules.as_ref().and_then(|r| self.cluster_tokens(r));
            let governed = apply_rules(
                &mut resolved,
                rules.as_ref(),
                &self.refused,
                &self.refused_callers,
                &self.budgets,
                tokens,
            );
            if let Ok(mut g) = self.governed.lock() {
                *g = governed;
            }
        }
        let origin = format!(
            "registry {}",
            used.iter()
                .map(|(s, rev, e)| format!("{s}@{rev}({})", e.len()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        inner.last = used;
        Ok((resolved, origin))
    }

    /// Starts a discoverer (on a thread of its own: `Discoverer::start` blocks on its first fetch, and
    /// this may be called from inside the admin runtime) and wakes the follower on its changes.
    fn discover(&self, service: &str) -> Result<Discoverer, String> {
        let mut opts = DiscoverOptions::new(&self.settings.env, service);
        opts.snapshot = self
            .settings
            .snapshot_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{service}.json", self.settings.env)));
        let api = self.api.clone();
        let d = std::thread::scope(|s| {
            s.spawn(|| Discoverer::start(api, opts))
                .join()
                .map_err(|_| "registry discoverer panicked".to_string())
        })?
        .map_err(|e| {
            format!(
                "registry service `{service}` ({} env {}): {e}",
                self.settings.url, self.settings.env
            )
        })?;
        let mut rx = d.subscribe();
        let wake = self.wake.clone();
        self.handle.spawn(async move {
            while rx.changed().await.is_ok() {
                wake.notify_one();
            }
        });
        Ok(d)
    }

    /// Registers the listeners of `config` as instances of the proxy's own service (`[registry]
    /// register = true`): address (`advertise` for wildcard binds), version, tags `kind` and
    /// `listener`; heartbeats from the client library's thread. A thread of its own retries every
    /// second while the center is unreachable, so start-up never waits for it.
    pub fn register_listeners(self: &Arc<Self>, config: &Config) {
        let (true, Some(service)) = (self.settings.register, self.settings.service.clone()) else {
            return;
        };
        let mut pending = Vec::new();
        for l in &config.listeners {
            let ip = match (l.address.ip().is_unspecified(), &self.settings.advertise) {
                (false, _) => l.address.ip().to_string(),
                (true, Some(a)) => a.clone(),
                (true, None) => {
                    tracing::warn!(listener = %l.name, "not registered: bound to a wildcard address and [registry] advertise is not set");
                    continue;
                }
            };
            if l.address.port() == 0 {
                continue;
            }
            pending.push(InstanceInput {
                ip,
                port: l.address.port(),
                version: env!("CARGO_PKG_VERSION").into(),
                tags: [
                    ("kind".to_string(), l.kind.as_str().to_string()),
                    ("listener".to_string(), l.name.clone()),
                ]
                .into(),
                metadata: [("proxy".to_string(), "furrow".to_string())].into(),
                ..Default::default()
            });
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("furrow-register".into())
            .spawn(move || {
                while !pending.is_empty() && !me.deregistering.load(Ordering::Relaxed) {
                    pending.retain(|input| {
                        let r = Registration::start(
                            me.api.clone(),
                            &me.settings.env,
                            &service,
                            input.clone(),
                            None,
                        );
                        match r {
                            Ok(reg) => {
                                tracing::info!(service = %service, instance = %reg.instance.id, "registered");
                                if let Ok(mut v) = me.registrations.lock() {
                                    v.push(reg);
                                }
                                false
                            }
                            Err(e) => {
                                tracing::warn!(service = %service, "registration failed, retrying: {e}");
                                true
                            }
                        }
                    });
                    if !pending.is_empty() {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
                // A shutdown that came while registering: undo what registered meanwhile.
                if me.deregistering.load(Ordering::Relaxed) {
                    me.deregister();
                }
            });
        if let Err(e) = spawned {
            tracing::error!("registration thread: {e}");
        }
    }

    /// Stops heartbeats and removes the proxy's instances from the registry (graceful shutdown: clients
    /// that discover the proxy stop getting it before it drains). Safe to call from async code.
    pub fn deregister(&self) {
        self.deregistering.store(true, Ordering::Relaxed);
        let regs: Vec<Registration> = self
            .registrations
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        if regs.is_empty() {
            return;
        }
        // The client library blocks on a runtime of its own: not on the caller's.
        std::thread::scope(|s| {
            s.spawn(|| {
                for r in regs {
                    let id = r.instance.id.clone();
                    match r.deregister() {
                        Ok(()) => tracing::info!(instance = %id, "deregistered"),
                        Err(e) => tracing::warn!(instance = %id, "deregistration failed: {e}"),
                    }
                }
            });
        });
    }

    /// The instances this proxy registered (ids).
    pub fn registered(&self) -> Vec<String> {
        self.registrations
            .lock()
            .map(|v| v.iter().map(|r| r.instance.id.clone()).collect())
            .unwrap_or_default()
    }

    /// The token service client for `rules` (one per rule set version, kept while it is in force); None
    /// when no rule is cluster-wide.
    fn cluster_tokens(&self, rules: &RuleSet) -> Option<Arc<ClusterTokens>> {
        let mut c = self.cluster.lock().ok()?;
        if let Some((v, t)) = c.as_ref()
            && *v == rules.version
        {
            return Some(t.clone());
        }
        let client = format!(
            "proxy-{}-{}",
            std::process::id(),
            control::model::now_ms() % 1_000_000_000
        );
        let t = ClusterTokens::start(self.api.clone(), rules, &client, self.token_stats.clone())
            .map(Arc::new);
        *c = t.clone().map(|t| (rules.version, t));
        t
    }

    /// The cluster-wide limits' counters (over every rule set version) and whether the center answered
    /// the last token request (None: no cluster-wide rule in force).
    pub fn tokens(&self) -> (&TokenStats, Option<bool>) {
        let online = self
            .cluster
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|(_, t)| t.online()));
        (&self.token_stats, online)
    }

    /// What the governance rules in force enforce.
    pub fn governed(&self) -> Governed {
        self.governed.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Client connections refused by source lists so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Redis commands refused by a governance rate limit, and those that waited for their turn.
    pub fn limited_commands(&self) -> (u64, u64) {
        (
            self.budgets.refused.load(Ordering::Relaxed),
            self.budgets.queued.load(Ordering::Relaxed),
        )
    }

    /// Reports the proxy's calls to the followed services' instances, by instance version, to the center
    /// every `report_calls_ms` (from a thread of its own): the deltas of each backend's answered requests
    /// (with their latency histogram and summed latency, `router::latency`) and failures since the last
    /// report, the backend matched to its instance by name (the instance id) and address. A report that
    /// fails is added to the next one.
    pub fn report_calls(self: &Arc<Self>, backends: Arc<runtime::backend::BackendRegistry>) {
        let every = self.settings.report_calls_ms;
        if every == 0 {
            return;
        }
        let me = Arc::downgrade(self);
        let reporter = format!("furrow-proxy-{}", std::process::id());
        let spawned = std::thread::Builder::new()
            .name("furrow-calls".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let mut last: HashMap<(String, String), Counted> = HashMap::new();
                    // Reports that failed, by service: sent again with the next one (bounded: the
                    // versions of a report, the services followed).
                    let mut unsent: BTreeMap<String, BTreeMap<String, VersionCalls>> =
                        BTreeMap::new();
                    loop {
                        tokio::time::sleep(std::time::Duration::from_millis(every)).await;
                        let Some(me) = me.upgrade() else { return };
                        let mut due = std::mem::take(&mut unsent);
                        for (service, calls) in me.call_deltas(&backends, &mut last) {
                            let m = due.entry(service).or_default();
                            for c in calls {
                                merge_calls(m, c);
                            }
                        }
                        for (service, calls) in due {
                            let report = CallReport {
                                reporter: reporter.clone(),
                                calls: calls.values().cloned().collect(),
                            };
                            let body = serde_json::to_value(&report).unwrap_or_default();
                            let path = calls_path(&me.settings.env, &service);
                            if let Err(e) = me.api.call("POST", &path, Some(&body)).await {
                                tracing::debug!(%service, error = %e, "call statistics not reported");
                                if unsent.len() < 1024 {
                                    unsent.insert(service, calls);
                                }
                            } else {
                                me.calls_reported.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the call statistics reporter");
        }
    }

    /// The calls made to each followed service's instances since `last` (updated), by version.
    fn call_deltas(
        &self,
        backends: &runtime::backend::BackendRegistry,
        last: &mut HashMap<(String, String), Counted>,
    ) -> Vec<(String, Vec<VersionCalls>)> {
        // (instance id, address) → (service, version)
        let mut instances: HashMap<(String, String), (String, String)> = HashMap::new();
        if let Ok(inner) = self.inner.lock() {
            for (service, d) in &inner.services {
                let cur = d.current();
                for i in &cur.instances {
                    instances.insert(
                        (i.id.clone(), address(&i.ip, i.port)),
                        (service.clone(), i.version.clone()),
                    );
                }
            }
        }
        let mut out: BTreeMap<String, BTreeMap<String, VersionCalls>> = BTreeMap::new();
        let all = backends.all();
        for b in &all {
            let key = (b.group.clone(), b.name.clone());
            let now = Counted::of(b);
            let before = last.insert(key, now.clone()).unwrap_or_default();
            let Some(d) = now.since(&before) else {
                continue;
            };
            let Some((service, version)) = instances.get(&(b.name.clone(), b.address.clone()))
            else {
                continue;
            };
            merge_calls(
                out.entry(service.clone()).or_default(),
                VersionCalls {
                    version: version.clone(),
                    ..d
                },
            );
        }
        last.retain(|(g, n), _| all.iter().any(|b| &b.group == g && &b.name == n));
        out.into_iter()
            .map(|(s, m)| (s, m.into_values().collect()))
            .collect()
    }

    /// Call statistics reports the center accepted.
    pub fn calls_reported(&self) -> u64 {
        self.calls_reported.load(Ordering::Relaxed)
    }

    /// `(service, rev, instances taking traffic)` of every followed service, for `/metrics`.
    pub fn services(&self) -> Vec<(String, u64, usize)> {
        self.inner
            .lock()
            .map(|inner| {
                inner
                    .services
                    .iter()
                    .map(|(s, d)| {
                        let cur = d.current();
                        (s.clone(), cur.rev, endpoints(&cur).len())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A backend's cumulative call counters as last read: answered calls by latency bucket, their summed
/// latency, failures.
#[derive(Clone, Debug, Default)]
struct Counted {
    buckets: [u64; router::latency::BUCKETS],
    latency_us: u64,
    errors: u64,
}

impl Counted {
    fn of(b: &runtime::backend::BackendState) -> Self {
        let mut c = Counted {
            latency_us: b.latency_sum_us.load(Ordering::Relaxed),
            errors: b.errors.load(Ordering::Relaxed),
            ..Default::default()
        };
        for (d, s) in c.buckets.iter_mut().zip(&b.latency_buckets) {
            *d = s.load(Ordering::Relaxed);
        }
        c
    }

    /// The calls since `before` (None: none). Counters that went back (a new backend state under the
    /// same name) count from zero.
    fn since(&self, before: &Counted) -> Option<VersionCalls> {
        let went_back = self.errors < before.errors
            || self.latency_us < before.latency_us
            || self.buckets.iter().zip(&before.buckets).any(|(a, b)| a < b);
        let zero = Counted::default();
        let before = if went_back { &zero } else { before };
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .zip(&before.buckets)
            .map(|(a, b)| a - b)
            .collect();
        let answered: u64 = buckets.iter().sum();
        let errors = self.errors - before.errors;
        if answered == 0 && errors == 0 {
            return None;
        }
        // The slowest call is known to its bucket: report the bucket's upper bound.
        let max_latency_us = buckets.iter().rposition(|n| *n > 0).map_or(0, |i| {
            router::latency::BOUNDS_US
                .get(i)
                .copied()
                .unwrap_or(router::latency::BOUNDS_US[15] * 2)
        });
        Some(VersionCalls {
            version: String::new(),
            calls: answered + errors,
            errors,
            latency_us: self.latency_us - before.latency_us,
            max_latency_us,
            buckets,
        })
    }
}

/// Adds `c` to the entry of its version in `m`.
fn merge_calls(m: &mut BTreeMap<String, VersionCalls>, c: VersionCalls) {
    match m.get_mut(&c.version) {
        None => {
            m.insert(c.version.clone(), c);
        }
        Some(v) => {
            v.calls = v.calls.saturating_add(c.calls);
            v.errors = v.errors.saturating_add(c.errors);
            v.latency_us = v.latency_us.saturating_add(c.latency_us);
            v.max_latency_us = v.max_latency_us.max(c.max_latency_us);
            if v.buckets.len() == c.buckets.len() {
                for (a, b) in v.buckets.iter_mut().zip(&c.buckets) {
                    *a = a.saturating_add(*b);
                }
            }
        }
    }
}

/// The registry lines of `/metrics`.
pub fn render_metrics(r: &RegistryBackends, s: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "# HELP furrow_registry_resolutions_total Configs resolved from registry services: published, or refused (the last good config stayed).\n\
         # TYPE furrow_registry_resolutions_total counter\n\
         furrow_registry_resolutions_total{{result=\"applied\"}} {}\n\
         furrow_registry_resolutions_total{{result=\"refused\"}} {}",
        r.applied.load(Ordering::Relaxed),
        r.rejected.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        s,
        "# HELP furrow_registry_service_instances Instances of a followed registry service that take traffic.\n\
         # TYPE furrow_registry_service_instances gauge"
    );
    let services = r.services();
    for (name, _, n) in &services {
        let _ = writeln!(
            s,
            "furrow_registry_service_instances{{service=\"{}\"}} {n}",
            crate::metrics::escape_label(name)
        );
    }
    let _ = writeln!(
        s,
        "# HELP furrow_registry_service_rev The registry revision of a followed service last seen.\n\
         # TYPE furrow_registry_service_rev gauge"
    );
    for (name, rev, _) in &services {
        let _ = writeln!(
            s,
            "furrow_registry_service_rev{{service=\"{}\"}} {rev}",
            crate::metrics::escape_label(name)
        );
    }
    if r.settings.report_calls_ms > 0 {
        let _ = writeln!(
            s,
            "# HELP furrow_registry_calls_reports_total Per-version call statistics reports the center accepted.\n\
             # TYPE furrow_registry_calls_reports_total counter\n\
             furrow_registry_calls_reports_total {}",
            r.calls_reported()
        );
    }
    if r.settings.service.is_none() {
        return;
    }
    if r.settings.register {
        let _ = writeln!(
            s,
            "# HELP furrow_registry_registered_instances Listeners of this proxy registered as instances of its service.\n\
             # TYPE furrow_registry_registered_instances gauge\n\
             furrow_registry_registered_instances {}",
            r.registered().len()
        );
    }
    let g = r.governed();
    let _ = writeln!(
        s,
        "# HELP furrow_governance_rules_version The version of the governance rule set in force (0: none).\n\
         # TYPE furrow_governance_rules_version gauge\n\
         furrow_governance_rules_version {}\n\
         # HELP furrow_governance_rules Governance rules in force, by kind, enforced by this proxy or not.\n\
         # TYPE furrow_governance_rules gauge",
        g.version
    );
    for (kind, yes, no) in &g.kinds {
        let _ = writeln!(
            s,
            "furrow_governance_rules{{kind=\"{kind}\",enforced=\"yes\"}} {yes}\n\
             furrow_governance_rules{{kind=\"{kind}\",enforced=\"no\"}} {no}"
        );
    }
    let _ = writeln!(
        s,
        "# HELP furrow_governance_refused_total Client connections refused by a governance source list.\n\
         # TYPE furrow_governance_refused_total counter\n\
         furrow_governance_refused_total {}",
        r.refused()
    );
    let (refused, queued) = r.limited_commands();
    let b = &r.budgets;
    let _ = writeln!(
        s,
        "# HELP furrow_governance_commands_total Redis commands decided by governance limits: refused by a rate limit, held for their turn by a queueing limit, or refused by a concurrency limit.\n\
         # TYPE furrow_governance_commands_total counter\n\
         furrow_governance_commands_total{{result=\"refused\"}} {refused}\n\
         furrow_governance_commands_total{{result=\"queued\"}} {queued}\n\
         furrow_governance_commands_total{{result=\"over_concurrency\"}} {}\n\
         # HELP furrow_governance_statements_total MySQL statements refused by governance limits (ERR 1226): by a rate limit, or by a concurrency limit.\n\
         # TYPE furrow_governance_statements_total counter\n\
         furrow_governance_statements_total{{result=\"refused\"}} {}\n\
         furrow_governance_statements_total{{result=\"over_concurrency\"}} {}\n\
         # HELP furrow_governance_callers_refused_total Client logins refused by a governance caller list (the caller is the proxy user).\n\
         # TYPE furrow_governance_callers_refused_total counter\n\
         furrow_governance_callers_refused_total {}",
        b.over_concurrency.load(Ordering::Relaxed),
        b.statements_refused.load(Ordering::Relaxed),
        b.statements_over_concurrency.load(Ordering::Relaxed),
        r.refused_callers.load(Ordering::Relaxed),
    );
    let (t, online) = r.tokens();
    let _ = writeln!(
        s,
        "# HELP furrow_governance_cluster_calls_total Calls decided by cluster-wide limits: with a leased token, refused (the cluster budget was spent), or by the local share while the center is unreachable.\n\
         # TYPE furrow_governance_cluster_calls_total counter\n\
         furrow_governance_cluster_calls_total{{result=\"leased\"}} {}\n\
         furrow_governance_cluster_calls_total{{result=\"refused\"}} {}\n\
         furrow_governance_cluster_calls_total{{result=\"fallback\"}} {}\n\
         furrow_governance_cluster_calls_total{{result=\"fallback_refused\"}} {}\n\
         # HELP furrow_governance_token_errors_total Token requests to the center that failed.\n\
         # TYPE furrow_governance_token_errors_total counter\n\
         furrow_governance_token_errors_total {}\n\
         # HELP furrow_governance_token_service_up Whether the center answered the last token request (absent: no cluster-wide rule).\n\
         # TYPE furrow_governance_token_service_up gauge",
        t.leased.load(Ordering::Relaxed),
        t.refused.load(Ordering::Relaxed),
        t.fallback.load(Ordering::Relaxed),
        t.fallback_refused.load(Ordering::Relaxed),
        t.errors.load(Ordering::Relaxed),
    );
    if let Some(up) = online {
        let _ = writeln!(s, "furrow_governance_token_service_up {}", up as u8);
    }
}

/// Translates the proxy's governance rules into the config the data path enforces, and says what it
/// enforced:
/// - `access` rules with `sources`: the client source lists checked at accept (a deny list refuses
///   the listed networks, an allow list admits only them; every list must admit a client). With
///   `callers`: caller lists checked when a client logs in, the caller being its proxy user (the
///   MySQL login user, the Redis `AUTH` user, `default` without one). A rule with both is two
///   lists, each of which must admit the client.
/// - `rate_limit` rules: a `limit` rule (`match = "*"`) first in every MySQL group, per user for the
///   `user` and `caller` scopes, one budget for `service`; `only` names the users; a fractional
///   `qps` rounds up; the `warm_up` and `queue` controls become the rule's [`Pace`]; `cluster` QPS
///   budgets take their tokens from the center's token service through `tokens` (local share as
///   fallback). Their `qps` also becomes a [`CommandLimit`] of the Redis listeners (per Redis user for
///   `user`/`caller`), their `concurrency` a [`ConcurrencyLimit`] (commands awaiting their replies),
///   with their state in `budgets`.
/// - `circuit_breaker` rules with `strategy = "error_count"`: every group's breaker opens after
///   `threshold` consecutive failures of a backend (MySQL `circuit_break_after`, Redis `eject_after`)
///   for `open_ms`. Every `error_ratio` / `slow_ratio` rule (up to [`MAX_RATIO_BREAKERS`]): a
///   sliding-window breaker of its own on every backend with its own half-open probe
///   (`runtime::backend`); rules beyond are shown as not enforced.
/// - `route` rules do not apply to proxies.
pub fn apply_rules(
    c: &mut Config,
    rules: Option<&RuleSet>,
    refused: &Arc<AtomicU64>,
    refused_callers: &Arc<AtomicU64>,
    budgets: &Arc<PaceBudgets>,
    tokens: Option<Arc<ClusterTokens>>,
) -> Governed {
    let Some(rs) = rules else {
        c.proxy.governance = None;
        return Governed::default();
    };
    let mut sources = Vec::new();
    let mut limits = Vec::new();
    let mut commands = Vec::new();
    let mut concurrency = Vec::new();
    let mut callers_lists = Vec::new();
    let mut breaker = None;
    let mut ratios = Vec::new();
    let (mut access, mut limit, mut brk, mut route) = ((0, 0), (0, 0), (0, 0), (0, 0));
    let mut intervention = (0, 0);
    for (i, r) in rs.rules.iter().enumerate() {
        match r {
            Rule::Access {
                allow,
                callers,
                sources: s,
            } => {
                if !s.is_empty() {
                    sources.push(SourceList {
                        allow: *allow,
                        nets: s.iter().filter_map(|n| IpNet::parse(n)).collect(),
                    });
                }
                if !callers.is_empty() {
                    callers_lists.push(CallerList {
                        allow: *allow,
                        callers: callers.clone(),
                        message: format!(
                            "(governance rule {i} of {}, version {})",
                            rs.service, rs.version
                        ),
                    });
                }
                access.0 += 1;
            }
            Rule::RateLimit {
                qps,
                concurrency: concurrency_max,
                scope,
                only,
                cluster,
                control,
            } => {
                let pace = match control {
                    LimitMode::Reject => Pace::Reject,
                    LimitMode::WarmUp { warm_up_s } => Pace::WarmUp {
                        warm_up_ms: warm_up_s.saturating_mul(1000),
                    },
                    LimitMode::Queue { max_wait_ms } => Pace::Queue {
                        max_wait_ms: *max_wait_ms,
                    },
                };
                let budget = tokens
                    .as_ref()
                    .filter(|t| *cluster && t.covers(i))
                    .map(|t| {
                        Arc::new(RuleBudget {
                            tokens: t.clone(),
                            rule: i,
                        }) as Arc<dyn router::config::ClusterBudget>
                    });
                let message = format!(
                    "(governance rule {i} of {}, version {}{})",
                    rs.service,
                    rs.version,
                    if budget.is_some() {
                        ", cluster-wide"
                    } else {
                        ""
                    }
                );
                if let Some(q) = qps {
                    commands.push(CommandLimit {
                        rule: i,
                        qps: *q,
                        per_user: *scope != LimitScope::Service,
                        users: only.clone(),
                        pace,
                        cluster: budget.clone(),
                        message: message.clone(),
                    });
                }
                if let Some(max) = concurrency_max {
                    concurrency.push(ConcurrencyLimit {
                        rule: i,
                        max: *max,
                        per_user: *scope != LimitScope::Service,
                        users: only.clone(),
                        message: message.clone(),
                    });
                }
                limits.push(MysqlRule {
                    pattern: "*".into(),
                    action: RuleAction::Limit,
                    users: only.clone(),
                    qps: qps.map(|q| q.ceil().clamp(1.0, u32::MAX as f64) as u32),
                    concurrency: *concurrency_max,
                    per: match scope {
                        LimitScope::Service => RulePer::Rule,
                        LimitScope::Caller | LimitScope::User => RulePer::User,
                    },
                    pace,
                    message: Some(message),
                    cluster: budget,
                    governed: Some(budgets.clone()),
                });
                limit.0 += 1;
            }
            Rule::CircuitBreaker {
                strategy: BreakerStrategy::ErrorCount,
                threshold,
                open_ms,
                ..
            } => {
                breaker = Some((
                    threshold.ceil().clamp(1.0, 1_000_000.0) as u32,
                    std::time::Duration::from_millis((*open_ms).max(1)),
                ));
                brk.0 += 1;
            }
            Rule::CircuitBreaker {
                strategy,
                threshold,
                window_ms,
                min_calls,
                slow_ms,
                open_ms,
            } if ratios.len() < MAX_RATIO_BREAKERS => {
                ratios.push(RatioBreaker {
                    slow_ms: (*strategy == BreakerStrategy::SlowRatio)
                        .then(|| slow_ms.unwrap_or(0)),
                    threshold: *threshold,
                    window_ms: *window_ms,
                    min_calls: *min_calls,
                    open_ms: *open_ms,
                });
                brk.0 += 1;
            }
            Rule::CircuitBreaker { .. } => brk.1 += 1,
            Rule::Route { .. } => route.1 += 1,
            // Applied by the center to the discovery answers the proxy follows.
            Rule::ClusterSwitch { .. } | Rule::LoadShare { .. } => intervention.0 += 1,
        }
    }
    for g in &mut c.mysql_groups {
        g.rules.splice(0..0, limits.iter().cloned());
        if let Some((after, open)) = breaker {
            g.circuit_break_after = after;
            g.circuit_open = open;
        }
    }
    for g in &mut c.redis_groups {
        if let Some((after, open)) = breaker {
            g.eject_after = after;
            g.retry_after = open;
        }
    }
    c.proxy.governance = Some(Arc::new(Governance {
        version: rs.version,
        sources,
        refused: refused.clone(),
        callers: callers_lists,
        refused_callers: refused_callers.clone(),
        breakers: ratios,
        limits: if c.redis_groups.is_empty() {
            Vec::new()
        } else {
            commands
        },
        concurrency: if c.redis_groups.is_empty() {
            Vec::new()
        } else {
            concurrency
        },
        budgets: budgets.clone(),
    }));
    Governed {
        version: rs.version,
        kinds: vec![
            ("access", access.0, access.1),
            ("rate_limit", limit.0, limit.1),
            ("circuit_breaker", brk.0, brk.1),
            ("route", route.0, route.1),
            ("intervention", intervention.0, intervention.1),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_translate_into_what_the_data_path_enforces() {
        let mut c = router::config::parse(
            "t.toml",
            r#"
[[listeners]]
name = "m"
kind = "mysql"
address = "127.0.0.1:0"
group = "db"
[[listeners]]
name = "r"
kind = "redis"
address = "127.0.0.1:0"
group = "cache"
[redis_groups.cache]
servers = [{ address = "127.0.0.1:7001" }]
[mysql_groups.db]
user = "u"
primary = { address = "127.0.0.1:3400" }
rules = [{ match = "DELETE *", action = "deny" }]
"#,
        )
        .expect("config");
        let rules: Vec<Rule> = serde_json::from_value(serde_json::json!([
            {"kind": "rate_limit", "qps": 2.5, "scope": "user", "only": ["app"]},
            {"kind": "rate_limit", "concurrency": 4},
            {"kind": "rate_limit", "qps": 5, "control": {"mode": "queue", "max_wait_ms": 300}},
            {"kind": "rate_limit", "qps": 9, "scope": "caller",
             "control": {"mode": "warm_up", "warm_up_s": 4}},
            {"kind": "circuit_breaker", "strategy": "error_count", "threshold": 3,
             "window_ms": 10000, "open_ms": 700},
            {"kind": "access", "allow": false, "sources": ["10.0.0.0/8"], "callers": ["x"]},
            {"kind": "route", "version": "2.*", "percent": 10},
            {"kind": "circuit_breaker", "strategy": "error_ratio", "threshold": 0.5,
             "window_ms": 10000, "min_calls": 5, "open_ms": 900},
            {"kind": "circuit_breaker", "strategy": "slow_ratio", "threshold": 0.8,
             "window_ms": 5000, "min_calls": 5, "slow_ms": 30, "open_ms": 600}
        ]))
        .expect("rules");
        let rs = RuleSet {
            service: "edge".into(),
            version: 7,
            rules,
            ..Default::default()
        };
        let refused = Arc::default();
        let budgets = Arc::default();
        let g = apply_rules(&mut c, Some(&rs), &refused, &refused, &budgets, None);
        assert_eq!(g.version, 7);
        assert_eq!(
            g.kinds,
            [
                ("access", 1, 0),
                ("rate_limit", 4, 0),
                ("circuit_breaker", 3, 0),
                ("route", 0, 1),
                ("intervention", 0, 0)
            ]
        );
        let db = c.mysql_group("db").expect("db");
        assert_eq!(db.rules.len(), 5, "four limits first, then the file's rule");
        assert_eq!(db.rules[0].qps, Some(3));
        assert_eq!(db.rules[0].per, RulePer::User);
        assert_eq!(db.rules[0].users, ["app"]);
        assert_eq!(db.rules[0].pace, Pace::Reject);
        assert_eq!(db.rules[1].concurrency, Some(4));
        assert_eq!(db.rules[1].per, RulePer::Rule);
        assert_eq!(db.rules[2].pace, Pace::Queue { max_wait_ms: 300 });
        assert_eq!(db.rules[3].pace, Pace::WarmUp { warm_up_ms: 4000 });
        assert_eq!(db.rules[4].action, RuleAction::Deny);
        assert_eq!(db.circuit_break_after, 3);
        assert_eq!(db.circuit_open, std::time::Duration::from_millis(700));
        let cache = c.redis_group("cache").expect("cache");
        assert_eq!(cache.eject_after, 3);
        let gov = c.proxy.governance.clone().expect("governance");
        // Every ratio breaker is in force.
        let b: Vec<_> = gov
            .breakers
            .iter()
            .map(|b| (b.slow_ms, b.open_ms))
            .collect();
        assert_eq!(b, [(None, 900), (Some(30), 600)]);
        // The caller list, checked at login.
        assert!(gov.admits_caller("x").is_err());
        assert!(gov.admits_caller("app").is_ok());
        // The Redis listeners' concurrency limits.
        assert_eq!(
            gov.concurrency,
            [ConcurrencyLimit {
                rule: 1,
                max: 4,
                per_user: false,
                users: vec![],
                message: "(governance rule 1 of edge, version 7)".into(),
            }]
        );
        // The Redis listeners' qps limits.
        let l: Vec<_> = gov
            .limits
            .iter()
            .map(|l| (l.rule, l.qps, l.per_user, l.users.clone(), l.pace))
            .collect();
        assert_eq!(
            l,
            [
                (0, 2.5, true, vec!["app".to_string()], Pace::Reject),
                (2, 5.0, false, vec![], Pace::Queue { max_wait_ms: 300 }),
                (3, 9.0, true, vec![], Pace::WarmUp { warm_up_ms: 4000 }),
            ]
        );
        assert!(gov.limits[1].message.contains("rule 2 of edge, version 7"));
        assert!(!gov.admits_source("10.1.2.3".parse().expect("ip")));
        assert!(gov.admits_source("127.0.0.1".parse().expect("ip")));
        assert_eq!(refused.load(Ordering::Relaxed), 2, "a source and a caller");
        // No rule set: no governance.
        assert_eq!(
            apply_rules(&mut c, None, &refused, &refused, &budgets, None),
            Governed::default()
        );
        assert!(c.proxy.governance.is_none());
    }
}
