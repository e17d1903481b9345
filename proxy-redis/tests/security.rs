//! Data-path trust (issue 15, Redis items 8–11 and 13): the proxy refuses what Redis refuses, with
//! Redis's exact replies, and never lets a client past its restrictions. Each test runs real
//! redis-servers (testkit) and, where Redis has the same feature, compares the proxy's replies with a
//! direct redis-server's in the same test.

mod common;

use common::{Proxy, Raw, allow_admin, config, redis_servers};
use testkit::{RedisConfig, RedisServer};

/// Users of the proxy configs below (hashes from `furrow hash-password`).
const APP_SHA256: &str = "07a99d33e023ea491bc3f7b999efcfb76c32ff9abe1cf29ff3c5ee8b85ea015d"; // "app-secret"
const REPORT_SHA256: &str = "24dad5785a77373f33eeb44289cdef2e252394ca4cfac4e71169b071d805f24f"; // "report-secret"

/// Sends every command on both connections and asserts the same reply from each.
fn same_replies(proxy: &mut Raw, direct: &mut Raw, commands: &[&[&str]]) -> Vec<String> {
    commands
        .iter()
        .map(|c| {
            let want = direct.cmd(c);
            let got = proxy.cmd(c);
            assert_eq!(got, want, "{c:?}: proxy vs redis-server");
            got
        })
        .collect()
}

/// A plain redis-server for the direct side of a differential test, with `ACL SETUSER` rules.
fn direct_with_user(user: &str, rules: &[&str]) -> (RedisServer, Raw) {
    let server = RedisServer::start().expect("redis-server");
    let mut admin = Raw::connect(server.addr());
    let mut args = vec!["ACL", "SETUSER", user];
    args.extend_from_slice(rules);
    assert_eq!(admin.cmd(&args), "+OK");
    (server, admin)
}

#[test]
fn item8_dangerous_category_denies_like_redis() {
    let servers = redis_servers(2);
    let toml = config(&servers, "ketama", "")
        + &format!(
            "\n[users.ops]\npassword_sha256 = \"{APP_SHA256}\"\ncommands = [\"+@all\", \"-@dangerous\"]\n"
        );
    let proxy = Proxy::start(&toml, 1);
    let (direct, _admin) = direct_with_user(
        "ops",
        &["on", ">app-secret", "~*", "&*", "+@all", "-@dangerous"],
    );
    let mut p = proxy.connect();
    let mut d = Raw::connect(direct.addr());
    let replies = same_replies(
        &mut p,
        &mut d,
        &[
            &["AUTH", "ops", "app-secret"],
            &["SET", "k", "v"],
            &["GET", "k"],
            &["FLUSHDB"],
            &["FLUSHALL"],
            &["KEYS", "*"],
            &["CONFIG", "SET", "maxmemory", "1"],
            &["CONFIG", "GET", "maxmemory"],
            &["SWAPDB", "0", "1"],
            &["SORT", "k"],
            &["INFO"],
            &["CLIENT", "LIST"],
            &["GET", "k"],
        ],
    );
    assert_eq!(
        replies[3],
        "-NOPERM this user has no permissions to run the 'flushdb' command"
    );
    assert_eq!(
        replies[6],
        "-NOPERM this user has no permissions to run the 'config|set' command"
    );
    assert_eq!(replies[12], "v", "nothing was flushed");
    // Redis refuses DEBUG before its ACL check (enable-debug-command); the proxy by the rule.
    assert_eq!(
        p.cmd(&["DEBUG", "SLEEP", "0"]),
        "-NOPERM this user has no permissions to run the 'debug' command"
    );
    for s in &servers {
        assert_eq!(s.cmd(&["CONFIG", "GET", "maxmemory"]), "maxmemory\n0");
    }

    // Categories that are not dangerous keep working; a read-only user is refused writes by @write.
    let toml = config(&servers, "ketama", "")
        + &format!(
            "\n[users.reader]\npassword_sha256 = \"{REPORT_SHA256}\"\ncommands = [\"-@all\", \"+@read\", \"+@connection\"]\n"
        );
    let proxy = Proxy::start(&toml, 1);
    let (direct, _admin) = direct_with_user(
        "reader",
        &[
            "on",
            ">report-secret",
            "~*",
            "&*",
            "-@all",
            "+@read",
            "+@connection",
        ],
    );
    let mut p = proxy.connect();
    let mut d = Raw::connect(direct.addr());
    same_replies(
        &mut p,
        &mut d,
        &[
            &["AUTH", "reader", "report-secret"],
            &["PING"],
            &["ECHO", "x"],
            &["GET", "nope"],
            &["HGETALL", "nope"],
            &["SET", "k", "v"],
            &["DEL", "k"],
            &["PUBLISH", "c", "m"],
        ],
    );
}

