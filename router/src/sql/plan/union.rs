//! `Union`: the rows of several plans, one after the other (`UNION ALL`), or without duplicates
//! (`UNION`, a [`Distinct`](super::Distinct) over it). Each input is a whole plan of its own (one
//! branch of the client's statement, planned as if sent alone). The branches must produce the same
//! column types: MariaDB would convert them to a common type, which the proxy does not emulate, so
//! differing types refuse the statement rather than answer with other bytes.

use codec::mysql::ColumnDefinition;
use codec::mysql::consts::column_flag;

use super::exec::{Row, RowSource};
use super::{Plan, ShardError};

/// Concatenate the rows of several plans.
#[derive(Debug, Clone, PartialEq)]
pub struct Union {
    /// The branches, in statement order.
    pub inputs: Vec<Plan>,
    /// Columns the nodes above compare (the union's DISTINCT: all; its ORDER BY: the keys). They
    /// must not be text: a column definition carries the connection's collation, not the
    /// column's, and a union's branches have no collation probe (`collate`), so text would be
    /// compared by a guess.
    pub compared: Compared,
}

/// Which columns of a [`Union`] are compared above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compared {
    /// None (UNION ALL without ORDER BY).
    None,
    /// These columns (ORDER BY keys).
    Columns(Vec<usize>),
    /// Every column (UNION DISTINCT).
    All,
}

/// The running concatenation.
pub struct UnionRows {
    columns: Vec<ColumnDefinition>,
    inputs: Vec<Box<dyn RowSource>>,
    at: usize,
}

impl UnionRows {
    /// Concatenates `inputs`; their column types must agree (names are the first input's), and
    /// no `compared` column may be text.
    pub fn new(inputs: Vec<Box<dyn RowSource>>, compared: &Compared) -> Result<Self, ShardError> {
        let mut columns = inputs
            .first()
            .map(|i| i.columns().to_vec())
            .unwrap_or_default();
        for input in inputs.iter().skip(1) {
            let cols = input.columns();
            if cols.len() != columns.len() {
                return Err(ShardError::Syntax(
                    "The used SELECT statements have a different number of columns".into(),
                ));
            }
            for (c, o) in columns.iter_mut().zip(cols) {
                if c.column_type != o.column_type
                    || c.charset != o.charset
                    || c.decimals != o.decimals
                    || (c.flags ^ o.flags) & column_flag::UNSIGNED != 0
                {
                    return Err(ShardError::Unsupported(format!(
                        "UNION across shards of branches whose column `{}` has different types \
                         (cast the branches to one type)",
                        String::from_utf8_lossy(&c.name)
                    )));
                }
                c.column_length = c.column_length.max(o.column_length);
                if o.flags & column_flag::NOT_NULL == 0 {
                    c.flags &= !column_flag::NOT_NULL;
                }
            }
        }
        for (i, c) in columns.iter().enumerate() {
            let is_compared = match compared {
                Compared::None => false,
                Compared::Columns(v) => v.contains(&i),
                Compared::All => true,
            };
            if is_compared && c.charset != codec::mysql::consts::charset::BINARY {
                return Err(ShardError::Unsupported(format!(
                    "UNION across shards comparing the text column `{}` (DISTINCT or ORDER BY): \
                     its collation is not known to the proxy; use UNION ALL, or order by a number",
                    String::from_utf8_lossy(&c.name)
                )));
            }
        }
        Ok(Self {
            columns,
            inputs,
            at: 0,
        })
    }
}

impl RowSource for UnionRows {
    fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        while let Some(input) = self.inputs.get_mut(self.at) {
            if let Some(r) = input.next_row()? {
                return Ok(Some(r));
            }
            self.at += 1;
        }
        Ok(None)
    }
}

