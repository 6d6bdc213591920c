//! Unit tests of promote and rollback, through mocks of the ports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::ports::{AppInstance, MockBalancer, MockDns, MockInstances, Sample, TargetHealth};

/// CloudWatch for plans without a watch: any call fails the test.
struct NoMetrics;

#[async_trait::async_trait]
impl Metrics for NoMetrics {
    async fn firing(&self, _: &[String]) -> Result<Vec<String>> {
        panic!("no watch is configured, yet DescribeAlarms was called")
    }

    async fn samples(
        &self,
        _: [crate::ports::MetricSource; 2],
        _: Duration,
    ) -> Result<[Sample; 2]> {
        panic!("no watch is configured, yet GetMetricData was called")
    }
}

static NO_METRICS: NoMetrics = NoMetrics;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const OLD: &str = "ffffffffffffffffffffffffffffffffffffffff";

fn plan() -> PromotePlan {
    PromotePlan {
        app: "shop".into(),
        zone: "Z1".into(),
        record: "www.example.com".into(),
        record_type: RecordType::Cname,
        ttl: 60,
        slots: ["prod1".into(), "prod2".into()],
        needed: [2, 2],
        poll: Poll {
            interval: Duration::from_secs(1),
            deadline: Duration::from_secs(30),
        },
        steps: vec![],
        bake: Duration::from_secs(60),
        watch: None,
    }
}

/// Promotes [`SHA`] (to `to`, else the other slot), never interrupted.
async fn promote_sha(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    to: Option<&str>,
) -> Result<Flip> {
    let to = to.map(|name| plan.slot(name)).transpose()?;
    promote(
        plan,
        ports,
        to,
        &SHA.parse().unwrap(),
        Foreign::Refuse,
        &Interrupt::never(),
    )
    .await
}

fn endpoint(slot: &str) -> Endpoint {
    Endpoint {
        dns_name: format!("{slot}-lb.elb.amazonaws.com"),
        hosted_zone_id: "ZLB".into(),
    }
}

fn cname(slot: &str) -> Record {
    Record {
        name: "www.example.com".into(),
        target: Target::Cname(format!("{slot}-lb.elb.amazonaws.com")),
        ttl: Some(60),
        weighted: None,
    }
}

/// A slot's balancer with `healthy` instances `i-<slot>-<n>`.
fn balancer(slot: &'static str, healthy: usize) -> MockBalancer {
    let mut m = MockBalancer::new();
    m.expect_name().returning(move || format!("tg {slot}"));
    m.expect_endpoint().returning(move || Ok(endpoint(slot)));
    m.expect_registered().returning(move || {
        Ok((0..healthy)
            .map(|n| TargetHealth {
                id: format!("i-{slot}-{n}"),
                healthy: true,
                state: "healthy".into(),
            })
            .collect())
    });
    m
}

/// prod1 runs OLD on 2 instances, prod2 runs `prod2_commit` on 2.
fn instances(prod2_commit: &'static str) -> MockInstances {
    let mut m = MockInstances::new();
    m.expect_app_instances().returning(move |_, env| {
        let commit = if env == "prod2" { prod2_commit } else { OLD };
        Ok((0..2)
            .map(|n| AppInstance {
                id: format!("i-{env}-{n}"),
                env: "staging".into(),
                launched_ms: 0,
                role: "app".into(),
                state: "running".into(),
                commit: commit.into(),
                run: "r".into(),
                image_id: "ami-1".into(),
                artifact: String::new(),
            })
            .collect())
    });
    m
}

