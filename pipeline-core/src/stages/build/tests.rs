//! Unit tests of the build stage's logic, through mocks of the ports.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use mockall::predicate::eq;

use super::*;
use crate::artifact::Artifact;
use crate::ports::{InstanceStatus, MockArtifactStore, MockImages, MockInstances};
use crate::wait::Interrupt;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn plan() -> BuildPlan {
    BuildPlan {
        app: "shop".into(),
        region: "us-east-1".into(),
        base_image: BaseImage::Lookup {
            owner: "self".into(),
            name: "debian-*".into(),
        },
        shape: InstanceShape {
            instance_type: "t3.micro".into(),
            security_groups: vec!["sg-1".into()],
            instance_profile: None,
            key_name: None,
            metadata: Default::default(),
            root_volume: Default::default(),
        },
        subnet: Some("subnet-1".into()),
        provision: "#!/bin/sh\nmake install\n".into(),
        artifact_dir: "/opt/shop/release".into(),
        copy_kms_keys: Default::default(),
        provision_poll: Poll {
            interval: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        },
        image_poll: Poll {
            interval: Duration::from_secs(5),
            deadline: Duration::from_secs(120),
        },
        copy_to_regions: vec![],
        share_with: vec![],
    }
}

fn image(id: &str, region: &str, state: ImageState) -> Image {
    Image {
        id: id.into(),
        region: region.into(),
        name: format!("{id}-name"),
        state,
        created: "2026-11-01T00:00:00.000Z".into(),
        tags: Tags::new(),
        snapshot_ids: vec!["snap-1".into()],
        root_device: Some(crate::ports::RootDevice {
            name: "/dev/xvda".into(),
            size_gib: Some(8),
        }),
    }
}

async fn run(
    plan: &BuildPlan,
    images: &MockImages,
    instances: &MockInstances,
    interrupt: &Interrupt,
) -> Result<BuildOutcome> {
    let artifacts = MockArtifactStore::new(); // no artifact: no call
    run_with(
        plan,
        images,
        instances,
        &artifacts,
        BuildInput::default(),
        interrupt,
    )
    .await
}

async fn run_with(
    plan: &BuildPlan,
    images: &MockImages,
    instances: &MockInstances,
    artifacts: &MockArtifactStore,
    input: BuildInput<'_>,
    interrupt: &Interrupt,
) -> Result<BuildOutcome> {
    Release::vouched("shop", SHA.parse().unwrap())
        .build(
            plan,
            BuildPorts {
                images,
                instances,
                artifacts,
            },
            input,
            &RunId::new(),
            interrupt,
        )
        .await
}

/// Images with no release image yet and a base image to bake from.
fn fresh_images() -> MockImages {
    let mut images = MockImages::new();
    images
        .expect_find_release_image()
        .returning(|_, _, _| Ok(None));
    images
        .expect_newest_image()
        .with(eq("us-east-1"), eq("self"), eq("debian-*"))
        .times(1)
        .returning(|r, _, _| Ok(Some(image("ami-base", r, ImageState::Available))));
    images
}

/// A builder that is `running` for `running_polls` polls, then in `last`.
/// The launch spec is captured; terminate must be called exactly once.
fn builder(
    running_polls: u32,
    last: &'static str,
    console: &'static str,
) -> (MockInstances, Arc<Mutex<Option<LaunchSpec>>>) {
    let mut instances = MockInstances::new();
    let launched = Arc::new(Mutex::new(None));
    let capture = launched.clone();
    instances.expect_launch().times(1).returning(move |spec| {
        *capture.lock().unwrap() = Some(spec.clone());
        Ok(vec!["i-builder".into()])
    });
    let polls = AtomicU32::new(0);
    instances.expect_statuses().returning(move |ids| {
        assert_eq!(ids, ["i-builder".to_string()]);
        let n = polls.fetch_add(1, Ordering::SeqCst);
        Ok(vec![InstanceStatus {
            id: "i-builder".into(),
            state: if n < running_polls { "running" } else { last }.into(),
            reason: None,
            tags: Tags::new(),
        }])
    });
    instances
        .expect_console_output()
        .returning(move |_| Ok(console.to_string()));
    instances
        .expect_terminate()
        .with(eq(vec!["i-builder".to_string()]))
        .times(1)
        .returning(|_| Ok(()));
    (instances, launched)
}

