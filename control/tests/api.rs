//! The configuration center's HTTP API end to end on loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn environments_are_isolated_and_resolution_order_holds() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let layers = [
        (
            ns("pay", "PRO", "default", "common"),
            vec!["a", "b", "c", "d"],
        ),
        (ns("pay", "PRO", "east", "common"), vec!["b", "c", "d"]),
        (ns("shop", "PRO", "default", "common"), vec!["c", "d"]),
        (ns("shop", "PRO", "east", "common"), vec!["d"]),
    ];
    for (i, (path, keys)) in layers.iter().enumerate() {
        for k in keys {
            set(&api, path, k, string(&format!("layer{i}")));
        }
        publish(&api, path, json!({"message": format!("layer {i}")}));
    }
    let c = config(&api, "shop", "PRO", "east", "common", "");
    for (k, want) in [
        ("a", "layer0"),
        ("b", "layer1"),
        ("c", "layer2"),
        ("d", "layer3"),
    ] {
        assert_eq!(c["items"][k]["value"]["value"], want, "key {k}: {c}");
    }
    assert_eq!(c["releases"].as_array().unwrap().len(), 4);
    // The default cluster skips the cluster layers.
    let c = config(&api, "shop", "PRO", "default", "common", "");
    assert_eq!(c["items"]["b"]["value"]["value"], "layer0");
    // Another environment sees nothing of PRO.
    let dev = config(&api, "shop", "DEV", "default", "common", "");
    assert_eq!(dev["items"], json!({}));
    // The owner does not see the override.
    let owner = config(&api, "pay", "PRO", "default", "common", "");
    assert_eq!(owner["items"]["c"]["value"]["value"], "layer0");
    // Unknown namespace, environment, cluster: 404 with the field.
    assert_eq!(
        api.err("GET", "/v1/configs/shop/PRO/default/nope", None),
        (404, "not_found".into(), Some("namespace".into()))
    );
    assert_eq!(
        api.err("GET", "/v1/configs/shop/XXX/default/app", None)
            .2
            .as_deref(),
        Some("env")
    );
    assert_eq!(
        api.err("GET", "/v1/configs/shop/DEV/east/app", None)
            .2
            .as_deref(),
        Some("cluster")
    );
    assert_eq!(
        api.err(
            "PUT",
            &format!("{}/items/k", ns("shop", "DEV", "default", "nope")),
            Some(json!({"value": int(1)}))
        )
        .0,
        404
    );
}

#[test]
fn publish_diff_rollback() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "timeout", int(100));
    set(&api, &p, "name", string("a"));
    let r1 = publish(&api, &p, json!({"message": "first"}))["release"]
        .as_u64()
        .unwrap();
    set(&api, &p, "timeout", int(200));
    api.ok("DELETE", &format!("{p}/items/name"), None);
    set(&api, &p, "hosts", json!({"type": "list", "value": ["h1"]}));
    let d = api.ok("GET", &format!("{p}/diff"), None);
    assert!(
        d["added"]["hosts"].is_object()
            && d["removed"]["name"].is_object()
            && d["changed"]["timeout"].is_array(),
        "{d}"
    );
    let r2 = publish(&api, &p, json!({"message": "second"}))["release"]
        .as_u64()
        .unwrap();
    let rel = api.ok("GET", &format!("/v1/releases/{r2}"), None);
    assert_eq!(
        (rel["author"].as_str(), rel["message"].as_str()),
        (Some("admin"), Some("second"))
    );
    let d = api.ok("GET", &format!("/v1/diff?from={r1}&to={r2}"), None);
    assert_eq!(d["changed"]["timeout"][1]["value"]["value"], 200);
    assert_eq!(d["removed"]["name"]["value"]["value"], "a");
    assert_eq!(
        config(&api, "shop", "DEV", "default", "app", "")["items"]["timeout"]["value"]["value"],
        200
    );
    let back = api.ok(
        "POST",
        &format!("{p}/rollback"),
        Some(json!({"release": r1, "message": "bad"})),
    )["release"]
        .as_u64()
        .unwrap();
    assert!(back > r2);
    let c = config(&api, "shop", "DEV", "default", "app", "");
    assert_eq!(c["items"]["timeout"]["value"]["value"], 100);
    assert!(c["items"].get("hosts").is_none());
    let list = api.ok("GET", &format!("{p}/releases"), None);
    assert_eq!(list["current"], back);
    assert_eq!(list["releases"].as_array().unwrap().len(), 3);
    // Audit has every action.
    let audit = api.ok("GET", "/v1/audit?limit=100", None);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for want in [
        "app.create",
        "item.put",
        "item.delete",
        "publish",
        "rollback",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    // Rollback to an unknown release: 404.
    assert_eq!(
        api.err(
            "POST",
            &format!("{p}/rollback"),
            Some(json!({"release": 99999}))
        )
        .0,
        404
    );
}

