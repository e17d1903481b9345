//! Proxy-level distributed pessimistic locks on the read/write-split listener:
//! `SELECT furrow_lock('name', timeout_s)` and `SELECT furrow_unlock('name')`.
//!
//! Backend: the listener group's **primary**, which every proxy of a fleet in front of that group
//! already reaches. Each held lock is one dedicated backend connection of the session holding
//! `GET_LOCK('furrow:name')` on the primary: MariaDB releases it when that connection closes, so a
//! lock's lease ends when its holder's client connection ends (the session drops the connection),
//! when the proxy dies (kill -9 closes its sockets), or when the primary restarts. Waiters queue
//! in the server's metadata-lock wait queue, granted in arrival order (FIFO). The **fencing
//! token** is a per-name counter in `furrow.lock_tokens`, incremented under the lock in the
//! same autocommit statement that reads it (`LAST_INSERT_ID(token + 1)`): strictly increasing
//! across holders, proxies and restarts. `furrow_lock` answers the token (0 when the timeout
//! passed, as `GET_LOCK`'s 0); `furrow_unlock` answers 1 when the session held the lock, else 0.
//!
//! Lock connections are reused: one whose lock was released (`furrow_unlock`, or a `GET_LOCK`
//! that timed out) holds no lock and goes back to a small per-core pool of idle, logged-in
//! primary connections ([`IDLE_PER_CORE`] per server and user, dropped after [`IDLE_FOR`]), so
//! that an acquire costs `GET_LOCK` and the token bump, not a connect and login. A pooled
//! connection that fails its `GET_LOCK` (the server closed it meanwhile) is dropped and the
//! acquire retried once on a new connection; the connections of a session that ends are closed,
//! never pooled (closing is what releases their locks).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use codec::mysql::ErrPacket;
use router::config::Config;
use router::sql::lexer::{Token, tokenize};

use crate::backend::BackendConn;

/// Longest `timeout_s` accepted.
pub const MAX_TIMEOUT_S: u64 = 3600;

/// Most locks one session may hold (each is one backend connection).
pub const MAX_HELD: usize = 16;

/// A lock statement.
#[derive(Debug, PartialEq, Eq)]
pub enum LockCall {
    /// `SELECT furrow_lock('name', timeout_s)`.
    Lock { name: String, timeout_s: u64 },
    /// `SELECT furrow_unlock('name')`.
    Unlock { name: String },
}

fn bad(msg: &str) -> ErrPacket {
    ErrPacket::new(1582, "42000", format!("furrow: {msg}"))
}

/// A cheap first check of a COM_QUERY's text on a sharded listener (no lexer pass): whether it
/// starts, after white space, with `SELECT` and white space then `furrow_` (any case). Only then
/// is it [`parse`]d.
pub fn looks_like_call(sql: &[u8]) -> bool {
    let rest = sql.trim_ascii_start();
    let Some((kw, rest)) = rest.split_at_checked(6) else {
        return false;
    };
    if !kw.eq_ignore_ascii_case(b"SELECT") || !rest.first().is_some_and(u8::is_ascii_whitespace) {
        return false;
    }
    rest.trim_ascii_start()
        .get(..7)
        .is_some_and(|f| f.eq_ignore_ascii_case(b"furrow_"))
}

/// The group whose primary holds the locks of a *sharded* listener `listener`: the group of its
/// sharding's first shard (one fixed place, whatever shards a session's statements touch); the
/// listener's own group when no sharding names it.
pub fn sharded_lock_group(config: &Config, listener: &str, listener_group: &str) -> String {
    config
        .sharding()
        .into_iter()
        .find(|s| s.listener == listener)
        .and_then(|s| s.shards.first().map(|d| d.group.clone()))
        .unwrap_or_else(|| listener_group.to_string())
}

