//! Release records: projects with their pipeline, versions with their build gate, deployments (one version
//! rolled out to one stage), the version each stage runs, and the agents. All of them are stored as one
//! [`RelRec`] per object under the `rel` record kind, so they share the store, its transactions and its
//! revision with the other control services.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The most projects, versions per project, deployments kept, agents: bounded everything.
pub const MAX_PROJECTS: usize = 1_000;
/// Versions kept per project (the oldest that no stage runs are dropped beyond it).
pub const MAX_VERSIONS: usize = 200;
/// Finished deployments kept (the oldest finished ones are dropped beyond it).
pub const MAX_DEPLOYMENTS: usize = 2_000;
/// Registered agents.
pub const MAX_AGENTS: usize = 10_000;
/// Events kept per deployment.
pub const MAX_EVENTS: usize = 64;
/// Bytes of an inline artifact.
pub const MAX_INLINE_ARTIFACT: usize = 256 * 1024;

/// What a project releases.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectKind {
    /// A service (optionally a registry service of that name) deployed by `furrow agent`s on hosts.
    #[default]
    Service,
    /// Furrow's own routing rules: a bundle of configuration-center items (a proxy-config namespace),
    /// canaried on the proxies carrying the gray labels, judged against the other proxies, then promoted or
    /// abandoned (see `docs/release.md`).
    Routing(RoutingTarget),
}

/// Where a routing project's bundles are published: one configuration-center namespace per stage
/// environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingTarget {
    /// The application owning the namespace.
    pub app: String,
    /// The cluster (default `default`).
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// The namespace the proxies read (`--config-source`).
    pub namespace: String,
    /// The labels of the canary proxies (their `--config-source ...&labels=k:v`): the gray rule.
    pub canary_labels: BTreeMap<String, String>,
}

fn default_cluster() -> String {
    crate::model::DEFAULT_CLUSTER.to_string()
}

impl RoutingTarget {
    /// The namespace instance of a stage's environment.
    pub fn ns(&self, env: &str) -> crate::model::NsKey {
        crate::model::NsKey::new(&self.app, env, &self.cluster, &self.namespace)
    }
}

/// The hooks an agent runs, as `sh -c` commands (empty: skipped). They run in the project's directory on the
/// host with `FURROW_ARTIFACT`, `FURROW_VERSION`, `FURROW_PROJECT`, `FURROW_DIR` and the agent's `--var`s
/// (`FURROW_VAR_NAME`) in their environment. They must be idempotent: a resumed deployment runs them again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Stops the running version.
    #[serde(default)]
    pub stop: String,
    /// Installs the fetched artifact.
    #[serde(default)]
    pub install: String,
    /// Starts the installed version.
    #[serde(default)]
    pub start: String,
    /// Succeeds once the instance is healthy (retried until `health_timeout_ms`).
    #[serde(default)]
    pub health: String,
    /// How long the health hook may keep failing, ms (default 10,000).
    #[serde(default)]
    pub health_timeout_ms: Option<u64>,
}

/// An HTTP probe the agents send to their instance to feed canary analysis: `GET url` with `${VAR}`
/// replaced by the agent's `--var`s; a 5xx or no answer is an error, the time to the answer is the latency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// `http://HOST:PORT/PATH` (loopback or the host's address).
    pub url: String,
    /// Time between probes, ms (default 50).
    #[serde(default)]
    pub interval_ms: Option<u64>,
}

/// The build gate: commands run (in order, stopping at the first failure) in the project's repository with
/// `FURROW_REVISION` set; a version is releasable only once they all passed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// The commands (`sh -c`), e.g. tests and lint.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Limit per command, ms (default 600,000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Who must approve a deployment to a stage, and how many of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// Subjects that may approve: `user:NAME` or `role:NAME`.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How many distinct approvals are needed (0: none). The one who started a deployment cannot approve it.
    #[serde(default)]
    pub count: u32,
}

