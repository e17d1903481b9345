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

/// Every digit run that stands alone (not part of a name) plus 7: the same statement shapes with
/// other values.
fn bump_numbers(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' {
            in_str = !in_str;
        }
        let word_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if !in_str && c.is_ascii_digit() && !word_before {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let word_after = i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'_');
            match sql[start..i].parse::<u64>() {
                Ok(n) if !word_after => out.push_str(&(n + 7).to_string()),
                _ => out.push_str(&sql[start..i]),
            }
            continue;
        }
        out.push(c as char);
        i += 1;
    }
    out
}

/// The rendered plan (or error) of `sql`, through `cache` when given.
fn render_plan(
    rules: &ShardingRules,
    sql: &str,
    cache: Option<&mut router::sql::plan::PlanCache>,
) -> String {
    let mut next_id = || 77;
    let mut cx = PlanContext {
        rules,
        params: &[],
        next_id: &mut next_id,
    };
    let r = match cache {
        Some(c) => router::sql::plan::plan_cached(sql, &mut cx, c),
        None => plan(sql, &mut cx),
    };
    match r {
        Ok(p) => p.render(rules),
        Err(e) => format!("ERROR {e}"),
    }
}

#[test]
fn the_parse_cache_gives_the_plans_of_parsing() {
    let rules = rules();
    let cases = std::fs::read_to_string(fixtures().join("plan/cases.sql")).unwrap_or_default();
    let mut cache = router::sql::plan::PlanCache::new();
    let mut n = 0;
    for sql in cases
        .lines()
        .filter(|l| l.is_ascii() && !l.trim().is_empty() && !l.starts_with("--"))
    {
        // Twice as written (a miss, then a hit), then with other values (a hit on the same shape).
        for s in [sql.to_string(), sql.to_string(), bump_numbers(sql)] {
            assert_eq!(
                render_plan(&rules, &s, Some(&mut cache)),
                render_plan(&rules, &s, None),
                "{s}"
            );
            n += 1;
        }
    }
    let (hits, misses, routed) = cache.stats();
    assert_eq!(hits + misses + routed, n);
    assert!(
        hits * 2 > n,
        "the golden statements should mostly hit: {hits} of {n}"
    );
}

/// Point statements answered from route templates give the planner's plans and errors for any key:
/// hash, range, date and list rules, string and number keys, aliases, qualified keys, extra
/// literals, and shapes that must not be templated (two key conditions, OR, IN).
#[test]
fn route_templates_give_the_planners_plans_for_any_key() {
    let rules = rules();
    let mut cache = router::sql::plan::PlanCache::new();
    let shapes: [&dyn Fn(u64) -> String; 12] = [
        &|k| format!("SELECT id, total FROM orders WHERE user_id = {k}"),
        &|k| format!("SELECT * FROM orders o WHERE o.user_id = {k} AND o.status = 'paid' LIMIT 3"),
        &|k| format!("SELECT * FROM orders WHERE {k} = user_id ORDER BY id DESC LIMIT 10, 5"),
        &|k| format!("SELECT * FROM orders WHERE order_no = '{k}' AND total > 1.5"),
        &|k| format!("SELECT name FROM users WHERE id = {}", k * 37 % 5000),
        &|k| format!("SELECT name FROM users WHERE id = '{}'", k * 37 % 5000),
        &|k| {
            format!(
                "SELECT * FROM logs WHERE created_at = '2024-{:02}-0{} 10:00:00'",
                k % 14 + 1,
                k % 9 + 1
            )
        },
        &|k| {
            let r = ["cn", "hk", "us", "ca", "de", "fr", "jp", "xx"];
            format!(
                "SELECT * FROM accounts WHERE region = '{}'",
                r[(k % 8) as usize]
            )
        },
        &|k| {
            format!(
                "SELECT * FROM orders WHERE user_id = {k} AND user_id = {}",
                k + 1
            )
        },
        &|k| format!("SELECT * FROM orders WHERE user_id = {k} OR user_id = 3"),
        &|k| format!("SELECT * FROM orders WHERE user_id IN ({k}, 4)"),
        &|k| format!("SELECT COUNT(*) FROM orders WHERE user_id = {k} AND total = {k}"),
    ];
    for k in 0..200u64 {
        for s in &shapes {
            let sql = s(k);
            assert_eq!(
                render_plan(&rules, &sql, Some(&mut cache)),
                render_plan(&rules, &sql, None),
                "{sql}"
            );
        }
    }
    let (_, _, routed) = cache.stats();
    assert!(
        routed > 1000,
        "point statements should come from templates: {routed}"
    );
}

