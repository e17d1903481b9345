//! Job definitions: schedule, kind, items, resources and policies, their validation, and the record they
//! are stored as (`Rec::Jobs`, committed through the configuration center's transactions).
//!
//! A job belongs to an environment and an application (permissions are the grants on `(app, JOB)`). Its
//! definition is small and changes rarely, so it lives in the shared store with every other record; what
//! changes every second (triggers, runs, items, workers) lives in the jobs runtime tables (`super::db`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::cron::{Cron, Zone};
use crate::error::{ControlError, Result};
use crate::model::check_name;

/// The most items one trigger of a job may produce.
pub const MAX_ITEMS: usize = 10_000;
/// The most bytes of a reduce step's parameters (they travel as `$FURROW_PARAMS` and are stored in a TEXT
/// column of at most 64 KiB).
pub const MAX_REDUCE_INPUT: usize = 60 * 1024;
/// The item index of a job's map step.
pub const MAP_IDX: i64 = -1;
/// The item index of a job's reduce step.
pub const REDUCE_IDX: i64 = -2;
/// The most upstream jobs of one job.
pub const MAX_UPSTREAMS: usize = 32;

/// When a job fires on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// A six-field cron expression (with seconds) read in a time zone (`UTC` or `+HH:MM`).
    Cron {
        /// The expression.
        expr: String,
        /// The time zone (default UTC).
        #[serde(default = "utc")]
        tz: String,
    },
    /// Every `every_ms` from the time the job was saved, whatever the runs take.
    Rate {
        /// The period.
        every_ms: u64,
    },
    /// `delay_ms` after the previous run ended (the first run `delay_ms` after saving).
    Delay {
        /// The pause between runs.
        delay_ms: u64,
    },
    /// Once, at `at_ms` (Unix ms).
    Once {
        /// When.
        at_ms: u64,
    },
    /// Only when triggered by hand (API, CLI) or by its upstream jobs (`after`).
    Manual,
}

fn utc() -> String {
    "UTC".into()
}

/// What one item runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Kind {
    /// `sh -c COMMAND`, with the item's parameters in `$FURROW_PARAMS` (JSON) and `$FURROW_ITEM` (index).
    Shell {
        /// The command line.
        command: String,
    },
    /// An HTTP call; 2xx is success. The item's parameters are sent as the body when `body` is absent.
    Http {
        /// `GET`, `POST`, `PUT`, `DELETE`.
        #[serde(default = "post")]
        method: String,
        /// `http://HOST:PORT/PATH` or `https://HOST[:PORT]/PATH` (TLS by rustls, the server's certificate
        /// verified against `ca_file` or the system's CA bundle).
        url: String,
        /// The body (JSON), if any.
        #[serde(default)]
        body: Option<Json>,
        /// For `https://`: a PEM file of CA certificates on the worker's host to verify the server with,
        /// instead of the system bundle (a private CA).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<String>,
    },
    /// One statement per shard of a sharded Furrow MySQL listener, sent with the shard hint
    /// `/* furrow:shard=NAME */`; `{shard}` and `{index}` in the text are replaced per item.
    Sql {
        /// The Furrow MySQL listener, `HOST:PORT`.
        listener: String,
        /// The user.
        user: String,
        /// Its password (stored in clear in the job definition; masked in reads).
        #[serde(default)]
        password: String,
        /// The (logical) database to `USE` first, if any.
        #[serde(default)]
        database: String,
        /// The shard names, one item each.
        shards: Vec<String>,
        /// The statement.
        sql: String,
    },
    /// One Redis command per shard (`HOST:PORT` each), e.g. `["INCR", "jobs:{index}"]`.
    Redis {
        /// The shard addresses, one item each.
        shards: Vec<String>,
        /// The command and its arguments; `{shard}` and `{index}` are replaced per item.
        command: Vec<String>,
    },
    /// A MySQL online reshard on a Furrow proxy's admin port (docs/sharding.md, "Resharding"):
    /// `RESHARD START`, then `RESHARD STATUS` followed as the item's log until the cut-over, then
    /// `RESHARD CONFIRM` (unless `confirm` is false: the run ends at the cut-over, for an operator's
    /// CONFIRM or ABORT). One item.
    Reshard {
        /// The proxy's admin address, `HOST:PORT` (an IP address).
        admin: String,
        /// The `[sharding.NAME]` section.
        sharding: String,
        /// The table resharded.
        table: String,
        /// The table rule of the new layout.
        rule: String,
        /// Rows per copy batch (`BATCH`, 1 to 10,000); the proxy's default without it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<u64>,
        /// `changed` (default) or `full`: what the cut-over verifies with writes paused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verify: Option<String>,
        /// The admin addresses of the other proxies that write the table (`PEERS`: the cut-over
        /// verifies their writes and fences them; docs/sharding.md, "Several proxies").
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        peers: Vec<String>,
        /// Most rows per second the copier copies (`RATE`); no limit without it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate: Option<u64>,
        /// CONFIRM after the cut-over (default true).
        #[serde(default = "yes")]
        confirm: bool,
    },
    /// A function registered in a worker under `name` (the Rust client library, `Worker::register`).
    Fn {
        /// The registered name.
        name: String,
    },
}

