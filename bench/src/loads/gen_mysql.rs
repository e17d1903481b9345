//! The harness's own MySQL load for sharding: scatter queries with ORDER BY/LIMIT (merged across
//! shards) and point queries by shard key, against one server, a sharding proxy, or the shards
//! directly with the merge done in the client (what an application would do without a proxy).

use std::net::SocketAddr;
use std::time::Duration;

use super::mysql_client::{Cell, MyConn};
use super::{LoadRun, Rng, drive};

/// Rows are `items(id, grp, score, name)`; `grp` is not the shard key, so a query by `grp` scatters.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS items (id BIGINT PRIMARY KEY, grp INT NOT NULL, \
                          score INT NOT NULL, name VARCHAR(32) NOT NULL, KEY grp_score (grp, score))";

/// Groups the rows are spread over.
pub const GROUPS: u64 = 100;

/// Which query the load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardQuery {
    /// `WHERE grp = ? ORDER BY score DESC, id LIMIT 10`: every shard, k-way merge, limit.
    TopN,
    /// `WHERE id = ?`: one shard.
    Point,
    /// `WHERE id = ?` on `rs_items` (the table the reshard rows reshard; `items`' columns).
    PointResharded,
    /// `BEGIN; UPDATE ... WHERE id = a; UPDATE ... WHERE id = a; COMMIT`: a transaction on one
    /// shard (Furrow commits it with a plain COMMIT).
    TxnOneShard,
    /// `BEGIN; UPDATE ... WHERE id = a; UPDATE ... WHERE id = b; COMMIT` with `a` and `b` on two
    /// shards of two servers: Furrow with `xa = true` commits it with XA two-phase commit.
    TxnTwoShards,
}

impl ShardQuery {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            ShardQuery::TopN => "scatter ORDER BY score LIMIT 10",
            ShardQuery::Point => "point by shard key",
            ShardQuery::PointResharded => "point by shard key on rs_items",
            ShardQuery::TxnOneShard => "txn 2 UPDATEs on 1 shard",
            ShardQuery::TxnTwoShards => "txn 2 UPDATEs on 2 shards (XA)",
        }
    }

    /// The two UPDATEs of a transaction load for client `thread` of `threads` (`None` for the
    /// read loads). Each client owns its own rows (blocks of 4 ids, one per shard, `block %
    /// threads == thread`), so that clients never wait on each other's row locks: a lock cycle
    /// across shards is invisible to every server's deadlock detector.
    pub fn txn_updates(
        self,
        rng: &mut Rng,
        rows: u64,
        thread: usize,
        threads: usize,
    ) -> Option<[String; 2]> {
        let threads = threads.max(1) as u64;
        let blocks = (rows / 4 / threads).max(1);
        let block = rng.below(blocks) * threads + thread as u64;
        let update = |id: u64| format!("UPDATE items SET score = score + 1 WHERE id = {id}");
        match self {
            ShardQuery::TxnOneShard => Some([update(4 * block), update(4 * block)]),
            // Shards 0 and 2 of 4: one on each server of the suite's 2-server layout.
            ShardQuery::TxnTwoShards => Some([update(4 * block), update(4 * block + 2)]),
            ShardQuery::TopN | ShardQuery::Point | ShardQuery::PointResharded => None,
        }
    }

    /// The SQL for a random draw.
    pub fn sql(self, rng: &mut Rng, rows: u64) -> (String, u64) {
        match self {
            ShardQuery::TopN => {
                let g = rng.below(GROUPS);
                (
                    format!(
                        "SELECT id, score FROM items WHERE grp = {g} ORDER BY score DESC, id LIMIT 10"
                    ),
                    g,
                )
            }
            ShardQuery::Point => {
                let id = rng.below(rows);
                (
                    format!("SELECT id, score, name FROM items WHERE id = {id}"),
                    id,
                )
            }
            ShardQuery::PointResharded => {
                let id = rng.below(rows);
                (
                    format!("SELECT id, score, name FROM rs_items WHERE id = {id}"),
                    id,
                )
            }
            ShardQuery::TxnOneShard | ShardQuery::TxnTwoShards => {
                let u = self.txn_updates(rng, rows, 0, 1).unwrap_or_default();
                (format!("BEGIN; {}; {}; COMMIT", u[0], u[1]), 0)
            }
        }
    }
}

/// The deterministic row `id`: (grp, score, name).
pub fn row(id: u64) -> (u64, u64, String) {
    (
        id % GROUPS,
        (id.wrapping_mul(7919)) % 100_000,
        format!("item-{id}"),
    )
}

