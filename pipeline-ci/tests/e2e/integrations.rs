//! The CI integrations (CircleCI orb, GitHub Action, Jenkins step) are valid,
//! install the binary the way they promise, and their example flows work:
//! `integrations/validate.sh` checks the files against check-jsonschema's
//! vendored schemas, serves a release of this binary on 127.0.0.1 (standing
//! in for the GitHub release download), runs each integration's install
//! step for real against it, and runs every `pipeline` invocation of the
//! examples through the binary's parser, listing them; these tests then run
//! each example's list, in order, with the binary its install put in
//! place, for three releases in a row against moto: a release train,
//! blue/green from the second release on. A release whose checksum does
//! not match is refused by every integration.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use pipeline_fixtures::{BuilderBehaviour, guest, seed_balancers, seed_hosted_zone};

use crate::support::{Env, Kind, SHA, SHA2, SHA3, classic, healthy, target_group};

/// What validate.sh found: the `pipeline` calls of the examples (example,
/// the job has AWS credentials, the arguments) and the installs (example,
/// the binary, its SHA-256; `None`: refused).
struct Validated {
    calls: Vec<(String, bool, Vec<String>)>,
    installs: Vec<(String, Option<(PathBuf, String)>)>,
}

/// Runs validate.sh, with a release whose checksum is wrong if `wrong_checksum`.
fn validate(wrong_checksum: bool) -> Validated {
    let root = pipeline_fixtures::moto::workspace();
    // check-jsonschema and PyYAML live in the venv next to moto's Python.
    let python = std::env::var_os("PIPELINE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let venv_bin = python.parent().expect("PIPELINE_PYTHON is a path");
    let path = std::env::join_paths(std::iter::once(venv_bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    // The jobs' home directories (where the installs cache the binary) stay
    // for the suite to run; the next run replaces them.
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("integrations-wrong-checksum-{wrong_checksum}"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let (calls, installs) = (scratch.join("calls"), scratch.join("installs"));
    let out = Command::new("bash")
        .arg(root.join("integrations/validate.sh"))
        .env("PIPELINE_BIN", env!("CARGO_BIN_EXE_pipeline"))
        .env("PIPELINE_CALLS_OUT", &calls)
        .env("PIPELINE_INSTALLS_OUT", &installs)
        .env(
            "PIPELINE_WRONG_CHECKSUM",
            if wrong_checksum { "1" } else { "0" },
        )
        .env("PIPELINE_HOMES", &scratch)
        .env("PATH", path)
        .output()
        .expect("bash runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "integrations/validate.sh failed ({}); run `make venv` if check-jsonschema is missing:\n{stdout}\n{stderr}",
        out.status
    );
    let read = |file: &PathBuf| std::fs::read_to_string(file).expect("validate.sh listed them");
    let calls = read(&calls)
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '|');
            let example = parts.next().unwrap_or_default().to_string();
            let aws = parts.next() == Some("1");
            let args = parts
                .next()
                .unwrap_or_default()
                .split_terminator('\x1f')
                .map(str::to_string)
                .collect();
            (example, aws, args)
        })
        .collect();
    let installs = read(&installs)
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.splitn(3, '|').collect();
            let got =
                (parts[1] != "refused").then(|| (PathBuf::from(parts[1]), parts[2].to_string()));
            (parts[0].to_string(), got)
        })
        .collect();
    Validated { calls, installs }
}

/// validate.sh's findings with the right checksum (once for the whole suite).
fn validated() -> &'static Validated {
    static VALIDATED: OnceLock<Validated> = OnceLock::new();
    VALIDATED.get_or_init(|| validate(false))
}

/// The SHA-256 of a file, in hex.
fn sha256_of(path: &std::path::Path) -> String {
    pipeline_core::artifact::digest_file(path).unwrap()
}

