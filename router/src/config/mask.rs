//! The config text with its secrets masked, for display (`SHOW CONFIG` on the admin port).
//!
//! The source is parsed and every value of a secret key is replaced at its byte span, so that every
//! TOML spelling is covered: `[users.app]` sections, dotted keys (`users.app.password_native`),
//! inline tables (`primary = { ..., password = "x" }`), literal and multi-line strings. Everything
//! else, comments and layout included, is printed as written.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// What a masked value prints as.
pub const MASK: &str = "\"***\"";

/// Whether a key holds a secret: passwords (`password`, `admin_password`), the stored password
/// hashes (`password_native`, `password_sha256`: enough to log in to the proxy with
/// `mysql_native_password`, and to brute-force offline), and anything named like a secret or token.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.contains("token")
}

/// `source` with the value of every secret key replaced by `"***"`. A text that does not parse
/// (never the case for a running config, which was validated) keeps no line that mentions a secret.
pub fn mask_secrets(source: &str) -> String {
    let (doc, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        return source
            .lines()
            .map(|l| {
                if is_secret_key(l) {
                    "# (line hidden: it may hold a secret)\n".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
    }
    let mut spans = Vec::new();
    secret_spans(doc.get_ref(), &mut spans);
    spans.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(source.len());
    let mut last = 0;
    for r in spans {
        // Spans never overlap (a secret's value is a leaf); skip defensively if they did.
        if r.start < last || r.end > source.len() {
            continue;
        }
        out.push_str(source.get(last..r.start).unwrap_or(""));
        out.push_str(MASK);
        last = r.end;
    }
    out.push_str(source.get(last..).unwrap_or(""));
    out
}

fn secret_spans(t: &DeTable<'_>, out: &mut Vec<Range<usize>>) {
    for (k, v) in t.iter() {
        if is_secret_key(k.get_ref()) && !matches!(v.get_ref(), DeValue::Table(_)) {
            out.push(v.span());
        } else {
            value_spans(v.get_ref(), out);
        }
    }
}

fn value_spans(v: &DeValue<'_>, out: &mut Vec<Range<usize>>) {
    match v {
        DeValue::Table(t) => secret_spans(t, out),
        DeValue::Array(items) => {
            for item in items.iter() {
                value_spans(item.get_ref(), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_secret_is_masked() {
        let src = r#"admin_password = "a1"
[mysql_groups.main]
password = 'b2'
user = "u"
primary = { address = "x", password = "c3" }
replicas = [{ name = "r", address = "y", password = """d4""" }]

[users.app]
# the password of app is not here
password_native = "*E5"
password_sha256 = "f6"
users.other.password_sha256 = "g7"

[users."quoted"]
"password_native"   =   "*H8"
"#;
        let m = mask_secrets(src);
        for secret in ["a1", "b2", "c3", "d4", "E5", "f6", "g7", "H8"] {
            assert!(!m.contains(secret), "{secret} in:\n{m}");
        }
        assert_eq!(m.matches(MASK).count(), 8, "{m}");
        assert!(m.contains("user = \"u\""), "{m}");
        assert!(m.contains("# the password of app is not here"), "{m}");
        assert!(
            m.contains("primary = { address = \"x\", password = \"***\" }"),
            "{m}"
        );
    }

    #[test]
    fn unparsable_text_hides_secret_lines() {
        let m = mask_secrets("password = \"x\nuser = 1\n");
        assert!(!m.contains("\"x"), "{m}");
        assert!(m.contains("user = 1"), "{m}");
    }
}
