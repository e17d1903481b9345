//! One executor's state, passed down explicitly: the backend pools and the caches that its sessions
//! share. Per-core and single-threaded (`Rc`/`RefCell`): nothing here is locked on the request path.

use std::cell::RefCell;
use std::rc::Rc;

use crate::pool::ServerPool;

/// One executor's state, shared by the sessions of every MySQL listener on the executor.
#[derive(Default)]
pub struct CoreCtx {
    /// Backend pools by FNV-1a of `address \0 user` (entries are verified against both, so a
    /// collision only costs a second pool list scan).
    pub(crate) pools: RefCell<router::FastMap<u64, Vec<Rc<ServerPool>>>>,
}

impl CoreCtx {
    /// A fresh context for one executor (create it once per executor and hand it to every MySQL
    /// listener there, see [`crate::serve_on`]).
    pub fn new() -> Rc<CoreCtx> {
        Rc::new(CoreCtx::default())
    }
}
