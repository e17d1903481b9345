//! Each merge key's real collation, learned from the shards. Under a normal login a server puts the
//! connection's result collation (`utf8mb4_general_ci` for Furrow's backend connections) in every
//! text column's definition, not the column's own: a `utf8mb4_unicode_ci`, `utf8mb4_bin` or
//! `latin1` column would merge as `general_ci`. So for every key a merge compares (ORDER BY keys
//! of a merge sort, group keys, DISTINCT and MIN/MAX arguments) the planner appends a helper
//! column `COLLATION(<the key's text>)` to the units' select list: the server derives it exactly
//! as it derives the key's own comparisons, computed expressions included. Before a merge reads
//! the column definitions, [`resolve`] reads the helpers of each unit's first row and sets the
//! described columns' [`ColumnDefinition::compare_collation`]; `charset` (what clients see, and
//! how the values are encoded) stays.
//!
//! The helper columns are the last columns of the unit rows, one per [`CollationOf`] in order;
//! `Trim` (or the `Project` over an aggregate) drops them before rows reach the client.

use codec::mysql::{Collation, ColumnDefinition, Value};

use super::ShardError;
use super::exec::{Row, RowSource};

/// A column whose collation a helper column `COLLATION(...)` at the end of the unit rows names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollationOf {
    /// The described column (counted back from the last column when `from_end`, 0 = last).
    pub col: usize,
    /// `col` counts from the end (rows of `SELECT *`).
    pub from_end: bool,
}

impl CollationOf {
    /// A probe of column `col` counted from the start.
    pub fn new(col: usize) -> Self {
        Self {
            col,
            from_end: false,
        }
    }

    /// The described column's index in a row of `width` columns.
    pub fn index(&self, width: usize) -> usize {
        super::merge_sort::column_index(self.col, self.from_end, width)
    }
}

/// Renders probes as `collate=[#0, #-2]` (the described columns, in helper order).
pub fn describe(probes: &[CollationOf]) -> String {
    let parts: Vec<String> = probes
        .iter()
        .map(|p| {
            if p.from_end {
                format!("#-{}", p.col + 1)
            } else {
                format!("#{}", p.col)
            }
        })
        .collect();
    format!("collate=[{}]", parts.join(", "))
}

/// The units' column definitions `cols` with the collations named by the helper columns of
/// `first_rows` (each unit's first row; units without rows say nothing). Refused (ERR 1235) when
/// a collation is one the proxy does not compare by, when the values sent cannot be converted to
/// its character set exactly, or when the units disagree.
pub fn resolve(
    probes: &[CollationOf],
    cols: &[ColumnDefinition],
    first_rows: &[&[Value]],
) -> Result<Vec<ColumnDefinition>, ShardError> {
    let mut out = cols.to_vec();
    let width = cols.len();
    let first_helper = width.saturating_sub(probes.len());
    for (n, p) in probes.iter().enumerate() {
        let helper = first_helper + n;
        let i = p.index(width);
        let col_name = cols.get(i).map_or_else(String::new, |c| {
            String::from_utf8_lossy(&c.name).into_owned()
        });
        let mut name: Option<&[u8]> = None;
        for row in first_rows {
            let this = match row.get(helper) {
                Some(Value::Bytes(b)) => b.as_ref(),
                other => {
                    return Err(ShardError::Unsupported(format!(
                        "the collation of `{col_name}` came back as {other:?}"
                    )));
                }
            };
            match name {
                Some(seen) if !seen.eq_ignore_ascii_case(this) => {
                    return Err(ShardError::Unsupported(format!(
                        "merging `{col_name}`: the shards compare it by different collations \
                         ({} and {})",
                        String::from_utf8_lossy(seen),
                        String::from_utf8_lossy(this)
                    )));
                }
                _ => name = Some(this),
            }
        }
        let (Some(name), Some(def)) = (name, out.get_mut(i)) else {
            continue;
        };
        let name = String::from_utf8_lossy(name);
        let id = Collation::id_of_name(&name).ok_or_else(|| {
            ShardError::Unsupported(format!(
                "ORDER BY, GROUP BY, DISTINCT or MIN/MAX across shards over `{col_name}` with \
                 collation {name} (the proxy does not know how that collation compares)"
            ))
        })?;
        if Collation::over(id, def.charset).is_none() {
            return Err(ShardError::Unsupported(format!(
                "ORDER BY, GROUP BY, DISTINCT or MIN/MAX across shards over `{col_name}` with \
                 collation {name}, read through a connection with collation id {} (the proxy \
                 does not convert between those character sets)",
                def.charset
            )));
        }
        def.compare_collation = Some(id);
    }
    Ok(out)
}

