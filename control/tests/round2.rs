//! Issue 17, round 2 of the configuration center: each defect found by trying it as a new user, as a test
//! against the real HTTP API.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn doc(format: &str, text: &str) -> serde_json::Value {
    json!({"type": "document", "value": {"format": format, "text": text}})
}

/// Item 1: a hostile deeply nested document is a 400 for every format, and the service keeps running.
#[test]
fn deeply_nested_documents_are_refused_not_fatal() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    let n = 20_000;
    let docs = [
        ("yaml", format!("{}x", "- ".repeat(n))),
        ("json", format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        ("toml", format!("a = {}1{}", "[".repeat(n), "]".repeat(n))),
        ("xml", format!("{}{}", "<a>".repeat(n), "</a>".repeat(n))),
    ];
    for (f, text) in docs {
        assert_eq!(
            api.err(
                "PUT",
                &format!("{p}/items/d"),
                Some(json!({"value": doc(f, &text)}))
            ),
            (400, "invalid_document".into(), Some("value".into())),
            "{f}"
        );
    }
    api.ok(
        "PUT",
        &format!("{p}/items/d"),
        Some(json!({"value": doc("yaml", "- - x")})),
    );
}

/// Item 2: an update without `schema` keeps it; only `publish` may change or drop it; unknown fields are refused.
#[test]
fn schema_survives_updates_and_unknown_fields_are_refused() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let ed = Api::new(&srv, &user_with(&api, "ed", "edit"));
    let p = ns("shop", "DEV", "default", "app");
    let item = format!("{p}/items/port");
    let schema = json!({"type": "integer", "minimum": 1});
    api.ok(
        "PUT",
        &item,
        Some(json!({"value": int(80), "schema": schema})),
    );
    // The editor changes the value: the schema stays and still applies.
    let it = ed.ok("PUT", &item, Some(json!({"value": int(81), "version": 1})));
    assert_eq!(it["schema"], schema);
    assert_eq!(
        ed.err("PUT", &item, Some(json!({"value": int(0), "version": 2})))
            .1,
        "schema_violation"
    );
    // The editor may neither drop nor replace it.
    assert_eq!(
        ed.err(
            "PUT",
            &item,
            Some(json!({"value": int(0), "version": 2, "schema": null}))
        ),
        (403, "forbidden".into(), Some("schema".into()))
    );
    assert_eq!(
        ed.err(
            "PUT",
            &item,
            Some(json!({"value": int(5), "version": 2, "schema": {"type": "integer"}}))
        )
        .2,
        Some("schema".into())
    );
    // A misspelt field is refused, not ignored.
    assert_eq!(
        api.err(
            "PUT",
            &item,
            Some(json!({"value": int(5), "version": 2, "shcema": {}}))
        ),
        (400, "bad_request".into(), Some("shcema".into()))
    );
    assert_eq!(
        api.err(
            "POST",
            &format!("{p}/publish"),
            Some(json!({"mesage": "typo"}))
        )
        .2,
        Some("mesage".into())
    );
    assert_eq!(
        api.err("POST", "/v1/apps", Some(json!({"name": "x", "descr": ""})))
            .2,
        Some("descr".into())
    );
    // The administrator may drop it.
    let it = api.ok(
        "PUT",
        &item,
        Some(json!({"value": int(0), "version": 2, "schema": null})),
    );
    assert!(it.get("schema").is_none(), "{it}");
    // The refused attempts are in the audit log, with their target.
    let audit = api.ok("GET", "/v1/audit?limit=50", None);
    let denied: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "denied")
        .collect();
    assert_eq!(denied.len(), 2, "{audit}");
    assert!(
        denied
            .iter()
            .all(|a| a["actor"] == "ed" && a["target"] == "shop/DEV/default/app")
    );
}

