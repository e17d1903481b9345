//! Operations features on the data path: SQL deny/allow rules, rate and concurrency limits (per rule,
//! user or fingerprint) and the audit log.
//!
//! Rules are compiled once per config generation and group on each core. Limit budgets are shared by
//! all cores (a process-wide map of small mutex-protected token buckets, touched only by statements
//! that match a `limit` rule). The audit log goes through a bounded queue to a writer thread: when the
//! queue is full the record is dropped and counted, so the data path never waits on the disk.

use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use codec::mysql::ErrPacket;

use router::config::{
    Admit, MysqlGroup, MysqlRule, Pace, Pacer, RuleAction, RulePer, RulesMode, pace_clock_us,
};
use router::sql::Digest;

use crate::error::errs;

/// One core's part of the ops features (in [`crate::core::CoreCtx`]): the rules compiled for its
/// groups, the queue to the process's audit writer and its counters of the audit files.
pub struct OpsCore {
    /// Deny/allow rules by group, compiled for the config generation they were made for.
    rules: std::cell::RefCell<router::FastMap<String, Rc<Rules>>>,
    /// The process's budgets of `limit` rules.
    budgets: Arc<Budgets>,
    /// The process's audit writer and file counters.
    log: Arc<AuditLog>,
    /// The queue to the audit writer (`None`: it could not be started).
    tx: Option<SyncSender<AuditLine>>,
    /// The counters of the audit files this core wrote to.
    sinks: std::cell::RefCell<HashMap<String, Arc<AuditSink>>>,
}

impl OpsCore {
    /// A core's part, sharing the process's budgets and audit writer (started here if it is
    /// not yet).
    pub(crate) fn new(budgets: Arc<Budgets>, log: Arc<AuditLog>) -> Self {
        OpsCore {
            rules: Default::default(),
            budgets,
            tx: log.start(),
            log,
            sinks: Default::default(),
        }
    }
}

/// A compiled rule.
struct Compiled {
    rule: MysqlRule,
    /// Upper-cased glob pieces between `*`s (None for `digest:` rules).
    parts: Option<Vec<String>>,
    anchored_start: bool,
    anchored_end: bool,
    digest: Option<u64>,
}

impl Compiled {
    fn new(rule: &MysqlRule) -> Self {
        let digest = rule
            .pattern
            .strip_prefix("digest:")
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        let up = rule.pattern.to_ascii_uppercase();
        let parts = digest
            .is_none()
            .then(|| up.split('*').map(str::to_string).collect());
        Compiled {
            rule: rule.clone(),
            parts,
            anchored_start: !up.starts_with('*'),
            anchored_end: !up.ends_with('*'),
            digest,
        }
    }

    fn matches(&self, user: &str, d: &Digest) -> bool {
        if !self.rule.users.is_empty() && !self.rule.users.iter().any(|u| u == user) {
            return false;
        }
        if let Some(h) = self.digest {
            return h == d.hash;
        }
        match &self.parts {
            Some(p) => glob(p, self.anchored_start, self.anchored_end, &d.text),
            None => false,
        }
    }
}

/// `*`-glob match of upper-cased `parts` (split at `*`) against `text`.
fn glob(parts: &[String], anchored_start: bool, anchored_end: bool, text: &str) -> bool {
    let text = text.to_ascii_uppercase();
    if parts.len() == 1 {
        return text == parts[0];
    }
    let mut pos = 0;
    let last = parts.len() - 1;
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() {
            continue;
        }
        if i == 0 && anchored_start {
            if !text.starts_with(p.as_str()) {
                return false;
            }
            pos = p.len();
        } else if i == last && anchored_end {
            return text.len() >= pos + p.len() && text.ends_with(p.as_str());
        } else {
            match text[pos..].find(p.as_str()) {
                Some(at) => pos += at + p.len(),
                None => return false,
            }
        }
    }
    true
}

/// Rules of one group for one generation.
pub struct Rules {
    mode: RulesMode,
    rules: Vec<Compiled>,
    group: String,
    generation: u64,
    /// The process's budgets of `limit` rules.
    budgets: Arc<Budgets>,
}

