//! A small MySQL tokenizer for the fast path: keywords, identifiers, literals, operators, comments
//! (with Furrow hints) and executable comments (MySQL's `/*!NNNNN ... */`, MariaDB's
//! `/*M!NNNNNN ... */`), whose text is code.

/// One token of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A bare word: keyword or unquoted identifier (original case).
    Word(&'a str),
    /// A back-quoted identifier, without the quotes.
    QuotedIdent(&'a str),
    /// A string literal (quotes included, escapes untouched).
    Str(&'a str),
    /// A numeric literal (also `0x..`, `x'..'` and `b'..'` literals).
    Number(&'a str),
    /// `@name` (user variable) or `@@name` (system variable), sigils included.
    Variable(&'a str),
    /// `?` placeholder.
    Placeholder,
    /// Any other single punctuation or operator character.
    Punct(char),
}

impl Token<'_> {
    /// Whether the token is the keyword `kw` (ASCII case-insensitive).
    pub fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// A Furrow routing hint found in a comment: `/* furrow:primary */`, `/* furrow:replica */`,
/// `/* furrow:backend=NAME */`, `/* furrow:shard=NAME */`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Send the statement to the primary.
    Primary,
    /// Send the statement to a replica (if one is usable).
    Replica,
    /// Send the statement to the named server of the group.
    Backend(String),
    /// On a sharded listener: run the statement as written on the named shard (no planning, no
    /// rewriting). Ignored by read/write splitting.
    Shard(String),
}

/// Splits `sql` into tokens, collecting hints from comments. Unterminated strings or comments end
/// the token stream (the server will report the syntax error).
pub fn tokenize<'a>(sql: &'a str, hints: &mut Vec<Hint>, out: &mut Vec<Token<'a>>) {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => i += 1,
            b'#' => i = skip_line(b, i),
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = skip_line(b, i)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if let Some(body) = executable_comment_body(b, i) {
                    // Executable comment: skip `/*!` / `/*M!` and the optional version number; the
                    // body is code.
                    i = body;
                    continue;
                }
                let start = i + 2;
                let end = find(b, start, b"*/").unwrap_or(b.len());
                parse_hint(&sql[start..end], hints);
                i = (end + 2).min(b.len());
            }
            b'*' if b.get(i + 1) == Some(&b'/') => i += 2, // end of an executable comment
            b'\'' | b'"' => {
                let end = skip_quoted(b, i, c);
                out.push(Token::Str(&sql[i..end]));
                i = end;
            }
            b'`' => {
                let end = skip_quoted(b, i, b'`');
                let inner_end = if end > i + 1 && b[end - 1] == b'`' {
                    end - 1
                } else {
                    end
                };
                out.push(Token::QuotedIdent(&sql[i + 1..inner_end.max(i + 1)]));
                i = end;
            }
            b'@' => {
                let start = i;
                i = variable_end(b, i);
                out.push(Token::Variable(&sql[start..i]));
            }
            b'?' => {
                out.push(Token::Placeholder);
                i += 1;
            }
            b'0'..=b'9' => {
                let start = i;
                i = number_end(b, i);
                out.push(Token::Number(&sql[start..i]));
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !matches!(out.last(), Some(Token::Word(_) | Token::QuotedIdent(_))) =>
            {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push(Token::Number(&sql[start..i]));
            }
            _ if is_word_byte(c) => {
                // x'..' / b'..' / n'..' / _charset'..' literals.
                let start = i;
                i = word_end(b, i);
                let word = &sql[start..i];
                if b.get(i) == Some(&b'\'') {
                    let lower = word.to_ascii_lowercase();
                    if lower == "x" || lower == "b" {
                        i = skip_quoted(b, i, b'\'');
                        out.push(Token::Number(&sql[start..i]));
                        continue;
                    }
                    if lower == "n" || lower.starts_with('_') {
                        i = skip_quoted(b, i, b'\'');
                        out.push(Token::Str(&sql[start..i]));
                        continue;
                    }
                }
                out.push(Token::Word(word));
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or('\u{fffd}');
                out.push(Token::Punct(ch));
                i += ch.len_utf8().max(1);
            }
        }
    }
}

