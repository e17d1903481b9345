//! Transactions across shards: per-shard backend transactions opened lazily (on the first statement
//! that touches a shard after `BEGIN`) and finished together at `COMMIT`/`ROLLBACK`.
//!
//! `autocommit = 0` makes every statement part of a transaction, as on the server: the session
//! opens an implicit transaction before each statement when none is open (the same machinery as
//! `BEGIN`: shards join on first touch), `COMMIT`/`ROLLBACK` end it and the next statement opens the
//! next one; `SET autocommit = 1` commits the open one; a statement that commits implicitly on the
//! server (DDL) commits the open transaction first and runs outside one. The shard connections
//! themselves stay in autocommit mode: their transactions are opened with `BEGIN`. Status flags
//! follow the server's: `SERVER_STATUS_AUTOCOMMIT` while autocommit is on, `SERVER_STATUS_IN_TRANS`
//! after `BEGIN`, and in an implicit transaction once a statement touched a shard.
//!
//! Without XA, commit is a loop over the shards in shard order, not two-phase: if shard k fails to
//! commit, shards before k are committed, shard k's outcome is unknown or rolled back by the server,
//! and the shards after k are rolled back; the client gets ERR 1180 listing what happened on each
//! shard. With `xa = true` the first shard a transaction touches is its coordinator (a plain
//! `BEGIN`), the others join with `XA START`, and a transaction with such branches commits in two
//! phases ([`super::xa`]); one that touched a single shard commits as without XA.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use codec::mysql::ErrPacket;
use codec::mysql::consts::status;

use router::sql::shard::ShardingRules;

use super::conn::{ShardConn, simple};
use super::run::names;
use super::{Ctx, encode};
use crate::error::errs;

/// A client's sharded state: its open transaction and the last insert id it saw.
#[derive(Default)]
pub struct ShardSession {
    /// Inside `BEGIN ... COMMIT`: the shards touched so far, with their connections.
    pub(crate) txn: Option<BTreeMap<usize, ShardConn>>,
    /// `LAST_INSERT_ID()` as the client sees it (the largest id of its last INSERT).
    pub(crate) last_insert_id: u64,
    /// Prepared statements.
    pub(crate) stmts: super::stmt::Stmts,
    /// The first global id the current statement's plan generated (its INSERT's insert id).
    pub(crate) generated: Option<u64>,
    /// `SET autocommit = 0` is in effect: statements run in implicit transactions.
    pub(crate) manual_commit: bool,
    /// The open transaction was opened by `BEGIN` / `START TRANSACTION`.
    pub(crate) txn_explicit: bool,
    /// A shard joined the open transaction (a statement ran in it).
    pub(crate) txn_touched: bool,
    /// The current statement's units, timed per shard, only with `[tracing]` (its span gets a
    /// child span per unit; see `crate::trace`).
    pub(crate) trace_units: Vec<crate::trace::UnitTiming>,
    /// The shards' groups, targets and schemas for the current config generation.
    pub(crate) targets: super::conn::ShardTargets,
    /// The SQL of the last point statement's unit: one buffer reused by the fast path.
    pub(crate) unit_sql: String,
    /// With XA: the open transaction's coordinator (the first shard it touched, a plain `BEGIN`).
    pub(crate) xa_coord: Option<usize>,
    /// With XA: the shards that joined the open transaction with `XA START`.
    pub(crate) xa_branches: BTreeSet<usize>,
    /// With XA: the open transaction's gtrid, made when its first branch joins.
    /// In flight (see [`super::xid::Gtrid`]) until the transaction ends.
    pub(crate) xa_gtrid: Option<super::xid::Gtrid>,
    /// When the current COM_QUERY statement started (set around it by its ops gate): a routed
    /// unit's latency counts from there, as the read/write-split path counts its statements.
    pub(crate) started: Option<std::time::Instant>,
    /// How long the current statement's routed unit took (from `started`), measured when its
    /// reply came: the ops records reuse it instead of reading the clock again.
    pub(crate) took: Option<std::time::Duration>,
}

impl Drop for ShardSession {
    fn drop(&mut self) {
        // Connections in a transaction carry uncommitted work: never reuse them.
        if let Some(t) = self.txn.take() {
            for (_, c) in t {
                c.discard();
            }
        }
    }
}

impl ShardSession {
    /// Back to a fresh session (COM_RESET_CONNECTION, COM_CHANGE_USER; called by the session's
    /// own reset, which also keeps only the charset of its `SET`s): the open transaction rolled
    /// back on its shards, prepared statements and the insert id forgotten, autocommit on.
    /// `rules`: the listener's, when it is sharded.
    pub async fn reset(&mut self, rules: Option<&super::RulesFor>) {
        let names = match rules {
            Some(Ok(r)) => names(r),
            _ => Vec::new(),
        };
        let _ = self.finish(false, &names).await;
        self.stmts = super::stmt::Stmts::default();
        self.last_insert_id = 0;
        self.manual_commit = false;
    }

    /// Status flags for OK/EOF packets.
    pub fn status(&self) -> u16 {
        let mut s = 0;
        if !self.manual_commit {
            s |= status::SERVER_STATUS_AUTOCOMMIT;
        }
        if self.txn.is_some() && (self.txn_explicit || self.txn_touched) {
            s |= status::SERVER_STATUS_IN_TRANS;
        }
        s
    }

