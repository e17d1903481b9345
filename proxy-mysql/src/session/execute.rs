//! Running a routed statement: the retry loop for reads, forwarding the reply, the session state a
//! statement leaves behind, GTID tracking and the statistics, slow log and audit record.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::mysql::consts::status;
use router::config::MysqlGroup;
use router::sql::{Classified, Digest, StmtKind};
use runtime::ListenerStats;

use crate::backend::{BackendConn, Outcome, RespKind};
use crate::error::{ProxyError, errs};
use crate::pool;
use crate::stats;
use crate::vars::VarState;

use super::{Dest, Flow, Leg, MAX_READ_RETRIES, Next, Ran, Session};

impl Session {
    /// Routes and runs a command whose payload is forwarded unchanged; updates session state.
    pub(super) async fn execute_plain(
        &mut self,
        payload: Bytes,
        c: &Classified,
        d: &Digest,
        kind: RespKind,
        snap: &Arc<runtime::Snapshot>,
        sql: &str,
    ) -> Flow {
        let Some(g) = self.group(snap) else {
            self.refuse(1, &errs::no_backend(&self.info.group, "group"));
            return Flow::Continue;
        };
        let started = self.now;
        let Ok(permit) = self.admit(g, snap.generation, sql, d, started) else {
            return Flow::Continue;
        };
        if let Some(p) = &permit
            && !p.wait.is_zero()
        {
            // A queueing limit: the statement's turn comes later.
            tokio::time::sleep(p.wait).await;
        }
        // Replicas that failed this statement: a retried read goes to another server.
        let mut avoid: Vec<Rc<str>> = Vec::new();
        for attempt in 1.. {
            let mut leg = match self.open_leg(snap, g, c, &mut avoid, attempt).await {
                Next::Go(l) => l,
                Next::Retry => continue,
                Next::Stop(flow) => return flow,
            };
            let mark = self.client.wbuf.len();
            leg.conn.queue_command(&payload);
            let r = self
                .forward(&mut leg.conn, kind, None, g, c.is_read(), None)
                .await;
            return match r {
                Ok(o) => {
                    let ran = self.succeeded(leg, g, c, &o, sql, started, false).await;
                    self.account(g, sql, d, started, &ran, Ok(&o));
                    Flow::Continue
                }
                Err(e) => match self.failed(e, leg, mark, &mut avoid, g, d, sql, started) {
                    Some(flow) => flow,
                    None => continue,
                },
            };
        }
        Flow::Continue
    }

