//! Per-core backend connection pools, one per (server address, backend user): a bounded number of
//! logged-in connections, idle ones reused (preferring one already in the session's state) and
//! reaped after the idle timeout. Pools live in a thread-local map: each executor owns its own.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use router::config::MysqlGroup;
use runtime::BackendState;
use tokio::sync::Notify;

use crate::backend::{BackendConn, PoolHome};
use crate::error::{ProxyError, errs};
use crate::vars::VarState;

/// A server chosen for a statement.
#[derive(Clone)]
pub struct Target {
    /// Server name.
    pub name: Rc<str>,
    /// `host:port`.
    pub address: Rc<str>,
    /// Shared health state.
    pub state: Arc<BackendState>,
    /// This core's pool for the target, found on the first checkout (targets are per core and
    /// per config generation; clones share it).
    pub pool: Rc<std::cell::OnceCell<Rc<ServerPool>>>,
}

/// One server's pool on this core.
pub struct ServerPool {
    name: Rc<str>,
    address: Rc<str>,
    user: String,
    /// The idle connections, the open count and the waiters: what a connection returns to.
    home: Rc<PoolHome>,
    max: Cell<u32>,
    idle_timeout: Cell<Duration>,
    created: Cell<u64>,
}

/// One core's pools by FNV-1a of `address \0 user` (entries are verified against both, so a
/// collision only costs a second scan of the list); in [`crate::core::CoreCtx`].
pub type Pools = RefCell<router::FastMap<u64, Vec<Rc<ServerPool>>>>;

/// Counters of one pool on one core (for the admin port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Server name.
    pub server: String,
    /// Address.
    pub address: String,
    /// Open connections (idle + in use).
    pub open: u32,
    /// Idle connections.
    pub idle: u32,
    /// Limit.
    pub max: u32,
    /// Connections created since start.
    pub created: u64,
}

