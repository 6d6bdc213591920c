//! The CLI contract: help without network, bad input exits 2 before any
//! mutating call, and the test command.

use crate::support::{Env, SHA};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_makes_no_aws_call() {
    let env = Env::new().await;
    env.moto.start_recording();
    for args in [
        &["--help"][..],
        &["build", "--help"],
        &["test", "--help"],
        &["--version"],
    ] {
        let run = env.pipeline(args).await;
        assert_eq!(run.code, 0, "{run:#?}");
        assert!(!run.stdout.is_empty());
        if args == ["--version"] {
            // The version and the commit it was built from.
            assert!(
                run.stdout
                    .starts_with(&format!("pipeline {} (commit ", env!("CARGO_PKG_VERSION"))),
                "{}",
                run.stdout
            );
        }
    }
    assert!(env.moto.calls().is_empty(), "{:?}", env.moto.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_exits_2_without_a_mutating_call() {
    let env = Env::new().await;
    let good = env.config("");
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            good.replace(
                "  poll_interval: 100ms",
                "  poll_interval: 100ms\n  timout: 5m",
            ),
            vec!["build", "--skip-test-gate", "--commit", SHA],
            "unknown field `timout`",
        ),
        (
            good.clone(),
            vec!["build", "--skip-test-gate", "--commit", "abc123"],
            "40-hex",
        ),
        (
            good.replace("debian-12-amd64-*", "ubuntu-*"),
            vec!["build", "--skip-test-gate", "--commit", SHA],
            "base image not found",
        ),
        (
            good.replace(
                "    owner: self\n    name: debian-12-amd64-*\n",
                "    id: ami-12345678\n",
            ),
            vec!["build", "--skip-test-gate", "--commit", SHA],
            "no image ami-12345678",
        ),
        (
            good.replace("region: us-east-1", "region: nowhere"),
            vec!["build", "--skip-test-gate", "--commit", SHA],
            "region",
        ),
    ];
    for (config, args, expect) in cases {
        env.write_config(&config);
        env.moto.reset_recording();
        env.moto.start_recording();
        let run = env.pipeline(&args).await;
        env.moto.stop_recording();
        assert_eq!(run.code, 2, "{expect}: {run:#?}");
        assert!(run.stderr.contains(expect), "{expect}: {}", run.stderr);
        // The state bucket may hold the attempt's lock and ledger entry.
        let calls = env.aws_calls();
        let mutating: Vec<_> = calls.iter().filter(|c| c.is_mutating()).collect();
        assert!(mutating.is_empty(), "{expect}: {mutating:?}");
        // Only the base image lookup may reach AWS; config errors reach nothing.
        assert!(
            calls.iter().all(|c| c.action == "DescribeImages"),
            "{expect}: {calls:?}"
        );
    }
    // No config file at all.
    let run = env
        .pipeline(&["--config", "missing.yaml", "build", "--commit", SHA])
        .await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("missing.yaml"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_command_streams_and_reports() {
    let env = Env::new().await;
    let pass = env
        .ok(&[
            "test",
            "--no-record",
            "--commit",
            SHA,
            "--",
            "sh",
            "-c",
            "echo unit tests ok",
        ])
        .await;
    assert!(pass.stdout.contains("unit tests ok"), "{pass:#?}");
    assert!(
        pass.stdout
            .contains(&format!("tests passed for {}", &SHA[..12])),
        "{pass:#?}"
    );

    // JSON mode: the command's output moves to stderr; stdout is one object.
    let fail = env
        .pipeline(&[
            "--output",
            "json",
            "test",
            "--no-record",
            "--commit",
            SHA,
            "--",
            "sh",
            "-c",
            "echo boom; exit 3",
        ])
        .await;
    assert_eq!(fail.code, 1, "{fail:#?}");
    let out = fail.json();
    assert_eq!(out["passed"], false);
    assert_eq!(out["exit_code"], 3);
    assert_eq!(out["commit"], SHA);
    assert!(fail.stderr.contains("boom"), "{fail:#?}");

    let missing = env
        .pipeline(&[
            "test",
            "--no-record",
            "--commit",
            SHA,
            "--",
            "/nonexistent/cmd",
        ])
        .await;
    assert_eq!(missing.code, 2, "{missing:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_that_cannot_be_recorded_fails_before_the_tests_run() {
    let env = Env::new().await;
    let tests = [
        "--output", "json", "test", "--commit", SHA, "--", "sh", "-c", "echo ran",
    ];
    let refused = |run: &crate::support::Run, why: &str| {
        assert_eq!(run.code, 2, "{why}: {run:#?}");
        assert_eq!(run.json()["kind"], "not_recorded", "{why}: {run:#?}");
        assert!(
            run.stderr.contains("`pipeline build` would refuse"),
            "{why}: {run:#?}"
        );
        assert!(
            !run.stderr.contains("ran"),
            "{why}: the tests did not run: {run:#?}"
        );
    };
    // No config to find the state bucket in.
    refused(&env.pipeline(&tests).await, "no config");
    // A config, but no AWS credentials: the message names the call and the
    // object, and nothing of the SDK's insides.
    env.write_config(&env.config(""));
    let anonymous = env
        .pipeline_in_job(
            std::path::Path::new(env!("CARGO_BIN_EXE_pipeline")),
            &tests,
            &[],
            false,
        )
        .await;
    refused(&anonymous, "no credentials");
    assert!(
        anonymous.stderr.contains(&format!(
            "AWS GetObject on s3://{}/tests/shop/{SHA}.json failed: NoCredentials",
            env.world.state_bucket
        )),
        "{}",
        anonymous.stderr
    );
    for internal in ["SdkBody", "DispatchFailure", "Raw", "Some(", "None"] {
        assert!(
            !anonymous.stderr.contains(internal),
            "{internal}: {}",
            anonymous.stderr
        );
    }
    // A config whose state bucket does not exist.
    env.write_config(&env.config("").replace(
        &format!("bucket: {}", env.world.state_bucket),
        "bucket: no-such-bucket",
    ));
    refused(&env.pipeline(&tests).await, "no bucket");
    // With both, the verdict is where build's test gate reads it.
    env.write_config(&env.config(""));
    env.ok(&tests).await;
    let verdict = env.state_object(&format!("tests/shop/{SHA}.json")).await;
    assert_eq!(verdict.expect("the verdict")["outcome"], "passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_the_output() {
    let env = Env::new().await;
    let secret = "Zq9secretNeverPrinted0000000000000000000";
    let key_id = "AKIAPIPELINETEST0001";
    // A failing AWS call with every log target at trace level.
    let config = env.config("").replace(
        "    owner: self\n    name: debian-12-amd64-*\n",
        "    id: ami-0000000f\n",
    );
    env.write_config(&config);
    let run = env
        .pipeline_with(
            &[
                "--output",
                "json",
                "build",
                "--skip-test-gate",
                "--commit",
                SHA,
            ],
            &[
                ("AWS_ACCESS_KEY_ID", key_id),
                ("AWS_SECRET_ACCESS_KEY", secret),
                ("PIPELINE_LOG", "trace"),
            ],
        )
        .await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.len() > 1000, "trace logging was on: {run:#?}");
    assert!(
        !run.stderr.contains(secret) && !run.stdout.contains(secret),
        "secret leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_commands_make_no_aws_call() {
    let env = Env::new().await;
    let balancers = pipeline_fixtures::seed_balancers(&env.sdk, &env.world, "shop", 1).await;
    env.write_config(&env.deploy_config(&balancers, 2, "5s"));
    env.moto.start_recording();

    let check = env.ok(&["config", "check"]).await;
    assert!(check.stdout.contains("pipeline.yaml: valid"), "{check:#?}");
    assert!(
        check.stdout.contains("deploy staging: 2 x t3.micro"),
        "{check:#?}"
    );
    let json = env
        .pipeline(&["config", "check", "--output", "json"])
        .await
        .json();
    assert_eq!(json["environments"].as_array().unwrap().len(), 2);
    assert_eq!(
        json["build"]["base_image"],
        "newest of self named debian-12-amd64-*"
    );

    let policy = env.ok(&["iam-policy", "--output", "json"]).await;
    assert_eq!(policy.json()["Version"], "2012-10-17");

    let schema = env.ok(&["config", "schema", "--output", "json"]).await;
    assert_eq!(schema.json()["title"], "Config");
    assert_eq!(schema.json()["additionalProperties"], false);

    for shell in ["bash", "zsh", "fish"] {
        let completions = env.ok(&["completions", shell]).await;
        assert!(completions.stdout.contains("promote"), "{shell}");
    }

    env.write_config(
        &env.config("")
            .replace("count", "cuont")
            .replace("timeout: 30s", "timeout: 30x"),
    );
    let bad = env.pipeline(&["config", "check"]).await;
    assert_eq!(bad.code, 2, "{bad:#?}");
    assert!(bad.stderr.contains("not a duration"), "{}", bad.stderr);

    env.moto.stop_recording();
    assert!(env.moto.calls().is_empty(), "{:?}", env.moto.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_2_before_any_aws_call_the_lock_included() {
    let env = Env::new().await;
    let config = format!(
        "{}environments:\n{}{}promote:\n  hosted_zone: Z0123456789\n  record: www.example.com\n",
        env.config(""),
        env.environment("prod1", "{ classic: shop-prod1 }"),
        env.environment("prod2", "{ classic: shop-prod2 }"),
    );
    env.write_config(&config);
    let cases: [(&[&str], &str); 8] = [
        (&["unlock", "--env", "nosuch"], "no lock \"nosuch\""),
        (
            &["status", "--lock-timeout", "5s"],
            "unexpected argument '--lock-timeout'",
        ),
        (
            &["promote", "--to", "nosuch", "--commit", SHA],
            "not a slot",
        ),
        (
            &["deploy", "--env", "nosuch", "--commit", SHA],
            "no environment",
        ),
        (
            &["deploy", "--env", "prod1", "--ami", "bogus"],
            "not an AMI id",
        ),
        (
            &["task", "--env", "prod1", "--commit", SHA, "migrate"],
            "no task",
        ),
        (&["history", "--env", "nosuch"], "no environment"),
        (&["promote", "--commit", "abc"], "40-hex"),
    ];
    for (args, expect) in cases {
        env.moto.reset_recording();
        env.moto.start_recording();
        let run = env.pipeline(args).await;
        env.moto.stop_recording();
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(expect), "{args:?}: {}", run.stderr);
        assert!(
            env.pipeline_calls().is_empty(),
            "{args:?}: {:?}",
            env.pipeline_calls()
        );
    }
}
