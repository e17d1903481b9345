//! Live check against a real nutcracker (twemproxy): keys SET through nutcracker must sit on the backend
//! Furrow's distribution picks. Starts its own redis-servers and nutcracker on free loopback ports in a
//! temp dir. Needs `nutcracker` and `redis-server` in PATH (CI installs them): fails, never skips.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use router::redis::{Distribution, HashFunction, KetamaServer, KeyHasher};

/// Child processes killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free loopback port, reserved (flock) against every other test process for as long as the lease
/// lives — a bind-to-0-then-close port can be taken by a parallel test before nutcracker binds it.
fn free_port(leases: &mut Vec<testkit::PortLease>) -> u16 {
    let lease = testkit::reserve_port().expect("reserve a port");
    let port = lease.port();
    leases.push(lease);
    port
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads a reply; returns the bulk strings of an array, or the status line as one element.
fn read_reply(r: &mut BufReader<TcpStream>) -> Vec<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).unwrap();
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    match line[0] {
        b'+' => vec![text.into_bytes()],
        b'-' => panic!("error reply: {text}"),
        b'*' => {
            let n: usize = text.parse().unwrap();
            (0..n)
                .map(|_| {
                    let mut l = Vec::new();
                    r.read_until(b'\n', &mut l).unwrap();
                    let len: usize = String::from_utf8_lossy(&l[1..l.len() - 2]).parse().unwrap();
                    let mut buf = vec![0; len + 2];
                    r.read_exact(&mut buf).unwrap();
                    buf.truncate(len);
                    buf
                })
                .collect()
        }
        other => panic!("unexpected reply type {}", other as char),
    }
}

/// A pool of the nutcracker config and the Furrow distribution that must agree with it.
struct Pool {
    name: &'static str,
    yaml: String,
    dist: Distribution,
    port: u16,
}

#[test]
fn furrow_routes_like_a_live_nutcracker() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs(Vec::new());
    let mut leases = Vec::new();
    let redis: Vec<testkit::RedisServer> = (0..3)
        .map(|_| {
            testkit::RedisServer::start().expect("redis-server (apt-get install -y redis-server)")
        })
        .collect();
    let backends: Vec<u16> = redis.iter().map(|r| r.port()).collect();

    let weights = [1u32, 2, 3];
    let names = ["left", "middle", "right"];
    let unnamed: Vec<KetamaServer> = backends
        .iter()
        .zip(weights)
        .map(|(&p, w)| KetamaServer::from_addr("127.0.0.1", p, w, None))
        .collect();
    let named: Vec<KetamaServer> = backends
        .iter()
        .zip(names)
        .map(|(&p, n)| KetamaServer::from_addr("127.0.0.1", p, 1, Some(n)))
        .collect();
    let servers = |w: &[u32], n: Option<&[&str]>| -> String {
        backends
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let name = n.map(|n| format!(" {}", n[i])).unwrap_or_default();
                format!("   - 127.0.0.1:{p}:{}{name}\n", w[i])
            })
            .collect()
    };
    let fnv = KeyHasher::new(HashFunction::Fnv1a64);
    let md5 = KeyHasher::new(HashFunction::Md5);
    let tagged = KeyHasher::with_tag(HashFunction::Fnv1a64, "{}").unwrap();
    let mut pools = vec![
        Pool {
            name: "ketama_fnv_weighted",
            yaml: format!(
                "  hash: fnv1a_64\n  distribution: ketama\n  servers:\n{}",
                servers(&weights, None)
            ),
            dist: Distribution::ketama(fnv, &unnamed).unwrap(),
            port: 0,
        },
        Pool {
            name: "ketama_md5_named",
            yaml: format!(
                "  hash: md5\n  distribution: ketama\n  servers:\n{}",
                servers(&[1, 1, 1], Some(&names))
            ),
            dist: Distribution::ketama(md5, &named).unwrap(),
            port: 0,
        },
        Pool {
            name: "ketama_fnv_tag",
            yaml: format!(
                "  hash: fnv1a_64\n  hash_tag: \"{{}}\"\n  distribution: ketama\n  servers:\n{}",
                servers(&weights, None)
            ),
            dist: Distribution::ketama(tagged, &unnamed).unwrap(),
            port: 0,
        },
        Pool {
            name: "modula_hsieh",
            yaml: format!(
                "  hash: hsieh\n  distribution: modula\n  servers:\n{}",
                servers(&weights, None)
            ),
            dist: Distribution::modula(KeyHasher::new(HashFunction::Hsieh), &unnamed).unwrap(),
            port: 0,
        },
    ];
    let mut yaml = String::new();
    for p in &mut pools {
        p.port = free_port(&mut leases);
        yaml.push_str(&format!(
            "{}:\n  listen: 127.0.0.1:{}\n  redis: true\n  auto_eject_hosts: false\n{}",
            p.name, p.port, p.yaml
        ));
    }
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, yaml).unwrap();
    let nc = Command::new("nutcracker")
        .arg("-c")
        .arg(&conf)
        .arg("-o")
        .arg(dir.path().join("nutcracker.log"))
        .args(["-a", "127.0.0.1", "-s", &free_port(&mut leases).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nutcracker must be installed (apt-get install -y nutcracker)");
    procs.0.push(nc);
    for p in &pools {
        wait_port(p.port);
    }

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for p in &pools {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for i in 0..600u32 {
            let mut k = format!("{}:", p.name).into_bytes();
            match i % 3 {
                0 => k.extend_from_slice(format!("key:{i}").as_bytes()),
                1 => k.extend_from_slice(format!("obj{{{}}}:{i}", i % 17).as_bytes()),
                _ => {
                    for _ in 0..(i % 23 + 1) {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        k.push((seed >> 24) as u8);
                    }
                }
            }
            keys.push(k);
        }
        keys.sort();
        keys.dedup();
        let stream = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut batch = Vec::new();
        for k in &keys {
            batch.extend_from_slice(&command(&[b"SET", k, b"v"]));
        }
        w.write_all(&batch).unwrap();
        for _ in &keys {
            assert_eq!(read_reply(&mut r), vec![b"OK".to_vec()]);
        }
        let mut held: Vec<(Vec<u8>, usize)> = Vec::new();
        for (idx, &port) in backends.iter().enumerate() {
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            let pattern = format!("{}:*", p.name);
            w.write_all(&command(&[b"KEYS", pattern.as_bytes()]))
                .unwrap();
            held.extend(read_reply(&mut r).into_iter().map(|k| (k, idx)));
        }
        assert_eq!(
            held.len(),
            keys.len(),
            "{}: every key on exactly one backend",
            p.name
        );
        let mut per_server = [0usize; 3];
        for (k, idx) in &held {
            per_server[*idx] += 1;
            assert_eq!(
                p.dist.server_for_key(k),
                *idx,
                "{}: key {:?} (hex {}) is on backend {idx} in nutcracker",
                p.name,
                String::from_utf8_lossy(k),
                k.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
        }
        assert!(
            per_server.iter().all(|&n| n > 0),
            "{}: {per_server:?}",
            p.name
        );
    }
}
