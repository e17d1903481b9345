//! Redis Cluster mode: the slot map is learned from the nodes (`CLUSTER SLOTS`), `MOVED` and `ASK`
//! redirections are followed by the backend connections, and the map is refreshed after a
//! `MOVED` or a node failure.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use codec::resp::{Command, Frame, FrameDecoder, Limits};
use router::config::RedisGroup;
use router::redis::{SLOT_COUNT, key_slot};
use runtime::{BackendRegistry, BackendState};

use crate::backend::{BackendConn, CoreIo, Dest, Mode, ServerInfo};
use crate::net;

/// Most redirections one command follows before its error reaches the client.
pub const MAX_REDIRECTS: u8 = 5;
const UNKNOWN: u16 = u16::MAX;

struct Node {
    info: Rc<ServerInfo>,
    conns: HashMap<bool, Vec<Rc<BackendConn>>>,
}

struct Inner {
    slots: Box<[u16]>,
    nodes: Vec<Node>,
    /// Nodes that own slots (fan-out targets), in node order.
    masters: Vec<usize>,
}

/// One core's view of a Redis Cluster.
pub struct ClusterState {
    group: RedisGroup,
    registry: Arc<BackendRegistry>,
    io: CoreIo,
    connections: usize,
    inner: RefCell<Inner>,
    refreshing: Cell<bool>,
    retired: Cell<bool>,
    me: Weak<ClusterState>,
}

impl ClusterState {
    /// Starts with the configured servers as seeds and loads the slot map in the background.
    pub fn new(group: &RedisGroup, registry: Arc<BackendRegistry>, io: CoreIo) -> Rc<Self> {
        let state = Rc::new_cyclic(|me| ClusterState {
            group: group.clone(),
            registry,
            io,
            connections: group.connections.max(1) as usize,
            inner: RefCell::new(Inner {
                slots: vec![UNKNOWN; SLOT_COUNT].into_boxed_slice(),
                nodes: Vec::new(),
                masters: Vec::new(),
            }),
            refreshing: Cell::new(false),
            retired: Cell::new(false),
            me: me.clone(),
        });
        for s in &group.servers {
            state.node_index(&s.address);
        }
        {
            let mut inner = state.inner.borrow_mut();
            inner.masters = (0..inner.nodes.len()).collect();
        }
        state.refresh();
        state
    }

    /// Index of the node at `address`, added if new.
    pub fn node_index(&self, address: &str) -> usize {
        let mut inner = self.inner.borrow_mut();
        if let Some(i) = inner.nodes.iter().position(|n| n.info.address == address) {
            return i;
        }
        let index = inner.nodes.len();
        let configured = self.group.servers.iter().find(|s| s.address == address);
        let name = configured.map_or_else(|| address.to_string(), |s| s.name.clone());
        let state = configured
            .and_then(|s| self.registry.get(&self.group.name, &s.name))
            .or_else(|| own_state(&self.group, &name, address));
        let Some(state) = state else {
            return 0;
        };
        inner.nodes.push(Node {
            info: Rc::new(ServerInfo {
                index,
                name,
                address: address.to_string(),
                state,
                connect_timeout: self.group.connect_timeout,
                request_timeout: self.group.request_timeout,
                eject_after: self.group.eject_after,
                retry_after: self.group.retry_after,
                username: self.group.username.clone(),
                password: self.group.password.clone(),
                tls: self.group.tls.clone(),
                trace_names: std::cell::OnceCell::new(),
            }),
            conns: HashMap::new(),
        });
        index
    }

    /// The node serving `key` (the first seed until the map is known).
    #[inline]
    pub fn shard(&self, key: &[u8]) -> usize {
        let slot = key_slot(key) as usize;
        match self.inner.borrow().slots.get(slot) {
            Some(&n) if n != UNKNOWN => usize::from(n),
            _ => 0,
        }
    }

