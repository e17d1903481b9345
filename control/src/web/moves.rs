//! The console's window onto the data path's online moves (issue #24): Redis slot migration
//! (`SLOTS ...`) and MySQL resharding (`RESHARD ...`) on a proxy's admin port.
//!
//! Reads (`SLOTS SHOW`, `SLOTS PLAN`, `RESHARD STATUS`, `RESHARD PLAN`) need `read` on the proxy's
//! namespace; the moves themselves (`SLOTS MIGRATE|REBALANCE|STOP`, `RESHARD PAUSE|RESUME|ABORT|CONFIRM`)
//! need `publish`, take the CSRF header like every console action, and leave an audit record
//! (`proxy.slots.migrate`, `proxy.reshard.pause`, ...) with the proxy's answer or refusal. The replies are
//! the admin port's text (bounded by [`fleet::MAX_REPLY`]); the pure parsers below turn them into JSON and
//! keep every line they do not know (`lines`/`fields`), so a proxy that says more is still shown whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{Console, ProxyPath, find_proxy, fleet};
use crate::api::{Res, body, ok, user};
use crate::error::{ControlError, Result};
use crate::model::Level;

/// How long a plan may take: the proxy samples every server (`SLOTS PLAN`) or asks every shard for its
/// table sizes (`RESHARD PLAN`).
pub const PLAN_TIMEOUT: Duration = Duration::from_secs(60);

type S = State<Arc<Console>>;

/// A name, range or number sent to the admin port: what the proxy's own HTTP routes accept.
fn word<'a>(field: &str, v: &'a str) -> Result<&'a str> {
    let v = v.trim();
    if v.is_empty() || v.len() > 128 {
        return Err(ControlError::bad(
            field,
            format!("{field} is required (at most 128 characters)"),
        ));
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    {
        return Err(ControlError::bad(
            field,
            format!("{field} {v:?}: letters, digits and _ . : - only"),
        ));
    }
    Ok(v)
}

fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    let n: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    n.parse().ok()
}

/// Parses `SLOTS SHOW`: per group its servers and ranges (`{start, end, slots, server, migrating_to}`),
/// and the migration of this process (`job`, None when none has run): group, state, move i of n and its
/// range, keys scanned, passes, keys moved, seconds, keys/s, and the moves left. Lines it does not know
/// are kept in `lines`.
pub fn parse_slots_show(text: &str) -> Json {
    let mut groups: Vec<Json> = Vec::new();
    let mut job = Json::Null;
    let mut lines = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("group ") {
            groups.push(json!({"name": name.trim(), "servers": [], "ranges": []}));
            continue;
        }
        if line.starts_with("  ")
            && let Some(g) = groups.last_mut()
        {
            if let Some(list) = t.strip_prefix("servers:") {
                g["servers"] = json!(list.split_whitespace().collect::<Vec<_>>());
                continue;
            }
            let mut words = t.split_whitespace();
            let range = words.next().unwrap_or_default();
            let server = words.next().unwrap_or_default();
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(a), Ok(b), false) = (a.parse::<u16>(), b.parse::<u16>(), server.is_empty()) {
                let moving = match (words.next(), words.next()) {
                    (Some("->"), Some(to)) => Json::String(to.to_string()),
                    _ => Json::Null,
                };
                if let Some(r) = g["ranges"].as_array_mut() {
                    r.push(
                        json!({"start": a, "end": b, "slots": u32::from(b.saturating_sub(a)) + 1,
                                  "server": server, "migrating_to": moving}),
                    );
                }
                continue;
            }
        }
        if let Some(rest) = t.strip_prefix("migration of ") {
            let (group, rest) = rest.split_once(": ").unwrap_or((rest, ""));
            let (state, rest) = rest.split_once("; move ").unwrap_or((rest, ""));
            let (step, rest) = rest.split_once(';').unwrap_or((rest, ""));
            let (of, current) = match step.split_once(" (") {
                Some((of, cur)) => (of, cur.trim_end_matches(')')),
                None => (step, ""),
            };
            let (i, n) = of.split_once('/').unwrap_or(("", ""));
            let secs = rest
                .rsplit_once(" s,")
                .and_then(|(a, _)| a.rsplit(' ').next())
                .and_then(|s| s.parse::<f64>().ok());
            let rate = rest
                .rsplit_once(" keys/s")
                .and_then(|(a, _)| a.rsplit(' ').next())
                .and_then(|s| s.parse::<f64>().ok());
            job = json!({
                "group": group, "state": state, "running": state == "running",
                "move": i.trim().parse::<u64>().ok(), "moves": n.trim().parse::<u64>().ok(),
                "current": current, "scanned": number_after(rest, "scanned "),
                "passes": number_after(rest, "passes "), "moved": number_after(rest, "in all "),
                "seconds": secs, "keys_per_s": rate, "left": [], "line": t,
            });
            continue;
        }
        if let Some(left) = t.strip_prefix("moves left:") {
            if job.is_object() {
                job["left"] = json!(
                    left.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                );
            }
            continue;
        }
        if t == "no migration has run" {
            continue;
        }
        lines.push(t.to_string());
    }
    json!({"groups": groups, "job": job, "lines": lines})
}

