//! Backends named by a registry service instead of by address.
//!
//! A `[registry]` table says which control center to ask (`url`, `env`, `token`, `snapshot_dir`), and a
//! group names a service where it would list addresses: `servers_from` in a `[redis_groups.NAME]`,
//! `primary_from` / `replicas_from` in a `[mysql_groups.NAME]`. The file itself stays a complete,
//! validated [`Config`] with those lists empty (a placeholder primary); the proxy process looks the
//! services up and calls [`Config::with_endpoints`], a pure function that fills the lists with the
//! instances and validates the result exactly as a file would be (duplicates, weights, an empty group).
//! Every instance change gives a new resolved config that is published like a reload, so the data path
//! never knows where its addresses came from.

use std::path::{Path, PathBuf};

use super::model::{Config, Server};
use super::reader::{Diags, TableReader};

/// `[registry]`: where services named by `*_from` keys are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// The control center, `http://HOST:PORT`.
    pub url: String,
    /// The registry environment (`DEV`, `PRO`, ...).
    pub env: String,
    /// API token (default: `$FURROW_TOKEN`).
    pub token: Option<String>,
    /// Where the last discovery of every service is kept, so that the proxy starts when the center is
    /// down (relative paths are taken from the config file's folder).
    pub snapshot_dir: Option<PathBuf>,
    /// The proxy's own registry service: the governance rules published on it (access lists, per-user
    /// rate limits, circuit breakers) apply to the proxy's clients and backends.
    pub service: Option<String>,
    /// `register = true`: the proxy registers each of its listeners as an instance of `service`
    /// (version, `kind`/`listener` tags), beats, and deregisters on a graceful shutdown.
    pub register: bool,
    /// The address registered for listeners bound to a wildcard address (`0.0.0.0`, `::`).
    pub advertise: Option<String>,
    /// How often the proxy reports its calls to the followed services' instances, by instance
    /// version, to the center (`report_calls_ms`, default 5,000; 0: never).
    pub report_calls_ms: u64,
}

/// One instance of a registry service, as a backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The instance id (server name: ketama hashes it, metrics and admin output show it).
    pub name: String,
    /// `HOST:PORT`.
    pub address: String,
    /// Relative weight.
    pub weight: u32,
}

