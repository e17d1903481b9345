//! Multiplexed, pipelined backend connections.
//!
//! The clients of a core share a few connections per backend server. A client appends its command
//! bytes to a connection's output buffer and its reply address to the in-flight queue, and marks
//! the connection dirty on its core's [`Flusher`]. The flusher is one task per core that, once
//! woken, yields with `tokio::task::yield_now` — which tokio defers until the executor has polled
//! its I/O driver again, i.e. until every task that was ready in this loop turn (and those the
//! next poll made ready) has run — and only then tells the dirty connections to write. So the
//! commands of all the clients served in a turn leave in one `write` per backend connection, not
//! one per client wake-up. A connection's task never writes on its own initiative otherwise
//! (reading replies does not flush), except to finish a partial write or under TLS.
//! Waking the connection's task directly from each client (the former scheme) put the write in
//! the middle of the turn whenever the task was already queued to read its replies. Measured
//! (release build, `redis-benchmark -t get -P 1 -c 50 -r 100000`, 2 shards, 1 executor, on the
//! loaded 2-vCPU VM, so batch sizes move with the load): requests per backend write 2.8–7.5 (five
//! runs, median 4.9) with direct wake-ups, 2.7 with the flusher but no `yield_now` (it then runs
//! mid-turn like the task did), 4.5–15.2 (four runs, median 8.6) with the flusher as it is; the
//! proxy's syscalls per request (≈ 2.2–2.7) are dominated by one read and one write per client
//! request either way. The bench report shows both figures per load.
//!
//! Replies come back in FIFO order: the task reads all that is available, finds each reply's end
//! with the [`ReplyScanner`] and copies it to the client that awaits it.
//!
//! Each connection counts its write calls and the requests queued to it ([`BackendWrites`]), also
//! summed into the listener's metrics (`INFO`'s `redis_backend_*` lines on the admin port,
//! `furrow_redis_backend_*_total` in `/metrics`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use codec::resp::{Command, Limits, ReplyScanner};
use runtime::BackendState;
use tokio::net::TcpStream;

use crate::cluster::{ClusterState, MAX_REDIRECTS};
use crate::error::{BackendFailure, Error};
use crate::metrics::{BackendWrites, CoreMetrics};
use crate::net::{self, ReadOutcome};
use crate::notify::LocalNotify;
use crate::reply::Client;

/// Most bytes queued for one backend connection before new commands are refused.
const MAX_QUEUED_BYTES: usize = 256 * 1024 * 1024;
/// Most replies awaited on one backend connection before new commands are refused.
const MAX_INFLIGHT: usize = 1 << 20;

/// A backend server as this core sees it.
#[derive(Debug)]
pub struct ServerInfo {
    /// Index in the group's server list.
    pub index: usize,
    /// Server name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Shared health and admin state.
    pub state: Arc<BackendState>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Reply timeout.
    pub request_timeout: Duration,
    /// Failures before ejection.
    pub eject_after: u32,
    /// Ejection time.
    pub retry_after: Duration,
    /// Backend AUTH user.
    pub username: Option<String>,
    /// Backend AUTH password.
    pub password: Option<String>,
    /// TLS to the server (the group's `tls`), None: plain TCP.
    pub tls: Option<router::config::BackendTls>,
    /// Its span attributes, made by the first traced command (see [`ServerInfo::trace_blob`]).
    pub trace_names: std::cell::OnceCell<runtime::trace::Blob>,
}

impl ServerInfo {
    /// The server's `furrow.backend` and `peer.service` (`redis:NAME`) span attributes, encoded
    /// once.
    pub fn trace_blob(&self) -> &runtime::trace::Blob {
        self.trace_names
            .get_or_init(|| crate::trace::server_blob(&self.name))
    }

    /// The error a client gets for a command this server cannot serve.
    pub fn unavailable(&self, why: BackendFailure) -> Error {
        Error::BackendUnavailable {
            server: self.name.clone(),
            address: self.address.clone(),
            why,
        }
    }

    /// Why requests may not be sent now, if so.
    pub fn refusal(&self) -> Option<BackendFailure> {
        if self.state.admin_offline.load(Relaxed) {
            Some(BackendFailure::Offline)
        } else if self.state.ejected() {
            Some(BackendFailure::Ejected)
        } else {
            None
        }
    }
}

