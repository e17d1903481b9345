//! Furrow benchmark harness: starts the backends (test kit), Furrow, direct and the peer proxies,
//! drives every target with the same load in the same run, and writes the report
//! (`docs/benchmarks.md`, `docs/benchmarks.svg`, `bench/results/latest.json`).

mod callgrind;
mod control;
mod idle;
mod loads;
mod micro;
mod procfs;
mod profile;
mod report;
mod reshard;
mod sink;
mod suites;
mod syscalls;
mod targets;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// redis-benchmark GET/SET/MGET, pipeline 1 and 16: direct, Furrow, twemproxy, predixy, haproxy.
    Redis,
    /// sysbench OLTP (point select, read only, read write; text and prepared): direct, Furrow, haproxy.
    Mysql,
    /// The harness's own loads: mixed multi-key Redis and sharded MySQL scatter queries.
    Sharding,
    /// Everything the report shows: redis, mysql, sharding, micro and control.
    All,
    /// criterion micro-benchmarks (codec, router), collected into the report.
    Micro,
    /// The config center's measurements (control/tests/perf.rs), collected into the report.
    Control,
    /// Re-render docs/benchmarks.md and the SVG from bench/results/latest.json; runs nothing.
    Report,
}

/// Command-line options.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bench",
    about = "Furrow vs direct vs peer proxies: same load, same run, ratios."
)]
pub struct Opts {
    /// The suite to run.
    #[arg(value_enum)]
    pub suite: Suite,
    /// Seconds per load per target (every run also stops at a hard limit of 4x this + 20 s).
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Redis client connections (redis-benchmark -c, and the mixed load).
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Pipeline depths for the Redis loads.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub pipeline: Vec<usize>,
    /// redis-benchmark tests: get, set, mget (10 keys) or mgetN.
    #[arg(long, value_delimiter = ',', default_value = "set,get,mget")]
    pub redis_tests: Vec<String>,
    /// sysbench tests.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "oltp_point_select,oltp_read_only,oltp_read_write"
    )]
    pub mysql_tests: Vec<String>,
    /// sysbench protocols: text, prepared.
    #[arg(long, value_delimiter = ',', default_value = "text,prepared")]
    pub protocols: Vec<String>,
    /// MySQL client threads (sysbench --threads, and the scatter load).
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Furrow executors (data-path threads).
    #[arg(long, default_value_t = 1)]
    pub executors: usize,
    /// Targets to run: direct, furrow, furrow-2exec (redis and mysql suites: a second Furrow with
    /// two executors, for Redis P16 and the MySQL point select only), twemproxy, predixy (Redis
    /// suites; built from source by `bench/peers/build.sh predixy`, "not measured" when absent),
    /// haproxy, haproxy-2thr (haproxy with 2 threads, on furrow-2exec's loads), client-shards; and,
    /// not run unless named: furrow-tls (redis and mysql suites: a
    /// second Furrow with TLS on its listener, the clients using TLS), furrow-traced and
    /// furrow-traced-1pct (redis and mysql suites: a second Furrow with `[tracing]` at 100 % or
    /// 1 % head sampling, exporting to a `furrow control` the harness starts).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,furrow,furrow-2exec,twemproxy,predixy,haproxy,haproxy-2thr,client-shards"
    )]
    pub targets: Vec<String>,
    /// Upper bound on requests per load per target (redis-benchmark -n is sized from a
    /// calibration on direct to last --duration seconds, capped by this).
    #[arg(long, default_value_t = 20_000_000)]
    pub max_requests: u64,
    /// sysbench tables and rows per table.
    #[arg(long, default_value_t = 4)]
    pub tables: u32,
    /// Rows per sysbench table.
    #[arg(long, default_value_t = 10_000)]
    pub table_size: u32,
    /// Rows of the sharding data set.
    #[arg(long, default_value_t = 20_000)]
    pub shard_rows: u64,
    /// Rows of the table the sharding suite's reshard rows reshard (`rs_items`): enough that the
    /// copy outlasts two loads of --duration (the report's notes say whether it did).
    #[arg(long, default_value_t = 200_000)]
    pub reshard_rows: u64,
    /// The furrow binary; default: build it with `cargo build --release --bin furrow` and use
    /// target/release/furrow.
    #[arg(long)]
    pub furrow_bin: Option<PathBuf>,
    /// The predixy binary; default: the one `bench/peers/build.sh predixy` built
    /// (`$FURROW_PEERS_DIR/bin/predixy`, by default under ~/.cache/furrow-bench/peers), else
    /// `predixy` in `$PATH`.
    #[arg(long)]
    pub predixy_bin: Option<PathBuf>,
    /// Record a perf profile of Furrow during each of its loads (docs/profiles/*.txt).
    #[arg(long)]
    pub perf: bool,
    /// Run Furrow under valgrind's callgrind and count its user-space instructions per request
    /// during each of its loads (bench/src/callgrind.rs); writes docs/profiles/instructions.md
    /// and not the report (timings under valgrind are meaningless). Bound the loads with
    /// --max-requests.
    #[arg(long)]
    pub callgrind: bool,
    /// Niceness of the span collector the traced targets (`furrow-traced`, `furrow-traced-1pct`)
    /// export to. At 0 (the default) it competes for the cores with the load, the backends and the
    /// proxy, so their throughput also pays for the collector's ingest; at 19 it runs on spare CPU
    /// only, as a collector on its own machine would, and the rows show the proxy's own cost.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub collector_nice: i32,
    /// What the traced targets export to: `control` (a `furrow control` that ingests, samples and
    /// stores every span, on the same cores) or `sink` (the harness reads each export and answers
    /// 200, decoding nothing: the proxy's own cost of tracing, as where the collector has its own
    /// machine; bench/src/sink.rs).
    #[arg(long, default_value = "control", value_parser = ["control", "sink"])]
    pub collector: String,
    /// Idle Redis client connections opened together at the end of the `redis` suite to measure
    /// memory per connection of each proxy (0: skip).
    #[arg(long, default_value_t = 5000)]
    pub idle_redis: usize,
    /// Logged-in MySQL client connections opened together at the end of the `mysql` suite (0: skip).
    #[arg(long, default_value_t = 2000)]
    pub idle_mysql: usize,
    /// Runs of each closed-loop load (redis and mysql suites): every target runs it this many
    /// times, the targets' order reversed every other round, and the report gives each target's
    /// medians (throughput, each latency percentile and each CPU figure its own median). On a
    /// shared VM one run's ratios move by ±10 %; alternated rounds take the drift out of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Do not count syscalls per request (by default `perf stat -e raw_syscalls:sys_enter -p PID`
    /// runs around each load where perf can count; the counting tracepoint costs each syscall a
    /// little, the same for every target).
    #[arg(long)]
    pub no_syscalls: bool,
    /// Print the report only; write no files.
    #[arg(long)]
    pub no_write: bool,
    /// For `micro`: criterion measurement seconds per bench.
    #[arg(long, default_value_t = 2)]
    pub micro_time: u64,
    /// For `micro`: full criterion sampling instead of its `--quick` mode.
    #[arg(long)]
    pub micro_full: bool,
}

