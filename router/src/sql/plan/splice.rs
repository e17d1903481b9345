//! Byte-faithful rewriting: each unit's SQL is the client's text with edits spliced in at token
//! boundaries (physical table names, appended sort columns, a new LIMIT, the partial-aggregate
//! select list ...). Everything that is not edited — literals, escapes, comments, hints, spacing,
//! keyword case — reaches the shard byte for byte. sqlparser is used to *understand* a statement;
//! its printer never produces SQL that runs (it does not re-escape backslashes, rewrites
//! `BINARY x = y` as `CAST(x = y AS BINARY)`, and so on).
//!
//! Positions come from two places that must agree:
//! - the syntax tree: every [`Ident`] carries the span of the token it was made from (reliable);
//!   expression spans are not (sqlparser leaves some partial), so the text of an expression is
//!   taken by span and then *verified*: it must parse back to an expression equal to the tree's,
//!   or the statement is refused ([`Source::expr_text`]);
//! - a small scanner over the text ([`Source::toks`]) that knows strings, quoted identifiers,
//!   comments and parentheses: clause keywords at parenthesis depth 0 delimit a SELECT's select
//!   list, FROM ... WHERE, GROUP BY, HAVING, ORDER BY and LIMIT ([`SelectText`]). Each clause found
//!   there is checked against the tree (an ORDER BY in the text must be one in the tree, and the
//!   number of items must match), so a statement whose text and tree disagree (an executable
//!   comment, say) is refused, never rewritten wrongly.
//!
//! The tree of a statement may come from the plan cache ([`super::cache`]): it was parsed from the
//! statement's *shape*, whose literals are `?N` placeholders. Positions then refer to the shape
//! text, and [`Slot`]s map them onto the statement itself: every edit is applied to the client's
//! own text.

use std::fmt::Write as _;
use std::ops::Range;

use sqlparser::ast::{Expr, Ident, ObjectName, ObjectNamePart, Spanned};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Location;

use super::{RECURSION_LIMIT, ShardError};

/// A literal of a cached shape: where its `?N` placeholder stands in the shape text, and where the
/// literal stands in the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Byte range of `?N` in the shape text.
    pub parsed: Range<usize>,
    /// Byte range of the literal in the statement.
    pub sql: Range<usize>,
}

/// What a scanned token is (only what clause structure needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A bare word: keyword, identifier or number.
    Word,
    /// A back-quoted identifier (quotes included in the range).
    Quoted,
    /// A quoted string (quotes included).
    Str,
    /// One punctuation byte.
    Punct(u8),
}

/// A token of the parsed text with its byte range and parenthesis depth (a `(` and its `)` have
/// the depth outside them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tok {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
    pub depth: u32,
}

/// The text a syntax tree was parsed from, and how its positions map onto the statement.
pub(crate) struct Source<'a> {
    /// The text the tree was parsed from: the statement, or its cached shape.
    parsed: &'a str,
    /// The statement as the client sent it (prepared-statement parameters bound).
    sql: &'a str,
    /// Literal slots when `parsed` is a shape (ascending); empty when `parsed` is `sql`.
    slots: &'a [Slot],
    /// Byte offset of each line of `parsed`.
    lines: Vec<usize>,
    /// The tokens of `parsed`.
    toks: Vec<Tok>,
    /// `parsed` holds an executable comment (`/*!`, `/*M!`): code the server runs and the parser
    /// skipped.
    exec_comment: bool,
}

fn cannot(what: &str) -> ShardError {
    ShardError::Unsupported(format!(
        "{what} (the proxy could not rewrite the statement text safely)"
    ))
}

impl<'a> Source<'a> {
    /// The source of a tree parsed from `sql` itself.
    pub fn new(sql: &'a str) -> Self {
        Self::with_slots(sql, sql, &[])
    }

    /// The source of a tree parsed from `parsed` (a shape of `sql` with literal `slots`).
    pub fn with_slots(parsed: &'a str, sql: &'a str, slots: &'a [Slot]) -> Self {
        let mut lines = vec![0];
        lines.extend(
            parsed
                .bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        let (toks, exec_comment) = scan(parsed);
        Source {
            parsed,
            sql,
            slots,
            lines,
            toks,
            exec_comment,
        }
    }

    /// The statement as the client sent it.
    pub fn sql(&self) -> &'a str {
        self.sql
    }

