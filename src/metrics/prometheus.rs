//! Writing the Prometheus text exposition format (version 0.0.4).
//!
//! Only what [`ServerMetrics`](super::ServerMetrics) needs: `# HELP` / `# TYPE`
//! headers, plain samples with optional labels, and histograms. Numbers of
//! seconds are printed from integer microseconds, so bucket bounds are exact
//! decimals (`0.000025`, not `2.4999999e-05`).

use std::fmt::Write as _;

use super::histogram::{HistogramSnapshot, BOUNDS_US};

/// Which of a histogram's bounds a family exports as `le` buckets: 1, 2.5 and
/// 5 times each power of ten from `lo_us` to `hi_us` (both of that form).
/// Values outside still count, in the first exported bucket or in `+Inf`,
/// `_sum` and `_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Buckets {
    lo_us: u64,
    hi_us: u64,
}

/// Request latencies: 100 µs to 10 s, 16 buckets.
pub(super) const LATENCY: Buckets = Buckets {
    lo_us: 100,
    hi_us: 10_000_000,
};

/// Things that last (connections, streams): 1 ms to 10 000 s (2 h 47 min),
/// 22 buckets.
pub(super) const LONG: Buckets = Buckets {
    lo_us: 1_000,
    hi_us: 10_000_000_000,
};

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

/// `# HELP` and `# TYPE` lines for one metric family. In `help`, `\` and line
/// breaks are escaped as the format asks (`\\`, `\n`).
pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} ");
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}

/// A whole family with one unlabelled sample.
pub(super) fn single(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A whole family with one sample per `(label value, value)`, labelled
/// `label`.
pub(super) fn labelled<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) {
    header(out, name, kind, help);
    for (value_of_label, v) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{value_of_label}\"}} {v}");
    }
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

/// Whether a bucket bound is one of those `buckets` exports: 1, 2.5 or 5 times
/// a power of ten, within its range.
fn exported(bound_us: u64, buckets: Buckets) -> bool {
    if !(buckets.lo_us.max(10)..=buckets.hi_us).contains(&bound_us) {
        return false;
    }
    let mut m = bound_us;
    while m >= 100 && m % 10 == 0 {
        m /= 10;
    }
    matches!(m, 10 | 25 | 50)
}

