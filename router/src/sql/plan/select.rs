//! SELECT planning: route when the WHERE pins one partition, otherwise scatter and build the merge
//! (k-way merge for ORDER BY, LIMIT pushed down as offset+count, aggregates split into partials and
//! merged, GROUP BY/HAVING/DISTINCT evaluated by the proxy).

use std::collections::BTreeSet;

use sqlparser::ast::{
    BinaryOperator, Distinct as SqlDistinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, Ident, JoinConstraint, JoinOperator, LimitClause, OrderBy, OrderByExpr,
    OrderByKind, OrderByOptions, OrderBySort, Query, Select, SelectItem, SetExpr, UnaryOperator,
};

use super::aggregate::{AggKind, AggSpec, Aggregate};
use super::distinct::Distinct;
use super::eval::{Op, OutExpr};
use super::limit::Limit;
use super::merge_sort::{MergeSort, SortKey};
use super::project::{Filter, Project, Sort, Trim};
use super::route::{
    TableRef, all, default_route, has_subquery, leaf, partitions_of, rename, table_ref, units,
};
use super::scatter::Scatter;
use super::sqltext::value_of_literal;
use super::{Plan, PlanContext, ShardError, Unit};
use crate::sql::shard::{ShardingRules, TableKind, TableRule};

/// Whether `text` names a sharded or broadcast table as a word.
fn mentions_special(text: &str, rules: &ShardingRules) -> bool {
    let lower = text.to_ascii_lowercase();
    let words: BTreeSet<&str> = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .collect();
    rules.tables.iter().any(|t| words.contains(t.name.as_str()))
        || rules.broadcast.iter().any(|b| words.contains(b.as_str()))
}

fn literal_u64(e: &Expr) -> Result<u64, ShardError> {
    match value_of_literal(e) {
        Some(codec::mysql::Value::Int(i)) if i >= 0 => Ok(i as u64),
        _ => Err(ShardError::Unsupported(format!(
            "LIMIT/OFFSET `{e}` that is not a number"
        ))),
    }
}

fn limit_of(q: &Query) -> Result<Option<(u64, u64)>, ShardError> {
    Ok(match &q.limit_clause {
        None => None,
        Some(LimitClause::LimitOffset { limit, offset, .. }) => {
            let off = offset
                .as_ref()
                .map(|o| literal_u64(&o.value))
                .transpose()?
                .unwrap_or(0);
            match limit {
                Some(l) => Some((off, literal_u64(l)?)),
                None if off > 0 => Some((off, u64::MAX)),
                None => None,
            }
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
            Some((literal_u64(offset)?, literal_u64(limit)?))
        }
    })
}

fn is_agg_name(n: &str) -> bool {
    matches!(
        n,
        "count"
            | "sum"
            | "min"
            | "max"
            | "avg"
            | "group_concat"
            | "std"
            | "stddev"
            | "variance"
            | "bit_and"
            | "bit_or"
            | "bit_xor"
            | "json_arrayagg"
            | "json_objectagg"
    )
}

/// Whether an expression calls an aggregate function anywhere (by its text).
fn has_agg(e: &Expr) -> bool {
    let t = e.to_string().to_ascii_lowercase();
    [
        "count(",
        "sum(",
        "min(",
        "max(",
        "avg(",
        "group_concat(",
        "std(",
        "stddev(",
        "variance(",
        "bit_and(",
        "bit_or(",
        "bit_xor(",
    ]
    .iter()
    .any(|f| t.contains(f))
}

/// Whether `e` names one of the select-list aliases (HAVING/ORDER BY may use them).
fn mentions_alias(e: &Expr, aliases: &[(String, OutExpr)]) -> bool {
    let t = e.to_string().to_ascii_lowercase();
    let words: BTreeSet<&str> = t
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    aliases
        .iter()
        .any(|(a, _)| words.contains(a.to_ascii_lowercase().as_str()))
}

fn item_expr(i: &SelectItem) -> Option<(&Expr, Option<&Ident>)> {
    match i {
        SelectItem::UnnamedExpr(e) => Some((e, None)),
        SelectItem::ExprWithAlias { expr, alias } => Some((expr, Some(alias))),
        _ => None,
    }
}

