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
        "instance_pending": PENDING_S,
        "instance_shutting_down": 10,
        "image_pending": IMAGE_PENDING_S,
        "change_pending": CHANGE_PENDING_S,
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

/// One deploy of `count` instances over a fleet of `count`, on AWS's clock
/// at `scale`, as the realistic proxy saw it.
pub(crate) struct Measured {
    /// Requests per `service:Action` the deploy made.
    pub(crate) calls: BTreeMap<String, u64>,
    /// Throttling answers it met.
    pub(crate) throttled: u64,
    /// The deploy's wall time.
    pub(crate) wall: Duration,
    /// What AWS's clock alone imposes on the critical path: an instance
    /// pending, a target's interval x healthy threshold, `healthy_for`, and
    /// the old fleet's deregistration delay.
    pub(crate) floor: Duration,
    /// The slowest a wait noticed a change, in AWS seconds, per kind.
    pub(crate) notice: BTreeMap<String, f64>,
}

/// The health check the seeded target groups have (moto's defaults, as
/// AWS's): every 30 s, healthy after 5 checks.
const HEALTHY_AFTER_S: f64 = 30.0 * 5.0;
const PENDING_S: f64 = 15.0;
const DRAIN_S: u32 = 30;
const HEALTHY_FOR_MS: u64 = 300;
/// [`clock`]'s image pending and Route53 change pending, in AWS seconds.
const IMAGE_PENDING_S: f64 = 120.0;
const CHANGE_PENDING_S: f64 = 40.0;

/// Deploys `count` instances of SHA2 over `count` of SHA through the proxy
/// on AWS's clock at `scale` (the first fleet goes straight to moto), with
/// the pipeline's intervals scaled as the clock is (a 2 s poll is
/// `2 * scale`), and measures the second deploy.
pub(crate) async fn deploy_at_scale(count: u32, scale: f64) -> Measured {
    let mut env = Env::new().await;
    let prod1 = seed_balancers(&env.sdk, &env.world, "prod1", DRAIN_S).await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let poll = ((2000.0 * scale) as u64).max(10);
    let config = format!(
        "{}environments:\n{}",
        env.config(""),
        env.environment("prod1", &target_group(&prod1))
            .replace("count: 2", &format!("count: {count}"))
            // Deadlines, not waits: moto takes minutes to launch and
            // describe a thousand instances.
            .replace("health_timeout: 20s", "health_timeout: 1800s")
            .replace(
                "healthy_for: 200ms",
                &format!("healthy_for: {HEALTHY_FOR_MS}ms")
            )
            .replace("drain_timeout: 2s", "drain_timeout: 600s")
            .replace("poll_interval: 100ms", &format!("poll_interval: {poll}ms")),
    );
    env.write_config(&config);
    env.build_all(&[SHA, SHA2]).await;
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;

    env.meet_aws(json!({"seed": 1, "throttle": {"buckets": true}, "clock": clock(scale)}));
    let run = env
        .ok(&["deploy", "--env", "prod1", "--commit", SHA2])
        .await;
    let stats = env.aws.as_ref().unwrap().stats();
    assert_eq!(
        env.live_instances("prod1", SHA2).await.len(),
        count as usize
    );
    assert!(env.live_instances("prod1", SHA).await.is_empty());
    Measured::from_stats(
        &stats,
        run.elapsed,
        Duration::from_secs_f64((PENDING_S + HEALTHY_AFTER_S + f64::from(DRAIN_S)) * scale)
            + Duration::from_millis(HEALTHY_FOR_MS),
    )
}

