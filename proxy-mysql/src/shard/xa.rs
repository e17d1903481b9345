//! XA two-phase commit across shards (`xa = true` in `[sharding.NAME]`), its recovery at
//! start-up and its background resolver.
//!
//! The first shard a transaction touches is its **coordinator**: its backend transaction is a
//! plain `BEGIN`, as without XA. Every other shard that joins opens an XA branch (`XA START`).
//! A transaction that touched one shard therefore commits with one plain `COMMIT`, at no XA cost.
//! One that touched several commits in two phases, as Vitess's 2PC does with its metadata shard:
//!
//! 1. `XA END` + `XA PREPARE` on every branch (concurrently). A failure here rolls back every
//!    shard (ERR 1402, `XA100`).
//! 2. The decision: `INSERT INTO furrow_xa_log` (in the coordinator shard's schema) inside the
//!    coordinator's own transaction, then its `COMMIT`. That commit is the commit point: the
//!    decision row and the coordinator's writes become durable together, or neither does.
//! 3. `XA COMMIT` on every branch (concurrently), then the decision row is deleted.
//!
//! Recovery ([`recover`]): a restarted proxy lists the prepared branches of every shard server
//! (`XA RECOVER`), keeps those its own worker id left behind in an earlier run (the xid names the
//! worker and the process incarnation), and commits each one whose decision row exists on a shard
//! of the sharding, rolling back the others. The decision log needs no extra server: it lives on
//! the shards the proxy already writes to, next to the data whose fate it records.
//! [`Resolver`] runs the same pass ([`resolve_pass`]) every few seconds while the proxy serves, for
//! branches left prepared by this process (never those of a transaction still in flight).
//!
//! Xids: gtrid `furrow:<worker>:<incarnation>:<seq>` (incarnation: the process's start time in
//! ms), bqual the shard index, formatID 1.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;

use codec::mysql::ErrPacket;
use router::config::{Config, Sharding};

use super::conn::{ShardConn, simple};
use super::run::join_all;
use crate::backend::BackendConn;
use crate::error::ProxyError;

/// The decision log table, one in each shard's schema (created by [`recover`] at start-up).
pub const LOG_TABLE: &str = "furrow_xa_log";

/// Environment variable of the test-only failpoints (never set it in production): `xa-before-
/// decision` kills the proxy (SIGKILL) after every branch is prepared and before the coordinator's
/// `COMMIT`; `xa-after-decision` after that `COMMIT` and before the branches' `XA COMMIT`.
pub const FAILPOINT_ENV: &str = "FURROW_TEST_FAILPOINT";

pub use super::xid::XaIds;

/// The xid of `shard`'s branch of `gtrid`, as XA statements spell it.
pub fn xid(gtrid: &str, shard: usize) -> String {
    format!("'{gtrid}','{shard}',1")
}

/// A parsed gtrid of ours: (worker, incarnation).
pub fn parse_gtrid(gtrid: &str) -> Option<(u16, u64)> {
    let mut it = gtrid.strip_prefix("furrow:")?.split(':');
    let worker = it.next()?.parse().ok()?;
    let incarnation = it.next()?.parse().ok()?;
    let _seq: u64 = it.next()?.parse().ok()?;
    it.next().is_none().then_some((worker, incarnation))
}

/// Whether the test-only failpoint `point` fires now (once per process, like the environment variable
/// that names it, alone or in a comma-separated list; the one process-wide flag of the failpoints): the failpoints that leave branches
/// prepared while the proxy keeps serving, and `reshard-skip-other` (`super::dual`). `xa-lose-decision`: the coordinator's `COMMIT`
/// is treated as lost (its connection dropped unsent: the server rolls it back); `xa-keep-prepared`:
/// the branches' `XA COMMIT` is treated as failed (not sent).
pub(crate) fn failpoint_once(point: &str) -> bool {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    std::env::var(FAILPOINT_ENV).is_ok_and(|v| v.split(',').any(|p| p == point))
        && !FIRED.swap(true, std::sync::atomic::Ordering::Relaxed)
}

