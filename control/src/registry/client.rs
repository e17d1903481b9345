//! The registry side of the client library: [`Registration`] registers an instance and keeps its lease alive
//! from a thread of its own; [`Discoverer`] keeps a local snapshot of a service's instances and rules, updated
//! by long-poll push, written to a snapshot file, and served from that file when the service is down.
//!
//! Both follow the configuration client's rules: the calling code never waits on the network after `start`,
//! and a control service that goes away leaves the last known state in place (retries back off from 100 ms to
//! 5 s).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::model::{Discovery, RegInstance};
use super::ops::InstanceInput;
use super::rules::version_matches;
use crate::client::{ApiClient, ClientError, encode, write_snapshot};

fn svc_path(env: &str, service: &str) -> String {
    format!("/v1/registry/{}/services/{}", encode(env), encode(service))
}

fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::NoConfig(format!("runtime: {e}")))
}

/// A background thread with a stop signal.
struct Worker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn spawn(
        name: &str,
        rt: tokio::runtime::Runtime,
        f: impl FnOnce(
            tokio::sync::oneshot::Receiver<()>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        + Send
        + 'static,
    ) -> Result<Worker, ClientError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || rt.block_on(f(rx)))
            .map_err(|e| ClientError::NoConfig(format!("thread: {e}")))?;
        Ok(Worker {
            stop: Some(tx),
            thread: Some(thread),
        })
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

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An instance registered with the registry, kept alive by heartbeats until stopped.
pub struct Registration {
    /// The instance as registered.
    pub instance: RegInstance,
    api: ApiClient,
    path: String,
    worker: Worker,
}

impl Registration {
    /// Registers `input` with `service` of `env` and beats every `interval` (default: a third of the
    /// service's TTL). A beat answered 404 (an operator removed the instance) registers it again; other
    /// failures are retried with backoff while the last registration stands.
    pub fn start(
        api: ApiClient,
        env: &str,
        service: &str,
        input: InstanceInput,
        interval: Option<Duration>,
    ) -> Result<Registration, ClientError> {
        let rt = runtime()?;
        let base = svc_path(env, service);
        let body =
            serde_json::to_value(&input).map_err(|e| ClientError::NoConfig(e.to_string()))?;
        let reg = rt.block_on(api.call("POST", &format!("{base}/instances"), Some(&body)))?;
        let instance: RegInstance =
            serde_json::from_value(reg).map_err(|e| ClientError::NoConfig(e.to_string()))?;
        let interval = match interval {
            Some(i) => i,
            None => {
                let svc = rt.block_on(api.call("GET", &base, None))?;
                Duration::from_millis(svc["service"]["ttl_ms"].as_u64().unwrap_or(15_000) / 3)
            }
        };
        let beat = format!("{base}/instances/{}/beat", encode(&instance.id));
        let (api2, base2) = (api.clone(), base.clone());
        let worker = Worker::spawn("furrow-registry-beat", rt, move |mut stop| {
            Box::pin(async move {
                let mut delay = interval;
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = match api2.call("PUT", &beat, None).await {
                        Ok(_) => interval,
                        Err(ClientError::Api { status: 404, .. }) => {
                            let _ = api2
                                .call("POST", &format!("{base2}/instances"), Some(&body))
                                .await;
                            interval
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "registry heartbeat failed");
                            Duration::from_millis(100).max(delay / 2).min(interval)
                        }
                    };
                }
            })
        })?;
        Ok(Registration {
            path: format!("{base}/instances/{}", encode(&instance.id)),
            instance,
            api,
            worker,
        })
    }

    /// Stops beating (the instance turns unhealthy after its TTL).
    pub fn stop(mut self) {
        self.worker.shutdown();
    }

    /// Stops beating and deregisters (graceful shutdown).
    pub fn deregister(mut self) -> Result<(), ClientError> {
        self.worker.shutdown();
        let rt = runtime()?;
        rt.block_on(self.api.call("DELETE", &self.path, None))
            .map(|_| ())
    }
}

/// Options of a [`Discoverer`].
#[derive(Clone, Debug)]
pub struct DiscoverOptions {
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// Where the last discovery is kept (and read from when the service is down at start).
    pub snapshot: Option<PathBuf>,
    /// The long-poll timeout.
    pub watch_timeout: Duration,
}

impl DiscoverOptions {
    /// Options for `service` of `env`, no snapshot file, 30 s long-polls.
    pub fn new(env: &str, service: &str) -> Self {
        DiscoverOptions {
            env: env.into(),
            service: service.into(),
            snapshot: None,
            watch_timeout: Duration::from_secs(30),
        }
    }
}

/// A live view of a service: its instances and governance rules, pushed by the registry.
pub struct Discoverer {
    rx: tokio::sync::watch::Receiver<Arc<Discovery>>,
    _worker: Worker,
}

