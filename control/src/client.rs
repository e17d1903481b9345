//! The client library used by the proxies and other services: fetch a namespace, watch it with long-polling
//! on a thread of its own, keep a local snapshot file, fall back to it when the service is unreachable, report
//! the applied release, and evaluate dynamic values locally.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::document::DocFormat;
use crate::error::{ControlError, ErrorCode};
use crate::http::{HttpError, request};
use crate::model::{Instance, Item, Value};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service could not be reached or answered garbage (retryable).
    #[error("control service unreachable: {0}")]
    Unreachable(#[from] HttpError),
    /// The service answered with an error.
    #[error("HTTP {status}: {error}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error from the body.
        error: ControlError,
    },
    /// The snapshot file could not be read or written.
    #[error("snapshot {path}: {message}")]
    Snapshot {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// No configuration: the service is unreachable and there is no snapshot.
    #[error("no configuration: {0}")]
    NoConfig(String),
}

impl ClientError {
    /// Whether the service itself failed (unreachable or 5xx), as opposed to rejecting the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClientError::Unreachable(_))
            || matches!(self, ClientError::Api { status, .. } if *status >= 500)
    }
}

/// A thin asynchronous client of the HTTP API.
///
/// `server` may list several control nodes of one cluster, comma-separated
/// (`http://a:7070,http://b:7070`, or `http://a:7070,b:7070`). Calls go to the node that last answered.
/// A call moves on to the next node, within the same call, when nothing was applied: the connection was
/// refused, or the node answered 503 `draining` (it is shutting down, see `server::serve`). Any other
/// transport failure (a timeout, a reset mid-request) is returned as is — the request may have been
/// applied — and the next call starts at the next node.
#[derive(Clone, Debug)]
pub struct ApiClient {
    /// `http://HOST:PORT`, or several, comma-separated.
    pub server: String,
    /// The nodes, each `http://HOST:PORT`.
    servers: Arc<[String]>,
    /// Index into `servers` of the node calls go to first.
    current: Arc<AtomicUsize>,
    /// The bearer token.
    pub token: Option<String>,
    /// The per-request timeout.
    pub timeout: Duration,
}

/// The nodes of a comma-separated server list, each as `http://HOST:PORT` (the scheme may be given once).
fn split_servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.trim_end_matches('/').to_string()
            } else {
                format!("http://{}", s.trim_end_matches('/'))
            }
        })
        .collect()
}

/// Whether a 503 body says the node is draining (`{"error":{"code":"draining",..}}`).
fn is_draining(body: &[u8]) -> bool {
    serde_json::from_slice::<ErrorBody>(body).is_ok_and(|b| b.error.code == ErrorCode::Draining)
}

