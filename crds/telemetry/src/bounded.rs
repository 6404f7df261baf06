//! Bounded option values: clap value parsers that refuse a zero, negative or absurd duration,
//! size or count at start, with a message giving the allowed range (clap adds the option's
//! name). Both binaries use these for every numeric option, so a value that would start and
//! then break (a zero ping interval panics a timer; a zero message limit refuses every frame)
//! never starts.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A humantime duration (`250ms`, `15s`, `24h`) between `min` and `max`, both included.
///
/// ```
/// use std::time::Duration;
/// let parse = switchboard_telemetry::bounded::duration(Duration::from_secs(1), Duration::from_secs(60));
/// assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
/// assert_eq!(parse("0s").unwrap_err(), "must be between 1s and 1m (got 0s)");
/// ```
pub fn duration(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let value = humantime::parse_duration(text.trim())
            .map_err(|error| format!("{error}; write a duration such as 500ms, 15s or 1h"))?;
        if value < min || value > max {
            return Err(format!(
                "must be between {} and {} (got {text})",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(value)
    }
}

/// A number (count, size or rate) between `min` and `max`, both included. Not-a-number
/// floats are refused: they compare with nothing.
///
/// ```
/// let parse = switchboard_telemetry::bounded::number(1usize, 4096);
/// assert_eq!(parse("16"), Ok(16));
/// assert_eq!(parse("0").unwrap_err(), "must be between 1 and 4096 (got 0)");
/// assert!(parse("-1").unwrap_err().contains("between 1 and 4096"));
/// ```
pub fn number<T>(
    min: T,
    max: T,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |text: &str| {
        let range = || format!("must be between {min} and {max} (got {text})");
        let value: T = text.trim().parse().map_err(|_| range())?;
        if !(value >= min && value <= max) {
            return Err(range());
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_outside_the_range_are_refused_with_it() {
        let parse = duration(Duration::from_millis(100), Duration::from_secs(600));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        for bad in ["0s", "99ms", "601s", "100years"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("between 100ms and 10m"), "{bad}: {error}");
        }
        for bad in ["-1s", "soon", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_outside_the_range_are_refused_with_it() {
        let parse = number(0.5f64, 10.0);
        assert_eq!(parse("0.5"), Ok(0.5));
        for bad in ["0", "-3", "NaN", "inf", "11", "x"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("between 0.5 and 10"), "{bad}: {error}");
        }
        let parse = number(1u32, 100);
        for bad in ["0", "-1", "101", "99999999999999999999"] {
            assert!(
                parse(bad).unwrap_err().contains("between 1 and 100"),
                "{bad}"
            );
        }
    }
}
