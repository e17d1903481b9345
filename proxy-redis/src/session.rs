//! One client connection: reads pipelined commands, routes each, and writes replies back in order.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use codec::resp::{Command, CommandDecoder, Frame, FrameDecoder, Limits, RespVersion};
use router::config::{ListenerLimits, User};
use router::redis::command::flags;
use router::redis::merge::MergeKind;
use router::redis::{CommandInfo, FanOutMerge, MultiKeyMerge, Policy, Resolved};
use runtime::{BackendRegistry, ListenerStats, LocalSnapshot};
use tokio::net::TcpStream;

use crate::acl;
use crate::backend::{BackendConn, Dest, Mode, PushSink, ServerInfo};
use crate::blocking::{self, Blocker, Gate};
use crate::error::Error;
use crate::metrics::CoreMetrics;
use crate::net::{self, ReadOutcome};
use crate::pool::Pool;
use crate::reply::Client;

/// Stop reading a client whose unwritten replies exceed this (it resumes once they drain).
const OUT_SOFT_LIMIT: usize = 4 * 1024 * 1024;

/// Largest bulk string accepted from a client that still has to authenticate: Redis's own cap
/// (16 KiB, `authRequired` in `processMultibulkBuffer`), so that a stranger cannot make the proxy
/// buffer a 500 MB argument before AUTH.
const PREAUTH_MAX_BULK: usize = 16 * 1024;

/// Most arguments in one command from a client that still has to authenticate (Redis: 10).
const PREAUTH_MAX_ARGS: usize = 10;

/// The decoder caps of a session: the listener's, or Redis's pre-authentication ones.
fn decoder_limits(max_frame: u64, authed: bool) -> Limits {
    let max_bulk_len = usize::try_from(max_frame).unwrap_or(usize::MAX);
    if authed {
        Limits {
            max_bulk_len,
            ..Limits::default()
        }
    } else {
        Limits {
            max_bulk_len: max_bulk_len.min(PREAUTH_MAX_BULK),
            max_array_len: PREAUTH_MAX_ARGS,
            ..Limits::default()
        }
    }
}

/// What a session shows in `CLIENT LIST`.
#[derive(Debug, Clone)]
pub struct ClientEntry {
    /// Client id.
    pub id: u64,
    /// Peer address.
    pub addr: SocketAddr,
    /// Local address.
    pub laddr: Option<SocketAddr>,
    /// `CLIENT SETNAME` name.
    pub name: String,
    /// When it connected.
    pub since: Instant,
    /// Selected db.
    pub db: u32,
    /// Protocol version.
    pub resp: u8,
    /// Authenticated user.
    pub user: String,
}

/// One core's state for one listener, shared by its sessions.
pub struct CoreCtx {
    /// Listener name.
    pub listener: String,
    /// The core index.
    pub core: usize,
    /// Config snapshot of this core.
    pub snapshot: RefCell<LocalSnapshot>,
    /// Current backend pool.
    pub pool: RefCell<Rc<Pool>>,
    /// Listener counters of this core.
    pub stats: Arc<ListenerStats>,
    /// Command metrics of this core.
    pub metrics: Rc<CoreMetrics>,
    /// The backend write coalescer of this core: every backend connection of its pools queues
    /// itself here, and all are flushed once per executor turn (see `crate::backend`).
    pub flusher: Rc<crate::backend::Flusher>,
    /// Backend states.
    pub backends: Arc<BackendRegistry>,
    /// The process-wide registries (Sentinel watches, published metrics, blocking gates).
    pub shared: Arc<crate::RedisShared>,
    /// Listener limits (from the current snapshot).
    pub limits: RefCell<ListenerLimits>,
    /// Whether clients without a user may run admin and dangerous commands (the listener's
    /// `allow_admin_commands`, from the current snapshot).
    pub allow_admin: Cell<bool>,
    /// Proxy users of this listener (from the current snapshot).
    pub users: RefCell<Rc<Vec<User>>>,
    /// The governance rules of the current snapshot when they rate-limit commands (None: no limit,
    /// and a command pays one branch).
    pub rate_limits: RefCell<Option<Arc<router::config::Governance>>>,
    /// Process-wide open client count of the listener.
    pub open_clients: Arc<AtomicU64>,
    /// Clients of this core.
    pub clients: RefCell<BTreeMap<u64, ClientEntry>>,
    /// Wake-ups of the sessions (for shutdown).
    pub wakers: RefCell<HashMap<u64, Rc<crate::notify::LocalNotify>>>,
    /// Set at shutdown: sessions close once their replies are written.
    pub closing: Cell<bool>,
    /// Next client id (per core; the core index is in the low bits).
    pub next_id: Cell<u64>,
    /// Group name of the listener at start.
    pub group: RefCell<String>,
    /// The spans' exporter and shared parts, when `[tracing]` is configured (see `crate::trace`).
    pub trace: Option<Rc<crate::trace::CoreTrace>>,
}

impl CoreCtx {
    /// What this core hands to the backend connections of its pools.
    pub fn backend_io(&self) -> crate::backend::CoreIo {
        crate::backend::CoreIo {
            metrics: self.metrics.clone(),
            flusher: self.flusher.clone(),
        }
    }

    /// The pool for the current snapshot, rebuilt if the listener's group changed.
    pub fn current_pool(&self) -> Rc<Pool> {
        let mut snap = self.snapshot.borrow_mut();
        let s = snap.get();
        let pool = self.pool.borrow().clone();
        let stale = pool.stale();
        if s.generation == pool.generation.get() && !stale {
            return pool;
        }
        let config = &s.config;
        if let Some(l) = config.listener(&self.listener) {
            *self.limits.borrow_mut() = l.limits.clone();
            self.allow_admin.set(l.allow_admin_commands);
            *self.group.borrow_mut() = l.group.clone();
        }
        *self.users.borrow_mut() = Rc::new(config.users_for(&self.listener).cloned().collect());
        *self.rate_limits.borrow_mut() = rate_limits(config);
        let group_name = self.group.borrow().clone();
        let Some(group) = config.redis_group(&group_name) else {
            return pool;
        };
        if !stale && crate::pool::fingerprint(group) == pool.fingerprint {
            // Same group: keep the connections, remember the generation.
            pool.generation.set(s.generation);
            pool.refresh_slots(group);
            return pool;
        }
        match Pool::new(
            group,
            s.generation,
            &self.backends,
            &self.shared.watches,
            self.backend_io(),
        ) {
            Ok(p) => {
                tracing::info!(listener = %self.listener, core = self.core, generation = s.generation, "redis group changed: new backend connections");
                let p = Rc::new(p);
                *self.pool.borrow_mut() = p.clone();
                p
            }
            Err(e) => {
                tracing::warn!(listener = %self.listener, "cannot rebuild backend pool: {e}");
                pool
            }
        }
    }
}

/// The governance rules of `config` if they rate-limit Redis commands or limit their concurrency.
pub fn rate_limits(config: &router::config::Config) -> Option<Arc<router::config::Governance>> {
    config
        .proxy
        .governance
        .clone()
        .filter(|g| !g.limits.is_empty() || !g.concurrency.is_empty())
}

/// Waits until `t` (forever for None: the branch of a `select!` that is off).
async fn pace_sleep(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// CLIENT REPLY: whether the replies of the next commands reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    /// Drop the reply of the next command only.
    Skip,
}

/// A MULTI in progress.
struct Multi {
    queued: Vec<Command>,
    shard: Option<usize>,
    aborted: bool,
}

/// Pub/sub state of a subscribed session.
struct PubSub {
    sink: Rc<PushSink>,
    conns: HashMap<usize, Rc<BackendConn>>,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    shard_channels: BTreeSet<Bytes>,
    /// The (un)subscribe whose confirmations wait for the backends: its reply slot, the
    /// confirmations still expected from the backends, and the reply the session then gives (Redis
    /// confirms only once the subscription is active; so does the proxy).
    awaiting: Option<(u64, usize, Vec<u8>)>,
}

