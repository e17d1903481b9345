//! The jobs runtime tables: triggers, runs, items and workers, in the same database as the store but
//! outside its revisioned records.
//!
//! Why not records: a per-second cron with items on three workers makes several writes a second per job,
//! and every record commit takes the store's one revision row lock (`furrow_meta`) — exactly the single
//! database lock XXL-JOB users complain about. These tables are written with row locks only:
//!
//! - MariaDB/MySQL: each node claims due triggers and pending items with `SELECT ... FOR UPDATE SKIP
//!   LOCKED` inside short transactions (READ COMMITTED), so several nodes share the work without waiting on
//!   each other, and a row locked by one node is simply skipped by the others. A node that dies mid-claim
//!   loses its connection, MariaDB rolls the transaction back and the rows are free again at once; a node
//!   that hangs inside a transaction is cut off by `idle_transaction_timeout` (5 s).
//! - SQLite (the embedded store): one node, `BEGIN IMMEDIATE` transactions on a file of its own next to the
//!   store's (`PATH.jobs`, WAL: SQLite has one writer per file, and a configuration commit must never wait
//!   for the scheduler); `SKIP LOCKED` is left out.
//!
//! SQL is built as text with quoted literals (`Sess::lit`): the MySQL client is the store's own text-protocol
//! client, which has no prepared statements. Values are numbers we produce or strings escaped for the
//! dialect.

use std::sync::Mutex;
use std::time::Duration;

use crate::error::{ControlError, ErrorCode, Result};
use crate::mysql::{Conn, MysqlClientError, MysqlUrl};

/// One result row, every cell as text (NULL = None).
pub type Row = Vec<Option<String>>;

/// The SQL dialect of the runtime database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded store.
    Sqlite,
    /// MySQL or MariaDB.
    Mysql,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Mysql(Option<Conn>),
}

/// The runtime database: a few connections, each used by one transaction at a time.
pub struct JobDb {
    dialect: Dialect,
    url: Option<MysqlUrl>,
    conns: Vec<Mutex<Backend>>,
}

/// A failure inside a transaction: a server error (the transaction is rolled back, the connection kept) or
/// a lost connection.
#[derive(Debug)]
pub struct DbError(pub String, pub bool);

impl From<MysqlClientError> for DbError {
    fn from(e: MysqlClientError) -> Self {
        let server = matches!(e, MysqlClientError::Server { .. });
        DbError(e.to_string(), server)
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError(e.to_string(), true)
    }
}

impl From<ControlError> for DbError {
    fn from(e: ControlError) -> Self {
        DbError(e.to_string(), true)
    }
}

fn unavailable(e: impl std::fmt::Display) -> ControlError {
    ControlError::new(ErrorCode::StoreUnavailable, format!("jobs store: {e}"))
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS furrow_job_triggers (env VARCHAR(128) NOT NULL, job VARCHAR(128) NOT NULL, \
     rev BIGINT NOT NULL, next_ms BIGINT NULL, PRIMARY KEY (env, job))",
    "CREATE TABLE IF NOT EXISTS furrow_job_runs (id VARCHAR(300) NOT NULL PRIMARY KEY, env VARCHAR(128) NOT NULL, \
     job VARCHAR(128) NOT NULL, scheduled_ms BIGINT NOT NULL, fired_ms BIGINT NOT NULL, node VARCHAR(64) NOT NULL, \
     cause VARCHAR(16) NOT NULL, state VARCHAR(16) NOT NULL, ended_ms BIGINT NULL, items INT NOT NULL, \
     detail TEXT NULL)",
    "CREATE TABLE IF NOT EXISTS furrow_job_items (run VARCHAR(300) NOT NULL, idx INT NOT NULL, env VARCHAR(128) NOT NULL, \
     job VARCHAR(128) NOT NULL, params TEXT NOT NULL, state VARCHAR(16) NOT NULL, worker VARCHAR(128) NULL, \
     lease_ms BIGINT NULL, deadline_ms BIGINT NULL, not_before_ms BIGINT NOT NULL, attempts INT NOT NULL, \
     stop INT NOT NULL, started_ms BIGINT NULL, ended_ms BIGINT NULL, exit_code INT NULL, result TEXT NULL, \
     log MEDIUMTEXT NULL, PRIMARY KEY (run, idx))",
    "CREATE TABLE IF NOT EXISTS furrow_job_workers (id VARCHAR(128) NOT NULL PRIMARY KEY, cpu_milli BIGINT NOT NULL, \
     mem_mb BIGINT NOT NULL, kinds TEXT NOT NULL, labels TEXT NOT NULL, lease_ms BIGINT NOT NULL, \
     started_ms BIGINT NOT NULL, node VARCHAR(64) NOT NULL, draining INT NOT NULL)",
];

