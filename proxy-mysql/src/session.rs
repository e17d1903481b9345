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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::capability::*;
use codec::mysql::consts::{com, status};
use codec::mysql::{
    AuthMoreData, AuthSwitchRequest, ChangeUser, ClientHandshake, ColumnDefinition, Command,
    ErrPacket, HandshakeV10, Packet, PacketDecoder, auth,
};
use router::config::{MysqlGroup, ReadPolicy, User};
use router::sql::{Classified, Digest, Hint, StmtKind, classify, classify_with_digest, digest};
use runtime::{ListenerStats, LocalSnapshot, Shared};

use crate::access::{outside_schemas, schema_allowed};
use crate::backend::{BACKEND_COLLATION, BackendConn, FwdError, Outcome, RespKind};
use crate::conn::{Conn, ConnError};
use crate::error::{ProxyError, errs};
use crate::pool::{self, Target};
use crate::route::{GroupTargets, targets_for};
use crate::rwsplit::{
    self, Decision, GroupPolicy, Refusal, SessionState, Stmt, StmtHint, UserPolicy, Which,
};
use crate::stats;
use crate::vars::VarState;

/// This core's statement-cache hits and misses.
pub fn local_stmt_cache_stats(core: &crate::core::CoreCtx) -> (u64, u64) {
    core.stmts.borrow().stats()
}

/// Capabilities the proxy offers clients (codec's `PROXY_SERVER`).
pub const SERVER_CAPS: u32 = PROXY_SERVER;

/// Version string shown to clients.
pub const SERVER_VERSION: &str = "5.7.99-furrow";

/// How many times a read that failed before any byte reached the client is retried elsewhere.
const MAX_READ_RETRIES: u32 = 3;

