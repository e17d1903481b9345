//! Executes plans over in-memory shards: the merge primitives must give what one server would.

use std::collections::HashMap;

use bytes::Bytes;
use codec::mysql::consts::{charset, column_flag, column_type};
use codec::mysql::{ColumnDefinition, Value};
use router::sql::plan::exec::collect;
use router::sql::plan::{
    CollationOf, ExecLimits, Output, Plan, PlanContext, ShardError, ShardResult, ShardRunner, Unit,
    VecRows, execute, plan,
};
use router::sql::shard::ShardingRules;

mod golden {
    use router::sql::shard::ShardingRules;

    /// The rules of the golden-test config.
    pub fn rules() -> ShardingRules {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sql/sharding.toml");
        let cfg = router::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        ShardingRules::compile(&cfg.sharding()[0]).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Answers each exact SQL text with canned rows. Like a server whose result collation is each
/// column's own, it answers the `COLLATION(...)` helpers the plan asks for ([`Canned::learn`])
/// with the collation in the described column's definition.
struct Canned {
    answers: HashMap<String, (Vec<ColumnDefinition>, Vec<Vec<Value>>)>,
    probes: HashMap<String, Vec<CollationOf>>,
    /// The collation named for every string column instead of its definition's (a server
    /// whose result collation is not the column's).
    report: Option<&'static str>,
}

impl Canned {
    fn new(answers: HashMap<String, (Vec<ColumnDefinition>, Vec<Vec<Value>>)>) -> Self {
        Canned {
            answers,
            probes: HashMap::new(),
            report: None,
        }
    }

    /// Takes the helper columns each unit of `p` asks for.
    fn learn(&mut self, p: &Plan) {
        let scatter = match p {
            Plan::Scatter(s) => Some(s),
            Plan::MergeSort(m) => Some(&m.input),
            _ => None,
        };
        if let Some(s) = scatter {
            for u in &s.units {
                self.probes.insert(u.sql.clone(), s.collations.clone());
            }
        }
        for c in p.children() {
            self.learn(c);
        }
    }
}

fn collation_name(id: u16) -> &'static str {
    match id {
        33 => "utf8mb3_general_ci",
        45 => "utf8mb4_general_ci",
        46 => "utf8mb4_bin",
        8 => "latin1_swedish_ci",
        47 => "latin1_bin",
        224 => "utf8mb4_unicode_ci",
        255 => "utf8mb4_0900_ai_ci",
        _ => "binary",
    }
}

impl ShardRunner for Canned {
    fn run(&mut self, unit: &Unit) -> Result<ShardResult, ShardError> {
        let probes = self.probes.get(&unit.sql).cloned().unwrap_or_default();
        match self.answers.get(&unit.sql) {
            Some((c, r)) => {
                let mut cols = c.clone();
                let width = cols.len() + probes.len();
                let names: Vec<Value> = probes
                    .iter()
                    .map(|p| {
                        let id = c.get(p.index(width)).map_or(63, |d| d.charset);
                        let name = match self.report {
                            Some(r) if id != 63 => r,
                            _ => collation_name(id),
                        };
                        Value::Bytes(Bytes::from_static(name.as_bytes()))
                    })
                    .collect();
                for _ in &probes {
                    cols.push(ColumnDefinition::new(
                        "COLLATION(x)",
                        column_type::VAR_STRING,
                        45,
                        64,
                        0,
                        0,
                    ));
                }
                let rows = r
                    .iter()
                    .map(|row| row.iter().chain(&names).cloned().collect())
                    .collect();
                Ok(ShardResult::Rows(Box::new(VecRows::new(cols, rows))))
            }
            None => Ok(ShardResult::Rows(Box::new(VecRows::new(
                Vec::new(),
                Vec::new(),
            )))),
        }
    }
    fn next_id(&mut self) -> u64 {
        7
    }
}

fn int_col(name: &str) -> ColumnDefinition {
    ColumnDefinition::new(
        name,
        column_type::LONGLONG,
        charset::BINARY,
        20,
        column_flag::BINARY,
        0,
    )
}

fn dec_col(name: &str) -> ColumnDefinition {
    ColumnDefinition::new(
        name,
        column_type::NEWDECIMAL,
        charset::BINARY,
        20,
        column_flag::BINARY,
        0,
    )
}

fn dec(s: &str) -> Value {
    Value::Decimal(Bytes::copy_from_slice(s.as_bytes()))
}

fn run(
    rules: &ShardingRules,
    sql: &str,
    canned: &mut Canned,
) -> Result<Vec<Vec<Value>>, ShardError> {
    let mut next = || 1;
    let mut cx = PlanContext {
        rules,
        params: &[],
        next_id: &mut next,
    };
    let p = plan(sql, &mut cx)?;
    canned.learn(&p);
    match execute(&p, canned, ExecLimits { max_rows: 100 })? {
        Output::Rows(r) => Ok(collect(r)?.1),
        Output::Affected { .. } => Ok(Vec::new()),
    }
}

fn units_of(rules: &ShardingRules, sql: &str) -> Vec<String> {
    let mut next = || 1;
    let mut cx = PlanContext {
        rules,
        params: &[],
        next_id: &mut next,
    };
    let text = plan(sql, &mut cx)
        .map(|p| p.render(rules))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().split_once(": ").map(|(_, s)| s.to_string()))
        .collect()
}

