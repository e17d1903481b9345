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
//! Layout: [`gate`] the write gate of a table being resharded (a leaf); [`conn`] shard connections and buffered unit results; [`run`] running a plan's units
//! and the runner handing the results to the merge; [`encode`] result sets, OK and ERR packets for
//! the client; [`stream`] the streamed reads (plain scatter, sorted, grouped): sockets feeding
//! router's sans-IO streaming executor (`router::sql::plan::stream`), which does the merging,
//! grouping, trimming and re-encoding; [`stmt`] prepared
//! statements (binary protocol); [`txn`] transactions across shards; [`xa`] their two-phase commit
//! and its recovery; [`check`] the shards' schemas
//! checked on their servers (`furrow check-config --connect`).
//!
//! Transactions: `BEGIN` opens nothing; the first statement that touches a shard opens a backend
//! transaction there. Without XA, `COMMIT` commits the shards one after another in shard order.
//! This is not atomic: when one commit fails, the shards before it stay committed, the ones after
//! it are rolled back, and the client gets error 1180 naming each shard's fate. With `xa = true`
//! a transaction over several shards commits with XA two-phase commit ([`xa`]).

pub mod check;
pub mod conn;
pub mod dual;
pub mod encode;
pub mod gate;
pub mod reshard;
pub mod run;
pub mod state;
pub mod stmt;
pub mod stream;
pub mod txn;
pub mod xa;
pub mod xid;

use std::rc::Rc;
use std::sync::Arc;

use codec::mysql::ErrPacket;
use router::sql::plan::{self, Plan, PlanContext};
use router::sql::shard::ShardingRules;
use router::sql::{StmtKind, classify, classify_with_digest, digest};
use runtime::{Shared, Snapshot};

use crate::conn::Conn;
use crate::core::CoreCtx;
use crate::error::errs;
use crate::vars::VarState;

pub use check::check_shard_schemas;
pub use state::{IdGenerators, RulesFor};
pub use txn::ShardSession;

/// Runs `f` on this core's plan cache for `rules` (one per compiled rules: templates name
/// physical tables).
fn with_cache<T>(
    core: &CoreCtx,
    rules: &Rc<ShardingRules>,
    f: impl FnOnce(&mut plan::PlanCache) -> T,
) -> T {
    {
        let mut all = core.plans.borrow_mut();
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
    }
}

/// Plans `sql` with this core's plan cache for `rules` (a statement of a known shape is not parsed
/// again; a point select of a known shape is not planned again). The plan is `plan::plan`'s.
pub(crate) fn plan_here(
    core: &CoreCtx,
    rules: &Rc<ShardingRules>,
    sql: &str,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, router::sql::plan::ShardError> {
    with_cache(core, rules, |c| plan::plan_cached(sql, cx, c))
}

/// The sharding rules of `listener` in `snap`, or `None` when the listener is not sharded.
/// Compiled once per config generation and core.
pub fn rules_for(core: &CoreCtx, snap: &Arc<Snapshot>, listener: &str) -> Option<RulesFor> {
    {
        let mut m = core.shard_rules.borrow_mut();
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
                    .map_err(|e| errs::rules_broken(&s.name, &e))
            });
        m.insert(listener.to_string(), (snap.generation, r.clone()));
        r
    }
}

/// What a sharded statement needs from its session.
pub struct Ctx<'a> {
    /// The client connection (replies are queued here).
    pub client: &'a mut Conn,
    /// The config snapshot the statement runs on.
    pub snap: &'a Arc<Snapshot>,
    /// Backend states.
    pub shared: &'a Shared,
    /// This executor's pools and caches.
    pub core: &'a CoreCtx,
    /// The session's replayable `SET`s (replayed on every shard connection; `SET`s append here).
    pub vars: &'a mut Option<Rc<VarState>>,
    /// Whether the user's `/* furrow:... */` hints are followed (`allow_hints`).
    pub allow_hints: bool,
    /// The listener's group: its ops settings (rules and limits, audit and slow logs) apply to
    /// the listener's statements, as on a read/write-split listener.
    pub group: &'a str,
    /// The proxy user.
    pub user: &'a str,
    /// The client's address.
    pub peer: std::net::IpAddr,
    /// The schema the client selected at login (for the audit log).
    pub schema: Option<&'a str>,
    /// Whether the client enabled CLIENT_MULTI_STATEMENTS.
    pub multi_statements: bool,
    /// The listener's counters: its latency histogram and error count take the sharded
    /// statements as they take a read/write-split listener's.
    pub stats: &'a runtime::stats::ListenerStats,
}

