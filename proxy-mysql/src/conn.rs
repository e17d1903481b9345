//! A framed MySQL connection: a socket with a read buffer (packets are parsed in place) and a write
//! buffer flushed once per response. The socket is plain TCP or TLS ([`Stream`]); TLS starts in the
//! middle of the connection phase (after the SSL request), so a connection is upgraded in place.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use codec::mysql::{ErrPacket, Packet, PacketDecoder, encode_packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A connection's socket: plain TCP, or TLS over it. An enum rather than a trait object or a
/// generic: the plain path costs one predictable branch per read and write, and a session keeps
/// one type whichever way its client connected.
pub enum Stream {
    /// Plain TCP (the hot path).
    Plain(TcpStream),
    /// TLS, server side (a client that sent the SSL request) or client side (a backend).
    Tls(Box<tokio_rustls::TlsStream<Prefixed>>),
    /// Between the SSL request and the end of the TLS handshake, or after a failed one.
    Closed,
}

/// A TCP socket with bytes already read from it put back in front: a client sends its TLS hello
/// right after the SSL request, so the read that took the request may have taken the start of the
/// hello too.
pub struct Prefixed {
    prefix: BytesMut,
    io: TcpStream,
}

impl Prefixed {
    /// `io`, whose next bytes are `prefix`.
    pub fn new(prefix: BytesMut, io: TcpStream) -> Self {
        Prefixed { prefix, io }
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.io
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection closed after a failed TLS handshake",
    )
}

