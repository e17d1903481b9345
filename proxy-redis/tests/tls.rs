//! The TLS listener: `redis-cli --tls` (single commands, `--pipe` pipelining, a large value),
//! redis-py with certificate and host-name verification and a pipeline, and refusals (wrong CA,
//! a plain client).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Proxy, Sentinel, cache_config, config, redis_servers, set_pipeline};
use testkit::TestCerts;

fn certs() -> &'static TestCerts {
    TestCerts::get().unwrap_or_else(|e| panic!("{e}"))
}

fn tls_cli(port: u16, ca: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    if let Some(mut i) = child.stdin.take()
        && let Some(data) = stdin
    {
        i.write_all(data).expect("stdin");
    }
    let out = child.wait_with_output().expect("redis-cli");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim_end().to_string())
}

#[test]
fn redis_clients_over_tls() {
    let c = certs();
    let servers = redis_servers(2);
    let toml = config(&servers, "ketama", "").replacen(
        "group = \"cache\"\n",
        &format!(
            "group = \"cache\"\ntls = {{ cert = {:?}, key = {:?} }}\n",
            c.cert.display().to_string(),
            c.key.display().to_string()
        ),
        1,
    );
    let proxy = Proxy::start(&toml, 2);
    let p = proxy.port();

    assert_eq!(tls_cli(p, &c.ca, &["SET", "tls:a", "1"], None).1, "OK");
    assert_eq!(
        tls_cli(p, &c.ca, &["MSET", "tls:b", "2", "tls:c", "3"], None).1,
        "OK"
    );
    assert_eq!(
        tls_cli(p, &c.ca, &["MGET", "tls:a", "tls:b", "tls:c", "none"], None).1,
        "1\n2\n3"
    );

    // Pipelining: 20,000 commands in one stream.
    let pipe = set_pipeline("tls:p:", 20_000);
    let (ok, out) = tls_cli(p, &c.ca, &["--pipe"], Some(&pipe));
    assert!(ok && out.contains("errors: 0, replies: 20000"), "{out}");
    assert_eq!(tls_cli(p, &c.ca, &["GET", "tls:p:19999"], None).1, "v19999");

    // A value larger than TLS records and the proxy's write chunks, both ways.
    let big = "x".repeat(3 * 1024 * 1024 + 17);
    let (ok, out) = tls_cli(p, &c.ca, &["-x", "SET", "tls:big"], Some(big.as_bytes()));
    assert!(ok && out == "OK", "{out}");
    let (ok, out) = tls_cli(p, &c.ca, &["STRLEN", "tls:big"], None);
    assert!(ok && out == (big.len()).to_string(), "{out}");
    let (_, out) = tls_cli(p, &c.ca, &["GET", "tls:big"], None);
    assert_eq!(out.len(), big.len());

    // redis-py verifying the certificate and host name, with a pipeline.
    let script = format!(
        r#"
import redis
r = redis.Redis(host="127.0.0.1", port={p}, ssl=True, ssl_ca_certs={ca:?}, ssl_check_hostname=True)
pl = r.pipeline(transaction=False)
for i in range(1000):
    pl.set(f"tls:py:{{i}}", i)
    pl.get(f"tls:py:{{i}}")
res = pl.execute()
assert res[1::2] == [str(i).encode() for i in range(1000)], res[:6]
print("py", r.get("tls:a").decode(), r.connection_pool.get_connection("ping")._sock.version())
"#,
        ca = c.ca.display().to_string()
    );
    let out = Command::new(testkit::python().unwrap_or_else(|e| panic!("{e}")))
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("py 1 TLSv1.3"), "{text}");

    // A client trusting another CA, and a plain client, get nothing.
    let (ok, out) = tls_cli(p, &c.other_ca, &["PING"], None);
    assert!(!ok || !out.contains("PONG"), "{out}");
    let mut plain = std::net::TcpStream::connect(proxy.addr).expect("connect");
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    plain.write_all(b"PING\r\n").expect("write");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut plain, &mut buf).unwrap_or(0);
    assert!(
        !buf[..n].starts_with(b"+PONG"),
        "a plain client was answered"
    );
    // The proxy still serves TLS clients after those failures.
    assert_eq!(tls_cli(p, &c.ca, &["GET", "tls:a"], None).1, "1");
}

/// `toml` (from [`config`]) with `tls = { ca, server_name }` in the group.
fn with_group_tls(toml: &str, ca: &std::path::Path, server_name: Option<&str>) -> String {
    let name = server_name.map_or(String::new(), |n| format!(", server_name = {n:?}"));
    format!(
        "{toml}tls = {{ ca = {:?}{name} }}\n",
        ca.display().to_string()
    )
}

/// A config over the TLS ports of `servers`.
fn tls_backend_config(servers: &[testkit::RedisServer]) -> String {
    let mut toml = config(servers, "ketama", "");
    for s in servers {
        let tls = s.tls_addr().expect("tls port");
        toml = toml.replacen(&s.addr().to_string(), &tls.to_string(), 1);
    }
    toml
}

