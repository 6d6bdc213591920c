//! `max_surge` as written: a number of instances (`50`) or a percentage
//! of the environment's `count` (`"25%"`).

use schemars::JsonSchema;
use serde::Deserializer;

use super::check::Checked;

/// How many new instances a deploy may run beside the old fleet at once,
/// as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RawSurge {
    /// A number of instances.
    Instances(u64),
    /// A percentage of `count`, rounded up.
    Percent(u64),
}

impl RawSurge {
    /// The number of instances for an environment of `count`, checked:
    /// at least 1, a percentage in 1..=100 (rounded up, so at least 1).
    pub(super) fn resolve(self, key: &str, count: u32) -> Checked<u32> {
        match self {
            RawSurge::Instances(0) => Err(format!(
                "{key}: must be at least 1 (an instance at a time), or leave it out to bring the whole new fleet up at once"
            )),
            RawSurge::Instances(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
            RawSurge::Percent(p) if !(1..=100).contains(&p) => Err(format!(
                "{key}: {p}% is not a share of count; give a percentage from 1% to 100%, or a number of instances"
            )),
            RawSurge::Percent(p) => Ok((u64::from(count) * p).div_ceil(100).max(1) as u32),
        }
    }
}

/// Parses `50` or `25%`.
pub(super) fn parse_surge(text: &str) -> Result<RawSurge, String> {
    let bad = || {
        format!(
            "{text:?} is not a max_surge; write a number of instances (50) or a percentage of count (\"25%\")"
        )
    };
    let text = text.trim();
    let (number, percent) = match text.strip_suffix('%') {
        Some(number) => (number.trim(), true),
        None => (text, false),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let value: u64 = number.parse().map_err(|_| bad())?;
    Ok(if percent {
        RawSurge::Percent(value)
    } else {
        RawSurge::Instances(value)
    })
}

/// Deserializes `max_surge`: a whole number, or text (`"25%"`, `"50"`).
/// Read as the scalar is read, so a bad one is reported at its own key,
/// line and column.
pub(super) fn max_surge<'de, D: Deserializer<'de>>(de: D) -> Result<Option<RawSurge>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = Option<RawSurge>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number of instances (50) or a percentage of count (\"25%\")")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(RawSurge::Instances(v)))
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!(
                    "{v} is not a max_surge; it must be at least 1"
                ))),
            }
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse_surge(text).map(Some).map_err(E::custom)
        }
    }
    de.deserialize_any(Text)
}

/// The schema of `max_surge`: a number of instances or a percentage.
pub(super) struct SurgeText;

impl JsonSchema for SurgeText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MaxSurge".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number of instances (50) or a percentage of count (\"25%\", rounded up)",
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^[0-9]+%?$" }
            ]
        })
    }
}
