//! What the proxy's policy checks (SQL rules, a user's `schemas`) must see of a statement text:
//!
//! - [`rule_units`]: every statement of a multi-statement text, and the dynamic SQL of
//!   `PREPARE s FROM '...'` / `EXECUTE IMMEDIATE '...'` when it is a literal, each as a digest for
//!   the rules; what cannot be known before it runs (`PREPARE s FROM @v`, `CALL p()`) is marked
//!   opaque, so that the caller can refuse it when rules exist.
//! - [`schemas_named`] / [`schemas_outside`]: the schemas a statement names (qualified table
//!   references, `SHOW ... FROM db`, `CREATE/DROP/ALTER DATABASE`, `USE`, dynamic SQL), or why it
//!   cannot be told.
//!
//! The lexer splits and finds candidates (it reads executable comments as code, like the server);
//! `sqlparser` is asked only when a qualified name `x.y` could be either `schema.table` or
//! `table.column`, to tell table names and aliases from schemas.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{ObjectName, Query, TableFactor, Visit, Visitor};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::digest::{Digest, digest_tokens};
use super::lexer::{Token, tokenize};

/// Nesting of dynamic SQL (`PREPARE s FROM 'EXECUTE IMMEDIATE ''...'''`) followed at most.
const MAX_DEPTH: usize = 4;

/// One statement as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleUnit {
    /// The statement's digest (for dynamic SQL: of the literal's text).
    pub digest: Digest,
    /// Why the statement's effect cannot be known before it runs (None: it can).
    pub opaque: Option<&'static str>,
}

/// The statements of `sql` for the rules: each statement of a multi-statement text (split at
/// the `;`s the server splits at, executable comments included), plus, for `PREPARE ... FROM` and
/// `EXECUTE IMMEDIATE` with a literal, the statements of the literal's text.
pub fn rule_units(sql: &str) -> Vec<RuleUnit> {
    let mut out = Vec::new();
    units_into(sql, 0, &mut out);
    out
}

fn units_into(sql: &str, depth: usize, out: &mut Vec<RuleUnit>) {
    let mut hints = Vec::new();
    let mut toks = Vec::with_capacity(32);
    tokenize(sql, &mut hints, &mut toks);
    for st in toks.split(|t| *t == Token::Punct(';')) {
        if st.is_empty() {
            continue;
        }
        let d = digest_tokens(st, sql.len());
        match dynamic_sql(st) {
            Dynamic::None => out.push(RuleUnit {
                digest: d,
                opaque: None,
            }),
            Dynamic::Opaque(why) => out.push(RuleUnit {
                digest: d,
                opaque: Some(why),
            }),
            Dynamic::Literal(texts) => {
                out.push(RuleUnit {
                    digest: d.clone(),
                    opaque: None,
                });
                if depth >= MAX_DEPTH {
                    out.push(RuleUnit {
                        digest: d,
                        opaque: Some("dynamic SQL nested too deep"),
                    });
                    continue;
                }
                for t in texts {
                    units_into(&t, depth + 1, out);
                }
            }
        }
    }
}