/// INSERT statements (batches of 500 rows) for the ids that `keep` selects.
pub fn insert_statements(rows: u64, keep: impl Fn(u64) -> bool) -> Vec<String> {
    let ids: Vec<u64> = (0..rows).filter(|&id| keep(id)).collect();
    ids.chunks(500)
        .map(|chunk| {
            let values: Vec<String> = chunk
                .iter()
                .map(|&id| {
                    let (g, s, n) = row(id);
                    format!("({id},{g},{s},'{n}')")
                })
                .collect();
            format!(
                "INSERT INTO items (id, grp, score, name) VALUES {}",
                values.join(",")
            )
        })
        .collect()
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// One server or proxy that answers the query itself.
    Single(SocketAddr),
    /// Like `Single`, logged in without a default database (Furrow's sharded listener: it
    /// refuses a database in the handshake with 1049, passing it to the listener group's server).
    NoDb(SocketAddr),
    /// The shards directly, each a (server, schema) (shard of id = id % n, Furrow's `hash` rule
    /// with one partition per shard); the client scatters and merges.
    ClientShards(Vec<(SocketAddr, String)>),
}

/// Parameters of one scatter load.
#[derive(Debug, Clone)]
pub struct ShardParams {
    /// Target.
    pub endpoint: Endpoint,
    /// Query kind.
    pub query: ShardQuery,
    /// Client threads (one connection per server each).
    pub clients: usize,
    /// Time limit.
    pub duration: Duration,
    /// Request limit.
    pub max_requests: u64,
    /// Login.
    pub user: String,
    /// Password.
    pub password: String,
    /// Schema.
    pub db: String,
    /// Rows in the data set.
    pub rows: u64,
}

