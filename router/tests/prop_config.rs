//! Property tests for `router::config::parse`: it never panics, every problem it reports is located
//! inside the input, it is deterministic, and valid configs survive edits that TOML ignores.

use proptest::prelude::*;

#[path = "../../fuzz/fuzz_targets/router_invariants.rs"]
mod invariants;

const EXAMPLE: &str = include_str!("../../examples/furrow.toml");

fn check(source: &str) {
    if let Err(v) = invariants::config(source.as_bytes()) {
        panic!("{v}\ninput: {source:?}");
    }
}

/// Pieces of TOML, valid and not, that config files are made of.
fn toml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[proxy]\n".to_string()),
        Just("[[listeners]]\n".to_string()),
        Just("[redis_groups.g]\n".to_string()),
        Just("[mysql_groups.m]\n".to_string()),
        Just("[sharding.app]\n".to_string()),
        Just("[[sharding.app.tables]]\n".to_string()),
        Just("executors = 2\n".to_string()),
        Just("name = \"a\"\n".to_string()),
        Just("kind = \"redis\"\n".to_string()),
        Just("address = \"127.0.0.1:0\"\n".to_string()),
        Just("group = \"g\"\n".to_string()),
        Just("servers = [ { address = \"127.0.0.1:7001\" } ]\n".to_string()),
        Just("distribution = \"ketama\"\n".to_string()),
        Just("\"\"\"\n".to_string()),
        Just("'''".to_string()),
        Just("= =".to_string()),
        Just("[".to_string()),
        Just("]]".to_string()),
        Just("{ a = { b = [ 1, 2".to_string()),
        Just("# comment\n".to_string()),
        Just("\\u00e9\\".to_string()),
        Just("\r\n".to_string()),
        Just("\t".to_string()),
        "[a-z_.]{1,12}".prop_map(|k| format!("{k} = ")),
        "-?[0-9]{1,20}".prop_map(|n| format!("{n}\n")),
        "\\PC{0,12}".prop_map(|s| format!("\"{s}\"\n")),
        "\\PC{0,8}",
    ]
}

/// A config's lines with a comment line or a blank line inserted before some of them.
fn with_comments(source: &str, at: &[(usize, bool)]) -> String {
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let mut out = String::with_capacity(source.len() + at.len() * 16);
    for (n, line) in lines.iter().enumerate() {
        for &(where_, blank) in at {
            if where_ % (lines.len() + 1) == n {
                out.push_str(if blank {
                    "   \n"
                } else {
                    "# inserted comment\n"
                });
            }
        }
        out.push_str(line);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(source in "\\PC{0,300}") {
        check(&source);
    }

    #[test]
    fn toml_soup_never_panics_and_problems_are_located(pieces in prop::collection::vec(toml_piece(), 0..40)) {
        check(&pieces.concat());
    }

    #[test]
    fn edited_example_never_panics(
        start in 0usize..4096,
        cut in 0usize..64,
        insert in prop::collection::vec(toml_piece(), 0..4),
    ) {
        let start = start % (EXAMPLE.len() + 1);
        let end = (start + cut).min(EXAMPLE.len());
        if let (Some(head), Some(tail)) = (EXAMPLE.get(..start), EXAMPLE.get(end..)) {
            check(&format!("{head}{}{tail}", insert.concat()));
        }
    }

    #[test]
    fn comment_and_blank_lines_keep_a_valid_config_valid(
        at in prop::collection::vec((0usize..1000, any::<bool>()), 0..12),
    ) {
        let edited = with_comments(EXAMPLE, &at);
        match router::config::parse("edited.toml", &edited) {
            Ok(cfg) => prop_assert_eq!(cfg.source, edited),
            Err(e) => prop_assert!(false, "{e}\n{edited}"),
        }
    }

    #[test]
    fn an_error_on_one_line_is_reported_on_that_line(line in 0usize..1000) {
        // Break exactly one line of the valid example; the first problem must be on it.
        let lines: Vec<&str> = EXAMPLE.split_inclusive('\n').collect();
        let n = line % lines.len();
        let mut broken = String::new();
        for (i, l) in lines.iter().enumerate() {
            if i == n {
                broken.push_str("= broken\n");
            }
            broken.push_str(l);
        }
        let err = router::config::parse("b.toml", &broken).err();
        prop_assert!(err.is_some(), "a line `= broken` was accepted");
        if let Some(err) = err {
            prop_assert!(invariants::problems_located(&err, &broken).is_ok());
            prop_assert_eq!(err.problems[0].line, n + 1, "{}", err);
        }
    }
}

#[test]
fn whole_file_errors_have_line_zero_and_render() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("absent.toml");
    let err = router::config::load(&missing).err();
    let err = err.unwrap_or_else(|| panic!("loading a missing file succeeded"));
    assert_eq!(err.problems.len(), 1);
    assert_eq!((err.problems[0].line, err.problems[0].column), (0, 0));
    assert!(invariants::problems_located(&err, "").is_ok());
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn deeply_nested_toml_is_an_error_or_a_config_never_a_crash() {
    // Run at the stack size of a data-path thread.
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            for depth in [100usize, 1000, 10_000] {
                check(&format!(
                    "x = {}1{}\n",
                    "[".repeat(depth),
                    "]".repeat(depth)
                ));
                check(&format!("x = {}\n", "{ a = ".repeat(depth)));
                check(&format!("{}\n", "[".repeat(depth)));
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = handle.join() {
        std::panic::resume_unwind(e);
    }
}
