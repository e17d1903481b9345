//! Streamed sharded reads: the socket side of router's sans-IO streaming executor
//! ([`router::sql::plan::stream`], which decides everything about the reply). This file opens the
//! connections, sends every unit's SQL at once (the shards work in parallel), then feeds the
//! executor one packet at a time from the socket of the unit it asks for and writes what it
//! produces to the client, flushing every [`FLUSH_AT`] bytes. Shapes (chosen in
//! `ShardSession::run_streaming_or_buffered`):
//!
//! - plain scatter reads (`Scatter` without a merge, also inside a transaction for COM_QUERY; a
//!   prepared single-unit `Route` read as a one-unit scatter): one connection per shard, a shard's
//!   units pipelined on it and copied in unit order;
//! - sorted reads (`[Trim] → [Limit] → MergeSort`) and grouped reads (`GroupStream` over a
//!   `MergeSort`), outside transactions: one connection per unit (a shard with several partitions
//!   lends several from its pool, at most half of a group's `pool_max`: [`fits_pools`]), so that
//!   every unit's sorted rows can be read from its own socket while the others wait in theirs.
//!
//! For a prepared statement (`binary`) the shards still get text SQL; the executor re-encodes the
//! column definitions and every row for the binary protocol as the buffered path would send them.
//!
//! Ending: when the executor is done (complete, LIMIT reached, a shard error, a lost connection)
//! or the client is gone, each unit's connection is cleaned up as the executor says
//! ([`Drain`]): given back, read to the end of its reply (bounded replies: a LIMIT), read up to
//! `max_limit_rows` more packets then closed (grouped reads without a pushed LIMIT), or closed
//! (unbounded: a sorted read without a LIMIT, a broken connection). An error before any byte of
//! the reply was flushed replaces the reply with a plain ERR (a shard's ERR keeps its code,
//! prefixed `shard sN:`; a merge error is the buffered path's ERR); after that it ends the result
//! set, as a server does for an error while sending rows. Every read of a merge is bounded by the
//! group's `query_timeout_ms` from the statement's start (for a plain scatter: from the start of
//! each unit's reply) and a closed socket fails the read, so a lost shard never leaves the client
//! waiting longer than that. Later units of a plain scatter wait in their socket buffers while
//! earlier ones are copied: a client slower than the servers' `net_write_timeout` on a huge result
//! fails the read.

use std::collections::HashMap;

use codec::mysql::ErrPacket;
use router::sql::plan::{
    Drain, ExecLimits, StreamError, StreamExec, StreamOptions, Streamed, Unit, Want,
};
use router::sql::shard::ShardingRules;
use tokio::time::Instant;

use super::conn::ShardConn;
use super::run::{join_all, open, shard_err, shard_error_packet};
use super::{Ctx, ShardSession, encode};
use crate::backend::BACKEND_CAPS;
use crate::error::ProxyError;

/// Flush to the client when this much is queued.
pub(super) const FLUSH_AT: usize = 256 * 1024;

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

/// A shard connection feeding units' replies.
struct Feed {
    shard: usize,
    conn: ShardConn,
    /// When reads give up (`query_timeout_ms`).
    deadline: Option<Instant>,
}

impl Feed {
    /// The next packet of the reply: [`ProxyError::Timeout`] past the deadline,
    /// [`ProxyError::BackendLost`] when the socket fails (either way the connection is broken).
    async fn read(&mut self) -> Result<bytes::Bytes, ProxyError> {
        let read = self.conn.conn.conn.read_packet();
        let r = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d, read).await {
                Ok(r) => r.map_err(|e| ProxyError::lost(&self.conn.conn.server, e)),
                Err(_) => Err(ProxyError::Timeout),
            },
            None => read
                .await
                .map_err(|e| ProxyError::lost(&self.conn.conn.server, e)),
        };
        if r.is_err() {
            self.conn.conn.broken = true;
        }
        r.map(|p| p.payload)
    }

    /// Restarts the statement timeout (a plain scatter's next unit).
    fn restart(&mut self) {
        self.deadline = self.conn.query_timeout.map(|t| Instant::now() + t);
    }
}

