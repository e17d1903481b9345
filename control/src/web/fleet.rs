//! The proxy fleet as the center knows it, and the console's window onto each proxy's admin port.
//!
//! **Which instances are proxies, and where their admin port is.** A proxy started with
//! `furrow proxy --config-source` reports every release it applies (`POST /v1/reports`), and the releases it
//! reports hold its whole TOML document, `[proxy] admin = "host:port"` (and `admin_password`) included. So the
//! center needs nothing new from the proxies: for each live report it merges the reported releases (the
//! layers, lowest priority first), applies the `KEY.PATH` setting items exactly as the proxy does
//! ([`crate::settings::effective_document`], with the instance's labels, id and ip as context; the proxy's
//! host name and version are not known here), and reads `proxy.admin` from the document item `config` (the
//! `--config-source` default) or else from any TOML document item with a `[proxy]` table. An admin address
//! on `0.0.0.0`/`::` is reached at the IP the instance reported. Proxies configured from a file do not report
//! and are not in the fleet.
//!
//! **Talking to a proxy.** The admin port speaks RESP; [`admin_call`] sends `AUTH` (when the config sets a
//! password) and one command over a fresh connection, with a timeout, and reads one reply with the codec's
//! frame decoder (bounded). Its text tables are turned into JSON by the pure [`parse_table`] and
//! [`parse_info`], so the browser never parses fixed-width text.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use codec::resp::{Frame, FrameDecoder, Limits, write_array_header, write_bulk};
use serde::Serialize;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::center::Report;
use crate::client::ConfigSnapshot;
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Item, Value};
use crate::state::State;

/// How long a call to a proxy's admin port may take (connect, write, read).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest admin reply read.
pub const MAX_REPLY: usize = 8 * 1024 * 1024;

/// One proxy of the fleet.
#[derive(Clone, Debug, Serialize)]
pub struct Proxy {
    /// `app/env/cluster/namespace/id`: what the console's proxy routes take.
    pub key: String,
    /// Its last report (releases, version, status, labels).
    pub report: Report,
    /// The admin address the console reaches it at, when its config gives one.
    pub admin: Option<String>,
    /// Why no admin address is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_error: Option<String>,
    /// The admin password from its config (never sent to the browser).
    #[serde(skip)]
    pub admin_password: Option<String>,
}

/// The items an instance runs: its reported releases merged in order.
fn items_of(st: &State, r: &Report) -> BTreeMap<String, Item> {
    let mut items = BTreeMap::new();
    for id in &r.releases {
        if let Some(rel) = st.releases.get(id) {
            for (k, v) in &rel.items {
                items.insert(k.clone(), v.clone());
            }
        }
    }
    items
}

