//! `RESHARD ...` on the admin port: online resharding of a MySQL sharded table (docs/sharding.md,
//! "Resharding"). `RESHARD PLAN` is the dry run; `RESHARD START` runs the job on a thread of its
//! own (one per process): it marks the table as resharding in the config (`reshard_to`,
//! `reshard_phase = "copy"`, edited with `toml_edit`) and waits until the proxy runs it, so every
//! core dual-writes the table (`proxy_mysql::shard::dual`); copies each old partition in batches;
//! verifies; then cuts over: pauses the table's writes at the proxy, verifies again with no write
//! running, switches the config to `reshard_phase = "cutover"` (the new layout serves, writes still
//! reach both) and resumes. `RESHARD CONFIRM` writes the new rule into the table's entry and ends
//! the dual writes; `RESHARD ABORT` before that removes the marks (the old layout, kept current,
//! serves again). The phases and which command each accepts are
//! `router::sql::shard::reshard::Phase`.
//!
//! Every edit goes through [`ConfigStore`]: the config file (written, reloaded) or, for a proxy
//! configured from the center, the namespace's document item (edited, published, applied).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_mysql::MysqlShared;
use proxy_mysql::shard::gate::Gate;
use proxy_mysql::shard::reshard::{
    Table, Verification, copy_partition_with, repair, table_stats, verify, verify_dirty,
    verify_with,
};
use router::config::Config;
use router::sql::shard::dirty::{Dirty, KeyShape};
use router::sql::shard::reshard::{self as rs, Layout, PartStats, Phase, plan};
use router::sql::shard::{ShardingRules, TableRule};

use crate::config_store::ConfigStore;
use crate::proxy::{ConfigSource, Control};
use crate::reshard_peer::{self as peer, Fenced};
use codec::resp::Command;

/// Admin help lines.
pub const HELP: &[&str] = &[
    "RESHARD PLAN <sharding> <table> <new-rule> [RATE bytes/s]  dry run: which partitions move where, rows, bytes, time",
    "RESHARD START <sharding> <table> <new-rule> [BATCH rows] [VERIFY changed|full] [PEERS addr,addr] [RATE rows/s]  dual writes on, copy, verify, cut over (PEERS: the other proxies' admin ports; RATE: copy at most so many rows/s)",
    "RESHARD STATUS               phase, partition, key reached, rows copied, rows/s, last verify, cut-over pause",
    "RESHARD PAUSE | RESUME       stop copying after the current batch / go on",
    "RESHARD ABORT                before CONFIRM: back to the old layout (dual writes kept it current)",
    "RESHARD CONFIRM              after the cut-over: the new rule replaces the old one in the config",
];

/// Copy rate the time estimate assumes when no `RATE` is given (bytes/s).
const ASSUMED_RATE: u64 = 8 << 20;
/// Rows per copy batch (one locking read and one transaction on the old shard) unless `BATCH`.
const BATCH: u64 = 500;
/// Most rows per batch `BATCH` accepts: a batch is held in memory and in one INSERT per target.
const MAX_BATCH: u64 = 10_000;
/// Rows per verified key range.
const VERIFY_CHUNK: u64 = 1_000;
/// Most passes over what changed while writes run, after the full verify and before the
/// cut-over: each pass is shorter than the one before as long as the writes dirty fewer keys
/// than the pass re-verifies.
const CATCH_UP_PASSES: usize = 4;
/// A catch-up pass that re-verified at most this many keys and ranges ends the catch-up: the
/// cut-over's own verify will be about as small.
const CATCH_UP_DONE: usize = 1_000;

/// Wait between publishing the resharding marks and the copier's first read: statements routed
/// before the reload reach their servers meanwhile (their rows are then copied).
const GRACE: Duration = Duration::from_millis(300);

/// The running (or last) reshard of this process.
struct Job {
    sharding: String,
    table: String,
    new_rule: String,
    batch: u64,
    /// Whether the cut-over verifies the whole table again (`VERIFY full`) instead of what
    /// changed since the last pass.
    full_verify: bool,
    /// The admin addresses of the other proxies that write the table (`PEERS`): their keys are
    /// verified with this proxy's, and the cut-over fences and switches them too.
    peers: Vec<String>,
    /// Most rows per second the copier copies (`RATE`; 0: as fast as it can).
    rate: u64,
    phase: Mutex<Phase>,
    /// ABORT or CONFIRM waiting for the job thread.
    pending: Mutex<Option<rs::Command>>,
    /// The copier's stop flag (pause, abort).
    stop: AtomicBool,
    partition: AtomicUsize,
    partitions: usize,
    after: Mutex<Option<i128>>,
    rows: AtomicU64,
    /// Microseconds spent copying (not paused).
    copy_us: AtomicU64,
    verify: Mutex<String>,
    /// What a refused cut-over found different: re-copied by the next RESUME.
    repair: Mutex<Dirty>,
    cutover: Mutex<String>,
    /// running / done / failed: <why>
    state: Mutex<String>,
    started: Instant,
    /// The progress file (next to the config file, or to the center's snapshot file; none for a
    /// center-configured proxy without `snapshot=PATH`).
    state_file: Option<PathBuf>,
}

static JOB: Mutex<Option<Arc<Job>>> = Mutex::new(None);

