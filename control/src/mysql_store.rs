//! The MySQL/MariaDB store, shared by several stateless control nodes.
//!
//! Tables: `furrow_records(kind, k, data, rev)` (a NULL `data` is a deletion, kept so other nodes see it) and
//! `furrow_meta(id = 1, rev)`. A commit locks the meta row, checks that nobody committed since this node's
//! revision (else `Stale`: the node catches up and retries), writes its records with the new revision and
//! bumps it, in one transaction. Other nodes poll `rev` and read the records above their own.

use std::sync::Mutex;
use std::time::Duration;

use crate::error::{ControlError, ErrorCode, Result};
use crate::mysql::{Conn, MysqlClientError, MysqlUrl, Rows, hex_literal};
use crate::state::{Change, Rec};
use crate::store::{Store, static_kind};

/// A store in a MySQL/MariaDB database.
pub struct MysqlStore {
    url: MysqlUrl,
    conn: Mutex<Option<Conn>>,
}

fn unavailable(e: impl std::fmt::Display) -> ControlError {
    ControlError::new(ErrorCode::StoreUnavailable, format!("mysql store: {e}"))
}

fn cell_u64(rows: &Rows) -> Result<u64> {
    rows.first()
        .and_then(|r| r.first())
        .and_then(|c| c.as_ref())
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unavailable("furrow_meta has no revision row"))
}

impl MysqlStore {
    /// Connects to `mysql://USER:PASSWORD@HOST:PORT/DB`, creating the database and tables when missing.
    pub fn open(url: &str) -> Result<MysqlStore> {
        let parsed = MysqlUrl::parse(url).ok_or_else(|| {
            ControlError::bad("store", "use mysql://USER:PASSWORD@HOST:PORT/DATABASE")
        })?;
        let store = MysqlStore {
            url: parsed,
            conn: Mutex::new(None),
        };
        let db = store.url.database.clone();
        store.with_conn(|c| {
            c.query(&format!("CREATE DATABASE IF NOT EXISTS `{db}`"))?;
            c.query(&format!("USE `{db}`"))?;
            c.query(
                "CREATE TABLE IF NOT EXISTS furrow_records (kind VARCHAR(32) NOT NULL, k VARBINARY(700) NOT NULL, \
                 data LONGBLOB NULL, rev BIGINT UNSIGNED NOT NULL, PRIMARY KEY (kind, k), KEY (rev)) ENGINE=InnoDB",
            )?;
            c.query("CREATE TABLE IF NOT EXISTS furrow_meta (id INT PRIMARY KEY, rev BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB")?;
            c.query("INSERT IGNORE INTO furrow_meta VALUES (1, 0)")?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `f` on the connection, connecting first when needed; drops the connection after an I/O error.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> std::result::Result<T, MysqlClientError>,
    ) -> Result<T> {
        let mut guard = self.conn.lock().map_err(|_| unavailable("lock poisoned"))?;
        if guard.is_none() {
            let mut c = Conn::connect(&self.url, Duration::from_secs(3)).map_err(unavailable)?;
            let db = &self.url.database;
            // The database may not exist yet on the very first connection (open creates it).
            let _ = c.query(&format!("USE `{db}`"));
            c.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .map_err(unavailable)?;
            *guard = Some(c);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(unavailable("no connection"));
        };
        match f(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                if !matches!(e, MysqlClientError::Server { .. }) {
                    *guard = None;
                } else {
                    let _ = conn.query("ROLLBACK");
                }
                Err(unavailable(e))
            }
        }
    }
}

fn decode(
    kind: &[u8],
    key: &[u8],
    data: Option<&[u8]>,
) -> std::result::Result<Change, MysqlClientError> {
    let kind_s =
        std::str::from_utf8(kind).map_err(|e| MysqlClientError::Protocol(e.to_string()))?;
    match data {
        Some(d) => serde_json::from_slice::<Rec>(d)
            .map(Change::Put)
            .map_err(|e| MysqlClientError::Protocol(format!("corrupt record {kind_s}: {e}"))),
        None => {
            let kind = static_kind(kind_s)
                .ok_or_else(|| MysqlClientError::Protocol(format!("unknown kind {kind_s}")))?;
            Ok(Change::Delete {
                kind,
                key: String::from_utf8_lossy(key).into_owned(),
            })
        }
    }
}

impl Store for MysqlStore {
    fn load(&self) -> Result<(u64, Vec<Rec>)> {
        self.with_conn(|c| {
            c.query("START TRANSACTION WITH CONSISTENT SNAPSHOT")?;
            let rev = c.query("SELECT rev FROM furrow_meta WHERE id = 1")?;
            let rows = c.query(
                "SELECT kind, k, data FROM furrow_records WHERE data IS NOT NULL ORDER BY kind, k",
            )?;
            c.query("COMMIT")?;
            let rev = cell_u64(&rev).map_err(|e| MysqlClientError::Protocol(e.message))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                if let Change::Put(rec) = decode(
                    r[0].as_deref().unwrap_or(b""),
                    r[1].as_deref().unwrap_or(b""),
                    r[2].as_deref(),
                )? {
                    out.push(rec);
                }
            }
            Ok((rev, out))
        })
    }

