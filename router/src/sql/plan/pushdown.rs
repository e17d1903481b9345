//! Whole-statement pushdown: a query whose every sharded table is pinned to one partition runs on
//! that partition's shard as the client wrote it — subqueries, derived tables, `UNION`, `WITH` and
//! all — with each table name replaced by its physical name ([`super::splice`]).
//!
//! "Pinned" is decided scope by scope (each `SELECT` of the statement): the scope's WHERE must
//! restrict one of its sharded tables to keys of a single partition (`key = 5`, `key IN (5, 13)`
//! when both land together, a range inside one partition), every other sharded table of the scope
//! must be joined to it on the shard keys (co-located rules), or be equated on its key to a
//! pinned table of an enclosing scope (a correlated subquery), and every scope must land on the
//! same partition. Anything else is not pushed down (and is planned across shards or refused by
//! the caller): an answer computed on one shard is right only when no other shard holds a row
//! the statement could read.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, ObjectNamePart, Query, Select, SetExpr, TableFactor,
    TableWithJoins, Visit, Visitor,
};

use super::route::{TableRef, conjuncts, leaf, partitions_of, qualified_key, rename, table_ref};
use super::splice::{Edits, Source};
use super::{Plan, ShardError, Unit};
use crate::sql::shard::{ShardingRules, TableKind, TableRule};

/// A table visible to a scope, with the partition its scope is pinned to (sharded tables).
#[derive(Clone)]
struct Visible<'r> {
    table: TableRef<'r>,
    part: Option<usize>,
}

/// What the walk found so far.
struct Pin<'r> {
    rules: &'r ShardingRules,
    /// The rule of the first sharded table met; every other must be co-located with it.
    rule: Option<&'r TableRule>,
    /// The one partition every scope is pinned to.
    part: Option<usize>,
    /// Names of common table expressions (not tables).
    ctes: BTreeSet<String>,
    /// An unsharded table was named.
    unsharded: Option<String>,
}

fn no(why: impl Into<String>) -> ShardError {
    ShardError::Unsupported(why.into())
}

/// The statement on one shard if every sharded table of `q` is pinned to one partition; an
/// `Unsupported` error saying why not otherwise.
pub(crate) fn plan_query(
    q: &Query,
    src: &Source<'_>,
    rules: &ShardingRules,
) -> Result<Plan, ShardError> {
    let Some(pinned) = pin(q, rules)? else {
        // No sharded table: broadcast and unsharded tables all live on the default shard.
        return Ok(super::route::default_route(rules, src.sql().to_string()));
    };
    let mut edits = Edits::default();
    pinned.rename(q, src, &mut edits)?;
    let sql = edits.apply(src)?;
    Ok(leaf(
        vec![Unit {
            shard: pinned.rule.shard_of(pinned.part),
            sql,
        }],
        None,
    ))
}

/// A query whose sharded tables are all pinned to one partition of co-located rules.
pub(crate) struct Pinned<'r> {
    /// The rule of its first sharded table (the others are co-located with it).
    pub rule: &'r TableRule,
    /// The partition.
    pub part: usize,
    pin: Pin<'r>,
}

/// Walks `q`: `Ok(None)` when it names no sharded table, the partition when every SELECT is
/// pinned to one, an error saying why not otherwise.
pub(crate) fn pin<'r>(
    q: &Query,
    rules: &'r ShardingRules,
) -> Result<Option<Pinned<'r>>, ShardError> {
    let mut pin = Pin {
        rules,
        rule: None,
        part: None,
        ctes: BTreeSet::new(),
        unsharded: None,
    };
    pin.query(q, &[])?;
    let (Some(rule), Some(part)) = (pin.rule, pin.part) else {
        return Ok(None);
    };
    if let Some(t) = &pin.unsharded {
        return Err(no(format!(
            "a statement joining sharded `{}` with unsharded `{t}` (make `{t}` a broadcast table)",
            rule.name
        )));
    }
    for name in &pin.ctes {
        if !matches!(rules.table(name), TableKind::Unsharded) {
            return Err(no(format!(
                "a common table expression named like the table `{name}`"
            )));
        }
    }
    Ok(Some(Pinned { rule, part, pin }))
}

