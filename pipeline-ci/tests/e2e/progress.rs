//! Progress as a person sees it: live in a real terminal (a tmux pane),
//! plain and free of control codes in CI.

use std::process::Command;
use std::time::{Duration, Instant};

use pipeline_fixtures::{BuilderBehaviour, guest};

use crate::support::{Env, SHA, SHA2};

/// Runs `pipeline ARGS` in a detached tmux pane (its own server socket, so
/// the environment is ours) and returns the pane's text once it exits.
fn in_tmux(env: &Env, args: &[&str], dir: &std::path::Path) -> String {
    let socket = format!("pipeline-e2e-{}", std::process::id());
    let vars: Vec<String> = env
        .moto
        .env()
        .into_iter()
        .map(|(k, v)| format!("{k}='{v}'"))
        .collect();
    let script = format!(
        "cd '{}' && env -u CI {} '{}' {}; echo \"EXIT=$?\"; sleep 60",
        dir.display(),
        vars.join(" "),
        env!("CARGO_BIN_EXE_pipeline"),
        args.join(" ")
    );
    let status = Command::new("tmux")
        .args([
            "-L",
            &socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "160",
            "-y",
            "50",
            &script,
        ])
        .status()
        .expect("tmux runs (make test installs it)");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let pane = loop {
        let out = Command::new("tmux")
            .args(["-L", &socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("EXIT=") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("tmux")
        .args(["-L", &socket, "kill-server"])
        .status();
    pane
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_live_in_a_terminal_and_plain_in_ci() {
    let env = Env::new().await;
    let _guest = guest::spawn(
        &env.sdk,
        BuilderBehaviour::PowerOffAfter(Duration::from_millis(800)),
    );
    let config = env.write_config(&env.config(""));
    let dir = config.parent().unwrap().to_path_buf();

    let pane = tokio::task::block_in_place(|| {
        in_tmux(&env, &["build", "--skip-test-gate", "--commit", SHA], &dir)
    });
    assert!(pane.contains("EXIT=0"), "{pane}");
    // Each finished phase is a ✓ line with its time; the result follows.
    assert!(pane.contains("✓ builder"), "{pane}");
    assert!(pane.contains("powered off after"), "{pane}");
    let lines: Vec<&str> = pane.lines().filter(|l| !l.trim().is_empty()).collect();
    let exit = lines.iter().position(|l| l.starts_with("EXIT=")).unwrap();
    assert!(
        lines[exit - 1].starts_with("ami-"),
        "the AMI id is the last line: {pane}"
    );
    assert!(
        lines[exit - 2].starts_with('✓'),
        "the spinner line was cleared: {pane}"
    );

    // In CI: plain timestamped lines, no control codes.
    let ci = env
        .pipeline_with(
            &["build", "--skip-test-gate", "--commit", SHA],
            &[("CI", "true")],
        )
        .await;
    assert_eq!(ci.code, 0, "{ci:#?}");
    assert!(!ci.stderr.contains('\u{1b}'), "{:?}", ci.stderr);
    assert!(ci.stderr.contains(" INFO "), "{}", ci.stderr);

    // A wait says what it waits for and how far it got, in CI too.
    let baking = env
        .pipeline_with(
            &["build", "--skip-test-gate", "--commit", SHA2],
            &[("CI", "true")],
        )
        .await;
    assert_eq!(baking.code, 0, "{baking:#?}");
    let waits: Vec<&str> = baking
        .stderr
        .lines()
        .filter(|l| l.contains("waiting for builder"))
        .collect();
    assert!(
        waits
            .first()
            .is_some_and(|l| l.contains("running, 0s of 30s")),
        "{}",
        baking.stderr
    );
}
