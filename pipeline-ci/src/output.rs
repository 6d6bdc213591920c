//! What a step prints: one result on stdout (text or a single JSON object),
//! progress and errors on stderr, and the exit code.

use std::process::ExitCode;

use pipeline_core::config::{BaseImage, Placement};
use pipeline_core::ledger::Entry;
use pipeline_core::lock::Holder;
use pipeline_core::release::{Built, Release, short_commit};
use pipeline_core::stages::build::{BuildOutcome, BuildPlan};
use pipeline_core::stages::deploy::{DeployOutcome, DeployPlan};
use pipeline_core::stages::gc::GcOutcome;
use pipeline_core::stages::promote::{Flip, Live, PromotePlan};
use pipeline_core::stages::status::EnvStatus;
use pipeline_core::stages::task::TaskOutcome;
use pipeline_core::stages::test::TestOutcome;
use pipeline_core::{Error, ErrorKind};
use serde_json::{Value, json};

use crate::cli::OutputFormat;

/// The exit code for an error, as the CLI contract says.
pub fn exit_code(err: &Error) -> u8 {
    match err.kind() {
        ErrorKind::BadInput => 2,
        ErrorKind::Failed => 1,
        ErrorKind::Locked => 3,
    }
}

/// Prints an error: always on stderr; in JSON mode also as the one result.
pub fn error(format: OutputFormat, err: &Error) -> ExitCode {
    crate::progress::finish(false);
    let code = exit_code(err);
    eprintln!("error: {err}");
    if format == OutputFormat::Json {
        println!(
            "{}",
            json!({ "ok": false, "error": err.to_string(), "exit_code": code })
        );
    }
    ExitCode::from(code)
}

/// Prints a test verdict; exit 0 if it passed, 1 if not.
pub fn test(format: OutputFormat, out: &TestOutcome) -> ExitCode {
    crate::progress::finish(out.passed);
    let verdict = if out.passed { "passed" } else { "failed" };
    match format {
        OutputFormat::Text => {
            let code = out
                .exit_code
                .map_or_else(|| "killed by a signal".into(), |c| format!("exit {c}"));
            println!(
                "tests {verdict} for {} in {:.1}s ({code})",
                out.commit,
                out.duration.as_secs_f64()
            );
        }
        OutputFormat::Json => println!(
            "{}",
            json!({
                "ok": out.passed,
                "commit": out.commit.as_str(),
                "command": out.command,
                "passed": out.passed,
                "exit_code": out.exit_code,
                "duration_secs": secs(out.duration),
            })
        ),
    }
    ExitCode::from(if out.passed { 0 } else { 1 })
}

/// Prints a build's AMI (text) or its full outcome (JSON).
pub fn build(format: OutputFormat, out: &BuildOutcome) -> ExitCode {
    crate::progress::finish(true);
    let image = out.release.image();
    match format {
        OutputFormat::Text => println!("{}", image.id),
        OutputFormat::Json => {
            let copies: serde_json::Map<String, Value> = out
                .copies
                .iter()
                .map(|c| (c.region.clone(), Value::from(c.id.clone())))
                .collect();
            println!(
                "{}",
                json!({
                    "ok": true,
                    "ami": image.id,
                    "name": image.name,
                    "region": image.region,
                    "commit": out.release.commit().as_str(),
                    "reused": out.reused,
                    "base_image": out.base_image,
                    "builder": out.builder,
                    "copies": copies,
                    "run": out.run.as_str(),
                    "duration_secs": secs(out.duration),
                })
            );
        }
    }
    ExitCode::SUCCESS
}

