//! The sharded setup shared by the sharding tests: two MariaDB servers with two schemas each
//! (shards `s0`/`s1` on server a, `s2`/`s3` on server b), the proxy in-process with listener `db`
//! over groups `shard_a`/`shard_b` and the sharding `app`. Included by the test files that need it
//! (`#[path = "common/shard.rs"] mod shard;` next to `mod common;`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Output};

use testkit::{APP_PASSWORD, APP_USER, MariaDb, MariaDbConfig};

use crate::common::{APP_SECRET, Proxy, python_interpreter, user_block};

/// What the sharded config holds beyond the listener, the two groups and the 4 shards: raw TOML,
/// each piece written where its section lets it add keys or tables.
pub struct Layout {
    /// After the keys of group `shard_a` (the listener's group): more keys, or its rules.
    pub group_a: String,
    /// `connect_timeout_ms` of group `shard_b`.
    pub b_connect_timeout_ms: u64,
    /// After the keys of group `shard_b`.
    pub group_b: String,
    /// After `shards` in `[sharding.app]`: broadcast tables, limits, more table rules.
    pub sharding: String,
    /// The `[[sharding.app.tables]]` rules.
    pub tables: String,
    /// Whether server a also holds an empty schema `ref` (the plain reference of differential
    /// tests).
    pub reference: bool,
}

/// The proxy config for the servers at `a` and `b`, listening on `port`.
pub fn config(port: u16, a: SocketAddr, b: SocketAddr, layout: &Layout) -> String {
    let Layout {
        group_a,
        b_connect_timeout_ms,
        group_b,
        sharding,
        tables,
        reference: _,
    } = layout;
    let mut s = format!(
        "[proxy]\nexecutors = 1\nshutdown_grace_ms = 2000\n\n\
         [[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{port}\"\ngroup = \"shard_a\"\n\n\
         [mysql_groups.shard_a]\nuser = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n\
         primary = {{ name = \"a\", address = \"{a}\" }}\npool_max = 16\nconnect_timeout_ms = 2000\n{group_a}\n\n\
         [mysql_groups.shard_b]\nuser = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n\
         primary = {{ name = \"b\", address = \"{b}\" }}\npool_max = 16\n\
         connect_timeout_ms = {b_connect_timeout_ms}\n{group_b}\n\n\
         [sharding.app]\nlistener = \"db\"\n\
         shards = [\n  {{ name = \"s0\", group = \"shard_a\", schema = \"app_0\" }},\n  \
         {{ name = \"s1\", group = \"shard_a\", schema = \"app_1\" }},\n  \
         {{ name = \"s2\", group = \"shard_b\", schema = \"app_2\" }},\n  \
         {{ name = \"s3\", group = \"shard_b\", schema = \"app_3\" }},\n]\n\
         {sharding}\n\n{tables}"
    );
    s.push_str(&user_block("app", APP_SECRET, ""));
    s.push_str(&user_block("narrow", APP_SECRET, "schemas = [\"app\"]"));
    s
}

/// The two servers (with their shard schemas) and the proxy over them.
pub struct Setup {
    pub servers: Vec<MariaDb>,
    pub proxy: Proxy,
}

impl Setup {
    /// Starts the servers, creates the shard schemas (and `ref` where `layout` asks), and starts
    /// the proxy with [`config`].
    pub fn with(layout: Layout) -> Setup {
        let servers = MariaDb::start_many(2, MariaDbConfig::new()).expect("two servers");
        let reference = if layout.reference {
            "; CREATE DATABASE ref"
        } else {
            ""
        };
        servers[0]
            .sql(&format!(
                "CREATE DATABASE app_0; CREATE DATABASE app_1{reference}"
            ))
            .expect("schemas on a");
        servers[1]
            .sql("CREATE DATABASE app_2; CREATE DATABASE app_3")
            .expect("schemas on b");
        let (a, b) = (servers[0].addr(), servers[1].addr());
        let proxy = Proxy::start(move |port| config(port, a, b, &layout));
        Setup { servers, proxy }
    }

    /// The server and schema of shard `s`.
    pub fn shard(&self, s: usize) -> (&MariaDb, String) {
        (&self.servers[s / 2], format!("app_{s}"))
    }

    /// Runs `q` through the proxy as `app`; panics on an error.
    pub fn sql(&self, q: &str) -> Vec<Vec<Option<String>>> {
        self.proxy
            .sql("app", q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    /// Runs `q` through the proxy as `app`, expecting an error; returns its text.
    pub fn sql_err(&self, q: &str) -> String {
        match self.proxy.sql("app", q) {
            Ok(rows) => panic!("{q}: expected an error, got {rows:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The rows of `table` on shard `shard` matching `filter` (read on its server directly).
    pub fn count_on(&self, shard: usize, table: &str, filter: &str) -> u64 {
        let (server, schema) = self.shard(shard);
        server
            .sql_value(&format!("SELECT COUNT(*) FROM {schema}.{table} {filter}"))
            .expect("count")
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    }

    /// `python3 -c script` with the proxy's (`PORT`, `PASSWORD`) and the reference server's
    /// (`REF_PORT`, `REF_USER`, `REF_PASSWORD`: server a) addresses and credentials in its
    /// environment.
    pub fn python_against_reference(&self, script: &str) -> Command {
        let mut c = Command::new(python_interpreter());
        c.arg("-c")
            .arg(script)
            .env("PORT", self.proxy.addr.port().to_string())
            .env("PASSWORD", APP_SECRET)
            .env("REF_PORT", self.servers[0].port().to_string())
            .env("REF_USER", APP_USER)
            .env("REF_PASSWORD", APP_PASSWORD);
        c
    }
}

/// The `[proxy, reference]` pairs a runner printed, one JSON line per statement, for `statements`
/// statements; panics if the runner failed or printed another count.
pub fn result_pairs(
    out: &Output,
    statements: usize,
) -> Vec<(serde_json::Value, serde_json::Value)> {
    assert!(
        out.status.success(),
        "runner failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<(serde_json::Value, serde_json::Value)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (v[0].clone(), v[1].clone())
        })
        .collect();
    assert_eq!(lines.len(), statements, "one result per statement");
    lines
}
