//! Checks that need the whole config: duplicates, dangling references, slot coverage, impossible
//! combinations.

use std::collections::HashMap;

use super::model::{Config, ListenerKind, RedisDistribution, Server};
use super::reader::{Diags, Span};

fn duplicates<'a>(d: &mut Diags, what: &str, items: impl Iterator<Item = (&'a str, Span, String)>) {
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for (key, span, path) in items {
        if seen.insert(key, ()).is_some() {
            d.error(span, &path, format!("duplicate {what} `{key}`"));
        }
    }
}

fn check_servers(d: &mut Diags, path: &str, servers: &[&Server]) {
    duplicates(
        d,
        "server name",
        servers
            .iter()
            .map(|s| (s.name.as_str(), s.span.clone(), format!("{path}.name"))),
    );
    duplicates(
        d,
        "server address",
        servers.iter().map(|s| {
            (
                s.address.as_str(),
                s.span.clone(),
                format!("{path}.address"),
            )
        }),
    );
}

/// Reports every cross-reference problem of `c` into `d`.
pub(crate) fn validate(c: &Config, d: &mut Diags) {
    duplicates(
        d,
        "listener name",
        c.listeners.iter().enumerate().map(|(i, l)| {
            (
                l.name.as_str(),
                l.span.clone(),
                format!("listeners[{i}].name"),
            )
        }),
    );
    // Port 0 means "any free port": such listeners never collide.
    let addrs: Vec<String> = c.listeners.iter().map(|l| l.address.to_string()).collect();
    duplicates(
        d,
        "listener address",
        c.listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.address.port() != 0)
            .map(|(i, l)| {
                (
                    addrs[i].as_str(),
                    l.span.clone(),
                    format!("listeners[{i}].address"),
                )
            }),
    );
    if let (Some(admin), Some(metrics)) = (c.proxy.admin, c.proxy.metrics)
        && admin == metrics
        && admin.port() != 0
    {
        d.error(
            0..0,
            "proxy.metrics",
            "the metrics address is the same as the admin address",
        );
    }

    for (i, l) in c.listeners.iter().enumerate() {
        let path = format!("listeners[{i}].group");
        let (exists, other) = match l.kind {
            ListenerKind::Redis => (
                c.redis_group(&l.group).is_some(),
                c.mysql_group(&l.group).is_some(),
            ),
            ListenerKind::Mysql => (
                c.mysql_group(&l.group).is_some(),
                c.redis_group(&l.group).is_some(),
            ),
        };
        if !exists {
            let section = match l.kind {
                ListenerKind::Redis => "redis_groups",
                ListenerKind::Mysql => "mysql_groups",
            };
            let msg = if other {
                format!(
                    "group `{}` is not a {} group (listener kind is \"{}\")",
                    l.group,
                    l.kind.as_str(),
                    l.kind.as_str()
                )
            } else {
                format!(
                    "unknown group `{}`; define it as [{section}.{}]",
                    l.group, l.group
                )
            };
            d.error(l.group_span.clone(), &path, msg);
        }
        if let (Some(n), Some(total)) = (l.executors, c.proxy.executors)
            && n > total
        {
            d.error(
                l.span.clone(),
                &format!("listeners[{i}].executors"),
                format!("{n} executors requested but [proxy] executors = {total}"),
            );
        }
    }

    for g in &c.redis_groups {
        let path = format!("redis_groups.{}", g.name);
        if g.servers_from.is_some() && c.proxy.registry.is_none() {
            d.error(
                g.span.clone(),
                &format!("{path}.servers_from"),
                "a registry service needs a [registry] table (url, env)",
            );
        }
        // A group filled from the registry is checked when it is filled (`Config::with_endpoints`).
        if g.servers.is_empty() && g.servers_from.is_none() {
            d.error(
                g.span.clone(),
                &format!("{path}.servers"),
                "a group needs at least one server",
            );
        }
        check_servers(
            d,
            &format!("{path}.servers"),
            &g.servers.iter().collect::<Vec<_>>(),
        );
        if matches!(
            g.distribution,
            RedisDistribution::Ketama | RedisDistribution::Modula
        ) && !g.servers.is_empty()
            && g.servers.iter().all(|s| s.weight == 0)
        {
            d.error(
                g.span.clone(),
                &format!("{path}.servers"),
                "every server has weight 0",
            );
        }
        match g.distribution {
            RedisDistribution::Slots => check_slots(d, &path, g),
            _ if !g.slots.is_empty() => d.error(
                g.slots[0].span.clone(),
                &format!("{path}.slots"),
                "a slot table is only used with distribution = \"slots\"",
            ),
            _ => {}
        }
        check_replicas_and_sentinels(d, &path, g);
    }

    for g in &c.mysql_groups {
        let path = format!("mysql_groups.{}", g.name);
        for (key, from) in [
            ("primary_from", &g.primary_from),
            ("replicas_from", &g.replicas_from),
        ] {
            if from.is_some() && c.proxy.registry.is_none() {
                d.error(
                    g.primary.span.clone(),
                    &format!("{path}.{key}"),
                    "a registry service needs a [registry] table (url, env)",
                );
            }
        }
        let mut all: Vec<&Server> = vec![&g.primary];
        all.extend(g.replicas.iter());
        check_servers(d, &format!("{path}.replicas"), &all);
    }

    for u in &c.users {
        for (l, span) in u.listeners.iter().zip(&u.listener_spans) {
            if c.listener(l).is_none() {
                d.error(
                    span.clone(),
                    &format!("users.{}.listeners", u.name),
                    format!("unknown listener `{l}`"),
                );
            }
        }
        let mut mysql = c
            .listeners_of(u)
            .filter(|l| l.kind == super::model::ListenerKind::Mysql)
            .peekable();
        if u.require_tls && mysql.peek().is_some() && mysql.all(|l| l.tls.is_none()) {
            d.error(
                u.span.clone(),
                &format!("users.{}.require_tls", u.name),
                "`require_tls = true`, but no MySQL listener this user may use has `tls`: \
                 the user could never log in",
            );
        }
    }
}

