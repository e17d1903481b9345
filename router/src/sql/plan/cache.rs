//! A cache of parsed statements keyed by their *shape*: the SQL text with its simple literals
//! (`42`, `3.5`, `'abc'`) replaced by numbered placeholders (`?1`, `?2`, ...).
//!
//! Applications send the same few statement shapes over and over with different values
//! (`SELECT ... WHERE id = 17`, then `... = 18`). Tokenizing and parsing them with `sqlparser` was
//! the largest user-space cost of a sharded point select. With the cache, a statement of a known
//! shape costs one pass of Furrow's small lexer (to find the shape and its literals), a clone of the
//! cached syntax tree and the substitution of the literals into it; the planner then runs on a tree
//! equal to what parsing the text would have given.
//!
//! Safety of the substitution: a shape is admitted only after checking, on the first statement of
//! that shape, that parsing the shape and substituting that statement's literals gives a tree
//! *equal* (`==`, spans ignored) to parsing the statement itself. Only literals whose token class
//! does not depend on their value are replaced — unsigned decimal numbers without exponent and
//! single-quoted strings without quotes or backslashes inside (no escapes to interpret) — so
//! another statement of the same shape parses to the same tree with its own literals. Shapes that
//! fail the check (a literal where the grammar wants a bare number, as in `DECIMAL(10, 2)`, or a
//! literal inside an executable comment) are remembered as not cacheable and always parsed.
//!
//! Routed point statements go one step further. When a shape is a `SELECT` from one sharded table
//! whose `WHERE` is a conjunction in which exactly one condition names the shard key, as
//! `key = <literal>`, its partition depends on that literal alone. Once such a statement has been
//! planned to a single-shard [`Route`], its per-shard SQL is kept as a template per partition
//! (pieces of text and literal slots, checked by re-lexing the rendered SQL: every literal of the
//! statement appears in it exactly once, and nothing else that looks like one). The next statement
//! of that shape whose key falls in a known partition is answered by computing the partition from
//! the key literal with the rule's algorithm (the same function, with the same errors, as the
//! planner) and filling the template: no tree, no planning, no rendering.
//!
//! The point path of a sharded listener goes one step further still ([`PlanCache::lookup`]): it
//! does not build the shape text at all. One byte scan writes the statement's *skeleton* (its
//! bytes with each literal replaced by a one-byte marker of its kind, as the statement cache of
//! the read/write-split path keys statements) into a reused buffer, and a second map finds the
//! route template by skeleton. For a statement whose literals are all simple, skeleton and shape
//! text determine each other (equal skeletons: equal bytes but for literal values; all literals
//! replaced in both), so the answer is the one the shape's entry gives; statements with any other
//! literal never use that map. The map only holds what the shape entries hold: it is filled from
//! them when a statement of a known point shape is answered, and emptied whenever a shape's
//! templates change.
//!
//! A `PlanCache` belongs to one set of [`ShardingRules`] (templates name physical tables): make a
//! new one when the rules change.
//!
//! Memory is bounded: at most [`PlanCache::CAPACITY`] shapes of at most [`MAX_SHAPE_LEN`] bytes
//! each; a full cache is emptied and refilled (statement shapes of a workload are few; a workload
//! with unbounded shapes, such as generated IN lists of every length, only loses the cache).

use std::ops::ControlFlow;
use std::rc::Rc;

use sqlparser::ast::{
    BinaryOperator, Expr, Ident, SetExpr, Statement, TableFactor, Value, ValueWithSpan, Visit,
    VisitMut, Visitor, VisitorMut,
};

use super::route::{Route, base_name, partition_of};
use super::splice::{Slot, Source};
use super::{Plan, PlanContext, ShardError, Unit, parse_one, plan_statement};
use crate::sql::digest::{Digest, digest};
use crate::sql::lexer::{
    LitKind, SKELETON_NUMBER, SKELETON_STRING, Token, scan_literals, tokenize,
};
use crate::sql::shard::{KeyValue, ShardingRules, TableKind};

/// Longest statement (in bytes) whose shape is cached; longer ones are always parsed.
pub const MAX_SHAPE_LEN: usize = 4096;

/// Parsed statement shapes and route templates of one core and one set of sharding rules (see the
/// module documentation).
#[derive(Default)]
pub struct PlanCache {
    shapes: crate::FastMap<Box<str>, Known>,
    /// Point shapes by the skeleton of their statements whose literals are all simple (see the
    /// module documentation): what [`Self::lookup`] answers without building a shape.
    points: crate::FastMap<Box<[u8]>, PointEntry>,
    /// Reused by every [`Self::lookup`]: the statement's skeleton and its literals' spans.
    key: Vec<u8>,
    spans: Vec<(usize, usize, LitKind)>,
    hits: u64,
    misses: u64,
    routed: u64,
}

