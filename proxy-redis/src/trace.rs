//! Spans of the Redis data path (see `runtime::trace` for sampling and export).
//!
//! With `[tracing]` configured, the span of a command (or of each part of a split one) is made
//! where its reply is read (or failed), where the latency and the error are known. A command sent
//! with a caller's context, or a part of a split head-sampled command, travels with its reply
//! destination wrapped in [`crate::backend::Dest::Traced`] (the context and the command's facts in
//! a box); a whole command that is head-sampled without a context travels as
//! [`crate::backend::Dest::Sampled`], no bigger than an untraced destination, its span made from
//! what the reply path already holds (command name, server, times) — at 100 % sampling this is
//! every command, and the wrapper (its allocation, moves and reference counts) was a sixth of a
//! span's instructions (callgrind, GET P16 at 100 %: +1,043 per request with it, +877 without). A command neither sampled nor in a context gets a span only if its reply is an
//! error or slow ([`unsampled_reply`]).
//!
//! The caller's trace context is per connection, set by a command Furrow defines (Redis has no
//! field for it): `FURROW TRACEPARENT <traceparent>` makes every following command of the connection
//! a child span of that W3C context, `FURROW TRACEPARENT` without a value clears it. The proxy
//! answers `+OK` (or an error for a malformed value); the command never reaches a server.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::trace::{
    Blob, BlobBuilder, ErrorText, Exporter, HeadSampler, IntKey, SpanRecord, TraceParent,
};

use crate::backend::{Dest, ServerInfo};

/// Command names' blobs kept per core, by their `&'static str`'s address.
const CMD_SLOTS: usize = 64;

/// What the spans of one core's listener share: the exporter, the listener's name and each
/// command's blob (its span's name and kind, `db.system`, `db.operation`), made once per core.
pub struct CoreTrace {
    exporter: Arc<Exporter>,
    listener: Arc<str>,
    cmds: RefCell<Vec<Option<(&'static str, Blob)>>>,
}

impl CoreTrace {
    /// The spans of `listener`'s commands on this core.
    pub fn new(exporter: Arc<Exporter>, listener: &str) -> Rc<CoreTrace> {
        Rc::new(CoreTrace {
            exporter,
            listener: Arc::from(listener),
            cmds: RefCell::new(vec![None; CMD_SLOTS]),
        })
    }

    /// Runs `f` with the blob naming `cmd`'s spans (lent, not cloned: a span refers to its blobs
    /// without a reference count of its own, see `runtime::trace::Batch`). The names are
    /// constants of the command table, so a slot matches by address and length.
    fn with_cmd<R>(&self, cmd: &'static str, f: impl FnOnce(&Blob) -> R) -> R {
        let p = cmd.as_ptr() as usize;
        let mut v = self.cmds.borrow_mut();
        let slot = &mut v[((p >> 3) ^ (p >> 9) ^ cmd.len()) & (CMD_SLOTS - 1)];
        match slot {
            Some((c, b)) if std::ptr::eq(*c, cmd) => f(b),
            _ => {
                let b = BlobBuilder::named(&runtime::trace::name_upper(cmd), 2) // server: the proxy serves the caller's call
                    .str("db.system", "redis")
                    .str("db.operation", cmd)
                    .build();
                f(&slot.insert((cmd, b)).1)
            }
        }
    }
}

/// What the spans of one client connection share: made once per connection.
pub struct ConnTrace {
    core: Rc<CoreTrace>,
    /// `client.address` and `furrow.listener`.
    conn: Blob,
    head: HeadSampler,
    /// `slow_ms`, here so that the reply path's test of every untraced reply reads one field.
    slow: Duration,
}

impl ConnTrace {
    /// The context of a connection from `client` to the core's listener.
    pub fn new(core: &Rc<CoreTrace>, client: IpAddr) -> Rc<ConnTrace> {
        Rc::new(ConnTrace {
            conn: BlobBuilder::attrs()
                .ip("client.address", client)
                .str("furrow.listener", &core.listener)
                .build(),
            head: core.exporter.head_sampler(),
            slow: core.exporter.settings().slow,
            core: core.clone(),
        })
    }

    /// Whether a command without a sampled caller's context is traced whatever its outcome
    /// (`head_sample_percent`, by the connection's countdown).
    #[inline]
    pub fn head_sampled(&self) -> bool {
        self.head.sample()
    }
}

/// A server's blob: `furrow.backend` and `peer.service` (`redis:NAME`).
pub fn server_blob(name: &str) -> Blob {
    BlobBuilder::attrs()
        .str("furrow.backend", name)
        .str("peer.service", &format!("redis:{name}"))
        .build()
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

/// The destination inside a traced one, after making its span (when sampled) from the reply `r`
/// (its times, size and outcome: no clock is read here); any other as it is.
#[inline]
pub fn unwrap(dest: Dest, r: &Reply<'_>) -> Dest {
    match dest {
        Dest::Traced(t) => t.finish(r),
        d => d,
    }
}

impl Traced {
    /// Makes the span (when kept) of the reply `r`, under the command and server this wrapper
    /// was made for and its caller's context.
    #[cold]
    fn finish(self, r: &Reply<'_>) -> Dest {
        let c = &*self.conn;
        if self.sampled || r.is_err || r.took >= c.slow {
            let s = Reply {
                cmd: self.cmd,
                server: &self.server,
                ..*r
            };
            record(c, self.parent.as_ref(), &s);
        }
        self.dest
    }
}

/// A command's reply, as its span records it.
pub struct Reply<'a> {
    /// The command's name.
    pub cmd: &'static str,
    /// The server it was sent to.
    pub server: &'a ServerInfo,
    /// When it was sent.
    pub start: Instant,
    /// Until its reply.
    pub took: Duration,
    /// The reply's size.
    pub reply_bytes: usize,
    /// Whether the reply is an error.
    pub is_err: bool,
}

/// The reply of a command that was neither head-sampled nor sent with a caller's context (so
/// not wrapped): its root span is made only if it failed or took at least `slow_ms`.
#[inline]
pub fn unsampled_reply(c: &ConnTrace, r: &Reply<'_>) {
    if r.is_err || r.took >= c.slow {
        record(c, None, r);
    }
}

/// The reply of a head-sampled command without a caller's context
/// ([`crate::backend::Dest::Sampled`]): its root span, whatever the outcome.
#[inline]
pub fn sampled_reply(c: &ConnTrace, r: &Reply<'_>) {
    record(c, None, r);
}

/// The span: the command's blob, the connection's, the server's and the reply's size.
#[cold]
fn record(c: &ConnTrace, parent: Option<&TraceParent>, s: &Reply<'_>) {
    if !c.core.exporter.accepting() {
        return;
    }
    c.core.with_cmd(s.cmd, |name| {
        let mut span = SpanRecord::new(parent, name, s.start, s.took);
        span.blob(&c.conn);
        span.blob(s.server.trace_blob());
        span.int(IntKey::ReplyBytes, s.reply_bytes as i64);
        if s.is_err {
            span.fail(ErrorText::ErrorReply, None);
        }
        c.core.exporter.record(span);
    });
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
