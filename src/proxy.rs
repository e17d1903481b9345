//! `furrow proxy`: binds every listener on every executor, starts the executors, the admin port and
//! `/metrics`, handles signals and reloads.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use router::config::{Config, ListenerKind};
use runtime::{BackendRegistry, Executors, ListenerCtx, Shared, SnapshotHub, StatsRegistry};
use tokio::sync::watch;

/// `furrow proxy` options.
#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// The TOML config file (see examples/ and docs/config.md).
    #[arg(
        long,
        short,
        required_unless_present = "config_source",
        conflicts_with = "config_source"
    )]
    pub config: Option<PathBuf>,
    /// Take the config from the configuration center instead of a file:
    /// `http://HOST:PORT/APP/ENV/CLUSTER/NAMESPACE[?key=ITEM&snapshot=PATH&instance=ID&labels=k:v]`.
    /// The item (default `config`) is a TOML document; every publish is validated exactly like a file
    /// and hot-reloaded; an invalid one is rejected and not reported as applied; with `snapshot=PATH`
    /// the proxy starts from the last good config when the center is down.
    #[arg(long)]
    pub config_source: Option<String>,
    /// Number of data-path executors (overrides `[proxy] executors`).
    #[arg(long)]
    pub executors: Option<usize>,
    /// Zero-downtime upgrade socket: at start, take the listening sockets over from the `furrow
    /// proxy` serving this Unix socket (it then drains and exits), then serve it for the next
    /// upgrade. See docs/operations.md.
    #[arg(long)]
    pub upgrade_socket: Option<PathBuf>,
    /// On SIGTERM, first turn `/readyz` to 503 and keep serving (and accepting) for this long, so
    /// that load balancers and Kubernetes endpoints stop sending new connections before the listeners
    /// close; then drain as usual. 0 (the default): drain at once.
    #[arg(long, default_value_t = 0)]
    pub drain_delay_ms: u64,
}

