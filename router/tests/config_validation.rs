//! Config loading: the shipped examples are valid, and broken files get every problem reported with
//! line, column, key path and what was expected.

use router::config::{self, ListenerKind, RedisDistribution};

fn errors(src: &str) -> Vec<String> {
    match config::parse("t.toml", src) {
        Ok(_) => panic!("config unexpectedly valid:\n{src}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn every_example_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "no example configs found");
}

#[test]
fn example_reads_into_the_model() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/furrow.toml");
    let c = config::load(std::path::Path::new(path)).expect("valid");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].kind, ListenerKind::Redis);
    assert_eq!(c.listeners[0].address.port(), 6400);
    let g = c.redis_group("cache").expect("group");
    assert_eq!(g.distribution, RedisDistribution::Ketama);
    assert_eq!(g.hash_tag, Some(*b"{}"));
    assert_eq!(
        g.servers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["r1", "r2", "r3"]
    );
    let m = c.mysql_group("main").expect("group");
    assert_eq!(m.replicas.len(), 2);
    assert_eq!(m.primary.address, "127.0.0.1:3307");
    let users: Vec<_> = c.users_for("db").map(|u| u.name.as_str()).collect();
    assert_eq!(users, ["app", "reporting"]);
    assert_eq!(c.users_for("cache").count(), 1);
}

#[test]
fn several_problems_are_reported_at_once_with_positions() {
    let src = r#"
[proxy]
executors = 0
adress = "127.0.0.1:1"

[[listeners]]
name = "a"
kind = "memcached"
address = "127.0.0.1:6400"
group = "nope"

[[listeners]]
name = "a"
kind = "redis"
address = "localhost"
group = "g"

[redis_groups.g]
distribution = "ketama"
servers = [ { address = "127.0.0.1:7001" }, { address = "127.0.0.1:7001" } ]
"#;
    let e = errors(src);
    let expected = [
        "t.toml:3:13: error: proxy.executors: value out of range; expected an integer from 1 to 1024",
        "t.toml:4:1: error: proxy.adress: unknown key `adress`; expected one of: admin, admin_password, executors, login_block_ms, max_login_failures, metrics, shutdown_grace_ms",
        "t.toml:8:8: error: listeners[0].kind: unknown value `memcached`; expected one of: redis, mysql",
        "t.toml:15:11: error: listeners[1].address: invalid address `localhost`; expected IP:PORT such as 127.0.0.1:6400 or [::1]:6400",
        "t.toml:20:45: error: redis_groups.g.servers.name: duplicate server name `127.0.0.1:7001`",
        "t.toml:20:45: error: redis_groups.g.servers.address: duplicate server address `127.0.0.1:7001`",
    ];
    assert_eq!(e, expected);
}

#[test]
fn dangling_and_mismatched_references() {
    let src = r#"
[[listeners]]
name = "r"
kind = "redis"
address = "127.0.0.1:6400"
group = "main"

[[listeners]]
name = "m"
kind = "mysql"
address = "127.0.0.1:3400"
group = "missing"

[mysql_groups.main]
user = "u"
primary = { address = "127.0.0.1:3306" }

[users.bob]
password_sha256 = "00"
listeners = ["r", "x"]
"#;
    let e = errors(src);
    assert_eq!(
        e,
        [
            "t.toml:6:9: error: listeners[0].group: group `main` is not a redis group (listener kind is \"redis\")",
            "t.toml:12:9: error: listeners[1].group: unknown group `missing`; define it as [mysql_groups.missing]",
            "t.toml:19:19: error: users.bob.password_sha256: expected 64 hex digits (SHA256(SHA256(password)))",
            "t.toml:20:19: error: users.bob.listeners: unknown listener `x`",
        ]
    );
}

#[test]
fn plain_text_user_passwords_are_refused() {
    let e = errors("[users.a]\npassword = \"secret\"\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(
            "t.toml:2:12: error: users.a.password: plain-text passwords are not accepted"
        ),
        "{e:?}"
    );
}

