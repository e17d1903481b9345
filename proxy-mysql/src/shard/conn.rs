//! Shard connections: a pooled connection to a shard's group primary brought into the session's
//! replayable state and the shard's schema, and running one unit of SQL on it with its result
//! buffered as typed rows (within a row budget shared by all units of a plan).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use codec::mysql::consts::com;
use codec::mysql::{ColumnDefinition, ErrPacket, MysqlError};
use router::config::MysqlGroup;
use router::sql::plan::{ShardResult, VecRows};
use router::sql::shard::{Shard, ShardingRules};
use runtime::{Shared, Snapshot};

use crate::backend::{BackendConn, Buffered, RespKind, ResultSink};
use crate::core::CoreCtx;
use crate::error::{ProxyError, errs};
use crate::pool;
use crate::route::{GroupTargets, cached_targets};
use crate::vars::VarState;

/// A connection held for one shard (it knows its pool).
pub struct ShardConn {
    /// The logged-in backend connection.
    pub conn: Box<BackendConn>,
    /// The statement timeout of the shard's group (`query_timeout_ms`).
    pub query_timeout: Option<Duration>,
}

impl ShardConn {
    /// Returns the connection to its pool (dropped when broken).
    pub fn release(self) {
        pool::checkin(self.conn);
    }

    /// Drops the connection (its state is unknown), freeing its pool slot.
    pub fn discard(self) {
        pool::discard(self.conn);
    }
}

/// `name` as a shared string (one allocation per schema name and core).
fn schema_name(core: &CoreCtx, name: &str) -> Rc<str> {
    {
        let mut m = core.schemas.borrow_mut();
        if let Some(s) = m.get(name) {
            return s.clone();
        }
        if m.len() > 4096 {
            m.clear();
        }
        let s: Rc<str> = Rc::from(name);
        m.insert(name.to_string(), s.clone());
        s
    }
}

/// What one unit produced: a result for the merge, or the backend's ERR packet.
pub enum UnitOutcome {
    /// Rows or an OK.
    Done(ShardResult),
    /// The backend refused the statement (its ERR, passed on to the client).
    Refused(ErrPacket),
}

/// A shard's primary as one config generation names it: its group (an index into the config's
/// groups), the group's targets (from the core's cache, shared with the read/write-split
/// sessions) and the shard's schema as a shared string. Resolved once per session and
/// generation ([`ShardTargets`]), so that a statement looks nothing up by name, as the
/// read/write-split session keeps its targets.
#[derive(Clone)]
pub struct ShardTarget {
    group: usize,
    targets: Rc<GroupTargets>,
    schema: Rc<str>,
}

impl ShardTarget {
    /// Resolves `shard` in `snap` (`Err`: its group is missing, or a server of it has no state).
    fn resolve(
        core: &CoreCtx,
        snap: &Arc<Snapshot>,
        shared: &Shared,
        shard: &Shard,
    ) -> Result<ShardTarget, ProxyError> {
        let missing = || ProxyError::Internal(errs::no_backend(&shard.group, "group"));
        let group = snap
            .config
            .mysql_groups
            .iter()
            .position(|g| g.name == shard.group)
            .ok_or_else(missing)?;
        let targets =
            cached_targets(&core.targets, snap, &shard.group, shared).ok_or_else(missing)?;
        Ok(ShardTarget {
            group,
            targets,
            schema: schema_name(core, &shard.schema),
        })
    }

    /// The shard's group in `snap` (the generation this target was resolved for).
    fn group<'s>(&self, snap: &'s Snapshot) -> Option<&'s MysqlGroup> {
        snap.config.mysql_groups.get(self.group)
    }
}

/// A session's [`ShardTarget`]s by shard index, for the config generation they were resolved
/// in (a new generation starts over: its rules, groups and servers may differ).
#[derive(Default)]
pub struct ShardTargets {
    generation: u64,
    by_shard: Vec<Option<ShardTarget>>,
}

