//! Canary analysis: is the canary group worse than the baseline group? Pure statistics over samples.
//!
//! Like Kayenta, the canary is compared with a baseline running the old version at the same time (not with
//! history), metric by metric, and fails when a metric is significantly worse:
//!
//! - **Errors**: a one-sided two-proportion z-test. With `x₁/n₁` canary errors and `x₂/n₂` baseline errors,
//!   the pooled rate `p = (x₁+x₂)/(n₁+n₂)` gives `z = (p₁ − p₂) / √(p(1−p)(1/n₁ + 1/n₂))`; the p-value is
//!   `1 − Φ(z)`. It fails when the p-value is below `alpha` **and** the difference is above `error_margin`
//!   (a statistically real but negligible difference is not a failure). When both groups have no errors at
//!   all, it passes.
//! - **Latency**: a one-sided Mann–Whitney U test (no assumption on the latency distribution, which is never
//!   normal): `U` counts the (canary, baseline) pairs where the canary is slower (ties count ½); with large
//!   samples `U` is close to normal with mean `n₁n₂/2` and the tie-corrected variance
//!   `n₁n₂/12 · ((n+1) − Σ(t³−t)/(n(n−1)))`. It fails when the p-value is below `alpha` **and** the canary's
//!   median exceeds `latency_factor` × the baseline's.
//! - **Tail latency** (when both groups have at least [`TAIL_MIN`] latencies): with `t` the baseline's p99,
//!   the share of canary requests slower than `t` against the baseline's own share above it (about 1 %), by
//!   the same one-sided two-proportion z-test. It fails when the p-value is below `alpha` **and** the
//!   canary's p99 exceeds `latency_factor` × the baseline's p99 (a regression of the slowest requests that
//!   leaves the median alone).
//!
//! - **Latency from proxies' windows**: proxies do not send their requests' latencies, only each listener's
//!   p50 and p99 over each health window (with the count of timed requests). When a group has no
//!   latencies but both groups have such window summaries, the group's median is the count-weighted median
//!   of its windows' p50s and its p99 the count-weighted median of its windows' p99s (so one slow window
//!   — a stall of the machine — moves neither). With summaries there is no rank test; the rule is a
//!   threshold: once both groups timed `min_samples` requests in at least [`MIN_WINDOWS`] windows each,
//!   the canary fails when its p99 (or its median) exceeds `latency_factor` × the baseline's **and** the
//!   baseline's by at least [`WINDOW_FLOOR_US`] (sub-millisecond differences on loopback are noise). The
//!   p99s judged are those of the windows that timed at least [`TAIL_MIN`] requests (a smaller window's
//!   p99 is its slowest request: one stall of the machine per window failed healthy canaries on a busy
//!   2-core machine); while either group has no such window, only the medians are judged.
//!   Until then a passing verdict waits, like for too few samples (an error-rate failure does not).
//!
//! Both groups need `min_samples` probes before a verdict (the normal approximations need samples of a few
//! dozen); until then the analysis waits, and the engine fails it after `max_wait_ms` (no data is no proof).

use serde::{Deserialize, Serialize};

use super::model::CanarySpec;

/// Latencies kept per group and host (the oldest are dropped beyond it).
pub const MAX_LATENCIES: usize = 4_096;

/// Latencies each group needs before its p99 is judged (below it the p99 is nearly the maximum).
pub const TAIL_MIN: usize = 100;

/// Windows' latency summaries each group needs before they are judged.
pub const MIN_WINDOWS: usize = 3;

/// A canary whose windows' p99 (or median) is less than this above the baseline's never fails on it, µs.
pub const WINDOW_FLOOR_US: u64 = 1_000;

/// Window summaries kept per group (the oldest are dropped beyond it).
pub const MAX_WINDOW_SUMMARIES: usize = 4_096;

/// One listener's latency over one proxy health window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowLatency {
    /// Requests timed in the window.
    pub count: u64,
    /// Their median, µs.
    pub p50_us: u64,
    /// Their 99th percentile, µs.
    pub p99_us: u64,
}