    /// Nodes to send fan-out commands to.
    pub fn masters(&self) -> Vec<usize> {
        self.inner.borrow().masters.clone()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> Option<Rc<ServerInfo>> {
        self.inner.borrow().nodes.get(i).map(|n| n.info.clone())
    }

    /// The shared pipelined connection to node `i` for a client.
    pub fn conn(&self, i: usize, resp3: bool, client_id: u64) -> Option<Rc<BackendConn>> {
        let mut inner = self.inner.borrow_mut();
        let node = inner.nodes.get_mut(i)?;
        let info = node.info.clone();
        let v = node.conns.entry(resp3).or_insert_with(|| {
            (0..self.connections)
                .map(|_| {
                    BackendConn::new(info.clone(), 0, resp3, Mode::Pipeline, &self.io, true)
                        .with_cluster(self.me.clone())
                })
                .collect()
        });
        v.get((client_id % self.connections as u64) as usize)
            .cloned()
    }

    /// A connection to node `i` owned by one session.
    pub fn dedicated(
        &self,
        i: usize,
        resp3: bool,
        mode: Mode,
        timeouts: bool,
    ) -> Option<Rc<BackendConn>> {
        let info = self.node(i)?;
        Some(BackendConn::new(info, 0, resp3, mode, &self.io, timeouts))
    }

    /// Follows a `-MOVED slot host:port` or `-ASK slot host:port` reply: re-sends `raw` to the
    /// node named (over a RESP3 connection when `resp3`). Returns the destination back when the
    /// reply is not a redirection.
    #[allow(clippy::too_many_arguments)]
    pub fn redirect(
        &self,
        reply: &[u8],
        raw: Bytes,
        dest: Dest,
        start: std::time::Instant,
        cmd: &'static str,
        redirects: u8,
        resp3: bool,
    ) -> Result<(), Dest> {
        let text = String::from_utf8_lossy(reply);
        let mut parts = text.trim_end().trim_start_matches('-').split(' ');
        let (kind, slot, addr) = (parts.next(), parts.next(), parts.next());
        let (Some(kind), Some(slot), Some(addr)) = (kind, slot, addr) else {
            return Err(dest);
        };
        let Ok(slot) = slot.parse::<usize>() else {
            return Err(dest);
        };
        let node = self.node_index(addr);
        let asking = kind == "ASK";
        if !asking {
            if let Some(s) = self.inner.borrow_mut().slots.get_mut(slot) {
                *s = node as u16;
            }
            self.refresh();
        }
        let Some(conn) = self.conn(node, resp3, 0) else {
            return Err(dest);
        };
        let res = if asking {
            let mut block = BytesMut::from(&b"*1\r\n$6\r\nASKING\r\n"[..]);
            block.extend_from_slice(&raw);
            conn.send_redirected(&block.freeze(), raw, dest, true, start, cmd, redirects + 1)
        } else {
            conn.send_redirected(&raw.clone(), raw, dest, false, start, cmd, redirects + 1)
        };
        res.map_err(|(d, _)| d)
    }

    /// Reloads the slot map in the background (once at a time).
    pub fn refresh(&self) {
        if self.refreshing.replace(true) || self.retired.get() {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        tokio::task::spawn_local(async move {
            let addrs: Vec<String> = me
                .inner
                .borrow()
                .nodes
                .iter()
                .map(|n| n.info.address.clone())
                .collect();
            for addr in addrs {
                match fetch_slots(&me.group, &addr).await {
                    Ok(ranges) if !ranges.is_empty() => {
                        me.install(&ranges);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(node = %addr, "CLUSTER SLOTS failed: {e}"),
                }
            }
            me.refreshing.set(false);
        });
    }

    fn install(&self, ranges: &[(u16, u16, String)]) {
        let idx: Vec<usize> = ranges.iter().map(|r| self.node_index(&r.2)).collect();
        let mut inner = self.inner.borrow_mut();
        let mut masters: Vec<usize> = Vec::new();
        for ((start, end, _), &node) in ranges.iter().zip(&idx) {
            for slot in *start..=*end {
                if let Some(s) = inner.slots.get_mut(slot as usize) {
                    *s = node as u16;
                }
            }
            if !masters.contains(&node) {
                masters.push(node);
            }
        }
        masters.sort_unstable();
        inner.masters = masters;
    }

    /// Retires every connection (the pool was replaced).
    pub fn retire(&self) {
        self.retired.set(true);
        for n in &self.inner.borrow().nodes {
            for c in n.conns.values().flatten() {
                c.retire();
            }
        }
    }
}

/// A private backend state for a node that is not in the config.
fn own_state(group: &RedisGroup, name: &str, address: &str) -> Option<Arc<BackendState>> {
    let mut g = group.clone();
    let mut server = g.servers.first()?.clone();
    server.name = name.to_string();
    server.address = address.to_string();
    g.servers = vec![server];
    let cfg = router::config::Config {
        proxy: router::config::ProxySettings::default(),
        listeners: Vec::new(),
        redis_groups: vec![g],
        mysql_groups: Vec::new(),
        users: Vec::new(),
        source: String::new(),
    };
    BackendRegistry::new(&cfg).get(&group.name, name)
}

/// Asks `addr` for `CLUSTER SLOTS`: (first slot, last slot, master address) per range.
async fn fetch_slots(group: &RedisGroup, addr: &str) -> Result<Vec<(u16, u16, String)>, String> {
    let deadline = group.connect_timeout + group.request_timeout;
    let work = async {
        let mut stream = net::connect_backend(addr, group.connect_timeout, group.tls.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let (tcp, tls) = (&stream.tcp, &mut stream.tls);
        let mut out = BytesMut::new();
        let mut expect = 1;
        if let Some(pw) = &group.password {
            let auth = match &group.username {
                Some(u) => Command::from_args([&b"AUTH"[..], u.as_bytes(), pw.as_bytes()]),
                None => Command::from_args([&b"AUTH"[..], pw.as_bytes()]),
            };
            out.extend_from_slice(auth.raw());
            expect += 1;
        }
        out.extend_from_slice(Command::from_args([&b"CLUSTER"[..], b"SLOTS"]).raw());
        while net::write_on(tcp, tls, &mut out).map_err(|e| e.to_string())? {
            tcp.writable().await.map_err(|e| e.to_string())?;
        }
        let mut rbuf = BytesMut::new();
        let mut dec = FrameDecoder::new(Limits::default());
        let mut frames = Vec::new();
        while frames.len() < expect {
            if let Some(f) = dec.decode(&mut rbuf).map_err(|e| e.to_string())? {
                frames.push(f);
                continue;
            }
            tcp.readable().await.map_err(|e| e.to_string())?;
            let got = net::read_on(tcp, tls, &mut rbuf).map_err(|e| e.to_string())?;
            if got == net::ReadOutcome::Closed {
                return Err("connection closed".to_string());
            }
        }
        let host_of = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let mut ranges = Vec::new();
        match frames.pop() {
            Some(Frame::Array(items)) => {
                for item in items {
                    let Frame::Array(fields) = item else { continue };
                    let (
                        Some(Frame::Integer(a)),
                        Some(Frame::Integer(b)),
                        Some(Frame::Array(master)),
                    ) = (fields.first(), fields.get(1), fields.get(2))
                    else {
                        continue;
                    };
                    let host = master
                        .first()
                        .and_then(Frame::as_bytes)
                        .map(|h| String::from_utf8_lossy(h).into_owned());
                    let host = match host.as_deref() {
                        None | Some("") | Some("?") => host_of.to_string(),
                        Some(h) => h.to_string(),
                    };
                    let Some(Frame::Integer(port)) = master.get(1) else {
                        continue;
                    };
                    ranges.push((*a as u16, *b as u16, format!("{host}:{port}")));
                }
                Ok(ranges)
            }
            Some(Frame::Error(e)) => Err(String::from_utf8_lossy(&e).into_owned()),
            _ => Err("unexpected reply to CLUSTER SLOTS".to_string()),
        }
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err("timed out".to_string()),
    }
}
