//! The admin port: RESP, so `redis-cli -p ADMIN` and `nc` (inline commands) both work. It runs on the
//! admin thread, never on a data-path executor.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use codec::resp::{
    Command, CommandDecoder, Limits, write_array_header, write_bulk, write_error, write_simple,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::Control;

const HELP: &[&str] = &[
    "PING                         answers PONG",
    "AUTH <password>              required first when [proxy] admin_password is set",
    "INFO                         version, uptime, config generation, listeners, backends",
    "SHOW CONFIG                  the running config (secrets masked)",
    "SHOW BACKENDS                every backend: group, name, address, role, state, weight, errors, latency",
    "SHOW LISTENERS               every listener with its counters",
    "CONFIG RELOAD                re-read and validate the config file; an invalid file changes nothing",
    "HOTKEYS [listener]           most requested keys (sampled 1 in 16, top 32 per core, merged)",
    "BIGKEYS [listener]           largest requests seen (>= 16 KiB), by key (replies: CACHE INSIGHTS)",
    "COMMANDSTATS [listener]      per-command calls, errors, reply bytes, latency percentiles",
    "SHOW DIGESTS [n]             MySQL query digests: top n by total time (count, errors, rows, avg/p99/max latency)",
    "DIGESTS RESET                forget the digest counters",
    "DIGESTS DUMP [n]             top n digests as tab-separated lines with histograms (the center merges these)",
    "SHOW SLOWLOG [n]             the n latest slow MySQL statements (threshold: slow_query_ms)",
    "SLOWLOG THRESHOLD <ms>       change the slow-query threshold until the next reload",
    "SLOWLOG DUMP [n]             the n latest slow statements as tab-separated lines (the center gathers these)",
    "CACHE INSIGHTS [group]       Redis servers' INFO per group: hit ratio, memory/key balance, keys without TTL, big replies, advice",
    "INDEX ADVICE [n]             EXPLAIN the top n MySQL digests by total time on a replica, propose indexes",
    "SHOW THREADS                 every thread (executors furrow-N included): state, CPU, switches, wait channel, kernel stack",
    "SHOW POOLS                   MySQL backend pools per executor: open, idle, limit, created",
    "SHOW AUDIT                   audit log files: records written and dropped (queue full)",
    "BACKEND OFFLINE <name>       stop sending new requests to a backend (name, group/name or address)",
    "BACKEND ONLINE <name>        put it back",
    "SHUTDOWN                     stop accepting, finish connections, exit",
    "HELP                         this text",
    "QUIT                         close this connection",
];

