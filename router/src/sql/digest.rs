//! Query digests: a normalised fingerprint of a statement (literals become `?`, `IN (...)` and
//! multi-row `VALUES` lists collapse, comments and extra whitespace disappear, keywords are
//! upper-cased) and its 64-bit hash, for per-fingerprint statistics, rules and limits.

use super::lexer::{Token, tokenize};

/// Upper bound on the fingerprint text kept per digest.
pub const MAX_FINGERPRINT: usize = 1024;

/// A statement's fingerprint text and its FNV-1a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Normalised text (at most [`MAX_FINGERPRINT`] bytes).
    pub text: String,
    /// FNV-1a 64 of the full normalised text.
    pub hash: u64,
}

/// Computes the digest of `sql`.
pub fn digest(sql: &str) -> Digest {
    let mut hints = Vec::new();
    let mut toks = Vec::with_capacity(32);
    tokenize(sql, &mut hints, &mut toks);
    digest_tokens(&toks, sql.len())
}

/// The digest of a statement already tokenized (`len`: its length in bytes, a capacity hint).
pub fn digest_tokens(toks: &[Token<'_>], len: usize) -> Digest {
    let mut out = String::with_capacity((len + 8).min(2 * MAX_FINGERPRINT + 64));
    let mut hash = Fnv::new();
    // Bytes of `out` already hashed. Past 2 x MAX_FINGERPRINT the text is hashed so far and cut
    // back to its kept prefix, so a huge statement never holds a second copy of itself.
    let mut hashed = 0;
    let mut i = 0;
    let mut prev_word = false;
    let mut toks = toks;
    while let Some((Token::Punct(';'), rest)) = toks.split_last() {
        toks = rest;
    }
    while i < toks.len() {
        // Collapse `IN (?, ?, ...)` lists and repeated `VALUES (...), (...)` tuples of literals.
        if toks[i] == Token::Punct('(')
            && i > 0
            && (toks[i - 1].is_kw("IN")
                || toks[i - 1].is_kw("VALUES")
                || toks[i - 1].is_kw("VALUE"))
            && let Some(end) = literal_list_end(toks, i)
        {
            let mut j = end + 1;
            while toks.get(j) == Some(&Token::Punct(','))
                && toks.get(j + 1) == Some(&Token::Punct('('))
                && let Some(e) = literal_list_end(toks, j + 1)
            {
                j = e + 1;
            }
            emit(&mut out, Text::Plain("(...)"), &mut prev_word);
            i = j;
            spill(&mut out, &mut hash, &mut hashed);
            continue;
        }
        // No allocation per token: words are upper-cased in place in `out`, punctuation goes
        // through a stack buffer.
        let mut buf = [0u8; 4];
        match toks[i] {
            Token::Word(w) => emit(&mut out, Text::Upper(w), &mut prev_word),
            Token::QuotedIdent(w) => emit(&mut out, Text::Quoted(w), &mut prev_word),
            Token::Str(_) | Token::Number(_) | Token::Placeholder => {
                emit(&mut out, Text::Plain("?"), &mut prev_word)
            }
            Token::Variable(v) => emit(&mut out, Text::Plain(v), &mut prev_word),
            Token::Punct(c) => emit(
                &mut out,
                Text::Plain(c.encode_utf8(&mut buf)),
                &mut prev_word,
            ),
        }
        i += 1;
        spill(&mut out, &mut hash, &mut hashed);
    }
    hash.write(out.as_bytes().get(hashed..).unwrap_or_default());
    truncate_at_char(&mut out, MAX_FINGERPRINT);
    Digest {
        hash: hash.0,
        text: out,
    }
}

/// If `toks[open]` opens a parenthesised list of only literals and commas, the index of `)`.
fn literal_list_end(toks: &[Token<'_>], open: usize) -> Option<usize> {
    let mut j = open + 1;
    let mut any = false;
    loop {
        match toks.get(j)? {
            Token::Str(_) | Token::Number(_) | Token::Placeholder => any = true,
            Token::Word(w) if w.eq_ignore_ascii_case("NULL") => any = true,
            Token::Punct(',') | Token::Punct('-') => {}
            Token::Punct(')') => return any.then_some(j),
            _ => return None,
        }
        j += 1;
    }
}

/// One token's text in the fingerprint.
#[derive(Clone, Copy)]
enum Text<'a> {
    /// As is.
    Plain(&'a str),
    /// ASCII letters upper-cased (keywords and names).
    Upper(&'a str),
    /// A quoted identifier: written between backticks.
    Quoted(&'a str),
}

/// Appends one token to the normalised text. The text is built whole (the hash covers all of
/// it) and hashed and cut to [`MAX_FINGERPRINT`] at the end: one pass of FNV over the bytes
/// instead of a call per token piece.
fn emit(out: &mut String, text: Text<'_>, prev: &mut bool) {
    // One space between tokens, except before `,` `)` `.` and after `(` `.`.
    let plain = match text {
        Text::Plain(t) => Some(t),
        _ => None,
    };
    let no_space_before = matches!(plain, Some("," | ")" | "."));
    if !out.is_empty() && *prev && !no_space_before {
        out.push(' ');
    }
    match text {
        Text::Plain(t) => out.push_str(t),
        Text::Upper(t) => {
            let at = out.len();
            out.push_str(t);
            if let Some(tail) = out.get_mut(at..) {
                tail.make_ascii_uppercase();
            }
        }
        Text::Quoted(t) => {
            out.push('`');
            out.push_str(t);
            out.push('`');
        }
    }
    *prev = !matches!(plain, Some("(" | "."));
}

/// Past 2 x [`MAX_FINGERPRINT`] bytes: hashes what is not hashed yet and cuts the text back to
/// the prefix that is kept.
fn spill(out: &mut String, hash: &mut Fnv, hashed: &mut usize) {
    if out.len() > 2 * MAX_FINGERPRINT {
        hash.write(out.as_bytes().get(*hashed..).unwrap_or_default());
        truncate_at_char(out, MAX_FINGERPRINT);
        *hashed = out.len();
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_lists_collapse() {
        let a = digest("SELECT c FROM sbtest1 WHERE id = 42");
        let b = digest("select  c from sbtest1 /* x */ where id=7;");
        assert_eq!(a, b);
        assert_eq!(a.text, "SELECT C FROM SBTEST1 WHERE ID = ?");
        let c = digest("SELECT * FROM t WHERE id IN (1, 2, 3)");
        let d = digest("SELECT * FROM t WHERE id IN ('a')");
        assert_eq!(c, d);
        assert!(c.text.contains("IN (...)"), "{}", c.text);
        let e = digest("INSERT INTO t VALUES (1,'a'),(2,'b'),(3,NULL)");
        let f = digest("INSERT INTO t VALUES (9,'z')");
        assert_eq!(e, f);
        assert_ne!(
            digest("SELECT a FROM t").hash,
            digest("SELECT b FROM t").hash
        );
        assert_ne!(
            digest("SELECT f(a) FROM t").hash,
            digest("SELECT f((a)) FROM t").hash
        );
    }

    #[test]
    fn executable_comments_are_part_of_the_digest() {
        let plain = digest("DROP TABLE t");
        for sql in [
            "/*M!100000 DROP TABLE t */",
            "/*M! DROP TABLE t*/",
            "/*!50000 DROP TABLE t */",
        ] {
            assert_eq!(digest(sql), plain, "{sql}");
        }
        assert_eq!(digest("/* DROP TABLE t */ SELECT 1"), digest("SELECT 1"));
    }

    #[test]
    fn only_in_and_values_lists_collapse() {
        assert_eq!(digest("SELECT SLEEP(1)").text, "SELECT SLEEP (?)");
        assert_ne!(digest("SELECT f(1)").hash, digest("SELECT f(1, 2)").hash);
        assert_eq!(
            digest("SELECT * FROM t WHERE a IN (1,2)").text,
            "SELECT * FROM T WHERE A IN (...)"
        );
    }

    #[test]
    fn long_statements_are_bounded() {
        let sql = format!(
            "SELECT {} FROM t",
            (0..2000)
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let d = digest(&sql);
        assert!(d.text.len() <= MAX_FINGERPRINT);
        assert_ne!(d.hash, digest("SELECT c0 FROM t").hash);
        // The hash covers the whole normalised text, also past the kept prefix and across the
        // points where the text is hashed and cut back: FNV of the full text, computed here.
        let full = format!(
            "SELECT {} FROM T",
            (0..2000)
                .map(|i| format!("C{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut h = Fnv::new();
        h.write(full.as_bytes());
        assert_eq!(d.hash, h.0);
        assert!(full.starts_with(&d.text));
        // Literals and spacing still normalise away at any length; a change at the end counts.
        let spaced = sql
            .replace(',', " ,  ")
            .replace("FROM t", "FROM t WHERE a = 7");
        let other = sql.replace("FROM t", "FROM t WHERE a = 'x'");
        assert_eq!(digest(&spaced), digest(&other));
        assert_ne!(digest(&other).hash, d.hash);
    }
}
