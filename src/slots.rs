//! `SLOTS ...` on the admin port: online slot migration and migration plans for Redis groups with
//! `distribution = "slots"` (docs/redis-proxy.md, "Slot migration").
//!
//! A migration is a job on a thread of its own (never on the admin task or an executor), one at a
//! time per process. Each of its moves: (1) the config file gets `migrating_to` on the range and is
//! reloaded, so every core moves a key of the range before running its command on the new owner;
//! (2) the mover copies the rest of the range (`proxy_redis::migrate::run_move`); (3) the file
//! names the new owner and is reloaded. The file is edited with `toml_edit`, so comments and the
//! rest of the file stay as they were. A stopped or failed move leaves `migrating_to` in the file:
//! clients keep being served correctly, and the same `SLOTS MIGRATE` resumes it. With the config from
//! the configuration center, (1) and (3) edit the namespace's document item the same way and publish it
//! through the center's API ([`ConfigStore`]), so every proxy of the namespace applies the table.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codec::resp::Command;
use proxy_redis::migrate::{Endpoint, MoveSpec, Progress, run_move, server_load};
use router::config::{Config, RedisDistribution, RedisGroup};
use router::redis::rebalance::{self, Plan, ServerFigures};

use crate::config_store::ConfigStore;
use crate::proxy::Control;

/// Admin help lines.
pub const HELP: &[&str] = &[
    "SLOTS SHOW [group]           slot tables of the slots groups, ranges moving, the running migration",
    "SLOTS PLAN <group> [-server ...]  a balanced plan (keys from INFO, slots sampled); -server: remove it",
    "SLOTS MIGRATE <group> <a-b> <server> [RATE keys/s]  move a slot range online",
    "SLOTS REBALANCE <group> [-server ...] [RATE keys/s]  run the plan that SLOTS PLAN shows",
    "SLOTS STOP                   stop the migration after its current batch (resume: run it again)",
];

/// Keys sampled per server for a plan.
const SAMPLES: usize = 512;
/// Wait between publishing `migrating_to` and starting the mover: commands routed before the
/// reload reach their server meanwhile.
const GRACE: Duration = Duration::from_millis(300);

/// One move of a job, by server names.
#[derive(Debug, Clone)]
struct Move {
    start: u16,
    end: u16,
    to: String,
}

/// The running (or last) migration of this process.
struct Job {
    group: String,
    moves: Vec<Move>,
    current: AtomicUsize,
    progress: Mutex<Arc<Progress>>,
    stop: AtomicBool,
    started: Instant,
    /// running / done / stopped / failed: <why>
    state: Mutex<String>,
    moved: AtomicUsize,
}

static JOB: Mutex<Option<Arc<Job>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `SLOTS <sub> ...`; the reply is a bulk text or an error line (without `-`).
pub fn command(control: &Arc<Control>, cmd: &Command) -> Result<String, String> {
    let arg = |i: usize| String::from_utf8_lossy(cmd.arg(i).unwrap_or_default()).into_owned();
    let words: Vec<String> = (1..cmd.len()).map(arg).collect();
    run(control, &words)
}