/// Plans `SELECT ... UNION [ALL] SELECT ...` whose branches are not all on one shard: each branch
/// is the client's text of that branch, planned alone; the union's own ORDER BY (by position or by
/// the first branch's column names) and LIMIT run over the concatenation. `Ok(None)`: not a union
/// this planner takes (the caller's error stands).
pub(crate) fn plan_union(
    q: &sqlparser::ast::Query,
    src: &super::splice::Source<'_>,
    cx: &mut super::PlanContext<'_>,
) -> Result<Option<Plan>, ShardError> {
    use sqlparser::ast::{SetExpr, SetOperator, SetQuantifier};
    if q.with.is_some() {
        return Ok(None);
    }
    // The branches in order, and whether every operator is UNION ALL / UNION DISTINCT.
    fn walk<'q>(s: &'q SetExpr, out: &mut Vec<&'q SetExpr>, quants: &mut Vec<bool>) -> Option<()> {
        match s {
            SetExpr::SetOperation {
                op: SetOperator::Union,
                set_quantifier,
                left,
                right,
            } => {
                quants.push(match set_quantifier {
                    SetQuantifier::All => true,
                    SetQuantifier::None | SetQuantifier::Distinct => false,
                    _ => return None,
                });
                walk(left, out, quants)?;
                walk(right, out, quants)
            }
            SetExpr::SetOperation { .. } => None,
            other => {
                out.push(other);
                Some(())
            }
        }
    }
    let mut branches = Vec::new();
    let mut quants = Vec::new();
    if walk(&q.body, &mut branches, &mut quants).is_none() || quants.is_empty() {
        return Ok(None);
    }
    let all = quants[0];
    if quants.iter().any(|&a| a != all) {
        return Err(ShardError::Unsupported(
            "UNION mixing ALL and DISTINCT across shards".into(),
        ));
    }
    let ranges = branch_ranges(src, branches.len())?;
    let mut inputs = Vec::with_capacity(ranges.len());
    for r in ranges {
        let text = src.text(r)?;
        let stmt = super::parse_one(text)?;
        inputs.push(super::plan_statement(
            stmt,
            &super::splice::Source::new(text),
            cx,
        )?);
    }
    let mut compared = if all { Compared::None } else { Compared::All };
    let mut plan = Plan::Union(Union {
        inputs,
        compared: Compared::None,
    });
    if !all {
        plan = Plan::Distinct(super::Distinct {
            input: Box::new(plan),
        });
    }
    // ORDER BY over the union's columns: positions, or the first branch's names.
    if let Some(ob) = &q.order_by {
        let sqlparser::ast::OrderByKind::Expressions(v) = &ob.kind else {
            return Err(ShardError::Unsupported("ORDER BY ALL".into()));
        };
        let names = output_names(branches.first().copied());
        let mut keys = Vec::with_capacity(v.len());
        for o in v {
            let col = match &o.expr {
                sqlparser::ast::Expr::Value(val) => match &val.value {
                    sqlparser::ast::Value::Number(n, _) => n
                        .parse::<usize>()
                        .ok()
                        .and_then(|n| n.checked_sub(1))
                        .filter(|&i| names.as_ref().is_none_or(|ns| i < ns.len())),
                    _ => None,
                },
                sqlparser::ast::Expr::Identifier(id) => names
                    .as_ref()
                    .and_then(|ns| ns.iter().position(|n| n.eq_ignore_ascii_case(&id.value))),
                _ => None,
            }
            .ok_or_else(|| {
                ShardError::Unsupported(format!(
                    "ORDER BY `{}` of a UNION across shards (order by a position or a column name)",
                    o.expr
                ))
            })?;
            let desc = matches!(o.options.sort, Some(sqlparser::ast::OrderBySort::Desc));
            keys.push(super::SortKey::new(col, desc));
        }
        if compared == Compared::None {
            compared = Compared::Columns(keys.iter().map(|k| k.col).collect());
        }
        plan = Plan::Sort(super::Sort {
            keys,
            input: Box::new(plan),
        });
    }
    set_compared(&mut plan, compared);
    if let Some((offset, count)) = super::select::limit_of(q)? {
        plan = Plan::Limit(super::Limit {
            offset,
            count,
            input: Box::new(plan),
        });
    }
    Ok(Some(plan))
}

/// Records on the union under `plan` which columns are compared above it.
fn set_compared(plan: &mut Plan, compared: Compared) {
    match plan {
        Plan::Union(u) => u.compared = compared,
        Plan::Sort(s) => set_compared(&mut s.input, compared),
        Plan::Distinct(d) => set_compared(&mut d.input, compared),
        _ => {}
    }
}

/// The output column names of a SELECT branch (alias, or a column's own name), if every item has
/// one (a `*` does not).
fn output_names(branch: Option<&sqlparser::ast::SetExpr>) -> Option<Vec<String>> {
    use sqlparser::ast::{Expr, SelectItem, SetExpr};
    let SetExpr::Select(sel) = branch? else {
        return None;
    };
    sel.projection
        .iter()
        .map(|i| match i {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
            SelectItem::UnnamedExpr(Expr::Identifier(id)) => Some(id.value.clone()),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => {
                p.last().map(|i| i.value.clone())
            }
            _ => None,
        })
        .collect()
}

/// Byte ranges of the `n` branches of a top-level UNION: split at `UNION [ALL|DISTINCT]` at
/// parenthesis depth 0; a branch in parentheses loses them; the union's own ORDER BY / LIMIT
/// after the last branch is left out.
fn branch_ranges(
    src: &super::splice::Source<'_>,
    n: usize,
) -> Result<Vec<std::ops::Range<usize>>, ShardError> {
    use super::splice::Kind;
    let toks = src.toks();
    let word = |i: usize, w: &str| {
        toks.get(i).is_some_and(|t| {
            t.kind == Kind::Word
                && t.depth == 0
                && src.tok_text(i, i).is_ok_and(|s| s.eq_ignore_ascii_case(w))
        })
    };
    let bad = || {
        ShardError::Unsupported(
            "UNION (the proxy could not rewrite the statement text safely)".into(),
        )
    };
    let mut out = Vec::with_capacity(n);
    let mut start = 0usize;
    let mut i = 0usize;
    let mut end = toks.len();
    while i < toks.len() {
        if word(i, "UNION") {
            out.push((start, i));
            i += 1;
            if word(i, "ALL") || word(i, "DISTINCT") {
                i += 1;
            }
            start = i;
            continue;
        }
        if !out.is_empty()
            && (word(i, "ORDER") || word(i, "LIMIT") || toks[i].kind == Kind::Punct(b';'))
            && toks[i].depth == 0
        {
            end = i;
            break;
        }
        i += 1;
    }
    out.push((start, end));
    if out.len() != n {
        return Err(bad());
    }
    out.into_iter()
        .map(|(a, b)| {
            if a >= b {
                return Err(bad());
            }
            // `( SELECT ... )`: the parentheses around a branch go.
            let (mut a, mut b) = (a, b);
            while b - a >= 2
                && toks[a].kind == Kind::Punct(b'(')
                && toks[b - 1].kind == Kind::Punct(b')')
                && toks[a].depth == toks[b - 1].depth
                && toks[a + 1..b - 1].iter().all(|t| t.depth > toks[a].depth)
            {
                a += 1;
                b -= 1;
            }
            Ok(toks[a].start..toks[b - 1].end)
        })
        .collect()
}
