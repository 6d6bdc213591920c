//! `promote.watch` and a deploy's `alarms` against moto: PutMetricData
//! plays the slots' balancer metrics and SetAlarmState the team's alarm;
//! the record is read back from Route53, the fleet from EC2 and the target
//! group, the verdict from the ledger and the webhook.

use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricDatum, StateValue, Statistic,
};
use pipeline_fixtures::Balancers;
use pipeline_fixtures::webhook::Receiver;

use crate::promote::{Slots, record, slots};
use crate::support::{Kind, SHA, SHA2, balancer_health, eventually};

/// The CloudWatch dimensions of a slot's target group: `TargetGroup` and
/// `LoadBalancer`, the ends of their ARNs.
async fn dimensions(s: &Slots, b: &Balancers) -> Vec<Dimension> {
    let groups = aws_sdk_elasticloadbalancingv2::Client::new(&s.env.sdk)
        .describe_target_groups()
        .target_group_arns(&b.target_group_arn)
        .send()
        .await
        .unwrap();
    let lb = groups.target_groups()[0].load_balancer_arns()[0].clone();
    vec![
        Dimension::builder()
            .name("TargetGroup")
            .value(b.target_group_arn.rsplit_once(':').unwrap().1)
            .build(),
        Dimension::builder()
            .name("LoadBalancer")
            .value(lb.split_once(":loadbalancer/").unwrap().1)
            .build(),
    ]
}

/// Puts a minute of traffic on a slot: `requests`, of which `errors` 5xx,
/// answered in `latency` seconds.
async fn traffic(s: &Slots, b: &Balancers, requests: f64, errors: f64, latency: f64) {
    let dims = dimensions(s, b).await;
    let now = DateTime::from(std::time::SystemTime::now());
    let datum = |name: &str, value: f64| {
        MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dims.clone()))
            .timestamp(now)
            .value(value)
            .build()
    };
    aws_sdk_cloudwatch::Client::new(&s.env.sdk)
        .put_metric_data()
        .namespace("AWS/ApplicationELB")
        .metric_data(datum("RequestCount", requests))
        .metric_data(datum("HTTPCode_Target_5XX_Count", errors))
        .metric_data(datum("TargetResponseTime", latency))
        .send()
        .await
        .unwrap();
}

/// prod1 live on SHA, prod2 deployed with SHA2, and `watch` (YAML under
/// `promote:`) configured.
async fn ready(watch: &str, hook: Option<&Receiver>) -> Slots {
    let s = slots("cname").await;
    let env = &s.env;
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    env.ok(&["promote", "--commit", SHA]).await;
    env.ok(&["deploy", "--env", "prod2", "--commit", SHA2])
        .await;
    let notify = hook.map_or(String::new(), |h| {
        format!("notify:\n  - url: {}\n", h.url("/hook"))
    });
    env.write_config(&format!("{}{watch}{notify}", s.config));
    s
}

/// Creates the team's alarm `shop-errors` (OK until set otherwise); a
/// CloudWatch client to set its state with.
async fn alarm(s: &Slots) -> aws_sdk_cloudwatch::Client {
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&s.env.sdk);
    cloudwatch
        .put_metric_alarm()
        .alarm_name("shop-errors")
        .namespace("AWS/ApplicationELB")
        .metric_name("HTTPCode_Target_5XX_Count")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(10.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    cloudwatch
}

/// Sets the team's alarm `shop-errors` to ALARM.
async fn fire(cloudwatch: &aws_sdk_cloudwatch::Client) {
    cloudwatch
        .set_alarm_state()
        .alarm_name("shop-errors")
        .state_value(StateValue::Alarm)
        .state_reason("5xx over 10")
        .send()
        .await
        .unwrap();
}