/// What is known of one shape.
struct Known {
    /// The shape's tree with placeholders, when substitution was verified.
    tree: Option<Statement>,
    /// Route templates, when the shape is a point statement on a sharded table (shared with
    /// the entries of `points` made from it; changed only by copy, after which `points` is
    /// emptied).
    route: Option<Rc<RouteShape>>,
    /// The digest shared by every statement of the shape (kept for point shapes, whose
    /// statements are answered by [`PlanCache::point`] without another lexer pass).
    digest: Option<Rc<Digest>>,
}

/// A point statement answered from a route template by [`PlanCache::point`].
#[derive(Debug)]
pub struct Point {
    /// Where it runs and the SQL to send there.
    pub unit: Unit,
    /// Its digest (the same for every statement of its shape).
    pub digest: Rc<Digest>,
}

/// A point shape's templates found by skeleton ([`PlanCache::lookup`]).
struct PointEntry {
    /// The shape's templates.
    route: Rc<RouteShape>,
    /// Index of the table's rule in the rules' `tables` (what `rules.table(name)` finds).
    rule: usize,
    /// The shape's digest.
    digest: Rc<Digest>,
}

/// What [`PlanCache::lookup`] found for a statement.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A statement of a known point shape, routed from its template: the unit's shard (its SQL
    /// was written to the caller's buffer) and the statement's digest.
    Point {
        /// The unit's shard.
        shard: usize,
        /// The digest of every statement of the shape.
        digest: Rc<Digest>,
    },
    /// Anything else: the statement's shape for the planner (`None`: too long to cache).
    Shape(Option<Shape<'a>>),
}

/// A point `SELECT` shape: its partition comes from one literal.
#[derive(Clone)]
struct RouteShape {
    /// The sharded table (logical name).
    table: String,
    /// Index of the key literal in the shape's literals.
    key: usize,
    /// Per-shard SQL per partition, learnt from planned statements. Looked up once per point
    /// statement: a fast hasher (partition numbers come from the rules, not from clients, so
    /// SipHash's flooding resistance buys nothing here and cost ~100 instructions a lookup).
    units: crate::FastMap<usize, Vec<Piece>>,
}

/// A part of a per-shard SQL template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// The statement's literal with this index, as written.
    Lit(usize),
}

/// A literal taken out of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lit<'a> {
    /// An unsigned decimal number, as written.
    Number(&'a str),
    /// The inside of a single-quoted string without escapes.
    Str(&'a str),
}

impl Lit<'_> {
    /// The literal as a shard-key value (as the planner reads it).
    fn key(&self) -> KeyValue {
        match self {
            Lit::Number(s) | Lit::Str(s) => KeyValue::from_text(s),
        }
    }

    /// Appends the literal as written in SQL.
    fn write_to(&self, out: &mut String) {
        match self {
            Lit::Number(s) => out.push_str(s),
            Lit::Str(s) => {
                out.push('\'');
                out.push_str(s);
                out.push('\'');
            }
        }
    }
}

/// A statement's shape: its text with simple literals numbered `?1..?n`, and those literals in
/// order (`?1` is `lits[0]`). Computed once per statement ([`Shape::of`]) and handed to
/// [`PlanCache::point`] and then, when that does not answer, to [`super::plan_cached_shaped`].
#[derive(Debug)]
pub struct Shape<'a> {
    text: String,
    lits: Vec<Lit<'a>>,
    /// Where each `?N` stands in `text` and its literal in the statement (same order as `lits`).
    slots: Vec<Slot>,
    /// The statement carries a Furrow hint comment (`/* furrow:... */`): its shape never gets
    /// route templates, whichever path planned it, so [`PlanCache::point`] never answers a
    /// statement that a hint should send elsewhere.
    hinted: bool,
}

