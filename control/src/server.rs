//! Running the service: bind, serve the API, run scheduled publishes; on a runtime of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::center::Center;
use crate::error::{ControlError, ErrorCode, Result};

/// A running server (tests and embedding): its address and a way to stop it.
pub struct Server {
    /// The bound address.
    pub addr: SocketAddr,
    /// The service core.
    pub center: Arc<Center>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long a stopping node waits for the requests in flight (writes are bounded by the store's write wait).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Serves `center` on an already bound listener until `stop` resolves; runs scheduled publishes meanwhile.
pub async fn serve(
    center: Arc<Center>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sched = center.clone();
    let ticker = tokio::spawn(async move {
        // Every 50 ms: take in what other nodes committed to a shared store, and run due scheduled publishes.
        // While that fails (store down), retry and warn less and less often.
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            tokio::time::sleep(backoff.delay()).await;
            let s = sched.clone();
            let r = tokio::task::spawn_blocking(move || {
                s.catch_up()?;
                s.run_due()?;
                crate::registry::lease::tick(&s)?;
                crate::release::engine::tick(&s)?;
                s.run_rollouts()
            })
            .await;
            let err = match r {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            match err {
                None => {
                    if let Some(failures) = backoff.success() {
                        tracing::info!(failures, "store reachable again");
                    }
                }
                Some(e) => {
                    if backoff.failure() {
                        tracing::warn!(
                            error = %e,
                            failures = backoff.failures(),
                            retry_ms = backoff.delay().as_millis() as u64,
                            "store catch-up or scheduled publish failed"
                        );
                    }
                }
            }
        }
    });
    let jobs = crate::jobs::spawn(center.clone());
    // Active health checks of registry services (results feed the leases; see `registry::check`).
    let checker = tokio::spawn(crate::registry::check::run(center.clone()));
    // `into_make_service` turns the routes into services once: serving a plain `Router` makes axum run
    // `with_state` for every accepted connection, rebuilding (and later dropping) the whole route table —
    // ~19 KB and the CPU of the rebuild per connection, which for long-polls is per watcher and per
    // push (heaptrack of `perf::memory_per_idle_watcher`).
    let center_for_drain = center.clone();
    let app = crate::api::router(center).into_make_service();
    // Without TCP_NODELAY, pipelined responses wait on delayed ACKs (~40 ms each).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay");
        }
    });
    // A graceful shutdown: when `stop` resolves the node stops accepting, marks itself draining (watches
    // in progress answer 503 `draining` at once, so clients move to another node and ask again with the
    // same `since`), and waits for the requests in flight — a publish being committed finishes and is
    // answered — for at most `DRAIN_LIMIT`. Jobs and the store poll stop after that.
    let drain_center = center_for_drain;
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop.await;
        tracing::info!("control node draining");
        drain_center.start_draining();
        let _ = drained_tx.send(());
    });
    let r = tokio::select! {
        r = server => r,
        _ = async {
            if drained_rx.await.is_ok() {
                tokio::time::sleep(DRAIN_LIMIT).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(limit_ms = DRAIN_LIMIT.as_millis() as u64, "requests still in flight at the drain limit; closing them");
            Ok(())
        }
    };
    ticker.abort();
    if let Some(j) = jobs {
        j.abort();
    }
    checker.abort();
    r
}

/// Retry pacing for the store poll: the delay doubles on each failure up to `max` and resets on success; a
/// warning is due on the 1st, 2nd, 4th, 8th... consecutive failure, so a store that stays down costs a few log
/// lines, not one every 50 ms.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    delay: Duration,
    failures: u64,
}

impl Backoff {
    /// Starts at `base`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            delay: base,
            failures: 0,
        }
    }

    /// The wait before the next try.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Records a failure; returns whether to log it.
    pub fn failure(&mut self) -> bool {
        self.failures += 1;
        self.delay = (self.delay * 2).min(self.max);
        self.failures.is_power_of_two()
    }

    /// Records a success; returns the number of failures it ends, if any.
    pub fn success(&mut self) -> Option<u64> {
        self.delay = self.base;
        Some(std::mem::take(&mut self.failures)).filter(|n| *n > 0)
    }
}

impl Server {
    /// Starts a server on its own thread with a multi-threaded runtime of `threads` workers.
    pub fn start(center: Arc<Center>, addr: &str, threads: usize) -> Result<Server> {
        let io = |e: std::io::Error| {
            ControlError::new(ErrorCode::Internal, format!("listen {addr}: {e}"))
        };
        let std_listener = std::net::TcpListener::bind(addr).map_err(io)?;
        std_listener.set_nonblocking(true).map_err(io)?;
        let local = std_listener.local_addr().map_err(io)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("furrow-control")
            .enable_all()
            .build()
            .map_err(io)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = center.clone();
        let thread = std::thread::Builder::new()
            .name("furrow-control-main".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "control listener");
                            return;
                        }
                    };
                    if let Err(e) = serve(c, listener, async move {
                        let _ = rx.await;
                    })
                    .await
                    {
                        tracing::error!(error = %e, "control server");
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .map_err(io)?;
        Ok(Server {
            addr: local,
            center,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops the server and waits for its thread.
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

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    /// Issue 17, item 8: a store down for a minute (polled every 50 ms before) gives a handful of warnings.
    #[test]
    fn store_down_warnings_back_off() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let (mut waited, mut warnings, mut tries) = (Duration::ZERO, 0, 0);
        while waited < Duration::from_secs(60) {
            waited += b.delay();
            tries += 1;
            if b.failure() {
                warnings += 1;
            }
        }
        assert!(warnings <= 6, "{warnings} warnings in a minute");
        assert!(tries < 30, "{tries} tries in a minute");
        assert_eq!(b.delay(), Duration::from_secs(5));
        assert_eq!(b.success(), Some(tries));
        assert_eq!(b.delay(), Duration::from_millis(50));
        assert_eq!(b.success(), None);
    }
}
