//! `Aggregate`: merges per-shard partial aggregates per group (COUNT and SUM add, MIN/MAX compare as
//! MariaDB orders values, COUNT/SUM(DISTINCT) merge value sets). Groups are hashed in memory up to the
//! budget and come out sorted by their keys (as MariaDB returns GROUP BY results), or, when the
//! shards return rows sorted by the group columns, aggregated group by group as they arrive.
//!
//! Strings group and compare by their column's collation ([`codec::mysql::Collation`]): `café`
//! and `CAFE` are one group under `utf8mb4_general_ci`, two under `utf8mb4_bin`. A group column,
//! MIN/MAX or DISTINCT column whose collation the proxy does not know is refused, never guessed.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use codec::mysql::consts::{charset, column_flag, column_type};
use codec::mysql::{ColumnDefinition, Value, compare_values};

use super::eval::{Op, arith};
use super::exec::{ExecLimits, Row, RowSource, VecRows};
use super::merge_sort::{SortKey, check_key_collations, compare_rows, key_collation, keys_text};
use super::{Plan, ShardError};

/// How one column of the partial rows merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    /// Partial counts: add.
    Count,
    /// Partial sums: add (NULL when every partial is NULL).
    Sum,
    /// Smallest.
    Min,
    /// Largest.
    Max,
    /// The column holds raw values (shards grouped by it): count the distinct non-NULL ones.
    CountDistinct,
    /// The column holds raw values: sum the distinct non-NULL ones.
    SumDistinct,
    /// Partial BIT_AND: and (over no rows, all ones).
    BitAnd,
    /// Partial BIT_OR: or (over no rows, 0).
    BitOr,
    /// Partial BIT_XOR: xor (over no rows, 0).
    BitXor,
}

impl AggKind {
    fn text(self) -> &'static str {
        match self {
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::CountDistinct => "count_distinct",
            AggKind::SumDistinct => "sum_distinct",
            AggKind::BitAnd => "bit_and",
            AggKind::BitOr => "bit_or",
            AggKind::BitXor => "bit_xor",
        }
    }
}

/// One aggregate column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggSpec {
    /// Merge kind.
    pub kind: AggKind,
    /// Column of the partial rows (the first of `width`).
    pub col: usize,
    /// Columns it spans: 1, or the arguments of `COUNT(DISTINCT a, b, ...)` (consecutive
    /// columns, the result in the first).
    pub width: usize,
}

impl AggSpec {
    /// An aggregate over one column.
    pub fn new(kind: AggKind, col: usize) -> Self {
        Self {
            kind,
            col,
            width: 1,
        }
    }

    /// The columns it reads.
    pub fn cols(&self) -> std::ops::Range<usize> {
        self.col..self.col + self.width.max(1)
    }
}

/// `GROUP_CONCAT(value [ORDER BY keys] [SEPARATOR s])` across shards: the shards group by the
/// value and the ORDER BY keys too and count each tuple (`COUNT(*)`), so the proxy sees every
/// element with its multiplicity and builds the string itself, in the ORDER BY's order
/// (collation-aware), bounded by `max_rows` elements per merge.
///
/// Exact or refused: an element that is not text or an exact number (its text form is the
/// server's own), ORDER BY keys that tie between different values (the server's order among
/// them is its row order), DISTINCT over text (which of the collation-equal spellings survives
/// is the server's row order), a result longer than the shards' `@@group_concat_max_len` (the
/// server truncates with a warning the proxy cannot send) or a limit of 512 bytes or less (the
/// server's result type would be VARCHAR, not BLOB). Without ORDER BY the element order is
/// unspecified, as on the server.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConcat {
    /// Column of the partial rows with the element (the result goes there).
    pub value: usize,
    /// ORDER BY columns of the partial rows, with directions.
    pub keys: Vec<SortKey>,
    /// Column with each partial row's multiplicity (`COUNT(*)` of the shard's tuple).
    pub count: usize,
    /// Column with the shard's `@@group_concat_max_len`.
    pub max_len: usize,
    /// The separator's bytes.
    pub separator: Vec<u8>,
    /// `GROUP_CONCAT(DISTINCT ...)`.
    pub distinct: bool,
    /// `JSON_ARRAYAGG`: elements as JSON (NULL is `null`, strings quoted and escaped), joined by
    /// `,` inside `[...]`.
    pub json: bool,
    /// `JSON_OBJECTAGG(member, value)` (with `json`): the column of the member names; the
    /// members `"name":value` are joined by `, ` inside `{...}`, in no defined order (the
    /// server's is its row order). A NULL name is refused (the server's is an error).
    pub member: Option<usize>,
}

/// Merge partial aggregates by group. Columns that are neither group keys nor aggregates keep the
/// first value seen (MySQL's "any value" for non-grouped columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Group-key columns (empty: one group over everything).
    pub group: Vec<usize>,
    /// Aggregate columns.
    pub aggs: Vec<AggSpec>,
    /// Empty: hash the groups. Otherwise the order the input arrives in (the group columns, each
    /// once, with directions: a `MergeSort` over shards that ran this `ORDER BY`): aggregate
    /// group by group as rows arrive.
    pub sorted: Vec<SortKey>,
    /// `WITH ROLLUP`: after the groups of each prefix of the group columns, a super-aggregate row
    /// over them (the rest of the group columns NULL), and a grand total last. Needs mergeable
    /// aggregates only (no COUNT/SUM(DISTINCT)); always the hashed merge.
    pub rollup: bool,
    /// GROUP_CONCAT columns (their value columns are none of `aggs`).
    pub concats: Vec<GroupConcat>,
    /// Input (partial rows from the shards).
    pub input: Box<Plan>,
}

