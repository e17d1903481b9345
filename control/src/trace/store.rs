//! The span store: tail sampling in front of append-only segment files, with an in-memory index.
//!
//! Spans of a trace arrive over seconds and from several processes, so the keep-or-drop decision is
//! taken per trace, `decision_wait` after its first span (tail sampling, as the OpenTelemetry
//! collector's `tail_sampling` processor does): a trace with an error span or a span at least `slow`
//! long is always kept, any other trace is kept with probability `sample_rate` (decided by its id, so
//! every collector node decides alike). The decision is remembered (bounded) so late spans follow it.
//!
//! Kept traces are appended to the current segment file as one record each (`u32` little-endian
//! length, then an OTLP `ExportTraceServiceRequest` — the same encoding the proxies send, so a
//! segment can be replayed into any OTLP receiver). A segment is closed at `segment_bytes`; the
//! oldest segment is deleted when all segments exceed `max_bytes` or when its newest record is older
//! than `max_age`, and its traces leave the index with it. So the store is bounded by size and age
//! on disk and in memory alike (the index holds what the segments hold, ~2-3x their bytes), and a
//! restart reads the segments back. Without a directory the same segments live in memory only.
//!
//! Why segment files and not SQLite: spans are written once, read by trace id or scanned, and
//! expire in bulk by age. Appending records and unlinking whole files is the cheapest form of all
//! three (no per-span index maintenance, no vacuum); queries run on the in-memory index. See
//! `docs/tracing.md` for the measurement.
//!
//! The store is single-threaded (the collector's worker owns it behind a mutex) and takes the time
//! as an argument, so tests drive sampling and expiry without sleeping.

use std::collections::{HashMap, VecDeque};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use codec::otlp;

use super::model::{SpanRec, records};

/// How the store keeps and bounds spans.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The segment directory (None: in memory only).
    pub dir: Option<PathBuf>,
    /// Bytes of all segments together.
    pub max_bytes: u64,
    /// Bytes at which a segment is closed.
    pub segment_bytes: u64,
    /// Age after which a segment is deleted.
    pub max_age: Duration,
    /// Time from a trace's first span to its keep-or-drop decision.
    pub decision_wait: Duration,
    /// Fraction (0-1) of traces without errors or slow spans that are kept.
    pub sample_rate: f64,
    /// A span at least this long keeps its trace.
    pub slow: Duration,
    /// Spans waiting for a decision; beyond it the oldest traces are decided early.
    pub max_pending_spans: usize,
    /// Decisions remembered for late spans.
    pub max_decisions: usize,
}

impl Default for StoreOptions {
    /// 256 MiB in 16 MiB segments, 24 h, decide after 5 s, keep 10 % of ordinary traces, slow = 500 ms.
    fn default() -> Self {
        StoreOptions {
            dir: None,
            max_bytes: 256 << 20,
            segment_bytes: 16 << 20,
            max_age: Duration::from_secs(24 * 3600),
            decision_wait: Duration::from_secs(5),
            sample_rate: 0.1,
            slow: Duration::from_millis(500),
            max_pending_spans: 200_000,
            max_decisions: 200_000,
        }
    }
}

/// The store's counters.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct StoreCounts {
    /// Spans handed to the store.
    pub spans_received: u64,
    /// Traces kept by the tail sampler.
    pub traces_kept: u64,
    /// Traces dropped by the tail sampler.
    pub traces_sampled_out: u64,
    /// Spans that arrived after their trace was dropped.
    pub late_spans_dropped: u64,
    /// Traces decided before `decision_wait` because the pending buffer was full.
    pub decided_early: u64,
    /// Traces deleted with their segment (size or age).
    pub traces_expired: u64,
    /// Segment writes that failed (the spans stay in memory until their segment expires).
    pub write_errors: u64,
}

struct Pending {
    first_ms: u64,
    spans: Vec<SpanRec>,
}

struct Stored {
    segment: u64,
    spans: Vec<SpanRec>,
}

