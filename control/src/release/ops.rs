//! Release changes as pure code on a [`Tx`]: each checks the caller's level on the project and stage,
//! validates, audits, and returns the records to commit. The engine's steps are in [`super::engine`].
//!
//! Permissions: a project belongs to an application; a grant on `(app, release:PROJECT)` gives a level on every
//! stage, one on `(app, release:PROJECT:STAGE)` on that stage only (and `(app, *)` on everything of the app).
//! Reading needs `read`; adding versions and running the gate `edit` on the project; starting a deployment
//! `edit` on the stage; rollbacks, restarts, pauses and cancels `publish` on the stage; defining the project
//! `publish` on the project. Approvals need to match the stage's approval rule. Agents authenticate as an
//! administrator or a user with the role `agent`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::model::*;
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Level, NsKey, User, check_name, now_ms};
use crate::ops::Tx;
use crate::state::{Change, Rec, State};

/// A project definition as sent by clients (`PUT /v1/release/projects/{name}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectInput {
    /// The owning application.
    pub app: String,
    /// The kind.
    #[serde(default)]
    pub kind: ProjectKind,
    /// Dependencies.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Git repository path.
    #[serde(default)]
    pub repo: String,
    /// The build gate.
    #[serde(default)]
    pub gate: GateSpec,
    /// Hooks.
    #[serde(default)]
    pub hooks: Hooks,
    /// Canary probe.
    #[serde(default)]
    pub probe: Option<Probe>,
    /// Stages (default: dev, qa, staging, live without hosts).
    #[serde(default)]
    pub stages: Option<Vec<Stage>>,
    /// Webhooks.
    #[serde(default)]
    pub webhooks: Vec<String>,
}

/// A new version (`POST /v1/release/projects/{name}/versions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionInput {
    /// Its name.
    pub name: String,
    /// The artifact.
    pub artifact: Artifact,
    /// The source revision.
    #[serde(default)]
    pub revision: String,
}

/// The default pipeline.
pub fn default_stages() -> Vec<Stage> {
    ["dev", "qa", "staging", "live"]
        .iter()
        .map(|n| Stage {
            name: n.to_string(),
            ..Default::default()
        })
        .collect()
}

/// Splits `http://HOST:PORT/PATH` into the server and the path (`/` when absent).
pub fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() || !host.contains(':') {
        return None;
    }
    Some((format!("http://{host}"), path.to_string()))
}

/// Checks a revision or ref name: what `git diff` is given must never be read as an option.
pub fn check_revision(field: &str, rev: &str) -> Result<()> {
    let ok = !rev.is_empty()
        && rev.len() <= 200
        && !rev.starts_with('-')
        && !rev.contains("..")
        && rev.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b'^' | b'~')
        });
    if ok {
        Ok(())
    } else {
        Err(ControlError::bad(
            field,
            format!("invalid revision {rev:?}: a commit id or ref name"),
        ))
    }
}

/// The first dependency cycle through the projects' `depends_on`, as a path `a -> b -> a`.
pub fn find_cycle(deps: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    // Depth-first search with colours: 1 = on the current path, 2 = done.
    fn visit(
        n: &str,
        deps: &BTreeMap<String, Vec<String>>,
        colour: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match colour.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        colour.insert(n.to_string(), 1);
        path.push(n.to_string());
        for d in deps.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, deps, colour, path) {
                return Some(c);
            }
        }
        path.pop();
        colour.insert(n.to_string(), 2);
        None
    }
    let mut colour = BTreeMap::new();
    for n in deps.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(n, deps, &mut colour, &mut path) {
            return Some(c);
        }
    }
    None
}

