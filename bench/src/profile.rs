//! Reading `perf report --stdio --sort dso,symbol` output: the top symbols, and their self time
//! grouped into categories (kernel network stack, syscall entry, allocation, parsing, ...), so the
//! report can say where a proxy's time goes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One line of a flat perf report: self percentage, object, whether kernel, symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Self time, percent of samples.
    pub percent: f64,
    /// The object (`[kernel.kallsyms]`, `furrow`, `libc.so.6`).
    pub dso: String,
    /// Whether it is a kernel symbol (`[k]`).
    pub kernel: bool,
    /// The symbol.
    pub symbol: String,
}

/// Parses the flat lines (`  12.34%  furrow  [.] codec::resp::parse`); headers and blanks are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (pct, rest) = line.split_once('%')?;
            let percent: f64 = pct.trim().parse().ok()?;
            let rest = rest.trim();
            let (dso, rest) = rest.split_once(char::is_whitespace)?;
            let rest = rest.trim_start();
            let (kernel, symbol) = if let Some(s) = rest.strip_prefix("[k]") {
                (true, s)
            } else if let Some(s) = rest.strip_prefix("[.]") {
                (false, s)
            } else {
                return None;
            };
            // perf pads the symbol column; with -g it may append call-graph columns after it.
            let symbol = symbol.split("  ").next().unwrap_or("").trim().to_string();
            Some(Sample {
                percent,
                dso: dso.to_string(),
                kernel,
                symbol,
            })
        })
        .collect()
}

/// The category of one symbol.
pub fn category(s: &Sample) -> &'static str {
    let sym = s.symbol.as_str();
    let has = |needles: &[&str]| needles.iter().any(|n| sym.contains(n));
    if has(&["clock_gettime", "read_tsc", "ktime_get"]) {
        return "clock reads (Instant::now, timers)";
    }
    if s.kernel || s.dso.contains("kernel") {
        if sym.starts_with("_raw_spin_unlock_irq") {
            // cpu-clock samples land where interrupts are re-enabled: mostly waking the peer
            // socket's reader during a loopback send (sock_def_readable), see the call graphs.
            return "kernel: wakeups (irq-off sections, waking the peer on send)";
        }
        if has(&[
            "tcp_",
            "ip_",
            "ipv4",
            "skb",
            "sock_",
            "sk_",
            "net_rx",
            "__dev",
            "dev_",
            "loopback",
            "inet_",
            "__netif",
            "netif_",
            "nf_",
            "__napi",
            "napi_",
            "release_sock",
            "lock_sock",
        ]) {
            return "kernel: TCP/loopback stack";
        }
        if has(&["epoll", "ep_", "poll", "eventfd"]) {
            return "kernel: epoll";
        }
        if has(&[
            "entry_SYSCALL",
            "syscall",
            "__x64_sys",
            "do_syscall",
            "__sys_",
            "ksys_",
            "fdget",
            "fput",
            "copy_user",
            "copy_from_user",
            "copy_to_user",
            "_copy_",
            "rw_verify",
            "vfs_",
            "sock_",
            "__fget",
        ]) {
            return "kernel: syscall entry/copy";
        }
        if has(&[
            "schedule",
            "finish_task_switch",
            "futex",
            "wake_up",
            "try_to_wake",
            "ttwu",
            "enqueue",
            "dequeue",
            "pick_next",
            "update_curr",
        ]) {
            return "kernel: scheduler/futex";
        }
        return "kernel: other (irq, timers, mm)";
    }
    if has(&[
        "malloc",
        "free",
        "realloc",
        "calloc",
        "_int_",
        "tcache",
        "alloc::alloc",
        "__rust_alloc",
        "__rust_dealloc",
        "__rust_realloc",
        "raw_vec",
        "RawVec",
        "drop_in_place",
        "unlink_chunk",
        "malloc_consolidate",
    ]) {
        return "allocation (malloc/free, Vec growth, drops)";
    }
    if has(&[
        "memcpy", "memmove", "memset", "memcmp", "bcmp", "memchr", "strlen",
    ]) {
        return "libc mem*/str* (copying, scanning)";
    }
    if s.dso.starts_with("libc") || s.dso.starts_with("libpthread") {
        return "libc: syscall wrappers and other";
    }
    if has(&["codec::"]) {
        return "parsing/encoding (codec)";
    }
    if has(&["router::", "sqlparser"]) {
        return "routing/SQL (router)";
    }
    if has(&["tokio::", "mio::"]) {
        return "async runtime (tokio/mio)";
    }
    if has(&["runtime::"]) {
        return "runtime crate (executors, pools)";
    }
    if has(&["proxy_redis::", "proxy_mysql::"]) {
        return "proxy logic (sessions, routing, relaying)";
    }
    if has(&["sha1", "sha2", "Sha", "digest"]) {
        return "hashing (SHA)";
    }
    if has(&["core::fmt", "alloc::fmt", "fmt::"]) {
        return "formatting (core::fmt)";
    }
    if has(&[
        "hashbrown",
        "core::hash",
        "fnv",
        "siphash",
        "SipHash",
        "ahash",
    ]) {
        return "hash maps/hashing";
    }
    if has(&["tracing", "metrics"]) {
        return "tracing/metrics";
    }
    "other user space"
}