/// Runs until SIGINT/SIGTERM (or until a newer process took the sockets over and this one drained).
pub fn run(args: ProxyArgs) -> ExitCode {
    let mut inherited = match args
        .upgrade_socket
        .as_deref()
        .map(crate::upgrade::take_over)
    {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(i))) => Some(i),
        Some(Err(e)) => {
            eprintln!("furrow proxy: upgrade hand-over failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = match (&args.config, &args.config_source) {
        (Some(path), _) => match router::config::load(path) {
            Ok(c) => start_with(
                c,
                ConfigSource::File(path.clone()),
                args.executors,
                inherited.as_mut(),
            ),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        (None, Some(url)) => start_from_center(url, args.executors),
        (None, None) => Err(io::Error::other(
            "give --config FILE or --config-source URL",
        )),
    };
    let started = started.and_then(|r| {
        r.control
            .drain_delay_ms
            .store(args.drain_delay_ms, std::sync::atomic::Ordering::Relaxed);
        if let Some(i) = inherited {
            let (pid, took) = i.finish()?;
            tracing::info!(
                old_pid = %pid,
                handover_ms = took.as_secs_f64() * 1000.0,
                "upgrade: took the sockets over; the old process drains"
            );
        }
        if let Some(path) = &args.upgrade_socket
            && let Err(e) = crate::upgrade::serve(path.clone(), r.control.clone())
        {
            // Not fatal: the listeners serve (and after a hand-over the old process drains
            // already); only the next upgrade needs the socket.
            tracing::error!(path = %path.display(), error = %e, "cannot serve the upgrade socket; the next upgrade needs a restart");
        }
        Ok(r)
    });
    match started {
        Ok(r) => r.wait(),
        Err(e) => {
            eprintln!("furrow proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts with the config published in a configuration-center namespace and follows its releases.
fn start_from_center(url: &str, executors: Option<usize>) -> io::Result<Running> {
    let source =
        control::client::ConfigSource::parse(url).map_err(|e| io::Error::other(e.to_string()))?;
    let key = source.key.clone();
    let instance = source.options.instance.clone();
    let control_slot: Arc<Mutex<Option<Arc<Control>>>> = Arc::default();
    let initial: Arc<Mutex<Option<(Config, String)>>> = Arc::default();
    let (slot, first) = (control_slot.clone(), initial.clone());
    let me = instance.clone();
    let listener: control::client::Listener = Box::new(move |snap| {
        let (config, origin) = config_from_center(snap, &key, &me)?;
        let control = slot.lock().map_err(|_| "poisoned".to_string())?.clone();
        match control {
            Some(c) => c.apply(config, origin).map(|_| ()),
            None => {
                *first.lock().map_err(|_| "poisoned".to_string())? = Some((config, origin));
                Ok(())
            }
        }
    });
    // The proxy's error metrics are the health signal of rolling publishes: the sums of every listener's
    // request and error counters, read by the client every `health_interval`.
    let mut options = source.options;
    let snapshot = options.snapshot.clone();
    let api = Arc::new(control::client::ApiClient::new(
        &options.server,
        options.token.as_deref(),
    ));
    let ns_path = format!(
        "/v1/apps/{}/envs/{}/clusters/{}/namespaces/{}",
        control::client::encode(&options.app),
        control::client::encode(&options.env),
        control::client::encode(&options.cluster),
        control::client::encode(&options.namespace)
    );
    let stats_slot = control_slot.clone();
    options.health = Some(control::client::HealthProbe(Arc::new(move || {
        let control = stats_slot.lock().ok().and_then(|g| g.clone());
        control.map_or((0, 0), |c| {
            c.shared
                .stats
                .totals()
                .iter()
                .fold((0, 0), |(r, e), t| (r + t.requests, e + t.errors))
        })
    })));
    // Latency per listener since the previous window: differences of the listeners' histograms, busiest first.
    let latency_slot = control_slot.clone();
    let previous: Mutex<Vec<(String, runtime::LatencyHistogram)>> = Mutex::default();
    options.latency = Some(control::client::LatencyProbe(Arc::new(move || {
        let Some(control) = latency_slot.lock().ok().and_then(|g| g.clone()) else {
            return Vec::new();
        };
        let Ok(mut prev) = previous.lock() else {
            return Vec::new();
        };
        let totals = control.shared.stats.totals();
        let mut out: Vec<control::model::ListenerLatency> = totals
            .iter()
            .filter_map(|t| {
                let w = match prev.iter().find(|(n, _)| *n == t.name) {
                    Some((_, before)) => t.latency.since(before),
                    None => t.latency.clone(),
                };
                (w.count() > 0).then(|| control::model::ListenerLatency {
                    listener: t.name.clone(),
                    count: w.count(),
                    p50_us: w.quantile_us(0.5),
                    p99_us: w.quantile_us(0.99),
                    p999_us: w.quantile_us(0.999),
                })
            })
            .collect();
        *prev = totals.into_iter().map(|t| (t.name, t.latency)).collect();
        out.sort_by_key(|l| std::cmp::Reverse(l.count));
        out
    })));
    let client = control::client::ConfigClient::start(options, Some(listener))
        .map_err(|e| io::Error::other(format!("config source {url}: {e}")))?;
    let (config, origin) = initial
        .lock()
        .ok()
        .and_then(|mut g| g.take())
        .ok_or_else(|| io::Error::other("the configuration center gave no config"))?;
    tracing::info!(%origin, "config from the configuration center");
    let running = start(
        config,
        ConfigSource::Center {
            client: Arc::new(client),
            key: source.key,
            instance,
            origin,
            api,
            ns_path,
            snapshot,
        },
        executors,
    )?;
    if let Ok(mut g) = control_slot.lock() {
        *g = Some(running.control.clone());
    }
    Ok(running)
}

/// Validates the TOML document item `key` of a namespace snapshot exactly as a file would be, after
/// applying its `KEY.PATH` setting items evaluated for this instance (`control::settings`: rule tables see
/// the instance id, ip, host, furrow version and labels).
fn config_from_center(
    snap: &control::client::ConfigSnapshot,
    key: &str,
    instance: &control::model::Instance,
) -> Result<(Config, String), String> {
    let mut origin = format!(
        "config-center {}/{}/{}/{} version {} releases {:?}{}",
        snap.app,
        snap.env,
        snap.cluster,
        snap.namespace,
        snap.version,
        snap.releases,
        if snap.from_snapshot_file {
            " (from the local snapshot)"
        } else {
            ""
        }
    );
    let ctx = control::settings::instance_context(
        snap,
        instance,
        &control::settings::host_name(),
        env!("CARGO_PKG_VERSION"),
    );
    let (text, applied) = control::settings::effective_document(snap, key, &ctx)
        .map_err(|e| format!("{origin}: {e}"))?;
    if !applied.is_empty() {
        origin.push_str(&format!(" settings [{}]", applied.join(", ")));
    }
    let name = format!(
        "{}/{}/{}/{}#{key}",
        snap.app, snap.env, snap.cluster, snap.namespace
    );
    let config = router::config::parse(&name, &text).map_err(|e| e.to_string())?;
    Ok((config, origin))
}

/// Where the running config came from, so that a reload knows what to re-read.
#[derive(Clone)]
pub enum ConfigSource {
    /// A file, re-read on reload.
    File(PathBuf),
    /// A configuration-center namespace, followed by its client; reload re-applies the client's latest.
    Center {
        /// The running client (it pushes every release through `Control::apply`).
        client: Arc<control::client::ConfigClient>,
        /// The document item holding the TOML.
        key: String,
        /// This instance (its context evaluates the rule settings).
        instance: control::model::Instance,
        /// Where the first config came from.
        origin: String,
        /// The center's API with the proxy's token (`SLOTS MIGRATE` publishes the slot table through it).
        api: Arc<control::client::ApiClient>,
        /// `/v1/apps/APP/envs/ENV/clusters/CLUSTER/namespaces/NS`: the namespace the proxy follows.
        ns_path: String,
        /// The local snapshot file (`snapshot=PATH`), if any: `RESHARD` keeps its progress next to it.
        snapshot: Option<PathBuf>,
    },
}

impl ConfigSource {
    fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Center { origin, .. } => origin.clone(),
        }
    }
}

/// The identity of the listener set: a reload may change everything else, but adding, removing or
/// moving listeners needs a restart (sockets are bound once, before the executors start).
fn listener_layout(c: &Config, executors: usize) -> Vec<(String, ListenerKind, SocketAddr, usize)> {
    c.listeners
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                l.kind,
                l.address,
                l.executors.unwrap_or(executors).min(executors),
            )
        })
        .collect()
}

