//! Redis command metadata: flags, arity, key positions, lookup by name, and key extraction.
//!
//! The rows live in the generated [`crate::redis::command_table`]; this module defines their type, the
//! allocation-free case-insensitive lookup over the generated hash index, and [`keys`], which turns a
//! request's arguments into the argument indexes that are keys, including the commands whose keys move
//! (`movablekeys`: EVAL numkeys, XREAD STREAMS, SORT STORE, ...).

use super::command_table::{COMMANDS, INDEX, INDEX_SIZE};
use super::error::RedisRouteError;
use super::policy::{Policy, classify};

/// Command flag bits, one per flag `COMMAND` reports.
pub mod flags {
    /// May modify the dataset.
    pub const WRITE: u32 = 1 << 0;
    /// Only reads.
    pub const READONLY: u32 = 1 << 1;
    /// May use more memory (refused when over maxmemory).
    pub const DENYOOM: u32 = 1 << 2;
    /// Administrative.
    pub const ADMIN: u32 = 1 << 3;
    /// Pub/Sub related.
    pub const PUBSUB: u32 = 1 << 4;
    /// Not allowed in scripts.
    pub const NOSCRIPT: u32 = 1 << 5;
    /// May block the client.
    pub const BLOCKING: u32 = 1 << 6;
    /// Allowed while the database is loading.
    pub const LOADING: u32 = 1 << 7;
    /// Allowed on a replica with stale data.
    pub const STALE: u32 = 1 << 8;
    /// Not shown in MONITOR.
    pub const SKIP_MONITOR: u32 = 1 << 9;
    /// Not logged in SLOWLOG.
    pub const SKIP_SLOWLOG: u32 = 1 << 10;
    /// Allowed on importing slots after ASKING.
    pub const ASKING: u32 = 1 << 11;
    /// O(1) or O(log N).
    pub const FAST: u32 = 1 << 12;
    /// Allowed before authentication.
    pub const NO_AUTH: u32 = 1 << 13;
    /// May be replicated.
    pub const MAY_REPLICATE: u32 = 1 << 14;
    /// May run without keys even though it takes keys.
    pub const NO_MANDATORY_KEYS: u32 = 1 << 15;
    /// Denied during async loading.
    pub const NO_ASYNC_LOADING: u32 = 1 << 16;
    /// Not allowed inside MULTI.
    pub const NO_MULTI: u32 = 1 << 17;
    /// Key positions depend on the arguments.
    pub const MOVABLEKEYS: u32 = 1 << 18;
    /// Allowed while a script is busy.
    pub const ALLOW_BUSY: u32 = 1 << 19;
    /// Implemented by a module.
    pub const MODULE: u32 = 1 << 20;
    /// Sentinel command.
    pub const SENTINEL: u32 = 1 << 21;
    /// Sentinel-only command.
    pub const ONLY_SENTINEL: u32 = 1 << 22;

    /// Every flag with the name `COMMAND` gives it.
    pub const NAMES: [(&str, u32); 23] = [
        ("write", WRITE),
        ("readonly", READONLY),
        ("denyoom", DENYOOM),
        ("admin", ADMIN),
        ("pubsub", PUBSUB),
        ("noscript", NOSCRIPT),
        ("blocking", BLOCKING),
        ("loading", LOADING),
        ("stale", STALE),
        ("skip_monitor", SKIP_MONITOR),
        ("skip_slowlog", SKIP_SLOWLOG),
        ("asking", ASKING),
        ("fast", FAST),
        ("no_auth", NO_AUTH),
        ("may_replicate", MAY_REPLICATE),
        ("no_mandatory_keys", NO_MANDATORY_KEYS),
        ("no_async_loading", NO_ASYNC_LOADING),
        ("no_multi", NO_MULTI),
        ("movablekeys", MOVABLEKEYS),
        ("allow_busy", ALLOW_BUSY),
        ("module", MODULE),
        ("sentinel", SENTINEL),
        ("only_sentinel", ONLY_SENTINEL),
    ];
}

/// A set of [`flags`] bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CommandFlags(pub u32);

impl CommandFlags {
    /// Whether every bit of `flag` is set.
    #[inline]
    pub const fn has(self, flag: u32) -> bool {
        self.0 & flag == flag
    }

    /// The flag names, in [`flags::NAMES`] order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        flags::NAMES
            .iter()
            .filter(move |(_, bit)| self.has(*bit))
            .map(|(name, _)| *name)
    }
}

