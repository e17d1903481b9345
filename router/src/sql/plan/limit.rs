//! `Limit`: OFFSET/LIMIT applied to a merged stream (shards were asked for `offset + count` rows).

use codec::mysql::ColumnDefinition;

use super::exec::{Row, RowSource};
use super::{Plan, ShardError};

/// Skip `offset` rows, then pass at most `count`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return.
    pub count: u64,
    /// Input.
    pub input: Box<Plan>,
}

impl Limit {
    /// Applies the limit to `input`.
    pub fn stream(&self, input: Box<dyn RowSource>) -> LimitRows {
        LimitRows {
            input,
            skip: self.offset,
            left: self.count,
        }
    }
}

/// The running limit.
pub struct LimitRows {
    input: Box<dyn RowSource>,
    skip: u64,
    left: u64,
}

impl RowSource for LimitRows {
    fn columns(&self) -> &[ColumnDefinition] {
        self.input.columns()
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        while self.skip > 0 {
            if self.input.next_row()?.is_none() {
                return Ok(None);
            }
            self.skip -= 1;
        }
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.input.next_row()
    }
}
