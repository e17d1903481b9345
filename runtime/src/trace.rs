//! Span export from the data path: W3C trace context, the sampling decision and the exporter.
//!
//! The executors never wait for the collector. A finished statement or command that is sampled
//! becomes a [`SpanRecord`] — a fixed-size value of ids, `Instant`s, numbers and borrowed shared
//! strings made once per backend, listener, user or digest — handed to [`Exporter::record`], which
//! stores it into the calling core's lane (a [`Batch`] behind a lock only the exporter also takes,
//! once per batch), where it refers to its strings by their *pins* in the batch: each shared
//! string is referenced once per batch, not once per span. The lanes together hold at most
//! `queue_spans` (split evenly); a full lane drops the span and counts it. One exporter thread per process swaps the lanes' buffers out when one holds
//! a batch (`batch_spans`) or every `flush`, encodes OTLP requests (of at most `batch_spans` spans
//! and about [`MAX_REQUEST_BYTES`] each, the lanes' spans as one run) straight from the records
//! (resource and scope once per request, times turned into wall-clock time with one pair of clock
//! reads per batch) and POSTs it as an OTLP/HTTP protobuf `ExportTraceServiceRequest` to
//! `ENDPOINT/v1/traces` over one HTTP/1.1 connection kept alive from batch to batch. A batch the
//! collector refuses or cannot take in time (down, slow, 503) is dropped and counted: there is no
//! retry buffer to grow while a collector is away. A throttling answer (429, 502, 503, 504) pauses
//! exports for its `Retry-After` seconds, any other refusal or failure for a backoff from 100 ms
//! doubling to 30 s; while paused, batches are counted as failed without being encoded, so a saturated
//! collector costs the proxy little more than the records.
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
/// Runs for every statement when tracing is on: a statement too short to hold the shortest such
/// comment (`/*traceparent='` + 55 + `'*/`, [`MIN_TRACEPARENT_COMMENT`] bytes; a point select
/// is shorter) costs one comparison, a longer one without a comment one `memchr` for `/` (a
/// substring search for `/*` would set up a two-way searcher first).
#[inline]
pub fn traceparent_in_sql(sql: &str) -> Option<TraceParent> {
    if sql.len() < MIN_TRACEPARENT_COMMENT {
        return None;
    }
    traceparent_in_comments(sql)
}

fn traceparent_in_comments(sql: &str) -> Option<TraceParent> {
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

/// The length of the shortest sqlcommenter comment carrying a `traceparent`.
pub const MIN_TRACEPARENT_COMMENT: usize = "/*traceparent=''*/".len() + 55;

/// A random non-zero `u64` from a per-thread xorshift generator seeded from the clock, the thread
/// and a counter (span ids need to be unique, not secret). Never zero: the state never is, and
/// multiplying by an odd constant is a bijection that keeps zero alone at zero.
#[inline]
pub fn random_u64() -> u64 {
    random_u64s::<1>()[0]
}

/// `N` draws of [`random_u64`] with one access to the thread's generator.
#[inline]
pub fn random_u64s<const N: usize>() -> [u64; N] {
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
        let mut out = [0u64; N];
        for o in &mut out {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *o = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        }
        s.set(x);
        out
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

/// Head sampling at `head_sample_percent` without a random draw per statement: a countdown to
/// the next sampled statement, drawn from the geometric distribution when it runs out (so each
/// statement is still sampled independently with that probability). One per connection (Redis)
/// or per core (MySQL): not shared between threads.
#[derive(Debug)]
pub struct HeadSampler {
    left: std::cell::Cell<u32>,
    percent: u8,
}

impl HeadSampler {
    /// A sampler keeping `percent` % (100 and more: all, 0: none).
    pub fn new(percent: u8) -> HeadSampler {
        let s = HeadSampler {
            left: std::cell::Cell::new(1),
            percent,
        };
        s.left.set(s.gap());
        s
    }

    /// Whether this statement is head-sampled.
    #[inline]
    pub fn sample(&self) -> bool {
        if self.percent >= 100 {
            return true;
        }
        let l = self.left.get();
        if l > 1 {
            self.left.set(l - 1);
            return false;
        }
        self.next()
    }

    #[cold]
    fn next(&self) -> bool {
        self.left.set(self.gap());
        self.percent > 0
    }

    /// Statements until the next sampled one, the sampled one included: geometric with
    /// success probability `percent / 100` (`u32::MAX` at 0 %).
    fn gap(&self) -> u32 {
        match self.percent {
            0 => u32::MAX,
            100.. => 1,
            p => {
                let q = f64::from(p) / 100.0;
                // Uniform in (0, 1]: 53 random bits, plus one so that ln never sees zero.
                let u = ((random_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                let g = (u.ln() / (1.0 - q).ln()).floor() + 1.0;
                if g >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    g as u32
                }
            }
        }
    }
}

/// Wall-clock ns since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Pre-encoded OTLP bytes shared by many spans: the parts of a span that do not change from one
/// span to the next (a command's or digest's name and attributes, a connection's, a backend's),
/// encoded once when the command, digest, connection or backend is first traced. The exporter
/// writes a span as its ids and times, the bytes of its blobs and a few numbers.
///
/// A blob made by [`BlobBuilder::named`] starts with the span's `name` and `kind` fields (its
/// *head*, written among the span's leading fields); every blob then holds whole `KeyValue`
/// attribute fields (field 9 of a `Span`).
#[derive(Debug)]
pub struct SpanBlob {
    bytes: Box<[u8]>,
    head: usize,
    attrs: u32,
    /// Where the blob is pinned in the batch being filled (see [`Batch`]): the batch's generation
    /// above [`PIN_BITS`], the pin's index below. Written and read by the executor that records
    /// spans (plain loads and stores, no read-modify-write); a stale or foreign stamp only costs
    /// a second pin.
    stamp: AtomicU64,
}

/// A shared [`SpanBlob`] (a thin pointer: a record holds several).
pub type Blob = Arc<SpanBlob>;

impl SpanBlob {
    /// The `name` and `kind` fields (empty for a blob of attributes only).
    pub fn head(&self) -> &[u8] {
        &self.bytes[..self.head]
    }

    /// The attribute fields.
    pub fn attrs(&self) -> &[u8] {
        &self.bytes[self.head..]
    }

    /// How many attributes it holds.
    pub fn attr_count(&self) -> u32 {
        self.attrs
    }
}

/// Encodes a [`SpanBlob`].
#[derive(Debug, Default)]
pub struct BlobBuilder {
    w: Writer,
    head: usize,
    attrs: u32,
}

impl BlobBuilder {
    /// A blob that names its spans: `name` (written as it is; see [`name_upper`] and [`name_cut`])
    /// and the span kind (2 server, 3 client).
    pub fn named(name: &[u8], kind: u8) -> BlobBuilder {
        let mut w = Writer::default();
        w.bytes(5, name);
        w.uint(6, u64::from(kind));
        BlobBuilder {
            head: w.buf.len(),
            w,
            attrs: 0,
        }
    }

    /// A blob of attributes only.
    pub fn attrs() -> BlobBuilder {
        BlobBuilder::default()
    }

    /// A string attribute.
    pub fn str(mut self, key: &str, value: &str) -> BlobBuilder {
        otlp::encode_attr_str(&mut self.w, key, value.as_bytes());
        self.attrs += 1;
        self
    }

    /// An integer attribute.
    pub fn int(mut self, key: &str, value: i64) -> BlobBuilder {
        otlp::encode_attr_int(&mut self.w, key, value);
        self.attrs += 1;
        self
    }

    /// An address attribute, as its `Display` text.
    pub fn ip(self, key: &str, ip: IpAddr) -> BlobBuilder {
        self.str(key, &ip_text(ip))
    }

    /// A 64-bit value as 16 lower-case hex digits.
    pub fn hex(self, key: &str, v: u64) -> BlobBuilder {
        self.str(key, &format!("{v:016x}"))
    }

    /// The shared blob.
    pub fn build(self) -> Blob {
        Arc::new(SpanBlob {
            bytes: self.w.buf.into_boxed_slice(),
            head: self.head,
            attrs: self.attrs,
            stamp: AtomicU64::new(0),
        })
    }
}

/// The longest span name exported (longer texts are cut at a character boundary).
pub const MAX_NAME: usize = 96;

/// `s` upper-cased (ASCII), as a Redis command's span name.
pub fn name_upper(s: &str) -> Vec<u8> {
    s.bytes().map(|b| b.to_ascii_uppercase()).collect()
}

/// `s` cut at [`MAX_NAME`] bytes, at a character boundary.
pub fn name_cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An integer attribute of a span record: its key (the values are the record's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum IntKey {
    /// An unused slot.
    #[default]
    None,
    /// `furrow.reply_bytes`.
    ReplyBytes,
    /// `db.response.rows`.
    Rows,
    /// `db.error_code`.
    ErrorCode,
}

impl IntKey {
    /// The attribute's key.
    pub fn key(self) -> &'static str {
        match self {
            IntKey::None => "",
            IntKey::ReplyBytes => "furrow.reply_bytes",
            IntKey::Rows => "db.response.rows",
            IntKey::ErrorCode => "db.error_code",
        }
    }
}

/// A failed span's status message (a code may follow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorText {
    /// No message.
    None,
    /// `error reply` (a Redis error reply).
    ErrorReply,
    /// `MySQL error ` (followed by the server's code).
    MysqlError,
}

impl ErrorText {
    /// The message.
    pub fn text(self) -> &'static str {
        match self {
            ErrorText::None => "",
            ErrorText::ErrorReply => "error reply",
            ErrorText::MysqlError => "MySQL error ",
        }
    }
}

