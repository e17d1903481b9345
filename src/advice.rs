//! The admin port's `INDEX ADVICE [n]`: for the top `n` MySQL digests by total time, `EXPLAIN`
//! their sample statement on a server of their group (a replica when the group has one), read the
//! tables' columns, indexes and row estimates from `information_schema`, and propose an index for
//! every table the server reads in full (router's `sql::advice` decides the columns), unless an
//! existing index already has them.
//!
//! Off the data path and bounded: it runs on a blocking thread of the admin runtime, one run at a
//! time and at least [`MIN_INTERVAL`] apart (a second caller waits), over one short-lived
//! connection per server with [`CONNECT_TIMEOUT`], every statement under the server's
//! `max_statement_time` of [`STATEMENT_SECONDS`], and at most [`MAX_DIGESTS`] digests a run.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use control::mysql::{Conn, MysqlUrl};
use proxy_mysql::{DigestSample, DigestStats};
use router::config::{Config, MysqlGroup};
use router::sql::advice::{self, Analysis};

/// Most digests one run looks at.
pub const MAX_DIGESTS: usize = 20;
/// Shortest time between the starts of two runs.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Connect timeout towards a server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// `max_statement_time` set on the advice connection (seconds).
pub const STATEMENT_SECONDS: u32 = 2;
/// Rows read to estimate how many rows an index key selects.
pub const ESTIMATE_SAMPLE_ROWS: u64 = 100_000;

static LAST_RUN: Mutex<Option<Instant>> = Mutex::new(None);

/// One line of advice (or of why there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The digest's hash.
    pub digest: u64,
    /// `schema.table` (empty when the whole digest is not advised).
    pub table: String,
    /// `EXPLAIN`'s access type for the table (`ALL`, `ref`, ...).
    pub access: String,
    /// `EXPLAIN`'s rows estimate now.
    pub rows_before: Option<u64>,
    /// Estimated rows read with the proposed index.
    pub rows_after: Option<u64>,
    /// The `ALTER TABLE` to run, or why nothing is proposed.
    pub advice: String,
}

/// Runs the advice for the top `n` digests by total time and renders it as the admin port's table.
pub fn run(config: &Config, mut digests: Vec<DigestStats>, n: usize) -> String {
    {
        // One run at a time (the lock is held for the whole run), spaced by MIN_INTERVAL.
        let mut last = LAST_RUN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = *last {
            std::thread::sleep(MIN_INTERVAL.saturating_sub(at.elapsed()));
        }
        *last = Some(Instant::now());
        digests.sort_by_key(|d| std::cmp::Reverse(d.total_us));
        digests.truncate(n.min(MAX_DIGESTS));
        let mut lines = Vec::new();
        for d in &digests {
            lines.extend(for_digest(config, d));
        }
        render(&digests, &lines)
    }
}

fn render(digests: &[DigestStats], lines: &[Line]) -> String {
    let mut s = format!(
        "# advice\n{:<18} {:<32} {:<8} {:>12} {:>12}  ADVICE\n",
        "HASH", "TABLE", "ACCESS", "ROWS_BEFORE", "ROWS_AFTER"
    );
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for l in lines {
        let _ = writeln!(
            s,
            "{:<18x} {:<32} {:<8} {:>12} {:>12}  {}",
            l.digest,
            if l.table.is_empty() { "-" } else { &l.table },
            if l.access.is_empty() { "-" } else { &l.access },
            opt(l.rows_before),
            opt(l.rows_after),
            l.advice
        );
    }
    let _ = writeln!(
        s,
        "\n# digests\n{:<18} {:>10} {:>14}  DIGEST",
        "HASH", "COUNT", "TOTAL_US"
    );
    for d in digests {
        let _ = writeln!(
            s,
            "{:<18x} {:>10} {:>14}  {}",
            d.hash, d.count, d.total_us, d.text
        );
    }
    s
}

fn whole(d: &DigestStats, why: impl Into<String>) -> Line {
    Line {
        digest: d.hash,
        table: String::new(),
        access: String::new(),
        rows_before: None,
        rows_after: None,
        advice: why.into(),
    }
}

fn for_digest(config: &Config, d: &DigestStats) -> Vec<Line> {
    let Some(sample) = d.sample.as_deref() else {
        return vec![whole(d, "no sample statement")];
    };
    if sample.sharded {
        return vec![whole(
            d,
            "not advised: sharded listener (its tables are logical; EXPLAIN each shard directly)",
        )];
    }
    if sample.cut {
        return vec![whole(
            d,
            "not advised: the sample statement was cut at 4 KiB",
        )];
    }
    let analysis = match advice::analyze(&sample.sql) {
        Ok(a) => a,
        Err(e) => return vec![whole(d, e.to_string())],
    };
    let Some(g) = config.mysql_group(&sample.group) else {
        return vec![whole(
            d,
            format!("group '{}' is no longer configured", sample.group),
        )];
    };
    match explain_and_advise(g, sample, &analysis, d) {
        Ok(lines) if lines.is_empty() => vec![whole(d, "no table is read in full")],
        Ok(lines) => lines,
        Err(e) => vec![whole(d, format!("error: {e}"))],
    }
}

