//! Prepared statements: COM_STMT_PREPARE, COM_STMT_EXECUTE (re-prepared on whichever connection
//! runs it) and COM_STMT_FETCH for cursors.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use codec::mysql::ErrPacket;
use codec::mysql::consts::com;
use router::config::MysqlGroup;
use router::sql::{classify, digest};
use runtime::ListenerStats;

use crate::backend::{BackendConn, CachedStmt, ExecMeta, RespKind, StmtKey, StmtText};
use crate::error::{ProxyError, errs};
use crate::pool;

use super::{ClientStmt, Flow, Leg, Next, Session};

impl Session {
    pub(super) async fn prepare(&mut self, sql: &str) -> Flow {
        let c = classify(sql);
        let snap = self.snap.get().clone();
        if let Some(e) = self.outside_schemas(&snap, sql) {
            self.refuse(1, &e);
            return Flow::Continue;
        }
        let Some(g) = self.group(&snap) else {
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
        let sql_t = StmtText::new(Rc::from(sql));
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(com::STMT_PREPARE);
        p.extend_from_slice(sql.as_bytes());
        conn.queue_command(&p);
        match self
            .forward(&mut conn, RespKind::Prepare, Some(id), g, true, None)
            .await
        {
            Ok(o) => {
                if let Some((bid, cols, params)) = o.prepared {
                    self.next_stmt = self.next_stmt.wrapping_add(1).max(1);
                    let key = StmtKey::new(conn.schema.clone(), &sql_t);
                    if let Some(old) = conn.cache_stmt(key, bid, params, cols, o.defs.clone()) {
                        conn.queue_stmt_close(old);
                    }
                    self.stmts.insert(
                        id,
                        ClientStmt {
                            digest: Rc::new(digest(&sql_t.text)),
                            sql: sql_t,
                            class: c,
                            params,
                            types: None,
                            long_data: Vec::new(),
                            defs: o.defs,
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

    /// Makes sure `stmt` is prepared on `conn`; returns the statement as the connection holds it
    /// (its id, column definitions and last parameter types: see `CachedStmt`).
    pub(super) async fn ensure_prepared(
        conn: &mut BackendConn,
        sql: &StmtText,
    ) -> Result<Result<CachedStmt, ErrPacket>, ProxyError> {
        let key = StmtKey::new(conn.schema.clone(), sql);
        let sql = &sql.text;
        if let Some(s) = conn.lookup_stmt(&key) {
            return Ok(Ok(s));
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
        if let Some(old) = conn.cache_stmt(key.clone(), bid, params, cols, o.defs) {
            conn.queue_stmt_close(old);
        }
        Ok(conn
            .lookup_stmt(&key)
            .ok_or_else(|| errs::internal("re-prepared statement not cached")))
    }

    /// COM_STMT_SEND_LONG_DATA: kept until the statement's next execution (no reply).
    pub(super) fn stmt_long_data(&mut self, payload: Bytes) -> Flow {
        if payload.len() >= 7 {
            let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
            if let Some(s) = self.stmts.get_mut(&id) {
                s.long_data.push(payload);
            }
        }
        Flow::Continue
    }

    /// COM_STMT_CLOSE: forgotten here (no reply); the backends' statements stay cached on their
    /// connections.
    pub(super) fn stmt_close(&mut self, payload: &[u8]) -> Flow {
        if payload.len() >= 5 {
            let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
            self.stmts.remove(&id);
        }
        Flow::Continue
    }

    /// COM_STMT_RESET: the long data sent for the statement is dropped.
    pub(super) fn stmt_reset(&mut self, payload: &[u8]) -> Flow {
        if payload.len() < 5 {
            return self.malformed();
        }
        let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
        match self.stmts.get_mut(&id) {
            Some(s) => {
                s.long_data.clear();
                self.client.queue_ok(1, 0, 0, self.status_flags());
            }
            None => self.refuse(1, &errs::unknown_stmt(id, "mysqld_stmt_reset")),
        }
        Flow::Continue
    }

    /// COM_STMT_EXECUTE: routed like a query of the statement's text; the statement is
    /// (re-)prepared on the connection that runs it and the execution's ids rewritten to its id.
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
        let Some(body) = ExecBody::of(st, &payload) else {
            return self.malformed();
        };
        let sql = st.sql.clone();
        let d = st.digest.clone();
        let held = st.defs.clone();
        let mut class = st.class.clone();
        let long_data = std::mem::take(&mut st.long_data);
        if cursor {
            // A cursor lives in its connection: keep the session there.
            class.flags |= router::sql::classify::flags::MULTI;
        }
        let snap = self.snap.get().clone();
        let Some(g) = self.group(&snap) else {
            self.refuse(1, &errs::no_backend(&self.info.group, "group"));
            return Flow::Continue;
        };
        let started = self.now;
        let Ok(permit) = self.admit(g, snap.generation, &sql.text, &d, started) else {
            return Flow::Continue;
        };
        if let Some(p) = &permit
            && !p.wait.is_zero()
        {
            // A queueing limit: the statement's turn comes later.
            tokio::time::sleep(p.wait).await;
        }
        // Replicas that failed this execution: a retried read goes elsewhere.
        let mut avoid: Vec<Rc<str>> = Vec::new();
        for attempt in 1.. {
            let leg = match self.open_leg(&snap, g, &class, &mut avoid, attempt).await {
                Next::Go(l) => l,
                Next::Retry => continue,
                Next::Stop(flow) => return flow,
            };
            let (mut leg, held_here) = match self.prepared_on(leg, g, &sql, &mut avoid).await {
                Next::Go(x) => x,
                Next::Retry => continue,
                Next::Stop(flow) => return flow,
            };
            let CachedStmt {
                id: bid,
                defs,
                types: conn_types,
                ..
            } = held_here;
            for ld in &long_data {
                let mut v = ld.to_vec();
                v[1..5].copy_from_slice(&bid.to_le_bytes());
                leg.conn.queue_command(&v);
            }
            // Types the server statement already holds need not travel again (new-params-bound
            // 0, as the client's driver sends them); others are put in and remembered once the
            // execution succeeds.
            let sends = body.sent_types(&payload, conn_types.as_ref());
            body.queue(&mut leg.conn, bid, &payload, sends.is_none());
            let mark = self.client.wbuf.len();
            let r = self
                .forward(
                    &mut leg.conn,
                    RespKind::ResultSet,
                    None,
                    g,
                    class.is_read(),
                    Some(ExecMeta {
                        conn: defs.as_ref(),
                        client: held.as_ref(),
                    }),
                )
                .await;
            return match r {
                Ok(mut o) => {
                    // Remembered once the server took them; after its ERR they are not known (a
                    // failed connection is discarded with what it remembered).
                    if let Some(t) = sends {
                        let key = StmtKey::new(leg.conn.schema.clone(), &sql);
                        leg.conn.set_stmt_types(&key, o.err.is_none().then_some(t));
                    }
                    // What the client holds now: definitions the reply carried (the columns
                    // changed: the connection holds them too), or the connection's put back.
                    let now = if let Some(d) = o.defs.take() {
                        let key = StmtKey::new(leg.conn.schema.clone(), &sql);
                        leg.conn.set_stmt_defs(&key, d.clone());
                        Some(d)
                    } else {
                        o.defs_put_back.then_some(defs).flatten()
                    };
                    if let Some(d) = now
                        && let Some(st) = self.stmts.get_mut(&id)
                    {
                        st.defs = Some(d);
                    }
                    let ran = self
                        .succeeded(leg, g, &class, &o, &sql.text, started, cursor)
                        .await;
                    self.account(g, &sql.text, &d, started, &ran, Ok(&o));
                    Flow::Continue
                }
                Err(e) => match self.failed(e, leg, mark, &mut avoid, g, &d, &sql.text, started) {
                    Some(flow) => flow,
                    None => continue,
                },
            };
        }
        Flow::Continue
    }

    /// The backend statement id of `sql` on the attempt's connection, prepared there if it is not
    /// yet (bounded by the statement timeout: a hung server must not hold the client here
    /// either). A failure of the connection retries a read elsewhere; the server's refusal is
    /// the client's answer.
    async fn prepared_on(
        &mut self,
        mut leg: Leg,
        g: &MysqlGroup,
        sql: &StmtText,
        avoid: &mut Vec<Rc<str>>,
    ) -> Next<(Leg, CachedStmt)> {
        // Prepared there already (the common case): no timer, no await.
        let key = StmtKey::new(leg.conn.schema.clone(), sql);
        if let Some(s) = leg.conn.lookup_stmt(&key) {
            return Next::Go((leg, s));
        }
        drop(key);
        let wait = g
            .query_timeout
            .or(g.read_timeout)
            .unwrap_or(Duration::from_secs(30));
        let e = match tokio::time::timeout(wait, Self::ensure_prepared(&mut leg.conn, sql)).await {
            Ok(Ok(Ok(held))) => return Next::Go((leg, held)),
            Ok(Ok(Err(refused))) => {
                self.release(leg.conn);
                self.refuse(1, &refused);
                return Next::Stop(Flow::Continue);
            }
            Ok(Err(e)) => e,
            Err(_) => ProxyError::Timeout,
        };
        pool::discard(leg.conn);
        if leg.retry_ok && e.retryable() {
            avoid.extend(leg.name);
            return Next::Retry;
        }
        self.refuse(1, &e.to_err_packet());
        let closes = matches!(e, ProxyError::Timeout) && (self.sticky || self.in_txn);
        Next::Stop(if closes { Flow::Close } else { Flow::Continue })
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
        let Some(g) = self.group(&snap) else {
            return Flow::Continue;
        };
        let Some(mut conn) = self.pinned.take() else {
            self.refuse(1, &errs::no_open_cursor());
            return Flow::Continue;
        };
        let key = StmtKey::new(conn.schema.clone(), &sql);
        let Some(bid) = conn.lookup_stmt(&key).map(|s| s.id) else {
            self.pinned = Some(conn);
            self.refuse(1, &errs::no_open_cursor());
            return Flow::Continue;
        };
        let mut body = payload.to_vec();
        body[1..5].copy_from_slice(&bid.to_le_bytes());
        conn.queue_command(&body);
        match self
            .forward(&mut conn, RespKind::Fetch, None, g, true, None)
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

/// A COM_STMT_EXECUTE as it goes to a backend: the client's payload with the statement id
/// patched and the parameter types always included (the backend connection that runs it may not
/// have seen the execution that sent them; they are remembered in the client's statement when
/// it sends them). Checked once, then written straight into the backend connection's buffer
/// ([`BackendConn::queue_command_parts`]): no copy of the payload is made per execution.
struct ExecBody {
    /// The remembered types to put in, at the offset of the new-params-bound byte (which
    /// becomes 1), when the client left them out.
    insert: Option<(usize, Bytes)>,
    /// Where the client's own types are in the payload and their length, when it sent them.
    own: Option<(usize, usize)>,
}

impl ExecBody {
    /// Checks a COM_STMT_EXECUTE payload of `st` (remembering the types it sends); `None`: a
    /// malformed payload.
    fn of(st: &mut ClientStmt, payload: &[u8]) -> Option<ExecBody> {
        if payload.len() < 10 {
            return None;
        }
        let n = usize::from(st.params);
        if n == 0 {
            return Some(ExecBody {
                insert: None,
                own: None,
            });
        }
        let bitmap = n.div_ceil(8);
        let rest = &payload[10..];
        if rest.len() < bitmap + 1 {
            return None;
        }
        let after = &rest[bitmap + 1..];
        if rest[bitmap] == 1 {
            if after.len() < 2 * n {
                return None;
            }
            // Drivers that send the types with every execution: one copy, not one per execution.
            let types = &after[..2 * n];
            if st.types.as_deref() != Some(types) {
                st.types = Some(Bytes::copy_from_slice(types));
            }
            return Some(ExecBody {
                insert: None,
                own: Some((10 + bitmap + 1, 2 * n)),
            });
        }
        Some(ExecBody {
            insert: st.types.clone().map(|t| (10 + bitmap, t)),
            own: None,
        })
    }

    /// The payload's parts for backend statement `bid` (`id`: its bytes, kept by the caller).
    fn parts<'a>(&'a self, payload: &'a [u8], id: &'a [u8; 4]) -> ([&'a [u8]; 6], usize) {
        match &self.insert {
            None => ([&payload[..1], id, &payload[5..], &[], &[], &[]], 3),
            Some((at, types)) => (
                [
                    &payload[..1],
                    id,
                    &payload[5..*at],
                    &[1],
                    types,
                    &payload[at + 1..],
                ],
                6,
            ),
        }
    }

    /// The parameter types this execution sends the server statement (`None`: none, or it left
    /// them out because the statement holds `held` already).
    fn sent_types(&self, payload: &[u8], held: Option<&Bytes>) -> Option<Bytes> {
        match &self.insert {
            Some((_, t)) if held == Some(t) => None,
            Some((_, t)) => Some(t.clone()),
            None => self.own.as_ref().and_then(|(at, n)| {
                (held.map(|h| &h[..]) != payload.get(*at..*at + n))
                    .then(|| Bytes::copy_from_slice(&payload[*at..*at + n]))
            }),
        }
    }

    /// Queues the execution of backend statement `bid` on `conn`; `as_sent`: the client's payload
    /// as it came (no remembered types put in).
    fn queue(&self, conn: &mut BackendConn, bid: u32, payload: &[u8], as_sent: bool) {
        let id = bid.to_le_bytes();
        if as_sent {
            conn.queue_command_parts(&[&payload[..1], &id, &payload[5..]]);
            return;
        }
        let (parts, n) = self.parts(payload, &id);
        conn.queue_command_parts(&parts[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(params: u16) -> ClientStmt {
        let sql: Rc<str> = Rc::from("SELECT ?, ?");
        ClientStmt {
            digest: Rc::new(router::sql::digest(&sql)),
            class: router::sql::classify(&sql),
            sql: StmtText::new(sql),
            params,
            types: None,
            long_data: Vec::new(),
            defs: None,
        }
    }

    /// COM_STMT_EXECUTE: id 7, no cursor, iteration count 1, then `rest`.
    fn execute(rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0];
        p.extend_from_slice(rest);
        p
    }

    /// The payload an execution of `payload` sends as backend statement 9.
    fn sent(st: &mut ClientStmt, payload: &[u8]) -> Option<Vec<u8>> {
        let body = ExecBody::of(st, payload)?;
        let id = 9u32.to_le_bytes();
        let (parts, n) = body.parts(payload, &id);
        Some(parts[..n].concat())
    }

    /// `execute(rest)` as sent to backend statement 9.
    fn as_nine(rest: &[u8]) -> Vec<u8> {
        let mut p = execute(rest);
        p[1] = 9;
        p
    }

    #[test]
    fn parameter_types_are_always_sent_and_remembered() {
        let mut st = stmt(2);
        // Null bitmap, new-params-bound = 1, two LONGLONG types, two values.
        let first = [
            0, 1, 8, 0, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        ];
        let body = sent(&mut st, &execute(&first)).expect("well formed");
        assert_eq!(body, as_nine(&first));
        assert_eq!(st.types.as_deref(), Some(&[8, 0, 8, 0][..]));
        // The next execution leaves the types out (bound = 0): they are put back.
        let second = execute(&[0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        let body = sent(&mut st, &second).expect("well formed");
        assert_eq!(
            body,
            as_nine(&[
                0, 1, 8, 0, 8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0
            ])
        );
        // New types replace the remembered ones (one unsigned LONG, one VARCHAR).
        let third = [0, 1, 3, 0x80, 15, 0, 7, 0, 0, 0, 1, b'x'];
        assert_eq!(
            sent(&mut st, &execute(&third)).as_deref(),
            Some(&as_nine(&third)[..])
        );
        assert_eq!(st.types.as_deref(), Some(&[3, 0x80, 15, 0][..]));
    }

    #[test]
    fn types_the_connection_holds_are_not_sent_again() {
        let mut st = stmt(2);
        let first = execute(&[
            0, 1, 8, 0, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        ]);
        let body = ExecBody::of(&mut st, &first).expect("well formed");
        // A connection that holds none (or others) is sent the client's.
        assert_eq!(
            body.sent_types(&first, None).as_deref(),
            Some(&[8, 0, 8, 0][..])
        );
        let other = Bytes::from_static(&[3, 0, 3, 0]);
        assert!(body.sent_types(&first, Some(&other)).is_some());
        let held = Bytes::from_static(&[8, 0, 8, 0]);
        assert_eq!(body.sent_types(&first, Some(&held)), None);
        // The client leaves them out: put in for a connection without them, not for one
        // that holds the same.
        let second = execute(&[0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        let body = ExecBody::of(&mut st, &second).expect("well formed");
        assert_eq!(
            body.sent_types(&second, None).as_deref(),
            Some(&[8, 0, 8, 0][..])
        );
        assert_eq!(
            body.sent_types(&second, Some(&other)).as_deref(),
            Some(&[8, 0, 8, 0][..])
        );
        assert_eq!(body.sent_types(&second, Some(&held)), None);
        // Without parameters there is nothing to send.
        let mut none = stmt(0);
        let p = execute(&[]);
        assert_eq!(
            ExecBody::of(&mut none, &p).unwrap().sent_types(&p, None),
            None
        );
    }

    #[test]
    fn short_parameter_blocks_are_malformed() {
        let mut st = stmt(2);
        assert!(sent(&mut st, &execute(&[])).is_none());
        assert!(sent(&mut st, &execute(&[0, 1, 8, 0])).is_none());
        assert!(sent(&mut st, &[0x17, 7, 0]).is_none());
        // Types not known yet and not sent: the payload goes as it is (the server refuses it).
        assert_eq!(sent(&mut st, &execute(&[0, 0])), Some(as_nine(&[0, 0])));
        // Without parameters the payload goes as it is.
        let mut none = stmt(0);
        assert_eq!(sent(&mut none, &execute(&[])), Some(as_nine(&[])));
    }
}
