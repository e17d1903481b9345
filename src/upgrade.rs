//! Zero-downtime binary upgrade: a new `furrow proxy` takes the listening sockets over from the running
//! one through a Unix socket (`--upgrade-socket PATH`), by file-descriptor passing (`SCM_RIGHTS`).
//!
//! Why fd passing and not "bind a second `SO_REUSEPORT` socket, then close the old one": closing a
//! listening socket resets the connections waiting in its accept queue (Linux moves them to the other
//! sockets of the reuseport group only with the non-default `net.ipv4.tcp_migrate_req`), so a hand-over
//! by re-binding refuses a few connections under load. Passing the sockets themselves keeps every
//! accept queue: the new process accepts from exactly the sockets the old one used, and the old one just
//! stops calling `accept`. Nothing is ever closed while it holds a queued connection.
//!
//! The exchange (one connection, text lines, the fds ride on the second message):
//!
//! ```text
//! new → old   TAKEOVER
//! old → new   listener NAME ADDR | admin ADDR | metrics ADDR ... END      + one fd per line
//! new → old   READY            (its executors run on the passed sockets)
//! old → new   DRAINING PID     (the old process stopped accepting and drains; it exits after
//!                               `shutdown_grace_ms` at most)
//! ```
//!
//! The old process serves the upgrade socket on a thread of its own; if the new process dies before
//! `READY`, nothing changed and the old one keeps serving (and waits for the next attempt). The new
//! process then re-binds the upgrade socket path for the upgrade after it. Sockets are matched by
//! listener name and address: a listener the new config adds is bound fresh; one it dropped is closed
//! (its queue is lost: changing listeners is a restart in all but name). At most [`MAX_FDS`] sockets
//! (the kernel's `SCM_MAX_FD` is 253) — executors × listeners + 2.
//!
//! The data path is untouched: the hand-over uses the shutdown signal the executors already watch.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proxy::Control;

/// The most sockets one hand-over passes.
pub const MAX_FDS: usize = 250;
/// Bound on the text of the socket list.
const MAX_LIST: usize = 64 * 1024;
/// How long each step of the exchange may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Sockets received from the previous process, by tag (`listener NAME ADDR`, `admin ADDR`,
/// `metrics ADDR`), and the connection to it.
pub struct Inherited {
    sockets: Vec<(String, OwnedFd)>,
    conn: UnixStream,
    started: Instant,
}

impl Inherited {
    /// Takes every inherited socket with this tag.
    pub fn take(&mut self, tag: &str) -> Vec<OwnedFd> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.sockets.len() {
            if self.sockets[i].0 == tag {
                out.push(self.sockets.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Tells the old process that this one serves; waits until it drains. Sockets nobody took are
    /// closed (with a warning). Returns the old pid and the hand-over time (from connect to the old
    /// process's `DRAINING`).
    pub fn finish(mut self) -> io::Result<(String, Duration)> {
        for (tag, _) in self.sockets.drain(..) {
            tracing::warn!(socket = %tag, "inherited socket not in the new config; closed");
        }
        self.conn.write_all(b"READY\n")?;
        let mut line = String::new();
        BufReader::new(&self.conn).take(256).read_line(&mut line)?;
        let pid = line
            .strip_prefix("DRAINING ")
            .map(|p| p.trim().to_string())
            .ok_or_else(|| {
                io::Error::other(format!("unexpected answer to READY: {:?}", line.trim()))
            })?;
        Ok((pid, self.started.elapsed()))
    }
}

/// A socket to hand over: its tag and an fd to dup from.
pub type Offer = (String, OwnedFd);

/// The tag of a listener's socket.
pub fn listener_tag(name: &str, addr: std::net::SocketAddr) -> String {
    format!("listener {name} {addr}")
}

/// Asks the process serving `path` for its sockets. `Ok(None)`: nobody serves it (first start, or a
/// stale file after a crash).
pub fn take_over(path: &Path) -> io::Result<Option<Inherited>> {
    let started = Instant::now();
    let conn = match UnixStream::connect(path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    (&conn).write_all(b"TAKEOVER\n")?;
    let (mut text, fds) = recv_with_fds(&conn)?;
    // The list may continue past the first read; the fds came with its first byte.
    while !text.ends_with(b"END\n") {
        if text.len() > MAX_LIST {
            return Err(io::Error::other("socket list too long"));
        }
        let mut buf = [0u8; 4096];
        let n = (&conn).read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other("the running process closed the hand-over"));
        }
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(text).map_err(|_| io::Error::other("socket list not UTF-8"))?;
    let tags: Vec<String> = text
        .lines()
        .take_while(|l| *l != "END")
        .map(str::to_string)
        .collect();
    if let Some(err) = tags.first().and_then(|t| t.strip_prefix("ERROR ")) {
        return Err(io::Error::other(format!(
            "the running process refused: {err}"
        )));
    }
    if tags.len() != fds.len() {
        return Err(io::Error::other(format!(
            "{} sockets announced, {} received",
            tags.len(),
            fds.len()
        )));
    }
    Ok(Some(Inherited {
        sockets: tags.into_iter().zip(fds).collect(),
        conn,
        started,
    }))
}

/// Serves the upgrade socket at `path` for the rest of the process: the next `furrow proxy` started
/// with the same path takes the sockets in `control.handover` over, then this process drains.
/// Replaces a stale socket file.
pub fn serve(path: PathBuf, control: Arc<Control>) -> io::Result<()> {
    let count = control.handover.lock().map_or(0, |h| h.len());
    if count > MAX_FDS {
        return Err(io::Error::other(format!(
            "{count} sockets to hand over, at most {MAX_FDS} (fewer executors or listeners)"
        )));
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    // Whoever takes the sockets over sees every client's traffic: owner-only file mode, and the
    // peer's uid is checked on each connection (the chmod below leaves a short window).
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    std::thread::Builder::new()
        .name("furrow-upgrade".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if control.shutting_down() {
                    return;
                }
                match peer_uid(&conn) {
                    // SAFETY: geteuid cannot fail.
                    Ok(uid) if uid == unsafe { libc::geteuid() } || uid == 0 => {}
                    Ok(uid) => {
                        tracing::warn!(uid, "upgrade socket: refused a process of another user");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "upgrade socket: cannot read the peer's credentials");
                        continue;
                    }
                }
                match hand_over(&conn, &control) {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "upgrade hand-over failed; still serving"),
                }
            }
        })?;
    Ok(())
}