/// A statement the client prepared.
struct ClientStmt {
    sql: Rc<str>,
    digest: Rc<router::sql::Digest>,
    class: Classified,
    params: u16,
    /// Parameter types from the last execution that sent them (2 bytes each).
    types: Option<Bytes>,
    /// Pending COM_STMT_SEND_LONG_DATA payloads (sent before the next execution).
    long_data: Vec<Bytes>,
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
    read_policy: ReadPolicy,
    /// Whether the user's `/* furrow:... */` hints are followed (`allow_hints`).
    allow_hints: bool,
    caps: u32,
    scramble: [u8; 20],
    schema: Option<Rc<str>>,
    vars: Option<Rc<VarState>>,
    autocommit: bool,
    pinned: Option<Box<BackendConn>>,
    sticky: bool,
    in_txn: bool,
    last_write: Option<Instant>,
    last_insert_id: u64,
    /// GTID of the session's last write (read-your-writes by GTID).
    last_gtid: Option<crate::gtid::Gtids>,
    stmts: HashMap<u32, ClientStmt>,
    next_stmt: u32,
    multi_statements: bool,
    targets: Option<(u64, Rc<GroupTargets>)>,
    rng: u64,
    /// Reused buffer of the replicas' states for [`rwsplit::choose`].
    servers: Vec<rwsplit::Server>,
    shard: crate::shard::ShardSession,
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
            read_policy: ReadPolicy::Split,
            allow_hints: true,
            caps: 0,
            // Drawn from the OS CSPRNG when the handshake starts.
            scramble: [0; 20],
            schema: None,
            vars: None,
            autocommit: true,
            pinned: None,
            sticky: false,
            in_txn: false,
            last_write: None,
            last_insert_id: 0,
            last_gtid: None,
            stmts: HashMap::new(),
            next_stmt: 1,
            multi_statements: false,
            targets: None,
            rng,
            servers: Vec::new(),
            shard: Default::default(),
        }
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
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
        loop {
            let read = self.client.read_packet();
            let packet = match self.info.idle_timeout {
                Some(t) => match tokio::time::timeout(t, read).await {
                    Ok(r) => r,
                    Err(_) => break,
                },
                None => read.await,
            };
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
                let err = ErrPacket::new(
                    1835,
                    "08S01",
                    "Malformed communication packet: bad sequence id",
                );
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

    fn refuse(&mut self, seq: u8, err: &ErrPacket) {
        ListenerStats::add(&self.stats.errors, 1);
        self.client.queue_err(seq, err);
    }

    // ---------------------------------------------------------------- handshake

    /// After a refused login: stops writing, then reads and drops what the client still sends
    /// (for at most [`LINGER`]), so that the close is a FIN after our ERR rather than a reset that
    /// may discard it at the client. Nothing read is kept.
    async fn linger(&mut self) {
        use tokio::io::AsyncReadExt;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.client.stream).await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n) = self.client.stream.read(&mut sink).await
                && n > 0
            {}
        })
        .await;
    }

    /// Reads the client's next packet of the login exchange, which must carry sequence id
    /// `expected`. An over-cap packet, bad framing or a wrong sequence id queue an ERR and give
    /// `Ok(None)` (the caller refuses the login and closes).
    async fn read_login_packet(&mut self, expected: u8) -> Result<Option<Packet>, ConnError> {
        let read = tokio::time::timeout(Duration::from_secs(10), self.client.read_packet()).await;
        let p = match read {
            Err(_) => return Err(ConnError::Io(std::io::ErrorKind::TimedOut.into())),
            Ok(Err(ConnError::Protocol(e))) => {
                // The client numbers its answer after the packet it sent.
                let sent = self.client.rbuf.get(3).copied().unwrap_or(expected);
                self.refuse(
                    sent.wrapping_add(1),
                    &ProxyError::ClientProtocol(e).to_err_packet(),
                );
                return Ok(None);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(p)) => p,
        };
        if p.seq != expected {
            self.refuse(
                p.last_seq.wrapping_add(1),
                &ErrPacket::new(1156, "08S01", "Got packets out of order"),
            );
            return Ok(None);
        }
        Ok(Some(p))
    }

    /// Returns Ok(false) when the client was refused (an ERR is queued).
    /// Counts a failed login of this client's address (login throttling).
    fn login_failed(&mut self) {
        let window = self.snap.get().config.proxy.login_block;
        self.shared.logins.failed(self.peer.ip(), window);
    }

    async fn handshake(&mut self) -> Result<bool, ConnError> {
        // An address with too many failed logins is refused before the greeting, as a server
        // refuses a blocked host.
        let proxy = self.snap.get().config.proxy.clone();
        if let Some(left) =
            self.shared
                .logins
                .blocked(self.peer.ip(), proxy.max_login_failures, proxy.login_block)
        {
            self.refuse(0, &errs::host_blocked(&self.peer.ip().to_string(), left));
            return Ok(false);
        }
        self.scramble = match crate::nonce::scramble() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the OS random generator for a login nonce");
                self.refuse(
                    0,
                    &ErrPacket::new(
                        1105,
                        "HY000",
                        "furrow: cannot draw a login nonce (OS random generator unavailable)",
                    ),
                );
                return Ok(false);
            }
        };
        // TLS as the current config has it for this listener (certificates follow reloads).
        let tls = self
            .snap
            .get()
            .config
            .listener(&self.info.name)
            .and_then(|l| l.tls.as_ref())
            .map(|t| t.config.clone());
        let offered = if tls.is_some() {
            SERVER_CAPS | CLIENT_SSL
        } else {
            SERVER_CAPS
        };
        let hs = HandshakeV10::new(
            SERVER_VERSION,
            self.id as u32,
            self.scramble,
            offered,
            BACKEND_COLLATION,
            status::SERVER_STATUS_AUTOCOMMIT,
            ANNOUNCED_PLUGIN,
        );
        let mut out = BytesMut::with_capacity(128);
        hs.encode(&mut out);
        self.client.queue(0, &out);
        self.client.flush().await?;
        let Some(p) = self.read_login_packet(1).await? else {
            return Ok(false);
        };
        let mut seq = p.next_seq();
        let mut decoded = ClientHandshake::decode(p.payload);
        if let Ok(ClientHandshake::Ssl(_)) = decoded {
            let Some(config) = tls else {
                self.refuse(
                    seq,
                    &ErrPacket::new(
                        1105,
                        "HY000",
                        "furrow: TLS is not supported on this listener",
                    ),
                );
                return Ok(false);
            };
            // The TLS handshake, then the real response over TLS; sequence ids continue.
            match tokio::time::timeout(Duration::from_secs(10), self.client.accept_tls(config))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(ConnError::Io(std::io::ErrorKind::TimedOut.into())),
            }
            let Some(p) = self.read_login_packet(seq).await? else {
                return Ok(false);
            };
            seq = p.next_seq();
            decoded = ClientHandshake::decode(p.payload);
        }
        let resp = match decoded {
            Ok(ClientHandshake::Response(r)) => r,
            Ok(ClientHandshake::Ssl(_)) => {
                self.refuse(
                    seq,
                    &ErrPacket::new(1043, "08S01", "Bad handshake: a second SSL request"),
                );
                return Ok(false);
            }
            Err(e) => {
                self.refuse(seq, &ProxyError::ClientProtocol(e).to_err_packet());
                return Ok(false);
            }
        };
        self.caps = resp.capabilities & offered;
        self.multi_statements = self.caps & CLIENT_MULTI_STATEMENTS != 0;
        let name = String::from_utf8_lossy(&resp.username).into_owned();
        let host = self.peer.ip().to_string();
        let snap = self.snap.get().clone();
        let user = snap
            .config
            .users_for(&self.info.name)
            .find(|u| u.name == name)
            .cloned();
        let Some(user) = user else {
            self.login_failed();
            self.refuse(
                seq,
                &errs::access_denied(&name, &host, !resp.auth_response.is_empty()),
            );
            return Ok(false);
        };
        if !host_allowed(&user, self.peer.ip()) {
            self.refuse(seq, &errs::host_not_allowed(&host));
            return Ok(false);
        }
        let plugin = resp
            .auth_plugin_name
            .as_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_else(|| ANNOUNCED_PLUGIN.into());
        let mut response = resp.auth_response.clone();
        let mut plugin_used = plugin.clone();
        // A client whose default plugin is not the announced one answers with nothing and waits
        // for an auth switch (libmariadb and libmysqlclient do so: they computed no answer for
        // another plugin's data); the servers switch it to the account's plugin. So do we, as for
        // a plugin whose hash the user lacks.
        let wants_switch = response.is_empty() && plugin != ANNOUNCED_PLUGIN;
        if wants_switch || !can_check(&user, &plugin) {
            match self.auth_switch(&user, seq).await? {
                Some(switched) => (plugin_used, response, seq) = switched,
                None => return Ok(false),
            }
        }
        // A `require_tls` user without TLS is refused as a server refuses a `REQUIRE SSL` account:
        // "Access denied", whatever the password.
        if !verify(&user, &plugin_used, &response, &self.scramble)
            || (user.require_tls && !self.client.stream.is_tls())
        {
            self.login_failed();
            self.refuse(
                seq,
                &errs::access_denied(&name, &host, !response.is_empty()),
            );
            return Ok(false);
        }
        self.shared.logins.succeeded(self.peer.ip());
        seq = self.queue_fast_auth(&plugin_used, seq);
        self.user = user.name.clone();
        self.read_policy = user.read_policy;
        self.allow_hints = user.allow_hints;
        self.vars = VarState::for_collation(resp.charset);
        if let Some(db) = resp.database.filter(|d| !d.is_empty()) {
            let db = String::from_utf8_lossy(&db).into_owned();
            if !schema_allowed(&user, &db) {
                self.refuse(seq, &errs::db_access_denied(&name, &host, &db));
                return Ok(false);
            }
            self.schema = Some(Rc::from(db.as_str()));
            // Validate the schema now, as a server would at connect time. A sharded listener serves
            // one logical database whose shard schemas come from the rules: any name selects it, as
            // COM_INIT_DB does there.
            let sharded =
                crate::shard::rules_for(&self.info.core, &self.snap.get().clone(), &self.info.name)
                    .is_some();
            if !sharded && let Err(e) = self.check_schema().await {
                self.refuse(seq, &e.to_err_packet());
                return Ok(false);
            }
        }
        self.client.queue_ok(seq, 0, 0, self.status_flags());
        self.client.flush().await?;
        // Logged in: packets up to the listener's cap from now on.
        self.client.decoder = PacketDecoder::new(self.info.max_frame);
        Ok(true)
    }

    /// Asks the client (`AuthSwitchRequest` with packet number `seq`) to answer again with a
    /// plugin that `user`'s stored hashes can verify; returns that plugin, the client's answer
    /// and the next packet number; `None` when the answer was refused (an ERR is queued).
    async fn auth_switch(
        &mut self,
        user: &User,
        seq: u8,
    ) -> Result<Option<(String, Bytes, u8)>, ConnError> {
        let target = if user.native_hash.is_some() {
            "mysql_native_password"
        } else {
            "caching_sha2_password"
        };
        let mut data = BytesMut::with_capacity(21);
        data.extend_from_slice(&self.scramble);
        data.extend_from_slice(&[0]);
        let sw = AuthSwitchRequest {
            plugin_name: Bytes::from_static(target.as_bytes()),
            plugin_data: data.freeze(),
        };
        let mut out = BytesMut::new();
        sw.encode(&mut out);
        let expected = self.client.queue(seq, &out);
        self.client.flush().await?;
        let Some(p) = self.read_login_packet(expected).await? else {
            return Ok(None);
        };
        let next = p.next_seq();
        Ok(Some((target.to_string(), p.payload, next)))
    }

    /// After a successful `caching_sha2_password` check, queues the "fast auth success" packet
    /// that precedes the OK (as a MySQL 8 server does); returns the next packet number.
    fn queue_fast_auth(&mut self, plugin_used: &str, seq: u8) -> u8 {
        if plugin_used != "caching_sha2_password" {
            return seq;
        }
        let mut out = BytesMut::new();
        AuthMoreData {
            data: Bytes::from_static(&[auth::FAST_AUTH_SUCCESS]),
        }
        .encode(&mut out);
        self.client.queue(seq, &out)
    }

    async fn check_schema(&mut self) -> Result<(), ProxyError> {
        let snap = self.snap.get().clone();
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            return Err(ProxyError::Refused(errs::no_backend(
                &self.info.group,
                "group",
            )));
        };
        let targets = self.group_targets(&snap)?;
        // Any server that is up can tell whether the schema exists: the primary first, a replica
        // when the primary is down or cannot be reached.
        let r = random_u64(&mut self.rng);
        let mut candidates = Vec::with_capacity(2);
        if targets.primary.state.usable() {
            candidates.push(targets.primary.clone());
        }
        if let Some(x) = targets.any_usable_replica(r, &[]) {
            candidates.push(x.clone());
        }
        if candidates.is_empty() {
            candidates.push(targets.primary.clone());
        }
        let last = candidates.len() - 1;
        for (i, t) in candidates.into_iter().enumerate() {
            match self.acquire(Dest::Server(t, true), g).await {
                Ok(c) => {
                    self.release(c);
                    return Ok(());
                }
                Err(ProxyError::BackendConnect { .. } | ProxyError::BackendLost { .. })
                    if i < last =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- commands

    async fn dispatch(&mut self, payload: Bytes) -> Flow {
        let code = payload.first().copied().unwrap_or(0);
        // Sharded listeners: queries and prepared statements go to the sharding executor.
        if crate::shard::handles(code) {
            let snap = self.snap.get().clone();
            if let Some(rules) = crate::shard::rules_for(&self.info.core, &snap, &self.info.name) {
                let cx = crate::shard::Ctx {
                    client: &mut self.client,
                    snap: &snap,
                    shared: &self.shared,
                    core: &self.info.core,
                    vars: &mut self.vars,
                    allow_hints: self.allow_hints,
                    group: &self.info.group,
                    user: &self.user,
                    peer: self.peer.ip(),
                    schema: self.schema.as_deref(),
                    multi_statements: self.multi_statements,
                };
                self.shard.command(cx, &rules, payload).await;
                return Flow::Continue;
            }
        }
        match code {
            com::QUERY => {
                let sql_bytes = payload.slice(1..);
                let sql = crate::sql_text(&sql_bytes);
                self.query(payload, &sql).await
            }
            com::QUIT => Flow::Close,
            com::PING => {
                self.client.queue_ok(1, 0, 0, self.status_flags());
                Flow::Continue
            }
            com::INIT_DB => {
                let db = String::from_utf8_lossy(&payload[1..]).into_owned();
                self.init_db(&db).await
            }
            com::FIELD_LIST => {
                let snap = self.snap.get().clone();
                let (c, d) = classify_with_digest("SHOW COLUMNS");
                self.execute_plain(payload, &c, &d, RespKind::FieldList, &snap, "FIELD_LIST")
                    .await
            }
            com::STATISTICS => {
                let msg = format!(
                    "Uptime: 1  Threads: 1  Questions: {}  Slow queries: 0  Opens: 0  Open tables: 0  \
                     Queries per second avg: 0.000",
                    self.stats
                        .requests
                        .load(std::sync::atomic::Ordering::Relaxed)
                );
                self.client.queue(1, msg.as_bytes());
                Flow::Continue
            }
            com::RESET_CONNECTION => {
                self.reset_session(None).await;
                self.client.queue_ok(1, 0, 0, self.status_flags());
                Flow::Continue
            }
            com::CHANGE_USER => self.change_user(payload).await,
            com::SET_OPTION => {
                let opt = u16::from_le_bytes([
                    payload.get(1).copied().unwrap_or(0),
                    payload.get(2).copied().unwrap_or(0),
                ]);
                match opt {
                    0 => self.multi_statements = true,
                    1 => self.multi_statements = false,
                    _ => {
                        self.refuse(1, &ErrPacket::new(1047, "08S01", "Unknown command"));
                        return Flow::Continue;
                    }
                }
                // MySQL answers COM_SET_OPTION with an EOF packet.
                self.client.queue_eof(1, self.status_flags());
                Flow::Continue
            }
            com::STMT_PREPARE => {
                let sql = String::from_utf8_lossy(&payload[1..]).into_owned();
                self.prepare(&sql).await
            }
            com::STMT_EXECUTE => self.stmt_execute(payload).await,
            com::STMT_SEND_LONG_DATA => {
                if payload.len() >= 7 {
                    let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
                    if let Some(s) = self.stmts.get_mut(&id) {
                        s.long_data.push(payload);
                    }
                }
                Flow::Continue
            }
            com::STMT_CLOSE => {
                if payload.len() >= 5 {
                    let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
                    self.stmts.remove(&id);
                }
                Flow::Continue
            }
            com::STMT_RESET => {
                if payload.len() < 5 {
                    return self.malformed();
                }
                let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
                match self.stmts.get_mut(&id) {
                    Some(s) => {
                        s.long_data.clear();
                        self.client.queue_ok(1, 0, 0, self.status_flags());
                    }
                    None => self.refuse(1, &errs::unknown_stmt(id, "mysqld_stmt_reset")),
                }
                Flow::Continue
            }
            com::STMT_FETCH => self.stmt_fetch(payload).await,
            _ => {
                self.refuse(1, &errs::unknown_command(code));
                Flow::Continue
            }
        }
    }

    fn malformed(&mut self) -> Flow {
        let err = ErrPacket::new(1835, "08S01", "Malformed communication packet");
        self.refuse(1, &err);
        Flow::Close
    }

    async fn init_db(&mut self, db: &str) -> Flow {
        let snap = self.snap.get().clone();
        let Some(user) = snap.config.users.iter().find(|u| u.name == self.user) else {
            self.refuse(
                1,
                &errs::access_denied(&self.user, &self.peer.ip().to_string(), true),
            );
            return Flow::Close;
        };
        if !schema_allowed(user, db) {
            let e = errs::db_access_denied(&self.user, &self.peer.ip().to_string(), db);
            self.refuse(1, &e);
            return Flow::Continue;
        }
        let old = self.schema.replace(Rc::from(db));
        match self.check_schema().await {
            Ok(()) => {
                self.client.queue_ok(1, 0, 0, self.status_flags());
            }
            Err(e) => {
                self.schema = old;
                self.refuse(1, &e.to_err_packet());
            }
        }
        Flow::Continue
    }

    /// Back to a fresh session (COM_RESET_CONNECTION, COM_CHANGE_USER). Read-your-writes state
    /// (`last_write`, `last_gtid`) is kept on purpose: application pools reset a connection between
    /// borrowings by the same application, which may read in the next borrowing what it wrote in
    /// the last one; keeping reads on the primary for the window costs only replica offload.
    async fn reset_session(&mut self, charset: Option<u8>) {
        if let Some(mut c) = self.pinned.take() {
            match c.command(&[com::RESET_CONNECTION], RespKind::Single).await {
                Ok(o) if o.err.is_none() => {
                    c.vars = None;
                    c.schema = None;
                    c.schema_unknown = true;
                    c.stmts.clear();
                    pool::checkin(c);
                }
                _ => pool::discard(c),
            }
        }
        self.sticky = false;
        self.in_txn = false;
        self.autocommit = true;
        self.last_insert_id = 0;
        self.stmts.clear();
        if let Some(cs) = charset {
            self.vars = VarState::for_collation(cs);
        } else {
            // Keep only the charset part of the state.
            self.vars = VarState::charset_only(self.vars.as_ref());
        }
    }

    async fn change_user(&mut self, payload: Bytes) -> Flow {
        let cu = match Command::decode(payload) {
            Ok(Command::ChangeUser(cu)) => cu,
            _ => return self.malformed(),
        };
        let ChangeUser {
            username,
            auth_response,
            database,
            charset,
            auth_plugin_name,
            ..
        } = cu;
        let name = String::from_utf8_lossy(&username).into_owned();
        let host = self.peer.ip().to_string();
        let snap = self.snap.get().clone();
        let user = snap
            .config
            .users_for(&self.info.name)
            .find(|u| u.name == name)
            .cloned();
        let mut plugin = auth_plugin_name
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_else(|| ANNOUNCED_PLUGIN.into());
        let mut response = auth_response;
        let mut seq = 1;
        // As at login (and as a server does for COM_CHANGE_USER): when the client answered with a
        // plugin the user's stored hashes cannot check (a caching_sha2-only user and a client that
        // logged in with mysql_native_password), switch it to one they can instead of refusing a
        // correct password.
        // And as at login, an empty answer for another plugin asks for a switch.
        let wants_switch = response.is_empty() && plugin != ANNOUNCED_PLUGIN;
        if let Some(u) = &user
            && host_allowed(u, self.peer.ip())
            && (wants_switch || !can_check(u, &plugin))
        {
            match self.auth_switch(u, seq).await {
                Ok(Some(switched)) => (plugin, response, seq) = switched,
                Ok(None) | Err(_) => return Flow::Close,
            }
        }
        let ok = user.as_ref().is_some_and(|u| {
            host_allowed(u, self.peer.ip())
                && verify(u, &plugin, &response, &self.scramble)
                && (!u.require_tls || self.client.stream.is_tls())
        });
        let Some(user) = user.filter(|_| ok) else {
            self.login_failed();
            self.refuse(
                seq,
                &errs::access_denied(&name, &host, !response.is_empty()),
            );
            return Flow::Close;
        };
        let seq = self.queue_fast_auth(&plugin, seq);
        let db = String::from_utf8_lossy(&database).into_owned();
        if !db.is_empty() && !schema_allowed(&user, &db) {
            self.refuse(seq, &errs::db_access_denied(&name, &host, &db));
            return Flow::Close;
        }
        self.reset_session(Some(charset.map_or(BACKEND_COLLATION, |c| c as u8)))
            .await;
        self.user = user.name.clone();
        self.read_policy = user.read_policy;
        self.allow_hints = user.allow_hints;
        self.schema = (!db.is_empty()).then(|| Rc::from(db.as_str()));
        if self.schema.is_some()
            && let Err(e) = self.check_schema().await
        {
            self.refuse(seq, &e.to_err_packet());
            return Flow::Continue;
        }
        self.client.queue_ok(seq, 0, 0, self.status_flags());
        Flow::Continue
    }

    // ---------------------------------------------------------------- routing

    fn group_targets(
        &mut self,
        snap: &Arc<runtime::Snapshot>,
    ) -> Result<Rc<GroupTargets>, ProxyError> {
        if let Some((gen_, t)) = &self.targets
            && *gen_ == snap.generation
        {
            return Ok(t.clone());
        }
        let t = targets_for(snap, &self.info.group, &self.shared)
            .ok_or_else(|| ProxyError::Refused(errs::no_backend(&self.info.group, "group")))?;
        self.targets = Some((snap.generation, t.clone()));
        Ok(t)
    }

    /// Picks where `c` runs: gathers the inputs of [`rwsplit::choose`] and maps its decision.
    /// `avoid` names replicas that already failed for this statement (a retried read goes
    /// elsewhere even before enough failures have ejected them).
    fn choose(
        &mut self,
        snap: &Arc<runtime::Snapshot>,
        g: &MysqlGroup,
        c: &Classified,
        avoid: &[Rc<str>],
    ) -> Result<Dest, ProxyError> {
        // Session-only statements (replayable SET, USE) run anywhere: their effect is replayed on
        // whichever connection the session uses next.
        let session_only = is_session_only(c);
        let is_read = c.is_read()
            || (session_only
                && !matches!(
                    c.kind,
                    StmtKind::Begin | StmtKind::Commit | StmtKind::Rollback
                )
                && (c.kind != StmtKind::Set || c.is_replayable_set()));
        // A pinned session needs no server list (and no targets: those may fail to build).
        let targets = match &self.pinned {
            Some(_) => None,
            None => Some(self.group_targets(snap)?),
        };
        let hint = match (&c.hint, &targets) {
            (Some(Hint::Primary), _) => StmtHint::Primary,
            (Some(Hint::Replica), _) => StmtHint::Replica,
            (Some(Hint::Backend(name)), Some(t)) => StmtHint::Server(which_named(t, name)),
            _ => StmtHint::None,
        };
        let stmt = Stmt {
            is_read,
            session_only,
            replica_may_run: replica_may_run(c, is_read),
            pins_session: c.pins_session(),
            hint,
        };
        let user = UserPolicy {
            read_policy: self.read_policy,
            allow_hints: self.allow_hints,
        };
        let state = SessionState {
            autocommit: self.autocommit,
            pinned: self.pinned.as_ref().map(|p| *p.server == *g.primary.name),
            // No clock read when the group has no time window.
            since_write: self
                .last_write
                .filter(|_| !g.read_your_writes.is_zero())
                .map(|w| w.elapsed()),
            has_write_gtid: self.last_gtid.is_some(),
        };
        let group = GroupPolicy {
            max_replica_lag: g.max_replica_lag,
            read_your_writes: g.read_your_writes,
            read_your_writes_gtid: g.read_your_writes_gtid,
        };
        // The server list reuses the session's buffer: no allocation per statement.
        let mut replicas = std::mem::take(&mut self.servers);
        replicas.clear();
        let mut primary = rwsplit::Server::default();
        if let Some(t) = &targets {
            primary.usable = t.primary.state.usable();
            replicas.extend(t.replicas.iter().map(|(x, w)| rwsplit::Server {
                usable: x.state.usable(),
                weight: *w,
                lag_ms: x.state.lag_ms.load(std::sync::atomic::Ordering::Relaxed),
                avoid: avoid.contains(&x.name),
            }));
        }
        let r = random_u64(&mut self.rng);
        let decision = rwsplit::choose(
            &stmt,
            &user,
            &state,
            &group,
            &rwsplit::Servers {
                primary,
                replicas: &replicas,
            },
            r,
            |i| match (&self.last_gtid, &targets) {
                (Some(want), Some(t)) => t.replicas.get(i).is_some_and(|(x, _)| {
                    self.info
                        .core
                        .shared
                        .gtid
                        .replica_has(&g.name, &x.name, &x.address, want)
                }),
                _ => false,
            },
        );
        self.servers = replicas;
        let target = |w: Which| -> Result<(&Target, bool), ProxyError> {
            let t = targets.as_deref().ok_or_else(|| {
                ProxyError::Refused(errs::internal("no targets for a server decision"))
            })?;
            match w {
                Which::Primary => Ok((&t.primary, true)),
                Which::Replica(i) => t
                    .replicas
                    .get(i)
                    .map(|(x, _)| (x, false))
                    .ok_or_else(|| ProxyError::Refused(errs::internal("replica index"))),
            }
        };
        let named = || match &c.hint {
            Some(Hint::Backend(name)) => name.as_str(),
            _ => "",
        };
        let refused = match decision {
            Decision::Pinned => return Ok(Dest::Pinned),
            Decision::Server(w) => {
                let (x, primary) = target(w)?;
                return Ok(Dest::Server(x.clone(), primary));
            }
            Decision::Refuse(why) => match why {
                Refusal::ReadOnlyUser => errs::read_only(&self.user),
                Refusal::WriteOnPinnedReplica => {
                    let server = self.pinned.as_ref().map_or("", |p| &*p.server);
                    errs::write_on_pinned_replica(server)
                }
                Refusal::UnknownBackend => errs::unknown_backend(named()),
                Refusal::HintPrimaryDenied => errs::hint_primary_denied(&self.user, named()),
                Refusal::HintWriteToReplica => errs::hint_write_to_replica(named()),
                Refusal::Down(w) => {
                    let (x, _) = target(w)?;
                    errs::circuit_open(&x.name, &x.state)
                }
                Refusal::NoReplica => errs::no_backend(&g.name, "replica"),
            },
        };
        Err(ProxyError::Refused(refused))
    }

    async fn acquire(
        &mut self,
        dest: Dest,
        g: &MysqlGroup,
    ) -> Result<Box<BackendConn>, ProxyError> {
        let t = match dest {
            Dest::Pinned => {
                return self.pinned.take().ok_or_else(|| {
                    ProxyError::Refused(errs::internal("pinned connection missing"))
                });
            }
            Dest::Server(t, _) => t,
        };
        let mut c = pool::checkout(
            &self.info.core,
            &t,
            g,
            self.vars.as_ref(),
            self.schema.as_ref(),
        )
        .await?;
        if let Err(e) = self.sync_conn(&mut c, g).await {
            pool::discard(c);
            return Err(e);
        }
        Ok(c)
    }

    /// Brings a pooled connection into this session's state (reset, replay, schema).
    async fn sync_conn(&mut self, c: &mut BackendConn, g: &MysqlGroup) -> Result<(), ProxyError> {
        if self.schema.is_none() && (c.schema.is_some() || c.schema_unknown) {
            // A session without a schema must not inherit one: only a fresh login unselects it.
            c.change_user(&g.user, &g.password)
                .await
                .map_err(|reason| ProxyError::BackendLost {
                    server: c.server.to_string(),
                    reason,
                })?;
        }
        c.sync_vars(self.vars.as_ref()).await?;
        if let Some(s) = &self.schema {
            c.use_schema(s).await?;
        }
        Ok(())
    }

    /// Returns the connection to the pool, or keeps it pinned while the session needs it.
    fn release(&mut self, c: Box<BackendConn>) {
        if c.broken {
            pool::discard(c);
            return;
        }
        if self.sticky || self.in_txn {
            self.pinned = Some(c);
        } else {
            pool::checkin(c);
        }
    }

    // ---------------------------------------------------------------- queries

    async fn query(&mut self, payload: Bytes, sql: &str) -> Flow {
        // The routing class and the digest (rules, stats, audit): from this core's cache of
        // statement shapes, else from one lexer pass.
        let analysed = self.info.core.stmts.borrow_mut().analyse(sql);
        let (c, d) = (&analysed.class, &analysed.digest);
        if c.flags & router::sql::classify::flags::LOCAL_INFILE != 0 {
            self.refuse(1, &errs::local_infile());
            return Flow::Continue;
        }
        if c.flags & router::sql::classify::flags::MULTI != 0 && !self.multi_statements {
            self.refuse(
                1,
                &ErrPacket::new(
                    1064,
                    "42000",
                    "You have an error in your SQL syntax; multi-statements are not enabled for this \
                     connection (CLIENT_MULTI_STATEMENTS)",
                ),
            );
            return Flow::Continue;
        }
        if c.kind == StmtKind::Select
            && c.flags & router::sql::classify::flags::LAST_INSERT_ID != 0
            && self.pinned.is_none()
            && is_plain_last_insert_id(sql)
        {
            self.local_last_insert_id(sql);
            return Flow::Continue;
        }
        let snap = self.snap.get().clone();
        if let Some(e) = self.outside_schemas(&snap, sql) {
            self.refuse(1, &e);
            return Flow::Continue;
        }
        self.execute_plain(payload, c, d, RespKind::ResultSet, &snap, sql)
            .await
    }

    /// [`outside_schemas`] for this session's user.
    fn outside_schemas(&self, snap: &Arc<runtime::Snapshot>, sql: &str) -> Option<ErrPacket> {
        outside_schemas(snap, &self.user, self.peer.ip(), sql)
    }

    fn local_last_insert_id(&mut self, sql: &str) {
        let name = sql.trim().trim_end_matches(';').trim();
        let name = name.get(6..).map_or("LAST_INSERT_ID()", str::trim);
        let mut seq = 1;
        let mut p = BytesMut::new();
        p.extend_from_slice(&[1]);
        seq = self.client.queue(seq, &p);
        let col = ColumnDefinition::new(
            name,
            codec::mysql::consts::column_type::LONGLONG,
            63,
            21,
            0x80 | 0x20,
            0,
        );
        p.clear();
        col.encode(&mut p);
        seq = self.client.queue(seq, &p);
        let status = self.status_flags();
        seq = self.client.queue_eof(seq, status);
        p.clear();
        codec::mysql::wire::put_lenenc_bytes(&mut p, self.last_insert_id.to_string().as_bytes());
        seq = self.client.queue(seq, &p);
        self.client.queue_eof(seq, status);
    }

    /// Routes and runs a command whose payload is forwarded unchanged; updates session state.
    async fn execute_plain(
        &mut self,
        payload: Bytes,
        c: &Classified,
        d: &Digest,
        kind: RespKind,
        snap: &Arc<runtime::Snapshot>,
        sql: &str,
    ) -> Flow {
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            self.refuse(1, &errs::no_backend(&self.info.group, "group"));
            return Flow::Continue;
        };
        let started = Instant::now();
        let _permit = match crate::ops::rules_for(&self.info.core, g, snap.generation) {
            Some(r) => match r.check_text(&self.user, sql, d) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.refuse(1, &e);
                    self.audit(g, sql, d, "", started, 0, Some(e.code));
                    return Flow::Continue;
                }
            },
            None => None,
        };
        let mut attempt = 0;
        // Replicas that failed this statement: a retried read goes to another server.
        let mut avoid: Vec<Rc<str>> = Vec::new();
        let (outcome, server, took) = loop {
            attempt += 1;
            let dest = match self.choose(snap, g, c, &avoid) {
                Ok(d) => d,
                Err(e) => {
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
            };
            let (retry_ok, dest_state, dest_name) = match &dest {
                Dest::Server(t, primary) => (
                    !primary && c.is_read(),
                    Some(t.state.clone()),
                    Some(t.name.clone()),
                ),
                Dest::Pinned => (false, None, None),
            };
            let was_pinned = matches!(dest, Dest::Pinned);
            if c.pins_session() {
                self.sticky = true;
            }
            let mut conn = match self.acquire(dest, g).await {
                Ok(x) => x,
                Err(e) => {
                    if retry_ok
                        && attempt <= MAX_READ_RETRIES
                        && matches!(e, ProxyError::BackendConnect { .. })
                    {
                        avoid.extend(dest_name);
                        continue;
                    }
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
            };
            let mark = self.client.wbuf.len();
            conn.queue_command(&payload);
            let r = self.forward(&mut conn, kind, None, g, c.is_read()).await;
            let server = conn.server.clone();
            match r {
                Ok(o) => {
                    let took = started.elapsed();
                    if let Some(st) = &dest_state {
                        st.record_ok(took);
                    }
                    self.after_statement(c, &o, &mut conn, sql);
                    self.track_gtid(g, c, &o, &mut conn).await;
                    // The statement's latency includes the GTID read that may follow a write (as
                    // before); without GTID tracking nothing ran since `took`.
                    let took = if g.read_your_writes_gtid {
                        started.elapsed()
                    } else {
                        took
                    };
                    self.release(conn);
                    break (o, server, took);
                }
                Err(e) => {
                    conn.broken = true;
                    pool::discard(conn);
                    let flushed = self.client.wbuf.len() < mark;
                    if let Some(st) = &dest_state
                        && !matches!(e, ProxyError::Timeout | ProxyError::Refused(_))
                    {
                        st.note_error(&e.to_string());
                        st.record_failure(g.circuit_break_after, g.circuit_open);
                    }
                    // A read that failed or timed out on a replica before anything reached
                    // the client runs again elsewhere (a stalled replica must not hang its
                    // clients); writes never do.
                    if retry_ok
                        && !flushed
                        && attempt <= MAX_READ_RETRIES
                        && matches!(e, ProxyError::BackendLost { .. } | ProxyError::Timeout)
                    {
                        if matches!(e, ProxyError::Timeout) {
                            tracing::warn!(server = %server, "read timed out on a replica; retried elsewhere");
                        }
                        self.client.wbuf.truncate(mark);
                        avoid.extend(dest_name);
                        continue;
                    }
                    if let ProxyError::ResultTooLarge { next_seq, .. } = e {
                        // Rows already went out: end the result with an ERR in sequence.
                        self.refuse(next_seq, &e.to_err_packet());
                    } else {
                        if !flushed {
                            self.client.wbuf.truncate(mark);
                        }
                        self.refuse(1, &e.to_err_packet());
                    }
                    let code = e.to_err_packet().code;
                    stats::record(&self.info.core, d, started.elapsed(), 0, true);
                    self.audit(g, sql, d, &server, started, 0, Some(code));
                    if was_pinned || self.in_txn || self.sticky {
                        // The session's connection state is gone; the client must reconnect.
                        return Flow::Close;
                    }
                    return Flow::Continue;
                }
            }
        };
        if outcome.err.is_some() {
            ListenerStats::add(&self.stats.errors, 1);
        }
        stats::record(
            &self.info.core,
            d,
            took,
            outcome.rows.max(outcome.affected),
            outcome.err.is_some(),
        );
        stats::maybe_slow(
            &self.info.core,
            &self.user,
            &server,
            sql,
            took,
            g.slow_query,
        );
        self.audit(
            g,
            sql,
            d,
            &server,
            started,
            outcome.rows.max(outcome.affected),
            outcome.err,
        );
        Flow::Continue
    }

    /// Sends what is queued on `conn` and forwards the response to the client, with the statement
    /// timeout (for a `read`, the read timeout when no statement timeout is set).
    async fn forward(
        &mut self,
        conn: &mut BackendConn,
        kind: RespKind,
        client_stmt: Option<u32>,
        g: &MysqlGroup,
        read: bool,
    ) -> Result<Outcome, ProxyError> {
        let lost = |server: &str, e: &dyn std::fmt::Display| ProxyError::BackendLost {
            server: server.to_string(),
            reason: e.to_string(),
        };
        if let Err(e) = conn.conn.flush().await {
            return Err(lost(&conn.server, &e));
        }
        let max = g.max_result_bytes.unwrap_or(u64::MAX);
        let fut = conn.forward(kind, Some(&mut self.client), client_stmt, max);
        let timeout = g.query_timeout.or(if read { g.read_timeout } else { None });
        let r = match timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => {
                    conn.broken = true;
                    kill_query(conn, g);
                    return Err(ProxyError::Timeout);
                }
            },
            None => fut.await,
        };
        match r {
            Ok(o) => Ok(o),
            Err(FwdError::Backend(e)) => Err(lost(&conn.server, &e)),
            Err(FwdError::Client(e)) => Err(ProxyError::ClientIo(match e {
                ConnError::Io(e) => e,
                ConnError::Protocol(p) => std::io::Error::other(p.to_string()),
                e @ ConnError::BudgetExhausted { .. } => std::io::Error::other(e.to_string()),
            })),
            Err(FwdError::TooLarge { limit, next_seq }) => {
                Err(ProxyError::ResultTooLarge { limit, next_seq })
            }
        }
    }

    /// With read-your-writes by GTID: after a successful write outside a transaction (or its
    /// COMMIT), remembers the session's `@@last_gtid`.
    async fn track_gtid(
        &mut self,
        g: &MysqlGroup,
        c: &Classified,
        o: &Outcome,
        conn: &mut BackendConn,
    ) {
        // A COMMIT makes the transaction's writes visible: its GTID is the one to wait for.
        if !g.read_your_writes_gtid
            || o.err.is_some()
            || self.in_txn
            || !(is_write(c)
                || c.kind == StmtKind::Commit
                    && self.last_gtid.is_none()
                    && self.last_write.is_some())
        {
            return;
        }
        if !self.info.core.shared.gtid.supported(&g.name) {
            return; // servers without `@@last_gtid`: the window decides
        }
        let wait = g
            .query_timeout
            .or(g.read_timeout)
            .unwrap_or(Duration::from_secs(30));
        match tokio::time::timeout(wait, conn.query_rows("SELECT @@last_gtid")).await {
            Ok(Ok((_, rows))) => {
                let text = rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .unwrap_or_default();
                let g = crate::gtid::parse(&text);
                if !g.is_empty() {
                    self.last_gtid = Some(g);
                }
            }
            Ok(Err(e)) if e.contains("Unknown system variable") => {
                self.info.core.shared.gtid.set_unsupported(&g.name);
            }
            Ok(Err(_)) | Err(_) => conn.broken = true,
        }
    }

    /// Queues an audit record when the group has an audit log.
    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        g: &MysqlGroup,
        sql: &str,
        d: &router::sql::Digest,
        backend: &str,
        started: Instant,
        rows: u64,
        error: Option<u16>,
    ) {
        if let Some(path) = &g.audit_log {
            crate::ops::audit(
                &self.info.core,
                path,
                &crate::ops::AuditRecord {
                    user: &self.user,
                    client: self.peer.ip(),
                    schema: self.schema.as_deref(),
                    backend,
                    sql,
                    digest: d.hash,
                    took: started.elapsed(),
                    rows,
                    error,
                },
            );
        }
    }

    fn after_statement(&mut self, c: &Classified, o: &Outcome, conn: &mut BackendConn, sql: &str) {
        if o.err.is_none() {
            self.in_txn = o.status & status::SERVER_STATUS_IN_TRANS != 0;
            match c.kind {
                StmtKind::Use => {
                    if let Some(db) = &c.schema {
                        let db: Rc<str> = Rc::from(db.as_str());
                        self.schema = Some(db.clone());
                        conn.schema = Some(db);
                        conn.schema_unknown = false;
                    }
                }
                StmtKind::Set if c.is_replayable_set() => {
                    if let Some(ac) = c.autocommit {
                        self.autocommit = ac;
                    }
                    match VarState::with_set(self.vars.as_deref(), sql.trim()) {
                        Some(v) => {
                            self.vars = Some(v.clone());
                            conn.vars = Some(v);
                        }
                        None => self.sticky = true,
                    }
                }
                _ => {}
            }
            if o.last_insert_id != 0 {
                self.last_insert_id = o.last_insert_id;
            }
        } else if !self.autocommit && self.pinned.is_none() {
            self.in_txn = true;
        }
        if is_write(c) {
            self.last_write = Some(Instant::now());
            // Until this write's GTID is read (`track_gtid`), the window decides.
            self.last_gtid = None;
        }
    }

    // ---------------------------------------------------------------- prepared statements

    async fn prepare(&mut self, sql: &str) -> Flow {
        let c = classify(sql);
        let snap = self.snap.get().clone();
        if let Some(e) = self.outside_schemas(&snap, sql) {
            self.refuse(1, &e);
            return Flow::Continue;
        }
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            self.refuse(1, &errs::no_backend(&self.info.group, "group"));
            return Flow::Continue;
        };
        let dest = match self.choose(&snap, g, &c, &[]) {
            Ok(d) => d,
            Err(e) => {
                self.refuse(1, &e.to_err_packet());
                return Flow::Continue;
            }
        };
        let mut conn = match self.acquire(dest, g).await {
            Ok(x) => x,
            Err(e) => {
                self.refuse(1, &e.to_err_packet());
                return Flow::Continue;
            }
        };
        let id = self.next_stmt;
        let sql_rc: Rc<str> = Rc::from(sql);
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(com::STMT_PREPARE);
        p.extend_from_slice(sql.as_bytes());
        conn.queue_command(&p);
        match self
            .forward(&mut conn, RespKind::Prepare, Some(id), g, true)
            .await
        {
            Ok(o) => {
                if let Some((bid, cols, params)) = o.prepared {
                    self.next_stmt = self.next_stmt.wrapping_add(1).max(1);
                    let key = (conn.schema.clone(), sql_rc.clone());
                    if let Some(old) = conn.cache_stmt(key, bid, params, cols) {
                        conn.queue_stmt_close(old);
                    }
                    self.stmts.insert(
                        id,
                        ClientStmt {
                            digest: Rc::new(digest(&sql_rc)),
                            sql: sql_rc,
                            class: c,
                            params,
                            types: None,
                            long_data: Vec::new(),
                        },
                    );
                } else {
                    ListenerStats::add(&self.stats.errors, 1);
                }
                if conn.conn.flush().await.is_err() {
                    conn.broken = true;
                }
                self.release(conn);
                Flow::Continue
            }
            Err(e) => {
                pool::discard(conn);
                self.refuse(1, &e.to_err_packet());
                Flow::Continue
            }
        }
    }

    /// Makes sure `stmt` is prepared on `conn`; returns the backend statement id.
    async fn ensure_prepared(
        conn: &mut BackendConn,
        sql: &Rc<str>,
    ) -> Result<Result<u32, ErrPacket>, FwdError> {
        let key = (conn.schema.clone(), sql.clone());
        if let Some(s) = conn.lookup_stmt(&key) {
            return Ok(Ok(s.id));
        }
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(com::STMT_PREPARE);
        p.extend_from_slice(sql.as_bytes());
        let o = conn.command(&p, RespKind::Prepare).await?;
        if let Some(err) = o.err_payload {
            return Ok(Err(
                ErrPacket::decode(err).unwrap_or_else(|_| errs::internal("re-prepare failed"))
            ));
        }
        let Some((bid, cols, params)) = o.prepared else {
            return Ok(Err(errs::internal("re-prepare returned no statement")));
        };
        if let Some(old) = conn.cache_stmt(key, bid, params, cols) {
            conn.queue_stmt_close(old);
        }
        Ok(Ok(bid))
    }

    async fn stmt_execute(&mut self, payload: Bytes) -> Flow {
        if payload.len() < 10 {
            return self.malformed();
        }
        let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
        let cursor = payload[5] != 0;
        let Some(st) = self.stmts.get_mut(&id) else {
            self.refuse(1, &errs::unknown_stmt(id, "mysqld_stmt_execute"));
            return Flow::Continue;
        };
        // Rebuild the parameter block so that types are always sent (the backend connection may not
        // have seen the previous execution).
        let n = usize::from(st.params);
        let mut body = BytesMut::with_capacity(payload.len() + 2 * n);
        body.extend_from_slice(&payload[..10]);
        if n > 0 {
            let bitmap = n.div_ceil(8);
            let Some(rest) = payload.get(10..) else {
                return self.malformed();
            };
            if rest.len() < bitmap + 1 {
                return self.malformed();
            }
            body.extend_from_slice(&rest[..bitmap]);
            let bound = rest[bitmap];
            let after = &rest[bitmap + 1..];
            if bound == 1 {
                if after.len() < 2 * n {
                    return self.malformed();
                }
                st.types = Some(Bytes::copy_from_slice(&after[..2 * n]));
                body.extend_from_slice(&[1]);
                body.extend_from_slice(after);
            } else if let Some(t) = &st.types {
                body.extend_from_slice(&[1]);
                body.extend_from_slice(t);
                body.extend_from_slice(after);
            } else {
                body.extend_from_slice(&rest[bitmap..]);
            }
        } else if let Some(rest) = payload.get(10..) {
            body.extend_from_slice(rest);
        }
        let sql = st.sql.clone();
        let d = st.digest.clone();
        let mut class = st.class.clone();
        let long_data = std::mem::take(&mut st.long_data);
        if cursor {
            // A cursor lives in its connection: keep the session there.
            class.flags |= router::sql::classify::flags::MULTI;
        }
        let snap = self.snap.get().clone();
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            self.refuse(1, &errs::no_backend(&self.info.group, "group"));
            return Flow::Continue;
        };
        let started = Instant::now();
        let _permit = match crate::ops::rules_for(&self.info.core, g, snap.generation) {
            Some(r) => match r.check_text(&self.user, &sql, &d) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.refuse(1, &e);
                    self.audit(g, &sql, &d, "", started, 0, Some(e.code));
                    return Flow::Continue;
                }
            },
            None => None,
        };
        // Replicas that failed this execution: a retried read goes elsewhere.
        let mut avoid: Vec<Rc<str>> = Vec::new();
        let mut attempt = 0;
        let wait = g
            .query_timeout
            .or(g.read_timeout)
            .unwrap_or(Duration::from_secs(30));
        loop {
            attempt += 1;
            let dest = match self.choose(&snap, g, &class, &avoid) {
                Ok(d) => d,
                Err(e) => {
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
            };
            // A read on a replica may run again elsewhere; writes and cursors never do.
            let (retry_ok, dest_name) = match &dest {
                Dest::Server(t, primary) => (
                    !primary && class.is_read() && attempt <= MAX_READ_RETRIES,
                    Some(t.name.clone()),
                ),
                Dest::Pinned => (false, None),
            };
            if class.pins_session() {
                self.sticky = true;
            }
            let mut conn = match self.acquire(dest, g).await {
                Ok(x) => x,
                Err(e) => {
                    if retry_ok && matches!(e, ProxyError::BackendConnect { .. }) {
                        avoid.extend(dest_name);
                        continue;
                    }
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
            };
            // Bounded: a hung server must not hold the client at the (re-)prepare either.
            let bid = match tokio::time::timeout(wait, Self::ensure_prepared(&mut conn, &sql)).await
            {
                Ok(Ok(Ok(b))) => b,
                Ok(Ok(Err(err))) => {
                    self.release(conn);
                    self.refuse(1, &err);
                    return Flow::Continue;
                }
                Ok(Err(e)) => {
                    let server = conn.server.to_string();
                    pool::discard(conn);
                    if retry_ok {
                        avoid.extend(dest_name);
                        continue;
                    }
                    let e = ProxyError::BackendLost {
                        server,
                        reason: e.to_string(),
                    };
                    self.refuse(1, &e.to_err_packet());
                    return Flow::Continue;
                }
                Err(_) => {
                    pool::discard(conn);
                    if retry_ok {
                        avoid.extend(dest_name);
                        continue;
                    }
                    self.refuse(1, &ProxyError::Timeout.to_err_packet());
                    return if self.sticky || self.in_txn {
                        Flow::Close
                    } else {
                        Flow::Continue
                    };
                }
            };
            for ld in &long_data {
                let mut v = ld.to_vec();
                v[1..5].copy_from_slice(&bid.to_le_bytes());
                conn.queue_command(&v);
            }
            body[1..5].copy_from_slice(&bid.to_le_bytes());
            conn.queue_command(&body);
            let mark = self.client.wbuf.len();
            match self
                .forward(&mut conn, RespKind::ResultSet, None, g, class.is_read())
                .await
            {
                Ok(o) => {
                    self.after_statement(&class, &o, &mut conn, &sql);
                    self.track_gtid(g, &class, &o, &mut conn).await;
                    if cursor {
                        self.sticky = true;
                    }
                    let server = conn.server.clone();
                    self.release(conn);
                    stats::record(
                        &self.info.core,
                        &d,
                        started.elapsed(),
                        o.rows.max(o.affected),
                        o.err.is_some(),
                    );
                    stats::maybe_slow(
                        &self.info.core,
                        &self.user,
                        &server,
                        &sql,
                        started.elapsed(),
                        g.slow_query,
                    );
                    let rows = o.rows.max(o.affected);
                    self.audit(g, &sql, &d, &server, started, rows, o.err);
                    return Flow::Continue;
                }
                Err(e) => {
                    pool::discard(conn);
                    let flushed = self.client.wbuf.len() < mark;
                    if retry_ok
                        && !flushed
                        && matches!(e, ProxyError::BackendLost { .. } | ProxyError::Timeout)
                    {
                        self.client.wbuf.truncate(mark);
                        avoid.extend(dest_name);
                        continue;
                    }
                    if !flushed {
                        self.client.wbuf.truncate(mark);
                    }
                    stats::record(&self.info.core, &d, started.elapsed(), 0, true);
                    self.refuse(1, &e.to_err_packet());
                    if self.sticky || self.in_txn {
                        return Flow::Close;
                    }
                    return Flow::Continue;
                }
            }
        }
    }

    async fn stmt_fetch(&mut self, payload: Bytes) -> Flow {
        if payload.len() < 9 {
            return self.malformed();
        }
        let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
        let Some(st) = self.stmts.get(&id) else {
            self.refuse(1, &errs::unknown_stmt(id, "mysqld_stmt_fetch"));
            return Flow::Continue;
        };
        let sql = st.sql.clone();
        let snap = self.snap.get().clone();
        let Some(g) = snap.config.mysql_group(&self.info.group) else {
            return Flow::Continue;
        };
        let Some(mut conn) = self.pinned.take() else {
            self.refuse(
                1,
                &ErrPacket::new(1421, "HY000", "The statement has no open cursor"),
            );
            return Flow::Continue;
        };
        let key = (conn.schema.clone(), sql);
        let Some(bid) = conn.lookup_stmt(&key).map(|s| s.id) else {
            self.pinned = Some(conn);
            self.refuse(
                1,
                &ErrPacket::new(1421, "HY000", "The statement has no open cursor"),
            );
            return Flow::Continue;
        };
        let mut body = payload.to_vec();
        body[1..5].copy_from_slice(&bid.to_le_bytes());
        conn.queue_command(&body);
        match self
            .forward(&mut conn, RespKind::Fetch, None, g, true)
            .await
        {
            Ok(_) => {
                self.release(conn);
                Flow::Continue
            }
            Err(e) => {
                pool::discard(conn);
                self.refuse(1, &e.to_err_packet());
                Flow::Close
            }
        }
    }
}

