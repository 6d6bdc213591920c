//! The watch of a promote: while a step of a gradual shift holds, and for
//! `promote.watch.for` after the last one, each check reads the team's
//! alarms (one DescribeAlarms) and both slots' balancer metrics over the
//! last `period` (one GetMetricData), and judges the target slot against
//! the other: its 5xx ratio, absolute and as an increase over the other's,
//! and its mean latency as an increase over the other's. A failed check
//! ends the watch with the reason; the shift then puts all traffic
//! back.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use crate::config::{Analysis, TooLittleTraffic, WatchConfig};
use crate::error::{Error, Result};
use crate::ports::{MetricSource, Metrics, Sample};
use crate::wait::{self, Interrupt, PROGRESS};

/// One slot's figures in a check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotFigures {
    /// The slot.
    pub slot: String,
    /// Requests served over the period.
    pub requests: u64,
    /// Of those, 5xx responses.
    pub errors_5xx: u64,
    /// Their share (`None`: no requests).
    pub ratio_5xx: Option<f64>,
    /// Mean time to answer, in milliseconds (`None`: no datapoint).
    pub latency_ms: Option<f64>,
}

impl SlotFigures {
    fn new(slot: &str, sample: &Sample) -> SlotFigures {
        SlotFigures {
            slot: slot.to_string(),
            requests: sample.requests.round() as u64,
            errors_5xx: sample.errors_5xx.round() as u64,
            ratio_5xx: (sample.requests > 0.0).then(|| sample.errors_5xx / sample.requests),
            latency_ms: sample.latency_secs.map(|s| s * 1000.0),
        }
    }
}

impl fmt::Display for SlotFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ratio = self
            .ratio_5xx
            .map_or("-".to_string(), |r| format!("{:.2}%", r * 100.0));
        let latency = self
            .latency_ms
            .map_or("-".to_string(), |ms| format!("{ms:.0} ms"));
        write!(
            f,
            "{} 5xx {ratio} of {} requests, {latency}",
            self.slot, self.requests
        )
    }
}

/// Both slots in one check: the target (taking traffic) and the other.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The slot traffic moves to.
    pub target: SlotFigures,
    /// The slot it moves from.
    pub other: SlotFigures,
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.target, self.other)
    }
}

/// What one comparison says.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Within every limit.
    Healthy,
    /// Fewer requests on the target than `min_requests`: nothing to judge.
    NotEnoughTraffic,
    /// Over a limit: which, with both values.
    Failed(String),
}

/// Judges the target's sample against the other's. A limit holds at its
/// edge (only more than the limit fails); a comparison with the other slot
/// needs the other slot to have requests (and a latency datapoint), else it
/// is skipped.
pub fn judge(analysis: &Analysis, comparison: &Comparison) -> Judgement {
    let (t, o) = (&comparison.target, &comparison.other);
    if t.requests < analysis.min_requests {
        return Judgement::NotEnoughTraffic;
    }
    let ratio = t.ratio_5xx.unwrap_or(0.0);
    let pct = |r: f64| format!("{:.2}%", r * 100.0);
    if let Some(max) = analysis.max_5xx_ratio
        && ratio > max.get()
    {
        return Judgement::Failed(format!(
            "the 5xx ratio on {} is {} ({} of {}), above max_5xx_ratio {max}; {} has {}",
            t.slot,
            pct(ratio),
            t.errors_5xx,
            t.requests,
            o.slot,
            o.ratio_5xx.map_or("no requests".to_string(), pct)
        ));
    }
    if let (Some(max), Some(other)) = (analysis.max_5xx_increase, o.ratio_5xx)
        && ratio - other > max.get()
    {
        return Judgement::Failed(format!(
            "the 5xx ratio on {} is {}, {} has {}: more than max_5xx_increase {max} above it",
            t.slot,
            pct(ratio),
            o.slot,
            pct(other)
        ));
    }
    if let (Some(max), Some(target), Some(other)) =
        (analysis.max_latency_increase, t.latency_ms, o.latency_ms)
        && other > 0.0
        && (target - other) / other > max.get()
    {
        return Judgement::Failed(format!(
            "the latency on {} is {target:.0} ms, {} has {other:.0} ms: more than max_latency_increase {max} above it",
            t.slot, o.slot
        ));
    }
    Judgement::Healthy
}