    /// Whether the text holds an executable comment (code the parser did not see).
    pub fn has_exec_comment(&self) -> bool {
        self.exec_comment
    }

    /// The tokens.
    pub fn toks(&self) -> &[Tok] {
        &self.toks
    }

    /// Byte offset in the parsed text of a parser location (1-based line and character column).
    fn offset(&self, loc: Location) -> Option<usize> {
        let line = usize::try_from(loc.line).ok()?.checked_sub(1)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        let start = *self.lines.get(line)?;
        let rest = self.parsed.get(start..)?;
        let bytes = rest.as_bytes();
        // ASCII prefix: columns are bytes.
        if bytes.len() >= col && bytes[..col].is_ascii() {
            return Some(start + col);
        }
        match rest.char_indices().nth(col) {
            Some((i, _)) => Some(start + i),
            None => (rest.chars().count() == col).then_some(self.parsed.len()),
        }
    }

    /// Index of the token that starts at byte `at`.
    fn tok_at(&self, at: usize) -> Option<usize> {
        self.toks.binary_search_by_key(&at, |t| t.start).ok()
    }

    /// Index of the token an identifier was made from.
    pub fn ident_tok(&self, id: &Ident) -> Result<usize, ShardError> {
        self.offset(id.span.start)
            .and_then(|o| self.tok_at(o))
            .filter(|&i| matches!(self.toks[i].kind, Kind::Word | Kind::Quoted))
            .ok_or_else(|| cannot(&format!("identifier `{}`", id.value)))
    }

    /// Byte range (parsed text) of a possibly qualified name.
    pub fn name_range(&self, n: &ObjectName) -> Result<Range<usize>, ShardError> {
        fn ident(p: &ObjectNamePart) -> Result<&Ident, ShardError> {
            match p {
                ObjectNamePart::Identifier(i) => Ok(i),
                other => Err(cannot(&format!("name `{other}`"))),
            }
        }
        let (Some(first), Some(last)) = (n.0.first(), n.0.last()) else {
            return Err(cannot("an empty name"));
        };
        let a = self.ident_tok(ident(first)?)?;
        let b = self.ident_tok(ident(last)?)?;
        Ok(self.toks[a].start..self.toks[b].end)
    }

    /// The statement's text of a parsed-text byte range (literals as the client wrote them).
    pub fn text(&self, r: Range<usize>) -> Result<&'a str, ShardError> {
        let (a, b) = (self.to_sql(r.start)?, self.to_sql(r.end)?);
        self.sql.get(a..b).ok_or_else(|| cannot("a text range"))
    }

    /// Maps a parsed-text offset onto the statement (never inside a literal slot).
    fn to_sql(&self, p: usize) -> Result<usize, ShardError> {
        let mut delta: isize = 0;
        for s in self.slots {
            if s.parsed.end <= p {
                delta += s.sql.len() as isize - s.parsed.len() as isize;
            } else if s.parsed.start < p {
                return Err(cannot("an edit inside a literal"));
            } else {
                break;
            }
        }
        p.checked_add_signed(delta)
            .ok_or_else(|| cannot("a text position"))
    }

    /// The text of token range `a..=b` (token indices).
    pub fn tok_text(&self, a: usize, b: usize) -> Result<&'a str, ShardError> {
        let (Some(x), Some(y)) = (self.toks.get(a), self.toks.get(b)) else {
            return Err(cannot("a token range"));
        };
        self.text(x.start..y.end)
    }

    /// The statement's text of an expression of the tree: the tokens from the expression's first
    /// token, as few as give back an equal expression when parsed. Refuses when no such text is
    /// found (the tree and the text disagree).
    pub fn expr_text(&self, e: &Expr) -> Result<String, ShardError> {
        if let Expr::Nested(inner) = e {
            return Ok(format!("({})", self.expr_text(inner)?));
        }
        let span = e.span();
        let first = self
            .offset(span.start)
            .and_then(|o| {
                // The span may start inside the first token's quotes; take the token around it.
                self.toks
                    .iter()
                    .position(|t| t.start <= o && o < t.end.max(t.start + 1))
            })
            .ok_or_else(|| cannot(&format!("expression `{e}`")))?;
        let hint = self
            .offset(span.end)
            .map_or(first, |o| self.toks.partition_point(|t| t.end <= o));
        // The span may leave out tokens before it (the `(` of a nested left operand, a prefix
        // operator such as `BINARY` or `-`): try starting up to 4 tokens earlier too.
        let starts: Vec<usize> = (first.saturating_sub(4)..=first).rev().collect();
        let mut tried = 0;
        for first in starts {
            let depth = self.toks[first].depth;
            // The span's own end first, then grow token by token (bounded).
            let mut candidates: Vec<usize> = Vec::new();
            if hint > first {
                candidates.push(hint - 1);
            }
            for last in first..self.toks.len().min(first + 256) {
                if self.toks[last].depth < depth {
                    break;
                }
                if !candidates.contains(&last) {
                    candidates.push(last);
                }
            }
            for last in candidates {
                tried += 1;
                if tried > 96 {
                    break;
                }
                // A candidate that ends inside a literal slot is no candidate.
                let Ok(text) = self.tok_text(first, last) else {
                    continue;
                };
                if parse_expr(text).is_some_and(|x| x == *e) {
                    return Ok(text.to_string());
                }
            }
        }
        Err(cannot(&format!("expression `{e}`")))
    }

    /// Index of the first token at or after byte `at`.
    pub fn tok_from(&self, at: usize) -> usize {
        self.toks.partition_point(|t| t.start < at)
    }
}

