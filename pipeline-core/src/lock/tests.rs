//! Unit tests of taking, taking over, waiting for and queueing for a
//! lock, through a mock of the state store, with tokio's clock paused.

use std::sync::{Arc, Mutex};

use super::*;
use crate::ports::{Listed, MockStateStore, Stored};

const TTL: Duration = Duration::from_secs(60);

fn holder(run: &str, expires_ms: i64) -> Holder {
    Holder {
        run: run.into(),
        stage: Stage::Deploy,
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        actor: Some("ada".into()),
        job_url: None,
        started_at: "2026-12-01T00:00:00Z".into(),
        expires_ms,
    }
}

fn stored(h: &Holder, etag: &str) -> Stored {
    Stored {
        body: serde_json::to_vec(h).unwrap(),
        etag: etag.into(),
    }
}

fn me() -> Holder {
    holder("me", 0)
}

fn live(run: &str) -> Holder {
    holder(run, now_ms() + 3_600_000)
}

/// A store whose lock `locks/shop/staging` holds `current` (`None`: free),
/// and which lets the lock be released.
fn store_holding(current: Option<Holder>) -> MockStateStore {
    let mut store = MockStateStore::new();
    let free = current.is_none();
    store
        .expect_put_new()
        .withf(|key, _| key == "locks/shop/staging")
        .returning(move |_, _| {
            Ok(if free {
                Written::Done("e-new".into())
            } else {
                Written::Refused
            })
        });
    if let Some(current) = current {
        store
            .expect_get()
            .withf(|key| key == "locks/shop/staging")
            .returning(move |_| Ok(Some(stored(&current, "e-held"))));
    }
    store
}

async fn claim(store: MockStateStore, wait: Duration) -> Result<Lock> {
    let (me, plan) = (me(), LockPlan::new(TTL, wait));
    Claim::new(Arc::new(store), "shop", "staging", &me, &plan)
        .acquire(&Interrupt::never())
        .await
}

#[tokio::test(start_paused = true)]
async fn a_free_lock_is_taken_with_one_conditional_put() {
    let mut store = store_holding(None);
    store
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(stored(&holder("me", now_ms() + 1000), "e-new"))));
    store.expect_delete().times(1).returning(|_| Ok(()));
    let lock = claim(store, Duration::ZERO).await.unwrap();
    assert!(lock.took_over.is_none());
    lock.release().await;
}

