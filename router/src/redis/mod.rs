//! Redis routing: the command table, key extraction, hash tags, ketama, modula and slot distribution.
//!
//! Everything here is a pure function of its inputs; the proxy (`proxy-redis`) calls it per request.
//!
//! - [`command`]: [`lookup`] / [`subcommand`] / [`resolve`] a command by name (case-insensitive, no
//!   allocation) into a [`CommandInfo`] from the table generated off a real Redis 7.0 server
//!   ([`command_table`], by `router/tools/gen_commands.py`), and [`keys`] to find which arguments are keys.
//! - [`policy`]: how the proxy executes each command (single key, split multi-key with a merge, fan-out
//!   with a merge, session-local, blocking, pub/sub, transaction, or refused) — hand-written.
//! - [`distribution`]: [`Distribution::server_for_key`] maps a key to a server index:
//!   - `ketama` ([`ketama`]) is nutcracker's continuum (160 points per server scaled by weight, four
//!     points per MD5 digest of `"<name>-<n>"`), so a key lands where twemproxy puts it for the same
//!     servers, weights, names and `hash:`;
//!   - `modula` is twemproxy's `hash % total_weight`; `random` picks any live server;
//!   - `slots` is Redis Cluster (CRC16-XMODEM of the key or its `{tag}`, mod 16384, through a
//!     validated [`SlotTable`]).
//! - [`group_distribution`] builds a configured group's [`Distribution`] ([`group`]).
//! - [`merge`]: the replies of split and fan-out commands merged into the one reply the client
//!   expects ([`merge::info`] for INFO over shards).
//! - [`hash`]: nutcracker's key hash functions, bit-for-bit (its `fnv1a_64` is 32-bit, chars are signed).
//!
//! Compatibility with nutcracker is checked against golden mappings recorded from a real nutcracker
//! (`router/tests/fixtures/redis/`, `router/tools/gen_ketama_fixtures.py`) and, when `nutcracker` and
//! `redis-server` are installed, live by `router/tests/redis_nutcracker_live.rs`.

pub mod command;
#[rustfmt::skip]
pub mod command_table;
pub mod distribution;
pub mod error;
pub mod group;
pub mod hash;
pub mod ketama;
pub mod merge;
pub mod policy;
pub mod rebalance;
pub mod slots;

pub use command::{
    AclCategories, CommandFlags, CommandInfo, KeyPositions, KeyRun, Resolved, keys, keys_of,
    lookup, resolve, subcommand,
};
pub use distribution::{Distribution, KeyHasher, Modula};
pub use error::RedisRouteError;
pub use group::group_distribution;
pub use hash::HashFunction;
pub use ketama::{Ketama, KetamaServer};
pub use merge::{Merge, MergeError, MergeKind};
pub use policy::{FanOutMerge, MultiKeyMerge, Policy};
pub use slots::{SLOT_COUNT, SlotTable, key_slot};
