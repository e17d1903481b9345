//! Every socket call of the Redis proxy, in one place (so that another I/O driver, e.g. io_uring,
//! can be tried by replacing this module alone).
//!
//! The rules that keep syscalls per request low: a read takes all that is available and, when it
//! returned less than it asked for, clears the readiness so that the next wait does not cost a
//! `read` that only says `EAGAIN`; writes go out as one `write`/`writev` per turn.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Smallest free space offered to one read.
const MIN_READ: usize = 16 * 1024;

/// A buffer that a burst grew past this is given back once it is empty again.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// Replaces `buf` by a new one of `keep` bytes when it is empty and a burst grew it past
/// [`SHRINK_ABOVE`], so that a long-lived connection does not keep the peak of its busiest moment
/// (the freed memory then goes back to the OS with the executor's next collect, see
/// `runtime::memory`). Callers do it when the connection is idle, not per request.
#[inline]
pub fn shrink_idle(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
        *buf = BytesMut::with_capacity(keep);
    }
}

/// What one read attempt gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were appended.
    Data(usize),
    /// Nothing available now.
    WouldBlock,
    /// The peer closed its side.
    Closed,
}

/// Free space the first read of a client session is offered: enough for the commands of most
/// clients (a `PING`, a `GET`, a short pipeline), so that an idle client holds a buffer of this
/// size rather than [`MIN_READ`] (issue #23: memory per idle client).
pub const FIRST_READ: usize = 1024;