/// Splits a multi-statement text (CLIENT_MULTI_STATEMENTS) into its statements at the `;`s that
/// are outside string literals, quoted identifiers and comments (executable comments included: a
/// `;` inside `/*! ... */` does not split). Each statement is a slice of `sql` (the client's bytes)
/// without its `;` and without surrounding whitespace; pieces with no tokens (empty, or only
/// comments, as after a trailing `;`) are left out. An unterminated string or comment runs to the
/// end of the text (the server reports the syntax error). One statement gives a single piece.
pub fn split_statements<'a>(sql: &'a str) -> Vec<&'a str> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let push = |from: usize, to: usize, out: &mut Vec<&'a str>| {
        let piece = sql.get(from..to).unwrap_or("").trim();
        let mut hints = Vec::new();
        let mut toks = Vec::new();
        tokenize(piece, &mut hints, &mut toks);
        if !toks.is_empty() {
            out.push(piece);
        }
    };
    while i < b.len() {
        match b[i] {
            b'#' => i = skip_line(b, i),
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = skip_line(b, i)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = find(b, i + 2, b"*/").map_or(b.len(), |e| e + 2);
            }
            c @ (b'\'' | b'"' | b'`') => i = skip_quoted(b, i, c),
            b';' => {
                push(start, i, &mut out);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push(start, b.len(), &mut out);
    out
}

/// The two kinds of literal [`scan_literals`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LitKind {
    /// A number token (what [`tokenize`] gives as [`Token::Number`]).
    Number,
    /// A quoted string token, quotes included ([`Token::Str`]).
    Str,
}

/// Reports every number and quoted-string literal of `sql` in order, as `(start, end, kind)` byte
/// ranges — exactly the spans of the [`Token::Number`] and [`Token::Str`] tokens that [`tokenize`]
/// gives — without building tokens. Returns `false` as soon as the text holds something whose tokens
/// it does not follow (the caller must tokenize instead): comments (hints live there) and
/// executable comments, `x'..'`/`b'..'`/`n'..'`/`_charset'..'` literals, a number starting with
/// `.`, quoted user variables, control bytes. `on_lit` returns `false` to stop the scan (which then
/// returns `false`).
///
/// It shares [`tokenize`]'s helpers for numbers, strings, words and variables, so the two agree.
pub fn scan_literals(sql: &str, mut on_lit: impl FnMut(usize, usize, LitKind) -> bool) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while SKELETON_CLASS[usize::from(b[i])] == VERBATIM {
            i += 1;
            if i == b.len() {
                return true;
            }
        }
        let c = b[i];
        match SKELETON_CLASS[usize::from(c)] {
            VERBATIM => i += 1,
            DIGIT if i > 0 && is_word_byte(b[i - 1]) => i += 1, // inside a word
            DIGIT => {
                let end = number_end(b, i);
                if !on_lit(i, end, LitKind::Number) {
                    return false;
                }
                i = end;
            }
            _ => match c {
                b'-' if b.get(i + 1) != Some(&b'-') => i += 1,
                b'/' | b'*' if !matches!(b.get(i + 1), Some(b'*' | b'/')) => i += 1,
                b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => i += 1,
                b'\'' | b'"' => {
                    if c == b'\'' && i > 0 && is_word_byte(b[i - 1]) {
                        return false; // x'..', b'..', n'..', _charset'..'
                    }
                    let end = skip_quoted(b, i, c);
                    if !on_lit(i, end, LitKind::Str) {
                        return false;
                    }
                    i = end;
                }
                b'`' => i = skip_quoted(b, i, b'`'),
                b'@' => {
                    let end = variable_end(b, i);
                    if b[i..end].iter().any(|&c| matches!(c, b'\'' | b'"' | b'`')) {
                        return false;
                    }
                    i = end;
                }
                // Comments (`#`, `--`, `/* */`, executable comments), a number starting with `.`,
                // control bytes.
                _ => return false,
            },
        }
    }
    true
}

/// Marks a number literal's place in a [`skeleton`].
pub(crate) const SKELETON_NUMBER: u8 = 0x01;
/// Marks a quoted string literal's place in a [`skeleton`].
pub(crate) const SKELETON_STRING: u8 = 0x02;

