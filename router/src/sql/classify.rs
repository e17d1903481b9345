//! Statement classification for read/write splitting and session-state tracking.
//!
//! Fast path: the hand-written [`lexer`](super::lexer) recognises the common statements and their
//! routing-relevant details (locking reads, `SQL_CALC_FOUND_ROWS`, `GET_LOCK`, temporary tables,
//! user variables, `LAST_INSERT_ID()` ...). Only statements whose leading keyword does not decide
//! (`WITH ...`, a parenthesised query, unknown words) are handed to `sqlparser`; what neither can
//! classify is treated as a write (sent to the primary), never guessed to be a read.

use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::lexer::{Hint, Token, tokenize};

/// What kind of statement it is (the first keyword, refined).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StmtKind {
    /// SELECT (also `WITH ... SELECT`, `(SELECT ...)`, `VALUES`, `TABLE`).
    Select,
    /// INSERT.
    Insert,
    /// REPLACE.
    Replace,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// SET (variables, NAMES, autocommit, TRANSACTION ...).
    Set,
    /// USE db.
    Use,
    /// BEGIN / START TRANSACTION.
    Begin,
    /// COMMIT.
    Commit,
    /// ROLLBACK (also ROLLBACK TO SAVEPOINT).
    Rollback,
    /// SAVEPOINT / RELEASE SAVEPOINT.
    Savepoint,
    /// CREATE / ALTER / DROP / TRUNCATE / RENAME ...
    Ddl,
    /// SHOW ...
    Show,
    /// DESCRIBE / DESC / EXPLAIN.
    Describe,
    /// CALL procedure.
    Call,
    /// LOCK TABLES.
    LockTables,
    /// UNLOCK TABLES.
    UnlockTables,
    /// SQL-level PREPARE / EXECUTE / DEALLOCATE.
    SqlPrepare,
    /// LOAD DATA [LOCAL] INFILE.
    LoadData,
    /// DO expr.
    Do,
    /// Empty statement (only comments / whitespace).
    Empty,
    /// Anything else (GRANT, FLUSH, KILL, XA, HANDLER ...).
    Other,
}

/// Flag bits describing routing-relevant details.
pub mod flags {
    /// `SELECT ... FOR UPDATE` / `LOCK IN SHARE MODE` / `FOR SHARE`.
    pub const LOCKING_READ: u32 = 1;
    /// `SQL_CALC_FOUND_ROWS` (the next `FOUND_ROWS()` must run on the same connection).
    pub const CALC_FOUND_ROWS: u32 = 1 << 1;
    /// `GET_LOCK()` / `RELEASE_LOCK()` / `IS_USED_LOCK()`: named locks live in the connection.
    pub const NAMED_LOCK: u32 = 1 << 2;
    /// `CREATE TEMPORARY TABLE` / `DROP TEMPORARY TABLE`.
    pub const TEMP_TABLE: u32 = 1 << 3;
    /// Reads or writes a user variable (`@x`).
    pub const USER_VAR: u32 = 1 << 4;
    /// Uses `LAST_INSERT_ID()`.
    pub const LAST_INSERT_ID: u32 = 1 << 5;
    /// Uses `FOUND_ROWS()` / `ROW_COUNT()`.
    pub const FOUND_ROWS: u32 = 1 << 6;
    /// Several statements separated by `;`.
    pub const MULTI: u32 = 1 << 7;
    /// `LOAD DATA LOCAL INFILE`.
    pub const LOCAL_INFILE: u32 = 1 << 8;
    /// `SET GLOBAL ...` (not session state).
    pub const GLOBAL_SET: u32 = 1 << 9;
    /// `SET [SESSION] TRANSACTION ...` or `SET TRANSACTION` (applies to the next transaction).
    pub const SET_TRANSACTION: u32 = 1 << 10;
    /// `SET NAMES` / `SET CHARACTER SET` / `SET CHARSET`.
    pub const SET_NAMES: u32 = 1 << 11;
    /// Sets `autocommit`.
    pub const SET_AUTOCOMMIT: u32 = 1 << 12;
    /// Classified by sqlparser (slow path).
    pub const SLOW_PATH: u32 = 1 << 13;
    /// Calls a function known to have side effects on the connection or data (`SLEEP` excluded).
    pub const SIDE_EFFECT_FN: u32 = 1 << 14;
    /// The statement reads `@@` system variables.
    pub const SYSTEM_VAR: u32 = 1 << 15;
    /// `START TRANSACTION READ ONLY`.
    pub const READ_ONLY_TXN: u32 = 1 << 16;
}