fn int(cell: &Cell) -> i64 {
    cell.as_deref()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Merges per-shard `(id, score)` results as the query orders them: score DESC, id ASC, first 10.
pub fn merge_top(parts: Vec<Vec<Vec<Cell>>>, limit: usize) -> Vec<(i64, i64)> {
    let mut all: Vec<(i64, i64)> = parts
        .iter()
        .flatten()
        .map(|r| (int(&r[0]), int(&r[1])))
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(limit);
    all
}

/// The answer to `sql` (a [`ShardQuery`] with draw `key`) from an endpoint, for checking that
/// every target returns the same rows: one query on a single endpoint; on client shards the point
/// query goes to shard `key % n` and the scatter query to every shard, merged.
pub fn answer(
    endpoint: &Endpoint,
    user: &str,
    password: &str,
    db: &str,
    query: ShardQuery,
    sql: &str,
    key: u64,
) -> Result<Vec<Vec<Cell>>, String> {
    let one = |a: SocketAddr, db: Option<&str>| -> Result<Vec<Vec<Cell>>, String> {
        let mut c = MyConn::connect(a, user, password, db).map_err(|e| e.to_string())?;
        c.query(sql).map_err(|e| e.to_string())
    };
    match endpoint {
        Endpoint::Single(a) => one(*a, Some(db)),
        Endpoint::NoDb(a) => one(*a, None),
        Endpoint::ClientShards(v)
            if matches!(query, ShardQuery::Point | ShardQuery::PointResharded) =>
        {
            let (a, db) = &v[(key % v.len().max(1) as u64) as usize];
            one(*a, Some(db))
        }
        Endpoint::ClientShards(v) => {
            let parts = v
                .iter()
                .map(|(a, db)| one(*a, Some(db)))
                .collect::<Result<Vec<_>, String>>()?;
            Ok(merge_top(parts, 10)
                .into_iter()
                .map(|(id, score)| {
                    vec![
                        Some(id.to_string().into_bytes()),
                        Some(score.to_string().into_bytes()),
                    ]
                })
                .collect())
        }
    }
}

/// Runs the load.
pub fn run(p: &ShardParams) -> Result<LoadRun, String> {
    drive(p.clients, p.duration, p.max_requests, |i| {
        let addrs = match &p.endpoint {
            Endpoint::Single(a) => vec![(*a, Some(p.db.clone()))],
            Endpoint::NoDb(a) => vec![(*a, None)],
            Endpoint::ClientShards(v) => v.iter().map(|(a, db)| (*a, Some(db.clone()))).collect(),
        };
        let mut conns = addrs
            .iter()
            .map(|(a, db)| {
                MyConn::connect(*a, &p.user, &p.password, db.as_deref())
                    .map_err(|e| format!("connect {a}/{db:?}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut rng = Rng::new(i as u64 + 101);
        let (query, rows) = (p.query, p.rows.max(1));
        let client_side = matches!(p.endpoint, Endpoint::ClientShards(_));
        if client_side && query.txn_updates(&mut Rng::new(1), rows, 0, 1).is_some() {
            return Err(
                "a transaction load needs one endpoint (the client does not run XA)".into(),
            );
        }
        let threads = p.clients;
        Ok(move || {
            if let Some(updates) = query.txn_updates(&mut rng, rows, i, threads) {
                // One transaction counts as one request, its latency the four round trips.
                let c = &mut conns[0];
                let r = c
                    .query("BEGIN")
                    .and_then(|_| c.query(&updates[0]))
                    .and_then(|_| c.query(&updates[1]))
                    .and_then(|_| c.query("COMMIT"));
                return match r {
                    Ok(_) => Ok((1, 0)),
                    Err(super::mysql_client::MyError::Server(_)) => {
                        let _ = c.query("ROLLBACK");
                        Ok((1, 1))
                    }
                    Err(e) => Err(e.to_string()),
                };
            }
            let (sql, key) = query.sql(&mut rng, rows);
            let n = conns.len();
            let point = matches!(query, ShardQuery::Point | ShardQuery::PointResharded);
            let result = if !client_side || point {
                let c = if client_side {
                    (key % n as u64) as usize
                } else {
                    0
                };
                conns[c].query(&sql).map(|_| ())
            } else {
                // Send to every shard first, then read: the shards work in parallel.
                let mut parts = Vec::with_capacity(n);
                let mut res = Ok(());
                for c in conns.iter_mut() {
                    res = res.and_then(|_| c.send_query(&sql));
                }
                for c in conns.iter_mut() {
                    match c.read_result() {
                        Ok(r) => parts.push(r),
                        Err(e) => res = res.and(Err(e)),
                    }
                }
                let _top = merge_top(parts, 10);
                res
            };
            match result {
                Ok(()) => Ok((1, 0)),
                Err(super::mysql_client::MyError::Server(_)) => Ok((1, 1)),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

/// The lock round-trip load: each client takes and releases its own (uncontended) lock,
/// `furrow_lock`/`furrow_unlock` through Furrow (`furrow`), or the server's own
/// `GET_LOCK`/`RELEASE_LOCK` directly; one request = lock + unlock.
pub fn run_lock(addr: SocketAddr, furrow: bool, p: &ShardParams) -> Result<LoadRun, String> {
    drive(p.clients, p.duration, p.max_requests, |i| {
        let mut c = MyConn::connect(addr, &p.user, &p.password, None)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (lock, unlock) = if furrow {
            (
                format!("SELECT furrow_lock('bench{i}', 5)"),
                format!("SELECT furrow_unlock('bench{i}')"),
            )
        } else {
            (
                format!("SELECT GET_LOCK('bench{i}', 5)"),
                format!("SELECT RELEASE_LOCK('bench{i}')"),
            )
        };
        Ok(
            move || match c.query(&lock).and_then(|_| c.query(&unlock)) {
                Ok(_) => Ok((1, 0)),
                Err(super::mysql_client::MyError::Server(_)) => Ok((1, 1)),
                Err(e) => Err(e.to_string()),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_orders_by_score_desc_then_id() {
        let c = |v: i64| Some(v.to_string().into_bytes());
        let a = vec![vec![c(1), c(90)], vec![c(3), c(50)]];
        let b = vec![vec![c(2), c(90)], vec![c(4), c(70)], vec![c(5), c(10)]];
        assert_eq!(merge_top(vec![a, b], 3), vec![(1, 90), (2, 90), (4, 70)]);
    }

    #[test]
    fn inserts_cover_the_selected_ids() {
        let all = insert_statements(1200, |_| true);
        assert_eq!(all.len(), 3);
        let even = insert_statements(10, |id| id % 2 == 0);
        assert_eq!(even.len(), 1);
        assert!(even[0].contains("(4,4,"));
        assert!(!even[0].contains("(3,3,"));
        assert_eq!(row(101).0, 1);
    }

    #[test]
    fn sql_draws() {
        let mut rng = Rng::new(1);
        let (q, g) = ShardQuery::TopN.sql(&mut rng, 1000);
        assert!(g < GROUPS && q.contains(&format!("grp = {g} ORDER BY")));
        let (q, id) = ShardQuery::Point.sql(&mut rng, 1000);
        assert!(id < 1000 && q.ends_with(&format!("id = {id}")));
    }

    #[test]
    fn transaction_loads_keep_clients_on_their_own_rows() {
        let mut rng = Rng::new(7);
        assert_eq!(ShardQuery::Point.txn_updates(&mut rng, 1000, 0, 4), None);
        let id = |u: &str| -> u64 { u.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap() };
        for thread in 0..3 {
            for _ in 0..50 {
                let [a, b] = ShardQuery::TxnTwoShards
                    .txn_updates(&mut rng, 1000, thread, 3)
                    .unwrap();
                let (a, b) = (id(&a), id(&b));
                assert_eq!((a % 4, b % 4), (0, 2), "shards 0 and 2");
                assert_eq!((a / 4) % 3, thread as u64, "the client's own block");
                assert!(b < 1000);
                let [c, d] = ShardQuery::TxnOneShard
                    .txn_updates(&mut rng, 1000, thread, 3)
                    .unwrap();
                assert_eq!(id(&c), id(&d));
                assert_eq!((id(&c) / 4) % 3, thread as u64);
            }
        }
    }
}
