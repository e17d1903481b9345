//! The suites: backends, targets and loads wired together, one measurement per (load, target).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::loads::mysql_client::MyConn;
use crate::loads::{self, LoadRun, gen_mysql, gen_redis, redis_benchmark as rb, sysbench as sb};
use crate::report::{Machine, Measurement, Report, Role, SuiteReport, now};
use crate::targets::{self, Probe, Target};
use crate::{Opts, tools, workspace_root};
use crate::{procfs, profile, report};

/// A scratch directory for configs and logs, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(name: &str) -> Result<WorkDir, String> {
        let p = std::env::temp_dir().join(format!("furrow-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        Ok(WorkDir(p))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Finds or builds the furrow binary (built once per harness run).
fn furrow_binary(opts: &Opts) -> Result<PathBuf, String> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| find_or_build_furrow(opts)).clone()
}

fn find_or_build_furrow(opts: &Opts) -> Result<PathBuf, String> {
    if let Some(p) = &opts.furrow_bin {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    let root = workspace_root();
    eprintln!("bench: building Furrow: cargo build --release --bin furrow");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "furrow"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target_dir.join("release/furrow");
    if !status.success() {
        // The tree is shared and may not build at this moment: an earlier binary is still worth measuring.
        if bin.is_file() {
            eprintln!(
                "bench: cargo build --release --bin furrow failed; measuring the existing {}",
                bin.display()
            );
            return Ok(bin);
        }
        return Err("cargo build --release --bin furrow failed".into());
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} missing after build", bin.display()))
    }
}

/// Runs one load against one target and samples CPU and memory around it.
fn measure(
    opts: &Opts,
    load: &str,
    target: &mut Target,
    backend_pids: &[u32],
    profiles: &mut Vec<report::Profile>,
    run: impl FnOnce(&Target) -> Result<LoadRun, String>,
) -> Measurement {
    eprintln!("bench: {load} -> {}", target.name);
    if !target.alive() {
        return Measurement::failed(
            load,
            &target.name,
            target.role,
            "target process is not running",
        );
    }
    procfs::reset_peak_rss(target.pid);
    let perf = (opts.perf && target.role == Role::Furrow)
        .then(|| start_perf(target.pid, load))
        .flatten();
    let counting = opts.callgrind && target.role == Role::Furrow;
    if counting && let Err(e) = crate::callgrind::start(target.pid) {
        return Measurement::failed(load, &target.name, target.role, e);
    }
    // Furrow's backend write counters (Redis listener `bench`), read around the load.
    let writes = |t: &Target| {
        t.admin
            .and_then(|a| crate::syscalls::admin_info(a).ok())
            .and_then(|info| crate::syscalls::parse_backend_writes(&info, "bench"))
    };
    let w0 = writes(target);
    let syscalls = (!opts.no_syscalls && !counting)
        .then(|| crate::syscalls::start(target.pid))
        .flatten();
    let t0 = procfs::cpu_ticks(target.pid).unwrap_or_default();
    let b0 = procfs::cpu_ticks_sum(backend_pids);
    let c0 = procfs::children_cpu_seconds() + procfs::self_cpu_seconds();
    let result = run(target);
    let t1 = procfs::cpu_ticks(target.pid).unwrap_or_default();
    let b1 = procfs::cpu_ticks_sum(backend_pids);
    let c1 = procfs::children_cpu_seconds() + procfs::self_cpu_seconds();
    let syscalls = syscalls.and_then(crate::syscalls::Counter::stop);
    // Furrow publishes its counters every 200 ms: wait for the last ones.
    let w1 = w0.and_then(|_| {
        std::thread::sleep(Duration::from_millis(450));
        writes(target)
    });
    let instructions = counting.then(|| crate::callgrind::stop(target.pid));
    if let Some(p) = perf {
        let title = format!("{load} ({})", target.name);
        let header = vec![
            format!("date: {}", now()),
            format!("machine: {}", Machine::detect().describe()),
            format!("command: {}", Opts::command_line()),
            format!(
                "perf record -e cpu-clock -F 1999 -g -p <furrow pid> for the whole load ({} executor(s)); \
                 percentages are of samples taken while Furrow was on a CPU",
                opts.executors
            ),
        ];
        if let Some((path, summary)) = finish_perf(p, &title, &header) {
            profiles.retain(|e| e.load != title);
            profiles.push(report::Profile {
                load: title,
                path,
                summary,
                date: now(),
            });
        }
    }
    let rss = procfs::peak_rss_kib(target.pid);
    let alive = target.alive();
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            let e = if alive {
                e
            } else {
                format!("{e} (the target process died)")
            };
            eprintln!("bench:   failed: {e}");
            return Measurement::failed(load, &target.name, target.role, e);
        }
    };
    let per = |secs: f64| (r.requests > 0).then(|| secs * 1e6 / r.requests as f64);
    match instructions {
        Some(Ok((n, top))) => {
            eprintln!(
                "bench:   callgrind: {n} instructions, {:.0} per request",
                n as f64 / r.requests.max(1) as f64
            );
            crate::callgrind::record(crate::callgrind::Count {
                load: load.into(),
                target: target.name.clone(),
                requests: r.requests,
                instructions: n,
                top,
            });
        }
        Some(Err(e)) => eprintln!("bench:   callgrind: {e}"),
        None => {}
    }
    let m = Measurement {
        load: load.into(),
        target: target.name.clone(),
        role: target.role,
        error: None,
        requests: r.requests,
        seconds: r.seconds,
        throughput: r.throughput,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        p999_ms: r.p999_ms,
        errors: r.errors,
        target_cpu_us: per(t1.seconds_since(t0)),
        target_sys_us: per(t1.sys_seconds_since(t0)),
        backend_cpu_us: per(b1.seconds_since(b0)),
        client_cpu_us: per((c1 - c0).max(0.0)),
        peak_rss_kib: rss,
        syscalls_per_req: syscalls
            .filter(|_| r.requests > 0)
            .map(|n| n as f64 / r.requests as f64),
        requests_per_backend_write: w0
            .zip(w1)
            .and_then(|(a, b)| crate::syscalls::per_write(a, b)),
    };
    eprintln!(
        "bench:   {:.0} req/s, p50 {:?} ms, p99 {:?} ms, target CPU {:.2} µs/req, errors {}",
        m.throughput,
        m.p50_ms,
        m.p99_ms,
        m.target_cpu_us.unwrap_or(f64::NAN),
        m.errors
    );
    m
}

/// A running `perf record` and where its summary goes.
struct PerfRun {
    child: std::process::Child,
    data: PathBuf,
    summary: PathBuf,
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn start_perf(pid: u32, load: &str) -> Option<PerfRun> {
    let perf = tools::find("perf")?;
    let dir = workspace_root().join("docs/profiles");
    std::fs::create_dir_all(&dir).ok()?;
    let data = std::env::temp_dir().join(format!("furrow-bench-perf-{}.data", std::process::id()));
    // cpu-clock: a software event, so it samples in VMs without hardware counters too; it counts
    // only while the process is on a CPU, so percentages are of the target's own CPU time.
    let child = Command::new(perf)
        .args(["record", "-e", "cpu-clock", "-F", "1999", "-g", "-q", "-o"])
        .arg(&data)
        .args(["-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    Some(PerfRun {
        child,
        data,
        summary: dir.join(format!("{}.txt", slug(load))),
    })
}

/// Stops `perf record`, writes the profile document; returns (path under docs/, one-line summary).
fn finish_perf(mut p: PerfRun, title: &str, header: &[String]) -> Option<(String, String)> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGINT) };
    let _ = p.child.wait();
    let perf = tools::find("perf")?;
    let out = Command::new(perf)
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--percent-limit",
            "0.1",
            "--sort",
            "dso,symbol",
            "-g",
            "none",
            "-i",
        ])
        .arg(&p.data)
        .output()
        .ok()?;
    // Inclusive (children) time per kernel entry point: which syscall the kernel time is under.
    let inclusive = Command::new(tools::find("perf")?)
        .args([
            "report",
            "--stdio",
            "--children",
            "--percent-limit",
            "0.5",
            "--sort",
            "symbol",
            "-g",
            "none",
            "-i",
        ])
        .arg(&p.data)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&p.data);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let samples = profile::parse(&text);
    if samples.is_empty() {
        return None;
    }
    let doc = profile::document(title, header, &text, &inclusive);
    std::fs::write(&p.summary, doc).ok()?;
    let rel = p
        .summary
        .strip_prefix(workspace_root().join("docs"))
        .ok()?
        .display()
        .to_string();
    Some((rel, profile::summary(&samples, &inclusive)))
}