impl Ctx<'_> {
    /// The same context for a nested call.
    pub fn reborrow(&mut self) -> Ctx<'_> {
        Ctx {
            client: &mut *self.client,
            snap: self.snap,
            shared: self.shared,
            core: self.core,
            vars: &mut *self.vars,
            allow_hints: self.allow_hints,
            group: self.group,
            user: self.user,
            peer: self.peer,
            schema: self.schema,
            multi_statements: self.multi_statements,
            stats: self.stats,
        }
    }
}

/// What the ops features learned before a statement ran: the listener's group (looked up once per
/// statement), its digest when the rules needed it, and the permit of its limits (held while it
/// runs).
pub(crate) struct OpsGate<'s> {
    started: std::time::Instant,
    group: Option<&'s router::config::MysqlGroup>,
    digest: Option<Rc<router::sql::Digest>>,
    _permit: Option<crate::ops::Permit>,
}

impl OpsGate<'_> {
    /// How long the statement waits for its turn (a queueing limit), zero for most.
    pub(crate) fn wait(&self) -> std::time::Duration {
        self._permit
            .as_ref()
            .map_or(std::time::Duration::ZERO, |p| p.wait)
    }
}

/// Applies the listener group's deny/allow rules and rate and concurrency limits to `sql` with
/// the read/write-split session's code (`crate::ops`): `Err(())` when it was refused (the ERR is
/// queued and audited).
pub(crate) fn ops_check<'s>(cx: &mut Ctx<'s>, sql: &str) -> Result<OpsGate<'s>, ()> {
    let started = std::time::Instant::now();
    let snap = cx.snap;
    // A user limited to some `schemas` names no other one, on this listener as on a read/write
    // split one (every table reference is checked).
    if let Some(e) = crate::access::outside_schemas(snap, cx.user, cx.peer, sql) {
        refuse(cx, &e);
        return Err(());
    }
    let Some(g) = snap.config.mysql_group(cx.group) else {
        return Ok(OpsGate {
            started,
            group: None,
            digest: None,
            _permit: None,
        });
    };
    let Some(r) = crate::ops::rules_for(&cx.core.ops, g, snap.generation) else {
        return Ok(OpsGate {
            started,
            group: Some(g),
            digest: None,
            _permit: None,
        });
    };
    let d = Rc::new(digest(sql));
    match r.check_text(cx.user, sql, &d) {
        Ok(p) => Ok(OpsGate {
            started,
            group: Some(g),
            digest: Some(d),
            _permit: Some(p),
        }),
        Err(e) => {
            refuse(cx, &e);
            audit(cx, g, sql, &d, "", started, 0, Some(e.code));
            Err(())
        }
    }
}

/// Queues `e` for a statement the ops features refused, counted as the listener's error.
fn refuse(cx: &mut Ctx<'_>, e: &ErrPacket) {
    runtime::stats::ListenerStats::add(&cx.stats.errors, 1);
    encode::err(cx.client, e);
}