    /// The group's deny/allow rules and limits for `sql`: the permit to hold while it runs, or
    /// `Err` when it is refused (the ERR is queued and the refusal audited).
    pub(super) fn admit(
        &mut self,
        g: &MysqlGroup,
        generation: u64,
        sql: &str,
        d: &Digest,
        started: Instant,
    ) -> Result<Option<crate::ops::Permit>, ()> {
        let Some(r) = crate::ops::rules_for(&self.info.core.ops, g, generation) else {
            return Ok(None);
        };
        match r.check_text(&self.user, sql, d) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                self.refuse(1, &e);
                self.audit(g, sql, d, "", started, 0, Some(e.code));
                Err(())
            }
        }
    }

    /// One attempt's server and connection: [`Session::choose`], then [`Session::acquire`]. A
    /// read on a replica whose connection cannot be had is retried elsewhere (`Next::Retry`, the
    /// replica added to `avoid`) while attempts last; any other refusal is queued
    /// (`Next::Stop`).
    pub(super) async fn open_leg(
        &mut self,
        snap: &Arc<runtime::Snapshot>,
        g: &MysqlGroup,
        c: &Classified,
        avoid: &mut Vec<Rc<str>>,
        attempt: u32,
    ) -> Next<Leg> {
        let dest = match self.choose(snap, g, c, avoid) {
            Ok(d) => d,
            Err(e) => {
                self.refuse(1, &e.to_err_packet());
                return Next::Stop(Flow::Continue);
            }
        };
        // A read on a replica may run again elsewhere; writes (and pinned sessions) never do.
        let (retry_ok, state, name) = match &dest {
            Dest::Server(t, primary) => (
                !primary && c.is_read() && attempt <= MAX_READ_RETRIES,
                Some(t.state.clone()),
                Some(t.name.clone()),
            ),
            Dest::Pinned => (false, None, None),
        };
        let was_pinned = matches!(dest, Dest::Pinned);
        if c.pins_session() {
            self.sticky = true;
        }
        match self.acquire(dest, g).await {
            Ok(conn) => Next::Go(Leg {
                conn,
                retry_ok,
                state,
                name,
                was_pinned,
            }),
            Err(e) if retry_ok && e.retryable() => {
                avoid.extend(name);
                Next::Retry
            }
            Err(e) => {
                self.refuse(1, &e.to_err_packet());
                Next::Stop(Flow::Continue)
            }
        }
    }

    /// After a statement's reply was forwarded: the server's health, the session state it left
    /// (`pin`: keep the connection, for a cursor), its GTID, and the connection given back.
    /// Returns the server and the latency to account.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn succeeded(
        &mut self,
        mut leg: Leg,
        g: &MysqlGroup,
        c: &Classified,
        o: &Outcome,
        sql: &str,
        started: Instant,
        pin: bool,
    ) -> Ran {
        // The statement's one clock read at its end: its latency, the check-in time.
        self.now = Instant::now();
        let took = self.now.saturating_duration_since(started);
        if let Some(st) = &leg.state {
            st.record_ok(took);
        }
        self.after_statement(c, o, &mut leg.conn, sql);
        // The statement's latency includes the GTID read that may follow a write; when none
        // ran, nothing did since `took`.
        let took = if self.track_gtid(g, c, o, &mut leg.conn).await {
            self.now = Instant::now();
            self.now.saturating_duration_since(started)
        } else {
            took
        };
        if pin {
            self.sticky = true;
        }
        let server = leg.conn.server.clone();
        self.release(leg.conn);
        Ran { server, took }
    }

    /// A statement whose attempt failed: the connection is dropped, a connection failure counts
    /// towards the server's ejection, and a read that failed or timed out on a replica before
    /// anything reached the client runs again elsewhere (`None`: a stalled replica must not hang
    /// its clients; writes never do). Otherwise the client gets the ERR (in sequence after rows
    /// already sent when the result was too large), the failure is accounted, and the flow is
    /// returned: a session whose connection state is gone is closed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn failed(
        &mut self,
        e: ProxyError,
        leg: Leg,
        mark: usize,
        avoid: &mut Vec<Rc<str>>,
        g: &MysqlGroup,
        d: &Digest,
        sql: &str,
        started: Instant,
    ) -> Option<Flow> {
        let Leg {
            mut conn,
            retry_ok,
            state,
            name,
            was_pinned,
        } = leg;
        conn.broken = true;
        let server = conn.server.clone();
        pool::discard(conn);
        let flushed = self.client.wbuf.len() < mark;
        if let Some(st) = &state
            && e.is_server_failure()
        {
            st.note_error(&e.to_string());
            st.record_failure(g.circuit_break_after, g.circuit_open);
        }
        if retry_ok && !flushed && e.retryable() {
            if matches!(e, ProxyError::Timeout) {
                tracing::warn!(server = %server, "read timed out on a replica; retried elsewhere");
            }
            self.client.wbuf.truncate(mark);
            avoid.extend(name);
            // The next attempt's deadline counts from its own start.
            self.now = Instant::now();
            return None;
        }
        let err = e.to_err_packet();
        if let ProxyError::ResultTooLarge { next_seq, .. } = e {
            // Rows already went out: end the result with an ERR in sequence.
            self.refuse(next_seq, &err);
        } else {
            if !flushed {
                self.client.wbuf.truncate(mark);
            }
            self.refuse(1, &err);
        }
        let ran = Ran {
            server,
            took: started.elapsed(),
        };
        self.account(g, sql, d, started, &ran, Err(err.code));
        if was_pinned || self.in_txn || self.sticky {
            // The session's connection state is gone; the client must reconnect.
            return Some(Flow::Close);
        }
        Some(Flow::Continue)
    }

    /// Accounts one statement that ran (or failed on a server): the digest table, the listener's
    /// error count for a server's ERR, the slow log and the audit log. One place for every path
    /// that ran a statement, so that they count alike.
    pub(super) fn account(
        &mut self,
        g: &MysqlGroup,
        sql: &str,
        d: &Digest,
        started: Instant,
        ran: &Ran,
        end: Result<&Outcome, u16>,
    ) {
        let (rows, error) = match end {
            Ok(o) => (o.rows.max(o.affected), o.err),
            Err(code) => (0, Some(code)),
        };
        if let Ok(o) = end
            && o.err.is_some()
        {
            ListenerStats::add(&self.stats.errors, 1);
        }
        // The listener's latency histogram: the duration already measured for the digest, no clock read.
        self.stats.latency.record(ran.took);
        stats::record(
            &self.info.core.stats,
            d,
            ran.took,
            rows,
            error.is_some(),
            || stats::DigestSample::new(sql, &g.name, self.schema.as_deref(), false),
        );
        if end.is_ok() {
            stats::maybe_slow(
                &self.info.core.stats,
                &self.user,
                &ran.server,
                sql,
                ran.took,
                g.slow_query,
            );
        }
        self.audit(g, sql, d, &ran.server, started, rows, error);
        if let Some(t) = &self.info.core.trace
            && let Some(parent) = crate::trace::decide(t, sql, ran.took, error.is_some())
        {
            self.trace(
                t,
                parent,
                g,
                d,
                started,
                ran,
                rows,
                end.map_or(0, |o| o.bytes),
                error,
            );
        }
    }

    /// The statement's span (only with `[tracing]` and when `crate::trace::decide` kept it).
    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn trace(
        &self,
        t: &crate::trace::CoreTrace,
        parent: Option<runtime::trace::TraceParent>,
        g: &MysqlGroup,
        d: &Digest,
        started: Instant,
        ran: &Ran,
        rows: u64,
        bytes: u64,
        error: Option<u16>,
    ) {
        crate::trace::statement(
            t,
            parent,
            &crate::trace::Stmt {
                listener: &self.info.name,
                group: &g.name,
                user: &self.user,
                client: self.peer.ip(),
                conn: &self.trace_conn,
                backend: Some(&ran.server),
                digest: d,
                start: started,
                took: ran.took,
                rows,
                bytes,
                error,
            },
        );
    }

    /// Sends what is queued on `conn` and forwards the response to the client, with the statement
    /// timeout (for a `read`, the read timeout when no statement timeout is set).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward(
        &mut self,
        conn: &mut BackendConn,
        kind: RespKind,
        client_stmt: Option<u32>,
        g: &MysqlGroup,
        read: bool,
        exec: Option<crate::backend::ExecMeta<'_>>,
    ) -> Result<Outcome, ProxyError> {
        if let Err(e) = conn.conn.flush().await {
            return Err(ProxyError::lost(&conn.server, e));
        }
        let max = g.max_result_bytes.unwrap_or(u64::MAX);
        let timeout = g.query_timeout.or(if read { g.read_timeout } else { None });
        let done = {
            // Pinned where it is made: the relay's state (the largest future of a statement) is
            // not moved again into the timer's.
            let fut =
                std::pin::pin!(conn.forward(kind, Some(&mut self.client), client_stmt, max, exec));
            match timeout {
                // The session's reusable timer: no timer made and dropped per statement.
                // From the statement's start (`now` as read by `dispatch`): no clock read here.
                Some(t) => {
                    self.timer
                        .run(tokio::time::Instant::from_std(self.now) + t, fut)
                        .await
                }
                None => Some(fut.await),
            }
        };
        done.unwrap_or_else(|| {
            conn.broken = true;
            kill_query(conn, g);
            Err(ProxyError::Timeout)
        })
    }

    /// With read-your-writes by GTID: after a successful write outside a transaction (or its
    /// COMMIT), remembers the session's `@@last_gtid`. Returns whether it asked the server.
    pub(super) async fn track_gtid(
        &mut self,
        g: &MysqlGroup,
        c: &Classified,
        o: &Outcome,
        conn: &mut BackendConn,
    ) -> bool {
        // A COMMIT makes the transaction's writes visible: its GTID is the one to wait for.
        if !g.read_your_writes_gtid
            || o.err.is_some()
            || self.in_txn
            || !(is_write(c)
                || c.kind == StmtKind::Commit
                    && self.last_gtid.is_none()
                    && self.last_write.is_some())
        {
            return false;
        }
        if !self.info.core.shared.gtid.supported(&g.name) {
            return false; // servers without `@@last_gtid`: the window decides
        }
        let wait = g
            .query_timeout
            .or(g.read_timeout)
            .unwrap_or(Duration::from_secs(30));
        match tokio::time::timeout(wait, conn.query_rows("SELECT @@last_gtid")).await {
            Ok(Ok((_, rows))) => {
                let text = rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .unwrap_or_default();
                let g = crate::gtid::parse(&text);
                if !g.is_empty() {
                    self.last_gtid = Some(g);
                }
            }
            Ok(Err(e)) if e.is_backend_code(crate::error::ER_UNKNOWN_SYSTEM_VARIABLE) => {
                self.info.core.shared.gtid.set_unsupported(&g.name);
            }
            Ok(Err(_)) | Err(_) => conn.broken = true,
        }
        true
    }

    /// Queues an audit record when the group has an audit log.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit(
        &self,
        g: &MysqlGroup,
        sql: &str,
        d: &router::sql::Digest,
        backend: &str,
        started: Instant,
        rows: u64,
        error: Option<u16>,
    ) {
        if let Some(path) = &g.audit_log {
            crate::ops::audit(
                &self.info.core.ops,
                path,
                &crate::ops::AuditRecord {
                    user: &self.user,
                    client: self.peer.ip(),
                    schema: self.schema.as_deref(),
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

    pub(super) fn after_statement(
        &mut self,
        c: &Classified,
        o: &Outcome,
        conn: &mut BackendConn,
        sql: &str,
    ) {
        if o.err.is_none() {
            self.in_txn = o.status & status::SERVER_STATUS_IN_TRANS != 0;
            match c.kind {
                StmtKind::Use => {
                    if let Some(db) = &c.schema {
                        let db: Rc<str> = Rc::from(db.as_str());
                        self.schema = Some(db.clone());
                        conn.schema = Some(db);
                        conn.schema_unknown = false;
                    }
                }
                StmtKind::Set if c.is_replayable_set() => {
                    if let Some(ac) = c.autocommit {
                        self.autocommit = ac;
                    }
                    match VarState::with_set(self.vars.as_deref(), sql.trim()) {
                        Some(v) => {
                            self.vars = Some(v.clone());
                            conn.vars = Some(v);
                        }
                        None => self.sticky = true,
                    }
                }
                _ => {}
            }
            if o.last_insert_id != 0 {
                self.last_insert_id = o.last_insert_id;
            }
        } else if !self.autocommit && self.pinned.is_none() {
            self.in_txn = true;
        }
        if is_write(c) {
            self.last_write = Some(self.now);
            // Until this write's GTID is read (`track_gtid`), the window decides.
            self.last_gtid = None;
        }
    }
}

/// Whether a statement may change data (for read-your-writes): not a plain read, not one that
/// only touches the session, not a transaction boundary (the writes inside count themselves).
fn is_write(c: &Classified) -> bool {
    !c.is_read() && !super::choose::is_session_kind(c.kind) && c.kind != StmtKind::Savepoint
}

/// Spawns `KILL QUERY` for a backend connection whose statement timed out.
fn kill_query(conn: &BackendConn, g: &MysqlGroup) {
    let (server, address, id) = (conn.server.clone(), conn.address.clone(), conn.thread_id);
    let (user, pw, ct) = (g.user.clone(), g.password.clone(), g.connect_timeout);
    let tls = g.tls.clone();
    tokio::task::spawn_local(async move {
        // Bounded: a stalled server must not keep this task (and its socket) forever.
        let _ = tokio::time::timeout(ct * 2, async move {
            if let Ok(mut c) =
                BackendConn::connect(server, address, &user, &pw, ct, tls.as_ref()).await
            {
                let _ = c.query_rows(&format!("KILL QUERY {id}")).await;
            }
        })
        .await;
    });
}