fn check_slots(d: &mut Diags, path: &str, g: &super::model::RedisGroup) {
    if g.slots.is_empty() {
        d.error(
            g.span.clone(),
            &format!("{path}.slots"),
            "distribution = \"slots\" needs a slot table covering 0-16383",
        );
        return;
    }
    let mut owner: Vec<Option<usize>> = vec![None; 16384];
    for (i, r) in g.slots.iter().enumerate() {
        if !g.servers.iter().any(|s| s.name == r.server) {
            d.error(
                r.span.clone(),
                &format!("{path}.slots[{i}].server"),
                format!(
                    "unknown server `{}` (name a server of this group)",
                    r.server
                ),
            );
        }
        if let Some(to) = &r.migrating_to
            && (to == &r.server || !g.servers.iter().any(|s| &s.name == to))
        {
            d.error(
                r.span.clone(),
                &format!("{path}.slots[{i}].migrating_to"),
                format!(
                    "`migrating_to = \"{to}\"` must name another server of this group than `server`"
                ),
            );
        }
        let mut conflict = None;
        for slot in r.start..=r.end {
            match owner[usize::from(slot)] {
                Some(prev) => {
                    conflict.get_or_insert((slot, prev));
                }
                None => owner[usize::from(slot)] = Some(i),
            }
        }
        if let Some((slot, prev)) = conflict {
            d.error(
                r.span.clone(),
                &format!("{path}.slots[{i}].range"),
                format!("slot {slot} is already assigned by slots[{prev}]"),
            );
        }
    }
    if let Some(first_gap) = owner.iter().position(Option::is_none) {
        let end = owner[first_gap..]
            .iter()
            .position(Option::is_some)
            .map_or(16383, |n| first_gap + n - 1);
        d.error(
            g.span.clone(),
            &format!("{path}.slots"),
            format!("slots {first_gap}-{end} are not assigned to any server"),
        );
    }
}

