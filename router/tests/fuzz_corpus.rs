//! Replays the router fuzz corpora (`fuzz/corpus/router_*`) through the same invariants the
//! cargo-fuzz targets check (`fuzz/fuzz_targets/router_invariants.rs`), plus the config examples,
//! the config fixtures and the golden SQL cases, so CI exercises them without cargo-fuzz.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/fuzz_targets/router_invariants.rs"]
mod invariants;

type Target = fn(&[u8]) -> Result<(), invariants::Violation>;

const TARGETS: [(&str, Target); 4] = [
    ("router_config", invariants::config),
    ("router_sql_classify", invariants::sql_classify),
    ("router_sql_plan", invariants::sql_plan),
    ("router_redis_keys", invariants::redis_keys),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_all(data: &[u8], origin: &str) {
    for (name, target) in TARGETS {
        if let Err(v) = target(data) {
            panic!("{name} on {origin}: {v}");
        }
    }
}

#[test]
fn corpus_replays_cleanly() {
    let root = repo().join("fuzz/corpus");
    for (name, _) in TARGETS {
        let files = files_in(&root.join(name));
        assert!(files.len() >= 5, "{name}: only {} seeds", files.len());
        for path in files {
            // Every target on every seed: SQL is hostile TOML, TOML a hostile argv, and so on.
            run_all(&read(&path), &path.display().to_string());
        }
    }
}

#[test]
fn config_seeds_keep_their_verdicts() {
    // The seeds named valid must stay valid, so the fuzzer starts from inputs that reach validation.
    let root = repo().join("fuzz/corpus/router_config");
    for name in ["example_furrow", "sharding_fixture", "slots_group"] {
        let path = root.join(name);
        let text = String::from_utf8(read(&path)).unwrap_or_default();
        if let Err(e) = router::config::parse(name, &text) {
            panic!("{}: {e}", path.display());
        }
    }
    for name in ["several_problems", "syntax_errors", "crlf"] {
        let text = String::from_utf8(read(&root.join(name))).unwrap_or_default();
        let err = router::config::parse(name, &text).err();
        let err = err.unwrap_or_else(|| panic!("{name} parsed as valid"));
        if let Err(v) = invariants::problems_located(&err, &text) {
            panic!("{name}: {v}");
        }
    }
}

#[test]
fn examples_and_fixtures_replay_with_every_prefix() {
    let mut sources: Vec<PathBuf> = files_in(&repo().join("examples"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    sources.push(repo().join("router/tests/fixtures/sql/sharding.toml"));
    for path in sources {
        let text = String::from_utf8(read(&path)).unwrap_or_default();
        assert!(!text.is_empty(), "{}", path.display());
        // Truncating a valid file anywhere (on a character boundary) gives located problems or a
        // valid prefix, never a panic.
        let step = (text.len() / 200).max(1);
        for end in (0..=text.len()).step_by(step) {
            if let Some(prefix) = text.get(..end)
                && let Err(v) = invariants::config(prefix.as_bytes())
            {
                panic!("{} [..{end}]: {v}", path.display());
            }
        }
    }
}

#[test]
fn golden_sql_cases_replay_through_classify_and_plan() {
    let path = repo().join("router/tests/fixtures/sql/plan/cases.sql");
    let text = String::from_utf8(read(&path)).unwrap_or_default();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        for end in 0..=line.len() {
            let Some(prefix) = line.get(..end) else {
                continue;
            };
            if let Err(v) = invariants::sql_classify(prefix.as_bytes()) {
                panic!("classify {prefix:?}: {v}");
            }
            if let Err(v) = invariants::sql_plan(prefix.as_bytes()) {
                panic!("plan {prefix:?}: {v}");
            }
        }
        n += 1;
    }
    assert!(n >= 20, "only {n} cases");
}