/// Parses one expression (nothing after it).
pub(crate) fn parse_expr(text: &str) -> Option<Expr> {
    let mut p = Parser::new(&MySqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(text)
        .ok()?;
    let e = p.parse_expr().ok()?;
    (p.peek_token().token == sqlparser::tokenizer::Token::EOF).then_some(e)
}

/// Edits to the parsed text: byte ranges and their replacements (an empty range inserts).
#[derive(Debug, Clone, Default)]
pub(crate) struct Edits(Vec<(Range<usize>, String)>);

impl Edits {
    /// Replaces `r` with `text`.
    pub fn replace(&mut self, r: Range<usize>, text: impl Into<String>) {
        self.0.push((r, text.into()));
    }

    /// Inserts `text` at `at`.
    pub fn insert(&mut self, at: usize, text: impl Into<String>) {
        self.0.push((at..at, text.into()));
    }

    /// The statement with the edits applied. Overlapping edits are refused (a planner bug, never
    /// a silent merge).
    pub fn apply(&self, src: &Source<'_>) -> Result<String, ShardError> {
        let mut order: Vec<&(Range<usize>, String)> = self.0.iter().collect();
        // Stable: insertions at one point keep the order they were made in.
        order.sort_by_key(|(r, _)| (r.start, r.end));
        let mut out = String::with_capacity(src.sql.len() + 64);
        let mut at = 0usize;
        for (r, text) in order {
            if r.start < at || r.end < r.start {
                return Err(cannot("overlapping edits"));
            }
            out.push_str(src.text(at..r.start)?);
            out.push_str(text);
            at = r.end;
        }
        out.push_str(src.text(at..src.parsed.len())?);
        Ok(out)
    }
}

/// Scans `s` into tokens (comments skipped); also tells whether it holds an executable comment.
/// Unterminated strings and comments end the scan (the parser rejected such a statement already).
fn scan(s: &str) -> (Vec<Tok>, bool) {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 4);
    let mut exec = false;
    let mut depth = 0u32;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'#' => {
                i = line_end(b, i);
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = line_end(b, i);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if matches!(b.get(i + 2), Some(b'!'))
                    || (b.get(i + 2) == Some(&b'M') && b.get(i + 3) == Some(&b'!'))
                {
                    exec = true;
                }
                i = match find(b, i + 2, b"*/") {
                    Some(e) => e + 2,
                    None => b.len(),
                };
                continue;
            }
            b'\'' | b'"' => {
                i = quoted_end(b, i, c, true);
                out.push(tok(Kind::Str, start, i, depth));
            }
            b'`' => {
                i = quoted_end(b, i, c, false);
                out.push(tok(Kind::Quoted, start, i, depth));
            }
            // `?N`: a literal slot of a cached shape, one token (the client's own `?` placeholders
            // are alone).
            b'?' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(tok(Kind::Word, start, i, depth));
            }
            b'(' => {
                out.push(tok(Kind::Punct(c), start, i + 1, depth));
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                out.push(tok(Kind::Punct(c), start, i + 1, depth));
                i += 1;
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(tok(Kind::Word, start, i, depth));
            }
            _ => {
                // One punctuation character (whole UTF-8 sequence never starts here: >= 0x80 is a word).
                i += 1;
                out.push(tok(Kind::Punct(c), start, i, depth));
            }
        }
    }
    (out, exec)
}