#[test]
fn unknown_acl_categories_and_commands_are_refused() {
    let src = r#"[users.a]
password_sha256 = "07a99d33e023ea491bc3f7b999efcfb76c32ff9abe1cf29ff3c5ee8b85ea015d"
commands = ["+@all", "-@dangerous", "-@danger", "+@read",
  "-flushal", "-config|sett", "+config|get", "-@ADMIN", "+get"]
"#;
    let e = errors(src);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with(
            "t.toml:3:37: error: users.a.commands: unknown ACL category `@danger` in rule `-@danger`; \
             Redis's categories are @all, @keyspace, @read, @write,"
        ),
        "{e:?}"
    );
    assert_eq!(
        e[1],
        "t.toml:4:3: error: users.a.commands: unknown Redis command `flushal` in rule `-flushal`"
    );
    assert_eq!(
        e[2],
        "t.toml:4:15: error: users.a.commands: unknown subcommand `sett` of `config` in rule `-config|sett`"
    );
}

#[test]
fn slot_tables_must_cover_every_slot_once() {
    let src = r#"
[redis_groups.s]
distribution = "slots"
servers = [ { name = "a", address = "127.0.0.1:7001" }, { name = "b", address = "127.0.0.1:7002" } ]
slots = [
  { range = "0-8000", server = "a" },
  { range = "8000-9000", server = "b" },
  { range = "9001-16000", server = "c" },
]
"#;
    let e = errors(src);
    assert_eq!(
        e,
        [
            "t.toml:2:1: error: redis_groups.s.slots: slots 16001-16383 are not assigned to any server",
            "t.toml:7:3: error: redis_groups.s.slots[1].range: slot 8000 is already assigned by slots[0]",
            "t.toml:8:3: error: redis_groups.s.slots[2].server: unknown server `c` (name a server of this group)",
        ]
    );
}

#[test]
fn syntax_errors_have_positions() {
    let e = errors("[proxy]\nexecutors = = 2\n");
    assert!(e[0].starts_with("t.toml:2:"), "{e:?}");
    assert!(e[0].contains("TOML syntax"), "{e:?}");
}

#[test]
fn missing_required_keys_are_named() {
    let e = errors("[[listeners]]\nname = \"x\"\n");
    assert_eq!(
        e,
        [
            "t.toml:1:1: error: listeners[0].kind: missing required key `kind` (one of: redis, mysql)",
            "t.toml:1:1: error: listeners[0].address: missing required key `address` (a string)",
            "t.toml:1:1: error: listeners[0].group: missing required key `group` (a string)",
        ]
    );
}

#[test]
fn port_zero_listeners_never_collide() {
    let src = r#"
[proxy]
admin = "127.0.0.1:0"
metrics = "127.0.0.1:0"

[[listeners]]
name = "a"
kind = "redis"
address = "127.0.0.1:0"
group = "g"

[[listeners]]
name = "b"
kind = "redis"
address = "127.0.0.1:0"
group = "g"

[redis_groups.g]
servers = [ { address = "127.0.0.1:7001" } ]
"#;
    config::parse("t.toml", src).unwrap_or_else(|e| panic!("{e}"));
    let dup = src.replace("127.0.0.1:0\"\ngroup = \"g\"\n\n[[listeners]]\nname = \"b\"\nkind = \"redis\"\naddress = \"127.0.0.1:0", "127.0.0.1:5\"\ngroup = \"g\"\n\n[[listeners]]\nname = \"b\"\nkind = \"redis\"\naddress = \"127.0.0.1:5");
    assert!(
        errors(&dup)
            .iter()
            .any(|e| e.contains("duplicate listener address `127.0.0.1:5`"))
    );
}

/// A one-listener Redis config whose group has `group_lines`.
fn redis_group(group_lines: &str) -> String {
    format!(
        "[[listeners]]\nname = \"c\"\nkind = \"redis\"\naddress = \"127.0.0.1:6400\"\ngroup = \"g\"\n\n[redis_groups.g]\n{group_lines}\n"
    )
}

