//! One client session: handshake and authentication, the command loop, session-state tracking,
//! read/write routing (the policy is [`crate::rwsplit`]'s; the session gathers its inputs and acts
//! on its decision), prepared statements and backend connection pinning.
//!
//! State model: a session's reproducible state is its schema and an ordered list of replayable
//! `SET` statements ([`VarState`], in [`crate::vars`], which also carries the client's charset). A
//! backend connection remembers which state it is in; on checkout the proxy replays what is
//! missing, or resets the connection (`COM_RESET_CONNECTION`) first when it carries another
//! session's settings. State that cannot be replayed (transactions, temporary tables, named and
//! table locks, user variables, SQL-level prepared statements, cursors) pins the session to its
//! primary connection, which is reset before it goes back to the pool.
//!
//! One file per phase, each an `impl Session` block over the types here:
//! - `handshake.rs`: greeting, TLS upgrade, authentication and auth switch, COM_CHANGE_USER;
//! - `dispatch.rs`: the command byte → handler, commands answered without a backend, the checks
//!   before a COM_QUERY runs, the session reset (plain and sharded state alike);
//! - `choose.rs`: where a statement runs ([`crate::rwsplit`]'s decision) and the backend connection
//!   checked out, synced and given back;
//! - `execute.rs`: one statement's attempts (read retries on replicas read
//!   [`ProxyError::retryable`]), forwarding, the state it leaves, GTID tracking, and `account`:
//!   statistics, slow log and audit for every statement that ran;
//! - `prepared.rs`: COM_STMT_*.
//!
//! The children import this module, never one another and never the other way round (see
//! `tests/import_circles.rs`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::mysql::ErrPacket;
use codec::mysql::consts::capability::*;
use codec::mysql::consts::status;
use router::config::{MysqlGroup, ReadPolicy};
use router::sql::Classified;
use runtime::{ListenerStats, LocalSnapshot, Shared};

use crate::backend::BackendConn;
use crate::conn::{Conn, ConnError};
use crate::error::{ProxyError, errs};
use crate::pool::{self, Target};
use crate::route::GroupTargets;
use crate::rwsplit;
use crate::vars::VarState;

mod choose;
mod dispatch;
mod execute;
mod handshake;
mod prepared;

/// This core's statement-cache hits and misses.
pub fn local_stmt_cache_stats(core: &crate::core::CoreCtx) -> (u64, u64) {
    core.stmts.borrow().stats()
}

/// Capabilities the proxy offers clients (codec's `PROXY_SERVER`).
pub const SERVER_CAPS: u32 = PROXY_SERVER;

/// Version string shown to clients, in the form MariaDB 10.x servers use: the `5.5.5-` prefix for
/// clients that read the first number as MySQL's major version, `MariaDB` for clients that only
/// then read the MariaDB extended capabilities (libmariadb: without it, cached result metadata is
/// never asked for; see docs/mysql-proxy.md).
pub const SERVER_VERSION: &str = "5.5.5-10.11.99-MariaDB-furrow";

/// How many times a read that failed before any byte reached the client is retried elsewhere.
const MAX_READ_RETRIES: u32 = 3;

/// A statement the client prepared.
struct ClientStmt {
    sql: crate::backend::StmtText,
    digest: Rc<router::sql::Digest>,
    class: Classified,
    params: u16,
    /// Parameter types from the last execution that sent them (2 bytes each).
    types: Option<Bytes>,
    /// Pending COM_STMT_SEND_LONG_DATA payloads (sent before the next execution).
    long_data: Vec<Bytes>,
    /// With cached metadata (`Conn::cache_meta`): the column definitions the client holds for
    /// the statement (from its prepare's reply, or the last execution that carried them).
    defs: Option<Rc<[u8]>>,
}

/// Where a statement goes.
enum Dest {
    Pinned,
    Server(Target, bool),
}

/// Per-listener facts a session needs.
pub struct ListenerInfo {
    /// Listener name.
    pub name: String,
    /// Backend group name.
    pub group: String,
    /// Largest client packet.
    pub max_frame: usize,
    /// Bytes all clients of the listener may hold in packets being received.
    pub budget: Arc<crate::conn::ClientBudget>,
    /// Idle timeout for clients.
    pub idle_timeout: Option<Duration>,
    /// This executor's pools and caches.
    pub core: Rc<crate::core::CoreCtx>,
    /// Set when the listener drains (shutdown, upgrade hand-over): sessions outside a transaction
    /// say goodbye (ERR 1053) at their next idle point and close.
    pub draining: std::cell::Cell<bool>,
    /// Wakes the sessions waiting for a request when draining starts. Per core and per listener:
    /// polled only when a session has nothing buffered to read, so a busy session never touches it.
    pub drain: tokio::sync::Notify,
}

