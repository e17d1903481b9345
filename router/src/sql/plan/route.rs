//! `Route`: one unit on one shard, its result passed through. Also the routing analysis shared by
//! every statement (which tables a statement names, which partitions its WHERE allows, renaming
//! logical tables to physical ones) and the UPDATE/DELETE planners.

use std::collections::BTreeSet;
use std::ops::Bound;

use sqlparser::ast::{
    BinaryOperator, Delete, Expr, FromTable, InTarget, ObjectName, ObjectNamePart, TableFactor,
    Update,
};

use super::scatter::{Scatter, WriteMerge};
use super::splice::{Edits, Source, quote_ident};
use super::sqltext::key_of_literal;
use super::{Plan, PlanContext, ShardError, Unit};
use crate::sql::shard::{KeyValue, ShardingRules, TableKind, TableRule};

/// Send one statement to one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The unit.
    pub unit: Unit,
}

/// A table named by a statement.
#[derive(Debug, Clone)]
pub(crate) struct TableRef<'r> {
    /// Logical name, lower case.
    pub name: String,
    /// Alias, lower case.
    pub alias: Option<String>,
    /// What it is.
    pub kind: TableKind<'r>,
}

impl TableRef<'_> {
    fn answers_to(&self, q: &str) -> bool {
        match &self.alias {
            Some(a) => a == q,
            None => self.name == q,
        }
    }
}

/// The last part of a (possibly schema-qualified) name.
pub(crate) fn base_name(n: &ObjectName) -> String {
    match n.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Describes a table factor (errors for what sharding cannot plan).
pub(crate) fn table_ref<'r>(
    f: &TableFactor,
    rules: &'r ShardingRules,
) -> Result<TableRef<'r>, ShardError> {
    match f {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => {
            let n = base_name(name);
            Ok(TableRef {
                kind: rules.table(&n),
                name: n.to_ascii_lowercase(),
                alias: alias.as_ref().map(|a| a.name.value.to_ascii_lowercase()),
            })
        }
        TableFactor::Derived { .. } => Err(ShardError::Unsupported(
            "subqueries in FROM (derived tables)".into(),
        )),
        other => Err(ShardError::Unsupported(format!(
            "table expression `{other}`"
        ))),
    }
}

/// Renames a factor for partition `p` by an edit of the text: a sharded table becomes its physical
/// table (keeping the logical name, as written, as alias so qualified columns still resolve);
/// schema qualifiers are dropped (each unit runs in its shard's schema).
pub(crate) fn rename(
    f: &TableFactor,
    p: usize,
    rules: &ShardingRules,
    keep_alias: bool,
    src: &Source<'_>,
    edits: &mut Edits,
) -> Result<(), ShardError> {
    let TableFactor::Table { name, alias, .. } = f else {
        return Ok(());
    };
    let Some(ObjectNamePart::Identifier(written)) = name.0.last() else {
        return Ok(());
    };
    let physical = match rules.table(&written.value) {
        TableKind::Sharded(r) => r.physical.get(p),
        _ => None,
    };
    let range = src.name_range(name)?;
    let last = src.ident_tok(written)?;
    match physical {
        Some(ph) => {
            let mut text = quote_ident(ph);
            if keep_alias && alias.is_none() {
                text.push_str(" AS ");
                text.push_str(src.tok_text(last, last)?);
            }
            edits.replace(range, text);
        }
        None if name.0.len() > 1 => edits.replace(range, src.tok_text(last, last)?),
        None => {}
    }
    Ok(())
}

/// The constraint of a join the planners understand (inner, outer, cross and STRAIGHT_JOIN).
pub(crate) fn join_constraint(
    op: &sqlparser::ast::JoinOperator,
) -> Result<&sqlparser::ast::JoinConstraint, ShardError> {
    use sqlparser::ast::JoinOperator::*;
    match op {
        Join(c) | Inner(c) | Left(c) | LeftOuter(c) | Right(c) | RightOuter(c) | CrossJoin(c)
        | StraightJoin(c) => Ok(c),
        other => Err(ShardError::Unsupported(format!("join kind `{other:?}`"))),
    }
}

/// The conjuncts of an AND chain (through parentheses), appended to `out`.
pub(crate) fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(x) => conjuncts(x, out),
        other => out.push(other),
    }
}

/// The index among `tables` of the sharded table whose key column `e` names, qualified
/// (`alias.key`).
pub(crate) fn qualified_key<'t, 'r: 't>(
    e: &Expr,
    tables: impl IntoIterator<Item = &'t TableRef<'r>>,
) -> Option<usize> {
    let Expr::CompoundIdentifier(parts) = e else {
        return None;
    };
    let [.., q, c] = parts.as_slice() else {
        return None;
    };
    let (q, c) = (q.value.to_ascii_lowercase(), c.value.to_ascii_lowercase());
    tables.into_iter().position(|t| {
        t.alias.as_deref().unwrap_or(&t.name) == q
            && matches!(t.kind, TableKind::Sharded(r) if r.is_key(&c))
    })
}