#[test]
fn gray_by_label_and_instance_then_promote_and_abandon() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "UAT", "default", "app");
    set(&api, &p, "k", int(1));
    publish(&api, &p, json!({}));
    set(&api, &p, "k", int(2));
    let g1 = publish(
        &api,
        &p,
        json!({"mode": "gray", "rule": {"labels": {"canary": "yes"}}}),
    )["release"]
        .as_u64()
        .unwrap();
    set(&api, &p, "k", int(3));
    let g2 = publish(
        &api,
        &p,
        json!({"mode": "gray", "rule": {"instances": ["i-7"]}}),
    )["release"]
        .as_u64()
        .unwrap();
    let k = |q: &str| {
        config(&api, "shop", "UAT", "default", "app", q)["items"]["k"]["value"]["value"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(k("instance=i-1"), 1);
    assert_eq!(k("instance=i-1&labels=canary:yes"), 2);
    assert_eq!(k("instance=i-7"), 3);
    assert_eq!(
        api.ok("GET", &format!("{p}/grays"), None)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    api.ok("POST", &format!("{p}/grays/{g1}/abandon"), None);
    assert_eq!(k("instance=i-1&labels=canary:yes"), 1);
    api.ok(
        "POST",
        &format!("{p}/grays/{g2}/promote"),
        Some(json!({"message": "all"})),
    );
    assert_eq!(k("instance=i-1"), 3);
    assert_eq!(api.ok("GET", &format!("{p}/grays"), None), json!([]));
    assert_eq!(
        api.err("POST", &format!("{p}/grays/{g2}/promote"), None).0,
        404
    );
    assert_eq!(
        api.err(
            "POST",
            &format!("{p}/publish"),
            Some(json!({"mode": "gray", "rule": {}}))
        )
        .2
        .as_deref(),
        Some("rule")
    );
}

#[test]
fn review_permissions_and_masked_read() {
    let srv = start("sqlite::memory:");
    let admin = Api::new(&srv, ADMIN_TOKEN);
    seed(&admin);
    admin.ok(
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "secrets", "review": true})),
    );
    let mut tokens = std::collections::HashMap::new();
    for (user, level) in [
        ("ed", "edit"),
        ("pub", "publish"),
        ("peek", "masked_read"),
        ("reader", "read"),
    ] {
        admin.ok(
            "POST",
            "/v1/users",
            Some(json!({"name": user, "roles": []})),
        );
        let t = admin.ok("POST", "/v1/tokens", Some(json!({"user": user})))["token"]
            .as_str()
            .unwrap()
            .to_string();
        admin.ok("PUT", "/v1/permissions", Some(json!({"subject": format!("user:{user}"), "app": "shop", "namespace": "*", "level": level})));
        tokens.insert(user, Api::new(&srv, &t));
    }
    let p = ns("shop", "DEV", "default", "secrets");
    set(&tokens["ed"], &p, "password", string("hunter2"));
    // Editors cannot publish; a publisher who edited cannot publish under review; another can.
    assert_eq!(
        tokens["ed"]
            .err("POST", &format!("{p}/publish"), Some(json!({})))
            .1,
        "forbidden"
    );
    set(&tokens["pub"], &p, "user", string("app"));
    assert_eq!(
        tokens["pub"].err("POST", &format!("{p}/publish"), Some(json!({}))),
        (403, "review_required".into(), None)
    );
    publish(&admin, &p, json!({"message": "reviewed"}));
    // Masked read hides values; read shows them; none gets 403.
    let masked = tokens["peek"].ok("GET", "/v1/configs/shop/DEV/default/secrets", None);
    assert_eq!(masked["items"]["password"]["value"]["value"], "******");
    assert_eq!(masked["items"]["password"]["masked"], true);
    let items = tokens["peek"].ok("GET", &format!("{p}/items"), None);
    assert_eq!(items[0]["value"]["value"], "******");
    let full = tokens["reader"].ok("GET", "/v1/configs/shop/DEV/default/secrets", None);
    assert_eq!(full["items"]["password"]["value"]["value"], "hunter2");
    assert_eq!(
        tokens["reader"]
            .err(
                "PUT",
                &format!("{p}/items/x"),
                Some(json!({"value": int(1)}))
            )
            .0,
        403
    );
    assert_eq!(
        tokens["reader"]
            .err("GET", "/v1/configs/pay/DEV/default/common", None)
            .0,
        403
    );
    // Export needs the export flag.
    assert_eq!(
        tokens["reader"]
            .err("GET", "/v1/apps/shop/envs/DEV/export", None)
            .0,
        403
    );
    admin.ok("PUT", "/v1/permissions", Some(json!({"subject": "user:reader", "app": "shop", "namespace": "*", "level": "read", "export": true})));
    let exp = tokens["reader"].ok("GET", "/v1/apps/shop/envs/DEV/export", None);
    assert_eq!(
        exp["default/secrets"]["items"]["password"]["value"]["value"],
        "hunter2"
    );
    // Admin-only endpoints and bad tokens.
    assert_eq!(tokens["reader"].err("GET", "/v1/audit", None).0, 403);
    let nobody = Api::new(&srv, "wrong");
    assert_eq!(
        nobody.err("GET", "/v1/apps", None),
        (401, "unauthorized".into(), None)
    );
    // Roles work like users.
    admin.ok(
        "POST",
        "/v1/users",
        Some(json!({"name": "ops1", "roles": ["ops"]})),
    );
    let t = admin.ok("POST", "/v1/tokens", Some(json!({"user": "ops1"})))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ops = Api::new(&srv, &t);
    assert_eq!(ops.err("GET", &format!("{p}/items"), None).0, 403);
    admin.ok(
        "PUT",
        "/v1/permissions",
        Some(
            json!({"subject": "role:ops", "app": "shop", "namespace": "secrets", "level": "read"}),
        ),
    );
    assert_eq!(
        ops.ok("GET", &format!("{p}/items"), None)[1]["value"]["value"],
        "app"
    );
}

