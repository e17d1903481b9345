//! Resharding's copier and verifier against real servers (docs/sharding.md, "Resharding"): a
//! table of 4 hash partitions (one per shard, over two MariaDB servers) copied into 8 partitions
//! while a writer changes rows with the dual-write protocol the proxy is to use (its own
//! transaction on the old shard, holding the row's lock, around the same write on the new
//! layout). Afterwards every acknowledged write is in the old layout, the checksums of both
//! layouts are equal chunk by chunk, and a row changed behind the copier's back is found.

mod common;
#[path = "common/shard.rs"]
mod shard;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use proxy_mysql::shard::reshard::{Table, copy_partition, verify};
use router::sql::shard::reshard::{Layout as ReLayout, PartStats, plan};
use router::sql::shard::{ShardingRules, TableRule};
use shard::{Layout, Setup, config};
use testkit::{APP_PASSWORD, APP_USER};

fn layout() -> Layout {
    Layout {
        group_a: String::new(),
        b_connect_timeout_ms: 2000,
        group_b: String::new(),
        sharding: String::new(),
        // `orders_v2` is the new layout, declared as a table of its own so that the proxy's DDL
        // creates its physical tables on the right shards.
        tables: "[[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n\
                 physical = \"orders_{0..3}\"\n\n\
                 [[sharding.app.tables]]\nname = \"orders_v2\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n\
                 physical = \"orders_v2_{0..7}\"\n\n"
            .into(),
        reference: false,
    }
}

const COLUMNS: &str = "(id BIGINT PRIMARY KEY, user_id INT NOT NULL, amount DECIMAL(10,2) NOT NULL, \
     note VARCHAR(40) CHARACTER SET latin1 NULL, data VARBINARY(16) NULL)";

/// The row the writer and the seed write for key `id` at version `v`.
fn user_of(id: u64) -> u64 {
    id * 7 + 3
}

/// A row as the writer last acknowledged it: `amount` and the hex of `note`'s latin1 bytes.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    amount: u64,
    note: Option<String>,
}

fn hex(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02X}")).collect()
}

