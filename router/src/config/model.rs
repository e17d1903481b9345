//! The config types and how each is read from TOML. Cross-references are checked in `validate`.

use std::net::SocketAddr;
use std::time::Duration;

use std::path::Path;

pub use super::governance::{
    Admit, CallerList, ClusterBudget, CommandLimit, ConcurrencyLimit, Governance, InFlight,
    MAX_RATIO_BREAKERS, Pace, PaceBudgets, Pacer, RatioBreaker, SourceList, pace_clock_us,
};
use super::reader::{Diags, Span, TableReader};
pub use super::registry::{Endpoint, RegistrySettings};
pub use super::tls::{BackendTls, ServerTls};

/// The whole, validated configuration of one `furrow proxy` process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub proxy: ProxySettings,
    /// Client-facing listeners.
    pub listeners: Vec<Listener>,
    /// Redis backend groups, by name.
    pub redis_groups: Vec<RedisGroup>,
    /// MySQL backend groups, by name.
    pub mysql_groups: Vec<MysqlGroup>,
    /// Proxy users (clients authenticate as these; backends use the group's own credentials).
    pub users: Vec<User>,
    /// The source text, as read (for `SHOW CONFIG`; secrets are masked there).
    pub source: String,
}

impl Config {
    /// The Redis group called `name`.
    pub fn redis_group(&self, name: &str) -> Option<&RedisGroup> {
        self.redis_groups.iter().find(|g| g.name == name)
    }

    /// The MySQL group called `name`.
    pub fn mysql_group(&self, name: &str) -> Option<&MysqlGroup> {
        self.mysql_groups.iter().find(|g| g.name == name)
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The `[sharding.NAME]` sections. They are re-read from the (already validated) source rather
    /// than stored in a field, so that code building a `Config` literally keeps compiling.
    pub fn sharding(&self) -> Vec<Sharding> {
        let (doc, _) = toml::de::DeTable::parse_recoverable(self.source.as_str());
        let mut d = Diags::default();
        let mut root = TableReader::new(doc.get_ref(), doc.span(), "");
        read_shardings(&mut root, &mut d)
    }

    /// The `[tracing]` section (span export to a collector), if the config has one and it is enabled.
    /// Re-read from the (already validated) source like [`Config::sharding`].
    pub fn tracing(&self) -> Option<Tracing> {
        let (doc, _) = toml::de::DeTable::parse_recoverable(self.source.as_str());
        let mut d = Diags::default();
        let mut root = TableReader::new(doc.get_ref(), doc.span(), "");
        read_tracing(&mut root, &mut d).filter(|t| t.enabled)
    }

    /// The listeners `user` may use.
    pub fn listeners_of<'a>(&'a self, user: &'a User) -> impl Iterator<Item = &'a Listener> + 'a {
        self.listeners
            .iter()
            .filter(move |l| user.listeners.is_empty() || user.listeners.contains(&l.name))
    }

    /// Users allowed on `listener` (a user with an empty `listeners` list may use every listener).
    pub fn users_for<'a>(&'a self, listener: &'a str) -> impl Iterator<Item = &'a User> + 'a {
        self.users
            .iter()
            .filter(move |u| u.listeners.is_empty() || u.listeners.iter().any(|l| l == listener))
    }
}

/// `[proxy]`: process-wide settings.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Data-path executors (threads, one tokio current_thread runtime each). Default: CPU count.
    pub executors: Option<usize>,
    /// Admin port (RESP, works with `redis-cli` and `nc`). Default 127.0.0.1:7379; loopback unless set.
    pub admin: Option<SocketAddr>,
    /// Password required by the admin port (`AUTH`), if any.
    pub admin_password: Option<String>,
    /// Prometheus `/metrics` HTTP address, if any.
    pub metrics: Option<SocketAddr>,
    /// How long shutdown waits for client connections to finish.
    pub shutdown_grace: Duration,
    /// Failed MySQL logins from one address within `login_block` after which the address is
    /// refused at connect until that window ends (0: no throttling). Default 10.
    pub max_login_failures: u32,
    /// The window of `max_login_failures` (`login_block_ms`). Default 60 s.
    pub login_block: Duration,
    /// `[registry]`: the control center resolving `*_from` services (see [`RegistrySettings`]).
    pub registry: Option<RegistrySettings>,
    /// Governance rules of the proxy's registry service enforced at accept (set by the process
    /// from the registry, never read from the file; None: no check).
    pub governance: Option<std::sync::Arc<Governance>>,
}

impl Default for ProxySettings {
    /// The settings of a config without a `[proxy]` table.
    fn default() -> Self {
        ProxySettings {
            executors: None,
            admin: None,
            admin_password: None,
            metrics: None,
            shutdown_grace: Duration::from_secs(5),
            max_login_failures: 10,
            login_block: Duration::from_secs(60),
            registry: None,
            governance: None,
        }
    }
}

/// What protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// RESP2/RESP3, in front of a Redis group.
    Redis,
    /// MySQL protocol, in front of a MySQL group.
    Mysql,
}

impl ListenerKind {
    /// The name used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Redis => "redis",
            ListenerKind::Mysql => "mysql",
        }
    }
}

/// `[[listeners]]`: one client-facing port.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique name (used in metrics, admin output, user permissions).
    pub name: String,
    /// Protocol.
    pub kind: ListenerKind,
    /// Address to bind (every executor binds it with SO_REUSEPORT).
    pub address: SocketAddr,
    /// The backend group (a `redis_groups` or `mysql_groups` name matching `kind`).
    pub group: String,
    /// Executors serving this listener (default: all).
    pub executors: Option<usize>,
    /// Per-listener limits.
    pub limits: ListenerLimits,
    /// Redis listener without users: whether clients may run admin and dangerous commands
    /// (CONFIG SET, FLUSHALL, DEBUG, SHUTDOWN, ...; see [`crate::redis::CommandInfo::refused_when_open`]).
    /// Off by default; on a listener with users, each user's `commands` rules decide instead.
    pub allow_admin_commands: bool,
    /// TLS for clients (`tls = { cert, key }`): MySQL clients upgrade with an SSL request, Redis
    /// clients speak TLS from the first byte. None: plain TCP.
    pub tls: Option<ServerTls>,
    pub(crate) span: Span,
    pub(crate) group_span: Span,
}

/// Limits that protect a listener and its clients from each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Maximum client connections (per process); further connections are refused with an error.
    pub max_clients: u32,
    /// Maximum requests in flight per client connection (pipeline depth).
    pub max_pipeline: u32,
    /// Maximum bytes buffered for one client (unread replies plus partial requests); slow readers are
    /// first not read from, then dropped.
    pub max_client_buffer: u64,
    /// Largest single frame (RESP bulk or MySQL packet payload) accepted from a client.
    pub max_frame: u64,
    /// MySQL: bytes that all clients of the listener together (every executor) may hold in
    /// packets being received, beyond the first 64 KiB of each; past it a client gets ERR 1041.
    pub client_buffer_budget: u64,
    /// Close client connections idle this long (None: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_clients: 10_000,
            max_pipeline: 4096,
            max_client_buffer: 64 * 1024 * 1024,
            max_frame: 512 * 1024 * 1024,
            client_buffer_budget: 1024 * 1024 * 1024,
            idle_timeout: None,
        }
    }
}

