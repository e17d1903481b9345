//! Full-link tracing: the span collector of `furrow control`, on the configuration center's core.
//!
//! Receivers → processors → store, as in the OpenTelemetry collector, with every queue bounded:
//! - ingest ([`api`]): OTLP/HTTP `POST /v1/traces`, protobuf (decoded by `codec::otlp`) or JSON
//!   ([`model::decode_json`]), from any OpenTelemetry SDK and from the proxies. The request is decoded
//!   and masked on the HTTP worker, then handed to the collector's worker thread over a bounded queue
//!   (a span budget and a batch count): when it is full the request is answered 503 with the count of
//!   refused spans (OTLP senders retry 503 later), so a burst never grows memory without bound.
//! - processing ([`model::Masking`]): SQL attributes are replaced by their digest (the proxies' own
//!   normal form; literals never reach the store), configured attributes are masked entirely.
//! - storage ([`store`]): tail sampling per trace, then append-only segment files bounded by size and
//!   age, with the index in memory.
//! - queries ([`query`]): trace by id as a call tree, search, dependency graph, slowest operations.
//! - signals ([`signals`]): requests, errors and latencies per service and host, counted before sampling
//!   (release canary analysis compares canary hosts with baseline hosts on them).
//!
//! What it shares with the other control services: authentication (every route needs a valid token;
//! ingest too, so that only Furrow's own processes and instrumented services with a token can fill
//! the store), the HTTP server, error bodies, `/metrics`. What it does not share: the config store —
//! spans are high volume and short-lived, so they never enter the versioned, audited store.

pub mod access;
pub mod api;
pub mod cli;
pub mod digests;
pub mod export;
pub mod model;
pub mod processes;
pub mod query;
pub mod signals;
pub mod slowlog;
pub mod store;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use crate::error::{ControlError, ErrorCode, Result};
use crate::model::now_ms;
use model::{Masking, SpanRec};
use store::{SharedStore, Store, StoreOptions};

/// Batches (requests) waiting for the worker.
pub const QUEUE_BATCHES: usize = 1024;

/// The collector's settings.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// The store.
    pub store: StoreOptions,
    /// Masking before storage.
    pub masking: Masking,
    /// Spans waiting for the worker; requests beyond it are refused with 503.
    pub queue_spans: usize,
    /// Onward OTLP export of kept traces, if any.
    pub export: Option<export::ExportTarget>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            store: StoreOptions::default(),
            masking: Masking::default(),
            queue_spans: 100_000,
            export: None,
        }
    }
}

/// `furrow control` flags of the collector.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Directory of the span segments (default: in memory only).
    #[arg(long)]
    pub trace_dir: Option<std::path::PathBuf>,
    /// Bytes of span segments kept (oldest deleted first).
    #[arg(long, default_value_t = 256 << 20)]
    pub trace_max_bytes: u64,
    /// Hours spans are kept.
    #[arg(long, default_value_t = 24)]
    pub trace_max_age_h: u64,
    /// Fraction (0-1) of traces without errors or slow spans that are kept (tail sampling).
    #[arg(long, default_value_t = 0.1)]
    pub trace_sample_rate: f64,
    /// A span at least this many ms long keeps its trace.
    #[arg(long, default_value_t = 500)]
    pub trace_slow_ms: u64,
    /// Ms from a trace's first span to its keep-or-drop decision.
    #[arg(long, default_value_t = 5000)]
    pub trace_decision_ms: u64,
    /// Span attributes masked entirely before storage (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub trace_mask: Vec<String>,
    /// Spans queued for the store before ingest answers 503.
    #[arg(long, default_value_t = 100_000)]
    pub trace_queue_spans: usize,
    /// Also send kept traces over OTLP/HTTP to this collector (`http://HOST:PORT` or
    /// `https://HOST[:PORT]`).
    #[arg(long)]
    pub trace_export: Option<String>,
    /// Bearer token for --trace-export.
    #[arg(long)]
    pub trace_export_token: Option<String>,
    /// PEM file of the CA that signed the --trace-export receiver's certificate (default: the
    /// system's CA bundle).
    #[arg(long)]
    pub trace_export_ca: Option<String>,
    /// Tries again, at most, of a batch the receiver cannot take now (429, 502-504, connection
    /// failures), after a backoff or its Retry-After; then the batch is dropped and counted.
    #[arg(long, default_value_t = 4)]
    pub trace_export_retries: u32,
}

