//! What a reshard's cut-over must verify again: the primary keys (or key ranges) that dual writes
//! touched since the verifier last compared them (docs/sharding.md, "Resharding", "Verify of
//! what changed"). [`touched`] reads the keys a write can touch from its text; [`DirtySet`]
//! collects them with bounded memory. Nothing here talks to a server.

use std::collections::BTreeSet;

use codec::mysql::Value;
use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, FromTable, InTarget, ObjectName, OnInsert, SetExpr,
    Statement,
};

use super::KeyValue;
use crate::sql::plan::route::{base_name, conjuncts};
use crate::sql::plan::sqltext::{bind_params, key_of_literal};

/// The table's primary key as the dual-write path needs it to read keys from statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyShape {
    /// The primary key column (one integer column: the reshard refuses other keys).
    pub pk: String,
    /// Its position among the table's columns (for `INSERT ... VALUES` without a column list).
    pub pk_index: usize,
    /// How many columns the table has.
    pub columns: usize,
    /// Whether another unique index exists: then `REPLACE` and `ON DUPLICATE KEY UPDATE` can
    /// change a row whose key the statement does not name.
    pub other_unique: bool,
    /// Whether the primary key is the rule's `auto_id` column (an INSERT that omits it gets the
    /// proxy's global ids, which the caller passes).
    pub auto_id_pk: bool,
}

/// The primary keys a write can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// At most these keys.
    Keys(Vec<i128>),
    /// Keys within these inclusive spans.
    Spans(Vec<(i128, i128)>),
    /// Any key (the statement does not pin its keys, or pins them in a way not read here).
    Any,
}

/// The keys `sql` (a write on the table; `params`: a prepared statement's values) can change.
/// `generated`: the global ids the proxy gave an INSERT that omits the `auto_id` column. Anything
/// not understood is [`Touched::Any`]: the caller then verifies everything again, which is slow
/// but never wrong.
pub fn touched(sql: &str, params: &[Value], shape: &KeyShape, generated: &[u64]) -> Touched {
    let bound;
    let sql = if params.is_empty() {
        sql
    } else {
        match bind_params(sql, params) {
            Ok(s) => {
                bound = s;
                bound.as_str()
            }
            Err(_) => return Touched::Any,
        }
    };
    let Ok(stmt) = crate::sql::plan::parse_one(sql) else {
        return Touched::Any;
    };
    let pk = shape.pk.to_ascii_lowercase();
    let names_pk = |n: &ObjectName| base_name(n).eq_ignore_ascii_case(&pk);
    let assigns_pk = |a: &[sqlparser::ast::Assignment]| {
        a.iter().any(|a| match &a.target {
            AssignmentTarget::ColumnName(n) => names_pk(n),
            AssignmentTarget::Tuple(ns) => ns.iter().any(names_pk),
        })
    };
    match stmt {
        Statement::Insert(i) => {
            let other_row_can_change = match &i.on {
                Some(OnInsert::DuplicateKeyUpdate(a)) => assigns_pk(a) || shape.other_unique,
                Some(_) => true,
                None => i.replace_into && shape.other_unique,
            };
            if other_row_can_change {
                return Touched::Any;
            }
            let Some(source) = &i.source else {
                // INSERT ... SET col = value, ...
                let v = i.assignments.iter().find_map(|a| match &a.target {
                    AssignmentTarget::ColumnName(n) if names_pk(n) => Some(&a.value),
                    _ => None,
                });
                return match v {
                    Some(e) => int_keys([e]).map_or(Touched::Any, Touched::Keys),
                    None => generated_keys(shape, generated),
                };
            };
            let SetExpr::Values(values) = source.body.as_ref() else {
                return Touched::Any;
            };
            let pos = if i.columns.is_empty() {
                Some(shape.pk_index)
            } else {
                i.columns.iter().position(names_pk)
            };
            let Some(pos) = pos else {
                return generated_keys(shape, generated);
            };
            let mut cells = Vec::with_capacity(values.rows.len());
            for row in &values.rows {
                if i.columns.is_empty() && row.len() != shape.columns {
                    return Touched::Any;
                }
                match row.get(pos) {
                    Some(e) => cells.push(e),
                    None => return Touched::Any,
                }
            }
            int_keys(cells).map_or(Touched::Any, Touched::Keys)
        }
        Statement::Update(u) => {
            if assigns_pk(&u.assignments) || u.from.is_some() || !u.table.joins.is_empty() {
                return Touched::Any;
            }
            u.selection
                .as_ref()
                .map_or(Touched::Any, |w| keys_in_where(w, &pk))
        }
        Statement::Delete(d) => {
            let single = d.tables.is_empty()
                && d.using.is_none()
                && match &d.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => {
                        t.len() == 1 && t[0].joins.is_empty()
                    }
                };
            if !single {
                return Touched::Any;
            }
            d.selection
                .as_ref()
                .map_or(Touched::Any, |w| keys_in_where(w, &pk))
        }
        _ => Touched::Any,
    }
}