/// Prints a deploy: what runs where now (text), or the full outcome (JSON).
pub fn deploy(format: OutputFormat, out: &DeployOutcome) -> ExitCode {
    crate::progress::finish(true);
    let state = out.release.state();
    match format {
        OutputFormat::Text => {
            println!(
                "{}: {} ({}) on {}",
                state.env,
                out.release.commit(),
                state.image.id,
                state.instances.join(", ")
            );
            for task in &out.tasks {
                println!(
                    "task {}: ok in {:.0}s on {}",
                    task.name,
                    secs(task.duration),
                    task.instance
                );
            }
            if !out.removed.is_empty() {
                println!("removed: {}", out.removed.join(", "));
            }
        }
        OutputFormat::Json => {
            let phases: serde_json::Map<String, Value> = out
                .phases
                .iter()
                .map(|p| (p.name.to_string(), Value::from(secs(p.duration))))
                .collect();
            println!(
                "{}",
                json!({
                    "ok": true,
                    "env": state.env,
                    "commit": out.release.commit().as_str(),
                    "ami": state.image.id,
                    "new": state.instances,
                    "removed": out.removed,
                    "cleaned": out.cleaned,
                    "tasks": out.tasks.iter().map(task_json).collect::<Vec<_>>(),
                    "run": out.run.as_str(),
                    "phases": phases,
                    "duration_secs": secs(out.duration),
                })
            );
        }
    }
    ExitCode::SUCCESS
}

fn task_json(task: &TaskOutcome) -> Value {
    json!({
        "name": task.name,
        "instance": task.instance,
        "duration_secs": secs(task.duration),
    })
}

/// Prints a release task run by hand.
pub fn task(
    format: OutputFormat,
    env: &str,
    release: &Release<Built>,
    out: &TaskOutcome,
) -> ExitCode {
    crate::progress::finish(true);
    match format {
        OutputFormat::Text => println!(
            "task {} in {env}: ok in {:.0}s ({} of {} on {})",
            out.name,
            secs(out.duration),
            release.image().id,
            release.commit().short(),
            out.instance
        ),
        OutputFormat::Json => {
            let mut body = task_json(out);
            body["ok"] = true.into();
            body["env"] = env.into();
            body["ami"] = release.image().id.clone().into();
            body["commit"] = release.commit().as_str().into();
            println!("{body}");
        }
    }
    ExitCode::SUCCESS
}

/// Prints that a newer run superseded this one (exit 0).
pub fn superseded(
    format: OutputFormat,
    stage: &str,
    env: Option<&str>,
    newer: &Holder,
) -> ExitCode {
    crate::progress::finish(true);
    let env = env.unwrap_or("-");
    match format {
        OutputFormat::Text => println!(
            "{stage} to {env} superseded by {}: nothing done",
            newer.describe()
        ),
        OutputFormat::Json => println!(
            "{}",
            json!({ "ok": true, "superseded": true, "env": env, "by": newer.describe(), "by_commit": newer.commit })
        ),
    }
    ExitCode::SUCCESS
}

/// Prints ledger entries, newest first.
pub fn history(format: OutputFormat, entries: &[Entry]) -> ExitCode {
    crate::progress::finish(true);
    match format {
        OutputFormat::Text => {
            if entries.is_empty() {
                println!("the ledger is empty");
            }
            for e in entries {
                println!(
                    "{}  {:<13} {:<9} {:<10} {:<12} {:<10} {}{}",
                    e.finished,
                    e.stage,
                    e.env.as_deref().unwrap_or("-"),
                    e.outcome,
                    e.commit.as_deref().map(short_commit).unwrap_or("-"),
                    e.actor.as_deref().unwrap_or("-"),
                    e.ami.as_deref().unwrap_or(""),
                    e.error
                        .as_deref()
                        .or(e.note.as_deref())
                        .map(|t| format!("  {t}"))
                        .unwrap_or_default()
                );
            }
        }
        OutputFormat::Json => println!("{}", json!({ "ok": true, "entries": entries })),
    }
    ExitCode::SUCCESS
}

/// Prints what `unlock` removed.
pub fn unlock(format: OutputFormat, scope: &str, removed: Option<&Holder>) -> ExitCode {
    crate::progress::finish(true);
    match format {
        OutputFormat::Text => match removed {
            Some(h) => println!("{scope}: removed the lock of {}", h.describe()),
            None => println!("{scope}: not locked"),
        },
        OutputFormat::Json => println!(
            "{}",
            json!({ "ok": true, "scope": scope, "removed": removed.map(Holder::describe) })
        ),
    }
    ExitCode::SUCCESS
}

