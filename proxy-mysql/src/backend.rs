//! Backend connections: login with the group's credentials (codec's sans-IO `ClientLogin` driven
//! over the socket), commands, and response forwarding: codec's `ReplyTracker` finds where a
//! response ends (result sets, multi-results, prepare-OK) and what it says (status flags, affected
//! rows, last insert id, errors) without copying or allocating; this file only moves the bytes.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::mysql::consts::capability::*;
use codec::mysql::reply::Step;
use codec::mysql::{
    ClientLogin, LoginConfig, LoginError, LoginStep, MysqlError, ReplyTracker, Seen,
};
use router::config::BackendTls;
use tokio::net::TcpStream;

use crate::conn::{Conn, ConnError};
use crate::error::ProxyError;

/// Capabilities Furrow asks of backends (codec's [`PROXY_BACKEND`]: no DEPRECATE_EOF, no
/// CONNECT_WITH_DB, no LOCAL_FILES; the proxy forwards result sets verbatim to clients it offered
/// the matching set to).
pub const BACKEND_CAPS: u32 = PROXY_BACKEND;

pub use crate::vars::BACKEND_COLLATION;

/// Largest payload accepted from a backend (a row may be big; MariaDB's max_allowed_packet max).
pub const BACKEND_MAX_PAYLOAD: usize = 1 << 30;

/// A statement prepared on one backend connection.
#[derive(Debug, Clone)]
pub struct CachedStmt {
    /// The backend's statement id.
    pub id: u32,
    /// Parameter count.
    pub params: u16,
    /// Result column count.
    pub columns: u16,
    /// For eviction: a use counter value.
    pub last_use: u64,
    /// On a connection with cached metadata ([`BackendConn::cache_meta`]): the column
    /// definitions the server last sent this connection for the statement (raw packets), which
    /// it leaves out of an execution's reply while they hold.
    pub defs: Option<Rc<[u8]>>,
    /// The parameter types the server statement last received (an execution with
    /// new-params-bound 1 that succeeded): an execution of the same types may leave them out,
    /// as the client's own driver does.
    pub types: Option<Bytes>,
}

/// A statement's text with its hash, computed once when the client prepares it: the key of the
/// backend connections' statement caches is looked up on every execution, and hashing the text
/// there (foldhash over the whole statement, then comparing it byte by byte) was ~300
/// instructions of a prepared point select's ~8,350 (callgrind).
#[derive(Debug, Clone)]
pub struct StmtText {
    /// The statement as the client prepared it.
    pub text: Rc<str>,
    hash: u64,
}

impl StmtText {
    /// `text` with its hash.
    pub fn new(text: Rc<str>) -> StmtText {
        use std::hash::BuildHasher;
        // A fixed seed: the hash only spreads a connection's own statements over its table
        // (bounded by `STMT_CACHE_MAX`), it is never exposed to choose buckets for an attacker.
        let hash = foldhash::fast::FixedState::with_seed(0x5eed_f077).hash_one(&*text);
        StmtText { text, hash }
    }
}

/// The key of [`BackendConn::stmts`]: the connection's schema when the statement was prepared
/// there, and the statement. Hashed by the text's precomputed hash alone (the schema only tells
/// apart the same text prepared under two schemas, rare and settled by the comparison); compared
/// by pointer first (the session's `Rc`s are the ones the key holds).
#[derive(Debug, Clone)]
pub struct StmtKey {
    /// The connection's schema.
    pub schema: Option<Rc<str>>,
    /// The statement.
    pub sql: StmtText,
}

impl StmtKey {
    /// The key of `sql` prepared under `schema`.
    pub fn new(schema: Option<Rc<str>>, sql: &StmtText) -> StmtKey {
        StmtKey {
            schema,
            sql: sql.clone(),
        }
    }
}

impl PartialEq for StmtKey {
    fn eq(&self, o: &StmtKey) -> bool {
        fn same(a: &Rc<str>, b: &Rc<str>) -> bool {
            Rc::ptr_eq(a, b) || **a == **b
        }
        self.sql.hash == o.sql.hash
            && same(&self.sql.text, &o.sql.text)
            && match (&self.schema, &o.schema) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for StmtKey {}

impl std::hash::Hash for StmtKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.sql.hash);
    }
}

/// Passes [`StmtKey`]'s precomputed hash through (it is one already).
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called by `StmtKey`; anything else still spreads.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Largest column-definition block kept for one statement (a few thousand columns of any name);
/// a statement whose definitions are larger leaves its connection to be closed after the reply
/// (see [`Outcome::defs`]): a connection never holds a statement whose metadata it cannot replay.
pub const MAX_STMT_DEFS: usize = 512 * 1024;

/// Most statements cached per backend connection; the least recently used is closed beyond it.
pub const STMT_CACHE_MAX: usize = 256;