const ANALYSIS: &str = "  watch:
    analysis: { max_5xx_ratio: 1%, max_latency_increase: 50%, min_requests: 10 }
    interval: 200ms
    period: 60s
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_rise_at_the_second_step_puts_all_traffic_back() {
    let hook = Receiver::start(0);
    let s = ready(
        &format!("  steps: [30, 60, 100]\n  bake: 1s\n{ANALYSIS}    for: 1s\n"),
        Some(&hook),
    )
    .await;
    traffic(&s, &s.prod1, 1000.0, 1.0, 0.05).await;
    traffic(&s, &s.prod2, 1000.0, 2.0, 0.05).await;
    let p1 = s.prod1.alb_dns_name.to_lowercase();

    // Once prod2 takes 60%, its 5xx rise.
    let zone = s.zone.clone();
    let sdk = s.env.sdk.clone();
    let watcher = tokio::spawn(async move {
        let route53 = aws_sdk_route53::Client::new(&sdk);
        loop {
            let sets = route53
                .list_resource_record_sets()
                .hosted_zone_id(&zone)
                .send()
                .await
                .unwrap();
            let at_60 = sets
                .resource_record_sets()
                .iter()
                .any(|r| r.set_identifier() == Some("prod2") && r.weight() == Some(60));
            if at_60 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let run = s
        .env
        .spawn(&["promote", "--commit", SHA2, "--output", "json"]);
    tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .expect("prod2 reached 60%")
        .unwrap();
    traffic(&s, &s.prod2, 1000.0, 80.0, 0.05).await;
    let run = run.wait().await;

    assert_eq!(run.code, 1, "{run:#?}");
    let out = run.json();
    assert_eq!(out["kind"], "rolled_back", "{out}");
    // Read back from Route53: one simple record, on prod1.
    assert_eq!(record(&s).await, Some(("CNAME".into(), p1)));
    let promotes = s.env.ledger_of("promote").await;
    let last = promotes.last().unwrap();
    assert_eq!(last["outcome"], "rolled_back", "{last}");
    let error = last["error"].as_str().unwrap();
    assert!(error.contains("rolled back to prod1"), "{error}");
    assert!(error.contains("the 5xx ratio on prod2 is"), "{error}");
    assert!(error.contains("prod1 has 0.10%"), "{error}");
    let events = hook.wait_for(2, Duration::from_secs(5));
    assert!(
        events.iter().any(|e| e.body["event"] == "rolled_back"),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_slots_complete_the_shift_then_watch_for_the_window() {
    let s = ready(
        &format!("  steps: [50, 100]\n  bake: 500ms\n{ANALYSIS}    for: 2s\n"),
        None,
    )
    .await;
    traffic(&s, &s.prod1, 1000.0, 1.0, 0.05).await;
    traffic(&s, &s.prod2, 1000.0, 2.0, 0.06).await;
    s.env.moto.start_recording();
    let run = s
        .env
        .pipeline(&["promote", "--commit", SHA2, "--output", "json"])
        .await;
    s.env.moto.stop_recording();
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.elapsed >= Duration::from_millis(2500),
        "{:?}",
        run.elapsed
    );
    let out = run.json();
    assert_eq!(out["to"], "prod2");
    assert_eq!(out["watch"]["target"]["requests"], 1000);
    assert_eq!(out["watch"]["other"]["slot"], "prod1");
    let p2 = s.prod2.alb_dns_name.to_lowercase();
    assert_eq!(record(&s).await, Some(("CNAME".into(), p2)));
    // One GetMetricData per check, for both slots.
    let calls = s.env.pipeline_calls();
    let reads = calls.iter().filter(|c| c.action == "GetMetricData").count();
    assert!(reads >= 4, "{reads} checks");
    // In CI, a line per check with both slots' figures.
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("watching: prod2 5xx "))
        .collect();
    assert_eq!(lines.len(), reads, "{}", run.stderr);
    assert!(
        lines.last().unwrap().ends_with(
            "prod2 5xx 0.20% of 1000 requests, 60 ms; prod1 5xx 0.10% of 1000 requests, 50 ms"
        ),
        "{}",
        run.stderr
    );
    assert!(calls.iter().all(|c| c.action != "DescribeAlarms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_in_the_window_after_a_one_shot_flip_rolls_back() {
    let s = ready(
        "  watch:\n    alarms: [shop-errors]\n    interval: 200ms\n    for: 4s\n",
        None,
    )
    .await;
    let cloudwatch = alarm(&s).await;
    let p1 = s.prod1.alb_dns_name.to_lowercase();
    let p2 = s.prod2.alb_dns_name.to_lowercase();
    let run = s.env.spawn(&["promote", "--commit", SHA2]);
    eventually("the record points at prod2", || async {
        record(&s).await == Some(("CNAME".into(), p2.clone()))
    })
    .await;
    fire(&cloudwatch).await;
    let run = run.wait().await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("alarm shop-errors is in ALARM"),
        "{}",
        run.stderr
    );
    assert_eq!(record(&s).await, Some(("CNAME".into(), p1)));
    let last = s.env.ledger_of("promote").await.pop().unwrap();
    assert_eq!(last["outcome"], "rolled_back");
    let watch = last["watch"].as_str().unwrap();
    assert!(watch.contains("alarm shop-errors is in ALARM"), "{last}");
    // The dashboard shows the verdict.
    let page = s.env.dir().join("dashboard.html");
    s.env
        .ok(&["status", "--html", page.to_str().unwrap()])
        .await;
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("last watch: promote of prod2") && html.contains("rolled_back: "),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_watch_after_a_promote_rolls_back_on_an_alarm() {
    let s = ready(
        "  watch:\n    alarms: [shop-errors]\n    interval: 200ms\n",
        None,
    )
    .await;
    let cloudwatch = alarm(&s).await;
    let p1 = s.prod1.alb_dns_name.to_lowercase();
    let p2 = s.prod2.alb_dns_name.to_lowercase();
    // The promote and the watch as two CI steps.
    s.env.ok(&["promote", "--commit", SHA2]).await;
    assert_eq!(record(&s).await, Some(("CNAME".into(), p2.clone())));
    let quiet = s
        .env
        .ok(&["watch", "--for", "1s", "--output", "json"])
        .await;
    let out = quiet.json();
    assert_eq!(
        (out["live"].as_str(), out["other"].as_str()),
        (Some("prod2"), Some("prod1"))
    );
    assert!(out["checks"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(record(&s).await, Some(("CNAME".into(), p2)));

    let run = s.env.spawn(&["watch", "--for", "5s"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    fire(&cloudwatch).await;
    let run = run.wait().await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("alarm shop-errors is in ALARM"),
        "{}",
        run.stderr
    );
    assert_eq!(record(&s).await, Some(("CNAME".into(), p1)));
    let last = s.env.ledger_of("watch").await.pop().unwrap();
    assert_eq!(last["outcome"], "rolled_back", "{last}");
}

/// Too little traffic on the target: `pass` counts the checks as passes
/// and says so; `wait` watches as long again, then fails, and `pipeline
/// watch` puts the traffic back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_traffic_does_what_the_config_says_and_says_so() {
    let thin = |mode: &str| {
        format!(
            "  watch:\n    analysis: {{ max_5xx_ratio: 1%, min_requests: 500, too_little_traffic: {mode} }}\n    interval: 200ms\n    period: 60s\n    for: 1s\n"
        )
    };
    let s = ready(&thin("pass"), None).await;
    traffic(&s, &s.prod1, 1000.0, 1.0, 0.05).await;
    traffic(&s, &s.prod2, 100.0, 0.0, 0.05).await;
    let p1 = s.prod1.alb_dns_name.to_lowercase();
    let p2 = s.prod2.alb_dns_name.to_lowercase();

    let passed = s.env.ok(&["promote", "--commit", SHA2]).await;
    assert!(
        passed
            .stderr
            .contains("not enough traffic on prod2 to judge (100 requests, min_requests 500): counted as a pass"),
        "{}",
        passed.stderr
    );
    assert!(
        passed.stdout.contains("with too little traffic to judge"),
        "{}",
        passed.stdout
    );
    assert_eq!(record(&s).await, Some(("CNAME".into(), p2)));
    let last = s.env.ledger_of("promote").await.pop().unwrap();
    let watch = last["watch"].as_str().unwrap();
    assert!(
        watch.starts_with("healthy after") && watch.contains("too_little_traffic: pass"),
        "{last}"
    );

    s.env.write_config(&format!("{}{}", s.config, thin("wait")));
    let run = s.env.pipeline(&["watch", "--output", "json"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .contains("waiting for more (too_little_traffic: wait)")
            && run
                .stderr
                .contains("no check had enough traffic on prod2; watching 1s longer"),
        "{}",
        run.stderr
    );
    // Watched twice the window before it gave up.
    assert!(run.elapsed >= Duration::from_secs(2), "{:?}", run.elapsed);
    assert_eq!(run.json()["kind"], "rolled_back");
    assert_eq!(record(&s).await, Some(("CNAME".into(), p1)));
    let last = s.env.ledger_of("watch").await.pop().unwrap();
    let watch = last["watch"].as_str().unwrap();
    assert!(
        watch.contains("not enough traffic on prod2 to judge the release in twice 1s"),
        "{last}"
    );
}

/// `environments.<env>.alarms`: an alarm in ALARM while the new fleet
/// holds healthy fails the deploy; the new instances are gone and the old
/// ones still serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_during_healthy_for_fails_the_deploy_the_safe_way() {
    let s = slots("cname").await;
    let env = &s.env;
    env.ok(&["deploy", "--env", "prod2", "--commit", SHA]).await;
    let old = env.live_instances("prod2", SHA).await;
    assert_eq!(old.len(), 2);
    let at = s.config.find("  prod2:\n").unwrap();
    let (head, tail) = s.config.split_at(at);
    let watched = tail.replacen(
        "healthy_for: 200ms\n",
        "healthy_for: 3s\n    alarms: [shop-errors]\n",
        1,
    );
    env.write_config(&format!("{head}{watched}"));
    let cloudwatch = alarm(&s).await;
    fire(&cloudwatch).await;

    let run = env
        .pipeline(&[
            "deploy", "--env", "prod2", "--commit", SHA2, "--output", "json",
        ])
        .await;
    assert_eq!(run.code, 1, "{run:#?}");
    let out = run.json();
    assert_eq!(out["kind"], "deploy_failed", "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("alarm shop-errors is in ALARM while the new fleet held healthy"),
        "{out}"
    );
    // Caught at the hold's first tick, not after healthy_for.
    assert!(run.elapsed < Duration::from_secs(3), "{:?}", run.elapsed);
    assert!(env.live_instances("prod2", SHA2).await.is_empty());
    assert_eq!(env.live_instances("prod2", SHA).await, old);
    let mut serving: Vec<String> = balancer_health(env, &s.prod2, Kind::TargetGroup)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    serving.sort();
    assert_eq!(serving, old);
}
