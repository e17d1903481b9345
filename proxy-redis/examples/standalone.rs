//! Runs the Redis proxy alone from a config file, for manual checks and benchmarks:
//! `cargo run --release -p proxy-redis --example standalone -- furrow.toml [executors]`.

use std::sync::{Arc, Mutex};

use runtime::{BackendRegistry, Executors, ListenerCtx, Shared, SnapshotHub, StatsRegistry};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: standalone CONFIG.toml [EXECUTORS]");
        std::process::exit(2);
    };
    let config = match router::config::load(std::path::Path::new(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let cores: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .or(config.proxy.executors)
        .unwrap_or(1);
    let Some(listener) = config.listeners.first().cloned() else {
        eprintln!("no listener in the config");
        std::process::exit(1);
    };
    let backends = Arc::new(BackendRegistry::new(&config));
    let hub = SnapshotHub::new(config, path);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let shared = Shared {
        logins: Default::default(),
        registries: Default::default(),
        snapshots: hub,
        stats: Arc::new(StatsRegistry::default()),
        backends,
        shutdown: rx,
    };
    let sockets: Vec<Option<std::net::TcpListener>> = (0..cores)
        .map(|_| match runtime::bind_reuseport(listener.address, 1024) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("cannot bind {}: {e}", listener.address);
                None
            }
        })
        .collect();
    let sockets = Arc::new(Mutex::new(sockets));
    let name = listener.name.clone();
    let addr = listener.address;
    eprintln!("proxy listening on {addr} with {cores} executor(s)");
    let ex = Executors::start(cores, "redis", move |core| {
        let socket = sockets
            .lock()
            .ok()
            .and_then(|mut s| s.get_mut(core).and_then(Option::take));
        let shared = shared.clone();
        let name = name.clone();
        async move {
            let Some(socket) = socket else { return };
            let Ok(listener) = tokio::net::TcpListener::from_std(socket) else {
                return;
            };
            let stats = shared.stats.register(&name, "redis", &addr.to_string());
            proxy_redis::serve(ListenerCtx {
                name,
                core,
                listener,
                stats,
                shared,
            })
            .await;
        }
    });
    match ex {
        Ok(ex) => {
            let panicked = ex.join();
            eprintln!("executors ended ({panicked} panicked)");
        }
        Err(e) => eprintln!("cannot start executors: {e}"),
    }
}
