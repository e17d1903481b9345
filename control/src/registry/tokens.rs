//! Cluster-wide rate limits: a token service in the center and its client.
//!
//! A rate limit rule marked `"cluster": true` is one budget for every client of the service (every proxy,
//! every application instance using the library), not one per client. After Sentinel's cluster flow
//! control, with leases instead of one request per call:
//!
//! - **The server** ([`TokenServer`], one per control node, in memory): a token bucket per `(env, service,
//!   rule, key)` refilled at the rule's `qps`, holding at most one second of tokens. A client asks for a
//!   *lease* of N tokens (`POST SVC/tokens`, many keys in one request) and gets what the bucket holds, up
//!   to N. The answer also says how many distinct clients asked in the last [`CLIENT_TTL_MS`]: the client's
//!   share for its local fallback.
//! - **The client** ([`ClusterTokens`]): the calling code takes tokens from a local pool under a mutex,
//!   never waiting on the network; a fetcher thread keeps each pool in use topped up to about 200 ms of the
//!   client's share and drops leased tokens older than [`LEASE_MS`] (a client cannot hoard). A pool that
//!   is empty while the center answers refuses the call: the cluster budget is spent.
//! - **Fallback**: while the center does not answer (or before it first answered for a key), the client
//!   enforces a local token bucket at `qps / clients` (its share, from the center's last answer; the whole
//!   `qps` if it never heard). So a cluster of N clients stays near the limit when the center is down.
//!
//! The budget is per control node: several nodes over one store each hand out the full rate. Point the
//! clients of a cluster limit at one node (docs/registry.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules::{LimitScope, Rule, RuleSet, TokenBucket};
use crate::client::{ApiClient, encode};
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::now_ms;

/// A client counts toward the share for this long after its last token request.
pub const CLIENT_TTL_MS: u64 = 5_000;
/// Leased tokens a client has not used within this long are dropped.
pub const LEASE_MS: u64 = 1_000;
/// The most buckets one node keeps (idle ones are dropped first).
pub const MAX_BUCKETS: usize = 100_000;
/// The most keys in one token request.
pub const MAX_REQUESTS: usize = 256;
/// The most clients counted per service.
const MAX_CLIENTS: usize = 10_000;

/// One key's ask in a token request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenAsk {
    /// The rule's index in the rule set.
    pub rule: usize,
    /// The budget key: the caller or user for `caller` / `user` scopes, empty for `service`.
    #[serde(default)]
    pub key: String,
    /// Tokens wanted (1 to 1,000,000).
    pub want: u32,
}

/// `POST SVC/tokens`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The asking client's identity (any stable string; counts toward the share).
    pub client: String,
    /// The rule set version the client enforces (409 when it is not the current one).
    pub version: u64,
    /// What it asks for.
    pub asks: Vec<TokenAsk>,
}

/// The answer: `granted[i]` tokens for `asks[i]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenGrant {
    /// The rule set version.
    pub version: u64,
    /// Distinct clients that asked for this service in the last [`CLIENT_TTL_MS`] (at least 1).
    pub clients: u32,
    /// Granted per ask.
    pub granted: Vec<u32>,
}

/// `(env, service, rule, key)`.
type BudgetKey = (String, String, usize, String);

#[derive(Debug, Default)]
struct ServerState {
    /// Budget -> (tokens, last refill ms, last use ms)
    buckets: HashMap<BudgetKey, (f64, u64, u64)>,
    /// (env, service) -> client -> last seen ms
    clients: HashMap<(String, String), HashMap<String, u64>>,
}

/// The token service of one control node.
#[derive(Debug, Default)]
pub struct TokenServer {
    state: Mutex<ServerState>,
    /// Token requests answered.
    pub requests: AtomicU64,
    /// Tokens handed out.
    pub granted: AtomicU64,
    /// Tokens asked for and not granted (the budget was spent).
    pub denied: AtomicU64,
}

/// The `qps` of rule `i` if it is a cluster-wide QPS limit.
fn cluster_qps(rules: &RuleSet, i: usize) -> Option<f64> {
    match rules.rules.get(i) {
        Some(Rule::RateLimit {
            qps: Some(q),
            cluster: true,
            ..
        }) => Some(*q),
        _ => None,
    }
}