/// A period during which no deployment starts on a stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// Start, ms since the epoch.
    pub from_ms: u64,
    /// End (exclusive), ms since the epoch.
    pub to_ms: u64,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// When deployments may start on a stage: the allowed times (empty: always) minus the freezes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Allowed times in UTC, cron-like: `DAYS HH:MM-HH:MM`, days `*`, `mon`, `mon-fri`, `sat,sun`
    /// (see [`super::window`]).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Freeze periods.
    #[serde(default)]
    pub freeze: Vec<Freeze>,
}

/// Canary analysis after a stage's first batch: the batch's hosts (canary, on the candidate version) against
/// the stage's other hosts (baseline, on the version before) — see [`super::canary`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// Samples each group needs before a verdict (default 50).
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Significance level of the one-sided tests (default 0.01).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Error rates differing by less than this are never a failure (default 0.01).
    #[serde(default = "default_error_margin")]
    pub error_margin: f64,
    /// Whether latency is judged too (default true).
    #[serde(default = "default_true")]
    pub latency: bool,
    /// A canary latency median more than this factor above the baseline's fails when also significant
    /// (default 1.5).
    #[serde(default = "default_latency_factor")]
    pub latency_factor: f64,
    /// How long analysis may wait for enough samples, ms; then the verdict is a failure (default 60,000).
    #[serde(default = "default_max_wait")]
    pub max_wait_ms: u64,
    /// The traced service (`service.name` of its spans) whose spans from the canary and baseline hosts
    /// are judged too (default: the project's name). See `docs/release.md`, "Canary analysis".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_service: Option<String>,
}

fn default_min_samples() -> u64 {
    50
}
fn default_alpha() -> f64 {
    0.01
}
fn default_error_margin() -> f64 {
    0.01
}
fn default_true() -> bool {
    true
}
fn default_latency_factor() -> f64 {
    1.5
}
fn default_max_wait() -> u64 {
    60_000
}

impl Default for CanarySpec {
    fn default() -> Self {
        CanarySpec {
            min_samples: default_min_samples(),
            alpha: default_alpha(),
            error_margin: default_error_margin(),
            latency: true,
            latency_factor: default_latency_factor(),
            max_wait_ms: default_max_wait(),
            trace_service: None,
        }
    }
}

/// One batch of a stage's rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchSpec {
    /// The hosts of one group (an agent label `group=NAME`).
    Group(String),
    /// This share of the stage's hosts, in percent (at least one host).
    Percent(u32),
    /// This many hosts.
    Count(u32),
    /// Every host left.
    Rest,
}

/// One stage of a pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Its name (`dev`, `qa`, `staging`, `live`...).
    pub name: String,
    /// Routing projects: the configuration-center environment it publishes to (default: the name).
    #[serde(default)]
    pub env: String,
    /// The target group: agent hosts.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Approvals needed before a deployment starts.
    #[serde(default)]
    pub approval: ApprovalRule,
    /// When deployments may start.
    #[serde(default)]
    pub window: Window,
    /// The batches (default: one batch of every host). A batch past the hosts is skipped.
    #[serde(default)]
    pub batches: Vec<BatchSpec>,
    /// Pause between batches, ms.
    #[serde(default)]
    pub pause_ms: u64,
    /// Canary analysis after the first batch (needs a probe and at least two batches).
    #[serde(default)]
    pub canary: Option<CanarySpec>,
    /// How long a host may take for its hooks before it counts as failed, ms (default 60,000).
    #[serde(default)]
    pub host_timeout_ms: Option<u64>,
}

/// A project: something released through a pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Its name.
    pub name: String,
    /// The application it belongs to: permissions are grants on `(app, release:NAME)` (every stage) and
    /// `(app, release:NAME:STAGE)`.
    pub app: String,
    /// What it is.
    #[serde(default)]
    pub kind: ProjectKind,
    /// Projects that must be deployed before it in a multi-project release.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A git repository path (for the gate's working directory and the code diff).
    #[serde(default)]
    pub repo: String,
    /// The build gate.
    #[serde(default)]
    pub gate: GateSpec,
    /// The agents' hooks.
    #[serde(default)]
    pub hooks: Hooks,
    /// The canary probe.
    #[serde(default)]
    pub probe: Option<Probe>,
    /// The stages, in promotion order.
    pub stages: Vec<Stage>,
    /// Webhook URLs (`http://HOST:PORT/PATH`) told of every deployment event.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// The sequence value of its last change.
    #[serde(default)]
    pub rev: u64,
}