/// A histogram family in seconds: cumulative `_bucket{le=...}` lines for the
/// bounds `buckets` exports, `_sum` and `_count` (which always equals the
/// `+Inf` bucket).
pub(super) fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
    buckets: Buckets,
) {
    header(out, name, "histogram", help);
    let mut cumulative = 0u64;
    for (&count, &bound) in h.counts().iter().zip(BOUNDS_US.iter()) {
        cumulative = cumulative.saturating_add(count);
        if exported(bound, buckets) {
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

    fn bounds(b: Buckets) -> Vec<u64> {
        BOUNDS_US
            .iter()
            .copied()
            .filter(|&x| exported(x, b))
            .collect()
    }

    #[test]
    fn exported_bounds_are_round() {
        let latency = bounds(LATENCY);
        assert_eq!(latency.len(), 16);
        assert_eq!(&latency[..4], &[100, 250, 500, 1_000]);
        assert_eq!(latency.last(), Some(&10_000_000));
        let long = bounds(LONG);
        assert_eq!(long.len(), 22);
        assert_eq!(&long[..4], &[1_000, 2_500, 5_000, 10_000]);
        assert_eq!(long.last(), Some(&10_000_000_000));
        let all = Buckets {
            lo_us: 10,
            hi_us: 10_000_000_000,
        };
        assert_eq!(bounds(all).len(), 28);
    }

    #[test]
    fn help_is_escaped() {
        let mut out = String::new();
        header(&mut out, "x", "counter", "a\\b\nc\rd");
        assert_eq!(out, "# HELP x a\\\\b\\nc d\n# TYPE x counter\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_cut_to_their_range() {
        let h = super::super::Histogram::new();
        for us in [50, 100, 101, 2_000_000, 20_000_000] {
            h.observe_us(us);
        }
        let mut out = String::new();
        histogram(&mut out, "t", "T.", &h.snapshot(), LATENCY);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[2], "t_bucket{le=\"0.0001\"} 2");
        assert_eq!(lines[3], "t_bucket{le=\"0.00025\"} 3");
        assert!(out.contains("t_bucket{le=\"2.5\"} 4\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"10\"} 4\nt_bucket{le=\"+Inf\"} 5\n"));
        assert!(out.ends_with("t_sum 22.000251\nt_count 5\n"), "{out}");
        assert_eq!(lines.len(), 2 + 16 + 1 + 2);
    }
}

/// A strict reader of the exposition format, for the tests of everything that
/// writes it.
#[cfg(test)]
pub(super) mod checker {
    use std::collections::HashMap;

    /// A strict reader of the text format: names, labels, values, one TYPE per
    /// family before its samples, histogram invariants. Returns samples by
    /// `name{labels}`.
    pub(in crate::metrics) fn parse_exposition(text: &str) -> Result<HashMap<String, f64>, String> {
        fn valid_name(n: &str) -> bool {
            let mut c = n.chars();
            matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
                && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
        }
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = HashMap::new();
        let mut family: Option<(String, String)> = None;
        let mut last_le = f64::NEG_INFINITY;
        let mut last_bucket = 0.0;
        let mut inf_count = None;
        if !text.ends_with('\n') {
            return Err("no final newline".into());
        }
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !valid_name(name) {
                    return Err(format!("bad HELP name {line}"));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut p = rest.split(' ');
                let (name, kind) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
                if !valid_name(name) || !["counter", "gauge", "histogram"].contains(&kind) {
                    return Err(format!("bad TYPE {line}"));
                }
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return Err(format!("duplicate family {name}"));
                }
                family = Some((name.to_string(), kind.to_string()));
                last_le = f64::NEG_INFINITY;
                last_bucket = 0.0;
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                return Err(format!("stray line {line:?}"));
            }
            let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().map_err(|_| format!("bad value {line}"))?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (
                    n,
                    Some(l.strip_suffix('}').ok_or(format!("bad labels {line}"))?),
                ),
                None => (series, None),
            };
            if !valid_name(name) {
                return Err(format!("bad name {line}"));
            }
            let (fam, kind) = family
                .as_ref()
                .ok_or(format!("sample before TYPE: {line}"))?;
            let ok = match kind.as_str() {
                "histogram" => [
                    format!("{fam}_bucket"),
                    format!("{fam}_sum"),
                    format!("{fam}_count"),
                ]
                .contains(&name.to_string()),
                _ => name == fam,
            };
            if !ok {
                return Err(format!("{name} outside its family {fam}"));
            }
            if let Some(l) = labels {
                for pair in l.split(',') {
                    let (k, v) = pair.split_once('=').ok_or(format!("bad label {line}"))?;
                    if !valid_name(k) || !v.starts_with('"') || !v.ends_with('"') || v.len() < 2 {
                        return Err(format!("bad label {line}"));
                    }
                }
            }
            if name.ends_with("_bucket") && kind == "histogram" {
                let le = labels
                    .and_then(|l| l.strip_prefix("le=\""))
                    .and_then(|l| l.strip_suffix('"'))
                    .ok_or(format!("bucket without le: {line}"))?;
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("bad le {line}"))?
                };
                if le <= last_le || value < last_bucket {
                    return Err(format!("buckets out of order at {line}"));
                }
                last_le = le;
                last_bucket = value;
                if le.is_infinite() {
                    inf_count = Some(value);
                }
            }
            if name.ends_with("_count") && kind == "histogram" && inf_count != Some(value) {
                return Err(format!("_count differs from +Inf bucket: {line}"));
            }
            if samples.insert(series.to_string(), value).is_some() {
                return Err(format!("duplicate series {series}"));
            }
        }
        Ok(samples)
    }

    #[test]
    fn checker_catches_broken_text() {
        assert!(parse_exposition("x 1\n").is_err()); // no TYPE
        assert!(parse_exposition("# TYPE x counter\nx{a=b} 1\n").is_err());
        assert!(parse_exposition(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"
        )
        .is_err());
        assert!(
            parse_exposition("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 2\n").is_err()
        );
    }
}
