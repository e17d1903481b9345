//! Cron expressions with seconds, and the time zones they are read in.
//!
//! Six fields, `SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK`, each a comma list of `*`, `?` (same as `*`),
//! `N`, `A-B`, `*/S`, `A-B/S` or `N/S` (from N to the field's end, every S); months and weekdays also by
//! their three-letter English names (`JAN`, `MON`); weekday 0 and 7 are both Sunday. As in Vixie cron,
//! when both day fields are restricted a day matches when either does.
//!
//! Time zones: `UTC`, a fixed offset `+HH:MM` / `-HH:MM`, or a named zone (`Europe/Paris`) read from the
//! system's TZif files by our own reader (`super::tz`). The search runs on wall-clock time; each matching
//! wall time is turned into an instant with the zone's transitions: a wall time skipped when the clocks go
//! forward does not fire that day, one repeated when they go back fires once (its first occurrence), as
//! Vixie cron does for jobs in those hours.
//!
//! The search for the next firing time jumps a whole month, day, hour or minute when that field cannot
//! match, so it costs at most a few hundred steps; an expression that can never fire (`0 0 0 30 2 *`) is
//! refused when parsed by looking five years ahead.

use std::fmt;

/// A parse error, with the field it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct CronError {
    /// The field (`second`, `minute`, ... or `expr`/`tz`).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn err(field: &'static str, message: impl Into<String>) -> CronError {
    CronError {
        field,
        message: message.into(),
    }
}

/// A time zone: a fixed offset from UTC, or a named zone read from the system's TZif files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Zone {
    /// Seconds east of UTC.
    Fixed(i64),
    /// A named zone with its transitions (daylight saving).
    Named(std::sync::Arc<super::tz::TzData>),
}

impl Zone {
    /// UTC.
    pub const UTC: Zone = Zone::Fixed(0);

    /// Parses `UTC`, `Z`, `+HH:MM`, `-HH:MM` (also `UTC+HH:MM`), or a zone name (`Europe/Paris`) read from
    /// `/usr/share/zoneinfo`.
    pub fn parse(s: &str) -> Result<Zone, CronError> {
        let t = s.trim();
        let t = t.strip_prefix("UTC").unwrap_or(t);
        if t.is_empty() || t == "Z" {
            return Ok(Zone::UTC);
        }
        let bad = || {
            err(
                "tz",
                format!(
                    "unsupported time zone {s:?}: use UTC, a fixed offset like +05:30, or Area/City"
                ),
            )
        };
        let (sign, rest) = match t.as_bytes()[0] {
            b'+' => (1, &t[1..]),
            b'-' => (-1, &t[1..]),
            _ if t
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'-' | b'+')) =>
            {
                return super::tz::load(t)
                    .map(Zone::Named)
                    .map_err(|e| err("tz", e));
            }
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        if !(0..=14).contains(&h) || !(0..60).contains(&m) {
            return Err(bad());
        }
        Ok(Zone::Fixed(sign * (h * 3600 + m * 60)))
    }

    /// The offset (seconds east) in force at Unix second `t`.
    pub fn offset_at(&self, t: i64) -> i64 {
        match self {
            Zone::Fixed(o) => *o,
            Zone::Named(z) => z.offset_at(t),
        }
    }

    /// The first instant (Unix seconds) with wall time `local`: None in a daylight-saving gap. A wall time
    /// that occurs twice (the hour repeated when clocks go back) counts at its first occurrence only.
    fn first_instant(&self, local: i64) -> Option<i64> {
        match self {
            Zone::Fixed(o) => Some(local - o),
            Zone::Named(z) => z.instants(local).first().copied(),
        }
    }
}

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    sec: u64,
    min: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn value(field: &'static str, s: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u32, CronError> {
    let up = s.to_ascii_uppercase();
    if let Some(i) = names.iter().position(|n| *n == up) {
        return Ok(i as u32 + lo);
    }
    let v: u32 = s
        .parse()
        .map_err(|_| err(field, format!("{s:?} is not a number")))?;
    if v < lo || v > hi {
        return Err(err(field, format!("{v} is outside {lo}-{hi}")));
    }
    Ok(v)
}

