//! The sharding state that lives beyond one statement, in [`crate::core`]'s per-core and
//! process-wide contexts: a listener's compiled rules and the global id generators. A leaf: the
//! contexts hold these types, and the sharding executor (which reads the contexts) is above them.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;

use codec::mysql::ErrPacket;
use router::sql::shard::{IdGenerator, ShardingRules};

/// The compiled rules of a listener for one config generation (`Err`: the rules do not compile;
/// the ERR every statement of the listener gets, made once by `errs::rules_broken`).
pub type RulesFor = Result<Rc<ShardingRules>, ErrPacket>;

/// The global id generators of the process: one per worker id, shared by all cores (in
/// [`crate::MysqlShared`]), so ids stay unique and increasing across cores.
#[derive(Default)]
pub struct IdGenerators(Mutex<HashMap<u16, IdGenerator>>);

impl IdGenerators {
    /// A new global id for `worker`.
    pub fn next(&self, worker: u16) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(worker)
            .or_insert_with(|| IdGenerator::new(worker))
            .next(now)
    }
}
