//! Glue to `router::redis`: the distribution of a group.

use router::config::{RedisDistribution, RedisGroup};
use router::redis::{Distribution, HashFunction, KetamaServer, KeyHasher, SlotTable};

/// Builds the key → server mapping of `group` (every server live; ejection answers errors instead
/// of re-hashing, so keys never silently move).
pub fn distribution(group: &RedisGroup) -> Result<Distribution, String> {
    let function = HashFunction::from_name(&group.hash).map_err(|e| e.to_string())?;
    let hasher = KeyHasher {
        function,
        tag: group.hash_tag,
    };
    let servers: Vec<KetamaServer> = group
        .servers
        .iter()
        .map(|s| KetamaServer::named(s.name.clone(), s.weight.max(1)))
        .collect();
    let d = match group.distribution {
        RedisDistribution::Ketama => Distribution::ketama(hasher, &servers),
        RedisDistribution::Modula => Distribution::modula(hasher, &servers),
        RedisDistribution::Random => Distribution::random(group.servers.len()),
        RedisDistribution::Slots | RedisDistribution::Cluster => {
            if group.slots.is_empty() {
                SlotTable::even(group.servers.len()).map(Distribution::Slots)
            } else {
                let mut ranges = Vec::new();
                for r in &group.slots {
                    let idx = group
                        .servers
                        .iter()
                        .position(|s| s.name == r.server)
                        .ok_or_else(|| format!("slot range names unknown server {}", r.server))?;
                    ranges.push((u32::from(r.start), u32::from(r.end), idx));
                }
                SlotTable::from_ranges(&ranges, group.servers.len()).map(Distribution::Slots)
            }
        }
    };
    d.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_distribution_from_config() {
        let cfg = router::config::parse(
            "t.toml",
            r#"
[[listeners]]
name = "c"
kind = "redis"
address = "127.0.0.1:1"
group = "g"
[redis_groups.g]
distribution = "slots"
servers = [{ name = "a", address = "127.0.0.1:2" }, { name = "b", address = "127.0.0.1:3" }]
slots = [{ range = "0-8191", server = "a" }, { range = "8192-16383", server = "b" }]
"#,
        )
        .expect("valid config");
        let g = cfg.redis_group("g").expect("group");
        let d = distribution(g).expect("distribution");
        // "foo" hashes to slot 12182, "bar" to 5061 (as CLUSTER KEYSLOT says).
        assert_eq!(d.server_for_key(b"foo"), 1);
        assert_eq!(d.server_for_key(b"bar"), 0);
    }
}