/// Parses `SLOTS PLAN` (and the plan `SLOTS REBALANCE` prints): per server the keys now and after, the
/// slots after and the memory in use (when the proxy reports it); the ranges that move with their
/// estimated keys and bytes; `balanced` when nothing moves.
pub fn parse_slots_plan(text: &str) -> Json {
    let mut servers = Vec::new();
    let mut moves = Vec::new();
    let mut lines = Vec::new();
    let mut section = "";
    let mut balanced = false;
    for raw in text.lines() {
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with("SERVER ") {
            section = "servers";
            continue;
        }
        if t.starts_with("RANGE ") {
            section = "moves";
            continue;
        }
        if t.starts_with("balanced") {
            balanced = true;
            lines.push(t.to_string());
            continue;
        }
        let w: Vec<&str> = t.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<f64>().ok());
        match section {
            "servers" if w.len() >= 4 && num(1).is_some() => servers.push(json!({
                "name": w[0], "keys_now": num(1), "keys_after": num(2), "slots_after": num(3),
                "memory_bytes": num(4),
            })),
            "moves" if w.len() >= 5 && num(3).is_some() => moves.push(json!({
                "range": w[0], "from": w[1], "to": w[2], "keys": num(3), "bytes": num(4),
            })),
            _ => lines.push(t.to_string()),
        }
    }
    json!({"servers": servers, "moves": moves, "balanced": balanced, "lines": lines})
}

/// Parses `RESHARD STATUS`: the headline (`reshard `s`.`t` -> `r`: state`, or none has run) and every
/// `name: value` line under it, in order (`fields`, whatever they are: a proxy that reports more shows
/// more), with the ones the page draws from picked out (`phase`, `partition`/`partitions` from
/// `partition: i of n`).
pub fn parse_reshard_status(text: &str) -> Json {
    let mut out = json!({"running": false, "title": "", "state": Json::Null, "fields": []});
    let mut fields = Vec::new();
    for raw in text.lines() {
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with("reshard ") && out["title"] == "" {
            // `reshard `s`.`t` -> `rule`: state`: the state follows the first "`: " after the arrow.
            let split = t
                .find(" -> `")
                .and_then(|a| t[a..].find("`: ").map(|b| a + b + 1));
            let (head, state) = split.map_or((t, ""), |i| (&t[..i], t[i + 2..].trim()));
            out["title"] = json!(head);
            out["state"] = json!(state);
            out["running"] = json!(true);
            continue;
        }
        if out["title"] == "" && fields.is_empty() && !t.contains(": ") {
            out["title"] = json!(t);
            continue;
        }
        match t.split_once(':') {
            Some((k, v)) if !k.is_empty() && !k.contains('`') => {
                let (k, v) = (k.trim(), v.trim());
                match k {
                    "phase" => out["phase"] = json!(v),
                    "partition" => {
                        if let Some((i, n)) = v.split_once(" of ") {
                            out["partition"] = json!(i.trim().parse::<u64>().ok());
                            out["partitions"] = json!(n.trim().parse::<u64>().ok());
                        }
                    }
                    _ => {}
                }
                fields.push(json!([k, v]));
            }
            _ => fields.push(json!(["", t])),
        }
    }
    out["fields"] = Json::Array(fields);
    out
}

