//! Proxy-level distributed locks on a Redis listener: `FURROW.LOCK name ttl_ms [WAIT timeout_ms]`
//! and `FURROW.UNLOCK name` (docs/redis-proxy.md, "Distributed locks").
//!
//! Backend: the listener's own Redis group. A lock's keys share the hash tag
//! `{furrow:lock:NAME}`, so every proxy of a fleet (same group, same distribution) sends a name to
//! the same server, which decides alone, one Lua script at a time:
//! - `…:lease`: the holder id, set with `SET NX PX ttl_ms` (the lease);
//! - `…:token`: the fencing-token counter, `INCR`ed in the same script that takes the lease;
//! - `…:queue` (sorted set, score = arrival number from `…:seq`) and `…:waiters` (hash, waiter →
//!   expiry in ms, server time): the FIFO of waiters. A waiter may take the lease only when the
//!   queue is empty or it is at the head; heads whose entry expired (their proxy died or their
//!   client left) are dropped first.
//!
//! Each client session that uses locks gets one holder id. The proxy renews the leases the
//! session holds every `ttl/3` while the client connection is open, releases them (compare and
//! delete) when it closes, and a proxy that dies (kill -9) stops renewing: its leases end at
//! their ttl. Waiting is polling (2 ms doubling to 25 ms) of the acquire script, which refreshes
//! the waiter's entry ([`WAITER_TTL_MS`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::resp::{Command, RespVersion};

use crate::backend::Dest;
use crate::reply::Client;
use crate::session::CoreCtx;

/// Shortest lease accepted (ms).
pub const MIN_TTL_MS: u64 = 100;
/// Longest lease accepted (ms).
pub const MAX_TTL_MS: u64 = 3_600_000;
/// Longest `WAIT` accepted (ms).
pub const MAX_WAIT_MS: u64 = 3_600_000;
/// Most locks one client session may hold.
pub const MAX_HELD: usize = 64;
/// How long a waiter's queue entry lives without a refresh (each poll refreshes it).
pub const WAITER_TTL_MS: u64 = 2_000;

/// Takes the lease when the queue lets this waiter, and bumps the fencing token.
/// KEYS: lease, token, queue, waiters, seq. ARGV: holder, ttl_ms, waiter_ttl_ms, queue (0/1).
/// Returns the token, or 0 (not taken; queued when ARGV[4] is 1).
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
while true do
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not head or head == me then break end
  local exp = tonumber(redis.call('HGET', KEYS[4], head) or '0')
  if exp > now then break end
  redis.call('ZREM', KEYS[3], head)
  redis.call('HDEL', KEYS[4], head)
end
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if (not head or head == me) and redis.call('SET', KEYS[1], me, 'NX', 'PX', ARGV[2]) then
  redis.call('ZREM', KEYS[3], me)
  redis.call('HDEL', KEYS[4], me)
  return redis.call('INCR', KEYS[2])
end
if ARGV[4] == '1' then
  if not redis.call('ZSCORE', KEYS[3], me) then
    redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[5]), me)
  end
  local wttl = tonumber(ARGV[3])
  redis.call('HSET', KEYS[4], me, now + wttl)
  redis.call('PEXPIRE', KEYS[3], wttl * 2)
  redis.call('PEXPIRE', KEYS[4], wttl * 2)
end
return 0
";

/// Compare and delete. KEYS: lease. ARGV: holder. Returns 1 when it was the holder's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Compare and extend. KEYS: lease. ARGV: holder, ttl_ms. Returns 1 when it was the holder's.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// Leaves the queue. KEYS: queue, waiters. ARGV: waiter.
const LEAVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 0
";

/// A lock command.
#[derive(Debug, PartialEq, Eq)]
pub enum LockCall {
    /// `FURROW.LOCK name ttl_ms [WAIT timeout_ms]`.
    Lock {
        /// Lock name.
        name: String,
        /// Lease length.
        ttl_ms: u64,
        /// How long to wait in the queue (0: try once).
        wait_ms: u64,
    },
    /// `FURROW.UNLOCK name`.
    Unlock {
        /// Lock name.
        name: String,
    },
}

/// Whether `name` is one of this module's commands.
pub fn is_lock_command(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"FURROW.LOCK") || name.eq_ignore_ascii_case(b"FURROW.UNLOCK")
}

fn number(b: &[u8], max: u64) -> Option<u64> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|v| *v <= max)
}

