//! `furrow sandbox`: starts real local backends with the test kit — 3 Redis servers, a MariaDB primary
//! with 2 replicas (real GTID replication) and 2 MariaDB shard servers — writes a config for them, runs
//! the proxies in front, prints how to connect, and removes everything on Ctrl-C.

use std::fmt::Write as _;
use std::process::ExitCode;

use testkit::{MariaDb, MariaDbReplicaSet, RedisServer};

/// The sandbox's proxy user and password (printed, and stored only as hashes in the config).
pub const SANDBOX_USER: &str = "app";
/// Password of [`SANDBOX_USER`].
pub const SANDBOX_PASSWORD: &str = "app-secret";

/// `furrow sandbox` options.
#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// Proxy ports: Redis at BASE, MySQL at BASE+1, admin at BASE+2, metrics at BASE+3, the sharded
    /// MySQL database at BASE+4 (default: free ports chosen by the system).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Once everything is ready, print one JSON line with every endpoint (for scripts), nothing else
    /// on stdout.
    #[arg(long)]
    pub json: bool,
    /// Data-path executors.
    #[arg(long, default_value_t = 1)]
    pub executors: usize,
}

struct Backends {
    redis: Vec<RedisServer>,
    replicas: MariaDbReplicaSet,
    shards: Vec<MariaDb>,
}

fn start_backends() -> testkit::Result<Backends> {
    let redis = (0..3)
        .map(|_| RedisServer::start())
        .collect::<testkit::Result<Vec<_>>>()?;
    let replicas = MariaDbReplicaSet::start(2)?;
    let shards = (0..2)
        .map(|_| MariaDb::start())
        .collect::<testkit::Result<Vec<_>>>()?;
    // Two schemas per shard server: four shards of the sharded `app` database.
    shards[0].sql("CREATE DATABASE app_0; CREATE DATABASE app_1")?;
    shards[1].sql("CREATE DATABASE app_2; CREATE DATABASE app_3")?;
    Ok(Backends {
        redis,
        replicas,
        shards,
    })
}

fn config_text(b: &Backends, base: Option<u16>) -> String {
    let port = |off: u16| base.map_or(0, |p| p + off);
    let (native, sha) = crate::password_hashes(SANDBOX_PASSWORD);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `furrow sandbox`; every backend below is a real local server."
    );
    let _ = writeln!(
        s,
        "[proxy]\nadmin = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\n",
        port(2),
        port(3)
    );
    let _ = writeln!(
        s,
        "[[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"\ngroup = \"cache\"\n\
         # A sandbox is for trying things: admin commands (FLUSHALL, CONFIG SET) are allowed here.\n\
         allow_admin_commands = true\n",
        port(0)
    );
    let _ = writeln!(
        s,
        "[[listeners]]\nname = \"db\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{}\"\ngroup = \"main\"\n",
        port(1)
    );
    let _ = writeln!(
        s,
        "[redis_groups.cache]\ndistribution = \"ketama\"\nhash = \"fnv1a_64\"\nhash_tag = \"{{}}\"\nservers = ["
    );
    for (i, r) in b.redis.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {{ name = \"redis{}\", address = \"{}\" }},",
            i + 1,
            r.addr()
        );
    }
    let _ = writeln!(s, "]\n");
    let _ = writeln!(
        s,
        "[mysql_groups.main]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"primary\", address = \"{}\" }}\nreplicas = [",
        testkit::APP_USER,
        testkit::APP_PASSWORD,
        b.replicas.primary().addr()
    );
    for (i, r) in b.replicas.replicas().iter().enumerate() {
        let _ = writeln!(
            s,
            "  {{ name = \"replica{}\", address = \"{}\" }},",
            i + 1,
            r.addr()
        );
    }
    let _ = writeln!(s, "]\nmax_replica_lag_ms = 5000\n");
    let _ = writeln!(
        s,
        "# A sharded logical database `app` over 4 shards (2 servers x 2 schemas): `orders` is split by\n\
         # user_id into orders_0..orders_7; `countries` is copied to every shard.\n\
         [[listeners]]\nname = \"sharded\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{}\"\ngroup = \"shard1\"\n",
        port(4)
    );
    for (i, sh) in b.shards.iter().enumerate() {
        let _ = writeln!(
            s,
            "[mysql_groups.shard{n}]\nuser = \"{}\"\npassword = \"{}\"\nprimary = {{ name = \"shard{n}\", address = \"{}\" }}\n",
            testkit::APP_USER,
            testkit::APP_PASSWORD,
            sh.addr(),
            n = i + 1
        );
    }
    let _ = writeln!(
        s,
        "[sharding.app]\nlistener = \"sharded\"\nshards = [\n  \
         {{ name = \"s0\", group = \"shard1\", schema = \"app_0\" }},\n  \
         {{ name = \"s1\", group = \"shard1\", schema = \"app_1\" }},\n  \
         {{ name = \"s2\", group = \"shard2\", schema = \"app_2\" }},\n  \
         {{ name = \"s3\", group = \"shard2\", schema = \"app_3\" }},\n]\nbroadcast = [\"countries\"]\n\n\
         [[sharding.app.tables]]\nname = \"orders\"\nkey = \"user_id\"\nalgorithm = \"hash\"\nphysical = \"orders_{{0..7}}\"\nauto_id = \"id\"\n"
    );
    let _ = writeln!(
        s,
        "[users.{SANDBOX_USER}]\n# password \"{SANDBOX_PASSWORD}\"; the Redis listener stays open for trying it out\npassword_native = \"{native}\"\npassword_sha256 = \"{sha}\"\nlisteners = [\"db\", \"sharded\"]"
    );
    s
}