#[test]
fn tls_to_redis_backends() {
    let c = certs();
    let servers: Vec<_> = (0..2)
        .map(|_| {
            testkit::RedisServer::start_with(testkit::RedisConfig::new().tls(true))
                .expect("redis-server with TLS")
        })
        .collect();
    let base = tls_backend_config(&servers);

    // Verified against the CA, for the address's host (127.0.0.1, an IP SAN of the certificate).
    let proxy = Proxy::start(&with_group_tls(&base, &c.ca, None), 2);
    let mut cl = proxy.connect();
    assert_eq!(cl.cmd(&["SET", "btls:a", "1"]), "+OK");
    assert_eq!(cl.cmd(&["MSET", "btls:b", "2", "btls:c", "3"]), "+OK");
    assert_eq!(
        cl.cmd(&["MGET", "btls:a", "btls:b", "btls:c", "none"]),
        "[1, 2, 3, nil]"
    );
    // The keys went to both servers over their TLS ports.
    let spread: Vec<i64> = servers
        .iter()
        .map(|s| s.cmd(&["DBSIZE"]).parse().expect("dbsize"))
        .collect();
    assert_eq!(spread.iter().sum::<i64>(), 3, "{spread:?}");

    // A pipeline of 10,000 commands in one write.
    let pipe = set_pipeline("btls:p:", 10_000);
    cl.send_raw(&pipe);
    for _ in 0..10_000 {
        assert_eq!(cl.read(), "+OK");
    }
    assert_eq!(cl.cmd(&["GET", "btls:p:9999"]), "v9999");

    // A 6 MB value both ways.
    let big: String = (0..6 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(cl.cmd(&["SET", "btls:big", &big]), "+OK");
    assert_eq!(cl.cmd(&["STRLEN", "btls:big"]), ":6291456");
    let got = cl.cmd(&["GET", "btls:big"]);
    assert!(got == big, "{}", &got[..got.len().min(80)]);
    assert_eq!(servers[0].cmd(&["PING"]), "PONG");
    drop(cl);
    drop(proxy);

    // An explicit server name in the certificate.
    let proxy = Proxy::start(&with_group_tls(&base, &c.ca, Some("localhost")), 1);
    assert_eq!(proxy.connect().cmd(&["GET", "btls:a"]), "1");
    drop(proxy);

    // A CA that did not sign the servers' certificate: refused, with the reason.
    let proxy = Proxy::start(&with_group_tls(&base, &c.other_ca, None), 1);
    let e = proxy.connect().cmd(&["GET", "btls:a"]);
    assert!(
        e.starts_with("-ERR backend")
            && e.contains("TLS handshake failed: invalid peer certificate"),
        "{e}"
    );
    assert!(e.contains("UnknownIssuer"), "{e}");
    eprintln!("wrong CA: {e}");
    drop(proxy);

    // A name the certificate is not valid for: refused, with the reason.
    let proxy = Proxy::start(&with_group_tls(&base, &c.ca, Some("wrong.example")), 1);
    let e = proxy.connect().cmd(&["GET", "btls:a"]);
    assert!(
        e.starts_with("-ERR backend")
            && e.contains("TLS handshake failed: invalid peer certificate"),
        "{e}"
    );
    assert!(
        e.contains("wrong.example") || e.contains("NotValidForName"),
        "{e}"
    );
    eprintln!("wrong name: {e}");
    drop(proxy);

    // TLS towards a plain port: a failed connection, never clear text.
    let plain = config(&servers, "ketama", "");
    let proxy = Proxy::start(&with_group_tls(&plain, &c.ca, None), 1);
    let e = proxy.connect().cmd(&["GET", "btls:a"]);
    assert!(e.starts_with("-ERR backend") && e.contains("TLS"), "{e}");
    eprintln!("plain port: {e}");
    drop(proxy);

    // The plain path is unaffected: the same servers over their plain ports.
    let proxy = Proxy::start(&plain, 1);
    assert_eq!(proxy.connect().cmd(&["GET", "btls:p:42"]), "v42");
}

impl Sentinel {
    /// A Redis Sentinel that speaks TLS only (`port 0`, `tls-port`) and reaches the primary it
    /// monitors as `name` over TLS too (`tls-replication yes`).
    fn start_tls(name: &str, primary_tls: std::net::SocketAddr) -> Sentinel {
        let c = certs();
        let s = Sentinel::spawn("tls-sentinel", |port, dir| {
            format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
                 tls-auth-clients no\ntls-replication yes\n\
                 sentinel monitor {name} 127.0.0.1 {pport} 1\n",
                dir = dir.display(),
                cert = c.cert.display(),
                key = c.key.display(),
                ca = c.ca.display(),
                pport = primary_tls.port(),
            )
        });
        let t0 = std::time::Instant::now();
        while !tls_cli(s.lease.port(), &c.ca, &["PING"], None)
            .1
            .contains("PONG")
        {
            assert!(
                t0.elapsed().as_secs() < 10,
                "the TLS sentinel did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        s
    }
}

#[test]
fn sentinels_over_tls() {
    let c = certs();
    let primary = testkit::RedisServer::start_with(testkit::RedisConfig::new().tls(true))
        .expect("redis-server with TLS");
    let sentinel = Sentinel::start_tls("tlsmaster", primary.tls_addr().expect("tls port"));
    // The configured address is wrong on purpose: only the sentinel's answer (asked over TLS)
    // leads to the primary's TLS port.
    let toml = |ca: &std::path::Path| {
        cache_config(&format!(
            r#"sentinels = ["{}"]
request_timeout_ms = 1000
servers = [{{ name = "shard1", sentinel_master = "tlsmaster", address = "127.0.0.1:1" }}]
tls = {{ ca = {:?} }}"#,
            sentinel.lease.addr(),
            ca.display().to_string()
        ))
    };
    let proxy = Proxy::start(&toml(&c.ca), 1);
    let mut cl = proxy.connect();
    assert_eq!(cl.cmd(&["SET", "stls:a", "1"]), "+OK");
    assert_eq!(primary.cmd(&["GET", "stls:a"]), "1");
    drop(cl);
    drop(proxy);

    // With a CA that does not verify the sentinel, nothing is learnt from it: the configured
    // (wrong) address is all there is.
    let proxy = Proxy::start(&toml(&c.other_ca), 1);
    let e = proxy.connect().cmd(&["GET", "stls:a"]);
    assert!(e.starts_with("-ERR backend shard1 (127.0.0.1:1)"), "{e}");
}