fn describe(records: &[Record]) -> String {
    if records.is_empty() {
        return "none".into();
    }
    records
        .iter()
        .map(|r| match &r.weighted {
            Some((id, w)) => format!("{id}={w}"),
            None => r.target.host(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A zone whose record points at `live`; replacements are logged; a change
/// is in sync on the second poll.
fn dns(live: Option<&'static str>, log: &Arc<Mutex<Vec<String>>>) -> MockDns {
    let mut m = MockDns::new();
    m.expect_records()
        .returning(move |_, _| Ok(live.map(cname).into_iter().collect()));
    let l = log.clone();
    m.expect_replace().returning(move |zone, old, new| {
        l.lock()
            .unwrap()
            .push(format!("{zone}: {} -> {}", describe(old), describe(new)));
        Ok("C1".into())
    });
    let polls = Arc::new(Mutex::new(0));
    m.expect_in_sync().returning(move |_| {
        let mut n = polls.lock().unwrap();
        *n += 1;
        Ok(*n >= 2)
    });
    m
}

#[tokio::test(start_paused = true)]
async fn promotes_the_idle_slot_in_one_change() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 2));
    let (dns, instances) = (dns(Some("prod1"), &log), instances(SHA));
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let flip = promote_sha(&plan(), &ports, None).await.unwrap();
    assert_eq!(flip.from.as_deref(), Some("prod1"));
    assert_eq!(flip.to, "prod2");
    assert!(flip.changed);
    assert_eq!(flip.commit.as_deref(), Some(SHA));
    assert_eq!(
        *log.lock().unwrap(),
        ["Z1: prod1-lb.elb.amazonaws.com -> prod2-lb.elb.amazonaws.com"]
    );
}

#[tokio::test(start_paused = true)]
async fn refuses_a_slot_running_another_commit() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 2));
    let (dns, instances) = (dns(Some("prod1"), &log), instances(OLD));
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let err = promote_sha(&plan(), &ports, None).await.unwrap_err();
    assert!(matches!(err, Error::GuardFailed { .. }), "{err}");
    assert!(
        err.to_string().contains("prod2 has 0 healthy instances of"),
        "{err}"
    );
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn refuses_a_slot_with_too_few_healthy() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 1));
    let (dns, instances) = (dns(Some("prod1"), &log), instances(SHA));
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let err = promote_sha(&plan(), &ports, None).await.unwrap_err();
    assert!(err.to_string().contains("has 1 healthy"), "{err}");
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn promoting_the_live_slot_changes_nothing() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 2));
    let (dns, instances) = (dns(Some("prod2"), &log), instances(SHA));
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let flip = promote_sha(&plan(), &ports, Some("prod2")).await.unwrap();
    assert!(!flip.changed);
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_record_changed_by_someone_else_is_not_overwritten() {
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 2));
    let instances = instances(SHA);
    let mut dns = MockDns::new();
    dns.expect_records()
        .returning(|_, _| Ok(vec![cname("prod1")]));
    dns.expect_replace().times(1).returning(|_, _, _| {
        Err(Error::Aws {
            operation: "ChangeResourceRecordSets",
            resource: "hosted zone Z1".into(),
            code: "InvalidChangeBatch".into(),
            message: "Tried to delete resource record set but it was not found".into(),
        })
    });
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let err = promote_sha(&plan(), &ports, None).await.unwrap_err();
    assert!(matches!(err, Error::GuardFailed { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("changed the record since it was read"),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was overwritten"), "{err}");
}

/// A flip whose answer was lost: the batch landed, the SDK's retry met its
/// own DELETE gone. The record already points at the new slot, so the
/// promote completes, waiting on a same-valued change it makes.
#[tokio::test(start_paused = true)]
async fn a_flip_whose_answer_was_lost_completes() {
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 2));
    let instances = instances(SHA);
    let mut dns = MockDns::new();
    let reads = Arc::new(Mutex::new(0));
    dns.expect_records().returning(move |_, _| {
        let mut n = reads.lock().unwrap();
        *n += 1;
        // prod1 when promote reads it; prod2 once the lost batch landed.
        Ok(vec![cname(if *n == 1 { "prod1" } else { "prod2" })])
    });
    let batches = Arc::new(Mutex::new(Vec::new()));
    let seen = batches.clone();
    dns.expect_replace().returning(move |_, old, new| {
        let mut seen = seen.lock().unwrap();
        seen.push(format!("{} -> {}", describe(old), describe(new)));
        if seen.len() == 1 {
            Err(Error::Aws {
                operation: "ChangeResourceRecordSets",
                resource: "hosted zone Z1".into(),
                code: "InvalidChangeBatch".into(),
                message: "Tried to delete resource record set but it was not found".into(),
            })
        } else {
            Ok("C2".into())
        }
    });
    dns.expect_in_sync()
        .withf(|id| id == "C2")
        .returning(|_| Ok(true));
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let flip = promote_sha(&plan(), &ports, None).await.unwrap();
    assert_eq!(flip.to, "prod2");
    assert!(flip.changed);
    assert_eq!(
        *batches.lock().unwrap(),
        [
            "prod1-lb.elb.amazonaws.com -> prod2-lb.elb.amazonaws.com",
            "prod2-lb.elb.amazonaws.com -> prod2-lb.elb.amazonaws.com"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn rollback_points_back_at_the_other_slot() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 2));
    let (dns, instances) = (dns(Some("prod2"), &log), instances(SHA));
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let flip = rollback(&plan(), &ports, None, &Interrupt::never())
        .await
        .unwrap();
    assert_eq!(flip.to, "prod1");
    assert_eq!(flip.commit.as_deref(), Some(OLD));
    assert_eq!(
        *log.lock().unwrap(),
        ["Z1: prod2-lb.elb.amazonaws.com -> prod1-lb.elb.amazonaws.com"]
    );
}

