//! Property tests for the SQL side: the classifier, digests and the sharding planner never panic on
//! hostile text, digests are stable and ignore literals, classification ignores the whitespace and
//! comments MySQL ignores, and deep nesting is an error rather than a stack overflow.

use proptest::prelude::*;
use router::sql::{StmtKind, classify, digest};

#[path = "../../fuzz/fuzz_targets/router_invariants.rs"]
mod invariants;

fn check_all(sql: &str) {
    if let Err(v) = invariants::sql_classify(sql.as_bytes()) {
        panic!("classify: {v}\ninput: {sql:?}");
    }
    if let Err(v) = invariants::sql_plan(sql.as_bytes()) {
        panic!("plan: {v}\ninput: {sql:?}");
    }
}

/// SQL-like tokens, the awkward ones included: quotes, escapes, comments, hints, nesting.
fn sql_token() -> impl Strategy<Value = String> {
    let fixed = [
        "SELECT",
        "select",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "INSERT",
        "INTO",
        "VALUES",
        "UPDATE",
        "SET",
        "DELETE",
        "WITH",
        "AS",
        "UNION",
        "ALL",
        "GROUP BY",
        "ORDER BY",
        "LIMIT",
        "OFFSET",
        "HAVING",
        "JOIN",
        "ON",
        "FOR UPDATE",
        "LOCK IN SHARE MODE",
        "DISTINCT",
        "COUNT(*)",
        "SUM(",
        "AVG(",
        "MIN(",
        "MAX(",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "NULL",
        "orders",
        "order_items",
        "users",
        "logs",
        "accounts",
        "sessions",
        "countries",
        "user_id",
        "id",
        "amount",
        "created_at",
        "region",
        "token",
        "furrow_next_id()",
        "GET_LOCK(",
        "LAST_INSERT_ID()",
        "SQL_CALC_FOUND_ROWS",
        "TEMPORARY",
        "START",
        "TRANSACTION",
        "USE",
        "(",
        ")",
        "((",
        "))",
        ",",
        ";",
        ".",
        "*",
        "=",
        "<>",
        ">=",
        "+",
        "-",
        "/",
        "%",
        "?",
        "@x",
        "@@autocommit",
        "@'q'",
        "'str'",
        "'it''s'",
        "'a\\'b'",
        "'\\\\'",
        "\"dq\"",
        "\"d\"\"q\"",
        "`bq`",
        "`b``q`",
        "x'41'",
        "b'01'",
        "n'nat'",
        "_utf8mb4'cs'",
        "0x1F",
        "1e+3",
        ".5",
        "1.5e-3",
        "42",
        "-7",
        "18446744073709551616",
        "/* c */",
        "/* furrow:replica */",
        "/* furrow:primary */",
        "/* furrow:backend=r1 */",
        "/*!40101",
        "*/",
        "/*",
        "-- c\n",
        "--",
        "# c\n",
        "#",
        "\\",
        "'",
        "\"",
        "`",
        "\n",
        "\t",
        " ",
        "\u{e9}",
        "\u{1F600}",
        "\0",
    ];
    prop_oneof![
        4 => prop::sample::select(fixed.to_vec()).prop_map(str::to_string),
        1 => "[a-zA-Z_][a-zA-Z0-9_$]{0,8}",
        1 => "[0-9]{1,25}",
        1 => "'[^'\\\\]{0,6}'",
        1 => "\\PC{1,4}",
    ]
}

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec((sql_token(), any::<bool>()), 0..40).prop_map(|toks| {
        let mut s = String::new();
        for (t, glue) in toks {
            if !glue && !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&t);
        }
        s
    })
}

/// A non-negative numeric literal as a client would write it (a sign is a separate token).
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (any::<u32>(), 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
        (1u32..100, -30i32..30).prop_map(|(a, e)| format!("{a}e{e}")),
        any::<u32>().prop_map(|n| format!("0x{n:X}")),
    ]
}

