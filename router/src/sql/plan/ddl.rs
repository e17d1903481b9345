//! DDL and other statements: DDL on a sharded table runs once per physical table (renamed), on a
//! broadcast table on every shard; anything else on an unsharded table goes to the default shard.

use sqlparser::ast::{ObjectType, Statement};

use super::route::{base_name, default_route, everywhere, leaf};
use super::scatter::WriteMerge;
use super::{Plan, PlanContext, ShardError, Unit};
use crate::sql::shard::{TableKind, TableRule};

fn per_physical(rule: &TableRule, build: impl Fn(&str) -> String) -> Plan {
    let units = (0..rule.partitions())
        .map(|p| Unit {
            shard: rule.shard_of(p),
            sql: build(rule.physical.get(p).map_or("", |s| s.as_str())),
        })
        .collect();
    leaf(units, Some(WriteMerge::First))
}

fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Plans DDL and the statements that are neither queries nor DML.
pub(crate) fn plan_other(
    stmt: Statement,
    sql: &str,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, ShardError> {
    let rules = cx.rules;
    let table = match &stmt {
        Statement::CreateTable(c) => Some(base_name(&c.name)),
        Statement::AlterTable(a) => Some(base_name(&a.name)),
        Statement::CreateIndex(c) => Some(base_name(&c.table_name)),
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
            names.first().map(base_name)
        }
        Statement::Truncate(t) => {
            if t.table_names.len() != 1 {
                return Err(ShardError::Unsupported(
                    "TRUNCATE of several tables at once".into(),
                ));
            }
            t.table_names.first().map(|n| base_name(&n.name))
        }
        _ => None,
    };
    let Some(table) = table else {
        return Ok(default_route(rules, sql.to_string()));
    };
    match rules.table(&table) {
        TableKind::Unsharded => Ok(default_route(rules, stmt.to_string())),
        TableKind::Broadcast => Ok(everywhere(rules, &stmt.to_string())),
        TableKind::Sharded(rule) => Ok(match stmt {
            Statement::CreateTable(c) => per_physical(rule, |ph| {
                let mut c = c.clone();
                c.name = sqlparser::ast::ObjectName::from(vec![sqlparser::ast::Ident::with_quote(
                    '`', ph,
                )]);
                c.to_string()
            }),
            Statement::AlterTable(a) => per_physical(rule, |ph| {
                let mut a = a.clone();
                a.name = sqlparser::ast::ObjectName::from(vec![sqlparser::ast::Ident::with_quote(
                    '`', ph,
                )]);
                a.to_string()
            }),
            Statement::CreateIndex(c) => per_physical(rule, |ph| {
                let mut c = c.clone();
                c.table_name =
                    sqlparser::ast::ObjectName::from(vec![sqlparser::ast::Ident::with_quote(
                        '`', ph,
                    )]);
                c.to_string()
            }),
            Statement::Drop { if_exists, .. } => per_physical(rule, |ph| {
                format!(
                    "DROP TABLE {}{}",
                    if if_exists { "IF EXISTS " } else { "" },
                    quoted(ph)
                )
            }),
            _ => per_physical(rule, |ph| format!("TRUNCATE TABLE {}", quoted(ph))),
        }),
    }
}
