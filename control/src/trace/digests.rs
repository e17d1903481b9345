//! Fleet-wide MySQL query digests: every live proxy's complete digest table (admin `DIGESTS DUMP`,
//! all statements, not only traced ones), merged by fingerprint into one view — counts, errors,
//! rows and total time summed, the log2 latency histograms added bucket by bucket (so the fleet's
//! percentiles are those of all executions, not an average of per-proxy percentiles), the largest
//! maximum kept.
//!
//! The proxies are those of the console's fleet (`crate::web::fleet`: instances that report their
//! config to the center and give an admin address); each is asked concurrently with the admin
//! port's timeout, and one that does not answer is listed with its error while the others merge.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::center::Center;
use crate::error::Result;
use crate::model::{Level, User};
use crate::web::fleet;

/// Latency buckets of a proxy's histogram: bucket i counts latencies below 2^(i+4) µs.
pub const HIST_BUCKETS: usize = 20;
/// Most digest lines read from one proxy.
pub const MAX_LINES: usize = 10_000;

/// One fingerprint's counters (one proxy's, or merged).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DigestRow {
    /// Fingerprint hash (hex, as `SHOW DIGESTS` shows it).
    pub hash: String,
    /// Normalised text.
    pub text: String,
    /// Executions.
    pub count: u64,
    /// Executions that failed.
    pub errors: u64,
    /// Rows returned or affected.
    pub rows: u64,
    /// Total latency (µs).
    pub total_us: u64,
    /// Largest latency (µs).
    pub max_us: u64,
    /// The latency histogram.
    pub hist: Vec<u64>,
    /// How many proxies ran it.
    pub proxies: u64,
}

/// One proxy's dump: its rows and the executions its full tables did not track.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dump {
    /// Digest rows.
    pub rows: Vec<DigestRow>,
    /// Executions not tracked.
    pub overflow: u64,
}

/// One data line of an admin-port dump: its tab-separated fields (the last takes the rest of the line).
pub(crate) struct DumpLine<'a> {
    /// The fields.
    pub fields: Vec<&'a str>,
    line: &'a str,
    no: usize,
    what: &'static str,
}

impl DumpLine<'_> {
    /// The error naming this line.
    pub fn bad(&self) -> String {
        format!("{} line {}: {:?}", self.what, self.no, self.line)
    }
}

/// Reads an admin-port dump (`DIGESTS DUMP`, `SLOWLOG DUMP`): the number after `header` on the first
/// line, and the data lines (at most `MAX_LINES`, empty ones skipped) with exactly `fields` fields;
/// Err names the first bad line (`what line N: ...`).
pub(crate) fn dump_lines<'a>(
    text: &'a str,
    header: &str,
    what: &'static str,
    fields: usize,
) -> Result<(u64, Vec<DumpLine<'a>>), String> {
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    let n = head
        .strip_prefix(header)
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("not a {what} (first line {head:?})"))?;
    let mut out = Vec::new();
    for (i, line) in lines.enumerate().take(MAX_LINES) {
        if line.is_empty() {
            continue;
        }
        let l = DumpLine {
            fields: line.splitn(fields, '\t').collect(),
            line,
            no: i + 2,
            what,
        };
        if l.fields.len() != fields {
            return Err(l.bad());
        }
        out.push(l);
    }
    Ok((n, out))
}

/// Parses `DIGESTS DUMP` text; Err names the first bad line.
pub fn parse_dump(text: &str) -> Result<Dump, String> {
    let (overflow, lines) = dump_lines(text, "# furrow-digests v1 overflow=", "digest dump", 8)?;
    let mut rows = Vec::new();
    for l in lines {
        let (f, bad) = (&l.fields, || l.bad());
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        let hist: Vec<u64> = f[6].split(',').map(num).collect::<Result<_, _>>()?;
        if hist.len() != HIST_BUCKETS || u64::from_str_radix(f[0], 16).is_err() {
            return Err(bad());
        }
        rows.push(DigestRow {
            hash: f[0].to_string(),
            count: num(f[1])?,
            errors: num(f[2])?,
            rows: num(f[3])?,
            total_us: num(f[4])?,
            max_us: num(f[5])?,
            hist,
            text: f[7].to_string(),
            proxies: 1,
        });
    }
    Ok(Dump { rows, overflow })
}