/// Where a reply goes.
pub enum Dest {
    /// The whole reply of a client's command.
    Whole(Rc<Client>, u64),
    /// One part of a merged command.
    Part(Rc<Client>, u64, u32),
    /// Dropped (replies of commands the proxy sends for its own purpose).
    Discard,
    /// A reply to the connection's handshake; an error fails the connection.
    Init,
    /// An integer reply stored for the proxy (the server's `CLIENT ID` of a dedicated
    /// connection, which CLIENT UNBLOCK and the blocking order need).
    Id(Arc<AtomicI64>),
    /// Another destination whose command is traced (`[tracing]`; see `crate::trace`).
    Traced(Box<crate::trace::Traced>),
    /// The whole reply of a client's command that is head-sampled and has no caller's context
    /// (`[tracing]`): its root span is made at the reply from what the reply path already holds
    /// (the command, the server, the times), so it carries nothing more than [`Dest::Whole`].
    Sampled(Rc<Client>, u64),
    /// Another destination whose reply size is sampled for big keys (1 keyed command in
    /// `crate::metrics::REPLY_SAMPLE_EVERY`; see [`SizedReply`]).
    Sized(Box<SizedReply>),
    /// The reply of a key move (`MIGRATE ... KEYS`, slot migration): on `+OK`/`+NOKEY` the
    /// command it carries goes to the new owner, else the move's error is its reply.
    Then(Box<Then>),
}

/// A sampled command's key, kept until its reply is read: a reply of at least
/// `crate::metrics::BIG_KEY_BYTES` records the key as a big key by reply size.
pub struct SizedReply {
    /// The real destination of the reply.
    pub dest: Dest,
    /// The command's key (at most [`SIZED_KEY_MAX`] bytes of it).
    pub key: Box<[u8]>,
}

/// The most bytes of a key kept for reply-size sampling.
pub const SIZED_KEY_MAX: usize = 512;

impl SizedReply {
    /// Wraps `dest` to sample its reply's size for `key`.
    pub fn wrap(dest: Dest, key: &[u8]) -> Dest {
        Dest::Sized(Box::new(SizedReply {
            dest,
            key: key[..key.len().min(SIZED_KEY_MAX)].into(),
        }))
    }

    #[cold]
    fn finish(self, reply_bytes: usize, metrics: &CoreMetrics) -> Dest {
        metrics.big_reply(&self.key, reply_bytes);
        self.dest
    }
}

/// The destination inside the wrappers (traced, reply size sampled) after doing what each is for;
/// any other as it is. The common, unwrapped case costs one `match`; with `[tracing]`, a client
/// destination that was not wrapped (its command not head-sampled) is checked for a failed or
/// slow reply, which is traced all the same (see `crate::trace::unsampled_reply`).
#[inline]
fn unwrap_dest(dest: Dest, r: &ReplyFacts<'_>, metrics: &CoreMetrics, traced: bool) -> Dest {
    match dest {
        d @ Dest::Traced(_) => unwrap_dest(crate::trace::unwrap(d, &r.reply), r, metrics, true),
        Dest::Sized(s) => unwrap_dest(s.finish(r.reply.reply_bytes, metrics), r, metrics, traced),
        Dest::Sampled(c, seq) => {
            if let Some(t) = c.trace.get() {
                crate::trace::sampled_reply(t, &r.reply);
            }
            Dest::Whole(c, seq)
        }
        Dest::Whole(c, seq) => {
            if !traced
                && let Some(t) = c.trace.get()
                && r.untraced_spans
            {
                crate::trace::unsampled_reply(t, &r.reply);
            }
            Dest::Whole(c, seq)
        }
        Dest::Part(c, seq, part) => {
            if !traced
                && let Some(t) = c.trace.get()
                && r.untraced_spans
            {
                crate::trace::unsampled_reply(t, &r.reply);
            }
            Dest::Part(c, seq, part)
        }
        d => d,
    }
}

/// What the reply path knows of a reply when it unwraps its destination: the reply as a span
/// records it, and whether an unsampled one may be traced.
struct ReplyFacts<'a> {
    reply: crate::trace::Reply<'a>,
    /// Whether a failed or slow reply that was not head-sampled is traced all the same: not on
    /// the connections without reply timeouts (blocking commands, slow by design).
    untraced_spans: bool,
}

/// A command waiting for its keys to move (see [`Dest::Then`] and `crate::migrate`).
pub struct Then {
    /// The new owner's connection.
    pub conn: Rc<BackendConn>,
    /// The client's command (or its part), sent once the keys moved.
    pub raw: Bytes,
    /// Where its reply goes.
    pub dest: Dest,
    /// Its name (metrics).
    pub cmd: &'static str,
}