impl<'a> Shape<'a> {
    /// The shape of `sql` (one pass of the lexer), or `None` when it is too long to cache.
    pub fn of(sql: &'a str) -> Option<Shape<'a>> {
        shape(sql)
    }

    /// The shape text (`?N` for the N-th literal).
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl PlanCache {
    /// Most shapes kept at once.
    pub const CAPACITY: usize = 1024;

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Statements whose tree came from the cache, statements parsed, and statements answered
    /// from a route template (no planning at all), since the cache was made.
    pub fn stats(&self) -> (u64, u64, u64) {
        (self.hits, self.misses, self.routed)
    }

    /// Shapes known (cacheable or not).
    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    /// Whether no shape is known.
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    /// The one statement in `sql`, parsed or taken from the cache; the same result (and the same
    /// errors) as parsing it.
    pub fn parse(&mut self, sql: &str) -> Result<Statement, ShardError> {
        let Some(shape) = shape(sql) else {
            self.misses += 1;
            return parse_one(sql);
        };
        self.parse_shape(sql, &shape, None).map(|(stmt, _)| stmt)
    }

    /// The route of a statement of a known point shape, from its template, with the shape's
    /// digest: no classification, no parse, no plan. `Ok(None)`: not a known point shape (or its
    /// partition has no template yet); plan it. Errors are the planner's (e.g. a key that the
    /// rule cannot place). The statement this answers is a single `SELECT` (the shape parsed as
    /// one), so a caller that checks statement kinds, hints and multi-statements before planning
    /// may skip those checks for it: a shape's comments are part of its text, and a shape that
    /// carried a hint was never planned.
    pub fn point(
        &mut self,
        shape: &Shape<'_>,
        rules: &ShardingRules,
    ) -> Result<Option<Point>, ShardError> {
        let mut sql = String::new();
        Ok(self
            .point_into(shape, rules, &mut sql)?
            .map(|(shard, digest)| Point {
                unit: Unit { shard, sql },
                digest,
            }))
    }

    /// [`Self::point`] writing the unit's SQL into `sql` (cleared first), so that a caller can
    /// reuse one buffer for every statement: returns the unit's shard and the digest.
    pub fn point_into(
        &mut self,
        shape: &Shape<'_>,
        rules: &ShardingRules,
        sql: &mut String,
    ) -> Result<Option<(usize, Rc<Digest>)>, ShardError> {
        let Some(Known {
            route: Some(r),
            digest: Some(d),
            ..
        }) = self.shapes.get(shape.text.as_str())
        else {
            return Ok(None);
        };
        let Some(shard) = r.fill_into(&shape.lits, rules, sql)? else {
            return Ok(None);
        };
        let digest = d.clone();
        self.routed += 1;
        Ok(Some((shard, digest)))
    }

    /// The point route of `sql` or, when it has none, its shape: the same answers as
    /// [`Shape::of`] followed by [`Self::point_into`], from one byte scan. A statement of a point
    /// shape whose literals are all simple is found by its skeleton, with no shape text built
    /// and nothing allocated (see the module documentation); otherwise the shape is built from
    /// the literals that scan found (the text is not scanned again) and asked as `point_into`
    /// would be, and a point answer teaches the skeleton map. The unit's SQL goes into `sql`
    /// (cleared first) on a point answer.
    pub fn lookup<'a>(
        &mut self,
        sql: &'a str,
        rules: &ShardingRules,
        out: &mut String,
    ) -> Result<Lookup<'a>, ShardError> {
        if sql.len() > MAX_SHAPE_LEN {
            return Ok(Lookup::Shape(None));
        }
        let mut key = std::mem::take(&mut self.key);
        let mut spans = std::mem::take(&mut self.spans);
        key.clear();
        spans.clear();
        let b = sql.as_bytes();
        let mut last = 0;
        let mut simple = true;
        let scanned = scan_literals(sql, |start, end, kind| {
            key.extend_from_slice(&b[last..start]);
            key.push(match kind {
                LitKind::Number => SKELETON_NUMBER,
                LitKind::Str => SKELETON_STRING,
            });
            last = end;
            simple &= simple_literal(&sql[start..end], kind).is_some();
            spans.push((start, end, kind));
            true
        });
        let r = if scanned {
            key.extend_from_slice(&b[last..]);
            self.lookup_scanned(sql, rules, out, &key, &spans, simple)
        } else {
            // Comments (hints live there) or unusual literals: the tokenizer's shape, asked as
            // `point_into` would be (a shape with a comment may be a point shape; a hinted one
            // never is).
            self.point_or_shape(shape_tokenized(sql), rules, out)
        };
        self.key = key;
        self.spans = spans;
        r
    }