/// Plans a query.
pub(crate) fn plan_query(q: Query, cx: &mut PlanContext<'_>) -> Result<Plan, ShardError> {
    let rules = cx.rules;
    let special = mentions_special(&q.to_string(), rules);
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return if special {
            Err(ShardError::Unsupported(
                "UNION and other set operations over sharded tables".into(),
            ))
        } else {
            Ok(default_route(rules, q.to_string()))
        };
    };
    if sel.from.is_empty() {
        if let [SelectItem::UnnamedExpr(Expr::Function(f))] = sel.projection.as_slice()
            && f.name.to_string().eq_ignore_ascii_case("furrow_next_id")
        {
            return Ok(Plan::NextId);
        }
        return Ok(default_route(rules, q.to_string()));
    }
    if q.with.is_some() {
        return if special {
            Err(ShardError::Unsupported(
                "WITH (common table expressions) over sharded tables".into(),
            ))
        } else {
            Ok(default_route(rules, q.to_string()))
        };
    }
    let mut refs: Vec<TableRef<'_>> = Vec::new();
    let mut on: Vec<&Expr> = Vec::new();
    for twj in &sel.from {
        refs.push(table_ref(&twj.relation, rules)?);
        for j in &twj.joins {
            refs.push(table_ref(&j.relation, rules)?);
            match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::CrossJoin(c) => {
                    if let JoinConstraint::On(e) = c {
                        on.push(e);
                    }
                }
                other => return Err(ShardError::Unsupported(format!("join kind `{other:?}`"))),
            }
        }
    }
    let sharded: Vec<(usize, &TableRule)> = refs
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match t.kind {
            TableKind::Sharded(r) => Some((i, r)),
            _ => None,
        })
        .collect();
    let Some(&(_, rule)) = sharded.first() else {
        // Only unsharded and broadcast tables: the default shard has them all.
        if special
            && !refs
                .iter()
                .all(|t| matches!(t.kind, TableKind::Broadcast | TableKind::Unsharded))
        {
            return Err(ShardError::Unsupported("this query shape".into()));
        }
        if special && has_nested_select(sel) {
            return Err(ShardError::Unsupported(
                "subqueries mixing sharded tables".into(),
            ));
        }
        return Ok(default_route(rules, q.to_string()));
    };
    if let Some(t) = refs.iter().find(|t| matches!(t.kind, TableKind::Unsharded)) {
        return Err(ShardError::Unsupported(format!(
            "join between sharded `{}` and unsharded `{}` (make `{}` a broadcast table)",
            rule.name, t.name, t.name
        )));
    }
    for &(i, other) in sharded.iter().skip(1) {
        if !other.colocated_with(rule) {
            return Err(ShardError::Unsupported(format!(
                "cross-shard join between `{}` and `{}` (their sharding rules differ)",
                rule.name, other.name
            )));
        }
        if !joined_on_keys(&refs, i, &on, sel.selection.as_ref()) {
            return Err(ShardError::Unsupported(format!(
                "cross-shard join: `{}` is not joined to `{}` on their shard keys",
                other.name, rule.name
            )));
        }
    }
    if has_nested_select(sel) {
        return Err(ShardError::Unsupported(
            "subqueries on sharded tables".into(),
        ));
    }
    let parts = partitions_of(sel.selection.as_ref(), &refs, rule)?.unwrap_or_else(|| all(rule));
    let shard_sql = |s: &Select, qq: &Query, p: usize| -> String {
        let mut s = s.clone();
        for twj in s.from.iter_mut() {
            rename(&mut twj.relation, p, rules, true);
            for j in twj.joins.iter_mut() {
                rename(&mut j.relation, p, rules, true);
            }
        }
        let mut out = qq.clone();
        *out.body = SetExpr::Select(Box::new(s));
        out.to_string()
    };
    if parts.len() == 1 {
        return Ok(leaf(units(&parts, rule, |p| shard_sql(sel, &q, p)), None));
    }
    let limit = limit_of(&q)?;
    let order: Vec<(Expr, bool)> = match &q.order_by {
        None => Vec::new(),
        Some(ob) => match &ob.kind {
            OrderByKind::Expressions(v) => v
                .iter()
                .map(|o| {
                    (
                        o.expr.clone(),
                        matches!(o.options.sort, Some(OrderBySort::Desc)),
                    )
                })
                .collect(),
            OrderByKind::All(_) => return Err(ShardError::Unsupported("ORDER BY ALL".into())),
        },
    };
    let group: Vec<Expr> = match &sel.group_by {
        GroupByExpr::Expressions(v, m) if m.is_empty() => v.clone(),
        GroupByExpr::Expressions(..) => {
            return Err(ShardError::Unsupported("GROUP BY ... WITH ROLLUP".into()));
        }
        GroupByExpr::All(_) => return Err(ShardError::Unsupported("GROUP BY ALL".into())),
    };
    let distinct = match &sel.distinct {
        None | Some(SqlDistinct::All) => false,
        Some(SqlDistinct::Distinct) => true,
        Some(other) => return Err(ShardError::Unsupported(format!("{other}"))),
    };
    let aggregated = !group.is_empty()
        || sel.having.is_some()
        || sel
            .projection
            .iter()
            .any(|i| item_expr(i).is_some_and(|(e, _)| has_agg(e)));
    let mk_units =
        |s: &Select, qq: &Query| -> Vec<Unit> { units(&parts, rule, |p| shard_sql(s, qq, p)) };
    if !aggregated && !distinct {
        return plan_stream(sel, &q, order, limit, rules, mk_units);
    }
    plan_aggregate(
        sel,
        &q,
        order,
        limit,
        group,
        distinct,
        aggregated,
        rules.max_limit_rows,
        mk_units,
    )
}