fn generated_keys(shape: &KeyShape, generated: &[u64]) -> Touched {
    if shape.auto_id_pk && !generated.is_empty() {
        Touched::Keys(generated.iter().map(|&g| i128::from(g)).collect())
    } else {
        Touched::Any
    }
}

/// The integer keys of literal expressions (`None` if one is not an integer literal; NULL keys
/// are left out: they match no row).
fn int_keys<'e>(exprs: impl IntoIterator<Item = &'e Expr>) -> Option<Vec<i128>> {
    let mut out = Vec::new();
    for e in exprs {
        match key_of_literal(e)? {
            KeyValue::Int(k) => out.push(k),
            KeyValue::Null => {}
            KeyValue::Str(_) => return None,
        }
    }
    Some(out)
}

fn is_pk(e: &Expr, pk: &str) -> bool {
    match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case(pk),
        Expr::CompoundIdentifier(parts) => parts
            .last()
            .is_some_and(|i| i.value.eq_ignore_ascii_case(pk)),
        Expr::Nested(e) => is_pk(e, pk),
        _ => false,
    }
}

/// The keys a WHERE allows: the first conjunct that pins the key (`pk = 5`, `pk IN (...)`,
/// `pk BETWEEN a AND b`) bounds the rows the statement can change.
fn keys_in_where(w: &Expr, pk: &str) -> Touched {
    let mut parts = Vec::new();
    conjuncts(w, &mut parts);
    for c in parts {
        match c {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let lit = if is_pk(left, pk) {
                    right
                } else if is_pk(right, pk) {
                    left
                } else {
                    continue;
                };
                if let Some(k) = int_keys([lit.as_ref()]) {
                    return Touched::Keys(k);
                }
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated: false,
                ..
            } if is_pk(expr, pk) => {
                if let Some(k) = int_keys(list) {
                    return Touched::Keys(k);
                }
            }
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } if is_pk(expr, pk) => {
                if let (Some(lo), Some(hi)) = (int_keys([low.as_ref()]), int_keys([high.as_ref()]))
                    && let ([lo], [hi]) = (lo.as_slice(), hi.as_slice())
                {
                    return Touched::Spans(if lo <= hi { vec![(*lo, *hi)] } else { vec![] });
                }
            }
            _ => {}
        }
    }
    Touched::Any
}

/// The verifier's key ranges `[lo, hi)` as [`super::reshard::chunks`] cuts them (all of one
/// width but the last): a key's range is found by division, so no range is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RangeIndex {
    min: i128,
    step: i128,
    end: i128,
    n: usize,
}

impl RangeIndex {
    fn of(ranges: &[(i128, i128)]) -> Option<RangeIndex> {
        let (first, last) = (ranges.first()?, ranges.last()?);
        Some(RangeIndex {
            min: first.0,
            step: (first.1 - first.0).max(1),
            end: last.1,
            n: ranges.len(),
        })
    }

    fn id(&self, k: i128) -> Option<usize> {
        (self.min..self.end)
            .contains(&k)
            .then(|| (((k - self.min) / self.step) as usize).min(self.n - 1))
    }

    fn range(&self, id: usize) -> (i128, i128) {
        let lo = self.min + self.step * id as i128;
        (lo, (lo + self.step).min(self.end))
    }
}

/// Keys and key ranges written since the last look, in bounded memory: up to `max_keys` keys one
/// by one, then one bit per verifier range (a range of ~1,000 keys is one bit), keys outside the
/// verified ranges as one span, and "everything" for a write whose keys are unknown.
#[derive(Debug, Clone, Default)]
pub struct DirtySet {
    index: Option<RangeIndex>,
    keys: BTreeSet<i128>,
    max_keys: usize,
    bits: Vec<u64>,
    outside: Option<(i128, i128)>,
    all: bool,
}

/// What [`DirtySet::take`] hands the verifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Verify everything again.
    pub all: bool,
    /// Keys to verify one by one (sorted).
    pub keys: Vec<i128>,
    /// Key ranges `[lo, hi)` to verify (sorted, adjacent ranges joined).
    pub ranges: Vec<(i128, i128)>,
}

