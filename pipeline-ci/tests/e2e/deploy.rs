//! `pipeline deploy` against moto, checked through the ELB, ELBv2, EC2 and
//! Auto Scaling APIs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pipeline_fixtures::{
    Balancers, BuilderBehaviour, Guest, guest, seed_auto_scaling_group, seed_balancers,
    spawn_broken_app,
};

use crate::support::{Env, Kind, SHA, SHA2, eventually, healthy, healthy_with, registered};

/// A world with balancers, both commits baked, and the config written.
async fn baked(count: u32, health_timeout: &str) -> (Env, Balancers, Guest) {
    let env = Env::new().await;
    let balancers = seed_balancers(&env.sdk, &env.world, "shop", 1).await;
    let guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    env.write_config(&env.deploy_config(&balancers, count, health_timeout));
    env.build_all(&[SHA, SHA2]).await;
    (env, balancers, guest)
}

async fn swap_keeps_n_healthy(kind: Kind) {
    let (env, balancers, _guest) = baked(3, "20s").await;
    let name = kind.env();

    env.ok(&["deploy", "--env", name, "--commit", SHA, "--output", "json"])
        .await;
    let a = env.live_instances(name, SHA).await;
    assert_eq!(a.len(), 3);
    assert_eq!(healthy(&env, &balancers, kind).await, a);

    // Sample the balancer on every round trip while B replaces A.
    let stop = Arc::new(AtomicBool::new(false));
    let min_healthy = Arc::new(AtomicUsize::new(usize::MAX));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, min_healthy, samples) = (stop.clone(), min_healthy.clone(), samples.clone());
        let sdk = env.sdk.clone();
        let balancers = balancers.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = healthy_with(&sdk, &balancers, kind).await.len();
                min_healthy.fetch_min(n, Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let second = env
        .pipeline(&[
            "deploy", "--env", name, "--commit", SHA2, "--output", "json",
        ])
        .await;
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    assert_eq!(second.code, 0, "{second:#?}");
    let out = second.json();
    assert_eq!(out["env"], name);
    assert_eq!(out["commit"], SHA2);
    let mut removed: Vec<String> = serde_json::from_value(out["removed"].clone()).unwrap();
    removed.sort();
    assert_eq!(removed, a);
    for phase in ["launch", "boot", "register", "health", "drain", "terminate"] {
        assert!(out["phases"][phase].is_number(), "{phase}: {out}");
    }

    // Through the API: exactly N of B healthy, none of A running.
    let b = env.live_instances(name, SHA2).await;
    assert_eq!(b.len(), 3);
    assert_eq!(healthy(&env, &balancers, kind).await, b);
    assert!(env.live_instances(name, SHA).await.is_empty());
    let registered = registered(&env, &balancers, kind).await;
    assert!(registered.iter().all(|id| b.contains(id)), "{registered:?}");
    // Spread over both subnets, tagged at creation.
    let described = env
        .ec2
        .describe_instances()
        .set_instance_ids(Some(b.clone()))
        .send()
        .await
        .unwrap();
    let mut per_subnet: BTreeMap<String, usize> = BTreeMap::new();
    for i in described.reservations().iter().flat_map(|r| r.instances()) {
        *per_subnet
            .entry(i.subnet_id().unwrap().to_string())
            .or_default() += 1;
        let tags: BTreeMap<&str, &str> = i
            .tags()
            .iter()
            .map(|t| (t.key().unwrap(), t.value().unwrap()))
            .collect();
        assert_eq!(tags["pipeline:role"], "app");
        assert_eq!(tags["pipeline:env"], name);
        assert!(tags["pipeline:run"].starts_with("20"));
    }
    let mut spread: Vec<usize> = per_subnet.values().copied().collect();
    spread.sort();
    assert_eq!(spread, [1, 2]);

    let sampled = samples.load(Ordering::SeqCst);
    assert!(sampled >= 3, "the sampler ran {sampled} times");
    assert!(
        min_healthy.load(Ordering::SeqCst) >= 3,
        "healthy dipped to {}",
        min_healthy.load(Ordering::SeqCst)
    );
    eprintln!("{kind:?}: {sampled} samples during the swap, never fewer than 3 healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_elb_swap_keeps_n_healthy() {
    swap_keeps_n_healthy(Kind::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_group_swap_keeps_n_healthy() {
    swap_keeps_n_healthy(Kind::TargetGroup).await;
}

async fn never_healthy_leaves_the_old_fleet(kind: Kind) {
    let (env, balancers, _guest) = baked(2, "3s").await;
    let name = kind.env();
    env.ok(&["deploy", "--env", name, "--commit", SHA]).await;
    let a = env.live_instances(name, SHA).await;

    let broken = spawn_broken_app(&env.sdk, SHA2);
    let run = env
        .pipeline(&["deploy", "--env", name, "--commit", SHA2])
        .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
    assert!(
        run.stderr.contains("the old fleet keeps serving"),
        "{}",
        run.stderr
    );
    assert!(!broken.stopped().is_empty(), "the broken app was exercised");

    // The old fleet is untouched and still registered and healthy.
    assert_eq!(env.live_instances(name, SHA).await, a);
    assert_eq!(healthy(&env, &balancers, kind).await, a);
    // No new instance left running.
    let registered = registered(&env, &balancers, kind).await;
    assert!(registered.iter().all(|id| a.contains(id)), "{registered:?}");
    assert!(env.live_instances(name, SHA2).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_elb_never_healthy_leaves_the_old_fleet() {
    never_healthy_leaves_the_old_fleet(Kind::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_group_never_healthy_leaves_the_old_fleet() {
    never_healthy_leaves_the_old_fleet(Kind::TargetGroup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_deploy_is_converged_by_the_next_run() {
    let (env, balancers, _guest) = baked(2, "20s").await;
    let kind = Kind::TargetGroup;
    let name = kind.env();
    env.ok(&["deploy", "--env", name, "--commit", SHA]).await;

    // kill -9 once the new fleet exists (after launch; maybe after register).
    let broken = spawn_broken_app(&env.sdk, "never-matches");
    let child = env.spawn(&["deploy", "--env", name, "--commit", SHA2]);
    eventually("the new fleet to launch", || async {
        !env.live_instances(name, SHA2).await.is_empty()
    })
    .await;
    child.signal("KILL");
    let killed = child.wait().await;
    assert_ne!(killed.code, 0);
    drop(broken);

    // Its lock stays until it expires (lock_ttl 2s); the rerun waits, takes
    // it over, and records the takeover.
    let rerun = env
        .ok(&[
            "deploy",
            "--env",
            name,
            "--commit",
            SHA2,
            "--output",
            "json",
            "--lock-timeout",
            "30s",
        ])
        .await;
    assert!(
        rerun.stderr.contains("took over the expired lock of prod1"),
        "{rerun:#?}"
    );
    let b = env.live_instances(name, SHA2).await;
    assert_eq!(b.len(), 2, "exactly N instances of B: {b:?}");
    assert_eq!(healthy(&env, &balancers, kind).await, b);
    assert!(env.live_instances(name, SHA).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_what_it_cannot_do() {
    let env = Env::new().await;
    let balancers = seed_balancers(&env.sdk, &env.world, "shop", 1).await;
    env.write_config(&env.deploy_config(&balancers, 1, "5s"));
    env.moto.start_recording();

    let unknown = env
        .pipeline(&["deploy", "--env", "qa", "--commit", SHA])
        .await;
    assert_eq!(unknown.code, 2, "{unknown:#?}");
    assert!(
        unknown.stderr.contains("known: prod1, staging"),
        "{}",
        unknown.stderr
    );

    let not_built = env
        .pipeline(&["deploy", "--env", "staging", "--commit", SHA])
        .await;
    assert_eq!(not_built.code, 1, "{not_built:#?}");
    assert!(
        not_built.stderr.contains("was never built"),
        "{}",
        not_built.stderr
    );

    let bad_ami = env
        .pipeline(&["deploy", "--env", "staging", "--ami", "bogus"])
        .await;
    assert_eq!(bad_ami.code, 2, "{bad_ami:#?}");
    env.moto.stop_recording();
    // Nothing changed in AWS: the only writes are the state bucket's (the
    // failed deploy's lock and ledger entry).
    let mutating: Vec<_> = env
        .aws_calls()
        .into_iter()
        .filter(|c| c.is_mutating())
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
}

/// The calls of one deploy of `n` instances, by action.
async fn deploy_calls(n: u32) -> BTreeMap<String, usize> {
    let (env, _balancers, _guest) = baked(n, "60s").await;
    let name = Kind::TargetGroup.env();
    env.ok(&["deploy", "--env", name, "--commit", SHA]).await;
    env.moto.reset_recording();
    env.moto.start_recording();
    let run = env
        .pipeline(&["deploy", "--env", name, "--commit", SHA2])
        .await;
    env.moto.stop_recording();
    assert_eq!(run.code, 0, "{run:#?}");
    let mut by_action = BTreeMap::new();
    for call in env.pipeline_calls() {
        // The state bucket's keys hold run ids and times: count by method.
        let action = match call.service.as_str() {
            "s3" => format!("s3 {}", call.method),
            _ => call.action,
        };
        *by_action.entry(action).or_default() += 1;
    }
    by_action
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_calls_are_flat_in_fleet_size() {
    let mut rows = Vec::new();
    for n in [1, 10, 50] {
        rows.push((n, deploy_calls(n).await));
    }
    // Apart from polling, and one RunInstances per subnet used (two subnets,
    // so one call for a single instance), the calls are the same for any N.
    let not_polling = |calls: &BTreeMap<String, usize>| -> BTreeMap<String, usize> {
        calls
            .iter()
            .filter(|(a, _)| {
                // The lock's heartbeat PUTs go with time, not with N.
                !matches!(
                    a.as_str(),
                    "DescribeInstances" | "DescribeTargetHealth" | "RunInstances" | "s3 PUT"
                )
            })
            .map(|(a, c)| (a.clone(), *c))
            .collect()
    };
    for (n, calls) in &rows {
        eprintln!(
            "deploy of {n}: {} calls {calls:?}",
            calls.values().sum::<usize>()
        );
        assert_eq!(not_polling(calls), not_polling(&rows[0].1), "n = {n}");
        assert_eq!(calls["RunInstances"], (*n as usize).min(2), "n = {n}");
        // Polls: a few per wait, never one per instance.
        let polls = calls.get("DescribeInstances").copied().unwrap_or(0)
            + calls.get("DescribeTargetHealth").copied().unwrap_or(0);
        assert!(polls <= 12, "n = {n}: {polls} polls");
    }
}

/// The group's instances (sorted), desired capacity, maximum, launch
/// template version and suspended processes, through the Auto Scaling API.
async fn group_state(env: &Env, name: &str) -> (Vec<String>, i32, i32, String, Vec<String>) {
    let out = aws_sdk_autoscaling::Client::new(&env.sdk)
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .unwrap();
    let group = &out.auto_scaling_groups()[0];
    let mut ids: Vec<String> = group
        .instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect();
    ids.sort();
    let suspended = group
        .suspended_processes()
        .iter()
        .filter_map(|p| p.process_name().map(str::to_string))
        .collect();
    (
        ids,
        group.desired_capacity().unwrap(),
        group.max_size().unwrap(),
        group
            .launch_template()
            .and_then(|t| t.version())
            .unwrap_or_default()
            .to_string(),
        suspended,
    )
}

/// Both commits baked; env `web` (2 instances, healthy for `healthy_for`)
/// deploys through an empty Auto Scaling group of maximum 2 behind its own
/// target group. Returns the env, that balancer, the group's name.
async fn group_world(healthy_for: &str) -> (Env, Balancers, String, Guest) {
    let (env, _shop, guest) = baked(2, "20s").await;
    let web = seed_balancers(&env.sdk, &env.world, "web", 1).await;
    let group =
        seed_auto_scaling_group(&env.sdk, &env.world, "shop-asg", &web.target_group_arn, 2).await;
    let config = format!(
        "{}  web:
    count: 2
    auto_scaling_group: {group}
    load_balancer: {{ target_group: \"{}\" }}
    health_timeout: 5s
    healthy_for: {healthy_for}
    drain_timeout: 5s
    poll_interval: 100ms
",
        env.deploy_config(&web, 2, "20s"),
        web.target_group_arn
    );
    env.write_config(&config);
    (env, web, group, guest)
}

/// The group's `pipeline:resting-max` tag, through the Auto Scaling API.
async fn resting_max_tag(env: &Env, name: &str) -> Option<String> {
    aws_sdk_autoscaling::Client::new(&env.sdk)
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()[0]
        .tags()
        .iter()
        .find(|t| t.key() == Some("pipeline:resting-max"))
        .and_then(|t| t.value().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_scaling_group_swap_keeps_n_healthy_and_restores_the_group() {
    let (env, web, group, _guest) = group_world("300ms").await;

    // First deploy into the empty group.
    env.ok(&["deploy", "--env", "web", "--commit", SHA]).await;
    let a = env.live_instances("web", SHA).await;
    assert_eq!(a.len(), 2, "the group's instances carry the release tags");
    let (members, desired, max, _, suspended) = group_state(&env, &group).await;
    assert_eq!((members.clone(), desired, max), (a.clone(), 2, 2));
    assert!(suspended.is_empty(), "{suspended:?}");
    assert_eq!(healthy(&env, &web, Kind::TargetGroup).await, a);

    // B replaces A; a sampler polls the target group every round trip.
    let stop = Arc::new(AtomicBool::new(false));
    let min_healthy = Arc::new(AtomicUsize::new(usize::MAX));
    let sampler = {
        let (stop, min_healthy) = (stop.clone(), min_healthy.clone());
        let (sdk, web) = (env.sdk.clone(), web.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = healthy_with(&sdk, &web, Kind::TargetGroup).await.len();
                min_healthy.fetch_min(n, Ordering::SeqCst);
            }
        })
    };
    let second = env
        .pipeline(&["deploy", "--env", "web", "--commit", SHA2])
        .await;
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    assert_eq!(second.code, 0, "{second:#?}");
    assert!(
        min_healthy.load(Ordering::SeqCst) >= 2,
        "healthy dipped to {}",
        min_healthy.load(Ordering::SeqCst)
    );
    let b = env.live_instances("web", SHA2).await;
    assert_eq!(b.len(), 2);
    assert!(env.live_instances("web", SHA).await.is_empty());
    let (members, desired, max, version_b, suspended) = group_state(&env, &group).await;
    assert_eq!((members, desired, max), (b.clone(), 2, 2));
    assert!(suspended.is_empty(), "{suspended:?}");
    assert_eq!(healthy(&env, &web, Kind::TargetGroup).await, b);

    // A release that never gets healthy: the group is put back as it was.
    let broken = spawn_broken_app(&env.sdk, SHA);
    let third = env
        .pipeline(&["deploy", "--env", "web", "--commit", SHA])
        .await;
    assert_eq!(third.code, 1, "{third:#?}");
    assert!(!broken.stopped().is_empty());
    let (members, desired, max, version, suspended) = group_state(&env, &group).await;
    assert_eq!((members, desired, max), (b.clone(), 2, 2));
    assert_eq!(version, version_b, "launch template version restored");
    assert!(suspended.is_empty(), "{suspended:?}");
    assert_eq!(healthy(&env, &web, Kind::TargetGroup).await, b);
    assert!(env.live_instances("web", SHA).await.is_empty());
}

/// A DetachInstances applied but whose answer was lost: the SDK sends it
/// again, Auto Scaling refuses it (the old instances are no longer in the
/// group), and the deploy reads the group and goes on; the group ends with
/// the new fleet at its resting size, as an uninterrupted deploy leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detach_whose_answer_was_lost_is_not_done_twice() {
    let (mut env, web, group, _guest) = group_world("300ms").await;
    env.ok(&["deploy", "--env", "web", "--commit", SHA]).await;
    env.meet_aws(serde_json::json!({
        "faults": {"lose_first": {"autoscaling:DetachInstances": 1}}
    }));
    let run = env.ok(&["deploy", "--env", "web", "--commit", SHA2]).await;
    let stats = env.aws.as_ref().unwrap().stats();
    assert_eq!(
        stats["faults"]["lost"]["autoscaling:DetachInstances"], 1,
        "{stats:#}"
    );
    assert!(
        stats["requests"]["autoscaling:DetachInstances"].as_u64() >= Some(2),
        "the SDK sent it again: {stats:#}"
    );
    assert!(run.stderr.contains("already detached"), "{}", run.stderr);
    let b = env.live_instances("web", SHA2).await;
    assert_eq!(b.len(), 2);
    assert!(env.live_instances("web", SHA).await.is_empty());
    let (members, desired, max, _, suspended) = group_state(&env, &group).await;
    assert_eq!((members, desired, max), (b.clone(), 2, 2));
    assert!(suspended.is_empty(), "{suspended:?}");
    assert_eq!(healthy(&env, &web, Kind::TargetGroup).await, b);
}

/// kill -9 once the group was raised (the old fleet and the new in it,
/// its maximum up, its processes suspended): the next deploy finishes the
/// job and leaves the group as an uninterrupted deploy does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_with_the_group_raised_is_finished_by_the_next() {
    let (env, web, group, _guest) = group_world("3s").await;
    env.ok(&["deploy", "--env", "web", "--commit", SHA]).await;
    assert_eq!(resting_max_tag(&env, &group).await, None);

    let child = env.spawn(&["deploy", "--env", "web", "--commit", SHA2]);
    eventually("the group to be raised", || async {
        group_state(&env, &group).await.1 == 4
    })
    .await;
    child.signal("KILL");
    assert_ne!(child.wait().await.code, 0);
    let (members, desired, max, _, suspended) = group_state(&env, &group).await;
    assert_eq!((members.len(), desired, max), (4, 4, 4), "left raised");
    assert!(!suspended.is_empty());
    assert_eq!(resting_max_tag(&env, &group).await.as_deref(), Some("2"));

    env.ok(&[
        "deploy",
        "--env",
        "web",
        "--commit",
        SHA2,
        "--lock-timeout",
        "30s",
    ])
    .await;
    let b = env.live_instances("web", SHA2).await;
    assert_eq!(b.len(), 2, "exactly N: {b:?}");
    assert!(env.live_instances("web", SHA).await.is_empty());
    assert_eq!(healthy(&env, &web, Kind::TargetGroup).await, b);
    let (members, desired, max, _, suspended) = group_state(&env, &group).await;
    assert_eq!((members, desired, max), (b, 2, 2), "the group as it rests");
    assert!(suspended.is_empty(), "{suspended:?}");
    assert_eq!(resting_max_tag(&env, &group).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_deploy_keeps_the_old_fleet_serving() {
    let (env, balancers, _guest) = baked(2, "30s").await;
    let kind = Kind::Classic;
    let name = kind.env();
    env.ok(&["deploy", "--env", name, "--commit", SHA]).await;
    let a = env.live_instances(name, SHA).await;

    // B must stay healthy for 20 s, so the deploy sits in its health wait
    // (an instance that stops fails the deploy at once instead).
    env.write_config(
        &env.deploy_config(&balancers, 2, "30s")
            .replace("healthy_for: 300ms", "healthy_for: 20s"),
    );
    let child = env.spawn(&["deploy", "--env", name, "--commit", SHA2]);
    eventually("the new fleet to launch", || async {
        !env.live_instances(name, SHA2).await.is_empty()
    })
    .await;
    child.signal("INT");
    let run = child.wait().await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert!(run.elapsed < Duration::from_secs(20), "{:?}", run.elapsed);
    assert_eq!(env.live_instances(name, SHA).await, a);
    assert_eq!(healthy(&env, &balancers, kind).await, a);
    assert!(env.live_instances(name, SHA2).await.is_empty());
    assert!(
        env.state_keys("locks/").await.is_empty(),
        "Ctrl-C releases the lock"
    );
    let last = env.ledger().await.pop().unwrap();
    assert_eq!(
        (&last["stage"], &last["outcome"]),
        (&"deploy".into(), &"failed".into())
    );
    assert!(
        last["error"].as_str().unwrap().contains("interrupted"),
        "{last:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_stops_during_the_health_wait_fails_the_deploy_at_once() {
    let (env, balancers, _guest) = baked(2, "30s").await;
    let kind = Kind::TargetGroup;
    let name = kind.env();
    env.ok(&["deploy", "--env", name, "--commit", SHA]).await;
    let a = env.live_instances(name, SHA).await;
    // Healthy for 20 s: a long window in which one new instance stops.
    let config = env
        .deploy_config(&balancers, 2, "30s")
        .replace("healthy_for: 300ms", "healthy_for: 20s");
    env.write_config(&config);

    let child = env.spawn(&["deploy", "--env", name, "--commit", SHA2]);
    eventually("the new fleet to be healthy in the balancer", || async {
        let new = env.live_instances(name, SHA2).await;
        let healthy = healthy(&env, &balancers, kind).await;
        new.len() == 2 && new.iter().all(|i| healthy.contains(i))
    })
    .await;
    let new = env.live_instances(name, SHA2).await;
    env.ec2
        .stop_instances()
        .instance_ids(&new[0])
        .send()
        .await
        .unwrap();
    let stopped = Instant::now();
    let run = child.wait().await;
    // Two poll intervals are 200 ms; the process's own start and exit add
    // a little, far below the 20 s of healthy_for and the 30 s deadline.
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .contains(&format!("new instance {} is stopped", new[0])),
        "{}",
        run.stderr
    );
    assert_eq!(
        healthy(&env, &balancers, kind).await,
        a,
        "the old fleet serves"
    );
    assert!(env.live_instances(name, SHA2).await.is_empty());
}
