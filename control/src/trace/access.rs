//! Who may read which spans, from the control core's grants (`/v1/permissions`).
//!
//! The same model as the configuration center: a grant gives a level on an application and a
//! namespace (`*` for all of either). A span's service (`service.name`) is read as the application
//! and its `service.namespace` (an OpenTelemetry resource attribute, kept on each span record at
//! ingest, see `super::model::records`) as the namespace: a user reads a span when a grant gives it
//! (or one of its roles) at least `Read` on that application (or `*`) and on that namespace (or `*`).
//! A span without a namespace belongs to the application as a whole: only a grant on namespace `*`
//! reads it. Grants have no environment (as in the configuration center, a grant covers every
//! environment). Administrators read everything. The proxies' spans belong to whoever made the call: a span
//! carrying `db.system` (a database or cache call — the proxies' spans, an SDK's client spans)
//! is readable when its parent span is, so an application's readers see the statements it ran
//! through Furrow without a grant on the proxy's service; such spans without a readable parent
//! need a grant on their own service. Queries see only readable spans: a trace with none is not
//! found, and a trace's unreadable spans are left out of its tree, searches, the dependency graph,
//! slowest operations, trends and SQL digests.

use std::borrow::Cow;
use std::collections::HashMap;

use super::model::{NAMESPACE_ATTR, SpanRec};
use crate::model::{Grant, Level, User};
use codec::otlp::{ResourceSpans, Value};

/// The spans one user may read.
#[derive(Clone, Debug)]
pub struct Access {
    user: User,
    /// None: everything (an administrator).
    grants: Option<Vec<Grant>>,
}

impl Access {
    /// Everything.
    pub fn all(user: User) -> Access {
        Access { user, grants: None }
    }

    /// What `user` may read given every grant of the store.
    pub fn of(user: User, grants: impl IntoIterator<Item = Grant>) -> Access {
        if user.admin {
            return Access::all(user);
        }
        let me = format!("user:{}", user.name);
        let mine = grants
            .into_iter()
            .filter(|g| {
                g.level >= Level::Read
                    && (g.subject == me
                        || g.subject
                            .strip_prefix("role:")
                            .is_some_and(|r| user.roles.iter().any(|x| x == r)))
            })
            .collect();
        Access {
            user,
            grants: Some(mine),
        }
    }

    /// The user it is for.
    pub fn user(&self) -> &User {
        &self.user
    }

    /// Whether the user reads every span.
    pub fn reads_all(&self) -> bool {
        self.grants.is_none()
    }

    /// Whether the user may read the spans of `service` in `namespace` (None: a span that names no
    /// namespace) by a grant of its own.
    pub fn reads(&self, service: &str, namespace: Option<&str>) -> bool {
        match &self.grants {
            None => true,
            Some(g) => g.iter().any(|g| {
                (g.app == "*" || g.app == service)
                    && (g.namespace == "*" || Some(g.namespace.as_str()) == namespace)
            }),
        }
    }