/// One hand-over attempt. `Ok(true)`: the new process took over and this one drains.
fn hand_over(conn: &UnixStream, control: &Control) -> io::Result<bool> {
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut reader = BufReader::new(conn).take(256);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim() != "TAKEOVER" {
        return Err(io::Error::other(format!(
            "unknown request {:?}",
            line.trim()
        )));
    }
    let sent = {
        // Held while sending: a shutdown starting meanwhile waits, then closes this side's copies.
        let offers = control
            .handover
            .lock()
            .map_err(|_| io::Error::other("hand-over list poisoned"))?;
        let mut text = String::new();
        if offers.is_empty() {
            text.push_str("ERROR this process is shutting down\n");
        }
        for (tag, _) in offers.iter() {
            text.push_str(tag);
            text.push('\n');
        }
        text.push_str("END\n");
        let fds: Vec<RawFd> = if offers.is_empty() {
            Vec::new()
        } else {
            offers.iter().map(|(_, fd)| fd.as_raw_fd()).collect()
        };
        send_with_fds(conn, text.as_bytes(), &fds)?;
        fds.len()
    };
    if sent == 0 {
        return Ok(false);
    }
    tracing::info!(sockets = sent, "upgrade: sockets passed; waiting for READY");
    line.clear();
    reader.set_limit(256);
    reader.read_line(&mut line)?;
    if line.trim() != "READY" {
        // The new process failed to start: it closes its copies, this one keeps serving.
        return Ok(false);
    }
    tracing::info!("upgrade: the new process serves; draining");
    control.shutdown();
    (&*conn).write_all(format!("DRAINING {}\n", std::process::id()).as_bytes())?;
    Ok(true)
}

/// The uid of the process at the other end of a Unix socket (`SO_PEERCRED`).
fn peer_uid(conn: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// `sendmsg` with one `SCM_RIGHTS` control message carrying `fds`.
fn send_with_fds(conn: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    // u64 words: the control buffer must be aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the sendmsg call, the
    // control buffer holds CMSG_SPACE(fd_bytes) bytes, and CMSG_FIRSTHDR of a buffer that large is
    // non-null and leaves room for CMSG_LEN(fd_bytes).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
        let n = libc::sendmsg(conn.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if (n as usize) < data.len() {
            // The fds went with the first byte; the rest of the list follows as plain data.
            let mut w = conn;
            w.write_all(&data[n as usize..])?;
        }
    }
    Ok(())
}

/// `recvmsg` of the socket list's first part and the fds attached to it (close-on-exec).
fn recv_with_fds(conn: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; MAX_LIST];
    // SAFETY: pure size computation.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: the buffers outlive the call and their sizes are what msghdr says; the kernel writes
    // at most msg_controllen control bytes, and the loop only reads control messages it reports
    // (CMSG_NXTHDR stops at msg_controllen). Each SCM_RIGHTS fd is a new descriptor owned by us.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = len / std::mem::size_of::<RawFd>();
                let p = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other(
                "too many sockets passed (control data truncated)",
            ));
        }
        n as usize
    };
    data.truncate(n);
    Ok((data, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_uid_is_ours() {
        let (a, _b) = UnixStream::pair().expect("pair");
        // SAFETY: geteuid cannot fail.
        assert_eq!(peer_uid(&a).expect("peer cred"), unsafe { libc::geteuid() });
    }

    #[test]
    fn fds_pass_over_a_socket_pair_and_stay_usable() {
        let (a, b) = UnixStream::pair().expect("pair");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let dup: OwnedFd = l.try_clone().expect("dup").into();
        send_with_fds(&a, b"listener x 1\nEND\n", &[dup.as_raw_fd()]).expect("send");
        drop(dup);
        drop(l);
        let (text, fds) = recv_with_fds(&b).expect("recv");
        assert_eq!(text, b"listener x 1\nEND\n");
        assert_eq!(fds.len(), 1);
        // The received socket is the same listening socket: a connect is accepted through it.
        let got = std::net::TcpListener::from(fds.into_iter().next().expect("fd"));
        let _c = std::net::TcpStream::connect(addr).expect("connect");
        let (_s, _) = got.accept().expect("accept");
    }
}
