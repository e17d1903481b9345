//! What the admin port and `/metrics` read of proxy-mysql: the process-wide counters in
//! [`MysqlShared`], summed over the cores. The per-core writers (`stats.rs`, `ops.rs`, `pool.rs`)
//! know nothing of the process's registries; reading them is this module's job, so that no
//! writer imports the context that holds it.

use std::time::Duration;

use runtime::Shared;

use crate::core::MysqlShared;
use crate::pool::PoolStats;
use crate::stats::{DigestStats, SlowEntry};

/// Statement-cache hits and misses summed over cores (as last published, once a second).
pub fn stmt_cache_stats(shared: &Shared) -> (u64, u64) {
    MysqlShared::of(shared).stats.stmt_cache()
}

/// Lowers the slow-log threshold of every group to `t` (an admin override; default: none).
pub fn set_slow_threshold(shared: &Shared, t: Duration) {
    MysqlShared::of(shared).stats.set_slow_threshold(t);
}

/// Query digests merged over cores, most executed first; also the count of executions not tracked
/// because a core's digest table was full.
pub fn digests(shared: &Shared) -> (Vec<DigestStats>, u64) {
    MysqlShared::of(shared).stats.digests()
}

/// Clears the digest tables of every core.
pub fn reset_digests(shared: &Shared) {
    MysqlShared::of(shared).stats.reset_digests();
}

/// The newest `limit` slow-log entries over all cores (newest first) and the number dropped.
pub fn slow_log(shared: &Shared, limit: usize) -> (Vec<SlowEntry>, u64) {
    MysqlShared::of(shared).stats.slow_log(limit)
}

/// Backend pool gauges of every core (one row per core and server; published about once a second).
pub fn pool_stats(shared: &Shared) -> Vec<PoolStats> {
    MysqlShared::of(shared).stats.pool_stats()
}

/// Audit log counters per file: (path, records written, records dropped because the queue was full).
pub fn audit_stats(shared: &Shared) -> Vec<(String, u64, u64)> {
    MysqlShared::of(shared).audit.stats()
}