#[tokio::test(start_paused = true)]
async fn reuses_an_available_image_with_one_lookup() {
    let mut images = MockImages::new();
    images
        .expect_find_release_image()
        .times(1)
        .returning(|r, _, _| Ok(Some(image("ami-done", r, ImageState::Available))));
    let instances = MockInstances::new(); // any instance call fails the test
    let out = run(&plan(), &images, &instances, &Interrupt::never())
        .await
        .unwrap();
    assert!(out.reused);
    assert_eq!(out.release.image().id, "ami-done");
    assert_eq!(out.builder, None);
    assert_eq!(out.base_image, None);
}

#[tokio::test(start_paused = true)]
async fn waits_for_an_image_another_run_is_baking() {
    let mut images = MockImages::new();
    images
        .expect_find_release_image()
        .times(1)
        .returning(|r, _, _| Ok(Some(image("ami-other", r, ImageState::Pending))));
    let polls = AtomicU32::new(0);
    images.expect_image().returning(move |r, id| {
        let state = match polls.fetch_add(1, Ordering::SeqCst) {
            0..=2 => ImageState::Pending,
            _ => ImageState::Available,
        };
        Ok(Some(image(id, r, state)))
    });
    let out = run(&plan(), &images, &MockInstances::new(), &Interrupt::never())
        .await
        .unwrap();
    assert!(out.reused);
    assert_eq!(out.release.image().id, "ami-other");
}

#[tokio::test(start_paused = true)]
async fn bakes_with_tags_at_creation_and_terminates_the_builder() {
    let mut images = fresh_images();
    images
        .expect_create_image()
        .withf(|region, instance, name, description, tags| {
            region == "us-east-1"
                && instance == "i-builder"
                && name.starts_with("shop-0123456789ab-20")
                && name.ends_with('Z')
                && description.contains(SHA)
                && tags[tag::APP] == "shop"
                && tags[tag::COMMIT] == SHA
                && tags[tag::ROLE] == tag::ROLE_APP
                && tags[tag::RUN].starts_with("20")
                && tags["Name"] == name
        })
        .times(1)
        .returning(|_, _, _, _, _| Ok("ami-new".into()));
    images
        .expect_image()
        .returning(|r, id| Ok(Some(image(id, r, ImageState::Available))));
    let (instances, launched) = builder(2, "stopped", "pipeline-provision: ok\n");

    let out = run(&plan(), &images, &instances, &Interrupt::never())
        .await
        .unwrap();
    assert!(!out.reused);
    assert_eq!(out.release.image().id, "ami-new");
    assert_eq!(out.base_image.as_deref(), Some("ami-base"));
    assert_eq!(out.builder.as_deref(), Some("i-builder"));

    let spec = launched.lock().unwrap().clone().unwrap();
    assert_eq!(spec.image_id, "ami-base");
    assert_eq!(spec.count, 1);
    assert_eq!(spec.shutdown, ShutdownBehaviour::Stop);
    assert_eq!(spec.subnet_id.as_deref(), Some("subnet-1"));
    assert_eq!(spec.shape.security_groups, ["sg-1"]);
    assert!(
        spec.user_data.contains("make install"),
        "{}",
        spec.user_data
    );
    assert!(spec.user_data.contains(&format!("PIPELINE_COMMIT='{SHA}'")));
    assert!(!spec.user_data.contains("PIPELINE_ARTIFACT"));
    assert_eq!(spec.root_device.unwrap().name, "/dev/xvda");
    assert_eq!(spec.tags[tag::ROLE], tag::ROLE_BUILDER);
    assert_eq!(spec.tags[tag::COMMIT], SHA);
    assert_eq!(spec.tags[tag::RUN], out.run.to_string());
}

