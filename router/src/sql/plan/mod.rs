//! Sharding plans: SQL in, a tree of primitives out (Vitess vtgate style), plus the pure merge code
//! that executes a plan over per-shard row streams. See `docs/sharding.md`.
//!
//! Leaves send SQL to shards ([`Route`], [`Scatter`]); inner nodes merge rows ([`MergeSort`],
//! [`Aggregate`], [`Filter`], [`Project`], [`Sort`], [`Limit`], [`Distinct`], [`Trim`]). Each unit of
//! shard SQL runs on a connection whose default schema is the shard's schema, so rewritten SQL names
//! physical tables without a schema.

pub mod aggregate;
pub mod cache;
pub mod collate;
pub mod ddl;
pub mod distinct;
pub mod eval;
pub mod exec;
pub mod group_stream;
pub mod insert_split;
pub mod limit;
pub mod merge_sort;
pub mod project;
mod pushdown;
pub mod route;
pub mod scatter;
mod select;
pub mod splice;
pub(crate) mod sqltext;
pub mod stream;
pub mod union;

use std::fmt::Write as _;

use codec::mysql::Value;
use sqlparser::ast::Statement;
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

pub use aggregate::{AggKind, AggSpec, Aggregate, SortedAggRows, SortedFold};
pub use cache::{Lookup, PlanCache, Point, Shape};
pub use collate::CollationOf;
pub use distinct::Distinct;
pub use exec::{ExecLimits, Output, RowSource, ShardResult, ShardRunner, VecRows, execute};
pub use group_stream::{GroupStream, GroupedRead, grouped_read};
pub use limit::{Admit, Limit, LimitCounter};
pub use merge_sort::{MergeSort, SortKey};
pub use project::{Filter, Project, Sort, Trim};
pub use route::Route;
pub use scatter::{Scatter, WriteMerge};
pub use stream::{
    Drain, SortedRead, StreamError, StreamExec, StreamOptions, Streamed, Want, sorted_read,
};
pub use union::{Union, UnionRows};

use super::shard::{RuleError, ShardingRules};

/// Nesting depth sqlparser may reach before giving up (hostile input).
pub const RECURSION_LIMIT: usize = 64;

/// Why a statement cannot be planned or executed over shards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// The SQL does not parse.
    #[error("SQL syntax: {0}")]
    Syntax(String),
    /// The statement is valid SQL that Furrow cannot run over shards (names what is unsupported).
    #[error("not supported on sharded tables: {0}")]
    Unsupported(String),
    /// A cross-shard LIMIT would fetch more than the cap from every shard.
    #[error(
        "LIMIT {offset}, {count} needs {need} rows from every shard; the cap is max_limit_rows = {cap}"
    )]
    LimitCap {
        /// The offset asked for.
        offset: u64,
        /// The row count asked for.
        count: u64,
        /// offset + count.
        need: u64,
        /// The configured cap.
        cap: u64,
    },
    /// A merge needed to hold more rows than the budget.
    #[error("the merge needs more than max_scatter_rows = {0} rows in memory; narrow the query")]
    MemoryBudget(u64),
    /// A routing rule rejected a value.
    #[error("{0}")]
    Rule(#[from] RuleError),
    /// A shard failed (its message).
    #[error("shard {shard}: {message}")]
    Backend {
        /// Shard name.
        shard: String,
        /// Backend error text.
        message: String,
    },
}

impl ShardError {
    /// The MySQL error code and SQLSTATE to send to the client.
    pub fn mysql_code(&self) -> (u16, &'static str) {
        match self {
            ShardError::Syntax(_) => (1064, "42000"),
            ShardError::Unsupported(_) => (1235, "42000"),
            ShardError::LimitCap { .. } => (1235, "42000"),
            ShardError::MemoryBudget(_) => (1038, "HY001"),
            ShardError::Rule(_) => (1526, "HY000"),
            ShardError::Backend { .. } => (1105, "HY000"),
        }
    }
}