#[test]
fn order_by_limit_merges_sorted_shard_streams() {
    let rules = golden::rules();
    let sql = "SELECT id, amount FROM orders ORDER BY amount DESC, id LIMIT 1, 3";
    let units = units_of(&rules, sql);
    assert_eq!(units.len(), 8);
    let mut answers = HashMap::new();
    let cols = vec![int_col("id"), int_col("amount")];
    // Each physical table returns its rows sorted by amount DESC, id.
    for (i, u) in units.iter().enumerate() {
        let i = i as i64;
        answers.insert(
            u.clone(),
            (
                cols.clone(),
                vec![
                    vec![Value::Int(i), Value::Int(100 - i * 10)],
                    vec![Value::Int(i + 100), Value::Int(5)],
                ],
            ),
        );
    }
    let mut c = Canned::new(answers);
    let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<Value> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, vec![Value::Int(1), Value::Int(2), Value::Int(3)]);
}

#[test]
fn avg_is_sum_over_count_and_groups_merge() {
    let rules = golden::rules();
    let sql = "SELECT status, AVG(amount), COUNT(*) AS n FROM orders GROUP BY status HAVING n > 1 ORDER BY status";
    let units = units_of(&rules, sql);
    let cols = vec![
        ColumnDefinition::new(
            "status",
            column_type::VAR_STRING,
            charset::UTF8MB4_GENERAL_CI,
            40,
            0,
            0,
        ),
        dec_col("SUM(amount)"),
        int_col("COUNT(amount)"),
        int_col("COUNT(*)"),
    ];
    let s = |t: &'static str| Value::Bytes(Bytes::from_static(t.as_bytes()));
    let mut answers = HashMap::new();
    answers.insert(
        units[0].clone(),
        (
            cols.clone(),
            vec![
                vec![s("new"), dec("10"), Value::Int(2), Value::Int(2)],
                vec![s("paid"), dec("7"), Value::Int(1), Value::Int(1)],
            ],
        ),
    );
    answers.insert(
        units[1].clone(),
        (
            cols.clone(),
            vec![vec![s("NEW"), dec("5"), Value::Int(1), Value::Int(1)]],
        ),
    );
    let mut c = Canned::new(answers);
    let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{e}"));
    // 'new' and 'NEW' are one group under a case-insensitive collation; 'paid' has n = 1.
    assert_eq!(rows, vec![vec![s("new"), dec("5.0000"), Value::Int(3)]]);
}

#[test]
fn aggregates_over_no_rows_give_one_row() {
    let rules = golden::rules();
    let mut c = Canned::new(HashMap::new());
    let rows = run(&rules, "SELECT COUNT(*), SUM(amount) FROM orders", &mut c)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows, vec![vec![Value::Int(0), Value::Null]]);
}

