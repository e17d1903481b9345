//! Syscalls per request of a target process: `perf stat -e raw_syscalls:sys_enter -p PID` runs
//! around each load (a counting tracepoint: no sampling, no per-event record), and the count is
//! divided by the load's requests. Skipped, with the figure left empty, where `perf` is missing
//! or the tracepoint cannot be opened (no tracefs, no permission).
//!
//! Also reads Furrow's backend write counters from its admin port (`INFO`'s
//! `redis_backend_<listener>:writes=W,requests=R` lines, see proxy-redis/src/backend.rs) so the
//! report can show requests per backend write.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The tracepoint counted: every syscall entry of the process's threads.
const EVENT: &str = "raw_syscalls:sys_enter";

/// A running `perf stat` attached to one process.
pub struct Counter {
    child: Child,
}

/// Starts counting the syscalls of `pid` (all its threads); None when perf cannot run.
pub fn start(pid: u32) -> Option<Counter> {
    if pid == 0 {
        return None;
    }
    let child = Command::new("perf")
        .args(["stat", "-x", ",", "-e", EVENT, "-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // perf attaches asynchronously; a short pause keeps the first requests inside the count.
    std::thread::sleep(Duration::from_millis(100));
    Some(Counter { child })
}

impl Counter {
    /// Stops counting (SIGINT makes perf print its totals) and returns the count.
    pub fn stop(mut self) -> Option<u64> {
        let pid = i32::try_from(self.child.id()).ok()?;
        // SAFETY: sending a signal to our own child process by its id.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.child.wait();
        parse_perf_csv(&err)
    }
}

/// The count of [`EVENT`] in `perf stat -x ,` output (`12345,,raw_syscalls:sys_enter,...`);
/// None when perf printed `<not counted>` / `<not supported>` or nothing.
pub fn parse_perf_csv(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split(',');
        let value = f.next()?.trim();
        let _unit = f.next()?;
        let event = f.next()?.trim();
        (event == EVENT).then(|| value.parse().ok()).flatten()
    })
}

/// The backend write counters of Redis listener `listener` in an admin `INFO` text.
pub fn parse_backend_writes(info: &str, listener: &str) -> Option<(u64, u64)> {
    let prefix = format!("redis_backend_{listener}:");
    let line = info
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(&prefix))?;
    let field = |name: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("writes")?, field("requests")?))
}

/// `INFO` from a Furrow admin port (no password), as text.
pub fn admin_info(addr: SocketAddr) -> Result<String, String> {
    admin_command(addr, &["INFO"])
}

/// One command on a Furrow admin port (no password): a bulk or simple reply as text, an error
/// reply as `Err` with its line.
pub fn admin_command(addr: SocketAddr, args: &[&str]) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(body) = bulk_body(&buf) {
            return Ok(String::from_utf8_lossy(body).into_owned());
        }
        if let Some(eol) = buf.windows(2).position(|w| w == b"\r\n")
            && matches!(buf.first(), Some(b'+' | b'-'))
        {
            let line = String::from_utf8_lossy(buf.get(1..eol).unwrap_or_default()).into_owned();
            return if buf[0] == b'+' { Ok(line) } else { Err(line) };
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!(
                "admin port closed before the {} reply ended",
                args[0]
            ));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// The payload of a complete RESP bulk string at the start of `buf`, if it is all there.
fn bulk_body(buf: &[u8]) -> Option<&[u8]> {
    let rest = buf.strip_prefix(b"$")?;
    let eol = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(rest.get(..eol)?).ok()?.parse().ok()?;
    rest.get(eol + 2..eol + 2 + len)
}

/// Requests per backend write between two counter readings (None when nothing was written).
pub fn per_write(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let writes = after.0.checked_sub(before.0)?;
    let requests = after.1.checked_sub(before.1)?;
    (writes > 0).then(|| requests as f64 / writes as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv_counts() {
        let out = "\n123456,,raw_syscalls:sys_enter,2000000,100.00,,\n";
        assert_eq!(parse_perf_csv(out), Some(123_456));
        let not = "<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n";
        assert_eq!(parse_perf_csv(not), None);
        assert_eq!(parse_perf_csv("perf: command not found"), None);
        assert_eq!(parse_perf_csv("5,,cycles,1,100.00,,"), None);
    }

    #[test]
    fn backend_writes_from_info() {
        let info = "# Server\r\nexecutors:1\r\n\r\n# Redis backend writes\r\n\
                    redis_backend_other:writes=1,requests=2,requests_per_write=2.00\r\n\
                    redis_backend_bench:writes=40,requests=400,requests_per_write=10.00\r\n";
        assert_eq!(parse_backend_writes(info, "bench"), Some((40, 400)));
        assert_eq!(parse_backend_writes(info, "other"), Some((1, 2)));
        assert_eq!(parse_backend_writes(info, "none"), None);
        assert_eq!(
            parse_backend_writes("redis_backend_bench:writes=x", "bench"),
            None
        );
    }

    #[test]
    fn requests_per_write_between_readings() {
        assert_eq!(per_write((10, 10), (20, 110)), Some(10.0));
        assert_eq!(per_write((10, 10), (10, 10)), None);
        // Counters never go back; a restarted process would: no figure.
        assert_eq!(per_write((10, 10), (5, 50)), None);
    }

    #[test]
    fn bulk_reply_is_complete_only_when_all_there() {
        assert_eq!(bulk_body(b"$5\r\nhello\r\n"), Some(&b"hello"[..]));
        assert_eq!(bulk_body(b"$5\r\nhel"), None);
        assert_eq!(bulk_body(b"$5"), None);
        assert_eq!(bulk_body(b"-ERR x\r\n"), None);
    }
}