impl Then {
    /// Runs on the move's reply: sends the command on, or hands the move's error to its client.
    fn resume(self, frame: &[u8], start: Instant) {
        if frame.starts_with(b"+OK") || frame.starts_with(b"+NOKEY") {
            if let Err(e) = self.conn.send(&self.raw, [self.dest], start, self.cmd) {
                // The destination went into the refused send: nothing to deliver to.
                tracing::debug!(error = %e, "slot migration: the new owner refused a moved command");
            }
            return;
        }
        let msg = crate::error::Error::KeyMoveFailed(
            String::from_utf8_lossy(frame.get(1..).unwrap_or_default())
                .trim_end()
                .to_string(),
        )
        .reply();
        deliver_error(self.dest, &msg, self.cmd, &self.conn.server);
    }
}

/// Hands an error reply to a client destination (others drop it); `cmd` sent to `server` is what
/// a [`Dest::Sampled`]'s span names.
fn deliver_error(dest: Dest, msg: &[u8], cmd: &'static str, server: &ServerInfo) {
    match dest {
        Dest::Whole(c, seq) => {
            c.q.borrow_mut().deliver(seq, msg);
            c.wake.notify();
        }
        Dest::Part(c, seq, part) => {
            c.q.borrow_mut().deliver_part(seq, part, msg);
            c.wake.notify();
        }
        Dest::Then(t) => deliver_error(t.dest, msg, t.cmd, &t.conn.server),
        d @ (Dest::Traced(_) | Dest::Sampled(..)) => {
            let r = crate::trace::Reply {
                cmd,
                server,
                start: Instant::now(),
                took: Duration::ZERO,
                reply_bytes: msg.len(),
                is_err: true,
            };
            let d = match d {
                Dest::Sampled(c, seq) => {
                    if let Some(t) = c.trace.get() {
                        crate::trace::sampled_reply(t, &r);
                    }
                    Dest::Whole(c, seq)
                }
                d => crate::trace::unwrap(d, &r),
            };
            deliver_error(d, msg, cmd, server)
        }
        Dest::Sized(s) => deliver_error(s.dest, msg, cmd, server),
        Dest::Discard | Dest::Init | Dest::Id(_) => {}
    }
}

struct Inflight {
    dest: Dest,
    start: Instant,
    cmd: &'static str,
    /// The command, kept in cluster mode to follow MOVED/ASK (boxed: entries stay small).
    raw: Option<Box<Bytes>>,
    /// Redirections followed so far.
    redirects: u8,
}

/// What a connection does with the frames it reads.
pub enum Mode {
    /// Request/reply in FIFO order.
    Pipeline,
    /// Every frame goes to the sink (pub/sub): the session interprets them.
    Push(Rc<PushSink>),
}

/// Frames of a push-mode connection, for the session that owns it.
pub struct PushSink {
    /// Frames received, with the index of the server they came from.
    pub frames: RefCell<VecDeque<(usize, bytes::Bytes)>>,
    /// Set when a connection failed, with the error reply.
    pub failed: RefCell<Option<Vec<u8>>>,
    /// Woken on arrival (the owning session's wake-up).
    pub wake: Rc<LocalNotify>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Idle,
    Running,
}

struct Inner {
    out: BytesMut,
    inflight: VecDeque<Inflight>,
    status: Status,
    retired: bool,
    aborted: bool,
    /// On the flusher's dirty list.
    dirty: bool,
    /// The flusher (or the start of the task) asked for `out` to be written.
    flush: bool,
}

/// What a core hands to every backend connection its pools open: the core's metrics and its
/// write coalescer.
#[derive(Clone)]
pub struct CoreIo {
    /// Command and backend-write counters of the core.
    pub metrics: Rc<CoreMetrics>,
    /// The core's backend write coalescer.
    pub flusher: Rc<Flusher>,
}

/// The backend write coalescer of one core: the backend connections with commands queued since
/// their last flush, and the wake-up of the task that flushes them (see the module docs). One per
/// listener and core, a field of the core's `CoreCtx` (`session::CoreCtx::flusher`), handed to
/// every backend connection the core's pools open.
pub struct Flusher {
    dirty: RefCell<Vec<Rc<BackendConn>>>,
    wake: Rc<LocalNotify>,
    /// The flusher task is alive on this core's executor.
    running: Cell<bool>,
}

