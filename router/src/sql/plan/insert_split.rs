//! `InsertSplit`: a multi-row INSERT split into one INSERT per physical table, each with the rows
//! whose shard key lands there (a [`Scatter`](super::Scatter) with summed counts). Rows without an
//! `auto_id` column get a global id first. Each unit is the client's text: its table name replaced,
//! its VALUES list cut down to the unit's rows (each row's text as written).

use std::collections::BTreeMap;

use sqlparser::ast::{Insert, SetExpr, TableObject};

use super::route::{base_name, default_route, everywhere, leaf};
use super::scatter::WriteMerge;
use super::splice::{Edits, Kind, Source, quote_ident};
use super::sqltext::key_of_literal;
use super::{Plan, PlanContext, ShardError, Unit};
use crate::sql::shard::{KeyValue, TableKind, TableRule};

fn unsupported(what: impl Into<String>) -> ShardError {
    ShardError::Unsupported(what.into())
}

/// Plans an INSERT (or REPLACE).
pub(crate) fn plan_insert(
    ins: Insert,
    src: &Source<'_>,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, ShardError> {
    let rules = cx.rules;
    let TableObject::TableName(name) = &ins.table else {
        return Err(unsupported("INSERT into a table function"));
    };
    let table = base_name(name);
    let rule = match rules.table(&table) {
        kind @ (TableKind::Unsharded | TableKind::Broadcast) => {
            // Rows read from sharded tables would be another set on every shard (broadcast) or
            // only the default shard's (unsharded).
            if let Some(q) = ins.source.as_ref()
                && !matches!(super::pushdown::pin(q, rules), Ok(None))
            {
                return Err(unsupported(format!(
                    "INSERT into unsharded or broadcast `{table}` ... SELECT from sharded tables"
                )));
            }
            return Ok(if matches!(kind, TableKind::Unsharded) {
                default_route(rules, src.sql().to_string())
            } else {
                everywhere(rules, src.sql())
            });
        }
        TableKind::Sharded(r) => r,
    };
    if ins.columns.is_empty() {
        return Err(unsupported(format!(
            "INSERT into sharded table `{table}` without a column list"
        )));
    }
    let cols: Vec<String> = ins
        .columns
        .iter()
        .map(|c| base_name(c).to_ascii_lowercase())
        .collect();
    let Some(source) = ins.source.as_ref() else {
        return Err(unsupported(
            "INSERT ... SET on a sharded table (use VALUES)",
        ));
    };
    let SetExpr::Values(values) = source.body.as_ref() else {
        return insert_select(name, source, rule, &table, &cols, src, rules);
    };
    if values.explicit_row {
        return Err(unsupported(
            "INSERT ... VALUES ROW(...) into a sharded table",
        ));
    }
    let add_id = rule.auto_id.as_ref().filter(|c| !cols.contains(c));
    let mut cols = cols;
    if let Some(c) = add_id {
        cols.push(c.clone());
    }
    let keys: Vec<usize> = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| rule.is_key(c))
        .map(|(i, _)| i)
        .collect();
    if keys.is_empty() {
        return Err(unsupported(format!(
            "INSERT into `{table}` without its shard key `{}`",
            rule.key
        )));
    }
    let rows = row_ranges(src, ins.columns.last(), values.rows.len())?;
    let ids: Vec<Option<u64>> = values
        .rows
        .iter()
        .map(|_| add_id.map(|_| (cx.next_id)()))
        .collect();
    let mut by_part: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, row) in values.rows.iter().enumerate() {
        let value_at = |k: usize| match row.content.get(k) {
            Some(e) => key_of_literal(e),
            None => ids
                .get(i)
                .copied()
                .flatten()
                .map(|id| KeyValue::Int(i128::from(id))),
        };
        let p = row_partition(rule, &table, &cols, &keys, value_at, i)?;
        by_part.entry(p).or_default().push(i);
    }
    let table_range = src.name_range(name)?;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(unsupported("INSERT without rows"));
    };
    let all_rows = first.open..last.close + 1;
    let mut units = Vec::with_capacity(by_part.len());
    for (p, kept) in by_part {
        let mut e = Edits::default();
        let phys = rule.physical.get(p).map_or("", String::as_str);
        e.replace(table_range.clone(), quote_ident(phys));
        if let Some(col) = add_id {
            let close = column_list_close(src, ins.columns.last())?;
            e.insert(close, format!(", {}", quote_ident(col)));
        }
        let mut text = String::new();
        for (n, &i) in kept.iter().enumerate() {
            let r = &rows[i];
            if n > 0 {
                text.push_str(", ");
            }
            text.push_str(src.text(r.open..r.close)?);
            if let Some(Some(id)) = ids.get(i) {
                text.push_str(", ");
                text.push_str(&id.to_string());
            }
            text.push(')');
        }
        e.replace(all_rows.clone(), text);
        units.push(Unit {
            shard: rule.shard_of(p),
            sql: e.apply(src)?,
        });
    }
    Ok(leaf(units, Some(WriteMerge::Sum)))
}

