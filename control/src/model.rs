//! The configuration model: applications, clusters, namespaces, typed items, releases, grants and audit records.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::document::DocFormat;
use crate::error::{ControlError, ErrorCode, Result};
use crate::rules::RuleTable;

/// The cluster every application has in every environment; named clusters inherit from it.
pub const DEFAULT_CLUSTER: &str = "default";

/// Checks a name (application, environment, cluster, namespace, key, user): 1–128 of `[A-Za-z0-9._-]`, not
/// made of dots only (`.`, `..`, `...` are path segments an HTTP client normalizes away: unreachable).
pub fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.bytes().all(|b| b == b'.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ControlError::bad(
            field,
            format!("invalid {field} {name:?}: use 1-128 of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// A typed configuration value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// A string.
    String(String),
    /// A signed 64-bit integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
    /// A list of scalars, each editable on its own.
    List(Vec<serde_json::Value>),
    /// A document in one of the supported formats, validated on save.
    Document {
        /// The format.
        format: DocFormat,
        /// The document text.
        text: String,
    },
    /// A dynamic value: a rule table evaluated by the client with the caller's context.
    Rules(RuleTable),
}

impl Value {
    /// Validates the value itself (documents parse, list items are scalars, rules are well formed).
    pub fn validate(&self) -> Result<()> {
        match self {
            Value::Float(f) if !f.is_finite() => {
                Err(ControlError::bad("value", "float must be finite"))
            }
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    if v.is_array() || v.is_object() || v.is_null() {
                        return Err(ControlError::bad(
                            &format!("value/{i}"),
                            "list items must be strings, numbers or booleans",
                        ));
                    }
                }
                Ok(())
            }
            Value::Document { format, text } => format.validate(text).map(|_| ()),
            Value::Rules(t) => t.validate(),
            _ => Ok(()),
        }
    }

    /// The value as JSON, the form JSON Schemas are checked against (documents are converted where possible).
    pub fn to_json(&self) -> Result<serde_json::Value> {
        Ok(match self {
            Value::String(s) => s.clone().into(),
            Value::Integer(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(Into::into)
                .unwrap_or(serde_json::Value::Null),
            Value::Boolean(b) => (*b).into(),
            Value::List(l) => serde_json::Value::Array(l.clone()),
            Value::Document { format, text } => format.validate(text)?,
            Value::Rules(t) => serde_json::to_value(t)
                .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))?,
        })
    }

    /// The type name as used in the API (`string`, `integer`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::List(_) => "list",
            Value::Document { .. } => "document",
            Value::Rules(_) => "rules",
        }
    }
}

/// One configuration key with its value, optional JSON Schema and optimistic version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The key.
    pub key: String,
    /// The typed value.
    pub value: Value,
    /// An optional JSON Schema (see `schema` for the supported subset) the value must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// A free comment.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// A secret value: encrypted at rest, shown masked in listings and the audit log, delivered in clear only
    /// to callers with `read` on the namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
    /// At rest only: the sealed value of a secret item (`value` is then a placeholder); see `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// The optimistic version: 1 on creation, +1 on every change.
    pub version: u64,
    /// Who changed it last.
    #[serde(default)]
    pub modified_by: String,
    /// Set on values shown to a caller with masked-read permission only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
}

impl Item {
    /// Validates the value and, when the item has one, its schema.
    pub fn validate(&self) -> Result<()> {
        check_name("key", &self.key)?;
        self.value.validate()?;
        if let Some(schema) = &self.schema {
            crate::schema::check_schema(schema)?;
            let json = self.value.to_json()?;
            crate::schema::validate(schema, &json)?;
        }
        Ok(())
    }

    /// A copy with the value hidden, for masked reads.
    pub fn masked(&self) -> Item {
        Item {
            value: Value::String("******".into()),
            masked: true,
            ..self.clone()
        }
    }
}

/// An application.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// Its name.
    pub name: String,
    /// A description.
    #[serde(default)]
    pub description: String,
}

/// A named cluster of an application in one environment (`default` always exists implicitly).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// The application.
    pub app: String,
    /// The environment.
    pub env: String,
    /// The cluster name.
    pub name: String,
}