fn has_nested_select(sel: &Select) -> bool {
    sel.selection.as_ref().is_some_and(has_subquery)
        || sel.having.as_ref().is_some_and(has_subquery)
        || sel
            .projection
            .iter()
            .any(|i| item_expr(i).is_some_and(|(e, _)| has_subquery(e)))
}

/// Whether table `i` is equated on its key with another sharded table's key (ON or WHERE).
fn joined_on_keys(refs: &[TableRef<'_>], i: usize, on: &[&Expr], wher: Option<&Expr>) -> bool {
    let key_of = |e: &Expr| -> Option<usize> {
        let Expr::CompoundIdentifier(parts) = e else {
            return None;
        };
        let [.., q, c] = parts.as_slice() else {
            return None;
        };
        let (q, c) = (q.value.to_ascii_lowercase(), c.value.to_ascii_lowercase());
        refs.iter().position(|t| {
            t.alias.as_deref().unwrap_or(&t.name) == q
                && matches!(t.kind, TableKind::Sharded(r) if r.is_key(&c))
        })
    };
    fn conj<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                conj(left, out);
                conj(right, out);
            }
            Expr::Nested(x) => conj(x, out),
            other => out.push(other),
        }
    }
    let mut eqs = Vec::new();
    for e in on.iter().copied().chain(wher) {
        conj(e, &mut eqs);
    }
    eqs.iter().any(|e| match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => match (key_of(left), key_of(right)) {
            (Some(a), Some(b)) => a != b && (a == i || b == i),
            _ => false,
        },
        _ => false,
    })
}

/// Index of an ORDER BY/GROUP BY item among the projection, if it names one (alias, ordinal, or
/// the same expression), and no `*` comes before it.
fn find_item(e: &Expr, proj: &[SelectItem]) -> Option<usize> {
    if let Some(codec::mysql::Value::Int(n)) = value_of_literal(e) {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        return proj
            .get(..=i)?
            .iter()
            .all(|x| item_expr(x).is_some())
            .then_some(i);
    }
    let text = e.to_string();
    for (i, item) in proj.iter().enumerate() {
        let (ie, alias) = item_expr(item)?;
        if let (Expr::Identifier(id), Some(a)) = (e, alias)
            && id.value.eq_ignore_ascii_case(&a.value)
        {
            return Some(i);
        }
        if ie.to_string() == text {
            return Some(i);
        }
    }
    None
}