/// One logged-in backend connection.
pub struct BackendConn {
    /// Framed socket.
    pub conn: Conn,
    /// Server name in its group.
    pub server: Rc<str>,
    /// `host:port`.
    pub address: Rc<str>,
    /// Backend connection (thread) id, for KILL QUERY.
    pub thread_id: u32,
    /// Current schema on the backend (None: none, unless `schema_unknown`).
    pub schema: Option<Rc<str>>,
    /// Set after a reset that may have kept a schema: the current schema is not known.
    pub schema_unknown: bool,
    /// The login scramble (COM_CHANGE_USER answers with it).
    pub scramble: Vec<u8>,
    /// Replayed session-variable state (None: the backend defaults).
    pub vars: Option<Rc<crate::vars::VarState>>,
    /// Statements prepared here, by schema and text (looked up per execution: see [`StmtText`]).
    pub stmts:
        std::collections::HashMap<StmtKey, CachedStmt, std::hash::BuildHasherDefault<KeyHasher>>,
    /// MariaDB's MARIADB_CLIENT_CACHE_METADATA was negotiated: result sets' column counts carry
    /// a metadata-follows byte, and an execution whose columns did not change since this
    /// connection last got them comes without their definitions. [`BackendConn::forward`] gives
    /// clients the classic reply (the byte removed, the definitions put back from the statement's
    /// [`CachedStmt::defs`]); the server saves building and sending them on every execution.
    pub cache_meta: bool,
    /// Use counter for the statement cache.
    pub stmt_clock: u64,
    /// When it was last returned to the pool.
    pub last_used: Instant,
    /// Set when the connection must not be reused (I/O error, timeout, unknown state).
    pub broken: bool,
    /// The pool it belongs to (checked in there); empty for connections outside pools.
    pub home: std::rc::Weak<PoolHome>,
}

/// The part of a pool a connection goes back to (see `pool::checkin`): kept here, below the
/// pool, so that a connection can name its pool without this module importing the pool's.
pub struct PoolHome {
    /// Idle connections. Boxed: a connection moves between the pool, sessions and futures on
    /// every statement, and a pointer moves for free where the struct (≈ 270 bytes) is a copy.
    #[allow(clippy::vec_box)] // on purpose: see above
    pub idle: std::cell::RefCell<Vec<Box<BackendConn>>>,
    /// Open connections (idle and in use).
    pub open: std::cell::Cell<u32>,
    /// Checkouts waiting for a connection to come back.
    pub waiters: tokio::sync::Notify,
}

/// What a forwarded (or swallowed) response said.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// ERR code, if the (last) result was an error.
    pub err: Option<u16>,
    /// The ERR packet payload, if any (for swallowed responses).
    pub err_payload: Option<Bytes>,
    /// Status flags from the last OK/EOF.
    pub status: u16,
    /// Affected rows (last OK).
    pub affected: u64,
    /// Last insert id (last non-zero OK).
    pub last_insert_id: u64,
    /// Rows seen.
    pub rows: u64,
    /// Bytes of the response.
    pub bytes: u64,
    /// For COM_STMT_PREPARE: (statement id, columns, params).
    pub prepared: Option<(u32, u16, u16)>,
    /// Sequence id of the last packet of the response.
    pub last_seq: u8,
    /// On a connection with cached metadata, the column definitions (raw packets) a
    /// COM_STMT_PREPARE's reply or an execution's reply with metadata carried: what the
    /// connection now holds for the statement. When they were larger than [`MAX_STMT_DEFS`] the
    /// connection is marked broken instead (it must not be asked to execute the statement again).
    pub defs: Option<Rc<[u8]>>,
    /// An execution's reply came without definitions and the connection's were put back for
    /// the client: it now holds those.
    pub defs_put_back: bool,
}

/// What [`BackendConn::forward`] knows of a COM_STMT_EXECUTE's column definitions.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecMeta<'a> {
    /// The statement's definitions as this connection holds them ([`CachedStmt::defs`]).
    pub conn: Option<&'a Rc<[u8]>>,
    /// As the client holds them (when it caches metadata).
    pub client: Option<&'a Rc<[u8]>>,
}

/// What kind of response a command gets (codec's, so the tracker and the proxy agree).
pub use codec::mysql::ReplyKind as RespKind;

/// A reply read by [`BackendConn::read_buffered`].
#[derive(Debug)]
pub(crate) enum Buffered {
    /// An OK (no result set).
    Ok(codec::mysql::OkSummary),
    /// The server's ERR.
    Err(codec::mysql::ErrPacket),
    /// A result set, whose definitions and rows went to the callbacks.
    Rows,
}

/// Where [`BackendConn::read_buffered`] puts a result set's definitions and rows.
pub(crate) trait ResultSink {
    /// A column definition payload (`Err`: it does not decode; the reply is abandoned).
    fn column(&mut self, payload: Bytes) -> Result<(), MysqlError>;
    /// A row payload of a result with `columns` columns (`Err`: it does not decode).
    fn row(&mut self, payload: Bytes, columns: usize) -> Result<(), MysqlError>;
}