impl Dirty {
    /// Nothing to verify.
    pub fn is_empty(&self) -> bool {
        !self.all && self.keys.is_empty() && self.ranges.is_empty()
    }

    /// Adds `ranges` (e.g. the ones that differed last time), keeping the ranges sorted and
    /// joined.
    pub fn add_ranges(&mut self, ranges: impl IntoIterator<Item = (i128, i128)>) {
        self.ranges.extend(ranges);
        self.ranges.sort_unstable();
        let mut joined: Vec<(i128, i128)> = Vec::with_capacity(self.ranges.len());
        for (lo, hi) in self.ranges.drain(..) {
            match joined.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => joined.push((lo, hi)),
            }
        }
        self.ranges = joined;
        // A key inside a range is verified with it.
        let ranges = &self.ranges;
        self.keys
            .retain(|k| !ranges.iter().any(|&(lo, hi)| (lo..hi).contains(k)));
    }

    /// Adds what `other` names.
    pub fn merge(&mut self, other: Dirty) {
        self.all |= other.all;
        if !other.keys.is_empty() {
            self.keys.extend(other.keys);
            self.keys.sort_unstable();
            self.keys.dedup();
        }
        self.add_ranges(other.ranges);
    }

    /// What of `self` the mismatched `spans` cover: ranges that are among them, and keys inside
    /// one (a verify reports a batch of keys as the span of its first and last key).
    pub fn within(&self, spans: &[(i128, i128)]) -> Dirty {
        let inside = |k: &i128| spans.iter().any(|&(lo, hi)| (lo..hi).contains(k));
        Dirty {
            all: false,
            keys: self.keys.iter().copied().filter(inside).collect(),
            ranges: self
                .ranges
                .iter()
                .copied()
                .filter(|r| spans.contains(r))
                .collect(),
        }
    }

    /// Keys plus ranges, for reports.
    pub fn size(&self) -> (usize, usize) {
        (self.keys.len(), self.ranges.len())
    }
}

impl DirtySet {
    /// An empty set over the verifier's `ranges` (from the last full pass), keeping at most
    /// `max_keys` single keys before it falls back to ranges.
    pub fn new(ranges: &[(i128, i128)], max_keys: usize) -> DirtySet {
        let index = RangeIndex::of(ranges);
        DirtySet {
            bits: vec![0; index.map_or(0, |i| i.n.div_ceil(64))],
            index,
            max_keys,
            ..DirtySet::default()
        }
    }

    /// An empty set over the grid [`DirtySet::grid`] gave for the verifier's ranges (what
    /// another proxy's job sends, instead of every range); `None`: no ranges (an empty table).
    /// Refuses a grid that is not one (`step` or `n` not positive, `n` ranges not ending at `end`)
    /// or that has more than `max_ranges` ranges (one bit each).
    pub fn on_grid(
        grid: Option<(i128, i128, i128, usize)>,
        max_keys: usize,
        max_ranges: usize,
    ) -> Result<DirtySet, String> {
        let index = match grid {
            None => None,
            Some((min, step, end, n)) => {
                let fits = step > 0
                    && n > 0
                    && n <= max_ranges
                    && end > min
                    && min
                        .checked_add(step.checked_mul((n - 1) as i128).unwrap_or(i128::MAX))
                        .is_some_and(|last_lo| last_lo < end);
                if !fits {
                    return Err(format!(
                        "not a key range grid: from {min}, {n} ranges of {step} keys, to {end} (at most {max_ranges} ranges)"
                    ));
                }
                Some(RangeIndex { min, step, end, n })
            }
        };
        Ok(DirtySet {
            bits: vec![0; index.map_or(0, |i| i.n.div_ceil(64))],
            index,
            max_keys,
            ..DirtySet::default()
        })
    }

    /// The verifier's `ranges` as a grid: first key, width of each range (all but the last),
    /// end of the last, count (`None` when there are none).
    pub fn grid(ranges: &[(i128, i128)]) -> Option<(i128, i128, i128, usize)> {
        RangeIndex::of(ranges).map(|i| (i.min, i.step, i.end, i.n))
    }

    /// Records what one write touched.
    pub fn mark(&mut self, t: &Touched) {
        match t {
            Touched::Any => self.all = true,
            Touched::Keys(keys) => {
                for &k in keys {
                    if self.keys.len() < self.max_keys || self.keys.contains(&k) {
                        self.keys.insert(k);
                    } else {
                        self.mark_span(k, k);
                    }
                }
            }
            Touched::Spans(spans) => spans.iter().for_each(|&(lo, hi)| self.mark_span(lo, hi)),
        }
    }