/// How a Redis group spreads keys over its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisDistribution {
    /// twemproxy-compatible ketama consistent hashing.
    Ketama,
    /// hash(key) mod server count (twemproxy's modula).
    Modula,
    /// A random server per request (for caches of identical data).
    Random,
    /// CRC16 slots (16384) assigned to servers by the `slots` table.
    Slots,
    /// A real Redis Cluster: the slot map is learned from the servers (MOVED/ASK followed).
    Cluster,
}

impl RedisDistribution {
    /// Names accepted in config files.
    pub const NAMES: &'static [&'static str] = &["ketama", "modula", "random", "slots", "cluster"];

    fn from_name(s: &str) -> Self {
        match s {
            "modula" => Self::Modula,
            "random" => Self::Random,
            "slots" => Self::Slots,
            "cluster" => Self::Cluster,
            _ => Self::Ketama,
        }
    }
}

/// Key hash functions (twemproxy's names) for ketama/modula/random.
pub const HASH_NAMES: &[&str] = &[
    "fnv1a_64",
    "fnv1_64",
    "fnv1a_32",
    "fnv1_32",
    "md5",
    "crc16",
    "crc32",
    "crc32a",
    "murmur",
    "one_at_a_time",
    "jenkins",
    "hsieh",
];

/// A backend server.
#[derive(Debug, Clone)]
pub struct Server {
    /// Unique name within the group (defaults to the address text).
    pub name: String,
    /// `host:port` as written (ketama hashes this text, as twemproxy does).
    pub address: String,
    /// Relative weight (ketama points, replica read share).
    pub weight: u32,
    /// Redis only: replicas of this shard (`host:port`), for `read_from` other than `primary`.
    pub replicas: Vec<String>,
    /// Redis only: the Sentinel master name to follow (with the group's `sentinels`); the
    /// server name when `sentinels` is set and this is not.
    pub sentinel_master: Option<String>,
    pub(crate) span: Span,
}

impl Server {
    /// Name of the registry entry of replica `address` of this server (`server@host:port`).
    pub fn replica_name(&self, address: &str) -> String {
        format!("{}@{}", self.name, address)
    }

    /// This server's replicas as servers of their own (for backend registries).
    pub fn replica_servers(&self) -> Vec<Server> {
        self.replicas
            .iter()
            .map(|a| Server {
                name: self.replica_name(a),
                address: a.clone(),
                weight: self.weight,
                replicas: Vec::new(),
                sentinel_master: None,
                span: self.span.clone(),
            })
            .collect()
    }
}

/// Where a Redis group sends read-only commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Always the shard's primary.
    Primary,
    /// A replica of the shard; the primary only when no replica is usable.
    Replica,
    /// Same as `Replica` (kept as a separate name for configs that say what they mean).
    PreferReplica,
}

impl ReadFrom {
    /// Names accepted in config files.
    pub const NAMES: &'static [&'static str] = &["primary", "replica", "prefer_replica"];

    fn from_name(s: &str) -> Self {
        match s {
            "replica" => Self::Replica,
            "prefer_replica" => Self::PreferReplica,
            _ => Self::Primary,
        }
    }
}

/// One row of a slot table: an inclusive range of slots served by a server.
#[derive(Debug, Clone)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// Server name.
    pub server: String,
    /// While the range moves online to another server (`SLOTS MIGRATE` on the admin port): its name.
    /// The proxy then moves each key of the range before the key's command runs (docs/redis-proxy.md).
    pub migrating_to: Option<String>,
    pub(crate) span: Span,
}

/// `[redis_groups.NAME]`: a set of Redis servers sharing a key space.
#[derive(Debug, Clone)]
pub struct RedisGroup {
    /// Group name.
    pub name: String,
    /// Key distribution.
    pub distribution: RedisDistribution,
    /// Key hash function name (one of [`HASH_NAMES`]).
    pub hash: String,
    /// Hash tag delimiters, e.g. `{}`: only the part between them is hashed.
    pub hash_tag: Option<[u8; 2]>,
    /// Servers, in config order (order matters for modula and ketama).
    pub servers: Vec<Server>,
    /// `servers_from`: the registry service whose instances are the servers (sorted by instance id);
    /// the process fills `servers` from it ([`Config::with_endpoints`]).
    pub servers_from: Option<String>,
    /// Slot table (only with `distribution = "slots"`).
    pub slots: Vec<SlotRange>,
    /// Backend AUTH username (Redis 6 ACL), if any.
    pub username: Option<String>,
    /// Backend AUTH password, if any.
    pub password: Option<String>,
    /// Pipelined connections per server per executor.
    pub connections: u32,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// A request without a reply after this long fails with an error.
    pub request_timeout: Duration,
    /// Consecutive failures after which a server is ejected.
    pub eject_after: u32,
    /// How long an ejected server stays out before it is tried again.
    pub retry_after: Duration,
    /// Where read-only commands go (`read_from`).
    pub read_from: ReadFrom,
    /// Redis Sentinel addresses (`host:port`); when set, each server's primary address is asked
    /// from them and followed across failovers.
    pub sentinels: Vec<String>,
    /// TLS to the servers (`tls = { ca, server_name }`): connections speak TLS from the first
    /// byte (Redis's `tls-port`) and the servers' certificates are verified against `ca`. None:
    /// plain TCP.
    pub tls: Option<BackendTls>,
    pub(crate) span: Span,
}

impl RedisGroup {
    /// The Sentinel master name of `server` (None without `sentinels`).
    pub fn sentinel_master<'a>(&self, server: &'a Server) -> Option<&'a str> {
        if self.sentinels.is_empty() {
            return None;
        }
        Some(server.sentinel_master.as_deref().unwrap_or(&server.name))
    }
}

/// `[mysql_groups.NAME]`: a primary and its replicas.
#[derive(Debug, Clone)]
pub struct MysqlGroup {
    /// Group name.
    pub name: String,
    /// Backend user Furrow logs in as.
    pub user: String,
    /// Backend password (needed in clear to log in to the backends).
    pub password: String,
    /// The primary (writes, transactions).
    pub primary: Server,
    /// Replicas (reads), with weights.
    pub replicas: Vec<Server>,
    /// `primary_from`: the registry service holding the primary (exactly one instance); the process
    /// fills `primary` from it.
    pub primary_from: Option<String>,
    /// `replicas_from`: the registry service whose instances are the replicas.
    pub replicas_from: Option<String>,
    /// A replica lagging more than this receives no reads.
    pub max_replica_lag: Duration,
    /// After a write, the session reads from the primary for this long (read-your-writes by time;
    /// with GTIDs, for writes whose GTID is not known). Zero: off. Default: `max_replica_lag`.
    pub read_your_writes: Duration,
    /// Read-your-writes by GTID (the default): after a write, a session reads only from replicas
    /// that have applied its last GTID (`@@last_gtid` vs the replica's `@@gtid_slave_pos`), else
    /// from the primary. `read_your_writes_mode = "off"` turns read-your-writes off.
    pub read_your_writes_gtid: bool,
    /// Backend connections per server per executor, at most.
    pub pool_max: u32,
    /// Idle backend connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Statement timeout (None: none).
    pub query_timeout: Option<Duration>,
    /// Statement timeout for reads when `query_timeout` is not set (None: none). A read that
    /// times out on a replica is retried on another server, so a stalled replica does not hang
    /// its clients; writes are never retried.
    pub read_timeout: Option<Duration>,
    /// Health check and lag measurement period.
    pub health_interval: Duration,
    /// Largest result (bytes on the wire) forwarded for one statement; a bigger one ends with an
    /// error. None: no limit.
    pub max_result_bytes: Option<u64>,
    /// Statements slower than this go to the slow-query log.
    pub slow_query: Duration,
    /// Audit log file (one JSON line per statement, written off the data path), if any.
    pub audit_log: Option<String>,
    /// Consecutive errors or timeouts after which a server's circuit opens (no traffic) ...
    pub circuit_break_after: u32,
    /// ... for this long (then it is tried again).
    pub circuit_open: Duration,
    /// `denylist` (default: everything runs unless a `deny` rule matches) or `allowlist` (only
    /// statements matching an `allow` rule run).
    pub rules_mode: RulesMode,
    /// SQL rules, first match wins for deny/allow; every matching `limit` rule applies.
    pub rules: Vec<MysqlRule>,
    /// TLS to the servers (`tls = { ca, server_name }`): an SSL request after the server's
    /// handshake, the server's certificate verified against the CA. None: plain TCP.
    pub tls: Option<BackendTls>,
}

