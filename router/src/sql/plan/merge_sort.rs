//! `MergeSort`: a k-way streaming merge of shard results that are each sorted by the same keys
//! (the shards ran the ORDER BY). Holds one row per shard; values compare as MariaDB orders them,
//! strings by their column's collation: a key over a collation the proxy does not know is refused.

use std::cmp::Ordering;

use codec::mysql::{Collation, ColumnDefinition, compare_values};

use super::ShardError;
use super::exec::{Row, RowSource, ShardRunner};
use super::scatter::Scatter;

/// One ORDER BY key: a column of the rows and its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    /// Column index (counted from the last column when `from_end`, for rows of `SELECT *`).
    pub col: usize,
    /// Descending.
    pub desc: bool,
    /// `col` counts back from the last column (0 = last).
    pub from_end: bool,
}

impl SortKey {
    /// A key on column `col` from the start.
    pub fn new(col: usize, desc: bool) -> Self {
        Self {
            col,
            desc,
            from_end: false,
        }
    }

    /// The column index in a row of `width` columns.
    pub fn index(&self, width: usize) -> usize {
        column_index(self.col, self.from_end, width)
    }
}

/// Column `col` of a row of `width` columns, counted from the start or (`from_end`, for the
/// helper columns after a `*`) from the end.
pub(crate) fn column_index(col: usize, from_end: bool, width: usize) -> usize {
    if from_end {
        width.saturating_sub(col + 1)
    } else {
        col
    }
}

/// Renders keys as `[#2 DESC, #0]`.
pub fn keys_text(keys: &[SortKey]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            let c = if k.from_end {
                format!("-{}", k.col + 1)
            } else {
                k.col.to_string()
            };
            format!("#{c}{}", if k.desc { " DESC" } else { "" })
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// How column `i` of `cols` compares, for `what` (named in the refusal): string columns by their
/// collation, refused with [`ShardError::Unsupported`] when the proxy does not know it (a wrong
/// order or a split group would be a wrong answer). A column that is not there compares bytewise.
pub fn key_collation(
    cols: &[ColumnDefinition],
    i: usize,
    what: &str,
) -> Result<Collation, ShardError> {
    let Some(c) = cols.get(i) else {
        return Ok(Collation::Binary);
    };
    Collation::of_column(c).map_err(|e| {
        ShardError::Unsupported(format!(
            "{what} over column `{}` with {e}: the proxy does not know how that collation compares",
            String::from_utf8_lossy(&c.name)
        ))
    })
}

/// Refuses `keys` when one of them is a string column of an unknown collation.
pub fn check_key_collations(
    keys: &[SortKey],
    cols: &[ColumnDefinition],
    what: &str,
) -> Result<(), ShardError> {
    for k in keys {
        key_collation(cols, k.index(cols.len()), what)?;
    }
    Ok(())
}

/// Orders two rows by `keys` (check them with [`check_key_collations`] first).
pub fn compare_rows(a: &Row, b: &Row, keys: &[SortKey], cols: &[ColumnDefinition]) -> Ordering {
    for k in keys {
        let i = k.index(cols.len());
        let (Some(x), Some(y), Some(c)) = (a.get(i), b.get(i), cols.get(i)) else {
            continue;
        };
        let o = compare_values(x, y, c);
        let o = if k.desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// The index of the head row that comes first by `keys` (ties: the lowest index), skipping
/// exhausted inputs (`None`); `None` when every input is exhausted. The one choice of a k-way merge,
/// shared by the pull form ([`MergeRows`]) and the streaming executor (`super::stream`). A linear
/// scan: unit counts are small, and it keeps ties in unit order.
pub fn first_head<'r>(
    heads: impl IntoIterator<Item = Option<&'r Row>>,
    keys: &[SortKey],
    cols: &[ColumnDefinition],
) -> Option<usize> {
    let mut best: Option<(usize, &Row)> = None;
    for (i, h) in heads.into_iter().enumerate() {
        let Some(row) = h else { continue };
        match best {
            Some((_, b)) if compare_rows(row, b, keys, cols) != Ordering::Less => {}
            _ => best = Some((i, row)),
        }
    }
    best.map(|(i, _)| i)
}

/// Merge the sorted results of a scatter.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSort {
    /// The shards' units (each returns sorted rows).
    pub input: Scatter,
    /// The sort keys.
    pub keys: Vec<SortKey>,
}

impl MergeSort {
    pub(crate) fn describe(&self) -> String {
        format!("{} {}", keys_text(&self.keys), self.input.describe())
    }

    /// Runs the units and merges their streams.
    pub fn execute(&self, runner: &mut dyn ShardRunner) -> Result<MergeRows, ShardError> {
        MergeRows::new(self.input.sources(runner)?, self.keys.clone())
    }
}

/// The running k-way merge.
pub struct MergeRows {
    sources: Vec<Box<dyn RowSource>>,
    heads: Vec<Option<Row>>,
    keys: Vec<SortKey>,
    columns: Vec<ColumnDefinition>,
}

impl MergeRows {
    /// Starts merging sorted `sources`.
    pub fn new(
        mut sources: Vec<Box<dyn RowSource>>,
        keys: Vec<SortKey>,
    ) -> Result<Self, ShardError> {
        let columns = sources
            .first()
            .map(|s| s.columns().to_vec())
            .unwrap_or_default();
        check_key_collations(&keys, &columns, "ORDER BY")?;
        let heads = sources
            .iter_mut()
            .map(|s| s.next_row())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            sources,
            heads,
            keys,
            columns,
        })
    }
}

impl RowSource for MergeRows {
    fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        let Some(b) = first_head(
            self.heads.iter().map(Option::as_ref),
            &self.keys,
            &self.columns,
        ) else {
            return Ok(None);
        };
        let next = match self.sources.get_mut(b) {
            Some(s) => s.next_row()?,
            None => None,
        };
        Ok(self
            .heads
            .get_mut(b)
            .and_then(|h| std::mem::replace(h, next)))
    }
}
