//! `furrow ctl job ...` (one subcommand per jobs API operation) and `furrow worker` (the worker role).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value as Json;

use super::worker::{Worker, WorkerOptions};
use crate::client::{ApiClient, ClientError, encode};
use crate::error::{ControlError, ErrorCode};

/// Selects a job.
#[derive(Args, Debug, Clone)]
pub struct JobOpts {
    /// The environment.
    #[arg(long)]
    pub env: String,
    /// The job.
    pub job: String,
}

/// `furrow ctl job ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum JobCmd {
    /// List the jobs of an environment (with their next firing time).
    List {
        /// The environment.
        #[arg(long)]
        env: String,
    },
    /// Show a job.
    Show(JobOpts),
    /// Create or replace a job from a JSON definition (see docs/jobs.md).
    Put {
        #[command(flatten)]
        job: JobOpts,
        /// The definition file (JSON); `-` reads stdin.
        #[arg(long)]
        file: String,
    },
    /// Delete a job.
    Delete(JobOpts),
    /// Pause a job (it stops firing).
    Pause(JobOpts),
    /// Resume a paused job.
    Resume(JobOpts),
    /// Fire a job now.
    Trigger(JobOpts),
    /// The runs of a job, newest first.
    Runs {
        #[command(flatten)]
        job: JobOpts,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// One run with its items and their logs.
    Run {
        #[command(flatten)]
        job: JobOpts,
        /// The run's scheduled time (the last part of its id).
        ms: i64,
    },
    /// Stop a running run (kills its processes).
    Stop {
        #[command(flatten)]
        job: JobOpts,
        /// The run's scheduled time.
        ms: i64,
    },
    /// The registered workers.
    Workers,
    /// This node's scheduler counters and firing lateness.
    Stats,
}

fn job_path(j: &JobOpts) -> String {
    format!("/v1/jobs/{}/{}", encode(&j.env), encode(&j.job))
}

/// Runs one `ctl job` command.
pub async fn run_job(api: &ApiClient, cmd: JobCmd) -> Result<Json, ClientError> {
    use JobCmd::*;
    match cmd {
        List { env } => {
            api.call("GET", &format!("/v1/jobs/{}", encode(&env)), None)
                .await
        }
        Show(j) => api.call("GET", &job_path(&j), None).await,
        Put { job, file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
            } else {
                std::fs::read_to_string(&file)
            }
            .map_err(|e| ClientError::Api {
                status: 400,
                error: ControlError::new(ErrorCode::BadRequest, format!("{file}: {e}"))
                    .with_field("file"),
            })?;
            let body: Json = serde_json::from_str(&text).map_err(|e| ClientError::Api {
                status: 400,
                error: ControlError::new(ErrorCode::BadRequest, format!("{file}: {e}"))
                    .with_field("file"),
            })?;
            api.call("PUT", &job_path(&job), Some(&body)).await
        }
        Delete(j) => api.call("DELETE", &job_path(&j), None).await,
        Pause(j) => {
            api.call("POST", &format!("{}/pause", job_path(&j)), None)
                .await
        }
        Resume(j) => {
            api.call("POST", &format!("{}/resume", job_path(&j)), None)
                .await
        }
        Trigger(j) => {
            api.call("POST", &format!("{}/trigger", job_path(&j)), None)
                .await
        }
        Runs { job, limit } => {
            api.call(
                "GET",
                &format!("{}/runs?limit={limit}", job_path(&job)),
                None,
            )
            .await
        }
        Run { job, ms } => {
            api.call("GET", &format!("{}/runs/{ms}", job_path(&job)), None)
                .await
        }
        Stop { job, ms } => {
            api.call("POST", &format!("{}/runs/{ms}/stop", job_path(&job)), None)
                .await
        }
        Workers => api.call("GET", "/v1/jobs/workers", None).await,
        Stats => api.call("GET", "/v1/jobs/stats", None).await,
    }
}

/// `furrow worker`: runs job items for a control service.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// A control node.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// Token (administrator or role `jobs-worker`); also `$FURROW_TOKEN`.
    #[arg(long, env = "FURROW_TOKEN")]
    pub token: Option<String>,
    /// Unique id (default: host name and process id).
    #[arg(long)]
    pub id: Option<String>,
    /// CPU offered, thousandths of a core (default: the machine's cores × 1000).
    #[arg(long)]
    pub cpu_milli: Option<u64>,
    /// Memory offered, MiB (default: the machine's memory).
    #[arg(long)]
    pub mem_mb: Option<u64>,
    /// A label `k=v` jobs can ask for (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// The most items at once.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// On SIGTERM, how long running items may finish before they are killed and handed back, ms.
    #[arg(long, default_value_t = 10_000)]
    pub grace_ms: u64,
    /// Heartbeat period, ms.
    #[arg(long, default_value_t = 1_000)]
    pub beat_ms: u64,
    /// A delegated cgroup v2 directory (memory and cpu controllers, no processes of its own): each shell
    /// item runs in a child cgroup with memory.max and cpu.max from its job's resources. Without it, or
    /// when it cannot be used (the reason is printed at start), RLIMIT_AS limits memory only.
    #[arg(long)]
    pub cgroup: Option<std::path::PathBuf>,
    /// A registry environment: the worker also registers there as an instance of the service
    /// `furrow-worker` (which must exist), so operators can list it and take it offline to drain it.
    #[arg(long)]
    pub registry_env: Option<String>,
}

fn machine_mem_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

/// Runs `furrow worker` until SIGTERM or Ctrl-C, then shuts down gracefully.
pub fn run_worker(args: WorkerArgs) -> ExitCode {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let mut opts = WorkerOptions::new(&args.server, args.token.as_deref(), &id);
    opts.cpu_milli = args.cpu_milli.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u64 * 1000)
            .unwrap_or(1000)
    });
    opts.mem_mb = args.mem_mb.unwrap_or_else(machine_mem_mb);
    for l in &args.labels {
        match l.split_once('=') {
            Some((k, v)) => {
                opts.labels.insert(k.into(), v.into());
            }
            None => {
                eprintln!("furrow worker: --label {l:?}: use k=v");
                return ExitCode::FAILURE;
            }
        }
    }
    opts.slots = args.slots.max(1);
    opts.grace = Duration::from_millis(args.grace_ms);
    opts.beat = Duration::from_millis(args.beat_ms.max(50));
    opts.cgroup = args.cgroup.clone();
    opts.registry_env = args.registry_env.clone();
    opts.registry_ip = host.clone();
    let handle = match Worker::new(opts).start() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("furrow worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("furrow worker {id} serving {}", args.server);
    eprintln!("furrow worker {id}: {}", handle.limits());
    let flag = handle.stop_flag();
    // Signals on a small runtime of their own: SIGTERM/SIGINT set the worker's stop flag.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("furrow worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let f: Arc<std::sync::atomic::AtomicBool> = flag.clone();
    std::thread::spawn(move || {
        rt.block_on(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
            f.store(true, Ordering::SeqCst);
        });
    });
    handle.join();
    eprintln!("furrow worker {id} stopped");
    ExitCode::SUCCESS
}