/// Every unit answers 20 distinct user ids (sorted ascending), 160 groups in all.
fn many_groups(units: &[String], cols: Vec<ColumnDefinition>) -> Canned {
    let mut answers = HashMap::new();
    for (i, u) in units.iter().enumerate() {
        let rows = (0..20)
            .map(|k| {
                let mut r = vec![Value::Int(i as i64 * 1000 + k)];
                r.extend((1..cols.len()).map(|_| Value::Int(1)));
                r
            })
            .collect();
        answers.insert(u.clone(), (cols.clone(), rows));
    }
    Canned::new(answers)
}

#[test]
fn hashed_group_by_respects_the_memory_budget() {
    let rules = golden::rules();
    // ORDER BY an aggregate: the groups are hashed, all 160 held at once (budget 100).
    let sql = "SELECT user_id, COUNT(*) AS n FROM orders GROUP BY user_id ORDER BY n";
    let units = units_of(&rules, sql);
    let mut c = many_groups(&units, vec![int_col("user_id"), int_col("COUNT(*)")]);
    assert!(matches!(
        run(&rules, sql, &mut c),
        Err(ShardError::MemoryBudget(100))
    ));
}

#[test]
fn sorted_group_by_streams_past_the_group_budget() {
    let rules = golden::rules();
    // No ORDER BY: shards sort their groups, the proxy holds one group at a time.
    for sql in [
        "SELECT DISTINCT user_id FROM orders",
        "SELECT user_id, COUNT(*) FROM orders GROUP BY user_id ORDER BY user_id",
    ] {
        let units = units_of(&rules, sql);
        assert!(units.iter().all(|u| u.ends_with("ORDER BY 1")), "{units:?}");
        let width = if sql.contains("COUNT") { 2 } else { 1 };
        let cols = (0..width).map(|i| int_col(&format!("c{i}"))).collect();
        let mut c = many_groups(&units, cols);
        let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let ids: Vec<Value> = rows.iter().map(|r| r[0].clone()).collect();
        let mut want: Vec<i64> = (0..8)
            .flat_map(|i| (0..20).map(move |k| i * 1000 + k))
            .collect();
        want.sort_unstable();
        assert_eq!(
            ids,
            want.into_iter().map(Value::Int).collect::<Vec<_>>(),
            "{sql}"
        );
    }
}

#[test]
fn sorted_group_by_merges_groups_across_shards_in_the_asked_order() {
    let rules = golden::rules();
    let sql = "SELECT status, user_id, COUNT(*), MAX(amount) FROM orders \
               GROUP BY status, user_id ORDER BY user_id DESC";
    let units = units_of(&rules, sql);
    assert!(
        units.iter().all(|u| u.ends_with("ORDER BY 2 DESC, 1")),
        "{units:?}"
    );
    let cols = vec![
        ColumnDefinition::new(
            "status",
            column_type::VAR_STRING,
            charset::UTF8MB4_GENERAL_CI,
            40,
            0,
            0,
        ),
        int_col("user_id"),
        int_col("COUNT(*)"),
        int_col("MAX(amount)"),
    ];
    let s = |t: &'static str| Value::Bytes(Bytes::from_static(t.as_bytes()));
    let row = |st, u, n, m| vec![s(st), Value::Int(u), Value::Int(n), Value::Int(m)];
    let mut answers = HashMap::new();
    // Each stream sorted by user_id DESC, then status (case-insensitively).
    answers.insert(
        units[0].clone(),
        (
            cols.clone(),
            vec![
                row("new", 9, 1, 5),
                row("paid", 9, 2, 7),
                row("new", 3, 1, 1),
            ],
        ),
    );
    answers.insert(
        units[3].clone(),
        (
            cols.clone(),
            vec![
                row("NEW", 9, 4, 8),
                row("new", 3, 2, 0),
                row("paid", 3, 1, 2),
            ],
        ),
    );
    answers.insert(units[5].clone(), (cols.clone(), vec![row("paid", 9, 1, 9)]));
    let mut c = Canned::new(answers);
    let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rows,
        vec![
            row("new", 9, 5, 8),
            row("paid", 9, 3, 9),
            row("new", 3, 3, 1),
            row("paid", 3, 1, 2),
        ]
    );
}

