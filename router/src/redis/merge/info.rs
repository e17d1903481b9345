//! INFO over several shards merged into one INFO, as a client of one Redis expects it: the
//! sections in the first shard's order, counters summed over the shards (clients, stats,
//! keyspace), other fields as the first shard reports them, and the per-shard detail in an extra
//! `# Shards` section.

use std::collections::BTreeMap;

/// How a field of a section combines over the shards.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Combine {
    Sum,
    Max,
    First,
}

fn combine(section: &str, field: &str) -> Combine {
    match (section, field) {
        (
            "clients",
            "connected_clients"
            | "cluster_connections"
            | "blocked_clients"
            | "tracking_clients"
            | "clients_in_timeout_table",
        ) => Combine::Sum,
        ("clients", "client_recent_max_input_buffer" | "client_recent_max_output_buffer") => {
            Combine::Max
        }
        ("stats", "latest_fork_usec") => Combine::Max,
        ("stats", _) => Combine::Sum,
        ("memory", f) if f.starts_with("used_memory") && !f.ends_with("_perc") => Combine::Sum,
        _ => Combine::First,
    }
}

/// One section: its heading as the server wrote it and its fields in order.
struct Section {
    title: String,
    fields: Vec<(String, String)>,
}

fn parse(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        let line = line.trim_end_matches('\r');
        if let Some(title) = line.strip_prefix("# ") {
            out.push(Section {
                title: title.to_string(),
                fields: Vec::new(),
            });
        } else if let Some((k, v)) = line.split_once(':') {
            if out.is_empty() {
                out.push(Section {
                    title: String::new(),
                    fields: Vec::new(),
                });
            }
            if let Some(s) = out.last_mut() {
                s.fields.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

/// `keys=1,expires=0,avg_ttl=0` as (keys, expires, avg_ttl).
fn keyspace(v: &str) -> (u64, u64, u64) {
    let mut r = (0, 0, 0);
    for kv in v.split(',') {
        let (k, n) = kv.split_once('=').unwrap_or((kv, "0"));
        let n: u64 = n.parse().unwrap_or(0);
        match k {
            "keys" => r.0 = n,
            "expires" => r.1 = n,
            "avg_ttl" => r.2 = n,
            _ => {}
        }
    }
    r
}

/// A shard's value of `field` in `section` (lower case), if it reported it.
fn field<'a>(sections: &'a [Section], section: &str, field: &str) -> Option<&'a str> {
    sections
        .iter()
        .filter(|s| s.title.eq_ignore_ascii_case(section))
        .flat_map(|s| s.fields.iter())
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.as_str())
}

