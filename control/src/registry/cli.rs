//! `furrow ctl registry ...` and `furrow ctl rules ...`: one subcommand per registry API operation.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

use super::rules::RuleSet;
use crate::client::{ApiClient, ClientError, encode};
use crate::error::{ControlError, ErrorCode};

/// Selects a service.
#[derive(Args, Debug, Clone)]
pub struct SvcOpts {
    /// The environment.
    #[arg(long)]
    pub env: String,
    /// The service.
    pub service: String,
}

/// `furrow ctl registry ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum RegistryCmd {
    /// List the services of an environment.
    Services {
        /// The environment.
        #[arg(long)]
        env: String,
    },
    /// Show a service and all its instances (healthy or not).
    Show(SvcOpts),
    /// Create or update a service.
    PutService {
        #[command(flatten)]
        svc: SvcOpts,
        /// The owning application.
        #[arg(long)]
        app: String,
        /// Owner (needed to go live).
        #[arg(long, default_value = "")]
        owner: String,
        /// Documentation link (needed to go live).
        #[arg(long, default_value = "")]
        docs: String,
        /// A declared dependency (repeatable).
        #[arg(long = "dep")]
        deps: Vec<String>,
        /// Heartbeat lease, ms.
        #[arg(long)]
        ttl_ms: Option<u64>,
        /// Protection threshold, 0-1.
        #[arg(long, default_value_t = 0.0)]
        protect_threshold: f64,
        /// An active health check the center runs: tcp, http, redis or mysql.
        #[arg(long, value_parser = ["tcp", "http", "redis", "mysql"])]
        check: Option<String>,
        /// Between two probes of an instance, ms (with --check).
        #[arg(long, requires = "check")]
        check_interval_ms: Option<u64>,
        /// Bound of one probe, ms (with --check).
        #[arg(long, requires = "check")]
        check_timeout_ms: Option<u64>,
        /// `http`: the path to GET (with --check http).
        #[arg(long, requires = "check")]
        check_path: Option<String>,
        /// `mysql`: log in as this user and send COM_PING (with --check mysql; the password from
        /// $FURROW_CHECK_PASSWORD).
        #[arg(long, requires = "check")]
        check_user: Option<String>,
        /// Rule publishes need review by another user.
        #[arg(long)]
        review_rules: bool,
    },
    /// Put a service live (the publishing gate: owner and docs), or back to draft with --off.
    Live {
        #[command(flatten)]
        svc: SvcOpts,
        /// Back to draft.
        #[arg(long)]
        off: bool,
    },
    /// Register an instance.
    Register {
        #[command(flatten)]
        svc: SvcOpts,
        /// Address.
        #[arg(long)]
        ip: String,
        /// Port.
        #[arg(long)]
        port: u16,
        /// Instance id (default IP-PORT).
        #[arg(long, default_value = "")]
        id: String,
        /// Weight.
        #[arg(long)]
        weight: Option<u32>,
        /// Version.
        #[arg(long = "instance-version", default_value = "")]
        version: String,
        /// A tag `k=v` (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Metadata `k=v` (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
    },
    /// Remove an instance.
    Deregister {
        #[command(flatten)]
        svc: SvcOpts,
        /// Instance id.
        id: String,
    },
    /// Send one heartbeat.
    Beat {
        #[command(flatten)]
        svc: SvcOpts,
        /// Instance id.
        id: String,
    },
    /// Let an instance take traffic again.
    Online {
        #[command(flatten)]
        svc: SvcOpts,
        /// Instance id.
        id: String,
    },
    /// Stop new traffic to an instance (it stays registered: drain, then deregister).
    Offline {
        #[command(flatten)]
        svc: SvcOpts,
        /// Instance id.
        id: String,
    },
    /// Set an instance's weight (0: no traffic).
    Weight {
        #[command(flatten)]
        svc: SvcOpts,
        /// Instance id.
        id: String,
        /// The weight.
        weight: u32,
    },
    /// The instances to call (healthy, enabled, weight > 0; all enabled when protected) and the rules.
    Discover(SvcOpts),
    /// Wait for a change after revision --since (prints nothing on timeout).
    Watch {
        #[command(flatten)]
        svc: SvcOpts,
        /// The revision already seen.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// How long to wait, ms.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
    /// This node's registry counters.
    Stats,
}

