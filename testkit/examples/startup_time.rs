//! Measures how long a MariaDB primary + 2 replicas and a 3x1 Redis Cluster take to start.
//!
//! Run with a fresh `FURROW_TESTKIT_DIR` to include building the MariaDB template (cold).

use std::time::Instant;

fn main() -> Result<(), testkit::Error> {
    let t = Instant::now();
    testkit::template_datadir()?;
    println!("mariadb template ready: {:?}", t.elapsed());
    for round in 1..=2 {
        let t = Instant::now();
        let set = testkit::MariaDbReplicaSet::start(2)?;
        println!(
            "round {round}: primary + 2 replicas replicating: {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        drop(set);
        println!("round {round}: teardown: {:?}", t.elapsed());
    }
    let t = Instant::now();
    let cluster = testkit::RedisCluster::start(3, 1)?;
    println!("redis cluster 3 masters x 1 replica: {:?}", t.elapsed());
    drop(cluster);
    Ok(())
}