/// The definition of a namespace, owned by an application; a public one can be overridden by other applications.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceDef {
    /// The owning application.
    pub app: String,
    /// The namespace name (public names are unique across applications).
    pub name: String,
    /// Public namespaces are shared: any application reads them and may override keys.
    #[serde(default)]
    pub public: bool,
    /// Whether publishing needs review (publisher not among the draft's editors).
    #[serde(default)]
    pub review: bool,
    /// A description.
    #[serde(default)]
    pub description: String,
}

/// Where drafts and releases live: one namespace of one application in one environment and cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NsKey {
    /// The application (for a public namespace: the owner, or an application overriding it).
    pub app: String,
    /// The environment.
    pub env: String,
    /// The cluster.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
}

impl NsKey {
    /// Builds a key.
    pub fn new(app: &str, env: &str, cluster: &str, namespace: &str) -> Self {
        NsKey {
            app: app.into(),
            env: env.into(),
            cluster: cluster.into(),
            namespace: namespace.into(),
        }
    }

    /// The `app/env/cluster/namespace` form used as a store key.
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.app, self.env, self.cluster, self.namespace
        )
    }

    /// Parses the `path` form.
    pub fn parse(s: &str) -> Option<NsKey> {
        let mut it = s.splitn(4, '/');
        Some(NsKey::new(it.next()?, it.next()?, it.next()?, it.next()?))
    }

    /// The same namespace in another application or cluster.
    pub fn with(&self, app: &str, cluster: &str) -> NsKey {
        NsKey::new(app, &self.env, cluster, &self.namespace)
    }
}

/// What kind of release this is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReleaseKind {
    /// A publish of the draft.
    Normal,
    /// A gray release, seen only by the instances its rule selects.
    Gray {
        /// The selection.
        rule: GrayRule,
    },
    /// A gray release promoted to everyone.
    Promote {
        /// The gray release promoted.
        gray: u64,
    },
    /// A rollback to an earlier release (its items copied into this new release).
    Rollback {
        /// The release rolled back to.
        to: u64,
    },
}

/// An immutable release: a full snapshot of a namespace's items with author and message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// The release id (unique, increasing).
    pub id: u64,
    /// Where it was published.
    pub ns: NsKey,
    /// The items.
    pub items: BTreeMap<String, Item>,
    /// Who published it.
    pub author: String,
    /// The publish message.
    pub message: String,
    /// When, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Normal, gray, promote or rollback.
    pub kind: ReleaseKind,
}

/// Selects instances for a gray release: any listed instance id, any listed IP, or all listed labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GrayRule {
    /// Labels an instance must all carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Instance IPs.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Instance ids.
    #[serde(default)]
    pub instances: Vec<String>,
}

impl GrayRule {
    /// Whether the rule selects nothing at all.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.ips.is_empty() && self.instances.is_empty()
    }

    /// Whether the instance is selected.
    pub fn matches(&self, inst: &Instance) -> bool {
        (!inst.id.is_empty() && self.instances.contains(&inst.id))
            || (!inst.ip.is_empty() && self.ips.contains(&inst.ip))
            || (!self.labels.is_empty()
                && self
                    .labels
                    .iter()
                    .all(|(k, v)| inst.labels.get(k) == Some(v)))
    }
}

/// Who is asking for configuration: the instance id, its IP and its labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Instance {
    /// A unique instance id (host name, pod name...).
    #[serde(default)]
    pub id: String,
    /// The instance's IP.
    #[serde(default)]
    pub ip: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// An active gray release of a namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gray {
    /// The gray release's id.
    pub release: u64,
    /// The instances that see it.
    pub rule: GrayRule,
}

/// The publish state of one namespace instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NsState {
    /// The current main release.
    pub current: Option<u64>,
    /// Active gray releases, oldest first (a later one wins when several select an instance).
    #[serde(default)]
    pub grays: Vec<Gray>,
    /// Sequence number of the last publish-state change (clients' config version).
    #[serde(default)]
    pub revision: u64,
    /// Sequence number of the last change pushed to watchers (natural publishes do not push).
    #[serde(default)]
    pub pushed: u64,
    /// Users who edited the draft since the last publish (for review).
    #[serde(default)]
    pub editors: BTreeSet<String>,
}

