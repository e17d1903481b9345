//! The configuration center service core: the in-memory state behind a lock, the store, push notification,
//! scheduled publishes, instance reports and counters. Thread-safe; the HTTP layer is in `api`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::auth::hash_token;
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Instance, User, now_ms};
use crate::ops::Tx;
use crate::state::{Change, State};
use crate::store::Store;

type CacheKey = (String, u64, Vec<u64>, bool);

/// What an instance reports after applying a configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The application.
    pub app: String,
    /// The environment.
    pub env: String,
    /// The cluster.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The instance.
    #[serde(flatten)]
    pub instance: Instance,
    /// The release ids applied.
    pub releases: Vec<u64>,
    /// The config version applied.
    pub version: u64,
    /// When reported (ms since the epoch; set by the service).
    #[serde(default)]
    pub at_ms: u64,
}

/// Service counters for `/metrics`.
#[derive(Default, Debug)]
pub struct Metrics {
    /// HTTP requests served.
    pub requests: AtomicU64,
    /// Config reads served.
    pub config_reads: AtomicU64,
    /// Watches currently waiting.
    pub watches_active: AtomicI64,
    /// Watches answered with a newer config.
    pub watch_changes: AtomicU64,
    /// Committed changes.
    pub commits: AtomicU64,
    /// Error responses by status class (4xx, 5xx).
    pub errors_4xx: AtomicU64,
    /// 5xx error responses.
    pub errors_5xx: AtomicU64,
}

/// The configuration center.
pub struct Center {
    state: RwLock<State>,
    store: Box<dyn Store>,
    /// Held by the one writer at a time; holds the store revision this node's state reflects.
    commit_lock: Mutex<u64>,
    pushed: tokio::sync::watch::Sender<u64>,
    reports: Mutex<HashMap<(String, String), Report>>,
    /// Serialized config responses by (namespace path, version, release ids, masked); cleared on every commit.
    cache: RwLock<HashMap<CacheKey, axum::body::Bytes>>,
    /// Counters.
    pub metrics: Metrics,
}

/// The user scheduled publishes run as.
pub fn system_user() -> User {
    User {
        name: "system".into(),
        roles: vec![],
        admin: true,
    }
}

fn poisoned<T>(_: T) -> ControlError {
    ControlError::new(ErrorCode::Internal, "state lock poisoned")
}

impl Center {
    /// Loads the state from the store and makes sure the bootstrap administrator (and its token) exist.
    pub fn open(
        store: Box<dyn Store>,
        envs: Vec<String>,
        admin: &str,
        admin_token: Option<&str>,
    ) -> Result<Arc<Center>> {
        for e in &envs {
            crate::model::check_name("env", e)?;
        }
        let mut st = State::new(envs);
        let (rev, recs) = store.load()?;
        for rec in recs {
            st.apply(Change::Put(rec));
        }
        let seq = st.seq;
        let center = Arc::new(Center {
            state: RwLock::new(st),
            store,
            commit_lock: Mutex::new(rev),
            pushed: tokio::sync::watch::Sender::new(seq),
            reports: Mutex::new(HashMap::new()),
            cache: RwLock::new(HashMap::new()),
            metrics: Metrics::default(),
        });
        let sys = system_user();
        let has_admin = center.read(|st| st.users.get(admin).is_some_and(|u| u.admin))?;
        if !has_admin {
            center.mutate(&sys, |tx| {
                tx.put_user(User {
                    name: admin.into(),
                    roles: vec![],
                    admin: true,
                })
            })?;
        }
        if let Some(tok) = admin_token {
            let known = center.read(|st| {
                st.tokens
                    .get(&hash_token(tok))
                    .is_some_and(|t| t.user == admin)
            })?;
            if !known {
                center.mutate(&sys, |tx| tx.add_token(tok, admin, "bootstrap"))?;
            }
        }
        Ok(center)
    }

