//! AWS as it is: the whole release train through the realistic proxy
//! (`fixtures/moto/realistic.py`) in a throttling and fault storm, on
//! AWS's clock, ends exactly as a calm run against moto does.

use std::collections::BTreeMap;
use std::time::Duration;

use pipeline_fixtures::{BuilderBehaviour, guest, seed_balancers, seed_hosted_zone};
use serde_json::json;

use crate::support::{Env, Kind, SHA, SHA2, healthy, registered, target_group};

const RECORD: &str = "www.example.com";

/// The storm: AWS's token buckets plus 30 % throttles on top, 3 % 500s
/// before the call, 1 % reset connections and 2 % answers lost after the
/// call was applied, a little latency, and AWS's clock at 1 AWS second =
/// 20 ms (an instance pending 15 s, a target healthy after 30 s x 5, an
/// image pending 2 min, a Route53 change pending 40 s).
pub(crate) fn storm(seed: u64) -> serde_json::Value {
    json!({
        "seed": seed,
        "throttle": {"buckets": true, "extra_rate": 0.3},
        "faults": {"error_rate": 0.03, "reset_rate": 0.01, "lost_rate": 0.02},
        "latency": {"ms": 5, "jitter_ms": 5},
        "clock": clock(0.02),
    })
}

/// AWS's clock alone, at `scale` real seconds per AWS second.
pub(crate) fn clock(scale: f64) -> serde_json::Value {
    json!({
        "scale": scale,
        "instance_pending": 15,
        "instance_shutting_down": 10,
        "image_pending": 120,
        "change_pending": 40,
    })
}

/// What a release train leaves behind, read through moto's API.
#[derive(Debug, PartialEq, Eq)]
struct EndState {
    /// AMIs per commit.
    images: BTreeMap<String, usize>,
    /// Per slot: its live instances' commits, the count healthy in its
    /// target group, and whether what is registered is exactly what lives.
    slots: BTreeMap<String, (Vec<String>, usize, bool)>,
    /// Builder instances not terminated.
    builders: usize,
    /// Objects under `locks/` and `queue/`.
    locks: Vec<String>,
    /// The slot the record points at.
    live: Option<String>,
    /// The ledger: (stage, outcome, env, commit), oldest first.
    ledger: Vec<[String; 4]>,
}

/// Seeds two slots and a zone, runs build, deploy, promote (twice) and a
/// rollback, each of which must exit 0, and reads what is left.
async fn release_train(aws: Option<serde_json::Value>) -> (EndState, Option<serde_json::Value>) {
    let mut env = Env::new().await;
    let prod1 = seed_balancers(&env.sdk, &env.world, "prod1", 30).await;
    let prod2 = seed_balancers(&env.sdk, &env.world, "prod2", 30).await;
    let zone = seed_hosted_zone(&env.sdk, "example.com").await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let slot = |name: &str, balancers| {
        env.environment(name, &target_group(balancers))
            .replace("health_timeout: 20s", "health_timeout: 60s")
    };
    let config = format!(
        "{}environments:\n{}{}promote:\n  hosted_zone: {zone}\n  record: {RECORD}\n  timeout: 60s\n  poll_interval: 100ms\n",
        env.config("").replace("timeout: 30s", "timeout: 60s"),
        slot("prod1", &prod1),
        slot("prod2", &prod2),
    );
    env.write_config(&config);
    if let Some(settings) = aws {
        env.meet_aws(settings);
    }

    for args in [
        &["build", "--skip-test-gate", "--commit", SHA][..],
        &["deploy", "--env", "prod1", "--commit", SHA],
        &["promote", "--commit", SHA],
        &["build", "--skip-test-gate", "--commit", SHA2],
        &["deploy", "--env", "prod2", "--commit", SHA2],
        &["promote", "--commit", SHA2],
        &["rollback"],
    ] {
        let run = env.ok(args).await;
        eprintln!("{args:?}: {:.1}s", run.elapsed.as_secs_f64());
    }

    let mut images = BTreeMap::new();
    for sha in [SHA, SHA2] {
        images.insert(
            sha.to_string(),
            env.release_images(&env.world.region, sha).await.len(),
        );
    }
    let mut slots = BTreeMap::new();
    for (name, balancers) in [("prod1", &prod1), ("prod2", &prod2)] {
        let live = env.live_in(name).await;
        let mut commits = Vec::new();
        for sha in [SHA, SHA2] {
            commits.extend(
                env.live_instances(name, sha)
                    .await
                    .iter()
                    .map(|_| sha.to_string()),
            );
        }
        let mut in_balancer = registered(&env, balancers, Kind::TargetGroup).await;
        in_balancer.sort();
        let count = healthy(&env, balancers, Kind::TargetGroup).await.len();
        slots.insert(name.to_string(), (commits, count, in_balancer == live));
    }
    let builders = env
        .builders()
        .await
        .into_iter()
        .filter(|(_, state)| state != "terminated")
        .count();
    let mut locks = env.state_keys("locks/").await;
    locks.extend(env.state_keys("queue/").await);
    let live = crate::promote::record_in(&env.sdk, &zone, RECORD)
        .await
        .map(|(_, host)| {
            if host == prod1.alb_dns_name.to_lowercase() {
                "prod1".to_string()
            } else if host == prod2.alb_dns_name.to_lowercase() {
                "prod2".to_string()
            } else {
                host
            }
        });
    let ledger = env
        .ledger()
        .await
        .iter()
        .map(|e| {
            [&e["stage"], &e["outcome"], &e["env"], &e["commit"]]
                .map(|v| v.as_str().unwrap_or("-").to_string())
        })
        .collect();
    let stats = env.aws.as_ref().map(|aws| aws.stats());
    (
        EndState {
            images,
            slots,
            builders,
            locks,
            live,
            ledger,
        },
        stats,
    )
}

/// The sum of a stats map's counts (`{"ec2:RunInstances": 3, ...}`, or
/// nested one level deeper).
fn total(value: &serde_json::Value) -> u64 {
    match value {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::Object(map) => map.values().map(total).sum(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_train_in_a_storm_ends_as_a_calm_one() {
    let started = std::time::Instant::now();
    let ((calm, _), (stormy, stats)) =
        tokio::join!(release_train(None), release_train(Some(storm(15))));
    eprintln!("both trains: {:.1}s", started.elapsed().as_secs_f64());
    let stats = stats.expect("the storm's stats");

    // The calm run is what a release train must leave: one AMI per commit,
    // two healthy instances per slot running its commit and nothing else
    // alive, no builder, no lock, the record back on prod1.
    assert_eq!(calm.images.values().copied().collect::<Vec<_>>(), [1, 1]);
    assert_eq!(
        calm.slots["prod1"],
        (vec![SHA.to_string(); 2], 2, true),
        "{calm:#?}"
    );
    assert_eq!(calm.slots["prod2"], (vec![SHA2.to_string(); 2], 2, true));
    assert_eq!((calm.builders, calm.locks.len()), (0, 0));
    assert_eq!(calm.live.as_deref(), Some("prod1"));
    assert_eq!(
        stormy, calm,
        "the storm's train ended otherwise; stats: {stats:#}"
    );

    // And the storm was one: throttles, faults and lost answers were met.
    let (throttled, faults) = (total(&stats["throttled"]), total(&stats["faults"]));
    eprintln!("storm: {throttled} throttled, {faults} faults; {stats:#}");
    assert!(throttled >= 20, "{stats:#}");
    assert!(faults >= 3, "{stats:#}");
}
