//! Cluster-wide rate limits: the token service of a control node (`POST SVC/tokens`) and the Rust client
//! library's `Governor` taking leased tokens from it, with the local share as fallback when the center
//! stops. A real server on loopback, real HTTP.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use control::client::ApiClient;
use control::model::now_ms;
use control::registry::govern::{Call, Governor, Refusal};
use control::registry::rules::RuleSet;
use control::registry::tokens::{ClusterTokens, TokenStats};
use serde_json::json;

const SVC: &str = "/v1/registry/DEV/services/orders";

fn service_with_rules(admin: &Api, rules: serde_json::Value) -> RuleSet {
    admin.ok("POST", "/v1/apps", Some(json!({"name": "shop"})));
    admin.ok(
        "PUT",
        SVC,
        Some(json!({"app": "shop", "owner": "o", "docs": "d"})),
    );
    admin.ok("POST", &format!("{SVC}/live"), Some(json!({"live": true})));
    let set = admin.ok(
        "PUT",
        &format!("{SVC}/rules"),
        Some(json!({"rules": rules, "version": 0})),
    );
    serde_json::from_value(set).unwrap()
}

#[test]
fn the_token_service_shares_one_budget_and_refuses_bad_asks() {
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    service_with_rules(
        &admin,
        json!([{"kind": "rate_limit", "qps": 20, "scope": "caller", "cluster": true},
               {"kind": "rate_limit", "qps": 20}]),
    );
    let tokens = format!("{SVC}/tokens");
    let ask = |client: &str, want: u32| {
        admin.ok(
            "POST",
            &tokens,
            Some(json!({"client": client, "version": 1,
                        "asks": [{"rule": 0, "key": "web", "want": want}]})),
        )
    };
    let t0 = Instant::now();
    let a = ask("proxy-a", 15);
    let b = ask("proxy-b", 15);
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!(a["granted"], json!([15]), "a full bucket holds one second");
    let got_b = b["granted"][0].as_u64().unwrap();
    // B gets what A left, plus what refilled while the two requests ran.
    assert!(
        got_b as f64 <= 5.0 + (20.0 * elapsed).ceil(),
        "{got_b} tokens after {elapsed}s"
    );
    assert_eq!(b["clients"], 2, "two clients share the budget");
    // Precise errors, nothing counted.
    assert_eq!(
        admin.err(
            "POST",
            &tokens,
            Some(json!({"client": "a", "version": 7, "asks": [{"rule": 0, "want": 1}]}))
        ),
        (409, "version_conflict".into(), Some("version".into()))
    );
    assert_eq!(
        admin.err(
            "POST",
            &tokens,
            Some(json!({"client": "a", "version": 1, "asks": [{"rule": 1, "want": 1}]}))
        ),
        (400, "bad_request".into(), Some("asks/0/rule".into()))
    );
    assert_eq!(
        admin
            .err(
                "POST",
                &tokens,
                Some(json!({"client": "a", "version": 1, "asks": [{"rule": 0, "wants": 1}]}))
            )
            .0,
        400
    );
    // A user who may not read the service may not take its tokens.
    let none = Api::new(&server, &user_with(&admin, "nobody", "none"));
    assert_eq!(
        none.err(
            "POST",
            &tokens,
            Some(json!({"client": "a", "version": 1, "asks": [{"rule": 0, "want": 1}]}))
        )
        .0,
        403
    );
    let stats = admin.ok("GET", "/v1/registry/stats", None);
    assert_eq!(stats["token_requests"], 2);
    assert_eq!(stats["tokens_granted"], 15 + got_b);
    // Validation: a cluster-wide limit is a qps budget with the reject control.
    assert_eq!(
        admin.err(
            "PUT",
            &format!("{SVC}/rules"),
            Some(json!({"rules": [{"kind": "rate_limit", "concurrency": 3, "cluster": true}]}))
        ),
        (400, "bad_request".into(), Some("rules/0/cluster".into()))
    );
}