/// Parses a lock command (its name checked by [`is_lock_command`]); `Err` is the error message.
pub fn parse(cmd: &Command) -> Result<LockCall, String> {
    let lock = cmd.name().eq_ignore_ascii_case(b"FURROW.LOCK");
    let usage = if lock {
        format!(
            "usage: FURROW.LOCK name ttl_ms [WAIT timeout_ms] (name: 1..64 of A-Z a-z 0-9 _ . : -; \
             ttl_ms: {MIN_TTL_MS}..{MAX_TTL_MS}; timeout_ms: 0..{MAX_WAIT_MS})"
        )
    } else {
        "usage: FURROW.UNLOCK name".to_string()
    };
    let name = cmd
        .arg(1)
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(b))
        })
        .map(|n| String::from_utf8_lossy(n).into_owned());
    let Some(name) = name else {
        return Err(usage);
    };
    if !lock {
        return if cmd.len() == 2 {
            Ok(LockCall::Unlock { name })
        } else {
            Err(usage)
        };
    }
    let ttl_ms = cmd
        .arg(2)
        .and_then(|b| number(b, MAX_TTL_MS))
        .filter(|t| *t >= MIN_TTL_MS);
    let wait_ms = match (cmd.len(), cmd.arg(3), cmd.arg(4)) {
        (3, _, _) => Some(0),
        (5, Some(w), Some(v)) if w.eq_ignore_ascii_case(b"WAIT") => number(v, MAX_WAIT_MS),
        _ => None,
    };
    match (ttl_ms, wait_ms) {
        (Some(ttl_ms), Some(wait_ms)) => Ok(LockCall::Lock {
            name,
            ttl_ms,
            wait_ms,
        }),
        _ => Err(usage),
    }
}

/// The keys of lock `name`: lease, token, queue, waiters, seq.
fn keys(name: &str) -> [String; 5] {
    ["lease", "token", "queue", "waiters", "seq"].map(|k| format!("{{furrow:lock:{name}}}:{k}"))
}

/// `EVAL script numkeys keys... args...` as a RESP command.
fn eval(script: &str, keys: &[&str], args: &[&str]) -> Bytes {
    let n = keys.len().to_string();
    let mut all: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), n.as_bytes()];
    all.extend(keys.iter().map(|k| k.as_bytes()));
    all.extend(args.iter().map(|a| a.as_bytes()));
    let mut b = format!("*{}\r\n", all.len()).into_bytes();
    for a in all {
        b.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        b.extend_from_slice(a);
        b.extend_from_slice(b"\r\n");
    }
    Bytes::from(b)
}

/// The integer a script answered, or the error to give the client.
fn integer(reply: &[u8]) -> Result<i64, String> {
    let line = reply.strip_suffix(b"\r\n").unwrap_or(reply);
    match line.split_first() {
        Some((b':', n)) => std::str::from_utf8(n)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "furrow lock: malformed reply from the lock server".to_string()),
        Some((b'-', e)) => Err(format!(
            "furrow lock: lock server: {}",
            String::from_utf8_lossy(e)
        )),
        _ => Err("furrow lock: unexpected reply from the lock server".to_string()),
    }
}

/// One lock held by a session.
struct Held {
    token: i64,
    ttl_ms: u64,
}

struct Inner {
    core: Rc<CoreCtx>,
    /// This session's holder (and waiter) id, unique across proxies.
    holder: String,
    /// Picks the shared backend connection (as the session's own id does).
    conn_id: u64,
    held: RefCell<HashMap<String, Held>>,
    /// The session ended: release, stop waiting, stop renewing.
    closed: Cell<bool>,
    /// A lock command is waiting in a queue.
    waiting: Cell<bool>,
    renewing: Cell<bool>,
}

/// The locks of one client session.
pub struct Locks(Rc<Inner>);

impl Locks {
    /// The lock state of session `id`.
    pub fn new(core: Rc<CoreCtx>, id: u64) -> Self {
        let holder = format!("{:016x}:{id:x}", random_u64());
        Locks(Rc::new(Inner {
            core,
            holder,
            conn_id: id,
            held: RefCell::default(),
            closed: Cell::new(false),
            waiting: Cell::new(false),
            renewing: Cell::new(false),
        }))
    }

    /// Whether a lock command of the session waits in a queue (a client that leaves meanwhile is
    /// dropped at once, as a blocked one).
    pub fn waiting(&self) -> bool {
        self.0.waiting.get()
    }