/// Percent-encodes a query or path component.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ApiClient {
    /// A client of `server` (one node, or several comma-separated) with `token`.
    pub fn new(server: &str, token: Option<&str>) -> Self {
        ApiClient {
            server: server.into(),
            servers: split_servers(server).into(),
            current: Arc::new(AtomicUsize::new(0)),
            token: token.map(Into::into),
            timeout: Duration::from_secs(10),
        }
    }

    /// Calls the API; returns the JSON body (null for empty bodies, e.g. 204 and 304) and the status.
    pub async fn call_status(
        &self,
        method: &str,
        path: &str,
        body: Option<&Json>,
        timeout: Duration,
    ) -> Result<(u16, Json), ClientError> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let resp = self.send(method, path, bytes.as_deref(), timeout).await?;
        let json: Json = if resp.body.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&resp.body)
                .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&resp.body).into_owned()))
        };
        if resp.status >= 400 {
            let error = serde_json::from_value::<ErrorBody>(json.clone())
                .map(|b| b.error)
                .unwrap_or_else(|_| ControlError {
                    code: ErrorCode::Internal,
                    message: json.to_string(),
                    field: None,
                });
            return Err(ClientError::Api {
                status: resp.status,
                error,
            });
        }
        Ok((resp.status, json))
    }

    /// The node calls go to first now.
    pub fn current_server(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.servers.len().max(1);
        self.servers
            .get(i)
            .map_or(self.server.as_str(), |s| s.as_str())
    }

    /// Sends one request, moving on to the next node while a node refuses the connection or is draining.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<crate::http::HttpResponse, HttpError> {
        let n = self.servers.len().max(1);
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            let server = self
                .servers
                .get(at)
                .map_or(self.server.as_str(), |s| s.as_str());
            let r = request(server, method, path, self.token.as_deref(), body, timeout).await;
            let next_node = match &r {
                Err(HttpError::Connect(_)) => true,
                Ok(resp) => resp.status == 503 && is_draining(&resp.body),
                Err(_) => false,
            };
            if next_node && i + 1 < n {
                tracing::debug!(server, "control node unavailable; trying the next one");
                last = Some(r);
                continue;
            }
            if next_node || r.is_err() {
                // The next call starts at the next node (this one failed, or every one did).
                let _ = self.current.compare_exchange(
                    start,
                    (at + 1) % n,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            } else if at != start {
                let _ =
                    self.current
                        .compare_exchange(start, at, Ordering::Relaxed, Ordering::Relaxed);
            }
            return r;
        }
        last.unwrap_or_else(|| Err(HttpError::BadUrl(self.server.clone())))
    }

    /// Calls the API with the default timeout.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Json, ClientError> {
        self.call_status(method, path, body, self.timeout)
            .await
            .map(|(_, j)| j)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ControlError,
}

/// What a client sees of one namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    /// The application.
    pub app: String,
    /// The environment.
    pub env: String,
    /// The cluster.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The config version.
    pub version: u64,
    /// The applied release ids (one per layer).
    pub releases: Vec<u64>,
    /// The items.
    pub items: BTreeMap<String, Item>,
    /// True when loaded from the local snapshot file rather than the service.
    #[serde(skip)]
    pub from_snapshot_file: bool,
    /// Read counters of this snapshot's keys (usage tracking), set by the client.
    #[serde(skip)]
    pub usage: UsageCounters,
}

/// Per-key read counters of one snapshot: one relaxed atomic add per read, no lock, no allocation (cheaper
/// than sampling, and a key read once is never missed). The client sums and resets them every
/// `usage_interval` and sends the totals to the center (`POST /v1/usage`).
#[derive(Clone, Debug, Default)]
pub struct UsageCounters(Option<Arc<HashMap<String, AtomicU64>>>);

impl PartialEq for UsageCounters {
    fn eq(&self, _: &Self) -> bool {
        true // counters are not part of a configuration's identity
    }
}

impl UsageCounters {
    fn for_keys<'a>(keys: impl Iterator<Item = &'a String>) -> Self {
        UsageCounters(Some(Arc::new(
            keys.map(|k| (k.clone(), AtomicU64::new(0))).collect(),
        )))
    }

    fn hit(&self, key: &str) {
        if let Some(c) = self.0.as_ref().and_then(|m| m.get(key)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves the counts into `into` (and resets them).
    fn drain(&self, into: &mut BTreeMap<String, u64>) {
        for (k, c) in self.0.iter().flat_map(|m| m.iter()) {
            let n = c.swap(0, Ordering::Relaxed);
            if n > 0 {
                *into.entry(k.clone()).or_default() += n;
            }
        }
    }
}

impl ConfigSnapshot {
    /// The value of `key` (counted for usage tracking).
    pub fn get(&self, key: &str) -> Option<&Value> {
        let v = self.items.get(key).map(|i| &i.value);
        if v.is_some() {
            self.usage.hit(key);
        }
        v
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer value.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// A document value: its format and text.
    pub fn document(&self, key: &str) -> Option<(DocFormat, &str)> {
        match self.get(key)? {
            Value::Document { format, text } => Some((*format, text)),
            _ => None,
        }
    }

    /// The value of `key` for a caller context: a rule table is evaluated, any other value is returned as JSON.
    pub fn evaluate(&self, key: &str, ctx: &BTreeMap<String, String>) -> Option<Json> {
        match self.get(key)? {
            Value::Rules(t) => Some(t.evaluate(ctx).clone()),
            other => other.to_json().ok(),
        }
    }

    fn same_as(&self, other: &ConfigSnapshot) -> bool {
        self.releases == other.releases && self.items == other.items
    }
}

/// A callback run on every new configuration; returning `Err` rejects it (the client keeps the previous one
/// and does not report it as applied).
pub type Listener = Box<dyn Fn(&ConfigSnapshot) -> Result<(), String> + Send + Sync>;

/// The consumer's own cumulative counters `(requests, errors)` (for a proxy: the sums of its listeners'
/// counters). With one, the client sends the center a health window every `health_interval`: the
/// differences since the previous reading, attached to its last report, so that a rolling publish with an
/// error-rate gate stops by itself when the instances that got the release start failing.
#[derive(Clone)]
pub struct HealthProbe(pub Arc<dyn Fn() -> (u64, u64) + Send + Sync>);

impl std::fmt::Debug for HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthProbe")
    }
}

