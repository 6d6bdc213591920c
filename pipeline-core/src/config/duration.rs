//! Durations as written in `pipeline.yaml`: `90s`, `30m`, `1h30m`, `500ms`,
//! or a bare number of seconds.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserializer;

/// Deserializes a duration written as text (`90s`) or a number of seconds.
/// The text is parsed as the scalar is read, so a bad one is reported at
/// its own key, line and column.
pub(super) fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as 90s, 30m, 1h30m or 500ms")
        }

        fn visit_u64<E: serde::de::Error>(self, secs: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(secs))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
    de.deserialize_any(Text)
}

/// The schema of a duration: `90s`, `30m`, `1h30m`, `500ms`, or seconds.
pub(super) struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Written as a string (a bare number of seconds is still read).
        schemars::json_schema!({
            "description": "A duration: 90s, 30m, 1h30m or 500ms",
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h))+$"
        })
    }
}

/// Parses a duration such as `90s`, `30m`, `1h30m` or `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; write it like 90s, 30m, 1h30m or 500ms");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let step = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += step;
        rest = &rest[unit..];
    }
    Ok(total)
}

/// A duration as a user writes it: `30m`, `1h30m`, `90s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if s > 0 {
        text.push_str(&format!("{s}s"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m5").is_err());
    }

    #[test]
    fn durations_print_as_written() {
        for text in ["30m", "1h30m", "90s", "250ms", "0s", "2h", "1h1m1s"] {
            let d = parse_duration(text).unwrap();
            let shown = format_duration(d);
            assert_eq!(parse_duration(&shown), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