/// How `[[mysql_groups.NAME.rules]]` deny/allow rules combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesMode {
    /// Everything runs unless a `deny` rule matches.
    Denylist,
    /// Only statements matching an `allow` rule run.
    Allowlist,
}

/// What a SQL rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// Refuse matching statements.
    Deny,
    /// Allow matching statements (meaningful with `rules_mode = "allowlist"`).
    Allow,
    /// Rate and/or concurrency limit matching statements.
    Limit,
}

/// Which statements share one limit budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulePer {
    /// One budget for everything the rule matches.
    Rule,
    /// One budget per proxy user.
    User,
    /// One budget per statement fingerprint.
    Fingerprint,
}

/// `[[mysql_groups.NAME.rules]]`: a SQL black/white-list entry or a limit.
#[derive(Debug, Clone)]
pub struct MysqlRule {
    /// Glob (`*` = any text, case-insensitive) over the statement fingerprint (literals as `?`,
    /// keywords upper-case), or `digest:<16 hex>` for one fingerprint hash.
    pub pattern: String,
    /// What to do.
    pub action: RuleAction,
    /// Users the rule applies to (empty: all).
    pub users: Vec<String>,
    /// For `limit`: statements per second.
    pub qps: Option<u32>,
    /// For `limit`: statements in flight at once.
    pub concurrency: Option<u32>,
    /// For `limit`: how budgets are shared.
    pub per: RulePer,
    /// For `limit` with `qps`: what happens above the rate (`warm_up_s` / `max_wait_ms` in a file).
    pub pace: super::governance::Pace,
    /// Text added to the error clients get.
    pub message: Option<String>,
    /// For `limit`: a cluster-wide QPS budget that replaces the local one (set by the proxy process for
    /// governance rules marked `cluster`; never from a file).
    pub cluster: Option<std::sync::Arc<dyn super::governance::ClusterBudget>>,
    /// For `limit` rules made from governance rules: where their refusals are counted (set by the
    /// proxy process; never from a file).
    pub governed: Option<std::sync::Arc<super::governance::PaceBudgets>>,
}

/// Where a user's reads may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPolicy {
    /// Reads to replicas, writes and transactions to the primary.
    Split,
    /// Everything to the primary.
    Primary,
    /// Reads only to replicas (e.g. reporting users); writes are refused.
    ReplicaOnly,
}

/// `[users.NAME]`: a proxy user.
#[derive(Debug, Clone)]
pub struct User {
    /// User name.
    pub name: String,
    /// SHA1(SHA1(password)) — the `mysql_native_password` stored form (`*HEX` in config).
    pub native_hash: Option<[u8; 20]>,
    /// SHA256(SHA256(password)) — verifies `caching_sha2_password` and RESP `AUTH` (hex in config).
    pub sha256_hash: Option<[u8; 32]>,
    /// Listeners this user may use (empty: all).
    pub listeners: Vec<String>,
    /// MySQL schemas the user may use (empty: all).
    pub schemas: Vec<String>,
    /// Redis command rules, applied in order: `+name`, `-name`, `+@all`, `-@all`, `+@read`, `+@write` ...
    pub commands: Vec<String>,
    /// Redis key patterns (glob) the user may touch (empty: all).
    pub keys: Vec<String>,
    /// Client source addresses allowed (CIDR or plain address; empty: all).
    pub hosts: Vec<IpNet>,
    /// Read routing policy (MySQL).
    pub read_policy: ReadPolicy,
    /// Whether `/* furrow:... */` routing hints in this user's statements are followed (MySQL).
    /// Hints only ever narrow what the user may do: they never override `read_policy`, and a
    /// write never goes to a replica.
    pub allow_hints: bool,
    /// MySQL: the user may log in only over TLS (refused with ERR 1045 otherwise, as the server
    /// refuses a `REQUIRE SSL` account).
    pub require_tls: bool,
    pub(crate) span: Span,
    pub(crate) listener_spans: Vec<Span>,
}

/// An IP network (address and prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Network address.
    pub addr: std::net::IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `::1/128` or a plain address (full-length prefix).
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { addr, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses match IPv4 networks).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn parse_addr(d: &mut Diags, path: &str, s: &toml::Spanned<String>) -> Option<SocketAddr> {
    match s.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            d.error(
                s.span(),
                path,
                format!(
                    "invalid address `{}`; expected IP:PORT such as 127.0.0.1:6400 or [::1]:6400",
                    s.get_ref()
                ),
            );
            None
        }
    }
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn read_config(
    mut root: TableReader<'_, '_>,
    d: &mut Diags,
    source: &str,
    base: &Path,
) -> Config {
    let mut proxy = match root.opt_table(d, "proxy") {
        Some(t) => read_proxy(t, d),
        None => ProxySettings::default(),
    };
    proxy.registry = root
        .opt_table(d, "registry")
        .and_then(|t| super::registry::read_registry(t, d, base));
    let listeners = root
        .opt_table_list(d, "listeners")
        .into_iter()
        .filter_map(|t| read_listener(t, d, base))
        .collect();
    let redis_groups = root
        .opt_named_tables(d, "redis_groups")
        .into_iter()
        .filter_map(|(name, t)| read_redis_group(name.into_inner(), t, d, base))
        .collect();
    let mysql_groups = root
        .opt_named_tables(d, "mysql_groups")
        .into_iter()
        .filter_map(|(name, t)| read_mysql_group(name.into_inner(), t, d, base))
        .collect();
    let users = root
        .opt_named_tables(d, "users")
        .into_iter()
        .filter_map(|(name, t)| read_user(name.into_inner(), t, d))
        .collect();
    let sharding = read_shardings(&mut root, d);
    read_tracing(&mut root, d);
    root.finish(d);
    let config = Config {
        proxy,
        listeners,
        redis_groups,
        mysql_groups,
        users,
        source: source.to_string(),
    };
    super::validate::validate_sharding(&config, &sharding, d);
    config
}