/// A permission level on a namespace, from none to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Nothing.
    #[default]
    None,
    /// Read with values masked.
    MaskedRead,
    /// Read.
    Read,
    /// Edit drafts.
    Edit,
    /// Publish, roll back, gray.
    Publish,
}

/// A grant of a level (and optionally export) to a user or role on an application's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `user:NAME` or `role:NAME`.
    pub subject: String,
    /// The application (`*` for all).
    pub app: String,
    /// The namespace (`*` for all).
    pub namespace: String,
    /// The level.
    pub level: Level,
    /// Whether the subject may export the application's configuration.
    #[serde(default)]
    pub export: bool,
    /// Whether the subject may send spans (`POST /v1/traces`) for the application's services: a
    /// resource whose `service.name` is the application and whose `service.namespace` is the grant's
    /// namespace (`*`: any, and none). Independent of the level: an ingest-only principal has a grant
    /// of level `none` with this set (see `trace::access::Ingest`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trace_ingest: bool,
}

impl Grant {
    /// The store key of the grant.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.subject, self.app, self.namespace)
    }
}

/// A user (a person or a machine) with roles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user name.
    pub name: String,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Administrators may do everything.
    #[serde(default)]
    pub admin: bool,
    /// The console password as a salted PBKDF2 hash (`auth::hash_password`), set with
    /// `PUT /v1/users/{name}/password`; stored, never sent to clients (`User::shown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The hash of the token this request authenticated with (set by `Center::authenticate`, never stored):
    /// tokens minted with it record it as their parent, so revoking it revokes them too.
    #[serde(skip)]
    pub token: Option<String>,
}

impl User {
    /// The user as shown to clients: without its password hash.
    pub fn shown(mut self) -> User {
        self.password = None;
        self
    }
}

/// An API token (stored as its SHA-256).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// The user it authenticates.
    pub user: String,
    /// A description.
    #[serde(default)]
    pub description: String,
    /// When it was created (ms since the epoch; 0 for tokens stored before this field existed).
    #[serde(default)]
    pub created_ms: u64,
    /// When it stops working (ms since the epoch); None: never.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// The hash of the token that minted it (revoking that one revokes this one).
    #[serde(default)]
    pub parent: Option<String>,
    /// The bootstrap administrator's token (`--admin-token`): replaced, with everything minted under it, when
    /// the service starts with another one.
    #[serde(default)]
    pub bootstrap: bool,
}

impl Token {
    /// The public id of a token: the first 16 hex digits of its hash (enough to name it, useless to log in).
    pub fn id(&self) -> &str {
        &self.hash[..self.hash.len().min(16)]
    }

    /// Whether it has expired at `now` (ms).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now)
    }
}

/// A scheduled publish, applied by the service when its time comes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    /// Its id.
    pub id: u64,
    /// The namespace instance.
    pub ns: NsKey,
    /// When to publish, in ms since the epoch.
    pub at_ms: u64,
    /// The items (the draft when it was scheduled).
    pub items: BTreeMap<String, Item>,
    /// The publisher.
    pub author: String,
    /// The message.
    pub message: String,
}

/// How many instances each batch of a rolling gray publish adds: a count or a percentage of the instances
/// The error-rate gate of a rolling publish: the rollout stops by itself when an instance that has the gray
/// release reports a health window (its own request and error counts, e.g. a proxy's listener counters, see
/// `HealthWindow`) with at least `min_requests` requests and an error rate above `max_error_rate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateGate {
    /// The highest error rate tolerated (0.0–1.0, errors / requests over one report window).
    pub max_error_rate: f64,
    /// Windows with fewer requests say too little and are ignored (default 20).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_min_requests() -> u64 {
    20
}