/// Records a statement that ran (its reply starts at `mark` in the client's buffer, unless it was
/// flushed on the way): the digest table, the slow log and the audit log of the listener's group.
pub(crate) fn ops_done(
    cx: &Ctx<'_>,
    sql: &str,
    gate: OpsGate<'_>,
    digest_known: Option<Rc<router::sql::Digest>>,
    mark: usize,
    took: Option<std::time::Duration>,
    trace_units: &mut Vec<crate::trace::UnitTiming>,
) {
    // A routed statement measured itself once when its reply came (`ShardSession::took`): the
    // health record and these records share that clock read.
    let took = took.unwrap_or_else(|| gate.started.elapsed());
    let reply = cx.client.wbuf.get(mark + 4..).unwrap_or(&[]);
    let (error, rows) = match reply.first() {
        Some(0xFF) => (
            Some(u16::from_le_bytes([
                reply.get(1).copied().unwrap_or(0),
                reply.get(2).copied().unwrap_or(0),
            ])),
            0,
        ),
        // Capabilities 0: only the two counters are read, whatever follows them.
        Some(0x00) => (
            None,
            codec::mysql::OkRef::parse(reply, 0).map_or(0, |ok| ok.affected_rows),
        ),
        _ => (None, 0),
    };
    // The listener's latency histogram and error count, from the duration measured above.
    cx.stats.latency.record(took);
    if error.is_some() {
        runtime::stats::ListenerStats::add(&cx.stats.errors, 1);
    }
    let d = digest_known
        .or(gate.digest)
        .unwrap_or_else(|| Rc::new(digest(sql)));
    crate::stats::record(&cx.core.stats, &d, took, rows, error.is_some(), || {
        crate::stats::DigestSample::new(sql, cx.group, cx.schema, true)
    });
    if let Some(g) = gate.group {
        crate::stats::maybe_slow(
            &cx.core.stats,
            cx.user,
            SHARDS_BACKEND,
            sql,
            took,
            g.slow_query,
        );
        audit(cx, g, sql, &d, SHARDS_BACKEND, gate.started, rows, error);
        if let Some(t) = &cx.core.trace {
            let parent = crate::trace::decide(t, sql, took, error.is_some());
            crate::trace::statement_with_units(
                t,
                parent,
                &crate::trace::Stmt {
                    listener: "",
                    group: cx.group,
                    user: cx.user,
                    client: cx.peer,
                    conn: t.sharded_conn(),
                    backend: None,
                    digest: &d,
                    start: gate.started,
                    took,
                    rows,
                    bytes: reply.len() as u64,
                    error,
                },
                trace_units,
            );
        }
    }
}

/// The backend named in slow-log and audit records of sharded statements (defined beside the spans that
/// name it, so that `trace` needs nothing of `shard`).
pub(crate) use crate::trace::SHARDS_BACKEND;

/// Queues an audit record when the group has an audit log (`crate::ops::audit`).
#[allow(clippy::too_many_arguments)]
fn audit(
    cx: &Ctx<'_>,
    g: &router::config::MysqlGroup,
    sql: &str,
    d: &router::sql::Digest,
    backend: &str,
    started: std::time::Instant,
    rows: u64,
    error: Option<u16>,
) {
    if let Some(path) = &g.audit_log {
        crate::ops::audit(
            &cx.core.ops,
            path,
            &crate::ops::AuditRecord {
                user: cx.user,
                client: cx.peer,
                schema: cx.schema,
                backend,
                sql,
                digest: d.hash,
                took: started.elapsed(),
                rows,
                error,
            },
        );
    }
}

/// Whether a command goes to the sharding executor on a sharded listener (queries, prepared
/// statements, COM_INIT_DB; everything else is handled by the session as on any listener, the
/// resets included: `Session::reset_session` resets the sharded state with
/// [`ShardSession::reset`]).
pub fn handles(code: u8) -> bool {
    use codec::mysql::consts::com;
    matches!(
        code,
        com::QUERY
            | com::INIT_DB
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
    errs::unsupported_sharded(what)
}

/// Number of assignments of a `SET` statement (top-level commas plus one).
fn assignments(sql: &str) -> usize {
    use router::sql::lexer::{Token, tokenize};
    let mut hints = Vec::new();
    let mut toks = Vec::new();
    tokenize(sql, &mut hints, &mut toks);
    let mut depth = 0i32;
    let mut n = 1;
    for t in &toks {
        match t {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => depth -= 1,
            Token::Punct(',') if depth == 0 => n += 1,
            _ => {}
        }
    }
    n
}

/// The first few words of `sql` (for recognising a statement's kind).
fn head_words(sql: &str) -> Vec<String> {
    use router::sql::lexer::{Token, tokenize};
    let mut hints = Vec::new();
    let mut toks = Vec::new();
    tokenize(sql, &mut hints, &mut toks);
    toks.iter()
        .take(6)
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        })
        .collect()
}

/// `CREATE/ALTER/DROP DATABASE|SCHEMA`.
fn is_database_ddl(sql: &str) -> bool {
    let w = head_words(sql);
    matches!(
        w.first().map(String::as_str),
        Some("CREATE" | "ALTER" | "DROP")
    ) && w.iter().take(4).any(|x| x == "DATABASE" || x == "SCHEMA")
}

