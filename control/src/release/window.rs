//! Release windows: when a deployment may start on a stage. Pure code over ms since the epoch (UTC).
//!
//! An allowed time is `DAYS HH:MM-HH:MM`, like one cron field for days and a time range: `DAYS` is `*`, a
//! day (`mon`), a range (`mon-fri`) or a list of those (`sat,sun`); the range is from `HH:MM` (inclusive)
//! to `HH:MM` (exclusive), `24:00` meaning the end of the day, and may wrap past midnight (`22:00-02:00`,
//! counted on the day it starts). The window is open when some allowed time matches (or none is given) and
//! no freeze period contains the instant.

use super::model::Window;
use crate::error::{ControlError, Result};

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_MS: u64 = 86_400_000;

/// One parsed allowed time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// Days, Monday = 0.
    pub days: [bool; 7],
    /// From, minutes since midnight.
    pub from: u32,
    /// To (exclusive), minutes since midnight (1440 = end of day).
    pub to: u32,
}

fn day(s: &str) -> Option<usize> {
    DAYS.iter().position(|d| *d == s)
}

fn hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// Parses one allowed time; `field` names it in the error.
pub fn parse(spec: &str, field: &str) -> Result<Allowed> {
    let bad = |why: &str| {
        ControlError::bad(
            field,
            format!(
                "invalid window {spec:?}: {why} (use e.g. \"mon-fri 09:00-17:00\" or \"* 00:00-24:00\")"
            ),
        )
    };
    let mut parts = spec.split_whitespace();
    let (Some(days), Some(range), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected DAYS HH:MM-HH:MM"));
    };
    let mut set = [false; 7];
    if days == "*" {
        set = [true; 7];
    } else {
        for item in days.split(',') {
            let item = item.to_ascii_lowercase();
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (
                        day(a).ok_or_else(|| bad("unknown day"))?,
                        day(b).ok_or_else(|| bad("unknown day"))?,
                    );
                    let mut d = a;
                    loop {
                        set[d] = true;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => set[day(&item).ok_or_else(|| bad("unknown day"))?] = true,
            }
        }
    }
    let (a, b) = range
        .split_once('-')
        .ok_or_else(|| bad("expected HH:MM-HH:MM"))?;
    let from = hhmm(a).ok_or_else(|| bad("bad start time"))?;
    let to = hhmm(b).ok_or_else(|| bad("bad end time"))?;
    if from == to || from >= 1440 {
        return Err(bad("empty time range"));
    }
    Ok(Allowed {
        days: set,
        from,
        to,
    })
}

/// Validates a window (every allowed time parses, freezes are ordered).
pub fn validate(w: &Window, field: &str) -> Result<()> {
    if w.allow.len() > 64 || w.freeze.len() > 256 {
        return Err(ControlError::bad(
            field,
            "at most 64 allowed times and 256 freezes",
        ));
    }
    for (i, a) in w.allow.iter().enumerate() {
        parse(a, &format!("{field}/allow/{i}"))?;
    }
    for (i, f) in w.freeze.iter().enumerate() {
        if f.to_ms <= f.from_ms {
            return Err(ControlError::bad(
                &format!("{field}/freeze/{i}"),
                "a freeze ends after it starts",
            ));
        }
    }
    Ok(())
}

impl Allowed {
    /// Whether `now` (ms since the epoch, UTC) falls in it.
    pub fn contains(&self, now: u64) -> bool {
        let days = now / DAY_MS;
        let weekday = ((days + 3) % 7) as usize; // 1970-01-01 was a Thursday
        let minute = ((now % DAY_MS) / 60_000) as u32;
        if self.from < self.to {
            self.days[weekday] && minute >= self.from && minute < self.to
        } else {
            // Wraps past midnight: the evening part on its own day, the morning part on the next.
            let yesterday = (weekday + 6) % 7;
            (self.days[weekday] && minute >= self.from)
                || (self.days[yesterday] && minute < self.to)
        }
    }
}