#[test]
fn copy_under_dual_writes_then_verify() {
    let s = Setup::with(layout());
    s.sql(&format!("CREATE TABLE orders {COLUMNS}"));
    s.sql(&format!("CREATE TABLE orders_v2 {COLUMNS}"));
    let mut model: BTreeMap<u64, Option<Model>> = BTreeMap::new();
    for chunk in (1..=1600u64).collect::<Vec<_>>().chunks(100) {
        let values: Vec<String> = chunk
            .iter()
            .map(|&id| {
                let (note, bytes) = match id % 4 {
                    0 => ("NULL".to_string(), None),
                    // latin1: it's \ e-acute.
                    1 => ("'it''s \\\\ é'".to_string(), Some(hex(b"it's \\ \xe9"))),
                    _ => (format!("'n{id}'"), Some(hex(format!("n{id}").as_bytes()))),
                };
                let data = if id % 3 == 0 { "X'FF00'" } else { "NULL" };
                model.insert(
                    id,
                    Some(Model {
                        amount: id,
                        note: bytes,
                    }),
                );
                format!("({id}, {}, {id}, {note}, {data})", user_of(id))
            })
            .collect();
        s.sql(&format!(
            "INSERT INTO orders (id, user_id, amount, note, data) VALUES {}",
            values.join(", ")
        ));
    }

    let (a, b) = (s.servers[0].addr(), s.servers[1].addr());
    let cfg = router::config::parse("t.toml", &config(1, a, b, &layout()))
        .unwrap_or_else(|e| panic!("{e}"));
    let rules = ShardingRules::compile(&cfg.sharding()[0]).unwrap_or_else(|e| panic!("{e}"));
    let rule = |n: &str| -> TableRule {
        rules
            .tables
            .iter()
            .find(|t| t.name == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n}"))
    };
    let (old, new) = (rule("orders"), rule("orders_v2"));

    // The dry run names where each old partition goes: p -> p and p + 4.
    let stats = vec![
        PartStats {
            rows: 400,
            bytes: 16_384
        };
        4
    ];
    let p = plan(
        ReLayout {
            rule: &old,
            shards: &rules.shards,
        },
        ReLayout {
            rule: &new,
            shards: &rules.shards,
        },
        &stats,
        1 << 20,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = p.render();
    println!("{text}");
    assert!(
        text.contains("p1 s1:app_1.orders_1 ~400 rows ~16384 bytes -> p1 s0:app_0.orders_v2_1, p5 s2:app_2.orders_v2_5"),
        "{text}"
    );

    let addr_of = |shard: usize| s.servers[shard / 2].addr().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let open_layout = |rule: &TableRule| {
            let places: Vec<(String, String, String)> = (0..rule.partitions())
                .map(|q| {
                    let sh = rule.shard_of(q);
                    (addr_of(sh), format!("app_{sh}"), rule.physical[q].clone())
                })
                .collect();
            async move {
                let mut v = Vec::new();
                for (addr, schema, table) in places {
                    v.push(
                        Table::open(&addr, APP_USER, APP_PASSWORD, &schema, &table)
                            .await
                            .unwrap_or_else(|e| panic!("{e}")),
                    );
                }
                v
            }
        };
        let mut copy_old = open_layout(&old).await;
        let mut copy_new = open_layout(&new).await;
        let mut w_old = open_layout(&old).await;
        let mut w_new = open_layout(&new).await;
        let (columns, pk_index) = copy_old[0].columns().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pk_index, 0);
        let key_index = columns.iter().position(|c| c == "user_id").unwrap_or(99);
        let copying = Cell::new(true);
        let stop = AtomicBool::new(false);

        let copier = async {
            let started = std::time::Instant::now();
            let mut rows = 0;
            for t in copy_old.iter_mut() {
                let st = copy_partition(
                    t,
                    &mut copy_new,
                    &new,
                    &columns,
                    pk_index,
                    key_index,
                    20,
                    None,
                    &stop,
                )
                .await
                .unwrap_or_else(|e| panic!("copy: {e}"));
                rows += st.rows;
            }
            copying.set(false);
            // Reported, not asserted (a debug build, with the writer competing for the locks).
            let secs = started.elapsed().as_secs_f64();
            println!(
                "copy: {rows} rows in {secs:.3} s ({:.0} rows/s, batches of 20)",
                rows as f64 / secs
            );
            rows
        };
        let writer = async {
            let (mut during, mut total, mut failed) = (0u64, 0u64, Vec::new());
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            while copying.get() || total < 300 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let id = seed % 2000 + 1;
                let (pold, pnew) = ((user_of(id) % 4) as usize, (user_of(id) % 8) as usize);
                let cur = model.get(&id).cloned().flatten();
                let (stmt, next) = match (&cur, seed % 5) {
                    (Some(_), 0) => ("DELETE FROM {t} WHERE id = {id}".to_string(), None),
                    (Some(m), _) => (
                        format!("UPDATE {{t}} SET amount = amount + 1, note = 'w{total}' WHERE id = {id}"),
                        Some(Model {
                            amount: m.amount + 1,
                            note: Some(hex(format!("w{total}").as_bytes())),
                        }),
                    ),
                    (None, _) => (
                        format!(
                            "INSERT INTO {{t}} (id, user_id, amount, note) VALUES ({id}, {}, 1, 'i{total}')",
                            user_of(id)
                        ),
                        Some(Model {
                            amount: 1,
                            note: Some(hex(format!("i{total}").as_bytes())),
                        }),
                    ),
                };
                let on = |t: &str| stmt.replace("{t}", t).replace("{id}", &id.to_string());
                let (o, n) = (&mut w_old[pold], &mut w_new[pnew]);
                let old_sql = on(&o.table);
                let new_sql = on(&n.table);
                let r = async {
                    o.query("BEGIN").await?;
                    o.query(&old_sql).await?;
                    n.query(&new_sql).await?;
                    o.query("COMMIT").await
                }
                .await;
                match r {
                    Ok(_) => {
                        model.insert(id, next);
                    }
                    Err(e) => {
                        let _ = o.query("ROLLBACK").await;
                        failed.push(e);
                    }
                }
                total += 1;
                if copying.get() {
                    during += 1;
                }
            }
            (during, total, failed)
        };
        let (copied, (during, total, failed)) = tokio::join!(copier, writer);
        println!("copied {copied} rows; {total} writes, {during} of them while copying");
        assert!(failed.is_empty(), "dual writes failed: {failed:?}");
        assert!(during > 0, "the writer never ran during the copy");

        // Every acknowledged write is in the old layout.
        let want: Vec<(u64, u64, Option<String>)> = model
            .iter()
            .filter_map(|(id, m)| m.as_ref().map(|m| (*id, m.amount, m.note.clone())))
            .collect();
        let mut got = Vec::new();
        for t in w_old.iter_mut() {
            let sql = format!("SELECT id, amount, HEX(note) FROM {}", t.table);
            for r in t.query(&sql).await.unwrap_or_else(|e| panic!("{e}")) {
                let c = |i: usize| r[i].clone().unwrap_or_default();
                let amount = c(1).split('.').next().unwrap_or("").parse::<u64>().unwrap_or(0);
                got.push((c(0).parse::<u64>().unwrap_or(0), amount, r[2].clone()));
            }
        }
        got.sort();
        assert_eq!(got.len(), want.len());
        assert_eq!(got, want);

        // Both layouts hold the same rows, chunk by chunk.
        let v = verify(&mut w_old, &mut w_new, &columns, "id", 200)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        println!(
            "verified {} chunks: {} rows, checksum {:016x}",
            v.ranges.len(),
            v.old.rows,
            v.old.xor
        );
        assert_eq!(v.old.rows, want.len() as u64);
        assert!(v.mismatches.is_empty(), "{:?}", v.mismatches);
        assert_eq!(v.old, v.new);
        assert!(v.ranges.len() > 4);

        // A row changed in the new layout alone is found in its chunk, and only there.
        let (&id, _) = model
            .iter()
            .find(|(_, m)| m.is_some())
            .unwrap_or_else(|| panic!("no row"));
        let q = (user_of(id) % 8) as usize;
        let sql = format!("UPDATE {} SET data = X'00' WHERE id = {id}", w_new[q].table);
        w_new[q].query(&sql).await.unwrap_or_else(|e| panic!("{e}"));
        let v = verify(&mut w_old, &mut w_new, &columns, "id", 200)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.mismatches.len(), 1, "{:?}", v.mismatches);
        let (lo, hi) = v.mismatches[0].range;
        assert!(lo <= id as i128 && (id as i128) < hi);
        assert_eq!(v.old.rows, v.new.rows);
    });
}

