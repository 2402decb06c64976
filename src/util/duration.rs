//! Human durations (`90s`, `10m`, `250ms`): one parser for the command line, the simulator's
//! directives and its rate-limit schedule.

use std::time::Duration;

/// Parses a human duration such as `90s`, `10m`, `250ms` (surrounding spaces ignored).
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}`: {e} (examples: 90s, 10m, 250ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_explains_errors() {
        assert_eq!(parse(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        let error = parse("soon").unwrap_err();
        assert!(
            error.contains("`soon`") && error.contains("examples"),
            "{error}"
        );
    }
}
