//! Index advice end to end: a real MariaDB table without the index a statement needs, the
//! statement run through the MySQL listener with the real `mariadb` client, the admin port's
//! `INDEX ADVICE` proposing the index from `EXPLAIN` and `information_schema`, and the proposal
//! applied: the server's access changes from a full scan to an index lookup and it reads a
//! fraction of the rows (MariaDB's `ANALYZE` counts the rows each table really read).

mod common;

use common::{FurrowProcess, mariadb_in, mysql_proxy_config, redis_cli};

const SLOW: &str =
    "SELECT id, total FROM orders WHERE customer_id = 42 AND status = 'new' ORDER BY created_at";

/// `ANALYZE` of the statement on the server: (access type, key), and the rows the server read to
/// answer it (the session's `Handler_read_*` counters, summed).
fn analyze(db: &testkit::MariaDb) -> (String, String, u64) {
    let (cols, rows) = db
        .sql_with_columns(&format!("USE shop; ANALYZE {SLOW}"))
        .expect("ANALYZE");
    let at = |name: &str| cols.iter().position(|c| c == name).expect(name);
    let cell = |name: &str| rows[0][at(name)].clone().unwrap_or_default();
    let counters = db
        .sql(&format!(
            "USE shop; FLUSH STATUS; {SLOW}; SHOW SESSION STATUS LIKE 'Handler_read%'"
        ))
        .expect("handler counters");
    let read: u64 = counters
        .iter()
        .filter(|r| {
            r.first()
                .cloned()
                .flatten()
                .is_some_and(|n| n.starts_with("Handler_read"))
        })
        .map(|r| {
            r[1].as_deref()
                .unwrap_or("0")
                .parse::<u64>()
                .expect("a count")
        })
        .sum();
    (cell("type"), cell("key"), read)
}

fn advice_line<'a>(advice: &'a str, table: &str) -> Option<&'a str> {
    advice
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(table) && l.contains("ADD INDEX"))
}

#[test]
fn advice_turns_a_full_scan_into_an_index_lookup() {
    let db = testkit::MariaDb::start().expect("mariadb");
    db.sql(
        "CREATE DATABASE shop; USE shop; \
         CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, \
           status VARCHAR(8) NOT NULL, created_at INT NOT NULL, total INT NOT NULL); \
         CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(20)); \
         INSERT INTO shop.orders (customer_id, status, created_at, total) \
           SELECT seq % 2000, IF(seq % 3 = 0, 'new', 'paid'), seq, seq % 500 FROM seq_1_to_20000; \
         INSERT INTO shop.customers SELECT seq, CONCAT('c', seq) FROM seq_1_to_2000; \
         ANALYZE TABLE shop.orders, shop.customers;",
    )
    .expect("schema");
    let (admin, listen) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let cfg = mysql_proxy_config(admin.port(), listen.port(), db.addr(), "", "");
    let _p = FurrowProcess::start(&cfg, admin.port());

    let expected = mariadb_in(listen.port(), "shop", SLOW);
    // Customer 42's orders are rows 42 + 2000k (k < 10); those with k a multiple of 3 are new.
    assert_eq!(expected.lines().count(), 4, "{expected}");
    for _ in 0..4 {
        assert_eq!(mariadb_in(listen.port(), "shop", SLOW), expected);
    }
    // A statement the primary key serves, and one advice cannot read.
    assert_eq!(
        mariadb_in(
            listen.port(),
            "shop",
            "SELECT name FROM customers WHERE id = 7"
        ),
        "c7"
    );
    mariadb_in(
        listen.port(),
        "shop",
        "SELECT COUNT(*) FROM orders WHERE total = 1 OR total = 2",
    );

    let before = analyze(&db);
    assert_eq!(before.0, "ALL", "{before:?}");

    let advice = redis_cli(admin.port(), &["INDEX", "ADVICE", "10"]);
    let line = advice_line(&advice, "shop.orders").unwrap_or_else(|| panic!("{advice}"));
    let want = "ALTER TABLE `shop`.`orders` ADD INDEX `furrow_customer_id_status_created_at` \
                (`customer_id`, `status`, `created_at`)";
    assert!(line.ends_with(want), "{advice}");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[2], "ALL", "{advice}");
    let rows_before: u64 = cells[3].parse().expect("rows before");
    let rows_after: u64 = cells[4].parse().expect("rows after");
    // 20,000 rows over 4,000 (customer, status) pairs: 5 per key.
    assert!(rows_before >= 10_000, "{advice}");
    assert!((1..=20).contains(&rows_after), "{advice}");
    // The OR of one column is not indexable as written; the primary key lookup needs nothing.
    assert!(advice.contains("nothing indexable"), "{advice}");
    assert!(advice.contains("no table is read in full"), "{advice}");
    assert!(!advice.contains("shop.customers"), "{advice}");

    eprintln!("{advice}");
    db.sql(&format!("{want};")).expect("apply the advice");
    let after = analyze(&db);
    assert_eq!(
        (after.0.as_str(), after.1.as_str()),
        ("ref", "furrow_customer_id_status_created_at"),
        "{after:?}"
    );
    eprintln!("before {before:?}, after {after:?}");
    // A full scan reads every row; the index reads the 4 matching entries (and one to see the end).
    assert!(before.2 >= 20_000 && after.2 <= 10, "{before:?} {after:?}");
    // Same answer, and the advice is not repeated once the index exists.
    assert_eq!(mariadb_in(listen.port(), "shop", SLOW), expected);
    let again = redis_cli(admin.port(), &["INDEX", "ADVICE", "10"]);
    assert!(advice_line(&again, "shop.orders").is_none(), "{again}");
    assert!(!again.contains("ADD INDEX"), "{again}");
}
