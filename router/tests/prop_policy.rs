//! Property tests for the policy view of SQL (`router::sql::policy`): a schema named in a table
//! position is always found (or the statement is refused as not understood), never missed; texts
//! that name no schema stay unrestricted; every statement of a multi-statement text reaches the
//! rules; hostile text never panics.

use proptest::prelude::*;
use router::sql::digest;
use router::sql::policy::{rule_units, schemas_named, schemas_outside};

/// Identifiers that are not keywords of the templates below.
fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,8}".prop_filter("not a keyword", |s| {
        ![
            "select",
            "from",
            "where",
            "join",
            "on",
            "as",
            "in",
            "into",
            "update",
            "set",
            "table",
            "values",
            "and",
            "or",
            "not",
            "is",
            "null",
            "by",
            "order",
            "group",
            "limit",
            "use",
            "show",
            "desc",
            "call",
            "with",
            "key",
            "left",
            "inner",
            "delete",
            "insert",
            "tables",
            "create",
            "drop",
            "alter",
            "database",
            "schema",
            "like",
            "if",
            "exists",
            "full",
            "columns",
            "fields",
            "index",
            "keys",
            "for",
            "union",
            "all",
            "straight_join",
            "natural",
            "cross",
            "right",
            "outer",
            "using",
            "having",
            "asc",
            "distinct",
            "to",
            "x",
            "do",
            "div",
            "mod",
            "xor",
            "regexp",
            "rlike",
            "lock",
            "read",
            "write",
            "high_priority",
            "low_priority",
            "ignore",
            "quick",
            "partition",
            "window",
            "over",
            "interval",
            "binary",
            "case",
            "when",
            "then",
            "else",
            "end",
            "between",
            "escape",
            "sounds",
            "collate",
            "default",
            "replace",
            "value",
            "duplicate",
            "explain",
            "describe",
            "handler",
            "truncate",
            "view",
            "function",
            "procedure",
            "trigger",
            "event",
            "sequence",
            "references",
            "execute",
            "prepare",
            "immediate",
            "deallocate",
            "true",
            "false",
            "unknown",
            "div",
            "exists",
            "any",
            "some",
            "escape",
            "row",
            "rows",
        ]
        .contains(&s.as_str())
    })
}

/// Statements with `{s}.{t}` in a position where it names a table of schema `{s}`.
const TEMPLATES: &[&str] = &[
    "SELECT * FROM {s}.{t}",
    "SELECT a FROM {s}.{t} WHERE b = 1",
    "SELECT x.a FROM {u} AS x JOIN {s}.{t} ON x.a = {t}.a",
    "SELECT * FROM {u} AS {s} JOIN {s}.{t} AS y ON {s}.id = y.id",
    "SELECT * FROM {s}.{t} {s}",
    "SELECT (SELECT MAX(a) FROM {s}.{t}) FROM {u}",
    "SELECT * FROM {u} WHERE a IN (SELECT a FROM {s}.{t})",
    "INSERT INTO {s}.{t} (a) VALUES (1)",
    "INSERT INTO {u} SELECT * FROM {s}.{t}",
    "UPDATE {s}.{t} SET a = 1",
    "DELETE FROM {s}.{t} WHERE a = 1",
    "DESC {s}.{t}",
    "SHOW CREATE TABLE {s}.{t}",
    "SHOW COLUMNS FROM {t} FROM {s}",
    "SHOW TABLES FROM {s}",
    "SELECT {s}.{t}.a FROM {u}",
    "SELECT 1; SELECT * FROM {s}.{t}",
    "SELECT 1 /*!; SELECT * FROM {s}.{t} */",
    "SELECT 1 /*M!100000 ; SELECT * FROM {s}.{t} */",
    "PREPARE st FROM 'SELECT * FROM {s}.{t}'",
    "EXECUTE IMMEDIATE 'DELETE FROM {s}.{t}'",
    "WITH c AS (SELECT * FROM {s}.{t}) SELECT * FROM c",
    "SELECT * FROM `{s}`.`{t}`",
    "USE {s}",
    "DROP DATABASE {s}",
    "CALL {s}.{t}()",
    "SELECT {s}.{t}(1)",
];

fn fill(tpl: &str, s: &str, t: &str, u: &str) -> String {
    tpl.replace("{s}", s).replace("{t}", t).replace("{u}", u)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_named_schema_is_never_missed(s in name(), t in name(), u in name(), i in 0..TEMPLATES.len()) {
        prop_assume!(s != "app" && s != t && s != u);
        let sql = fill(TEMPLATES[i], &s, &t, &u);
        // An error (refused as not understood) is safe; an answer must hold the schema.
        if let Ok(names) = schemas_named(&sql) {
            prop_assert!(names.contains(&s), "{sql}: {names:?}");
        }
        let allowed = |x: &str| x == "app";
        if let Ok(out) = schemas_outside(&sql, &allowed) {
            prop_assert!(out.contains(&s), "{sql}: {out:?}");
        }
    }

    #[test]
    fn unqualified_statements_name_no_schema(t in name(), u in name(), lit in "[a-z.]{0,12}") {
        for sql in [
            format!("SELECT a, b FROM {t} WHERE c = '{lit}'"),
            format!("SELECT {t}.a, x.b FROM {t} JOIN {u} AS x ON {t}.id = x.id"),
            format!("INSERT INTO {t} (a) VALUES ('{lit}')"),
            format!("UPDATE {t} SET a = 2 WHERE {t}.id = 1"),
            format!("DELETE FROM {t} WHERE id = 3"),
            format!("SELECT q.a FROM (SELECT a FROM {t}) AS q"),
        ] {
            let r = schemas_named(&sql);
            prop_assert_eq!(r.as_ref().map(|s| s.len()), Ok(0), "{}: {:?}", sql, r);
        }
    }

    #[test]
    fn every_statement_reaches_the_rules(t in name(), u in name(), n in 1usize..5) {
        let parts: Vec<String> = (0..n)
            .map(|i| if i % 2 == 0 { format!("SELECT a FROM {t}") } else { format!("DELETE FROM {u} WHERE id = {i}") })
            .collect();
        let sql = parts.join("; ");
        let units: Vec<String> = rule_units(&sql).into_iter().map(|u| u.digest.text).collect();
        for p in &parts {
            prop_assert!(units.contains(&digest(p).text), "{sql}: {units:?}");
        }
    }

    #[test]
    fn hostile_text_never_panics(sql in "\\PC{0,200}") {
        let _ = rule_units(&sql);
        let _ = schemas_named(&sql);
        let _ = schemas_outside(&sql, &|s: &str| s == "app");
    }
}
