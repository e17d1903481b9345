//! Memory per idle client connection (goal 3 of issue #23): open N client connections to a target
//! (each one used once — a Redis `PING`, a MySQL login — so that the session really exists), read
//! the target's resident set (`VmRSS`) before, with all of them open, and after they closed (once
//! the target had time to give memory back), and report KiB per connection.

use std::net::SocketAddr;
use std::time::Duration;

use crate::report::{IdleMemory, Role};
use crate::targets::Target;

/// How long a target gets to settle after the last connection opened or closed (Furrow's
/// reclaimer waits 200 ms after a burst of closes, then collects; see docs/architecture.md).
const SETTLE: Duration = Duration::from_millis(1500);

/// Opens `n` connections with `open` (each returns a handle kept open until the end), measuring
/// `target`'s RSS around it. A connection that fails ends the opening; the figure then covers
/// the ones that opened, and the error is kept.
pub fn measure<C>(
    target: &Target,
    n: usize,
    kind: &str,
    open: impl Fn(SocketAddr) -> Result<C, String>,
) -> IdleMemory {
    eprintln!("bench: idle {kind} x{n} -> {}", target.name);
    let mut m = IdleMemory {
        target: target.name.clone(),
        role: target.role,
        kind: kind.into(),
        clients: 0,
        base_kib: None,
        open_kib: None,
        closed_kib: None,
        error: None,
    };
    m.base_kib = crate::procfs::rss_kib(target.pid);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        match open(target.addr) {
            Ok(c) => conns.push(c),
            Err(e) => {
                m.error = Some(format!("after {} connections: {e}", conns.len()));
                break;
            }
        }
    }
    m.clients = conns.len();
    std::thread::sleep(SETTLE);
    m.open_kib = crate::procfs::rss_kib(target.pid);
    drop(conns);
    std::thread::sleep(SETTLE);
    m.closed_kib = crate::procfs::rss_kib(target.pid);
    eprintln!(
        "bench:   {} clients: {:?} KiB each, {:?} KiB kept after close",
        m.clients,
        m.per_client_kib().map(|k| (k * 10.0).round() / 10.0),
        m.kept_kib()
    );
    m
}

/// Opens a Redis client connection and has it answer one `PING`.
pub fn redis_client(addr: SocketAddr) -> Result<std::net::TcpStream, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    s.write_all(b"*1\r\n$4\r\nPING\r\n")
        .map_err(|e| e.to_string())?;
    let mut got = [0u8; 7];
    s.read_exact(&mut got).map_err(|e| e.to_string())?;
    if &got != b"+PONG\r\n" {
        return Err(format!("PING answered {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(s)
}

/// The markdown table of idle-connection memory, with the goal verdict for Furrow.
pub fn table(rows: &[IdleMemory]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| connections | target | clients | RSS before MiB | RSS open MiB | KiB per client | kept after close MiB | verdict |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let mib = |k: Option<u64>| k.map_or("–".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    for m in rows {
        let per = m
            .per_client_kib()
            .map_or("–".to_string(), |k| format!("{k:.1}"));
        let kept = m
            .kept_kib()
            .map_or("–".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
        let verdict = if m.role == Role::Furrow {
            m.verdict()
        } else {
            String::new()
        };
        let verdict = match &m.error {
            Some(e) if verdict.is_empty() => format!("incomplete: {e}"),
            Some(e) => format!("{verdict}; incomplete: {e}"),
            None => verdict,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {per} | {kept} | {} |",
            m.kind,
            m.target,
            m.clients,
            mib(m.base_kib),
            mib(m.open_kib),
            verdict.replace(['|', '\n'], " ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, role: Role, base: u64, open: u64, closed: u64, n: usize) -> IdleMemory {
        IdleMemory {
            target: "furrow".into(),
            role,
            kind: kind.into(),
            clients: n,
            base_kib: Some(base),
            open_kib: Some(open),
            closed_kib: Some(closed),
            error: None,
        }
    }

    #[test]
    fn per_client_and_kept() {
        let m = row("redis idle", Role::Furrow, 10_000, 60_000, 10_500, 5000);
        assert_eq!(m.per_client_kib(), Some(10.0));
        assert_eq!(m.kept_kib(), Some(500));
        // RSS below the baseline after close: nothing kept.
        let m = row("redis idle", Role::Furrow, 10_000, 60_000, 9_000, 5000);
        assert_eq!(m.kept_kib(), Some(0));
        let none = IdleMemory {
            clients: 0,
            ..row("redis idle", Role::Furrow, 1, 2, 1, 0)
        };
        assert_eq!(none.per_client_kib(), None);
    }

    #[test]
    fn verdicts_follow_the_goals() {
        // Redis: ≤ 16 KiB per client; memory back within a tenth of what the clients took.
        let ok = row("redis idle", Role::Furrow, 10_000, 60_000, 12_000, 5000);
        assert_eq!(ok.verdict(), "met");
        let fat = row("redis idle", Role::Furrow, 10_000, 110_000, 10_000, 5000);
        assert_eq!(fat.verdict(), "NOT met: 20.0 KiB per client (goal ≤ 16)");
        let kept = row("redis idle", Role::Furrow, 10_000, 60_000, 40_000, 5000);
        assert_eq!(kept.verdict(), "NOT met: 29.3 MiB kept after close");
        // MySQL: ≤ 64 KiB.
        let my = row(
            "mysql logged-in",
            Role::Furrow,
            10_000,
            110_000,
            10_000,
            2000,
        );
        assert_eq!(my.verdict(), "met");
        let t = table(&[ok, my]);
        assert!(
            t.contains("| redis idle | furrow | 5000 | 9.8 | 58.6 | 10.0 | 2.0 | met |"),
            "{t}"
        );
        assert!(
            t.contains("| mysql logged-in | furrow | 2000 | 9.8 | 107.4 | 50.0 | 0.0 | met |"),
            "{t}"
        );
    }
}