/// What `RESHARD START` sets besides the tables (kept in the progress file).
struct Settings {
    batch: u64,
    full_verify: bool,
    peers: Vec<String>,
    rate: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `NAME value` pairs after a subcommand's four fixed words, each name one of `names`
/// (upper case), at most once.
fn options(cmd: &Command, names: &[&str]) -> Result<Vec<(String, String)>, String> {
    let arg = |i: usize| String::from_utf8_lossy(cmd.arg(i).unwrap_or_default()).into_owned();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut i = 5;
    while i < cmd.len() {
        let word = arg(i).to_ascii_uppercase();
        if !names.contains(&word.as_str()) || out.iter().any(|(n, _)| *n == word) {
            return Err(format!("unexpected argument `{word}`"));
        }
        if i + 1 >= cmd.len() {
            return Err(format!("{word} needs a value"));
        }
        out.push((word, arg(i + 1)));
        i += 2;
    }
    Ok(out)
}

/// The number given for option `name` (`default` without it): `ok` says which numbers are
/// accepted, `what` how the error names them.
fn number_option(
    opts: &[(String, String)],
    name: &str,
    default: u64,
    ok: impl Fn(u64) -> bool,
    what: &str,
) -> Result<u64, String> {
    match opts.iter().find(|(n, _)| n == name) {
        None => Ok(default),
        Some((_, v)) => v
            .parse::<u64>()
            .ok()
            .filter(|v| ok(*v))
            .ok_or(format!("{name} takes {what}")),
    }
}

/// Runs `RESHARD <sub> ...`; the reply is a bulk text or an error line (without `-`).
pub fn command(control: &Arc<Control>, cmd: &Command) -> Result<String, String> {
    let arg = |i: usize| String::from_utf8_lossy(cmd.arg(i).unwrap_or_default()).into_owned();
    let sub = arg(1).to_ascii_uppercase();
    let config = control.shared.snapshots.current().config.clone();
    match sub.as_str() {
        "PLAN" => {
            if cmd.len() < 5 {
                return Err(
                    "usage: RESHARD PLAN <sharding> <table> <new-rule> [RATE bytes/s]".into(),
                );
            }
            let opts = options(cmd, &["RATE"])?;
            let rate = number_option(&opts, "RATE", ASSUMED_RATE, |r| r > 0, "bytes per second")?;
            dry_run(&config, &arg(2), &arg(3), &arg(4), rate)
        }
        "START" => {
            if cmd.len() < 5 {
                return Err(
                    "usage: RESHARD START <sharding> <table> <new-rule> [BATCH rows] [VERIFY changed|full] [PEERS addr,addr] [RATE rows/s]".into(),
                );
            }
            let opts = options(cmd, &["BATCH", "VERIFY", "PEERS", "RATE"])?;
            let rate = number_option(&opts, "RATE", 0, |r| r > 0, "rows per second")?;
            let peers = match opts.iter().find(|(n, _)| n == "PEERS") {
                None => Vec::new(),
                Some((_, v)) => parse_peers(v)?,
            };
            let full_verify = match opts.iter().find(|(n, _)| n == "VERIFY") {
                None => false,
                Some((_, v)) if v.eq_ignore_ascii_case("changed") => false,
                Some((_, v)) if v.eq_ignore_ascii_case("full") => true,
                Some((_, v)) => {
                    return Err(format!("VERIFY takes `changed` or `full`, not `{v}`"));
                }
            };
            let batch = number_option(
                &opts,
                "BATCH",
                BATCH,
                |b| (1..=MAX_BATCH).contains(&b),
                &format!("1 to {MAX_BATCH} rows"),
            )?;
            start(
                control,
                &config,
                &arg(2),
                &arg(3),
                &arg(4),
                Settings {
                    batch,
                    full_verify,
                    peers,
                    rate,
                },
            )
        }
        "STATUS" => Ok(status()),
        "PAUSE" | "RESUME" | "ABORT" | "CONFIRM" => operator(control, &sub),
        "" => Err(
            "usage: RESHARD PLAN | START | STATUS | PAUSE | RESUME | ABORT | CONFIRM; try HELP"
                .into(),
        ),
        _ => Err(format!("unknown RESHARD subcommand `{sub}`; try HELP")),
    }
}

/// PAUSE and RESUME act at once (the copier stops after its batch, or goes on); ABORT and
/// CONFIRM are handed to the job thread, which edits the config. All are checked by
/// `Phase::apply` first.
fn operator(control: &Arc<Control>, sub: &str) -> Result<String, String> {
    let job = lock(&JOB).clone().ok_or("no reshard has run")?;
    let c = match sub {
        "PAUSE" => rs::Command::Pause,
        "RESUME" => rs::Command::Resume,
        "ABORT" => rs::Command::Abort,
        _ => rs::Command::Confirm,
    };
    if lock(&job.state).starts_with("interrupted") {
        lock(&job.phase).apply(c)?;
        return interrupted(control, &job, c);
    }
    let mut phase = lock(&job.phase);
    let next = phase.apply(c)?;
    if lock(&job.pending).is_some() {
        return Err("an ABORT or CONFIRM is already under way (RESHARD STATUS)".into());
    }
    match c {
        rs::Command::Pause => {
            job.stop.store(true, Relaxed);
            *phase = next;
            Ok("pausing after the current batch\n".into())
        }
        rs::Command::Resume => {
            job.stop.store(false, Relaxed);
            *phase = next;
            Ok("copying\n".into())
        }
        rs::Command::Abort => {
            job.stop.store(true, Relaxed);
            *lock(&job.pending) = Some(c);
            Ok("aborting: the old layout serves again once the config is rewritten (RESHARD STATUS)\n".into())
        }
        rs::Command::Confirm => {
            *lock(&job.pending) = Some(c);
            Ok("confirming: the new rule goes into the config (RESHARD STATUS)\n".into())
        }
    }
}

/// The `PEERS` list: admin addresses (`host:port`), comma-separated, at most 64 (an empty text is
/// none).
fn parse_peers(v: &str) -> Result<Vec<String>, String> {
    let peers: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if peers.len() > 64 {
        return Err("PEERS takes at most 64 addresses".into());
    }
    for p in &peers {
        if p.rsplit_once(':')
            .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!("PEERS takes admin addresses host:port, not `{p}`"));
        }
    }
    Ok(peers)
}

fn status() -> String {
    let Some(job) = lock(&JOB).clone() else {
        return "no reshard has run\n".into();
    };
    let mut s = String::new();
    let rows = job.rows.load(Relaxed);
    let us = job.copy_us.load(Relaxed).max(1);
    let _ = writeln!(
        s,
        "reshard `{}`.`{}` -> `{}`: {}",
        job.sharding,
        job.table,
        job.new_rule,
        lock(&job.state)
    );
    let _ = writeln!(s, "phase: {:?}", *lock(&job.phase));
    let _ = writeln!(
        s,
        "partition: {} of {}",
        job.partition
            .load(Relaxed)
            .min(job.partitions.saturating_sub(1)),
        job.partitions
    );
    let _ = writeln!(
        s,
        "key reached: {}",
        lock(&job.after).map_or_else(|| "-".to_string(), |k| k.to_string())
    );
    let _ = writeln!(s, "rows copied: {rows}");
    let _ = writeln!(s, "rows/s: {:.0}", rows as f64 * 1e6 / us as f64);
    let _ = writeln!(s, "batch: {} rows", job.batch);
    let _ = writeln!(
        s,
        "rate limit: {}",
        if job.rate == 0 {
            "-".to_string()
        } else {
            format!("{} rows/s", job.rate)
        }
    );
    let _ = writeln!(
        s,
        "peers: {}",
        if job.peers.is_empty() {
            "-".to_string()
        } else {
            job.peers.join(", ")
        }
    );
    let _ = writeln!(s, "last verify: {}", lock(&job.verify));
    let _ = writeln!(s, "cut-over pause: {}", lock(&job.cutover));
    let _ = writeln!(s, "elapsed: {:.1} s", job.started.elapsed().as_secs_f64());
    s
}

/// Where one partition lives and how to log in.
type Place = (
    String,
    String,
    String,
    Option<router::config::BackendTls>,
    String,
    String,
);

fn places(config: &Config, rules: &ShardingRules, rule: &TableRule) -> Result<Vec<Place>, String> {
    (0..rule.partitions())
        .map(|p| {
            let shard = &rules.shards[rule.shard_of(p).min(rules.shards.len() - 1)];
            let g = config
                .mysql_group(&shard.group)
                .ok_or_else(|| format!("unknown group `{}`", shard.group))?;
            Ok((
                g.primary.address.clone(),
                g.user.clone(),
                g.password.clone(),
                g.tls.clone(),
                shard.schema.clone(),
                rule.physical[p].clone(),
            ))
        })
        .collect()
}

async fn open_all(places: &[Place]) -> Result<Vec<Table>, String> {
    let mut out = Vec::with_capacity(places.len());
    for (addr, user, password, tls, schema, table) in places {
        out.push(Table::open_tls(addr, user, password, tls.as_ref(), schema, table).await?);
    }
    Ok(out)
}

