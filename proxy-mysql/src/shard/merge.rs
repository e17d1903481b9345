//! Streaming cross-shard reads merged from one socket per unit, outside transactions, in the text
//! protocol (COM_QUERY) or the binary protocol (prepared statements: every output row is decoded
//! and re-encoded as a binary row by [`encode`], with the column definitions the buffered path
//! would send). Two shapes stream:
//!
//! - sorted reads, `[Trim] → [Limit] → MergeSort(units)` ([`sorted_read`]): merged rows are copied
//!   to the client byte for byte (re-sequenced); with `Trim` the helper columns at the end are cut
//!   from the row's cells (no value is re-rendered). The client gets the first unit's column
//!   definitions (all units return the same columns).
//! - grouped reads, `[Trim] → [Limit] → Project → [Filter] → Aggregate(sorted) → MergeSort(units)`
//!   (`router::sql::plan::grouped_read`: GROUP BY whose ORDER BY names only group columns, or
//!   none, so the output order is the group order): the merged partial rows are pushed one by one
//!   into a `router::sql::plan::GroupStream`, and each finished group that passes HAVING and the
//!   OFFSET is re-rendered (column definitions and values encoded by [`encode`], as the buffered
//!   path does) and queued as soon as the next group starts. GROUP BY ordered by an aggregate
//!   (a `Sort` over the groups) and `DISTINCT` over aggregates keep the buffered path.
//!
//! Each unit runs on a connection of its own (a shard with several partitions lends several from
//! its pool), so every unit's sorted rows can be read from its own socket while the others wait in
//! theirs. A k-way merge ([`Merger`]) holds one head row per unit (its key columns decoded to compare
//! them as MariaDB orders them, ties to the lower unit; a grouped read decodes the whole row), takes
//! the smallest and reads the next row of that unit only. The merged rows are never collected, so
//! the row budget (`max_scatter_rows`) does not bound them; memory is one head row per unit, the
//! open group of a grouped read (its COUNT/SUM(DISTINCT) value sets, which do count against
//! `max_scatter_rows`), the sockets' buffers and the client's write buffer (flushed every
//! [`FLUSH_AT`] bytes).
//!
//! Ending early (the LIMIT is reached, a unit fails, the client goes): a unit whose reply is
//! bounded (a sorted read with a LIMIT asks every unit for at most `offset + count ≤
//! max_limit_rows` rows) is drained so its connection goes back to the pool clean; a sorted read
//! without a LIMIT could have the whole table left, so such a connection is closed instead (the
//! server stops at its next write). The units of a grouped read carry a LIMIT only when the planner
//! could push `offset + count` down (no HAVING, no COUNT/SUM(DISTINCT): otherwise a shard cannot
//! know which of its groups count), so they are drained up to `max_limit_rows` more rows each and
//! closed if the reply goes on. An error before any byte of the result reached the client
//! replaces the result with a plain ERR (a shard's ERR keeps its code, prefixed `shard sN:`; a
//! merge error such as the budget of a group's distinct values is the buffered path's ERR); after
//! that it ends the result set, as a server does for an error while sending rows. Every read is
//! bounded by the group's `query_timeout_ms` (from the start of the statement) and a closed socket
//! fails the read, so a lost shard never leaves the client waiting longer than that.

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::{com, status};
use codec::mysql::{ColumnDefinition, ErrPacket, Packet, TextRow, Value};
use router::sql::plan::collate;
use router::sql::plan::merge_sort::{check_key_collations, compare_rows};
use router::sql::plan::{ExecLimits, GroupedRead, MergeSort, Plan, ShardError, SortKey, Unit};
use router::sql::shard::ShardingRules;
use tokio::time::Instant;

use super::conn::ShardConn;
use super::run::{join_all, open, shard_err, shard_error_packet};
use super::stream::FLUSH_AT;
use super::{Ctx, ShardSession, encode};
use crate::backend::RespKind;
use crate::conn::Conn;
use crate::error::ProxyError;

/// A plan that streams as a sorted merge: `[Trim] → [Limit] → MergeSort`.
pub(crate) struct SortedRead<'a> {
    /// The merge (units and keys).
    pub merge: &'a MergeSort,
    /// Merged rows skipped first.
    pub offset: u64,
    /// Merged rows sent at most (`None`: all).
    pub count: Option<u64>,
    /// Helper columns cut from the end of every row.
    pub drop: usize,
}