impl Stage {
    /// The configuration-center environment of a routing project's stage.
    pub fn env(&self) -> &str {
        if self.env.is_empty() {
            &self.name
        } else {
            &self.env
        }
    }
}

impl Project {
    /// The routing target, for routing projects.
    pub fn routing(&self) -> Option<&RoutingTarget> {
        match &self.kind {
            ProjectKind::Routing(t) => Some(t),
            ProjectKind::Service => None,
        }
    }

    /// A stage by name.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The position of a stage.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}

/// Where a version's artifact comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Artifact {
    /// A file (or archive) on the control host, served to agents as it is at fetch time.
    File(String),
    /// The content itself (a config bundle, a small script), stored with the version.
    Inline(String),
}

/// Where a version's build gate stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    /// Never run.
    #[default]
    Pending,
    /// Running now.
    Running,
    /// Every command passed: the version is releasable.
    Passed,
    /// A command failed (or the run was interrupted).
    Failed,
}

/// One gate command's outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRun {
    /// The command.
    pub command: String,
    /// Its exit code (None: killed or not started).
    pub exit: Option<i32>,
    /// How long it ran, ms.
    pub ms: u64,
    /// The last bytes of its output (stdout and stderr), bounded.
    pub log: String,
    /// Whether the output was cut.
    #[serde(default)]
    pub truncated: bool,
}

/// A version's gate run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRun {
    /// Where it stands.
    pub status: GateStatus,
    /// Who ran it.
    #[serde(default)]
    pub by: String,
    /// Started, ms.
    #[serde(default)]
    pub started_ms: u64,
    /// Finished, ms (0 while running).
    #[serde(default)]
    pub finished_ms: u64,
    /// The commands run so far.
    #[serde(default)]
    pub commands: Vec<CommandRun>,
    /// The runner that ran it (`local`, or a jobs worker).
    #[serde(default)]
    pub runner: String,
}

/// A version of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// The project.
    pub project: String,
    /// The version name (unique per project).
    pub name: String,
    /// The artifact.
    pub artifact: Artifact,
    /// The source revision (a git commit or ref of the project's repository).
    #[serde(default)]
    pub revision: String,
    /// Who created it.
    pub created_by: String,
    /// When, ms.
    pub created_ms: u64,
    /// The build gate.
    #[serde(default)]
    pub gate: GateRun,
}

/// What a deployment does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployKind {
    /// Installs a new version (approvals and window apply).
    #[default]
    Deploy,
    /// Returns the stage to an earlier version (no approval, no window: it is the way out).
    Rollback,
    /// Restarts the stage's version on every host (stop, start, health), through the same batches.
    Restart,
}

/// Where a deployment stands: the state machine the engine advances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    /// Waits for the deployments it depends on.
    #[default]
    Waiting,
    /// Waits for approvals.
    AwaitingApproval,
    /// Waits for the stage's window to open.
    AwaitingWindow,
    /// A batch is being deployed.
    Running,
    /// Between batches.
    Pausing,
    /// The canary batch is being judged.
    Analysing,
    /// Paused by an operator.
    Paused,
    /// Returning touched hosts to the previous version after a failure.
    RollingBack,
    /// Every host runs the version.
    Succeeded,
    /// Failed (and rolled back where there was a version to return to).
    Failed,
    /// Rolled back after a failure.
    RolledBack,
    /// Cancelled by an operator or because a dependency failed.
    Cancelled,
}

impl DeployState {
    /// Whether the deployment is over.
    pub fn finished(self) -> bool {
        matches!(
            self,
            DeployState::Succeeded
                | DeployState::Failed
                | DeployState::RolledBack
                | DeployState::Cancelled
        )
    }
}

