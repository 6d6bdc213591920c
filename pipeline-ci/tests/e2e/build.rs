//! `pipeline build` against moto, checked through the EC2 API.

use std::collections::BTreeMap;
use std::time::Duration;

use pipeline_fixtures::{BuilderBehaviour, guest};

use crate::support::{Env, SHA, SHA2, eventually};

fn tags(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect()
}

fn assert_release_tags(tags: &BTreeMap<String, String>, commit: &str) {
    assert_eq!(tags["pipeline:app"], "shop", "{tags:?}");
    assert_eq!(tags["pipeline:commit"], commit, "{tags:?}");
    assert_eq!(tags["pipeline:role"], "app", "{tags:?}");
    assert!(tags["pipeline:run"].starts_with("20"), "{tags:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_bakes_once_and_reuses_with_one_call() {
    let env = Env::new().await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(300)),
    );
    env.write_config(&env.config(""));

    env.moto.start_recording();
    let first = env
        .ok(&[
            "build",
            "--skip-test-gate",
            "--commit",
            SHA,
            "--output",
            "json",
        ])
        .await;
    let out = first.json();
    assert_eq!(out["reused"], false);
    assert_eq!(out["commit"], SHA);
    let ami = out["ami"].as_str().unwrap().to_string();
    let bake_calls = env.aws_calls();
    env.moto.stop_recording();

    // Through the API: one AMI, tagged at creation, its snapshots too.
    let images = env.release_images("us-east-1", SHA).await;
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(image.image_id(), Some(ami.as_str()));
    assert!(
        image
            .name()
            .unwrap()
            .starts_with(&format!("shop-{}-20", &SHA[..12]))
    );
    assert_release_tags(&tags(image.tags()), SHA);
    let snapshots: Vec<String> = image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string))
        .collect();
    assert!(!snapshots.is_empty());
    let described = env
        .ec2
        .describe_snapshots()
        .set_snapshot_ids(Some(snapshots.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(described.snapshots().len(), snapshots.len());
    for snapshot in described.snapshots() {
        assert_release_tags(&tags(snapshot.tags()), SHA);
    }
    // The builder is gone.
    let builders = env.builders().await;
    assert_eq!(builders.len(), 1, "{builders:?}");
    assert!(
        builders.iter().all(|(_, state)| state == "terminated"),
        "{builders:?}"
    );

    // A fresh bake: no CreateTags (tags at creation), one of each mutation.
    let actions: Vec<&str> = bake_calls.iter().map(|c| c.action.as_str()).collect();
    let count = |a: &str| actions.iter().filter(|x| **x == a).count();
    assert_eq!(count("RunInstances"), 1, "{actions:?}");
    assert_eq!(count("CreateImage"), 1, "{actions:?}");
    assert_eq!(count("TerminateInstances"), 1, "{actions:?}");
    assert_eq!(count("CreateTags"), 0, "{actions:?}");
    let polls = count("DescribeInstances") + count("DescribeImages");
    assert_eq!(actions.len(), polls + 4, "{actions:?}"); // + GetConsoleOutput
    eprintln!("fresh bake: {} calls: {actions:?}", actions.len());

    // The second build for the commit: one Describe, nothing created.
    env.moto.reset_recording();
    env.moto.start_recording();
    let second = env
        .pipeline(&[
            "build",
            "--skip-test-gate",
            "--commit",
            SHA,
            "--output",
            "json",
        ])
        .await;
    env.moto.stop_recording();
    assert_eq!(second.code, 0, "{second:#?}");
    assert_eq!(second.json()["reused"], true);
    assert_eq!(second.json()["ami"], ami.as_str());
    let calls = env.aws_calls();
    let actions: Vec<&str> = calls.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(actions, ["DescribeImages"]);
    assert_eq!(env.release_images("us-east-1", SHA).await.len(), 1);
    assert_eq!(env.builders().await.len(), 1);

    // Text output is just the AMI id.
    let text = env
        .ok(&["build", "--skip-test-gate", "--commit", SHA])
        .await;
    assert_eq!(text.stdout.trim(), ami);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_that_never_powers_off_times_out_and_leaves_nothing() {
    let env = Env::new().await;
    let _guest = guest::spawn(&env.sdk, BuilderBehaviour::NeverPowerOff);
    let config = env
        .config("")
        .replace("timeout: 30s\n  image", "timeout: 2s\n  image");
    env.write_config(&config);

    let run = env
        .pipeline(&["build", "--skip-test-gate", "--commit", SHA])
        .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
    assert!(
        run.stderr
            .contains("timed out after 2s waiting for builder"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("console"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{run:#?}");

    let builders = env.builders().await;
    assert_eq!(builders.len(), 1, "{builders:?}");
    assert_eq!(builders[0].1, "terminated");
    assert!(env.release_images("us-east-1", SHA).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_bake_terminates_the_builder() {
    let env = Env::new().await;
    let _guest = guest::spawn(&env.sdk, BuilderBehaviour::NeverPowerOff);
    env.write_config(&env.config(""));

    let child = env.spawn(&[
        "build",
        "--skip-test-gate",
        "--commit",
        SHA2,
        "--output",
        "json",
    ]);
    eventually("the builder to launch", || async {
        !env.builders().await.is_empty()
    })
    .await;
    child.signal("INT");
    let run = child.wait().await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert_eq!(run.json()["exit_code"], 1);

    let builders = env.builders().await;
    assert!(
        builders.iter().all(|(_, s)| s == "terminated"),
        "{builders:?}"
    );
    assert!(env.release_images("us-east-1", SHA2).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_from_a_cancelled_ci_job_cleans_up_too() {
    let env = Env::new().await;
    let _guest = guest::spawn(&env.sdk, BuilderBehaviour::NeverPowerOff);
    env.write_config(&env.config(""));

    let child = env.spawn(&["build", "--skip-test-gate", "--commit", SHA]);
    eventually("the builder to launch", || async {
        !env.builders().await.is_empty()
    })
    .await;
    child.signal("TERM");
    let run = child.wait().await;
    assert_eq!(run.code, 1, "{run:#?}");
    let builders = env.builders().await;
    assert!(
        builders.iter().all(|(_, s)| s == "terminated"),
        "{builders:?}"
    );
    assert!(
        env.state_keys("locks/").await.is_empty(),
        "SIGTERM releases the lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_to_other_regions_and_shares_with_accounts() {
    let env = Env::new().await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(100)),
    );
    env.write_config(&env.config("copy_to_regions: [us-west-2]\nshare_with: [\"123456789012\"]"));

    let run = env
        .ok(&[
            "build",
            "--skip-test-gate",
            "--commit",
            SHA,
            "--output",
            "json",
        ])
        .await;
    let out = run.json();
    let copy_id = out["copies"]["us-west-2"].as_str().unwrap().to_string();

    let copies = env.release_images("us-west-2", SHA).await;
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].image_id(), Some(copy_id.as_str()));
    assert_release_tags(&tags(copies[0].tags()), SHA);

    for (region, id) in [
        ("us-east-1", out["ami"].as_str().unwrap()),
        ("us-west-2", &copy_id),
    ] {
        let perms = env
            .client_in(region)
            .describe_image_attribute()
            .image_id(id)
            .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .unwrap();
        let users: Vec<&str> = perms
            .launch_permissions()
            .iter()
            .filter_map(|p| p.user_id())
            .collect();
        assert_eq!(users, ["123456789012"], "{region}");
    }

    // A re-run converges without copying again.
    let again = env
        .ok(&[
            "build",
            "--skip-test-gate",
            "--commit",
            SHA,
            "--output",
            "json",
        ])
        .await;
    assert_eq!(again.json()["copies"]["us-west-2"], copy_id.as_str());
    assert_eq!(env.release_images("us-west-2", SHA).await.len(), 1);
}
