//! Bounded polling, and the interrupt that cuts a wait short.
//!
//! Every wait in the pipeline goes through [`until`]: it has a deadline, it
//! polls at a fixed interval (the first few checks sooner) with one check per tick, it tells a watching
//! human what it waits for and how far it got (`2/3 healthy, 41s of 10m`:
//! a log line when it starts and every 30 s, and on a terminal a live line
//! each check), it says what it was waiting for when it gives up, and Ctrl-C or SIGTERM ([`Interrupt`]) ends it
//! at once so the stage can clean up what it created. A wait with nothing
//! to check, only time to let pass, is a [`pause`], which the interrupt
//! ends too.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// The tracing target of a wait's progress lines: a terminal's live display
/// shows them in place (every check, at debug level), CI logs as lines.
pub const PROGRESS: &str = "pipeline_core::progress";

/// How often a wait logs how far it got (CI logs; a terminal's live line
/// shows every check).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// How often and how long to poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    /// Time between checks.
    pub interval: Duration,
    /// Give up after this long.
    pub deadline: Duration,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<T> {
    /// The condition holds; stop polling.
    Done(T),
    /// Not yet; the text says what was seen (shown if the deadline passes).
    Pending(String),
}

/// A signal that the run should stop: Ctrl-C, SIGTERM, or a test's trigger.
#[derive(Debug, Clone)]
pub struct Interrupt(watch::Receiver<bool>);