/// The proxy view of a report, or None when its config holds no proxy document at all.
pub fn proxy_of(st: &State, r: &Report) -> Option<Proxy> {
    let items = items_of(st, r);
    let mut keys: Vec<&String> = items
        .iter()
        .filter(|(_, i)| {
            matches!(&i.value, Value::Document { format: crate::document::DocFormat::Toml, text } if text.contains("proxy"))
        })
        .map(|(k, _)| k)
        .collect();
    keys.sort_by_key(|k| k.as_str() != "config");
    let snap = ConfigSnapshot {
        app: r.app.clone(),
        env: r.env.clone(),
        cluster: r.cluster.clone(),
        namespace: r.namespace.clone(),
        version: r.version,
        releases: r.releases.clone(),
        items: items.clone(),
        from_snapshot_file: false,
        usage: Default::default(),
    };
    let ctx = crate::settings::instance_context(&snap, &r.instance, "", "");
    let mut first_error = None;
    for key in keys {
        let doc = match crate::settings::effective_document(&snap, key, &ctx) {
            Ok((text, _)) => text,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        let Ok(table) = doc.parse::<toml::Table>() else {
            continue;
        };
        let Some(proxy) = table.get("proxy").and_then(|p| p.as_table()) else {
            continue;
        };
        let password = proxy
            .get("admin_password")
            .and_then(|p| p.as_str())
            .map(str::to_string);
        let (admin, admin_error) = match proxy.get("admin").and_then(|a| a.as_str()) {
            Some(a) => (Some(reachable(a, &r.instance.ip)), None),
            None => (
                None,
                Some(format!("item `{key}` sets no [proxy] admin address")),
            ),
        };
        return Some(Proxy {
            key: format!(
                "{}/{}/{}/{}/{}",
                r.app, r.env, r.cluster, r.namespace, r.instance.id
            ),
            report: r.clone(),
            admin,
            admin_error,
            admin_password: password,
        });
    }
    first_error.map(|e| Proxy {
        key: format!(
            "{}/{}/{}/{}/{}",
            r.app, r.env, r.cluster, r.namespace, r.instance.id
        ),
        report: r.clone(),
        admin: None,
        admin_error: Some(e),
        admin_password: None,
    })
}

/// An admin address as reachable from here: a wildcard host is replaced by the instance's reported IP.
pub fn reachable(admin: &str, ip: &str) -> String {
    let Some((host, port)) = admin.rsplit_once(':') else {
        return admin.to_string();
    };
    let wildcard = matches!(host, "0.0.0.0" | "::" | "[::]" | "");
    if wildcard && !ip.is_empty() {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    } else {
        admin.to_string()
    }
}

fn gateway(addr: &str, what: impl std::fmt::Display) -> ControlError {
    ControlError::new(
        ErrorCode::BadGateway,
        format!("proxy admin port {addr}: {what}"),
    )
}

/// Sends one admin command (after `AUTH` when a password is given) and returns the reply's text; an error
/// reply from the proxy is a `bad_request` carrying the proxy's message, no answer a `bad_gateway`.
pub async fn admin_call(addr: &str, password: Option<&str>, args: &[&str]) -> Result<String> {
    admin_call_within(ADMIN_TIMEOUT, addr, password, args).await
}

/// [`admin_call`] with another time limit (for commands that do work on servers, such as
/// `INDEX ADVICE`).
pub async fn admin_call_within(
    limit: Duration,
    addr: &str,
    password: Option<&str>,
    args: &[&str],
) -> Result<String> {
    tokio::time::timeout(limit, call(addr, password, args))
        .await
        .map_err(|_| gateway(addr, format!("no answer in {} s", limit.as_secs())))?
}

async fn call(addr: &str, password: Option<&str>, args: &[&str]) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| gateway(addr, e))?;
    let mut out = BytesMut::new();
    let mut cmds: Vec<Vec<&str>> = Vec::with_capacity(2);
    if let Some(p) = password {
        cmds.push(vec!["AUTH", p]);
    }
    cmds.push(args.to_vec());
    for c in &cmds {
        write_array_header(&mut out, c.len());
        for a in c {
            write_bulk(&mut out, a.as_bytes());
        }
    }
    s.write_all(&out).await.map_err(|e| gateway(addr, e))?;
    let mut dec = FrameDecoder::new(Limits {
        max_bulk_len: MAX_REPLY,
        max_array_len: 4096,
        ..Limits::default()
    });
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut replies = Vec::with_capacity(2);
    while replies.len() < cmds.len() {
        match dec.decode(&mut buf) {
            Ok(Some(f)) => {
                replies.push(f);
                continue;
            }
            Ok(None) => {}
            Err(e) => return Err(gateway(addr, e)),
        }
        if buf.len() > MAX_REPLY + 1024 {
            return Err(gateway(addr, "reply too large"));
        }
        match s.read_buf(&mut buf).await {
            Ok(0) => return Err(gateway(addr, "closed the connection")),
            Ok(_) => {}
            Err(e) => return Err(gateway(addr, e)),
        }
    }
    let mut text = String::new();
    for f in replies {
        text = frame_text(&f).map_err(|m| {
            ControlError::new(ErrorCode::BadRequest, format!("proxy {addr} answered: {m}"))
        })?;
    }
    Ok(text)
}

/// A reply as text (simple, bulk, integer, array lines); Err with the text of an error reply.
fn frame_text(f: &Frame) -> std::result::Result<String, String> {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match f {
        Frame::Error(b) | Frame::BlobError(b) => Err(s(b)),
        Frame::Simple(b) | Frame::Bulk(b) => Ok(s(b)),
        Frame::Integer(n) => Ok(n.to_string()),
        Frame::Array(v) => Ok(v
            .iter()
            .map(|f| frame_text(f).unwrap_or_else(|e| e))
            .collect::<Vec<_>>()
            .join("\n")),
        _ => Ok(String::new()),
    }
}