fn hard_limit(opts: &Opts) -> Duration {
    Duration::from_secs(opts.duration * 4 + 20)
}

fn run_tool(program: &str, args: &[String], limit: Duration) -> Result<String, String> {
    run_tool_in(program, args, limit, None)
}

/// [`run_tool`] in the folder `cwd`.
fn run_tool_in(
    program: &str,
    args: &[String],
    limit: Duration,
    cwd: Option<&Path>,
) -> Result<String, String> {
    let bin = tools::find(program).ok_or_else(|| format!("{program} not found"))?;
    let mut cmd = Command::new(bin);
    cmd.args(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = loads::run_with_limit(&mut cmd, limit).map_err(|e| format!("{program}: {e}"))?;
    if out.timed_out {
        return Err(format!(
            "{program} did not finish within {limit:?} (killed)"
        ));
    }
    if !out.success {
        return Err(format!("{program} failed: {}", loads::tail(&out.text, 3)));
    }
    Ok(out.text)
}

fn shell_line(program: &str, args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains([' ', '_', '*']) && a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect();
    format!("{program} {}", quoted.join(" "))
}

fn suite_report(name: &str, notes: Vec<String>) -> SuiteReport {
    SuiteReport {
        suite: name.into(),
        date: now(),
        machine: Machine::detect(),
        commands: vec![Opts::command_line()],
        notes,
        measurements: Vec::new(),
        idle: Vec::new(),
    }
}

fn start_or_fail(
    name: &str,
    role: Role,
    r: Result<Target, String>,
    failed: &mut Vec<(String, Role, String)>,
) -> Option<Target> {
    match r {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("bench: {name} did not start: {e}");
            failed.push((name.into(), role, format!("did not start: {e}")));
            None
        }
    }
}

/// Starts two Redis shards (the test kit) and every selected target in front of them.
fn redis_targets(
    opts: &Opts,
    dir: &Path,
    shards: &[testkit::RedisServer],
) -> (Vec<Target>, Vec<(String, Role, String)>) {
    let named: Vec<(String, SocketAddr)> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("r{}", i + 1), s.addr()))
        .collect();
    let addrs: Vec<SocketAddr> = shards.iter().map(|s| s.addr()).collect();
    let mut ts = Vec::new();
    let mut failed = Vec::new();
    if opts.wants("direct") {
        ts.push(Target::direct(
            shards[0].addr(),
            shards[0].pid().unwrap_or(0),
        ));
    }
    if opts.wants("furrow") {
        let r = furrow_binary(opts).and_then(|bin| {
            let port = targets::furrow_port()?;
            let conf = targets::furrow_redis_config(port.addr(), &named);
            targets::start_furrow(
                &bin,
                dir,
                &conf,
                opts.executors,
                port,
                &Probe::Redis,
                opts.callgrind,
            )
        });
        ts.extend(start_or_fail("furrow", Role::Furrow, r, &mut failed));
    }
    if opts.wants(FURROW_TLS) {
        let r = furrow_binary(opts).and_then(|bin| {
            let port = targets::furrow_port()?;
            let conf = targets::furrow_redis_config(port.addr(), &named);
            start_furrow_tls(opts, &bin, dir, &conf, port, &Probe::Connect)
        });
        ts.extend(start_or_fail(FURROW_TLS, Role::Furrow, r, &mut failed));
    }
    if opts.wants(FURROW_2X) {
        let r = furrow_binary(opts).and_then(|bin| {
            let port = targets::furrow_port()?;
            let conf = targets::furrow_redis_config(port.addr(), &named);
            start_furrow_2x(opts, &bin, dir, &conf, port, &Probe::Redis)
        });
        ts.extend(start_or_fail(FURROW_2X, Role::Furrow, r, &mut failed));
    }
    for (name, percent) in TRACED {
        if !opts.wants(name) {
            continue;
        }
        let r = furrow_binary(opts).and_then(|bin| {
            let port = targets::furrow_port()?;
            let conf = targets::furrow_redis_config(port.addr(), &named);
            start_furrow_traced(opts, &bin, dir, &conf, port, &Probe::Redis, name, percent)
        });
        ts.extend(start_or_fail(name, Role::Furrow, r, &mut failed));
    }
    if opts.wants("twemproxy") {
        let r = targets::start_twemproxy(dir, &named);
        ts.extend(start_or_fail("twemproxy", Role::Peer, r, &mut failed));
    }
    if opts.wants("predixy") {
        // Optional: built from source on request only; absent, its rows say why.
        let r = tools::find_peer("predixy", opts.predixy_bin.as_deref())
            .and_then(|bin| targets::start_predixy(&bin, dir, &named));
        ts.extend(start_or_fail("predixy", Role::Peer, r, &mut failed));
    }
    for (name, threads) in HAPROXIES {
        if opts.wants(name) {
            let r = targets::start_haproxy(name, threads, dir, &addrs, &Probe::Redis);
            ts.extend(start_or_fail(name, Role::Peer, r, &mut failed));
        }
    }
    (ts, failed)
}

/// The target name of Furrow with two executors (goal 4 of issue #23: scaling with cores), run
/// only for the loads [`runs_load`] names.
const FURROW_2X: &str = "furrow-2exec";

/// haproxy with two threads: the peer of [`FURROW_2X`] in the same run, on the same loads.
/// haproxy's own default is a thread per CPU, as Furrow's is an executor per core; the main rows
/// compare one thread with one executor.
const HAPROXY_2X: &str = "haproxy-2thr";

/// The haproxy targets by name, with their thread counts.
const HAPROXIES: [(&str, u32); 2] = [("haproxy", 1), (HAPROXY_2X, 2)];

/// Whether target `target` takes load `load`: `furrow-2exec` and `haproxy-2thr` only Redis
/// pipeline 16 and the MySQL point select (the loads the core-scaling goal names), every other
/// target all of them.
fn runs_load(target: &str, load: &str) -> bool {
    (target != FURROW_2X && target != HAPROXY_2X)
        || load.ends_with(" P16")
        || load.starts_with("oltp_point_select ")
}

/// Whether target `t` is measured holding idle connections (the proxies, once each).
fn idles(t: &Target) -> bool {
    t.role != Role::Direct
        && t.name != FURROW_TLS
        && t.name != FURROW_2X
        && t.name != HAPROXY_2X
        && TRACED.iter().all(|(n, _)| t.name != *n)
}

/// Starts Furrow with two executors (in its own folder) under the name [`FURROW_2X`].
fn start_furrow_2x(
    opts: &Opts,
    bin: &Path,
    dir: &Path,
    conf: &str,
    port: testkit::PortLease,
    probe: &Probe,
) -> Result<Target, String> {
    let sub = dir.join(FURROW_2X);
    std::fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
    let mut t = targets::start_furrow(bin, &sub, conf, 2, port, probe, opts.callgrind)?;
    t.name = FURROW_2X.into();
    Ok(t)
}

/// The targets of Furrow with `[tracing]`, by name, with their head sampling percentage:
/// `furrow-traced` at 100 %, `furrow-traced-1pct` at 1 %, each exporting to a `furrow control`
/// the harness starts (the same config as `furrow` otherwise; not in the default target list:
/// name them with `--targets`). They measure the cost of tracing against `furrow` in the same run.
const TRACED: [(&str, u8); 2] = [("furrow-traced", 100), ("furrow-traced-1pct", 1)];

