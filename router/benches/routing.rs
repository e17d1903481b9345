//! Hot routing code: key hashing, ketama lookup, command resolution with key extraction, and SQL
//! classification and digests. Run with `cargo bench -p router --bench routing`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use router::redis::command::{Resolved, keys_of, resolve};
use router::redis::distribution::{Distribution, KeyHasher};
use router::redis::hash::HashFunction;
use router::redis::ketama::KetamaServer;

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("key:{:012}", i * 7919).into_bytes())
        .collect()
}

fn hashing(c: &mut Criterion) {
    let ks = keys(1024);
    let mut g = c.benchmark_group("redis_hash");
    g.throughput(Throughput::Elements(ks.len() as u64));
    for (name, f) in [
        ("fnv1a_64", HashFunction::Fnv1a64),
        ("murmur", HashFunction::Murmur),
        ("crc16", HashFunction::Crc16),
        ("md5", HashFunction::Md5),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| ks.iter().fold(0u32, |a, k| a ^ f.hash(black_box(k))));
        });
    }
    g.finish();
}

fn ketama(c: &mut Criterion) {
    let ks = keys(1024);
    let mut g = c.benchmark_group("redis_route");
    g.throughput(Throughput::Elements(ks.len() as u64));
    for shards in [2usize, 16] {
        let servers: Vec<KetamaServer> = (0..shards)
            .map(|i| KetamaServer::named(format!("r{i}"), 1))
            .collect();
        let Ok(d) = Distribution::ketama(KeyHasher::new(HashFunction::Fnv1a64), &servers) else {
            return;
        };
        g.bench_function(format!("ketama_fnv1a_64_{shards}_shards"), |b| {
            b.iter(|| {
                ks.iter()
                    .fold(0usize, |a, k| a ^ d.server_for_key(black_box(k)))
            });
        });
    }
    g.finish();
}

fn commands(c: &mut Criterion) {
    let mget: Vec<&[u8]> = vec![
        b"MGET", b"k1", b"k2", b"k3", b"k4", b"k5", b"k6", b"k7", b"k8", b"k9", b"k10",
    ];
    let get: Vec<&[u8]> = vec![b"get", b"some:key"];
    let mut g = c.benchmark_group("redis_command");
    for (name, args) in [("get", &get), ("mget10", &mget)] {
        g.bench_function(format!("resolve_and_keys_{name}"), |b| {
            b.iter(|| match resolve(black_box(args)) {
                Resolved::Command(info) => keys_of(info, args).map(|k| k.len()).unwrap_or(0),
                _ => 0,
            });
        });
    }
    g.finish();
}

fn sql(c: &mut Criterion) {
    let queries = [
        ("point_select", "SELECT c FROM sbtest1 WHERE id=4711"),
        (
            "range_order",
            "SELECT id, score FROM items WHERE grp = 17 ORDER BY score DESC, id LIMIT 10",
        ),
        ("update", "UPDATE sbtest3 SET k=k+1 WHERE id=5021"),
        (
            "hinted",
            "/* furrow: primary */ SELECT * FROM t WHERE a = 'x' AND b IN (1,2,3)",
        ),
    ];
    let mut g = c.benchmark_group("sql");
    for (name, q) in queries {
        g.throughput(Throughput::Bytes(q.len() as u64));
        g.bench_function(format!("classify_{name}"), |b| {
            b.iter(|| router::sql::classify(black_box(q)).kind)
        });
        g.bench_function(format!("digest_{name}"), |b| {
            b.iter(|| router::sql::digest(black_box(q)))
        });
    }
    g.finish();
}

criterion_group!(benches, hashing, ketama, commands, sql);
criterion_main!(benches);
