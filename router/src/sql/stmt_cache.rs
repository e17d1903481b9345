//! A per-core cache of statement classifications and digests, keyed by the statement's
//! [skeleton](super::lexer::skeleton) (its text with literal values masked).
//!
//! Every statement a MySQL listener forwards is classified (read/write splitting, session state)
//! and digested (rules, limits, statistics, audit). Applications repeat a few statement shapes
//! with different values, and for those the lexer, classifier and digest gave the same answer every
//! time: on the sysbench point select they were ≈ 30 % of Furrow's user-space instructions. With the
//! cache a statement of a known shape costs one byte scan (the skeleton, which stops at the first
//! comment or unusual literal) and a hash lookup.
//!
//! Why a hit is the same answer as classifying the text: two statements with equal skeletons
//! tokenize to the same tokens except for the values of their number and string literals
//! (`skeleton` follows the lexer's rules and refuses what it cannot follow). A digest replaces every
//! literal with `?`, so it is equal. The classification reads literal values only for `SET
//! autocommit = ...` and `USE`, and comments only for hints; only statements that are single
//! `SELECT`/`INSERT`/`REPLACE`/`UPDATE`/`DELETE` statements without a hint, classified by the fast
//! path, are kept (see [`StmtCache::admits`]). Everything else is classified afresh every time.
//!
//! Memory is bounded: at most [`StmtCache::CAPACITY`] entries with skeletons of at most
//! [`MAX_SKELETON`] bytes; a full cache is emptied and refilled (a workload's shapes are few; one
//! with unbounded shapes, such as IN lists of every length, only loses the cache).

use std::rc::Rc;

use super::classify::{StmtKind, flags};
use super::lexer::skeleton;
use super::{Classified, Digest, classify_with_digest};

/// Longest skeleton cached, in bytes; longer statements are classified every time.
pub const MAX_SKELETON: usize = 2048;

/// A statement's classification and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysed {
    /// Routing class and session-state effects.
    pub class: Classified,
    /// Fingerprint and its hash.
    pub digest: Digest,
}

/// Classifications and digests of one core's recent statement shapes (see the module docs).
#[derive(Default)]
pub struct StmtCache {
    entries: crate::FastMap<Box<[u8]>, Rc<Analysed>>,
    key: Vec<u8>,
    hits: u64,
    misses: u64,
}

impl StmtCache {
    /// Most entries kept at once.
    pub const CAPACITY: usize = 1024;

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The classification and digest of `sql`: equal to [`classify_with_digest`]`(sql)`.
    pub fn analyse(&mut self, sql: &str) -> Rc<Analysed> {
        let keyed = skeleton(sql, &mut self.key, MAX_SKELETON);
        if keyed && let Some(hit) = self.entries.get(self.key.as_slice()) {
            self.hits += 1;
            return hit.clone();
        }
        self.misses += 1;
        let (class, digest) = classify_with_digest(sql);
        let a = Rc::new(Analysed { class, digest });
        if keyed && Self::admits(&a.class) {
            if self.entries.len() >= Self::CAPACITY {
                self.entries.clear();
            }
            self.entries
                .insert(self.key.as_slice().into(), Rc::clone(&a));
        }
        a
    }

    /// Whether a classification holds for every statement of the same skeleton: a single DML
    /// statement, no hint, fast-path classified, no literal-dependent fields.
    fn admits(c: &Classified) -> bool {
        matches!(
            c.kind,
            StmtKind::Select
                | StmtKind::Insert
                | StmtKind::Replace
                | StmtKind::Update
                | StmtKind::Delete
        ) && c.hint.is_none()
            && c.schema.is_none()
            && c.autocommit.is_none()
            && c.flags & (flags::MULTI | flags::SLOW_PATH | flags::LOCAL_INFILE) == 0
    }

