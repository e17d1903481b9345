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
//! Memory is bounded: at most [`ParseCache::CAPACITY`] shapes of at most [`MAX_SHAPE_LEN`] bytes
//! each; a full cache is emptied and refilled (statement shapes of a workload are few; a workload
//! with unbounded shapes, such as generated IN lists of every length, only loses the cache).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::ControlFlow;

use sqlparser::ast::{Statement, Value, ValueWithSpan, VisitMut, VisitorMut};

use super::{ShardError, parse_one};
use crate::sql::lexer::{Token, tokenize};

/// Longest statement (in bytes) whose shape is cached; longer ones are always parsed.
pub const MAX_SHAPE_LEN: usize = 4096;

/// Parsed statement shapes of one core (see the module documentation).
#[derive(Default)]
pub struct ParseCache {
    shapes: HashMap<Box<str>, Option<Statement>>,
    hits: u64,
    misses: u64,
}

/// A literal taken out of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lit<'a> {
    /// An unsigned decimal number, as written.
    Number(&'a str),
    /// The inside of a single-quoted string without escapes.
    Str(&'a str),
}

/// A statement's shape text and its literals in order (`?1` is `lits[0]`).
#[derive(Debug)]
struct Shape<'a> {
    text: String,
    lits: Vec<Lit<'a>>,
}

impl ParseCache {
    /// Most shapes kept at once.
    pub const CAPACITY: usize = 1024;

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Statements answered from the cache and statements parsed, since the cache was made.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
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
        if let Some(known) = self.shapes.get(shape.text.as_str()) {
            if let Some(tree) = known {
                let mut stmt = tree.clone();
                if substitute(&mut stmt, &shape.lits) {
                    self.hits += 1;
                    return Ok(stmt);
                }
            }
            self.misses += 1;
            return parse_one(sql);
        }
        self.misses += 1;
        let stmt = parse_one(sql)?;
        let admitted = cacheable(&stmt)
            .then(|| parse_one(&shape.text).ok())
            .flatten()
            .filter(|tree| {
                let mut check = tree.clone();
                substitute(&mut check, &shape.lits) && check == stmt
            });
        if self.shapes.len() >= Self::CAPACITY {
            self.shapes.clear();
        }
        self.shapes.insert(shape.text.into_boxed_str(), admitted);
        Ok(stmt)
    }
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
    let mut hints = Vec::new();
    let mut toks = Vec::with_capacity(32);
    tokenize(sql, &mut hints, &mut toks);
    let base = sql.as_ptr() as usize;
    let mut text = String::with_capacity(sql.len() + 8);
    let mut lits = Vec::new();
    let mut last = 0;
    for t in toks {
        let (s, lit) = match t {
            Token::Number(s) if simple_number(s) => (s, Lit::Number(s)),
            Token::Str(s) => match simple_string(s) {
                Some(inner) => (s, Lit::Str(inner)),
                None => continue,
            },
            _ => continue,
        };
        let start = s.as_ptr() as usize - base;
        text.push_str(sql.get(last..start)?);
        lits.push(lit);
        let _ = write!(text, "?{}", lits.len());
        last = start + s.len();
    }
    text.push_str(sql.get(last..)?);
    Some(Shape { text, lits })
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
    fn shapes_replace_only_simple_literals() {
        let s =
            shape("SELECT a FROM t WHERE id = 42 AND b = 'x' AND c = 1.5").unwrap_or_else(|| {
                Shape {
                    text: String::new(),
                    lits: vec![],
                }
            });
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
        let mut c = ParseCache::new();
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
        let (hits, misses) = c.stats();
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
        let mut c = ParseCache::new();
        for i in 0..(ParseCache::CAPACITY + 10) {
            let sql = format!("SELECT c{i} FROM t WHERE id = 1");
            assert!(c.parse(&sql).is_ok());
            assert!(c.len() <= ParseCache::CAPACITY);
        }
        assert!(!c.is_empty());
    }
}
