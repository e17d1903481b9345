//! Executing a plan: the cursor-like traits the merge primitives read from, and the driver that
//! turns a [`Plan`] into a row stream or a write count. Pure: shards are reached through a
//! [`ShardRunner`] that the proxy implements (and tests implement in memory).

use std::collections::VecDeque;

use codec::mysql::{ColumnDefinition, Value};

use super::{Plan, ShardError, Unit};

/// One result row.
pub type Row = Vec<Value>;

/// A stream of rows with their column definitions.
pub trait RowSource {
    /// The columns of every row.
    fn columns(&self) -> &[ColumnDefinition];
    /// The next row, or `None` at the end.
    fn next_row(&mut self) -> Result<Option<Row>, ShardError>;
}

/// Rows held in memory (a shard's result, or a materialised merge).
#[derive(Debug, Clone, Default)]
pub struct VecRows {
    /// Column definitions.
    pub columns: Vec<ColumnDefinition>,
    /// Remaining rows.
    pub rows: VecDeque<Row>,
}

impl VecRows {
    /// Rows over `columns`.
    pub fn new(columns: Vec<ColumnDefinition>, rows: Vec<Row>) -> Self {
        Self {
            columns,
            rows: rows.into(),
        }
    }
}

impl RowSource for VecRows {
    fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        Ok(self.rows.pop_front())
    }
}

/// What a shard answered to one unit.
#[derive(Debug)]
pub enum ShardResult {
    /// A result set.
    Rows(Box<dyn RowSource>),
    /// An OK packet.
    Affected {
        /// Affected rows.
        rows: u64,
        /// Last insert id (0 if none).
        last_insert_id: u64,
    },
}

impl std::fmt::Debug for dyn RowSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowSource({} columns)", self.columns().len())
    }
}

/// Runs units on shards.
pub trait ShardRunner {
    /// Runs `unit` on its shard.
    fn run(&mut self, unit: &Unit) -> Result<ShardResult, ShardError>;
    /// A new global id (for `SELECT furrow_next_id()`).
    fn next_id(&mut self) -> u64;
}

/// Memory limits applied while merging.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    /// Most rows a merge may hold (groups, distinct rows, rows to sort).
    pub max_rows: u64,
}

/// The result of a plan.
pub enum Output {
    /// Rows for the client.
    Rows(Box<dyn RowSource>),
    /// A write's summary.
    Affected {
        /// Affected rows.
        rows: u64,
        /// Last insert id (0 if none).
        last_insert_id: u64,
    },
}

/// Executes `plan`.
pub fn execute(
    plan: &Plan,
    runner: &mut dyn ShardRunner,
    limits: ExecLimits,
) -> Result<Output, ShardError> {
    Ok(match plan {
        Plan::Route(r) => match runner.run(&r.unit)? {
            ShardResult::Rows(rows) => Output::Rows(rows),
            ShardResult::Affected {
                rows,
                last_insert_id,
            } => Output::Affected {
                rows,
                last_insert_id,
            },
        },
        Plan::Scatter(s) => s.execute(runner)?,
        Plan::MergeSort(m) => Output::Rows(Box::new(m.execute(runner)?)),
        Plan::NextId => {
            use codec::mysql::consts::{charset, column_flag, column_type};
            let col = ColumnDefinition::new(
                "furrow_next_id()",
                column_type::LONGLONG,
                charset::BINARY,
                20,
                column_flag::BINARY | column_flag::UNSIGNED | column_flag::NOT_NULL,
                0,
            );
            Output::Rows(Box::new(VecRows::new(
                vec![col],
                vec![vec![Value::UInt(runner.next_id())]],
            )))
        }
        Plan::Union(u) => {
            let mut inputs = Vec::with_capacity(u.inputs.len());
            for p in &u.inputs {
                let Output::Rows(rows) = execute(p, runner, limits)? else {
                    return Err(ShardError::Unsupported("a UNION over a write".into()));
                };
                inputs.push(rows);
            }
            Output::Rows(Box::new(super::UnionRows::new(inputs, &u.compared)?))
        }
        inner => {
            let child = inner
                .child()
                .ok_or_else(|| ShardError::Unsupported("empty plan".into()))?; // ok: every other variant has a child
            let Output::Rows(input) = execute(child, runner, limits)? else {
                return Err(ShardError::Unsupported("a merge over a write".into()));
            };
            Output::Rows(match inner {
                Plan::Aggregate(a) => a.rows(input, limits)?,
                Plan::Filter(f) => Box::new(f.stream(input)),
                Plan::Project(p) => Box::new(p.stream(input)),
                Plan::Sort(s) => Box::new(s.sort(input, limits)?),
                Plan::Limit(l) => Box::new(l.stream(input)),
                Plan::Distinct(d) => Box::new(d.stream(input, limits)),
                Plan::Trim(t) => Box::new(t.stream(input)),
                _ => input,
            })
        }
    })
}

/// Collects a source into memory (tests, small results).
pub fn collect(
    mut src: Box<dyn RowSource>,
) -> Result<(Vec<ColumnDefinition>, Vec<Row>), ShardError> {
    let cols = src.columns().to_vec();
    let mut rows = Vec::new();
    while let Some(r) = src.next_row()? {
        rows.push(r);
    }
    Ok((cols, rows))
}