impl PubSub {
    fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// A client session.
pub struct Session {
    /// TLS over the client socket (a listener with `tls`); None: plain TCP.
    tls: Option<Box<net::TlsIo>>,
    id: u64,
    core: Rc<CoreCtx>,
    client: Rc<Client>,
    peer: SocketAddr,
    db: u32,
    resp3: bool,
    /// The authenticated proxy user (boxed: most sessions have none, and this struct is part of
    /// every idle client's task).
    user: Option<Box<User>>,
    authed: bool,
    quit: bool,
    multi: Option<Box<Multi>>,
    watch: Option<(usize, Rc<BackendConn>)>,
    pubsub: Option<Box<PubSub>>,
    /// Dedicated connections of blocking commands by server, with their server-side client id.
    blocking: HashMap<usize, (Rc<BackendConn>, Arc<AtomicI64>)>,
    /// The gate this session waits for before its next blocking command may leave.
    gate_wait: Option<Arc<Gate>>,
    /// Woken when this session's turn at a gate comes (from any core).
    gate_notify: Arc<tokio::sync::Notify>,
    /// CLIENT REPLY state.
    reply_mode: ReplyMode,
    /// Set by CLIENT REPLY while it runs (its own SKIP is not the skipped command).
    reply_mode_set: bool,
    /// Commands held back until every earlier reply arrived (ordering across connections).
    deferred: VecDeque<Command>,
    /// Hold back the next commands until every reply arrived.
    barrier: bool,
    /// The pool's slot epoch this session last routed with (a new slot table or migration lets
    /// the replies in flight land first, so that a key's commands stay in order).
    slot_epoch: u64,
    now: Instant,
    protocol_error: bool,
    /// The client sent EOF: answer what it sent, then close.
    eof: bool,
    /// The listener's `max_frame` when the session started.
    max_frame: u64,
    /// Whether the decoder applies the pre-authentication caps (kept equal to `!authed`).
    decoder_preauth: bool,
    /// The caller's trace context set by `FURROW TRACEPARENT` (see `crate::trace`); boxed: few
    /// sessions set one, and this struct is part of every idle client's task.
    trace_parent: Option<Box<runtime::trace::TraceParent>>,
    /// `FURROW.LOCK` state (see `crate::lock`); created by the first lock command.
    locks: Option<crate::lock::Locks>,
    /// A queueing rate limit gave the first held-back command a later turn: nothing goes to the
    /// backends before this.
    pace_until: Option<Instant>,
    /// The first held-back command was admitted by the rate limits already (its turn came).
    admitted: bool,
    /// This session's commands counted by governance concurrency limits (None: none counted yet);
    /// given back as their replies come, and all at once when the session ends.
    inflight: Option<Box<router::config::InFlight>>,
}

/// A random number (not for cryptography: spreads RANDOMKEY over the shards).
/// Split groups of keys in moving slots: `MOVING_GROUP | old owner << 16 | new owner`.
const MOVING_GROUP: usize = 1 << 40;

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per instance from the OS and a per-thread counter.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// `cmd` is not a command Redis knows.
fn unknown_command(cmd: &Command) -> Error {
    Error::unknown_command(cmd.name(), cmd.args().skip(1))
}

fn simple(s: &str) -> Vec<u8> {
    format!("+{s}\r\n").into_bytes()
}

fn bulk(b: &[u8]) -> Vec<u8> {
    let mut v = format!("${}\r\n", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.extend_from_slice(b"\r\n");
    v
}

impl Session {
    /// A new session for an accepted connection.
    pub fn new(core: Rc<CoreCtx>, id: u64, peer: SocketAddr) -> Self {
        let authed = core.users.borrow().is_empty();
        let client = Rc::new(Client::new(RespVersion::Resp2));
        if let Some(t) = &core.trace {
            let _ = client.trace.set(crate::trace::ConnTrace::new(t, peer.ip()));
        }
        Self {
            tls: None,
            id,
            core,
            client,
            peer,
            db: 0,
            resp3: false,
            user: None,
            authed,
            quit: false,
            multi: None,
            watch: None,
            pubsub: None,
            blocking: HashMap::new(),
            gate_wait: None,
            gate_notify: Arc::default(),
            reply_mode: ReplyMode::On,
            reply_mode_set: false,
            deferred: VecDeque::new(),
            barrier: false,
            slot_epoch: 0,
            now: Instant::now(),
            protocol_error: false,
            eof: false,
            max_frame: 0,
            decoder_preauth: !authed,
            trace_parent: None,
            locks: None,
            pace_until: None,
            admitted: false,
            inflight: None,
        }
    }

    /// Speaks TLS with the client (from its first byte, as Redis's `tls-port`).
    pub fn with_tls(mut self, tls: net::TlsIo) -> Self {
        self.tls = Some(Box::new(tls));
        self
    }

    /// Serves the connection until the client leaves, misbehaves, or the listener shuts down;
    /// `guard` (the listener's accounting of the connection) is dropped when this future ends or
    /// is dropped. This future is the client's whole task: what an idle client costs beyond its
    /// buffers (its size is bounded by `tests::client_task_stays_small` in the crate root).
    ///
    /// A plain `fn` returning an `async move` block: an `async fn` keeps a second copy of its
    /// arguments in its future (rust-lang/rust#62958), here the whole `Session`.
    #[allow(clippy::manual_async_fn)] // the `async fn` form is what costs the second copy
    pub fn run<G>(mut self, stream: TcpStream, guard: G) -> impl Future<Output = ()> {
        async move {
            let _guard = guard;
            self.core
                .wakers
                .borrow_mut()
                .insert(self.id, self.client.wake.clone());
            let laddr = stream.local_addr().ok();
            self.core.clients.borrow_mut().insert(
                self.id,
                ClientEntry {
                    id: self.id,
                    addr: self.peer,
                    laddr,
                    name: String::new(),
                    since: Instant::now(),
                    db: 0,
                    resp: 2,
                    user: "default".into(),
                },
            );
            if let Err(e) = self.serve(&stream).await {
                tracing::debug!(client = self.id, "client connection ended: {e}");
            }
            self.client.q.borrow_mut().closed = true;
            // Dedicated connections belong to this session only: close them now (a blocked BLPOP or a
            // subscription ends with them).
            if let Some(ps) = self.pubsub.take() {
                for c in ps.conns.values() {
                    c.abort();
                }
            }
            for (c, _) in self.blocking.values() {
                c.abort();
            }
            if !self.blocking.is_empty() {
                self.core.shared.blocking.unregister(self.owner(), self.id);
            }
            if let Some(g) = self.gate_wait.take() {
                g.leave(self.key());
            }
            if let Some((_, c)) = self.watch.take() {
                c.abort();
            }
            if let Some(l) = self.locks.take() {
                l.close();
            }
            self.core.wakers.borrow_mut().remove(&self.id);
            self.core.clients.borrow_mut().remove(&self.id);
        }
    }

    async fn serve(&mut self, stream: &TcpStream) -> std::io::Result<()> {
        let limits = self.core.limits.borrow().clone();
        self.max_frame = limits.max_frame;
        self.decoder_preauth = !self.authed;
        let mut decoder = CommandDecoder::new(decoder_limits(self.max_frame, self.authed));
        // Empty until the first read, which offers `read_size` bytes (see `net::read_growing`):
        // an idle client holds a small buffer (issue #23, the budget in docs/redis-proxy.md).
        let mut rbuf = BytesMut::new();
        let mut read_size = net::FIRST_READ;
        let idle = limits.idle_timeout;
        let mut last_active = Instant::now();
        // Only with an `idle_timeout`: a timer is 100-odd bytes of every idle client's task.
        let mut idle_timer = idle.map(|t| Box::pin(tokio::time::sleep(t)));
        let stats = self.core.stats.clone();
        let gate_notify = self.gate_notify.clone();
        let mut got_request = false;
        loop {
            self.pump_pubsub();
            // Write what is ready.
            let (out_left, pending) = {
                let mut q = self.client.q.borrow_mut();
                if !q.out.is_empty() || self.tls.is_some() {
                    let before = q.out.len();
                    let res = match &mut self.tls {
                        None => net::write_some(stream, &mut q.out),
                        Some(t) => t.write_some(stream, &mut q.out),
                    };
                    ListenerStats::add(&stats.bytes_out, (before - q.out.len()) as u64);
                    res?;
                    if q.out.len() as u64 > limits.max_client_buffer {
                        return Err(std::io::Error::other("client reply buffer limit exceeded"));
                    }
                }
                (q.out.len(), q.pending())
            };
            if let Some(f) = self.inflight.as_deref_mut() {
                // Replies came: their commands are no longer in flight.
                f.release_to(pending as u64);
            }
            // Over TLS, what waits for the socket is the encrypted bytes.
            let (out_left, wait_writable) = match &self.tls {
                None => (out_left, out_left > 0),
                Some(t) => (out_left + t.pending_out(), t.pending_out() > 0),
            };
            if pending == 0 && out_left == 0 {
                if self.quit || self.protocol_error || (self.eof && self.deferred.is_empty()) {
                    return Ok(());
                }
                // Draining: close once idle, but not before the first request (a client that
                // just connected is about to send one; the grace period bounds the wait).
                if self.core.closing.get() && got_request {
                    return Ok(());
                }
            }
            if let Some(t) = self.pace_until
                && Instant::now() >= t
            {
                self.pace_until = None;
            }
            if pending == 0
                && !self.deferred.is_empty()
                && self.may_forward()
                && self
                    .gate_wait
                    .as_ref()
                    .is_none_or(|g| g.is_free_for(self.key()))
            {
                self.barrier = false;
                let pool = self.core.current_pool();
                while let Some(cmd) = self.deferred.pop_front() {
                    self.dispatch(cmd, &pool);
                    if self.barrier || !self.may_forward() {
                        break;
                    }
                }
                continue;
            }
            let can_read = !self.quit
                && !self.eof
                && !self.protocol_error
                && self.deferred.is_empty()
                && pending < limits.max_pipeline as usize
                && out_left < OUT_SOFT_LIMIT;
            tokio::select! {
                biased;
                _ = self.client.wake.notified() => {}
                _ = gate_notify.notified(), if self.gate_wait.is_some() => {}
                _ = pace_sleep(self.pace_until), if self.pace_until.is_some() => {}
                r = stream.readable(), if can_read => {
                    r?;
                    let got = match &mut self.tls {
                        None => net::read_growing(stream, &mut rbuf, &mut read_size),
                        Some(t) => t.read_available(stream, &mut rbuf),
                    };
                    match got? {
                        ReadOutcome::Data(n) => {
                            got_request = true;
                            ListenerStats::add(&stats.bytes_in, n as u64);
                            self.now = Instant::now();
                            last_active = self.now;
                            self.process(&mut decoder, &mut rbuf);
                        }
                        ReadOutcome::WouldBlock => {}
                        ReadOutcome::Closed => {
                            // The client finished sending (maybe only half-closed, as
                            // `printf ... | nc` does): answer what it sent, then close.
                            // As in Redis, a blocked or subscribed client is dropped at once.
                            let idle = pending == 0
                                && self.deferred.is_empty()
                                && self.client.q.borrow().out.is_empty();
                            let blocked = self.pubsub.is_some()
                                || self.locks.as_ref().is_some_and(crate::lock::Locks::waiting)
                                || self.blocking.values().any(|(c, _)| c.inflight() > 0);
                            if idle || blocked {
                                return Ok(());
                            }
                            self.eof = true;
                        }
                    }
                }
                r = stream.writable(), if wait_writable => { r?; }
                _ = std::future::poll_fn(|cx| match idle_timer.as_mut() {
                    Some(t) => t.as_mut().poll(cx),
                    None => std::task::Poll::Pending,
                }), if idle_timer.is_some() => {
                    let (Some(t), Some(timer)) = (idle, idle_timer.as_mut()) else { continue };
                    if last_active.elapsed() >= t && pending == 0 && self.pubsub.is_none() && self.blocking.is_empty() {
                        return Ok(());
                    }
                    timer.as_mut().reset(tokio::time::Instant::from_std((last_active + t).max(Instant::now() + std::time::Duration::from_millis(10))));
                }
            }
        }
    }

    fn process(&mut self, decoder: &mut CommandDecoder, rbuf: &mut BytesMut) {
        let pool = self.core.current_pool();
        if pool.slot_epoch() != self.slot_epoch {
            self.slot_epoch = pool.slot_epoch();
            if self.client.q.borrow().pending() > 0 {
                self.barrier = true;
            }
        }
        let mut count = 0u64;
        loop {
            if self.decoder_preauth == self.authed {
                // AUTH succeeded (or RESET logged out): switch caps. The decoder consumes nothing
                // before a command is complete, so a fresh one resumes at the same byte.
                self.decoder_preauth = !self.authed;
                *decoder = CommandDecoder::new(decoder_limits(self.max_frame, self.authed));
            }
            match decoder.decode(rbuf) {
                Ok(Some(cmd)) => {
                    count += 1;
                    if self.barrier || !self.deferred.is_empty() || !self.may_forward() {
                        self.deferred.push_back(cmd);
                    } else {
                        self.dispatch(cmd, &pool);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(Error::protocol(e, self.decoder_preauth));
                    self.protocol_error = true;
                    rbuf.clear();
                    break;
                }
            }
        }
        ListenerStats::add(&self.core.stats.requests, count);
    }

    /// Whether the next command may go to a backend now: not while the client's unread replies
    /// fill its budget, and with large replies, not while one is already coming (a slow reader
    /// then has at most one large reply in flight; the shared backend connections never wait
    /// for it). Held commands wait in `deferred`, and the client is not read meanwhile.
    fn may_forward(&self) -> bool {
        if self.pace_until.is_some() {
            return false;
        }
        let q = self.client.q.borrow();
        let budget = self.reply_budget();
        let unread = q.unread();
        if unread >= budget {
            return false;
        }
        let pending = q.pending();
        pending == 0
            || unread.saturating_add(q.largest_reply().saturating_mul(pending + 1)) <= budget
    }

    /// Reply bytes a client may have unread before its commands are held back.
    fn reply_budget(&self) -> usize {
        let max =
            usize::try_from(self.core.limits.borrow().max_client_buffer).unwrap_or(usize::MAX);
        OUT_SOFT_LIMIT.min(max / 2)
    }

    /// Refuses a command before it runs or is queued: inside MULTI, as in Redis, the refusal also
    /// dooms the transaction (EXEC then answers EXECABORT).
    fn reject(&mut self, data: &[u8]) {
        if let Some(m) = self.multi.as_mut() {
            m.aborted = true;
        }
        self.local(data);
    }

    /// Answers the current command with `e` (see [`Session::reject`] for refusals).
    fn fail(&mut self, e: Error) {
        self.local(&e.reply());
    }

    /// Refuses the current command with `e`; inside MULTI, dooms the transaction.
    fn refuse(&mut self, e: Error) {
        self.reject(&e.reply());
    }

    #[inline]
    fn local(&mut self, data: &[u8]) {
        if data.first() == Some(&b'-') {
            ListenerStats::add(&self.core.stats.errors, 1);
        }
        self.client.q.borrow_mut().push_local(data);
    }

    /// Sends a whole command to one server's shared connection.
    #[inline]
    fn send_one(&mut self, pool: &Pool, server: usize, raw: &Bytes, name: &'static str) {
        self.send_to(pool, server, raw, name, false);
    }

    /// Sends a whole command to one server's shared connection, or one of its replicas' for a
    /// read-only command when the group reads from replicas.
    #[inline]
    fn send_to(
        &mut self,
        pool: &Pool,
        server: usize,
        raw: &Bytes,
        name: &'static str,
        readonly: bool,
    ) {
        self.send_keyed(pool, server, raw, name, readonly, None);
    }

    /// [`Self::send_to`]; with `sized`, the command's key, its reply's size is sampled for big keys
    /// (1 in `metrics::REPLY_SAMPLE_EVERY` single-key commands; see `backend::SizedReply`).
    fn send_keyed(
        &mut self,
        pool: &Pool,
        server: usize,
        raw: &Bytes,
        name: &'static str,
        readonly: bool,
        sized: Option<&[u8]>,
    ) {
        let Some(conn) = pool.conn_for(server, self.db, self.resp3, self.id, readonly) else {
            let e = Error::NoServerForKey.reply();
            self.core.metrics.proxy_error(name, e.len());
            self.client.q.borrow_mut().push_local(&e);
            return;
        };
        let seq = self.client.q.borrow_mut().push_pending();
        let mut dest = Dest::Whole(self.client.clone(), seq);
        if let Some(key) = sized {
            dest = crate::backend::SizedReply::wrap(dest, key);
        }
        if self.core.trace.is_some() {
            dest = self.traced(dest, name, &conn.server);
        }
        if let Err(e) = conn.send(raw, [dest], self.now, name) {
            self.fail_seq(seq, &e, name);
        }
    }

    /// Runs one command; while CLIENT REPLY is OFF (or SKIP, for one command) its replies are
    /// dropped.
    fn dispatch(&mut self, cmd: Command, pool: &Rc<Pool>) {
        let mode = self.reply_mode;
        if mode == ReplyMode::On {
            return self.dispatch_command(cmd, pool);
        }
        let held = self.deferred.len();
        self.reply_mode_set = false;
        self.client.q.borrow_mut().muted = true;
        self.dispatch_command(cmd, pool);
        self.client.q.borrow_mut().muted = false;
        let deferred = self.deferred.len() > held;
        if mode == ReplyMode::Skip && !deferred && !self.reply_mode_set {
            self.reply_mode = ReplyMode::On;
        }
    }

    /// The governance rate limits for the next command: None to go on now, `Ok(µs)` to wait for
    /// its turn (a queueing limit), `Err` when it is refused.
    fn rate_limit(&self) -> Option<Result<u64, Error>> {
        let gov = self.core.rate_limits.borrow();
        let g = gov.as_ref()?;
        let user = self.user.as_ref().map_or("default", |u| u.name.as_str());
        match g.admit_command(user, router::config::pace_clock_us()) {
            Ok(0) => None,
            Ok(wait) => Some(Ok(wait)),
            Err(l) => Some(Err(Error::RateLimited {
                user: user.to_string(),
                qps: l.qps,
                rule: l.message.clone(),
            })),
        }
    }

    /// The governance concurrency limits for the next command: None when it may go (it is counted
    /// in flight until its reply comes), the error when a limit is full.
    fn concurrency_limit(&mut self) -> Option<Error> {
        let gov = self.core.rate_limits.borrow();
        let g = gov.as_ref().filter(|g| !g.concurrency.is_empty())?;
        let user = self.user.as_ref().map_or("default", |u| u.name.as_str());
        if !self
            .inflight
            .as_ref()
            .is_some_and(|f| f.is_for(g.version, user))
        {
            // A new rule set or another user: what the old hold counted is given back.
            self.inflight = Some(Box::new(g.in_flight(user)));
        }
        let f = self.inflight.as_deref_mut()?;
        let i = f.acquire().err()?;
        g.budgets.over_concurrency.fetch_add(1, Ordering::Relaxed);
        let l = g.concurrency.get(i)?;
        Some(Error::OverConcurrency {
            user: user.to_string(),
            max: l.max,
            rule: l.message.clone(),
        })
    }

    /// The key of this session's listener in the process-wide CLIENT UNBLOCK registry.
    fn owner(&self) -> usize {
        Arc::as_ptr(&self.core.open_clients) as usize
    }

    /// This session, process-wide.
    fn key(&self) -> blocking::SessionKey {
        (self.owner(), self.id)
    }

    fn dispatch_command(&mut self, cmd: Command, pool: &Rc<Pool>) {
        let argc = cmd.len();
        let info = match router::redis::lookup(cmd.name()) {
            Some(i) if i.subcommands.is_empty() => i,
            Some(parent) => {
                let args: Vec<&[u8]> = cmd.args().take(2).collect();
                match router::redis::resolve(&args) {
                    Resolved::Command(i) => i,
                    Resolved::UnknownSubcommand(_) => {
                        self.refuse(Error::UnknownSubcommand {
                            sub: String::from_utf8_lossy(cmd.arg(1).unwrap_or_default())
                                .into_owned(),
                            parent: parent.name.to_ascii_uppercase(),
                        });
                        return;
                    }
                    Resolved::UnknownCommand => {
                        self.refuse(unknown_command(&cmd));
                        return;
                    }
                }
            }
            None if self.authed && crate::lock::is_lock_command(cmd.name()) => {
                self.lock_command(&cmd);
                return;
            }
            None if cmd.name().eq_ignore_ascii_case(b"FURROW") && self.authed => {
                self.furrow_command(&cmd);
                return;
            }
            None => {
                self.refuse(unknown_command(&cmd));
                return;
            }
        };
        if !info.arity_ok(argc) {
            self.refuse(Error::WrongArity(info.name));
            return;
        }
        if !self.authed && !matches!(info.name, "auth" | "hello" | "quit" | "reset") {
            self.refuse(Error::NoAuth);
            return;
        }
        if let Some(u) = &self.user
            && !matches!(info.name, "auth" | "hello" | "quit" | "reset")
            && !acl::command_allowed(u, info)
        {
            self.refuse(Error::CommandDenied(info.name));
            return;
        }
        if self.user.is_none()
            && !self.core.allow_admin.get()
            && info.refused_when_open()
            && !matches!(info.policy, Policy::Unsupported { .. })
        {
            // No user, so no rules: an open listener must not let anyone reconfigure, wipe or stop
            // every shard.
            self.refuse(Error::AdminRefused {
                command: info.name,
                listener: self.core.listener.clone(),
            });
            return;
        }
        if self.admitted {
            // Its turn in a rate limit's queue came.
            self.admitted = false;
        } else if !matches!(info.name, "auth" | "hello" | "quit" | "reset")
            && let Some(r) = self.rate_limit()
        {
            match r {
                Ok(wait) => {
                    self.pace_until = Some(Instant::now() + std::time::Duration::from_micros(wait));
                    self.admitted = true;
                    self.deferred.push_front(cmd);
                }
                Err(e) => self.refuse(e),
            }
            return;
        }
        if !matches!(info.name, "auth" | "hello" | "quit" | "reset")
            && let Some(e) = self.concurrency_limit()
        {
            self.refuse(e);
            return;
        }
        if self.pubsub.is_some() && !self.resp3 {
            match info.name {
                "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
                | "sunsubscribe" | "ping" | "quit" | "reset" => {}
                _ => {
                    self.refuse(Error::SubscribedContext(info.name));
                    return;
                }
            }
        }
        if pool.has_moving()
            && (self.multi.is_some()
                || matches!(info.policy, Policy::Blocking | Policy::Transaction))
            && let Some(slot) = self.moving_slot(&cmd, info, pool)
        {
            let what = if self.multi.is_some() || info.policy == Policy::Transaction {
                "a transaction"
            } else {
                "a blocking command"
            };
            self.refuse(Error::SlotMigrating { slot, what });
            return;
        }
        if self.multi.is_some()
            && !matches!(
                info.name,
                "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
            )
        {
            self.queue_in_multi(cmd, info, pool);
            return;
        }
        match info.policy {
            Policy::SingleKey => {
                // Fast path: most single-key commands have their key at index 1.
                let key_idx = if info.first_key > 0 && !info.movable_keys() {
                    Some(info.first_key as usize)
                } else {
                    router::redis::keys(info, argc, |i| cmd.arg(i).unwrap_or_default())
                        .ok()
                        .and_then(|mut k| k.next())
                };
                let key = key_idx.and_then(|i| cmd.arg(i)).unwrap_or_default();
                if let Some(u) = &self.user
                    && !acl::key_allowed(u, key)
                {
                    self.fail(Error::KeyDenied);
                    return;
                }
                let sized = self.core.metrics.key(key, cmd.raw().len());
                if let Some((_, from, to)) = pool.moving(key) {
                    self.send_moving(pool, (from, to), &[key], cmd.raw(), info.name, None);
                    return;
                }
                let shard = pool.shard(key);
                let readonly = info.flags.has(flags::READONLY);
                let sized = sized.then_some(key);
                self.send_keyed(pool, shard, cmd.raw(), info.name, readonly, sized);
            }
            Policy::SameShard
                if pool.has_moving() && self.moving_slot(&cmd, info, pool).is_some() =>
            {
                self.same_shard_moving(&cmd, info, pool);
            }
            Policy::SameShard => {
                let Some(shard) = self.same_shard(&cmd, info, pool) else {
                    return;
                };
                self.send_one(pool, shard, cmd.raw(), info.name);
            }
            Policy::MultiKey { merge } => self.split(&cmd, info, merge, pool),
            Policy::FanOut { merge } => self.fan_out(&cmd, info, merge, pool),
            Policy::AnyShard => self.send_one(pool, 0, cmd.raw(), info.name),
            Policy::Session if info.name == "client|unblock" => self.client_unblock(&cmd, pool),
            Policy::Session => self.session_command(&cmd, info),
            Policy::Blocking => self.blocking_command(&cmd, info, pool),
            Policy::PubSub => self.pubsub_command(&cmd, info, pool),
            Policy::Transaction => self.transaction(&cmd, info, pool),
            Policy::Unsupported { reason } => {
                self.fail(Error::Unsupported {
                    name: String::from_utf8_lossy(cmd.name()).into_owned(),
                    reason,
                });
            }
        }
    }

    /// `dest` wrapped so that its command (or its part on `server`) is traced (see `crate::trace`).
    ///
    /// Only a command that is head-sampled or has a caller's context is wrapped: one that is
    /// neither travels as it is, and its reply path makes a root span only if it failed or was
    /// slow (`crate::trace::unsampled_reply`) — no allocation for the commands not traced. The
    /// test and the head-sampling countdown are inlined (at 1 % a call per command cost ~40
    /// instructions); wrapping is not.
    #[inline]
    fn traced(&self, dest: Dest, name: &'static str, server: &Rc<ServerInfo>) -> Dest {
        let Some(c) = self.client.trace.get() else {
            return dest;
        };
        match self.trace_parent.as_deref() {
            Some(p) => Self::wrap_traced(dest, c, Some(*p), name, server),
            None if c.head_sampled() => match dest {
                // The common case: no wrapper, the span is made from the reply path's facts.
                Dest::Whole(client, seq) => Dest::Sampled(client, seq),
                d => Self::wrap_traced(d, c, None, name, server),
            },
            None => dest,
        }
    }

    /// [`Self::traced`]'s wrapping: a caller's context is followed when it is sampled or the
    /// command is head-sampled.
    #[cold]
    fn wrap_traced(
        dest: Dest,
        c: &Rc<crate::trace::ConnTrace>,
        parent: Option<runtime::trace::TraceParent>,
        name: &'static str,
        server: &Rc<ServerInfo>,
    ) -> Dest {
        let sampled = match &parent {
            Some(p) => p.sampled || c.head_sampled(),
            None => true,
        };
        crate::trace::wrap(dest, c, parent, sampled, name, server)
    }

    /// `FURROW TRACEPARENT [VALUE]`: sets or clears the connection's trace context (see
    /// `crate::trace`); the proxy's own command, never sent to a server.
    #[cold]
    fn furrow_command(&mut self, cmd: &Command) {
        let sub = cmd.arg(1).unwrap_or_default();
        if !sub.eq_ignore_ascii_case(b"TRACEPARENT") || cmd.len() > 3 {
            self.refuse(unknown_command(cmd));
            return;
        }
        match crate::trace::traceparent_arg(cmd.arg(2)) {
            Ok(p) => {
                self.trace_parent = p.map(Box::new);
                self.local(&simple("OK"));
            }
            Err(msg) => self.local(format!("-ERR {msg}\r\n").as_bytes()),
        }
    }

    /// `FURROW.LOCK` / `FURROW.UNLOCK` (see `crate::lock`): answered when the lock server
    /// decided; the client's next commands wait for that answer.
    #[cold]
    fn lock_command(&mut self, cmd: &Command) {
        if self.multi.is_some() {
            self.reject(
                b"-ERR furrow lock: FURROW.LOCK / FURROW.UNLOCK are not allowed in MULTI\r\n",
            );
            return;
        }
        match crate::lock::parse(cmd) {
            Err(msg) => self.local(format!("-ERR {msg}\r\n").as_bytes()),
            Ok(call) => {
                let seq = self.client.q.borrow_mut().push_pending();
                let (core, id) = (self.core.clone(), self.id);
                self.locks
                    .get_or_insert_with(|| crate::lock::Locks::new(core, id))
                    .start(call, self.client.clone(), seq);
                self.barrier = true;
            }
        }
    }

    /// The one shard of every key of `cmd` (any shard when it has none), or `None` after replying
    /// with an error.
    fn same_shard(&mut self, cmd: &Command, info: &CommandInfo, pool: &Pool) -> Option<usize> {
        let keys = match router::redis::keys(info, cmd.len(), |i| cmd.arg(i).unwrap_or_default()) {
            Ok(k) => k,
            // Malformed key arguments (numkeys out of range, unbalanced STREAMS, ...): no key is
            // touched, and a server answers with Redis's own error for this command.
            Err(_) => return Some(pool.targets().first().copied().unwrap_or(0)),
        };
        let mut shard: Option<usize> = None;
        for i in keys {
            let key = cmd.arg(i).unwrap_or_default();
            if let Some(u) = &self.user
                && !acl::key_allowed(u, key)
            {
                self.fail(Error::KeyDenied);
                return None;
            }
            let s = pool.shard(key);
            if shard.is_some_and(|x| x != s) {
                self.fail(Error::CrossSlot);
                return None;
            }
            shard = Some(s);
        }
        if let Some(k) = cmd.arg(1) {
            self.core.metrics.key(k, cmd.raw().len());
        }
        Some(shard.unwrap_or(0))
    }

    fn split(
        &mut self,
        cmd: &Command,
        info: &'static CommandInfo,
        merge: MultiKeyMerge,
        pool: &Pool,
    ) {
        let step = if merge == MultiKeyMerge::AllOk { 2 } else { 1 };
        let argc = cmd.len();
        if step == 2 && !(argc - 1).is_multiple_of(2) {
            self.fail(Error::WrongArity(info.name));
            return;
        }
        // Group keys per shard, remembering their positions.
        let mut per: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        let mut shard_of: router::FastMap<usize, usize> = router::FastMap::default();
        let nkeys = (argc - 1) / step;
        for k in 0..nkeys {
            let key = cmd.arg(1 + k * step).unwrap_or_default();
            if let Some(u) = &self.user
                && !acl::key_allowed(u, key)
            {
                self.fail(Error::KeyDenied);
                return;
            }
            self.core.metrics.key(key, 0);
            // Grouped by shard; by slot in cluster mode (a node refuses keys of several slots);
            // keys of moving slots by (old, new owner): their part moves them first.
            let (group, shard) = match pool.moving(key) {
                Some((_, from, to)) => (MOVING_GROUP | (from << 16) | to, to),
                None => pool.split_group(key),
            };
            per.entry(group).or_default().push(k as u32);
            shard_of.insert(group, shard);
        }
        let readonly = info.flags.has(flags::READONLY);
        let keys_of = |positions: &[u32]| -> Vec<&[u8]> {
            positions
                .iter()
                .map(|&p| cmd.arg(1 + p as usize * step).unwrap_or_default())
                .collect()
        };
        if per.len() == 1 {
            if let Some((&group, positions)) = per.iter().next()
                && group & MOVING_GROUP != 0
            {
                let pair = ((group & !MOVING_GROUP) >> 16, group & 0xffff);
                let keys = keys_of(positions);
                self.send_moving(pool, pair, &keys, cmd.raw(), info.name, None);
                return;
            }
            let shard = shard_of.values().next().copied().unwrap_or(0);
            self.send_to(pool, shard, cmd.raw(), info.name, readonly);
            return;
        }
        let kind = match merge {
            MultiKeyMerge::ConcatInKeyOrder => MergeKind::Gather {
                positions: per.values().cloned().collect(),
                total: nkeys,
            },
            MultiKeyMerge::SumIntegers => MergeKind::Sum,
            MultiKeyMerge::AllOk => MergeKind::AllOk,
        };
        let seq = self.client.q.borrow_mut().push_merge(kind, per.len());
        let per_keys: Vec<Vec<u32>> = per.values().cloned().collect();
        for (part, (group, positions)) in per.into_iter().enumerate() {
            let shard = shard_of.get(&group).copied().unwrap_or(0);
            let mut args: Vec<&[u8]> = Vec::with_capacity(1 + positions.len() * step);
            args.push(cmd.name());
            for p in positions {
                for j in 0..step {
                    args.push(cmd.arg(1 + p as usize * step + j).unwrap_or_default());
                }
            }
            let sub = Command::from_args(args);
            let raw = sub.raw();
            if group & MOVING_GROUP != 0 {
                let pair = ((group & !MOVING_GROUP) >> 16, group & 0xffff);
                let keys = keys_of(&per_keys[part]);
                self.send_moving(pool, pair, &keys, raw, info.name, Some((seq, part as u32)));
                continue;
            }
            self.send_part_to(pool, shard, raw, (seq, part as u32), info.name, readonly);
        }
    }

    /// The slot of the first key of `cmd` that is moving to another server.
    fn moving_slot(&self, cmd: &Command, info: &CommandInfo, pool: &Pool) -> Option<u16> {
        let keys = router::redis::keys(info, cmd.len(), |i| cmd.arg(i).unwrap_or_default()).ok()?;
        for i in keys {
            if let Some((slot, _, _)) = pool.moving(cmd.arg(i).unwrap_or_default()) {
                return Some(slot);
            }
        }
        None
    }

    /// A one-shard command with keys in moving slots: when every key moves between the same two
    /// servers, the keys move and the command runs on the new owner; else it must wait
    /// (`-TRYAGAIN`, as Redis Cluster answers), since its keys are on two servers meanwhile.
    fn same_shard_moving(&mut self, cmd: &Command, info: &'static CommandInfo, pool: &Pool) {
        let Ok(idx) = router::redis::keys(info, cmd.len(), |i| cmd.arg(i).unwrap_or_default())
        else {
            return self.send_one(pool, 0, cmd.raw(), info.name);
        };
        let mut pair = None;
        let mut keys: Vec<&[u8]> = Vec::new();
        for i in idx {
            let key = cmd.arg(i).unwrap_or_default();
            if let Some(u) = &self.user
                && !acl::key_allowed(u, key)
            {
                return self.fail(Error::KeyDenied);
            }
            match pool.moving(key) {
                Some((_, from, to)) if pair.is_none_or(|p| p == (from, to)) => {
                    pair = Some((from, to));
                    keys.push(key);
                }
                other => {
                    let slot = other.map_or_else(|| router::redis::key_slot(key), |m| m.0);
                    return self.fail(Error::SlotMigrating {
                        slot,
                        what: "a command on keys of moving and other slots",
                    });
                }
            }
        }
        match pair {
            Some(pair) => self.send_moving(pool, pair, &keys, cmd.raw(), info.name, None),
            None => self.send_one(pool, 0, cmd.raw(), info.name),
        }
    }

    /// Sends `raw` to the new owner once `keys` moved there: `MIGRATE ... KEYS` goes to the old
    /// owner on this client's connection, and its reply releases the command (see
    /// [`crate::backend::Dest::Then`]). A key of a moving slot is thus always on exactly one
    /// server, and a write to a key the mover is moving waits for that move (the old owner runs
    /// one MIGRATE at a time).
    fn send_moving(
        &mut self,
        pool: &Pool,
        (from, to): (usize, usize),
        keys: &[&[u8]],
        raw: &Bytes,
        name: &'static str,
        part: Option<(u64, u32)>,
    ) {
        let (dest, seq) = match part {
            Some((seq, p)) => (Dest::Part(self.client.clone(), seq, p), None),
            None => {
                let seq = self.client.q.borrow_mut().push_pending();
                (Dest::Whole(self.client.clone(), seq), Some(seq))
            }
        };
        let conns = (
            pool.conn(from, self.db, self.resp3, self.id),
            pool.conn(to, self.db, self.resp3, self.id),
            pool.server(to),
        );
        let res = match conns {
            (Some(src), Some(dst), Some(target)) => {
                let mv = crate::migrate::move_command(
                    &target.address,
                    target.username.as_deref(),
                    target.password.as_deref(),
                    self.db,
                    target.request_timeout.as_millis() as u64,
                    keys.iter().copied(),
                );
                let then = crate::backend::Then {
                    conn: dst,
                    raw: raw.clone(),
                    dest,
                    cmd: name,
                };
                src.send(&mv, [Dest::Then(Box::new(then))], self.now, "migrate")
            }
            _ => Err(Error::NoServerForKey),
        };
        if let Err(e) = res {
            match (seq, part) {
                (Some(seq), _) => self.fail_seq(seq, &e, name),
                (None, Some((seq, p))) => {
                    let e = e.reply();
                    self.core.metrics.proxy_error(name, e.len());
                    self.client.q.borrow_mut().deliver_part(seq, p, &e);
                }
                (None, None) => {}
            }
        }
    }

    fn send_part(
        &mut self,
        pool: &Pool,
        shard: usize,
        raw: &Bytes,
        seq: u64,
        part: u32,
        name: &'static str,
    ) {
        self.send_part_to(pool, shard, raw, (seq, part), name, false);
    }

    /// Sends one part of a merged command (`at` = sequence, part), to a replica when `readonly`
    /// and the group reads from replicas.
    fn send_part_to(
        &mut self,
        pool: &Pool,
        shard: usize,
        raw: &Bytes,
        at: (u64, u32),
        name: &'static str,
        readonly: bool,
    ) {
        let (seq, part) = at;
        let res = match pool.conn_for(shard, self.db, self.resp3, self.id, readonly) {
            Some(conn) => {
                let mut dest = Dest::Part(self.client.clone(), seq, part);
                if self.core.trace.is_some() {
                    dest = self.traced(dest, name, &conn.server);
                }
                conn.send(raw, [dest], self.now, name)
            }
            None => Err(Error::NoServer),
        };
        if let Err(e) = res {
            let e = e.reply();
            self.core.metrics.proxy_error(name, e.len());
            self.client.q.borrow_mut().deliver_part(seq, part, &e);
        }
    }

    fn fan_out(
        &mut self,
        cmd: &Command,
        info: &'static CommandInfo,
        merge: FanOutMerge,
        pool: &Pool,
    ) {
        let targets = pool.targets();
        let n = targets.len().max(1);
        if info.name == "ping" {
            let reply = match cmd.arg(1) {
                // A RESP2 subscriber gets Redis's subscribed-mode form: ["pong", message].
                _ if self.pubsub.is_some() && !self.resp3 => {
                    let mut v = b"*2\r\n$4\r\npong\r\n".to_vec();
                    v.extend(bulk(cmd.arg(1).unwrap_or_default()));
                    v
                }
                Some(m) => bulk(m),
                None => simple("PONG"),
            };
            self.local(&reply);
            return;
        }
        if merge == FanOutMerge::Scan {
            let cursor: u64 = match std::str::from_utf8(cmd.arg(1).unwrap_or_default())
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(c) => c,
                None => {
                    self.fail(Error::InvalidCursor);
                    return;
                }
            };
            let shard_pos = (cursor % n as u64) as usize;
            let shard = targets.get(shard_pos).copied().unwrap_or(0);
            let inner = cursor / n as u64;
            let mut args: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
            if let Some(a) = args.get_mut(1) {
                *a = inner.to_string().into_bytes();
            }
            let sub = Command::from_args(args);
            let seq = self.client.q.borrow_mut().push_merge(
                MergeKind::Scan {
                    shard: shard_pos as u64,
                    shards: n as u64,
                },
                1,
            );
            self.send_part(pool, shard, sub.raw(), seq, 0, info.name);
            return;
        }
        if matches!(info.name, "script|kill" | "function|kill") {
            self.kill_busy(cmd, info, &targets, pool);
            return;
        }
        let kind = match merge {
            FanOutMerge::AllOk | FanOutMerge::AllEqual => MergeKind::AllOk,
            FanOutMerge::SumIntegers => MergeKind::Sum,
            FanOutMerge::ConcatArrays => MergeKind::Concat,
            FanOutMerge::ElementwiseAnd => MergeKind::And,
            FanOutMerge::MinInteger => MergeKind::Min,
            FanOutMerge::AnyNonNil => MergeKind::FirstNonNull { pick: random_u64() },
            FanOutMerge::AnySuccess => MergeKind::AnySuccess,
            FanOutMerge::Info => MergeKind::Info {
                names: targets
                    .iter()
                    .filter_map(|&i| pool.server(i))
                    .map(|s| (s.name.clone(), s.address.clone()))
                    .collect(),
                // The proxy's own sections come with the default ones only (INFO, INFO default,
                // INFO all, INFO everything), as Redis's optional sections do.
                head: if cmd.len() == 1
                    || cmd.args().skip(1).any(|a| {
                        a.eq_ignore_ascii_case(b"default")
                            || a.eq_ignore_ascii_case(b"all")
                            || a.eq_ignore_ascii_case(b"everything")
                    }) {
                    format!(
                        "# Proxy\r\nproxy:furrow\r\nproxy_version:{}\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nlistener:{}\r\nshards:{}\r\n",
                        env!("CARGO_PKG_VERSION"),
                        self.core.listener,
                        n
                    )
                } else {
                    String::new()
                },
            },
            FanOutMerge::Scan => MergeKind::AllOk,
        };
        let seq = self.client.q.borrow_mut().push_merge(kind, targets.len());
        for (part, &shard) in targets.iter().enumerate() {
            self.send_part(pool, shard, cmd.raw(), seq, part as u32, info.name);
        }
    }

    /// SCRIPT KILL / FUNCTION KILL: a busy server answers nothing on the shared connections
    /// (the script's own command is ahead of anything sent there), so the kill goes to every
    /// server on a connection of its own; the busy one answers OK, the others NOTBUSY.
    fn kill_busy(
        &mut self,
        cmd: &Command,
        info: &'static CommandInfo,
        targets: &[usize],
        pool: &Pool,
    ) {
        let seq = self
            .client
            .q
            .borrow_mut()
            .push_merge(MergeKind::AnySuccess, targets.len());
        for (part, &shard) in targets.iter().enumerate() {
            let res = match pool.dedicated(shard, self.db, self.resp3, Mode::Pipeline, true) {
                Some(c) => {
                    let r = c.send(
                        cmd.raw(),
                        [Dest::Part(self.client.clone(), seq, part as u32)],
                        self.now,
                        info.name,
                    );
                    // Closed once it answered.
                    c.retire();
                    r
                }
                None => Err(Error::NoServer),
            };
            if let Err(e) = res {
                let e = e.reply();
                self.core.metrics.proxy_error(info.name, e.len());
                self.client
                    .q
                    .borrow_mut()
                    .deliver_part(seq, part as u32, &e);
            }
        }
    }

    fn session_command(&mut self, cmd: &Command, info: &CommandInfo) {
        match info.name {
            "echo" => {
                let m = bulk(cmd.arg(1).unwrap_or_default());
                self.local(&m);
            }
            "quit" => {
                self.local(b"+OK\r\n");
                self.quit = true;
            }
            "select" => {
                match std::str::from_utf8(cmd.arg(1).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                {
                    Some(db) if db < 16 => {
                        self.db = db;
                        if let Some(e) = self.core.clients.borrow_mut().get_mut(&self.id) {
                            e.db = db;
                        }
                        self.local(b"+OK\r\n");
                    }
                    Some(_) => self.fail(Error::DbIndexOutOfRange),
                    None => self.fail(Error::NotAnInteger),
                }
            }
            "auth" => {
                let (user, pass) = match cmd.len() {
                    2 => (None, cmd.arg(1).unwrap_or_default()),
                    3 => (cmd.arg(1), cmd.arg(2).unwrap_or_default()),
                    _ => {
                        self.fail(Error::Syntax);
                        return;
                    }
                };
                let r = self.authenticate(user, pass);
                self.local(&r);
            }
            "hello" => self.hello(cmd),
            "reset" => {
                self.reset_state();
                self.local(b"+RESET\r\n");
            }
            "readonly" | "readwrite" => self.local(b"+OK\r\n"),
            "client|setname" => {
                let name = cmd.arg(2).unwrap_or_default();
                if name.iter().any(|&b| b <= b' ' || b > b'~') {
                    self.fail(Error::BadClientName);
                    return;
                }
                if let Some(e) = self.core.clients.borrow_mut().get_mut(&self.id) {
                    e.name = String::from_utf8_lossy(name).into_owned();
                }
                self.local(b"+OK\r\n");
            }
            "client|getname" => {
                let name = self
                    .core
                    .clients
                    .borrow()
                    .get(&self.id)
                    .map(|e| e.name.clone())
                    .unwrap_or_default();
                if name.is_empty() {
                    let null: &[u8] = if self.resp3 { b"_\r\n" } else { b"$-1\r\n" };
                    self.local(null);
                } else {
                    self.local(&bulk(name.as_bytes()));
                }
            }
            "client|id" => {
                let r = format!(":{}\r\n", self.id);
                self.local(r.as_bytes());
            }
            "client|info" => {
                let line = self
                    .core
                    .clients
                    .borrow()
                    .get(&self.id)
                    .map(client_line)
                    .unwrap_or_default();
                self.local(&bulk(line.as_bytes()));
            }
            "client|list" => {
                let all: String = self
                    .core
                    .clients
                    .borrow()
                    .values()
                    .map(client_line)
                    .collect();
                self.local(&bulk(all.as_bytes()));
            }
            "client|reply" => {
                let arg = cmd.arg(2).unwrap_or_default();
                self.reply_mode_set = true;
                if arg.eq_ignore_ascii_case(b"on") {
                    self.reply_mode = ReplyMode::On;
                    self.client.q.borrow_mut().muted = false;
                    self.local(b"+OK\r\n");
                } else if arg.eq_ignore_ascii_case(b"off") {
                    self.reply_mode = ReplyMode::Off;
                } else if arg.eq_ignore_ascii_case(b"skip") {
                    // As in Redis, SKIP while OFF leaves replies off.
                    if self.reply_mode != ReplyMode::Off {
                        self.reply_mode = ReplyMode::Skip;
                    }
                } else {
                    self.fail(Error::Syntax);
                }
            }
            other => {
                self.fail(Error::NotImplemented(other));
            }
        }
    }

    fn authenticate(&mut self, user: Option<&[u8]>, pass: &[u8]) -> Vec<u8> {
        let users = self.core.users.borrow().clone();
        if users.is_empty() {
            return Error::AuthNotConfigured.reply();
        }
        // As in Redis, `AUTH <password>` is `AUTH default <password>`: it never logs in as another
        // user whose password happens to match.
        let name = user.unwrap_or(b"default");
        let found = users.iter().find(|u| u.name.as_bytes() == name);
        match found {
            Some(u)
                if acl::password_ok(u, pass)
                    && (u.hosts.is_empty()
                        || u.hosts.iter().any(|h| h.contains(self.peer.ip()))) =>
            {
                // Governance caller lists: the caller of a proxy is its user.
                let gov = self
                    .core
                    .snapshot
                    .borrow_mut()
                    .get()
                    .config
                    .proxy
                    .governance
                    .clone();
                if let Some(g) = gov
                    && let Err(l) = g.admits_caller(&u.name)
                {
                    return Error::CallerRefused {
                        user: u.name.clone(),
                        rule: l.message.clone(),
                    }
                    .reply();
                }
                self.authed = true;
                if let Some(e) = self.core.clients.borrow_mut().get_mut(&self.id) {
                    e.user = u.name.clone();
                }
                self.user = Some(Box::new(u.clone()));
                b"+OK\r\n".to_vec()
            }
            _ => Error::WrongPass.reply(),
        }
    }

    fn hello(&mut self, cmd: &Command) {
        let mut version = if self.resp3 { 3 } else { 2 };
        let mut i = 1;
        if let Some(v) = cmd.arg(1) {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            {
                Some(v @ (2 | 3)) => version = v,
                Some(_) => {
                    self.fail(Error::UnsupportedProtocol);
                    return;
                }
                None => {
                    self.fail(Error::BadProtocolVersion);
                    return;
                }
            }
            i = 2;
        }
        let mut setname = None;
        while i < cmd.len() {
            let opt = cmd.arg(i).unwrap_or_default().to_ascii_uppercase();
            if opt == b"AUTH" && i + 2 < cmd.len() {
                let r = self.authenticate(cmd.arg(i + 1), cmd.arg(i + 2).unwrap_or_default());
                if r.first() == Some(&b'-') {
                    self.local(&r);
                    return;
                }
                i += 3;
            } else if opt == b"SETNAME" && i + 1 < cmd.len() {
                setname = cmd
                    .arg(i + 1)
                    .map(|n| String::from_utf8_lossy(n).into_owned());
                i += 2;
            } else {
                self.fail(Error::HelloSyntax(
                    String::from_utf8_lossy(&opt).into_owned(),
                ));
                return;
            }
        }
        if !self.authed {
            self.fail(Error::HelloNoAuth);
            return;
        }
        self.resp3 = version == 3;
        self.client.q.borrow_mut().version = if self.resp3 {
            RespVersion::Resp3
        } else {
            RespVersion::Resp2
        };
        if let Some(e) = self.core.clients.borrow_mut().get_mut(&self.id) {
            e.resp = version as u8;
            if let Some(n) = setname {
                e.name = n;
            }
        }
        let v = if self.resp3 {
            RespVersion::Resp3
        } else {
            RespVersion::Resp2
        };
        let mut out = BytesMut::new();
        codec::resp::write_map_header(&mut out, 7, v);
        let pairs: [(&str, Frame); 7] = [
            ("server", Frame::bulk("redis")),
            ("version", Frame::bulk("7.0.15")),
            ("proto", Frame::Integer(i64::from(version))),
            ("id", Frame::Integer(self.id as i64)),
            ("mode", Frame::bulk("standalone")),
            ("role", Frame::bulk("master")),
            ("modules", Frame::Array(Vec::new())),
        ];
        for (k, val) in pairs {
            Frame::bulk(k).encode(&mut out);
            val.encode(&mut out);
        }
        self.local(&out);
    }

    fn reset_state(&mut self) {
        self.db = 0;
        self.resp3 = false;
        self.client.q.borrow_mut().version = RespVersion::Resp2;
        self.multi = None;
        if let Some((_, c)) = self.watch.take() {
            c.retire();
        }
        if let Some(ps) = self.pubsub.take() {
            for c in ps.conns.values() {
                c.retire();
            }
        }
        self.authed = self.core.users.borrow().is_empty();
        self.user = None;
        if let Some(e) = self.core.clients.borrow_mut().get_mut(&self.id) {
            e.db = 0;
            e.resp = 2;
            e.name.clear();
        }
    }

    /// Holds this command and the next ones until every earlier reply arrived.
    fn needs_barrier(&mut self, cmd: &Command) -> bool {
        if self.client.q.borrow().pending() > 0 {
            self.deferred.push_front(cmd.clone());
            self.barrier = true;
            return true;
        }
        false
    }

    fn blocking_command(&mut self, cmd: &Command, info: &'static CommandInfo, pool: &Pool) {
        if self.needs_barrier(cmd) {
            return;
        }
        let Some(shard) = self.same_shard(cmd, info, pool) else {
            return;
        };
        if let Some(why) = pool
            .servers
            .get(shard)
            .and_then(|s| s.refusal().map(|w| s.unavailable(w)))
        {
            let why = why.reply();
            self.core.metrics.proxy_error(info.name, why.len());
            self.client.q.borrow_mut().push_local(&why);
            return;
        }
        // Clients blocked on one server are served in the order they arrived: wait until the
        // previous blocking command to this server is blocked there (or answered).
        let Some(server) = pool.server(shard) else {
            self.fail(Error::NoServer);
            return;
        };
        let gate = self.core.shared.blocking.gate(&server.address);
        let me = self.key();
        if !gate.try_acquire(me, &self.gate_notify) {
            self.deferred.push_front(cmd.clone());
            self.barrier = true;
            self.gate_wait = Some(gate);
            return;
        }
        self.gate_wait = None;
        let (conn, server_id) = match self.blocking.get(&shard) {
            Some((c, id)) if !c.is_broken() => (c.clone(), id.clone()),
            _ => {
                let Some(c) = pool.dedicated(shard, self.db, self.resp3, Mode::Pipeline, false)
                else {
                    gate.release(me);
                    self.fail(Error::NoServer);
                    return;
                };
                let id = Arc::new(AtomicI64::new(-1));
                // The connection's id on the server: CLIENT UNBLOCK and the order check use it.
                let ask = Command::from_args([&b"CLIENT"[..], b"ID"]);
                if c.send(ask.raw(), [Dest::Id(id.clone())], self.now, "client|id")
                    .is_ok()
                {
                    self.core.shared.blocking.register(
                        self.owner(),
                        self.id,
                        Blocker {
                            shard,
                            address: c.server.address.clone(),
                            server_id: id.clone(),
                        },
                    );
                }
                if let Some((old, _)) = self.blocking.insert(shard, (c.clone(), id.clone())) {
                    old.retire();
                }
                (c, id)
            }
        };
        let seq = self.client.q.borrow_mut().push_pending();
        if let Err(e) = conn.send(
            cmd.raw(),
            [Dest::Whole(self.client.clone(), seq)],
            self.now,
            info.name,
        ) {
            self.fail_seq(seq, &e, info.name);
            gate.release(me);
        } else {
            let probe = pool.conn(shard, 0, false, self.id);
            tokio::task::spawn_local(blocking::confirm_blocked(gate, me, conn, probe, server_id));
        }
        // Later commands wait for this reply, as they would on one Redis connection.
        self.barrier = true;
    }

    /// CLIENT UNBLOCK: sent to the servers where the named client has a blocking connection,
    /// under that connection's id there.
    fn client_unblock(&mut self, cmd: &Command, pool: &Pool) {
        let Some(id) = std::str::from_utf8(cmd.arg(2).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            self.fail(Error::NotAnInteger);
            return;
        };
        let how = cmd.arg(3);
        if cmd.len() > 4
            || how.is_some_and(|h| {
                !h.eq_ignore_ascii_case(b"timeout") && !h.eq_ignore_ascii_case(b"error")
            })
        {
            self.fail(Error::BadUnblockReason);
            return;
        }
        let targets: Vec<(usize, i64)> = self
            .core
            .shared
            .blocking
            .lookup(self.owner(), id)
            .into_iter()
            .filter(|b| pool.server(b.shard).is_some_and(|s| s.address == b.address))
            .map(|b| {
                (
                    b.shard,
                    b.server_id.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .filter(|(_, sid)| *sid >= 0)
            .collect();
        if targets.is_empty() {
            self.local(b":0\r\n");
            return;
        }
        let seq = self
            .client
            .q
            .borrow_mut()
            .push_merge(MergeKind::Sum, targets.len());
        for (part, (shard, sid)) in targets.into_iter().enumerate() {
            let mut args: Vec<Vec<u8>> = vec![
                b"CLIENT".to_vec(),
                b"UNBLOCK".to_vec(),
                sid.to_string().into_bytes(),
            ];
            if let Some(h) = how {
                args.push(h.to_vec());
            }
            let sub = Command::from_args(args);
            self.send_part(pool, shard, sub.raw(), seq, part as u32, "client|unblock");
        }
    }

    /// Answers command `seq` with an error the proxy made (counted as an error reply of `name`).
    fn fail_seq(&mut self, seq: u64, e: &Error, name: &'static str) {
        let e = e.reply();
        self.core.metrics.proxy_error(name, e.len());
        self.client.q.borrow_mut().deliver(seq, &e);
    }

    fn queue_in_multi(&mut self, cmd: Command, info: &'static CommandInfo, pool: &Pool) {
        if info.flags.has(flags::NO_MULTI) {
            self.refuse(Error::NotInTransaction);
            return;
        }
        // Keyless commands that mean the same on any shard run on the transaction's shard, as
        // Redis queues them (PING, ECHO, UNWATCH: the watch itself is already checked at EXEC).
        let allowed = matches!(
            info.policy,
            Policy::SingleKey
                | Policy::SameShard
                | Policy::MultiKey { .. }
                | Policy::AnyShard
                | Policy::Blocking
        ) || (info.policy == Policy::PubSub
            && matches!(info.name, "publish" | "spublish"))
            || matches!(info.name, "ping" | "echo" | "unwatch");
        if !allowed {
            self.refuse(match info.policy {
                Policy::Unsupported { reason } => Error::Unsupported {
                    name: String::from_utf8_lossy(cmd.name()).into_owned(),
                    reason,
                },
                _ => Error::NotThroughProxyInMulti(info.name),
            });
            return;
        }
        let Some(m) = self.multi.as_mut() else { return };
        let publish = matches!(info.name, "publish" | "spublish");
        let keys: Vec<usize> = if publish {
            vec![1]
        } else {
            match router::redis::keys(info, cmd.len(), |i| cmd.arg(i).unwrap_or_default()) {
                Ok(k) => k.collect(),
                Err(e) => {
                    m.aborted = true;
                    self.fail(Error::KeyArguments(e));
                    return;
                }
            }
        };
        // Key permissions hold inside MULTI too (a channel is not a key).
        for &i in keys.iter().filter(|_| !publish) {
            if let Some(u) = &self.user
                && !acl::key_allowed(u, cmd.arg(i).unwrap_or_default())
            {
                m.aborted = true;
                self.fail(Error::KeyDenied);
                return;
            }
        }
        for i in keys {
            let s = pool.shard(cmd.arg(i).unwrap_or_default());
            if m.shard.is_some_and(|x| x != s) {
                m.aborted = true;
                self.fail(Error::CrossSlot);
                return;
            }
            m.shard = Some(s);
        }
        m.queued.push(cmd);
        self.local(b"+QUEUED\r\n");
    }

    fn transaction(&mut self, cmd: &Command, info: &'static CommandInfo, pool: &Pool) {
        match info.name {
            "multi" => {
                if self.multi.is_some() {
                    self.fail(Error::NestedMulti);
                    return;
                }
                self.multi = Some(Box::new(Multi {
                    queued: Vec::new(),
                    shard: self.watch.as_ref().map(|w| w.0),
                    aborted: false,
                }));
                self.local(b"+OK\r\n");
            }
            "discard" => {
                if self.multi.take().is_none() {
                    self.fail(Error::DiscardWithoutMulti);
                    return;
                }
                if let Some((_, c)) = self.watch.take() {
                    c.retire();
                }
                self.local(b"+OK\r\n");
            }
            "watch" => {
                if self.multi.is_some() {
                    self.fail(Error::WatchInMulti);
                    return;
                }
                if self.needs_barrier(cmd) {
                    return;
                }
                let Some(shard) = self.same_shard(cmd, info, pool) else {
                    return;
                };
                let conn = match &self.watch {
                    Some((s, _)) if *s != shard => {
                        self.fail(Error::CrossSlot);
                        return;
                    }
                    Some((_, c)) => c.clone(),
                    None => {
                        let Some(c) =
                            pool.dedicated(shard, self.db, self.resp3, Mode::Pipeline, true)
                        else {
                            self.fail(Error::NoServer);
                            return;
                        };
                        self.watch = Some((shard, c.clone()));
                        c
                    }
                };
                let seq = self.client.q.borrow_mut().push_pending();
                if let Err(e) = conn.send(
                    cmd.raw(),
                    [Dest::Whole(self.client.clone(), seq)],
                    self.now,
                    info.name,
                ) {
                    self.fail_seq(seq, &e, info.name);
                }
            }
            "unwatch" => {
                if let Some((_, c)) = self.watch.take() {
                    c.retire();
                }
                self.local(b"+OK\r\n");
            }
            "exec" => {
                let Some(m) = self.multi.take() else {
                    self.fail(Error::ExecWithoutMulti);
                    return;
                };
                let watch = self.watch.take();
                if m.aborted {
                    if let Some((_, c)) = watch {
                        c.retire();
                    }
                    self.fail(Error::ExecAbort);
                    return;
                }
                let shard = m.shard.unwrap_or(0);
                let mut block = BytesMut::new();
                block.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
                for c in &m.queued {
                    block.extend_from_slice(c.raw());
                }
                block.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
                let block = block.freeze();
                let seq = self.client.q.borrow_mut().push_pending();
                let mut dests: Vec<Dest> = (0..=m.queued.len()).map(|_| Dest::Discard).collect();
                dests.push(Dest::Whole(self.client.clone(), seq));
                let res = match &watch {
                    Some((_, c)) => c.send(&block, dests, self.now, info.name),
                    None => match pool.conn(shard, self.db, self.resp3, self.id) {
                        Some(c) => c.send(&block, dests, self.now, info.name),
                        None => Err(Error::NoServer),
                    },
                };
                if let Err(e) = res {
                    self.fail_seq(seq, &e, info.name);
                }
                if let Some((_, c)) = watch {
                    c.retire();
                }
            }
            _ => self.fail(unknown_command(cmd)),
        }
    }

    fn pubsub_command(&mut self, cmd: &Command, info: &'static CommandInfo, pool: &Pool) {
        match info.name {
            "publish" | "spublish" => {
                let channel = cmd.arg(1).unwrap_or_default();
                let shard = pool.shard(channel);
                self.send_one(pool, shard, cmd.raw(), info.name);
            }
            "pubsub|channels" | "pubsub|shardchannels" => {
                let targets = pool.targets();
                let seq = self
                    .client
                    .q
                    .borrow_mut()
                    .push_merge(MergeKind::Concat, targets.len());
                for (part, &s) in targets.iter().enumerate() {
                    self.send_part(pool, s, cmd.raw(), seq, part as u32, info.name);
                }
            }
            "pubsub|numpat" => self.send_one(pool, 0, cmd.raw(), info.name),
            "pubsub|numsub" | "pubsub|shardnumsub" => {
                let n = cmd.len();
                if n <= 2 {
                    self.local(b"*0\r\n");
                    return;
                }
                let first = pool.shard(cmd.arg(2).unwrap_or_default());
                if (3..n).any(|i| pool.shard(cmd.arg(i).unwrap_or_default()) != first) {
                    self.fail(Error::CrossSlot);
                    return;
                }
                self.send_one(pool, first, cmd.raw(), info.name);
            }
            "subscribe" | "ssubscribe" | "psubscribe" | "unsubscribe" | "sunsubscribe"
            | "punsubscribe" => {
                if self.needs_barrier(cmd) {
                    return;
                }
                self.subscribe(cmd, info.name, pool);
            }
            _ => self.fail(unknown_command(cmd)),
        }
    }

    fn subscribe(&mut self, cmd: &Command, name: &'static str, pool: &Pool) {
        let args: Vec<Bytes> = (1..cmd.len()).filter_map(|i| cmd.arg_bytes(i)).collect();
        let unsub = name.contains("unsub");
        if unsub && self.pubsub.is_none() {
            // Not subscribed: Redis answers one confirmation per channel named (count 0), or one
            // with a null channel when none is named.
            let kind = name.as_bytes();
            let mut out = Vec::new();
            if args.is_empty() {
                out = confirm(kind, None, 0, self.resp3);
            }
            for a in &args {
                out.extend(confirm(kind, Some(a), 0, self.resp3));
            }
            self.local(&out);
            return;
        }
        if self.pubsub.is_none() {
            self.pubsub = Some(Box::new(PubSub {
                sink: Rc::new(PushSink {
                    frames: RefCell::default(),
                    failed: RefCell::default(),
                    wake: self.client.wake.clone(),
                }),
                conns: HashMap::new(),
                channels: BTreeSet::new(),
                patterns: BTreeSet::new(),
                shard_channels: BTreeSet::new(),
                awaiting: None,
            }));
        }
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        let targets: Vec<Bytes> = if unsub && args.is_empty() {
            match name {
                "unsubscribe" => ps.channels.iter().cloned().collect(),
                "punsubscribe" => ps.patterns.iter().cloned().collect(),
                _ => ps.shard_channels.iter().cloned().collect(),
            }
        } else {
            args
        };
        if targets.is_empty() {
            let n = ps.count();
            let c = confirm(name.as_bytes(), None, n, self.resp3);
            self.local(&c);
            self.leave_pubsub_if_empty();
            return;
        }
        // Per shard: patterns go everywhere; channels to their key's shard.
        let mut per: BTreeMap<usize, Vec<Bytes>> = BTreeMap::new();
        let pattern = name.starts_with('p');
        for t in &targets {
            if pattern {
                for s in pool.targets() {
                    per.entry(s).or_default().push(t.clone());
                }
            } else {
                per.entry(pool.shard(t)).or_default().push(t.clone());
            }
        }
        let verb = name.to_ascii_uppercase();
        let mut failed = Vec::new();
        let mut expected = 0usize;
        for (shard, chans) in per {
            let conn = match ps.conns.get(&shard) {
                Some(c) if !c.is_broken() => c.clone(),
                // Nothing to unsubscribe from on a shard without a subscriber connection.
                _ if unsub => continue,
                _ => match pool.dedicated(
                    shard,
                    self.db,
                    self.resp3,
                    Mode::Push(ps.sink.clone()),
                    false,
                ) {
                    Some(c) => {
                        ps.conns.insert(shard, c.clone());
                        c
                    }
                    None => continue,
                },
            };
            let mut a: Vec<&[u8]> = vec![verb.as_bytes()];
            a.extend(chans.iter().map(|c| &c[..]));
            match conn.send(Command::from_args(a).raw(), [], self.now, "subscribe") {
                // The backend confirms each channel (or pattern) once.
                Ok(()) => expected += chans.len(),
                Err(e) => failed.push(e),
            }
        }
        // The session answers the confirmations itself (counts are per session, not per shard).
        let mut out = Vec::new();
        for t in &targets {
            let set = match name {
                "subscribe" | "unsubscribe" => &mut ps.channels,
                "psubscribe" | "punsubscribe" => &mut ps.patterns,
                _ => &mut ps.shard_channels,
            };
            if unsub {
                set.remove(t);
            } else {
                set.insert(t.clone());
            }
            let n = if name.starts_with("ss") || name.starts_with("sun") {
                ps.shard_channels.len()
            } else {
                ps.count()
            };
            out.extend(confirm(name.as_bytes(), Some(t), n, self.resp3));
        }
        if let Some(e) = failed.into_iter().next() {
            // As in Redis, a subscription either is confirmed or the command fails.
            if !unsub {
                let set = match name {
                    "subscribe" => &mut ps.channels,
                    "psubscribe" => &mut ps.patterns,
                    _ => &mut ps.shard_channels,
                };
                for t in &targets {
                    set.remove(t);
                }
            }
            self.fail(e);
            self.leave_pubsub_if_empty();
            return;
        }
        if expected == 0 {
            self.local(&out);
            self.leave_pubsub_if_empty();
            return;
        }
        let seq = self.client.q.borrow_mut().push_pending();
        if let Some(ps) = self.pubsub.as_mut() {
            ps.awaiting = Some((seq, expected, out));
        }
    }

    fn leave_pubsub_if_empty(&mut self) {
        if let Some(ps) = &self.pubsub
            && ps.count() == 0
            && ps.shard_channels.is_empty()
        {
            for c in ps.conns.values() {
                c.retire();
            }
            self.pubsub = None;
        }
    }

    /// Forwards messages from the subscriber connections; drops their own confirmations (the
    /// session already answered them).
    fn pump_pubsub(&mut self) {
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        let frames: Vec<(usize, Bytes)> = ps.sink.frames.borrow_mut().drain(..).collect();
        let failed = ps.sink.failed.borrow_mut().take();
        let mut out = BytesMut::new();
        let mut confirmed = None;
        for (_, f) in frames {
            let mut b = BytesMut::from(&f[..]);
            let parsed = FrameDecoder::new(Limits::default()).decode(&mut b);
            let kind = match &parsed {
                Ok(Some(Frame::Array(items) | Frame::Push(items))) => items
                    .first()
                    .and_then(Frame::as_bytes)
                    .map(|k| k.to_ascii_lowercase()),
                _ => None,
            };
            match kind.as_deref() {
                Some(b"message" | b"pmessage" | b"smessage") => out.extend_from_slice(&f),
                Some(b"pong") => {}
                Some(k) if k.ends_with(b"subscribe") => {
                    // A backend confirmed one channel: the session's confirmations leave once
                    // every backend confirmed (messages that arrive first wait behind them).
                    if let Some((seq, left, reply)) = ps.awaiting.as_mut() {
                        *left = left.saturating_sub(1);
                        if *left == 0 {
                            confirmed = Some((*seq, std::mem::take(reply)));
                            ps.awaiting = None;
                        }
                    }
                }
                _ => out.extend_from_slice(&f),
            }
        }
        if let Some((seq, reply)) = confirmed {
            self.client.q.borrow_mut().deliver(seq, &reply);
            self.leave_pubsub_if_empty();
        }
        if !out.is_empty() {
            self.client.q.borrow_mut().push_local(&out);
        }
        if let Some(e) = failed {
            // A subscriber connection broke: tell the client and drop the subscriptions there.
            if let Some((seq, _, _)) = self.pubsub.as_mut().and_then(|p| p.awaiting.take()) {
                self.client.q.borrow_mut().deliver(seq, &e);
            }
            self.client.q.borrow_mut().push_local(&e);
            if let Some(ps) = self.pubsub.take() {
                for c in ps.conns.values() {
                    c.retire();
                }
            }
            self.protocol_error = true;
        }
    }
}

/// A (un)subscribe confirmation: `[kind, channel|null, count]`.
fn confirm(kind: &[u8], channel: Option<&Bytes>, count: usize, resp3: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    let items = vec![
        Frame::bulk(kind),
        match channel {
            Some(c) => Frame::Bulk(c.clone()),
            None if resp3 => Frame::Null,
            None => Frame::NullBulk,
        },
        Frame::Integer(count as i64),
    ];
    if resp3 {
        Frame::Push(items)
    } else {
        Frame::Array(items)
    }
    .encode(&mut out);
    out.to_vec()
}

fn client_line(e: &ClientEntry) -> String {
    format!(
        "id={} addr={} laddr={} fd=-1 name={} age={} idle=0 flags=N db={} sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|list user={} redir=-1 resp={}\n",
        e.id,
        e.addr,
        e.laddr.map(|a| a.to_string()).unwrap_or_default(),
        e.name,
        e.since.elapsed().as_secs(),
        e.db,
        e.user,
        e.resp
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::resp::RespError;

    fn decode(limits: Limits, bytes: &[u8]) -> Result<Option<Command>, RespError> {
        let mut buf = BytesMut::from(bytes);
        CommandDecoder::new(limits).decode(&mut buf)
    }

    fn echo(len: usize) -> Vec<u8> {
        let mut b = format!("*2\r\n$4\r\nECHO\r\n${len}\r\n").into_bytes();
        b.extend(std::iter::repeat_n(b'x', len));
        b.extend_from_slice(b"\r\n");
        b
    }

    #[test]
    fn pre_auth_caps_are_redis_caps() {
        let pre = decoder_limits(512 * 1024 * 1024, false);
        let full = decoder_limits(512 * 1024 * 1024, true);
        assert!(matches!(decode(pre, &echo(16384)), Ok(Some(_))));
        let e = decode(pre, &echo(16385)).expect_err("over the pre-auth cap");
        assert_eq!(
            Error::protocol(e.clone(), true).reply(),
            b"-ERR Protocol error: unauthenticated bulk length\r\n"
        );
        assert!(matches!(decode(full, &echo(16385)), Ok(Some(_))));
        let e = decode(pre, b"*11\r\n").expect_err("too many arguments");
        assert_eq!(
            Error::protocol(e.clone(), true).reply(),
            b"-ERR Protocol error: unauthenticated multibulk length\r\n"
        );
        assert!(matches!(decode(full, b"*11\r\n"), Ok(None)));
        // After AUTH, the listener's max_frame applies, with Redis's message.
        let small = decoder_limits(1024, true);
        let e = decode(small, &echo(2000)).expect_err("over max_frame");
        assert_eq!(
            Error::protocol(e.clone(), false).reply(),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        // The pre-auth cap never exceeds a smaller max_frame.
        assert_eq!(decoder_limits(1024, false).max_bulk_len, 1024);
        assert_eq!(full.max_bulk_len, 512 * 1024 * 1024);
    }
}
