//! The `sharding` suite's reshard rows (issue #24): copy throughput (rows/s, MB/s), the
//! cut-over's write pause, and what a running copy costs ordinary statements — point selects on
//! the table being resharded (`rs_items`, `--reshard-rows` rows, 4 -> 8 hash partitions) and on
//! another table of the same section (the suite's `items`), each measured without a reshard and
//! with the copy running, on the same Furrow in the same run. The reshard is driven
//! over Furrow's admin port (`RESHARD PLAN/START/STATUS/ABORT`, docs/sharding.md) and aborted at
//! the end (the old layout keeps serving).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::loads::gen_mysql::{self, ShardQuery};
use crate::loads::mysql_client::MyConn;
use crate::report::{Measurement, SuiteReport};
use crate::syscalls::admin_command;

/// What the sharding suite's config adds to `[sharding.bench]` for these rows: the table to
/// reshard (4 partitions, one per shard) and its new layout (8 partitions over the 4 shards).
pub const TABLES: &str = "[[sharding.bench.tables]]\nname = \"rs_items\"\nkey = \"id\"\nalgorithm = \"hash\"\n\n\
     [[sharding.bench.tables]]\nname = \"rs_items_v2\"\nkey = \"id\"\nalgorithm = \"hash\"\nphysical = \"rs_items_v2_{0..7}\"\n\n";

/// Rows per copy batch.
const BATCH: &str = "500";

/// `gen_mysql::SCHEMA` for table `name`.
fn schema(name: &str) -> String {
    gen_mysql::SCHEMA.replacen(" items ", &format!(" {name} "), 1)
}

/// One field of `RESHARD STATUS`.
fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
}

/// Creates `rs_items` (`rows` rows, as `items` has them) and `rs_items_v2` (empty) through Furrow.
pub fn prepare(addr: SocketAddr, user: &str, password: &str, rows: u64) -> Result<(), String> {
    let mut c = MyConn::connect(addr, user, password, None).map_err(|e| e.to_string())?;
    for t in ["rs_items", "rs_items_v2"] {
        c.query(&schema(t))
            .map_err(|e| format!("create {t}: {e}"))?;
    }
    for stmt in gen_mysql::insert_statements(rows, |_| true) {
        let stmt = stmt.replacen("INSERT INTO items ", "INSERT INTO rs_items ", 1);
        c.query(&stmt).map_err(|e| format!("load rs_items: {e}"))?;
    }
    Ok(())
}

/// The reshard's figures, read from `RESHARD STATUS` and `RESHARD PLAN`.
#[derive(Debug, Default)]
pub struct Figures {
    /// Rows of the old layout (the plan's estimate).
    pub plan_rows: u64,
    /// The rows' bytes: the sum of every column's length as text (the plan's `DATA_LENGTH`
    /// estimate is stale right after a load).
    pub bytes: u64,
    /// Rows counted with those bytes.
    pub counted_rows: u64,
    /// Rows copied and rows per second of copy time.
    pub rows: u64,
    /// Rows/s.
    pub rows_per_s: f64,
    /// The cut-over line (pause in ms and its parts).
    pub cutover: String,
    /// The last verify line.
    pub verify: String,
    /// For each measured load: whether the copy was still running when it ended.
    pub copy_outlasted: Vec<(String, bool)>,
}

/// `~N rows ~B bytes` of the plan's total line.
fn plan_totals(plan: &str) -> (u64, u64) {
    let line = plan.lines().find(|l| l.starts_with("total")).unwrap_or("");
    let num = |unit: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[1].starts_with(unit))
            .and_then(|w| w[0].trim_start_matches('~').parse().ok())
            .unwrap_or(0)
    };
    (num("rows"), num("bytes"))
}