#[test]
fn sorted_group_by_refuses_a_stream_out_of_order() {
    let rules = golden::rules();
    let sql = "SELECT user_id, COUNT(*) FROM orders GROUP BY user_id";
    let units = units_of(&rules, sql);
    let cols = vec![int_col("user_id"), int_col("COUNT(*)")];
    let mut answers = HashMap::new();
    // A shard that did not sort as asked: the groups would split, so the merge fails instead.
    answers.insert(
        units[0].clone(),
        (
            cols.clone(),
            vec![
                vec![Value::Int(5), Value::Int(1)],
                vec![Value::Int(2), Value::Int(1)],
            ],
        ),
    );
    let mut c = Canned::new(answers);
    assert!(matches!(
        run(&rules, sql, &mut c),
        Err(ShardError::Unsupported(m)) if m.contains("out of order")
    ));
}

#[test]
fn min_and_max_skip_null_partials_in_either_order() {
    let rules = golden::rules();
    let sql = "SELECT user_id, MIN(amount), MAX(amount) FROM orders GROUP BY user_id";
    let units = units_of(&rules, sql);
    let cols = vec![
        int_col("user_id"),
        int_col("MIN(amount)"),
        int_col("MAX(amount)"),
    ];
    let mut answers = HashMap::new();
    // Group 1: NULL partial first; group 2: NULL partial last; group 3: only NULLs.
    let parts = [
        vec![
            vec![Value::Int(1), Value::Null, Value::Null],
            vec![Value::Int(2), Value::Int(4), Value::Int(9)],
            vec![Value::Int(3), Value::Null, Value::Null],
        ],
        vec![
            vec![Value::Int(1), Value::Int(5), Value::Int(6)],
            vec![Value::Int(2), Value::Null, Value::Null],
            vec![Value::Int(3), Value::Null, Value::Null],
        ],
        vec![vec![Value::Int(1), Value::Int(3), Value::Int(4)]],
    ];
    for (u, rows) in units.iter().zip(parts) {
        answers.insert(u.clone(), (cols.clone(), rows));
    }
    let mut c = Canned::new(answers);
    let mut rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{e}"));
    rows.sort_by_key(|r| format!("{:?}", r[0]));
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(1), Value::Int(3), Value::Int(6)],
            vec![Value::Int(2), Value::Int(4), Value::Int(9)],
            vec![Value::Int(3), Value::Null, Value::Null],
        ]
    );
}

/// Canned partial rows for a grouped plan over `orders`: unit `i` answers groups `k` of `0..12`
/// with `(k + i) % 3 != 0`, sorted as its ORDER BY asks, the other columns small integers.
fn grouped_answers(units: &[String]) -> Canned {
    let mut answers = HashMap::new();
    for (i, u) in units.iter().enumerate() {
        let list = u
            .strip_prefix("SELECT ")
            .and_then(|s| s.split_once(" FROM "))
            .map_or("", |(l, _)| l);
        let width = list.split(", ").count();
        let cols: Vec<ColumnDefinition> = (0..width).map(|c| int_col(&format!("c{c}"))).collect();
        let mut keys: Vec<i64> = (0..12).filter(|k| (k + i as i64) % 3 != 0).collect();
        if u.contains("ORDER BY 1 DESC") {
            keys.reverse();
        }
        let rows = keys
            .into_iter()
            .map(|k| {
                let mut r = vec![Value::Int(k)];
                r.extend((1..width).map(|c| Value::Int((k * 7 + i as i64 * 3 + c as i64) % 5)));
                r
            })
            .collect();
        answers.insert(u.clone(), (cols, rows));
    }
    Canned::new(answers)
}

