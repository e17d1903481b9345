//! Sharding execution: a listener with a `[sharding.NAME]` section serves one logical database over
//! many shards. A statement is planned by `router::sql::plan`, its units run on the shards'
//! primaries (concurrently, one connection per shard, results buffered within the plan's row
//! budget), merged by `router::sql::plan::execute`, and re-encoded for the client. Single-unit
//! routes, plain scatter reads, sorted reads (`[Trim] → [Limit] → MergeSort`) and GROUP BY over
//! sorted groups whose output keeps the group order (`[Trim] → [Limit] → Project → [Filter] →
//! Aggregate(sorted) → MergeSort`) stream instead, outside transactions, for text queries and
//! prepared statements alike (one dispatch: `ShardSession::run_streaming_or_buffered`). A
//! prepared statement's rows are decoded and re-encoded in the binary protocol as they stream,
//! with the column definitions and encoding of the buffered path ([`encode`]); a prepared
//! single-unit read goes through [`stream`] for that, where a text one is forwarded unchanged.
//! Prepared writes and prepared statements inside a transaction stay buffered.
//!
//! Layout: [`conn`] shard connections and buffered unit results; [`run`] running a plan's units
//! and the runner handing the results to the merge; [`encode`] result sets, OK and ERR packets for
//! the client; [`stream`] plain scatter reads copied through without buffering; [`merge`] sorted
//! reads (ORDER BY [LIMIT]) and sorted GROUP BY merged from one socket per unit without buffering
//! (groups aggregated one at a time by `router::sql::plan::GroupStream`); [`stmt`] prepared
//! statements (binary protocol); [`txn`] transactions across shards.
//!
//! Transactions: `BEGIN` opens nothing; the first statement that touches a shard opens a backend
//! transaction there. `COMMIT` commits the shards one after another in shard order. This is not
//! atomic: when one commit fails, the shards before it stay committed, the ones after it are rolled
//! back, and the client gets error 1180 naming each shard's fate (XA would close this gap).

pub mod conn;
pub mod encode;
pub mod merge;
pub mod run;
pub mod stmt;
pub mod stream;
pub mod txn;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};

use codec::mysql::ErrPacket;
use router::sql::plan::{self, Plan, PlanContext};
use router::sql::shard::{IdGenerator, ShardingRules};
use router::sql::{StmtKind, classify, classify_with_digest, digest};
use runtime::{Shared, Snapshot};

use crate::conn::Conn;
use crate::session::VarState;

pub use txn::ShardSession;

/// The compiled rules of a listener for one config generation (`Err`: the rules do not compile).
pub type RulesFor = Result<Rc<ShardingRules>, String>;

