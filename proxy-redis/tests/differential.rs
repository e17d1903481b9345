//! Differential test: a seeded random workload through the proxy over 3 shards and directly on one
//! Redis gives the same replies (sorted where Redis itself is unordered).

mod common;

use common::{Proxy, Raw, config, redis_servers};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn command(rng: &mut Rng) -> (Vec<String>, bool) {
    let k = |rng: &mut Rng| format!("key:{}", rng.pick(40));
    let v = |rng: &mut Rng| format!("v{}", rng.pick(1000));
    let tagged = |rng: &mut Rng| format!("{{t{}}}:{}", rng.pick(3), rng.pick(5));
    match rng.pick(22) {
        0 => (vec!["SET".into(), k(rng), v(rng)], false),
        1 => (vec!["GET".into(), k(rng)], false),
        2 => (vec!["INCR".into(), format!("n:{}", rng.pick(10))], false),
        3 => (vec!["DEL".into(), k(rng), k(rng), k(rng)], false),
        4 => (vec!["EXISTS".into(), k(rng), k(rng)], false),
        5 => {
            let mut a = vec!["MSET".to_string()];
            for _ in 0..1 + rng.pick(5) {
                a.push(k(rng));
                a.push(v(rng));
            }
            (a, false)
        }
        6 => {
            let mut a = vec!["MGET".to_string()];
            for _ in 0..1 + rng.pick(6) {
                a.push(k(rng));
            }
            (a, false)
        }
        7 => (
            vec!["LPUSH".into(), format!("l:{}", rng.pick(5)), v(rng)],
            false,
        ),
        8 => (
            vec![
                "LRANGE".into(),
                format!("l:{}", rng.pick(5)),
                "0".into(),
                "-1".into(),
            ],
            false,
        ),
        9 => (
            vec!["SADD".into(), format!("s:{}", rng.pick(5)), v(rng)],
            false,
        ),
        10 => (vec!["SMEMBERS".into(), format!("s:{}", rng.pick(5))], true),
        11 => (
            vec![
                "HSET".into(),
                format!("h:{}", rng.pick(5)),
                format!("f{}", rng.pick(4)),
                v(rng),
            ],
            false,
        ),
        12 => (
            vec![
                "HGET".into(),
                format!("h:{}", rng.pick(5)),
                format!("f{}", rng.pick(4)),
            ],
            false,
        ),
        13 => (
            vec![
                "ZADD".into(),
                format!("z:{}", rng.pick(3)),
                rng.pick(100).to_string(),
                v(rng),
            ],
            false,
        ),
        14 => (
            vec![
                "ZRANGE".into(),
                format!("z:{}", rng.pick(3)),
                "0".into(),
                "-1".into(),
                "WITHSCORES".into(),
            ],
            false,
        ),
        15 => (vec!["DBSIZE".into()], false),
        16 => (vec!["KEYS".into(), "key:1*".into()], true),
        17 => (vec!["SET".into(), tagged(rng), v(rng)], false),
        18 => (
            vec![
                "RENAME".into(),
                tagged(rng).replace("{t1}", "{t0}").replace("{t2}", "{t0}"),
                "{t0}:x".into(),
            ],
            false,
        ),
        19 => (vec!["TYPE".into(), k(rng)], false),
        20 => (vec!["APPEND".into(), k(rng), v(rng)], false),
        _ => (vec!["STRLEN".into(), k(rng)], false),
    }
}

/// Sorts the elements of a flat array reply text (for unordered replies).
fn sorted(reply: &str) -> String {
    if let Some(inner) = reply.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let mut items: Vec<&str> = inner.split(", ").collect();
        items.sort();
        format!("[{}]", items.join(", "))
    } else {
        reply.to_string()
    }
}

#[test]
fn proxy_over_three_shards_matches_one_redis() {
    let shards = redis_servers(3);
    let reference = redis_servers(1);
    let proxy = Proxy::start(&config(&shards, "ketama", ""), 2);
    let mut via_proxy = proxy.connect();
    let mut direct = Raw::connect(reference[0].addr());
    for seed in [7u64, 42, 1234] {
        let mut rng = Rng(seed);
        // Pipelined batches of varying size.
        for _ in 0..40 {
            let batch: Vec<(Vec<String>, bool)> =
                (0..1 + rng.pick(20)).map(|_| command(&mut rng)).collect();
            for (c, _) in &batch {
                let a: Vec<&str> = c.iter().map(String::as_str).collect();
                via_proxy.send(&a);
                direct.send(&a);
            }
            for (c, unordered) in &batch {
                let (p, d) = (via_proxy.read(), direct.read());
                let (p, d) = if *unordered {
                    (sorted(&p), sorted(&d))
                } else {
                    (p, d)
                };
                assert_eq!(p, d, "seed {seed}: {c:?}");
            }
        }
    }
}