/// The streaming shape of `p`, if it has one (and at least one unit).
pub(crate) fn sorted_read(p: &Plan) -> Option<SortedRead<'_>> {
    let (drop, p) = match p {
        Plan::Trim(t) => (t.drop, &*t.input),
        p => (0, p),
    };
    let (offset, count, p) = match p {
        Plan::Limit(l) => (
            l.offset,
            (l.count != u64::MAX).then_some(l.count),
            &*l.input,
        ),
        p => (0, None, p),
    };
    match p {
        Plan::MergeSort(m) if !m.input.units.is_empty() => Some(SortedRead {
            merge: m,
            offset,
            count,
            drop,
        }),
        _ => None,
    }
}

/// Whether one connection per unit fits the pools: a statement takes at most half of a group's
/// `pool_max` (per executor), so concurrent sorted reads cannot starve each other of connections.
/// Otherwise the plan takes the buffered path (one connection per shard).
pub(crate) fn fits_pools(cx: &Ctx<'_>, rules: &ShardingRules, units: &[Unit]) -> bool {
    let mut per_group: HashMap<&str, u32> = HashMap::new();
    for u in units {
        let Some(s) = rules.shards.get(u.shard) else {
            return false;
        };
        *per_group.entry(s.group.as_str()).or_default() += 1;
    }
    per_group.into_iter().all(|(g, n)| {
        cx.snap
            .config
            .mysql_group(g)
            .is_some_and(|g| n <= (g.pool_max / 2).max(1))
    })
}

/// How far a unit's reply has been read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing read yet.
    Unread,
    /// Column definitions read; rows (or the end) come next.
    Rows,
    /// The reply was read to its end (EOF or ERR).
    Done,
}

/// One unit's reply being merged.
struct Lane {
    shard: usize,
    conn: ShardConn,
    deadline: Option<Instant>,
    phase: Phase,
}

/// The row at the front of a lane: its packet and its decoded cells (the key columns; every column
/// for a grouped read; the other cells NULL).
struct Head {
    payload: Bytes,
    keys: Vec<Value>,
}

/// Why the merge stopped before its end.
enum Stop {
    /// A shard answered ERR (its connection is fine).
    Refused(usize, ErrPacket),
    /// A shard connection failed (it is broken now).
    Lost(usize, String),
    /// The client connection failed.
    Client(String),
    /// The merge itself failed (a grouped read: the distinct-value budget, groups out of order,
    /// a value that does not encode).
    Merge(ShardError),
}

/// What happens to a unit's reply that was not read to its end.
#[derive(Clone, Copy)]
enum Drain {
    /// Read to the end (the reply is bounded).
    All,
    /// Close the connection (the rest could be the whole table).
    Close,
    /// Read at most this many more packets, then close.
    UpTo(u64),
}