/// A byte key equal exactly for rows MySQL puts in one group (GROUP BY, DISTINCT) on `cols`:
/// strings by their column's collation (`café` = `CAFE` under `utf8mb4_general_ci`, trailing
/// spaces ignored under PAD SPACE), numbers numerically. Refuses a string column whose collation
/// the proxy does not know. Each column's part is length-prefixed, so keys of different rows
/// cannot run into each other.
pub fn group_key(
    row: &[Value],
    cols: &[usize],
    defs: &[ColumnDefinition],
) -> Result<Vec<u8>, ShardError> {
    let mut k = Vec::new();
    for &c in cols {
        let v = row.get(c).unwrap_or(&Value::Null);
        let start = k.len();
        k.extend_from_slice(&[0; 4]);
        match v {
            Value::Null => k.push(0),
            Value::Bytes(b) => {
                k.push(1);
                key_collation(defs, c, "GROUP BY or DISTINCT")?.key(b, &mut k);
            }
            Value::Int(_) | Value::UInt(_) | Value::Decimal(_) => {
                k.push(2);
                let t = match v {
                    Value::Int(i) => i.to_string(),
                    Value::UInt(u) => u.to_string(),
                    Value::Decimal(d) => normalise_decimal(&String::from_utf8_lossy(d)),
                    _ => String::new(),
                };
                k.extend_from_slice(t.as_bytes());
            }
            Value::Float(f) => {
                k.push(3);
                k.extend_from_slice(&(f64::from(*f) + 0.0).to_bits().to_le_bytes());
            }
            Value::Double(f) => {
                k.push(3);
                // + 0.0: -0 and 0 are one group.
                k.extend_from_slice(&(f + 0.0).to_bits().to_le_bytes());
            }
            other => {
                k.push(4);
                k.extend_from_slice(format!("{other:?}").as_bytes());
            }
        }
        let len = u32::try_from(k.len() - start - 4).unwrap_or(u32::MAX);
        if let Some(head) = k.get_mut(start..start + 4) {
            head.copy_from_slice(&len.to_le_bytes());
        }
    }
    Ok(k)
}

/// Refuses merging `aggs` and grouping on `group` over columns of `defs` whose collation the
/// proxy does not know (MIN/MAX order strings, COUNT/SUM(DISTINCT) and GROUP BY compare them).
fn check_collations(
    group: &[usize],
    aggs: &[AggSpec],
    defs: &[ColumnDefinition],
) -> Result<(), ShardError> {
    for &c in group {
        key_collation(defs, c, "GROUP BY")?;
    }
    for a in aggs {
        let what = match a.kind {
            AggKind::Min => "MIN",
            AggKind::Max => "MAX",
            AggKind::CountDistinct => "COUNT(DISTINCT)",
            AggKind::SumDistinct => "SUM(DISTINCT)",
            AggKind::Count | AggKind::Sum | AggKind::BitAnd | AggKind::BitOr | AggKind::BitXor => {
                continue;
            }
        };
        for c in a.cols() {
            key_collation(defs, c, what)?;
        }
    }
    Ok(())
}

