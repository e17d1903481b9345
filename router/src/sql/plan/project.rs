//! Row-at-a-time primitives over merged rows: `Filter` (HAVING), `Project` (computed output
//! columns, e.g. AVG = SUM/COUNT), `Sort` (in memory, bounded) and `Trim` (drop helper columns).

use codec::mysql::ColumnDefinition;

use super::eval::OutExpr;
use super::exec::{ExecLimits, Row, RowSource, VecRows};
use super::merge_sort::{SortKey, compare_rows};
use super::{Plan, ShardError};

/// Keeps rows where the predicate holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The predicate.
    pub predicate: OutExpr,
    /// Input.
    pub input: Box<Plan>,
}

impl Filter {
    /// Filters `input`.
    pub fn stream(&self, input: Box<dyn RowSource>) -> FilterRows {
        let refused = self.predicate.check(input.columns()).err();
        FilterRows {
            input,
            predicate: self.predicate.clone(),
            refused,
        }
    }
}

/// The running filter.
pub struct FilterRows {
    input: Box<dyn RowSource>,
    predicate: OutExpr,
    /// Why the predicate cannot be evaluated exactly over these columns (told at the first row).
    refused: Option<ShardError>,
}

impl RowSource for FilterRows {
    fn columns(&self) -> &[ColumnDefinition] {
        self.input.columns()
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        if let Some(e) = &self.refused {
            return Err(e.clone());
        }
        while let Some(r) = self.input.next_row()? {
            if self.predicate.holds(&r, self.input.columns())? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }
}

/// Computes output columns from input rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// One expression per output column.
    pub exprs: Vec<OutExpr>,
    /// Output column names.
    pub names: Vec<String>,
    /// Input.
    pub input: Box<Plan>,
}

impl Project {
    pub(crate) fn describe(&self) -> String {
        let parts: Vec<String> = self
            .exprs
            .iter()
            .zip(&self.names)
            .map(|(e, n)| format!("{e} AS `{n}`"))
            .collect();
        format!("[{}]", parts.join(", "))
    }

    /// Projects `input`.
    pub fn stream(&self, input: Box<dyn RowSource>) -> ProjectRows {
        let columns = self
            .exprs
            .iter()
            .zip(&self.names)
            .map(|(e, n)| e.column(input.columns(), n))
            .collect();
        let refused = self
            .exprs
            .iter()
            .find_map(|e| e.check(input.columns()).err());
        ProjectRows {
            input,
            exprs: self.exprs.clone(),
            columns,
            refused,
        }
    }
}

/// The running projection.
pub struct ProjectRows {
    input: Box<dyn RowSource>,
    exprs: Vec<OutExpr>,
    columns: Vec<ColumnDefinition>,
    /// Why an expression cannot be evaluated exactly over these columns (told at the first row).
    refused: Option<ShardError>,
}

impl RowSource for ProjectRows {
    fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        if let Some(e) = &self.refused {
            return Err(e.clone());
        }
        let Some(r) = self.input.next_row()? else {
            return Ok(None);
        };
        let cols = self.input.columns();
        let out = self
            .exprs
            .iter()
            .map(|e| e.output(&r, cols))
            .collect::<Result<Row, ShardError>>()?;
        Ok(Some(out))
    }
}

/// Sorts all input rows in memory (at most the budget).
#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    /// Sort keys.
    pub keys: Vec<SortKey>,
    /// Input.
    pub input: Box<Plan>,
}

impl Sort {
    /// Reads and sorts `input`.
    pub fn sort(
        &self,
        mut input: Box<dyn RowSource>,
        limits: ExecLimits,
    ) -> Result<VecRows, ShardError> {
        let columns = input.columns().to_vec();
        super::merge_sort::check_key_collations(&self.keys, &columns, "ORDER BY")?;
        let mut rows = Vec::new();
        while let Some(r) = input.next_row()? {
            if rows.len() as u64 >= limits.max_rows {
                return Err(ShardError::MemoryBudget(limits.max_rows));
            }
            rows.push(r);
        }
        rows.sort_by(|a, b| compare_rows(a, b, &self.keys, &columns));
        Ok(VecRows::new(columns, rows))
    }
}

/// Drops the last `drop` columns (helper columns added for sorting or grouping).
#[derive(Debug, Clone, PartialEq)]
pub struct Trim {
    /// Columns dropped from the end.
    pub drop: usize,
    /// Input.
    pub input: Box<Plan>,
}

impl Trim {
    /// Trims `input`.
    pub fn stream(&self, input: Box<dyn RowSource>) -> TrimRows {
        let keep = input.columns().len().saturating_sub(self.drop);
        let columns = input.columns()[..keep].to_vec();
        TrimRows {
            input,
            keep,
            columns,
        }
    }
}

/// The running trim.
pub struct TrimRows {
    input: Box<dyn RowSource>,
    keep: usize,
    columns: Vec<ColumnDefinition>,
}

impl RowSource for TrimRows {
    fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        Ok(self.input.next_row()?.map(|mut r| {
            r.truncate(self.keep);
            r
        }))
    }
}