/// `furrow ctl rules ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum RulesCmd {
    /// The governance rules of a service.
    Get(SvcOpts),
    /// Publish a service's rules: a JSON array of rules from a file (`-`: stdin).
    Publish {
        #[command(flatten)]
        svc: SvcOpts,
        /// The file.
        #[arg(long)]
        file: String,
        /// Why.
        #[arg(long, default_value = "")]
        message: String,
        /// The version read (optimistic versioning; 0 for the first publish).
        #[arg(long)]
        version: Option<u64>,
    },
    /// The rule change waiting for review (null when none).
    Pending(SvcOpts),
    /// Approve the pending rule change (not its own author): it is published.
    Approve {
        #[command(flatten)]
        svc: SvcOpts,
        /// The rule set version read (optimistic versioning).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Drop the pending rule change.
    Reject(SvcOpts),
    /// Evaluate the access and route rules for one call, as the client library does.
    Check {
        #[command(flatten)]
        svc: SvcOpts,
        /// The calling application.
        #[arg(long, default_value = "")]
        caller: String,
        /// The source address.
        #[arg(long)]
        source: Option<std::net::IpAddr>,
        /// The routing key (e.g. a request id).
        #[arg(long, default_value = "")]
        key: String,
    },
}

fn svc_path(s: &SvcOpts) -> String {
    format!(
        "/v1/registry/{}/services/{}",
        encode(&s.env),
        encode(&s.service)
    )
}

fn pairs(list: &[String], field: &str) -> Result<Json, ClientError> {
    let mut m = serde_json::Map::new();
    for p in list {
        let (k, v) = p.split_once('=').ok_or_else(|| local(field, "use k=v"))?;
        m.insert(k.into(), Json::String(v.into()));
    }
    Ok(Json::Object(m))
}

fn local(field: &str, msg: &str) -> ClientError {
    ClientError::Api {
        status: 400,
        error: ControlError::bad(field, msg),
    }
}