/// The result of classifying one `COM_QUERY` text (or a prepared statement's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Statement kind (of the first statement for multi-statements).
    pub kind: StmtKind,
    /// Bit set of [`flags`].
    pub flags: u32,
    /// Routing hint from a comment, if any (the first one wins).
    pub hint: Option<Hint>,
    /// For `USE db`: the schema name.
    pub schema: Option<String>,
    /// For `SET autocommit = x`: the new value.
    pub autocommit: Option<bool>,
}

impl Classified {
    /// Whether the statement is a plain read that a replica may answer.
    pub fn is_read(&self) -> bool {
        use flags::*;
        let sticky = LOCKING_READ
            | CALC_FOUND_ROWS
            | NAMED_LOCK
            | USER_VAR
            | LAST_INSERT_ID
            | FOUND_ROWS
            | MULTI
            | SIDE_EFFECT_FN;
        matches!(
            self.kind,
            StmtKind::Select | StmtKind::Show | StmtKind::Describe | StmtKind::Do
        ) && self.flags & sticky == 0
    }

    /// Whether the statement changes connection state that cannot be replayed on another
    /// connection (temporary tables, named locks, table locks, user variables, SQL-level prepared
    /// statements, FOUND_ROWS): the session must stay on its connection.
    pub fn pins_session(&self) -> bool {
        use flags::*;
        // CALL and unclassified statements (HANDLER, XA, ...) may leave any state behind.
        matches!(
            self.kind,
            StmtKind::LockTables | StmtKind::SqlPrepare | StmtKind::Call | StmtKind::Other
        ) || self.flags
            & (TEMP_TABLE | NAMED_LOCK | USER_VAR | CALC_FOUND_ROWS | MULTI | SET_TRANSACTION)
            != 0
    }

    /// Whether this is a `SET` of session variables that can be replayed on another connection.
    pub fn is_replayable_set(&self) -> bool {
        use flags::*;
        self.kind == StmtKind::Set
            && self.flags & (USER_VAR | GLOBAL_SET | SET_TRANSACTION | MULTI) == 0
    }
}

/// Classifies one query text.
pub fn classify(sql: &str) -> Classified {
    let mut hints = Vec::new();
    let mut toks = Vec::with_capacity(32);
    tokenize(sql, &mut hints, &mut toks);
    classified(sql, &toks, hints)
}

/// [`classify`] and [`super::digest`] of one query text from one pass of the lexer (the proxy
/// needs both for every statement).
pub fn classify_with_digest(sql: &str) -> (Classified, super::Digest) {
    let mut hints = Vec::new();
    let mut toks = Vec::with_capacity(32);
    tokenize(sql, &mut hints, &mut toks);
    let d = super::digest::digest_tokens(&toks, sql.len());
    (classified(sql, &toks, hints), d)
}

