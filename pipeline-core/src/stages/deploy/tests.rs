//! Unit tests of the deploy stage's logic, through mocks of the ports.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::*;
use crate::config::{InstanceShape, TaskWhen};
use crate::error::Error;
use crate::ports::{AppInstance, Image, Tags, tag};
use crate::ports::{
    GroupState, ImageState, InstanceStatus, MockAutoScaling, MockBalancer, MockInstances,
    MockMetrics, TargetHealth,
};
use crate::release::Tested;
use crate::stages::task::{self, TaskPlan};
use crate::wait::Poll;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

type Log = Arc<Mutex<Vec<String>>>;

fn shape() -> InstanceShape {
    InstanceShape {
        instance_type: "t3.micro".into(),
        security_groups: vec![],
        instance_profile: None,
        key_name: None,
        metadata: Default::default(),
        root_volume: Default::default(),
    }
}

fn plan(count: u32) -> DeployPlan {
    DeployPlan {
        app: "shop".into(),
        env: "staging".into(),
        count,
        shape: shape(),
        placement: Placement::Subnets(vec!["subnet-a".into(), "subnet-b".into()]),
        max_surge: None,
        user_data: "#!/bin/sh\n".into(),
        health_poll: Poll {
            interval: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        },
        healthy_for: Duration::ZERO,
        alarms: vec![],
        drain_cap: Duration::from_secs(30),
        tasks: vec![],
    }
}

/// A task of the staging plan; a command containing `fail` exits 1.
fn task_plan(name: &str, command: &str, when: TaskWhen) -> TaskPlan {
    TaskPlan {
        app: "shop".into(),
        env: "staging".into(),
        name: name.into(),
        command: command.into(),
        when,
        shape: shape(),
        subnet: Some("subnet-a".into()),
        settings: "#!/bin/sh\n".into(),
        poll: Poll {
            interval: Duration::from_secs(5),
            deadline: Duration::from_secs(600),
        },
    }
}

fn built() -> Release<Built> {
    let image = Image {
        id: "ami-new".into(),
        region: "us-east-1".into(),
        name: "shop".into(),
        state: ImageState::Available,
        created: String::new(),
        tags: Tags::new(),
        snapshot_ids: vec![],
        root_device: None,
    };
    Release::<Tested>::vouched("shop", SHA.parse().unwrap()).into_built(image)
}

fn app(id: &str) -> AppInstance {
    AppInstance {
        id: id.into(),
        env: "staging".into(),
        launched_ms: 0,
        role: tag::ROLE_APP.into(),
        state: "running".into(),
        commit: "f".repeat(40),
        run: "old-run".into(),
        image_id: "ami-old".into(),
        artifact: String::new(),
    }
}

/// Instances: `current` exist; launches name new ones `i-new<N>` and log the
/// subnet; `states` is what every new instance reports. A task instance
/// (`pipeline:role=task`) is `i-task-<name>`, reports `stopped` at once and
/// exits 1 if its command contains `fail`, else 0.
fn instances(log: &Log, current: Vec<AppInstance>, state: &'static str) -> MockInstances {
    let mut m = MockInstances::new();
    m.expect_app_instances()
        .returning(move |_, _| Ok(current.clone()));
    let l = log.clone();
    let launched = Arc::new(Mutex::new(0));
    let exits: Arc<Mutex<BTreeMap<String, &'static str>>> = Arc::default();
    let task_exits = exits.clone();
    m.expect_launch().returning(move |spec| {
        assert_eq!(spec.tags[tag::ENV], "staging");
        assert_eq!(spec.tags[tag::COMMIT], SHA);
        assert_eq!(spec.image_id, "ami-new");
        if spec.tags[tag::ROLE] == tag::ROLE_TASK {
            let name = &spec.tags[tag::TASK];
            let id = format!("i-task-{name}");
            let exit = if spec.user_data.contains("--fail") {
                "1"
            } else {
                "0"
            };
            task_exits.lock().unwrap().insert(id.clone(), exit);
            l.lock().unwrap().push(format!("task {name} on {id}"));
            return Ok(vec![id]);
        }
        assert_eq!(spec.tags[tag::ROLE], tag::ROLE_APP);
        let mut n = launched.lock().unwrap();
        let ids: Vec<String> = (0..spec.count)
            .map(|_| {
                *n += 1;
                format!("i-new{n}")
            })
            .collect();
        l.lock().unwrap().push(format!(
            "launch {} {}",
            spec.subnet_id.clone().unwrap(),
            ids.join(",")
        ));
        Ok(ids)
    });
    m.expect_statuses().returning(move |ids| {
        Ok(ids
            .iter()
            .map(|id| match exits.lock().unwrap().get(id) {
                Some(exit) => InstanceStatus {
                    id: id.clone(),
                    state: "stopped".into(),
                    reason: None,
                    tags: Tags::from([(task::EXIT_TAG.to_string(), exit.to_string())]),
                },
                None => InstanceStatus {
                    id: id.clone(),
                    state: state.into(),
                    reason: None,
                    tags: Tags::new(),
                },
            })
            .collect())
    });
    m.expect_console_output()
        .returning(|_| Ok("boot\nmigration 42 failed\n".into()));
    let l = log.clone();
    m.expect_terminate().returning(move |ids| {
        l.lock()
            .unwrap()
            .push(format!("terminate {}", ids.join(",")));
        Ok(())
    });
    m
}