/// `INSERT INTO t (cols) SELECT ...` on one shard: the SELECT must be pinned to one partition of a
/// rule co-located with `t`'s, and each shard-key column of `t` must be filled from a shard-key
/// column of the SELECT's tables (or a literal of that partition), so every inserted row belongs
/// to the partition it is inserted in.
fn insert_select(
    name: &sqlparser::ast::ObjectName,
    source: &sqlparser::ast::Query,
    rule: &TableRule,
    table: &str,
    cols: &[String],
    src: &Source<'_>,
    rules: &crate::sql::shard::ShardingRules,
) -> Result<Plan, ShardError> {
    use sqlparser::ast::{Expr, SelectItem};
    let why = |w: &str| unsupported(format!("INSERT into sharded `{table}` ... SELECT {w}"));
    if rule.auto_id.as_ref().is_some_and(|c| !cols.contains(c)) {
        return Err(why("without its auto_id column"));
    }
    let pinned = super::pushdown::pin(source, rules)?
        .ok_or_else(|| why("from no sharded table (its rows' partitions are unknown)"))?;
    if !pinned.rule.colocated_with(rule) {
        return Err(why("from tables sharded another way"));
    }
    let SetExpr::Select(sel) = source.body.as_ref() else {
        return Err(why("with UNION (its key columns cannot be followed)"));
    };
    let mut refs = Vec::new();
    for twj in &sel.from {
        refs.push(super::route::table_ref(&twj.relation, rules)?);
        for j in &twj.joins {
            refs.push(super::route::table_ref(&j.relation, rules)?);
        }
    }
    for (k, c) in cols.iter().enumerate().filter(|(_, c)| rule.is_key(c)) {
        let e = match sel.projection.get(k) {
            Some(SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) => e,
            _ => return Err(why(&format!("whose `{c}` is not one select item"))),
        };
        let from_key = match e {
            Expr::Identifier(id) => {
                let n = id.value.to_ascii_lowercase();
                refs.iter()
                    .any(|t| matches!(t.kind, TableKind::Sharded(r) if r.is_key(&n)))
            }
            Expr::CompoundIdentifier(_) => super::route::qualified_key(e, &refs).is_some(),
            other => match key_of_literal(other) {
                Some(v) => rule.algorithm.partition(&v, rule.partitions())? == pinned.part,
                None => false,
            },
        };
        if !from_key {
            return Err(why(&format!(
                "whose `{c}` is not a shard-key column of the selected rows"
            )));
        }
    }
    let mut e = Edits::default();
    let phys = rule.physical.get(pinned.part).map_or("", String::as_str);
    e.replace(src.name_range(name)?, quote_ident(phys));
    pinned.rename(source, src, &mut e)?;
    Ok(leaf(
        vec![Unit {
            shard: rule.shard_of(pinned.part),
            sql: e.apply(src)?,
        }],
        Some(WriteMerge::Sum),
    ))
}

