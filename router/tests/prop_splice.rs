//! Property tests for the byte-faithful rewrite (`router::sql::plan::splice`): for statements with
//! hostile literals (escapes, both quote kinds, comments inside strings, non-ASCII) and comments
//! between tokens, every unit the planner sends to a shard parses to the same tree as the client's
//! statement once table names are mapped back to logical ones. The literals the shard sees are the
//! literals the client wrote, and nothing (precedence, `BINARY`, escapes) was re-rendered.

use proptest::prelude::*;
use router::sql::plan::{Plan, PlanContext, plan};
use router::sql::shard::ShardingRules;
use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, SetExpr, Statement, TableFactor, VisitMut, VisitorMut,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// The golden tests' rules (`tests/fixtures/sql/sharding.toml`).
fn rules() -> &'static ShardingRules {
    static RULES: std::sync::OnceLock<ShardingRules> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sql/sharding.toml");
        let cfg = router::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let s = cfg.sharding();
        ShardingRules::compile(&s[0]).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A string literal with escapes, doubled quotes, comment and quote look-alikes, non-ASCII.
fn string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 ,;()*#%_-]{0,6}",
        Just("''".to_string()),
        Just("\\'".to_string()),
        Just("\\\\".to_string()),
        Just("\\0".to_string()),
        Just("\\n".to_string()),
        Just("\\%".to_string()),
        Just("\"".to_string()),
        Just("/* not a comment */".to_string()),
        Just("-- nor this".to_string()),
        Just("?".to_string()),
        Just("\u{e9}\u{4e2d}\u{1F600}".to_string()),
    ];
    (prop::collection::vec(piece, 0..6), any::<bool>()).prop_map(|(parts, dq)| {
        let body = parts.concat();
        if dq {
            format!("\"{}\"", body.replace('"', "\"\""))
        } else {
            format!("'{}'", body.replace('"', "x"))
        }
    })
}

/// Whitespace or a comment between tokens.
fn gap() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(" ".to_string()),
        1 => Just("  \n\t".to_string()),
        1 => Just(" /* c; 'q' */ ".to_string()),
        1 => Just(" -- line\n".to_string()),
    ]
}

/// Statements over the golden rules (`orders` hash on user_id, `order_items` co-located,
/// `countries` broadcast); `{k}` is a key, `{s}`/`{t}` strings, `_` a gap.
const TEMPLATES: [&str; 10] = [
    "SELECT_id,_note FROM orders WHERE user_id_=_{k} AND note =_{s}",
    "SELECT_id FROM_orders WHERE_note LIKE {s} ESCAPE_'|' ORDER BY id_LIMIT 3",
    "select_id,_amount from orders where binary note = {s} and status <> {t} order by amount desc, id",
    "UPDATE orders SET note_=_{s}, status = {t} WHERE_user_id = {k}",
    "DELETE FROM orders_WHERE note = {s} OR_note = {t}",
    "SELECT o.id FROM orders o WHERE o.user_id = {k} AND o.id IN (SELECT order_id FROM order_items WHERE user_id = {k} AND sku = {s})",
    "SELECT_o.id, c.name FROM orders AS o JOIN countries c ON c.code = o.country WHERE o.note = {s} ORDER BY o.id LIMIT 2, 5",
    "SELECT id FROM orders WHERE user_id = {k} UNION ALL SELECT order_id FROM order_items WHERE user_id = {k} AND sku = {t}",
    "UPDATE countries SET name = {s} WHERE code = {t}",
    "SELECT CONCAT(note,_{s}) AS x, id FROM orders WHERE user_id IN ({k}, 3) AND note <> {t}",
];

fn fill(t: &str, k: u32, s: &str, tt: &str, gaps: &[String]) -> String {
    let mut out = String::new();
    let mut g = gaps.iter().cycle();
    for c in t.chars() {
        match c {
            '_' => out.push_str(g.next().map_or(" ", String::as_str)),
            c => out.push(c),
        }
    }
    out.replace("{k}", &k.to_string())
        .replace("{s}", s)
        .replace("{t}", tt)
}

fn parse(sql: &str) -> Option<Statement> {
    Parser::parse_sql(&MySqlDialect {}, sql)
        .ok()
        .and_then(|mut v| (v.len() == 1).then(|| v.remove(0)))
}

/// Maps physical table names back to logical ones, drops schema qualifiers and aliases equal to
/// the logical name (the rewrite adds them).
struct Logical<'r>(&'r ShardingRules);