/// Hits a test-only failpoint: the process kills itself with SIGKILL when `FURROW_TEST_FAILPOINT`
/// names `point`.
fn failpoint(point: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == point) {
        tracing::error!(
            failpoint = point,
            "test failpoint: killing the proxy (SIGKILL)"
        );
        // SAFETY: kill(2) on our own pid with a constant signal; no memory is touched.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// 1402 (`XA100`): the transaction was rolled back on every shard.
fn rolled_back(why: &str, report: &str) -> ErrPacket {
    ErrPacket::new(
        1402,
        "XA100",
        format!("furrow: XA transaction rolled back on every shard: {why}; shards:{report}"),
    )
}

/// A statement on one branch: `Ok(None)` done, `Ok(Some(msg))` refused by the server, `Err(msg)`
/// the connection failed.
async fn step(c: &mut ShardConn, sql: &str) -> Result<Option<String>, String> {
    match simple(&mut c.conn, sql).await {
        Ok(None) => Ok(None),
        Ok(Some(e)) => Ok(Some(format!(
            "{} ({})",
            String::from_utf8_lossy(&e.message),
            e.code
        ))),
        Err(e) => Err(e.into_reason()),
    }
}

/// Where a branch got to in phase 1.
enum Phase1 {
    Prepared,
    /// Refused at `XA END` (still active) or `XA PREPARE` (idle): the server can roll it back.
    Refused(&'static str, String),
    /// The connection failed: a branch not yet prepared is rolled back by the server when the
    /// connection closes; one lost during `XA PREPARE` may be prepared (recovery rolls it back).
    Lost(&'static str, String),
}

/// Commits a transaction with XA branches: `conns` are its connections by shard, `coord` its
/// coordinator, `branches` the shards opened with `XA START`, `gtrid` its id. Every connection is
/// released or discarded. `names` gives shard names for messages.
pub(super) async fn commit(
    conns: BTreeMap<usize, ShardConn>,
    coord: Option<usize>,
    branches: &BTreeSet<usize>,
    gtrid: &str,
    name: &dyn Fn(usize) -> String,
) -> Result<(), ErrPacket> {
    let mut coordinator = None;
    let mut xa = Vec::new();
    let mut stray = Vec::new();
    for (i, c) in conns {
        if Some(i) == coord {
            coordinator = Some((i, c));
        } else if branches.contains(&i) {
            xa.push((i, c));
        } else {
            stray.push((i, c));
        }
    }
    if coordinator.is_none() || !stray.is_empty() {
        // The coordinator's connection was lost during the transaction (or the config changed
        // under it): the commit cannot be atomic.
        let mut report = String::new();
        if let Some((i, c)) = coordinator {
            end_plain(i, c, &mut report, name).await;
        }
        for (i, c) in stray {
            end_plain(i, c, &mut report, name).await;
        }
        rollback_branches(xa, gtrid, &mut report, name).await;
        return Err(rolled_back(
            "the coordinator shard's connection is no longer part of the transaction",
            &report,
        ));
    }
    let Some((ci, mut cc)) = coordinator else {
        return Err(crate::error::errs::internal(
            "XA commit without a coordinator",
        ));
    };

    // Phase 1: prepare every branch.
    let phase1 = join_all(
        xa.into_iter()
            .map(|(i, mut c)| async move {
                let x = xid(gtrid, i);
                let r = match step(&mut c, &format!("XA END {x}")).await {
                    Ok(Some(e)) => Phase1::Refused("XA END", e),
                    Err(e) => Phase1::Lost("XA END", e),
                    Ok(None) => match step(&mut c, &format!("XA PREPARE {x}")).await {
                        Ok(None) => Phase1::Prepared,
                        Ok(Some(e)) => Phase1::Refused("XA PREPARE", e),
                        Err(e) => Phase1::Lost("XA PREPARE", e),
                    },
                };
                (i, c, r)
            })
            .collect(),
    )
    .await;
    let failed = phase1
        .iter()
        .find(|(_, _, r)| !matches!(r, Phase1::Prepared))
        .map(|(i, _, r)| match r {
            Phase1::Refused(at, e) => format!("shard {} refused {at}: {e}", name(*i)),
            Phase1::Lost(at, e) => format!("shard {} lost at {at}: {e}", name(*i)),
            Phase1::Prepared => String::new(),
        });
    if let Some(why) = failed {
        let mut report = String::new();
        end_plain(ci, cc, &mut report, name).await;
        undo_phase1(phase1, gtrid, &mut report, name).await;
        return Err(rolled_back(&why, &report));
    }
    let prepared: Vec<(usize, ShardConn)> = phase1.into_iter().map(|(i, c, _)| (i, c)).collect();

    // Phase 2: the decision, in the coordinator's transaction, committed with it.
    let insert = format!("INSERT INTO {LOG_TABLE} (gtrid) VALUES ('{gtrid}')");
    let decided = match step(&mut cc, &insert).await {
        Ok(None) => {
            failpoint("xa-before-decision");
            if failpoint_once("xa-lose-decision") {
                Err("test failpoint xa-lose-decision".to_string())
            } else {
                step(&mut cc, "COMMIT")
                    .await
                    .map(|r| r.map(|e| ("COMMIT", e)))
            }
        }
        Ok(Some(e)) => Ok(Some(("the decision log INSERT", e))),
        Err(e) => {
            // No COMMIT was sent: the coordinator's transaction dies with its connection.
            cc.discard();
            let mut report = format!(
                " {}=rolled back by the server (connection closed);",
                name(ci)
            );
            rollback_branches(prepared, gtrid, &mut report, name).await;
            return Err(rolled_back(
                &format!(
                    "coordinator shard {} lost at the decision log INSERT: {e}",
                    name(ci)
                ),
                &report,
            ));
        }
    };
    match decided {
        Ok(None) => {}
        Ok(Some((what, e))) => {
            let why = format!("coordinator shard {} refused {what}: {e}", name(ci));
            let mut report = String::new();
            end_plain(ci, cc, &mut report, name).await;
            rollback_branches(prepared, gtrid, &mut report, name).await;
            return Err(rolled_back(&why, &report));
        }
        Err(e) => {
            // The COMMIT may or may not have happened on the coordinator's server: the prepared
            // branches wait for recovery, which reads the decision log.
            cc.discard();
            let pending: Vec<String> = prepared
                .into_iter()
                .map(|(i, c)| {
                    c.discard();
                    name(i)
                })
                .collect();
            return Err(ErrPacket::new(
                1180,
                "HY000",
                format!(
                    "furrow: XA transaction {gtrid}: outcome unknown: the connection to the \
                     coordinator shard {} was lost at COMMIT ({e}); the prepared branches on \
                     shards {} are committed by the XA resolver (or recovery at the next start) if \
                     the decision was logged, else rolled back",
                    name(ci),
                    pending.join(", ")
                ),
            ));
        }
    }
    failpoint("xa-after-decision");

    // Phase 3: commit the branches.
    let keep = failpoint_once("xa-keep-prepared");
    let done = join_all(
        prepared
            .into_iter()
            .map(|(i, mut c)| async move {
                let r = if keep {
                    Err("test failpoint xa-keep-prepared".to_string())
                } else {
                    step(&mut c, &format!("XA COMMIT {}", xid(gtrid, i))).await
                };
                (i, c, r)
            })
            .collect(),
    )
    .await;
    let mut pending = Vec::new();
    for (i, c, r) in done {
        match r {
            Ok(None) => c.release(),
            Ok(Some(e)) | Err(e) => {
                pending.push(format!("{} ({e})", name(i)));
                c.discard();
            }
        }
    }
    if !pending.is_empty() {
        cc.discard();
        return Err(ErrPacket::new(
            1180,
            "HY000",
            format!(
                "furrow: XA transaction {gtrid} is committed (decision logged on shard {}), but \
                 XA COMMIT failed on shards {}: their prepared branches are committed by the XA \
                 resolver (or recovery at the proxy's next start)",
                name(ci),
                pending.join(", ")
            ),
        ));
    }
    // Forget the decision (a row left behind is cleared by the next recovery).
    match step(
        &mut cc,
        &format!("DELETE FROM {LOG_TABLE} WHERE gtrid = '{gtrid}'"),
    )
    .await
    {
        Ok(_) => cc.release(),
        Err(_) => cc.discard(),
    }
    Ok(())
}

/// Rolls back a plain (coordinator) transaction and notes it in `report`.
async fn end_plain(
    i: usize,
    mut c: ShardConn,
    report: &mut String,
    name: &dyn Fn(usize) -> String,
) {
    match step(&mut c, "ROLLBACK").await {
        Ok(None) => {
            let _ = write!(report, " {}=rolled back;", name(i));
            c.release();
        }
        Ok(Some(e)) | Err(e) => {
            let _ = write!(report, " {}=rolled back (connection closed: {e});", name(i));
            c.discard();
        }
    }
}

/// Rolls back branches after phase 1 went wrong, each according to where it got to.
async fn undo_phase1(
    phase1: Vec<(usize, ShardConn, Phase1)>,
    gtrid: &str,
    report: &mut String,
    name: &dyn Fn(usize) -> String,
) {
    for (i, mut c, r) in phase1 {
        let x = xid(gtrid, i);
        let outcome = match r {
            Phase1::Lost("XA PREPARE", _) => {
                c.discard();
                "connection lost at XA PREPARE: rolled back by the server, or (if the prepare \
                 completed) by XA recovery at the proxy's next start"
                    .to_string()
            }
            Phase1::Lost(..) => {
                c.discard();
                "rolled back by the server (connection closed)".into()
            }
            Phase1::Refused("XA END", _) => {
                // Still active: end it, then roll it back.
                let _ = step(&mut c, &format!("XA END {x}")).await;
                rollback_one(c, &x).await
            }
            Phase1::Refused(..) | Phase1::Prepared => rollback_one(c, &x).await,
        };
        let _ = write!(report, " {}={outcome};", name(i));
    }
}

/// `XA ROLLBACK` of one ended or prepared branch; what happened, for the report.
async fn rollback_one(mut c: ShardConn, x: &str) -> String {
    match step(&mut c, &format!("XA ROLLBACK {x}")).await {
        Ok(None) => {
            c.release();
            "rolled back".into()
        }
        Ok(Some(e)) => {
            c.discard();
            format!("rolled back (XA ROLLBACK refused: {e}; connection closed)")
        }
        Err(e) => {
            c.discard();
            format!("XA ROLLBACK lost ({e}): rolled back by the server or by XA recovery")
        }
    }
}

/// `XA ROLLBACK` of prepared branches.
async fn rollback_branches(
    branches: Vec<(usize, ShardConn)>,
    gtrid: &str,
    report: &mut String,
    name: &dyn Fn(usize) -> String,
) {
    for (i, c) in branches {
        let outcome = rollback_one(c, &xid(gtrid, i)).await;
        let _ = write!(report, " {}={outcome};", name(i));
    }
}

/// Rolls back a transaction with XA branches that were not prepared (client `ROLLBACK`, an
/// error): the coordinator with `ROLLBACK`, each branch with `XA END` + `XA ROLLBACK`.
pub(super) async fn rollback(
    conns: BTreeMap<usize, ShardConn>,
    branches: &BTreeSet<usize>,
    gtrid: &str,
) {
    for (i, mut c) in conns {
        if branches.contains(&i) {
            let x = xid(gtrid, i);
            match step(&mut c, &format!("XA END {x}")).await {
                Ok(_) => {
                    let _ = rollback_one(c, &x).await;
                }
                Err(_) => c.discard(),
            }
        } else {
            match step(&mut c, "ROLLBACK").await {
                Ok(None) => c.release(),
                _ => c.discard(),
            }
        }
    }
}

/// What a recovery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Prepared branches committed (their decision was logged).
    pub committed: usize,
    /// Prepared branches rolled back (no decision).
    pub rolled_back: usize,
    /// Problems (servers that could not be reached, statements refused).
    pub problems: Vec<String>,
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// One connection per shard server of `s` (by address), and the schemas of its shards on it.
async fn connect_all(
    config: &Config,
    s: &Sharding,
    problems: &mut Vec<String>,
) -> Vec<(BackendConn, Vec<String>)> {
    let mut servers: Vec<(BackendConn, Vec<String>)> = Vec::new();
    let mut addrs: Vec<String> = Vec::new();
    for shard in &s.shards {
        let Some(g) = config.mysql_group(&shard.group) else {
            problems.push(format!(
                "shard `{}`: unknown group `{}`",
                shard.name, shard.group
            ));
            continue;
        };
        let p = &g.primary;
        if let Some(k) = addrs.iter().position(|a| *a == p.address) {
            servers[k].1.push(shard.schema.clone());
            continue;
        }
        match BackendConn::connect(
            Rc::from(p.name.as_str()),
            Rc::from(p.address.as_str()),
            &g.user,
            &g.password,
            g.connect_timeout,
            g.tls.as_ref(),
        )
        .await
        {
            Ok(c) => {
                addrs.push(p.address.clone());
                servers.push((c, vec![shard.schema.clone()]));
            }
            Err(e) => problems.push(format!(
                "shard `{}`: cannot connect to `{}`: {}",
                shard.name,
                p.name,
                e.into_reason()
            )),
        }
    }
    servers
}

fn reason(e: ProxyError) -> String {
    e.into_reason()
}

/// The statement that creates the decision log in `schema`.
fn create_log(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{LOG_TABLE} (gtrid VARBINARY(64) NOT NULL PRIMARY KEY, \
         decided_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB",
        quote_ident(schema)
    )
}

/// What one resolution pass saw besides what it did.
#[derive(Default)]
struct Seen {
    /// This worker's decision rows: gtrid → older than the pass's grace.
    decisions: BTreeMap<String, bool>,
    /// Gtrids of prepared branches of this worker that the pass left alone.
    skipped: HashSet<String>,
}

/// One resolution pass over `servers` (one connection per shard server, with its shards'
/// schemas), shared by start-up recovery and the background [`Resolver`]: reads worker `worker`'s
/// decision rows from every schema, lists every server's prepared branches (`XA RECOVER`) and ends
/// each branch of `worker` that `may(gtrid, xid)` allows: `XA COMMIT` when a decision row of its
/// gtrid exists on any shard, else `XA ROLLBACK` — the latter only when every decision log was
/// read (a log that could not be read may hold the decision; such branches are left for a later
/// pass). `grace_s`: decision rows older than that many seconds (server clock) are flagged old.
async fn resolve_pass(
    servers: &mut [(BackendConn, Vec<String>)],
    worker: u16,
    grace_s: u64,
    may: &mut dyn FnMut(&str, &str) -> bool,
    out: &mut Recovered,
) -> Seen {
    let mut seen = Seen::default();
    let prefix = format!("furrow:{worker}:");
    let mut logs_read = out.problems.is_empty();
    for (c, schemas) in servers.iter_mut() {
        for schema in schemas.iter() {
            let q = format!(
                "SELECT gtrid, decided_at < NOW() - INTERVAL {grace_s} SECOND FROM {}.{LOG_TABLE} \
                 WHERE gtrid LIKE '{prefix}%'",
                quote_ident(schema)
            );
            match c.query_rows(&q).await {
                Ok((_, rows)) => {
                    for r in rows {
                        let mut r = r.into_iter();
                        if let Some(Some(g)) = r.next()
                            && parse_gtrid(&g).is_some_and(|(w, _)| w == worker)
                        {
                            let old = matches!(r.next(), Some(Some(v)) if v == "1");
                            seen.decisions.insert(g, old);
                        }
                    }
                }
                Err(e) => {
                    logs_read = false;
                    out.problems.push(format!(
                        "schema `{schema}`: cannot read {LOG_TABLE}: {}",
                        reason(e)
                    ));
                }
            }
        }
    }
    for (c, _) in servers.iter_mut() {
        let rows = match c.query_rows("XA RECOVER").await {
            Ok((_, rows)) => rows,
            Err(e) => {
                out.problems
                    .push(format!("XA RECOVER on `{}`: {}", c.server, reason(e)));
                continue;
            }
        };
        for r in rows {
            // formatID, gtrid_length, bqual_length, data
            let (Some(Some(glen)), Some(Some(data))) = (r.get(1), r.get(3)) else {
                continue;
            };
            let Ok(glen) = glen.parse::<usize>() else {
                continue;
            };
            let (Some(gtrid), Some(bqual)) = (data.get(..glen), data.get(glen..)) else {
                continue;
            };
            if parse_gtrid(gtrid).is_none_or(|(w, _)| w != worker)
                || !bqual.bytes().all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let x = format!("'{gtrid}','{bqual}',1");
            let commit = seen.decisions.contains_key(gtrid);
            if !may(gtrid, &x) {
                seen.skipped.insert(gtrid.to_string());
                continue;
            }
            if !commit && !logs_read {
                seen.skipped.insert(gtrid.to_string());
                out.problems.push(format!(
                    "{x} on `{}` left prepared: not every decision log could be read",
                    c.server
                ));
                continue;
            }
            let verb = if commit { "XA COMMIT" } else { "XA ROLLBACK" };
            match c.query_rows(&format!("{verb} {x}")).await {
                Ok(_) => {
                    tracing::warn!(xid = %x, server = %c.server, "XA recovery: {verb}");
                    if commit {
                        out.committed += 1;
                    } else {
                        out.rolled_back += 1;
                    }
                }
                Err(e) => {
                    seen.skipped.insert(gtrid.to_string());
                    out.problems
                        .push(format!("{verb} {x} on `{}`: {}", c.server, reason(e)));
                }
            }
        }
    }
    seen
}

/// Deletes the decision rows of `gtrids` from every schema (100 per statement).
async fn forget_decisions(
    servers: &mut [(BackendConn, Vec<String>)],
    gtrids: &[&str],
    out: &mut Recovered,
) {
    for chunk in gtrids.chunks(100) {
        let list: Vec<String> = chunk.iter().map(|g| format!("'{g}'")).collect();
        for (c, schemas) in servers.iter_mut() {
            for schema in schemas.iter() {
                let q = format!(
                    "DELETE FROM {}.{LOG_TABLE} WHERE gtrid IN ({})",
                    quote_ident(schema),
                    list.join(", ")
                );
                if let Err(e) = c.query_rows(&q).await {
                    out.problems.push(format!(
                        "schema `{schema}`: cannot clear {LOG_TABLE}: {}",
                        reason(e)
                    ));
                }
            }
        }
    }
}

/// XA recovery for sharding `s` of `config` at start-up: creates the decision log table in every
/// shard's schema, then resolves the prepared branches that worker `s.worker_id` left behind in an
/// earlier incarnation (any but `incarnation`): committed when a shard's log holds their
/// decision, else rolled back (only when every log was read). Decision rows of earlier
/// incarnations are then deleted (when every server answered).
pub async fn recover(config: &Config, s: &Sharding, incarnation: u64) -> Recovered {
    let mut out = Recovered::default();
    let mut servers = connect_all(config, s, &mut out.problems).await;
    for (c, schemas) in &mut servers {
        for schema in schemas.iter() {
            if let Err(e) = c.query_rows(&create_log(schema)).await {
                out.problems.push(format!(
                    "schema `{schema}`: cannot create {LOG_TABLE}: {}",
                    reason(e)
                ));
            }
        }
    }
    let earlier = |g: &str| parse_gtrid(g).is_some_and(|(_, inc)| inc != incarnation);
    let seen = resolve_pass(
        &mut servers,
        s.worker_id,
        0,
        &mut |g, _| earlier(g),
        &mut out,
    )
    .await;
    if out.problems.is_empty() {
        let old: Vec<&str> = seen
            .decisions
            .keys()
            .map(String::as_str)
            .filter(|g| earlier(g))
            .collect();
        forget_decisions(&mut servers, &old, &mut out).await;
    }
    out
}

/// The background resolver of one sharding with `xa = true`: every `xa_resolve_interval_ms` it
/// ends the prepared branches that this worker left while the process runs (a coordinator lost
/// at `COMMIT`, a branch whose `XA COMMIT` failed) or that start-up recovery could not reach,
/// with [`recover`]'s rules (the same [`resolve_pass`]). It never touches a branch whose gtrid is
/// in flight in this process, nor one it has not seen prepared for `xa_resolve_grace_ms`; it
/// deletes decision rows older than the grace whose transaction is over.
#[derive(Default)]
pub struct Resolver {
    /// Prepared branches of ours (by xid) and when a pass first saw them (bounded by the
    /// servers' prepared branches: entries not seen by the last pass are dropped).
    first_seen: std::collections::HashMap<String, std::time::Instant>,
    /// Connections kept between passes, with the config generation they were made for.
    servers: Vec<(BackendConn, Vec<String>)>,
    generation: u64,
}

impl Resolver {
    /// One pass for sharding `s` of the config of `generation`, with the process's xid source.
    pub async fn pass(
        &mut self,
        config: &Config,
        generation: u64,
        s: &Sharding,
        ids: &XaIds,
    ) -> Recovered {
        let mut out = Recovered::default();
        if self.generation != generation || self.servers.is_empty() {
            self.servers = connect_all(config, s, &mut out.problems).await;
            self.generation = generation;
        }
        let grace = s.xa_resolve_grace;
        // Gtrids in flight when the pass starts: a transaction that ends during the pass may
        // have logged its decision after the pass read the logs.
        let busy = ids.in_flight_now();
        let now = std::time::Instant::now();
        let mut seen_now: std::collections::HashMap<String, std::time::Instant> =
            std::collections::HashMap::new();
        let first_seen = &self.first_seen;
        let mut may = |g: &str, x: &str| {
            let since = first_seen.get(x).copied().unwrap_or(now);
            seen_now.insert(x.to_string(), since);
            !busy.contains(g) && !ids.in_flight(g) && now.duration_since(since) >= grace
        };
        let seen = resolve_pass(
            &mut self.servers,
            s.worker_id,
            grace.as_secs().max(1),
            &mut may,
            &mut out,
        )
        .await;
        self.first_seen = seen_now;
        if out.problems.is_empty() {
            let done: Vec<&str> = seen
                .decisions
                .iter()
                .filter(|(g, old)| {
                    **old
                        && !seen.skipped.contains(g.as_str())
                        && !busy.contains(g.as_str())
                        && !ids.in_flight(g)
                })
                .map(|(g, _)| g.as_str())
                .collect();
            forget_decisions(&mut self.servers, &done, &mut out).await;
        }
        if !out.problems.is_empty() {
            // Reconnect on the next pass.
            self.servers.clear();
        }
        out
    }
}

/// Runs the [`Resolver`] of sharding `name` until shutdown: a pass every
/// `xa_resolve_interval_ms` while the current config has that sharding with `xa = true`.
pub async fn run_resolver(
    shared: runtime::Shared,
    name: String,
    mysql: std::sync::Arc<crate::MysqlShared>,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut r = Resolver::default();
    let mut last_problems: Vec<String> = Vec::new();
    loop {
        let snap = shared.snapshots.current();
        let s = snap
            .config
            .sharding()
            .into_iter()
            .find(|s| s.name == name && s.xa);
        let interval = s
            .as_ref()
            .map_or(std::time::Duration::from_secs(5), |s| s.xa_resolve_interval);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let Some(s) = s else { continue };
        let out = r.pass(&snap.config, snap.generation, &s, &mysql.xa).await;
        if out.committed + out.rolled_back > 0 {
            tracing::warn!(sharding = %name, committed = out.committed, rolled_back = out.rolled_back, "XA resolver ended prepared branches");
        }
        if out.problems != last_problems {
            if !out.problems.is_empty() {
                tracing::error!(sharding = %name, problems = ?out.problems, "XA resolver pass incomplete");
            }
            last_problems = out.problems;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtrids_name_their_worker_and_incarnation() {
        let ids = XaIds::default();
        let g = ids.gtrid(7);
        assert_eq!(parse_gtrid(&g), Some((7, ids.incarnation())));
        let h = ids.gtrid(7);
        assert_ne!(&*g, &*h, "unique per transaction");
        // In flight while held, forgotten when dropped (the resolver leaves in-flight ones alone).
        let (gs, hs) = (g.to_string(), h.to_string());
        assert!(ids.in_flight(&gs) && ids.in_flight(&hs));
        assert_eq!(ids.in_flight_now().len(), 2);
        drop(h);
        assert!(ids.in_flight(&gs) && !ids.in_flight(&hs));
        let g = gs;
        assert!(g.len() <= 64, "XA gtrids are at most 64 bytes: {g}");
        assert_eq!(
            parse_gtrid("furrow:1023:18446744073709551615:18446744073709551615").map(|p| p.0),
            Some(1023)
        );
        assert!("furrow:1023:18446744073709551615:18446744073709551615".len() <= 64);
        for bad in [
            "",
            "furrow:",
            "furrow:x:1:2",
            "furrow:1:2",
            "furrow:1:2:3:4",
            "other:1:2:3",
            "furrow:70000:1:1",
        ] {
            assert_eq!(parse_gtrid(bad), None, "{bad}");
        }
        assert_eq!(xid("furrow:1:2:3", 4), "'furrow:1:2:3','4',1");
    }
}
