//! The console's editors end to end in a real headless Chromium (as `tests/console.rs`), against a real
//! `furrow control`: the grant editor (create, change, cancel a removal, remove — each through the
//! confirmation dialog, checked against the API), the release project editor (a field-precise refusal
//! shown at the stages field, then a project defined and edited) and a new version with its gate, and the
//! password page (an administrator sets a user's password, the user logs in with it and changes it, and
//! is refused the administrators' views).

mod common;
mod webdriver;

use std::time::Duration;

use common::{BlockingApi, DevControl, wait_for};
use serde_json::json;
use webdriver::Browser;

const TOKEN: &str = "console-admin-token";

/// The grants of `subject` as (app, namespace, level, export).
fn grants_of(api: &BlockingApi, subject: &str) -> Vec<(String, String, String, bool)> {
    api.ok("GET", "/v1/permissions", None)
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["subject"] == subject)
        .map(|g| {
            (
                g["app"].as_str().unwrap().to_string(),
                g["namespace"].as_str().unwrap().to_string(),
                g["level"].as_str().unwrap().to_string(),
                g["export"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Waits until the login form is shown (it is hidden until the page learns there is no session).
fn login_shown(b: &Browser) {
    wait_for("the login form", || {
        b.script("return !document.getElementById('login').hidden;", vec![]) == json!(true)
    });
}

/// Logs out, then submits the password login form as `user` with `password`.
fn relogin_with_password(b: &Browser, user: &str, password: &str) {
    b.click("#logout");
    login_shown(b);
    b.click("#login-mode-password");
    b.fill("#login-user", user);
    b.fill("#login-password", password);
    b.click("#login-submit");
}

#[test]
fn console_grant_project_and_password_editors() {
    webdriver::require();
    let dir = tempfile::tempdir().unwrap();
    let control = DevControl::start(dir.path(), TOKEN);
    let (base, api) = (&control.base, &control.api);
    api.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    api.ok(
        "POST",
        "/v1/users",
        Some(json!({"name": "lee", "roles": ["devs"]})),
    );

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let b = Browser::start(&shots);
    let long = Duration::from_secs(15);
    b.goto(&format!("{base}/"));
    login_shown(&b);
    b.fill("#login-token", TOKEN);
    b.click("#login-submit");
    b.wait_text("#who", long, |t| t.contains("admin"));

    // The grant editor: a new grant, asked first.
    b.goto(&format!("{base}/#/access?tab=users"));
    b.wait_text("#grants-table", long, |t| t.contains("No grant"));
    b.choose("#grant-kind", "user");
    b.fill("#grant-who", "lee");
    b.choose("#grant-app", "shop");
    b.fill("#grant-namespace", "release:web:live");
    b.choose("#grant-level", "edit");
    b.click("#grant-submit");
    b.find("#confirm[open]");
    let q = b.text("#confirm-text");
    assert!(
        q.contains("Grant user:lee edit on shop/release:web:live"),
        "{q}"
    );
    b.click("#confirm-ok");
    b.wait_text("#grants-table", long, |t| t.contains("release:web:live"));
    assert_eq!(
        grants_of(api, "user:lee"),
        vec![(
            "shop".into(),
            "release:web:live".into(),
            "edit".into(),
            false
        )]
    );
    b.screenshot("40-grant-editor");

    // Changed from the table's Edit button: publish, with export.
    b.click(r#"button[aria-label="Edit the grant of user:lee on shop/release:web:live"]"#);
    b.choose("#grant-level", "publish");
    b.click("#grant-export");
    b.click("#grant-submit");
    b.find("#confirm[open]");
    let q = b.text("#confirm-text");
    assert!(q.contains("from edit to publish, with export"), "{q}");
    b.click("#confirm-ok");
    wait_for("the changed grant", || {
        grants_of(api, "user:lee")
            == vec![(
                "shop".into(),
                "release:web:live".into(),
                "publish".into(),
                true,
            )]
    });
    b.wait_text("#grants-table", long, |t| t.contains("publish"));
    // Span ingest, kept with the rest when the grant is edited again.
    b.click(r#"button[aria-label="Edit the grant of user:lee on shop/release:web:live"]"#);
    b.click("#grant-trace-ingest");
    b.click("#grant-submit");
    b.find("#confirm[open]");
    let q = b.text("#confirm-text");
    assert!(q.contains("with export, with span ingest"), "{q}");
    b.click("#confirm-ok");
    wait_for("span ingest", || {
        api.ok("GET", "/v1/permissions", None)
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["subject"] == "user:lee" && g["trace_ingest"] == true && g["export"] == true)
    });
    b.wait_text("#grants-table", long, |t| t.contains("send"));

    // A refusal of the API is shown at its field: an unknown application (typed into the select).
    b.fill("#grant-who", "devs");
    b.choose("#grant-kind", "role");
    b.script(
        "const s = document.querySelector('#grant-app'); s.append(new Option('nope', 'nope')); s.value = 'nope';",
        vec![],
    );
    b.fill("#grant-namespace", "*");
    b.click("#grant-submit");
    b.confirm();
    b.wait_text("#grant-app-err", long, |t| {
        t.contains("unknown application")
    });
    assert!(grants_of(api, "role:devs").is_empty());

    // Removal: cancelled first (nothing changes), then confirmed.
    let remove = r#"button[aria-label="Remove the grant of user:lee on shop/release:web:live"]"#;
    b.click(remove);
    b.find("#confirm[open]");
    assert!(
        b.text("#confirm-text")
            .contains("Remove user:lee's publish and export")
    );
    b.click("#confirm-cancel");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(grants_of(api, "user:lee").len(), 1);
    b.click(remove);
    b.confirm();
    wait_for("the grant removed", || {
        grants_of(api, "user:lee").is_empty()
    });
    b.wait_text("#grants-table", long, |t| t.contains("No grant"));
    let audit = api.ok("GET", "/v1/audit?target=user:lee&limit=20", None);
    assert_eq!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "grant")
            .count(),
        4, // made, changed, span ingest added, removed
        "{audit:#}"
    );

    // The project editor: the API's field-precise refusal lands at the stages field.
    b.goto(&format!("{base}/#/releases"));
    b.click("#project-new");
    b.find("#project-form");
    b.fill("#project-name", "web");
    b.choose("#project-app", "shop");
    b.fill("#project-gate", "true\necho gate-ran");
    b.fill("#project-hook-start", "echo start");
    b.fill("#project-probe", "http://127.0.0.1:${PORT}/");
    b.fill(
        "#project-stages",
        r#"[{"name": "live", "hosts": ["h1", "h2"], "window": {"allow": ["funday 09:00-10:00"]}}]"#,
    );
    b.click("#project-submit");
    b.confirm();
    let err = b.wait_text("#project-stages-err", long, |t| !t.is_empty());
    assert!(err.contains("stages/0/window/allow/0"), "{err}");
    b.screenshot("41-project-editor-error");
    b.fill(
        "#project-stages",
        r#"[{"name": "dev", "hosts": ["d1"]}, {"name": "live", "hosts": ["h1", "h2"], "batches": [{"count": 1}, "rest"], "canary": {"min_samples": 40, "trace_service": "web-api"}}]"#,
    );
    b.click("#project-submit");
    b.confirm();
    b.wait_text("#project-title", long, |t| t.contains("web (shop)"));
    let p = api.ok("GET", "/v1/release/projects/web", None)["project"].clone();
    assert_eq!(p["gate"]["commands"], json!(["true", "echo gate-ran"]));
    assert_eq!(p["hooks"]["start"], "echo start");
    assert_eq!(p["probe"]["url"], "http://127.0.0.1:${PORT}/");
    assert_eq!(p["stages"][1]["canary"]["trace_service"], "web-api");
    assert_eq!(p["stages"][1]["hosts"], json!(["h1", "h2"]));

    // Edited: the form comes back filled in; a changed repository (where the gate runs) and a webhook.
    b.click("#project-edit");
    b.wait_text("#project-form", long, |t| t.contains("Edit project web"));
    let stages = b.script(
        "return document.querySelector('#project-stages').value;",
        vec![],
    );
    assert!(stages.as_str().unwrap().contains("web-api"), "{stages}");
    let repo = dir.path().to_str().unwrap();
    b.fill("#project-repo", repo);
    b.fill("#project-webhooks", "http://127.0.0.1:9/hook");
    b.click("#project-submit");
    b.confirm();
    wait_for("the edited project", || {
        let p = api.ok("GET", "/v1/release/projects/web", None)["project"].clone();
        p["repo"] == repo && p["webhooks"] == json!(["http://127.0.0.1:9/hook"])
    });
    let p = api.ok("GET", "/v1/release/projects/web", None)["project"].clone();
    assert_eq!(p["stages"].as_array().unwrap().len(), 2, "{p:#}");
    assert_eq!(p["gate"]["commands"], json!(["true", "echo gate-ran"]));

    // A new version, its gate run at once.
    b.goto(&format!("{base}/#/releases?project=web"));
    b.click("#version-new");
    b.fill("#version-name", "1.0.0");
    b.fill("#version-inline", "echo hello");
    b.fill("#version-revision", "abc123");
    b.click("#version-submit");
    b.confirm();
    wait_for("the gate", || {
        api.rt
            .block_on(
                api.client
                    .call("GET", "/v1/release/projects/web/versions/1.0.0", None),
            )
            .is_ok_and(|v| v["gate"]["status"] == "passed")
    });
    let v = api.ok("GET", "/v1/release/projects/web/versions/1.0.0", None);
    assert_eq!(v["revision"], "abc123");
    assert_eq!(v["artifact"], json!({"inline": "echo hello"}));
    b.wait_text("#versions-table", long, |t| t.contains("1.0.0"));
    // The same name again: the API's refusal, shown at the version field.
    b.goto(&format!("{base}/#/releases?project=web&add=version"));
    b.fill("#version-name", "1.0.0");
    b.fill("#version-inline", "echo again");
    b.click("#version-submit");
    b.confirm();
    b.wait_text("#version-error", long, |t| t.contains("exists"));
    b.screenshot("42-version-form");

    // The password page: an administrator sets lee's; the two entries must agree.
    b.goto(&format!("{base}/#/access?tab=password"));
    b.fill("#password-user", "lee");
    b.fill("#password-new", "lee-password-1");
    b.fill("#password-again", "lee-password-2");
    b.click("#password-submit");
    b.wait_text("#password-again-err", long, |t| t.contains("differ"));
    b.fill("#password-again", "lee-password-1");
    b.click("#password-submit");
    b.confirm();
    b.wait_text("#password-result", long, |t| t.contains("was changed"));
    b.screenshot("43-password");

    // lee logs in with it, changes their own, and the new one is the one that works.
    relogin_with_password(&b, "lee", "lee-password-1");
    b.wait_text("#who", long, |t| t.contains("lee"));
    b.goto(&format!("{base}/#/access?tab=password"));
    // Not an administrator: the user field is theirs, read-only.
    wait_for("lee's own password form", || {
        b.script(
            "const e = document.querySelector('#password-user'); return e && e.readOnly && e.value;",
            vec![],
        ) == json!("lee")
    });
    b.fill("#password-new", "short");
    b.fill("#password-again", "short");
    b.click("#password-submit");
    b.confirm();
    b.wait_text("#password-result", long, |t| t.contains("bad_request"));
    b.fill("#password-new", "lee-password-new");
    b.fill("#password-again", "lee-password-new");
    b.click("#password-submit");
    b.confirm();
    b.wait_text("#password-result", long, |t| t.contains("was changed"));
    // Not an administrator: the grant editor's data is refused, and shown so.
    b.goto(&format!("{base}/#/access?tab=users"));
    b.wait_text("#tabpanel", long, |t| t.contains("forbidden"));
    relogin_with_password(&b, "lee", "lee-password-1");
    b.wait_text("#login-error", long, |t| t.contains("unauthorized"));
    b.fill("#login-password", "lee-password-new");
    b.click("#login-submit");
    b.wait_text("#who", long, |t| t.contains("lee"));
}
