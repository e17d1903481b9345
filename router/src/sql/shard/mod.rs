//! Sharding rules: which logical tables are split over which shards and physical tables, by which key
//! and algorithm; broadcast and unsharded tables; global ids. Compiled once per config snapshot from
//! the `[sharding.NAME]` section (see `docs/sharding.md`).

pub mod algorithm;
pub mod dirty;
pub mod id;
pub mod key;
pub mod reshard;

pub use algorithm::{Algorithm, DateUnit};
pub use id::IdGenerator;
pub use key::KeyValue;

use crate::config::{ShardTable, Sharding};

/// Why rules could not be compiled or a value could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The rule text is wrong (reported by config validation).
    #[error("{0}")]
    Config(String),
    /// A shard-key value has no partition (client error).
    #[error("{0}")]
    Value(String),
}

/// One shard: a MySQL group (its primary and replicas) and the schema holding this shard's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Shard name (`s0`).
    pub name: String,
    /// The `mysql_groups` name serving it.
    pub group: String,
    /// The schema on that group.
    pub schema: String,
}

/// How one logical table is split.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRule {
    /// Logical name (lower case).
    pub name: String,
    /// Shard-key column (lower case).
    pub key: String,
    /// Further columns that embed the same partition ("gene" keys, hash rules only): routing on
    /// them uses the same function, so `order_no` with `order_no % n == user_id % n` routes alone.
    pub gene_keys: Vec<String>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Physical table name per partition.
    pub physical: Vec<String>,
    /// Column filled with a global id on INSERTs that omit it.
    pub auto_id: Option<String>,
    shards: usize,
}

impl TableRule {
    /// Number of partitions (physical tables).
    pub fn partitions(&self) -> usize {
        self.physical.len()
    }

    /// The shard index holding partition `p` (partitions are spread in contiguous blocks).
    pub fn shard_of(&self, p: usize) -> usize {
        p * self.shards / self.partitions().max(1)
    }

    /// Whether `column` (lower case) routes this table.
    pub fn is_key(&self, column: &str) -> bool {
        self.key == column || self.gene_keys.iter().any(|g| g == column)
    }

    /// Whether two tables are partitioned identically (a join on their keys stays on one shard).
    pub fn colocated_with(&self, other: &TableRule) -> bool {
        self.algorithm == other.algorithm
            && self.partitions() == other.partitions()
            && self.shards == other.shards
    }
}

/// What a logical table is.
#[derive(Debug, Clone, Copy)]
pub enum TableKind<'a> {
    /// Split by a rule.
    Sharded(&'a TableRule),
    /// A full copy on every shard.
    Broadcast,
    /// Lives on the default shard only.
    Unsharded,
}

/// The compiled rules of one sharded logical database.
#[derive(Debug, Clone)]
pub struct ShardingRules {
    /// Name of the `[sharding.NAME]` section.
    pub name: String,
    /// Shards, in config order (shard indexes refer to this list).
    pub shards: Vec<Shard>,
    /// Index of the shard holding unsharded tables.
    pub default_shard: usize,
    /// Sharded tables.
    pub tables: Vec<TableRule>,
    /// Broadcast tables (lower case).
    pub broadcast: Vec<String>,
    /// Most rows a merge may hold in memory (hashed GROUP BY, DISTINCT, sort of unsorted input).
    pub max_scatter_rows: u64,
    /// Largest `offset + limit` pushed to each shard for a cross-shard LIMIT.
    pub max_limit_rows: u64,
    /// This proxy's worker id for global ids (0..1023).
    pub worker_id: u16,
    /// Transactions over several shards commit with XA two-phase commit (`xa = true`).
    pub xa: bool,
    /// The table being resharded, if any (`reshard_to` in the config). `None` for every rules
    /// without a reshard: the statement path's one check (docs/sharding.md, "Resharding").
    pub resharding: Option<Box<Resharding>>,
}

/// A table being resharded: while it is, its writes go to both layouts (dual writes).
#[derive(Debug, Clone)]
pub struct Resharding {
    /// The logical table (lower case).
    pub table: String,
    /// The layout that does not serve reads: the new one while copying, the old one after the
    /// cut-over; renamed to [`Resharding::table`] so that a statement plans against it as is.
    pub mirror: TableRule,
    /// The new layout's own table rule name (`reshard_to`): written by the reshard only.
    pub target: String,
    /// Whether the new layout serves (`reshard_phase = "cutover"`): [`ShardingRules::tables`]
    /// then holds the new rule under the table's name and `mirror` the old one.
    pub new_serves: bool,
}

