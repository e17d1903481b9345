//! Redis Sentinel discovery: the current primary address of each server of a group.
//!
//! One watcher thread per (sentinels, masters) set, shared by every core's pool of the process
//! (through [`Watches`] in [`crate::RedisShared`]). It
//! asks a sentinel `SENTINEL get-master-addr-by-name` for every master at start and every
//! [`POLL_EVERY`], and stays subscribed to `+switch-master` on the same sentinel, so a failover
//! is seen as soon as the sentinel announces it. Each change bumps [`Watch::epoch`]; pools compare
//! it with the epoch they were built at and rebuild their connections to the new address. The
//! watcher ends when no pool holds its [`Watch`] any more.
//!
//! The thread uses blocking sockets with short timeouts: it is off the data path and its I/O is
//! a few small commands a second. A group with `tls` reaches its sentinels over TLS too (their
//! `tls-port`), verified against the group's CA for its `server_name` or each sentinel's host.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use router::config::BackendTls;
use runtime::BackendState;

/// How often the sentinels are asked again (also the wait for a `+switch-master` message).
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// Connect and reply timeout for sentinel connections.
const IO_TIMEOUT: Duration = Duration::from_millis(1000);
/// Largest reply element accepted from a sentinel.
const MAX_ELEMENT: usize = 64 * 1024;

/// The primaries a set of sentinels reports, shared by the pools that use them.
pub struct Watch {
    sentinels: Vec<String>,
    tls: Option<BackendTls>,
    masters: Vec<String>,
    /// Master name → `host:port` as last reported.
    addrs: Mutex<HashMap<String, String>>,
    /// Bumped on every address change.
    epoch: AtomicU64,
    /// Backend states of each master's server, cleared of failures when its address changes.
    states: Mutex<Vec<(String, Weak<BackendState>)>>,
}

impl Watch {
    /// The current primary address of `master`, if a sentinel reported one.
    pub fn address(&self, master: &str) -> Option<String> {
        lock(&self.addrs).get(master).cloned()
    }

    /// Changes seen so far (pools rebuild when it differs from the one they were built at).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    /// Registers the backend state of `master`'s server, to clear it of failures on a failover.
    pub fn track(&self, master: &str, state: &Arc<BackendState>) {
        let mut v = lock(&self.states);
        v.retain(|(_, w)| w.strong_count() > 0);
        if !v
            .iter()
            .any(|(m, w)| m == master && w.as_ptr() == Arc::as_ptr(state))
        {
            v.push((master.to_string(), Arc::downgrade(state)));
        }
    }