/// The most blobs a [`SpanRecord`] holds besides its name's.
pub const RECORD_BLOBS: usize = 3;
/// The most integer attributes a [`SpanRecord`] holds.
pub const RECORD_INTS: usize = 3;

/// One finished span as an executor makes it: ids, times as the executor's own `Instant`s (turned
/// into wall-clock time by the exporter, so the data path reads no clock for a span), the blob
/// naming it, up to [`RECORD_BLOBS`] more blobs and [`RECORD_INTS`] integer attributes, and its
/// status. It borrows its blobs: [`Exporter::record`] stores it into the core's lane as a
/// [`Batch`] entry that refers to each blob by its pin in the batch, so that a span costs no
/// reference count (before: an atomic add on the executor and an atomic subtract on the exporter
/// thread per blob and span, on cache lines the other core had just written).
#[derive(Debug, Clone)]
pub struct SpanRecord<'a> {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// Span id.
    pub span_id: [u8; 8],
    /// The parent's span id (all zero for a root).
    pub parent_id: [u8; 8],
    /// When the span started.
    pub start: Instant,
    /// How long it took, in ns.
    pub took_ns: u64,
    name: &'a Blob,
    blobs: [Option<&'a Blob>; RECORD_BLOBS],
    ints: [i64; RECORD_INTS],
    int_keys: [IntKey; RECORD_INTS],
    /// Attributes that did not fit (counted as dropped at export).
    dropped: u8,
    error: Option<ErrorText>,
    code: Option<u16>,
}

impl<'a> SpanRecord<'a> {
    /// A span named by `name` (a blob made by [`BlobBuilder::named`]) that started at `start`
    /// and took `took`, in the caller's trace when there is one (else a new trace); its span id
    /// is fresh.
    #[inline]
    pub fn new(
        parent: Option<&TraceParent>,
        name: &'a Blob,
        start: Instant,
        took: Duration,
    ) -> SpanRecord<'a> {
        // One access to the thread's generator for the span id and a root's trace id.
        let [span_id, t0, t1] = random_u64s::<3>();
        let (trace_id, parent_id) = match parent {
            Some(p) => (p.trace_id, p.span_id),
            None => {
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&t0.to_le_bytes());
                t[8..].copy_from_slice(&t1.to_le_bytes());
                (t, [0; 8])
            }
        };
        SpanRecord {
            trace_id,
            span_id: span_id.to_le_bytes(),
            parent_id,
            start,
            took_ns: took.as_nanos().min(u128::from(u64::MAX)) as u64,
            name,
            blobs: [None; RECORD_BLOBS],
            ints: [0; RECORD_INTS],
            int_keys: [IntKey::None; RECORD_INTS],
            dropped: 0,
            error: None,
            code: None,
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

    /// Adds a blob's attributes (past [`RECORD_BLOBS`] they are counted as dropped at export).
    #[inline]
    pub fn blob(&mut self, b: &'a Blob) {
        match self.blobs.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(b),
            None => {
                self.dropped = self
                    .dropped
                    .saturating_add(u8::try_from(b.attrs).unwrap_or(u8::MAX))
            }
        }
    }

    /// Adds an integer attribute (past [`RECORD_INTS`] it is counted as dropped at export).
    #[inline]
    pub fn int(&mut self, key: IntKey, v: i64) {
        match self.int_keys.iter().position(|k| *k == IntKey::None) {
            Some(i) => {
                self.int_keys[i] = key;
                self.ints[i] = v;
            }
            None => self.dropped = self.dropped.saturating_add(1),
        }
    }

    /// Marks the span failed, with a status message and a code appended to it.
    #[inline]
    pub fn fail(&mut self, text: ErrorText, code: Option<u16>) {
        self.error = Some(text);
        self.code = code;
    }
}

/// The bits of a blob's stamp that hold its pin's index (the rest hold the batch's generation).
const PIN_BITS: u32 = 24;
/// No blob (in a stored span's blob slots).
const NO_PIN: u32 = u32::MAX;

/// A [`SpanRecord`] as a lane stores it: its blobs as indices into its batch's pins.
#[derive(Debug, Clone)]
struct StoredSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: [u8; 8],
    start: Instant,
    took_ns: u64,
    name: u32,
    blobs: [u32; RECORD_BLOBS],
    ints: [i64; RECORD_INTS],
    int_keys: [IntKey; RECORD_INTS],
    dropped: u8,
    error: Option<ErrorText>,
    code: Option<u16>,
}

