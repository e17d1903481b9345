//! The command loop's dispatch on the first byte of a packet, the commands answered without a
//! statement (COM_PING, COM_INIT_DB, COM_RESET_CONNECTION, ...) and the checks before a COM_QUERY runs.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use codec::mysql::ErrPacket;
use codec::mysql::consts::com;
use router::sql::classify_with_digest;

use crate::access::{outside_schemas, schema_allowed};
use crate::backend::RespKind;
use crate::error::errs;
use crate::pool;
use crate::vars::VarState;

use super::{Flow, Session};

impl Session {
    pub(super) async fn dispatch(&mut self, payload: Bytes) -> Flow {
        let code = payload.first().copied().unwrap_or(0);
        // Sharded listeners: queries and prepared statements go to the sharding executor.
        if crate::shard::handles(code) {
            let snap = self.snap.get().clone();
            if let Some(rules) = self.shard_rules(&snap) {
                if self.client.cache_meta {
                    // Offered only by listeners that were not sharded at login.
                    self.refuse(1, &errs::cached_metadata_on_sharded());
                    return Flow::Continue;
                }
                // `furrow_lock` / `furrow_unlock`: the same locks as on read/write-split
                // listeners, held on the primary of the sharding's first shard.
                if code == com::QUERY
                    && crate::lock::looks_like_call(&payload[1..])
                    && let Some(call) = crate::lock::parse(&crate::sql_text(&payload[1..]))
                {
                    let group = crate::lock::sharded_lock_group(
                        &snap.config,
                        &self.info.name,
                        &self.info.group,
                    );
                    let st = self.shard.status();
                    let sql = crate::sql_text(&payload[1..]).into_owned();
                    self.lock_call(call, &sql, &snap, &group, st).await;
                    return Flow::Continue;
                }
                let cx = crate::shard::Ctx {
                    client: &mut self.client,
                    snap: &snap,
                    shared: &self.shared,
                    core: &self.info.core,
                    vars: &mut self.vars,
                    allow_hints: self.allow_hints,
                    group: &self.info.group,
                    user: &self.user,
                    peer: self.peer.ip(),
                    schema: self.schema.as_deref(),
                    multi_statements: self.multi_statements,
                    stats: &self.stats,
                };
                self.shard.command(cx, &rules, payload).await;
                return Flow::Continue;
            }
        }
        // The one clock read at a command's start (see `Session::now`).
        self.now = Instant::now();
        match code {
            com::QUERY => {
                let sql_bytes = payload.slice(1..);
                let sql = crate::sql_text(&sql_bytes);
                self.query(payload, &sql).await
            }
            com::QUIT => Flow::Close,
            com::PING => {
                self.client.queue_ok(1, 0, 0, self.status_flags());
                Flow::Continue
            }
            com::INIT_DB => {
                let db = String::from_utf8_lossy(&payload[1..]).into_owned();
                self.init_db(&db).await
            }
            com::FIELD_LIST => {
                let snap = self.snap.get().clone();
                let (c, d) = classify_with_digest("SHOW COLUMNS");
                self.execute_plain(payload, &c, &d, RespKind::FieldList, &snap, "FIELD_LIST")
                    .await
            }
            com::STATISTICS => {
                let msg = format!(
                    "Uptime: 1  Threads: 1  Questions: {}  Slow queries: 0  Opens: 0  Open tables: 0  \
                     Queries per second avg: 0.000",
                    self.stats
                        .requests
                        .load(std::sync::atomic::Ordering::Relaxed)
                );
                self.client.queue(1, msg.as_bytes());
                Flow::Continue
            }
            com::RESET_CONNECTION => {
                self.reset_session(None).await;
                self.client.queue_ok(1, 0, 0, self.status_flags());
                Flow::Continue
            }
            com::CHANGE_USER => self.change_user(payload).await,
            com::SET_OPTION => self.set_option(&payload),
            com::STMT_PREPARE => {
                let sql = String::from_utf8_lossy(&payload[1..]).into_owned();
                self.prepare(&sql).await
            }
            com::STMT_EXECUTE => self.stmt_execute(payload).await,
            com::STMT_SEND_LONG_DATA => self.stmt_long_data(payload),
            com::STMT_CLOSE => self.stmt_close(&payload),
            com::STMT_RESET => self.stmt_reset(&payload),
            com::STMT_FETCH => self.stmt_fetch(payload).await,
            _ => {
                self.refuse(1, &errs::unknown_command(code));
                Flow::Continue
            }
        }
    }

    /// COM_SET_OPTION: multi-statements on or off, answered with an EOF packet as MySQL does.
    fn set_option(&mut self, payload: &[u8]) -> Flow {
        let opt = u16::from_le_bytes([
            payload.get(1).copied().unwrap_or(0),
            payload.get(2).copied().unwrap_or(0),
        ]);
        match opt {
            0 => self.multi_statements = true,
            1 => self.multi_statements = false,
            _ => {
                self.refuse(1, &errs::unknown_option());
                return Flow::Continue;
            }
        }
        // MySQL answers COM_SET_OPTION with an EOF packet.
        self.client.queue_eof(1, self.status_flags());
        Flow::Continue
    }

