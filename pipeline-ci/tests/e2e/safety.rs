//! Release safety against moto: the lock and the queue, the ledger and the
//! test gate, crash recovery at several points, gc, and the HTML dashboard,
//! checked through the S3, EC2 and ELBv2 APIs (and Chromium for the page).

use std::time::Duration;

use pipeline_fixtures::{BuilderBehaviour, Guest, guest, seed_balancers};

use crate::support::{
    Env, Kind, SHA, SHA2, SHA3, classic, eventually, healthy, registered, target_group,
};

const SHA4: &str = "2222222222222222222222222222222222222222";

/// prod1 (2 instances) behind the seeded `kind` of balancer, which drains
/// for `drain` seconds (the config's `drain_timeout` too), a guest, the
/// config written.
async fn world(kind: Kind, drain: u32) -> (Env, pipeline_fixtures::Balancers, Guest) {
    let env = Env::new().await;
    let balancers = seed_balancers(&env.sdk, &env.world, "shop", drain).await;
    let guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let load_balancer = match kind {
        Kind::Classic => classic(&balancers),
        Kind::TargetGroup => target_group(&balancers),
    };
    let environment = env
        .environment("prod1", &load_balancer)
        .replace("drain_timeout: 2s", &format!("drain_timeout: {drain}s"));
    env.write_config(&format!("{}environments:\n{environment}", env.config("")));
    (env, balancers, guest)
}

/// Builds `shas` (test gate skipped) and deploys the first to prod1.
async fn serving_first(env: &Env, shas: &[&str]) {
    env.build_all(shas).await;
    env.ok(&["deploy", "--env", "prod1", "--commit", shas[0]])
        .await;
}