    /// Runs `call`; its reply goes to `client`'s slot `seq`.
    pub fn start(&self, call: LockCall, client: Rc<Client>, seq: u64) {
        let inner = self.0.clone();
        tokio::task::spawn_local(async move {
            let resp3 = client.q.borrow().version == RespVersion::Resp3;
            let reply = match call {
                LockCall::Lock {
                    name,
                    ttl_ms,
                    wait_ms,
                } => match lock(&inner, name, ttl_ms, wait_ms).await {
                    Ok(Some(t)) => format!(":{t}\r\n").into_bytes(),
                    Ok(None) if resp3 => b"_\r\n".to_vec(),
                    Ok(None) => b"$-1\r\n".to_vec(),
                    Err(e) => format!("-ERR {e}\r\n").into_bytes(),
                },
                LockCall::Unlock { name } => match unlock(&inner, &name).await {
                    Ok(n) => format!(":{n}\r\n").into_bytes(),
                    Err(e) => format!("-ERR {e}\r\n").into_bytes(),
                },
            };
            client.q.borrow_mut().deliver(seq, &reply);
            client.wake.notify();
        });
    }

    /// The session ended: releases what it holds (a waiting command leaves its queue itself).
    pub fn close(self) {
        let inner = self.0;
        inner.closed.set(true);
        let held: Vec<String> = inner.held.borrow_mut().drain().map(|(n, _)| n).collect();
        if held.is_empty() {
            return;
        }
        tokio::task::spawn_local(async move {
            for name in held {
                let k = keys(&name);
                if let Err(e) = run(&inner, &k[0], eval(RELEASE, &[&k[0]], &[&inner.holder])).await
                {
                    tracing::debug!(lock = %name, "furrow lock: release on close failed: {e}");
                }
            }
        });
    }
}

/// Sends `raw` to the server of `key` on a shared connection of the listener's group and waits
/// for its integer reply.
async fn run(inner: &Inner, key: &str, raw: Bytes) -> Result<i64, String> {
    let pool = inner.core.current_pool();
    let server = pool.shard(key.as_bytes());
    let Some(conn) = pool.conn(server, 0, false, inner.conn_id) else {
        return Err("furrow lock: no server for the lock's key".to_string());
    };
    let me = Rc::new(Client::new(RespVersion::Resp2));
    let seq = me.q.borrow_mut().push_pending();
    conn.send(
        &raw,
        [Dest::Whole(me.clone(), seq)],
        Instant::now(),
        "furrow.lock",
    )
    .map_err(|e| {
        let r = e.reply();
        String::from_utf8_lossy(r.get(1..).unwrap_or_default())
            .trim_end()
            .to_string()
    })?;
    while me.q.borrow().pending() > 0 {
        me.wake.notified().await;
    }
    let out = std::mem::take(&mut me.q.borrow_mut().out);
    integer(&out)
}