/// Request latency per listener since the probe's previous call (for a proxy: the differences of its
/// listeners' latency histograms), read when a health window is sent and sent with it, so that the
/// console's history keeps latency per window next to requests and errors.
#[derive(Clone)]
pub struct LatencyProbe(pub Arc<dyn Fn() -> Vec<crate::model::ListenerLatency> + Send + Sync>);

impl std::fmt::Debug for LatencyProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencyProbe")
    }
}

/// How to reach and watch one namespace.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `http://HOST:PORT`.
    pub server: String,
    /// The API token.
    pub token: Option<String>,
    /// The application.
    pub app: String,
    /// The environment.
    pub env: String,
    /// The cluster (`default` when unsure).
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// This instance (id, IP, labels), for gray releases and reports.
    pub instance: Instance,
    /// Where to keep the local snapshot (none: no snapshot).
    pub snapshot: Option<PathBuf>,
    /// How long one long-poll waits on the service.
    pub poll_timeout: Duration,
    /// Timeout of the initial fetch and of reports.
    pub request_timeout: Duration,
    /// How often the keys read are sent to the center (None: no usage tracking).
    pub usage_interval: Option<Duration>,
    /// The consumer's error counters (None: no health windows are sent).
    pub health: Option<HealthProbe>,
    /// How often a health window is sent (default 10 s).
    pub health_interval: Duration,
    /// The consumer's latency per listener, sent with each health window (None: not sent).
    pub latency: Option<LatencyProbe>,
}

impl ClientOptions {
    /// Options with defaults: cluster `default`, 30 s polls, 3 s requests, no snapshot.
    pub fn new(server: &str, app: &str, env: &str, namespace: &str) -> Self {
        ClientOptions {
            server: server.into(),
            token: None,
            app: app.into(),
            env: env.into(),
            cluster: "default".into(),
            namespace: namespace.into(),
            instance: Instance::default(),
            snapshot: None,
            poll_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(3),
            usage_interval: Some(Duration::from_secs(60)),
            health: None,
            health_interval: Duration::from_secs(10),
            latency: None,
        }
    }

    fn instance_query(&self) -> String {
        let labels: Vec<String> = self
            .instance
            .labels
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        format!(
            "instance={}&ip={}&labels={}",
            encode(&self.instance.id),
            encode(&self.instance.ip),
            encode(&labels.join(","))
        )
    }
}

/// A config source as given on a command line (e.g. `furrow proxy --config-source`):
/// `http://HOST:PORT[,HOST:PORT..]/APP/ENV/CLUSTER/NAMESPACE[?key=KEY&token=TOKEN&snapshot=PATH&instance=ID&labels=k:v,..&health_ms=N]`
/// (several control nodes of one cluster: the client moves to the next while one is down or draining).
/// `key` (default `config`) names the document item the consumer reads; the token may also come from
/// `$FURROW_TOKEN`.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// Where and what to watch.
    pub options: ClientOptions,
    /// The item holding the document.
    pub key: String,
}