impl ShardTargets {
    /// The target of shard `shard` of `rules` (compiled from `snap`). Failures are not kept: the
    /// next statement tries again.
    pub fn get(
        &mut self,
        core: &CoreCtx,
        snap: &Arc<Snapshot>,
        shared: &Shared,
        rules: &ShardingRules,
        shard: usize,
    ) -> Result<ShardTarget, ProxyError> {
        if self.generation != snap.generation || self.by_shard.len() != rules.shards.len() {
            self.generation = snap.generation;
            self.by_shard.clear();
            self.by_shard.resize(rules.shards.len(), None);
        }
        if let Some(Some(t)) = self.by_shard.get(shard) {
            return Ok(t.clone());
        }
        let s = rules
            .shards
            .get(shard)
            .ok_or_else(|| ProxyError::Internal(errs::internal("unit for an unknown shard")))?;
        let t = ShardTarget::resolve(core, snap, shared, s)?;
        if let Some(slot) = self.by_shard.get_mut(shard) {
            *slot = Some(t.clone());
        }
        Ok(t)
    }
}

/// Checks out a connection for the shard of `target` and syncs it to `vars` and the shard's
/// schema.
pub async fn checkout(
    core: &CoreCtx,
    snap: &Snapshot,
    target: &ShardTarget,
    vars: Option<&Rc<VarState>>,
) -> Result<ShardConn, ProxyError> {
    let t = &target.targets;
    let g = target
        .group(snap)
        .ok_or_else(|| ProxyError::Internal(errs::internal("shard group out of range")))?;
    // Circuit breaking as on a read/write-split listener: an ejected or offline primary is not
    // tried (failures are recorded by the pool on connect, and by the session on a lost reply).
    if !t.primary.state.usable() {
        return Err(ProxyError::Unavailable(errs::circuit_open(
            &t.primary.name,
            &t.primary.state,
        )));
    }
    let conn = pool::checkout(
        &core.pools,
        &t.primary,
        g,
        vars,
        Some(&target.schema),
        std::time::Instant::now(),
    )
    .await?;
    let mut sc = ShardConn {
        conn,
        query_timeout: g.query_timeout,
    };
    match sync(&mut sc.conn, vars, &target.schema).await {
        Ok(()) => Ok(sc),
        Err(e) => {
            sc.discard();
            Err(e)
        }
    }
}

/// [`checkout`] without an await when an idle connection of the shard's pool is already in the
/// session's state and the shard's schema (nothing to sync): the point statement's fast path.
/// `None` when there is none, or the primary is not usable: take [`checkout`], which knows why.
#[inline]
pub fn checkout_ready(
    core: &CoreCtx,
    snap: &Snapshot,
    target: &ShardTarget,
    vars: Option<&Rc<VarState>>,
) -> Option<ShardConn> {
    let t = &target.targets;
    if !t.primary.state.usable() {
        return None;
    }
    let g = target.group(snap)?;
    let conn = pool::take_ready(
        &core.pools,
        &t.primary,
        g,
        vars,
        &target.schema,
        std::time::Instant::now(),
    )?;
    Some(ShardConn {
        conn,
        query_timeout: g.query_timeout,
    })
}

/// Records a failed statement (its connection was lost or timed out) against the shard's
/// primary, which is ejected after the group's `circuit_break_after` failures in a row, or a
/// success, which resets the count.
pub(crate) fn record_outcome(snap: &Snapshot, target: &ShardTarget, ok: Option<Duration>) {
    let Some(g) = target.group(snap) else {
        return;
    };
    let state = &target.targets.primary.state;
    match ok {
        Some(took) => state.record_ok(took),
        None => {
            state.record_failure(g.circuit_break_after, g.circuit_open);
        }
    }
}

