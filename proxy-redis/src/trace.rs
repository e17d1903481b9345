//! Spans of the Redis data path (see `runtime::trace` for sampling and export).
//!
//! With `[tracing]` configured, a command routed to one server travels with its reply destination
//! wrapped in [`crate::backend::Dest::Traced`]: the backend connection that reads its reply (or fails
//! it) unwraps the destination, and the span is made there, where the latency and the error are
//! known. Commands split over several servers or fanned out are not traced yet.
//!
//! The caller's trace context is per connection, set by a command Furrow defines (Redis has no
//! field for it): `FURROW TRACEPARENT <traceparent>` makes every following command of the connection
//! a child span of that W3C context, `FURROW TRACEPARENT` without a value clears it. The proxy
//! answers `+OK` (or an error for a malformed value); the command never reaches a server.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::trace::{AttrValue, Exporter, SpanName, SpanRecord, TraceParent};

use crate::backend::{Dest, ServerInfo};

/// What the spans of one client connection share: made once per connection.
pub struct ConnTrace {
    exporter: Arc<Exporter>,
    listener: Arc<str>,
    client: IpAddr,
}

impl ConnTrace {
    /// The context of a connection from `client` to `listener`.
    pub fn new(exporter: &Arc<Exporter>, listener: &Arc<str>, client: IpAddr) -> Rc<ConnTrace> {
        Rc::new(ConnTrace {
            exporter: exporter.clone(),
            listener: listener.clone(),
            client,
        })
    }

    /// Whether a command without a sampled caller's context is traced whatever its outcome
    /// (`head_sample_percent`).
    #[inline]
    pub fn head_sampled(&self) -> bool {
        self.exporter.head_sampled()
    }
}

/// What a traced command's span needs besides its latency and outcome (no string of its own:
/// the server's names are made once per backend, the connection's once per connection).
pub struct Traced {
    /// The real destination of the reply.
    pub dest: Dest,
    conn: Rc<ConnTrace>,
    parent: Option<TraceParent>,
    /// Traced whatever its outcome (else only when it fails or is slow).
    sampled: bool,
    cmd: &'static str,
    server: Rc<ServerInfo>,
}

/// Wraps `dest` so that its command (sent to `server`) is traced.
pub fn wrap(
    dest: Dest,
    conn: &Rc<ConnTrace>,
    parent: Option<TraceParent>,
    sampled: bool,
    cmd: &'static str,
    server: &Rc<ServerInfo>,
) -> Dest {
    Dest::Traced(Box::new(Traced {
        dest,
        conn: conn.clone(),
        parent,
        sampled,
        cmd,
        server: server.clone(),
    }))
}

/// The destination inside a traced one, after making its span (when sampled); any other as it
/// is. `start` is when the command was sent, `took` until its reply (no clock is read here).
#[inline]
pub fn unwrap(
    dest: Dest,
    start: Instant,
    took: Duration,
    reply_bytes: usize,
    is_err: bool,
) -> Dest {
    match dest {
        Dest::Traced(t) => t.finish(start, took, reply_bytes, is_err),
        d => d,
    }
}

impl Traced {
    #[cold]
    fn finish(self, start: Instant, took: Duration, reply_bytes: usize, is_err: bool) -> Dest {
        let c = &*self.conn;
        if self.sampled || is_err || took >= c.exporter.settings().slow {
            let s = Command {
                cmd: self.cmd,
                server: &self.server,
                start,
                took,
                reply_bytes,
                is_err,
            };
            record(c, self.parent.as_ref(), &s);
        }
        self.dest
    }
}

/// A command's reply, as its span records it.
struct Command<'a> {
    cmd: &'static str,
    server: &'a ServerInfo,
    start: Instant,
    took: Duration,
    reply_bytes: usize,
    is_err: bool,
}

/// The reply of a command that was neither head-sampled nor sent with a caller's context (so
/// not wrapped): its root span is made only if it failed or took at least `slow_ms`.
#[inline]
pub fn unsampled_reply(
    c: &ConnTrace,
    cmd: &'static str,
    server: &ServerInfo,
    start: Instant,
    took: Duration,
    reply_bytes: usize,
    is_err: bool,
) {
    if is_err || took >= c.exporter.settings().slow {
        let s = Command {
            cmd,
            server,
            start,
            took,
            reply_bytes,
            is_err,
        };
        record(c, None, &s);
    }
}

#[cold]
fn record(c: &ConnTrace, parent: Option<&TraceParent>, s: &Command<'_>) {
    let names = s.server.trace_names();
    let mut span = SpanRecord::new(
        parent,
        SpanName::Upper(s.cmd),
        2, // server: the proxy serves the caller's call
        s.start,
        s.took,
    );
    span.attr("db.system", AttrValue::Static("redis"));
    span.attr("db.operation", AttrValue::Static(s.cmd));
    span.attr("client.address", AttrValue::Ip(c.client));
    span.attr("furrow.listener", AttrValue::Str(c.listener.clone()));
    span.attr("furrow.backend", AttrValue::Str(names.server.clone()));
    span.attr("peer.service", AttrValue::Str(names.peer.clone()));
    span.attr("furrow.reply_bytes", AttrValue::Int(s.reply_bytes as i64));
    if s.is_err {
        span.error = Some(("error reply", None));
    }
    c.exporter.record(span);
}

/// Parses the arguments of `FURROW TRACEPARENT [VALUE]`: `Ok(None)` clears the context.
pub fn traceparent_arg(value: Option<&[u8]>) -> Result<Option<TraceParent>, &'static str> {
    match value {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(runtime::trace::parse_traceparent)
            .map(Some)
            .ok_or(
                "invalid traceparent: expected 00-<32 hex>-<16 hex>-<2 hex> (W3C trace context)",
            ),
    }
}