/// Parses `RESHARD PLAN`: the headline, one row per old partition (`old`, estimated `rows` and `bytes`,
/// the new partitions its rows go to), and the total/estimate lines.
pub fn parse_reshard_plan(text: &str) -> Json {
    let mut title = String::new();
    let mut partitions = Vec::new();
    let mut lines = Vec::new();
    for raw in text.lines() {
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        if title.is_empty() && t.starts_with("reshard plan") {
            title = t.to_string();
            continue;
        }
        let row = t.split_once(" -> ").and_then(|(left, to)| {
            let mut w = left.split_whitespace();
            let (part, place) = (w.next()?, w.next()?);
            let rest: Vec<&str> = w.collect();
            let size = |unit: &str| {
                rest.windows(2)
                    .find(|p| p[1] == unit)
                    .and_then(|p| p[0].trim_start_matches('~').parse::<u64>().ok())
            };
            part.starts_with('p').then(|| {
                json!({"old": format!("{part} {place}"), "rows": size("rows"), "bytes": size("bytes"),
                       "to": to.trim()})
            })
        });
        match row {
            Some(r) => partitions.push(r),
            None => lines.push(t.to_string()),
        }
    }
    json!({"title": title, "partitions": partitions, "lines": lines})
}

async fn call(
    con: &Console,
    h: &HeaderMap,
    p: &ProxyPath,
    need: Level,
    limit: Duration,
    args: &[&str],
) -> Result<(String, String)> {
    let proxy = find_proxy(con, h, p, need)?;
    let addr = proxy.admin.clone().unwrap_or_default();
    let text =
        fleet::admin_call_within(limit, &addr, proxy.admin_password.as_deref(), args).await?;
    Ok((addr, text))
}

/// `GET .../moves/slots`: `SLOTS SHOW` parsed ([`parse_slots_show`]) with its text.
pub(super) async fn slots(State(con): S, h: HeaderMap, Path(p): Path<ProxyPath>) -> Res {
    let (admin, text) = call(
        &con,
        &h,
        &p,
        Level::Read,
        fleet::ADMIN_TIMEOUT,
        &["SLOTS", "SHOW"],
    )
    .await?;
    let mut out = parse_slots_show(&text);
    out["admin"] = json!(admin);
    out["text"] = json!(text);
    ok(out)
}

/// `GET .../moves/slots/plan?group=G&remove=a,b`: `SLOTS PLAN G -a -b` parsed ([`parse_slots_plan`]).
pub(super) async fn slots_plan(
    State(con): S,
    h: HeaderMap,
    Path(p): Path<ProxyPath>,
    Query(q): Query<HashMap<String, String>>,
) -> Res {
    let group = word("group", q.get("group").map_or("", String::as_str))?;
    let mut args = vec!["SLOTS".to_string(), "PLAN".into(), group.into()];
    for r in q
        .get("remove")
        .map_or("", String::as_str)
        .split(',')
        .filter(|s| !s.trim().is_empty())
    {
        args.push(format!("-{}", word("remove", r)?));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, text) = call(&con, &h, &p, Level::Read, PLAN_TIMEOUT, &argv).await?;
    let mut out = parse_slots_plan(&text);
    out["text"] = json!(text);
    ok(out)
}

/// The body of `POST .../moves/slots`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotsAction {
    action: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    range: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rate: Option<u64>,
}