impl Discoverer {
    /// Fetches the service (or, when the registry is unreachable or answers 5xx, reads the snapshot file),
    /// then follows its changes from a thread of its own.
    pub fn start(api: ApiClient, opts: DiscoverOptions) -> Result<Discoverer, ClientError> {
        let rt = runtime()?;
        let path = format!("{}/discover", svc_path(&opts.env, &opts.service));
        let first = match rt.block_on(api.call("GET", &path, None)) {
            Ok(v) => {
                let d: Discovery =
                    serde_json::from_value(v).map_err(|e| ClientError::NoConfig(e.to_string()))?;
                if let Some(p) = &opts.snapshot {
                    write_snapshot(p, &d)?;
                }
                d
            }
            Err(e) if e.is_unavailable() => {
                let Some(p) = &opts.snapshot else {
                    return Err(ClientError::NoConfig(e.to_string()));
                };
                let text = std::fs::read(p).map_err(|_| ClientError::NoConfig(e.to_string()))?;
                serde_json::from_slice(&text).map_err(|err| ClientError::Snapshot {
                    path: p.display().to_string(),
                    message: err.to_string(),
                })?
            }
            Err(e) => return Err(e),
        };
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(first));
        let worker = Worker::spawn("furrow-registry-watch", rt, move |mut stop| {
            Box::pin(async move {
                let mut backoff = Duration::from_millis(100);
                loop {
                    let since = tx.borrow().rev;
                    let watch = format!(
                        "/v1/registry/watch?env={}&service={}&since={since}&timeout={}",
                        encode(&opts.env),
                        encode(&opts.service),
                        opts.watch_timeout.as_millis()
                    );
                    let call = api.call_status(
                        "GET",
                        &watch,
                        None,
                        opts.watch_timeout + Duration::from_secs(5),
                    );
                    let r = tokio::select! {
                        _ = &mut stop => return,
                        r = call => r,
                    };
                    match r {
                        Ok((200, v)) => match serde_json::from_value::<Discovery>(v) {
                            Ok(d) => {
                                backoff = Duration::from_millis(100);
                                if let Some(p) = &opts.snapshot
                                    && let Err(e) = write_snapshot(p, &d)
                                {
                                    tracing::warn!(error = %e, "registry snapshot");
                                }
                                tx.send_replace(Arc::new(d));
                            }
                            Err(e) => tracing::warn!(error = %e, "registry watch answer"),
                        },
                        Ok(_) => backoff = Duration::from_millis(100),
                        Err(e) => {
                            tracing::debug!(error = %e, "registry watch failed");
                            tokio::select! {
                                _ = &mut stop => return,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            })
        })?;
        Ok(Discoverer {
            rx,
            _worker: worker,
        })
    }

    /// The latest discovery.
    pub fn current(&self) -> Arc<Discovery> {
        self.rx.borrow().clone()
    }

    /// A receiver of every new discovery.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Discovery>> {
        self.rx.clone()
    }
}

impl Discovery {
    /// Picks an instance for a call from `caller` with routing key `key` (a request id, a user...): the
    /// access rules must admit the caller (`None` otherwise), the first matching route rule narrows the
    /// candidates to its version (or to the others), then an instance is chosen by weight from the key's
    /// hash. When a route's side has no instance, all candidates are used (a rule never blackholes traffic).
    pub fn pick(
        &self,
        caller: &str,
        source: Option<std::net::IpAddr>,
        key: &str,
    ) -> Option<&RegInstance> {
        if let Some(r) = &self.rules
            && !r.admits(caller, source)
        {
            return None;
        }
        // No allocation: the route narrows by a filter, the weighted choice walks the list twice.
        let route = self.rules.as_ref().and_then(|r| r.route(caller, key));
        let routed = |i: &&RegInstance| {
            route.is_none_or(|(pattern, matches)| version_matches(pattern, &i.version) == matches)
        };
        let narrowed = route.is_some() && self.instances.iter().any(|i| routed(&i));
        let keep = |i: &&RegInstance| !narrowed || routed(i);
        let total: u64 = self
            .instances
            .iter()
            .filter(keep)
            .map(|i| i.weight as u64)
            .sum();
        if total == 0 {
            return self.instances.iter().find(keep);
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes().chain(*b"#pick") {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut at = h % total;
        let mut last = None;
        for i in self.instances.iter().filter(keep) {
            if at < i.weight as u64 {
                return Some(i);
            }
            at -= i.weight as u64;
            last = Some(i);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::{Rule, RuleSet};
    use super::*;

    fn inst(id: &str, version: &str, weight: u32) -> RegInstance {
        RegInstance {
            id: id.into(),
            version: version.into(),
            weight,
            enabled: true,
            healthy: true,
            ..Default::default()
        }
    }

    #[test]
    fn pick_follows_access_routes_and_weights() {
        let mut d = Discovery {
            env: "DEV".into(),
            service: "s".into(),
            rev: 1,
            protected: false,
            instances: vec![inst("old", "1.0", 300), inst("new", "2.0", 100)],
            rules: None,
        };
        let n = 4000;
        let news = (0..n)
            .filter(|i| d.pick("web", None, &format!("r{i}")).unwrap().id == "new")
            .count();
        assert!(
            (800..1200).contains(&news),
            "weights 300:100 → {news} of {n}"
        );
        d.rules = Some(RuleSet {
            rules: vec![
                Rule::Access {
                    allow: false,
                    callers: vec!["crawler".into()],
                    sources: vec![],
                },
                Rule::Route {
                    callers: vec!["web".into()],
                    version: "2.*".into(),
                    percent: 10,
                },
            ],
            ..Default::default()
        });
        assert!(d.pick("crawler", None, "k").is_none());
        let news = (0..n)
            .filter(|i| d.pick("web", None, &format!("r{i}")).unwrap().id == "new")
            .count();
        assert!((300..500).contains(&news), "10 % routed → {news} of {n}");
        let other = (0..n)
            .filter(|i| d.pick("batch", None, &format!("r{i}")).unwrap().id == "new")
            .count();
        assert!(other > 800, "the route rule is for web only: {other}");
    }
}