/// The fast path of a sharded listener (`PlanCache::point`, asked before anything else is done
/// to a statement) must give the planner's unit and the statement's own digest, or step aside.
#[test]
fn point_answers_are_the_planners_units_with_the_statements_digest() {
    use router::sql::plan::{Plan, Shape, plan_cached_shaped};
    let rules = rules();
    let mut cache = router::sql::plan::PlanCache::new();
    let shapes: [&dyn Fn(u64) -> String; 7] = [
        &|k| format!("SELECT id, total FROM orders WHERE user_id = {k}"),
        &|k| format!("select * from orders o where o.user_id={k} and o.status = 'paid' limit 3"),
        &|k| {
            format!(
                "SELECT name FROM users WHERE id = '{}' /* c */",
                k * 37 % 5000
            )
        },
        &|k| {
            format!(
                "SELECT * FROM logs WHERE created_at = '2024-{:02}-01'",
                k % 14 + 1
            )
        },
        // Not point shapes: never answered by `point`.
        &|k| format!("SELECT * FROM orders WHERE user_id IN ({k}, 4)"),
        &|k| format!("UPDATE orders SET total = 1 WHERE user_id = {k}"),
        &|k| format!("/* furrow:shard=s0 */ SELECT * FROM orders WHERE user_id = {k}"),
    ];
    let mut answered = 0;
    for k in 0..300u64 {
        for (i, s) in shapes.iter().enumerate() {
            let sql = s(k);
            let shape = Shape::of(&sql).unwrap_or_else(|| panic!("no shape: {sql}"));
            let mut ids = 0u64;
            let mut next_id = || {
                ids += 1;
                ids
            };
            let mut cx = PlanContext {
                rules: &rules,
                params: &[],
                next_id: &mut next_id,
            };
            let want = plan(&sql, &mut cx);
            match cache.point(&shape, &rules) {
                Ok(Some(p)) => {
                    assert!(i < 4, "not a point shape, answered: {sql}");
                    match &want {
                        Ok(Plan::Route(r)) => assert_eq!(p.unit, r.unit, "{sql}"),
                        other => panic!("point answered {p:?}, the planner {other:?}: {sql}"),
                    }
                    assert_eq!(*p.digest, router::sql::digest(&sql), "{sql}");
                    answered += 1;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    let want = want.err().map(|e| e.to_string());
                    assert_eq!(Some(e.to_string()), want, "{sql}");
                    continue;
                }
            }
            // Not answered: plan it (the cache learns from it), as the listener does.
            let got = plan_cached_shaped(&sql, Some(&shape), &mut cx, &mut cache)
                .map(|p| p.render(&rules))
                .map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map(|p| p.render(&rules)).map_err(|e| e.to_string()),
                "{sql}"
            );
        }
    }
    assert!(answered > 1000, "point shapes answered: {answered}");
}