/// The compiled rules of `g` for `generation` (cached per core); None when the group has none.
pub fn rules_for(core: &OpsCore, g: &MysqlGroup, generation: u64) -> Option<Rc<Rules>> {
    if g.rules.is_empty() && g.rules_mode == RulesMode::Denylist {
        return None;
    }
    {
        let mut m = core.rules.borrow_mut();
        if let Some(r) = m.get(&g.name)
            && r.generation == generation
        {
            return Some(r.clone());
        }
        let r = Rc::new(Rules {
            mode: g.rules_mode,
            rules: g.rules.iter().map(Compiled::new).collect(),
            group: g.name.clone(),
            generation,
            budgets: core.budgets.clone(),
        });
        m.insert(g.name.clone(), r.clone());
        Some(r)
    }
}

/// A rate budget (token bucket, warm-up or queue: [`Pacer`]) and an in-flight gauge shared by every
/// core.
struct Budget {
    /// The pacer and the limit it paces (a changed limit starts afresh).
    state: Mutex<(Pacer, u32, Pace)>,
    inflight: AtomicU64,
}

/// The budgets of the `limit` rules by key, shared by every core (in [`crate::MysqlShared`]).
#[derive(Default)]
pub struct Budgets(Mutex<HashMap<String, Arc<Budget>>>);

fn budget(budgets: &Budgets, key: String, qps: Option<u32>, pace: Pace) -> Arc<Budget> {
    let mut m = budgets.0.lock().unwrap_or_else(|e| e.into_inner());
    if m.len() > 100_000 {
        // Bounded: per-fingerprint budgets of a hostile workload cannot grow without limit.
        m.retain(|_, b| b.inflight.load(Relaxed) > 0);
    }
    m.entry(key)
        .or_insert_with(|| {
            Arc::new(Budget {
                state: Mutex::new((
                    Pacer::new(f64::from(qps.unwrap_or(0)), pace, pace_clock_us()),
                    qps.unwrap_or(0),
                    pace,
                )),
                inflight: AtomicU64::new(0),
            })
        })
        .clone()
}

/// Statements of a rule in flight; released on drop.
pub struct Permit {
    held: Vec<Arc<Budget>>,
    /// How long the statement waits for its turn before it runs (a queueing limit; zero otherwise).
    pub wait: Duration,
}

impl Drop for Permit {
    fn drop(&mut self) {
        for b in &self.held {
            let _ = b
                .inflight
                .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        }
    }
}

impl Rules {
    /// Whether the rules decide what may run (deny/allow rules, or allowlist mode), as opposed to
    /// only limiting it: then every statement of a text is checked, and what cannot be checked is
    /// refused.
    fn has_policy(&self) -> bool {
        self.mode == RulesMode::Allowlist
            || self
                .rules
                .iter()
                .any(|c| matches!(c.rule.action, RuleAction::Deny | RuleAction::Allow))
    }

