//! How the command line writes durations for people.

/// `850ms`, `4.2s`, `3m07s`, `2h05m`.
pub(crate) fn human_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_largest_unit_that_fits() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(4_200), "4.2s");
        assert_eq!(human_ms(187_000), "3m07s");
        assert_eq!(human_ms(3_600_000), "1h00m");
        assert_eq!(human_ms(7_500_000), "2h05m");
    }
}