impl TokenServer {
    /// Answers a token request against `rules` (the service's rule set in force) at `now_ms`.
    pub fn grant(&self, rules: &RuleSet, req: &TokenRequest, now_ms: u64) -> Result<TokenGrant> {
        if req.version != rules.version {
            return Err(ControlError::new(
                ErrorCode::VersionConflict,
                format!(
                    "the rule set in force is version {}, the request is for version {}",
                    rules.version, req.version
                ),
            )
            .with_field("version"));
        }
        if req.client.is_empty() || req.client.len() > 256 {
            return Err(ControlError::bad("client", "client is 1-256 characters"));
        }
        if req.asks.len() > MAX_REQUESTS {
            return Err(ControlError::bad(
                "asks",
                format!("at most {MAX_REQUESTS} asks per request"),
            ));
        }
        let mut qps = Vec::with_capacity(req.asks.len());
        for (i, a) in req.asks.iter().enumerate() {
            let q = cluster_qps(rules, a.rule).ok_or_else(|| {
                ControlError::bad(
                    &format!("asks/{i}/rule"),
                    format!("rule {} is not a cluster-wide qps limit", a.rule),
                )
            })?;
            if a.want == 0 || a.want > 1_000_000 {
                return Err(ControlError::bad(
                    &format!("asks/{i}/want"),
                    "want is 1-1000000",
                ));
            }
            if a.key.len() > 256 {
                return Err(ControlError::bad(
                    &format!("asks/{i}/key"),
                    "key is at most 256 characters",
                ));
            }
            qps.push(q);
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let svc = (rules.env.clone(), rules.service.clone());
        let clients = st.clients.entry(svc.clone()).or_default();
        clients.retain(|_, seen| now_ms.saturating_sub(*seen) < CLIENT_TTL_MS);
        if clients.len() < MAX_CLIENTS || clients.contains_key(&req.client) {
            clients.insert(req.client.clone(), now_ms);
        }
        let n_clients = clients.len().max(1) as u32;
        if st.buckets.len() + req.asks.len() > MAX_BUCKETS {
            // Idle buckets are full again after a second; dropping them changes nothing.
            st.buckets
                .retain(|_, b| now_ms.saturating_sub(b.2) < LEASE_MS.max(1_000));
            if st.buckets.len() + req.asks.len() > MAX_BUCKETS {
                return Err(ControlError::new(
                    ErrorCode::Internal,
                    "the token service holds too many budgets; try again",
                ));
            }
        }
        let mut granted = Vec::with_capacity(req.asks.len());
        let (mut given, mut short) = (0u64, 0u64);
        for (a, q) in req.asks.iter().zip(qps) {
            let cap = q.max(1.0);
            let b = st
                .buckets
                .entry((svc.0.clone(), svc.1.clone(), a.rule, a.key.clone()))
                .or_insert((cap, now_ms, now_ms));
            b.0 = (b.0 + now_ms.saturating_sub(b.1) as f64 * q / 1000.0).min(cap);
            b.1 = now_ms;
            b.2 = now_ms;
            let g = (b.0.floor() as u32).min(a.want);
            b.0 -= f64::from(g);
            granted.push(g);
            given += u64::from(g);
            short += u64::from(a.want - g);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.granted.fetch_add(given, Ordering::Relaxed);
        self.denied.fetch_add(short, Ordering::Relaxed);
        Ok(TokenGrant {
            version: rules.version,
            clients: n_clients,
            granted,
        })
    }

    /// Budgets held (for stats).
    pub fn buckets(&self) -> usize {
        self.state.lock().map(|s| s.buckets.len()).unwrap_or(0)
    }

    /// This node's budgets of a service's cluster-wide limits under `rules` (the set in force), with
    /// the tokens each holds at `now_ms`, at most `limit` of them (rule, then key order), and the
    /// clients that asked in the last [`CLIENT_TTL_MS`]: what the console shows. Read-only.
    pub fn state_of(&self, rules: &RuleSet, now_ms: u64, limit: usize) -> TokenState {
        let Ok(st) = self.state.lock() else {
            return TokenState::default();
        };
        let clients = st
            .clients
            .get(&(rules.env.clone(), rules.service.clone()))
            .map_or(0, |m| {
                m.values()
                    .filter(|seen| now_ms.saturating_sub(**seen) < CLIENT_TTL_MS)
                    .count()
            }) as u32;
        let mut budgets: Vec<BudgetState> = st
            .buckets
            .iter()
            .filter(|((env, svc, _, _), _)| *env == rules.env && *svc == rules.service)
            .filter_map(|((_, _, rule, key), (tokens, refilled, used))| {
                // A budget of a rule that is no longer a cluster limit (an older version) is not shown.
                let q = cluster_qps(rules, *rule)?;
                let held =
                    (tokens + now_ms.saturating_sub(*refilled) as f64 * q / 1000.0).min(q.max(1.0));
                Some(BudgetState {
                    rule: *rule,
                    key: key.clone(),
                    qps: q,
                    tokens: held,
                    last_used_ms: *used,
                })
            })
            .collect();
        budgets.sort_by(|a, b| (a.rule, &a.key).cmp(&(b.rule, &b.key)));
        let truncated = budgets.len() > limit;
        budgets.truncate(limit);
        TokenState {
            version: rules.version,
            clients,
            budgets,
            truncated,
        }
    }
}

/// A service's cluster-wide budgets on one node (`GET SVC/tokens`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenState {
    /// The rule set version in force.
    pub version: u64,
    /// Distinct clients that asked in the last [`CLIENT_TTL_MS`].
    pub clients: u32,
    /// The budgets, by rule then key.
    pub budgets: Vec<BudgetState>,
    /// Whether more budgets exist than were listed.
    pub truncated: bool,
}

/// One budget of a cluster-wide limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    /// The rule's index in the rule set.
    pub rule: usize,
    /// The budget key (caller or user; empty for a service-scope limit).
    pub key: String,
    /// The rule's rate.
    pub qps: f64,
    /// Tokens in the bucket now (at most one second of `qps`).
    pub tokens: f64,
    /// When a client last asked for this budget, ms since the epoch.
    pub last_used_ms: u64,
}

