//! One executor's state, passed down explicitly: the backend pools and the caches that its sessions
//! share. Per-core and single-threaded (`Rc`/`RefCell`): nothing here is locked on the request path.

use std::cell::RefCell;
use std::rc::Rc;

use router::sql::StmtCache;
use router::sql::plan::PlanCache;
use router::sql::shard::ShardingRules;

use crate::pool::ServerPool;
use crate::route::GroupTargets;

/// One executor's state, shared by the sessions of every MySQL listener on the executor.
#[derive(Default)]
pub struct CoreCtx {
    /// Backend pools by FNV-1a of `address \0 user` (entries are verified against both, so a
    /// collision only costs a second pool list scan).
    pub(crate) pools: RefCell<router::FastMap<u64, Vec<Rc<ServerPool>>>>,
    /// Classifications and digests of recent statement shapes (plain listeners).
    pub(crate) stmts: RefCell<StmtCache>,
    /// Sharding rules by listener, compiled for the config generation they were made for.
    pub(crate) shard_rules: RefCell<router::FastMap<String, (u64, Option<crate::shard::RulesFor>)>>,
    /// Plan caches, one per compiled rules (templates name physical tables). Holding the `Rc`
    /// keeps a rules value alive, so its address is never reused while it is a key.
    pub(crate) plans: RefCell<Vec<(Rc<ShardingRules>, PlanCache)>>,
    /// Targets per group for the config generation they were made for (made once, not per
    /// checkout).
    pub(crate) targets: RefCell<router::FastMap<String, (u64, Rc<GroupTargets>)>>,
    /// The shards' schema names (one allocation per name).
    pub(crate) schemas: RefCell<router::FastMap<String, Rc<str>>>,
    /// Deny/allow rules by group, compiled for the config generation they were made for.
    pub(crate) ops_rules: RefCell<router::FastMap<String, Rc<crate::ops::Rules>>>,
}

impl CoreCtx {
    /// A fresh context for one executor (create it once per executor and hand it to every MySQL
    /// listener there, see [`crate::serve_on`]).
    pub fn new() -> Rc<CoreCtx> {
        Rc::new(CoreCtx::default())
    }
}