/// Item 4: reports need a credential for that namespace, expire, and are bounded; item "instance status":
/// a rejection shows with its reason.
#[test]
fn instance_reports_need_a_credential_expire_and_are_bounded() {
    let srv = start_with("sqlite::memory:", |o| {
        o.report_ttl = Duration::from_millis(300);
        o.max_reports = 3;
    });
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let nobody = Api::new(&srv, &user_with(&api, "nobody", "none"));
    let reader = Api::new(&srv, &user_with(&api, "reader", "masked_read"));
    let report = |id: &str| {
        json!({"app": "shop", "env": "DEV", "cluster": "default", "namespace": "app", "id": id, "ip": "10.0.0.1",
               "labels": {}, "releases": [], "version": 0})
    };
    assert_eq!(
        nobody.err("POST", "/v1/reports", Some(report("fake"))).0,
        403
    );
    let mut other_app = report("x");
    other_app["app"] = json!("pay");
    other_app["namespace"] = json!("nope");
    assert_eq!(reader.err("POST", "/v1/reports", Some(other_app)).0, 404);
    let mut extra = report("x");
    extra["bogus"] = json!(1);
    assert_eq!(
        reader.err("POST", "/v1/reports", Some(extra)).2,
        Some("bogus".into())
    );
    let mut rejected = report("p0");
    rejected["status"] = json!("rejected");
    rejected["reason"] = json!("invalid backend address");
    reader.ok("POST", "/v1/reports", Some(rejected));
    let p = ns("shop", "DEV", "default", "app");
    let list = api.ok("GET", &format!("{p}/instances"), None);
    assert_eq!(list[0]["status"], "rejected", "{list}");
    assert_eq!(list[0]["reason"], "invalid backend address");
    for i in 1..6 {
        reader.ok("POST", "/v1/reports", Some(report(&format!("p{i}"))));
    }
    let list = api.ok("GET", &format!("{p}/instances"), None);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["p3", "p4", "p5"],
        "the oldest are dropped beyond the bound"
    );
    // Without news from the instances, their reports expire.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api
        .ok("GET", &format!("{p}/instances"), None)
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "reports never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(srv.center.report_count() <= 3);
}

/// Item 5: tokens are listed, expire, are revoked with everything minted under them, and a new bootstrap
/// token invalidates the old one and its descendants.
#[test]
fn tokens_list_expire_revoke_and_follow_the_bootstrap_token() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("c.db").display());
    let (minted, child) = {
        let srv = start(&url);
        let api = Api::new(&srv, ADMIN_TOKEN);
        api.ok(
            "POST",
            "/v1/users",
            Some(json!({"name": "ops", "admin": true})),
        );
        let minted = api.ok(
            "POST",
            "/v1/tokens",
            Some(json!({"user": "ops", "description": "ci"})),
        );
        let ops = Api::new(&srv, minted["token"].as_str().unwrap());
        let child = ops.ok("POST", "/v1/tokens", Some(json!({"user": "ops"})))["token"]
            .as_str()
            .unwrap()
            .to_string();
        let short = api.ok(
            "POST",
            "/v1/tokens",
            Some(json!({"user": "ops", "ttl_s": 1})),
        );
        let list = api.ok("GET", "/v1/tokens", None);
        assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
        assert!(
            list.to_string()
                .find(minted["token"].as_str().unwrap())
                .is_none(),
            "no secrets listed"
        );
        // Expiry.
        let s = Api::new(&srv, short["token"].as_str().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.call("GET", "/v1/whoami", None).is_ok() {
            assert!(Instant::now() < deadline, "the token never expired");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(s.err("GET", "/v1/whoami", None).0, 401);
        // Revocation takes the tokens minted with it along.
        let c = Api::new(&srv, &child);
        c.ok("GET", "/v1/whoami", None);
        let id = minted["id"].as_str().unwrap();
        assert_eq!(
            api.ok("DELETE", &format!("/v1/tokens/{id}"), None)["revoked"],
            2
        );
        assert_eq!(ops.err("GET", "/v1/whoami", None).0, 401);
        assert_eq!(c.err("GET", "/v1/whoami", None).0, 401);
        assert_eq!(api.err("DELETE", "/v1/tokens/ffff", None).0, 404);
        // A token minted with the bootstrap token, for the restart below.
        let m = api.ok("POST", "/v1/tokens", Some(json!({"user": "ops"})))["token"]
            .as_str()
            .unwrap()
            .to_string();
        (m, child)
    };
    // Restart with the same bootstrap token: everything still valid.
    {
        let srv = start(&url);
        Api::new(&srv, &minted).ok("GET", "/v1/whoami", None);
        Api::new(&srv, ADMIN_TOKEN).ok("GET", "/v1/whoami", None);
        assert_eq!(Api::new(&srv, &child).err("GET", "/v1/whoami", None).0, 401);
    }
    // Restart with a new one: the old one and what it minted stop working.
    let store = control::store::open(&url).unwrap();
    let envs = vec!["DEV".to_string()];
    let center = control::center::Center::open(store, envs, "admin", Some("new-root")).unwrap();
    let srv = control::server::Server::start(center, "127.0.0.1:0", 1).unwrap();
    assert_eq!(
        Api::new(&srv, ADMIN_TOKEN).err("GET", "/v1/whoami", None).0,
        401
    );
    assert_eq!(
        Api::new(&srv, &minted).err("GET", "/v1/whoami", None).0,
        401
    );
    assert_eq!(
        Api::new(&srv, "new-root").ok("GET", "/v1/whoami", None)["name"],
        "admin"
    );
}

/// Item 7: every error is JSON; dot-only names are refused.
#[test]
fn every_error_is_json_and_dot_names_are_refused() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    assert_eq!(api.err("GET", "/v1/releases/abc", None).1, "bad_request");
    assert_eq!(api.err("GET", "/v1/nothing-here", None).1, "not_found");
    assert_eq!(
        api.err("DELETE", "/v1/apps", None),
        (405, "method_not_allowed".into(), None)
    );
    let big = "x".repeat(3 << 20);
    let p = ns("shop", "DEV", "default", "app");
    assert_eq!(
        api.err(
            "PUT",
            &format!("{p}/items/big"),
            Some(json!({"value": string(&big)}))
        )
        .1,
        "payload_too_large"
    );
    for name in ["..", "..."] {
        assert_eq!(
            api.err("POST", "/v1/apps", Some(json!({"name": name}))).2,
            Some("app".into())
        );
        assert_eq!(
            api.err(
                "POST",
                "/v1/apps/shop/namespaces",
                Some(json!({"name": name}))
            )
            .0,
            400
        );
    }
}