/// Column names and text rows as strings (health checks, admin queries).
#[derive(Default)]
struct TextRows {
    names: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl ResultSink for TextRows {
    fn column(&mut self, payload: Bytes) -> Result<(), MysqlError> {
        let c = codec::mysql::ColumnDefinition::decode(payload)?;
        self.names
            .push(String::from_utf8_lossy(&c.name).into_owned());
        Ok(())
    }

    fn row(&mut self, payload: Bytes, columns: usize) -> Result<(), MysqlError> {
        let row = codec::mysql::TextRow::decode(payload, columns)?;
        self.rows.push(
            row.cells
                .into_iter()
                .map(|c| c.map(|b| String::from_utf8_lossy(&b).into_owned()))
                .collect(),
        );
        Ok(())
    }
}

impl BackendConn {
    /// Connects and logs in with `user`/`password` (mysql_native_password, caching_sha2's fast
    /// path, and its full authentication over TLS; see `codec::mysql::login`).
    /// With `tls` (the group's), the connection switches to TLS after the server's handshake and
    /// the server's certificate is verified; a server that does not offer TLS is an error.
    /// Every failure is [`ProxyError::BackendConnect`] (nothing was sent: retryable), made here
    /// from the operator-readable reason of the steps below.
    pub async fn connect(
        server: Rc<str>,
        address: Rc<str>,
        user: &str,
        password: &str,
        timeout: Duration,
        tls: Option<&BackendTls>,
    ) -> Result<BackendConn, ProxyError> {
        let fut = Self::connect_inner(server.clone(), address.clone(), user, password, tls);
        let reason = match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(reason)) => reason,
            Err(_) => format!("connect timed out after {} ms", timeout.as_millis()),
        };
        Err(ProxyError::BackendConnect {
            server: server.to_string(),
            address: address.to_string(),
            reason,
        })
    }

    /// The login itself; `Err` is the reason only (see [`BackendConn::connect`]).
    async fn connect_inner(
        server: Rc<str>,
        address: Rc<str>,
        user: &str,
        password: &str,
        tls: Option<&BackendTls>,
    ) -> Result<BackendConn, String> {
        let stream = TcpStream::connect(&*address)
            .await
            .map_err(|e| e.to_string())?;
        let mut conn = Conn::new(stream, BACKEND_MAX_PAYLOAD);
        let mut login = ClientLogin::new(login_config(user, password, tls.is_some()));
        loop {
            let p = conn.read_packet().await.map_err(|e| e.to_string())?;
            let mut step = login
                .on_packet(p.last_seq, p.payload)
                .map_err(|e| login_error(e, &address))?;
            if let LoginStep::StartTls(o) = step {
                let tls = tls.ok_or("TLS asked for without a configuration")?;
                conn.queue(o.seq, &o.payload);
                conn.flush().await.map_err(|e| e.to_string())?;
                let name = tls
                    .name_for(&address)
                    .ok_or_else(|| format!("no name to verify {address}'s certificate for"))?;
                conn.connect_tls(tls.config.clone(), name)
                    .await
                    .map_err(|e| format!("TLS to {address}: {e}"))?;
                step = login.tls_started().map_err(|e| login_error(e, &address))?;
            }
            match step {
                LoginStep::Send(o) | LoginStep::StartTls(o) => {
                    conn.queue(o.seq, &o.payload);
                    conn.flush().await.map_err(|e| e.to_string())?;
                }
                LoginStep::Read => {}
                LoginStep::Done => break,
            }
        }
        let thread_id = login.greeting().map_or(0, |hs| hs.connection_id);
        let scramble = login.nonce().to_vec();
        let cache_meta = login.mariadb_capabilities() & MARIADB_CLIENT_CACHE_METADATA != 0;
        Ok(BackendConn {
            conn,
            server,
            address,
            thread_id,
            schema: None,
            schema_unknown: false,
            scramble,
            vars: None,
            stmts: Default::default(),
            cache_meta,
            stmt_clock: 0,
            last_used: Instant::now(),
            broken: false,
            home: std::rc::Weak::new(),
        })
    }

    /// Logs in again with COM_CHANGE_USER (no schema): a fresh session on the same socket, the only
    /// way to unselect the current database. Session state and prepared statements are gone after.
    /// Any failure leaves the connection in an unknown state: [`ProxyError::BackendLost`].
    pub async fn change_user(&mut self, user: &str, password: &str) -> Result<(), ProxyError> {
        let config = login_config(user, password, self.conn.stream.is_tls());
        let (mut login, payload) = ClientLogin::change_user(
            config,
            BACKEND_CAPS,
            &self.scramble,
            self.conn.stream.is_tls(),
        );
        self.queue_command(&payload);
        self.flush_or_lost().await?;
        loop {
            let r = self.read_or_lost().await?;
            match login.on_packet(r.last_seq, r.payload) {
                Ok(LoginStep::Done) => break,
                Ok(LoginStep::Read) => {}
                Ok(LoginStep::Send(o) | LoginStep::StartTls(o)) => {
                    self.conn.queue(o.seq, &o.payload);
                    self.flush_or_lost().await?;
                }
                Err(e) => {
                    self.broken = true;
                    return Err(ProxyError::lost(
                        &self.server,
                        format_args!("COM_CHANGE_USER: {e}"),
                    ));
                }
            }
        }
        self.scramble = login.nonce().to_vec();
        self.vars = None;
        self.schema = None;
        self.schema_unknown = false;
        self.stmts.clear();
        Ok(())
    }

    /// Sends a command payload (sequence id 0).
    pub fn queue_command(&mut self, payload: &[u8]) {
        self.conn.queue(0, payload);
    }

    /// Sends a command payload made of `parts` (sequence id 0), written straight into the
    /// connection's buffer: no payload assembled in between (the rare payload of 16 MiB or more,
    /// which travels in several packets, is assembled first).
    pub fn queue_command_parts(&mut self, parts: &[&[u8]]) {
        encode_command_parts(parts, &mut self.conn.wbuf);
    }

    /// Sends a command and reads its response without forwarding it.
    pub async fn command(&mut self, payload: &[u8], kind: RespKind) -> Result<Outcome, ProxyError> {
        self.queue_command(payload);
        if let Err(e) = self.conn.flush().await {
            return Err(ProxyError::lost(&self.server, e));
        }
        self.forward(kind, None, None, u64::MAX, None).await
    }

    /// Runs a text query and returns its column names and rows (for health checks). The server's
    /// ERR is [`ProxyError::BackendRefused`] (the connection stays usable); a failed connection
    /// [`ProxyError::BackendLost`].
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<(Vec<String>, Vec<Vec<Option<String>>>), ProxyError> {
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(codec::mysql::consts::com::QUERY);
        payload.extend_from_slice(sql.as_bytes());
        self.queue_command(&payload);
        self.flush_or_lost().await?;
        let mut sink = TextRows::default();
        let reply = self.read_buffered(&mut sink).await?;
        match reply {
            Buffered::Ok(_) | Buffered::Rows => Ok((sink.names, sink.rows)),
            Buffered::Err(e) => Err(ProxyError::BackendRefused(e)),
        }
    }

    /// Flushes the queued commands; a failure is [`ProxyError::BackendLost`] and marks the
    /// connection broken.
    async fn flush_or_lost(&mut self) -> Result<(), ProxyError> {
        self.conn.flush().await.map_err(|e| {
            self.broken = true;
            ProxyError::lost(&self.server, e)
        })
    }

    /// Reads one packet; a failure is [`ProxyError::BackendLost`] and marks the connection broken.
    async fn read_or_lost(&mut self) -> Result<codec::mysql::Packet, ProxyError> {
        match self.conn.read_packet().await {
            Ok(p) => Ok(p),
            Err(e) => {
                self.broken = true;
                Err(ProxyError::lost(&self.server, e))
            }
        }
    }

    /// Reads the reply to one COM_QUERY through the reply tracker, handing each column
    /// definition and each row (with the column count) to `sink` as it arrives. Used where
    /// a reply is consumed rather than forwarded (health checks, shard units). A second result
    /// (multi-statement), a LOCAL INFILE request or a malformed packet is an error, and so is an
    /// error of a callback: [`ProxyError::BackendLost`], with the connection marked broken (its
    /// state is unknown).
    pub(crate) async fn read_buffered(
        &mut self,
        sink: &mut dyn ResultSink,
    ) -> Result<Buffered, ProxyError> {
        match self.read_buffered_inner(sink).await {
            Ok(b) => Ok(b),
            Err(reason) => {
                self.broken = true;
                Err(ProxyError::lost(&self.server, reason))
            }
        }
    }

    /// [`BackendConn::read_buffered`]'s loop; `Err` is the reason only.
    async fn read_buffered_inner(
        &mut self,
        sink: &mut dyn ResultSink,
    ) -> Result<Buffered, BufferedError> {
        use BufferedError::Unexpected;
        let mut tracker = ReplyTracker::for_kind(RespKind::ResultSet, BACKEND_CAPS)
            .with_cache_metadata(self.cache_meta);
        let mut columns = 0usize;
        let mut eofs = 0u8;
        loop {
            let p = self.conn.read_packet().await?;
            let fed = tracker.advance(&p.payload)?;
            let more = fed.step == Step::More;
            match fed.seen {
                Seen::ColumnCount(n) if columns == 0 => columns = n as usize,
                Seen::Definition => sink.column(p.payload)?,
                Seen::Row => sink.row(p.payload, columns)?,
                // The EOF after the definitions, then the one after the rows.
                Seen::Eof { .. } if eofs == 0 => eofs = 1,
                Seen::Eof { .. } | Seen::Ok(_) if more => {
                    return Err(Unexpected("unexpected multi-result"));
                }
                Seen::Eof { .. } => return Ok(Buffered::Rows),
                Seen::Ok(ok) => return Ok(Buffered::Ok(ok)),
                Seen::Err { .. } => {
                    return Ok(Buffered::Err(codec::mysql::ErrPacket::decode(p.payload)?));
                }
                Seen::LocalInfile => return Err(Unexpected("asked for a LOCAL INFILE")),
                Seen::ColumnCount(_)
                | Seen::ColumnCountCached(_)
                | Seen::PrepareOk { .. }
                | Seen::Other => {
                    return Err(Unexpected("unexpected packet in a query reply"));
                }
            }
            if !more {
                return Ok(Buffered::Rows);
            }
        }
    }

    /// Reads one response, copying it to `client` when given (rewriting a prepare-OK's statement id to
    /// `client_stmt_id`). Stops with [`ProxyError::ResultTooLarge`] past `max_bytes` (the backend connection is
    /// then in an unknown state and must be dropped).
    ///
    /// Cached metadata (MariaDB's MARIADB_CLIENT_CACHE_METADATA) on either side: each column
    /// count is given the form the client negotiated (with or without the metadata-follows
    /// byte), and an execution's reply without definitions that the client does not hold
    /// (a client without cached metadata, or one that holds other definitions for the statement
    /// than this connection) gets the connection's definitions put back (`exec.conn`, the
    /// statement's [`CachedStmt::defs`]), every later packet's sequence id moved on by their
    /// number ([`Outcome::defs_put_back`]). The definitions a prepare's or an execution's reply
    /// carries are returned in [`Outcome::defs`]. `exec` is `Some` exactly for a
    /// COM_STMT_EXECUTE; a reply without definitions that are not known is an error.
    pub async fn forward(
        &mut self,
        kind: RespKind,
        mut client: Option<&mut Conn>,
        client_stmt_id: Option<u32>,
        max_bytes: u64,
        exec: Option<ExecMeta<'_>>,
    ) -> Result<Outcome, ProxyError> {
        let mut out = Outcome::default();
        let mut tracker =
            ReplyTracker::for_kind(kind, BACKEND_CAPS).with_cache_metadata(self.cache_meta);
        // Column definitions are captured from a prepare's reply (after its parameters') and from
        // the first result set of an execution that carries them, on cached-metadata connections.
        let capture = self.cache_meta && (kind == RespKind::Prepare || exec.is_some());
        let mut defs: Option<Vec<u8>> = None;
        // Definitions still to skip before the captured ones (a prepare's parameters).
        let mut skip_defs = 0u32;
        let mut results = 0u32;
        // How far sequence ids move after definitions were put back.
        let mut shift = 0u8;
        loop {
            let total = match self.conn.peek_raw().await {
                Ok(n) => n,
                Err(e) => return Err(ProxyError::lost(&self.server, e)),
            };
            let raw = &self.conn.rbuf[..total];
            let seq = raw[3];
            let fed = match tracker.advance(&raw[4..]) {
                Ok(fed) => fed,
                Err(e) => {
                    self.broken = true;
                    return Err(ProxyError::lost(&self.server, ConnError::Protocol(e)));
                }
            };
            let mut rewrite = false;
            match fed.seen {
                Seen::Row => out.rows += 1,
                Seen::Ok(ok) => {
                    out.affected = ok.affected_rows;
                    if ok.last_insert_id != 0 {
                        out.last_insert_id = ok.last_insert_id;
                    }
                    out.status = ok.status;
                }
                Seen::Eof { status } => out.status = status,
                Seen::Err { code } => {
                    out.err = Some(code);
                    out.err_payload = Some(Bytes::copy_from_slice(&raw[4..]));
                }
                Seen::PrepareOk {
                    statement_id,
                    columns,
                    params,
                } => {
                    out.prepared = Some((statement_id, columns, params));
                    rewrite = client_stmt_id.is_some();
                    if capture && columns > 0 {
                        skip_defs = u32::from(params);
                        defs = Some(Vec::new());
                    }
                }
                Seen::Definition => {
                    if let Some(d) = defs.as_mut() {
                        if skip_defs > 0 {
                            skip_defs -= 1;
                        } else if d.len() + total <= MAX_STMT_DEFS {
                            // Kept with sequence id 0: numbered where they are put back, and
                            // equal whichever reply they came in.
                            d.extend_from_slice(&raw[..3]);
                            d.push(0);
                            d.extend_from_slice(&raw[4..]);
                        } else {
                            // Too large to keep: the connection goes once this reply is read.
                            defs = None;
                            self.broken = true;
                        }
                    }
                }
                Seen::ColumnCount(_) | Seen::ColumnCountCached(_) => {
                    results += 1;
                    if let Some(d) = defs.take() {
                        // A later result set: the first one's definitions are complete.
                        out.defs = Some(Rc::from(d));
                    } else if capture
                        && results == 1
                        && kind == RespKind::ResultSet
                        && matches!(fed.seen, Seen::ColumnCount(_))
                    {
                        defs = Some(Vec::new());
                    }
                }
                Seen::LocalInfile => {
                    return Err(ProxyError::lost(
                        &self.server,
                        ConnError::Protocol(codec::mysql::MysqlError::Malformed(
                            "backend asked for a LOCAL INFILE".into(),
                        )),
                    ));
                }
                Seen::Other => {}
            }
            out.bytes += total as u64;
            out.last_seq = seq.wrapping_add(shift);
            let count = matches!(fed.seen, Seen::ColumnCount(_) | Seen::ColumnCountCached(_));
            let client_cache = client.as_ref().is_some_and(|c| c.cache_meta);
            let client_skips = client.as_ref().is_some_and(|c| c.meta_skip);
            if count && (self.cache_meta || client_cache) {
                let cached = matches!(fed.seen, Seen::ColumnCountCached(_));
                // Only an execution's first result set can be the statement's known columns.
                let put_back = match exec {
                    Some(ExecMeta { conn: Some(d), .. }) if cached && results == 1 => {
                        let held = exec.and_then(|e| e.client);
                        let same = held.is_some_and(|h| Rc::ptr_eq(h, d) || h[..] == d[..]);
                        (!(client_skips && same)).then(|| d.clone())
                    }
                    _ if cached => {
                        self.broken = true;
                        return Err(ProxyError::lost(
                            &self.server,
                            "a result without column definitions for a statement whose \
                             definitions are not known",
                        ));
                    }
                    _ => None,
                };
                if let Some(c) = client.as_deref_mut() {
                    if client_cache && self.cache_meta && put_back.is_none() {
                        // Both sides cache metadata and the client holds these columns.
                        c.wbuf.extend_from_slice(raw);
                        let at = c.wbuf.len() - total + 3;
                        c.wbuf[at] = seq.wrapping_add(shift);
                    } else {
                        // The count without the connection's metadata-follows byte, with the
                        // client's (1: definitions follow) when it caches metadata.
                        let classic = if self.cache_meta {
                            &raw[4..total - 1]
                        } else {
                            &raw[4..total]
                        };
                        let len = (classic.len() + usize::from(client_cache)) as u32;
                        c.wbuf.extend_from_slice(&len.to_le_bytes()[..3]);
                        c.wbuf.extend_from_slice(&[seq.wrapping_add(shift)]);
                        c.wbuf.extend_from_slice(classic);
                        if client_cache {
                            c.wbuf.extend_from_slice(&[1]);
                        }
                        if let Some(d) = &put_back {
                            let n = put_defs(&mut c.wbuf, d, seq.wrapping_add(shift));
                            shift = shift.wrapping_add(n);
                            out.last_seq = seq.wrapping_add(shift);
                            out.defs_put_back = true;
                        }
                    }
                }
            } else if let Some(c) = client.as_deref_mut() {
                let start = c.wbuf.len();
                c.wbuf.extend_from_slice(raw);
                if shift != 0 {
                    c.wbuf[start + 3] = seq.wrapping_add(shift);
                }
                if rewrite
                    && total >= 13
                    && let Some(id) = client_stmt_id
                {
                    c.wbuf[start + 5..start + 9].copy_from_slice(&id.to_le_bytes());
                }
            }
            self.conn.consume(total);
            if matches!(fed.step, Step::Done(_)) {
                if let Some(d) = defs.take() {
                    out.defs = Some(Rc::from(d));
                }
                return Ok(out);
            }
            if out.bytes > max_bytes {
                self.broken = true;
                return Err(ProxyError::ResultTooLarge {
                    limit: max_bytes,
                    next_seq: out.last_seq.wrapping_add(1),
                });
            }
            // The complete rows already read behind this one go to the client in one copy (up to
            // the result limit and the flush mark; what stops the run is for the loop above).
            if matches!(fed.seen, Seen::Row)
                && let Some(c) = client.as_deref_mut()
            {
                let room = usize::try_from(max_bytes - out.bytes)
                    .unwrap_or(usize::MAX)
                    .min(RELAY_FLUSH_AT.saturating_sub(c.wbuf.len()));
                let run = tracker.row_run(&self.conn.rbuf, room);
                if run.rows > 0 {
                    let start = c.wbuf.len();
                    c.wbuf.extend_from_slice(&self.conn.rbuf[..run.len]);
                    if shift != 0 {
                        shift_seqs(&mut c.wbuf[start..], shift);
                    }
                    self.conn.consume(run.len);
                    out.rows += run.rows;
                    out.bytes += run.len as u64;
                    out.last_seq = run.last_seq.wrapping_add(shift);
                }
            }
            if let Some(c) = client.as_deref_mut()
                && c.wbuf.len() >= RELAY_FLUSH_AT
            {
                c.flush().await.map_err(ProxyError::client)?;
            }
        }
    }

    /// Records a prepared statement in the cache; returns a statement id to close: the one it
    /// replaces (the same text prepared again here, as each client's COM_STMT_PREPARE does) or
    /// the least recently used one past [`STMT_CACHE_MAX`]. Without that, every client that
    /// prepares a statement the connection already has would leave one more statement open on
    /// the server (up to its `max_prepared_stmt_count`).
    pub fn cache_stmt(
        &mut self,
        key: StmtKey,
        id: u32,
        params: u16,
        columns: u16,
        defs: Option<Rc<[u8]>>,
    ) -> Option<u32> {
        self.stmt_clock += 1;
        let old = self.stmts.insert(
            key,
            CachedStmt {
                id,
                params,
                columns,
                last_use: self.stmt_clock,
                defs,
                types: None,
            },
        );
        if let Some(old) = old
            && old.id != id
        {
            return Some(old.id);
        }
        if self.stmts.len() <= STMT_CACHE_MAX {
            return None;
        }
        let victim = self
            .stmts
            .iter()
            .min_by_key(|(_, s)| s.last_use)
            .map(|(k, s)| (k.clone(), s.id))?;
        self.stmts.remove(&victim.0);
        Some(victim.1)
    }

    /// Looks a cached statement up (and marks it used).
    pub fn lookup_stmt(&mut self, key: &StmtKey) -> Option<CachedStmt> {
        self.stmt_clock += 1;
        let clock = self.stmt_clock;
        let s = self.stmts.get_mut(key)?;
        s.last_use = clock;
        Some(s.clone())
    }

    /// Records the parameter types the server statement now holds (`None`: not known, after a
    /// failed execution that sent them).
    pub fn set_stmt_types(&mut self, key: &StmtKey, types: Option<Bytes>) {
        if let Some(s) = self.stmts.get_mut(key) {
            s.types = types;
        }
    }

    /// Records the column definitions an execution's reply carried for a cached statement (its
    /// columns changed: the server sends them again, then leaves them out while they hold).
    pub fn set_stmt_defs(&mut self, key: &StmtKey, defs: Rc<[u8]>) {
        if let Some(s) = self.stmts.get_mut(key) {
            s.defs = Some(defs);
        }
    }

    /// Queues COM_STMT_CLOSE for a backend statement id (no response).
    pub fn queue_stmt_close(&mut self, id: u32) {
        let mut p = [0u8; 5];
        p[0] = codec::mysql::consts::com::STMT_CLOSE;
        p[1..5].copy_from_slice(&id.to_le_bytes());
        self.queue_command(&p);
    }
}