/// Process-level state used by the admin port and signal handlers.
pub struct Control {
    /// What executors share.
    pub shared: Shared,
    /// Where the config comes from.
    pub source: ConfigSource,
    /// Process start.
    pub started: Instant,
    /// Executor count.
    pub executors: usize,
    /// Actually bound listener addresses (ports resolved when the config said port 0).
    pub bound: Vec<(String, SocketAddr)>,
    layout: Vec<(String, ListenerKind, SocketAddr, usize)>,
    shutdown_tx: watch::Sender<bool>,
    /// Duplicates of every listening socket (tagged for `crate::upgrade`), passed to a newer process
    /// on an upgrade; emptied when shutdown starts so that a draining process holds no socket open.
    pub(crate) handover: Mutex<Vec<crate::upgrade::Offer>>,
    /// Backends from registry services (`[registry]` in the config), when the config names any.
    pub registry: Option<Arc<crate::registry::RegistryBackends>>,
    /// Serialises publishes, so that a reload and a registry change never publish out of order.
    publish_lock: Mutex<()>,
    /// `--drain-delay-ms`: how long SIGTERM keeps serving while `/readyz` says draining.
    pub drain_delay_ms: std::sync::atomic::AtomicU64,
    /// Set by SIGTERM when a drain delay runs: `/readyz` answers 503 while the listeners still accept.
    drain_announced: std::sync::atomic::AtomicBool,
}

impl Control {
    /// The admin port's password in the current config (the admin port's AUTH, the HTTP API's
    /// bearer, and what this process sends to its reshard peers).
    pub fn admin_password(&self) -> Option<String> {
        self.shared
            .snapshots
            .current()
            .config
            .proxy
            .admin_password
            .clone()
    }

    /// Re-reads and validates the config and publishes it. On any problem the running config stays.
    pub fn reload(&self) -> Result<u64, String> {
        let (config, origin) = match &self.source {
            ConfigSource::File(path) => (
                router::config::load(path).map_err(|e| e.to_string())?,
                path.display().to_string(),
            ),
            ConfigSource::Center {
                client,
                key,
                instance,
                ..
            } => config_from_center(&client.current(), key, instance)?,
        };
        self.apply(config, origin)
    }