/// Reads what is available now into `buf` (one `read`); never waits.
pub fn read_available(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<ReadOutcome> {
    read_offering(stream, buf, MIN_READ).map(|(outcome, _)| outcome)
}

/// As [`read_available`], offering at least `*size` bytes of free space; a read that fills all
/// of it doubles `*size` (up to [`MIN_READ`]). A client session starts at [`FIRST_READ`]: its
/// buffer grows only when the client sends more than that in one go, and then stays grown (the
/// size never shrinks per request: a busy client pays no reallocation).
pub fn read_growing(
    stream: &TcpStream,
    buf: &mut BytesMut,
    size: &mut usize,
) -> io::Result<ReadOutcome> {
    let (outcome, filled) = read_offering(stream, buf, *size)?;
    if filled && *size < MIN_READ {
        *size = (*size * 2).min(MIN_READ);
    }
    Ok(outcome)
}

/// One read offering at least `min_free` bytes; also says whether it filled all it was offered.
fn read_offering(
    stream: &TcpStream,
    buf: &mut BytesMut,
    min_free: usize,
) -> io::Result<(ReadOutcome, bool)> {
    if buf.capacity() - buf.len() < min_free {
        buf.reserve(min_free);
    }
    let mut filled = false;
    let mut got = 0usize;
    let res = stream.try_io(Interest::READABLE, || {
        let spare = buf.spare_capacity_mut();
        let want = spare.len();
        // SAFETY: `spare` is writable memory of `want` bytes owned by `buf`; `read` writes at most
        // `want` bytes into it and we only mark as initialised what it reports.
        let n = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(stream),
                spare.as_mut_ptr().cast(),
                want,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        got = n;
        // SAFETY: the kernel initialised `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        filled = n == want;
        if n > 0 && n < want {
            // A short read drained the socket: clear readiness now (tokio re-arms it on the next
            // edge) instead of paying a read that returns EAGAIN later.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    let outcome = match res {
        Ok(()) if got == 0 => ReadOutcome::Closed,
        Ok(()) => ReadOutcome::Data(got),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if got > 0 {
                ReadOutcome::Data(got)
            } else {
                ReadOutcome::WouldBlock
            }
        }
        Err(e) => return Err(e),
    };
    Ok((outcome, filled))
}

/// Writes as much of `buf` as the socket takes now (one `write`) and removes it from the front;
/// returns whether everything went out.
pub fn write_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) if n >= buf.len() => buf.clear(),
            Ok(n) => bytes::Buf::advance(buf, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Connects to `address` (`host:port`) within `timeout`, with `TCP_NODELAY`.
pub async fn connect(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let fut = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address).await?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let stream = match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Prepares an accepted client socket.
pub fn prepare_client(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Plaintext moved into TLS per step: the encrypted bytes waiting for the socket stay near this,
/// so unsent replies stay in the session's reply buffer (where `max_client_buffer` counts them).
const TLS_CHUNK: usize = 64 * 1024;

/// TLS over the same readiness-driven socket calls as plain TCP, on either side (a client's
/// session, or a backend connection): rustls's connection is driven sans-IO, encrypted bytes go
/// through [`read_available`] and [`write_some`], so the plain path is the same code it was.
pub struct TlsIo {
    conn: rustls::Connection,
    raw_in: BytesMut,
    raw_out: BytesMut,
}

impl TlsIo {
    /// A server-side TLS session for a newly accepted client.
    pub fn new(config: std::sync::Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Self::over(conn.into()))
    }

    /// A client-side TLS session to a backend server whose certificate must be valid for `name`
    /// (verified against the group's CA). The ClientHello is queued at once: the owner's first
    /// [`Self::write_some`] sends it.
    pub fn client(
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<Self> {
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut me = Self::over(conn.into());
        me.queue_tls()?;
        Ok(me)
    }

    fn over(conn: rustls::Connection) -> Self {
        TlsIo {
            conn,
            raw_in: BytesMut::new(),
            raw_out: BytesMut::new(),
        }
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Encrypted bytes waiting for the socket.
    pub fn pending_out(&self) -> usize {
        self.raw_out.len()
    }

    fn queue_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut w = bytes::BufMut::writer(&mut self.raw_out);
            self.conn.write_tls(&mut w)?;
        }
        Ok(())
    }

    /// Reads what the socket has now, decrypts it and appends the plaintext to `buf` (handshake
    /// records only produce bytes to send). Never waits. A TLS error is `InvalidData` (the alert
    /// for the client is queued and sent best-effort).
    pub fn read_available(
        &mut self,
        stream: &TcpStream,
        buf: &mut BytesMut,
    ) -> io::Result<ReadOutcome> {
        let eof = match read_available(stream, &mut self.raw_in)? {
            ReadOutcome::WouldBlock => return Ok(ReadOutcome::WouldBlock),
            ReadOutcome::Closed => true,
            ReadOutcome::Data(_) => false,
        };
        let before = buf.len();
        let mut closed = eof;
        while !self.raw_in.is_empty() {
            let mut rd = &self.raw_in[..];
            let n = self.conn.read_tls(&mut rd)?;
            bytes::Buf::advance(&mut self.raw_in, n);
            if let Err(e) = self.conn.process_new_packets() {
                let handshaking = self.conn.is_handshaking();
                let _ = self.queue_tls();
                let _ = write_some(stream, &mut self.raw_out);
                let msg = if handshaking {
                    format!("TLS handshake failed: {e}")
                } else {
                    format!("TLS error: {e}")
                };
                return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            let mut w = bytes::BufMut::writer(&mut *buf);
            match io::copy(&mut self.conn.reader(), &mut w) {
                // The client sent close_notify.
                Ok(_) => closed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => closed = true,
                Err(e) => return Err(e),
            }
            if n == 0 {
                break;
            }
        }
        self.queue_tls()?;
        let got = buf.len() - before;
        Ok(if got > 0 {
            // Answer what came with the close first; the next read says Closed.
            ReadOutcome::Data(got)
        } else if closed {
            ReadOutcome::Closed
        } else {
            ReadOutcome::Data(0)
        })
    }

    /// Encrypts replies from the front of `buf` and writes them as far as the socket takes now;
    /// returns whether everything (replies and TLS records) went out.
    pub fn write_some(&mut self, stream: &TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
        loop {
            if !self.raw_out.is_empty() && !write_some(stream, &mut self.raw_out)? {
                return Ok(false);
            }
            if buf.is_empty() && !self.conn.wants_write() {
                return Ok(true);
            }
            let n = if buf.is_empty() {
                0
            } else {
                let take = buf.len().min(TLS_CHUNK);
                let n = io::Write::write(&mut self.conn.writer(), &buf[..take])?;
                bytes::Buf::advance(buf, n);
                n
            };
            self.queue_tls()?;
            if n == 0 && self.raw_out.is_empty() {
                // Nothing moved (the handshake is not finished): wait for the client.
                return Ok(buf.is_empty());
            }
        }
    }
}

/// A backend connection's socket: plain TCP, or TLS over it (a group with `tls`), with the
/// handshake done.
pub struct BackendStream {
    /// The socket (readiness waits go to it).
    pub tcp: TcpStream,
    /// The TLS session over it, if any.
    pub tls: Option<Box<TlsIo>>,
}

/// Reads what is available now, through TLS when `tls` is set (see [`read_available`]).
pub fn read_on(
    tcp: &TcpStream,
    tls: &mut Option<Box<TlsIo>>,
    buf: &mut BytesMut,
) -> io::Result<ReadOutcome> {
    match tls {
        None => read_available(tcp, buf),
        Some(t) => t.read_available(tcp, buf),
    }
}

/// Writes from the front of `buf`, through TLS when `tls` is set; returns whether the socket
/// must be waited for (bytes, plain or encrypted, are left for it).
pub fn write_on(
    tcp: &TcpStream,
    tls: &mut Option<Box<TlsIo>>,
    buf: &mut BytesMut,
) -> io::Result<bool> {
    match tls {
        None => Ok(!buf.is_empty() && !write_some(tcp, buf)?),
        Some(t) => {
            t.write_some(tcp, buf)?;
            Ok(t.pending_out() > 0)
        }
    }
}

/// Connects to a backend server at `address` and, with `tls`, completes the TLS handshake and
/// the verification of the server's certificate (against the group's CA, for the configured
/// `server_name` or else the address's host), all within `timeout`.
pub async fn connect_backend(
    address: &str,
    timeout: Duration,
    tls: Option<&router::config::BackendTls>,
) -> io::Result<BackendStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = connect(address, timeout).await?;
    let Some(cfg) = tls else {
        return Ok(BackendStream { tcp, tls: None });
    };
    let name = cfg.name_for(address).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{address}` has no host usable as a TLS server name; set tls.server_name"),
        )
    })?;
    let mut t = Box::new(TlsIo::client(cfg.config.clone(), name)?);
    let handshake = async {
        let mut none = BytesMut::new();
        let mut early = BytesMut::new();
        loop {
            t.write_some(&tcp, &mut none)?;
            if t.pending_out() > 0 {
                tcp.writable().await?;
                continue;
            }
            if !t.is_handshaking() {
                break;
            }
            tcp.readable().await?;
            if t.read_available(&tcp, &mut early)? == ReadOutcome::Closed {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the TLS handshake \
                     (is its port a TLS port?)",
                ));
            }
        }
        if !early.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server sent data before any request",
            ));
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out (is the server's port a TLS port?)",
            ));
        }
    }
    Ok(BackendStream { tcp, tls: Some(t) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Reads what the peer wrote with `read_growing` until `want` bytes came.
    async fn read_all(stream: &TcpStream, buf: &mut BytesMut, size: &mut usize, want: usize) {
        while buf.len() < want {
            stream.readable().await.expect("readable");
            match read_growing(stream, buf, size).expect("read") {
                ReadOutcome::Closed => panic!("closed early"),
                ReadOutcome::Data(_) | ReadOutcome::WouldBlock => {}
            }
        }
    }

    /// Issue #23 goal 3: a session's first read allocates [`FIRST_READ`] bytes, not [`MIN_READ`];
    /// a client that sends more grows its offer up to [`MIN_READ`] (and keeps it).
    #[tokio::test]
    async fn first_read_is_small_then_grows() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = TcpStream::from_std(server).unwrap();
        let mut buf = BytesMut::new();
        let mut size = FIRST_READ;
        client.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        read_all(&server, &mut buf, &mut size, 14).await;
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\n");
        assert!(buf.capacity() <= FIRST_READ, "{}", buf.capacity());
        assert_eq!(size, FIRST_READ, "a short read does not grow the offer");
        buf.clear();
        // 256 KiB: reads fill what they are offered, so the offer doubles up to MIN_READ.
        let big = vec![b'x'; 256 * 1024];
        let writer = std::thread::spawn(move || client.write_all(&big).map(|_| client));
        read_all(&server, &mut buf, &mut size, 256 * 1024).await;
        let _client = writer.join().unwrap().unwrap();
        assert_eq!(size, MIN_READ);
    }
}
