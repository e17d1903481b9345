//! `InsertSplit`: a multi-row INSERT split into one INSERT per physical table, each with the rows
//! whose shard key lands there (a [`Scatter`](super::Scatter) with summed counts). Rows without an
//! `auto_id` column get a global id first.

use std::collections::BTreeMap;

use sqlparser::ast::{
    Expr, Ident, Insert, ObjectName, ObjectNamePart, SetExpr, TableObject, Value as SqlValue,
};

use super::route::{base_name, default_route, everywhere, leaf};
use super::scatter::WriteMerge;
use super::sqltext::key_of_literal;
use super::{Plan, PlanContext, ShardError, Unit};
use crate::sql::shard::TableKind;

/// Plans an INSERT (or REPLACE).
pub(crate) fn plan_insert(mut ins: Insert, cx: &mut PlanContext<'_>) -> Result<Plan, ShardError> {
    let rules = cx.rules;
    let TableObject::TableName(name) = &ins.table else {
        return Err(ShardError::Unsupported(
            "INSERT into a table function".into(),
        ));
    };
    let table = base_name(name);
    let rule = match rules.table(&table) {
        TableKind::Unsharded => return Ok(default_route(rules, ins.to_string())),
        TableKind::Broadcast => return Ok(everywhere(rules, &ins.to_string())),
        TableKind::Sharded(r) => r,
    };
    if ins.columns.is_empty() {
        return Err(ShardError::Unsupported(format!(
            "INSERT into sharded table `{table}` without a column list"
        )));
    }
    let cols: Vec<String> = ins
        .columns
        .iter()
        .map(|c| base_name(c).to_ascii_lowercase())
        .collect();
    let Some(source) = ins.source.as_mut() else {
        return Err(ShardError::Unsupported(
            "INSERT ... SET on a sharded table (use VALUES)".into(),
        ));
    };
    let SetExpr::Values(values) = source.body.as_mut() else {
        return Err(ShardError::Unsupported(
            "INSERT ... SELECT into a sharded table".into(),
        ));
    };
    if let Some(id_col) = &rule.auto_id
        && !cols.contains(id_col)
    {
        ins.columns
            .push(ObjectName(vec![ObjectNamePart::Identifier(Ident::new(
                id_col.clone(),
            ))]));
        for row in values.rows.iter_mut() {
            let id = (cx.next_id)();
            row.content
                .push(Expr::Value(SqlValue::Number(id.to_string(), false).into()));
        }
    }
    let cols: Vec<String> = ins
        .columns
        .iter()
        .map(|c| base_name(c).to_ascii_lowercase())
        .collect();
    let key_at = cols.iter().position(|c| rule.is_key(c)).ok_or_else(|| {
        ShardError::Unsupported(format!(
            "INSERT into `{table}` without its shard key `{}`",
            rule.key
        ))
    })?;
    let mut by_part: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let Some(source) = ins.source.as_ref() else {
        return Err(ShardError::Unsupported("INSERT without VALUES".into()));
    };
    let SetExpr::Values(values) = source.body.as_ref() else {
        return Err(ShardError::Unsupported("INSERT without VALUES".into()));
    };
    for (i, row) in values.rows.iter().enumerate() {
        let v = row
            .content
            .get(key_at)
            .and_then(key_of_literal)
            .ok_or_else(|| {
                ShardError::Unsupported(format!(
                    "row {} of INSERT into `{table}`: the shard key `{}` must be a literal",
                    i + 1,
                    rule.key
                ))
            })?;
        let p = rule.algorithm.partition(&v, rule.partitions())?;
        by_part.entry(p).or_default().push(i);
    }
    let mut units = Vec::with_capacity(by_part.len());
    for (p, rows) in by_part {
        let mut one = ins.clone();
        let phys = rule.physical.get(p).cloned().unwrap_or_default();
        one.table = TableObject::TableName(ObjectName(vec![ObjectNamePart::Identifier(
            Ident::with_quote('`', phys),
        )]));
        if let Some(src) = one.source.as_mut()
            && let SetExpr::Values(v) = src.body.as_mut()
        {
            let all = std::mem::take(&mut v.rows);
            v.rows = all
                .into_iter()
                .enumerate()
                .filter(|(i, _)| rows.contains(i))
                .map(|(_, r)| r)
                .collect();
        }
        units.push(Unit {
            shard: rule.shard_of(p),
            sql: one.to_string(),
        });
    }
    Ok(leaf(units, Some(WriteMerge::Sum)))
}