impl VisitorMut for Logical<'_> {
    type Break = ();
    fn pre_visit_table_factor(&mut self, f: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = f {
            let last = match name.0.last() {
                Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
                _ => return ControlFlow::Continue(()),
            };
            let logical = self
                .0
                .tables
                .iter()
                .find(|t| t.physical.contains(&last))
                .map_or(last.clone(), |t| t.name.clone());
            *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(
                logical.clone(),
            ))]);
            if alias
                .as_ref()
                .is_some_and(|a| a.name.value.eq_ignore_ascii_case(&logical))
            {
                *alias = None;
            }
        }
        ControlFlow::Continue(())
    }
}

fn normalised(mut stmt: Statement, rules: &ShardingRules) -> Statement {
    let _ = stmt.visit(&mut Logical(rules));
    stmt
}

/// The parts of a SELECT a scatter is allowed to change (LIMIT, appended sort columns) removed.
fn without_scatter_edits(stmt: &mut Statement, keep_items: usize) {
    if let Statement::Query(q) = stmt {
        q.limit_clause = None;
        if let SetExpr::Select(s) = q.body.as_mut() {
            s.projection.truncate(keep_items);
        }
    }
}

fn units(p: &Plan) -> Vec<String> {
    p.units().into_iter().map(|u| u.sql.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn units_are_the_clients_statement_with_table_names_changed(
        t in 0..TEMPLATES.len(),
        k in 0u32..50,
        s in string(),
        tt in string(),
        gaps in prop::collection::vec(gap(), 1..6),
    ) {
        let rules = rules();
        let sql = fill(TEMPLATES[t], k, &s, &tt, &gaps);
        let Some(orig) = parse(&sql) else {
            // Not every generated text is SQL (the parser decides); nothing to compare.
            return Ok(());
        };
        let mut ids = 0u64;
        let mut next_id = || { ids += 1; ids };
        let mut cx = PlanContext { rules, params: &[], next_id: &mut next_id };
        let planned = plan(&sql, &mut cx);
        let p = match planned {
            Ok(p) => p,
            Err(e) => {
                prop_assert!(false, "{sql}: refused: {e}");
                unreachable!()
            }
        };
        let keep = match &orig {
            Statement::Query(q) => match q.body.as_ref() {
                SetExpr::Select(s) => s.projection.len(),
                _ => usize::MAX,
            },
            _ => usize::MAX,
        };
        let mut want = normalised(orig, rules);
        let scatter = !matches!(p, Plan::Route(_));
        if scatter {
            without_scatter_edits(&mut want, keep);
        }
        for unit in units(&p) {
            let got = parse(&unit);
            prop_assert!(got.is_some(), "{sql}\nunit does not parse: {unit}");
            let mut got = normalised(got.unwrap_or_else(|| unreachable!()), rules);
            if scatter {
                without_scatter_edits(&mut got, keep);
            }
            prop_assert_eq!(&got, &want, "{}\nunit: {}", sql, unit);
        }
    }

    /// A split INSERT: each unit's rows are rows of the statement, as written, each exactly once.
    #[test]
    fn insert_split_keeps_every_row_as_written(
        rows in prop::collection::vec((0u32..40, string()), 1..8),
        gaps in prop::collection::vec(gap(), 1..4),
    ) {
        let rules = rules();
        let g = |i: usize| gaps[i % gaps.len()].clone();
        let values: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(i, (k, s))| format!("({k},{}{s}, 1)", g(i)))
            .collect();
        let sql = format!("INSERT INTO orders (user_id, note, amount){}VALUES {}", g(0), values.join(", "));
        let Some(Statement::Insert(orig)) = parse(&sql) else { return Ok(()) };
        let Some(SetExpr::Values(ov)) = orig.source.as_ref().map(|s| (*s.body).clone()) else {
            return Ok(());
        };
        let mut ids = 0u64;
        let mut next_id = || { ids += 1; ids };
        let mut cx = PlanContext { rules, params: &[], next_id: &mut next_id };
        let p = plan(&sql, &mut cx).map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
        let mut seen = 0usize;
        for unit in units(&p) {
            let Some(Statement::Insert(u)) = parse(&unit) else {
                return Err(TestCaseError::fail(format!("{sql}\nunit does not parse: {unit}")));
            };
            let Some(SetExpr::Values(uv)) = u.source.as_ref().map(|s| (*s.body).clone()) else {
                return Err(TestCaseError::fail(format!("unit without VALUES: {unit}")));
            };
            for row in &uv.rows {
                // The proxy appends the global id column (auto_id = "id").
                let written: Vec<Expr> = row.content[..row.content.len() - 1].to_vec();
                prop_assert!(
                    ov.rows.iter().any(|r| r.content == written),
                    "{}\nrow not in the statement: {:?}", unit, written
                );
                seen += 1;
            }
        }
        prop_assert_eq!(seen, ov.rows.len());
    }
}
