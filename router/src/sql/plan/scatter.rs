//! `Scatter`: the same statement (rewritten per physical table) on many shards; rows are
//! concatenated in unit order, write counts are merged.

use codec::mysql::ColumnDefinition;

use super::collate::{self, CollationOf};
use super::exec::{Output, Row, RowSource, ShardResult, ShardRunner};
use super::{ShardError, Unit};

/// How the OK packets of a scattered write combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMerge {
    /// Sharded data: affected rows add up; the largest insert id wins.
    Sum,
    /// Copies (broadcast tables, DDL): every shard did the same; report the first.
    First,
}

/// Many units, run in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scatter {
    /// Units, one per physical table touched.
    pub units: Vec<Unit>,
    /// For writes: how results combine. `None` for reads.
    pub write: Option<WriteMerge>,
    /// Reads merged by key: the columns whose collation the helper columns at the end of the
    /// rows name (see [`super::collate`]).
    pub collations: Vec<CollationOf>,
}

impl Scatter {
    /// A read of `units` whose rows are not merged by key.
    pub fn read(units: Vec<Unit>) -> Self {
        Self {
            units,
            write: None,
            collations: Vec::new(),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let mut d = match self.write {
            None => format!("units={}", self.units.len()),
            Some(WriteMerge::Sum) => format!("units={} write=sum", self.units.len()),
            Some(WriteMerge::First) => format!("units={} write=first", self.units.len()),
        };
        if !self.collations.is_empty() {
            d.push(' ');
            d.push_str(&collate::describe(&self.collations));
        }
        d
    }

    /// Runs every unit and returns each one's rows (with the collations of the merge keys
    /// resolved, see [`super::collate`]).
    pub fn sources(
        &self,
        runner: &mut dyn ShardRunner,
    ) -> Result<Vec<Box<dyn RowSource>>, ShardError> {
        let sources = self
            .units
            .iter()
            .map(|u| match runner.run(u)? {
                ShardResult::Rows(r) => Ok(r),
                ShardResult::Affected { .. } => Err(ShardError::Backend {
                    shard: u.shard.to_string(),
                    message: "expected rows, got an OK packet".into(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        collate::with_collations(sources, &self.collations)
    }

    /// Executes the scatter.
    pub fn execute(&self, runner: &mut dyn ShardRunner) -> Result<Output, ShardError> {
        let Some(mode) = self.write else {
            return Ok(Output::Rows(Box::new(Concat::new(self.sources(runner)?))));
        };
        let (mut total, mut last_id) = (0u64, 0u64);
        for (i, u) in self.units.iter().enumerate() {
            if let ShardResult::Affected {
                rows,
                last_insert_id,
            } = runner.run(u)?
            {
                if mode == WriteMerge::Sum || i == 0 {
                    total += rows;
                }
                last_id = last_id.max(last_insert_id);
            }
        }
        Ok(Output::Affected {
            rows: total,
            last_insert_id: last_id,
        })
    }
}

/// Shard streams one after the other.
pub struct Concat {
    sources: Vec<Box<dyn RowSource>>,
    current: usize,
    columns: Vec<ColumnDefinition>,
}

impl Concat {
    /// Concatenates `sources` (columns from the first).
    pub fn new(sources: Vec<Box<dyn RowSource>>) -> Self {
        let columns = sources
            .first()
            .map(|s| s.columns().to_vec())
            .unwrap_or_default();
        Self {
            sources,
            current: 0,
            columns,
        }
    }
}

impl RowSource for Concat {
    fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        while let Some(s) = self.sources.get_mut(self.current) {
            if let Some(r) = s.next_row()? {
                return Ok(Some(r));
            }
            self.current += 1;
        }
        Ok(None)
    }
}