/// Where a host stands in a deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostPhase {
    /// Not reached yet.
    #[default]
    Pending,
    /// Given to its agent (listed in its assignments).
    Assigned,
    /// The agent is running the hooks.
    Working,
    /// Done and healthy.
    Done,
    /// The hooks failed, or the host timed out.
    Failed,
}

/// One host's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProgress {
    /// The version it must run.
    pub version: String,
    /// Its phase.
    pub phase: HostPhase,
    /// Restart only (no install).
    #[serde(default)]
    pub restart: bool,
    /// The agent's last step or error.
    #[serde(default)]
    pub message: String,
    /// Since when, ms.
    pub since_ms: u64,
    /// The batch it belongs to.
    pub batch: usize,
}

/// An event of a deployment's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, ms.
    pub at_ms: u64,
    /// What (`approved`, `batch`, `canary`, `failed`...).
    pub what: String,
    /// Details.
    #[serde(default)]
    pub detail: String,
}

/// One version rolled out to one stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its id.
    pub id: u64,
    /// The project.
    pub project: String,
    /// The stage.
    pub stage: String,
    /// The version.
    pub version: String,
    /// The version the stage ran before (the rollback target).
    #[serde(default)]
    pub previous: Option<String>,
    /// Deploy, rollback or restart.
    pub kind: DeployKind,
    /// The state.
    pub state: DeployState,
    /// The state an operator's pause interrupted.
    #[serde(default)]
    pub paused_from: Option<DeployState>,
    /// Who started it.
    pub by: String,
    /// Who approved it.
    #[serde(default)]
    pub approvals: Vec<String>,
    /// Deployments that must succeed first (dependency order).
    #[serde(default)]
    pub after: Vec<u64>,
    /// The batches: host lists, in order.
    pub batches: Vec<Vec<String>>,
    /// The batch being deployed (or next after a pause).
    pub batch: usize,
    /// The hosts' progress.
    pub hosts: BTreeMap<String, HostProgress>,
    /// When the current wait ends (pause) or started (analysis), ms.
    #[serde(default)]
    pub timer_ms: u64,
    /// The canary verdict, when analysed.
    #[serde(default)]
    pub canary: Option<super::canary::Verdict>,
    /// Routing projects: the gray release being judged.
    #[serde(default)]
    pub gray: Option<u64>,
    /// History, bounded.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Events ever added (the history keeps the last [`MAX_EVENTS`]).
    #[serde(default)]
    pub events_total: u64,
    /// Created, ms.
    pub created_ms: u64,
    /// Last change, ms.
    pub updated_ms: u64,
}

impl Deployment {
    /// Adds an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn event(&mut self, now: u64, what: &str, detail: impl Into<String>) {
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(Event {
            at_ms: now,
            what: what.into(),
            detail: detail.into(),
        });
        self.events_total += 1;
        self.updated_ms = now;
    }
}

/// The version a stage of a project runs, and the ones it ran before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageState {
    /// The project.
    pub project: String,
    /// The stage.
    pub stage: String,
    /// The version now.
    pub version: String,
    /// The deployment that put it there.
    pub deployment: u64,
    /// Earlier versions, newest last (bounded).
    #[serde(default)]
    pub history: Vec<String>,
}

/// A registered deployment agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// The host name it serves (unique).
    pub host: String,
    /// Labels (`group=...` places it in a batch group).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it registered, ms.
    pub registered_ms: u64,
    /// The user it authenticates as.
    #[serde(default)]
    pub user: String,
}

/// A stored release record (one `Rec::Rel`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rel", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // records are short-lived on their way to the state
pub enum RelRec {
    /// A project.
    Project(Project),
    /// A version.
    Version(Version),
    /// A deployment.
    Deployment(Deployment),
    /// A stage's current version.
    Stage(StageState),
    /// An agent.
    Agent(Agent),
}