/// The partition of one row: every shard-key column (the key and its gene keys) must be a literal,
/// and they must agree.
fn row_partition(
    rule: &TableRule,
    table: &str,
    cols: &[String],
    keys: &[usize],
    value_at: impl Fn(usize) -> Option<KeyValue>,
    i: usize,
) -> Result<usize, ShardError> {
    let mut found: Option<(usize, usize)> = None;
    for &k in keys {
        let v = value_at(k).ok_or_else(|| {
            unsupported(format!(
                "row {} of INSERT into `{table}`: the shard key `{}` must be a literal",
                i + 1,
                cols.get(k).map_or("?", String::as_str)
            ))
        })?;
        let p = rule.algorithm.partition(&v, rule.partitions())?;
        match found {
            Some((q, other)) if q != p => {
                return Err(ShardError::Unsupported(format!(
                    "row {} of INSERT into `{table}`: shard keys `{}` and `{}` name different partitions",
                    i + 1,
                    cols.get(other).map_or("?", String::as_str),
                    cols.get(k).map_or("?", String::as_str)
                )));
            }
            _ => found = Some((p, k)),
        }
    }
    found
        .map(|(p, _)| p)
        .ok_or_else(|| unsupported("INSERT row without its shard key"))
}

/// A VALUES row: byte offsets of its `(` and its `)`.
struct Row {
    open: usize,
    close: usize,
}

/// Byte offset of the `)` that closes the column list (after its last column).
fn column_list_close(
    src: &Source<'_>,
    last_col: Option<&sqlparser::ast::ObjectName>,
) -> Result<usize, ShardError> {
    let last = last_col.ok_or_else(|| unsupported("INSERT without columns"))?;
    let end = src.name_range(last)?.end;
    let i = src.tok_from(end);
    match src.toks().get(i) {
        Some(t) if t.kind == Kind::Punct(b')') => Ok(t.start),
        _ => Err(unsupported(
            "INSERT column list (the proxy could not rewrite the statement text safely)",
        )),
    }
}

/// The rows of `VALUES (...), (...)` after the column list: their parentheses at depth 0, which
/// must be exactly `n`, separated by commas.
fn row_ranges(
    src: &Source<'_>,
    last_col: Option<&sqlparser::ast::ObjectName>,
    n: usize,
) -> Result<Vec<Row>, ShardError> {
    let bad = || {
        unsupported("INSERT VALUES list (the proxy could not rewrite the statement text safely)")
    };
    let toks = src.toks();
    let close = column_list_close(src, last_col)?;
    let mut i = src.tok_from(close) + 1;
    // VALUES or VALUE
    match toks.get(i) {
        Some(t)
            if t.kind == Kind::Word
                && src.tok_text(i, i).is_ok_and(|w| {
                    w.eq_ignore_ascii_case("VALUES") || w.eq_ignore_ascii_case("VALUE")
                }) =>
        {
            i += 1
        }
        _ => return Err(bad()),
    }
    let mut rows = Vec::with_capacity(n);
    loop {
        let Some(open) = toks
            .get(i)
            .filter(|t| t.kind == Kind::Punct(b'(') && t.depth == 0)
        else {
            return Err(bad());
        };
        let mut j = i + 1;
        while toks
            .get(j)
            .is_some_and(|t| !(t.kind == Kind::Punct(b')') && t.depth == 0))
        {
            j += 1;
        }
        let Some(close) = toks.get(j) else {
            return Err(bad());
        };
        rows.push(Row {
            open: open.start,
            close: close.start,
        });
        i = j + 1;
        match toks.get(i) {
            Some(t) if t.kind == Kind::Punct(b',') && t.depth == 0 => i += 1,
            _ => break,
        }
    }
    if rows.len() != n {
        return Err(bad());
    }
    Ok(rows)
}
