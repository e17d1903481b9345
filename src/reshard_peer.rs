//! A reshard across a fleet of proxies (docs/sharding.md, "Resharding", "Several proxies"): the
//! proxy that runs the job (`crate::reshard`) reaches the other proxies that write the table (its
//! *peers*, `RESHARD START ... PEERS addr,addr`) on their admin ports, and every proxy answers the
//! `RESHARD PEER ...` commands here about its own write gate
//! (`proxy_mysql::shard::gate::Gate`):
//!
//! - `CHECK`: the peer knows both rules and runs no reshard of its own;
//! - `TRACK` / `DIRTY`: record the keys its dual writes touch, hand them over;
//! - `FENCE` (with a lease) / `UNFENCE`: its writes to the table wait while the job verifies and
//!   switches; a fence whose lease is not renewed lifts by itself, so a job proxy that dies never
//!   leaves the table blocked;
//! - `APPLY`: run a config edit of the job (the marks, the cut-over's phase, the confirmed rule):
//!   a file-configured peer edits its own file and reloads; a peer configured from the center
//!   (the same namespace) waits until it runs the release the job published. Both set the gate's
//!   write order first.
//!
//! The job's side is [`call`], [`call_all`] and [`Fenced`]: blocking calls from the job's thread,
//! one thread per peer, with the admin password of the job's own config (the fleet shares it).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codec::resp::Command;
use proxy_mysql::MysqlShared;
use router::sql::shard::dirty::{Dirty, KeyShape};

use crate::proxy::Control;

/// Admin help lines.
pub const HELP: &[&str] = &[
    "RESHARD PEER CHECK <sharding> <table> <new-rule>     (job to peer) this proxy can take part",
    "RESHARD PEER TRACK <sharding> <table> <shape> <grid>  (job to peer) record the keys dual writes touch",
    "RESHARD PEER DIRTY <sharding> <table>                (job to peer) the keys written since the last call",
    "RESHARD PEER FENCE <sharding> <table> <lease-ms>     (job to peer) writes to the table wait; lifts by itself after the lease",
    "RESHARD PEER UNFENCE <sharding> <table>              (job to peer) writes go on",
    "RESHARD PEER APPLY <sharding> <table> MARK <to> <phase> | UNMARK | CONFIRM <to>  (job to peer) run the job's config edit",
];

/// How long a fence holds without renewal. The job renews it every third of that.
pub const FENCE_LEASE: Duration = Duration::from_secs(5);
/// Time limit of the quick calls (check, track, dirty, unfence).
const QUICK: Duration = Duration::from_secs(5);
/// Time limit of a fence: the peer's writes in flight must finish within it.
pub const FENCE_WAIT: Duration = Duration::from_secs(10);
/// Time limit of an edit: a center-configured peer waits for the release up to
/// `crate::config_store::APPLY_WAIT`.
pub const APPLY_LIMIT: Duration = Duration::from_secs(20);

// ---- the peer's side ----