#[tokio::test(start_paused = true)]
async fn failed_provisioning_makes_no_image() {
    let images = fresh_images(); // create_image is not expected
    let console = "step 1\nstep 2\npipeline-provision: FAILED exit 3\n";
    let (instances, _) = builder(1, "stopped", console);
    let err = run(&plan(), &images, &instances, &Interrupt::never())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BakeFailed { .. }), "{err}");
    assert!(err.to_string().contains("FAILED exit 3"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_builder_that_never_powers_off_times_out_and_is_terminated() {
    let images = fresh_images();
    let (instances, _) = builder(u32::MAX, "running", "booting\n");
    let started = tokio::time::Instant::now();
    let err = run(&plan(), &images, &instances, &Interrupt::never())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("power off"), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_terminated_builder_fails_the_bake() {
    let images = fresh_images();
    let (instances, _) = builder(1, "terminated", "");
    let err = run(&plan(), &images, &instances, &Interrupt::never())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("terminated before it powered off"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_image_is_deregistered() {
    let mut images = fresh_images();
    images
        .expect_create_image()
        .times(1)
        .returning(|_, _, _, _, _| Ok("ami-bad".into()));
    images
        .expect_image()
        .returning(|r, id| Ok(Some(image(id, r, ImageState::Other("failed".into())))));
    images
        .expect_deregister_image()
        .with(eq("us-east-1"), eq("ami-bad"))
        .times(1)
        .returning(|_, _| Ok(()));
    let (instances, _) = builder(0, "stopped", "");
    let err = run(&plan(), &images, &instances, &Interrupt::never())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ended in state failed"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_terminates_the_builder() {
    let images = fresh_images();
    let (instances, _) = builder(u32::MAX, "running", "");
    let (trigger, interrupt) = Interrupt::manual();
    let plan = plan();
    let bake = run(&plan, &images, &instances, &interrupt);
    let fire = async {
        tokio::time::sleep(Duration::from_secs(12)).await;
        trigger.fire();
    };
    let (result, ()) = tokio::join!(bake, fire);
    assert!(matches!(result.unwrap_err(), Error::Interrupted));
}

#[tokio::test(start_paused = true)]
async fn a_missing_base_image_is_bad_input_and_launches_nothing() {
    let mut images = MockImages::new();
    images
        .expect_find_release_image()
        .returning(|_, _, _| Ok(None));
    images.expect_newest_image().returning(|_, _, _| Ok(None));
    let err = run(&plan(), &images, &MockInstances::new(), &Interrupt::never())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::BadInput);
    assert!(err.to_string().contains("fix build.base_image"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn copies_and_shares_only_what_is_missing() {
    let mut plan = plan();
    plan.copy_to_regions = vec!["eu-west-1".into(), "ap-south-1".into()];
    plan.share_with = vec!["111111111111".into(), "222222222222".into()];
    let mut images = MockImages::new();
    images
        .expect_find_release_image()
        .returning(|region, _, _| {
            Ok(match region {
                "us-east-1" => Some(image("ami-home", region, ImageState::Available)),
                "ap-south-1" => Some(image("ami-ap", region, ImageState::Available)),
                _ => None,
            })
        });
    images
        .expect_copy_image()
        .withf(|source, region, tags, encryption| {
            source.id == "ami-home"
                && region == "eu-west-1"
                && tags[tag::ROLE] == tag::ROLE_APP
                && *encryption == Encryption::AsImage
        })
        .times(1)
        .returning(|_, _, _, _| Ok("ami-eu".into()));
    images
        .expect_image()
        .returning(|r, id| Ok(Some(image(id, r, ImageState::Available))));
    images.expect_launch_permissions().returning(|_, id| {
        Ok(if id == "ami-home" {
            vec!["111111111111".into()]
        } else {
            vec![]
        })
    });
    let shared = Arc::new(Mutex::new(Vec::new()));
    let record = shared.clone();
    images
        .expect_share_image()
        .returning(move |region, id, accounts| {
            record
                .lock()
                .unwrap()
                .push(format!("{region}/{id}:{}", accounts.join(",")));
            Ok(())
        });
    let out = run(&plan, &images, &MockInstances::new(), &Interrupt::never())
        .await
        .unwrap();
    assert!(out.reused);
    let copies: Vec<&str> = out.copies.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(copies, ["ami-ap", "ami-eu"]);
    assert_eq!(
        *shared.lock().unwrap(),
        [
            "us-east-1/ami-home:222222222222",
            "ap-south-1/ami-ap:111111111111,222222222222",
            "eu-west-1/ami-eu:111111111111,222222222222",
        ]
    );
}

fn packed() -> (tempfile::TempDir, Artifact) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.js"), "hello").unwrap();
    let artifact = Artifact::pack(dir.path(), "build.artifact", 1 << 20).unwrap();
    (dir, artifact)
}

/// An artifact store that has the object (`stored`) or takes one upload,
/// and signs a URL.
fn artifact_store(stored: Option<u64>, uploads: usize) -> MockArtifactStore {
    let mut artifacts = MockArtifactStore::new();
    artifacts
        .expect_stored_size()
        .withf(|key| key.starts_with(&format!("artifacts/shop/{SHA}/")) && key.ends_with(".tar.gz"))
        .times(1)
        .returning(move |_| Ok(stored));
    artifacts
        .expect_upload()
        .times(uploads)
        .returning(|_, _, _| Ok(()));
    artifacts
        .expect_presigned_get()
        .withf(|_, expires| *expires == Duration::from_secs(60) + URL_MARGIN)
        .times(1)
        .returning(|_, _| {
            Ok(SecretUrl::new(
                "http://127.0.0.1:9/b/k?X-Amz-Signature=s3cr3t".into(),
            ))
        });
    artifacts
}

fn image_tags_captured(images: &mut MockImages) -> Arc<Mutex<Tags>> {
    let tags = Arc::new(Mutex::new(Tags::new()));
    let capture = tags.clone();
    images
        .expect_create_image()
        .times(1)
        .returning(move |_, _, _, _, t| {
            *capture.lock().unwrap() = t.clone();
            Ok("ami-new".into())
        });
    images.expect_image().returning(|r, id| {
        let mut done = image(id, r, ImageState::Available);
        done.tags = Tags::from([(tag::ARTIFACT_SHA256.into(), "from-tags".into())]);
        Ok(Some(done))
    });
    tags
}

#[tokio::test(start_paused = true)]
async fn an_artifact_is_uploaded_once_and_fetched_by_the_builder_through_its_url() {
    let (_dir, artifact) = packed();
    let mut images = fresh_images();
    let tags = image_tags_captured(&mut images);
    let (instances, launched) = builder(1, "stopped", "pipeline-provision: ok\n");
    let artifacts = artifact_store(None, 1);
    let input = BuildInput {
        artifact: Some(&artifact),
        rebake: false,
    };
    let out = run_with(
        &plan(),
        &images,
        &instances,
        &artifacts,
        input,
        &Interrupt::never(),
    )
    .await
    .unwrap();
    let staged = out.artifact.unwrap();
    assert!(staged.uploaded);
    assert_eq!(staged.sha256, artifact.sha256);
    assert_eq!(out.baked_from.as_deref(), Some("from-tags"));
    assert_eq!(tags.lock().unwrap()[tag::ARTIFACT_SHA256], artifact.sha256);
    let spec = launched.lock().unwrap().clone().unwrap();
    assert!(spec.user_data.contains("X-Amz-Signature=s3cr3t"));
    assert!(
        spec.user_data
            .contains(&format!("PIPELINE_ARTIFACT_SHA256='{}'", artifact.sha256))
    );
    assert!(
        spec.user_data
            .contains("PIPELINE_ARTIFACT_DIR='/opt/shop/release'")
    );
    assert_eq!(spec.tags[tag::ARTIFACT_SHA256], artifact.sha256);
}

#[tokio::test(start_paused = true)]
async fn an_artifact_already_in_the_bucket_is_not_uploaded_again() {
    let (_dir, artifact) = packed();
    let mut images = fresh_images();
    image_tags_captured(&mut images);
    let (instances, _) = builder(1, "stopped", "");
    let artifacts = artifact_store(Some(artifact.size), 0);
    let input = BuildInput {
        artifact: Some(&artifact),
        rebake: false,
    };
    let out = run_with(
        &plan(),
        &images,
        &instances,
        &artifacts,
        input,
        &Interrupt::never(),
    )
    .await
    .unwrap();
    assert!(!out.artifact.unwrap().uploaded);
}

#[tokio::test(start_paused = true)]
async fn a_commit_baked_from_another_artifact_is_reused_unless_rebaked() {
    let (_dir, artifact) = packed();
    let mut images = MockImages::new();
    images
        .expect_find_release_image()
        .times(1)
        .returning(|r, _, _| {
            let mut old = image("ami-old", r, ImageState::Available);
            old.tags
                .insert(tag::ARTIFACT_SHA256.into(), "another-digest".into());
            Ok(Some(old))
        });
    let input = BuildInput {
        artifact: Some(&artifact),
        rebake: false,
    };
    // Reused, nothing uploaded or launched: the AMI tells what it was baked from.
    let out = run_with(
        &plan(),
        &images,
        &MockInstances::new(),
        &MockArtifactStore::new(),
        input,
        &Interrupt::never(),
    )
    .await
    .unwrap();
    assert!(out.reused);
    assert_eq!(out.baked_from.as_deref(), Some("another-digest"));
    assert!(!out.artifact.unwrap().uploaded);

    // --rebake: the commit's AMI is not even looked up; a new one is baked.
    let mut images = MockImages::new();
    images
        .expect_newest_image()
        .returning(|r, _, _| Ok(Some(image("ami-base", r, ImageState::Available))));
    image_tags_captured(&mut images);
    let (instances, _) = builder(1, "stopped", "");
    let artifacts = artifact_store(Some(artifact.size), 0);
    let input = BuildInput {
        artifact: Some(&artifact),
        rebake: true,
    };
    let out = run_with(
        &plan(),
        &images,
        &instances,
        &artifacts,
        input,
        &Interrupt::never(),
    )
    .await
    .unwrap();
    assert!(!out.reused);
    assert_eq!(out.release.image().id, "ami-new");
}

#[tokio::test(start_paused = true)]
async fn copies_of_an_ami_encrypted_with_a_key_take_their_region_s_key() {
    let mut plan = plan();
    plan.shape.root_volume.encryption = Encryption::Key("alias/home".into());
    plan.copy_to_regions = vec!["eu-west-1".into(), "ap-south-1".into()];
    plan.copy_kms_keys = [("eu-west-1".to_string(), "alias/eu".to_string())].into();
    let mut images = MockImages::new();
    images.expect_find_release_image().returning(|r, _, _| {
        Ok((r == "us-east-1").then(|| image("ami-home", r, ImageState::Available)))
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    images
        .expect_copy_image()
        .times(2)
        .returning(move |_, region, _, encryption| {
            record
                .lock()
                .unwrap()
                .push((region.to_string(), encryption.clone()));
            Ok(format!("ami-{region}"))
        });
    images
        .expect_image()
        .returning(|r, id| Ok(Some(image(id, r, ImageState::Available))));
    run(&plan, &images, &MockInstances::new(), &Interrupt::never())
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("eu-west-1".to_string(), Encryption::Key("alias/eu".into())),
            ("ap-south-1".to_string(), Encryption::DefaultKey),
        ]
    );
}