fn read_proxy(mut t: TableReader<'_, '_>, d: &mut Diags) -> ProxySettings {
    let path = t.path().to_string();
    let executors = t
        .opt_u64(d, "executors", 1, 1024)
        .map(|v| *v.get_ref() as usize);
    let admin = t
        .opt_str(d, "admin")
        .and_then(|s| parse_addr(d, &format!("{path}.admin"), &s));
    let admin_password = t.opt_str(d, "admin_password").map(|s| s.into_inner());
    let metrics = t
        .opt_str(d, "metrics")
        .and_then(|s| parse_addr(d, &format!("{path}.metrics"), &s));
    let shutdown_grace = t
        .opt_ms(d, "shutdown_grace_ms", 0, 3_600_000)
        .unwrap_or(Duration::from_secs(5));
    let max_login_failures = t
        .opt_u64(d, "max_login_failures", 0, 1_000_000)
        .map_or(10, |v| *v.get_ref() as u32);
    let login_block = t
        .opt_ms(d, "login_block_ms", 1, 86_400_000)
        .unwrap_or(Duration::from_secs(60));
    t.finish(d);
    ProxySettings {
        executors,
        admin,
        admin_password,
        metrics,
        shutdown_grace,
        max_login_failures,
        login_block,
        registry: None,
        governance: None,
    }
}

fn read_limits(t: &mut TableReader<'_, '_>, d: &mut Diags) -> ListenerLimits {
    let def = ListenerLimits::default();
    ListenerLimits {
        max_clients: t
            .opt_u64(d, "max_clients", 1, 1_000_000)
            .map_or(def.max_clients, |v| *v.get_ref() as u32),
        max_pipeline: t
            .opt_u64(d, "max_pipeline", 1, 1_000_000)
            .map_or(def.max_pipeline, |v| *v.get_ref() as u32),
        max_client_buffer: t
            .opt_u64(d, "max_client_buffer", 64 * 1024, 1 << 40)
            .map_or(def.max_client_buffer, |v| *v.get_ref()),
        max_frame: t
            .opt_u64(d, "max_frame", 1024, 1 << 32)
            .map_or(def.max_frame, |v| *v.get_ref()),
        client_buffer_budget: t
            .opt_u64(d, "client_buffer_budget", 1024 * 1024, 1 << 44)
            .map_or(def.client_buffer_budget, |v| *v.get_ref()),
        idle_timeout: t
            .opt_ms(d, "idle_timeout_ms", 0, 30 * 24 * 3_600_000)
            .filter(|d| !d.is_zero()),
    }
}

fn read_listener(mut t: TableReader<'_, '_>, d: &mut Diags, base: &Path) -> Option<Listener> {
    let path = t.path().to_string();
    let name = t.req_str(d, "name");
    let kind = t.req_choice(d, "kind", &["redis", "mysql"]);
    let address = t.req_str(d, "address");
    let group = t.req_str(d, "group");
    let executors = t
        .opt_u64(d, "executors", 1, 1024)
        .map(|v| *v.get_ref() as usize);
    let limits = read_limits(&mut t, d);
    let allow_admin_commands = t
        .opt_bool(d, "allow_admin_commands")
        .is_some_and(|b| *b.get_ref());
    let tls = t
        .opt_table(d, "tls")
        .and_then(|tt| super::tls::read_server_tls(tt, d, base));
    let span = t.span();
    t.finish(d);
    let kind = kind?;
    let address = parse_addr(d, &format!("{path}.address"), &address?)?;
    let group = group?;
    Some(Listener {
        name: name?.into_inner(),
        kind: if *kind.get_ref() == "redis" {
            ListenerKind::Redis
        } else {
            ListenerKind::Mysql
        },
        address,
        group_span: group.span(),
        group: group.into_inner(),
        executors,
        limits,
        allow_admin_commands,
        tls,
        span,
    })
}

fn read_server(mut t: TableReader<'_, '_>, d: &mut Diags, redis: bool) -> Option<Server> {
    let path = t.path().to_string();
    let address = t.req_str(d, "address");
    let name = t.opt_str(d, "name");
    let weight = t
        .opt_u64(d, "weight", 0, 1_000_000)
        .map_or(1, |v| *v.get_ref() as u32);
    let mut replicas = Vec::new();
    let mut sentinel_master = None;
    if redis {
        for r in t.opt_str_list(d, "replicas") {
            if valid_host_port(r.get_ref()) {
                replicas.push(r.into_inner());
            } else {
                d.error(
                    r.span(),
                    &format!("{path}.replicas"),
                    format!(
                        "invalid replica address `{}`; expected HOST:PORT such as 127.0.0.1:6380",
                        r.get_ref()
                    ),
                );
            }
        }
        sentinel_master = t.opt_str(d, "sentinel_master").map(|s| s.into_inner());
    }
    let span = t.span();
    t.finish(d);
    let address = address?;
    if !valid_host_port(address.get_ref()) {
        d.error(
            address.span(),
            &format!("{path}.address"),
            format!(
                "invalid address `{}`; expected HOST:PORT such as 127.0.0.1:6379",
                address.get_ref()
            ),
        );
        return None;
    }
    let address = address.into_inner();
    Some(Server {
        name: name.map_or_else(|| address.clone(), |n| n.into_inner()),
        address,
        weight,
        replicas,
        sentinel_master,
        span,
    })
}

/// `host:port` with a non-empty host and a port from 1 to 65535 (IPv6 hosts in brackets).
fn valid_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(':')
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

fn read_servers(
    t: &mut TableReader<'_, '_>,
    d: &mut Diags,
    key: &'static str,
    redis: bool,
) -> Vec<Server> {
    t.opt_table_list(d, key)
        .into_iter()
        .filter_map(|s| read_server(s, d, redis))
        .collect()
}

