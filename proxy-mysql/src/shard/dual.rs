//! Dual writes while a table reshards (docs/sharding.md, "Resharding"): a write to the table is
//! applied to the serving layout inside a transaction, to the other layout (planned with its
//! rule) by itself, and committed on the serving layout only when both succeeded, so no
//! acknowledged write exists in one layout only. Reads are not touched: they plan against the
//! serving layout as always.
//!
//! The session's statement path reaches this module only when the config generation's rules name
//! a table being resharded ([`ShardingRules::resharding`]); without one it costs one `Option`
//! check per statement that is not a fast-path point select.
//!
//! The cut-over pauses a table's writes with its [`Gate`] (`super::gate`): each dual write holds
//! the gate shared while it runs, the reshard job takes it exclusively (new writes wait, writes in
//! flight finish first), verifies, switches the rule and lets go; a proxy that is a peer of a job
//! on another proxy is fenced through the same gate.

use std::collections::BTreeMap;
use std::rc::Rc;

use codec::mysql::Value;
use router::sql::StmtKind;
use router::sql::plan::{self, Output, PlanContext, Unit};
use router::sql::shard::reshard::{nondeterministic, writes_only};
use router::sql::shard::{Resharding, ShardingRules};

use super::gate::Gate;
use super::run::units_of;
use super::{Ctx, ShardSession, encode};
use crate::error::errs;

/// Marks a dual write's keys when dropped: after the write committed, failed or was rolled back,
/// and before the gate's shared hold ends (declared after it, so dropped first).
struct MarkOnDrop<'a> {
    gate: &'a Gate,
    sql: &'a str,
    params: &'a [Value],
    generated: &'a [u64],
}

impl Drop for MarkOnDrop<'_> {
    fn drop(&mut self) {
        self.gate.mark(self.sql, self.params, self.generated);
    }
}

/// The test-only failpoint `reshard-skip-other` (`FURROW_TEST_FAILPOINT`): the first INSERT
/// dual-written while keys are tracked is not written to the other layout, as if a dual write
/// were lost; the cut-over's verify must find its range.
fn skip_other_once(gate: &Gate) -> bool {
    gate.tracking() && super::xa::failpoint_once("reshard-skip-other")
}

