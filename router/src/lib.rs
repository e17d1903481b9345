//! Furrow decisions: the TOML config model and its validation, Redis key routing, SQL analysis and plans.
//!
//! Pure code: no sockets, no runtime, no clocks. Every function here is a function of its inputs, so the
//! whole routing layer is testable without a server.

pub mod config;
pub mod latency;
pub mod redis;
pub mod sql;

/// A hash map with a fast, seeded hasher (`foldhash`) for the per-core lookups of the data path
/// (plan-cache shapes, compiled rules, targets by name). SipHash, the standard default, cost
/// more than the rest of a cached point-select lookup; foldhash is still seeded per process, and
/// every such map is bounded, so adversarial keys cannot grow one without limit.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
