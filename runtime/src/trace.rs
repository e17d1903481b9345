//! Span export from the data path: W3C trace context, the sampling decision and the exporter.
//!
//! The executors never wait for the collector. A finished statement or command that is sampled
//! becomes a [`SpanRecord`] — a fixed-size value of ids, `Instant`s, numbers and shared strings
//! made once per backend, listener, user or digest — handed to [`Exporter::record`], which pushes
//! it into the calling core's lane (a buffer behind a lock only the exporter also takes, once per
//! batch). The lanes together hold at most `queue_spans` (split evenly); a full lane drops the
//! span and counts it. One exporter thread per process swaps the lanes' buffers out when one holds
//! a batch (`batch_spans`) or every `flush`, encodes the OTLP request straight from the records
//! (resource and scope once per request, times turned into wall-clock time with one pair of clock
//! reads per batch) and POSTs it as an OTLP/HTTP protobuf `ExportTraceServiceRequest` to
//! `ENDPOINT/v1/traces`. A batch the collector refuses or cannot take in time (down, slow, 503)
//! is dropped and counted: there is no retry buffer to grow while a collector is away.
//!
//! Sampling: a statement is traced when the caller's `traceparent` has the sampled flag (the proxy
//! span then joins the caller's trace), when it failed, when it took at least `slow`, or else with
//! probability `head_sample_percent`. With `[tracing]` absent (the default) the proxies hold no
//! exporter and the whole feature costs one `Option` test per statement.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use codec::otlp::wire::Writer;
use codec::otlp::{self, Value};
use router::config::{Config, Tracing};

/// A W3C `traceparent`: the caller's trace, its span (our parent) and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The caller's span id (never all zero).
    pub span_id: [u8; 8],
    /// The sampled flag (bit 0 of the flags).
    pub sampled: bool,
}

fn hex_into(s: &[u8], out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None, // W3C: lower-case hex only
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(s[2 * i])? << 4) | nib(s[2 * i + 1])?;
    }
    Some(())
}

/// Parses `VERSION-TRACEID-SPANID-FLAGS` (version `00`; a higher version is read by its first four
/// fields, as the W3C recommendation asks). All-zero ids and version `ff` are invalid.
pub fn parse_traceparent(s: &str) -> Option<TraceParent> {
    let b = s.trim().as_bytes();
    if b.len() < 55 || (b.len() > 55 && (b[..2] == *b"00" || b[55] != b'-')) {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' || &b[..2] == b"ff" {
        return None;
    }
    let mut version = [0u8; 1];
    hex_into(&b[..2], &mut version)?;
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    let mut flags = [0u8; 1];
    hex_into(&b[3..35], &mut trace_id)?;
    hex_into(&b[36..52], &mut span_id)?;
    hex_into(&b[53..55], &mut flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        span_id,
        sampled: flags[0] & 1 == 1,
    })
}

/// The `traceparent` of a sqlcommenter comment in `sql` (`/*traceparent='00-...-01'*/`, possibly
/// among other `key='value'` pairs, values URL-encoded per sqlcommenter: `-` is never encoded).
///
/// Runs for every traced statement: a statement without a comment costs one `memchr` for `/`
/// (a substring search for `/*` would set up a two-way searcher first).
pub fn traceparent_in_sql(sql: &str) -> Option<TraceParent> {
    let mut rest = sql;
    while let Some(slash) = rest.find('/') {
        if rest.as_bytes().get(slash + 1) != Some(&b'*') {
            rest = &rest[slash + 1..];
            continue;
        }
        let body = &rest[slash + 2..];
        let close = body.find("*/")?;
        let comment = &body[..close];
        if let Some(at) = comment.find("traceparent='") {
            let v = &comment[at + "traceparent='".len()..];
            let end = v.find('\'')?;
            return parse_traceparent(&v[..end]);
        }
        rest = &body[close + 2..];
    }
    None
}

