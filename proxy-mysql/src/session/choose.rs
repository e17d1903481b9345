//! Where a statement runs: the inputs of [`crate::rwsplit::choose`] gathered and its decision
//! mapped to a server, and the backend connection checked out in the session's state and given back.

use std::rc::Rc;
use std::sync::Arc;

use router::config::MysqlGroup;
use router::sql::{Classified, Hint, StmtKind};

use crate::backend::BackendConn;
use crate::error::{ProxyError, errs};
use crate::pool::{self, Target};
use crate::route::{GroupTargets, cached_targets};
use crate::rwsplit::{
    self, Decision, GroupPolicy, Refusal, SessionState, Stmt, StmtHint, UserPolicy, Which,
};

use super::{Dest, Session, random_u64};

impl Session {
    /// The group's targets: the session's own copy while the config generation holds (no map
    /// lookup per statement), else the core's ([`crate::route::cached_targets`], shared with the
    /// sharding executor).
    pub(super) fn group_targets(
        &mut self,
        snap: &Arc<runtime::Snapshot>,
    ) -> Result<Rc<GroupTargets>, ProxyError> {
        if let Some((gen_, t)) = &self.targets
            && *gen_ == snap.generation
        {
            return Ok(t.clone());
        }
        let t = cached_targets(
            &self.info.core.targets,
            snap,
            &self.info.group,
            &self.shared,
        )
        .ok_or_else(|| ProxyError::Internal(errs::no_backend(&self.info.group, "group")))?;
        self.targets = Some((snap.generation, t.clone()));
        Ok(t)
    }

    /// Picks where `c` runs: gathers the inputs of [`rwsplit::choose`] and maps its decision.
    /// `avoid` names replicas that already failed for this statement (a retried read goes
    /// elsewhere even before enough failures have ejected them).
    pub(super) fn choose(
        &mut self,
        snap: &Arc<runtime::Snapshot>,
        g: &MysqlGroup,
        c: &Classified,
        avoid: &[Rc<str>],
    ) -> Result<Dest, ProxyError> {
        // Session-only statements (replayable SET, USE) run anywhere: their effect is replayed on
        // whichever connection the session uses next.
        let session_only = is_session_only(c);
        let is_read = c.is_read()
            || (session_only
                && !matches!(
                    c.kind,
                    StmtKind::Begin | StmtKind::Commit | StmtKind::Rollback
                )
                && (c.kind != StmtKind::Set || c.is_replayable_set()));
        // A pinned session needs no server list (and no targets: those may fail to build).
        let targets = match &self.pinned {
            Some(_) => None,
            None => Some(self.group_targets(snap)?),
        };
        let hint = match (&c.hint, &targets) {
            (Some(Hint::Primary), _) => StmtHint::Primary,
            (Some(Hint::Replica), _) => StmtHint::Replica,
            (Some(Hint::Backend(name)), Some(t)) => StmtHint::Server(which_named(t, name)),
            _ => StmtHint::None,
        };
        let stmt = Stmt {
            is_read,
            session_only,
            replica_may_run: replica_may_run(c, is_read),
            pins_session: c.pins_session(),
            hint,
        };
        let user = UserPolicy {
            read_policy: self.read_policy,
            allow_hints: self.allow_hints,
        };
        let state = SessionState {
            autocommit: self.autocommit,
            pinned: self.pinned.as_ref().map(|p| *p.server == *g.primary.name),
            // No clock read: the command's start (`Session::now`) is recent enough for a window
            // of milliseconds.
            since_write: self
                .last_write
                .filter(|_| !g.read_your_writes.is_zero())
                .map(|w| self.now.saturating_duration_since(w)),
            has_write_gtid: self.last_gtid.is_some(),
        };
        let group = GroupPolicy {
            max_replica_lag: g.max_replica_lag,
            read_your_writes: g.read_your_writes,
            read_your_writes_gtid: g.read_your_writes_gtid,
        };
        // The server list reuses the session's buffer: no allocation per statement.
        let mut replicas = std::mem::take(&mut self.servers);
        replicas.clear();
        let mut primary = rwsplit::Server::default();
        if let Some(t) = &targets {
            primary.usable = t.primary.state.usable();
            replicas.extend(t.replicas.iter().map(|(x, w)| rwsplit::Server {
                usable: x.state.usable(),
                weight: *w,
                lag_ms: x.state.lag_ms.load(std::sync::atomic::Ordering::Relaxed),
                avoid: avoid.contains(&x.name),
            }));
        }
        let r = random_u64(&mut self.rng);
        let decision = rwsplit::choose(
            &stmt,
            &user,
            &state,
            &group,
            &rwsplit::Servers {
                primary,
                replicas: &replicas,
            },
            r,
            |i| match (&self.last_gtid, &targets) {
                (Some(want), Some(t)) => t.replicas.get(i).is_some_and(|(x, _)| {
                    self.info
                        .core
                        .shared
                        .gtid
                        .replica_has(&g.name, &x.name, &x.address, want)
                }),
                _ => false,
            },
        );
        self.servers = replicas;
        self.decided(decision, c, g, targets.as_deref())
    }