#[tokio::test(start_paused = true)]
async fn a_held_lock_fails_at_once_naming_its_holder() {
    let started = Instant::now();
    let err = claim(store_holding(Some(live("other"))), Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Locked);
    let text = err.to_string();
    assert!(text.contains("deploy run other"), "{text}");
    assert!(text.contains("by ada"), "{text}");
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_held_lock_is_waited_for_until_the_deadline() {
    let tries = Arc::new(Mutex::new(0));
    let mut store = MockStateStore::new();
    let t = tries.clone();
    store.expect_put_new().returning(move |_, _| {
        *t.lock().unwrap() += 1;
        Ok(Written::Refused)
    });
    store
        .expect_get()
        .returning(|_| Ok(Some(stored(&live("other"), "e-held"))));
    let started = Instant::now();
    let err = claim(store, Duration::from_secs(20)).await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    // One look every ttl / 12 = 5 s: at 0, 5, 10, 15 and 20 s.
    assert_eq!(*tries.lock().unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_lock_released_while_waiting_is_taken() {
    let tries = Arc::new(Mutex::new(0));
    let mut store = MockStateStore::new();
    let t = tries.clone();
    store.expect_put_new().returning(move |_, _| {
        let mut n = t.lock().unwrap();
        *n += 1;
        Ok(if *n < 3 {
            Written::Refused
        } else {
            Written::Done("e-mine".into())
        })
    });
    store
        .expect_get()
        .returning(|_| Ok(Some(stored(&live("other"), "e-held"))));
    let started = Instant::now();
    let lock = claim(store, Duration::from_secs(60)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert!(lock.took_over.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_expired_lock_is_taken_over_with_if_match_on_the_etag_read() {
    let dead = holder("dead", now_ms() - 1);
    let mut store = store_holding(Some(dead.clone()));
    store
        .expect_put_if()
        .withf(|key, _, etag| key == "locks/shop/staging" && etag == "e-held")
        .times(1)
        .returning(|_, _, _| Ok(Written::Done("e-mine".into())));
    let lock = claim(store, Duration::ZERO).await.unwrap();
    assert_eq!(lock.took_over, Some(dead));
}

#[tokio::test(start_paused = true)]
async fn losing_the_takeover_race_leaves_the_lock_to_the_winner() {
    // The lock is expired when first read; another run takes it over
    // first (our If-Match fails), and the next read shows the winner.
    let reads = Arc::new(Mutex::new(0));
    let mut store = MockStateStore::new();
    store
        .expect_put_new()
        .returning(|_, _| Ok(Written::Refused));
    let r = reads.clone();
    store.expect_get().returning(move |_| {
        let mut n = r.lock().unwrap();
        *n += 1;
        Ok(Some(if *n == 1 {
            stored(&holder("dead", now_ms() - 1), "e-dead")
        } else {
            stored(&live("winner"), "e-winner")
        }))
    });
    store
        .expect_put_if()
        .times(1)
        .returning(|_, _, _| Ok(Written::Refused));
    let err = claim(store, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("run winner"), "{err}");
    assert_eq!(*reads.lock().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn something_else_at_the_lock_key_is_bad_input() {
    let mut store = MockStateStore::new();
    store
        .expect_put_new()
        .returning(|_, _| Ok(Written::Refused));
    store.expect_get().returning(|_| {
        Ok(Some(Stored {
            body: b"not json".to_vec(),
            etag: "e".into(),
        }))
    });
    let err = claim(store, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::BadInput);
    assert!(
        err.to_string().contains("pipeline unlock --env staging"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_queued_run_gives_way_to_a_newer_one_and_leaves_the_queue() {
    let mut store = store_holding(Some(live("other")));
    let mine = Arc::new(Mutex::new(String::new()));
    let m = mine.clone();
    store
        .expect_put()
        .withf(|key, _| key.starts_with("queue/shop/staging/") && key.ends_with("_me"))
        .times(1)
        .returning(move |key, _| {
            *m.lock().unwrap() = key.to_string();
            Ok(())
        });
    store
        .expect_list()
        .withf(|prefix| prefix == "queue/shop/staging/")
        .returning(|_| {
            Ok(vec![Listed {
                key: "queue/shop/staging/29991231T000000.000Z_newer".into(),
                modified_ms: now_ms(),
            }])
        });
    store
        .expect_get()
        .withf(|key| key.ends_with("_newer"))
        .returning(|_| Ok(Some(stored(&live("newer"), "e-q"))));
    let m = mine.clone();
    store
        .expect_delete()
        .withf(move |key| key == m.lock().unwrap().as_str())
        .times(1)
        .returning(|_| Ok(()));
    let (me, plan) = (me(), LockPlan::new(TTL, Duration::from_secs(600)));
    let got = Claim::new(Arc::new(store), "shop", "staging", &me, &plan)
        .acquire_queued(&Interrupt::never())
        .await
        .unwrap();
    match got {
        Acquired::Superseded(newer) => assert_eq!(newer.run, "newer"),
        Acquired::Held(_) => panic!("expected to be superseded"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_older_or_dead_queue_entry_does_not_supersede() {
    let mut store = store_holding(Some(live("other")));
    store.expect_put().returning(|_, _| Ok(()));
    store.expect_list().returning(|_| {
        Ok(vec![
            Listed {
                key: "queue/shop/staging/19990101T000000.000Z_older".into(),
                modified_ms: now_ms(),
            },
            Listed {
                key: "queue/shop/staging/29991231T000000.000Z_dead".into(),
                modified_ms: now_ms() - 10 * 60_000,
            },
        ])
    });
    store.expect_delete().times(1).returning(|_| Ok(()));
    let (me, plan) = (me(), LockPlan::new(TTL, Duration::from_secs(30)));
    let err = Claim::new(Arc::new(store), "shop", "staging", &me, &plan)
        .acquire_queued(&Interrupt::never())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

/// A release whose calls fail (a throttled S3) tries again with backoff
/// and deletes the lock once a call goes through.
#[tokio::test(start_paused = true)]
async fn a_release_retries_through_failing_calls() {
    let mut store = store_holding(None);
    store
        .expect_get()
        .returning(|_| Ok(Some(stored(&holder("me", now_ms() + 1000), "e-new"))));
    let deletes = Arc::new(Mutex::new(0));
    let d = deletes.clone();
    store.expect_delete().returning(move |_| {
        let mut n = d.lock().unwrap();
        *n += 1;
        if *n <= 2 {
            Err(Error::Aws {
                operation: "DeleteObject",
                resource: "s3://state/locks/shop/staging".into(),
                code: "SlowDown".into(),
                message: "Please reduce your request rate.".into(),
            })
        } else {
            Ok(())
        }
    });
    let lock = claim(store, Duration::ZERO).await.unwrap();
    let started = Instant::now();
    lock.release().await;
    assert_eq!(*deletes.lock().unwrap(), 3);
    // 250 ms, then 500 ms, of backoff.
    assert_eq!(started.elapsed(), Duration::from_millis(750));
}

/// A release that keeps failing gives up within its patience, leaving the
/// lock to expire.
#[tokio::test(start_paused = true)]
async fn a_release_that_keeps_failing_gives_up_within_30s() {
    let mut store = store_holding(None);
    let reads = Arc::new(Mutex::new(0));
    let r = reads.clone();
    store.expect_get().returning(move |_| {
        *r.lock().unwrap() += 1;
        Err(Error::Aws {
            operation: "GetObject",
            resource: "s3://state/locks/shop/staging".into(),
            code: "InternalError".into(),
            message: "We encountered an internal error.".into(),
        })
    });
    let lock = claim(store, Duration::ZERO).await.unwrap();
    let started = Instant::now();
    lock.release().await;
    let waited = started.elapsed();
    assert!(waited <= Duration::from_secs(30), "{waited:?}");
    assert!(waited >= Duration::from_secs(20), "{waited:?}");
    // 250 ms, 500 ms, 1 s, 2 s, then 4 s at a time.
    assert!(*reads.lock().unwrap() >= 8, "{}", *reads.lock().unwrap());
}

/// A PutObject that created the lock but whose answer was lost: the SDK's
/// retry meets `412` on the object the first try wrote, and the run takes
/// its own lock instead of waiting for itself.
#[tokio::test(start_paused = true)]
async fn a_lock_whose_answer_was_lost_is_ours() {
    let mut store = store_holding(Some(holder("me", now_ms() + 60_000)));
    store.expect_delete().times(1).returning(|_| Ok(()));
    let started = Instant::now();
    let lock = claim(store, Duration::from_secs(600)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(lock.took_over.is_none());
    lock.release().await;
}

/// A heartbeat whose renewal landed but whose answer was lost: its retry is
/// refused (the ETag moved), the lock read back is still this run's, and
/// the next renewal writes over the ETag read.
#[tokio::test(start_paused = true)]
async fn a_renewal_whose_answer_was_lost_keeps_the_lock() {
    let mut store = MockStateStore::new();
    store
        .expect_put_new()
        .returning(|_, _| Ok(Written::Done("e-1".into())));
    let renewals = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = renewals.clone();
    store.expect_put_if().returning(move |_, _, etag| {
        let mut seen = seen.lock().unwrap();
        seen.push(etag.to_string());
        // The first renewal's answer is lost: S3 holds e-2, the retry is refused.
        Ok(if seen.len() == 1 {
            Written::Refused
        } else {
            Written::Done(format!("e-{}", seen.len() + 2))
        })
    });
    store
        .expect_get()
        .returning(|_| Ok(Some(stored(&holder("me", now_ms() + 60_000), "e-2"))));
    store.expect_delete().returning(|_| Ok(()));
    let lock = claim(store, Duration::ZERO).await.unwrap();
    // Three heartbeats (every ttl / 4 = 15 s).
    tokio::time::sleep(Duration::from_secs(46)).await;
    assert_eq!(*renewals.lock().unwrap(), ["e-1", "e-2", "e-4"]);
    lock.release().await;
}
