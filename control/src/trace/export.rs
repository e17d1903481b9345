//! Onward export: the traces the tail sampler keeps are also sent over OTLP/HTTP (protobuf) to another
//! collector (Jaeger, Tempo, an OpenTelemetry collector, another `furrow control`), for fleets that
//! outgrow one node's store.
//!
//! Each kept trace is already encoded as an `ExportTraceServiceRequest` for its segment; protobuf
//! messages concatenate (repeated fields append), so a batch is those records back to back, up to
//! [`BATCH_BYTES`]. The store hands records over a bounded queue ([`QUEUE_RECORDS`]) and never waits:
//! a full queue drops the record and counts it; a batch the receiver refuses or cannot take within
//! 5 s is dropped and counted (no retry buffer grows while it is away).

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

/// Records waiting for the forwarder.
pub const QUEUE_RECORDS: usize = 4096;
/// Bytes per export request, at most (a single larger record goes alone).
pub const BATCH_BYTES: usize = 1 << 20;

/// Where kept traces go.
#[derive(Clone, Debug)]
pub struct ExportTarget {
    /// `http://HOST:PORT` (requests go to `/v1/traces`).
    pub endpoint: String,
    /// Bearer token, if the receiver needs one.
    pub token: Option<String>,
}

/// Forwarding counters (traces).
#[derive(Debug, Default)]
pub struct ExportCounts {
    /// Traces the receiver accepted.
    pub sent: AtomicU64,
    /// Traces dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Traces in batches the receiver refused or could not take.
    pub failed: AtomicU64,
}

/// The forwarder's queue.
pub struct Forwarder {
    tx: SyncSender<Vec<u8>>,
    /// Counters.
    pub counts: Arc<ExportCounts>,
}

impl Forwarder {
    /// Starts the forwarding thread (it ends when the forwarder is dropped).
    pub fn start(target: ExportTarget) -> std::io::Result<Forwarder> {
        let (tx, rx) = sync_channel(QUEUE_RECORDS);
        let counts = Arc::new(ExportCounts::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("furrow-trace-forward".into())
            .spawn(move || forward(&rx, &target, &c))?;
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

fn forward(rx: &Receiver<Vec<u8>>, target: &ExportTarget, counts: &ExportCounts) {
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
        match post(target, &batch) {
            Ok(()) => counts.sent.fetch_add(n, Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, traces = n, "onward trace export failed; dropped");
                counts.failed.fetch_add(n, Relaxed)
            }
        };
    }
}

/// POSTs one request; Ok only for a 2xx answer.
fn post(t: &ExportTarget, body: &[u8]) -> std::io::Result<()> {
    let host = crate::http::authority(&t.endpoint).map_err(std::io::Error::other)?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .ok_or_else(|| std::io::Error::other("export endpoint resolves to nothing"))?;
    let timeout = Duration::from_secs(5);
    let mut c = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    c.set_write_timeout(Some(timeout))?;
    c.set_read_timeout(Some(timeout))?;
    let mut head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/x-protobuf\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(tok) = &t.token {
        head.push_str(&format!("Authorization: Bearer {tok}\r\n"));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes())?;
    c.write_all(body)?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = c.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
    match line.split(' ').nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        Some(code) => Err(std::io::Error::other(format!("receiver answered {code}"))),
        None => Err(std::io::Error::other("no HTTP status from the receiver")),
    }
}