/// The probes of one group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// Requests.
    pub requests: u64,
    /// Errors among them.
    pub errors: u64,
    /// Latencies of the requests, µs (bounded).
    #[serde(default)]
    pub latencies_us: Vec<u64>,
    /// Latency summaries of proxies' health windows (bounded; see the module's documentation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowLatency>,
}

impl Samples {
    /// Adds another group's probes, keeping at most [`MAX_LATENCIES`] latencies.
    pub fn add(&mut self, other: &Samples) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors.min(other.requests));
        self.latencies_us.extend_from_slice(&other.latencies_us);
        if self.latencies_us.len() > MAX_LATENCIES {
            let cut = self.latencies_us.len() - MAX_LATENCIES;
            self.latencies_us.drain(..cut);
        }
        self.add_windows(&other.windows);
    }

    /// Adds window latency summaries (those with no timed request are skipped), keeping at most
    /// [`MAX_WINDOW_SUMMARIES`].
    pub fn add_windows(&mut self, w: &[WindowLatency]) {
        self.windows.extend(w.iter().filter(|w| w.count > 0));
        if self.windows.len() > MAX_WINDOW_SUMMARIES {
            let cut = self.windows.len() - MAX_WINDOW_SUMMARIES;
            self.windows.drain(..cut);
        }
    }

    /// Requests timed in the window summaries.
    fn timed(&self) -> u64 {
        self.windows
            .iter()
            .fold(0u64, |a, w| a.saturating_add(w.count))
    }

    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// A group's summary in a verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Error rate.
    pub error_rate: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    #[serde(default)]
    pub p99_us: u64,
}

/// The outcome of an analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the canary passed.
    pub pass: bool,
    /// Why, in words.
    pub reason: String,
    /// The canary group.
    pub canary: GroupSummary,
    /// The baseline group.
    pub baseline: GroupSummary,
    /// The error test's z and one-sided p-value.
    pub errors_z: f64,
    /// p-value of the error test.
    pub errors_p: f64,
    /// The latency test's U statistic and one-sided p-value (None when latency is not judged).
    pub latency_u: Option<f64>,
    /// p-value of the latency test.
    pub latency_p: Option<f64>,
    /// p-value of the tail latency test (None when not judged: too few latencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_p: Option<f64>,
    /// The verdict on the spans of the canary and baseline hosts (service canaries whose service is
    /// traced), part of this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<Box<Verdict>>,
}

/// Φ, the standard normal CDF (via a rational erfc approximation, |error| < 1.2e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let erfc = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// One-sided two-proportion z-test that the first rate is higher: (z, p-value).
pub fn two_proportion_z(x1: u64, n1: u64, x2: u64, n2: u64) -> (f64, f64) {
    if n1 == 0 || n2 == 0 {
        return (0.0, 1.0);
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let p = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        // Both all-success or both all-failure: no evidence of a difference.
        return (0.0, 1.0);
    }
    let z = (p1 - p2) / se;
    (z, 1.0 - normal_cdf(z))
}

/// One-sided Mann–Whitney U test that the first sample is stochastically greater: (U₁, p-value), by the
/// normal approximation with tie correction.
pub fn mann_whitney_greater(a: &[u64], b: &[u64]) -> (f64, f64) {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return (0.0, 1.0);
    }
    let mut all: Vec<(u64, bool)> = a
        .iter()
        .map(|v| (*v, true))
        .chain(b.iter().map(|v| (*v, false)))
        .collect();
    all.sort_unstable_by_key(|(v, _)| *v);
    let n = all.len();
    let (mut rank_sum_a, mut ties) = (0.0f64, 0.0f64);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_a += rank * all[i..=j].iter().filter(|(_, in_a)| *in_a).count() as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u1 = rank_sum_a - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return (u1, 1.0);
    }
    // Continuity correction of ½ toward the mean.
    let z = (u1 - mean - 0.5) / var.sqrt();
    (u1, 1.0 - normal_cdf(z))
}

