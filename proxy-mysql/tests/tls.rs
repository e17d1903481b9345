//! TLS between clients and the MySQL proxy: the SSL request in the handshake with real clients
//! that verify the certificate and host name (mariadb CLI, PyMySQL, mysql-connector-python),
//! `require_tls` users, and a wrong CA refused by the client.

mod common;

use common::*;
use testkit::TestCerts;

fn certs() -> &'static TestCerts {
    TestCerts::get().unwrap_or_else(|e| panic!("{e}"))
}

/// The standard config with TLS on the listener and a `secure` user that must use it.
fn tls_proxy(rs: &testkit::MariaDbReplicaSet) -> Proxy {
    let c = certs();
    let primary = rs.primary().addr();
    let replicas: Vec<_> = rs.replicas().iter().map(|r| r.addr()).collect();
    Proxy::start(move |port| {
        let mut toml = config_toml(port, primary, &replicas, "");
        let tls = format!(
            "group = \"main\"\ntls = {{ cert = {:?}, key = {:?} }}\n",
            c.cert.display().to_string(),
            c.key.display().to_string()
        );
        toml = toml.replacen("group = \"main\"\n", &tls, 1);
        toml.push_str(&user_block("secure", APP_SECRET, "require_tls = true"));
        toml
    })
}

/// Runs the mariadb CLI with `tls_args`; returns stdout or stderr.
fn mariadb(port: u16, user: &str, tls_args: &[String], query: &str) -> Result<String, String> {
    let out = mariadb_cli(port, user, APP_SECRET)
        .arg("--connect-timeout=10")
        .args(tls_args)
        .arg("--execute")
        .arg(query)
        .output()
        .map_err(|e| e.to_string())?;
    stdout_or_stderr(&out)
}

fn verify_args(ca: &std::path::Path) -> Vec<String> {
    vec![
        "--ssl".into(),
        "--ssl-verify-server-cert".into(),
        format!("--ssl-ca={}", ca.display()),
    ]
}

#[test]
fn mysql_clients_over_tls() {
    let rs = replica_set(1);
    let proxy = tls_proxy(&rs);
    let port = proxy.addr.port();
    let c = certs();

    // The CLI verifies the certificate and host name; `status` shows the cipher in use.
    let out =
        mariadb(port, "app", &verify_args(&c.ca), "SELECT 40 + 2; \\s").expect("mariadb over TLS");
    assert!(out.starts_with("42\n"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("SSL:") && l.contains("Cipher in use")),
        "{out}"
    );
    // Statements, results and errors over TLS, sequence ids intact.
    let out = mariadb(
        port,
        "secure",
        &verify_args(&c.ca),
        "INSERT INTO app.t (v) VALUES ('over tls'); \
         SELECT v FROM app.t WHERE v = 'over tls' /* furrow:primary */; SELECT REPEAT('x', 100000)",
    )
    .expect("require_tls user over TLS");
    assert!(out.starts_with("over tls\n"), "{out}");
    assert!(out.contains(&"x".repeat(100_000)), "large row over TLS");
    let err = mariadb(port, "app", &verify_args(&c.ca), "SELECT nosuchcolumn")
        .expect_err("an ERR over TLS");
    assert!(err.contains("1054"), "{err}");

    // A `require_tls` user without TLS: ERR 1045 as the server gives a REQUIRE SSL account.
    let err = mariadb(port, "secure", &["--skip-ssl".into()], "SELECT 1")
        .expect_err("require_tls without TLS");
    assert!(err.contains("ERROR 1045"), "{err}");
    assert!(err.contains("Access denied for user 'secure'"), "{err}");
    // Other users may still come in clear.
    let out = mariadb(port, "app", &["--skip-ssl".into()], "SELECT 7").expect("plain login");
    assert_eq!(out, "7\n");

    // A client trusting another CA refuses the proxy.
    let err = mariadb(port, "app", &verify_args(&c.other_ca), "SELECT 1")
        .expect_err("wrong CA must fail");
    assert!(
        err.contains("2026") || err.to_lowercase().contains("ssl"),
        "{err}"
    );

    // Python drivers that verify the certificate and the host name.
    let script = format!(
        r#"
import os, ssl, pymysql, mysql.connector
ca = {ca:?}
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="secure", password=os.environ["PASSWORD"], database="app", ssl={{"ca": ca, "check_hostname": True}})
cur = c.cursor()
cur.execute("SELECT COUNT(*) FROM t WHERE v = %s", ("over tls",))
print("pymysql", cur.fetchone()[0], c._sock.version())
c.close()
for pure in (True,):
    m = mysql.connector.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="secure", password=os.environ["PASSWORD"], database="app", ssl_ca=ca, ssl_verify_cert=True, ssl_verify_identity=True, use_pure=pure)
    cur = m.cursor()
    cur.execute("SELECT %s + 1", (41,))
    print("connector", cur.fetchone()[0])
    cur.close()
    m.close()
