//! `furrow ctl release ...`: one subcommand per release API operation.

use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value as Json, json};

use crate::client::{ApiClient, ClientError, encode};

/// `furrow ctl release ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum ReleaseCmd {
    /// List the projects with the version each stage runs.
    Projects,
    /// Show a project.
    Project {
        /// The project.
        project: String,
    },
    /// Create or update a project from a JSON file (the body of `PUT /v1/release/projects/NAME`).
    PutProject {
        /// The project.
        project: String,
        /// The JSON definition.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// List a project's versions.
    Versions {
        /// The project.
        project: String,
    },
    /// Add a version.
    AddVersion {
        /// The project.
        project: String,
        /// The version name.
        #[arg(value_name = "VERSION")]
        ver: String,
        /// The artifact: a file or archive on the control host (absolute path).
        #[arg(long, conflicts_with = "inline")]
        file: Option<String>,
        /// The artifact's content itself (a config bundle, a small script).
        #[arg(long)]
        inline: Option<String>,
        /// The source revision.
        #[arg(long, default_value = "")]
        revision: String,
    },
    /// Run a version's build gate (prints the run; `version` shows the outcome). With --wait, waits for it.
    Gate {
        /// The project.
        project: String,
        /// The version.
        #[arg(value_name = "VERSION")]
        ver: String,
        /// Wait for the gate to finish (at most this many seconds).
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Show a version (artifact, revision, gate run with its logs).
    Version {
        /// The project.
        project: String,
        /// The version.
        #[arg(value_name = "VERSION")]
        ver: String,
    },
    /// The code diff between the version a stage runs (default: the last stage) and a candidate.
    Diff {
        /// The project.
        project: String,
        /// The candidate version.
        #[arg(value_name = "VERSION")]
        ver: String,
        /// The stage to compare with.
        #[arg(long)]
        stage: Option<String>,
    },
    /// Deploy a version to a stage.
    Deploy {
        /// The project.
        project: String,
        /// The stage.
        stage: String,
        /// The version.
        #[arg(value_name = "VERSION")]
        ver: String,
    },
    /// Roll a stage back to an earlier version (through the same batches; no approval, no window).
    Rollback {
        /// The project.
        project: String,
        /// The stage.
        stage: String,
        /// The version to return to.
        #[arg(value_name = "VERSION")]
        ver: String,
    },
    /// Restart a stage's version on every host (through the same batches).
    Restart {
        /// The project.
        project: String,
        /// The stage.
        stage: String,
    },
    /// Release several projects to a stage in dependency order: `PROJECT=VERSION`...
    Plan {
        /// The stage.
        stage: String,
        /// `PROJECT=VERSION` pairs.
        #[arg(required = true)]
        versions: Vec<String>,
    },
    /// List deployments.
    Deployments {
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// Only unfinished ones.
        #[arg(long)]
        active: bool,
    },
    /// Show a deployment (hosts, events, canary verdict).
    Deployment {
        /// Its id.
        id: u64,
    },
    /// Approve a deployment.
    Approve {
        /// Its id.
        id: u64,
    },
    /// Pause a deployment.
    Pause {
        /// Its id.
        id: u64,
    },
    /// Resume a paused deployment.
    Resume {
        /// Its id.
        id: u64,
    },
    /// Cancel a deployment.
    Cancel {
        /// Its id.
        id: u64,
    },
    /// List the agents.
    Agents,
}

fn usage(msg: impl Into<String>) -> ClientError {
    ClientError::Api {
        status: 400,
        error: crate::ControlError::bad("argument", msg),
    }
}

fn project_path(p: &str) -> String {
    format!("/v1/release/projects/{}", encode(p))
}

/// Runs one `furrow ctl release` command.
pub async fn run_release(api: &ApiClient, cmd: ReleaseCmd) -> Result<Json, ClientError> {
    use ReleaseCmd::*;
    match cmd {
        Projects => api.call("GET", "/v1/release/projects", None).await,
        Project { project } => api.call("GET", &project_path(&project), None).await,
        PutProject { project, file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| usage(format!("{}: {e}", file.display())))?;
            let body: Json = serde_json::from_str(&text)
                .map_err(|e| usage(format!("{}: {e}", file.display())))?;
            api.call("PUT", &project_path(&project), Some(&body)).await
        }
        Versions { project } => {
            api.call("GET", &format!("{}/versions", project_path(&project)), None)
                .await
        }
        AddVersion {
            project,
            ver: version,
            file,
            inline,
            revision,
        } => {
            let artifact = match (file, inline) {
                (Some(f), None) => json!({"file": f}),
                (None, Some(i)) => json!({"inline": i}),
                _ => return Err(usage("give --file or --inline")),
            };
            let body = json!({"name": version, "artifact": artifact, "revision": revision});
            api.call(
                "POST",
                &format!("{}/versions", project_path(&project)),
                Some(&body),
            )
            .await
        }
        Gate {
            project,
            ver: version,
            wait,
        } => {
            let vpath = format!("{}/versions/{}", project_path(&project), encode(&version));
            let run = api.call("POST", &format!("{vpath}/gate"), None).await?;
            let Some(secs) = wait else { return Ok(run) };
            let deadline = std::time::Instant::now() + Duration::from_secs(secs);
            loop {
                let v = api.call("GET", &vpath, None).await?;
                let status = v["gate"]["status"].as_str().unwrap_or("");
                if status != "running" || std::time::Instant::now() >= deadline {
                    return Ok(v["gate"].clone());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Version {
            project,
            ver: version,
        } => {
            api.call(
                "GET",
                &format!("{}/versions/{}", project_path(&project), encode(&version)),
                None,
            )
            .await
        }
        Diff {
            project,
            ver: version,
            stage,
        } => {
            let mut path = format!(
                "{}/diff?version={}",
                project_path(&project),
                encode(&version)
            );
            if let Some(s) = stage {
                path.push_str(&format!("&stage={}", encode(&s)));
            }
            api.call("GET", &path, None).await
        }
        Deploy {
            project,
            stage,
            ver: version,
        } => deploy(api, &project, &stage, json!({"version": version})).await,
        Rollback {
            project,
            stage,
            ver: version,
        } => {
            deploy(
                api,
                &project,
                &stage,
                json!({"version": version, "kind": "rollback"}),
            )
            .await
        }
        Restart { project, stage } => {
            deploy(api, &project, &stage, json!({"kind": "restart"})).await
        }
        Plan { stage, versions } => {
            let mut map = serde_json::Map::new();
            for pv in versions {
                let (p, v) = pv
                    .split_once('=')
                    .ok_or_else(|| usage(format!("{pv:?} is not PROJECT=VERSION")))?;
                map.insert(p.to_string(), Json::String(v.to_string()));
            }
            let body = json!({"stage": stage, "versions": map});
            api.call("POST", "/v1/release/plans", Some(&body)).await
        }
        Deployments { project, active } => {
            let mut q = vec![];
            if let Some(p) = project {
                q.push(format!("project={}", encode(&p)));
            }
            if active {
                q.push("active=true".to_string());
            }
            api.call(
                "GET",
                &format!("/v1/release/deployments?{}", q.join("&")),
                None,
            )
            .await
        }
        Deployment { id } => {
            api.call("GET", &format!("/v1/release/deployments/{id}"), None)
                .await
        }
        Approve { id } => action(api, id, "approve").await,
        Pause { id } => action(api, id, "pause").await,
        Resume { id } => action(api, id, "resume").await,
        Cancel { id } => action(api, id, "cancel").await,
        Agents => api.call("GET", "/v1/release/agents", None).await,
    }
}

async fn deploy(
    api: &ApiClient,
    project: &str,
    stage: &str,
    body: Json,
) -> Result<Json, ClientError> {
    let path = format!("{}/stages/{}/deploy", project_path(project), encode(stage));
    api.call("POST", &path, Some(&body)).await
}

async fn action(api: &ApiClient, id: u64, what: &str) -> Result<Json, ClientError> {
    api.call(
        "POST",
        &format!("/v1/release/deployments/{id}/{what}"),
        None,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "furrow", version, propagate_version = true)]
    struct Cli {
        #[command(subcommand)]
        cmd: ReleaseCmd,
    }

    /// clap checks argument names only when a command is built: do it here, with the binary's
    /// `propagate_version` (a positional named `version` would clash with `--version`).
    #[test]
    fn release_cli_is_well_formed() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["furrow", "rollback", "web", "live", "v1"]).unwrap();
        assert!(matches!(c.cmd, ReleaseCmd::Rollback { ref ver, .. } if ver == "v1"));
    }
}