// ------------------------------------------------------------------------------------------- client

/// One key's local pool of leased tokens.
#[derive(Debug)]
struct Pool {
    tokens: u32,
    /// Leased tokens are dropped after this.
    expires_ms: u64,
    last_use_ms: u64,
    /// The center has answered for this key at least once.
    heard: bool,
    /// The local fallback bucket (share of the rate), made on first need.
    fallback: Option<TokenBucket>,
}

#[derive(Debug)]
struct ClientState {
    pools: HashMap<(usize, String), Pool>,
    /// The center answered the last request.
    online: bool,
    /// Clients sharing the budget, from the center's last answer.
    clients: u32,
}

/// Counters of a [`ClusterTokens`].
#[derive(Debug, Default)]
pub struct TokenStats {
    /// Calls admitted with a leased token.
    pub leased: AtomicU64,
    /// Calls refused because the cluster budget was spent.
    pub refused: AtomicU64,
    /// Calls decided by the local fallback (center unreachable or not heard yet).
    pub fallback: AtomicU64,
    /// Calls refused by the local fallback.
    pub fallback_refused: AtomicU64,
    /// Token requests that failed (center unreachable, error answers).
    pub errors: AtomicU64,
}

struct Shared {
    api: ApiClient,
    path: String,
    client: String,
    version: u64,
    /// rule index -> qps, for the cluster-wide QPS limits of the set.
    limits: HashMap<usize, f64>,
    state: Mutex<ClientState>,
    wake: tokio::sync::Notify,
    stats: Arc<TokenStats>,
}

/// The client side of cluster-wide limits for one rule set version: local pools of leased tokens kept
/// topped up by a fetcher thread (stopped when this is dropped), with a local fallback.
pub struct ClusterTokens {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClusterTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTokens")
            .field("path", &self.shared.path)
            .field("version", &self.shared.version)
            .finish()
    }
}

/// The most keys a client keeps pools for (others are decided by the fallback alone).
const MAX_POOLS: usize = 10_000;