impl ShardSession {
    /// Streams `shape` (see the module docs) to the client, in the binary protocol when `binary`:
    /// open the connections, send every unit, [`pump`] the executor, [`drain`] the connections,
    /// then answer an error if the executor (or the client) stopped early.
    pub(crate) async fn stream(
        &mut self,
        cx: Ctx<'_>,
        rules: &ShardingRules,
        shape: Streamed<'_>,
        binary: bool,
    ) {
        let units = shape.units();
        let concat = matches!(shape, Streamed::Concat(_));
        let opened = if concat {
            self.open_per_shard(&cx, rules, units).await
        } else {
            self.open_per_unit(&cx, rules, units).await
        };
        let (mut feeds, feed_of) = match opened {
            Ok(f) => f,
            Err(e) => return encode::err(cx.client, &e),
        };
        let mut exec = StreamExec::new(
            shape,
            StreamOptions {
                binary,
                status: self.status(),
                backend_caps: BACKEND_CAPS,
                limits: ExecLimits {
                    max_rows: rules.max_scatter_rows,
                },
                drain_rows: rules.max_limit_rows,
            },
        );
        // With tracing on, each unit's last read (and whether it failed) makes its child span.
        let mut timing: Vec<(Option<Instant>, bool)> = if cx.core.trace.is_some() {
            self.trace_units.clear();
            vec![(None, false); units.len()]
        } else {
            Vec::new()
        };
        let sent = Instant::now();
        send_all(&mut exec, &mut feeds, &feed_of, units).await;
        let mark = cx.client.wbuf.len();
        let pumped = pump(
            &mut exec,
            &mut feeds,
            &feed_of,
            cx.client,
            concat,
            &mut timing,
        )
        .await;
        for (u, (last, failed)) in units.iter().zip(&timing) {
            self.trace_units.push(crate::trace::UnitTiming {
                shard: rules
                    .shards
                    .get(u.shard)
                    .map_or_else(|| u.shard.to_string(), |s| s.name.clone()),
                took: last.map_or(std::time::Duration::ZERO, |t| t.duration_since(sent)),
                error: *failed,
            });
        }
        // Clean the connections up before answering.
        drain(&mut exec, &mut feeds, &feed_of, concat).await;
        let lost = feeds.iter().any(|f| f.conn.conn.broken);
        for f in feeds {
            self.put_back(f.shard, f.conn);
        }
        let err = match pumped.client_gone {
            Some(e) => e.to_err_packet(),
            None => match exec.take_error() {
                None => return, // the executor wrote the whole reply
                Some(e) => stream_error_packet(rules, units, e),
            },
        };
        let err = if lost {
            self.abort_txn(rules, err).await
        } else {
            err
        };
        if pumped.flushed {
            // Part of the result reached the client: the ERR ends it.
            cx.client.queue_err(exec.seq(), &err);
        } else {
            // Nothing left yet: the ERR is the whole reply, as on the buffered path.
            cx.client.wbuf.truncate(mark);
            encode::err(cx.client, &err);
        }
    }

