//! Read/write split policy: where one statement runs, as a pure function of plain inputs (the
//! statement, the user's policy, the session's state, the group's settings and a view of its
//! servers). No I/O, no clock, no randomness of its own: the session gathers the inputs, passes a
//! random number for the weighted choice, and acts on the [`Decision`] (mapping refusals to wire
//! errors).

use std::time::Duration;

use router::config::ReadPolicy;

/// A server of the group, named by its role: the primary or the replica at an index of
/// [`Servers::replicas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The primary.
    Primary,
    /// The replica at this index.
    Replica(usize),
}

/// The hint a statement carries, with a named server already looked up in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StmtHint {
    /// No hint.
    None,
    /// `furrow:primary`: a preference for the primary.
    Primary,
    /// `furrow:replica`: a preference for a replica.
    Replica,
    /// A named server: `None` when the group has no server of that name.
    Server(Option<Which>),
}

/// What the policy needs to know of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stmt {
    /// A read, or a statement that only touches the session and may run anywhere.
    pub is_read: bool,
    /// Allowed for a replica_only user although it is not a read (`SET`, `USE`, `BEGIN`, ...).
    pub session_only: bool,
    /// May run on a replica (a read, `COMMIT`/`ROLLBACK`, `START TRANSACTION READ ONLY`).
    pub replica_may_run: bool,
    /// Pins the session to its connection (so it goes to the primary).
    pub pins_session: bool,
    /// The statement's hint.
    pub hint: StmtHint,
}

/// The user's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPolicy {
    /// Where the user's reads and writes may go.
    pub read_policy: ReadPolicy,
    /// Whether the user's hints are followed.
    pub allow_hints: bool,
}

/// The session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// Autocommit is on.
    pub autocommit: bool,
    /// The session holds a pinned connection: `Some(true)` when it is to the primary.
    pub pinned: Option<bool>,
    /// Time since the session's last write, if it wrote.
    pub since_write: Option<Duration>,
    /// The GTID of the session's last write is known.
    pub has_write_gtid: bool,
}

/// The group's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPolicy {
    /// Replicas lagging more are not read from.
    pub max_replica_lag: Duration,
    /// Reads within this window after a write go to the primary (zero: off).
    pub read_your_writes: Duration,
    /// Read-your-writes by GTID: reads go to replicas that applied the session's last write.
    pub read_your_writes_gtid: bool,
}

/// One server's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Server {
    /// Neither ejected nor offline.
    pub usable: bool,
    /// Weight for reads (replicas; 0 takes none).
    pub weight: u32,
    /// Replication lag in milliseconds (replicas).
    pub lag_ms: u64,
    /// Already failed this statement (a retried read goes elsewhere).
    pub avoid: bool,
}

/// The group's servers.
#[derive(Debug, Clone, Copy)]
pub struct Servers<'a> {
    /// The primary.
    pub primary: Server,
    /// The replicas, in config order.
    pub replicas: &'a [Server],
}

/// Why a statement is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A replica_only user's write.
    ReadOnlyUser,
    /// A write on a session pinned to a replica.
    WriteOnPinnedReplica,
    /// A hint names a server the group does not have.
    UnknownBackend,
    /// A replica_only user's hint names the primary.
    HintPrimaryDenied,
    /// A hint sends a write to a replica.
    HintWriteToReplica,
    /// The server is ejected or offline.
    Down(Which),
    /// No replica can take the read (replica_only user).
    NoReplica,
}

/// Where a statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// On the session's pinned connection.
    Pinned,
    /// On this server.
    Server(Which),
    /// Nowhere.
    Refuse(Refusal),
}