    /// [`Self::lookup`] once the scan found `spans` and the skeleton `key` (`simple`: every
    /// literal is one a shape replaces).
    fn lookup_scanned<'a>(
        &mut self,
        sql: &'a str,
        rules: &ShardingRules,
        out: &mut String,
        key: &[u8],
        spans: &[(usize, usize, LitKind)],
        simple: bool,
    ) -> Result<Lookup<'a>, ShardError> {
        if simple
            && let Some(e) = self.points.get(key)
            && let Some(shard) = e.fill(sql, spans, rules, out)?
        {
            let digest = e.digest.clone();
            self.routed += 1;
            return Ok(Lookup::Point { shard, digest });
        }
        let mut b = ShapeBuilder::new(sql);
        for &(start, end, kind) in spans {
            if let Some(lit) = simple_literal(&sql[start..end], kind) {
                b.literal(start, end, lit);
            }
        }
        let Some(shape) = b.finish(false) else {
            return Ok(Lookup::Shape(None));
        };
        let Some((shard, digest)) = self.point_into(&shape, rules, out)? else {
            return Ok(Lookup::Shape(Some(shape)));
        };
        if simple {
            self.learn_skeleton(key, &shape, rules);
        }
        Ok(Lookup::Point { shard, digest })
    }

    /// The point answer for `shape`, as [`Self::point_into`] gives it, else the shape.
    fn point_or_shape<'a>(
        &mut self,
        shape: Option<Shape<'a>>,
        rules: &ShardingRules,
        out: &mut String,
    ) -> Result<Lookup<'a>, ShardError> {
        let Some(shape) = shape else {
            return Ok(Lookup::Shape(None));
        };
        Ok(match self.point_into(&shape, rules, out)? {
            Some((shard, digest)) => Lookup::Point { shard, digest },
            None => Lookup::Shape(Some(shape)),
        })
    }

    /// Files the point shape `shape` (known, with templates) under the skeleton `key` of a
    /// statement of it whose literals are all simple.
    fn learn_skeleton(&mut self, key: &[u8], shape: &Shape<'_>, rules: &ShardingRules) {
        let Some(Known {
            route: Some(route),
            digest: Some(digest),
            ..
        }) = self.shapes.get(shape.text.as_str())
        else {
            return;
        };
        // The rule `rules.table` finds (the first of that name).
        let Some(rule) = rules
            .tables
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(&route.table))
        else {
            return;
        };
        let entry = PointEntry {
            route: route.clone(),
            rule,
            digest: digest.clone(),
        };
        if self.points.len() >= Self::CAPACITY {
            self.points.clear();
        }
        self.points.insert(key.into(), entry);
    }

    /// Plans `sql` (parameters already bound) as [`super::plan`] would.
    pub(super) fn plan(&mut self, sql: &str, cx: &mut PlanContext<'_>) -> Result<Plan, ShardError> {
        let shape = shape(sql);
        self.plan_shaped(sql, shape.as_ref(), cx)
    }

    /// [`Self::plan`] with the shape of `sql` already computed (`None`: too long to cache).
    pub(super) fn plan_shaped(
        &mut self,
        sql: &str,
        shape: Option<&Shape<'_>>,
        cx: &mut PlanContext<'_>,
    ) -> Result<Plan, ShardError> {
        let Some(shape) = shape else {
            self.misses += 1;
            return plan_statement(parse_one(sql)?, &Source::new(sql), cx);
        };
        if let Some(Known { route: Some(r), .. }) = self.shapes.get(shape.text.as_str())
            && let Some(unit) = r.fill(&shape.lits, cx.rules)?
        {
            self.routed += 1;
            return Ok(Plan::Route(Route { unit }));
        }
        let (stmt, cached) = self.parse_shape(sql, shape, Some(cx.rules))?;
        // A cached tree was parsed from the shape: its positions are the shape's.
        let src = if cached {
            Source::with_slots(&shape.text, sql, &shape.slots)
        } else {
            Source::new(sql)
        };
        let plan = plan_statement(stmt, &src, cx)?;
        if let Plan::Route(r) = &plan
            && let Some(Known {
                route: route @ Some(_),
                ..
            }) = self.shapes.get_mut(shape.text.as_str())
        {
            let before = route.as_ref().map(|r| r.units.len());
            if !learn(route, &r.unit, &shape.lits, cx.rules) {
                *route = None;
            }
            if route.as_ref().map(|r| r.units.len()) != before {
                // The skeleton map holds copies of the old templates.
                self.points.clear();
            }
        }
        Ok(plan)
    }

    /// The tree of `sql` (shape `shape`) from the cache, or parsed (and the shape learnt), and
    /// whether it came from the cache (its positions are then the shape text's). With `rules`, a
    /// new shape is also checked for being a point statement (route templates).
    fn parse_shape(
        &mut self,
        sql: &str,
        shape: &Shape<'_>,
        rules: Option<&ShardingRules>,
    ) -> Result<(Statement, bool), ShardError> {
        if let Some(known) = self.shapes.get(shape.text.as_str()) {
            if let Some(tree) = &known.tree {
                let mut stmt = tree.clone();
                if substitute(&mut stmt, &shape.lits) {
                    self.hits += 1;
                    return Ok((stmt, true));
                }
            }
            self.misses += 1;
            return parse_one(sql).map(|s| (s, false));
        }
        self.misses += 1;
        let stmt = parse_one(sql)?;
        let tree = cacheable(&stmt)
            .then(|| parse_one(&shape.text).ok())
            .flatten()
            .filter(|tree| {
                let mut check = tree.clone();
                substitute(&mut check, &shape.lits) && check == stmt
            });
        let route = match (&tree, rules) {
            (Some(t), Some(rules)) if !shape.hinted => point_key(t, rules).map(|(table, key)| {
                Rc::new(RouteShape {
                    table,
                    key,
                    units: crate::FastMap::default(),
                })
            }),
            _ => None,
        };
        if self.shapes.len() >= Self::CAPACITY {
            self.shapes.clear();
            self.points.clear();
        }
        let digest = route.is_some().then(|| Rc::new(digest(sql)));
        self.shapes.insert(
            shape.text.clone().into_boxed_str(),
            Known {
                tree,
                route,
                digest,
            },
        );
        Ok((stmt, false))
    }
}

