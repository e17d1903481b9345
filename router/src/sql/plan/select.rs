//! SELECT planning: route when the WHERE pins one partition, otherwise scatter and build the merge
//! (k-way merge for ORDER BY, LIMIT pushed down as offset+count, aggregates split into partials and
//! merged, GROUP BY/HAVING/DISTINCT evaluated by the proxy).

use std::collections::BTreeSet;

use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Distinct as SqlDistinct, ExactNumberInfo, Expr,
    FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments, GroupByExpr,
    GroupByWithModifier, Ident, JoinConstraint, LimitClause, OrderByKind, OrderBySort, Query,
    Select, SelectItem, SetExpr, UnaryOperator,
};

use super::aggregate::{AggKind, AggSpec, Aggregate, GroupConcat};
use super::collate::CollationOf;
use super::distinct::Distinct;
use super::eval::{Func, Op, OutExpr};
use super::limit::Limit;
use super::merge_sort::{MergeSort, SortKey};
use super::project::{Filter, Project, Sort, Trim};
use super::route::{
    TableRef, all, conjuncts, default_route, has_subquery, join_constraint, leaf, partitions_of,
    qualified_key, rename, table_ref, units,
};
use super::scatter::Scatter;
use super::splice::{Edits, SelectText, Source, limit_clause, parse_expr};
use super::sqltext::value_of_literal;
use super::{Plan, PlanContext, ShardError, Unit};
use crate::sql::shard::{ShardingRules, TableKind, TableRule};

