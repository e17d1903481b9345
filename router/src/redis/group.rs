//! A configured Redis group's key → server mapping, built from its `[redis_groups.*]` section.

use crate::config::{RedisDistribution, RedisGroup};

use super::distribution::{Distribution, KeyHasher};
use super::error::RedisRouteError;
use super::hash::HashFunction;
use super::ketama::KetamaServer;
use super::slots::SlotTable;

/// Builds the key → server mapping of `group`, every server live: ejection answers errors instead
/// of re-hashing, so keys never silently move. `cluster` groups start from the configured (or an
/// even) slot table; the proxy follows the cluster's own map from there.
pub fn group_distribution(group: &RedisGroup) -> Result<Distribution, RedisRouteError> {
    let function = HashFunction::from_name(&group.hash)?;
    let hasher = KeyHasher {
        function,
        tag: group.hash_tag,
    };
    let servers: Vec<KetamaServer> = group
        .servers
        .iter()
        .map(|s| KetamaServer::named(s.name.clone(), s.weight.max(1)))
        .collect();
    match group.distribution {
        RedisDistribution::Ketama => Distribution::ketama(hasher, &servers),
        RedisDistribution::Modula => Distribution::modula(hasher, &servers),
        RedisDistribution::Random => Distribution::random(group.servers.len()),
        RedisDistribution::Slots | RedisDistribution::Cluster => {
            if group.slots.is_empty() {
                return SlotTable::even(group.servers.len()).map(Distribution::Slots);
            }
            let mut ranges = Vec::with_capacity(group.slots.len());
            for r in &group.slots {
                let idx = group
                    .servers
                    .iter()
                    .position(|s| s.name == r.server)
                    .ok_or_else(|| RedisRouteError::SlotServerUnknown(r.server.clone()))?;
                ranges.push((u32::from(r.start), u32::from(r.end), idx));
            }
            SlotTable::from_ranges(&ranges, group.servers.len()).map(Distribution::Slots)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(toml_group: &str) -> RedisGroup {
        let text = format!(
            r#"
[[listeners]]
name = "c"
kind = "redis"
address = "127.0.0.1:1"
group = "g"
[redis_groups.g]
{toml_group}
"#
        );
        let cfg = crate::config::parse("t.toml", &text).expect("valid config");
        cfg.redis_group("g").expect("group").clone()
    }

    #[test]
    fn slot_distribution_from_config() {
        let g = group(
            r#"distribution = "slots"
servers = [{ name = "a", address = "127.0.0.1:2" }, { name = "b", address = "127.0.0.1:3" }]
slots = [{ range = "0-8191", server = "a" }, { range = "8192-16383", server = "b" }]"#,
        );
        let d = group_distribution(&g).expect("distribution");
        // "foo" hashes to slot 12182, "bar" to 5061 (as CLUSTER KEYSLOT says).
        assert_eq!(d.server_for_key(b"foo"), 1);
        assert_eq!(d.server_for_key(b"bar"), 0);
    }

    #[test]
    fn ketama_group_matches_the_distribution_built_by_hand() {
        let g = group(
            r#"distribution = "ketama"
servers = [{ name = "a", address = "127.0.0.1:2" }, { name = "b", address = "127.0.0.1:3", weight = 2 }]"#,
        );
        let d = group_distribution(&g).expect("distribution");
        let hasher = KeyHasher {
            function: HashFunction::from_name(&g.hash).expect("hash"),
            tag: g.hash_tag,
        };
        let by_hand = Distribution::ketama(
            hasher,
            &[KetamaServer::named("a", 1), KetamaServer::named("b", 2)],
        )
        .expect("ketama");
        assert_eq!(d, by_hand);
    }

    #[test]
    fn an_unknown_slot_server_is_named() {
        let mut g = group(
            r#"distribution = "slots"
servers = [{ name = "a", address = "127.0.0.1:2" }]
slots = [{ range = "0-16383", server = "a" }]"#,
        );
        for r in &mut g.slots {
            r.server = "zz".into();
        }
        let e = group_distribution(&g).expect_err("unknown server");
        assert_eq!(e.to_string(), "slot range names unknown server zz");
    }
}