    /// The first matching deny/allow rule: Err for deny, Ok(true) for allow, Ok(false) for none.
    fn decide(&self, user: &str, d: &Digest) -> Result<bool, ErrPacket> {
        for (i, c) in self.rules.iter().enumerate() {
            match c.rule.action {
                RuleAction::Deny if c.matches(user, d) => {
                    return Err(errs::denied(
                        user,
                        &format!("deny rule {i}"),
                        c.rule.message.as_deref(),
                    ));
                }
                RuleAction::Allow if c.matches(user, d) => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }

    /// Applies the rules to a query text whose digest is `d`: deny/allow to each statement of a
    /// multi-statement text and to the literal text of `PREPARE ... FROM` / `EXECUTE IMMEDIATE`;
    /// a statement whose effect is only known when it runs (`CALL`, dynamic SQL from an
    /// expression) is refused unless an `allow` rule names it. Limits apply to the text as a whole.
    pub fn check_text(&self, user: &str, sql: &str, d: &Digest) -> Result<Permit, ErrPacket> {
        if !self.has_policy() {
            return self.limits(user, d);
        }
        let units = router::sql::policy::rule_units(sql);
        if let [one] = units.as_slice()
            && one.opaque.is_none()
        {
            return self.check(user, d);
        }
        for u in &units {
            let allowed = self.decide(user, &u.digest)?;
            if allowed {
                continue;
            }
            if let Some(why) = u.opaque {
                return Err(errs::denied(
                    user,
                    &format!("{why}: what it runs cannot be checked against the rules"),
                    None,
                ));
            }
            if self.mode == RulesMode::Allowlist {
                return Err(errs::denied(user, "not in the allowlist", None));
            }
        }
        self.limits(user, d)
    }

    /// Applies the rules to one statement: Err with the ERR packet to send, or a permit to hold
    /// while the statement runs.
    pub fn check(&self, user: &str, d: &Digest) -> Result<Permit, ErrPacket> {
        let decided = self.decide(user, d)?;
        if self.mode == RulesMode::Allowlist && !decided {
            return Err(errs::denied(user, "not in the allowlist", None));
        }
        self.limits(user, d)
    }

    /// The `limit` rules matching `d`.
    fn limits(&self, user: &str, d: &Digest) -> Result<Permit, ErrPacket> {
        let mut permit = Permit {
            held: Vec::new(),
            wait: Duration::ZERO,
        };
        for (i, c) in self.rules.iter().enumerate() {
            if c.rule.action != RuleAction::Limit || !c.matches(user, d) {
                continue;
            }
            let key = match c.rule.per {
                RulePer::Rule => format!("{}/{i}", self.group),
                RulePer::User => format!("{}/{i}/u/{user}", self.group),
                RulePer::Fingerprint => format!("{}/{i}/f/{:016x}", self.group, d.hash),
            };
            let b = budget(&self.budgets, key, c.rule.qps, c.rule.pace);
            if let (Some(qps), Some(cluster)) = (c.rule.qps, &c.rule.cluster) {
                let who = if c.rule.per == RulePer::User {
                    user
                } else {
                    ""
                };
                if !cluster.try_take(who) {
                    if let Some(g) = &c.rule.governed {
                        g.statements_refused.fetch_add(1, Relaxed);
                    }
                    return Err(errs::limited(
                        user,
                        "max_queries_per_second",
                        u64::from(qps),
                        c.rule.message.as_deref(),
                    ));
                }
            } else if let Some(qps) = c.rule.qps {
                let admit = {
                    let mut st = b.state.lock().unwrap_or_else(|e| e.into_inner());
                    let now = pace_clock_us();
                    if (st.1, st.2) != (qps, c.rule.pace) {
                        // The rule changed (a new governance version, a reload).
                        *st = (
                            Pacer::new(f64::from(qps), c.rule.pace, now),
                            qps,
                            c.rule.pace,
                        );
                    }
                    st.0.take(f64::from(qps), c.rule.pace, now)
                };
                match admit {
                    Admit::Now => {}
                    Admit::Wait(us) => permit.wait = permit.wait.max(Duration::from_micros(us)),
                    Admit::Refused => {
                        if let Some(g) = &c.rule.governed {
                            g.statements_refused.fetch_add(1, Relaxed);
                        }
                        return Err(errs::limited(
                            user,
                            "max_queries_per_second",
                            u64::from(qps),
                            c.rule.message.as_deref(),
                        ));
                    }
                }
            }
            if let Some(max) = c.rule.concurrency {
                let n = b.inflight.fetch_add(1, Relaxed) + 1;
                if n > u64::from(max) {
                    b.inflight.fetch_sub(1, Relaxed);
                    if let Some(g) = &c.rule.governed {
                        g.statements_over_concurrency.fetch_add(1, Relaxed);
                    }
                    return Err(errs::limited(
                        user,
                        "max_concurrent_statements",
                        u64::from(max),
                        c.rule.message.as_deref(),
                    ));
                }
                permit.held.push(b);
            }
        }
        Ok(permit)
    }
}

// ------------------------------------------------------------------------------------------ audit

/// Records waiting for the audit writer (all files together).
pub const AUDIT_QUEUE: usize = 16 * 1024;

/// The counters of one audit file.
pub(crate) struct AuditSink {
    path: Arc<str>,
    dropped: AtomicU64,
    written: AtomicU64,
}

/// A record on its way to the audit writer.
pub(crate) struct AuditLine {
    sink: Arc<AuditSink>,
    line: String,
}

/// The process's audit log: one writer thread, started once per process (when the first executor
/// starts), that owns the audit files; executors hand it records over one bounded queue.
#[derive(Default)]
pub struct AuditLog {
    tx: Mutex<Option<SyncSender<AuditLine>>>,
    sinks: Mutex<HashMap<String, Arc<AuditSink>>>,
}

impl AuditLog {
    /// The queue to the writer, starting the writer on the first call.
    pub(crate) fn start(&self) -> Option<SyncSender<AuditLine>> {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = &*tx {
            return Some(t.clone());
        }
        let (t, rx) = sync_channel::<AuditLine>(AUDIT_QUEUE);
        std::thread::Builder::new()
            .name("furrow-audit".into())
            .spawn(move || write_audit(&rx))
            .map_err(|e| tracing::error!(error = %e, "cannot start the audit writer"))
            .ok()?;
        *tx = Some(t.clone());
        Some(t)
    }

    /// The counters of `path` (registered on first use).
    fn sink(&self, path: &str) -> Arc<AuditSink> {
        let mut m = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(path.to_string())
            .or_insert_with(|| {
                Arc::new(AuditSink {
                    path: Arc::from(path),
                    dropped: AtomicU64::new(0),
                    written: AtomicU64::new(0),
                })
            })
            .clone()
    }
}

/// The audit writer: appends each record to its file (opened on its first record), flushing when
/// the queue is empty.
fn write_audit(rx: &std::sync::mpsc::Receiver<AuditLine>) {
    let mut files: HashMap<Arc<str>, std::io::BufWriter<std::fs::File>> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(l) = next {
            let out = match files.entry(l.sink.path.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
                std::collections::hash_map::Entry::Vacant(v) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&*l.sink.path)
                    .map_err(|e| {
                        tracing::error!(path = &*l.sink.path, error = %e, "cannot open the audit log");
                    })
                    .ok()
                    .map(|f| v.insert(std::io::BufWriter::new(f))),
            };
            if let Some(out) = out {
                let _ = out.write_all(l.line.as_bytes());
                l.sink.written.fetch_add(1, Relaxed);
            }
            next = rx.try_recv().ok();
        }
        for out in files.values_mut() {
            let _ = out.flush();
        }
    }
}

