//! Release tasks against moto: a task that succeeds runs before traffic and
//! by hand; a task that fails aborts the deploy with the old fleet serving.
//! The guest simulator plays the task's script: it tags the task instance
//! with the exit status and powers it off.

use std::time::Duration;

use aws_sdk_ec2::types::Instance;
use pipeline_fixtures::{Balancers, BuilderBehaviour, guest, seed_balancers, spawn_task_runner};

use crate::support::{Env, Kind, SHA, SHA2, classic, filter, healthy};

/// A staging env behind the Classic ELB with one `before_traffic` task.
fn config(env: &Env, balancers: &Balancers) -> String {
    format!(
        "{}environments:\n{}    settings: {{ DATABASE_URL: \"postgres://db/shop\" }}\n    tasks:\n      migrate:\n        command: bin/rails db:migrate\n        timeout: 20s\n",
        env.config(""),
        env.environment("staging", &classic(balancers)),
    )
}

/// Task instances of the app, any state.
async fn task_instances(env: &Env) -> Vec<Instance> {
    env.ec2
        .describe_instances()
        .filters(filter("tag:pipeline:app", "shop"))
        .filters(filter("tag:pipeline:role", "task"))
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}

fn tag<'a>(instance: &'a Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn state(instance: &Instance) -> &str {
    instance.state().and_then(|s| s.name()).unwrap().as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_before_traffic_from_the_release_ami_and_by_hand() {
    let env = Env::new().await;
    let balancers = seed_balancers(&env.sdk, &env.world, "shop", 1).await;
    let _builder = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let runner = spawn_task_runner(&env.sdk, 0, Duration::from_millis(300));
    env.write_config(&config(&env, &balancers));
    let build = env
        .ok(&[
            "build",
            "--skip-test-gate",
            "--commit",
            SHA,
            "--output",
            "json",
        ])
        .await;
    let ami = build.json()["ami"].as_str().unwrap().to_string();

    env.moto.start_recording();
    let deploy = env
        .ok(&[
            "deploy", "--env", "staging", "--commit", SHA, "--output", "json",
        ])
        .await;
    assert_eq!(deploy.json()["tasks"][0]["name"], "migrate");

    // Through the API: one task instance, from the release's AMI, with the
    // environment's settings, tagged, reported 0, terminated.
    let tasks = task_instances(&env).await;
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    let task = &tasks[0];
    assert_eq!(task.image_id(), Some(ami.as_str()));
    assert_eq!(tag(task, "pipeline:task"), Some("migrate"));
    assert_eq!(tag(task, "pipeline:env"), Some("staging"));
    assert_eq!(tag(task, "pipeline:commit"), Some(SHA));
    assert_eq!(tag(task, "pipeline:task-exit"), Some("0"));
    assert_eq!(state(task), "terminated");
    let user_data = env
        .ec2
        .describe_instance_attribute()
        .instance_id(task.instance_id().unwrap())
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = user_data.user_data().and_then(|u| u.value()).unwrap();
    use base64::Engine as _;
    let script = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    assert!(
        script.contains("DATABASE_URL='postgres://db/shop'"),
        "{script}"
    );
    assert!(script.contains("bin/rails db:migrate"), "{script}");

    // Before traffic: the task instance powered off before the new fleet
    // was registered with the balancer.
    let calls = env.moto.calls();
    let position = |pred: &dyn Fn(&pipeline_fixtures::Call) -> bool| {
        calls.iter().position(pred).expect("call recorded")
    };
    let powered_off = position(&|c| c.made_by("guest-simulator") && c.action == "StopInstances");
    let registered =
        position(&|c| c.made_by("pipeline") && c.action == "RegisterInstancesWithLoadBalancer");
    assert!(
        powered_off < registered,
        "task ended at call {powered_off}, registration at {registered}"
    );
    assert_eq!(
        healthy(&env, &balancers, Kind::Classic).await,
        env.live_instances("staging", SHA).await
    );

    // By hand.
    let by_hand = env
        .ok(&["task", "--env", "staging", "--commit", SHA, "migrate"])
        .await;
    assert!(
        by_hand.stdout.contains("task migrate in staging: ok"),
        "{by_hand:#?}"
    );
    let tasks = task_instances(&env).await;
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| state(t) == "terminated"), "{tasks:#?}");
    assert_eq!(runner.stopped().len(), 2);

    // An unknown task is bad input, before any AWS call.
    let unknown = env
        .pipeline(&["task", "--env", "staging", "--commit", SHA, "seed"])
        .await;
    assert_eq!(unknown.code, 2, "{unknown:#?}");
    assert!(
        unknown.stderr.contains("no task \"seed\"; known: migrate"),
        "{unknown:#?}"
    );

    // The ledger, through S3: the task run by hand, its instance and actor.
    let runs = env.ledger_of("task").await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["outcome"], "succeeded");
    assert_eq!(runs[0]["env"], "staging");
    assert_eq!(runs[0]["commit"], SHA);
    assert_eq!(runs[0]["actor"], "e2e");
    assert_eq!(runs[0]["instances"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_aborts_the_deploy_and_the_old_fleet_keeps_serving() {
    let env = Env::new().await;
    let balancers = seed_balancers(&env.sdk, &env.world, "shop", 1).await;
    let _builder = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    env.write_config(&config(&env, &balancers));
    env.build_all(&[SHA, SHA2]).await;
    let passing = spawn_task_runner(&env.sdk, 0, Duration::from_millis(100));
    env.ok(&["deploy", "--env", "staging", "--commit", SHA])
        .await;
    drop(passing);
    let fleet = env.live_instances("staging", SHA).await;
    assert_eq!(healthy(&env, &balancers, Kind::Classic).await, fleet);

    let _failing = spawn_task_runner(&env.sdk, 3, Duration::from_millis(100));
    let second = env
        .pipeline(&["deploy", "--env", "staging", "--commit", SHA2])
        .await;
    assert_eq!(second.code, 1, "{second:#?}");
    assert!(
        second
            .stderr
            .contains("task migrate failed: `bin/rails db:migrate` exited with status 3"),
        "{second:#?}"
    );
    assert!(
        second.stderr.contains("lines of task migrate's console"),
        "{second:#?}"
    );

    // Through the API: the old fleet serves, nothing of SHA2 runs, every
    // task instance is terminated.
    assert_eq!(healthy(&env, &balancers, Kind::Classic).await, fleet);
    assert_eq!(env.live_instances("staging", SHA).await, fleet);
    assert!(env.live_instances("staging", SHA2).await.is_empty());
    let tasks = task_instances(&env).await;
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| state(t) == "terminated"), "{tasks:#?}");
}