/// A compound statement (a stored program's body holds `;`s): not split into a multi-statement.
fn is_compound(sql: &str) -> bool {
    let w = head_words(sql);
    w.first().is_some_and(|x| x == "CREATE")
        && w.iter()
            .any(|x| matches!(x.as_str(), "PROCEDURE" | "FUNCTION" | "TRIGGER" | "EVENT"))
}

/// Sets `SERVER_MORE_RESULTS_EXISTS` in the final packet (OK or EOF) of a reply at `at` in `wbuf`.
fn more_results(wbuf: &mut [u8], at: usize) {
    let Some(head) = wbuf.get(at..at + 4) else {
        return;
    };
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let Some(p) = wbuf.get(at + 4..at + 4 + len) else {
        return;
    };
    if let Some(off) = codec::mysql::response::status_offset(p) {
        wbuf[at + 4 + off] |= codec::mysql::consts::status::SERVER_MORE_RESULTS_EXISTS as u8;
    }
}

/// Largest unit SQL buffer a sharded session keeps between statements
/// ([`ShardSession::unit_sql`]).
const UNIT_SQL_KEPT: usize = 4096;

/// Most replayable `SET`s a sharded session keeps.
const MAX_SETS: usize = 64;

impl ShardSession {
    /// Runs one command (see [`handles`]) and queues its reply on `cx.client`.
    pub async fn command(&mut self, cx: Ctx<'_>, rules: &RulesFor, payload: bytes::Bytes) {
        use codec::mysql::consts::com;
        // The planner's parser reads MariaDB's `/*M! ... */` as a comment while the shards run it:
        // the plan would not be the statement's. Refused rather than planned wrong.
        let executable_comment = |sql: &str| {
            router::sql::lexer::has_mariadb_executable_comment(sql).then(|| {
                unsupported("MariaDB executable comments (`/*M! ... */`); use `/*! ... */`")
            })
        };
        match payload.first().copied() {
            Some(com::QUERY) => {
                // Borrowed unless the text is not UTF-8 (then repaired, as MariaDB would reject
                // it anyway with a syntax error naming the bytes). Decoded once per statement.
                let sql = crate::sql_text(&payload[1..]);
                // Both checks need a `/` or a `;`: most statements have neither (one scan).
                if router::sql::lexer::has_semicolon_or_slash(&sql) {
                    if let Some(e) = executable_comment(&sql) {
                        return encode::err(cx.client, &e);
                    }
                    if sql.contains(';') {
                        let pieces = router::sql::lexer::split_statements(&sql);
                        if pieces.len() > 1 {
                            return self.multi(cx, rules, &pieces).await;
                        }
                    }
                }
                return self.statement(cx, rules, &sql).await;
            }
            Some(com::STMT_PREPARE) => {
                if let Some(e) = executable_comment(&crate::sql_text(&payload[1..])) {
                    return encode::err(cx.client, &e);
                }
            }
            Some(com::INIT_DB) => {
                let db = String::from_utf8_lossy(&payload[1..]).into_owned();
                return self.use_db(cx, rules, &db);
            }
            _ => {}
        }
        self.stmt_command(cx, rules, payload).await;
    }

    /// One statement of a COM_QUERY with the ops features around it, as the read/write-split
    /// session applies them: rules and limits before it runs; the digest table, slow log and audit
    /// log after.
    async fn statement(&mut self, mut cx: Ctx<'_>, rules: &RulesFor, sql: &str) {
        let Ok(gate) = ops_check(&mut cx, sql) else {
            return;
        };
        let wait = gate.wait();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let mark = cx.client.wbuf.len();
        // A route times itself from the statement's start (one clock read for both).
        self.started = Some(gate.started);
        self.took = None;
        let known = self.query(cx.reborrow(), rules, sql).await;
        self.started = None;
        let took = self.took.take();
        ops_done(&cx, sql, gate, known, mark, took, &mut self.trace_units);
    }