/// Why the window is closed at `now`, or None when it is open.
pub fn closed_because(w: &Window, now: u64) -> Option<String> {
    if let Some(f) = w.freeze.iter().find(|f| now >= f.from_ms && now < f.to_ms) {
        return Some(format!(
            "frozen until {} ms{}",
            f.to_ms,
            if f.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", f.reason)
            }
        ));
    }
    if w.allow.is_empty() {
        return None;
    }
    let open = w
        .allow
        .iter()
        .filter_map(|a| parse(a, "window").ok())
        .any(|a| a.contains(now));
    if open {
        None
    } else {
        Some(format!("outside the allowed times {:?}", w.allow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::model::Freeze;

    // 2024-01-01 was a Monday.
    const MON: u64 = 1_704_067_200_000;
    const H: u64 = 3_600_000;

    #[test]
    fn days_and_ranges() {
        let a = parse("mon-fri 09:00-17:00", "w").unwrap();
        assert!(a.contains(MON + 9 * H));
        assert!(!a.contains(MON + 17 * H));
        assert!(!a.contains(MON + 5 * 24 * H + 10 * H), "saturday");
        let w = parse("fri-mon 22:00-02:00", "w").unwrap();
        assert!(
            w.contains(MON + H),
            "monday 01:00 belongs to sunday's range"
        );
        assert!(w.contains(MON + 23 * H));
        assert!(
            w.contains(MON + 24 * H + H),
            "tuesday 01:00: monday's range"
        );
        assert!(!w.contains(MON + 2 * 24 * H + H), "wednesday 01:00");
        let all = parse("* 00:00-24:00", "w").unwrap();
        assert!(all.contains(MON + 3 * 24 * H + 5));
    }

    #[test]
    fn bad_specs_are_precise() {
        for s in [
            "",
            "mon",
            "xyz 09:00-10:00",
            "mon 9-10",
            "mon 10:00-10:00",
            "mon 25:00-26:00",
            "mon 09:60-10:00",
        ] {
            let e = parse(s, "stages/0/window/allow/0").unwrap_err();
            assert_eq!(e.field.as_deref(), Some("stages/0/window/allow/0"), "{s}");
        }
    }

    proptest::proptest! {
        /// Any text is an allowed time or a precise error, never a panic.
        #[test]
        fn any_text_parses_or_errs_with_the_field(s in "\\PC{0,40}") {
            if let Err(e) = parse(&s, "f") {
                proptest::prop_assert_eq!(e.field.as_deref(), Some("f"));
            }
        }

        /// A spec built from days and times parses back to them, and an instant inside a plain range
        /// (not wrapping) on a listed day is inside.
        #[test]
        fn generated_specs_round_trip(
            days in proptest::collection::btree_set(0usize..7, 1..7),
            from in 0u32..1439,
            len in 1u32..1440,
            week in 0u64..2000,
        ) {
            let to = (from + len).min(1440);
            proptest::prop_assume!(to != from);
            let names: Vec<&str> = days.iter().map(|d| DAYS[*d]).collect();
            let spec = format!("{} {:02}:{:02}-{:02}:{:02}", names.join(","), from / 60, from % 60, to / 60, to % 60);
            let a = parse(&spec, "f").unwrap();
            for d in 0..7 {
                proptest::prop_assert_eq!(a.days[d], days.contains(&d));
            }
            proptest::prop_assert_eq!((a.from, a.to), (from, to));
            let day = *days.iter().next().unwrap() as u64;
            let at = MON + (week * 7 + day) * 24 * H + u64::from(from) * 60_000;
            proptest::prop_assert!(a.contains(at), "{} at {}", spec, at);
        }
    }

    #[test]
    fn freezes_close_the_window() {
        let mut w = Window {
            allow: vec!["* 00:00-24:00".into()],
            freeze: vec![Freeze {
                from_ms: MON,
                to_ms: MON + H,
                reason: "year end".into(),
            }],
        };
        assert!(closed_because(&w, MON + 1).unwrap().contains("year end"));
        assert!(closed_because(&w, MON + H).is_none());
        w.allow = vec!["sat,sun 00:00-24:00".into()];
        assert!(closed_because(&w, MON + 2 * H).is_some());
        assert!(closed_because(&Window::default(), 0).is_none());
    }
}