/// A forwarded reply is written to the client once this much of it is queued.
const RELAY_FLUSH_AT: usize = 256 * 1024;

/// Moves the sequence id of every packet in `wire` (whole packets with their headers) on by
/// `shift`: the rows after definitions that were put back for the client.
fn shift_seqs(wire: &mut [u8], shift: u8) {
    let mut at = 0;
    while at + 4 <= wire.len() {
        let n = codec::mysql::payload_len(&wire[at..]);
        wire[at + 3] = wire[at + 3].wrapping_add(shift);
        at += 4 + n;
    }
}

/// Appends the definition packets `defs` (raw, as a reply carried them) after a column count sent
/// with sequence id `seq`, numbered on from it; returns how many were put.
fn put_defs(w: &mut bytes::BytesMut, defs: &[u8], seq: u8) -> u8 {
    let mut at = 0;
    let mut n = 0u8;
    while at + 4 <= defs.len() {
        let len = codec::mysql::payload_len(&defs[at..]);
        let end = (at + 4 + len).min(defs.len());
        n = n.wrapping_add(1);
        w.extend_from_slice(&defs[at..at + 3]);
        w.extend_from_slice(&[seq.wrapping_add(n)]);
        w.extend_from_slice(&defs[at + 4..end]);
        at = end;
    }
    n
}