/// Starts a span collector and a second Furrow exporting `percent` % of its spans to it (errors
/// and slow statements always), in its own folder, as target `name`.
#[allow(clippy::too_many_arguments)]
fn start_furrow_traced(
    opts: &Opts,
    bin: &Path,
    dir: &Path,
    conf: &str,
    port: testkit::PortLease,
    probe: &Probe,
    name: &str,
    percent: u8,
) -> Result<Target, String> {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
    let collector = match opts.collector.as_str() {
        "sink" => targets::Collector::sink(opts.collector_nice)?,
        _ => targets::start_collector(bin, &sub, opts.collector_nice)?,
    };
    let conf = targets::with_tracing(conf, collector.addr, percent);
    let mut t = targets::start_furrow(
        bin,
        &sub,
        &conf,
        opts.executors,
        port,
        probe,
        opts.callgrind,
    )?;
    t.name = name.into();
    t.collector = Some(collector);
    Ok(t)
}

/// A note per traced target: how many spans its collector took in during the suite (a run shows
/// that spans were made and exported, not silently off).
fn traced_notes(ts: &[Target], notes: &mut Vec<String>) {
    for t in ts {
        let Some(c) = &t.collector else { continue };
        let mut note = format!("{}: {}", t.name, c.intake());
        // The proxy's own count: spans its collector took, and those dropped or not made.
        if let Some(info) = t.admin.and_then(|a| crate::syscalls::admin_info(a).ok()) {
            let field = |k: &str| {
                info.lines()
                    .find_map(|l| l.trim().strip_prefix(k)?.strip_prefix(':'))
                    .unwrap_or("?")
                    .to_string()
            };
            note.push_str(&format!(
                "; the proxy counted {} spans sent, {} failed or not made while paused, {} dropped",
                field("trace_spans_sent"),
                field("trace_spans_failed"),
                field("trace_spans_dropped")
            ));
        }
        eprintln!("bench: {note}");
        notes.push(note);
    }
}

/// The target name of Furrow with TLS on its listener (the same config as `furrow` otherwise; not
/// in the default target list: name it with `--targets`).
const FURROW_TLS: &str = "furrow-tls";

/// Starts a second Furrow whose listener speaks TLS (test kit certificates), in its own folder.
fn start_furrow_tls(
    opts: &Opts,
    bin: &Path,
    dir: &Path,
    conf: &str,
    port: testkit::PortLease,
    probe: &Probe,
) -> Result<Target, String> {
    let (conf, _ca) = targets::with_listener_tls(conf)?;
    let sub = dir.join(FURROW_TLS);
    std::fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
    let mut t = targets::start_furrow(
        bin,
        &sub,
        &conf,
        opts.executors,
        port,
        probe,
        opts.callgrind,
    )?;
    t.name = FURROW_TLS.into();
    Ok(t)
}

/// A folder to run `sysbench --mysql-ssl=on` in: sysbench 1.0 loads `cacert.pem`,
/// `client-cert.pem` and `client-key.pem` from its working folder (the proxy asks for no client
/// certificate, so the pair is only loaded, never sent).
fn sysbench_ssl_dir(dir: &Path) -> Result<PathBuf, String> {
    let c = testkit::TestCerts::get().map_err(|e| e.to_string())?;
    let d = dir.join("sysbench-ssl");
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    for (name, from) in [
        ("cacert.pem", &c.ca),
        ("client-cert.pem", &c.cert),
        ("client-key.pem", &c.key),
    ] {
        std::fs::copy(from, d.join(name)).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(d)
}

/// The CA that clients of the `furrow-tls` target verify with (None for every other target).
fn tls_ca_for(t: &Target) -> Option<PathBuf> {
    (t.name == FURROW_TLS)
        .then(|| testkit::TestCerts::get().ok().map(|c| c.ca.clone()))
        .flatten()
}

/// Keys of the `redis` suite (`redis-benchmark -r`), preloaded on every shard.
const KEYSPACE: u64 = 100_000;

/// Runs closed-loop load `load` on every target of `ts` that runs it, `--rounds` times, the
/// targets' order reversed every other round, and pushes each target's median
/// ([`Measurement::median`]).
fn run_rounds(
    opts: &Opts,
    suite: &mut report::SuiteReport,
    ts: &mut [Target],
    load: &str,
    backend_pids: &[u32],
    profiles: &mut Vec<report::Profile>,
    mut run: impl FnMut(&Target) -> Result<LoadRun, String>,
) {
    let chosen: Vec<usize> = (0..ts.len())
        .filter(|&i| runs_load(&ts[i].name, load))
        .collect();
    let mut runs: Vec<Vec<Measurement>> = vec![Vec::new(); ts.len()];
    for round in 0..opts.rounds.max(1) {
        let mut order = chosen.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let m = measure(opts, load, &mut ts[i], backend_pids, profiles, |t| run(t));
            runs[i].push(m);
        }
    }
    for i in chosen {
        if let Some(m) = Measurement::median(std::mem::take(&mut runs[i])) {
            suite.measurements.push(m);
        }
    }
}

/// What a suite's open-loop rows offer (see [`open_loop_rows`]).
struct OpenRows<'a> {
    /// The closed-loop load whose maxima set the rates.
    closed: &'a str,
    /// The rows' name.
    what: &'a str,
    /// The request mix, for the report's command notes.
    described: &'a str,
    /// Client connections.
    connections: usize,
    /// The requests.
    request: loads::open_loop::OpenRequest,
}

/// The open-loop rows (issue #23 goal 5) that follow closed-loop load `rows.closed`: each target at half of its own closed-loop
/// maximum (`<what> open-loop 50 %`, as the goal asks), then every target at one common rate, half
/// of the slowest target's maximum (`<what> open-loop same rate`), so that latencies are also
/// compared under the same offered load — a faster target's own 50 % is more work for the shared
/// machine.
fn open_loop_rows(
    opts: &Opts,
    suite: &mut report::SuiteReport,
    mut ts: Vec<&mut Target>,
    backend_pids: &[u32],
    profiles: &mut Vec<report::Profile>,
    rows: OpenRows<'_>,
) {
    let OpenRows {
        closed,
        what,
        described,
        connections,
        request,
    } = rows;
    let params = |addr, rate| loads::open_loop::OpenParams {
        addr,
        connections,
        rate,
        duration: Duration::from_secs(opts.duration),
        request: request.clone(),
    };
    let max_of = |suite: &report::SuiteReport, name: &str| {
        suite
            .measurements
            .iter()
            .find(|m| m.load == closed && m.target == name && m.error.is_none())
            .map(|m| m.throughput)
    };
    let maxima: Vec<Option<f64>> = ts.iter().map(|t| max_of(suite, &t.name)).collect();
    let own = format!("{what} open-loop 50 %");
    suite.commands.push(format!(
        "# {own}: built-in open-loop generator (bench/src/loads/open_loop.rs), {described}, rate = 0.5 × \
         the target's {closed} req/s above, {} s",
        opts.duration
    ));
    for (t, max) in ts.iter_mut().zip(&maxima) {
        let Some(max) = max else { continue };
        let p = params(t.addr, max * 0.5);
        let m = measure(opts, &own, t, backend_pids, profiles, |_| {
            loads::open_loop::run(&p)
        });
        suite.measurements.push(m);
    }
    let Some(common) = maxima.iter().flatten().copied().reduce(f64::min) else {
        return;
    };
    let same = format!("{what} open-loop same rate");
    suite.commands.push(format!(
        "# {same}: the same generator and requests at {:.0} req/s for every target (0.5 × the lowest \
         {closed} req/s above), {} s",
        common * 0.5,
        opts.duration
    ));
    for (t, max) in ts.iter_mut().zip(&maxima) {
        if max.is_none() {
            continue;
        }
        let p = params(t.addr, common * 0.5);
        let m = measure(opts, &same, t, backend_pids, profiles, |_| {
            loads::open_loop::run(&p)
        });
        suite.measurements.push(m);
    }
}

