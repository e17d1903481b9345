//! DDL and other statements: DDL on a sharded table runs once per physical table (renamed), on a
//! broadcast table on every shard; anything else on an unsharded table goes to the default shard.
//! `DROP TABLE a, b` is planned table by table: each table's units are the client's statement with
//! its list of names replaced by that one table's name (physical for a sharded table), so its
//! keywords (`TEMPORARY`, `IF EXISTS`, `RESTRICT`, comments) are kept byte for byte.

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

/// `DROP TABLE a, b, ...`: each table's DROP planned on its own (its units: the statement with the
/// list of names replaced by that table's name), all units in one scatter in the order of the
/// names.
fn drop_tables(
    names: &[ObjectName],
    src: &Source<'_>,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, ShardError> {
    let rules = cx.rules;
    let (Some(first), Some(last)) = (names.first(), names.last()) else {
        return Err(ShardError::Unsupported("DROP TABLE without a table".into()));
    };
    let list = src.name_range(first)?.start..src.name_range(last)?.end;
    let mut units = Vec::new();
    for name in names {
        let one = |text: String| {
            let mut e = Edits::default();
            e.replace(list.clone(), text);
            e.apply(src)
        };
        match rules.table(&base_name(name)) {
            TableKind::Unsharded => units.push(Unit {
                shard: rules.default_shard,
                sql: one(src.text(src.name_range(name)?)?.to_string())?,
            }),
            TableKind::Broadcast => {
                let sql = one(src.text(src.name_range(name)?)?.to_string())?;
                units.extend((0..rules.shards.len()).map(|shard| Unit {
                    shard,
                    sql: sql.clone(),
                }));
            }
            TableKind::Sharded(rule) => {
                for p in 0..rule.partitions() {
                    let ph = rule.physical.get(p).map_or("", |s| s.as_str());
                    units.push(Unit {
                        shard: rule.shard_of(p),
                        sql: one(quote_ident(ph))?,
                    });
                }
            }
        }
    }
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
            if names.len() > 1 {
                return drop_tables(names, src, cx);
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

#[cfg(test)]
mod tests {
    use crate::sql::plan::{Plan, PlanContext, plan};
    use crate::sql::shard::ShardingRules;

    fn rules() -> ShardingRules {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sql/sharding.toml"
        );
        let cfg = crate::config::load(std::path::Path::new(path)).unwrap();
        ShardingRules::compile(&cfg.sharding()[0]).unwrap()
    }

    fn units(sql: &str) -> Vec<(usize, String)> {
        let r = rules();
        let mut next = || 1;
        let p = plan(
            sql,
            &mut PlanContext {
                rules: &r,
                params: &[],
                next_id: &mut next,
            },
        )
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        match p {
            Plan::Route(r) => vec![(r.unit.shard, r.unit.sql)],
            Plan::Scatter(s) => s.units.into_iter().map(|u| (u.shard, u.sql)).collect(),
            other => panic!("{sql}: {}", other.render(&r)),
        }
    }

    #[test]
    fn drop_of_several_tables_is_planned_table_by_table() {
        let got =
            units("drop temporary table if exists /* c */ users, `settings` , countries restrict");
        let mut want: Vec<(usize, String)> = (0..4)
            .map(|s| {
                (
                    s,
                    format!("drop temporary table if exists /* c */ `users_{s}` restrict"),
                )
            })
            .collect();
        want.push((
            0,
            "drop temporary table if exists /* c */ `settings` restrict".into(),
        ));
        want.extend((0..4).map(|s| {
            (
                s,
                "drop temporary table if exists /* c */ countries restrict".into(),
            )
        }));
        assert_eq!(got, want);
        // One table keeps the single-table plan.
        assert_eq!(
            units("DROP TABLE settings"),
            vec![(0, "DROP TABLE settings".into())]
        );
    }
}