struct Segment {
    id: u64,
    last_ms: u64,
    bytes: u64,
    traces: Vec<u128>,
    file: Option<BufWriter<std::fs::File>>,
}

/// The span store.
pub struct Store {
    opts: StoreOptions,
    pending: HashMap<u128, Pending>,
    pending_order: VecDeque<u128>,
    pending_spans: usize,
    decided: HashMap<u128, bool>,
    decided_order: VecDeque<u128>,
    traces: HashMap<u128, Stored>,
    segments: VecDeque<Segment>,
    bytes: u64,
    next_segment: u64,
    /// Kept records waiting for onward export (only when forwarding; drained by the worker).
    outbox: Option<Vec<Vec<u8>>>,
    /// Counters.
    pub counts: StoreCounts,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:016}.otlp"))
}

/// Whether an ordinary trace is sampled in: a hash of its id below the rate.
pub fn sampled(trace: u128, rate: f64) -> bool {
    // splitmix64 of the id's low half: ids from poor generators still spread evenly.
    let mut z = (trace as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z as f64) < rate.clamp(0.0, 1.0) * (u64::MAX as f64)
}

/// Encodes spans as one OTLP request, one resource per service and origin (`service.name`, then the
/// origin's `host.name`, `service.instance.id` and `service.version` when known), so a segment read back
/// gives every span its origin again.
pub fn encode(spans: &[SpanRec]) -> Vec<u8> {
    let mut groups: Vec<(&SpanRec, otlp::ResourceSpans)> = Vec::new();
    for s in spans {
        let i = match groups
            .iter()
            .position(|(first, _)| first.service == s.service && first.origin == s.origin)
        {
            Some(i) => i,
            None => {
                let mut resource = vec![(
                    "service.name".into(),
                    otlp::Value::Str(s.service.to_string()),
                )];
                resource.extend(s.origin.attrs());
                groups.push((
                    s,
                    otlp::ResourceSpans {
                        resource,
                        spans: Vec::new(),
                    },
                ));
                groups.len() - 1
            }
        };
        groups[i].1.spans.push(s.span.clone());
    }
    let resources: Vec<otlp::ResourceSpans> = groups.into_iter().map(|(_, r)| r).collect();
    otlp::encode_export(&resources, "furrow-collector")
}

