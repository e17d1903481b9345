//! Real mariadbd instances: template copies, GTID replication, lag, kill and restart.

use std::time::{Duration, Instant};

use testkit::{APP_PASSWORD, APP_USER, MariaDb, MariaDbReplicaSet, sql_at};

#[test]
fn server_answers_sql_with_nulls_and_escapes() {
    let db = MariaDb::start().unwrap();
    let rows = db
        .sql("SELECT 1, NULL, 'NULL', CONCAT('a', CHAR(9), 'b', CHAR(10), '<&>\"'), ''")
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Some("1".to_string()),
            None,
            Some("NULL".to_string()),
            Some("a\tb\n<&>\"".to_string()),
            Some(String::new())
        ]]
    );
    let (names, rows) = db
        .sql_with_columns("SELECT 1 AS one, 'x' AS `a<b`")
        .unwrap();
    assert_eq!(names, ["one", "a<b"]);
    assert_eq!(
        rows,
        vec![vec![Some("1".to_string()), Some("x".to_string())]]
    );
    // The application user works over TCP with all privileges.
    let rows = sql_at(
        db.addr(),
        APP_USER,
        APP_PASSWORD,
        None,
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (7); SELECT id FROM app.t",
    )
    .unwrap();
    assert_eq!(rows, vec![vec![Some("7".to_string())]]);
    assert_eq!(
        db.sql_value("SELECT @@log_bin, @@gtid_strict_mode")
            .unwrap(),
        Some("1".into())
    );
    assert_eq!(
        db.sql_value("SELECT @@server_id").unwrap(),
        Some(db.server_id().to_string())
    );
    let err = db.sql("SELECT * FROM no_such_db.t").unwrap_err();
    assert!(err.to_string().contains("no_such_db"), "{err}");
}

#[test]
fn primary_and_two_replicas_replicate() {
    let started = Instant::now();
    let set = MariaDbReplicaSet::start(2).unwrap();
    eprintln!("primary + 2 replicas started in {:?}", started.elapsed());
    let p = set.primary();
    p.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .unwrap();
    p.sql("INSERT INTO app.t VALUES (1, 'hello'), (2, NULL)")
        .unwrap();
    set.wait_caught_up(Duration::from_secs(20)).unwrap();
    for replica in set.replicas() {
        assert_eq!(
            replica.sql("SELECT id, v FROM app.t ORDER BY id").unwrap(),
            vec![
                vec![Some("1".into()), Some("hello".into())],
                vec![Some("2".into()), None]
            ]
        );
        assert_ne!(replica.server_id(), set.primary().server_id());
    }
}

#[test]
fn lag_injection_and_recovery() {
    let set = MariaDbReplicaSet::start(2).unwrap();
    set.primary()
        .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .unwrap();
    set.wait_caught_up(Duration::from_secs(20)).unwrap();

    set.stop_replica_sql(0).unwrap();
    set.primary().sql("INSERT INTO app.t VALUES (1)").unwrap();
    set.wait_replica_caught_up(1, Duration::from_secs(20))
        .unwrap();
    assert!(!set.is_caught_up(0).unwrap());
    assert!(
        set.wait_replica_caught_up(0, Duration::from_millis(500))
            .is_err()
    );
    assert_eq!(
        set.replica(0)
            .sql_value("SELECT COUNT(*) FROM app.t")
            .unwrap(),
        Some("0".into())
    );
    assert_eq!(
        set.replica(1)
            .sql_value("SELECT COUNT(*) FROM app.t")
            .unwrap(),
        Some("1".into())
    );

    set.start_replica_sql(0).unwrap();
    set.wait_caught_up(Duration::from_secs(20)).unwrap();
    assert!(set.is_caught_up(0).unwrap());
    assert_eq!(
        set.replica(0)
            .sql_value("SELECT COUNT(*) FROM app.t")
            .unwrap(),
        Some("1".into())
    );

    // MASTER_DELAY: applied only after the delay.
    set.set_replica_delay(1, 2).unwrap();
    set.primary().sql("INSERT INTO app.t VALUES (2)").unwrap();
    let written = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!set.is_caught_up(1).unwrap());
    set.wait_replica_caught_up(1, Duration::from_secs(20))
        .unwrap();
    // The delay counts from the event's whole-second timestamp, so at least ~1 s of the 2 s is seen here.
    assert!(
        written.elapsed() >= Duration::from_millis(900),
        "applied after {:?} despite MASTER_DELAY=2",
        written.elapsed()
    );
    assert_eq!(
        set.replica(1)
            .sql_value("SELECT COUNT(*) FROM app.t")
            .unwrap(),
        Some("2".into())
    );
}

#[test]
fn kill_restart_and_pause() {
    let mut set = MariaDbReplicaSet::start(1).unwrap();
    set.primary()
        .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)")
        .unwrap();
    set.wait_caught_up(Duration::from_secs(20)).unwrap();

    // A crashed replica comes back on the same port and resumes replication.
    let port = set.replica(0).port();
    set.replica_mut(0).kill();
    assert!(!set.replica_mut(0).is_running());
    set.primary().sql("INSERT INTO app.t VALUES (2)").unwrap();
    set.replica_mut(0).restart().unwrap();
    assert_eq!(set.replica(0).port(), port);
    set.wait_replica_running(0, Duration::from_secs(20))
        .unwrap();
    set.wait_caught_up(Duration::from_secs(20)).unwrap();
    assert_eq!(
        set.replica(0)
            .sql_value("SELECT COUNT(*) FROM app.t")
            .unwrap(),
        Some("2".into())
    );

    // A cleanly stopped primary keeps its data and GTID position.
    let gtid = set.primary_gtid().unwrap();
    set.primary_mut().stop().unwrap();
    assert!(set.primary().sql("SELECT 1").is_err());
    set.primary_mut().restart().unwrap();
    assert_eq!(set.primary_gtid().unwrap(), gtid);
    set.primary().sql("INSERT INTO app.t VALUES (3)").unwrap();
    set.wait_replica_running(0, Duration::from_secs(30))
        .unwrap();
    set.wait_caught_up(Duration::from_secs(30)).unwrap();
    assert_eq!(
        set.replica(0)
            .sql_value("SELECT COUNT(*) FROM app.t")
            .unwrap(),
        Some("3".into())
    );

    // A paused server does not answer; after resume it does.
    let dir = set.primary().dir().to_path_buf();
    set.primary_mut().pause().unwrap();
    let addr = set.primary().addr();
    let probe = std::thread::spawn(move || {
        sql_at(addr, APP_USER, APP_PASSWORD, None, "SELECT 1").map(|_| Instant::now())
    });
    std::thread::sleep(Duration::from_millis(700));
    let resumed_at = Instant::now();
    set.primary_mut().resume().unwrap();
    let answered_at = probe.join().unwrap().unwrap();
    assert!(answered_at >= resumed_at, "a paused server must not answer");
    drop(set);
    assert!(!dir.exists(), "instance dir must be removed on drop");
}

#[test]
fn bad_option_fails_with_the_log_tail() {
    let err = MariaDb::start_with(testkit::MariaDbConfig::new().arg("--no-such-option=1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("exited unexpectedly"), "{err}");
    assert!(err.contains("mariadbd.log"), "{err}");
    assert!(err.contains("no-such-option"), "{err}");
}