/// kill -9 of `pipeline task` while its instance runs: the next `pipeline
/// task` takes the expired lock over, terminates that instance (found by
/// the killed run's tag) and runs the task once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_task_run_is_cleaned_up_by_the_next() {
    let env = Env::new().await;
    let balancers = seed_balancers(&env.sdk, &env.world, "shop", 1).await;
    let _builder = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let _runner = spawn_task_runner(&env.sdk, 0, Duration::from_secs(3));
    env.write_config(&config(&env, &balancers));
    env.build_all(&[SHA]).await;

    let task = ["task", "--env", "staging", "--commit", SHA, "migrate"];
    let child = env.spawn(&task);
    crate::support::eventually("the task instance to launch", || async {
        !task_instances(&env).await.is_empty()
    })
    .await;
    child.signal("KILL");
    assert_ne!(child.wait().await.code, 0);
    let killed = task_instances(&env).await;
    assert_eq!(killed.len(), 1);
    assert_ne!(state(&killed[0]), "terminated");

    let rerun = env
        .pipeline(&[&task[..], &["--lock-timeout", "30s"]].concat())
        .await;
    assert_eq!(rerun.code, 0, "{rerun:#?}");
    let tasks = task_instances(&env).await;
    assert_eq!(tasks.len(), 2, "the killed run's and the rerun's");
    assert!(
        tasks.iter().all(|t| state(t) == "terminated"),
        "no orphan task instance: {tasks:#?}"
    );
    assert!(env.state_keys("locks/").await.is_empty(), "lock free");
    let runs = env.ledger_of("task").await;
    assert!(
        runs.iter().any(|e| e["outcome"] == "succeeded"
            && e["note"]
                .as_str()
                .is_some_and(|n| n.contains("left by the killed run"))),
        "{runs:#?}"
    );
}