/// Whether `text` names a sharded or broadcast table as a word.
pub(crate) fn mentions_special(text: &str, rules: &ShardingRules) -> bool {
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

pub(super) fn limit_of(q: &Query) -> Result<Option<(u64, u64)>, ShardError> {
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

/// MariaDB's and MySQL's aggregate functions (lower case).
const AGGREGATES: [&str; 22] = [
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "group_concat",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "bit_and",
    "bit_or",
    "bit_xor",
    "json_arrayagg",
    "json_objectagg",
    "any_value",
    "grouping",
    "median",
    "percentile_cont",
];

fn is_agg_name(n: &str) -> bool {
    AGGREGATES.contains(&n)
}

/// The lower-case last part of a function's name.
fn function_name(f: &sqlparser::ast::Function) -> String {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map_or_else(String::new, |i| i.value.to_ascii_lowercase())
}

/// What calls an expression makes: (an aggregate, a window function).
fn calls(e: &Expr) -> (bool, bool) {
    struct Find {
        agg: bool,
        window: bool,
    }
    impl sqlparser::ast::Visitor for Find {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<()> {
            if let Expr::Function(f) = e {
                if f.over.is_some() {
                    self.window = true;
                } else if is_agg_name(&function_name(f)) {
                    self.agg = true;
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut f = Find {
        agg: false,
        window: false,
    };
    let _ = sqlparser::ast::Visit::visit(e, &mut f);
    (f.agg, f.window)
}

/// Whether an expression calls an aggregate function anywhere.
fn has_agg(e: &Expr) -> bool {
    calls(e).0
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
pub(crate) fn plan_query(
    q: Query,
    src: &Source<'_>,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, ShardError> {
    let rules = cx.rules;
    let special = mentions_special(src.sql(), rules);
    if special && needs_whole(&q) {
        // Subqueries, derived tables, UNION, WITH: the whole statement on one shard when every
        // sharded table is pinned to one partition; refused otherwise.
        return match super::pushdown::plan_query(&q, src, rules) {
            Ok(p) => Ok(p),
            // A UNION whose branches run on different shards: each branch planned alone.
            Err(e) => super::union::plan_union(&q, src, cx)?.ok_or(e),
        };
    }
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return Ok(default_route(rules, src.sql().to_string()));
    };
    if sel.from.is_empty() {
        if let [SelectItem::UnnamedExpr(Expr::Function(f))] = sel.projection.as_slice()
            && f.name.to_string().eq_ignore_ascii_case("furrow_next_id")
        {
            return Ok(Plan::NextId);
        }
        return Ok(default_route(rules, src.sql().to_string()));
    }
    if q.with.is_some() {
        return Ok(default_route(rules, src.sql().to_string()));
    }
    let mut refs: Vec<TableRef<'_>> = Vec::new();
    let mut on: Vec<&Expr> = Vec::new();
    let mut using: Vec<usize> = Vec::new();
    for twj in &sel.from {
        refs.push(table_ref(&twj.relation, rules)?);
        for j in &twj.joins {
            refs.push(table_ref(&j.relation, rules)?);
            match join_constraint(&j.join_operator)? {
                JoinConstraint::On(e) => on.push(e),
                JoinConstraint::Using(cols) if using_key(&refs, cols) => using.push(refs.len() - 1),
                _ => {}
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
        return Ok(default_route(rules, src.sql().to_string()));
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
        if !using.contains(&i) && !joined_on_keys(&refs, i, &on, sel.selection.as_ref()) {
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
    if sel.into.is_some() {
        return Err(ShardError::Unsupported(
            "SELECT ... INTO on sharded tables".into(),
        ));
    }
    let parts = partitions_of(sel.selection.as_ref(), &refs, rule)?.unwrap_or_else(|| all(rule));
    // Each unit is the client's text with `base` edits and its partition's table names.
    let mk_units = |base: &Edits| -> Result<Vec<Unit>, ShardError> {
        units(&parts, rule, |p| {
            let mut e = base.clone();
            for twj in &sel.from {
                rename(&twj.relation, p, rules, true, src, &mut e)?;
                for j in &twj.joins {
                    rename(&j.relation, p, rules, true, src, &mut e)?;
                }
            }
            e.apply(src)
        })
    };
    if parts.len() == 1 {
        return Ok(leaf(mk_units(&Edits::default())?, None));
    }
    let st = SelectText::of(src)?;
    check_text(&st, sel, &q)?;
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
    let (group, rollup): (Vec<Expr>, bool) = match &sel.group_by {
        GroupByExpr::Expressions(v, m) if m.is_empty() => (v.clone(), false),
        GroupByExpr::Expressions(v, m)
            if matches!(m.as_slice(), [GroupByWithModifier::Rollup]) && !v.is_empty() =>
        {
            (v.clone(), true)
        }
        GroupByExpr::Expressions(..) => {
            return Err(ShardError::Unsupported(
                "GROUP BY ... WITH CUBE/TOTALS/GROUPING SETS".into(),
            ));
        }
        GroupByExpr::All(_) => return Err(ShardError::Unsupported("GROUP BY ALL".into())),
    };
    let distinct = match &sel.distinct {
        None | Some(SqlDistinct::All) => false,
        Some(SqlDistinct::Distinct) => true,
        Some(other) => return Err(ShardError::Unsupported(format!("{other}"))),
    };
    let windowed = sel
        .projection
        .iter()
        .filter_map(|i| item_expr(i).map(|(e, _)| e))
        .chain(order.iter().map(|(e, _)| e))
        .any(|e| calls(e).1);
    if windowed {
        return Err(ShardError::Unsupported(
            "window functions (OVER) across shards".into(),
        ));
    }
    let aggregated = !group.is_empty()
        || sel.having.is_some()
        || sel
            .projection
            .iter()
            .any(|i| item_expr(i).is_some_and(|(e, _)| has_agg(e)));
    if !aggregated && !distinct {
        return plan_stream(sel, &st, src, order, limit, rules, mk_units);
    }
    plan_aggregate(
        sel,
        &st,
        src,
        order,
        limit,
        (group, rollup),
        distinct,
        aggregated,
        rules.max_limit_rows,
        mk_units,
    )
}

/// Checks that the clauses found in the text are the tree's (else the text holds something the
/// parser did not see, and no edit of it can be trusted).
fn check_text(st: &SelectText, sel: &Select, q: &Query) -> Result<(), ShardError> {
    let disagree = |what: &str| {
        Err(ShardError::Unsupported(format!(
            "{what} (the proxy could not rewrite the statement text safely)"
        )))
    };
    if st.from.is_none() {
        return disagree("a SELECT whose FROM it could not find");
    }
    if st.window.is_some() {
        return Err(ShardError::Unsupported(
            "WINDOW clauses across shards".into(),
        ));
    }
    let order_n = match &q.order_by {
        Some(ob) => match &ob.kind {
            OrderByKind::Expressions(v) => v.len(),
            OrderByKind::All(_) => 1,
        },
        None => 0,
    };
    if st.order.as_ref().map_or(0, |(_, v)| v.len()) != order_n {
        return disagree("ORDER BY");
    }
    let group_n = match &sel.group_by {
        GroupByExpr::Expressions(v, _) => v.len(),
        GroupByExpr::All(_) => 1,
    };
    if st.group.as_ref().map_or(0, |(_, v)| v.len()) != group_n {
        return disagree("GROUP BY");
    }
    if st.having.is_some() != sel.having.is_some() {
        return disagree("HAVING");
    }
    if st.limit.is_some() != q.limit_clause.is_some() {
        return disagree("LIMIT");
    }
    if st.item_ranges.len() != sel.projection.len() {
        return disagree("the select list");
    }
    Ok(())
}

/// Whether a query needs more than the single-SELECT planner: a set operation, WITH, a derived
/// table or nested join, or a subquery.
fn needs_whole(q: &Query) -> bool {
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return true;
    };
    q.with.is_some()
        || sel.from.iter().any(|twj| {
            std::iter::once(&twj.relation)
                .chain(twj.joins.iter().map(|j| &j.relation))
                .any(|f| !matches!(f, sqlparser::ast::TableFactor::Table { .. }))
        })
        || has_nested_select(sel)
}

/// Whether `JOIN t USING (cols)` names the shard key of the joined table (the last of `refs`)
/// and of an earlier sharded table.
pub(super) fn using_key(refs: &[TableRef<'_>], cols: &[sqlparser::ast::ObjectName]) -> bool {
    let names: Vec<String> = cols
        .iter()
        .filter_map(|c| c.0.last().and_then(|p| p.as_ident()))
        .map(|i| i.value.to_ascii_lowercase())
        .collect();
    let key_in = |t: &TableRef<'_>| matches!(t.kind, TableKind::Sharded(r) if names.iter().any(|n| r.is_key(n)));
    match refs.split_last() {
        Some((last, earlier)) => key_in(last) && earlier.iter().any(key_in),
        None => false,
    }
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
pub(super) fn joined_on_keys(
    refs: &[TableRef<'_>],
    i: usize,
    on: &[&Expr],
    wher: Option<&Expr>,
) -> bool {
    let mut eqs = Vec::new();
    for e in on.iter().copied().chain(wher) {
        conjuncts(e, &mut eqs);
    }
    eqs.iter().any(|e| match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => match (qualified_key(left, refs), qualified_key(right, refs)) {
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
    st: &SelectText,
    src: &Source<'_>,
    order: Vec<(Expr, bool)>,
    limit: Option<(u64, u64)>,
    rules: &ShardingRules,
    mk_units: impl Fn(&Edits) -> Result<Vec<Unit>, ShardError>,
) -> Result<Plan, ShardError> {
    let mut edits = Edits::default();
    let wildcard = sel.projection.iter().any(|i| item_expr(i).is_none());
    let mut hidden = 0usize;
    let mut keys = Vec::new();
    let mut hidden_keys = Vec::new();
    // Each key's text as the client wrote it (for its `COLLATION(...)` helper).
    let mut key_texts: Vec<String> = Vec::new();
    let order_texts = st.order.as_ref().map(|(_, v)| v.as_slice()).unwrap_or(&[]);
    for (n, (e, desc)) in order.iter().enumerate() {
        match find_item(e, &sel.projection) {
            Some(i) => {
                let item = sel.projection.get(i).and_then(item_expr);
                let text = match item {
                    Some((x, _)) => src.expr_text(x)?,
                    None => src.expr_text(e)?,
                };
                key_texts.push(text);
                keys.push(SortKey::new(i, *desc));
            }
            None => {
                // The sort expression as the client wrote it, appended to the select list.
                let text = order_texts
                    .get(n)
                    .map(|r| src.text(r.clone()))
                    .transpose()?
                    .filter(|t| parse_expr(t).is_some_and(|x| x == *e))
                    .ok_or_else(|| {
                        ShardError::Unsupported(format!(
                            "ORDER BY `{e}` (the proxy could not rewrite the statement text safely)"
                        ))
                    })?;
                edits.insert(st.items.end, format!(", {text}"));
                key_texts.push(text.to_string());
                hidden_keys.push((hidden, *desc));
                keys.push(SortKey::new(usize::MAX, *desc));
                hidden += 1;
            }
        }
    }
    // One `COLLATION(<key>)` helper per distinct key, after the hidden sort columns.
    // (Hidden keys are distinct columns; keys naming a selected item are probed once.)
    let mut probed: Vec<usize> = Vec::new();
    let mut probes_n = 0usize;
    for (k, text) in keys.iter().zip(&key_texts) {
        if k.col != usize::MAX {
            if probed.contains(&k.col) {
                continue;
            }
            probed.push(k.col);
        }
        edits.insert(st.items.end, format!(", COLLATION({text})"));
        probes_n += 1;
    }
    // Hidden columns sit at the end, before the helpers; with `*` their absolute position is
    // unknown at plan time.
    let mut hk = hidden_keys.into_iter();
    for k in keys.iter_mut().filter(|k| k.col == usize::MAX) {
        let Some((h, _)) = hk.next() else { break };
        if wildcard {
            *k = SortKey {
                col: hidden - 1 - h + probes_n,
                desc: k.desc,
                from_end: true,
            };
        } else {
            k.col = sel.projection.len() + h;
        }
    }
    let mut collations: Vec<CollationOf> = Vec::new();
    for k in &keys {
        let c = CollationOf {
            col: k.col,
            from_end: k.from_end,
        };
        if !collations.contains(&c) {
            collations.push(c);
        }
    }
    if let Some((off, count)) = limit {
        let need = off.saturating_add(count);
        // A deep OFFSET over a sorted merge streams: the shards send their rows in order without
        // a LIMIT and the merge skips `off` of them (one head row per unit in memory; the
        // buffered path, inside a transaction, is still bounded by max_scatter_rows). Unsorted,
        // the shards would each send `off + count` rows to be held: the cap stands.
        let deep = need > rules.max_limit_rows && count != u64::MAX;
        if deep && keys.is_empty() {
            return Err(ShardError::LimitCap {
                offset: off,
                count,
                need,
                cap: rules.max_limit_rows,
            });
        }
        if let Some(r) = &st.limit {
            if count == u64::MAX || deep {
                edits.replace(r.clone(), "");
            } else {
                edits.replace(r.clone(), limit_clause(need));
            }
        }
    }
    let units = mk_units(&edits)?;
    let mut plan = if keys.is_empty() {
        Plan::Scatter(Scatter::read(units))
    } else {
        Plan::MergeSort(MergeSort {
            input: Scatter {
                units,
                write: None,
                collations,
            },
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
    if hidden + probes_n > 0 {
        plan = Plan::Trim(Trim {
            drop: hidden + probes_n,
            input: Box::new(plan),
        });
    }
    Ok(plan)
}

/// Partial columns pushed to the shards for an aggregate query.
/// Partial columns pushed to the shards for an aggregate query: each with its dedup key and its
/// SQL text (the client's text of the expression, or a partial aggregate over it).
struct Pushed<'s, 'a> {
    src: &'s Source<'a>,
    items: Vec<(String, String)>,
    group: Vec<usize>,
    aggs: Vec<AggSpec>,
    /// Texts of COUNT/SUM(DISTINCT) arguments and GROUP_CONCAT values and ORDER BY keys (the
    /// shards group by them too).
    distinct_args: Vec<String>,
    /// GROUP_CONCAT columns.
    concats: Vec<GroupConcat>,
}

impl Pushed<'_, '_> {
    fn push(&mut self, key: String, text: String) -> usize {
        if let Some(i) = self.items.iter().position(|(k, _)| *k == key) {
            return i;
        }
        self.items.push((key, text));
        self.items.len() - 1
    }

    /// Pushes the client's text of `e`.
    fn push_expr(&mut self, key: String, e: &Expr) -> Result<usize, ShardError> {
        if let Some(i) = self.items.iter().position(|(k, _)| *k == key) {
            return Ok(i);
        }
        let text = self.src.expr_text(e)?;
        Ok(self.push(key, text))
    }

    fn agg(&mut self, kind: AggKind, key_expr: &str, text: String) -> usize {
        let key = format!("{kind:?}:{key_expr}");
        let fresh = !self.items.iter().any(|(k, _)| *k == key);
        let i = self.push(key, text.clone());
        if fresh {
            self.aggs.push(AggSpec::new(kind, i));
            if matches!(kind, AggKind::CountDistinct | AggKind::SumDistinct)
                && !self.distinct_args.contains(&text)
            {
                self.distinct_args.push(text);
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
                let (a, b) = (self.convert(left, aliases)?, self.convert(right, aliases)?);
                // A quotient keeps MariaDB's extra digits inside the expression (see `eval`).
                OutExpr::Bin(op, Box::new(a), Box::new(b))
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } if has_agg(e) || mentions_alias(e, aliases) => OutExpr::Call(
                Func::Between(*negated),
                vec![
                    self.convert(expr, aliases)?,
                    self.convert(low, aliases)?,
                    self.convert(high, aliases)?,
                ],
            ),
            Expr::Cast {
                kind: CastKind::Cast,
                expr,
                data_type,
                format: None,
            } if has_agg(e) || mentions_alias(e, aliases) => {
                let func = cast_func(data_type).ok_or_else(|| {
                    ShardError::Unsupported(format!("`{e}` over aggregates across shards"))
                })?;
                OutExpr::Call(func, vec![self.convert(expr, aliases)?])
            }
            Expr::Function(f)
                if !is_agg_name(&function_name(f))
                    && (has_agg(e) || mentions_alias(e, aliases)) =>
            {
                self.scalar_call(e, f, aliases)?
            }
            Expr::Function(f) if is_agg_name(&function_name(f)) => {
                let name = function_name(f);
                let FunctionArguments::List(list) = &f.args else {
                    return Err(ShardError::Unsupported(format!("`{e}`")));
                };
                let distinct = matches!(
                    list.duplicate_treatment,
                    Some(sqlparser::ast::DuplicateTreatment::Distinct)
                );
                if name == "group_concat" || name == "json_arrayagg" || name == "json_objectagg" {
                    return self.group_concat(e, list, distinct, name.as_str());
                }
                // COUNT(DISTINCT a, b, ...): the shards group by every argument; the merge counts
                // distinct tuples without a NULL.
                if name == "count" && distinct && list.args.len() > 1 {
                    let mut texts = Vec::with_capacity(list.args.len());
                    for a in &list.args {
                        let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = a else {
                            return Err(ShardError::Unsupported(format!("`{e}`")));
                        };
                        if has_agg(x) {
                            return Err(ShardError::Unsupported(format!("nested aggregate `{e}`")));
                        }
                        texts.push(self.src.expr_text(x)?);
                    }
                    let key = e.to_string();
                    if let Some(a) = self.aggs.iter().find(|a| {
                        self.items
                            .get(a.col)
                            .is_some_and(|(k, _)| *k == format!("CD0:{key}"))
                    }) {
                        return Ok(OutExpr::Col(a.col));
                    }
                    let first = self.items.len();
                    for (n, t) in texts.iter().enumerate() {
                        // Fresh keys: the arguments must be consecutive columns.
                        self.items.push((format!("CD{n}:{key}"), t.clone()));
                        if !self.distinct_args.contains(t) {
                            self.distinct_args.push(t.clone());
                        }
                    }
                    self.aggs.push(AggSpec {
                        kind: AggKind::CountDistinct,
                        col: first,
                        width: texts.len(),
                    });
                    return Ok(OutExpr::Col(first));
                }
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
                // The argument as the client wrote it; partial calls wrap it (`SUM(<arg>)`).
                let arg_text = match &arg {
                    Some(a) => self.src.expr_text(a)?,
                    None => "*".to_string(),
                };
                let arg_key = arg.as_ref().map_or("*".to_string(), |a| a.to_string());
                let call = |n: &str| -> (String, String) {
                    (format!("{n}({arg_key})"), format!("{n}({arg_text})"))
                };
                let whole = |p: &Self| -> Result<(String, String), ShardError> {
                    Ok((e.to_string(), p.src.expr_text(e)?))
                };
                match (name.as_str(), distinct, &arg) {
                    ("count", false, _) => {
                        let (k, t) = whole(self)?;
                        OutExpr::Col(self.agg(AggKind::Count, &k, t))
                    }
                    ("sum", false, _) => {
                        let (k, t) = whole(self)?;
                        OutExpr::Col(self.agg(AggKind::Sum, &k, t))
                    }
                    ("min", _, _) => {
                        let (k, t) = call("MIN");
                        OutExpr::Col(self.agg(AggKind::Min, &k, t))
                    }
                    ("max", _, _) => {
                        let (k, t) = call("MAX");
                        OutExpr::Col(self.agg(AggKind::Max, &k, t))
                    }
                    ("avg", false, Some(_)) => {
                        let (k, t) = call("SUM");
                        let s = self.agg(AggKind::Sum, &k, t);
                        let (k, t) = call("COUNT");
                        let c = self.agg(AggKind::Count, &k, t);
                        OutExpr::Bin(
                            Op::Div,
                            Box::new(OutExpr::Col(s)),
                            Box::new(OutExpr::Col(c)),
                        )
                    }
                    ("count", true, Some(_)) => {
                        OutExpr::Col(self.agg(AggKind::CountDistinct, &arg_key, arg_text))
                    }
                    ("sum", true, Some(_)) => {
                        OutExpr::Col(self.agg(AggKind::SumDistinct, &arg_key, arg_text))
                    }
                    // AVG(DISTINCT x) = SUM(DISTINCT x) / COUNT(DISTINCT x), both over the same
                    // value set (the shards group by x once).
                    ("avg", true, Some(_)) => {
                        let s = self.agg(AggKind::SumDistinct, &arg_key, arg_text.clone());
                        let c = self.agg(AggKind::CountDistinct, &arg_key, arg_text);
                        OutExpr::Bin(
                            Op::Div,
                            Box::new(OutExpr::Col(s)),
                            Box::new(OutExpr::Col(c)),
                        )
                    }
                    // VARIANCE/STDDEV family: exact per-shard COUNT, SUM and SUM of squares.
                    (
                        kind @ ("std" | "stddev" | "stddev_pop" | "stddev_samp" | "variance"
                        | "var_pop" | "var_samp"),
                        false,
                        Some(_),
                    ) => {
                        let (k, t) = call("COUNT");
                        let c = self.agg(AggKind::Count, &k, t);
                        let (k, t) = call("SUM");
                        let s = self.agg(AggKind::Sum, &k, t);
                        let q = self.agg(
                            AggKind::Sum,
                            &format!("SUMSQ({arg_key})"),
                            format!("SUM(({arg_text}) * ({arg_text}))"),
                        );
                        OutExpr::Call(
                            Func::Variance {
                                samp: kind.ends_with("_samp"),
                                sqrt: kind.starts_with("std"),
                            },
                            vec![OutExpr::Col(c), OutExpr::Col(s), OutExpr::Col(q)],
                        )
                    }
                    (kind @ ("bit_and" | "bit_or" | "bit_xor"), false, Some(_)) => {
                        let (k, t) = whole(self)?;
                        let kind = match kind {
                            "bit_and" => AggKind::BitAnd,
                            "bit_or" => AggKind::BitOr,
                            _ => AggKind::BitXor,
                        };
                        OutExpr::Col(self.agg(kind, &k, t))
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
            other => OutExpr::Col(self.push_expr(format!("K:{other}"), other)?),
        })
    }
}

/// The function a `CAST(... AS type)` over aggregates becomes, if the proxy evaluates it.
fn cast_func(t: &DataType) -> Option<Func> {
    Some(match t {
        DataType::Signed | DataType::SignedInteger => Func::CastSigned,
        DataType::Unsigned | DataType::UnsignedInteger => Func::CastUnsigned,
        DataType::Char(None) => Func::CastChar,
        DataType::Decimal(info) | DataType::Dec(info) | DataType::Numeric(info) => {
            let (m, d) = match info {
                ExactNumberInfo::None => (10, 0),
                ExactNumberInfo::Precision(m) => (*m, 0),
                ExactNumberInfo::PrecisionAndScale(m, d) => (*m, u64::try_from(*d).ok()?),
            };
            // MariaDB's limits: DECIMAL(65, 38) at most, scale within precision; the proxy's
            // exact decimals hold 38 digits.
            if m == 0 || m > 38 || d > m || d > 38 {
                return None;
            }
            Func::CastDecimal(u32::try_from(m).ok()?, u32::try_from(d).ok()?)
        }
        _ => return None,
    })
}

impl Pushed<'_, '_> {
    /// `GROUP_CONCAT([DISTINCT] x [ORDER BY k [ASC|DESC], ...] [SEPARATOR 's'])` and
    /// `JSON_ARRAYAGG([DISTINCT] x [ORDER BY ...])` (`json`): the shards
    /// group by `x` and the keys too and count each tuple; the merge builds the string (see
    /// [`GroupConcat`]). One argument; DISTINCT only ordered by the value itself.
    fn group_concat(
        &mut self,
        e: &Expr,
        list: &sqlparser::ast::FunctionArgumentList,
        distinct: bool,
        name: &str,
    ) -> Result<OutExpr, ShardError> {
        let refuse = || ShardError::Unsupported(format!("aggregate `{e}` across shards"));
        let json = name != "group_concat";
        let object = name == "json_objectagg";
        let mut args = Vec::with_capacity(2);
        for a in &list.args {
            let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = a else {
                return Err(refuse());
            };
            if has_agg(x) {
                return Err(ShardError::Unsupported(format!("nested aggregate `{e}`")));
            }
            args.push(x);
        }
        let (member, x) = match (object, args.as_slice()) {
            (false, [x]) => (None, *x),
            (true, [k, x]) if !distinct => (Some(*k), *x),
            _ => return Err(refuse()),
        };
        let mut order: &[sqlparser::ast::OrderByExpr] = &[];
        let mut separator = if object {
            b", ".to_vec()
        } else {
            b",".to_vec()
        };
        for c in &list.clauses {
            match c {
                FunctionArgumentClause::OrderBy(o) => order = o,
                FunctionArgumentClause::Separator(v) if !json => match &v.value {
                    sqlparser::ast::Value::SingleQuotedString(t) => {
                        separator = t.clone().into_bytes()
                    }
                    _ => return Err(refuse()),
                },
                _ => return Err(refuse()),
            }
        }
        let n = self.concats.len();
        let value_text = self.src.expr_text(x)?;
        // A column of its own (the merged string replaces it), even if the text is selected too.
        let value = self.push(format!("GCV{n}:{x}"), value_text.clone());
        self.distinct_args.push(value_text);
        let mut keys = Vec::with_capacity(order.len());
        for (i, o) in order.iter().enumerate() {
            if o.options.nulls_first.is_some() || o.with_fill.is_some() || has_agg(&o.expr) {
                return Err(refuse());
            }
            if value_of_literal(&o.expr).is_some()
                || (distinct && o.expr.to_string() != x.to_string())
            {
                return Err(refuse());
            }
            let text = self.src.expr_text(&o.expr)?;
            let col = self.push(format!("GCK{n}_{i}:{}", o.expr), text.clone());
            self.distinct_args.push(text);
            keys.push(SortKey::new(
                col,
                matches!(o.options.sort, Some(OrderBySort::Desc)),
            ));
        }
        if object && !order.is_empty() {
            return Err(refuse());
        }
        let member = match member {
            Some(k) => {
                let text = self.src.expr_text(k)?;
                let col = self.push(format!("GCM{n}:{k}"), text.clone());
                self.distinct_args.push(text);
                Some(col)
            }
            None => None,
        };
        let count = self.agg(AggKind::Count, "COUNT(*)", "COUNT(*)".into());
        let max_len = self.push("GCLEN".into(), "@@group_concat_max_len".into());
        self.concats.push(GroupConcat {
            value,
            keys,
            count,
            max_len,
            separator,
            distinct,
            json,
            member,
        });
        Ok(OutExpr::Col(value))
    }

    /// A scalar function over aggregates: ROUND/TRUNCATE with a literal digit count,
    /// GREATEST/LEAST, IFNULL/COALESCE. Anything else is refused, naming the call.
    fn scalar_call(
        &mut self,
        e: &Expr,
        f: &sqlparser::ast::Function,
        aliases: &[(String, OutExpr)],
    ) -> Result<OutExpr, ShardError> {
        let refuse = || ShardError::Unsupported(format!("`{e}` over aggregates across shards"));
        let FunctionArguments::List(list) = &f.args else {
            return Err(refuse());
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() || f.filter.is_some() {
            return Err(refuse());
        }
        let mut args = Vec::with_capacity(list.args.len());
        for a in &list.args {
            let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = a else {
                return Err(refuse());
            };
            args.push(x);
        }
        let name = function_name(f);
        let digits = |x: Option<&&Expr>| -> Result<i32, ShardError> {
            match x {
                None => Ok(0),
                Some(x) => match value_of_literal(x) {
                    Some(codec::mysql::Value::Int(n)) if (-60..=38).contains(&n) => {
                        Ok(i32::try_from(n).unwrap_or(0))
                    }
                    _ => Err(refuse()),
                },
            }
        };
        let func = match (name.as_str(), args.len()) {
            ("round", 1 | 2) => Func::Round(digits(args.get(1))?),
            ("truncate", 2) => Func::Truncate(digits(args.get(1))?),
            ("greatest", n) if n >= 2 => Func::Greatest,
            ("least", n) if n >= 2 => Func::Least,
            ("ifnull", 2) => Func::Coalesce,
            ("coalesce", n) if n >= 1 => Func::Coalesce,
            _ => return Err(refuse()),
        };
        let take = match func {
            Func::Round(_) | Func::Truncate(_) => 1,
            _ => args.len(),
        };
        let mut out = Vec::with_capacity(take);
        for x in args.iter().take(take) {
            out.push(self.convert(x, aliases)?);
        }
        Ok(OutExpr::Call(func, out))
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_aggregate(
    sel: &Select,
    st: &SelectText,
    src: &Source<'_>,
    order: Vec<(Expr, bool)>,
    limit: Option<(u64, u64)>,
    (group, rollup): (Vec<Expr>, bool),
    distinct: bool,
    aggregated: bool,
    max_limit_rows: u64,
    mk_units: impl Fn(&Edits) -> Result<Vec<Unit>, ShardError>,
) -> Result<Plan, ShardError> {
    if rollup && !order.is_empty() {
        // MariaDB answers ERROR 1221 (CUBE/ROLLUP and ORDER BY).
        return Err(ShardError::Unsupported(
            "GROUP BY ... WITH ROLLUP with ORDER BY".into(),
        ));
    }
    if sel.projection.iter().any(|i| item_expr(i).is_none()) {
        return Err(ShardError::Unsupported(
            "`*` with GROUP BY, DISTINCT or aggregates across shards".into(),
        ));
    }
    let mut p = Pushed {
        src,
        items: Vec::new(),
        group: Vec::new(),
        aggs: Vec::new(),
        distinct_args: Vec::new(),
        concats: Vec::new(),
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
        let i = p.push_expr(format!("K:{g}"), &g)?;
        p.group.push(i);
    }
    let mut outputs = Vec::new();
    let mut names = Vec::new();
    let mut aliases: Vec<(String, OutExpr)> = Vec::new();
    for (n, item) in sel.projection.iter().enumerate() {
        let Some((e, alias)) = item_expr(item) else {
            continue;
        };
        let x = p.convert(e, &[])?;
        // The column name the server would give: the alias, a column's own name, or the item's
        // text as written.
        let name = match (alias, e) {
            (Some(a), _) => a.value.clone(),
            (None, Expr::Identifier(id)) => id.value.clone(),
            (None, Expr::CompoundIdentifier(parts)) => {
                parts.last().map_or_else(String::new, |id| id.value.clone())
            }
            (None, _) => match st.item_ranges.get(n) {
                Some(r) => src.text(r.clone())?.trim().to_string(),
                None => e.to_string(),
            },
        };
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
    if rollup {
        // Super-aggregate rows fold merged groups: every output must be a group column, a
        // mergeable aggregate or an expression over those.
        let loose = p
            .items
            .iter()
            .enumerate()
            .any(|(i, (k, _))| k.starts_with("K:") && !p.group.contains(&i));
        if loose || !p.distinct_args.is_empty() || !p.concats.is_empty() || distinct {
            return Err(ShardError::Unsupported(
                "GROUP BY ... WITH ROLLUP over DISTINCT aggregates or ungrouped columns across shards"
                    .into(),
            ));
        }
    }
    if distinct && aggregated && outputs.len() > visible {
        return Err(ShardError::Unsupported(
            "DISTINCT with aggregates ordered by an unselected expression".into(),
        ));
    }
    // Every pushed column a merge compares (group keys and other selected expressions, which
    // DISTINCT, Sort and HAVING compare; MIN/MAX and COUNT(DISTINCT) arguments) gets a helper
    // `COLLATION(<its text>)` at the end of the partial rows (see `collate`); the Project drops
    // them.
    let compared: Vec<usize> = (0..p.items.len())
        .filter(|&i| {
            p.items.get(i).is_some_and(|(k, _)| k.starts_with("K:"))
                || p.aggs.iter().any(|a| {
                    a.cols().contains(&i)
                        && matches!(a.kind, AggKind::Min | AggKind::Max | AggKind::CountDistinct)
                })
                || p.concats.iter().any(|c| c.keys.iter().any(|k| k.col == i))
        })
        .collect();
    let mut collations = Vec::new();
    for i in compared {
        let Some((_, text)) = p.items.get(i) else {
            continue;
        };
        let text = format!("COLLATION({text})");
        p.push(format!("C:{i}"), text);
        collations.push(CollationOf::new(i));
    }
    // Shard SQL: the select list becomes the partials; everything after FROM ... WHERE up to a
    // locking clause becomes the shard GROUP BY (+ ORDER BY, LIMIT) made here; FROM ... WHERE is
    // the client's text.
    let mut edits = Edits::default();
    if let Some(d) = &st.distinct {
        // The shards group instead (their partial rows are distinct by their group columns).
        edits.replace(d.clone(), "");
    }
    let list: Vec<&str> = p.items.iter().map(|(_, t)| t.as_str()).collect();
    edits.replace(st.items.clone(), list.join(", "));
    let mut tail = String::new();
    let shard_group: Vec<String> = p
        .group
        .iter()
        .filter_map(|&g| p.items.get(g).map(|(_, t)| t.clone()))
        .chain(p.distinct_args.iter().cloned())
        .collect();
    if !shard_group.is_empty() {
        tail.push_str(" GROUP BY ");
        tail.push_str(&shard_group.join(", "));
    }
    // Streaming GROUP BY: when the ORDER BY only names group columns (or is absent), every shard
    // sorts its groups that way, the proxy merges the sorted streams and aggregates group by group.
    let sorted = stream_order(&keys, &outputs, &p.group);
    if !sorted.is_empty() {
        tail.push_str(" ORDER BY ");
        for (n, k) in sorted.iter().enumerate() {
            if n > 0 {
                tail.push_str(", ");
            }
            tail.push_str(&(k.col + 1).to_string());
            if k.desc {
                tail.push_str(" DESC");
            }
        }
    }
    if let Some(need) = group_limit(limit, &sorted, having.is_some(), &p, distinct && aggregated)
        && need <= max_limit_rows
        && !rollup
    {
        tail.push(' ');
        tail.push_str(&limit_clause(need));
    }
    if st.body_end > st.tail {
        return Err(ShardError::Unsupported(
            "clauses after FROM (the proxy could not rewrite the statement text safely)".into(),
        ));
    }
    if st.tail < src.toks().last().map_or(0, |t| t.end) {
        tail.push(' ');
    }
    edits.replace(st.body_end..st.tail, tail);
    let units = mk_units(&edits)?;
    let scatter = Scatter {
        units,
        write: None,
        collations,
    };
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
        rollup,
        concats: p.concats.clone(),
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
