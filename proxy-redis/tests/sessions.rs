//! Session commands, users and permissions, RESP3, transactions, blocking commands and pub/sub.

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, config, redis_servers};

const USERS: &str = r#"
[users.app]
# password "app-secret"
password_sha256 = "07a99d33e023ea491bc3f7b999efcfb76c32ff9abe1cf29ff3c5ee8b85ea015d"
commands = ["+@all", "-flushall", "-@admin"]
keys = ["app:*"]

[users.reporting]
# password "report-secret"
password_sha256 = "24dad5785a77373f33eeb44289cdef2e252394ca4cfac4e71169b071d805f24f"
commands = ["-@all", "+@read", "+auth", "+ping"]
"#;

#[test]
fn auth_and_per_user_permissions() {
    let servers = redis_servers(2);
    let toml = config(&servers, "ketama", "") + USERS;
    let proxy = Proxy::start(&toml, 1);
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["GET", "app:1"]), "-NOAUTH Authentication required.");
    assert_eq!(
        c.cmd(&["AUTH", "app", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(c.cmd(&["AUTH", "app", "app-secret"]), "+OK");
    assert_eq!(c.cmd(&["SET", "app:1", "v"]), "+OK");
    assert_eq!(c.cmd(&["GET", "app:1"]), "v");
    let r = c.cmd(&["GET", "other"]);
    assert!(r.starts_with("-NOPERM") && r.contains("keys"), "{r}");
    let r = c.cmd(&["FLUSHALL"]);
    assert!(r.starts_with("-NOPERM") && r.contains("flushall"), "{r}");
    let r = c.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(r.starts_with("-NOPERM"), "{r}");
    let mut r2 = proxy.connect();
    assert_eq!(r2.cmd(&["AUTH", "reporting", "report-secret"]), "+OK");
    assert_eq!(r2.cmd(&["GET", "app:1"]), "v");
    let r = r2.cmd(&["SET", "app:1", "x"]);
    assert!(r.starts_with("-NOPERM"), "{r}");
    // HELLO with AUTH.
    let mut h = proxy.connect();
    let r = h.cmd(&["HELLO", "3", "AUTH", "app", "app-secret", "SETNAME", "h1"]);
    assert!(r.contains("proto, :3"), "{r}");
    assert_eq!(h.cmd(&["CLIENT", "GETNAME"]), "h1");
}

#[test]
fn resp3_clients_get_resp3_replies() {
    let servers = redis_servers(2);
    let proxy = Proxy::start(&config(&servers, "modula", ""), 1);
    let mut c = proxy.connect();
    c.send(&["HELLO", "3"]);
    c.send(&["PING"]);
    let hello = c.read();
    assert!(hello.contains("proto, :3"), "{hello}");
    assert_eq!(c.read(), "+PONG");
    assert_eq!(c.cmd(&["HSET", "h", "a", "1", "b", "2"]), ":2");
    // HGETALL is a map in RESP3: the raw reply starts with '%'.
    c.send(&["HGETALL", "h"]);
    let mut line = Vec::new();
    c.read_raw_line(&mut line);
    assert_eq!(line, b"%2\r\n");
    for _ in 0..4 {
        c.read();
    }
    c.send(&["GET", "missing"]);
    let mut line = Vec::new();
    c.read_raw_line(&mut line);
    assert_eq!(line, b"_\r\n");
    // Merged replies are RESP3 too (MGET over shards keeps nulls as `_`).
    assert_eq!(c.cmd(&["SET", "x1", "1"]), "+OK");
    let r = c.cmd(&["MGET", "x1", "missing1", "missing2", "x1"]);
    assert_eq!(r, "[1, nil, nil, 1]");
}

#[test]
fn client_commands_quit_and_reset() {
    let servers = redis_servers(1);
    // CLIENT LIST is @admin: an open listener refuses it unless allowed.
    let proxy = Proxy::start(&common::allow_admin(&config(&servers, "ketama", "")), 1);
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), "nil");
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "worker-1"]), "+OK");
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), "worker-1");
    let id = c.cmd(&["CLIENT", "ID"]);
    assert!(id.starts_with(':'), "{id}");
    let list = c.cmd(&["CLIENT", "LIST"]);
    assert!(
        list.contains("name=worker-1") && list.contains(&format!("id={}", &id[1..])),
        "{list}"
    );
    assert_eq!(c.cmd(&["SELECT", "2"]), "+OK");
    assert_eq!(c.cmd(&["RESET"]), "+RESET");
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), "nil");
    assert_eq!(c.cmd(&["QUIT"]), "+OK");
    assert_eq!(c.read(), "<closed>");
}