fn read_redis_group(
    name: String,
    mut t: TableReader<'_, '_>,
    d: &mut Diags,
    base: &Path,
) -> Option<RedisGroup> {
    let path = t.path().to_string();
    let distribution = t
        .opt_choice(d, "distribution", RedisDistribution::NAMES)
        .map_or(RedisDistribution::Ketama, |c| {
            RedisDistribution::from_name(c.get_ref())
        });
    let hash = t
        .opt_choice(d, "hash", HASH_NAMES)
        .map_or("fnv1a_64", |c| *c.get_ref())
        .to_string();
    let hash_tag = t.opt_str(d, "hash_tag").and_then(|s| {
        let b = s.get_ref().as_bytes();
        if b.len() == 2 {
            Some([b[0], b[1]])
        } else if b.is_empty() {
            None
        } else {
            d.error(
                s.span(),
                &format!("{path}.hash_tag"),
                "expected exactly two characters, such as \"{}\"",
            );
            None
        }
    });
    let servers: Vec<Server> = read_servers(&mut t, d, "servers", true);
    let servers_from = super::registry::read_service(&mut t, d, "servers_from");
    let slots = t
        .opt_table_list(d, "slots")
        .into_iter()
        .filter_map(|mut s| {
            let p = s.path().to_string();
            let range = s.req_str(d, "range");
            let server = s.req_str(d, "server");
            let migrating_to = s.opt_str(d, "migrating_to").map(|m| m.into_inner());
            let span = s.span();
            s.finish(d);
            let range = range?;
            let parsed = parse_slot_range(range.get_ref());
            if parsed.is_none() {
                d.error(
                    range.span(),
                    &format!("{p}.range"),
                    format!(
                        "invalid slot range `{}`; expected FIRST-LAST within 0-16383, e.g. \"0-8191\"",
                        range.get_ref()
                    ),
                );
            }
            let (start, end) = parsed?;
            Some(SlotRange {
                start,
                end,
                server: server?.into_inner(),
                migrating_to,
                span,
            })
        })
        .collect();
    let username = t.opt_str(d, "username").map(|s| s.into_inner());
    let password = t.opt_str(d, "password").map(|s| s.into_inner());
    let connections = t
        .opt_u64(d, "connections", 1, 64)
        .map_or(1, |v| *v.get_ref() as u32);
    let connect_timeout = t
        .opt_ms(d, "connect_timeout_ms", 1, 600_000)
        .unwrap_or(Duration::from_millis(1000));
    let request_timeout = t
        .opt_ms(d, "request_timeout_ms", 1, 3_600_000)
        .unwrap_or(Duration::from_millis(5000));
    let eject_after = t
        .opt_u64(d, "eject_after", 1, 1_000_000)
        .map_or(3, |v| *v.get_ref() as u32);
    let retry_after = t
        .opt_ms(d, "retry_after_ms", 1, 3_600_000)
        .unwrap_or(Duration::from_millis(5000));
    let read_from = t
        .opt_choice(d, "read_from", ReadFrom::NAMES)
        .map_or(ReadFrom::Primary, |c| ReadFrom::from_name(c.get_ref()));
    let mut sentinels = Vec::new();
    for a in t.opt_str_list(d, "sentinels") {
        if valid_host_port(a.get_ref()) {
            sentinels.push(a.into_inner());
        } else {
            d.error(
                a.span(),
                &format!("{path}.sentinels"),
                format!(
                    "invalid sentinel address `{}`; expected HOST:PORT such as 127.0.0.1:26379",
                    a.get_ref()
                ),
            );
        }
    }
    let tls = t
        .opt_table(d, "tls")
        .and_then(|tt| super::tls::read_backend_tls(tt, d, base));
    let span = t.span();
    t.finish(d);
    if servers_from.is_some() {
        let why = if !servers.is_empty() {
            Some("`servers_from` and `servers` exclude each other")
        } else if matches!(
            distribution,
            RedisDistribution::Slots | RedisDistribution::Cluster
        ) {
            Some(
                "a registry service gives ketama, modula or random servers, not with distribution = \"slots\" or \"cluster\"",
            )
        } else if !sentinels.is_empty() {
            Some("`servers_from` and `sentinels` exclude each other")
        } else {
            None
        };
        if let Some(why) = why {
            d.error(span.clone(), &format!("{path}.servers_from"), why);
        }
    }
    Some(RedisGroup {
        name,
        distribution,
        hash,
        hash_tag,
        servers,
        servers_from,
        slots,
        username,
        password,
        connections,
        connect_timeout,
        request_timeout,
        eject_after,
        retry_after,
        read_from,
        sentinels,
        tls,
        span,
    })
}

fn parse_slot_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
        None => {
            let v = s.trim().parse::<u16>().ok()?;
            (v, v)
        }
    };
    (a <= b && b < 16384).then_some((a, b))
}

fn read_mysql_group(
    name: String,
    mut t: TableReader<'_, '_>,
    d: &mut Diags,
    base: &Path,
) -> Option<MysqlGroup> {
    let user = t.req_str(d, "user");
    let password = t
        .opt_str(d, "password")
        .map(|s| s.into_inner())
        .unwrap_or_default();
    let primary_from = super::registry::read_service(&mut t, d, "primary_from");
    let replicas_from = super::registry::read_service(&mut t, d, "replicas_from");
    let primary = match (t.opt_table(d, "primary"), &primary_from) {
        (Some(_), Some(_)) => {
            d.error(
                t.span(),
                &format!("{}.primary_from", t.path()),
                "`primary_from` and `primary` exclude each other",
            );
            None
        }
        (None, Some(s)) => Some(super::registry::placeholder(s, t.span())),
        (Some(p), None) => read_server(p, d, false),
        (None, None) => {
            let span = t.span();
            d.error(
                span,
                &format!("{}.primary", t.path()),
                "missing required key `primary` (a table with `address`)",
            );
            None
        }
    };
    let replicas = read_servers(&mut t, d, "replicas", false);
    if replicas_from.is_some() && !replicas.is_empty() {
        d.error(
            t.span(),
            &format!("{}.replicas_from", t.path()),
            "`replicas_from` and `replicas` exclude each other",
        );
    }
    let max_replica_lag = t
        .opt_ms(d, "max_replica_lag_ms", 0, 86_400_000)
        .unwrap_or(Duration::from_secs(5));
    // Read-your-writes is on unless opted out: by GTID (with the window as the fallback when a
    // write's GTID is not known, e.g. on servers without `@@last_gtid`), or by the window alone.
    let ryw_mode = t
        .opt_choice(d, "read_your_writes_mode", &["gtid", "time", "off"])
        .map_or("gtid", |c| *c.get_ref());
    let window = t
        .opt_ms(d, "read_your_writes_ms", 0, 3_600_000)
        .unwrap_or(max_replica_lag);
    let read_your_writes = if ryw_mode == "off" {
        Duration::ZERO
    } else {
        window
    };
    let read_your_writes_gtid = ryw_mode == "gtid";
    let pool_max = t
        .opt_u64(d, "pool_max", 1, 100_000)
        .map_or(64, |v| *v.get_ref() as u32);
    let pool_idle_timeout = t
        .opt_ms(d, "pool_idle_timeout_ms", 1000, 86_400_000)
        .unwrap_or(Duration::from_secs(60));
    let connect_timeout = t
        .opt_ms(d, "connect_timeout_ms", 1, 600_000)
        .unwrap_or(Duration::from_millis(2000));
    let query_timeout = t
        .opt_ms(d, "query_timeout_ms", 0, 86_400_000)
        .filter(|d| !d.is_zero());
    let read_timeout = t
        .opt_ms(d, "read_timeout_ms", 0, 86_400_000)
        .map_or(Some(Duration::from_secs(30)), |d| {
            (!d.is_zero()).then_some(d)
        });
    let health_interval = t
        .opt_ms(d, "health_interval_ms", 50, 3_600_000)
        .unwrap_or(Duration::from_millis(1000));
    let max_result_bytes = t
        .opt_u64(d, "max_result_bytes", 0, 1 << 40)
        .map(|v| *v.get_ref())
        .filter(|v| *v > 0);
    let slow_query = t
        .opt_ms(d, "slow_query_ms", 0, 86_400_000)
        .unwrap_or(Duration::from_secs(1));
    let audit_log = t.opt_str(d, "audit_log").map(|s| s.into_inner());
    let circuit_break_after = t
        .opt_u64(d, "circuit_break_after", 1, 1_000_000)
        .map_or(5, |v| *v.get_ref() as u32);
    let circuit_open = t
        .opt_ms(d, "circuit_open_ms", 1, 3_600_000)
        .unwrap_or(Duration::from_secs(5));
    let rules_mode = t
        .opt_choice(d, "rules_mode", &["denylist", "allowlist"])
        .map_or(RulesMode::Denylist, |c| {
            if *c.get_ref() == "allowlist" {
                RulesMode::Allowlist
            } else {
                RulesMode::Denylist
            }
        });
    let rules = t
        .opt_table_list(d, "rules")
        .into_iter()
        .filter_map(|r| read_mysql_rule(r, d))
        .collect();
    let tls = t
        .opt_table(d, "tls")
        .and_then(|tt| super::tls::read_backend_tls(tt, d, base));
    t.finish(d);
    Some(MysqlGroup {
        name,
        user: user?.into_inner(),
        password,
        primary: primary?,
        replicas,
        primary_from,
        replicas_from,
        max_replica_lag,
        read_your_writes,
        read_your_writes_gtid,
        pool_max,
        pool_idle_timeout,
        connect_timeout,
        query_timeout,
        read_timeout,
        health_interval,
        max_result_bytes,
        slow_query,
        audit_log,
        circuit_break_after,
        circuit_open,
        rules_mode,
        rules,
        tls,
    })
}