/// Prints what gc did or would do.
pub fn gc(format: OutputFormat, out: &GcOutcome) -> ExitCode {
    crate::progress::finish(true);
    match format {
        OutputFormat::Text => {
            let verb = if out.dry_run {
                "would remove"
            } else {
                "removed"
            };
            for k in &out.kept {
                println!("keep   {} {}  {}", k.id, short_commit(&k.commit), k.why);
            }
            for r in &out.removed {
                println!(
                    "{verb} {} {} in {} with {}",
                    r.id,
                    short_commit(&r.commit),
                    r.region,
                    if r.snapshots.is_empty() {
                        "no snapshot".to_string()
                    } else {
                        r.snapshots.join(", ")
                    }
                );
            }
            for o in &out.orphans {
                println!(
                    "{} orphan {o}",
                    if out.dry_run {
                        "would terminate"
                    } else {
                        "terminated"
                    }
                );
            }
        }
        OutputFormat::Json => println!(
            "{}",
            json!({
                "ok": true,
                "dry_run": out.dry_run,
                "kept": out.kept.iter().map(|k| json!({"id": k.id, "commit": k.commit, "why": k.why})).collect::<Vec<_>>(),
                "removed": out.removed.iter().map(|r| json!({"id": r.id, "region": r.region, "commit": r.commit, "snapshots": r.snapshots})).collect::<Vec<_>>(),
                "orphans": out.orphans,
            })
        ),
    }
    ExitCode::SUCCESS
}

/// Prints a promote or rollback.
pub fn flip(format: OutputFormat, flip: &Flip) -> ExitCode {
    crate::progress::finish(true);
    match format {
        OutputFormat::Text if flip.changed => println!(
            "{} -> {} ({}), {} healthy instance(s) of {}; was {}",
            flip.record,
            flip.to,
            flip.target,
            flip.healthy,
            flip.commit.as_deref().unwrap_or("?"),
            flip.from.as_deref().unwrap_or("nothing")
        ),
        OutputFormat::Text => println!(
            "{} is live already on {}: nothing changed",
            flip.to, flip.record
        ),
        OutputFormat::Json => println!(
            "{}",
            json!({
                "ok": true,
                "record": flip.record,
                "from": flip.from,
                "to": flip.to,
                "target": flip.target,
                "changed": flip.changed,
                "change_ids": flip.change_ids,
                "steps": flip.steps,
                "commit": flip.commit,
                "healthy": flip.healthy,
            })
        ),
    }
    ExitCode::SUCCESS
}

