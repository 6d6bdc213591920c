use super::*;
use crate::config::Fraction;
use crate::ports::MockMetrics;

fn analysis() -> Analysis {
    Analysis {
        max_5xx_ratio: Some(Fraction::new(0.01)),
        max_5xx_increase: Some(Fraction::new(0.005)),
        max_latency_increase: Some(Fraction::new(0.5)),
        min_requests: 100,
        too_little_traffic: TooLittleTraffic::Wait,
    }
}

fn sample(requests: f64, errors: f64, latency_ms: Option<f64>) -> Sample {
    Sample {
        requests,
        errors_5xx: errors,
        latency_secs: latency_ms.map(|ms| ms / 1000.0),
    }
}

fn compare(target: Sample, other: Sample) -> Judgement {
    judge(
        &analysis(),
        &Comparison {
            target: SlotFigures::new("prod2", &target),
            other: SlotFigures::new("prod1", &other),
        },
    )
}

#[test]
fn ratios_are_judged_against_their_limits_which_hold_at_the_edge() {
    let base = sample(1000.0, 2.0, Some(80.0));
    assert_eq!(
        compare(sample(1000.0, 5.0, Some(80.0)), base),
        Judgement::Healthy
    );
    // Exactly 1%: the limit holds.
    let at_limit = sample(1000.0, 10.0, Some(80.0));
    assert_eq!(
        compare(at_limit, sample(1000.0, 9.0, Some(80.0))),
        Judgement::Healthy
    );
    // Above 1%.
    let Judgement::Failed(reason) = compare(sample(1000.0, 31.0, Some(80.0)), base) else {
        panic!("3.1% passed");
    };
    assert!(
        reason.contains("the 5xx ratio on prod2 is 3.10% (31 of 1000), above max_5xx_ratio 1%"),
        "{reason}"
    );
    assert!(reason.contains("prod1 has 0.20%"), "{reason}");
    // Within 1% but 0.6 points above the other slot.
    let Judgement::Failed(reason) = compare(
        sample(1000.0, 8.0, Some(80.0)),
        sample(1000.0, 2.0, Some(80.0)),
    ) else {
        panic!("an increase of 0.6 points passed");
    };
    assert!(reason.contains("max_5xx_increase 0.5%"), "{reason}");
    // 0.5 points above exactly: holds.
    assert_eq!(
        compare(
            sample(1000.0, 7.0, Some(80.0)),
            sample(1000.0, 2.0, Some(80.0))
        ),
        Judgement::Healthy
    );
}

#[test]
fn latency_is_judged_relative_to_the_other_slot() {
    let other = sample(1000.0, 0.0, Some(100.0));
    assert_eq!(
        compare(sample(1000.0, 0.0, Some(150.0)), other),
        Judgement::Healthy
    );
    let Judgement::Failed(reason) = compare(sample(1000.0, 0.0, Some(151.0)), other) else {
        panic!("51% slower passed");
    };
    assert!(
        reason.contains("the latency on prod2 is 151 ms, prod1 has 100 ms"),
        "{reason}"
    );
}

#[test]
fn zero_requests_and_missing_datapoints_are_not_judged_as_failures() {
    // Too little traffic on the target.
    assert_eq!(
        compare(sample(99.0, 99.0, None), sample(1000.0, 0.0, Some(1.0))),
        Judgement::NotEnoughTraffic
    );
    assert_eq!(
        compare(sample(0.0, 0.0, None), sample(0.0, 0.0, None)),
        Judgement::NotEnoughTraffic
    );
    // The other slot has no requests (it took none in the period) and no
    // latency: only the absolute limit applies.
    assert_eq!(
        compare(sample(1000.0, 10.0, None), sample(0.0, 0.0, None)),
        Judgement::Healthy
    );
    let figures = SlotFigures::new("prod1", &sample(0.0, 0.0, None));
    assert_eq!(figures.ratio_5xx, None);
    assert_eq!(figures.to_string(), "prod1 5xx - of 0 requests, -");
}

fn config(analysis: Option<Analysis>, alarms: &[&str]) -> WatchConfig {
    WatchConfig {
        alarms: alarms.iter().map(|a| a.to_string()).collect(),
        analysis,
        window: Duration::from_secs(60),
        interval: Duration::from_secs(10),
        period: Duration::from_secs(60),
    }
}

fn source() -> MetricSource {
    MetricSource {
        namespace: "AWS/ApplicationELB".into(),
        dimensions: vec![],
        requests: "RequestCount".into(),
        errors_5xx: "HTTPCode_Target_5XX_Count".into(),
        latency: "TargetResponseTime".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn an_alarm_fails_the_watch_with_its_name() {
    let mut metrics = MockMetrics::new();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    metrics.expect_firing().returning(move |_| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(if n < 2 {
            vec![]
        } else {
            vec!["shop-5xx".into()]
        })
    });
    let config = config(None, &["shop-5xx"]);
    let mut watcher = Watcher::new(
        &config,
        &metrics,
        [source(), source()],
        ["prod2".into(), "prod1".into()],
    );
    let err = watcher
        .hold(Duration::from_secs(60), &Interrupt::never())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the watch failed: alarm shop-5xx is in ALARM; nothing to roll back to, the traffic stays"
    );
    assert_eq!(watcher.checks, 3);
}

#[tokio::test(start_paused = true)]
async fn too_little_traffic_waits_a_second_span_then_fails_or_passes_as_configured() {
    let mut metrics = MockMetrics::new();
    metrics
        .expect_samples()
        .returning(|_, _| Ok([sample(5.0, 0.0, None), sample(500.0, 0.0, None)]));
    let config = config(Some(analysis()), &[]);
    let mut watcher = Watcher::new(
        &config,
        &metrics,
        [source(), source()],
        ["prod2".into(), "prod1".into()],
    );
    let started = tokio::time::Instant::now();
    let err = watcher
        .hold(Duration::from_secs(30), &Interrupt::never())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not enough traffic on prod2"),
        "{err}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    assert_eq!(watcher.checks, 8, "4 checks a span of 30s at 10s, twice");

    let mut pass = analysis();
    pass.too_little_traffic = TooLittleTraffic::Pass;
    let config = WatchConfig {
        analysis: Some(pass),
        ..config
    };
    let mut watcher = Watcher::new(
        &config,
        &metrics,
        [source(), source()],
        ["prod2".into(), "prod1".into()],
    );
    watcher
        .hold(Duration::from_secs(30), &Interrupt::never())
        .await
        .unwrap();
}
