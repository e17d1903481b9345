//! No file of proxy-mysql imports one that imports it back, directly or through others (issue 16:
//! a layer that needs its caller's types is in the wrong place; shared types go down into a leaf).
//!
//! An edge is a `crate::a::b` path (in a `use` or inline, `use crate::{a, b}` groups included) or a
//! `super::` path, from the file it is written in to the deepest module file it names. A module's
//! own submodules are not edges of it (it declares them), the crate root is nobody's dependency,
//! and comments and `#[cfg(test)] mod` blocks at the end of a file do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path ("session/execute", "shard", "" for lib.rs) → its source.
fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if p.is_dir() {
            modules(&p, &format!("{prefix}{name}/"), out);
            continue;
        }
        let Some(stem) = name.strip_suffix(".rs") else {
            continue;
        };
        let module = match stem {
            "mod" | "lib" => prefix.trim_end_matches('/').to_string(),
            s => format!("{prefix}{s}"),
        };
        out.insert(module, std::fs::read_to_string(&p).expect("read source"));
    }
}

/// The code of a file without comments and without its trailing test module.
fn code(src: &str) -> String {
    let mut lines: Vec<&str> = src.lines().collect();
    if let Some(at) = lines.iter().enumerate().position(|(i, l)| {
        l.trim() == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod ") || n.contains(" mod "))
    }) {
        lines.truncate(at);
    }
    lines
        .iter()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifier path that starts at `s` (`a::b::c`), as its segments.
fn path_at(s: &str) -> Vec<&str> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(&rest[..end]);
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    segs
}

/// The deepest module of `mods` that `base` + `segs` names.
fn resolve(mods: &BTreeMap<String, String>, base: &str, segs: &[&str]) -> Option<String> {
    (0..=segs.len()).rev().find_map(|n| {
        let mut m = base.to_string();
        for s in &segs[..n] {
            if !m.is_empty() {
                m.push('/');
            }
            m.push_str(s);
        }
        mods.contains_key(&m).then_some(m)
    })
}

fn parent(m: &str) -> &str {
    m.rsplit_once('/').map_or("", |(p, _)| p)
}

fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (m, src) in mods {
        let text = code(src);
        let mut deps = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    deps.extend(resolve(mods, "", &path_at(item.trim())));
                }
            } else {
                deps.extend(resolve(mods, "", &path_at(rest)));
            }
        }
        for (at, _) in text.match_indices("super::") {
            // `super` of a module file is its parent module.
            deps.extend(resolve(
                mods,
                parent(m),
                &path_at(&text[at + "super::".len()..]),
            ));
        }
        deps.retain(|d| !d.is_empty() && d != m && !d.starts_with(&format!("{m}/")));
        out.insert(m.clone(), deps);
    }
    out
}

/// A circle through the graph, if any, as the modules along it.
fn circle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|x| x == d).unwrap_or(0);
                    let mut c = stack[from..].to_vec();
                    c.push(d.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(g, d, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(g, m, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let mut mods = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut mods,
    );
    assert!(mods.contains_key("session/execute") && mods.contains_key("core"));
    let g = edges(&mods);
    // The checker sees edges at all (it would pass vacuously otherwise).
    assert!(
        g["session/execute"].contains("pool"),
        "{:?}",
        g["session/execute"]
    );
    assert!(g["shard/run"].contains("shard"), "{:?}", g["shard/run"]);
    if let Some(c) = circle(&g) {
        panic!("import circle: {}", c.join(" -> "));
    }
}

#[test]
fn the_checker_finds_a_circle() {
    let mut mods = BTreeMap::new();
    mods.insert("a".to_string(), "use crate::b::X;\n".to_string());
    mods.insert(
        "b".to_string(),
        "// crate::a in a comment is no edge\nuse crate::{c::Y, vars};\n".to_string(),
    );
    mods.insert(
        "c".to_string(),
        "fn f() -> crate::a::Z { todo!() }\n".to_string(),
    );
    mods.insert("vars".to_string(), String::new());
    let g = edges(&mods);
    assert_eq!(
        circle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    mods.insert("c".to_string(), "use super::vars;\n".to_string());
    assert_eq!(circle(&edges(&mods)), None);
}