impl Lane {
    async fn read(&mut self) -> Result<Packet, Stop> {
        let r = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d, self.conn.conn.conn.read_packet()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("statement timeout".to_string()),
            },
            None => self
                .conn
                .conn
                .conn
                .read_packet()
                .await
                .map_err(|e| e.to_string()),
        };
        r.map_err(|e| self.lost(e))
    }

    fn lost(&mut self, reason: impl Into<String>) -> Stop {
        self.conn.conn.broken = true;
        self.phase = Phase::Done;
        Stop::Lost(self.shard, reason.into())
    }

    fn refused(&mut self, payload: Bytes) -> Stop {
        self.phase = Phase::Done;
        match ErrPacket::decode(payload) {
            Ok(e) => Stop::Refused(self.shard, e),
            Err(e) => self.lost(e.to_string()),
        }
    }

    /// Reads the column definitions: the raw column-count and definition packets.
    async fn header(&mut self) -> Result<(Bytes, Vec<Bytes>), Stop> {
        let first = self.read().await?;
        match first.payload.first() {
            Some(0xFF) => return Err(self.refused(first.payload)),
            Some(0x00) | Some(0xFB) => {
                return Err(self.lost("expected rows from a shard, got an OK packet"));
            }
            _ => {}
        }
        let n = codec::mysql::resultset::decode_column_count(first.payload.clone())
            .map_err(|e| self.lost(e.to_string()))?;
        let mut defs = Vec::with_capacity((n as usize).min(4096));
        for _ in 0..n {
            defs.push(self.read().await?.payload);
        }
        let _eof = self.read().await?;
        self.phase = Phase::Rows;
        Ok((first.payload, defs))
    }

    /// The next row (`None` at the end of the result).
    async fn next_row(&mut self, m: &Merger) -> Result<Option<Head>, Stop> {
        let p = self.read().await?;
        match p.payload.first() {
            Some(0xFE) if p.payload.len() < 9 => {
                self.phase = Phase::Done;
                let flags = u16::from_le_bytes([
                    p.payload.get(3).copied().unwrap_or(0),
                    p.payload.get(4).copied().unwrap_or(0),
                ]);
                if flags & status::SERVER_MORE_RESULTS_EXISTS != 0 {
                    return Err(self.lost("unexpected multi-result from a shard"));
                }
                Ok(None)
            }
            Some(0xFF) => Err(self.refused(p.payload)),
            _ => match m.keys_of(&p.payload) {
                Ok(keys) => Ok(Some(Head {
                    payload: p.payload,
                    keys,
                })),
                Err(e) => Err(self.lost(format!("a row from a shard: {e}"))),
            },
        }
    }

    /// Reads the rest of the reply so the connection can be reused; with `most`, gives up (and
    /// closes the connection) after that many packets.
    async fn drain(&mut self, most: Option<u64>) {
        match self.phase {
            Phase::Done => {}
            Phase::Unread => {
                let f = self
                    .conn
                    .conn
                    .forward(RespKind::ResultSet, None, None, u64::MAX);
                let ok = match self.deadline {
                    Some(d) => matches!(tokio::time::timeout_at(d, f).await, Ok(Ok(_))),
                    None => f.await.is_ok(),
                };
                if !ok {
                    self.conn.conn.broken = true;
                }
                self.phase = Phase::Done;
            }
            Phase::Rows => {
                let mut left = most;
                while self.phase == Phase::Rows {
                    if left == Some(0) {
                        // Too much left: the server stops at its next write.
                        self.conn.conn.broken = true;
                        self.phase = Phase::Done;
                        break;
                    }
                    left = left.map(|n| n - 1);
                    match self.read().await {
                        Ok(p) => match p.payload.first() {
                            Some(0xFE) if p.payload.len() < 9 => self.phase = Phase::Done,
                            Some(0xFF) => self.phase = Phase::Done,
                            _ => {}
                        },
                        Err(_) => break, // broken now
                    }
                }
            }
        }
    }
}

/// The k-way merge: the column definitions, the keys and one head row per lane.
struct Merger {
    cols: Vec<ColumnDefinition>,
    keys: Vec<SortKey>,
    /// Indexes of the columns decoded from each row.
    key_idx: Vec<usize>,
    /// Each lane's next row (`None`: the lane is at its end, or not read yet).
    heads: Vec<Option<Head>>,
}

impl Merger {
    /// A merge by `keys`; `whole_rows` decodes every column (the rows are aggregated), otherwise
    /// only the key columns and the `helpers` last columns (the rows are copied).
    fn new(
        cols: Vec<ColumnDefinition>,
        keys: Vec<SortKey>,
        whole_rows: bool,
        helpers: usize,
    ) -> Self {
        let key_idx = if whole_rows {
            (0..cols.len()).collect()
        } else {
            let n = cols.len();
            keys.iter()
                .map(|k| k.index(n))
                .chain(n.saturating_sub(helpers)..n)
                .collect()
        };
        Self {
            cols,
            keys,
            key_idx,
            heads: Vec::new(),
        }
    }

    /// A row of the width of the columns holding the decoded columns (the rest NULL).
    fn keys_of(&self, payload: &Bytes) -> Result<Vec<Value>, codec::mysql::MysqlError> {
        let n = self.cols.len();
        let mut cells = Vec::with_capacity(n);
        TextRow::decode_into(payload.clone(), n, &mut cells)?;
        let mut row = vec![Value::Null; n];
        for &i in &self.key_idx {
            if let (Some(cell), Some(col), Some(slot)) =
                (cells.get(i), self.cols.get(i), row.get_mut(i))
            {
                *slot = codec::mysql::value::decode_text(cell.as_ref(), col)?;
            }
        }
        Ok(row)
    }

