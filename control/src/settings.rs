//! Settings of a consumer's TOML document given as items of their own, rule tables included: the proxies'
//! `--config-source` reads the document item `KEY` and then every item named `KEY.PATH` (e.g.
//! `config.proxy.shutdown_grace_ms`, `config.listeners.0.max_connections`), evaluates it for the instance's
//! own context and writes the value at that dotted path of the document before the whole document is
//! validated exactly as a file. So one release can give different instances different settings (a rule on
//! the instance id, a label, the host, the version), and a changed rule is pushed like any other release.
//!
//! Why items next to the document rather than rules inside it: the document stays a plain TOML file that
//! `furrow proxy --config` reads too, and the center already versions, reviews, grays and audits items one
//! by one.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::client::ConfigSnapshot;
use crate::model::{Instance, Value};

/// The context a consumer evaluates its own settings with: every label of the instance as an attribute of
/// the same name, then the built-in attributes, which win over a label of the same name (a label cannot
/// pretend to be another instance): `instance` (the instance id), `ip`, `host` (the host name), `version`
/// (the consumer's version), `app`, `env`, `cluster` and `namespace` (where the config comes from).
pub fn instance_context(
    snap: &ConfigSnapshot,
    instance: &Instance,
    host: &str,
    version: &str,
) -> BTreeMap<String, String> {
    let mut ctx: BTreeMap<String, String> = instance.labels.clone().into_iter().collect();
    for (k, v) in [
        ("instance", instance.id.as_str()),
        ("ip", instance.ip.as_str()),
        ("host", host),
        ("version", version),
        ("app", snap.app.as_str()),
        ("env", snap.env.as_str()),
        ("cluster", snap.cluster.as_str()),
        ("namespace", snap.namespace.as_str()),
    ] {
        if !v.is_empty() {
            ctx.insert(k.to_string(), v.to_string());
        }
    }
    ctx
}

/// The host name of this machine (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else empty).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// The TOML document of item `key` with every `KEY.PATH` setting item applied (rule tables evaluated with
/// `ctx`), as text, and the settings applied (`PATH = VALUE`, for logs; secret items' values masked). Err
/// names the item at fault.
pub fn effective_document(
    snap: &ConfigSnapshot,
    key: &str,
    ctx: &BTreeMap<String, String>,
) -> Result<(String, Vec<String>), String> {
    let text = match snap.get(key) {
        None => return Err(format!("no item `{key}` (a TOML document)")),
        Some(Value::Document {
            format: crate::document::DocFormat::Toml,
            text,
        }) => text,
        Some(_) => return Err(format!("item `{key}` must be a TOML document")),
    };
    let prefix = format!("{key}.");
    let settings: Vec<(&str, &str)> = snap
        .items
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix).map(|p| (k.as_str(), p)))
        .collect();
    if settings.is_empty() {
        return Ok((text.clone(), Vec::new()));
    }
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e| format!("item `{key}`: not TOML: {e}"))?;
    let mut applied = Vec::new();
    for (item, path) in settings {
        let json = match snap.get(item) {
            Some(Value::Rules(t)) => t.evaluate(ctx).clone(),
            Some(other) => other.to_json().map_err(|e| format!("item `{item}`: {e}"))?,
            None => continue,
        };
        let value = to_toml(&json).map_err(|e| format!("item `{item}`: {e}"))?;
        // The list ends up in logs and the admin INFO: a secret item's value is not shown.
        if snap.items.get(item).is_some_and(|i| i.secret) {
            applied.push(format!("{path} = ******"));
        } else {
            applied.push(format!("{path} = {value}"));
        }
        set_path(&mut doc, path, value).map_err(|e| format!("item `{item}`: {e}"))?;
    }
    let text = toml::to_string(&doc).map_err(|e| format!("item `{key}`: {e}"))?;
    Ok((text, applied))
}

/// A JSON value as TOML (null has no TOML form and is refused).
fn to_toml(j: &Json) -> Result<toml::Value, String> {
    Ok(match j {
        Json::Null => return Err("null has no TOML form (a rule must give a value)".into()),
        Json::Bool(b) => toml::Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().ok_or("number out of range")?),
        },
        Json::String(s) => toml::Value::String(s.clone()),
        Json::Array(a) => toml::Value::Array(a.iter().map(to_toml).collect::<Result<_, _>>()?),
        Json::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), to_toml(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Writes `value` at a dotted path: table keys (tables created when missing) and array indexes
/// (`listeners.0.max_connections`; the element must exist). A path through a plain value is refused.
fn set_path(doc: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad setting path {path:?}"));
    }
    let mut root = toml::Value::Table(std::mem::take(doc));
    let done = set_in(&mut root, &parts, 0, value);
    if let toml::Value::Table(t) = root {
        *doc = t;
    }
    done
}