/// Writes the *skeleton* of `sql` to `out`: its bytes with every number and quoted-string literal
/// replaced by a one-byte marker, so that statements which differ only in their literal values
/// have equal skeletons. Returns `false` (and the skeleton must not be used) where
/// [`scan_literals`] does (comments, unusual literals, control bytes, which could be confused with
/// the markers) and for skeletons longer than `max`.
///
/// Two statements with equal skeletons tokenize to equal token streams except for the values of
/// their `Number` and `Str` tokens: what classification and digests read of them is the same (see
/// [`crate::sql::StmtCache`]).
pub fn skeleton(sql: &str, out: &mut Vec<u8>, max: usize) -> bool {
    out.clear();
    let b = sql.as_bytes();
    let mut last = 0;
    let scanned = scan_literals(sql, |start, end, kind| {
        out.extend_from_slice(&b[last..start]);
        out.push(match kind {
            LitKind::Number => SKELETON_NUMBER,
            LitKind::Str => SKELETON_STRING,
        });
        last = end;
        out.len() <= max
    });
    if !scanned {
        return false;
    }
    out.extend_from_slice(&b[last..]);
    out.len() <= max
}

const VERBATIM: u8 = 0;
const DIGIT: u8 = 1;
const SPECIAL: u8 = 2;

/// How [`skeleton`] treats each byte.
static SKELETON_CLASS: [u8; 256] = {
    let mut t = [VERBATIM; 256];
    let mut c = 0;
    while c < 0x09 {
        t[c] = SPECIAL;
        c += 1;
    }
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = DIGIT;
        d += 1;
    }
    let special = b"#-/*'\"`@.";
    let mut k = 0;
    while k < special.len() {
        t[special[k] as usize] = SPECIAL;
        k += 1;
    }
    t
};

/// Where the body of the executable comment opening at `i` starts, if the `/*` at `i` opens one:
/// MySQL's `/*!` and `/*!NNNNN`, and MariaDB's `/*M!` and `/*M!NNNNNN` (MariaDB executes both; a
/// MySQL server ignores `/*M!`, but treating it as code is the safe reading for routing and rules).
/// A version number newer than the server's makes the server skip the body; it is code here all
/// the same, so that a statement is never judged milder than what some server may run.
pub fn executable_comment_body(b: &[u8], i: usize) -> Option<usize> {
    let mut j = match b.get(i + 2..i + 4) {
        Some([b'!', ..]) => i + 3,
        Some(b"M!") => i + 4,
        _ => return None,
    };
    while j < b.len() && b[j].is_ascii_digit() {
        j += 1;
    }
    Some(j)
}

/// Whether `sql` holds a `;` or a `/` anywhere (quoted or not): the test before the checks that
/// only such text needs ([`split_statements`], [`has_mariadb_executable_comment`]). A sharded
/// listener runs it on every statement, so it is branch-free over 16-byte blocks (vector compares
/// once compiled; the last block overlaps the one before it): two byte searches, one per
/// character, cost ~290 instructions of a point select (callgrind).
pub fn has_semicolon_or_slash(sql: &str) -> bool {
    fn block(c: &[u8]) -> bool {
        let mut hit = 0u8;
        for &x in c {
            hit |= u8::from(x == b';') | u8::from(x == b'/');
        }
        hit != 0
    }
    let b = sql.as_bytes();
    if b.len() < 16 {
        return block(b);
    }
    let mut blocks = b.chunks_exact(16);
    if blocks.any(block) {
        return true;
    }
    !b.len().is_multiple_of(16) && block(&b[b.len() - 16..])
}

/// Whether `sql` holds a MariaDB executable comment (`/*M!`) outside string literals, quoted names
/// and ordinary comments (for code that must not hand such text to `sqlparser`, which reads it as
/// a comment).
pub fn has_mariadb_executable_comment(sql: &str) -> bool {
    let b = sql.as_bytes();
    // Every statement of a sharded listener is checked: most have no `/` at all, and the search
    // for one goes a word at a time where the scan below goes byte by byte.
    if !b.contains(&b'/') {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => i = skip_quoted(b, i, q),
            b'#' => i = skip_line(b, i),
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = skip_line(b, i)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match b.get(i + 2) {
                Some(b'M') if b.get(i + 3) == Some(&b'!') => return true,
                Some(b'!') => i += 3, // MySQL's executable comment: its body is code
                _ => i = find(b, i + 2, b"*/").map_or(b.len(), |e| e + 2),
            },
            _ => i += 1,
        }
    }
    false
}

