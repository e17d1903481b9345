//! A real Redis Cluster built with `redis-cli --cluster create`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::binary::find_binary;
use crate::error::{Error, Result};
use crate::process::{run_client, start_parallel};
use crate::redis::{RedisConfig, RedisServer};

/// How long to wait for every node to report `cluster_state:ok`.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Redis Cluster: `masters` primaries sharing the 16384 slots, each with replicas.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
}

impl RedisCluster {
    /// Starts `masters` (at least 3) primaries with `replicas_per_master` replicas each.
    pub fn start(masters: usize, replicas_per_master: usize) -> Result<Self> {
        Self::start_with(masters, replicas_per_master, RedisConfig::new())
    }

    /// Like [`Self::start`], with extra node options (password, config lines); cluster mode is forced on.
    /// With [`RedisConfig::tls`] the cluster is created over the nodes' TLS ports (add the config
    /// line `tls-cluster yes` so that the bus and the nodes' announced ports are TLS too).
    pub fn start_with(
        masters: usize,
        replicas_per_master: usize,
        config: RedisConfig,
    ) -> Result<Self> {
        if masters < 3 {
            return Err(Error::Server {
                server: "redis cluster".into(),
                message: format!(
                    "redis-cli --cluster create needs at least 3 masters, got {masters}"
                ),
            });
        }
        let cli = find_binary("redis-cli")?;
        let total = masters * (1 + replicas_per_master);
        let config = config.cluster_enabled(true);
        let nodes = start_parallel(total, "redis cluster node", || {
            RedisServer::start_with(config.clone())
        })?;
        let cluster = RedisCluster { nodes, masters };

        let mut command = Command::new(&cli);
        // Nodes with TLS (`tls-cluster yes` in their config) meet over their TLS ports.
        let tls = cluster.nodes.iter().all(|n| n.tls_addr().is_some());
        if tls {
            command
                .arg("--tls")
                .arg("--cacert")
                .arg(&crate::TestCerts::get()?.ca);
        }
        command.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            let addr = if tls { node.tls_addr() } else { None };
            command.arg(addr.unwrap_or_else(|| node.addr()).to_string());
        }
        command
            .arg("--cluster-replicas")
            .arg(replicas_per_master.to_string())
            .arg("--cluster-yes");
        if let Some(password) = config_password(&cluster.nodes) {
            command.arg("-a").arg(password).arg("--no-auth-warning");
        }
        let shown = format!(
            "redis-cli --cluster create {} --cluster-replicas {replicas_per_master} --cluster-yes",
            cluster
                .addrs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        run_client(command, &shown, CLUSTER_READY_TIMEOUT)?;
        cluster.wait_ready(CLUSTER_READY_TIMEOUT)?;
        Ok(cluster)
    }

    /// Waits until every node reports `cluster_state:ok` and knows every other node.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let total = self.nodes.len();
        loop {
            let mut pending = None;
            for node in &self.nodes {
                let info = node.try_cmd(&["CLUSTER", "INFO"]).unwrap_or_default();
                let ok = info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{total}"));
                if !ok {
                    pending = Some(node);
                    break;
                }
            }
            let Some(node) = pending else {
                return Ok(());
            };
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("cluster_state:ok on {}", node.addr()),
                    waited: timeout,
                    log: node.log_path().to_path_buf(),
                    tail: crate::process::log_tail(node.log_path(), 30),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All nodes, masters first (as passed to `--cluster create`, which assigns masters in order).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Mutable access to the nodes (to stop, kill or pause one).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// How many masters the cluster was created with.
    pub fn masters(&self) -> usize {
        self.masters
    }

    /// Client addresses of all nodes.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// Runs `redis-cli -c` (cluster mode: follows MOVED/ASK) against the first node; returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let node = &self.nodes[0]; // ok: a cluster has at least 3 nodes
        let mut command = Command::new(find_binary("redis-cli")?);
        command
            .arg("-c")
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(node.port().to_string());
        if let Some(password) = node.password() {
            command.arg("-a").arg(password).arg("--no-auth-warning");
        }
        command.args(args);
        let shown = format!("redis-cli -c -p {} {}", node.port(), args.join(" "));
        let out = run_client(command, &shown, Duration::from_secs(30))?;
        Ok(out.stdout.trim_end_matches('\n').to_string())
    }
}

/// The shared password of the nodes, if any.
fn config_password(nodes: &[RedisServer]) -> Option<String> {
    nodes.first().and_then(|n| n.password().map(str::to_string))
}