impl ShardingRules {
    /// What `table` is (names compare case-insensitively).
    pub fn table(&self, table: &str) -> TableKind<'_> {
        // Names are stored lower-cased; compare without allocating (every routed statement asks).
        if let Some(r) = self
            .tables
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(table))
        {
            TableKind::Sharded(r)
        } else if self.broadcast.iter().any(|b| b.eq_ignore_ascii_case(table)) {
            TableKind::Broadcast
        } else {
            TableKind::Unsharded
        }
    }

    /// Compiles a validated-shape config section (cross-references such as group names are checked
    /// by config validation; this checks the rule semantics).
    pub fn compile(s: &Sharding) -> Result<Self, RuleError> {
        if s.shards.is_empty() {
            return Err(RuleError::Config(
                "a sharded database needs at least one shard".into(),
            ));
        }
        let shards: Vec<Shard> = s
            .shards
            .iter()
            .map(|d| Shard {
                name: d.name.clone(),
                group: d.group.clone(),
                schema: d.schema.clone(),
            })
            .collect();
        let default_shard = match &s.default_shard {
            None => 0,
            Some(n) => shards.iter().position(|x| &x.name == n).ok_or_else(|| {
                RuleError::Config(format!("default_shard `{n}` is not one of the shards"))
            })?,
        };
        let mut tables = s
            .tables
            .iter()
            .map(|t| compile_table(t, shards.len()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut resharding = None;
        if let Some(t) = s.tables.iter().find(|t| t.reshard_to.is_some()) {
            let name = t.name.to_ascii_lowercase();
            let to = t.reshard_to.as_deref().unwrap_or_default();
            let find = |n: &str| tables.iter().position(|r| r.name.eq_ignore_ascii_case(n));
            let (Some(i), Some(j)) = (find(&name), find(to)) else {
                return Err(RuleError::Config(format!(
                    "table `{name}`: reshard_to `{to}` is not a table rule of this section"
                )));
            };
            let old = tables[i].clone();
            let mut new = tables[j].clone();
            reshard::check(
                reshard::Layout {
                    rule: &old,
                    shards: &shards,
                },
                reshard::Layout {
                    rule: &new,
                    shards: &shards,
                },
            )?;
            new.name = name.clone();
            let new_serves = t.reshard_phase.as_deref() == Some("cutover");
            let mirror = if new_serves {
                std::mem::replace(&mut tables[i], new)
            } else {
                new
            };
            resharding = Some(Box::new(Resharding {
                target: to.to_ascii_lowercase(),
                table: name,
                mirror,
                new_serves,
            }));
        }
        Ok(ShardingRules {
            name: s.name.clone(),
            shards,
            default_shard,
            tables,
            broadcast: s.broadcast.iter().map(|b| b.to_ascii_lowercase()).collect(),
            max_scatter_rows: s.max_scatter_rows,
            max_limit_rows: s.max_limit_rows,
            worker_id: s.worker_id,
            xa: s.xa,
            resharding,
        })
    }

    /// These rules with `rule` in place of the sharded table of the same name: the other
    /// layout of a table being resharded, for planning its dual write.
    pub fn with_rule(&self, rule: &TableRule) -> ShardingRules {
        let mut r = self.clone();
        r.resharding = None;
        for t in &mut r.tables {
            if t.name.eq_ignore_ascii_case(&rule.name) {
                *t = rule.clone();
            }
        }
        r
    }
}

/// Compiles one table rule for `shards` shards.
pub fn compile_table(t: &ShardTable, shards: usize) -> Result<TableRule, RuleError> {
    let name = t.name.to_ascii_lowercase();
    let physical = match &t.physical {
        Some(p) => expand_physical(p)?,
        None => vec![t.name.clone(); shards],
    };
    if t.physical.is_none() && t.partitions.is_some_and(|p| p as usize != shards) {
        return Err(RuleError::Config(format!(
            "table `{name}`: without `physical`, each shard holds one partition, so partitions must be {shards}"
        )));
    }
    let n = physical.len();
    if n == 0 || n > 65_536 {
        return Err(RuleError::Config(format!(
            "table `{name}`: 1 to 65536 physical tables expected"
        )));
    }
    let algorithm = match t.algorithm.as_str() {
        "hash" => Algorithm::Hash,
        "consistent_hash" => Algorithm::consistent_hash(n),
        "range" => {
            let b = t
                .boundaries
                .iter()
                .map(|s| {
                    s.trim().parse::<i128>().map_err(|_| {
                        RuleError::Config(format!(
                            "table `{name}`: boundary `{s}` is not an integer"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if b.windows(2).any(|w| w[0] >= w[1]) {
                return Err(RuleError::Config(format!(
                    "table `{name}`: boundaries must be strictly ascending"
                )));
            }
            if b.len() + 1 != n {
                return Err(RuleError::Config(format!(
                    "table `{name}`: {} boundaries make {} partitions but there are {n} physical tables",
                    b.len(),
                    b.len() + 1
                )));
            }
            Algorithm::Range { boundaries: b }
        }
        "date" => {
            let unit = match t.unit.as_deref().unwrap_or("month") {
                "day" => DateUnit::Day,
                "month" => DateUnit::Month,
                "year" => DateUnit::Year,
                u => {
                    return Err(RuleError::Config(format!(
                        "table `{name}`: unknown date unit `{u}`; expected day, month or year"
                    )));
                }
            };
            let start = t.start.as_deref().ok_or_else(|| {
                RuleError::Config(format!(
                    "table `{name}`: a date rule needs `start` (YYYY-MM-DD)"
                ))
            })?;
            Algorithm::date(unit, start)?
        }
        "list" => {
            let lists: Vec<Vec<KeyValue>> = t
                .lists
                .iter()
                .map(|l| {
                    l.split(',')
                        .map(|v| KeyValue::from_text(v.trim()))
                        .collect()
                })
                .collect();
            if lists.len() != n {
                return Err(RuleError::Config(format!(
                    "table `{name}`: {} lists for {n} physical tables",
                    lists.len()
                )));
            }
            Algorithm::List { lists }
        }
        other => {
            return Err(RuleError::Config(format!(
                "table `{name}`: unknown algorithm `{other}`; expected hash, consistent_hash, range, date or list"
            )));
        }
    };
    if !t.gene_keys.is_empty() && algorithm != Algorithm::Hash {
        return Err(RuleError::Config(format!(
            "table `{name}`: gene_keys need algorithm = \"hash\" (the gene is key mod partitions)"
        )));
    }
    Ok(TableRule {
        name,
        key: t.key.to_ascii_lowercase(),
        gene_keys: t.gene_keys.iter().map(|g| g.to_ascii_lowercase()).collect(),
        algorithm,
        physical,
        auto_id: t.auto_id.as_ref().map(|a| a.to_ascii_lowercase()),
        shards,
    })
}

/// Expands `orders_{0000..0063}` (zero-padded to the width of the first number) or a plain name.
pub fn expand_physical(pattern: &str) -> Result<Vec<String>, RuleError> {
    let bad = || {
        RuleError::Config(format!(
            "invalid physical pattern `{pattern}`; expected NAME or PREFIX{{FIRST..LAST}}SUFFIX such as orders_{{0000..0063}}"
        ))
    };
    let Some((prefix, rest)) = pattern.split_once('{') else {
        return if pattern.is_empty() || pattern.contains('}') {
            Err(bad())
        } else {
            Ok(vec![pattern.to_string()])
        };
    };
    let (range, suffix) = rest.split_once('}').ok_or_else(bad)?;
    let (a, b) = range.split_once("..").ok_or_else(bad)?;
    let width = a.len();
    let (first, last): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if first > last || last - first >= 65_536 || suffix.contains('{') {
        return Err(bad());
    }
    Ok((first..=last)
        .map(|i| format!("{prefix}{i:0width$}{suffix}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(alg: &str) -> ShardTable {
        ShardTable {
            name: "Orders".into(),
            key: "USER_ID".into(),
            algorithm: alg.into(),
            physical: Some("orders_{00..07}".into()),
            boundaries: Vec::new(),
            lists: Vec::new(),
            unit: None,
            start: None,
            partitions: None,
            gene_keys: Vec::new(),
            auto_id: None,
            reshard_to: None,
            reshard_phase: None,
            span: 0..0,
        }
    }

    #[test]
    fn physical_patterns() {
        let v = expand_physical("orders_{0000..0063}").unwrap_or_default();
        assert_eq!(v.len(), 64);
        assert_eq!(v[0], "orders_0000");
        assert_eq!(v[63], "orders_0063");
        assert_eq!(expand_physical("t").ok(), Some(vec!["t".to_string()]));
        assert!(expand_physical("t_{5..1}").is_err());
        assert!(expand_physical("t_{a..b}").is_err());
    }

    #[test]
    fn blocks_of_partitions_per_shard() {
        let r = compile_table(&table("hash"), 4);
        let r = r.unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(r.name, "orders");
        assert_eq!(r.key, "user_id");
        let shards: Vec<usize> = (0..8).map(|p| r.shard_of(p)).collect();
        assert_eq!(shards, vec![0, 0, 1, 1, 2, 2, 3, 3]);
    }

    #[test]
    fn rule_errors() {
        let mut t = table("range");
        t.boundaries = vec!["10".into()];
        let e = compile_table(&t, 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("1 boundaries make 2 partitions"), "{e}");
        let t = table("nope");
        assert!(compile_table(&t, 2).is_err());
        let mut t = table("range");
        t.gene_keys = vec!["order_no".into()];
        t.boundaries = (1..8).map(|i| i.to_string()).collect();
        let e = compile_table(&t, 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("gene_keys"), "{e}");
        let mut t = table("date");
        t.unit = Some("week".into());
        t.start = Some("2024-01-01".into());
        assert!(compile_table(&t, 2).is_err());
    }
    #[test]
    fn resharding_rules_by_phase() {
        let mut old = table("hash");
        old.physical = Some("orders_{0..3}".into());
        old.reshard_to = Some("orders_v2".into());
        old.reshard_phase = Some("copy".into());
        let mut new = table("hash");
        new.name = "orders_v2".into();
        new.physical = Some("orders_v2_{0..7}".into());
        let section = |tables: Vec<ShardTable>| crate::config::Sharding {
            name: "app".into(),
            listener: "db".into(),
            shards: (0..2)
                .map(|i| crate::config::ShardDef {
                    name: format!("s{i}"),
                    group: "g".into(),
                    schema: format!("app_{i}"),
                    span: 0..0,
                })
                .collect(),
            default_shard: None,
            max_scatter_rows: 10,
            max_limit_rows: 10,
            worker_id: 0,
            xa: false,
            xa_resolve_interval: std::time::Duration::from_secs(5),
            xa_resolve_grace: std::time::Duration::from_secs(15),
            tables,
            broadcast: Vec::new(),
            span: 0..0,
        };
        let r = ShardingRules::compile(&section(vec![old.clone(), new.clone()]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let Some(rs) = r.resharding.as_deref() else {
            unreachable!("no resharding")
        };
        let TableKind::Sharded(serving) = r.table("orders") else {
            unreachable!("orders not sharded")
        };
        // Copying: the old layout serves, the new one (named `orders`) is the mirror.
        assert_eq!(serving.partitions(), 4);
        assert_eq!(
            (rs.mirror.name.as_str(), rs.mirror.partitions()),
            ("orders", 8)
        );
        assert!(!rs.new_serves);
        let m = r.with_rule(&rs.mirror);
        assert!(m.resharding.is_none());
        assert!(
            matches!(m.table("orders"), TableKind::Sharded(t) if t.physical[7] == "orders_v2_7")
        );
        // Cut over: the roles swap.
        old.reshard_phase = Some("cutover".into());
        let r = ShardingRules::compile(&section(vec![old.clone(), new.clone()]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(matches!(r.table("orders"), TableKind::Sharded(t) if t.partitions() == 8));
        assert!(
            r.resharding
                .as_deref()
                .is_some_and(|x| x.new_serves && x.mirror.physical[0] == "orders_0")
        );
        // Without the flag nothing is resharding; a new layout sharing the old tables is refused.
        assert!(
            ShardingRules::compile(&section(vec![table("hash")]))
                .is_ok_and(|r| r.resharding.is_none())
        );
        new.physical = Some("orders_{0..7}".into());
        assert!(ShardingRules::compile(&section(vec![old, new])).is_err());
    }
}
