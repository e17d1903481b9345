//! Running a plan: its units are listed up front, grouped by shard and run concurrently (one
//! connection per shard, a shard's units in plan order), their results buffered; the pure merge
//! (`router::sql::plan::execute`) then reads them through [`Buffered`], a [`ShardRunner`] that hands
//! out what was fetched. A plan that is a single `Route` skips all that: the shard's reply is
//! forwarded to the client unchanged.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use codec::mysql::ErrPacket;
use router::sql::plan::{
    self, ExecLimits, Output, Plan, ShardError, ShardResult, ShardRunner, Unit,
};
use router::sql::shard::ShardingRules;

use super::conn::{
    ShardConn, ShardTarget, UnitOutcome, checkout, checkout_ready, fetch, record_outcome, simple,
    sync,
};
use super::{Ctx, IdGenerators, ShardSession, encode};
use crate::backend::RespKind;
use crate::error::ProxyError;

/// Every unit a plan will run, in the order the merge asks for them.
pub fn units_of(plan: &Plan) -> Vec<Unit> {
    plan.units().into_iter().cloned().collect()
}

/// A [`ShardRunner`] over results fetched beforehand.
pub struct Buffered<'a> {
    results: Vec<(Unit, Option<ShardResult>)>,
    worker: u16,
    ids: &'a IdGenerators,
    names: Vec<String>,
}

impl<'a> Buffered<'a> {
    /// Results by unit; `worker` makes global ids with `ids`; `names` are shard names for
    /// messages.
    pub fn new(
        results: Vec<(Unit, ShardResult)>,
        worker: u16,
        ids: &'a IdGenerators,
        names: Vec<String>,
    ) -> Self {
        Self {
            results: results.into_iter().map(|(u, r)| (u, Some(r))).collect(),
            worker,
            ids,
            names,
        }
    }
}

impl ShardRunner for Buffered<'_> {
    fn run(&mut self, unit: &Unit) -> Result<ShardResult, ShardError> {
        self.results
            .iter_mut()
            .find(|(u, r)| u == unit && r.is_some())
            .and_then(|(_, r)| r.take())
            .ok_or_else(|| ShardError::Backend {
                shard: self
                    .names
                    .get(unit.shard)
                    .cloned()
                    .unwrap_or_else(|| unit.shard.to_string()),
                message: "furrow: a unit the plan did not list was asked for".into(),
            })
    }

    fn next_id(&mut self) -> u64 {
        self.ids.next(self.worker)
    }
}

/// Polls all futures until every one is done; outputs in input order.
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

type UnitResult = (usize, Result<UnitOutcome, ProxyError>, Duration);

/// Runs the units `idx` (indexes into `units`) on `c` in order; stops at the first failure.
async fn run_shard(
    c: &mut ShardConn,
    units: &[Unit],
    idx: &[usize],
    used: &Cell<u64>,
    budget: u64,
    timeout: Option<Duration>,
) -> Vec<UnitResult> {
    let mut out = Vec::with_capacity(idx.len());
    for &i in idx {
        let Some(u) = units.get(i) else { continue };
        let started = std::time::Instant::now();
        let f = fetch(&mut c.conn, &u.sql, used, budget);
        let r = match timeout {
            Some(t) => match tokio::time::timeout(t, f).await {
                Ok(r) => r,
                Err(_) => {
                    c.conn.broken = true;
                    Err(ProxyError::lost(&c.conn.server, "statement timeout"))
                }
            },
            None => f.await,
        };
        let stop = !matches!(r, Ok(UnitOutcome::Done(_)));
        out.push((i, r, started.elapsed()));
        if stop {
            break;
        }
    }
    out
}

