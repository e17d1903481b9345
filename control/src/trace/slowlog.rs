//! The fleet slow log: every live proxy's slow MySQL statements (admin `SLOWLOG DUMP`), newest first,
//! each with the trace it belongs to when one is known.
//!
//! The proxies are found as for the fleet digests (`super::digests`, `crate::web::fleet`). The
//! statement text leaves the center as its digest (literals become `?`, as in the span store). A
//! statement's trace id is, in this order: the caller's, from a sqlcommenter
//! `/*traceparent='00-…'*/` in its text (the proxy's statement span is a child in that trace); else
//! the trace of a span in the collector's store that is that statement: same `furrow.digest`, a
//! duration within 1 µs of the slow entry's, and an end within [`MATCH_MS`] of the entry's time (the
//! proxy times both from the same measurement). A statement that was not traced, or whose trace the
//! tail sampler dropped, has none.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Value as Json, json};

use super::model::SpanRec;
use crate::center::Center;
use crate::error::Result;
use crate::model::{Level, User};
use crate::web::fleet;

/// Most entries read from one proxy.
pub const MAX_LINES: usize = 10_000;
/// Most entries answered.
pub const MAX_LIMIT: usize = 1_000;
/// How far a span's end may be from the slow entry's time to be that statement.
pub const MATCH_MS: u64 = 1_000;

/// One slow statement of one proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SlowRow {
    /// When it finished (ms since the epoch).
    pub at_ms: u64,
    /// How long it took (µs).
    pub took_us: u64,
    /// The proxy user.
    pub user: String,
    /// The server that ran it (`shards` for a sharded statement).
    pub backend: String,
    /// Its digest: the normalised text (literals as `?`).
    pub digest: String,
    /// The digest's hash (hex, as `SHOW DIGESTS` and the spans' `furrow.digest` give it).
    pub hash: String,
    /// The trace it belongs to (32 hex digits), when known.
    pub trace_id: Option<String>,
    /// The proxy it ran on (its instance key).
    pub proxy: String,
}

/// One proxy's dump: its entries and how many its full logs dropped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dump {
    /// Entries, newest first.
    pub rows: Vec<SlowRow>,
    /// Older entries the proxy's logs dropped.
    pub dropped: u64,
}

/// Parses `SLOWLOG DUMP` text (the statement is reduced to its digest here); Err names the first bad
/// line.
pub fn parse_dump(text: &str, proxy: &str) -> std::result::Result<Dump, String> {
    let (dropped, lines) =
        super::digests::dump_lines(text, "# furrow-slowlog v1 dropped=", "slow-log dump", 5)?;
    let mut rows = Vec::new();
    for l in lines {
        let (f, bad) = (&l.fields, || l.bad());
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        let d = router::sql::digest(f[4]);
        rows.push(SlowRow {
            at_ms: num(f[0])?,
            took_us: num(f[1])?,
            user: f[2].to_string(),
            backend: f[3].to_string(),
            digest: d.text,
            hash: format!("{:016x}", d.hash),
            trace_id: traceparent_trace(f[4]),
            proxy: proxy.to_string(),
        });
    }
    Ok(Dump { rows, dropped })
}

/// The trace id of a sqlcommenter `traceparent='00-TRACEID-SPANID-FLAGS'` in `sql`, lowercase hex;
/// None without one, or for a malformed or all-zero id.
pub fn traceparent_trace(sql: &str) -> Option<String> {
    let mut rest = sql;
    while let Some(open) = rest.find("/*") {
        let body = &rest[open + 2..];
        let close = body.find("*/")?;
        let comment = &body[..close];
        if let Some(at) = comment.find("traceparent='") {
            let v = &comment[at + "traceparent='".len()..];
            let v = &v[..v.find('\'')?];
            let mut parts = v.split('-');
            let (ver, id) = (parts.next()?, parts.next()?);
            let ok = ver.len() == 2
                && id.len() == 32
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && id.bytes().any(|b| b != b'0');
            return ok.then(|| id.to_ascii_lowercase());
        }
        rest = &body[close + 2..];
    }
    None
}

