//! Running a routed statement: the retry loop for reads, forwarding the reply, the session state a
//! statement leaves behind, GTID tracking and the statistics, slow log and audit record.

use super::*;

impl Session {
    pub(super) async fn execute_plain(
        &mut self,
        payload: Bytes,
        c: &Classified,
        d: &Digest,
        kind: RespKind,
        snap: &Arc<runtime::Snapshot>,
        sql: &str,
    ) -> Flow {
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            self.refuse(1, &errs::no_backend(&self.info.group, "group"));
            return Flow::Continue;
        };
        let started = Instant::now();
        let _permit = match crate::ops::rules_for(&self.info.core, g, snap.generation) {
            Some(r) => match r.check_text(&self.user, sql, d) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.refuse(1, &e);
                    self.audit(g, sql, d, "", started, 0, Some(e.code));
                    return Flow::Continue;
                }
            },
            None => None,
        };
        let mut attempt = 0;
        // Replicas that failed this statement: a retried read goes to another server.
        let mut avoid: Vec<Rc<str>> = Vec::new();
        let (outcome, server, took) = loop {
            attempt += 1;
            let dest = match self.choose(snap, g, c, &avoid) {
                Ok(d) => d,
                Err(e) => {
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
            };
            let (retry_ok, dest_state, dest_name) = match &dest {
                Dest::Server(t, primary) => (
                    !primary && c.is_read(),
                    Some(t.state.clone()),
                    Some(t.name.clone()),
                ),
                Dest::Pinned => (false, None, None),
            };
            let was_pinned = matches!(dest, Dest::Pinned);
            if c.pins_session() {
                self.sticky = true;
            }
            let mut conn = match self.acquire(dest, g).await {
                Ok(x) => x,
                Err(e) => {
                    if retry_ok
                        && attempt <= MAX_READ_RETRIES
                        && matches!(e, ProxyError::BackendConnect { .. })
                    {
                        avoid.extend(dest_name);
                        continue;
                    }
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
            };
            let mark = self.client.wbuf.len();
            conn.queue_command(&payload);
            let r = self.forward(&mut conn, kind, None, g, c.is_read()).await;
            let server = conn.server.clone();
            match r {
                Ok(o) => {
                    let took = started.elapsed();
                    if let Some(st) = &dest_state {
                        st.record_ok(took);
                    }
                    self.after_statement(c, &o, &mut conn, sql);
                    self.track_gtid(g, c, &o, &mut conn).await;
                    // The statement's latency includes the GTID read that may follow a write (as
                    // before); without GTID tracking nothing ran since `took`.
                    let took = if g.read_your_writes_gtid {
                        started.elapsed()
                    } else {
                        took
                    };
                    self.release(conn);
                    break (o, server, took);
                }
                Err(e) => {
                    conn.broken = true;
                    pool::discard(conn);
                    let flushed = self.client.wbuf.len() < mark;
                    if let Some(st) = &dest_state
                        && !matches!(e, ProxyError::Timeout | ProxyError::Refused(_))
                    {
                        st.note_error(&e.to_string());
                        st.record_failure(g.circuit_break_after, g.circuit_open);
                    }
                    // A read that failed or timed out on a replica before anything reached
                    // the client runs again elsewhere (a stalled replica must not hang its
                    // clients); writes never do.
                    if retry_ok
                        && !flushed
                        && attempt <= MAX_READ_RETRIES
                        && matches!(e, ProxyError::BackendLost { .. } | ProxyError::Timeout)
                    {
                        if matches!(e, ProxyError::Timeout) {
                            tracing::warn!(server = %server, "read timed out on a replica; retried elsewhere");
                        }
                        self.client.wbuf.truncate(mark);
                        avoid.extend(dest_name);
                        continue;
                    }
                    if let ProxyError::ResultTooLarge { next_seq, .. } = e {
                        // Rows already went out: end the result with an ERR in sequence.
                        self.refuse(next_seq, &e.to_err_packet());
                    } else {
                        if !flushed {
                            self.client.wbuf.truncate(mark);
                        }
                        self.refuse(1, &e.to_err_packet());
                    }
                    let code = e.to_err_packet().code;
                    stats::record(&self.info.core, d, started.elapsed(), 0, true);
                    self.audit(g, sql, d, &server, started, 0, Some(code));
                    if was_pinned || self.in_txn || self.sticky {
                        // The session's connection state is gone; the client must reconnect.
                        return Flow::Close;
                    }
                    return Flow::Continue;
                }
            }
        };
        if outcome.err.is_some() {
            ListenerStats::add(&self.stats.errors, 1);
        }
        stats::record(
            &self.info.core,
            d,
            took,
            outcome.rows.max(outcome.affected),
            outcome.err.is_some(),
        );
        stats::maybe_slow(
            &self.info.core,
            &self.user,
            &server,
            sql,
            took,
            g.slow_query,
        );
        self.audit(
            g,
            sql,
            d,
            &server,
            started,
            outcome.rows.max(outcome.affected),
            outcome.err,
        );
        Flow::Continue
    }

    /// Sends what is queued on `conn` and forwards the response to the client, with the statement
    /// timeout (for a `read`, the read timeout when no statement timeout is set).
    pub(super) async fn forward(
        &mut self,
        conn: &mut BackendConn,
        kind: RespKind,
        client_stmt: Option<u32>,
        g: &MysqlGroup,
        read: bool,
    ) -> Result<Outcome, ProxyError> {
        let lost = |server: &str, e: &dyn std::fmt::Display| ProxyError::BackendLost {
            server: server.to_string(),
            reason: e.to_string(),
        };
        if let Err(e) = conn.conn.flush().await {
            return Err(lost(&conn.server, &e));
        }
        let max = g.max_result_bytes.unwrap_or(u64::MAX);
        let fut = conn.forward(kind, Some(&mut self.client), client_stmt, max);
        let timeout = g.query_timeout.or(if read { g.read_timeout } else { None });
        let r = match timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => {
                    conn.broken = true;
                    kill_query(conn, g);
                    return Err(ProxyError::Timeout);
                }
            },
            None => fut.await,
        };
        match r {
            Ok(o) => Ok(o),
            Err(FwdError::Backend(e)) => Err(lost(&conn.server, &e)),
            Err(FwdError::Client(e)) => Err(ProxyError::ClientIo(match e {
                ConnError::Io(e) => e,
                ConnError::Protocol(p) => std::io::Error::other(p.to_string()),
                e @ ConnError::BudgetExhausted { .. } => std::io::Error::other(e.to_string()),
            })),
            Err(FwdError::TooLarge { limit, next_seq }) => {
                Err(ProxyError::ResultTooLarge { limit, next_seq })
            }
        }
    }

    /// With read-your-writes by GTID: after a successful write outside a transaction (or its
    /// COMMIT), remembers the session's `@@last_gtid`.
    pub(super) async fn track_gtid(
        &mut self,
        g: &MysqlGroup,
        c: &Classified,
        o: &Outcome,
        conn: &mut BackendConn,
    ) {
        // A COMMIT makes the transaction's writes visible: its GTID is the one to wait for.
        if !g.read_your_writes_gtid
            || o.err.is_some()
            || self.in_txn
            || !(is_write(c)
                || c.kind == StmtKind::Commit
                    && self.last_gtid.is_none()
                    && self.last_write.is_some())
        {
            return;
        }
        if !self.info.core.shared.gtid.supported(&g.name) {
            return; // servers without `@@last_gtid`: the window decides
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
            Ok(Err(e)) if e.contains("Unknown system variable") => {
                self.info.core.shared.gtid.set_unsupported(&g.name);
            }
            Ok(Err(_)) | Err(_) => conn.broken = true,
        }
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
                &self.info.core,
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

    pub(super) fn after_statement(&mut self, c: &Classified, o: &Outcome, conn: &mut BackendConn, sql: &str) {
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
            self.last_write = Some(Instant::now());
            // Until this write's GTID is read (`track_gtid`), the window decides.
            self.last_gtid = None;
        }
    }
}

/// Whether a statement may change data (for read-your-writes): not a plain read, not one that
/// only touches the session, not a transaction boundary (the writes inside count themselves).
fn is_write(c: &Classified) -> bool {
    !c.is_read()
        && !matches!(
            c.kind,
            StmtKind::Set
                | StmtKind::Use
                | StmtKind::Empty
                | StmtKind::Begin
                | StmtKind::Commit
                | StmtKind::Rollback
                | StmtKind::Savepoint
        )
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