/// The server of `t` called `name` (the primary first).
fn which_named(t: &GroupTargets, name: &str) -> Option<Which> {
    if *t.primary.name == *name {
        return Some(Which::Primary);
    }
    t.replicas
        .iter()
        .position(|(x, _)| *x.name == *name)
        .map(Which::Replica)
}

/// Whether a statement may be sent to the replica a `furrow:backend=NAME` hint names: reads (and
/// replayable session statements, `is_read`), a read-only transaction, and ending a transaction.
/// Anything that may write would change a replica behind replication's back (or pin the session
/// there, so that its next writes would follow).
fn replica_may_run(c: &Classified, is_read: bool) -> bool {
    is_read
        || matches!(c.kind, StmtKind::Commit | StmtKind::Rollback)
        || (c.kind == StmtKind::Begin && c.flags & router::sql::classify::flags::READ_ONLY_TXN != 0)
}

/// `SET` / `USE` and friends are allowed for replica_only users (they only touch the session).
fn is_session_only(c: &Classified) -> bool {
    matches!(
        c.kind,
        StmtKind::Set
            | StmtKind::Use
            | StmtKind::Empty
            | StmtKind::Begin
            | StmtKind::Commit
            | StmtKind::Rollback
    ) && c.flags & router::sql::classify::flags::GLOBAL_SET == 0
}

