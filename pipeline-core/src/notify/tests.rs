//! Unit tests of events and webhook resolution (delivery is tested end to
//! end against a local receiver in pipeline-ci's e2e tests).

use super::*;

fn event() -> Event {
    Event {
        event: EventKind::Succeeded,
        app: "shop".into(),
        stage: crate::run::Stage::Deploy,
        env: Some("staging".into()),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        ami: Some("ami-1234".into()),
        actor: Some("alice".into()),
        job_url: Some("https://ci.example.com/job/7".into()),
        outcome: "succeeded".into(),
        duration_seconds: Some(42.4),
        error: None,
        run: "run-1".into(),
    }
}

fn hook(yaml: &str) -> WebhookConfig {
    crate::config::webhook(yaml)
}

#[test]
fn text_reads_like_a_chat_line() {
    assert_eq!(
        event().text(),
        "shop: deploy of 0123456789ab (ami-1234) to staging succeeded in 42s by alice <https://ci.example.com/job/7|job>"
    );
    let mut failed = event();
    failed.event = EventKind::Failed;
    failed.outcome = "failed".into();
    failed.error = Some("deploy failed: 0/2 healthy".into());
    failed.job_url = None;
    assert!(
        failed
            .text()
            .ends_with("by alice: deploy failed: 0/2 healthy")
    );
}

#[test]
fn body_has_every_field_and_text() {
    let body = event().body();
    for key in [
        "event",
        "app",
        "stage",
        "env",
        "commit",
        "ami",
        "actor",
        "job_url",
        "outcome",
        "duration_seconds",
        "run",
        "text",
    ] {
        assert!(body.get(key).is_some(), "{key} missing from {body}");
    }
    assert_eq!(body["event"], "succeeded");
    let mut rolled = event();
    rolled.event = EventKind::RolledBack;
    assert_eq!(rolled.body()["event"], "rolled_back");
}

#[test]
fn secrets_come_from_the_environment() {
    let config = [hook(
        "url_env: SLACK_URL\nsecret_header: { name: X-Token, env: HOOK_TOKEN }\nevents: [failed]",
    )];
    let env = |name: &str| match name {
        "SLACK_URL" => Some("https://hooks.example.com/services/T0/B0/secret".to_string()),
        "HOOK_TOKEN" => Some("s3cr3t".to_string()),
        _ => None,
    };
    let notifier = Notifier::new(&config, env).unwrap();
    let shown = format!("{notifier:?}");
    assert!(shown.contains("hooks.example.com"), "{shown}");
    assert!(
        !shown.contains("secret") && !shown.contains("s3cr3t"),
        "{shown}"
    );

    let err = Notifier::new(&config, |_| None).unwrap_err();
    assert!(matches!(err, Error::Input(_)));
    assert!(err.to_string().contains("SLACK_URL is not set"), "{err}");
    let only_url = |name: &str| env(name).filter(|_| name == "SLACK_URL");
    let err = Notifier::new(&config, only_url).unwrap_err();
    assert!(err.to_string().contains("HOOK_TOKEN is not set"), "{err}");
}

#[test]
fn a_bad_url_from_the_environment_is_bad_input() {
    let config = [hook("url_env: HOOK")];
    let err = Notifier::new(&config, |_| Some("ftp://x".into())).unwrap_err();
    assert!(err.to_string().contains("http or https"), "{err}");
    let err = Notifier::new(&config, |_| Some("not a url".into())).unwrap_err();
    assert!(err.to_string().contains("does not parse"), "{err}");
}

#[tokio::test]
async fn send_returns_at_once_and_flush_is_bounded() {
    // Port 9 on 127.0.0.1 (discard) is closed here: connections are refused.
    let config = [hook(
        "url: http://127.0.0.1:9/hook\nattempts: 2\nbackoff: 100ms\ntimeout: 1s",
    )];
    let notifier = Notifier::new(&config, |_| None).unwrap();
    let began = std::time::Instant::now();
    notifier.send(&event());
    assert!(began.elapsed() < Duration::from_millis(50));
    notifier.flush().await;
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
}