/// Accepts admin connections until shutdown.
pub async fn serve(listener: std::net::TcpListener, control: Arc<Control>) {
    let Some(listener) = crate::proxy::into_tokio(listener, "admin port") else {
        return;
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(session(stream, control.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn session(mut stream: TcpStream, control: Arc<Control>) {
    let limits = Limits {
        max_bulk_len: 1024 * 1024,
        max_array_len: 1024,
        max_inline_len: 64 * 1024,
        max_command_len: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let mut decoder = CommandDecoder::new(limits);
    let mut input = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(4096);
    let mut authed = control
        .shared
        .snapshots
        .current()
        .config
        .proxy
        .admin_password
        .is_none();
    loop {
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(cmd))
                    if authed
                        && arg_upper(&cmd, 0) == "INDEX"
                        && arg_upper(&cmd, 1) == "ADVICE" =>
                {
                    // Talks to servers: on a blocking thread, never on this runtime's workers.
                    let (n, snap) = (count_arg(&cmd, 2, 10), control.shared.snapshots.current());
                    let digests = proxy_mysql::digests(&control.shared).0;
                    let run = move || crate::advice::run(&snap.config, digests, n);
                    match tokio::task::spawn_blocking(run).await {
                        Ok(t) => write_bulk(&mut out, t.as_bytes()),
                        Err(e) => {
                            write_error(&mut out, format!("ERR index advice: {e}").as_bytes())
                        }
                    }
                }
                Ok(Some(cmd))
                    if authed
                        && arg_upper(&cmd, 0) == "CACHE"
                        && arg_upper(&cmd, 1) == "INSIGHTS" =>
                {
                    let snap = control.shared.snapshots.current();
                    let only = cmd.arg(2).map(|a| String::from_utf8_lossy(a).into_owned());
                    let replies = crate::cache_insight::big_replies(&control.shared);
                    let run =
                        move || crate::cache_insight::run(&snap.config, &replies, only.as_deref());
                    match tokio::task::spawn_blocking(run).await {
                        Ok(t) => write_bulk(&mut out, t.as_bytes()),
                        Err(e) => {
                            write_error(&mut out, format!("ERR cache insights: {e}").as_bytes())
                        }
                    }
                }
                Ok(Some(cmd))
                    if authed
                        && arg_upper(&cmd, 0) == "RESHARD"
                        && arg_upper(&cmd, 1) == "PEER" =>
                {
                    // A fence waits for the table's writes in flight: awaited, never blocking.
                    match crate::reshard_peer::command(&control, &cmd).await {
                        Ok(t) => write_bulk(&mut out, t.as_bytes()),
                        Err(e) => write_error(&mut out, format!("ERR {e}").as_bytes()),
                    }
                }
                Ok(Some(cmd)) => {
                    if execute(&control, &cmd, &mut authed, &mut out) == Flow::Close {
                        let _ = stream.write_all(&out).await;
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    write_error(&mut out, format!("ERR {e}").as_bytes());
                    let _ = stream.write_all(&out).await;
                    return;
                }
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

fn arg_upper(cmd: &Command, i: usize) -> String {
    String::from_utf8_lossy(cmd.arg(i).unwrap_or_default()).to_ascii_uppercase()
}

fn execute(control: &Arc<Control>, cmd: &Command, authed: &mut bool, out: &mut BytesMut) -> Flow {
    let name = arg_upper(cmd, 0);
    if name == "QUIT" {
        write_simple(out, b"OK");
        return Flow::Close;
    }
    if name == "AUTH" {
        let want = control.admin_password();
        match (want, cmd.arg(cmd.len().saturating_sub(1))) {
            (None, _) => write_error(
                out,
                b"ERR AUTH called without any password configured for the admin port",
            ),
            (Some(w), Some(given)) if cmd.len() >= 2 && constant_time_eq(w.as_bytes(), given) => {
                *authed = true;
                write_simple(out, b"OK");
            }
            _ => write_error(out, b"WRONGPASS invalid password for the admin port"),
        }
        return Flow::Continue;
    }
    if !*authed {
        write_error(out, b"NOAUTH Authentication required.");
        return Flow::Continue;
    }
    let sub = arg_upper(cmd, 1);
    match (name.as_str(), sub.as_str()) {
        ("PING", _) => write_simple(out, b"PONG"),
        ("HELP", _) | ("COMMAND", _) => {
            write_array_header(
                out,
                HELP.len()
                    + crate::slots::HELP.len()
                    + crate::reshard::HELP.len()
                    + crate::reshard_peer::HELP.len(),
            );
            for line in HELP
                .iter()
                .chain(crate::slots::HELP)
                .chain(crate::reshard::HELP)
                .chain(crate::reshard_peer::HELP)
            {
                write_simple(out, line.as_bytes());
            }
        }
        ("INFO", _) => write_bulk(out, info(control).as_bytes()),
        ("SHOW", "CONFIG") => write_bulk(
            out,
            router::config::mask_secrets(&control.shared.snapshots.current().config.source)
                .as_bytes(),
        ),
        ("SHOW", "BACKENDS") => write_bulk(out, backends_table(control).as_bytes()),
        ("SHOW", "LISTENERS") => write_bulk(out, listeners_table(control).as_bytes()),
        ("SHOW", "DIGESTS") => write_bulk(
            out,
            digests_table(control, count_arg(cmd, 2, 20)).as_bytes(),
        ),
        ("DIGESTS", "DUMP") => write_bulk(
            out,
            digests_dump(control, count_arg(cmd, 2, 1000)).as_bytes(),
        ),
        ("DIGESTS", "RESET") => {
            proxy_mysql::reset_digests(&control.shared);
            write_simple(out, b"OK");
        }
        ("SHOW", "SLOWLOG") => write_bulk(
            out,
            slowlog_table(control, count_arg(cmd, 2, 20)).as_bytes(),
        ),
        ("SLOWLOG", "DUMP") => write_bulk(
            out,
            slowlog_dump(control, count_arg(cmd, 2, 100)).as_bytes(),
        ),
        ("SLOWLOG", "THRESHOLD") => match cmd
            .arg(2)
            .and_then(|a| std::str::from_utf8(a).ok()?.parse::<u64>().ok())
        {
            Some(ms) => {
                proxy_mysql::set_slow_threshold(
                    &control.shared,
                    std::time::Duration::from_millis(ms),
                );
                write_simple(out, b"OK");
            }
            None => write_error(out, b"ERR usage: SLOWLOG THRESHOLD <milliseconds>"),
        },
        ("SLOTS", _) => match crate::slots::command(control, cmd) {
            Ok(text) => write_bulk(out, text.as_bytes()),
            Err(e) => write_error(out, format!("ERR {e}").as_bytes()),
        },
        ("RESHARD", _) => match crate::reshard::command(control, cmd) {
            Ok(text) => write_bulk(out, text.as_bytes()),
            Err(e) => write_error(out, format!("ERR {e}").as_bytes()),
        },
        ("SHOW", "THREADS") => write_bulk(out, crate::threads::snapshot().as_bytes()),
        ("SHOW", "POOLS") => write_bulk(out, pools_table(control).as_bytes()),
        ("SHOW", "AUDIT") => {
            let mut t = format!("{:<48} {:>12} {:>10}\n", "FILE", "WRITTEN", "DROPPED");
            for (path, written, dropped) in proxy_mysql::audit_stats(&control.shared) {
                let _ = writeln!(t, "{path:<48} {written:>12} {dropped:>10}");
            }
            write_bulk(out, t.as_bytes());
        }
        ("HOTKEYS" | "BIGKEYS" | "COMMANDSTATS", _) => {
            let only = cmd.arg(1).map(|a| String::from_utf8_lossy(a).to_string());
            write_bulk(
                out,
                redis_stats(&control.shared, &name, only.as_deref()).as_bytes(),
            );
        }
        ("CONFIG", "RELOAD") => match control.reload() {
            Ok(g) => write_simple(out, format!("OK generation {g}").as_bytes()),
            Err(e) => {
                let msg = format!(
                    "ERR config rejected, the running config stays: {}",
                    e.replace(['\r', '\n'], " | ")
                );
                write_error(out, msg.as_bytes());
            }
        },
        ("BACKEND", "OFFLINE" | "ONLINE") if cmd.len() == 3 => {
            let target = String::from_utf8_lossy(cmd.arg(2).unwrap_or_default()).to_string();
            let found = control.shared.backends.find(&target);
            if found.is_empty() {
                write_error(
                    out,
                    format!("ERR no backend named '{target}' (see SHOW BACKENDS)").as_bytes(),
                );
            } else {
                for b in &found {
                    b.admin_offline.store(sub == "OFFLINE", Relaxed);
                }
                tracing::info!(backend = %target, state = %sub, "admin changed backend state");
                write_simple(out, b"OK");
            }
        }
        ("SHUTDOWN", _) => {
            control.shutdown();
            write_simple(out, b"OK");
            return Flow::Close;
        }
        ("SHOW" | "CONFIG" | "BACKEND" | "DIGESTS" | "SLOWLOG", _) => {
            write_error(
                out,
                format!(
                    "ERR unknown or incomplete admin command '{}', try HELP",
                    command_text(cmd)
                )
                .as_bytes(),
            );
        }
        _ => write_error(
            out,
            format!(
                "ERR unknown command '{}', try HELP",
                String::from_utf8_lossy(cmd.name())
            )
            .as_bytes(),
        ),
    }
    Flow::Continue
}

fn command_text(cmd: &Command) -> String {
    cmd.args()
        .map(|a| String::from_utf8_lossy(a).to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn info(control: &Control) -> String {
    let snap = control.shared.snapshots.current();
    let mut s = String::new();
    let _ = writeln!(s, "# Server\r");
    let _ = writeln!(s, "furrow_version:{}\r", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "process_id:{}\r", std::process::id());
    let _ = writeln!(
        s,
        "uptime_in_seconds:{}\r",
        control.started.elapsed().as_secs()
    );
    let _ = writeln!(s, "executors:{}\r", control.executors);
    let _ = writeln!(s, "config_generation:{}\r", snap.generation);
    let _ = writeln!(s, "config_origin:{}\r", snap.origin);
    let p = control::process::read();
    let _ = writeln!(s, "\r\n# Process\r");
    let _ = writeln!(s, "process_cpu_seconds:{:.3}\r", p.cpu_seconds);
    let _ = writeln!(s, "process_rss_bytes:{}\r", p.rss_bytes);
    let _ = writeln!(s, "process_threads:{}\r", p.threads);
    let _ = writeln!(s, "process_open_fds:{}\r", p.open_fds);
    if let Some(t) = control
        .shared
        .registries
        .get::<runtime::trace::TraceHub>()
        .started()
    {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = writeln!(s, "\r\n# Tracing\r");
        let _ = writeln!(s, "trace_endpoint:{}\r", t.settings().endpoint);
        let _ = writeln!(s, "trace_spans_queued:{}\r", t.stats.queued.load(Relaxed));
        let _ = writeln!(s, "trace_spans_sent:{}\r", t.stats.sent.load(Relaxed));
        let _ = writeln!(s, "trace_spans_dropped:{}\r", t.stats.dropped.load(Relaxed));
        let _ = writeln!(s, "trace_spans_failed:{}\r", t.stats.failed.load(Relaxed));
    }
    let _ = writeln!(s, "\r\n# Listeners\r");
    for t in control.shared.stats.totals() {
        let _ = writeln!(
            s,
            "listener_{}:kind={},address={},connections={},accepted={},rejected={},requests={},errors={},bytes_in={},bytes_out={},latency_count={},p50_us={},p99_us={},p999_us={}\r",
            t.name,
            t.kind,
            t.address,
            t.connections,
            t.accepted,
            t.rejected,
            t.requests,
            t.errors,
            t.bytes_in,
            t.bytes_out,
            t.latency.count(),
            t.latency.quantile_us(0.5),
            t.latency.quantile_us(0.99),
            t.latency.quantile_us(0.999)
        );
    }
    let _ = writeln!(s, "\r\n# Backends\r");
    for b in BackendRow::all(control) {
        let _ = writeln!(
            s,
            "backend_{}_{}:address={},role={},state={},weight={},requests={},errors={},latency_us={},lag_ms={}\r",
            b.group,
            b.name,
            b.address,
            b.role,
            b.state,
            b.weight,
            b.requests,
            b.errors,
            b.latency_us,
            b.lag()
        );
    }
    let _ = writeln!(s, "\r\n# Redis backend writes\r");
    for l in proxy_redis::admin_metrics(&control.shared) {
        let _ = writeln!(
            s,
            "redis_backend_{}:writes={},requests={},requests_per_write={:.2}\r",
            l.listener,
            l.backend.writes,
            l.backend.requests,
            l.backend.requests_per_write()
        );
    }
    s
}

/// One backend's state, read once for admin output and metrics.
pub struct BackendRow {
    /// Group name.
    pub group: String,
    /// Server name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// `shard`, `primary` or `replica`.
    pub role: &'static str,
    /// `up`, `ejected` or `offline`.
    pub state: &'static str,
    /// Whether it takes requests.
    pub usable: bool,
    /// Configured weight.
    pub weight: u64,
    /// Requests answered.
    pub requests: u64,
    /// Failures.
    pub errors: u64,
    /// Smoothed latency.
    pub latency_us: u64,
    /// Replication lag, when measured.
    pub lag_ms: Option<u64>,
    /// Times the governance ratio breaker opened on it (tripped, or its half-open probe failed).
    pub ratio_trips: u64,
}

impl BackendRow {
    /// Every backend of the running config.
    pub fn all(control: &Control) -> Vec<BackendRow> {
        control
            .shared
            .backends
            .all()
            .iter()
            .map(|b| {
                let lag = b.lag_ms.load(Relaxed);
                BackendRow {
                    group: b.group.clone(),
                    name: b.name.clone(),
                    address: b.address.clone(),
                    role: b.role.as_str(),
                    state: b.state_word(),
                    usable: b.state_word() == "up",
                    weight: u64::from(b.weight.load(Relaxed)),
                    requests: b.requests.load(Relaxed),
                    errors: b.errors.load(Relaxed),
                    latency_us: b.latency_us.load(Relaxed),
                    lag_ms: (lag != u64::MAX).then_some(lag),
                    ratio_trips: b.ratio_trips.load(Relaxed),
                }
            })
            .collect()
    }

    fn lag(&self) -> String {
        self.lag_ms
            .map_or_else(|| "-".to_string(), |l| l.to_string())
    }
}

/// A count argument at `i`, or `default`.
fn count_arg(cmd: &Command, i: usize, default: usize) -> usize {
    cmd.arg(i)
        .and_then(|a| std::str::from_utf8(a).ok()?.parse().ok())
        .unwrap_or(default)
}

fn digests_table(control: &Control, n: usize) -> String {
    let (mut digests, overflow) = proxy_mysql::digests(&control.shared);
    digests.sort_by_key(|d| std::cmp::Reverse(d.total_us));
    let mut s = format!(
        "{:<18} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}  DIGEST\n",
        "HASH", "COUNT", "ERRORS", "ROWS", "AVG_US", "P99_US", "MAX_US"
    );
    for d in digests.iter().take(n) {
        let _ = writeln!(
            s,
            "{:<18x} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}  {}",
            d.hash,
            d.count,
            d.errors,
            d.rows,
            d.total_us / d.count.max(1),
            histogram_quantile(&d.hist, 0.99, 4),
            d.max_us,
            d.text
        );
    }
    if overflow > 0 {
        let _ = writeln!(
            s,
            "({overflow} executions not tracked: the digest table is full)"
        );
    }
    s
}

/// `DIGESTS DUMP`: `# furrow-digests v1 overflow=N`, then per digest (top n by total time)
/// `HASH COUNT ERRORS ROWS TOTAL_US MAX_US H0,..,H19 TEXT`, tab-separated (the text last: it is the
/// only field that may hold spaces). Read by the center's fleet-wide digest view.
fn digests_dump(control: &Control, n: usize) -> String {
    let (mut digests, overflow) = proxy_mysql::digests(&control.shared);
    digests.sort_by_key(|d| std::cmp::Reverse(d.total_us));
    let mut s = format!("# furrow-digests v1 overflow={overflow}\n");
    for d in digests.iter().take(n) {
        let hist: Vec<String> = d.hist.iter().map(u64::to_string).collect();
        let text = d.text.replace(['\t', '\n', '\r'], " ");
        let _ = writeln!(
            s,
            "{:x}\t{}\t{}\t{}\t{}\t{}\t{}\t{text}",
            d.hash,
            d.count,
            d.errors,
            d.rows,
            d.total_us,
            d.max_us,
            hist.join(",")
        );
    }
    s
}

fn slowlog_table(control: &Control, n: usize) -> String {
    let (entries, dropped) = proxy_mysql::slow_log(&control.shared, n);
    let mut s = format!(
        "{:<15} {:<12} {:<16} {:>10}  STATEMENT\n",
        "AT_UNIX_MS", "USER", "BACKEND", "TOOK_US"
    );
    for e in entries {
        let at =
            e.at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
        let _ = writeln!(
            s,
            "{at:<15} {:<12} {:<16} {:>10}  {}",
            e.user, e.backend, e.took_us, e.sql
        );
    }
    if dropped > 0 {
        let _ = writeln!(s, "({dropped} older entries dropped)");
    }
    s
}

/// `SLOWLOG DUMP`: `# furrow-slowlog v1 dropped=N`, then per entry (newest first)
/// `AT_UNIX_MS TOOK_US USER BACKEND STATEMENT`, tab-separated (the statement last, tabs and line breaks
/// in it made spaces). Read by the center's fleet slow log.
fn slowlog_dump(control: &Control, n: usize) -> String {
    let (entries, dropped) = proxy_mysql::slow_log(&control.shared, n);
    let mut s = format!("# furrow-slowlog v1 dropped={dropped}\n");
    let clean = |t: &str| t.replace(['\t', '\n', '\r'], " ");
    for e in entries {
        let at =
            e.at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
        let _ = writeln!(
            s,
            "{at}\t{}\t{}\t{}\t{}",
            e.took_us,
            clean(&e.user),
            clean(&e.backend),
            clean(&e.sql)
        );
    }
    s
}

fn pools_table(control: &Control) -> String {
    let mut s = format!(
        "{:<16} {:<22} {:>6} {:>6} {:>6} {:>10}\n",
        "SERVER", "ADDRESS", "OPEN", "IDLE", "MAX", "CREATED"
    );
    for p in proxy_mysql::pool_stats(&control.shared) {
        let _ = writeln!(
            s,
            "{:<16} {:<22} {:>6} {:>6} {:>6} {:>10}",
            p.server, p.address, p.open, p.idle, p.max, p.created
        );
    }
    s
}

/// HOTKEYS, BIGKEYS or COMMANDSTATS over the Redis listeners (all, or the one named).
fn redis_stats(shared: &runtime::Shared, what: &str, only: Option<&str>) -> String {
    let mut s = String::new();
    for l in proxy_redis::admin_metrics(shared) {
        if only.is_some_and(|o| o != l.listener) {
            continue;
        }
        let _ = writeln!(s, "# {}", l.listener);
        match what {
            "HOTKEYS" => {
                let _ = writeln!(s, "{:<48} {:>10}", "KEY", "SAMPLES");
                for k in &l.hot_keys {
                    let _ = writeln!(s, "{:<48} {:>10}", k.key, k.value);
                }
            }
            "BIGKEYS" => {
                let _ = writeln!(s, "{:<48} {:>12}", "KEY", "BYTES");
                for k in &l.big_keys {
                    let _ = writeln!(s, "{:<48} {:>12}", k.key, k.value);
                }
            }
            _ => {
                let _ = writeln!(
                    s,
                    "{:<24} {:>12} {:>10} {:>14} {:>10} {:>10}",
                    "COMMAND", "CALLS", "ERRORS", "REPLY_BYTES", "P50_US", "P99_US"
                );
                for c in &l.commands {
                    let _ = writeln!(
                        s,
                        "{:<24} {:>12} {:>10} {:>14} {:>10} {:>10}",
                        c.name,
                        c.calls,
                        c.errors,
                        c.reply_bytes,
                        histogram_quantile(&c.latency_us, 0.50, 0),
                        histogram_quantile(&c.latency_us, 0.99, 0)
                    );
                }
            }
        }
    }
    if s.is_empty() {
        s.push_str("no Redis listener matches\n");
    }
    s
}

/// Upper bound (µs) of the power-of-two bucket holding quantile `q` (bucket `i` counts latencies
/// below `2^(i + shift)` µs).
pub fn histogram_quantile(buckets: &[u64], q: f64, shift: usize) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= want {
            return 1u64 << (i + shift).min(63);
        }
    }
    1u64 << (buckets.len() + shift).min(63)
}

fn backends_table(control: &Control) -> String {
    let row = |c: [&str; 10]| {
        format!(
            "{:<12} {:<12} {:<22} {:<8} {:<8} {:>6} {:>10} {:>8} {:>10} {:>8}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
        )
    };
    let mut s = row([
        "GROUP",
        "NAME",
        "ADDRESS",
        "ROLE",
        "STATE",
        "WEIGHT",
        "REQUESTS",
        "ERRORS",
        "LATENCY_US",
        "LAG_MS",
    ]);
    for b in BackendRow::all(control) {
        let nums = [b.weight, b.requests, b.errors, b.latency_us].map(|n| n.to_string());
        s.push_str(&row([
            &b.group,
            &b.name,
            &b.address,
            b.role,
            b.state,
            &nums[0],
            &nums[1],
            &nums[2],
            &nums[3],
            &b.lag(),
        ]));
    }
    s
}

fn listeners_table(control: &Control) -> String {
    let mut s = format!(
        "{:<14} {:<6} {:<22} {:>8} {:>10} {:>12} {:>8} {:>9} {:>9} {:>9}\n",
        "NAME",
        "KIND",
        "ADDRESS",
        "CONNS",
        "ACCEPTED",
        "REQUESTS",
        "ERRORS",
        "P50_US",
        "P99_US",
        "P999_US"
    );
    for t in control.shared.stats.totals() {
        let q = |x| t.latency.quantile_us(x);
        let _ = writeln!(
            s,
            "{:<14} {:<6} {:<22} {:>8} {:>10} {:>12} {:>8} {:>9} {:>9} {:>9}",
            t.name,
            t.kind,
            t.address,
            t.connections,
            t.accepted,
            t.requests,
            t.errors,
            q(0.5),
            q(0.99),
            q(0.999)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_every_form() {
        let src = "admin_password = \"a\"\n[g]\npassword = \"b\"\nprimary = { address = \"x\", password = \"c\" }\nuser = \"u\"\n[users.app]\npassword_native = \"*D\"\npassword_sha256 = \"e\"\n";
        let m = router::config::mask_secrets(src);
        for secret in ["\"a\"", "\"b\"", "\"c\"", "\"*D\"", "\"e\""] {
            assert!(!m.contains(secret), "{m}");
        }
        assert!(m.contains("user = \"u\""));
        assert_eq!(m.matches("***").count(), 5);
    }

    #[test]
    fn quantiles_of_power_of_two_buckets() {
        assert_eq!(histogram_quantile(&[0, 0, 0], 0.5, 0), 0);
        // 90 below 2 µs, 9 below 8 µs, 1 below 1024 µs
        let mut b = vec![0u64; 12];
        b[1] = 90;
        b[3] = 9;
        b[10] = 1;
        assert_eq!(histogram_quantile(&b, 0.5, 0), 2);
        assert_eq!(histogram_quantile(&b, 0.99, 0), 8);
        assert_eq!(histogram_quantile(&b, 1.0, 0), 1024);
        assert_eq!(histogram_quantile(&b, 0.5, 4), 32);
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
