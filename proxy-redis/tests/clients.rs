//! Real clients through the proxy: redis-cli, the Rust `redis` crate, Python `redis`, redis-benchmark.

mod common;

use std::process::Command;

use common::{Proxy, config, redis_cli, redis_servers, total_keys};

#[test]
fn redis_cli_works_through_the_proxy() {
    let servers = redis_servers(3);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 2);
    let p = proxy.port();
    assert_eq!(redis_cli(p, &["SET", "cli:a", "1"]), "OK");
    assert_eq!(redis_cli(p, &["MSET", "cli:b", "2", "cli:c", "3"]), "OK");
    assert_eq!(
        redis_cli(p, &["MGET", "cli:a", "cli:b", "cli:c", "nokey"]),
        "1\n2\n3"
    );
    assert_eq!(redis_cli(p, &["DBSIZE"]), "3");
    assert_eq!(redis_cli(p, &["PING"]), "PONG");
    let keys = redis_cli(p, &["--scan", "--pattern", "cli:*"]);
    let mut k: Vec<&str> = keys.lines().collect();
    k.sort();
    assert_eq!(k, ["cli:a", "cli:b", "cli:c"]);
    assert!(redis_cli(p, &["NOSUCHCMD"]).contains("unknown command"));
    // RESP3 through redis-cli -3.
    assert_eq!(redis_cli(p, &["-3", "HSET", "cli:h", "f", "v"]), "1");
    servers[0].cmd(&["HSET", "cli:h", "f", "v"]);
    assert_eq!(
        redis_cli(p, &["-3", "HGETALL", "cli:h"]),
        redis_cli(servers[0].port(), &["-3", "HGETALL", "cli:h"])
    );
}

#[test]
fn rust_redis_crate_pipelines_and_transactions() {
    let servers = redis_servers(3);
    let proxy = Proxy::start(&config(&servers, "modula", ""), 1);
    let client = redis::Client::open(format!("redis://{}/", proxy.addr)).expect("client");
    let mut con = client.get_connection().expect("connect");
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("rs:{i}")).arg(i).ignore();
    }
    for i in 0..100 {
        pipe.cmd("GET").arg(format!("rs:{i}"));
    }
    let got: Vec<i64> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(got, (0..100).collect::<Vec<i64>>());
    let vals: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&["rs:1", "rs:50", "missing", "rs:99"])
        .query(&mut con)
        .expect("mget");
    assert_eq!(
        vals,
        vec![Some("1".into()), Some("50".into()), None, Some("99".into())]
    );
    let n: i64 = redis::cmd("DEL")
        .arg(&["rs:1", "rs:2", "missing"])
        .query(&mut con)
        .expect("del");
    assert_eq!(n, 2);
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("{tx}n")
        .cmd("INCRBY")
        .arg("{tx}n")
        .arg(10)
        .query(&mut con)
        .expect("transaction");
    assert_eq!((a, b), (1, 11));
    let err = redis::cmd("NOSUCH")
        .query::<String>(&mut con)
        .expect_err("unknown");
    assert!(err.to_string().contains("unknown command"), "{err}");
}

#[test]
fn python_redis_client() {
    let servers = redis_servers(3);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 1);
    let script = format!(
        r#"
import redis
r = redis.Redis(host="127.0.0.1", port={port}, decode_responses=True)
assert r.ping()
r.mset({{"py:a": "1", "py:b": "2", "py:c": "3"}})
assert r.mget(["py:a", "py:b", "nope", "py:c"]) == ["1", "2", None, "3"], r.mget(["py:a", "py:b", "nope", "py:c"])
p = r.pipeline(transaction=False)
for i in range(50):
    p.incr("py:n")
assert p.execute()[-1] == 50
with r.pipeline(transaction=True) as t:
    t.set("{{py}}x", "1").incr("{{py}}x")
    assert t.execute() == [True, 2]
assert r.delete("py:a", "py:b", "nope") == 2
assert sorted(r.scan_iter("py:*")) == ["py:c", "py:n"], sorted(r.scan_iter("py:*"))
ps = r.pubsub()
ps.subscribe("chan")
msg = ps.get_message(timeout=2)
assert msg["type"] == "subscribe", msg
assert r.publish("chan", "hello") == 1
msg = ps.get_message(timeout=2)
assert msg["data"] == "hello", msg
try:
    r.execute_command("NOSUCH")
    raise SystemExit("expected an error")
except redis.ResponseError as e:
    assert "unknown command" in str(e)
r3 = redis.Redis(host="127.0.0.1", port={port}, protocol=3, decode_responses=True)
r3.hset("py:h", mapping={{"f": "v"}})
assert r3.hgetall("py:h") == {{"f": "v"}}
print("ok")
"#,
        port = proxy.port()
    );
    let out = Command::new(testkit::python().unwrap_or_else(|e| panic!("{e}")))
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn redis_benchmark_runs_clean() {
    let servers = redis_servers(2);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 2);
    for pipeline in ["1", "16"] {
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &proxy.port().to_string(),
                "-c",
                "20",
                "-n",
                "10000",
                "-r",
                "1000",
                "-d",
                "16",
            ])
            .args([
                "-t",
                "set,get,incr,lpush,rpop,mset",
                "-P",
                pipeline,
                "-q",
                "--csv",
            ])
            .output()
            .expect("redis-benchmark");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("\"test\""))
            .collect();
        assert_eq!(rows.len(), 6, "every test ran: {text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("ERR"), "{stderr}");
    }
    // The data is really there.
    let total = total_keys(&servers);
    assert!(total > 0);
}