impl Flusher {
    /// A flusher with no task yet (the first dirty connection starts it on the current executor).
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            dirty: RefCell::new(Vec::new()),
            wake: Rc::new(LocalNotify::default()),
            running: Cell::new(false),
        })
    }

    /// Queues `conn` for the end-of-turn flush, starting the flusher task if needed.
    #[inline]
    fn push(self: &Rc<Self>, conn: Rc<BackendConn>) {
        self.dirty.borrow_mut().push(conn);
        if !self.running.replace(true) {
            tokio::task::spawn_local(flusher(Rc::downgrade(self), self.wake.clone()));
        }
        self.wake.notify();
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Its task then finds it gone and ends.
        self.wake.notify();
    }
}

/// Resets the flusher when its task is dropped (its executor shut down), so that a later
/// executor starts its own, and drops the connections still listed.
struct FlusherGuard(Weak<Flusher>);

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        if let Some(f) = self.0.upgrade() {
            f.running.set(false);
            // Taken out before dropping: a connection's drop must not find the list borrowed.
            let dirty = std::mem::take(&mut *f.dirty.borrow_mut());
            drop(dirty);
        }
    }
}

/// The per-core flusher task: after each wake-up, waits for the loop turn to end, then has every
/// dirty connection write. Holds its flusher weakly: it ends once the flusher is dropped (the
/// listener's core context and every connection gone).
async fn flusher(me: Weak<Flusher>, wake: Rc<LocalNotify>) {
    let _guard = FlusherGuard(me.clone());
    loop {
        wake.notified().await;
        tokio::task::yield_now().await;
        let Some(f) = me.upgrade() else { return };
        let dirty = std::mem::take(&mut *f.dirty.borrow_mut());
        for conn in &dirty {
            {
                let mut inner = conn.inner.borrow_mut();
                inner.dirty = false;
                inner.flush = true;
            }
            conn.wake.notify();
        }
        // Keep the list's allocation for the next turn.
        let mut d = f.dirty.borrow_mut();
        if d.is_empty() {
            let mut dirty = dirty;
            dirty.clear();
            *d = dirty;
        }
    }
}

/// One backend connection (re-established on demand after a failure).
pub struct BackendConn {
    /// The server.
    pub server: Rc<ServerInfo>,
    /// Database selected on connect.
    pub db: u32,
    /// Whether the connection speaks RESP3 (`HELLO 3` on connect).
    pub resp3: bool,
    mode: Mode,
    inner: RefCell<Inner>,
    wake: LocalNotify,
    metrics: Rc<CoreMetrics>,
    /// The core's write coalescer (see [`Flusher`]).
    flusher: Rc<Flusher>,
    /// Set when the task saw the socket close or fail (for push-mode owners).
    broken: Cell<bool>,
    /// Whether replies are subject to the request timeout (not for blocking commands).
    timeouts: bool,
    /// The cluster this connection belongs to (cluster mode: follows redirections).
    cluster: std::cell::OnceCell<Weak<ClusterState>>,
    /// This connection's write calls and requests.
    counts: Cell<BackendWrites>,
}

impl BackendConn {
    /// A connection to `server` (not connected until the first command) whose writes the core's
    /// `flusher` coalesces.
    pub fn new(
        server: Rc<ServerInfo>,
        db: u32,
        resp3: bool,
        mode: Mode,
        core: &CoreIo,
        timeouts: bool,
    ) -> Rc<Self> {
        Rc::new(Self {
            cluster: std::cell::OnceCell::new(),
            timeouts,
            server,
            db,
            resp3,
            mode,
            inner: RefCell::new(Inner {
                out: BytesMut::with_capacity(16 * 1024),
                inflight: VecDeque::new(),
                status: Status::Idle,
                retired: false,
                aborted: false,
                dirty: false,
                flush: false,
            }),
            counts: Cell::default(),
            wake: LocalNotify::default(),
            metrics: core.metrics.clone(),
            flusher: core.flusher.clone(),
            broken: Cell::new(false),
        })
    }

    /// Queues `raw` (one or more complete commands) whose replies go to `dests` in order; wakes
    /// the connection's task. Fails (with the error reply to give) when the server may not be
    /// used or the connection is overloaded.
    #[inline]
    pub fn send(
        self: &Rc<Self>,
        raw: &Bytes,
        dests: impl IntoIterator<Item = Dest>,
        start: Instant,
        cmd: &'static str,
    ) -> Result<(), Error> {
        if let Some(why) = self.server.refusal() {
            return Err(self.server.unavailable(why));
        }
        let mut inner = self.inner.borrow_mut();
        if inner.out.len() > MAX_QUEUED_BYTES || inner.inflight.len() > MAX_INFLIGHT {
            return Err(self.server.unavailable(BackendFailure::Overloaded));
        }
        inner.out.extend_from_slice(raw);
        let keep = self.cluster.get().is_some();
        let before = inner.inflight.len();
        for dest in dests {
            inner.inflight.push_back(Inflight {
                dest,
                start,
                cmd,
                raw: keep.then(|| Box::new(raw.clone())),
                redirects: 0,
            });
        }
        let n = inner.inflight.len() - before;
        drop(inner);
        self.count_requests(n);
        self.kick();
        Ok(())
    }

