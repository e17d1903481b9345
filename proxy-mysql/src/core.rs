//! The state that proxy-mysql's code is handed instead of reaching for statics: [`CoreCtx`], one
//! executor's pools and caches (per core, single-threaded: `Rc`/`RefCell`, nothing locked on the
//! request path), and [`MysqlShared`], the process-wide registries that the executors share and the
//! admin port reads (kept in `runtime::Shared`'s registries).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use runtime::Shared;

use router::sql::StmtCache;
use router::sql::plan::PlanCache;
use router::sql::shard::ShardingRules;

use crate::ops::OpsCore;
use crate::pool::Pools;
use crate::route::TargetCache;
use crate::stats::Local;

/// proxy-mysql's process-wide registries, shared by every executor (see [`MysqlShared::of`]).
#[derive(Default)]
pub struct MysqlShared {
    /// Digests, slow logs and pool gauges of every core.
    pub(crate) stats: crate::stats::Registry,
    /// The budgets of the groups' `limit` rules.
    pub(crate) budgets: Arc<crate::ops::Budgets>,
    /// The audit writer and the counters of its files.
    pub(crate) audit: Arc<crate::ops::AuditLog>,
    /// Replica GTID positions (read-your-writes by GTID).
    pub(crate) gtid: crate::gtid::GtidState,
    /// The groups whose health monitor runs.
    pub(crate) monitors: Mutex<std::collections::HashSet<String>>,
    /// The global id generators of sharded listeners.
    pub(crate) ids: crate::shard::state::IdGenerators,
    /// Open clients per listener (for `max_clients`).
    pub(crate) clients: Mutex<std::collections::HashMap<String, Arc<AtomicU64>>>,
    /// The [`crate::conn::ClientBudget`] of each listener, shared by its executors (the first
    /// executor to start sets its limit).
    pub(crate) budgets_of_clients:
        Mutex<std::collections::HashMap<String, Arc<crate::conn::ClientBudget>>>,
    /// The last session id handed out.
    pub(crate) session_ids: AtomicU64,
    /// XA transaction ids of sharded listeners (`xa = true`).
    pub(crate) xa: crate::shard::xid::XaIds,
    /// The shardings whose XA recovery ran in this process.
    pub(crate) xa_recovered: Mutex<std::collections::HashSet<String>>,
    /// The write gates of tables being resharded (see [`MysqlShared::reshard_gate`]).
    pub(crate) reshard_gates: crate::shard::gate::Gates,
}

impl MysqlShared {
    /// The registries of the process that `shared` belongs to.
    pub fn of(shared: &Shared) -> Arc<MysqlShared> {
        shared.registries.get::<MysqlShared>()
    }

    /// The open-client counter of `listener` (for `max_clients`), shared by its executors.
    pub(crate) fn client_counter(&self, listener: &str) -> Arc<AtomicU64> {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(listener.to_string())
            .or_default()
            .clone()
    }

    /// The [`crate::conn::ClientBudget`] of `listener`, shared by its executors (the first
    /// executor to start sets its limit).
    pub(crate) fn client_budget(
        &self,
        listener: &str,
        limit: usize,
    ) -> Arc<crate::conn::ClientBudget> {
        self.budgets_of_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(listener.to_string())
            .or_insert_with(|| Arc::new(crate::conn::ClientBudget::new(limit)))
            .clone()
    }

    /// The write gate of `table` in sharding section `sharding` (made on first use): shared by
    /// every core's dual writes, the reshard job and the admin port's `RESHARD PEER` commands.
    pub fn reshard_gate(&self, sharding: &str, table: &str) -> Arc<crate::shard::gate::Gate> {
        self.reshard_gates.get(sharding, table)
    }

    /// A new session id (unique in the process, from 1).
    pub(crate) fn next_session_id(&self) -> u64 {
        self.session_ids.fetch_add(1, Relaxed) + 1
    }
}

/// One executor's state, shared by the sessions of every MySQL listener on the executor.
pub struct CoreCtx {
    /// The process-wide registries.
    pub(crate) shared: Arc<MysqlShared>,
    /// This core's statistics (written by this core only; the admin port locks them briefly to
    /// read).
    pub(crate) stats: Local,
    /// Backend pools by FNV-1a of `address \0 user` (entries are verified against both, so a
    /// collision only costs a second pool list scan).
    pub(crate) pools: Pools,
    /// Classifications and digests of recent statement shapes (plain listeners).
    pub(crate) stmts: RefCell<StmtCache>,
    /// Sharding rules by listener, compiled for the config generation they were made for.
    pub(crate) shard_rules:
        RefCell<router::FastMap<String, (u64, Option<crate::shard::state::RulesFor>)>>,
    /// Plan caches, one per compiled rules (templates name physical tables). Holding the `Rc`
    /// keeps a rules value alive, so its address is never reused while it is a key.
    pub(crate) plans: RefCell<Vec<(Rc<ShardingRules>, PlanCache)>>,
    /// Targets per group for the config generation they were made for (made once, not per
    /// checkout).
    pub(crate) targets: TargetCache,
    /// The shards' schema names (one allocation per name).
    pub(crate) schemas: RefCell<router::FastMap<String, Rc<str>>>,
    /// Deny/allow rules, limits and the audit log's queue.
    pub(crate) ops: OpsCore,
    /// The span exporter, when `[tracing]` is configured (see `crate::trace`).
    pub(crate) trace: Option<crate::trace::CoreTrace>,
    /// Idle logged-in primary connections for `furrow_lock` (see `crate::lock`).
    pub(crate) lock_idle: crate::lock::IdleLocks,
}

impl CoreCtx {
    /// A fresh context for one executor (create it once per executor and hand it to every MySQL
    /// listener there, see [`crate::serve_on`]).
    pub fn new(shared: &Shared) -> Rc<CoreCtx> {
        let mut c = CoreCtx::with_registry(MysqlShared::of(shared));
        c.trace = shared
            .registries
            .get::<runtime::trace::TraceHub>()
            .exporter(&shared.snapshots.current().config)
            .map(crate::trace::CoreTrace::new);
        Rc::new(c)
    }

    /// A context whose statistics are registered in `shared`.
    pub(crate) fn with_registry(shared: Arc<MysqlShared>) -> CoreCtx {
        CoreCtx {
            stats: shared.stats.add_core(),
            ops: OpsCore::new(shared.budgets.clone(), shared.audit.clone()),
            shared,
            pools: RefCell::default(),
            stmts: RefCell::new(StmtCache::new()),
            shard_rules: RefCell::default(),
            plans: RefCell::default(),
            targets: RefCell::default(),
            schemas: RefCell::default(),
            trace: None,
            lock_idle: Default::default(),
        }
    }
}
