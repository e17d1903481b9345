//! Invariants of the router's parsers, checked by the `router_*` fuzz targets and, through
//! `#[path]`, by `router/tests/fuzz_corpus.rs` and `router/tests/prop_*.rs`: one definition of
//! "correct" for libFuzzer, the corpus replay and the property tests.
//!
//! Each entry point takes raw fuzz bytes, never panics on its own, and returns a description of the
//! first broken invariant. A panic inside the router is a bug the caller reports as such.

#![allow(dead_code)] // Each includer uses a subset.

use std::sync::OnceLock;

use router::config::ConfigError;
use router::redis::{KeyPositions, Resolved, key_slot, keys_of, lookup, resolve};
use router::sql::plan::{PlanContext, plan};
use router::sql::shard::ShardingRules;
use router::sql::{classify, digest};

/// A broken invariant, in words.
pub type Violation = String;

/// The sharding rules the planner target plans against (the golden tests' fixture).
pub const SHARDING_TOML: &str = include_str!("../../router/tests/fixtures/sql/sharding.toml");

/// Compiled [`SHARDING_TOML`], built once.
pub fn sharding_rules() -> &'static ShardingRules {
    static RULES: OnceLock<ShardingRules> = OnceLock::new();
    RULES.get_or_init(|| {
        let cfg = router::config::parse("sharding.toml", SHARDING_TOML)
            .unwrap_or_else(|e| panic!("fixture sharding.toml: {e}"));
        let sections = cfg.sharding();
        let first = sections
            .first()
            .unwrap_or_else(|| panic!("no [sharding] section"));
        ShardingRules::compile(first).unwrap_or_else(|e| panic!("fixture sharding rules: {e}"))
    })
}

/// Checks that every problem of `err` is located inside `source` (or is a whole-file problem).
pub fn problems_located(err: &ConfigError, source: &str) -> Result<(), Violation> {
    if err.problems.is_empty() {
        return Err("ConfigError with no problems".into());
    }
    let lines: Vec<&str> = source.split('\n').collect();
    for p in &err.problems {
        if p.line == 0 {
            if p.column != 0 {
                return Err(format!(
                    "whole-file problem with column {}: {p:?}",
                    p.column
                ));
            }
            continue;
        }
        let Some(line) = lines.get(p.line - 1) else {
            return Err(format!(
                "problem on line {} of a {}-line input: {p:?}",
                p.line,
                lines.len()
            ));
        };
        let width = line.chars().count();
        if p.column == 0 || p.column > width + 1 {
            return Err(format!(
                "problem at column {} of a {width}-character line {}: {p:?}",
                p.column, p.line
            ));
        }
        if p.message.is_empty() {
            return Err(format!("problem without a message: {p:?}"));
        }
    }
    // Rendering must not panic and must name the file.
    let shown = err.to_string();
    if !shown.contains(&err.file) {
        return Err(format!("rendered error does not name the file: {shown}"));
    }
    Ok(())
}

/// `router::config::parse`: no panic, located problems, deterministic, valid sources re-parse.
pub fn config(data: &[u8]) -> Result<(), Violation> {
    let Ok(source) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let first = router::config::parse("fuzz.toml", source);
    let second = router::config::parse("fuzz.toml", source);
    match (&first, &second) {
        (Err(a), Err(b)) => {
            if a.problems != b.problems {
                return Err(format!(
                    "parse is not deterministic:\n{:?}\nthen\n{:?}",
                    a.problems, b.problems
                ));
            }
            problems_located(a, source)
        }
        (Ok(a), Ok(_)) => {
            if a.source != source {
                return Err("Config::source differs from the input".into());
            }
            match router::config::parse("again.toml", &a.source) {
                Ok(_) => {}
                Err(e) => return Err(format!("a valid config's source no longer parses: {e}")),
            }
            // The sharding sections are re-read from the source; that must not panic either.
            let _ = a.sharding();
            Ok(())
        }
        _ => Err("parse is not deterministic: Ok once, Err once".into()),
    }
}

/// Statement kind and digest of `sql`, for comparisons.
fn shape(sql: &str) -> (router::sql::Classified, router::sql::Digest) {
    (classify(sql), digest(sql))
}

