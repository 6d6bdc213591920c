//! `pipeline promote`, `rollback` and `status` against moto, checked through
//! the Route53 and ELBv2 APIs.

use std::time::Duration;

use pipeline_fixtures::{
    Balancers, BuilderBehaviour, Guest, guest, seed_balancers, seed_hosted_zone,
};

use crate::support::{Env, SHA, SHA2, target_group};

const RECORD: &str = "www.example.com";

/// Two slots behind their own ALBs, both commits baked, a hosted zone.
pub(crate) struct Slots {
    pub(crate) env: Env,
    pub(crate) config: String,
    pub(crate) prod1: Balancers,
    pub(crate) prod2: Balancers,
    pub(crate) zone: String,
    _guest: Guest,
}

pub(crate) async fn slots(record_type: &str) -> Slots {
    let env = Env::new().await;
    let prod1 = seed_balancers(&env.sdk, &env.world, "prod1", 1).await;
    let prod2 = seed_balancers(&env.sdk, &env.world, "prod2", 1).await;
    let zone = seed_hosted_zone(&env.sdk, "example.com").await;
    let guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(50)),
    );
    let config = format!(
        "{}environments:\n{}{}promote:\n  hosted_zone: {zone}\n  record: {RECORD}\n  record_type: {record_type}\n  timeout: 20s\n  poll_interval: 100ms\n",
        env.config(""),
        env.environment("prod1", &target_group(&prod1)),
        env.environment("prod2", &target_group(&prod2)),
    );
    env.write_config(&config);
    env.build_all(&[SHA, SHA2]).await;
    Slots {
        env,
        config,
        prod1,
        prod2,
        zone,
        _guest: guest,
    }
}

/// What the record points at, through ListResourceRecordSets: (type, host).
pub(crate) async fn record(s: &Slots) -> Option<(String, String)> {
    record_in(&s.env.sdk, &s.zone, RECORD).await
}

/// What `name` in `zone` points at: (type, host, lowercase, no final dot).
pub(crate) async fn record_in(
    sdk: &aws_config::SdkConfig,
    zone: &str,
    name: &str,
) -> Option<(String, String)> {
    let out = aws_sdk_route53::Client::new(sdk)
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap();
    out.resource_record_sets()
        .iter()
        .find(|r| r.name().trim_end_matches('.') == name)
        .map(|r| {
            let host = match r.alias_target() {
                Some(alias) => alias.dns_name().to_string(),
                None => r.resource_records()[0].value().to_string(),
            };
            (
                r.r#type().as_str().to_string(),
                host.trim_end_matches('.').to_lowercase(),
            )
        })
}