async fn lock(
    inner: &Rc<Inner>,
    name: String,
    ttl_ms: u64,
    wait_ms: u64,
) -> Result<Option<i64>, String> {
    if let Some(h) = inner.held.borrow().get(&name) {
        // Held by this session already: it stays held, with its token.
        return Ok(Some(h.token));
    }
    if inner.held.borrow().len() >= MAX_HELD {
        return Err(format!(
            "furrow lock: a client holds at most {MAX_HELD} locks"
        ));
    }
    let k = keys(&name);
    let kr: Vec<&str> = k.iter().map(String::as_str).collect();
    let (ttl, wttl) = (ttl_ms.to_string(), WAITER_TTL_MS.to_string());
    let queue = if wait_ms > 0 { "1" } else { "0" };
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut pause = Duration::from_millis(2);
    inner.waiting.set(wait_ms > 0);
    let got = loop {
        let r = run(
            inner,
            &k[0],
            eval(ACQUIRE, &kr, &[&inner.holder, &ttl, &wttl, queue]),
        )
        .await;
        match r {
            Ok(t) if t > 0 => break Ok(Some(t)),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
        let now = Instant::now();
        if wait_ms == 0 || now >= deadline || inner.closed.get() {
            break Ok(None);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    };
    inner.waiting.set(false);
    if wait_ms > 0 && !matches!(got, Ok(Some(_))) {
        // Out of the queue at once rather than at the entry's expiry.
        let _ = run(inner, &k[0], eval(LEAVE, &[&k[2], &k[3]], &[&inner.holder])).await;
    }
    let token = match got {
        Ok(Some(t)) => t,
        other => return other,
    };
    if inner.closed.get() {
        // The client left while this waited: give the lease back.
        let _ = run(inner, &k[0], eval(RELEASE, &[&k[0]], &[&inner.holder])).await;
        return Ok(None);
    }
    inner.held.borrow_mut().insert(name, Held { token, ttl_ms });
    if !inner.renewing.replace(true) {
        tokio::task::spawn_local(renew(Rc::downgrade(inner)));
    }
    Ok(Some(token))
}

async fn unlock(inner: &Inner, name: &str) -> Result<i64, String> {
    if inner.held.borrow_mut().remove(name).is_none() {
        return Ok(0);
    }
    let k = keys(name);
    run(inner, &k[0], eval(RELEASE, &[&k[0]], &[&inner.holder])).await
}

/// Renews the session's leases every `ttl/3` while it holds any and is open; a lease found lost
/// (expired and maybe taken) is dropped from the held set (its unlock then answers 0).
async fn renew(weak: Weak<Inner>) {
    loop {
        let every = {
            let Some(inner) = weak.upgrade() else { return };
            let min = inner.held.borrow().values().map(|h| h.ttl_ms).min();
            match min {
                Some(ms) if !inner.closed.get() => Duration::from_millis((ms / 3).max(1)),
                _ => {
                    inner.renewing.set(false);
                    return;
                }
            }
        };
        tokio::time::sleep(every).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.get() {
            return;
        }
        let now: Vec<(String, u64)> = inner
            .held
            .borrow()
            .iter()
            .map(|(n, h)| (n.clone(), h.ttl_ms))
            .collect();
        for (name, ttl_ms) in now {
            let k = keys(&name);
            let r = run(
                &inner,
                &k[0],
                eval(RENEW, &[&k[0]], &[&inner.holder, &ttl_ms.to_string()]),
            )
            .await;
            if r == Ok(0) {
                tracing::warn!(lock = %name, "furrow lock: lease lost before renewal");
                inner.held.borrow_mut().remove(&name);
            }
        }
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::resp::{CommandDecoder, Limits};

    fn cmd(args: &[&str]) -> Command {
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend(format!("${}\r\n{}\r\n", a.len(), a).bytes());
        }
        let mut buf = bytes::BytesMut::from(&b[..]);
        CommandDecoder::new(Limits::default())
            .decode(&mut buf)
            .expect("decode")
            .expect("one command")
    }

    #[test]
    fn lock_commands_parse_exactly() {
        assert_eq!(
            parse(&cmd(&["furrow.lock", "jobs.nightly", "5000"])),
            Ok(LockCall::Lock {
                name: "jobs.nightly".into(),
                ttl_ms: 5000,
                wait_ms: 0
            })
        );
        assert_eq!(
            parse(&cmd(&["FURROW.LOCK", "a-b:c", "100", "wait", "250"])),
            Ok(LockCall::Lock {
                name: "a-b:c".into(),
                ttl_ms: 100,
                wait_ms: 250
            })
        );
        assert_eq!(
            parse(&cmd(&["Furrow.Unlock", "x"])),
            Ok(LockCall::Unlock { name: "x".into() })
        );
        let long = "a".repeat(65);
        for bad in [
            vec!["FURROW.LOCK", "x"],
            vec!["FURROW.LOCK", "x", "99"],
            vec!["FURROW.LOCK", "x", "3600001"],
            vec!["FURROW.LOCK", "x", "-1"],
            vec!["FURROW.LOCK", "x", "+100"],
            vec!["FURROW.LOCK", "", "100"],
            vec!["FURROW.LOCK", "a}b", "100"],
            vec!["FURROW.LOCK", &long, "100"],
            vec!["FURROW.LOCK", "x", "100", "WAIT"],
            vec!["FURROW.LOCK", "x", "100", "WAIT", "3600001"],
            vec!["FURROW.LOCK", "x", "100", "NX", "5"],
            vec!["FURROW.UNLOCK"],
            vec!["FURROW.UNLOCK", "x", "y"],
        ] {
            assert!(parse(&cmd(&bad)).is_err(), "{bad:?}");
        }
        assert!(is_lock_command(b"furrow.unlock"));
        assert!(!is_lock_command(b"FURROW"));
    }

    #[test]
    fn keys_share_one_hash_tag_and_replies_parse() {
        let k = keys("n");
        let slots: Vec<u16> = k
            .iter()
            .map(|k| router::redis::key_slot(k.as_bytes()))
            .collect();
        assert!(slots.iter().all(|s| *s == slots[0]), "{k:?}");
        assert_eq!(integer(b":42\r\n"), Ok(42));
        assert!(
            integer(b"-NOSCRIPT x\r\n")
                .unwrap_err()
                .contains("NOSCRIPT x")
        );
        assert!(integer(b"$-1\r\n").is_err());
    }
}