#[test]
fn group_stream_pushes_out_what_the_pull_pipeline_gives() {
    use router::sql::plan::grouped_read;
    let rules = golden::rules();
    let limits = ExecLimits { max_rows: 100 };
    for sql in [
        "SELECT user_id, COUNT(*), SUM(amount), AVG(amount), MIN(amount), MAX(amount) \
         FROM orders GROUP BY user_id",
        "SELECT user_id, COUNT(*) AS n FROM orders GROUP BY user_id HAVING n > 3 \
         ORDER BY user_id DESC",
        "SELECT user_id, SUM(amount) FROM orders GROUP BY user_id ORDER BY user_id LIMIT 2, 4",
        "SELECT COUNT(*), MAX(amount) FROM orders GROUP BY user_id ORDER BY user_id DESC LIMIT 3",
        "SELECT user_id, COUNT(DISTINCT amount) FROM orders GROUP BY user_id \
         HAVING COUNT(DISTINCT amount) > 1 LIMIT 5",
        "SELECT user_id, COUNT(*) FROM orders GROUP BY user_id LIMIT 0",
        "SELECT user_id, COUNT(*) FROM orders GROUP BY user_id LIMIT 7, 100",
    ] {
        let mut next = || 1;
        let p = plan(
            sql,
            &mut PlanContext {
                rules: &rules,
                params: &[],
                next_id: &mut next,
            },
        )
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let units = units_of(&rules, sql);
        let answers = || {
            let mut a = grouped_answers(&units);
            a.learn(&p);
            a
        };
        let Ok(Output::Rows(pulled)) = execute(&p, &mut answers(), limits) else {
            panic!("{sql}: rows expected");
        };
        let (want_cols, want) = collect(pulled).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let gr = grouped_read(&p).unwrap_or_else(|| panic!("{sql}:\n{}", p.render(&rules)));
        // The partial rows merged as the proxy merges them from the sockets, pushed one by one.
        let Ok(Output::Rows(mut merged)) = execute(
            &router::sql::plan::Plan::MergeSort(gr.merge.clone()),
            &mut answers(),
            limits,
        ) else {
            panic!("{sql}: merged rows expected");
        };
        let mut groups = gr.start(merged.columns().to_vec(), limits);
        let mut got = Vec::new();
        while !groups.is_done() {
            match merged.next_row().unwrap_or_else(|e| panic!("{sql}: {e}")) {
                Some(row) => got.extend(groups.push(row).unwrap_or_else(|e| panic!("{e}"))),
                None => {
                    got.extend(groups.finish().unwrap_or_else(|e| panic!("{e}")));
                    break;
                }
            }
        }
        assert_eq!(groups.columns(), &want_cols[..], "{sql}");
        assert_eq!(got, want, "{sql}");
        assert!(
            !want.is_empty() || sql.contains("LIMIT 0"),
            "{sql}: a weak case"
        );
    }
    // Output not in group order, or holding more than a group: the buffered path.
    for sql in [
        "SELECT user_id, COUNT(*) AS n FROM orders GROUP BY user_id ORDER BY n DESC LIMIT 3",
        "SELECT DISTINCT COUNT(*) FROM orders GROUP BY user_id",
        "SELECT COUNT(*) FROM orders",
        "SELECT id FROM orders ORDER BY id LIMIT 3",
        "SELECT * FROM orders WHERE user_id = 3",
    ] {
        let mut next = || 1;
        let p = plan(
            sql,
            &mut PlanContext {
                rules: &rules,
                params: &[],
                next_id: &mut next,
            },
        )
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(grouped_read(&p).is_none(), "{sql}:\n{}", p.render(&rules));
    }
}

