//! Prepared statements: COM_STMT_PREPARE, COM_STMT_EXECUTE (re-prepared on whichever connection
//! runs it) and COM_STMT_FETCH for cursors.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use codec::mysql::ErrPacket;
use codec::mysql::consts::com;
use router::config::MysqlGroup;
use router::sql::{classify, digest};
use runtime::ListenerStats;

use crate::backend::{BackendConn, RespKind};
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
    ) -> Result<Result<u32, ErrPacket>, ProxyError> {
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
        let Some(mut body) = execute_body(st, &payload) else {
            return self.malformed();
        };
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
        let Ok(_permit) = self.admit(g, snap.generation, &sql, &d, started) else {
            return Flow::Continue;
        };
        // Replicas that failed this execution: a retried read goes elsewhere.
        let mut avoid: Vec<Rc<str>> = Vec::new();
        for attempt in 1.. {
            let leg = match self.open_leg(&snap, g, &class, &mut avoid, attempt).await {
                Next::Go(l) => l,
                Next::Retry => continue,
                Next::Stop(flow) => return flow,
            };
            let (mut leg, bid) = match self.prepared_on(leg, g, &sql, &mut avoid).await {
                Next::Go(x) => x,
                Next::Retry => continue,
                Next::Stop(flow) => return flow,
            };
            for ld in &long_data {
                let mut v = ld.to_vec();
                v[1..5].copy_from_slice(&bid.to_le_bytes());
                leg.conn.queue_command(&v);
            }
            body[1..5].copy_from_slice(&bid.to_le_bytes());
            leg.conn.queue_command(&body);
            let mark = self.client.wbuf.len();
            let r = self
                .forward(&mut leg.conn, RespKind::ResultSet, None, g, class.is_read())
                .await;
            return match r {
                Ok(o) => {
                    let ran = self
                        .succeeded(leg, g, &class, &o, &sql, started, cursor)
                        .await;
                    self.account(g, &sql, &d, started, &ran, Ok(&o));
                    Flow::Continue
                }
                Err(e) => match self.failed(e, leg, mark, &mut avoid, g, &d, &sql, started) {
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
        sql: &Rc<str>,
        avoid: &mut Vec<Rc<str>>,
    ) -> Next<(Leg, u32)> {
        let wait = g
            .query_timeout
            .or(g.read_timeout)
            .unwrap_or(Duration::from_secs(30));
        let e = match tokio::time::timeout(wait, Self::ensure_prepared(&mut leg.conn, sql)).await {
            Ok(Ok(Ok(bid))) => return Next::Go((leg, bid)),
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
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            return Flow::Continue;
        };
        let Some(mut conn) = self.pinned.take() else {
            self.refuse(1, &errs::no_open_cursor());
            return Flow::Continue;
        };
        let key = (conn.schema.clone(), sql);
        let Some(bid) = conn.lookup_stmt(&key).map(|s| s.id) else {
            self.pinned = Some(conn);
            self.refuse(1, &errs::no_open_cursor());
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

/// The COM_STMT_EXECUTE payload to send: the client's, with the parameter types always
/// included (the backend connection that runs it may not have seen the execution that sent
/// them); they are remembered in `st` when the client sends them. `None`: a malformed payload.
fn execute_body(st: &mut ClientStmt, payload: &[u8]) -> Option<BytesMut> {
    let n = usize::from(st.params);
    let mut body = BytesMut::with_capacity(payload.len() + 2 * n);
    body.extend_from_slice(payload.get(..10)?);
    if n == 0 {
        if let Some(rest) = payload.get(10..) {
            body.extend_from_slice(rest);
        }
        return Some(body);
    }
    let bitmap = n.div_ceil(8);
    let rest = payload.get(10..)?;
    if rest.len() < bitmap + 1 {
        return None;
    }
    body.extend_from_slice(&rest[..bitmap]);
    let bound = rest[bitmap];
    let after = &rest[bitmap + 1..];
    if bound == 1 {
        if after.len() < 2 * n {
            return None;
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
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(params: u16) -> ClientStmt {
        let sql: Rc<str> = Rc::from("SELECT ?, ?");
        ClientStmt {
            digest: Rc::new(router::sql::digest(&sql)),
            class: router::sql::classify(&sql),
            sql,
            params,
            types: None,
            long_data: Vec::new(),
        }
    }

    /// COM_STMT_EXECUTE: id 7, no cursor, iteration count 1, then `rest`.
    fn execute(rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0];
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn parameter_types_are_always_sent_and_remembered() {
        let mut st = stmt(2);
        // Null bitmap, new-params-bound = 1, two LONGLONG types, two values.
        let first = execute(&[
            0, 1, 8, 0, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        ]);
        let body = execute_body(&mut st, &first).expect("well formed");
        assert_eq!(&body[..], &first[..]);
        assert_eq!(st.types.as_deref(), Some(&[8, 0, 8, 0][..]));
        // The next execution leaves the types out (bound = 0): they are put back.
        let second = execute(&[0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        let body = execute_body(&mut st, &second).expect("well formed");
        assert_eq!(
            &body[..],
            &execute(&[
                0, 1, 8, 0, 8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0
            ])[..]
        );
    }

    #[test]
    fn short_parameter_blocks_are_malformed() {
        let mut st = stmt(2);
        assert!(execute_body(&mut st, &execute(&[])).is_none());
        assert!(execute_body(&mut st, &execute(&[0, 1, 8, 0])).is_none());
        assert!(execute_body(&mut st, &[0x17, 7, 0]).is_none());
        // Without parameters the payload goes as it is.
        let mut none = stmt(0);
        let p = execute(&[]);
        assert_eq!(&execute_body(&mut none, &p).expect("no params")[..], &p[..]);
    }
}
