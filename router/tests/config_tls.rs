//! `tls` tables: certificates are read and checked at load; every bad file is a config error that
//! names the key, with its line and column.

use router::config;
use testkit::TestCerts;

fn certs() -> &'static TestCerts {
    TestCerts::get().unwrap_or_else(|e| panic!("{e}"))
}

fn config_with(tls: &str, group_tls: &str) -> String {
    config_req(tls, group_tls, false)
}

fn config_req(tls: &str, group_tls: &str, require: bool) -> String {
    format!(
        r#"
[[listeners]]
name = "m"
kind = "mysql"
address = "127.0.0.1:3400"
group = "main"
tls = {tls}

[mysql_groups.main]
user = "u"
primary = {{ address = "127.0.0.1:3306" }}
{group_tls}

[users.app]
password_native = "*6C7A370C07660BC788681B3238D93E08BD74303C"
require_tls = {require}
"#
    )
}

fn errors(src: &str) -> Vec<String> {
    match config::parse("t.toml", src) {
        Ok(_) => panic!("config unexpectedly valid:\n{src}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn valid_tls_reads_into_the_model() {
    let c = certs();
    let src = config_req(
        &format!(
            "{{ cert = {:?}, key = {:?} }}",
            c.cert.display().to_string(),
            c.key.display().to_string()
        ),
        &format!(
            "tls = {{ ca = {:?}, server_name = \"localhost\" }}",
            c.ca.display().to_string()
        ),
        true,
    );
    let cfg = config::parse("t.toml", &src).unwrap_or_else(|e| panic!("{e}"));
    let l = cfg.listener("m").expect("listener");
    let tls = l.tls.as_ref().expect("listener tls");
    assert_eq!(tls.cert, c.cert.display().to_string());
    let g = cfg.mysql_group("main").expect("group");
    let bt = g.tls.as_ref().expect("group tls");
    assert_eq!(bt.server_name.as_deref(), Some("localhost"));
    assert!(bt.name_for("127.0.0.1:3306").is_some());
    assert!(cfg.users[0].require_tls);
}

#[test]
fn relative_paths_are_taken_from_the_config_folder() {
    let c = certs();
    let src = config_with("{ cert = \"server.pem\", key = \"server.key\" }", "");
    let file = c.dir.join("furrow.toml").display().to_string();
    let cfg = config::parse(&file, &src).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.listener("m").and_then(|l| l.tls.as_ref()).is_some());
}

#[test]
fn bad_files_are_config_errors_naming_the_key() {
    let c = certs();
    let (cert, key, ca) = (
        c.cert.display().to_string(),
        c.key.display().to_string(),
        c.ca.display().to_string(),
    );
    // Missing files.
    let e = errors(&config_with(
        "{ cert = \"/nonexistent/a.pem\", key = \"/nonexistent/a.key\" }",
        "tls = { ca = \"/nonexistent/ca.pem\" }",
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with(
            "t.toml:7:16: error: listeners[0].tls.cert: cannot read `/nonexistent/a.pem`"
        ),
        "{e:?}"
    );
    assert!(
        e[1].starts_with(
            "t.toml:7:44: error: listeners[0].tls.key: cannot read `/nonexistent/a.key`"
        ),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("t.toml:12:14: error: mysql_groups.main.tls.ca: cannot read"),
        "{e:?}"
    );
    // A key file given as the certificate, and a certificate given as the key.
    let e = errors(&config_with(
        &format!("{{ cert = {key:?}, key = {cert:?} }}"),
        "",
    ));
    assert!(e.iter().any(|l| l.contains("listeners[0].tls.cert:") && l.contains("holds no PEM certificate")), "{e:?}");
    assert!(e.iter().any(|l| l.contains("listeners[0].tls.key:") && l.contains("no usable PEM private key")), "{e:?}");
    // A key that does not belong to the certificate.
    let other_key = c.dir.join("other-ca.key").display().to_string();
    let e = errors(&config_with(
        &format!("{{ cert = {cert:?}, key = {other_key:?} }}"),
        "",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("listeners[0].tls.key: the key and certificate cannot serve TLS"),
        "{e:?}"
    );
    // Missing and unknown keys, a bad server name.
    let e = errors(&config_with(
        &format!("{{ cert = {cert:?}, kee = {key:?} }}"),
        &format!("tls = {{ ca = {ca:?}, server_name = \"not a name\" }}"),
    ));
    assert!(
        e.iter()
            .any(|l| l.contains("listeners[0].tls.key: missing required key `key`")),
        "{e:?}"
    );
    assert!(e.iter().any(|l| l.contains("unknown key `kee`")), "{e:?}");
    assert!(e.iter().any(|l| l.contains("mysql_groups.main.tls.server_name: `not a name` is neither a DNS name nor an IP address")), "{e:?}");
    // Not a table.
    let e = errors(&config_with("true", ""));
    assert!(
        e.iter()
            .any(|l| l.contains("listeners[0].tls") && l.contains("a table")),
        "{e:?}"
    );
}

#[test]
fn require_tls_needs_a_tls_listener() {
    let e = errors(&config_req("{}", "", true).replace("tls = {}", ""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("users.app.require_tls: `require_tls = true`, but no MySQL listener"),
        "{e:?}"
    );
}

fn redis_config(group_tls: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "r"
kind = "redis"
address = "127.0.0.1:6400"
group = "cache"

[redis_groups.cache]
servers = [{{ name = "r1", address = "127.0.0.1:6380" }}]
{group_tls}
"#
    )
}

#[test]
fn redis_group_tls() {
    let c = certs();
    let ca = c.ca.display().to_string();
    let cfg = config::parse(
        "t.toml",
        &redis_config(&format!(
            "tls = {{ ca = {ca:?}, server_name = \"redis.internal\" }}"
        )),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let g = cfg.redis_group("cache").expect("group");
    let bt = g.tls.as_ref().expect("group tls");
    assert_eq!(bt.ca, ca);
    assert_eq!(bt.server_name.as_deref(), Some("redis.internal"));
    let cfg = config::parse("t.toml", &redis_config("")).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.redis_group("cache").expect("group").tls.is_none());
    // Relative to the config's folder.
    let file = c.dir.join("furrow.toml").display().to_string();
    let cfg = config::parse(&file, &redis_config("tls = { ca = \"ca.pem\" }"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.redis_group("cache").expect("group").tls.is_some());

    let e = errors(&redis_config("tls = { ca = \"/nonexistent/ca.pem\" }"));
    assert!(
        e.iter()
            .any(|l| l.contains("redis_groups.cache.tls.ca: cannot read")),
        "{e:?}"
    );
    let e = errors(&redis_config(&format!(
        "tls = {{ ca = {:?} }}",
        c.key.display().to_string()
    )));
    assert!(
        e.iter()
            .any(|l| l.contains("redis_groups.cache.tls.ca") && l.contains("no PEM certificate")),
        "{e:?}"
    );
    let e = errors(&redis_config(&format!(
        "tls = {{ ca = {ca:?}, server_name = \"not a name\", verify = false }}"
    )));
    assert!(e.iter().any(|l| l.contains("redis_groups.cache.tls.server_name: `not a name` is neither a DNS name nor an IP address")), "{e:?}");
    assert!(
        e.iter().any(|l| l.contains("unknown key `verify`")),
        "{e:?}"
    );
    let e = errors(&redis_config("tls = { server_name = \"x\" }"));
    assert!(
        e.iter()
            .any(|l| l.contains("redis_groups.cache.tls.ca: missing required key `ca`")),
        "{e:?}"
    );
}