fn tok(kind: Kind, start: usize, end: usize, depth: u32) -> Tok {
    Tok {
        kind,
        start,
        end,
        depth,
    }
}

fn line_end(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p + 1)
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| from + p)
}

/// End (exclusive) of a quoted token starting at `i`: doubled quotes, and backslash escapes in
/// strings.
fn quoted_end(b: &[u8], i: usize, q: u8, escapes: bool) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if escapes => j += 2,
            c if c == q => {
                if b.get(j + 1) == Some(&q) {
                    j += 2;
                } else {
                    return j + 1;
                }
            }
            _ => j += 1,
        }
    }
    b.len()
}

/// A SELECT's clauses as token ranges of the text (parenthesis depth 0 relative to the SELECT).
#[derive(Debug, Clone)]
pub(crate) struct SelectText {
    /// Byte range of the select list (first item to the end of the last).
    pub items: Range<usize>,
    /// Byte range of each select item (split at top-level commas).
    pub item_ranges: Vec<Range<usize>>,
    /// The `DISTINCT` / `DISTINCTROW` modifier, if written.
    pub distinct: Option<Range<usize>>,
    /// Byte offset where the FROM keyword starts.
    pub from: Option<usize>,
    /// Byte offset just after the FROM ... WHERE part (end of its last token).
    pub body_end: usize,
    /// `GROUP BY` items (byte ranges), if the clause is there, and the clause's range.
    pub group: Option<(Range<usize>, Vec<Range<usize>>)>,
    /// The HAVING clause's range.
    pub having: Option<Range<usize>>,
    /// The WINDOW clause's range.
    pub window: Option<Range<usize>>,
    /// `ORDER BY` clause range and its items' ranges (without ASC/DESC).
    pub order: Option<(Range<usize>, Vec<Range<usize>>)>,
    /// The LIMIT clause's range.
    pub limit: Option<Range<usize>>,
    /// Where the clauses after LIMIT (FOR UPDATE, LOCK IN SHARE MODE, INTO ...) start, or the end
    /// of the statement.
    pub tail: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Clause {
    Items,
    From,
    Group,
    Having,
    Window,
    Order,
    Limit,
    Tail,
}

impl SelectText {
    /// The clauses of the top-level SELECT of the statement (which must start with `SELECT`).
    pub fn of(src: &Source<'_>) -> Result<SelectText, ShardError> {
        let toks = src.toks();
        let word = |i: usize, w: &str| -> bool {
            toks.get(i).is_some_and(|t| {
                t.kind == Kind::Word
                    && t.depth == 0
                    && src
                        .parsed
                        .get(t.start..t.end)
                        .is_some_and(|s| s.eq_ignore_ascii_case(w))
            })
        };
        if !word(0, "SELECT") {
            return Err(cannot("a SELECT that does not start with SELECT"));
        }
        let mut i = 1;
        const MODIFIERS: [&str; 11] = [
            "ALL",
            "DISTINCT",
            "DISTINCTROW",
            "HIGH_PRIORITY",
            "STRAIGHT_JOIN",
            "SQL_SMALL_RESULT",
            "SQL_BIG_RESULT",
            "SQL_BUFFER_RESULT",
            "SQL_CACHE",
            "SQL_NO_CACHE",
            "SQL_CALC_FOUND_ROWS",
        ];
        let mut distinct = None;
        while MODIFIERS.iter().any(|m| word(i, m)) {
            if word(i, "DISTINCT") || word(i, "DISTINCTROW") {
                distinct = Some(toks[i].start..toks[i].end);
            }
            i += 1;
        }
        // Clause starts at depth 0.
        let mut marks: Vec<(Clause, usize)> = vec![(Clause::Items, i)];
        let mut j = i;
        while j < toks.len() {
            let t = toks[j];
            if t.depth == 0 {
                let next = match () {
                    _ if word(j, "FROM") => Some(Clause::From),
                    _ if word(j, "GROUP") && word(j + 1, "BY") => Some(Clause::Group),
                    _ if word(j, "HAVING") => Some(Clause::Having),
                    _ if word(j, "WINDOW") => Some(Clause::Window),
                    _ if word(j, "ORDER") && word(j + 1, "BY") => Some(Clause::Order),
                    _ if word(j, "LIMIT") => Some(Clause::Limit),
                    _ if word(j, "FOR")
                        || word(j, "LOCK")
                        || word(j, "INTO")
                        || word(j, "PROCEDURE")
                        || word(j, "UNION")
                        || word(j, "EXCEPT")
                        || word(j, "INTERSECT")
                        || t.kind == Kind::Punct(b';') =>
                    {
                        Some(Clause::Tail)
                    }
                    _ => None,
                };
                if let Some(c) = next {
                    let last = marks.last().map_or(Clause::Items, |m| m.0);
                    if c == Clause::Tail {
                        marks.push((c, j));
                        break;
                    }
                    // Each clause once, in SQL order; anything else is text the tree disagrees with.
                    if (c as u8) <= (last as u8) {
                        return Err(cannot(&format!("clause order near `{:?}`", c)));
                    }
                    marks.push((c, j));
                }
            }
            j += 1;
        }
        let n = toks.len();
        // Token range of each clause: from its mark to the token before the next mark.
        let range_of = |k: usize| -> (usize, usize) {
            let start = marks[k].1;
            let end = marks.get(k + 1).map_or(n, |m| m.1);
            (start, end)
        };
        let bytes = |a: usize, b: usize| -> Range<usize> {
            // tokens a..b (exclusive); empty when a == b
            if a >= b {
                let at = toks.get(a).map_or(src.parsed.len(), |t| t.start);
                return at..at;
            }
            toks[a].start..toks[b - 1].end
        };
        let split = |a: usize, b: usize| -> Vec<Range<usize>> {
            let mut out = Vec::new();
            let mut s = a;
            for (k, t) in toks.iter().enumerate().take(b).skip(a) {
                if t.depth == 0 && t.kind == Kind::Punct(b',') {
                    out.push(bytes(s, k));
                    s = k + 1;
                }
            }
            if s < b {
                out.push(bytes(s, b));
            }
            out
        };
        let mut st = SelectText {
            items: 0..0,
            item_ranges: Vec::new(),
            distinct,
            from: None,
            body_end: 0,
            group: None,
            having: None,
            window: None,
            order: None,
            limit: None,
            tail: src.parsed.len(),
        };
        let mut body_end_tok = None;
        for (k, mark) in marks.iter().enumerate() {
            let (a, b) = range_of(k);
            match mark.0 {
                Clause::Items => {
                    st.items = bytes(a, b);
                    st.item_ranges = split(a, b);
                    body_end_tok = Some(b);
                }
                Clause::From => {
                    st.from = toks.get(a).map(|t| t.start);
                    body_end_tok = Some(b);
                }
                Clause::Group => {
                    // GROUP BY items, and WITH ROLLUP stays part of the clause (the tree tells).
                    st.group = Some((bytes(a, b), split(a + 2, b)));
                }
                Clause::Having => st.having = Some(bytes(a, b)),
                Clause::Window => st.window = Some(bytes(a, b)),
                Clause::Order => {
                    let items = split(a + 2, b)
                        .into_iter()
                        .map(|r| strip_direction(src, r))
                        .collect();
                    st.order = Some((bytes(a, b), items));
                }
                Clause::Limit => st.limit = Some(bytes(a, b)),
                Clause::Tail => st.tail = toks.get(a).map_or(src.parsed.len(), |t| t.start),
            }
        }
        st.body_end = match body_end_tok {
            Some(b) if b > 0 => toks.get(b - 1).map_or(0, |t| t.end),
            _ => 0,
        };
        Ok(st)
    }
}

/// An ORDER BY item's range without a trailing ASC/DESC.
fn strip_direction(src: &Source<'_>, r: Range<usize>) -> Range<usize> {
    let a = src.tok_from(r.start);
    let b = src.tok_from(r.end); // exclusive
    if b > a + 1
        && let Some(t) = src.toks.get(b - 1)
        && t.kind == Kind::Word
        && src
            .parsed
            .get(t.start..t.end)
            .is_some_and(|w| w.eq_ignore_ascii_case("ASC") || w.eq_ignore_ascii_case("DESC"))
    {
        return r.start..src.toks[b - 2].end;
    }
    r
}

/// A back-quoted identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('`');
    for c in name.chars() {
        if c == '`' {
            s.push('`');
        }
        s.push(c);
    }
    s.push('`');
    s
}