    /// Reads every lane's first row, then learns the keys' collations from them (the
    /// `COLLATION(...)` helper columns of `merge`'s units, resolved by router's
    /// [`collate::resolve`], as the buffered path does).
    async fn fill(&mut self, lanes: &mut [Lane], merge: &MergeSort) -> Result<(), Stop> {
        self.heads.clear();
        for l in lanes.iter_mut() {
            let h = l.next_row(self).await?;
            self.heads.push(h);
        }
        let firsts: Vec<&[Value]> = self
            .heads
            .iter()
            .flatten()
            .map(|h| h.keys.as_slice())
            .collect();
        self.cols =
            collate::resolve(&merge.input.collations, &self.cols, &firsts).map_err(Stop::Merge)?;
        check_key_collations(&self.keys, &self.cols, "ORDER BY").map_err(Stop::Merge)
    }

    /// Takes the head that comes first (ties: the lower lane) and its lane; `None` when every lane
    /// is at its end. The lane has no head until [`Merger::refill`].
    fn pop(&mut self) -> Option<(usize, Head)> {
        let mut best: Option<(usize, &Head)> = None;
        for (i, h) in self.heads.iter().enumerate() {
            let Some(h) = h else { continue };
            match best {
                Some((_, b))
                    if compare_rows(&h.keys, &b.keys, &self.keys, &self.cols) != Ordering::Less => {
                }
                _ => best = Some((i, h)),
            }
        }
        let b = best.map(|(i, _)| i)?;
        let head = self.heads.get_mut(b).and_then(Option::take)?;
        Some((b, head))
    }

    /// Reads the next row of lane `b` (after its head was taken).
    async fn refill(&mut self, lanes: &mut [Lane], b: usize) -> Result<(), Stop> {
        if let Some(l) = lanes.get_mut(b) {
            let next = l.next_row(self).await?;
            if let Some(slot) = self.heads.get_mut(b) {
                *slot = next;
            }
        }
        Ok(())
    }
}

/// Where the client's reply stands.
struct Reply {
    /// `wbuf` length before the reply.
    mark: usize,
    /// Next sequence id.
    seq: u8,
    /// Part of the reply was written to the socket.
    flushed: bool,
    /// Server status flags of the EOF packets.
    status: u16,
    /// Rows in the binary protocol (a prepared statement).
    binary: bool,
}

impl Reply {
    fn new(client: &Conn, status: u16, binary: bool) -> Self {
        Self {
            mark: client.wbuf.len(),
            seq: 1,
            flushed: false,
            status,
            binary,
        }
    }

    /// Queues an EOF packet (after the column definitions, or ending the rows).
    fn eof(&mut self, client: &mut Conn) {
        let s = self.status.to_le_bytes();
        self.seq = client.queue(self.seq, &[0xFE, 0, 0, s[0], s[1]]);
    }

    /// Queues a row (cut to `keep` of its `n` cells when given), flushing past [`FLUSH_AT`].
    async fn send_row(
        &mut self,
        client: &mut Conn,
        row: (usize, &Bytes),
        keep: Option<usize>,
        n: usize,
        buf: &mut BytesMut,
    ) -> Result<(), Stop> {
        let (shard, payload) = row;
        match keep {
            None => self.seq = client.queue(self.seq, payload),
            Some(keep) => {
                let mut cells = Vec::with_capacity(n);
                TextRow::decode_into(payload.clone(), n, &mut cells)
                    .map_err(|e| Stop::Lost(shard, format!("a row from a shard: {e}")))?;
                cells.truncate(keep);
                buf.clear();
                TextRow { cells }.encode(buf);
                self.seq = client.queue(self.seq, buf);
            }
        }
        self.flush_past(client).await
    }

    /// Queues a row of values re-rendered for `cols` (text or binary protocol), flushing past
    /// [`FLUSH_AT`].
    async fn send_values(
        &mut self,
        client: &mut Conn,
        row: Vec<Value>,
        cols: &[ColumnDefinition],
        buf: &mut BytesMut,
    ) -> Result<(), Stop> {
        buf.clear();
        if self.binary {
            encode::binary_row(row, cols, buf).map_err(Stop::Merge)?;
        } else {
            encode::text_row(&row, cols, buf).map_err(Stop::Merge)?;
        }
        self.seq = client.queue(self.seq, buf);
        self.flush_past(client).await
    }

    async fn flush_past(&mut self, client: &mut Conn) -> Result<(), Stop> {
        if client.wbuf.len() >= FLUSH_AT {
            self.flushed = true;
            client
                .flush()
                .await
                .map_err(|e| Stop::Client(format!("client: {e}")))?;
        }
        Ok(())
    }
}

