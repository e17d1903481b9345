//! Online slot migration (`distribution = "slots"`, `migrating_to`): half of the slots move from
//! one real redis-server to another while pipelined clients read and write through the proxy.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use common::{Proxy, Raw, config, redis_servers};
use proxy_redis::migrate::{Endpoint, MoveSpec, Progress, run_move};
use router::redis::key_slot;

const WHOLE: &str = r#"slots = [{ range = "0-16383", server = "r1" }]"#;
const MOVING: &str = r#"slots = [{ range = "0-8191", server = "r1", migrating_to = "r2" }, { range = "8192-16383", server = "r1" }]"#;
const MOVED: &str =
    r#"slots = [{ range = "0-8191", server = "r2" }, { range = "8192-16383", server = "r1" }]"#;

/// One client's keys and what it was acknowledged last.
struct Model {
    t: usize,
    values: HashMap<String, Option<String>>,
    counters: HashMap<String, i64>,
}

impl Model {
    fn key(&self, i: usize) -> String {
        format!("t{}:k{}", self.t, i % 300)
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        b.extend(format!("${}\r\n{}\r\n", a.len(), a).bytes());
    }
    b
}

/// Runs one pipelined round of 24 mixed commands, checking every reply against the model (which
/// is updated as the commands are queued: one client's commands run in order).
fn round(c: &mut Raw, m: &mut Model, r: usize) {
    let mut pipe = Vec::new();
    let mut expect: Vec<String> = Vec::new();
    for j in 0..24 {
        let i = r * 24 + j;
        let (k, k2) = (m.key(i), m.key(i * 7 + 3));
        let v = format!("r{r}j{j}");
        match j % 6 {
            0 => {
                pipe.extend(encode(&["SET", &k, &v]));
                expect.push("+OK".into());
                m.values.insert(k, Some(v));
            }
            1 => {
                pipe.extend(encode(&["GET", &k]));
                expect.push(m.values.get(&k).cloned().flatten().unwrap_or("nil".into()));
            }
            2 => {
                let ck = format!("t{}:c{}", m.t, i % 50);
                pipe.extend(encode(&["INCR", &ck]));
                let n = m.counters.entry(ck).or_insert(0);
                *n += 1;
                expect.push(format!(":{n}"));
            }
            3 => {
                pipe.extend(encode(&["MSET", &k, &v, &k2, &v]));
                expect.push("+OK".into());
                m.values.insert(k, Some(v.clone()));
                m.values.insert(k2, Some(v));
            }
            4 => {
                pipe.extend(encode(&["DEL", &k]));
                let had = m.values.insert(k, None).flatten().is_some();
                expect.push(format!(":{}", u8::from(had)));
            }
            _ => {
                pipe.extend(encode(&["MGET", &k, &k2]));
                let g = |k: &String| m.values.get(k).cloned().flatten().unwrap_or("nil".into());
                expect.push(format!("[{}, {}]", g(&k), g(&k2)));
            }
        }
    }
    c.send_raw(&pipe);
    for (n, e) in expect.iter().enumerate() {
        let got = c.read();
        assert_eq!(&got, e, "client {} round {r} command {n}", m.t);
    }
}

