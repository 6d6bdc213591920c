//! `pipeline status --html FILE`: a one-page static dashboard for a big
//! screen: which slot is live, each environment's commit, AMI and health,
//! the last watch's verdict and the last ledger events. No script, no
//! external asset: one file CI can publish as an artifact.

use pipeline_core::session::StatusReport;

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn short(commit: &str) -> &str {
    pipeline_core::release::short_commit(commit)
}

/// Writes the page to `file`.
pub fn write(file: &std::path::Path, status: &StatusReport) -> pipeline_core::Result<()> {
    std::fs::write(file, render(status)).map_err(|e| {
        pipeline_core::Error::Input(format!("cannot write {}: {e}", file.display()))
    })?;
    tracing::info!("dashboard written to {}", file.display());
    Ok(())
}

/// The page.
pub fn render(status: &StatusReport) -> String {
    let (app, record, envs, events) = (
        status.app.as_str(),
        status.record.as_deref(),
        &status.environments,
        &status.recent,
    );
    let live_slot = status.live.as_deref();
    let live_env = envs.iter().find(|e| Some(e.name.as_str()) == live_slot);
    let headline = match (record, live_slot, live_env) {
        (Some(record), Some(slot), Some(env)) => format!(
            "<span class=\"record\">{}</span> → <b>{}</b> running <code>{}</code>",
            esc(record),
            esc(slot),
            esc(&env
                .commits
                .keys()
                .map(|c| short(c).to_string())
                .collect::<Vec<_>>()
                .join(", "))
        ),
        (Some(record), _, _) => format!("<span class=\"record\">{}</span> → no slot", esc(record)),
        _ => "no public record configured".to_string(),
    };
    let mut cards = String::new();
    for env in envs {
        let state = if env.instances > 0 && env.healthy == env.instances {
            "ok"
        } else if env.healthy > 0 {
            "warn"
        } else {
            "down"
        };
        let commits: Vec<String> = env
            .commits
            .iter()
            .map(|(c, n)| format!("<code>{}</code> ×{n}", esc(short(c))))
            .collect();
        let images: Vec<String> = env.images.iter().map(|i| esc(i)).collect();
        cards.push_str(&format!(
            "<section class=\"env {state}{live}\"><h2>{name}{badge}</h2>\
             <p class=\"health\">{healthy}/{instances} healthy</p>\
             <p>commit {commits}</p><p>AMI {images}</p><p class=\"lb\">{lb}</p></section>\n",
            live = if env.live { " live" } else { "" },
            name = esc(&env.name),
            badge = if env.live {
                " <span class=\"badge\">LIVE</span>"
            } else {
                ""
            },
            healthy = env.healthy,
            instances = env.instances,
            commits = if commits.is_empty() {
                "none".into()
            } else {
                commits.join(", ")
            },
            images = if images.is_empty() {
                "none".into()
            } else {
                images.join(", ")
            },
            lb = esc(&env.balancer),
        ));
    }
    // The newest entry that watched a slot: promote's window or `pipeline watch`.
    let watch = match events.iter().find_map(|e| Some((e, e.watch.as_deref()?))) {
        Some((e, verdict)) => format!(
            "<p id=\"watch\" class=\"watch {outcome}\">last watch: {stage} of {env} at {finished}, {outcome}: {verdict}</p>",
            outcome = e.outcome,
            stage = e.stage,
            env = esc(e.env.as_deref().unwrap_or("?")),
            finished = esc(&e.finished),
            verdict = esc(verdict),
        ),
        None => format!(
            "<p id=\"watch\" class=\"watch\">last watch: none in the last {} events</p>",
            events.len()
        ),
    };
    let mut rows = String::new();
    for e in events {
        rows.push_str(&format!(
            "<tr class=\"{outcome}\"><td>{finished}</td><td>{stage}</td><td>{env}</td><td><code>{commit}</code></td><td>{outcome}</td><td>{actor}</td><td>{detail}</td></tr>\n",
            finished = esc(&e.finished),
            stage = e.stage,
            env = esc(e.env.as_deref().unwrap_or("")),
            commit = esc(e.commit.as_deref().map(short).unwrap_or("")),
            outcome = e.outcome,
            actor = esc(e.actor.as_deref().unwrap_or("")),
            detail = esc(e.error.as_deref().or(e.note.as_deref()).or(e.ami.as_deref()).unwrap_or("")),
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{app} — pipeline</title>
<style>
body {{ font: 20px/1.4 system-ui, sans-serif; background: #10141a; color: #e8edf3; margin: 2em; }}
h1 {{ font-size: 2.2em; margin: 0 0 .2em; }} .record {{ color: #8ab4f8; }}
.envs {{ display: flex; flex-wrap: wrap; gap: 1em; margin: 1.5em 0; }}
.env {{ background: #1b222c; border-left: 10px solid #888; padding: .6em 1.2em; min-width: 16em; border-radius: 6px; }}
.env.ok {{ border-color: #3fb950; }} .env.warn {{ border-color: #d29922; }} .env.down {{ border-color: #f85149; }}
.env.live {{ outline: 3px solid #8ab4f8; }} .badge {{ background: #8ab4f8; color: #10141a; font-size: .6em; padding: .1em .4em; border-radius: 4px; }}
.generated {{ color: #9aa5b1; font-size: .7em; margin: 0; }}
.health {{ font-size: 1.6em; margin: .2em 0; }} .lb {{ color: #9aa5b1; font-size: .8em; }}
table {{ border-collapse: collapse; width: 100%; font-size: .8em; }} td, th {{ padding: .3em .6em; text-align: left; border-bottom: 1px solid #2b3440; }}
tr.failed td, tr.rolled_back td {{ color: #f85149; }} code {{ color: #d2a8ff; }}
.watch {{ font-size: .9em; }} .watch.promoted, .watch.succeeded {{ color: #3fb950; }} .watch.rolled_back, .watch.failed {{ color: #f85149; }}
</style></head>
<body><h1 id="live">{app}: {headline}</h1>
<p class="generated">generated {generated} by <code>pipeline status --html</code>; refresh by running it again</p>
{watch}
<div class="envs">
{cards}</div>
<h2>Last events</h2>
<table id="events"><tr><th>finished</th><th>stage</th><th>env</th><th>commit</th><th>outcome</th><th>by</th><th></th></tr>
{rows}</table>
</body></html>
"#,
        app = esc(app),
        generated = esc(&status.generated),
    )
}