/// The projects in dependency order (dependencies first), considering only dependencies within the set.
pub fn dependency_order(
    set: &[String],
    deps: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>> {
    let sub: BTreeMap<String, Vec<String>> = set
        .iter()
        .map(|p| {
            let ds = deps
                .get(p)
                .into_iter()
                .flatten()
                .filter(|d| set.contains(d))
                .cloned()
                .collect();
            (p.clone(), ds)
        })
        .collect();
    if let Some(c) = find_cycle(&sub) {
        return Err(ControlError::bad(
            "depends_on",
            format!("dependency cycle: {}", c.join(" -> ")),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    let mut left: Vec<String> = sub.keys().cloned().collect();
    while !left.is_empty() {
        let (ready, rest): (Vec<String>, Vec<String>) = left
            .into_iter()
            .partition(|p| sub[p].iter().all(|d| out.contains(d)));
        if ready.is_empty() {
            // Unreachable after the cycle check; never loop forever on it.
            return Err(ControlError::bad("depends_on", "dependency cycle"));
        }
        out.extend(ready);
        left = rest;
    }
    Ok(out)
}

/// Dependencies by project.
pub type DepGraph = BTreeMap<String, Vec<String>>;

/// Declared dependencies plus observed ones: `observed` are call edges `(caller, callee)` from the tracing
/// service's dependency graph (a caller depends on what it calls, so the callee goes first). An observed
/// edge that would close a cycle with what is there already (services that call each other, or a call
/// against the declared order) is left out: observation orders what it can, declarations win. Returns the
/// merged graph and the observed edges it took.
pub fn with_observed(
    deps: &DepGraph,
    observed: &[(String, String)],
) -> (DepGraph, Vec<(String, String)>) {
    let mut merged = deps.clone();
    let mut taken = Vec::new();
    let mut edges: Vec<&(String, String)> = observed.iter().collect();
    edges.sort();
    edges.dedup();
    for (from, to) in edges {
        if from == to || !merged.contains_key(from) || !merged.contains_key(to) {
            continue;
        }
        if merged[from].contains(to) {
            continue;
        }
        if let Some(v) = merged.get_mut(from) {
            v.push(to.clone());
        }
        if find_cycle(&merged).is_some() {
            if let Some(v) = merged.get_mut(from) {
                v.pop();
            }
            continue;
        }
        taken.push((from.clone(), to.clone()));
    }
    (merged, taken)
}

/// Splits a stage's hosts into batches.
pub fn plan_batches(stage: &Stage, agents: &BTreeMap<String, Agent>) -> Vec<Vec<String>> {
    let mut left: Vec<String> = stage.hosts.clone();
    let total = left.len();
    let mut out = Vec::new();
    let specs = if stage.batches.is_empty() {
        vec![BatchSpec::Rest]
    } else {
        stage.batches.clone()
    };
    for spec in &specs {
        if left.is_empty() {
            break;
        }
        let take: Vec<String> = match spec {
            BatchSpec::Group(g) => left
                .iter()
                .filter(|h| {
                    agents
                        .get(*h)
                        .and_then(|a| a.labels.get("group"))
                        .is_some_and(|x| x == g)
                })
                .cloned()
                .collect(),
            BatchSpec::Percent(p) => {
                let n = ((total * *p as usize).div_ceil(100)).max(1);
                left.iter().take(n).cloned().collect()
            }
            BatchSpec::Count(n) => left.iter().take((*n as usize).max(1)).cloned().collect(),
            BatchSpec::Rest => left.clone(),
        };
        if take.is_empty() {
            continue;
        }
        left.retain(|h| !take.contains(h));
        out.push(take);
    }
    if !left.is_empty() {
        out.push(left);
    }
    out
}

/// Whether a subject (`user:NAME`, `role:NAME`) designates a user.
pub fn subject_matches(subject: &str, u: &User) -> bool {
    if let Some(n) = subject.strip_prefix("user:") {
        return n == u.name;
    }
    subject
        .strip_prefix("role:")
        .is_some_and(|r| u.roles.iter().any(|x| x == r))
}

/// The level of `u` on a project (and stage).
pub fn level_on(st: &State, u: &User, p: &Project, stage: Option<&str>) -> Level {
    let project = st.level(u, &p.app, &format!("release:{}", p.name));
    match stage {
        Some(s) => project.max(st.level(u, &p.app, &format!("release:{}:{s}", p.name))),
        None => project,
    }
}

/// Whether `u` may act as a deployment agent.
pub fn is_agent(u: &User) -> bool {
    u.admin || u.roles.iter().any(|r| r == "agent")
}

/// The wake-up channel of an agent's assignments (`Center::subscribe(AGENT_ENV, host)`).
pub const AGENT_ENV: &str = "@release";

fn unknown_project(name: &str) -> ControlError {
    ControlError::not_found(format!("unknown project {name:?}")).with_field("project")
}

/// The items of a routing version's bundle: its inline artifact, a JSON object of item key → typed value
/// (`{"config.proxy.shutdown_grace_ms": {"type": "integer", "value": 300}}`).
pub fn bundle(artifact: &Artifact) -> Result<BTreeMap<String, crate::model::Value>> {
    let Artifact::Inline(text) = artifact else {
        return Err(ControlError::bad(
            "artifact",
            "a routing version is an inline bundle of configuration items",
        ));
    };
    let items: BTreeMap<String, crate::model::Value> = serde_json::from_str(text).map_err(|e| {
        ControlError::bad(
            "artifact",
            format!("a routing bundle is a JSON object of item key -> typed value: {e}"),
        )
    })?;
    if items.is_empty() || items.len() > 1_000 {
        return Err(ControlError::bad("artifact", "a bundle has 1-1000 items"));
    }
    for k in items.keys() {
        check_name("artifact", k)?;
    }
    Ok(items)
}

fn validate_stage(i: usize, s: &Stage, probe: bool, routing: bool) -> Result<()> {
    let f = |x: &str| format!("stages/{i}/{x}");
    check_name(&f("name"), &s.name)?;
    if s.hosts.len() > MAX_AGENTS {
        return Err(ControlError::bad(&f("hosts"), "too many hosts"));
    }
    let mut seen = BTreeSet::new();
    for h in &s.hosts {
        check_name(&f("hosts"), h)?;
        if !seen.insert(h) {
            return Err(ControlError::bad(
                &f("hosts"),
                format!("host {h:?} listed twice"),
            ));
        }
    }
    for a in &s.approval.approvers {
        if !(a.starts_with("user:") || a.starts_with("role:")) {
            return Err(ControlError::bad(
                &f("approval/approvers"),
                format!("approver {a:?} must be user:NAME or role:NAME"),
            ));
        }
    }
    if s.approval.count > 0 && s.approval.approvers.is_empty() {
        return Err(ControlError::bad(
            &f("approval/approvers"),
            "approvals are required but nobody may give them",
        ));
    }
    if s.approval.count > 100 {
        return Err(ControlError::bad(
            &f("approval/count"),
            "at most 100 approvals",
        ));
    }
    super::window::validate(&s.window, &f("window"))?;
    if s.batches.len() > 32 {
        return Err(ControlError::bad(&f("batches"), "at most 32 batches"));
    }
    for b in &s.batches {
        match b {
            BatchSpec::Percent(p) if *p == 0 || *p > 100 => {
                return Err(ControlError::bad(&f("batches"), "a percent batch is 1-100"));
            }
            BatchSpec::Group(g) => check_name(&f("batches"), g)?,
            _ => {}
        }
    }
    if s.pause_ms > 86_400_000 {
        return Err(ControlError::bad(
            &f("pause_ms"),
            "pause_ms is at most a day",
        ));
    }
    if let Some(t) = s.host_timeout_ms
        && !(1_000..=3_600_000).contains(&t)
    {
        return Err(ControlError::bad(
            &f("host_timeout_ms"),
            "host_timeout_ms is 1000-3600000",
        ));
    }
    if !s.env.is_empty() {
        check_name(&f("env"), &s.env)?;
    }
    if let Some(c) = &s.canary {
        if routing {
            // The proxies' own reports are the signal; the canary group is the gray label.
        } else if !probe {
            return Err(ControlError::bad(
                &f("canary"),
                "canary analysis needs the project's probe (what the agents measure)",
            ));
        }
        if !routing && s.batches.len() < 2 {
            return Err(ControlError::bad(
                &f("canary"),
                "canary analysis needs at least two batches (the first is the canary, the rest the baseline)",
            ));
        }
        if !(c.alpha > 0.0 && c.alpha < 0.5) {
            return Err(ControlError::bad(
                &f("canary/alpha"),
                "alpha is in (0, 0.5)",
            ));
        }
        if !(0.0..1.0).contains(&c.error_margin) {
            return Err(ControlError::bad(
                &f("canary/error_margin"),
                "error_margin is in [0, 1)",
            ));
        }
        if c.min_samples < 10 || c.min_samples > 1_000_000 {
            return Err(ControlError::bad(
                &f("canary/min_samples"),
                "min_samples is 10-1000000 (the normal approximations need a few dozen)",
            ));
        }
        if !(c.latency_factor >= 1.0 && c.latency_factor.is_finite()) {
            return Err(ControlError::bad(
                &f("canary/latency_factor"),
                "latency_factor is at least 1",
            ));
        }
        if let Some(t) = &c.trace_service
            && (t.is_empty() || t.len() > 256 || t.chars().any(char::is_control))
        {
            return Err(ControlError::bad(
                &f("canary/trace_service"),
                "trace_service is a service name of 1-256 printable characters",
            ));
        }
    }
    Ok(())
}

fn validate_project(name: &str, input: &ProjectInput, stages: &[Stage]) -> Result<()> {
    check_name("project", name)?;
    check_name("app", &input.app)?;
    if stages.is_empty() || stages.len() > 16 {
        return Err(ControlError::bad("stages", "a pipeline has 1-16 stages"));
    }
    let mut names = BTreeSet::new();
    for (i, s) in stages.iter().enumerate() {
        validate_stage(
            i,
            s,
            input.probe.is_some(),
            matches!(input.kind, ProjectKind::Routing(_)),
        )?;
        if !names.insert(&s.name) {
            return Err(ControlError::bad(
                &format!("stages/{i}/name"),
                format!("stage {:?} appears twice", s.name),
            ));
        }
    }
    if input.gate.commands.len() > 32 || input.gate.commands.iter().any(|c| c.len() > 4096) {
        return Err(ControlError::bad(
            "gate/commands",
            "at most 32 commands of 4 KiB",
        ));
    }
    if let Some(t) = input.gate.timeout_ms
        && !(100..=3_600_000).contains(&t)
    {
        return Err(ControlError::bad(
            "gate/timeout_ms",
            "timeout_ms is 100-3600000",
        ));
    }
    let h = &input.hooks;
    if [&h.stop, &h.install, &h.start, &h.health]
        .iter()
        .any(|c| c.len() > 8192)
    {
        return Err(ControlError::bad("hooks", "hooks are at most 8 KiB"));
    }
    if let Some(t) = h.health_timeout_ms
        && !(100..=600_000).contains(&t)
    {
        return Err(ControlError::bad(
            "hooks/health_timeout_ms",
            "health_timeout_ms is 100-600000",
        ));
    }
    if let Some(p) = &input.probe {
        if split_url(&p.url).is_none() {
            return Err(ControlError::bad(
                "probe/url",
                "the probe is http://HOST:PORT/PATH",
            ));
        }
        if let Some(i) = p.interval_ms
            && !(5..=60_000).contains(&i)
        {
            return Err(ControlError::bad(
                "probe/interval_ms",
                "interval_ms is 5-60000",
            ));
        }
    }
    if input.webhooks.len() > 16 {
        return Err(ControlError::bad("webhooks", "at most 16 webhooks"));
    }
    for w in &input.webhooks {
        if split_url(w).is_none() {
            return Err(ControlError::bad(
                "webhooks",
                format!("webhook {w:?} is not http://HOST:PORT/PATH"),
            ));
        }
    }
    if let ProjectKind::Routing(t) = &input.kind {
        check_name("kind/routing/app", &t.app)?;
        check_name("kind/routing/cluster", &t.cluster)?;
        check_name("kind/routing/namespace", &t.namespace)?;
        if t.canary_labels.is_empty() || t.canary_labels.len() > 16 {
            return Err(ControlError::bad(
                "kind/routing/canary_labels",
                "1-16 labels select the canary proxies",
            ));
        }
    }
    if input.depends_on.len() > 64 {
        return Err(ControlError::bad("depends_on", "at most 64 dependencies"));
    }
    if input.repo.len() > 4096 {
        return Err(ControlError::bad("repo", "repo path too long"));
    }
    Ok(())
}

impl Tx<'_> {
    /// Requires `level` on a project (and stage), remembering it as a denial's target.
    fn need_project(&mut self, name: &str, stage: Option<&str>, level: Level) -> Result<Project> {
        self.target = match stage {
            Some(s) => format!("release/{name}/{s}"),
            None => format!("release/{name}"),
        };
        let p = self
            .st
            .release
            .projects
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_project(name))?;
        if let Some(s) = stage
            && p.stage(s).is_none()
        {
            return Err(
                ControlError::not_found(format!("project {name:?} has no stage {s:?}"))
                    .with_field("stage"),
            );
        }
        let have = level_on(self.st, self.actor, &p, stage);
        if have < level {
            return Err(ControlError::forbidden(format!(
                "user {:?} has {have:?} on {}, needs {level:?}",
                self.actor.name, self.target
            )));
        }
        Ok(p)
    }

    fn need_agent(&mut self, host: &str) -> Result<()> {
        self.target = format!("release/agent/{host}");
        if is_agent(self.actor) {
            Ok(())
        } else {
            Err(ControlError::forbidden(format!(
                "user {:?} is not an agent (needs the role \"agent\")",
                self.actor.name
            )))
        }
    }

    /// Wakes an agent's long-poll.
    pub(crate) fn wake_agent(&mut self, host: &str) {
        self.pushed.push(NsKey {
            app: String::new(),
            env: AGENT_ENV.into(),
            cluster: String::new(),
            namespace: host.into(),
        });
    }

    pub(crate) fn put_rel(&mut self, r: RelRec) {
        self.put(Rec::Rel(r));
    }

    /// Creates or updates a project (publish on the project's application; refuses dependency cycles).
    pub fn put_project(&mut self, name: &str, input: ProjectInput) -> Result<Project> {
        let stages = input.stages.clone().unwrap_or_else(default_stages);
        validate_project(name, &input, &stages)?;
        if !self.st.apps.contains_key(&input.app) {
            return Err(
                ControlError::not_found(format!("unknown application {:?}", input.app))
                    .with_field("app"),
            );
        }
        if let ProjectKind::Routing(t) = &input.kind {
            if !self.st.apps.contains_key(&t.app) {
                return Err(
                    ControlError::not_found(format!("unknown application {:?}", t.app))
                        .with_field("kind/routing/app"),
                );
            }
            for (i, s) in stages.iter().enumerate() {
                if !self.st.envs.iter().any(|e| e == s.env()) {
                    return Err(ControlError::bad(
                        &format!("stages/{i}/env"),
                        format!(
                            "stage {:?} publishes to environment {:?}, which is not one of {}",
                            s.name,
                            s.env(),
                            self.st.envs.join(", ")
                        ),
                    ));
                }
            }
        }
        let old = self.st.release.projects.get(name).cloned();
        if old.is_some() {
            self.need_project(name, None, Level::Publish)?;
        } else if self.st.release.projects.len() >= MAX_PROJECTS {
            return Err(ControlError::bad(
                "project",
                format!("at most {MAX_PROJECTS} projects"),
            ));
        }
        let mut p = Project {
            name: name.into(),
            app: input.app,
            kind: input.kind,
            depends_on: input.depends_on,
            repo: input.repo,
            gate: input.gate,
            hooks: input.hooks,
            probe: input.probe,
            stages,
            webhooks: input.webhooks,
            rev: 0,
        };
        self.target = format!("release/{name}");
        if level_on(self.st, self.actor, &p, None) < Level::Publish {
            return Err(ControlError::forbidden(format!(
                "user {:?} needs Publish on {}/release:{name}",
                self.actor.name, p.app
            )));
        }
        for d in &p.depends_on {
            check_name("depends_on", d)?;
            if d != name && !self.st.release.projects.contains_key(d) {
                return Err(ControlError::not_found(format!(
                    "unknown project {d:?} in depends_on"
                ))
                .with_field("depends_on"));
            }
        }
        let mut graph: BTreeMap<String, Vec<String>> = self
            .st
            .release
            .projects
            .values()
            .map(|x| (x.name.clone(), x.depends_on.clone()))
            .collect();
        graph.insert(name.into(), p.depends_on.clone());
        if let Some(c) = find_cycle(&graph) {
            return Err(ControlError::bad(
                "depends_on",
                format!("dependency cycle: {}", c.join(" -> ")),
            ));
        }
        p.rev = self.next_id();
        let target = self.target.clone();
        self.audit(
            if old.is_some() {
                "release.project.update"
            } else {
                "release.project.create"
            },
            &target,
            serde_json::json!({"old": old, "new": &p}),
        );
        self.put_rel(RelRec::Project(p.clone()));
        Ok(p)
    }

    /// Adds a version (edit on the project). Beyond [`MAX_VERSIONS`] the oldest version no stage runs and no
    /// deployment uses is dropped.
    pub fn add_version(&mut self, project: &str, input: VersionInput) -> Result<Version> {
        let p = self.need_project(project, None, Level::Edit)?;
        check_name("name", &input.name)?;
        if p.routing().is_some() {
            bundle(&input.artifact)?;
        }
        if self.st.release.version(project, &input.name).is_some() {
            return Err(ControlError::new(
                ErrorCode::AlreadyExists,
                format!("version {:?} of {project:?} exists", input.name),
            )
            .with_field("name"));
        }
        if !input.revision.is_empty() {
            check_revision("revision", &input.revision)?;
        }
        match &input.artifact {
            Artifact::Inline(s) if s.len() > MAX_INLINE_ARTIFACT => {
                return Err(ControlError::bad(
                    "artifact",
                    "an inline artifact is at most 256 KiB",
                ));
            }
            Artifact::File(p) if !p.starts_with('/') || p.len() > 4096 => {
                return Err(ControlError::bad(
                    "artifact",
                    "a file artifact is an absolute path",
                ));
            }
            _ => {}
        }
        let mine: Vec<&Version> = self
            .st
            .release
            .versions
            .values()
            .filter(|v| v.project == project)
            .collect();
        if mine.len() >= MAX_VERSIONS {
            let used: BTreeSet<&str> = self
                .st
                .release
                .stages
                .values()
                .filter(|s| s.project == project)
                .flat_map(|s| {
                    std::iter::once(s.version.as_str()).chain(s.history.iter().map(String::as_str))
                })
                .chain(
                    self.st
                        .release
                        .deployments
                        .values()
                        .filter(|d| d.project == project && !d.state.finished())
                        .map(|d| d.version.as_str()),
                )
                .collect();
            if let Some(old) = mine
                .iter()
                .filter(|v| !used.contains(v.name.as_str()))
                .min_by_key(|v| v.created_ms)
            {
                self.changes.push(Change::Delete {
                    kind: "rel",
                    key: RelRec::Version((*old).clone()).key(),
                });
            }
        }
        let v = Version {
            project: project.into(),
            name: input.name,
            artifact: input.artifact,
            revision: input.revision,
            created_by: self.actor.name.clone(),
            created_ms: now_ms(),
            gate: GateRun::default(),
        };
        let target = format!("release/{project}/{}", v.name);
        self.audit(
            "release.version.create",
            &target,
            serde_json::json!({"revision": v.revision, "artifact": v.artifact}),
        );
        self.put_rel(RelRec::Version(v.clone()));
        Ok(v)
    }

    /// Marks a version's gate as running (edit on the project); a project without gate commands passes at
    /// once. Returns the run and whether commands must be run.
    pub fn gate_start(
        &mut self,
        project: &str,
        version: &str,
        runner: &str,
    ) -> Result<(GateRun, bool)> {
        let p = self.need_project(project, None, Level::Edit)?;
        let mut v = self
            .st
            .release
            .version(project, version)
            .cloned()
            .ok_or_else(|| {
                ControlError::not_found(format!("unknown version {version:?} of {project:?}"))
                    .with_field("version")
            })?;
        if v.gate.status == GateStatus::Running {
            return Err(ControlError::new(
                ErrorCode::AlreadyExists,
                format!("the gate of {project}/{version} is running"),
            )
            .with_field("gate"));
        }
        let now = now_ms();
        let empty = p.gate.commands.is_empty();
        v.gate = GateRun {
            status: if empty {
                GateStatus::Passed
            } else {
                GateStatus::Running
            },
            by: self.actor.name.clone(),
            started_ms: now,
            finished_ms: if empty { now } else { 0 },
            commands: Vec::new(),
            runner: runner.into(),
        };
        let target = format!("release/{project}/{version}");
        self.audit(
            "release.gate.start",
            &target,
            serde_json::json!({"runner": runner}),
        );
        self.put_rel(RelRec::Version(v.clone()));
        Ok((v.gate, !empty))
    }

    /// Records a gate's outcome (the runner, as the system user); `runner` replaces the runner's name
    /// recorded at the start (a jobs worker's, or the local runner a gate job fell back to).
    pub fn gate_finish(
        &mut self,
        project: &str,
        version: &str,
        commands: Vec<CommandRun>,
        runner: Option<&str>,
    ) -> Result<GateStatus> {
        let Some(mut v) = self.st.release.version(project, version).cloned() else {
            return Ok(GateStatus::Failed);
        };
        let passed = !commands.is_empty() && commands.iter().all(|c| c.exit == Some(0));
        v.gate.status = if passed {
            GateStatus::Passed
        } else {
            GateStatus::Failed
        };
        v.gate.finished_ms = now_ms();
        v.gate.commands = commands;
        if let Some(r) = runner {
            v.gate.runner = r.to_string();
        }
        let target = format!("release/{project}/{version}");
        self.audit(
            "release.gate.finish",
            &target,
            serde_json::json!({"status": v.gate.status}),
        );
        let status = v.gate.status;
        self.put_rel(RelRec::Version(v));
        Ok(status)
    }

    /// Starts a deployment of `version` to `stage` (see the module doc for the levels). Deploys need a passed
    /// gate and, past the first stage, a successful deployment of the version on the stage before. One
    /// deployment at a time per stage.
    pub fn start_deployment(
        &mut self,
        project: &str,
        stage: &str,
        version: Option<&str>,
        kind: DeployKind,
        after: Vec<u64>,
    ) -> Result<Deployment> {
        let level = if kind == DeployKind::Deploy {
            Level::Edit
        } else {
            Level::Publish
        };
        let p = self.need_project(project, Some(stage), level)?;
        let st = &self.st.release;
        if let Some(a) = st.active_on(project, stage) {
            return Err(ControlError::new(
                ErrorCode::AlreadyExists,
                format!("deployment {} of {project}/{stage} is not finished", a.id),
            )
            .with_field("stage"));
        }
        let current = st.stage_version(project, stage).map(str::to_string);
        let version = match (kind, version) {
            (DeployKind::Restart, _) => current.clone().ok_or_else(|| {
                ControlError::bad(
                    "version",
                    format!("{project}/{stage} runs no version to restart"),
                )
            })?,
            (_, Some(v)) => v.to_string(),
            (_, None) => return Err(ControlError::bad("version", "version is required")),
        };
        let v = st.version(project, &version).ok_or_else(|| {
            ControlError::not_found(format!("unknown version {version:?} of {project:?}"))
                .with_field("version")
        })?;
        if kind != DeployKind::Restart && v.gate.status != GateStatus::Passed {
            return Err(ControlError::bad(
                "version",
                format!(
                    "version {version:?} is not releasable: its build gate is {:?} (run the gate first)",
                    v.gate.status
                ),
            ));
        }
        let idx = p.stage_index(stage).unwrap_or(0);
        if kind == DeployKind::Deploy && idx > 0 {
            let prev = &p.stages[idx - 1].name;
            if !st.succeeded_on(project, prev, &version) {
                return Err(ControlError::bad(
                    "stage",
                    format!(
                        "version {version:?} has not been released to {prev:?}, the stage before {stage:?}"
                    ),
                ));
            }
        }
        if kind == DeployKind::Rollback {
            if current.as_deref() == Some(version.as_str()) {
                return Err(ControlError::bad(
                    "version",
                    format!("{project}/{stage} already runs {version:?}"),
                ));
            }
            if !st.succeeded_on(project, stage, &version) {
                return Err(ControlError::bad(
                    "version",
                    format!(
                        "{version:?} never ran on {project}/{stage}: roll back to an earlier version of this stage"
                    ),
                ));
            }
        }
        for a in &after {
            if !st.deployments.contains_key(a) {
                return Err(
                    ControlError::not_found(format!("unknown deployment {a}")).with_field("after")
                );
            }
        }
        let sp = p.stage(stage).cloned().unwrap_or_default();
        if let Some(t) = p.routing() {
            if kind == DeployKind::Restart {
                return Err(ControlError::bad(
                    "kind",
                    "a routing bundle has nothing to restart",
                ));
            }
            let ns = t.ns(sp.env());
            self.st.check_ns(&ns)?;
            let have = self.st.level(self.actor, &t.app, &t.namespace);
            if have < Level::Publish {
                return Err(ControlError::forbidden(format!(
                    "user {:?} has {have:?} on {}, needs Publish to release routing rules there",
                    self.actor.name,
                    ns.path()
                )));
            }
        }
        let batches = if p.routing().is_some() {
            Vec::new()
        } else {
            plan_batches(&sp, &st.agents)
        };
        if batches.is_empty() && p.routing().is_none() {
            return Err(ControlError::bad(
                "stage",
                format!("stage {stage:?} has no hosts"),
            ));
        }
        let finished = st
            .deployments
            .values()
            .filter(|d| d.state.finished())
            .count();
        if finished >= MAX_DEPLOYMENTS
            && let Some(oldest) = st.deployments.values().find(|d| d.state.finished())
        {
            self.changes.push(Change::Delete {
                kind: "rel",
                key: RelRec::Deployment(oldest.clone()).key(),
            });
        }
        let now = now_ms();
        let id = self.next_id();
        let mut d = Deployment {
            id,
            project: project.into(),
            stage: stage.into(),
            version,
            previous: if kind == DeployKind::Restart {
                None
            } else {
                current
            },
            kind,
            state: DeployState::Waiting,
            by: self.actor.name.clone(),
            after,
            batches,
            created_ms: now,
            updated_ms: now,
            ..Default::default()
        };
        d.event(
            now,
            "created",
            format!("{kind:?} of {} by {}", d.version, d.by),
        );
        let target = format!("release/{project}/{stage}");
        self.audit(
            "release.deploy.start",
            &target,
            serde_json::json!({"id": id, "kind": kind, "version": d.version, "previous": d.previous}),
        );
        self.put_rel(RelRec::Deployment(d.clone()));
        Ok(d)
    }

    /// Releases several projects to one stage in dependency order: each deployment waits for those of its
    /// dependencies in the set — declared, and `observed` call edges `(caller, callee)` between projects
    /// named like the traced services (see [`with_observed`]). Refuses a cycle of declared dependencies.
    pub fn start_plan(
        &mut self,
        stage: &str,
        versions: &BTreeMap<String, String>,
        observed: &[(String, String)],
    ) -> Result<Vec<Deployment>> {
        if versions.is_empty() || versions.len() > 64 {
            return Err(ControlError::bad("versions", "a plan has 1-64 projects"));
        }
        let declared: BTreeMap<String, Vec<String>> = self
            .st
            .release
            .projects
            .values()
            .map(|p| (p.name.clone(), p.depends_on.clone()))
            .collect();
        let set: Vec<String> = versions.keys().cloned().collect();
        for p in &set {
            if !declared.contains_key(p) {
                return Err(unknown_project(p));
            }
        }
        // Declared cycles are refused by name before observation is looked at.
        dependency_order(&set, &declared)?;
        let within: Vec<(String, String)> = observed
            .iter()
            .filter(|(a, b)| set.contains(a) && set.contains(b))
            .cloned()
            .collect();
        let (deps, taken) = with_observed(&declared, &within);
        if !taken.is_empty() {
            let edges: Vec<String> = taken.iter().map(|(a, b)| format!("{a} -> {b}")).collect();
            self.audit(
                "release.plan.observed",
                &format!("release/{stage}"),
                serde_json::json!({"edges": edges}),
            );
        }
        let order = dependency_order(&set, &deps)?;
        let mut ids: BTreeMap<String, u64> = BTreeMap::new();
        let mut out = Vec::new();
        for p in order {
            let after: Vec<u64> = deps[&p]
                .iter()
                .filter_map(|d| ids.get(d).copied())
                .collect();
            // The dependencies' deployments are in this transaction, not yet in the state.
            let d = self.start_deployment_after(&p, stage, &versions[&p], after)?;
            ids.insert(p, d.id);
            out.push(d);
        }
        Ok(out)
    }

    fn start_deployment_after(
        &mut self,
        p: &str,
        stage: &str,
        version: &str,
        after: Vec<u64>,
    ) -> Result<Deployment> {
        // `start_deployment` checks `after` against the state; ids from this plan are not there yet.
        let mine = after.clone();
        let mut d =
            self.start_deployment(p, stage, Some(version), DeployKind::Deploy, Vec::new())?;
        if !mine.is_empty() {
            d.after = mine;
            self.put_rel(RelRec::Deployment(d.clone()));
        }
        Ok(d)
    }

    fn deployment(&self, id: u64) -> Result<Deployment> {
        self.st
            .release
            .deployments
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                ControlError::not_found(format!("unknown deployment {id}")).with_field("deployment")
            })
    }

    /// Approves a deployment: the approver must match the stage's rule and must not be who started it.
    pub fn approve(&mut self, id: u64) -> Result<Deployment> {
        let mut d = self.deployment(id)?;
        // Being named by the stage's approval rule is the permission (no grant needed besides).
        let p = self.need_project(&d.project, Some(&d.stage), Level::None)?;
        let rule = p
            .stage(&d.stage)
            .map(|s| s.approval.clone())
            .unwrap_or_default();
        if !rule
            .approvers
            .iter()
            .any(|s| subject_matches(s, self.actor))
        {
            return Err(ControlError::forbidden(format!(
                "user {:?} may not approve deployments to {}/{} (approvers: {})",
                self.actor.name,
                d.project,
                d.stage,
                rule.approvers.join(", ")
            )));
        }
        if d.by == self.actor.name {
            return Err(ControlError::forbidden(
                "the one who started a deployment cannot approve it",
            ));
        }
        if !matches!(
            d.state,
            DeployState::Waiting | DeployState::AwaitingApproval
        ) {
            return Err(ControlError::bad(
                "deployment",
                format!("deployment {id} is {:?}: nothing to approve", d.state),
            ));
        }
        if d.approvals.contains(&self.actor.name) {
            return Err(ControlError::new(
                ErrorCode::AlreadyExists,
                format!("{:?} already approved", self.actor.name),
            ));
        }
        d.approvals.push(self.actor.name.clone());
        let now = now_ms();
        let who = self.actor.name.clone();
        d.event(
            now,
            "approved",
            format!("by {who} ({}/{})", d.approvals.len(), rule.count),
        );
        let target = format!("release/{}/{}", d.project, d.stage);
        self.audit(
            "release.deploy.approve",
            &target,
            serde_json::json!({"id": id}),
        );
        self.put_rel(RelRec::Deployment(d.clone()));
        Ok(d)
    }

    /// An operator's command: `pause`, `resume`, `cancel` (publish on the stage). Cancelling a running
    /// deployment stops handing out hosts; hosts already done keep the new version (roll back explicitly).
    pub fn deployment_action(&mut self, id: u64, action: &str) -> Result<Deployment> {
        let mut d = self.deployment(id)?;
        let p = self.need_project(&d.project, Some(&d.stage), Level::Publish)?;
        if d.state.finished() {
            return Err(ControlError::bad(
                "deployment",
                format!("deployment {id} is finished ({:?})", d.state),
            ));
        }
        let now = now_ms();
        match action {
            "pause" => {
                if d.state == DeployState::Paused {
                    return Ok(d);
                }
                d.paused_from = Some(d.state);
                d.state = DeployState::Paused;
            }
            "resume" => {
                if d.state != DeployState::Paused {
                    return Err(ControlError::bad(
                        "deployment",
                        format!("deployment {id} is not paused"),
                    ));
                }
                d.state = d.paused_from.take().unwrap_or(DeployState::Running);
                if d.state == DeployState::Pausing {
                    d.timer_ms = now;
                }
            }
            "cancel" => {
                // A routing canary's gray release goes away with it: the canary proxies return to the
                // main release (the draft keeps the bundle: roll back or publish over it).
                if let (Some(t), Some(gray), Some(stage)) = (p.routing(), d.gray, p.stage(&d.stage))
                {
                    let ns = t.ns(stage.env());
                    if self.guarded(|tx| tx.abandon(&ns, gray)).is_ok() {
                        d.event(now, "abandoned", format!("gray release {gray}"));
                    }
                }
                d.state = DeployState::Cancelled;
                for h in d.hosts.values_mut() {
                    if matches!(h.phase, HostPhase::Assigned | HostPhase::Working) {
                        h.phase = HostPhase::Failed;
                        h.message = "cancelled".into();
                    }
                }
            }
            _ => {
                return Err(ControlError::not_found(format!(
                    "unknown action {action:?}: use pause, resume or cancel"
                ))
                .with_field("action"));
            }
        }
        let who = self.actor.name.clone();
        d.event(now, action, format!("by {who}"));
        let target = format!("release/{}/{}", d.project, d.stage);
        self.audit(
            &format!("release.deploy.{action}"),
            &target,
            serde_json::json!({"id": id}),
        );
        self.put_rel(RelRec::Deployment(d.clone()));
        Ok(d)
    }

    /// Registers (or re-registers) an agent (agent role).
    pub fn register_agent(
        &mut self,
        host: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Agent> {
        self.need_agent(host)?;
        check_name("host", host)?;
        if labels.len() > 64 || labels.iter().any(|(k, v)| k.len() > 128 || v.len() > 256) {
            return Err(ControlError::bad(
                "labels",
                "at most 64 labels of 128/256 bytes",
            ));
        }
        let old = self.st.release.agents.get(host);
        if old.is_none() && self.st.release.agents.len() >= MAX_AGENTS {
            return Err(ControlError::bad(
                "host",
                format!("at most {MAX_AGENTS} agents"),
            ));
        }
        if let Some(o) = old
            && o.labels == labels
            && o.user == self.actor.name
        {
            return Ok(o.clone());
        }
        let a = Agent {
            host: host.into(),
            labels,
            registered_ms: now_ms(),
            user: self.actor.name.clone(),
        };
        let target = self.target.clone();
        self.audit(
            "release.agent.register",
            &target,
            serde_json::json!({"labels": a.labels}),
        );
        self.put_rel(RelRec::Agent(a.clone()));
        Ok(a)
    }

    /// An agent's progress on one host of a deployment: `working`, `done` or `failed`. A report for another
    /// version than the host's target (a late report from before a rollback) is ignored; repeated reports
    /// are harmless. Returns whether it was taken.
    pub fn agent_report(
        &mut self,
        host: &str,
        id: u64,
        version: &str,
        phase: HostPhase,
        message: &str,
    ) -> Result<bool> {
        self.need_agent(host)?;
        let mut d = self.deployment(id)?;
        let Some(h) = d.hosts.get_mut(host) else {
            return Ok(false);
        };
        if h.version != version || !matches!(h.phase, HostPhase::Assigned | HostPhase::Working) {
            return Ok(false);
        }
        if !matches!(
            phase,
            HostPhase::Working | HostPhase::Done | HostPhase::Failed
        ) {
            return Err(ControlError::bad(
                "phase",
                "phase is working, done or failed",
            ));
        }
        if h.phase == phase && h.message == message {
            return Ok(true);
        }
        let now = now_ms();
        h.phase = phase;
        h.message = message.chars().take(2048).collect();
        h.since_ms = now;
        if phase != HostPhase::Working {
            let what = if phase == HostPhase::Done {
                "host_done"
            } else {
                "host_failed"
            };
            d.event(
                now,
                what,
                format!(
                    "{host} {version}: {}",
                    message.chars().take(512).collect::<String>()
                ),
            );
        } else {
            d.updated_ms = now;
        }
        self.put_rel(RelRec::Deployment(d));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn observed_calls_order_what_declarations_leave_open() {
        let e = |a: &str, b: &str| (a.to_string(), b.to_string());
        // Traces show web -> api -> db, db -> api back (a callback), and api calling cache although cache
        // declares that it depends on api.
        let g = graph(&[("web", &[]), ("api", &[]), ("db", &[]), ("cache", &["api"])]);
        let observed = [
            e("web", "api"),
            e("api", "db"),
            e("db", "api"),
            e("api", "cache"),
            e("web", "web"),
            e("web", "elsewhere"),
        ];
        let (merged, taken) = with_observed(&g, &observed);
        assert!(find_cycle(&merged).is_none());
        assert_eq!(merged["cache"], ["api"], "the declaration wins");
        assert!(
            !taken.contains(&e("api", "cache")),
            "against the declared order"
        );
        assert!(taken.contains(&e("web", "api")));
        // Of the two directions between api and db, one is taken (sorted: api -> db first).
        assert!(taken.contains(&e("api", "db")) && !taken.contains(&e("db", "api")));
        assert!(!taken.iter().any(|(a, b)| a == b || b == "elsewhere"));
        let set: Vec<String> = ["web", "api", "db"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            dependency_order(&set, &merged).unwrap(),
            ["db", "api", "web"]
        );
    }

    #[test]
    fn cycles_are_named_and_order_puts_dependencies_first() {
        let g = graph(&[("web", &["api"]), ("api", &["db"]), ("db", &[])]);
        assert!(find_cycle(&g).is_none());
        let set: Vec<String> = ["web", "db", "api"].iter().map(|s| s.to_string()).collect();
        assert_eq!(dependency_order(&set, &g).unwrap(), ["db", "api", "web"]);
        let g = graph(&[("web", &["api"]), ("api", &["db"]), ("db", &["web"])]);
        let c = find_cycle(&g).unwrap();
        assert_eq!(c, ["api", "db", "web", "api"]);
        let e = dependency_order(&set, &g).unwrap_err();
        assert!(
            e.message.contains("api -> db -> web -> api"),
            "{}",
            e.message
        );
    }

    #[test]
    fn batches_by_group_percent_and_rest() {
        let stage = Stage {
            hosts: (1..=8).map(|i| format!("h{i}")).collect(),
            batches: vec![
                BatchSpec::Group("east".into()),
                BatchSpec::Percent(25),
                BatchSpec::Rest,
            ],
            ..Default::default()
        };
        let mut agents = BTreeMap::new();
        for h in ["h3", "h5"] {
            agents.insert(
                h.to_string(),
                Agent {
                    host: h.into(),
                    labels: [("group".to_string(), "east".to_string())].into(),
                    ..Default::default()
                },
            );
        }
        let b = plan_batches(&stage, &agents);
        assert_eq!(b[0], ["h3", "h5"]);
        assert_eq!(b[1], ["h1", "h2"], "25 % of 8");
        assert_eq!(b[2], ["h4", "h6", "h7", "h8"]);
        let one = Stage {
            hosts: vec!["a".into()],
            batches: vec![BatchSpec::Count(1), BatchSpec::Rest],
            ..Default::default()
        };
        assert_eq!(plan_batches(&one, &agents), vec![vec!["a".to_string()]]);
    }

    #[test]
    fn urls_and_revisions() {
        assert_eq!(
            split_url("http://127.0.0.1:80/hook?x=1"),
            Some(("http://127.0.0.1:80".into(), "/hook?x=1".into()))
        );
        assert!(split_url("https://x:1/").is_none());
        assert!(split_url("http://nohost/").is_none());
        assert!(check_revision("r", "abc123").is_ok());
        assert!(check_revision("r", "v1.2/rc~1").is_ok());
        for bad in ["", "--output=/tmp/x", "a..b", "a b", "a;b"] {
            assert!(check_revision("r", bad).is_err(), "{bad}");
        }
    }
}
