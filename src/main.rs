//! The `furrow` executable: one binary whose subcommands are the roles.
//!
//! - `furrow proxy --config FILE`: every listener the file defines, on thread-per-core executors, plus the
//!   admin port and `/metrics`.
//! - `furrow check-config FILE...`: validate, print every problem with file:line:column, exit 1 on error.
//! - `furrow sandbox`: real local backends (Redis, MariaDB primary + replicas, shard servers) and the
//!   proxies in front of them, for trying Furrow out.
//! - `furrow hash-password`: the password hashes that `[users.*]` entries store.
//! - `furrow control`: the configuration center (HTTP API on its own multi-threaded runtime).
//! - `furrow ctl config ...`: a command-line client for every configuration-center operation.
//! - `furrow worker`: runs job items for the control service's scheduler (docs/jobs.md).
//! - `furrow agent`: the release service's deployment agent on a host (`control::release::agent`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod advice;
mod cache_insight;
mod config_store;
mod health;
mod logging;
mod metrics;
mod proxy;
mod registry;
mod reshard;
mod reshard_peer;
mod sandbox;
mod slots;
mod threads;
mod upgrade;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lazy arena commit for mimalloc, set before anything allocates (an ELF constructor runs before
/// Rust's `main` and its runtime's first allocation): freed memory then leaves the resident set
/// (`runtime::memory::tune_allocator`).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_ALLOCATOR: extern "C" fn() = runtime::memory::tune_allocator;

/// Furrow: thread-per-core MySQL and Redis proxies with control services.
#[derive(Parser)]
#[command(name = "furrow", version, about, propagate_version = true)]
struct Cli {
    /// Log level or filter (e.g. `info`, `debug`, `proxy_redis=trace`); also read from FURROW_LOG.
    #[arg(long, global = true, env = "FURROW_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    /// Append logs to this file instead of stderr; SIGUSR1 reopens it (log rotation).
    #[arg(long, global = true, env = "FURROW_LOG_FILE")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxies defined in a config file.
    Proxy(proxy::ProxyArgs),
    /// Validate config files; prints every problem with its position, exits 1 if any file is invalid.
    CheckConfig {
        /// Config files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also connect to the servers: every shard's schema must exist on its group's primary.
        #[arg(long)]
        connect: bool,
    },
    /// Start local Redis and MariaDB servers and Furrow in front of them, for trying it out.
    Sandbox(sandbox::SandboxArgs),
    /// Run the configuration center (HTTP/JSON API, SQLite or MariaDB store, long-poll push).
    Control(control::cli::ControlArgs),
    /// Configuration-center client: every API operation from the command line.
    Ctl(control::cli::CtlArgs),
    /// Run job items for the control service (shell, HTTP, SQL and Redis on every shard).
    Worker(control::jobs::cli::WorkerArgs),
    /// Deployment agent: runs the release service's assignments on this host.
    Agent(control::release::agent::AgentArgs),
    /// Redis slot migration through a running proxy's admin port: `SLOTS` SHOW, PLAN, MIGRATE,
    /// REBALANCE, STOP (e.g. `furrow slots --admin 127.0.0.1:7000 plan cache -r3`).
    Slots {
        /// The proxy's admin port (`[proxy] admin`).
        #[arg(long)]
        admin: String,
        /// The subcommand and its arguments, as after `SLOTS` on the admin port. The admin
        /// password, when one is set, is read from `FURROW_ADMIN_PASSWORD`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Print the hashes to store in a `[users.NAME]` entry for a password (read from stdin if omitted).
    HashPassword {
        /// The password (prefer stdin: command lines end up in shell history).
        password: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log, cli.log_json, cli.log_file.as_deref());
    if cli.log_file.is_some() && !matches!(cli.command, Command::Proxy(_)) {
        logging::reopen_on_sigusr1();
    }
    match cli.command {
        Command::Proxy(args) => proxy::run(args),
        Command::CheckConfig { files, connect } => check_config(&files, connect),
        Command::Sandbox(args) => sandbox::run(args),
        Command::HashPassword { password } => hash_password(password),
        Command::Slots { admin, words } => {
            let password = std::env::var("FURROW_ADMIN_PASSWORD").ok();
            match slots::cli(&admin, password.as_deref(), &words) {
                Ok(text) => {
                    print!("{text}");
                    if !text.ends_with('\n') {
                        println!();
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("furrow slots: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Control(args) => control::cli::run_control(args),
        Command::Ctl(args) => control::cli::run_ctl(args),
        Command::Worker(args) => control::jobs::cli::run_worker(args),
        Command::Agent(args) => control::release::agent::run(args),
    }
}

fn check_config(files: &[PathBuf], connect: bool) -> ExitCode {
    let mut ok = true;
    for f in files {
        match router::config::load(f) {
            Ok(c) => {
                if connect {
                    let problems = shard_schema_problems(&c);
                    if !problems.is_empty() {
                        for p in &problems {
                            eprintln!("{}: {p}", f.display());
                        }
                        ok = false;
                        continue;
                    }
                }
                println!(
                    "{}: ok ({} listeners, {} redis groups, {} mysql groups, {} users)",
                    f.display(),
                    c.listeners.len(),
                    c.redis_groups.len(),
                    c.mysql_groups.len(),
                    c.users.len()
                )
            }
            Err(e) => {
                eprintln!("{e}");
                let n = e.problems.len();
                eprintln!(
                    "{}: {n} problem{}",
                    f.display(),
                    if n == 1 { "" } else { "s" }
                );
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `check-config --connect`: the shards whose schema is missing on their server (or whose server
/// cannot be asked).
fn shard_schema_problems(c: &router::config::Config) -> Vec<String> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(proxy_mysql::shard::check_shard_schemas(c)),
        Err(e) => vec![format!("cannot start a runtime to connect: {e}")],
    }
}

fn hash_password(password: Option<String>) -> ExitCode {
    let password = match password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("cannot read the password from stdin: {e}");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let (native, sha256) = password_hashes(&password);
    println!("password_native = \"{native}\"");
    println!("password_sha256 = \"{sha256}\"");
    ExitCode::SUCCESS
}

/// The two stored forms of a password: `*HEX(SHA1(SHA1(pw)))` and `hex(SHA256(SHA256(pw)))`.
fn password_hashes(password: &str) -> (String, String) {
    use sha1::Digest as _;
    let s1 = sha1::Sha1::digest(sha1::Sha1::digest(password.as_bytes()));
    let s2 = sha2::Sha256::digest(sha2::Sha256::digest(password.as_bytes()));
    let native = format!("*{}", hex(&s1).to_ascii_uppercase());
    (native, hex(&s2))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn password_hashes_match_mysql_and_the_example() {
        // MySQL's PASSWORD('app-secret'), as in examples/furrow.toml.
        let (native, sha) = super::password_hashes("app-secret");
        assert_eq!(native, "*6C7A370C07660BC788681B3238D93E08BD74303C");
        assert_eq!(
            sha,
            "07a99d33e023ea491bc3f7b999efcfb76c32ff9abe1cf29ff3c5ee8b85ea015d"
        );
    }
}
