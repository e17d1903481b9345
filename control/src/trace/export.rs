//! Onward export: the traces the tail sampler keeps are also sent over OTLP/HTTP (protobuf) to another
//! collector (Jaeger, Tempo, an OpenTelemetry collector, another `furrow control`), for fleets that
//! outgrow one node's store.
//!
//! Each kept trace is already encoded as an `ExportTraceServiceRequest` for its segment; protobuf
//! messages concatenate (repeated fields append), so a batch is those records back to back, up to
//! [`BATCH_BYTES`]. The store hands records over a bounded queue ([`QUEUE_RECORDS`]) and never waits:
//! a full queue drops the record and counts it. The forwarding thread sends one batch at a time, over
//! TLS for an `https://` endpoint (rustls, the server verified against `--trace-export-ca` or the
//! system bundle). A batch the receiver cannot take now (429, 502, 503, 504, a connection that fails or
//! times out) is tried again after a backoff (doubling from [`Retry::backoff`], or the receiver's
//! `Retry-After` seconds, each wait at most [`Retry::max_wait`]), at most [`Retry::attempts`] more
//! times; then, or at once for any other refusal or a certificate the client does not trust, it is
//! dropped and counted. While a batch waits, newer records queue behind it (and are dropped when the
//! queue is full): nothing grows while a receiver is away.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use rustls::pki_types::ServerName;

/// Records waiting for the forwarder.
pub const QUEUE_RECORDS: usize = 4096;
/// Bytes per export request, at most (a single larger record goes alone).
pub const BATCH_BYTES: usize = 1 << 20;
/// Connect, write and read timeout of one attempt.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Response head bytes read (status line and headers).
const MAX_HEAD: usize = 8 << 10;

/// When to try a batch again.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Tries after the first, at most.
    pub attempts: u32,
    /// The first wait without `Retry-After` (doubled for each further try).
    pub backoff: Duration,
    /// The longest single wait (a longer `Retry-After` is cut to it).
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Where kept traces go.
#[derive(Clone, Debug)]
pub struct ExportTarget {
    /// `http://HOST:PORT` or `https://HOST[:PORT]` (requests go to `/v1/traces`).
    pub endpoint: String,
    /// Bearer token, if the receiver needs one.
    pub token: Option<String>,
    /// PEM file of the CA that signed an `https://` receiver's certificate (default: the system's
    /// CA bundle).
    pub ca_file: Option<String>,
    /// Tries again on overload and connection failures.
    pub retry: Retry,
}

impl ExportTarget {
    /// A target with the default retry and no CA file.
    pub fn new(endpoint: impl Into<String>, token: Option<String>) -> ExportTarget {
        ExportTarget {
            endpoint: endpoint.into(),
            token,
            ca_file: None,
            retry: Retry::default(),
        }
    }

    /// Checks the endpoint (and reads the CA file for `https://`): what the forwarder connects to.
    pub fn resolve(&self) -> Result<Endpoint, String> {
        let (tls, rest) = match self.endpoint.strip_prefix("https://") {
            Some(r) => (true, r),
            None => match self.endpoint.strip_prefix("http://") {
                Some(r) => (false, r),
                None => {
                    return Err(format!(
                        "{:?}: use http://HOST:PORT or https://HOST[:PORT]",
                        self.endpoint
                    ));
                }
            },
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "{:?}: give the collector's address only (requests go to /v1/traces)",
                self.endpoint
            ));
        }
        if !tls {
            if self.ca_file.is_some() {
                return Err("a CA file is for an https:// endpoint".into());
            }
            if !host.contains(':') {
                return Err(format!(
                    "{:?}: an http:// endpoint needs a port",
                    self.endpoint
                ));
            }
            return Ok(Endpoint {
                host: host.to_string(),
                addr: host.to_string(),
                tls: None,
            });
        }
        let (addr, name) = crate::jobs::https::target(host)?;
        let config = crate::jobs::https::client_config(self.ca_file.as_deref())?;
        Ok(Endpoint {
            host: host.to_string(),
            addr,
            tls: Some((Arc::new(config), name)),
        })
    }
}

