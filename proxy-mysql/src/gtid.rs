//! GTID positions for read-your-writes by GTID: what each replica has applied (measured by the health
//! monitor from `@@gtid_slave_pos`) and whether that covers a session's last write (`@@last_gtid`).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

/// A GTID set as (domain, sequence number) pairs; the server id does not order GTIDs.
pub type Gtids = Vec<(u32, u64)>;

/// Parses `0-1-5,1-2-9` (MariaDB GTID list); malformed entries are skipped.
pub fn parse(s: &str) -> Gtids {
    s.split(',')
        .filter_map(|g| {
            let mut it = g.trim().split('-');
            let domain = it.next()?.parse().ok()?;
            let _server: u32 = it.next()?.parse().ok()?;
            let seq = it.next()?.parse().ok()?;
            Some((domain, seq))
        })
        .collect()
}

/// Whether position `pos` includes every GTID of `want`.
pub fn covers(pos: &[(u32, u64)], want: &[(u32, u64)]) -> bool {
    want.iter()
        .all(|(d, s)| pos.iter().any(|(pd, ps)| pd == d && ps >= s))
}

/// What the replicas of the process's groups have applied, and which groups' primaries have no
/// `@@last_gtid` (in [`crate::MysqlShared`]: written by the health monitors, read by sessions).
#[derive(Default)]
pub struct GtidState {
    positions: RwLock<HashMap<String, Gtids>>,
    unsupported: RwLock<HashSet<String>>,
}

impl GtidState {
    /// Records what replica `server` (at `address`) of `group` has applied.
    pub fn set_position(&self, group: &str, server: &str, address: &str, pos: Gtids) {
        let mut m = self.positions.write().unwrap_or_else(|e| e.into_inner());
        m.insert(format!("{group}/{server}/{address}"), pos);
    }

    /// Whether replica `server` (at `address`) of `group` is known to have applied `want`.
    pub fn replica_has(
        &self,
        group: &str,
        server: &str,
        address: &str,
        want: &[(u32, u64)],
    ) -> bool {
        let m = self.positions.read().unwrap_or_else(|e| e.into_inner());
        m.get(&format!("{group}/{server}/{address}"))
            .is_some_and(|pos| covers(pos, want))
    }

    /// Whether the primary of `group` is known to answer `@@last_gtid` (true until it has refused).
    pub fn supported(&self, group: &str) -> bool {
        !self
            .unsupported
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(group)
    }

    /// Records that the servers of `group` have no `@@last_gtid` (MySQL): read-your-writes falls
    /// back to the time window there.
    pub fn set_unsupported(&self, group: &str) {
        let mut u = self.unsupported.write().unwrap_or_else(|e| e.into_inner());
        if u.len() < 10_000 {
            u.insert(group.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_cover() {
        assert_eq!(parse("0-1-5,1-2-9"), vec![(0, 5), (1, 9)]);
        assert_eq!(parse(""), vec![]);
        assert_eq!(parse("x-1-2, 0-3-4"), vec![(0, 4)]);
        assert!(covers(&parse("0-1-5,1-2-9"), &parse("0-2-5")));
        assert!(!covers(&parse("0-1-4"), &parse("0-1-5")));
        assert!(!covers(&parse("1-1-9"), &parse("0-1-1")));
        assert!(covers(&parse("0-1-1"), &[]));
        let st = GtidState::default();
        st.set_position("g", "r", "h:1", parse("0-1-10"));
        assert!(st.replica_has("g", "r", "h:1", &parse("0-1-10")));
        assert!(!st.replica_has("g", "r", "h:1", &parse("0-1-11")));
        assert!(!st.replica_has("g", "other", "h:1", &parse("0-1-1")));
        assert!(!st.replica_has("g", "r", "h:2", &parse("0-1-1")));
        assert!(st.supported("g"));
        st.set_unsupported("g");
        assert!(!st.supported("g"));
    }
}
