//! One core's backend connections for one listener's Redis group, rebuilt when a new config
//! snapshot changes the group.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use router::config::{ReadFrom, RedisGroup};
use router::redis::Distribution;
use runtime::{BackendRegistry, BackendState};

use crate::backend::{BackendConn, CoreIo, Mode, ServerInfo};
use crate::cluster::ClusterState;
use crate::error::Error;
use crate::sentinel::Watch;

/// Pipelined replica connections by (server, replica, db, resp3).
type ReplicaConnMap = router::FastMap<(usize, usize, u32, bool), Vec<Rc<BackendConn>>>;

/// Pipelined connections by (server, db, resp3).
type ConnMap = router::FastMap<(usize, u32, bool), Vec<Rc<BackendConn>>>;

/// Backend connections of a group on one core.
pub struct Pool {
    /// Snapshot generation this pool was built or confirmed for.
    pub generation: std::cell::Cell<u64>,
    /// Group fingerprint (a change rebuilds the pool).
    pub fingerprint: String,
    /// Group name.
    pub group: String,
    /// Servers, in config order.
    pub servers: Vec<Rc<ServerInfo>>,
    /// Key → server index; `Err` holds why the group cannot route. A new slot table replaces it
    /// in place (see [`Pool::refresh_slots`]): the connections stay, so a key's commands stay in order.
    pub dist: RefCell<Result<Distribution, router::redis::RedisRouteError>>,
    /// Slots moving online (`migrating_to` in the slot table): the new owner of each such slot.
    migrating: RefCell<Option<crate::migrate::Moving>>,
    /// Bumped when the slot table or its migrations change (sessions then let their replies in
    /// flight land before routing anew).
    slot_epoch: std::cell::Cell<u64>,
    connections: usize,
    /// Pipelined connections by (server, db, resp3).
    conns: RefCell<ConnMap>,
    /// Connections for db 0 / RESP2 (the common case), by server then index.
    default: Vec<Vec<Rc<BackendConn>>>,
    /// The core's metrics and write coalescer, for the connections.
    io: CoreIo,
    /// Redis Cluster state (distribution = "cluster"): nodes and slots learned from the servers.
    cluster: Option<Rc<ClusterState>>,
    /// Where read-only commands go.
    read_from: ReadFrom,
    /// Replicas of each server (same index as `servers`).
    replicas: Vec<Vec<Rc<ServerInfo>>>,
    /// Pipelined replica connections, opened on first use.
    replica_conns: RefCell<ReplicaConnMap>,
    /// The Sentinel watch and its epoch when this pool took its addresses.
    sentinel: Option<(Arc<Watch>, u64)>,
}

/// What identifies a group's backend setup: a change of any of these rebuilds the connections.
pub fn fingerprint(g: &RedisGroup) -> String {
    let servers: Vec<String> = g
        .servers
        .iter()
        .map(|s| {
            format!(
                "{}={}*{}{:?}{:?}",
                s.name, s.address, s.weight, s.replicas, s.sentinel_master
            )
        })
        .collect();
    // The slot table is not part of it: a new table (a slot migration) is applied in place.
    let slots: Vec<String> = Vec::new();
    format!(
        "{}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}",
        g.name,
        g.distribution,
        g.hash,
        g.hash_tag,
        servers,
        slots,
        g.username,
        g.connections,
        g.connect_timeout,
        g.request_timeout,
        g.eject_after,
        g.retry_after,
        g.password.as_ref().map(|p| p.len()),
        g.read_from,
        g.sentinels,
    ) + g.password.as_deref().unwrap_or("")
}

