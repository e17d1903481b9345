//! Online slot migration over plain Redis servers (`distribution = "slots"`, in the style of
//! Codis): which slots are moving ([`Moving`], per pool), the command that moves keys before a
//! client's command runs on the new owner ([`move_command`]), the background mover that copies a
//! slot range ([`run_move`]) and the load figures migration plans are computed from
//! ([`server_load`]). The protocol is in docs/redis-proxy.md ("Slot migration").
//!
//! The mover and the load probe are blocking (std sockets): they run on a thread of their own,
//! never on a data-path executor.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use codec::resp::{Command, Frame, FrameDecoder, Limits};
use router::config::{RedisDistribution, RedisGroup};
use router::redis::{SLOT_COUNT, key_slot};

/// The slots of a group that move to another server, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moving {
    /// `to[slot]`: the new owner's server index, `u16::MAX` when the slot does not move.
    to: Box<[u16]>,
}

impl Moving {
    /// The moving slots of a group's slot table (`migrating_to`); None when nothing moves.
    pub fn from_group(g: &RedisGroup) -> Option<Moving> {
        if g.distribution != RedisDistribution::Slots {
            return None;
        }
        let mut to = vec![u16::MAX; SLOT_COUNT].into_boxed_slice();
        let mut any = false;
        for r in &g.slots {
            let Some(name) = &r.migrating_to else {
                continue;
            };
            let Some(index) = g.servers.iter().position(|s| &s.name == name) else {
                continue;
            };
            for slot in r.start..=r.end {
                if let Some(cell) = to.get_mut(usize::from(slot)) {
                    *cell = index as u16;
                    any = true;
                }
            }
        }
        any.then_some(Moving { to })
    }

    /// The new owner of `slot` while it moves.
    #[inline]
    pub fn target(&self, slot: u16) -> Option<usize> {
        match self.to.get(usize::from(slot)) {
            Some(&t) if t != u16::MAX => Some(usize::from(t)),
            _ => None,
        }
    }
}

/// `host` and `port` of a `host:port` address (`[v6]:port` too).
fn host_port(address: &str) -> (&str, &str) {
    match address.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => (address, "6379"),
    }
}

/// `MIGRATE host port "" db timeout REPLACE [AUTH ...] KEYS k...`: sent to the old owner, it moves
/// the keys (value and TTL) to the new one and deletes them on the old; `+NOKEY` when none was there.
pub fn move_command<'k>(
    to_address: &str,
    username: Option<&str>,
    password: Option<&str>,
    db: u32,
    timeout_ms: u64,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Bytes {
    let (host, port) = host_port(to_address);
    let db = db.to_string();
    let timeout = timeout_ms.max(1).to_string();
    let mut args: Vec<&[u8]> = vec![
        b"MIGRATE",
        host.as_bytes(),
        port.as_bytes(),
        b"",
        db.as_bytes(),
        timeout.as_bytes(),
        b"REPLACE",
    ];
    match (username, password) {
        (Some(u), Some(p)) => args.extend([b"AUTH2".as_slice(), u.as_bytes(), p.as_bytes()]),
        (None, Some(p)) => args.extend([b"AUTH".as_slice(), p.as_bytes()]),
        _ => {}
    }
    args.push(b"KEYS");
    let keys: Vec<&[u8]> = keys.into_iter().collect();
    args.extend(keys.iter().copied());
    Command::from_args(args).into_raw()
}

/// A server the mover talks to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Server name (messages).
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// AUTH user.
    pub username: Option<String>,
    /// AUTH password.
    pub password: Option<String>,
}

impl Endpoint {
    /// Server `name` of a group, with the group's credentials.
    pub fn of_group(g: &RedisGroup, name: &str) -> Option<Endpoint> {
        let s = g.servers.iter().find(|s| s.name == name)?;
        Some(Endpoint {
            name: s.name.clone(),
            address: s.address.clone(),
            username: g.username.clone(),
            password: g.password.clone(),
        })
    }
}