async fn cycle(record_type: &str, rr_type: &str) {
    let s = slots(record_type).await;
    let env = &s.env;
    let p1 = s.prod1.alb_dns_name.to_lowercase();
    let p2 = s.prod2.alb_dns_name.to_lowercase();
    let at = |host: &str| Some((rr_type.to_string(), host.to_string()));

    // A goes to prod1 and takes traffic first.
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    let first = env
        .ok(&["promote", "--commit", SHA, "--output", "json"])
        .await;
    assert_eq!(first.json()["to"], "prod1");
    assert_eq!(record(&s).await, at(&p1));

    // B goes to the idle slot, prod2; promote flips to it.
    env.ok(&["deploy", "--env", "prod2", "--commit", SHA2])
        .await;
    let promoted = env
        .ok(&["promote", "--commit", SHA2, "--output", "json"])
        .await;
    let out = promoted.json();
    assert_eq!(
        (out["from"].as_str(), out["to"].as_str()),
        (Some("prod1"), Some("prod2"))
    );
    assert_eq!(out["commit"], SHA2);
    assert_eq!(record(&s).await, at(&p2));

    // Rollback: back to prod1, which still runs A.
    let back = env.ok(&["rollback", "--output", "json"]).await;
    assert_eq!(back.json()["to"], "prod1");
    assert_eq!(back.json()["commit"], SHA);
    assert_eq!(record(&s).await, at(&p1));

    // Forward again.
    env.ok(&["promote", "--commit", SHA2]).await;
    assert_eq!(record(&s).await, at(&p2));

    // Promoting the live slot is a no-op that says so.
    let noop = env
        .ok(&["promote", "--to", "prod2", "--commit", SHA2])
        .await;
    assert!(noop.stdout.contains("live already"), "{noop:#?}");
    assert_eq!(record(&s).await, at(&p2));

    // status: the live slot and what each environment runs.
    let status = env.ok(&["status", "--output", "json"]).await;
    let st = status.json();
    assert_eq!(st["live"], "prod2");
    let envs = st["environments"].as_array().unwrap();
    let prod2 = envs.iter().find(|e| e["name"] == "prod2").unwrap();
    assert_eq!(prod2["healthy"], 2);
    assert_eq!(prod2["live"], true);
    assert_eq!(prod2["commits"][SHA2], 2);
    let prod1 = envs.iter().find(|e| e["name"] == "prod1").unwrap();
    assert_eq!(prod1["commits"][SHA], 2);
    let text = env.pipeline(&["status"]).await;
    assert!(
        text.stdout.starts_with("live: prod2 (www.example.com)"),
        "{text:#?}"
    );

    // The ledger, through S3: every flip with its slot, commit and actor.
    let flips: Vec<_> = env
        .ledger()
        .await
        .into_iter()
        .filter(|e| e["stage"] == "promote" || e["stage"] == "rollback")
        .collect();
    let seen: Vec<_> = flips
        .iter()
        .map(|e| {
            [&e["stage"], &e["outcome"], &e["env"], &e["commit"]]
                .map(|v| v.as_str().unwrap().to_string())
        })
        .collect();
    let expected = [
        ["promote", "promoted", "prod1", SHA],
        ["promote", "promoted", "prod2", SHA2],
        ["rollback", "rolled_back", "prod1", SHA],
        ["promote", "promoted", "prod2", SHA2],
        ["promote", "unchanged", "prod2", SHA2],
    ]
    .map(|row| row.map(str::to_string));
    assert_eq!(seen, expected, "{flips:#?}");
    assert!(flips.iter().all(|e| e["actor"] == "e2e"), "{flips:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_rollback_promote_with_a_cname() {
    cycle("cname", "CNAME").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_rollback_promote_with_an_alias() {
    cycle("alias", "A").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traffic_guard_leaves_the_record_alone() {
    let s = slots("cname").await;
    let env = &s.env;
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    env.ok(&["promote", "--commit", SHA]).await;
    let before = record(&s).await;

    // prod2 runs nothing yet.
    let empty = env.pipeline(&["promote", "--commit", SHA]).await;
    assert_eq!(empty.code, 1, "{empty:#?}");
    assert!(
        empty.stderr.contains("prod2 has 0 healthy instances"),
        "{}",
        empty.stderr
    );
    // prod2 runs A, but B is expected.
    env.ok(&["deploy", "--env", "prod2", "--commit", SHA]).await;
    let wrong = env.pipeline(&["promote", "--commit", SHA2]).await;
    assert_eq!(wrong.code, 1, "{wrong:#?}");
    assert!(
        wrong
            .stderr
            .contains(&format!("healthy instances of {SHA2}")),
        "{}",
        wrong.stderr
    );
    // An unknown slot is bad input.
    let unknown = env
        .pipeline(&["promote", "--to", "prod3", "--commit", SHA])
        .await;
    assert_eq!(unknown.code, 2, "{unknown:#?}");
    assert_eq!(record(&s).await, before);
}

/// Waits (up to 5 s) for the record to be weighted; its (slot, weight)s.
async fn mid_shift(s: &Slots) -> Vec<(String, i64)> {
    let client = aws_sdk_route53::Client::new(&s.env.sdk);
    for _ in 0..100 {
        let out = client
            .list_resource_record_sets()
            .hosted_zone_id(&s.zone)
            .send()
            .await
            .unwrap();
        let mut weighted: Vec<(String, i64)> = out
            .resource_record_sets()
            .iter()
            .filter(|r| r.name().trim_end_matches('.') == RECORD)
            .filter_map(|r| Some((r.set_identifier()?.to_string(), r.weight()?)))
            .collect();
        if !weighted.is_empty() {
            weighted.sort();
            return weighted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the weighted step was never visible");
}

/// prod1 live with A, B on prod2, and a two-step shift configured.
async fn ready_to_shift(s: &Slots) {
    let env = &s.env;
    env.write_config(&format!("{}  steps: [30, 100]\n  bake: 2s\n", s.config));
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    env.ok(&["promote", "--commit", SHA]).await;
    env.ok(&["deploy", "--env", "prod2", "--commit", SHA2])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gradual_shift_goes_through_weighted_records() {
    let s = slots("cname").await;
    let env = &s.env;
    ready_to_shift(&s).await;

    let child = env.spawn(&["promote", "--commit", SHA2, "--output", "json"]);
    // Mid-shift: two weighted records, 70 on prod1 and 30 on prod2.
    assert_eq!(
        mid_shift(&s).await,
        [("prod1".to_string(), 70), ("prod2".to_string(), 30)]
    );

    let run = child.wait().await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["steps"], serde_json::json!([30, 100]));
    assert_eq!(
        record(&s).await,
        Some(("CNAME".to_string(), s.prod2.alb_dns_name.to_lowercase()))
    );
}

/// kill -9 mid-shift leaves the weighted records and a lock that expires;
/// the next promote takes the lock over and carries the shift on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_killed_mid_shift_is_carried_on_by_the_next() {
    let s = slots("cname").await;
    let env = &s.env;
    ready_to_shift(&s).await;

    let child = env.spawn(&["promote", "--commit", SHA2]);
    assert_eq!(
        mid_shift(&s).await,
        [("prod1".to_string(), 70), ("prod2".to_string(), 30)]
    );
    child.signal("KILL");
    assert_ne!(child.wait().await.code, 0);
    assert_eq!(mid_shift(&s).await.len(), 2, "left half-way");

    let rerun = env
        .ok(&[
            "promote",
            "--commit",
            SHA2,
            "--lock-timeout",
            "30s",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(rerun.json()["to"], "prod2");
    assert_eq!(
        record(&s).await,
        Some(("CNAME".to_string(), s.prod2.alb_dns_name.to_lowercase())),
        "the record on prod2"
    );
    let sets = aws_sdk_route53::Client::new(&env.sdk)
        .list_resource_record_sets()
        .hosted_zone_id(&s.zone)
        .send()
        .await
        .unwrap();
    let named: Vec<_> = sets
        .resource_record_sets()
        .iter()
        .filter(|r| r.name().trim_end_matches('.') == RECORD)
        .collect();
    assert_eq!(named.len(), 1, "one simple record, no weights: {named:?}");
    assert!(named[0].set_identifier().is_none(), "{named:?}");
    assert!(env.state_keys("locks/").await.is_empty(), "lock free");
    assert!(
        env.ledger()
            .await
            .iter()
            .any(|e| e["outcome"] == "lock-takeover"),
        "the takeover is recorded"
    );
}

/// What moto does enforce of the one-batch change, through the real Route53
/// adapter: a DELETE that does not match a value the record ever had fails
/// the whole batch, and the record keeps its value. (That a DELETE must
/// match the *current* value is real Route53's check alone; the stage's
/// handling of it is unit-tested with mocks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_batch_with_a_stale_delete_changes_nothing() {
    use pipeline_core::aws::route53::Route53;
    use pipeline_core::ports::{Dns, Record, Target};

    let s = slots("cname").await;
    let env = &s.env;
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    env.ok(&["promote", "--commit", SHA]).await;
    let before = record(&s).await;

    let dns = Route53::new(&env.sdk);
    let cname = |host: &str| Record {
        name: RECORD.into(),
        target: Target::Cname(host.into()),
        ttl: Some(60),
        weighted: None,
    };
    let err = dns
        .replace(
            &s.zone,
            &[cname("stale.example.net")],
            &[cname(&s.prod2.alb_dns_name)],
        )
        .await
        .unwrap_err();
    assert!(
        err.aws_code().is_some(),
        "an AWS error with its code: {err}"
    );
    assert_eq!(record(&s).await, before, "nothing was overwritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_into_the_live_slot_is_refused_unless_allowed() {
    let s = slots("cname").await;
    let env = &s.env;
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    env.ok(&["promote", "--commit", SHA]).await;

    // Into the live slot by name: refused before any change.
    env.moto.start_recording();
    let live = env
        .pipeline(&[
            "--output", "json", "deploy", "--env", "prod1", "--commit", SHA2,
        ])
        .await;
    env.moto.stop_recording();
    assert_eq!(live.code, 2, "{live:#?}");
    assert_eq!(live.json()["kind"], "live_slot");
    assert!(
        live.stderr.contains("prod1 is the live slot") && live.stderr.contains("--slot idle"),
        "{}",
        live.stderr
    );
    let mutating: Vec<_> = env
        .aws_calls()
        .into_iter()
        .filter(|c| c.is_mutating())
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    assert_eq!(env.live_instances("prod1", SHA).await.len(), 2);
    assert!(env.live_instances("prod1", SHA2).await.is_empty());

    // A promote in flight holds both slots: a deploy to the idle slot
    // does not race it.
    let holder = serde_json::json!({
        "run": "promote-run", "stage": "promote", "commit": SHA, "actor": "grace",
        "job_url": null, "started_at": "2026-12-01T00:00:00Z",
        "expires_ms": 9_999_999_999_999i64,
    });
    env.s3()
        .put_object()
        .bucket(&env.world.state_bucket)
        .key("locks/shop/prod2")
        .body(holder.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let raced = env
        .pipeline(&["deploy", "--slot", "idle", "--commit", SHA2])
        .await;
    assert_eq!(raced.code, 3, "{raced:#?}");
    assert!(
        raced.stderr.contains("promote run promote-run"),
        "{}",
        raced.stderr
    );
    assert!(env.live_instances("prod2", SHA2).await.is_empty());
    env.ok(&["unlock", "--env", "prod2"]).await;

    // The idle slot, chosen by the record: prod2.
    let idle = env
        .ok(&[
            "--output", "json", "deploy", "--slot", "idle", "--commit", SHA2,
        ])
        .await;
    assert_eq!(idle.json()["env"], "prod2");
    assert_eq!(idle.json()["slot"], "idle");
    assert_eq!(env.live_instances("prod2", SHA2).await.len(), 2);
    assert_eq!(
        env.live_instances("prod1", SHA).await.len(),
        2,
        "prod1 untouched"
    );

    // With --allow-live it proceeds, and the ledger says so.
    let allowed = env
        .ok(&["deploy", "--env", "prod1", "--commit", SHA2, "--allow-live"])
        .await;
    assert!(allowed.stdout.contains("(the live slot)"), "{allowed:#?}");
    assert_eq!(env.live_instances("prod1", SHA2).await.len(), 2);
    let deploys = env.ledger_of("deploy").await;
    let last = deploys.last().unwrap();
    assert_eq!(last["env"], "prod1");
    assert!(
        last["note"]
            .as_str()
            .unwrap_or_default()
            .contains("--allow-live"),
        "{last}"
    );
    let refused = deploys.iter().find(|e| e["outcome"] == "failed").unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("live slot"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoting_the_live_slot_for_a_commit_it_does_not_run_is_refused() {
    let s = slots("cname").await;
    let env = &s.env;
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;
    env.ok(&["promote", "--commit", SHA]).await;
    let before = record(&s).await;

    let wrong = env
        .pipeline(&[
            "--output", "json", "promote", "--to", "prod1", "--commit", SHA2,
        ])
        .await;
    assert_eq!(wrong.code, 1, "{wrong:#?}");
    assert_eq!(wrong.json()["kind"], "guard_refused");
    assert!(
        wrong
            .stderr
            .contains(&format!("healthy instances of {SHA2}")),
        "{}",
        wrong.stderr
    );
    assert_eq!(record(&s).await, before);

    // The same slot and the commit it runs: a no-op, and only that.
    let noop = env
        .ok(&[
            "--output", "json", "promote", "--to", "prod1", "--commit", SHA,
        ])
        .await;
    assert_eq!(noop.json()["changed"], false);
    assert_eq!(noop.json()["commit"], SHA);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_record_is_adopted_only_when_asked_and_rollback_returns_to_it() {
    let s = slots("cname").await;
    let env = &s.env;
    // The team's old server answers www today.
    let route53 = aws_sdk_route53::Client::new(&env.sdk);
    use aws_sdk_route53::types::{
        Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
    };
    let old = ResourceRecordSet::builder()
        .name(RECORD)
        .r#type(RrType::Cname)
        .ttl(300)
        .resource_records(
            ResourceRecord::builder()
                .value("old-box.example.com")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    route53
        .change_resource_record_sets()
        .hosted_zone_id(&s.zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Create)
                        .resource_record_set(old)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let foreign = Some(("CNAME".to_string(), "old-box.example.com".to_string()));
    assert_eq!(record(&s).await, foreign);
    env.ok(&["deploy", "--env", "prod1", "--commit", SHA]).await;

    // Not taken over silently.
    let refused = env
        .pipeline(&["--output", "json", "promote", "--commit", SHA])
        .await;
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert_eq!(refused.json()["kind"], "foreign_record");
    assert!(
        refused.stderr.contains("old-box.example.com"),
        "{}",
        refused.stderr
    );
    assert_eq!(record(&s).await, foreign);

    // --adopt: promoted, and the ledger keeps what the record was.
    let adopted = env
        .ok(&["--output", "json", "promote", "--commit", SHA, "--adopt"])
        .await;
    assert_eq!(adopted.json()["to"], "prod1");
    assert!(
        adopted.json()["adopted"]
            .as_str()
            .unwrap()
            .contains("old-box.example.com")
    );
    let p1 = s.prod1.alb_dns_name.to_lowercase();
    assert_eq!(record(&s).await, Some(("CNAME".to_string(), p1)));
    let entry = env.ledger_of("promote").await.pop().unwrap();
    assert_eq!(entry["outcome"], "promoted");
    assert!(
        entry["replaced"]
            .to_string()
            .contains("old-box.example.com"),
        "{entry}"
    );

    // prod2 has nothing to serve: rollback returns to the old server.
    let back = env.ok(&["rollback", "--output", "json"]).await;
    assert!(
        back.json()["to"]
            .as_str()
            .unwrap()
            .contains("old-box.example.com"),
        "{back:#?}"
    );
    assert_eq!(record(&s).await, foreign);
}
