//! Runs the MySQL proxy alone from a config file, for manual checks and quick benchmarks:
//! `cargo run --release -p proxy-mysql --example mysql_standalone -- furrow.toml`
//! (every `kind = "mysql"` listener is served; stop with Ctrl-C or SIGTERM).

use std::sync::Arc;

use runtime::{BackendRegistry, Executors, ListenerCtx, Shared, SnapshotHub, StatsRegistry};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: mysql_standalone CONFIG.toml");
        std::process::exit(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let config = match router::config::parse(&path, &text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let cores = config.proxy.executors.unwrap_or(1);
    let hub = SnapshotHub::new(config.clone(), path);
    let stats = Arc::new(StatsRegistry::default());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let shared = Shared {
        logins: Default::default(),
        registries: Default::default(),
        snapshots: hub,
        stats: stats.clone(),
        backends: Arc::new(BackendRegistry::new(&config)),
        shutdown: rx,
    };
    let listeners: Vec<_> = config
        .listeners
        .iter()
        .filter(|l| l.kind == router::config::ListenerKind::Mysql)
        .map(|l| {
            (
                l.name.clone(),
                l.address,
                stats.register(&l.name, "mysql", &l.address.to_string()),
            )
        })
        .collect();
    let ex = Executors::start(cores, "mysql", move |core| {
        let shared = shared.clone();
        let listeners = listeners.clone();
        async move {
            let mut tasks = Vec::new();
            for (name, addr, st) in listeners {
                let Ok(std_l) = runtime::bind_reuseport(addr, 1024) else {
                    eprintln!("cannot bind {addr}");
                    return;
                };
                let Ok(listener) = tokio::net::TcpListener::from_std(std_l) else {
                    return;
                };
                let ctx = ListenerCtx {
                    name,
                    core,
                    listener,
                    stats: st,
                    shared: shared.clone(),
                };
                tasks.push(tokio::task::spawn_local(proxy_mysql::serve(ctx)));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    });
    match ex {
        Ok(ex) => {
            ex.join();
        }
        Err(e) => eprintln!("cannot start executors: {e}"),
    }
}