/// ACL category bits, one per category Redis 7.0's `ACL CAT` lists (`@read`, `@dangerous`, ...).
pub mod category {
    /// `@keyspace`: Touches keys or databases generically, whatever their type.
    pub const KEYSPACE: u32 = 1 << 0;
    /// `@read`: Reads data (keys' values or metadata).
    pub const READ: u32 = 1 << 1;
    /// `@write`: Writes data.
    pub const WRITE: u32 = 1 << 2;
    /// `@set`: Operates on sets.
    pub const SET: u32 = 1 << 3;
    /// `@sortedset`: Operates on sorted sets.
    pub const SORTEDSET: u32 = 1 << 4;
    /// `@list`: Operates on lists.
    pub const LIST: u32 = 1 << 5;
    /// `@hash`: Operates on hashes.
    pub const HASH: u32 = 1 << 6;
    /// `@string`: Operates on strings.
    pub const STRING: u32 = 1 << 7;
    /// `@bitmap`: Operates on bitmaps.
    pub const BITMAP: u32 = 1 << 8;
    /// `@hyperloglog`: Operates on HyperLogLogs.
    pub const HYPERLOGLOG: u32 = 1 << 9;
    /// `@geo`: Operates on geospatial indexes.
    pub const GEO: u32 = 1 << 10;
    /// `@stream`: Operates on streams.
    pub const STREAM: u32 = 1 << 11;
    /// `@pubsub`: Pub/Sub.
    pub const PUBSUB: u32 = 1 << 12;
    /// `@admin`: Administrative (replication, config, debugging, ...).
    pub const ADMIN: u32 = 1 << 13;
    /// `@fast`: O(1) or O(log N).
    pub const FAST: u32 = 1 << 14;
    /// `@slow`: Every command that is not `fast`.
    pub const SLOW: u32 = 1 << 15;
    /// `@blocking`: May block the connection.
    pub const BLOCKING: u32 = 1 << 16;
    /// `@dangerous`: Potentially dangerous (risky, slow or administrative).
    pub const DANGEROUS: u32 = 1 << 17;
    /// `@connection`: Affects the connection or other connections.
    pub const CONNECTION: u32 = 1 << 18;
    /// `@transaction`: MULTI/EXEC/WATCH.
    pub const TRANSACTION: u32 = 1 << 19;
    /// `@scripting`: Scripts and functions.
    pub const SCRIPTING: u32 = 1 << 20;

    /// Every category with its name in configs and `ACL CAT` (without the `@`).
    pub const NAMES: [(&str, u32); 21] = [
        ("keyspace", KEYSPACE),
        ("read", READ),
        ("write", WRITE),
        ("set", SET),
        ("sortedset", SORTEDSET),
        ("list", LIST),
        ("hash", HASH),
        ("string", STRING),
        ("bitmap", BITMAP),
        ("hyperloglog", HYPERLOGLOG),
        ("geo", GEO),
        ("stream", STREAM),
        ("pubsub", PUBSUB),
        ("admin", ADMIN),
        ("fast", FAST),
        ("slow", SLOW),
        ("blocking", BLOCKING),
        ("dangerous", DANGEROUS),
        ("connection", CONNECTION),
        ("transaction", TRANSACTION),
        ("scripting", SCRIPTING),
    ];

    /// The bit of a category name (without `@`, ASCII case-insensitive); `None` if Redis has no such
    /// category.
    pub fn from_name(name: &str) -> Option<u32> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, bit)| *bit)
    }
}

/// A set of ACL [`category`] bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AclCategories(pub u32);

impl AclCategories {
    /// Whether every bit of `cat` is set.
    #[inline]
    pub const fn has(self, cat: u32) -> bool {
        self.0 & cat == cat
    }

    /// The category names, in [`category::NAMES`] order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        category::NAMES
            .iter()
            .filter(move |(_, bit)| self.has(*bit))
            .map(|(name, _)| *name)
    }
}