fn classified(sql: &str, toks: &[Token<'_>], hints: Vec<Hint>) -> Classified {
    let mut c = classify_tokens(toks);
    c.hint = hints.into_iter().next();
    if c.kind == StmtKind::Other && needs_slow_path(toks) {
        c.kind = slow_path(sql);
        c.flags |= flags::SLOW_PATH;
    }
    c
}

fn needs_slow_path(toks: &[Token<'_>]) -> bool {
    matches!(toks.first(), Some(Token::Punct('('))) || toks.first().is_some_and(|t| t.is_kw("WITH"))
}

/// Parses with sqlparser; whatever it cannot parse is `Other` (routed to the primary).
fn slow_path(sql: &str) -> StmtKind {
    use sqlparser::ast::{SetExpr, Statement};
    if super::guard::check(sql).is_err() {
        return StmtKind::Other; // too long a chain for the parser: the primary decides
    }
    // sqlparser reads MySQL's `/*!` comments as code but MariaDB's `/*M!` as a comment: give it the
    // MySQL spelling, so that it sees what a MariaDB server runs.
    let sql: std::borrow::Cow<'_, str> = if sql.contains("/*M!") {
        sql.replace("/*M!", "/*!").into()
    } else {
        sql.into()
    };
    let Ok(stmts) = Parser::new(&MySqlDialect {})
        .with_recursion_limit(64)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_statements())
    else {
        return StmtKind::Other;
    };
    match stmts.as_slice() {
        [Statement::Query(q)] => match q.body.as_ref() {
            SetExpr::Insert(_) => StmtKind::Insert,
            SetExpr::Update(_) => StmtKind::Update,
            SetExpr::Delete(_) => StmtKind::Delete,
            SetExpr::Merge(_) => StmtKind::Other,
            _ => StmtKind::Select,
        },
        [Statement::Insert(_)] => StmtKind::Insert,
        [Statement::Update { .. }] => StmtKind::Update,
        [Statement::Delete(_)] => StmtKind::Delete,
        _ => StmtKind::Other,
    }
}

fn kind_of(first: &Token<'_>, second: Option<&Token<'_>>) -> StmtKind {
    let Token::Word(w) = first else {
        return StmtKind::Other;
    };
    let w = w.to_ascii_uppercase();
    match w.as_str() {
        "SELECT" | "VALUES" | "TABLE" => StmtKind::Select,
        "INSERT" => StmtKind::Insert,
        "REPLACE" => StmtKind::Replace,
        "UPDATE" => StmtKind::Update,
        "DELETE" => StmtKind::Delete,
        "SET" => StmtKind::Set,
        "USE" => StmtKind::Use,
        "BEGIN" => StmtKind::Begin,
        "START" if second.is_some_and(|t| t.is_kw("TRANSACTION")) => StmtKind::Begin,
        "COMMIT" => StmtKind::Commit,
        "ROLLBACK" => StmtKind::Rollback,
        "SAVEPOINT" | "RELEASE" => StmtKind::Savepoint,
        "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "RENAME" | "OPTIMIZE" | "ANALYZE" | "REPAIR" => {
            StmtKind::Ddl
        }
        "SHOW" => StmtKind::Show,
        "DESCRIBE" | "DESC" | "EXPLAIN" => StmtKind::Describe,
        "CALL" => StmtKind::Call,
        "LOCK" => StmtKind::LockTables,
        "UNLOCK" => StmtKind::UnlockTables,
        "PREPARE" | "EXECUTE" | "DEALLOCATE" => StmtKind::SqlPrepare,
        "LOAD" => StmtKind::LoadData,
        "DO" => StmtKind::Do,
        _ => StmtKind::Other,
    }
}