#[test]
fn replicas_read_from_and_sentinels_are_read() {
    let src = redis_group(
        r#"read_from = "prefer_replica"
sentinels = ["127.0.0.1:26379", "127.0.0.1:26380"]
servers = [
  { name = "r1", address = "127.0.0.1:7001", replicas = ["127.0.0.1:7101", "127.0.0.1:7102"] },
  { name = "r2", address = "127.0.0.1:7002", sentinel_master = "cache-2" },
]"#,
    );
    let c = config::parse("t.toml", &src).unwrap_or_else(|e| panic!("{e}"));
    let g = c.redis_group("g").expect("group");
    assert_eq!(g.read_from, config::ReadFrom::PreferReplica);
    assert_eq!(g.sentinels, ["127.0.0.1:26379", "127.0.0.1:26380"]);
    assert_eq!(g.servers[0].replicas, ["127.0.0.1:7101", "127.0.0.1:7102"]);
    assert!(g.servers[1].replicas.is_empty());
    // The sentinel master name defaults to the server name.
    assert_eq!(g.sentinel_master(&g.servers[0]), Some("r1"));
    assert_eq!(g.sentinel_master(&g.servers[1]), Some("cache-2"));
    let names: Vec<String> = g.servers[0]
        .replica_servers()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["r1@127.0.0.1:7101", "r1@127.0.0.1:7102"]);
    // Defaults: primary reads, no sentinels.
    let c = config::parse(
        "t.toml",
        &redis_group(r#"servers = [{ address = "127.0.0.1:7001" }]"#),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let g = c.redis_group("g").expect("group");
    assert_eq!(g.read_from, config::ReadFrom::Primary);
    assert!(g.sentinels.is_empty());
    assert_eq!(g.sentinel_master(&g.servers[0]), None);
}

#[test]
fn replica_and_sentinel_errors() {
    let e = errors(&redis_group(
        r#"read_from = "nearest"
sentinels = ["nohost"]
servers = [{ address = "127.0.0.1:7001", replicas = ["bad", "127.0.0.1:7001"] }]"#,
    ));
    let text = e.join("\n");
    assert!(
        text.contains(
            "redis_groups.g.read_from: unknown value `nearest`; expected one of: primary, replica, prefer_replica"
        ),
        "{text}"
    );
    assert!(
        text.contains("redis_groups.g.sentinels: invalid sentinel address `nohost`"),
        "{text}"
    );
    assert!(
        text.contains("replicas: invalid replica address `bad`"),
        "{text}"
    );
    assert!(
        text.contains(
            "redis_groups.g.servers[0].replicas: `127.0.0.1:7001` is the server's own address"
        ),
        "{text}"
    );

    let text = errors(&redis_group(
        r#"read_from = "replica"
servers = [{ address = "127.0.0.1:7001", sentinel_master = "m" }]"#,
    ))
    .join("\n");
    assert!(
        text.contains("redis_groups.g.read_from: reading from replicas needs `replicas` on at least one server"),
        "{text}"
    );
    assert!(
        text.contains("redis_groups.g.servers[0].sentinel_master: `sentinel_master` needs `sentinels` on the group"),
        "{text}"
    );

    let text = errors(&redis_group(
        r#"distribution = "cluster"
sentinels = ["127.0.0.1:26379"]
servers = [{ address = "127.0.0.1:7001" }]"#,
    ))
    .join("\n");
    assert!(
        text.contains(
            "redis_groups.g: replicas and sentinels are not used with distribution = \"cluster\""
        ),
        "{text}"
    );

    // MySQL servers take neither key.
    let text = errors(
        r#"[mysql_groups.m]
user = "u"
password = "p"
primary = { address = "127.0.0.1:3307", replicas = ["127.0.0.1:3308"] }
"#,
    )
    .join("\n");
    assert!(text.contains("unknown key `replicas`"), "{text}");
}