/// Item 9: a publish wakes only the watchers of the namespace it changed; no changes, no release; retention.
#[test]
fn wake_ups_are_per_namespace_empty_publishes_refused_and_releases_retained() {
    let srv = start_with("sqlite::memory:", |o| o.keep_releases = 3);
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    api.ok(
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "other"})),
    );
    let p = ns("shop", "DEV", "default", "app");
    let mut rx_app = srv.center.subscribe("DEV", "app");
    let mut rx_other = srv.center.subscribe("DEV", "other");
    let mut rx_pro = srv.center.subscribe("PRO", "app");
    rx_app.mark_unchanged();
    rx_other.mark_unchanged();
    rx_pro.mark_unchanged();
    set(&api, &p, "k", int(1));
    let first = publish(&api, &p, json!({}))["release"].as_u64().unwrap();
    assert!(rx_app.has_changed().unwrap());
    assert!(
        !rx_other.has_changed().unwrap(),
        "another namespace's watchers were woken"
    );
    assert!(
        !rx_pro.has_changed().unwrap(),
        "another environment's watchers were woken"
    );
    // Publishing an unchanged draft makes no release.
    assert_eq!(
        api.err("POST", &format!("{p}/publish"), Some(json!({}))),
        (400, "bad_request".into(), Some("draft".into()))
    );
    let releases = |api: &Api| api.ok("GET", &format!("{p}/releases"), None);
    assert_eq!(releases(&api)["releases"].as_array().unwrap().len(), 1);
    // Retention: 3 releases per namespace instance, the current one always among them.
    for v in 2..=6 {
        set(&api, &p, "k", int(v));
        publish(&api, &p, json!({}));
    }
    let r = releases(&api);
    let ids: Vec<u64> = r["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{r}");
    assert_eq!(Some(ids[0]), r["current"].as_u64());
    assert_eq!(
        api.err("GET", &format!("/v1/releases/{first}"), None).0,
        404
    );
    assert_eq!(
        config(&api, "shop", "DEV", "default", "app", "")["items"]["k"]["value"]["value"],
        6
    );
}