/// What a statement runs besides itself.
#[derive(Debug, PartialEq, Eq)]
enum Dynamic {
    /// Nothing: the statement is what it says.
    None,
    /// Dynamic SQL from a literal: its possible texts (with and without backslash escapes, as
    /// the session's `sql_mode` may read them).
    Literal(Vec<String>),
    /// Something only known when it runs.
    Opaque(&'static str),
}

fn dynamic_sql(st: &[Token<'_>]) -> Dynamic {
    let Some(first) = st.first() else {
        return Dynamic::None;
    };
    let lits = if first.is_kw("PREPARE") {
        // PREPARE name FROM <literal>
        match st.iter().position(|t| t.is_kw("FROM")) {
            Some(i) => &st[i + 1..],
            None => return Dynamic::Opaque("PREPARE without FROM"),
        }
    } else if first.is_kw("EXECUTE") && st.get(1).is_some_and(|t| t.is_kw("IMMEDIATE")) {
        // EXECUTE IMMEDIATE <literal> [USING ...]
        let rest = &st[2..];
        let end = rest
            .iter()
            .position(|t| t.is_kw("USING"))
            .unwrap_or(rest.len());
        &rest[..end]
    } else if first.is_kw("CALL") {
        return Dynamic::Opaque("CALL of a stored procedure");
    } else {
        return Dynamic::None;
    };
    if lits.is_empty() || !lits.iter().all(|t| matches!(t, Token::Str(_))) {
        return Dynamic::Opaque("dynamic SQL from an expression");
    }
    let mut escaped = String::new();
    let mut raw = String::new();
    for t in lits {
        if let Token::Str(s) = t {
            let (e, r) = unquote(s);
            escaped.push_str(&e);
            raw.push_str(&r);
        }
    }
    if escaped == raw {
        Dynamic::Literal(vec![escaped])
    } else {
        Dynamic::Literal(vec![escaped, raw])
    }
}

/// The value of a string literal token (`'...'`, `"..."`, `_cs'...'`, `N'...'`): with backslash
/// escapes applied, and as `NO_BACKSLASH_ESCAPES` reads it.
fn unquote(tok: &str) -> (String, String) {
    let Some(open) = tok.find(['\'', '"']) else {
        return (tok.to_string(), tok.to_string());
    };
    let q = tok[open..].chars().next().unwrap_or('\''); // ok: `find` matched a quote there
    let body = &tok[open + 1..];
    let body = body.strip_suffix(q).unwrap_or(body);
    let doubled: String = [q, q].iter().collect();
    let raw = body.replace(&doubled, &q.to_string());
    let mut esc = String::with_capacity(body.len());
    let mut it = body.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => esc.push('\n'),
                Some('t') => esc.push('\t'),
                Some('r') => esc.push('\r'),
                Some('0') => esc.push('\0'),
                Some('b') => esc.push('\u{8}'),
                Some('Z') => esc.push('\u{1a}'),
                Some(c @ ('%' | '_')) => {
                    esc.push('\\');
                    esc.push(c);
                }
                Some(c) => esc.push(c),
                None => {}
            }
        } else if c == q && it.peek() == Some(&q) {
            it.next();
            esc.push(q);
        } else {
            esc.push(c);
        }
    }
    (esc, raw)
}

/// Why the schemas of a statement cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unanalysable {
    /// The statement runs SQL that is only known when it runs.
    #[error("{0}")]
    Opaque(&'static str),
    /// A qualified name could be a schema, and the statement could not be parsed to tell.
    #[error("cannot tell whether `{0}` names a schema (statement not understood)")]
    Ambiguous(String),
}

/// Every schema `sql` names explicitly (unqualified names are in the current schema and are not
/// listed). `*` stands for "every schema" (`GRANT ... ON *.*`).
pub fn schemas_named(sql: &str) -> Result<BTreeSet<String>, Unanalysable> {
    let mut out = BTreeSet::new();
    named(sql, 0, &|_| false, &mut out)?;
    Ok(out)
}

/// The schemas `sql` names that `allowed` refuses (empty: the statement stays within them).
/// Cheaper than [`schemas_named`]: a qualified name whose qualifier is allowed needs no parsing.
pub fn schemas_outside(
    sql: &str,
    allowed: &dyn Fn(&str) -> bool,
) -> Result<BTreeSet<String>, Unanalysable> {
    let mut out = BTreeSet::new();
    named(sql, 0, allowed, &mut out)?;
    out.retain(|s| !allowed(s));
    Ok(out)
}