fn median(v: &[u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    s[s.len() / 2]
}

/// The 99th percentile (nearest rank) of `v` (0 when empty).
fn p99(v: &[u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    s[(s.len() * 99).div_ceil(100) - 1]
}

/// The count-weighted median of `value` over window summaries (0 when none): the value of the window that
/// holds the middle timed request when the windows are sorted by it.
fn weighted_median(w: &[WindowLatency], value: impl Fn(&WindowLatency) -> u64) -> u64 {
    let mut v: Vec<(u64, u64)> = w.iter().map(|w| (value(w), w.count)).collect();
    v.sort_unstable();
    let total: u64 = v.iter().fold(0u64, |a, (_, c)| a.saturating_add(*c));
    let mut seen = 0u64;
    for (x, c) in v {
        seen = seen.saturating_add(c);
        if seen.saturating_mul(2) > total {
            return x;
        }
    }
    0
}

fn summary(s: &Samples) -> GroupSummary {
    let (p50_us, p99_us) = if s.latencies_us.is_empty() && !s.windows.is_empty() {
        (
            weighted_median(&s.windows, |w| w.p50_us),
            weighted_median(&s.windows, |w| w.p99_us),
        )
    } else {
        (median(&s.latencies_us), p99(&s.latencies_us))
    };
    GroupSummary {
        requests: s.requests,
        errors: s.errors,
        error_rate: s.error_rate(),
        p50_us,
        p99_us,
    }
}

/// Whether latency is judged on the groups' window summaries: judged, both have summaries, and neither
/// has latencies of its own.
fn by_windows(spec: &CanarySpec, canary: &Samples, baseline: &Samples) -> bool {
    spec.latency
        && canary.latencies_us.is_empty()
        && baseline.latencies_us.is_empty()
        && !canary.windows.is_empty()
        && !baseline.windows.is_empty()
}

/// Judges the canary against the baseline; None while either group has fewer than `min_samples` requests.
pub fn judge(spec: &CanarySpec, canary: &Samples, baseline: &Samples) -> Option<Verdict> {
    if canary.requests < spec.min_samples || baseline.requests < spec.min_samples {
        return None;
    }
    let windows = by_windows(spec, canary, baseline);
    // Latency from windows waits for enough of them; an error-rate failure does not.
    let windows_wait = windows
        && [canary, baseline]
            .iter()
            .any(|s| s.windows.len() < MIN_WINDOWS || s.timed() < spec.min_samples);
    let (c, b) = (summary(canary), summary(baseline));
    let (z, p) = two_proportion_z(
        canary.errors,
        canary.requests,
        baseline.errors,
        baseline.requests,
    );
    let mut v = Verdict {
        pass: true,
        reason: String::new(),
        canary: c.clone(),
        baseline: b.clone(),
        errors_z: z,
        errors_p: p,
        latency_u: None,
        latency_p: None,
        tail_p: None,
        spans: None,
    };
    let mut fails = Vec::new();
    if p < spec.alpha && c.error_rate - b.error_rate > spec.error_margin {
        fails.push(format!(
            "error rate {:.4} vs baseline {:.4} (z = {z:.2}, p = {p:.2e})",
            c.error_rate, b.error_rate
        ));
    }
    if spec.latency && !canary.latencies_us.is_empty() && !baseline.latencies_us.is_empty() {
        let (u, lp) = mann_whitney_greater(&canary.latencies_us, &baseline.latencies_us);
        v.latency_u = Some(u);
        v.latency_p = Some(lp);
        if lp < spec.alpha && c.p50_us as f64 > spec.latency_factor * b.p50_us.max(1) as f64 {
            fails.push(format!(
                "median latency {} µs vs baseline {} µs (U = {u:.0}, p = {lp:.2e})",
                c.p50_us, b.p50_us
            ));
        }
        if canary.latencies_us.len() >= TAIL_MIN && baseline.latencies_us.len() >= TAIL_MIN {
            let t = b.p99_us;
            let above = |l: &[u64]| l.iter().filter(|&&x| x > t).count() as u64;
            let (ca, ba) = (above(&canary.latencies_us), above(&baseline.latencies_us));
            let (tz, tp) = two_proportion_z(
                ca,
                canary.latencies_us.len() as u64,
                ba,
                baseline.latencies_us.len() as u64,
            );
            v.tail_p = Some(tp);
            if tp < spec.alpha && c.p99_us as f64 > spec.latency_factor * b.p99_us.max(1) as f64 {
                fails.push(format!(
                    "p99 latency {} µs vs baseline {} µs ({ca} of {} canary requests above the baseline's p99, z = {tz:.2}, p = {tp:.2e})",
                    c.p99_us,
                    b.p99_us,
                    canary.latencies_us.len()
                ));
            }
        }
    }
    let mut tail_unjudged = false;
    if windows && !windows_wait {
        let worse = |c: u64, b: u64| {
            c as f64 > spec.latency_factor * b.max(1) as f64
                && c.saturating_sub(b) >= WINDOW_FLOOR_US
        };
        let detail = || {
            format!(
                "over {} canary and {} baseline proxy windows, {} and {} requests timed",
                canary.windows.len(),
                baseline.windows.len(),
                canary.timed(),
                baseline.timed()
            )
        };
        // A window that timed fewer than TAIL_MIN requests has its slowest request, or nearly, as
        // its p99: one stall of the machine per window would fail a healthy canary. The tail is
        // judged on the windows that timed at least TAIL_MIN (each group's count-weighted median of
        // their p99s), and not at all while either group has none; the median always is.
        let tail = |s: &Samples| {
            let big: Vec<WindowLatency> = s
                .windows
                .iter()
                .filter(|w| w.count >= TAIL_MIN as u64)
                .copied()
                .collect();
            (!big.is_empty()).then(|| weighted_median(&big, |w| w.p99_us))
        };
        match (tail(canary), tail(baseline)) {
            (Some(ct), Some(bt)) => {
                if worse(ct, bt) {
                    fails.push(format!(
                        "p99 latency {ct} µs vs baseline {bt} µs ({})",
                        detail()
                    ));
                }
            }
            _ => tail_unjudged = true,
        }
        if worse(c.p50_us, b.p50_us) {
            fails.push(format!(
                "median latency {} µs vs baseline {} µs ({})",
                c.p50_us,
                b.p50_us,
                detail()
            ));
        }
    }
    if fails.is_empty() && windows_wait {
        return None;
    }
    if fails.is_empty() {
        v.reason = format!(
            "no significant regression: error rate {:.4} vs {:.4}, median {} µs vs {} µs, p99 {} µs vs {} µs{}",
            c.error_rate,
            b.error_rate,
            c.p50_us,
            b.p50_us,
            c.p99_us,
            b.p99_us,
            if tail_unjudged {
                format!(" (p99 not judged: no proxy window timed {TAIL_MIN} requests)")
            } else {
                String::new()
            }
        );
    } else {
        v.pass = false;
        v.reason = fails.join("; ");
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-2.326) - 0.01).abs() < 1e-4);
    }

    #[test]
    fn z_test_matches_a_hand_computation() {
        // 30/200 vs 10/200: p = 0.1, se = sqrt(0.09 * 0.01) = 0.03, z = 0.1 / 0.03 = 3.333.
        let (z, p) = two_proportion_z(30, 200, 10, 200);
        assert!((z - 3.3333).abs() < 1e-3, "{z}");
        assert!(p < 0.001 && p > 0.0003, "{p}");
        assert_eq!(two_proportion_z(0, 100, 0, 100), (0.0, 1.0));
        let (_, p) = two_proportion_z(10, 200, 30, 200);
        assert!(p > 0.99, "a better canary is not worse");
    }

    #[test]
    fn mann_whitney_on_a_small_exact_case() {
        // a all above b: U1 = n1*n2 = 9.
        let (u, p) = mann_whitney_greater(&[10, 11, 12], &[1, 2, 3]);
        assert_eq!(u, 9.0);
        assert!(p < 0.05, "{p}");
        let (u, p) = mann_whitney_greater(&[5, 5, 5], &[5, 5, 5]);
        assert_eq!(u, 4.5);
        assert_eq!(p, 1.0, "all ties: no variance");
        let (_, p) = mann_whitney_greater(&[1, 2, 3], &[10, 11, 12]);
        assert!(p > 0.9);
    }

    fn samples(n: u64, errors: u64, lat: u64) -> Samples {
        Samples {
            requests: n,
            errors,
            latencies_us: (0..n).map(|i| lat + i % 7).collect(),
            windows: Vec::new(),
        }
    }

    /// Proxy windows only: `n` windows of 120 requests each (none failing), p50 and p99 per window.
    fn windows(n: usize, p50: u64, p99: u64) -> Samples {
        windows_of(120, n, p50, p99)
    }

    /// `n` windows of `count` requests each (none failing), p50 and p99 per window.
    fn windows_of(count: u64, n: usize, p50: u64, p99: u64) -> Samples {
        let mut s = Samples {
            requests: count * n as u64,
            ..Samples::default()
        };
        s.add_windows(&vec![
            WindowLatency {
                count,
                p50_us: p50,
                p99_us: p99,
            };
            n
        ]);
        s
    }

    #[test]
    fn verdicts_on_proxy_window_latency() {
        let spec = CanarySpec::default();
        // Same latency: passes, and the summaries are the windows' values.
        let v = judge(&spec, &windows(4, 300, 900), &windows(4, 300, 900)).unwrap();
        assert!(v.pass, "{}", v.reason);
        assert_eq!((v.canary.p50_us, v.canary.p99_us), (300, 900));
        // A canary whose p99 is 30 ms against 0.9 ms fails, named by its p99.
        let v = judge(&spec, &windows(4, 300, 30_000), &windows(4, 300, 900)).unwrap();
        assert!(!v.pass);
        assert!(
            v.reason.starts_with("p99 latency 30000 µs vs baseline 900 µs (over 4 canary and 4 baseline proxy windows, 480 and 480 requests timed)"),
            "{}",
            v.reason
        );
        // A slower median fails too.
        let v = judge(&spec, &windows(4, 20_000, 30_000), &windows(4, 300, 900)).unwrap();
        assert!(!v.pass);
        assert!(v.reason.contains("median latency 20000 µs"), "{}", v.reason);
        // Three times slower but by less than the floor: loopback noise, passes.
        let v = judge(&spec, &windows(4, 100, 600), &windows(4, 100, 200)).unwrap();
        assert!(v.pass, "{}", v.reason);
        // Above the floor but within the factor: passes.
        let v = judge(&spec, &windows(4, 300, 13_000), &windows(4, 300, 10_000)).unwrap();
        assert!(v.pass, "{}", v.reason);
        // One stalled window among five moves neither estimate.
        let mut c = windows(4, 300, 900);
        c.add(&windows(1, 50_000, 90_000));
        let v = judge(&spec, &c, &windows(5, 300, 900)).unwrap();
        assert!(v.pass, "{}", v.reason);
        assert_eq!(v.canary.p99_us, 900);
        // Windows of 30 timed requests: each one's p99 is about its slowest request, so a canary
        // whose every window had one stall is not failed on it (the median still is judged).
        let v = judge(
            &spec,
            &windows_of(30, 4, 300, 30_000),
            &windows_of(30, 4, 300, 900),
        )
        .unwrap();
        assert!(v.pass, "{}", v.reason);
        assert!(
            v.reason
                .ends_with("(p99 not judged: no proxy window timed 100 requests)")
        );
        let v = judge(
            &spec,
            &windows_of(30, 4, 20_000, 30_000),
            &windows_of(30, 4, 300, 900),
        )
        .unwrap();
        assert!(
            !v.pass && v.reason.starts_with("median latency 20000 µs"),
            "{}",
            v.reason
        );
        // One group's windows big enough and the other's not: the tail is not judged either.
        let v = judge(
            &spec,
            &windows(4, 300, 30_000),
            &windows_of(30, 4, 300, 900),
        )
        .unwrap();
        assert!(v.pass, "{}", v.reason);
        // Too few windows (or timed requests): the verdict waits.
        assert!(judge(&spec, &windows(2, 300, 30_000), &windows(4, 300, 900)).is_none());
        let few = CanarySpec {
            min_samples: 130,
            ..CanarySpec::default()
        };
        let mut c = windows_of(30, 4, 300, 30_000);
        c.requests = 200;
        let mut b = windows_of(30, 4, 300, 900);
        b.requests = 200;
        assert!(judge(&few, &c, &b).is_none(), "120 timed requests < 130");
        // Failing on errors does not wait for latency windows (a dead backend's errors are not timed).
        let mut c = windows(1, 300, 900);
        c.requests = 120;
        c.errors = 100;
        let v = judge(&spec, &c, &windows(4, 300, 900)).unwrap();
        assert!(
            !v.pass && v.reason.starts_with("error rate"),
            "{}",
            v.reason
        );
        // Latency not judged, or one group without summaries (proxies that send none): errors only.
        let off = CanarySpec {
            latency: false,
            ..CanarySpec::default()
        };
        assert!(
            judge(&off, &windows(4, 300, 30_000), &windows(4, 300, 900))
                .unwrap()
                .pass
        );
        let mut plain = windows(0, 0, 0);
        plain.requests = 120;
        assert!(judge(&spec, &windows(4, 300, 30_000), &plain).unwrap().pass);
        // Errors are still judged next to latency.
        let mut c = windows(4, 300, 900);
        c.errors = 60;
        let v = judge(&spec, &c, &windows(4, 300, 900)).unwrap();
        assert!(!v.pass && v.reason.contains("error rate"), "{}", v.reason);
        // Weighted median: the window holding the middle request.
        let w = |count, p99_us| WindowLatency {
            count,
            p50_us: 0,
            p99_us,
        };
        assert_eq!(
            weighted_median(&[w(10, 5), w(100, 7), w(10, 900)], |w| w.p99_us),
            7
        );
        assert_eq!(weighted_median(&[w(1, 5), w(3, 9)], |w| w.p99_us), 9);
        assert_eq!(weighted_median(&[], |w| w.p99_us), 0);
        // Summaries are bounded.
        let mut s = Samples::default();
        for _ in 0..3 {
            s.add(&windows(MAX_WINDOW_SUMMARIES, 1, 1));
        }
        assert_eq!(s.windows.len(), MAX_WINDOW_SUMMARIES);
    }

    #[test]
    fn verdicts() {
        let spec = CanarySpec::default();
        assert!(judge(&spec, &samples(10, 0, 100), &samples(100, 0, 100)).is_none());
        let v = judge(&spec, &samples(100, 0, 100), &samples(100, 0, 100)).unwrap();
        assert!(v.pass, "{}", v.reason);
        let v = judge(&spec, &samples(100, 100, 100), &samples(100, 0, 100)).unwrap();
        assert!(!v.pass);
        assert!(v.reason.contains("error rate"), "{}", v.reason);
        let v = judge(&spec, &samples(100, 0, 1000), &samples(100, 0, 100)).unwrap();
        assert!(!v.pass);
        assert!(v.reason.contains("latency"), "{}", v.reason);
        // Significantly slower but within the factor: passes.
        let v = judge(&spec, &samples(100, 0, 120), &samples(100, 0, 100)).unwrap();
        assert!(v.pass, "{}", v.reason);
        // The slowest 5 % ten times slower: the median is equal, the p99 is not.
        let tail = |n: u64, slow: bool| Samples {
            requests: n,
            errors: 0,
            latencies_us: (0..n)
                .map(|i| {
                    if slow && i % 20 == 0 {
                        5_000
                    } else {
                        100 + i % 7
                    }
                })
                .collect(),
            windows: Vec::new(),
        };
        let v = judge(&spec, &tail(400, true), &tail(400, false)).unwrap();
        assert!(!v.pass, "{}", v.reason);
        assert!(v.reason.contains("p99 latency 5000"), "{}", v.reason);
        assert!(v.tail_p.unwrap() < 1e-4);
        let v = judge(&spec, &tail(400, false), &tail(400, false)).unwrap();
        assert!(v.pass && v.tail_p.is_some(), "{}", v.reason);
        // Too few latencies: the p99 is not judged.
        let v = judge(&spec, &tail(60, true), &tail(60, false)).unwrap();
        assert_eq!(v.tail_p, None);
        assert_eq!(p99(&(1..=100).collect::<Vec<u64>>()), 99);
        assert_eq!(p99(&[7]), 7);
        // One error more is within the margin.
        let v = judge(&spec, &samples(1000, 2, 100), &samples(1000, 0, 100)).unwrap();
        assert!(v.pass, "{}", v.reason);
    }
}