impl RelRec {
    /// The store key within the `rel` kind.
    pub fn key(&self) -> String {
        match self {
            RelRec::Project(p) => format!("project/{}", p.name),
            RelRec::Version(v) => format!("version/{}/{}", v.project, v.name),
            RelRec::Deployment(d) => format!("deploy/{:020}", d.id),
            RelRec::Stage(s) => format!("stage/{}/{}", s.project, s.stage),
            RelRec::Agent(a) => format!("agent/{}", a.host),
        }
    }
}

/// The release part of the in-memory state.
#[derive(Clone, Debug, Default)]
pub struct ReleaseState {
    /// Projects by name.
    pub projects: BTreeMap<String, Project>,
    /// Versions by (project, name).
    pub versions: BTreeMap<(String, String), Version>,
    /// Deployments by id.
    pub deployments: BTreeMap<u64, Deployment>,
    /// Stage states by (project, stage).
    pub stages: BTreeMap<(String, String), StageState>,
    /// Agents by host.
    pub agents: BTreeMap<String, Agent>,
}

impl ReleaseState {
    /// Applies a stored record.
    pub fn put(&mut self, rec: RelRec) {
        match rec {
            RelRec::Project(p) => {
                self.projects.insert(p.name.clone(), p);
            }
            RelRec::Version(v) => {
                self.versions.insert((v.project.clone(), v.name.clone()), v);
            }
            RelRec::Deployment(d) => {
                self.deployments.insert(d.id, d);
            }
            RelRec::Stage(s) => {
                self.stages.insert((s.project.clone(), s.stage.clone()), s);
            }
            RelRec::Agent(a) => {
                self.agents.insert(a.host.clone(), a);
            }
        }
    }

    /// Applies a deletion by store key.
    pub fn delete(&mut self, key: &str) {
        let mut parts = key.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("project"), Some(name), None) => {
                self.projects.remove(name);
            }
            (Some("version"), Some(p), Some(v)) => {
                self.versions.remove(&(p.to_string(), v.to_string()));
            }
            (Some("deploy"), Some(id), None) => {
                if let Ok(id) = id.parse::<u64>() {
                    self.deployments.remove(&id);
                }
            }
            (Some("agent"), Some(host), None) => {
                self.agents.remove(host);
            }
            _ => {}
        }
    }

    /// A version.
    pub fn version(&self, project: &str, name: &str) -> Option<&Version> {
        self.versions.get(&(project.to_string(), name.to_string()))
    }

    /// The version a stage runs.
    pub fn stage_version(&self, project: &str, stage: &str) -> Option<&str> {
        self.stages
            .get(&(project.to_string(), stage.to_string()))
            .map(|s| s.version.as_str())
    }

    /// Whether `version` was ever deployed successfully to `stage` (the promotion path's precondition).
    pub fn succeeded_on(&self, project: &str, stage: &str, version: &str) -> bool {
        self.deployments.values().any(|d| {
            d.project == project
                && d.stage == stage
                && d.version == version
                && d.state == DeployState::Succeeded
        })
    }

    /// The unfinished deployment of a stage, if any (one at a time per stage).
    pub fn active_on(&self, project: &str, stage: &str) -> Option<&Deployment> {
        self.deployments
            .values()
            .find(|d| d.project == project && d.stage == stage && !d.state.finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_key_and_delete() {
        let mut st = ReleaseState::default();
        let v = Version {
            project: "web".into(),
            name: "1.0".into(),
            artifact: Artifact::Inline("x".into()),
            revision: String::new(),
            created_by: "u".into(),
            created_ms: 1,
            gate: GateRun::default(),
        };
        let rec = RelRec::Version(v);
        assert_eq!(rec.key(), "version/web/1.0");
        let json = serde_json::to_string(&rec).unwrap();
        let back: RelRec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
        st.put(back);
        assert!(st.version("web", "1.0").is_some());
        st.delete("version/web/1.0");
        assert!(st.version("web", "1.0").is_none());
        let d = Deployment {
            id: 7,
            ..Default::default()
        };
        let key = RelRec::Deployment(d.clone()).key();
        st.put(RelRec::Deployment(d));
        st.delete(&key);
        assert!(st.deployments.is_empty());
    }
}