/// Picks where `s` runs. `r` is a random number (weighted choice among replicas); `applied(i)`
/// tells whether replica `i` has applied the session's last write (asked only when read-your-writes
/// by GTID decides, and only for replicas otherwise eligible: the lookup is not free).
pub fn choose(
    s: &Stmt,
    u: &UserPolicy,
    ss: &SessionState,
    g: &GroupPolicy,
    servers: &Servers<'_>,
    r: u64,
    mut applied: impl FnMut(usize) -> bool,
) -> Decision {
    // The policy comes before everything else, the pinned connection included (a replica_only
    // user's `BEGIN` pins a replica: its writes must not follow).
    if !s.is_read && u.read_policy == ReadPolicy::ReplicaOnly && !s.session_only {
        return Decision::Refuse(Refusal::ReadOnlyUser);
    }
    if let Some(on_primary) = ss.pinned {
        // Only a hint can pin a replica (a read in a transaction it opened): what may write never
        // runs there.
        if !s.replica_may_run && !on_primary {
            return Decision::Refuse(Refusal::WriteOnPinnedReplica);
        }
        return Decision::Pinned;
    }
    // Hints only narrow what the user may already do: the policy checks come first, and a hint
    // that would take a statement past them is refused (a named server) or overruled
    // (`furrow:primary` / `furrow:replica`, which are preferences).
    let hint = if u.allow_hints {
        s.hint
    } else {
        StmtHint::None
    };
    if let StmtHint::Server(named) = hint {
        let Some(w) = named else {
            return Decision::Refuse(Refusal::UnknownBackend);
        };
        let x = match w {
            Which::Primary => {
                if u.read_policy == ReadPolicy::ReplicaOnly {
                    return Decision::Refuse(Refusal::HintPrimaryDenied);
                }
                servers.primary
            }
            Which::Replica(i) => {
                if !s.replica_may_run {
                    return Decision::Refuse(Refusal::HintWriteToReplica);
                }
                match servers.replicas.get(i) {
                    Some(x) => *x,
                    None => return Decision::Refuse(Refusal::UnknownBackend),
                }
            }
        };
        // An ejected (or offline) server is not tried: a hung one would hold the client until
        // timeouts, once per retry.
        if !x.usable {
            return Decision::Refuse(Refusal::Down(w));
        }
        return Decision::Server(w);
    }
    // Read-your-writes: a known GTID of the session's last write picks the replicas that applied
    // it (below); without one (time mode, or a write whose GTID could not be read), reads within
    // the window after a write go to the primary.
    let gtid_known = g.read_your_writes_gtid && ss.has_write_gtid;
    let ryw = !g.read_your_writes.is_zero()
        && !gtid_known
        && ss.since_write.is_some_and(|d| d < g.read_your_writes);
    let hint_replica = hint == StmtHint::Replica;
    let want_primary = !s.is_read
        || s.pins_session
        || hint == StmtHint::Primary
        || (u.read_policy == ReadPolicy::Primary && !hint_replica)
        || !ss.autocommit
        || (ryw && !hint_replica);
    if !want_primary || u.read_policy == ReadPolicy::ReplicaOnly {
        let by_gtid = gtid_known && !hint_replica;
        let pick = pick_replica(servers.replicas, g.max_replica_lag, r, |i, x| {
            !x.avoid && (!by_gtid || applied(i))
        });
        if let Some(i) = pick {
            return Decision::Server(Which::Replica(i));
        }
        // When the primary is down, stale reads beat errors: any usable replica, ignoring lag.
        if !servers.primary.usable
            && let Some(i) = any_usable_replica(servers.replicas, r)
        {
            return Decision::Server(Which::Replica(i));
        }
        if u.read_policy == ReadPolicy::ReplicaOnly {
            return Decision::Refuse(Refusal::NoReplica);
        }
    }
    if !servers.primary.usable {
        return Decision::Refuse(Refusal::Down(Which::Primary));
    }
    Decision::Server(Which::Primary)
}

/// Whether replica `x` may take reads now: usable and within `max_lag`.
fn readable(x: &Server, max_lag: Duration) -> bool {
    x.usable && x.lag_ms <= max_lag.as_millis() as u64
}

/// A readable replica with a weight for which `ok` holds, chosen by weight with `r`.
fn pick_replica(
    replicas: &[Server],
    max_lag: Duration,
    r: u64,
    mut ok: impl FnMut(usize, &Server) -> bool,
) -> Option<usize> {
    // One pass collects the total; eligibility is remembered in a bit set so that `ok` (which may
    // take a lock) runs once per replica. Groups beyond 64 replicas re-ask for the rest.
    let mut total = 0u64;
    let mut seen = 0u64;
    for (i, x) in replicas.iter().enumerate() {
        if x.weight > 0 && readable(x, max_lag) && ok(i, x) {
            total += u64::from(x.weight);
            if i < 64 {
                seen |= 1 << i;
            }
        }
    }
    if total == 0 {
        return None;
    }
    let mut left = r % total;
    for (i, x) in replicas.iter().enumerate() {
        let eligible = if i < 64 {
            seen & (1 << i) != 0
        } else {
            x.weight > 0 && readable(x, max_lag) && ok(i, x)
        };
        if eligible {
            let w = u64::from(x.weight);
            if left < w {
                return Some(i);
            }
            left -= w;
        }
    }
    None
}