impl RouteShape {
    /// The unit of a statement with literals `lits` from a learnt template; `Ok(None)` when its
    /// partition has no template yet. Rule errors are the planner's.
    fn fill(&self, lits: &[Lit<'_>], rules: &ShardingRules) -> Result<Option<Unit>, ShardError> {
        let mut sql = String::new();
        Ok(self
            .fill_into(lits, rules, &mut sql)?
            .map(|shard| Unit { shard, sql }))
    }

    /// [`Self::fill`] into `sql` (cleared first); returns the unit's shard.
    fn fill_into(
        &self,
        lits: &[Lit<'_>],
        rules: &ShardingRules,
        sql: &mut String,
    ) -> Result<Option<usize>, ShardError> {
        if self.units.is_empty() {
            // No statement of this shape planned to a Route yet: the planner decides (and its
            // errors, which may come before routing, are the ones to give).
            return Ok(None);
        }
        let TableKind::Sharded(rule) = rules.table(&self.table) else {
            return Ok(None);
        };
        let Some(lit) = lits.get(self.key) else {
            return Ok(None);
        };
        let p = partition_of(rule, &lit.key())?;
        let Some(pieces) = self.units.get(&p) else {
            return Ok(None);
        };
        sql.clear();
        sql.reserve(pieces.iter().map(Piece::len).sum::<usize>() + 16);
        for piece in pieces {
            match piece {
                Piece::Text(t) => sql.push_str(t),
                Piece::Lit(i) => match lits.get(*i) {
                    Some(l) => l.write_to(sql),
                    None => return Ok(None),
                },
            }
        }
        Ok(Some(rule.shard_of(p)))
    }
}

impl PointEntry {
    /// [`RouteShape::fill_into`] for a statement with literal spans `spans` (all simple): the
    /// literals are written as they stand in `sql`, which is how `fill_into` writes them.
    fn fill(
        &self,
        sql: &str,
        spans: &[(usize, usize, LitKind)],
        rules: &ShardingRules,
        out: &mut String,
    ) -> Result<Option<usize>, ShardError> {
        let r = &self.route;
        if r.units.is_empty() {
            return Ok(None);
        }
        let Some(rule) = rules.tables.get(self.rule) else {
            return Ok(None);
        };
        let Some(&(start, end, kind)) = spans.get(r.key) else {
            return Ok(None);
        };
        let key = match kind {
            LitKind::Number => &sql[start..end],
            LitKind::Str => &sql[start + 1..end - 1],
        };
        let p = partition_of(rule, &KeyValue::from_text(key))?;
        let Some(pieces) = r.units.get(&p) else {
            return Ok(None);
        };
        out.clear();
        out.reserve(pieces.iter().map(Piece::len).sum::<usize>() + 16);
        for piece in pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Lit(i) => match spans.get(*i) {
                    Some(&(start, end, _)) => out.push_str(&sql[start..end]),
                    None => return Ok(None),
                },
            }
        }
        Ok(Some(rule.shard_of(p)))
    }
}

impl Piece {
    /// Bytes of the text piece (literals are not counted).
    fn len(&self) -> usize {
        match self {
            Piece::Text(t) => t.len(),
            Piece::Lit(_) => 0,
        }
    }
}