/// Self time per category, largest first.
pub fn by_category(samples: &[Sample]) -> Vec<(&'static str, f64)> {
    let mut m: BTreeMap<&'static str, f64> = BTreeMap::new();
    for s in samples {
        *m.entry(category(s)).or_default() += s.percent;
    }
    let mut v: Vec<(&'static str, f64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

/// One line: `kernel: TCP/loopback stack 31% · allocation 9% · …` (categories ≥ 1 %).
pub fn one_line(samples: &[Sample]) -> String {
    let total: f64 = samples.iter().map(|s| s.percent).sum();
    let mut parts: Vec<String> = by_category(samples)
        .into_iter()
        .filter(|(_, p)| *p >= 1.0)
        .map(|(c, p)| format!("{c} {p:.0}%"))
        .collect();
    if total < 99.0 {
        parts.push(format!(
            "(symbols under the cut-off: {:.0}%)",
            (100.0 - total).max(0.0)
        ));
    }
    parts.join(" · ")
}

/// Inclusive time under each kernel entry point (syscalls, interrupts), from
/// `perf report --children --sort symbol` lines (`  45.10%  0.20%  [k] __x64_sys_sendto`).
pub fn kernel_entries(inclusive: &str) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = inclusive
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (children, rest) = line.split_once('%')?;
            let children: f64 = children.trim().parse().ok()?;
            let (_, rest) = rest.split_once('%')?;
            let sym = rest.trim().strip_prefix("[k]")?;
            let sym = sym.split("  ").next().unwrap_or("").trim();
            let entry = sym.starts_with("__x64_sys_")
                || sym.starts_with("asm_sysvec_")
                || sym.starts_with("asm_common_interrupt")
                || sym == "handle_softirqs";
            entry.then(|| (sym.to_string(), children))
        })
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// The summary line with the largest kernel entry points appended (`… · kernel under: sendto 30%, …`).
pub fn summary(samples: &[Sample], inclusive: &str) -> String {
    let mut line = one_line(samples);
    let entries: Vec<String> = kernel_entries(inclusive)
        .into_iter()
        .take(4)
        .map(|(s, p)| format!("{} {p:.0}%", s.trim_start_matches("__x64_sys_")))
        .collect();
    if !entries.is_empty() {
        let _ = write!(
            line,
            " — inclusive, by kernel entry: {}",
            entries.join(", ")
        );
    }
    line
}

