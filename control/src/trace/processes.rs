//! Every Furrow process of the fleet with its resource use: this control node (`crate::process`)
//! and each live proxy, whose admin `INFO` already reports its own (`# Server` and `# Process`).
//!
//! The proxies are found as for the fleet digests (`crate::web::fleet`); each is asked concurrently
//! with the admin port's timeout, and one that does not answer is listed with its error.

use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::center::Center;
use crate::error::Result;
use crate::model::{Level, User};
use crate::web::fleet;

/// One process's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProcessRow {
    /// `control` or `proxy`.
    pub role: String,
    /// The instance key (a proxy's `app/env/cluster/namespace/id`; `self` for this control node).
    pub key: String,
    /// The admin address it was read at (proxies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// Process id.
    pub pid: Option<u64>,
    /// Furrow's version.
    pub version: Option<String>,
    /// Seconds since it started.
    pub uptime_s: Option<u64>,
    /// User + system CPU seconds since start.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The figures of a proxy's admin `INFO` text (`key:value` lines; missing ones stay None). Err when
/// it has none of them (not a Furrow `INFO`).
pub fn parse_info(text: &str) -> std::result::Result<ProcessRow, String> {
    let mut r = ProcessRow {
        role: "proxy".into(),
        ..Default::default()
    };
    let mut seen = 0;
    for line in text.lines() {
        let Some((k, v)) = line.trim_end_matches('\r').split_once(':') else {
            continue;
        };
        let n = || v.trim().parse::<u64>().ok();
        match k {
            "process_id" => r.pid = n(),
            "furrow_version" => r.version = Some(v.trim().to_string()),
            "uptime_in_seconds" => r.uptime_s = n(),
            "process_cpu_seconds" => r.cpu_seconds = v.trim().parse().ok(),
            "process_rss_bytes" => r.rss_bytes = n(),
            "process_threads" => r.threads = n(),
            "process_open_fds" => r.open_fds = n(),
            _ => continue,
        }
        seen += 1;
    }
    if seen == 0 {
        return Err("INFO has no process figures".into());
    }
    Ok(r)
}

/// This control node and every live proxy `user` may read (`read` on the namespace it reports on).
pub async fn fleet_processes(c: &Center, user: &User) -> Result<Json> {
    let reports = c.instances(None, None)?;
    let proxies = c.read(|st| {
        reports
            .iter()
            .filter(|r| st.level(user, &r.app, &r.namespace) >= Level::Read)
            .filter_map(|r| fleet::proxy_of(st, r))
            .collect::<Vec<_>>()
    })?;
    let mut calls = tokio::task::JoinSet::new();
    for (i, p) in proxies.iter().enumerate() {
        let (Some(addr), pw) = (p.admin.clone(), p.admin_password.clone()) else {
            continue;
        };
        calls.spawn(async move {
            let r = fleet::admin_call(&addr, pw.as_deref(), &["INFO"]).await;
            (i, r.map_err(|e| e.to_string()).and_then(|t| parse_info(&t)))
        });
    }
    let mut rows: Vec<ProcessRow> = proxies
        .iter()
        .map(|p| ProcessRow {
            role: "proxy".into(),
            key: p.key.clone(),
            admin: p.admin.clone(),
            error: p.admin_error.clone(),
            ..Default::default()
        })
        .collect();
    while let Some(done) = calls.join_next().await {
        let Ok((i, r)) = done else { continue };
        match r {
            Ok(f) => {
                rows[i] = ProcessRow {
                    key: std::mem::take(&mut rows[i].key),
                    admin: rows[i].admin.take(),
                    ..f
                }
            }
            Err(e) => rows[i].error = Some(e),
        }
    }
    let me = crate::process::read();
    rows.insert(
        0,
        ProcessRow {
            role: "control".into(),
            key: "self".into(),
            pid: Some(u64::from(me.pid)),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            cpu_seconds: Some(me.cpu_seconds),
            rss_bytes: Some(me.rss_bytes),
            threads: Some(me.threads),
            open_fds: Some(me.open_fds),
            ..Default::default()
        },
    );
    let answered = rows.iter().filter(|r| r.pid.is_some()).count();
    Ok(json!({ "answered": answered, "processes": rows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_gives_the_process_figures() {
        let info = "# Server\r\nfurrow_version:0.1.0\r\nprocess_id:4242\r\nuptime_in_seconds:17\r\n\
                    executors:2\r\n\r\n# Process\r\nprocess_cpu_seconds:1.250\r\n\
                    process_rss_bytes:1048576\r\nprocess_threads:5\r\nprocess_open_fds:31\r\n";
        let r = parse_info(info).unwrap();
        assert_eq!(
            (r.pid, r.uptime_s, r.rss_bytes, r.threads, r.open_fds),
            (Some(4242), Some(17), Some(1 << 20), Some(5), Some(31))
        );
        assert_eq!(r.cpu_seconds, Some(1.25));
        assert_eq!(r.version.as_deref(), Some("0.1.0"));
        // An older proxy without `# Process`: what it has.
        let old = parse_info("process_id:7\r\n").unwrap();
        assert_eq!((old.pid, old.rss_bytes), (Some(7), None));
        assert!(parse_info("-ERR unknown command\r\n").is_err());
        assert_eq!(parse_info("process_id:x\r\n").unwrap().pid, None);
    }
}
