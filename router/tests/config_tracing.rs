//! The `[tracing]` section: defaults, every key read, and bad values reported with line and key path.

use router::config;
use std::time::Duration;

const BASE: &str = r#"
[[listeners]]
name = "cache"
kind = "redis"
address = "127.0.0.1:16400"
group = "c"

[redis_groups.c]
servers = [{ name = "r1", address = "127.0.0.1:16401" }]
"#;

#[test]
fn absent_or_disabled_tracing_is_none_and_defaults_apply() {
    let c = config::parse("t.toml", BASE).unwrap();
    assert_eq!(c.tracing(), None);
    let off = format!("{BASE}\n[tracing]\nenabled = false\nendpoint = \"http://127.0.0.1:7070\"\n");
    assert_eq!(config::parse("t.toml", &off).unwrap().tracing(), None);
    let on = format!("{BASE}\n[tracing]\nendpoint = \"http://127.0.0.1:7070/\"\n");
    let t = config::parse("t.toml", &on).unwrap().tracing().unwrap();
    assert_eq!(t.endpoint, "http://127.0.0.1:7070");
    assert_eq!(
        (t.head_sample_percent, t.slow),
        (1, Duration::from_millis(100))
    );
    assert_eq!(
        (t.service_name.as_str(), t.queue_spans, t.batch_spans),
        ("furrow-proxy", 16_384, 4096)
    );
}

#[test]
fn every_key_is_read() {
    let src = format!(
        "{BASE}\n[tracing]\nendpoint = \"http://127.0.0.1:7070\"\ntoken = \"fw_x\"\nservice_name = \"edge\"\n\
         head_sample_percent = 100\nslow_ms = 5\nqueue_spans = 10\nbatch_spans = 2\nflush_ms = 50\n"
    );
    let t = config::parse("t.toml", &src).unwrap().tracing().unwrap();
    assert_eq!(t.token.as_deref(), Some("fw_x"));
    assert_eq!(t.service_name, "edge");
    assert_eq!(t.head_sample_percent, 100);
    assert_eq!(t.slow, Duration::from_millis(5));
    assert_eq!(
        (t.queue_spans, t.batch_spans, t.flush),
        (10, 2, Duration::from_millis(50))
    );
}

#[test]
fn bad_values_are_reported_with_positions() {
    let src = format!(
        "{BASE}\n[tracing]\nendpoint = \"https://x:1\"\nhead_sample_percent = 101\nsampel = 1\n"
    );
    let e = config::parse("t.toml", &src).unwrap_err().to_string();
    assert!(
        e.contains("tracing.endpoint") && e.contains("http://HOST:PORT"),
        "{e}"
    );
    assert!(
        e.contains("tracing.head_sample_percent") && e.contains("0 to 100"),
        "{e}"
    );
    assert!(e.contains("sampel"), "{e}");
    let line = BASE.lines().count() + 3;
    assert!(
        e.contains(&format!("t.toml:{line}:")),
        "endpoint on line {line}: {e}"
    );
    let missing = format!("{BASE}\n[tracing]\nslow_ms = 1\n");
    let e = config::parse("t.toml", &missing).unwrap_err().to_string();
    assert!(e.contains("missing required key `endpoint`"), "{e}");
}