fn read_mysql_rule(mut t: TableReader<'_, '_>, d: &mut Diags) -> Option<MysqlRule> {
    let path = t.path().to_string();
    let pattern = t.req_str(d, "match");
    let action = t.req_choice(d, "action", &["deny", "allow", "limit"]);
    let users = t
        .opt_str_list(d, "users")
        .into_iter()
        .map(|s| s.into_inner())
        .collect();
    let qps = t
        .opt_u64(d, "qps", 1, 10_000_000)
        .map(|v| *v.get_ref() as u32);
    let concurrency = t
        .opt_u64(d, "concurrency", 1, 1_000_000)
        .map(|v| *v.get_ref() as u32);
    let per = t
        .opt_choice(d, "per", &["rule", "user", "fingerprint"])
        .map_or(RulePer::Rule, |c| match *c.get_ref() {
            "user" => RulePer::User,
            "fingerprint" => RulePer::Fingerprint,
            _ => RulePer::Rule,
        });
    let message = t.opt_str(d, "message").map(|s| s.into_inner());
    let warm_up = t.opt_u64(d, "warm_up_s", 1, 3600);
    let max_wait = t.opt_u64(d, "max_wait_ms", 0, 60_000);
    let span = t.span();
    t.finish(d);
    let pace = match (warm_up, max_wait) {
        (Some(_), Some(q)) => {
            d.error(
                q.span(),
                &format!("{path}.max_wait_ms"),
                "a limit either warms up (`warm_up_s`) or queues (`max_wait_ms`), not both",
            );
            return None;
        }
        (Some(w), None) => super::governance::Pace::WarmUp {
            warm_up_ms: *w.get_ref() * 1000,
        },
        (None, Some(q)) => super::governance::Pace::Queue {
            max_wait_ms: *q.get_ref(),
        },
        (None, None) => super::governance::Pace::Reject,
    };
    if pace != super::governance::Pace::Reject && qps.is_none() {
        d.error(
            span,
            &path,
            "`warm_up_s` and `max_wait_ms` pace a `qps` limit: set `qps`",
        );
        return None;
    }
    let action = match *action?.get_ref() {
        "deny" => RuleAction::Deny,
        "allow" => RuleAction::Allow,
        _ => RuleAction::Limit,
    };
    if action == RuleAction::Limit && qps.is_none() && concurrency.is_none() {
        d.error(
            span,
            &path,
            "action = \"limit\" needs `qps` and/or `concurrency`",
        );
        return None;
    }
    let pattern = pattern?;
    if let Some(hex) = pattern.get_ref().strip_prefix("digest:")
        && (hex.len() != 16 || u64::from_str_radix(hex, 16).is_err())
    {
        d.error(
            pattern.span(),
            &format!("{path}.match"),
            "expected `digest:` followed by 16 hex digits (the fingerprint hash shown by the admin port)",
        );
        return None;
    }
    Some(MysqlRule {
        pattern: pattern.into_inner(),
        action,
        users,
        qps,
        concurrency,
        per,
        pace,
        message,
        cluster: None,
        governed: None,
    })
}

fn read_user(name: String, mut t: TableReader<'_, '_>, d: &mut Diags) -> Option<User> {
    let path = t.path().to_string();
    let native = t.opt_str(d, "password_native");
    let sha256 = t.opt_str(d, "password_sha256");
    let plain = t.opt_str(d, "password");
    let any_password = native.is_some() || sha256.is_some() || plain.is_some();
    if let Some(p) = &plain {
        d.error(
            p.span(),
            &format!("{path}.password"),
            "plain-text passwords are not accepted for proxy users; put the hashes printed by \
             `furrow hash-password` in `password_native` and `password_sha256`",
        );
    }
    let native_hash = native.and_then(|s| {
        let v = s.get_ref().strip_prefix('*').and_then(hex_bytes::<20>);
        if v.is_none() {
            d.error(
                s.span(),
                &format!("{path}.password_native"),
                "expected `*` followed by 40 hex digits (SHA1(SHA1(password)), as MySQL stores it)",
            );
        }
        v
    });
    let sha256_hash = sha256.and_then(|s| {
        let v = hex_bytes::<32>(s.get_ref());
        if v.is_none() {
            d.error(
                s.span(),
                &format!("{path}.password_sha256"),
                "expected 64 hex digits (SHA256(SHA256(password)))",
            );
        }
        v
    });
    let listeners = t.opt_str_list(d, "listeners");
    let schemas = t
        .opt_str_list(d, "schemas")
        .into_iter()
        .map(|s| s.into_inner())
        .collect();
    let commands: Vec<String> = t
        .opt_str_list(d, "commands")
        .into_iter()
        .filter_map(|s| {
            let ok = s.get_ref().len() > 1
                && (s.get_ref().starts_with('+') || s.get_ref().starts_with('-'));
            if !ok {
                d.error(
                    s.span(),
                    &format!("{path}.commands"),
                    format!(
                        "invalid rule `{}`; expected +NAME, -NAME, +@CATEGORY or -@CATEGORY",
                        s.get_ref()
                    ),
                );
            }
            if ok && let Err(msg) = check_command_rule(s.get_ref()) {
                d.error(s.span(), &format!("{path}.commands"), msg);
                return None;
            }
            ok.then(|| s.into_inner().to_ascii_lowercase())
        })
        .collect();
    let keys = t
        .opt_str_list(d, "keys")
        .into_iter()
        .map(|s| s.into_inner())
        .collect();
    let hosts = t
        .opt_str_list(d, "hosts")
        .into_iter()
        .filter_map(|s| {
            let v = IpNet::parse(s.get_ref());
            if v.is_none() {
                d.error(
                    s.span(),
                    &format!("{path}.hosts"),
                    format!(
                        "invalid network `{}`; expected an address or CIDR such as 10.0.0.0/8",
                        s.get_ref()
                    ),
                );
            }
            v
        })
        .collect();
    let read_policy = t
        .opt_choice(d, "read_policy", &["split", "primary", "replica_only"])
        .map_or(ReadPolicy::Split, |c| match *c.get_ref() {
            "primary" => ReadPolicy::Primary,
            "replica_only" => ReadPolicy::ReplicaOnly,
            _ => ReadPolicy::Split,
        });
    let allow_hints = t.opt_bool(d, "allow_hints").is_none_or(|b| *b.get_ref());
    let require_tls = t.opt_bool(d, "require_tls").is_some_and(|b| *b.get_ref());
    let span = t.span();
    t.finish(d);
    if !any_password {
        d.error(
            span.clone(),
            &path,
            "a user needs `password_native` and/or `password_sha256` (see `furrow hash-password`)",
        );
    }
    Some(User {
        name,
        native_hash,
        sha256_hash,
        listener_spans: listeners.iter().map(|l| l.span()).collect(),
        listeners: listeners.into_iter().map(|l| l.into_inner()).collect(),
        schemas,
        commands,
        keys,
        hosts,
        read_policy,
        allow_hints,
        require_tls,
        span,
    })
}