/// What the mover copies, and how fast.
#[derive(Debug, Clone)]
pub struct MoveSpec {
    /// The old owner.
    pub from: Endpoint,
    /// The new owner.
    pub to: Endpoint,
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// Keys per second at most (0: no limit).
    pub rate: u64,
    /// Keys per MIGRATE.
    pub batch: usize,
    /// Socket and MIGRATE timeout.
    pub timeout: Duration,
}

/// A mover's progress, read by the admin port while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Keys of the old owner looked at.
    pub scanned: AtomicU64,
    /// Keys moved by the mover (keys clients touched first were moved by the proxy).
    pub moved: AtomicU64,
    /// Full passes over the old owner's key space.
    pub passes: AtomicU64,
    /// Set to stop the mover after its current batch.
    pub stop: AtomicBool,
    /// The last error, if it failed.
    pub error: Mutex<Option<String>>,
}

/// A failed migration step.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// A socket error talking to a server.
    #[error("{server} ({address}): {source}")]
    Io {
        /// Server name.
        server: String,
        /// Its address.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// A server answered with an error.
    #[error("{server}: {command} answered {reply}")]
    Server {
        /// Server name.
        server: String,
        /// The command.
        command: &'static str,
        /// The error text.
        reply: String,
    },
    /// Stopped on request.
    #[error("stopped")]
    Stopped,
    /// Keys of the range keep appearing on the old owner (a writer that bypasses the proxy).
    #[error(
        "keys of slots {start}-{end} still appear on {server} after {passes} passes: a client writes to it past the proxy"
    )]
    KeepsAppearing {
        /// First slot.
        start: u16,
        /// Last slot.
        end: u16,
        /// The old owner.
        server: String,
        /// Passes made.
        passes: u64,
    },
}