/// Makes `held` (a transaction's connection) or a new pooled connection to `target` ready for
/// `shard`: session SETs replayed, default schema set, and a backend transaction begun with
/// `begin` (`BEGIN` or `XA START ...`, see [`ShardSession::begin_sql`]) when new. `target` is the session's resolved shard ([`super::conn::ShardTargets`]);
/// only a new connection needs it.
pub(super) async fn open(
    cx: &Ctx<'_>,
    rules: &ShardingRules,
    shard: usize,
    target: Result<&ShardTarget, &ProxyError>,
    held: Option<ShardConn>,
    begin: Option<&str>,
) -> Result<ShardConn, ErrPacket> {
    if let Some(mut c) = held {
        // Statements of the transaction may have added session SETs since (a prefix: replay only).
        let schema = c.conn.schema.clone().unwrap_or_else(|| Rc::from(""));
        if let Err(e) = sync(&mut c.conn, cx.vars.as_ref(), &schema).await {
            c.discard();
            return Err(e.to_err_packet());
        }
        return Ok(c);
    }
    let target = target.map_err(|e| e.to_err_packet())?;
    let mut c = checkout(cx.core, cx.snap, target, cx.vars.as_ref())
        .await
        .map_err(|e| e.to_err_packet())?;
    if let Some(begin) = begin {
        match simple(&mut c.conn, begin).await {
            Ok(None) => {}
            Ok(Some(e)) => {
                c.discard();
                return Err(shard_err(rules, shard, &e));
            }
            Err(e) => {
                c.discard();
                let name = rules.shards.get(shard).map_or("?", |s| s.name.as_str());
                return Err(e.on_shard(name).to_err_packet());
            }
        }
    }
    Ok(c)
}

/// A shard's ERR for the client: its code and SQLSTATE, the message prefixed `shard NAME:`.
pub(super) fn shard_err(rules: &ShardingRules, shard: usize, e: &ErrPacket) -> ErrPacket {
    let name = rules.shards.get(shard).map_or("?", |s| s.name.as_str());
    ErrPacket {
        code: e.code,
        sql_state: e.sql_state,
        message: format!("shard {name}: {}", String::from_utf8_lossy(&e.message)).into(),
    }
}

impl ShardSession {
    /// A connection for `shard`: the transaction's, or a new one (joining the transaction).
    pub(crate) async fn acquire(
        &mut self,
        cx: &Ctx<'_>,
        rules: &ShardingRules,
        shard: usize,
    ) -> Result<ShardConn, ErrPacket> {
        let target = self.target(cx, rules, shard);
        self.acquire_for(cx, rules, shard, target.as_ref()).await
    }

    /// [`Self::acquire`] with the shard's target already resolved.
    async fn acquire_for(
        &mut self,
        cx: &Ctx<'_>,
        rules: &ShardingRules,
        shard: usize,
        target: Result<&ShardTarget, &ProxyError>,
    ) -> Result<ShardConn, ErrPacket> {
        let held = self.txn.as_mut().and_then(|t| t.remove(&shard));
        self.txn_touched |= self.txn.is_some();
        let begin = match held {
            None => self.begin_sql(rules, shard, &cx.core.shared.xa),
            Some(_) => None,
        };
        let r = open(cx, rules, shard, target, held, begin.as_deref()).await;
        if r.is_err() && begin.is_some() {
            self.forget_join(shard);
        }
        r
    }

    /// The session's resolved target of `shard` (see [`super::conn::ShardTargets`]).
    pub(crate) fn target(
        &mut self,
        cx: &Ctx<'_>,
        rules: &ShardingRules,
        shard: usize,
    ) -> Result<ShardTarget, ProxyError> {
        self.targets.get(cx.core, cx.snap, cx.shared, rules, shard)
    }

