//! The command-line entry points the `furrow` binary wires in: `furrow control` (the service) and
//! `furrow ctl config ...` (a client for every API operation).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};

use crate::client::{ApiClient, ClientError, encode};

/// `furrow control`: run the configuration center.
#[derive(Args, Debug, Clone)]
pub struct ControlArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Store URL: `sqlite:PATH` (default), `sqlite::memory:` (tests) or `mysql://USER:PASSWORD@HOST:PORT/DB`
    /// (shared by several control nodes).
    #[arg(long, default_value = "sqlite:furrow-control.db")]
    pub store: String,
    /// The bootstrap administrator's user name (created when missing).
    #[arg(long, default_value = "admin")]
    pub admin_user: String,
    /// The bootstrap administrator's API token (default: $FURROW_CONTROL_ADMIN_TOKEN; when neither is set and
    /// the store is new, a token is generated and printed once).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// The environments, isolated from each other.
    #[arg(long, value_delimiter = ',', default_value = "DEV,FAT,UAT,PRO")]
    pub envs: Vec<String>,
    /// Worker threads of the service's runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Releases kept per namespace instance (0: all; the current and active gray releases are always kept).
    #[arg(long, default_value_t = 100)]
    pub keep_releases: usize,
    /// Seconds an instance report lives without news (a new report or a watch) from that instance.
    #[arg(long, default_value_t = 600)]
    pub report_ttl_s: u64,
    /// The most instance reports kept in memory.
    #[arg(long, default_value_t = 10_000)]
    pub max_reports: usize,
    /// Milliseconds a write waits for the store before answering 503.
    #[arg(long, default_value_t = 5_000)]
    pub write_wait_ms: u64,
    /// Key file for secret items (`ID:HEX` lines, 32-byte keys; the first one encrypts). Without it secret
    /// items are refused. See docs/control.md for rotation.
    #[arg(long)]
    pub secret_key_file: Option<std::path::PathBuf>,
    /// Jobs: worker and item lease, ms (a worker silent this long is dead; its items are taken back).
    #[arg(long, default_value_t = 3_000)]
    pub job_lease_ms: u64,
    /// Jobs: runs (with items and logs) are deleted this many days after they ended.
    #[arg(long, default_value_t = 7)]
    pub job_history_days: u64,
    /// The span collector.
    #[command(flatten)]
    pub trace: crate::trace::TraceArgs,
    /// The directory release versions' file artifacts must be under (without it, file artifacts are
    /// refused: only inline ones). See docs/release.md.
    #[arg(long)]
    pub artifact_root: Option<std::path::PathBuf>,
}

/// `furrow ctl`: client commands.
#[derive(Args, Debug, Clone)]
pub struct CtlArgs {
    /// The configuration center.
    #[arg(long, global = true, default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// The API token (default: $FURROW_TOKEN).
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The `ctl` command groups.
#[derive(Subcommand, Debug, Clone)]
pub enum CtlCommand {
    /// The configuration center.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The service registry.
    #[command(subcommand)]
    Registry(crate::registry::cli::RegistryCmd),
    /// Governance rules of registry services.
    #[command(subcommand)]
    Rules(crate::registry::cli::RulesCmd),
    /// Distributed jobs.
    #[command(subcommand)]
    Job(crate::jobs::cli::JobCmd),
    /// Traces: call trees, search, dependency graph, slowest operations.
    #[command(subcommand)]
    Trace(crate::trace::cli::TraceCmd),
    /// Release management: projects, versions, gates, deployments.
    #[command(subcommand)]
    Release(crate::release::cli::ReleaseCmd),
}

/// Selects a namespace instance.
#[derive(Args, Debug, Clone)]
pub struct NsOpts {
    /// The application.
    #[arg(long)]
    pub app: String,
    /// The environment.
    #[arg(long)]
    pub env: String,
    /// The cluster.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// The namespace.
    #[arg(long = "ns")]
    pub namespace: String,
}

impl NsOpts {
    fn path(&self) -> String {
        format!(
            "/v1/apps/{}/envs/{}/clusters/{}/namespaces/{}",
            encode(&self.app),
            encode(&self.env),
            encode(&self.cluster),
            encode(&self.namespace)
        )
    }
}

/// Selects an instance (for gray rules and resolved reads).
#[derive(Args, Debug, Clone, Default)]
pub struct InstanceOpts {
    /// Instance labels, `k=v` (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Instance IPs (repeatable).
    #[arg(long = "ip")]
    pub ips: Vec<String>,
    /// Instance ids (repeatable).
    #[arg(long = "instance")]
    pub instances: Vec<String>,
}

/// Value types for `set`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum ValueType {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// A float.
    Float,
    /// A boolean.
    Boolean,
    /// A JSON array of scalars.
    List,
    /// A JSON document.
    Json,
    /// A YAML document.
    Yaml,
    /// An XML document.
    Xml,
    /// A TOML document.
    Toml,
    /// A properties document.
    Properties,
    /// A rule table (JSON).
    Rules,
}

