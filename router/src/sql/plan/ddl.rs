//! DDL and other statements: DDL on a sharded table runs once per physical table (renamed), on a
//! broadcast table on every shard; anything else on an unsharded table goes to the default shard.

use sqlparser::ast::{ObjectName, ObjectType, Statement};

use super::route::{base_name, default_route, everywhere, leaf};
use super::scatter::WriteMerge;
use super::splice::{Edits, Source, quote_ident};
use super::{Plan, PlanContext, ShardError, Unit};
use crate::sql::shard::{TableKind, TableRule};

fn per_physical(
    rule: &TableRule,
    mut build: impl FnMut(&str) -> Result<String, ShardError>,
) -> Result<Plan, ShardError> {
    let units = (0..rule.partitions())
        .map(|p| {
            Ok(Unit {
                shard: rule.shard_of(p),
                sql: build(rule.physical.get(p).map_or("", |s| s.as_str()))?,
            })
        })
        .collect::<Result<Vec<_>, ShardError>>()?;
    Ok(leaf(units, Some(WriteMerge::First)))
}

/// Plans DDL and the statements that are neither queries nor DML. A sharded table's DDL is the
/// client's text with the table's name replaced by each physical name.
pub(crate) fn plan_other(
    stmt: Statement,
    src: &Source<'_>,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, ShardError> {
    let rules = cx.rules;
    let name: Option<&ObjectName> = match &stmt {
        Statement::CreateTable(c) => Some(&c.name),
        Statement::AlterTable(a) => Some(&a.name),
        Statement::CreateIndex(c) => Some(&c.table_name),
        Statement::Drop {
            object_type: ObjectType::Table,
            names,
            ..
        } => {
            if names.len() != 1 {
                return Err(ShardError::Unsupported(
                    "DROP TABLE of several tables at once".into(),
                ));
            }
            names.first()
        }
        Statement::Truncate(t) => {
            if t.table_names.len() != 1 {
                return Err(ShardError::Unsupported(
                    "TRUNCATE of several tables at once".into(),
                ));
            }
            t.table_names.first().map(|n| &n.name)
        }
        _ => None,
    };
    let Some(name) = name else {
        return Ok(default_route(rules, src.sql().to_string()));
    };
    match rules.table(&base_name(name)) {
        TableKind::Unsharded => Ok(default_route(rules, src.sql().to_string())),
        TableKind::Broadcast => Ok(everywhere(rules, src.sql())),
        TableKind::Sharded(rule) => {
            let range = src.name_range(name)?;
            per_physical(rule, |ph| {
                let mut e = Edits::default();
                e.replace(range.clone(), quote_ident(ph));
                e.apply(src)
            })
        }
    }
}
