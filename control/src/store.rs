//! Persistence: a [`Store`] holds records and commits a list of changes atomically.
//!
//! The SQLite store keeps every record in one table `records(kind, key, data)`, `data` being the record as
//! JSON; a commit is one transaction, so a failed commit leaves nothing half-applied.

use std::sync::Mutex;

use rusqlite::{Connection, params};

use crate::error::{ControlError, ErrorCode, Result};
use crate::state::{Change, Rec};

/// A place records live.
///
/// A store has a revision: a store shared by several control nodes refuses a commit made on a stale view
/// (`ErrorCode::Stale`), and hands each node the changes the others committed (`changes_since`).
pub trait Store: Send + Sync {
    /// Every record, and the store revision they reflect.
    fn load(&self) -> Result<(u64, Vec<Rec>)>;
    /// Applies the changes atomically (all or nothing) if the store is still at revision `base`; returns
    /// the new revision.
    fn commit(&self, base: u64, changes: &[Change]) -> Result<u64>;
    /// The changes committed since revision `rev` and the revision they lead to (single-node stores: none).
    fn changes_since(&self, rev: u64) -> Result<(u64, Vec<Change>)> {
        Ok((rev, Vec::new()))
    }
}

/// The static kind name for a stored kind string (deletes carry `&'static str`).
pub fn static_kind(kind: &str) -> Option<&'static str> {
    const KINDS: &[&str] = &[
        "app",
        "cluster",
        "namespace",
        "item",
        "ns_state",
        "release",
        "scheduled",
        "rollout",
        "user",
        "token",
        "grant",
        "audit",
        "registry",
        "jobs",
        "seq",
    ];
    KINDS.iter().find(|k| **k == kind).copied()
}

fn store_err(e: impl std::fmt::Display) -> ControlError {
    ControlError::new(ErrorCode::StoreUnavailable, format!("store: {e}"))
}

/// The store URL with its password replaced by `******`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:******@{host}"),
        None => url.to_string(),
    }
}

/// Opens the store named by a URL: `sqlite:PATH` or `sqlite::memory:`.
pub fn open(url: &str) -> Result<Box<dyn Store>> {
    match url.strip_prefix("sqlite:") {
        Some(":memory:") => Ok(Box::new(SqliteStore::memory()?)),
        Some(path) if !path.is_empty() => Ok(Box::new(SqliteStore::open(path)?)),
        _ if url.starts_with("mysql://") => {
            Ok(Box::new(crate::mysql_store::MysqlStore::open(url)?))
        }
        _ => Err(ControlError::bad(
            "store",
            format!(
                "unsupported store URL {:?}: use sqlite:PATH, sqlite::memory: or mysql://USER:PASSWORD@HOST:PORT/DB",
                redact_url(url)
            ),
        )),
    }
}

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) a database file.
    pub fn open(path: &str) -> Result<Self> {
        let conn = Connection::open(path).map_err(store_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(store_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(store_err)?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(store_err)?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
             PRIMARY KEY (kind, key))",
        )
        .map_err(store_err)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }
}

impl Store for SqliteStore {
    fn load(&self) -> Result<(u64, Vec<Rec>)> {
        let conn = self.conn.lock().map_err(store_err)?;
        let mut stmt = conn
            .prepare("SELECT kind, key, data FROM records ORDER BY kind, key")
            .map_err(store_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(store_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, key, data) = row.map_err(store_err)?;
            let rec: Rec = serde_json::from_str(&data).map_err(|e| {
                ControlError::new(
                    ErrorCode::Internal,
                    format!("corrupt record {kind}/{key}: {e}"),
                )
            })?;
            out.push(rec);
        }
        Ok((0, out))
    }

    fn commit(&self, base: u64, changes: &[Change]) -> Result<u64> {
        let mut conn = self.conn.lock().map_err(store_err)?;
        let tx = conn.transaction().map_err(store_err)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO records (kind, key, data) VALUES (?1, ?2, ?3)",
                )
                .map_err(store_err)?;
            let mut del = tx
                .prepare_cached("DELETE FROM records WHERE kind = ?1 AND key = ?2")
                .map_err(store_err)?;
            for c in changes {
                match c {
                    Change::Put(rec) => {
                        let data = serde_json::to_string(rec).map_err(store_err)?;
                        put.execute(params![rec.kind(), rec.key(), data])
                            .map_err(store_err)?;
                    }
                    Change::Delete { kind, key } => {
                        del.execute(params![kind, key]).map_err(store_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(store_err)?;
        Ok(base + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::App;

    #[test]
    fn sqlite_file_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let url = format!("sqlite:{}", path.display());
        {
            let s = open(&url).unwrap();
            s.commit(
                0,
                &[
                    Change::Put(Rec::App(App {
                        name: "a".into(),
                        description: "x".into(),
                    })),
                    Change::Put(Rec::App(App {
                        name: "b".into(),
                        description: String::new(),
                    })),
                    Change::Put(Rec::Seq { value: 9 }),
                ],
            )
            .unwrap();
            s.commit(
                1,
                &[Change::Delete {
                    kind: "app",
                    key: "b".into(),
                }],
            )
            .unwrap();
        }
        let s = open(&url).unwrap();
        let (_, recs) = s.load().unwrap();
        assert_eq!(recs.len(), 2);
        assert!(recs.contains(&Rec::App(App {
            name: "a".into(),
            description: "x".into()
        })));
        assert!(recs.contains(&Rec::Seq { value: 9 }));
        assert!(open("mysql://x").is_err());
    }

    /// Issue 17, item 6: the password never reaches a log line.
    #[test]
    fn store_urls_are_redacted() {
        assert_eq!(
            redact_url("mysql://furrow:s3cr@t@db:3306/cfg"),
            "mysql://furrow:******@db:3306/cfg"
        );
        assert_eq!(redact_url("mysql://root@db/cfg"), "mysql://root@db/cfg");
        assert_eq!(redact_url("sqlite:/var/x.db"), "sqlite:/var/x.db");
    }
}