/// Partitions of `rule` allowed by `expr` (None: all). Conditions on the key of any co-located
/// sharded table of the statement count (they share the partitioning).
pub(crate) fn partitions_of(
    expr: Option<&Expr>,
    tables: &[TableRef<'_>],
    rule: &TableRule,
) -> Result<Option<BTreeSet<usize>>, ShardError> {
    let Some(e) = expr else { return Ok(None) };
    analyze(e, tables, rule)
}

fn key_column(e: &Expr, tables: &[TableRef<'_>]) -> bool {
    let sharded =
        |t: &TableRef<'_>, c: &str| matches!(t.kind, TableKind::Sharded(r) if r.is_key(c));
    match e {
        Expr::Identifier(i) => {
            let c = i.value.to_ascii_lowercase();
            tables.iter().any(|t| sharded(t, &c))
        }
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            let c = parts[parts.len() - 1].value.to_ascii_lowercase();
            let q = parts[parts.len() - 2].value.to_ascii_lowercase();
            tables.iter().any(|t| t.answers_to(&q) && sharded(t, &c))
        }
        Expr::Nested(e) => key_column(e, tables),
        _ => false,
    }
}

/// The partition of `rule` holding key `v` (as a one-element set).
pub(crate) fn one(rule: &TableRule, v: &KeyValue) -> Result<BTreeSet<usize>, ShardError> {
    Ok(BTreeSet::from([partition_of(rule, v)?]))
}

/// The partition of `rule` that `key = v` reads (no allocation: the plan cache's point path).
pub(crate) fn partition_of(rule: &TableRule, v: &KeyValue) -> Result<usize, ShardError> {
    if *v == KeyValue::Null {
        // `key = NULL` matches nothing: any single partition answers correctly (empty).
        return Ok(0);
    }
    Ok(rule.algorithm.partition(v, rule.partitions())?)
}

fn span(rule: &TableRule, lo: Bound<&KeyValue>, hi: Bound<&KeyValue>) -> Option<BTreeSet<usize>> {
    rule.algorithm
        .partitions_in(lo, hi, rule.partitions())
        .map(|v| v.into_iter().collect())
}

fn analyze(
    e: &Expr,
    tables: &[TableRef<'_>],
    rule: &TableRule,
) -> Result<Option<BTreeSet<usize>>, ShardError> {
    Ok(match e {
        Expr::Nested(inner) => analyze(inner, tables, rule)?,
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            match (analyze(left, tables, rule)?, analyze(right, tables, rule)?) {
                (Some(a), Some(b)) => {
                    let i: BTreeSet<usize> = a.intersection(&b).copied().collect();
                    // Contradictory keys: nothing matches; one partition answers (empty) correctly.
                    Some(if i.is_empty() {
                        a.into_iter().take(1).collect()
                    } else {
                        i
                    })
                }
                (a, None) => a,
                (None, b) => b,
            }
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => match (analyze(left, tables, rule)?, analyze(right, tables, rule)?) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        },
        Expr::BinaryOp { left, op, right } => {
            let (col_left, lit) = if key_column(left, tables) {
                (true, key_of_literal(right))
            } else if key_column(right, tables) {
                (false, key_of_literal(left))
            } else {
                return Ok(None);
            };
            let Some(v) = lit else { return Ok(None) };
            use BinaryOperator::*;
            // Normalise to `key OP literal`.
            let op = match (op, col_left) {
                (Lt, false) => Gt,
                (LtEq, false) => GtEq,
                (Gt, false) => Lt,
                (GtEq, false) => LtEq,
                (o, _) => o.clone(),
            };
            match op {
                Eq | Spaceship => Some(one(rule, &v)?),
                Gt => span(rule, Bound::Excluded(&v), Bound::Unbounded),
                GtEq => span(rule, Bound::Included(&v), Bound::Unbounded),
                Lt => span(rule, Bound::Unbounded, Bound::Excluded(&v)),
                LtEq => span(rule, Bound::Unbounded, Bound::Included(&v)),
                _ => None,
            }
        }
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated: false,
            ..
        } if key_column(expr, tables) => {
            let mut out = BTreeSet::new();
            for item in list {
                let Some(v) = key_of_literal(item) else {
                    return Ok(None);
                };
                if v != KeyValue::Null {
                    out.extend(one(rule, &v)?);
                }
            }
            if out.is_empty() {
                out.insert(0);
            }
            Some(out)
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } if key_column(expr, tables) => match (key_of_literal(low), key_of_literal(high)) {
            (Some(a), Some(b)) => span(rule, Bound::Included(&a), Bound::Included(&b)),
            _ => None,
        },
        _ => None,
    })
}

/// Whether an expression contains a subquery (not supported on sharded tables).
pub(crate) fn has_subquery(e: &Expr) -> bool {
    let text = e.to_string().to_ascii_uppercase();
    text.contains("(SELECT ") || text.contains("EXISTS (")
}

