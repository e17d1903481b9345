//! The web console's server side over real HTTP: assets at `/`, login → HttpOnly session cookie, the CSRF
//! header on every write made with the cookie, logout and token revocation ending sessions, permissions
//! applied to session calls exactly as to bearer calls, the inheritance view, and the proxy fleet derived from
//! instance reports. (The pages themselves are driven in a real browser by the workspace's
//! `tests/console.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::{ADMIN_TOKEN, Api, ns, publish, seed, set, string, user_with};
use serde_json::{Value as Json, json};

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or(Json::Null)
    }
}

/// One HTTP/1.1 request with the given extra headers.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Logs in with `token`; returns (cookie header value, csrf token).
fn login(addr: SocketAddr, token: &str) -> (String, String) {
    let r = http(
        addr,
        "POST",
        "/console/login",
        &[("X-Furrow-CSRF", "login")],
        &json!({"token": token}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let set_cookie = r.header("set-cookie").unwrap().to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    (cookie, r.json()["csrf"].as_str().unwrap().to_string())
}

#[test]
fn the_console_is_served_at_the_root_with_a_strict_policy() {
    let server = common::start("sqlite::memory:");
    let r = http(server.addr, "GET", "/", &[], "");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("/console/assets/js/app.js"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let js = http(
        server.addr,
        "GET",
        "/console/assets/js/pages/config.js",
        &[],
        "",
    );
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    let missing = http(server.addr, "GET", "/console/assets/js/nope.js", &[], "");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    // The API is unchanged: no cookie, no token, 401.
    assert_eq!(http(server.addr, "GET", "/v1/apps", &[], "").status, 401);
}

#[test]
fn login_gives_an_httponly_cookie_and_writes_need_the_csrf_header() {
    let server = common::start("sqlite::memory:");
    let a = server.addr;
    // Login needs the custom header (a cross-site form cannot send it) and a valid token.
    let no_header = http(
        a,
        "POST",
        "/console/login",
        &[],
        r#"{"token":"root-token"}"#,
    );
    assert_eq!(no_header.status, 403);
    assert_eq!(no_header.json()["error"]["field"], "csrf");
    let bad = http(
        a,
        "POST",
        "/console/login",
        &[("X-Furrow-CSRF", "login")],
        r#"{"token":"wrong"}"#,
    );
    assert_eq!(bad.status, 401);
    let r = http(
        a,
        "POST",
        "/console/login",
        &[("X-Furrow-CSRF", "login")],
        r#"{"token":"root-token"}"#,
    );
    assert_eq!(r.status, 200);
    let set_cookie = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(!r.body.contains("root-token"), "the token is never echoed");
    let (cookie, csrf) = login(a, ADMIN_TOKEN);

    // Reads with the cookie act as the token's user.
    let who = http(a, "GET", "/v1/whoami", &[("Cookie", &cookie)], "");
    assert_eq!(who.status, 200);
    assert_eq!(who.json()["name"], "admin");
    let session = http(a, "GET", "/console/session", &[("Cookie", &cookie)], "");
    assert_eq!(session.json()["csrf"], csrf.as_str());

    // A write with the cookie but without (or with a wrong) CSRF header is refused and changes nothing.
    let body = r#"{"name":"shop"}"#;
    for hdrs in [
        vec![("Cookie", cookie.as_str())],
        vec![("Cookie", cookie.as_str()), ("X-Furrow-CSRF", "guess")],
    ] {
        let r = http(a, "POST", "/v1/apps", &hdrs, body);
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(r.json()["error"]["field"], "csrf");
    }
    let apps = http(a, "GET", "/v1/apps", &[("Cookie", &cookie)], "");
    assert_eq!(apps.json(), json!([]));
    let ok = http(
        a,
        "POST",
        "/v1/apps",
        &[("Cookie", &cookie), ("X-Furrow-CSRF", &csrf)],
        body,
    );
    assert_eq!(ok.status, 201, "{}", ok.body);

    // Logout ends the session and clears the cookie.
    let out = http(
        a,
        "POST",
        "/console/logout",
        &[("Cookie", &cookie), ("X-Furrow-CSRF", &csrf)],
        "",
    );
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        http(a, "GET", "/v1/whoami", &[("Cookie", &cookie)], "").status,
        401
    );
    assert_eq!(
        http(a, "GET", "/console/session", &[("Cookie", &cookie)], "").status,
        401
    );
}

#[test]
fn session_calls_have_exactly_the_tokens_permissions_and_die_with_it() {
    let server = common::start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    seed(&admin);
    let nsp = ns("shop", "PRO", "default", "app");
    set(&admin, &nsp, "greeting", string("hello"));
    let reader = user_with(&admin, "reader", "read");
    let (cookie, csrf) = login(server.addr, &reader);
    let items = http(
        server.addr,
        "GET",
        &format!("{nsp}/items"),
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(items.status, 200);
    assert_eq!(items.json()[0]["key"], "greeting");
    let write = http(
        server.addr,
        "PUT",
        &format!("{nsp}/items/greeting"),
        &[("Cookie", &cookie), ("X-Furrow-CSRF", &csrf)],
        &json!({"value": {"type": "string", "value": "x"}, "version": 1}).to_string(),
    );
    assert_eq!(write.status, 403);
    assert_eq!(write.json()["error"]["code"], "forbidden");
    // Revoking the token ends every session opened with it at the next request.
    let tokens = admin.ok("GET", "/v1/tokens", None);
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "reader")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    admin.ok("DELETE", &format!("/v1/tokens/{id}"), None);
    let after = http(
        server.addr,
        "GET",
        &format!("{nsp}/items"),
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(after.status, 401);
}

#[test]
fn the_inheritance_view_names_the_layer_of_every_value() {
    let server = common::start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    seed(&admin);
    // Public namespace `common` of `pay`: pay/default sets a and b; shop/east overrides b and adds c.
    let owner = ns("pay", "PRO", "default", "common");
    set(&admin, &owner, "a", string("from pay"));
    set(&admin, &owner, "b", string("from pay"));
    publish(&admin, &owner, json!({"message": "pay"}));
    let mine = ns("shop", "PRO", "east", "common");
    set(&admin, &mine, "b", string("from shop east"));
    set(&admin, &mine, "c", string("only shop east"));
    publish(&admin, &mine, json!({"message": "shop"}));
    let v = admin.ok("GET", "/console/api/layers/shop/PRO/east/common", None);
    let layers = v["layers"].as_array().unwrap();
    let at = |app: &str, cluster: &str| {
        layers
            .iter()
            .position(|l| l["app"] == app && l["cluster"] == cluster)
            .unwrap()
    };
    let (pay_default, shop_east) = (at("pay", "default"), at("shop", "east"));
    assert!(pay_default < shop_east);
    assert_eq!(layers[at("shop", "default")]["release"], Json::Null);
    assert_eq!(v["items"]["a"]["from"], pay_default);
    assert_eq!(v["items"]["b"]["from"], shop_east);
    assert_eq!(v["items"]["b"]["overrides"], json!([pay_default]));
    assert_eq!(v["items"]["b"]["item"]["value"]["value"], "from shop east");
    assert_eq!(v["items"]["c"]["overrides"], json!([]));
    // Unknown namespace instance: 404 naming the field; no permission: 403.
    let (status, code, field) = admin.err("GET", "/console/api/layers/shop/PRO/west/common", None);
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (404, "not_found", Some("cluster"))
    );
    let nobody = user_with(&admin, "nobody", "none");
    let api = Api::new(&server, &nobody);
    assert_eq!(
        api.err("GET", "/console/api/layers/shop/PRO/east/common", None)
            .0,
        403
    );
}

#[test]
fn the_fleet_is_the_reporting_instances_with_a_proxy_config() {
    let server = common::start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    seed(&admin);
    let nsp = ns("shop", "PRO", "default", "app");
    // A port nothing listens on: the admin address is known but unreachable.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    set(
        &admin,
        &nsp,
        "config",
        json!({"type": "document", "value": {"format": "toml",
            "text": format!("[proxy]\nadmin = \"0.0.0.0:{port}\"\nadmin_password = \"s3cret\"\n")}}),
    );
    let rel = publish(&admin, &nsp, json!({"message": "proxy"}))["release"]
        .as_u64()
        .unwrap();
    let report = |id: &str| {
        json!({"app": "shop", "env": "PRO", "cluster": "default", "namespace": "app", "id": id,
               "ip": "127.0.0.1", "labels": {}, "releases": [rel], "version": rel})
    };
    admin.ok("POST", "/v1/reports", Some(report("p1")));
    let fleet = admin.ok("GET", "/console/api/proxies", None);
    assert_eq!(fleet.as_array().unwrap().len(), 1, "{fleet}");
    assert_eq!(fleet[0]["key"], "shop/PRO/default/app/p1");
    // The wildcard host becomes the reported IP; the password never leaves the center.
    assert_eq!(fleet[0]["admin"], format!("127.0.0.1:{port}"));
    assert!(!fleet.to_string().contains("s3cret"));
    let (status, code, _) = admin.err(
        "GET",
        "/console/api/proxies/shop/PRO/default/app/p1/backends",
        None,
    );
    assert_eq!((status, code.as_str()), (502, "bad_gateway"));
    let (status, _, field) = admin.err(
        "GET",
        "/console/api/proxies/shop/PRO/default/app/p1/shutdown",
        None,
    );
    assert_eq!((status, field.as_deref()), (404, Some("view")));
    let (status, _, field) = admin.err(
        "GET",
        "/console/api/proxies/shop/PRO/default/app/nope/info",
        None,
    );
    assert_eq!((status, field.as_deref()), (404, Some("id")));
    // A reader sees the fleet and may read views, but actions need publish.
    let reader = user_with(&admin, "reader", "read");
    let api = Api::new(&server, &reader);
    assert_eq!(
        api.ok("GET", "/console/api/proxies", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, code, _) = api.err(
        "POST",
        "/console/api/proxies/shop/PRO/default/app/p1/action",
        Some(json!({"action": "reload"})),
    );
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let (status, _, field) = admin.err(
        "POST",
        "/console/api/proxies/shop/PRO/default/app/p1/action",
        Some(json!({"action": "offline"})),
    );
    assert_eq!((status, field.as_deref()), (400, Some("backend")));
    // An instance whose config is no proxy document is not in the fleet.
    let other = ns("shop", "PRO", "east", "app");
    set(&admin, &other, "greeting", string("hi"));
    let rel2 = publish(&admin, &other, json!({"message": "x"}))["release"]
        .as_u64()
        .unwrap();
    admin.ok(
        "POST",
        "/v1/reports",
        Some(
            json!({"app": "shop", "env": "PRO", "cluster": "east", "namespace": "app", "id": "svc",
                    "ip": "127.0.0.1", "labels": {}, "releases": [rel2], "version": rel2}),
        ),
    );
    let nobody = user_with(&admin, "nobody", "none");
    assert_eq!(
        Api::new(&server, &nobody).ok("GET", "/console/api/proxies", None),
        json!([])
    );
    assert_eq!(
        admin
            .ok("GET", "/console/api/proxies", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn password_logins_get_a_session_token_revoked_at_logout() {
    let server = common::start("sqlite::memory:");
    let a = server.addr;
    let admin = Api::new(&server, ADMIN_TOKEN);
    seed(&admin);
    let viewer = user_with(&admin, "viewer", "read");
    user_with(&admin, "other", "read");
    // Passwords: at least 8 characters; a user sets their own, not someone else's; the hash never shows.
    let (status, _, field) = admin.err(
        "PUT",
        "/v1/users/viewer/password",
        Some(json!({"password": "short"})),
    );
    assert_eq!((status, field.as_deref()), (400, Some("password")));
    for body in [
        json!({}),
        json!({"password": 12345678}),
        json!({"pasword": "x"}),
    ] {
        let (status, _, _) = admin.err("PUT", "/v1/users/viewer/password", Some(body));
        assert_eq!(status, 400);
    }
    let own = Api::new(&server, &viewer);
    own.ok(
        "PUT",
        "/v1/users/viewer/password",
        Some(json!({"password": "correct horse"})),
    );
    assert_eq!(
        own.err(
            "PUT",
            "/v1/users/other/password",
            Some(json!({"password": "correct horse"}))
        )
        .0,
        403
    );
    let users = admin.ok("GET", "/v1/users", None).to_string();
    assert!(!users.contains("pbkdf2"), "{users}");
    assert!(
        !own.ok("GET", "/v1/whoami", None)
            .to_string()
            .contains("pbkdf2")
    );
    let (status, _, field) = admin.err(
        "POST",
        "/v1/users",
        Some(json!({"name": "viewer", "password": "pbkdf2-sha256$1$00$00"})),
    );
    assert_eq!((status, field.as_deref()), (400, Some("password")));
    // Updating the user's roles keeps the password.
    admin.ok(
        "POST",
        "/v1/users",
        Some(json!({"name": "viewer", "roles": ["ops"]})),
    );

    let login = |body: Json| {
        http(
            a,
            "POST",
            "/console/login",
            &[("X-Furrow-CSRF", "login")],
            &body.to_string(),
        )
    };
    let wrong = login(json!({"user": "viewer", "password": "wrong horse"}));
    let unknown = login(json!({"user": "nobody", "password": "correct horse"}));
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(
        wrong.json()["error"]["message"],
        unknown.json()["error"]["message"]
    );
    assert_eq!(
        login(json!({"user": "viewer", "token": "x"})).json()["error"]["field"],
        "token"
    );
    let r = login(json!({"user": "viewer", "password": "correct horse"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"]["name"], "viewer");
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    // The session acts with a token of its own, with the user's permissions.
    let sessions = |admin: &Api| {
        admin
            .ok("GET", "/v1/tokens", None)
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["user"] == "viewer" && t["description"] == "console session")
            .count()
    };
    assert_eq!(sessions(&admin), 1);
    let nsp = ns("shop", "PRO", "default", "app");
    let items = http(
        a,
        "GET",
        &format!("{nsp}/items"),
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(items.status, 200);
    let write = http(
        a,
        "PUT",
        &format!("{nsp}/items/k"),
        &[("Cookie", &cookie), ("X-Furrow-CSRF", &csrf)],
        &json!({"value": {"type": "string", "value": "x"}}).to_string(),
    );
    assert_eq!(write.status, 403);
    // Logout revokes that token.
    let out = http(
        a,
        "POST",
        "/console/logout",
        &[("Cookie", &cookie), ("X-Furrow-CSRF", &csrf)],
        "",
    );
    assert_eq!(out.status, 200);
    assert_eq!(sessions(&admin), 0);
    // Removing the password (here with the CLI) ends password logins.
    #[derive(clap::Parser)]
    struct Top {
        #[command(flatten)]
        ctl: control::cli::CtlArgs,
    }
    let server_url = format!("http://{a}");
    let argv = [
        "ctl",
        "--server",
        &server_url,
        "--token",
        ADMIN_TOKEN,
        "config",
        "set-password",
        "viewer",
        "--remove",
    ];
    assert_eq!(
        control::cli::run_ctl(<Top as clap::Parser>::try_parse_from(argv).unwrap().ctl),
        std::process::ExitCode::SUCCESS
    );
    assert_eq!(
        login(json!({"user": "viewer", "password": "correct horse"})).status,
        401
    );
}

/// The center keeps the health windows that come with reports as a series per instance and namespace
/// instance (`/console/api/history/...`): in order, with rates per window; rejected reports add nothing;
/// readers with `masked_read` see it, users without a grant on the namespace do not.
#[test]
fn the_history_keeps_the_reported_health_windows() {
    let server = common::start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    seed(&admin);
    let nsp = ns("shop", "PRO", "default", "app");
    set(&admin, &nsp, "greeting", string("hi"));
    let rel = publish(&admin, &nsp, json!({"message": "x"}))["release"]
        .as_u64()
        .unwrap();
    let report = |id: &str, requests: u64, errors: u64, status: &str| {
        json!({"app": "shop", "env": "PRO", "cluster": "default", "namespace": "app", "id": id,
               "ip": "127.0.0.1", "labels": {}, "releases": [rel], "version": rel, "status": status,
               "health": {"requests": requests, "errors": errors, "window_ms": 2000}})
    };
    admin.ok("POST", "/v1/reports", Some(report("p1", 100, 4, "applied")));
    admin.ok("POST", "/v1/reports", Some(report("p1", 300, 0, "applied")));
    admin.ok(
        "POST",
        "/v1/reports",
        Some(report("p1", 999, 999, "rejected")),
    );
    admin.ok("POST", "/v1/reports", Some(report("p2", 7, 7, "applied")));
    let path = "/console/api/history/shop/PRO/default/app/p1";
    let h = admin.ok("GET", path, None);
    let points = h["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{h}");
    assert_eq!(
        (&points[0]["requests"], &points[0]["errors"]),
        (&json!(100), &json!(4))
    );
    assert_eq!(points[0]["requests_per_s"], 50.0);
    assert_eq!(points[0]["errors_per_s"], 2.0);
    assert_eq!(points[1]["requests"], 300);
    assert!(points[0]["at_ms"].as_u64() <= points[1]["at_ms"].as_u64());
    assert_eq!(h["namespace"], "shop/PRO/default/app");
    // Another instance is another series; an instance that never reported has none.
    let p2 = admin.ok("GET", "/console/api/history/shop/PRO/default/app/p2", None);
    assert_eq!(p2["points"].as_array().unwrap().len(), 1);
    let none = admin.ok("GET", "/console/api/history/shop/PRO/default/app/p9", None);
    assert_eq!(none["points"], json!([]));
    // Permissions: masked_read suffices (counts only); no grant, no history; unknown namespaces are 404.
    let masked = Api::new(&server, &user_with(&admin, "masked", "masked_read"));
    assert_eq!(
        masked.ok("GET", path, None)["points"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let stranger = Api::new(&server, &user_with(&admin, "stranger", "none"));
    let (status, code, _) = stranger.err("GET", path, None);
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let (status, _, _) = admin.err("GET", "/console/api/history/shop/PRO/default/nope/p1", None);
    assert_eq!(status, 404);
    let (status, _, field) = admin.err(
        "GET",
        "/console/api/history/shop/PRO/default/app/p1?since_s=soon",
        None,
    );
    assert_eq!((status, field.as_deref()), (400, Some("since_s")));
}