fn named(
    sql: &str,
    depth: usize,
    allowed: &dyn Fn(&str) -> bool,
    out: &mut BTreeSet<String>,
) -> Result<(), Unanalysable> {
    let mut hints = Vec::new();
    let mut toks = Vec::with_capacity(32);
    tokenize(sql, &mut hints, &mut toks);
    // Qualifiers that are a schema or a table (`x.y`): the parser tells which.
    let mut maybe = BTreeSet::new();
    for st in toks.split(|t| *t == Token::Punct(';')) {
        if st.is_empty() {
            continue;
        }
        match dynamic_sql(st) {
            Dynamic::None => {}
            Dynamic::Opaque(why) => {
                if !st.first().is_some_and(|t| t.is_kw("CALL")) {
                    return Err(Unanalysable::Opaque(why));
                }
            }
            Dynamic::Literal(texts) => {
                if depth >= MAX_DEPTH {
                    return Err(Unanalysable::Opaque("dynamic SQL nested too deep"));
                }
                for t in texts {
                    named(&t, depth + 1, allowed, out)?;
                }
                continue;
            }
        }
        scan_statement(st, out, &mut maybe);
    }
    maybe.retain(|m| !out.contains(m) && !allowed(m));
    if maybe.is_empty() {
        return Ok(());
    }
    let Some(local) = parsed_names(sql, out) else {
        let first = maybe.into_iter().next().unwrap_or_default();
        return Err(Unanalysable::Ambiguous(first));
    };
    for m in maybe {
        if !local.iter().any(|l| l.eq_ignore_ascii_case(&m)) {
            out.insert(m);
        }
    }
    Ok(())
}

fn ident(t: &Token<'_>) -> Option<String> {
    match t {
        Token::Word(w) => Some((*w).to_string()),
        Token::QuotedIdent(w) => Some(w.replace("``", "`")),
        // `1db` is an identifier the lexer reads as a number.
        Token::Number(n)
            if n.bytes().any(|b| b.is_ascii_alphabetic())
                && !n.contains('\'')
                && !n.starts_with("0x")
                && !n.starts_with("0b") =>
        {
            Some((*n).to_string())
        }
        _ => None,
    }
}

/// Keywords after which a qualified name is a table (so its qualifier is a schema), in every
/// statement where they appear before a name.
const TABLE_POSITION: &[&str] = &[
    "JOIN",
    "INTO",
    "TABLE",
    "TABLES",
    "DESCRIBE",
    "DESC",
    "REFERENCES",
    "HANDLER",
    "TRUNCATE",
    "VIEW",
    "PROCEDURE",
    "FUNCTION",
    "CALL",
    "TRIGGER",
    "EVENT",
    "SEQUENCE",
];