/// `None`: not a lock statement. `Some(Err)`: one that is malformed (the client's error).
pub fn parse(sql: &str) -> Option<Result<LockCall, ErrPacket>> {
    let mut hints = Vec::new();
    let mut t = Vec::new();
    tokenize(sql, &mut hints, &mut t);
    while let Some(Token::Punct(';')) = t.last() {
        t.pop();
    }
    let lock = match (t.first(), t.get(1), t.get(2)) {
        (Some(s), Some(f), Some(Token::Punct('('))) if s.is_kw("SELECT") => {
            if f.is_kw("furrow_lock") {
                true
            } else if f.is_kw("furrow_unlock") {
                false
            } else {
                return None;
            }
        }
        _ => return None,
    };
    let usage = if lock {
        "usage: SELECT furrow_lock('name', timeout_s) (name: 1..64 of A-Z a-z 0-9 _ . : -; \
         timeout_s: 0..3600)"
    } else {
        "usage: SELECT furrow_unlock('name')"
    };
    let name = match t.get(3) {
        Some(Token::Str(s)) => s
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= 64
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
            }),
        _ => None,
    };
    let Some(name) = name else {
        return Some(Err(bad(usage)));
    };
    let rest = &t[4..];
    let call = match (lock, rest) {
        (true, [Token::Punct(','), Token::Number(n), Token::Punct(')')]) => {
            match n.parse::<u64>().ok().filter(|v| *v <= MAX_TIMEOUT_S) {
                Some(timeout_s) => LockCall::Lock {
                    name: name.to_string(),
                    timeout_s,
                },
                None => return Some(Err(bad(usage))),
            }
        }
        (false, [Token::Punct(')')]) => LockCall::Unlock {
            name: name.to_string(),
        },
        _ => return Some(Err(bad(usage))),
    };
    Some(Ok(call))
}

/// The locks a session holds: name → (the connection holding it, its fencing token). Dropping
/// it closes the connections, which releases the locks on the server.
#[derive(Default)]
pub struct HeldLocks(HashMap<String, (Box<BackendConn>, u64)>);

/// Most idle lock connections a core keeps per (primary address, user, password).
pub const IDLE_PER_CORE: usize = 8;

/// An idle lock connection older than this is closed rather than reused (servers close idle
/// connections after `wait_timeout`; a fresh one is then cheaper than a failed attempt).
pub const IDLE_FOR: Duration = Duration::from_secs(30);

/// Where an idle lock connection may be reused: the primary's address, the user, the password.
type PoolKey = (String, String, String);

/// One core's idle lock connections (a field of [`crate::core::CoreCtx`]).
#[derive(Default)]
pub struct IdleLocks(RefCell<HashMap<PoolKey, Vec<(BackendConn, Instant)>>>);

fn pool_key(config: &Config, group: &str) -> Option<PoolKey> {
    let g = config.mysql_group(group)?;
    Some((
        g.primary.address.clone(),
        g.user.clone(),
        g.password.clone(),
    ))
}

impl IdleLocks {
    /// A recent idle lock connection for `key`, if the core has one.
    fn take(&self, key: &PoolKey) -> Option<BackendConn> {
        let mut m = self.0.borrow_mut();
        let v = m.get_mut(key)?;
        v.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        // The most recently used one.
        let c = v.pop().map(|(c, _)| c);
        if v.is_empty() {
            m.remove(key);
        }
        c
    }

    /// Keeps `c` (holding no lock) for the next acquire on this core; closed when the pool is full.
    fn put(&self, key: Option<PoolKey>, c: BackendConn) {
        let Some(key) = key else { return };
        let mut m = self.0.borrow_mut();
        let v = m.entry(key).or_default();
        v.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        if v.len() < IDLE_PER_CORE {
            v.push((c, Instant::now()));
        }
    }

    /// Idle lock connections this core keeps now, all servers together.
    pub fn count(&self) -> usize {
        self.0.borrow().values().map(Vec::len).sum()
    }
}

/// A connection to `group`'s primary for one lock.
async fn connect(config: &Config, group: &str) -> Result<BackendConn, ErrPacket> {
    let g = config
        .mysql_group(group)
        .ok_or_else(|| crate::error::errs::no_backend(group, "group"))?;
    let p = &g.primary;
    BackendConn::connect(
        Rc::from(p.name.as_str()),
        Rc::from(p.address.as_str()),
        &g.user,
        &g.password,
        g.connect_timeout,
        g.tls.as_ref(),
    )
    .await
    .map_err(|e| e.to_err_packet())
}

/// The first cell of `sql`'s result on `c`.
async fn value(c: &mut BackendConn, sql: &str) -> Result<Option<String>, ErrPacket> {
    c.query_rows(sql)
        .await
        .map(|(_, rows)| {
            rows.into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .flatten()
        })
        .map_err(|e| e.to_err_packet())
}