/// Checks the `[sharding.NAME]` sections: references to listeners and groups, shard names, and the
/// rules themselves (compiled exactly as the planner will use them).
pub(crate) fn validate_sharding(c: &Config, list: &[super::model::Sharding], d: &mut Diags) {
    let mut listeners_seen: HashMap<&str, &str> = HashMap::new();
    for s in list {
        let path = format!("sharding.{}", s.name);
        match c.listener(&s.listener) {
            None => d.error(
                s.span.clone(),
                &format!("{path}.listener"),
                format!("unknown listener `{}`", s.listener),
            ),
            Some(l) if l.kind != ListenerKind::Mysql => d.error(
                s.span.clone(),
                &format!("{path}.listener"),
                format!("listener `{}` is not a mysql listener", s.listener),
            ),
            Some(_) => {}
        }
        if let Some(other) = listeners_seen.insert(s.listener.as_str(), s.name.as_str()) {
            d.error(
                s.span.clone(),
                &format!("{path}.listener"),
                format!(
                    "listener `{}` already serves sharding `{other}`",
                    s.listener
                ),
            );
        }
        if s.shards.is_empty() {
            d.error(
                s.span.clone(),
                &format!("{path}.shards"),
                "at least one shard is needed",
            );
        }
        duplicates(
            d,
            "shard name",
            s.shards.iter().map(|x| {
                (
                    x.name.as_str(),
                    x.span.clone(),
                    format!("{path}.shards.name"),
                )
            }),
        );
        for (i, x) in s.shards.iter().enumerate() {
            if c.mysql_group(&x.group).is_none() {
                d.error(
                    x.span.clone(),
                    &format!("{path}.shards[{i}].group"),
                    format!("unknown mysql group `{}`", x.group),
                );
            }
        }
        if let Some(def) = &s.default_shard
            && !s.shards.iter().any(|x| &x.name == def)
        {
            d.error(
                s.span.clone(),
                &format!("{path}.default_shard"),
                format!("`{def}` is not one of the shards"),
            );
        }
        let lower: Vec<String> = s
            .tables
            .iter()
            .map(|t| t.name.to_ascii_lowercase())
            .collect();
        duplicates(
            d,
            "table",
            s.tables
                .iter()
                .zip(&lower)
                .map(|(t, n)| (n.as_str(), t.span.clone(), format!("{path}.tables.name"))),
        );
        for b in &s.broadcast {
            if lower.contains(&b.to_ascii_lowercase()) {
                d.error(
                    s.span.clone(),
                    &format!("{path}.broadcast"),
                    format!("table `{b}` is both sharded and broadcast"),
                );
            }
        }
        for (i, t) in s.tables.iter().enumerate() {
            if let Err(e) = crate::sql::shard::compile_table(t, s.shards.len().max(1)) {
                d.error(
                    t.span.clone(),
                    &format!("{path}.tables[{i}]"),
                    e.to_string(),
                );
            }
        }
        if s.tables.iter().filter(|t| t.reshard_to.is_some()).count() > 1 {
            d.error(
                s.span.clone(),
                &format!("{path}.tables"),
                "one table of a sharded database reshards at a time (`reshard_to` on several)",
            );
        }
        for (i, t) in s.tables.iter().enumerate() {
            let at = format!("{path}.tables[{i}]");
            match (&t.reshard_to, &t.reshard_phase) {
                (Some(to), _) if !lower.contains(&to.to_ascii_lowercase()) => d.error(
                    t.span.clone(),
                    &format!("{at}.reshard_to"),
                    format!("`{to}` is not a table rule of this section (the new layout is declared as one)"),
                ),
                (Some(to), _) if to.eq_ignore_ascii_case(&t.name) => d.error(
                    t.span.clone(),
                    &format!("{at}.reshard_to"),
                    "a table cannot reshard to itself",
                ),
                (Some(_), None) => d.error(
                    t.span.clone(),
                    &format!("{at}.reshard_phase"),
                    "`reshard_to` needs `reshard_phase` (copy or cutover)",
                ),
                (None, Some(_)) => d.error(
                    t.span.clone(),
                    &format!("{at}.reshard_phase"),
                    "`reshard_phase` without `reshard_to`",
                ),
                (Some(_), Some(_)) => {
                    // The layouts must fit each other (same key, tables of its own): the rules
                    // of the whole section compile only then.
                    if let Err(e) = crate::sql::shard::ShardingRules::compile(s) {
                        d.error(t.span.clone(), &format!("{at}.reshard_to"), e.to_string());
                    }
                }
                _ => {}
            }
        }
    }
}

/// Replicas, `read_from` and Sentinel settings of a Redis group.
fn check_replicas_and_sentinels(d: &mut Diags, path: &str, g: &super::model::RedisGroup) {
    use super::model::ReadFrom;
    let has_replicas = g.servers.iter().any(|s| !s.replicas.is_empty());
    if g.distribution == RedisDistribution::Cluster && (has_replicas || !g.sentinels.is_empty()) {
        d.error(
            g.span.clone(),
            path,
            "replicas and sentinels are not used with distribution = \"cluster\" (the cluster \
             knows its replicas and fails over by itself)",
        );
        return;
    }
    if g.read_from != ReadFrom::Primary && !has_replicas {
        d.error(
            g.span.clone(),
            &format!("{path}.read_from"),
            "reading from replicas needs `replicas` on at least one server",
        );
    }
    for (i, s) in g.servers.iter().enumerate() {
        if s.sentinel_master.is_some() && g.sentinels.is_empty() {
            d.error(
                s.span.clone(),
                &format!("{path}.servers[{i}].sentinel_master"),
                "`sentinel_master` needs `sentinels` on the group",
            );
        }
        for r in &s.replicas {
            if r == &s.address {
                d.error(
                    s.span.clone(),
                    &format!("{path}.servers[{i}].replicas"),
                    format!("`{r}` is the server's own address"),
                );
            }
        }
    }
}
