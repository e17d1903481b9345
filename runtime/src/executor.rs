//! Thread-per-core executors: one OS thread per core, each a tokio `current_thread` runtime driving a
//! `LocalSet`, so tasks on a core may hold `Rc`/`RefCell` state and never migrate.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Index of an executor (0-based).
pub type CoreId = usize;

/// A running set of executors.
pub struct Executors {
    threads: Vec<JoinHandle<()>>,
}

impl Executors {
    /// Starts `count` executors. Each runs `body(core)` to completion inside its own `LocalSet`; the
    /// future may spawn further local tasks with `tokio::task::spawn_local`, and the executor ends when
    /// `body`'s future returns (local tasks still running are dropped then).
    pub fn start<F, Fut>(count: usize, name: &str, body: F) -> io::Result<Self>
    where
        F: Fn(CoreId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let body = Arc::new(body);
        let mut threads = Vec::with_capacity(count);
        for core in 0..count {
            let body = body.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{core}"))
                // SQL parsing recurses; router::sql::guard bounds statements for this much stack.
                .stack_size(router::sql::guard::MIN_STACK_BYTES)
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, body(core));
                })?;
            threads.push(handle);
        }
        Ok(Self { threads })
    }

    /// Number of executors.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Waits for every executor to end. Returns how many ended by panicking.
    pub fn join(self) -> usize {
        self.threads
            .into_iter()
            .map(|t| t.join())
            .filter(Result::is_err)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_executor_runs_local_tasks_on_its_own_thread() {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let ex = Executors::start(3, "t", move |core| {
            let s = s.clone();
            async move {
                let local = Rc::new(core);
                let l2 = local.clone();
                let t = tokio::task::spawn_local(async move { *l2 });
                let got = t.await.unwrap_or(usize::MAX);
                assert_eq!(got, *local);
                s.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("start");
        assert_eq!(ex.len(), 3);
        assert_eq!(ex.join(), 0);
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }
}
