//! The commit's build into the AMI: the artifact in S3 at its digest, the
//! guest downloading and checking it through the presigned URL, provenance
//! on the AMI and its snapshot, hardened instances, secrets by reference.
//! Checked through S3 and EC2.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_ec2::types::{HttpTokensState, Instance, InstanceAttributeName};
use base64::Engine as _;
use pipeline_fixtures::guest::spawn_task_runner;
use pipeline_fixtures::{BuilderBehaviour, guest, seed_balancers};
use sha2::{Digest, Sha256};

use crate::support::{Env, SHA, classic, filter};

/// A distinctive secret key for the runs whose output is searched.
const SECRET_KEY: &str = "e2eSecretAccessKeyThatMustNeverShow0123";

/// A small Node.js app as CI would leave it in `dist/`.
fn write_dist(root: &Path) {
    std::fs::create_dir_all(root.join("dist/lib")).unwrap();
    std::fs::write(
        root.join("dist/server.js"),
        "require('http').createServer((q, s) => s.end('ok')).listen(8080)\n",
    )
    .unwrap();
    std::fs::write(root.join("dist/lib/util.js"), "module.exports = {}\n").unwrap();
}

fn tag_map(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect()
}

async fn user_data(env: &Env, id: &str) -> String {
    let out = env
        .ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = out.user_data().and_then(|u| u.value()).unwrap_or_default();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

async fn instances_with_role(env: &Env, role: &str) -> Vec<Instance> {
    env.ec2
        .describe_instances()
        .filters(filter("tag:pipeline:app", "shop"))
        .filters(filter("tag:pipeline:role", role))
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}

fn assert_imds_v2(instance: &Instance) {
    let options = instance.metadata_options().expect("metadata options");
    assert_eq!(
        options.http_tokens(),
        Some(&HttpTokensState::Required),
        "{instance:#?}"
    );
    assert_eq!(options.http_put_response_hop_limit(), Some(1));
}

/// Fails if `needle` is anywhere in `haystacks`.
fn assert_nowhere(needle: &str, what: &str, haystacks: &[(&str, &str)]) {
    for (name, text) in haystacks {
        assert!(
            !text.contains(needle),
            "the {what} appears in {name}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_artifact_is_baked_in_once_and_the_ami_carries_its_digest() {
    let env = Env::new().await;
    let guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(200)),
    );
    write_dist(env.dir());
    env.write_config(&env.config("artifact: dist\nencrypt: true"));

    env.moto.start_recording();
    let secret = [("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    let first = env
        .pipeline_with(
            &[
                "build",
                "--skip-test-gate",
                "--commit",
                SHA,
                "--output",
                "json",
            ],
            &secret,
        )
        .await;
    assert_eq!(first.code, 0, "{first:#?}");
    let out = first.json();
    let sha = out["artifact"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(out["artifact"]["uploaded"], true);
    assert_eq!(out["artifact_sha256"], sha.as_str());

    // S3: one object, at its digest, holding exactly those bytes.
    let prefix = format!("artifacts/shop/{SHA}/");
    let keys = env.state_keys(&prefix).await;
    assert_eq!(keys, [format!("{prefix}{sha}.tar.gz")]);
    let object = env
        .s3()
        .get_object()
        .bucket(&env.world.state_bucket)
        .key(&keys[0])
        .send()
        .await
        .unwrap();
    let bytes = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(format!("{:x}", Sha256::digest(&bytes)), sha);
    assert_eq!(out["artifact"]["size"], bytes.len());

    // The guest downloaded it through the presigned URL and checked it.
    let provisioned = guest.provisioned();
    assert_eq!(provisioned.len(), 1, "{provisioned:?}");
    assert_eq!(provisioned[0].downloaded.as_deref(), Some(sha.as_str()));
    assert!(
        provisioned[0].verdict.ends_with("pipeline-provision: ok"),
        "{provisioned:?}"
    );

    // EC2: the AMI and its snapshot carry the digest, the snapshot is
    // encrypted; the builder ran IMDSv2-only and is gone.
    let images = env.release_images("us-east-1", SHA).await;
    assert_eq!(images.len(), 1);
    assert_eq!(tag_map(images[0].tags())["pipeline:artifact-sha256"], sha);
    let snapshot_id = images[0].block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.snapshot_id())
        .unwrap()
        .to_string();
    let snapshots = env
        .ec2
        .describe_snapshots()
        .snapshot_ids(&snapshot_id)
        .send()
        .await
        .unwrap();
    let snapshot = &snapshots.snapshots()[0];
    assert_eq!(tag_map(snapshot.tags())["pipeline:artifact-sha256"], sha);
    assert_eq!(snapshot.encrypted(), Some(true), "{snapshot:#?}");
    let builders = instances_with_role(&env, "builder").await;
    assert_eq!(builders.len(), 1);
    assert_imds_v2(&builders[0]);
    let builder_data = user_data(&env, builders[0].instance_id().unwrap()).await;
    assert!(builder_data.contains(&format!("PIPELINE_COMMIT='{SHA}'")));
    let url = builder_data
        .lines()
        .find_map(|l| l.strip_prefix("PIPELINE_ARTIFACT_URL='"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("the builder's user-data carries the URL")
        .to_string();

    // A rebuild of the commit uploads nothing and creates nothing.
    env.moto.reset_recording();
    let again = env
        .pipeline_with(
            &[
                "build",
                "--skip-test-gate",
                "--commit",
                SHA,
                "--output",
                "json",
            ],
            &secret,
        )
        .await;
    assert_eq!(again.code, 0, "{again:#?}");
    assert_eq!(again.json()["reused"], true);
    let mutating: Vec<String> = env
        .aws_calls()
        .into_iter()
        .chain(
            env.pipeline_calls()
                .into_iter()
                .filter(|c| c.path.contains("/artifacts/")),
        )
        .filter(|c| c.is_mutating() || c.action.starts_with("PUT") || c.action.starts_with("POST"))
        .map(|c| c.action)
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    env.moto.stop_recording();
    assert_eq!(env.state_keys(&prefix).await.len(), 1);
    assert_eq!(env.release_images("us-east-1", SHA).await.len(), 1);

    // The ledger keeps digest and size; history shows it.
    let builds = env.ledger_of("build").await;
    assert_eq!(builds[0]["artifact"]["sha256"], sha.as_str());
    assert_eq!(builds[0]["artifact"]["size"], bytes.len());
    let history = env.ok(&["history"]).await;
    assert!(
        history.stdout.contains(&format!("artifact {}", &sha[..12])),
        "{}",
        history.stdout
    );

    // The URL and the secret key are in no output and no ledger entry.
    let ledger = serde_json::to_string(&env.ledger().await).unwrap();
    let texts = [
        ("the first build's stdout", first.stdout.as_str()),
        ("the first build's stderr", first.stderr.as_str()),
        ("the rebuild's stdout", again.stdout.as_str()),
        ("the rebuild's stderr", again.stderr.as_str()),
        ("the history", history.stdout.as_str()),
        ("the ledger", ledger.as_str()),
    ];
    let signature = url.split("X-Amz-Signature=").nth(1).unwrap();
    assert!(signature.len() >= 64, "{url}");
    assert_nowhere(&url, "presigned URL", &texts);
    assert_nowhere(signature, "URL's signature", &texts);
    assert_nowhere(SECRET_KEY, "secret key", &texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_artifact_fails_the_bake_and_leaves_nothing() {
    let env = Env::new().await;
    let guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(200)),
    );
    write_dist(env.dir());
    env.write_config(&env.config("artifact: dist"));
    // The same tree packs to the same digest: find it, then put bytes of
    // the same size but other content at its key (an object corrupted or
    // tampered with in the bucket, which HeadObject cannot tell).
    let packed =
        pipeline_core::artifact::Artifact::pack(&env.dir().join("dist"), "dist", 1 << 20).unwrap();
    let mut corrupted = std::fs::read(packed.path()).unwrap();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0xff;
    env.s3()
        .put_object()
        .bucket(&env.world.state_bucket)
        .key(packed.key("shop", SHA))
        .body(corrupted.into())
        .send()
        .await
        .unwrap();

    let run = env
        .pipeline(&["build", "--skip-test-gate", "--commit", SHA])
        .await;
    assert_eq!(run.code, 1, "{run:#?}");
    let mismatch = format!("artifact digest mismatch: expected {}", packed.sha256);
    assert!(run.stderr.contains(&mismatch), "{}", run.stderr);
    assert!(run.stderr.contains("console"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{run:#?}");

    let provisioned = guest.provisioned();
    assert_eq!(provisioned.len(), 1, "{provisioned:?}");
    assert_ne!(
        provisioned[0].downloaded.as_deref(),
        Some(packed.sha256.as_str())
    );
    assert!(env.release_images("us-east-1", SHA).await.is_empty());
    let builders = env.builders().await;
    assert_eq!(builders.len(), 1, "{builders:?}");
    assert_eq!(builders[0].1, "terminated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_and_task_instances_are_hardened_and_get_secrets_by_name_only() {
    let env = Env::new().await;
    let balancers = seed_balancers(&env.sdk, &env.world, "shop", 1).await;
    let _builder = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let _runner = spawn_task_runner(&env.sdk, 0, Duration::from_millis(200));
    let environment = env.environment("staging", &classic(&balancers)).replacen(
        "    count: 2\n",
        "    count: 1\n",
        1,
    ) + "    settings: { RAILS_ENV: staging }\n    secrets: { DATABASE_URL: \"ssm:/shop/staging/db_url\" }\n    root_volume: { size: 20 }\n    tasks:\n      migrate: { command: bin/migrate, timeout: 20s }\n";
    env.write_config(&format!("{}environments:\n{environment}", env.config("")));
    env.ok(&["build", "--skip-test-gate", "--commit", SHA])
        .await;

    env.moto.start_recording();
    let deploy = env
        .ok(&["deploy", "--env", "staging", "--commit", SHA])
        .await;
    let calls = env.pipeline_calls();
    env.moto.stop_recording();
    assert!(
        calls.iter().all(|c| c.service != "ssm"),
        "the pipeline never reads a secret: {calls:?}"
    );

    for role in ["app", "task"] {
        let instances = instances_with_role(&env, role).await;
        assert_eq!(instances.len(), 1, "{role}: {instances:#?}");
        assert_imds_v2(&instances[0]);
        let data = user_data(&env, instances[0].instance_id().unwrap()).await;
        assert!(
            data.contains("secret DATABASE_URL '/shop/staging/db_url'"),
            "{data}"
        );
        assert!(data.contains("--with-decryption"), "{data}");
        assert!(!data.contains("DATABASE_URL='"), "{data}");
        assert!(data.contains("RAILS_ENV='staging'"), "{data}");
    }
    // The app instance's root volume: gp3, the size asked for.
    let app = &instances_with_role(&env, "app").await[0];
    let volume_id = app.block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.volume_id())
        .unwrap()
        .to_string();
    let volumes = env
        .ec2
        .describe_volumes()
        .volume_ids(volume_id)
        .send()
        .await
        .unwrap();
    let volume = &volumes.volumes()[0];
    assert_eq!(volume.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(volume.size(), Some(20));

    // The secret's name shows; its parameter is what the instances' role
    // may read.
    let check = env.ok(&["config", "check"]).await;
    assert!(
        check
            .stdout
            .contains("secrets: DATABASE_URL from ssm:/shop/staging/db_url"),
        "{}",
        check.stdout
    );
    let policy = env
        .ok(&["iam-policy", "--role", "instances", "--output", "json"])
        .await
        .json();
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(
        statements[0]["Resource"],
        serde_json::json!(["arn:aws:ssm:us-east-1:*:parameter/shop/staging/db_url"])
    );
    assert!(deploy.stderr.contains("migrate"), "{}", deploy.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_artifact_goes_up_in_parts_and_the_builder_gets_it_whole() {
    let env = Env::new().await;
    let guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(100)),
    );
    // 20 MiB that do not compress, as a tarball taken as it is: three parts.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..20 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let sha = format!("{:x}", Sha256::digest(&bytes));
    std::fs::write(env.dir().join("app.tgz"), &bytes).unwrap();
    env.write_config(&env.config(""));

    env.moto.start_recording();
    let run = env
        .pipeline(&[
            "build",
            "--skip-test-gate",
            "--commit",
            SHA,
            "--artifact",
            "app.tgz",
            "--output",
            "json",
        ])
        .await;
    env.moto.stop_recording();
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["artifact"]["sha256"], sha.as_str());
    let uploads: Vec<String> = env
        .pipeline_calls()
        .into_iter()
        .filter(|c| c.path.contains("/artifacts/"))
        .map(|c| format!("{} {}", c.action.split(' ').next().unwrap_or(""), c.query))
        .collect();
    let parts = uploads.iter().filter(|u| u.contains("partNumber=")).count();
    assert_eq!(parts, 3, "{uploads:?}");
    assert!(
        uploads.iter().any(|u| u.starts_with("POST uploads")),
        "{uploads:?}"
    );
    let head = env
        .s3()
        .head_object()
        .bucket(&env.world.state_bucket)
        .key(format!("artifacts/shop/{SHA}/{sha}.tar.gz"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(20 << 20));
    assert_eq!(
        guest.provisioned()[0].downloaded.as_deref(),
        Some(sha.as_str())
    );
}
