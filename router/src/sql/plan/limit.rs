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
            limit: LimitCounter::new(self.offset, self.count),
        }
    }
}

/// OFFSET/LIMIT counted row by row: the one implementation behind the pull form ([`LimitRows`]),
/// the group stream (`super::GroupStream`) and the streaming executor's sorted read
/// (`super::stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitCounter {
    skip: u64,
    left: u64,
}

/// What happens to the next row under a [`LimitCounter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within the OFFSET: dropped.
    Skip,
    /// Passed on.
    Pass,
    /// Past the LIMIT: dropped, and no later row passes either.
    Stop,
}

impl LimitCounter {
    /// Skips `offset` rows, then passes at most `count` (`u64::MAX`: no limit).
    pub fn new(offset: u64, count: u64) -> Self {
        Self {
            skip: offset,
            left: count,
        }
    }

    /// Counts the next row.
    pub fn admit(&mut self) -> Admit {
        if self.skip > 0 {
            self.skip -= 1;
            Admit::Skip
        } else if self.left == 0 {
            Admit::Stop
        } else {
            self.left -= 1;
            Admit::Pass
        }
    }

    /// Whether no further row can pass: the input need not be read any more.
    pub fn is_done(&self) -> bool {
        self.left == 0
    }
}

/// The running limit.
pub struct LimitRows {
    input: Box<dyn RowSource>,
    limit: LimitCounter,
}

impl RowSource for LimitRows {
    fn columns(&self) -> &[ColumnDefinition] {
        self.input.columns()
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        loop {
            if self.limit.is_done() {
                return Ok(None);
            }
            let Some(row) = self.input.next_row()? else {
                return Ok(None);
            };
            match self.limit.admit() {
                Admit::Skip => {}
                Admit::Pass => return Ok(Some(row)),
                Admit::Stop => return Ok(None),
            }
        }
    }
}