/// Learns the template of `unit` (planned from a statement with literals `lits`) for its
/// partition. False when the shape cannot be templated (the route is then forgotten); true when
/// learnt or when this statement could not tell (equal literals) and a later one may.
fn learn(
    route: &mut Option<Rc<RouteShape>>,
    unit: &Unit,
    lits: &[Lit<'_>],
    rules: &ShardingRules,
) -> bool {
    let Some(r) = route else { return false };
    let TableKind::Sharded(rule) = rules.table(&r.table) else {
        return false;
    };
    let Some(key) = lits.get(r.key) else {
        return false;
    };
    let Ok(p) = partition_of(rule, &key.key()) else {
        return false;
    };
    if r.units.contains_key(&p) || rule.shard_of(p) != unit.shard {
        return r.units.contains_key(&p);
    }
    // Each literal must be told apart by its value to find its slot in the rendered SQL.
    for (i, a) in lits.iter().enumerate() {
        if lits[..i].contains(a) {
            return true;
        }
    }
    let mut pieces = Vec::with_capacity(2 * lits.len() + 1);
    let mut used = vec![false; lits.len()];
    let mut last = 0;
    for (start, len, lit) in literals(&unit.sql).0 {
        let Some(i) = lits.iter().position(|l| *l == lit) else {
            return false;
        };
        if std::mem::replace(&mut used[i], true) {
            return false;
        }
        let Some(text) = unit.sql.get(last..start) else {
            return false;
        };
        pieces.push(Piece::Text(text.to_string()));
        pieces.push(Piece::Lit(i));
        last = start + len;
    }
    if used.iter().any(|u| !u) {
        return false;
    }
    let Some(rest) = unit.sql.get(last..) else {
        return false;
    };
    pieces.push(Piece::Text(rest.to_string()));
    Rc::make_mut(r).units.insert(p, pieces);
    true
}

/// For a `SELECT` from one sharded table whose `WHERE` is a conjunction in which exactly one
/// condition names a key column of that table, as `key = ?k` (either side): the table and the
/// index of the key literal. The partition of such a statement is the planner's `one(rule, ?k)`.
fn point_key(tree: &Statement, rules: &ShardingRules) -> Option<(String, usize)> {
    let Statement::Query(q) = tree else {
        return None;
    };
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return None;
    };
    if q.with.is_some() || sel.from.len() != 1 || !sel.from[0].joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = &sel.from[0].relation
    else {
        return None;
    };
    let table = base_name(name).to_ascii_lowercase();
    let TableKind::Sharded(rule) = rules.table(&table) else {
        return None;
    };
    let alias = alias.as_ref().map(|a| a.name.value.to_ascii_lowercase());
    let key_col = |e: &Expr| -> bool {
        match e {
            Expr::Identifier(i) => rule.is_key(&i.value.to_ascii_lowercase()),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let col = parts[parts.len() - 1].value.to_ascii_lowercase();
                let q = parts[parts.len() - 2].value.to_ascii_lowercase();
                let names_table = match &alias {
                    Some(a) => *a == q,
                    None => table == q,
                };
                names_table && rule.is_key(&col)
            }
            _ => false,
        }
    };
    let mut conjuncts = Vec::new();
    super::route::conjuncts(sel.selection.as_ref()?, &mut conjuncts);
    let mut found = None;
    for c in conjuncts {
        if !mentions(c, &|i: &Ident| rule.is_key(&i.value.to_ascii_lowercase())) {
            continue;
        }
        if found.is_some() {
            return None;
        }
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        else {
            return None;
        };
        let lit = if key_col(left) {
            placeholder(right)?
        } else if key_col(right) {
            placeholder(left)?
        } else {
            return None;
        };
        found = Some(lit);
    }
    Some((table, found?))
}

/// Whether `e` names a column (last part of an identifier) for which `is_key` holds.
fn mentions(e: &Expr, is_key: &dyn Fn(&Ident) -> bool) -> bool {
    struct Find<'f> {
        is_key: &'f dyn Fn(&Ident) -> bool,
    }
    impl Visitor for Find<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            let hit = match e {
                Expr::Identifier(i) => (self.is_key)(i),
                Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|i| (self.is_key)(i)),
                _ => false,
            };
            if hit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    e.visit(&mut Find { is_key }).is_break()
}

/// The literal index of a `?k` placeholder expression.
fn placeholder(e: &Expr) -> Option<usize> {
    let Expr::Value(v) = e else { return None };
    let Value::Placeholder(p) = &v.value else {
        return None;
    };
    p.strip_prefix('?')?.parse::<usize>().ok()?.checked_sub(1)
}

/// Statement kinds whose shapes are cached (the data statements applications repeat).
fn cacheable(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    )
}

/// The shape of `sql`, or None when it is too long to cache.
fn shape(sql: &str) -> Option<Shape<'_>> {
    if sql.len() > MAX_SHAPE_LEN {
        return None;
    }
    // Usually built straight from one byte scan (no tokens, no comment and so no hint); what the
    // scan does not follow is tokenized.
    let mut b = ShapeBuilder::new(sql);
    if scan_literals(sql, |start, end, kind| {
        if let Some(lit) = simple_literal(&sql[start..end], kind) {
            b.literal(start, end, lit);
        }
        true
    }) {
        return b.finish(false);
    }
    shape_tokenized(sql)
}

/// [`shape`] by tokenizing (comments, hints and unusual literals).
fn shape_tokenized(sql: &str) -> Option<Shape<'_>> {
    if sql.len() > MAX_SHAPE_LEN {
        return None;
    }
    let (found, hinted) = literals_tokenized(sql);
    let mut b = ShapeBuilder::new(sql);
    for (start, len, lit) in found {
        b.literal(start, start + len, lit);
    }
    b.finish(hinted)
}

/// Builds a shape's text and literal list from the literals of `sql`, in order.
struct ShapeBuilder<'a> {
    sql: &'a str,
    text: String,
    lits: Vec<Lit<'a>>,
    slots: Vec<Slot>,
    /// End of the last literal replaced.
    last: usize,
    /// A span was not on character boundaries (a bug upstream): no shape.
    bad: bool,
}

