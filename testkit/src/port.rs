//! Loopback ports reserved across parallel test processes with per-port lock files.
//!
//! Binding port 0 and closing the socket is racy between processes: two tests can be handed the same
//! port before either server binds it. Instead every reservation takes an exclusive `flock` on
//! `<shared dir>/ports/<port>.lock` and holds it for the lifetime of the [`PortLease`]; the kernel
//! drops the lock when the process dies, so crashed tests never leak ports. Ports are drawn from
//! 20000..32000, below Linux's ephemeral range, so outgoing connections do not steal them either.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// First port handed out.
const PORT_LOW: u16 = 20000;
/// One past the last port handed out.
const PORT_HIGH: u16 = 32000;
/// How many candidates to try before giving up.
const ATTEMPTS: usize = 2000;

/// The directory shared by all test processes of this machine (port locks, templates, run dirs).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("FURROW_TESTKIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("furrow-testkit"))
}

/// A loopback port reserved for this process until the lease is dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    _lock: File,
}

impl PortLease {
    /// The reserved port number.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// A cheap pseudo-random sequence seeded per process, so parallel processes start far apart.
fn next_candidate() -> u16 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        x = nanos ^ (u64::from(std::process::id()) << 32) | 1;
    }
    // xorshift64
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    PORT_LOW + (x % u64::from(PORT_HIGH - PORT_LOW)) as u16
}

/// Reserves a free loopback port: locked against other test processes and currently bindable.
pub fn reserve_port() -> Result<PortLease> {
    let dir = shared_dir().join("ports");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating port lock dir {}", dir.display()), e))?;
    for _ in 0..ATTEMPTS {
        let port = next_candidate();
        let path = dir.join(format!("{port}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        // SAFETY: flock on a valid, owned descriptor.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            continue;
        }
        // Someone outside the kit (or a server still in TIME_WAIT shutdown) may hold it.
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        return Ok(PortLease { port, _lock: file });
    }
    Err(Error::NoFreePort {
        tried: ATTEMPTS,
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_and_bindable() {
        let leases: Vec<PortLease> = (0..20).map(|_| reserve_port().unwrap()).collect();
        let mut ports: Vec<u16> = leases.iter().map(PortLease::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 20);
        for lease in &leases {
            assert!((PORT_LOW..PORT_HIGH).contains(&lease.port()));
            TcpListener::bind(lease.addr()).unwrap();
        }
    }
}