/// End of the number literal starting at `i` (a digit): alphanumerics and dots, and a sign after
/// an exponent letter.
fn number_end(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len()
        && (b[i].is_ascii_alphanumeric()
            || b[i] == b'.'
            // An exponent's sign only when a digit follows (`1e-5`); `0e-- x` is `0e` and a
            // comment, as the server reads it.
            || ((b[i] == b'+' || b[i] == b'-')
                && matches!(b[i - 1], b'e' | b'E')
                && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
    {
        i += 1;
    }
    i
}

/// End of the `@name` / `@@name` / `@'quoted'` variable starting at `i` (the `@`).
fn variable_end(b: &[u8], mut i: usize) -> usize {
    i += 1;
    if b.get(i) == Some(&b'@') {
        i += 1;
    }
    if matches!(b.get(i), Some(b'\'' | b'"' | b'`')) {
        skip_quoted(b, i, b[i])
    } else {
        while i < b.len() && (is_word_byte(b[i]) || b[i] == b'.') {
            i += 1;
        }
        i
    }
}

/// End of the bare word starting at `i`.
fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_word_byte(b[i]) {
        i += 1;
    }
    i
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn skip_line(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| p + from)
}

/// Index just past the closing quote (or the end of input).
fn skip_quoted(b: &[u8], start: usize, q: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn parse_hint(comment: &str, hints: &mut Vec<Hint>) {
    for part in comment.split(|c: char| c.is_whitespace() || c == ',') {
        let Some(rest) = part.strip_prefix("furrow:") else {
            continue;
        };
        if rest.eq_ignore_ascii_case("primary") || rest.eq_ignore_ascii_case("master") {
            hints.push(Hint::Primary);
        } else if rest.eq_ignore_ascii_case("replica") || rest.eq_ignore_ascii_case("slave") {
            hints.push(Hint::Replica);
        } else if let Some(name) = rest.strip_prefix("backend=")
            && !name.is_empty()
        {
            hints.push(Hint::Backend(name.to_string()));
        } else if let Some(name) = rest.strip_prefix("shard=")
            && !name.is_empty()
        {
            hints.push(Hint::Shard(name.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolon_or_slash_found_at_every_position_and_length() {
        for len in 0..70 {
            let plain = "a".repeat(len);
            assert!(!has_semicolon_or_slash(&plain), "{len}");
            for at in 0..len {
                for c in [';', '/'] {
                    let mut s = plain.clone().into_bytes();
                    s[at] = c as u8;
                    let s = String::from_utf8(s).unwrap();
                    assert!(has_semicolon_or_slash(&s), "{s:?}");
                }
            }
        }
        assert!(!has_semicolon_or_slash(
            "SELECT id, score, name FROM items WHERE id = 42"
        ));
        assert!(has_semicolon_or_slash("SELECT 1 /*M! , 2 */"));
    }

    fn toks(sql: &str) -> (Vec<Token<'_>>, Vec<Hint>) {
        let mut h = Vec::new();
        let mut t = Vec::new();
        tokenize(sql, &mut h, &mut t);
        (t, h)
    }

    #[test]
    fn skeletons_mask_literals_and_refuse_what_they_cannot_follow() {
        let mut k = Vec::new();
        assert!(skeleton(
            "SELECT c1, `t 2`.x FROM t1 WHERE id=5 AND s='x''y' AND f > 1.5e-3 - @v",
            &mut k,
            1024
        ));
        assert_eq!(
            k,
            b"SELECT c1, `t 2`.x FROM t1 WHERE id=\x01 AND s=\x02 AND f > \x01 - @v".to_vec()
        );
        for refused in [
            "SELECT 1 # c",
            "SELECT 1 -- c",
            "SELECT /* furrow:primary */ 1",
            "/*!40101 SET NAMES utf8 */",
            "SELECT x'41'",
            "SELECT _utf8'a'",
            "SELECT .5",
            "SELECT @'v'",
            "SELECT \x01",
        ] {
            assert!(!skeleton(refused, &mut k, 1024), "{refused}");
        }
        assert!(!skeleton("SELECT a FROM t", &mut k, 8));
    }

    #[test]
    fn strings_comments_and_hints() {
        let (t, h) =
            toks("/* furrow:replica */ SELECT 'a''b\\'c', \"x\" -- tail\n FROM `t``x` # c");
        assert_eq!(h, vec![Hint::Replica]);
        assert_eq!(
            t,
            vec![
                Token::Word("SELECT"),
                Token::Str("'a''b\\'c'"),
                Token::Punct(','),
                Token::Str("\"x\""),
                Token::Word("FROM"),
                Token::QuotedIdent("t``x"),
            ]
        );
    }

    #[test]
    fn executable_comments_are_code_and_backend_hint() {
        let (t, h) =
            toks("/*!40101 SET NAMES utf8 */; /* furrow:backend=r2 */ SELECT @a, @@x, ?, 1.5e-3");
        assert_eq!(h, vec![Hint::Backend("r2".into())]);
        assert_eq!(t[0], Token::Word("SET"));
        assert_eq!(t[3], Token::Punct(';'));
        assert!(t.contains(&Token::Variable("@a")));
        assert!(t.contains(&Token::Variable("@@x")));
        assert!(t.contains(&Token::Placeholder));
        assert_eq!(t.last(), Some(&Token::Number("1.5e-3")));
    }

    #[test]
    fn mariadb_executable_comments_are_code() {
        let drop = [Token::Word("DROP"), Token::Word("TABLE"), Token::Word("t")];
        for sql in [
            "/*M!100000 DROP TABLE t */",
            "/*M! DROP TABLE t*/",
            "/*M!DROP TABLE t */",
            "/*!DROP TABLE t*/",
            "/*!50000 DROP TABLE t */",
            "/*!999999 DROP TABLE t */",
        ] {
            let (t, h) = toks(sql);
            assert_eq!(t, drop, "{sql}");
            assert!(h.is_empty(), "{sql}");
            assert!(!skeleton(sql, &mut Vec::new(), 1024), "{sql}");
        }
        // A comment that merely starts with `M` (or a lower-case `m!`, which servers ignore) is a
        // comment.
        assert_eq!(
            toks("/*Mx DROP TABLE t */ SELECT 1").0[0],
            Token::Word("SELECT")
        );
        assert_eq!(
            toks("/*m! DROP TABLE t */ SELECT 1").0[0],
            Token::Word("SELECT")
        );
        assert!(has_mariadb_executable_comment("SELECT 1 /*M!100000 , 2 */"));
        assert!(has_mariadb_executable_comment(
            "SELECT /*!50000 /*M! 1 */ */"
        ));
        for plain in [
            "SELECT '/*M!' FROM t",
            "SELECT `/*M!` FROM t",
            "SELECT 1 /* a /*M! b */",
            "SELECT 1 -- /*M!",
            "SELECT 1 # /*M!",
            "SELECT 1 /*!50000 , 2 */",
        ] {
            assert!(!has_mariadb_executable_comment(plain), "{plain}");
        }
        assert_eq!(executable_comment_body(b"/*M!", 0), Some(4));
        assert_eq!(executable_comment_body(b"/*M", 0), None);
        assert_eq!(executable_comment_body(b"x /*!1", 2), Some(6));
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for s in [
            "'abc",
            "/* x",
            "`a",
            "@'x",
            "x'",
            "--",
            "/*!",
            "/*M!",
            "/*M",
            "/*M!1",
            "\u{e9}\u{e9}",
        ] {
            let _ = toks(s);
        }
    }

    /// The spans `scan_literals` reports, from tokenizing (number and string tokens).
    fn token_spans(sql: &str) -> (Vec<(usize, usize, LitKind)>, bool) {
        let (t, h) = toks(sql);
        let base = sql.as_ptr() as usize;
        let spans = t
            .iter()
            .filter_map(|t| match t {
                Token::Number(s) => Some((s, LitKind::Number)),
                Token::Str(s) => Some((s, LitKind::Str)),
                _ => None,
            })
            .map(|(s, k)| {
                let start = s.as_ptr() as usize - base;
                (start, start + s.len(), k)
            })
            .collect();
        (spans, !h.is_empty())
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        assert_eq!(
            split_statements("SELECT 1; SELECT 2"),
            vec!["SELECT 1", "SELECT 2"]
        );
        assert_eq!(split_statements("SELECT 1;"), vec!["SELECT 1"]);
        assert_eq!(
            split_statements("  SELECT 1 ;; ; -- done\n"),
            vec!["SELECT 1"]
        );
        assert_eq!(split_statements(""), Vec::<&str>::new());
        assert_eq!(
            split_statements("SELECT 'a;b', \"c;\\\";d\"; SELECT `x;y` FROM t"),
            vec!["SELECT 'a;b', \"c;\\\";d\"", "SELECT `x;y` FROM t"]
        );
        assert_eq!(
            split_statements("SELECT 1 /* a; b */ + 1; # c; d\nSELECT 2 -- e; f\n; SELECT 3"),
            vec![
                "SELECT 1 /* a; b */ + 1",
                "# c; d\nSELECT 2 -- e; f",
                "SELECT 3"
            ]
        );
        // `--` without a space is an operator pair, not a comment.
        assert_eq!(
            split_statements("SELECT 1--1; SELECT 2"),
            vec!["SELECT 1--1", "SELECT 2"]
        );
        assert_eq!(
            split_statements("SELECT /*!50000 1; */ 2; SELECT 3"),
            vec!["SELECT /*!50000 1; */ 2", "SELECT 3"]
        );
        assert_eq!(
            split_statements("SELECT 'it''s;'; SELECT 'a\\';'"),
            vec!["SELECT 'it''s;'", "SELECT 'a\\';'"]
        );
        // Unterminated: the rest is one statement for the server to refuse.
        assert_eq!(
            split_statements("SELECT 'a; SELECT 2"),
            vec!["SELECT 'a; SELECT 2"]
        );
    }

    proptest::proptest! {
        /// Split pieces are the statements that were joined: strings, quoted identifiers and
        /// comments holding `;` never split, and each piece is the client's text.
        #[test]
        fn split_gives_back_the_joined_statements(
            stmts in proptest::collection::vec(
                r#"SELECT ([a-z0-9 ]{1,4}|'([a-z; ]|''|\\[a-z;'\\]){0,4}'|"([a-z;]|""){0,4}"|`([a-z; ]|``){0,4}`|/\*[a-z; ]{0,5}\*/|-- [a-z;]{0,4}\n|#[a-z;]{0,4}\n|[,()=+]){1,8}"#,
                1..5,
            ),
            sep in "[ \n]{0,2};[ \n]{0,2}",
        ) {
            let sql = stmts.join(&sep);
            let pieces = split_statements(&sql);
            let want: Vec<&str> = stmts.iter().map(|s| s.trim()).collect();
            proptest::prop_assert_eq!(&pieces, &want, "{}", sql);
            // The tokenizer's view agrees: its top-level `;`s are where the split is.
            let mut hints = Vec::new();
            let mut toks = Vec::new();
            tokenize(&sql, &mut hints, &mut toks);
            let parts = toks.split(|t| *t == Token::Punct(';')).filter(|p| !p.is_empty()).count();
            proptest::prop_assert_eq!(parts, pieces.len());
        }
    }

    proptest::proptest! {
        /// Where the scan accepts a text, its literals are exactly the tokenizer's number and
        /// string tokens, and the text has no hint.
        #[test]
        fn scanned_literals_are_the_tokenizers(
            sql in "([a-zA-Z_]{1,6}|[0-9]{1,4}|[0-9]\\.[0-9]e-?[0-9]|'[a-z\\\\' ]{0,5}'|\"[a-z\"]{0,4}\"|`[a-z` ]{0,4}`|@@?[a-z.]{1,4}|[ ,;()=<>+*/.#?-]|--|/\\*|\\*/|\u{e9}|\u{1}){0,24}"
        ) {
            let mut spans = Vec::new();
            let scanned = scan_literals(&sql, |s, e, k| {
                spans.push((s, e, k));
                true
            });
            if scanned {
                let (want, hinted) = token_spans(&sql);
                proptest::prop_assert_eq!(spans, want);
                proptest::prop_assert!(!hinted);
            }
        }
    }
}