/// Runs the reshard rows: `measure(load, query, rows)` measures one point-select load on Furrow
/// (the suite's `measure` with its target and pids; `rows`: the table's key space). Loads: each query without a reshard, then
/// `RESHARD START`, each query again while the copy runs; then the cut-over is awaited, its pause
/// read, and the reshard aborted.
pub fn run(
    admin: SocketAddr,
    addr: SocketAddr,
    user: &str,
    password: &str,
    duration: u64,
    suite: &mut SuiteReport,
    mut measure: impl FnMut(&str, ShardQuery) -> Measurement,
) -> Result<Figures, String> {
    let mut f = Figures::default();
    let plan = admin_command(
        admin,
        &["RESHARD", "PLAN", "bench", "rs_items", "rs_items_v2"],
    )?;
    f.plan_rows = plan_totals(&plan).0;
    let mut c = MyConn::connect(addr, user, password, None).map_err(|e| e.to_string())?;
    let r = c
        .query(
            "SELECT COUNT(*), SUM(LENGTH(id) + LENGTH(grp) + LENGTH(score) + LENGTH(name)) FROM rs_items",
        )
        .map_err(|e| format!("sizing rs_items: {e}"))?;
    let cell = |i: usize| {
        r.first()
            .and_then(|row| row.get(i).cloned().flatten())
            .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok())
            .unwrap_or(0)
    };
    (f.counted_rows, f.bytes) = (cell(0), cell(1));
    let loads = [
        ("same table", ShardQuery::PointResharded),
        ("another table", ShardQuery::Point),
    ];
    for (what, q) in loads {
        let m = measure(&format!("reshard: point select, {what}, no reshard"), q);
        suite.measurements.push(m);
    }
    suite.commands.push(format!(
        "# reshard: point selects on rs_items (same table) and items (another table), then admin \
         `RESHARD START bench rs_items rs_items_v2 BATCH {BATCH}` (4 -> 8 hash partitions), the point \
         selects again while it copies, the cut-over awaited, `RESHARD ABORT`"
    ));
    admin_command(
        admin,
        &[
            "RESHARD",
            "START",
            "bench",
            "rs_items",
            "rs_items_v2",
            "BATCH",
            BATCH,
        ],
    )?;
    for (what, q) in loads {
        let load = format!("reshard: point select, {what}, copy running");
        let m = measure(&load, q);
        suite.measurements.push(m);
        let st = admin_command(admin, &["RESHARD", "STATUS"])?;
        f.copy_outlasted
            .push((what.to_string(), field(&st, "phase") == "Copying"));
    }
    // The copy goes on to the cut-over: at most 20 times the load time, then it is left.
    let deadline = Instant::now() + Duration::from_secs(20 * duration.max(1) + 60);
    let st = loop {
        let st = admin_command(admin, &["RESHARD", "STATUS"])?;
        if field(&st, "phase") == "CutOver" || st.contains("failed:") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = admin_command(admin, &["RESHARD", "ABORT"]);
            return Err(format!("no cut-over in time:\n{st}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    f.rows = field(&st, "rows copied").parse().unwrap_or(0);
    f.rows_per_s = field(&st, "rows/s").parse().unwrap_or(0.0);
    f.cutover = field(&st, "cut-over pause").to_string();
    f.verify = field(&st, "last verify").to_string();
    let _ = admin_command(admin, &["RESHARD", "ABORT"]);
    if st.contains("failed:") {
        return Err(format!("the reshard failed:\n{st}"));
    }
    Ok(f)
}

/// The note for the report: copy rate, pause, and the running copy's cost on each load (from the
/// measurements of this run).
pub fn note(f: &Figures, measurements: &[Measurement]) -> String {
    let bytes_per_row = if f.counted_rows > 0 {
        f.bytes as f64 / f.counted_rows as f64
    } else {
        0.0
    };
    let mut s = format!(
        "Reshard of `rs_items` (4 -> 8 hash partitions, batches of {BATCH} rows; {} rows, {} bytes as text, \
         `RESHARD PLAN` estimated ~{} rows): copy {:.0} rows/s, {:.2} MB/s (rows/s x bytes per row), {} rows \
         copied; cut-over pause {}; verify under the pause: {}.",
        f.counted_rows,
        f.bytes,
        f.plan_rows,
        f.rows_per_s,
        f.rows_per_s * bytes_per_row / 1e6,
        f.rows,
        f.cutover,
        f.verify
    );
    for (what, outlasted) in &f.copy_outlasted {
        let find = |suffix: &str| {
            measurements.iter().find(|m| {
                m.load == format!("reshard: point select, {what}, {suffix}") && m.error.is_none()
            })
        };
        let (Some(a), Some(b)) = (find("no reshard"), find("copy running")) else {
            continue;
        };
        let pct = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if x > 0.0 => format!("{:+.1} %", (y / x - 1.0) * 100.0),
            _ => "-".into(),
        };
        s.push_str(&format!(
            " Point select on {what} while copying: throughput {}, p50 {}, p99 {}, Furrow CPU/req {} \
             (the copier's CPU included; goal for the statement cost: < 10 %){}.",
            pct(Some(a.throughput), Some(b.throughput)),
            pct(a.p50_ms, b.p50_ms),
            pct(a.p99_ms, b.p99_ms),
            pct(a.target_cpu_us, b.target_cpu_us),
            if *outlasted {
                ""
            } else {
                "; the copy ended before this load did: raise --reshard-rows"
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_plan_totals_and_names_the_schema() {
        let plan = "reshard plan for `items`: 4 -> 8 partitions\n  p0 ...\ntotal ~100000 rows ~5275648 bytes; estimated copy 0.6 s at 8388608 bytes/s\n";
        assert_eq!(plan_totals(plan), (100_000, 5_275_648));
        assert_eq!(plan_totals("nothing"), (0, 0));
        assert!(schema("rs_items").starts_with("CREATE TABLE IF NOT EXISTS rs_items (id"));
    }
}