/// A client session.
pub struct Session {
    id: u64,
    client: Conn,
    peer: SocketAddr,
    info: Rc<ListenerInfo>,
    snap: LocalSnapshot,
    shared: Shared,
    stats: Arc<ListenerStats>,
    user: String,
    /// The span attributes of this connection, made by its first traced statement (see
    /// `crate::trace::ConnBlob`; remade if the user changes).
    trace_conn: crate::trace::ConnBlob,
    read_policy: ReadPolicy,
    /// Whether the user's `/* furrow:... */` hints are followed (`allow_hints`).
    allow_hints: bool,
    caps: u32,
    scramble: [u8; 20],
    schema: Option<Rc<str>>,
    vars: Option<Rc<VarState>>,
    autocommit: bool,
    pinned: Option<Box<BackendConn>>,
    /// The `furrow_lock` locks the session holds (one primary connection each; see `crate::lock`).
    locks: crate::lock::HeldLocks,
    sticky: bool,
    in_txn: bool,
    last_write: Option<Instant>,
    /// The clock as read once at the start of the command being served (`dispatch`) and again
    /// at the end of a statement that ran: what everything inside the command that needs the
    /// time uses (the statement's start, the pool's staleness test, the statement deadline, the
    /// connection's check-in time) instead of reading it again. A read costs 40-60 ns on a VM;
    /// a proxied prepared point select used to read it eight times.
    now: Instant,
    last_insert_id: u64,
    /// GTID of the session's last write (read-your-writes by GTID).
    last_gtid: Option<crate::gtid::Gtids>,
    /// The client's prepared statements by the ids given to it (foldhash: one lookup per execution).
    stmts: router::FastMap<u32, ClientStmt>,
    next_stmt: u32,
    multi_statements: bool,
    targets: Option<(u64, Rc<GroupTargets>)>,
    /// Where the session's group sits in the config of a generation: [`Session::group`] finds it
    /// by name once per generation, not per statement.
    group_at: std::cell::Cell<(u64, usize)>,
    rng: u64,
    /// Reused buffer of the replicas' states for [`rwsplit::choose`].
    servers: Vec<rwsplit::Server>,
    shard: crate::shard::ShardSession,
    /// The listener's sharding rules (`None`: not sharded) for the config generation they were
    /// looked up in: one lookup per generation, not per command.
    shard_rules: Option<(u64, Option<crate::shard::RulesFor>)>,
    /// Statement timeouts (`query_timeout_ms`, `read_timeout_ms`) without a timer per statement.
    timer: crate::deadline::StatementTimer,
}