/// A balancer holding `serving`, which reports newly registered instances
/// with `new_health`, and the given draining behaviour.
fn balancer(
    log: &Log,
    serving: &[&str],
    new_healthy: bool,
    delay: Duration,
    reports: bool,
) -> MockBalancer {
    let registered: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(serving.iter().map(|s| s.to_string()).collect()));
    let mut m = MockBalancer::new();
    m.expect_name().returning(|| "target group tg".into());
    let r = registered.clone();
    m.expect_registered().returning(move || {
        Ok(r.lock()
            .unwrap()
            .iter()
            .map(|id| {
                let healthy = !id.starts_with("i-new") || new_healthy;
                TargetHealth {
                    id: id.clone(),
                    healthy,
                    state: if healthy { "healthy" } else { "unhealthy" }.into(),
                }
            })
            .collect())
    });
    let (r, l) = (registered.clone(), log.clone());
    m.expect_register().returning(move |ids| {
        l.lock()
            .unwrap()
            .push(format!("register {}", ids.join(",")));
        r.lock().unwrap().extend(ids.iter().cloned());
        Ok(())
    });
    let (r, l) = (registered.clone(), log.clone());
    m.expect_deregister().returning(move |ids| {
        l.lock()
            .unwrap()
            .push(format!("deregister {}", ids.join(",")));
        r.lock().unwrap().retain(|id| !ids.contains(id));
        Ok(())
    });
    m.expect_draining_delay().returning(move || Ok(delay));
    m.expect_reports_draining().returning(move || reports);
    m
}

async fn deploy(
    plan: &DeployPlan,
    instances: &MockInstances,
    balancer: &MockBalancer,
    interrupt: &Interrupt,
) -> Result<DeployOutcome> {
    built()
        .deploy(
            plan,
            DeployPorts {
                instances,
                balancer,
                auto_scaling: None,
                metrics: None,
            },
            &RunId::new(),
            interrupt,
        )
        .await
}

fn log_of(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn swaps_new_in_before_old_out() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1"), app("i-old2")], "running");
    let balancer = balancer(&log, &["i-old1", "i-old2"], true, Duration::ZERO, true);
    let out = deploy(&plan(3), &instances, &balancer, &Interrupt::never())
        .await
        .unwrap();
    assert_eq!(
        log_of(&log),
        [
            "launch subnet-a i-new1,i-new2",
            "launch subnet-b i-new3",
            "register i-new1,i-new2,i-new3",
            "deregister i-old1,i-old2",
            "terminate i-old1,i-old2",
        ]
    );
    assert_eq!(
        out.release.state().instances,
        ["i-new1", "i-new2", "i-new3"]
    );
    assert_eq!(out.release.state().env, "staging");
    assert_eq!(out.removed, ["i-old1", "i-old2"]);
    assert!(out.cleaned.is_empty());
    let phases: Vec<&str> = out.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phases,
        [
            "inspect",
            "launch",
            "boot",
            "register",
            "health",
            "drain",
            "terminate"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn first_deploy_has_no_old_fleet() {
    let log = Log::default();
    let instances = instances(&log, vec![], "running");
    let balancer = balancer(&log, &[], true, Duration::from_secs(300), true);
    let out = deploy(&plan(1), &instances, &balancer, &Interrupt::never())
        .await
        .unwrap();
    assert_eq!(log_of(&log), ["launch subnet-a i-new1", "register i-new1"]);
    assert!(out.removed.is_empty());
}

#[tokio::test(start_paused = true)]
async fn never_healthy_removes_the_new_fleet_and_keeps_the_old() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1")], "running");
    let balancer = balancer(&log, &["i-old1"], false, Duration::ZERO, true);
    let started = tokio::time::Instant::now();
    let err = deploy(&plan(2), &instances, &balancer, &Interrupt::never())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("healthy in target group tg"),
        "{err}"
    );
    assert!(err.to_string().contains("0/2 healthy"), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    assert_eq!(
        log_of(&log),
        [
            "launch subnet-a i-new1",
            "launch subnet-b i-new2",
            "register i-new1,i-new2",
            "deregister i-new1,i-new2",
            "terminate i-new1,i-new2",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_dies_while_booting_fails_fast() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1")], "terminated");
    let balancer = balancer(&log, &["i-old1"], true, Duration::ZERO, true);
    let err = deploy(&plan(1), &instances, &balancer, &Interrupt::never())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("terminated before it ran"),
        "{err}"
    );
    assert_eq!(log_of(&log), ["launch subnet-a i-new1", "terminate i-new1"]);
}

#[tokio::test(start_paused = true)]
async fn leftovers_of_a_killed_run_are_terminated_first() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1"), app("i-stray")], "running");
    let balancer = balancer(&log, &["i-old1"], true, Duration::ZERO, true);
    let out = deploy(&plan(1), &instances, &balancer, &Interrupt::never())
        .await
        .unwrap();
    assert_eq!(log_of(&log)[0], "terminate i-stray");
    assert_eq!(out.cleaned, ["i-stray"]);
    assert_eq!(out.removed, ["i-old1"]);
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_before_the_swap_keeps_the_old_fleet() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1")], "running");
    let balancer = balancer(&log, &["i-old1"], false, Duration::ZERO, true);
    let (trigger, interrupt) = Interrupt::manual();
    let plan = plan(1);
    let run = deploy(&plan, &instances, &balancer, &interrupt);
    let fire = async {
        tokio::time::sleep(Duration::from_secs(12)).await;
        trigger.fire();
    };
    let (result, ()) = tokio::join!(run, fire);
    assert!(matches!(result.unwrap_err(), Error::Interrupted));
    let log = log_of(&log);
    assert_eq!(log.last().unwrap(), "terminate i-new1");
    assert!(!log.iter().any(|l| l.contains("i-old1")), "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn classic_draining_waits_the_delay_capped_by_config() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1")], "running");
    let balancer = balancer(&log, &["i-old1"], true, Duration::from_secs(300), false);
    let out = deploy(&plan(1), &instances, &balancer, &Interrupt::never())
        .await
        .unwrap();
    let drain = out.phases.iter().find(|p| p.name == "drain").unwrap();
    assert_eq!(drain.duration, Duration::from_secs(30)); // the cap, not 300 s
    let balancer2 = balancer_with_delay(&log, 10);
    let instances2 = self::instances(&log, vec![app("i-old1")], "running");
    let out = deploy(&plan(1), &instances2, &balancer2, &Interrupt::never())
        .await
        .unwrap();
    let drain = out.phases.iter().find(|p| p.name == "drain").unwrap();
    assert_eq!(drain.duration, Duration::from_secs(10)); // the balancer's own delay
}