/// Runs the sandbox until Ctrl-C.
pub fn run(args: SandboxArgs) -> ExitCode {
    if !args.json {
        eprintln!(
            "starting 3 redis-server, a MariaDB primary + 2 replicas and 2 MariaDB shard servers ..."
        );
    }
    let backends = match start_backends() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("furrow sandbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = match tempfile::Builder::new().prefix("furrow-sandbox-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("furrow sandbox: cannot create a temp dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = dir.path().join("furrow.toml");
    let text = config_text(&backends, args.base_port);
    if let Err(e) = std::fs::write(&path, &text) {
        eprintln!("furrow sandbox: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let config = match router::config::parse(&path.display().to_string(), &text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("furrow sandbox: generated config is invalid (a bug):\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match crate::proxy::start(
        config,
        crate::proxy::ConfigSource::File(path.clone()),
        Some(args.executors),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("furrow sandbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr_of = |name: &str| {
        running
            .control
            .bound
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.to_string())
            .unwrap_or_default()
    };
    let (redis_addr, mysql_addr, sharded_addr) =
        (addr_of("cache"), addr_of("db"), addr_of("sharded"));
    let admin = running
        .admin_addr
        .map(|a| a.to_string())
        .unwrap_or_default();
    let metrics = running
        .metrics_addr
        .map(|a| a.to_string())
        .unwrap_or_default();
    if args.json {
        let mut servers = Vec::new();
        for (i, r) in backends.redis.iter().enumerate() {
            servers.push(serde_json::json!({"name": format!("redis{}", i + 1), "kind": "redis", "role": "shard", "address": r.addr().to_string()}));
        }
        servers.push(serde_json::json!({"name": "primary", "kind": "mariadb", "role": "primary", "address": backends.replicas.primary().addr().to_string()}));
        for (i, r) in backends.replicas.replicas().iter().enumerate() {
            servers.push(serde_json::json!({"name": format!("replica{}", i + 1), "kind": "mariadb", "role": "replica", "address": r.addr().to_string()}));
        }
        for (i, r) in backends.shards.iter().enumerate() {
            servers.push(serde_json::json!({"name": format!("shard{}", i + 1), "kind": "mariadb", "role": "shard", "address": r.addr().to_string()}));
        }
        let line = serde_json::json!({
            "redis": redis_addr,
            "mysql": mysql_addr,
            "mysql_sharded": sharded_addr,
            "admin": admin,
            "metrics": metrics,
            "config": path.display().to_string(),
            "user": SANDBOX_USER,
            "password": SANDBOX_PASSWORD,
            "backend_user": testkit::APP_USER,
            "backend_password": testkit::APP_PASSWORD,
            "backend_root_password": testkit::ROOT_PASSWORD,
            "backends": servers,
        });
        println!("{line}");
    } else {
        let (rh, rp) = redis_addr.rsplit_once(':').unwrap_or(("127.0.0.1", ""));
        let (mh, mp) = mysql_addr.rsplit_once(':').unwrap_or(("127.0.0.1", ""));
        let (ah, ap) = admin.rsplit_once(':').unwrap_or(("127.0.0.1", ""));
        println!("Furrow sandbox is ready. Config: {}", path.display());
        println!();
        println!("  Redis proxy:   redis-cli -h {rh} -p {rp}");
        println!("  MySQL proxy:   mariadb -h {mh} -P {mp} -u {SANDBOX_USER} -p{SANDBOX_PASSWORD}");
        println!(
            "  Admin port:    redis-cli -h {ah} -p {ap} INFO     (or: echo 'SHOW BACKENDS' | nc {ah} {ap})"
        );
        println!("  Metrics:       curl http://{metrics}/metrics");
        println!();
        for (i, r) in backends.redis.iter().enumerate() {
            println!("  redis{}        {}", i + 1, r.addr());
        }
        println!("  primary       {}", backends.replicas.primary().addr());
        for (i, r) in backends.replicas.replicas().iter().enumerate() {
            println!("  replica{}      {}", i + 1, r.addr());
        }
        for (i, r) in backends.shards.iter().enumerate() {
            println!("  shard{}        {}", i + 1, r.addr());
        }
        println!();
        println!("Press Ctrl-C to stop; every server and file is removed.");
    }
    let code = running.wait();
    drop(backends);
    drop(dir);
    if !args.json {
        eprintln!("sandbox stopped and cleaned up");
    }
    code
}