fn random_u64(seed: &mut u64) -> u64 {
    // xorshift64*
    let mut x = *seed;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *seed = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Largest packet a client may send before it has logged in. A handshake response is a few
/// hundred bytes (a few KiB with many connection attributes); anything larger is refused before it
/// is buffered, so that an unauthenticated peer cannot make the proxy hold `max_frame` bytes.
pub const PRE_AUTH_MAX_PAYLOAD: usize = 16 * 1024;

/// A client idle this long gives back the buffers a large packet or result grew (see
/// [`Conn::shrink_idle`]).
const SHRINK_AFTER: Duration = Duration::from_secs(1);

/// How long a refused client's input is still read (and dropped) before the socket closes, so
/// that its unread bytes do not turn the close into a reset that could discard the ERR.
const LINGER: Duration = Duration::from_secs(2);

/// The plugin named in our initial handshake (its scramble is what the client's first answer
/// uses).
const ANNOUNCED_PLUGIN: &str = "mysql_native_password";

enum Flow {
    Continue,
    Close,
}

/// What a step of running a statement leads to.
enum Next<T> {
    /// Go on with this.
    Go(T),
    /// Try the statement again (on another server).
    Retry,
    /// The statement is over (its ERR is queued): return this.
    Stop(Flow),
}

/// One attempt at a statement: the connection it runs on and what a failure may do.
struct Leg {
    conn: Box<BackendConn>,
    /// A read on a replica, with attempts left: a failure before anything reached the client
    /// runs it again elsewhere.
    retry_ok: bool,
    /// The server's health state (none for the session's pinned connection).
    state: Option<Arc<runtime::BackendState>>,
    /// The server's name, avoided by a retry.
    name: Option<Rc<str>>,
    /// The session's pinned connection (its state is lost with it).
    was_pinned: bool,
}

/// Where and how long a statement ran, for the statistics, slow log and audit log.
struct Ran {
    server: Rc<str>,
    took: Duration,
}

impl Session {
    /// Creates the session for an accepted socket.
    pub fn new(
        id: u64,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        info: Rc<ListenerInfo>,
        shared: Shared,
        stats: Arc<ListenerStats>,
    ) -> Self {
        let rng = crate::nonce::seed();
        Session {
            id,
            // Until login: small packets only (see `PRE_AUTH_MAX_PAYLOAD`).
            client: Conn::new(stream, PRE_AUTH_MAX_PAYLOAD.min(info.max_frame))
                .with_budget(info.budget.clone()),
            peer,
            snap: LocalSnapshot::new(&shared.snapshots),
            info,
            shared,
            stats,
            user: String::new(),
            trace_conn: crate::trace::ConnBlob::default(),
            read_policy: ReadPolicy::Split,
            allow_hints: true,
            caps: 0,
            // Drawn from the OS CSPRNG when the handshake starts.
            scramble: [0; 20],
            schema: None,
            vars: None,
            autocommit: true,
            pinned: None,
            locks: Default::default(),
            sticky: false,
            in_txn: false,
            last_write: None,
            now: Instant::now(),
            last_insert_id: 0,
            last_gtid: None,
            stmts: Default::default(),
            next_stmt: 1,
            multi_statements: false,
            targets: None,
            group_at: std::cell::Cell::new((u64::MAX, 0)),
            rng,
            servers: Vec::new(),
            shard: Default::default(),
            shard_rules: None,
            timer: Default::default(),
        }
    }

    /// The next client packet, or `None` at idle timeout or when a drain closes the session.
    /// `may_drain`: a drain may close the session while it waits (not before its first command: a
    /// client that just connected is about to send one, and closing it then would fail that
    /// request). `drained` is the session's one registration for the listener's drain signal,
    /// made once in [`Session::run`]: registering per request (a fresh `Notify::notified`) cost
    /// ~470 instructions per point select (`bench --callgrind`); polling the registered one costs
    /// a lock, and only when the client has not sent its next request yet (`biased`).
    async fn next_packet(
        &mut self,
        may_drain: bool,
        drained: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Option<Result<codec::mysql::Packet, ConnError>> {
        if self.in_txn || !may_drain {
            return self.next_packet_or_idle().await;
        }
        if !self.info.draining.get() {
            tokio::select! {
                biased;
                r = self.next_packet_or_idle() => return r,
                () = drained => {}
            }
        }
        if !self.client.rbuf.is_empty() {
            // Part of a request is here: read and serve it; the next wait closes.
            return self.next_packet_or_idle().await;
        }
        self.client
            .queue_err(0, &crate::error::errs::server_shutdown());
        let _ = self.client.flush().await;
        None
    }

    /// The client's next packet; `None` when the listener's `idle_timeout` passed first. A
    /// client whose buffers grew large gives them back after [`SHRINK_AFTER`] without a packet
    /// (the timer is armed only then: clients with small buffers wait on the socket alone).
    /// `read_packet` is cancel-safe: bytes read stay in the buffer.
    async fn next_packet_or_idle(&mut self) -> Option<Result<codec::mysql::Packet, ConnError>> {
        let large = self.client.holds_large_buffers();
        if self.info.idle_timeout.is_none() && !large {
            // No timer to arm: no clock read (a command's costs one, see `Session::now`).
            return Some(self.client.read_packet().await);
        }
        let now = tokio::time::Instant::now();
        let deadline = self.info.idle_timeout.map(|t| now + t);
        if large {
            let shrink_at = now + SHRINK_AFTER;
            if deadline.is_none_or(|d| shrink_at < d) {
                match tokio::time::timeout_at(shrink_at, self.client.read_packet()).await {
                    Ok(r) => return Some(r),
                    Err(_) => self.client.shrink_idle(),
                }
            }
        }
        match deadline {
            Some(d) => tokio::time::timeout_at(d, self.client.read_packet())
                .await
                .ok(),
            None => Some(self.client.read_packet().await),
        }
    }

    /// Runs the session to its end. A plain `fn` returning an `async move` block: an `async fn`
    /// keeps a second copy of its arguments in its future (rust-lang/rust#62958), here the whole
    /// `Session`, and this future is what every idle client holds (issue #23; its size is bounded
    /// by `tests::idle_session_task_stays_small` in the crate root).
    #[allow(clippy::manual_async_fn)] // the `async fn` form is what costs the second copy
    pub fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move { self.serve().await }
    }

    async fn serve(&mut self) {
        match self.handshake().await {
            Ok(true) => {}
            Ok(false) => {
                if self.client.flush().await.is_ok() {
                    self.linger().await;
                }
                self.finish();
                return;
            }
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "handshake failed");
                self.finish();
                return;
            }
        }
        let mut first = true;
        // Registered once for the whole session (see `next_packet`); `notify_waiters` at a drain
        // completes it.
        let info = self.info.clone();
        let drained = info.drain.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        loop {
            let Some(packet) = self.next_packet(!first, drained.as_mut()).await else {
                break;
            };
            first = false;
            let packet = match packet {
                Ok(p) => p,
                Err(ConnError::Protocol(e)) => {
                    let err = ProxyError::ClientProtocol(e).to_err_packet();
                    self.client.queue_err(1, &err);
                    self.client.release_read_buffer();
                    if self.client.flush().await.is_ok() {
                        self.linger().await;
                    }
                    break;
                }
                Err(ConnError::BudgetExhausted { limit }) => {
                    // The packet stays unread: answer in its sequence, drop what was buffered
                    // of it, and close.
                    let seq = self.client.rbuf.get(3).map_or(1, |s| s.wrapping_add(1));
                    self.client.queue_err(seq, &errs::out_of_memory(limit));
                    self.client.release_read_buffer();
                    if self.client.flush().await.is_ok() {
                        self.linger().await;
                    }
                    break;
                }
                Err(ConnError::Io(_)) => break,
            };
            ListenerStats::add(&self.stats.requests, 1);
            ListenerStats::add(&self.stats.bytes_in, packet.payload.len() as u64 + 4);
            if packet.seq != 0 {
                let err = errs::malformed("bad sequence id");
                self.client.queue_err(packet.seq.wrapping_add(1), &err);
                let _ = self.client.flush().await;
                break;
            }
            let before = self.client.wbuf.len();
            let flow = self.dispatch(packet.payload).await;
            let out = self.client.wbuf.len().saturating_sub(before);
            ListenerStats::add(&self.stats.bytes_out, out as u64);
            if self.client.flush().await.is_err() {
                break;
            }
            if matches!(flow, Flow::Close) {
                break;
            }
        }
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(c) = self.pinned.take() {
            // Not reset here: a pinned connection carries unknown state; drop it.
            pool::discard(c);
        }
    }

    /// The session's group in `snap`'s config: found by name once per config generation (the
    /// config of a generation never changes), then by its position.
    fn group<'a>(&self, snap: &'a runtime::Snapshot) -> Option<&'a MysqlGroup> {
        let groups = &snap.config.mysql_groups;
        let (generation, i) = self.group_at.get();
        if generation == snap.generation
            && let Some(g) = groups.get(i)
        {
            return Some(g);
        }
        let i = groups.iter().position(|g| g.name == self.info.group)?;
        self.group_at.set((snap.generation, i));
        groups.get(i)
    }

    fn status_flags(&self) -> u16 {
        let mut s = 0;
        if self.autocommit {
            s |= status::SERVER_STATUS_AUTOCOMMIT;
        }
        if self.in_txn {
            s |= status::SERVER_STATUS_IN_TRANS;
        }
        s
    }

    /// The listener's sharding rules in `snap` (`None`: the listener is not sharded), kept for
    /// the generation ([`crate::shard::rules_for`] is the core's cache of them).
    fn shard_rules(&mut self, snap: &Arc<runtime::Snapshot>) -> Option<crate::shard::RulesFor> {
        if let Some((generation, r)) = &self.shard_rules
            && *generation == snap.generation
        {
            return r.clone();
        }
        let r = crate::shard::rules_for(&self.info.core, snap, &self.info.name);
        self.shard_rules = Some((snap.generation, r.clone()));
        r
    }

    fn refuse(&mut self, seq: u8, err: &ErrPacket) {
        ListenerStats::add(&self.stats.errors, 1);
        self.client.queue_err(seq, err);
    }
}