/// Appends the command packet (sequence id 0) whose payload is `parts` one after the other, as
/// `encode_packet` of their concatenation does.
fn encode_command_parts(parts: &[&[u8]], w: &mut bytes::BytesMut) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len >= codec::mysql::MAX_FRAGMENT {
        codec::mysql::encode_packet(0, &parts.concat(), w);
        return;
    }
    w.reserve(4 + len);
    w.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
    w.extend_from_slice(&[0]);
    for p in parts {
        w.extend_from_slice(p);
    }
}

/// The backend login as the proxy makes it (no schema: sessions select theirs), for a new
/// connection and for COM_CHANGE_USER alike.
fn login_config(user: &str, password: &str, tls: bool) -> LoginConfig {
    LoginConfig {
        user: user.to_string(),
        password: password.as_bytes().to_vec(),
        database: None,
        capabilities: BACKEND_CAPS,
        charset: BACKEND_COLLATION,
        max_packet_size: BACKEND_MAX_PAYLOAD as u32,
        tls,
        // Executions of prepared statements then come without column definitions the connection
        // already has (MariaDB 10.6+; see `BackendConn::cache_meta`).
        mariadb_capabilities: MARIADB_CLIENT_CACHE_METADATA,
    }
}

/// Why [`BackendConn::read_buffered`] gave up (it becomes [`ProxyError::BackendLost`] in one
/// place).
#[derive(Debug, thiserror::Error)]
enum BufferedError {
    /// The socket or its framing failed.
    #[error("{0}")]
    Conn(#[from] ConnError),
    /// A packet does not decode.
    #[error("{0}")]
    Malformed(#[from] MysqlError),
    /// A packet a single-result query reply cannot have.
    #[error("{0}")]
    Unexpected(&'static str),
}

/// A backend login failure as the operator reads it (the group's TLS requirement and the
/// backend account's plugin are named).
fn login_error(e: LoginError, address: &str) -> String {
    match e {
        LoginError::NoTls => {
            format!("{address} does not offer TLS, and the group's `tls` requires it")
        }
        LoginError::FullAuthNeedsTls => "caching_sha2_password full authentication is not \
                                         supported for backends without TLS; use TLS or \
                                         mysql_native_password for the backend account"
            .into(),
        other => other.to_string(),
    }
}

/// Bringing a pooled connection into a session's replayable state. One implementation for the
/// read/write-split session and the sharding executor, so both reset, replay and select schemas
/// the same way.
impl BackendConn {
    /// Makes the connection's replayed `SET`s equal to `want`: nothing when they already are, only
    /// the missing tail when the connection's are a prefix, else COM_RESET_CONNECTION and a full
    /// replay. A refused step marks the connection broken.
    pub(crate) async fn sync_vars(
        &mut self,
        want: Option<&Rc<crate::vars::VarState>>,
    ) -> Result<(), ProxyError> {
        use crate::error::errs;
        use codec::mysql::consts::com;
        if self.vars_match(want) {
            return Ok(());
        }
        let prefix = match (&self.vars, want) {
            (None, _) => true,
            (Some(a), Some(b)) => b.sets.starts_with(&a.sets),
            (Some(_), None) => false,
        };
        if !prefix {
            let o = self
                .command(&[com::RESET_CONNECTION], RespKind::Single)
                .await?;
            if o.err.is_some() {
                self.broken = true;
                return Err(ProxyError::Internal(errs::internal(
                    "backend refused COM_RESET_CONNECTION",
                )));
            }
            self.vars = None;
            self.schema = None;
            self.schema_unknown = true;
            self.stmts.clear();
        }
        let from = self.vars.as_ref().map_or(0, |v| v.sets.len());
        if let Some(want) = want {
            for s in want.sets.iter().skip(from) {
                let mut p = Vec::with_capacity(s.len() + 1);
                p.push(com::QUERY);
                p.extend_from_slice(s.as_bytes());
                let o = self.command(&p, RespKind::ResultSet).await?;
                if let Some(payload) = o.err_payload {
                    self.broken = true;
                    return Err(ProxyError::Refused(
                        codec::mysql::ErrPacket::decode(payload)
                            .unwrap_or_else(|_| errs::internal("replaying session state failed")),
                    ));
                }
            }
        }
        self.vars = want.cloned();
        Ok(())
    }

    /// Selects `schema` as the default database unless it already is (COM_INIT_DB).
    /// Whether the connection's replayed session state is `want` (nothing to send).
    #[inline]
    pub(crate) fn vars_match(&self, want: Option<&Rc<crate::vars::VarState>>) -> bool {
        match (&self.vars, want) {
            (None, None) => true,
            (Some(a), Some(b)) => Rc::ptr_eq(a, b) || **a == **b,
            _ => false,
        }
    }

    /// Whether [`Self::sync_vars`] with `want` and [`Self::use_schema`] with `schema` would send
    /// nothing: the connection can run a statement as it is.
    #[inline]
    pub(crate) fn in_state(&self, want: Option<&Rc<crate::vars::VarState>>, schema: &str) -> bool {
        !self.schema_unknown && self.schema.as_deref() == Some(schema) && self.vars_match(want)
    }

    pub(crate) async fn use_schema(&mut self, schema: &Rc<str>) -> Result<(), ProxyError> {
        use crate::error::errs;
        if self.schema.as_deref() == Some(&**schema) && !self.schema_unknown {
            return Ok(());
        }
        let mut p = Vec::with_capacity(schema.len() + 1);
        p.push(codec::mysql::consts::com::INIT_DB);
        p.extend_from_slice(schema.as_bytes());
        let o = self.command(&p, RespKind::Single).await?;
        if let Some(payload) = o.err_payload {
            return Err(ProxyError::Refused(
                codec::mysql::ErrPacket::decode(payload)
                    .unwrap_or_else(|_| errs::internal("COM_INIT_DB failed")),
            ));
        }
        self.schema = Some(schema.clone());
        self.schema_unknown = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use codec::mysql::{MAX_FRAGMENT, encode_packet};

    /// The statement cache's key: equal texts (whatever their `Rc`) under the same schema are one
    /// statement; another schema, or none, is another; the map finds it by the precomputed hash.
    #[test]
    fn statement_keys_match_by_text_and_schema() {
        let a = StmtText::new(Rc::from("SELECT c FROM t WHERE id=?"));
        let a2 = StmtText::new(Rc::from("SELECT c FROM t WHERE id=?"));
        let b = StmtText::new(Rc::from("SELECT c FROM t WHERE id=? "));
        let s1: Rc<str> = Rc::from("db1");
        let s1b: Rc<str> = Rc::from("db1");
        let s2: Rc<str> = Rc::from("db2");
        let key = |s: Option<&Rc<str>>, t: &StmtText| StmtKey::new(s.cloned(), t);
        assert!(key(Some(&s1), &a) == key(Some(&s1b), &a2));
        assert!(key(None, &a) == key(None, &a2));
        assert!(key(Some(&s1), &a) != key(Some(&s2), &a));
        assert!(key(Some(&s1), &a) != key(None, &a));
        assert!(key(None, &a) != key(None, &b));
        let mut m: std::collections::HashMap<
            StmtKey,
            u32,
            std::hash::BuildHasherDefault<KeyHasher>,
        > = Default::default();
        m.insert(key(Some(&s1), &a), 1);
        m.insert(key(Some(&s2), &a), 2);
        m.insert(key(None, &b), 3);
        assert_eq!(m.get(&key(Some(&s1b), &a2)), Some(&1));
        assert_eq!(m.get(&key(Some(&s2), &a2)), Some(&2));
        assert_eq!(m.get(&key(None, &a2)), None);
        assert_eq!(m.get(&key(None, &b)), Some(&3));
    }

    #[test]
    fn shift_seqs_moves_every_header() {
        let mut w = BytesMut::new();
        encode_packet(3, b"\x01a", &mut w);
        encode_packet(4, b"", &mut w);
        encode_packet(255, b"xyz", &mut w);
        shift_seqs(&mut w, 2);
        assert_eq!(&w[..], b"\x02\0\0\x05\x01a\0\0\0\x06\x03\0\0\x01xyz");
    }

    #[test]
    fn command_parts_encode_as_their_concatenation() {
        let big = vec![7u8; MAX_FRAGMENT];
        for parts in [
            vec![&[0x17u8][..], &[9, 0, 0, 0], &[0, 1, 0, 0, 0]],
            vec![&[][..], &[3], &[]],
            vec![],
            // At the fragment size and past it: several packets with growing sequence ids.
            vec![&big[..MAX_FRAGMENT - 1], &[1]],
            vec![&big[..], &[2, 3]],
        ] {
            let mut want = BytesMut::new();
            encode_packet(0, &parts.concat(), &mut want);
            let mut got = BytesMut::from(&b"before"[..]);
            encode_command_parts(&parts, &mut got);
            assert_eq!(&got[..6], b"before");
            assert!(got[6..] == want[..], "parts of {} bytes", want.len());
        }
    }
}