    /// The readable spans of one trace (borrowed when all are, empty when none is).
    pub fn visible<'a>(&self, spans: &'a [SpanRec]) -> Cow<'a, [SpanRec]> {
        if self.reads_all() {
            return Cow::Borrowed(spans);
        }
        let mut by_service: HashMap<(&str, Option<&str>), bool> = HashMap::new();
        let mut ok: Vec<bool> = spans
            .iter()
            .map(|s| {
                let ns = s.namespace();
                *by_service
                    .entry((&s.service, ns))
                    .or_insert_with(|| self.reads(&s.service, ns))
            })
            .collect();
        // Calls inherit from their parent; a chain of calls is followed to its end (at most one
        // pass per span, so a cycle of parents cannot loop).
        let index: HashMap<u64, usize> =
            spans.iter().enumerate().map(|(i, s)| (s.id(), i)).collect();
        for _ in 0..spans.len() {
            let mut changed = false;
            for (i, s) in spans.iter().enumerate() {
                if !ok[i]
                    && s.attr("db.system").is_some()
                    && index.get(&s.parent()).is_some_and(|&p| ok[p])
                {
                    ok[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        if ok.iter().all(|b| *b) {
            Cow::Borrowed(spans)
        } else {
            Cow::Owned(
                spans
                    .iter()
                    .zip(&ok)
                    .filter(|(_, ok)| **ok)
                    .map(|(s, _)| s.clone())
                    .collect(),
            )
        }
    }

    /// The readable part of every trace that has one (for the queries, which take
    /// `(id, &[SpanRec])` pairs: `.iter().map(|(t, s)| (*t, &s[..]))`).
    pub fn filter<'a>(
        &self,
        traces: impl Iterator<Item = (u128, &'a [SpanRec])>,
    ) -> Vec<(u128, Cow<'a, [SpanRec]>)> {
        traces
            .map(|(t, s)| (t, self.visible(s)))
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }
}

/// Which services a principal may send spans for (`POST /v1/traces`).
///
/// The same mapping as reading: a resource's `service.name` is the application and its
/// `service.namespace` the namespace. A grant (to the user or one of its roles) with `trace_ingest`
/// on that application (or `*`) and that namespace (or `*`) allows it; a resource without a namespace
/// needs a grant on namespace `*`. Administrators send for every service. The level of the grant does
/// not matter: an ingest-only token is one of a user whose grants are level `none` with `trace_ingest`.
#[derive(Clone, Debug)]
pub struct Ingest {
    /// None: every service (an administrator).
    grants: Option<Vec<Grant>>,
}

impl Ingest {
    /// What `user` may send given every grant of the store.
    pub fn of(user: &User, grants: impl IntoIterator<Item = Grant>) -> Ingest {
        if user.admin {
            return Ingest { grants: None };
        }
        let me = format!("user:{}", user.name);
        let mine = grants
            .into_iter()
            .filter(|g| {
                g.trace_ingest
                    && (g.subject == me
                        || g.subject
                            .strip_prefix("role:")
                            .is_some_and(|r| user.roles.iter().any(|x| x == r)))
            })
            .collect();
        Ingest { grants: Some(mine) }
    }

    /// Whether the principal may send spans of any service at all.
    pub fn any(&self) -> bool {
        self.grants.as_ref().is_none_or(|g| !g.is_empty())
    }

    /// Whether the principal may send the spans of `service` in `namespace` (None: a resource that
    /// names no namespace).
    pub fn allows(&self, service: &str, namespace: Option<&str>) -> bool {
        match &self.grants {
            None => true,
            Some(g) => g.iter().any(|g| {
                (g.app == "*" || g.app == service)
                    && (g.namespace == "*" || Some(g.namespace.as_str()) == namespace)
            }),
        }
    }

    /// Keeps the resources the principal may send; returns the count of spans left out and the
    /// services (with namespace) they named, at most 8, sorted.
    pub fn retain(&self, resources: &mut Vec<ResourceSpans>) -> (usize, Vec<String>) {
        if self.grants.is_none() {
            return (0, Vec::new());
        }
        let mut rejected = 0;
        let mut names = std::collections::BTreeSet::new();
        resources.retain(|rs| {
            let service = rs.service_name();
            let ns = rs.resource.iter().find_map(|(k, v)| match v {
                Value::Str(s) if k == NAMESPACE_ATTR => Some(s.as_str()),
                _ => None,
            });
            if self.allows(service, ns) {
                return true;
            }
            rejected += rs.spans.len();
            if names.len() < 8 {
                names.insert(match ns {
                    Some(ns) => format!("{service}/{ns}"),
                    None => service.to_string(),
                });
            }
            false
        });
        (rejected, names.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::otlp::Span;
    use std::sync::Arc;

    fn span(service: &str, id: u8, parent: u8, db: bool) -> SpanRec {
        SpanRec {
            service: Arc::from(service),
            origin: Default::default(),
            span: Span {
                trace_id: [1; 16],
                span_id: [id; 8],
                parent_id: [parent; 8],
                attrs: if db {
                    vec![("db.system".into(), Value::Str("mysql".into()))]
                } else {
                    vec![]
                },
                ..Default::default()
            },
        }
    }

    fn grant(subject: &str, app: &str, level: Level) -> Grant {
        grant_ns(subject, app, "*", level)
    }

    fn grant_ns(subject: &str, app: &str, namespace: &str, level: Level) -> Grant {
        Grant {
            subject: subject.into(),
            app: app.into(),
            namespace: namespace.into(),
            level,
            export: false,
            trace_ingest: false,
        }
    }

    fn in_ns(mut s: SpanRec, ns: &str) -> SpanRec {
        s.span
            .attrs
            .push((NAMESPACE_ATTR.into(), Value::Str(ns.into())));
        s
    }

    #[test]
    fn namespace_grants_read_their_namespace_only() {
        // shop/orders → its proxy call; shop/payments; shop without a namespace.
        let trace = vec![
            in_ns(span("shop", 1, 0, false), "orders"),
            span("furrow-proxy", 2, 1, true),
            in_ns(span("shop", 3, 1, false), "payments"),
            span("shop", 4, 1, false),
        ];
        let grants = vec![
            grant_ns("user:ann", "shop", "orders", Level::Read),
            grant_ns("role:pay", "*", "payments", Level::Read),
            grant_ns("user:bob", "shop", "orders", Level::MaskedRead),
            grant("user:cid", "shop", Level::Read),
        ];
        let ann = Access::of(user("ann", &[], false), grants.clone());
        assert_eq!(ids(&ann.visible(&trace)), [1, 2]);
        let pay = Access::of(user("dan", &["pay"], false), grants.clone());
        assert_eq!(ids(&pay.visible(&trace)), [3]);
        let bob = Access::of(user("bob", &[], false), grants.clone());
        assert!(bob.visible(&trace).is_empty());
        // A grant on every namespace reads them all, and the spans that name none.
        let cid = Access::of(user("cid", &[], false), grants);
        assert_eq!(ids(&cid.visible(&trace)), [1, 2, 3, 4]);
    }

    fn user(name: &str, roles: &[&str], admin: bool) -> User {
        User {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            admin,
            ..Default::default()
        }
    }

    fn ids(s: &[SpanRec]) -> Vec<u8> {
        s.iter().map(|s| s.span.span_id[0]).collect()
    }

    #[test]
    fn grants_decide_and_calls_follow_their_parent() {
        // shop → proxy (db) → proxy child per shard (db); billing → its own proxy call.
        let trace = vec![
            span("shop", 1, 0, false),
            span("furrow-proxy", 2, 1, true),
            span("furrow-proxy", 3, 2, true),
            span("billing", 4, 1, false),
            span("furrow-proxy", 5, 4, true),
            span("billing", 6, 4, true),
        ];
        let grants = vec![
            grant("user:ann", "shop", Level::Read),
            grant("role:ops", "billing", Level::Publish),
            grant("user:bob", "shop", Level::MaskedRead),
            grant("user:cid", "furrow-proxy", Level::Read),
        ];
        let ann = Access::of(user("ann", &[], false), grants.clone());
        assert_eq!(ids(&ann.visible(&trace)), [1, 2, 3]);
        let ops = Access::of(user("dan", &["ops"], false), grants.clone());
        assert_eq!(ids(&ops.visible(&trace)), [4, 5, 6]);
        // Below Read is no read; nobody's grant is another's.
        let bob = Access::of(user("bob", &[], false), grants.clone());
        assert!(bob.visible(&trace).is_empty());
        let cid = Access::of(user("cid", &[], false), grants.clone());
        assert_eq!(ids(&cid.visible(&trace)), [2, 3, 5]);
        let admin = Access::of(user("root", &[], true), vec![]);
        assert!(matches!(admin.visible(&trace), Cow::Borrowed(_)));
        let star = Access::of(
            user("eve", &[], false),
            vec![grant("user:eve", "*", Level::Read)],
        );
        assert!(matches!(star.visible(&trace), Cow::Borrowed(s) if s.len() == 6));
        // filter drops traces with nothing readable.
        let other = [span("billing", 9, 0, false)];
        let all = [(1u128, &trace[..]), (2u128, &other[..])];
        let seen = ann.filter(all.iter().map(|(t, s)| (*t, *s)));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, 1);
    }

    #[test]
    fn ingest_grants_name_the_services_a_token_sends() {
        let rs = |service: &str, ns: Option<&str>, n: u8| {
            let mut resource = vec![("service.name".to_string(), Value::Str(service.into()))];
            if let Some(ns) = ns {
                resource.push((NAMESPACE_ATTR.into(), Value::Str(ns.into())));
            }
            ResourceSpans {
                resource,
                spans: (0..n).map(|i| span(service, i, 0, false).span).collect(),
            }
        };
        let ing = |ns: &str, level: Level| {
            let mut g = grant_ns("role:send", "shop", ns, level);
            g.trace_ingest = true;
            g
        };
        let grants = vec![
            ing("*", Level::None),
            ing("orders", Level::Read),
            // Read alone is no ingest.
            grant("user:ann", "billing", Level::Publish),
        ];
        let sender = Ingest::of(&user("bot", &["send"], false), grants.clone());
        assert!(sender.any());
        let mut batch = vec![
            rs("shop", None, 2),
            rs("billing", None, 3),
            rs("shop", Some("orders"), 1),
            rs("furrow-proxy", None, 4),
        ];
        assert_eq!(
            sender.retain(&mut batch),
            (7, vec!["billing".to_string(), "furrow-proxy".to_string()])
        );
        assert_eq!(batch.len(), 2);
        // A grant on one namespace sends that namespace only.
        let narrow = Ingest::of(
            &user("n", &[], false),
            vec![{
                let mut g = grant_ns("user:n", "shop", "orders", Level::None);
                g.trace_ingest = true;
                g
            }],
        );
        assert!(narrow.allows("shop", Some("orders")));
        assert!(!narrow.allows("shop", Some("payments")) && !narrow.allows("shop", None));
        // Without an ingest grant, nothing; an administrator sends everything.
        let ann = Ingest::of(&user("ann", &[], false), grants);
        assert!(!ann.any() && !ann.allows("billing", None));
        let root = Ingest::of(&user("root", &[], true), vec![]);
        let mut all = vec![rs("x", None, 1)];
        assert_eq!(root.retain(&mut all), (0, vec![]));
        assert!(root.any() && all.len() == 1);
    }

    #[test]
    fn a_parent_cycle_ends() {
        let trace = vec![span("x", 1, 2, true), span("x", 2, 1, true)];
        let a = Access::of(user("ann", &[], false), vec![]);
        assert!(a.visible(&trace).is_empty());
    }
}