/// `LIMIT n`.
pub(crate) fn limit_clause(n: u64) -> String {
    let mut s = String::from("LIMIT ");
    let _ = write!(s, "{n}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::{SetExpr, Statement};

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&MySqlDialect {}, sql)
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0)
    }

    #[test]
    fn clauses_are_found_at_depth_zero_only() {
        let sql = "SELECT a, SUM(b) AS `s`, GROUP_CONCAT(c ORDER BY d) FROM t WHERE x IN (SELECT 1 FROM u ORDER BY 1 LIMIT 1) GROUP BY a HAVING s > 1 ORDER BY a DESC, 2 LIMIT 5 FOR UPDATE";
        let src = Source::new(sql);
        let st = SelectText::of(&src).unwrap_or_else(|e| panic!("{e}"));
        let t = |r: &Range<usize>| &sql[r.clone()];
        assert_eq!(
            st.item_ranges.iter().map(t).collect::<Vec<_>>(),
            ["a", "SUM(b) AS `s`", "GROUP_CONCAT(c ORDER BY d)"]
        );
        let (g, gi) = st.group.clone().unwrap_or_default();
        assert_eq!(t(&g), "GROUP BY a");
        assert_eq!(gi.iter().map(t).collect::<Vec<_>>(), ["a"]);
        assert_eq!(st.having.as_ref().map(t), Some("HAVING s > 1"));
        let (o, oi) = st.order.clone().unwrap_or_default();
        assert_eq!(t(&o), "ORDER BY a DESC, 2");
        assert_eq!(oi.iter().map(t).collect::<Vec<_>>(), ["a", "2"]);
        assert_eq!(st.limit.as_ref().map(t), Some("LIMIT 5"));
        assert_eq!(&sql[st.tail..], "FOR UPDATE");
        assert_eq!(
            &sql[st.from.unwrap_or(0)..st.body_end],
            "FROM t WHERE x IN (SELECT 1 FROM u ORDER BY 1 LIMIT 1)"
        );
    }

    #[test]
    fn expression_text_is_verbatim() {
        let sql = "SELECT CONCAT('a\\\\b', \"x\\\"y\"), (a + 1) * 2, COUNT(*), MIN(BINARY name), CASE WHEN a THEN 'it''s' END FROM t";
        let Statement::Query(q) = parse(sql) else {
            panic!("not a query")
        };
        let SetExpr::Select(s) = q.body.as_ref() else {
            panic!("not a select")
        };
        let src = Source::new(sql);
        let texts: Vec<String> = s
            .projection
            .iter()
            .map(|i| match i {
                sqlparser::ast::SelectItem::UnnamedExpr(e) => {
                    src.expr_text(e).unwrap_or_else(|e| panic!("{e}"))
                }
                _ => panic!("item"),
            })
            .collect();
        assert_eq!(
            texts,
            [
                "CONCAT('a\\\\b', \"x\\\"y\")",
                "(a + 1) * 2",
                "COUNT(*)",
                "MIN(BINARY name)",
                "CASE WHEN a THEN 'it''s' END"
            ]
        );
    }

    #[test]
    fn shapes_map_onto_the_statement() {
        // Shape `SELECT a FROM t WHERE id = ?1 AND s = ?2` of the statement below.
        let sql = "SELECT a FROM t WHERE id = 12345 AND s = 'xy'";
        let shape = "SELECT a FROM t WHERE id = ?1 AND s = ?2";
        let slots = [
            Slot {
                parsed: 27..29,
                sql: 27..32,
            },
            Slot {
                parsed: 38..40,
                sql: 41..45,
            },
        ];
        let src = Source::with_slots(shape, sql, &slots);
        let mut e = Edits::default();
        e.replace(14..15, "`t_1` AS t");
        assert_eq!(
            e.apply(&src).ok().as_deref(),
            Some("SELECT a FROM `t_1` AS t WHERE id = 12345 AND s = 'xy'")
        );
        let mut bad = Edits::default();
        bad.replace(28..29, "x");
        assert!(bad.apply(&src).is_err());
    }
}