/// The section's compiled rules and the old and new table rules (as the file has them, before
/// any resharding marks swap them).
pub(crate) fn rules_of(
    config: &Config,
    sharding: &str,
    table: &str,
    new_rule: &str,
) -> Result<(ShardingRules, TableRule, TableRule), String> {
    let mut section = config
        .sharding()
        .into_iter()
        .find(|s| s.name == sharding)
        .ok_or_else(|| format!("no [sharding.{sharding}]"))?;
    for t in &mut section.tables {
        t.reshard_to = None;
        t.reshard_phase = None;
    }
    let rules = ShardingRules::compile(&section).map_err(|e| e.to_string())?;
    let find = |n: &str| {
        rules
            .tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(n))
            .cloned()
            .ok_or_else(|| format!("[sharding.{sharding}] has no sharded table `{n}`"))
    };
    let (old, new) = (find(table)?, find(new_rule)?);
    rs::check(
        Layout {
            rule: &old,
            shards: &rules.shards,
        },
        Layout {
            rule: &new,
            shards: &rules.shards,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok((rules, old, new))
}

/// What the job thread works with: both layouts' connections, the columns, the key columns.
struct Work {
    old: Vec<Table>,
    new: Vec<Table>,
    new_rule: TableRule,
    columns: Vec<String>,
    pk_index: usize,
    key_index: usize,
    /// The primary key as dual writes read it from statements (the dirty-key tracking).
    shape: KeyShape,
}

/// Checks both layouts on their servers: the same columns in the same order, an integer
/// primary key, the shard key among the columns, and an empty new layout (a new table with rows,
/// e.g. left by an aborted reshard, would mix stale rows into the copy).
async fn prepare(
    old_places: &[Place],
    new_places: &[Place],
    new_rule: TableRule,
    key: &str,
    auto_id: Option<&str>,
    resumed: bool,
) -> Result<Work, String> {
    let mut old = open_all(old_places).await?;
    let mut new = open_all(new_places).await?;
    let (columns, pk_index) = old[0].columns().await?;
    for t in old.iter_mut().skip(1).chain(new.iter_mut()) {
        let (c, _) = t.columns().await?;
        if c != columns {
            return Err(format!(
                "`{}` has columns ({}) but `{}` has ({}): both layouts need the same columns in the same order",
                t.table,
                c.join(", "),
                old_places[0].5,
                columns.join(", ")
            ));
        }
    }
    let key_index = columns
        .iter()
        .position(|c| c.eq_ignore_ascii_case(key))
        .ok_or_else(|| format!("the table has no column `{key}` (the shard key)"))?;
    // A resumed job's new tables hold what it copied.
    for t in new.iter_mut().filter(|_| !resumed) {
        let sql = format!("SELECT COUNT(*) FROM `{}`", t.table.replace('`', "``"));
        let n = t
            .query(&sql)
            .await?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default();
        if n != "0" {
            return Err(format!(
                "new partition table `{}` holds {n} rows; the new layout must start empty (empty it, e.g. after an ABORT)",
                t.table
            ));
        }
    }
    // Another unique index lets REPLACE and ON DUPLICATE KEY UPDATE change rows whose key the
    // statement does not name.
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = '{}' AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY'",
        old[0].table.replace('\\', "\\\\").replace('\'', "''")
    );
    let other_unique = old[0]
        .query(&sql)
        .await?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .is_some_and(|n| n != "0");
    let shape = KeyShape {
        pk: columns[pk_index].clone(),
        pk_index,
        columns: columns.len(),
        other_unique,
        auto_id_pk: auto_id.is_some_and(|a| a.eq_ignore_ascii_case(&columns[pk_index])),
    };
    Ok(Work {
        old,
        new,
        new_rule,
        columns,
        pk_index,
        key_index,
        shape,
    })
}

fn start(
    control: &Arc<Control>,
    config: &Config,
    sharding: &str,
    table: &str,
    new_rule: &str,
    settings: Settings,
) -> Result<String, String> {
    let batch = settings.batch;
    // Its own address as a peer would fence its own gate against itself.
    let own = config
        .proxy
        .admin
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 7379)));
    if let Some(p) = settings
        .peers
        .iter()
        .find(|p| p.parse::<std::net::SocketAddr>().ok() == Some(own))
    {
        return Err(format!(
            "PEERS names this proxy's own admin port `{p}`; name the other proxies only"
        ));
    }
    if let Some(j) = lock(&JOB).as_ref()
        && lock(&j.state).as_str() == "running"
    {
        return Err("a reshard is running (RESHARD STATUS; RESHARD ABORT)".into());
    }
    let (rules, old, new) = rules_of(config, sharding, table, new_rule)?;
    let section = config
        .sharding()
        .into_iter()
        .find(|s| s.name == sharding)
        .ok_or_else(|| format!("no [sharding.{sharding}]"))?;
    if let Some(t) = section.tables.iter().find(|t| t.reshard_to.is_some()) {
        return Err(format!(
            "table `{}` is marked as resharding in the config (reshard_to = \"{}\"); finish or abort that first (RESHARD STATUS; RESUME, CONFIRM or ABORT an interrupted one)",
            t.name,
            t.reshard_to.as_deref().unwrap_or_default()
        ));
    }
    let (old_places, new_places) = (places(config, &rules, &old)?, places(config, &rules, &new)?);
    // A namespace with unpublished changes is refused now rather than at the first edit.
    ConfigStore::of(&control.source).check()?;
    let mut slot = lock(&JOB);
    if let Some(j) = slot.as_ref()
        && lock(&j.state).as_str() == "running"
    {
        return Err("a reshard is running (RESHARD STATUS; RESHARD ABORT)".into());
    }
    let job = Arc::new(Job::new(
        sharding,
        &old,
        &new.name,
        settings,
        Phase::Copying,
        state_file(&control.source),
    ));
    spawn(
        control,
        job.clone(),
        old_places,
        new_places,
        &old,
        new,
        false,
    )?;
    *slot = Some(job);
    Ok(format!(
        "reshard of `{table}` started: dual writes on, copying {} partitions in batches of {batch} rows; RESHARD STATUS for progress\n",
        old.partitions()
    ))
}

impl Job {
    fn new(
        sharding: &str,
        old: &TableRule,
        new_rule: &str,
        settings: Settings,
        phase: Phase,
        state_file: Option<PathBuf>,
    ) -> Job {
        let Settings {
            batch,
            full_verify,
            peers,
            rate,
        } = settings;
        Job {
            sharding: sharding.to_string(),
            table: old.name.clone(),
            new_rule: new_rule.to_string(),
            batch,
            full_verify,
            peers,
            rate,
            phase: Mutex::new(phase),
            pending: Mutex::new(None),
            stop: AtomicBool::new(false),
            partition: AtomicUsize::new(0),
            partitions: old.partitions(),
            after: Mutex::new(None),
            rows: AtomicU64::new(0),
            copy_us: AtomicU64::new(0),
            verify: Mutex::new("-".into()),
            repair: Mutex::new(Dirty::default()),
            cutover: Mutex::new("-".into()),
            state: Mutex::new("running".into()),
            started: Instant::now(),
            state_file,
        }
    }
}

/// Starts the job thread: it checks both layouts (the reply waits for that) and runs the job;
/// `resumed`: the job was interrupted by a restart (the file already marks the table, the new
/// tables hold what was copied).
fn spawn(
    control: &Arc<Control>,
    job: Arc<Job>,
    old_places: Vec<Place>,
    new_places: Vec<Place>,
    old: &TableRule,
    new: TableRule,
    resumed: bool,
) -> Result<(), String> {
    // The checks run on the job thread (they block on the network); the command answers with
    // their outcome.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    let control = control.clone();
    let key = old.key.clone();
    let auto_id = old.auto_id.clone();
    std::thread::Builder::new()
        .name("reshard".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let mut work = match rt.block_on(prepare(
                &old_places,
                &new_places,
                new,
                &key,
                auto_id.as_deref(),
                resumed,
            )) {
                Ok(w) => w,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            // Every peer reachable, logged in, with both rules and no job of its own.
            let check = peer::args("CHECK", &job.sharding, &job.table, &[&job.new_rule]);
            let replies = peer::call_all(&control, &job.peers, &check, Duration::from_secs(5));
            if let Some(e) = peer::first_error(&replies) {
                let _ = tx.send(Err(e));
                return;
            }
            *lock(&job.state) = "running".into();
            let _ = tx.send(Ok(()));
            let result = run(&rt, &control, &job, &mut work, resumed);
            gate_of(&control, &job.sharding, &job.table).untrack();
            let state = match result {
                Ok(s) => s,
                Err(e) => format!("failed: {e}"),
            };
            tracing::info!(table = %job.table, state = %state, "reshard finished");
            *lock(&job.state) = state;
        })
        .map_err(|e| format!("cannot start the reshard thread: {e}"))?;
    match rx.recv() {
        Ok(r) => r,
        Err(_) => Err("the reshard thread ended before its checks".into()),
    }
}

/// The progress file next to `file` (the config file, or the center's snapshot file), named after it.
fn state_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".reshard-state");
    PathBuf::from(p)
}

/// Where the progress of a reshard of this proxy is kept: next to the config file, or next to the
/// local snapshot file of a center-configured proxy (`snapshot=PATH` in `--config-source`; the
/// one file such a proxy keeps on its own). Without a snapshot file there is none: a restarted
/// proxy still finds the marks in the center's config, and RESUME copies again from the first
/// partition (`INSERT IGNORE` skips what is there).
fn state_file(source: &ConfigSource) -> Option<PathBuf> {
    match source {
        ConfigSource::File(p) => Some(state_path(p)),
        ConfigSource::Center { snapshot, .. } => snapshot.as_deref().map(state_path),
    }
}