impl<'a> ShapeBuilder<'a> {
    fn new(sql: &'a str) -> Self {
        ShapeBuilder {
            sql,
            text: String::with_capacity(sql.len() + 8),
            lits: Vec::new(),
            slots: Vec::new(),
            last: 0,
            bad: false,
        }
    }

    /// Replaces `sql[start..end]` (literal `lit`) with the next `?N`.
    fn literal(&mut self, start: usize, end: usize, lit: Lit<'a>) {
        if self.lits.capacity() == 0 {
            // Sized for most statements at the first literal: growing both from empty cost ~110
            // instructions more per point select (callgrind).
            self.lits = Vec::with_capacity(4);
            self.slots = Vec::with_capacity(4);
        }
        let Some(before) = self.sql.get(self.last..start) else {
            self.bad = true;
            return;
        };
        self.text.push_str(before);
        self.lits.push(lit);
        let at = self.text.len();
        self.text.push('?');
        push_decimal(&mut self.text, self.lits.len());
        self.slots.push(Slot {
            parsed: at..self.text.len(),
            sql: start..end,
        });
        self.last = end;
    }

    fn finish(mut self, hinted: bool) -> Option<Shape<'a>> {
        self.text.push_str(self.sql.get(self.last..)?);
        (!self.bad).then_some(Shape {
            text: self.text,
            lits: self.lits,
            slots: self.slots,
            hinted,
        })
    }
}

/// Appends `n` in decimal (no formatting machinery: this runs for every literal of every
/// statement).
fn push_decimal(out: &mut String, n: usize) {
    let mut tmp = [0u8; 20];
    for &d in codec::decimal(n as u64, &mut tmp) {
        out.push(char::from(d));
    }
}

/// The simple literals of `sql` in order: (byte offset, length as written, literal); and whether
/// `sql` carries a Furrow hint.
fn literals(sql: &str) -> (Vec<(usize, usize, Lit<'_>)>, bool) {
    // Usually one byte scan finds them (no tokens built, and no comment, so no hint); the scan
    // gives up on what it does not follow and the tokenizer decides.
    let mut found = Vec::new();
    let scanned = scan_literals(sql, |start, end, kind| {
        if let Some(lit) = simple_literal(&sql[start..end], kind) {
            found.push((start, end - start, lit));
        }
        true
    });
    if scanned {
        return (found, false);
    }
    literals_tokenized(sql)
}

/// The literal `s` (a token of kind `kind`) if it is one a shape replaces.
fn simple_literal(s: &str, kind: LitKind) -> Option<Lit<'_>> {
    match kind {
        LitKind::Number => simple_number(s).then_some(Lit::Number(s)),
        LitKind::Str => simple_string(s).map(Lit::Str),
    }
}