fn plan_stream(
    sel: &Select,
    q: &Query,
    order: Vec<(Expr, bool)>,
    limit: Option<(u64, u64)>,
    rules: &ShardingRules,
    mk_units: impl Fn(&Select, &Query) -> Vec<Unit>,
) -> Result<Plan, ShardError> {
    let mut s = sel.clone();
    let wildcard = s.projection.iter().any(|i| item_expr(i).is_none());
    let mut hidden = 0usize;
    let mut keys = Vec::new();
    let mut hidden_keys = Vec::new();
    for (e, desc) in &order {
        match find_item(e, &sel.projection) {
            Some(i) => keys.push(SortKey::new(i, *desc)),
            None => {
                s.projection.push(SelectItem::UnnamedExpr(e.clone()));
                hidden_keys.push((hidden, *desc));
                keys.push(SortKey::new(usize::MAX, *desc));
                hidden += 1;
            }
        }
    }
    // Hidden columns sit at the end; with `*` their absolute position is unknown at plan time.
    let mut hk = hidden_keys.into_iter();
    for k in keys.iter_mut().filter(|k| k.col == usize::MAX) {
        let Some((h, _)) = hk.next() else { break };
        if wildcard {
            *k = SortKey {
                col: hidden - 1 - h,
                desc: k.desc,
                from_end: true,
            };
        } else {
            k.col = sel.projection.len() + h;
        }
    }
    let mut qq = q.clone();
    if let Some((off, count)) = limit {
        let need = off.saturating_add(count);
        if need > rules.max_limit_rows && count != u64::MAX {
            return Err(ShardError::LimitCap {
                offset: off,
                count,
                need,
                cap: rules.max_limit_rows,
            });
        }
        if count == u64::MAX {
            qq.limit_clause = None;
        } else {
            qq.limit_clause = Some(LimitClause::LimitOffset {
                limit: Some(Expr::value(sqlparser::ast::Value::Number(
                    need.to_string(),
                    false,
                ))),
                offset: None,
                limit_by: Vec::new(),
            });
        }
    }
    let units = mk_units(&s, &qq);
    let mut plan = if keys.is_empty() {
        Plan::Scatter(Scatter { units, write: None })
    } else {
        Plan::MergeSort(MergeSort {
            input: Scatter { units, write: None },
            keys,
        })
    };
    if let Some((offset, count)) = limit {
        plan = Plan::Limit(Limit {
            offset,
            count,
            input: Box::new(plan),
        });
    }
    if hidden > 0 {
        plan = Plan::Trim(Trim {
            drop: hidden,
            input: Box::new(plan),
        });
    }
    Ok(plan)
}

/// Partial columns pushed to the shards for an aggregate query.
struct Pushed {
    items: Vec<(String, Expr)>,
    group: Vec<usize>,
    aggs: Vec<AggSpec>,
    distinct_args: Vec<Expr>,
}

impl Pushed {
    fn push(&mut self, key: String, e: Expr) -> usize {
        if let Some(i) = self.items.iter().position(|(k, _)| *k == key) {
            return i;
        }
        self.items.push((key, e));
        self.items.len() - 1
    }

    fn agg(&mut self, kind: AggKind, e: Expr) -> usize {
        let key = format!("{kind:?}:{e}");
        let fresh = !self.items.iter().any(|(k, _)| *k == key);
        let i = self.push(key, e.clone());
        if fresh {
            self.aggs.push(AggSpec { kind, col: i });
            if matches!(kind, AggKind::CountDistinct | AggKind::SumDistinct) {
                self.distinct_args.push(e);
            }
        }
        i
    }

