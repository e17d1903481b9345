//! `furrow proxy --config-source`: the proxy takes its TOML from a configuration-center namespace
//! (`furrow control` as a real process), validates every release exactly like a file, hot-reloads it,
//! rejects an invalid one, keeps serving when the center goes away, and starts from its local snapshot
//! when the center is down at start-up.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{
    config_generation, redis_cli, resp_connect, resp_roundtrip, spawn_config_source_proxy,
    wait_until,
};

use common::{CONTROL_TOKEN as TOKEN, ControlCenter as Center};

fn proxy_config(admin: u16, grace_ms: u32) -> String {
    format!(
        "[proxy]\nexecutors = 1\nadmin = \"127.0.0.1:{admin}\"\nshutdown_grace_ms = {grace_ms}\n"
    )
}

/// Creates app `edge` with the private, unreviewed namespace `proxy` that the proxies read; returns
/// the namespace's API path in `DEV`.
fn edge_proxy_namespace(center: &Center) -> &'static str {
    center.call(
        "POST",
        "/v1/apps",
        Some(serde_json::json!({"name": "edge"})),
    );
    center.call(
        "POST",
        "/v1/apps/edge/namespaces",
        Some(serde_json::json!({"name": "proxy", "public": false, "review": false})),
    );
    "/v1/apps/edge/envs/DEV/clusters/default/namespaces/proxy"
}

/// Starts a proxy on the config source `url`, its log in `dir/NAME.log`.
fn start_proxy(url: &str, dir: &std::path::Path, name: &str) -> Child {
    spawn_config_source_proxy(url, TOKEN, &dir.join(format!("{name}.log")))
}

#[test]
fn proxy_follows_the_configuration_center() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cport, admin) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let mut center = Center::start(dir.path(), cport.port());

    let ns = edge_proxy_namespace(&center);
    let doc = |text: String, version: Option<u64>| {
        let mut v = serde_json::json!({"value": {"type": "document", "value": {"format": "toml", "text": text}}});
        if let Some(n) = version {
            v["version"] = n.into();
        }
        v
    };
    let v = center.call(
        "PUT",
        &format!("{ns}/items/config"),
        Some(doc(proxy_config(admin.port(), 100), None)),
    );
    let mut version = v["version"].as_u64().expect("version");
    center.call(
        "POST",
        &format!("{ns}/publish"),
        Some(serde_json::json!({"message": "first"})),
    );

    let snapshot = dir.path().join("proxy-snapshot.json");
    let url = format!(
        "http://127.0.0.1:{}/edge/DEV/default/proxy?instance=proxy-1&snapshot={}",
        cport.port(),
        snapshot.display()
    );
    let mut proxy = start_proxy(&url, dir.path(), "proxy1");
    wait_until(Duration::from_secs(15), || {
        config_generation(admin.port()) == Some(1)
    });
    assert!(
        redis_cli(admin.port(), &["INFO"])
            .contains("config_origin:config-center edge/DEV/default/proxy")
    );

    // A publish reaches the proxy and is applied as a new snapshot.
    let v = center.call(
        "PUT",
        &format!("{ns}/items/config"),
        Some(doc(proxy_config(admin.port(), 250), Some(version))),
    );
    version = v["version"].as_u64().expect("version");
    let published = Instant::now();
    center.call(
        "POST",
        &format!("{ns}/publish"),
        Some(serde_json::json!({"message": "grace 250"})),
    );
    wait_until(Duration::from_secs(10), || {
        config_generation(admin.port()) == Some(2)
    });
    eprintln!(
        "publish → proxy applied in {:?} (admin polling included)",
        published.elapsed()
    );
    assert!(redis_cli(admin.port(), &["SHOW", "CONFIG"]).contains("shutdown_grace_ms = 250"));

    // A release that is valid TOML but an invalid proxy config is rejected; the running config stays.
    let bad = format!("{}colour = \"blue\"\n", proxy_config(admin.port(), 300));
    center.call(
        "PUT",
        &format!("{ns}/items/config"),
        Some(doc(bad, Some(version))),
    );
    center.call(
        "POST",
        &format!("{ns}/publish"),
        Some(serde_json::json!({"message": "broken"})),
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(config_generation(admin.port()), Some(2));
    assert!(redis_cli(admin.port(), &["SHOW", "CONFIG"]).contains("shutdown_grace_ms = 250"));

    // The center goes away: the proxy keeps serving its last good config.
    let _ = center.child.kill();
    let _ = center.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(redis_cli(admin.port(), &["PING"]), "PONG");
    assert_eq!(config_generation(admin.port()), Some(2));

    // A new proxy while the center is down starts from the local snapshot (the last good release).
    let _ = proxy.kill();
    let _ = proxy.wait();
    let mut proxy2 = start_proxy(&url, dir.path(), "proxy2");
    wait_until(Duration::from_secs(15), || {
        config_generation(admin.port()) == Some(1)
    });
    let info = redis_cli(admin.port(), &["INFO"]);
    assert!(info.contains("from the local snapshot"), "{info}");
    assert!(redis_cli(admin.port(), &["SHOW", "CONFIG"]).contains("shutdown_grace_ms = 250"));
    let _ = proxy2.kill();
    let _ = proxy2.wait();
}

