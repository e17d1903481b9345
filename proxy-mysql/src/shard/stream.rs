//! Streaming a plain scatter read (`Scatter` without a merge above it): every unit is sent at once
//! (shards work in parallel, one connection each, a shard's units pipelined), then the results are
//! copied to the client unit after unit: the first unit's column definitions, then every unit's
//! row packets re-sequenced, then one EOF. For a prepared statement (binary protocol, outside
//! transactions; also a single-unit `Route` read) the definitions are decoded and re-encoded and
//! every text row is decoded and re-encoded as a binary row by [`encode`], exactly as the buffered
//! path would send them. Nothing is buffered beyond the sockets, so the row budget does not apply.
//! A shard error before any byte reached the client replaces the result with a plain ERR (as on
//! the buffered path); after that it ends the result set with that ERR (as a server does for an
//! error while sending rows); the other pending replies are drained so the connections stay
//! usable. Later shards wait in their socket buffers while earlier ones are
//! copied: a client slower than the servers' `net_write_timeout` on a huge result fails the read.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::{com, status};
use codec::mysql::{ColumnDefinition, ErrPacket};
use router::sql::plan::Unit;
use router::sql::shard::ShardingRules;

use super::conn::ShardConn;
use super::{Ctx, ShardSession, encode};
use crate::backend::RespKind;
use crate::conn::ConnError;
use crate::error::ProxyError;

/// Flush to the client when this much is queued.
pub(super) const FLUSH_AT: usize = 256 * 1024;

enum Stop {
    /// The shard answered ERR (the connection is fine).
    Refused(ErrPacket),
    /// The shard or the client connection failed.
    Lost(String),
}