fn post() -> String {
    "POST".into()
}

fn yes() -> bool {
    true
}

impl Kind {
    /// The capability a worker must advertise to run it: `shell`, `http`, `sql`, `redis` or `fn:NAME`.
    pub fn capability(&self) -> String {
        match self {
            Kind::Shell { .. } => "shell".into(),
            Kind::Http { .. } => "http".into(),
            Kind::Sql { .. } => "sql".into(),
            Kind::Redis { .. } => "redis".into(),
            Kind::Reshard { .. } => "reshard".into(),
            Kind::Fn { name } => format!("fn:{name}"),
        }
    }
}

/// What one item needs of a worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU in thousandths of a core.
    #[serde(default)]
    pub cpu_milli: u64,
    /// Memory in MiB (also the address-space rlimit of a shell item when set).
    #[serde(default)]
    pub mem_mb: u64,
}

/// What a failed upstream does to a downstream job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamPolicy {
    /// The downstream job does not run (until every upstream succeeds again).
    #[default]
    Block,
    /// The downstream job records a `skipped` run (its own downstream jobs then apply their policy).
    Skip,
}

/// What happens to an item whose worker died while running it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// It runs again on another worker.
    #[default]
    AtLeastOnce,
    /// It is marked `lost` (failed) and not run again.
    AtMostOnce,
}

/// Firings missed while no scheduler ran (or the job's trigger was late by more than a second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// One run for all the missed times.
    #[default]
    FireOnce,
    /// One run per missed time (at most 100).
    FireAll,
    /// None: wait for the next time.
    Skip,
}

/// A failure alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// `http://HOST:PORT/PATH` or `https://HOST[:PORT]/PATH`: receives a POST with the failed run as JSON
    /// (sent by the control node, HTTPS through the same client as HTTP items).
    pub webhook: String,
    /// For `https://`: a PEM file of CA certificates on the control node's host to verify the receiver
    /// with, instead of the system bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// A job definition as sent by clients (`PUT /v1/jobs/{env}/{job}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The owning application (must exist): permissions are the grants on `(app, JOB)`.
    pub app: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// When it fires on its own.
    #[serde(default = "manual")]
    pub schedule: Schedule,
    /// Upstream jobs (same environment): it also fires when all of them have finished since its last run.
    #[serde(default)]
    pub after: Vec<String>,
    /// What a failed upstream does to it.
    #[serde(default)]
    pub on_upstream_failure: UpstreamPolicy,
    /// What each item runs.
    pub kind: Kind,
    /// Parameters of each item (one item each); none: one item with `{}`. SQL and Redis jobs have one item
    /// per shard instead.
    #[serde(default)]
    pub items: Vec<Json>,
    /// Map step: runs first, as one item (index -1); what it prints (its result if that is a JSON array, else
    /// the last line of its output that is one) is the parameter list of the run's items. Instead of `items`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<Box<Kind>>,
    /// Reduce step: runs once after every item succeeded, as one item (index -2) whose parameters are
    /// `{"results": [{"idx", "result", "output"}, ...]}` (`output`: the item's last output line, at most
    /// 1 KiB; all of it at most [`MAX_REDUCE_INPUT`], else the run fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce: Option<Box<Kind>>,
    /// What one item needs of a worker.
    #[serde(default)]
    pub resources: Resources,
    /// Worker labels an item needs (all of them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An attempt running longer is killed and fails (default 60 s; 100 ms–1 day).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Attempts after the first one when an item fails (0–10).
    #[serde(default)]
    pub retries: u32,
    /// Wait before the first retry, doubled each time (default 1 s, at most 1 h).
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// Dead worker: run again elsewhere, or not.
    #[serde(default)]
    pub delivery: Delivery,
    /// Missed firings.
    #[serde(default)]
    pub misfire: Misfire,
    /// Failure alert.
    #[serde(default)]
    pub alert: Option<Alert>,
}