/// A watch in progress: what to read, and what the checks so far saw.
pub struct Watcher<'a> {
    config: &'a WatchConfig,
    metrics: &'a dyn Metrics,
    /// Target first, then the other slot.
    sources: [MetricSource; 2],
    names: [String; 2],
    /// The newest comparison, for the output.
    pub last: Option<Comparison>,
    /// How many checks ran.
    pub checks: usize,
    /// How many of them had too little traffic on the target to judge.
    pub thin: usize,
}

impl<'a> Watcher<'a> {
    /// A watch of `names[0]` (the target) against `names[1]`, whose
    /// balancers' metrics are at `sources`.
    pub fn new(
        config: &'a WatchConfig,
        metrics: &'a dyn Metrics,
        sources: [MetricSource; 2],
        names: [String; 2],
    ) -> Self {
        Watcher {
            config,
            metrics,
            sources,
            names,
            last: None,
            checks: 0,
            thin: 0,
        }
    }

    /// The watch's verdict in words, once it passed: how many checks, how
    /// many had too little traffic and what that counted as, and the last
    /// comparison. The ledger keeps it; the dashboard shows it.
    pub fn verdict(&self) -> String {
        let mut text = format!("healthy after {} check(s)", self.checks);
        if let (Some(analysis), 1..) = (&self.config.analysis, self.thin) {
            text.push_str(&format!(
                ", {} with too little traffic to judge ({})",
                self.thin,
                match analysis.too_little_traffic {
                    TooLittleTraffic::Pass => "counted as passes: too_little_traffic: pass",
                    TooLittleTraffic::Wait => "waited for more: too_little_traffic: wait",
                }
            ));
        }
        match &self.last {
            Some(last) => text.push_str(&format!("; last: {last}")),
            None => text.push_str("; alarms quiet"),
        }
        text
    }

    /// One check: the alarms, then the comparison. `Ok(false)`: not enough
    /// traffic to judge; `Err(Error::WatchFailed)`: a limit or an alarm.
    pub async fn check(&mut self) -> Result<bool> {
        self.checks += 1;
        if !self.config.alarms.is_empty() {
            let firing = self.metrics.firing(&self.config.alarms).await?;
            if !firing.is_empty() {
                return Err(Error::WatchFailed {
                    reason: format!("alarm {} is in ALARM", firing.join(", ")),
                });
            }
        }
        let Some(analysis) = &self.config.analysis else {
            return Ok(true);
        };
        let samples = self
            .metrics
            .samples(self.sources.clone(), self.config.period)
            .await?;
        let comparison = Comparison {
            target: SlotFigures::new(&self.names[0], &samples[0]),
            other: SlotFigures::new(&self.names[1], &samples[1]),
        };
        tracing::info!(target: PROGRESS, "watching: {comparison}");
        let judged = judge(analysis, &comparison);
        self.last = Some(comparison.clone());
        match judged {
            Judgement::Healthy => Ok(true),
            Judgement::NotEnoughTraffic => {
                self.thin += 1;
                tracing::info!(
                    "not enough traffic on {} to judge ({} requests, min_requests {}): {}",
                    self.names[0],
                    comparison.target.requests,
                    analysis.min_requests,
                    match analysis.too_little_traffic {
                        TooLittleTraffic::Pass => "counted as a pass (too_little_traffic: pass)",
                        TooLittleTraffic::Wait => "waiting for more (too_little_traffic: wait)",
                    }
                );
                Ok(analysis.too_little_traffic == TooLittleTraffic::Pass)
            }
            Judgement::Failed(reason) => Err(Error::WatchFailed {
                reason: format!("{reason} ({comparison})"),
            }),
        }
    }

    /// Checks every `interval` for `span`, then once more at its end. With
    /// `too_little_traffic: wait`, a span in which no check had enough
    /// traffic is held as long again; if still none had, the watch fails.
    pub async fn hold(&mut self, span: Duration, interrupt: &Interrupt) -> Result<()> {
        let mut judged = false;
        for round in 0..2 {
            let started = Instant::now();
            loop {
                judged |= self.check().await?;
                let left = span.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break;
                }
                wait::pause(self.config.interval.min(left), interrupt).await?;
            }
            if judged {
                return Ok(());
            }
            if round == 0 {
                tracing::info!(
                    "no check had enough traffic on {}; watching {}s longer",
                    self.names[0],
                    span.as_secs()
                );
            }
        }
        Err(Error::WatchFailed {
            reason: format!(
                "not enough traffic on {} to judge the release in twice {}s (too_little_traffic: wait)",
                self.names[0],
                span.as_secs()
            ),
        })
    }
}

#[cfg(test)]
mod tests;