/// Whether a statement may change data (for read-your-writes): not a plain read, not one that
/// only touches the session, not a transaction boundary (the writes inside count themselves).
fn is_write(c: &Classified) -> bool {
    !c.is_read()
        && !matches!(
            c.kind,
            StmtKind::Set
                | StmtKind::Use
                | StmtKind::Empty
                | StmtKind::Begin
                | StmtKind::Commit
                | StmtKind::Rollback
                | StmtKind::Savepoint
        )
}

fn is_plain_last_insert_id(sql: &str) -> bool {
    digest(sql).text == "SELECT LAST_INSERT_ID ()"
}

fn host_allowed(u: &User, ip: IpAddr) -> bool {
    u.hosts.is_empty() || u.hosts.iter().any(|n| n.contains(ip))
}

/// Whether `u`'s stored hashes can check an answer made with `plugin`.
fn can_check(u: &User, plugin: &str) -> bool {
    match plugin {
        "mysql_native_password" => u.native_hash.is_some(),
        "caching_sha2_password" => u.sha256_hash.is_some(),
        _ => false,
    }
}

fn verify(u: &User, plugin: &str, response: &[u8], scramble: &[u8; 20]) -> bool {
    match plugin {
        "caching_sha2_password" => match &u.sha256_hash {
            Some(h) => {
                auth::verify_caching_sha2(response, scramble, h)
                    || (response.is_empty() && *h == auth::caching_sha2_hash(b""))
            }
            None => false,
        },
        _ => match &u.native_hash {
            Some(h) => {
                auth::verify_native_password(response, scramble, h)
                    || (response.is_empty() && *h == auth::native_password_hash(b""))
            }
            None => false,
        },
    }
}

/// Spawns `KILL QUERY` for a backend connection whose statement timed out.
fn kill_query(conn: &BackendConn, g: &MysqlGroup) {
    let (server, address, id) = (conn.server.clone(), conn.address.clone(), conn.thread_id);
    let (user, pw, ct) = (g.user.clone(), g.password.clone(), g.connect_timeout);
    let tls = g.tls.clone();
    tokio::task::spawn_local(async move {
        // Bounded: a stalled server must not keep this task (and its socket) forever.
        let _ = tokio::time::timeout(ct * 2, async move {
            if let Ok(mut c) =
                BackendConn::connect(server, address, &user, &pw, ct, tls.as_ref()).await
            {
                let _ = c.query_rows(&format!("KILL QUERY {id}")).await;
            }
        })
        .await;
    });
}
