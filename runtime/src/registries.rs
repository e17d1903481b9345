//! Process-wide registries of the proxies, one per type, reachable from [`crate::Shared`]: what the
//! executors of a proxy share across cores (for example proxy-mysql's statistics, audit writers and
//! health monitors) without this crate knowing their types. Looked up when an executor starts and
//! by the admin port, never on the request path.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A set of process-wide registries, at most one per type.
#[derive(Default)]
pub struct Registries {
    map: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Registries {
    /// The registry of type `T`, created (with `T::default()`) by the first call.
    pub fn get<T: Any + Default + Send + Sync>(&self) -> Arc<T> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let entry = m
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        match entry.downcast::<T>() {
            Ok(t) => t,
            // Entries are keyed by their type id, so this does not happen; replace it if it did.
            Err(_) => {
                let t = Arc::new(T::default());
                m.insert(TypeId::of::<T>(), t.clone());
                t
            }
        }
    }
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registries")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    #[derive(Default)]
    struct Counter(AtomicU64);

    #[test]
    fn one_registry_per_type() {
        let r = Registries::default();
        r.get::<Counter>().0.fetch_add(2, Relaxed);
        assert_eq!(r.get::<Counter>().0.load(Relaxed), 2);
        assert_eq!(r.get::<String>().as_str(), "");
    }
}
