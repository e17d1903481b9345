//! `Distinct`: drops rows equal to an earlier one (as MySQL compares them: strings by their column's
//! collation, refused when the proxy does not know it), remembering at most the budget of distinct
//! rows.

use std::collections::HashSet;

use codec::mysql::ColumnDefinition;

use super::aggregate::group_key;
use super::exec::{ExecLimits, Row, RowSource};
use super::{Plan, ShardError};

/// Removes duplicate rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Distinct {
    /// Input.
    pub input: Box<Plan>,
}

impl Distinct {
    /// Deduplicates `input`.
    pub fn stream(&self, input: Box<dyn RowSource>, limits: ExecLimits) -> DistinctRows {
        DistinctRows {
            input,
            seen: HashSet::new(),
            max: limits.max_rows,
        }
    }
}

/// The running deduplication.
pub struct DistinctRows {
    input: Box<dyn RowSource>,
    seen: HashSet<Vec<u8>>,
    max: u64,
}

impl RowSource for DistinctRows {
    fn columns(&self) -> &[ColumnDefinition] {
        self.input.columns()
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        while let Some(r) = self.input.next_row()? {
            let idx: Vec<usize> = (0..r.len()).collect();
            let key = group_key(&r, &idx, self.input.columns())?;
            if self.seen.contains(&key) {
                continue;
            }
            if self.seen.len() as u64 >= self.max {
                return Err(ShardError::MemoryBudget(self.max));
            }
            self.seen.insert(key);
            return Ok(Some(r));
        }
        Ok(None)
    }
}