    /// With `autocommit = 0`: opens the implicit transaction the next statement runs in, unless
    /// one is open (shards join it when the statement touches them).
    pub(crate) fn implicit_begin(&mut self) {
        if self.manual_commit && self.txn.is_none() {
            self.txn = Some(BTreeMap::new());
            self.txn_explicit = false;
            self.txn_touched = false;
        }
    }

    /// `SET autocommit = on`: switching it on commits the open transaction (as the server does);
    /// switching it off opens none until the next statement.
    pub(crate) async fn set_autocommit(
        &mut self,
        on: bool,
        rules: &ShardingRules,
    ) -> Result<(), ErrPacket> {
        if on && self.manual_commit {
            self.manual_commit = false;
            return self.finish(true, &names(rules)).await;
        }
        if on && self.txn.is_some() && !self.txn_explicit {
            // The implicit transaction opened for this very statement: nothing ran in it.
            self.finish(true, &names(rules)).await?;
        }
        self.manual_commit = !on;
        Ok(())
    }

    /// Whether a transaction is open.
    pub fn in_txn(&self) -> bool {
        self.txn.is_some()
    }

    /// The statement that opens `shard`'s backend transaction as it joins the open one (`None`:
    /// no transaction is open). With XA (`rules.xa`) the first shard is the coordinator and opens
    /// a plain transaction; every later one opens an XA branch of the transaction's gtrid.
    pub(crate) fn begin_sql(
        &mut self,
        rules: &ShardingRules,
        shard: usize,
        ids: &super::xa::XaIds,
    ) -> Option<String> {
        self.txn.as_ref()?;
        if !rules.xa {
            return Some("BEGIN".into());
        }
        match self.xa_coord {
            None => {
                self.xa_coord = Some(shard);
                Some("BEGIN".into())
            }
            Some(c) if c == shard => Some("BEGIN".into()),
            Some(_) => {
                let g = self
                    .xa_gtrid
                    .get_or_insert_with(|| ids.gtrid(rules.worker_id));
                let start = format!("XA START {}", super::xa::xid(g, shard));
                self.xa_branches.insert(shard);
                Some(start)
            }
        }
    }

    /// Forgets that `shard` joined with `begin` (its open failed; the transaction goes on
    /// without it or is aborted).
    pub(crate) fn forget_join(&mut self, shard: usize) {
        self.xa_branches.remove(&shard);
        if self.xa_coord == Some(shard) && self.xa_branches.is_empty() {
            self.xa_coord = None;
        }
    }

    pub(crate) async fn begin(&mut self, cx: Ctx<'_>, rules: &ShardingRules) {
        // As in MySQL, BEGIN inside a transaction commits it first.
        if self.txn.is_some()
            && let Err(e) = self.finish(true, &names(rules)).await
        {
            return encode::err(cx.client, &e);
        }
        self.txn = Some(BTreeMap::new());
        self.txn_explicit = true;
        self.txn_touched = false;
        let st = self.status();
        cx.client.queue_ok(1, 0, 0, st);
    }

    pub(crate) async fn commit(&mut self, cx: Ctx<'_>, rules: &ShardingRules) {
        let r = self.finish(true, &names(rules)).await;
        match r {
            Ok(()) => {
                let st = self.status();
                cx.client.queue_ok(1, 0, 0, st);
            }
            Err(e) => encode::err(cx.client, &e),
        }
    }

    pub(crate) async fn rollback(&mut self, cx: Ctx<'_>, rules: &ShardingRules) {
        let r = self.finish(false, &names(rules)).await;
        match r {
            Ok(()) => {
                let st = self.status();
                cx.client.queue_ok(1, 0, 0, st);
            }
            Err(e) => encode::err(cx.client, &e),
        }
    }

    /// Ends the transaction on every shard it touched (no-op outside one).
    pub(crate) async fn finish(&mut self, commit: bool, names: &[String]) -> Result<(), ErrPacket> {
        self.txn_explicit = false;
        self.txn_touched = false;
        let coord = self.xa_coord.take();
        let branches = std::mem::take(&mut self.xa_branches);
        let gtrid = self.xa_gtrid.take();
        let Some(conns) = self.txn.take() else {
            return Ok(());
        };
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
        if let Some(g) = gtrid.filter(|_| !branches.is_empty()) {
            if commit {
                return super::xa::commit(conns, coord, &branches, &g, &name).await;
            }
            super::xa::rollback(conns, &branches, &g).await;
            return Ok(());
        }
        let mut failed: Option<(usize, String)> = None;
        let mut report = String::new();
        for (i, mut c) in conns {
            let verb = if commit && failed.is_none() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            match simple(&mut c.conn, verb).await {
                Ok(None) => {
                    let _ = write!(
                        report,
                        " {}={};",
                        name(i),
                        if verb == "COMMIT" {
                            "committed"
                        } else {
                            "rolled back"
                        }
                    );
                    c.release();
                }
                Ok(Some(e)) => {
                    let msg = String::from_utf8_lossy(&e.message).into_owned();
                    let _ = write!(report, " {}={verb} failed ({msg});", name(i));
                    if failed.is_none() && verb == "COMMIT" {
                        failed = Some((i, msg));
                    }
                    c.discard();
                }
                Err(e) => {
                    let e = e.into_reason();
                    let _ = write!(report, " {}={verb} lost ({e});", name(i));
                    if failed.is_none() && verb == "COMMIT" {
                        failed = Some((i, e));
                    }
                    c.discard();
                }
            }
        }
        match failed {
            None => Ok(()),
            Some((i, _)) => Err(errs::partial_commit(&name(i), &report)),
        }
    }
}