/// Parses one field into a bit mask; returns whether it was `*`.
fn field(
    name: &'static str,
    text: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
) -> Result<(u64, bool), CronError> {
    if text.is_empty() {
        return Err(err(name, "empty field"));
    }
    let mut mask = 0u64;
    let star = text == "*" || text == "?";
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| err(name, format!("step {s:?} is not a number")))?;
                if s == 0 || s > hi {
                    return Err(err(name, format!("step {s} must be 1-{hi}")));
                }
                (r, Some(s))
            }
            None => (part, None),
        };
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = value(name, a, lo, hi, names)?;
            let b = value(name, b, lo, hi, names)?;
            if a > b {
                return Err(err(name, format!("range {a}-{b} is backwards")));
            }
            (a, b)
        } else {
            let a = value(name, range, lo, hi, names)?;
            (a, if step.is_some() { hi } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = a;
        while v <= b {
            mask |= 1 << v;
            v += step;
        }
    }
    Ok((mask, star))
}

impl Cron {
    /// Parses a six-field expression.
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let f: Vec<&str> = expr.split_whitespace().collect();
        if f.len() != 6 {
            return Err(err(
                "expr",
                format!(
                    "{} fields: a cron expression here has six (SEC MIN HOUR DAY MONTH WEEKDAY)",
                    f.len()
                ),
            ));
        }
        let (sec, _) = field("second", f[0], 0, 59, &[])?;
        let (min, _) = field("minute", f[1], 0, 59, &[])?;
        let (hour, _) = field("hour", f[2], 0, 23, &[])?;
        let (dom, dom_star) = field("day_of_month", f[3], 1, 31, &[])?;
        let (month, _) = field("month", f[4], 1, 12, &MONTHS)?;
        let (mut dow, dow_star) = field("day_of_week", f[5], 0, 7, &DAYS)?;
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & !(1 << 7);
        }
        let c = Cron {
            sec,
            min,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        };
        // Refuse expressions that never fire (Feb 30th): look five years ahead of a fixed leap-aligned date.
        if c.next_after(1_577_836_800_000, &Zone::UTC).is_none() {
            return Err(err("expr", format!("{expr:?} never fires")));
        }
        Ok(c)
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let d = self.dom & (1 << day) != 0;
        let w = self.dow & (1 << weekday) != 0;
        match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (false, true) => d,
            (true, false) => w,
            (false, false) => d || w,
        }
    }

    /// The first firing time strictly after `after_ms` (Unix ms), on whole seconds; None if there is none
    /// within about five years.
    ///
    /// In a zone with daylight saving, wall times skipped when clocks go forward do not fire, and wall times
    /// repeated when they go back fire once, at their first occurrence.
    pub fn next_after(&self, after_ms: i64, zone: &Zone) -> Option<i64> {
        let after_s = after_ms.div_euclid(1000);
        // Local seconds of the next whole second.
        let mut t = after_s + 1 + zone.offset_at(after_s);
        for _ in 0..20_000 {
            let days = t.div_euclid(86_400);
            let secs = t.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            if self.month & (1 << m) == 0 {
                // First day of the next month.
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                t = days_from_civil(ny, nm, 1) * 86_400;
                continue;
            }
            let weekday = (days + 4).rem_euclid(7) as u32;
            if !self.day_matches(d, weekday) {
                t = (days + 1) * 86_400;
                continue;
            }
            let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
            if self.hour & (1 << h) == 0 {
                t = days * 86_400 + (h + 1) * 3600;
                continue;
            }
            if self.min & (1 << mi) == 0 {
                t = days * 86_400 + h * 3600 + (mi + 1) * 60;
                continue;
            }
            if self.sec & (1 << s) == 0 {
                t += 1;
                continue;
            }
            match zone.first_instant(t) {
                Some(u) if u > after_s => return Some(u * 1000),
                _ => t += 1,
            }
        }
        None
    }

    /// Whether the whole second `at_ms` (Unix ms) matches, in `zone`.
    pub fn matches(&self, at_ms: i64, zone: &Zone) -> bool {
        let at_s = at_ms.div_euclid(1000);
        let t = at_s + zone.offset_at(at_s);
        if zone.first_instant(t) != Some(at_s) {
            return false;
        }
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400);
        let (_, m, d) = civil_from_days(days);
        let weekday = (days + 4).rem_euclid(7) as u32;
        self.month & (1 << m) != 0
            && self.day_matches(d, weekday)
            && self.hour & (1 << (secs / 3600)) != 0
            && self.min & (1 << (secs / 60 % 60)) != 0
            && self.sec & (1 << (secs % 60)) != 0
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(y: i64, m: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        (days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000
    }

    #[test]
    fn every_second_and_steps() {
        let c = Cron::parse("* * * * * *").unwrap();
        assert_eq!(c.next_after(1_500, &Zone::UTC), Some(2_000));
        assert_eq!(c.next_after(2_000, &Zone::UTC), Some(3_000));
        let c = Cron::parse("*/15 * * * * *").unwrap();
        assert_eq!(
            c.next_after(ms(2026, 1, 1, 0, 0, 1), &Zone::UTC),
            Some(ms(2026, 1, 1, 0, 0, 15))
        );
        assert_eq!(
            c.next_after(ms(2026, 1, 1, 0, 0, 45), &Zone::UTC),
            Some(ms(2026, 1, 1, 0, 1, 0))
        );
    }

    #[test]
    fn days_months_weekdays_and_zones() {
        // 09:30:00 on weekdays: Friday 2026-12-04 after 10:00 → Monday 2026-12-07.
        let c = Cron::parse("0 30 9 * * MON-FRI").unwrap();
        assert_eq!(
            c.next_after(ms(2026, 12, 4, 10, 0, 0), &Zone::UTC),
            Some(ms(2026, 12, 7, 9, 30, 0))
        );
        // The same in +05:30: 09:30 local is 04:00 UTC.
        let z = Zone::parse("+05:30").unwrap();
        assert_eq!(
            c.next_after(ms(2026, 12, 4, 10, 0, 0), &z),
            Some(ms(2026, 12, 7, 4, 0, 0))
        );
        // Leap day only.
        let c = Cron::parse("0 0 0 29 FEB ?").unwrap();
        assert_eq!(
            c.next_after(ms(2026, 1, 1, 0, 0, 0), &Zone::UTC),
            Some(ms(2028, 2, 29, 0, 0, 0))
        );
        // Either day field (Vixie): the 1st or any Sunday.
        let c = Cron::parse("0 0 0 1 * 7").unwrap();
        assert_eq!(
            c.next_after(ms(2026, 12, 2, 0, 0, 0), &Zone::UTC),
            Some(ms(2026, 12, 6, 0, 0, 0))
        );
    }

    #[test]
    fn named_zones_follow_daylight_saving() {
        let paris = Zone::parse("Europe/Paris").unwrap();
        // 09:30 local every day: 08:30 UTC in winter, 07:30 UTC in summer.
        let c = Cron::parse("0 30 9 * * *").unwrap();
        assert_eq!(
            c.next_after(ms(2026, 3, 28, 12, 0, 0), &paris),
            Some(ms(2026, 3, 29, 7, 30, 0))
        );
        assert_eq!(
            c.next_after(ms(2026, 3, 27, 12, 0, 0), &paris),
            Some(ms(2026, 3, 28, 8, 30, 0))
        );
        // 02:30 local does not exist on 2026-03-29: that day does not fire.
        let c = Cron::parse("0 30 2 * * *").unwrap();
        assert_eq!(
            c.next_after(ms(2026, 3, 28, 12, 0, 0), &paris),
            Some(ms(2026, 3, 30, 0, 30, 0))
        );
        // 02:30 local happens twice on 2026-10-25: it fires once, at the first (00:30 UTC).
        let first = c.next_after(ms(2026, 10, 24, 12, 0, 0), &paris).unwrap();
        assert_eq!(first, ms(2026, 10, 25, 0, 30, 0));
        assert_eq!(
            c.next_after(first, &paris),
            Some(ms(2026, 10, 26, 1, 30, 0))
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (expr, field) in [
            ("* * * *", "expr"),
            ("60 * * * * *", "second"),
            ("* x * * * *", "minute"),
            ("* * 5-2 * * *", "hour"),
            ("* * * 0 * *", "day_of_month"),
            ("* * * * FOO *", "month"),
            ("* * * * * */0", "day_of_week"),
            ("0 0 0 30 2 *", "expr"),
        ] {
            assert_eq!(Cron::parse(expr).unwrap_err().field, field, "{expr}");
        }
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert!(Zone::parse("../../etc/passwd").is_err());
        assert!(Zone::parse("+15:00").is_err());
        assert_eq!(Zone::parse("-08:00").unwrap(), Zone::Fixed(-8 * 3600));
        assert_eq!(Zone::parse("UTC").unwrap(), Zone::UTC);
    }

    fn field_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            (0u32..60).prop_map(|v| v.to_string()),
            (0u32..30, 30u32..60).prop_map(|(a, b)| format!("{a}-{b}")),
            (1u32..20).prop_map(|s| format!("*/{s}")),
            (0u32..60, 0u32..60).prop_map(|(a, b)| format!("{a},{b}")),
        ]
    }

    proptest! {
        /// The next time is after the start, matches, and no second in between matches (checked by brute
        /// force over a window of a few hours).
        #[test]
        fn next_is_the_first_match(
            s in field_text(), m in field_text(),
            h in prop_oneof![Just("*".to_string()), (0u32..24).prop_map(|v| v.to_string())],
            start in 1_600_000_000_000i64..1_900_000_000_000i64,
            off in -12i64..14,
        ) {
            let c = Cron::parse(&format!("{s} {m} {h} * * *")).unwrap();
            let z = Zone::Fixed(off * 3600);
            let next = c.next_after(start, &z).unwrap();
            prop_assert!(next > start);
            prop_assert_eq!(next % 1000, 0);
            prop_assert!(c.matches(next, &z));
            let mut t = (start.div_euclid(1000) + 1) * 1000;
            let mut steps = 0;
            while t < next && steps < 30_000 {
                prop_assert!(!c.matches(t, &z), "{} matches before {}", t, next);
                t += 1000;
                steps += 1;
            }
        }

        /// The same in zones with daylight saving, around their 2026 transitions: gaps never fire, a
        /// repeated hour fires once.
        #[test]
        fn next_is_the_first_match_across_dst(
            s in field_text(), m in field_text(),
            h in prop_oneof![Just("*".to_string()), (0u32..24).prop_map(|v| v.to_string())],
            zone in prop_oneof![Just("Europe/Paris"), Just("America/New_York"), Just("Australia/Lord_Howe")],
            edge in prop_oneof![Just(1_774_742_400_000i64), Just(1_792_886_400_000i64),
                Just(1_772_928_000_000i64), Just(1_793_491_200_000i64), Just(1_775_318_400_000i64)],
            shift in -30_000i64..30_000,
        ) {
            let c = Cron::parse(&format!("{s} {m} {h} * * *")).unwrap();
            let z = Zone::parse(zone).unwrap();
            let start = edge + shift * 1000;
            let next = c.next_after(start, &z).unwrap();
            prop_assert!(next > start);
            prop_assert!(c.matches(next, &z));
            let mut t = (start.div_euclid(1000) + 1) * 1000;
            let mut steps = 0;
            while t < next && steps < 30_000 {
                prop_assert!(!c.matches(t, &z), "{} matches before {}", t, next);
                t += 1000;
                steps += 1;
            }
        }

        /// Dates round-trip through day numbers.
        #[test]
        fn civil_roundtrip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        /// Garbage never panics.
        #[test]
        fn parse_never_panics(s in "[0-9*/,A-Za-z? -]{0,40}") {
            let _ = Cron::parse(&s);
            let _ = Zone::parse(&s);
        }
    }
}