    /// Joins this connection to a cluster (it then follows MOVED/ASK redirections).
    pub fn with_cluster(self: Rc<Self>, cluster: Weak<ClusterState>) -> Rc<Self> {
        let _ = self.cluster.set(cluster);
        self
    }

    /// Re-sends a redirected command: `block` goes out (with `ASKING` first when `asking`), its
    /// reply goes to `dest`. On refusal, gives the destination back with the error.
    #[allow(clippy::too_many_arguments)]
    pub fn send_redirected(
        self: &Rc<Self>,
        block: &Bytes,
        raw: Bytes,
        dest: Dest,
        asking: bool,
        start: Instant,
        cmd: &'static str,
        redirects: u8,
    ) -> Result<(), (Dest, Error)> {
        if let Some(why) = self.server.refusal() {
            return Err((dest, self.server.unavailable(why)));
        }
        let mut inner = self.inner.borrow_mut();
        inner.out.extend_from_slice(block);
        if asking {
            inner.inflight.push_back(Inflight {
                dest: Dest::Discard,
                start,
                cmd: "asking",
                raw: None,
                redirects: MAX_REDIRECTS,
            });
        }
        inner.inflight.push_back(Inflight {
            dest,
            start,
            cmd,
            raw: Some(Box::new(raw)),
            redirects,
        });
        drop(inner);
        self.count_requests(1 + usize::from(asking));
        self.kick();
        Ok(())
    }

    /// This connection's write calls and requests so far.
    pub fn counts(&self) -> BackendWrites {
        self.counts.get()
    }

    fn count_requests(&self, n: usize) {
        let mut c = self.counts.get();
        c.requests += n as u64;
        self.counts.set(c);
        self.metrics.backend_requests(n as u64);
    }

    fn count_write(&self) {
        let mut c = self.counts.get();
        c.writes += 1;
        self.counts.set(c);
        self.metrics.backend_writes(1);
    }

    /// Starts the connection's task if it is not running (it writes at once: the connect takes
    /// longer than a loop turn), else puts the connection on its core's dirty list.
    fn kick(self: &Rc<Self>) {
        let mut inner = self.inner.borrow_mut();
        if inner.status == Status::Idle {
            inner.status = Status::Running;
            inner.flush = true;
            drop(inner);
            let me = self.clone();
            tokio::task::spawn_local(async move { me.run().await });
        } else if !inner.dirty {
            inner.dirty = true;
            drop(inner);
            self.mark_dirty();
        }
    }

    /// Queues this connection for the end-of-turn flush, starting the core's flusher if needed.
    fn mark_dirty(self: &Rc<Self>) {
        self.flusher.push(self.clone());
    }

    /// Marks the connection as no longer used by its pool: its task ends once nothing is in flight.
    pub fn retire(&self) {
        self.inner.borrow_mut().retired = true;
        self.wake.notify();
    }

    /// Closes the connection now, dropping what is in flight (its session is gone; closing the
    /// socket also releases a blocked command on the server). Not counted as a backend failure.
    pub fn abort(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.aborted = true;
        inner.retired = true;
        drop(inner);
        self.wake.notify();
    }

    /// Whether the connection failed since it was created (push-mode owners replace it).
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Replies awaited.
    pub fn inflight(&self) -> usize {
        self.inner.borrow().inflight.len()
    }

    fn handshake(&self) -> BytesMut {
        let mut b = BytesMut::new();
        let mut n = 0;
        let pw = self.server.password.as_deref();
        let user = self.server.username.as_deref();
        if self.resp3 {
            let mut args: Vec<&[u8]> = vec![b"HELLO", b"3"];
            if let Some(pw) = pw {
                args.extend([
                    b"AUTH".as_slice(),
                    user.unwrap_or("default").as_bytes(),
                    pw.as_bytes(),
                ]);
            }
            b.extend_from_slice(Command::from_args(args).raw());
            n += 1;
        } else if let Some(pw) = pw {
            let cmd = match user {
                Some(u) => Command::from_args([&b"AUTH"[..], u.as_bytes(), pw.as_bytes()]),
                None => Command::from_args([&b"AUTH"[..], pw.as_bytes()]),
            };
            b.extend_from_slice(cmd.raw());
            n += 1;
        }
        if self.db != 0 {
            b.extend_from_slice(
                Command::from_args([b"SELECT".to_vec(), self.db.to_string().into_bytes()]).raw(),
            );
            n += 1;
        }
        self.count_requests(n);
        let mut inner = self.inner.borrow_mut();
        let now = Instant::now();
        for _ in 0..n {
            inner.inflight.push_front(Inflight {
                dest: Dest::Init,
                start: now,
                cmd: "(handshake)",
                raw: None,
                redirects: 0,
            });
        }
        b
    }