/// One unit per partition (in partition order).
pub(crate) fn units(
    parts: &BTreeSet<usize>,
    rule: &TableRule,
    mut sql_for: impl FnMut(usize) -> Result<String, ShardError>,
) -> Result<Vec<Unit>, ShardError> {
    parts
        .iter()
        .map(|&p| {
            Ok(Unit {
                shard: rule.shard_of(p),
                sql: sql_for(p)?,
            })
        })
        .collect()
}

/// All partitions of `rule`.
pub(crate) fn all(rule: &TableRule) -> BTreeSet<usize> {
    (0..rule.partitions()).collect()
}

/// Wraps units: one is a Route, more a Scatter.
pub(crate) fn leaf(mut units: Vec<Unit>, write: Option<WriteMerge>) -> Plan {
    if units.len() == 1
        && let Some(unit) = units.pop()
    {
        return Plan::Route(Route { unit });
    }
    Plan::Scatter(Scatter {
        units,
        write,
        collations: Vec::new(),
    })
}

/// The same statement on every shard (broadcast writes, DDL on unsharded copies).
pub(crate) fn everywhere(rules: &ShardingRules, sql: &str) -> Plan {
    leaf(
        (0..rules.shards.len())
            .map(|shard| Unit {
                shard,
                sql: sql.to_string(),
            })
            .collect(),
        Some(WriteMerge::First),
    )
}

/// The statement unchanged on the default shard.
pub(crate) fn default_route(rules: &ShardingRules, sql: String) -> Plan {
    Plan::Route(Route {
        unit: Unit {
            shard: rules.default_shard,
            sql,
        },
    })
}

fn check_key_not_assigned(u: &Update, rule: &TableRule) -> Result<(), ShardError> {
    for a in &u.assignments {
        let target = a.target.to_string().to_ascii_lowercase();
        let col = target.rsplit('.').next().unwrap_or("").trim_matches('`');
        if rule.is_key(col) {
            return Err(ShardError::Unsupported(format!(
                "changing the shard key `{col}` of `{}` in UPDATE (delete and re-insert the row)",
                rule.name
            )));
        }
    }
    Ok(())
}

/// Plans UPDATE: routed by the key in WHERE, else on every partition.
pub(crate) fn plan_update(
    u: Update,
    src: &Source<'_>,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, ShardError> {
    let rules = cx.rules;
    if !u.table.joins.is_empty() || u.from.is_some() {
        return Err(ShardError::Unsupported("multi-table UPDATE".into()));
    }
    if u.selection.as_ref().is_some_and(has_subquery) {
        return Err(ShardError::Unsupported("subqueries in UPDATE".into()));
    }
    let t = table_ref(&u.table.relation, rules)?;
    match t.kind {
        TableKind::Unsharded => Ok(default_route(rules, src.sql().to_string())),
        TableKind::Broadcast => Ok(everywhere(rules, src.sql())),
        TableKind::Sharded(rule) => {
            check_key_not_assigned(&u, rule)?;
            let tables = [t.clone()];
            let parts =
                partitions_of(u.selection.as_ref(), &tables, rule)?.unwrap_or_else(|| all(rule));
            if parts.len() > 1 && u.limit.is_some() {
                return Err(ShardError::Unsupported(
                    "UPDATE ... LIMIT over several shards".into(),
                ));
            }
            let us = units(&parts, rule, |p| {
                let mut e = Edits::default();
                rename(&u.table.relation, p, rules, true, src, &mut e)?;
                e.apply(src)
            })?;
            Ok(leaf(us, Some(WriteMerge::Sum)))
        }
    }
}

/// Plans DELETE: routed by the key in WHERE, else on every partition.
pub(crate) fn plan_delete(
    d: Delete,
    src: &Source<'_>,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, ShardError> {
    let rules = cx.rules;
    let from = match &d.from {
        FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
    };
    if from.len() != 1
        || !d.tables.is_empty()
        || d.using.is_some()
        || from.iter().any(|t| !t.joins.is_empty())
    {
        return Err(ShardError::Unsupported("multi-table DELETE".into()));
    }
    if d.selection.as_ref().is_some_and(has_subquery) {
        return Err(ShardError::Unsupported("subqueries in DELETE".into()));
    }
    let t = table_ref(&from[0].relation, rules)?;
    match t.kind {
        TableKind::Unsharded => Ok(default_route(rules, src.sql().to_string())),
        TableKind::Broadcast => Ok(everywhere(rules, src.sql())),
        TableKind::Sharded(rule) => {
            let tables = [t.clone()];
            let parts =
                partitions_of(d.selection.as_ref(), &tables, rule)?.unwrap_or_else(|| all(rule));
            if parts.len() > 1 && d.limit.is_some() {
                return Err(ShardError::Unsupported(
                    "DELETE ... LIMIT over several shards".into(),
                ));
            }
            let us = units(&parts, rule, |p| {
                let mut e = Edits::default();
                rename(&from[0].relation, p, rules, false, src, &mut e)?;
                e.apply(src)
            })?;
            Ok(leaf(us, Some(WriteMerge::Sum)))
        }
    }
}