/// Writes the job's progress (what a restarted proxy resumes from): after each copied batch, at
/// each partition and at the cut-over. Written to a temporary file and renamed (a kill leaves
/// the old or the new file, never half of one); not synced: after a power loss the copy resumes
/// from an older key, which only copies some rows again (`INSERT IGNORE`).
fn save_state(job: &Job) {
    use toml_edit::{DocumentMut, value};
    let mut doc = DocumentMut::new();
    doc["sharding"] = value(job.sharding.as_str());
    doc["table"] = value(job.table.as_str());
    doc["new_rule"] = value(job.new_rule.as_str());
    doc["batch"] = value(job.batch as i64);
    doc["verify"] = value(if job.full_verify { "full" } else { "changed" });
    doc["peers"] = value(job.peers.join(","));
    doc["rate"] = value(job.rate as i64);
    doc["partition"] = value(job.partition.load(Relaxed) as i64);
    if let Some(k) = *lock(&job.after) {
        doc["after"] = value(k.to_string());
    }
    doc["rows"] = value(job.rows.load(Relaxed) as i64);
    let phase = match *lock(&job.phase) {
        Phase::CutOver => "cutover",
        _ => "copy",
    };
    doc["phase"] = value(phase);
    let text = format!(
        "# progress of a reshard (docs/sharding.md); written by furrow, removed when it ends\n{doc}"
    );
    let Some(file) = &job.state_file else {
        return;
    };
    let tmp = file.with_extension("reshard-state-tmp");
    let r = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = r {
        tracing::warn!(file = %file.display(), error = %e, "cannot write the reshard progress");
    }
}

fn remove_state(job: &Job) {
    if let Some(file) = &job.state_file {
        let _ = std::fs::remove_file(file);
    }
}

/// What a progress file says (only what resuming needs).
#[derive(Debug, Default, PartialEq, Eq)]
struct Saved {
    sharding: String,
    table: String,
    new_rule: String,
    batch: u64,
    full_verify: bool,
    peers: Vec<String>,
    rate: u64,
    partition: usize,
    after: Option<i128>,
    rows: u64,
}

fn read_state(text: &str) -> Result<Saved, String> {
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let s = |k: &str| {
        doc.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let n = |k: &str| doc.get(k).and_then(|v| v.as_integer()).unwrap_or(0).max(0) as u64;
    Ok(Saved {
        sharding: s("sharding"),
        table: s("table"),
        new_rule: s("new_rule"),
        batch: n("batch").clamp(1, MAX_BATCH),
        full_verify: s("verify") == "full",
        peers: parse_peers(&s("peers")).unwrap_or_default(),
        rate: n("rate"),
        partition: n("partition") as usize,
        after: doc
            .get("after")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok()),
        rows: n("rows"),
    })
}

/// At start-up: a table the config marks as resharding belongs to a job that a restart (or a
/// crash) interrupted. It is shown by `RESHARD STATUS` as interrupted, in the phase the file
/// says, with the progress file's partition and key (from the first partition without one); `RESUME` goes on copying from there, `ABORT`
/// gives up, and after the cut-over `CONFIRM` finishes it. The dual writes run meanwhile (the
/// marks are in the config the proxy started with).
pub fn restore(control: &Arc<Control>) {
    let config = control.shared.snapshots.current().config.clone();
    let marked = config.sharding().into_iter().find_map(|s| {
        s.tables.iter().find_map(|t| {
            t.reshard_to.as_ref().map(|to| {
                (
                    s.name.clone(),
                    t.name.clone(),
                    to.clone(),
                    t.reshard_phase.as_deref() == Some("cutover"),
                )
            })
        })
    });
    let state_file = state_file(&control.source);
    let Some((sharding, table, new_rule, cut_over)) = marked else {
        // A progress file without marks: the job ended between its last two steps.
        if let Some(f) = &state_file {
            let _ = std::fs::remove_file(f);
        }
        return;
    };
    let saved = state_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| read_state(&t).ok())
        .filter(|s| {
            s.sharding == sharding
                && s.table.eq_ignore_ascii_case(&table)
                && s.new_rule.eq_ignore_ascii_case(&new_rule)
        })
        .unwrap_or_default();
    let old = match rules_of(&config, &sharding, &table, &new_rule) {
        Ok((_, old, _)) => old,
        Err(e) => {
            tracing::warn!(table = %table, error = %e, "cannot restore the interrupted reshard");
            return;
        }
    };
    gate_of(control, &sharding, &old.name).set_new_serves(cut_over);
    let job = Job::new(
        &sharding,
        &old,
        &new_rule,
        Settings {
            batch: if saved.batch == 0 { BATCH } else { saved.batch },
            full_verify: saved.full_verify,
            peers: saved.peers.clone(),
            rate: saved.rate,
        },
        if cut_over {
            Phase::CutOver
        } else {
            Phase::Paused
        },
        state_file,
    );
    job.stop.store(true, Relaxed);
    job.partition.store(saved.partition, Relaxed);
    *lock(&job.after) = saved.after;
    job.rows.store(saved.rows, Relaxed);
    *lock(&job.state) = if cut_over {
        "interrupted after the cut-over (the proxy restarted): RESHARD CONFIRM or RESHARD ABORT"
            .into()
    } else {
        format!(
            "interrupted (the proxy restarted): RESHARD RESUME copies on from partition {} after key {}, RESHARD ABORT gives up",
            saved.partition,
            saved.after.map_or("-".to_string(), |k| k.to_string())
        )
    };
    tracing::info!(table = %table, "an interrupted reshard was found in the config");
    let job = Arc::new(job);
    *lock(&JOB) = Some(job.clone());
    if cut_over && !job.peers.is_empty() {
        // Killed between its own switch and its peers' (their fences' leases ended since): a
        // file-configured peer may still write the old layout first. Switch them, fenced.
        let control = control.clone();
        let _ = std::thread::Builder::new()
            .name("reshard-peers".into())
            .spawn(move || {
                // Its own writes wait meanwhile (they take the new layout first).
                let gate = gate_of(&control, &job.sharding, &job.table);
                let rt = tokio::runtime::Builder::new_current_thread().build();
                let _paused = rt.as_ref().ok().map(|rt| rt.block_on(gate.pause()));
                let r = Fenced::fence(&control, &job.peers, &job.sharding, &job.table).and_then(
                    |(mut f, _)| {
                        let r = apply_on_peers(&control, &job, Edit::Mark(&job.new_rule, "cutover"));
                        f.release(&control);
                        r
                    },
                );
                if let Err(e) = r {
                    tracing::warn!(error = %e, "reshard: the peers could not be switched after the restart");
                    *lock(&job.state) = format!(
                        "interrupted after the cut-over (the proxy restarted); the peers could not be switched to it ({e}): RESHARD ABORT (fences and switches every proxy back) or RESHARD CONFIRM"
                    );
                }
            });
    }
}

/// Follows a config about to be published: the write gate of each table it marks as resharding
/// takes the order its phase says (`cutover`: the new layout first). The job and `RESHARD PEER
/// APPLY` set the gate before their edit already; this makes a proxy that only receives the edit
/// (a center-configured peer whose job died before telling it) follow it too.
pub fn follow_phases(control: &Control, config: &Config) {
    for s in config.sharding() {
        for t in s.tables.iter().filter(|t| t.reshard_to.is_some()) {
            gate_of(control, &s.name, &t.name)
                .set_new_serves(t.reshard_phase.as_deref() == Some("cutover"));
        }
    }
}