    /// Records `addr` as `master`'s primary; returns whether it changed.
    fn set(&self, master: &str, addr: String) -> bool {
        let mut m = lock(&self.addrs);
        if m.get(master) == Some(&addr) {
            return false;
        }
        let old = m.insert(master.to_string(), addr.clone());
        drop(m);
        if old.is_some() {
            tracing::warn!(master, new = %addr, old = ?old, "sentinel: primary changed");
            for (name, w) in lock(&self.states).iter() {
                if name == master
                    && let Some(s) = w.upgrade()
                {
                    s.clear_failures();
                }
            }
        } else {
            tracing::info!(master, address = %addr, "sentinel: primary found");
        }
        self.epoch.fetch_add(1, Relaxed);
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Key of a watch: the sentinels, the masters and the TLS settings (CA, server name).
type WatchKey = (Vec<String>, Vec<String>, Option<(String, Option<String>)>);

/// The watches of one process, shared by every core's pools (kept in [`crate::RedisShared`]).
#[derive(Default)]
pub struct Watches(Mutex<HashMap<WatchKey, Weak<Watch>>>);

impl Watches {
    /// The watch for `masters` through `sentinels`, shared with other pools of the process that
    /// use the same ones; a new one asks the sentinels once before returning (so the first
    /// connections go to the right primary) and starts its watcher thread.
    pub fn watch(
        &self,
        sentinels: &[String],
        masters: &[String],
        tls: Option<&BackendTls>,
    ) -> Arc<Watch> {
        let key = (
            sentinels.to_vec(),
            masters.to_vec(),
            tls.map(|t| (t.ca.clone(), t.server_name.clone())),
        );
        let mut all = lock(&self.0);
        all.retain(|_, w| w.strong_count() > 0);
        if let Some(w) = all.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        let w = Arc::new(Watch {
            sentinels: sentinels.to_vec(),
            tls: tls.cloned(),
            masters: masters.to_vec(),
            addrs: Mutex::default(),
            epoch: AtomicU64::new(0),
            states: Mutex::default(),
        });
        for s in sentinels {
            match Conn::open(s, w.tls.as_ref()).and_then(|mut c| query_all(&w, &mut c)) {
                Ok(()) => break,
                Err(e) => tracing::warn!(sentinel = %s, "sentinel connection failed: {e}"),
            }
        }
        all.insert(key, Arc::downgrade(&w));
        let weak = Arc::downgrade(&w);
        let spawned = std::thread::Builder::new()
            .name("furrow-sentinel".into())
            .spawn(move || watcher(weak));
        if let Err(e) = spawned {
            tracing::error!("cannot start the sentinel watcher thread: {e}");
        }
        w
    }
}

/// The watcher thread: one sentinel at a time, the next one when it fails.
fn watcher(weak: Weak<Watch>) {
    let mut next = 0usize;
    loop {
        let Some(w) = weak.upgrade() else { return };
        let Some(addr) = w.sentinels.get(next % w.sentinels.len().max(1)).cloned() else {
            return;
        };
        let tls = w.tls.clone();
        drop(w);
        if let Err(e) = follow(&weak, &addr, tls.as_ref()) {
            tracing::warn!(sentinel = %addr, "sentinel connection failed: {e}");
            next += 1;
            std::thread::sleep(POLL_EVERY);
        }
    }
}

/// Follows one sentinel until it fails (Err) or the watch is dropped (Ok).
fn follow(weak: &Weak<Watch>, addr: &str, tls: Option<&BackendTls>) -> io::Result<()> {
    let mut query = Conn::open(addr, tls)?;
    let mut sub = Conn::open(addr, tls)?;
    sub.send(&["SUBSCRIBE", "+switch-master"])?;
    sub.read()?;
    sub.stream
        .get_ref()
        .tcp()
        .set_read_timeout(Some(POLL_EVERY))?;
    loop {
        let Some(w) = weak.upgrade() else {
            return Ok(());
        };
        query_all(&w, &mut query)?;
        match sub.read() {
            Ok(Value::Array(items)) => {
                // ["message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"]
                if let Some(Value::Bulk(text)) = items.get(2) {
                    let f: Vec<&str> = text.split(' ').collect();
                    if let [name, _, _, ip, port] = f.as_slice()
                        && w.masters.iter().any(|m| m == name)
                    {
                        w.set(name, format!("{ip}:{port}"));
                    }
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // No message within POLL_EVERY: poll again. A timeout in the middle of a frame
                // lost bytes, so the connection then starts over.
                if sub.partial {
                    return Err(io::Error::other("partial message after a timeout"));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Asks the sentinel behind `c` for the primary of every master of `w`.
fn query_all(w: &Watch, c: &mut Conn) -> io::Result<()> {
    for m in &w.masters {
        c.send(&["SENTINEL", "get-master-addr-by-name", m])?;
        match c.read()? {
            Value::Array(v) => {
                if let [Value::Bulk(ip), Value::Bulk(port)] = v.as_slice() {
                    w.set(m, format!("{ip}:{port}"));
                }
            }
            Value::Nil => tracing::warn!(master = %m, "sentinel does not know this master"),
            Value::Error(e) => return Err(io::Error::other(format!("sentinel error: {e}"))),
            _ => {}
        }
    }
    Ok(())
}

/// A reply from a sentinel.
#[derive(Debug, PartialEq)]
enum Value {
    Bulk(String),
    Int,
    Nil,
    Error(String),
    Array(Vec<Value>),
}

/// A blocking socket to a sentinel: plain, or TLS over it.
enum Sock {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Sock {
    fn tcp(&self) -> &TcpStream {
        match self {
            Sock::Plain(s) => s,
            Sock::Tls(t) => t.get_ref(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.read(buf),
            Sock::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.write(buf),
            Sock::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Plain(s) => s.flush(),
            Sock::Tls(t) => t.flush(),
        }
    }
}

/// A blocking connection to a sentinel.
struct Conn {
    stream: BufReader<Sock>,
    /// Set while a frame is being read (a timeout then left part of it unread).
    partial: bool,
}

impl Conn {
    fn open(addr: &str, tls: Option<&BackendTls>) -> io::Result<Self> {
        let sa = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("address resolves to nothing"))?;
        let s = TcpStream::connect_timeout(&sa, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
        let sock = match tls {
            None => Sock::Plain(s),
            Some(cfg) => {
                let name = cfg.name_for(addr).ok_or_else(|| {
                    io::Error::other(format!(
                        "`{addr}` has no host usable as a TLS server name; set tls.server_name"
                    ))
                })?;
                let conn = rustls::ClientConnection::new(cfg.config.clone(), name)
                    .map_err(io::Error::other)?;
                let mut t = rustls::StreamOwned::new(conn, s);
                // Handshake now, so that a certificate that does not verify is reported as such.
                while t.conn.is_handshaking() {
                    t.conn
                        .complete_io(&mut t.sock)
                        .map_err(|e| io::Error::other(format!("TLS handshake failed: {e}")))?;
                }
                Sock::Tls(Box::new(t))
            }
        };
        Ok(Self {
            stream: BufReader::new(sock),
            partial: false,
        })
    }

    fn send(&mut self, args: &[&str]) -> io::Result<()> {
        let mut b = format!("*{}\r\n", args.len());
        for a in args {
            b.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let s = self.stream.get_mut();
        s.write_all(b.as_bytes())?;
        s.flush()
    }

    fn read(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        let n = match self.stream.read_line(&mut line) {
            Ok(n) => n,
            Err(e) => {
                // A timeout in the middle of a line loses its start: the connection is unusable.
                self.partial |= !line.is_empty();
                return Err(e);
            }
        };
        if n == 0 {
            return Err(io::Error::other("connection closed by the sentinel"));
        }
        self.partial = true;
        let v = parse(&mut self.stream, &line, 0)?;
        self.partial = false;
        Ok(v)
    }
}

/// Parses the frame that starts with `line` (nested arrays read from `r`).
fn parse(r: &mut impl BufRead, line: &str, depth: usize) -> io::Result<Value> {
    let bad = || io::Error::other("bad reply from sentinel");
    if depth > 4 {
        return Err(bad());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    match kind {
        "+" => Ok(Value::Bulk(rest.to_string())),
        "-" => Ok(Value::Error(rest.to_string())),
        ":" => Ok(Value::Int),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let n = usize::try_from(n).map_err(|_| bad())?;
            if n > MAX_ELEMENT {
                return Err(bad());
            }
            let mut buf = vec![0u8; n + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n);
            Ok(Value::Bulk(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let n = usize::try_from(n).map_err(|_| bad())?.min(MAX_ELEMENT);
            let mut items = Vec::with_capacity(n.min(16));
            for _ in 0..n {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 {
                    return Err(bad());
                }
                items.push(parse(r, &l, depth + 1)?);
            }
            Ok(Value::Array(items))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> io::Result<Value> {
        let mut r = BufReader::new(bytes);
        let mut first = String::new();
        r.read_line(&mut first)?;
        parse(&mut r, &first, 0)
    }

    #[test]
    fn parses_master_address_and_switch_message() {
        let v = parse_all(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n7001\r\n").expect("parses");
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Bulk("127.0.0.1".into()),
                Value::Bulk("7001".into())
            ])
        );
        assert_eq!(parse_all(b"*-1\r\n").expect("nil"), Value::Nil);
        assert_eq!(
            parse_all(b"-ERR no such\r\n").expect("error"),
            Value::Error("ERR no such".into())
        );
        assert!(parse_all(b"?x\r\n").is_err());
        assert!(parse_all(b"$99999999\r\n").is_err());
    }

    #[test]
    fn set_bumps_epoch_only_on_change_and_clears_failures() {
        let w = Watch {
            sentinels: vec![],
            tls: None,
            masters: vec!["m".into()],
            addrs: Mutex::default(),
            epoch: AtomicU64::new(0),
            states: Mutex::default(),
        };
        assert!(w.set("m", "127.0.0.1:1".into()));
        assert!(!w.set("m", "127.0.0.1:1".into()));
        assert_eq!(w.epoch(), 1);
        let cfg = router::config::parse(
            "t.toml",
            "[redis_groups.g]\nservers = [{ name = \"m\", address = \"127.0.0.1:1\" }]\n",
        )
        .expect("config");
        let reg = runtime::BackendRegistry::new(&cfg);
        let st = reg.get("g", "m").expect("state");
        assert!(st.record_failure(1, Duration::from_secs(60)));
        w.track("m", &st);
        assert!(w.set("m", "127.0.0.1:2".into()));
        assert_eq!(w.epoch(), 2);
        assert_eq!(w.address("m").as_deref(), Some("127.0.0.1:2"));
        assert!(st.usable());
    }
}