    /// A multi-statement (CLIENT_MULTI_STATEMENTS): its statements run one after another, each
    /// planned on its own, their replies in order, each but the last flagged
    /// `SERVER_MORE_RESULTS_EXISTS`; an error ends the reply (the rest does not run), as on the
    /// server.
    async fn multi(&mut self, mut cx: Ctx<'_>, rules: &RulesFor, pieces: &[&str]) {
        if !cx.multi_statements {
            return encode::err(cx.client, &errs::multi_statements_off());
        }
        if let Some(p) = pieces.iter().find(|p| is_compound(p)) {
            let what = p.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
            return encode::err(
                cx.client,
                &unsupported(&format!(
                    "`{what} ...` in a multi-statement (send it on its own)"
                )),
            );
        }
        let from = cx.client.wbuf.len();
        cx.client.seq_rewrite = Some(crate::conn::SeqRewrite {
            next: 1,
            from,
            last: None,
        });
        for (i, piece) in pieces.iter().enumerate() {
            cx.client.renumber();
            self.statement(cx.reborrow(), rules, piece).await;
            let Some(at) = cx.client.renumber() else {
                // The reply's last packet went out already (cannot happen: replies end in the
                // buffer); stop rather than send more results the client does not expect.
                tracing::warn!("multi-statement reply flushed before its end; the rest is skipped");
                break;
            };
            if cx.client.wbuf.get(at + 4) == Some(&0xFF) || i + 1 == pieces.len() {
                break;
            }
            more_results(&mut cx.client.wbuf, at);
        }
        cx.client.renumber();
        cx.client.seq_rewrite = None;
    }