    fn commit(&self, base: u64, changes: &[Change]) -> Result<u64> {
        let mut values = Vec::with_capacity(changes.len());
        let new_rev = base + 1;
        for c in changes {
            let (kind, key, data) = match c {
                Change::Put(rec) => {
                    let data = serde_json::to_vec(rec).map_err(unavailable)?;
                    (rec.kind(), rec.key(), hex_literal(&data))
                }
                Change::Delete { kind, key } => (*kind, key.clone(), "NULL".to_string()),
            };
            values.push(format!(
                "('{kind}', {}, {data}, {new_rev})",
                hex_literal(key.as_bytes())
            ));
        }
        let insert = format!(
            "INSERT INTO furrow_records (kind, k, data, rev) VALUES {} ON DUPLICATE KEY UPDATE data = VALUES(data), rev = VALUES(rev)",
            values.join(", ")
        );
        let stale = self.with_conn(|c| {
            c.query("BEGIN")?;
            let rev = c.query("SELECT rev FROM furrow_meta WHERE id = 1 FOR UPDATE")?;
            let rev = cell_u64(&rev).map_err(|e| MysqlClientError::Protocol(e.message))?;
            if rev != base {
                c.query("ROLLBACK")?;
                return Ok(true);
            }
            c.query(&insert)?;
            c.query(&format!(
                "UPDATE furrow_meta SET rev = {new_rev} WHERE id = 1"
            ))?;
            c.query("COMMIT")?;
            Ok(false)
        })?;
        if stale {
            return Err(ControlError::new(
                ErrorCode::Stale,
                "another control node changed the store; retry",
            ));
        }
        Ok(new_rev)
    }

    fn changes_since(&self, rev: u64) -> Result<(u64, Vec<Change>)> {
        self.with_conn(|c| {
            c.query("START TRANSACTION WITH CONSISTENT SNAPSHOT")?;
            let now = c.query("SELECT rev FROM furrow_meta WHERE id = 1")?;
            let now = cell_u64(&now).map_err(|e| MysqlClientError::Protocol(e.message))?;
            if now == rev {
                c.query("COMMIT")?;
                return Ok((rev, Vec::new()));
            }
            let rows = c.query(&format!(
                "SELECT kind, k, data FROM furrow_records WHERE rev > {rev} ORDER BY rev, kind, k"
            ))?;
            c.query("COMMIT")?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(decode(
                    r[0].as_deref().unwrap_or(b""),
                    r[1].as_deref().unwrap_or(b""),
                    r[2].as_deref(),
                )?);
            }
            Ok((now, out))
        })
    }
}
