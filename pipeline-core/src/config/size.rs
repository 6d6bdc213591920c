//! Sizes as written in `pipeline.yaml`: `2GiB`, `500MiB`, `64KiB`, or a
//! bare number of bytes.

use schemars::JsonSchema;
use serde::Deserializer;

/// Deserializes a size written as text (`500MiB`) or a number of bytes.
pub(super) fn size<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size such as 500MiB or 2GiB")
        }

        fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<u64, E> {
            Ok(bytes)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            parse_size(text).map_err(E::custom)
        }
    }
    de.deserialize_any(Text)
}

/// The schema of a size.
pub(super) struct SizeText;

impl JsonSchema for SizeText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: 500MiB, 2GiB, 64KiB, or a number of bytes",
            "type": "string",
            "pattern": "^[0-9]+(B|KiB|MiB|GiB)?$"
        })
    }
}

const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// Parses a size such as `500MiB`, `2GiB` or `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size; write it like 500MiB or 2GiB");
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let number: u64 = trimmed[..digits].parse().map_err(|_| bad())?;
    let unit = trimmed[digits..].trim();
    let scale = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(bad)?
    };
    number.checked_mul(scale).ok_or_else(bad)
}

/// A size for people: `1.5 MiB`, `312 B`.
pub fn format_size(bytes: u64) -> String {
    for (name, scale) in UNITS {
        if scale > 1 && bytes >= scale {
            return format!("{:.1} {name}", bytes as f64 / scale as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_print() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 3 KiB "), Ok(3072));
        assert!(parse_size("2GB").unwrap_err().contains("500MiB"));
        assert!(parse_size("MiB").is_err());
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(312), "312 B");
    }
}