/// This core's counters of `path`.
fn sink(core: &OpsCore, path: &str) -> Arc<AuditSink> {
    if let Some(s) = core.sinks.borrow().get(path) {
        return s.clone();
    }
    let s = core.log.sink(path);
    core.sinks.borrow_mut().insert(path.to_string(), s.clone());
    s
}

/// One audited statement.
pub struct AuditRecord<'a> {
    /// Proxy user.
    pub user: &'a str,
    /// Client address.
    pub client: std::net::IpAddr,
    /// Current schema.
    pub schema: Option<&'a str>,
    /// Server that ran it (empty when refused by the proxy).
    pub backend: &'a str,
    /// Statement text.
    pub sql: &'a str,
    /// Fingerprint hash.
    pub digest: u64,
    /// Latency.
    pub took: Duration,
    /// Rows returned or affected.
    pub rows: u64,
    /// Error code, if it failed.
    pub error: Option<u16>,
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Queues an audit line for `path` (never blocks: a full queue drops and counts the record).
pub fn audit(core: &OpsCore, path: &str, r: &AuditRecord<'_>) {
    let s = sink(core, path);
    let Some(tx) = &core.tx else {
        s.dropped.fetch_add(1, Relaxed);
        return;
    };
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut sql = r.sql;
    if sql.len() > 4096 {
        let mut end = 4096;
        while !sql.is_char_boundary(end) {
            end -= 1;
        }
        sql = &sql[..end];
    }
    let mut line = String::with_capacity(160 + sql.len());
    line.push_str(&format!("{{\"ts_ms\":{ts},\"user\":"));
    json_str(&mut line, r.user);
    line.push_str(&format!(",\"client\":\"{}\",\"schema\":", r.client));
    match r.schema {
        Some(s) => json_str(&mut line, s),
        None => line.push_str("null"),
    }
    line.push_str(",\"backend\":");
    json_str(&mut line, r.backend);
    line.push_str(&format!(
        ",\"digest\":\"{:016x}\",\"us\":{},\"rows\":{},\"error\":{},\"sql\":",
        r.digest,
        r.took.as_micros(),
        r.rows,
        r.error.map_or("null".to_string(), |e| e.to_string())
    ));
    json_str(&mut line, sql);
    line.push_str("}\n");
    match tx.try_send(AuditLine {
        sink: s.clone(),
        line,
    }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            s.dropped.fetch_add(1, Relaxed);
        }
    }
}

