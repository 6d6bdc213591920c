//! Webhooks against a local receiver on 127.0.0.1: every event arrives with
//! its fields, a flaky webhook gets a retry, and one that is down costs a
//! warning and nothing else.

use std::time::Duration;

use pipeline_fixtures::webhook::{Receiver, closed_port};
use pipeline_fixtures::{BuilderBehaviour, guest, seed_balancers};

use crate::support::{Env, SHA, SHA2, classic};

const TOKEN: &str = "tok-6f1e2d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_webhooks_and_a_dead_one_blocks_nothing() {
    let env = Env::new().await;
    let balancers = seed_balancers(&env.sdk, &env.world, "shop", 1).await;
    let _builder = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let chat = Receiver::start(0);
    let flaky = Receiver::start(1);
    let down = closed_port();
    env.write_config(&format!(
        "{}environments:\n{}notify:
  - url: {chat}
    secret_header: {{ name: X-Pipeline-Token, env: HOOK_TOKEN }}
  - url: {flaky}
    events: [succeeded]
    backoff: 200ms
  - url_env: DEAD_HOOK
    attempts: 2
    backoff: 200ms
    timeout: 2s
",
        env.config(""),
        env.environment("staging", &classic(&balancers)),
        chat = chat.url("/chat"),
        flaky = flaky.url("/flaky"),
    ));
    let dead_url = format!("http://127.0.0.1:{down}/services/very-secret-path");
    let ci = [
        ("HOOK_TOKEN", TOKEN),
        ("DEAD_HOOK", dead_url.as_str()),
        ("CIRCLECI", "true"),
        ("CIRCLE_USERNAME", "ada"),
        ("CIRCLE_BUILD_URL", "https://circleci.com/gh/shop/web/42"),
    ];

    let build = env
        .pipeline_with(
            &[
                "build",
                "--skip-test-gate",
                "--commit",
                SHA,
                "--output",
                "json",
            ],
            &ci,
        )
        .await;
    assert_eq!(build.code, 0, "{build:#?}");
    let ami = build.json()["ami"].as_str().unwrap().to_string();
    let deploy = env
        .pipeline_with(&["deploy", "--env", "staging", "--commit", SHA], &ci)
        .await;
    assert_eq!(deploy.code, 0, "{deploy:#?}");
    let unbuilt = env
        .pipeline_with(&["deploy", "--env", "staging", "--commit", SHA2], &ci)
        .await;
    assert_eq!(unbuilt.code, 1, "{unbuilt:#?}");

    // The chat hook: every event, in order, with its fields and the secret header.
    let got = chat.wait_for(6, Duration::from_secs(10));
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            (
                r.body["stage"].as_str().unwrap().to_string(),
                r.body["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("build", "started"),
        ("build", "succeeded"),
        ("deploy", "started"),
        ("deploy", "succeeded"),
        ("deploy", "started"),
        ("deploy", "failed"),
    ]
    .map(|(s, e)| (s.to_string(), e.to_string()));
    assert_eq!(seen, expected, "{got:#?}");
    for r in &got {
        assert_eq!(r.path, "/chat");
        assert_eq!(r.header("x-pipeline-token"), Some(TOKEN));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body["app"], "shop");
        assert_eq!(r.body["actor"], "ada");
        assert_eq!(r.body["job_url"], "https://circleci.com/gh/shop/web/42");
        assert!(
            r.body["text"].as_str().unwrap().starts_with("shop: "),
            "{r:#?}"
        );
    }
    let deployed = &got[3].body;
    assert_eq!(deployed["env"], "staging");
    assert_eq!(deployed["commit"], SHA);
    assert_eq!(deployed["ami"], ami.as_str());
    assert_eq!(deployed["outcome"], "succeeded");
    assert!(deployed["duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(
        deployed["text"].as_str().unwrap(),
        format!(
            "shop: deploy of {} ({ami}) to staging succeeded in {:.0}s by ada <https://circleci.com/gh/shop/web/42|job>",
            &SHA[..12],
            deployed["duration_seconds"].as_f64().unwrap()
        )
    );
    let failed = &got[5].body;
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("was never built"),
        "{failed}"
    );

    // The flaky hook: only `succeeded`, the first delivery retried after a 500.
    let got = flaky.wait_for(3, Duration::from_secs(10));
    let answered: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [500, 200, 200], "{got:#?}");
    assert_eq!(got[0].body, got[1].body);
    assert!(got.iter().all(|r| r.body["event"] == "succeeded"));

    // The dead hook: a warning naming its host only; the runs still passed,
    // and waited at most its bounded retries.
    let warning = format!("webhook 127.0.0.1:{down}: gave up on the started event");
    assert!(deploy.stderr.contains(&warning), "{deploy:#?}");
    for run in [&build, &deploy, &unbuilt] {
        assert!(!run.stderr.contains("very-secret-path"), "{run:#?}");
        assert!(!run.stderr.contains(TOKEN), "{run:#?}");
    }
    assert!(
        deploy.elapsed < Duration::from_secs(20),
        "a dead webhook slowed the deploy: {:?}",
        deploy.elapsed
    );
}