/// Merges proxies' entries newest first (ties: the longer first), at most `limit`.
pub fn merge(dumps: Vec<Dump>, limit: usize) -> Vec<SlowRow> {
    let mut all: Vec<SlowRow> = dumps.into_iter().flat_map(|d| d.rows).collect();
    all.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(b.took_us.cmp(&a.took_us)));
    all.truncate(limit);
    all
}

/// Gives the rows without a trace id the trace of the stored span that is their statement (see the
/// module's doc); one pass over the traces.
pub fn match_traces<'a>(rows: &mut [SlowRow], traces: impl Iterator<Item = (u128, &'a [SpanRec])>) {
    let mut want: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if r.trace_id.is_none() {
            want.entry(r.hash.as_str()).or_default().push(i);
        }
    }
    if want.is_empty() {
        return;
    }
    let mut found: Vec<(usize, u128)> = Vec::new();
    for (t, spans) in traces {
        for s in spans {
            let Some(codec::otlp::Value::Str(h)) = s.attr("furrow.digest") else {
                continue;
            };
            let Some(idx) = want.get(h.as_str()) else {
                continue;
            };
            let dur_us = s.span.end_ns.saturating_sub(s.span.start_ns) / 1_000;
            let end_ms = s.span.end_ns / 1_000_000;
            for &i in idx {
                let r = &rows[i];
                if dur_us.abs_diff(r.took_us) <= 1 && end_ms.abs_diff(r.at_ms) <= MATCH_MS {
                    found.push((i, t));
                }
            }
        }
    }
    for (i, t) in found {
        rows[i].trace_id.get_or_insert_with(|| format!("{t:032x}"));
    }
}

