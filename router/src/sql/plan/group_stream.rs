//! Streaming GROUP BY, push-based: plans whose groups can be produced one at a time from the shards'
//! sorted partial rows and sent on as soon as each is complete. The shape is
//! `[Trim] → [Limit] → Project → [Filter] → Aggregate(sorted) → MergeSort` (row-by-row nodes in any
//! order above a sorted aggregate over a sorted merge): the planner makes it when the ORDER BY only
//! names group columns (or is absent), and then the output order is the group order.
//!
//! The pull pipeline of [`super::execute`] reads its input through the sync [`super::RowSource`],
//! which cannot wait on sockets. Here the streaming executor ([`super::stream::StreamExec`], fed
//! from one socket per unit) merges the partial rows and pushes each one into a [`GroupStream`],
//! which folds it into the open
//! group ([`SortedFold`]) and, when a group closes, runs it through the nodes above (HAVING, the
//! projection, OFFSET/LIMIT, helper-column trim) exactly as the pull pipeline would. Memory: the
//! open group (its distinct value sets bounded by `max_rows`) and whatever the caller holds.
//!
//! Not streamed: a `Sort` above the aggregate (ORDER BY an aggregate: the output order is not the
//! group order) and `Distinct` (its seen set grows with the output); such plans keep the buffered
//! path.

use codec::mysql::ColumnDefinition;

use super::aggregate::SortedFold;
use super::eval::OutExpr;
use super::exec::{ExecLimits, Row};
use super::limit::{Admit, LimitCounter};
use super::{Aggregate, MergeSort, Plan, ShardError};

/// A plan that streams group by group (see the module docs).
#[derive(Debug)]
pub struct GroupedRead<'a> {
    /// The sorted merge of the shards' partial rows (units and keys).
    pub merge: &'a MergeSort,
    /// The sorted aggregate over the merge.
    pub agg: &'a Aggregate,
    /// The row-by-row nodes above the aggregate, innermost first.
    above: Vec<&'a Plan>,
}

/// The group-streaming shape of `p`, if it has one (with at least one unit).
pub fn grouped_read(p: &Plan) -> Option<GroupedRead<'_>> {
    let mut above = Vec::new();
    let mut node = p;
    loop {
        match node {
            Plan::Trim(_) | Plan::Limit(_) | Plan::Project(_) | Plan::Filter(_) => {
                above.push(node);
                node = node.child()?;
            }
            Plan::Aggregate(a) if !a.sorted.is_empty() && !a.group.is_empty() && !a.rollup => {
                let Plan::MergeSort(m) = &*a.input else {
                    return None;
                };
                if m.input.units.is_empty() {
                    return None;
                }
                above.reverse();
                return Some(GroupedRead {
                    merge: m,
                    agg: a,
                    above,
                });
            }
            _ => return None,
        }
    }
}

impl GroupedRead<'_> {
    /// Starts the stream over partial rows of `in_columns` (the units' column definitions).
    pub fn start(&self, in_columns: Vec<ColumnDefinition>, limits: ExecLimits) -> GroupStream {
        let fold = self.agg.fold_sorted(in_columns, limits);
        let mut columns = fold.columns().to_vec();
        let mut steps = Vec::with_capacity(self.above.len());
        for node in &self.above {
            let step = match node {
                Plan::Filter(f) => Step::Filter(f.predicate.clone(), columns.clone()),
                Plan::Project(p) => {
                    let input = columns.clone();
                    columns = p
                        .exprs
                        .iter()
                        .zip(&p.names)
                        .map(|(e, n)| e.column(&columns, n))
                        .collect();
                    Step::Project(p.exprs.clone(), input)
                }
                Plan::Limit(l) => Step::Limit(LimitCounter::new(l.offset, l.count)),
                Plan::Trim(t) => {
                    let keep = columns.len().saturating_sub(t.drop);
                    columns.truncate(keep);
                    Step::Trim(keep)
                }
                _ => continue, // ok: grouped_read admits only the nodes above
            };
            steps.push(step);
        }
        GroupStream {
            fold,
            steps,
            columns,
        }
    }
}

/// One row-by-row node above the aggregate.
#[derive(Debug, Clone)]
enum Step {
    /// HAVING: keep rows (of these columns) where it holds.
    Filter(OutExpr, Vec<ColumnDefinition>),
    /// Output columns (from input rows of these columns).
    Project(Vec<OutExpr>, Vec<ColumnDefinition>),
    /// OFFSET/LIMIT: rows still to skip, rows still to pass.
    Limit(LimitCounter),
    /// Keep the first columns (helper columns dropped).
    Trim(usize),
}

/// The running group stream: partial rows in ([`GroupStream::push`]), finished output rows out.
pub struct GroupStream {
    fold: SortedFold,
    steps: Vec<Step>,
    columns: Vec<ColumnDefinition>,
}

impl GroupStream {
    /// The output columns (what the buffered path would send for the same plan).
    pub fn columns(&self) -> &[ColumnDefinition] {
        &self.columns
    }

    /// Adds the next partial row (rows must come in the merge's order). Returns an output row when
    /// the row closes a group that passes the nodes above.
    pub fn push(&mut self, row: Row) -> Result<Option<Row>, ShardError> {
        match self.fold.push(row)? {
            Some(g) => self.apply(g),
            None => Ok(None),
        }
    }

    /// Ends the input: the last output row, if the last group passes.
    pub fn finish(&mut self) -> Result<Option<Row>, ShardError> {
        match self.fold.finish()? {
            Some(g) => self.apply(g),
            None => Ok(None),
        }
    }

    /// Whether no further row can come out (a LIMIT is used up): the caller may stop reading.
    pub fn is_done(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Limit(c) if c.is_done()))
    }

    fn apply(&mut self, mut row: Row) -> Result<Option<Row>, ShardError> {
        for s in &mut self.steps {
            match s {
                Step::Filter(p, cols) => {
                    p.check(cols)?;
                    if !p.holds(&row, cols)? {
                        return Ok(None);
                    }
                }
                Step::Project(exprs, cols) => {
                    row = exprs
                        .iter()
                        .map(|e| e.check(cols).and_then(|()| e.output(&row, cols)))
                        .collect::<Result<Row, ShardError>>()?;
                }
                Step::Limit(c) => {
                    if c.admit() != Admit::Pass {
                        return Ok(None);
                    }
                }
                Step::Trim(keep) => row.truncate(*keep),
            }
        }
        Ok(Some(row))
    }
}