impl ShardSession {
    /// Streams a sorted read (see the module docs) to the client, in the binary protocol when
    /// `binary`.
    pub(crate) async fn stream_merge(
        &mut self,
        cx: Ctx<'_>,
        rules: &ShardingRules,
        sr: &SortedRead<'_>,
        binary: bool,
    ) {
        let units = &sr.merge.input.units;
        let mut lanes = match self.open_lanes(&cx, rules, units).await {
            Ok(l) => l,
            Err(e) => return encode::err(cx.client, &e),
        };
        let mut reply = Reply::new(cx.client, self.status(), binary);
        let r = merge(&mut lanes, units, sr, cx.client, &mut reply).await;
        let drain = if sr.count.is_some() {
            Drain::All
        } else {
            Drain::Close
        };
        self.end_stream(cx, rules, lanes, r, reply, drain).await;
    }

    /// Streams a grouped read (see the module docs) to the client, in the binary protocol when
    /// `binary`.
    pub(crate) async fn stream_groups(
        &mut self,
        cx: Ctx<'_>,
        rules: &ShardingRules,
        gr: &GroupedRead<'_>,
        binary: bool,
    ) {
        let units = &gr.merge.input.units;
        let mut lanes = match self.open_lanes(&cx, rules, units).await {
            Ok(l) => l,
            Err(e) => return encode::err(cx.client, &e),
        };
        let mut reply = Reply::new(cx.client, self.status(), binary);
        let limits = ExecLimits {
            max_rows: rules.max_scatter_rows,
        };
        let r = merge_groups(&mut lanes, units, gr, limits, cx.client, &mut reply).await;
        let drain = Drain::UpTo(rules.max_limit_rows);
        self.end_stream(cx, rules, lanes, r, reply, drain).await;
    }