#[test]
fn item8_unknown_category_is_a_config_error_with_position() {
    let toml = format!(
        "[users.ops]\npassword_sha256 = \"{APP_SHA256}\"\ncommands = [\"+@all\", \"-@dangerus\"]\n"
    );
    let err = router::config::parse("t.toml", &toml)
        .expect_err("unknown category must be refused")
        .to_string();
    assert!(
        err.starts_with(
            "t.toml:3:22: error: users.ops.commands: unknown ACL category `@dangerus` in rule `-@dangerus`"
        ),
        "{err}"
    );
}

#[test]
fn item9_open_listener_refuses_admin_and_dangerous_commands() {
    let servers = redis_servers(2);
    let proxy = Proxy::start(&config(&servers, "ketama", ""), 1);
    let mut c = proxy.connect();
    assert_eq!(c.cmd(&["SET", "k", "v"]), "+OK");
    let refused = |name: &str| {
        format!(
            "-NOPERM this user has no permissions to run the '{name}' command: admin and dangerous \
             commands are refused on listener 'cache', which has no users (set \
             allow_admin_commands = true on the listener to allow them)"
        )
    };
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "maxmemory", "1"]),
        refused("config|set")
    );
    assert_eq!(c.cmd(&["FLUSHALL"]), refused("flushall"));
    assert_eq!(c.cmd(&["FLUSHDB", "ASYNC"]), refused("flushdb"));
    assert_eq!(c.cmd(&["SWAPDB", "0", "1"]), refused("swapdb"));
    assert_eq!(c.cmd(&["BGSAVE"]), refused("bgsave"));
    assert_eq!(c.cmd(&["CONFIG", "RESETSTAT"]), refused("config|resetstat"));
    // Commands the proxy never runs keep their own (Redis-style) refusal.
    for cmd in [&["DEBUG", "SLEEP", "0"][..], &["SHUTDOWN"], &["MONITOR"]] {
        let r = c.cmd(cmd);
        assert!(
            r.starts_with(&format!("-ERR unknown command '{}'", cmd[0])),
            "{r}"
        );
    }
    // Inside MULTI the refusal dooms the transaction, as any Redis refusal does.
    assert_eq!(c.cmd(&["MULTI"]), "+OK");
    assert_eq!(c.cmd(&["FLUSHALL"]), refused("flushall"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors."
    );
    // Nothing reached a shard; ordinary commands still work.
    assert_eq!(c.cmd(&["GET", "k"]), "v");
    for s in &servers {
        assert_eq!(s.cmd(&["CONFIG", "GET", "maxmemory"]), "maxmemory\n0");
    }
    assert_eq!(c.cmd(&["SET", "k2", "v2"]), "+OK");

    // The explicit switch allows them.
    let proxy = Proxy::start(&allow_admin(&config(&servers, "ketama", "")), 1);
    let mut c = proxy.connect();
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        "+OK"
    );
    for s in &servers {
        assert_eq!(
            s.cmd(&["CONFIG", "GET", "maxmemory-policy"]),
            "maxmemory-policy\nallkeys-lru"
        );
    }
    assert_eq!(c.cmd(&["FLUSHALL"]), "+OK");
    assert_eq!(c.cmd(&["GET", "k"]), "nil");
}