/// Runs `RESHARD PEER <sub> ...` on this proxy; the reply is a bulk text or an error line.
pub async fn command(control: &Arc<Control>, cmd: &Command) -> Result<String, String> {
    let arg = |i: usize| String::from_utf8_lossy(cmd.arg(i).unwrap_or_default()).into_owned();
    let sub = arg(2).to_ascii_uppercase();
    if cmd.len() < 5 {
        return Err(format!(
            "usage: RESHARD PEER {} <sharding> <table> ...; try HELP",
            if sub.is_empty() { "<sub>" } else { &sub }
        ));
    }
    let (sharding, table) = (arg(3), arg(4));
    let gate = MysqlShared::of(&control.shared).reshard_gate(&sharding, &table);
    match sub.as_str() {
        "CHECK" if cmd.len() == 6 => {
            let config = control.shared.snapshots.current().config.clone();
            crate::reshard::rules_of(&config, &sharding, &table, &arg(5))?;
            if crate::reshard::running() {
                return Err("this proxy runs a reshard job of its own".into());
            }
            Ok("ok\n".into())
        }
        "TRACK" if cmd.len() == 7 => {
            let shape = parse_shape(&arg(5))?;
            let grid = parse_grid(&arg(6))?;
            gate.track_grid(shape, grid)?;
            Ok("tracking\n".into())
        }
        "DIRTY" if cmd.len() == 5 => Ok(dirty_text(&gate.take_dirty())),
        "FENCE" if cmd.len() == 6 => {
            let ms: u64 = arg(5)
                .parse()
                .ok()
                .filter(|m| (1..=600_000).contains(m))
                .ok_or("FENCE takes a lease of 1 to 600000 ms")?;
            if gate.fenced_until().is_none() && refuse_fence_once() {
                return Err("fence refused (test failpoint reshard-refuse-fence)".into());
            }
            let new = gate.fence(Duration::from_millis(ms)).await;
            if new {
                tracing::info!(table = %table, lease_ms = ms, "reshard peer: writes fenced");
                let gate = gate.clone();
                tokio::spawn(async move {
                    // Lifts the fence when its lease ends unrenewed.
                    while let Some(until) = gate.fenced_until() {
                        if gate.expire(Instant::now()) {
                            tracing::warn!(table = %table, "reshard peer: the fence's lease ended unrenewed; writes go on");
                            break;
                        }
                        tokio::time::sleep_until(until.into()).await;
                    }
                });
            }
            // No write runs now: what the dual writes touched until the fence is complete.
            let head = if new { "fenced\n" } else { "renewed\n" };
            Ok(format!("{head}{}", dirty_text(&gate.take_dirty())))
        }
        "UNFENCE" if cmd.len() == 5 => Ok(if gate.unfence() {
            tracing::info!(table = %table, "reshard peer: writes go on");
            "unfenced\n".into()
        } else {
            "not fenced\n".into()
        }),
        "APPLY" => {
            let edit = match (arg(5).to_ascii_uppercase().as_str(), cmd.len()) {
                ("MARK", 8) => Edit::Mark(arg(6), arg(7)),
                ("UNMARK", 6) => Edit::Unmark,
                ("CONFIRM", 7) => Edit::Confirm(arg(6)),
                _ => {
                    return Err(
                        "usage: RESHARD PEER APPLY <sharding> <table> MARK <to> <phase> | UNMARK | CONFIRM <to>"
                            .into(),
                    );
                }
            };
            if let Edit::Mark(_, phase) = &edit {
                if phase == "cutover" && refuse_cutover_once() {
                    return Err("cut-over refused (test failpoint reshard-refuse-cutover)".into());
                }
                if phase == "cutover" && gate.fenced_until().is_none() {
                    return Err(
                        "not fenced (the fence's lease ended?): the write order is switched only under a fence"
                            .into(),
                    );
                }
                if phase != "cutover" && phase != "copy" {
                    return Err(format!("unknown phase `{phase}`"));
                }
            }
            // The order writes commit in follows the gate before the config says so.
            match &edit {
                Edit::Mark(_, phase) => gate.set_new_serves(phase == "cutover"),
                Edit::Unmark => gate.set_new_serves(false),
                Edit::Confirm(_) => {}
            }
            if !matches!(&edit, Edit::Mark(_, p) if p == "copy") {
                gate.untrack();
            }
            let control = control.clone();
            tokio::task::spawn_blocking(move || {
                let e = match &edit {
                    Edit::Mark(to, phase) => crate::reshard::Edit::Mark(to, phase),
                    Edit::Unmark => crate::reshard::Edit::Unmark,
                    Edit::Confirm(to) => crate::reshard::Edit::Confirm(to),
                };
                crate::reshard::edit_config(&control, &sharding, &table, e)
            })
            .await
            .map_err(|e| format!("the edit panicked: {e}"))??;
            Ok("applied\n".into())
        }
        _ => Err(format!(
            "unknown or incomplete RESHARD PEER subcommand `{sub}`; try HELP"
        )),
    }
}

/// Whether the test-only failpoint `point` is named in `FURROW_TEST_FAILPOINT` (alone or in a
/// comma-separated list) and fires now: the first time only, by its own `fired` flag.
fn failpoint_once(point: &str, fired: &AtomicBool) -> bool {
    std::env::var("FURROW_TEST_FAILPOINT").is_ok_and(|v| v.split(',').any(|p| p == point))
        && !fired.swap(true, Relaxed)
}

/// The test-only failpoint `reshard-refuse-fence`: the first fence this proxy is asked for is
/// refused, as by a peer that cannot take part.
fn refuse_fence_once() -> bool {
    static FIRED: AtomicBool = AtomicBool::new(false);
    failpoint_once("reshard-refuse-fence", &FIRED)
}

/// The test-only failpoint `reshard-refuse-cutover`: the first `APPLY MARK ... cutover` is refused
/// (after nothing changed here), as by a peer whose config cannot be edited.
fn refuse_cutover_once() -> bool {
    static FIRED: AtomicBool = AtomicBool::new(false);
    failpoint_once("reshard-refuse-cutover", &FIRED)
}

/// A config edit as the peer received it.
enum Edit {
    Mark(String, String),
    Unmark,
    Confirm(String),
}

