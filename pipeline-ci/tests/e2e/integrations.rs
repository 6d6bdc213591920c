//! The CI integrations (CircleCI orb, GitHub Action, Jenkins step) are valid,
//! and their example flows work: `integrations/validate.sh` checks the files
//! against check-jsonschema's vendored schemas and runs every `pipeline`
//! invocation of the examples through the binary's parser, listing them;
//! this test then runs that list, in order, against moto.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pipeline_fixtures::{BuilderBehaviour, guest, seed_balancers, seed_hosted_zone};

use crate::support::{Env, SHA, classic, target_group};

/// Runs validate.sh; returns the `pipeline` argument lines it recorded.
fn validate() -> Vec<String> {
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
    let calls = std::env::temp_dir().join(format!("pipeline-calls-{}", std::process::id()));
    let out = Command::new("bash")
        .arg(root.join("integrations/validate.sh"))
        .env("PIPELINE_BIN", env!("CARGO_BIN_EXE_pipeline"))
        .env("PIPELINE_CALLS_OUT", &calls)
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
    let lines = std::fs::read_to_string(&calls).expect("validate.sh listed the calls");
    let _ = std::fs::remove_file(&calls);
    lines.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_integrations_validate_and_their_flows_run_against_moto() {
    let calls = tokio::task::block_in_place(validate);
    assert!(
        calls.len() >= 15,
        "every example's steps were found: {calls:?}"
    );

    // A world the examples' pipeline.yaml describes: staging, two slots, a zone.
    let env = Env::new().await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let staging = seed_balancers(&env.sdk, &env.world, "staging", 1).await;
    let prod1 = seed_balancers(&env.sdk, &env.world, "prod1", 1).await;
    let prod2 = seed_balancers(&env.sdk, &env.world, "prod2", 1).await;
    let zone = seed_hosted_zone(&env.sdk, "example.com").await;
    env.write_config(&format!(
        "{}environments:\n{}{}{}promote:\n  hosted_zone: {zone}\n  record: www.example.com\n  poll_interval: 100ms\n",
        env.config(""),
        env.environment("staging", &classic(&staging)),
        env.environment("prod1", &target_group(&prod1)),
        env.environment("prod2", &target_group(&prod2)),
    ));

    // Each example's steps in order, as its CI would run them. The project's
    // own test command is stood in for by `true`; the commit comes from the
    // CI's variable, as in CircleCI.
    for line in &calls {
        let mut args: Vec<&str> = line.split_whitespace().collect();
        if let Some(dashes) = args.iter().position(|a| *a == "--") {
            args.truncate(dashes + 1);
            args.push("true");
        }
        let run = env.pipeline_with(&args, &[("CIRCLE_SHA1", SHA)]).await;
        assert_eq!(run.code, 0, "pipeline {line}: {run:#?}");
    }

    // Through the API: the record points at prod2, which runs the commit.
    let records = aws_sdk_route53::Client::new(&env.sdk)
        .list_resource_record_sets()
        .hosted_zone_id(&zone)
        .send()
        .await
        .unwrap();
    let www = records
        .resource_record_sets()
        .iter()
        .find(|r| r.name().starts_with("www."))
        .expect("promote created the record");
    assert_eq!(
        www.resource_records()[0]
            .value()
            .trim_end_matches('.')
            .to_lowercase(),
        prod2.alb_dns_name.to_lowercase()
    );
    assert_eq!(env.live_instances("prod2", SHA).await.len(), 2);
    assert_eq!(env.live_instances("staging", SHA).await.len(), 2);
}