/// `classify` and `digest`: no panic, deterministic, bounded fingerprint, insensitive to
/// surrounding whitespace and comments.
pub fn sql_classify(data: &[u8]) -> Result<(), Violation> {
    let sql = String::from_utf8_lossy(data);
    let (c, d) = shape(&sql);
    let (c2, d2) = shape(&sql);
    if c != c2 || d != d2 {
        return Err(format!("not deterministic: {c:?} / {c2:?}, {d:?} / {d2:?}"));
    }
    if d.text.len() > router::sql::digest::MAX_FINGERPRINT {
        return Err(format!("fingerprint of {} bytes", d.text.len()));
    }
    if c.flags & router::sql::classify::flags::MULTI != 0 && c.kind == router::sql::StmtKind::Empty
    {
        return Err("a multi-statement of kind Empty".into());
    }
    // Whitespace and a comment around the statement change nothing MySQL sees. A `--` or `#`
    // comment can be swallowed by an unterminated one inside, so only add block comments after
    // inputs that end cleanly.
    let wrapped = format!(" \n\t/* lead */ {sql}");
    let (cw, dw) = shape(&wrapped);
    if !ends_open(&sql) {
        if cw.kind != c.kind || cw.flags != c.flags {
            return Err(format!("leading comment changed {c:?} into {cw:?}"));
        }
        if dw != d {
            return Err(format!("leading comment changed digest {d:?} into {dw:?}"));
        }
        let trailing = format!("{sql} \n/* tail */\t");
        let (ct, dt) = shape(&trailing);
        if ct.kind != c.kind || ct.flags != c.flags || dt != d {
            return Err(format!(
                "trailing comment changed {c:?} {d:?} into {ct:?} {dt:?}"
            ));
        }
    }
    Ok(())
}

/// Whether `sql` ends inside a string, quoted identifier, comment or executable comment, or on a
/// character that glues onto what follows; then appending text may legitimately change its
/// meaning.
pub fn ends_open(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let mut j = i + 1;
                let mut open = true;
                while j < b.len() {
                    if b[j] == b'\\' && c != b'`' {
                        j += 2;
                        continue;
                    }
                    if b[j] == c {
                        if b.get(j + 1) == Some(&c) {
                            j += 2;
                            continue;
                        }
                        open = false;
                        break;
                    }
                    j += 1;
                }
                if open {
                    return true;
                }
                i = j + 1;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match find(b, i + 2, b"*/") {
                Some(end) => i = end + 2,
                None => return true,
            },
            b'#' => return true,
            b'-' if b.get(i + 1) == Some(&b'-') => return true,
            _ => i += 1,
        }
    }
    // `/*!` / `/*M!` executable comments, a trailing `/`, `*`, `-`, `@`, backslash or `x`/`b` prefix can
    // combine with an appended comment or space differently than with nothing.
    sql.contains("/*!")
        || sql.contains("/*M!")
        || sql.contains("*/")
        || matches!(
            b.last(),
            Some(
                b'/' | b'*' | b'-' | b'@' | b'\\' | b'.' | b'x' | b'X' | b'b' | b'B' | b'n' | b'N'
            )
        )
        || b.first().is_some_and(|c| matches!(c, b'*'))
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| p + from)
}