/// A string literal with escapes and doubled quotes.
fn string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 ,;()*#-]{0,6}",
        Just("''".to_string()),
        Just("\\'".to_string()),
        Just("\\\\".to_string()),
        Just("\"".to_string()),
        Just("/* not a comment */".to_string()),
        Just("-- nor this".to_string()),
        Just("\u{e9}\u{4e2d}".to_string()),
    ];
    (prop::collection::vec(piece, 0..5), any::<bool>()).prop_map(|(parts, dq)| {
        let body = parts.concat();
        if dq {
            // In a double-quoted string a `'` is plain, a `"` is doubled.
            format!("\"{}\"", body.replace('"', "\"\""))
        } else {
            format!("'{}'", body.replace('"', "x"))
        }
    })
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![number(), string()]
}

/// Statements whose kind is known, each a template over three literals.
const TEMPLATES: [(&str, StmtKind); 8] = [
    (
        "SELECT id, amount FROM orders WHERE user_id = {0} AND status IN ({1}, {2}) ORDER BY id LIMIT 10",
        StmtKind::Select,
    ),
    (
        "select count(*) from orders where user_id = {0} and note <> {1} or amount > {2}",
        StmtKind::Select,
    ),
    (
        "INSERT INTO orders (user_id, amount, note) VALUES ({0}, {1}, {2})",
        StmtKind::Insert,
    ),
    (
        "UPDATE orders SET amount = {1}, note = {2} WHERE user_id = {0}",
        StmtKind::Update,
    ),
    (
        "DELETE FROM orders WHERE user_id = {0} AND id BETWEEN {1} AND {2}",
        StmtKind::Delete,
    ),
    (
        "REPLACE INTO users VALUES ({0}, {1}, {2})",
        StmtKind::Replace,
    ),
    (
        "WITH x AS (SELECT {0} AS a, {1} AS b) SELECT * FROM x WHERE a = {2}",
        StmtKind::Select,
    ),
    (
        "(SELECT id FROM orders WHERE user_id = {0}) UNION (SELECT {1}) LIMIT 2",
        StmtKind::Select,
    ),
];

fn fill(template: &str, lits: &[String; 3]) -> String {
    template
        .replace("{0}", &lits[0])
        .replace("{1}", &lits[1])
        .replace("{2}", &lits[2])
}

