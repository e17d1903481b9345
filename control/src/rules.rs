//! Dynamic values: rule tables over a caller context (user, region, ...), evaluated locally by clients.
//!
//! The first rule whose conditions all hold gives the value; otherwise `default`. A percentage condition puts
//! the context attribute in one of 100 buckets with FNV-1a over `salt:attribute-value`, so every client
//! computes the same bucket for the same user.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{ControlError, Result};

/// A rule table: ordered rules and a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleTable {
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The value when no rule matches.
    #[serde(default)]
    pub default: Json,
}

/// One rule: all conditions must hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// The conditions (an empty list always matches).
    #[serde(default)]
    pub when: Vec<Condition>,
    /// The value this rule gives.
    pub value: Json,
}

/// A condition on one context attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Condition {
    /// `attr == value`.
    Eq {
        /// The attribute.
        attr: String,
        /// The value.
        value: String,
    },
    /// `attr != value` (a missing attribute is not equal).
    Ne {
        /// The attribute.
        attr: String,
        /// The value.
        value: String,
    },
    /// `attr` is one of `values`.
    In {
        /// The attribute.
        attr: String,
        /// The allowed values.
        values: Vec<String>,
    },
    /// `attr` is present and none of `values`.
    NotIn {
        /// The attribute.
        attr: String,
        /// The excluded values.
        values: Vec<String>,
    },
    /// `attr` starts with `value`.
    Prefix {
        /// The attribute.
        attr: String,
        /// The prefix.
        value: String,
    },
    /// `attr` is present.
    Exists {
        /// The attribute.
        attr: String,
    },
    /// The attribute's bucket (0–99) is in `from..to`.
    Percent {
        /// The attribute (e.g. `user`).
        attr: String,
        /// First bucket (inclusive).
        from: u8,
        /// Last bucket (exclusive, at most 100).
        to: u8,
        /// A salt so that different keys bucket users differently.
        #[serde(default)]
        salt: String,
    },
}

/// The 0–99 bucket of a value for percentage rules (FNV-1a 64 over `salt:value`).
pub fn bucket(salt: &str, value: &str) -> u8 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in salt
        .bytes()
        .chain(std::iter::once(b':'))
        .chain(value.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % 100) as u8
}

impl Condition {
    /// Whether the condition holds in `ctx`.
    pub fn holds(&self, ctx: &BTreeMap<String, String>) -> bool {
        let get = |a: &str| ctx.get(a).map(String::as_str);
        match self {
            Condition::Eq { attr, value } => get(attr) == Some(value),
            Condition::Ne { attr, value } => get(attr).is_some_and(|v| v != value),
            Condition::In { attr, values } => {
                get(attr).is_some_and(|v| values.iter().any(|x| x == v))
            }
            Condition::NotIn { attr, values } => {
                get(attr).is_some_and(|v| !values.iter().any(|x| x == v))
            }
            Condition::Prefix { attr, value } => {
                get(attr).is_some_and(|v| v.starts_with(value.as_str()))
            }
            Condition::Exists { attr } => get(attr).is_some(),
            Condition::Percent {
                attr,
                from,
                to,
                salt,
            } => get(attr).is_some_and(|v| (*from..*to).contains(&bucket(salt, v))),
        }
    }
}

impl RuleTable {
    /// Checks the table is well formed (percent ranges within 0–100).
    pub fn validate(&self) -> Result<()> {
        for (i, r) in self.rules.iter().enumerate() {
            for (j, c) in r.when.iter().enumerate() {
                if let Condition::Percent { from, to, .. } = c
                    && (from > to || *to > 100)
                {
                    return Err(ControlError::bad(
                        &format!("value/rules/{i}/when/{j}"),
                        "percent needs 0 <= from <= to <= 100",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Evaluates the table with the caller's context.
    pub fn evaluate(&self, ctx: &BTreeMap<String, String>) -> &Json {
        self.explain(ctx).1
    }

    /// Evaluates the table and says which rule matched (None: the default).
    pub fn explain(&self, ctx: &BTreeMap<String, String>) -> (Option<usize>, &Json) {
        self.rules
            .iter()
            .position(|r| r.when.iter().all(|c| c.holds(ctx)))
            .map(|i| (Some(i), &self.rules[i].value))
            .unwrap_or((None, &self.default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn table() -> RuleTable {
        serde_json::from_value(json!({
            "rules": [
                {"when": [{"op": "eq", "attr": "region", "value": "eu"}, {"op": "in", "attr": "user", "values": ["ann", "bob"]}], "value": 1},
                {"when": [{"op": "prefix", "attr": "user", "value": "test-"}], "value": 2},
                {"when": [{"op": "percent", "attr": "user", "from": 0, "to": 50, "salt": "k"}], "value": 3}
            ],
            "default": 0
        }))
        .unwrap()
    }

    #[test]
    fn first_matching_rule_wins() {
        let t = table();
        assert_eq!(
            t.evaluate(&ctx(&[("region", "eu"), ("user", "ann")])),
            &json!(1)
        );
        assert_eq!(
            t.evaluate(&ctx(&[("region", "us"), ("user", "test-x")])),
            &json!(2)
        );
        assert_eq!(t.evaluate(&ctx(&[])), &json!(0));
    }

    #[test]
    fn percent_buckets_are_stable_and_spread() {
        let t = table();
        let mut hits = 0;
        for i in 0..1000 {
            let user = format!("user{i}");
            let c = ctx(&[("user", &user)]);
            let v = t.evaluate(&c).clone();
            assert_eq!(&v, t.evaluate(&c));
            assert_eq!(v == json!(3), bucket("k", &user) < 50);
            hits += (v == json!(3)) as u32;
        }
        assert!((400..600).contains(&hits), "{hits}");
    }

    #[test]
    fn bad_percent_is_rejected() {
        let t: RuleTable = serde_json::from_value(
            json!({"rules":[{"when":[{"op":"percent","attr":"u","from":60,"to":10}],"value":1}]}),
        )
        .unwrap();
        assert_eq!(
            t.validate().unwrap_err().field.as_deref(),
            Some("value/rules/0/when/0")
        );
    }
}
