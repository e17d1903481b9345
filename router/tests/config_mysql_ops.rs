//! The MySQL operations keys of `[mysql_groups.NAME]`: result cap, slow log, audit log, circuit
//! breaking, rules mode and `[[mysql_groups.NAME.rules]]` — one test per key, defaults included.

use std::time::Duration;

use router::config::{self, RuleAction, RulePer, RulesMode};

fn base(extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"m\"\nkind = \"mysql\"\naddress = \"127.0.0.1:3400\"\ngroup = \"main\"\n\n\
         [mysql_groups.main]\nuser = \"u\"\nprimary = {{ address = \"127.0.0.1:3307\" }}\n{extra}\n"
    )
}

fn group(extra: &str) -> config::MysqlGroup {
    let c = config::parse("t.toml", &base(extra)).unwrap_or_else(|e| panic!("{e}"));
    c.mysql_group("main").cloned().expect("group")
}

fn error(extra: &str) -> String {
    match config::parse("t.toml", &base(extra)) {
        Ok(_) => panic!("unexpectedly valid: {extra}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults() {
    let g = group("");
    assert_eq!(g.max_result_bytes, None);
    assert_eq!(g.slow_query, Duration::from_secs(1));
    assert_eq!(g.audit_log, None);
    assert_eq!(g.circuit_break_after, 5);
    assert_eq!(g.circuit_open, Duration::from_secs(5));
    assert_eq!(g.rules_mode, RulesMode::Denylist);
    assert!(g.rules.is_empty());
}

#[test]
fn max_result_bytes() {
    assert_eq!(
        group("max_result_bytes = 1048576").max_result_bytes,
        Some(1_048_576)
    );
    assert_eq!(group("max_result_bytes = 0").max_result_bytes, None);
    assert!(error("max_result_bytes = -1").contains("max_result_bytes"));
}

#[test]
fn slow_query_ms() {
    assert_eq!(
        group("slow_query_ms = 250").slow_query,
        Duration::from_millis(250)
    );
    assert!(error("slow_query_ms = \"x\"").contains("slow_query_ms"));
}

#[test]
fn audit_log() {
    assert_eq!(
        group("audit_log = \"/tmp/a.log\"").audit_log.as_deref(),
        Some("/tmp/a.log")
    );
}

#[test]
fn circuit_breaking() {
    let g = group("circuit_break_after = 2\ncircuit_open_ms = 750");
    assert_eq!(g.circuit_break_after, 2);
    assert_eq!(g.circuit_open, Duration::from_millis(750));
    assert!(error("circuit_break_after = 0").contains("circuit_break_after"));
}

#[test]
fn rules_mode() {
    assert_eq!(
        group("rules_mode = \"allowlist\"").rules_mode,
        RulesMode::Allowlist
    );
    assert!(error("rules_mode = \"maybe\"").contains("denylist, allowlist"));
}

#[test]
fn rules() {
    let g = group(
        "[[mysql_groups.main.rules]]\nmatch = \"DELETE FROM * WHERE ?\"\naction = \"deny\"\nmessage = \"no\"\n\
         [[mysql_groups.main.rules]]\nmatch = \"SELECT *\"\naction = \"limit\"\nqps = 10\nconcurrency = 2\nper = \"user\"\nusers = [\"app\"]\n\
         [[mysql_groups.main.rules]]\nmatch = \"digest:00112233aabbccdd\"\naction = \"allow\"\n",
    );
    assert_eq!(g.rules.len(), 3);
    assert_eq!(g.rules[0].action, RuleAction::Deny);
    assert_eq!(g.rules[0].message.as_deref(), Some("no"));
    assert_eq!(g.rules[1].action, RuleAction::Limit);
    assert_eq!(
        (g.rules[1].qps, g.rules[1].concurrency),
        (Some(10), Some(2))
    );
    assert_eq!(g.rules[1].per, RulePer::User);
    assert_eq!(g.rules[1].users, ["app"]);
    assert_eq!(g.rules[2].pattern, "digest:00112233aabbccdd");
    assert_eq!(g.rules[2].per, RulePer::Rule);
    assert!(
        error("[[mysql_groups.main.rules]]\nmatch = \"x\"\naction = \"limit\"\n")
            .contains("needs `qps` and/or `concurrency`")
    );
    assert!(
        error("[[mysql_groups.main.rules]]\nmatch = \"digest:zz\"\naction = \"deny\"\n")
            .contains("16 hex digits")
    );
    assert!(
        error("[[mysql_groups.main.rules]]\nmatch = \"x\"\naction = \"drop\"\n")
            .contains("deny, allow, limit")
    );
    assert!(error("[[mysql_groups.main.rules]]\naction = \"deny\"\n").contains("match"));
}

#[test]
fn read_your_writes_mode() {
    // On by default (issue 15 item 0): by GTID, with a window of max_replica_lag as the fallback.
    let g = group("");
    assert!(g.read_your_writes_gtid);
    assert_eq!(g.read_your_writes, g.max_replica_lag);
    assert!(!group("read_your_writes_mode = \"time\"").read_your_writes_gtid);
    assert!(group("read_your_writes_mode = \"gtid\"").read_your_writes_gtid);
    let off = group("read_your_writes_mode = \"off\"\nread_your_writes_ms = 500");
    assert!(!off.read_your_writes_gtid);
    assert!(off.read_your_writes.is_zero());
    assert_eq!(
        group("read_your_writes_ms = 250").read_your_writes,
        std::time::Duration::from_millis(250)
    );
    assert!(error("read_your_writes_mode = \"both\"").contains("gtid, time, off"));
}