/// The key shape as `TRACK` sends it: `pk:pk_index:columns:other_unique:auto_id_pk`.
pub fn shape_text(s: &KeyShape) -> String {
    format!(
        "{}:{}:{}:{}:{}",
        s.pk,
        s.pk_index,
        s.columns,
        u8::from(s.other_unique),
        u8::from(s.auto_id_pk)
    )
}

fn parse_shape(t: &str) -> Result<KeyShape, String> {
    let bad = || format!("not a key shape: `{t}`");
    let mut f = t.rsplitn(5, ':');
    let auto_id_pk = f.next().ok_or_else(bad)? == "1";
    let other_unique = f.next().ok_or_else(bad)? == "1";
    let columns = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let pk_index = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let pk = f.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
    Ok(KeyShape {
        pk: pk.to_string(),
        pk_index,
        columns,
        other_unique,
        auto_id_pk,
    })
}

/// The verifier's range grid as `TRACK` sends it: `min:step:end:n`, or `-` for none.
pub fn grid_text(g: Option<(i128, i128, i128, usize)>) -> String {
    g.map_or("-".into(), |(a, b, c, n)| format!("{a}:{b}:{c}:{n}"))
}

fn parse_grid(t: &str) -> Result<Option<(i128, i128, i128, usize)>, String> {
    if t == "-" {
        return Ok(None);
    }
    let f: Vec<&str> = t.split(':').collect();
    let bad = || format!("not a range grid: `{t}`");
    let [a, b, c, n] = f.as_slice() else {
        return Err(bad());
    };
    let num = |v: &str| v.parse::<i128>().map_err(|_| bad());
    Ok(Some((
        num(a)?,
        num(b)?,
        num(c)?,
        n.parse().map_err(|_| bad())?,
    )))
}

/// What `DIRTY` and `FENCE` hand over: `all`, `k KEY` and `r LO HI` lines.
pub fn dirty_text(d: &Dirty) -> String {
    let mut s = String::with_capacity(16 + d.keys.len() * 12 + d.ranges.len() * 24);
    if d.all {
        s.push_str("all\n");
    }
    for k in &d.keys {
        let _ = writeln!(s, "k {k}");
    }
    for (lo, hi) in &d.ranges {
        let _ = writeln!(s, "r {lo} {hi}");
    }
    s
}

/// Reads [`dirty_text`] back (lines it does not know are an error).
pub fn parse_dirty(text: &str) -> Result<Dirty, String> {
    let mut d = Dirty::default();
    let mut ranges = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |v: &str| {
            v.parse::<i128>()
                .map_err(|_| format!("not a dirty-key line: `{line}`"))
        };
        match f.as_slice() {
            ["all"] => d.all = true,
            ["k", k] => d.keys.push(num(k)?),
            ["r", lo, hi] => ranges.push((num(lo)?, num(hi)?)),
            _ => return Err(format!("not a dirty-key line: `{line}`")),
        }
    }
    d.keys.sort_unstable();
    d.keys.dedup();
    d.add_ranges(ranges);
    Ok(d)
}

// ---- the job's side ----