/// Runs one registry command.
pub async fn run_registry(api: &ApiClient, cmd: RegistryCmd) -> Result<Json, ClientError> {
    use RegistryCmd::*;
    match cmd {
        Services { env } => {
            api.call(
                "GET",
                &format!("/v1/registry/{}/services", encode(&env)),
                None,
            )
            .await
        }
        Show(s) => api.call("GET", &svc_path(&s), None).await,
        PutService {
            svc,
            app,
            owner,
            docs,
            deps,
            ttl_ms,
            protect_threshold,
            check,
            check_interval_ms,
            check_timeout_ms,
            check_path,
            check_user,
            review_rules,
        } => {
            let check = check.map(|kind| {
                let mut c = json!({"kind": kind});
                if let Some(v) = check_interval_ms {
                    c["interval_ms"] = json!(v);
                }
                if let Some(v) = check_timeout_ms {
                    c["timeout_ms"] = json!(v);
                }
                if let Some(v) = check_path {
                    c["path"] = json!(v);
                }
                if let Some(u) = check_user {
                    c["user"] = json!(u);
                    c["password"] =
                        json!(std::env::var("FURROW_CHECK_PASSWORD").unwrap_or_default());
                }
                c
            });
            let body = json!({"app": app, "owner": owner, "docs": docs, "dependencies": deps,
                "ttl_ms": ttl_ms, "protect_threshold": protect_threshold, "check": check,
                "review_rules": review_rules});
            api.call("PUT", &svc_path(&svc), Some(&body)).await
        }
        Live { svc, off } => {
            let body = json!({"live": !off});
            api.call("POST", &format!("{}/live", svc_path(&svc)), Some(&body))
                .await
        }
        Register {
            svc,
            ip,
            port,
            id,
            weight,
            version,
            tags,
            meta,
        } => {
            let body = json!({"id": id, "ip": ip, "port": port, "weight": weight, "version": version,
                "tags": pairs(&tags, "tag")?, "metadata": pairs(&meta, "meta")?});
            api.call(
                "POST",
                &format!("{}/instances", svc_path(&svc)),
                Some(&body),
            )
            .await
        }
        Deregister { svc, id } => {
            let p = format!("{}/instances/{}", svc_path(&svc), encode(&id));
            api.call("DELETE", &p, None).await
        }
        Beat { svc, id } => {
            let p = format!("{}/instances/{}/beat", svc_path(&svc), encode(&id));
            api.call("PUT", &p, None).await
        }
        Online { svc, id } => {
            let p = format!("{}/instances/{}/online", svc_path(&svc), encode(&id));
            api.call("POST", &p, None).await
        }
        Offline { svc, id } => {
            let p = format!("{}/instances/{}/offline", svc_path(&svc), encode(&id));
            api.call("POST", &p, None).await
        }
        Weight { svc, id, weight } => {
            let p = format!("{}/instances/{}/weight", svc_path(&svc), encode(&id));
            api.call("PUT", &p, Some(&json!({"weight": weight}))).await
        }
        Discover(s) => {
            api.call("GET", &format!("{}/discover", svc_path(&s)), None)
                .await
        }
        Watch {
            svc,
            since,
            timeout_ms,
        } => {
            let p = format!(
                "/v1/registry/watch?env={}&service={}&since={since}&timeout={timeout_ms}",
                encode(&svc.env),
                encode(&svc.service)
            );
            let (status, body) = api
                .call_status("GET", &p, None, Duration::from_millis(timeout_ms + 5_000))
                .await?;
            Ok(if status == 304 { Json::Null } else { body })
        }
        Stats => api.call("GET", "/v1/registry/stats", None).await,
    }
}

/// Runs one rules command.
pub async fn run_rules(api: &ApiClient, cmd: RulesCmd) -> Result<Json, ClientError> {
    match cmd {
        RulesCmd::Get(s) => {
            api.call("GET", &format!("{}/rules", svc_path(&s)), None)
                .await
        }
        RulesCmd::Publish {
            svc,
            file,
            message,
            version,
        } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            }
            .map_err(|e| local("file", &format!("{file}: {e}")))?;
            let rules: Json = serde_json::from_str(&text)
                .map_err(|e| local("file", &format!("{file}: not JSON: {e}")))?;
            let body = json!({"rules": rules, "message": message, "version": version});
            api.call("PUT", &format!("{}/rules", svc_path(&svc)), Some(&body))
                .await
        }
        RulesCmd::Pending(s) => {
            api.call("GET", &format!("{}/rules/pending", svc_path(&s)), None)
                .await
        }
        RulesCmd::Approve { svc, version } => {
            let body = json!({"version": version});
            api.call(
                "POST",
                &format!("{}/rules/approve", svc_path(&svc)),
                Some(&body),
            )
            .await
        }
        RulesCmd::Reject(s) => {
            api.call("DELETE", &format!("{}/rules/pending", svc_path(&s)), None)
                .await
        }
        RulesCmd::Check {
            svc,
            caller,
            source,
            key,
        } => {
            let got = api
                .call("GET", &format!("{}/rules", svc_path(&svc)), None)
                .await?;
            let set: RuleSet = if got.is_null() {
                RuleSet::default()
            } else {
                serde_json::from_value(got).map_err(|e| ClientError::Api {
                    status: 500,
                    error: ControlError::new(ErrorCode::Internal, e.to_string()),
                })?
            };
            let route = set
                .route(&caller, &key)
                .map(|(v, hit)| json!({"version": v, "matches": hit}));
            Ok(json!({
                "version": set.version,
                "admitted": set.admits(&caller, source),
                "route": route,
            }))
        }
    }
}