    async fn run(self: Rc<Self>) {
        let stream = net::connect_backend(
            &self.server.address,
            self.server.connect_timeout,
            self.server.tls.as_ref(),
        );
        let mut stream = match stream.await {
            Ok(s) => s,
            Err(e) => {
                self.fail(BackendFailure::Connect(e));
                return;
            }
        };
        let init = self.handshake();
        if !init.is_empty() {
            let mut inner = self.inner.borrow_mut();
            let rest = inner.out.split();
            inner.out.extend_from_slice(&init);
            inner.out.extend_from_slice(&rest);
        }
        if let Err(why) = self.serve(&stream.tcp, &mut stream.tls).await {
            self.fail(why);
        } else {
            self.inner.borrow_mut().status = Status::Idle;
        }
    }

    /// The connection's loop; returns why it failed, or Ok when retired and idle.
    async fn serve(
        &self,
        stream: &TcpStream,
        tls: &mut Option<Box<net::TlsIo>>,
    ) -> Result<(), BackendFailure> {
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let mut scanner = ReplyScanner::new(Limits::default());
        let period = (self.server.request_timeout / 4)
            .clamp(Duration::from_millis(5), Duration::from_millis(250));
        let mut tick = pin!(tokio::time::sleep(period));
        // A write was left unfinished: the socket's writability is awaited, then writing goes on.
        let mut want_write = false;
        loop {
            let has_inflight = {
                let mut inner = self.inner.borrow_mut();
                if inner.aborted {
                    inner.inflight.clear();
                    inner.out.clear();
                    return Ok(());
                }
                // Write when flushed, to finish a partial write, or always under TLS (whose
                // session may hold encrypted bytes of its own).
                let due = std::mem::take(&mut inner.flush) || want_write || tls.is_some();
                want_write = if !due || (inner.out.is_empty() && tls.is_none()) {
                    false
                } else {
                    let before = inner.out.len();
                    let wait = net::write_on(stream, tls, &mut inner.out)
                        .map_err(BackendFailure::Write)?;
                    if inner.out.len() < before {
                        self.count_write();
                    }
                    wait
                };
                if inner.inflight.is_empty() && inner.out.is_empty() {
                    if inner.retired {
                        return Ok(());
                    }
                    // Idle: a burst's buffers go back.
                    net::shrink_idle(&mut inner.out, 16 * 1024);
                    net::shrink_idle(&mut rbuf, 64 * 1024);
                }
                !inner.inflight.is_empty()
            };
            tokio::select! {
                biased;
                r = stream.readable() => {
                    r.map_err(BackendFailure::Read)?;
                    match net::read_on(stream, tls, &mut rbuf).map_err(BackendFailure::Read)? {
                        ReadOutcome::Data(_) => self.replies(&mut rbuf, &mut scanner)?,
                        ReadOutcome::WouldBlock => {}
                        ReadOutcome::Closed => return Err(BackendFailure::Closed),
                    }
                }
                _ = self.wake.notified() => {}
                r = stream.writable(), if want_write => {
                    r.map_err(BackendFailure::Write)?;
                }
                _ = &mut tick, if has_inflight && self.timeouts => {
                    tick.as_mut().reset(tokio::time::Instant::now() + period);
                    let inner = self.inner.borrow();
                    if let Some(first) = inner.inflight.front()
                        && first.start.elapsed() > self.server.request_timeout
                    {
                        return Err(BackendFailure::Timeout(
                            self.server.request_timeout.as_millis(),
                        ));
                    }
                }
            }
        }
    }