/// One table of an admin reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Table {
    /// The section (`# NAME` above it: the listener of HOTKEYS/COMMANDSTATS), empty when none.
    pub name: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each with one cell per column (the last column keeps its spaces: SQL text).
    pub rows: Vec<Vec<String>>,
    /// Lines in parentheses under the table (`(3 older entries dropped)`).
    pub notes: Vec<String>,
}

/// Parses the admin port's fixed-width tables (`SHOW BACKENDS`, `SHOW SLOWLOG`, `COMMANDSTATS`, ...): a
/// header line of upper-case names, then rows whose cells are separated by blanks; the last cell is the
/// rest of the line. A line with fewer cells than columns continues the previous row's last cell (a
/// statement with a line break). `# NAME` starts a new section.
pub fn parse_table(text: &str) -> Vec<Table> {
    let mut out: Vec<Table> = Vec::new();
    let mut cur = Table::default();
    let flush = |cur: &mut Table, out: &mut Vec<Table>| {
        if !cur.columns.is_empty() || !cur.notes.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    for line in text.lines() {
        let t = line.trim_end_matches('\r');
        if t.trim().is_empty() {
            continue;
        }
        if let Some(name) = t.strip_prefix("# ") {
            flush(&mut cur, &mut out);
            cur.name = name.trim().to_string();
            continue;
        }
        if cur.columns.is_empty() {
            cur.columns = t.split_whitespace().map(str::to_string).collect();
            continue;
        }
        if t.starts_with('(') && t.ends_with(')') {
            cur.notes.push(t.to_string());
            continue;
        }
        let n = cur.columns.len();
        let cells = split_cells(t, n);
        if cells.len() < n {
            if let Some(last) = cur.rows.last_mut().and_then(|r| r.last_mut()) {
                last.push('\n');
                last.push_str(t.trim());
            }
            continue;
        }
        cur.rows.push(cells);
    }
    flush(&mut cur, &mut out);
    out
}

/// The first `n - 1` blank-separated cells, then the rest of the line.
fn split_cells(line: &str, n: usize) -> Vec<String> {
    let mut cells = Vec::with_capacity(n);
    let mut rest = line.trim_start();
    while cells.len() + 1 < n {
        let Some(end) = rest.find(char::is_whitespace) else {
            if !rest.is_empty() {
                cells.push(rest.to_string());
            }
            return cells;
        };
        cells.push(rest[..end].to_string());
        rest = rest[end..].trim_start();
    }
    if !rest.is_empty() {
        cells.push(rest.trim_end().to_string());
    }
    cells
}

/// Parses `INFO`: `# Section` headers, `key:value` lines; a value made of `k=v` pairs (listeners,
/// backends) becomes an object.
pub fn parse_info(text: &str) -> Json {
    let mut sections = serde_json::Map::new();
    let mut cur = String::from("Server");
    for line in text.lines() {
        let t = line.trim_end_matches('\r').trim();
        if t.is_empty() {
            continue;
        }
        if let Some(name) = t.strip_prefix("# ") {
            cur = name.trim().to_string();
            continue;
        }
        let Some((k, v)) = info_key(t) else {
            continue;
        };
        let pairs = v.split(',').all(|p| {
            p.split_once('=')
                .is_some_and(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
        });
        let value = if pairs {
            let mut obj = serde_json::Map::new();
            for pair in v.split(',') {
                if let Some((pk, pv)) = pair.split_once('=') {
                    obj.insert(pk.to_string(), Json::String(pv.to_string()));
                }
            }
            Json::Object(obj)
        } else {
            Json::String(v.to_string())
        };
        let sec = sections.entry(cur.clone()).or_insert_with(|| json!({}));
        if let Some(m) = sec.as_object_mut() {
            m.insert(k.to_string(), value);
        }
    }
    Json::Object(sections)
}

/// Splits an `INFO` line into key and value. Keys may hold `:` themselves (a replica's backend is named
/// `server@host:port`), so for a `k=v,...` value the key ends at the last `:` before the first `=`, unless
/// that would put blanks in the key (`config_origin:... (settings: a = 1)`).
fn info_key(line: &str) -> Option<(&str, &str)> {
    if let Some(eq) = line.find('=')
        && let Some(colon) = line[..eq].rfind(':')
        && !line[..colon].contains(char::is_whitespace)
    {
        return Some((&line[..colon], &line[colon + 1..]));
    }
    line.split_once(':')
}

/// The admin command for a read view of the console, or None for an unknown view.
pub fn view_command(view: &str, n: usize) -> Option<Vec<String>> {
    let n = n.clamp(1, 1000).to_string();
    let c: &[&str] = match view {
        "info" => &["INFO"],
        "backends" => &["SHOW", "BACKENDS"],
        "listeners" => &["SHOW", "LISTENERS"],
        "pools" => &["SHOW", "POOLS"],
        "hotkeys" => &["HOTKEYS"],
        "bigkeys" => &["BIGKEYS"],
        "commandstats" => &["COMMANDSTATS"],
        "digests" => &["SHOW", "DIGESTS", &n],
        "slowlog" => &["SHOW", "SLOWLOG", &n],
        "config" => &["SHOW", "CONFIG"],
        _ => return None,
    };
    Some(c.iter().map(|s| s.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_keep_sql_with_spaces_and_sections() {
        let text = "AT_UNIX_MS      USER         BACKEND             TOOK_US  STATEMENT\n\
                    1700000000000   app          primary              301234  SELECT SLEEP(0.3), 'a  b'\n\
                    1700000000001   app          primary                  12  SELECT\n  1\n\
                    (2 older entries dropped)\n";
        let t = parse_table(text);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].columns.len(), 5);
        assert_eq!(t[0].rows[0][4], "SELECT SLEEP(0.3), 'a  b'");
        assert_eq!(t[0].rows[0][3], "301234");
        assert_eq!(t[0].rows[1][4], "SELECT\n1");
        assert_eq!(t[0].notes, vec!["(2 older entries dropped)"]);

        let stats = "# cache\nKEY        SAMPLES\nuser:1     40\n# other\nKEY  SAMPLES\n";
        let t = parse_table(stats);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "cache");
        assert_eq!(
            t[0].rows,
            vec![vec!["user:1".to_string(), "40".to_string()]]
        );
        assert_eq!(t[1].name, "other");
        assert!(t[1].rows.is_empty());
        assert!(parse_table("").is_empty());
    }

    #[test]
    fn info_sections_and_pairs() {
        let info = "# Server\r\nfurrow_version:0.1.0\r\nconfig_generation:3\r\n\r\n# Listeners\r\n\
                    listener_cache:kind=redis,address=127.0.0.1:1,requests=5\r\n";
        let j = parse_info(info);
        assert_eq!(j["Server"]["config_generation"], "3");
        assert_eq!(j["Listeners"]["listener_cache"]["requests"], "5");
        assert_eq!(j["Listeners"]["listener_cache"]["address"], "127.0.0.1:1");
        assert_eq!(parse_info("garbage\n:\n# X"), json!({"Server": {"": ""}}));
        let j = parse_info(
            "# Server\r\nconfig_origin:config-center a/B/c/d (settings: proxy.x = 1, proxy.y = 2)\r\n\
             # Backends\r\nbackend_cache_r1@127.0.0.1:7001:address=127.0.0.1:7001,state=up\r\n",
        );
        assert_eq!(
            j["Server"]["config_origin"],
            "config-center a/B/c/d (settings: proxy.x = 1, proxy.y = 2)"
        );
        assert_eq!(
            j["Backends"]["backend_cache_r1@127.0.0.1:7001"]["address"],
            "127.0.0.1:7001"
        );
    }

    #[test]
    fn wildcard_admin_hosts_use_the_reported_ip() {
        assert_eq!(reachable("0.0.0.0:7000", "10.0.0.5"), "10.0.0.5:7000");
        assert_eq!(reachable("[::]:7000", "fe80::1"), "[fe80::1]:7000");
        assert_eq!(reachable("127.0.0.1:7000", "10.0.0.5"), "127.0.0.1:7000");
        assert_eq!(reachable("0.0.0.0:7000", ""), "0.0.0.0:7000");
        assert_eq!(reachable("nonsense", "1.2.3.4"), "nonsense");
    }

    #[test]
    fn views_map_to_admin_commands() {
        assert_eq!(
            view_command("slowlog", 5000).unwrap(),
            vec!["SHOW", "SLOWLOG", "1000"]
        );
        assert_eq!(view_command("hotkeys", 0).unwrap(), vec!["HOTKEYS"]);
        assert!(view_command("shutdown", 1).is_none());
    }
}
