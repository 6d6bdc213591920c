//! CloudWatch: the team's alarms and the slots' balancer metrics
//! ([`Metrics`]), for the watch of a promote.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, StateValue};

use super::sdk_error;
use crate::error::Result;
use crate::ports::{MetricSource, Metrics, Sample};

/// CloudWatch in the home region.
#[derive(Debug, Clone)]
pub struct CloudWatch {
    client: Client,
}

impl CloudWatch {
    /// CloudWatch reached with `sdk` in `region`.
    pub fn new(sdk: &aws_config::SdkConfig, region: &str) -> Self {
        let config = aws_sdk_cloudwatch::config::Builder::from(sdk)
            .region(aws_sdk_cloudwatch::config::Region::new(region.to_string()))
            .build();
        CloudWatch {
            client: Client::from_conf(config),
        }
    }
}

/// The three queries of one slot: `s{slot}_requests`, `_errors`, `_latency`.
fn queries(slot: usize, source: &MetricSource, period: i32) -> Vec<MetricDataQuery> {
    let dimensions: Vec<Dimension> = source
        .dimensions
        .iter()
        .map(|(name, value)| Dimension::builder().name(name).value(value).build())
        .collect();
    [
        ("requests", &source.requests, "Sum"),
        ("errors", &source.errors_5xx, "Sum"),
        ("latency", &source.latency, "Average"),
    ]
    .into_iter()
    .map(|(what, name, stat)| {
        MetricDataQuery::builder()
            .id(format!("s{slot}_{what}"))
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        Metric::builder()
                            .namespace(&source.namespace)
                            .metric_name(name)
                            .set_dimensions(Some(dimensions.clone()))
                            .build(),
                    )
                    .period(period)
                    .stat(stat)
                    .build(),
            )
            .return_data(true)
            .build()
    })
    .collect()
}

#[async_trait]
impl Metrics for CloudWatch {
    async fn firing(&self, alarms: &[String]) -> Result<Vec<String>> {
        let out = self
            .client
            .describe_alarms()
            .set_alarm_names(Some(alarms.to_vec()))
            .send()
            .await
            .map_err(sdk_error("DescribeAlarms", alarms.join(", ")))?;
        Ok(out
            .metric_alarms()
            .iter()
            .filter(|a| a.state_value() == Some(&StateValue::Alarm))
            .filter_map(|a| a.alarm_name().map(str::to_string))
            .collect())
    }

    async fn samples(&self, sources: [MetricSource; 2], period: Duration) -> Result<[Sample; 2]> {
        let now = SystemTime::now();
        let secs = i32::try_from(period.as_secs().max(1)).unwrap_or(i32::MAX);
        let start = now - period;
        let mut request = self
            .client
            .get_metric_data()
            .start_time(DateTime::from(start))
            .end_time(DateTime::from(now));
        for (slot, source) in sources.iter().enumerate() {
            for query in queries(slot, source, secs) {
                request = request.metric_data_queries(query);
            }
        }
        let out = request
            .send()
            .await
            .map_err(sdk_error("GetMetricData", "the slots' balancer metrics"))?;
        let mut samples = [Sample::default(); 2];
        for result in out.metric_data_results() {
            let id = result.id().unwrap_or_default();
            let Some((slot, what)) = id
                .strip_prefix('s')
                .and_then(|rest| rest.split_once('_'))
                .and_then(|(slot, what)| Some((slot.parse::<usize>().ok()?, what)))
            else {
                continue;
            };
            let Some(sample) = samples.get_mut(slot) else {
                continue;
            };
            let values = result.values();
            match what {
                "requests" => sample.requests = values.iter().sum(),
                "errors" => sample.errors_5xx = values.iter().sum(),
                "latency" if !values.is_empty() => {
                    sample.latency_secs = Some(values.iter().sum::<f64>() / values.len() as f64)
                }
                _ => {}
            }
        }
        Ok(samples)
    }
}