/// Writes the audit record of a move and answers the proxy's reply (or its refusal, after recording it).
async fn audited(
    con: &Console,
    h: &HeaderMap,
    p: &ProxyPath,
    action: &str,
    args: Vec<String>,
    limit: Duration,
) -> Res {
    let u = user(&con.center, h)?;
    // A refusal of the permission check is not a move: it is answered as is (a denied write would be
    // audited by the API's own write path; this one reaches no proxy).
    let proxy = find_proxy(con, h, p, Level::Publish)?;
    let addr = proxy.admin.clone().unwrap_or_default();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let result =
        fleet::admin_call_within(limit, &addr, proxy.admin_password.as_deref(), &argv).await;
    let target = format!("proxy/{}/{}/{}/{}/{}", p.0, p.1, p.2, p.3, p.4);
    let detail = match &result {
        Ok(reply) => {
            json!({"command": args, "reply": reply.chars().take(2000).collect::<String>()})
        }
        Err(e) => json!({"command": args, "error": e.message}),
    };
    let (act, tgt) = (action.to_string(), target.clone());
    con.center
        .write(u, move |tx| {
            tx.audit(&act, &tgt, detail.clone());
            Ok(())
        })
        .await?;
    tracing::info!(proxy = %target, action, ok = result.is_ok(), "console move");
    ok(json!({"reply": result?}))
}

/// `POST .../moves/slots {"action": "migrate", "group", "range", "to", "rate"?}` | `{"action":
/// "rebalance", "group", "remove"?, "rate"?}` | `{"action": "stop"}`: `publish` on the proxy's namespace.
pub(super) async fn slots_action(
    State(con): S,
    h: HeaderMap,
    Path(p): Path<ProxyPath>,
    b: Bytes,
) -> Res {
    let a: SlotsAction = body(&b)?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut args = vec!["SLOTS".to_string()];
    match a.action.as_str() {
        "migrate" => {
            args.push("MIGRATE".into());
            args.push(word("group", &opt(&a.group))?.into());
            args.push(word("range", &opt(&a.range))?.into());
            args.push(word("to", &opt(&a.to))?.into());
        }
        "rebalance" => {
            args.push("REBALANCE".into());
            args.push(word("group", &opt(&a.group))?.into());
            for r in &a.remove {
                args.push(format!("-{}", word("remove", r)?));
            }
        }
        "stop" => args.push("STOP".into()),
        other => {
            return Err(ControlError::bad(
                "action",
                format!("unknown action {other:?}: migrate, rebalance or stop"),
            )
            .into());
        }
    }
    if let Some(rate) = a.rate.filter(|r| *r > 0 && a.action != "stop") {
        args.push("RATE".into());
        args.push(rate.to_string());
    }
    // REBALANCE plans first (it samples every server).
    audited(
        &con,
        &h,
        &p,
        &format!("proxy.slots.{}", a.action),
        args,
        PLAN_TIMEOUT,
    )
    .await
}

/// `GET .../moves/reshard`: `RESHARD STATUS` parsed ([`parse_reshard_status`]) with its text.
pub(super) async fn reshard(State(con): S, h: HeaderMap, Path(p): Path<ProxyPath>) -> Res {
    let (admin, text) = call(
        &con,
        &h,
        &p,
        Level::Read,
        fleet::ADMIN_TIMEOUT,
        &["RESHARD", "STATUS"],
    )
    .await?;
    let mut out = parse_reshard_status(&text);
    out["admin"] = json!(admin);
    out["text"] = json!(text);
    ok(out)
}

