//! `[sharding.NAME]` config: keys are read, references and rule errors are reported with paths.

fn base(extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "db"
kind = "mysql"
address = "127.0.0.1:6033"
group = "a"

[mysql_groups.a]
user = "u"
primary = {{ address = "127.0.0.1:3307" }}

[sharding.app]
listener = "db"
shards = [ {{ name = "s0", group = "a", schema = "app_0" }}, {{ name = "s1", group = "a", schema = "app_1" }} ]
{extra}
"#
    )
}

fn errors(extra: &str) -> String {
    match router::config::parse("t.toml", &base(extra)) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_key_is_read() {
    let cfg = router::config::parse(
        "t.toml",
        &base(
            r#"default_shard = "s1"
max_scatter_rows = 500
max_limit_rows = 50
worker_id = 9
broadcast = ["countries"]
[[sharding.app.tables]]
name = "orders"
key = "user_id"
algorithm = "range"
physical = "orders_{0..2}"
boundaries = ["10", "20"]
auto_id = "id"
"#,
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s = cfg.sharding();
    let rules = router::sql::shard::ShardingRules::compile(&s[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rules.default_shard, 1);
    assert_eq!(
        (
            rules.max_scatter_rows,
            rules.max_limit_rows,
            rules.worker_id
        ),
        (500, 50, 9)
    );
    assert_eq!(rules.broadcast, vec!["countries".to_string()]);
    assert_eq!(rules.tables[0].physical.len(), 3);
    assert_eq!(rules.tables[0].auto_id.as_deref(), Some("id"));
    assert!(!rules.xa, "XA is off unless asked for");
    let cfg = router::config::parse("t.toml", &base("xa = true\nworker_id = 1"))
        .unwrap_or_else(|e| panic!("{e}"));
    let rules = router::sql::shard::ShardingRules::compile(&cfg.sharding()[0])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rules.xa);
}

#[test]
fn problems_are_reported() {
    assert!(errors("default_shard = \"s9\"").contains("`s9` is not one of the shards"));
    let e = errors(
        "[[sharding.app.tables]]\nname = \"t\"\nkey = \"k\"\nalgorithm = \"range\"\nboundaries = [\"1\", \"2\"]",
    );
    assert!(e.contains("2 boundaries make 3 partitions"), "{e}");
    let e = errors("[[sharding.app.tables]]\nname = \"t\"\nkey = \"k\"\nalgorithm = \"modulo\"");
    assert!(e.contains("algorithm"), "{e}");
    let e = errors(
        "[[sharding.app.tables]]\nname = \"t\"\nkey = \"k\"\nalgorithm = \"hash\"\nphysical = \"t_{9..1}\"",
    );
    assert!(e.contains("invalid physical pattern"), "{e}");
    let e = errors(
        "broadcast = [\"t\"]\n[[sharding.app.tables]]\nname = \"t\"\nkey = \"k\"\nalgorithm = \"hash\"",
    );
    assert!(e.contains("both sharded and broadcast"), "{e}");
    assert!(errors("worker_id = 5000").contains("worker_id"));
    let e = errors("xa = true");
    assert!(
        e.contains("`xa = true` needs an explicit `worker_id`"),
        "{e}"
    );
    assert!(errors("xa = \"yes\"").contains("xa"));
    assert!(errors("colour = 1").contains("unknown key `colour`"));
    let e = router::config::parse(
        "t.toml",
        &base("").replace(
            "group = \"a\", schema = \"app_1\"",
            "group = \"zz\", schema = \"app_1\"",
        ),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("unknown mysql group `zz`"), "{e}");
}

#[test]
fn reshard_marks_are_checked() {
    let two = |first_extra: &str| {
        format!(
            "[[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_{{0..3}}\"\n{first_extra}\n\
             [[sharding.app.tables]]\nname = \"orders_v2\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_v2_{{0..7}}\"\n"
        )
    };
    assert_eq!(
        errors(&two("reshard_to = \"orders_v2\"\nreshard_phase = \"copy\"")),
        ""
    );
    let e = errors(&two("reshard_to = \"nope\"\nreshard_phase = \"copy\""));
    assert!(
        e.contains("sharding.app.tables[0].reshard_to") && e.contains("`nope` is not a table rule"),
        "{e}"
    );
    let e = errors(&two("reshard_to = \"orders_v2\""));
    assert!(e.contains("needs `reshard_phase`"), "{e}");
    let e = errors(&two("reshard_phase = \"copy\""));
    assert!(e.contains("without `reshard_to`"), "{e}");
    let e = errors(&two(
        "reshard_to = \"orders_v2\"\nreshard_phase = \"later\"",
    ));
    assert!(e.contains("reshard_phase"), "{e}");
    let e = errors(&two("reshard_to = \"orders\"\nreshard_phase = \"copy\""));
    assert!(e.contains("cannot reshard to itself"), "{e}");
    // The new layout on the old layout's tables: refused where the file says so.
    let e = errors(
        &two("reshard_to = \"orders_v2\"\nreshard_phase = \"copy\"")
            .replace("orders_v2_{0..7}", "orders_{0..7}"),
    );
    assert!(
        e.contains("reshard_to") && e.contains("tables of its own"),
        "{e}"
    );
}