/// `PlanCache::lookup` (the sharded listener's one scan: skeleton map, else shape) answers as
/// `Shape::of` followed by `PlanCache::point` does on a second cache fed the same statements:
/// the same point units and digests, the same shapes otherwise, the same errors. The statements
/// mix literal kinds in one shape (`id = 5` and `id = '5'` share a shape, not a skeleton),
/// non-simple literals (escapes, exponents, double quotes), comments, hints, keys that the rule
/// refuses, and templates learnt while the skeleton map is in use (every partition learnt
/// empties it).
#[test]
fn lookup_answers_as_shape_and_point_do() {
    use router::sql::plan::{Lookup, Plan, Shape, plan_cached_shaped};
    let rules = rules();
    let mut fast = router::sql::plan::PlanCache::new();
    let mut slow = router::sql::plan::PlanCache::new();
    let shapes: [&dyn Fn(u64) -> String; 12] = [
        &|k| format!("SELECT id, total FROM orders WHERE user_id = {k}"),
        &|k| format!("SELECT id, total FROM orders WHERE user_id = '{k}'"),
        &|k| format!("select * from orders o where o.user_id={k} and o.status = 'paid' limit 3"),
        &|k| format!("SELECT * FROM orders WHERE user_id = {k} AND note = 'a\\'b'"),
        &|k| format!("SELECT * FROM orders WHERE user_id = {k} AND total > 1e3"),
        &|k| format!("SELECT * FROM orders WHERE user_id = {k} AND note = \"x\""),
        &|k| {
            format!(
                "SELECT name FROM users WHERE id = '{}' /* c */",
                k * 37 % 5000
            )
        },
        &|k| format!("SELECT name FROM users WHERE id = '{}'", k * 37 % 5000),
        &|k| {
            format!(
                "SELECT * FROM logs WHERE created_at = '2024-{:02}-01'",
                k % 14 + 1
            )
        },
        &|k| format!("SELECT * FROM orders WHERE user_id IN ({k}, 4)"),
        &|k| format!("UPDATE orders SET total = 1 WHERE user_id = {k}"),
        &|k| format!("/* furrow:shard=s0 */ SELECT * FROM orders WHERE user_id = {k}"),
    ];
    let (mut points, mut out) = (0, String::new());
    for k in 0..300u64 {
        for s in &shapes {
            let sql = s(k);
            let mut ids = 0u64;
            let mut next_id = || {
                ids += 1;
                ids
            };
            let mut cx = PlanContext {
                rules: &rules,
                params: &[],
                next_id: &mut next_id,
            };
            let want = plan(&sql, &mut cx);
            let shape = Shape::of(&sql);
            let slow_point = match &shape {
                Some(s) => slow.point(s, &rules).map_err(|e| e.to_string()),
                None => Ok(None),
            };
            let got = fast.lookup(&sql, &rules, &mut out);
            match (got, slow_point) {
                (Ok(Lookup::Point { shard, digest }), Ok(Some(p))) => {
                    assert_eq!(
                        (shard, out.as_str()),
                        (p.unit.shard, p.unit.sql.as_str()),
                        "{sql}"
                    );
                    assert_eq!(*digest, router::sql::digest(&sql), "{sql}");
                    match &want {
                        Ok(Plan::Route(r)) => assert_eq!(p.unit, r.unit, "{sql}"),
                        other => panic!("point answered, the planner {other:?}: {sql}"),
                    }
                    points += 1;
                }
                (Ok(Lookup::Shape(got)), Ok(None)) => {
                    assert_eq!(format!("{got:?}"), format!("{shape:?}"), "{sql}");
                    // Planned on both caches (each learns), as the listener does.
                    let a = plan_cached_shaped(&sql, got.as_ref(), &mut cx, &mut fast)
                        .map(|p| p.render(&rules))
                        .map_err(|e| e.to_string());
                    let b = plan_cached_shaped(&sql, shape.as_ref(), &mut cx, &mut slow)
                        .map(|p| p.render(&rules))
                        .map_err(|e| e.to_string());
                    assert_eq!(a, b, "{sql}");
                    assert_eq!(a, want.map(|p| p.render(&rules)).map_err(|e| e.to_string()));
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b, "{sql}"),
                (a, b) => panic!("lookup {a:?}, shape and point {b:?}: {sql}"),
            }
        }
    }
    assert!(points > 1500, "point statements answered: {points}");
}
