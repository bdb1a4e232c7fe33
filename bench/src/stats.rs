//! Small helpers every benchmark shares: percentiles over samples, medians of whole runs,
//! and the number formats the README tables use.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

/// The `p`-quantile (0.0..=1.0) of `samples`, nearest rank; sorts them in place.
pub(crate) fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

/// p50, p99 and the maximum of `samples`.
pub(crate) fn spread(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    let p50 = percentile(samples, 0.50);
    let p99 = percentile(samples, 0.99);
    (p50, p99, samples[samples.len() - 1])
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// For figures that come from store timestamps (1 ms resolution): no false decimals.
pub(crate) fn whole_ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// A signed difference in milliseconds (an overhead can come out negative).
pub(crate) fn ms_signed(seconds: f64) -> String {
    format!("{:.3} ms", seconds * 1000.0)
}

/// `12345678.9` → `"12,345,679"`.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds since the Unix epoch as a duration (store timestamps), never negative.
pub(crate) fn from_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The real interpreter behind `python3` (resolving the pyenv shim once).
pub(crate) fn real_python() -> Result<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The last lines of a command's stderr, for error messages.
pub(crate) fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