impl Measured {
    /// A run's figures from the proxy's stats of it.
    fn from_stats(stats: &serde_json::Value, wall: Duration, floor: Duration) -> Measured {
        let calls = stats["requests"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect();
        let notice = stats["clock"]
            .as_object()
            .map(|kinds| {
                kinds
                    .iter()
                    .filter_map(|(kind, v)| {
                        Some((kind.clone(), v["latency_aws_s"]["max"].as_f64()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Measured {
            calls,
            throttled: total(&stats["throttled"]),
            wall,
            floor,
            notice,
        }
    }

    /// One row of the benchmark's Markdown table, after `first` (N or the stage).
    fn row(&self, first: &str) -> String {
        let by: Vec<String> = self.calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let notice: Vec<String> = self
            .notice
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect();
        format!(
            "| {first} | {} | {} | {} | {:.2} s | {:.2} s | {:.2} | {} |",
            self.calls.values().sum::<u64>(),
            by.join(", "),
            self.throttled,
            self.wall.as_secs_f64(),
            self.floor.as_secs_f64(),
            self.wall.as_secs_f64() / self.floor.as_secs_f64(),
            notice.join(", ")
        )
    }
}

/// How long the guest simulator's builder runs once AWS shows it running.
const BUILDER_RUNS: Duration = Duration::from_millis(50);

/// A bake and a promote on AWS's clock at `scale`, each alone through the
/// proxy (what comes before them goes to moto directly): the bake of
/// SHA2, whose builder is pending, runs for [`BUILDER_RUNS`] (the guest
/// simulator, through the proxy, sees it only once the clock shows it
/// running) and whose image is pending; and a promote from prod1 (SHA) to
/// prod2 (SHA2), whose change is pending. The pipeline's intervals are
/// scaled as the clock is.
pub(crate) async fn bake_and_promote_at(scale: f64) -> (Measured, Measured) {
    let mut env = Env::new().await;
    let prod1 = seed_balancers(&env.sdk, &env.world, "prod1", DRAIN_S).await;
    let prod2 = seed_balancers(&env.sdk, &env.world, "prod2", DRAIN_S).await;
    let zone = seed_hosted_zone(&env.sdk, "example.com").await;
    let poll = format!("poll_interval: {}ms", ((2000.0 * scale) as u64).max(10));
    let config = format!(
        "{}environments:\n{}{}promote:\n  hosted_zone: {zone}\n  record: {RECORD}\n  timeout: 600s\n  {poll}\n",
        env.config("")
            // Deadlines (the builder's and the image's), not waits.
            .replace("timeout: 30s", "timeout: 1800s")
            .replace("poll_interval: 100ms", &poll),
        env.environment("prod1", &target_group(&prod1)),
        env.environment("prod2", &target_group(&prod2)),
    );
    env.write_config(&config);
    let settings = json!({"seed": 1, "throttle": {"buckets": true}, "clock": clock(scale)});

    // The release before: built, deployed and promoted on moto.
    let guest = guest::spawn(&env.sdk, BuilderBehaviour::PowerOffAfter(BUILDER_RUNS));
    env.build_all(&[SHA]).await;
    drop(guest);
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    env.ok(&["promote", "--commit", SHA]).await;

    let proxy = env.meet_aws(settings.clone()).endpoint();
    let through_proxy = env.sdk.to_builder().endpoint_url(proxy).build();
    let guest = guest::spawn(
        &through_proxy,
        BuilderBehaviour::PowerOffAfter(BUILDER_RUNS),
    );
    let run = env
        .ok(&["build", "--skip-test-gate", "--commit", SHA2])
        .await;
    drop(guest);
    let bake = Measured::from_stats(
        &env.aws.as_ref().unwrap().stats(),
        run.elapsed,
        Duration::from_secs_f64((PENDING_S + IMAGE_PENDING_S) * scale) + BUILDER_RUNS,
    );
    assert_eq!(env.release_images(&env.world.region, SHA2).await.len(), 1);

    env.aws = None;
    env.ok(&["deploy", "--env", "prod2", "--commit", SHA2])
        .await;
    env.meet_aws(settings);
    let run = env.ok(&["promote", "--commit", SHA2]).await;
    let promote = Measured::from_stats(
        &env.aws.as_ref().unwrap().stats(),
        run.elapsed,
        Duration::from_secs_f64(CHANGE_PENDING_S * scale),
    );
    let live = crate::promote::record_in(&env.sdk, &zone, RECORD).await;
    assert_eq!(
        live.map(|(_, host)| host),
        Some(prod2.alb_dns_name.to_lowercase())
    );
    (bake, promote)
}

/// The calls of a deploy at N = 1, 10 and 100 on AWS's clock: the writes
/// are the same in number, and the reads do not grow with the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_makes_as_many_calls_for_100_instances_as_for_1() {
    let mut seen = Vec::new();
    for n in [1, 10, 100] {
        let m = deploy_at_scale(n, 0.01).await;
        let total: u64 = m.calls.values().sum();
        eprintln!(
            "N={n}: {total} calls, {} throttled, wall {:.2}s, floor {:.2}s: {:?}",
            m.throttled,
            m.wall.as_secs_f64(),
            m.floor.as_secs_f64(),
            m.calls
        );
        seen.push((n, m));
    }
    let writes = |m: &Measured| -> BTreeMap<String, u64> {
        m.calls
            .iter()
            .filter(|(k, _)| {
                let action = k.split(':').nth(1).unwrap_or("");
                !["Describe", "Get", "List", "Head"]
                    .iter()
                    .any(|p| action.starts_with(p))
            })
            .filter(|(k, _)| !k.starts_with("s3:"))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    // One instance goes to one subnet; from two on, one RunInstances per
    // subnet, whatever the count.
    let (one, ten, hundred) = (&seen[0].1, &seen[1].1, &seen[2].1);
    assert_eq!(writes(ten), writes(hundred), "AWS writes per deploy");
    assert_eq!(ten.calls.get("ec2:RunInstances"), Some(&2));
    assert_eq!(one.calls.get("ec2:RunInstances"), Some(&1));
    let reads = |m: &Measured| m.calls.values().sum::<u64>();
    assert!(
        reads(hundred) <= reads(one) + reads(one) / 2 + 5,
        "calls grew with the fleet: {} at N=1, {} at N=100",
        reads(one),
        reads(hundred)
    );
}

/// The benchmarks' clock: `$PIPELINE_BENCH_SCALE` real seconds per AWS
/// second (default 0.02).
fn bench_scale() -> f64 {
    std::env::var("PIPELINE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.02)
}

/// The benchmark of docs/benchmarks.md (`fixtures/bench/aws-bench.sh`):
/// a deploy on AWS's clock at each N of `$PIPELINE_BENCH_N` (default
/// 1,10,100,1000), as a Markdown table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: fixtures/bench/aws-bench.sh runs it"]
async fn bench_deploy_on_the_clock() {
    let ns = std::env::var("PIPELINE_BENCH_N").unwrap_or_else(|_| "1,10,100,1000".into());
    let scale = bench_scale();
    // libtest's "test NAME ... " ends on the line of the first print.
    println!();
    println!(
        "| N | calls | by action | throttled | wall | floor | wall / floor | slowest notice (AWS s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in ns.split(',').filter_map(|n| n.trim().parse().ok()) {
        println!("{}", deploy_at_scale(n, scale).await.row(&n.to_string()));
    }
}

/// The benchmark of docs/benchmarks.md (`fixtures/bench/aws-bench.sh`):
/// a bake and a promote on AWS's clock, as a Markdown table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: fixtures/bench/aws-bench.sh runs it"]
async fn bench_bake_and_promote_on_the_clock() {
    let scale = bench_scale();
    let (bake, promote) = bake_and_promote_at(scale).await;
    println!();
    println!(
        "| stage | calls | by action | throttled | wall | floor | wall / floor | slowest notice (AWS s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!("{}", bake.row("bake"));
    println!("{}", promote.row("promote"));
}

/// The subnet of each of `ids`, read through EC2's API.
async fn subnets_of(env: &Env, ids: &[String]) -> Vec<String> {
    let out = env
        .ec2
        .describe_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| i.subnet_id().unwrap_or_default().to_string())
        .collect()
}

/// A deploy meets AWS's capacity: a subnet whose zone has no capacity of
/// the type has its share launched in the other, at once; a full instance
/// quota fails the safe way saying what to raise, and `max_surge` makes the
/// same fleet fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_meets_a_full_zone_and_a_full_quota() {
    let mut env = Env::new().await;
    let prod1 = seed_balancers(&env.sdk, &env.world, "prod1", 0).await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let config = format!(
        "{}environments:\n{}",
        env.config(""),
        env.environment("prod1", &target_group(&prod1))
    );
    env.write_config(&config);
    env.build_all(&[SHA, SHA2]).await;
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    let (full, other) = (
        env.world.subnets[0].id.clone(),
        env.world.subnets[1].id.clone(),
    );

    // The first subnet's zone has no capacity: both instances go to the other.
    env.meet_aws(json!({"ec2": {"no_capacity_subnets": [full]}}));
    let run = env
        .ok(&["deploy", "--env", "prod1", "--commit", SHA2])
        .await;
    let refused = env.aws.as_ref().unwrap().stats()["refused"].clone();
    assert_eq!(
        refused["ec2:RunInstances"]["InsufficientInstanceCapacity"], 1,
        "one refusal, not retried: {refused}"
    );
    assert!(
        run.elapsed < Duration::from_secs(15),
        "took {:?}",
        run.elapsed
    );
    assert!(
        run.stderr.contains("InsufficientInstanceCapacity"),
        "{}",
        run.stderr
    );
    let new = env.live_instances("prod1", SHA2).await;
    assert_eq!(subnets_of(&env, &new).await, [other.clone(), other.clone()]);
    assert!(env.live_instances("prod1", SHA).await.is_empty());
    assert_eq!(healthy(&env, &prod1, Kind::TargetGroup).await, new);

    // Two alive and a quota of three: two more do not fit. Nothing new
    // stays, the fleet keeps serving, no lock is left.
    env.aws
        .as_ref()
        .unwrap()
        .set(&json!({"ec2": {"instance_limit": 3}}));
    let run = env
        .pipeline(&["deploy", "--env", "prod1", "--commit", SHA])
        .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("quota"), "{}", run.stderr);
    assert!(run.stderr.contains("max_surge"), "{}", run.stderr);
    assert!(env.live_instances("prod1", SHA).await.is_empty());
    assert_eq!(healthy(&env, &prod1, Kind::TargetGroup).await, new);
    assert!(env.state_keys("locks/").await.is_empty());

    // In batches of one, the fleet never needs more than three.
    env.write_config(&config.replace("    count: 2\n", "    count: 2\n    max_surge: 1\n"));
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    let now = env.live_instances("prod1", SHA).await;
    assert_eq!(now.len(), 2);
    assert!(env.live_instances("prod1", SHA2).await.is_empty());
    assert_eq!(healthy(&env, &prod1, Kind::TargetGroup).await, now);
}