impl Stream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(t) => Some(t.get_ref().0.tcp()),
            Stream::Closed => None,
        }
    }

    /// Whether an idle connection is still usable: nothing is readable on it (a readable idle
    /// connection means EOF, an error, or unsolicited bytes; all make it unusable). Never waits.
    /// Over TLS the check reads through TLS, so that records without application data (TLS 1.3
    /// session tickets) do not count as unsolicited bytes.
    pub fn is_idle_alive(&mut self) -> bool {
        match self {
            Stream::Plain(s) => {
                let mut b = [0u8; 1];
                matches!(s.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Tls(t) => {
                let mut b = [0u8; 1];
                let mut rb = ReadBuf::new(&mut b);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                matches!(
                    Pin::new(&mut **t).poll_read(&mut cx, &mut rb),
                    Poll::Pending
                )
            }
            Stream::Closed => false,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(t) => Pin::new(&mut **t).poll_write(cx, b),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

/// Framing failures.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Socket error or EOF.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Invalid framing or an over-cap packet.
    #[error("{0}")]
    Protocol(#[from] codec::mysql::MysqlError),
    /// The packet being received would take the listener's [`ClientBudget`] past its limit.
    #[error("client buffer budget of {limit} bytes exhausted")]
    BudgetExhausted {
        /// The budget's limit in bytes.
        limit: usize,
    },
}

/// Bytes of each client's read buffer that are never charged to a [`ClientBudget`]: ordinary
/// statements never touch the shared counter.
pub const FREE_PER_CLIENT: usize = 64 * 1024;

/// A budget for the bytes that the clients of one listener (on every executor) hold in packets
/// being received, beyond [`FREE_PER_CLIENT`] each: a few clients sending huge packets at once
/// cannot take the process's memory. A client's charge lasts until it asks for its next packet
/// (the previous one has been handled by then) or closes.
#[derive(Debug)]
pub struct ClientBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ClientBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        ClientBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn try_take(&self, n: usize) -> bool {
        let prev = self.used.fetch_add(n, Relaxed);
        if prev.saturating_add(n) > self.limit {
            self.used.fetch_sub(n, Relaxed);
            return false;
        }
        true
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Relaxed);
    }
}

/// Free space the first read of a connection offers; each read that fills all it was offered
/// doubles the next one's, up to [`MAX_READ`] (and never shrinks while the client is busy). A
/// client sending short statements keeps a buffer of about this size (issue #23: memory per idle
/// client, budget in docs/mysql-proxy.md).
const FIRST_READ: usize = 1024;

/// Largest free space one read offers.
const MAX_READ: usize = 16 * 1024;

/// Buffers above this are given back by [`Conn::shrink_idle`] once the connection idles (up to
/// here, what the proxy used to preallocate per client: not worth a timer per request).
pub const SHRINK_ABOVE: usize = 16 * 1024;

/// A socket with MySQL packet framing.
pub struct Conn {
    /// The socket.
    pub stream: Stream,
    /// Bytes read and not yet consumed.
    pub rbuf: BytesMut,
    /// Bytes to write at the next flush.
    pub wbuf: BytesMut,
    /// Framing with the payload cap.
    pub decoder: PacketDecoder,
    /// For client connections: the listener's budget and what this connection holds of it.
    budget: Option<(Arc<ClientBudget>, usize)>,
    /// While the replies of a multi-statement are queued: their packets renumbered (see
    /// [`SeqRewrite`]).
    pub seq_rewrite: Option<SeqRewrite>,
    /// Free space the next read offers (see [`FIRST_READ`]).
    read_size: usize,
    /// For client connections: the client negotiated MariaDB's MARIADB_CLIENT_CACHE_METADATA
    /// (every column count it gets carries the metadata-follows byte; see
    /// `BackendConn::forward`).
    pub cache_meta: bool,
    /// With `cache_meta`: executions may go to the client without definitions it holds. Only
    /// for clients known to read the classic EOF that follows a skipped block (see
    /// `session::handshake::skips_metadata_safely`); the others are always sent the
    /// definitions (metadata-follows 1).
    pub meta_skip: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.uncharge();
    }
}

/// Renumbering of queued packets for the replies of a multi-statement: each statement's reply is
/// written with sequence ids from 1 as usual, and the packets are renumbered here to continue the
/// previous replies' ids (one command, one sequence).
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqRewrite {
    /// The sequence id of the next packet.
    pub next: u8,
    /// Where in `wbuf` the packets not yet renumbered start.
    pub from: usize,
    /// Where in `wbuf` the last renumbered packet starts (`None`: it was flushed already).
    pub last: Option<usize>,
}

impl Conn {
    /// Wraps a connected socket.
    pub fn new(stream: TcpStream, max_payload: usize) -> Self {
        let _ = stream.set_nodelay(true);
        Conn {
            stream: Stream::Plain(stream),
            // Both empty until used: an idle client holds what its own traffic needed, not
            // 32 KiB preallocated (issue #23).
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            decoder: PacketDecoder::new(max_payload),
            budget: None,
            seq_rewrite: None,
            read_size: FIRST_READ,
            cache_meta: false,
            meta_skip: false,
        }
    }

    /// Whether a buffer grew past [`SHRINK_ABOVE`] (then the session gives it back when the
    /// client idles, see [`Conn::shrink_idle`]).
    pub fn holds_large_buffers(&self) -> bool {
        self.rbuf.capacity() > SHRINK_ABOVE || self.wbuf.capacity() > SHRINK_ABOVE
    }

    /// Gives back the buffers that a large packet or result grew, when nothing is in them (the
    /// session calls it once the client has been idle a while, never per request: a busy client
    /// keeps its buffers). The next read starts small again.
    pub fn shrink_idle(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > SHRINK_ABOVE {
            self.rbuf = BytesMut::new();
            self.read_size = FIRST_READ;
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > SHRINK_ABOVE {
            self.wbuf = BytesMut::new();
        }
    }

    /// Charges what this (client) connection buffers beyond [`FREE_PER_CLIENT`] to `budget`.
    pub fn with_budget(mut self, budget: Arc<ClientBudget>) -> Self {
        self.budget = Some((budget, 0));
        self
    }

    /// Makes the charge cover a read buffer of `holding` bytes.
    fn charge(&mut self, holding: usize) -> Result<(), ConnError> {
        let Some((budget, charged)) = &mut self.budget else {
            return Ok(());
        };
        let want = holding.saturating_sub(FREE_PER_CLIENT);
        if want <= *charged {
            return Ok(());
        }
        if !budget.try_take(want - *charged) {
            return Err(ConnError::BudgetExhausted {
                limit: budget.limit(),
            });
        }
        *charged = want;
        Ok(())
    }

    /// Drops everything buffered for reading (a connection about to close after a refused
    /// packet) and what it held of its budget.
    pub fn release_read_buffer(&mut self) {
        self.rbuf = BytesMut::new();
        self.uncharge();
    }

    fn uncharge(&mut self) {
        if let Some((budget, charged)) = &mut self.budget
            && *charged > 0
        {
            budget.give_back(*charged);
            *charged = 0;
        }
    }

    /// Reads more bytes; EOF is an error.
    async fn fill(&mut self) -> Result<(), ConnError> {
        let want = self.read_size;
        // Room is made only when a quarter of the offer is left: packets are split off the front
        // of `rbuf`, so its spare room shrinks by each request's size, and `reserve` (which
        // moves the buffer's start back to its allocation's) on every short request cost ~110
        // instructions of a point select (callgrind). A quarter of 1 KiB still takes a short
        // statement whole.
        if self.rbuf.capacity() - self.rbuf.len() < (want / 4).min(4096) {
            self.rbuf.reserve(want);
        }
        let spare = self.rbuf.capacity() - self.rbuf.len();
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        // Grow the offer only when a full offer was filled (a read into the leftover quarter
        // says little about the client's packet sizes).
        if n >= spare && spare >= want && want < MAX_READ {
            self.read_size = (want * 2).min(MAX_READ);
        }
        if n < spare
            && let Stream::Plain(s) = &self.stream
        {
            // A short read drained the socket: forget the readiness now, so that the next read
            // waits for the poller instead of paying a syscall that would only say EAGAIN. Safe on
            // a current-thread runtime: new data after our read raises a new edge event. (Not over
            // TLS: a short read there says nothing about the socket.)
            let _ = s.try_io(tokio::io::Interest::READABLE, || {
                Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
            });
        }
        Ok(())
    }

    /// Server side: runs the TLS handshake with a client that sent the SSL request. Bytes already
    /// read past that request (the start of the client's hello) are handed to TLS first.
    pub async fn accept_tls(&mut self, config: Arc<rustls::ServerConfig>) -> Result<(), ConnError> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(ConnError::Io(closed()));
        };
        let early = self.rbuf.split();
        let tls = tokio_rustls::TlsAcceptor::from(config)
            .accept(Prefixed::new(early, tcp))
            .await?;
        self.stream = Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)));
        Ok(())
    }

    /// Client side: runs the TLS handshake with a backend after sending it the SSL request,
    /// verifying its certificate for `name`.
    pub async fn connect_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<(), ConnError> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(ConnError::Io(closed()));
        };
        let early = self.rbuf.split();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, Prefixed::new(early, tcp))
            .await?;
        self.stream = Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls)));
        Ok(())
    }

    /// The next logical packet (joined if split).
    pub async fn read_packet(&mut self) -> Result<Packet, ConnError> {
        // The previous packet has been handled: what was held for it is free again.
        self.uncharge();
        loop {
            if let Some(p) = self.decoder.decode(&mut self.rbuf)? {
                return Ok(p);
            }
            // What the buffer may hold after the next read (`fill` reads at most 16 KiB more
            // than it has room for).
            self.charge(self.rbuf.len() + 16 * 1024)?;
            self.fill().await?;
        }
    }

    /// Waits until a complete logical packet is buffered; returns its wire length (headers
    /// included). The packet stays in `rbuf`.
    pub async fn peek_raw(&mut self) -> Result<usize, ConnError> {
        loop {
            if let Some(n) = self.decoder.check(&self.rbuf)? {
                return Ok(n);
            }
            self.fill().await?;
        }
    }

    /// Drops `n` bytes from the front of `rbuf`.
    pub fn consume(&mut self, n: usize) {
        self.rbuf.advance(n);
    }

    /// Queues `payload` as a packet with sequence id `seq`; returns the next sequence id.
    pub fn queue(&mut self, seq: u8, payload: &[u8]) -> u8 {
        encode_packet(seq, payload, &mut self.wbuf)
    }

    /// Queues a COM_QUERY for `sql` (sequence 0) without building its payload first.
    pub fn queue_query(&mut self, sql: &str) {
        let len = sql.len() + 1;
        if len >= 0xFF_FFFF {
            // Split into 16 MiB packets by the general path.
            let mut p = Vec::with_capacity(len);
            p.push(codec::mysql::consts::com::QUERY);
            p.extend_from_slice(sql.as_bytes());
            self.queue(0, &p);
            return;
        }
        let l = (len as u32).to_le_bytes();
        self.wbuf.reserve(4 + len);
        self.wbuf
            .extend_from_slice(&[l[0], l[1], l[2], 0, codec::mysql::consts::com::QUERY]);
        self.wbuf.extend_from_slice(sql.as_bytes());
    }

    /// Queues an ERR packet.
    pub fn queue_err(&mut self, seq: u8, err: &ErrPacket) -> u8 {
        let mut p = BytesMut::with_capacity(64 + err.message.len());
        err.encode(&mut p);
        self.queue(seq, &p)
    }

    /// Queues an OK packet with the given status flags (for the capabilities the proxy offers
    /// clients: no session tracking, so the packet ends after the warning count).
    pub fn queue_ok(&mut self, seq: u8, affected: u64, last_insert_id: u64, status: u16) -> u8 {
        let mut p = BytesMut::with_capacity(16);
        codec::mysql::OkPacket {
            affected_rows: affected,
            last_insert_id,
            status,
            ..Default::default()
        }
        .encode(codec::mysql::consts::capability::PROXY_SERVER, &mut p);
        self.queue(seq, &p)
    }

    /// Queues an EOF packet (no warnings) with the given status flags; clients are not offered
    /// CLIENT_DEPRECATE_EOF, so this is always the classic 5-byte EOF.
    pub fn queue_eof(&mut self, seq: u8, status: u16) -> u8 {
        self.queue(seq, &codec::mysql::eof_payload(status))
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        self.renumber();
        if !self.wbuf.is_empty() {
            if let Stream::Plain(s) = &self.stream {
                // The common case first: a plain socket known to be writable takes the whole
                // buffer in one `send`, without the `write_all` future and its readiness polls
                // (~250 instructions per flush, two flushes per proxied statement). A socket
                // not known writable, or a short write, goes on below with what is left.
                match s.try_write(&self.wbuf) {
                    Ok(n) if n == self.wbuf.len() => {
                        self.wbuf.clear();
                        if let Some(r) = &mut self.seq_rewrite {
                            r.from = 0;
                            r.last = None;
                        }
                        return Ok(());
                    }
                    Ok(n) => self.wbuf.advance(n),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.stream.write_all(&self.wbuf).await?;
            if self.stream.is_tls() {
                // TLS may hold records back when the socket is full: push them out.
                self.stream.flush().await?;
            }
            self.wbuf.clear();
        }
        if let Some(r) = &mut self.seq_rewrite {
            r.from = 0;
            r.last = None;
        }
        Ok(())
    }

    /// Applies [`Self::seq_rewrite`] to the packets queued since the last call (whole packets:
    /// writers queue whole packets). Returns where the last packet queued starts, when it is still
    /// in `wbuf`.
    pub fn renumber(&mut self) -> Option<usize> {
        let r = self.seq_rewrite.as_mut()?;
        let mut at = r.from;
        while at + 4 <= self.wbuf.len() {
            let len = codec::mysql::payload_len(&self.wbuf[at..]);
            self.wbuf[at + 3] = r.next;
            r.next = r.next.wrapping_add(1);
            r.last = Some(at);
            at += 4 + len;
        }
        r.from = at.min(self.wbuf.len());
        r.last
    }
}
