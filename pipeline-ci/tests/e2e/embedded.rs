//! The embedded example (`pipeline-core/examples/embedded.rs`), run in
//! this process against moto: a program of your own gets the test gate,
//! the lock and the ledger, as the CLI does. Checked through S3, EC2 and
//! the Classic ELB.

use std::time::Duration;

use pipeline_core::Error;
use pipeline_core::config::Config;
use pipeline_core::run::Actor;
use pipeline_fixtures::{BuilderBehaviour, guest, seed_balancers};

use crate::support::{Env, Kind, SHA, classic, eventually, healthy};

#[path = "../../../pipeline-core/examples/embedded.rs"]
#[allow(dead_code)]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_program_gets_the_test_gate_the_lock_and_the_ledger() {
    let env = Env::new().await;
    let balancers = seed_balancers(&env.sdk, &env.world, "shop", 0).await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    // Healthy for 3 s: the deploy holds staging's lock long enough to be seen.
    let staging = env
        .environment("staging", &classic(&balancers))
        .replace("healthy_for: 200ms", "healthy_for: 3s");
    let path = env.write_config(&format!("{}environments:\n{staging}", env.config("")));
    let config = || Config::load(&path).unwrap();
    let actor = Actor {
        name: Some("embedder".into()),
        job_url: None,
    };

    // The test gate: an untested commit is refused, and nothing is baked.
    let err = example::run(config(), "staging", SHA, &env.sdk, actor.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Untested { .. }), "{err}");
    assert!(env.release_images(&env.world.region, SHA).await.is_empty());

    env.ok(&["test", "--commit", SHA, "--", "true"]).await;
    let sdk = env.sdk.clone();
    let (embedded_config, embedded_actor) = (config(), actor.clone());
    let embedded = tokio::spawn(async move {
        example::run(embedded_config, "staging", SHA, &sdk, embedded_actor).await
    });

    // The lock: while the program deploys, a CLI deploy is refused.
    eventually("the program to hold staging's lock", || async {
        env.state_object("locks/shop/staging").await.is_some()
    })
    .await;
    let holder = env.state_object("locks/shop/staging").await.unwrap();
    assert_eq!(holder["actor"], "embedder");
    assert_eq!(holder["stage"], "deploy");
    let cli = env
        .pipeline(&["deploy", "--env", "staging", "--commit", SHA])
        .await;
    assert_eq!(cli.code, 3, "{cli:#?}");
    assert!(cli.stderr.contains("by embedder"), "{}", cli.stderr);

    embedded.await.unwrap().unwrap();
    let serving = env.live_instances("staging", SHA).await;
    assert_eq!(serving.len(), 2);
    assert_eq!(healthy(&env, &balancers, Kind::Classic).await, serving);
    assert!(env.state_object("locks/shop/staging").await.is_none());

    // The ledger: the refused build, the tests, the build and the deploy,
    // the program's runs by its own actor.
    let entries: Vec<(String, String, String)> = env
        .ledger()
        .await
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (field("stage"), field("outcome"), field("actor"))
        })
        .collect();
    let expected = [
        ("build", "failed", "embedder"),
        ("test", "passed", "e2e"),
        ("build", "succeeded", "embedder"),
        ("deploy", "succeeded", "embedder"),
    ];
    assert_eq!(
        entries,
        expected.map(|(s, o, a)| (s.to_string(), o.to_string(), a.to_string()))
    );
    let deploy = env.ledger_of("deploy").await.pop().unwrap();
    assert_eq!(deploy["commit"], SHA);
    assert_eq!(deploy["instances"].as_array().unwrap().len(), 2);
}
