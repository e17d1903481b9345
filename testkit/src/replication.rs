//! A MariaDB primary with GTID replicas, and helpers to wait for, delay and break replication.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::mariadb::{MariaDb, MariaDbConfig};

/// A primary and `n` replicas replicating with `MASTER_USE_GTID=slave_pos`.
#[derive(Debug)]
pub struct MariaDbReplicaSet {
    primary: MariaDb,
    replicas: Vec<MariaDb>,
}

impl MariaDbReplicaSet {
    /// Starts a primary and `replicas` replicas (in parallel) and waits until replication runs.
    pub fn start(replicas: usize) -> Result<Self> {
        Self::start_with(replicas, MariaDbConfig::new())
    }

    /// Like [`Self::start`], with extra options for every server.
    pub fn start_with(replicas: usize, config: MariaDbConfig) -> Result<Self> {
        let mut servers = MariaDb::start_many(replicas + 1, config)?;
        let primary = servers.remove(0);
        let set = MariaDbReplicaSet {
            primary,
            replicas: servers,
        };
        for replica in &set.replicas {
            replica.replicate_from(&set.primary)?;
        }
        for i in 0..set.replicas.len() {
            set.wait_replica_running(i, Duration::from_secs(30))?;
        }
        Ok(set)
    }

    /// The primary.
    pub fn primary(&self) -> &MariaDb {
        &self.primary
    }

    /// The primary, mutably (to stop, kill, pause or restart it).
    pub fn primary_mut(&mut self) -> &mut MariaDb {
        &mut self.primary
    }

    /// All replicas.
    pub fn replicas(&self) -> &[MariaDb] {
        &self.replicas
    }

    /// Replica `i`; panics when out of range.
    pub fn replica(&self, i: usize) -> &MariaDb {
        &self.replicas[i]
    }

    /// Replica `i`, mutably; panics when out of range.
    pub fn replica_mut(&mut self, i: usize) -> &mut MariaDb {
        &mut self.replicas[i]
    }

    /// Waits until both replication threads of replica `i` run (the IO thread connected).
    pub fn wait_replica_running(&self, i: usize, timeout: Duration) -> Result<()> {
        let replica = &self.replicas[i];
        let start = Instant::now();
        loop {
            let status = slave_status(replica)?;
            let io = status.get("Slave_IO_Running").map(String::as_str);
            let sql = status.get("Slave_SQL_Running").map(String::as_str);
            if io == Some("Yes") && sql == Some("Yes") {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "replication threads on {} (IO={io:?}, SQL={sql:?}, last IO error: {:?}, last SQL error: {:?})",
                        replica.addr(),
                        status.get("Last_IO_Error"),
                        status.get("Last_SQL_Error"),
                    ),
                    waited: timeout,
                    log: replica.log_path().to_path_buf(),
                    tail: crate::process::log_tail(replica.log_path(), 20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The primary's `@@gtid_binlog_pos` (what replicas must reach).
    pub fn primary_gtid(&self) -> Result<String> {
        Ok(self
            .primary
            .sql_value("SELECT @@gtid_binlog_pos")?
            .unwrap_or_default())
    }

    /// True when replica `i` has applied everything the primary has binlogged so far.
    pub fn is_caught_up(&self, i: usize) -> Result<bool> {
        let target = self.primary_gtid()?;
        if target.is_empty() {
            return Ok(true);
        }
        let applied = self.replicas[i]
            .sql_value(&format!("SELECT MASTER_GTID_WAIT('{target}', 0)"))?
            .unwrap_or_default();
        Ok(applied == "0")
    }

    /// Waits until replica `i` has applied the primary's current `@@gtid_binlog_pos`.
    pub fn wait_replica_caught_up(&self, i: usize, timeout: Duration) -> Result<()> {
        let target = self.primary_gtid()?;
        let replica = &self.replicas[i];
        if target.is_empty() {
            return Ok(());
        }
        let secs = timeout.as_secs_f64();
        let result = replica
            .sql_value(&format!("SELECT MASTER_GTID_WAIT('{target}', {secs})"))?
            .unwrap_or_default();
        if result == "0" {
            return Ok(());
        }
        let status = slave_status(replica).unwrap_or_default();
        Err(Error::Timeout {
            what: format!(
                "replica {} to reach primary GTID {target} (gtid_slave_pos {:?}, SQL running {:?}, last error {:?})",
                replica.addr(),
                status.get("Gtid_Slave_Pos"),
                status.get("Slave_SQL_Running"),
                status.get("Last_Error"),
            ),
            waited: timeout,
            log: replica.log_path().to_path_buf(),
            tail: crate::process::log_tail(replica.log_path(), 20),
        })
    }

    /// Waits until every replica that is not stopped, killed or paused has caught up with the primary.
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for (i, replica) in self.replicas.iter().enumerate() {
            if !replica.is_started() || replica.is_paused() {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_replica_caught_up(i, left.max(Duration::from_millis(100)))?;
        }
        Ok(())
    }

    /// Injects lag: stops replica `i`'s SQL thread, so it keeps receiving but stops applying.
    pub fn stop_replica_sql(&self, i: usize) -> Result<()> {
        self.replicas[i].sql("STOP SLAVE SQL_THREAD")?;
        Ok(())
    }

    /// Ends injected lag: restarts replica `i`'s SQL thread.
    pub fn start_replica_sql(&self, i: usize) -> Result<()> {
        self.replicas[i].sql("START SLAVE SQL_THREAD")?;
        Ok(())
    }

    /// Makes replica `i` apply events `seconds` after they were written (`MASTER_DELAY`); 0 clears it.
    pub fn set_replica_delay(&self, i: usize, seconds: u32) -> Result<()> {
        self.replicas[i].sql(&format!(
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY={seconds}; START SLAVE;"
        ))?;
        Ok(())
    }

    /// `Seconds_Behind_Master` of replica `i` (`None` when replication is not running).
    pub fn seconds_behind(&self, i: usize) -> Result<Option<u64>> {
        Ok(slave_status(&self.replicas[i])?
            .get("Seconds_Behind_Master")
            .and_then(|v| v.parse().ok()))
    }
}

/// `SHOW SLAVE STATUS` as a name → value map (empty when the server is no replica).
fn slave_status(server: &MariaDb) -> Result<std::collections::HashMap<String, String>> {
    let (names, rows) = server.sql_with_columns("SHOW SLAVE STATUS")?;
    let values = rows.into_iter().next().unwrap_or_default();
    Ok(names
        .into_iter()
        .zip(values)
        .map(|(name, value)| (name, value.unwrap_or_default()))
        .collect())
}