/// Sends `args` to the admin port `peer` (after `AUTH` with this proxy's admin password) and
/// returns the reply's text; errors name the peer. Blocking: on a thread of its own with its
/// own runtime (the job's thread may be inside its runtime's `block_on`).
pub fn call(
    control: &Control,
    peer: &str,
    args: &[String],
    limit: Duration,
) -> Result<String, String> {
    let password = control.admin_password();
    let (peer, args) = (peer.to_string(), args.to_vec());
    let named = peer.clone();
    std::thread::spawn(move || -> Result<String, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rt.block_on(control::web::fleet::admin_call_within(
            limit,
            &peer,
            password.as_deref(),
            &args,
        ))
        .map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the call panicked".to_string())?
    .map_err(|e| format!("peer {named}: {e}"))
}

/// [`call`] to every peer at once; the replies in the peers' order.
pub fn call_all(
    control: &Control,
    peers: &[String],
    args: &[String],
    limit: Duration,
) -> Vec<Result<String, String>> {
    std::thread::scope(|s| {
        let calls: Vec<_> = peers
            .iter()
            .map(|p| s.spawn(move || call(control, p, args, limit)))
            .collect();
        calls
            .into_iter()
            .zip(peers)
            .map(|(c, p)| {
                c.join()
                    .unwrap_or_else(|_| Err(format!("peer {p}: the call panicked")))
            })
            .collect()
    })
}

/// The first error of `replies`, if any.
pub fn first_error(replies: &[Result<String, String>]) -> Option<String> {
    replies.iter().find_map(|r| r.as_ref().err().cloned())
}

/// `RESHARD PEER <sub> <sharding> <table> <rest...>` as arguments.
pub fn args(sub: &str, sharding: &str, table: &str, rest: &[&str]) -> Vec<String> {
    ["RESHARD", "PEER", sub, sharding, table]
        .iter()
        .chain(rest)
        .map(|s| s.to_string())
        .collect()
}

/// The peers fenced by a cut-over, their leases renewed by a thread of its own until
/// [`Fenced::release`].
pub struct Fenced {
    peers: Vec<String>,
    sharding: String,
    table: String,
    stop: Arc<AtomicBool>,
    /// The first renewal that failed (the peer's fence may have lifted).
    failed: Arc<Mutex<Option<String>>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Fenced {
    /// Fences every peer (their writes in flight finish first) and returns what their dual
    /// writes touched until then. Any peer that fails: every peer is unfenced again and the
    /// error names it.
    pub fn fence(
        control: &Arc<Control>,
        peers: &[String],
        sharding: &str,
        table: &str,
    ) -> Result<(Fenced, Dirty), String> {
        let lease = FENCE_LEASE.as_millis().to_string();
        let fence = args("FENCE", sharding, table, &[&lease]);
        let replies = call_all(control, peers, &fence, FENCE_WAIT);
        let mut dirty = Dirty::default();
        let mut err = first_error(&replies);
        for (r, p) in replies.iter().zip(peers) {
            let Ok(text) = r else { continue };
            match parse_dirty(
                text.trim_start_matches("fenced\n")
                    .trim_start_matches("renewed\n"),
            ) {
                Ok(d) => dirty.merge(d),
                Err(e) => err = err.or(Some(format!("peer {p}: {e}"))),
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(None::<String>));
        let mut f = Fenced {
            peers: peers.to_vec(),
            sharding: sharding.to_string(),
            table: table.to_string(),
            stop: stop.clone(),
            failed: failed.clone(),
            renewer: None,
        };
        if let Some(e) = err {
            f.release(control);
            return Err(e);
        }
        let (renewing, peers) = (control.clone(), peers.to_vec());
        f.renewer = std::thread::Builder::new()
            .name("reshard-lease".into())
            .spawn(move || {
                let every = FENCE_LEASE / 3;
                let mut next = Instant::now() + every;
                while !stop.load(Relaxed) {
                    if Instant::now() < next {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    next = Instant::now() + every;
                    for (r, p) in call_all(&renewing, &peers, &fence, QUICK)
                        .iter()
                        .zip(&peers)
                    {
                        let bad = match r {
                            Ok(t) if t.starts_with("renewed") => None,
                            Ok(_) => Some(format!(
                                "peer {p}: its fence's lease ended before the job renewed it"
                            )),
                            Err(e) => Some(e.clone()),
                        };
                        if let Some(e) = bad {
                            let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
                            f.get_or_insert(e);
                        }
                    }
                }
            })
            .ok();
        if f.renewer.is_none() {
            f.release(control);
            return Err("cannot start the thread that renews the peers' fences".into());
        }
        Ok((f, dirty))
    }

    /// Err naming the first peer whose fence may have lifted.
    pub fn held(&self) -> Result<(), String> {
        match self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops renewing and unfences every peer (a peer that does not answer is unfenced by its
    /// lease).
    pub fn release(&mut self, control: &Control) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        let unfence = args("UNFENCE", &self.sharding, &self.table, &[]);
        for r in call_all(control, &self.peers, &unfence, QUICK) {
            if let Err(e) = r {
                tracing::warn!(error = %e, "reshard: cannot unfence a peer (its lease will)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_peers_send_reads_back() {
        let d = Dirty {
            all: true,
            keys: vec![-5, 7, i128::MAX],
            ranges: vec![(i128::MIN, -100), (10, 20)],
        };
        assert_eq!(parse_dirty(&dirty_text(&d)), Ok(d));
        assert_eq!(parse_dirty(""), Ok(Dirty::default()));
        assert!(parse_dirty("k x").is_err() && parse_dirty("r 1").is_err());
        let shape = KeyShape {
            pk: "order:id".into(),
            pk_index: 2,
            columns: 5,
            other_unique: true,
            auto_id_pk: false,
        };
        assert_eq!(parse_shape(&shape_text(&shape)), Ok(shape));
        assert!(parse_shape(":1:2:0:0").is_err() && parse_shape("id:x:2:0:0").is_err());
        let g = Some((-10, 1000, 5000, 6));
        assert_eq!(parse_grid(&grid_text(g)), Ok(g));
        assert_eq!(parse_grid(&grid_text(None)), Ok(None));
        assert!(parse_grid("1:2:3").is_err());
    }
}