/// RESUME, ABORT or CONFIRM of a job that a restart interrupted (no job thread runs).
fn interrupted(control: &Arc<Control>, job: &Arc<Job>, c: rs::Command) -> Result<String, String> {
    let config = control.shared.snapshots.current().config.clone();
    match c {
        rs::Command::Resume => {
            let (rules, old, new) = rules_of(&config, &job.sharding, &job.table, &job.new_rule)?;
            let (old_places, new_places) = (
                places(&config, &rules, &old)?,
                places(&config, &rules, &new)?,
            );
            job.stop.store(false, Relaxed);
            set_phase(job, Phase::Copying);
            let r = spawn(
                control,
                job.clone(),
                old_places,
                new_places,
                &old,
                new,
                true,
            );
            if let Err(e) = r {
                job.stop.store(true, Relaxed);
                set_phase(job, Phase::Paused);
                return Err(e);
            }
            Ok(format!(
                "copying again from partition {} after key {}\n",
                job.partition.load(Relaxed),
                lock(&job.after).map_or("-".to_string(), |k| k.to_string())
            ))
        }
        rs::Command::Abort => {
            let cut_over = *lock(&job.phase) == Phase::CutOver;
            let (control, j) = (control.clone(), job.clone());
            let done = std::thread::spawn(move || -> Result<String, String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                abort(&rt, &control, &j, cut_over)
            })
            .join()
            .map_err(|_| "the abort panicked".to_string())??;
            *lock(&job.state) = done;
            Ok("aborted: the old layout serves again\n".into())
        }
        rs::Command::Confirm => {
            // On a thread of its own: the center's API needs a runtime of its own.
            let (control, j) = (control.clone(), job.clone());
            std::thread::spawn(move || fleet_edit(&control, &j, Edit::Confirm(&j.new_rule)))
                .join()
                .map_err(|_| "the confirm panicked".to_string())??;
            remove_state(job);
            *lock(&job.state) = "done (confirmed)".into();
            set_phase(job, Phase::Confirmed);
            Ok("confirmed: the new rule is the table's\n".into())
        }
        rs::Command::Pause => Err("the reshard is not copying (interrupted)".into()),
    }
}

/// What an operator's ABORT or CONFIRM left for the job thread, if any.
fn take_pending(job: &Job) -> Option<rs::Command> {
    lock(&job.pending).take()
}

fn set_phase(job: &Job, p: Phase) {
    *lock(&job.phase) = p;
}