/// A blocking RESP connection for the mover and the load probe.
struct Conn {
    ep: Endpoint,
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Conn {
    fn open(ep: &Endpoint, timeout: Duration) -> Result<Conn, MoveError> {
        let io = |source| MoveError::Io {
            server: ep.name.clone(),
            address: ep.address.clone(),
            source,
        };
        let addr = ep
            .address
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| io(std::io::Error::other("address resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let _ = stream.set_nodelay(true);
        let mut c = Conn {
            ep: ep.clone(),
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(Limits::default()),
        };
        match (ep.username.clone(), ep.password.clone()) {
            (Some(u), Some(p)) => {
                c.ok("AUTH", &[b"AUTH", u.as_bytes(), p.as_bytes()])?;
            }
            (None, Some(p)) => {
                c.ok("AUTH", &[b"AUTH", p.as_bytes()])?;
            }
            _ => {}
        }
        Ok(c)
    }

    fn io(&self, source: std::io::Error) -> MoveError {
        MoveError::Io {
            server: self.ep.name.clone(),
            address: self.ep.address.clone(),
            source,
        }
    }

    fn call(&mut self, name: &'static str, args: &[&[u8]]) -> Result<Frame, MoveError> {
        let raw = Command::from_args(args.iter().copied()).into_raw();
        self.call_raw(name, &raw)
    }

    fn call_raw(&mut self, name: &'static str, raw: &[u8]) -> Result<Frame, MoveError> {
        self.stream.write_all(raw).map_err(|e| self.io(e))?;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(Frame::Error(e))) => {
                    return Err(MoveError::Server {
                        server: self.ep.name.clone(),
                        command: name,
                        reply: String::from_utf8_lossy(&e).into_owned(),
                    });
                }
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(self.io(std::io::Error::other(e.to_string()))),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn ok(&mut self, name: &'static str, args: &[&[u8]]) -> Result<(), MoveError> {
        self.call(name, args).map(|_| ())
    }

    fn info(&mut self, section: &str) -> Result<String, MoveError> {
        match self.call("INFO", &[b"INFO", section.as_bytes()])? {
            Frame::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Frame::Verbatim { text, .. } => Ok(String::from_utf8_lossy(&text).into_owned()),
            other => Ok(format!("{other:?}")),
        }
    }
}

/// `(db, keys)` of every non-empty database in an `INFO keyspace` text.
fn keyspace(info: &str) -> Vec<(u32, u64)> {
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.strip_prefix("db")?.split_once(':')?;
            let keys = rest.split(',').find_map(|f| f.strip_prefix("keys="))?;
            Some((db.parse().ok()?, keys.trim().parse().ok()?))
        })
        .collect()
}

/// A numeric field of an INFO text.
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

/// Moves every key of slots `spec.start..=spec.end` from the old owner to the new one, with
/// `MIGRATE ... REPLACE KEYS` (values and TTLs; a key is never on both servers once MIGRATE
/// returned), in batches, at most `spec.rate` keys per second; repeats full passes over the old
/// owner's key space until one finds no key of the range. Clients' commands meanwhile move their
/// own keys first (the proxy's part), so no key of the range is written on the old owner. Returns
/// the keys the mover moved.
pub fn run_move(spec: &MoveSpec, progress: &Progress) -> Result<u64, MoveError> {
    const MAX_PASSES: u64 = 16;
    let mut c = Conn::open(&spec.from, spec.timeout)?;
    let started = Instant::now();
    let mut moved_total = 0u64;
    let batch = spec.batch.clamp(1, 1000);
    let in_range = |k: &[u8]| (spec.start..=spec.end).contains(&key_slot(k));
    loop {
        if progress.passes.load(Relaxed) >= MAX_PASSES {
            return Err(MoveError::KeepsAppearing {
                start: spec.start,
                end: spec.end,
                server: spec.from.name.clone(),
                passes: MAX_PASSES,
            });
        }
        let mut found = 0u64;
        for (db, _) in keyspace(&c.info("keyspace")?) {
            c.ok("SELECT", &[b"SELECT", db.to_string().as_bytes()])?;
            let mut cursor = b"0".to_vec();
            loop {
                if progress.stop.load(Relaxed) {
                    return Err(MoveError::Stopped);
                }
                let reply = c.call("SCAN", &[b"SCAN", &cursor, b"COUNT", b"1000"])?;
                let Frame::Array(mut parts) = reply else {
                    break;
                };
                let keys = match parts.pop() {
                    Some(Frame::Array(k)) => k,
                    _ => Vec::new(),
                };
                cursor = match parts.pop() {
                    Some(Frame::Bulk(b)) => b.to_vec(),
                    _ => b"0".to_vec(),
                };
                progress.scanned.fetch_add(keys.len() as u64, Relaxed);
                let mine: Vec<Bytes> = keys
                    .into_iter()
                    .filter_map(|f| match f {
                        Frame::Bulk(b) if in_range(&b) => Some(b),
                        _ => None,
                    })
                    .collect();
                found += mine.len() as u64;
                for chunk in mine.chunks(batch) {
                    let raw = move_command(
                        &spec.to.address,
                        spec.to.username.as_deref(),
                        spec.to.password.as_deref(),
                        db,
                        spec.timeout.as_millis() as u64,
                        chunk.iter().map(|k| k.as_ref()),
                    );
                    c.call_raw("MIGRATE", &raw)?;
                    moved_total += chunk.len() as u64;
                    progress.moved.fetch_add(chunk.len() as u64, Relaxed);
                    if spec.rate > 0 {
                        // Keep to the rate: moved keys may not run ahead of elapsed time.
                        let due = Duration::from_secs_f64(moved_total as f64 / spec.rate as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                if cursor == b"0" {
                    break;
                }
            }
        }
        progress.passes.fetch_add(1, Relaxed);
        if found == 0 {
            return Ok(moved_total);
        }
    }
}

/// What a server holds, for migration plans.
#[derive(Debug, Clone, Default)]
pub struct ServerLoad {
    /// Keys in every database (`INFO keyspace`).
    pub keys: u64,
    /// `used_memory` (`INFO memory`).
    pub used_memory: u64,
    /// Slots of keys sampled with `RANDOMKEY` (in proportion to each database's keys).
    pub sampled_slots: Vec<u16>,
}

/// Keys, memory and a slot sample of up to `samples` random keys of one server.
pub fn server_load(
    ep: &Endpoint,
    samples: usize,
    timeout: Duration,
) -> Result<ServerLoad, MoveError> {
    let mut c = Conn::open(ep, timeout)?;
    let dbs = keyspace(&c.info("keyspace")?);
    let keys: u64 = dbs.iter().map(|(_, k)| k).sum();
    let used_memory = info_field(&c.info("memory")?, "used_memory").unwrap_or(0);
    let mut sampled_slots = Vec::with_capacity(samples);
    for (db, n) in &dbs {
        let want = ((samples as u128 * u128::from(*n)) / u128::from(keys.max(1))) as usize;
        if want == 0 {
            continue;
        }
        c.ok("SELECT", &[b"SELECT", db.to_string().as_bytes()])?;
        for _ in 0..want {
            if let Frame::Bulk(k) = c.call("RANDOMKEY", &[b"RANDOMKEY"])? {
                sampled_slots.push(key_slot(&k));
            }
        }
    }
    Ok(ServerLoad {
        keys,
        used_memory,
        sampled_slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_command_bytes() {
        let raw = move_command(
            "127.0.0.1:7002",
            None,
            None,
            3,
            500,
            [b"k1".as_slice(), b"k2"],
        );
        assert_eq!(
            &raw[..],
            b"*10\r\n$7\r\nMIGRATE\r\n$9\r\n127.0.0.1\r\n$4\r\n7002\r\n$0\r\n\r\n$1\r\n3\r\n$3\r\n500\r\n$7\r\nREPLACE\r\n$4\r\nKEYS\r\n$2\r\nk1\r\n$2\r\nk2\r\n"
        );
        let raw = move_command("[::1]:7002", Some("u"), Some("p"), 0, 1, [b"k".as_slice()]);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("$3\r\n::1\r\n"), "{text}");
        assert!(
            text.contains("$5\r\nAUTH2\r\n$1\r\nu\r\n$1\r\np\r\n$4\r\nKEYS"),
            "{text}"
        );
        let raw = move_command("h:1", None, Some("pw"), 0, 1, [b"k".as_slice()]);
        assert!(String::from_utf8_lossy(&raw).contains("$4\r\nAUTH\r\n$2\r\npw\r\n"));
    }

    #[test]
    fn keyspace_and_info_fields() {
        let info =
            "# Keyspace\r\ndb0:keys=12,expires=1,avg_ttl=5\r\ndb3:keys=4,expires=0,avg_ttl=0\r\n";
        assert_eq!(keyspace(info), vec![(0, 12), (3, 4)]);
        assert_eq!(keyspace("# Keyspace\r\n"), vec![]);
        assert_eq!(
            info_field(
                "used_memory:1024\r\nused_memory_human:1K\r\n",
                "used_memory"
            ),
            Some(1024)
        );
    }

    #[test]
    fn moving_slots_from_a_slot_table() {
        let toml = r#"
[proxy]
[[listeners]]
name = "r"
kind = "redis"
address = "127.0.0.1:0"
group = "g"
[redis_groups.g]
distribution = "slots"
servers = [{ name = "a", address = "127.0.0.1:1" }, { name = "b", address = "127.0.0.1:2" }]
slots = [{ range = "0-99", server = "a", migrating_to = "b" }, { range = "100-16383", server = "a" }]
"#;
        let cfg = router::config::parse("t", toml).expect("config");
        let m = Moving::from_group(cfg.redis_group("g").expect("group")).expect("moving");
        assert_eq!(m.target(0), Some(1));
        assert_eq!(m.target(99), Some(1));
        assert_eq!(m.target(100), None);
        let err = router::config::parse(
            "t",
            &toml.replace("migrating_to = \"b\"", "migrating_to = \"a\""),
        )
        .expect_err("moving to its own server");
        assert!(
            err.to_string().contains("must name another server"),
            "{err}"
        );
    }
}