/// A sorted GROUP BY with a LIMIT and no HAVING asks every shard for its first `offset + count`
/// groups only; shards that honour that LIMIT (here: canned shards holding more groups, cut as a
/// server would) still give every partial of the groups the LIMIT keeps.
#[test]
fn sorted_group_by_limit_pushed_to_the_shards_keeps_the_first_groups_whole() {
    let rules = golden::rules();
    let cols = vec![int_col("day"), int_col("COUNT(*)"), int_col("MAX(amount)")];
    // Each unit's groups (day, count, max): spread so that most days sit on several units, with
    // gaps, and the first groups of one unit are not the first groups of the others.
    let groups_of = |u: i64| -> Vec<(i64, i64, i64)> {
        (0..20)
            .filter(|d| (d * 7 + u * 3) % 5 < 2 || (d + u) % 6 == 0)
            .map(|d| (d, d + u + 1, (d * u) % 13))
            .collect()
    };
    for (sql, desc, offset, count) in [
        (
            "SELECT day, COUNT(*), MAX(amount) FROM orders GROUP BY day ORDER BY day LIMIT 2, 3",
            false,
            2u64,
            3u64,
        ),
        (
            "SELECT day, COUNT(*), MAX(amount) FROM orders GROUP BY day ORDER BY day DESC LIMIT 4",
            true,
            0,
            4,
        ),
        (
            "SELECT day, COUNT(*), MAX(amount) FROM orders GROUP BY day LIMIT 5, 2",
            false,
            5,
            2,
        ),
    ] {
        let units = units_of(&rules, sql);
        let need = offset + count;
        assert_eq!(units.len(), 8, "{sql}");
        assert!(
            units.iter().all(|u| u.ends_with(&format!(" LIMIT {need}"))),
            "{sql}: {units:?}"
        );
        let mut answers = HashMap::new();
        let mut all: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
        for (i, unit) in units.iter().enumerate() {
            let mut g = groups_of(i as i64);
            for &(d, n, m) in &g {
                let e = all.entry(d).or_insert((0, i64::MIN));
                e.0 += n;
                e.1 = e.1.max(m);
            }
            if desc {
                g.reverse();
            }
            g.truncate(need as usize);
            let rows = g
                .into_iter()
                .map(|(d, n, m)| vec![Value::Int(d), Value::Int(n), Value::Int(m)])
                .collect();
            answers.insert(unit.clone(), (cols.clone(), rows));
        }
        let mut want: Vec<Vec<Value>> = all
            .into_iter()
            .map(|(d, (n, m))| vec![Value::Int(d), Value::Int(n), Value::Int(m)])
            .collect();
        if desc {
            want.reverse();
        }
        let want: Vec<Vec<Value>> = want
            .into_iter()
            .skip(offset as usize)
            .take(count as usize)
            .collect();
        assert_eq!(want.len(), count as usize, "{sql}: a weak case");
        let mut c = Canned::new(answers);
        let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(rows, want, "{sql}");
    }
    // HAVING decides which groups count, COUNT(DISTINCT) groups the shards by its argument too:
    // no LIMIT reaches the shards.
    for sql in [
        "SELECT day, COUNT(*) AS n FROM orders GROUP BY day HAVING n > 2 ORDER BY day LIMIT 3",
        "SELECT day, COUNT(DISTINCT user_id) FROM orders GROUP BY day ORDER BY day LIMIT 3",
    ] {
        let units = units_of(&rules, sql);
        assert!(
            !units.is_empty() && units.iter().all(|u| !u.contains("LIMIT")),
            "{sql}: {units:?}"
        );
    }
}

fn text_col(name: &str, collation: u16) -> ColumnDefinition {
    let flags = if collation == charset::BINARY || collation == charset::UTF8MB4_BIN {
        column_flag::BINARY
    } else {
        0
    };
    ColumnDefinition::new(name, column_type::VAR_STRING, collation, 80, flags, 0)
}

/// The same words, spelled differently, from three shards.
fn spellings(units: &[String], collation: u16) -> Canned {
    let s = |t: &str| Value::Bytes(Bytes::copy_from_slice(t.as_bytes()));
    let parts: [&[&str]; 3] = [
        &["café", "über", "ångström", "ß"],
        &["cafe", "uber", "angstrom", "ss"],
        &["CAFE ", "Über"],
    ];
    let cols = vec![text_col("note", collation)];
    let mut answers = HashMap::new();
    for (u, words) in units.iter().zip(parts) {
        let rows = words.iter().map(|w| vec![s(w)]).collect();
        answers.insert(u.clone(), (cols.clone(), rows));
    }
    Canned::new(answers)
}