    /// Connections for `shards` at once (new ones connect and sync concurrently). On a failure
    /// the others are given back (and an open transaction is rolled back).
    pub(crate) async fn open_all(
        &mut self,
        cx: &Ctx<'_>,
        rules: &ShardingRules,
        shards: &[usize],
    ) -> Result<Vec<(usize, ShardConn)>, ErrPacket> {
        self.txn_touched |= self.txn.is_some();
        let held: Vec<_> = shards
            .iter()
            .map(|&shard| {
                let h = self.txn.as_mut().and_then(|t| t.remove(&shard));
                let begin = match h {
                    None => self.begin_sql(rules, shard, &cx.core.shared.xa),
                    Some(_) => None,
                };
                (shard, self.target(cx, rules, shard), h, begin)
            })
            .collect();
        let opened = join_all(
            held.into_iter()
                .map(|(shard, t, h, begin)| async move {
                    (
                        shard,
                        open(cx, rules, shard, t.as_ref(), h, begin.as_deref()).await,
                    )
                })
                .collect(),
        )
        .await;
        let mut conns: Vec<(usize, ShardConn)> = Vec::with_capacity(opened.len());
        let mut failed = None;
        for (shard, r) in opened {
            match r {
                Ok(c) => conns.push((shard, c)),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            for (s, c) in conns {
                self.put_back(s, c);
            }
            return Err(self.abort_txn(rules, e).await);
        }
        Ok(conns)
    }

    /// Gives a connection back: to the transaction, or to its pool.
    pub(crate) fn put_back(&mut self, shard: usize, c: ShardConn) {
        if c.conn.broken {
            c.discard();
            return;
        }
        match &mut self.txn {
            Some(t) => {
                t.insert(shard, c);
            }
            None => c.release(),
        }
    }

    /// After a connection failure inside a transaction: roll back what is left and end it.
    pub(crate) async fn abort_txn(&mut self, rules: &ShardingRules, err: ErrPacket) -> ErrPacket {
        if self.txn.is_none() {
            return err;
        }
        let _ = self.finish(false, &names(rules)).await;
        ErrPacket {
            code: err.code,
            sql_state: err.sql_state,
            message: format!(
                "{}; the transaction was rolled back on every shard",
                String::from_utf8_lossy(&err.message)
            )
            .into(),
        }
    }

    /// One unit (`sql` on `shard`), its reply forwarded to the client as it comes.
    pub(crate) async fn route(
        &mut self,
        cx: Ctx<'_>,
        rules: &ShardingRules,
        shard: usize,
        sql: &str,
    ) {
        // The target is resolved once: the health record below uses it too.
        let resolved = self.target(&cx, rules, shard);
        // Outside a transaction an idle connection already in the session's state and the shard's
        // schema is taken without an await (nothing to sync, nothing to begin).
        let ready = match (&self.txn, &resolved) {
            (None, Ok(t)) => checkout_ready(cx.core, cx.snap, t, cx.vars.as_ref()),
            _ => None,
        };
        let mut c = match ready {
            Some(c) => c,
            None => match self.acquire_for(&cx, rules, shard, resolved.as_ref()).await {
                Ok(c) => c,
                Err(e) => {
                    let e = self.abort_txn(rules, e).await;
                    return encode::err(cx.client, &e);
                }
            },
        };
        c.conn.conn.queue_query(sql);
        let mark = cx.client.wbuf.len();
        let started = self.started.unwrap_or_else(std::time::Instant::now);
        let r = match c.conn.conn.flush().await {
            Err(e) => Err(ProxyError::lost(&c.conn.server, e)),
            Ok(()) => {
                let f = c
                    .conn
                    .forward(RespKind::ResultSet, Some(cx.client), None, u64::MAX, None);
                match c.query_timeout {
                    Some(t) => match tokio::time::timeout(t, f).await {
                        Ok(r) => r,
                        Err(_) => Err(ProxyError::lost(
                            &c.conn.server,
                            std::io::Error::from(std::io::ErrorKind::TimedOut),
                        )),
                    },
                    None => f.await,
                }
            }
        };
        match r {
            Ok(o) => {
                if o.err.is_none() && o.last_insert_id != 0 {
                    self.last_insert_id = o.last_insert_id;
                }
                let took = started.elapsed();
                if self.started.is_some() {
                    self.took = Some(took);
                }
                if let Ok(t) = &resolved {
                    record_outcome(cx.snap, t, Some(took));
                }
                self.put_back(shard, c);
            }
            Err(e) => {
                if e.is_server_failure()
                    && let Ok(t) = &resolved
                {
                    record_outcome(cx.snap, t, None);
                }
                let name = rules
                    .shards
                    .get(shard)
                    .map_or("?".to_string(), |s| s.name.clone());
                c.conn.broken = true;
                c.discard();
                if cx.client.wbuf.len() >= mark {
                    cx.client.wbuf.truncate(mark);
                }
                let err = e.on_shard(&name).to_err_packet();
                let err = self.abort_txn(rules, err).await;
                encode::err(cx.client, &err);
            }
        }
    }

    /// Runs a plan with several units (or a merge over one) and queues the merged reply.
    /// Rows are encoded in the binary protocol when `binary` (prepared statements).
    pub(crate) async fn run_plan(
        &mut self,
        cx: Ctx<'_>,
        rules: &Rc<ShardingRules>,
        p: &Plan,
        binary: bool,
    ) {
        let generated = self.generated.take();
        match self.run_plan_inner(&cx, rules, p).await {
            Ok(Output::Affected {
                rows,
                last_insert_id,
            }) => {
                let last_insert_id = generated.unwrap_or(last_insert_id);
                if last_insert_id != 0 {
                    self.last_insert_id = last_insert_id;
                }
                let st = self.status();
                cx.client.queue_ok(1, rows, last_insert_id, st);
            }
            Ok(Output::Rows(src)) => {
                let st = self.status();
                if let Err(e) = encode::rows(cx.client, src, st, binary) {
                    encode::err(cx.client, &shard_error_packet(&e));
                }
            }
            Err(e) => encode::err(cx.client, &e),
        }
    }

    pub(super) async fn run_plan_inner(
        &mut self,
        cx: &Ctx<'_>,
        rules: &Rc<ShardingRules>,
        p: &Plan,
    ) -> Result<Output, ErrPacket> {
        let units = units_of(p);
        let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, u) in units.iter().enumerate() {
            by_shard.entry(u.shard).or_default().push(i);
        }
        let shards: Vec<usize> = by_shard.keys().copied().collect();
        let mut conns = self.open_all(cx, rules, &shards).await?;
        let budget = rules.max_scatter_rows;
        let used = Cell::new(0u64);
        let results = {
            let futs = conns
                .iter_mut()
                .map(|(shard, c)| {
                    let idx = by_shard.get(shard).map_or(&[][..], |v| v.as_slice());
                    let timeout = c.query_timeout;
                    run_shard(c, &units, idx, &used, budget, timeout)
                })
                .collect();
            join_all(futs).await
        };
        for (s, c) in conns {
            self.put_back(s, c);
        }
        let mut slots: Vec<Option<Result<UnitOutcome, ProxyError>>> =
            units.iter().map(|_| None).collect();
        if cx.core.trace.is_some() {
            self.trace_units.clear();
        }
        for (i, r, took) in results.into_iter().flatten() {
            if cx.core.trace.is_some()
                && let Some(u) = units.get(i)
            {
                self.trace_units.push(crate::trace::UnitTiming {
                    shard: rules
                        .shards
                        .get(u.shard)
                        .map_or_else(|| u.shard.to_string(), |s| s.name.clone()),
                    took,
                    error: !matches!(r, Ok(UnitOutcome::Done(_))),
                });
            }
            if let Some(s) = slots.get_mut(i) {
                *s = Some(r);
            }
        }
        let mut fetched = Vec::with_capacity(units.len());
        let mut first_err: Option<ErrPacket> = None;
        let mut lost = false;
        for (u, r) in units.iter().zip(slots) {
            let e = match r {
                Some(Ok(UnitOutcome::Done(res))) => {
                    fetched.push((u.clone(), res));
                    continue;
                }
                Some(Ok(UnitOutcome::Refused(e))) => shard_err(rules, u.shard, &e),
                Some(Err(e)) if e.is_server_failure() => {
                    lost = true;
                    if let Ok(t) = self.target(cx, rules, u.shard) {
                        record_outcome(cx.snap, &t, None);
                    }
                    let s = rules.shards.get(u.shard);
                    e.on_shard(s.map_or("?", |s| s.name.as_str()))
                        .to_err_packet()
                }
                // The row budget (and any other refusal): the error's own packet.
                Some(Err(e)) => e.to_err_packet(),
                None => continue, // not run: an earlier unit on its shard failed
            };
            first_err.get_or_insert(e);
        }
        if let Some(e) = first_err {
            return Err(if lost {
                self.abort_txn(rules, e).await
            } else {
                e
            });
        }
        let mut runner = Buffered::new(fetched, rules.worker_id, &cx.core.shared.ids, names(rules));
        plan::execute(p, &mut runner, ExecLimits { max_rows: budget })
            .map_err(|e| shard_error_packet(&e))
    }
}