    /// Publishes an already validated config (e.g. from the config center) if its listeners match,
    /// with its registry services resolved to their current instances.
    pub fn apply(&self, config: Config, origin: String) -> Result<u64, String> {
        let _g = self.publish_lock.lock().map_err(|_| "poisoned")?;
        let config = match &self.registry {
            Some(r) => r.resolve(config)?,
            None if config.proxy.registry.is_some() => {
                return Err(
                    "adding [registry] needs a restart; the running config is unchanged".into(),
                );
            }
            None => config,
        };
        self.publish(config, origin)
    }

    /// Re-resolves the running base config after a registry service changed, and publishes it.
    fn registry_changed(&self) {
        let Some(r) = &self.registry else { return };
        let Ok(_g) = self.publish_lock.lock() else {
            return;
        };
        match r.resolve_latest() {
            Ok(Some((config, why))) => {
                let origin = format!("{} ({why})", self.shared.snapshots.current().origin);
                let origin = match origin.split_once(" (registry ") {
                    Some((head, _)) => format!("{head} ({why})"),
                    None => origin,
                };
                if let Err(e) = self.publish(config, origin) {
                    tracing::error!("registry change not applied: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!("registry change refused, the running config stays: {e}"),
        }
    }

    /// Publishes a resolved config if its listeners match.
    fn publish(&self, config: Config, origin: String) -> Result<u64, String> {
        let layout = listener_layout(&config, self.executors);
        if layout != self.layout {
            return Err(
                "listener changes (added, removed, renamed, kind, address or executors) need a restart; \
                 the running config is unchanged"
                    .to_string(),
            );
        }
        self.shared.backends.sync(&config);
        crate::reshard::follow_phases(self, &config);
        let generation = self.shared.snapshots.publish(config, origin);
        tracing::info!(generation, "config reloaded");
        Ok(generation)
    }

    /// Asks every executor to stop accepting and finish.
    pub fn shutdown(&self) {
        if let Some(r) = &self.registry {
            r.deregister();
        }
        self.shutdown_tx.send_replace(true);
        if let Ok(mut h) = self.handover.lock() {
            h.clear();
        }
    }

    /// Whether shutdown was requested.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }

    /// Whether the process is leaving: shutdown requested, or announced by SIGTERM during a drain delay.
    pub fn draining(&self) -> bool {
        self.shutting_down()
            || self
                .drain_announced
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// SIGTERM: with a drain delay, announce the drain (`/readyz` 503) now and shut down after the delay;
    /// without one (or on a second SIGTERM), shut down now.
    fn terminate(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let delay = self.drain_delay_ms.load(Ordering::Relaxed);
        if delay == 0 || self.drain_announced.swap(true, Ordering::Relaxed) {
            tracing::info!("SIGTERM: shutting down");
            self.shutdown();
            return;
        }
        tracing::info!(
            drain_delay_ms = delay,
            "SIGTERM: not ready from now on; shutting down after the drain delay"
        );
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            tracing::info!("drain delay over: shutting down");
            me.shutdown();
        });
    }
}

/// A started proxy process.
pub struct Running {
    /// Shared control state.
    pub control: Arc<Control>,
    /// The admin port's address, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The metrics address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    executors: Executors,
    side: std::thread::JoinHandle<()>,
}

type CoreListeners = Vec<(String, ListenerKind, std::net::TcpListener)>;
/// One listener's socket and counters for one executor.
type CoreWork = (
    String,
    ListenerKind,
    std::net::TcpListener,
    Arc<runtime::ListenerStats>,
);

/// Binds everything and starts the executors and the admin thread.
pub fn start(
    config: Config,
    source: ConfigSource,
    executors: Option<usize>,
) -> io::Result<Running> {
    start_with(config, source, executors, None)
}

/// [`start`] with the sockets a previous process handed over (zero-downtime upgrade): listeners,
/// admin and metrics ports use them where name and address match, and bind fresh sockets otherwise.
pub fn start_with(
    config: Config,
    source: ConfigSource,
    executors: Option<usize>,
    mut inherited: Option<&mut crate::upgrade::Inherited>,
) -> io::Result<Running> {
    let (registry, config) = if config.proxy.registry.is_some() {
        let (r, c) = crate::registry::RegistryBackends::start(config).map_err(io::Error::other)?;
        (Some(r), c)
    } else {
        (None, config)
    };
    let cores = executors
        .or(config.proxy.executors)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let layout = listener_layout(&config, cores);

    // Bind every socket before any executor starts, so that a taken port fails the start-up loudly.
    let mut per_core: Vec<CoreListeners> = (0..cores).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let mut handover = Vec::new();
    for (name, kind, addr, n) in &layout {
        let tag = crate::upgrade::listener_tag(name, *addr);
        let mut passed: Vec<std::net::TcpListener> = inherited
            .as_deref_mut()
            .map(|i| i.take(&tag))
            .unwrap_or_default()
            .into_iter()
            .map(std::net::TcpListener::from)
            .collect();
        if passed.is_empty() {
            runtime::listener::probe_exclusive(*addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener {name}: cannot bind {addr}: {e}"),
                )
            })?;
        }
        let mut sockets = Vec::new();
        let mut local = *addr;
        for _ in 0..*n {
            let l = match passed.pop() {
                Some(l) => l,
                None => runtime::bind_reuseport(local, 1024).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("listener {name}: cannot bind {local}: {e}"),
                    )
                })?,
            };
            local = l.local_addr()?; // port 0 in the config: every core shares the port the first got
            sockets.push(l);
        }
        if !passed.is_empty() {
            // The old process ran more executors: their sockets hold queued connections, so they
            // are served too (two accept loops on some executors) rather than closed.
            tracing::warn!(listener = %name, extra = passed.len(), "more inherited sockets than executors; keeping them all");
            sockets.append(&mut passed);
        }
        for (i, l) in sockets.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            handover.push((tag.clone(), l.try_clone()?.into()));
            per_core[i % (*n).max(1)].push((name.clone(), *kind, l));
        }
        bound.push((name.clone(), local));
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Shared {
        logins: Default::default(),
        registries: Default::default(),
        backends: Arc::new(BackendRegistry::new(&config)),
        snapshots: SnapshotHub::new(config, source.describe()),
        stats: Arc::new(StatsRegistry::default()),
        shutdown: shutdown_rx,
    };
    let current = shared.snapshots.current();
    let admin_addr = current.config.proxy.admin;
    let metrics_addr = current.config.proxy.metrics;

    // Register the counters now, so INFO lists every listener from the first moment.
    let mut work: Vec<Vec<CoreWork>> = Vec::new();
    for core_listeners in per_core {
        let mut v = Vec::new();
        for (name, kind, l) in core_listeners {
            let addr = l.local_addr()?.to_string();
            let stats = shared.stats.register(&name, kind.as_str(), &addr);
            v.push((name, kind, l, stats));
        }
        work.push(v);
    }
    let work = Arc::new(Mutex::new(work.into_iter().map(Some).collect::<Vec<_>>()));

    let control = Arc::new(Control {
        shared: shared.clone(),
        source,
        started: Instant::now(),
        executors: cores,
        bound,
        layout,
        shutdown_tx,
        handover: Mutex::new(Vec::new()),
        registry,
        publish_lock: Mutex::new(()),
        drain_delay_ms: Default::default(),
        drain_announced: Default::default(),
    });
    // A reshard that a restart interrupted shows in RESHARD STATUS and can be resumed.
    crate::reshard::restore(&control);
    if let Some(r) = &control.registry {
        r.register_listeners(&current.config);
        r.report_calls(control.shared.backends.clone());
        let weak = Arc::downgrade(&control);
        r.follow(Box::new(move || {
            if let Some(c) = weak.upgrade() {
                c.registry_changed();
            }
        }));
    }

    // The admin port and metrics are bound here too, so that a taken port fails start-up.
    let mut side_listener = |what: &str, addr: Option<SocketAddr>| -> io::Result<_> {
        let Some(a) = addr else { return Ok(None) };
        let tag = format!("{what} {a}");
        let passed = inherited.as_deref_mut().and_then(|i| i.take(&tag).pop());
        let l = match passed {
            Some(fd) => std::net::TcpListener::from(fd),
            None => std::net::TcpListener::bind(a).map_err(|e| {
                io::Error::new(e.kind(), format!("{what} port: cannot bind {a}: {e}"))
            })?,
        };
        handover.push((tag, l.try_clone()?.into()));
        Ok(Some(l))
    };
    let admin_listener = side_listener("admin", admin_addr)?;
    let metrics_listener = side_listener("metrics", metrics_addr)?;
    if let Ok(mut h) = control.handover.lock() {
        *h = handover;
    }
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let exec_shared = shared.clone();
    let executors = Executors::start(cores, "furrow", move |core| {
        let mine = work
            .lock()
            .map(|mut w| w.get_mut(core).and_then(Option::take))
            .unwrap_or_default()
            .unwrap_or_default();
        let shared = exec_shared.clone();
        async move {
            let mut tasks = Vec::new();
            // One MySQL context per executor: its listeners share pools and caches.
            let mysql_core = proxy_mysql::CoreCtx::new(&shared);
            for (name, kind, std_listener, stats) in mine {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(listener = %name, core, error = %e, "cannot register listener");
                        continue;
                    }
                };
                let ctx = ListenerCtx {
                    name,
                    core,
                    listener,
                    stats,
                    shared: shared.clone(),
                };
                tasks.push(match kind {
                    ListenerKind::Redis => tokio::task::spawn_local(proxy_redis::serve(ctx)),
                    ListenerKind::Mysql => {
                        tokio::task::spawn_local(proxy_mysql::serve_on(ctx, mysql_core.clone()))
                    }
                });
            }
            for t in tasks {
                if let Err(e) = t.await {
                    tracing::error!(core, error = %e, "listener task failed");
                }
            }
        }
    })?;

    let side_control = control.clone();
    let side = std::thread::Builder::new()
        .name("furrow-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the admin runtime");
                    side_control.shutdown();
                    return;
                }
            };
            rt.block_on(side_tasks(side_control, admin_listener, metrics_listener));
        })?;

    for (name, addr) in &control.bound {
        tracing::info!(listener = %name, %addr, "listening");
    }
    if let Some(a) = admin_addr {
        tracing::info!(%a, "admin port");
    }
    Ok(Running {
        control,
        admin_addr,
        metrics_addr,
        executors,
        side,
    })
}