/// The job: mark, copy, verify, cut over, then wait for CONFIRM or ABORT. `Ok`: the final
/// state text.
fn run(
    rt: &tokio::runtime::Runtime,
    control: &Arc<Control>,
    job: &Job,
    w: &mut Work,
    resumed: bool,
) -> Result<String, String> {
    let gate = gate_of(control, &job.sharding, &job.table);
    if !resumed {
        gate.set_new_serves(false);
        fleet_edit(control, job, Edit::Mark(&job.new_rule, "copy"))?;
        save_state(job);
        std::thread::sleep(GRACE);
    } else if !job.peers.is_empty() {
        // Killed before every peer had the marks, a peer would not dual-write (and its dirty
        // keys would be empty): they are applied again (a peer that has them changes nothing).
        apply_on_peers(control, job, Edit::Mark(&job.new_rule, "copy"))?;
        std::thread::sleep(GRACE);
    }
    loop {
        // Copy (or wait while paused), then verify and cut over.
        match copy_all(rt, job, w)? {
            Some(rs::Command::Abort) => return abort(rt, control, job, false),
            Some(_) => continue,
            None => {}
        }
        set_phase(job, Phase::Verifying);
        let carried = match verify_while_writing(rt, control, job, w, &gate) {
            Ok(c) => c,
            Err(e) if e.contains("peer ") => {
                // A peer that does not answer: paused for the operator, like a refused cut-over.
                *lock(&job.verify) = format!("stopped: {e}");
                *lock(&job.cutover) = format!("refused before it began: {e}");
                set_phase(job, Phase::Paused);
                job.stop.store(true, Relaxed);
                continue;
            }
            Err(e) => return Err(e),
        };
        if take_pending(job) == Some(rs::Command::Abort) {
            return abort(rt, control, job, false);
        }
        if *lock(&job.phase) == Phase::Paused {
            continue;
        }
        set_phase(job, Phase::CuttingOver);
        match cut_over(rt, control, job, w, &gate, carried)? {
            true => break,
            false => {
                // Mismatched ranges with every write paused: a write bypassed the proxy or a
                // dual write failed half-way. Stay paused for the operator; RESUME re-copies
                // what differs.
                set_phase(job, Phase::Paused);
                job.stop.store(true, Relaxed);
            }
        }
    }
    set_phase(job, Phase::CutOver);
    save_state(job);
    loop {
        match take_pending(job) {
            Some(rs::Command::Abort) => match abort(rt, control, job, true) {
                Ok(done) => return Ok(done),
                // A peer that cannot be fenced or switched back: nothing changed, still CutOver.
                Err(e) => {
                    *lock(&job.cutover) =
                        format!("ABORT refused, the new layout still serves: {e}");
                    tracing::warn!(table = %job.table, error = %e, "reshard abort refused");
                }
            },
            Some(rs::Command::Confirm) => {
                fleet_edit(control, job, Edit::Confirm(&job.new_rule))?;
                remove_state(job);
                *lock(&job.state) = "done (confirmed)".into();
                set_phase(job, Phase::Confirmed);
                return Ok("done (confirmed)".into());
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Copies every partition from where the job stands. `Some(cmd)`: interrupted by an operator's
/// ABORT (or, after a RESUME from a failed cut-over, asked to go round again).
fn copy_all(
    rt: &tokio::runtime::Runtime,
    job: &Job,
    w: &mut Work,
) -> Result<Option<rs::Command>, String> {
    let n = w.old.len();
    let mut pacer = Pacer::new(job.rate, Instant::now(), job.rows.load(Relaxed));
    loop {
        if let Some(c) = take_pending(job) {
            return Ok(Some(c));
        }
        if job.stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let pieces = std::mem::take(&mut *lock(&job.repair));
        if !pieces.is_empty() {
            let (keys, ranges) = pieces.size();
            let mut tries = 0;
            let rows = loop {
                let r = rt.block_on(repair(
                    &mut w.old,
                    &mut w.new,
                    &w.new_rule,
                    &w.columns,
                    w.pk_index,
                    w.key_index,
                    &pieces,
                ));
                match r {
                    Err(e) if tries < 5 && (e.contains("Deadlock") || e.contains("Lock wait")) => {
                        tries += 1;
                    }
                    r => break r?,
                }
            };
            *lock(&job.verify) = format!(
                "re-copied what differed ({keys} keys, {ranges} ranges, {rows} rows); verifying again"
            );
        }
        let p = job.partition.load(Relaxed);
        if p >= n {
            return Ok(None);
        }
        let after = *lock(&job.after);
        tracing::info!(table = %job.table, partition = p, after = ?after, "reshard copying");
        let mut last = Instant::now();
        let base_rows = job.rows.load(Relaxed);
        let (old, new) = (&mut w.old, &mut w.new);
        let stats = rt.block_on(copy_partition_with(
            &mut old[p],
            new,
            &w.new_rule,
            &w.columns,
            w.pk_index,
            w.key_index,
            job.batch,
            after,
            &job.stop,
            &mut |s| {
                job.rows.store(base_rows + s.rows, Relaxed);
                *lock(&job.after) = s.after;
                job.copy_us
                    .fetch_add(last.elapsed().as_micros() as u64, Relaxed);
                save_state(job);
                // `RATE`: wait until the rows copied are due (a PAUSE cuts the wait short).
                let due = Instant::now() + pacer.wait(base_rows + s.rows, Instant::now());
                while Instant::now() < due && !job.stop.load(Relaxed) {
                    std::thread::sleep((due - Instant::now()).min(Duration::from_millis(20)));
                }
                last = Instant::now();
            },
        ))?;
        job.rows.store(base_rows + stats.rows, Relaxed);
        if job.stop.load(Relaxed) {
            // Paused (or aborting) after a batch: resume from the key reached.
            *lock(&job.after) = stats.after;
            continue;
        }
        job.partition.fetch_add(1, Relaxed);
        *lock(&job.after) = None;
        save_state(job);
    }
}

/// Most time a copier that fell behind its `RATE` may catch up on at full speed.
const MAX_CREDIT: Duration = Duration::from_secs(1);

/// Paces the copier to at most `rate` rows per second (`RATE`; 0: no limit), measured from when
/// it started, with at most [`MAX_CREDIT`] of time it fell behind (a slow or paused stretch does
/// not buy a long burst at full speed afterwards).
struct Pacer {
    rate: u64,
    start: Instant,
    /// Rows copied before `start`.
    base: u64,
}

impl Pacer {
    fn new(rate: u64, now: Instant, rows: u64) -> Pacer {
        Pacer {
            rate,
            start: now,
            base: rows,
        }
    }

    /// How long to wait at `now` once `rows` rows (in all) are copied.
    fn wait(&mut self, rows: u64, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let done = rows.saturating_sub(self.base) as f64 / self.rate as f64;
        let due = self.start + Duration::from_secs_f64(done.min(1e9));
        let behind = now.saturating_duration_since(due);
        if behind > MAX_CREDIT {
            self.start += behind - MAX_CREDIT;
        }
        let due = self.start + Duration::from_secs_f64(done.min(1e9));
        due.saturating_duration_since(now)
    }
}

/// The verify while writes run: a full pass, which starts recording the keys dual writes touch
/// from the moment its ranges are cut, then up to [`CATCH_UP_PASSES`] passes over only what
/// changed (and what differed) since the pass before, each while writes go on. Returns what the
/// last pass found different: the cut-over verifies it again with what changed since.
fn verify_while_writing(
    rt: &tokio::runtime::Runtime,
    control: &Control,
    job: &Job,
    w: &mut Work,
    gate: &Gate,
) -> Result<Dirty, String> {
    let shape = w.shape.clone();
    let pk = w.columns[w.pk_index].clone();
    let mut tracked = Ok(());
    let v = rt.block_on(verify_with(
        &mut w.old,
        &mut w.new,
        &w.columns,
        &pk,
        VERIFY_CHUNK,
        &mut |ranges| {
            gate.track(shape.clone(), ranges);
            // The peers record from now on too (before the first checksum).
            if !job.peers.is_empty() {
                let grid = peer::grid_text(router::sql::shard::dirty::DirtySet::grid(ranges));
                let a = peer::args(
                    "TRACK",
                    &job.sharding,
                    &job.table,
                    &[&peer::shape_text(&shape), &grid],
                );
                let replies = peer::call_all(control, &job.peers, &a, Duration::from_secs(5));
                if let Some(e) = peer::first_error(&replies) {
                    tracked = Err(e);
                }
            }
        },
    ))?;
    tracked.map_err(|e| format!("cannot start the peers' key tracking: {e}"))?;
    *lock(&job.verify) = describe(&v, "while writes ran");
    let mut carried = Dirty {
        ranges: v.mismatches.iter().map(|m| m.range).collect(),
        ..Dirty::default()
    };
    if job.full_verify {
        return Ok(carried);
    }
    for pass in 1..=CATCH_UP_PASSES {
        if job.stop.load(Relaxed) || lock(&job.pending).is_some() {
            break;
        }
        let mut d = gate.take_dirty();
        d.merge(carried);
        d.merge(peers_dirty(control, job));
        if d.all {
            // A write whose keys are unknown: the cut-over verifies everything.
            return Ok(d);
        }
        let v = rt.block_on(verify_dirty(&mut w.old, &mut w.new, &w.columns, &pk, &d))?;
        *lock(&job.verify) = describe(&v, &format!("while writes ran (catch-up pass {pass})"));
        let spans: Vec<(i128, i128)> = v.mismatches.iter().map(|m| m.range).collect();
        carried = d.within(&spans);
        let (keys, ranges) = d.size();
        if keys + ranges * VERIFY_CHUNK as usize <= CATCH_UP_DONE {
            break;
        }
    }
    Ok(carried)
}

/// What the peers' dual writes touched since the last call: everything again when one does not
/// answer (its keys are unknown; the cut-over then refuses it by name).
fn peers_dirty(control: &Control, job: &Job) -> Dirty {
    let mut d = Dirty::default();
    if job.peers.is_empty() {
        return d;
    }
    let a = peer::args("DIRTY", &job.sharding, &job.table, &[]);
    for (r, p) in peer::call_all(control, &job.peers, &a, Duration::from_secs(5))
        .into_iter()
        .zip(&job.peers)
    {
        match r.and_then(|t| peer::parse_dirty(&t)) {
            Ok(x) => d.merge(x),
            Err(e) => {
                tracing::warn!(peer = %p, error = %e, "reshard: no dirty keys from a peer");
                d.all = true;
            }
        }
    }
    d
}

fn describe(v: &Verification, when: &str) -> String {
    let what = if v.keys > 0 {
        format!(
            "{} keys and {} ranges",
            v.keys,
            v.ranges.len() - v.keys.div_ceil(1_000)
        )
    } else {
        format!("{} ranges", v.ranges.len())
    };
    let mut s = format!(
        "{what} {when}: old {} rows, new {} rows, {}",
        v.old.rows,
        v.new.rows,
        if v.mismatches.is_empty() {
            "checksums equal".to_string()
        } else {
            format!("{} ranges differ", v.mismatches.len())
        }
    );
    for m in v.mismatches.iter().take(5) {
        let _ = write!(
            s,
            "; [{}, {}) old {} rows new {} rows",
            m.range.0, m.range.1, m.old.rows, m.new.rows
        );
    }
    s
}

/// The cut-over: writes paused at this proxy and fenced at its peers, verified with nothing
/// writing (what changed here and at every peer since the last pass), the rule switched
/// everywhere, writes resumed. `false`: refused, nothing switched: the checksums differed (their
/// ranges wait in `job.repair` for the RESUME), or a peer could not be fenced or switched (named
/// in the cut-over line of STATUS). With the center the switch is a publish and the wait until
/// this proxy and each peer applied it, under the pause: the new layout already serves from
/// `set_new_serves`, but a write must not resume before the config that every proxy of the
/// namespace (and a restart) reads says so.
fn cut_over(
    rt: &tokio::runtime::Runtime,
    control: &Arc<Control>,
    job: &Job,
    w: &mut Work,
    gate: &Gate,
    carried: Dirty,
) -> Result<bool, String> {
    let t0 = Instant::now();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let refuse = |why: &str| {
        *lock(&job.cutover) = format!("{:.1} ms, refused: {why}", ms(t0.elapsed()));
        tracing::warn!(table = %job.table, why = %why, "reshard cut-over refused");
        Ok(false)
    };
    // The peers first: their fences' replies carry what their writes touched until then.
    let (mut fenced, peer_dirty) =
        match Fenced::fence(control, &job.peers, &job.sharding, &job.table) {
            Ok(f) => f,
            Err(e) => return refuse(&format!("cannot fence every peer: {e}")),
        };
    if std::env::var("FURROW_TEST_FAILPOINT")
        .is_ok_and(|v| v.split(',').any(|p| p == "reshard-die-fenced"))
    {
        // Test-only: the job's proxy dies with its peers fenced; their leases must lift them.
        tracing::error!("test failpoint: killing the proxy with its peers fenced (SIGKILL)");
        // SAFETY: kill(2) on our own pid with a constant signal; no memory is touched.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    let paused = rt.block_on(gate.pause());
    let waited = t0.elapsed();
    // With no write running: what changed since the last pass (every dual write marked its
    // keys before letting go of the gate) and what differed then; everything when asked, or
    // when a write's keys were unknown.
    let mut dirty = gate.take_dirty();
    dirty.merge(carried);
    dirty.merge(peer_dirty);
    let pk = w.columns[w.pk_index].clone();
    let (v, when) = if job.full_verify || dirty.all {
        let v = rt.block_on(verify(
            &mut w.old,
            &mut w.new,
            &w.columns,
            &pk,
            VERIFY_CHUNK,
        ));
        (v, "with writes paused (whole table)")
    } else {
        let v = rt.block_on(verify_dirty(
            &mut w.old, &mut w.new, &w.columns, &pk, &dirty,
        ));
        (v, "with writes paused (changed since the last pass)")
    };
    let v = match v {
        Ok(v) => v,
        Err(e) => {
            drop(paused);
            fenced.release(control);
            return Err(e);
        }
    };
    let verified = t0.elapsed();
    *lock(&job.verify) = describe(&v, when);
    if !v.mismatches.is_empty() {
        gate.untrack();
        drop(paused);
        fenced.release(control);
        let spans: Vec<(i128, i128)> = v.mismatches.iter().map(|m| m.range).collect();
        *lock(&job.repair) = if v.keys > 0 {
            dirty.within(&spans)
        } else {
            Dirty {
                ranges: spans,
                ..Dirty::default()
            }
        };
        return refuse("checksums differ with writes paused");
    }
    if let Err(e) = fenced.held() {
        drop(paused);
        fenced.release(control);
        return refuse(&e);
    }
    // The switch: here, then at every peer (each sets its write order under its fence, then
    // runs the phase); any failure switches everyone back before a write goes on.
    gate.set_new_serves(true);
    let cutover = Edit::Mark(&job.new_rule, "cutover");
    let switched = edit_config(control, &job.sharding, &job.table, cutover)
        .and_then(|()| apply_on_peers(control, job, cutover))
        .and_then(|()| fenced.held());
    if let Err(e) = switched {
        gate.set_new_serves(false);
        let back = Edit::Mark(&job.new_rule, "copy");
        let undone = edit_config(control, &job.sharding, &job.table, back);
        // Best effort: a peer that does not answer stays fenced until its lease ends.
        let _ = apply_on_peers(control, job, back);
        drop(paused);
        fenced.release(control);
        undone?;
        return refuse(&e);
    }
    gate.untrack();
    drop(paused);
    fenced.release(control);
    let total = t0.elapsed();
    *lock(&job.cutover) = format!(
        "{:.1} ms (writes in flight drained {:.1} ms, verify {:.1} ms, rule switch {:.1} ms{})",
        ms(total),
        ms(waited),
        ms(verified - waited),
        ms(total - verified),
        if job.peers.is_empty() {
            String::new()
        } else {
            format!(", {} peers fenced", job.peers.len())
        }
    );
    tracing::info!(table = %job.table, pause_ms = ms(total), "reshard cut over");
    Ok(true)
}

/// ABORT: the marks leave the config, so the old layout serves and is written alone again (after
/// the cut-over, under the pause here and the fences at the peers, so that no write commits on
/// the new layout first meanwhile).
fn abort(
    rt: &tokio::runtime::Runtime,
    control: &Arc<Control>,
    job: &Job,
    cut_over: bool,
) -> Result<String, String> {
    let gate = gate_of(control, &job.sharding, &job.table);
    let mut fenced = match cut_over {
        true => Some(Fenced::fence(control, &job.peers, &job.sharding, &job.table)?.0),
        false => None,
    };
    let paused = cut_over.then(|| rt.block_on(gate.pause()));
    gate.set_new_serves(false);
    gate.untrack();
    let r = fleet_edit(control, job, Edit::Unmark);
    if r.is_err() && cut_over {
        // Back to the cut-over everywhere (best effort) before a write goes on.
        gate.set_new_serves(true);
        let back = Edit::Mark(&job.new_rule, "cutover");
        let _ = edit_config(control, &job.sharding, &job.table, back);
        let _ = apply_on_peers(control, job, back);
    }
    drop(paused);
    if let Some(f) = fenced.as_mut() {
        f.release(control);
    }
    r?;
    remove_state(job);
    let done = "done (aborted: the old layout serves; the new tables are left as they are)";
    *lock(&job.state) = done.into();
    set_phase(job, Phase::Aborted);
    Ok(done.into())
}

/// The write gate of `table` in this process.
fn gate_of(control: &Control, sharding: &str, table: &str) -> Arc<Gate> {
    MysqlShared::of(&control.shared).reshard_gate(sharding, table)
}

/// Whether a job runs in this process.
pub(crate) fn running() -> bool {
    lock(&JOB)
        .as_ref()
        .is_some_and(|j| lock(&j.state).as_str() == "running")
}

/// `edit` at every peer (`RESHARD PEER APPLY`), all at once; the first error names its peer.
fn apply_on_peers(control: &Control, job: &Job, edit: Edit<'_>) -> Result<(), String> {
    if job.peers.is_empty() {
        return Ok(());
    }
    let rest: Vec<&str> = match edit {
        Edit::Mark(to, phase) => vec!["MARK", to, phase],
        Edit::Unmark => vec!["UNMARK"],
        Edit::Confirm(to) => vec!["CONFIRM", to],
    };
    let a = peer::args("APPLY", &job.sharding, &job.table, &rest);
    match peer::first_error(&peer::call_all(control, &job.peers, &a, peer::APPLY_LIMIT)) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `edit` here, then at every peer.
fn fleet_edit(control: &Control, job: &Job, edit: Edit<'_>) -> Result<(), String> {
    edit_config(control, &job.sharding, &job.table, edit)?;
    apply_on_peers(control, job, edit)
}

/// An edit of the table's entry in the config.
#[derive(Clone, Copy)]
pub(crate) enum Edit<'a> {
    /// `reshard_to = <rule>`, `reshard_phase = <phase>`.
    Mark(&'a str, &'a str),
    /// The marks removed.
    Unmark,
    /// The new rule's keys copied into the table's entry, the marks removed.
    Confirm(&'a str),
}

/// Applies `edit` to the table entry in the config's source and returns once this proxy runs
/// it (the file reloaded, or the center's release applied: an edit the center already has is
/// not published again, so a peer of the namespace only waits for it).
pub(crate) fn edit_config(
    control: &Control,
    sharding: &str,
    table: &str,
    edit: Edit<'_>,
) -> Result<(), String> {
    let store = ConfigStore::of(&control.source);
    let what = match edit {
        Edit::Mark(to, phase) => format!("RESHARD: `{table}` -> `{to}`, phase {phase}"),
        Edit::Unmark => format!("RESHARD: `{table}` aborted, marks removed"),
        Edit::Confirm(to) => format!("RESHARD: `{table}` confirmed, rule of `{to}`"),
    };
    let applied = |c: &Config| {
        c.sharding()
            .into_iter()
            .filter(|s| s.name == sharding)
            .flat_map(|s| s.tables)
            .find(|t| t.name.eq_ignore_ascii_case(table))
            .is_some_and(|t| match edit {
                Edit::Mark(to, phase) => {
                    t.reshard_to.as_deref() == Some(to) && t.reshard_phase.as_deref() == Some(phase)
                }
                Edit::Unmark | Edit::Confirm(_) => t.reshard_to.is_none(),
            })
    };
    let t0 = Instant::now();
    let r = store.edit(
        control,
        &what,
        |text| edit_text(text, sharding, table, edit),
        applied,
    );
    tracing::info!(step = %what, ms = t0.elapsed().as_secs_f64() * 1e3, ok = r.is_ok(), "reshard config edit");
    r
}

/// The keys of a table entry that make its rule (copied by CONFIRM).
const RULE_KEYS: &[&str] = &[
    "algorithm",
    "physical",
    "boundaries",
    "lists",
    "unit",
    "start",
    "partitions",
];

/// The file's text with `edit` applied to `[[sharding.<sharding>.tables]]` named `table`;
/// everything else (comments, order, other entries) stays as it was.
fn edit_text(text: &str, sharding: &str, table: &str, edit: Edit<'_>) -> Result<String, String> {
    use toml_edit::{DocumentMut, Item, value};
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("the config does not parse: {e}"))?;
    let tables = doc
        .get_mut("sharding")
        .and_then(|s| s.get_mut(sharding))
        .and_then(|s| s.get_mut("tables"))
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| {
            format!("[sharding.{sharding}] has no [[sharding.{sharding}.tables]] entries to edit (an inline `tables = [...]` is not edited; write them as [[...]] tables)")
        })?;
    let named = |t: &toml_edit::Table, n: &str| {
        t.get("name")
            .and_then(Item::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case(n))
    };
    let copied: Vec<(String, Option<Item>)> = match &edit {
        Edit::Confirm(rule) => {
            let src = tables
                .iter()
                .find(|t| named(t, rule))
                .ok_or_else(|| format!("no table entry `{rule}` in the config"))?;
            RULE_KEYS
                .iter()
                .map(|k| (k.to_string(), src.get(k).cloned()))
                .collect()
        }
        _ => Vec::new(),
    };
    let entry = tables
        .iter_mut()
        .find(|t| named(t, table))
        .ok_or_else(|| format!("no table entry `{table}` in [sharding.{sharding}]"))?;
    match edit {
        Edit::Mark(to, phase) => {
            entry["reshard_to"] = value(to);
            entry["reshard_phase"] = value(phase);
        }
        Edit::Unmark => {
            entry.remove("reshard_to");
            entry.remove("reshard_phase");
        }
        Edit::Confirm(_) => {
            entry.remove("reshard_to");
            entry.remove("reshard_phase");
            for (k, v) in copied {
                match v {
                    Some(v) => {
                        entry.insert(&k, v);
                    }
                    None => {
                        entry.remove(&k);
                    }
                }
            }
        }
    }
    Ok(doc.to_string())
}

fn dry_run(
    config: &Config,
    sharding: &str,
    table: &str,
    new_rule: &str,
    rate: u64,
) -> Result<String, String> {
    let section = config
        .sharding()
        .into_iter()
        .find(|s| s.name == sharding)
        .ok_or_else(|| format!("no [sharding.{sharding}]"))?;
    let rules = ShardingRules::compile(&section).map_err(|e| e.to_string())?;
    let find = |n: &str| {
        rules
            .tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(n))
            .cloned()
            .ok_or_else(|| format!("[sharding.{sharding}] has no sharded table `{n}`"))
    };
    let (old, new) = (find(table)?, find(new_rule)?);
    // Where each old partition is, with its group's login.
    let mut places = Vec::new();
    for p in 0..old.partitions() {
        let shard = &rules.shards[old.shard_of(p)];
        let g = config
            .mysql_group(&shard.group)
            .ok_or_else(|| format!("unknown group `{}`", shard.group))?;
        places.push((
            g.primary.address.clone(),
            g.user.clone(),
            g.password.clone(),
            g.tls.clone(),
            shard.schema.clone(),
            old.physical[p].clone(),
        ));
    }
    // The probe blocks on the network: on a thread of its own with its own runtime.
    let stats = std::thread::spawn(move || -> Result<Vec<PartStats>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut out = Vec::new();
            for (addr, user, password, tls, schema, table) in &places {
                let mut t =
                    Table::open_tls(addr, user, password, tls.as_ref(), schema, table).await?;
                let (rows, bytes) = table_stats(&mut t).await?;
                out.push(PartStats { rows, bytes });
            }
            Ok(out)
        })
    })
    .join()
    .map_err(|_| "the size probe panicked".to_string())??;
    let p = plan(
        Layout {
            rule: &old,
            shards: &rules.shards,
        },
        Layout {
            rule: &new,
            shards: &rules.shards,
        },
        &stats,
        rate,
    )
    .map_err(|e| e.to_string())?;
    let mut text = p.render();
    if rate == ASSUMED_RATE {
        text.push_str("(the rate is an assumption; give RATE bytes/s from a measured copy)\n");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# the app's shards\n[sharding.app]\nlistener = \"db\"\n\n\
        [[sharding.app.tables]]\nname = \"orders\"  # old layout\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_{0..3}\"\n\n\
        [[sharding.app.tables]]\nname = \"orders_v2\"\nkey = \"user_id\"\nalgorithm = \"range\"\nphysical = \"orders_v2_{0..1}\"\nboundaries = [\"100\"]\n";

    #[test]
    fn progress_file_reads_back() {
        let text = "# progress of a reshard\nsharding = \"app\"\ntable = \"orders\"\nnew_rule = \"orders_v2\"\n\
                    batch = 40\nverify = \"full\"\npeers = \"127.0.0.1:7001, 127.0.0.1:7002\"\nrate = 250\npartition = 2\nafter = \"-170141183460469231731687303715884105728\"\nrows = 1234\nphase = \"copy\"\n";
        assert_eq!(
            read_state(text),
            Ok(Saved {
                sharding: "app".into(),
                table: "orders".into(),
                new_rule: "orders_v2".into(),
                batch: 40,
                full_verify: true,
                peers: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
                rate: 250,
                partition: 2,
                after: Some(i128::MIN),
                rows: 1234,
            })
        );
        // Missing or odd values fall back (batch within its bounds, no key: from the start).
        let s = read_state("batch = 99999999\npartition = -3\n").unwrap_or_default();
        assert_eq!((s.batch, s.partition, s.after), (MAX_BATCH, 0, None));
        assert!(read_state("not = [toml").is_err());
        assert!(s.peers.is_empty());
        assert!(parse_peers("127.0.0.1:7001,nope").is_err());
        assert!(parse_peers("").is_ok_and(|p| p.is_empty()));
        assert_eq!(
            state_path(Path::new("/etc/furrow/furrow.toml")),
            PathBuf::from("/etc/furrow/furrow.toml.reshard-state")
        );
    }

    #[test]
    fn pacer_keeps_the_rate_with_a_bounded_credit() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ms = |d: Duration| d.as_millis();
        // No limit: never waits.
        assert_eq!(Pacer::new(0, t0, 0).wait(1_000_000, t0), Duration::ZERO);
        // 100 rows/s, counted from the rows copied before it started.
        let mut p = Pacer::new(100, t0, 1_000);
        assert_eq!(ms(p.wait(1_050, t0)), 500);
        assert_eq!(ms(p.wait(1_100, at(500))), 500);
        assert_eq!(ms(p.wait(1_100, at(900))), 100);
        // Fell behind by 1.5 s: 1 s of it may be caught up on, no more.
        assert_eq!(ms(p.wait(1_150, at(3_000))), 0);
        assert_eq!(ms(p.wait(1_250, at(3_000))), 0);
        assert_eq!(ms(p.wait(1_350, at(3_000))), 1_000);
    }

    #[test]
    fn marks_unmarks_and_confirms_in_place() {
        let marked =
            edit_text(FILE, "app", "orders", Edit::Mark("orders_v2", "copy")).unwrap_or_default();
        assert!(
            marked.contains("reshard_to = \"orders_v2\"\nreshard_phase = \"copy\""),
            "{marked}"
        );
        assert!(
            marked.starts_with("# the app's shards") && marked.contains("# old layout"),
            "{marked}"
        );
        let cut = edit_text(&marked, "app", "orders", Edit::Mark("orders_v2", "cutover"))
            .unwrap_or_default();
        assert!(
            cut.contains("reshard_phase = \"cutover\"") && !cut.contains("\"copy\""),
            "{cut}"
        );
        assert_eq!(
            edit_text(&cut, "app", "orders", Edit::Unmark)
                .ok()
                .as_deref(),
            Some(FILE)
        );
        let done = edit_text(&cut, "app", "orders", Edit::Confirm("orders_v2")).unwrap_or_default();
        let doc: toml_edit::DocumentMut = done.parse().unwrap_or_default();
        let t = &doc["sharding"]["app"]["tables"][0];
        assert_eq!(t["algorithm"].as_str(), Some("range"));
        assert_eq!(t["physical"].as_str(), Some("orders_v2_{0..1}"));
        assert!(t["boundaries"].is_array() && t.get("reshard_to").is_none());
        assert_eq!(t["name"].as_str(), Some("orders"));
        // Errors name what is missing.
        let e = edit_text(FILE, "app", "nope", Edit::Unmark)
            .err()
            .unwrap_or_default();
        assert!(e.contains("no table entry `nope`"), "{e}");
        let e = edit_text(FILE, "other", "orders", Edit::Unmark)
            .err()
            .unwrap_or_default();
        assert!(e.contains("[sharding.other]"), "{e}");
    }
}
