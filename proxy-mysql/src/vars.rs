//! A session's replayable variable state: the `SET` statements it ran, in order, which also carry
//! the client's charset. A backend connection remembers which state it is in; on checkout the
//! proxy replays what is missing (see `BackendConn::sync_vars`).

use std::rc::Rc;

/// Collation backend connections log in with (utf8mb4_general_ci); a client with another one gets
/// a `SET NAMES` in its state.
pub const BACKEND_COLLATION: u8 = 45;

/// Most replayable `SET`s remembered; beyond that the session pins its connection.
pub const MAX_SETS: usize = 64;

/// The replayable part of a session's state: `SET` statements in execution order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VarState {
    /// Statements to replay, oldest first.
    pub sets: Vec<Rc<str>>,
}

impl VarState {
    /// The state of a fresh session whose client uses `collation`: its `SET NAMES`, or nothing
    /// when that is the backends' own.
    pub fn for_collation(collation: u8) -> Option<Rc<VarState>> {
        names_for(collation).map(|s| {
            Rc::new(VarState {
                sets: vec![Rc::from(s)],
            })
        })
    }

    /// Only the charset part of `v` (after a reset that keeps the client's charset).
    pub fn charset_only(v: Option<&Rc<VarState>>) -> Option<Rc<VarState>> {
        v.and_then(|v| {
            let sets: Vec<Rc<str>> = v
                .sets
                .iter()
                .filter(|s| s.starts_with("SET NAMES"))
                .take(1)
                .cloned()
                .collect();
            (!sets.is_empty()).then(|| Rc::new(VarState { sets }))
        })
    }

    /// `v` followed by the replayable `set`; None when `v` already holds [`MAX_SETS`] statements
    /// (the session then pins its connection instead).
    pub fn with_set(v: Option<&VarState>, set: &str) -> Option<Rc<VarState>> {
        let mut v = v.cloned().unwrap_or_default();
        if v.sets.len() >= MAX_SETS {
            return None;
        }
        v.sets.push(Rc::from(set));
        Some(Rc::new(v))
    }
}

/// `SET NAMES` for a client collation id, when it differs from the backends' login collation.
fn names_for(collation: u8) -> Option<&'static str> {
    Some(match collation {
        c if c == BACKEND_COLLATION => return None,
        8 => "SET NAMES latin1",
        33 => "SET NAMES utf8",
        83 => "SET NAMES utf8 COLLATE utf8_bin",
        28 => "SET NAMES gbk",
        63 => "SET NAMES binary",
        46 => "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
        224 => "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
        // MySQL 8 clients default to utf8mb4_0900_ai_ci, which MariaDB 10.x lacks.
        255 => return None,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charset_state() {
        assert_eq!(VarState::for_collation(BACKEND_COLLATION), None);
        assert_eq!(VarState::for_collation(255), None);
        let v = VarState::for_collation(8);
        assert_eq!(v.as_deref().map(|v| &*v.sets[0]), Some("SET NAMES latin1"));
        let more = VarState::with_set(v.as_deref(), "SET @@sql_mode = ''");
        assert_eq!(more.as_ref().map(|v| v.sets.len()), Some(2));
        let kept = VarState::charset_only(more.as_ref());
        assert_eq!(kept, v);
        assert_eq!(VarState::charset_only(None), None);
        let no_names = VarState::with_set(None, "SET @@sql_mode = ''");
        assert_eq!(VarState::charset_only(no_names.as_ref()), None);
    }

    #[test]
    fn sets_are_capped() {
        let mut v: Option<Rc<VarState>> = None;
        for i in 0..MAX_SETS {
            v = VarState::with_set(v.as_deref(), &format!("SET @a{i} = 1"));
            assert!(v.is_some());
        }
        assert_eq!(VarState::with_set(v.as_deref(), "SET @x = 1"), None);
    }
}