    /// Converts an output expression into proxy-side evaluation over pushed partials.
    fn convert(&mut self, e: &Expr, aliases: &[(String, OutExpr)]) -> Result<OutExpr, ShardError> {
        let text = e.to_string();
        if let Some(g) = self.group.iter().find(|&&g| {
            self.items
                .get(g)
                .is_some_and(|(k, _)| k == &format!("K:{text}"))
        }) {
            return Ok(OutExpr::Col(*g));
        }
        if let Expr::Identifier(id) = e
            && let Some((_, x)) = aliases
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(&id.value))
        {
            return Ok(x.clone());
        }
        if let Some(v) = value_of_literal(e) {
            return Ok(OutExpr::Lit(v));
        }
        Ok(match e {
            Expr::Nested(x) => self.convert(x, aliases)?,
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => OutExpr::Not(Box::new(self.convert(expr, aliases)?)),
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => OutExpr::Bin(
                Op::Sub,
                Box::new(OutExpr::Lit(codec::mysql::Value::Int(0))),
                Box::new(self.convert(expr, aliases)?),
            ),
            Expr::IsNull(x) => OutExpr::IsNull(Box::new(self.convert(x, aliases)?), true),
            Expr::IsNotNull(x) => OutExpr::IsNull(Box::new(self.convert(x, aliases)?), false),
            Expr::BinaryOp { left, op, right } if has_agg(e) || mentions_alias(e, aliases) => {
                let op = match op {
                    BinaryOperator::Plus => Op::Add,
                    BinaryOperator::Minus => Op::Sub,
                    BinaryOperator::Multiply => Op::Mul,
                    BinaryOperator::Divide => Op::Div,
                    BinaryOperator::Eq => Op::Eq,
                    BinaryOperator::NotEq => Op::Ne,
                    BinaryOperator::Lt => Op::Lt,
                    BinaryOperator::LtEq => Op::Le,
                    BinaryOperator::Gt => Op::Gt,
                    BinaryOperator::GtEq => Op::Ge,
                    BinaryOperator::And => Op::And,
                    BinaryOperator::Or => Op::Or,
                    other => {
                        return Err(ShardError::Unsupported(format!(
                            "operator `{other}` over aggregates"
                        )));
                    }
                };
                OutExpr::Bin(
                    op,
                    Box::new(self.convert(left, aliases)?),
                    Box::new(self.convert(right, aliases)?),
                )
            }
            Expr::Function(f) if is_agg_name(&f.name.to_string().to_ascii_lowercase()) => {
                let name = f.name.to_string().to_ascii_lowercase();
                let FunctionArguments::List(list) = &f.args else {
                    return Err(ShardError::Unsupported(format!("`{e}`")));
                };
                let distinct = matches!(
                    list.duplicate_treatment,
                    Some(sqlparser::ast::DuplicateTreatment::Distinct)
                );
                let arg = match list.args.as_slice() {
                    [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))] => Some(a.clone()),
                    [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => None,
                    _ => {
                        return Err(ShardError::Unsupported(format!(
                            "aggregate `{e}` with several arguments"
                        )));
                    }
                };
                if arg.as_ref().is_some_and(has_agg) {
                    return Err(ShardError::Unsupported(format!("nested aggregate `{e}`")));
                }
                let call = |n: &str| -> Expr {
                    let a = arg.as_ref().map_or("*".to_string(), |a| a.to_string());
                    sqlparser::parser::Parser::new(&sqlparser::dialect::MySqlDialect {})
                        .try_with_sql(&format!("{n}({a})"))
                        .and_then(|mut p| p.parse_expr())
                        .unwrap_or_else(|_| e.clone())
                };
                match (name.as_str(), distinct, &arg) {
                    ("count", false, _) => OutExpr::Col(self.agg(AggKind::Count, e.clone())),
                    ("sum", false, _) => OutExpr::Col(self.agg(AggKind::Sum, e.clone())),
                    ("min", _, _) => OutExpr::Col(self.agg(AggKind::Min, call("MIN"))),
                    ("max", _, _) => OutExpr::Col(self.agg(AggKind::Max, call("MAX"))),
                    ("avg", false, Some(_)) => {
                        let s = self.agg(AggKind::Sum, call("SUM"));
                        let c = self.agg(AggKind::Count, call("COUNT"));
                        OutExpr::Bin(
                            Op::Div,
                            Box::new(OutExpr::Col(s)),
                            Box::new(OutExpr::Col(c)),
                        )
                    }
                    ("count", true, Some(a)) => {
                        OutExpr::Col(self.agg(AggKind::CountDistinct, a.clone()))
                    }
                    ("sum", true, Some(a)) => {
                        OutExpr::Col(self.agg(AggKind::SumDistinct, a.clone()))
                    }
                    _ => {
                        return Err(ShardError::Unsupported(format!(
                            "aggregate `{e}` across shards"
                        )));
                    }
                }
            }
            other if has_agg(other) => {
                return Err(ShardError::Unsupported(format!(
                    "expression `{other}` over aggregates"
                )));
            }
            other => OutExpr::Col(self.push(format!("K:{other}"), other.clone())),
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_aggregate(
    sel: &Select,
    q: &Query,
    order: Vec<(Expr, bool)>,
    limit: Option<(u64, u64)>,
    group: Vec<Expr>,
    distinct: bool,
    aggregated: bool,
    max_limit_rows: u64,
    mk_units: impl Fn(&Select, &Query) -> Vec<Unit>,
) -> Result<Plan, ShardError> {
    if sel.projection.iter().any(|i| item_expr(i).is_none()) {
        return Err(ShardError::Unsupported(
            "`*` with GROUP BY, DISTINCT or aggregates across shards".into(),
        ));
    }
    let mut p = Pushed {
        items: Vec::new(),
        group: Vec::new(),
        aggs: Vec::new(),
        distinct_args: Vec::new(),
    };
    // SELECT DISTINCT without aggregates is a GROUP BY over every selected expression.
    let group: Vec<Expr> = if distinct && !aggregated {
        sel.projection
            .iter()
            .filter_map(|i| item_expr(i).map(|(e, _)| e.clone()))
            .collect()
    } else {
        group
    };
    for g in &group {
        let g = match find_item(g, &sel.projection)
            .and_then(|i| sel.projection.get(i))
            .and_then(item_expr)
        {
            Some((e, _)) => e.clone(),
            _ => g.clone(),
        };
        if has_agg(&g) {
            return Err(ShardError::Unsupported(format!(
                "GROUP BY an aggregate `{g}`"
            )));
        }
        let i = p.push(format!("K:{g}"), g);
        p.group.push(i);
    }
    let mut outputs = Vec::new();
    let mut names = Vec::new();
    let mut aliases: Vec<(String, OutExpr)> = Vec::new();
    for item in &sel.projection {
        let Some((e, alias)) = item_expr(item) else {
            continue;
        };
        let x = p.convert(e, &[])?;
        let name = alias.map_or_else(|| e.to_string(), |a| a.value.clone());
        if let Some(a) = alias {
            aliases.push((a.value.clone(), x.clone()));
        }
        outputs.push(x);
        names.push(name);
    }
    let visible = outputs.len();
    let having = sel
        .having
        .as_ref()
        .map(|h| p.convert(h, &aliases))
        .transpose()?;
    let mut keys = Vec::new();
    for (e, desc) in &order {
        let i = match find_item(e, &sel.projection) {
            Some(i) => i,
            None => {
                let x = p.convert(e, &aliases)?;
                outputs.push(x);
                names.push(format!("__furrow_sort{}", outputs.len()));
                outputs.len() - 1
            }
        };
        keys.push(SortKey::new(i, *desc));
    }
    if distinct && aggregated && outputs.len() > visible {
        return Err(ShardError::Unsupported(
            "DISTINCT with aggregates ordered by an unselected expression".into(),
        ));
    }
    let mut s = sel.clone();
    s.projection = p
        .items
        .iter()
        .map(|(_, e)| SelectItem::UnnamedExpr(e.clone()))
        .collect();
    s.having = None;
    s.distinct = None;
    let mut shard_group: Vec<Expr> = p
        .group
        .iter()
        .filter_map(|&g| p.items.get(g).map(|(_, e)| e.clone()))
        .collect();
    shard_group.extend(p.distinct_args.iter().cloned());
    s.group_by = GroupByExpr::Expressions(shard_group, Vec::new());
    let mut qq = q.clone();
    qq.order_by = None;
    qq.limit_clause = None;
    // Streaming GROUP BY: when the ORDER BY only names group columns (or is absent), every shard
    // sorts its groups that way, the proxy merges the sorted streams and aggregates group by group.
    let sorted = stream_order(&keys, &outputs, &p.group);
    if !sorted.is_empty() {
        qq.order_by = Some(OrderBy {
            kind: OrderByKind::Expressions(
                sorted
                    .iter()
                    .map(|k| OrderByExpr {
                        expr: Expr::value(sqlparser::ast::Value::Number(
                            (k.col + 1).to_string(),
                            false,
                        )),
                        options: OrderByOptions {
                            sort: k.desc.then_some(OrderBySort::Desc),
                            nulls_first: None,
                        },
                        with_fill: None,
                    })
                    .collect(),
            ),
            interpolate: None,
        });
    }
    if let Some(need) = group_limit(limit, &sorted, having.is_some(), &p, distinct && aggregated)
        && need <= max_limit_rows
    {
        qq.limit_clause = Some(LimitClause::LimitOffset {
            limit: Some(Expr::value(sqlparser::ast::Value::Number(
                need.to_string(),
                false,
            ))),
            offset: None,
            limit_by: Vec::new(),
        });
    }
    let units = mk_units(&s, &qq);
    let scatter = Scatter { units, write: None };
    let input = if sorted.is_empty() {
        Plan::Scatter(scatter)
    } else {
        Plan::MergeSort(MergeSort {
            input: scatter,
            keys: sorted.clone(),
        })
    };
    let streaming = !sorted.is_empty();
    let mut plan = Plan::Aggregate(Aggregate {
        group: p.group.clone(),
        aggs: p.aggs.clone(),
        sorted,
        input: Box::new(input),
    });
    if let Some(h) = having {
        plan = Plan::Filter(Filter {
            predicate: h,
            input: Box::new(plan),
        });
    }
    let hidden = outputs.len() - visible;
    plan = Plan::Project(Project {
        exprs: outputs,
        names,
        input: Box::new(plan),
    });
    if distinct && aggregated {
        plan = Plan::Distinct(Distinct {
            input: Box::new(plan),
        });
    }
    // A sorted aggregate already yields the ORDER BY (a prefix of its input order); Filter,
    // Project and Distinct keep row order.
    if !keys.is_empty() && !streaming {
        plan = Plan::Sort(Sort {
            keys,
            input: Box::new(plan),
        });
    }
    if let Some((offset, count)) = limit {
        plan = Plan::Limit(Limit {
            offset,
            count,
            input: Box::new(plan),
        });
    }
    if hidden > 0 {
        plan = Plan::Trim(Trim {
            drop: hidden,
            input: Box::new(plan),
        });
    }
    Ok(plan)
}

/// The LIMIT (`offset + count`) each shard may apply to its sorted groups, if any. Correct when
/// every shard row is one whole group's partial (no COUNT/SUM(DISTINCT): those group the shards by
/// the distinct argument too) and every merged group counts toward the LIMIT (no HAVING, no
/// DISTINCT over the output rows): a merged group among the first N of the merged order is
/// preceded on each shard only by groups that also precede it in the merged order (the shards sort
/// by the same keys), so it is among that shard's first N groups; each shard's first N groups thus
/// hold every partial of the first N merged groups. Groups past N may come incomplete, but the
/// LIMIT stops before them.
fn group_limit(
    limit: Option<(u64, u64)>,
    sorted: &[SortKey],
    having: bool,
    p: &Pushed,
    distinct_output: bool,
) -> Option<u64> {
    let (offset, count) = limit?;
    if sorted.is_empty() || having || distinct_output || !p.distinct_args.is_empty() {
        return None;
    }
    if count == u64::MAX {
        return None;
    }
    Some(offset.saturating_add(count))
}

/// The order (over the partial rows) in which shards should return their groups so the proxy can
/// aggregate as rows arrive: the ORDER BY keys when each names a group column, then the other
/// group columns ascending (MariaDB's GROUP BY order). Empty when there is no group key or the
/// ORDER BY names anything else (an aggregate, an expression): the groups are hashed then.
fn stream_order(keys: &[SortKey], outputs: &[OutExpr], group: &[usize]) -> Vec<SortKey> {
    if group.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<SortKey> = Vec::new();
    for k in keys {
        match outputs.get(k.col) {
            // A repeated key orders nothing more.
            Some(OutExpr::Col(g)) if out.iter().any(|o| o.col == *g) => {}
            Some(OutExpr::Col(g)) if group.contains(g) => out.push(SortKey::new(*g, k.desc)),
            _ => return Vec::new(),
        }
    }
    for &g in group {
        if !out.iter().any(|o| o.col == g) {
            out.push(SortKey::new(g, false));
        }
    }
    out
}