impl Pool {
    /// Builds the pool of `group` (connections open lazily, on first use).
    pub fn new(
        group: &RedisGroup,
        generation: u64,
        registry: &Arc<BackendRegistry>,
        watches: &crate::sentinel::Watches,
        io: CoreIo,
    ) -> Result<Self, Error> {
        let cluster = (group.distribution == router::config::RedisDistribution::Cluster)
            .then(|| ClusterState::new(group, registry.clone(), io.clone()));
        // Servers missing from the shared registry (an embedding that did not sync it) get a
        // private state so that the pool still works.
        let own = BackendRegistry::new(&router::config::Config {
            proxy: router::config::ProxySettings::default(),
            listeners: Vec::new(),
            redis_groups: vec![group.clone()],
            mysql_groups: Vec::new(),
            users: Vec::new(),
            source: String::new(),
        });
        let sentinel = (!group.sentinels.is_empty() && cluster.is_none()).then(|| {
            let masters: Vec<String> = group
                .servers
                .iter()
                .filter_map(|s| group.sentinel_master(s).map(str::to_string))
                .collect();
            let w = watches.watch(&group.sentinels, &masters, group.tls.as_ref());
            // The epoch is read before the addresses: a change in between rebuilds the pool.
            let epoch = w.epoch();
            (w, epoch)
        });
        let state_of = |name: &str| -> Result<Arc<BackendState>, Error> {
            registry
                .get(&group.name, name)
                .or_else(|| own.get(&group.name, name))
                .ok_or_else(|| Error::NoBackendState(name.to_string()))
        };
        let info = |index: usize, name: String, address: String, state: Arc<BackendState>| {
            Rc::new(ServerInfo {
                index,
                name,
                address,
                state,
                connect_timeout: group.connect_timeout,
                request_timeout: group.request_timeout,
                eject_after: group.eject_after,
                retry_after: group.retry_after,
                username: group.username.clone(),
                password: group.password.clone(),
                tls: group.tls.clone(),
                trace_names: std::cell::OnceCell::new(),
            })
        };
        let mut servers: Vec<Rc<ServerInfo>> = Vec::with_capacity(group.servers.len());
        let mut replicas: Vec<Vec<Rc<ServerInfo>>> = Vec::with_capacity(group.servers.len());
        for (index, s) in group.servers.iter().enumerate() {
            let state = state_of(&s.name)?;
            let mut address = s.address.clone();
            if let (Some((w, _)), Some(master)) = (&sentinel, group.sentinel_master(s)) {
                w.track(master, &state);
                if let Some(a) = w.address(master) {
                    address = a;
                }
            }
            servers.push(info(index, s.name.clone(), address, state));
            let mut list = Vec::with_capacity(s.replicas.len());
            for r in &s.replicas {
                let name = s.replica_name(r);
                list.push(info(index, name.clone(), r.clone(), state_of(&name)?));
            }
            replicas.push(list);
        }
        let connections = group.connections.max(1) as usize;
        let default = servers
            .iter()
            .map(|s| {
                (0..connections)
                    .map(|_| BackendConn::new(s.clone(), 0, false, Mode::Pipeline, &io, true))
                    .collect()
            })
            .collect();
        Ok(Self {
            generation: std::cell::Cell::new(generation),
            fingerprint: fingerprint(group),
            group: group.name.clone(),
            dist: RefCell::new(router::redis::group_distribution(group)),
            migrating: RefCell::new(crate::migrate::Moving::from_group(group)),
            slot_epoch: std::cell::Cell::new(0),
            servers,
            connections,
            conns: RefCell::default(),
            default,
            io,
            cluster,
            read_from: group.read_from,
            replicas,
            replica_conns: RefCell::default(),
            sentinel,
        })
    }

    /// Whether a Sentinel reported a new primary since this pool was built (it must be rebuilt).
    #[inline]
    pub fn stale(&self) -> bool {
        self.sentinel.as_ref().is_some_and(|(w, e)| w.epoch() != *e)
    }

    /// The connection for a command to `server`: a replica's for read-only commands when the
    /// group reads from replicas and one is usable (not ejected, not offline), else the primary's.
    #[inline]
    pub fn conn_for(
        &self,
        server: usize,
        db: u32,
        resp3: bool,
        client_id: u64,
        readonly: bool,
    ) -> Option<Rc<BackendConn>> {
        if readonly && self.read_from != ReadFrom::Primary && self.cluster.is_none() {
            let list = self.replicas.get(server)?;
            let n = list.len();
            if n > 0 {
                // A client keeps to one replica while it is usable (its reads stay in order).
                let first = (client_id % n as u64) as usize;
                for k in 0..n {
                    let r = (first + k) % n;
                    if list[r].refusal().is_none() {
                        return self.replica_conn(server, r, db, resp3, client_id);
                    }
                }
            }
        }
        self.conn(server, db, resp3, client_id)
    }

    fn replica_conn(
        &self,
        server: usize,
        replica: usize,
        db: u32,
        resp3: bool,
        client_id: u64,
    ) -> Option<Rc<BackendConn>> {
        let info = self.replicas.get(server)?.get(replica)?;
        let i = (client_id % self.connections as u64) as usize;
        let mut conns = self.replica_conns.borrow_mut();
        let v = conns
            .entry((server, replica, db, resp3))
            .or_insert_with(|| {
                (0..self.connections)
                    .map(|_| {
                        BackendConn::new(info.clone(), db, resp3, Mode::Pipeline, &self.io, true)
                    })
                    .collect()
            });
        v.get(i).cloned()
    }