/// Connects to the group's first replica, else its primary.
fn connect(g: &MysqlGroup) -> Result<(Conn, String), String> {
    let mut last = String::from("no server");
    for s in g.replicas.iter().chain(std::iter::once(&g.primary)) {
        let addr = match std::net::ToSocketAddrs::to_socket_addrs(&s.address)
            .ok()
            .and_then(|mut a| a.next())
        {
            Some(a) => a,
            None => {
                last = format!("{}: cannot resolve {}", s.name, s.address);
                continue;
            }
        };
        let url = MysqlUrl {
            user: g.user.clone(),
            password: g.password.clone(),
            addr: addr.to_string(),
            database: String::new(),
        };
        match Conn::connect(&url, CONNECT_TIMEOUT) {
            Ok(mut c) => {
                // MariaDB's per-statement time limit; MySQL has no such variable (its
                // max_execution_time covers SELECT only): then the socket timeouts bound it.
                let _ = c.query(&format!(
                    "SET SESSION max_statement_time = {STATEMENT_SECONDS}"
                ));
                return Ok((c, s.name.clone()));
            }
            Err(e) => last = format!("{}: {e}", s.name),
        }
    }
    Err(last)
}

/// Identifiers are passed to the server only when plain (letters, digits, `_`, `$`).
fn plain(id: &str) -> Option<&str> {
    (!id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$'))
    .then_some(id)
}

fn text(cell: &Option<bytes::Bytes>) -> String {
    cell.as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// One table of the statement, as the server knows it.
#[derive(Default)]
struct TableInfo {
    schema: String,
    name: String,
    columns: Vec<String>,
    indexes: Vec<(String, Vec<String>)>,
    rows: Option<u64>,
}

fn explain_and_advise(
    g: &MysqlGroup,
    sample: &DigestSample,
    a: &Analysis,
    d: &DigestStats,
) -> Result<Vec<Line>, String> {
    let (mut conn, server) = connect(g)?;
    if let Some(db) = &sample.schema {
        let db = plain(db).ok_or_else(|| format!("schema name {db:?} is not plain"))?;
        conn.query(&format!("USE `{db}`"))
            .map_err(|e| format!("{server}: USE {db}: {e}"))?;
    }
    // Schema and statistics of every table the statement names.
    let mut infos = Vec::with_capacity(a.tables.len());
    for t in &a.tables {
        let schema = t
            .schema
            .as_deref()
            .or(sample.schema.as_deref())
            .ok_or("no schema: the statement names none and the session had none")?;
        let (Some(schema), Some(name)) = (plain(schema), plain(&t.name)) else {
            return Err(format!("table name {:?} is not plain", t.name));
        };
        infos.push(table_info(&mut conn, schema, name).map_err(|e| format!("{server}: {e}"))?);
    }
    let explain = conn
        .query(&format!("EXPLAIN {}", sample.sql))
        .map_err(|e| format!("{server}: EXPLAIN: {e}"))?;
    let columns_of = |i: usize| infos.get(i).map(|t| t.columns.clone()).unwrap_or_default();
    let mut lines = Vec::new();
    for row in &explain {
        // MariaDB: id, select_type, table, type, possible_keys, key, key_len, ref, rows, Extra.
        // MySQL adds partitions (after table) and filtered (after rows).
        let (table, access, rows) = match row.len() {
            10 => (text(&row[2]), text(&row[3]), text(&row[8])),
            12 => (text(&row[2]), text(&row[4]), text(&row[9])),
            n => return Err(format!("EXPLAIN answered {n} columns")),
        };
        if !matches!(access.as_str(), "ALL" | "index") {
            continue;
        }
        let Some(ti) = a.tables.iter().position(|t| t.shown() == table) else {
            continue;
        };
        let info = &infos[ti];
        let needs = a.needs(ti, &columns_of);
        let (cand, n_eq) = advice::candidate(&needs);
        let mut line = Line {
            digest: d.hash,
            table: format!("{}.{}", info.schema, info.name),
            access: access.clone(),
            rows_before: rows.parse().ok(),
            rows_after: None,
            advice: String::new(),
        };
        if cand.is_empty() {
            line.advice = "nothing indexable (no equality, range, join, GROUP BY or ORDER BY on plain columns)".into();
        } else if let Some(have) = advice::covered_by(&cand, n_eq, &info.indexes) {
            line.advice = format!(
                "index `{have}` already has ({}); the server chose not to use it",
                cand.join(", ")
            );
        } else {
            line.rows_after = estimate(&mut conn, info, &cand[..n_eq]);
            let name: String = format!("furrow_{}", cand.join("_"))
                .chars()
                .take(64)
                .collect();
            line.advice = format!(
                "ALTER TABLE `{}`.`{}` ADD INDEX `{name}` ({})",
                info.schema,
                info.name,
                cand.iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        lines.push(line);
    }
    Ok(lines)
}

fn table_info(conn: &mut Conn, schema: &str, name: &str) -> Result<TableInfo, String> {
    let where_ = format!("TABLE_SCHEMA = '{schema}' AND TABLE_NAME = '{name}'");
    let columns = conn
        .query(&format!(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE {where_} ORDER BY ORDINAL_POSITION"
        ))
        .map_err(|e| format!("information_schema.COLUMNS: {e}"))?;
    if columns.is_empty() {
        return Err(format!("no table {schema}.{name} on this server"));
    }
    let stats = conn
        .query(&format!(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE {where_} \
             ORDER BY INDEX_NAME, SEQ_IN_INDEX"
        ))
        .map_err(|e| format!("information_schema.STATISTICS: {e}"))?;
    let mut indexes: Vec<(String, Vec<String>)> = Vec::new();
    for r in &stats {
        let (idx, col) = (text(&r[0]), text(r.get(1).unwrap_or(&None)));
        match indexes.last_mut() {
            Some((n, cols)) if *n == idx => cols.push(col),
            _ => indexes.push((idx, vec![col])),
        }
    }
    let rows = conn
        .query(&format!(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE {where_}"
        ))
        .ok()
        .and_then(|r| r.first().and_then(|r| text(&r[0]).parse().ok()));
    Ok(TableInfo {
        schema: schema.to_string(),
        name: name.to_string(),
        columns: columns.iter().map(|r| text(&r[0])).collect(),
        indexes,
        rows,
    })
}

/// Rows one key of the equality columns selects: the table's rows over the distinct keys in a
/// sample of up to [`ESTIMATE_SAMPLE_ROWS`] rows (scaled by the sample's share of the table).
/// None without equality columns (a range's rows depend on its bounds) or when the sample fails.
fn estimate(conn: &mut Conn, info: &TableInfo, eq: &[String]) -> Option<u64> {
    if eq.is_empty() {
        return None;
    }
    let cols: Vec<String> = eq
        .iter()
        .map(|c| plain(c).map(|c| format!("`{c}`")))
        .collect::<Option<_>>()?;
    let cols = cols.join(", ");
    let r = conn
        .query(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT {cols}) FROM (SELECT {cols} FROM `{}`.`{}` LIMIT {ESTIMATE_SAMPLE_ROWS}) s",
            info.schema, info.name
        ))
        .ok()?;
    let row = r.first()?;
    let sampled: u64 = text(&row[0]).parse().ok()?;
    let distinct: u64 = text(row.get(1)?).parse().ok()?;
    if sampled == 0 {
        return Some(0);
    }
    let per_key = sampled.div_ceil(distinct.max(1));
    let table = info.rows.unwrap_or(sampled).max(sampled);
    Some(per_key.saturating_mul(table) / sampled.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_reach_the_server() {
        assert_eq!(plain("orders_2024"), Some("orders_2024"));
        assert_eq!(plain("a`b"), None);
        assert_eq!(plain("x' OR 1"), None);
        assert_eq!(plain(""), None);
        assert_eq!(plain(&"a".repeat(65)), None);
    }

    #[test]
    fn render_lists_lines_and_digests() {
        let d = DigestStats {
            hash: 0xab,
            text: "SELECT * FROM t WHERE a = ?".into(),
            count: 3,
            total_us: 900,
            ..Default::default()
        };
        let l = Line {
            digest: 0xab,
            table: "db.t".into(),
            access: "ALL".into(),
            rows_before: Some(1000),
            rows_after: Some(2),
            advice: "ALTER TABLE `db`.`t` ADD INDEX `furrow_a` (`a`)".into(),
        };
        let out = render(&[d], &[l]);
        let row = out.lines().nth(2).expect("a row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[..5], ["ab", "db.t", "ALL", "1000", "2"]);
        assert!(row.ends_with("ADD INDEX `furrow_a` (`a`)"));
        let last = out.lines().last().expect("a digest row");
        let cells: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(&cells[..3], ["ab", "3", "900"]);
        assert!(last.ends_with("  SELECT * FROM t WHERE a = ?"));
    }
}