/// [`literals`] by tokenizing (comments, hints and unusual literals).
fn literals_tokenized(sql: &str) -> (Vec<(usize, usize, Lit<'_>)>, bool) {
    let mut hints = Vec::new();
    let mut toks = Vec::with_capacity(32);
    tokenize(sql, &mut hints, &mut toks);
    let base = sql.as_ptr() as usize;
    let found = toks
        .into_iter()
        .filter_map(|t| {
            let (s, lit) = match t {
                Token::Number(s) if simple_number(s) => (s, Lit::Number(s)),
                Token::Str(s) => (s, Lit::Str(simple_string(s)?)),
                _ => return None,
            };
            Some((s.as_ptr() as usize - base, s.len(), lit))
        })
        .collect();
    (found, !hints.is_empty())
}

/// `[0-9]+(\.[0-9]+)?`: a number whose token class and parse do not depend on its digits.
fn simple_number(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// The inside of `'...'` when it holds no quote and no backslash (nothing to unescape).
fn simple_string(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    (!inner.contains(['\'', '\\'])).then_some(inner)
}

/// Replaces the placeholders `?1..?n` of a cached tree with `lits`; false when the tree does not
/// hold each of them exactly once (the tree then must not be used).
fn substitute(stmt: &mut Statement, lits: &[Lit<'_>]) -> bool {
    struct Fill<'l, 'a> {
        lits: &'l [Lit<'a>],
        seen: usize,
        bad: bool,
    }
    impl VisitorMut for Fill<'_, '_> {
        type Break = ();
        fn pre_visit_value(&mut self, v: &mut ValueWithSpan) -> ControlFlow<()> {
            let Value::Placeholder(p) = &v.value else {
                return ControlFlow::Continue(());
            };
            let Some(n) = p.strip_prefix('?').and_then(|d| d.parse::<usize>().ok()) else {
                return ControlFlow::Continue(());
            };
            match n.checked_sub(1).and_then(|i| self.lits.get(i)) {
                Some(Lit::Number(s)) => v.value = Value::Number((*s).to_string(), false),
                Some(Lit::Str(s)) => v.value = Value::SingleQuotedString((*s).to_string()),
                None => {
                    self.bad = true;
                    return ControlFlow::Break(());
                }
            }
            self.seen += 1;
            ControlFlow::Continue(())
        }
    }
    let mut f = Fill {
        lits,
        seen: 0,
        bad: false,
    };
    let _ = stmt.visit(&mut f);
    !f.bad && f.seen == lits.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_literal_scan_finds_what_tokenizing_finds() {
        for sql in [
            "SELECT name FROM users WHERE id = 42 AND city = 'x''y' AND s = 'plain'",
            "SELECT 1.5, 2e3, 0x1f, 'a\\'b', \"dq\", `q``i`, @v, @@sql_mode FROM t1 WHERE c2 = -7",
            "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')",
            "UPDATE t SET a = a + 10 WHERE id IN (1, 2, 3)",
            "SELECT x'41', .5, n'z' /* furrow:primary */ -- c",
        ] {
            assert_eq!(literals(sql), literals_tokenized(sql), "{sql}");
        }
    }

    #[test]
    fn shapes_replace_only_simple_literals() {
        let s =
            shape("SELECT a FROM t WHERE id = 42 AND b = 'x' AND c = 1.5").unwrap_or_else(|| {
                Shape {
                    text: String::new(),
                    lits: vec![],
                    slots: vec![],
                    hinted: true,
                }
            });
        assert!(!s.hinted);
        assert!(shape("/* furrow:primary */ SELECT 1").is_some_and(|s| s.hinted));
        assert_eq!(
            s.text,
            "SELECT a FROM t WHERE id = ?1 AND b = ?2 AND c = ?3"
        );
        assert_eq!(
            s.lits,
            [Lit::Number("42"), Lit::Str("x"), Lit::Number("1.5")]
        );
        for kept in [
            "SELECT 'it''s'",
            "SELECT 'a\\'b'",
            "SELECT 1e5",
            "SELECT 0x1F",
            "SELECT x'1F'",
            "SELECT _utf8mb4'a'",
            "SELECT N'a'",
            "SELECT \"dq\"",
        ] {
            let s = shape(kept).map(|s| s.text);
            assert_eq!(s.as_deref(), Some(kept), "{kept}");
        }
        assert!(shape(&"x".repeat(MAX_SHAPE_LEN + 1)).is_none());
    }

    #[test]
    fn a_cached_shape_gives_the_tree_of_the_statement() {
        let mut c = PlanCache::new();
        let sqls = [
            "SELECT name FROM users WHERE id = 1",
            "SELECT name FROM users WHERE id = 2",
            "SELECT name FROM users WHERE id = 12345678901234567890",
            "SELECT name FROM users WHERE id = 3 LIMIT 10",
            "SELECT name FROM users WHERE id = 4 LIMIT 7",
            "UPDATE users SET name = 'a b' WHERE id = 5",
            "UPDATE users SET name = 'é' WHERE id = 6",
            "INSERT INTO users (id, name) VALUES (7, 'x'), (8, 'y')",
            "DELETE FROM users WHERE id IN (1, 2, 3)",
            "SELECT CAST(price AS DECIMAL(10, 2)) FROM t WHERE id = 1",
            "SELECT CAST(price AS DECIMAL(12, 4)) FROM t WHERE id = 2",
            "SELECT 'a' 'b' FROM t",
            "SELECT ?3 FROM t WHERE id = 1",
        ];
        for round in 0..2 {
            for sql in sqls {
                let want = parse_one(sql);
                let got = c.parse(sql);
                assert_eq!(got, want, "round {round}: {sql}");
            }
        }
        let (hits, misses, _) = c.stats();
        assert!(hits >= 12, "hits {hits} misses {misses}");
        // The DECIMAL(p, s) shape cannot take placeholders: parsed every time, still right.
        assert_eq!(
            c.parse("SELECT CAST(price AS DECIMAL(9, 1)) FROM t WHERE id = 3"),
            parse_one("SELECT CAST(price AS DECIMAL(9, 1)) FROM t WHERE id = 3")
        );
        // Syntax errors stay errors and are not cached as trees.
        assert!(c.parse("SELECT FROM WHERE 1").is_err());
        assert!(c.parse("SELECT FROM WHERE 2").is_err());
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = PlanCache::new();
        for i in 0..(PlanCache::CAPACITY + 10) {
            let sql = format!("SELECT c{i} FROM t WHERE id = 1");
            assert!(c.parse(&sql).is_ok());
            assert!(c.len() <= PlanCache::CAPACITY);
        }
        assert!(!c.is_empty());
    }
}
