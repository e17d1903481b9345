//! Spans of the MySQL data path (see `runtime::trace` for sampling and export): one span per
//! statement, joined to the caller's trace when the SQL carries a sqlcommenter `traceparent`
//! comment. Called from the one place each path accounts a statement (`Session::account`, the
//! sharding executor's `ops_done`) and only when `[tracing]` is configured.

use std::time::Duration;

use runtime::trace::{Exporter, attr_int, attr_str, traceparent_in_sql};

/// One finished statement, as the span records it.
pub(crate) struct Stmt<'a> {
    /// Empty where the caller does not know it (the sharding executor).
    pub listener: &'a str,
    pub group: &'a str,
    pub user: &'a str,
    pub client: std::net::IpAddr,
    /// The server that ran it (`shards` for a sharded statement).
    pub backend: &'a str,
    pub sql: &'a str,
    pub digest: &'a router::sql::Digest,
    pub took: Duration,
    pub rows: u64,
    pub bytes: u64,
    pub error: Option<u16>,
}

/// The longest span name (the digest text, cut at a character boundary).
const MAX_NAME: usize = 96;

fn name(d: &router::sql::Digest) -> String {
    let mut end = d.text.len().min(MAX_NAME);
    while !d.text.is_char_boundary(end) {
        end -= 1;
    }
    d.text[..end].to_string()
}

/// One unit of a sharded statement, as its child span records it.
pub(crate) struct UnitTiming {
    /// The shard's name.
    pub shard: String,
    /// From sending the unit to its last row.
    pub took: Duration,
    /// Whether it failed (or was refused).
    pub error: bool,
}

/// [`statement`] with a child span per unit of a sharded statement (`units` is emptied).
pub(crate) fn statement_with_units(t: &Exporter, s: &Stmt<'_>, units: &mut Vec<UnitTiming>) {
    let Some(parent) = statement(t, s) else {
        units.clear();
        return;
    };
    let ctx = runtime::trace::TraceParent {
        trace_id: parent.trace_id,
        span_id: parent.span_id,
        sampled: true,
    };
    for u in units.drain(..) {
        let mut span = t.span(Some(&ctx), format!("shard {}", u.shard), u.took);
        // The units run concurrently from the statement's start: anchor them there.
        span.start_ns = parent.start_ns;
        span.end_ns = parent.start_ns + u.took.as_nanos() as u64;
        span.kind = 3;
        span.attrs = vec![
            attr_str("db.system", "mysql"),
            attr_str("furrow.shard", u.shard.clone()),
            attr_str("peer.service", format!("mysql:{}", u.shard)),
        ];
        if u.error {
            span.status = 2;
        }
        t.submit(span);
    }
}

/// Makes and queues the statement's span when it is sampled; returns a copy of its ids and start.
pub(crate) fn statement(t: &Exporter, s: &Stmt<'_>) -> Option<codec::otlp::Span> {
    let parent = traceparent_in_sql(s.sql);
    if !t.keep(parent.as_ref(), s.took, s.error.is_some()) {
        return None;
    }
    let mut span = t.span(parent.as_ref(), name(s.digest), s.took);
    span.attrs = vec![
        attr_str("db.system", "mysql"),
        // The digest, never the text: literals stay out of the tracing store.
        attr_str("db.statement", s.digest.text.clone()),
        attr_str("furrow.digest", format!("{:016x}", s.digest.hash)),
        attr_str("db.user", s.user),
        attr_str("client.address", runtime::trace::ip_text(s.client)),
        attr_str("furrow.group", s.group),
        attr_str("furrow.backend", s.backend),
        attr_int("db.response.rows", s.rows as i64),
        attr_int("furrow.reply_bytes", s.bytes as i64),
    ];
    // A sharded statement's peers are its units' shards (its child spans), not `shards`.
    if s.backend != "shards" {
        span.attrs
            .push(attr_str("peer.service", format!("mysql:{}", s.backend)));
    }
    if !s.listener.is_empty() {
        span.attrs.push(attr_str("furrow.listener", s.listener));
    }
    if let Some(code) = s.error {
        span.status = 2;
        span.status_message = format!("MySQL error {code}");
        span.attrs.push(attr_int("db.error_code", i64::from(code)));
    }
    let ids = codec::otlp::Span {
        trace_id: span.trace_id,
        span_id: span.span_id,
        start_ns: span.start_ns,
        ..Default::default()
    };
    t.submit(span);
    Some(ids)
}
