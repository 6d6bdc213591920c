//! `pipeline iam-policy` grants every call the stages make: the suite runs
//! every stage against moto with the recorder on and checks each recorded
//! call of the pipeline against the policy it prints for the same config.

use std::collections::BTreeSet;
use std::time::Duration;

use pipeline_fixtures::{
    BuilderBehaviour, Call, guest, seed_auto_scaling_group, seed_balancers, seed_hosted_zone,
};

use crate::support::{Env, SHA, SHA2, classic, target_group};

/// The IAM action of a recorded call, e.g. `ec2:RunInstances`.
fn iam_action(call: &Call) -> String {
    match call.service.as_str() {
        // Route53 is a REST API: the recorder gives `METHOD /path`.
        "route53" => {
            let (method, path) = call.action.split_once(' ').unwrap_or(("", ""));
            let name = match (method, path) {
                ("GET", p) if p.ends_with("/rrset") || p.ends_with("/rrset/") => {
                    "ListResourceRecordSets"
                }
                ("POST", p) if p.ends_with("/rrset") || p.ends_with("/rrset/") => {
                    "ChangeResourceRecordSets"
                }
                ("GET", p) if p.contains("/change/") => "GetChange",
                _ => panic!("map this Route53 call to its IAM action: {call:?}"),
            };
            format!("route53:{name}")
        }
        // S3 too (path-style: `/bucket` or `/bucket/key`).
        "s3" => {
            let (method, path) = call.action.split_once(' ').unwrap_or(("", ""));
            let has_key = path
                .trim_start_matches('/')
                .trim_end_matches('/')
                .contains('/');
            let name = match (method, has_key) {
                ("GET", false) => "ListBucket",
                ("GET" | "HEAD", true) => "GetObject",
                // A multipart upload's create and complete; its parts are PUTs.
                ("PUT" | "POST", true) => "PutObject",
                ("DELETE", true) => "DeleteObject",
                _ => panic!("map this S3 call to its IAM action: {call:?}"),
            };
            format!("s3:{name}")
        }
        // CloudWatch signs as `monitoring`; IAM calls it `cloudwatch`.
        "monitoring" => format!("cloudwatch:{}", call.action),
        service => format!("{service}:{}", call.action),
    }
}

/// The actions `calls` need that `granted` does not allow.
fn missing(calls: &[Call], granted: &BTreeSet<String>) -> BTreeSet<String> {
    calls
        .iter()
        .map(iam_action)
        .filter(|a| !granted.contains(a))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iam_policy_grants_every_call_the_stages_make() {
    let env = Env::new().await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let staging = seed_balancers(&env.sdk, &env.world, "staging", 1).await;
    let prod1 = seed_balancers(&env.sdk, &env.world, "prod1", 1).await;
    let prod2 = seed_balancers(&env.sdk, &env.world, "prod2", 1).await;
    let web = seed_balancers(&env.sdk, &env.world, "web", 1).await;
    let group =
        seed_auto_scaling_group(&env.sdk, &env.world, "shop-web", &web.target_group_arn, 2).await;
    let zone = seed_hosted_zone(&env.sdk, "example.com").await;
    let config = format!(
        "{}environments:\n{}{}{}  web:\n    count: 2\n    auto_scaling_group: {group}\n    load_balancer: {}\n    health_timeout: 20s\n    healthy_for: 200ms\n    drain_timeout: 2s\n    poll_interval: 100ms\npromote:\n  hosted_zone: {zone}\n  record: www.example.com\n  poll_interval: 100ms\n  steps: [50, 100]\n  bake: 200ms\n  watch:\n    alarms: [shop-errors]\n    analysis: {{ max_5xx_ratio: 1%, too_little_traffic: pass }}\n    interval: 100ms\n",
        env.config(
            "copy_to_regions: [us-west-2]\nshare_with: [\"123456789012\"]\nartifact: dist\nkms_key: alias/shop-ami"
        ),
        env.environment("staging", &classic(&staging)),
        env.environment("prod1", &target_group(&prod1)),
        env.environment("prod2", &target_group(&prod2)),
        target_group(&web),
    );
    env.write_config(&config);
    std::fs::create_dir_all(env.dir().join("dist")).unwrap();
    std::fs::write(env.dir().join("dist/server.js"), "listen(8080)\n").unwrap();

    env.moto.start_recording();
    for args in [
        &["build", "--skip-test-gate", "--commit", SHA][..],
        &["build", "--skip-test-gate", "--commit", SHA2],
        &["deploy", "--env", "staging", "--commit", SHA],
        &["deploy", "--env", "staging", "--commit", SHA2],
        &["deploy", "--env", "web", "--commit", SHA],
        &["deploy", "--env", "web", "--commit", SHA2],
        &["deploy", "--env", "prod1", "--commit", SHA],
        &["promote", "--commit", SHA],
        &["deploy", "--env", "prod2", "--commit", SHA2],
        &["promote", "--commit", SHA2],
        &["rollback"],
        &["status"],
        &["history"],
        &["test", "--commit", SHA, "--", "true"],
    ] {
        let run = env.pipeline(args).await;
        assert_eq!(run.code, 0, "{args:?}: {run:#?}");
    }
    env.moto.stop_recording();
    let calls = env.pipeline_calls();
    assert!(calls.len() > 50, "the stages ran: {} calls", calls.len());

    let printed = env.ok(&["iam-policy", "--output", "json"]).await;
    let policy = printed.json();
    let granted: BTreeSet<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let used: BTreeSet<String> = calls.iter().map(iam_action).collect();
    eprintln!("{} actions used: {used:?}", used.len());
    assert_eq!(
        missing(&calls, &granted),
        BTreeSet::new(),
        "actions the policy lacks"
    );

    // The check bites: without any one action it uses, the policy fails it.
    for action in &used {
        let mut fewer = granted.clone();
        fewer.remove(action);
        assert_eq!(missing(&calls, &fewer), BTreeSet::from([action.clone()]));
    }
}