fn valid_url(s: &str) -> bool {
    s.strip_prefix("http://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
}

/// Service names: what the registry accepts (letters, digits, `.`, `-`, `_`; 1–128 characters).
fn valid_service(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

pub(crate) fn read_registry(
    mut t: TableReader<'_, '_>,
    d: &mut Diags,
    base: &Path,
) -> Option<RegistrySettings> {
    let path = t.path().to_string();
    let url = t.req_str(d, "url");
    let env = t.req_str(d, "env");
    let token = t.opt_str(d, "token").map(|s| s.into_inner());
    let snapshot_dir = t
        .opt_str(d, "snapshot_dir")
        .map(|s| base.join(s.into_inner()));
    let service = read_service(&mut t, d, "service");
    let register = t.opt_bool(d, "register");
    let advertise = t.opt_str(d, "advertise");
    let report_calls = t.opt_u64(d, "report_calls_ms", 0, 3_600_000);
    t.finish(d);
    if let Some(r) = &report_calls
        && (1..100).contains(r.get_ref())
    {
        d.error(
            r.span(),
            &format!("{path}.report_calls_ms"),
            "report_calls_ms is 0 (never) or 100-3600000",
        );
        return None;
    }
    if let Some(r) = &register
        && *r.get_ref()
        && service.is_none()
    {
        d.error(
            r.span(),
            &format!("{path}.register"),
            "register = true needs `service` (the service the proxy's listeners register with)",
        );
        return None;
    }
    if let Some(a) = &advertise
        && a.get_ref().parse::<std::net::IpAddr>().is_err()
    {
        d.error(
            a.span(),
            &format!("{path}.advertise"),
            format!("invalid address `{}`; expected an IP address", a.get_ref()),
        );
        return None;
    }
    let url = url?;
    if !valid_url(url.get_ref()) {
        d.error(
            url.span(),
            &format!("{path}.url"),
            format!(
                "invalid url `{}`; expected http://HOST:PORT of a furrow control center",
                url.get_ref()
            ),
        );
        return None;
    }
    let env = env?;
    if !valid_service(env.get_ref()) {
        d.error(
            env.span(),
            &format!("{path}.env"),
            "expected an environment name (letters, digits, `.`, `-`, `_`)",
        );
        return None;
    }
    Some(RegistrySettings {
        url: url.into_inner().trim_end_matches('/').to_string(),
        env: env.into_inner(),
        token,
        snapshot_dir,
        service,
        register: register.is_some_and(|r| r.into_inner()),
        advertise: advertise.map(|a| a.into_inner()),
        report_calls_ms: report_calls.map_or(5_000, |r| r.into_inner()),
    })
}

/// An optional registry service name (`servers_from`, `primary_from`, ...).
pub(crate) fn read_service(
    t: &mut TableReader<'_, '_>,
    d: &mut Diags,
    key: &'static str,
) -> Option<String> {
    let s = t.opt_str(d, key)?;
    if valid_service(s.get_ref()) {
        Some(s.into_inner())
    } else {
        d.error(
            s.span(),
            &format!("{}.{key}", t.path()),
            format!(
                "invalid service name `{}`; expected 1-128 letters, digits, `.`, `-` or `_`",
                s.get_ref()
            ),
        );
        None
    }
}

/// The placeholder primary of a group whose primary comes from the registry (never published: the
/// process resolves it before the config is used).
pub(crate) fn placeholder(service: &str, span: super::reader::Span) -> Server {
    Server {
        name: format!("registry:{service}"),
        address: String::new(),
        weight: 1,
        replicas: Vec::new(),
        sentinel_master: None,
        span,
    }
}

impl Config {
    /// The registry services this config names (`servers_from`, `primary_from`, `replicas_from`),
    /// sorted, without duplicates.
    pub fn registry_services(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .redis_groups
            .iter()
            .filter_map(|g| g.servers_from.clone())
            .chain(
                self.mysql_groups
                    .iter()
                    .flat_map(|g| [g.primary_from.clone(), g.replicas_from.clone()])
                    .flatten(),
            )
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// This config with every `*_from` list filled from `lookup` (a service's current instances), and
    /// validated as a whole. Fails, naming the group and the service, when a service is unknown to
    /// `lookup`, when a primary service does not have exactly one instance, or when the filled config
    /// is invalid (an empty Redis group, duplicate addresses, every weight 0). The `*_from` keys stay
    /// set, so the result can be resolved again from the same base.
    pub fn with_endpoints(
        &self,
        lookup: &dyn Fn(&str) -> Option<Vec<Endpoint>>,
    ) -> Result<Config, String> {
        let mut out = self.clone();
        let mut errors = Vec::new();
        let servers = |service: &str, span: &super::reader::Span, errors: &mut Vec<String>| {
            let Some(mut list) = lookup(service) else {
                errors.push(format!("registry service `{service}` is not known"));
                return Vec::new();
            };
            // A stable order: ketama and modula depend on it, and two proxies must agree.
            list.sort_by(|a, b| a.name.cmp(&b.name));
            list.into_iter()
                .map(|e| Server {
                    name: e.name,
                    address: e.address,
                    weight: e.weight,
                    replicas: Vec::new(),
                    sentinel_master: None,
                    span: span.clone(),
                })
                .collect::<Vec<_>>()
        };
        for g in &mut out.redis_groups {
            if let Some(s) = &g.servers_from {
                g.servers = servers(s, &g.span, &mut errors);
                if g.servers.is_empty() {
                    errors.push(format!(
                        "redis_groups.{}.servers_from: service `{s}` has no instance",
                        g.name
                    ));
                }
            }
        }
        for g in &mut out.mysql_groups {
            let span = g.primary.span.clone();
            if let Some(s) = &g.primary_from {
                let mut list = servers(s, &span, &mut errors);
                match list.len() {
                    1 => g.primary = list.remove(0),
                    0 => errors.push(format!(
                        "mysql_groups.{}.primary_from: service `{s}` has no instance",
                        g.name
                    )),
                    n => errors.push(format!(
                        "mysql_groups.{}.primary_from: service `{s}` has {n} instances; a primary \
                         service must have exactly one",
                        g.name
                    )),
                }
            }
            if let Some(s) = &g.replicas_from {
                g.replicas = servers(s, &span, &mut errors);
            }
        }
        let mut d = Diags::default();
        super::validate::validate(&out, &mut d);
        errors.extend(d.list.into_iter().map(|p| {
            if p.path.is_empty() {
                p.message
            } else {
                format!("{}: {}", p.path, p.message)
            }
        }));
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(format!(
                "backends from the registry rejected: {}",
                errors.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[registry]
url = "http://127.0.0.1:7070"
env = "DEV"
service = "edge-proxy"

[[listeners]]
name = "r"
kind = "redis"
address = "127.0.0.1:0"
group = "cache"

[[listeners]]
name = "m"
kind = "mysql"
address = "127.0.0.1:0"
group = "db"

[redis_groups.cache]
servers_from = "redis-cache"

[mysql_groups.db]
user = "app"
primary_from = "db-primary"
replicas_from = "db-replicas"
"#;

    fn ep(name: &str, address: &str, weight: u32) -> Endpoint {
        Endpoint {
            name: name.into(),
            address: address.into(),
            weight,
        }
    }

    #[test]
    fn registry_groups_parse_and_resolve() {
        let c = super::super::parse("t.toml", BASE).expect("valid");
        let r = c.proxy.registry.clone().expect("registry");
        assert_eq!(r.url, "http://127.0.0.1:7070");
        assert_eq!(r.service.as_deref(), Some("edge-proxy"));
        assert_eq!(
            c.registry_services(),
            ["db-primary", "db-replicas", "redis-cache"]
        );
        let lookup = |s: &str| -> Option<Vec<Endpoint>> {
            match s {
                "redis-cache" => Some(vec![
                    ep("r2", "127.0.0.1:7002", 100),
                    ep("r1", "127.0.0.1:7001", 100),
                ]),
                "db-primary" => Some(vec![ep("p", "127.0.0.1:3400", 100)]),
                "db-replicas" => Some(vec![ep("s1", "127.0.0.1:3401", 50)]),
                _ => None,
            }
        };
        let resolved = c.with_endpoints(&lookup).expect("resolves");
        let g = resolved.redis_group("cache").expect("group");
        let names: Vec<&str> = g.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["r1", "r2"], "sorted by instance id");
        let m = resolved.mysql_group("db").expect("group");
        assert_eq!(m.primary.address, "127.0.0.1:3400");
        assert_eq!(m.replicas[0].weight, 50);
        // Resolving again from the resolved config gives the same lists.
        let again = resolved.with_endpoints(&lookup).expect("again");
        assert_eq!(again.redis_group("cache").map(|g| g.servers.len()), Some(2));
    }

    #[test]
    fn resolution_failures_name_the_group_and_service() {
        let c = super::super::parse("t.toml", BASE).expect("valid");
        let empty = |s: &str| -> Option<Vec<Endpoint>> {
            (s != "db-replicas").then(|| {
                if s == "db-primary" {
                    vec![ep("p1", "127.0.0.1:1", 1), ep("p2", "127.0.0.1:2", 1)]
                } else {
                    Vec::new()
                }
            })
        };
        let e = c.with_endpoints(&empty).expect_err("invalid");
        assert!(e.contains("`db-replicas` is not known"), "{e}");
        assert!(e.contains("has 2 instances"), "{e}");
        assert!(
            e.contains("redis_groups.cache.servers_from: service `redis-cache` has no instance"),
            "{e}"
        );
        let dup = |s: &str| -> Option<Vec<Endpoint>> {
            Some(vec![
                ep(&format!("{s}-a"), "127.0.0.1:9", 1),
                ep(&format!("{s}-b"), "127.0.0.1:9", 1),
            ])
        };
        let e = c.with_endpoints(&dup).expect_err("duplicate address");
        assert!(e.contains("duplicate server address"), "{e}");
    }

    #[test]
    fn registry_config_errors_are_located() {
        let bad = |text: &str| match super::super::parse("t.toml", text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        };
        let e = bad(&BASE.replace("env = \"DEV\"\n", "env = \"DEV\"\nreport_calls_ms = 50\n"));
        assert!(
            e.contains("registry.report_calls_ms: report_calls_ms is 0 (never) or 100-3600000"),
            "{e}"
        );
        let e = bad(&BASE.replace("[registry]\nurl = \"http://127.0.0.1:7070\"\nenv = \"DEV\"\nservice = \"edge-proxy\"\n", ""));
        assert!(
            e.contains(
                "redis_groups.cache.servers_from: a registry service needs a [registry] table"
            ),
            "{e}"
        );
        let e = bad(&BASE.replace("service = \"edge-proxy\"\n", "register = true\n"));
        assert!(
            e.contains("registry.register: register = true needs `service`"),
            "{e}"
        );
        let e = bad(&BASE.replace(
            "service = \"edge-proxy\"\n",
            "service = \"edge-proxy\"\nregister = true\nadvertise = \"here\"\n",
        ));
        assert!(
            e.contains("registry.advertise: invalid address `here`"),
            "{e}"
        );
        let ok = super::super::parse(
            "t.toml",
            &BASE.replace(
                "service = \"edge-proxy\"\n",
                "service = \"edge-proxy\"\nregister = true\nadvertise = \"10.0.0.7\"\n",
            ),
        )
        .expect("register with advertise");
        let s = ok.proxy.registry.expect("registry");
        assert!(s.register);
        assert_eq!(s.advertise.as_deref(), Some("10.0.0.7"));
        let e = bad(&BASE.replace("http://127.0.0.1:7070", "ftp://x"));
        assert!(
            e.contains("t.toml:3:7: error: registry.url: invalid url"),
            "{e}"
        );
        let e = bad(&BASE.replace(
            "servers_from = \"redis-cache\"",
            "servers_from = \"redis cache\"\nservers = [{ address = \"127.0.0.1:1\" }]",
        ));
        assert!(e.contains("invalid service name `redis cache`"), "{e}");
        let e = bad(&BASE.replace(
            "servers_from = \"redis-cache\"",
            "servers_from = \"redis-cache\"\nservers = [{ address = \"127.0.0.1:1\" }]",
        ));
        assert!(
            e.contains(
                "redis_groups.cache.servers_from: `servers_from` and `servers` exclude each other"
            ),
            "{e}"
        );
        let e = bad(&BASE.replace(
            "servers_from = \"redis-cache\"",
            "servers_from = \"redis-cache\"\ndistribution = \"cluster\"",
        ));
        assert!(
            e.contains("not with distribution = \"slots\" or \"cluster\""),
            "{e}"
        );
        let e = bad(&BASE.replace(
            "primary_from = \"db-primary\"",
            "primary_from = \"db-primary\"\nprimary = { address = \"127.0.0.1:1\" }",
        ));
        assert!(
            e.contains("`primary_from` and `primary` exclude each other"),
            "{e}"
        );
        let e = bad(&BASE.replace("primary_from = \"db-primary\"\n", ""));
        assert!(e.contains("missing required key `primary`"), "{e}");
        let e = bad(&BASE.replace("env = \"DEV\"", "env = \"DEV\"\nurll = \"x\""));
        assert!(e.contains("registry.urll"), "{e}");
    }
}