/// Spans on their way to the collector and the blobs they refer to (*pins*: each blob once per
/// batch, however many of its spans refer to it, found again through the blob's stamp). A batch
/// has a generation unique in the process, so a stamp left by an earlier batch (or another
/// lane's) never matches.
#[derive(Debug)]
pub struct Batch {
    generation: u64,
    spans: Vec<StoredSpan>,
    pins: Vec<Blob>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            generation: Batch::next_generation(),
            spans: Vec::new(),
            pins: Vec::new(),
        }
    }
}

impl Batch {
    fn next_generation() -> u64 {
        // From 1: a fresh blob's stamp (0) matches no batch.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Relaxed) & ((1 << (64 - PIN_BITS)) - 1)
    }

    /// A batch of `spans` (as the exporter would store them).
    pub fn of(spans: &[SpanRecord<'_>]) -> Batch {
        let mut b = Batch::default();
        for r in spans {
            b.push(r);
        }
        b
    }

    /// Spans held.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether it holds no span.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Empties it for reuse (its capacity kept) under a new generation, releasing its pins.
    fn reset(&mut self) {
        self.spans.clear();
        self.pins.clear();
        self.generation = Batch::next_generation();
    }

    /// The pin of `b` in this batch, made when it has none.
    #[inline]
    fn pin(&mut self, b: &Blob) -> u32 {
        let stamp = b.stamp.load(Relaxed);
        if stamp >> PIN_BITS == self.generation {
            let at = (stamp & ((1 << PIN_BITS) - 1)) as usize;
            // A stamp of this generation was written for this blob by this batch's own `pin`.
            if self.pins.get(at).is_some_and(|p| Arc::ptr_eq(p, b)) {
                return at as u32;
            }
        }
        let at = self.pins.len();
        self.pins.push(b.clone());
        if at < 1 << PIN_BITS {
            b.stamp
                .store((self.generation << PIN_BITS) | at as u64, Relaxed);
        }
        at as u32
    }

    /// Stores `r`.
    #[inline]
    fn push(&mut self, r: &SpanRecord<'_>) {
        let name = self.pin(r.name);
        let mut blobs = [NO_PIN; RECORD_BLOBS];
        for (slot, b) in blobs.iter_mut().zip(&r.blobs) {
            if let Some(b) = b {
                *slot = self.pin(b);
            }
        }
        self.spans.push(StoredSpan {
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent_id: r.parent_id,
            start: r.start,
            took_ns: r.took_ns,
            name,
            blobs,
            ints: r.ints,
            int_keys: r.int_keys,
            dropped: r.dropped,
            error: r.error,
            code: r.code,
        });
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
    /// Spans in batches the collector refused or could not take, and spans dropped (or not
    /// made) while exports were paused after such a batch.
    pub failed: AtomicU64,
}

/// One per-core span buffer: the records waiting for the exporter and the counts it has not
/// taken yet (plain integers: only the buffer's lock guards them).
#[derive(Default)]
struct Lane {
    batch: Batch,
    queued: u64,
    dropped: u64,
    /// Spans not made while exports were paused (counted as failed).
    unmade: u64,
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
    /// Exports are paused (the collector asked to wait, or cannot be reached): the executors
    /// make no spans meanwhile, only count them.
    paused: AtomicBool,
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
            paused: AtomicBool::new(false),
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

    /// Whether a finished statement is traced (see the module documentation): the head-sampling
    /// countdown `head` is asked only when nothing else decides.
    #[inline]
    pub fn keep(
        &self,
        parent: Option<&TraceParent>,
        took: Duration,
        error: bool,
        head: &HeadSampler,
    ) -> bool {
        (parent.is_some_and(|p| p.sampled) || error || took >= self.settings.slow || head.sample())
            && self.accepting()
    }

    /// Whether spans are made now: not while exports are paused (the collector asked to wait or
    /// cannot be reached), when a span would only be dropped; it is counted as failed instead.
    /// Ask it only for a span that would otherwise be made (one load of a flag).
    #[inline]
    pub fn accepting(&self) -> bool {
        if !self.queue.paused.load(Relaxed) {
            return true;
        }
        self.count_unmade();
        false
    }

    #[cold]
    fn count_unmade(&self) {
        let q = &*self.queue;
        lock(&q.lanes[lane_index() & (q.lanes.len() - 1)]).unmade += 1;
    }

    /// A head sampler at this exporter's `head_sample_percent` (one per connection or core).
    pub fn head_sampler(&self) -> HeadSampler {
        HeadSampler::new(self.settings.head_sample_percent)
    }

    /// Queues a span into the calling core's lane; never blocks on the exporter (a full lane
    /// drops the span and counts it). The lane's lock is the executor's own but for the moment
    /// the exporter swaps the lane's buffer out.
    #[inline]
    pub fn record(&self, span: SpanRecord<'_>) {
        let q = &*self.queue;
        let lane = &q.lanes[lane_index() & (q.lanes.len() - 1)];
        let mut l = lock(lane);
        if l.batch.len() >= q.lane_cap {
            l.dropped += 1;
            return;
        }
        l.batch.push(&span);
        l.queued += 1;
        let full = l.batch.len() == q.wake_at;
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

/// The bytes of `v` as a varint: ceil(bits / 7), as `(bits * 9 + 64) / 64` (no division).
fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    (bits * 9 + 64) >> 6
}

/// The body length of an integer attribute's `KeyValue` (key under 128 bytes).
fn int_attr_len(key: &str, v: i64) -> usize {
    // 1: key (tag, length, bytes); 2: AnyValue (tag, length, 3: tag and varint).
    2 + key.len() + 2 + 1 + varint_len(v as u64)
}

/// Writes into a slice sized beforehand: plain stores and copies, no capacity checks.
struct Cursor<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.out[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.out[self.at] = b;
        self.at += 1;
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }
}

/// Appends one record's `Span` message to a request being written: its length first (computed
/// from the parts, so nothing is moved after it is written and the buffer is grown once), ids,
/// the name blob's head, times, the blobs' attribute bytes, the integers, the dropped count and
/// the status — the fields and order `codec::otlp::encode_span` writes. `pins` are the blobs of
/// the record's batch.
fn encode_stored(w: &mut Writer, r: &StoredSpan, pins: &[Blob], clock: &Clock) {
    let root = r.parent_id == [0; 8];
    let name = &pins[r.name as usize];
    let (head, named) = (name.head(), name.attrs());
    let blobs = || {
        r.blobs
            .iter()
            .filter(|&&b| b != NO_PIN)
            .map(|&b| &pins[b as usize])
    };
    let mut len = 28 + if root { 0 } else { 10 } + head.len() + 18 + named.len();
    for b in blobs() {
        len += b.attrs().len();
    }
    for (k, v) in r.int_keys.iter().zip(r.ints) {
        if *k != IntKey::None {
            len += 2 + int_attr_len(k.key(), v);
        }
    }
    if r.dropped > 0 {
        len += 1 + varint_len(u64::from(r.dropped));
    }
    // "MySQL error 1064": the code's digits after the text, without `fmt`.
    let mut tmp = [0u8; 20];
    let digits: &[u8] = match r.code {
        Some(code) if r.error.is_some() => codec::decimal(u64::from(code), &mut tmp),
        _ => &[],
    };
    let mut status_len = 0;
    if let Some(text) = r.error {
        let n = text.text().len() + digits.len();
        status_len = 2 + if n > 0 {
            1 + varint_len(n as u64) + n
        } else {
            0
        };
        len += 1 + varint_len(status_len as u64) + status_len;
    }
    let start = w.buf.len();
    let total = 1 + varint_len(len as u64) + len;
    w.buf.resize(start + total, 0);
    let mut c = Cursor {
        out: &mut w.buf[start..],
        at: 0,
    };
    c.byte(0x12); // ScopeSpans.spans, length-delimited
    c.varint(len as u64);
    let mut ids = [0u8; 28];
    ids[0] = 0x0a; // trace_id
    ids[1] = 16;
    ids[2..18].copy_from_slice(&r.trace_id);
    ids[18] = 0x12; // span_id
    ids[19] = 8;
    ids[20..28].copy_from_slice(&r.span_id);
    c.put(&ids);
    if !root {
        let mut p = [0u8; 10];
        p[0] = 0x22; // parent_span_id
        p[1] = 8;
        p[2..].copy_from_slice(&r.parent_id);
        c.put(&p);
    }
    c.put(head);
    let start_ns = clock.wall_ns(r.start);
    let mut times = [0u8; 18];
    times[0] = 0x39; // start_time_unix_nano, fixed64
    times[1..9].copy_from_slice(&start_ns.to_le_bytes());
    times[9] = 0x41; // end_time_unix_nano, fixed64
    times[10..].copy_from_slice(&start_ns.saturating_add(r.took_ns).to_le_bytes());
    c.put(&times);
    c.put(named);
    for b in blobs() {
        c.put(b.attrs());
    }
    for (k, v) in r.int_keys.iter().zip(r.ints) {
        if *k != IntKey::None {
            let key = k.key();
            c.put(&[0x4a, int_attr_len(key, v) as u8, 0x0a, key.len() as u8]);
            c.put(key.as_bytes());
            c.put(&[0x12, 1 + varint_len(v as u64) as u8, 0x18]);
            c.varint(v as u64);
        }
    }
    if r.dropped > 0 {
        c.byte(0x50); // dropped_attributes_count
        c.varint(u64::from(r.dropped));
    }
    if let Some(text) = r.error {
        c.byte(0x7a); // status
        c.varint(status_len as u64);
        let (t, d) = (text.text().as_bytes(), digits);
        if !t.is_empty() || !d.is_empty() {
            c.byte(0x12); // message
            c.varint((t.len() + d.len()) as u64);
            c.put(t);
            c.put(d);
        }
        c.put(&[0x18, 2]); // code: error
    }
    debug_assert_eq!(c.at, total);
}

/// Appends one record's `Span` message to a request being written (see `encode_stored`).
pub fn encode_record(w: &mut Writer, r: &SpanRecord<'_>, clock: &Clock) {
    let b = Batch::of(std::slice::from_ref(r));
    encode_stored(w, &b.spans[0], &b.pins, clock);
}

/// Encodes `spans` as one `ExportTraceServiceRequest` of the resource `service.name = service`.
pub fn encode_records(service: &str, spans: &[SpanRecord<'_>], clock: &Clock) -> Vec<u8> {
    let mut buf = Vec::new();
    let batch = Batch::of(spans);
    let (start, _) = encode_batches(
        &mut buf,
        service,
        &mut batch_spans(std::slice::from_ref(&batch)),
        clock,
        usize::MAX,
        usize::MAX,
    );
    buf.split_off(start)
}

/// The spans of `batches` in order, each with its batch's pins.
fn batch_spans(batches: &[Batch]) -> impl Iterator<Item = (&StoredSpan, &[Blob])> {
    batches
        .iter()
        .flat_map(|b| b.spans.iter().map(move |s| (s, &b.pins[..])))
}

/// Encodes the next spans of `spans` as one `ExportTraceServiceRequest` into `buf` (cleared; its
/// capacity is kept from batch to batch): at most `max_spans`, and up to the one that brings the
/// spans' bytes to `max_bytes`. Returns the request's offset in `buf` and how many spans it holds
/// (0: `spans` was empty). The spans are written first, after room left for the resource and
/// scope, whose nested lengths are then known: no span is moved after it is written. The
/// exporter cuts its requests so, below the collectors' body limits (`furrow control` takes
/// 2 MiB) whatever the spans' sizes.
fn encode_batches<'b>(
    buf: &mut Vec<u8>,
    service: &str,
    spans: &mut impl Iterator<Item = (&'b StoredSpan, &'b [Blob])>,
    clock: &Clock,
    max_spans: usize,
    max_bytes: usize,
) -> (usize, usize) {
    let resource = [attr_str("service.name", service)];
    // The longest head any batch could need (its lengths' varints at their widest).
    let room = otlp::resource_spans_head(&resource, "furrow", usize::MAX >> 8).len();
    buf.clear();
    buf.resize(room, 0);
    let mut w = Writer {
        buf: std::mem::take(buf),
    };
    let mut taken = 0;
    while taken < max_spans {
        let Some((r, pins)) = spans.next() else { break };
        encode_stored(&mut w, r, pins, clock);
        taken += 1;
        if w.buf.len() - room >= max_bytes {
            break;
        }
    }
    *buf = w.buf;
    let head = otlp::resource_spans_head(&resource, "furrow", buf.len() - room);
    let start = room - head.len();
    buf[start..room].copy_from_slice(&head);
    (start, taken)
}

fn export_loop(q: &Queue, s: &Tracing, stats: &ExportStats) {
    // Buffers swapped into the lanes, so that a lane keeps its capacity from batch to batch.
    let mut spare: Vec<Batch> = Vec::new();
    let mut taken: Vec<Batch> = Vec::new();
    let mut body = Vec::new();
    let mut sender = Sender::new(s);
    loop {
        let mut deadline = Instant::now() + s.flush;
        if let Some(until) = sender.paused_until {
            deadline = deadline.min(until);
        }
        loop {
            let closed = q.closed.load(Relaxed);
            let full = q.lanes.iter().any(|l| lock(l).batch.len() >= q.wake_at);
            let now = Instant::now();
            if closed || full || now >= deadline {
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
        if !sender.paused(Instant::now()) {
            q.paused.store(false, Relaxed);
        }
        let (mut queued, mut dropped, mut unmade) = (0, 0, 0);
        for lane in &*q.lanes {
            let mut l = lock(lane);
            queued += std::mem::take(&mut l.queued);
            dropped += std::mem::take(&mut l.dropped);
            unmade += std::mem::take(&mut l.unmade);
            if !l.batch.is_empty() {
                let fresh = spare.pop().unwrap_or_default();
                taken.push(std::mem::replace(&mut l.batch, fresh));
            }
        }
        stats.queued.fetch_add(queued, Relaxed);
        stats.dropped.fetch_add(dropped, Relaxed);
        stats.failed.fetch_add(unmade, Relaxed);
        // The lanes' spans as one run, cut into requests by `batch_spans` and the bytes cap (not a
        // request per lane: with many cores each lane holds few spans).
        let mut left: usize = taken.iter().map(Batch::len).sum();
        let mut spans = batch_spans(&taken);
        while left > 0 {
            // While the collector has asked to wait (or cannot be reached), batches are
            // counted as failed without being encoded: a saturated collector costs the
            // proxy nothing but the records.
            if sender.paused(Instant::now()) {
                stats.failed.fetch_add(left as u64, Relaxed);
                break;
            }
            let (at, in_request) = encode_batches(
                &mut body,
                &s.service_name,
                &mut spans,
                &Clock::now(),
                q.batch,
                MAX_REQUEST_BYTES,
            );
            if in_request == 0 {
                break;
            }
            left -= in_request;
            let n = in_request as u64;
            match sender.send(&body[at..]) {
                Ok(()) => stats.sent.fetch_add(n, Relaxed),
                Err(e) => {
                    tracing::debug!(error = %e, spans = n, "span export failed; dropped");
                    // Every failure starts a pause (`Sender::send`).
                    q.paused.store(true, Relaxed);
                    stats.failed.fetch_add(n, Relaxed)
                }
            };
        }
        drop(spans);
        // The pins are released here, a reference count per blob and batch (not per span).
        for mut b in taken.drain(..) {
            b.reset();
            spare.push(b);
        }
        if q.closed.load(Relaxed) {
            return;
        }
    }
}

/// The spans' bytes past which an export request is cut (besides `batch_spans`): 1 MiB, half of
/// `furrow control`'s body limit and far below other collectors' (the OpenTelemetry Collector
/// takes 20 MiB by default), so a batch of long MySQL digests is never refused for its size.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Connect, write and read timeout of one export request.
const POST_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause after a failure the collector gave no `Retry-After` for (doubled per further
/// failure in a row, up to [`MAX_PAUSE`]).
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause (a longer `Retry-After` is cut to it).
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// Response head bytes read, at most.
const MAX_RESPONSE_HEAD: usize = 8 << 10;
/// A response body longer than this is not read: the connection is closed instead.
const MAX_RESPONSE_BODY: usize = 64 << 10;

/// The exporter's HTTP/1.1 client: one connection to the collector kept alive from request to
/// request (a fresh connection per batch cost a handshake and a teardown each), and a pause after
/// a refusal. A 429, 502, 503 or 504 pauses exports for the answer's `Retry-After` seconds (the
/// collector of `furrow control` says 1 when its ingest queue is full), any other refusal or
/// failure for a backoff doubling from [`FIRST_PAUSE`]; during a pause batches are dropped and
/// counted unencoded, as the OTLP specification asks of exporters facing a throttling receiver.
struct Sender {
    host: String,
    /// The request head up to (not including) `Content-Length`.
    head: Vec<u8>,
    conn: Option<TcpStream>,
    paused_until: Option<Instant>,
    backoff: Duration,
    buf: Vec<u8>,
}

/// What the collector answered.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    /// The connection may carry the next request.
    keep: bool,
}

impl Sender {
    fn new(s: &Tracing) -> Sender {
        let host = s
            .endpoint
            .strip_prefix("http://")
            .unwrap_or(&s.endpoint)
            .to_string();
        let mut head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\n"
        );
        if let Some(t) = &s.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        Sender {
            host,
            head: head.into_bytes(),
            conn: None,
            paused_until: None,
            backoff: FIRST_PAUSE,
            buf: Vec::new(),
        }
    }

    /// Whether exports wait at `now`.
    fn paused(&mut self, now: Instant) -> bool {
        match self.paused_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.paused_until = None;
                false
            }
            None => false,
        }
    }

    /// POSTs one export request; Ok only for a 2xx answer. A refusal or a failure starts a pause.
    /// The head and the body go in one vectored write where the socket takes it (one `writev`,
    /// one segment with `TCP_NODELAY`, where they used to go in two).
    fn send(&mut self, body: &[u8]) -> std::io::Result<()> {
        let reused = self.conn.is_some();
        let mut r = self.exchange(body);
        // A kept connection the collector closed while idle fails at once, before any answer:
        // one more try on a fresh connection.
        if reused && matches!(&r, Err((_, false))) {
            r = self.exchange(body);
        }
        match r {
            Ok(a) if (200..300).contains(&a.status) => {
                self.backoff = FIRST_PAUSE;
                Ok(())
            }
            Ok(a) => {
                // A throttling answer says how long to wait; any other refusal (a token the
                // collector does not take, a body it cannot read) would refuse the next batch
                // too: the backoff, rather than encoding and sending batches to be refused.
                let throttled = matches!(a.status, 429 | 502 | 503 | 504);
                self.pause(a.retry_after.filter(|_| throttled));
                Err(std::io::Error::other(format!(
                    "collector answered {}",
                    a.status
                )))
            }
            Err((e, _)) => {
                self.pause(None);
                Err(e)
            }
        }
    }

    fn pause(&mut self, retry_after: Option<Duration>) {
        let wait = match retry_after {
            Some(d) => d.min(MAX_PAUSE),
            None => {
                let d = self.backoff;
                self.backoff = (d * 2).min(MAX_PAUSE);
                d
            }
        };
        self.paused_until = Some(Instant::now() + wait);
    }

    /// One request and its answer; an error says whether any of the answer had arrived.
    fn exchange(&mut self, body: &[u8]) -> Result<Answer, (std::io::Error, bool)> {
        let out = self.exchange_on(body);
        match &out {
            Ok(a) if a.keep => {}
            _ => self.conn = None,
        }
        out
    }

    fn exchange_on(&mut self, body: &[u8]) -> Result<Answer, (std::io::Error, bool)> {
        let c = match &mut self.conn {
            Some(c) => c,
            None => self
                .conn
                .insert(connect(&self.host).map_err(|e| (e, false))?),
        };
        let mut head = std::mem::take(&mut self.buf);
        head.clear();
        head.extend_from_slice(&self.head);
        head.extend_from_slice(b"Content-Length: ");
        head.extend_from_slice(codec::decimal(body.len() as u64, &mut [0u8; 20]));
        head.extend_from_slice(b"\r\n\r\n");
        let sent = write_both(c, &head, body);
        self.buf = head;
        sent.map_err(|e| (e, false))?;
        read_answer(c, &mut self.buf)
    }
}

/// Writes `head` and then `body` whole, with vectored writes.
fn write_both(c: &mut impl Write, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let mut slices = [std::io::IoSlice::new(head), std::io::IoSlice::new(body)];
    let mut rest = &mut slices[..];
    let mut left = head.len() + body.len();
    while left > 0 {
        match c.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                left -= n;
                std::io::IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn connect(host: &str) -> std::io::Result<TcpStream> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .ok_or_else(|| std::io::Error::other("endpoint resolves to nothing"))?;
    let c = TcpStream::connect_timeout(&addr, POST_TIMEOUT)?;
    c.set_write_timeout(Some(POST_TIMEOUT))?;
    c.set_read_timeout(Some(POST_TIMEOUT))?;
    c.set_nodelay(true)?;
    Ok(c)
}

/// Reads an HTTP/1.1 answer's head (parsed by `codec::otlp::http`) and, when its length is given
/// and small, its body (so the connection can carry the next request).
fn read_answer(c: &mut impl Read, buf: &mut Vec<u8>) -> Result<Answer, (std::io::Error, bool)> {
    buf.clear();
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = c.read(&mut chunk).map_err(|e| (e, !buf.is_empty()))?;
        if n == 0 {
            let e = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the collector closed the connection without a complete answer",
            );
            return Err((e, !buf.is_empty()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err((
                std::io::Error::other("the collector's answer head is too long"),
                true,
            ));
        }
    };
    let h = codec::otlp::http::parse_answer_head(&buf[..end])
        .map_err(|e| (std::io::Error::other(e), true))?;
    let mut a = Answer {
        status: h.status,
        retry_after: h.retry_after,
        keep: h.reusable,
    };
    match h.content_length {
        Some(len) if a.keep && len <= MAX_RESPONSE_BODY => {
            let mut left = len.saturating_sub(buf.len() - end);
            while left > 0 {
                let n = c
                    .read(&mut chunk[..left.min(1024)])
                    .map_err(|e| (e, true))?;
                if n == 0 {
                    a.keep = false;
                    break;
                }
                left -= n;
            }
        }
        _ => a.keep = false,
    }
    Ok(a)
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
        // The shortest comment is found; one byte less cannot be one.
        let sql = format!("/*traceparent='{TP}'*/");
        assert_eq!(sql.len(), MIN_TRACEPARENT_COMMENT);
        assert_eq!(traceparent_in_sql(&sql), parse_traceparent(TP));
        assert_eq!(traceparent_in_sql(&sql[1..]), None);
        assert_eq!(traceparent_in_sql("SELECT 'traceparent=''x'''"), None);
        assert_eq!(traceparent_in_sql("SELECT 1 /* traceparent='bad' */"), None);
        assert_eq!(
            traceparent_in_sql("SELECT 1 /* unterminated traceparent='"),
            None
        );
    }

    /// The blobs of [`record`]'s spans (shared by every test, as a core shares its blobs).
    static BLOBS: std::sync::LazyLock<(Blob, Blob)> = std::sync::LazyLock::new(|| {
        let name = BlobBuilder::named(&name_upper("get"), 2)
            .str("db.system", "redis")
            .build();
        let conn = BlobBuilder::attrs()
            .str("furrow.backend", "r1")
            .ip("client.address", [10, 0, 0, 7].into())
            .hex("furrow.digest", 0xab)
            .build();
        (name, conn)
    });

    fn record(parent: Option<&TraceParent>, start: Instant) -> SpanRecord<'static> {
        let (name, conn) = &*BLOBS;
        let mut r = SpanRecord::new(parent, name, start, Duration::from_micros(250));
        r.blob(conn);
        r.int(IntKey::ReplyBytes, -3);
        r
    }

