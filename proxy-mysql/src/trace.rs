//! Spans of the MySQL data path (see `runtime::trace` for sampling and export): one span per
//! statement, joined to the caller's trace when the SQL carries a sqlcommenter `traceparent`
//! comment. Called from the one place each path accounts a statement (`Session::account`, the
//! sharding executor's `ops_done`) and only when `[tracing]` is configured.
//!
//! A span is recorded as a `runtime::trace::SpanRecord` of shared, pre-encoded blobs: the
//! digest's (name, `db.system`, `db.statement`, `furrow.digest`; per core by the digest's hash),
//! the connection's (`db.user`, `client.address`, `furrow.group`, `furrow.listener`; kept by the
//! session, [`ConnBlob`]), the backend's (`furrow.backend`, `peer.service`; per core), and three
//! numbers; its times are the statement's own `Instant` and duration. Nothing is formatted on the
//! executor.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::trace::{
    Blob, BlobBuilder, ErrorText, Exporter, HeadSampler, IntKey, SpanRecord, name_cut,
    traceparent_in_sql,
};

/// The backend of a sharded statement in its span, slow-log and audit records.
pub(crate) const SHARDS_BACKEND: &str = "shards";

/// One finished statement, as the span records it.
pub(crate) struct Stmt<'a> {
    /// Empty where the caller does not know it (the sharding executor).
    pub listener: &'a str,
    pub group: &'a str,
    pub user: &'a str,
    pub client: IpAddr,
    /// Where the connection's blob is kept (the session's, or the core's for sharded statements).
    pub conn: &'a ConnBlob,
    /// The server that ran it (None: a sharded statement, backend `shards`).
    pub backend: Option<&'a Rc<str>>,
    pub digest: &'a router::sql::Digest,
    /// When the statement started.
    pub start: Instant,
    pub took: Duration,
    pub rows: u64,
    pub bytes: u64,
    pub error: Option<u16>,
}

/// Most backends and shards a core keeps blobs of (beyond, a span makes its own).
const MAX_NAMES: usize = 256;
/// Digest blobs kept per core, by the low bits of the digest's hash.
const DIGEST_SLOTS: usize = 256;

/// A connection's blob (`db.user`, `client.address`, `furrow.group`, `furrow.listener`), remade
/// when one of them changes (a `COM_CHANGE_USER`, a sharded statement of another connection).
/// Boxed: every session holds one, most never traced (`idle_session_task_stays_small`).
#[derive(Default)]
pub(crate) struct ConnBlob(RefCell<Option<Box<ConnKey>>>);

struct ConnKey {
    user: Box<str>,
    group: Box<str>,
    listener: Box<str>,
    client: IpAddr,
    blob: Blob,
}

impl ConnBlob {
    fn get(&self, s: &Stmt<'_>) -> Blob {
        let mut k = self.0.borrow_mut();
        if let Some(k) = &*k
            && k.client == s.client
            && *k.user == *s.user
            && *k.group == *s.group
            && *k.listener == *s.listener
        {
            return k.blob.clone();
        }
        let mut b = BlobBuilder::attrs()
            .str("db.user", s.user)
            .ip("client.address", s.client)
            .str("furrow.group", s.group);
        if !s.listener.is_empty() {
            b = b.str("furrow.listener", s.listener);
        }
        let blob = b.build();
        *k = Some(Box::new(ConnKey {
            user: s.user.into(),
            group: s.group.into(),
            listener: s.listener.into(),
            client: s.client,
            blob: blob.clone(),
        }));
        blob
    }
}

/// The blobs of one core's spans, each made once and shared by its spans.
struct Blobs {
    /// By backend: `furrow.backend`, `peer.service` (the key is kept, so its address stays its own).
    backends: RefCell<Vec<(Rc<str>, Blob)>>,
    /// `furrow.backend = shards`.
    shards: Blob,
    /// By shard: a unit's name (`shard NAME`), kind, `db.system`, `furrow.shard`, `peer.service`.
    units: RefCell<Vec<(Box<str>, Blob)>>,
    /// By the digest's hash: its name, kind, `db.system`, `db.statement`, `furrow.digest`.
    digests: RefCell<Vec<Option<(u64, Blob)>>>,
    /// The connection blob of sharded statements (the last connection's).
    sharded_conn: ConnBlob,
}

impl Blobs {
    fn new() -> Blobs {
        Blobs {
            backends: RefCell::default(),
            shards: BlobBuilder::attrs()
                .str("furrow.backend", SHARDS_BACKEND)
                .build(),
            units: RefCell::default(),
            digests: RefCell::new(vec![None; DIGEST_SLOTS]),
            sharded_conn: ConnBlob::default(),
        }
    }