fn manual() -> Schedule {
    Schedule::Manual
}
fn default_timeout() -> u64 {
    60_000
}
fn default_backoff() -> u64 {
    1_000
}

/// A stored job: its definition and state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRec {
    /// The environment.
    pub env: String,
    /// The name (unique per environment).
    pub name: String,
    /// The definition.
    pub spec: JobSpec,
    /// Paused: it does not fire (manual triggers are refused too).
    #[serde(default)]
    pub paused: bool,
    /// The sequence value of its last change (a changed schedule restarts its trigger).
    pub rev: u64,
}

impl JobRec {
    /// The record key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.env, self.name)
    }

    /// The definition as shown to readers: the SQL password masked.
    pub fn masked(&self) -> JobRec {
        let mut j = self.clone();
        if let Kind::Sql { password, .. } = &mut j.spec.kind
            && !password.is_empty()
        {
            *password = "******".into();
        }
        j
    }
}

/// The jobs of every environment, in memory.
#[derive(Clone, Debug, Default)]
pub struct JobsState {
    /// By (env, name).
    pub jobs: BTreeMap<(String, String), JobRec>,
}

impl JobsState {
    /// Applies a stored record.
    pub fn put(&mut self, j: JobRec) {
        self.jobs.insert((j.env.clone(), j.name.clone()), j);
    }

    /// Removes by record key `env/name`.
    pub fn delete(&mut self, key: &str) {
        if let Some((env, name)) = key.split_once('/') {
            self.jobs.remove(&(env.to_string(), name.to_string()));
        }
    }

    /// A job.
    pub fn get(&self, env: &str, name: &str) -> Option<&JobRec> {
        self.jobs.get(&(env.to_string(), name.to_string()))
    }

    /// The jobs of `env` that list `name` among their upstreams.
    pub fn downstream<'a>(
        &'a self,
        env: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a JobRec> {
        self.jobs
            .values()
            .filter(move |j| j.env == env && j.spec.after.iter().any(|u| u == name))
    }
}