/// Whitespace and comments MySQL ignores before or after a statement.
fn ignorable(trailing: bool) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("\t\r\n".to_string()),
        Just("/* a comment; with 'quotes' and -- dashes */".to_string()),
        Just("/**/".to_string()),
        Just("-- line comment\n".to_string()),
        Just("# hash comment\n".to_string()),
        "[a-z ]{0,10}".prop_map(|s| format!("/* {s} */")),
    ];
    prop::collection::vec(piece, 0..5).prop_map(move |p| {
        let s = p.concat();
        if trailing {
            // Whatever follows the statement starts with a space so it cannot glue onto a token.
            format!(" {s}")
        } else {
            s
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(sql in "\\PC{0,200}") {
        check_all(&sql);
    }

    #[test]
    fn token_soup_never_panics(sql in soup()) {
        check_all(&sql);
    }

    #[test]
    fn digests_are_stable_and_ignore_literals(
        t in 0usize..TEMPLATES.len(),
        a in prop::array::uniform3(literal()),
        b in prop::array::uniform3(literal()),
    ) {
        let (template, kind) = TEMPLATES[t];
        let (x, y) = (fill(template, &a), fill(template, &b));
        let (dx, dy) = (digest(&x), digest(&y));
        prop_assert_eq!(&dx, &digest(&x), "digest of {:?} is not stable", x);
        prop_assert_eq!(&dx, &dy, "{:?} vs {:?}", x, y);
        prop_assert!(dx.text.contains('?') || dx.text.contains("(...)"), "{}", dx.text);
        prop_assert_eq!(classify(&x).kind, kind, "{:?}", x);
        prop_assert_eq!(classify(&y).kind, kind, "{:?}", y);
    }

    #[test]
    fn digests_of_different_shapes_differ(
        a in prop::array::uniform3(literal()),
        col in "[a-z]{1,8}",
        other in "[a-z]{1,8}",
    ) {
        prop_assume!(col != other);
        let x = fill(&format!("SELECT {col} FROM orders WHERE user_id = {{0}}"), &a);
        let y = fill(&format!("SELECT {other} FROM orders WHERE user_id = {{0}}"), &a);
        prop_assert_ne!(digest(&x).hash, digest(&y).hash, "{:?} / {:?}", x, y);
    }

    #[test]
    fn keyword_case_does_not_change_the_digest_or_kind(
        t in 0usize..TEMPLATES.len(),
        a in prop::array::uniform3(number()),
        flips in prop::collection::vec(any::<bool>(), 128),
    ) {
        let (template, kind) = TEMPLATES[t];
        let sql = fill(template, &a);
        // Flip the case of letters outside literals (numbers only here, whose `e`/`x` stay put).
        let recased: String = sql
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let in_number = sql[..sql.char_indices().nth(i).map_or(0, |(o, _)| o)]
                    .chars()
                    .last()
                    .is_some_and(|p| p.is_ascii_digit());
                if flips[i % flips.len()] && !in_number && c.is_ascii_alphabetic() {
                    if c.is_ascii_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() }
                } else {
                    c
                }
            })
            .collect();
        prop_assert_eq!(classify(&recased).kind, kind, "{:?}", recased);
        prop_assert_eq!(digest(&recased), digest(&sql), "{:?}", recased);
    }

    #[test]
    fn surrounding_whitespace_and_comments_change_nothing(
        t in 0usize..TEMPLATES.len(),
        a in prop::array::uniform3(literal()),
        before in ignorable(false),
        after in ignorable(true),
        semicolon in any::<bool>(),
    ) {
        let (template, kind) = TEMPLATES[t];
        let sql = fill(template, &a);
        let wrapped = format!("{before}{sql}{}{after}", if semicolon { ";" } else { "" });
        let (plain, dressed) = (classify(&sql), classify(&wrapped));
        prop_assert_eq!(plain.kind, kind, "{:?}", sql);
        prop_assert_eq!(dressed.kind, kind, "{:?}", wrapped);
        prop_assert_eq!(plain.flags & !router::sql::classify::flags::SLOW_PATH,
            dressed.flags & !router::sql::classify::flags::SLOW_PATH, "{:?}", wrapped);
        prop_assert_eq!(digest(&sql), digest(&wrapped), "{:?}", wrapped);
    }

    #[test]
    fn hints_in_leading_comments_are_found(
        t in 0usize..TEMPLATES.len(),
        a in prop::array::uniform3(number()),
        which in 0usize..3,
    ) {
        let (template, kind) = TEMPLATES[t];
        let (comment, hint) = [
            ("/* furrow:primary */", router::sql::Hint::Primary),
            ("/* furrow:replica */", router::sql::Hint::Replica),
            ("/* furrow:backend=r2 */", router::sql::Hint::Backend("r2".into())),
        ][which].clone();
        let c = classify(&format!("{comment} {}", fill(template, &a)));
        prop_assert_eq!(c.kind, kind);
        prop_assert_eq!(c.hint, Some(hint));
    }
}

/// Runs `f` on a thread with the stack of a data-path thread (2 MiB), so an unbounded recursion
/// shows up as a crash here rather than passing on a big main-thread stack.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    on_stack(2 << 20, f);
}

fn on_stack(bytes: usize, f: impl FnOnce() + Send + 'static) {
    let handle = std::thread::Builder::new()
        .stack_size(bytes)
        .spawn(f)
        .unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = handle.join() {
        std::panic::resume_unwind(e);
    }
}

fn plan_result(sql: &str) -> Result<router::sql::plan::Plan, router::sql::plan::ShardError> {
    let rules = invariants::sharding_rules();
    let mut ids = 0u64;
    let mut next_id = || {
        ids += 1;
        ids
    };
    let mut cx = router::sql::plan::PlanContext {
        rules,
        params: &[],
        next_id: &mut next_id,
    };
    router::sql::plan::plan(sql, &mut cx)
}

