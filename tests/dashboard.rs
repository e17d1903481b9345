//! The Grafana dashboard shipped in `docs/grafana/furrow.json` is valid JSON and every `furrow_*`
//! metric its queries use is one that a Furrow process exports (named in the sources that render
//! `/metrics`), so a renamed metric breaks this test instead of a panel.

use std::path::Path;

fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("furrow_") {
        let start = i + at;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end] == b'_' || b[end].is_ascii_digit())
        {
            end += 1;
        }
        out.push(text[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/grafana/furrow.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut sources = String::new();
    for f in [
        "src/metrics.rs",
        "control/src/trace/mod.rs",
        "control/src/process.rs",
        "control/src/api.rs",
    ] {
        sources.push_str(&std::fs::read_to_string(root.join(f)).unwrap());
    }
    let exported: std::collections::HashSet<String> = metric_names(&sources).into_iter().collect();
    let mut used = 0;
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            for m in metric_names(t["expr"].as_str().unwrap()) {
                used += 1;
                assert!(
                    exported.contains(&m),
                    "panel {:?} uses {m}, which no process exports",
                    p["title"]
                );
            }
        }
    }
    assert!(used >= 20, "{used} metric references");
}