impl Store {
    /// Opens the store, reading back the segments of `opts.dir` (a torn last record is ignored).
    pub fn open(opts: StoreOptions, now_ms: u64) -> std::io::Result<Store> {
        let mut st = Store {
            opts,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            pending_spans: 0,
            decided: HashMap::new(),
            decided_order: VecDeque::new(),
            traces: HashMap::new(),
            segments: VecDeque::new(),
            bytes: 0,
            next_segment: 1,
            outbox: None,
            counts: StoreCounts::default(),
        };
        if let Some(dir) = st.opts.dir.clone() {
            std::fs::create_dir_all(&dir)?;
            let mut ids: Vec<u64> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().into_string().ok()?;
                    n.strip_prefix("seg-")?.strip_suffix(".otlp")?.parse().ok()
                })
                .collect();
            ids.sort_unstable();
            for id in ids {
                st.load_segment(&dir, id)?;
                st.next_segment = id + 1;
            }
            st.expire(now_ms);
        }
        Ok(st)
    }

    fn load_segment(&mut self, dir: &Path, id: u64) -> std::io::Result<()> {
        let path = seg_path(dir, id);
        let mut data = Vec::new();
        std::fs::File::open(&path)?.read_to_end(&mut data)?;
        let last_ms = std::fs::metadata(&path)?
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let mut seg = Segment {
            id,
            last_ms,
            bytes: 0,
            traces: Vec::new(),
            file: None,
        };
        let mut pos = 0;
        while let Some(len) = data.get(pos..pos + 4) {
            let n = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let Some(rec) = data.get(pos + 4..pos + 4 + n) else {
                break; // torn write at a crash: the rest is lost
            };
            pos += 4 + n;
            let Ok(rs) = otlp::decode_export(rec) else {
                tracing::warn!(path = %path.display(), "undecodable trace record skipped");
                continue;
            };
            let spans = records(rs);
            if let Some(t) = spans.first().map(SpanRec::trace) {
                self.index(&mut seg, t, spans);
            }
        }
        seg.bytes = pos as u64;
        self.bytes += seg.bytes;
        self.segments.push_back(seg);
        Ok(())
    }

    fn index(&mut self, seg: &mut Segment, trace: u128, spans: Vec<SpanRec>) {
        let e = self.traces.entry(trace).or_insert(Stored {
            segment: seg.id,
            spans: Vec::new(),
        });
        e.segment = seg.id;
        e.spans.extend(spans);
        seg.traces.push(trace);
        self.remember(trace, true);
    }

    /// Remembers a decision (bounded: the oldest decisions are forgotten first).
    fn remember(&mut self, trace: u128, keep: bool) {
        if self.decided.insert(trace, keep).is_none() {
            self.decided_order.push_back(trace);
        }
        while self.decided_order.len() > self.opts.max_decisions {
            if let Some(old) = self.decided_order.pop_front() {
                self.decided.remove(&old);
            }
        }
    }

    /// Keeps a copy of every kept record for onward export ([`Store::take_outbox`]).
    pub fn forward(&mut self, on: bool) {
        self.outbox = on.then(Vec::new);
    }

    /// The records kept since the last call (empty unless forwarding). The worker drains it after each
    /// batch and tick, so it holds at most one batch's traces.
    pub fn take_outbox(&mut self) -> Vec<Vec<u8>> {
        self.outbox.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The options.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Takes in spans (already masked).
    pub fn add(&mut self, spans: Vec<SpanRec>, now_ms: u64) {
        self.counts.spans_received += spans.len() as u64;
        let mut late: HashMap<u128, Vec<SpanRec>> = HashMap::new();
        for s in spans {
            let t = s.trace();
            match self.decided.get(&t) {
                Some(true) => late.entry(t).or_default().push(s),
                Some(false) => self.counts.late_spans_dropped += 1,
                None => {
                    let p = self.pending.entry(t).or_insert_with(|| {
                        self.pending_order.push_back(t);
                        Pending {
                            first_ms: now_ms,
                            spans: Vec::new(),
                        }
                    });
                    p.spans.push(s);
                    self.pending_spans += 1;
                }
            }
        }
        for (t, spans) in late {
            self.write(t, spans, now_ms);
        }
        while self.pending_spans > self.opts.max_pending_spans {
            let Some(t) = self.pending_order.pop_front() else {
                break;
            };
            self.counts.decided_early += 1;
            self.decide(t, now_ms);
        }
    }

    /// Decides the traces whose wait is over, deletes expired segments, flushes the open segment.
    pub fn tick(&mut self, now_ms: u64) {
        let wait = self.opts.decision_wait.as_millis() as u64;
        while let Some(&t) = self.pending_order.front() {
            match self.pending.get(&t) {
                Some(p) if p.first_ms + wait > now_ms => break,
                _ => {
                    self.pending_order.pop_front();
                    self.decide(t, now_ms);
                }
            }
        }
        self.expire(now_ms);
        if let Some(f) = self.segments.back_mut().and_then(|s| s.file.as_mut())
            && f.flush().is_err()
        {
            self.counts.write_errors += 1;
        }
    }

    fn decide(&mut self, t: u128, now_ms: u64) {
        let Some(p) = self.pending.remove(&t) else {
            return;
        };
        self.pending_spans -= p.spans.len();
        let slow = self.opts.slow.as_nanos() as u64;
        let keep = p
            .spans
            .iter()
            .any(|s| s.is_error() || s.duration_ns() >= slow)
            || sampled(t, self.opts.sample_rate);
        self.remember(t, keep);
        if keep {
            self.counts.traces_kept += 1;
            self.write(t, p.spans, now_ms);
        } else {
            self.counts.traces_sampled_out += 1;
        }
    }

    fn write(&mut self, t: u128, spans: Vec<SpanRec>, now_ms: u64) {
        let rec = encode(&spans);
        let len = 4 + rec.len() as u64;
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.bytes > 0 && s.bytes + len > self.opts.segment_bytes);
        if full {
            self.rotate(now_ms);
        }
        let Some(mut seg) = self.segments.pop_back() else {
            return;
        };
        if let Some(f) = seg.file.as_mut() {
            let ok = f
                .write_all(&(rec.len() as u32).to_le_bytes())
                .and_then(|()| f.write_all(&rec));
            if ok.is_err() {
                self.counts.write_errors += 1;
            }
        }
        if let Some(o) = self.outbox.as_mut() {
            o.push(rec);
        }
        seg.bytes += len;
        seg.last_ms = now_ms;
        self.bytes += len;
        self.index(&mut seg, t, spans);
        self.segments.push_back(seg);
        while self.bytes > self.opts.max_bytes && self.segments.len() > 1 {
            self.drop_oldest();
        }
    }

    fn rotate(&mut self, now_ms: u64) {
        if let Some(f) = self.segments.back_mut().and_then(|s| s.file.as_mut()) {
            let _ = f.flush();
        }
        if let Some(s) = self.segments.back_mut() {
            s.file = None;
        }
        let id = self.next_segment;
        self.next_segment += 1;
        let file = self.opts.dir.as_ref().and_then(|d| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(seg_path(d, id))
                .map_err(|e| tracing::warn!(error = %e, "cannot create a trace segment"))
                .ok()
                .map(BufWriter::new)
        });
        if self.opts.dir.is_some() && file.is_none() {
            self.counts.write_errors += 1;
        }
        self.segments.push_back(Segment {
            id,
            last_ms: now_ms,
            bytes: 0,
            traces: Vec::new(),
            file,
        });
    }

    fn expire(&mut self, now_ms: u64) {
        let age = self.opts.max_age.as_millis() as u64;
        while let Some(s) = self.segments.front() {
            let too_old = s.last_ms + age < now_ms;
            if too_old || (self.bytes > self.opts.max_bytes && self.segments.len() > 1) {
                self.drop_oldest();
            } else {
                break;
            }
        }
    }

    fn drop_oldest(&mut self) {
        let Some(seg) = self.segments.pop_front() else {
            return;
        };
        self.bytes -= seg.bytes;
        for t in seg.traces {
            if self.traces.get(&t).is_some_and(|s| s.segment == seg.id) {
                self.traces.remove(&t);
                self.counts.traces_expired += 1;
            }
        }
        if let Some(d) = &self.opts.dir {
            let _ = std::fs::remove_file(seg_path(d, seg.id));
        }
    }

    /// The spans of a trace, stored or still pending.
    pub fn trace(&self, t: u128) -> Option<&[SpanRec]> {
        self.traces
            .get(&t)
            .map(|s| s.spans.as_slice())
            .or_else(|| self.pending.get(&t).map(|p| p.spans.as_slice()))
    }

    /// Every trace, stored and pending (pending ones are visible until their decision).
    pub fn traces(&self) -> impl Iterator<Item = (u128, &[SpanRec])> {
        self.traces
            .iter()
            .map(|(t, s)| (*t, s.spans.as_slice()))
            .chain(self.pending.iter().map(|(t, p)| (*t, p.spans.as_slice())))
    }

    /// Sizes: (stored traces, pending traces, pending spans, segments, segment bytes).
    pub fn sizes(&self) -> (usize, usize, usize, usize, u64) {
        (
            self.traces.len(),
            self.pending.len(),
            self.pending_spans,
            self.segments.len(),
            self.bytes,
        )
    }
}