    /// Hands every complete reply in `rbuf` to its destination.
    fn replies(
        &self,
        rbuf: &mut BytesMut,
        scanner: &mut ReplyScanner,
    ) -> Result<(), BackendFailure> {
        let now = Instant::now();
        let mut count = 0u64;
        let mut last_start = now;
        loop {
            let n = match scanner.scan(rbuf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => return Err(BackendFailure::BadReply(e)),
            };
            let frame = rbuf.get(..n).unwrap_or_default();
            if let Mode::Push(sink) = &self.mode {
                let mut inner = self.inner.borrow_mut();
                if let Some(Inflight {
                    dest: Dest::Init, ..
                }) = inner.inflight.front()
                {
                    inner.inflight.pop_front();
                    if frame.first() == Some(&b'-') {
                        return Err(BackendFailure::Handshake(
                            String::from_utf8_lossy(frame).trim().to_string(),
                        ));
                    }
                } else {
                    inner.inflight.pop_front();
                    sink.frames
                        .borrow_mut()
                        .push_back((self.server.index, bytes::Bytes::copy_from_slice(frame)));
                    sink.wake.notify();
                }
                rbuf.advance(n);
                continue;
            }
            let Some(entry) = self.inner.borrow_mut().inflight.pop_front() else {
                return Err(BackendFailure::UnexpectedReply);
            };
            count += 1;
            last_start = entry.start;
            let is_err = frame.first() == Some(&b'-');
            let entry = match entry {
                Inflight {
                    dest,
                    start,
                    cmd,
                    raw: Some(raw),
                    redirects,
                } if is_err
                    && redirects < MAX_REDIRECTS
                    && (frame.starts_with(b"-MOVED ") || frame.starts_with(b"-ASK ")) =>
                {
                    match self.cluster.get().and_then(Weak::upgrade) {
                        Some(cluster) => {
                            match cluster
                                .redirect(frame, *raw, dest, start, cmd, redirects, self.resp3)
                            {
                                Ok(()) => {
                                    rbuf.advance(n);
                                    continue;
                                }
                                Err(dest) => Inflight {
                                    dest,
                                    start,
                                    cmd,
                                    raw: None,
                                    redirects,
                                },
                            }
                        }
                        None => Inflight {
                            dest,
                            start,
                            cmd,
                            raw: None,
                            redirects,
                        },
                    }
                }
                other => other,
            };
            let took = now.saturating_duration_since(entry.start);
            self.metrics.reply(entry.cmd, took, n, is_err);
            let facts = ReplyFacts {
                reply: crate::trace::Reply {
                    cmd: entry.cmd,
                    server: &self.server,
                    start: entry.start,
                    took,
                    reply_bytes: n,
                    is_err,
                },
                untraced_spans: self.timeouts,
            };
            match unwrap_dest(entry.dest, &facts, &self.metrics, false) {
                Dest::Whole(c, seq) => {
                    c.q.borrow_mut().deliver(seq, frame);
                    c.wake.notify();
                }
                Dest::Part(c, seq, part) => {
                    c.q.borrow_mut().deliver_part(seq, part, frame);
                    c.wake.notify();
                }
                Dest::Discard => {}
                Dest::Id(cell) => {
                    let id = frame
                        .strip_prefix(b":")
                        .and_then(|f| std::str::from_utf8(f).ok())
                        .and_then(|f| f.trim_end().parse::<i64>().ok());
                    if let Some(id) = id {
                        cell.store(id, Relaxed);
                    }
                }
                // Unwrapped above.
                Dest::Traced(_) | Dest::Sized(_) | Dest::Sampled(..) => {}
                Dest::Then(t) => t.resume(frame, entry.start),
                Dest::Init => {
                    if is_err {
                        return Err(BackendFailure::Handshake(
                            String::from_utf8_lossy(
                                frame.get(1..n.saturating_sub(2)).unwrap_or_default(),
                            )
                            .into_owned(),
                        ));
                    }
                }
            }
            rbuf.advance(n);
        }
        if count > 0 {
            let st = &self.server.state;
            st.record_ok(now.saturating_duration_since(last_start));
            if count > 1 {
                st.requests.fetch_add(count - 1, Relaxed);
            }
        }
        Ok(())
    }

