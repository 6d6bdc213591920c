//! Unit tests of release tasks, through a mock of the Instances port.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::ports::{ImageState, InstanceStatus, MockInstances};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn plan() -> TaskPlan {
    TaskPlan {
        app: "shop".into(),
        env: "prod1".into(),
        name: "migrate".into(),
        command: "bin/rails db:migrate".into(),
        when: TaskWhen::BeforeTraffic,
        shape: InstanceShape {
            instance_type: "t3.small".into(),
            security_groups: vec!["sg-1".into()],
            instance_profile: Some("shop-task".into()),
            key_name: None,
            metadata: Default::default(),
            root_volume: Default::default(),
        },
        subnet: Some("subnet-a".into()),
        settings: "#!/bin/sh\nmkdir -p /etc/pipeline\n".into(),
        poll: Poll {
            interval: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        },
    }
}

fn image() -> Image {
    Image {
        id: "ami-1".into(),
        region: "us-east-1".into(),
        name: "shop".into(),
        state: ImageState::Available,
        created: String::new(),
        tags: Tags::new(),
        snapshot_ids: vec![],
        root_device: None,
    }
}

/// The task instance runs for `running_polls` polls, then is `last` with
/// `tags`; the console reads `console`. Terminations are logged.
fn instances(
    running_polls: u32,
    last: &'static str,
    tags: Tags,
    console: &'static str,
    terminated: &Arc<Mutex<Vec<String>>>,
) -> MockInstances {
    let mut m = MockInstances::new();
    m.expect_launch().times(1).returning(|spec| {
        assert_eq!(spec.tags[tag::ROLE], tag::ROLE_TASK);
        assert_eq!(spec.tags[tag::TASK], "migrate");
        assert_eq!(spec.tags[tag::ENV], "prod1");
        assert_eq!(spec.tags[tag::COMMIT], SHA);
        assert_eq!(spec.image_id, "ami-1");
        assert_eq!(spec.shape.instance_type, "t3.small");
        assert_eq!(spec.subnet_id.as_deref(), Some("subnet-a"));
        assert_eq!(spec.shape.instance_profile.as_deref(), Some("shop-task"));
        assert_eq!(spec.shutdown, ShutdownBehaviour::Stop);
        assert!(spec.user_data.contains("bin/rails db:migrate"));
        Ok(vec!["i-task".into()])
    });
    let polls = AtomicU32::new(0);
    m.expect_statuses().returning(move |ids| {
        assert_eq!(ids, ["i-task".to_string()]);
        let n = polls.fetch_add(1, Ordering::SeqCst);
        Ok(vec![InstanceStatus {
            id: "i-task".into(),
            state: if n < running_polls { "running" } else { last }.into(),
            reason: None,
            tags: if n < running_polls {
                Tags::new()
            } else {
                tags.clone()
            },
        }])
    });
    m.expect_console_output()
        .returning(move |_| Ok(console.to_string()));
    let t = terminated.clone();
    m.expect_terminate().returning(move |ids| {
        t.lock().unwrap().extend(ids.iter().cloned());
        Ok(())
    });
    m
}

async fn run_task(instances: &MockInstances) -> Result<TaskOutcome> {
    run(
        &plan(),
        instances,
        &image(),
        &SHA.parse().unwrap(),
        &RunId::new(),
        &Interrupt::never(),
    )
    .await
}

fn exit_tag(status: &str) -> Tags {
    Tags::from([(EXIT_TAG.to_string(), status.to_string())])
}

#[tokio::test(start_paused = true)]
async fn succeeds_on_exit_tag_zero_and_terminates() {
    let terminated = Arc::default();
    let m = instances(3, "stopped", exit_tag("0"), "", &terminated);
    let started = tokio::time::Instant::now();
    let out = run_task(&m).await.unwrap();
    assert_eq!(out.instance, "i-task");
    // Stopped at the fourth check: 0.625 + 1.25 + 2.5 s (the quick start
    // of a 5 s interval).
    assert_eq!(started.elapsed(), Duration::from_millis(4_375));
    assert_eq!(*terminated.lock().unwrap(), ["i-task"]);
}

#[tokio::test(start_paused = true)]
async fn reads_the_console_when_there_is_no_tag() {
    let terminated = Arc::default();
    let console = "boot\npipeline-task: migrate exit 0\nreboot: Power down\n";
    let m = instances(0, "stopped", Tags::new(), console, &terminated);
    run_task(&m).await.unwrap();
    assert_eq!(*terminated.lock().unwrap(), ["i-task"]);
}

#[tokio::test(start_paused = true)]
async fn a_non_zero_exit_fails_and_still_terminates() {
    let terminated = Arc::default();
    let m = instances(1, "stopped", exit_tag("3"), "boom\n", &terminated);
    let err = run_task(&m).await.unwrap_err();
    assert!(matches!(err, Error::TaskFailed { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "task migrate failed: `bin/rails db:migrate` exited with status 3"
    );
    assert_eq!(*terminated.lock().unwrap(), ["i-task"]);
}

#[tokio::test(start_paused = true)]
async fn the_console_verdict_fails_too() {
    let terminated = Arc::default();
    let console = "pipeline-task: migrate exit 0\nretry\npipeline-task: migrate exit 2\n";
    let m = instances(0, "stopped", Tags::new(), console, &terminated);
    let err = run_task(&m).await.unwrap_err();
    assert!(err.to_string().contains("status 2"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn no_verdict_is_a_failure() {
    let terminated = Arc::default();
    let m = instances(0, "stopped", Tags::new(), "kernel panic\n", &terminated);
    let err = run_task(&m).await.unwrap_err();
    assert!(
        err.to_string().contains("without reporting an exit status"),
        "{err}"
    );
    assert_eq!(*terminated.lock().unwrap(), ["i-task"]);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_never_ends_times_out_and_is_terminated() {
    let terminated = Arc::default();
    let m = instances(u32::MAX, "stopped", Tags::new(), "", &terminated);
    let err = run_task(&m).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("task migrate on i-task"), "{err}");
    assert_eq!(*terminated.lock().unwrap(), ["i-task"]);
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_vanishes_fails_the_task() {
    let terminated = Arc::default();
    let m = instances(1, "terminated", Tags::new(), "", &terminated);
    let err = run_task(&m).await.unwrap_err();
    assert!(err.to_string().contains("went away"), "{err}");
}

#[test]
fn console_exit_reads_the_last_marker_of_this_task() {
    let console = "pipeline-task: other exit 0\npipeline-task: migrate exit 1\n";
    assert_eq!(console_exit("migrate", console).as_deref(), Some("1"));
    assert_eq!(console_exit("other", console).as_deref(), Some("0"));
    assert_eq!(console_exit("seed", console), None);
    assert_eq!(
        console_exit("migrate", "pipeline-task: migrate exit x"),
        None
    );
}

#[test]
fn user_data_loads_settings_runs_reports_and_powers_off() {
    let script = plan().user_data();
    assert!(script.starts_with("#!/bin/sh\nmkdir -p /etc/pipeline\n"));
    let order = [
        ". /etc/pipeline/environment",
        "bin/rails db:migrate",
        "pipeline-task: migrate exit $status",
        "Key=pipeline:task-exit,Value=$status",
        "poweroff",
    ];
    let mut at = 0;
    for needle in order {
        let found = script[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing or out of order in:\n{script}"));
        at += found;
    }
}