/// The shard names of `rules`.
pub fn names(rules: &ShardingRules) -> Vec<String> {
    rules.shards.iter().map(|s| s.name.clone()).collect()
}

/// The client's ERR packet for a planning or merge error.
pub fn shard_error_packet(e: &ShardError) -> ErrPacket {
    crate::error::errs::plan(e)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use codec::mysql::{ColumnDefinition, Value};
    use router::sql::plan::{PlanContext, VecRows};

    const TOML: &str = r#"
[[listeners]]
name = "db"
kind = "mysql"
address = "127.0.0.1:6033"
group = "a"

[mysql_groups.a]
user = "u"
primary = { address = "127.0.0.1:3307" }

[sharding.app]
listener = "db"
shards = [ { name = "s0", group = "a", schema = "x0" }, { name = "s1", group = "a", schema = "x1" } ]

[[sharding.app.tables]]
name = "orders"
key = "user_id"
algorithm = "hash"
physical = "orders_{0..3}"
"#;

    pub(crate) fn rules() -> ShardingRules {
        let cfg = router::config::parse("t.toml", TOML).unwrap();
        ShardingRules::compile(&cfg.sharding()[0]).unwrap()
    }

    pub(crate) fn plan_of(rules: &ShardingRules, sql: &str) -> Plan {
        let mut next = || 1;
        plan::plan(
            sql,
            &mut PlanContext {
                rules,
                params: &[],
                next_id: &mut next,
            },
        )
        .unwrap()
    }

    #[test]
    fn units_are_listed_through_merge_nodes() {
        let r = rules();
        let p = plan_of(
            &r,
            "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status LIMIT 2",
        );
        let units = units_of(&p);
        assert_eq!(units.len(), 4, "{}", p.render(&r));
        assert_eq!(
            units.iter().map(|u| u.shard).collect::<Vec<_>>(),
            vec![0, 0, 1, 1]
        );
        assert!(units[3].sql.contains("orders_3"), "{}", units[3].sql);
        let p = plan_of(&r, "SELECT * FROM orders WHERE user_id = 6");
        assert_eq!(units_of(&p).len(), 1);
        assert!(units_of(&plan_of(&r, "SELECT furrow_next_id()")).is_empty());
    }

    #[test]
    fn buffered_results_are_handed_out_once_per_unit_and_merged() {
        let r = rules();
        let p = plan_of(&r, "SELECT COUNT(*) FROM orders");
        let cols = vec![ColumnDefinition::new("COUNT(*)", 8, 63, 21, 0, 0)];
        let fetched = units_of(&p)
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let rows = vec![vec![Value::Int(i as i64 + 1)]];
                (
                    u,
                    ShardResult::Rows(Box::new(VecRows::new(cols.clone(), rows))),
                )
            })
            .collect();
        let ids = IdGenerators::default();
        let mut b = Buffered::new(fetched, 3, &ids, names(&r));
        let Ok(Output::Rows(src)) = plan::execute(&p, &mut b, ExecLimits { max_rows: 10 }) else {
            panic!("rows expected");
        };
        let (_, rows) = plan::exec::collect(src).unwrap();
        assert_eq!(rows, vec![vec![Value::Int(10)]]);
        let again = b.run(&units_of(&p)[0]);
        assert!(
            matches!(again, Err(ShardError::Backend { .. })),
            "{again:?}"
        );
        let (a, c) = (b.next_id(), b.next_id());
        assert!(c > a);
        assert_eq!(router::sql::shard::IdGenerator::worker_of(a), 3);
    }

    #[test]
    fn join_all_interleaves_and_keeps_input_order() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let log = std::cell::RefCell::new(Vec::new());
        let out = rt.block_on(join_all(
            (0..3)
                .map(|i| {
                    let log = &log;
                    async move {
                        for step in 0..2 {
                            log.borrow_mut().push((i, step));
                            tokio::task::yield_now().await;
                        }
                        i * 10
                    }
                })
                .collect(),
        ));
        assert_eq!(out, vec![0, 10, 20]);
        // Every future made its first step before any made its second.
        let log = log.into_inner();
        assert_eq!(&log[..3], &[(0, 0), (1, 0), (2, 0)]);
    }
}
