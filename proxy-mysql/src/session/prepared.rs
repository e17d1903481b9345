//! Prepared statements: COM_STMT_PREPARE, COM_STMT_EXECUTE (re-prepared on whichever connection
//! runs it) and COM_STMT_FETCH for cursors.

use super::*;

impl Session {
    pub(super) async fn prepare(&mut self, sql: &str) -> Flow {
        let c = classify(sql);
        let snap = self.snap.get().clone();
        if let Some(e) = self.outside_schemas(&snap, sql) {
            self.refuse(1, &e);
            return Flow::Continue;
        }
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            self.refuse(1, &errs::no_backend(&self.info.group, "group"));
            return Flow::Continue;
        };
        let dest = match self.choose(&snap, g, &c, &[]) {
            Ok(d) => d,
            Err(e) => {
                self.refuse(1, &e.to_err_packet());
                return Flow::Continue;
            }
        };
        let mut conn = match self.acquire(dest, g).await {
            Ok(x) => x,
            Err(e) => {
                self.refuse(1, &e.to_err_packet());
                return Flow::Continue;
            }
        };
        let id = self.next_stmt;
        let sql_rc: Rc<str> = Rc::from(sql);
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(com::STMT_PREPARE);
        p.extend_from_slice(sql.as_bytes());
        conn.queue_command(&p);
        match self
            .forward(&mut conn, RespKind::Prepare, Some(id), g, true)
            .await
        {
            Ok(o) => {
                if let Some((bid, cols, params)) = o.prepared {
                    self.next_stmt = self.next_stmt.wrapping_add(1).max(1);
                    let key = (conn.schema.clone(), sql_rc.clone());
                    if let Some(old) = conn.cache_stmt(key, bid, params, cols) {
                        conn.queue_stmt_close(old);
                    }
                    self.stmts.insert(
                        id,
                        ClientStmt {
                            digest: Rc::new(digest(&sql_rc)),
                            sql: sql_rc,
                            class: c,
                            params,
                            types: None,
                            long_data: Vec::new(),
                        },
                    );
                } else {
                    ListenerStats::add(&self.stats.errors, 1);
                }
                if conn.conn.flush().await.is_err() {
                    conn.broken = true;
                }
                self.release(conn);
                Flow::Continue
            }
            Err(e) => {
                pool::discard(conn);
                self.refuse(1, &e.to_err_packet());
                Flow::Continue
            }
        }
    }

    /// Makes sure `stmt` is prepared on `conn`; returns the backend statement id.
    pub(super) async fn ensure_prepared(
        conn: &mut BackendConn,
        sql: &Rc<str>,
    ) -> Result<Result<u32, ErrPacket>, FwdError> {
        let key = (conn.schema.clone(), sql.clone());
        if let Some(s) = conn.lookup_stmt(&key) {
            return Ok(Ok(s.id));
        }
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(com::STMT_PREPARE);
        p.extend_from_slice(sql.as_bytes());
        let o = conn.command(&p, RespKind::Prepare).await?;
        if let Some(err) = o.err_payload {
            return Ok(Err(
                ErrPacket::decode(err).unwrap_or_else(|_| errs::internal("re-prepare failed"))
            ));
        }
        let Some((bid, cols, params)) = o.prepared else {
            return Ok(Err(errs::internal("re-prepare returned no statement")));
        };
        if let Some(old) = conn.cache_stmt(key, bid, params, cols) {
            conn.queue_stmt_close(old);
        }
        Ok(Ok(bid))
    }

    pub(super) async fn stmt_execute(&mut self, payload: Bytes) -> Flow {
        if payload.len() < 10 {
            return self.malformed();
        }
        let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
        let cursor = payload[5] != 0;
        let Some(st) = self.stmts.get_mut(&id) else {
            self.refuse(1, &errs::unknown_stmt(id, "mysqld_stmt_execute"));
            return Flow::Continue;
        };
        // Rebuild the parameter block so that types are always sent (the backend connection may not
        // have seen the previous execution).
        let n = usize::from(st.params);
        let mut body = BytesMut::with_capacity(payload.len() + 2 * n);
        body.extend_from_slice(&payload[..10]);
        if n > 0 {
            let bitmap = n.div_ceil(8);
            let Some(rest) = payload.get(10..) else {
                return self.malformed();
            };
            if rest.len() < bitmap + 1 {
                return self.malformed();
            }
            body.extend_from_slice(&rest[..bitmap]);
            let bound = rest[bitmap];
            let after = &rest[bitmap + 1..];
            if bound == 1 {
                if after.len() < 2 * n {
                    return self.malformed();
                }
                st.types = Some(Bytes::copy_from_slice(&after[..2 * n]));
                body.extend_from_slice(&[1]);
                body.extend_from_slice(after);
            } else if let Some(t) = &st.types {
                body.extend_from_slice(&[1]);
                body.extend_from_slice(t);
                body.extend_from_slice(after);
            } else {
                body.extend_from_slice(&rest[bitmap..]);
            }
        } else if let Some(rest) = payload.get(10..) {
            body.extend_from_slice(rest);
        }
        let sql = st.sql.clone();
        let d = st.digest.clone();
        let mut class = st.class.clone();
        let long_data = std::mem::take(&mut st.long_data);
        if cursor {
            // A cursor lives in its connection: keep the session there.
            class.flags |= router::sql::classify::flags::MULTI;
        }
        let snap = self.snap.get().clone();
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            self.refuse(1, &errs::no_backend(&self.info.group, "group"));
            return Flow::Continue;
        };
        let started = Instant::now();
        let _permit = match crate::ops::rules_for(&self.info.core, g, snap.generation) {
            Some(r) => match r.check_text(&self.user, &sql, &d) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.refuse(1, &e);
                    self.audit(g, &sql, &d, "", started, 0, Some(e.code));
                    return Flow::Continue;
                }
            },
            None => None,
        };
        // Replicas that failed this execution: a retried read goes elsewhere.
        let mut avoid: Vec<Rc<str>> = Vec::new();
        let mut attempt = 0;
        let wait = g
            .query_timeout
            .or(g.read_timeout)
            .unwrap_or(Duration::from_secs(30));
        loop {
            attempt += 1;
            let dest = match self.choose(&snap, g, &class, &avoid) {
                Ok(d) => d,
                Err(e) => {
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
            };
            // A read on a replica may run again elsewhere; writes and cursors never do.
            let (retry_ok, dest_name) = match &dest {
                Dest::Server(t, primary) => (
                    !primary && class.is_read() && attempt <= MAX_READ_RETRIES,
                    Some(t.name.clone()),
                ),
                Dest::Pinned => (false, None),
            };
            if class.pins_session() {
                self.sticky = true;
            }
            let mut conn = match self.acquire(dest, g).await {
                Ok(x) => x,
                Err(e) => {
                    if retry_ok && matches!(e, ProxyError::BackendConnect { .. }) {
                        avoid.extend(dest_name);
                        continue;
                    }
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
            };
            // Bounded: a hung server must not hold the client at the (re-)prepare either.
            let bid = match tokio::time::timeout(wait, Self::ensure_prepared(&mut conn, &sql)).await
            {
                Ok(Ok(Ok(b))) => b,
                Ok(Ok(Err(err))) => {
                    self.release(conn);
                    self.refuse(1, &err);
                    return Flow::Continue;
                }
                Ok(Err(e)) => {
                    let server = conn.server.to_string();
                    pool::discard(conn);
                    if retry_ok {
                        avoid.extend(dest_name);
                        continue;
                    }
                    let e = ProxyError::BackendLost {
                        server,
                        reason: e.to_string(),
                    };
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
                Err(_) => {
                    pool::discard(conn);
                    if retry_ok {
                        avoid.extend(dest_name);
                        continue;
                    }
                    self.refuse(1, &ProxyError::Timeout.to_err_packet());
                    return if self.sticky || self.in_txn {
                        Flow::Close
                    } else {
                        Flow::Continue
                    };
                }
            };
            for ld in &long_data {
                let mut v = ld.to_vec();
                v[1..5].copy_from_slice(&bid.to_le_bytes());
                conn.queue_command(&v);
            }
            body[1..5].copy_from_slice(&bid.to_le_bytes());
            conn.queue_command(&body);
            let mark = self.client.wbuf.len();
            match self
                .forward(&mut conn, RespKind::ResultSet, None, g, class.is_read())
                .await
            {
                Ok(o) => {
                    self.after_statement(&class, &o, &mut conn, &sql);
                    self.track_gtid(g, &class, &o, &mut conn).await;
                    if cursor {
                        self.sticky = true;
                    }
                    let server = conn.server.clone();
                    self.release(conn);
                    stats::record(
                        &self.info.core,
                        &d,
                        started.elapsed(),
                        o.rows.max(o.affected),
                        o.err.is_some(),
                    );
                    stats::maybe_slow(
                        &self.info.core,
                        &self.user,
                        &server,
                        &sql,
                        started.elapsed(),
                        g.slow_query,
                    );
                    let rows = o.rows.max(o.affected);
                    self.audit(g, &sql, &d, &server, started, rows, o.err);
                    return Flow::Continue;
                }
                Err(e) => {
                    pool::discard(conn);
                    let flushed = self.client.wbuf.len() < mark;
                    if retry_ok
                        && !flushed
                        && matches!(e, ProxyError::BackendLost { .. } | ProxyError::Timeout)
                    {
                        self.client.wbuf.truncate(mark);
                        avoid.extend(dest_name);
                        continue;
                    }
                    if !flushed {
                        self.client.wbuf.truncate(mark);
                    }
                    stats::record(&self.info.core, &d, started.elapsed(), 0, true);
                    self.refuse(1, &e.to_err_packet());
                    if self.sticky || self.in_txn {
                        return Flow::Close;
                    }
                    return Flow::Continue;
                }
            }
        }
    }

    pub(super) async fn stmt_fetch(&mut self, payload: Bytes) -> Flow {
        if payload.len() < 9 {
            return self.malformed();
        }
        let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
        let Some(st) = self.stmts.get(&id) else {
            self.refuse(1, &errs::unknown_stmt(id, "mysqld_stmt_fetch"));
            return Flow::Continue;
        };
        let sql = st.sql.clone();
        let snap = self.snap.get().clone();
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            return Flow::Continue;
        };
        let Some(mut conn) = self.pinned.take() else {
            self.refuse(
                1,
                &ErrPacket::new(1421, "HY000", "The statement has no open cursor"),
            );
            return Flow::Continue;
        };
        let key = (conn.schema.clone(), sql);
        let Some(bid) = conn.lookup_stmt(&key).map(|s| s.id) else {
            self.pinned = Some(conn);
            self.refuse(
                1,
                &ErrPacket::new(1421, "HY000", "The statement has no open cursor"),
            );
            return Flow::Continue;
        };
        let mut body = payload.to_vec();
        body[1..5].copy_from_slice(&bid.to_le_bytes());
        conn.queue_command(&body);
        match self
            .forward(&mut conn, RespKind::Fetch, None, g, true)
            .await
        {
            Ok(_) => {
                self.release(conn);
                Flow::Continue
            }
            Err(e) => {
                pool::discard(conn);
                self.refuse(1, &e.to_err_packet());
                Flow::Close
            }
        }
    }
}