/// Runs the words after `SLOTS` (`words[0]` the subcommand, none: `SHOW`): the admin port's
/// command, the HTTP routes (`crate::metrics`) and `furrow slots` end here.
pub fn run(control: &Arc<Control>, words: &[String]) -> Result<String, String> {
    let sub = words
        .first()
        .map_or(String::new(), |w| w.to_ascii_uppercase());
    let config = control.shared.snapshots.current().config.clone();
    let rest: Vec<String> = words.iter().skip(1).cloned().collect();
    match sub.as_str() {
        "SHOW" | "" => Ok(show(&config, rest.first().map(String::as_str))),
        "PLAN" => {
            let group = slots_group(&config, rest.first())?;
            let (removed, _) = options(&rest[1..])?;
            let (plan, memory) = make_plan(group, &removed)?;
            Ok(render_plan(group, &plan, &memory))
        }
        "MIGRATE" => {
            let group = slots_group(&config, rest.first())?;
            let (range, to) = match (rest.get(1), rest.get(2)) {
                (Some(r), Some(t)) => (r, t),
                _ => {
                    return Err(
                        "usage: SLOTS MIGRATE <group> <first-last> <server> [RATE keys/s]".into(),
                    );
                }
            };
            let (start, end) = parse_range(range)?;
            if !group.servers.iter().any(|s| &s.name == to) {
                return Err(format!("group `{}` has no server `{to}`", group.name));
            }
            let (_, rate) = options(&rest[3..])?;
            start_job(
                control,
                group,
                vec![Move {
                    start,
                    end,
                    to: to.clone(),
                }],
                rate,
            )
        }
        "REBALANCE" => {
            let group = slots_group(&config, rest.first())?;
            let (removed, rate) = options(&rest[1..])?;
            let (plan, memory) = make_plan(group, &removed)?;
            let moves = plan
                .moves
                .iter()
                .map(|m| Move {
                    start: m.start,
                    end: m.end,
                    to: group.servers[m.to].name.clone(),
                })
                .collect();
            start_job(control, group, moves, rate).map(|s| s + &render_plan(group, &plan, &memory))
        }
        "STOP" => match lock(&JOB).as_ref() {
            Some(j) => {
                j.stop.store(true, Relaxed);
                lock(&j.progress).stop.store(true, Relaxed);
                Ok("stopping after the current batch\n".into())
            }
            None => Err("no migration has run".into()),
        },
        _ => Err(format!("unknown SLOTS subcommand `{sub}`; try HELP")),
    }
}

/// The `SLOTS` words of an HTTP request on the metrics port (`crate::metrics`): `GET /slots[/group]`
/// (SHOW), `GET /slots/plan/<group>[?remove=a,b]`, `POST /slots/migrate/<group>/<first-last>/<server>
/// [?rate=N]`, `POST /slots/rebalance/<group>[?remove=a,b&rate=N]`, `POST /slots/stop`. `Err`:
/// (HTTP status, message).
pub fn http_words(
    method: &str,
    path: &str,
    query: &str,
) -> Result<Vec<String>, (&'static str, String)> {
    let segs: Vec<&str> = path
        .trim_start_matches("/slots")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut params: Vec<(&str, &str)> = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        params.push((k, v));
    }
    let bad = |m: String| Err(("400 Bad Request", m));
    for w in segs.iter().chain(params.iter().map(|(_, v)| v)) {
        if !w
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:,-".contains(&b))
        {
            return bad(format!(
                "`{w}`: names, ranges and numbers only (A-Z a-z 0-9 _ . : , -)"
            ));
        }
    }
    let mut opts = Vec::new();
    for (k, v) in &params {
        match *k {
            "remove" => opts.extend(
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("-{s}")),
            ),
            "rate" => opts.extend(["RATE".to_string(), v.to_string()]),
            other => return bad(format!("unknown parameter `{other}`; known: remove, rate")),
        }
    }
    let want = |m: &str| -> Result<(), (&'static str, String)> {
        if method == m {
            Ok(())
        } else {
            Err(("405 Method Not Allowed", format!("use {m} for {path}")))
        }
    };
    let words = |sub: &str, args: &[&str], opts: Vec<String>| -> Vec<String> {
        std::iter::once(sub.to_string())
            .chain(args.iter().map(|s| s.to_string()))
            .chain(opts)
            .collect()
    };
    match segs.as_slice() {
        [] | [_]
            if !segs
                .first()
                .is_some_and(|s| ["plan", "migrate", "rebalance", "stop"].contains(s)) =>
        {
            want("GET")?;
            Ok(words("SHOW", &segs, opts))
        }
        ["plan", g] => {
            want("GET")?;
            Ok(words("PLAN", &[g], opts))
        }
        ["migrate", g, range, to] => {
            want("POST")?;
            Ok(words("MIGRATE", &[g, range, to], opts))
        }
        ["rebalance", g] => {
            want("POST")?;
            Ok(words("REBALANCE", &[g], opts))
        }
        ["stop"] => {
            want("POST")?;
            Ok(words("STOP", &[], opts))
        }
        _ => Err((
            "404 Not Found",
            "slot routes: GET /slots[/group], GET /slots/plan/<group>[?remove=a,b], POST \
             /slots/migrate/<group>/<first-last>/<server>[?rate=N], POST \
             /slots/rebalance/<group>[?remove=a,b&rate=N], POST /slots/stop"
                .into(),
        )),
    }
}

