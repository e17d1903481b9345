//! The harness's own Redis load: a mix of single- and multi-key commands that redis-benchmark
//! cannot produce (MGET/MSET/DEL across shards), pipelined, over plain TCP.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{LoadRun, Rng, drive};

/// Parameters of the mixed multi-key Redis load.
#[derive(Debug, Clone)]
pub struct MixParams {
    /// Target address.
    pub addr: SocketAddr,
    /// Connections, one thread each.
    pub clients: usize,
    /// Commands per round trip.
    pub pipeline: usize,
    /// Run time limit.
    pub duration: Duration,
    /// Request count limit.
    pub max_requests: u64,
    /// Keys are `mix:0 .. mix:keyspace-1`.
    pub keyspace: u64,
    /// Value size in bytes.
    pub value_size: usize,
}

/// The command mix, in percent: GET 40, SET 20, MGET of 4 keys 25, MSET of 2 pairs 10, DEL of 2 keys 5.
pub const MIX: &str = "GET 40% / SET 20% / MGET 4 keys 25% / MSET 2 pairs 10% / DEL 2 keys 5%";

/// Appends one RESP command (array of bulk strings).
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends one command drawn from [`MIX`].
pub fn mixed_command(out: &mut Vec<u8>, rng: &mut Rng, keyspace: u64, value: &[u8]) {
    let roll = rng.below(100);
    let key = |rng: &mut Rng| format!("mix:{}", rng.below(keyspace)).into_bytes();
    match roll {
        0..40 => {
            let k = key(rng);
            encode_command(out, &[b"GET", &k]);
        }
        40..60 => {
            let k = key(rng);
            encode_command(out, &[b"SET", &k, value]);
        }
        60..85 => {
            let ks: Vec<Vec<u8>> = (0..4).map(|_| key(rng)).collect();
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(ks.iter().map(Vec::as_slice));
            encode_command(out, &args);
        }
        85..95 => {
            let (a, b) = (key(rng), key(rng));
            encode_command(out, &[b"MSET", &a, value, &b, value]);
        }
        _ => {
            let (a, b) = (key(rng), key(rng));
            encode_command(out, &[b"DEL", &a, &b]);
        }
    }
}

/// Reads one complete reply; returns whether it was (or contained) an error reply.
pub fn read_reply<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    r.read_until(b'\n', line)?;
    if line.len() < 3 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad RESP reply");
    let num = |l: &[u8]| -> std::io::Result<i64> {
        std::str::from_utf8(&l[1..l.len() - 2])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    match line[0] {
        b'+' | b':' => Ok(false),
        b'-' => Ok(true),
        b'$' => {
            let n = num(line)?;
            if n >= 0 {
                let mut skip = vec![0u8; n as usize + 2];
                r.read_exact(&mut skip)?;
            }
            Ok(false)
        }
        b'*' => {
            let n = num(line)?;
            let mut err = false;
            for _ in 0..n.max(0) {
                err |= read_reply(r, line)?;
            }
            Ok(err)
        }
        _ => Err(bad()),
    }
}

/// Runs the mixed load against one target.
pub fn run(p: &MixParams) -> Result<LoadRun, String> {
    let value = vec![b'v'; p.value_size];
    drive(p.clients, p.duration, p.max_requests, |i| {
        let stream = TcpStream::connect_timeout(&p.addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {}: {e}", p.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut rng = Rng::new(i as u64 + 1);
        let mut out = Vec::with_capacity(4096);
        let mut line = Vec::with_capacity(64);
        let value = value.clone();
        let (pipeline, keyspace) = (p.pipeline.max(1), p.keyspace.max(1));
        Ok(move || {
            out.clear();
            for _ in 0..pipeline {
                mixed_command(&mut out, &mut rng, keyspace, &value);
            }
            writer.write_all(&out).map_err(|e| e.to_string())?;
            let mut errors = 0;
            for _ in 0..pipeline {
                if read_reply(&mut reader, &mut line).map_err(|e| e.to_string())? {
                    errors += 1;
                }
            }
            Ok((pipeline as u64, errors))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_resp_arrays() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"GET", b"k1"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n");
    }

    #[test]
    fn reads_nested_replies_and_flags_errors() {
        let data =
            b"+OK\r\n$-1\r\n*3\r\n$2\r\nab\r\n$-1\r\n:5\r\n-ERR no\r\n*2\r\n+a\r\n-ERR x\r\n";
        let mut r = std::io::BufReader::new(&data[..]);
        let mut line = Vec::new();
        let got: Vec<bool> = (0..5)
            .map(|_| read_reply(&mut r, &mut line).unwrap())
            .collect();
        assert_eq!(got, [false, false, false, true, true]);
        assert!(read_reply(&mut r, &mut line).is_err(), "EOF is an error");
    }

    #[test]
    fn mix_proportions_roughly_hold() {
        let mut rng = Rng::new(3);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let mut out = Vec::new();
            mixed_command(&mut out, &mut rng, 1000, b"0123456789abcdef");
            let cmd = String::from_utf8_lossy(&out)
                .split("\r\n")
                .nth(2)
                .unwrap_or("")
                .to_string();
            *counts.entry(cmd).or_insert(0u32) += 1;
        }
        let get = counts["GET"];
        let mget = counts["MGET"];
        assert!((3700..4300).contains(&get), "{counts:?}");
        assert!((2200..2800).contains(&mget), "{counts:?}");
        assert!(
            counts.contains_key("DEL") && counts.contains_key("MSET") && counts.contains_key("SET")
        );
    }
}