fn balancer_with_delay(log: &Log, secs: u64) -> MockBalancer {
    balancer(log, &["i-old1"], true, Duration::from_secs(secs), false)
}

#[tokio::test(start_paused = true)]
async fn target_group_draining_ends_when_the_targets_are_gone() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1")], "running");
    let balancer = balancer(&log, &["i-old1"], true, Duration::from_secs(300), true);
    let out = deploy(&plan(1), &instances, &balancer, &Interrupt::never())
        .await
        .unwrap();
    let drain = out.phases.iter().find(|p| p.name == "drain").unwrap();
    assert_eq!(drain.duration, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_new_fleet_must_stay_healthy_for_healthy_for() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1")], "running");
    // Healthy, unhealthy once, then healthy for good.
    let mut balancer = MockBalancer::new();
    balancer.expect_name().returning(|| "tg".into());
    let polls = Arc::new(Mutex::new(0));
    balancer.expect_registered().returning(move || {
        let mut n = polls.lock().unwrap();
        *n += 1;
        let healthy = *n != 3;
        Ok(vec![
            TargetHealth {
                id: "i-old1".into(),
                healthy: true,
                state: "healthy".into(),
            },
            TargetHealth {
                id: "i-new1".into(),
                healthy,
                state: "x".into(),
            },
        ])
    });
    balancer.expect_register().returning(|_| Ok(()));
    balancer.expect_deregister().returning(|_| Ok(()));
    balancer
        .expect_draining_delay()
        .returning(|| Ok(Duration::ZERO));
    balancer.expect_reports_draining().returning(|| true);
    let mut plan = plan(1);
    plan.healthy_for = Duration::from_secs(12);
    let out = deploy(&plan, &instances, &balancer, &Interrupt::never())
        .await
        .unwrap();
    let health = out.phases.iter().find(|p| p.name == "health").unwrap();
    // Health polls (5 s, the first three sooner) at 0 s (healthy),
    // 0.625 s (sick: the clock resets), 1.875 s (healthy again), 4.375 s,
    // 9.375 s, 14.375 s: held 12.5 s >= 12 s.
    assert_eq!(health.duration, Duration::from_millis(14_375));
}

/// An alarm that goes off during the `healthy_for` hold fails the deploy:
/// the new fleet leaves, the old one was never touched.
#[tokio::test(start_paused = true)]
async fn an_alarm_during_healthy_for_fails_the_deploy_the_safe_way() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1")], "running");
    let balancer = balancer(&log, &["i-old1"], true, Duration::ZERO, true);
    let mut metrics = MockMetrics::new();
    let checks = Arc::new(Mutex::new(0));
    metrics.expect_firing().returning(move |alarms| {
        assert_eq!(alarms, ["shop-5xx", "shop-latency"]);
        let mut n = checks.lock().unwrap();
        *n += 1;
        // Quiet at the first tick of the hold, firing at the second.
        Ok(if *n >= 2 {
            vec!["shop-5xx".into()]
        } else {
            vec![]
        })
    });
    let mut plan = plan(1);
    plan.healthy_for = Duration::from_secs(30);
    plan.alarms = vec!["shop-5xx".into(), "shop-latency".into()];
    let started = tokio::time::Instant::now();
    let err = built()
        .deploy(
            &plan,
            DeployPorts {
                instances: &instances,
                balancer: &balancer,
                auto_scaling: None,
                metrics: Some(&metrics),
            },
            &RunId::new(),
            &Interrupt::never(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeployFailed { .. }), "{err}");
    assert!(
        err.to_string().contains("alarm shop-5xx is in ALARM"),
        "{err}"
    );
    // Caught at the second tick (an eighth of the 5 s interval: the quick
    // start), not at the end of the hold.
    assert_eq!(started.elapsed(), Duration::from_millis(625));
    assert_eq!(
        log_of(&log),
        [
            "launch subnet-a i-new1",
            "register i-new1",
            "deregister i-new1",
            "terminate i-new1",
        ]
    );
}

#[tokio::test]
async fn alarms_without_a_metrics_port_are_refused_before_any_call() {
    let log = Log::default();
    // No expectations: any call would panic.
    let instances = MockInstances::new();
    let balancer = MockBalancer::new();
    let mut plan = plan(1);
    plan.alarms = vec!["shop-5xx".into()];
    let err = deploy(&plan, &instances, &balancer, &Interrupt::never())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
    assert!(
        err.to_string().contains("environments.staging.alarms"),
        "{err}"
    );
    assert!(log_of(&log).is_empty());
}

#[test]
fn spread_is_even_and_skips_empty_subnets() {
    let subnets: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let counts = |n| {
        spread(n, &subnets)
            .into_iter()
            .map(|(_, c)| c)
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(1), [1]);
    assert_eq!(counts(3), [1, 1, 1]);
    assert_eq!(counts(5), [2, 2, 1]);
    assert_eq!(counts(50), [17, 17, 16]);
}

#[test]
fn unknown_environment_is_bad_input() {
    let text = r##"
app: shop
region: us-east-1
state: { bucket: shop-state }
build:
  base_image: { id: ami-0123abcd }
  provision: "#!/bin/sh\n"
environments:
  staging:
    count: 1
    subnets: [subnet-0a]
    load_balancer: { classic: shop }
"##;
    let config = Config::parse(text, "p.yaml").unwrap();
    let err = DeployPlan::new(&config, "prod").unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::BadInput);
    assert!(err.to_string().contains("known: staging"), "{err}");
    let plan = DeployPlan::new(&config, "staging").unwrap();
    assert!(plan.user_data.contains("PIPELINE_ENV='staging'"));
}

/// A group holding `old` (desired 2, max 3), whose launches add
/// `i-newg<N>` members.
fn group(log: &Log, old: &[&str]) -> MockAutoScaling {
    group_left(log, old, 3, None)
}