    /// `USE db` / COM_INIT_DB: the listener serves one logical database, named by its
    /// `[sharding.NAME]` section; any other name gets the server's ERR 1049.
    fn use_db(&mut self, cx: Ctx<'_>, rules: &RulesFor, db: &str) {
        let rules = match rules {
            Ok(r) => r,
            Err(p) => return encode::err(cx.client, p),
        };
        if db != rules.name {
            return encode::err(cx.client, &errs::unknown_database(db));
        }
        let st = self.status();
        cx.client.queue_ok(1, 0, 0, st);
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
            Err(p) => {
                encode::err(cx.client, p);
                return None;
            }
        };
        // With autocommit = 0 every statement runs in a transaction.
        self.implicit_begin();
        // The fast path: a point select of a known shape is routed from its template with one
        // byte scan in all (its skeleton, looked up without building the shape text): no
        // classification, no parse, no plan, no digest pass (see `router::sql::plan::cache`;
        // such a shape is one plain SELECT without hints). Any other statement gets its shape
        // from the same scan. The unit's SQL goes into the session's reused buffer (no
        // allocation per statement).
        let mut unit_sql = std::mem::take(&mut self.unit_sql);
        let found = with_cache(cx.core, &rules, |c| c.lookup(sql, &rules, &mut unit_sql));
        let shape = match found {
            Ok(plan::Lookup::Point { shard, digest }) => {
                self.generated = None;
                self.route(cx, &rules, shard, &unit_sql).await;
                self.keep_unit_sql(unit_sql);
                return Some(digest);
            }
            Ok(plan::Lookup::Shape(shape)) => {
                self.keep_unit_sql(unit_sql);
                shape
            }
            Err(e) => {
                self.keep_unit_sql(unit_sql);
                let err = errs::plan(&e);
                encode::err(cx.client, &err);
                return None;
            }
        };
        // One lexer pass for the class and the digest (stats, SAVEPOINT and LAST_INSERT_ID checks).
        let (c, d) = classify_with_digest(sql);
        self.query_planned(cx, &rules, sql, &c, &d, shape.as_ref())
            .await;
        Some(Rc::new(d))
    }

    /// Keeps `buf` for the next point statement's unit SQL, unless a long statement grew it.
    fn keep_unit_sql(&mut self, buf: String) {
        if buf.capacity() <= UNIT_SQL_KEPT {
            self.unit_sql = buf;
        }
    }

    /// [`Self::query`] for a statement that the fast path did not answer.
    async fn query_planned(
        &mut self,
        mut cx: Ctx<'_>,
        rules: &Rc<ShardingRules>,
        sql: &str,
        c: &router::sql::Classified,
        d: &router::sql::Digest,
        shape: Option<&plan::Shape<'_>>,
    ) {
        let rules = rules.clone();
        if c.flags & router::sql::classify::flags::MULTI != 0 {
            // `SET STATEMENT ... FOR` (multi-statements are split before they get here).
            return encode::err(cx.client, &unsupported("SET STATEMENT ... FOR"));
        }
        if c.kind == StmtKind::Ddl && is_database_ddl(sql) {
            return encode::err(
                cx.client,
                &unsupported(
                    "CREATE, ALTER or DROP DATABASE (a sharded listener serves one logical \
                     database; create the shards' schemas on their servers)",
                ),
            );
        }
        if c.kind == StmtKind::Ddl && self.txn.is_some() {
            // DDL commits the open transaction on the server: commit it on every shard first, and
            // run the DDL outside a transaction (with autocommit = 0 the next statement opens the
            // next one).
            if let Err(e) = self.finish(true, &run::names(&rules)).await {
                return encode::err(cx.client, &e);
            }
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
                let Some(db) = &c.schema else {
                    return encode::err(cx.client, &errs::no_database());
                };
                return self.use_db(cx, &Ok(rules.clone()), db);
            }
            StmtKind::Set => return self.set(cx, &rules, c, sql).await,
            StmtKind::Other if d.text == "XA" || d.text.starts_with("XA ") => {
                // The listener's own XA (`xa = true`) spans the shards; a client's XA branch
                // would be one shard's only.
                return encode::err(
                    cx.client,
                    &unsupported(
                        "XA statements (XA START/END/PREPARE/COMMIT/ROLLBACK/RECOVER) on a sharded \
                         listener; use BEGIN ... COMMIT (with `xa = true` in [sharding.NAME] the \
                         proxy commits across shards with XA itself)",
                    ),
                );
            }
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
                return encode::err(cx.client, &errs::unknown_shard(name, &known));
            };
            let unit = plan::Unit {
                shard,
                sql: sql.to_string(),
            };
            return self.route(cx, &rules, unit.shard, &unit.sql).await;
        }
        if crate::local::is_last_insert_id_query(c, &d.text) {
            let st = self.status();
            crate::local::queue_last_insert_id(cx.client, sql, self.last_insert_id, st);
            return;
        }
        if let Some(rs) = rules.resharding.as_deref()
            && dual::concerns(c.kind)
            && self.dual_write(&mut cx, &rules, rs, sql, c.kind, &[]).await
        {
            return;
        }
        let worker = rules.worker_id;
        let ids = &cx.core.shared.ids;
        let mut first_id = None;
        let mut next_id = || {
            let id = ids.next(worker);
            first_id.get_or_insert(id);
            id
        };
        let planned = with_cache(cx.core, &rules, |cache| {
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
                let err = errs::plan(&e);
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
    /// and grouped reads (one connection per unit when that fits the pools), plain scatter reads
    /// (all through [`stream`]) and, for prepared statements, a single-unit `Route` read (through
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
        // Sorted reads, and GROUP BYs whose groups come sorted and leave in their order, stream
        // from one connection per unit.
        if self.txn.is_none()
            && let Some(shape) = plan::Streamed::of(p)
            && stream::fits_pools(&cx, rules, shape.units())
        {
            return self.stream(cx, rules, shape, binary).await;
        }
        match p {
            Plan::Route(r) if self.generated.is_none() && !binary => {
                return self.route(cx, rules, r.unit.shard, &r.unit.sql).await;
            }
            // A read (its reply is rows: a SELECT) re-encoded row by row; a write's OK is made by
            // the buffered path as before.
            Plan::Route(r)
                if self.generated.is_none()
                    && self.txn.is_none()
                    && classify(&r.unit.sql).kind == StmtKind::Select =>
            {
                let shape = plan::Streamed::Concat(std::slice::from_ref(&r.unit));
                return self.stream(cx, rules, shape, true).await;
            }
            // (A scatter merged by key carries collation helpers; only a plain one streams.)
            Plan::Scatter(s)
                if s.write.is_none()
                    && s.collations.is_empty()
                    && (!binary || self.txn.is_none()) =>
            {
                return self
                    .stream(cx, rules, plan::Streamed::Concat(&s.units), binary)
                    .await;
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
        if c.flags & router::sql::classify::flags::SET_AUTOCOMMIT != 0 {
            let Some(on) = c.autocommit.filter(|_| assignments(sql) == 1) else {
                return encode::err(
                    cx.client,
                    &unsupported(
                        "SET autocommit to an expression or together with other variables \
                         (SET autocommit = 0 or 1 on its own)",
                    ),
                );
            };
            if let Err(e) = self.set_autocommit(on, rules).await {
                return encode::err(cx.client, &e);
            }
        } else {
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