/// Merges the shards' INFO texts (`Err` for a shard that answered an error). `head` (the proxy's
/// own section) is put first; the `# Shards` section is added when `head` is (the default
/// sections were asked for).
pub fn merge_info(
    head: &str,
    names: &[(String, String)],
    texts: &[Result<String, String>],
) -> String {
    let parsed: Vec<Option<Vec<Section>>> = texts
        .iter()
        .map(|t| t.as_ref().ok().map(|t| parse(t)))
        .collect();
    let mut out = String::from(head);
    // The first shard that answered gives the layout.
    let layout = parsed.iter().flatten().next();
    let mut first_section = out.is_empty();
    if let Some(layout) = layout {
        for sec in layout {
            let lower = sec.title.to_ascii_lowercase();
            if !first_section {
                out.push_str("\r\n");
            }
            first_section = false;
            if !sec.title.is_empty() {
                out.push_str(&format!("# {}\r\n", sec.title));
            }
            if lower == "keyspace" {
                // Every db any shard has, in db order.
                let mut dbs: BTreeMap<u64, (u64, u64, u128)> = BTreeMap::new();
                for p in parsed.iter().flatten() {
                    for s in p
                        .iter()
                        .filter(|s| s.title.eq_ignore_ascii_case("keyspace"))
                    {
                        for (k, v) in &s.fields {
                            let Some(n) = k.strip_prefix("db").and_then(|n| n.parse().ok()) else {
                                continue;
                            };
                            let (keys, expires, ttl) = keyspace(v);
                            let e = dbs.entry(n).or_default();
                            e.0 += keys;
                            e.1 += expires;
                            e.2 += u128::from(ttl) * u128::from(expires);
                        }
                    }
                }
                for (n, (keys, expires, ttl_sum)) in dbs {
                    let avg = ttl_sum.checked_div(u128::from(expires)).unwrap_or(0);
                    out.push_str(&format!(
                        "db{n}:keys={keys},expires={expires},avg_ttl={avg}\r\n"
                    ));
                }
                continue;
            }
            for (k, first) in &sec.fields {
                let how = combine(&lower, k);
                let value = match how {
                    Combine::First => None,
                    Combine::Sum | Combine::Max => {
                        let nums: Option<Vec<i64>> = parsed
                            .iter()
                            .flatten()
                            .map(|p| field(p, &sec.title, k).and_then(|v| v.parse::<i64>().ok()))
                            .collect();
                        nums.map(|v| {
                            if how == Combine::Sum {
                                v.iter().fold(0i64, |a, b| a.saturating_add(*b))
                            } else {
                                v.into_iter().max().unwrap_or(0)
                            }
                        })
                    }
                };
                match value {
                    Some(v) => out.push_str(&format!("{k}:{v}\r\n")),
                    None => out.push_str(&format!("{k}:{first}\r\n")),
                }
            }
        }
    }
    if !head.is_empty() {
        if !first_section {
            out.push_str("\r\n");
        }
        out.push_str("# Shards\r\n");
        for ((name, address), p) in names.iter().zip(&parsed) {
            let line = match p {
                Some(p) => {
                    let get = |s: &str, f: &str| field(p, s, f).unwrap_or("").to_string();
                    let keys: u64 = p
                        .iter()
                        .filter(|s| s.title.eq_ignore_ascii_case("keyspace"))
                        .flat_map(|s| s.fields.iter())
                        .map(|(_, v)| keyspace(v).0)
                        .sum();
                    format!(
                        "address={address},role={},connected_clients={},blocked_clients={},used_memory={},keys={keys},total_commands_processed={}",
                        get("replication", "role"),
                        get("clients", "connected_clients"),
                        get("clients", "blocked_clients"),
                        get("memory", "used_memory"),
                        get("stats", "total_commands_processed"),
                    )
                }
                None => {
                    let e = names
                        .iter()
                        .zip(texts)
                        .find(|((n, _), _)| n == name)
                        .and_then(|(_, t)| t.as_ref().err())
                        .map(|e| e.replace([',', '\r', '\n'], " "))
                        .unwrap_or_default();
                    format!("address={address},error={e}")
                }
            };
            out.push_str(&format!("shard_{name}:{line}\r\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_and_layout_follows_the_first_shard() {
        let a = "# Server\r\nredis_version:7.0.15\r\n\r\n# Clients\r\nconnected_clients:2\r\nblocked_clients:1\r\nmaxclients:10000\r\n\r\n# Stats\r\nkeyspace_hits:3\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=100\r\n".to_string();
        let b = "# Server\r\nredis_version:7.0.15\r\n\r\n# Clients\r\nconnected_clients:3\r\nblocked_clients:0\r\nmaxclients:10000\r\n\r\n# Stats\r\nkeyspace_hits:4\r\n\r\n# Keyspace\r\ndb0:keys=5,expires=1,avg_ttl=300\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n".to_string();
        let names = vec![("r1".into(), "a:1".into()), ("r2".into(), "b:2".into())];
        let got = merge_info("", &names, &[Ok(a.clone()), Ok(b.clone())]);
        assert_eq!(
            got,
            "# Server\r\nredis_version:7.0.15\r\n\r\n# Clients\r\nconnected_clients:5\r\nblocked_clients:1\r\nmaxclients:10000\r\n\r\n# Stats\r\nkeyspace_hits:7\r\n\r\n# Keyspace\r\ndb0:keys=7,expires=2,avg_ttl=200\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n"
        );
        let got = merge_info(
            "# Proxy\r\nproxy:furrow\r\n",
            &names,
            &[Ok(a), Err("ERR down".into())],
        );
        assert!(
            got.starts_with("# Proxy\r\nproxy:furrow\r\n\r\n# Server\r\n"),
            "{got}"
        );
        assert!(got.contains("connected_clients:2\r\n"), "{got}");
        assert!(got.ends_with("\r\n# Shards\r\nshard_r1:address=a:1,role=,connected_clients=2,blocked_clients=1,used_memory=,keys=2,total_commands_processed=\r\nshard_r2:address=b:2,error=ERR down\r\n"), "{got}");
    }
}
