//! Prepared statements on sharded listeners. The proxy keeps the statement itself: PREPARE answers
//! with the parameter count and no result metadata (the shards only see bound SQL, and the result
//! columns depend on the plan); EXECUTE binds the parameters as literals, plans, and runs the plan
//! through the same dispatch as a text query (`ShardSession::run_streaming_or_buffered`): outside
//! transactions a single-unit read, a plain scatter read, a sorted read and a grouped read stream,
//! every text row from the shards re-encoded as a binary row as it passes; the rest is buffered and
//! merged. Either way the rows are encoded in the binary protocol with the same column definitions
//! (which clients read from the execute response), so the two paths look alike to a client.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use codec::mysql::command::ParamType;
use codec::mysql::consts::{charset, column_type, com};
use codec::mysql::{ColumnDefinition, Command, StmtPrepareOk};
use router::sql::lexer::{Token, tokenize};
use router::sql::plan::PlanContext;
use router::sql::shard::ShardingRules;

use super::{Ctx, RulesFor, ShardSession, encode, run::shard_error_packet};
use crate::error::errs;

/// A statement prepared by a client of a sharded listener.
pub struct ShardStmt {
    /// The SQL with `?` placeholders.
    pub sql: Rc<str>,
    /// Number of placeholders.
    pub params: u16,
    /// Parameter types from the last execution that sent them.
    pub types: Option<Vec<ParamType>>,
}

/// Most statements one session may hold.
const MAX_STMTS: usize = 4096;

/// Prepared statements of one session.
#[derive(Default)]
pub struct Stmts {
    map: HashMap<u32, ShardStmt>,
    next: u32,
}

fn placeholders(sql: &str) -> usize {
    let mut hints = Vec::new();
    let mut tokens = Vec::new();
    tokenize(sql, &mut hints, &mut tokens);
    tokens
        .iter()
        .filter(|t| matches!(t, Token::Placeholder))
        .count()
}

fn stmt_id(payload: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes([
        *payload.get(1)?,
        *payload.get(2)?,
        *payload.get(3)?,
        *payload.get(4)?,
    ]))
}

impl ShardSession {
    /// Handles a prepared-statement command (`COM_STMT_*`) on a sharded listener.
    pub async fn stmt_command(&mut self, mut cx: Ctx<'_>, rules: &RulesFor, payload: Bytes) {
        let code = payload.first().copied().unwrap_or(0);
        match code {
            com::STMT_PREPARE => {
                let sql = String::from_utf8_lossy(&payload[1..]).into_owned();
                self.prepare(cx, &sql);
            }
            com::STMT_EXECUTE => {
                let rules = match rules {
                    Ok(r) => r.clone(),
                    Err(p) => return encode::err(cx.client, p),
                };
                // The ops features apply to the statement's text, as for COM_STMT_EXECUTE on a
                // read/write-split listener.
                let sql = stmt_id(&payload)
                    .and_then(|id| self.stmts.map.get(&id))
                    .map(|s| s.sql.clone());
                let gate = match &sql {
                    Some(sql) => match super::ops_check(&mut cx, sql) {
                        Ok(g) => Some(g),
                        Err(()) => return,
                    },
                    None => None,
                };
                if let Some(wait) = gate.as_ref().map(super::OpsGate::wait)
                    && !wait.is_zero()
                {
                    tokio::time::sleep(wait).await;
                }
                let mark = cx.client.wbuf.len();
                self.execute(cx.reborrow(), &rules, payload).await;
                if let (Some(sql), Some(gate)) = (sql, gate) {
                    super::ops_done(&cx, &sql, gate, None, mark, None, &mut self.trace_units);
                }
            }
            com::STMT_CLOSE => {
                if let Some(id) = stmt_id(&payload) {
                    self.stmts.map.remove(&id);
                }
            }
            com::STMT_RESET => match stmt_id(&payload) {
                Some(id) if self.stmts.map.contains_key(&id) => {
                    let st = self.status();
                    cx.client.queue_ok(1, 0, 0, st);
                }
                Some(id) => encode::err(cx.client, &errs::unknown_stmt(id, "mysqld_stmt_reset")),
                None => encode::err(cx.client, &errs::malformed("")),
            },
            com::STMT_SEND_LONG_DATA => {
                // No reply is sent for long data; the next EXECUTE of this statement fails.
                if let Some(id) = stmt_id(&payload)
                    && let Some(s) = self.stmts.map.get_mut(&id)
                {
                    s.params = u16::MAX;
                }
            }
            _ => encode::err(
                cx.client,
                &super::unsupported("cursors (COM_STMT_FETCH) on sharded tables"),
            ),
        }
    }