/// A group holding `old` with maximum `max` and resting-max tag `resting`
/// (as a killed deploy leaves it), whose launches add `i-newg<N>` members.
fn group_left(log: &Log, old: &[&str], max: u32, resting: Option<u32>) -> MockAutoScaling {
    let members: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(old.iter().map(|s| s.to_string()).collect()));
    let resting = Arc::new(Mutex::new(resting));
    let mut m = MockAutoScaling::new();
    let (mm, r) = (members.clone(), resting.clone());
    m.expect_group().returning(move |_| {
        let instances = mm.lock().unwrap().clone();
        Ok(GroupState {
            desired: instances.len() as u32,
            instances,
            max,
            template_id: "lt-1".into(),
            template_version: "4".into(),
            resting_max: *r.lock().unwrap(),
        })
    });
    let (l, r) = (log.clone(), resting.clone());
    m.expect_set_resting_max().returning(move |_, max| {
        l.lock().unwrap().push(format!("tag resting max {max}"));
        *r.lock().unwrap() = Some(max);
        Ok(())
    });
    let (l, r) = (log.clone(), resting.clone());
    m.expect_clear_resting_max().returning(move |_| {
        l.lock().unwrap().push("untag resting max".into());
        *r.lock().unwrap() = None;
        Ok(())
    });
    let l = log.clone();
    m.expect_new_template_version()
        .returning(move |id, source, image, _, metadata, tags| {
            assert!(metadata.tokens_required);
            assert_eq!(tags[tag::COMMIT], SHA);
            l.lock()
                .unwrap()
                .push(format!("version {id} from {source} with {image}"));
            Ok("5".into())
        });
    let (l, mm) = (log.clone(), members.clone());
    m.expect_update()
        .returning(move |_, _, version, desired, max| {
            l.lock()
                .unwrap()
                .push(format!("update v{version} desired {desired} max {max}"));
            let mut members = mm.lock().unwrap();
            let mut n = 0;
            while members.len() < desired as usize {
                n += 1;
                members.push(format!("i-newg{n}"));
            }
            Ok(())
        });
    let l = log.clone();
    m.expect_suspend().returning(move |_| {
        l.lock().unwrap().push("suspend".into());
        Ok(())
    });
    let l = log.clone();
    m.expect_resume().returning(move |_| {
        l.lock().unwrap().push("resume".into());
        Ok(())
    });
    let (l, mm) = (log.clone(), members.clone());
    m.expect_detach().returning(move |_, ids| {
        l.lock().unwrap().push(format!("detach {}", ids.join(",")));
        mm.lock().unwrap().retain(|i| !ids.contains(i));
        Ok(())
    });
    m
}

async fn deploy_in_group(
    plan: &DeployPlan,
    instances: &MockInstances,
    balancer: &MockBalancer,
    asg: &MockAutoScaling,
) -> Result<DeployOutcome> {
    built()
        .deploy(
            plan,
            DeployPorts {
                instances,
                balancer,
                auto_scaling: Some(asg),
                metrics: None,
            },
            &RunId::new(),
            &Interrupt::never(),
        )
        .await
}

fn group_plan() -> DeployPlan {
    let mut plan = plan(2);
    plan.placement = Placement::Group {
        name: "shop-asg".into(),
        subnets: vec![],
    };
    plan
}

#[tokio::test(start_paused = true)]
async fn group_mode_raises_the_group_then_detaches_the_old_fleet() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1"), app("i-old2")], "running");
    let balancer = balancer(&log, &["i-old1", "i-old2"], true, Duration::ZERO, true);
    let asg = group(&log, &["i-old1", "i-old2"]);
    let out = deploy_in_group(&group_plan(), &instances, &balancer, &asg)
        .await
        .unwrap();
    assert_eq!(
        log_of(&log),
        [
            "version lt-1 from 4 with ami-new",
            "tag resting max 3",
            "suspend",
            "update v5 desired 4 max 4",
            "register i-newg1,i-newg2",
            "detach i-old1,i-old2",
            "deregister i-old1,i-old2",
            "terminate i-old1,i-old2",
            "update v5 desired 2 max 3",
            "untag resting max",
            "resume",
        ]
    );
    assert_eq!(out.release.state().instances, ["i-newg1", "i-newg2"]);
}

#[tokio::test(start_paused = true)]
async fn group_mode_with_room_to_grow_leaves_the_maximum_and_its_tag_alone() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1"), app("i-old2")], "running");
    let balancer = balancer(&log, &["i-old1", "i-old2"], true, Duration::ZERO, true);
    let asg = group_left(&log, &["i-old1", "i-old2"], 8, None);
    deploy_in_group(&group_plan(), &instances, &balancer, &asg)
        .await
        .unwrap();
    let log = log_of(&log);
    assert!(!log.iter().any(|l| l.contains("resting")), "{log:?}");
    assert!(
        log.contains(&"update v5 desired 4 max 8".to_string()),
        "{log:?}"
    );
    assert!(
        log.contains(&"update v5 desired 2 max 8".to_string()),
        "{log:?}"
    );
}

/// A deploy killed mid-way left the group raised (desired and max 4: the
/// old fleet and its new one) and tagged with the maximum to return to.
/// The next deploy treats every member as old, and ends with the group
/// as an uninterrupted deploy would: N members, the resting maximum, no
/// tag.
#[tokio::test(start_paused = true)]
async fn group_mode_finishes_what_a_killed_deploy_left() {
    let log = Log::default();
    let left = ["i-old1", "i-old2", "i-killed1", "i-killed2"];
    let instances = instances(&log, left.iter().map(|i| app(i)).collect(), "running");
    let balancer = balancer(&log, &left, true, Duration::ZERO, true);
    let asg = group_left(&log, &left, 4, Some(3));
    let out = deploy_in_group(&group_plan(), &instances, &balancer, &asg)
        .await
        .unwrap();
    assert_eq!(
        log_of(&log),
        [
            "version lt-1 from 4 with ami-new",
            "suspend",
            "update v5 desired 6 max 6",
            "register i-newg1,i-newg2",
            "detach i-old1,i-old2,i-killed1,i-killed2",
            "deregister i-old1,i-old2,i-killed1,i-killed2",
            "terminate i-old1,i-old2,i-killed1,i-killed2",
            "update v5 desired 2 max 3",
            "untag resting max",
            "resume",
        ]
    );
    assert_eq!(out.release.state().instances, ["i-newg1", "i-newg2"]);
}