fn pool_key(address: &str, user: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in address
        .bytes()
        .chain(std::iter::once(0))
        .chain(user.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn pool_for(pools: &Pools, t: &Target, g: &MysqlGroup) -> Rc<ServerPool> {
    if let Some(p) = t.pool.get()
        && p.user == g.user
    {
        return p.clone();
    }
    let p = pool_lookup(pools, t, g);
    // A target serves one group (one user); should another user ever come, it takes the map.
    let _ = t.pool.set(p.clone());
    p
}

fn pool_lookup(pools: &Pools, t: &Target, g: &MysqlGroup) -> Rc<ServerPool> {
    let key = pool_key(&t.address, &g.user);
    {
        let mut m = pools.borrow_mut();
        let list = m.entry(key).or_default();
        if let Some(p) = list
            .iter()
            .find(|p| *p.address == *t.address && p.user == g.user)
        {
            if p.max.get() != g.pool_max {
                p.max.set(g.pool_max);
            }
            p.idle_timeout.set(g.pool_idle_timeout);
            return p.clone();
        }
        let p = Rc::new(ServerPool {
            name: t.name.clone(),
            address: t.address.clone(),
            user: g.user.clone(),
            home: Rc::new(PoolHome {
                idle: RefCell::new(Vec::new()),
                open: Cell::new(0),
                waiters: Notify::new(),
            }),
            max: Cell::new(g.pool_max),
            idle_timeout: Cell::new(g.pool_idle_timeout),
            created: Cell::new(0),
        });
        spawn_reaper(Rc::downgrade(&p));
        list.push(p.clone());
        p
    }
}

fn spawn_reaper(pool: Weak<ServerPool>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::task::spawn_local(async move {
        loop {
            let period = match pool.upgrade() {
                Some(p) => (p.idle_timeout.get() / 2).max(Duration::from_millis(500)),
                None => return,
            };
            tokio::time::sleep(period).await;
            let Some(p) = pool.upgrade() else { return };
            let timeout = p.idle_timeout.get();
            let mut idle = p.home.idle.borrow_mut();
            let before = idle.len();
            idle.retain(|c| c.last_used.elapsed() < timeout);
            let reaped = (before - idle.len()) as u32;
            p.home.open.set(p.home.open.get().saturating_sub(reaped));
        }
    });
}

/// Idle connections unused for this long are checked for a close by the server before reuse (one
/// non-blocking read; busy connections skip it).
const STALE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// Whether an idle connection is still open: nothing may be readable on it (a readable idle socket
/// means EOF, an error, or unsolicited bytes — all make it unusable).
fn is_alive(c: &mut BackendConn) -> bool {
    c.conn.stream.is_idle_alive()
}

/// An idle connection to `t` already in session state `want` with default schema `schema` and used
/// recently (no liveness check due), taken without waiting: a checkout that needs no round trip
/// and no await, the common case of a point statement on a sharded listener. `None`: nothing idle
/// is ready; take the general path, [`checkout`].
pub fn take_ready(
    pools: &Pools,
    t: &Target,
    g: &MysqlGroup,
    want: Option<&Rc<VarState>>,
    schema: &str,
    now: Instant,
) -> Option<Box<BackendConn>> {
    let pool = pool_for(pools, t, g);
    let mut idle = pool.home.idle.borrow_mut();
    let i = idle.iter().rposition(|c| c.in_state(want, schema))?;
    if now.saturating_duration_since(idle[i].last_used) >= STALE_CHECK_AFTER {
        return None;
    }
    Some(idle.swap_remove(i))
}

/// Takes a connection to `t` (reusing an idle one, preferring one in `want` state and schema), or
/// opens one if the pool has room, or waits up to the group's connect timeout for one to be returned.
/// `now` is the caller's recent clock reading (its statement's start): an idle connection unused
/// for [`STALE_CHECK_AFTER`] before it gets a liveness check. One reading serves the whole
/// statement: on a VM each costs 40-60 ns, about 1 % of a proxied point select.
pub async fn checkout(
    pools: &Pools,
    t: &Target,
    g: &MysqlGroup,
    want: Option<&Rc<VarState>>,
    schema: Option<&Rc<str>>,
    now: Instant,
) -> Result<Box<BackendConn>, ProxyError> {
    let pool = pool_for(pools, t, g);
    // Read the clock only when the pool is full and the checkout has to wait.
    let mut deadline = None;
    loop {
        {
            let mut idle = pool.home.idle.borrow_mut();
            if !idle.is_empty() {
                let same = |c: &BackendConn| {
                    c.vars_match(want) && c.schema.as_deref() == schema.map(|s| &**s)
                };
                // A connection in the wanted state, else (only when the pool is full: a new
                // connection costs one handshake, a converted one a round trip on *every* such
                // checkout while the mix of states lasts, as with shards that share a server in
                // different schemas) one without session variables, else any.
                let pick = idle.iter().rposition(|c| same(c)).or_else(|| {
                    (pool.home.open.get() >= pool.max.get()).then(|| {
                        idle.iter()
                            .rposition(|c| c.vars.is_none())
                            .unwrap_or(idle.len() - 1)
                    })
                });
                if let Some(i) = pick {
                    let mut c = idle.swap_remove(i);
                    // A connection checked in after `now` (while this checkout waited) is fresh.
                    if now.saturating_duration_since(c.last_used) < STALE_CHECK_AFTER
                        || is_alive(&mut c)
                    {
                        return Ok(c);
                    }
                    // Closed by the server while idle (restart, wait_timeout): forget it, retry.
                    pool.home.open.set(pool.home.open.get().saturating_sub(1));
                    continue;
                }
            }
        }
        if pool.home.open.get() < pool.max.get() {
            pool.home.open.set(pool.home.open.get() + 1);
            let r = BackendConn::connect(
                pool.name.clone(),
                pool.address.clone(),
                &g.user,
                &g.password,
                g.connect_timeout,
                g.tls.as_ref(),
            )
            .await;
            return match r {
                Ok(mut c) => {
                    pool.created.set(pool.created.get() + 1);
                    c.home = Rc::downgrade(&pool.home);
                    Ok(Box::new(c))
                }
                Err(e) => {
                    pool.home.open.set(pool.home.open.get().saturating_sub(1));
                    t.state.note_error(&e.reason());
                    if e.is_server_failure() {
                        t.state
                            .record_failure(g.circuit_break_after, g.circuit_open);
                    }
                    Err(e)
                }
            };
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + g.connect_timeout);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || tokio::time::timeout(left, pool.home.waiters.notified())
                .await
                .is_err()
        {
            return Err(ProxyError::Unavailable(errs::pool_exhausted(&t.name)));
        }
    }
}

/// Returns a connection to its pool (or drops it when broken).
pub fn checkin(c: Box<BackendConn>) {
    let now = if c.broken {
        c.last_used
    } else {
        Instant::now()
    };
    checkin_at(c, now);
}

/// [`checkin`] with the caller's clock reading of the moment (its statement's end).
pub fn checkin_at(mut c: Box<BackendConn>, now: Instant) {
    let Some(pool) = c.home.upgrade() else { return };
    if c.broken || !c.conn.rbuf.is_empty() {
        pool.open.set(pool.open.get().saturating_sub(1));
        pool.waiters.notify_one();
        return;
    }
    c.last_used = now;
    pool.idle.borrow_mut().push(c);
    pool.waiters.notify_one();
}

/// Forgets a connection that was dropped outside the pool (its slot becomes free).
pub fn discard(c: Box<BackendConn>) {
    let mut c = c;
    c.broken = true;
    let t = c.last_used;
    checkin_at(c, t);
}

/// This core's pools.
pub fn local_stats(pools: &Pools) -> Vec<PoolStats> {
    {
        pools
            .borrow()
            .values()
            .flatten()
            .map(|p| PoolStats {
                server: p.name.to_string(),
                address: p.address.to_string(),
                open: p.home.open.get(),
                idle: p.home.idle.borrow().len() as u32,
                max: p.max.get(),
                created: p.created.get(),
            })
            .collect()
    }
}