/// Merges dumps by fingerprint, ordered by total time (largest first).
pub fn merge(dumps: &[Dump]) -> (Vec<DigestRow>, u64) {
    let mut by: HashMap<&str, DigestRow> = HashMap::new();
    let mut overflow = 0u64;
    for d in dumps {
        overflow = overflow.saturating_add(d.overflow);
        for r in &d.rows {
            let m = by.entry(&r.hash).or_insert_with(|| DigestRow {
                hash: r.hash.clone(),
                text: r.text.clone(),
                hist: vec![0; HIST_BUCKETS],
                ..Default::default()
            });
            m.count = m.count.saturating_add(r.count);
            m.errors = m.errors.saturating_add(r.errors);
            m.rows = m.rows.saturating_add(r.rows);
            m.total_us = m.total_us.saturating_add(r.total_us);
            m.max_us = m.max_us.max(r.max_us);
            m.proxies += 1;
            for (a, b) in m.hist.iter_mut().zip(&r.hist) {
                *a = a.saturating_add(*b);
            }
        }
    }
    let mut v: Vec<DigestRow> = by.into_values().collect();
    v.sort_by(|a, b| b.total_us.cmp(&a.total_us).then(a.hash.cmp(&b.hash)));
    (v, overflow)
}

/// The `q` quantile of a histogram: the upper bound (µs) of the bucket it falls in, capped by the
/// largest latency seen.
pub fn quantile(hist: &[u64], q: f64, max_us: u64) -> u64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            return (1u64 << (i + 4).min(63)).min(max_us.max(1));
        }
    }
    max_us
}

/// The merged view as JSON rows (with mean and percentiles).
pub fn rows_json(rows: &[DigestRow], limit: usize) -> Vec<serde_json::Value> {
    rows.iter()
        .take(limit)
        .map(|r| {
            serde_json::json!({
                "hash": r.hash,
                "text": r.text,
                "count": r.count,
                "errors": r.errors,
                "rows": r.rows,
                "total_us": r.total_us,
                "avg_us": r.total_us / r.count.max(1),
                "p50_us": quantile(&r.hist, 0.50, r.max_us),
                "p99_us": quantile(&r.hist, 0.99, r.max_us),
                "max_us": r.max_us,
                "hist": r.hist,
                "proxies": r.proxies,
            })
        })
        .collect()
}

/// Asks every live proxy `user` may read (`read` on the namespace it reports on) for its top `n`
/// digests and merges them; answers the merged rows (top `limit`) and each proxy's outcome.
pub async fn fleet_view(c: &Center, user: &User, n: usize, limit: usize) -> Result<Json> {
    let reports = c.instances(None, None)?;
    let proxies = c.read(|st| {
        reports
            .iter()
            .filter(|r| st.level(user, &r.app, &r.namespace) >= Level::Read)
            .filter_map(|r| fleet::proxy_of(st, r))
            .collect::<Vec<_>>()
    })?;
    let n = n.clamp(1, MAX_LINES).to_string();
    let mut calls = tokio::task::JoinSet::new();
    for (i, p) in proxies.iter().enumerate() {
        let (Some(addr), pw) = (p.admin.clone(), p.admin_password.clone()) else {
            continue;
        };
        let n = n.clone();
        calls.spawn(async move {
            let r = fleet::admin_call(&addr, pw.as_deref(), &["DIGESTS", "DUMP", &n]).await;
            (i, r.map_err(|e| e.to_string()).and_then(|t| parse_dump(&t)))
        });
    }
    let mut outcome: Vec<Json> = proxies
        .iter()
        .map(|p| {
            json!({"key": p.key, "admin": p.admin, "error": p.admin_error.clone().unwrap_or_default()})
        })
        .collect();
    let mut dumps = Vec::new();
    while let Some(done) = calls.join_next().await {
        let Ok((i, r)) = done else { continue };
        match r {
            Ok(d) => {
                outcome[i]["digests"] = json!(d.rows.len());
                dumps.push(d);
            }
            Err(e) => outcome[i]["error"] = json!(e),
        }
    }
    let (rows, overflow) = merge(&dumps);
    Ok(json!({
        "proxies": outcome,
        "answered": dumps.len(),
        "untracked_executions": overflow,
        "fingerprints": rows.len(),
        "digests": rows_json(&rows, limit),
    }))
}