/// One command or subcommand: what Redis says about it plus how Furrow executes it.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandInfo {
    /// Lowercase name as `COMMAND` gives it; subcommands are `parent|sub` (`config|get`).
    pub name: &'static str,
    /// Arity: `n` means exactly `n` arguments, `-n` at least `n` (the command name counts).
    pub arity: i16,
    /// Redis flags.
    pub flags: CommandFlags,
    /// ACL categories, as `COMMAND INFO` reports them.
    pub acl: AclCategories,
    /// Legacy position of the first key (0: no keys).
    pub first_key: i16,
    /// Legacy position of the last key (negative: from the end, -1 the last argument).
    pub last_key: i16,
    /// Step between keys.
    pub step: i16,
    /// Documentation group (`string`, `server`, ...).
    pub group: &'static str,
    /// One-line summary from `COMMAND DOCS`.
    pub summary: &'static str,
    /// Redis version that introduced it.
    pub since: &'static str,
    /// Request/response tips (`request_policy:all_shards`, ...).
    pub tips: &'static [&'static str],
    /// Subcommands, sorted by name (empty for most commands).
    pub subcommands: &'static [CommandInfo],
    /// How the proxy executes it (hand-written in [`crate::redis::policy`]).
    pub policy: Policy,
}

impl CommandInfo {
    /// A table row; the policy is derived by [`classify`]. Used by the generated table.
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        name: &'static str,
        arity: i16,
        flags: CommandFlags,
        acl: AclCategories,
        first_key: i16,
        last_key: i16,
        step: i16,
        group: &'static str,
        summary: &'static str,
        since: &'static str,
        tips: &'static [&'static str],
        subcommands: &'static [CommandInfo],
    ) -> CommandInfo {
        let policy = classify(
            name.as_bytes(),
            flags,
            first_key,
            last_key,
            !subcommands.is_empty(),
        );
        CommandInfo {
            name,
            arity,
            flags,
            acl,
            first_key,
            last_key,
            step,
            group,
            summary,
            since,
            tips,
            subcommands,
            policy,
        }
    }

    /// Whether `argc` arguments (command name included) satisfy the arity.
    #[inline]
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = i64::from(self.arity);
        let n = argc as i64;
        if a >= 0 { n == a } else { n >= -a }
    }

    /// The subcommand part of the name (`get` for `config|get`), or the whole name.
    pub fn short_name(&self) -> &'static str {
        match self.name.split_once('|') {
            Some((_, sub)) => sub,
            None => self.name,
        }
    }

    /// Whether a Redis listener without users refuses it unless its config sets
    /// `allow_admin_commands`: Redis's `@admin` commands (CONFIG SET, DEBUG, SHUTDOWN, SAVE, CLIENT
    /// KILL, ...) and its keyless `@dangerous` writes (FLUSHALL, FLUSHDB, SWAPDB). The other
    /// `@dangerous` commands (INFO, KEYS, SORT, RESTORE) only read, or write the keys they
    /// name and stay open; a user's `-@dangerous` rule refuses them too.
    pub fn refused_when_open(&self) -> bool {
        self.acl.has(category::ADMIN)
            || (self.acl.has(category::DANGEROUS)
                && self.acl.has(category::WRITE)
                && self.first_key == 0
                && !self.movable_keys())
    }

    /// Whether the key positions depend on the arguments.
    #[inline]
    pub fn movable_keys(&self) -> bool {
        self.flags.has(flags::MOVABLEKEYS)
    }
}

/// The hash behind the generated [`INDEX`]: FNV-1a 32 over the ASCII-uppercased name, folded.
/// Must match `index_hash` in `router/tools/gen_commands.py`.
#[inline]
fn index_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h ^= u32::from(b.to_ascii_uppercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    h ^ (h >> 16)
}

/// The longest top-level command name in the table, to reject garbage quickly.
const MAX_NAME_LEN: usize = 32;

/// Look up a top-level command by name, ASCII case-insensitively. Does not allocate.
pub fn lookup(name: &[u8]) -> Option<&'static CommandInfo> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return None;
    }
    let mask = INDEX_SIZE - 1;
    let mut slot = index_hash(name) as usize & mask;
    for _ in 0..INDEX_SIZE {
        let entry = *INDEX.get(slot)?;
        if entry == 0 {
            return None;
        }
        let info = COMMANDS.get(usize::from(entry) - 1)?;
        if info.name.as_bytes().eq_ignore_ascii_case(name) {
            return Some(info);
        }
        slot = (slot + 1) & mask;
    }
    None
}

/// Look up a subcommand of `parent` (`GET` of `CONFIG`), ASCII case-insensitively. Does not allocate.
pub fn subcommand(parent: &CommandInfo, sub: &[u8]) -> Option<&'static CommandInfo> {
    parent
        .subcommands
        .iter()
        .find(|c| c.short_name().as_bytes().eq_ignore_ascii_case(sub))
}