fn keys_of(server: &testkit::RedisServer) -> Vec<String> {
    let out = server.cmd(&["KEYS", "*"]);
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn slots_move_under_a_pipelined_mixed_load() {
    let servers = redis_servers(2);
    let toml = config(&servers, "slots", WHOLE);
    let proxy = Proxy::start(&toml, 2);
    // Keys with a TTL, written before the move: they keep it.
    let mut c = proxy.connect();
    for i in 0..2000 {
        assert_eq!(
            c.cmd(&["SET", &format!("ttl:{i}"), "x", "EX", "10000"]),
            "+OK"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|t| {
            let (stop, addr) = (stop.clone(), proxy.addr);
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                let mut m = Model {
                    t,
                    values: HashMap::new(),
                    counters: HashMap::new(),
                };
                let mut r = 0;
                while !stop.load(Relaxed) || r < 20 {
                    round(&mut c, &mut m, r);
                    r += 1;
                }
                (m, r)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    // Start moving: every proxy core now moves a key of 0-8191 before its command runs.
    let moving = router::config::parse("t", &config(&servers, "slots", MOVING)).expect("config");
    let group = moving.redis_group("cache").expect("group").clone();
    proxy.hub.publish(moving, "migrate");
    std::thread::sleep(Duration::from_millis(100));
    let spec = MoveSpec {
        from: Endpoint::of_group(&group, "r1").expect("r1"),
        to: Endpoint::of_group(&group, "r2").expect("r2"),
        start: 0,
        end: 8191,
        rate: 4000,
        batch: 50,
        timeout: Duration::from_secs(5),
    };
    let progress = Progress::default();
    let moved = run_move(&spec, &progress).expect("move");
    assert!(moved > 500, "the mover moved {moved} keys");
    assert!(progress.passes.load(Relaxed) >= 1);
    // Done: the table names the new owner.
    let done = router::config::parse("t", &config(&servers, "slots", MOVED)).expect("config");
    proxy.hub.publish(done, "migrated");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Relaxed);
    let models: Vec<(Model, usize)> = clients
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let rounds: usize = models.iter().map(|(_, r)| r).sum();
    eprintln!(
        "moved by the mover: {moved}, client rounds: {rounds}, passes: {}",
        progress.passes.load(Relaxed)
    );

    // Every acknowledged write is readable through the proxy.
    let mut c = proxy.connect();
    for (m, _) in &models {
        for (k, v) in &m.values {
            assert_eq!(c.cmd(&["GET", k]), v.clone().unwrap_or("nil".into()), "{k}");
        }
        for (k, n) in &m.counters {
            assert_eq!(c.cmd(&["GET", k]), n.to_string(), "{k}");
        }
    }
    // No key on two servers: each server holds exactly the slots the table gives it.
    let (on1, on2) = (keys_of(&servers[0]), keys_of(&servers[1]));
    assert!(
        on1.iter().all(|k| key_slot(k.as_bytes()) > 8191),
        "moved keys left on r1"
    );
    assert!(
        on2.iter().all(|k| key_slot(k.as_bytes()) <= 8191),
        "r2 holds keys of r1's slots"
    );
    assert!(!on2.is_empty() && !on1.is_empty());
    // TTLs moved with the keys.
    let moved_ttl: Vec<&String> = on2.iter().filter(|k| k.starts_with("ttl:")).collect();
    assert!(moved_ttl.len() > 500, "{}", moved_ttl.len());
    for k in moved_ttl.iter().take(50) {
        let ttl: i64 = servers[1].cmd(&["TTL", k]).parse().expect("ttl");
        assert!(ttl > 9000, "{k}: ttl {ttl}");
    }
    assert_eq!(
        on1.len() + on2.len(),
        2000 + models
            .iter()
            .map(|(m, _)| m.values.values().filter(|v| v.is_some()).count() + m.counters.len())
            .sum::<usize>()
    );
}

#[test]
fn commands_that_cannot_wait_are_refused_while_a_slot_moves() {
    let servers = redis_servers(2);
    let proxy = Proxy::start(&config(&servers, "slots", MOVING), 1);
    let mut c = proxy.connect();
    // `a` is in slot 15495 (not moving), `b` in 3300 (moving), `{b}x` too.
    assert!(key_slot(b"a") > 8191 && key_slot(b"b") <= 8191);
    assert_eq!(servers[0].cmd(&["SET", "b", "old"]), "OK");
    // A read moves the key first, then runs on the new owner.
    assert_eq!(c.cmd(&["GET", "b"]), "old");
    assert_eq!(servers[0].cmd(&["EXISTS", "b"]), "0");
    assert_eq!(servers[1].cmd(&["GET", "b"]), "old");
    // Same-shard commands whose keys all move together run; mixed ones wait.
    assert_eq!(servers[0].cmd(&["RPUSH", "{b}l", "x"]), "1");
    assert_eq!(c.cmd(&["RPOPLPUSH", "{b}l", "{b}m"]), "x");
    assert_eq!(servers[1].cmd(&["LRANGE", "{b}m", "0", "-1"]), "x");
    assert!(c.cmd(&["RENAME", "a", "b"]).starts_with("-TRYAGAIN slot"));
    assert!(c.cmd(&["BLPOP", "{b}q", "1"]).starts_with("-TRYAGAIN slot"));
    assert_eq!(c.cmd(&["MULTI"]), "+OK");
    assert!(c.cmd(&["SET", "b", "1"]).starts_with("-TRYAGAIN slot"));
    assert!(c.cmd(&["EXEC"]).starts_with("-EXECABORT"));
    // A failed move is the command's error, and the command did not run.
    servers[1].cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    servers[1].cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    assert_eq!(servers[0].cmd(&["SET", "{b}z", "v"]), "OK");
    let e = c.cmd(&["SET", "{b}z", "w"]);
    assert!(
        e.starts_with("-ERR moving the key to its new server failed"),
        "{e}"
    );
    assert_eq!(servers[0].cmd(&["GET", "{b}z"]), "v");
}

/// Copy throughput of the mover (keys/s, printed): 100,000 small keys on the old owner, half of
/// them moved with no rate limit, no clients. A measurement, not a check. Ignored by plan: a rate
/// on a shared 2-core machine is no pass/fail test (the mover's correctness runs in this file's other
/// tests on every `cargo nextest run`); run by hand when the mover changes, figures in
/// docs/redis-proxy.md.
#[test]
#[ignore = "measurement: run with --ignored --nocapture and read the printed keys/s"]
fn mover_throughput() {
    let servers = redis_servers(2);
    let mut direct = Raw::connect(servers[0].addr());
    for chunk in 0..10 {
        direct.send_raw(&common::set_pipeline(&format!("m{chunk}:"), 10_000));
        for _ in 0..10_000 {
            assert_eq!(direct.read(), "+OK");
        }
    }
    let cfg = router::config::parse("t", &config(&servers, "slots", MOVING)).expect("config");
    let group = cfg.redis_group("cache").expect("group");
    for batch in [100, 500] {
        let (from, to) = if batch == 100 {
            ("r1", "r2")
        } else {
            ("r2", "r1")
        };
        let spec = MoveSpec {
            from: Endpoint::of_group(group, from).expect("from"),
            to: Endpoint::of_group(group, to).expect("to"),
            start: 0,
            end: 8191,
            rate: 0,
            batch,
            timeout: Duration::from_secs(5),
        };
        let started = std::time::Instant::now();
        let moved = run_move(&spec, &Progress::default()).expect("move");
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "batch {batch}: moved {moved} keys in {secs:.2} s: {:.0} keys/s",
            moved as f64 / secs
        );
    }
}

/// Proxy cost while a migration runs (printed): pipelined GETs (16 per batch) through the proxy
/// of keys outside the moving range, with no migration and with one, and of keys inside it
/// (each first `MIGRATE`d from the old owner: `+NOKEY`, then read on the new one). Best of 5
/// alternating runs. A measurement, not a check; debug build, backends on the same machine.
/// Ignored by plan, as `mover_throughput`: run by hand when the migration path of the session
/// changes, figures in docs/redis-proxy.md.
#[test]
#[ignore = "measurement: run with --ignored --nocapture and read the printed requests/s"]
fn proxy_cost_while_moving() {
    let servers = redis_servers(2);
    let proxy = Proxy::start(&config(&servers, "slots", WHOLE), 1);
    let outside: Vec<String> = (0..)
        .map(|i| format!("o{i}"))
        .filter(|k| key_slot(k.as_bytes()) > 8191)
        .take(4000)
        .collect();
    let inside: Vec<String> = (0..)
        .map(|i| format!("i{i}"))
        .filter(|k| key_slot(k.as_bytes()) <= 8191)
        .take(4000)
        .collect();
    let run = |keys: &[String]| -> f64 {
        let mut c = proxy.connect();
        let started = std::time::Instant::now();
        for chunk in keys.chunks(16) {
            let mut pipe = Vec::new();
            for k in chunk {
                pipe.extend(encode(&["GET", k]));
            }
            c.send_raw(&pipe);
            for _ in chunk {
                c.read();
            }
        }
        keys.len() as f64 / started.elapsed().as_secs_f64()
    };
    let (whole, moving) = (
        router::config::parse("t", &config(&servers, "slots", WHOLE)).expect("config"),
        router::config::parse("t", &config(&servers, "slots", MOVING)).expect("config"),
    );
    let mut best = [0f64; 3];
    for _ in 0..5 {
        proxy.hub.publish(whole.clone(), "whole");
        best[0] = best[0].max(run(&outside));
        proxy.hub.publish(moving.clone(), "moving");
        best[1] = best[1].max(run(&outside));
        best[2] = best[2].max(run(&inside));
    }
    eprintln!(
        "GET/s, pipeline 16: other slots, no migration {:.0}; other slots, migration running {:.0} ({:+.1} %); keys of the moving slots {:.0} ({:+.1} %)",
        best[0],
        best[1],
        (best[1] / best[0] - 1.0) * 100.0,
        best[2],
        (best[2] / best[0] - 1.0) * 100.0
    );
}
