//! `RESHARD PLAN` on the admin port of the `furrow` binary, with the real `mariadb` client in front
//! of a real MariaDB holding two shards: the dry run names where each old partition's rows go and
//! their sizes as the server reports them; unknown subcommands are refused clearly (the job itself:
//! `tests/reshard_job.rs`).

mod common;

use common::{FurrowProcess, mariadb, redis_cli};

#[test]
fn reshard_plan_dry_run_on_the_admin_port() {
    let db = testkit::MariaDb::start().expect("mariadb");
    db.sql("CREATE DATABASE app_0; CREATE DATABASE app_1")
        .expect("schemas");
    let (admin, metrics, listen) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let cfg = format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{}\"\ngroup = \"main\"\n\n\
         [mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"primary\", address = \"{}\" }}\n\n\
         [sharding.app]\nlistener = \"db\"\n\
         shards = [ {{ name = \"s0\", group = \"main\", schema = \"app_0\" }}, {{ name = \"s1\", group = \"main\", schema = \"app_1\" }} ]\n\n\
         [[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_{{0..3}}\"\n\n\
         [[sharding.app.tables]]\nname = \"orders_v2\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_v2_{{0..7}}\"\n\n\
         [users.app]\npassword_native = \"*6C7A370C07660BC788681B3238D93E08BD74303C\"\n",
        admin.port(),
        metrics.port(),
        listen.port(),
        testkit::APP_USER,
        testkit::APP_PASSWORD,
        db.addr(),
    );
    let _p = FurrowProcess::start(&cfg, admin.port());
    mariadb(
        listen.port(),
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id INT NOT NULL, note VARCHAR(40))",
    );
    mariadb(
        listen.port(),
        "CREATE TABLE orders_v2 (id BIGINT PRIMARY KEY, user_id INT NOT NULL, note VARCHAR(40))",
    );
    let values: Vec<String> = (1..=400)
        .map(|i| format!("({i}, {}, 'note {i}')", i * 5))
        .collect();
    mariadb(
        listen.port(),
        &format!(
            "INSERT INTO orders (id, user_id, note) VALUES {}",
            values.join(", ")
        ),
    );
    db.sql("ANALYZE TABLE app_0.orders_0, app_0.orders_1, app_1.orders_2, app_1.orders_3")
        .expect("analyze");

    let text = redis_cli(
        admin.port(),
        &["RESHARD", "PLAN", "app", "orders", "orders_v2"],
    );
    println!("{text}");
    assert!(
        text.contains("reshard plan for `orders`: 4 -> 8 partitions"),
        "{text}"
    );
    for (p, shard, to) in [
        (0, 0, "p0 s0:app_0.orders_v2_0, p4 s1:app_1.orders_v2_4"),
        (1, 0, "p1 s0:app_0.orders_v2_1, p5 s1:app_1.orders_v2_5"),
        (3, 1, "p3 s0:app_0.orders_v2_3, p7 s1:app_1.orders_v2_7"),
    ] {
        let line = text
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("p{p} s{shard}:app_{shard}.orders_{p} ~"))
            })
            .unwrap_or_else(|| panic!("no line for p{p}: {text}"));
        assert!(line.ends_with(&format!("-> {to}")), "{line}");
        // Sizes come from the server: 100 rows per partition (InnoDB's estimate after ANALYZE).
        let rows: u64 = line
            .split('~')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!((50..=200).contains(&rows), "{line}");
    }
    assert!(text.contains("the rate is an assumption"), "{text}");
    let rated = redis_cli(
        admin.port(),
        &[
            "RESHARD",
            "PLAN",
            "app",
            "orders",
            "orders_v2",
            "RATE",
            "1000",
        ],
    );
    assert!(
        rated.contains("at 1000 bytes/s") && !rated.contains("assumption"),
        "{rated}"
    );

    // Refusals: an unknown table, the old tables as the new layout, what is not built.
    let e = redis_cli(
        admin.port(),
        &["RESHARD", "PLAN", "app", "nope", "orders_v2"],
    );
    assert!(e.contains("no sharded table `nope`"), "{e}");
    let e = redis_cli(
        admin.port(),
        &["RESHARD", "PLAN", "app", "orders", "orders"],
    );
    assert!(e.contains("tables of its own"), "{e}");
    let e = redis_cli(admin.port(), &["RESHARD", "MOVE", "app"]);
    assert!(e.contains("unknown RESHARD subcommand `MOVE`"), "{e}");
    let e = redis_cli(admin.port(), &["RESHARD", "STATUS"]);
    assert!(e.contains("no reshard has run"), "{e}");
}