impl AuditLog {
    /// Counters per file: (path, records written, records dropped because the queue was full).
    pub(crate) fn stats(&self) -> Vec<(String, u64, u64)> {
        let m = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .map(|(p, s)| (p.clone(), s.written.load(Relaxed), s.dropped.load(Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(p: &str) -> (Vec<String>, bool, bool) {
        let up = p.to_ascii_uppercase();
        (
            up.split('*').map(str::to_string).collect(),
            !up.starts_with('*'),
            !up.ends_with('*'),
        )
    }

    fn m(p: &str, t: &str) -> bool {
        let (a, s, e) = parts(p);
        glob(&a, s, e, t)
    }

    #[test]
    fn globs() {
        assert!(m("DELETE FROM * WHERE ?", "DELETE FROM T WHERE ?"));
        assert!(m("delete from *", "DELETE FROM T WHERE ID = ?"));
        assert!(!m("DELETE FROM *", "SELECT 1"));
        assert!(m("*SLEEP*", "SELECT SLEEP (?)"));
        assert!(m("*", "anything"));
        assert!(m("SELECT ?", "SELECT ?"));
        assert!(!m("SELECT ?", "SELECT ? FROM T"));
        assert!(!m("A*B*C", "AC"));
        assert!(m("A*B*C", "AXBXC"));
    }

    fn rule(pattern: &str, action: RuleAction) -> MysqlRule {
        MysqlRule {
            pattern: pattern.into(),
            action,
            users: Vec::new(),
            qps: None,
            concurrency: None,
            per: RulePer::Rule,
            pace: Pace::Reject,
            message: None,
            cluster: None,
            governed: None,
        }
    }

    fn rules(mode: RulesMode, list: Vec<MysqlRule>, group: &str) -> Rules {
        Rules {
            mode,
            rules: list.iter().map(Compiled::new).collect(),
            group: group.into(),
            generation: 1,
            budgets: Arc::default(),
        }
    }

    #[test]
    fn deny_allow_and_limits() {
        let d = router::sql::digest("DELETE FROM t WHERE id = 1");
        let s = router::sql::digest("SELECT 1");
        let r = rules(
            RulesMode::Denylist,
            vec![rule("DELETE *", RuleAction::Deny)],
            "g1",
        );
        assert_eq!(r.check("u", &d).err().map(|e| e.code), Some(1142));
        assert!(r.check("u", &s).is_ok());
        let r = rules(
            RulesMode::Allowlist,
            vec![rule("SELECT *", RuleAction::Allow)],
            "g2",
        );
        assert!(r.check("u", &s).is_ok());
        assert_eq!(r.check("u", &d).err().map(|e| e.code), Some(1142));
        let mut c = rule("*", RuleAction::Limit);
        c.concurrency = Some(1);
        let r = rules(RulesMode::Denylist, vec![c], "g3");
        let p = r.check("u", &s).expect("first");
        assert_eq!(r.check("u", &s).err().map(|e| e.code), Some(1226));
        drop(p);
        assert!(r.check("u", &s).is_ok());
        let mut q = rule("*", RuleAction::Limit);
        q.qps = Some(2);
        q.per = RulePer::User;
        let r = rules(RulesMode::Denylist, vec![q], "g4");
        assert!(r.check("a", &s).is_ok());
        assert!(r.check("a", &s).is_ok());
        assert_eq!(r.check("a", &s).err().map(|e| e.code), Some(1226));
        assert!(r.check("b", &s).is_ok(), "budgets are per user");
        // A queueing limit: the second statement of a burst waits its turn (1/qps later), one
        // whose turn is beyond `max_wait_ms` is refused.
        let mut q = rule("*", RuleAction::Limit);
        q.qps = Some(10);
        q.pace = Pace::Queue { max_wait_ms: 220 };
        let r = rules(RulesMode::Denylist, vec![q], "g7");
        assert_eq!(r.check("a", &s).expect("first").wait, Duration::ZERO);
        let w2 = r.check("a", &s).expect("second").wait;
        assert!(
            w2 > Duration::ZERO && w2 <= Duration::from_millis(100),
            "{w2:?}"
        );
        let w3 = r.check("a", &s).expect("third").wait;
        assert!(w3 > w2 && w3 <= Duration::from_millis(200), "{w3:?}");
        assert_eq!(r.check("a", &s).err().map(|e| e.code), Some(1226));
        let dig = rule(&format!("digest:{:016x}", s.hash), RuleAction::Deny);
        let r = rules(RulesMode::Denylist, vec![dig], "g5");
        assert!(r.check("u", &s).is_err());
        assert!(r.check("u", &d).is_ok());
    }

    #[test]
    fn every_statement_and_dynamic_sql_meet_the_rules() {
        let r = rules(
            RulesMode::Denylist,
            vec![rule("DROP TABLE *", RuleAction::Deny)],
            "g6",
        );
        let check = |sql: &str| {
            r.check_text("u", sql, &router::sql::digest(sql))
                .err()
                .map(|e| e.code)
        };
        assert_eq!(check("SELECT 1"), None);
        assert_eq!(check("SELECT 1; DROP TABLE t"), Some(1142));
        assert_eq!(check("SELECT 1 /*!; DROP TABLE t */"), Some(1142));
        assert_eq!(check("PREPARE s FROM 'DROP TABLE t'"), Some(1142));
        assert_eq!(check("EXECUTE IMMEDIATE 'DROP TABLE t'"), Some(1142));
        assert_eq!(check("PREPARE s FROM 'SELECT 1'"), None);
        assert_eq!(check("PREPARE s FROM @q"), Some(1142));
        assert_eq!(
            check("EXECUTE IMMEDIATE CONCAT('DROP ', 'TABLE t')"),
            Some(1142)
        );
        assert_eq!(check("CALL p()"), Some(1142));
        assert_eq!(check("EXECUTE s"), None);
        let r = rules(
            RulesMode::Denylist,
            vec![
                rule("CALL SAFE_*", RuleAction::Allow),
                rule("DROP TABLE *", RuleAction::Deny),
            ],
            "g7",
        );
        let sql = "CALL safe_report(1)";
        assert!(r.check_text("u", sql, &router::sql::digest(sql)).is_ok());
        let sql = "CALL other(1)";
        assert!(r.check_text("u", sql, &router::sql::digest(sql)).is_err());
        // Only limits: nothing to classify, everything runs.
        let mut c = rule("*", RuleAction::Limit);
        c.qps = Some(1000);
        let r = rules(RulesMode::Denylist, vec![c], "g8");
        let sql = "CALL p(); PREPARE s FROM @q";
        assert!(r.check_text("u", sql, &router::sql::digest(sql)).is_ok());
        let r = rules(
            RulesMode::Allowlist,
            vec![rule("SELECT *", RuleAction::Allow)],
            "g9",
        );
        let sql = "SELECT 1; DELETE FROM t";
        assert!(r.check_text("u", sql, &router::sql::digest(sql)).is_err());
        let sql = "SELECT 1; SELECT 2";
        assert!(r.check_text("u", sql, &router::sql::digest(sql)).is_ok());
    }

    #[test]
    fn audit_lines_are_json_and_bounded() {
        let dir = std::env::temp_dir().join(format!("furrow-audit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("a.log");
        let path = path.to_string_lossy().into_owned();
        let core = OpsCore::new(Arc::default(), Arc::default());
        audit(
            &core,
            &path,
            &AuditRecord {
                user: "u\"x",
                client: std::net::IpAddr::from([127, 0, 0, 1]),
                schema: None,
                backend: "primary",
                sql: "SELECT 'a\nb'",
                digest: 7,
                took: Duration::from_micros(12),
                rows: 1,
                error: None,
            },
        );
        let start = std::time::Instant::now();
        let text = loop {
            let t = std::fs::read_to_string(&path).unwrap_or_default();
            if !t.is_empty() || start.elapsed() > Duration::from_secs(5) {
                break t;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(text.contains("\"user\":\"u\\\"x\""), "{text}");
        assert!(text.contains("\"sql\":\"SELECT 'a\\nb'\""), "{text}");
        assert!(text.ends_with("}\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