/// A unit's rows with the collations resolved: its first row read ahead, and the column
/// definitions of all units (see [`with_collations`]).
struct Resolved {
    inner: Box<dyn RowSource>,
    first: Option<Row>,
    columns: Vec<ColumnDefinition>,
}

impl RowSource for Resolved {
    fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }
    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        match self.first.take() {
            Some(r) => Ok(Some(r)),
            None => self.inner.next_row(),
        }
    }
}

/// `sources` (the units of one scatter) with the collations of `probes` resolved from their
/// first rows (read ahead: one row per unit, which a merge reads first anyway). Unchanged when
/// there are no probes.
pub fn with_collations(
    mut sources: Vec<Box<dyn RowSource>>,
    probes: &[CollationOf],
) -> Result<Vec<Box<dyn RowSource>>, ShardError> {
    if probes.is_empty() {
        return Ok(sources);
    }
    let firsts = sources
        .iter_mut()
        .map(|s| s.next_row())
        .collect::<Result<Vec<_>, _>>()?;
    let cols = sources
        .first()
        .map(|s| s.columns().to_vec())
        .unwrap_or_default();
    let rows: Vec<&[Value]> = firsts.iter().flatten().map(Vec::as_slice).collect();
    let columns = resolve(probes, &cols, &rows)?;
    Ok(sources
        .into_iter()
        .zip(firsts)
        .map(|(inner, first)| {
            Box::new(Resolved {
                inner,
                first,
                columns: columns.clone(),
            }) as Box<dyn RowSource>
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::plan::exec::VecRows;
    use codec::mysql::consts::column_type;

    fn text(name: &str) -> ColumnDefinition {
        ColumnDefinition::new(name, column_type::VAR_STRING, 45, 80, 0, 0)
    }

    fn s(v: &str) -> Value {
        Value::Bytes(bytes::Bytes::copy_from_slice(v.as_bytes()))
    }

    #[test]
    fn helpers_set_the_compare_collation_and_keep_the_charset() {
        let cols = vec![text("a"), text("b"), text("c1"), text("c2")];
        let probes = [CollationOf::new(0), CollationOf::new(1)];
        let row = [
            s("x"),
            s("y"),
            s("utf8mb4_unicode_ci"),
            s("latin1_swedish_ci"),
        ];
        let out = resolve(&probes, &cols, &[&row, &row]).unwrap();
        assert_eq!(out[0].compare_collation, Some(224));
        assert_eq!(out[1].compare_collation, Some(8));
        assert_eq!(out[0].charset, 45);
        assert_eq!(
            Collation::of_column(&out[1]),
            Ok(Collation::Latin1SwedishCiOverUtf8)
        );
        // No rows: nothing learned, nothing to compare.
        assert_eq!(resolve(&probes, &cols, &[]).unwrap(), cols);
    }

    #[test]
    fn unknown_disagreeing_or_lossy_collations_refuse() {
        let cols = vec![text("a"), text("c")];
        let probes = [CollationOf::new(0)];
        let unknown = [s("x"), s("utf8mb4_uca1400_ai_ci")];
        let e = resolve(&probes, &cols, &[&unknown]).unwrap_err();
        assert!(e.to_string().contains("utf8mb4_uca1400_ai_ci"), "{e}");
        assert_eq!(e.mysql_code().0, 1235);
        let (bin, ci) = (
            [s("x"), s("utf8mb4_bin")],
            [s("x"), s("utf8mb4_general_ci")],
        );
        assert!(resolve(&probes, &cols, &[&bin, &ci]).is_err());
        let gbk_wire = vec![
            ColumnDefinition::new("a", column_type::VAR_STRING, 28, 80, 0, 0),
            text("c"),
        ];
        assert!(resolve(&probes, &gbk_wire, &[&ci]).is_err());
    }

    #[test]
    fn sources_replay_their_first_row_with_resolved_columns() {
        let cols = vec![text("a"), text("c")];
        let unit =
            |rows: Vec<Row>| Box::new(VecRows::new(cols.clone(), rows)) as Box<dyn RowSource>;
        let sources = vec![
            unit(vec![]),
            unit(vec![
                vec![s("x"), s("utf8mb4_bin")],
                vec![s("y"), s("utf8mb4_bin")],
            ]),
        ];
        let probes = [CollationOf {
            col: 1,
            from_end: true,
        }];
        let mut out = with_collations(sources, &probes).unwrap();
        assert_eq!(out[0].columns()[0].compare_collation, Some(46));
        assert_eq!(out[0].next_row().unwrap(), None);
        assert_eq!(out[1].next_row().unwrap().unwrap()[0], s("x"));
        assert_eq!(out[1].next_row().unwrap().unwrap()[0], s("y"));
        assert_eq!(out[1].next_row().unwrap(), None);
    }
}