/// A BIT_* partial as its 64 bits (the server answers BIGINT UNSIGNED).
fn bits(v: &Value) -> Option<u64> {
    match v {
        Value::UInt(u) => Some(*u),
        Value::Int(i) => Some(*i as u64),
        Value::Bytes(b) | Value::Decimal(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn normalise_decimal(s: &str) -> String {
    let s = s.trim();
    let t = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    };
    if t == "-0" { "0".into() } else { t.to_string() }
}

/// One GROUP_CONCAT element: its ORDER BY key values, its value, its multiplicity.
type Element = (Vec<Value>, Value, u64);

struct Group {
    row: Row,
    sets: Vec<(HashSet<Vec<u8>>, Vec<Value>)>,
    /// Per GROUP_CONCAT, its elements.
    lists: Vec<Vec<Element>>,
}

/// Folds partial rows into groups; shared by the hashed and the sorted merge.
#[derive(Debug, Clone)]
struct Folder {
    aggs: Vec<AggSpec>,
    distinct: Vec<AggSpec>,
    concats: Vec<GroupConcat>,
}

impl Folder {
    fn new(aggs: &[AggSpec], concats: &[GroupConcat]) -> Self {
        Self {
            concats: concats.to_vec(),
            aggs: aggs.to_vec(),
            distinct: aggs
                .iter()
                .filter(|a| matches!(a.kind, AggKind::CountDistinct | AggKind::SumDistinct))
                .copied()
                .collect(),
        }
    }

    fn empty_sets(&self) -> Vec<(HashSet<Vec<u8>>, Vec<Value>)> {
        self.distinct
            .iter()
            .map(|_| (HashSet::new(), Vec::new()))
            .collect()
    }

    /// A new group from its first partial row; `held` grows by the distinct values kept.
    fn open(
        &self,
        row: &Row,
        columns: &[ColumnDefinition],
        held: &mut u64,
    ) -> Result<Group, ShardError> {
        let mut g = Group {
            row: row.clone(),
            sets: self.empty_sets(),
            lists: self.concats.iter().map(|_| Vec::new()).collect(),
        };
        self.add_elements(&mut g, row, held);
        for a in &self.distinct {
            if let Some(v) = g.row.get_mut(a.col) {
                *v = Value::Null;
            }
        }
        for (si, a) in self.distinct.iter().enumerate() {
            if let Some(set) = g.sets.get_mut(si) {
                *held += add_distinct(set, row, a.cols(), columns)?;
            }
        }
        Ok(g)
    }

    /// Adds one more partial row of the same group.
    fn fold(
        &self,
        g: &mut Group,
        row: &Row,
        columns: &[ColumnDefinition],
        held: &mut u64,
    ) -> Result<(), ShardError> {
        for a in &self.aggs {
            let (Some(cur), Some(new)) = (g.row.get(a.col), row.get(a.col)) else {
                continue;
            };
            let merged = match a.kind {
                AggKind::Count | AggKind::Sum => match (cur, new) {
                    (Value::Null, v) | (v, Value::Null) => v.clone(),
                    (x, y) => arith(Op::Add, x, y)?,
                },
                // NULL partials (a shard group with only NULLs) never win; any value beats them.
                AggKind::Min | AggKind::Max => match (cur, new, columns.get(a.col)) {
                    (_, Value::Null, _) => cur.clone(),
                    (Value::Null, _, _) => new.clone(),
                    (x, y, Some(c)) => {
                        if matches!(x, Value::Bytes(_)) {
                            key_collation(columns, a.col, "MIN/MAX")?;
                        }
                        let o = compare_values(x, y, c);
                        let take_new = if a.kind == AggKind::Min {
                            o == Ordering::Greater
                        } else {
                            o == Ordering::Less
                        };
                        if take_new { new.clone() } else { cur.clone() }
                    }
                    _ => cur.clone(),
                },
                AggKind::BitAnd | AggKind::BitOr | AggKind::BitXor => {
                    match (bits(cur), bits(new)) {
                        (Some(x), Some(y)) => Value::UInt(match a.kind {
                            AggKind::BitAnd => x & y,
                            AggKind::BitOr => x | y,
                            _ => x ^ y,
                        }),
                        _ => cur.clone(),
                    }
                }
                AggKind::CountDistinct | AggKind::SumDistinct => continue,
            };
            if let Some(slot) = g.row.get_mut(a.col) {
                *slot = merged;
            }
        }
        for (si, a) in self.distinct.iter().enumerate() {
            if let Some(set) = g.sets.get_mut(si) {
                *held += add_distinct(set, row, a.cols(), columns)?;
            }
        }
        self.add_elements(g, row, held);
        Ok(())
    }

    /// Adds a partial row's GROUP_CONCAT elements (a NULL value is no element).
    fn add_elements(&self, g: &mut Group, row: &Row, held: &mut u64) {
        for (c, list) in self.concats.iter().zip(&mut g.lists) {
            let Some(v) = row
                .get(c.value)
                .filter(|v| c.json || !matches!(v, Value::Null))
            else {
                continue;
            };
            let n = row.get(c.count).and_then(bits).unwrap_or(1);
            // A JSON_OBJECTAGG member name travels after the ORDER BY keys (it has none).
            let keys = c
                .keys
                .iter()
                .map(|k| k.col)
                .chain(c.member)
                .map(|col| row.get(col).cloned().unwrap_or(Value::Null))
                .collect();
            list.push((keys, v.clone(), n));
            *held += 1;
        }
    }

    /// The GROUP_CONCAT string of `list` (see [`GroupConcat`]); `max` is the partial row's
    /// `@@group_concat_max_len`.
    fn concat(
        &self,
        c: &GroupConcat,
        mut list: Vec<Element>,
        max: Option<u64>,
        columns: &[ColumnDefinition],
    ) -> Result<Value, ShardError> {
        let refuse =
            |why: &str| ShardError::Unsupported(format!("GROUP_CONCAT {why} across shards"));
        if list.is_empty() {
            return Ok(Value::Null);
        }
        let max = max.ok_or_else(|| refuse("without the shards' group_concat_max_len"))?;
        if max <= 512 {
            return Err(refuse("with group_concat_max_len of 512 or less"));
        }
        let key_cols: Vec<SortKey> = (0..c.keys.len())
            .map(|i| SortKey::new(i, c.keys[i].desc))
            .collect();
        let key_defs: Vec<ColumnDefinition> = c
            .keys
            .iter()
            .map(|k| {
                columns.get(k.col).cloned().unwrap_or_else(|| {
                    ColumnDefinition::new("", column_type::NULL, charset::BINARY, 0, 0, 0)
                })
            })
            .collect();
        if !c.keys.is_empty() {
            check_key_collations(&key_cols, &key_defs, "GROUP_CONCAT ORDER BY")?;
            list.sort_by(|a, b| compare_rows(&a.0, &b.0, &key_cols, &key_defs));
            for w in list.windows(2) {
                if let [a, b] = w
                    && compare_rows(&a.0, &b.0, &key_cols, &key_defs) == Ordering::Equal
                    && a.1 != b.1
                {
                    return Err(refuse("whose ORDER BY ties between different values"));
                }
            }
        }
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut out: Vec<u8> = Vec::new();
        let mut first = true;
        let binary = columns
            .get(c.value)
            .is_some_and(|d| d.charset == charset::BINARY);
        let (open, close) = if c.member.is_some() {
            (b'{', b'}')
        } else {
            (b'[', b']')
        };
        if c.json {
            out.push(open);
        }
        for (keys, v, n) in list {
            let text: Vec<u8> = match &v {
                Value::Bytes(_) if c.distinct => return Err(refuse("(DISTINCT) over text")),
                Value::Bytes(b) if c.json => {
                    if binary {
                        return Err(refuse("(JSON_ARRAYAGG) over binary strings"));
                    }
                    json_string(b).ok_or_else(|| {
                        refuse("(JSON_ARRAYAGG) over text with control characters")
                    })?
                }
                Value::Null => b"null".to_vec(),
                Value::Bytes(b) | Value::Decimal(b) => b.to_vec(),
                Value::Int(i) => i.to_string().into_bytes(),
                Value::UInt(u) => u.to_string().into_bytes(),
                _ => return Err(refuse("over values other than text and exact numbers")),
            };
            let text = match (c.member, keys.last()) {
                (Some(_), Some(Value::Bytes(b))) if !binary_member(c, columns) => {
                    let mut m = json_string(b).ok_or_else(|| {
                        refuse("(JSON_OBJECTAGG) over names with control characters")
                    })?;
                    m.push(b':');
                    m.extend_from_slice(&text);
                    m
                }
                (Some(_), Some(Value::Int(_) | Value::UInt(_) | Value::Decimal(_))) => {
                    let name = match keys.last() {
                        Some(Value::Int(i)) => i.to_string().into_bytes(),
                        Some(Value::UInt(u)) => u.to_string().into_bytes(),
                        Some(Value::Decimal(d)) => d.to_vec(),
                        _ => Vec::new(),
                    };
                    let mut m = json_string(&name).unwrap_or_default();
                    m.push(b':');
                    m.extend_from_slice(&text);
                    m
                }
                (Some(_), _) => {
                    return Err(refuse(
                        "(JSON_OBJECTAGG) with NULL, binary or non-text, non-number names",
                    ));
                }
                (None, _) => text,
            };
            let times = if c.distinct {
                let key = group_key(std::slice::from_ref(&v), &[0], &[])?;
                if !seen.insert(key) {
                    continue;
                }
                1
            } else {
                n
            };
            for _ in 0..times {
                if !first {
                    out.extend_from_slice(&c.separator);
                }
                first = false;
                out.extend_from_slice(&text);
                // The brackets count too (conservatively): refuse near the limit.
                if out.len() as u64 + 2 > max {
                    return Err(refuse(
                        "longer than group_concat_max_len (the server truncates)",
                    ));
                }
            }
        }
        if c.json {
            out.push(close);
        }
        Ok(Value::Bytes(bytes::Bytes::from(out)))
    }

    /// The finished output row of a group.
    fn close(&self, mut g: Group, columns: &[ColumnDefinition]) -> Result<Row, ShardError> {
        let lists = std::mem::take(&mut g.lists);
        for (c, list) in self.concats.iter().zip(lists) {
            let max = g.row.get(c.max_len).and_then(bits);
            let v = self.concat(c, list, max, columns)?;
            if let Some(slot) = g.row.get_mut(c.value) {
                *slot = v;
            }
        }
        for (si, a) in self.distinct.iter().enumerate() {
            let (set, values) = g.sets.get_mut(si).map(std::mem::take).unwrap_or_default();
            let v = match a.kind {
                AggKind::CountDistinct => Value::Int(set.len() as i64),
                _ => {
                    let mut acc = Value::Null;
                    for v in &values {
                        acc = match acc {
                            Value::Null => v.clone(),
                            acc => arith(Op::Add, &acc, v)?,
                        };
                    }
                    acc
                }
            };
            if let Some(slot) = g.row.get_mut(a.col) {
                *slot = v;
            }
        }
        Ok(g.row)
    }

    /// Output column definitions: distinct-merged columns become BIGINT/DECIMAL.
    fn out_columns(&self, input: &[ColumnDefinition]) -> Vec<ColumnDefinition> {
        let mut columns = input.to_vec();
        for c in &self.concats {
            if let Some(def) = columns.get_mut(c.value) {
                // The server's GROUP_CONCAT over a limit above 512 is a BLOB of the value's
                // character set (a number's: the connection's).
                let cs = if c.json {
                    // MariaDB's JSON_ARRAYAGG result: utf8mb3_general_ci.
                    33
                } else if matches!(
                    def.column_type,
                    column_type::VAR_STRING | column_type::STRING | column_type::VARCHAR
                ) {
                    def.charset
                } else {
                    charset::UTF8MB4_GENERAL_CI
                };
                let name = def.name.clone();
                *def = ColumnDefinition::new("", column_type::BLOB, cs, 4_294_967_295, 0, 0);
                def.name = name;
            }
        }
        for a in &self.distinct {
            if let Some(c) = columns.get_mut(a.col) {
                let name = c.name.clone();
                *c = if a.kind == AggKind::CountDistinct {
                    ColumnDefinition::new(
                        "",
                        column_type::LONGLONG,
                        charset::BINARY,
                        21,
                        column_flag::BINARY,
                        0,
                    )
                } else {
                    ColumnDefinition::new(
                        "",
                        column_type::NEWDECIMAL,
                        charset::BINARY,
                        66,
                        column_flag::BINARY,
                        c.decimals.min(30),
                    )
                };
                c.name = name;
            }
        }
        columns
    }
}

impl Aggregate {
    pub(crate) fn describe(&self) -> String {
        let g: Vec<String> = self.group.iter().map(|c| format!("#{c}")).collect();
        let a: Vec<String> = self
            .aggs
            .iter()
            .map(|a| {
                let cols: Vec<String> = a.cols().map(|c| format!("#{c}")).collect();
                format!("{}({})", a.kind.text(), cols.join(", "))
            })
            .collect();
        let how = if self.sorted.is_empty() || self.rollup {
            "hashed".to_string()
        } else {
            format!("sorted={}", keys_text(&self.sorted))
        };
        let rollup = if self.rollup { " rollup" } else { "" };
        let concats: String = self
            .concats
            .iter()
            .map(|c| {
                format!(
                    " group_concat(#{} n=#{} max=#{} order={} sep={:?}{})",
                    c.value,
                    c.count,
                    c.max_len,
                    keys_text(&c.keys),
                    String::from_utf8_lossy(&c.separator),
                    if c.distinct { " distinct" } else { "" }
                ) + &c
                    .member
                    .map_or_else(String::new, |m| format!(" member=#{m}"))
                    + if c.json { " json" } else { "" }
            })
            .collect();
        format!(
            "{how} group=[{}] aggs=[{}]{concats}{rollup}",
            g.join(", "),
            a.join(", ")
        )
    }

    /// Merges the partial rows: group by group as they arrive when `sorted` (and there is a group
    /// key), otherwise hashed in memory.
    pub fn rows(
        &self,
        input: Box<dyn RowSource>,
        limits: ExecLimits,
    ) -> Result<Box<dyn RowSource>, ShardError> {
        if self.rollup {
            let groups = self.merge(input, limits)?;
            Ok(Box::new(self.roll_up(groups, limits)?))
        } else if !self.sorted.is_empty() && !self.group.is_empty() {
            Ok(Box::new(self.stream(input, limits)))
        } else {
            Ok(Box::new(self.merge(input, limits)?))
        }
    }

    /// Adds the `WITH ROLLUP` super-aggregate rows to `groups` (merged, sorted by the group
    /// columns): a merged group row folds like a partial row (counts and sums add, MIN/MAX and
    /// BIT_* combine), so each prefix level keeps one folded row, emitted (with the group columns
    /// from that level on as NULL) when its prefix changes, deepest level first, as MariaDB does.
    pub fn roll_up(&self, mut groups: VecRows, limits: ExecLimits) -> Result<VecRows, ShardError> {
        let folder = Folder::new(&self.aggs, &self.concats);
        if !folder.distinct.is_empty() || !folder.concats.is_empty() {
            return Err(ShardError::Unsupported(
                "WITH ROLLUP over COUNT/SUM(DISTINCT) or GROUP_CONCAT across shards".into(),
            ));
        }
        let columns = groups.columns().to_vec();
        let depth = self.group.len();
        let mut levels: Vec<Option<Group>> = (0..depth).map(|_| None).collect();
        let mut out: Vec<Row> = Vec::new();
        let mut prev: Option<Vec<Vec<u8>>> = None;
        let mut held = 0u64;
        let emit = |g: Group, level: usize, out: &mut Vec<Row>| -> Result<(), ShardError> {
            let mut row = folder.close(g, &columns)?;
            for &c in self.group.iter().skip(level) {
                if let Some(v) = row.get_mut(c) {
                    *v = Value::Null;
                }
            }
            out.push(row);
            Ok(())
        };
        while let Some(row) = groups.next_row()? {
            let keys = self
                .group
                .iter()
                .map(|&c| group_key(&row, &[c], &columns))
                .collect::<Result<Vec<_>, _>>()?;
            // The first group column whose value changed closes every deeper level.
            let changed = prev.as_ref().map_or(depth, |p| {
                p.iter().zip(&keys).take_while(|(a, b)| a == b).count()
            });
            for level in (changed + 1..depth).rev() {
                if let Some(g) = levels.get_mut(level).and_then(Option::take) {
                    emit(g, level, &mut out)?;
                }
            }
            out.push(row.clone());
            for slot in &mut levels {
                match slot {
                    Some(g) => folder.fold(g, &row, &columns, &mut held)?,
                    None => *slot = Some(folder.open(&row, &columns, &mut held)?),
                }
            }
            if out.len() as u64 > limits.max_rows {
                return Err(ShardError::MemoryBudget(limits.max_rows));
            }
            prev = Some(keys);
        }
        for level in (0..depth).rev() {
            if let Some(g) = levels.get_mut(level).and_then(Option::take) {
                emit(g, level, &mut out)?;
            }
        }
        Ok(VecRows::new(columns, out))
    }

    /// Aggregates input sorted by the group columns (a [`super::MergeSort`] over shards that ran
    /// `ORDER BY` the group columns) one group at a time; rows come out in input order. Holds one
    /// group; its COUNT/SUM(DISTINCT) value sets count against `limits.max_rows`. A row that
    /// sorts before the group being built (a shard ordered differently from
    /// `codec::mysql::compare_values`) fails the merge rather than splitting a group.
    pub fn stream(&self, input: Box<dyn RowSource>, limits: ExecLimits) -> SortedAggRows {
        let fold = self.fold_sorted(input.columns().to_vec(), limits);
        SortedAggRows {
            input,
            fold,
            done: false,
        }
    }

    /// The push-based core of [`Aggregate::stream`] for partial rows of `in_columns` that arrive
    /// sorted by `self.sorted`: the caller pushes rows as it gets them (from sockets, say) and
    /// gets each group as soon as the next one starts. See [`SortedFold`].
    pub fn fold_sorted(&self, in_columns: Vec<ColumnDefinition>, limits: ExecLimits) -> SortedFold {
        let folder = Folder::new(&self.aggs, &self.concats);
        let columns = folder.out_columns(&in_columns);
        let refused = check_collations(&self.group, &self.aggs, &in_columns)
            .and_then(|()| check_key_collations(&self.sorted, &in_columns, "GROUP BY"))
            .err();
        SortedFold {
            refused,
            in_columns,
            columns,
            keys: self.sorted.clone(),
            folder,
            cur: None,
            held: 0,
            max: limits.max_rows,
        }
    }

    /// Reads every partial row and returns the merged groups (hashed; sorted by group key).
    pub fn merge(
        &self,
        mut input: Box<dyn RowSource>,
        limits: ExecLimits,
    ) -> Result<VecRows, ShardError> {
        let folder = Folder::new(&self.aggs, &self.concats);
        let columns = input.columns().to_vec();
        check_collations(&self.group, &self.aggs, &columns)?;
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut held: u64 = 0;
        while let Some(row) = input.next_row()? {
            let key = group_key(&row, &self.group, &columns)?;
            match index.get(&key).and_then(|&i| groups.get_mut(i)) {
                Some(g) => folder.fold(g, &row, &columns, &mut held)?,
                None => {
                    held += 1;
                    if held > limits.max_rows {
                        return Err(ShardError::MemoryBudget(limits.max_rows));
                    }
                    index.insert(key, groups.len());
                    groups.push(folder.open(&row, &columns, &mut held)?);
                }
            }
            if held > limits.max_rows {
                return Err(ShardError::MemoryBudget(limits.max_rows));
            }
        }
        if groups.is_empty() && self.group.is_empty() {
            // An aggregate without GROUP BY yields one row even over no rows.
            let width = self
                .aggs
                .iter()
                .map(|a| a.col + 1)
                .fold(columns.len(), usize::max);
            let row = (0..width)
                .map(
                    |c| match self.aggs.iter().find(|a| a.col == c).map(|a| a.kind) {
                        Some(AggKind::Count | AggKind::CountDistinct) => Value::Int(0),
                        Some(AggKind::BitAnd) => Value::UInt(u64::MAX),
                        Some(AggKind::BitOr | AggKind::BitXor) => Value::UInt(0),
                        _ => Value::Null,
                    },
                )
                .collect();
            groups.push(Group {
                row,
                sets: folder.empty_sets(),
                lists: folder.concats.iter().map(|_| Vec::new()).collect(),
            });
        }
        let mut rows = groups
            .into_iter()
            .map(|g| folder.close(g, &columns))
            .collect::<Result<Vec<Row>, ShardError>>()?;
        let columns = folder.out_columns(&columns);
        let keys: Vec<SortKey> = self
            .group
            .iter()
            .map(|&col| SortKey::new(col, false))
            .collect();
        rows.sort_by(|a, b| compare_rows(a, b, &keys, &columns));
        Ok(VecRows::new(columns, rows))
    }
}

/// The running sorted (streaming) aggregate: see [`Aggregate::stream`]. Pulls partial rows from
/// its input and pushes them into a [`SortedFold`].
pub struct SortedAggRows {
    input: Box<dyn RowSource>,
    fold: SortedFold,
    done: bool,
}

impl RowSource for SortedAggRows {
    fn columns(&self) -> &[ColumnDefinition] {
        self.fold.columns()
    }

    fn next_row(&mut self) -> Result<Option<Row>, ShardError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let Some(row) = self.input.next_row()? else {
                self.done = true;
                return self.fold.finish();
            };
            if let Some(g) = self.fold.push(row)? {
                return Ok(Some(g));
            }
        }
    }
}