/// The `redis` suite: redis-benchmark against every target.
pub fn redis(opts: &Opts, report: &mut Report) -> Result<(), String> {
    let missing = tools::ensure(&["redis-benchmark", "nutcracker", "haproxy"]);
    if missing.contains(&"redis-benchmark".to_string()) {
        return Err("redis-benchmark is missing and could not be installed".into());
    }
    let dir = WorkDir::new("redis")?;
    let shards = start_shards(2)?;
    // Every shard holds the whole key space: GET and MGET then find a 16-byte value for every key
    // they draw on every target, whatever it routes where (direct = r1 alone, haproxy per connection).
    for s in &shards {
        rb::preload(s.addr(), KEYSPACE, 16)?;
    }
    let backend_pids: Vec<u32> = shards.iter().filter_map(|s| s.pid()).collect();
    let (mut ts, failed) = redis_targets(opts, &dir.0, &shards);
    let mut suite = suite_report(
        "redis",
        vec![
            format!(
                "Backends: 2 redis-server shards (test kit). `direct` = redis-benchmark against shard r1 alone (one \
                 server, all keys); Furrow ({} executor{}) and twemproxy use ketama + fnv1a_64 over both shards with \
                 the same server names (same key → same shard); predixy (C++, built from source by \
                 `bench/peers/build.sh predixy`, 1 worker thread) spreads keys over the same two shards by crc16 modulo 2 \
                 (it has no ketama); haproxy is an L4 proxy (TCP mode, 1 thread, \
                 round-robin per connection over both shards, no key routing); `haproxy-2thr` the same with 2 \
                 threads, beside `furrow-2exec` on the P16 loads.",
                opts.executors,
                if opts.executors == 1 { "" } else { "s" }
            ),
            format!(
                "{} clients, 16-byte values, key space 100000 (`key:000000000000`..`key:000000099999`, the names \
                 redis-benchmark's `key:__rand_int__` expands to with `-r 100000`), preloaded on both shards before \
                 the first load so every GET and every MGET key hits a value on every target; MGET = MGET of 10 \
                 random keys (each `__rand_int__` drawn separately), so one MGET request is 10 key lookups. Request \
                 counts are sized by a calibration run on direct to last about {} s there; every target gets the \
                 same count.",
                opts.clients, opts.duration
            ),
            "Latency percentiles are redis-benchmark's (per request; p99.9 is its first printed percentile step at \
             or above 99.9 %)."
                .into(),
        ],
    );
    let tests: Vec<rb::RbTest> = opts
        .redis_tests
        .iter()
        .filter_map(|t| rb::RbTest::parse(t))
        .collect();
    for test in &tests {
        for &pipeline in &opts.pipeline {
            let load = format!("{} P{pipeline}", test.name());
            let mut params = rb::RbParams {
                port: 0,
                clients: opts.clients,
                requests: (opts.clients * pipeline * 200) as u64,
                pipeline,
                value_size: 16,
                keyspace: KEYSPACE,
                test: test.clone(),
                tls_ca: None,
            };
            // Calibrate on the first target (direct when selected).
            let requests = match ts.first() {
                Some(t) => {
                    params.port = t.addr.port();
                    let text = run_tool("redis-benchmark", &rb::args(&params), hard_limit(opts))?;
                    let rps = rb::parse(&text).map_or(100_000.0, |r| r.throughput);
                    ((rps * opts.duration as f64) as u64).clamp(1000, opts.max_requests)
                }
                None => 1000,
            };
            params.requests = requests;
            let mut shown = params.clone();
            shown.port = 0;
            suite.commands.push(format!(
                "# {load}: {}",
                shell_line("redis-benchmark", &rb::args(&shown)).replace("-p 0", "-p PORT")
            ));
            run_rounds(
                opts,
                &mut suite,
                &mut ts,
                &load,
                &backend_pids,
                &mut report.profiles,
                |t| {
                    let p = rb::RbParams {
                        port: t.addr.port(),
                        tls_ca: tls_ca_for(t),
                        ..params.clone()
                    };
                    let text = run_tool("redis-benchmark", &rb::args(&p), hard_limit(opts))?;
                    rb::parse(&text).ok_or_else(|| {
                        format!(
                            "unparsable redis-benchmark output: {}",
                            loads::tail(&text, 3)
                        )
                    })
                },
            );
            for (name, role, e) in failed.iter().filter(|f| runs_load(&f.0, &load)) {
                suite
                    .measurements
                    .push(Measurement::failed(&load, name, *role, e.clone()));
            }
        }
    }
    // Open loop (issue #23 goal 5) after GET P1, with the same clients.
    if tests.iter().any(|t| t.name() == "GET") && opts.pipeline.contains(&1) {
        let described = format!("{} connections, GET of random preloaded keys", opts.clients);
        // Plain TCP only: furrow-tls is left out.
        let open: Vec<&mut Target> = ts.iter_mut().filter(|t| t.name != FURROW_TLS).collect();
        open_loop_rows(
            opts,
            &mut suite,
            open,
            &backend_pids,
            &mut report.profiles,
            OpenRows {
                closed: "GET P1",
                what: "GET",
                described: &described,
                connections: opts.clients,
                request: loads::open_loop::OpenRequest::RedisGet { keyspace: KEYSPACE },
            },
        );
    }
    if opts.idle_redis > 0 {
        for t in ts.iter().filter(|t| idles(t)) {
            suite.idle.push(crate::idle::measure(
                t,
                opts.idle_redis,
                "redis idle",
                crate::idle::redis_client,
            ));
        }
    }
    traced_notes(&ts, &mut suite.notes);
    report.suites.insert("redis".into(), suite);
    Ok(())
}

fn start_shards(n: usize) -> Result<Vec<testkit::RedisServer>, String> {
    (0..n)
        .map(|_| testkit::RedisServer::start().map_err(|e| format!("starting redis-server: {e}")))
        .collect()
}