/// Brings `c` into the replayable state `vars` and default schema `schema`.
pub(crate) async fn sync(
    c: &mut BackendConn,
    vars: Option<&Rc<VarState>>,
    schema: &Rc<str>,
) -> Result<(), ProxyError> {
    c.sync_vars(vars).await?;
    c.use_schema(schema).await?;
    Ok(())
}

/// Runs `sql` on `c` and buffers its result. Every row taken counts against `budget`
/// (`used` is shared by all units of one plan); past it the rest of the result is drained and
/// [`ProxyError::RowBudget`] returned.
pub async fn fetch(
    c: &mut BackendConn,
    sql: &str,
    used: &Cell<u64>,
    budget: u64,
) -> Result<UnitOutcome, ProxyError> {
    let mut payload = Vec::with_capacity(sql.len() + 1);
    payload.push(com::QUERY);
    payload.extend_from_slice(sql.as_bytes());
    c.queue_command(&payload);
    if let Err(e) = c.conn.flush().await {
        c.broken = true;
        return Err(ProxyError::lost(&c.server, e));
    }
    let r = read_result(c, used, budget).await;
    if r.as_ref().is_err_and(ProxyError::is_server_failure) {
        c.broken = true;
    }
    r
}

/// A shard unit's result being buffered: typed rows within the plan's row budget.
struct UnitRows<'a> {
    cols: Vec<ColumnDefinition>,
    rows: Vec<Vec<codec::mysql::Value>>,
    cells: Vec<Option<bytes::Bytes>>,
    used: &'a Cell<u64>,
    budget: u64,
    over: bool,
}

impl ResultSink for UnitRows<'_> {
    fn column(&mut self, payload: bytes::Bytes) -> Result<(), MysqlError> {
        self.cols.push(ColumnDefinition::decode(payload)?);
        Ok(())
    }

    fn row(&mut self, payload: bytes::Bytes, _columns: usize) -> Result<(), MysqlError> {
        if self.over {
            return Ok(()); // drain the rest so the connection stays usable
        }
        self.used.set(self.used.get() + 1);
        if self.used.get() > self.budget {
            self.over = true;
            self.rows.clear();
            return Ok(());
        }
        let row = super::encode::decode_row(payload, &self.cols, &mut self.cells)?;
        self.rows.push(row);
        Ok(())
    }
}

async fn read_result(
    c: &mut BackendConn,
    used: &Cell<u64>,
    budget: u64,
) -> Result<UnitOutcome, ProxyError> {
    let mut sink = UnitRows {
        cols: Vec::new(),
        rows: Vec::new(),
        cells: Vec::new(),
        used,
        budget,
        over: false,
    };
    let reply = c.read_buffered(&mut sink).await?;
    match reply {
        Buffered::Ok(ok) => Ok(UnitOutcome::Done(ShardResult::Affected {
            rows: ok.affected_rows,
            last_insert_id: ok.last_insert_id,
        })),
        Buffered::Err(e) => Ok(UnitOutcome::Refused(e)),
        Buffered::Rows if sink.over => Err(ProxyError::RowBudget(budget)),
        Buffered::Rows => Ok(UnitOutcome::Done(ShardResult::Rows(Box::new(
            VecRows::new(sink.cols, sink.rows),
        )))),
    }
}

/// Runs a statement whose result is an OK or ERR (transaction control) on `c`.
/// `Err`: the connection failed (it is marked broken); the error's reason says how.
pub async fn simple(c: &mut BackendConn, sql: &str) -> Result<Option<ErrPacket>, ProxyError> {
    let mut payload = Vec::with_capacity(sql.len() + 1);
    payload.push(com::QUERY);
    payload.extend_from_slice(sql.as_bytes());
    match c.command(&payload, RespKind::ResultSet).await {
        Ok(o) => Ok(o.err_payload.map(|p| {
            ErrPacket::decode(p).unwrap_or_else(|_| errs::internal("malformed ERR from a shard"))
        })),
        Err(e) => {
            c.broken = true;
            Err(e)
        }
    }
}