/// A checked target: the address to connect to and, for TLS, the client configuration and the name
/// the certificate must carry.
#[derive(Clone, Debug)]
pub struct Endpoint {
    host: String,
    addr: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// Forwarding counters (traces, except `retries`).
#[derive(Debug, Default)]
pub struct ExportCounts {
    /// Traces the receiver accepted.
    pub sent: AtomicU64,
    /// Traces dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Traces in batches the receiver refused or could not take, tries included.
    pub failed: AtomicU64,
    /// Batches tried again (each try counts once).
    pub retries: AtomicU64,
}

/// The forwarder's queue.
pub struct Forwarder {
    tx: SyncSender<Vec<u8>>,
    /// Counters.
    pub counts: Arc<ExportCounts>,
}

impl Forwarder {
    /// Checks the target and starts the forwarding thread (it ends when the forwarder is dropped).
    pub fn start(target: ExportTarget) -> std::io::Result<Forwarder> {
        let endpoint = target.resolve().map_err(std::io::Error::other)?;
        let (tx, rx) = sync_channel(QUEUE_RECORDS);
        let counts = Arc::new(ExportCounts::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("furrow-trace-forward".into())
            .spawn(move || forward(&rx, &target, &endpoint, &c))?;
        Ok(Forwarder { tx, counts })
    }

    /// Queues one kept trace's record; never blocks.
    pub fn send(&self, record: Vec<u8>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(record)
        {
            self.counts.dropped.fetch_add(1, Relaxed);
        }
    }
}

fn forward(
    rx: &Receiver<Vec<u8>>,
    target: &ExportTarget,
    endpoint: &Endpoint,
    counts: &ExportCounts,
) {
    let mut held: Option<Vec<u8>> = None;
    loop {
        let first = match held.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => r,
                Err(_) => return,
            },
        };
        let mut batch = first;
        let mut n = 1u64;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) if batch.len() + r.len() <= BATCH_BYTES => {
                    batch.extend_from_slice(&r);
                    n += 1;
                }
                Ok(r) => {
                    held = Some(r);
                    break;
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut tries = 0u32;
        loop {
            match post(target, endpoint, &batch) {
                Ok(()) => {
                    counts.sent.fetch_add(n, Relaxed);
                    break;
                }
                Err(f) if f.retry && tries < target.retry.attempts => {
                    let wait = wait_before(&target.retry, tries, f.after);
                    tracing::debug!(error = %f.why, traces = n, wait_ms = wait.as_millis() as u64,
                        "onward trace export: trying again");
                    counts.retries.fetch_add(1, Relaxed);
                    tries += 1;
                    std::thread::sleep(wait);
                }
                Err(f) => {
                    tracing::warn!(error = %f.why, traces = n, tries = tries + 1,
                        "onward trace export failed; batch dropped");
                    counts.failed.fetch_add(n, Relaxed);
                    break;
                }
            }
        }
    }
}

/// The wait before try `tries + 1`: the receiver's `Retry-After` when it gave one, else the backoff
/// doubled per earlier try with up to a quarter more of jitter (so that several control nodes do not
/// come back together); never more than `max_wait`.
fn wait_before(r: &Retry, tries: u32, after: Option<Duration>) -> Duration {
    let wait = match after {
        Some(a) => a,
        None => {
            let base = r.backoff.saturating_mul(1u32 << tries.min(16));
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
        }
    };
    wait.min(r.max_wait)
}

/// Why an attempt failed, and whether trying again may help.
#[derive(Debug)]
struct Failure {
    why: String,
    retry: bool,
    /// The receiver's `Retry-After`, in seconds.
    after: Option<Duration>,
}

impl Failure {
    fn io(e: std::io::Error) -> Failure {
        // rustls reports a certificate it does not trust (and other TLS alerts) as InvalidData: the
        // same answer would come again.
        let retry = e.kind() != std::io::ErrorKind::InvalidData;
        Failure {
            why: e.to_string(),
            retry,
            after: None,
        }
    }
}