/// Item 10: scheduled publishes are listed and cancelled; the audit log has old and new values, masked for
/// secret items.
#[test]
fn scheduled_publishes_cancel_and_audit_values() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    set(&api, &p, "k", int(1));
    let far = control::model::now_ms() + 3_600_000;
    let s = publish(&api, &p, json!({"mode": "scheduled", "at_ms": far}))["scheduled"]
        .as_u64()
        .unwrap();
    let list = api.ok("GET", &format!("{p}/scheduled"), None);
    assert_eq!(list[0]["id"], s);
    assert_eq!(list[0]["at_ms"], far);
    let ed = Api::new(&srv, &user_with(&api, "ed", "edit"));
    assert_eq!(ed.err("DELETE", &format!("{p}/scheduled/{s}"), None).0, 403);
    api.ok("DELETE", &format!("{p}/scheduled/{s}"), None);
    assert_eq!(api.ok("GET", &format!("{p}/scheduled"), None), json!([]));
    assert_eq!(
        api.err("DELETE", &format!("{p}/scheduled/{s}"), None).0,
        404
    );
    // Audit: old and new values; secrets masked.
    set(&api, &p, "k", int(2));
    api.ok(
        "PUT",
        &format!("{p}/items/pw"),
        Some(json!({"value": string("hunter2"), "secret": true})),
    );
    api.ok(
        "PUT",
        &format!("{p}/items/pw"),
        Some(json!({"value": string("hunter3"), "version": 1})),
    );
    let audit = api.ok("GET", "/v1/audit?target=shop/DEV/default/app/", None);
    let puts: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "item.put")
        .collect();
    let k = puts
        .iter()
        .find(|a| a["target"].as_str().unwrap().ends_with("/k") && a["detail"]["version"] == 2)
        .unwrap();
    assert_eq!(k["detail"]["old"], int(1));
    assert_eq!(k["detail"]["new"], int(2));
    assert!(!audit.to_string().contains("hunter"), "{audit}");
    let pw = puts
        .iter()
        .find(|a| a["target"].as_str().unwrap().ends_with("/pw") && a["detail"]["version"] == 2)
        .unwrap();
    assert_eq!(pw["detail"]["old"], "******");
    assert_eq!(pw["detail"]["new"], "******");
}

/// New capability: dynamic values evaluated over HTTP for a context, with the same answer as the client
/// library (layers and gray releases included), and only for callers with `read`.
#[test]
fn rule_values_are_evaluated_over_http() {
    let srv = start("sqlite::memory:");
    let api = Api::new(&srv, ADMIN_TOKEN);
    seed(&api);
    let p = ns("shop", "DEV", "default", "app");
    let table = json!({"type": "rules", "value": {
        "rules": [
            {"when": [{"op": "eq", "attr": "region", "value": "eu"}], "value": "eu-db"},
            {"when": [{"op": "percent", "attr": "user", "from": 0, "to": 50, "salt": "db"}], "value": "canary-db"}
        ],
        "default": "main-db"}});
    set(&api, &p, "db", table.clone());
    set(&api, &p, "port", int(80));
    publish(&api, &p, json!({}));
    let eval = |api: &Api, body: serde_json::Value| api.ok("POST", "/v1/evaluate", Some(body));
    let base = json!({"app": "shop", "env": "DEV", "namespace": "app"});
    let mut b = base.clone();
    b["context"] = json!({"region": "eu"});
    let r = eval(&api, b);
    assert_eq!(
        r["values"]["db"],
        json!({"value": "eu-db", "rule": 0, "dynamic": true})
    );
    assert_eq!(r["values"]["port"], json!({"value": 80, "dynamic": false}));
    // The answer matches the client library's evaluation for every user.
    let snap: control::client::ConfigSnapshot =
        serde_json::from_value(config(&api, "shop", "DEV", "default", "app", "")).unwrap();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let mut b = base.clone();
        b["keys"] = json!(["db"]);
        b["context"] = json!({"user": user});
        let ctx = [("user".to_string(), user.to_string())]
            .into_iter()
            .collect();
        assert_eq!(
            eval(&api, b)["values"]["db"]["value"],
            snap.evaluate("db", &ctx).unwrap(),
            "{user}"
        );
    }
    // A gray release is evaluated for the instances it selects.
    let mut gray = table.clone();
    gray["value"]["default"] = json!("gray-db");
    set(&api, &p, "db", gray);
    publish(
        &api,
        &p,
        json!({"mode": "gray", "rule": {"instances": ["i1"]}}),
    );
    let mut b = base.clone();
    b["instance"] = json!({"id": "i1"});
    b["keys"] = json!(["db"]);
    assert_eq!(eval(&api, b.clone())["values"]["db"]["value"], "gray-db");
    b["instance"] = json!({"id": "i2"});
    assert_eq!(eval(&api, b.clone())["values"]["db"]["value"], "main-db");
    // Unknown key, unknown field, too little permission.
    b["keys"] = json!(["nope"]);
    assert_eq!(
        api.err("POST", "/v1/evaluate", Some(b.clone())),
        (404, "not_found".into(), Some("keys".into()))
    );
    let mut bad = base.clone();
    bad["ctx"] = json!({});
    assert_eq!(
        api.err("POST", "/v1/evaluate", Some(bad)).2,
        Some("ctx".into())
    );
    let viewer = Api::new(&srv, &user_with(&api, "viewer", "masked_read"));
    assert_eq!(viewer.err("POST", "/v1/evaluate", Some(base)).0, 403);
}