impl ConfigSource {
    /// Parses a source URL.
    pub fn parse(url: &str) -> Result<ConfigSource, ClientError> {
        let bad = |m: &str| ClientError::NoConfig(format!("config source {url:?}: {m}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http://"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let parts: Vec<&str> = path.split('/').collect();
        let [host, app, env, cluster, namespace] = parts[..] else {
            return Err(bad("expected http://HOST:PORT/APP/ENV/CLUSTER/NAMESPACE"));
        };
        if [host, app, env, cluster, namespace]
            .iter()
            .any(|p| p.is_empty())
        {
            return Err(bad("empty component"));
        }
        let mut options = ClientOptions::new(&format!("http://{host}"), app, env, namespace);
        options.cluster = cluster.into();
        options.token = std::env::var("FURROW_TOKEN").ok();
        let mut key = "config".to_string();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "key" => key = v.into(),
                "token" => options.token = Some(v.into()),
                "snapshot" => options.snapshot = Some(v.into()),
                "instance" => options.instance.id = v.into(),
                "ip" => options.instance.ip = v.into(),
                "health_ms" => {
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| bad("health_ms is a number of milliseconds"))?;
                    options.health_interval = Duration::from_millis(ms.max(100));
                }
                "labels" => {
                    for l in v.split(',').filter(|l| !l.is_empty()) {
                        let (lk, lv) =
                            l.split_once(':').ok_or_else(|| bad("labels are k:v,k:v"))?;
                        options.instance.labels.insert(lk.into(), lv.into());
                    }
                }
                other => return Err(bad(&format!("unknown parameter {other:?}"))),
            }
        }
        Ok(ConfigSource { options, key })
    }
}