#[test]
fn every_integration_refuses_a_release_whose_checksum_does_not_match() {
    let found = validate(true);
    for example in ["circleci", "github", "jenkins"] {
        let installs: Vec<_> = found
            .installs
            .iter()
            .filter(|(e, _)| e == example)
            .collect();
        assert!(!installs.is_empty(), "{example} installed");
        assert!(
            installs.iter().all(|(_, got)| got.is_none()),
            "{example} refused every time: {installs:?}"
        );
    }
    // No step ran a binary.
    assert!(found.calls.is_empty(), "{:?}", found.calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circleci_example_runs_a_release_train() {
    release_train("circleci", "CIRCLE_SHA1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_github_example_runs_a_release_train() {
    release_train("github", "GITHUB_SHA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jenkins_example_runs_a_release_train() {
    release_train("jenkins", "GIT_COMMIT").await;
}

/// Runs `example`'s steps, in order, for three releases in a row, each job
/// with only what the real job would have: the commit in `commit_var` and
/// AWS credentials if the job sets them up. Through Route53 and the
/// balancers: each release ends live on the other slot, and the slot it
/// left still serves the release before (ready for a rollback).
async fn release_train(example: &str, commit_var: &str) {
    let found = tokio::task::block_in_place(validated);
    let steps: Vec<(bool, &[String])> = found
        .calls
        .iter()
        .filter(|(e, _, _)| e == example)
        .map(|(_, aws, args)| (*aws, args.as_slice()))
        .collect();
    assert!(
        steps.len() >= 5,
        "{example}'s steps were found: {:?}",
        found.calls
    );
    // Each job installed the release, byte for byte the binary served.
    let served = sha256_of(std::path::Path::new(env!("CARGO_BIN_EXE_pipeline")));
    let installs: Vec<&(PathBuf, String)> = found
        .installs
        .iter()
        .filter(|(e, _)| e == example)
        .filter_map(|(_, got)| got.as_ref())
        .collect();
    assert_eq!(installs.len(), steps.len(), "{example}: one install a job");
    for (bin, digest) in &installs {
        assert_eq!(
            (digest, sha256_of(bin)),
            (&served, served.clone()),
            "{example}: {bin:?}"
        );
    }
    let bin = installs[0].0.clone();

    // A world the examples' pipeline.yaml describes: staging, two slots, a zone.
    let env = Env::new().await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let staging = seed_balancers(&env.sdk, &env.world, "staging", 1).await;
    let slots = [
        (
            "prod1",
            seed_balancers(&env.sdk, &env.world, "prod1", 1).await,
        ),
        (
            "prod2",
            seed_balancers(&env.sdk, &env.world, "prod2", 1).await,
        ),
    ];
    let zone = seed_hosted_zone(&env.sdk, "example.com").await;
    env.write_config(&format!(
        "{}environments:\n{}{}{}promote:\n  hosted_zone: {zone}\n  record: www.example.com\n  poll_interval: 100ms\n",
        env.config(""),
        env.environment("staging", &classic(&staging)),
        env.environment("prod1", &target_group(&slots[0].1)),
        env.environment("prod2", &target_group(&slots[1].1)),
    ));

    // The app's build output, which the examples bake in (`--artifact dist`).
    std::fs::create_dir_all(env.dir().join("dist")).unwrap();
    std::fs::write(env.dir().join("dist/server.js"), "console.log('shop')\n").unwrap();

    let mut before: Option<(&str, &str)> = None;
    for sha in [SHA, SHA2, SHA3] {
        for (aws, line) in &steps {
            // The project's own test command is stood in for by `true`.
            let mut args: Vec<&str> = line.iter().map(String::as_str).collect();
            if let Some(dashes) = args.iter().position(|a| *a == "--") {
                args.truncate(dashes + 1);
                args.push("true");
            }
            let run = env
                .pipeline_in_job(&bin, &args, &[(commit_var, sha)], *aws)
                .await;
            assert_eq!(
                run.code, 0,
                "{example} release {sha}: pipeline {line:?}: {run:#?}"
            );
        }
        let live = record_target(&env, &zone).await;
        let (slot, balancers) = slots
            .iter()
            .find(|(_, b)| b.alb_dns_name.eq_ignore_ascii_case(&live))
            .unwrap_or_else(|| panic!("{example}: www points at a slot, not {live}"));
        let serving = env.live_instances(slot, sha).await;
        assert_eq!(serving.len(), 2, "{example}: {slot} runs {sha}");
        assert_eq!(healthy(&env, balancers, Kind::TargetGroup).await, serving);
        if let Some((previous, previous_sha)) = before {
            assert_ne!(
                *slot, previous,
                "{example}: release {sha} went live on the other slot"
            );
            let (_, previous_balancers) = slots.iter().find(|(s, _)| *s == previous).unwrap();
            let still = env.live_instances(previous, previous_sha).await;
            assert_eq!(
                still.len(),
                2,
                "{example}: {previous} still runs {previous_sha}"
            );
            assert_eq!(
                healthy(&env, previous_balancers, Kind::TargetGroup).await,
                still,
                "{example}: {previous} still serves, ready for a rollback"
            );
        }
        assert_eq!(env.live_instances("staging", sha).await.len(), 2);
        before = Some((slot, sha));
    }
}

/// Where www points, through ListResourceRecordSets.
async fn record_target(env: &Env, zone: &str) -> String {
    let records = aws_sdk_route53::Client::new(&env.sdk)
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap();
    let www = records
        .resource_record_sets()
        .iter()
        .find(|r| r.name().starts_with("www."))
        .expect("promote created the record");
    www.resource_records()[0]
        .value()
        .trim_end_matches('.')
        .to_string()
}