    /// The shared pipelined connection to `server` for a client (`client_id` picks one of the
    /// group's `connections`, so a client's commands to one server stay in order).
    #[inline]
    pub fn conn(
        &self,
        server: usize,
        db: u32,
        resp3: bool,
        client_id: u64,
    ) -> Option<Rc<BackendConn>> {
        if let Some(c) = &self.cluster {
            return c.conn(server, resp3, client_id);
        }
        let i = (client_id % self.connections as u64) as usize;
        if db == 0 && !resp3 {
            return self.default.get(server)?.get(i).cloned();
        }
        let info = self.servers.get(server)?;
        let mut conns = self.conns.borrow_mut();
        let v = conns.entry((server, db, resp3)).or_insert_with(|| {
            (0..self.connections)
                .map(|_| BackendConn::new(info.clone(), db, resp3, Mode::Pipeline, &self.io, true))
                .collect()
        });
        v.get(i).cloned()
    }

    /// A connection to `server` owned by one session (blocking commands, WATCH, pub/sub).
    pub fn dedicated(
        &self,
        server: usize,
        db: u32,
        resp3: bool,
        mode: Mode,
        timeouts: bool,
    ) -> Option<Rc<BackendConn>> {
        if let Some(c) = &self.cluster {
            return c.dedicated(server, resp3, mode, timeouts);
        }
        let info = self.servers.get(server)?;
        Some(BackendConn::new(
            info.clone(),
            db,
            resp3,
            mode,
            &self.io,
            timeouts,
        ))
    }

    /// The server index of `key`.
    #[inline]
    pub fn shard(&self, key: &[u8]) -> usize {
        if let Some(c) = &self.cluster {
            return c.shard(key);
        }
        match &*self.dist.borrow() {
            Ok(d) => d.server_for_key(key),
            Err(_) => 0,
        }
    }

    /// Applies a new slot table (and its migrations) of the same group in place.
    pub fn refresh_slots(&self, group: &RedisGroup) {
        if group.distribution != router::config::RedisDistribution::Slots {
            return;
        }
        let moving = crate::migrate::Moving::from_group(group);
        let dist = router::redis::group_distribution(group);
        let same = match (&*self.dist.borrow(), &dist) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        } && *self.migrating.borrow() == moving;
        if !same {
            *self.dist.borrow_mut() = dist;
            *self.migrating.borrow_mut() = moving;
            self.slot_epoch.set(self.slot_epoch.get() + 1);
        }
    }

    /// Changes with every new slot table or migration state (see [`Pool::refresh_slots`]).
    #[inline]
    pub fn slot_epoch(&self) -> u64 {
        self.slot_epoch.get()
    }

    /// For a key whose slot is moving: `(slot, old owner, new owner)`.
    #[inline]
    pub fn moving(&self, key: &[u8]) -> Option<(u16, usize, usize)> {
        let m = self.migrating.borrow();
        let m = m.as_ref()?;
        let slot = router::redis::key_slot(key);
        let to = m.target(slot)?;
        Some((slot, self.shard(key), to))
    }

    /// Whether any slot of the group is moving.
    #[inline]
    pub fn has_moving(&self) -> bool {
        self.migrating.borrow().is_some()
    }
}

impl Pool {
    /// The servers fan-out commands go to (every server; in cluster mode, the masters).
    pub fn targets(&self) -> Vec<usize> {
        match &self.cluster {
            Some(c) => c.masters(),
            None => (0..self.servers.len()).collect(),
        }
    }

    /// How a split multi-key command groups `key`: (group, server). Groups are servers, or slots
    /// in cluster mode (a cluster node refuses keys of several slots in one command).
    pub fn split_group(&self, key: &[u8]) -> (usize, usize) {
        match &self.cluster {
            Some(c) => (usize::from(router::redis::key_slot(key)), c.shard(key)),
            None => {
                let s = self.shard(key);
                (s, s)
            }
        }
    }

    /// Server `i`.
    pub fn server(&self, i: usize) -> Option<Rc<ServerInfo>> {
        match &self.cluster {
            Some(c) => c.node(i),
            None => self.servers.get(i).cloned(),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            c.retire();
        }
        for c in self.default.iter().flatten() {
            c.retire();
        }
        for c in self.conns.borrow().values().flatten() {
            c.retire();
        }
        for c in self.replica_conns.borrow().values().flatten() {
            c.retire();
        }
    }
}