    /// Fails every request in flight with an error reply, records the failure and makes the
    /// connection reconnect on the next command.
    fn fail(&self, why: BackendFailure) {
        self.broken.set(true);
        tracing::warn!(server = %self.server.name, address = %self.server.address, "backend connection failed: {why}");
        let retryable = why.retryable();
        let error = self.server.unavailable(why);
        let msg = error.reply();
        let entries: Vec<Inflight> = {
            let mut inner = self.inner.borrow_mut();
            inner.out.clear();
            inner.status = Status::Idle;
            inner.inflight.drain(..).collect()
        };
        // A failure the server may recover from counts towards its ejection.
        if retryable {
            self.server
                .state
                .record_failure(self.server.eject_after, self.server.retry_after);
        }
        if let Some(cluster) = self.cluster.get().and_then(Weak::upgrade) {
            cluster.refresh();
        }
        if let Mode::Push(sink) = &self.mode {
            *sink.failed.borrow_mut() = Some(msg.clone());
            sink.wake.notify();
        }
        for e in entries {
            let facts = ReplyFacts {
                reply: crate::trace::Reply {
                    cmd: e.cmd,
                    server: &self.server,
                    start: e.start,
                    took: e.start.elapsed(),
                    reply_bytes: msg.len(),
                    is_err: true,
                },
                untraced_spans: self.timeouts,
            };
            let dest = unwrap_dest(e.dest, &facts, &self.metrics, false);
            if matches!(dest, Dest::Whole(..) | Dest::Part(..)) {
                self.metrics
                    .reply(e.cmd, e.start.elapsed(), msg.len(), true);
            }
            match dest {
                Dest::Whole(c, seq) => {
                    c.q.borrow_mut().deliver(seq, &msg);
                    c.wake.notify();
                }
                Dest::Part(c, seq, part) => {
                    c.q.borrow_mut().deliver_part(seq, part, &msg);
                    c.wake.notify();
                }
                Dest::Then(t) => deliver_error(t.dest, &msg, t.cmd, &t.conn.server),
                Dest::Discard
                | Dest::Init
                | Dest::Id(_)
                | Dest::Traced(_)
                | Dest::Sized(_)
                | Dest::Sampled(..) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Registry;
    use crate::pool::Pool;

    /// A pool of one server at `addr` whose connections get `io`.
    fn pool_on(addr: std::net::SocketAddr, io: CoreIo) -> Pool {
        let conf = router::config::parse(
            "flusher-test.toml",
            &format!(
                "[[listeners]]\nname = \"l\"\nkind = \"redis\"\naddress = \"127.0.0.1:0\"\ngroup = \"g\"\n\n\
                 [redis_groups.g]\nservers = [{{ name = \"r1\", address = \"{addr}\" }}]\n"
            ),
        )
        .expect("config");
        let group = conf.redis_group("g").expect("group");
        let registry = Arc::new(runtime::BackendRegistry::new(&conf));
        Pool::new(group, 1, &registry, &Default::default(), io).expect("pool")
    }

    /// Waits (at most 10 s) until `done` holds, letting the executor run.
    async fn until(mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The write coalescer belongs to a core context (two listeners on one thread have one each,
    /// no thread-local): the commands of client tasks that run in one executor turn leave in one
    /// write per backend connection, and a flusher whose context and connections are gone is
    /// freed (its task holds it weakly).
    #[test]
    fn clients_served_in_one_turn_share_one_backend_write() {
        let server = testkit::RedisServer::start().expect("redis-server");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let registry = Registry::default();
            let ping = Bytes::from_static(b"*1\r\n$4\r\nPING\r\n");
            let mut flushers = Vec::new();
            let mut conns = Vec::new();
            for listener in ["one", "two"] {
                let flusher = Flusher::new();
                flushers.push(Rc::downgrade(&flusher));
                let metrics = Rc::new(CoreMetrics::register(&registry, listener));
                let pool = pool_on(server.addr(), CoreIo { metrics, flusher });
                conns.push(pool.conn(0, 0, false, 0).expect("conn"));
            }
            // Connect: a connection's first command leaves as soon as it is connected.
            for c in &conns {
                c.send(&ping, [Dest::Discard], Instant::now(), "ping")
                    .expect("send");
            }
            until(|| conns.iter().all(|c| c.inflight() == 0)).await;
            let before: Vec<BackendWrites> = conns.iter().map(|c| c.counts()).collect();
            assert!(before.iter().all(|b| b.writes == 1 && b.requests == 1));
            // Three client tasks per connection, all ready in the same turn.
            for c in &conns {
                for _ in 0..3 {
                    let (c, ping) = (c.clone(), ping.clone());
                    tokio::task::spawn_local(async move {
                        c.send(&ping, [Dest::Discard], Instant::now(), "ping")
                            .expect("send");
                    });
                }
            }
            until(|| {
                conns
                    .iter()
                    .all(|c| c.counts().requests == 4 && c.inflight() == 0)
            })
            .await;
            for (c, b) in conns.iter().zip(&before) {
                assert_eq!(c.counts().writes - b.writes, 1, "one write for 3 clients");
            }
            // The connections end once retired; then nothing holds the flushers.
            for c in &conns {
                c.retire();
            }
            drop(conns);
            until(|| flushers.iter().all(|f| f.upgrade().is_none())).await;
        });
    }
}
