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
use std::time::Duration;

use runtime::trace::{Exporter, TraceParent, attr_int, attr_str};

use crate::backend::Dest;

/// What a traced command's span needs besides its latency and outcome.
pub struct Traced {
    /// The real destination of the reply.
    pub dest: Dest,
    exporter: Arc<Exporter>,
    parent: Option<TraceParent>,
    cmd: &'static str,
    listener: Rc<str>,
    client: IpAddr,
    server: Rc<str>,
}

/// Wraps `dest` so that its command is traced.
pub fn wrap(
    dest: Dest,
    exporter: &Arc<Exporter>,
    parent: Option<TraceParent>,
    cmd: &'static str,
    listener: &Rc<str>,
    client: IpAddr,
    server: &str,
) -> Dest {
    Dest::Traced(Box::new(Traced {
        dest,
        exporter: exporter.clone(),
        parent,
        cmd,
        listener: listener.clone(),
        client,
        server: Rc::from(server),
    }))
}

/// The destination inside a traced one, after making its span (when sampled); any other as it is.
#[inline]
pub fn unwrap(dest: Dest, took: Duration, reply_bytes: usize, is_err: bool) -> Dest {
    match dest {
        Dest::Traced(t) => t.finish(took, reply_bytes, is_err),
        d => d,
    }
}

impl Traced {
    #[cold]
    fn finish(self, took: Duration, reply_bytes: usize, is_err: bool) -> Dest {
        let t = &self.exporter;
        if t.keep(self.parent.as_ref(), took, is_err) {
            let mut span = t.span(self.parent.as_ref(), self.cmd.to_ascii_uppercase(), took);
            span.attrs = vec![
                attr_str("db.system", "redis"),
                attr_str("db.operation", self.cmd),
                attr_str("client.address", runtime::trace::ip_text(self.client)),
                attr_str("furrow.listener", &*self.listener),
                attr_str("furrow.backend", &*self.server),
                attr_str("peer.service", format!("redis:{}", self.server)),
                attr_int("furrow.reply_bytes", reply_bytes as i64),
            ];
            if is_err {
                span.status = 2;
                span.status_message = "error reply".into();
            }
            t.submit(span);
        }
        self.dest
    }
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