/// What resolving a request's command name(s) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// A command (or subcommand) from the table.
    Command(&'static CommandInfo),
    /// No such command: reply `-ERR unknown command`.
    UnknownCommand,
    /// The container exists but not this subcommand: reply `-ERR unknown subcommand`.
    UnknownSubcommand(&'static CommandInfo),
}

/// Resolve the command of a request: `args[0]`, and `args[1]` when `args[0]` is a container such as
/// CONFIG or CLIENT. A container given without a subcommand resolves to itself (its arity then fails).
pub fn resolve(args: &[&[u8]]) -> Resolved {
    let Some(info) = args.first().and_then(|n| lookup(n)) else {
        return Resolved::UnknownCommand;
    };
    if info.subcommands.is_empty() {
        return Resolved::Command(info);
    }
    match args.get(1) {
        None => Resolved::Command(info),
        Some(sub) => match subcommand(info, sub) {
            Some(s) => Resolved::Command(s),
            None => Resolved::UnknownSubcommand(info),
        },
    }
}

/// An arithmetic run of argument indexes: `start`, `start + step`, ... (`count` of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyRun {
    /// First index.
    pub start: usize,
    /// Number of indexes.
    pub count: usize,
    /// Distance between indexes (at least 1).
    pub step: usize,
}

/// The argument indexes that are keys in one request: at most two runs, so never on the heap.
///
/// Iterate it to get the indexes in argument order (every command's keys come out in the order they
/// appear in the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPositions {
    runs: [KeyRun; 2],
    nruns: u8,
    /// Iteration cursor: run and index within it.
    at: (u8, usize),
}

impl KeyPositions {
    /// No keys.
    pub const NONE: KeyPositions = KeyPositions {
        runs: [KeyRun {
            start: 0,
            count: 0,
            step: 1,
        }; 2],
        nruns: 0,
        at: (0, 0),
    };

    fn push(&mut self, start: usize, count: usize, step: usize) {
        if count == 0 {
            return;
        }
        if let Some(run) = self.runs.get_mut(usize::from(self.nruns)) {
            *run = KeyRun {
                start,
                count,
                step: step.max(1),
            };
            self.nruns += 1;
        }
    }

    /// A single key at `index`.
    pub fn one(index: usize) -> Self {
        let mut k = KeyPositions::NONE;
        k.push(index, 1, 1);
        k
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.runs[..usize::from(self.nruns)]
            .iter()
            .map(|r| r.count)
            .sum()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The runs of indexes.
    pub fn runs(&self) -> &[KeyRun] {
        &self.runs[..usize::from(self.nruns)]
    }
}

impl Iterator for KeyPositions {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            let run = self.runs.get(usize::from(self.at.0))?;
            if self.at.0 >= self.nruns {
                return None;
            }
            if self.at.1 < run.count {
                let i = run.start + self.at.1 * run.step;
                self.at.1 += 1;
                return Some(i);
            }
            self.at = (self.at.0 + 1, 0);
        }
    }
}

/// Parse a non-negative decimal argument (numkeys).
fn parse_count(arg: &[u8]) -> Option<usize> {
    if arg.is_empty() || arg.len() > 18 {
        return None;
    }
    let mut n: usize = 0;
    for &b in arg {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(b - b'0');
    }
    Some(n)
}

/// Keys given by a `numkeys` argument at `numkeys_at`, the keys following it.
fn numkeys_run<'a>(
    argc: usize,
    arg: &impl Fn(usize) -> &'a [u8],
    numkeys_at: usize,
    zero_ok: bool,
    out: &mut KeyPositions,
) -> Result<(), RedisRouteError> {
    if numkeys_at >= argc {
        return Err(RedisRouteError::WrongArity);
    }
    let n = parse_count(arg(numkeys_at)).ok_or(RedisRouteError::BadNumKeys)?;
    if n == 0 && !zero_ok {
        return Err(RedisRouteError::ZeroNumKeys);
    }
    if n > argc - numkeys_at - 1 {
        return Err(RedisRouteError::BadNumKeys);
    }
    out.push(numkeys_at + 1, n, 1);
    Ok(())
}