/// `plan` over the fixture rules: no panic, deterministic, every unit names an existing shard.
pub fn sql_plan(data: &[u8]) -> Result<(), Violation> {
    let sql = String::from_utf8_lossy(data);
    let rules = sharding_rules();
    let run = || {
        let mut ids = 0u64;
        let mut next_id = || {
            ids += 1;
            ids
        };
        let mut cx = PlanContext {
            rules,
            params: &[],
            next_id: &mut next_id,
        };
        plan(&sql, &mut cx)
    };
    let first = run();
    let second = run();
    if first != second {
        return Err(format!("plan is not deterministic: {first:?} / {second:?}"));
    }
    match first {
        Ok(p) => {
            let rendered = p.render(rules);
            let mut node = Some(&p);
            while let Some(n) = node {
                let units: &[router::sql::plan::Unit] = match n {
                    router::sql::plan::Plan::Route(r) => std::slice::from_ref(&r.unit),
                    router::sql::plan::Plan::Scatter(s) => &s.units,
                    router::sql::plan::Plan::MergeSort(m) => &m.input.units,
                    _ => &[],
                };
                for u in units {
                    if u.shard >= rules.shards.len() {
                        return Err(format!(
                            "unit on shard {} of {}",
                            u.shard,
                            rules.shards.len()
                        ));
                    }
                    if u.sql.trim().is_empty() {
                        return Err(format!("empty unit SQL:\n{rendered}"));
                    }
                }
                node = n.child();
            }
            Ok(())
        }
        Err(e) => {
            let _ = e.mysql_code();
            if e.to_string().is_empty() {
                return Err("an error without a message".into());
            }
            Ok(())
        }
    }
}

/// Splits fuzz bytes into arguments at `\0` (so a fuzzer can make any argv).
pub fn argv(data: &[u8]) -> Vec<&[u8]> {
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0).collect()
}

/// Key extraction: positions within argc and in order, lookup case-insensitive, slots in range.
pub fn redis_args(args: &[&[u8]]) -> Result<(), Violation> {
    let resolved = resolve(args);
    if let Some(name) = args.first() {
        let found = lookup(name);
        let upper = lookup(&name.to_ascii_uppercase());
        let lower = lookup(&name.to_ascii_lowercase());
        if found.map(|c| c.name) != upper.map(|c| c.name)
            || found.map(|c| c.name) != lower.map(|c| c.name)
        {
            return Err(format!(
                "lookup depends on case: {:?} {:?} {:?}",
                found.map(|c| c.name),
                upper.map(|c| c.name),
                lower.map(|c| c.name)
            ));
        }
        if let Some(info) = found
            && !info.name.as_bytes().eq_ignore_ascii_case(name)
        {
            return Err(format!("lookup({:?}) found {}", bstr(name), info.name));
        }
        if found.is_none() && !matches!(resolved, Resolved::UnknownCommand) {
            return Err(format!("resolve found what lookup did not: {resolved:?}"));
        }
    }
    let infos: Vec<_> = match resolved {
        Resolved::Command(info) => vec![info],
        Resolved::UnknownSubcommand(info) => vec![info],
        Resolved::UnknownCommand => Vec::new(),
    };
    for info in infos {
        check_keys(info, args)?;
    }
    // Any argv against the parent command too (a container with a bogus subcommand).
    if let Some(info) = args.first().and_then(|n| lookup(n)) {
        check_keys(info, args)?;
    }
    for a in args {
        let slot = key_slot(a);
        if usize::from(slot) >= router::redis::SLOT_COUNT {
            return Err(format!("slot {slot} of {:?}", bstr(a)));
        }
    }
    Ok(())
}

fn check_keys(info: &router::redis::CommandInfo, args: &[&[u8]]) -> Result<(), Violation> {
    let first = keys_of(info, args);
    if first != keys_of(info, args) {
        return Err(format!("keys_of is not deterministic for {}", info.name));
    }
    let Ok(positions) = first else {
        return Ok(());
    };
    if !info.arity_ok(args.len()) {
        return Err(format!(
            "{}: keys found for argc {} against arity {}",
            info.name,
            args.len(),
            info.arity
        ));
    }
    let len = positions.len();
    let all: Vec<usize> = KeyPositions::clone(&positions).collect();
    if all.len() != len {
        return Err(format!(
            "{}: len {} but {} positions",
            info.name,
            len,
            all.len()
        ));
    }
    for &i in &all {
        if i == 0 || i >= args.len() {
            return Err(format!(
                "{}: key position {i} with argc {} ({all:?})",
                info.name,
                args.len()
            ));
        }
    }
    if all.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "{}: key positions out of order: {all:?}",
            info.name
        ));
    }
    Ok(())
}

/// [`redis_args`] over fuzz bytes split by [`argv`].
pub fn redis_keys(data: &[u8]) -> Result<(), Violation> {
    redis_args(&argv(data))
}

fn bstr(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