/// POSTs one request; Ok only for a 2xx answer.
fn post(t: &ExportTarget, e: &Endpoint, body: &[u8]) -> Result<(), Failure> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&e.addr)
        .map_err(Failure::io)?
        .next()
        .ok_or_else(|| Failure {
            why: format!("{} resolves to nothing", e.addr),
            retry: true,
            after: None,
        })?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(Failure::io)?;
    tcp.set_write_timeout(Some(TIMEOUT)).map_err(Failure::io)?;
    tcp.set_read_timeout(Some(TIMEOUT)).map_err(Failure::io)?;
    tcp.set_nodelay(true).ok();
    let mut head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: application/x-protobuf\r\nContent-Length: {}\r\n",
        e.host,
        body.len()
    );
    if let Some(tok) = &t.token {
        head.push_str(&format!("Authorization: Bearer {tok}\r\n"));
    }
    head.push_str("\r\n");
    let answer = match &e.tls {
        None => exchange(tcp, head.as_bytes(), body),
        Some((config, name)) => {
            let conn = rustls::ClientConnection::new(config.clone(), name.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                .map_err(Failure::io)?;
            exchange(rustls::StreamOwned::new(conn, tcp), head.as_bytes(), body)
        }
    };
    let (status, after) = answer.map_err(Failure::io)?;
    match status {
        200..=299 => Ok(()),
        429 | 502 | 503 | 504 => Err(Failure {
            why: format!("receiver answered {status}"),
            retry: true,
            after,
        }),
        _ => Err(Failure {
            why: format!("receiver answered {status}"),
            retry: false,
            after: None,
        }),
    }
}

/// Writes the request and reads the response head: the status and `Retry-After` (delay-seconds; an
/// HTTP date is ignored and the backoff used instead).
fn exchange(
    mut s: impl Read + Write,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<(u16, Option<Duration>)> {
    s.write_all(head)?;
    s.write_all(body)?;
    s.flush()?;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        let r = s.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    parse_head(&buf[..n])
}

/// The status and `Retry-After` of an answer head (`codec::otlp::http`).
fn parse_head(head: &[u8]) -> std::io::Result<(u16, Option<Duration>)> {
    let h = codec::otlp::http::parse_answer_head(head)
        .map_err(|e| std::io::Error::other(format!("the receiver's answer: {e}")))?;
    Ok((h.status, h.retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_the_status_and_retry_after_seconds() {
        let h =
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nretry-after:  7 \r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), (503, Some(Duration::from_secs(7))));
        let date = b"HTTP/1.1 429 Too Many\r\nRetry-After: Wed, 21 Oct 2026 07:28:00 GMT\r\n\r\n";
        assert_eq!(parse_head(date).unwrap(), (429, None));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap(), (200, None));
        assert!(parse_head(b"").is_err());
        assert!(parse_head(b"SSH-2.0-x\r\n").is_err());
        // A header after the blank line is the body's, not the head's.
        let body = b"HTTP/1.1 503 x\r\n\r\nRetry-After: 9\r\n";
        assert_eq!(parse_head(body).unwrap(), (503, None));
    }

    #[test]
    fn waits_double_and_stay_under_the_cap() {
        let r = Retry {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
        };
        for (tries, base) in [(0, 100), (1, 200), (2, 400), (3, 800)] {
            let w = wait_before(&r, tries, None);
            assert!(
                w >= Duration::from_millis(base)
                    && w <= Duration::from_millis(base + base / 4).min(r.max_wait),
                "{tries}: {w:?}"
            );
        }
        assert_eq!(wait_before(&r, 9, None), r.max_wait);
        assert_eq!(
            wait_before(&r, 0, Some(Duration::from_secs(60))),
            r.max_wait
        );
        assert_eq!(
            wait_before(&r, 3, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn endpoints_are_checked_before_start() {
        let t = |e: &str| ExportTarget::new(e, None).resolve().map(|_| ());
        assert!(t("http://127.0.0.1:4318").is_ok());
        assert!(t("http://127.0.0.1:4318/").is_ok());
        assert!(t("ftp://x:1").unwrap_err().contains("use http://"));
        assert!(
            t("http://x:1/v1/traces")
                .unwrap_err()
                .contains("address only")
        );
        assert!(t("http://x").unwrap_err().contains("needs a port"));
        let mut ca = ExportTarget::new("http://x:1", None);
        ca.ca_file = Some("/nonexistent.pem".into());
        assert!(ca.resolve().unwrap_err().contains("https://"));
        let mut bad = ExportTarget::new("https://x:1", None);
        bad.ca_file = Some("/nonexistent.pem".into());
        assert!(bad.resolve().unwrap_err().contains("/nonexistent.pem"));
    }
}
