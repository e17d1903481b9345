//! Span export from the data path: W3C trace context, the sampling decision and the exporter.
//!
//! The executors never wait for the collector. A finished statement or command that is sampled
//! becomes an `otlp::Span` handed to [`Exporter::submit`], which only `try_send`s it into a bounded
//! queue (`queue_spans`); a full queue drops the span and counts it. One exporter thread per
//! process drains the queue into batches (`batch_spans`, or whatever arrived within `flush`) and
//! POSTs each as an OTLP/HTTP protobuf `ExportTraceServiceRequest` to `ENDPOINT/v1/traces`. A batch
//! the collector refuses or cannot take in time (down, slow, 503) is dropped and counted: there is
//! no retry buffer to grow while a collector is away.
//!
//! Sampling: a statement is traced when the caller's `traceparent` has the sampled flag (the proxy
//! span then joins the caller's trace), when it failed, when it took at least `slow`, or else with
//! probability `head_sample_percent`. With `[tracing]` absent (the default) the proxies hold no
//! exporter and the whole feature costs one `Option` test per statement.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use codec::otlp::{self, ResourceSpans, Span, Value};
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
pub fn traceparent_in_sql(sql: &str) -> Option<TraceParent> {
    let mut rest = sql;
    while let Some(open) = rest.find("/*") {
        let body = &rest[open + 2..];
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

/// A random id from a per-thread xorshift generator seeded from the clock, the thread and a counter
/// (span ids need to be unique, not secret).
pub fn random_id<const N: usize>() -> [u8; N] {
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
    let mut out = [0u8; N];
    STATE.with(|s| {
        for chunk in out.chunks_mut(8) {
            let mut x = s.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.set(x);
            let b = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    });
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

/// The process's span exporter (see the module documentation).
pub struct Exporter {
    tx: SyncSender<Span>,
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

impl Exporter {
    /// Starts the exporter thread.
    pub fn start(settings: Tracing) -> std::io::Result<Arc<Exporter>> {
        let (tx, rx) = sync_channel(settings.queue_spans);
        let stats = Arc::new(ExportStats::default());
        let (s, st) = (settings.clone(), stats.clone());
        std::thread::Builder::new()
            .name("furrow-trace-export".into())
            .spawn(move || export_loop(&rx, &s, &st))?;
        Ok(Arc::new(Exporter {
            tx,
            settings,
            stats,
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &Tracing {
        &self.settings
    }

    /// Whether a finished statement is traced (see the module documentation).
    pub fn keep(&self, parent: Option<&TraceParent>, took: Duration, error: bool) -> bool {
        if parent.is_some_and(|p| p.sampled) || error || took >= self.settings.slow {
            return true;
        }
        match self.settings.head_sample_percent {
            0 => false,
            100.. => true,
            p => (u64::from_le_bytes(random_id::<8>()) % 10_000) < u64::from(p) * 100,
        }
    }

    /// A span for a statement that started `took` ago, in the caller's trace when there is one.
    pub fn span(&self, parent: Option<&TraceParent>, name: String, took: Duration) -> Span {
        let end = now_ns();
        Span {
            trace_id: parent.map_or_else(random_id::<16>, |p| p.trace_id),
            span_id: random_id::<8>(),
            parent_id: parent.map_or([0; 8], |p| p.span_id),
            name,
            kind: 2, // server: the proxy serves the caller's call
            start_ns: end.saturating_sub(took.as_nanos() as u64),
            end_ns: end,
            ..Default::default()
        }
    }

    /// Queues a span; never blocks (a full queue drops and counts it).
    pub fn submit(&self, span: Span) {
        match self.tx.try_send(span) {
            Ok(()) => self.stats.queued.fetch_add(1, Relaxed),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Relaxed)
            }
        };
    }
}

/// A string attribute.
pub fn attr_str(k: &str, v: impl Into<String>) -> otlp::Attr {
    (k.to_string(), Value::Str(v.into()))
}

/// `ip` as its `Display` text, for a span's `client.address`: IPv4 written digit by digit (the
/// formatting machinery's padding and width handling cost ~400 instructions per span, 8 % of a
/// traced Redis command); IPv6 through `Display`.
pub fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if o >= 100 {
            s.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            s.push(char::from(b'0' + o / 10 % 10));
        }
        s.push(char::from(b'0' + o % 10));
    }
    s
}

/// An integer attribute.
pub fn attr_int(k: &str, v: i64) -> otlp::Attr {
    (k.to_string(), Value::Int(v))
}

fn export_loop(rx: &Receiver<Span>, s: &Tracing, stats: &ExportStats) {
    let resource = vec![attr_str("service.name", s.service_name.clone())];
    let mut batch = Vec::with_capacity(s.batch_spans);
    loop {
        let deadline = Instant::now() + s.flush;
        let mut closed = false;
        while batch.len() < s.batch_spans {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let req = [ResourceSpans {
                resource: resource.clone(),
                spans: std::mem::take(&mut batch),
            }];
            let body = otlp::encode_export(&req, "furrow");
            match post(s, &body) {
                Ok(()) => stats.sent.fetch_add(n, Relaxed),
                Err(e) => {
                    tracing::debug!(error = %e, spans = n, "span export failed; dropped");
                    stats.failed.fetch_add(n, Relaxed)
                }
            };
        }
        if closed {
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
        assert_eq!(traceparent_in_sql("SELECT 'traceparent=''x'''"), None);
        assert_eq!(traceparent_in_sql("SELECT 1 /* traceparent='bad' */"), None);
        assert_eq!(
            traceparent_in_sql("SELECT 1 /* unterminated traceparent='"),
            None
        );
    }

    #[test]
    fn random_ids_differ_and_are_never_zero() {
        let a = random_id::<16>();
        let b = random_id::<16>();
        assert_ne!(a, b);
        assert_ne!(random_id::<8>(), [0; 8]);
    }
}