/// Prints every environment's state and the live slot.
pub fn status(
    format: OutputFormat,
    record: Option<&str>,
    live: Option<&Live>,
    envs: &[EnvStatus],
) -> ExitCode {
    crate::progress::finish(true);
    let live_slot = live.and_then(|l| l.slot.as_deref());
    match format {
        OutputFormat::Text => {
            match (record, live_slot) {
                (Some(record), Some(slot)) => println!("live: {slot} ({record})"),
                (Some(record), None) => println!("live: none ({record} does not point at a slot)"),
                (None, _) => println!("live: no promote section in the config"),
            }
            println!(
                "{:<12} {:<4} {:>8}  {:<42} AMI",
                "ENV", "LIVE", "HEALTHY", "COMMIT"
            );
            for e in envs {
                let commits: Vec<String> = e
                    .commits
                    .iter()
                    .map(|(c, n)| {
                        if e.commits.len() > 1 {
                            format!("{c} ({n})")
                        } else {
                            c.clone()
                        }
                    })
                    .collect();
                let images: Vec<&str> = e.images.iter().map(String::as_str).collect();
                println!(
                    "{:<12} {:<4} {:>8}  {:<42} {}",
                    e.name,
                    if e.live { "*" } else { "" },
                    format!("{}/{}", e.healthy, e.instances),
                    if commits.is_empty() {
                        "-".to_string()
                    } else {
                        commits.join(", ")
                    },
                    if images.is_empty() {
                        "-".to_string()
                    } else {
                        images.join(", ")
                    }
                );
            }
        }
        OutputFormat::Json => {
            let environments: Vec<Value> = envs
                .iter()
                .map(|e| {
                    json!({
                        "name": e.name,
                        "balancer": e.balancer,
                        "instances": e.instances,
                        "healthy": e.healthy,
                        "commits": e.commits,
                        "images": e.images,
                        "live": e.live,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "ok": true,
                    "record": record,
                    "live": live_slot,
                    "target": live.and_then(|l| l.records.first()).map(|r| r.target.host()),
                    "weights": live.and_then(|l| l.weights),
                    "environments": environments,
                })
            );
        }
    }
    ExitCode::SUCCESS
}

/// Prints the plan a valid config resolves to.
pub fn plan(
    format: OutputFormat,
    path: &std::path::Path,
    build: &BuildPlan,
    deploys: &[DeployPlan],
    promote: Option<&PromotePlan>,
) -> ExitCode {
    crate::progress::finish(true);
    let base = match &build.base_image {
        BaseImage::Id { id } => id.clone(),
        BaseImage::Lookup { owner, name } => format!("newest of {owner} named {name}"),
    };
    let envs: Vec<Value> = deploys
        .iter()
        .map(|d| {
            json!({
                "env": d.env,
                "count": d.count,
                "instance_type": d.shape.instance_type,
                "subnets": match &d.placement {
                    Placement::Subnets(s) | Placement::Group { subnets: s, .. } => s,
                },
                "auto_scaling_group": d.placement.group(),
                "health_timeout_secs": d.health_poll.deadline.as_secs(),
                "healthy_for_secs": d.healthy_for.as_secs_f64(),
                "drain_cap_secs": d.drain_cap.as_secs(),
            })
        })
        .collect();
    let promote_json = promote.map(|p| {
        json!({
            "record": p.record,
            "hosted_zone": p.zone,
            "record_type": format!("{:?}", p.record_type).to_lowercase(),
            "slots": p.slots,
            "needed_healthy": p.needed,
            "steps": p.steps,
            "bake_secs": p.bake.as_secs(),
        })
    });
    match format {
        OutputFormat::Text => {
            println!("{}: valid", path.display());
            println!("app {} in {}", build.app, build.region);
            println!(
                "build: from {base}, {} builder, provisioning within {}s, copies to [{}], shared with [{}]",
                build.shape.instance_type,
                build.provision_poll.deadline.as_secs(),
                build.copy_to_regions.join(", "),
                build.share_with.join(", ")
            );
            for d in deploys {
                let placement = match &d.placement {
                    Placement::Group { name, .. } => format!("through Auto Scaling group {name}"),
                    Placement::Subnets(subnets) => format!("over {}", subnets.join(", ")),
                };
                println!(
                    "deploy {}: {} x {} {placement}; healthy within {}s, for {}s",
                    d.env,
                    d.count,
                    d.shape.instance_type,
                    d.health_poll.deadline.as_secs(),
                    d.healthy_for.as_secs_f64()
                );
            }
            match promote {
                Some(p) => println!(
                    "promote: {} ({:?}) between {} and {}{}",
                    p.record,
                    p.record_type,
                    p.slots[0],
                    p.slots[1],
                    if p.steps.is_empty() {
                        String::new()
                    } else {
                        format!(", gradually {:?} % every {}s", p.steps, p.bake.as_secs())
                    }
                ),
                None => println!("promote: not configured"),
            }
        }
        OutputFormat::Json => println!(
            "{}",
            json!({
                "ok": true,
                "config": path.display().to_string(),
                "app": build.app,
                "region": build.region,
                "build": {
                    "base_image": base,
                    "instance_type": build.shape.instance_type,
                    "timeout_secs": build.provision_poll.deadline.as_secs(),
                    "copy_to_regions": build.copy_to_regions,
                    "share_with": build.share_with,
                },
                "environments": envs,
                "promote": promote_json,
            })
        ),
    }
    ExitCode::SUCCESS
}

/// Prints a JSON document (an IAM policy, a JSON Schema): indented (text)
/// or on one line (JSON).
pub fn document(format: OutputFormat, document: &Value) -> ExitCode {
    crate::progress::finish(true);
    match format {
        OutputFormat::Text => println!(
            "{}",
            serde_json::to_string_pretty(document).unwrap_or_default()
        ),
        OutputFormat::Json => println!("{document}"),
    }
    ExitCode::SUCCESS
}

fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