/// Whether statements of `kind` are dual-written (or, for DDL, refused) when they touch the
/// table being resharded.
pub fn concerns(kind: StmtKind) -> bool {
    matches!(
        kind,
        StmtKind::Insert | StmtKind::Replace | StmtKind::Update | StmtKind::Delete | StmtKind::Ddl
    )
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    !n.is_empty() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

fn same_units(a: &plan::Plan, b: &plan::Plan) -> bool {
    let (a, b): (Vec<Unit>, Vec<Unit>) = (units_of(a), units_of(b));
    a == b
}

impl ShardSession {
    /// Runs `sql` (a statement of a kind [`concerns`] accepts) as a dual write when it touches
    /// the table `rs` reshards, and queues its reply; `false` when it does not touch it (the
    /// caller runs it as usual, nothing was sent). `params`: a prepared statement's values.
    pub(crate) async fn dual_write(
        &mut self,
        cx: &mut Ctx<'_>,
        rules: &Rc<ShardingRules>,
        rs: &Resharding,
        sql: &str,
        kind: StmtKind,
        params: &[Value],
    ) -> bool {
        if !contains_ci(sql, &rs.table) {
            return false;
        }
        if kind != StmtKind::Ddl && writes_only(sql, &rs.target).is_ok() {
            let why = format!(
                "its new layout `{}` is written by the reshard only (dual writes); write `{}`",
                rs.target, rs.table
            );
            encode::err(cx.client, &errs::resharding(&rs.table, &why));
            return true;
        }
        // Both layouts planned with the same global ids (an INSERT that omits the rule's
        // `auto_id` column gets one id per row, the same on both).
        let mirror_rules = Rc::new(rules.with_rule(&rs.mirror));
        let worker = rules.worker_id;
        let source = &cx.core.shared.ids;
        let mut ids: Vec<u64> = Vec::new();
        let serving = {
            let mut next = || {
                let id = source.next(worker);
                ids.push(id);
                id
            };
            plan::plan(
                sql,
                &mut PlanContext {
                    rules,
                    params,
                    next_id: &mut next,
                },
            )
        };
        let Ok(serving) = serving else {
            // The usual path plans it again and reports the error.
            return false;
        };
        let mirror = {
            let mut replay = ids.iter().copied();
            let mut next = || replay.next().unwrap_or_else(|| source.next(worker));
            plan::plan(
                sql,
                &mut PlanContext {
                    rules: &mirror_rules,
                    params,
                    next_id: &mut next,
                },
            )
        };
        let table = rs.table.as_str();
        let mirror = match mirror {
            Ok(m) if same_units(&serving, &m) => return false,
            Ok(m) => m,
            Err(e) => {
                let why = format!("the other layout cannot take this statement ({e})");
                encode::err(cx.client, &errs::resharding(table, &why));
                return true;
            }
        };
        let refuse = |why: &str| errs::resharding(table, why);
        if kind == StmtKind::Ddl {
            encode::err(
                cx.client,
                &refuse(
                    "DDL on it would change one layout only; run it after RESHARD CONFIRM or ABORT",
                ),
            );
            return true;
        }
        if let Err(why) = writes_only(sql, table) {
            encode::err(cx.client, &refuse(&why));
            return true;
        }
        if self.txn.is_some() {
            encode::err(
                cx.client,
                &refuse(
                    "writes to it run in autocommit mode until the reshard ends (each is \
                     committed on both layouts by itself), not inside a transaction",
                ),
            );
            return true;
        }
        if let Some(f) = nondeterministic(sql) {
            encode::err(
                cx.client,
                &refuse(&format!(
                    "{f} gives each layout its own value; compute the value in the client"
                )),
            );
            return true;
        }
        let gate = cx.core.shared.reshard_gate(&rules.name, table);
        let _writing = gate.enter().await;
        let _mark = MarkOnDrop {
            gate: &gate,
            sql,
            params,
            generated: &ids,
        };
        // A write that waited for the cut-over's pause may carry the rules of the generation
        // before it: the gate says which layout commits first now.
        let swap = gate.new_serves() != rs.new_serves;
        let (first, first_rules, second, second_rules) = if swap {
            (&mirror, &mirror_rules, &serving, rules)
        } else {
            (&serving, rules, &mirror, &mirror_rules)
        };
        self.txn = Some(BTreeMap::new());
        self.txn_explicit = false;
        self.txn_touched = false;
        let names = super::run::names(rules);
        let rows = match self.run_plan_inner(cx, first_rules, first).await {
            Ok(Output::Affected {
                rows,
                last_insert_id,
            }) if last_insert_id == 0 || !ids.is_empty() => rows,
            Ok(Output::Affected { .. }) => {
                let _ = self.finish(false, &names).await;
                encode::err(
                    cx.client,
                    &refuse(
                        "the server generated an AUTO_INCREMENT value, which the other layout \
                         would not share; give the key (or set the rule's auto_id)",
                    ),
                );
                return true;
            }
            Ok(Output::Rows(_)) => {
                let _ = self.finish(false, &names).await;
                encode::err(
                    cx.client,
                    &refuse("a write that returns rows (RETURNING) is not dual-written"),
                );
                return true;
            }
            Err(e) => {
                let _ = self.finish(false, &names).await;
                encode::err(cx.client, &e);
                return true;
            }
        };
        // The other layout's write runs by itself (autocommit) while the first layout's row
        // locks are held; it fails the whole write when it fails.
        let held = self.txn.take();
        let other = if kind == StmtKind::Insert && skip_other_once(&gate) {
            // Test-only failpoint: the other layout's write is lost.
            Ok(Output::Affected {
                rows,
                last_insert_id: 0,
            })
        } else {
            self.run_plan_inner(cx, second_rules, second).await
        };
        self.txn = held;
        if let Err(e) = other {
            let _ = self.finish(false, &names).await;
            let why = format!(
                "the other layout refused the write, which was rolled back: {}",
                String::from_utf8_lossy(&e.message)
            );
            encode::err(cx.client, &errs::resharding_with(table, e.code, &why));
            return true;
        }
        if let Err(e) = self.finish(true, &names).await {
            encode::err(cx.client, &e);
            return true;
        }
        let last_insert_id = ids.first().copied().unwrap_or(0);
        if last_insert_id != 0 {
            self.last_insert_id = last_insert_id;
        }
        let st = self.status();
        cx.client.queue_ok(1, rows, last_insert_id, st);
        true
    }
}
