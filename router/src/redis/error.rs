//! Errors of Redis routing: invalid distribution configs and requests whose keys cannot be extracted.

use thiserror::Error;

/// An error raised while building a distribution or while routing one request.
///
/// Build errors (`Config*`, `Slot*`, `Unknown*`) are configuration mistakes, found before a snapshot is
/// published; request errors are client errors and are never retryable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RedisRouteError {
    /// The server list of a distribution is empty.
    #[error("a distribution needs at least one server")]
    NoServers,
    /// A server was given weight 0.
    #[error("server {index} has weight 0; weights must be at least 1")]
    ZeroWeight {
        /// Position of the server in the list.
        index: usize,
    },
    /// A ketama point name would not fit nutcracker's 86-byte buffer, so its placement is undefined there.
    #[error("server {index}: ketama name is {len} bytes, at most {max} are supported")]
    NameTooLong {
        /// Position of the server in the list.
        index: usize,
        /// Length of the name.
        len: usize,
        /// Longest name accepted.
        max: usize,
    },
    /// No server is live, so nothing can be routed.
    #[error("no live server in the distribution")]
    NoLiveServers,
    /// A twemproxy `hash:` name that is not known.
    #[error("unknown hash function '{0}'")]
    UnknownHash(String),
    /// A twemproxy `distribution:` name that is not known.
    #[error("unknown distribution '{0}'")]
    UnknownDistribution(String),
    /// A `hash_tag` that is not exactly two characters.
    #[error("hash_tag must be exactly two bytes, got {0}")]
    BadHashTag(usize),
    /// A slot range whose end is before its start or beyond slot 16383.
    #[error("slot range {start}-{end} is invalid (slots are 0-16383, start <= end)")]
    SlotRangeInvalid {
        /// First slot of the range.
        start: u32,
        /// Last slot of the range.
        end: u32,
    },
    /// Two slot ranges claim the same slot.
    #[error("slot {slot} is assigned twice (servers {first} and {second})")]
    SlotOverlap {
        /// The slot assigned twice.
        slot: u16,
        /// Server that claimed it first.
        first: usize,
        /// Server that claimed it again.
        second: usize,
    },
    /// A slot no range covers.
    #[error("slot {slot} is not assigned to any server")]
    SlotUncovered {
        /// The first slot left without a server.
        slot: u16,
    },
    /// A slot range names a server index beyond the server list.
    #[error("slot range {start}-{end} names server {server}, but there are only {servers}")]
    SlotServerOutOfRange {
        /// First slot of the range.
        start: u16,
        /// Last slot of the range.
        end: u16,
        /// The server index given.
        server: usize,
        /// Number of servers.
        servers: usize,
    },
    /// A slot range names a server the group does not have.
    #[error("slot range names unknown server {0}")]
    SlotServerUnknown(String),
    /// The request has the wrong number of arguments for its command.
    #[error("wrong number of arguments")]
    WrongArity,
    /// A `numkeys` argument is not a non-negative integer or exceeds the arguments given.
    #[error("invalid number of keys")]
    BadNumKeys,
    /// A `numkeys` argument is 0 where the command needs at least one key.
    #[error("numkeys should be greater than 0")]
    ZeroNumKeys,
    /// The arguments cannot be parsed far enough to find the keys (e.g. XREAD without STREAMS).
    #[error("syntax error")]
    Syntax,
}