    /// Marks the keys `lo..=hi`: the ranges they fall in, and the part outside every range.
    fn mark_span(&mut self, lo: i128, hi: i128) {
        let mut outside = |a: i128, b: i128| {
            self.outside = Some(match self.outside {
                Some((x, y)) => (x.min(a), y.max(b)),
                None => (a, b),
            });
        };
        let Some(ix) = self.index else {
            outside(lo, hi);
            return;
        };
        if lo < ix.min {
            outside(lo, hi.min(ix.min - 1));
        }
        if hi >= ix.end {
            outside(lo.max(ix.end), hi);
        }
        let (a, b) = (lo.max(ix.min), hi.min(ix.end - 1));
        if let (Some(first), Some(last)) = (ix.id(a), ix.id(b))
            && a <= b
        {
            for id in first..=last {
                self.bits[id / 64] |= 1 << (id % 64);
            }
        }
    }

    /// Whether nothing was marked.
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.keys.is_empty()
            && self.outside.is_none()
            && self.bits.iter().all(|w| *w == 0)
    }

    /// What was marked since the last take; the set is empty again afterwards (same ranges).
    pub fn take(&mut self) -> Dirty {
        let mut d = Dirty {
            all: std::mem::take(&mut self.all),
            keys: std::mem::take(&mut self.keys).into_iter().collect(),
            ranges: Vec::new(),
        };
        let mut ranges = Vec::new();
        if let Some(ix) = self.index {
            for id in 0..ix.n {
                if self.bits[id / 64] & (1 << (id % 64)) != 0 {
                    ranges.push(ix.range(id));
                }
            }
        }
        self.bits.iter_mut().for_each(|w| *w = 0);
        if let Some((lo, hi)) = self.outside.take() {
            ranges.push((lo, hi.saturating_add(1)));
        }
        d.add_ranges(ranges);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_marks_as_its_ranges_do() {
        let ranges = [(0, 1000), (1000, 2000), (2000, 2500)];
        let grid = DirtySet::grid(&ranges);
        assert_eq!(grid, Some((0, 1000, 2500, 3)));
        let mut a = DirtySet::new(&ranges, 1);
        let mut b = DirtySet::on_grid(grid, 1, 10).unwrap_or_default();
        for s in [&mut a, &mut b] {
            s.mark(&Touched::Keys(vec![5, 1500, 2400, 9000]));
        }
        assert_eq!(a.take(), b.take());
        assert!(DirtySet::on_grid(None, 1, 10).is_ok_and(|s| s.is_empty()));
        for bad in [
            (0, 0, 10, 1),
            (0, 10, 10, 2),
            (0, 10, 5, 0),
            (0, 1, 100, 11),
        ] {
            assert!(DirtySet::on_grid(Some(bad), 1, 10).is_err(), "{bad:?}");
        }
    }

    fn shape() -> KeyShape {
        KeyShape {
            pk: "id".into(),
            pk_index: 0,
            columns: 3,
            other_unique: false,
            auto_id_pk: false,
        }
    }

    fn t(sql: &str) -> Touched {
        touched(sql, &[], &shape(), &[])
    }

    #[test]
    fn reads_the_keys_a_write_can_change() {
        use Touched::*;
        assert_eq!(
            t("INSERT INTO orders (id, user_id, note) VALUES (5, 1, 'a'), (-7, 2, NULL)"),
            Keys(vec![5, -7])
        );
        assert_eq!(t("INSERT INTO orders VALUES (9, 1, 'a')"), Keys(vec![9]));
        assert_eq!(t("INSERT INTO orders VALUES (9, 1)"), Any);
        assert_eq!(t("INSERT INTO orders (user_id, note) VALUES (1, 'a')"), Any);
        assert_eq!(
            touched(
                "INSERT INTO orders (user_id, note) VALUES (1, 'a')",
                &[],
                &KeyShape {
                    auto_id_pk: true,
                    ..shape()
                },
                &[77]
            ),
            Keys(vec![77])
        );
        assert_eq!(
            t("INSERT INTO orders SET id = 4, note = 'x'"),
            Keys(vec![4])
        );
        assert_eq!(
            t("INSERT INTO orders (id, note) SELECT id, note FROM other"),
            Any
        );
        assert_eq!(t("REPLACE INTO orders VALUES (3, 1, 'a')"), Keys(vec![3]));
        let unique = KeyShape {
            other_unique: true,
            ..shape()
        };
        assert_eq!(
            touched("REPLACE INTO orders VALUES (3, 1, 'a')", &[], &unique, &[]),
            Any
        );
        assert_eq!(
            t("INSERT INTO orders VALUES (3, 1, 'a') ON DUPLICATE KEY UPDATE note = 'b'"),
            Keys(vec![3])
        );
        assert_eq!(
            t("INSERT INTO orders VALUES (3, 1, 'a') ON DUPLICATE KEY UPDATE id = 4"),
            Any
        );
        assert_eq!(
            t("UPDATE orders SET note = 'x' WHERE user_id = 7 AND id = 12"),
            Keys(vec![12])
        );
        assert_eq!(
            t("UPDATE orders o SET note = 'x' WHERE (o.id IN (1, 2) AND user_id = 3)"),
            Keys(vec![1, 2])
        );
        assert_eq!(t("UPDATE orders SET id = 5 WHERE id = 4"), Any);
        assert_eq!(t("UPDATE orders SET note = 'x' WHERE user_id = 7"), Any);
        assert_eq!(
            t("UPDATE orders SET note = 'x' WHERE id = 1 OR id = 2"),
            Any
        );
        assert_eq!(t("UPDATE orders SET note = 'x'"), Any);
        assert_eq!(
            t("DELETE FROM orders WHERE id BETWEEN 10 AND 20"),
            Spans(vec![(10, 20)])
        );
        assert_eq!(t("DELETE FROM orders WHERE 30 = id"), Keys(vec![30]));
        assert_eq!(t("DELETE FROM orders WHERE id = 'abc'"), Any);
        assert_eq!(t("DELETE FROM orders WHERE id IN (SELECT 1)"), Any);
        assert_eq!(
            t("DELETE o FROM orders o JOIN other x ON o.id = x.id WHERE o.id = 1"),
            Any
        );
        assert_eq!(t("not sql at all"), Any);
        // Prepared statements: the parameters are read as literals.
        assert_eq!(
            touched(
                "UPDATE orders SET note = ? WHERE id = ?",
                &[Value::Bytes("x".into()), Value::Int(41)],
                &shape(),
                &[]
            ),
            Keys(vec![41])
        );
    }

    #[test]
    fn dirty_set_keys_ranges_outside_and_overflow() {
        // Ranges as chunks() cuts [0, 2499] into ~1,000-key pieces.
        let ranges = super::super::reshard::chunks(0, 2499, 2500, 1000);
        assert_eq!(ranges, vec![(0, 834), (834, 1668), (1668, 2500)]);
        let mut d = DirtySet::new(&ranges, 3);
        assert!(d.is_empty() && d.take().is_empty());
        d.mark(&Touched::Keys(vec![5, 900, 5]));
        d.mark(&Touched::Keys(vec![10_000, 2000]));
        // Over three keys: 2000 falls back to its range.
        let got = d.take();
        assert_eq!(got.keys, vec![5, 900, 10_000]);
        assert_eq!(got.ranges, vec![(1668, 2500)]);
        assert!(d.is_empty());
        d.mark(&Touched::Spans(vec![(-5, 900)]));
        d.mark(&Touched::Spans(vec![(2400, 3000)]));
        let got = d.take();
        // [-5, -1] outside and [2500, 3000] outside join into one span covering the ranges.
        assert_eq!(got.ranges, vec![(-5, 3001)]);
        d.mark(&Touched::Keys(vec![1]));
        d.mark(&Touched::Any);
        let mut got = d.take();
        assert!(got.all);
        got.add_ranges([(0, 834)]);
        assert!(got.keys.is_empty(), "a key inside a range goes with it");
        let mut a = Dirty {
            all: false,
            keys: vec![1, 5, 2000],
            ranges: vec![(10, 20)],
        };
        let carried = a.within(&[(10, 20), (2000, 2001)]);
        assert_eq!(
            (carried.keys.clone(), carried.ranges.clone()),
            (vec![2000], vec![(10, 20)])
        );
        a.merge(Dirty {
            all: false,
            keys: vec![5, 3, 15],
            ranges: vec![(20, 30)],
        });
        assert_eq!((a.keys, a.ranges), (vec![1, 3, 5, 2000], vec![(10, 30)]));
        // No ranges (an empty table): everything is outside.
        let mut e = DirtySet::new(&[], 0);
        e.mark(&Touched::Keys(vec![7, 3]));
        assert_eq!(e.take().ranges, vec![(3, 8)]);
    }
}
