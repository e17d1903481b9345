//! `sysbench` OLTP runs: command lines and parsing of the report and its latency histogram.

use super::LoadRun;
use super::histogram::percentile_of_pairs;

/// Parameters of one sysbench run.
#[derive(Debug, Clone)]
pub struct SbParams {
    /// The Lua test: `oltp_point_select`, `oltp_read_only`, `oltp_read_write`.
    pub test: String,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// User and password.
    pub user: String,
    /// Password.
    pub password: String,
    /// Schema holding the sbtest tables.
    pub db: String,
    /// Number of tables.
    pub tables: u32,
    /// Rows per table.
    pub table_size: u32,
    /// Client threads.
    pub threads: usize,
    /// Seconds (`--time`).
    pub seconds: u64,
    /// Server-side prepared statements (`--db-ps-mode=auto`) or text protocol (`disable`).
    pub prepared: bool,
    /// TLS (`--mysql-ssl=on`), for a TLS listener.
    pub ssl: bool,
}

/// Arguments (without the program) for `sysbench TEST ... COMMAND` (`prepare`, `run`, `cleanup`).
pub fn args(p: &SbParams, command: &str) -> Vec<String> {
    vec![
        p.test.clone(),
        "--db-driver=mysql".into(),
        "--mysql-host=127.0.0.1".into(),
        format!("--mysql-port={}", p.port),
        format!("--mysql-user={}", p.user),
        format!("--mysql-password={}", p.password),
        format!("--mysql-db={}", p.db),
        format!("--mysql-ssl={}", if p.ssl { "on" } else { "off" }),
        format!("--tables={}", p.tables),
        format!("--table-size={}", p.table_size),
        format!("--threads={}", p.threads),
        format!("--time={}", p.seconds),
        "--events=0".into(),
        "--rand-type=uniform".into(),
        "--histogram=on".into(),
        format!(
            "--db-ps-mode={}",
            if p.prepared { "auto" } else { "disable" }
        ),
        command.into(),
    ]
}

/// Parses a `sysbench ... run` report. Throughput is in queries per second; latency percentiles
/// (per event, i.e. per transaction) come from the `--histogram` section.
pub fn parse(text: &str) -> Option<LoadRun> {
    let mut run = LoadRun::default();
    let mut pairs: Vec<(f64, u64)> = Vec::new();
    let mut in_hist = false;
    let mut have_queries = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Latency histogram") {
            in_hist = true;
            continue;
        }
        if in_hist {
            if line.starts_with("value") {
                continue;
            }
            match histogram_line(line) {
                Some(p) => pairs.push(p),
                None if !line.is_empty() => in_hist = false,
                None => {}
            }
        }
        if let Some(rest) = line.strip_prefix("queries:") {
            // "160000 (15975.16 per sec.)"
            let mut it = rest.split_whitespace();
            run.requests = it.next()?.parse().ok()?;
            run.throughput = it.next()?.trim_start_matches('(').parse().ok()?;
            have_queries = true;
        }
        if let Some(rest) = line.strip_prefix("total time:") {
            run.seconds = rest.trim().trim_end_matches('s').parse().ok()?;
        }
        if let Some(rest) = line.strip_prefix("ignored errors:") {
            run.errors = rest.split_whitespace().next()?.parse().ok()?;
        }
    }
    if !have_queries || run.requests == 0 {
        return None;
    }
    run.p50_ms = percentile_of_pairs(&pairs, 50.0);
    run.p99_ms = percentile_of_pairs(&pairs, 99.0);
    run.p999_ms = percentile_of_pairs(&pairs, 99.9);
    Some(run)
}

/// `"0.086 |****      12"` → (0.086, 12).
fn histogram_line(line: &str) -> Option<(f64, u64)> {
    let (value, rest) = line.split_once('|')?;
    let count = rest.split_whitespace().last()?.parse().ok()?;
    Some((value.trim().parse().ok()?, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "sysbench 1.0.20 (using system LuaJIT 2.1.0-beta3)\n\
Running the test with following options:\n\
Number of threads: 8\n\
\n\
Latency histogram (values are in milliseconds)\n\
       value  ------------- distribution ------------- count\n\
       0.086 |*                                        400\n\
       0.101 |**************************************** 500\n\
       0.300 |***                                      90\n\
       1.000 |*                                        9\n\
      12.000 |*                                        1\n\
 \n\
SQL statistics:\n\
    queries performed:\n\
        read:                            1000\n\
        write:                           0\n\
        other:                           0\n\
        total:                           1000\n\
    transactions:                        1000   (99.80 per sec.)\n\
    queries:                             1000   (99.80 per sec.)\n\
    ignored errors:                      2      (0.00 per sec.)\n\
    reconnects:                          0      (0.00 per sec.)\n\
\n\
General statistics:\n\
    total time:                          10.0142s\n\
    total number of events:              1000\n";

    #[test]
    fn parses_report_and_histogram() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.requests, 1000);
        assert!((r.throughput - 99.80).abs() < 1e-9);
        assert!((r.seconds - 10.0142).abs() < 1e-9);
        assert_eq!(r.errors, 2);
        assert_eq!(r.p50_ms, Some(0.101));
        // 400 + 500 + 90 = 990 events at or below 0.300 ms: exactly the 99th percentile.
        assert_eq!(r.p99_ms, Some(0.3));
        assert_eq!(r.p999_ms, Some(1.0));
    }

    #[test]
    fn fatal_output_is_none() {
        let t =
            "FATAL: unable to connect to MySQL server on host '127.0.0.1', port 1, aborting...\n";
        assert!(parse(t).is_none());
    }

    #[test]
    fn args_select_protocol() {
        let mut p = SbParams {
            test: "oltp_point_select".into(),
            port: 3306,
            user: "u".into(),
            password: "p".into(),
            db: "sbtest".into(),
            tables: 4,
            table_size: 1000,
            threads: 8,
            seconds: 5,
            prepared: false,
            ssl: false,
        };
        assert!(args(&p, "run").contains(&"--db-ps-mode=disable".to_string()));
        p.prepared = true;
        let a = args(&p, "run");
        assert!(a.contains(&"--db-ps-mode=auto".to_string()));
        assert_eq!(a.first().map(String::as_str), Some("oltp_point_select"));
        assert_eq!(a.last().map(String::as_str), Some("run"));
    }
}