impl ErrorRateGate {
    /// Checks the rate is a fraction.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err(ControlError::bad(
                "health/max_error_rate",
                "max_error_rate is a fraction between 0.0 and 1.0",
            ));
        }
        Ok(())
    }

    /// Why a window breaks the gate, if it does.
    pub fn breach(&self, w: &HealthWindow) -> Option<String> {
        if w.requests < self.min_requests.max(1) {
            return None;
        }
        let rate = w.errors as f64 / w.requests as f64;
        (rate > self.max_error_rate).then(|| {
            format!(
                "error rate {:.1}% ({} of {} requests over {} ms) above the rollout's {:.1}%",
                rate * 100.0,
                w.errors,
                w.requests,
                w.window_ms,
                self.max_error_rate * 100.0
            )
        })
    }
}

/// What an instance saw over its last report window: requests served and how many ended in an error (for a
/// proxy: the sums of its listeners' `requests` and `errors` counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthWindow {
    /// Requests in the window.
    pub requests: u64,
    /// Requests answered with an error in the window.
    pub errors: u64,
    /// The window's length, ms.
    #[serde(default)]
    pub window_ms: u64,
}

/// Request latency of one listener over a report window (sent with the window: [`HealthWindow`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerLatency {
    /// The listener's name.
    pub listener: String,
    /// Requests timed in the window.
    pub count: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
}

/// known for the namespace instance (exactly one of the two).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Instances per batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Percent (1–100) of the known instances per batch, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
}

impl BatchSpec {
    /// Checks that exactly one of count (>= 1) and percent (1–100) is given.
    pub fn validate(&self) -> Result<()> {
        match (self.count, self.percent) {
            (Some(c), None) if c >= 1 => Ok(()),
            (None, Some(p)) if (1..=100).contains(&p) => Ok(()),
            _ => Err(ControlError::bad(
                "batch",
                "give {\"count\": N >= 1} or {\"percent\": 1..100}",
            )),
        }
    }

    /// The batch size for a population of `n` instances (at least 1).
    pub fn size(&self, n: usize) -> usize {
        match (self.count, self.percent) {
            (Some(c), _) => c.max(1),
            (None, Some(p)) => (n * p as usize).div_ceil(100).max(1),
            _ => 1,
        }
    }
}

/// Where a rolling gray publish stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    /// Adding a batch every interval; promotes when every known instance has it.
    Running,
    /// Paused by a user.
    Paused,
    /// Stopped by itself (an instance rejected the release); resume, abort or roll back.
    Stopped,
    /// Promoted to everyone.
    Done,
    /// Abandoned: every instance is back on the main release.
    Aborted,
    /// Rolled back after (or instead of) promotion: the main release is the one before the rollout.
    RolledBack,
}

/// A rolling gray publish: a gray release whose instance list grows batch by batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The gray release (also the rollout's id).
    pub release: u64,
    /// The namespace instance.
    pub ns: NsKey,
    /// Batch size.
    pub batch: BatchSpec,
    /// Time between batches, ms.
    pub interval_ms: u64,
    /// Where it stands.
    pub status: RolloutStatus,
    /// Why it stopped, was aborted or rolled back.
    #[serde(default)]
    pub reason: String,
    /// The instances that have the gray release, in the order they got it.
    #[serde(default)]
    pub selected: Vec<String>,
    /// When the next batch is due (ms since the epoch).
    pub next_ms: u64,
    /// The main release when the rollout started (what a rollback returns to).
    pub base: Option<u64>,
    /// The main release the promotion created.
    #[serde(default)]
    pub promoted: Option<u64>,
    /// Who started it.
    pub author: String,
    /// Selected instances (still reporting) that have not reported the gray release as applied yet: the
    /// rollout holds until they have (an instance that stops reporting drops out when its report expires).
    #[serde(default)]
    pub waiting: Vec<String>,
    /// The error-rate gate (none: only rejections stop the rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ErrorRateGate>,
}

/// One audit record: who did what to what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its id (increasing).
    pub id: u64,
    /// When, in ms since the epoch.
    pub at_ms: u64,
    /// Who.
    pub actor: String,
    /// The action (`item.put`, `publish`, ...).
    pub action: String,
    /// The target (a namespace path, a user...).
    pub target: String,
    /// Details.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The differences between two item maps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// Keys only in the newer map.
    pub added: BTreeMap<String, Item>,
    /// Keys only in the older map.
    pub removed: BTreeMap<String, Item>,
    /// Keys in both with different values or schemas: (old, new).
    pub changed: BTreeMap<String, (Item, Item)>,
}