/// Checks one `+NAME` / `-@CATEGORY` rule against the Redis command table and Redis's own ACL
/// categories, so that a rule that would never match is refused instead of silently ignored.
fn check_command_rule(rule: &str) -> Result<(), String> {
    let what = rule.get(1..).unwrap_or_default();
    if let Some(cat) = what.strip_prefix('@') {
        if cat.eq_ignore_ascii_case("all")
            || crate::redis::command::category::from_name(cat).is_some()
        {
            return Ok(());
        }
        let known: Vec<String> = crate::redis::command::category::NAMES
            .iter()
            .map(|(n, _)| format!("@{n}"))
            .collect();
        return Err(format!(
            "unknown ACL category `@{cat}` in rule `{rule}`; Redis's categories are @all, {}",
            known.join(", ")
        ));
    }
    let (parent, sub) = match what.split_once('|') {
        Some((p, s)) => (p, Some(s)),
        None => (what, None),
    };
    let Some(info) = crate::redis::lookup(parent.as_bytes()) else {
        return Err(format!("unknown Redis command `{parent}` in rule `{rule}`"));
    };
    if let Some(sub) = sub
        && crate::redis::subcommand(info, sub.as_bytes()).is_none()
    {
        return Err(format!(
            "unknown subcommand `{sub}` of `{parent}` in rule `{rule}`"
        ));
    }
    Ok(())
}

/// `[sharding.NAME]`: one logical database split over shards (see `docs/sharding.md`).
#[derive(Debug, Clone)]
pub struct Sharding {
    /// Section name.
    pub name: String,
    /// The mysql listener serving this logical database.
    pub listener: String,
    /// Shards, in order (partition blocks are assigned in this order).
    pub shards: Vec<ShardDef>,
    /// Shard of unsharded tables (default: the first).
    pub default_shard: Option<String>,
    /// Most rows a merge may buffer (hashed GROUP BY, DISTINCT); beyond it the query fails.
    pub max_scatter_rows: u64,
    /// Largest `offset + limit` pushed to every shard by a cross-shard LIMIT.
    pub max_limit_rows: u64,
    /// Worker id of this proxy for global ids (0..1023; unique per proxy process).
    pub worker_id: u16,
    /// `xa = true`: a transaction that wrote to several shards commits with XA two-phase commit
    /// (see `docs/sharding.md`, Transactions). Needs an explicit `worker_id`.
    pub xa: bool,
    /// With XA: how often the background resolver looks for prepared branches left behind
    /// (`xa_resolve_interval_ms`, default 5 s).
    pub xa_resolve_interval: std::time::Duration,
    /// With XA: how long a branch must have been seen prepared (and its transaction over) before
    /// the resolver ends it (`xa_resolve_grace_ms`, default 15 s).
    pub xa_resolve_grace: std::time::Duration,
    /// Sharded tables.
    pub tables: Vec<ShardTable>,
    /// Broadcast tables (a full copy on every shard).
    pub broadcast: Vec<String>,
    pub(crate) span: Span,
}

/// One entry of `shards = [...]`.
#[derive(Debug, Clone)]
pub struct ShardDef {
    /// Shard name.
    pub name: String,
    /// A `mysql_groups` name.
    pub group: String,
    /// Schema on that group.
    pub schema: String,
    pub(crate) span: Span,
}

/// `[[sharding.NAME.tables]]`: how one logical table is split.
#[derive(Debug, Clone)]
pub struct ShardTable {
    /// Logical table name.
    pub name: String,
    /// Shard-key column.
    pub key: String,
    /// `hash`, `consistent_hash`, `range`, `date` or `list`.
    pub algorithm: String,
    /// Physical tables, `orders_{0000..0063}` (default: the logical name, one per shard).
    pub physical: Option<String>,
    /// `range`: ascending integer boundaries (one fewer than partitions).
    pub boundaries: Vec<String>,
    /// `list`: one comma-separated value list per partition.
    pub lists: Vec<String>,
    /// `date`: `day`, `month` (default) or `year`.
    pub unit: Option<String>,
    /// `date`: the date of partition 0.
    pub start: Option<String>,
    /// Partition count when `physical` is not given (must equal the shard count).
    pub partitions: Option<u64>,
    /// Columns that embed the same partition as the key (hash rules).
    pub gene_keys: Vec<String>,
    /// Column filled with a global id when an INSERT omits it.
    pub auto_id: Option<String>,
    /// Online resharding (written by the `RESHARD` job, docs/sharding.md "Resharding"): the table
    /// rule of the same section that is this table's new layout.
    pub reshard_to: Option<String>,
    /// With `reshard_to`: `copy` (the old layout serves, writes go to both) or `cutover` (the new
    /// layout serves, writes still go to both until `RESHARD CONFIRM`).
    pub reshard_phase: Option<String>,
    pub(crate) span: Span,
}

fn read_shardings(root: &mut TableReader<'_, '_>, d: &mut Diags) -> Vec<Sharding> {
    root.opt_named_tables(d, "sharding")
        .into_iter()
        .filter_map(|(name, mut t)| {
            let listener = t.req_str(d, "listener");
            let shards = t
                .opt_table_list(d, "shards")
                .into_iter()
                .filter_map(|mut s| {
                    let name = s.req_str(d, "name");
                    let group = s.req_str(d, "group");
                    let schema = s.req_str(d, "schema");
                    let span = s.span();
                    s.finish(d);
                    Some(ShardDef {
                        name: name?.into_inner(),
                        group: group?.into_inner(),
                        schema: schema?.into_inner(),
                        span,
                    })
                })
                .collect();
            let default_shard = t.opt_str(d, "default_shard").map(|s| s.into_inner());
            let max_scatter_rows = t
                .opt_u64(d, "max_scatter_rows", 1, 1 << 40)
                .map_or(100_000, |v| *v.get_ref());
            let max_limit_rows = t
                .opt_u64(d, "max_limit_rows", 1, 1 << 40)
                .map_or(10_000, |v| *v.get_ref());
            let worker_id = t.opt_u64(d, "worker_id", 0, 1023);
            let xa = t.opt_bool(d, "xa");
            if let Some(x) = &xa
                && *x.get_ref()
                && worker_id.is_none()
            {
                // XA recovery resolves only the prepared branches of its own worker id: two
                // proxies sharing one would roll back each other's transactions in flight.
                d.error(
                    x.span(),
                    &format!("{}.xa", t.path()),
                    "`xa = true` needs an explicit `worker_id`, unique per proxy process (XA \
                     recovery at start-up resolves the prepared transactions of its worker id)",
                );
            }
            let xa = xa.is_some_and(|x| *x.get_ref());
            let xa_resolve_interval = t
                .opt_ms(d, "xa_resolve_interval_ms", 100, 3_600_000)
                .unwrap_or(std::time::Duration::from_secs(5));
            let xa_resolve_grace = t
                .opt_ms(d, "xa_resolve_grace_ms", 1000, 86_400_000)
                .unwrap_or(std::time::Duration::from_secs(15));
            let worker_id = worker_id.map_or(0, |v| *v.get_ref() as u16);
            let tables = t
                .opt_table_list(d, "tables")
                .into_iter()
                .filter_map(|t| read_shard_table(t, d))
                .collect();
            let broadcast = t
                .opt_str_list(d, "broadcast")
                .into_iter()
                .map(|s| s.into_inner())
                .collect();
            let span = t.span();
            t.finish(d);
            Some(Sharding {
                name: name.into_inner(),
                listener: listener?.into_inner(),
                shards,
                default_shard,
                max_scatter_rows,
                max_limit_rows,
                worker_id,
                xa,
                xa_resolve_interval,
                xa_resolve_grace,
                tables,
                broadcast,
                span,
            })
        })
        .collect()
}