/// How long a proxy may take to answer `INDEX ADVICE`.
pub const ADVICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Asks every live proxy `user` may read for `INDEX ADVICE n` (its top `n` digests explained on a
/// server of their group, with proposed indexes), concurrently; answers each proxy's table.
pub async fn fleet_index_advice(c: &Center, user: &User, n: usize) -> Result<Json> {
    let reports = c.instances(None, None)?;
    let proxies = c.read(|st| {
        reports
            .iter()
            .filter(|r| st.level(user, &r.app, &r.namespace) >= Level::Read)
            .filter_map(|r| fleet::proxy_of(st, r))
            .collect::<Vec<_>>()
    })?;
    let n = n.clamp(1, 20).to_string();
    let mut calls = tokio::task::JoinSet::new();
    for (i, p) in proxies.iter().enumerate() {
        let (Some(addr), pw) = (p.admin.clone(), p.admin_password.clone()) else {
            continue;
        };
        let n = n.clone();
        calls.spawn(async move {
            let args = ["INDEX", "ADVICE", &n];
            (
                i,
                fleet::admin_call_within(ADVICE_TIMEOUT, &addr, pw.as_deref(), &args).await,
            )
        });
    }
    let mut out: Vec<Json> = proxies
        .iter()
        .map(|p| {
            json!({"key": p.key, "admin": p.admin, "error": p.admin_error.clone().unwrap_or_default()})
        })
        .collect();
    while let Some(done) = calls.join_next().await {
        let Ok((i, r)) = done else { continue };
        match r {
            Ok(text) => {
                out[i]["advice"] = json!(fleet::parse_table(&text));
                out[i]["text"] = json!(text);
            }
            Err(e) => out[i]["error"] = json!(e.to_string()),
        }
    }
    Ok(json!({ "proxies": out }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(hash: &str, count: u64, total: u64, max: u64, bucket: usize, text: &str) -> String {
        let mut h = vec!["0"; HIST_BUCKETS];
        let c = count.to_string();
        h[bucket] = &c;
        format!(
            "{hash}\t{count}\t0\t{count}\t{total}\t{max}\t{}\t{text}",
            h.join(",")
        )
    }

    #[test]
    fn dumps_parse_and_merge_by_fingerprint() {
        let a = format!(
            "# furrow-digests v1 overflow=2\n{}\n{}\n",
            line("ab", 10, 1000, 150, 3, "SELECT * FROM t WHERE a = ?"),
            line("cd", 1, 5000, 5000, 9, "SELECT\tslow")
        );
        let b = format!(
            "# furrow-digests v1 overflow=0\n{}\n",
            line("ab", 30, 90_000, 40_000, 11, "SELECT * FROM t WHERE a = ?")
        );
        let (da, db) = (parse_dump(&a).unwrap(), parse_dump(&b).unwrap());
        assert_eq!(da.rows[1].text, "SELECT\tslow");
        let (m, overflow) = merge(&[da, db]);
        assert_eq!(overflow, 2);
        assert_eq!(m[0].hash, "ab");
        assert_eq!(
            (m[0].count, m[0].total_us, m[0].max_us, m[0].proxies),
            (40, 91_000, 40_000, 2)
        );
        assert_eq!((m[0].hist[3], m[0].hist[11]), (10, 30));
        // 10 of 40 below 128 µs, 30 below 32,768 µs: p50 and p99 from the merged histogram.
        assert_eq!(quantile(&m[0].hist, 0.25, m[0].max_us), 128);
        assert_eq!(quantile(&m[0].hist, 0.50, m[0].max_us), 32_768);
        assert_eq!(quantile(&m[0].hist, 0.99, m[0].max_us), 32_768);
        assert_eq!(m[1].proxies, 1);
        let j = rows_json(&m, 1);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0]["avg_us"], 2275);
    }

    #[test]
    fn bad_dumps_are_refused_with_the_line() {
        assert!(parse_dump("").is_err());
        assert!(parse_dump("HASH COUNT\n").is_err());
        let short = "# furrow-digests v1 overflow=0\nab\t1\t0\n";
        assert!(parse_dump(short).unwrap_err().contains("line 2"));
        let bad_hist = "# furrow-digests v1 overflow=0\nab\t1\t0\t0\t1\t1\t1,2\tx\n";
        assert!(parse_dump(bad_hist).is_err());
        let bad_hash = line("zz", 1, 1, 1, 0, "x");
        assert!(parse_dump(&format!("# furrow-digests v1 overflow=0\n{bad_hash}\n")).is_err());
        assert_eq!(quantile(&[0; HIST_BUCKETS], 0.99, 0), 0);
    }
}