#[test]
fn count_distinct_merges_values_by_the_column_collation() {
    let rules = golden::rules();
    let sql = "SELECT COUNT(DISTINCT status) FROM orders";
    let units = units_of(&rules, sql);
    assert!(units.len() >= 3, "{units:?}");
    // What MariaDB answers for these ten values in one table (checked against a server):
    // general_ci folds case, accents and trailing spaces but keeps ß = s apart from ss;
    // unicode_ci (UCA) also makes ß = ss; the _bin collations and binary keep all ten apart
    // ('CAFE ' stands for itself either way).
    for (collation, want) in [
        (charset::UTF8MB4_GENERAL_CI, 5),
        (charset::UTF8_GENERAL_CI, 5),
        (charset::UTF8MB4_UNICODE_CI, 4),
        (charset::UTF8MB4_BIN, 10),
        (charset::BINARY, 10),
    ] {
        let mut c = spellings(&units, collation);
        let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{collation}: {e}"));
        assert_eq!(rows, vec![vec![Value::Int(want)]], "collation {collation}");
    }
    // DISTINCT and GROUP BY group the same way.
    for (sql, collation, want) in [
        (
            "SELECT DISTINCT status FROM orders",
            charset::UTF8MB4_GENERAL_CI,
            5,
        ),
        (
            "SELECT DISTINCT status FROM orders",
            charset::UTF8MB4_UNICODE_CI,
            4,
        ),
        (
            "SELECT status FROM orders GROUP BY status",
            charset::UTF8MB4_GENERAL_CI,
            5,
        ),
        (
            "SELECT status FROM orders GROUP BY status",
            charset::UTF8MB4_BIN,
            10,
        ),
    ] {
        let units = units_of(&rules, sql);
        // The shards sort their groups: canned streams in the collation's order.
        let mut c = spellings(&units, collation);
        for (cols, rows) in c.answers.values_mut() {
            let coll = codec::mysql::Collation::of_column(&cols[0]).unwrap();
            rows.sort_by(|a, b| match (&a[0], &b[0]) {
                (Value::Bytes(x), Value::Bytes(y)) => coll.compare(x, y),
                _ => std::cmp::Ordering::Equal,
            });
            rows.dedup_by(|a, b| match (&a[0], &b[0]) {
                (Value::Bytes(x), Value::Bytes(y)) => coll.equal(x, y),
                _ => false,
            });
        }
        let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(rows.len(), want, "{sql} under {collation}: {rows:?}");
    }
}