impl ShardSession {
    /// Streams the rows of `units` (a read scatter) to the client, in the binary protocol when
    /// `binary` (a prepared statement).
    pub(crate) async fn stream_scatter(
        &mut self,
        cx: Ctx<'_>,
        rules: &ShardingRules,
        units: &[Unit],
        binary: bool,
    ) {
        let shards: Vec<usize> = {
            let mut v: Vec<usize> = units.iter().map(|u| u.shard).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let mut conns: BTreeMap<usize, ShardConn> = match self.open_all(&cx, rules, &shards).await {
            Ok(c) => c.into_iter().collect(),
            Err(e) => return encode::err(cx.client, &e),
        };
        // Send everything first so the shards work in parallel.
        let mut sent_ok = true;
        for u in units {
            if let Some(c) = conns.get_mut(&u.shard) {
                let mut p = Vec::with_capacity(u.sql.len() + 1);
                p.push(com::QUERY);
                p.extend_from_slice(u.sql.as_bytes());
                c.conn.queue_command(&p);
            }
        }
        for c in conns.values_mut() {
            if c.conn.conn.flush().await.is_err() {
                c.conn.broken = true;
                sent_ok = false;
            }
        }
        let st = self.status();
        let mut seq = 1u8;
        let mark = cx.client.wbuf.len();
        let mut sent = Sent::default();
        let mut stop: Option<(usize, Stop)> = None;
        let mut next = 0;
        let mut recode = binary.then(Binary::default);
        if !sent_ok {
            stop = Some((0, Stop::Lost("sending to a shard failed".into())));
        }
        while stop.is_none() && next < units.len() {
            let u = &units[next];
            next += 1;
            let Some(c) = conns.get_mut(&u.shard) else {
                continue;
            };
            let timeout = c.query_timeout;
            let f = copy_result(c, cx.client, &mut seq, &mut sent, st, recode.as_mut());
            let r = match timeout {
                Some(t) => tokio::time::timeout(t, f)
                    .await
                    .unwrap_or_else(|_| Err(Stop::Lost("statement timeout".into()))),
                None => f.await,
            };
            if let Err(s) = r {
                if matches!(s, Stop::Lost(_)) {
                    c.conn.broken = true;
                }
                stop = Some((u.shard, s));
            }
        }
        // Drain replies not read yet (after a stop) so the connections can be reused.
        for u in units.iter().skip(next) {
            if let Some(c) = conns.get_mut(&u.shard)
                && !c.conn.broken
                && c.conn
                    .forward(RespKind::ResultSet, None, None, u64::MAX)
                    .await
                    .is_err()
            {
                c.conn.broken = true;
            }
        }
        let lost = conns.values().any(|c| c.conn.broken);
        for (s, c) in conns {
            self.put_back(s, c);
        }
        match stop {
            None => {
                let s = st.to_le_bytes();
                if !sent.started {
                    // No unit at all (cannot happen for a planned scatter): an empty OK.
                    cx.client.queue_ok(1, 0, 0, st);
                } else {
                    cx.client.queue(seq, &[0xFE, 0, 0, s[0], s[1]]);
                }
            }
            Some((shard, why)) => {
                let name = rules.shards.get(shard).map_or("?", |s| s.name.as_str());
                let err = match why {
                    Stop::Refused(e) => ErrPacket {
                        code: e.code,
                        sql_state: e.sql_state,
                        message: format!("shard {name}: {}", String::from_utf8_lossy(&e.message))
                            .into(),
                    },
                    Stop::Lost(reason) => ProxyError::BackendLost {
                        server: name.to_string(),
                        reason,
                    }
                    .to_err_packet(),
                };
                let err = if lost {
                    self.abort_txn(rules, err).await
                } else {
                    err
                };
                if sent.flushed {
                    // Part of the result reached the client: the ERR ends it, as a server ends
                    // a result set on an error while sending rows.
                    cx.client.queue_err(seq, &err);
                } else {
                    // Nothing left yet: the ERR is the whole reply, as on the buffered path.
                    cx.client.wbuf.truncate(mark);
                    encode::err(cx.client, &err);
                }
            }
        }
    }
}

/// How far the client's reply has come.
#[derive(Default)]
struct Sent {
    /// The column definitions are queued.
    started: bool,
    /// Part of the reply was written to the socket.
    flushed: bool,
}

/// Re-encoding a streamed result in the binary protocol (prepared statements).
#[derive(Default)]
struct Binary {
    /// The client's columns: the first unit's (as the buffered path sends them).
    cols: Vec<ColumnDefinition>,
    cells: Vec<Option<Bytes>>,
    buf: BytesMut,
}

/// Copies one unit's result set to the client (definitions only for the first one); with
/// `binary`, definitions and rows are re-encoded for the binary protocol.
async fn copy_result(
    c: &mut ShardConn,
    client: &mut crate::conn::Conn,
    seq: &mut u8,
    sent: &mut Sent,
    st: u16,
    mut binary: Option<&mut Binary>,
) -> Result<(), Stop> {
    let lost = |e: ConnError| Stop::Lost(e.to_string());
    let b = &mut c.conn;
    let first = b.conn.read_packet().await.map_err(|e| {
        b.broken = true;
        lost(e)
    })?;
    match first.payload.first() {
        Some(0xFF) => {
            return match ErrPacket::decode(first.payload) {
                Ok(e) => Err(Stop::Refused(e)),
                Err(e) => {
                    b.broken = true;
                    Err(Stop::Lost(e.to_string()))
                }
            };
        }
        Some(0x00) | Some(0xFB) => {
            b.broken = true;
            return Err(Stop::Lost(
                "expected rows from a shard, got an OK packet".into(),
            ));
        }
        _ => {}
    }
    let n = codec::mysql::resultset::decode_column_count(first.payload.clone()).map_err(|e| {
        b.broken = true;
        Stop::Lost(e.to_string())
    })?;
    if !sent.started && binary.is_none() {
        *seq = client.queue(*seq, &first.payload);
    }
    // This unit's columns, decoded to read its rows (binary only).
    let mut cols = Vec::new();
    for _ in 0..n {
        let p = b.conn.read_packet().await.map_err(|e| {
            b.broken = true;
            lost(e)
        })?;
        if binary.is_some() {
            cols.push(ColumnDefinition::decode(p.payload).map_err(|e| {
                b.broken = true;
                Stop::Lost(format!("a column definition from a shard: {e}"))
            })?);
        } else if !sent.started {
            *seq = client.queue(*seq, &p.payload);
        }
    }
    let _eof = b.conn.read_packet().await.map_err(|e| {
        b.broken = true;
        lost(e)
    })?;
    if !sent.started {
        match binary.as_deref_mut() {
            Some(bin) => {
                bin.cols = cols.clone();
                *seq = encode::columns(client, *seq, &bin.cols, st);
            }
            None => {
                let s = st.to_le_bytes();
                *seq = client.queue(*seq, &[0xFE, 0, 0, s[0], s[1]]);
            }
        }
        sent.started = true;
    }
    loop {
        let p = b.conn.read_packet().await.map_err(|e| {
            b.broken = true;
            lost(e)
        })?;
        match p.payload.first() {
            Some(0xFE) if p.payload.len() < 9 => {
                let flags = u16::from_le_bytes([
                    p.payload.get(3).copied().unwrap_or(0),
                    p.payload.get(4).copied().unwrap_or(0),
                ]);
                if flags & status::SERVER_MORE_RESULTS_EXISTS != 0 {
                    b.broken = true;
                    return Err(Stop::Lost("unexpected multi-result from a shard".into()));
                }
                return Ok(());
            }
            Some(0xFF) => {
                return match ErrPacket::decode(p.payload) {
                    Ok(e) => Err(Stop::Refused(e)),
                    Err(e) => {
                        b.broken = true;
                        Err(Stop::Lost(e.to_string()))
                    }
                };
            }
            _ => {
                match binary.as_deref_mut() {
                    None => *seq = client.queue(*seq, &p.payload),
                    Some(bin) => {
                        let row = encode::decode_row(p.payload, &cols, &mut bin.cells)
                            .map_err(|e| e.to_string())
                            .and_then(|row| {
                                bin.buf.clear();
                                encode::binary_row(row, &bin.cols, &mut bin.buf)
                                    .map_err(|e| e.to_string())
                            });
                        if let Err(e) = row {
                            b.broken = true; // the rest of this result is unread
                            return Err(Stop::Lost(format!("a row from a shard: {e}")));
                        }
                        *seq = client.queue(*seq, &bin.buf);
                    }
                }
                if client.wbuf.len() >= FLUSH_AT {
                    sent.flushed = true;
                    if let Err(e) = client.flush().await {
                        b.broken = true; // the rest of this result is unread
                        return Err(Stop::Lost(format!("client: {e}")));
                    }
                }
            }
        }
    }
}
