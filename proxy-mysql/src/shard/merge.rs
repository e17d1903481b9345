//! Streaming a sorted cross-shard read: plans of the shape `[Trim] → [Limit] → MergeSort(units)`
//! in the text protocol outside transactions. Each unit runs on a connection of its own (a shard
//! with several partitions lends several from its pool), so every unit's sorted rows can be read
//! from its own socket while the others wait in theirs. A k-way merge holds one head row per unit
//! (its key columns decoded to compare them as MariaDB orders them, ties to the lower unit), sends
//! the smallest to the client and reads the next row of that unit only. The merged rows are never
//! collected, so the row budget (`max_scatter_rows`) does not apply; memory is one head row per
//! unit, the sockets' buffers and the client's write buffer (flushed every [`FLUSH_AT`] bytes).
//!
//! Rows are copied byte for byte (re-sequenced); with `Trim` the helper columns at the end are cut
//! from the row's cells (no value is re-rendered). The client gets the first unit's column
//! definitions (all units return the same columns).
//!
//! Ending early (the LIMIT is reached, a unit fails, the client goes): a unit whose reply is
//! bounded (a LIMIT plan asks every unit for at most `offset + count ≤ max_limit_rows` rows) is
//! drained so its connection goes back to the pool clean; without a LIMIT the rest could be the
//! whole table, so such a connection is closed instead (the server stops at its next write). An
//! error before any byte of the result reached the client replaces the result with a plain ERR
//! (a shard's ERR keeps its code, prefixed `shard sN:`); after that it ends the result set, as a
//! server does for an error while sending rows. Every read is bounded by the group's
//! `query_timeout_ms` (from the start of the statement) and a closed socket fails the read, so a
//! lost shard never leaves the client waiting longer than that.

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::{com, status};
use codec::mysql::{ColumnDefinition, ErrPacket, Packet, TextRow, Value};
use router::sql::plan::merge_sort::compare_rows;
use router::sql::plan::{MergeSort, Plan, SortKey, Unit};
use router::sql::shard::ShardingRules;
use tokio::time::Instant;

use super::conn::ShardConn;
use super::run::{join_all, open, shard_err};
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