#[test]
fn merges_follow_the_collation_the_shards_report_not_the_result_collation() {
    let rules = golden::rules();
    let s = |t: &str| Value::Bytes(Bytes::copy_from_slice(t.as_bytes()));
    // The definitions say utf8mb4_general_ci (the connection's result collation); the helper
    // columns say what the column compares by.
    let sql = "SELECT COUNT(DISTINCT status) FROM orders";
    let units = units_of(&rules, sql);
    for (report, want) in [("utf8mb4_bin", 10), ("utf8mb4_unicode_ci", 4)] {
        let mut c = spellings(&units, charset::UTF8MB4_GENERAL_CI);
        c.report = Some(report);
        let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{report}: {e}"));
        assert_eq!(rows, vec![vec![Value::Int(want)]], "{report}");
    }
    let sql = "SELECT status FROM orders ORDER BY status";
    let units = units_of(&rules, sql);
    let cols = vec![text_col("status", charset::UTF8MB4_GENERAL_CI)];
    let mut answers = HashMap::new();
    answers.insert(units[0].clone(), (cols.clone(), vec![vec![s("Zebra")]]));
    answers.insert(units[1].clone(), (cols.clone(), vec![vec![s("apple")]]));
    let mut c = Canned::new(answers.clone());
    c.report = Some("utf8mb4_bin");
    let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows, vec![vec![s("Zebra")], vec![s("apple")]]);
    // The client still sees the result collation.
    let mut c = Canned::new(answers.clone());
    c.report = Some("utf8mb4_bin");
    let mut cx = PlanContext {
        rules: &rules,
        params: &[],
        next_id: &mut || 1,
    };
    let p = plan(sql, &mut cx).unwrap_or_else(|e| panic!("{e}"));
    c.learn(&p);
    let Ok(Output::Rows(r)) = execute(&p, &mut c, ExecLimits { max_rows: 100 }) else {
        panic!("rows expected");
    };
    assert_eq!(r.columns().len(), 1);
    assert_eq!(r.columns()[0].charset, charset::UTF8MB4_GENERAL_CI);
    let mut c = Canned::new(answers);
    c.report = Some("utf8mb4_uca1400_ai_ci");
    match run(&rules, sql, &mut c) {
        Err(e @ ShardError::Unsupported(_)) => {
            assert!(e.to_string().contains("utf8mb4_uca1400_ai_ci"), "{e}");
            assert_eq!(e.mysql_code().0, 1235);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn min_max_and_order_by_follow_the_column_collation() {
    let rules = golden::rules();
    let s = |t: &str| Value::Bytes(Bytes::copy_from_slice(t.as_bytes()));
    let sql = "SELECT MIN(status), MAX(status) FROM orders";
    let units = units_of(&rules, sql);
    for (collation, min, max) in [
        (charset::UTF8MB4_GENERAL_CI, "apple", "Zebra"),
        (charset::UTF8MB4_BIN, "Zebra", "über"),
        (charset::LATIN1_SWEDISH_CI, "apple", "Zebra"),
    ] {
        let cols = vec![
            text_col("MIN(status)", collation),
            text_col("MAX(status)", collation),
        ];
        let mut answers = HashMap::new();
        answers.insert(
            units[0].clone(),
            (cols.clone(), vec![vec![s("apple"), s("Zebra")]]),
        );
        let ub = if collation == charset::LATIN1_SWEDISH_CI {
            "ub"
        } else {
            "über"
        };
        answers.insert(units[1].clone(), (cols.clone(), vec![vec![s(ub), s(ub)]]));
        answers.insert(
            units[2].clone(),
            (cols.clone(), vec![vec![s("Zebra"), s("apple")]]),
        );
        let mut c = Canned::new(answers);
        let rows = run(&rules, sql, &mut c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows, vec![vec![s(min), s(max)]], "collation {collation}");
    }
}

#[test]
fn merges_over_an_unknown_collation_are_refused() {
    let rules = golden::rules();
    let s = |t: &str| Value::Bytes(Bytes::copy_from_slice(t.as_bytes()));
    // utf8mb4_0900_ai_ci (MySQL 8): the proxy cannot compare as it does, so it does not try.
    for sql in [
        "SELECT COUNT(DISTINCT status) FROM orders",
        "SELECT DISTINCT status FROM orders",
        "SELECT status, COUNT(*) FROM orders GROUP BY status",
        "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY COUNT(*)",
        "SELECT status FROM orders ORDER BY status",
        "SELECT MIN(status), MAX(status) FROM orders",
    ] {
        let units = units_of(&rules, sql);
        let width = if sql.contains("COUNT(*)") || sql.contains("MAX") {
            2
        } else {
            1
        };
        let mut cols = vec![text_col("status", charset::UTF8MB4_0900_AI_CI)];
        if width == 2 {
            cols.push(if sql.contains("MAX") {
                text_col("MAX(status)", charset::UTF8MB4_0900_AI_CI)
            } else {
                int_col("COUNT(*)")
            });
        }
        let row = |t: &str| {
            let mut r = vec![s(t)];
            if width == 2 {
                r.push(if sql.contains("MAX") {
                    s(t)
                } else {
                    Value::Int(1)
                });
            }
            r
        };
        let mut answers = HashMap::new();
        answers.insert(units[0].clone(), (cols.clone(), vec![row("cafe")]));
        answers.insert(units[1].clone(), (cols.clone(), vec![row("café")]));
        let mut c = Canned::new(answers);
        match run(&rules, sql, &mut c) {
            Err(ShardError::Unsupported(m)) => {
                assert!(m.contains("utf8mb4_0900_ai_ci"), "{sql}: {m}")
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    // Numbers carry the binary charset: no collation involved.
    let sql = "SELECT DISTINCT user_id FROM orders";
    let units = units_of(&rules, sql);
    let mut c = many_groups(&units, vec![int_col("user_id")]);
    assert!(run(&rules, sql, &mut c).is_ok());
}