/// Calls `g.admit` for `for_ms` (real clock), releasing each permit; returns the calls admitted.
fn admitted(gs: &mut [Governor], for_ms: u64) -> Vec<u32> {
    let mut ok = vec![0; gs.len()];
    let end = Instant::now() + Duration::from_millis(for_ms);
    let call = Call {
        caller: "web",
        ..Default::default()
    };
    while Instant::now() < end {
        for (i, g) in gs.iter_mut().enumerate() {
            match g.admit(&call, now_ms()) {
                Ok(p) => {
                    ok[i] += 1;
                    g.release(p);
                }
                Err(r) => assert_eq!(r, Refusal::RateLimited { rule: 0 }),
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    ok
}

#[test]
fn two_library_clients_stay_within_one_cluster_limit_and_fall_back_to_their_share() {
    let server = start("sqlite::memory:");
    let admin = Api::new(&server, ADMIN_TOKEN);
    let qps = 10.0;
    let rules = service_with_rules(
        &admin,
        json!([{"kind": "rate_limit", "qps": qps, "cluster": true}]),
    );
    let api = ApiClient::new(&format!("http://{}", server.addr), Some(ADMIN_TOKEN));
    let stats: Vec<Arc<TokenStats>> = (0..2).map(|_| Arc::default()).collect();
    let tokens: Vec<Arc<ClusterTokens>> = (0..2)
        .map(|i| {
            Arc::new(
                ClusterTokens::start(api.clone(), &rules, &format!("app-{i}"), stats[i].clone())
                    .expect("a cluster rule"),
            )
        })
        .collect();
    let mut gs: Vec<Governor> = tokens
        .iter()
        .map(|t| Governor::with_cluster(rules.clone(), Some(t.clone())))
        .collect();
    // The service-scope budget is leased at start: wait until both clients heard from the center.
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.ok("GET", "/v1/registry/stats", None)["token_requests"]
        .as_u64()
        .unwrap()
        < 2
    {
        assert!(Instant::now() < deadline, "no token requests");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    let ok = admitted(&mut gs, 2_000);
    let secs = t0.elapsed().as_secs_f64();
    let total: u32 = ok.iter().sum();
    // One budget: at most one second of burst plus the rate, plus what each client may hold (one lease
    // of 200 ms of its share).
    let most = qps * (secs + 1.0) + 2.0 * (qps * 0.2).ceil();
    assert!(
        f64::from(total) <= most,
        "{ok:?} admitted in {secs:.2}s, at most {most}"
    );
    // Each client alone would have had the whole rate; together they used about it, and both got some.
    assert!(f64::from(total) >= qps * secs * 0.5, "{ok:?} in {secs:.2}s");
    assert!(ok.iter().all(|n| *n > 0), "{ok:?}");
    for s in &stats {
        assert!(s.leased.load(std::sync::atomic::Ordering::Relaxed) > 0);
    }

    // The center stops: each client falls back to its share (qps / 2 clients).
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokens.iter().any(|t| t.online()) {
        // Calls wake the fetchers, whose requests now fail.
        let _ = admitted(&mut gs, 50);
        assert!(
            Instant::now() < deadline,
            "clients did not notice the center stopped"
        );
    }
    let t0 = Instant::now();
    let ok = admitted(&mut gs, 2_000);
    let secs = t0.elapsed().as_secs_f64();
    let share = qps / 2.0;
    for n in &ok {
        assert!(
            f64::from(*n) <= share * (secs + 1.0) + 1.0,
            "{ok:?} in {secs:.2}s, share {share}"
        );
        assert!(f64::from(*n) >= share * secs * 0.5, "{ok:?} in {secs:.2}s");
    }
    for s in &stats {
        assert!(s.fallback.load(std::sync::atomic::Ordering::Relaxed) > 0);
        assert!(s.errors.load(std::sync::atomic::Ordering::Relaxed) > 0);
    }
}