#[test]
fn ten_thousand_parentheses_are_an_error_not_a_stack_overflow() {
    on_small_stack(|| {
        let n = 10_000;
        let nested = format!(
            "SELECT {}1{} FROM orders WHERE user_id = 1",
            "(".repeat(n),
            ")".repeat(n)
        );
        let err = plan_result(&nested).err();
        assert!(
            matches!(err, Some(router::sql::plan::ShardError::Syntax(_))),
            "{err:?}"
        );
        let subqueries = format!("{}SELECT 1{}", "(".repeat(n), ")".repeat(n));
        assert!(plan_result(&subqueries).is_err());
        // The classifier falls back to sqlparser for a leading `(`; too deep is not a read.
        let c = classify(&subqueries);
        assert!(!c.is_read(), "{c:?}");
        assert!(
            digest(&nested).text.len() <= router::sql::digest::MAX_FINGERPRINT,
            "fingerprint too long"
        );
        check_all(&nested);
        check_all(&subqueries);
        check_all(&"(".repeat(n));
        check_all(&")".repeat(n));
    });
}

#[test]
fn other_deep_shapes_are_refused_or_planned_without_a_crash() {
    on_small_stack(|| {
        let n = 10_000;
        let shapes = [
            format!("SELECT * FROM orders WHERE {}user_id = 1", "NOT ".repeat(n)),
            format!("SELECT {}1 FROM orders", "- ".repeat(n)),
            format!(
                "SELECT * FROM orders WHERE user_id IN ({})",
                vec!["1"; n].join(", ")
            ),
            format!(
                "SELECT {}1{} FROM orders",
                "CASE WHEN 1 THEN ".repeat(n),
                " END".repeat(n)
            ),
            format!(
                "SELECT * FROM orders WHERE user_id IN {}",
                "(SELECT id FROM users WHERE id IN ".repeat(n)
            ),
            format!("WITH {} SELECT 1", vec!["a AS (SELECT 1)"; n].join(", ")),
        ];
        for sql in shapes {
            check_all(&sql);
        }
    });
}

/// Statements that overflowed the stack and aborted the process: sqlparser's recursion limit does not
/// count left-deep operator chains (the planner's clone, render and drop of the AST then recurse once
/// per operator) nor `JOIN` chains without `ON` (`Parser::parse_joins` recurses once per join). Over
/// the guard's limits they are refused; at the limits they plan on an executor-sized stack.
#[test]
fn long_chains_are_refused_or_planned_without_a_crash() {
    // The data path runs on executors with `MIN_STACK_BYTES` of stack; router::sql::guard refuses
    // longer chains before they reach sqlparser.
    on_stack(router::sql::guard::MIN_STACK_BYTES, || {
        let shapes = [
            format!("SELECT {} FROM orders", vec!["1"; 10_000].join(" + ")),
            format!(
                "SELECT * FROM orders WHERE user_id = 1{}",
                " OR user_id = 1".repeat(10_000)
            ),
            format!("SELECT * FROM {}", vec!["orders"; 100].join(" JOIN ")),
            format!(
                "WITH a AS (SELECT 1) SELECT * FROM {}",
                vec!["a"; 100].join(" JOIN ")
            ),
        ];
        for sql in &shapes {
            check_all(sql);
            let err = plan_result(sql).expect_err("over the limits");
            assert!(err.to_string().contains("too complex"), "{err}");
        }
        let at_limit = [
            format!(
                "SELECT {} FROM orders",
                vec!["1"; router::sql::guard::MAX_OPERATORS + 1].join(" + ")
            ),
            format!(
                "SELECT * FROM orders WHERE user_id = 1{}",
                " OR user_id = 1".repeat((router::sql::guard::MAX_OPERATORS - 1) / 2)
            ),
            format!(
                "SELECT * FROM {}",
                vec!["orders"; router::sql::guard::MAX_JOINS + 1].join(" JOIN ")
            ),
            format!(
                "WITH a AS (SELECT 1) SELECT * FROM {}",
                vec!["a"; router::sql::guard::MAX_JOINS + 1].join(" JOIN ")
            ),
        ];
        for sql in &at_limit {
            assert!(
                router::sql::guard::check(sql).is_ok(),
                "at the limit: {}",
                &sql[..60]
            );
            check_all(sql);
        }
    });
}