/// Publish modes for `publish`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum ModeArg {
    /// Pushed now.
    Immediate,
    /// On the clients' next refresh.
    Natural,
    /// At `--at`.
    Scheduled,
    /// To the selected instances only.
    Gray,
    /// To the known instances batch by batch (`--batch`, `--interval-ms`), then promoted.
    Rolling,
}

/// `furrow ctl config ...` operations.
#[derive(Subcommand, Debug, Clone)]
pub enum ConfigCmd {
    /// Who the token belongs to.
    Whoami,
    /// The environments.
    Envs,
    /// List applications.
    Apps,
    /// Create an application.
    CreateApp {
        /// Its name.
        name: String,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List an application's namespaces (and public ones).
    Namespaces {
        /// The application.
        app: String,
    },
    /// Create a namespace.
    CreateNamespace {
        /// The owning application.
        app: String,
        /// The namespace.
        name: String,
        /// Shared with every application.
        #[arg(long)]
        public: bool,
        /// Publishing needs a publisher other than the editors.
        #[arg(long)]
        review: bool,
    },
    /// List clusters.
    Clusters {
        /// The application.
        app: String,
        /// The environment.
        env: String,
    },
    /// Create a cluster.
    CreateCluster {
        /// The application.
        app: String,
        /// The environment.
        env: String,
        /// The cluster.
        name: String,
    },
    /// List draft items.
    Items(NsOpts),
    /// Show a draft item.
    Get {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The key.
        key: String,
    },
    /// Create or update a draft item.
    Set {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The key.
        key: String,
        /// The value (or --file).
        value: Option<String>,
        /// The type.
        #[arg(long = "type", value_enum, default_value = "string")]
        kind: ValueType,
        /// Read the value from a file.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// A JSON Schema (JSON text) for the value.
        #[arg(long)]
        schema: Option<String>,
        /// The version read (default: the current one, i.e. last writer wins).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Delete a draft item.
    Delete {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The key.
        key: String,
        /// Only if still at this version.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Append to a list item (value as JSON, e.g. `"x"` or 3).
    ListAdd {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The key.
        key: String,
        /// The value (JSON scalar; a bare word is taken as a string).
        value: String,
    },
    /// Replace one element of a list item.
    ListSet {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The key.
        key: String,
        /// The index.
        index: usize,
        /// The value.
        value: String,
    },
    /// Remove one element of a list item.
    ListRemove {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The key.
        key: String,
        /// The index.
        index: usize,
    },
    /// Differences between the draft and the current release.
    Diff(NsOpts),
    /// Publish the draft.
    Publish {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The release message.
        #[arg(short, long, default_value = "")]
        message: String,
        /// The mode.
        #[arg(long, value_enum, default_value = "immediate")]
        mode: ModeArg,
        /// For scheduled: when, in ms since the epoch, or `+SECONDS` from now.
        #[arg(long)]
        at: Option<String>,
        /// The gray selection (gray mode).
        #[command(flatten)]
        gray: InstanceOpts,
        /// Rolling mode: instances per batch (`N`) or a percentage (`N%`).
        #[arg(long)]
        batch: Option<String>,
        /// Rolling mode: time between batches.
        #[arg(long, default_value_t = 60_000)]
        interval_ms: u64,
        /// Rolling mode: stop when an instance with the release reports a higher error rate (0.0-1.0).
        #[arg(long)]
        max_error_rate: Option<f64>,
        /// Rolling mode: report windows with fewer requests are ignored by the error-rate gate.
        #[arg(long, default_value_t = 20)]
        min_requests: u64,
    },
    /// List pending scheduled publishes.
    Scheduled(NsOpts),
    /// Cancel a scheduled publish.
    CancelScheduled {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// Its id.
        id: u64,
    },
    /// List auto-rolling gray publishes.
    Rollouts(NsOpts),
    /// Steer an auto-rolling gray publish.
    Rollout {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// Its id (the gray release).
        id: u64,
        /// pause, resume, abort or rollback.
        action: String,
    },
    /// Key usage of a namespace instance (keys nobody read within `--unused-for-ms`), or who read `--key`.
    Usage {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The period, ms (default 7 days).
        #[arg(long)]
        unused_for_ms: Option<u64>,
        /// One key: the instances that read it.
        #[arg(long)]
        key: Option<String>,
    },
    /// List releases of a namespace instance.
    Releases(NsOpts),
    /// Show a release.
    Release {
        /// The release id.
        id: u64,
    },
    /// Diff two releases.
    DiffReleases {
        /// The older release.
        from: u64,
        /// The newer release.
        to: u64,
    },
    /// Roll back to an earlier release.
    Rollback {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The release to go back to.
        release: u64,
        /// The message.
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// Active gray releases.
    Grays(NsOpts),
    /// Promote a gray release to everyone.
    Promote {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The gray release id.
        gray: u64,
        /// The message.
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// Abandon a gray release.
    Abandon {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The gray release id.
        gray: u64,
    },
    /// Instances that reported on a namespace instance.
    Instances(NsOpts),
    /// Instances that applied a release.
    ReleaseInstances {
        /// The release id.
        id: u64,
    },
    /// The resolved configuration an instance sees.
    Show {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The instance id.
        #[arg(long)]
        instance: Option<String>,
        /// The instance IP.
        #[arg(long)]
        ip: Option<String>,
        /// Labels `k=v`.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Evaluate values (rule tables with a context) as the client library would.
    Evaluate {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// A key to evaluate (repeat; default: every key).
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Context attributes `k=v` (repeat).
        #[arg(long = "ctx")]
        context: Vec<String>,
        /// The instance id (selects gray releases).
        #[arg(long)]
        instance: Option<String>,
    },
    /// Long-poll for a change newer than `--since`.
    Watch {
        /// The namespace instance.
        #[command(flatten)]
        ns: NsOpts,
        /// The version already known.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// How long to wait, in ms.
        #[arg(long, default_value_t = 30000)]
        timeout: u64,
    },
    /// The audit log (administrators).
    Audit {
        /// How many records (newest first).
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Only targets starting with this.
        #[arg(long, default_value = "")]
        target: String,
    },
    /// List users.
    Users,
    /// Create or update a user.
    CreateUser {
        /// The name.
        name: String,
        /// Roles (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Make it an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Set a user's web-console password, read from the first line of stdin (`--remove` removes it).
    SetPassword {
        /// The user.
        name: String,
        /// Remove the password instead (the user then logs in with tokens only).
        #[arg(long)]
        remove: bool,
    },
    /// Create an API token for a user (printed once).
    CreateToken {
        /// The user.
        user: String,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime in seconds (default: none).
        #[arg(long)]
        ttl_s: Option<u64>,
    },
    /// List tokens (ids, owners, expiry; never the tokens).
    Tokens,
    /// Revoke a token by id, with every token minted under it.
    RevokeToken {
        /// The token id (`tokens` lists them).
        id: String,
    },
    /// List permission grants.
    Grants,
    /// Grant a level on an application's namespace (`none` removes).
    Grant {
        /// `user:NAME` or `role:NAME`.
        subject: String,
        /// The application (`*` for all).
        app: String,
        /// The namespace (`*` for all).
        namespace: String,
        /// none, masked_read, read, edit, publish.
        level: String,
        /// Also allow exporting the application.
        #[arg(long)]
        export: bool,
        /// Also allow sending spans for the application's services (`POST /v1/traces`); with level
        /// `none`, an ingest-only grant.
        #[arg(long)]
        trace_ingest: bool,
    },
    /// Export an application's current releases in one environment.
    Export {
        /// The application.
        app: String,
        /// The environment.
        env: String,
    },
}

fn labels_query(labels: &[String]) -> String {
    labels
        .iter()
        .map(|l| l.replacen('=', ":", 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// A list element from the command line: any JSON value as itself (the service rejects arrays and objects
/// with a precise error instead of storing their text), anything else as a string.
fn scalar(text: &str) -> Json {
    serde_json::from_str::<Json>(text).unwrap_or_else(|_| Json::String(text.into()))
}

fn usage(msg: impl Into<String>) -> ClientError {
    ClientError::Api {
        status: 400,
        error: crate::ControlError::bad("argument", msg),
    }
}

fn typed_value(kind: ValueType, text: &str) -> Result<Json, ClientError> {
    let bad = |what: &str| usage(format!("{text:?} is not {what}"));
    let doc = |format: &str| json!({"type": "document", "value": {"format": format, "text": text}});
    Ok(match kind {
        ValueType::String => json!({"type": "string", "value": text}),
        ValueType::Integer => {
            json!({"type": "integer", "value": text.trim().parse::<i64>().map_err(|_| bad("an integer"))?})
        }
        ValueType::Float => {
            json!({"type": "float", "value": text.trim().parse::<f64>().map_err(|_| bad("a float"))?})
        }
        ValueType::Boolean => {
            json!({"type": "boolean", "value": text.trim().parse::<bool>().map_err(|_| bad("true or false"))?})
        }
        ValueType::List => {
            json!({"type": "list", "value": serde_json::from_str::<Json>(text).map_err(|_| bad("a JSON array"))?})
        }
        ValueType::Rules => {
            json!({"type": "rules", "value": serde_json::from_str::<Json>(text).map_err(|_| bad("a JSON rule table"))?})
        }
        ValueType::Json => doc("json"),
        ValueType::Yaml => doc("yaml"),
        ValueType::Xml => doc("xml"),
        ValueType::Toml => doc("toml"),
        ValueType::Properties => doc("properties"),
    })
}

async fn run_config(api: &ApiClient, cmd: ConfigCmd) -> Result<Json, ClientError> {
    use ConfigCmd::*;
    match cmd {
        Whoami => api.call("GET", "/v1/whoami", None).await,
        Envs => api.call("GET", "/v1/envs", None).await,
        Apps => api.call("GET", "/v1/apps", None).await,
        CreateApp { name, description } => {
            api.call(
                "POST",
                "/v1/apps",
                Some(&json!({"name": name, "description": description})),
            )
            .await
        }
        Namespaces { app } => {
            api.call(
                "GET",
                &format!("/v1/apps/{}/namespaces", encode(&app)),
                None,
            )
            .await
        }
        CreateNamespace {
            app,
            name,
            public,
            review,
        } => {
            let body = json!({"name": name, "public": public, "review": review});
            api.call(
                "POST",
                &format!("/v1/apps/{}/namespaces", encode(&app)),
                Some(&body),
            )
            .await
        }
        Clusters { app, env } => {
            api.call(
                "GET",
                &format!("/v1/apps/{}/envs/{}/clusters", encode(&app), encode(&env)),
                None,
            )
            .await
        }
        CreateCluster { app, env, name } => {
            let path = format!("/v1/apps/{}/envs/{}/clusters", encode(&app), encode(&env));
            api.call("POST", &path, Some(&json!({"name": name}))).await
        }
        Items(ns) => api.call("GET", &format!("{}/items", ns.path()), None).await,
        Get { ns, key } => {
            api.call(
                "GET",
                &format!("{}/items/{}", ns.path(), encode(&key)),
                None,
            )
            .await
        }
        Set {
            ns,
            key,
            value,
            kind,
            file,
            schema,
            version,
        } => {
            let text = match (value, file) {
                (Some(v), None) => v,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .map_err(|e| usage(format!("{}: {e}", f.display())))?,
                _ => return Err(usage("give a value or --file, not both")),
            };
            let path = format!("{}/items/{}", ns.path(), encode(&key));
            let version = match version {
                Some(v) => Some(v),
                None => match api.call("GET", &path, None).await {
                    Ok(item) => item.get("version").and_then(Json::as_u64),
                    Err(ClientError::Api { status: 404, error })
                        if error.field.as_deref() == Some("key") =>
                    {
                        None
                    }
                    Err(e) => return Err(e),
                },
            };
            let schema = schema
                .map(|s| {
                    serde_json::from_str::<Json>(&s).map_err(|e| usage(format!("--schema: {e}")))
                })
                .transpose()?;
            // No --schema: the field is left out so the item keeps its schema (null would remove it).
            let mut body = json!({"value": typed_value(kind, &text)?, "version": version});
            if let Some(schema) = schema {
                body["schema"] = schema;
            }
            api.call("PUT", &path, Some(&body)).await
        }
        Delete { ns, key, version } => {
            let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
            api.call(
                "DELETE",
                &format!("{}/items/{}{q}", ns.path(), encode(&key)),
                None,
            )
            .await
        }
        ListAdd { ns, key, value } => {
            api.call(
                "POST",
                &format!("{}/items/{}/list", ns.path(), encode(&key)),
                Some(&json!({"value": scalar(&value)})),
            )
            .await
        }
        ListSet {
            ns,
            key,
            index,
            value,
        } => {
            let path = format!("{}/items/{}/list/{index}", ns.path(), encode(&key));
            api.call("PUT", &path, Some(&json!({"value": scalar(&value)})))
                .await
        }
        ListRemove { ns, key, index } => {
            api.call(
                "DELETE",
                &format!("{}/items/{}/list/{index}", ns.path(), encode(&key)),
                None,
            )
            .await
        }
        Diff(ns) => api.call("GET", &format!("{}/diff", ns.path()), None).await,
        Publish {
            ns,
            message,
            mode,
            at,
            gray,
            batch,
            interval_ms,
            max_error_rate,
            min_requests,
        } => {
            let mut body = json!({"message": message});
            match mode {
                ModeArg::Immediate => body["mode"] = "immediate".into(),
                ModeArg::Natural => body["mode"] = "natural".into(),
                ModeArg::Scheduled => {
                    let at = at.ok_or_else(|| usage("--at is required for scheduled publishes"))?;
                    let at_ms = match at.strip_prefix('+') {
                        Some(secs) => {
                            crate::model::now_ms()
                                + secs.parse::<u64>().map_err(|_| usage("--at +SECONDS"))? * 1000
                        }
                        None => at
                            .parse::<u64>()
                            .map_err(|_| usage("--at is ms since the epoch or +SECONDS"))?,
                    };
                    body["mode"] = "scheduled".into();
                    body["at_ms"] = at_ms.into();
                }
                ModeArg::Gray => {
                    let labels: serde_json::Map<String, Json> = gray
                        .labels
                        .iter()
                        .filter_map(|l| {
                            l.split_once('=')
                                .map(|(k, v)| (k.to_string(), Json::String(v.into())))
                        })
                        .collect();
                    body["mode"] = "gray".into();
                    body["rule"] =
                        json!({"labels": labels, "ips": gray.ips, "instances": gray.instances});
                }
                ModeArg::Rolling => {
                    let b =
                        batch.ok_or_else(|| usage("--batch N or N% is required for rolling"))?;
                    let spec = match b.strip_suffix('%') {
                        Some(p) => {
                            json!({"percent": p.parse::<u8>().map_err(|_| usage("--batch N%"))?})
                        }
                        None => {
                            json!({"count": b.parse::<usize>().map_err(|_| usage("--batch N"))?})
                        }
                    };
                    body["mode"] = "rolling".into();
                    body["batch"] = spec;
                    body["interval_ms"] = interval_ms.into();
                    if let Some(rate) = max_error_rate {
                        body["health"] =
                            json!({"max_error_rate": rate, "min_requests": min_requests});
                    }
                }
            }
            api.call("POST", &format!("{}/publish", ns.path()), Some(&body))
                .await
        }
        Releases(ns) => {
            api.call("GET", &format!("{}/releases", ns.path()), None)
                .await
        }
        Release { id } => api.call("GET", &format!("/v1/releases/{id}"), None).await,
        DiffReleases { from, to } => {
            api.call("GET", &format!("/v1/diff?from={from}&to={to}"), None)
                .await
        }
        Rollback {
            ns,
            release,
            message,
        } => {
            api.call(
                "POST",
                &format!("{}/rollback", ns.path()),
                Some(&json!({"release": release, "message": message})),
            )
            .await
        }
        Grays(ns) => api.call("GET", &format!("{}/grays", ns.path()), None).await,
        Promote { ns, gray, message } => {
            api.call(
                "POST",
                &format!("{}/grays/{gray}/promote", ns.path()),
                Some(&json!({"message": message})),
            )
            .await
        }
        Abandon { ns, gray } => {
            api.call("POST", &format!("{}/grays/{gray}/abandon", ns.path()), None)
                .await
        }
        Instances(ns) => {
            api.call("GET", &format!("{}/instances", ns.path()), None)
                .await
        }
        ReleaseInstances { id } => {
            api.call("GET", &format!("/v1/releases/{id}/instances"), None)
                .await
        }
        Show {
            ns,
            instance,
            ip,
            labels,
        } => {
            let path = format!(
                "/v1/configs/{}/{}/{}/{}?instance={}&ip={}&labels={}",
                encode(&ns.app),
                encode(&ns.env),
                encode(&ns.cluster),
                encode(&ns.namespace),
                encode(&instance.unwrap_or_default()),
                encode(&ip.unwrap_or_default()),
                encode(&labels_query(&labels))
            );
            api.call("GET", &path, None).await
        }
        Evaluate {
            ns,
            keys,
            context,
            instance,
        } => {
            let mut ctx = serde_json::Map::new();
            for kv in &context {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| usage(format!("--ctx {kv:?}: use k=v")))?;
                ctx.insert(k.to_string(), v.into());
            }
            let mut body = json!({"app": ns.app, "env": ns.env, "cluster": ns.cluster,
                                  "namespace": ns.namespace, "context": ctx,
                                  "instance": {"id": instance.unwrap_or_default()}});
            if !keys.is_empty() {
                body["keys"] = json!(keys);
            }
            api.call("POST", "/v1/evaluate", Some(&body)).await
        }
        Watch { ns, since, timeout } => {
            let path = format!(
                "/v1/watch?app={}&env={}&cluster={}&namespace={}&since={since}&timeout={timeout}",
                encode(&ns.app),
                encode(&ns.env),
                encode(&ns.cluster),
                encode(&ns.namespace)
            );
            let (status, body) = api
                .call_status("GET", &path, None, Duration::from_millis(timeout + 5000))
                .await?;
            Ok(if status == 304 {
                json!({"changed": false})
            } else {
                body
            })
        }
        Audit { limit, target } => {
            api.call(
                "GET",
                &format!("/v1/audit?limit={limit}&target={}", encode(&target)),
                None,
            )
            .await
        }
        Users => api.call("GET", "/v1/users", None).await,
        CreateUser { name, roles, admin } => {
            api.call(
                "POST",
                "/v1/users",
                Some(&json!({"name": name, "roles": roles, "admin": admin})),
            )
            .await
        }
        SetPassword { name, remove } => {
            let password = if remove {
                Json::Null
            } else {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| usage(format!("reading the password from stdin: {e}")))?;
                Json::String(line.trim_end_matches(['\r', '\n']).to_string())
            };
            api.call(
                "PUT",
                &format!("/v1/users/{}/password", encode(&name)),
                Some(&json!({ "password": password })),
            )
            .await
        }
        CreateToken {
            user,
            description,
            ttl_s,
        } => {
            let body = json!({"user": user, "description": description, "ttl_s": ttl_s});
            api.call("POST", "/v1/tokens", Some(&body)).await
        }
        Tokens => api.call("GET", "/v1/tokens", None).await,
        RevokeToken { id } => {
            api.call("DELETE", &format!("/v1/tokens/{}", encode(&id)), None)
                .await
        }
        Scheduled(ns) => {
            api.call("GET", &format!("{}/scheduled", ns.path()), None)
                .await
        }
        CancelScheduled { ns, id } => {
            api.call("DELETE", &format!("{}/scheduled/{id}", ns.path()), None)
                .await
        }
        Rollouts(ns) => {
            api.call("GET", &format!("{}/rollouts", ns.path()), None)
                .await
        }
        Rollout { ns, id, action } => {
            let path = format!("{}/rollouts/{id}/{}", ns.path(), encode(&action));
            api.call("POST", &path, None).await
        }
        Usage {
            ns,
            unused_for_ms,
            key,
        } => {
            let path = match (key, unused_for_ms) {
                (Some(k), _) => format!("{}/usage/{}", ns.path(), encode(&k)),
                (None, Some(ms)) => format!("{}/usage?unused_for_ms={ms}", ns.path()),
                (None, None) => format!("{}/usage", ns.path()),
            };
            api.call("GET", &path, None).await
        }
        Grants => api.call("GET", "/v1/permissions", None).await,
        Grant {
            subject,
            app,
            namespace,
            level,
            export,
            trace_ingest,
        } => {
            let body = json!({"subject": subject, "app": app, "namespace": namespace, "level": level, "export": export, "trace_ingest": trace_ingest});
            api.call("PUT", "/v1/permissions", Some(&body)).await
        }
        Export { app, env } => {
            api.call(
                "GET",
                &format!("/v1/apps/{}/envs/{}/export", encode(&app), encode(&env)),
                None,
            )
            .await
        }
    }
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
}

/// Runs one `furrow ctl ...` command: prints the JSON result on stdout, or the error body on stderr (exit 1).
pub fn run_ctl(args: CtlArgs) -> ExitCode {
    let token = args.token.or_else(|| std::env::var("FURROW_TOKEN").ok());
    let api = ApiClient::new(&args.server, token.as_deref());
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("furrow ctl: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match args.command {
            CtlCommand::Config(cmd) => run_config(&api, cmd).await,
            CtlCommand::Registry(cmd) => crate::registry::cli::run_registry(&api, cmd).await,
            CtlCommand::Rules(cmd) => crate::registry::cli::run_rules(&api, cmd).await,
            CtlCommand::Job(cmd) => crate::jobs::cli::run_job(&api, cmd).await,
            CtlCommand::Trace(cmd) => crate::trace::cli::run_trace(&api, cmd).await,
            CtlCommand::Release(cmd) => crate::release::cli::run_release(&api, cmd).await,
        }
    });
    match result {
        Ok(Json::Null) => ExitCode::SUCCESS,
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(ClientError::Api { status, error }) => {
            eprintln!(
                "{}",
                serde_json::to_string_pretty(&json!({"status": status, "error": error}))
                    .unwrap_or_default()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("furrow ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the configuration center until Ctrl-C / SIGTERM, on a multi-threaded runtime of its own.
pub fn run_control(args: ControlArgs) -> ExitCode {
    match run_control_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("furrow control: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_control_inner(args: ControlArgs) -> Result<(), String> {
    let store = crate::store::open(&args.store).map_err(|e| e.to_string())?;
    let mut token = args
        .admin_token
        .clone()
        .or_else(|| std::env::var("FURROW_CONTROL_ADMIN_TOKEN").ok());
    let fresh = store.load().map(|(_, r)| r.is_empty()).unwrap_or(false);
    if token.is_none() && fresh {
        let t = crate::auth::new_token().map_err(|e| e.to_string())?;
        eprintln!(
            "furrow control: new store; administrator {:?} token: {t}",
            args.admin_user
        );
        token = Some(t);
    }
    let mut opts =
        crate::center::CenterOptions::new(args.envs.clone(), &args.admin_user, token.as_deref());
    opts.keep_releases = args.keep_releases;
    opts.report_ttl = Duration::from_secs(args.report_ttl_s);
    opts.max_reports = args.max_reports;
    opts.write_wait = Duration::from_millis(args.write_wait_ms);
    opts.trace = args.trace.options()?;
    if let Some(path) = &args.secret_key_file {
        let keys = crate::secret::Keyring::load(path).map_err(|e| e.to_string())?;
        opts.secret_keys = Some(std::sync::Arc::new(keys));
    }
    opts.artifact_root = args.artifact_root.clone();
    let center = crate::center::Center::open_with(store, opts).map_err(|e| e.to_string())?;
    let jobs_opts = crate::jobs::JobsOptions {
        lease_ms: args.job_lease_ms.clamp(500, 600_000) as i64,
        retention_ms: args.job_history_days.clamp(1, 3650) as i64 * 86_400_000,
    };
    crate::jobs::attach(&center, &args.store, jobs_opts).map_err(|e| e.to_string())?;
    let rt = runtime(args.threads).map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen).await.map_err(|e| format!("listen {}: {e}", args.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%addr, store = %crate::store::redact_url(&args.store), "furrow control listening");
        eprintln!("furrow control listening on http://{addr}");
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        };
        crate::server::serve(center, listener, stop).await.map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: TopCmd,
    }

    #[derive(Subcommand)]
    enum TopCmd {
        Control(ControlArgs),
        Ctl(CtlArgs),
    }

    #[test]
    fn parses_commands() {
        let t = Top::try_parse_from([
            "furrow",
            "control",
            "--envs",
            "DEV,PRO",
            "--store",
            "sqlite::memory:",
        ])
        .unwrap();
        let TopCmd::Control(c) = t.cmd else {
            panic!("not control")
        };
        assert_eq!(c.envs, vec!["DEV", "PRO"]);
        assert_eq!(c.listen, "127.0.0.1:7070");
        let t = Top::try_parse_from([
            "furrow", "ctl", "config", "set", "--app", "a", "--env", "DEV", "--ns", "n", "k", "5",
            "--type", "integer",
        ])
        .unwrap();
        let TopCmd::Ctl(c) = t.cmd else {
            panic!("not ctl")
        };
        assert!(matches!(
            c.command,
            CtlCommand::Config(ConfigCmd::Set {
                kind: ValueType::Integer,
                ..
            })
        ));
    }

    #[test]
    fn command_definitions_are_consistent() {
        use clap::CommandFactory;
        Top::command().debug_assert();
        let help = Top::command()
            .find_subcommand_mut("ctl")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains("--server"), "{help}");
    }

    #[test]
    fn typed_values() {
        assert_eq!(
            typed_value(ValueType::Integer, "5").unwrap(),
            json!({"type":"integer","value":5})
        );
        assert!(typed_value(ValueType::Integer, "x").is_err());
        assert_eq!(
            typed_value(ValueType::Toml, "a=1").unwrap()["value"]["format"],
            "toml"
        );
        assert_eq!(scalar("3"), json!(3));
        assert_eq!(scalar("abc"), json!("abc"));
        assert_eq!(labels_query(&["a=b".into(), "c=d".into()]), "a:b,c:d");
    }
}