fn http_url_ok(url: &str) -> bool {
    url.strip_prefix("http://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

fn https_url_ok(url: &str) -> bool {
    url.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

/// Checks an `http(s)://` URL and its CA file (`at`: the field holding both, `kind`, `alert`, ...;
/// `url_field`: the URL's own name in it).
fn check_url(at: &str, url_field: &str, url: &str, ca_file: Option<&str>) -> Result<()> {
    let https = https_url_ok(url);
    if !https && !http_url_ok(url) {
        return Err(ControlError::bad(
            &format!("{at}/{url_field}"),
            "use http://HOST:PORT/PATH or https://HOST[:PORT]/PATH",
        ));
    }
    if let Some(ca) = ca_file {
        if !https {
            return Err(ControlError::bad(
                &format!("{at}/ca_file"),
                "a CA file is for https:// URLs only",
            ));
        }
        if !ca.starts_with('/') || ca.len() > 4096 {
            return Err(ControlError::bad(
                &format!("{at}/ca_file"),
                "an absolute path on the host that makes the call",
            ));
        }
    }
    Ok(())
}

impl JobSpec {
    /// The parsed cron schedule, if any.
    pub fn cron(&self) -> Result<Option<(Cron, Zone)>> {
        match &self.schedule {
            Schedule::Cron { expr, tz } => {
                let c = Cron::parse(expr)
                    .map_err(|e| ControlError::bad(&format!("schedule/{}", e.field), e.message))?;
                let z = Zone::parse(tz).map_err(|e| ControlError::bad("schedule/tz", e.message))?;
                Ok(Some((c, z)))
            }
            _ => Ok(None),
        }
    }

    /// Checks everything that does not depend on other jobs; errors name the field.
    pub fn validate(&self) -> Result<()> {
        check_name("app", &self.app)?;
        if self.description.len() > 4096 {
            return Err(ControlError::bad("description", "at most 4096 bytes"));
        }
        match &self.schedule {
            Schedule::Cron { .. } => {
                self.cron()?;
            }
            Schedule::Rate { every_ms } if !(100..=31_536_000_000).contains(every_ms) => {
                return Err(ControlError::bad("schedule/every_ms", "100 ms to 1 year"));
            }
            Schedule::Delay { delay_ms } if !(100..=31_536_000_000).contains(delay_ms) => {
                return Err(ControlError::bad("schedule/delay_ms", "100 ms to 1 year"));
            }
            _ => {}
        }
        if self.after.len() > MAX_UPSTREAMS {
            return Err(ControlError::bad(
                "after",
                format!("at most {MAX_UPSTREAMS} upstream jobs"),
            ));
        }
        for (i, u) in self.after.iter().enumerate() {
            check_name(&format!("after/{i}"), u)?;
        }
        check_kind("kind", &self.kind)?;
        for (at, k) in [
            ("map", self.map.as_deref()),
            ("reduce", self.reduce.as_deref()),
        ] {
            let Some(k) = k else { continue };
            check_kind(at, k)?;
            if at == "reduce" && matches!(k, Kind::Sql { .. } | Kind::Redis { .. }) {
                return Err(ControlError::bad(
                    at,
                    "a reduce step is a shell, HTTP or in-process item (SQL and Redis steps are map steps or per-shard jobs)",
                ));
            }
        }
        if self.map.is_some()
            && (!self.items.is_empty()
                || matches!(self.kind, Kind::Sql { .. } | Kind::Redis { .. }))
        {
            return Err(ControlError::bad(
                "map",
                "a job's items come from its map step or from `items`/shards, not both",
            ));
        }
        if self.items.len() > MAX_ITEMS {
            return Err(ControlError::bad(
                "items",
                format!("at most {MAX_ITEMS} items"),
            ));
        }
        if !self.items.is_empty() && matches!(self.kind, Kind::Reshard { .. }) {
            return Err(ControlError::bad("items", "a reshard job runs one item"));
        }
        if !self.items.is_empty() && matches!(self.kind, Kind::Sql { .. } | Kind::Redis { .. }) {
            return Err(ControlError::bad(
                "items",
                "SQL and Redis jobs have one item per shard; list the shards instead",
            ));
        }
        if !(100..=86_400_000).contains(&self.timeout_ms) {
            return Err(ControlError::bad("timeout_ms", "100 ms to 1 day"));
        }
        if self.retries > 10 {
            return Err(ControlError::bad("retries", "at most 10"));
        }
        if self.backoff_ms > 3_600_000 {
            return Err(ControlError::bad("backoff_ms", "at most 1 hour"));
        }
        if let Some(a) = &self.alert {
            check_url("alert", "webhook", &a.webhook, a.ca_file.as_deref())?;
        }
        for (k, v) in &self.labels {
            check_name("labels", k)?;
            if v.len() > 256 {
                return Err(ControlError::bad("labels", "values of at most 256 bytes"));
            }
        }
        Ok(())
    }

    /// What item `idx` of a run runs: the map step, the reduce step, or the job's kind.
    pub fn kind_of(&self, idx: i64) -> &Kind {
        match idx {
            MAP_IDX => self.map.as_deref().unwrap_or(&self.kind),
            REDUCE_IDX => self.reduce.as_deref().unwrap_or(&self.kind),
            _ => &self.kind,
        }
    }

    /// The parameters of each item of one trigger (none for a job with a map step: its map item makes them).
    pub fn expand(&self) -> Vec<Json> {
        match &self.kind {
            Kind::Sql { shards, .. } | Kind::Redis { shards, .. } => shards
                .iter()
                .enumerate()
                .map(|(i, s)| serde_json::json!({"shard": s, "index": i}))
                .collect(),
            _ if self.map.is_some() => vec![],
            _ if self.items.is_empty() => vec![serde_json::json!({})],
            _ => self.items.clone(),
        }
    }
}

/// Checks one kind (`at`: the field it is in: `kind`, `map`, `reduce`).
fn check_kind(at: &str, kind: &Kind) -> Result<()> {
    match kind {
        Kind::Shell { command } if command.trim().is_empty() => {
            return Err(ControlError::bad(&format!("{at}/command"), "empty command"));
        }
        Kind::Http {
            method,
            url,
            ca_file,
            ..
        } => {
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "DELETE") {
                return Err(ControlError::bad(
                    &format!("{at}/method"),
                    "GET, POST, PUT or DELETE",
                ));
            }
            check_url(at, "url", url, ca_file.as_deref())?;
        }
        Kind::Sql {
            listener,
            user,
            shards,
            sql,
            database,
            ..
        } => {
            if !database.is_empty() {
                check_name(&format!("{at}/database"), database)?;
            }
            if listener.parse::<std::net::SocketAddr>().is_err() {
                return Err(ControlError::bad(
                    &format!("{at}/listener"),
                    "use HOST:PORT (an IP address)",
                ));
            }
            if user.is_empty() {
                return Err(ControlError::bad(&format!("{at}/user"), "empty user"));
            }
            if sql.trim().is_empty() {
                return Err(ControlError::bad(&format!("{at}/sql"), "empty statement"));
            }
            // A SQL map step without shards runs once, routed by the listener.
            if !(at == "map" && shards.is_empty()) {
                check_shards(at, shards, |s| {
                    s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                })?;
            }
        }
        Kind::Redis { shards, command } => {
            if command.is_empty() {
                return Err(ControlError::bad(&format!("{at}/command"), "empty command"));
            }
            check_shards(at, shards, |s| s.parse::<std::net::SocketAddr>().is_ok())?;
        }
        Kind::Reshard {
            admin,
            sharding,
            table,
            rule,
            batch,
            verify,
            peers,
            rate,
            ..
        } => {
            if at != "kind" {
                return Err(ControlError::bad(
                    at,
                    "a reshard is a job's kind, not a map or reduce step",
                ));
            }
            if admin.parse::<std::net::SocketAddr>().is_err() {
                return Err(ControlError::bad(
                    &format!("{at}/admin"),
                    "use HOST:PORT (an IP address)",
                ));
            }
            for (f, v) in [("sharding", sharding), ("table", table), ("rule", rule)] {
                if v.is_empty() || v.len() > 64 || v.bytes().any(|b| b.is_ascii_whitespace()) {
                    return Err(ControlError::bad(
                        &format!("{at}/{f}"),
                        "a name of 1 to 64 bytes without spaces",
                    ));
                }
            }
            if batch.is_some_and(|b| !(1..=10_000).contains(&b)) {
                return Err(ControlError::bad(&format!("{at}/batch"), "1 to 10000 rows"));
            }
            if rate == &Some(0) {
                return Err(ControlError::bad(
                    &format!("{at}/rate"),
                    "rows per second, more than 0 (leave it out for no limit)",
                ));
            }
            if peers.len() > 64
                || peers
                    .iter()
                    .any(|p| p.parse::<std::net::SocketAddr>().is_err())
            {
                return Err(ControlError::bad(
                    &format!("{at}/peers"),
                    "at most 64 admin addresses HOST:PORT (IP addresses)",
                ));
            }
            if verify
                .as_deref()
                .is_some_and(|v| v != "changed" && v != "full")
            {
                return Err(ControlError::bad(
                    &format!("{at}/verify"),
                    "`changed` or `full`",
                ));
            }
        }
        Kind::Fn { name } => check_name(&format!("{at}/name"), name)?,
        _ => {}
    }
    Ok(())
}

fn check_shards(at: &str, shards: &[String], ok: impl Fn(&str) -> bool) -> Result<()> {
    if shards.is_empty() || shards.len() > 1024 {
        return Err(ControlError::bad(
            &format!("{at}/shards"),
            "1 to 1024 shards",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, s) in shards.iter().enumerate() {
        if !ok(s) || !seen.insert(s) {
            return Err(ControlError::bad(
                &format!("{at}/shards/{i}"),
                format!("bad or repeated shard {s:?}"),
            ));
        }
    }
    Ok(())
}

/// Finds a dependency cycle through `start` in the graph `upstreams` (job → its `after`); returns the path
/// `start → ... → start` when there is one.
pub fn find_cycle(upstreams: &BTreeMap<String, Vec<String>>, start: &str) -> Option<Vec<String>> {
    // Iterative depth-first search with an explicit stack (bounded by the number of jobs).
    let mut stack: Vec<(String, usize)> = vec![(start.to_string(), 0)];
    let mut on_path: BTreeSet<String> = BTreeSet::from([start.to_string()]);
    let mut done: BTreeSet<String> = BTreeSet::new();
    while let Some((node, i)) = stack.last().cloned() {
        let next = upstreams.get(&node).and_then(|u| u.get(i)).cloned();
        match next {
            Some(n) => {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                if n == start {
                    let mut path: Vec<String> = stack.iter().map(|(s, _)| s.clone()).collect();
                    path.push(n);
                    return Some(path);
                }
                if !on_path.contains(&n) && !done.contains(&n) {
                    on_path.insert(n.clone());
                    stack.push((n, 0));
                }
            }
            None => {
                stack.pop();
                on_path.remove(&node);
                done.insert(node);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Json) -> std::result::Result<JobSpec, String> {
        let s: JobSpec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.field.unwrap_or_default())?;
        Ok(s)
    }

    #[test]
    fn specs_validate_with_field_errors() {
        let ok = spec(
            serde_json::json!({"app": "shop", "schedule": {"type": "cron", "expr": "*/5 * * * * *"},
            "kind": {"type": "shell", "command": "true"}}),
        )
        .unwrap();
        assert_eq!(ok.expand(), vec![serde_json::json!({})]);
        assert_eq!(ok.timeout_ms, 60_000);
        for (v, field) in [
            (
                serde_json::json!({"app": "shop", "schedule": {"type": "cron", "expr": "* * * *"}, "kind": {"type": "shell", "command": "x"}}),
                "schedule/expr",
            ),
            (
                serde_json::json!({"app": "shop", "schedule": {"type": "cron", "expr": "* * * * * *", "tz": "Mars/Base"}, "kind": {"type": "shell", "command": "x"}}),
                "schedule/tz",
            ),
            (
                serde_json::json!({"app": "shop", "schedule": {"type": "rate", "every_ms": 5}, "kind": {"type": "shell", "command": "x"}}),
                "schedule/every_ms",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "http", "url": "ftp://x/"}}),
                "kind/url",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "sql", "listener": "127.0.0.1:1", "user": "u", "shards": ["a", "a"], "sql": "x"}}),
                "kind/shards/1",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "redis", "shards": ["nope"], "command": ["PING"]}}),
                "kind/shards/0",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "shell", "command": "x"}, "retries": 11}),
                "retries",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "reshard", "admin": "proxy:7001", "sharding": "app", "table": "t", "rule": "t2"}}),
                "kind/admin",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "reshard", "admin": "127.0.0.1:1", "sharding": "app", "table": "t x", "rule": "t2"}}),
                "kind/table",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "reshard", "admin": "127.0.0.1:1", "sharding": "app", "table": "t", "rule": "t2", "batch": 0}}),
                "kind/batch",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "reshard", "admin": "127.0.0.1:1", "sharding": "app", "table": "t", "rule": "t2"}, "items": [{}, {}]}),
                "items",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "shell", "command": "x"}, "map": {"type": "reshard", "admin": "127.0.0.1:1", "sharding": "app", "table": "t", "rule": "t2"}}),
                "map",
            ),
            (
                serde_json::json!({"app": "shop", "kind": {"type": "shell", "command": "x"}, "after": ["a b"]}),
                "after/0",
            ),
        ] {
            assert_eq!(spec(v.clone()).unwrap_err(), field, "{v}");
        }
        // Unknown fields are refused, not ignored.
        assert!(spec(serde_json::json!({"app": "shop", "kind": {"type": "shell", "command": "x"}, "retry": 1})).unwrap_err().contains("retry"));
    }

    #[test]
    fn sql_items_are_the_shards_and_passwords_are_masked() {
        let s = spec(serde_json::json!({"app": "shop", "kind": {"type": "sql", "listener": "127.0.0.1:4000",
            "user": "app", "password": "pw", "shards": ["s0", "s1"], "sql": "SELECT COUNT(*) FROM t_{index}"}}))
        .unwrap();
        assert_eq!(
            s.expand()[1],
            serde_json::json!({"shard": "s1", "index": 1})
        );
        let j = JobRec {
            env: "DEV".into(),
            name: "n".into(),
            spec: s,
            paused: false,
            rev: 1,
        };
        let Kind::Sql { password, .. } = j.masked().spec.kind else {
            panic!()
        };
        assert_eq!(password, "******");
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
        g.insert("d".into(), vec!["b".into(), "c".into()]);
        g.insert("b".into(), vec!["a".into()]);
        g.insert("c".into(), vec!["a".into()]);
        g.insert("a".into(), vec![]);
        assert_eq!(find_cycle(&g, "d"), None);
        g.insert("a".into(), vec!["d".into()]);
        assert_eq!(
            find_cycle(&g, "a").unwrap(),
            vec!["a", "d", "b", "a"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        );
        g.insert("e".into(), vec!["e".into()]);
        assert_eq!(
            find_cycle(&g, "e").unwrap(),
            vec!["e".to_string(), "e".to_string()]
        );
    }
}