/// Proxy settings as rule items (`config.PATH`): two proxies on one release get different effective values
/// from their own context (instance id, labels), and a changed rule is pushed and applied by both.
#[test]
fn proxies_evaluate_rule_settings_with_their_own_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cport = testkit::reserve_port().expect("port");
    let (admin_a, admin_b) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let center = Center::start(dir.path(), cport.port());
    let ns = edge_proxy_namespace(&center);
    // The document has no admin port: each instance gets its own from a rule on its id.
    center.call(
        "PUT",
        &format!("{ns}/items/config"),
        Some(
            serde_json::json!({"value": {"type": "document", "value": {"format": "toml",
            "text": "[proxy]\nexecutors = 1\nshutdown_grace_ms = 100\n"}}}),
        ),
    );
    let rule = |when: serde_json::Value, then: serde_json::Value, default: serde_json::Value| {
        serde_json::json!({"value": {"type": "rules", "value": {
            "rules": [{"when": [when], "value": then}], "default": default}}})
    };
    center.call(
        "PUT",
        &format!("{ns}/items/config.proxy.admin"),
        Some(rule(
            serde_json::json!({"op": "eq", "attr": "instance", "value": "proxy-a"}),
            format!("127.0.0.1:{}", admin_a.port()).into(),
            format!("127.0.0.1:{}", admin_b.port()).into(),
        )),
    );
    let grace = center.call(
        "PUT",
        &format!("{ns}/items/config.proxy.shutdown_grace_ms"),
        Some(rule(
            serde_json::json!({"op": "eq", "attr": "zone", "value": "east"}),
            250.into(),
            400.into(),
        )),
    );
    center.call(
        "POST",
        &format!("{ns}/publish"),
        Some(serde_json::json!({"message": "rules"})),
    );

    let base = format!("http://127.0.0.1:{}/edge/DEV/default/proxy", cport.port());
    let mut a = start_proxy(
        &format!("{base}?instance=proxy-a&labels=zone:east"),
        dir.path(),
        "proxy-a",
    );
    let mut b = start_proxy(
        &format!("{base}?instance=proxy-b&labels=zone:west"),
        dir.path(),
        "proxy-b",
    );
    for port in [admin_a.port(), admin_b.port()] {
        wait_until(Duration::from_secs(15), || {
            config_generation(port) == Some(1)
        });
    }
    let shown = |port: u16| redis_cli(port, &["SHOW", "CONFIG"]);
    assert!(
        shown(admin_a.port()).contains("shutdown_grace_ms = 250"),
        "{}",
        shown(admin_a.port())
    );
    assert!(
        shown(admin_b.port()).contains("shutdown_grace_ms = 400"),
        "{}",
        shown(admin_b.port())
    );
    assert!(redis_cli(admin_a.port(), &["INFO"]).contains("shutdown_grace_ms = 250"));

    // A changed rule is pushed and applied with each instance's context again.
    let mut changed = rule(
        serde_json::json!({"op": "in", "attr": "zone", "values": ["east", "west"]}),
        650.into(),
        400.into(),
    );
    changed["version"] = grace["version"].clone();
    center.call(
        "PUT",
        &format!("{ns}/items/config.proxy.shutdown_grace_ms"),
        Some(changed),
    );
    center.call(
        "POST",
        &format!("{ns}/publish"),
        Some(serde_json::json!({"message": "grace 650 everywhere"})),
    );
    for port in [admin_a.port(), admin_b.port()] {
        wait_until(Duration::from_secs(10), || {
            config_generation(port) == Some(2)
        });
        assert!(
            shown(port).contains("shutdown_grace_ms = 650"),
            "{}",
            shown(port)
        );
    }
    for p in [&mut a, &mut b] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// The proxies' error metrics are the health signal of a rolling publish: a proxy that got the gray