/// A random non-zero `u64` from a per-thread xorshift generator seeded from the clock, the thread
/// and a counter (span ids need to be unique, not secret). Never zero: the state never is, and
/// multiplying by an odd constant is a bijection that keeps zero alone at zero.
#[inline]
pub fn random_u64() -> u64 {
    use std::cell::Cell;
    static SEEDS: AtomicU64 = AtomicU64::new(0x2545_f491_4f6c_dd1d);
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (t ^ SEEDS.fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A random id (never all zero; see [`random_u64`]).
pub fn random_id<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let b = random_u64().to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    if out.iter().all(|b| *b == 0) {
        out[0] = 1;
    }
    out
}

/// Wall-clock ns since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A span attribute's value as the data path records it: handles and numbers, formatted by the
/// exporter thread, so that recording a span formats and allocates nothing.
#[derive(Debug, Clone, Default)]
pub enum AttrValue {
    /// No attribute (an unused slot).
    #[default]
    None,
    /// A constant string.
    Static(&'static str),
    /// A string made once (per backend, listener, user, digest) and shared.
    Str(Arc<str>),
    /// An integer.
    Int(i64),
    /// An address, as its `Display` text.
    Ip(IpAddr),
    /// A 64-bit value as 16 lower-case hex digits.
    Hex(u64),
}

/// A span's name as the data path records it.
#[derive(Debug, Clone)]
pub enum SpanName {
    /// A constant, upper-cased at export (a Redis command).
    Upper(&'static str),
    /// A shared string, cut at [`MAX_NAME`] bytes (at a character boundary) at export.
    Text(Arc<str>),
    /// A constant prefix and a shared string (`shard s0`).
    Prefixed(&'static str, Arc<str>),
}

/// The longest span name exported (longer texts are cut at a character boundary).
pub const MAX_NAME: usize = 96;

/// The most attributes a [`SpanRecord`] holds.
pub const RECORD_ATTRS: usize = 12;

/// One finished span, recorded by an executor as a fixed-size value: ids, times as the executor's
/// own `Instant`s (turned into wall-clock time by the exporter, so the data path reads no clock
/// for a span), a name and up to [`RECORD_ATTRS`] attributes as handles and numbers. No `String`,
/// `Vec` or `Box` is made for it; the exporter thread encodes OTLP straight from these records.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// Span id.
    pub span_id: [u8; 8],
    /// The parent's span id (all zero for a root).
    pub parent_id: [u8; 8],
    /// When the span started.
    pub start: Instant,
    /// How long it took.
    pub took: Duration,
    /// SpanKind (2 server, 3 client).
    pub kind: u8,
    /// The name.
    pub name: SpanName,
    /// Set for a failed span: its status message and an optional code appended to it.
    pub error: Option<(&'static str, Option<u16>)>,
    attrs: [(&'static str, AttrValue); RECORD_ATTRS],
    len: u8,
}

impl SpanRecord {
    /// A span that started at `start` and took `took`, in the caller's trace when there is one
    /// (else a new trace); its span id is fresh. Inlined, like [`Exporter::record`], so that the
    /// record is built where it is pushed (each move of it is a ~600-byte copy).
    #[inline]
    pub fn new(
        parent: Option<&TraceParent>,
        name: SpanName,
        kind: u8,
        start: Instant,
        took: Duration,
    ) -> SpanRecord {
        let (trace_id, parent_id) = match parent {
            Some(p) => (p.trace_id, p.span_id),
            None => {
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&random_u64().to_le_bytes());
                t[8..].copy_from_slice(&random_u64().to_le_bytes());
                (t, [0; 8])
            }
        };
        SpanRecord {
            trace_id,
            span_id: random_u64().to_le_bytes(),
            parent_id,
            start,
            took,
            kind,
            name,
            error: None,
            attrs: [const { ("", AttrValue::None) }; RECORD_ATTRS],
            len: 0,
        }
    }

    /// This span as the parent of others (its children's `traceparent`).
    pub fn as_parent(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.span_id,
            sampled: true,
        }
    }

    /// Adds an attribute (past [`RECORD_ATTRS`] it is counted as dropped at export).
    #[inline]
    pub fn attr(&mut self, key: &'static str, value: AttrValue) {
        if let Some(slot) = self.attrs.get_mut(usize::from(self.len)) {
            *slot = (key, value);
        }
        self.len = self.len.saturating_add(1);
    }

    /// The attributes recorded.
    pub fn attrs(&self) -> &[(&'static str, AttrValue)] {
        &self.attrs[..usize::from(self.len).min(RECORD_ATTRS)]
    }
}

/// A backend's names as its spans show them, made once per backend (not per span):
/// `furrow.backend` (the server) and `peer.service` (`SYSTEM:SERVER`).
#[derive(Debug, Clone)]
pub struct PeerNames {
    /// The server's name.
    pub server: Arc<str>,
    /// `SYSTEM:SERVER` (`redis:r1`, `mysql:primary`).
    pub peer: Arc<str>,
}

impl PeerNames {
    /// The names of `server` of a `system` (`redis`, `mysql`).
    pub fn new(system: &str, server: &str) -> PeerNames {
        PeerNames {
            server: Arc::from(server),
            peer: Arc::from(format!("{system}:{server}")),
        }
    }
}

/// The exporter's counters.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans handed to the queue.
    pub queued: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Spans the collector accepted.
    pub sent: AtomicU64,
    /// Spans in batches the collector refused or could not take.
    pub failed: AtomicU64,
}

/// One per-core span buffer: the records waiting for the exporter and the counts it has not
/// taken yet (plain integers: only the buffer's lock guards them).
#[derive(Default)]
struct Lane {
    spans: Vec<SpanRecord>,
    queued: u64,
    dropped: u64,
}

/// A lane on its own cache line, so that executors pushing into different lanes do not share one.
#[repr(align(128))]
#[derive(Default)]
struct PaddedLane(Mutex<Lane>);

/// What the executors and the exporter thread share.
struct Queue {
    lanes: Box<[PaddedLane]>,
    /// Spans one lane may hold.
    lane_cap: usize,
    /// Spans per export request.
    batch: usize,
    /// A lane this full wakes the exporter (a batch, or half a lane when lanes are smaller).
    wake_at: usize,
    exporter: OnceLock<std::thread::Thread>,
    closed: AtomicBool,
}

fn lock(l: &PaddedLane) -> std::sync::MutexGuard<'_, Lane> {
    l.0.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The lane of the calling thread: threads take lanes in turn, so each executor has its own
/// while there are no more executors than lanes (lanes shared by two threads stay correct).
fn lane_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static LANE: usize = NEXT.fetch_add(1, Relaxed);
    }
    LANE.with(|l| *l)
}

/// The process's span exporter (see the module documentation).
pub struct Exporter {
    queue: Arc<Queue>,
    settings: Tracing,
    /// Counters.
    pub stats: Arc<ExportStats>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("endpoint", &self.settings.endpoint)
            .finish()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.queue.closed.store(true, Relaxed);
        if let Some(t) = self.queue.exporter.get() {
            t.unpark();
        }
    }
}

impl Exporter {
    /// Starts the exporter thread.
    pub fn start(settings: Tracing) -> std::io::Result<Arc<Exporter>> {
        // One lane per CPU (a power of two, at most 64): the executors are one per core.
        let lanes = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 64)
            .next_power_of_two();
        let queue = Arc::new(Queue {
            lanes: (0..lanes).map(|_| PaddedLane::default()).collect(),
            lane_cap: settings.queue_spans.div_ceil(lanes).max(1),
            batch: settings.batch_spans.max(1),
            wake_at: settings
                .batch_spans
                .min(settings.queue_spans.div_ceil(lanes) / 2)
                .max(1),
            exporter: OnceLock::new(),
            closed: AtomicBool::new(false),
        });
        let stats = Arc::new(ExportStats::default());
        let (s, st, q) = (settings.clone(), stats.clone(), queue.clone());
        let handle = std::thread::Builder::new()
            .name("furrow-trace-export".into())
            .spawn(move || export_loop(&q, &s, &st))?;
        let _ = queue.exporter.set(handle.thread().clone());
        Ok(Arc::new(Exporter {
            queue,
            settings,
            stats,
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &Tracing {
        &self.settings
    }

    /// Whether a finished statement is traced (see the module documentation).
    #[inline]
    pub fn keep(&self, parent: Option<&TraceParent>, took: Duration, error: bool) -> bool {
        parent.is_some_and(|p| p.sampled)
            || error
            || took >= self.settings.slow
            || self.head_sampled()
    }

    /// The head-sampling draw alone (`head_sample_percent`): whether a statement is traced
    /// whatever its outcome when its caller did not ask. A caller may draw before the statement
    /// runs and keep the failed and slow ones at the end (the draw is independent of both).
    #[inline]
    pub fn head_sampled(&self) -> bool {
        match self.settings.head_sample_percent {
            0 => false,
            100.. => true,
            p => random_u64() % 10_000 < u64::from(p) * 100,
        }
    }

    /// Queues a span into the calling core's lane; never blocks on the exporter (a full lane
    /// drops the span and counts it). The lane's lock is the executor's own but for the moment
    /// the exporter swaps the lane's buffer out.
    #[inline]
    pub fn record(&self, span: SpanRecord) {
        let q = &*self.queue;
        let lane = &q.lanes[lane_index() & (q.lanes.len() - 1)];
        let mut l = lock(lane);
        if l.spans.len() >= q.lane_cap {
            l.dropped += 1;
            return;
        }
        l.spans.push(span);
        l.queued += 1;
        let full = l.spans.len() == q.wake_at;
        drop(l);
        if full && let Some(t) = q.exporter.get() {
            t.unpark();
        }
    }
}

/// A string attribute (of an owned [`otlp::Span`]).
pub fn attr_str(k: &str, v: impl Into<String>) -> otlp::Attr {
    (k.to_string(), Value::Str(v.into()))
}

/// Appends `ip`'s `Display` text: IPv4 written digit by digit (the formatting machinery's padding
/// and width handling cost ~400 instructions per span); IPv6 through `Display`.
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if o >= 100 {
            out.push(b'0' + o / 100);
        }
        if o >= 10 {
            out.push(b'0' + o / 10 % 10);
        }
        out.push(b'0' + o % 10);
    }
}

/// `ip` as its `Display` text (see [`push_ip`]).
pub fn ip_text(ip: IpAddr) -> String {
    let mut v = Vec::with_capacity(15);
    push_ip(&mut v, ip);
    String::from_utf8(v).unwrap_or_default()
}

/// An integer attribute (of an owned [`otlp::Span`]).
pub fn attr_int(k: &str, v: i64) -> otlp::Attr {
    (k.to_string(), Value::Int(v))
}

/// Turns the executors' `Instant`s into wall-clock time: one pair of clock reads per batch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_ns: u64,
    mono: Instant,
}

impl Clock {
    /// The clocks now.
    pub fn now() -> Clock {
        Clock {
            wall_ns: now_ns(),
            mono: Instant::now(),
        }
    }

    /// `t` in ns since the epoch.
    pub fn wall_ns(&self, t: Instant) -> u64 {
        match self.mono.checked_duration_since(t) {
            Some(ago) => self.wall_ns.saturating_sub(ago.as_nanos() as u64),
            None => self
                .wall_ns
                .saturating_add(t.duration_since(self.mono).as_nanos() as u64),
        }
    }
}

/// Appends one record's `Span` message to a request being written (`scratch` is reused for
/// the texts made here).
pub fn encode_record(w: &mut Writer, r: &SpanRecord, clock: &Clock, scratch: &mut Vec<u8>) {
    w.message(2, |w| {
        scratch.clear();
        match &r.name {
            SpanName::Upper(s) => {
                scratch.extend(s.bytes().map(|b| b.to_ascii_uppercase()));
            }
            SpanName::Text(s) => {
                let mut end = s.len().min(MAX_NAME);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                scratch.extend_from_slice(&s.as_bytes()[..end]);
            }
            SpanName::Prefixed(p, s) => {
                scratch.extend_from_slice(p.as_bytes());
                scratch.extend_from_slice(s.as_bytes());
            }
        }
        let start_ns = clock.wall_ns(r.start);
        otlp::encode_span_head(
            w,
            &otlp::SpanHead {
                trace_id: &r.trace_id,
                span_id: &r.span_id,
                parent_id: &r.parent_id,
                name: scratch,
                kind: r.kind,
                start_ns,
                end_ns: start_ns.saturating_add(r.took.as_nanos() as u64),
            },
        );
        for (k, v) in r.attrs() {
            match v {
                AttrValue::None => {}
                AttrValue::Static(s) => otlp::encode_attr_str(w, k, s.as_bytes()),
                AttrValue::Str(s) => otlp::encode_attr_str(w, k, s.as_bytes()),
                AttrValue::Int(i) => otlp::encode_attr_int(w, k, *i),
                AttrValue::Ip(ip) => {
                    scratch.clear();
                    push_ip(scratch, *ip);
                    otlp::encode_attr_str(w, k, scratch);
                }
                AttrValue::Hex(h) => {
                    let t = format!("{h:016x}");
                    otlp::encode_attr_str(w, k, t.as_bytes());
                }
            }
        }
        let dropped = usize::from(r.len).saturating_sub(RECORD_ATTRS) as u32;
        scratch.clear();
        let status = match r.error {
            Some((msg, code)) => {
                scratch.extend_from_slice(msg.as_bytes());
                if let Some(c) = code {
                    let _ = write!(scratch, "{c}");
                }
                2
            }
            None => 0,
        };
        otlp::encode_span_tail(w, dropped, status, scratch);
    });
}

/// Encodes `spans` as one `ExportTraceServiceRequest` of the resource `service.name = service`.
pub fn encode_records(service: &str, spans: &[SpanRecord], clock: &Clock) -> Vec<u8> {
    let resource = [attr_str("service.name", service)];
    let mut w = Writer {
        buf: Vec::with_capacity(64 + spans.len() * 320),
    };
    let mut scratch = Vec::with_capacity(128);
    otlp::encode_resource_spans(&mut w, &resource, "furrow", |w| {
        for r in spans {
            encode_record(w, r, clock, &mut scratch);
        }
    });
    w.buf
}

fn export_loop(q: &Queue, s: &Tracing, stats: &ExportStats) {
    // Buffers swapped into the lanes, so that a lane keeps its capacity from batch to batch.
    let mut spare: Vec<Vec<SpanRecord>> = Vec::new();
    let mut taken: Vec<Vec<SpanRecord>> = Vec::new();
    loop {
        let deadline = Instant::now() + s.flush;
        loop {
            let closed = q.closed.load(Relaxed);
            let full = q.lanes.iter().any(|l| lock(l).spans.len() >= q.wake_at);
            let now = Instant::now();
            if closed || full || now >= deadline {
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
        let (mut queued, mut dropped) = (0, 0);
        for lane in &*q.lanes {
            let mut l = lock(lane);
            queued += std::mem::take(&mut l.queued);
            dropped += std::mem::take(&mut l.dropped);
            if !l.spans.is_empty() {
                let fresh = spare.pop().unwrap_or_default();
                taken.push(std::mem::replace(&mut l.spans, fresh));
            }
        }
        stats.queued.fetch_add(queued, Relaxed);
        stats.dropped.fetch_add(dropped, Relaxed);
        for mut spans in taken.drain(..) {
            for chunk in spans.chunks(q.batch) {
                let n = chunk.len() as u64;
                let body = encode_records(&s.service_name, chunk, &Clock::now());
                match post(s, &body) {
                    Ok(()) => stats.sent.fetch_add(n, Relaxed),
                    Err(e) => {
                        tracing::debug!(error = %e, spans = n, "span export failed; dropped");
                        stats.failed.fetch_add(n, Relaxed)
                    }
                };
            }
            spans.clear();
            spare.push(spans);
        }
        if q.closed.load(Relaxed) {
            return;
        }
    }
}

/// POSTs one export request; Ok only for a 2xx answer.
fn post(s: &Tracing, body: &[u8]) -> std::io::Result<()> {
    let host = s.endpoint.strip_prefix("http://").unwrap_or(&s.endpoint);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .ok_or_else(|| std::io::Error::other("endpoint resolves to nothing"))?;
    let timeout = Duration::from_secs(2);
    let mut c = TcpStream::connect_timeout(&addr, timeout)?;
    c.set_write_timeout(Some(timeout))?;
    c.set_read_timeout(Some(timeout))?;
    c.set_nodelay(true)?;
    let mut head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/x-protobuf\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = &s.token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes())?;
    c.write_all(body)?;
    // The status line is all that matters; read at most a little of the answer.
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
        Some(code) => Err(std::io::Error::other(format!("collector answered {code}"))),
        None => Err(std::io::Error::other("no HTTP status from the collector")),
    }
}

/// The process's exporter, made once from the config the process started with (changing
/// `[tracing]` needs a restart). Kept in [`crate::Registries`].
#[derive(Default)]
pub struct TraceHub {
    exporter: OnceLock<Option<Arc<Exporter>>>,
}

impl TraceHub {
    /// The exporter for `config` (None without an enabled `[tracing]`), started by the first call.
    pub fn exporter(&self, config: &Config) -> Option<Arc<Exporter>> {
        self.exporter
            .get_or_init(|| {
                let t = config.tracing()?;
                Exporter::start(t)
                    .map_err(|e| tracing::error!(error = %e, "cannot start the span exporter"))
                    .ok()
            })
            .clone()
    }

    /// The exporter, if one was started.
    pub fn started(&self) -> Option<Arc<Exporter>> {
        self.exporter.get().cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        let mut v4: Vec<std::net::IpAddr> = Vec::new();
        for a in [0u8, 1, 9, 10, 99, 100, 127, 199, 200, 255] {
            for b in [0u8, 5, 10, 42, 100, 255] {
                v4.push(std::net::Ipv4Addr::new(a, b, 255 - b, a / 3).into());
            }
        }
        v4.push(std::net::Ipv6Addr::LOCALHOST.into());
        v4.push("2001:db8::8a2e:370:7334".parse().unwrap());
        v4.push("::ffff:127.0.0.1".parse().unwrap());
        for ip in v4 {
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_parse_as_the_w3c_examples() {
        let p = parse_traceparent(TP).unwrap();
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.span_id[7], 0xb7);
        assert!(p.sampled);
        assert!(
            !parse_traceparent(&TP.replace("-01", "-00"))
                .unwrap()
                .sampled
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        // A future version may append fields after a dash.
        assert!(parse_traceparent(&format!("01{}-what", &TP[2..])).is_some());
    }

    #[test]
    fn sqlcommenter_comments_carry_the_traceparent() {
        let sql = format!("SELECT 1 /*action='x',traceparent='{TP}',tracestate='a%3Db'*/");
        assert_eq!(traceparent_in_sql(&sql), parse_traceparent(TP));
        let sql = format!("/* other */ SELECT /*traceparent='{TP}'*/ 1");
        assert!(traceparent_in_sql(&sql).is_some());
        let sql = format!("SELECT 4 / 2, 'a/b' /*traceparent='{TP}'*/");
        assert_eq!(traceparent_in_sql(&sql), parse_traceparent(TP));
        assert_eq!(traceparent_in_sql("SELECT 1 /"), None);
        assert_eq!(traceparent_in_sql("SELECT 'traceparent=''x'''"), None);
        assert_eq!(traceparent_in_sql("SELECT 1 /* traceparent='bad' */"), None);
        assert_eq!(
            traceparent_in_sql("SELECT 1 /* unterminated traceparent='"),
            None
        );
    }

    fn record(parent: Option<&TraceParent>, start: Instant) -> SpanRecord {
        let mut r = SpanRecord::new(
            parent,
            SpanName::Upper("get"),
            2,
            start,
            Duration::from_micros(250),
        );
        r.attr("db.system", AttrValue::Static("redis"));
        r.attr("furrow.backend", AttrValue::Str(Arc::from("r1")));
        r.attr("client.address", AttrValue::Ip([10, 0, 0, 7].into()));
        r.attr("furrow.digest", AttrValue::Hex(0xab));
        r.attr("furrow.reply_bytes", AttrValue::Int(-3));
        r
    }

    #[test]
    fn records_encode_as_the_spans_they_stand_for() {
        let clock = Clock::now();
        let start = clock.mono - Duration::from_millis(2);
        let parent = parse_traceparent(TP).unwrap();
        let mut a = record(Some(&parent), start);
        a.error = Some(("MySQL error ", Some(1064)));
        let mut b = SpanRecord::new(
            None,
            SpanName::Text(Arc::from("é".repeat(60))),
            3,
            start,
            Duration::ZERO,
        );
        for i in 0..RECORD_ATTRS + 2 {
            b.attr("n", AttrValue::Int(i as i64));
        }
        let c = SpanRecord::new(
            Some(&a.as_parent()),
            SpanName::Prefixed("shard ", Arc::from("s0")),
            3,
            start,
            Duration::from_nanos(7),
        );
        let body = encode_records("furrow-proxy", &[a.clone(), b, c.clone()], &clock);
        let got = otlp::decode_export(&body).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].service_name(), "furrow-proxy");
        let [sa, sb, sc] = &got[0].spans[..] else {
            panic!("{got:?}")
        };
        let start_ns = clock.wall_ns - 2_000_000;
        assert_eq!(
            *sa,
            otlp::Span {
                trace_id: parent.trace_id,
                span_id: a.span_id,
                parent_id: parent.span_id,
                name: "GET".into(),
                kind: 2,
                start_ns,
                end_ns: start_ns + 250_000,
                attrs: vec![
                    attr_str("db.system", "redis"),
                    attr_str("furrow.backend", "r1"),
                    attr_str("client.address", "10.0.0.7"),
                    attr_str("furrow.digest", "00000000000000ab"),
                    attr_int("furrow.reply_bytes", -3),
                ],
                dropped_attrs: 0,
                status: 2,
                status_message: "MySQL error 1064".into(),
            }
        );
        // Cut at 96 bytes on a character boundary; attributes past the record's room are counted.
        assert_eq!(sb.name, "é".repeat(48));
        assert_eq!(sb.parent_id, [0; 8]);
        assert_ne!(sb.trace_id, [0; 16]);
        assert_eq!(sb.attrs.len(), RECORD_ATTRS);
        assert_eq!(sb.dropped_attrs, 2);
        assert_eq!((sb.status, sb.end_ns), (0, start_ns));
        assert_eq!(sc.name, "shard s0");
        assert_eq!((sc.trace_id, sc.parent_id), (parent.trace_id, a.span_id));
        assert_eq!(sc.span_id, c.span_id);
    }

    /// The exporter thread takes the records out of the lanes and POSTs them: a one-connection
    /// HTTP collector on a loopback port reads what arrives.
    #[test]
    fn recorded_spans_reach_the_collector() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = Tracing {
            enabled: true,
            endpoint: format!("http://{}", l.local_addr().unwrap()),
            token: Some("t0k".into()),
            service_name: "svc".into(),
            head_sample_percent: 100,
            slow: Duration::from_secs(1),
            queue_spans: 1000,
            batch_spans: 3,
            flush: Duration::from_millis(20),
        };
        let e = Exporter::start(settings).unwrap();
        for _ in 0..3 {
            e.record(record(None, Instant::now()));
        }
        let mut spans = 0;
        while spans < 3 {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "connection closed early");
                req.extend_from_slice(&buf[..n]);
                let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&req[..end]).to_string();
                assert!(head.contains("Authorization: Bearer t0k"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if req.len() >= end + 4 + len {
                    break req[end + 4..end + 4 + len].to_vec();
                }
            };
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            let got = otlp::decode_export(&body).unwrap();
            assert_eq!(got[0].service_name(), "svc");
            spans += got[0].spans.len();
            assert!(got[0].spans.iter().all(|s| s.name == "GET"));
        }
        assert_eq!(spans, 3);
        let deadline = Instant::now() + Duration::from_secs(10);
        while e.stats.sent.load(Relaxed) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(e.stats.sent.load(Relaxed), 3);
        assert_eq!(e.stats.queued.load(Relaxed), 3);
        assert_eq!(e.stats.dropped.load(Relaxed), 0);
    }

    #[test]
    fn random_ids_differ_and_are_never_zero() {
        let a = random_id::<16>();
        let b = random_id::<16>();
        assert_ne!(a, b);
        assert_ne!(random_id::<8>(), [0; 8]);
    }
}