/// `furrow hash-password` output for the proxy user.
fn furrow_hashes(bin: &Path, password: &str) -> Result<String, String> {
    let out = Command::new(bin)
        .args(["hash-password", password])
        .output()
        .map_err(|e| format!("furrow hash-password: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "furrow hash-password failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `mysql` suite: sysbench OLTP against direct, Furrow and haproxy.
pub fn mysql(opts: &Opts, report: &mut Report) -> Result<(), String> {
    let missing = tools::ensure(&["sysbench", "haproxy"]);
    if missing.contains(&"sysbench".to_string()) {
        return Err("sysbench is missing and could not be installed".into());
    }
    let dir = WorkDir::new("mysql")?;
    // Room for the idle-connection phase through haproxy (one server connection per client).
    let db = testkit::MariaDb::start_with(
        testkit::MariaDbConfig::new().arg(format!("--max-connections={}", opts.idle_mysql + 200)),
    )
    .map_err(|e| format!("starting mariadbd: {e}"))?;
    db.sql("CREATE DATABASE IF NOT EXISTS sbtest")
        .map_err(|e| e.to_string())?;
    let (user, password) = (
        testkit::APP_USER.to_string(),
        testkit::APP_PASSWORD.to_string(),
    );
    let base = sb::SbParams {
        test: "oltp_point_select".into(),
        port: db.port(),
        user: user.clone(),
        password: password.clone(),
        db: "sbtest".into(),
        tables: opts.tables,
        table_size: opts.table_size,
        threads: opts.threads,
        seconds: opts.duration,
        prepared: false,
        ssl: false,
    };
    eprintln!(
        "bench: sysbench prepare ({} tables x {} rows)",
        opts.tables, opts.table_size
    );
    run_tool(
        "sysbench",
        &sb::args(&base, "prepare"),
        Duration::from_secs(600),
    )?;
    let backend_pids: Vec<u32> = db.pid().into_iter().collect();
    let probe = Probe::Mysql {
        user: user.clone(),
        password: password.clone(),
    };
    let mut ts = Vec::new();
    let mut failed = Vec::new();
    if opts.wants("direct") {
        ts.push(Target::direct(db.addr(), db.pid().unwrap_or(0)));
    }
    if opts.wants("furrow") {
        let r = furrow_binary(opts).and_then(|bin| {
            let hashes = furrow_hashes(&bin, &password)?;
            let port = targets::furrow_port()?;
            let conf =
                targets::furrow_mysql_config(port.addr(), db.addr(), &user, &password, &hashes);
            targets::start_furrow(
                &bin,
                &dir.0,
                &conf,
                opts.executors,
                port,
                &probe,
                opts.callgrind,
            )
        });
        ts.extend(start_or_fail("furrow", Role::Furrow, r, &mut failed));
    }
    if opts.wants(FURROW_TLS) {
        let r = furrow_binary(opts).and_then(|bin| {
            let hashes = furrow_hashes(&bin, &password)?;
            let port = targets::furrow_port()?;
            let conf =
                targets::furrow_mysql_config(port.addr(), db.addr(), &user, &password, &hashes);
            start_furrow_tls(opts, &bin, &dir.0, &conf, port, &probe)
        });
        ts.extend(start_or_fail(FURROW_TLS, Role::Furrow, r, &mut failed));
    }
    if opts.wants(FURROW_2X) {
        let r = furrow_binary(opts).and_then(|bin| {
            let hashes = furrow_hashes(&bin, &password)?;
            let port = targets::furrow_port()?;
            let conf =
                targets::furrow_mysql_config(port.addr(), db.addr(), &user, &password, &hashes);
            start_furrow_2x(opts, &bin, &dir.0, &conf, port, &probe)
        });
        ts.extend(start_or_fail(FURROW_2X, Role::Furrow, r, &mut failed));
    }
    for (name, percent) in TRACED {
        if !opts.wants(name) {
            continue;
        }
        let r = furrow_binary(opts).and_then(|bin| {
            let hashes = furrow_hashes(&bin, &password)?;
            let port = targets::furrow_port()?;
            let conf =
                targets::furrow_mysql_config(port.addr(), db.addr(), &user, &password, &hashes);
            start_furrow_traced(opts, &bin, &dir.0, &conf, port, &probe, name, percent)
        });
        ts.extend(start_or_fail(name, Role::Furrow, r, &mut failed));
    }
    for (name, threads) in HAPROXIES {
        if opts.wants(name) {
            let r = targets::start_haproxy(name, threads, &dir.0, &[db.addr()], &probe);
            ts.extend(start_or_fail(name, Role::Peer, r, &mut failed));
        }
    }
    let mut suite = suite_report(
        "mysql",
        vec![
            format!(
                "Backend: one MariaDB server (test kit: 32 MB buffer pool, binlog on). `direct` = sysbench against it; \
                 Furrow ({} executor{}) and haproxy (TCP mode, 1 thread) in front of the same server; `furrow-2exec` \
                 and `haproxy-2thr` (2 threads) on the point selects. twemproxy does not speak MySQL.",
                opts.executors,
                if opts.executors == 1 { "" } else { "s" }
            ),
            format!(
                "sysbench {} threads, {} tables x {} rows, uniform random ids, {} s per load per target. Throughput is \
                 queries/s; latency percentiles are per sysbench event (one transaction: 1 query for point_select, 16 \
                 for read_only, 18 for read_write), from `--histogram`. CPU per request is per query.",
                opts.threads, opts.tables, opts.table_size, opts.duration
            ),
            "`text` = `--db-ps-mode=disable` (COM_QUERY); `prepared` = `--db-ps-mode=auto` (server-side prepared statements)."
                .into(),
        ],
    );
    for test in &opts.mysql_tests {
        for proto in &opts.protocols {
            let load = format!("{test} {proto}");
            let params = sb::SbParams {
                test: test.clone(),
                prepared: proto == "prepared",
                ..base.clone()
            };
            let mut shown = params.clone();
            shown.port = 0;
            suite.commands.push(format!(
                "# {load}: {}",
                shell_line("sysbench", &sb::args(&shown, "run"))
                    .replace("--mysql-port=0", "--mysql-port=PORT")
            ));
            run_rounds(
                opts,
                &mut suite,
                &mut ts,
                &load,
                &backend_pids,
                &mut report.profiles,
                |t| {
                    let p = sb::SbParams {
                        port: t.addr.port(),
                        ssl: t.name == FURROW_TLS,
                        ..params.clone()
                    };
                    let cwd = if p.ssl {
                        Some(sysbench_ssl_dir(&dir.0)?)
                    } else {
                        None
                    };
                    let text = run_tool_in(
                        "sysbench",
                        &sb::args(&p, "run"),
                        hard_limit(opts),
                        cwd.as_deref(),
                    )?;
                    sb::parse(&text).ok_or_else(|| {
                        format!("unparsable sysbench output: {}", loads::tail(&text, 3))
                    })
                },
            );
            for (name, role, e) in failed.iter().filter(|f| runs_load(&f.0, &load)) {
                suite
                    .measurements
                    .push(Measurement::failed(&load, name, *role, e.clone()));
            }
        }
    }
    // Open loop (issue #23 goal 5) after the text point select, with as many connections as
    // sysbench threads. Plain TCP and one executor, as the peers: furrow-tls and furrow-2exec are
    // left out.
    if suite
        .measurements
        .iter()
        .any(|m| m.load == "oltp_point_select text")
    {
        let described = format!(
            "{} connections, `SELECT c FROM sbtestT WHERE id=N` (COM_QUERY, uniform random table and id)",
            opts.threads
        );
        let open: Vec<&mut Target> = ts
            .iter_mut()
            .filter(|t| t.name != FURROW_TLS && runs_load(&t.name, "open loop"))
            .collect();
        open_loop_rows(
            opts,
            &mut suite,
            open,
            &backend_pids,
            &mut report.profiles,
            OpenRows {
                closed: "oltp_point_select text",
                what: "point select",
                described: &described,
                connections: opts.threads,
                request: loads::open_loop::OpenRequest::MysqlPointSelect {
                    user: user.clone(),
                    password: password.clone(),
                    db: base.db.clone(),
                    tables: opts.tables,
                    table_size: opts.table_size,
                },
            },
        );
    }
    if opts.idle_mysql > 0 {
        for t in ts.iter().filter(|t| idles(t)) {
            let (u, pw) = (user.clone(), password.clone());
            suite.idle.push(crate::idle::measure(
                t,
                opts.idle_mysql,
                "mysql logged-in",
                move |a| MyConn::connect(a, &u, &pw, None).map_err(|e| e.to_string()),
            ));
        }
    }
    traced_notes(&ts, &mut suite.notes);
    report.suites.insert("mysql".into(), suite);
    Ok(())
}

/// Shards of the SQL part of the `sharding` suite: 2 servers x 2 schemas (`bench_0`..`bench_3`).
const SQL_SHARDS: usize = 4;

/// The Furrow config of the `sharding` suite (`[sharding.NAME]`, docs/sharding.md): listener
/// `bench` serves the logical database over [`SQL_SHARDS`] shards (shard `i` = schema `bench_i` on
/// server `i / 2`), `items` split by `id` with the `hash` rule (one partition per shard, so row `id`
/// lives on shard `id % 4`); listener `plain` forwards unsharded to the server holding every row
/// (the same queries through the same process without sharding, for the CPU comparison).
/// How a load reaches a target's address (with or without a default database).
type MakeEndpoint = fn(SocketAddr) -> gen_mysql::Endpoint;

/// The listeners of the `sharding` suite's Furrow config.
struct ShardingListeners {
    /// `[sharding.bench]` over the 2-server shards.
    sharded: SocketAddr,
    /// Plain forwarding to the single server.
    plain: SocketAddr,
    /// `[sharding.one]` over 4 schemas of the single server.
    one: SocketAddr,
}

fn furrow_sharding_config(
    l: &ShardingListeners,
    single: SocketAddr,
    servers: &[SocketAddr],
    user: &str,
    password: &str,
    hashes: &str,
) -> String {
    let ShardingListeners {
        sharded: listen,
        plain,
        one,
    } = l;
    let mut s = format!(
        "[[listeners]]\nname = \"bench\"\nkind = \"mysql\"\naddress = \"{listen}\"\ngroup = \"g0\"\n\n\
         [[listeners]]\nname = \"plain\"\nkind = \"mysql\"\naddress = \"{plain}\"\ngroup = \"single\"\n\n\
         [[listeners]]\nname = \"one\"\nkind = \"mysql\"\naddress = \"{one}\"\ngroup = \"single\"\n\n\
         [mysql_groups.single]\nuser = \"{user}\"\npassword = \"{password}\"\n\
         primary = {{ name = \"single\", address = \"{single}\" }}\n\n"
    );
    for (i, a) in servers.iter().enumerate() {
        s.push_str(&format!(
            "[mysql_groups.g{i}]\nuser = \"{user}\"\npassword = \"{password}\"\nprimary = {{ name = \"g{i}\", address = \"{a}\" }}\n\n"
        ));
    }
    let defs: Vec<String> = (0..SQL_SHARDS)
        .map(|i| {
            format!(
                "  {{ name = \"s{i}\", group = \"g{}\", schema = \"bench_{i}\" }},\n",
                i * servers.len() / SQL_SHARDS
            )
        })
        .collect();
    let one_defs: Vec<String> = (0..SQL_SHARDS)
        .map(|i| format!("  {{ name = \"o{i}\", group = \"single\", schema = \"one_{i}\" }},\n"))
        .collect();
    s.push_str(&format!(
        "[sharding.bench]\nlistener = \"bench\"\nxa = true\nworker_id = 1\nshards = [\n{}]\n\n[[sharding.bench.tables]]\nname = \"items\"\nkey = \"id\"\nalgorithm = \"hash\"\n\n{}\
         [sharding.one]\nlistener = \"one\"\nxa = true\nworker_id = 2\nshards = [\n{}]\n\n[[sharding.one.tables]]\nname = \"items\"\nkey = \"id\"\nalgorithm = \"hash\"\n\n\
         [users.{user}]\n{hashes}\n",
        defs.concat(),
        crate::reshard::TABLES,
        one_defs.concat()
    ));
    s
}

/// The `sharding` suite: the harness's own loads (mixed multi-key Redis; scatter SQL).
pub fn sharding(opts: &Opts, report: &mut Report) -> Result<(), String> {
    tools::ensure(&["nutcracker", "haproxy"]);
    let dir = WorkDir::new("sharding")?;
    let mut suite = suite_report(
        "sharding",
        vec![
            format!(
                "Redis mixed multi-key load (the harness's own generator, {} clients): {}. Keys `mix:0..100000`, 16-byte \
                 values. Same backends and targets as the `redis` suite (direct = shard r1 alone; haproxy = L4, no key \
                 routing, so its multi-key commands go whole to one shard).",
                opts.clients,
                gen_redis::MIX
            ),
            format!(
                "MySQL load ({} client threads, {} rows in `items(id, grp, score, name)`, 4 shards = 2 MariaDB servers x \
                 2 schemas, `hash` rule on id: row id on shard id % 4): `direct` = one MariaDB holding every row; \
                 `furrow unsharded` = the same Furrow process forwarding to that server (plain listener, no sharding); \
                 `furrow 1-server shards` = a second sharded listener of that process over 4 schemas (`one_0`..`one_3`) \
                 of that same server, the CPU comparison with `furrow unsharded` that has the same backend process; \
                 `furrow` = its `[sharding.bench]` listener over the 4 shards; \
                 `client-shards` = the load generator \
                 itself sends the scatter query to all 4 shards and merges (score DESC, id; first 10) and the point \
                 query to shard id % 4 — what an application does without a sharding proxy (its target CPU is the \
                 first shard server's).",
                opts.threads, opts.shard_rows
            ),
            "Latencies are measured by the generator per round trip (a pipeline of P requests counts P times with its \
             round-trip time); percentiles from a log-linear histogram with < 1 % error."
                .into(),
        ],
    );

    // Part 1: mixed multi-key Redis.
    {
        let shards = start_shards(2)?;
        let backend_pids: Vec<u32> = shards.iter().filter_map(|s| s.pid()).collect();
        let (mut ts, failed) = redis_targets(opts, &dir.0, &shards);
        for &pipeline in &opts.pipeline {
            let load = format!("redis mixed multi-key P{pipeline}");
            suite.commands.push(format!(
                "# {load}: built-in generator: {} clients x pipeline {pipeline}, {} s, at most {} requests",
                opts.clients, opts.duration, opts.max_requests
            ));
            for t in ts.iter_mut() {
                let p = gen_redis::MixParams {
                    addr: t.addr,
                    clients: opts.clients,
                    pipeline,
                    duration: Duration::from_secs(opts.duration),
                    max_requests: opts.max_requests,
                    keyspace: 100_000,
                    value_size: 16,
                };
                let m = measure(opts, &load, t, &backend_pids, &mut report.profiles, |_| {
                    gen_redis::run(&p)
                });
                suite.measurements.push(m);
            }
            for (name, role, e) in &failed {
                suite
                    .measurements
                    .push(Measurement::failed(&load, name, *role, e.clone()));
            }
        }
    }

    // Part 2: SQL over 4 shards (2 servers x 2 schemas).
    {
        let mut dbs = testkit::MariaDb::start_many(3, testkit::MariaDbConfig::new())
            .map_err(|e| format!("starting mariadbd: {e}"))?;
        let servers = dbs.split_off(1);
        let single = dbs.remove(0);
        let (user, password) = (
            testkit::APP_USER.to_string(),
            testkit::APP_PASSWORD.to_string(),
        );
        single
            .sql(&format!(
                "CREATE DATABASE IF NOT EXISTS bench; USE bench; {}",
                gen_mysql::SCHEMA
            ))
            .map_err(|e| e.to_string())?;
        for stmt in gen_mysql::insert_statements(opts.shard_rows, |_| true) {
            single
                .sql(&format!("USE bench; {stmt}"))
                .map_err(|e| e.to_string())?;
        }
        let shards: Vec<(SocketAddr, String)> = (0..SQL_SHARDS)
            .map(|i| {
                (
                    servers[i * servers.len() / SQL_SHARDS].addr(),
                    format!("bench_{i}"),
                )
            })
            .collect();
        for (i, (_, schema)) in shards.iter().enumerate() {
            servers[i * servers.len() / SQL_SHARDS]
                .sql(&format!("CREATE DATABASE IF NOT EXISTS {schema}"))
                .map_err(|e| e.to_string())?;
        }
        // The same 4 shards as schemas of the single server (`one_0`..`one_3`): Furrow's sharded
        // path against the very server process the unsharded listener uses, so the CPU comparison
        // of the two paths is not confounded by the backends' topology (on loopback a send costs
        // the sender the receiver's wake-up, which depends on how busy each backend process is).
        let one_shards: Vec<(SocketAddr, String)> = (0..SQL_SHARDS)
            .map(|i| (single.addr(), format!("one_{i}")))
            .collect();
        for (_, schema) in &one_shards {
            single
                .sql(&format!("CREATE DATABASE IF NOT EXISTS {schema}"))
                .map_err(|e| e.to_string())?;
        }
        let server_addrs: Vec<SocketAddr> = servers.iter().map(|d| d.addr()).collect();
        let shard_pids: Vec<u32> = servers.iter().filter_map(|d| d.pid()).collect();
        let mut failed: Vec<(String, Role, String)> = Vec::new();
        let mut furrow = None;
        let mut furrow_plain = None;
        let mut furrow_one = None;
        let mut _plain_lease = None;
        let mut _one_lease = None;
        if opts.wants("furrow") {
            let r = furrow_binary(opts).and_then(|bin| {
                let hashes = furrow_hashes(&bin, &password)?;
                let port = targets::furrow_port()?;
                let plain = targets::furrow_port()?;
                let one = targets::furrow_port()?;
                let conf = furrow_sharding_config(
                    &ShardingListeners {
                        sharded: port.addr(),
                        plain: plain.addr(),
                        one: one.addr(),
                    },
                    single.addr(),
                    &server_addrs,
                    &user,
                    &password,
                    &hashes,
                );
                let path = dir.0.join("furrow-sharding.toml");
                std::fs::write(&path, &conf).map_err(|e| e.to_string())?;
                let check = Command::new(&bin)
                    .arg("check-config")
                    .arg(&path)
                    .output()
                    .map_err(|e| e.to_string())?;
                if !check.status.success() {
                    let msg = String::from_utf8_lossy(&check.stderr);
                    return Err(format!(
                        "furrow check-config rejected the sharding config: {}",
                        msg.lines().next().unwrap_or("rejected").trim()
                    ));
                }
                let probe = Probe::Mysql {
                    user: user.clone(),
                    password: password.clone(),
                };
                let t = targets::start_furrow(
                    &bin,
                    &dir.0,
                    &conf,
                    opts.executors,
                    port,
                    &probe,
                    opts.callgrind,
                )?;
                targets::wait_ready(plain.addr(), &probe, None, Duration::from_secs(10))?;
                let mut p = Target::direct(plain.addr(), t.pid);
                p.name = "furrow unsharded".into();
                p.role = Role::Furrow;
                let mut o = Target::direct(one.addr(), t.pid);
                o.name = "furrow 1-server shards".into();
                o.role = Role::Furrow;
                Ok((t, p, plain, o, one))
            });
            match r {
                Ok((t, p, lease, o, one_lease)) => {
                    furrow = Some(t);
                    furrow_plain = Some(p);
                    furrow_one = Some(o);
                    _plain_lease = Some(lease);
                    _one_lease = Some(one_lease);
                }
                Err(e) => {
                    eprintln!("bench: furrow did not start: {e}");
                    failed.push(("furrow".into(), Role::Furrow, format!("did not start: {e}")));
                }
            }
        }
        // The sharded data: through Furrow when it runs (its DDL creates `items` on every shard,
        // its INSERT splits rows by the hash rule); otherwise placed where that rule puts them.
        let loaded = match furrow.as_ref() {
            Some(t) => load_through_furrow(t.addr, &user, &password, opts.shard_rows, &shards)
                .map(|ddl| {
                    format!(
                        "loaded through Furrow ({ddl}; INSERTs of 500 rows split by Furrow's hash rule)"
                    )
                })
                .map_err(|e| format!("loading through Furrow: {e}"))?,
            None => {
                for (i, (_, schema)) in shards.iter().enumerate() {
                    let db = &servers[i * servers.len() / SQL_SHARDS];
                    db.sql(&format!("USE {schema}; {}", gen_mysql::SCHEMA))
                        .map_err(|e| e.to_string())?;
                    let keep = |id: u64| id % SQL_SHARDS as u64 == i as u64;
                    for stmt in gen_mysql::insert_statements(opts.shard_rows, keep) {
                        db.sql(&format!("USE {schema}; {stmt}"))
                            .map_err(|e| e.to_string())?;
                    }
                }
                "placed directly on the shards by Furrow's hash rule (id % 4), Furrow not running"
                    .to_string()
            }
        };
        if let Some(o) = &furrow_one {
            load_through_furrow(o.addr, &user, &password, opts.shard_rows, &one_shards)
                .map_err(|e| format!("loading through Furrow's 1-server shards: {e}"))?;
        }
        let counts: Vec<String> = shards
            .iter()
            .map(|(a, schema)| {
                MyConn::connect(*a, &user, &password, Some(schema))
                    .map_err(|e| e.to_string())
                    .and_then(|mut c| {
                        c.query("SELECT COUNT(*) FROM items")
                            .map_err(|e| e.to_string())
                    })
                    .ok()
                    .and_then(|rows| rows.first().and_then(|r| r.first().cloned()).flatten())
                    .map_or("?".into(), |v| String::from_utf8_lossy(&v).to_string())
            })
            .collect();
        // Every target must answer the same: compare sample queries against direct.
        let mut endpoints = vec![("direct", gen_mysql::Endpoint::Single(single.addr()))];
        if let Some(t) = &furrow {
            endpoints.push(("furrow", gen_mysql::Endpoint::NoDb(t.addr)));
        }
        if let Some(t) = &furrow_plain {
            endpoints.push(("furrow unsharded", gen_mysql::Endpoint::Single(t.addr)));
        }
        if let Some(t) = &furrow_one {
            endpoints.push(("furrow 1-server shards", gen_mysql::Endpoint::NoDb(t.addr)));
        }
        endpoints.push((
            "client-shards",
            gen_mysql::Endpoint::ClientShards(shards.clone()),
        ));
        let check = check_answers(&endpoints, &user, &password, opts.shard_rows);
        eprintln!("bench: result check: {check}");
        suite.notes.push(format!(
            "SQL data: {} rows of `items`; `direct` and `furrow unsharded` read one MariaDB holding every row \
             (schema `bench`); the 4 shards (`bench_0`..`bench_3`, 2 per server, 2 servers) were {loaded}; rows \
             per shard: {}. Result check: {check}.",
            opts.shard_rows,
            counts.join(", ")
        ));
        for query in [
            gen_mysql::ShardQuery::TopN,
            gen_mysql::ShardQuery::Point,
            gen_mysql::ShardQuery::TxnOneShard,
            gen_mysql::ShardQuery::TxnTwoShards,
        ] {
            let load = format!("mysql {}", query.name());
            let txn = query
                .txn_updates(&mut loads::Rng::new(1), 8, 0, 1)
                .is_some();
            let sample = query.sql(&mut loads::Rng::new(1), opts.shard_rows).0;
            suite.commands.push(format!(
                "# {load}: built-in generator: {} threads, {} s, e.g. `{sample}`",
                opts.threads, opts.duration
            ));
            let params = |endpoint| gen_mysql::ShardParams {
                endpoint,
                query,
                clients: opts.threads,
                duration: Duration::from_secs(opts.duration),
                max_requests: opts.max_requests,
                user: user.clone(),
                password: password.clone(),
                db: "bench".into(),
                rows: opts.shard_rows,
            };
            let single_pids: Vec<u32> = single.pid().into_iter().collect();
            if opts.wants("direct") {
                let mut t = Target::direct(single.addr(), single.pid().unwrap_or(0));
                let p = params(gen_mysql::Endpoint::Single(single.addr()));
                suite.measurements.push(measure(
                    opts,
                    &load,
                    &mut t,
                    &single_pids,
                    &mut report.profiles,
                    |_| gen_mysql::run(&p),
                ));
            }
            // The two listeners in front of the single server: plain, and sharded over its schemas.
            let front: [(Option<&mut Target>, MakeEndpoint); 2] = [
                (furrow_plain.as_mut(), gen_mysql::Endpoint::Single),
                (furrow_one.as_mut(), gen_mysql::Endpoint::NoDb),
            ];
            for (t, endpoint) in front {
                let Some(t) = t else { continue };
                let p = params(endpoint(t.addr));
                suite.measurements.push(measure(
                    opts,
                    &load,
                    t,
                    &single_pids,
                    &mut report.profiles,
                    |_| gen_mysql::run(&p),
                ));
            }
            if let Some(t) = furrow.as_mut() {
                let p = params(gen_mysql::Endpoint::NoDb(t.addr));
                suite.measurements.push(measure(
                    opts,
                    &load,
                    t,
                    &shard_pids,
                    &mut report.profiles,
                    |_| gen_mysql::run(&p),
                ));
            }
            if opts.wants("client-shards") && !txn {
                // No proxy process: the "target" figures are the first shard server's.
                let mut t = Target::direct(
                    server_addrs[0],
                    servers.first().and_then(|d| d.pid()).unwrap_or(0),
                );
                t.name = "client-shards".into();
                t.role = Role::Baseline;
                let p = params(gen_mysql::Endpoint::ClientShards(shards.clone()));
                suite.measurements.push(measure(
                    opts,
                    &load,
                    &mut t,
                    &shard_pids,
                    &mut report.profiles,
                    |_| gen_mysql::run(&p),
                ));
            }
            for (name, role, e) in &failed {
                suite
                    .measurements
                    .push(Measurement::failed(&load, name, *role, e.clone()));
            }
        }
        // Lock acquire + release round trip: Furrow's fleet-wide lock on the plain (read/write
        // split) listener against the server's own GET_LOCK directly (sharded listeners have no
        // lock commands).
        let load = "mysql lock + unlock round trip".to_string();
        suite.commands.push(format!(
            "# {load}: built-in generator: {} threads, {} s; furrow: `SELECT furrow_lock('benchN', 5)` + \
             `SELECT furrow_unlock('benchN')`, direct: GET_LOCK + RELEASE_LOCK, one lock per client",
            opts.threads, opts.duration
        ));
        let params = gen_mysql::ShardParams {
            endpoint: gen_mysql::Endpoint::Single(single.addr()),
            query: gen_mysql::ShardQuery::Point,
            clients: opts.threads,
            duration: Duration::from_secs(opts.duration),
            max_requests: opts.max_requests,
            user: user.clone(),
            password: password.clone(),
            db: "bench".into(),
            rows: opts.shard_rows,
        };
        let single_pids: Vec<u32> = single.pid().into_iter().collect();
        if opts.wants("direct") {
            let mut t = Target::direct(single.addr(), single.pid().unwrap_or(0));
            suite.measurements.push(measure(
                opts,
                &load,
                &mut t,
                &single_pids,
                &mut report.profiles,
                |_| gen_mysql::run_lock(single.addr(), false, &params),
            ));
        }
        if let Some(t) = furrow_plain.as_mut() {
            let addr = t.addr;
            suite.measurements.push(measure(
                opts,
                &load,
                t,
                &single_pids,
                &mut report.profiles,
                |_| gen_mysql::run_lock(addr, true, &params),
            ));
        }
        // Reshard rows (issue #24): copy rate, cut-over pause, and point selects on the table
        // being resharded and on another one, without and with the copy running.
        if let Some(t) = furrow.as_mut().filter(|_| opts.wants("furrow"))
            && let Some(admin) = t.admin
        {
            let addr = t.addr;
            let r =
                crate::reshard::prepare(addr, &user, &password, opts.reshard_rows).and_then(|()| {
                    crate::reshard::run(
                        admin,
                        addr,
                        &user,
                        &password,
                        opts.duration,
                        &mut suite,
                        |load, query| {
                            let p = gen_mysql::ShardParams {
                                endpoint: gen_mysql::Endpoint::NoDb(addr),
                                query,
                                clients: opts.threads,
                                duration: Duration::from_secs(opts.duration),
                                max_requests: opts.max_requests,
                                user: user.clone(),
                                password: password.clone(),
                                db: "bench".into(),
                                rows: if query == gen_mysql::ShardQuery::Point {
                                    opts.shard_rows
                                } else {
                                    opts.reshard_rows
                                },
                            };
                            measure(opts, load, t, &shard_pids, &mut report.profiles, |_| {
                                gen_mysql::run(&p)
                            })
                        },
                    )
                });
            match r {
                Ok(f) => {
                    let note = crate::reshard::note(&f, &suite.measurements);
                    eprintln!("bench: {note}");
                    suite.notes.push(note);
                }
                Err(e) => {
                    eprintln!("bench: reshard rows not measured: {e}");
                    suite.notes.push(format!("Reshard rows not measured: {e}"));
                }
            }
        }
    }
    report.suites.insert("sharding".into(), suite);
    Ok(())
}

/// Creates `items` and loads `rows` rows through the sharded Furrow listener at `addr`. Returns
/// how the table was created: by Furrow's DDL (once per shard), or, if Furrow refused the DDL,
/// directly on every shard (the error is quoted).
fn load_through_furrow(
    addr: SocketAddr,
    user: &str,
    password: &str,
    rows: u64,
    shards: &[(SocketAddr, String)],
) -> Result<String, String> {
    let mut c = MyConn::connect(addr, user, password, None).map_err(|e| e.to_string())?;
    let ddl = match c.query(gen_mysql::SCHEMA) {
        Ok(_) => "CREATE TABLE through Furrow".to_string(),
        Err(e) => {
            for (a, schema) in shards {
                let mut d =
                    MyConn::connect(*a, user, password, Some(schema)).map_err(|e| e.to_string())?;
                d.query(gen_mysql::SCHEMA).map_err(|e| e.to_string())?;
            }
            format!("Furrow refused the CREATE TABLE ({e}), so it was run on every shard directly")
        }
    };
    for stmt in gen_mysql::insert_statements(rows, |_| true) {
        c.query(&stmt).map_err(|e| e.to_string())?;
    }
    Ok(ddl)
}

/// Runs sample scatter and point queries on every endpoint and compares each answer with the
/// first endpoint's (direct); returns a sentence for the report.
fn check_answers(
    endpoints: &[(&str, gen_mysql::Endpoint)],
    user: &str,
    password: &str,
    rows: u64,
) -> String {
    let mut rng = loads::Rng::new(7);
    let mut checked = 0;
    let mut problems: Vec<String> = Vec::new();
    for query in [gen_mysql::ShardQuery::TopN, gen_mysql::ShardQuery::Point] {
        for _ in 0..10 {
            let (sql, key) = query.sql(&mut rng, rows);
            let answers: Vec<Result<_, String>> = endpoints
                .iter()
                .map(|(_, e)| gen_mysql::answer(e, user, password, "bench", query, &sql, key))
                .collect();
            checked += 1;
            let Some(Ok(reference)) = answers.first() else {
                problems.push(format!("direct failed on `{sql}`"));
                continue;
            };
            for ((name, _), a) in endpoints.iter().zip(&answers).skip(1) {
                match a {
                    Ok(rows) if rows == reference => {}
                    Ok(rows) => problems.push(format!(
                        "{name} returned {} rows that differ from direct's {} on `{sql}`",
                        rows.len(),
                        reference.len()
                    )),
                    Err(e) => problems.push(format!("{name} failed on `{sql}`: {e}")),
                }
            }
        }
    }
    let names: Vec<&str> = endpoints.iter().map(|(n, _)| *n).collect();
    if problems.is_empty() {
        format!(
            "{checked} sample queries (10 scatter, 10 point) returned identical rows on {}",
            names.join(", ")
        )
    } else {
        problems.truncate(3);
        format!(
            "MISMATCH on {checked} sample queries over {}: {}",
            names.join(", "),
            problems.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_executor_furrow_runs_only_the_scaling_loads() {
        assert!(runs_load(FURROW_2X, "GET P16"));
        assert!(runs_load(FURROW_2X, "oltp_point_select prepared"));
        assert!(!runs_load(FURROW_2X, "GET P1"));
        assert!(!runs_load(FURROW_2X, "oltp_read_only text"));
        assert!(runs_load(HAPROXY_2X, "oltp_point_select text"));
        assert!(!runs_load(HAPROXY_2X, "SET P1"));
        assert!(runs_load("furrow", "GET P1"));
    }
}