/// Group-by-group aggregation of partial rows sorted by the group columns, fed one row at a time
/// ([`SortedFold::push`]) and closed with [`SortedFold::finish`]. Holds the open group only (and
/// its COUNT/SUM(DISTINCT) value sets, at most `max_rows` values), so the proxy can aggregate rows
/// merged straight from the shard sockets without collecting them.
pub struct SortedFold {
    /// Why the merge is refused (a key or MIN/MAX column of an unknown collation), told at the
    /// first row.
    refused: Option<ShardError>,
    in_columns: Vec<ColumnDefinition>,
    columns: Vec<ColumnDefinition>,
    /// The input order (equality marks a group's end).
    keys: Vec<SortKey>,
    folder: Folder,
    cur: Option<Group>,
    held: u64,
    max: u64,
}

impl SortedFold {
    /// The columns of the finished groups (distinct-merged columns become BIGINT/DECIMAL).
    pub fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }

    /// Adds the next partial row. Returns the group it closes, if it starts a new one. Fails when
    /// the row sorts before the open group (the input is not in the order the plan asked for),
    /// the open group's distinct values exceed the budget, or a group, MIN/MAX or DISTINCT column
    /// has a collation the proxy does not know.
    pub fn push(&mut self, row: Row) -> Result<Option<Row>, ShardError> {
        if let Some(e) = &self.refused {
            return Err(e.clone());
        }
        let order = self
            .cur
            .as_ref()
            .map(|g| compare_rows(&g.row, &row, &self.keys, &self.in_columns));
        if order == Some(Ordering::Greater) {
            return Err(ShardError::Unsupported(
                "GROUP BY over values whose collation order the proxy cannot follow \
                 (a shard returned groups out of order)"
                    .into(),
            ));
        }
        if let Some(g) = self.cur.as_mut()
            && order == Some(Ordering::Equal)
        {
            self.folder
                .fold(g, &row, &self.in_columns, &mut self.held)?;
            if self.held > self.max {
                return Err(ShardError::MemoryBudget(self.max));
            }
            return Ok(None);
        }
        self.held = 1;
        let g = self.folder.open(&row, &self.in_columns, &mut self.held)?;
        if self.held > self.max {
            return Err(ShardError::MemoryBudget(self.max));
        }
        self.cur
            .replace(g)
            .map(|done| self.folder.close(done, &self.in_columns))
            .transpose()
    }

    /// Ends the input: the last group, if any.
    pub fn finish(&mut self) -> Result<Option<Row>, ShardError> {
        self.cur
            .take()
            .map(|g| self.folder.close(g, &self.in_columns))
            .transpose()
    }
}