fn set_in(
    cur: &mut toml::Value,
    parts: &[&str],
    at: usize,
    value: toml::Value,
) -> Result<(), String> {
    let name = || parts[..at].join(".");
    let Some(part) = parts.get(at) else {
        *cur = value;
        return Ok(());
    };
    match cur {
        toml::Value::Table(t) => {
            let next = t
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            set_in(next, parts, at + 1, value)
        }
        toml::Value::Array(a) => {
            let idx: usize = part
                .parse()
                .map_err(|_| format!("{} is an array: give an index, not {part:?}", name()))?;
            let len = a.len();
            let next = a
                .get_mut(idx)
                .ok_or_else(|| format!("{} has {len} elements, no index {idx}", name()))?;
            set_in(next, parts, at + 1, value)
        }
        _ => Err(format!("{} is not a table", name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(mut items: Json) -> ConfigSnapshot {
        for (k, v) in items.as_object_mut().unwrap() {
            v["key"] = json!(k);
            v["version"] = json!(1);
        }
        serde_json::from_value(json!({
            "app": "shop", "env": "PRO", "cluster": "default", "namespace": "proxy",
            "version": 1, "releases": [1], "items": items,
        }))
        .unwrap()
    }

    fn doc_item(text: &str) -> Json {
        json!({"value": {"type": "document", "value": {"format": "toml", "text": text}}})
    }

    #[test]
    fn rule_settings_are_evaluated_for_the_instance_and_written_at_their_path() {
        let s = snap(json!({
            "config": doc_item("[proxy]\nexecutors = 1\n\n[[listeners]]\nname = \"a\"\nport = 1\n"),
            "config.proxy.shutdown_grace_ms": {"value": {"type": "rules", "value": {
                "rules": [{"when": [{"op": "eq", "attr": "zone", "value": "east"}], "value": 250}],
                "default": 1000}}},
            "config.listeners.0.port": {"value": {"type": "integer", "value": 7}},
            "config.listeners.0.password": {"value": {"type": "string", "value": "hush"}, "secret": true},
            "other": {"value": {"type": "integer", "value": 1}},
        }));
        let east = Instance {
            id: "p1".into(),
            labels: [("zone".to_string(), "east".to_string())].into(),
            ..Default::default()
        };
        let ctx = instance_context(&s, &east, "h", "1.0");
        assert_eq!(ctx.get("instance").map(String::as_str), Some("p1"));
        let (text, applied) = effective_document(&s, "config", &ctx).unwrap();
        let t: toml::Table = text.parse().unwrap();
        assert_eq!(t["proxy"]["shutdown_grace_ms"].as_integer(), Some(250));
        assert_eq!(t["proxy"]["executors"].as_integer(), Some(1));
        assert_eq!(t["listeners"][0]["port"].as_integer(), Some(7));
        assert_eq!(t["listeners"][0]["password"].as_str(), Some("hush"));
        assert_eq!(applied.len(), 3);
        assert!(
            applied.contains(&"listeners.0.password = ******".to_string()),
            "{applied:?}"
        );
        let west = Instance {
            id: "p2".into(),
            ..Default::default()
        };
        let (text, _) =
            effective_document(&s, "config", &instance_context(&s, &west, "h", "1.0")).unwrap();
        let t: toml::Table = text.parse().unwrap();
        assert_eq!(t["proxy"]["shutdown_grace_ms"].as_integer(), Some(1000));
    }

    #[test]
    fn a_label_cannot_override_the_instance_id() {
        let s = snap(json!({}));
        let i = Instance {
            id: "real".into(),
            labels: [("instance".to_string(), "fake".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(instance_context(&s, &i, "", "")["instance"], "real");
    }

    #[test]
    fn bad_settings_name_the_item() {
        for (path, value, why) in [
            (
                "config.proxy.executors.x",
                json!({"type": "integer", "value": 1}),
                "not a table",
            ),
            (
                "config.listeners.x",
                json!({"type": "integer", "value": 1}),
                "give an index",
            ),
            (
                "config.listeners.3.port",
                json!({"type": "integer", "value": 1}),
                "no index 3",
            ),
            (
                "config.proxy.x",
                json!({"type": "rules", "value": {"rules": []}}),
                "null",
            ),
        ] {
            let s = snap(json!({
                "config": doc_item("[proxy]\nexecutors = 1\n[[listeners]]\nname = \"a\"\n"),
                path: {"value": value},
            }));
            let e = effective_document(&s, "config", &BTreeMap::new()).unwrap_err();
            assert!(e.contains(path) && e.contains(why), "{path}: {e}");
        }
    }
}