/// Finds the schemas one statement's tokens name for sure (`out`) and the qualifiers that may be
/// schemas or tables (`maybe`).
fn scan_statement(st: &[Token<'_>], out: &mut BTreeSet<String>, maybe: &mut BTreeSet<String>) {
    let first = &st[0];
    let is = |i: usize, kw: &str| st.get(i).is_some_and(|t| t.is_kw(kw));
    if first.is_kw("USE")
        && let Some(db) = st.get(1).and_then(ident)
    {
        out.insert(db);
    }
    // CREATE / DROP / ALTER DATABASE|SCHEMA [IF [NOT] EXISTS] name; SHOW CREATE DATABASE name.
    for (i, t) in st.iter().enumerate() {
        if (t.is_kw("DATABASE") || t.is_kw("SCHEMA"))
            && i > 0
            && (st[i - 1].is_kw("CREATE") || st[i - 1].is_kw("DROP") || st[i - 1].is_kw("ALTER"))
        {
            let mut j = i + 1;
            while is(j, "IF") || is(j, "NOT") || is(j, "EXISTS") {
                j += 1;
            }
            if let Some(db) = st.get(j).and_then(ident) {
                out.insert(db);
            }
        }
    }
    // SHOW ... FROM|IN db (the first FROM/IN of SHOW COLUMNS/INDEX/KEYS names a table).
    if first.is_kw("SHOW") {
        let table_first = st.iter().take(4).any(|t| {
            ["COLUMNS", "FIELDS", "INDEX", "INDEXES", "KEYS"]
                .iter()
                .any(|k| t.is_kw(k))
        });
        let mut seen_from = false;
        for (i, t) in st.iter().enumerate() {
            if !(t.is_kw("FROM") || t.is_kw("IN")) {
                continue;
            }
            let Some(name) = st.get(i + 1).and_then(ident) else {
                continue;
            };
            let qualified = st.get(i + 2) == Some(&Token::Punct('.'));
            if table_first && !seen_from {
                seen_from = true;
                if qualified {
                    out.insert(name);
                }
                continue;
            }
            out.insert(name);
        }
    }
    // Qualified names: `a.b.c` (schema.table.column), `a.b(` (schema.function), `*.*`, and `a.b`
    // after a keyword that takes a table are schemas for sure; other `a.b` may be table.column.
    let mut i = 0;
    while i + 1 < st.len() {
        if st[i + 1] != Token::Punct('.') {
            i += 1;
            continue;
        }
        if st[i] == Token::Punct('*') {
            out.insert("*".to_string());
            i += 2;
            continue;
        }
        let Some(x) = ident(&st[i]) else {
            i += 1;
            continue;
        };
        if i > 0 && st[i - 1] == Token::Punct('.') {
            i += 1; // the middle of a chain, seen with its start
            continue;
        }
        let y_ok = st
            .get(i + 2)
            .is_some_and(|t| ident(t).is_some() || *t == Token::Punct('*'));
        if !y_ok {
            i += 1;
            continue;
        }
        let three = st.get(i + 3) == Some(&Token::Punct('.'))
            && st.get(i + 4).is_some_and(|t| ident(t).is_some());
        let call = st.get(i + 3) == Some(&Token::Punct('('));
        let after_kw = i > 0
            && (TABLE_POSITION.iter().any(|k| st[i - 1].is_kw(k))
                || st[i - 1].is_kw("UPDATE") && !(i > 1 && st[i - 2].is_kw("KEY"))
                || st[i - 1].is_kw("ON")
                    && (first.is_kw("GRANT") || first.is_kw("REVOKE") || is(1, "INDEX")));
        if three || call || after_kw {
            out.insert(x);
        } else {
            maybe.insert(x);
        }
        i += 3;
    }
}

/// With sqlparser: records the schemas of qualified relations in `out` and returns the names a
/// qualifier may refer to without naming a schema (unqualified tables, table aliases, CTEs).
/// None when the text cannot be parsed.
fn parsed_names(sql: &str, out: &mut BTreeSet<String>) -> Option<Vec<String>> {
    if super::guard::check(sql).is_err() {
        return None;
    }
    let sql: std::borrow::Cow<'_, str> = if sql.contains("/*M!") {
        sql.replace("/*M!", "/*!").into()
    } else {
        sql.into()
    };
    let stmts = Parser::new(&MySqlDialect {})
        .with_recursion_limit(64)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_statements())
        .ok()?;
    struct Names<'a> {
        out: &'a mut BTreeSet<String>,
        local: Vec<String>,
    }
    impl Visitor for Names<'_> {
        type Break = ();
        fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
            let parts: Vec<String> =
                r.0.iter()
                    .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
                    .collect();
            match parts.as_slice() {
                [one] => self.local.push(one.clone()),
                [schema, .., table] => {
                    // `db.t` is referred to as `t` in the statement's columns.
                    self.out.insert(schema.clone());
                    self.local.push(table.clone());
                }
                [] => {}
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            let alias = match t {
                TableFactor::Table { alias, .. }
                | TableFactor::Derived { alias, .. }
                | TableFactor::TableFunction { alias, .. }
                | TableFactor::Function { alias, .. }
                | TableFactor::UNNEST { alias, .. }
                | TableFactor::JsonTable { alias, .. }
                | TableFactor::NestedJoin { alias, .. } => alias.as_ref(),
                _ => None,
            };
            if let Some(a) = alias {
                self.local.push(a.name.value.clone());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                for c in &w.cte_tables {
                    self.local.push(c.alias.name.value.clone());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Names {
        out,
        local: Vec::new(),
    };
    for s in &stmts {
        let _ = s.visit(&mut v);
    }
    Some(v.local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<(String, Option<&'static str>)> {
        rule_units(sql)
            .into_iter()
            .map(|u| (u.digest.text, u.opaque))
            .collect()
    }

    #[test]
    fn units_of_multi_statements_and_dynamic_sql() {
        assert_eq!(texts("SELECT 1"), vec![("SELECT ?".into(), None)]);
        let t = texts("SELECT 1; DROP TABLE t");
        assert_eq!(t[1].0, "DROP TABLE T");
        let t = texts("SELECT 1 /*!; DROP TABLE t */");
        assert_eq!(
            t[1].0, "DROP TABLE T",
            "a `;` in an executable comment splits"
        );
        let t = texts("PREPARE s FROM 'DROP TABLE t'");
        assert_eq!(t.last().map(|x| x.0.as_str()), Some("DROP TABLE T"));
        let t = texts("EXECUTE IMMEDIATE 'DELETE FROM t' USING 1");
        assert_eq!(t.last().map(|x| x.0.as_str()), Some("DELETE FROM T"));
        let t = texts("EXECUTE IMMEDIATE 'DROP ' 'TABLE t'");
        assert_eq!(t.last().map(|x| x.0.as_str()), Some("DROP TABLE T"));
        let t = texts("PREPARE s FROM 'SELECT ''a''; DROP TABLE t'");
        assert_eq!(t.last().map(|x| x.0.as_str()), Some("DROP TABLE T"));
        let t = texts(r"PREPARE s FROM 'SELECT \'x\'; DELETE FROM t'");
        assert!(t.iter().any(|x| x.0 == "DELETE FROM T"), "{t:?}");
        assert!(texts("PREPARE s FROM @q").iter().any(|x| x.1.is_some()));
        assert!(
            texts("EXECUTE IMMEDIATE CONCAT('DROP', ' TABLE t')")
                .iter()
                .any(|x| x.1.is_some())
        );
        assert!(texts("CALL p()").iter().any(|x| x.1.is_some()));
        assert!(texts("EXECUTE s USING @a").iter().all(|x| x.1.is_none()));
        let deep = "PREPARE s FROM 'PREPARE s FROM ''PREPARE s FROM ''''PREPARE s FROM ''''''''PREPARE s FROM ''''''''''''''''SELECT 1'''''''''''''''''''''''''''";
        assert!(texts(deep).iter().any(|x| x.1.is_some()), "too deep");
    }

    fn names(sql: &str) -> Vec<String> {
        schemas_named(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .collect()
    }

    #[test]
    fn schemas_of_statements() {
        let none: Vec<String> = Vec::new();
        assert_eq!(names("SELECT * FROM t WHERE id = 1"), none);
        assert_eq!(
            names("SELECT t.id, a.v FROM t JOIN u AS a ON t.id = a.id"),
            none
        );
        assert_eq!(names("SELECT * FROM secret.creds"), ["secret"]);
        assert_eq!(names("select * from `secret`.`creds`"), ["secret"]);
        assert_eq!(names("SELECT user, password FROM mysql.user"), ["mysql"]);
        assert_eq!(
            names("SELECT * FROM information_schema.tables"),
            ["information_schema"]
        );
        assert_eq!(names("SELECT secret.creds.pw FROM t"), ["secret"]);
        assert_eq!(names("SELECT secret.f(1)"), ["secret"]);
        assert_eq!(
            names("SELECT * FROM t AS secret JOIN secret.creds c ON c.id = secret.id"),
            ["secret"]
        );
        assert_eq!(names("SELECT * FROM secret.creds secret"), ["secret"]);
        assert_eq!(names("INSERT INTO other.t VALUES (1)"), ["other"]);
        assert_eq!(names("UPDATE other.t SET v = 1"), ["other"]);
        assert_eq!(names("DELETE FROM other.t"), ["other"]);
        assert_eq!(names("DESC secret.creds"), ["secret"]);
        assert_eq!(names("SHOW CREATE TABLE secret.creds"), ["secret"]);
        assert_eq!(names("SHOW TABLES FROM secret"), ["secret"]);
        assert_eq!(names("SHOW FULL TABLES IN secret LIKE 'c%'"), ["secret"]);
        assert_eq!(names("SHOW COLUMNS FROM creds FROM secret"), ["secret"]);
        assert_eq!(names("SHOW COLUMNS FROM creds"), none);
        assert_eq!(names("SHOW INDEX FROM secret.creds"), ["secret"]);
        assert_eq!(names("DROP DATABASE IF EXISTS secret"), ["secret"]);
        assert_eq!(names("CREATE SCHEMA x"), ["x"]);
        assert_eq!(names("USE secret"), ["secret"]);
        assert_eq!(names("SELECT 1; USE secret"), ["secret"]);
        assert_eq!(names("GRANT ALL ON *.* TO x"), ["*"]);
        assert_eq!(names("GRANT SELECT ON secret.* TO x"), ["secret"]);
        assert_eq!(
            names("SELECT 1 /*!; SELECT * FROM secret.creds */"),
            ["secret"]
        );
        assert_eq!(
            names("SELECT 1 /*M!100000 ; SELECT * FROM secret.creds */"),
            ["secret"]
        );
        assert_eq!(
            names("PREPARE s FROM 'SELECT * FROM secret.creds'"),
            ["secret"]
        );
        assert_eq!(
            names("EXECUTE IMMEDIATE 'SELECT * FROM mysql.user'"),
            ["mysql"]
        );
        assert_eq!(names("CALL secret.p()"), ["secret"]);
        assert_eq!(names("CALL p()"), none);
        assert_eq!(names("WITH x AS (SELECT 1 AS a) SELECT x.a FROM x"), none);
        assert_eq!(names("SELECT d.n FROM (SELECT 1 AS n) AS d"), none);
        assert_eq!(
            names("SELECT * FROM t WHERE id IN (SELECT s.id FROM secret.s)"),
            ["secret"]
        );
        assert_eq!(names("SELECT 'secret.creds', 1.5"), none);
        assert_eq!(
            names("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE t.a = 2"),
            none
        );
        // Not understood by the parser: refused rather than guessed.
        assert!(schemas_named("UPDATE t, other.u SET t.a = u.a").is_err());
        assert!(schemas_named("UPDATE other.u, t SET t.a = u.a").is_err());
        assert!(matches!(
            schemas_named("PREPARE s FROM @q"),
            Err(Unanalysable::Opaque(_))
        ));
        assert!(matches!(
            schemas_named("EXECUTE IMMEDIATE @q"),
            Err(Unanalysable::Opaque(_))
        ));
        // Not parseable, with a qualifier that may be a schema: cannot tell.
        assert!(matches!(
            schemas_named("SELECT x.y FROM t GARBAGE((("),
            Err(Unanalysable::Ambiguous(_))
        ));
    }

    #[test]
    fn allowed_qualifiers_need_no_parse() {
        let allowed = |s: &str| s == "app";
        let out = schemas_outside("SELECT app.t.x FROM app.t GARBAGE(((", &allowed);
        assert_eq!(out, Ok(BTreeSet::new()));
        let out = schemas_outside("SELECT * FROM app.t JOIN secret.c", &allowed);
        assert_eq!(out, Ok(["secret".to_string()].into_iter().collect()));
    }
}