/// Asks every live proxy `user` may read (`read` on the namespace it reports on) for its `n` latest
/// slow statements; answers them merged newest first (at most `limit`), each with its trace id when
/// known, and each proxy's outcome.
pub async fn fleet_slow(c: &Center, user: &User, n: usize, limit: usize) -> Result<Json> {
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
        let (n, key) = (n.clone(), p.key.clone());
        calls.spawn(async move {
            let r = fleet::admin_call(&addr, pw.as_deref(), &["SLOWLOG", "DUMP", &n]).await;
            (
                i,
                r.map_err(|e| e.to_string())
                    .and_then(|t| parse_dump(&t, &key)),
            )
        });
    }
    let mut outcome: Vec<Json> = proxies
        .iter()
        .map(|p| {
            json!({"key": p.key, "admin": p.admin, "error": p.admin_error.clone().unwrap_or_default()})
        })
        .collect();
    let mut dumps = Vec::new();
    let mut dropped = 0u64;
    while let Some(done) = calls.join_next().await {
        let Ok((i, r)) = done else { continue };
        match r {
            Ok(d) => {
                outcome[i]["entries"] = json!(d.rows.len());
                outcome[i]["dropped"] = json!(d.dropped);
                dropped = dropped.saturating_add(d.dropped);
                dumps.push(d);
            }
            Err(e) => outcome[i]["error"] = json!(e),
        }
    }
    let answered = dumps.len();
    let mut rows = merge(dumps, limit.clamp(1, MAX_LIMIT));
    // The store's traces are read on a blocking thread, as every query is.
    let store = c.trace.store.clone();
    rows = tokio::task::spawn_blocking(move || {
        if let Ok(st) = store.lock() {
            match_traces(&mut rows, st.traces());
        }
        rows
    })
    .await
    .map_err(|e| {
        crate::error::ControlError::new(crate::error::ErrorCode::Internal, format!("slow log: {e}"))
    })?;
    Ok(json!({
        "proxies": outcome,
        "answered": answered,
        "dropped": dropped,
        "entries": rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::otlp::{Span, Value};
    use std::sync::Arc;

    const DUMP: &str = "# furrow-slowlog v1 dropped=2\n\
        1700000002000\t1500\tapp\tprimary\t/*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/ SELECT * FROM t WHERE id = 42\n\
        1700000001000\t900\tapp\tprimary\tSELECT * FROM t WHERE id = 7\n";

    #[test]
    fn dumps_parse_to_digests_with_the_callers_trace() {
        let d = parse_dump(DUMP, "shop/a").unwrap();
        assert_eq!(d.dropped, 2);
        assert_eq!(d.rows.len(), 2);
        let r = &d.rows[0];
        assert_eq!(
            (r.at_ms, r.took_us, r.user.as_str()),
            (1_700_000_002_000, 1500, "app")
        );
        assert!(
            !r.digest.contains("42") && r.digest.contains('?'),
            "{}",
            r.digest
        );
        assert_eq!(
            r.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        // Same statement shape, same hash; no comment, no trace id.
        assert_eq!(d.rows[1].hash, r.hash);
        assert_eq!(d.rows[1].trace_id, None);
        assert_eq!(r.proxy, "shop/a");
    }

    #[test]
    fn malformed_dumps_name_their_line() {
        assert!(
            parse_dump("hello\n", "p")
                .unwrap_err()
                .contains("not a slow-log dump")
        );
        let e =
            parse_dump("# furrow-slowlog v1 dropped=0\nx\t1\tu\tb\tSELECT 1\n", "p").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_dump("# furrow-slowlog v1 dropped=0\n1\t2\tu\n", "p").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert_eq!(
            parse_dump("# furrow-slowlog v1 dropped=0\n", "p")
                .unwrap()
                .rows,
            vec![]
        );
    }

    #[test]
    fn traceparents_are_read_from_comments_only_when_well_formed() {
        assert_eq!(traceparent_trace("SELECT 1"), None);
        assert_eq!(
            traceparent_trace(
                "SELECT 1 /*a='b',traceparent='00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01'*/"
            ),
            Some("0af7651916cd43dd8448eb211c80319c".into())
        );
        assert_eq!(
            traceparent_trace(
                "/*traceparent='00-00000000000000000000000000000000-b7ad6b7169203331-01'*/"
            ),
            None
        );
        assert_eq!(traceparent_trace("/*traceparent='00-xyz'*/"), None);
        assert_eq!(traceparent_trace("/*traceparent='00-"), None);
    }

    fn stmt_span(hash: &str, end_ms: u64, took_us: u64) -> SpanRec {
        let end_ns = end_ms * 1_000_000;
        SpanRec {
            service: Arc::from("furrow-proxy"),
            origin: Default::default(),
            span: Span {
                trace_id: [9; 16],
                span_id: [1; 8],
                start_ns: end_ns - took_us * 1_000,
                end_ns,
                attrs: vec![("furrow.digest".into(), Value::Str(hash.into()))],
                ..Default::default()
            },
        }
    }

    #[test]
    fn stored_spans_give_their_trace_to_the_same_statement_only() {
        let mut d = parse_dump(DUMP, "p").unwrap();
        let hash = d.rows[1].hash.clone();
        let rows = &mut d.rows;
        let near = [stmt_span(&hash, 1_700_000_001_000, 900)];
        let other_time = [stmt_span(&hash, 1_700_000_009_000, 900)];
        let other_took = [stmt_span(&hash, 1_700_000_001_000, 950)];
        let traces = [
            (7u128, &other_time[..]),
            (8u128, &other_took[..]),
            (9u128, &near[..]),
        ];
        match_traces(rows, traces.iter().map(|(t, s)| (*t, *s)));
        assert_eq!(rows[1].trace_id, Some(format!("{:032x}", 9)));
        // The caller's trace id is kept.
        assert_eq!(
            rows[0].trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }

    #[test]
    fn merged_entries_are_newest_first_and_bounded() {
        let a = parse_dump(DUMP, "a").unwrap();
        let mut b = parse_dump(DUMP, "b").unwrap();
        b.rows[0].at_ms += 5;
        let m = merge(vec![a, b], 3);
        let order: Vec<(&str, u64)> = m.iter().map(|r| (r.proxy.as_str(), r.at_ms)).collect();
        assert_eq!(
            order,
            [
                ("b", 1_700_000_002_005),
                ("a", 1_700_000_002_000),
                ("a", 1_700_000_001_000)
            ]
        );
    }
}