/// Whether a JSON_OBJECTAGG's member names come from a binary string column.
fn binary_member(c: &GroupConcat, columns: &[ColumnDefinition]) -> bool {
    c.member
        .and_then(|m| columns.get(m))
        .is_some_and(|d| d.charset == charset::BINARY)
}

/// `b` as a JSON string the way MariaDB writes it in JSON_ARRAYAGG: quoted, `"`, `\` and tab
/// escaped, other bytes (UTF-8 included) as they are. `None` for other control characters
/// (their escapes are not modelled).
fn json_string(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len() + 2);
    out.push(b'"');
    for &c in b {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 || c == 0x7f => return None,
            c => out.push(c),
        }
    }
    out.push(b'"');
    Some(out)
}

fn add_distinct(
    set: &mut (HashSet<Vec<u8>>, Vec<Value>),
    row: &Row,
    cols: std::ops::Range<usize>,
    defs: &[ColumnDefinition],
) -> Result<u64, ShardError> {
    let first = cols.start;
    let Some(v) = row.get(first) else {
        return Ok(0);
    };
    // A tuple with a NULL is not counted (COUNT(DISTINCT a, b) counts rows where none is NULL).
    if cols
        .clone()
        .any(|c| row.get(c).is_none_or(|x| matches!(x, Value::Null)))
    {
        return Ok(0);
    }
    let cols: Vec<usize> = cols.collect();
    let key = group_key(row, &cols, defs)?;
    Ok(if set.0.insert(key) {
        set.1.push(v.clone());
        1
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use codec::mysql::consts::charset;

    use super::*;

    fn text(collation: u16) -> ColumnDefinition {
        ColumnDefinition::new("t", column_type::VAR_STRING, collation, 80, 0, 0)
    }

    fn b(s: &str) -> Value {
        Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn group_keys_follow_the_collation_and_keep_columns_apart() {
        let ci = [
            text(charset::UTF8MB4_GENERAL_CI),
            text(charset::UTF8MB4_GENERAL_CI),
        ];
        let key = |row: &[Value], defs: &[ColumnDefinition]| group_key(row, &[0, 1], defs);
        assert_eq!(
            key(&[b("café"), b("Über ")], &ci),
            key(&[b("CAFE"), b("uber")], &ci)
        );
        assert_ne!(key(&[b("ß"), b("")], &ci), key(&[b("ss"), b("")], &ci));
        let bin = [text(charset::BINARY), text(charset::BINARY)];
        // A byte of one column never passes for the boundary of the next.
        assert_ne!(
            key(&[b("a\u{ff}"), b("b")], &bin),
            key(&[b("a"), b("\u{ff}b")], &bin)
        );
        assert_ne!(
            key(&[b("a"), Value::Null], &bin),
            key(&[b("a"), b("")], &bin)
        );
        let d = [int_def(), int_def()];
        assert_eq!(
            key(&[Value::Double(-0.0), Value::Int(1)], &d),
            key(&[Value::Double(0.0), Value::UInt(1)], &d)
        );
        let unknown = [text(charset::UTF8MB4_0900_AI_CI), text(charset::BINARY)];
        assert!(matches!(
            key(&[b("a"), b("b")], &unknown),
            Err(ShardError::Unsupported(m)) if m.contains("collation id 255")
        ));
        // NULL needs no collation.
        assert!(key(&[Value::Null, b("b")], &unknown).is_ok());
    }

    fn int_def() -> ColumnDefinition {
        ColumnDefinition::new("i", column_type::LONGLONG, charset::BINARY, 20, 0, 0)
    }

    fn agg(group: Vec<usize>, aggs: Vec<AggSpec>, concats: Vec<GroupConcat>) -> Aggregate {
        Aggregate {
            group,
            aggs,
            sorted: Vec::new(),
            rollup: false,
            concats,
            input: Box::new(Plan::NextId),
        }
    }

    fn rows_of(src: VecRows) -> Vec<Row> {
        let mut src: Box<dyn RowSource> = Box::new(src);
        let mut out = Vec::new();
        while let Some(r) = src.next_row().expect("row") {
            out.push(r);
        }
        out
    }

    #[test]
    fn rollup_adds_super_rows_deepest_first_and_a_grand_total() {
        // Merged groups (a, b, COUNT, MAX), sorted by a, b.
        let a = agg(
            vec![0, 1],
            vec![
                AggSpec::new(AggKind::Count, 2),
                AggSpec::new(AggKind::Max, 3),
            ],
            Vec::new(),
        );
        let i = Value::Int;
        let groups = VecRows::new(
            vec![int_def(), int_def(), int_def(), int_def()],
            vec![
                vec![i(1), i(1), i(2), i(5)],
                vec![i(1), i(2), i(1), i(9)],
                vec![i(2), i(1), i(4), i(3)],
            ],
        );
        let limits = ExecLimits { max_rows: 100 };
        let out = rows_of(a.roll_up(groups, limits).expect("rollup"));
        let n = Value::Null;
        assert_eq!(
            out,
            vec![
                vec![i(1), i(1), i(2), i(5)],
                vec![i(1), i(2), i(1), i(9)],
                vec![i(1), n.clone(), i(3), i(9)],
                vec![i(2), i(1), i(4), i(3)],
                vec![i(2), n.clone(), i(4), i(3)],
                vec![n.clone(), n, i(7), i(9)],
            ]
        );
    }

    #[test]
    fn group_concat_orders_repeats_and_refuses_ties_between_different_values() {
        // Partial rows: (group, value, key, count, max_len).
        let c = GroupConcat {
            value: 1,
            keys: vec![SortKey::new(2, true)],
            count: 3,
            max_len: 4,
            separator: b";".to_vec(),
            distinct: false,
            json: false,
            member: None,
        };
        let a = agg(
            vec![0],
            vec![AggSpec::new(AggKind::Count, 3)],
            vec![c.clone()],
        );
        let defs = vec![
            int_def(),
            text(charset::UTF8MB4_GENERAL_CI),
            int_def(),
            int_def(),
            int_def(),
        ];
        let i = Value::Int;
        let limits = ExecLimits { max_rows: 100 };
        let input =
            |rows: Vec<Row>| -> Box<dyn RowSource> { Box::new(VecRows::new(defs.clone(), rows)) };
        let out = rows_of(
            a.merge(
                input(vec![
                    vec![i(1), b("x"), i(1), i(2), i(1024)],
                    vec![i(1), b("y"), i(3), i(1), i(1024)],
                    vec![i(1), Value::Null, i(2), i(1), i(1024)],
                ]),
                limits,
            )
            .expect("merge"),
        );
        assert_eq!(out[0][1], b("y;x;x"));
        assert_eq!(out[0][3], i(4), "COUNT(*) still merges");
        // The same key for different values: the server's row order would decide.
        let tie = a.merge(
            input(vec![
                vec![i(1), b("x"), i(1), i(1), i(1024)],
                vec![i(1), b("y"), i(1), i(1), i(1024)],
            ]),
            limits,
        );
        assert!(matches!(tie, Err(ShardError::Unsupported(m)) if m.contains("ties")));
        // JSON: null elements, quoted and escaped text.
        let j = agg(
            vec![0],
            Vec::new(),
            vec![GroupConcat {
                json: true,
                separator: b",".to_vec(),
                ..c
            }],
        );
        let out = rows_of(
            j.merge(
                input(vec![
                    vec![i(1), b("q\"\\"), i(2), i(1), i(1024)],
                    vec![i(1), Value::Null, i(1), i(1), i(1024)],
                ]),
                limits,
            )
            .expect("merge"),
        );
        assert_eq!(out[0][1], b(r#"["q\"\\",null]"#));
    }
}