/// Reads a snapshot file.
pub fn read_snapshot(path: &std::path::Path) -> Result<ConfigSnapshot, ClientError> {
    let err = |m: String| ClientError::Snapshot {
        path: path.display().to_string(),
        message: m,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut s: ConfigSnapshot = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
    s.from_snapshot_file = true;
    Ok(s)
}

/// Writes a snapshot file atomically (temporary file, fsync, rename); the registry client uses it too.
pub fn write_snapshot(
    path: &std::path::Path,
    snap: &impl serde::Serialize,
) -> Result<(), ClientError> {
    use std::io::Write;
    let err = |m: String| ClientError::Snapshot {
        path: path.display().to_string(),
        message: m,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let data = serde_json::to_vec_pretty(snap).map_err(|e| err(e.to_string()))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| err(e.to_string()))?;
    f.write_all(&data)
        .and_then(|_| f.sync_all())
        .map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

struct Shared {
    opts: ClientOptions,
    api: ApiClient,
    listener: Option<Listener>,
    tx: tokio::sync::watch::Sender<Arc<ConfigSnapshot>>,
    /// Counters of the snapshots handed out since the last usage flush (the current one stays).
    usage: std::sync::Mutex<Vec<UsageCounters>>,
    /// The body of the last report sent (health windows are sent on it, so that a rejection stays one).
    last_report: std::sync::Mutex<Option<Json>>,
}

impl Shared {
    /// Sums and resets the read counters; keeps only the current snapshot's.
    fn take_usage(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let Ok(mut list) = self.usage.lock() else {
            return out;
        };
        for c in list.iter() {
            c.drain(&mut out);
        }
        let keep = list.pop();
        list.clear();
        list.extend(keep);
        out
    }

    async fn flush_usage(&self) {
        let reads = self.take_usage();
        if reads.is_empty() {
            return;
        }
        let o = &self.opts;
        let body = serde_json::json!({
            "app": o.app, "env": o.env, "cluster": o.cluster, "namespace": o.namespace,
            "id": o.instance.id, "reads": reads,
        });
        if let Err(e) = self
            .api
            .call_status("POST", "/v1/usage", Some(&body), o.request_timeout)
            .await
        {
            tracing::debug!(error = %e, "usage report failed");
        }
    }

    fn config_path(&self) -> String {
        let o = &self.opts;
        format!(
            "/v1/configs/{}/{}/{}/{}?{}",
            encode(&o.app),
            encode(&o.env),
            encode(&o.cluster),
            encode(&o.namespace),
            o.instance_query()
        )
    }

    fn watch_path(&self, since: u64) -> String {
        let o = &self.opts;
        format!(
            "/v1/watch?app={}&env={}&cluster={}&namespace={}&since={since}&timeout={}&{}",
            encode(&o.app),
            encode(&o.env),
            encode(&o.cluster),
            encode(&o.namespace),
            o.poll_timeout.as_millis(),
            o.instance_query()
        )
    }

    async fn fetch(&self) -> Result<ConfigSnapshot, ClientError> {
        let j = self
            .api
            .call_status("GET", &self.config_path(), None, self.opts.request_timeout)
            .await?
            .1;
        serde_json::from_value(j)
            .map_err(|e| ClientError::NoConfig(format!("bad config body: {e}")))
    }

    /// Offers a new snapshot: listeners, snapshot file, channel, report. Returns whether it was accepted.
    async fn offer(&self, snap: ConfigSnapshot) -> bool {
        if self.tx.borrow().same_as(&snap) && !self.tx.borrow().from_snapshot_file {
            return true;
        }
        if let Some(l) = &self.listener
            && let Err(e) = l(&snap)
        {
            tracing::warn!(version = snap.version, error = %e, "configuration rejected; keeping the previous one");
            if !snap.from_snapshot_file {
                // The center shows this instance as rejected, with the reason.
                self.send_report(snap.version, snap.releases.clone(), Some(&e))
                    .await;
            }
            return false;
        }
        if let Some(path) = &self.opts.snapshot
            && let Err(e) = write_snapshot(path, &snap)
        {
            tracing::warn!(error = %e, "could not write the config snapshot");
        }
        let from_file = snap.from_snapshot_file;
        let (version, releases) = (snap.version, snap.releases.clone());
        let mut snap = snap;
        if self.opts.usage_interval.is_some() {
            snap.usage = UsageCounters::for_keys(snap.items.keys());
            if let Ok(mut list) = self.usage.lock() {
                list.push(snap.usage.clone());
            }
        }
        self.tx.send_replace(Arc::new(snap));
        if !from_file {
            self.report(version, releases).await;
        }
        true
    }

    async fn report(&self, version: u64, releases: Vec<u64>) {
        self.send_report(version, releases, None).await
    }

    async fn send_report(&self, version: u64, releases: Vec<u64>, rejected: Option<&str>) {
        let o = &self.opts;
        let mut body = serde_json::json!({
            "app": o.app, "env": o.env, "cluster": o.cluster, "namespace": o.namespace,
            "id": o.instance.id, "ip": o.instance.ip, "labels": o.instance.labels,
            "releases": releases, "version": version,
        });
        if let Some(reason) = rejected {
            body["status"] = "rejected".into();
            body["reason"] = reason.chars().take(1000).collect::<String>().into();
        }
        if let Ok(mut last) = self.last_report.lock() {
            *last = Some(body.clone());
        }
        self.post_report(&body).await;
    }

    async fn post_report(&self, body: &Json) {
        let o = &self.opts;
        if let Err(e) = self
            .api
            .call_status("POST", "/v1/reports", Some(body), o.request_timeout)
            .await
        {
            tracing::debug!(error = %e, "report failed");
        }
    }

    /// Every `health_interval`: reads the probe and sends the differences since the last reading with the
    /// last report (nothing before the first report; a window without traffic is extended rather than
    /// sent; a counter that went backwards restarts the window).
    async fn send_health(self: Arc<Self>, probe: HealthProbe) {
        let mut tick = tokio::time::interval(self.opts.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut prev = ((probe.0)(), tokio::time::Instant::now());
        loop {
            tick.tick().await;
            let now = ((probe.0)(), tokio::time::Instant::now());
            let ((req, err), (preq, perr)) = (now.0, prev.0);
            let (requests, errors) = (
                req.checked_sub(preq).unwrap_or(req),
                err.checked_sub(perr).unwrap_or(err),
            );
            if requests == 0 && errors == 0 {
                continue; // no traffic says nothing; the window goes on
            }
            let window = serde_json::json!({
                "requests": requests,
                "errors": errors,
                "window_ms": now.1.duration_since(prev.1).as_millis() as u64,
            });
            prev = now;
            let last = self.last_report.lock().ok().and_then(|g| g.clone());
            if let Some(mut body) = last {
                body["health"] = window;
                let latency = self.opts.latency.as_ref().map(|p| (p.0)());
                match latency {
                    Some(l) if !l.is_empty() => body["latency"] = serde_json::json!(l),
                    _ => {
                        if let Some(o) = body.as_object_mut() {
                            o.remove("latency");
                        }
                    }
                }
                self.post_report(&body).await;
            }
        }
    }

    async fn run(self: Arc<Self>, mut stop: tokio::sync::oneshot::Receiver<()>) {
        if let Some(probe) = self.opts.health.clone() {
            tokio::spawn(self.clone().send_health(probe));
        }
        if let Some(every) = self.opts.usage_interval {
            let me = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    me.flush_usage().await;
                }
            });
        }
        let mut since = self.tx.borrow().version;
        let mut need_fetch = self.tx.borrow().from_snapshot_file;
        let mut backoff = Duration::from_millis(100);
        loop {
            let step = async {
                if need_fetch {
                    let s = self.fetch().await?;
                    let (v, releases) = (s.version, s.releases.clone());
                    let unchanged =
                        self.tx.borrow().same_as(&s) && !self.tx.borrow().from_snapshot_file;
                    self.offer(s).await;
                    if unchanged {
                        // The service may have restarted and lost its in-memory reports: report again.
                        self.report(v, releases).await;
                    }
                    return Ok::<Option<u64>, ClientError>(Some(v));
                }
                let timeout = self.opts.poll_timeout + Duration::from_secs(5);
                let (status, j) = self
                    .api
                    .call_status("GET", &self.watch_path(since), None, timeout)
                    .await?;
                if status == 304 {
                    return Ok(None);
                }
                let s: ConfigSnapshot = serde_json::from_value(j)
                    .map_err(|e| ClientError::NoConfig(format!("bad config body: {e}")))?;
                let v = s.version;
                self.offer(s).await;
                Ok(Some(v))
            };
            let r = tokio::select! {
                r = step => r,
                _ = &mut stop => return,
            };
            match r {
                Ok(v) => {
                    need_fetch = false;
                    backoff = Duration::from_millis(100);
                    if let Some(v) = v {
                        since = v;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "config watch failed; serving the last known config");
                    need_fetch = true;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut stop => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// A running configuration client for one namespace.
pub struct ConfigClient {
    rx: tokio::sync::watch::Receiver<Arc<ConfigSnapshot>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConfigClient {
    /// Fetches the namespace (or, when the service is unreachable, loads the snapshot file), runs the listener
    /// on it, then watches for changes on a thread of its own. Fails when neither source has a configuration,
    /// when the service rejects the request (unknown namespace, bad token), or when the listener rejects the
    /// initial configuration.
    pub fn start(
        opts: ClientOptions,
        listener: Option<Listener>,
    ) -> Result<ConfigClient, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::NoConfig(format!("runtime: {e}")))?;
        let api = ApiClient::new(&opts.server, opts.token.as_deref());
        let empty = ConfigSnapshot {
            app: opts.app.clone(),
            env: opts.env.clone(),
            cluster: opts.cluster.clone(),
            namespace: opts.namespace.clone(),
            version: 0,
            releases: vec![],
            items: BTreeMap::new(),
            from_snapshot_file: false,
            usage: UsageCounters::default(),
        };
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(empty));
        let shared = Arc::new(Shared {
            opts,
            api,
            listener,
            tx,
            usage: std::sync::Mutex::new(Vec::new()),
            last_report: std::sync::Mutex::new(None),
        });
        let first = rt.block_on(shared.fetch());
        let initial = match first {
            Ok(s) => s,
            Err(e) if e.is_unavailable() => match &shared.opts.snapshot {
                Some(p) => {
                    read_snapshot(p).map_err(|se| ClientError::NoConfig(format!("{e}; {se}")))?
                }
                None => return Err(ClientError::NoConfig(e.to_string())),
            },
            Err(e) => return Err(e),
        };
        if !rt.block_on(shared.offer(initial)) {
            return Err(ClientError::NoConfig(
                "the listener rejected the initial configuration".into(),
            ));
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("furrow-config-client".into())
            .spawn(move || rt.block_on(s2.run(stop_rx)))
            .map_err(|e| ClientError::NoConfig(format!("thread: {e}")))?;
        Ok(ConfigClient {
            rx,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The configuration now in use.
    pub fn current(&self) -> Arc<ConfigSnapshot> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every accepted configuration.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<ConfigSnapshot>> {
        self.rx.clone()
    }

    /// Waits (blocking) until the configuration satisfies `pred` or `timeout` passes; returns the last one.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&ConfigSnapshot) -> bool,
    ) -> Option<Arc<ConfigSnapshot>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let cur = self.current();
            if pred(&cur) {
                return Some(cur);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops watching.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ConfigClient {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_node_lists() {
        assert_eq!(
            split_servers("http://a:1, b:2/,http://c:3/"),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        assert_eq!(split_servers("http://a:1"), ["http://a:1"]);
        let s = ConfigSource::parse("http://a:1,b:2/shop/PRO/east/routing").unwrap();
        let api = ApiClient::new(&s.options.server, None);
        assert_eq!(&*api.servers, ["http://a:1", "http://b:2"]);
        assert_eq!(api.current_server(), "http://a:1");
        assert!(is_draining(
            br#"{"error":{"code":"draining","message":"x"}}"#
        ));
        assert!(!is_draining(
            br#"{"error":{"code":"store_unavailable","message":"x"}}"#
        ));
    }

    #[test]
    fn parses_config_sources() {
        let s = ConfigSource::parse(
            "http://127.0.0.1:7070/shop/PRO/east/routing?key=rules&token=t&snapshot=/tmp/s.json&instance=p1&labels=zone:a,tier:x",
        )
        .unwrap();
        assert_eq!(s.key, "rules");
        let o = &s.options;
        assert_eq!(
            (o.server.as_str(), o.app.as_str(), o.env.as_str()),
            ("http://127.0.0.1:7070", "shop", "PRO")
        );
        assert_eq!(
            (o.cluster.as_str(), o.namespace.as_str()),
            ("east", "routing")
        );
        assert_eq!(o.token.as_deref(), Some("t"));
        assert_eq!(o.instance.id, "p1");
        assert_eq!(o.instance.labels.len(), 2);
        assert_eq!(
            ConfigSource::parse("http://h:1/a/b/c/d").unwrap().key,
            "config"
        );
        assert!(ConfigSource::parse("http://h:1/a/b/c").is_err());
        assert!(ConfigSource::parse("http://h:1/a/b/c/d?bogus=1").is_err());
        assert!(ConfigSource::parse("ftp://h/a/b/c/d").is_err());
    }

    #[test]
    fn snapshot_files_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let snap = ConfigSnapshot {
            app: "a".into(),
            env: "DEV".into(),
            cluster: "default".into(),
            namespace: "n".into(),
            version: 7,
            releases: vec![3],
            items: BTreeMap::new(),
            from_snapshot_file: false,
            usage: UsageCounters::default(),
        };
        write_snapshot(&path, &snap).unwrap();
        let back = read_snapshot(&path).unwrap();
        assert!(back.from_snapshot_file);
        assert_eq!((back.version, back.releases.clone()), (7, vec![3]));
        assert!(read_snapshot(&dir.path().join("missing")).is_err());
    }
}
