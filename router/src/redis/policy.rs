//! How the proxy executes each command: Furrow's own column of the command table, written by hand.
//!
//! [`classify`] is evaluated at compile time for every generated row, so regenerating the table keeps
//! these decisions. Commands are matched by name first (the exceptions), then by rule: blocking and
//! pub/sub flags, then key positions (one key → [`Policy::SingleKey`], several → [`Policy::SameShard`]).
//! A keyless command that nothing here names is [`Policy::Unsupported`] with reason [`UNCLASSIFIED`];
//! a test fails if any command ends up there, so a new Redis version forces a decision.

use super::command::{CommandFlags, flags};

/// How per-key replies of a split multi-key command are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MultiKeyMerge {
    /// One array, elements in the order of the keys in the request (MGET).
    ConcatInKeyOrder,
    /// Sum of the integer replies (DEL, UNLINK, EXISTS, TOUCH).
    SumIntegers,
    /// `+OK` when every part replied `+OK` (MSET).
    AllOk,
}

/// How the replies of a command sent to every shard are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FanOutMerge {
    /// Every shard must succeed; reply with the first shard's reply (FLUSHALL, CONFIG SET, BGSAVE).
    AllOk,
    /// Every shard must give the same reply; reply with it (PING, SCRIPT LOAD, FUNCTION LOAD).
    AllEqual,
    /// Sum of the integer replies (DBSIZE, SLOWLOG LEN).
    SumIntegers,
    /// Concatenate the array replies (KEYS, SLOWLOG GET).
    ConcatArrays,
    /// Element-wise AND of integer arrays (SCRIPT EXISTS: 1 only where every shard has the script).
    ElementwiseAnd,
    /// The smallest integer reply (WAIT: replicas reached on every shard).
    MinInteger,
    /// The first non-nil reply (RANDOMKEY).
    AnyNonNil,
    /// The first successful reply, errors only when all fail (SCRIPT KILL, FUNCTION KILL).
    AnySuccess,
    /// INFO: sections merged, counters summed per shard.
    Info,
    /// SCAN: the proxy walks the shards one after the other, encoding the shard in the cursor.
    Scan,
}

/// How the proxy executes one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// One key: send to the shard of that key.
    SingleKey,
    /// Several independent keys: split per shard, send each part, merge in key order.
    MultiKey {
        /// How the parts' replies are combined.
        merge: MultiKeyMerge,
    },
    /// Several keys that must live on one shard (else a CROSSSLOT-style error); no key → any shard.
    SameShard,
    /// Keyless and shard-wide: send to every shard and merge.
    FanOut {
        /// How the shards' replies are combined.
        merge: FanOutMerge,
    },
    /// Keyless, any single shard answers it equally well (TIME, COMMAND, `* HELP`).
    AnyShard,
    /// Connection state kept or answered by the proxy itself (SELECT, AUTH, HELLO, CLIENT SETNAME, ECHO).
    Session,
    /// May block: runs on a dedicated backend connection.
    Blocking,
    /// Pub/Sub: the connection switches to subscriber mode.
    PubSub,
    /// MULTI/EXEC/WATCH: the session is pinned to one shard for the transaction.
    Transaction,
    /// Refused through the proxy, with the reason shown to the client.
    Unsupported {
        /// Why, as a short phrase.
        reason: &'static str,
    },
}

/// The reason given to keyless commands nobody classified; no table row may keep it.
pub const UNCLASSIFIED: &str = "not classified for proxying";

const CLUSTER: &str = "cluster commands make no sense through a proxy";
const REPLICATION: &str = "replication is managed by the proxy, not by clients";
const ADMIN: &str = "server administration is not available through the proxy";
const ACL: &str = "ACL is managed by the proxy configuration";
const TRACKING: &str = "client-side caching is not supported through the proxy";