/// Sends `bytes` unauthenticated and returns every reply line until the peer closes.
fn send_until_closed(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<String> {
    let mut c = Raw::connect(addr);
    c.send_raw(bytes);
    let mut out = Vec::new();
    loop {
        let r = c.read();
        let closed = r == "<closed>";
        out.push(r);
        if closed || out.len() > 4 {
            return out;
        }
    }
}

#[test]
fn item10_unauthenticated_clients_cannot_send_large_frames() {
    let servers = redis_servers(1);
    let toml = config(&servers, "ketama", "")
        + &format!("\n[users.default]\npassword_sha256 = \"{APP_SHA256}\"\n");
    let proxy = Proxy::start(&toml, 1);
    let direct =
        RedisServer::start_with(RedisConfig::new().password("app-secret")).expect("redis-server");
    // A 500 MB bulk announced before AUTH: refused at its header, connection closed.
    let huge = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$500000000\r\nxxxxxxxx";
    // 16 KiB is still accepted (NOAUTH), one byte more is not.
    let mut at_cap = b"*2\r\n$4\r\nECHO\r\n$16384\r\n".to_vec();
    at_cap.extend(std::iter::repeat_n(b'x', 16384));
    at_cap.extend_from_slice(b"\r\n*2\r\n$4\r\nECHO\r\n$16385\r\n");
    let many_args = b"*11\r\n";
    for (what, bytes) in [
        ("500 MB bulk", &huge[..]),
        ("bulk cap", &at_cap[..]),
        ("argument count", &many_args[..]),
    ] {
        let want = send_until_closed(direct.addr(), bytes);
        let got = send_until_closed(proxy.addr, bytes);
        assert_eq!(got, want, "{what}: proxy vs redis-server");
        assert_eq!(want.last().map(String::as_str), Some("<closed>"), "{what}");
    }
    assert_eq!(
        send_until_closed(proxy.addr, &huge[..]),
        [
            "-ERR Protocol error: unauthenticated bulk length",
            "<closed>"
        ]
    );
    // After AUTH (even pipelined in the same write) the listener's own max_frame applies.
    let big = "x".repeat(100_000);
    for (addr, auth) in [
        (proxy.addr, &["AUTH", "app-secret"]),
        (direct.addr(), &["AUTH", "app-secret"]),
    ] {
        let mut c = Raw::connect(addr);
        let mut bytes = Vec::new();
        for args in [&auth[..], &["SET", "big", &big], &["STRLEN", "big"]] {
            bytes.extend(format!("*{}\r\n", args.len()).bytes());
            for a in args {
                bytes.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
            }
        }
        c.send_raw(&bytes);
        assert_eq!(c.read(), "+OK");
        assert_eq!(c.read(), "+OK");
        assert_eq!(c.read(), ":100000");
        // RESET logs out: the pre-authentication caps are back.
        assert_eq!(c.cmd(&["RESET"]), "+RESET");
        c.send_raw(b"*2\r\n$4\r\nECHO\r\n$20000\r\n");
        assert_eq!(c.read(), "-ERR Protocol error: unauthenticated bulk length");
        assert_eq!(c.read(), "<closed>");
    }
}

#[test]
fn item11_auth_without_user_name_means_the_default_user() {
    let servers = redis_servers(1);
    // Users, none named `default`: `AUTH <password>` must not log in as `app`.
    let toml = config(&servers, "ketama", "")
        + &format!(
            "\n[users.app]\npassword_sha256 = \"{APP_SHA256}\"\n\n[users.reporting]\npassword_sha256 = \"{REPORT_SHA256}\"\n"
        );
    let proxy = Proxy::start(&toml, 1);
    let (direct, mut admin) = direct_with_user("app", &["on", ">app-secret", "~*", "&*", "+@all"]);
    assert_eq!(
        admin.cmd(&[
            "ACL",
            "SETUSER",
            "reporting",
            "on",
            ">report-secret",
            "~*",
            "+@all"
        ]),
        "+OK"
    );
    assert_eq!(
        admin.cmd(&["ACL", "SETUSER", "default", "off", "resetpass"]),
        "+OK"
    );
    let mut p = proxy.connect();
    let mut d = Raw::connect(direct.addr());
    let r = same_replies(
        &mut p,
        &mut d,
        &[
            &["AUTH", "app-secret"],
            &["AUTH", "report-secret"],
            &["GET", "k"],
            &["AUTH", "app", "app-secret"],
            &["GET", "k"],
        ],
    );
    assert_eq!(
        r[0],
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(r[2], "-NOAUTH Authentication required.");
    assert_eq!(r[4], "nil");

    // With a `default` user, `AUTH <password>` is that user and no other.
    let toml = config(&servers, "ketama", "")
        + &format!(
            "\n[users.app]\npassword_sha256 = \"{APP_SHA256}\"\n\n[users.default]\npassword_sha256 = \"{REPORT_SHA256}\"\n"
        );
    let proxy = Proxy::start(&toml, 1);
    let mut p = proxy.connect();
    assert_eq!(
        p.cmd(&["AUTH", "app-secret"]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(p.cmd(&["AUTH", "report-secret"]), "+OK");
    let info = p.cmd(&["CLIENT", "INFO"]);
    assert!(info.contains(" user=default "), "{info}");
}

#[test]
fn item13_multi_follows_redis_after_errors() {
    let servers = redis_servers(2);
    // SAVE (no-multi) must reach the MULTI check: allow admin commands on this open listener.
    let proxy = Proxy::start(&allow_admin(&config(&servers, "ketama", "")), 1);
    let direct = RedisServer::start().expect("redis-server");
    let mut p = proxy.connect();
    let mut d = Raw::connect(direct.addr());
    let r = same_replies(
        &mut p,
        &mut d,
        &[
            // Unknown command while queueing: EXEC aborts, nothing ran.
            &["MULTI"],
            &["SET", "{t}a", "1"],
            &["FOO"],
            &["SET", "{t}b", "2"],
            &["EXEC"],
            &["EXISTS", "{t}a", "{t}b"],
            // Wrong arity.
            &["MULTI"],
            &["SET", "{t}a", "1"],
            &["GET"],
            &["EXEC"],
            // Unknown subcommand.
            &["MULTI"],
            &["CONFIG", "NOPE"],
            &["EXEC"],
            // A command Redis never queues.
            &["MULTI"],
            &["SAVE"],
            &["EXEC"],
            // Nested MULTI and WATCH inside MULTI are refused without aborting.
            &["MULTI"],
            &["MULTI"],
            &["WATCH", "{t}a"],
            &["SET", "{t}a", "1"],
            &["EXEC"],
            // PING, ECHO and UNWATCH are queued like any command.
            &["MULTI"],
            &["PING"],
            &["ECHO", "hi"],
            &["INCR", "{t}a"],
            &["UNWATCH"],
            &["EXEC"],
            // Errors outside MULTI.
            &["EXEC"],
            &["DISCARD"],
            // DISCARD after an error.
            &["MULTI"],
            &["FOO"],
            &["DISCARD"],
            &["GET", "{t}a"],
        ],
    );
    assert_eq!(
        r[4],
        "-EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(r[5], ":0");
    assert_eq!(
        r[15],
        "-EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(r[14], "-ERR Command not allowed inside a transaction");
    assert_eq!(r[17], "-ERR MULTI calls can not be nested");
    assert_eq!(r[18], "-ERR WATCH inside MULTI is not allowed");
    assert_eq!(r[20], "[+OK]");
    assert_eq!(r[26], "[+PONG, hi, :2, +OK]");

    // A key the user may not touch, queued in MULTI: refused and the transaction aborted.
    let toml = config(&servers, "ketama", "")
        + &format!("\n[users.app]\npassword_sha256 = \"{APP_SHA256}\"\nkeys = [\"app:*\"]\n");
    let proxy = Proxy::start(&toml, 1);
    let (direct, _admin) = direct_with_user("app", &["on", ">app-secret", "~app:*", "&*", "+@all"]);
    let mut p = proxy.connect();
    let mut d = Raw::connect(direct.addr());
    let r = same_replies(
        &mut p,
        &mut d,
        &[
            &["AUTH", "app", "app-secret"],
            &["MULTI"],
            &["SET", "app:1", "x"],
            &["SET", "secret", "x"],
            &["EXEC"],
            &["GET", "app:1"],
        ],
    );
    assert_eq!(
        r[3],
        "-NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    assert_eq!(r[5], "nil");
}