/// Diffs `old` against `new` (ignoring versions and authors).
pub fn diff(old: &BTreeMap<String, Item>, new: &BTreeMap<String, Item>) -> Diff {
    let mut d = Diff::default();
    for (k, n) in new {
        match old.get(k) {
            None => {
                d.added.insert(k.clone(), n.clone());
            }
            Some(o) if o.value != n.value || o.schema != n.schema || o.comment != n.comment => {
                d.changed.insert(k.clone(), (o.clone(), n.clone()));
            }
            Some(_) => {}
        }
    }
    for (k, o) in old {
        if !new.contains_key(k) {
            d.removed.insert(k.clone(), o.clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(k: &str, v: Value) -> Item {
        Item {
            key: k.into(),
            value: v,
            schema: None,
            comment: String::new(),
            version: 1,
            modified_by: "u".into(),
            masked: false,
            secret: false,
            sealed: None,
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("app", "orders-svc_1.2").is_ok());
        assert_eq!(
            check_name("app", "a/b").unwrap_err().field.as_deref(),
            Some("app")
        );
        assert!(check_name("app", "").is_err());
        // Issue 17, item 7: dot-only names cannot be reached over HTTP.
        for n in [".", "..", "..."] {
            assert!(check_name("key", n).is_err(), "{n}");
        }
        assert!(check_name("key", "a..b").is_ok());
    }

    #[test]
    fn value_json_roundtrip_is_tagged() {
        let v = Value::Integer(5);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j, serde_json::json!({"type": "integer", "value": 5}));
        let d: Value = serde_json::from_value(
            serde_json::json!({"type":"document","value":{"format":"json","text":"{}"}}),
        )
        .unwrap();
        assert!(matches!(
            d,
            Value::Document {
                format: DocFormat::Json,
                ..
            }
        ));
    }

    #[test]
    fn list_items_must_be_scalars() {
        assert!(Value::List(vec![1.into(), "a".into()]).validate().is_ok());
        let e = Value::List(vec![1.into(), serde_json::json!([1])])
            .validate()
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("value/1"));
    }

    #[test]
    fn gray_rule_matching() {
        let mut r = GrayRule::default();
        r.labels.insert("zone".into(), "a".into());
        let mut inst = Instance {
            id: "i1".into(),
            ip: "10.0.0.1".into(),
            labels: BTreeMap::new(),
        };
        assert!(!r.matches(&inst));
        inst.labels.insert("zone".into(), "a".into());
        assert!(r.matches(&inst));
        let r2 = GrayRule {
            instances: vec!["i2".into()],
            ..Default::default()
        };
        assert!(!r2.matches(&inst));
        inst.id = "i2".into();
        assert!(r2.matches(&inst));
        assert!(
            GrayRule {
                ips: vec!["10.0.0.1".into()],
                ..Default::default()
            }
            .matches(&inst)
        );
    }

    #[test]
    fn diff_finds_added_removed_changed() {
        let mut a = BTreeMap::new();
        a.insert("x".into(), item("x", Value::Integer(1)));
        a.insert("y".into(), item("y", Value::Boolean(true)));
        let mut b = BTreeMap::new();
        b.insert("x".into(), item("x", Value::Integer(2)));
        b.insert("z".into(), item("z", Value::String("s".into())));
        let d = diff(&a, &b);
        assert_eq!(d.added.keys().collect::<Vec<_>>(), vec!["z"]);
        assert_eq!(d.removed.keys().collect::<Vec<_>>(), vec!["y"]);
        assert_eq!(d.changed["x"].1.value, Value::Integer(2));
        assert_eq!(diff(&a, &a), Diff::default());
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Level::None < Level::MaskedRead && Level::MaskedRead < Level::Read);
        assert!(Level::Read < Level::Edit && Level::Edit < Level::Publish);
    }
}