const INDEXES: &[(&str, &str, &str)] = &[
    (
        "furrow_job_runs",
        "furrow_job_runs_job",
        "env, job, scheduled_ms",
    ),
    ("furrow_job_runs", "furrow_job_runs_ended", "ended_ms"),
    (
        "furrow_job_items",
        "furrow_job_items_pending",
        "state, not_before_ms",
    ),
    (
        "furrow_job_items",
        "furrow_job_items_worker",
        "worker, state",
    ),
];

impl JobDb {
    /// Opens the runtime database next to the store named by `url` (`sqlite:PATH`, `sqlite::memory:`,
    /// `mysql://...`), creating the tables when missing.
    pub fn open(url: &str) -> Result<JobDb> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            // A file of its own (`PATH.jobs`): SQLite has one writer per file, and the scheduler's frequent
            // short transactions must never make a configuration commit wait or fail as busy.
            let conn = if path == ":memory:" {
                rusqlite::Connection::open_in_memory()
            } else {
                rusqlite::Connection::open(format!("{path}.jobs"))
            }
            .map_err(unavailable)?;
            conn.busy_timeout(Duration::from_secs(5))
                .map_err(unavailable)?;
            if path != ":memory:" {
                conn.pragma_update(None, "journal_mode", "WAL")
                    .map_err(unavailable)?;
            }
            for s in SCHEMA {
                conn.execute_batch(&s.replace("MEDIUMTEXT", "TEXT"))
                    .map_err(unavailable)?;
            }
            for (t, i, cols) in INDEXES {
                conn.execute_batch(&format!("CREATE INDEX IF NOT EXISTS {i} ON {t} ({cols})"))
                    .map_err(unavailable)?;
            }
            return Ok(JobDb {
                dialect: Dialect::Sqlite,
                url: None,
                conns: vec![Mutex::new(Backend::Sqlite(conn))],
            });
        }
        let parsed = MysqlUrl::parse(url).ok_or_else(|| {
            ControlError::bad(
                "store",
                "use sqlite:PATH or mysql://USER:PASSWORD@HOST:PORT/DB",
            )
        })?;
        let db = JobDb {
            dialect: Dialect::Mysql,
            url: Some(parsed),
            // One connection for the scheduler loop, eight for the API.
            conns: (0..9).map(|_| Mutex::new(Backend::Mysql(None))).collect(),
        };
        db.tx(|s| {
            for q in SCHEMA {
                s.q(&format!("{q} ENGINE=InnoDB"))?;
            }
            for (t, i, cols) in INDEXES {
                // MariaDB has CREATE INDEX IF NOT EXISTS.
                s.q(&format!("CREATE INDEX IF NOT EXISTS {i} ON {t} ({cols})"))?;
            }
            Ok(())
        })?;
        Ok(db)
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn connect(&self) -> std::result::Result<Conn, DbError> {
        let url = self
            .url
            .as_ref()
            .ok_or_else(|| DbError("no url".into(), false))?;
        let mut c = Conn::connect(url, Duration::from_secs(3))?;
        c.query(&format!("USE `{}`", url.database))?;
        c.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")?;
        c.query("SET SESSION innodb_lock_wait_timeout = 5")?;
        // MariaDB ≥ 10.3: a node stuck inside a transaction loses it (and its row locks) after 5 s.
        let _ = c.query("SET SESSION idle_transaction_timeout = 5");
        Ok(c)
    }

    /// Runs `f` in one transaction (committed when it returns Ok, rolled back otherwise) on one of the
    /// connections of the API (worker polls, reports, queries).
    pub fn tx<T>(
        &self,
        f: impl FnOnce(&mut Sess<'_>) -> std::result::Result<T, DbError>,
    ) -> Result<T> {
        let pool = if self.conns.len() > 1 {
            &self.conns[1..]
        } else {
            &self.conns[..]
        };
        self.run(pool, f)
    }

    /// [`JobDb::tx`] on the scheduler's own connection: firing never queues behind worker traffic.
    pub fn tx_sched<T>(
        &self,
        f: impl FnOnce(&mut Sess<'_>) -> std::result::Result<T, DbError>,
    ) -> Result<T> {
        self.run(&self.conns[..1], f)
    }

    fn run<T>(
        &self,
        pool: &[Mutex<Backend>],
        f: impl FnOnce(&mut Sess<'_>) -> std::result::Result<T, DbError>,
    ) -> Result<T> {
        // Any free connection, else wait for the first.
        let mut guard = None;
        for c in pool {
            if let Ok(g) = c.try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => self.conns[0]
                .lock()
                .map_err(|_| unavailable("lock poisoned"))?,
        };
        if let Backend::Mysql(slot) = &mut *guard
            && slot.is_none()
        {
            *slot = Some(self.connect().map_err(|e| unavailable(e.0))?);
        }
        let dialect = self.dialect;
        let backend: &mut Backend = &mut guard;
        let mut sess = Sess { backend, dialect };
        let begin = match dialect {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Mysql => "BEGIN",
        };
        let r = sess.q(begin).and_then(|_| f(&mut sess)).and_then(|v| {
            sess.q("COMMIT")?;
            Ok(v)
        });
        match r {
            Ok(v) => Ok(v),
            Err(DbError(msg, kept)) => {
                if kept {
                    let _ = sess.q("ROLLBACK");
                } else if let Backend::Mysql(slot) = &mut *guard {
                    *slot = None;
                }
                Err(unavailable(msg))
            }
        }
    }
}

/// One transaction's session.
pub struct Sess<'a> {
    backend: &'a mut Backend,
    dialect: Dialect,
}

impl Sess<'_> {
    /// Runs one statement; returns its rows.
    pub fn q(&mut self, sql: &str) -> std::result::Result<Vec<Row>, DbError> {
        match self.backend {
            Backend::Mysql(Some(c)) => {
                let rows = c.query(sql)?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        r.into_iter()
                            .map(|c| c.map(|b| String::from_utf8_lossy(&b).into_owned()))
                            .collect()
                    })
                    .collect())
            }
            Backend::Mysql(None) => Err(DbError("not connected".into(), false)),
            Backend::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let n = stmt.column_count();
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut row = Vec::with_capacity(n);
                    for i in 0..n {
                        use rusqlite::types::ValueRef;
                        row.push(match r.get_ref(i)? {
                            ValueRef::Null => None,
                            ValueRef::Integer(v) => Some(v.to_string()),
                            ValueRef::Real(v) => Some(v.to_string()),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                Some(String::from_utf8_lossy(t).into_owned())
                            }
                        });
                    }
                    out.push(row);
                }
                Ok(out)
            }
        }
    }

    /// A quoted string literal for this dialect (NUL bytes dropped).
    pub fn lit(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('\'');
        for ch in s.chars() {
            match ch {
                '\'' => out.push_str("''"),
                '\\' if self.dialect == Dialect::Mysql => out.push_str("\\\\"),
                '\0' => {}
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    /// ` FOR UPDATE SKIP LOCKED` on MySQL/MariaDB, nothing on SQLite (one node, writes serialized).
    pub fn skip_locked(&self) -> &'static str {
        match self.dialect {
            Dialect::Mysql => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        }
    }

    /// ` FOR UPDATE` on MySQL/MariaDB, nothing on SQLite.
    pub fn for_update(&self) -> &'static str {
        match self.dialect {
            Dialect::Mysql => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }
}

/// A cell as a number (0 when NULL or not a number).
pub fn num(row: &Row, i: usize) -> i64 {
    row.get(i)
        .and_then(|c| c.as_deref())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A cell as an optional number.
pub fn opt_num(row: &Row, i: usize) -> Option<i64> {
    row.get(i)
        .and_then(|c| c.as_deref())
        .and_then(|s| s.parse().ok())
}

/// A cell as text ("" when NULL).
pub fn text(row: &Row, i: usize) -> String {
    row.get(i).and_then(|c| c.clone()).unwrap_or_default()
}