/// Fires an [`Interrupt`] by hand (tests, embedding applications).
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    /// Interrupts every wait holding the paired [`Interrupt`].
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Interrupt {
    /// An interrupt that never fires.
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive so `changed()` pends forever instead of erroring.
        std::mem::forget(tx);
        Interrupt(rx)
    }

    /// An interrupt and the trigger that fires it.
    pub fn manual() -> (Trigger, Interrupt) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Interrupt(rx))
    }

    /// An interrupt fired by Ctrl-C (SIGINT) or SIGTERM (what a CI system sends
    /// a job it cancels). Must be called inside a tokio runtime.
    pub fn on_signals() -> Self {
        let (trigger, interrupt) = Interrupt::manual();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = ctrl_c => {},
                            _ = term.recv() => {},
                        }
                    }
                    Err(_) => {
                        let _ = ctrl_c.await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = ctrl_c.await;
            }
            tracing::warn!("interrupted: cleaning up what this run created");
            trigger.fire();
            // Keep the sender alive so later waits still see the interrupt.
            std::future::pending::<()>().await;
        });
        interrupt
    }

    /// Whether the interrupt has fired.
    pub fn fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Errors with [`Error::Interrupted`] if the interrupt has fired.
    pub fn check(&self) -> Result<()> {
        if self.fired() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Resolves when the interrupt fires.
    pub(crate) async fn fired_wait(&self) {
        let mut rx = self.0.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// `d` to the nearest second, for showing a deadline (sub-second ones as they are).
fn whole_seconds(d: Duration) -> Duration {
    if d < Duration::from_secs(1) {
        d
    } else {
        Duration::from_secs(d.as_secs_f64().round() as u64)
    }
}

/// Lets `duration` pass, or returns [`Error::Interrupted`] as soon as
/// `interrupt` fires (at once, if it has).
pub async fn pause(duration: Duration, interrupt: &Interrupt) -> Result<()> {
    interrupt.check()?;
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = interrupt.fired_wait() => Err(Error::Interrupted),
    }
}

/// The time before the check after check number `checks` (0 for the
/// first): an eighth of `interval`, then a quarter, a half, and from the
/// fourth on the whole. A change that comes at once (a small fleet, a
/// record already in sync) is noticed in a fraction of the interval, and a
/// long wait still polls once per interval: at the default 2 s, the checks
/// come at 0, 0.25, 0.75, 1.75, 3.75 s, ...
pub fn quick_start(interval: Duration, checks: u32) -> Duration {
    interval / (1 << (3 - checks.min(3)))
}

/// Polls `check` every `poll.interval` (the first few sooner: [`quick_start`]) until it reports [`Progress::Done`],
/// the deadline passes ([`Error::Timeout`] naming `what` and the last state
/// seen), `check` errors, or `interrupt` fires ([`Error::Interrupted`]).
/// A check that AWS throttled or failed ([`Error::is_transient`]) counts
/// as "not yet": the wait looks again at its next tick, until its deadline.
pub async fn until<T, F, Fut>(
    what: &str,
    poll: Poll,
    interrupt: &Interrupt,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Progress<T>>>,
{
    let started = Instant::now();
    let give_up = started + poll.deadline;
    let mut last_line = None;
    let mut checks = 0u32;
    loop {
        interrupt.check()?;
        let last_seen = match check().await {
            Ok(Progress::Done(value)) => return Ok(value),
            Ok(Progress::Pending(seen)) => seen,
            // The SDK already retried this call; a throttled or failed
            // check is "not yet", and the next tick looks again.
            Err(err) if err.is_transient() => {
                tracing::debug!("{what}: a check failed ({err}); looking again");
                format!(
                    "AWS answered {} to the last check",
                    err.aws_code().unwrap_or("an error")
                )
            }
            Err(err) => return Err(err),
        };
        // Progress a watching human can follow: a line when the wait
        // starts and at least every PROGRESS_EVERY (a terminal's live line
        // takes every tick), with what was seen and the time used.
        let now = Instant::now();
        let line = format!(
            "waiting for {what}: {last_seen}, {} of {}",
            crate::config::format_duration(Duration::from_secs(started.elapsed().as_secs())),
            crate::config::format_duration(whole_seconds(poll.deadline))
        );
        if last_line.is_none_or(|at: Instant| now - at >= PROGRESS_EVERY) {
            tracing::info!(target: PROGRESS, "{line}");
            last_line = Some(now);
        } else {
            tracing::debug!(target: PROGRESS, "{line}");
        }
        if now >= give_up {
            return Err(Error::Timeout {
                what: what.to_string(),
                after: poll.deadline,
                last_seen,
            });
        }
        let next = (now + quick_start(poll.interval, checks)).min(give_up);
        checks += 1;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {},
            _ = interrupt.fired_wait() => return Err(Error::Interrupted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const POLL: Poll = Poll {
        interval: Duration::from_secs(5),
        deadline: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn returns_when_done() {
        let calls = AtomicU32::new(0);
        let got = until("thing", POLL, &Interrupt::never(), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Ok(if n == 3 {
                Progress::Done(n)
            } else {
                Progress::Pending(format!("try {n}"))
            })
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_last_state() {
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let err = until("builder to stop", POLL, &Interrupt::never(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(Progress::<()>::Pending("running".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        // Checks at 0, 0.625, 1.875, 4.375 s (the quick start), then every
        // 5 s from 9.375 to 59.375 s, and one at 60 s: the deadline is
        // checked, not overshot.
        assert_eq!(calls.load(Ordering::SeqCst), 16);
        assert!(matches!(err, Error::Timeout { ref last_seen, .. } if last_seen == "running"));
        assert!(err.to_string().contains("builder to stop"));
    }

    #[tokio::test(start_paused = true)]
    async fn interrupt_ends_the_wait() {
        let (trigger, interrupt) = Interrupt::manual();
        let waiter = tokio::spawn(async move {
            until("forever", POLL, &interrupt, || async {
                Ok(Progress::<()>::Pending("no".into()))
            })
            .await
        });
        tokio::time::sleep(Duration::from_secs(7)).await;
        trigger.fire();
        let err = waiter.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Interrupted));
    }

    #[test]
    fn the_first_checks_come_sooner() {
        let two = Duration::from_secs(2);
        let gaps: Vec<_> = (0..6).map(|n| quick_start(two, n)).collect();
        assert_eq!(
            gaps,
            [250, 500, 1000, 2000, 2000, 2000].map(Duration::from_millis)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_check_is_not_yet() {
        let calls = AtomicU32::new(0);
        let got = until("thing", POLL, &Interrupt::never(), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            match n {
                0 | 1 => Err(Error::Aws {
                    operation: "DescribeInstances",
                    resource: "2 instance(s)".into(),
                    code: if n == 0 {
                        "RequestLimitExceeded"
                    } else {
                        "InternalError"
                    }
                    .into(),
                    message: "slow down".into(),
                }),
                _ => Ok(Progress::Done(n)),
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 2);

        // A throttle that never ends still ends at the deadline, saying so.
        let err = until("thing", POLL, &Interrupt::never(), || async {
            Err::<Progress<()>, _>(Error::Aws {
                operation: "DescribeTargetHealth",
                resource: "tg".into(),
                code: "Throttling".into(),
                message: "Rate exceeded".into(),
            })
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { ref last_seen, .. } if last_seen.contains("Throttling")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn check_errors_pass_through() {
        let err = until("x", POLL, &Interrupt::never(), || async {
            Err::<Progress<()>, _>(Error::Input("boom".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_lets_its_time_pass_unless_interrupted() {
        let started = tokio::time::Instant::now();
        pause(Duration::from_secs(30), &Interrupt::never())
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(30));

        let (trigger, interrupt) = Interrupt::manual();
        let started = tokio::time::Instant::now();
        let pausing = tokio::spawn(async move { pause(Duration::from_secs(30), &interrupt).await });
        tokio::time::sleep(Duration::from_secs(7)).await;
        trigger.fire();
        assert!(matches!(pausing.await.unwrap(), Err(Error::Interrupted)));
        assert!(started.elapsed() < Duration::from_secs(8));
    }
}