#[tokio::test(start_paused = true)]
async fn first_promote_creates_the_record() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 2));
    let mut instances = MockInstances::new();
    instances.expect_app_instances().returning(|_, env| {
        Ok((0..2)
            .map(|n| AppInstance {
                id: format!("i-{env}-{n}"),
                env: "staging".into(),
                launched_ms: 0,
                role: "app".into(),
                state: "running".into(),
                commit: SHA.into(),
                run: "r".into(),
                image_id: "ami-1".into(),
                artifact: String::new(),
            })
            .collect())
    });
    let dns = dns(None, &log);
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let flip = promote_sha(&plan(), &ports, None).await.unwrap();
    assert_eq!(flip.to, "prod1");
    assert_eq!(flip.from, None);
    assert_eq!(
        *log.lock().unwrap(),
        ["Z1: none -> prod1-lb.elb.amazonaws.com"]
    );
    // Nothing to roll back to from nowhere.
    let nowhere = MockDns::new();
    let mut nowhere = nowhere;
    nowhere.expect_records().returning(|_, _| Ok(vec![]));
    let ports = PromotePorts {
        instances: &instances,
        dns: &nowhere,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let err = rollback(&plan(), &ports, None, &Interrupt::never())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::BadInput);
}

/// A zone that remembers what was written: it starts with `start`, checks
/// that every change deletes exactly what is there, logs what each change
/// writes, and reports every change in sync. Returns the zone and its records.
fn remembering_zone(
    start: Vec<Record>,
    log: &Arc<Mutex<Vec<String>>>,
) -> (MockDns, Arc<Mutex<Vec<Record>>>) {
    let records = Arc::new(Mutex::new(start));
    let mut dns = MockDns::new();
    let r = records.clone();
    dns.expect_records()
        .returning(move |_, _| Ok(r.lock().unwrap().clone()));
    let (r, l) = (records.clone(), log.clone());
    dns.expect_replace().returning(move |_, old, new| {
        assert_eq!(*r.lock().unwrap(), old, "deletes exactly what is there");
        l.lock().unwrap().push(describe(new));
        *r.lock().unwrap() = new.to_vec();
        Ok("C".into())
    });
    dns.expect_in_sync().returning(|_| Ok(true));
    (dns, records)
}

