//! XA two-phase commit across shards (`xa = true` in `[sharding.NAME]`), and its recovery at
//! start-up.
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
            step(&mut cc, "COMMIT")
                .await
                .map(|r| r.map(|e| ("COMMIT", e)))
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
                     shards {} are committed by XA recovery at the proxy's next start if the \
                     decision was logged, else rolled back",
                    name(ci),
                    pending.join(", ")
                ),
            ));
        }
    }
    failpoint("xa-after-decision");

    // Phase 3: commit the branches.
    let done = join_all(
        prepared
            .into_iter()
            .map(|(i, mut c)| async move {
                let r = step(&mut c, &format!("XA COMMIT {}", xid(gtrid, i))).await;
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
                 XA COMMIT failed on shards {}: their prepared branches are committed by XA \
                 recovery at the proxy's next start",
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

/// XA recovery for sharding `s` of `config` at start-up: creates the decision log table in every
/// shard's schema, then resolves the prepared branches that worker `s.worker_id` left behind in an
/// earlier incarnation (any but `incarnation`): committed when a shard's log holds their
/// decision, else rolled back. Decision rows of earlier incarnations are then deleted (when every
/// server answered).
pub async fn recover(config: &Config, s: &Sharding, incarnation: u64) -> Recovered {
    let mut out = Recovered::default();
    let mut servers = connect_all(config, s, &mut out.problems).await;
    let create = |schema: &str| {
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{LOG_TABLE} (gtrid VARBINARY(64) NOT NULL PRIMARY KEY, \
             decided_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB",
            quote_ident(schema)
        )
    };
    for (c, schemas) in &mut servers {
        for schema in schemas.iter() {
            if let Err(e) = c.query_rows(&create(schema)).await {
                out.problems.push(format!(
                    "schema `{schema}`: cannot create {LOG_TABLE}: {}",
                    reason(e)
                ));
            }
        }
    }
    // The decisions of this worker's earlier incarnations.
    let prefix = format!("furrow:{}:", s.worker_id);
    let mine =
        |g: &str| parse_gtrid(g).is_some_and(|(w, inc)| w == s.worker_id && inc != incarnation);
    let mut decided: HashSet<String> = HashSet::new();
    for (c, schemas) in &mut servers {
        for schema in schemas.iter() {
            let q = format!(
                "SELECT gtrid FROM {}.{LOG_TABLE} WHERE gtrid LIKE '{prefix}%'",
                quote_ident(schema)
            );
            match c.query_rows(&q).await {
                Ok((_, rows)) => decided.extend(
                    rows.into_iter()
                        .filter_map(|r| r.into_iter().next().flatten())
                        .filter(|g| mine(g)),
                ),
                Err(e) => out.problems.push(format!(
                    "schema `{schema}`: cannot read {LOG_TABLE}: {}",
                    reason(e)
                )),
            }
        }
    }
    // Every server's prepared branches of ours.
    for (c, _) in &mut servers {
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
            if !mine(gtrid) || !bqual.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let x = format!("'{gtrid}','{bqual}',1");
            let commit = decided.contains(gtrid);
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
                Err(e) => out
                    .problems
                    .push(format!("{verb} {x} on `{}`: {}", c.server, reason(e))),
            }
        }
    }
    if out.problems.is_empty() {
        for (c, schemas) in &mut servers {
            for schema in schemas.iter() {
                let q = format!(
                    "DELETE FROM {}.{LOG_TABLE} WHERE gtrid LIKE '{prefix}%' AND gtrid NOT LIKE \
                     '{prefix}{incarnation}:%'",
                    quote_ident(schema)
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
    for (c, _) in servers {
        drop(c);
    }
    out
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
        assert_ne!(g, h, "unique per transaction");
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