/// The policy of a command, from its name (`parent|sub` for subcommands), flags and legacy key range.
pub const fn classify(
    name: &[u8],
    command_flags: CommandFlags,
    first_key: i16,
    last_key: i16,
    container: bool,
) -> Policy {
    use FanOutMerge as F;
    match name {
        b"multi" | b"exec" | b"discard" | b"watch" | b"unwatch" => return Policy::Transaction,

        b"mget" => {
            return Policy::MultiKey {
                merge: MultiKeyMerge::ConcatInKeyOrder,
            };
        }
        b"del" | b"unlink" | b"exists" | b"touch" => {
            return Policy::MultiKey {
                merge: MultiKeyMerge::SumIntegers,
            };
        }
        b"mset" => {
            return Policy::MultiKey {
                merge: MultiKeyMerge::AllOk,
            };
        }

        b"select" | b"auth" | b"hello" | b"quit" | b"reset" | b"echo" | b"readonly"
        | b"readwrite" | b"client|setname" | b"client|getname" | b"client|id" | b"client|list"
        | b"client|info" | b"client|reply" | b"client|unblock" => return Policy::Session,

        b"ping" => return Policy::FanOut { merge: F::AllEqual },
        b"dbsize" | b"slowlog|len" | b"latency|reset" => {
            return Policy::FanOut {
                merge: F::SumIntegers,
            };
        }
        b"flushall" | b"flushdb" | b"swapdb" | b"save" | b"bgsave" | b"bgrewriteaof"
        | b"config|set" | b"config|resetstat" | b"config|rewrite" | b"script|flush"
        | b"function|flush" | b"function|delete" | b"function|restore" | b"memory|purge"
        | b"slowlog|reset" => return Policy::FanOut { merge: F::AllOk },
        b"keys" | b"slowlog|get" => {
            return Policy::FanOut {
                merge: F::ConcatArrays,
            };
        }
        b"scan" => return Policy::FanOut { merge: F::Scan },
        b"randomkey" => {
            return Policy::FanOut {
                merge: F::AnyNonNil,
            };
        }
        b"info" => return Policy::FanOut { merge: F::Info },
        b"config|get" | b"script|load" | b"function|load" => {
            return Policy::FanOut { merge: F::AllEqual };
        }
        b"script|exists" => {
            return Policy::FanOut {
                merge: F::ElementwiseAnd,
            };
        }
        b"script|kill" | b"function|kill" => {
            return Policy::FanOut {
                merge: F::AnySuccess,
            };
        }
        b"wait" => {
            return Policy::FanOut {
                merge: F::MinInteger,
            };
        }

        b"time"
        | b"lastsave"
        | b"lolwut"
        | b"command"
        | b"command|count"
        | b"command|docs"
        | b"command|getkeys"
        | b"command|getkeysandflags"
        | b"command|info"
        | b"command|list"
        | b"function|list"
        | b"function|dump"
        | b"function|stats"
        | b"memory|stats"
        | b"memory|doctor"
        | b"memory|malloc-stats"
        | b"latency|doctor"
        | b"latency|graph"
        | b"latency|histogram"
        | b"latency|history"
        | b"latency|latest" => return Policy::AnyShard,

        b"cluster" | b"asking" => return Policy::Unsupported { reason: CLUSTER },
        b"monitor" => {
            return Policy::Unsupported {
                reason: "MONITOR is not supported through the proxy",
            };
        }
        b"sync" | b"psync" | b"replconf" | b"replicaof" | b"slaveof" | b"failover" | b"role" => {
            return Policy::Unsupported {
                reason: REPLICATION,
            };
        }
        b"shutdown" | b"debug" | b"pfdebug" | b"pfselftest" | b"module|load" | b"module|loadex"
        | b"module|unload" | b"module|list" | b"client|kill" | b"client|pause"
        | b"client|unpause" | b"client|no-evict" | b"script|debug" => {
            return Policy::Unsupported { reason: ADMIN };
        }
        b"migrate" => {
            return Policy::Unsupported {
                reason: "MIGRATE moves keys behind the proxy's back",
            };
        }
        b"client|tracking" | b"client|caching" | b"client|getredir" | b"client|trackinginfo" => {
            return Policy::Unsupported { reason: TRACKING };
        }
        _ => {}
    }
    if starts_with(name, b"cluster|") {
        return Policy::Unsupported { reason: CLUSTER };
    }
    if starts_with(name, b"acl|") {
        return Policy::Unsupported { reason: ACL };
    }
    if ends_with(name, b"|help") {
        return Policy::AnyShard;
    }
    if command_flags.has(flags::BLOCKING) {
        return Policy::Blocking;
    }
    if command_flags.has(flags::PUBSUB) {
        return Policy::PubSub;
    }
    if command_flags.has(flags::MOVABLEKEYS) {
        return Policy::SameShard;
    }
    if first_key > 0 {
        return if first_key == last_key {
            Policy::SingleKey
        } else {
            Policy::SameShard
        };
    }
    if container {
        return Policy::Unsupported {
            reason: "a subcommand is required",
        };
    }
    Policy::Unsupported {
        reason: UNCLASSIFIED,
    }
}

/// `const` prefix test.
const fn starts_with(s: &[u8], prefix: &[u8]) -> bool {
    if s.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if s[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `const` suffix test.
const fn ends_with(s: &[u8], suffix: &[u8]) -> bool {
    if s.len() < suffix.len() {
        return false;
    }
    let off = s.len() - suffix.len();
    let mut i = 0;
    while i < suffix.len() {
        if s[off + i] != suffix[i] {
            return false;
        }
        i += 1;
    }
    true
}