/// The row at the front of a lane: its packet and its key columns (other cells NULL).
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

    /// Reads the rest of the reply so the connection can be reused.
    async fn drain(&mut self) {
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
                while self.phase == Phase::Rows {
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

/// The merge's view of the rows: the column definitions and keys.
struct Merger {
    cols: Vec<ColumnDefinition>,
    keys: Vec<SortKey>,
    /// Key column indexes.
    key_idx: Vec<usize>,
}

impl Merger {
    fn new(cols: Vec<ColumnDefinition>, keys: Vec<SortKey>) -> Self {
        let key_idx = keys.iter().map(|k| k.index(cols.len())).collect();
        Self {
            cols,
            keys,
            key_idx,
        }
    }

    /// A row of the width of the columns holding the decoded key columns (the rest NULL).
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

    /// The lane whose head comes first (ties: the lower lane).
    fn best(&self, heads: &[Option<Head>]) -> Option<usize> {
        let mut best: Option<(usize, &Head)> = None;
        for (i, h) in heads.iter().enumerate() {
            let Some(h) = h else { continue };
            match best {
                Some((_, b))
                    if compare_rows(&h.keys, &b.keys, &self.keys, &self.cols) != Ordering::Less => {
                }
                _ => best = Some((i, h)),
            }
        }
        best.map(|(i, _)| i)
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
}

impl Reply {
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
    /// Streams a sorted read (see the module docs) to the client.
    pub(crate) async fn stream_merge(
        &mut self,
        cx: Ctx<'_>,
        rules: &ShardingRules,
        sr: &SortedRead<'_>,
    ) {
        let units = &sr.merge.input.units;
        let opened = join_all(
            units
                .iter()
                .map(|u| open(&cx, rules, u.shard, None, false))
                .collect(),
        )
        .await;
        let started = Instant::now();
        let mut lanes = Vec::with_capacity(units.len());
        let mut failed = None;
        for (u, r) in units.iter().zip(opened) {
            match r {
                Ok(conn) => {
                    let deadline = conn.group.query_timeout.map(|t| started + t);
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
            return encode::err(cx.client, &e);
        }
        let st = self.status();
        let mut reply = Reply {
            mark: cx.client.wbuf.len(),
            seq: 1,
            flushed: false,
        };
        let r = merge(&mut lanes, units, sr, cx.client, &mut reply, st).await;
        // Clean up before answering: bounded replies are drained, unbounded ones closed.
        for l in &mut lanes {
            if l.phase != Phase::Done && !l.conn.conn.broken {
                if sr.count.is_some() {
                    l.drain().await;
                } else {
                    l.conn.conn.broken = true;
                }
            }
        }
        for l in lanes {
            self.put_back(l.shard, l.conn);
        }
        let err = match r {
            Ok(()) => {
                let s = st.to_le_bytes();
                cx.client.queue(reply.seq, &[0xFE, 0, 0, s[0], s[1]]);
                return;
            }
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
        };
        if reply.flushed {
            cx.client.queue_err(reply.seq, &err);
        } else {
            cx.client.wbuf.truncate(reply.mark);
            encode::err(cx.client, &err);
        }
    }
}

/// Sends every unit, reads their column definitions, queues the client's, then merges the rows.
async fn merge(
    lanes: &mut [Lane],
    units: &[Unit],
    sr: &SortedRead<'_>,
    client: &mut Conn,
    reply: &mut Reply,
    st: u16,
) -> Result<(), Stop> {
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
        return Ok(());
    };
    let n = defs.len();
    let cols = defs
        .iter()
        .map(|d| ColumnDefinition::decode(d.clone()))
        .collect::<Result<Vec<_>, _>>();
    let cols = match cols {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("a column definition from a shard: {e}");
            return Err(match lanes.first_mut() {
                Some(l) => l.lost(reason),
                None => Stop::Lost(0, reason),
            });
        }
    };
    let keep = (sr.drop > 0).then(|| n.saturating_sub(sr.drop));
    // The client's column definitions.
    match keep {
        None => reply.seq = client.queue(reply.seq, &count),
        Some(k) => {
            let mut p = BytesMut::with_capacity(9);
            codec::mysql::resultset::encode_column_count(k as u64, &mut p);
            reply.seq = client.queue(reply.seq, &p);
        }
    }
    for d in defs.iter().take(keep.unwrap_or(n)) {
        reply.seq = client.queue(reply.seq, d);
    }
    let s = st.to_le_bytes();
    reply.seq = client.queue(reply.seq, &[0xFE, 0, 0, s[0], s[1]]);
    let m = Merger::new(cols, sr.merge.keys.clone());
    let mut heads = Vec::with_capacity(lanes.len());
    for l in lanes.iter_mut() {
        heads.push(l.next_row(&m).await?);
    }
    let mut skip = sr.offset;
    let mut left = sr.count;
    let mut buf = BytesMut::new();
    while left != Some(0) {
        let Some(b) = m.best(&heads) else { break };
        let Some(head) = heads.get_mut(b).and_then(Option::take) else {
            break;
        };
        if skip > 0 {
            skip -= 1;
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
        if let Some(l) = lanes.get_mut(b) {
            let next = l.next_row(&m).await?;
            if let Some(slot) = heads.get_mut(b) {
                *slot = next;
            }
        }
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
        assert_eq!((sr.offset, sr.count, sr.drop), (3, Some(10), 0));
        assert_eq!(sr.merge.input.units.len(), 4);
        assert_eq!(sr.merge.keys, vec![SortKey::new(1, true)]);
        let p = plan_of(&r, "SELECT id FROM orders ORDER BY amount, id");
        let sr = sorted_read(&p).unwrap_or_else(|| panic!("{}", p.render(&r)));
        assert_eq!((sr.offset, sr.count, sr.drop), (0, None, 1));
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
}