#[test]
fn bad_input_gets_precise_errors_and_changes_nothing() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "FAT", "default", "app");
    let item = format!("{p}/items/doc");
    let bad_json =
        json!({"value": {"type": "document", "value": {"format": "json", "text": "{\"a\": "}}});
    assert_eq!(
        api.err("PUT", &item, Some(bad_json)),
        (400, "invalid_document".into(), Some("value".into()))
    );
    let bad_yaml =
        json!({"value": {"type": "document", "value": {"format": "yaml", "text": "a: [1,"}}});
    assert_eq!(api.err("PUT", &item, Some(bad_yaml)).1, "invalid_document");
    let bad_xml =
        json!({"value": {"type": "document", "value": {"format": "xml", "text": "<a><b></a>"}}});
    assert_eq!(api.err("PUT", &item, Some(bad_xml)).1, "invalid_document");
    let schema = json!({"type": "object", "required": ["port"], "properties": {"port": {"type": "integer", "maximum": 65535}}});
    let violating = json!({"value": {"type": "document", "value": {"format": "toml", "text": "port = 70000"}}, "schema": schema});
    assert_eq!(
        api.err("PUT", &item, Some(violating)),
        (400, "schema_violation".into(), Some("value/port".into()))
    );
    let good = json!({"value": {"type": "document", "value": {"format": "toml", "text": "port = 7000"}}, "schema": schema});
    assert_eq!(api.ok("PUT", &item, Some(good))["version"], 1);
    // Conflicting concurrent edits: both read version 1, the second write loses with 409.
    let v1 = json!({"value": {"type": "document", "value": {"format": "toml", "text": "port = 1"}}, "version": 1});
    let v1b = json!({"value": {"type": "document", "value": {"format": "toml", "text": "port = 2"}}, "version": 1});
    assert_eq!(api.ok("PUT", &item, Some(v1))["version"], 2);
    assert_eq!(
        api.err("PUT", &item, Some(v1b)),
        (409, "version_conflict".into(), Some("version".into()))
    );
    assert_eq!(
        api.err("PUT", &item, Some(json!({"value": int(1)}))).1,
        "already_exists"
    );
    assert_eq!(
        api.ok("GET", &item, None)["value"]["value"]["text"],
        "port = 1"
    );
    let ini = json!({"value": {"type": "document", "value": {"format": "ini", "text": "a=1"}}});
    assert_eq!(
        api.err("PUT", &item, Some(ini)),
        (
            400,
            "unsupported_format".into(),
            Some("value/format".into())
        )
    );
    // Malformed bodies, names and parameters.
    assert_eq!(
        api.err("PUT", &format!("{p}/items/x"), Some(json!({"valu": 1})))
            .2
            .as_deref(),
        Some("valu") // unknown fields are refused (issue 17, item 2) before the missing one is noticed
    );
    assert_eq!(
        api.err("PUT", &format!("{p}/items/x"), Some(json!({})))
            .2
            .as_deref(),
        Some("value")
    );
    assert_eq!(
        api.err(
            "PUT",
            &format!("{p}/items/x"),
            Some(json!({"value": {"type": "integer", "value": "z"}}))
        )
        .0,
        400
    );
    assert_eq!(
        api.err("POST", "/v1/apps", Some(json!({"name": "bad name"})))
            .2
            .as_deref(),
        Some("app")
    );
    assert_eq!(
        api.err("POST", "/v1/apps", Some(json!({"name": "shop"}))).0,
        409
    );
    assert_eq!(api.err("DELETE", &format!("{item}?version=1"), None).0, 409);
    assert_eq!(
        api.err(
            "GET",
            "/v1/watch?app=shop&env=FAT&namespace=app&since=x",
            None
        )
        .2
        .as_deref(),
        Some("since")
    );
    assert_eq!(api.err("GET", "/v1/nowhere", None).0, 404);
    // Unsupported schema keyword.
    let s = json!({"value": string("x"), "schema": {"pattern": "^x$"}});
    assert_eq!(
        api.err("PUT", &format!("{p}/items/s"), Some(s))
            .2
            .as_deref(),
        Some("schema")
    );
    // Nothing of the failed requests is in the draft.
    let keys: Vec<String> = api
        .ok("GET", &format!("{p}/items"), None)
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().into())
        .collect();
    assert_eq!(keys, vec!["doc"]);
}