/// Every instance of the app in prod1, any commit, that is not terminated.
async fn not_terminated(env: &Env) -> Vec<String> {
    env.live_in("prod1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_gate_and_the_ledger() {
    let (env, _balancers, _guest) = world(Kind::TargetGroup, 1).await;
    let user = [("USER", "ada")];

    let untested = env.pipeline_with(&["build", "--commit", SHA], &user).await;
    assert_eq!(untested.code, 1, "{untested:#?}");
    assert!(
        untested.stderr.contains("has no passing test record"),
        "{untested:#?}"
    );
    assert!(env.release_images(&env.world.region, SHA).await.is_empty());

    let failing = env
        .pipeline_with(&["test", "--commit", SHA2, "--", "false"], &user)
        .await;
    assert_eq!(failing.code, 1);
    let refused = env.pipeline_with(&["build", "--commit", SHA2], &user).await;
    assert_eq!(
        refused.code, 1,
        "a failed test does not open the gate: {refused:#?}"
    );

    let passing = env
        .pipeline_with(&["test", "--commit", SHA, "--", "true"], &user)
        .await;
    assert_eq!(passing.code, 0, "{passing:#?}");
    let built = env.pipeline_with(&["build", "--commit", SHA], &user).await;
    assert_eq!(built.code, 0, "{built:#?}");
    let skipped = env
        .pipeline_with(&["build", "--commit", SHA2, "--skip-test-gate"], &user)
        .await;
    assert_eq!(skipped.code, 0, "{skipped:#?}");
    let deployed = env
        .pipeline_with(&["deploy", "--env", "prod1", "--commit", SHA], &user)
        .await;
    assert_eq!(deployed.code, 0, "{deployed:#?}");

    // Through S3: one entry per stage run, with actor and outcome.
    let entries = env.ledger().await;
    let seen: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["stage"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("build", "failed"),
        ("test", "failed"),
        ("build", "failed"),
        ("test", "passed"),
        ("build", "succeeded"),
        ("build", "succeeded"),
        ("deploy", "succeeded"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(seen, expected, "{entries:#?}");
    assert!(entries.iter().all(|e| e["actor"] == "ada"), "{entries:#?}");
    assert_eq!(entries[5]["note"], "test gate skipped (--skip-test-gate)");
    let deploy = &entries[6];
    assert_eq!(deploy["env"], "prod1");
    assert_eq!(deploy["commit"], SHA);
    assert_eq!(deploy["instances"].as_array().unwrap().len(), 2);
    assert!(deploy["ami"].as_str().unwrap().starts_with("ami-"));
    for e in &entries {
        let text = e.to_string();
        assert!(
            !text.contains("testing") && !text.to_lowercase().contains("secret"),
            "{text}"
        );
    }
    // No lock left behind.
    assert!(env.state_keys("locks/").await.is_empty());

    let history = env
        .ok(&["history", "--env", "prod1", "--output", "json"])
        .await;
    let shown = history.json()["entries"].as_array().unwrap().clone();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["stage"], "deploy");
    let text = env.pipeline(&["history", "--limit", "3"]).await;
    // A header, then the three entries.
    assert_eq!(text.stdout.lines().count(), 4, "{text:#?}");
    assert!(text.stdout.starts_with("FINISHED"), "{text:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_refuses_or_queues_and_the_newest_queued_wins() {
    let (env, balancers, _guest) = world(Kind::TargetGroup, 1).await;
    env.build_all(&[SHA, SHA2, SHA3]).await;
    // A deploy in flight: its lock, as `pipeline deploy` writes it, held
    // for as long as this test says (its heartbeat is this test).
    let holder = serde_json::json!({
        "run": "20261122T120000Z-a1a1a1", "stage": "deploy", "commit": SHA,
        "actor": "ann", "job_url": "https://ci.example.com/job/1",
        "started_at": "2026-11-22T12:00:00Z", "expires_ms": 4_102_444_800_000i64,
    });
    env.s3()
        .put_object()
        .bucket(&env.world.state_bucket)
        .key("locks/shop/prod1")
        .body(holder.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();

    // B, not waiting: exit 3 with the holder's details; nothing launched.
    let b = env
        .pipeline(&["deploy", "--env", "prod1", "--commit", SHA2])
        .await;
    assert_eq!(b.code, 3, "{b:#?}");
    assert!(
        b.stderr.contains("prod1 is locked by deploy run 20261122T120000Z-a1a1a1 of 4b825dc642cb by ann since 2026-11-22T12:00:00Z (https://ci.example.com/job/1)"),
        "{b:#?}"
    );
    assert!(not_terminated(&env).await.is_empty());

    // C waits in the queue; D queues behind it: C is superseded (exit 0).
    let c = env.spawn(&[
        "deploy",
        "--env",
        "prod1",
        "--commit",
        SHA2,
        "--lock-timeout",
        "60s",
    ]);
    eventually("C to queue", || async {
        env.state_keys("queue/shop/prod1/").await.len() == 1
    })
    .await;
    let d = env.spawn(&[
        "deploy",
        "--env",
        "prod1",
        "--commit",
        SHA3,
        "--lock-timeout",
        "60s",
    ]);
    let c = c.wait().await;
    assert_eq!(c.code, 0, "{c:#?}");
    assert!(c.stdout.contains("superseded by deploy run"), "{c:#?}");
    assert!(c.stdout.contains(&SHA3[..12]), "{c:#?}");
    assert!(
        not_terminated(&env).await.is_empty(),
        "nothing deployed while the lock is held"
    );

    // A human removes the holder's lock: D takes it and deploys.
    let unlock = env
        .pipeline_with(&["unlock", "--env", "prod1"], &[("USER", "bob")])
        .await;
    assert_eq!(unlock.code, 0, "{unlock:#?}");
    let d = d.wait().await;
    assert_eq!(d.code, 0, "{d:#?}");

    let serving = env.live_instances("prod1", SHA3).await;
    assert_eq!(serving.len(), 2);
    assert_eq!(healthy(&env, &balancers, Kind::TargetGroup).await, serving);
    assert_eq!(not_terminated(&env).await, serving);
    assert!(env.state_keys("locks/").await.is_empty());
    assert!(env.state_keys("queue/").await.is_empty());
    let outcomes: Vec<_> = env
        .ledger_of("deploy")
        .await
        .into_iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect();
    // B was refused before it began: only C and D ran.
    assert_eq!(outcomes, ["superseded", "succeeded"], "C, D");
    let unlocks = env.ledger_of("unlock").await;
    assert_eq!(unlocks.len(), 1, "{unlocks:#?}");
    assert_eq!(unlocks[0]["actor"], "bob");
    assert_eq!(unlocks[0]["env"], "prod1");
    assert!(
        unlocks[0]["note"]
            .as_str()
            .unwrap()
            .contains("removed the lock of deploy run 20261122T120000Z-a1a1a1"),
        "{unlocks:#?}"
    );
}

/// The mutating EC2 and ELB actions the pipeline made while recording.
fn mutations(env: &Env) -> Vec<String> {
    env.aws_calls()
        .into_iter()
        .filter(|c| c.is_mutating())
        .map(|c| c.action)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deploys_started_together_never_interleave() {
    let (env, balancers, _guest) = world(Kind::TargetGroup, 1).await;
    serving_first(&env, &[SHA, SHA2, SHA3, SHA4]).await;
    // What one deploy over a serving fleet changes, in order.
    env.moto.reset_recording();
    env.moto.start_recording();
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA2])
        .await;
    env.moto.stop_recording();
    let one = mutations(&env);
    assert!(one.contains(&"TerminateInstances".to_string()), "{one:?}");

    // Started together, not waiting: one deploys, the other exits 3
    // naming it, and changes nothing.
    env.moto.reset_recording();
    env.moto.start_recording();
    let deploy = |sha| {
        [
            "deploy", "--env", "prod1", "--commit", sha, "--output", "json",
        ]
    };
    let a = env.spawn(&deploy(SHA3));
    let b = env.spawn(&deploy(SHA));
    let (a, b) = (a.wait().await, b.wait().await);
    env.moto.stop_recording();
    let (won, lost, winner) = match (a.code, b.code) {
        (0, 3) => (a, b, SHA3),
        (3, 0) => (b, a, SHA),
        _ => panic!("one succeeds, one exits 3:\n{a:#?}\n{b:#?}"),
    };
    assert!(
        lost.stderr.contains(&format!(
            "prod1 is locked by deploy run {}",
            won.json()["run"].as_str().unwrap()
        )) && lost.stderr.contains(&winner[..12]),
        "the holder's details: {lost:#?}"
    );
    assert_eq!(mutations(&env), one, "only the winner changed anything");
    let serving = env.live_instances("prod1", winner).await;
    assert_eq!(serving.len(), 2);
    assert_eq!(not_terminated(&env).await, serving);

    // Started together, both willing to wait: one after the other, each
    // making exactly the changes of a lone deploy, never interleaved.
    env.moto.reset_recording();
    env.moto.start_recording();
    let a = env.spawn(&[
        "deploy",
        "--env",
        "prod1",
        "--commit",
        SHA2,
        "--lock-timeout",
        "60s",
    ]);
    let b = env.spawn(&[
        "deploy",
        "--env",
        "prod1",
        "--commit",
        SHA4,
        "--lock-timeout",
        "60s",
    ]);
    let (a, b) = (a.wait().await, b.wait().await);
    env.moto.stop_recording();
    assert_eq!((a.code, b.code), (0, 0), "{a:#?}\n{b:#?}");
    assert_eq!(mutations(&env), [one.clone(), one].concat());
    let (x, y) = (
        env.live_instances("prod1", SHA2).await,
        env.live_instances("prod1", SHA4).await,
    );
    let serving = if x.is_empty() { y } else { x };
    assert_eq!(serving.len(), 2, "one of them serves, alone");
    assert_eq!(healthy(&env, &balancers, Kind::TargetGroup).await, serving);
    assert_eq!(not_terminated(&env).await, serving, "no orphans");
    assert!(env.state_keys("locks/").await.is_empty());
    assert!(env.state_keys("queue/").await.is_empty());
}

/// Where a deploy is killed (after launch is
/// `deploy::a_killed_deploy_is_converged_by_the_next_run`).
#[derive(Clone, Copy, Debug)]
enum Point {
    /// The new fleet is registered; the deploy waits for it to be healthy.
    AfterRegister,
    /// The old fleet is deregistered but not yet terminated: the deploy
    /// waits out connection draining. A Classic ELB, since moto drops a
    /// deregistered target-group target at once where AWS keeps it
    /// `draining`, which leaves no window between deregister and terminate.
    AfterDeregister,
}

impl Point {
    fn world(self) -> (Kind, u32) {
        match self {
            Point::AfterRegister => (Kind::TargetGroup, 1),
            Point::AfterDeregister => (Kind::Classic, 8),
        }
    }
}

/// Deploys A, starts deploying B, kills it with SIGKILL at `point` (seen
/// through the EC2 and ELB APIs), then reruns the deploy of B: exactly N
/// healthy instances of B, nothing else of the app running, the lock free.
async fn killed_at(point: Point) {
    let (kind, drain) = point.world();
    let (env, balancers, _guest) = world(kind, drain).await;
    serving_first(&env, &[SHA, SHA2]).await;
    let old = env.live_instances("prod1", SHA).await;
    assert_eq!(old.len(), 2);

    let child = env.spawn(&["deploy", "--env", "prod1", "--commit", SHA2]);
    let in_balancer = || registered(&env, &balancers, kind);
    match point {
        Point::AfterRegister => {
            eventually("the new fleet to be registered", || async {
                let new = env.live_instances("prod1", SHA2).await;
                let registered = in_balancer().await;
                !new.is_empty() && new.iter().all(|i| registered.contains(i))
            })
            .await
        }
        Point::AfterDeregister => {
            eventually("the old fleet to be deregistered", || async {
                let registered = in_balancer().await;
                !registered.is_empty() && old.iter().all(|i| !registered.contains(i))
            })
            .await
        }
    }
    child.signal("KILL");
    assert_ne!(child.wait().await.code, 0);
    if let Point::AfterDeregister = point {
        // Killed inside the window: the old fleet out of the balancer,
        // still running, the new one serving.
        assert_eq!(
            env.live_instances("prod1", SHA).await,
            old,
            "killed before the old fleet was terminated"
        );
        let new = env.live_instances("prod1", SHA2).await;
        assert_eq!(healthy(&env, &balancers, kind).await, new);
    }

    let rerun = env
        .pipeline(&[
            "deploy",
            "--env",
            "prod1",
            "--commit",
            SHA2,
            "--lock-timeout",
            "30s",
        ])
        .await;
    assert_eq!(rerun.code, 0, "{point:?}: {rerun:#?}");
    let new = env.live_instances("prod1", SHA2).await;
    assert_eq!(new.len(), 2, "{point:?}: exactly N: {new:?}");
    assert_eq!(healthy(&env, &balancers, kind).await, new, "{point:?}");
    assert_eq!(
        in_balancer().await.len(),
        2,
        "{point:?}: nothing else registered"
    );
    assert_eq!(not_terminated(&env).await, new, "{point:?}: no orphans");
    assert!(
        env.state_keys("locks/").await.is_empty(),
        "{point:?}: lock free"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_after_register_converges() {
    killed_at(Point::AfterRegister).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_after_deregister_converges() {
    killed_at(Point::AfterDeregister).await;
}

/// A build killed with its builder running: the rerun takes the expired
/// lock over, terminates that builder (found by the killed run's tag) and
/// bakes the commit once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_killed_mid_bake_converges() {
    let env = Env::new().await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_secs(3)),
    );
    env.write_config(&env.config(""));

    let child = env.spawn(&["build", "--skip-test-gate", "--commit", SHA]);
    eventually("the builder to launch", || async {
        !env.builders().await.is_empty()
    })
    .await;
    child.signal("KILL");
    assert_ne!(child.wait().await.code, 0);
    let killed = env.builders().await;
    assert_eq!(killed.len(), 1);
    assert_ne!(killed[0].1, "terminated", "left behind: {killed:?}");

    let rerun = env
        .ok(&[
            "build",
            "--skip-test-gate",
            "--commit",
            SHA,
            "--lock-timeout",
            "30s",
        ])
        .await;
    assert!(
        rerun.stderr.contains("took over the expired lock"),
        "{rerun:#?}"
    );
    let builders = env.builders().await;
    assert_eq!(builders.len(), 2, "the killed run's and the rerun's");
    assert!(
        builders.iter().all(|(_, state)| state == "terminated"),
        "no orphan builder: {builders:?}"
    );
    assert_eq!(env.release_images("us-east-1", SHA).await.len(), 1);
    assert!(env.state_keys("locks/").await.is_empty(), "lock free");
    // The ledger tells: the takeover, and what the rerun cleaned up.
    let entries = env.ledger().await;
    assert!(
        entries.iter().any(|e| e["outcome"] == "lock-takeover"),
        "{entries:#?}"
    );
    let build = entries
        .iter()
        .find(|e| e["stage"] == "build" && e["outcome"] == "succeeded")
        .unwrap();
    assert!(
        build["note"].as_str().unwrap().contains(&format!(
            "terminated {} left by the killed run",
            killed[0].0
        )),
        "{build:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_what_is_in_use_and_the_newest() {
    let (env, _balancers, _guest) = world(Kind::TargetGroup, 1).await;
    let mut amis = Vec::new();
    for sha in [SHA, SHA2, SHA3, SHA4] {
        let run = env
            .ok(&[
                "build",
                "--skip-test-gate",
                "--commit",
                sha,
                "--output",
                "json",
            ])
            .await;
        amis.push(run.json()["ami"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct creation times
    }
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    let snapshots = |images: Vec<aws_sdk_ec2::types::Image>| -> Vec<String> {
        images
            .iter()
            .flat_map(|i| i.block_device_mappings())
            .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect()
    };
    let doomed = [SHA2, SHA3];
    let mut doomed_snapshots = Vec::new();
    for sha in doomed {
        doomed_snapshots.extend(snapshots(env.release_images(&env.world.region, sha).await));
    }
    assert_eq!(doomed_snapshots.len(), 2);

    let dry = env
        .ok(&["gc", "--keep", "1", "--dry-run", "--output", "json"])
        .await;
    assert_eq!(dry.json()["removed"].as_array().unwrap().len(), 2);
    for sha in [SHA, SHA2, SHA3, SHA4] {
        assert_eq!(
            env.release_images(&env.world.region, sha).await.len(),
            1,
            "dry run kept {sha}"
        );
    }

    let gc = env.ok(&["gc", "--keep", "1", "--output", "json"]).await;
    let kept: Vec<String> = gc.json()["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, [amis[3].clone(), amis[0].clone()], "{gc:#?}");
    // The ledger, through S3: both runs, and which AMIs went.
    let runs = env.ledger_of("gc").await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(
        (&runs[0]["outcome"], &runs[1]["outcome"]),
        (&"dry-run".into(), &"succeeded".into())
    );
    assert!(runs.iter().all(|e| e["actor"] == "e2e"), "{runs:#?}");
    for (run, verb) in runs.iter().zip(["would deregister", "deregistered"]) {
        let note = run["note"].as_str().unwrap();
        assert!(note.starts_with(verb), "{note}");
        for ami in [&amis[1], &amis[2]] {
            assert!(note.contains(ami.as_str()), "{note} names {ami}");
        }
    }
    // Through EC2: the in-use and the newest stay, the rest and their snapshots go.
    assert_eq!(env.release_images(&env.world.region, SHA).await.len(), 1);
    assert_eq!(env.release_images(&env.world.region, SHA4).await.len(), 1);
    for sha in doomed {
        assert!(
            env.release_images(&env.world.region, sha).await.is_empty(),
            "{sha} removed"
        );
    }
    let left = env
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    for id in &doomed_snapshots {
        assert!(
            left.snapshots()
                .iter()
                .all(|s| s.snapshot_id() != Some(id.as_str())),
            "snapshot {id} deleted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_dashboard_renders_in_chromium() {
    let (env, _balancers, _guest) = world(Kind::TargetGroup, 1).await;
    serving_first(&env, &[SHA]).await;
    // The page and Chromium's profile go in the Env's scratch directory,
    // removed with it.
    let page = env.dir().join("dashboard.html");
    env.ok(&["status", "--html", page.to_str().unwrap()]).await;

    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is installed (make test installs Debian's chromium)");
    let profile = env.dir().join("chromium-profile");
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("file://{}", page.display());
    let flags = |extra: &[String]| {
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1600,900",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra.iter().cloned());
        args.push(url.clone());
        args
    };
    let dom = std::process::Command::new(chromium)
        .args(flags(&["--dump-dom".into()]))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("id=\"live\""), "{dom}");
    assert!(dom.contains("prod1"), "{dom}");
    assert!(dom.contains("2/2 healthy"), "{dom}");
    assert!(dom.contains(&SHA[..7]), "{dom}");
    assert!(dom.contains("<td>deploy</td>"), "the last events: {dom}");
    let status = std::process::Command::new(chromium)
        .args(flags(&[format!("--screenshot={}", shot.display())]))
        .status()
        .unwrap();
    assert!(status.success());
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