/// One statement for one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Shard index in [`ShardingRules::shards`].
    pub shard: usize,
    /// The SQL to run there (on a connection whose default schema is the shard's).
    pub sql: String,
}

/// A plan: a tree of primitives.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// One unit; its result is the client's result.
    Route(Route),
    /// Many units; rows concatenated, or write counts merged.
    Scatter(Scatter),
    /// k-way merge of sorted shard streams.
    MergeSort(MergeSort),
    /// Merge partial aggregates per group.
    Aggregate(Aggregate),
    /// Keep rows matching a predicate (HAVING).
    Filter(Filter),
    /// Compute output columns.
    Project(Project),
    /// In-memory sort (bounded).
    Sort(Sort),
    /// OFFSET/LIMIT.
    Limit(Limit),
    /// Remove duplicate rows (bounded).
    Distinct(Distinct),
    /// Drop trailing helper columns.
    Trim(Trim),
    /// `SELECT furrow_next_id()`: a global id made by the proxy.
    NextId,
    /// The rows of several plans in turn (`UNION ALL` across shards).
    Union(Union),
}

impl Plan {
    /// A stable text rendering (golden tests, `EXPLAIN`).
    pub fn render(&self, rules: &ShardingRules) -> String {
        let mut out = String::new();
        self.render_into(rules, 0, &mut out);
        out
    }

    fn render_into(&self, rules: &ShardingRules, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        let line = match self {
            Plan::Route(_) => "Route".to_string(),
            Plan::Scatter(s) => format!("Scatter {}", s.describe()),
            Plan::MergeSort(m) => format!("MergeSort {}", m.describe()),
            Plan::Aggregate(a) => format!("Aggregate {}", a.describe()),
            Plan::Filter(f) => format!("Filter {}", f.predicate),
            Plan::Project(p) => format!("Project {}", p.describe()),
            Plan::Sort(s) => format!("Sort {}", merge_sort::keys_text(&s.keys)),
            Plan::Limit(l) => format!("Limit offset={} count={}", l.offset, l.count),
            Plan::Distinct(_) => "Distinct".to_string(),
            Plan::Trim(t) => format!("Trim drop={}", t.drop),
            Plan::NextId => "NextId".to_string(),
            Plan::Union(u) => format!("Union inputs={}", u.inputs.len()),
        };
        let _ = writeln!(out, "{pad}{line}");
        let units: &[Unit] = match self {
            Plan::Route(r) => std::slice::from_ref(&r.unit),
            Plan::Scatter(s) => &s.units,
            Plan::MergeSort(m) => &m.input.units,
            _ => &[],
        };
        for u in units {
            let shard = rules.shards.get(u.shard).map_or("?", |s| s.name.as_str());
            let _ = writeln!(out, "{pad}  {shard}: {}", u.sql);
        }
        for child in self.children() {
            child.render_into(rules, depth + 1, out);
        }
    }

    /// The inputs of a node: one for the merge primitives, several for a [`Union`].
    pub fn children(&self) -> &[Plan] {
        match self {
            Plan::Union(u) => &u.inputs,
            other => other.child().map_or(&[], std::slice::from_ref),
        }
    }

    /// Every unit the plan runs, in plan order.
    pub fn units(&self) -> Vec<&Unit> {
        let mut out = Vec::new();
        self.units_into(&mut out);
        out
    }

    fn units_into<'p>(&'p self, out: &mut Vec<&'p Unit>) {
        match self {
            Plan::Route(r) => out.push(&r.unit),
            Plan::Scatter(s) => out.extend(s.units.iter()),
            Plan::MergeSort(m) => out.extend(m.input.units.iter()),
            _ => {}
        }
        for c in self.children() {
            c.units_into(out);
        }
    }

    /// The input of an inner node.
    pub fn child(&self) -> Option<&Plan> {
        match self {
            Plan::Aggregate(a) => Some(&a.input),
            Plan::Filter(f) => Some(&f.input),
            Plan::Project(p) => Some(&p.input),
            Plan::Sort(s) => Some(&s.input),
            Plan::Limit(l) => Some(&l.input),
            Plan::Distinct(d) => Some(&d.input),
            Plan::Trim(t) => Some(&t.input),
            Plan::Route(_)
            | Plan::Scatter(_)
            | Plan::MergeSort(_)
            | Plan::NextId
            | Plan::Union(_) => None,
        }
    }
}