/// The argument indexes of `info`'s keys in a request of `argc` arguments (command name at index 0),
/// where `arg(i)` returns argument `i`. Checks arity. Does not allocate.
pub fn keys<'a>(
    info: &CommandInfo,
    argc: usize,
    arg: impl Fn(usize) -> &'a [u8],
) -> Result<KeyPositions, RedisRouteError> {
    if !info.arity_ok(argc) {
        return Err(RedisRouteError::WrongArity);
    }
    let mut out = KeyPositions::NONE;
    if info.movable_keys() {
        movable_keys(info, argc, &arg, &mut out)?;
        return Ok(out);
    }
    if info.first_key <= 0 {
        return Ok(out);
    }
    let first = info.first_key as usize;
    let step = info.step.max(1) as usize;
    let last = if info.last_key < 0 {
        let back = usize::from(info.last_key.unsigned_abs());
        if back > argc {
            return Err(RedisRouteError::WrongArity);
        }
        argc - back
    } else {
        info.last_key as usize
    };
    if last < first || last >= argc {
        return Err(RedisRouteError::WrongArity);
    }
    if info.last_key < 0 && step > 1 && !(argc - first).is_multiple_of(step) {
        // MSET k v k: the key/value pairs do not divide evenly.
        return Err(RedisRouteError::WrongArity);
    }
    out.push(first, (last - first) / step + 1, step);
    Ok(out)
}

/// [`keys`] over a slice of arguments.
pub fn keys_of(info: &CommandInfo, args: &[&[u8]]) -> Result<KeyPositions, RedisRouteError> {
    keys(info, args.len(), |i| args.get(i).copied().unwrap_or(&[]))
}

/// Key extraction for `movablekeys` commands, by name (mirrors Redis' `*GetKeys` procedures).
fn movable_keys<'a>(
    info: &CommandInfo,
    argc: usize,
    arg: &impl Fn(usize) -> &'a [u8],
    out: &mut KeyPositions,
) -> Result<(), RedisRouteError> {
    let is = |i: usize, word: &[u8]| i < argc && arg(i).eq_ignore_ascii_case(word);
    match info.name {
        // EVAL script numkeys key... arg...
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
            numkeys_run(argc, arg, 2, true, out)
        }
        // ZUNION numkeys key... ; LMPOP numkeys key... LEFT|RIGHT
        "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" | "lmpop" | "zmpop" => {
            numkeys_run(argc, arg, 1, false, out)
        }
        // BLMPOP timeout numkeys key...
        "blmpop" | "bzmpop" => numkeys_run(argc, arg, 2, false, out),
        // ZUNIONSTORE destination numkeys key...
        "zunionstore" | "zinterstore" | "zdiffstore" => {
            out.push(1, 1, 1);
            numkeys_run(argc, arg, 2, false, out)
        }
        // SORT key [BY p] [LIMIT o c] [GET p]... [ASC|DESC] [ALPHA] [STORE dest]
        "sort" | "sort_ro" => {
            out.push(1, 1, 1);
            let mut store = None;
            let mut i = 2;
            while i < argc {
                if is(i, b"limit") {
                    i += 2;
                } else if is(i, b"get") || is(i, b"by") {
                    i += 1;
                } else if info.name == "sort" && is(i, b"store") && i + 1 < argc {
                    store = Some(i + 1);
                    i += 1;
                }
                i += 1;
            }
            if let Some(s) = store {
                out.push(s, 1, 1);
            }
            Ok(())
        }
        // GEORADIUS key lon lat radius unit [... STORE k | STOREDIST k]: the last one wins.
        "georadius" | "georadiusbymember" => {
            out.push(1, 1, 1);
            let from = if info.name == "georadius" { 6 } else { 5 };
            let mut store = None;
            let mut i = from;
            while i < argc {
                if (is(i, b"store") || is(i, b"storedist")) && i + 1 < argc {
                    store = Some(i + 1);
                    i += 1;
                }
                i += 1;
            }
            if let Some(s) = store {
                out.push(s, 1, 1);
            }
            Ok(())
        }
        // XREAD [COUNT n] [BLOCK ms] STREAMS key... id... ; XREADGROUP GROUP g c [...] STREAMS ...
        "xread" | "xreadgroup" => {
            let mut i = 1;
            let mut streams = None;
            while i < argc {
                if is(i, b"block") || is(i, b"count") {
                    i += 2;
                } else if is(i, b"group") {
                    i += 3;
                } else if is(i, b"noack") {
                    i += 1;
                } else if is(i, b"streams") {
                    streams = Some(i);
                    break;
                } else {
                    return Err(RedisRouteError::Syntax);
                }
            }
            let pos = streams.ok_or(RedisRouteError::Syntax)?;
            let rest = argc - pos - 1;
            if rest == 0 || !rest.is_multiple_of(2) {
                return Err(RedisRouteError::Syntax);
            }
            out.push(pos + 1, rest / 2, 1);
            Ok(())
        }
        // MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 u pw] [KEYS k...]
        "migrate" => {
            if !arg(3).is_empty() {
                out.push(3, 1, 1);
                return Ok(());
            }
            let mut i = 6;
            while i < argc {
                if is(i, b"auth") {
                    i += 1;
                } else if is(i, b"auth2") {
                    i += 2;
                } else if is(i, b"keys") {
                    out.push(i + 1, argc - i - 1, 1);
                    break;
                }
                i += 1;
            }
            Ok(())
        }
        // A movablekeys command this code does not know: fall back to the legacy range. A test checks
        // that every movablekeys command of the table is handled above.
        _ => {
            if info.first_key > 0 && info.last_key == info.first_key {
                out.push(info.first_key as usize, 1, 1);
            }
            Ok(())
        }
    }
}

