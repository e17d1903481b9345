//! Blocking commands (BLPOP, BRPOPLPUSH, BLMOVE, BZPOPMIN, ...): arrival order and CLIENT UNBLOCK.
//!
//! Each blocked client has its own backend connection, so two clients that block on one key reach
//! the server on two sockets (from any core), and the server may read the later one first. A
//! process-wide [`Gate`] per server keeps the order: the next blocking command to that server leaves only once the server
//! shows the previous one blocked (`CLIENT LIST ID <id>` has flag `b`) or answered it.
//!
//! The server-side client id of every blocking connection is registered process-wide under the
//! proxy's client id, so that CLIENT UNBLOCK from any core reaches the right connection.
//!
//! Both registries are a [`Blocking`], kept in [`crate::RedisShared`].

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codec::resp::{Command, RespVersion};
use tokio::sync::Notify;

use crate::backend::{BackendConn, Dest};
use crate::reply::Client;

/// Longest wait for the server to show a blocking command blocked before the next may go.
const CONFIRM_WITHIN: Duration = Duration::from_secs(1);

/// A session, process-wide: (listener owner, client id).
pub type SessionKey = (usize, u64);

/// Serializes the blocking commands of the whole process to one server (see the module doc): the
/// clients of one key may be served by different cores.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    holder: Option<SessionKey>,
    waiters: VecDeque<(SessionKey, Arc<Notify>)>,
}

/// The process-wide registries of blocking commands: the [`Gate`] of each server and the blocking
/// connections of each client (kept in [`crate::RedisShared`]).
#[derive(Default)]
pub struct Blocking {
    /// The gate of each server, by address.
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    /// The blocking connections of each client, by session.
    blockers: Mutex<Registry>,
}

impl Blocking {
    /// The gate of the server at `address`.
    pub fn gate(&self, address: &str) -> Arc<Gate> {
        let mut m = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = m.get(address) {
            return g.clone();
        }
        let g = Arc::new(Gate::default());
        m.insert(address.to_string(), g.clone());
        g
    }

    fn blockers(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.blockers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a blocking connection of client `id` of listener `owner` (an address unique to
    /// the listener of one proxy instance).
    pub fn register(&self, owner: usize, id: u64, b: Blocker) {
        let mut r = self.blockers();
        let v = r.entry((owner, id)).or_default();
        v.retain(|x| x.shard != b.shard);
        v.push(b);
    }

    /// The blocking connections of client `id`.
    pub fn lookup(&self, owner: usize, id: u64) -> Vec<Blocker> {
        self.blockers()
            .get(&(owner, id))
            .cloned()
            .unwrap_or_default()
    }

    /// Client `id` is gone.
    pub fn unregister(&self, owner: usize, id: u64) {
        self.blockers().remove(&(owner, id));
    }
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the gate for session `id`, or queues it (woken through `wake` when its turn comes).
    pub fn try_acquire(&self, id: SessionKey, wake: &Arc<Notify>) -> bool {
        let mut st = self.state();
        if st.holder.is_none() && st.waiters.front().is_none_or(|(f, _)| *f == id) {
            if st.waiters.front().is_some_and(|(f, _)| *f == id) {
                st.waiters.pop_front();
            }
            st.holder = Some(id);
            return true;
        }
        if !st.waiters.iter().any(|(x, _)| *x == id) {
            st.waiters.push_back((id, wake.clone()));
        }
        false
    }

    /// Whether session `id` would get the gate now.
    pub fn is_free_for(&self, id: SessionKey) -> bool {
        let st = self.state();
        st.holder.is_none() && st.waiters.front().is_none_or(|(f, _)| *f == id)
    }

    /// Gives the gate back (if `id` holds it) and wakes the next session in line.
    pub fn release(&self, id: SessionKey) {
        let mut st = self.state();
        if st.holder == Some(id) {
            st.holder = None;
        }
        if st.holder.is_none()
            && let Some((_, w)) = st.waiters.front()
        {
            w.notify_one();
        }
    }

    /// Session `id` is gone: out of the line (and the gate, if it held it).
    pub fn leave(&self, id: SessionKey) {
        self.state().waiters.retain(|(x, _)| *x != id);
        self.release(id);
    }
}

/// Releases `gate` for `holder` once `conn`'s blocking command is blocked on the server or
/// answered, asking the server through `probe` (a shared connection to the same server).
pub async fn confirm_blocked(
    gate: Arc<Gate>,
    holder: SessionKey,
    conn: Rc<BackendConn>,
    probe: Option<Rc<BackendConn>>,
    server_id: Arc<AtomicI64>,
) {
    let deadline = Instant::now() + CONFIRM_WITHIN;
    loop {
        if conn.inflight() == 0 || conn.is_broken() || Instant::now() >= deadline {
            break;
        }
        let id = server_id.load(Relaxed);
        if id >= 0
            && let Some(probe) = &probe
        {
            let c = Rc::new(Client::new(RespVersion::Resp2));
            let seq = c.q.borrow_mut().push_pending();
            let cmd = Command::from_args([
                b"CLIENT".to_vec(),
                b"LIST".to_vec(),
                b"ID".to_vec(),
                id.to_string().into_bytes(),
            ]);
            if probe
                .send(
                    cmd.raw(),
                    [Dest::Whole(c.clone(), seq)],
                    Instant::now(),
                    "client|list",
                )
                .is_err()
            {
                break;
            }
            while c.q.borrow().pending() > 0 && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(left, c.wake.notified()).await;
            }
            let out = c.q.borrow().out.to_vec();
            if out.first() != Some(&b'$') {
                break;
            }
            let blocked = out
                .split(|&b| b == b' ')
                .any(|f| f.starts_with(b"flags=") && f.contains(&b'b'));
            if blocked {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gate.release(holder);
}

/// A blocking connection of a client, as CLIENT UNBLOCK finds it.
#[derive(Clone)]
pub struct Blocker {
    /// Server index in the group.
    pub shard: usize,
    /// The server's address (a changed group does not send the unblock elsewhere).
    pub address: String,
    /// The connection's client id on the server (-1 until known).
    pub server_id: Arc<AtomicI64>,
}

type Registry = HashMap<(usize, u64), Vec<Blocker>>;