/// A shared store.
pub type SharedStore = Arc<std::sync::Mutex<Store>>;

#[cfg(test)]
mod tests {
    use super::*;
    use codec::otlp::Span;

    fn span(trace: u128, id: u64, parent: u64, dur_ms: u64, error: bool) -> SpanRec {
        SpanRec {
            service: Arc::from("svc"),
            origin: Default::default(),
            span: Span {
                trace_id: trace.to_be_bytes(),
                span_id: id.to_be_bytes(),
                parent_id: parent.to_be_bytes(),
                name: format!("op{id}"),
                start_ns: 1_000_000,
                end_ns: 1_000_000 + dur_ms * 1_000_000,
                status: if error { 2 } else { 0 },
                ..Default::default()
            },
        }
    }

    fn opts() -> StoreOptions {
        StoreOptions {
            decision_wait: Duration::from_millis(100),
            sample_rate: 0.0,
            slow: Duration::from_millis(50),
            ..Default::default()
        }
    }

    #[test]
    fn tail_sampling_keeps_errors_and_slow_traces_and_late_spans_follow() {
        let mut st = Store::open(opts(), 0).unwrap();
        st.add(vec![span(1, 1, 0, 1, false), span(1, 2, 1, 1, true)], 0);
        st.add(vec![span(2, 1, 0, 60, false)], 0);
        st.add(vec![span(3, 1, 0, 1, false)], 0);
        assert!(st.trace(3).is_some(), "pending traces are visible");
        st.tick(50);
        assert_eq!(st.sizes().1, 3, "nothing decided before the wait");
        st.tick(100);
        assert_eq!(st.trace(1).map(<[_]>::len), Some(2));
        assert!(st.trace(2).is_some());
        assert!(
            st.trace(3).is_none(),
            "an ordinary trace at rate 0 is dropped"
        );
        st.add(vec![span(1, 3, 1, 1, false), span(3, 2, 1, 1, false)], 200);
        assert_eq!(st.trace(1).map(<[_]>::len), Some(3));
        assert!(st.trace(3).is_none());
        assert_eq!(st.counts.late_spans_dropped, 1);
        assert_eq!(
            (st.counts.traces_kept, st.counts.traces_sampled_out),
            (2, 1)
        );
    }