impl Opts {
    /// Whether target `name` was selected.
    pub fn wants(&self, name: &str) -> bool {
        self.targets.iter().any(|t| t == name)
    }

    /// The command line that reproduces this run.
    pub fn command_line() -> String {
        let args: Vec<String> = std::env::args().skip(1).collect();
        format!("cargo run --release -p bench -- {}", args.join(" "))
    }
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    let root = workspace_root();
    let json_path = root.join("bench/results/latest.json");
    let mut report: report::Report = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let suites: Vec<Suite> = match opts.suite {
        Suite::All => vec![
            Suite::Redis,
            Suite::Mysql,
            Suite::Sharding,
            Suite::Micro,
            Suite::Control,
        ],
        s => vec![s],
    };
    for s in suites {
        let result = match s {
            Suite::Redis => suites::redis(&opts, &mut report),
            Suite::Mysql => suites::mysql(&opts, &mut report),
            Suite::Sharding => suites::sharding(&opts, &mut report),
            Suite::Micro => micro::run(&opts, &mut report),
            Suite::Control => {
                report.control = Some(control::run(&opts));
                Ok(())
            }
            Suite::All | Suite::Report => Ok(()),
        };
        if let Err(e) = result {
            eprintln!("bench: suite {s:?} failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    let regenerate = "cargo run --release -p bench -- all --duration 10";
    let analysis = std::fs::read_to_string(root.join("bench/analysis.md")).unwrap_or_default();
    let md = report::with_analysis(report::markdown(&report, regenerate), &analysis);
    for s in report.suites.values() {
        println!("## {} ({})\n\n{}", s.suite, s.date, report::suite_table(s));
        if !s.idle.is_empty() {
            println!("{}", idle::table(&s.idle));
        }
    }
    if opts.suite == Suite::Micro
        && let Some(m) = &report.micro
    {
        for b in &m.benches {
            println!("{:60} {:>12}", b.id, report::fmt_ns(b.mean_ns));
        }
    }
    if opts.callgrind {
        let counts = callgrind::take();
        let md = callgrind::markdown(&counts, &Opts::command_line(), &report::now());
        println!("{md}");
        if !opts.no_write {
            let path = root.join("docs/profiles/instructions.md");
            let _ = std::fs::create_dir_all(root.join("docs/profiles"));
            match std::fs::write(&path, md) {
                Ok(()) => eprintln!("bench: wrote {}", path.display()),
                Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
            }
        }
        return ExitCode::SUCCESS;
    }
    if !opts.no_write {
        let write = |path: PathBuf, text: String| {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::write(&path, text) {
                Ok(()) => eprintln!("bench: wrote {}", path.display()),
                Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
            }
        };
        write(
            json_path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        );
        write(root.join("docs/benchmarks.md"), md);
        write(root.join("docs/benchmarks.svg"), report::svg(&report));
    }
    ExitCode::SUCCESS
}