#[tokio::test(start_paused = true)]
async fn a_gradual_shift_steps_through_weights_and_ends_simple() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 2));
    let instances = instances(SHA);
    let (dns, records) = remembering_zone(vec![cname("prod1")], &log);
    let mut plan = plan();
    plan.steps = vec![10, 50, 100];
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let started = tokio::time::Instant::now();
    let flip = promote_sha(&plan, &ports, None).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "prod1=90 prod2=10",
            "prod1=50 prod2=50",
            "prod2-lb.elb.amazonaws.com"
        ]
    );
    assert_eq!(flip.steps, [10, 50, 100]);
    assert_eq!(started.elapsed(), Duration::from_secs(120)); // two bakes of 60 s
    // Half-way state is read back as weights.
    *records.lock().unwrap() = records_for(
        &plan,
        &[endpoint("prod1"), endpoint("prod2")],
        Slot::Second,
        10,
    );
    let l = live(&plan, &ports).await.unwrap();
    assert_eq!(l.slot, Some(Slot::First));
    assert_eq!(l.weights, Some([90, 10]));
}

#[tokio::test(start_paused = true)]
async fn a_failed_check_mid_shift_puts_all_traffic_back() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let b1 = balancer("prod1", 2);
    // prod2 is healthy for the first check only.
    let mut b2 = MockBalancer::new();
    b2.expect_name().returning(|| "tg prod2".into());
    b2.expect_endpoint().returning(|| Ok(endpoint("prod2")));
    let checks = Arc::new(Mutex::new(0));
    b2.expect_registered().returning(move || {
        let mut n = checks.lock().unwrap();
        *n += 1;
        let healthy = if *n == 1 { 2 } else { 0 };
        Ok((0..healthy)
            .map(|i| TargetHealth {
                id: format!("i-prod2-{i}"),
                healthy: true,
                state: "healthy".into(),
            })
            .collect())
    });
    let instances = instances(SHA);
    let (dns, _) = remembering_zone(vec![cname("prod1")], &log);
    let mut plan = plan();
    plan.steps = vec![10, 100];
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let err = promote_sha(&plan, &ports, None).await.unwrap_err();
    assert!(matches!(err, Error::GuardFailed { .. }), "{err}");
    assert_eq!(
        *log.lock().unwrap(),
        ["prod1=90 prod2=10", "prod1-lb.elb.amazonaws.com"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_half_finished_shift_resumes_and_rolls_back_the_right_way() {
    let (b1, b2) = (balancer("prod1", 2), balancer("prod2", 2));
    let instances = instances(SHA);
    let mut plan = plan();
    plan.steps = vec![10, 50, 100];
    let endpoints = [endpoint("prod1"), endpoint("prod2")];
    // Killed at 10 % on prod2: promote carries on from 50 %.
    let log = Arc::new(Mutex::new(Vec::new()));
    let (dns, _) = remembering_zone(records_for(&plan, &endpoints, Slot::Second, 10), &log);
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    promote_sha(&plan, &ports, None).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["prod1=50 prod2=50", "prod2-lb.elb.amazonaws.com"]
    );
    // Killed at 10 % on prod2: rollback puts everything back on prod1.
    let log = Arc::new(Mutex::new(Vec::new()));
    let (dns, _) = remembering_zone(records_for(&plan, &endpoints, Slot::Second, 10), &log);
    let ports = PromotePorts {
        instances: &instances,
        dns: &dns,
        balancers: [&b1, &b2],
        metrics: &NO_METRICS,
    };
    let flip = rollback(&plan, &ports, None, &Interrupt::never())
        .await
        .unwrap();
    assert_eq!(flip.to, "prod1");
    assert_eq!(flip.from.as_deref(), Some("prod2"));
    assert_eq!(*log.lock().unwrap(), ["prod1-lb.elb.amazonaws.com"]);
}