/// Any usable replica with a weight that has not failed this statement, ignoring lag.
fn any_usable_replica(replicas: &[Server], r: u64) -> Option<usize> {
    let up = |x: &Server| x.weight > 0 && x.usable && !x.avoid;
    let n = replicas.iter().filter(|x| up(x)).count();
    if n == 0 {
        return None;
    }
    let k = (r % n as u64) as usize;
    replicas
        .iter()
        .enumerate()
        .filter(|(_, x)| up(x))
        .nth(k)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Pinned, Refuse, Server as To};
    use ReadPolicy::{Primary as PolPrimary, ReplicaOnly, Split};
    use Which::{Primary as P, Replica as R};

    const READ: Stmt = Stmt {
        is_read: true,
        session_only: false,
        replica_may_run: true,
        pins_session: false,
        hint: StmtHint::None,
    };
    const WRITE: Stmt = Stmt {
        is_read: false,
        session_only: false,
        replica_may_run: false,
        pins_session: false,
        hint: StmtHint::None,
    };
    const SET: Stmt = Stmt {
        is_read: true,
        session_only: true,
        replica_may_run: true,
        pins_session: false,
        hint: StmtHint::None,
    };
    const SESSION: SessionState = SessionState {
        autocommit: true,
        pinned: None,
        since_write: None,
        has_write_gtid: false,
    };
    const GROUP: GroupPolicy = GroupPolicy {
        max_replica_lag: Duration::from_secs(1),
        read_your_writes: Duration::ZERO,
        read_your_writes_gtid: false,
    };

    fn up(weight: u32) -> Server {
        Server {
            usable: true,
            weight,
            lag_ms: 0,
            avoid: false,
        }
    }
    fn down() -> Server {
        Server {
            usable: false,
            ..up(1)
        }
    }
    fn lagging(ms: u64) -> Server {
        Server {
            lag_ms: ms,
            ..up(1)
        }
    }
    fn avoided() -> Server {
        Server {
            avoid: true,
            ..up(1)
        }
    }
    fn hinted(s: Stmt, h: StmtHint) -> Stmt {
        Stmt { hint: h, ..s }
    }
    fn user(p: ReadPolicy) -> UserPolicy {
        UserPolicy {
            read_policy: p,
            allow_hints: true,
        }
    }

    struct Row {
        name: &'static str,
        stmt: Stmt,
        user: UserPolicy,
        session: SessionState,
        group: GroupPolicy,
        primary: Server,
        replicas: Vec<Server>,
        r: u64,
        /// Replicas that applied the session's last write.
        applied: &'static [usize],
        want: Decision,
    }

    fn row(name: &'static str, stmt: Stmt, replicas: Vec<Server>, want: Decision) -> Row {
        Row {
            name,
            stmt,
            user: user(Split),
            session: SESSION,
            group: GROUP,
            primary: up(1),
            replicas,
            r: 0,
            applied: &[],
            want,
        }
    }

    #[test]
    fn table() {
        let gtid_session = SessionState {
            since_write: Some(Duration::from_millis(10)),
            has_write_gtid: true,
            ..SESSION
        };
        let gtid_group = GroupPolicy {
            read_your_writes: Duration::from_secs(1),
            read_your_writes_gtid: true,
            ..GROUP
        };
        let window_group = GroupPolicy {
            read_your_writes: Duration::from_secs(1),
            ..GROUP
        };
        let rows = vec![
            row("write to primary", WRITE, vec![up(1)], To(P)),
            row("read to replica", READ, vec![up(1)], To(R(0))),
            row("read, no replicas: primary", READ, vec![], To(P)),
            row("read within lag", READ, vec![lagging(1000)], To(R(0))),
            row(
                "lagging replica skipped",
                READ,
                vec![lagging(1001), up(1)],
                To(R(1)),
            ),
            row("all lagging: primary", READ, vec![lagging(5000)], To(P)),
            row(
                "ejected/offline replica skipped",
                READ,
                vec![down(), up(1)],
                To(R(1)),
            ),
            row(
                "weight 0 takes no reads",
                READ,
                vec![up(0), up(1)],
                To(R(1)),
            ),
            Row {
                r: 0,
                ..row("weights: r=0", READ, vec![up(1), up(3)], To(R(0)))
            },
            Row {
                r: 1,
                ..row("weights: r=1", READ, vec![up(1), up(3)], To(R(1)))
            },
            Row {
                r: 3,
                ..row("weights: r=3", READ, vec![up(1), up(3)], To(R(1)))
            },
            Row {
                r: 4,
                ..row("weights: r wraps", READ, vec![up(1), up(3)], To(R(0)))
            },
            row("retry avoid list", READ, vec![avoided(), up(1)], To(R(1))),
            row("retry: all avoided, primary", READ, vec![avoided()], To(P)),
            Row {
                session: gtid_session,
                group: gtid_group,
                applied: &[1],
                ..row(
                    "GTID not yet applied: other replica",
                    READ,
                    vec![up(1), up(1)],
                    To(R(1)),
                )
            },
            Row {
                session: gtid_session,
                group: gtid_group,
                applied: &[],
                ..row("GTID applied nowhere: primary", READ, vec![up(1)], To(P))
            },
            Row {
                session: gtid_session,
                group: gtid_group,
                applied: &[],
                ..row(
                    "GTID: furrow:replica ignores it",
                    hinted(READ, StmtHint::Replica),
                    vec![up(1)],
                    To(R(0)),
                )
            },
            Row {
                session: SessionState {
                    has_write_gtid: false,
                    ..gtid_session
                },
                group: gtid_group,
                ..row(
                    "GTID unknown: time window, primary",
                    READ,
                    vec![up(1)],
                    To(P),
                )
            },
            Row {
                session: SessionState {
                    since_write: Some(Duration::from_millis(999)),
                    ..SESSION
                },
                group: window_group,
                ..row("time window after a write", READ, vec![up(1)], To(P))
            },
            Row {
                session: SessionState {
                    since_write: Some(Duration::from_secs(1)),
                    ..SESSION
                },
                group: window_group,
                ..row("time window over", READ, vec![up(1)], To(R(0)))
            },
            Row {
                session: SessionState {
                    since_write: Some(Duration::ZERO),
                    ..SESSION
                },
                group: window_group,
                ..row(
                    "time window: furrow:replica",
                    hinted(READ, StmtHint::Replica),
                    vec![up(1)],
                    To(R(0)),
                )
            },
            Row {
                session: SessionState {
                    autocommit: false,
                    ..SESSION
                },
                ..row("autocommit off: primary", READ, vec![up(1)], To(P))
            },
            row(
                "pins the session: primary",
                Stmt {
                    pins_session: true,
                    ..READ
                },
                vec![up(1)],
                To(P),
            ),
            Row {
                user: user(PolPrimary),
                ..row("primary policy: read to primary", READ, vec![up(1)], To(P))
            },
            Row {
                user: user(PolPrimary),
                ..row(
                    "primary policy: furrow:replica",
                    hinted(READ, StmtHint::Replica),
                    vec![up(1)],
                    To(R(0)),
                )
            },
            row(
                "furrow:primary",
                hinted(READ, StmtHint::Primary),
                vec![up(1)],
                To(P),
            ),
            Row {
                user: UserPolicy {
                    read_policy: Split,
                    allow_hints: false,
                },
                ..row(
                    "hints not allowed: ignored",
                    hinted(READ, StmtHint::Primary),
                    vec![up(1)],
                    To(R(0)),
                )
            },
            Row {
                user: user(ReplicaOnly),
                ..row(
                    "replica_only: write refused",
                    WRITE,
                    vec![up(1)],
                    Refuse(Refusal::ReadOnlyUser),
                )
            },
            Row {
                user: user(ReplicaOnly),
                ..row("replica_only: SET runs", SET, vec![up(1)], To(R(0)))
            },
            Row {
                user: user(ReplicaOnly),
                ..row(
                    "replica_only: furrow:primary ignored",
                    hinted(READ, StmtHint::Primary),
                    vec![up(1)],
                    To(R(0)),
                )
            },
            Row {
                user: user(ReplicaOnly),
                ..row(
                    "replica_only: primary named refused",
                    hinted(READ, StmtHint::Server(Some(P))),
                    vec![up(1)],
                    Refuse(Refusal::HintPrimaryDenied),
                )
            },
            Row {
                user: user(ReplicaOnly),
                ..row(
                    "replica_only: no replica refused",
                    READ,
                    vec![down()],
                    Refuse(Refusal::NoReplica),
                )
            },
            row(
                "write hinted to a replica refused",
                hinted(WRITE, StmtHint::Server(Some(R(0)))),
                vec![up(1)],
                Refuse(Refusal::HintWriteToReplica),
            ),
            row(
                "read hinted to a replica",
                hinted(READ, StmtHint::Server(Some(R(1)))),
                vec![up(1), lagging(9999)],
                To(R(1)),
            ),
            row(
                "hint to an unknown server",
                hinted(READ, StmtHint::Server(None)),
                vec![up(1)],
                Refuse(Refusal::UnknownBackend),
            ),
            row(
                "hint to a down server",
                hinted(READ, StmtHint::Server(Some(R(0)))),
                vec![down()],
                Refuse(Refusal::Down(R(0))),
            ),
            Row {
                primary: down(),
                ..row(
                    "primary down: write refused",
                    WRITE,
                    vec![up(1)],
                    Refuse(Refusal::Down(P)),
                )
            },
            Row {
                primary: down(),
                ..row(
                    "primary down: lagging replica reads",
                    READ,
                    vec![lagging(5000)],
                    To(R(0)),
                )
            },
            Row {
                primary: down(),
                ..row(
                    "primary down, replicas down: refused",
                    READ,
                    vec![down(), avoided()],
                    Refuse(Refusal::Down(P)),
                )
            },
            row(
                "all replicas down: primary",
                READ,
                vec![down(), down()],
                To(P),
            ),
            Row {
                session: SessionState {
                    pinned: Some(false),
                    ..SESSION
                },
                ..row(
                    "pinned replica: write refused",
                    WRITE,
                    vec![up(1)],
                    Refuse(Refusal::WriteOnPinnedReplica),
                )
            },
            Row {
                session: SessionState {
                    pinned: Some(false),
                    ..SESSION
                },
                ..row("pinned replica: read", READ, vec![up(1)], Pinned)
            },
            Row {
                session: SessionState {
                    pinned: Some(true),
                    ..SESSION
                },
                ..row("pinned primary: write", WRITE, vec![up(1)], Pinned)
            },
            Row {
                user: user(ReplicaOnly),
                session: SessionState {
                    pinned: Some(false),
                    ..SESSION
                },
                ..row(
                    "pinned: replica_only write still refused",
                    WRITE,
                    vec![up(1)],
                    Refuse(Refusal::ReadOnlyUser),
                )
            },
        ];
        let mut failed = Vec::new();
        for t in &rows {
            let servers = Servers {
                primary: t.primary,
                replicas: &t.replicas,
            };
            let got = choose(&t.stmt, &t.user, &t.session, &t.group, &servers, t.r, |i| {
                t.applied.contains(&i)
            });
            if got != t.want {
                failed.push(format!("{}: got {got:?}, want {:?}", t.name, t.want));
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }

    #[test]
    fn gtid_lookup_only_for_eligible_replicas_once() {
        let replicas = [down(), up(1), avoided(), up(0), up(2)];
        let mut asked = Vec::new();
        let d = choose(
            &READ,
            &user(Split),
            &SessionState {
                has_write_gtid: true,
                ..SESSION
            },
            &GroupPolicy {
                read_your_writes_gtid: true,
                ..GROUP
            },
            &Servers {
                primary: up(1),
                replicas: &replicas,
            },
            2,
            |i| {
                asked.push(i);
                true
            },
        );
        assert_eq!(d, To(R(4)));
        assert_eq!(asked, [1, 4]);
    }

    #[test]
    fn weights_spread_over_many_replicas() {
        let replicas: Vec<Server> = (0..70).map(|_| up(1)).collect();
        for r in [0u64, 63, 64, 69, 70] {
            let d = choose(
                &READ,
                &user(Split),
                &SESSION,
                &GROUP,
                &Servers {
                    primary: up(1),
                    replicas: &replicas,
                },
                r,
                |_| true,
            );
            assert_eq!(d, To(R((r % 70) as usize)));
        }
    }
}