impl HeldLocks {
    /// Runs `call` for the session and returns the value its `SELECT` answers.
    pub async fn run(
        &mut self,
        idle: &IdleLocks,
        call: LockCall,
        config: &Config,
        group: &str,
    ) -> Result<u64, ErrPacket> {
        match call {
            LockCall::Unlock { name } => Ok(match self.0.remove(&name) {
                Some((mut c, _)) => {
                    let r = value(&mut c, &format!("SELECT RELEASE_LOCK('furrow:{name}')")).await;
                    if matches!(r.as_ref().map(Option::as_deref), Ok(Some("1"))) {
                        // Released and holding nothing: reusable.
                        idle.put(pool_key(config, group), *c);
                    }
                    1
                }
                None => 0,
            }),
            LockCall::Lock { name, timeout_s } => {
                if let Some((_, token)) = self.0.get(&name) {
                    // Held already by this session: as GET_LOCK, it stays held (same token).
                    return Ok(*token);
                }
                if self.0.len() >= MAX_HELD {
                    return Err(bad(&format!(
                        "a session holds at most {MAX_HELD} furrow locks"
                    )));
                }
                let key = pool_key(config, group);
                let get = format!("SELECT GET_LOCK('furrow:{name}', {timeout_s})");
                let reused = key.as_ref().and_then(|k| idle.take(k));
                let (mut c, got) = match reused {
                    Some(mut c) => match value(&mut c, &get).await {
                        Ok(got) => (c, got),
                        // Closed by the server while idle (or broken): once more on a new one.
                        Err(_) => {
                            drop(c);
                            let mut c = connect(config, group).await?;
                            let got = value(&mut c, &get).await?;
                            (c, got)
                        }
                    },
                    None => {
                        let mut c = connect(config, group).await?;
                        let got = value(&mut c, &get).await?;
                        (c, got)
                    }
                };
                if got.as_deref() != Some("1") {
                    if got.as_deref() == Some("0") {
                        // Timed out, holding nothing: reusable.
                        idle.put(key, c);
                    }
                    return Ok(0);
                }
                let bump = format!(
                    "INSERT INTO furrow.lock_tokens (name, token) VALUES ('{name}', \
                     LAST_INSERT_ID(1)) ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1)"
                );
                let token = async {
                    match value(&mut c, &bump).await {
                        Ok(_) => {}
                        // First use on this server: no schema or table yet.
                        Err(e) if e.code == 1049 || e.code == 1146 => {
                            value(&mut c, "CREATE DATABASE IF NOT EXISTS furrow").await?;
                            value(
                                &mut c,
                                "CREATE TABLE IF NOT EXISTS furrow.lock_tokens (name VARCHAR(64) \
                                 NOT NULL PRIMARY KEY, token BIGINT UNSIGNED NOT NULL) \
                                 ENGINE=InnoDB",
                            )
                            .await?;
                            value(&mut c, &bump).await?;
                        }
                        Err(e) => return Err(e),
                    }
                    value(&mut c, "SELECT LAST_INSERT_ID()").await
                }
                .await?
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|t| *t > 0)
                .ok_or_else(|| crate::error::errs::internal("no fencing token"))?;
                self.0.insert(name, (Box::new(c), token));
                Ok(token)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_calls_are_spotted_without_a_lexer_pass() {
        for yes in [
            "SELECT furrow_lock('a', 1)",
            "  select\n\tFURROW_unlock('a')",
            "SELECT furrow_x",
        ] {
            assert!(looks_like_call(yes.as_bytes()), "{yes}");
        }
        for no in [
            "",
            "SELECT",
            "SELECT ",
            "SELECTfurrow_lock('a', 1)",
            "SELECT 1",
            "SELECT furrow",
            "/* c */ SELECT furrow_lock('a', 1)",
            "UPDATE furrow_lock SET a = 1",
        ] {
            assert!(!looks_like_call(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn lock_statements_parse_exactly() {
        assert_eq!(
            parse("SELECT furrow_lock('jobs.nightly', 10)").map(Result::ok),
            Some(Some(LockCall::Lock {
                name: "jobs.nightly".into(),
                timeout_s: 10
            }))
        );
        assert_eq!(
            parse("select FURROW_UNLOCK( 'a-b:c' );").map(Result::ok),
            Some(Some(LockCall::Unlock {
                name: "a-b:c".into()
            }))
        );
        for not_ours in [
            "SELECT 1",
            "SELECT GET_LOCK('x', 1)",
            "UPDATE t SET a = 1",
            "",
        ] {
            assert!(parse(not_ours).is_none(), "{not_ours}");
        }
        for bad in [
            "SELECT furrow_lock('x')",
            "SELECT furrow_lock('x', 3601)",
            "SELECT furrow_lock('x', -1)",
            "SELECT furrow_lock('', 1)",
            "SELECT furrow_lock('it''s', 1)",
            "SELECT furrow_lock('x', 1), 2",
            "SELECT furrow_lock(@v, 1)",
            "SELECT furrow_unlock('x', 1)",
        ] {
            let e = parse(bad).expect("ours").expect_err(bad);
            assert_eq!(e.code, 1582, "{bad}");
        }
        let long = format!("SELECT furrow_lock('{}', 1)", "a".repeat(65));
        assert!(parse(&long).expect("ours").is_err());
    }
}