/// The text file stored under docs/profiles/: header, categories, time per kernel entry point
/// (from `inclusive`, perf's children report), then perf's own flat listing.
pub fn document(title: &str, header: &[String], perf_text: &str, inclusive: &str) -> String {
    let samples = parse(perf_text);
    let mut out = String::new();
    let _ = writeln!(out, "# Profile: {title}\n");
    for h in header {
        let _ = writeln!(out, "# {h}");
    }
    out.push_str("\n## Self time by category (symbols listed by perf, >= 0.1 % each)\n\n");
    for (c, p) in by_category(&samples) {
        let _ = writeln!(out, "{p:6.2}%  {c}");
    }
    let entries = kernel_entries(inclusive);
    if !entries.is_empty() {
        out.push_str(
            "\n## Inclusive time under kernel entry points (syscall = the syscall and all it does in the \
             kernel; on loopback a send also runs the receiver's TCP input and wakes it)\n\n",
        );
        for (sym, p) in &entries {
            let _ = writeln!(out, "{p:6.2}%  {sym}");
        }
    }
    out.push_str("\n## Top symbols (perf report --no-children --sort dso,symbol)\n\n");
    for l in perf_text.lines().filter(|l| !l.trim().is_empty()).take(150) {
        let _ = writeln!(out, "{l}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# Overhead  Shared Object      Symbol\n\
# ........\n\
\n\
    20.50%  [kernel.kallsyms]  [k] tcp_sendmsg_locked\n\
    10.00%  [kernel.kallsyms]  [k] entry_SYSCALL_64\n\
     8.25%  libc.so.6          [.] _int_malloc\n\
     6.00%  furrow             [.] codec::resp::parse_command\n\
     5.00%  furrow             [.] proxy_redis::session::relay\n\
     4.00%  libc.so.6          [.] __memmove_avx_unaligned_erms\n\
     2.00%  furrow             [.] tokio::runtime::task::raw::poll\n";

    #[test]
    fn parses_flat_lines() {
        let s = parse(SAMPLE);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].percent, 20.5);
        assert!(s[0].kernel);
        assert_eq!(s[0].symbol, "tcp_sendmsg_locked");
        assert_eq!(s[3].dso, "furrow");
        assert!(!s[3].kernel);
    }

    #[test]
    fn categories_sum_and_order() {
        let s = parse(SAMPLE);
        let c = by_category(&s);
        assert_eq!(c[0], ("kernel: TCP/loopback stack", 20.5));
        assert_eq!(c[1], ("kernel: syscall entry/copy", 10.0));
        assert_eq!(c[2].0, "allocation (malloc/free, Vec growth, drops)");
        let total: f64 = c.iter().map(|x| x.1).sum();
        assert!((total - 55.75).abs() < 1e-9);
        let line = one_line(&s);
        assert!(
            line.starts_with("kernel: TCP/loopback stack 20%")
                || line.starts_with("kernel: TCP/loopback stack 21%")
        );
        assert!(line.contains("parsing/encoding (codec) 6%"));
        assert!(line.contains("under the cut-off: 44%"));
    }

    #[test]
    fn document_has_categories_and_listing() {
        let inclusive = "    40.00%     0.10%  [k] __x64_sys_sendto\n    12.50%     0.00%  [k] __x64_sys_epoll_wait\n     9.00%     1.00%  [.] proxy_redis::serve\n";
        assert_eq!(
            kernel_entries(inclusive),
            vec![
                ("__x64_sys_sendto".to_string(), 40.0),
                ("__x64_sys_epoll_wait".to_string(), 12.5)
            ]
        );
        let d = document("GET P16", &["load: x".into()], SAMPLE, inclusive);
        assert!(d.contains("# load: x"));
        assert!(d.contains(" 40.00%  __x64_sys_sendto"));
        assert!(d.contains(" 20.50%  kernel: TCP/loopback stack"));
        assert!(d.contains("tcp_sendmsg_locked"));
    }
}
