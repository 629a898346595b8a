//! Writing the Prometheus text exposition format (version 0.0.4).
//!
//! Only what [`ServerMetrics`](super::ServerMetrics) needs: `# HELP` / `# TYPE`
//! headers, plain samples with optional labels, and histograms. Numbers of
//! seconds are printed from integer microseconds, so bucket bounds are exact
//! decimals (`0.000025`, not `2.4999999e-05`).

use std::fmt::Write as _;

use super::histogram::{HistogramSnapshot, BOUNDS_US};

/// Largest bucket bound exported to Prometheus (10 000 s); larger values still
/// count in `+Inf`, `_sum` and `_count`.
const MAX_EXPORTED_US: u64 = 10_000_000_000;

/// `prefix` made into a valid metric-name prefix (`[a-zA-Z_:][a-zA-Z0-9_:]*`),
/// with an `_` separator appended; empty if `prefix` is empty.
pub(super) fn sanitize_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 2);
    for (i, c) in prefix.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit());
        if i == 0 && c.is_ascii_digit() {
            p.push('_');
            p.push(c);
        } else {
            p.push(if ok { c } else { '_' });
        }
    }
    if !p.is_empty() && !p.ends_with('_') {
        p.push('_');
    }
    p
}

/// `# HELP` and `# TYPE` lines for one metric family.
pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A whole family with one unlabelled sample.
pub(super) fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A whole family with one unlabelled sample in seconds, from microseconds.
pub(super) fn single_seconds(out: &mut String, name: &str, kind: &str, help: &str, us: u64) {
    header(out, name, kind, help);
    out.push_str(name);
    out.push(' ');
    seconds(out, us);
    out.push('\n');
}

/// `us` microseconds as a decimal number of seconds, without trailing zeros.
pub(super) fn seconds(out: &mut String, us: u64) {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    let _ = write!(out, "{whole}");
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Whether a bucket bound is one of the exported ones: 1, 2.5 or 5 times a power
/// of ten, from 10 µs to [`MAX_EXPORTED_US`].
fn exported(bound_us: u64) -> bool {
    if !(10..=MAX_EXPORTED_US).contains(&bound_us) {
        return false;
    }
    let mut m = bound_us;
    while m >= 100 && m % 10 == 0 {
        m /= 10;
    }
    matches!(m, 10 | 25 | 50)
}

/// A histogram family in seconds: cumulative `_bucket{le=...}` lines, `_sum` and
/// `_count` (which always equals the `+Inf` bucket).
pub(super) fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    header(out, name, "histogram", help);
    let mut cumulative = 0u64;
    for (&count, &bound) in h.counts().iter().zip(BOUNDS_US.iter()) {
        cumulative = cumulative.saturating_add(count);
        if exported(bound) {
            let _ = write!(out, "{name}_bucket{{le=\"");
            seconds(out, bound);
            let _ = writeln!(out, "\"}} {cumulative}");
        }
    }
    let total = h.count();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = write!(out, "{name}_sum ");
    seconds(out, h.sum_us());
    let _ = writeln!(out, "\n{name}_count {total}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_valid() {
        assert_eq!(sanitize_prefix("taskweave"), "taskweave_");
        assert_eq!(sanitize_prefix("my-app.v2"), "my_app_v2_");
        assert_eq!(sanitize_prefix("9lives"), "_9lives_");
        assert_eq!(sanitize_prefix("ns:"), "ns:_");
        assert_eq!(sanitize_prefix("x_"), "x_");
        assert_eq!(sanitize_prefix(""), "");
        assert_eq!(sanitize_prefix("é"), "_");
    }

    #[test]
    fn seconds_are_exact_decimals() {
        let s = |us| {
            let mut o = String::new();
            seconds(&mut o, us);
            o
        };
        assert_eq!(s(0), "0");
        assert_eq!(s(25), "0.000025");
        assert_eq!(s(1_500_000), "1.5");
        assert_eq!(s(10_000_000_000), "10000");
        assert_eq!(s(u64::MAX), "18446744073709.551615");
    }

    #[test]
    fn exported_bounds_are_round() {
        let got: Vec<u64> = BOUNDS_US.iter().copied().filter(|&b| exported(b)).collect();
        assert_eq!(got.len(), 28);
        assert_eq!(&got[..4], &[10, 25, 50, 100]);
        assert_eq!(got.last(), Some(&MAX_EXPORTED_US));
    }
}