/// Every row of a layout, read on the servers: `(id, user_id, amount, note)` by id.
fn layout_rows(s: &Setup, new: bool) -> BTreeMap<u64, Vec<Option<String>>> {
    let mut out = BTreeMap::new();
    let (n, prefix) = if new {
        (8, "orders_v2_")
    } else {
        (4, "orders_")
    };
    for p in 0..n {
        let (server, schema) = s.shard(p * 4 / n);
        let rows = server
            .sql(&format!(
                "SELECT id, user_id, amount, note FROM {schema}.{prefix}{p}"
            ))
            .expect("layout rows");
        for r in rows {
            let id = r[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
            assert!(out.insert(id, r).is_none(), "id {id} twice");
        }
    }
    out
}

/// Dual writes in the proxy with the resharding marks in the config (what `RESHARD START` writes):
/// text and prepared INSERT/UPDATE/DELETE reach both layouts with the same values, global ids of
/// `auto_id` included (the same id on both); reads follow the serving layout (old while copying,
/// new after the cut-over), prepared reads too.
#[test]
fn dual_writes_of_text_and_prepared_statements() {
    let rules = |marks: &str| {
        let mut l = layout();
        l.tables = format!(
            "[[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n\
             physical = \"orders_{{0..3}}\"\nauto_id = \"id\"\n{marks}\n\n\
             [[sharding.app.tables]]\nname = \"orders_v2\"\nkey = \"user_id\"\nalgorithm = \"hash\"\n\
             physical = \"orders_v2_{{0..7}}\"\nauto_id = \"id\"\n\n"
        );
        l
    };
    let s = Setup::with(rules(""));
    s.sql(&format!("CREATE TABLE orders {COLUMNS}"));
    s.sql(&format!("CREATE TABLE orders_v2 {COLUMNS}"));
    let (a, b) = (s.servers[0].addr(), s.servers[1].addr());
    let port = s.proxy.addr.port();
    s.proxy.reload(&config(
        port,
        a,
        b,
        &rules("reshard_to = \"orders_v2\"\nreshard_phase = \"copy\""),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = s.proxy.addr;
    let generated = rt.block_on(async {
        use mysql_async::prelude::*;
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(addr.ip().to_string())
            .tcp_port(addr.port())
            .user(Some("app"))
            .pass(Some(common::APP_SECRET))
            .db_name(Some("app"))
            .prefer_socket(false);
        let mut c = mysql_async::Conn::new(opts).await.expect("connect");
        c.query_drop("INSERT INTO orders (id, user_id, amount, note) VALUES (1, 11, 1.50, 'one'), (2, 12, 2.50, NULL)")
            .await
            .expect("text insert");
        let ins = c
            .prep("INSERT INTO orders (id, user_id, amount, note) VALUES (?, ?, ?, ?)")
            .await
            .expect("prepare");
        for id in 3..=6u64 {
            c.exec_drop(&ins, (id, id + 10, "3.25", format!("p{id}")))
                .await
                .expect("prepared insert");
        }
        c.exec_drop(
            "UPDATE orders SET amount = amount + ?, note = ? WHERE user_id = ? AND id = ?",
            ("1.00", "upd", 13u64, 3u64),
        )
        .await
        .expect("prepared update");
        c.exec_drop("DELETE FROM orders WHERE user_id = ? AND id = ?", (14u64, 4u64))
            .await
            .expect("prepared delete");
        // The rule's auto_id fills `id`: the same global id in both layouts, reported as the
        // insert id.
        c.query_drop("INSERT INTO orders (user_id, amount) VALUES (21, 9.00)")
            .await
            .expect("auto id insert");
        let generated = c.last_insert_id().unwrap_or(0);
        // A prepared statement with NOW() is refused like a text one.
        let e = c
            .exec_drop(
                "UPDATE orders SET note = NOW() WHERE user_id = ? AND id = ?",
                (11u64, 1u64),
            )
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("is being resharded") && e.contains("NOW"), "{e}");
        // Reads are the old layout's: a row put in the new layout alone is not seen.
        let seen: Option<String> = c
            .exec_first("SELECT note FROM orders WHERE user_id = ? AND id = ?", (11u64, 1u64))
            .await
            .expect("prepared read");
        assert_eq!(seen.as_deref(), Some("one"));
        c.disconnect().await.expect("disconnect");
        generated
    });
    assert!(generated > 6, "no generated id: {generated}");
    let old = layout_rows(&s, false);
    let new = layout_rows(&s, true);
    assert_eq!(old, new, "the layouts differ");
    let ids: Vec<u64> = old.keys().copied().collect();
    assert_eq!(ids, vec![1, 2, 3, 5, 6, generated]);
    assert_eq!(
        old[&3],
        vec![
            Some("3".into()),
            Some("13".into()),
            Some("4.25".into()),
            Some("upd".into())
        ]
    );
    // After the cut-over the new layout serves reads: a change made there alone is what the
    // listener returns.
    s.proxy.reload(&config(
        port,
        a,
        b,
        &rules("reshard_to = \"orders_v2\"\nreshard_phase = \"cutover\""),
    ));
    let q = 11 % 8; // user 11's new partition
    let (server, schema) = s.shard(q / 2);
    server
        .sql(&format!(
            "UPDATE {schema}.orders_v2_{q} SET note = 'new only' WHERE id = 1"
        ))
        .expect("direct update");
    assert_eq!(
        s.sql("SELECT note FROM orders WHERE user_id = 11 AND id = 1"),
        vec![vec![Some("new only".to_string())]]
    );
    // Writes still reach both.
    s.sql("UPDATE orders SET note = 'both' WHERE user_id = 12 AND id = 2");
    assert_eq!(layout_rows(&s, false)[&2][3].as_deref(), Some("both"));
    assert_eq!(layout_rows(&s, true)[&2][3].as_deref(), Some("both"));
}