    #[test]
    fn sample_rate_keeps_about_that_fraction() {
        let kept = (0..10_000u128)
            .filter(|t| sampled(t * 7919 + 13, 0.1))
            .count();
        assert!((800..1200).contains(&kept), "{kept}");
        assert!((0..1000u128).all(|t| sampled(t, 1.0)));
        assert!(!(0..1000u128).any(|t| sampled(t, 0.0)));
    }

    #[test]
    fn pending_overflow_decides_early() {
        let o = StoreOptions {
            max_pending_spans: 10,
            sample_rate: 1.0,
            ..opts()
        };
        let mut st = Store::open(o, 0).unwrap();
        for t in 0..20 {
            st.add(vec![span(t, 1, 0, 1, false)], 0);
        }
        assert_eq!(st.sizes().2, 10);
        assert_eq!(st.counts.decided_early, 10);
        assert_eq!(st.sizes().0, 10);
    }

    #[test]
    fn size_and_age_bound_the_segments_and_a_restart_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let o = StoreOptions {
            dir: Some(dir.path().to_path_buf()),
            sample_rate: 1.0,
            segment_bytes: 2_000,
            max_bytes: 10_000,
            max_age: Duration::from_secs(60),
            ..opts()
        };
        let mut st = Store::open(o.clone(), 0).unwrap();
        for t in 0..200u128 {
            st.add(
                vec![span(t, 1, 0, 1, false), span(t, 2, 1, 1, false)],
                t as u64,
            );
            st.tick(t as u64 + 100);
        }
        let (stored, _, _, segs, bytes) = st.sizes();
        assert!(bytes <= 10_000, "{bytes}");
        assert!(
            segs >= 4 && stored < 200 && stored > 20,
            "{segs} segments, {stored} traces"
        );
        assert!(st.trace(199).is_some() && st.trace(0).is_none());
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, segs);
        drop(st);
        let back = Store::open(o.clone(), 400).unwrap();
        assert_eq!(back.sizes().0, stored);
        assert_eq!(back.trace(199).map(<[_]>::len), Some(2));
        // An hour later every segment has expired (file times are now; the clock is the argument).
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 3_600_000;
        let gone = Store::open(o, later).unwrap();
        assert_eq!(gone.sizes().0, 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