/// What the planner needs besides the SQL.
pub struct PlanContext<'a> {
    /// The sharding rules.
    pub rules: &'a ShardingRules,
    /// Bound parameters of a prepared statement (`?` in order); empty for text queries.
    pub params: &'a [Value],
    /// Makes global ids (for INSERTs that omit an `auto_id` column).
    pub next_id: &'a mut dyn FnMut() -> u64,
}

/// Plans one statement.
pub fn plan(sql: &str, cx: &mut PlanContext<'_>) -> Result<Plan, ShardError> {
    plan_with(sql, cx, None)
}

/// Plans one statement with `cache` (see [`cache`]): a statement of a known shape is not parsed
/// again, and a point statement of a known shape is not even planned. The plan is the same as
/// [`plan`]'s. `cache` must belong to `cx.rules`.
pub fn plan_cached(
    sql: &str,
    cx: &mut PlanContext<'_>,
    cache: &mut PlanCache,
) -> Result<Plan, ShardError> {
    plan_with(sql, cx, Some(cache))
}

/// [`plan_cached`] for a statement without parameters whose shape the caller already computed
/// (to ask [`PlanCache::point`] first): the same plan, without lexing the statement again.
pub fn plan_cached_shaped(
    sql: &str,
    shape: Option<&Shape<'_>>,
    cx: &mut PlanContext<'_>,
    cache: &mut PlanCache,
) -> Result<Plan, ShardError> {
    if !cx.params.is_empty() {
        return plan_with(sql, cx, Some(cache));
    }
    cache.plan_shaped(sql, shape, cx)
}

fn plan_with(
    sql: &str,
    cx: &mut PlanContext<'_>,
    cache: Option<&mut PlanCache>,
) -> Result<Plan, ShardError> {
    let text;
    let sql = if cx.params.is_empty() {
        sql
    } else {
        text = sqltext::bind_params(sql, cx.params)?;
        text.as_str()
    };
    match cache {
        Some(c) => c.plan(sql, cx),
        None => plan_statement(parse_one(sql)?, &splice::Source::new(sql), cx),
    }
}

/// Plans a parsed statement; `src` is the text it was parsed from (see [`splice`]): every unit's
/// SQL is that text with edits spliced in.
fn plan_statement(
    stmt: Statement,
    src: &splice::Source<'_>,
    cx: &mut PlanContext<'_>,
) -> Result<Plan, ShardError> {
    if src.has_exec_comment() && select::mentions_special(src.sql(), cx.rules) {
        // The server runs the body of `/*! ... */` and `/*M! ... */`; the parser skips it, so the
        // plan would be made for another statement than the one that runs.
        return Err(ShardError::Unsupported(
            "executable comments (/*! ... */) in statements on sharded or broadcast tables".into(),
        ));
    }
    match stmt {
        Statement::Query(q) => select::plan_query(*q, src, cx),
        Statement::Insert(i) => insert_split::plan_insert(i, src, cx),
        Statement::Update(u) => route::plan_update(u, src, cx),
        Statement::Delete(d) => route::plan_delete(d, src, cx),
        other => ddl::plan_other(other, src, cx),
    }
}

/// Parses `sql`, which must hold exactly one statement (after the nesting guard).
pub(crate) fn parse_one(sql: &str) -> Result<Statement, ShardError> {
    crate::sql::guard::check(sql).map_err(|e| ShardError::Unsupported(e.to_string()))?;
    let mut stmts = Parser::new(&MySqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| ShardError::Syntax(e.to_string()))?;
    if stmts.len() != 1 {
        return Err(ShardError::Unsupported(format!(
            "{} statements in one query (send one at a time)",
            stmts.len()
        )));
    }
    Ok(stmts.remove(0)) // ok: exactly one statement
}