#[test]
fn transactions_run_atomically_on_one_shard() {
    let servers = redis_servers(3);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 1);
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["MULTI"]), "+OK");
    assert_eq!(c.cmd(&["SET", "{t}:a", "1"]), "+QUEUED");
    assert_eq!(c.cmd(&["INCR", "{t}:a"]), "+QUEUED");
    assert_eq!(c.cmd(&["GET", "{t}:a"]), "+QUEUED");
    assert_eq!(c.cmd(&["EXEC"]), "[+OK, :2, 2]");
    // Keys on different shards abort the transaction.
    assert_eq!(c.cmd(&["MULTI"]), "+OK");
    let mut crossed = false;
    for i in 0..50 {
        let r = c.cmd(&["SET", &format!("spread:{i}"), "x"]);
        if r.starts_with("-CROSSSLOT") {
            crossed = true;
            break;
        }
        assert_eq!(r, "+QUEUED");
    }
    assert!(crossed);
    assert!(c.cmd(&["EXEC"]).starts_with("-EXECABORT"));
    // DISCARD.
    assert_eq!(c.cmd(&["MULTI"]), "+OK");
    assert_eq!(c.cmd(&["SET", "{t}:b", "1"]), "+QUEUED");
    assert_eq!(c.cmd(&["DISCARD"]), "+OK");
    assert_eq!(c.cmd(&["EXISTS", "{t}:b"]), ":0");
    // WATCH: a change by another client makes EXEC return nil.
    let mut other = proxy.connect();
    assert_eq!(c.cmd(&["WATCH", "{t}:a"]), "+OK");
    assert_eq!(other.cmd(&["SET", "{t}:a", "changed"]), "+OK");
    assert_eq!(c.cmd(&["MULTI"]), "+OK");
    assert_eq!(c.cmd(&["SET", "{t}:a", "mine"]), "+QUEUED");
    assert_eq!(c.cmd(&["EXEC"]), "nil");
    assert_eq!(c.cmd(&["GET", "{t}:a"]), "changed");
    // WATCH without interference succeeds.
    assert_eq!(c.cmd(&["WATCH", "{t}:a"]), "+OK");
    assert_eq!(c.cmd(&["MULTI"]), "+OK");
    assert_eq!(c.cmd(&["SET", "{t}:a", "mine"]), "+QUEUED");
    assert_eq!(c.cmd(&["EXEC"]), "[+OK]");
    assert_eq!(c.cmd(&["GET", "{t}:a"]), "mine");
}

#[test]
fn blocking_commands_use_dedicated_connections() {
    let servers = redis_servers(2);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 1);
    let mut waiter = proxy.connect();
    let mut pusher = proxy.connect();
    let t0 = Instant::now();
    waiter.send(&["BLPOP", "queue", "5"]);
    std::thread::sleep(Duration::from_millis(200));
    // Other clients on the same core keep working while one blocks.
    for i in 0..20 {
        assert_eq!(pusher.cmd(&["SET", &format!("k{i}"), "v"]), "+OK");
    }
    assert_eq!(pusher.cmd(&["RPUSH", "queue", "job1"]), ":1");
    assert_eq!(waiter.read(), "[queue, job1]");
    assert!(t0.elapsed() < Duration::from_secs(4));
    // A timeout answers nil.
    assert_eq!(waiter.cmd(&["BRPOP", "empty", "0.2"]), "nil");
    // Pipelined after a blocking command: answered in order.
    waiter.send(&["BLPOP", "q2", "0.1"]);
    waiter.send(&["SET", "after", "1"]);
    assert_eq!(waiter.read(), "nil");
    assert_eq!(waiter.read(), "+OK");
    assert_eq!(pusher.cmd(&["RPUSH", "{b}src", "x"]), ":1");
    assert_eq!(
        waiter.cmd(&["BLMOVE", "{b}src", "{b}dst", "LEFT", "RIGHT", "1"]),
        "x"
    );
    assert_eq!(pusher.cmd(&["ZADD", "z", "1", "m"]), ":1");
    assert_eq!(waiter.cmd(&["BZPOPMIN", "z", "1"]), "[z, m, 1]");
}

#[test]
fn pubsub_across_shards() {
    let servers = redis_servers(3);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 1);
    let mut sub = proxy.connect();
    let mut publisher = proxy.connect();
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "news", "sport", "weather"]),
        "[subscribe, news, :1]"
    );
    assert_eq!(sub.read(), "[subscribe, sport, :2]");
    assert_eq!(sub.read(), "[subscribe, weather, :3]");
    assert_eq!(sub.cmd(&["PSUBSCRIBE", "w*"]), "[psubscribe, w*, :4]");
    let r = sub.cmd(&["GET", "x"]);
    assert!(r.starts_with("-ERR Can't execute 'get'"), "{r}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "hello"]), ":1");
    assert_eq!(sub.read(), "[message, news, hello]");
    assert_eq!(publisher.cmd(&["PUBLISH", "sport", "goal"]), ":1");
    assert_eq!(sub.read(), "[message, sport, goal]");
    // Both the channel and the pattern subscription receive it.
    assert_eq!(publisher.cmd(&["PUBLISH", "weather", "rain"]), ":2");
    let a = sub.read();
    let b = sub.read();
    let mut got = [a, b];
    got.sort();
    assert_eq!(
        got,
        [
            "[message, weather, rain]".to_string(),
            "[pmessage, w*, weather, rain]".to_string()
        ]
    );
    assert_eq!(sub.cmd(&["UNSUBSCRIBE", "news"]), "[unsubscribe, news, :3]");
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "nobody"]), ":0");
    assert_eq!(sub.cmd(&["PING"]), "[pong, ]");
    assert_eq!(sub.cmd(&["UNSUBSCRIBE"]), "[unsubscribe, sport, :2]");
    assert_eq!(sub.read(), "[unsubscribe, weather, :1]");
    assert_eq!(sub.cmd(&["PUNSUBSCRIBE"]), "[punsubscribe, w*, :0]");
    // Back to normal mode.
    assert_eq!(sub.cmd(&["SET", "x", "1"]), "+OK");
}

#[test]
fn a_client_leaving_during_a_blocking_command_releases_the_backend() {
    let servers = redis_servers(1);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 1);
    let blocked = |s: &testkit::RedisServer| -> String {
        s.cmd(&["INFO", "clients"])
            .lines()
            .find(|l| l.starts_with("blocked_clients:"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut waiter = proxy.connect();
    waiter.send(&["BLPOP", "never", "0"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while blocked(&servers[0]) != "blocked_clients:1" {
        assert!(Instant::now() < deadline, "BLPOP never reached the server");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(waiter);
    while blocked(&servers[0]) != "blocked_clients:0" {
        assert!(
            Instant::now() < deadline,
            "the blocked backend connection was not closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