fn classify_tokens(toks: &[Token<'_>]) -> Classified {
    let mut c = Classified {
        kind: StmtKind::Empty,
        flags: 0,
        hint: None,
        schema: None,
        autocommit: None,
    };
    // Split at top-level `;` (trailing ones are allowed).
    let mut parts = toks
        .split(|t| *t == Token::Punct(';'))
        .filter(|p| !p.is_empty());
    let Some(first) = parts.next() else {
        return c;
    };
    c.kind = kind_of(&first[0], first.get(1));
    analyse(first, c.kind, &mut c);
    for p in parts {
        c.flags |= flags::MULTI;
        let k = kind_of(&p[0], p.get(1));
        analyse(p, k, &mut c);
        if c.kind == StmtKind::Select && k != StmtKind::Select {
            c.kind = k;
        }
    }
    c
}

fn analyse(t: &[Token<'_>], kind: StmtKind, c: &mut Classified) {
    use flags::*;
    for (i, tok) in t.iter().enumerate() {
        match tok {
            Token::Variable(v) if v.starts_with("@@") => {
                c.flags |= SYSTEM_VAR;
            }
            Token::Variable(_) => c.flags |= USER_VAR,
            Token::Word(w) => {
                let next_is_paren = t.get(i + 1) == Some(&Token::Punct('('));
                if w.eq_ignore_ascii_case("SQL_CALC_FOUND_ROWS") {
                    c.flags |= CALC_FOUND_ROWS;
                } else if next_is_paren {
                    let u = w.to_ascii_uppercase();
                    match u.as_str() {
                        "GET_LOCK" | "RELEASE_LOCK" | "RELEASE_ALL_LOCKS" | "IS_USED_LOCK"
                        | "IS_FREE_LOCK" => c.flags |= NAMED_LOCK,
                        "LAST_INSERT_ID" => c.flags |= LAST_INSERT_ID,
                        "FOUND_ROWS" | "ROW_COUNT" => c.flags |= FOUND_ROWS,
                        "NEXTVAL" | "SETVAL" | "LASTVAL" | "MASTER_POS_WAIT"
                        | "MASTER_GTID_WAIT" => c.flags |= SIDE_EFFECT_FN,
                        _ => {}
                    }
                } else if w.eq_ignore_ascii_case("TEMPORARY") && matches!(kind, StmtKind::Ddl) {
                    c.flags |= TEMP_TABLE;
                } else if kind == StmtKind::Select
                    && (w.eq_ignore_ascii_case("FOR")
                        && t.get(i + 1)
                            .is_some_and(|n| n.is_kw("UPDATE") || n.is_kw("SHARE"))
                        || w.eq_ignore_ascii_case("LOCK")
                            && t.get(i + 1).is_some_and(|n| n.is_kw("IN")))
                {
                    c.flags |= LOCKING_READ;
                } else if kind == StmtKind::Select
                    && w.eq_ignore_ascii_case("INTO")
                    && t.get(i + 1)
                        .is_some_and(|n| n.is_kw("OUTFILE") || n.is_kw("DUMPFILE"))
                {
                    c.flags |= SIDE_EFFECT_FN;
                }
            }
            _ => {}
        }
    }
    match kind {
        StmtKind::Use => {
            c.schema = t.get(1).and_then(|n| match n {
                Token::Word(w) => Some((*w).to_string()),
                Token::QuotedIdent(w) => Some(w.replace("``", "`")),
                _ => None,
            });
        }
        StmtKind::Set => analyse_set(t, c),
        StmtKind::LoadData if t.iter().take(4).any(|x| x.is_kw("LOCAL")) => {
            c.flags |= LOCAL_INFILE;
        }
        StmtKind::Begin
            if t.windows(2)
                .any(|w| w[0].is_kw("READ") && w[1].is_kw("ONLY")) =>
        {
            c.flags |= READ_ONLY_TXN;
        }
        _ => {}
    }
}

fn analyse_set(t: &[Token<'_>], c: &mut Classified) {
    use flags::*;
    let second = t.get(1);
    if second.is_some_and(|s| s.is_kw("NAMES") || s.is_kw("CHARSET"))
        || second.is_some_and(|s| s.is_kw("CHARACTER")) && t.get(2).is_some_and(|s| s.is_kw("SET"))
    {
        c.flags |= SET_NAMES;
        return;
    }
    let mut i = 1;
    if second.is_some_and(|s| s.is_kw("GLOBAL") || s.is_kw("PERSIST")) {
        c.flags |= GLOBAL_SET;
    }
    if second.is_some_and(|s| s.is_kw("GLOBAL") || s.is_kw("SESSION") || s.is_kw("LOCAL")) {
        i = 2;
    }
    if t.get(i).is_some_and(|s| s.is_kw("TRANSACTION")) {
        c.flags |= SET_TRANSACTION;
        return;
    }
    if t.get(i).is_some_and(|s| s.is_kw("STATEMENT")) {
        // SET STATEMENT var=val FOR stmt: per-statement; route by the inner statement.
        c.flags |= MULTI;
        return;
    }
    // Each assignment: name = value[, ...]. Look for @@global. and autocommit.
    for (j, tok) in t.iter().enumerate().skip(1) {
        match tok {
            Token::Variable(v)
                if v.as_bytes()
                    .get(..9)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"@@global.")) =>
            {
                c.flags |= GLOBAL_SET;
            }
            Token::Word(w) | Token::Variable(w)
                if w.trim_start_matches('@')
                    .rsplit('.')
                    .next()
                    .is_some_and(|n| n.eq_ignore_ascii_case("autocommit"))
                    && matches!(
                        t.get(j + 1),
                        Some(Token::Punct('=')) | Some(Token::Punct(':'))
                    ) =>
            {
                // `=` or `:=`, then the value.
                let v = t[j + 1..]
                    .iter()
                    .find(|x| !matches!(x, Token::Punct('=' | ':')));
                c.flags |= SET_AUTOCOMMIT;
                let word = |w: &str| -> Option<bool> {
                    // DEFAULT is the server's default, autocommit on.
                    if ["ON", "TRUE", "DEFAULT", "1"]
                        .iter()
                        .any(|k| w.eq_ignore_ascii_case(k))
                    {
                        Some(true)
                    } else if ["OFF", "FALSE", "0"]
                        .iter()
                        .any(|k| w.eq_ignore_ascii_case(k))
                    {
                        Some(false)
                    } else {
                        None
                    }
                };
                c.autocommit = match v {
                    Some(Token::Number(n)) => n.parse::<f64>().ok().map(|x| x != 0.0),
                    Some(Token::Word(w)) => word(w),
                    Some(Token::Str(s)) => word(s.trim_matches(|q| q == '\'' || q == '"')),
                    _ => None,
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;

    #[test]
    fn statement_table() {
        // (sql, kind, is_read, pins_session, flags that must be set)
        let table: &[(&str, StmtKind, bool, bool, u32)] = &[
            ("SELECT 1", StmtKind::Select, true, false, 0),
            (
                "  select * from t where id = 5",
                StmtKind::Select,
                true,
                false,
                0,
            ),
            (
                "/* c */ SELECT c FROM sbtest1 WHERE id=?",
                StmtKind::Select,
                true,
                false,
                0,
            ),
            (
                "SELECT * FROM t FOR UPDATE",
                StmtKind::Select,
                false,
                false,
                LOCKING_READ,
            ),
            (
                "SELECT * FROM t FOR SHARE",
                StmtKind::Select,
                false,
                false,
                LOCKING_READ,
            ),
            (
                "select * from t lock in share mode",
                StmtKind::Select,
                false,
                false,
                LOCKING_READ,
            ),
            (
                "SELECT 'for update' FROM t",
                StmtKind::Select,
                true,
                false,
                0,
            ),
            (
                "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1",
                StmtKind::Select,
                false,
                true,
                CALC_FOUND_ROWS,
            ),
            (
                "SELECT FOUND_ROWS()",
                StmtKind::Select,
                false,
                false,
                FOUND_ROWS,
            ),
            (
                "SELECT GET_LOCK('a', 1)",
                StmtKind::Select,
                false,
                true,
                NAMED_LOCK,
            ),
            (
                "select release_lock('a')",
                StmtKind::Select,
                false,
                true,
                NAMED_LOCK,
            ),
            (
                "SELECT LAST_INSERT_ID()",
                StmtKind::Select,
                false,
                false,
                LAST_INSERT_ID,
            ),
            ("SELECT @x", StmtKind::Select, false, true, USER_VAR),
            (
                "SELECT @@server_id",
                StmtKind::Select,
                true,
                false,
                SYSTEM_VAR,
            ),
            (
                "SELECT 1 INTO OUTFILE '/tmp/x'",
                StmtKind::Select,
                false,
                false,
                SIDE_EFFECT_FN,
            ),
            (
                "SELECT NEXTVAL(s)",
                StmtKind::Select,
                false,
                false,
                SIDE_EFFECT_FN,
            ),
            (
                "INSERT INTO t VALUES (1)",
                StmtKind::Insert,
                false,
                false,
                0,
            ),
            (
                "REPLACE INTO t VALUES (1)",
                StmtKind::Replace,
                false,
                false,
                0,
            ),
            ("UPDATE t SET a = 1", StmtKind::Update, false, false, 0),
            ("DELETE FROM t", StmtKind::Delete, false, false, 0),
            ("SET @x = 1", StmtKind::Set, false, true, USER_VAR),
            ("SET NAMES utf8mb4", StmtKind::Set, false, false, SET_NAMES),
            (
                "SET CHARACTER SET latin1",
                StmtKind::Set,
                false,
                false,
                SET_NAMES,
            ),
            (
                "SET autocommit=0",
                StmtKind::Set,
                false,
                false,
                SET_AUTOCOMMIT,
            ),
            (
                "SET @@session.autocommit = ON",
                StmtKind::Set,
                false,
                false,
                SET_AUTOCOMMIT,
            ),
            (
                "SET GLOBAL max_connections = 10",
                StmtKind::Set,
                false,
                false,
                GLOBAL_SET,
            ),
            (
                "SET @@global.max_connections = 10",
                StmtKind::Set,
                false,
                false,
                GLOBAL_SET,
            ),
            (
                "SET SESSION sql_mode = 'ANSI'",
                StmtKind::Set,
                false,
                false,
                0,
            ),
            (
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
                StmtKind::Set,
                false,
                true,
                SET_TRANSACTION,
            ),
            ("USE `my``db`", StmtKind::Use, false, false, 0),
            ("BEGIN", StmtKind::Begin, false, false, 0),
            (
                "START TRANSACTION READ ONLY",
                StmtKind::Begin,
                false,
                false,
                READ_ONLY_TXN,
            ),
            ("COMMIT", StmtKind::Commit, false, false, 0),
            (
                "ROLLBACK TO SAVEPOINT a",
                StmtKind::Rollback,
                false,
                false,
                0,
            ),
            ("SAVEPOINT a", StmtKind::Savepoint, false, false, 0),
            ("CREATE TABLE t (a int)", StmtKind::Ddl, false, false, 0),
            (
                "CREATE TEMPORARY TABLE t (a int)",
                StmtKind::Ddl,
                false,
                true,
                TEMP_TABLE,
            ),
            (
                "DROP TEMPORARY TABLE t",
                StmtKind::Ddl,
                false,
                true,
                TEMP_TABLE,
            ),
            ("TRUNCATE t", StmtKind::Ddl, false, false, 0),
            ("SHOW TABLES", StmtKind::Show, true, false, 0),
            ("DESC t", StmtKind::Describe, true, false, 0),
            ("EXPLAIN SELECT 1", StmtKind::Describe, true, false, 0),
            ("CALL p()", StmtKind::Call, false, true, 0),
            ("HANDLER t OPEN", StmtKind::Other, false, true, 0),
            ("LOCK TABLES t READ", StmtKind::LockTables, false, true, 0),
            ("UNLOCK TABLES", StmtKind::UnlockTables, false, false, 0),
            (
                "PREPARE s FROM 'SELECT 1'",
                StmtKind::SqlPrepare,
                false,
                true,
                0,
            ),
            (
                "LOAD DATA LOCAL INFILE 'x' INTO TABLE t",
                StmtKind::LoadData,
                false,
                false,
                LOCAL_INFILE,
            ),
            (
                "LOAD DATA INFILE 'x' INTO TABLE t",
                StmtKind::LoadData,
                false,
                false,
                0,
            ),
            ("SELECT 1; SELECT 2", StmtKind::Select, false, true, MULTI),
            (
                "SELECT 1; INSERT INTO t VALUES (1)",
                StmtKind::Insert,
                false,
                true,
                MULTI,
            ),
            ("SELECT 1;", StmtKind::Select, true, false, 0),
            (
                "/*!40101 SET NAMES utf8 */",
                StmtKind::Set,
                false,
                false,
                SET_NAMES,
            ),
            (
                "WITH a AS (SELECT 1) SELECT * FROM a",
                StmtKind::Select,
                true,
                false,
                SLOW_PATH,
            ),
            (
                "(SELECT 1) UNION (SELECT 2)",
                StmtKind::Select,
                true,
                false,
                SLOW_PATH,
            ),
            (
                "WITH a AS (SELECT 1) UPDATE t SET x = 1",
                StmtKind::Update,
                false,
                false,
                SLOW_PATH,
            ),
            ("GRANT ALL ON *.* TO x", StmtKind::Other, false, true, 0),
            // Executable comments are code, MariaDB's `/*M!` like MySQL's `/*!`.
            ("/*M!100000 DROP TABLE t */", StmtKind::Ddl, false, false, 0),
            ("/*M! DROP TABLE t */", StmtKind::Ddl, false, false, 0),
            ("/*!DROP TABLE t */", StmtKind::Ddl, false, false, 0),
            (
                "SELECT 1 /*M!100000 ; DELETE FROM t */",
                StmtKind::Delete,
                false,
                true,
                MULTI,
            ),
            (
                "SELECT * FROM t /*M! FOR UPDATE */",
                StmtKind::Select,
                false,
                false,
                LOCKING_READ,
            ),
            (
                "/*M!100000 INSERT INTO t VALUES (1) */",
                StmtKind::Insert,
                false,
                false,
                0,
            ),
            (
                "WITH a AS (SELECT 1) /*M!100000 UPDATE t SET x = 1 */",
                StmtKind::Update,
                false,
                false,
                SLOW_PATH,
            ),
            ("  -- only a comment\n", StmtKind::Empty, false, false, 0),
            ("DO SLEEP(1)", StmtKind::Do, true, false, 0),
        ];
        for (sql, kind, read, pins, must) in table {
            let c = classify(sql);
            assert_eq!(c.kind, *kind, "kind of {sql:?}");
            assert_eq!(c.is_read(), *read, "is_read of {sql:?}: {c:?}");
            assert_eq!(c.pins_session(), *pins, "pins_session of {sql:?}: {c:?}");
            assert_eq!(c.flags & must, *must, "flags of {sql:?}: {c:?}");
        }
    }

    #[test]
    fn details() {
        assert_eq!(classify("USE `my``db`").schema.as_deref(), Some("my`db"));
        assert_eq!(classify("use test").schema.as_deref(), Some("test"));
        assert_eq!(classify("SET autocommit=0").autocommit, Some(false));
        assert_eq!(classify("set autocommit = 1").autocommit, Some(true));
        assert_eq!(classify("SET @@autocommit=OFF").autocommit, Some(false));
        assert_eq!(classify("SET autocommit = DEFAULT").autocommit, Some(true));
        assert_eq!(classify("SET autocommit := 0").autocommit, Some(false));
        assert_eq!(classify("SET autocommit = 'OFF'").autocommit, Some(false));
        assert_eq!(classify("SET autocommit = @v").autocommit, None);
        assert_eq!(
            classify("/* furrow:primary */ SELECT 1").hint,
            Some(Hint::Primary)
        );
        assert_eq!(
            classify("SELECT /* furrow:backend=r1 */ 1").hint,
            Some(Hint::Backend("r1".into()))
        );
        assert_eq!(
            classify("/* furrow:shard=s2 */ SELECT * FROM orders_3").hint,
            Some(Hint::Shard("s2".into()))
        );
        assert!(classify("SET sql_mode='ANSI'").is_replayable_set());
        assert!(!classify("SET @a=1").is_replayable_set());
        assert!(!classify("SET GLOBAL a=1").is_replayable_set());
    }
}
