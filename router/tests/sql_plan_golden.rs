//! Golden plan tests: every statement of `fixtures/sql/plan/cases.sql` is planned against
//! `fixtures/sql/sharding.toml` and the rendered plans (primitives and per-shard SQL) must equal
//! `fixtures/sql/plan/cases.plan`. Regenerate after an intended change with
//! `FURROW_BLESS=1 cargo nextest run -p router --test sql_plan_golden` and review the diff.

use std::path::PathBuf;

use router::sql::plan::{PlanContext, plan};
use router::sql::shard::ShardingRules;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sql")
}

/// The rules of the test config.
pub fn rules() -> ShardingRules {
    let cfg =
        router::config::load(&fixtures().join("sharding.toml")).unwrap_or_else(|e| panic!("{e}"));
    let s = cfg.sharding();
    assert_eq!(s.len(), 1);
    ShardingRules::compile(&s[0]).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn plans_match_the_golden_file() {
    let rules = rules();
    let cases = std::fs::read_to_string(fixtures().join("plan/cases.sql")).unwrap_or_default();
    let mut out = String::new();
    let mut ids = 1_000u64;
    for sql in cases
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
    {
        let mut next_id = || {
            ids += 1;
            ids
        };
        let mut cx = PlanContext {
            rules: &rules,
            params: &[],
            next_id: &mut next_id,
        };
        out.push_str(&format!("== {sql}\n"));
        match plan(sql, &mut cx) {
            Ok(p) => out.push_str(&p.render(&rules)),
            Err(e) => out.push_str(&format!("ERROR {e}\n")),
        }
        out.push('\n');
    }
    let path = fixtures().join("plan/cases.plan");
    if std::env::var_os("FURROW_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap_or_else(|e| panic!("{e}"));
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if want != out {
        for (i, (a, b)) in want.lines().zip(out.lines()).enumerate() {
            if a != b {
                panic!(
                    "line {}: expected\n  {a}\ngot\n  {b}\n(FURROW_BLESS=1 regenerates)",
                    i + 1
                );
            }
        }
        panic!("golden file length differs (FURROW_BLESS=1 regenerates)");
    }
}

#[test]
fn prepared_statements_route_on_bound_parameters() {
    let rules = rules();
    let mut next_id = || 1;
    let params = [codec::mysql::Value::Int(10)];
    let mut cx = PlanContext {
        rules: &rules,
        params: &params,
        next_id: &mut next_id,
    };
    let p =
        plan("SELECT * FROM orders WHERE user_id = ?", &mut cx).unwrap_or_else(|e| panic!("{e}"));
    let text = p.render(&rules);
    assert!(text.starts_with("Route"), "{text}");
    assert!(
        text.contains("orders_2") && text.contains("user_id = 10"),
        "{text}"
    );
}

#[test]
fn hostile_nesting_is_a_syntax_error_not_a_crash() {
    let rules = rules();
    let mut next_id = || 1;
    let mut cx = PlanContext {
        rules: &rules,
        params: &[],
        next_id: &mut next_id,
    };
    let sql = format!("SELECT {}1{} FROM orders", "(".repeat(500), ")".repeat(500));
    assert!(matches!(
        plan(&sql, &mut cx),
        Err(router::sql::plan::ShardError::Syntax(_))
    ));
}