/// Registers a bound std listener with the current tokio runtime (admin thread), logging why not.
pub fn into_tokio(listener: std::net::TcpListener, what: &str) -> Option<tokio::net::TcpListener> {
    match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(error = %e, "{what} unusable");
            None
        }
    }
}

async fn side_tasks(
    control: Arc<Control>,
    admin: Option<std::net::TcpListener>,
    metrics: Option<std::net::TcpListener>,
) {
    // Signal handlers first: once the admin port answers, SIGHUP and SIGTERM are handled.
    let signals = Signals::install();
    if let Some(l) = admin {
        tokio::spawn(crate::admin::serve(l, control.clone()));
    }
    if let Some(l) = metrics {
        tokio::spawn(crate::metrics::serve(l, control.clone()));
    }
    match signals {
        Ok(s) => s.run(control).await,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop the process with the admin SHUTDOWN command");
            let mut shutdown = control.shared.shutdown.clone();
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn run(mut self, control: Arc<Control>) {
        let mut shutdown = control.shared.shutdown.clone();
        loop {
            tokio::select! {
                _ = self.hup.recv() => match control.reload() {
                    Ok(g) => tracing::info!(generation = g, "SIGHUP: config reloaded"),
                    Err(e) => tracing::error!("SIGHUP: reload rejected, the running config stays:\n{e}"),
                },
                _ = self.usr1.recv() => match crate::logging::reopen() {
                    Ok(true) => tracing::info!("SIGUSR1: log file reopened"),
                    Ok(false) => tracing::info!("SIGUSR1: logging to stderr, nothing to reopen"),
                    Err(e) => tracing::error!(error = %e, "SIGUSR1: cannot reopen the log file; still writing to the old one"),
                },
                _ = self.int.recv() => { tracing::info!("SIGINT: shutting down"); control.shutdown(); }
                _ = self.term.recv() => control.terminate(),
                _ = shutdown.changed() => {}
            }
            if control.shutting_down() {
                return;
            }
        }
    }
}

impl Running {
    /// Waits until the executors end (after a shutdown request).
    pub fn wait(self) -> ExitCode {
        let panicked = self.executors.join();
        let _ = self.side.join();
        if panicked == 0 {
            ExitCode::SUCCESS
        } else {
            tracing::error!(panicked, "executors ended by panic");
            ExitCode::FAILURE
        }
    }
}