/// `furrow slots`: sends `SLOTS <words>` to the admin port at `admin` (after `AUTH` when
/// `password` is given) and returns its reply text, or the error it answered.
pub fn cli(admin: &str, password: Option<&str>, words: &[String]) -> Result<String, String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let s = std::net::TcpStream::connect(admin)
        .map_err(|e| format!("cannot connect to the admin port {admin}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    let mut w = s
        .try_clone()
        .map_err(|e| format!("admin port {admin}: {e}"))?;
    let mut r = BufReader::new(s);
    let send = |w: &mut std::net::TcpStream, args: &[&str]| -> Result<(), String> {
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend(format!("${}\r\n", a.len()).bytes());
            b.extend(a.bytes());
            b.extend(b"\r\n");
        }
        w.write_all(&b)
            .map_err(|e| format!("admin port {admin}: {e}"))
    };
    let read = |r: &mut BufReader<std::net::TcpStream>| -> Result<String, String> {
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("admin port {admin}: {e}"))?;
        let line = line.trim_end();
        if let Some(e) = line.strip_prefix('-') {
            return Err(e.to_string());
        }
        if let Some(n) = line.strip_prefix('$') {
            let n: usize = n
                .parse()
                .map_err(|_| format!("admin port {admin}: bad reply `{line}`"))?;
            if n > 64 << 20 {
                return Err(format!(
                    "admin port {admin}: reply of {n} bytes is too large"
                ));
            }
            let mut buf = vec![0u8; n + 2];
            r.read_exact(&mut buf)
                .map_err(|e| format!("admin port {admin}: {e}"))?;
            buf.truncate(n);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if line.is_empty() {
            return Err(format!("admin port {admin} closed the connection"));
        }
        Ok(line.trim_start_matches('+').to_string())
    };
    if let Some(p) = password {
        send(&mut w, &["AUTH", p])?;
        read(&mut r)?;
    }
    let mut args = vec!["SLOTS"];
    args.extend(words.iter().map(String::as_str));
    send(&mut w, &args)?;
    read(&mut r)
}

fn slots_group<'c>(config: &'c Config, name: Option<&String>) -> Result<&'c RedisGroup, String> {
    let name = name.ok_or("name the group")?;
    let g = config
        .redis_group(name)
        .ok_or_else(|| format!("no redis group `{name}`"))?;
    if g.distribution != RedisDistribution::Slots {
        return Err(format!(
            "group `{name}` is not distribution = \"slots\" (migration moves slots of a slot table)"
        ));
    }
    Ok(g)
}

/// `-server` (removed servers) and `RATE n` options.
fn options(args: &[String]) -> Result<(Vec<String>, u64), String> {
    let mut removed = Vec::new();
    let mut rate = 0;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a.eq_ignore_ascii_case("RATE") {
            rate = it
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or("RATE takes keys per second")?;
        } else if let Some(s) = a.strip_prefix('-') {
            removed.push(s.to_string());
        } else {
            return Err(format!("unexpected argument `{a}`"));
        }
    }
    Ok((removed, rate))
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
        (Ok(a), Ok(b)) if a <= b && b < 16384 => Ok((a, b)),
        _ => Err(format!(
            "invalid slot range `{s}`; expected FIRST-LAST within 0-16383"
        )),
    }
}

/// The owner of every slot by server index (a validated table covers them all).
fn owners(g: &RedisGroup) -> Vec<usize> {
    let mut owner = vec![0; router::redis::SLOT_COUNT];
    for r in &g.slots {
        let s = g
            .servers
            .iter()
            .position(|s| s.name == r.server)
            .unwrap_or(0);
        for slot in r.start..=r.end {
            owner[usize::from(slot)] = s;
        }
    }
    owner
}