impl ClusterTokens {
    /// The cluster tokens of `rules` (None when no rule is a cluster-wide QPS limit). `client` identifies
    /// this client to the center (e.g. the instance id, or host and pid). Service-scope budgets are
    /// leased at once, so the first calls need not fall back.
    pub fn start(
        api: ApiClient,
        rules: &RuleSet,
        client: &str,
        stats: Arc<TokenStats>,
    ) -> Option<ClusterTokens> {
        let limits: HashMap<usize, f64> = (0..rules.rules.len())
            .filter_map(|i| cluster_qps(rules, i).map(|q| (i, q)))
            .collect();
        if limits.is_empty() {
            return None;
        }
        let now = now_ms();
        let mut pools = HashMap::new();
        for (i, r) in rules.rules.iter().enumerate() {
            if let Rule::RateLimit {
                scope: LimitScope::Service,
                ..
            } = r
                && limits.contains_key(&i)
            {
                pools.insert((i, String::new()), Pool::new(now));
            }
        }
        let shared = Arc::new(Shared {
            api,
            path: format!(
                "/v1/registry/{}/services/{}/tokens",
                encode(&rules.env),
                encode(&rules.service)
            ),
            client: client.to_string(),
            version: rules.version,
            limits,
            state: Mutex::new(ClientState {
                pools,
                online: true,
                clients: 1,
            }),
            wake: tokio::sync::Notify::new(),
            stats,
        });
        let weak = Arc::downgrade(&shared);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        std::thread::Builder::new()
            .name("furrow-tokens".into())
            .spawn(move || rt.block_on(fetcher(weak)))
            .ok()?;
        Some(ClusterTokens { shared })
    }

