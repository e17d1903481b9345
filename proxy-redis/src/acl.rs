//! Proxy users: password check (`AUTH`, `HELLO AUTH`), per-user command rules and key patterns.

use router::config::User;
use router::redis::CommandInfo;
use router::redis::command::category;
use sha2::{Digest, Sha256};

/// Whether `password` matches the user's stored SHA256(SHA256(password)).
pub fn password_ok(user: &User, password: &[u8]) -> bool {
    let Some(stored) = user.sha256_hash else {
        return false;
    };
    let once = Sha256::digest(password);
    let twice = Sha256::digest(once);
    // Constant-time comparison.
    twice
        .iter()
        .zip(stored.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Whether `user` may run `info`: the rules apply in order, as Redis's ACL rules do, starting from
/// nothing allowed (no rules: everything). `+@CAT` / `-@CAT` match Redis's own ACL categories of the
/// command (or subcommand) as the generated table has them; `+NAME` matches a command and all its
/// subcommands, `+parent|sub` one subcommand.
pub fn command_allowed(user: &User, info: &CommandInfo) -> bool {
    if user.commands.is_empty() {
        return true;
    }
    rules_allow(&user.commands, info)
}

/// [`command_allowed`] over a list of rules (validated by the config reader).
fn rules_allow(rules: &[String], info: &CommandInfo) -> bool {
    let parent = info.name.split('|').next().unwrap_or(info.name);
    let mut allowed = false;
    for rule in rules {
        let (allow, what) = match rule.split_at_checked(1) {
            Some(("+", w)) => (true, w),
            Some(("-", w)) => (false, w),
            _ => continue,
        };
        let hit = match what.strip_prefix('@') {
            Some(cat) if cat.eq_ignore_ascii_case("all") => true,
            // An unknown category is a config error; were one to get here, it matches nothing.
            Some(cat) => category::from_name(cat).is_some_and(|bit| info.acl.has(bit)),
            None => what.eq_ignore_ascii_case(info.name) || what.eq_ignore_ascii_case(parent),
        };
        if hit {
            allowed = allow;
        }
    }
    allowed
}

/// Whether `user` may touch `key` (no patterns: every key).
pub fn key_allowed(user: &User, key: &[u8]) -> bool {
    user.keys.is_empty() || user.keys.iter().any(|p| glob(p.as_bytes(), key))
}

/// Redis-style glob match: `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[at] == b'['`; returns (matched, index after
/// the class), `None` when the class is not closed.
fn class(pattern: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = at + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    while j < pattern.len() && pattern[j] != b']' {
        if pattern[j] == b'\\' && j + 1 < pattern.len() {
            matched |= pattern[j + 1] == c;
            j += 2;
        } else if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            let (lo, hi) = (
                pattern[j].min(pattern[j + 2]),
                pattern[j].max(pattern[j + 2]),
            );
            matched |= (lo..=hi).contains(&c);
            j += 3;
        } else {
            matched |= pattern[j] == c;
            j += 1;
        }
    }
    (j < pattern.len()).then_some((matched != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(b"user:*", b"user:1"));
        assert!(!glob(b"user:*", b"session:1"));
        assert!(glob(b"h?llo", b"hello"));
        assert!(glob(b"h[ae]llo", b"hallo"));
        assert!(!glob(b"h[^e]llo", b"hello"));
        assert!(glob(b"k[a-c]", b"kb"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"a\\*", b"a*"));
    }

    #[test]
    fn rules_and_passwords() {
        let cfg = router::config::parse(
            "t.toml",
            r#"
[users.app]
# password "app-secret"
password_sha256 = "07a99d33e023ea491bc3f7b999efcfb76c32ff9abe1cf29ff3c5ee8b85ea015d"
commands = ["+@all", "-flushall", "-@admin"]
keys = ["app:*"]
"#,
        )
        .expect("valid");
        let u = &cfg.users[0];
        assert!(password_ok(u, b"app-secret"));
        assert!(!password_ok(u, b"nope"));
        let get = router::redis::lookup(b"get").expect("get");
        let flushall = router::redis::lookup(b"flushall").expect("flushall");
        assert!(command_allowed(u, get));
        assert!(!command_allowed(u, flushall));
        assert!(key_allowed(u, b"app:1"));
        assert!(!key_allowed(u, b"other"));
    }

    fn info(args: &[&str]) -> &'static CommandInfo {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        match router::redis::resolve(&args) {
            router::redis::Resolved::Command(i) => i,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn rules(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn redis_categories_decide() {
        let no_dangerous = rules(&["+@all", "-@dangerous"]);
        for denied in [
            &["flushdb"][..],
            &["flushall"],
            &["keys", "*"],
            &["config", "set", "maxmemory", "1"],
            &["config", "get", "x"],
            &["debug", "sleep", "0"],
            &["shutdown"],
            &["info"],
            &["sort", "k"],
        ] {
            assert!(!rules_allow(&no_dangerous, info(denied)), "{denied:?}");
        }
        for allowed in [
            &["get", "k"][..],
            &["set", "k", "v"],
            &["ping"],
            &["scan", "0"],
        ] {
            assert!(rules_allow(&no_dangerous, info(allowed)), "{allowed:?}");
        }
        // Subcommands carry their own categories: CLIENT LIST is @dangerous, CLIENT ID is not.
        assert!(!rules_allow(&no_dangerous, info(&["client", "list"])));
        assert!(rules_allow(&no_dangerous, info(&["client", "id"])));
        // Order matters, the last matching rule wins; names match a whole container or one sub.
        let r = rules(&["-@all", "+@read", "+@string", "-set", "+config|get"]);
        assert!(rules_allow(&r, info(&["get", "k"])));
        assert!(rules_allow(&r, info(&["append", "k", "v"])));
        assert!(!rules_allow(&r, info(&["set", "k", "v"])));
        assert!(!rules_allow(&r, info(&["hset", "h", "f", "v"])));
        assert!(rules_allow(&r, info(&["config", "get", "x"])));
        assert!(!rules_allow(&r, info(&["config", "set", "x", "y"])));
        let r = rules(&["+@all", "-config"]);
        assert!(!rules_allow(&r, info(&["config", "get", "x"])));
        let r = rules(&["-@all", "+@pubsub", "+@connection"]);
        assert!(rules_allow(&r, info(&["publish", "c", "m"])));
        assert!(rules_allow(&r, info(&["ping"])));
        assert!(!rules_allow(&r, info(&["get", "k"])));
    }
}