try:
    pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="app", password=os.environ["PASSWORD"], ssl={{"ca": {other:?}, "check_hostname": True}})
    print("wrong-ca accepted")
except pymysql.err.OperationalError as e:
    print("wrong-ca refused")
"#,
        ca = c.ca.display().to_string(),
        other = c.other_ca.display().to_string(),
    );
    let out = python(&script, port).expect("python drivers over TLS");
    assert!(out.contains("pymysql 1 TLSv1.3"), "{out}");
    assert!(out.contains("connector 42"), "{out}");
    assert!(out.contains("wrong-ca refused"), "{out}");
}

/// A MariaDB that serves TLS with the test certificates and refuses clients without it.
fn tls_mariadb() -> testkit::MariaDb {
    let c = certs();
    testkit::MariaDb::start_with(
        testkit::MariaDbConfig::new()
            .arg(format!("--ssl-cert={}", c.cert.display()))
            .arg(format!("--ssl-key={}", c.key.display()))
            .arg(format!("--ssl-ca={}", c.ca.display()))
            .arg("--require-secure-transport=ON"),
    )
    .expect("mariadb with TLS")
}

#[test]
fn backends_over_tls_with_verification() {
    let c = certs();
    let db = tls_mariadb();
    let primary = db.addr();
    // Verified for the address's IP (an IP SAN), then for an explicit server name.
    for group_tls in [
        format!("tls = {{ ca = {:?} }}", c.ca.display().to_string()),
        format!(
            "tls = {{ ca = {:?}, server_name = \"localhost\" }}",
            c.ca.display().to_string()
        ),
    ] {
        let proxy = Proxy::start(move |port| config_toml(port, primary, &[], &group_tls));
        let port = proxy.addr.port();
        let out = mariadb(
            port,
            "app",
            &[],
            "SHOW SESSION STATUS LIKE 'Ssl_version'; \
             CREATE DATABASE IF NOT EXISTS app; CREATE TABLE IF NOT EXISTS app.tt (id INT); \
             INSERT INTO app.tt VALUES (1); SELECT COUNT(*) > 0 FROM app.tt",
        )
        .expect("queries over a TLS backend");
        assert!(out.starts_with("Ssl_version\tTLSv1.3\n"), "{out}");
        assert!(out.ends_with("1\n"), "{out}");
    }
    // A CA that did not sign the server's certificate: no connection, a clear error.
    let other = c.other_ca.display().to_string();
    let proxy = Proxy::start(move |port| {
        config_toml(port, primary, &[], &format!("tls = {{ ca = {other:?} }}"))
    });
    let err = mariadb(proxy.addr.port(), "app", &[], "SELECT 1").expect_err("wrong CA");
    assert!(
        err.contains("ERROR 1105") && err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    // The name verified must be in the certificate.
    let ca = c.ca.display().to_string();
    let proxy = Proxy::start(move |port| {
        config_toml(
            port,
            primary,
            &[],
            &format!("tls = {{ ca = {ca:?}, server_name = \"db.example\" }}"),
        )
    });
    let err = mariadb(proxy.addr.port(), "app", &[], "SELECT 1").expect_err("wrong name");
    assert!(
        err.contains("certificate not valid for name \"db.example\""),
        "{err}"
    );
    // Without `tls` the proxy cannot log in to this server (it requires secure transport).
    let proxy = Proxy::start(move |port| config_toml(port, primary, &[], ""));
    let err = mariadb(proxy.addr.port(), "app", &[], "SELECT 1").expect_err("plain refused");
    assert!(err.contains("ERROR"), "{err}");
}