    /// Statements answered from the cache and statements classified, since the cache was made.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fresh(sql: &str) -> Analysed {
        let (class, digest) = classify_with_digest(sql);
        Analysed { class, digest }
    }

    #[test]
    fn repeated_shapes_hit_and_answer_as_classifying_would() {
        let mut c = StmtCache::new();
        for id in [1, 17, 4242, 0x7f] {
            let sql = format!("SELECT c FROM sbtest1 WHERE id={id}");
            assert_eq!(*c.analyse(&sql), fresh(&sql));
        }
        assert_eq!(c.stats(), (3, 1));
        let s = "UPDATE t SET a = 'x''y\\'z', b = 2.5e-3 WHERE k IN (1, 2, 3)";
        assert_eq!(*c.analyse(s), fresh(s));
        let s2 = "UPDATE t SET a = 'other', b = 7 WHERE k IN (9, 8, 7)";
        assert_eq!(*c.analyse(s2), fresh(s2));
        assert_eq!(c.stats(), (4, 2));
    }

    #[test]
    fn statements_whose_class_reads_literals_or_comments_are_never_served_from_the_cache() {
        let mut c = StmtCache::new();
        for sql in [
            "SET autocommit = 0",
            "SET autocommit = 1",
            "SET autocommit = 0",
            "USE db1",
            "USE db1",
            "/* furrow:primary */ SELECT 1",
            "/* furrow:primary */ SELECT 1",
            "SELECT 1 -- furrow:replica",
            "SELECT 1 -- furrow:replica",
            "SELECT x'41'",
            "SELECT x'41'",
            "SELECT 1; SELECT 2",
            "SELECT 1; SELECT 2",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "SELECT @'x'",
            "SELECT @'x'",
        ] {
            assert_eq!(*c.analyse(sql), fresh(sql), "{sql}");
        }
        assert_eq!(c.stats().0, 0, "no hit expected");
        assert!(c.is_empty());
    }

    #[test]
    fn distinct_variables_numbers_in_words_and_placeholders_keep_their_shapes_apart() {
        let mut c = StmtCache::new();
        let pairs = [
            ("SELECT @a1", "SELECT @a2"),
            ("SELECT t1.c FROM t1", "SELECT t2.c FROM t2"),
            ("SELECT ? FROM t", "SELECT 1 FROM t"),
            ("SELECT 'a' FROM u", "SELECT 1 FROM u"),
            ("SELECT `a` FROM t", "SELECT `b` FROM t"),
        ];
        for (a, b) in pairs {
            assert_eq!(*c.analyse(a), fresh(a), "{a}");
            assert_eq!(*c.analyse(b), fresh(b), "{b}");
        }
        assert_eq!(c.stats().0, 0);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = StmtCache::new();
        for n in 0..(StmtCache::CAPACITY + 10) {
            c.analyse(&format!("SELECT c{n} FROM t WHERE id = 1"));
        }
        assert!(c.len() <= StmtCache::CAPACITY);
        let long = format!("SELECT {} FROM t", "c, ".repeat(MAX_SKELETON)) + "d";
        c.analyse(&long);
        c.analyse(&long);
        assert_eq!(c.stats().0, 0);
    }

    /// A literal of one of the lexer's forms.
    fn literal() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..1_000_000).prop_map(|n| n.to_string()),
            (0u32..1000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
            (1u32..9, -20i32..20).prop_map(|(a, e)| format!("{a}.5e{e}")),
            (0u32..0xffff).prop_map(|n| format!("0x{n:x}")),
            "[a-zA-Z0-9 ;#/*'\"\\\\-]{0,12}"
                .prop_map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))),
            "[a-zA-Z0-9 ;#'-]{0,12}".prop_map(|s| format!("\"{}\"", s.replace('"', "\"\""))),
        ]
    }

    /// Statement templates with literal slots (`$`), covering every class the cache admits and
    /// several it must not.
    const TEMPLATES: &[&str] = &[
        "SELECT c FROM sbtest1 WHERE id=$",
        "SELECT a, b FROM t WHERE x BETWEEN $ AND $ ORDER BY a LIMIT $",
        "SELECT * FROM t WHERE a IN ($, $, $) FOR UPDATE",
        "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT $",
        "SELECT GET_LOCK($, $)",
        "SELECT LAST_INSERT_ID($)",
        "SELECT @v := $",
        "INSERT INTO t (a, b) VALUES ($, $), ($, $)",
        "REPLACE INTO t VALUES ($)",
        "UPDATE t SET a = $ WHERE b = $",
        "DELETE FROM t WHERE id = $",
        "SET autocommit = $",
        "SET @x = $",
        "SET NAMES $",
        "SELECT $; SELECT $",
        "DO SLEEP($)",
        "SHOW TABLES LIKE $",
        "CREATE TEMPORARY TABLE tmp (a INT DEFAULT $)",
    ];

    fn fill(template: &str, lits: &[String]) -> String {
        let mut out = String::new();
        let mut k = 0;
        for ch in template.chars() {
            if ch == '$' {
                out.push_str(&lits[k % lits.len()]);
                k += 1;
            } else {
                out.push(ch);
            }
        }
        out
    }

    proptest! {
        /// Whatever literals two statements of one template carry, the cache's answer for the
        /// second (after the first primed it) is what classifying the second gives.
        #[test]
        fn a_hit_equals_classifying_the_statement(
            t in 0..TEMPLATES.len(),
            first in prop::collection::vec(literal(), 1..6),
            second in prop::collection::vec(literal(), 1..6),
        ) {
            let mut c = StmtCache::new();
            let a = fill(TEMPLATES[t], &first);
            let b = fill(TEMPLATES[t], &second);
            prop_assert_eq!(&*c.analyse(&a), &fresh(&a));
            prop_assert_eq!(&*c.analyse(&b), &fresh(&b));
        }

        /// Arbitrary text: the cache never answers differently from classifying it.
        #[test]
        fn any_text_analyses_as_classify_does(texts in prop::collection::vec(".{0,60}", 1..8)) {
            let mut c = StmtCache::new();
            for s in texts.iter().chain(texts.iter()) {
                prop_assert_eq!(&*c.analyse(s), &fresh(s));
            }
        }
    }
}