thread_local! {
    static RULES: RefCell<router::FastMap<String, (u64, Option<RulesFor>)>> = RefCell::new(router::FastMap::default());
    /// This core's plan caches, one per compiled rules (templates name physical tables). Holding
    /// the `Rc` keeps a rules value alive, so its address is never reused while it is a key.
    static PLANS: RefCell<Vec<(Rc<ShardingRules>, plan::PlanCache)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this core's plan cache for `rules` (one per compiled rules: templates name
/// physical tables).
fn with_cache<T>(rules: &Rc<ShardingRules>, f: impl FnOnce(&mut plan::PlanCache) -> T) -> T {
    PLANS.with(|all| {
        let mut all = all.borrow_mut();
        let i = match all.iter().position(|(r, _)| Rc::ptr_eq(r, rules)) {
            Some(i) => i,
            None => {
                // Rules of past config generations that no session holds any more go.
                all.retain(|(r, _)| Rc::strong_count(r) > 1);
                all.push((rules.clone(), plan::PlanCache::new()));
                all.len() - 1
            }
        };
        f(&mut all[i].1)
    })
}

/// Plans `sql` with this core's plan cache for `rules` (a statement of a known shape is not parsed
/// again; a point select of a known shape is not planned again). The plan is `plan::plan`'s.
pub(crate) fn plan_here(
    rules: &Rc<ShardingRules>,
    sql: &str,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, router::sql::plan::ShardError> {
    with_cache(rules, |c| plan::plan_cached(sql, cx, c))
}

/// The sharding rules of `listener` in `snap`, or `None` when the listener is not sharded.
/// Compiled once per config generation and core.
pub fn rules_for(snap: &Arc<Snapshot>, listener: &str) -> Option<RulesFor> {
    RULES.with(|m| {
        let mut m = m.borrow_mut();
        if let Some((generation, r)) = m.get(listener)
            && *generation == snap.generation
        {
            return r.clone();
        }
        let r = snap
            .config
            .sharding()
            .into_iter()
            .find(|s| s.listener == listener)
            .map(|s| {
                ShardingRules::compile(&s)
                    .map(Rc::new)
                    .map_err(|e| format!("furrow: sharding rules `{}`: {e}", s.name))
            });
        m.insert(listener.to_string(), (snap.generation, r.clone()));
        r
    })
}

/// A new global id for `worker` (one generator per worker id in the process, shared by all cores,
/// so ids stay unique and increasing across cores).
pub fn next_global_id(worker: u16) -> u64 {
    static GENS: OnceLock<Mutex<HashMap<u16, IdGenerator>>> = OnceLock::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let m = GENS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
    m.entry(worker)
        .or_insert_with(|| IdGenerator::new(worker))
        .next(now)
}

/// What a sharded statement needs from its session.
pub struct Ctx<'a> {
    /// The client connection (replies are queued here).
    pub client: &'a mut Conn,
    /// The config snapshot the statement runs on.
    pub snap: &'a Arc<Snapshot>,
    /// Backend states.
    pub shared: &'a Shared,
    /// The session's replayable `SET`s (replayed on every shard connection; `SET`s append here).
    pub vars: &'a mut Option<Rc<VarState>>,
    /// Whether the user's `/* furrow:... */` hints are followed (`allow_hints`).
    pub allow_hints: bool,
}

/// Whether a command goes to the sharding executor on a sharded listener (queries, prepared
/// statements, COM_INIT_DB, COM_RESET_CONNECTION; everything else is handled by the session as on
/// any listener).
pub fn handles(code: u8) -> bool {
    use codec::mysql::consts::com;
    matches!(
        code,
        com::QUERY
            | com::INIT_DB
            | com::RESET_CONNECTION
            | com::STMT_PREPARE
            | com::STMT_EXECUTE
            | com::STMT_CLOSE
            | com::STMT_RESET
            | com::STMT_SEND_LONG_DATA
            | com::STMT_FETCH
    )
}

/// Error for statements that sharded listeners refuse.
pub fn unsupported(what: &str) -> ErrPacket {
    ErrPacket::new(
        1235,
        "42000",
        format!("furrow: not supported on sharded tables: {what}"),
    )
}

/// Most replayable `SET`s a sharded session keeps.
const MAX_SETS: usize = 64;

impl ShardSession {
    /// Runs one command (see [`handles`]) and queues its reply on `cx.client`.
    pub async fn command(&mut self, cx: Ctx<'_>, rules: &RulesFor, payload: bytes::Bytes) {
        use codec::mysql::consts::com;
        // The planner's parser reads MariaDB's `/*M! ... */` as a comment while the shards run it:
        // the plan would not be the statement's. Refused rather than planned wrong.
        if matches!(payload.first(), Some(&(com::QUERY | com::STMT_PREPARE)))
            && router::sql::lexer::has_mariadb_executable_comment(&crate::sql_text(&payload[1..]))
        {
            return encode::err(
                cx.client,
                &unsupported("MariaDB executable comments (`/*M! ... */`); use `/*! ... */`"),
            );
        }
        match payload.first().copied() {
            Some(com::QUERY) => {
                // Borrowed unless the text is not UTF-8 (then repaired, as MariaDB would reject
                // it anyway with a syntax error naming the bytes).
                let sql = crate::sql_text(&payload[1..]);
                let started = std::time::Instant::now();
                let Ctx {
                    client,
                    snap,
                    shared,
                    vars,
                    allow_hints,
                } = cx;
                let mark = client.wbuf.len();
                let cx = Ctx {
                    client: &mut *client,
                    snap,
                    shared,
                    vars,
                    allow_hints,
                };
                let known = self.query(cx, rules, &sql).await;
                // The digest table of the admin port (an ERR reply counts as an error).
                let failed = client.wbuf.get(mark + 4) == Some(&0xFF);
                let took = started.elapsed();
                match known {
                    Some(d) => crate::stats::record(&d, took, 0, failed),
                    None => crate::stats::record(&digest(&sql), took, 0, failed),
                }
                return;
            }
            Some(com::RESET_CONNECTION) => {
                // Back to a fresh session: transaction rolled back, statements and SETs forgotten
                // (the client's charset is kept).
                let names = rules.as_ref().map(|r| run::names(r)).unwrap_or_default();
                let _ = self.finish(false, &names).await;
                self.stmts = stmt::Stmts::default();
                self.last_insert_id = 0;
                *cx.vars = cx.vars.as_ref().and_then(|v| {
                    let sets: Vec<Rc<str>> = v
                        .sets
                        .iter()
                        .filter(|s| s.starts_with("SET NAMES"))
                        .take(1)
                        .cloned()
                        .collect();
                    (!sets.is_empty()).then(|| Rc::new(VarState { sets }))
                });
                let st = self.status();
                cx.client.queue_ok(1, 0, 0, st);
                return;
            }
            Some(com::INIT_DB) => {
                // One logical database: any name selects it (shard schemas come from the rules).
                let st = self.status();
                cx.client.queue_ok(1, 0, 0, st);
                return;
            }
            _ => {}
        }
        self.stmt_command(cx, rules, payload).await;
    }

    /// Runs one COM_QUERY on a sharded listener and queues the reply on `cx.client`. Returns the
    /// statement's digest when it was computed on the way (`None`: the rules did not compile, or
    /// the fast path refused the statement before classifying it).
    pub async fn query(
        &mut self,
        cx: Ctx<'_>,
        rules: &RulesFor,
        sql: &str,
    ) -> Option<Rc<router::sql::Digest>> {
        let rules = match rules {
            Ok(r) => r.clone(),
            Err(msg) => {
                encode::err(cx.client, &ErrPacket::new(1105, "HY000", msg.clone()));
                return None;
            }
        };
        // The fast path: a point select of a known shape is routed from its template with one
        // lexer pass in all (the shape): no classification, no parse, no plan, no digest pass
        // (see `router::sql::plan::cache`; such a shape is one plain SELECT without hints).
        let shape = plan::Shape::of(sql);
        if let Some(s) = &shape {
            match with_cache(&rules, |c| c.point(s, &rules)) {
                Ok(Some(point)) => {
                    self.generated = None;
                    self.route(cx, &rules, &point.unit).await;
                    return Some(point.digest);
                }
                Ok(None) => {}
                Err(e) => {
                    let (code, state) = e.mysql_code();
                    let err = ErrPacket::new(code, state, format!("furrow: {e}"));
                    encode::err(cx.client, &err);
                    return None;
                }
            }
        }
        // One lexer pass for the class and the digest (stats, SAVEPOINT and LAST_INSERT_ID checks).
        let (c, d) = classify_with_digest(sql);
        self.query_planned(cx, &rules, sql, &c, &d, shape.as_ref())
            .await;
        Some(Rc::new(d))
    }

    /// [`Self::query`] for a statement that the fast path did not answer.
    async fn query_planned(
        &mut self,
        cx: Ctx<'_>,
        rules: &Rc<ShardingRules>,
        sql: &str,
        c: &router::sql::Classified,
        d: &router::sql::Digest,
        shape: Option<&plan::Shape<'_>>,
    ) {
        let rules = rules.clone();
        if c.flags & router::sql::classify::flags::MULTI != 0 {
            return encode::err(
                cx.client,
                &unsupported("several statements in one query (send one at a time)"),
            );
        }
        match c.kind {
            StmtKind::Begin => return self.begin(cx, &rules).await,
            StmtKind::Commit => return self.commit(cx, &rules).await,
            StmtKind::Rollback if !d.text.contains("SAVEPOINT") => {
                return self.rollback(cx, &rules).await;
            }
            StmtKind::Rollback | StmtKind::Savepoint => {
                return encode::err(cx.client, &unsupported("savepoints"));
            }
            StmtKind::Use => {
                // One logical database: its shards' schemas are fixed by the rules.
                let st = self.status();
                cx.client.queue_ok(1, 0, 0, st);
                return;
            }
            StmtKind::Set => return self.set(cx, &rules, c, sql).await,
            StmtKind::LockTables
            | StmtKind::UnlockTables
            | StmtKind::SqlPrepare
            | StmtKind::LoadData
            | StmtKind::Call => {
                return encode::err(cx.client, &unsupported(&format!("{:?}", c.kind)));
            }
            _ => {}
        }
        if let Some(router::sql::Hint::Shard(name)) = c.hint.as_ref().filter(|_| cx.allow_hints) {
            // Runs as written on the named shard: maintenance and per-shard queries that name
            // physical tables. No planning, no rewriting; the reply passes through.
            let Some(shard) = rules.shards.iter().position(|s| s.name == *name) else {
                let known: Vec<&str> = rules.shards.iter().map(|s| s.name.as_str()).collect();
                return encode::err(
                    cx.client,
                    &ErrPacket::new(
                        1105,
                        "HY000",
                        format!(
                            "furrow: unknown shard `{name}` in hint (shards: {})",
                            known.join(", ")
                        ),
                    ),
                );
            };
            let unit = plan::Unit {
                shard,
                sql: sql.to_string(),
            };
            return self.route(cx, &rules, &unit).await;
        }
        if c.kind == StmtKind::Select
            && c.flags & router::sql::classify::flags::LAST_INSERT_ID != 0
            && d.text == "SELECT LAST_INSERT_ID ()"
        {
            let st = self.status();
            encode::last_insert_id(cx.client, self.last_insert_id, st);
            return;
        }
        let worker = rules.worker_id;
        let mut first_id = None;
        let mut next_id = || {
            let id = next_global_id(worker);
            first_id.get_or_insert(id);
            id
        };
        let planned = with_cache(&rules, |cache| {
            plan::plan_cached_shaped(
                sql,
                shape,
                &mut PlanContext {
                    rules: &rules,
                    params: &[],
                    next_id: &mut next_id,
                },
                cache,
            )
        });
        let p = match planned {
            Ok(p) => p,
            Err(e) => {
                let (code, state) = e.mysql_code();
                let err = ErrPacket::new(code, state, format!("furrow: {e}"));
                return encode::err(cx.client, &err);
            }
        };
        // An INSERT whose ids the proxy made reports the first one (as AUTO_INCREMENT would), so it
        // takes the buffered path even for one unit.
        self.generated = first_id;
        self.run_streaming_or_buffered(cx, &rules, &p, false).await;
    }

    /// Runs a planned statement and queues its reply: on a streaming path when its shape has one,
    /// else buffered ([`ShardSession::run_plan`]). Shared by COM_QUERY (`binary` false) and
    /// COM_STMT_EXECUTE (`binary`: rows in the binary protocol, re-encoded as they stream with the
    /// column definitions the buffered path would send). `self.generated` must be set: an INSERT
    /// whose ids the proxy made is buffered (its OK reports the first id).
    ///
    /// Streamed outside transactions (a transaction holds one connection per shard): sorted reads
    /// and grouped reads ([`merge`], one connection per unit when that fits the pools), plain
    /// scatter reads ([`stream`]) and, for prepared statements, a single-unit `Route` read (through
    /// [`stream`] as a one-unit scatter, so its rows can be re-encoded). A text `Route` is forwarded
    /// as the shard sends it, inside transactions too; a plain text scatter read streams inside
    /// transactions as well (over the transaction's connections). Prepared statements inside a
    /// transaction, and writes, keep the buffered path.
    pub(crate) async fn run_streaming_or_buffered(
        &mut self,
        cx: Ctx<'_>,
        rules: &Rc<ShardingRules>,
        p: &Plan,
        binary: bool,
    ) {
        // A sorted read streams from one connection per unit.
        if self.txn.is_none()
            && let Some(sr) = merge::sorted_read(p)
            && merge::fits_pools(&cx, rules, &sr.merge.input.units)
        {
            return self.stream_merge(cx, rules, &sr, binary).await;
        }
        // So does a GROUP BY whose groups come sorted and leave in their order.
        if self.txn.is_none()
            && let Some(gr) = plan::grouped_read(p)
            && merge::fits_pools(&cx, rules, &gr.merge.input.units)
        {
            return self.stream_groups(cx, rules, &gr, binary).await;
        }
        match p {
            Plan::Route(r) if self.generated.is_none() && !binary => {
                return self.route(cx, rules, &r.unit).await;
            }
            // A read (its reply is rows: a SELECT) re-encoded row by row; a write's OK is made by
            // the buffered path as before.
            Plan::Route(r)
                if self.generated.is_none()
                    && self.txn.is_none()
                    && classify(&r.unit.sql).kind == StmtKind::Select =>
            {
                return self
                    .stream_scatter(cx, rules, std::slice::from_ref(&r.unit), true)
                    .await;
            }
            Plan::Scatter(s) if s.write.is_none() && (!binary || self.txn.is_none()) => {
                return self.stream_scatter(cx, rules, &s.units, binary).await;
            }
            _ => {}
        }
        self.run_plan(cx, rules, p, binary).await;
    }

    async fn set(
        &mut self,
        cx: Ctx<'_>,
        rules: &ShardingRules,
        c: &router::sql::Classified,
        sql: &str,
    ) {
        if !c.is_replayable_set() {
            return encode::err(
                cx.client,
                &unsupported("user variables, global or transaction SET (use BEGIN)"),
            );
        }
        if c.autocommit == Some(false) {
            return encode::err(
                cx.client,
                &unsupported("autocommit = 0 (use BEGIN ... COMMIT)"),
            );
        }
        if c.autocommit.is_none() {
            let mut v = cx.vars.as_deref().cloned().unwrap_or_default();
            if v.sets.len() >= MAX_SETS {
                return encode::err(
                    cx.client,
                    &unsupported("more than 64 session SET statements"),
                );
            }
            v.sets.push(Rc::from(sql.trim()));
            let old = cx.vars.replace(Rc::new(v));
            // Validate it now on the default shard (it is replayed on every shard later).
            match self.acquire(&cx, rules, rules.default_shard).await {
                Ok(conn) => self.put_back(rules.default_shard, conn),
                Err(e) => {
                    *cx.vars = old;
                    return encode::err(cx.client, &e);
                }
            }
        }
        let st = self.status();
        cx.client.queue_ok(1, 0, 0, st);
    }
}
