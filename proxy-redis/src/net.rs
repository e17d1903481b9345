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

/// Reads what is available now into `buf` (one `read`); never waits.
pub fn read_available(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<ReadOutcome> {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(MIN_READ);
    }
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
        if n > 0 && n < want {
            // A short read drained the socket: clear readiness now (tokio re-arms it on the next
            // edge) instead of paying a read that returns EAGAIN later.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match res {
        Ok(()) if got == 0 => Ok(ReadOutcome::Closed),
        Ok(()) => Ok(ReadOutcome::Data(got)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(if got > 0 {
            ReadOutcome::Data(got)
        } else {
            ReadOutcome::WouldBlock
        }),
        Err(e) => Err(e),
    }
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