#[test]
fn list_items_are_edited_one_by_one() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(
        &api,
        &p,
        "hosts",
        json!({"type": "list", "value": ["a", "b"]}),
    );
    api.ok(
        "POST",
        &format!("{p}/items/hosts/list"),
        Some(json!({"value": "c"})),
    );
    api.ok(
        "PUT",
        &format!("{p}/items/hosts/list/0"),
        Some(json!({"value": "z", "version": 2})),
    );
    let it = api.ok("DELETE", &format!("{p}/items/hosts/list/1"), None);
    assert_eq!(it["value"]["value"], json!(["z", "c"]));
    assert_eq!(
        api.err(
            "PUT",
            &format!("{p}/items/hosts/list/9"),
            Some(json!({"value": "q"}))
        )
        .0,
        404
    );
    assert_eq!(
        api.err(
            "PUT",
            &format!("{p}/items/hosts/list/0"),
            Some(json!({"value": "q", "version": 1}))
        )
        .0,
        409
    );
}

#[test]
fn long_poll_wakes_on_publish_and_natural_waits_for_refresh() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "k", int(1));
    publish(&api, &p, json!({}));
    let since = config(&api, "shop", "DEV", "default", "app", "")["version"]
        .as_u64()
        .unwrap();
    let server = format!("http://{}", srv.addr);
    let watcher = std::thread::spawn(move || {
        let c = control::client::ApiClient::new(&server, Some(ADMIN_TOKEN));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = format!(
            "/v1/watch?app=shop&env=DEV&cluster=default&namespace=app&since={since}&timeout=20000"
        );
        let r = rt
            .block_on(c.call_status("GET", &path, None, Duration::from_secs(30)))
            .unwrap();
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    set(&api, &p, "k", int(2));
    let t0 = Instant::now();
    publish(&api, &p, json!({}));
    let ((status, body), woke) = watcher.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["items"]["k"]["value"]["value"], 2);
    println!(
        "publish -> watcher latency: {:?}",
        woke.saturating_duration_since(t0)
    );
    // A natural publish does not wake watchers: the watch returns at its timeout with the new config.
    let since = body["version"].as_u64().unwrap();
    set(&api, &p, "k", int(3));
    publish(&api, &p, json!({"mode": "natural"}));
    let t = Instant::now();
    let path = format!("/v1/watch?app=shop&env=DEV&namespace=app&since={since}&timeout=400");
    let (status, body) = api
        .status("GET", &path, None, Duration::from_secs(5))
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "natural publish woke the watcher"
    );
    assert_eq!(
        (status, body["items"]["k"]["value"]["value"].as_i64()),
        (200, Some(3))
    );
    // No change at all: 304 at the timeout.
    let since = body["version"].as_u64().unwrap();
    let path = format!("/v1/watch?app=shop&env=DEV&namespace=app&since={since}&timeout=100");
    assert_eq!(
        api.status("GET", &path, None, Duration::from_secs(5))
            .unwrap()
            .0,
        304
    );
}

#[test]
fn scheduled_publish_happens_at_its_time() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "k", int(5));
    let at = control::model::now_ms() + 300;
    let out = publish(&api, &p, json!({"mode": "scheduled", "at_ms": at}));
    assert!(
        out["scheduled"].is_u64() && out["release"].is_null(),
        "{out}"
    );
    assert_eq!(
        config(&api, "shop", "DEV", "default", "app", "")["items"],
        json!({})
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = config(&api, "shop", "DEV", "default", "app", "");
        if c["items"]["k"]["value"]["value"] == 5 {
            assert!(control::model::now_ms() >= at);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scheduled publish never happened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_are_prometheus_text() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    config(&api, "shop", "DEV", "default", "app", "");
    let (status, body) = api
        .status("GET", "/metrics", None, Duration::from_secs(5))
        .unwrap();
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    assert!(
        text.contains("furrow_control_config_reads_total 1"),
        "{text}"
    );
    assert!(text.contains("furrow_control_http_requests_total"));
}
