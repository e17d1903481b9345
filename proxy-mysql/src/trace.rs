//! Spans of the MySQL data path (see `runtime::trace` for sampling and export): one span per
//! statement, joined to the caller's trace when the SQL carries a sqlcommenter `traceparent`
//! comment. Called from the one place each path accounts a statement (`Session::account`, the
//! sharding executor's `ops_done`) and only when `[tracing]` is configured.
//!
//! A span is recorded as a `runtime::trace::SpanRecord`: its strings are shared handles made once
//! per core ([`Names`]: listener, group and user texts, each backend's `peer.service`, each
//! digest's text), its times the statement's own `Instant` and duration; nothing is formatted on
//! the executor.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::trace::{AttrValue, Exporter, PeerNames, SpanName, SpanRecord, traceparent_in_sql};

/// The backend of a sharded statement in its span, slow-log and audit records.
pub(crate) const SHARDS_BACKEND: &str = "shards";

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
    /// When the statement started.
    pub start: Instant,
    pub took: Duration,
    pub rows: u64,
    pub bytes: u64,
    pub error: Option<u16>,
}

/// Most texts and backends a core keeps (beyond, a span makes its own handle).
const MAX_NAMES: usize = 256;
/// Digest texts kept per core, by the low bits of the digest's hash.
const DIGEST_SLOTS: usize = 256;

/// The strings of one core's spans, each made once and shared by its spans.
#[derive(Default)]
pub(crate) struct Names {
    texts: RefCell<Vec<Arc<str>>>,
    peers: RefCell<Vec<PeerNames>>,
    digests: RefCell<Vec<DigestSlot>>,
}

/// A digest's hash and its text.
type DigestSlot = Option<(u64, Arc<str>)>;

impl Names {
    /// `s` as a shared handle (listener, group, user, shard names).
    fn text(&self, s: &str) -> Arc<str> {
        let mut v = self.texts.borrow_mut();
        if let Some(a) = v.iter().find(|a| ***a == *s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        if v.len() < MAX_NAMES {
            v.push(a.clone());
        }
        a
    }

    /// A backend's `furrow.backend` and `peer.service` (`mysql:SERVER`).
    fn peer(&self, server: &str) -> PeerNames {
        let mut v = self.peers.borrow_mut();
        if let Some(p) = v.iter().find(|p| *p.server == *server) {
            return p.clone();
        }
        let p = PeerNames::new("mysql", server);
        if v.len() < MAX_NAMES {
            v.push(p.clone());
        }
        p
    }

    /// The digest's text (a statement's name and `db.statement`).
    fn digest(&self, d: &router::sql::Digest) -> Arc<str> {
        let mut v = self.digests.borrow_mut();
        if v.is_empty() {
            v.resize(DIGEST_SLOTS, None);
        }
        let slot = &mut v[(d.hash as usize) & (DIGEST_SLOTS - 1)];
        match slot {
            Some((h, t)) if *h == d.hash => t.clone(),
            _ => {
                let t: Arc<str> = Arc::from(d.text.as_str());
                *slot = Some((d.hash, t.clone()));
                t
            }
        }
    }
}

/// A core's span exporter and the strings of its spans.
pub(crate) struct CoreTrace {
    pub exporter: Arc<Exporter>,
    names: Names,
}

impl CoreTrace {
    pub(crate) fn new(exporter: Arc<Exporter>) -> CoreTrace {
        CoreTrace {
            exporter,
            names: Names::default(),
        }
    }
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
pub(crate) fn statement_with_units(t: &CoreTrace, s: &Stmt<'_>, units: &mut Vec<UnitTiming>) {
    let Some(parent) = statement(t, s) else {
        units.clear();
        return;
    };
    for u in units.drain(..) {
        let shard = t.names.peer(&u.shard);
        // The units run concurrently from the statement's start: anchor them there.
        let mut span = SpanRecord::new(
            Some(&parent),
            SpanName::Prefixed("shard ", shard.server.clone()),
            3,
            s.start,
            u.took,
        );
        span.attr("db.system", AttrValue::Static("mysql"));
        span.attr("furrow.shard", AttrValue::Str(shard.server));
        span.attr("peer.service", AttrValue::Str(shard.peer));
        if u.error {
            span.error = Some(("", None));
        }
        t.exporter.record(span);
    }
}

/// Records the statement's span when it is sampled; returns it as its children's parent.
pub(crate) fn statement(t: &CoreTrace, s: &Stmt<'_>) -> Option<runtime::trace::TraceParent> {
    let parent = traceparent_in_sql(s.sql);
    if !t.exporter.keep(parent.as_ref(), s.took, s.error.is_some()) {
        return None;
    }
    let n = &t.names;
    let text = n.digest(s.digest);
    let mut span = SpanRecord::new(
        parent.as_ref(),
        SpanName::Text(text.clone()),
        2, // server: the proxy serves the caller's call
        s.start,
        s.took,
    );
    span.attr("db.system", AttrValue::Static("mysql"));
    // The digest, never the text: literals stay out of the tracing store.
    span.attr("db.statement", AttrValue::Str(text));
    span.attr("furrow.digest", AttrValue::Hex(s.digest.hash));
    span.attr("db.user", AttrValue::Str(n.text(s.user)));
    span.attr("client.address", AttrValue::Ip(s.client));
    span.attr("furrow.group", AttrValue::Str(n.text(s.group)));
    // A sharded statement's peers are its units' shards (its child spans), not `shards`.
    let peer = (s.backend != SHARDS_BACKEND).then(|| n.peer(s.backend));
    span.attr(
        "furrow.backend",
        match &peer {
            Some(p) => AttrValue::Str(p.server.clone()),
            None => AttrValue::Static(SHARDS_BACKEND),
        },
    );
    span.attr("db.response.rows", AttrValue::Int(s.rows as i64));
    span.attr("furrow.reply_bytes", AttrValue::Int(s.bytes as i64));
    if let Some(p) = peer {
        span.attr("peer.service", AttrValue::Str(p.peer));
    }
    if !s.listener.is_empty() {
        span.attr("furrow.listener", AttrValue::Str(n.text(s.listener)));
    }
    if let Some(code) = s.error {
        span.error = Some(("MySQL error ", Some(code)));
        span.attr("db.error_code", AttrValue::Int(i64::from(code)));
    }
    let ids = span.as_parent();
    t.exporter.record(span);
    Some(ids)
}