    #[test]
    fn varint_lengths_match_the_writer() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            1 << 35,
            u64::MAX >> 1,
            u64::MAX,
        ] {
            let mut w = Writer::default();
            w.varint(v);
            assert_eq!(varint_len(v), w.buf.len(), "{v}");
        }
        for bits in 0..64 {
            for v in [1u64 << bits, (1u64 << bits) - 1] {
                let mut w = Writer::default();
                w.varint(v);
                assert_eq!(varint_len(v), w.buf.len(), "{v}");
            }
        }
    }

    #[test]
    fn records_are_small() {
        assert!(std::mem::size_of::<SpanRecord<'_>>() <= 128);
        assert!(std::mem::size_of::<StoredSpan>() <= 112);
    }

    /// A batch refers to each blob once however many spans use it (no reference count per span),
    /// and batches filled in turn (two lanes, whose stamps on a shared blob overwrite each other)
    /// pin a blob again rather than mistake another batch's pin for theirs.
    #[test]
    fn a_batch_pins_each_blob_once() {
        let name = BlobBuilder::named(b"GET", 2)
            .str("db.system", "redis")
            .build();
        let conn = BlobBuilder::attrs()
            .str("client.address", "10.0.0.1")
            .build();
        let other = BlobBuilder::attrs().str("furrow.backend", "r2").build();
        let clock = Clock::now();
        let recs: Vec<_> = (0..50)
            .map(|i| {
                let mut r = SpanRecord::new(None, &name, clock.mono, Duration::from_micros(i));
                r.blob(&conn);
                if i % 2 == 0 {
                    r.blob(&other);
                }
                r
            })
            .collect();
        let one = Batch::of(&recs);
        assert_eq!((one.len(), one.pins.len()), (50, 3));
        assert_eq!(Arc::strong_count(&name), 2);
        let (mut a, mut b) = (Batch::default(), Batch::default());
        for (i, r) in recs.iter().enumerate() {
            if i % 3 == 0 { b.push(r) } else { a.push(r) }
        }
        // Each batch overwrote the other's stamps, so both pinned blobs again.
        assert!(a.pins.len() > 3 && b.pins.len() > 3);
        // Whatever the pins, each span encodes as itself.
        let mut want = Writer::default();
        for r in recs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, r)| r)
        {
            encode_record(&mut want, r, &clock);
        }
        let mut got = Writer::default();
        for (r, pins) in batch_spans(std::slice::from_ref(&a)) {
            encode_stored(&mut got, r, pins, &clock);
        }
        assert_eq!(got.buf, want.buf);
        // Released pins release the blobs.
        drop((one, a, b));
        assert_eq!(Arc::strong_count(&name), 1);
        assert_eq!(Arc::strong_count(&other), 1);
    }

    #[test]
    fn requests_are_cut_by_their_spans_bytes() {
        let clock = Clock::now();
        let recs: Vec<_> = (0..10).map(|_| record(None, clock.mono)).collect();
        let mut one = Writer::default();
        encode_record(&mut one, &recs[0], &clock);
        let size = one.buf.len();
        let mut buf = Vec::new();
        // Two batches, as two lanes give them: a request runs on from one to the next.
        let batches = [Batch::of(&recs[..4]), Batch::of(&recs[4..])];
        // Cut at the span that reaches the limit: exactly three spans' bytes, then a little more.
        for (max, want) in [(3 * size, 3), (3 * size + 1, 4), (1, 1), (usize::MAX, 10)] {
            let mut spans = batch_spans(&batches);
            let (at, n) = encode_batches(&mut buf, "svc", &mut spans, &clock, usize::MAX, max);
            assert_eq!(n, want, "max {max}");
            let got = otlp::decode_export(&buf[at..]).unwrap();
            assert_eq!(got[0].spans.len(), want);
            let ids: Vec<_> = got[0].spans.iter().map(|s| s.span_id).collect();
            let sent: Vec<_> = recs[..want].iter().map(|r| r.span_id).collect();
            assert_eq!(ids, sent);
            // The same request as the uncut encoder gives for those spans.
            assert_eq!(buf[at..], encode_records("svc", &recs[..want], &clock));
        }
    }

    #[test]
    fn records_encode_as_the_spans_they_stand_for() {
        let clock = Clock::now();
        let start = clock.mono - Duration::from_millis(2);
        let parent = parse_traceparent(TP).unwrap();
        let mut a = record(Some(&parent), start);
        a.int(IntKey::ErrorCode, 1064);
        a.fail(ErrorText::MysqlError, Some(1064));
        // A long name cut at 96 bytes on a character boundary; blobs and integers past the
        // record's room counted as dropped; a failure without a message.
        let long = "é".repeat(60);
        let long_name = BlobBuilder::named(name_cut(&long).as_bytes(), 3).build();
        let mut b = SpanRecord::new(None, &long_name, start, Duration::ZERO);
        let extra: Vec<Blob> = (0..RECORD_BLOBS + 1)
            .map(|i| {
                BlobBuilder::attrs()
                    .int("n", i as i64)
                    .int("m", i as i64)
                    .build()
            })
            .collect();
        for x in &extra {
            b.blob(x);
        }
        for i in 0..RECORD_INTS + 2 {
            b.int(IntKey::Rows, i as i64);
        }
        b.fail(ErrorText::None, None);
        let shard = BlobBuilder::named(b"shard s0", 3).build();
        let c = SpanRecord::new(Some(&a.as_parent()), &shard, start, Duration::from_nanos(7));
        let recs = [a.clone(), b, c.clone()];
        let body = encode_records("furrow-proxy", &recs, &clock);
        // The head written in front of the spans is what the nested writer gives.
        let mut nested = Writer::default();
        let resource = [attr_str("service.name", "furrow-proxy")];
        otlp::encode_resource_spans(&mut nested, &resource, "furrow", |w| {
            for r in &recs {
                encode_record(w, r, &clock);
            }
        });
        assert_eq!(body, nested.buf);
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
                    attr_int("db.error_code", 1064),
                ],
                dropped_attrs: 0,
                status: 2,
                status_message: "MySQL error 1064".into(),
            }
        );
        // Each span written by the owned-span encoder gives the same bytes (lengths of one and
        // two bytes, a parent or none, dropped counts, status with and without a message).
        for (decoded, rec) in got[0].spans.iter().zip(&recs) {
            let mut owned = Writer::default();
            owned.message(2, |w| otlp::encode_span(w, decoded));
            let mut ours = Writer::default();
            encode_record(&mut ours, rec, &clock);
            assert_eq!(ours.buf, owned.buf, "{decoded:?}");
        }
        assert_eq!(sb.name, "é".repeat(48));
        assert_eq!(sb.kind, 3);
        assert_eq!(sb.parent_id, [0; 8]);
        assert_ne!(sb.trace_id, [0; 16]);
        let want: Vec<_> = (0..RECORD_BLOBS as i64)
            .flat_map(|i| [attr_int("n", i), attr_int("m", i)])
            .chain((0..RECORD_INTS as i64).map(|i| attr_int("db.response.rows", i)))
            .collect();
        assert_eq!(sb.attrs, want);
        assert_eq!(sb.dropped_attrs, 2 + 2);
        assert_eq!((sb.status, sb.end_ns), (2, start_ns));
        assert_eq!(sb.status_message, "");
        assert_eq!(sc.name, "shard s0");
        assert_eq!((sc.trace_id, sc.parent_id), (parent.trace_id, a.span_id));
        assert_eq!(sc.span_id, c.span_id);
        assert_eq!((sc.status, sc.end_ns), (0, start_ns + 7));
    }

    #[test]
    fn head_sampling_keeps_its_share() {
        let all = HeadSampler::new(100);
        assert!((0..1000).all(|_| all.sample()));
        let none = HeadSampler::new(0);
        assert!(!(0..100_000).any(|_| none.sample()));
        // 1 % of a million: 10,000 expected, standard deviation ~99.5; six deviations either side.
        let one = HeadSampler::new(1);
        let n = (0..1_000_000).filter(|_| one.sample()).count();
        assert!((9_400..=10_600).contains(&n), "{n}");
        let half = HeadSampler::new(50);
        let n = (0..100_000).filter(|_| half.sample()).count();
        assert!((49_000..=51_000).contains(&n), "{n}");
    }

    fn settings_for(l: &std::net::TcpListener, batch: usize) -> Tracing {
        Tracing {
            enabled: true,
            endpoint: format!("http://{}", l.local_addr().unwrap()),
            token: Some("t0k".into()),
            service_name: "svc".into(),
            head_sample_percent: 100,
            slow: Duration::from_secs(1),
            queue_spans: 1000,
            batch_spans: batch,
            flush: Duration::from_millis(20),
        }
    }

    /// Reads one export request from `c` (None when the exporter closed the connection first)
    /// and returns the spans' count.
    fn read_request(c: &mut TcpStream) -> Option<usize> {
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        let body = loop {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                assert!(req.is_empty(), "connection closed inside a request");
                return None;
            }
            req.extend_from_slice(&buf[..n]);
            let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&req[..end]).to_string();
            assert!(head.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("Authorization: Bearer t0k"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            if req.len() >= end + 4 + len {
                assert_eq!(req.len(), end + 4 + len, "one request at a time");
                break req[end + 4..].to_vec();
            }
        };
        let got = otlp::decode_export(&body).unwrap();
        assert_eq!(got[0].service_name(), "svc");
        assert!(got[0].spans.iter().all(|s| s.name == "GET"));
        Some(got[0].spans.len())
    }

    fn wait_for(what: &AtomicU64, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while what.load(Relaxed) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The exporter thread takes the records out of the lanes and POSTs them. This collector
    /// closes each connection after one answer (as an HTTP/1.0 server might): every batch after
    /// the first finds its kept connection closed and goes again on a fresh one.
    #[test]
    fn recorded_spans_reach_the_collector() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = Exporter::start(settings_for(&l, 3)).unwrap();
        let mut spans = 0;
        for round in 0..3 {
            for _ in 0..3 {
                e.record(record(None, Instant::now()));
            }
            let (mut c, _) = l.accept().unwrap();
            spans += read_request(&mut c).unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            drop(c);
            wait_for(&e.stats.sent, 3 * (round + 1));
        }
        assert_eq!(spans, 9);
        assert_eq!(e.stats.sent.load(Relaxed), 9);
        assert_eq!(e.stats.queued.load(Relaxed), 9);
        assert_eq!(e.stats.dropped.load(Relaxed), 0);
        assert_eq!(e.stats.failed.load(Relaxed), 0);
    }

    /// Spans recorded faster than a request takes them are sent in requests of at most
    /// `batch_spans` spans, none lost, each decoding whole.
    #[test]
    fn a_full_lane_is_sent_in_batches() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = settings_for(&l, 3);
        s.flush = Duration::from_millis(200);
        s.queue_spans = 4096;
        let e = Exporter::start(s).unwrap();
        for _ in 0..7 {
            e.record(record(None, Instant::now()));
        }
        let (mut c, _) = l.accept().unwrap();
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < 7 {
            sizes.push(read_request(&mut c).expect("the connection stays open"));
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        }
        // However the exporter's wake-ups fell between the records (a lane holding a batch
        // wakes it): no request over the batch size, so at least three.
        assert!(sizes.iter().all(|&n| (1..=3).contains(&n)), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 7);
        wait_for(&e.stats.sent, 7);
        assert_eq!(e.stats.failed.load(Relaxed), 0);
    }

    /// Batch after batch goes over one kept-alive connection (one accept for several requests).
    #[test]
    fn batches_share_one_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = Exporter::start(settings_for(&l, 2)).unwrap();
        let e2 = e.clone();
        let feeder = std::thread::spawn(move || {
            for _ in 0..4 {
                e2.record(record(None, Instant::now()));
                e2.record(record(None, Instant::now()));
                std::thread::sleep(Duration::from_millis(60));
            }
        });
        let (mut c, _) = l.accept().unwrap();
        let mut spans = 0;
        let mut requests = 0;
        while spans < 8 {
            spans += read_request(&mut c).expect("the connection stays open");
            requests += 1;
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 2\r\n\r\n\x0a\x00")
                .unwrap();
        }
        feeder.join().unwrap();
        assert!(requests >= 2, "{requests} requests");
        wait_for(&e.stats.sent, 8);
        assert_eq!(e.stats.sent.load(Relaxed), 8);
        l.set_nonblocking(true).unwrap();
        assert!(l.accept().is_err(), "no second connection");
    }

    /// A 503 with `Retry-After: 3` pauses exports for three seconds: the batches of that time are
    /// counted as failed and never reach the collector; the first batch after it is sent.
    #[test]
    fn a_throttling_answer_pauses_exports() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = Exporter::start(settings_for(&l, 1)).unwrap();
        e.record(record(None, Instant::now()));
        let (mut c, _) = l.accept().unwrap();
        assert_eq!(read_request(&mut c), Some(1));
        let refused_at = Instant::now();
        c.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nfull",
        )
        .unwrap();
        wait_for(&e.stats.failed, 1);
        // The executors make no span meanwhile (one counted here); records already made are
        // counted without being sent.
        assert!(!e.accepting());
        for _ in 0..5 {
            e.record(record(None, Instant::now()));
        }
        wait_for(&e.stats.failed, 7);
        assert_eq!(
            e.stats.failed.load(Relaxed),
            7,
            "refused, one unmade, five paused"
        );
        assert!(
            refused_at.elapsed() < Duration::from_secs(3),
            "counted during the pause"
        );
        let deadline = Instant::now() + Duration::from_secs(8);
        while !e.accepting() {
            assert!(Instant::now() < deadline, "the pause ends");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            refused_at.elapsed() >= Duration::from_millis(2900),
            "{:?}",
            refused_at.elapsed()
        );
        let unmade = e.stats.failed.load(Relaxed) - 7;
        e.record(record(None, Instant::now()));
        assert_eq!(
            read_request(&mut c),
            Some(1),
            "the kept connection, after the pause"
        );
        c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        wait_for(&e.stats.sent, 1);
        assert_eq!(e.stats.sent.load(Relaxed), 1);
        assert_eq!(e.stats.failed.load(Relaxed), 7 + unmade);
    }

    /// A collector that cannot be reached pauses exports too, for a backoff that doubles.
    #[test]
    fn an_unreachable_collector_is_retried_after_a_backoff() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = settings_for(&l, 1);
        drop(l);
        let mut s = Sender::new(&settings);
        // The pause starts when the failure is seen: between the instants around the send.
        let failed_pause = |s: &mut Sender| {
            let before = Instant::now();
            assert!(s.send(b"x").is_err());
            let after = Instant::now();
            let until = s.paused_until.expect("paused");
            assert!(s.paused(until - Duration::from_nanos(1)));
            (until - after, until - before)
        };
        let (min, max) = failed_pause(&mut s);
        assert!(min <= FIRST_PAUSE && FIRST_PAUSE <= max, "{min:?} {max:?}");
        assert!(!s.paused(Instant::now() + FIRST_PAUSE), "over");
        let (min, max) = failed_pause(&mut s);
        assert!(
            min <= 2 * FIRST_PAUSE && 2 * FIRST_PAUSE <= max,
            "doubled: {min:?} {max:?}"
        );
    }

    /// A refusal that is not throttling (here 401, a token the collector does not take) pauses
    /// for the backoff, whatever `Retry-After` it carries; a success resets the backoff.
    #[test]
    fn other_refusals_pause_for_the_backoff() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = Sender::new(&settings_for(&l, 1));
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            for answer in [
                &b"HTTP/1.1 401 Unauthorized\r\nRetry-After: 20\r\nContent-Length: 0\r\n\r\n"[..],
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            ] {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.ends_with(b"body") {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&buf[..n]);
                }
                c.write_all(answer).unwrap();
            }
        });
        // The pause is `until - now` when the refusal is read: between these two bounds.
        let refused = |s: &mut Sender| {
            let before = Instant::now();
            assert!(s.send(b"body").is_err());
            let after = Instant::now();
            let until = s.paused_until.expect("paused");
            (until - after, until - before)
        };
        let within = |(min, max): (Duration, Duration), d: Duration| min <= d && d <= max;
        assert!(
            within(refused(&mut s), FIRST_PAUSE),
            "the backoff, not 20 s"
        );
        s.paused_until = None;
        assert!(within(refused(&mut s), 2 * FIRST_PAUSE), "doubled");
        s.paused_until = None;
        assert!(s.send(b"body").is_ok());
        assert!(s.paused_until.is_none());
        assert!(within(refused(&mut s), FIRST_PAUSE), "reset by the success");
        server.join().unwrap();
    }

    #[test]
    fn answers_are_read_to_their_length() {
        // The head's parts are `codec::otlp::http`'s (tested there).
        // A body is read only to its length; a longer one closes the connection instead.
        let mut buf = Vec::new();
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        assert!(read_answer(&mut r, &mut buf).unwrap().keep);
        // The body arriving after the head is read to its end.
        let mut r = std::io::Read::chain(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na"[..],
            &b"bcNEXT"[..],
        );
        assert!(read_answer(&mut r, &mut buf).unwrap().keep);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"NEXT");
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_RESPONSE_BODY + 1
        );
        assert!(!read_answer(&mut big.as_bytes(), &mut buf).unwrap().keep);
        let mut cut: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
        assert!(!read_answer(&mut cut, &mut buf).unwrap().keep);
        let mut none: &[u8] = b"";
        assert!(matches!(read_answer(&mut none, &mut buf), Err((_, false))));
        let mut half: &[u8] = b"HTTP/1.1 2";
        assert!(matches!(read_answer(&mut half, &mut buf), Err((_, true))));
    }

    #[test]
    fn random_ids_differ_and_are_never_zero() {
        let a = random_id::<16>();
        let b = random_id::<16>();
        assert_ne!(a, b);
        assert_ne!(random_id::<8>(), [0; 8]);
    }
}