/// `GET .../moves/reshard/plan?sharding=&table=&rule=&rate=`: the dry run, `RESHARD PLAN` parsed
/// ([`parse_reshard_plan`]).
pub(super) async fn reshard_plan(
    State(con): S,
    h: HeaderMap,
    Path(p): Path<ProxyPath>,
    Query(q): Query<HashMap<String, String>>,
) -> Res {
    let get = |k: &str| q.get(k).map_or("", String::as_str);
    let mut args = vec![
        "RESHARD".to_string(),
        "PLAN".into(),
        word("sharding", get("sharding"))?.into(),
        word("table", get("table"))?.into(),
        word("rule", get("rule"))?.into(),
    ];
    if let Some(rate) = crate::api::qnum(&q, "rate")?.filter(|r| *r > 0) {
        args.push("RATE".into());
        args.push(rate.to_string());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, text) = call(&con, &h, &p, Level::Read, PLAN_TIMEOUT, &argv).await?;
    let mut out = parse_reshard_plan(&text);
    out["text"] = json!(text);
    ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReshardAction {
    action: String,
}

/// `POST .../moves/reshard {"action": "pause"|"resume"|"abort"|"confirm"}`: `publish` on the proxy's
/// namespace; the proxy checks that its phase accepts the command.
pub(super) async fn reshard_action(
    State(con): S,
    h: HeaderMap,
    Path(p): Path<ProxyPath>,
    b: Bytes,
) -> Res {
    let a: ReshardAction = body(&b)?;
    let sub = match a.action.as_str() {
        "pause" | "resume" | "abort" | "confirm" => a.action.to_ascii_uppercase(),
        other => {
            return Err(ControlError::bad(
                "action",
                format!("unknown action {other:?}: pause, resume, abort or confirm"),
            )
            .into());
        }
    };
    audited(
        &con,
        &h,
        &p,
        &format!("proxy.reshard.{}", a.action),
        vec!["RESHARD".into(), sub],
        fleet::ADMIN_TIMEOUT,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_tables_and_the_running_job() {
        let text = "group cache\n  servers: r1 r2 r3\n  0-8191 r1\n  8192-16383 r1 -> r2 (moving)\n\
                    migration of cache: running; move 1/2 (8192-16383 -> r2); this move: scanned 120, passes 1; \
                    moved by the mover in all 57; 2.5 s, 23 keys/s\nmoves left: 8192-16383 -> r2, 0-99 -> r3\n\
                    something new\n";
        let j = parse_slots_show(text);
        assert_eq!(j["groups"][0]["name"], "cache");
        assert_eq!(j["groups"][0]["servers"], json!(["r1", "r2", "r3"]));
        assert_eq!(
            j["groups"][0]["ranges"][1],
            json!({"start": 8192, "end": 16383, "slots": 8192, "server": "r1", "migrating_to": "r2"})
        );
        assert_eq!(j["groups"][0]["ranges"][0]["migrating_to"], Json::Null);
        let job = &j["job"];
        assert_eq!(job["state"], "running");
        assert_eq!(
            (job["move"].as_u64(), job["moves"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(job["current"], "8192-16383 -> r2");
        assert_eq!(job["scanned"], 120.0);
        assert_eq!(job["passes"], 1.0);
        assert_eq!(job["moved"], 57.0);
        assert_eq!(job["seconds"], 2.5);
        assert_eq!(job["keys_per_s"], 23.0);
        assert_eq!(job["left"], json!(["8192-16383 -> r2", "0-99 -> r3"]));
        assert_eq!(j["lines"], json!(["something new"]));

        let done = parse_slots_show(
            "migration of c: failed: a client writes to it; move 2/2; this move: scanned 0, passes 16; moved by the mover in all 0; 1.0 s, 0 keys/s\n",
        );
        assert_eq!(done["job"]["state"], "failed: a client writes to it");
        assert_eq!(done["job"]["running"], false);
        assert_eq!(done["job"]["current"], "");
        let none = parse_slots_show("no migration has run\n");
        assert_eq!(none["job"], Json::Null);
        assert_eq!(none["groups"], json!([]));
        assert_eq!(parse_slots_show("")["lines"], json!([]));
    }

    #[test]
    fn slot_plans() {
        let text = "SERVER           KEYS NOW   KEYS AFTER    SLOTS   MEMORY BYTES\n\
                    r1                   3000         1000     5462        1048576\n\
                    r2                      0         1000     5461         900000\n\
                    RANGE         FROM         TO             EST KEYS    EST BYTES\n\
                    10923-16383   r1           r2                 1000        52000\n";
        let j = parse_slots_plan(text);
        assert_eq!(j["servers"][0]["name"], "r1");
        assert_eq!(j["servers"][0]["keys_now"], 3000.0);
        assert_eq!(j["servers"][1]["memory_bytes"], 900000.0);
        assert_eq!(
            j["moves"][0],
            json!({"range": "10923-16383", "from": "r1", "to": "r2", "keys": 1000.0, "bytes": 52000.0})
        );
        assert_eq!(j["balanced"], false);
        // An older proxy without the memory column.
        let old = parse_slots_plan(
            "SERVER KEYS NOW KEYS AFTER SLOTS\nr1 5 5 16384\nRANGE FROM TO EST KEYS EST BYTES\nbalanced: nothing to move\n",
        );
        assert_eq!(old["servers"][0]["memory_bytes"], Json::Null);
        assert_eq!(old["balanced"], true);
        assert_eq!(old["moves"], json!([]));
    }

    #[test]
    fn reshard_status_keeps_unknown_fields() {
        let text = "reshard `app`.`orders` -> `orders_v2`: copying\nphase: Paused\npartition: 1 of 4\n\
                    key reached: 250\nrows copied: 350\nrows/s: 1200\nbatch: 50 rows\n\
                    last verify: 3 ranges after copy: old 400 rows, new 400 rows, checksums equal\n\
                    cut-over pause: -\nresumed after restart: yes\nelapsed: 3.2 s\n";
        let j = parse_reshard_status(text);
        assert_eq!(j["running"], true);
        assert_eq!(j["title"], "reshard `app`.`orders` -> `orders_v2`");
        assert_eq!(j["state"], "copying");
        assert_eq!(j["phase"], "Paused");
        assert_eq!(
            (j["partition"].as_u64(), j["partitions"].as_u64()),
            (Some(1), Some(4))
        );
        let fields = j["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 10);
        assert_eq!(fields[3], json!(["rows copied", "350"]));
        assert_eq!(
            fields[6],
            json!([
                "last verify",
                "3 ranges after copy: old 400 rows, new 400 rows, checksums equal"
            ])
        );
        assert_eq!(fields[8], json!(["resumed after restart", "yes"]));
        let none = parse_reshard_status("no reshard has run\n");
        assert_eq!(none["running"], false);
        assert_eq!(none["title"], "no reshard has run");
        assert_eq!(none["fields"], json!([]));
    }

    #[test]
    fn reshard_plans() {
        let text = "reshard plan for `orders`: 4 -> 8 partitions\n  p0 s0:app_0.orders_0 ~100 rows ~16384 bytes -> p0 s0:app_0.orders_v2_0, p4 s1:app_1.orders_v2_4\n\
                    total ~400 rows ~65536 bytes; estimated copy 0.1 s at 8388608 bytes/s (the rate is an assumption)\n";
        let j = parse_reshard_plan(text);
        assert_eq!(j["title"], "reshard plan for `orders`: 4 -> 8 partitions");
        assert_eq!(
            j["partitions"][0],
            json!({"old": "p0 s0:app_0.orders_0", "rows": 100, "bytes": 16384,
                   "to": "p0 s0:app_0.orders_v2_0, p4 s1:app_1.orders_v2_4"})
        );
        assert_eq!(j["lines"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn words_are_checked() {
        assert_eq!(word("group", " cache ").unwrap(), "cache");
        assert!(word("group", "").is_err());
        assert!(word("range", "0-10 r2").is_err());
        assert!(word("to", "r\u{e9}").is_err());
        assert!(word("to", &"x".repeat(129)).is_err());
    }
}
