//! Unit tests of the deploy stage's logic, through mocks of the ports.

use std::collections::BTreeMap;
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
    let phases: Vec<&str> = out.phases.iter().map(|p| p.name).collect();
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
    let phases: Vec<&str> = out.phases.iter().map(|p| p.name).collect();
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