impl Pinned<'_> {
    /// Edits renaming every table of `q` (CTE names aside) for the pinned partition.
    pub(crate) fn rename(
        &self,
        q: &Query,
        src: &Source<'_>,
        edits: &mut Edits,
    ) -> Result<(), ShardError> {
        struct Tables<'a, 'b> {
            pin: &'a Pin<'b>,
            p: usize,
            src: &'a Source<'a>,
            edits: &'a mut Edits,
            err: Option<ShardError>,
        }
        impl Visitor for Tables<'_, '_> {
            type Break = ();
            fn pre_visit_table_factor(&mut self, f: &TableFactor) -> ControlFlow<()> {
                if let TableFactor::Table { name, .. } = f
                    && !self.pin.is_cte(name)
                    && let Err(e) = rename(f, self.p, self.pin.rules, true, self.src, self.edits)
                {
                    self.err = Some(e);
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
        }
        let mut t = Tables {
            pin: &self.pin,
            p: self.part,
            src,
            edits,
            err: None,
        };
        let _ = q.visit(&mut t);
        t.err.map_or(Ok(()), Err)
    }
}

impl<'r> Pin<'r> {
    fn is_cte(&self, name: &sqlparser::ast::ObjectName) -> bool {
        match name.0.as_slice() {
            [ObjectNamePart::Identifier(i)] => self.ctes.contains(&i.value.to_ascii_lowercase()),
            _ => false,
        }
    }

    fn query(&mut self, q: &Query, outer: &[Visible<'r>]) -> Result<(), ShardError> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_ascii_lowercase());
            }
            for cte in &with.cte_tables {
                self.query(&cte.query, outer)?;
            }
        }
        self.set_expr(&q.body, outer)?;
        if let Some(ob) = &q.order_by
            && let sqlparser::ast::OrderByKind::Expressions(v) = &ob.kind
        {
            for o in v {
                self.subqueries(&o.expr, outer)?;
            }
        }
        Ok(())
    }

    fn set_expr(&mut self, s: &SetExpr, outer: &[Visible<'r>]) -> Result<(), ShardError> {
        match s {
            SetExpr::Select(sel) => self.select(sel, outer),
            SetExpr::Query(q) => self.query(q, outer),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left, outer)?;
                self.set_expr(right, outer)
            }
            SetExpr::Values(v) => {
                for row in &v.rows {
                    for e in &row.content {
                        self.subqueries(e, outer)?;
                    }
                }
                Ok(())
            }
            other => Err(no(format!("`{other}` in a query on sharded tables"))),
        }
    }

    /// The tables of a FROM item (derived tables and nested joins walked), and its ON conditions.
    fn join_tree<'q>(
        &mut self,
        twj: &'q TableWithJoins,
        outer: &[Visible<'r>],
        refs: &mut Vec<TableRef<'r>>,
        on: &mut Vec<&'q Expr>,
        using: &mut Vec<usize>,
    ) -> Result<(), ShardError> {
        self.factor(&twj.relation, outer, refs, on, using)?;
        for j in &twj.joins {
            self.factor(&j.relation, outer, refs, on, using)?;
            match super::route::join_constraint(&j.join_operator)? {
                JoinConstraint::On(e) => on.push(e),
                JoinConstraint::Using(cols) if super::select::using_key(refs, cols) => {
                    using.push(refs.len() - 1);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn factor<'q>(
        &mut self,
        f: &'q TableFactor,
        outer: &[Visible<'r>],
        refs: &mut Vec<TableRef<'r>>,
        on: &mut Vec<&'q Expr>,
        using: &mut Vec<usize>,
    ) -> Result<(), ShardError> {
        match f {
            TableFactor::Table { name, .. } if self.is_cte(name) => Ok(()),
            TableFactor::Table { .. } => {
                let t = table_ref(f, self.rules)?;
                match t.kind {
                    TableKind::Unsharded => {
                        self.unsharded.get_or_insert_with(|| t.name.clone());
                    }
                    TableKind::Sharded(r) => match self.rule {
                        None => self.rule = Some(r),
                        Some(first) if !first.colocated_with(r) => {
                            return Err(no(format!(
                                "`{}` and `{}` in one statement (their sharding rules differ)",
                                first.name, r.name
                            )));
                        }
                        Some(_) => {}
                    },
                    TableKind::Broadcast => {}
                }
                refs.push(t);
                Ok(())
            }
            TableFactor::Derived { subquery, .. } => self.query(subquery, outer),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.join_tree(table_with_joins, outer, refs, on, using),
            other => Err(no(format!("table expression `{other}`"))),
        }
    }

    fn select(&mut self, sel: &Select, outer: &[Visible<'r>]) -> Result<(), ShardError> {
        let mut refs: Vec<TableRef<'r>> = Vec::new();
        let mut on: Vec<&Expr> = Vec::new();
        let mut using: Vec<usize> = Vec::new();
        for twj in &sel.from {
            self.join_tree(twj, outer, &mut refs, &mut on, &mut using)?;
        }
        let sharded: Vec<usize> = refs
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.kind, TableKind::Sharded(_)))
            .map(|(i, _)| i)
            .collect();
        let mut part = None;
        if let Some(&first) = sharded.first() {
            let TableKind::Sharded(rule) = refs[first].kind else {
                return Err(no("a sharded table"));
            };
            let pinned = partitions_of(sel.selection.as_ref(), &refs, rule)?;
            part = match pinned {
                Some(set) if set.len() == 1 => set.into_iter().next(),
                _ => correlated(sel.selection.as_ref(), &on, &refs, outer),
            };
            let Some(p) = part else {
                return Err(no(format!(
                    "a statement whose `{}` is not pinned to one shard-key value in every SELECT \
                     (subqueries, derived tables, UNION and WITH run on one shard only)",
                    refs[first].name
                )));
            };
            for &i in &sharded[1..] {
                let joined = using.contains(&i)
                    || super::select::joined_on_keys(&refs, i, &on, sel.selection.as_ref())
                    || partitions_of(sel.selection.as_ref(), std::slice::from_ref(&refs[i]), rule)?
                        .is_some_and(|s| s.len() == 1 && s.contains(&p));
                if !joined {
                    return Err(no(format!(
                        "`{}` is not joined to `{}` on their shard keys",
                        refs[i].name, refs[first].name
                    )));
                }
            }
            match self.part {
                None => self.part = Some(p),
                Some(q) if q != p => {
                    return Err(no(
                        "SELECTs of one statement pinned to different shards (subqueries, \
                         derived tables, UNION and WITH run on one shard only)",
                    ));
                }
                Some(_) => {}
            }
        }
        // Subqueries see this scope's tables (correlation) and the enclosing ones.
        let mut scope: Vec<Visible<'r>> = outer.to_vec();
        scope.extend(refs.iter().map(|t| Visible {
            table: t.clone(),
            part,
        }));
        for item in &sel.projection {
            match item {
                sqlparser::ast::SelectItem::UnnamedExpr(e)
                | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                    self.subqueries(e, &scope)?
                }
                _ => {}
            }
        }
        for e in sel.selection.iter().chain(sel.having.iter()).chain(on) {
            self.subqueries(e, &scope)?;
        }
        if let sqlparser::ast::GroupByExpr::Expressions(v, _) = &sel.group_by {
            for e in v {
                self.subqueries(e, &scope)?;
            }
        }
        Ok(())
    }

    /// Walks the subqueries directly inside `e` (deeper ones are walked by their own scope).
    fn subqueries(&mut self, e: &Expr, scope: &[Visible<'r>]) -> Result<(), ShardError> {
        struct Direct<'a, 'r> {
            pin: &'a mut Pin<'r>,
            scope: &'a [Visible<'r>],
            depth: usize,
            err: Option<ShardError>,
        }
        impl Visitor for Direct<'_, '_> {
            type Break = ();
            fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
                if self.depth == 0
                    && let Err(e) = self.pin.query(q, self.scope)
                {
                    self.err = Some(e);
                    return ControlFlow::Break(());
                }
                self.depth += 1;
                ControlFlow::Continue(())
            }
            fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
                self.depth = self.depth.saturating_sub(1);
                ControlFlow::Continue(())
            }
        }
        let mut d = Direct {
            pin: self,
            scope,
            depth: 0,
            err: None,
        };
        let _ = e.visit(&mut d);
        d.err.map_or(Ok(()), Err)
    }
}

/// The partition of an enclosing scope that this scope's sharded table is equated to on its key
/// (`inner.key = outer.key`), if any.
fn correlated(
    selection: Option<&Expr>,
    on: &[&Expr],
    refs: &[TableRef<'_>],
    outer: &[Visible<'_>],
) -> Option<usize> {
    let mut eqs = Vec::new();
    for e in selection.into_iter().chain(on.iter().copied()) {
        conjuncts(e, &mut eqs);
    }
    let outer_tables = || outer.iter().map(|v| &v.table);
    for e in eqs {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = e
        else {
            continue;
        };
        for (a, b) in [(left, right), (right, left)] {
            if qualified_key(a, refs).is_some()
                && let Some(o) = qualified_key(b, outer_tables())
                // A name of the inner scope shadows the outer one.
                && qualified_key(b, refs).is_none()
                && let Some(p) = outer.get(o).and_then(|v| v.part)
            {
                return Some(p);
            }
        }
    }
    None
}