/// The names of the `movablekeys` commands [`keys`] handles by code.
pub const MOVABLE_HANDLED: [&str; 25] = [
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "zunion",
    "zinter",
    "zdiff",
    "zintercard",
    "sintercard",
    "lmpop",
    "zmpop",
    "blmpop",
    "bzmpop",
    "zunionstore",
    "zinterstore",
    "zdiffstore",
    "sort",
    "sort_ro",
    "georadius",
    "georadiusbymember",
    "xread",
    "xreadgroup",
    "migrate",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::policy::{FanOutMerge, MultiKeyMerge, UNCLASSIFIED};

    fn ks(args: &[&str]) -> Result<Vec<usize>, RedisRouteError> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let info = match resolve(&args) {
            Resolved::Command(c) => c,
            other => panic!("{other:?}"),
        };
        keys_of(info, &args).map(|k| k.collect())
    }

    fn all() -> impl Iterator<Item = &'static CommandInfo> {
        COMMANDS
            .iter()
            .flat_map(|c| std::iter::once(c).chain(c.subcommands.iter()))
    }

    #[test]
    fn open_listeners_refuse_admin_and_dangerous_writes() {
        let refused: Vec<&str> = all()
            .filter(|c| c.refused_when_open())
            .map(|c| c.name)
            .filter(|n| !n.starts_with("cluster|") && !n.starts_with("acl|"))
            .collect();
        for name in [
            "config|set",
            "config|get",
            "config|rewrite",
            "config|resetstat",
            "flushall",
            "flushdb",
            "swapdb",
            "debug",
            "shutdown",
            "save",
            "bgsave",
            "bgrewriteaof",
            "client|kill",
            "client|pause",
            "replicaof",
            "slaveof",
            "module|load",
            "monitor",
            "slowlog|reset",
            "latency|reset",
        ] {
            assert!(
                refused.contains(&name),
                "{name} must be refused: {refused:?}"
            );
        }
        for name in [
            "get",
            "set",
            "del",
            "keys",
            "info",
            "sort",
            "restore",
            "ping",
            "scan",
            "dbsize",
            "client|id",
            "publish",
            "eval",
        ] {
            assert!(!refused.contains(&name), "{name} must stay open");
        }
    }

    #[test]
    fn lookup_is_case_insensitive_and_finds_every_command() {
        for c in COMMANDS.iter() {
            assert_eq!(lookup(c.name.as_bytes()).map(|x| x.name), Some(c.name));
            let upper = c.name.to_ascii_uppercase();
            assert_eq!(lookup(upper.as_bytes()).map(|x| x.name), Some(c.name));
        }
        assert_eq!(lookup(b"GeT").map(|c| c.arity), Some(2));
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(b"config|get").is_none());
    }

    #[test]
    fn subcommands_resolve() {
        let config = lookup(b"CONFIG").unwrap();
        assert_eq!(
            subcommand(config, b"get").map(|c| c.name),
            Some("config|get")
        );
        let args: [&[u8]; 3] = [b"client", b"SETNAME", b"x"];
        assert!(matches!(resolve(&args), Resolved::Command(c) if c.name == "client|setname"));
        let args: [&[u8]; 2] = [b"object", b"nope"];
        assert!(matches!(resolve(&args), Resolved::UnknownSubcommand(c) if c.name == "object"));
        let args: [&[u8]; 1] = [b"nope"];
        assert_eq!(resolve(&args), Resolved::UnknownCommand);
        for name in [
            "script|load",
            "xinfo|stream",
            "object|encoding",
            "function|load",
        ] {
            let (p, s) = name.split_once('|').unwrap();
            let found = subcommand(lookup(p.as_bytes()).unwrap(), s.as_bytes());
            assert_eq!(found.map(|c| c.name), Some(name));
        }
    }

    #[test]
    fn fixed_key_positions() {
        assert_eq!(ks(&["GET", "k"]), Ok(vec![1]));
        assert_eq!(ks(&["MGET", "a", "b", "c"]), Ok(vec![1, 2, 3]));
        assert_eq!(ks(&["MSET", "a", "1", "b", "2"]), Ok(vec![1, 3]));
        assert_eq!(
            ks(&["MSET", "a", "1", "b"]),
            Err(RedisRouteError::WrongArity)
        );
        assert_eq!(ks(&["BLPOP", "a", "b", "0"]), Ok(vec![1, 2]));
        assert_eq!(ks(&["OBJECT", "ENCODING", "k"]), Ok(vec![2]));
        assert_eq!(ks(&["XINFO", "STREAM", "s"]), Ok(vec![2]));
        assert_eq!(ks(&["PING"]), Ok(vec![]));
        assert_eq!(ks(&["GET"]), Err(RedisRouteError::WrongArity));
        assert_eq!(ks(&["GET", "a", "b"]), Err(RedisRouteError::WrongArity));
    }

    #[test]
    fn movable_key_positions() {
        assert_eq!(ks(&["EVAL", "s", "2", "a", "b", "x"]), Ok(vec![3, 4]));
        assert_eq!(ks(&["EVALSHA", "s", "0"]), Ok(vec![]));
        assert_eq!(
            ks(&["FCALL", "f", "3", "a", "b"]),
            Err(RedisRouteError::BadNumKeys)
        );
        assert_eq!(ks(&["EVAL", "s", "x"]), Err(RedisRouteError::BadNumKeys));
        assert_eq!(
            ks(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            Ok(vec![1, 3, 4])
        );
        assert_eq!(ks(&["ZUNION", "2", "a", "b"]), Ok(vec![2, 3]));
        assert_eq!(ks(&["ZUNION", "0", "a"]), Err(RedisRouteError::ZeroNumKeys));
        assert_eq!(ks(&["LMPOP", "2", "a", "b", "LEFT"]), Ok(vec![2, 3]));
        assert_eq!(ks(&["BZMPOP", "0", "1", "z", "MIN"]), Ok(vec![3]));
        assert_eq!(
            ks(&["SINTERCARD", "2", "a", "b", "LIMIT", "1"]),
            Ok(vec![2, 3])
        );
        assert_eq!(
            ks(&["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"]),
            Ok(vec![4, 5])
        );
        assert_eq!(
            ks(&[
                "XREADGROUP",
                "GROUP",
                "streams",
                "c",
                "BLOCK",
                "0",
                "NOACK",
                "STREAMS",
                "s",
                ">"
            ]),
            Ok(vec![8])
        );
        assert_eq!(
            ks(&["XREAD", "STREAMS", "s1", "s2", "0"]),
            Err(RedisRouteError::Syntax)
        );
        assert_eq!(
            ks(&[
                "SORT", "k", "BY", "w_*", "LIMIT", "0", "5", "GET", "o_*", "STORE", "d"
            ]),
            Ok(vec![1, 10])
        );
        assert_eq!(ks(&["SORT_RO", "k", "ALPHA"]), Ok(vec![1]));
        assert_eq!(
            ks(&[
                "GEORADIUS",
                "g",
                "1",
                "2",
                "3",
                "km",
                "STORE",
                "a",
                "STOREDIST",
                "b"
            ]),
            Ok(vec![1, 9])
        );
        assert_eq!(
            ks(&["GEORADIUSBYMEMBER", "g", "m", "3", "km", "STORE", "a"]),
            Ok(vec![1, 6])
        );
        assert_eq!(ks(&["MIGRATE", "h", "1", "k", "0", "5"]), Ok(vec![3]));
        assert_eq!(
            ks(&[
                "MIGRATE", "h", "1", "", "0", "5", "AUTH", "keys", "KEYS", "a", "b"
            ]),
            Ok(vec![9, 10])
        );
    }

    #[test]
    fn every_movablekeys_command_is_handled_by_code() {
        for c in all().filter(|c| c.movable_keys()) {
            assert!(
                MOVABLE_HANDLED.contains(&c.name),
                "{} has no key extractor",
                c.name
            );
        }
        for name in MOVABLE_HANDLED {
            assert!(
                lookup(name.as_bytes()).is_some_and(|c| c.movable_keys()),
                "{name}"
            );
        }
    }

    #[test]
    fn every_command_has_a_deliberate_policy() {
        for c in all() {
            assert_ne!(
                c.policy,
                Policy::Unsupported {
                    reason: UNCLASSIFIED
                },
                "{} needs a policy in policy.rs",
                c.name
            );
        }
    }

    #[test]
    fn policies_of_representative_commands() {
        let p = |n: &str| {
            let (parent, sub) = match n.split_once(' ') {
                Some((p, s)) => (p, Some(s)),
                None => (n, None),
            };
            let c = lookup(parent.as_bytes()).unwrap();
            match sub {
                Some(s) => subcommand(c, s.as_bytes()).unwrap().policy,
                None => c.policy,
            }
        };
        assert_eq!(p("get"), Policy::SingleKey);
        assert_eq!(p("object encoding"), Policy::SingleKey);
        assert_eq!(
            p("mget"),
            Policy::MultiKey {
                merge: MultiKeyMerge::ConcatInKeyOrder
            }
        );
        assert_eq!(
            p("unlink"),
            Policy::MultiKey {
                merge: MultiKeyMerge::SumIntegers
            }
        );
        assert_eq!(
            p("mset"),
            Policy::MultiKey {
                merge: MultiKeyMerge::AllOk
            }
        );
        for same in [
            "msetnx",
            "rename",
            "smove",
            "sunionstore",
            "eval",
            "lmove",
            "zunionstore",
        ] {
            assert_eq!(p(same), Policy::SameShard, "{same}");
        }
        assert_eq!(
            p("dbsize"),
            Policy::FanOut {
                merge: FanOutMerge::SumIntegers
            }
        );
        assert_eq!(
            p("keys"),
            Policy::FanOut {
                merge: FanOutMerge::ConcatArrays
            }
        );
        assert_eq!(
            p("scan"),
            Policy::FanOut {
                merge: FanOutMerge::Scan
            }
        );
        assert_eq!(
            p("script exists"),
            Policy::FanOut {
                merge: FanOutMerge::ElementwiseAnd
            }
        );
        assert_eq!(
            p("config set"),
            Policy::FanOut {
                merge: FanOutMerge::AllOk
            }
        );
        for s in ["select", "auth", "hello", "client setname", "quit", "echo"] {
            assert_eq!(p(s), Policy::Session, "{s}");
        }
        for b in ["blpop", "bzmpop", "xread", "brpoplpush"] {
            assert_eq!(p(b), Policy::Blocking, "{b}");
        }
        for s in ["subscribe", "publish", "ssubscribe", "pubsub channels"] {
            assert_eq!(p(s), Policy::PubSub, "{s}");
        }
        for t in ["multi", "exec", "watch", "unwatch", "discard"] {
            assert_eq!(p(t), Policy::Transaction, "{t}");
        }
        for u in [
            "cluster info",
            "monitor",
            "sync",
            "psync",
            "replicaof",
            "shutdown",
            "debug",
            "migrate",
        ] {
            assert!(matches!(p(u), Policy::Unsupported { .. }), "{u}");
        }
        assert_eq!(p("time"), Policy::AnyShard);
    }

    #[test]
    fn key_positions_iterate_in_order_without_heap_runs() {
        let info = lookup(b"zunionstore").unwrap();
        let args: [&[u8]; 5] = [b"zunionstore", b"d", b"2", b"a", b"b"];
        let k = keys_of(info, &args).unwrap();
        assert_eq!(k.len(), 3);
        assert_eq!(k.runs().len(), 2);
        assert_eq!(k.collect::<Vec<_>>(), vec![1, 3, 4]);
    }
}
