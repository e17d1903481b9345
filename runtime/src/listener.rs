//! Listening sockets: one per executor per listener, bound with `SO_REUSEPORT` so the kernel spreads
//! new connections over the executors.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, non-blocking, ready for
/// `tokio::net::TcpListener::from_std` on an executor.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Checks that `addr` can be bound at all (nothing else, not using SO_REUSEPORT, holds it), so that a
/// second Furrow or another server on the same port is reported instead of silently sharing it.
pub fn probe_exclusive(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sockets_share_a_port() {
        let a = bind_reuseport("127.0.0.1:0".parse().expect("addr"), 16).expect("bind a");
        let port = a.local_addr().expect("addr").port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let _b = bind_reuseport(addr, 16).expect("bind b");
        assert!(probe_exclusive(addr).is_err());
    }
}