    fn backend(&self, server: &Rc<str>) -> Blob {
        let mut v = self.backends.borrow_mut();
        if let Some((_, b)) = v.iter().find(|(s, _)| Rc::ptr_eq(s, server)) {
            return b.clone();
        }
        let b = BlobBuilder::attrs()
            .str("furrow.backend", server)
            .str("peer.service", &format!("mysql:{server}"))
            .build();
        if v.len() < MAX_NAMES {
            v.push((server.clone(), b.clone()));
        }
        b
    }

    fn unit(&self, shard: &str) -> Blob {
        let mut v = self.units.borrow_mut();
        if let Some((_, b)) = v.iter().find(|(s, _)| **s == *shard) {
            return b.clone();
        }
        let b = BlobBuilder::named(format!("shard {shard}").as_bytes(), 3)
            .str("db.system", "mysql")
            .str("furrow.shard", shard)
            .str("peer.service", &format!("mysql:{shard}"))
            .build();
        if v.len() < MAX_NAMES {
            v.push((shard.into(), b.clone()));
        }
        b
    }

    fn digest(&self, d: &router::sql::Digest) -> Blob {
        let mut v = self.digests.borrow_mut();
        let slot = &mut v[(d.hash as usize) & (DIGEST_SLOTS - 1)];
        if let Some((h, b)) = slot
            && *h == d.hash
        {
            return b.clone();
        }
        // The digest, never the text: literals stay out of the tracing store.
        let b = BlobBuilder::named(name_cut(&d.text).as_bytes(), 2) // server: the proxy serves the caller's call
            .str("db.system", "mysql")
            .str("db.statement", &d.text)
            .hex("furrow.digest", d.hash)
            .build();
        *slot = Some((d.hash, b.clone()));
        b
    }
}

/// A core's span exporter, head sampler and the blobs of its spans.
pub(crate) struct CoreTrace {
    pub exporter: Arc<Exporter>,
    head: HeadSampler,
    blobs: Blobs,
}

impl CoreTrace {
    pub(crate) fn new(exporter: Arc<Exporter>) -> CoreTrace {
        CoreTrace {
            head: exporter.head_sampler(),
            exporter,
            blobs: Blobs::new(),
        }
    }

    /// Where the connection blob of sharded statements is kept.
    pub(crate) fn sharded_conn(&self) -> &ConnBlob {
        &self.blobs.sharded_conn
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

/// Whether a finished statement is traced (see `runtime::trace`): `Some` with the caller's
/// context (if any) when it is. Inlined where a statement is accounted, so that a statement not
/// traced costs the comment search and the sampling countdown, not a call with its arguments.
#[inline]
pub(crate) fn decide(
    t: &CoreTrace,
    sql: &str,
    took: Duration,
    error: bool,
) -> Option<Option<runtime::trace::TraceParent>> {
    let parent = traceparent_in_sql(sql);
    t.exporter
        .keep(parent.as_ref(), took, error, &t.head)
        .then_some(parent)
}

/// [`statement`] with a child span per unit of a sharded statement (`units` is emptied); nothing
/// when [`decide`] did not keep it (`decided` None).
pub(crate) fn statement_with_units(
    t: &CoreTrace,
    decided: Option<Option<runtime::trace::TraceParent>>,
    s: &Stmt<'_>,
    units: &mut Vec<UnitTiming>,
) {
    let Some(parent) = decided else {
        units.clear();
        return;
    };
    let parent = statement(t, parent, s);
    for u in units.drain(..) {
        // The units run concurrently from the statement's start: anchor them there.
        let name = t.blobs.unit(&u.shard);
        let mut span = SpanRecord::new(Some(&parent), &name, s.start, u.took);
        if u.error {
            span.fail(ErrorText::None, None);
        }
        t.exporter.record(span);
    }
}

/// Records the span of a statement [`decide`] kept, in the caller's trace `parent` when there is
/// one; returns it as its children's parent.
#[cold]
pub(crate) fn statement(
    t: &CoreTrace,
    parent: Option<runtime::trace::TraceParent>,
    s: &Stmt<'_>,
) -> runtime::trace::TraceParent {
    let b = &t.blobs;
    let name = b.digest(s.digest);
    let conn = s.conn.get(s);
    // A sharded statement's peers are its units' shards (its child spans), not `shards`.
    let peer = match s.backend {
        Some(server) => b.backend(server),
        None => b.shards.clone(),
    };
    let mut span = SpanRecord::new(parent.as_ref(), &name, s.start, s.took);
    span.blob(&conn);
    span.blob(&peer);
    span.int(IntKey::Rows, s.rows as i64);
    span.int(IntKey::ReplyBytes, s.bytes as i64);
    if let Some(code) = s.error {
        span.fail(ErrorText::MysqlError, Some(code));
        span.int(IntKey::ErrorCode, i64::from(code));
    }
    let ids = span.as_parent();
    t.exporter.record(span);
    ids
}
