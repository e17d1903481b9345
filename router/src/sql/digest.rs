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
    let mut out = String::with_capacity(sql.len().min(MAX_FINGERPRINT));
    let mut hash = Fnv::new();
    let mut i = 0;
    let mut prev_word = false;
    while toks.last() == Some(&Token::Punct(';')) {
        toks.pop();
    }
    while i < toks.len() {
        // Collapse `IN (?, ?, ...)` lists and repeated `VALUES (...), (...)` tuples of literals.
        if toks[i] == Token::Punct('(')
            && i > 0
            && (toks[i - 1].is_kw("IN")
                || toks[i - 1].is_kw("VALUES")
                || toks[i - 1].is_kw("VALUE"))
            && let Some(end) = literal_list_end(&toks, i)
        {
            let mut j = end + 1;
            while toks.get(j) == Some(&Token::Punct(','))
                && toks.get(j + 1) == Some(&Token::Punct('('))
                && let Some(e) = literal_list_end(&toks, j + 1)
            {
                j = e + 1;
            }
            emit(&mut out, &mut hash, Text::Plain("(...)"), &mut prev_word);
            i = j;
            continue;
        }
        // No allocation per token: words are upper-cased in place in `out`, punctuation goes
        // through a stack buffer.
        let mut buf = [0u8; 4];
        match toks[i] {
            Token::Word(w) => emit(&mut out, &mut hash, Text::Upper(w), &mut prev_word),
            Token::QuotedIdent(w) => emit(&mut out, &mut hash, Text::Quoted(w), &mut prev_word),
            Token::Str(_) | Token::Number(_) | Token::Placeholder => {
                emit(&mut out, &mut hash, Text::Plain("?"), &mut prev_word)
            }
            Token::Variable(v) => emit(&mut out, &mut hash, Text::Plain(v), &mut prev_word),
            Token::Punct(c) => emit(
                &mut out,
                &mut hash,
                Text::Plain(c.encode_utf8(&mut buf)),
                &mut prev_word,
            ),
        }
        i += 1;
    }
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

fn emit(out: &mut String, hash: &mut Fnv, text: Text<'_>, prev: &mut bool) {
    // One space between tokens, except before `,` `)` `.` and after `(` `.`.
    let plain = match text {
        Text::Plain(t) => Some(t),
        _ => None,
    };
    let no_space_before = matches!(plain, Some("," | ")" | "."));
    if !out.is_empty() && *prev && !no_space_before {
        hash.write(b" ");
        if out.len() < MAX_FINGERPRINT {
            out.push(' ');
        }
    }
    match text {
        Text::Plain(t) => {
            hash.write(t.as_bytes());
            if out.len() + t.len() <= MAX_FINGERPRINT {
                out.push_str(t);
            }
        }
        Text::Upper(t) => {
            for &b in t.as_bytes() {
                hash.write(&[b.to_ascii_uppercase()]);
            }
            if out.len() + t.len() <= MAX_FINGERPRINT {
                let at = out.len();
                out.push_str(t);
                if let Some(tail) = out.get_mut(at..) {
                    tail.make_ascii_uppercase();
                }
            }
        }
        Text::Quoted(t) => {
            hash.write(b"`");
            hash.write(t.as_bytes());
            hash.write(b"`");
            if out.len() + t.len() + 2 <= MAX_FINGERPRINT {
                out.push('`');
                out.push_str(t);
                out.push('`');
            }
        }
    }
    *prev = !matches!(plain, Some("(" | "."));
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
    }
}