fn read_shard_table(mut t: TableReader<'_, '_>, d: &mut Diags) -> Option<ShardTable> {
    let name = t.req_str(d, "name");
    let key = t.req_str(d, "key");
    let algorithm = t.req_choice(
        d,
        "algorithm",
        &["hash", "consistent_hash", "range", "date", "list"],
    );
    let physical = t.opt_str(d, "physical").map(|s| s.into_inner());
    let boundaries = t
        .opt_str_list(d, "boundaries")
        .into_iter()
        .map(|s| s.into_inner())
        .collect();
    let lists = t
        .opt_str_list(d, "lists")
        .into_iter()
        .map(|s| s.into_inner())
        .collect();
    let unit = t
        .opt_choice(d, "unit", &["day", "month", "year"])
        .map(|c| c.get_ref().to_string());
    let start = t.opt_str(d, "start").map(|s| s.into_inner());
    let partitions = t.opt_u64(d, "partitions", 1, 65_536).map(|v| *v.get_ref());
    let gene_keys = t
        .opt_str_list(d, "gene_keys")
        .into_iter()
        .map(|s| s.into_inner())
        .collect();
    let auto_id = t.opt_str(d, "auto_id").map(|s| s.into_inner());
    let reshard_to = t.opt_str(d, "reshard_to").map(|s| s.into_inner());
    let reshard_phase = t
        .opt_choice(d, "reshard_phase", &["copy", "cutover"])
        .map(|c| c.get_ref().to_string());
    let span = t.span();
    t.finish(d);
    Some(ShardTable {
        name: name?.into_inner(),
        key: key?.into_inner(),
        algorithm: algorithm?.get_ref().to_string(),
        physical,
        boundaries,
        lists,
        unit,
        start,
        partitions,
        gene_keys,
        auto_id,
        reshard_to,
        reshard_phase,
        span,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipnet_contains() {
        let n = IpNet::parse("10.1.0.0/16").expect("valid");
        assert!(n.contains("10.1.2.3".parse().expect("ip")));
        assert!(!n.contains("10.2.0.1".parse().expect("ip")));
        let any = IpNet::parse("0.0.0.0/0").expect("valid");
        assert!(any.contains("192.0.2.1".parse().expect("ip")));
        let lo = IpNet::parse("127.0.0.1").expect("valid");
        assert!(lo.contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(IpNet::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn host_port_forms() {
        assert!(valid_host_port("127.0.0.1:6379"));
        assert!(valid_host_port("[::1]:6379"));
        assert!(valid_host_port("redis-a.internal:6379"));
        assert!(!valid_host_port("127.0.0.1"));
        assert!(!valid_host_port("host:0"));
        assert!(!valid_host_port(":6379"));
    }

    #[test]
    fn slot_ranges() {
        assert_eq!(parse_slot_range("0-8191"), Some((0, 8191)));
        assert_eq!(parse_slot_range("42"), Some((42, 42)));
        assert_eq!(parse_slot_range("10-5"), None);
        assert_eq!(parse_slot_range("0-16384"), None);
    }
}

/// `[tracing]`: spans of the data path, exported over OTLP/HTTP (protobuf) to a collector such as
/// `furrow control` (see `docs/tracing.md`). Read when the process starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// Whether spans are made at all (`enabled`, default true when the table exists).
    pub enabled: bool,
    /// The collector's base URL, `http://HOST:PORT` (spans go to `ENDPOINT/v1/traces`).
    pub endpoint: String,
    /// Bearer token sent to the collector, if any.
    pub token: Option<String>,
    /// `service.name` of the proxy's spans (default `furrow-proxy`).
    pub service_name: String,
    /// Percentage (0-100) of statements traced when the caller did not ask (default 1).
    pub head_sample_percent: u8,
    /// Statements at least this long are always traced (`slow_ms`, default 100).
    pub slow: Duration,
    /// Spans waiting for export; beyond it new spans are dropped and counted (default 16384).
    pub queue_spans: usize,
    /// Spans per export request (default 4096; a request is also cut at 1 MiB of spans).
    pub batch_spans: usize,
    /// Longest wait before a partial batch is sent (`flush_ms`, default 500).
    pub flush: Duration,
}

fn read_tracing(root: &mut TableReader<'_, '_>, d: &mut Diags) -> Option<Tracing> {
    let mut t = root.opt_table(d, "tracing")?;
    let path = t.path().to_string();
    let enabled = t.opt_bool(d, "enabled").is_none_or(|b| *b.get_ref());
    let endpoint = t.req_str(d, "endpoint");
    if let Some(e) = &endpoint {
        let ok = e.get_ref().strip_prefix("http://").is_some_and(|h| {
            !h.trim_end_matches('/').is_empty() && !h.trim_end_matches('/').contains('/')
        });
        if !ok {
            d.error(
                e.span(),
                &format!("{path}.endpoint"),
                "expected `http://HOST:PORT` (the collector's base URL; TLS is not supported)",
            );
        }
    }
    let token = t.opt_str(d, "token").map(|s| s.into_inner());
    let service_name = t
        .opt_str(d, "service_name")
        .map_or_else(|| "furrow-proxy".to_string(), |s| s.into_inner());
    let head_sample_percent = t
        .opt_u64(d, "head_sample_percent", 0, 100)
        .map_or(1, |v| *v.get_ref() as u8);
    let slow = t
        .opt_ms(d, "slow_ms", 0, 3_600_000)
        .unwrap_or(Duration::from_millis(100));
    let queue_spans = t
        .opt_u64(d, "queue_spans", 1, 1 << 24)
        .map_or(16_384, |v| *v.get_ref() as usize);
    let batch_spans = t
        .opt_u64(d, "batch_spans", 1, 65_536)
        .map_or(4096, |v| *v.get_ref() as usize);
    let flush = t
        .opt_ms(d, "flush_ms", 1, 60_000)
        .unwrap_or(Duration::from_millis(500));
    t.finish(d);
    Some(Tracing {
        enabled,
        endpoint: endpoint?.into_inner().trim_end_matches('/').to_string(),
        token,
        service_name,
        head_sample_percent,
        slow,
        queue_spans,
        batch_spans,
        flush,
    })
}