/// Measures every server of the group (on a thread: the probe blocks) and plans.
fn make_plan(g: &RedisGroup, removed: &[String]) -> Result<(Plan, Vec<u64>), String> {
    if g.slots.iter().any(|r| r.migrating_to.is_some()) {
        return Err("a range is still moving (`migrating_to`); finish it first".into());
    }
    for r in removed {
        if !g.servers.iter().any(|s| &s.name == r) {
            return Err(format!("group `{}` has no server `{r}`", g.name));
        }
    }
    let endpoints: Vec<Endpoint> = g
        .servers
        .iter()
        .filter_map(|s| Endpoint::of_group(g, &s.name))
        .collect();
    let timeout = g.request_timeout.max(Duration::from_millis(500));
    let figures = std::thread::spawn(move || {
        endpoints
            .iter()
            .map(|e| {
                server_load(e, SAMPLES, timeout)
                    .map(|l| ServerFigures {
                        keys: l.keys,
                        memory: l.used_memory,
                        sampled_slots: l.sampled_slots,
                    })
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .join()
    .map_err(|_| "the load probe panicked".to_string())??;
    let keep: Vec<bool> = g
        .servers
        .iter()
        .map(|s| !removed.contains(&s.name))
        .collect();
    let plan = rebalance::plan(&owners(g), &figures, &keep).map_err(|e| e.to_string())?;
    Ok((plan, figures.iter().map(|f| f.memory).collect()))
}

/// The plan as text; `memory`: `used_memory` of each server when measured.
fn render_plan(g: &RedisGroup, p: &Plan, memory: &[u64]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<12} {:>12} {:>12} {:>8} {:>14}",
        "SERVER", "KEYS NOW", "KEYS AFTER", "SLOTS", "MEMORY BYTES"
    );
    for (i, s) in g.servers.iter().enumerate() {
        let _ = writeln!(
            t,
            "{:<12} {:>12.0} {:>12.0} {:>8} {:>14}",
            s.name,
            p.keys_before[i],
            p.keys_after[i],
            p.slots_after[i],
            memory.get(i).copied().unwrap_or_default()
        );
    }
    let _ = writeln!(
        t,
        "{:<13} {:<12} {:<12} {:>10} {:>12}",
        "RANGE", "FROM", "TO", "EST KEYS", "EST BYTES"
    );
    for m in &p.moves {
        let _ = writeln!(
            t,
            "{:<13} {:<12} {:<12} {:>10.0} {:>12.0}",
            format!("{}-{}", m.start, m.end),
            g.servers[m.from].name,
            g.servers[m.to].name,
            m.keys,
            m.bytes
        );
    }
    if p.moves.is_empty() {
        t.push_str("balanced: nothing to move\n");
    }
    t
}

fn show(config: &Config, only: Option<&str>) -> String {
    let mut t = String::new();
    for g in config
        .redis_groups
        .iter()
        .filter(|g| g.distribution == RedisDistribution::Slots)
        .filter(|g| only.is_none_or(|o| o == g.name))
    {
        let _ = writeln!(t, "group {}", g.name);
        let names: Vec<&str> = g.servers.iter().map(|s| s.name.as_str()).collect();
        let _ = writeln!(t, "  servers: {}", names.join(" "));
        for r in &g.slots {
            let moving = r
                .migrating_to
                .as_ref()
                .map(|m| format!(" -> {m} (moving)"))
                .unwrap_or_default();
            let _ = writeln!(t, "  {}-{} {}{moving}", r.start, r.end, r.server);
        }
    }
    match lock(&JOB).as_ref() {
        Some(j) => {
            let p = lock(&j.progress).clone();
            let i = j.current.load(Relaxed);
            let elapsed = j.started.elapsed().as_secs_f64();
            let moved = j.moved.load(Relaxed) as u64 + p.moved.load(Relaxed);
            let _ = writeln!(
                t,
                "migration of {}: {}; move {}/{}{}; this move: scanned {}, passes {}; moved by the mover in all {}; {:.1} s, {:.0} keys/s",
                j.group,
                lock(&j.state),
                (i + 1).min(j.moves.len()),
                j.moves.len(),
                j.moves
                    .get(i)
                    .map(|m| format!(" ({}-{} -> {})", m.start, m.end, m.to))
                    .unwrap_or_default(),
                p.scanned.load(Relaxed),
                p.passes.load(Relaxed),
                moved,
                elapsed,
                moved as f64 / elapsed.max(0.001)
            );
            let left: Vec<String> = j
                .moves
                .iter()
                .skip(i)
                .map(|m| format!("{}-{} -> {}", m.start, m.end, m.to))
                .collect();
            if lock(&j.state).as_str() == "running" && !left.is_empty() {
                let _ = writeln!(t, "moves left: {}", left.join(", "));
            }
        }
        None => t.push_str("no migration has run\n"),
    }
    t
}

fn start_job(
    control: &Arc<Control>,
    g: &RedisGroup,
    moves: Vec<Move>,
    rate: u64,
) -> Result<String, String> {
    let store = ConfigStore::of(&control.source);
    if g.tls.is_some() {
        return Err(
            "slot migration over TLS backends is not supported (the mover speaks plain TCP)".into(),
        );
    }
    if moves.is_empty() {
        return Ok("balanced: nothing to move\n".into());
    }
    store.check()?;
    let mut slot = lock(&JOB);
    if slot
        .as_ref()
        .is_some_and(|j| lock(&j.state).as_str() == "running")
    {
        return Err("a migration is running (SLOTS SHOW; SLOTS STOP)".into());
    }
    let job = Arc::new(Job {
        group: g.name.clone(),
        moves,
        current: AtomicUsize::new(0),
        progress: Mutex::new(Arc::default()),
        stop: AtomicBool::new(false),
        started: Instant::now(),
        state: Mutex::new("running".into()),
        moved: AtomicUsize::new(0),
    });
    *slot = Some(job.clone());
    let control = control.clone();
    let n = job.moves.len();
    std::thread::Builder::new()
        .name("slot-migration".into())
        .spawn(move || {
            let result = run_job(&control, &store, &job, rate);
            let state = match result {
                Ok(()) => "done".to_string(),
                Err(e) if job.stop.load(Relaxed) => format!("stopped ({e})"),
                Err(e) => format!("failed: {e}"),
            };
            tracing::info!(group = %job.group, state = %state, "slot migration finished");
            *lock(&job.state) = state;
        })
        .map_err(|e| format!("cannot start the migration thread: {e}"))?;
    Ok(format!(
        "migration started: {n} move(s); SLOTS SHOW for progress\n"
    ))
}

fn run_job(control: &Control, store: &ConfigStore, job: &Job, rate: u64) -> Result<(), String> {
    for (i, m) in job.moves.iter().enumerate() {
        job.current.store(i, Relaxed);
        if job.stop.load(Relaxed) {
            return Err("stopped".into());
        }
        let config = control.shared.snapshots.current().config.clone();
        let g = config
            .redis_group(&job.group)
            .ok_or_else(|| format!("group `{}` left the config", job.group))?;
        let from = single_owner(g, m.start, m.end)?;
        if from == m.to {
            continue;
        }
        // 1. Every core moves keys of the range before their commands.
        set_table(
            control,
            store,
            &job.group,
            m.start,
            m.end,
            &from,
            Some(&m.to),
        )?;
        std::thread::sleep(GRACE);
        // 2. The mover copies the rest.
        let spec = MoveSpec {
            from: Endpoint::of_group(g, &from).ok_or("no old owner")?,
            to: Endpoint::of_group(g, &m.to).ok_or("no new owner")?,
            start: m.start,
            end: m.end,
            rate,
            batch: 100,
            timeout: g.request_timeout.max(Duration::from_secs(1)),
        };
        let progress = Arc::new(Progress::default());
        if job.stop.load(Relaxed) {
            progress.stop.store(true, Relaxed);
        }
        let previous = std::mem::replace(&mut *lock(&job.progress), progress.clone());
        job.moved
            .fetch_add(previous.moved.load(Relaxed) as usize, Relaxed);
        let started = Instant::now();
        let moved = run_move(&spec, &progress).map_err(|e| e.to_string())?;
        tracing::info!(group = %job.group, start = m.start, end = m.end, from = %from, to = %m.to, moved, secs = started.elapsed().as_secs_f64(), "slot range moved");
        // 3. The new owner in the table.
        set_table(control, store, &job.group, m.start, m.end, &m.to, None)?;
    }
    job.current.store(job.moves.len(), Relaxed);
    Ok(())
}

/// Slots `start..=end` of `group` served by `server` (moving to `migrating_to`) in the config's source,
/// running in this proxy when this returns.
fn set_table(
    control: &Control,
    store: &ConfigStore,
    group: &str,
    start: u16,
    end: u16,
    server: &str,
    migrating_to: Option<&str>,
) -> Result<(), String> {
    let what = match migrating_to {
        Some(to) => format!("SLOTS: slots {start}-{end} of `{group}` moving {server} -> {to}"),
        None => format!("SLOTS: slots {start}-{end} of `{group}` on {server}"),
    };
    let applied = |c: &Config| {
        c.redis_group(group).is_some_and(|g| {
            g.slots
                .iter()
                .filter(|r| r.start <= end && r.end >= start)
                .all(|r| r.server == server && r.migrating_to.as_deref() == migrating_to)
        })
    };
    store.edit(
        control,
        &what,
        |text| edit_table(text, group, start, end, server, migrating_to),
        applied,
    )
}

/// The one server that owns (or, resuming, owns and moves away) every slot of the range.
fn single_owner(g: &RedisGroup, start: u16, end: u16) -> Result<String, String> {
    let mut owner: Option<&str> = None;
    for r in g.slots.iter().filter(|r| r.start <= end && r.end >= start) {
        if owner.is_some_and(|o| o != r.server) {
            return Err(format!(
                "slots {start}-{end} belong to several servers; move each server's part on its own"
            ));
        }
        owner = Some(&r.server);
    }
    owner
        .map(str::to_string)
        .ok_or_else(|| format!("slots {start}-{end} are in no range"))
}

/// A row of a slot table as the file has it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    server: String,
    migrating_to: Option<String>,
}

/// The text with the slot table of `group` rewritten (see [`set_table`]); the table is written back
/// as one inline array with maximal ranges, everything else is untouched.
fn edit_table(
    text: &str,
    group: &str,
    start: u16,
    end: u16,
    server: &str,
    migrating_to: Option<&str>,
) -> Result<String, String> {
    use toml_edit::{Array, DocumentMut, InlineTable, Item, Value};
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("config file: {e}"))?;
    let g = doc
        .as_table_mut()
        .get_mut("redis_groups")
        .and_then(|r| r.as_table_like_mut())
        .and_then(|r| r.get_mut(group))
        .and_then(|g| g.as_table_like_mut())
        .ok_or_else(|| format!("the file has no [redis_groups.{group}]"))?;
    let slots = g
        .get_mut("slots")
        .ok_or_else(|| format!("[redis_groups.{group}] has no slots"))?;
    let read_row = |get: &dyn Fn(&str) -> Option<String>| -> Result<(u16, u16, Row), String> {
        let range = get("range").ok_or("a slot row without range")?;
        let (a, b) = parse_range(&range)?;
        Ok((
            a,
            b,
            Row {
                server: get("server").ok_or("a slot row without server")?,
                migrating_to: get("migrating_to"),
            },
        ))
    };
    let mut rows = Vec::new();
    if let Some(arr) = slots.as_array() {
        for v in arr.iter() {
            let t = v.as_inline_table().ok_or("slots must be tables")?;
            rows.push(read_row(&|k| {
                t.get(k).and_then(|v| v.as_str()).map(str::to_string)
            })?);
        }
    } else if let Some(arr) = slots.as_array_of_tables() {
        for t in arr.iter() {
            rows.push(read_row(&|k| {
                t.get(k).and_then(|v| v.as_str()).map(str::to_string)
            })?);
        }
    } else {
        return Err("slots must be an array of tables".into());
    }
    let mut per_slot: Vec<Option<Row>> = vec![None; router::redis::SLOT_COUNT];
    for (a, b, row) in rows {
        for s in a..=b {
            per_slot[usize::from(s)] = Some(row.clone());
        }
    }
    let new = Row {
        server: server.to_string(),
        migrating_to: migrating_to.map(str::to_string),
    };
    for s in start..=end {
        per_slot[usize::from(s)] = Some(new.clone());
    }
    let mut out = Array::new();
    let mut s = 0usize;
    while s < per_slot.len() {
        let mut e = s;
        while e + 1 < per_slot.len() && per_slot[e + 1] == per_slot[s] {
            e += 1;
        }
        if let Some(row) = &per_slot[s] {
            let mut t = InlineTable::new();
            let range = if s == e {
                s.to_string()
            } else {
                format!("{s}-{e}")
            };
            t.insert("range", range.into());
            t.insert("server", row.server.as_str().into());
            if let Some(m) = &row.migrating_to {
                t.insert("migrating_to", m.as_str().into());
            }
            let mut v = Value::InlineTable(t);
            v.decor_mut().set_prefix("\n  ");
            out.push_formatted(v);
        }
        s = e + 1;
    }
    out.set_trailing("\n");
    out.set_trailing_comma(true);
    *slots = Item::Value(Value::Array(out));
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# the cache\n[redis_groups.c]\ndistribution = \"slots\" # CRC16\nservers = [{ name = \"a\", address = \"127.0.0.1:1\" }, { name = \"b\", address = \"127.0.0.1:2\" }]\nslots = [{ range = \"0-16383\", server = \"a\" }]\n\n[proxy]\n";

    #[test]
    fn a_range_is_split_marked_and_merged_back() {
        let moving = edit_table(FILE, "c", 100, 199, "a", Some("b")).expect("edit");
        assert!(moving.starts_with("# the cache\n"), "{moving}");
        assert!(
            moving.contains("distribution = \"slots\" # CRC16"),
            "{moving}"
        );
        assert!(
            moving.contains("{ range = \"0-99\", server = \"a\" }"),
            "{moving}"
        );
        assert!(
            moving.contains("{ range = \"100-199\", server = \"a\", migrating_to = \"b\" }"),
            "{moving}"
        );
        assert!(
            moving.contains("{ range = \"200-16383\", server = \"a\" }"),
            "{moving}"
        );
        let parsed = router::config::parse("t", &moving).map(|_| ());
        // Only the group: the parse may complain about a missing listener, never about slots.
        if let Err(e) = parsed {
            assert!(!e.to_string().contains("slots"), "{e}");
        }
        let done = edit_table(&moving, "c", 100, 199, "b", None).expect("edit");
        assert!(
            done.contains("{ range = \"100-199\", server = \"b\" }"),
            "{done}"
        );
        let back = edit_table(&done, "c", 100, 199, "a", None).expect("edit");
        assert!(
            back.contains("{ range = \"0-16383\", server = \"a\" }"),
            "{back}"
        );
        assert!(!back.contains("100-199"), "{back}");
    }

    #[test]
    fn array_of_tables_form_and_errors() {
        let file = "[redis_groups.c]\ndistribution = \"slots\"\n\n[[redis_groups.c.slots]]\nrange = \"0-8191\"\nserver = \"a\"\n\n[[redis_groups.c.slots]]\nrange = \"8192-16383\"\nserver = \"b\"\n";
        let out = edit_table(file, "c", 8192, 8192, "b", Some("a")).expect("edit");
        let doc: toml_edit::DocumentMut = out.parse().expect("toml");
        let arr = doc["redis_groups"]["c"]["slots"]
            .as_array()
            .expect("inline array");
        assert_eq!(arr.len(), 3, "{out}");
        assert!(
            out.contains("{ range = \"8192\", server = \"b\", migrating_to = \"a\" }"),
            "{out}"
        );
        assert!(
            edit_table(file, "x", 0, 1, "a", None)
                .unwrap_err()
                .contains("no [redis_groups.x]")
        );
        assert!(parse_range("5-2").is_err() && parse_range("0-16384").is_err());
        assert_eq!(parse_range("7"), Ok((7, 7)));
    }
}