    /// One connection per unit, opened concurrently; on a failure the others go back.
    async fn open_lanes(
        &mut self,
        cx: &Ctx<'_>,
        rules: &ShardingRules,
        units: &[Unit],
    ) -> Result<Vec<Lane>, ErrPacket> {
        let opened = join_all(
            units
                .iter()
                .map(|u| open(cx, rules, u.shard, None, false))
                .collect(),
        )
        .await;
        let started = Instant::now();
        let mut lanes = Vec::with_capacity(units.len());
        let mut failed = None;
        for (u, r) in units.iter().zip(opened) {
            match r {
                Ok(conn) => {
                    let deadline = conn.query_timeout.map(|t| started + t);
                    lanes.push(Lane {
                        shard: u.shard,
                        conn,
                        deadline,
                        phase: Phase::Done, // nothing sent yet
                    });
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            for l in lanes {
                self.put_back(l.shard, l.conn);
            }
            return Err(e);
        }
        Ok(lanes)
    }

    /// Cleans up the lanes (drained or closed as `drain` says) before answering, then ends the
    /// reply: its final EOF, or an ERR (alone when nothing was flushed yet, else after the rows).
    async fn end_stream(
        &mut self,
        cx: Ctx<'_>,
        rules: &ShardingRules,
        mut lanes: Vec<Lane>,
        r: Result<(), Stop>,
        mut reply: Reply,
        drain: Drain,
    ) {
        for l in &mut lanes {
            if l.phase != Phase::Done && !l.conn.conn.broken {
                match drain {
                    Drain::All => l.drain(None).await,
                    Drain::UpTo(n) => l.drain(Some(n)).await,
                    Drain::Close => l.conn.conn.broken = true,
                }
            }
        }
        for l in lanes {
            self.put_back(l.shard, l.conn);
        }
        let err = match r {
            Ok(()) => return reply.eof(cx.client),
            Err(Stop::Refused(shard, e)) => shard_err(rules, shard, &e),
            Err(Stop::Lost(shard, reason)) => ProxyError::BackendLost {
                server: rules
                    .shards
                    .get(shard)
                    .map_or("?".into(), |s| s.name.clone()),
                reason,
            }
            .to_err_packet(),
            Err(Stop::Client(reason)) => crate::error::errs::internal(&reason),
            Err(Stop::Merge(e)) => shard_error_packet(&e),
        };
        if reply.flushed {
            cx.client.queue_err(reply.seq, &err);
        } else {
            cx.client.wbuf.truncate(reply.mark);
            encode::err(cx.client, &err);
        }
    }
}

/// The units' column definitions: the first unit's raw column-count and definition packets, and
/// the definitions decoded.
struct Header {
    count: Bytes,
    defs: Vec<Bytes>,
    cols: Vec<ColumnDefinition>,
}

/// Sends every unit and reads every lane's column definitions (`None`: no lanes).
async fn start(lanes: &mut [Lane], units: &[Unit]) -> Result<Option<Header>, Stop> {
    // Send everything first so the shards work in parallel. A lane whose send failed is broken;
    // the ones after it are never sent (nothing queued on them either).
    for (l, u) in lanes.iter_mut().zip(units) {
        let mut p = Vec::with_capacity(u.sql.len() + 1);
        p.push(com::QUERY);
        p.extend_from_slice(u.sql.as_bytes());
        l.conn.conn.queue_command(&p);
        if let Err(e) = l.conn.conn.conn.flush().await {
            return Err(l.lost(format!("sending: {e}")));
        }
        l.phase = Phase::Unread;
    }
    // Every lane's column definitions, even after an error: a statement that fails on every shard
    // leaves every connection clean (an ERR is the whole reply), and the rest are at their rows.
    let mut first: Option<(Bytes, Vec<Bytes>)> = None;
    let mut failed: Option<Stop> = None;
    for l in lanes.iter_mut() {
        match l.header().await {
            Ok(_) if failed.is_some() => {}
            Ok((count, defs)) => match &first {
                Some((_, d)) if d.len() != defs.len() => {
                    failed = Some(l.lost("the units returned different column counts"));
                }
                Some(_) => {}
                None => first = Some((count, defs)),
            },
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let Some((count, defs)) = first else {
        return Ok(None);
    };
    let cols = defs
        .iter()
        .map(|d| ColumnDefinition::decode(d.clone()))
        .collect::<Result<Vec<_>, _>>();
    match cols {
        Ok(cols) => Ok(Some(Header { count, defs, cols })),
        Err(e) => {
            let reason = format!("a column definition from a shard: {e}");
            Err(match lanes.first_mut() {
                Some(l) => l.lost(reason),
                None => Stop::Lost(0, reason),
            })
        }
    }
}

/// A sorted read: starts the units, queues the client's column definitions, then merges the rows.
async fn merge(
    lanes: &mut [Lane],
    units: &[Unit],
    sr: &SortedRead<'_>,
    client: &mut Conn,
    reply: &mut Reply,
) -> Result<(), Stop> {
    let Some(h) = start(lanes, units).await? else {
        return Ok(());
    };
    let n = h.defs.len();
    let keep = (sr.drop > 0).then(|| n.saturating_sub(sr.drop));
    // The client's column definitions: copied (text), or re-encoded as the buffered path does
    // (binary: the rows are re-encoded for them).
    let mut out_cols = Vec::new();
    if reply.binary {
        out_cols = h.cols.iter().take(keep.unwrap_or(n)).cloned().collect();
        reply.seq = encode::columns(client, reply.seq, &out_cols, reply.status);
    } else {
        match keep {
            None => reply.seq = client.queue(reply.seq, &h.count),
            Some(k) => {
                let mut p = BytesMut::with_capacity(9);
                codec::mysql::resultset::encode_column_count(k as u64, &mut p);
                reply.seq = client.queue(reply.seq, &p);
            }
        }
        for d in h.defs.iter().take(keep.unwrap_or(n)) {
            reply.seq = client.queue(reply.seq, d);
        }
        reply.eof(client);
    }
    // Binary rows are re-encoded from values: every column is decoded.
    let helpers = sr.merge.input.collations.len();
    let mut m = Merger::new(h.cols, sr.merge.keys.clone(), reply.binary, helpers);
    m.fill(lanes, sr.merge).await?;
    let mut skip = sr.offset;
    let mut left = sr.count;
    let mut buf = BytesMut::new();
    while left != Some(0) {
        let Some((b, head)) = m.pop() else { break };
        if skip > 0 {
            skip -= 1;
        } else if reply.binary {
            let mut row = head.keys;
            row.truncate(keep.unwrap_or(n));
            reply.send_values(client, row, &out_cols, &mut buf).await?;
            left = left.map(|c| c - 1);
            if left == Some(0) {
                break;
            }
        } else {
            reply
                .send_row(
                    client,
                    (lanes.get(b).map_or(0, |l| l.shard), &head.payload),
                    keep,
                    n,
                    &mut buf,
                )
                .await?;
            left = left.map(|c| c - 1);
            if left == Some(0) {
                break;
            }
        }
        m.refill(lanes, b).await?;
    }
    Ok(())
}

/// A grouped read: starts the units, queues the output column definitions, then folds the merged
/// partial rows group by group, queueing each output row as soon as its group is complete.
async fn merge_groups(
    lanes: &mut [Lane],
    units: &[Unit],
    gr: &GroupedRead<'_>,
    limits: ExecLimits,
    client: &mut Conn,
    reply: &mut Reply,
) -> Result<(), Stop> {
    let Some(h) = start(lanes, units).await? else {
        return Ok(());
    };
    let mut m = Merger::new(h.cols, gr.merge.keys.clone(), true, 0);
    m.fill(lanes, gr.merge).await?;
    // The groups compare by the collations just learned; the client sees the definitions'
    // charsets.
    let mut groups = gr.start(m.cols.clone(), limits);
    reply.seq = encode::columns(client, reply.seq, groups.columns(), reply.status);
    let mut buf = BytesMut::new();
    while !groups.is_done() {
        let Some((b, head)) = m.pop() else {
            if let Some(row) = groups.finish().map_err(Stop::Merge)? {
                reply
                    .send_values(client, row, groups.columns(), &mut buf)
                    .await?;
            }
            break;
        };
        if let Some(row) = groups.push(head.keys).map_err(Stop::Merge)? {
            reply
                .send_values(client, row, groups.columns(), &mut buf)
                .await?;
            if groups.is_done() {
                break;
            }
        }
        m.refill(lanes, b).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::run::tests::{plan_of, rules};

    #[test]
    fn sorted_reads_are_recognised_with_their_limit_and_helper_columns() {
        let r = rules();
        let p = plan_of(
            &r,
            "SELECT id, amount FROM orders ORDER BY amount DESC LIMIT 3, 10",
        );
        let sr = sorted_read(&p).unwrap_or_else(|| panic!("{}", p.render(&r)));
        // One helper column: COLLATION(amount).
        assert_eq!((sr.offset, sr.count, sr.drop), (3, Some(10), 1));
        assert_eq!(sr.merge.input.units.len(), 4);
        assert_eq!(sr.merge.keys, vec![SortKey::new(1, true)]);
        let p = plan_of(&r, "SELECT id FROM orders ORDER BY amount, id");
        let sr = sorted_read(&p).unwrap_or_else(|| panic!("{}", p.render(&r)));
        // amount, then COLLATION(amount) and COLLATION(id).
        assert_eq!((sr.offset, sr.count, sr.drop), (0, None, 3));
        for sql in [
            "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status",
            "SELECT DISTINCT status FROM orders ORDER BY status",
            "SELECT id FROM orders",
            "SELECT id FROM orders LIMIT 5",
            "SELECT id FROM orders WHERE user_id = 7 ORDER BY id",
        ] {
            let p = plan_of(&r, sql);
            assert!(sorted_read(&p).is_none(), "{sql}:\n{}", p.render(&r));
        }
    }

    #[test]
    fn grouped_reads_are_recognised_when_the_output_keeps_the_group_order() {
        let r = rules();
        for sql in [
            "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status",
            "SELECT status, SUM(amount) AS s FROM orders GROUP BY status HAVING s > 3 LIMIT 2",
            "SELECT COUNT(*) FROM orders GROUP BY status ORDER BY status DESC LIMIT 1, 2",
            "SELECT DISTINCT status FROM orders ORDER BY status",
        ] {
            let p = plan_of(&r, sql);
            let gr = router::sql::plan::grouped_read(&p)
                .unwrap_or_else(|| panic!("{sql}:\n{}", p.render(&r)));
            assert_eq!(gr.merge.input.units.len(), 4, "{sql}");
            assert_eq!(gr.merge.keys, gr.agg.sorted, "{sql}");
        }
        for sql in [
            "SELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY n",
            "SELECT COUNT(*) FROM orders",
            "SELECT id FROM orders ORDER BY id",
        ] {
            let p = plan_of(&r, sql);
            assert!(
                router::sql::plan::grouped_read(&p).is_none(),
                "{sql}:\n{}",
                p.render(&r)
            );
        }
    }
}
