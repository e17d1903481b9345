//! Furrow test kit: real redis-server and mariadbd instances (replication, shards, cluster) on free loopback ports.
//!
//! Used by integration tests (cargo-nextest runs every test as its own process, many in parallel),
//! by the benchmark harness and by `furrow sandbox`. Everything is synchronous (`std::process`,
//! `std::net`), so any test, async or not, can use it.
//!
//! # Servers
//! - [`RedisServer::start`] / [`RedisServer::start_with`]`(`[`RedisConfig`]`)`: a `redis-server`
//!   (password, `cluster-enabled`, `replicaof`, raw config lines). [`RedisServer::cmd`] runs one
//!   command over a tiny built-in RESP client and returns the reply as text.
//! - [`RedisCluster::start`]`(masters, replicas_per_master)`: a real Redis Cluster created with
//!   `redis-cli --cluster create ... --cluster-yes`, returned once every node reports
//!   `cluster_state:ok`. [`RedisCluster::cli`] runs `redis-cli -c`.
//! - [`MariaDb::start`] / [`MariaDb::start_with`]`(`[`MariaDbConfig`]`)`: a `mariadbd` copied from a
//!   template datadir built once per server version per machine ([`template_datadir`]), with
//!   `root`/[`ROOT_PASSWORD`] and [`APP_USER`]/[`APP_PASSWORD`] (all privileges), binlog, GTID
//!   strict mode, `--skip-name-resolve`, a 32 MB buffer pool and `--server-id` = port by default.
//!   [`MariaDb::sql`] runs the `mariadb` CLI (batch mode, XML output) and returns rows, `None` being
//!   exactly SQL NULL; [`sql_at`] does the same against any address (e.g. a proxy under test).
//! - [`MariaDbReplicaSet::start`]`(n)`: a primary with `n` replicas using real GTID replication
//!   (`MASTER_USE_GTID=slave_pos`); wait for catch-up with [`MariaDbReplicaSet::wait_caught_up`],
//!   inject lag with [`MariaDbReplicaSet::stop_replica_sql`] or
//!   [`MariaDbReplicaSet::set_replica_delay`].
//!
//! Every server has `stop` (SIGTERM, clean), `kill` (SIGKILL), `pause`/`resume` (SIGSTOP/SIGCONT)
//! and `restart` (same port, same data directory).
//!
//! # TLS
//! [`TestCerts::get`] makes a CA and a server certificate for localhost/127.0.0.1/::1 once per
//! process with the `openssl` CLI (Debian: `apt-get install -y openssl`) in a kit instance dir.
//!
//! # Python clients
//! [`python()`] returns an interpreter that imports the pinned clients of `.ci/requirements.txt`
//! (`redis`, `PyMySQL`, `mysql-connector-python`): a venv under [`shared_dir`] keyed by a hash of
//! that file, created with `python3 -m venv` and `pip install -r` by the first test that needs it
//! (under an `flock`, so parallel test processes build it once) and reused afterwards. Tests run
//! their Python scripts with it instead of the system `python3`.
//!
//! # Memory
//! [`rss`]: this process's resident set (`/proc/self/status`), raising the open-files limit, and
//! [`rss::expect_given_back`], the check that what idle connections took goes back to the OS.
//!
//! # Isolation and teardown
//! - Ports come from [`reserve_port`]: an `flock`ed lock file per port in a directory shared by all
//!   processes ([`shared_dir`], `$FURROW_TESTKIT_DIR` or `/tmp/furrow-testkit`), held as long as the
//!   server lives; a start that still hits "Address already in use" is retried on another port.
//!   Servers bind 127.0.0.1 only. Tests can reserve ports for their own listeners the same way.
//! - `Drop` SIGKILLs and reaps the server and removes its directory. Servers are forked with
//!   `PR_SET_PDEATHSIG(SIGKILL)` from a process-lifetime thread, so they also die when the test
//!   process dies or aborts; directories left by such processes are swept by the next process.
//! - Every wait is bounded and fails with an [`Error`] naming the server and the tail of its log.
//!
//! # Needed packages (Debian/Ubuntu)
//! `apt-get install -y redis-server redis-tools mariadb-server mariadb-client python3 python3-venv`;
//! a missing binary fails with [`Error::MissingBinary`] (a missing `venv` module with
//! [`Error::MissingPackage`]) giving the exact command.
//!
//! ```no_run
//! let set = testkit::MariaDbReplicaSet::start(2)?;
//! set.primary().sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")?;
//! set.primary().sql("INSERT INTO app.t VALUES (1)")?;
//! set.wait_caught_up(std::time::Duration::from_secs(10))?;
//! assert_eq!(set.replica(0).sql_value("SELECT COUNT(*) FROM app.t")?, Some("1".into()));
//! # Ok::<(), testkit::Error>(())
//! ```

mod binary;
mod cluster;
mod error;
mod lock;
mod mariadb;
mod port;
mod process;
mod python;
mod redis;
mod replication;
mod resp;
pub mod rss;
mod tls;

pub use binary::find_binary;
pub use cluster::RedisCluster;
pub use error::{Error, Result};
pub use mariadb::{
    APP_PASSWORD, APP_USER, MariaDb, MariaDbConfig, ROOT_PASSWORD, Rows, sql_at, template_datadir,
};
pub use port::{PortLease, reserve_port, shared_dir};
pub use python::python;
pub use redis::{RedisConfig, RedisServer};
pub use replication::MariaDbReplicaSet;
pub use tls::TestCerts;
