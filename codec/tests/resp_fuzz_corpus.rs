//! Replays the RESP fuzz corpora (`fuzz/corpus/resp_*`) and the golden reply fixtures, whole and
//! truncated at every length, through the fuzz entry points, so CI exercises them without
//! cargo-fuzz.

use std::path::Path;

use codec::resp::fuzzing;

type Target = fn(&[u8]) -> Result<(), fuzzing::Violation>;

const TARGETS: [(&str, Target); 3] = [
    ("resp_command", fuzzing::command),
    ("resp_reply_scanner", fuzzing::reply_scanner),
    ("resp_frame", fuzzing::frame),
];

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = 0;
    for (name, _) in TARGETS {
        for path in files_in(&root.join(name)) {
            let data = std::fs::read(&path).unwrap();
            // Every target on every seed: a reply seed is also a hostile command stream.
            run_all(&data, &path.display().to_string());
            replayed += 1;
        }
    }
    assert!(replayed >= 20, "only {replayed} corpus files");
}

#[test]
fn fixtures_and_their_prefixes_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resp");
    for proto in ["resp2", "resp3"] {
        for path in files_in(&root.join(proto)) {
            let data = std::fs::read(&path).unwrap();
            for end in 0..=data.len().min(300) {
                run_all(&data[..end], &format!("{} [..{end}]", path.display()));
            }
        }
    }
}