    /// Whether rule `rule` is a cluster-wide limit of this set.
    pub fn covers(&self, rule: usize) -> bool {
        self.shared.limits.contains_key(&rule)
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<TokenStats> {
        &self.shared.stats
    }

    /// Whether the center answered the last token request.
    pub fn online(&self) -> bool {
        self.shared.state.lock().map(|s| s.online).unwrap_or(false)
    }

    /// Takes one token of rule `rule` for `key` at `now_ms`: false when the cluster budget (or, with the
    /// center unreachable, the local share) is spent. Never waits on the network.
    pub fn try_take(&self, rule: usize, key: &str, now_ms: u64) -> bool {
        let sh = &self.shared;
        let Some(&qps) = sh.limits.get(&rule) else {
            return true;
        };
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        let (online, clients) = (st.online, st.clients);
        let k = (rule, key.to_string());
        if !st.pools.contains_key(&k) && st.pools.len() >= MAX_POOLS {
            drop(st);
            sh.stats.fallback.fetch_add(1, Ordering::Relaxed);
            sh.stats.fallback_refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let pool = st.pools.entry(k).or_insert_with(|| Pool::new(now_ms));
        pool.last_use_ms = now_ms;
        if pool.expires_ms <= now_ms {
            pool.tokens = 0;
        }
        let (ok, wake, counter) = if online && pool.heard {
            if pool.tokens > 0 {
                pool.tokens -= 1;
                let low = batch(qps, clients) / 2;
                (true, pool.tokens <= low, &sh.stats.leased)
            } else {
                (false, true, &sh.stats.refused)
            }
        } else {
            let share = (qps / f64::from(clients.max(1))).max(0.001);
            let ok = pool
                .fallback
                .get_or_insert_with(|| TokenBucket::new(share, 0, now_ms))
                .try_acquire(now_ms);
            let c = if ok {
                &sh.stats.fallback
            } else {
                &sh.stats.fallback_refused
            };
            (ok, !pool.heard, c)
        };
        drop(st);
        counter.fetch_add(1, Ordering::Relaxed);
        if wake {
            sh.wake.notify_one();
        }
        ok
    }
}

/// One cluster-wide rule of a [`ClusterTokens`] as the proxies' data path sees it
/// (`router::config::ClusterBudget`).
#[derive(Debug)]
pub struct RuleBudget {
    /// The tokens of the rule set.
    pub tokens: Arc<ClusterTokens>,
    /// The rule's index.
    pub rule: usize,
}

impl router::config::ClusterBudget for RuleBudget {
    fn try_take(&self, key: &str) -> bool {
        self.tokens.try_take(self.rule, key, now_ms())
    }
}

/// Tokens leased per request: about 200 ms of the client's share, at least 1.
fn batch(qps: f64, clients: u32) -> u32 {
    ((qps / f64::from(clients.max(1))) * 0.2).ceil().max(1.0) as u32
}

impl Pool {
    fn new(now_ms: u64) -> Pool {
        Pool {
            tokens: 0,
            expires_ms: 0,
            last_use_ms: now_ms,
            heard: false,
            fallback: None,
        }
    }
}

/// The fetcher: tops up the pools in use, in one request for every key; ends when its
/// [`ClusterTokens`] is dropped.
async fn fetcher(weak: Weak<Shared>) {
    let mut pause = Duration::ZERO;
    loop {
        let notified = {
            let Some(sh) = weak.upgrade() else { return };
            let sh2 = sh.clone();
            async move {
                tokio::select! {
                    _ = sh2.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        // Wait for a wake-up or the periodic refresh (the future holds the Arc only while waiting).
        notified.await;
        let Some(sh) = weak.upgrade() else { return };
        let now = now_ms();
        let (asks, keys) = {
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            let clients = st.clients;
            st.pools
                .retain(|_, p| now.saturating_sub(p.last_use_ms) < 10_000 || !p.heard);
            let mut asks = Vec::new();
            let mut keys = Vec::new();
            for ((rule, key), p) in st.pools.iter_mut() {
                if p.expires_ms <= now {
                    p.tokens = 0;
                }
                let qps = sh.limits.get(rule).copied().unwrap_or(1.0);
                let want = batch(qps, clients);
                let recent = now.saturating_sub(p.last_use_ms) < 2_000;
                if (!p.heard || (recent && p.tokens <= want / 2)) && asks.len() < MAX_REQUESTS {
                    asks.push(TokenAsk {
                        rule: *rule,
                        key: key.clone(),
                        want: want.saturating_sub(p.tokens).max(1),
                    });
                    keys.push((*rule, key.clone()));
                }
            }
            (asks, keys)
        };
        if asks.is_empty() {
            pause = Duration::ZERO;
            continue;
        }
        let body = serde_json::json!(TokenRequest {
            client: sh.client.clone(),
            version: sh.version,
            asks: asks.clone(),
        });
        let r = sh
            .api
            .call_status("POST", &sh.path, Some(&body), Duration::from_secs(2))
            .await;
        let grant = r
            .ok()
            .and_then(|(_, j)| serde_json::from_value::<TokenGrant>(j).ok());
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        match grant {
            Some(g) if g.granted.len() == keys.len() => {
                st.online = true;
                st.clients = g.clients.max(1);
                let now = now_ms();
                let mut short = false;
                for ((k, n), ask) in keys.into_iter().zip(g.granted).zip(&asks) {
                    if let Some(p) = st.pools.get_mut(&k) {
                        if p.expires_ms <= now {
                            p.tokens = 0;
                        }
                        p.tokens += n;
                        p.expires_ms = now + LEASE_MS;
                        p.heard = true;
                        // The fallback starts afresh next time (its share may have changed).
                        p.fallback = None;
                    }
                    short |= n < ask.want;
                }
                // The budget is spent: ask again after a short pause rather than spinning.
                pause = if short {
                    Duration::from_millis(20)
                } else {
                    Duration::ZERO
                };
            }
            _ => {
                sh.stats.errors.fetch_add(1, Ordering::Relaxed);
                st.online = false;
                pause = Duration::from_millis(500);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: serde_json::Value) -> RuleSet {
        let rules: Vec<Rule> = serde_json::from_value(rules).unwrap();
        super::super::rules::validate(&rules).unwrap();
        RuleSet {
            env: "DEV".into(),
            service: "orders".into(),
            version: 3,
            rules,
            ..Default::default()
        }
    }

    fn ask(client: &str, version: u64, asks: &[(usize, &str, u32)]) -> TokenRequest {
        TokenRequest {
            client: client.into(),
            version,
            asks: asks
                .iter()
                .map(|(rule, key, want)| TokenAsk {
                    rule: *rule,
                    key: key.to_string(),
                    want: *want,
                })
                .collect(),
        }
    }

    #[test]
    fn two_clients_share_one_budget() {
        let rs = set(serde_json::json!([
            {"kind": "rate_limit", "concurrency": 3},
            {"kind": "rate_limit", "qps": 10, "cluster": true, "scope": "user"}
        ]));
        let s = TokenServer::default();
        let a = s
            .grant(&rs, &ask("a", 3, &[(1, "alice", 8)]), 1000)
            .unwrap();
        assert_eq!((a.granted.as_slice(), a.clients), (&[8][..], 1));
        let b = s
            .grant(&rs, &ask("b", 3, &[(1, "alice", 8), (1, "bob", 4)]), 1000)
            .unwrap();
        assert_eq!(
            b.granted,
            [2, 4],
            "alice's budget had 2 left; bob has his own"
        );
        assert_eq!(b.clients, 2);
        // 100 ms later: one more second's tenth of 10 qps.
        let a = s
            .grant(&rs, &ask("a", 3, &[(1, "alice", 8)]), 1100)
            .unwrap();
        assert_eq!(a.granted, [1]);
        // Never more than one second of tokens after a quiet period.
        let a = s
            .grant(&rs, &ask("a", 3, &[(1, "alice", 50)]), 60_000)
            .unwrap();
        assert_eq!(
            (a.granted.as_slice(), a.clients),
            (&[10][..], 1),
            "b went quiet"
        );
        assert_eq!(s.granted.load(Ordering::Relaxed), 8 + 6 + 1 + 10);
    }

    #[test]
    fn the_state_of_a_service_shows_each_budget_refilled_to_now() {
        let rs = set(serde_json::json!([
            {"kind": "rate_limit", "concurrency": 3},
            {"kind": "rate_limit", "qps": 10, "cluster": true, "scope": "user"}
        ]));
        let s = TokenServer::default();
        s.grant(&rs, &ask("a", 3, &[(1, "bob", 8), (1, "alice", 10)]), 1000)
            .unwrap();
        s.grant(&rs, &ask("b", 3, &[(1, "alice", 1)]), 1200)
            .unwrap();
        let v = s.state_of(&rs, 1500, 10);
        assert_eq!((v.version, v.clients, v.truncated), (3, 2, false));
        let rows: Vec<_> = v
            .budgets
            .iter()
            .map(|b| (b.rule, b.key.as_str(), b.tokens, b.last_used_ms))
            .collect();
        // alice: 0 left at 1000, +2 by 1200, -1, +3 by 1500; bob: 2 left, +5 by 1500.
        assert_eq!(rows, [(1, "alice", 4.0, 1200), (1, "bob", 7.0, 1000)]);
        assert_eq!(s.state_of(&rs, 60_000, 10).clients, 0, "both went quiet");
        assert_eq!(s.state_of(&rs, 60_000, 10).budgets[0].tokens, 10.0);
        let one = s.state_of(&rs, 1500, 1);
        assert_eq!((one.budgets.len(), one.truncated), (1, true));
        // Another service's view is empty.
        let other = RuleSet {
            service: "payments".into(),
            ..rs.clone()
        };
        assert!(s.state_of(&other, 1500, 10).budgets.is_empty());
    }

    #[test]
    fn bad_requests_are_refused_precisely() {
        let rs = set(serde_json::json!([
            {"kind": "rate_limit", "qps": 10},
            {"kind": "rate_limit", "qps": 10, "cluster": true}
        ]));
        let s = TokenServer::default();
        let e = s.grant(&rs, &ask("a", 2, &[(1, "", 1)]), 0).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("version"));
        let e = s.grant(&rs, &ask("a", 3, &[(0, "", 1)]), 0).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("asks/0/rule"), "not cluster-wide");
        let e = s.grant(&rs, &ask("a", 3, &[(7, "", 1)]), 0).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("asks/0/rule"));
        let e = s.grant(&rs, &ask("a", 3, &[(1, "", 0)]), 0).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("asks/0/want"));
        let e = s.grant(&rs, &ask("", 3, &[(1, "", 1)]), 0).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("client"));
        assert_eq!(s.buckets(), 0, "nothing was counted");
    }

    #[test]
    fn an_unreachable_center_falls_back_to_the_local_share() {
        // Port 9 on loopback: nothing listens (connection refused at once).
        let rs = set(serde_json::json!([
            {"kind": "rate_limit", "qps": 4, "cluster": true}
        ]));
        let api = ApiClient::new("http://127.0.0.1:9", None);
        let t = ClusterTokens::start(api, &rs, "c1", Arc::default()).expect("cluster rules");
        assert!(t.covers(0));
        // Not heard yet: the fallback (the whole rate: no share known) decides, 4 at once then none.
        let ok = (0..10).filter(|_| t.try_take(0, "", 5_000)).count();
        assert_eq!(ok, 4);
        assert_eq!(t.stats().fallback.load(Ordering::Relaxed), 4);
        assert_eq!(t.stats().fallback_refused.load(Ordering::Relaxed), 6);
        // A second later the fallback bucket has 4 more.
        let ok = (0..10).filter(|_| t.try_take(0, "", 6_000)).count();
        assert_eq!(ok, 4);
    }
}
