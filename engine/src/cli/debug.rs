//! Values of `plue debug`'s arguments: what clap parses before the command runs.

/// Why `--idle` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadIdle {
    #[error("'{0}' is not a duration: use 90s, 10m or 1h")]
    NotADuration(String),
    #[error("{0} is out of bounds: from 5s to 4h")]
    OutOfBounds(String),
}

/// `90s`, `10m`, `1h` or plain seconds, 5 s to 4 h: the idle timeout in seconds.
pub(crate) fn parse_idle(text: &str) -> Result<u64, BadIdle> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let not_a_duration = || BadIdle::NotADuration(text.to_owned());
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(not_a_duration()),
    };
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(not_a_duration)?;
    if !(5..=4 * 3600).contains(&secs) {
        return Err(BadIdle::OutOfBounds(text.to_owned()));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeouts_read_as_durations_within_bounds() {
        assert_eq!(parse_idle("10m"), Ok(600));
        assert_eq!(parse_idle("90s"), Ok(90));
        assert_eq!(parse_idle("1h"), Ok(3600));
        assert_eq!(parse_idle("30"), Ok(30));
        assert_eq!(parse_idle("2s"), Err(BadIdle::OutOfBounds("2s".into())));
        assert!(parse_idle("5h")
            .unwrap_err()
            .to_string()
            .contains("out of bounds"));
        assert_eq!(
            parse_idle("ten").unwrap_err().to_string(),
            "'ten' is not a duration: use 90s, 10m or 1h"
        );
        assert!(matches!(parse_idle("10d"), Err(BadIdle::NotADuration(_))));
    }
}