    /// One connection per shard of `units` (the transaction's inside one); each unit's feed.
    async fn open_per_shard(
        &mut self,
        cx: &Ctx<'_>,
        rules: &ShardingRules,
        units: &[Unit],
    ) -> Result<(Vec<Feed>, Vec<usize>), ErrPacket> {
        let mut shards: Vec<usize> = units.iter().map(|u| u.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        let conns = self.open_all(cx, rules, &shards).await?;
        let feeds: Vec<Feed> = conns
            .into_iter()
            .map(|(shard, conn)| Feed {
                shard,
                deadline: None,
                conn,
            })
            .collect();
        let feed_of = units
            .iter()
            .map(|u| {
                feeds
                    .iter()
                    .position(|f| f.shard == u.shard)
                    .unwrap_or(usize::MAX)
            })
            .collect();
        Ok((feeds, feed_of))
    }

    /// One connection per unit, opened concurrently (on a failure the others go back); reads
    /// time out `query_timeout_ms` after now.
    async fn open_per_unit(
        &mut self,
        cx: &Ctx<'_>,
        rules: &ShardingRules,
        units: &[Unit],
    ) -> Result<(Vec<Feed>, Vec<usize>), ErrPacket> {
        let targets: Vec<_> = units
            .iter()
            .map(|u| self.target(cx, rules, u.shard))
            .collect();
        let opened = join_all(
            units
                .iter()
                .zip(&targets)
                .map(|(u, t)| open(cx, rules, u.shard, t.as_ref(), None, None))
                .collect(),
        )
        .await;
        let started = Instant::now();
        let mut feeds = Vec::with_capacity(units.len());
        let mut failed = None;
        for (u, r) in units.iter().zip(opened) {
            match r {
                Ok(conn) => feeds.push(Feed {
                    shard: u.shard,
                    deadline: conn.query_timeout.map(|t| started + t),
                    conn,
                }),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            for f in feeds {
                self.put_back(f.shard, f.conn);
            }
            return Err(e);
        }
        Ok((feeds, (0..units.len()).collect()))
    }
}

/// Queues every unit's SQL on its connection and flushes them all, so the shards work in
/// parallel; a connection that cannot be written to loses its units.
async fn send_all(
    exec: &mut StreamExec<'_>,
    feeds: &mut [Feed],
    feed_of: &[usize],
    units: &[Unit],
) {
    for (u, f) in units.iter().zip(feed_of) {
        if let Some(feed) = feeds.get_mut(*f) {
            feed.conn.conn.conn.queue_query(&u.sql);
        }
    }
    for (i, feed) in feeds.iter_mut().enumerate() {
        if let Err(e) = feed.conn.conn.conn.flush().await {
            feed.conn.conn.broken = true;
            if let Some(u) = feed_of.iter().position(|f| *f == i) {
                exec.lost(u, format!("sending: {e}"));
            }
        }
    }
}

/// How [`pump`] ended.
struct Pumped {
    /// Some of the reply was flushed to the client (an error must end it, not replace it).
    flushed: bool,
    /// The client's socket failed while flushing.
    client_gone: Option<ProxyError>,
}

/// Runs the executor to its end: reads the packet of the unit it asks for, feeds it, and flushes
/// the client every [`FLUSH_AT`] bytes. A plain scatter (`concat`) restarts a unit's read timeout
/// when its reply begins. `timing` (empty unless tracing is on) gets each unit's last read and
/// whether the unit was lost.
async fn pump(
    exec: &mut StreamExec<'_>,
    feeds: &mut [Feed],
    feed_of: &[usize],
    client: &mut crate::conn::Conn,
    concat: bool,
    timing: &mut [(Option<Instant>, bool)],
) -> Pumped {
    let mut flushed = false;
    let mut current = None;
    loop {
        let u = match exec.step(&mut client.wbuf) {
            Want::Done => break,
            Want::Read(u) => u,
        };
        let Some(feed) = feed_of.get(u).and_then(|f| feeds.get_mut(*f)) else {
            exec.lost(u, "no connection");
            if let Some(t) = timing.get_mut(u) {
                t.1 = true;
            }
            continue;
        };
        if concat && current != Some(u) {
            current = Some(u);
            feed.restart();
        }
        let read = feed.read().await;
        if let Some(t) = timing.get_mut(u) {
            *t = (Some(Instant::now()), t.1 || read.is_err());
        }
        match read {
            Ok(p) => exec.feed(u, p),
            // The executor reports it as the unit's lost connection (ERR 1158 naming the
            // shard), a timeout included, as the buffered path does.
            Err(e) => exec.lost(u, e.into_reason()),
        }
        if client.wbuf.len() >= FLUSH_AT {
            flushed = true;
            if let Err(e) = client.flush().await {
                return Pumped {
                    flushed,
                    client_gone: Some(ProxyError::client(e)),
                };
            }
        }
    }
    Pumped {
        flushed,
        client_gone: None,
    }
}

/// Cleans each unit's connection up as the executor says ([`Drain`]), in unit order (a shard's
/// units are pipelined on its connection): nothing, read to the end of the reply, read at most
/// `n` more packets, or mark it broken (closed when put back).
async fn drain(exec: &mut StreamExec<'_>, feeds: &mut [Feed], feed_of: &[usize], concat: bool) {
    for (u, f) in feed_of.iter().enumerate() {
        let Some(feed) = feeds.get_mut(*f) else {
            continue;
        };
        if feed.conn.conn.broken {
            continue;
        }
        let most = match exec.drain(u) {
            Drain::Clean => continue,
            Drain::Close => {
                feed.conn.conn.broken = true;
                continue;
            }
            Drain::All => None,
            Drain::UpTo(n) => Some(n),
        };
        if concat {
            feed.restart();
        }
        let mut left = most;
        loop {
            if left == Some(0) {
                // Too much left: the server stops at its next write.
                feed.conn.conn.broken = true;
                break;
            }
            left = left.map(|n| n - 1);
            match feed.read().await {
                Ok(p) if exec.discard(u, &p) => break,
                Ok(_) => {}
                Err(_) => break, // broken now
            }
        }
        if matches!(exec.drain(u), Drain::Close) {
            feed.conn.conn.broken = true;
        }
    }
}

/// The client's ERR for the executor's error: a shard's ERR with its code (prefixed with the
/// shard), a lost connection named after the shard, a merge error as the buffered path has it.
fn stream_error_packet(rules: &ShardingRules, units: &[Unit], e: StreamError) -> ErrPacket {
    let shard_of = |unit: usize| units.get(unit).map_or(usize::MAX, |u| u.shard);
    match e {
        StreamError::Refused { unit, err } => shard_err(rules, shard_of(unit), &err),
        StreamError::Lost { unit, reason } => {
            let name = rules
                .shards
                .get(shard_of(unit))
                .map_or("?", |s| s.name.as_str());
            ProxyError::lost(name, reason).to_err_packet()
        }
        StreamError::Merge(e) => shard_error_packet(&e),
    }
}

#[cfg(test)]
mod tests {
    use router::sql::plan::{SortKey, grouped_read, sorted_read};

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
            let gr = grouped_read(&p).unwrap_or_else(|| panic!("{sql}:\n{}", p.render(&r)));
            assert_eq!(gr.merge.input.units.len(), 4, "{sql}");
            assert_eq!(gr.merge.keys, gr.agg.sorted, "{sql}");
        }
        for sql in [
            "SELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY n",
            "SELECT COUNT(*) FROM orders",
            "SELECT id FROM orders ORDER BY id",
        ] {
            let p = plan_of(&r, sql);
            assert!(grouped_read(&p).is_none(), "{sql}:\n{}", p.render(&r));
        }
    }
}