    /// Runs `f` on the state under the read lock.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T> {
        let st = self.state.read().map_err(poisoned)?;
        Ok(f(&st))
    }

    /// Prepares a change as `actor`, commits it to the store, then applies it; wakes watchers when it pushes.
    /// When another node changed a shared store first, catches up and prepares the change again.
    pub fn mutate<T>(&self, actor: &User, mut f: impl FnMut(&mut Tx) -> Result<T>) -> Result<T> {
        let mut rev = self.commit_lock.lock().map_err(poisoned)?;
        let mut attempt = 0;
        loop {
            let (out, changes, push, seq) = {
                let st = self.state.read().map_err(poisoned)?;
                let mut tx = Tx::new(&st, actor);
                let out = f(&mut tx)?;
                let (changes, push, seq) = tx.finish();
                (out, changes, push, seq)
            };
            if changes.is_empty() {
                return Ok(out);
            }
            match self.store.commit(*rev, &changes) {
                Ok(new_rev) => *rev = new_rev,
                Err(e) if e.code == ErrorCode::Stale && attempt < 5 => {
                    attempt += 1;
                    self.catch_up_locked(&mut rev)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            self.apply(changes)?;
            self.metrics.commits.fetch_add(1, Ordering::Relaxed);
            if push {
                self.pushed.send_replace(seq);
            }
            return Ok(out);
        }
    }

    fn apply(&self, changes: Vec<Change>) -> Result<()> {
        let mut st = self.state.write().map_err(poisoned)?;
        for c in changes {
            st.apply(c);
        }
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
        Ok(())
    }

    /// Applies what other nodes committed to a shared store, waking watchers when publish states changed.
    pub fn catch_up(&self) -> Result<usize> {
        let mut rev = self.commit_lock.lock().map_err(poisoned)?;
        self.catch_up_locked(&mut rev)
    }

    fn catch_up_locked(&self, rev: &mut u64) -> Result<usize> {
        let (new_rev, changes) = self.store.changes_since(*rev)?;
        *rev = new_rev;
        if changes.is_empty() {
            return Ok(0);
        }
        let n = changes.len();
        let push = changes
            .iter()
            .any(|c| matches!(c, Change::Put(crate::state::Rec::NsState { .. })));
        self.apply(changes)?;
        if push {
            let seq = self.read(|st| st.seq)?;
            self.pushed.send_replace(seq);
        }
        Ok(n)
    }

    /// The cached body for a resolved config, or builds and caches it with `build`.
    pub fn cached_body(
        &self,
        key: CacheKey,
        build: impl FnOnce() -> Result<axum::body::Bytes>,
    ) -> Result<axum::body::Bytes> {
        if let Some(b) = self.cache.read().map_err(poisoned)?.get(&key) {
            return Ok(b.clone());
        }
        let body = build()?;
        let mut cache = self.cache.write().map_err(poisoned)?;
        if cache.len() >= 10_000 {
            cache.clear();
        }
        cache.insert(key, body.clone());
        Ok(body)
    }

    /// The user a bearer token authenticates.
    pub fn authenticate(&self, token: Option<&str>) -> Result<User> {
        let token = token
            .ok_or_else(|| ControlError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
        let hash = hash_token(token);
        self.read(|st| {
            st.tokens
                .get(&hash)
                .and_then(|t| st.users.get(&t.user))
                .cloned()
        })?
        .ok_or_else(|| ControlError::new(ErrorCode::Unauthorized, "unknown token"))
    }

    /// A receiver woken on every pushed change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pushed.subscribe()
    }

    /// Runs the scheduled publishes that are due; returns how many ran.
    pub fn run_due(&self) -> Result<usize> {
        let now = now_ms();
        let due: Vec<u64> = self.read(|st| {
            st.scheduled
                .values()
                .filter(|s| s.at_ms <= now)
                .map(|s| s.id)
                .collect()
        })?;
        let sys = system_user();
        for id in &due {
            self.mutate(&sys, |tx| tx.run_scheduled(*id))?;
        }
        Ok(due.len())
    }

    /// Records what an instance applied.
    pub fn report(&self, mut r: Report) -> Result<()> {
        r.at_ms = now_ms();
        let key = (
            r.instance.id.clone(),
            format!("{}/{}/{}/{}", r.app, r.env, r.cluster, r.namespace),
        );
        self.reports.lock().map_err(poisoned)?.insert(key, r);
        Ok(())
    }

    /// The reports that include a release, or all reports of a namespace instance path when `release` is None.
    pub fn instances(&self, release: Option<u64>, ns_path: Option<&str>) -> Result<Vec<Report>> {
        let reports = self.reports.lock().map_err(poisoned)?;
        let mut out: Vec<Report> = reports
            .iter()
            .filter(|((_, p), r)| {
                release.is_none_or(|id| r.releases.contains(&id)) && ns_path.is_none_or(|n| n == p)
            })
            .map(|(_, r)| r.clone())
            .collect();
        out.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
        Ok(out)
    }

    /// The number of instance reports held.
    pub fn report_count(&self) -> usize {
        self.reports.lock().map(|r| r.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Rec;
    use std::sync::atomic::AtomicBool;

    /// A store whose commits fail on demand.
    struct FlakyStore {
        fail: Arc<AtomicBool>,
    }

    impl Store for FlakyStore {
        fn load(&self) -> Result<(u64, Vec<Rec>)> {
            Ok((0, vec![]))
        }

        fn commit(&self, base: u64, _changes: &[Change]) -> Result<u64> {
            if self.fail.load(Ordering::SeqCst) {
                Err(ControlError::new(
                    ErrorCode::StoreUnavailable,
                    "disk on fire",
                ))
            } else {
                Ok(base + 1)
            }
        }
    }

    #[test]
    fn a_failed_commit_applies_nothing() {
        let fail = Arc::new(AtomicBool::new(false));
        let c = Center::open(
            Box::new(FlakyStore { fail: fail.clone() }),
            vec!["DEV".into()],
            "admin",
            Some("t"),
        )
        .unwrap();
        let admin = c.authenticate(Some("t")).unwrap();
        c.mutate(&admin, |tx| tx.create_app("a", "")).unwrap();
        let before = c
            .read(|st| (st.seq, st.audit.len(), st.apps.len()))
            .unwrap();
        fail.store(true, Ordering::SeqCst);
        let e = c.mutate(&admin, |tx| tx.create_app("b", "")).unwrap_err();
        assert_eq!(e.code, ErrorCode::StoreUnavailable);
        assert_eq!(
            c.read(|st| (st.seq, st.audit.len(), st.apps.len()))
                .unwrap(),
            before
        );
        fail.store(false, Ordering::SeqCst);
        c.mutate(&admin, |tx| tx.create_app("b", "")).unwrap();
        assert_eq!(c.read(|st| st.apps.len()).unwrap(), 2);
        assert_eq!(
            c.authenticate(Some("nope")).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            c.authenticate(None).unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }
}
