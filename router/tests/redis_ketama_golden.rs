//! Golden key → server mappings recorded from a real nutcracker (router/tools/gen_ketama_fixtures.py):
//! every key must land on the server nutcracker put it on.

use std::path::{Path, PathBuf};

use router::redis::{Distribution, HashFunction, KetamaServer, KeyHasher};

/// One parsed fixture file.
struct Golden {
    name: String,
    distribution: String,
    hasher: KeyHasher,
    servers: Vec<KetamaServer>,
    keys: Vec<(Vec<u8>, usize)>,
}

fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex key"))
        .collect()
}

fn parse(path: &Path) -> Golden {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let mut distribution = String::new();
    let mut hash = None;
    let mut tag = None;
    let mut servers = Vec::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            if let Some(v) = h.strip_prefix("distribution: ") {
                distribution = v.to_owned();
            } else if let Some(v) = h.strip_prefix("hash: ") {
                hash = Some(HashFunction::from_name(v).expect("hash name"));
            } else if let Some(v) = h.strip_prefix("hash_tag: ") {
                tag = Some(v.to_owned());
            } else if let Some(v) = h.strip_prefix("server: ") {
                let (addr, name) = match v.split_once(' ') {
                    Some((a, n)) => (a, Some(n)),
                    None => (v, None),
                };
                let mut parts = addr.rsplitn(3, ':');
                let weight: u32 = parts.next().unwrap().parse().unwrap();
                let port: u16 = parts.next().unwrap().parse().unwrap();
                let host = parts.next().unwrap();
                servers.push(KetamaServer::from_addr(host, port, weight, name));
            }
            continue;
        }
        let (key, server) = line.rsplit_once(' ').expect("key server");
        let key = match key.strip_prefix("hex:") {
            Some(h) => decode_hex(h),
            None => key.as_bytes().to_vec(),
        };
        keys.push((key, server.parse().expect("server index")));
    }
    let function = hash.expect("fixture names its hash");
    let hasher = match tag {
        Some(t) => KeyHasher::with_tag(function, &t).expect("hash tag"),
        None => KeyHasher::new(function),
    };
    Golden {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        distribution,
        hasher,
        servers,
        keys,
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/redis");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_recorded_key_lands_where_nutcracker_put_it() {
    let files = fixtures();
    assert!(
        files.len() >= 10,
        "expected the golden fixtures, found {files:?}"
    );
    let mut hashes_seen = std::collections::BTreeSet::new();
    for path in files {
        let g = parse(&path);
        assert!(g.keys.len() >= 400, "{}: too few keys", g.name);
        let dist = match g.distribution.as_str() {
            "ketama" => Distribution::ketama(g.hasher, &g.servers).unwrap(),
            "modula" => Distribution::modula(g.hasher, &g.servers).unwrap(),
            other => panic!("{}: unknown distribution {other}", g.name),
        };
        hashes_seen.insert(g.hasher.function.name());
        let wrong: Vec<String> = g
            .keys
            .iter()
            .filter(|(k, s)| dist.server_for_key(k) != *s)
            .take(5)
            .map(|(k, s)| {
                format!(
                    "{:?}: nutcracker {s}, furrow {}",
                    String::from_utf8_lossy(k),
                    dist.server_for_key(k)
                )
            })
            .collect();
        assert!(wrong.is_empty(), "{}: mismatches {wrong:?}", g.name);
        // Every server got keys: the mapping is not trivially constant.
        for s in 0..g.servers.len() {
            assert!(
                g.keys.iter().any(|(_, x)| *x == s),
                "{}: server {s} got no key",
                g.name
            );
        }
    }
    assert_eq!(
        hashes_seen.len(),
        HashFunction::ALL.len(),
        "every hash function has a fixture: {hashes_seen:?}"
    );
}
