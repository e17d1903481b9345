//! Secret items (issue 17): encrypted at rest with the center's key, masked in the management API, in clear
//! only in configs read with `read`; key rotation with a re-seal.

mod common;

use std::sync::Arc;

use common::*;
use control::center::{Center, CenterOptions};
use control::secret::Keyring;
use control::server::Server;
use serde_json::json;

const NEW_KEY: &str = "t2:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

fn node(url: &str, keys: Option<&str>) -> Result<Server, control::ControlError> {
    let store = control::store::open(url)?;
    let mut opts = CenterOptions::new(vec!["DEV".into()], "admin", Some(ADMIN_TOKEN));
    opts.secret_keys = keys.map(|k| Arc::new(Keyring::parse(k).unwrap()));
    Ok(Server::start(Center::open_with(store, opts)?, "127.0.0.1:0", 1).unwrap())
}

/// Every stored record's JSON, straight from the SQLite file.
fn raw_records(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT data FROM records").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn secrets_are_encrypted_at_rest_masked_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.db");
    let url = format!("sqlite:{}", file.display());
    let p = ns("shop", "DEV", "default", "app");
    {
        let srv = node(&url, Some(TEST_KEY)).unwrap();
        let api = Api::new(&srv, ADMIN_TOKEN);
        api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
        api.ok(
            "POST",
            "/v1/apps/shop/namespaces",
            Some(json!({"name": "app"})),
        );
        let it = api.ok(
            "PUT",
            &format!("{p}/items/pw"),
            Some(json!({"value": string("hunter2"), "secret": true})),
        );
        assert_eq!(it["masked"], true, "a write does not echo the secret: {it}");
        set(&api, &p, "plain", int(1));
        let rel = publish(&api, &p, json!({}))["release"].as_u64().unwrap();
        // Masked in the management API, for administrators too.
        assert_eq!(
            api.ok("GET", &format!("{p}/items/pw"), None)["value"]["value"],
            "******"
        );
        let r = api.ok("GET", &format!("/v1/releases/{rel}"), None);
        let pw = r["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["key"] == "pw")
            .unwrap()
            .clone();
        assert_eq!(
            (pw["masked"].clone(), pw["value"]["value"].clone()),
            (json!(true), json!("******"))
        );
        // In clear in the resolved config for `read`, masked for `masked_read`.
        let c = config(&api, "shop", "DEV", "default", "app", "");
        assert_eq!(c["items"]["pw"]["value"]["value"], "hunter2");
        let m = Api::new(&srv, &user_with(&api, "viewer", "masked_read"));
        let c = m.ok("GET", "/v1/configs/shop/DEV/default/app", None);
        assert_eq!(c["items"]["pw"]["value"]["value"], "******");
        // Only `publish` may turn the flag off.
        let ed = Api::new(&srv, &user_with(&api, "ed", "edit"));
        assert_eq!(
            ed.err(
                "PUT",
                &format!("{p}/items/pw"),
                Some(json!({"value": string("x"), "version": 1, "secret": false}))
            ),
            (403, "forbidden".into(), Some("secret".into()))
        );
    }
    // At rest: ciphertext only.
    let recs = raw_records(&file);
    assert!(
        recs.iter().all(|r| !r.contains("hunter2")),
        "clear secret in the store"
    );
    assert!(
        recs.iter().filter(|r| r.contains("fw1:t1:")).count() >= 2,
        "draft and release sealed"
    );
    // Without the key the center refuses to start rather than serve placeholders.
    let e = node(&url, None).err().expect("started without the key");
    assert!(e.message.contains("--secret-key-file"), "{e}");
    // Rotation: the new key first, the old one still listed; re-seal; then the old key can go.
    let both = format!("{NEW_KEY}\n{TEST_KEY}\n");
    {
        let srv = node(&url, Some(&both)).unwrap();
        let api = Api::new(&srv, ADMIN_TOKEN);
        assert_eq!(
            config(&api, "shop", "DEV", "default", "app", "")["items"]["pw"]["value"]["value"],
            "hunter2"
        );
        let n = api.ok("POST", "/v1/secrets/reseal", None)["records"]
            .as_u64()
            .unwrap();
        assert!(n >= 2, "{n}");
    }
    let recs = raw_records(&file);
    assert!(
        recs.iter()
            .all(|r| !r.contains("fw1:t1:") && !r.contains("hunter2"))
    );
    let srv = node(&url, Some(NEW_KEY)).unwrap();
    let api = Api::new(&srv, ADMIN_TOKEN);
    assert_eq!(
        config(&api, "shop", "DEV", "default", "app", "")["items"]["pw"]["value"]["value"],
        "hunter2"
    );
    assert_eq!(
        api.ok("GET", &format!("{p}/items/pw"), None)["secret"],
        true
    );
}

#[test]
fn secret_items_need_a_key() {
    let srv = node("sqlite::memory:", None).unwrap();
    let api = Api::new(&srv, ADMIN_TOKEN);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api.ok(
        "POST",
        "/v1/apps/shop/namespaces",
        Some(json!({"name": "app"})),
    );
    let p = ns("shop", "DEV", "default", "app");
    assert_eq!(
        api.err(
            "PUT",
            &format!("{p}/items/pw"),
            Some(json!({"value": string("x"), "secret": true}))
        ),
        (400, "bad_request".into(), Some("secret".into()))
    );
}