impl TraceArgs {
    /// The options these flags give.
    pub fn options(&self) -> std::result::Result<TraceOptions, String> {
        if !(0.0..=1.0).contains(&self.trace_sample_rate) {
            return Err("--trace-sample-rate must be between 0 and 1".into());
        }
        let mut o = TraceOptions::default();
        o.store.dir = self.trace_dir.clone();
        o.store.max_bytes = self.trace_max_bytes;
        o.store.segment_bytes = (self.trace_max_bytes / 16).clamp(64 << 10, 64 << 20);
        o.store.max_age = Duration::from_secs(self.trace_max_age_h * 3600);
        o.store.sample_rate = self.trace_sample_rate;
        o.store.slow = Duration::from_millis(self.trace_slow_ms);
        o.store.decision_wait = Duration::from_millis(self.trace_decision_ms);
        o.masking.mask_keys = self.trace_mask.clone();
        o.queue_spans = self.trace_queue_spans.max(1);
        if let Some(e) = &self.trace_export {
            let mut t = export::ExportTarget::new(e.clone(), self.trace_export_token.clone());
            t.ca_file = self.trace_export_ca.clone();
            t.retry.attempts = self.trace_export_retries.min(100);
            t.resolve().map_err(|e| format!("--trace-export: {e}"))?;
            o.export = Some(t);
        } else if self.trace_export_ca.is_some() {
            return Err("--trace-export-ca needs --trace-export".into());
        }
        Ok(o)
    }
}

/// Ingest counters.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Export requests answered 200.
    pub requests: AtomicU64,
    /// Spans accepted into the queue.
    pub spans_accepted: AtomicU64,
    /// Spans refused because the queue was full (503).
    pub spans_refused: AtomicU64,
    /// Requests refused as malformed (400).
    pub requests_malformed: AtomicU64,
    /// Spans left out of accepted requests because the token may not send spans for their service
    /// (OTLP partial success).
    pub spans_rejected: AtomicU64,
}

/// The collector: the bounded queue in front of the store's worker, and the store.
pub struct Collector {
    tx: SyncSender<Vec<SpanRec>>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    masking: Masking,
    /// The store (the worker writes; queries read).
    pub store: SharedStore,
    /// Requests, errors and latencies per service and host, before sampling (the worker writes; release
    /// canary analysis reads).
    pub signals: signals::SharedSignals,
    /// Onward export counters, when exporting.
    pub export: Option<Arc<export::ExportCounts>>,
    /// Counters.
    pub stats: IngestStats,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("queued", &self.queued)
            .finish()
    }
}

impl Collector {
    /// Opens the store and starts the worker thread (it ends when the collector is dropped).
    pub fn start(opts: &TraceOptions) -> Result<Collector> {
        let store = Store::open(opts.store.clone(), now_ms()).map_err(|e| {
            ControlError::new(
                ErrorCode::Internal,
                format!("trace store {:?}: {e}", opts.store.dir),
            )
        })?;
        let mut store = store;
        let forwarder = match &opts.export {
            Some(t) => {
                store.forward(true);
                Some(export::Forwarder::start(t.clone()).map_err(|e| {
                    ControlError::new(ErrorCode::Internal, format!("trace forwarder: {e}"))
                })?)
            }
            None => None,
        };
        let export_counts = forwarder.as_ref().map(|f| f.counts.clone());
        let store: SharedStore = Arc::new(Mutex::new(store));
        let (tx, rx) = sync_channel(QUEUE_BATCHES);
        let queued = Arc::new(AtomicUsize::new(0));
        let signals = signals::SharedSignals::default();
        let (s, q, g) = (store.clone(), queued.clone(), signals.clone());
        std::thread::Builder::new()
            .name("furrow-trace".into())
            .spawn(move || work(&rx, &s, &g, &q, forwarder.as_ref()))
            .map_err(|e| ControlError::new(ErrorCode::Internal, format!("trace worker: {e}")))?;
        Ok(Collector {
            tx,
            queued,
            max_queued: opts.queue_spans,
            masking: opts.masking.clone(),
            store,
            signals,
            export: export_counts,
            stats: IngestStats::default(),
        })
    }

    /// Masks and queues spans; `Err` (503, with counts) when the queue is full: nothing is taken then.
    pub fn ingest(&self, mut spans: Vec<SpanRec>) -> Result<usize> {
        let n = spans.len();
        if n == 0 {
            self.stats.requests.fetch_add(1, Relaxed);
            return Ok(0);
        }
        let before = self.queued.fetch_add(n, Relaxed);
        let refuse = |c: &Collector, why: &str| {
            c.queued.fetch_sub(n, Relaxed);
            let total = c.stats.spans_refused.fetch_add(n as u64, Relaxed) + n as u64;
            Err(ControlError::new(
                ErrorCode::StoreUnavailable,
                format!("trace ingest {why}: {n} spans refused ({total} since start); retry later"),
            )
            .with_field("queue"))
        };
        if before + n > self.max_queued {
            return refuse(self, "queue full");
        }
        for s in spans.iter_mut() {
            self.masking.apply(&mut s.span);
        }
        match self.tx.try_send(spans) {
            Ok(()) => {
                self.stats.requests.fetch_add(1, Relaxed);
                self.stats.spans_accepted.fetch_add(n as u64, Relaxed);
                Ok(n)
            }
            Err(TrySendError::Full(_)) => refuse(self, "queue full"),
            Err(TrySendError::Disconnected(_)) => refuse(self, "worker stopped"),
        }
    }