    fn prepare(&mut self, cx: Ctx<'_>, sql: &str) {
        use router::sql::StmtKind;
        let kind = router::sql::classify(sql).kind;
        if !matches!(
            kind,
            StmtKind::Select | StmtKind::Insert | StmtKind::Update | StmtKind::Delete
        ) {
            return encode::err(
                cx.client,
                &super::unsupported(&format!("prepared {kind:?} statements (send it as text)")),
            );
        }
        let n = placeholders(sql);
        let Ok(params) = u16::try_from(n) else {
            return encode::err(cx.client, &errs::too_many_placeholders());
        };
        if self.stmts.map.len() >= MAX_STMTS {
            return encode::err(cx.client, &errs::too_many_statements());
        }
        self.stmts.next = self.stmts.next.wrapping_add(1).max(1);
        let id = self.stmts.next;
        self.stmts.map.insert(
            id,
            ShardStmt {
                sql: Rc::from(sql),
                params,
                types: None,
            },
        );
        let mut p = BytesMut::with_capacity(64);
        StmtPrepareOk {
            statement_id: id,
            num_columns: 0,
            num_params: params,
            warnings: 0,
        }
        .encode(&mut p);
        let mut seq = cx.client.queue(1, &p);
        if params > 0 {
            let def = ColumnDefinition::new("?", column_type::VAR_STRING, charset::BINARY, 0, 0, 0);
            for _ in 0..params {
                p.clear();
                def.encode(&mut p);
                seq = cx.client.queue(seq, &p);
            }
            cx.client.queue_eof(seq, self.status());
        }
    }

    async fn execute(&mut self, cx: Ctx<'_>, rules: &Rc<ShardingRules>, payload: Bytes) {
        let exec = match Command::decode(payload) {
            Ok(Command::StmtExecute(e)) => e,
            _ => {
                return encode::err(cx.client, &errs::malformed(""));
            }
        };
        let id = exec.statement_id;
        let Some(st) = self.stmts.map.get_mut(&id) else {
            return encode::err(cx.client, &errs::unknown_stmt(id, "mysqld_stmt_execute"));
        };
        if st.params == u16::MAX {
            return encode::err(
                cx.client,
                &super::unsupported("COM_STMT_SEND_LONG_DATA (send the value inline)"),
            );
        }
        if exec.flags != 0 {
            return encode::err(cx.client, &super::unsupported("cursors"));
        }
        let params = match exec.params(usize::from(st.params), st.types.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                return encode::err(cx.client, &errs::bad_execute_arguments(&e));
            }
        };
        if params.new_params_bound {
            st.types = Some(params.types.clone());
        }
        let sql = st.sql.clone();
        // With autocommit = 0 every statement runs in a transaction.
        self.implicit_begin();
        if let Some(rs) = rules.resharding.as_deref() {
            let kind = router::sql::classify(&sql).kind;
            let mut cx = cx;
            if super::dual::concerns(kind)
                && self
                    .dual_write(&mut cx, rules, rs, &sql, kind, &params.values)
                    .await
            {
                return;
            }
            return self.execute_planned(cx, rules, &sql, &params.values).await;
        }
        self.execute_planned(cx, rules, &sql, &params.values).await;
    }

    async fn execute_planned(
        &mut self,
        cx: Ctx<'_>,
        rules: &Rc<ShardingRules>,
        sql: &str,
        params: &[codec::mysql::Value],
    ) {
        let worker = rules.worker_id;
        let ids = &cx.core.shared.ids;
        let mut first_id = None;
        let mut next_id = || {
            let id = ids.next(worker);
            first_id.get_or_insert(id);
            id
        };
        let planned = super::plan_here(
            cx.core,
            rules,
            sql,
            &mut PlanContext {
                rules,
                params,
                next_id: &mut next_id,
            },
        );
        self.generated = first_id;
        match planned {
            Ok(p) => self.run_streaming_or_buffered(cx, rules, &p, true).await,
            Err(e) => encode::err(cx.client, &shard_error_packet(&e)),
        }
    }
}