    pub(super) fn malformed(&mut self) -> Flow {
        self.refuse(1, &errs::malformed(""));
        Flow::Close
    }

    pub(super) async fn init_db(&mut self, db: &str) -> Flow {
        let snap = self.snap.get().clone();
        let Some(user) = snap.config.users.iter().find(|u| u.name == self.user) else {
            self.refuse(
                1,
                &errs::access_denied(&self.user, &self.peer.ip().to_string(), true),
            );
            return Flow::Close;
        };
        if !schema_allowed(user, db) {
            let e = errs::db_access_denied(&self.user, &self.peer.ip().to_string(), db);
            self.refuse(1, &e);
            return Flow::Continue;
        }
        let old = self.schema.replace(Rc::from(db));
        match self.check_schema().await {
            Ok(()) => {
                self.client.queue_ok(1, 0, 0, self.status_flags());
            }
            Err(e) => {
                self.schema = old;
                self.refuse(1, &e.to_err_packet());
            }
        }
        Flow::Continue
    }

    /// Back to a fresh session (COM_RESET_CONNECTION, COM_CHANGE_USER). Read-your-writes state
    /// (`last_write`, `last_gtid`) is kept on purpose: application pools reset a connection between
    /// borrowings by the same application, which may read in the next borrowing what it wrote in
    /// the last one; keeping reads on the primary for the window costs only replica offload.
    pub(super) async fn reset_session(&mut self, charset: Option<u8>) {
        // The sharded state too (one reset for both kinds of listener).
        let snap = self.snap.get().clone();
        let rules = crate::shard::rules_for(&self.info.core, &snap, &self.info.name);
        self.shard.reset(rules.as_ref()).await;
        if let Some(mut c) = self.pinned.take() {
            match c.command(&[com::RESET_CONNECTION], RespKind::Single).await {
                Ok(o) if o.err.is_none() => {
                    c.vars = None;
                    c.schema = None;
                    c.schema_unknown = true;
                    c.stmts.clear();
                    pool::checkin(c);
                }
                _ => pool::discard(c),
            }
        }
        self.sticky = false;
        self.in_txn = false;
        self.autocommit = true;
        self.last_insert_id = 0;
        // As the server's reset releases its named locks.
        self.locks = Default::default();
        self.stmts.clear();
        if let Some(cs) = charset {
            self.vars = VarState::for_collation(cs);
        } else {
            // Keep only the charset part of the state.
            self.vars = VarState::charset_only(self.vars.as_ref());
        }
    }

    pub(super) async fn query(&mut self, payload: Bytes, sql: &str) -> Flow {
        // The routing class and the digest (rules, stats, audit): from this core's cache of
        // statement shapes, else from one lexer pass.
        let analysed = self.info.core.stmts.borrow_mut().analyse(sql);
        let (c, d) = (&analysed.class, &analysed.digest);
        if c.flags & router::sql::classify::flags::LOCAL_INFILE != 0 {
            self.refuse(1, &errs::local_infile());
            return Flow::Continue;
        }
        if c.flags & router::sql::classify::flags::MULTI != 0 && !self.multi_statements {
            self.refuse(1, &errs::multi_statements_off());
            return Flow::Continue;
        }
        if self.pinned.is_none() && crate::local::is_last_insert_id_query(c, &d.text) {
            let st = self.status_flags();
            crate::local::queue_last_insert_id(&mut self.client, sql, self.last_insert_id, st);
            return Flow::Continue;
        }
        if d.text.starts_with("SELECT FURROW_")
            && let Some(call) = crate::lock::parse(sql)
        {
            let snap = self.snap.get().clone();
            let group = self.info.group.clone();
            let st = self.status_flags();
            self.lock_call(call, sql, &snap, &group, st).await;
            return Flow::Continue;
        }
        let snap = self.snap.get().clone();
        if let Some(e) = self.outside_schemas(&snap, sql) {
            self.refuse(1, &e);
            return Flow::Continue;
        }
        self.execute_plain(payload, c, d, RespKind::ResultSet, &snap, sql)
            .await
    }

    /// Runs a `furrow_lock` / `furrow_unlock` call (see [`crate::lock`]) with its locks on
    /// `group`'s primary and queues its one-value result (status flags `st`) or its error.
    async fn lock_call(
        &mut self,
        call: Result<crate::lock::LockCall, ErrPacket>,
        sql: &str,
        snap: &Arc<runtime::Snapshot>,
        group: &str,
        st: u16,
    ) {
        let r = match call {
            Ok(call) => {
                self.locks
                    .run(&self.info.core.lock_idle, call, &snap.config, group)
                    .await
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(v) => crate::local::queue_select_u64(&mut self.client, sql, "furrow_lock", v, st),
            Err(e) => self.refuse(1, &e),
        }
    }

    /// [`outside_schemas`] for this session's user.
    pub(super) fn outside_schemas(
        &self,
        snap: &Arc<runtime::Snapshot>,
        sql: &str,
    ) -> Option<ErrPacket> {
        outside_schemas(snap, &self.user, self.peer.ip(), sql)
    }
}