    /// Spans waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    /// Runs `f` on the store (for queries; blocking: call from a blocking context).
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> Result<T> {
        let st = self
            .store
            .lock()
            .map_err(|_| ControlError::new(ErrorCode::Internal, "trace store lock poisoned"))?;
        Ok(f(&st))
    }

    /// Waits until the queue is empty and the store has decided every trace whose wait is over (tests).
    pub fn settle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.queued() == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// The worker: takes batches into the store; every 100 ms (or after each batch) runs the store's tick.
fn work(
    rx: &Receiver<Vec<SpanRec>>,
    store: &SharedStore,
    signals: &signals::SharedSignals,
    queued: &AtomicUsize,
    forwarder: Option<&export::Forwarder>,
) {
    let tick = Duration::from_millis(100);
    let mut last_tick = std::time::Instant::now();
    loop {
        let r = rx.recv_timeout(tick);
        if let Ok(batch) = &r
            && let Ok(mut g) = signals.lock()
        {
            // Before the sampler decides: rates and latencies must see every request.
            g.add(batch, now_ms());
        }
        let Ok(mut st) = store.lock() else {
            return;
        };
        match r {
            Ok(batch) => {
                let n = batch.len();
                st.add(batch, now_ms());
                queued.fetch_sub(n, Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                st.tick(now_ms());
                return;
            }
        }
        if last_tick.elapsed() >= tick {
            st.tick(now_ms());
            last_tick = std::time::Instant::now();
        }
        if let Some(f) = forwarder {
            for rec in st.take_outbox() {
                f.send(rec);
            }
        }
    }
}

/// The collector's lines of `/metrics`.
pub fn metrics_text(c: &Collector) -> String {
    let s = &c.stats;
    let (counts, (traces, pending, pending_spans, segments, bytes)) = c
        .with_store(|st| (st.counts.clone(), st.sizes()))
        .unwrap_or_default();
    let (series, counted, dropped) = c
        .signals
        .lock()
        .map(|g| (g.len(), g.counted, g.dropped))
        .unwrap_or_default();
    format!(
        "# TYPE furrow_trace_spans_accepted_total counter\nfurrow_trace_spans_accepted_total {}\n\
         # TYPE furrow_trace_spans_refused_total counter\nfurrow_trace_spans_refused_total {}\n\
         # TYPE furrow_trace_spans_rejected_total counter\nfurrow_trace_spans_rejected_total {}\n\
         # TYPE furrow_trace_requests_malformed_total counter\nfurrow_trace_requests_malformed_total {}\n\
         # TYPE furrow_trace_queue_spans gauge\nfurrow_trace_queue_spans {}\n\
         # TYPE furrow_trace_traces gauge\nfurrow_trace_traces{{state=\"stored\"}} {traces}\n\
         furrow_trace_traces{{state=\"pending\"}} {pending}\n\
         # TYPE furrow_trace_pending_spans gauge\nfurrow_trace_pending_spans {pending_spans}\n\
         # TYPE furrow_trace_segments gauge\nfurrow_trace_segments {segments}\n\
         # TYPE furrow_trace_segment_bytes gauge\nfurrow_trace_segment_bytes {bytes}\n\
         # TYPE furrow_trace_sampled_total counter\nfurrow_trace_sampled_total{{decision=\"kept\"}} {}\n\
         furrow_trace_sampled_total{{decision=\"dropped\"}} {}\n\
         # TYPE furrow_trace_expired_total counter\nfurrow_trace_expired_total {}\n\
         # TYPE furrow_trace_signal_series gauge\nfurrow_trace_signal_series {series}\n\
         # TYPE furrow_trace_signal_spans_total counter\nfurrow_trace_signal_spans_total{{result=\"counted\"}} {counted}\n\
         furrow_trace_signal_spans_total{{result=\"dropped\"}} {dropped}\n",
        s.spans_accepted.load(Relaxed),
        s.spans_refused.load(Relaxed),
        s.spans_rejected.load(Relaxed),
        s.requests_malformed.load(Relaxed),
        c.queued(),
        counts.traces_kept,
        counts.traces_sampled_out,
        counts.traces_expired,
    )
}