/// release and then answers most requests with errors stops the rollout by itself.
#[test]
fn proxy_error_metrics_stop_a_rolling_publish() {
    let redis = testkit::RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cport, admin, listen) = (
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
        testkit::reserve_port().expect("port"),
    );
    let center = Center::start(dir.path(), cport.port());
    let ns = edge_proxy_namespace(&center);
    let text = format!(
        "{}\n[[listeners]]\nname = \"cache\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"\ngroup = \"cache\"\n\n\
         [redis_groups.cache]\ndistribution = \"ketama\"\nservers = [{{ name = \"r0\", address = \"{}\" }}]\n",
        proxy_config(admin.port(), 100),
        listen.port(),
        redis.addr()
    );
    center.call(
        "PUT",
        &format!("{ns}/items/config"),
        Some(serde_json::json!({"value": {"type": "document", "value": {"format": "toml", "text": text}}})),
    );
    center.call(
        "POST",
        &format!("{ns}/publish"),
        Some(serde_json::json!({})),
    );
    let url = format!(
        "http://127.0.0.1:{}/edge/DEV/default/proxy?instance=p1&health_ms=200",
        cport.port()
    );
    let mut proxy = start_proxy(&url, dir.path(), "p1");
    wait_until(Duration::from_secs(15), || {
        config_generation(admin.port()) == Some(1)
    });

    // A rolling publish with an error-rate gate; its first batch is p1, the next would be in ten minutes.
    center.call(
        "PUT",
        &format!("{ns}/items/config.proxy.shutdown_grace_ms"),
        Some(serde_json::json!({"value": {"type": "integer", "value": 300}})),
    );
    let id = center.call(
        "POST",
        &format!("{ns}/publish"),
        Some(
            serde_json::json!({"mode": "rolling", "batch": {"count": 1}, "interval_ms": 600_000,
                                "health": {"max_error_rate": 0.5, "min_requests": 10}}),
        ),
    )["release"]
        .as_u64()
        .expect("release");
    let rollout = || center.call("GET", &format!("{ns}/rollouts"), None)[0].clone();
    wait_until(Duration::from_secs(15), || {
        config_generation(admin.port()) == Some(2)
    });
    let r = rollout();
    assert_eq!(
        (r["release"].as_u64(), r["status"].as_str()),
        (Some(id), Some("running")),
        "{r}"
    );

    // Clients of p1 now mostly get errors (unknown commands are answered -ERR by the proxy).
    let mut conn = resp_connect(listen.port());
    for _ in 0..10 {
        assert_eq!(resp_roundtrip(&mut conn, &["SET", "k", "v"]), "+OK");
    }
    for _ in 0..30 {
        assert!(resp_roundtrip(&mut conn, &["NOSUCHCMD"]).starts_with("-ERR"));
    }
    wait_until(Duration::from_secs(15), || rollout()["status"] == "stopped");
    let reason = rollout()["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("\"p1\"") && reason.contains("error rate"),
        "{reason}"
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
}