    /// [`rwsplit::choose`]'s decision as a destination, or the refusal's ERR.
    fn decided(
        &self,
        decision: Decision,
        c: &Classified,
        g: &MysqlGroup,
        targets: Option<&GroupTargets>,
    ) -> Result<Dest, ProxyError> {
        let target = |w: Which| -> Result<(&Target, bool), ProxyError> {
            let t = targets.ok_or_else(|| {
                ProxyError::Internal(errs::internal("no targets for a server decision"))
            })?;
            match w {
                Which::Primary => Ok((&t.primary, true)),
                Which::Replica(i) => t
                    .replicas
                    .get(i)
                    .map(|(x, _)| (x, false))
                    .ok_or_else(|| ProxyError::Internal(errs::internal("replica index"))),
            }
        };
        let named = || match &c.hint {
            Some(Hint::Backend(name)) => name.as_str(),
            _ => "",
        };
        let why = match decision {
            Decision::Pinned => return Ok(Dest::Pinned),
            Decision::Server(w) => {
                let (x, primary) = target(w)?;
                return Ok(Dest::Server(x.clone(), primary));
            }
            Decision::Refuse(why) => why,
        };
        Err(match why {
            Refusal::ReadOnlyUser => ProxyError::Refused(errs::read_only(&self.user)),
            Refusal::WriteOnPinnedReplica => {
                let server = self.pinned.as_ref().map_or("", |p| &*p.server);
                ProxyError::Refused(errs::write_on_pinned_replica(server))
            }
            Refusal::UnknownBackend => ProxyError::Refused(errs::unknown_backend(named())),
            Refusal::HintPrimaryDenied => {
                ProxyError::Refused(errs::hint_primary_denied(&self.user, named()))
            }
            Refusal::HintWriteToReplica => {
                ProxyError::Refused(errs::hint_write_to_replica(named()))
            }
            Refusal::Down(w) => {
                let (x, _) = target(w)?;
                ProxyError::Unavailable(errs::circuit_open(&x.name, &x.state))
            }
            Refusal::NoReplica => ProxyError::Unavailable(errs::no_backend(&g.name, "replica")),
        })
    }

    pub(super) async fn acquire(
        &mut self,
        dest: Dest,
        g: &MysqlGroup,
    ) -> Result<Box<BackendConn>, ProxyError> {
        let t = match dest {
            Dest::Pinned => {
                return self.pinned.take().ok_or_else(|| {
                    ProxyError::Internal(errs::internal("pinned connection missing"))
                });
            }
            Dest::Server(t, _) => t,
        };
        let mut c = pool::checkout(
            &self.info.core.pools,
            &t,
            g,
            self.vars.as_ref(),
            self.schema.as_ref(),
            self.now,
        )
        .await?;
        if let Err(e) = self.sync_conn(&mut c, g).await {
            pool::discard(c);
            return Err(e);
        }
        Ok(c)
    }

    /// Brings a pooled connection into this session's state (reset, replay, schema).
    pub(super) async fn sync_conn(
        &mut self,
        c: &mut BackendConn,
        g: &MysqlGroup,
    ) -> Result<(), ProxyError> {
        // The common case (a connection the pool picked in this session's state): nothing to
        // send, and no futures made for it.
        if let Some(s) = &self.schema
            && c.in_state(self.vars.as_ref(), s)
        {
            return Ok(());
        }
        if self.schema.is_none() && (c.schema.is_some() || c.schema_unknown) {
            // A session without a schema must not inherit one: only a fresh login unselects it.
            c.change_user(&g.user, &g.password).await?;
        }
        c.sync_vars(self.vars.as_ref()).await?;
        if let Some(s) = &self.schema {
            c.use_schema(s).await?;
        }
        Ok(())
    }

    /// Returns the connection to the pool, or keeps it pinned while the session needs it.
    pub(super) fn release(&mut self, c: Box<BackendConn>) {
        if c.broken {
            pool::discard(c);
            return;
        }
        if self.sticky || self.in_txn {
            self.pinned = Some(c);
        } else {
            pool::checkin_at(c, self.now);
        }
    }
}

/// The server of `t` called `name` (the primary first).
fn which_named(t: &GroupTargets, name: &str) -> Option<Which> {
    if *t.primary.name == *name {
        return Some(Which::Primary);
    }
    t.replicas
        .iter()
        .position(|(x, _)| *x.name == *name)
        .map(Which::Replica)
}

/// Whether a statement may be sent to the replica a `furrow:backend=NAME` hint names: reads (and
/// replayable session statements, `is_read`), a read-only transaction, and ending a transaction.
/// Anything that may write would change a replica behind replication's back (or pin the session
/// there, so that its next writes would follow).
fn replica_may_run(c: &Classified, is_read: bool) -> bool {
    is_read
        || matches!(c.kind, StmtKind::Commit | StmtKind::Rollback)
        || (c.kind == StmtKind::Begin && c.flags & router::sql::classify::flags::READ_ONLY_TXN != 0)
}

/// `SET` / `USE` and friends are allowed for replica_only users (they only touch the session).
fn is_session_only(c: &Classified) -> bool {
    is_session_kind(c.kind) && c.flags & router::sql::classify::flags::GLOBAL_SET == 0
}

/// Statements that touch only the session or bound a transaction, never data: `SET`, `USE`,
/// empty, `BEGIN`, `COMMIT`, `ROLLBACK` (a global `SET` is the caller's to tell apart).
pub(super) fn is_session_kind(kind: StmtKind) -> bool {
    matches!(
        kind,
        StmtKind::Set
            | StmtKind::Use
            | StmtKind::Empty
            | StmtKind::Begin
            | StmtKind::Commit
            | StmtKind::Rollback
    )
}
