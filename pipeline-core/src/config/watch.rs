//! `promote.watch`: what a promote watches on CloudWatch while traffic
//! moves and after, and when it gives up and rolls back by itself.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use super::check::{self, Checked};
use super::duration::{DurationText, duration};

/// `promote.watch` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "`promote.watch` (a mapping with alarms, analysis and for)"
)]
#[schemars(rename = "WatchConfig")]
pub(super) struct RawWatch {
    /// The team's own CloudWatch alarms: any of them in ALARM fails the release.
    #[serde(default)]
    alarms: Vec<String>,
    /// The target slot's balancer metrics against the other slot's.
    #[serde(default)]
    analysis: Option<RawAnalysis>,
    /// After the last step (or a one-shot flip), how long to keep watching
    /// before promote reports success.
    #[serde(default, rename = "for", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    window: Duration,
    /// How often a check runs while a step holds and during the window.
    #[serde(default = "default_interval", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    interval: Duration,
    /// How far back each check's metrics reach (CloudWatch's ELB metrics
    /// come a minute at a time).
    #[serde(default = "default_period", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    period: Duration,
}

/// `promote.watch.analysis` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "`promote.watch.analysis`")]
#[schemars(rename = "AnalysisConfig")]
struct RawAnalysis {
    /// The most the target's 5xx share of requests may be (`1%`).
    #[serde(default, deserialize_with = "percent")]
    #[schemars(with = "Option<String>")]
    max_5xx_ratio: Option<f64>,
    /// The most the target's 5xx share may exceed the other slot's, in
    /// percentage points (`0.5%`).
    #[serde(default, deserialize_with = "percent")]
    #[schemars(with = "Option<String>")]
    max_5xx_increase: Option<f64>,
    /// The most the target's mean latency may exceed the other slot's,
    /// relative (`50%`).
    #[serde(default, deserialize_with = "percent")]
    #[schemars(with = "Option<String>")]
    max_latency_increase: Option<f64>,
    /// Below this many requests on the target in a check's period, the
    /// check says "not enough traffic".
    #[serde(default = "default_min_requests")]
    min_requests: u64,
    /// What "not enough traffic" does: `wait` (the check is not counted, the
    /// next one decides; at the end of the window it fails) or `pass`.
    #[serde(default)]
    too_little_traffic: TooLittleTraffic,
}

/// What a check with too few requests does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TooLittleTraffic {
    /// Counts for nothing; if no check of the window had enough traffic,
    /// the release fails.
    #[default]
    Wait,
    /// Counts as a pass.
    Pass,
}

/// A share, kept in parts per million so configs compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fraction(u32);

impl Fraction {
    /// From a fraction (0.01 = 1 %), rounded to a millionth.
    pub fn new(fraction: f64) -> Fraction {
        Fraction((fraction * 1e6).round().clamp(0.0, f64::from(u32::MAX)) as u32)
    }

    /// As a fraction.
    pub fn get(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

impl std::fmt::Display for Fraction {
    /// As a percentage: `0.5%`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.get() * 100.0)
    }
}

/// The watch, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Alarms that fail the release when in ALARM.
    pub alarms: Vec<String>,
    /// The comparison of the two slots, if configured.
    pub analysis: Option<Analysis>,
    /// How long to keep watching after the last step.
    pub window: Duration,
    /// How often a check runs.
    pub interval: Duration,
    /// How far back each check's metrics reach.
    pub period: Duration,
}

/// The limits of the comparison of the target slot with the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// The target's 5xx ratio may be at most this.
    pub max_5xx_ratio: Option<Fraction>,
    /// The target's 5xx ratio may exceed the other's by at most this
    /// (a share of requests: percentage points).
    pub max_5xx_increase: Option<Fraction>,
    /// The target's mean latency may exceed the other's by at most this
    /// (a share of the other's: 50 % = half as long again).
    pub max_latency_increase: Option<Fraction>,
    /// Fewer requests than this on the target: not enough traffic.
    pub min_requests: u64,
    /// What not enough traffic does.
    pub too_little_traffic: TooLittleTraffic,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_period() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_min_requests() -> u64 {
    100
}

/// A percentage written `1%`, `0.5%`, or a fraction (`0.01`).
fn percent<'de, D: Deserializer<'de>>(de: D) -> Result<Option<f64>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a percentage such as 1% or 0.5%")
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse_percent(text).map(Some).map_err(E::custom)
        }
    }
    de.deserialize_any(Text)
}

/// Parses `1%`, `0.5%` into a fraction.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let bad = || format!("{text:?} is not a percentage; write it like 1% or 0.5%");
    let number = text.trim().strip_suffix('%').ok_or_else(bad)?;
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Ok(value / 100.0)
}

impl RawWatch {
    pub(super) fn check(self) -> Checked<WatchConfig> {
        for alarm in &self.alarms {
            check::alarm_name("promote.watch.alarms", alarm)?;
        }
        check::positive("promote.watch.interval", self.interval)?;
        check::positive("promote.watch.period", self.period)?;
        if self.alarms.is_empty() && self.analysis.is_none() {
            return Err(
                "promote.watch: give alarms, analysis or both (what would it watch?)".into(),
            );
        }
        let analysis = match self.analysis {
            None => None,
            Some(a) => {
                if a.max_5xx_ratio.is_none()
                    && a.max_5xx_increase.is_none()
                    && a.max_latency_increase.is_none()
                {
                    return Err("promote.watch.analysis: give at least one of max_5xx_ratio, max_5xx_increase, max_latency_increase".into());
                }
                for (key, value) in [
                    ("max_5xx_ratio", a.max_5xx_ratio),
                    ("max_5xx_increase", a.max_5xx_increase),
                ] {
                    if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                        return Err(format!(
                            "promote.watch.analysis.{key}: must be between 0% and 100%"
                        ));
                    }
                }
                Some(Analysis {
                    max_5xx_ratio: a.max_5xx_ratio.map(Fraction::new),
                    max_5xx_increase: a.max_5xx_increase.map(Fraction::new),
                    max_latency_increase: a.max_latency_increase.map(Fraction::new),
                    min_requests: a.min_requests,
                    too_little_traffic: a.too_little_traffic,
                })
            }
        };
        Ok(WatchConfig {
            alarms: self.alarms,
            analysis,
            window: self.window,
            interval: self.interval,
            period: self.period,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_read_as_fractions() {
        assert_eq!(parse_percent("1%"), Ok(0.01));
        assert_eq!(parse_percent("0.5%"), Ok(0.005));
        assert_eq!(parse_percent(" 50 %"), Ok(0.5));
        assert!(parse_percent("1").unwrap_err().contains("like 1%"));
        assert!(parse_percent("-1%").is_err());
    }
}