#[tokio::test(start_paused = true)]
async fn group_mode_failure_restores_the_group() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1"), app("i-old2")], "running");
    let balancer = balancer(&log, &["i-old1", "i-old2"], false, Duration::ZERO, true);
    let asg = group(&log, &["i-old1", "i-old2"]);
    let err = deploy_in_group(&group_plan(), &instances, &balancer, &asg)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(
        log_of(&log)[4..],
        [
            "register i-newg1,i-newg2",
            "detach i-newg1,i-newg2",
            "deregister i-newg1,i-newg2",
            "terminate i-newg1,i-newg2",
            "update v4 desired 2 max 3",
            "untag resting max",
            "resume",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn tasks_run_in_order_before_launch_and_before_traffic() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1")], "running");
    let balancer = balancer(&log, &["i-old1"], true, Duration::ZERO, true);
    let mut plan = plan(1);
    plan.tasks = vec![
        task_plan("migrate", "bin/migrate", TaskWhen::BeforeTraffic),
        task_plan("backup", "bin/backup", TaskWhen::BeforeLaunch),
        task_plan("reindex", "bin/reindex", TaskWhen::Manual),
        task_plan("warm", "bin/warm", TaskWhen::BeforeTraffic),
    ];
    let out = deploy(&plan, &instances, &balancer, &Interrupt::never())
        .await
        .unwrap();
    assert_eq!(
        log_of(&log),
        [
            "task backup on i-task-backup",
            "terminate i-task-backup",
            "launch subnet-a i-new1",
            "task migrate on i-task-migrate",
            "terminate i-task-migrate",
            "task warm on i-task-warm",
            "terminate i-task-warm",
            "register i-new1",
            "deregister i-old1",
            "terminate i-old1",
        ]
    );
    let ran: Vec<&str> = out.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(ran, ["backup", "migrate", "warm"]);
    let phases: Vec<&str> = out.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phases,
        [
            "inspect",
            "tasks",
            "launch",
            "boot",
            "tasks",
            "register",
            "health",
            "drain",
            "terminate"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_aborts_before_traffic_and_keeps_the_old_fleet() {
    let log = Log::default();
    let instances = instances(&log, vec![app("i-old1")], "running");
    let balancer = balancer(&log, &["i-old1"], true, Duration::ZERO, true);
    let mut plan = plan(2);
    plan.tasks = vec![
        task_plan("migrate", "bin/migrate --fail", TaskWhen::BeforeTraffic),
        task_plan("warm", "bin/warm", TaskWhen::BeforeTraffic),
    ];
    let err = deploy(&plan, &instances, &balancer, &Interrupt::never())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TaskFailed { .. }), "{err}");
    assert!(err.to_string().contains("exited with status 1"), "{err}");
    assert_eq!(
        log_of(&log),
        [
            "launch subnet-a i-new1",
            "launch subnet-b i-new2",
            "task migrate on i-task-migrate",
            "terminate i-task-migrate",
            "terminate i-new1,i-new2",
        ]
    );
}

/// An account in miniature for the deploys in batches: which instances
/// are alive and registered, what each call did, and the extremes the
/// deploy drove it to.
struct World {
    alive: BTreeSet<String>,
    registered: Vec<String>,
    log: Vec<String>,
    launched: u32,
    /// The most instances alive at once, and the fewest healthy ones
    /// registered, over every change the deploy made.
    most_alive: usize,
    fewest_healthy: usize,
    /// New instances the balancer never reports healthy.
    unhealthy: BTreeSet<String>,
    /// How many more instances a subnet's AZ has capacity for (absent:
    /// no end); a launch beyond it is answered InsufficientInstanceCapacity.
    capacity: BTreeMap<String, u32>,
    /// The account's instance quota: a launch that would have more alive
    /// is answered InstanceLimitExceeded.
    limit: Option<usize>,
    /// Calls so far of DescribeInstances (statuses) and of the
    /// balancer's health (registered), and both at each app launch.
    statuses: u32,
    health: u32,
    at_launch: Vec<(u32, u32)>,
}

type Shared = Arc<Mutex<World>>;

impl World {
    fn healthy_registered(&self) -> usize {
        self.registered
            .iter()
            .filter(|id| !self.unhealthy.contains(*id))
            .count()
    }

    fn observe(&mut self) {
        self.most_alive = self.most_alive.max(self.alive.len());
        self.fewest_healthy = self.fewest_healthy.min(self.healthy_registered());
    }
}

/// `old` instances alive and registered, healthy.
fn world(old: u32) -> Shared {
    let ids: Vec<String> = (1..=old).map(|n| format!("i-old{n}")).collect();
    let mut world = World {
        alive: ids.iter().cloned().collect(),
        registered: ids,
        log: vec![],
        launched: 0,
        most_alive: 0,
        fewest_healthy: usize::MAX,
        unhealthy: BTreeSet::new(),
        capacity: BTreeMap::new(),
        limit: None,
        statuses: 0,
        health: 0,
        at_launch: vec![],
    };
    world.observe();
    Arc::new(Mutex::new(world))
}

fn aws_error(code: &str, message: &str) -> Error {
    Error::Aws {
        operation: "RunInstances",
        resource: "instances".into(),
        code: code.into(),
        message: message.into(),
    }
}

fn world_instances(world: &Shared) -> MockInstances {
    let mut m = MockInstances::new();
    let w = world.clone();
    m.expect_app_instances()
        .returning(move |_, _| Ok(w.lock().unwrap().alive.iter().map(|i| app(i)).collect()));
    let w = world.clone();
    m.expect_launch().returning(move |spec| {
        assert_eq!(spec.tags[tag::ROLE], tag::ROLE_APP);
        let mut w = w.lock().unwrap();
        let subnet = spec.subnet_id.clone().unwrap();
        let at = (w.statuses, w.health);
        w.at_launch.push(at);
        if let Some(room) = w.capacity.get_mut(&subnet) {
            if *room < spec.count {
                w.log.push(format!("no capacity {subnet}"));
                return Err(aws_error(
                    "InsufficientInstanceCapacity",
                    "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested",
                ));
            }
            *room -= spec.count;
        }
        if let Some(limit) = w.limit
            && w.alive.len() + spec.count as usize > limit
        {
            w.log.push(format!("over the limit {subnet}"));
            return Err(aws_error(
                "InstanceLimitExceeded",
                "You have requested more instances than your current instance limit allows",
            ));
        }
        let ids: Vec<String> = (0..spec.count)
            .map(|_| {
                w.launched += 1;
                format!("i-new{}", w.launched)
            })
            .collect();
        w.alive.extend(ids.iter().cloned());
        w.log.push(format!("launch {subnet} {}", ids.join(",")));
        w.observe();
        Ok(ids)
    });
    let w = world.clone();
    m.expect_statuses().returning(move |ids| {
        let mut w = w.lock().unwrap();
        w.statuses += 1;
        Ok(ids
            .iter()
            .map(|id| InstanceStatus {
                id: id.clone(),
                state: if w.alive.contains(id) {
                    "running"
                } else {
                    "terminated"
                }
                .into(),
                reason: None,
                tags: Tags::new(),
            })
            .collect())
    });
    let w = world.clone();
    m.expect_terminate().returning(move |ids| {
        let mut w = w.lock().unwrap();
        for id in ids {
            assert!(
                !w.registered.contains(id),
                "{id} terminated while registered"
            );
            w.alive.remove(id);
        }
        w.log.push(format!("terminate {}", ids.join(",")));
        w.observe();
        Ok(())
    });
    m
}

fn world_balancer(world: &Shared) -> MockBalancer {
    let mut m = MockBalancer::new();
    m.expect_name().returning(|| "target group tg".into());
    let w = world.clone();
    m.expect_registered().returning(move || {
        let mut w = w.lock().unwrap();
        w.health += 1;
        Ok(w.registered
            .iter()
            .map(|id| {
                let healthy = !w.unhealthy.contains(id);
                TargetHealth {
                    id: id.clone(),
                    healthy,
                    state: if healthy { "healthy" } else { "unhealthy" }.into(),
                }
            })
            .collect())
    });
    let w = world.clone();
    m.expect_register().returning(move |ids| {
        let mut w = w.lock().unwrap();
        w.registered.extend(ids.iter().cloned());
        w.log.push(format!("register {}", ids.join(",")));
        w.observe();
        Ok(())
    });
    let w = world.clone();
    m.expect_deregister().returning(move |ids| {
        let mut w = w.lock().unwrap();
        w.registered.retain(|id| !ids.contains(id));
        w.log.push(format!("deregister {}", ids.join(",")));
        w.observe();
        Ok(())
    });
    m.expect_draining_delay().returning(|| Ok(Duration::ZERO));
    m.expect_reports_draining().returning(|| true);
    m
}

fn surge_plan(count: u32, max_surge: Option<u32>) -> DeployPlan {
    let mut plan = plan(count);
    plan.max_surge = max_surge;
    plan.healthy_for = Duration::from_secs(10);
    plan
}

async fn deploy_in(world: &Shared, plan: &DeployPlan) -> Result<DeployOutcome> {
    let (instances, balancer) = (world_instances(world), world_balancer(world));
    deploy(plan, &instances, &balancer, &Interrupt::never()).await
}

fn world_log(world: &Shared) -> Vec<String> {
    std::mem::take(&mut world.lock().unwrap().log)
}

#[tokio::test(start_paused = true)]
async fn max_surge_brings_the_fleet_up_in_batches_and_never_below_count() {
    let world = world(5);
    let started = tokio::time::Instant::now();
    let out = deploy_in(&world, &surge_plan(5, Some(2))).await.unwrap();
    assert_eq!(
        world_log(&world),
        [
            "launch subnet-a i-new1",
            "launch subnet-b i-new2",
            "register i-new1,i-new2",
            "deregister i-old1,i-old2",
            "terminate i-old1,i-old2",
            "launch subnet-a i-new3",
            "launch subnet-b i-new4",
            "register i-new3,i-new4",
            "deregister i-old3,i-old4",
            "terminate i-old3,i-old4",
            "launch subnet-a i-new5",
            "register i-new5",
            "deregister i-old5",
            "terminate i-old5",
        ]
    );
    let w = world.lock().unwrap();
    assert_eq!(w.most_alive, 7, "count + max_surge at most");
    assert_eq!(w.fewest_healthy, 5, "never fewer than count healthy");
    assert_eq!(
        w.registered,
        ["i-new1", "i-new2", "i-new3", "i-new4", "i-new5"]
    );
    // Per batch, one DescribeInstances (boot) and one health call per
    // tick of the 10 s hold (0, 0.625, 1.875, 4.375, 9.375, 14.375 s: the
    // quick start, then every 5 s): the same for every batch.
    let mut marks = w.at_launch.clone();
    marks.dedup(); // a batch's launches over two subnets are one mark
    marks.push((w.statuses, w.health));
    let per_batch: Vec<(u32, u32)> = marks
        .windows(2)
        .map(|p| (p[1].0 - p[0].0, p[1].1 - p[0].1))
        .collect();
    assert_eq!(per_batch, [(1, 6), (1, 6), (1, 6)]);
    assert_eq!(marks[0], (0, 1), "the inspection's one health call");
    assert_eq!(started.elapsed(), Duration::from_millis(3 * 14_375));
    drop(w);

    assert_eq!(
        out.release.state().instances,
        ["i-new1", "i-new2", "i-new3", "i-new4", "i-new5"]
    );
    assert_eq!(
        out.removed,
        ["i-old1", "i-old2", "i-old3", "i-old4", "i-old5"]
    );
    let phases: Vec<&str> = out.phases.iter().map(|p| p.name.as_str()).collect();
    let batch = |n: u32| {
        ["launch", "boot", "register", "health", "drain", "terminate"]
            .map(|p| format!("batch {n}/3 {p}"))
    };
    let expected: Vec<String> = std::iter::once("inspect".to_string())
        .chain((1..=3).flat_map(batch))
        .collect();
    assert_eq!(phases, expected);
    let health = out
        .phases
        .iter()
        .find(|p| p.name == "batch 2/3 health")
        .unwrap();
    assert_eq!(health.duration, Duration::from_millis(14_375));
}

#[tokio::test(start_paused = true)]
async fn without_max_surge_or_with_one_as_large_as_count_the_fleet_comes_up_at_once() {
    for max_surge in [None, Some(5), Some(9)] {
        let world = world(5);
        deploy_in(&world, &surge_plan(5, max_surge)).await.unwrap();
        let w = world.lock().unwrap();
        assert_eq!(w.most_alive, 10, "{max_surge:?}");
        assert_eq!(
            w.log,
            [
                "launch subnet-a i-new1,i-new2,i-new3",
                "launch subnet-b i-new4,i-new5",
                "register i-new1,i-new2,i-new3,i-new4,i-new5",
                "deregister i-old1,i-old2,i-old3,i-old4,i-old5",
                "terminate i-old1,i-old2,i-old3,i-old4,i-old5",
            ],
            "{max_surge:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_leaves_the_batches_done_serving_and_a_rerun_finishes() {
    let world = world(5);
    world.lock().unwrap().unhealthy.insert("i-new3".into());
    let started = tokio::time::Instant::now();
    let err = deploy_in(&world, &surge_plan(5, Some(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::PartlyDeployed { batch: 2, batches: 3, new: 2, old: 3, undone: 2, cause, .. }
                if matches!(**cause, Error::Timeout { .. })
        ),
        "{err:?}"
    );
    let text = err.to_string();
    for part in [
        "deploy to staging stopped in batch 2/3: timed out after 60s waiting for batch 2/3: 2 new instance(s) to be healthy",
        "1/2 healthy",
        "staging now serves 2 instance(s) of the new release and 3 of the old one (batch 2's 2 new instance(s) were removed)",
        "re-run the deploy to finish it",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert_eq!(err.kind_name(), "partly_deployed");
    assert_eq!(err.kind().exit_code(), 1);
    // Batch 1's hold (held 10 s by the check at 14.375 s) and batch 2's
    // health deadline.
    assert_eq!(started.elapsed(), Duration::from_millis(14_375 + 60_000));
    assert_eq!(
        world_log(&world)[5..],
        [
            "launch subnet-a i-new3",
            "launch subnet-b i-new4",
            "register i-new3,i-new4",
            "deregister i-new3,i-new4",
            "terminate i-new3,i-new4",
        ]
    );
    {
        let w = world.lock().unwrap();
        assert_eq!(
            w.registered,
            ["i-old3", "i-old4", "i-old5", "i-new1", "i-new2"]
        );
        let alive: Vec<&str> = w.alive.iter().map(String::as_str).collect();
        assert_eq!(alive, ["i-new1", "i-new2", "i-old3", "i-old4", "i-old5"]);
        assert_eq!(w.fewest_healthy, 5);
        assert_eq!(w.most_alive, 7);
    }

    // The re-run treats everything serving as old, the new release's
    // two included, and replaces it all.
    world.lock().unwrap().unhealthy.clear();
    let out = deploy_in(&world, &surge_plan(5, Some(2))).await.unwrap();
    let mut removed = out.removed.clone();
    removed.sort();
    assert_eq!(removed, ["i-new1", "i-new2", "i-old3", "i-old4", "i-old5"]);
    assert_eq!(
        out.release.state().instances,
        ["i-new5", "i-new6", "i-new7", "i-new8", "i-new9"]
    );
    let w = world.lock().unwrap();
    assert_eq!(w.registered, out.release.state().instances);
    assert_eq!(w.alive.len(), 5);
    assert_eq!((w.fewest_healthy, w.most_alive), (5, 7));
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_the_first_batch_is_an_ordinary_failed_deploy() {
    let world = world(3);
    world.lock().unwrap().unhealthy.insert("i-new1".into());
    let err = deploy_in(&world, &surge_plan(3, Some(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("batch 1/3: 1 new instance(s)"),
        "{err}"
    );
    assert_eq!(
        world_log(&world),
        [
            "launch subnet-a i-new1",
            "register i-new1",
            "deregister i-new1",
            "terminate i-new1"
        ]
    );
    assert_eq!(
        world.lock().unwrap().registered,
        ["i-old1", "i-old2", "i-old3"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_between_batches_stops_before_the_next_launch() {
    let world = world(4);
    let (instances, balancer) = (world_instances(&world), world_balancer(&world));
    let (trigger, interrupt) = Interrupt::manual();
    let plan = surge_plan(4, Some(2));
    let run = deploy(&plan, &instances, &balancer, &interrupt);
    let fire = async {
        // Batch 1 holds healthy from 0 s to 14.375 s (its first check
        // past 10 s); batch 2 then holds to 28.75 s.
        tokio::time::sleep(Duration::from_secs(20)).await;
        trigger.fire();
    };
    let (result, ()) = tokio::join!(run, fire);
    let err = result.unwrap_err();
    assert!(
        matches!(&err, Error::PartlyDeployed { batch: 2, new: 2, old: 2, undone: 2, cause, .. }
            if matches!(**cause, Error::Interrupted)),
        "{err:?}"
    );
    let w = world.lock().unwrap();
    assert_eq!(w.registered, ["i-old3", "i-old4", "i-new1", "i-new2"]);
    assert_eq!(w.log.last().unwrap(), "terminate i-new3,i-new4");
}

#[tokio::test(start_paused = true)]
async fn before_traffic_tasks_run_once_before_the_first_batch_is_registered() {
    let log = Log::default();
    let old = ["i-old1", "i-old2", "i-old3"];
    let instances = instances(&log, old.iter().map(|i| app(i)).collect(), "running");
    let balancer = balancer(&log, &old, true, Duration::ZERO, true);
    let mut plan = plan(3);
    plan.max_surge = Some(2);
    plan.tasks = vec![task_plan("migrate", "bin/migrate", TaskWhen::BeforeTraffic)];
    let out = deploy(&plan, &instances, &balancer, &Interrupt::never())
        .await
        .unwrap();
    assert_eq!(
        log_of(&log),
        [
            "launch subnet-a i-new1",
            "launch subnet-b i-new2",
            "task migrate on i-task-migrate",
            "terminate i-task-migrate",
            "register i-new1,i-new2",
            "deregister i-old1,i-old2",
            "terminate i-old1,i-old2",
            "launch subnet-a i-new3",
            "register i-new3",
            "deregister i-old3",
            "terminate i-old3",
        ]
    );
    assert_eq!(out.tasks.len(), 1);
    assert!(out.phases.iter().any(|p| p.name == "batch 1/2 tasks"));
}

#[tokio::test(start_paused = true)]
async fn unhealthy_old_instances_leave_first() {
    let world = world(3);
    world.lock().unwrap().unhealthy.insert("i-old3".into());
    deploy_in(&world, &surge_plan(3, Some(1))).await.unwrap();
    let log = world_log(&world);
    let gone: Vec<&String> = log.iter().filter(|l| l.starts_with("deregister")).collect();
    assert_eq!(
        gone,
        [
            "deregister i-old3",
            "deregister i-old1",
            "deregister i-old2"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn no_capacity_in_one_subnet_launches_its_share_in_the_next() {
    let world = world(1);
    world.lock().unwrap().capacity.insert("subnet-a".into(), 0);
    let out = deploy_in(&world, &surge_plan(3, None)).await.unwrap();
    assert_eq!(
        world_log(&world),
        [
            "no capacity subnet-a",
            "launch subnet-b i-new1,i-new2",
            "launch subnet-b i-new3",
            "register i-new1,i-new2,i-new3",
            "deregister i-old1",
            "terminate i-old1",
        ]
    );
    assert_eq!(out.release.state().instances.len(), 3);

    // In batches, a subnet that answered it is not asked again.
    let world = self::world(4);
    world.lock().unwrap().capacity.insert("subnet-a".into(), 0);
    deploy_in(&world, &surge_plan(4, Some(2))).await.unwrap();
    let launches: Vec<String> = world_log(&world)
        .into_iter()
        .filter(|l| l.starts_with("launch") || l.starts_with("no capacity"))
        .collect();
    assert_eq!(
        launches,
        [
            "no capacity subnet-a",
            "launch subnet-b i-new1",
            "launch subnet-b i-new2",
            "launch subnet-b i-new3,i-new4",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn no_capacity_in_any_subnet_fails_the_safe_way() {
    let world = world(2);
    // subnet-b has room for its own share and no more.
    world
        .lock()
        .unwrap()
        .capacity
        .extend([("subnet-a".into(), 0), ("subnet-b".into(), 2)]);
    let err = deploy_in(&world, &surge_plan(3, None)).await.unwrap_err();
    assert!(matches!(err, Error::DeployFailed { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "deploy failed: AWS has no t3.micro capacity in any of staging's subnets right now \
         (subnet-a, subnet-b each answered InsufficientInstanceCapacity); deploy with another \
         instance_type, add subnets in other availability zones, or try again later"
    );
    assert_eq!(
        world_log(&world),
        [
            "no capacity subnet-a",
            "launch subnet-b i-new1,i-new2",
            "no capacity subnet-b",
            "terminate i-new1,i-new2",
        ]
    );
    assert_eq!(world.lock().unwrap().registered, ["i-old1", "i-old2"]);
}

#[tokio::test(start_paused = true)]
async fn the_account_quota_fails_at_once_and_says_what_to_raise() {
    // Room for 7: two whole fleets of 5 do not fit ...
    let world = world(5);
    world.lock().unwrap().limit = Some(7);
    let err = deploy_in(&world, &surge_plan(5, None)).await.unwrap_err();
    assert!(matches!(err, Error::DeployFailed { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "deploy failed: the account's instance quota is reached (InstanceLimitExceeded: 3 more \
         t3.micro in subnet-a would exceed it); raise the account's Running On-Demand instances \
         (vCPU) quota for Standard (A, C, D, H, I, M, R, T, Z) instances in us-east-1 via Service \
         Quotas, or set max_surge to bring the fleet up in smaller batches"
    );
    assert!(!err.to_string().contains("You have requested"), "{err}");
    assert_eq!(world_log(&world), ["over the limit subnet-a"]);
    assert_eq!(world.lock().unwrap().alive.len(), 5);

    // ... but batches of 2 do.
    deploy_in(&world, &surge_plan(5, Some(2))).await.unwrap();
    assert_eq!(world.lock().unwrap().most_alive, 7);

    // With room for 6, a batch of 2 is one too many: the message says so.
    let world = self::world(5);
    world.lock().unwrap().limit = Some(6);
    let err = deploy_in(&world, &surge_plan(5, Some(2)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("or lower max_surge (now 2) to bring the fleet up in smaller batches"),
        "{err}"
    );
    assert_eq!(
        world_log(&world),
        [
            "launch subnet-a i-new1",
            "over the limit subnet-b",
            "terminate i-new1"
        ]
    );
}

#[test]
fn the_quota_of_each_family() {
    assert_eq!(
        launched::quota_family("m6i.large"),
        "Standard (A, C, D, H, I, M, R, T, Z)"
    );
    assert_eq!(launched::quota_family("inf2.xlarge"), "Inf");
    assert_eq!(launched::quota_family("g5.xlarge"), "G and VT");
    assert_eq!(launched::quota_family("p4d.24xlarge"), "P");
    assert_eq!(launched::quota_family("x2idn.metal"), "X");
    assert_eq!(launched::quota_family("u-6tb1.metal"), "High Memory");
}
