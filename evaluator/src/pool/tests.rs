//! Tests of `pool`: the permit's lifetime around a validation thread.

use std::sync::mpsc;
use std::time::Duration;

use super::*;

// regression: the permit was the `evaluate` future's, released when the time bound
// answered the caller while validation ran on; files delivered again and again
// stacked busy threads, each with a free permit for the next.
#[tokio::test]
async fn the_permit_is_held_until_the_validation_thread_returns() {
    let permits = Arc::new(Semaphore::new(1));
    let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
    let (release, wait) = mpsc::channel::<()>();
    // A fake validation that outlives its bound.
    let answer = off_runtime(permit, Duration::from_millis(20), move || {
        wait.recv().unwrap();
        "valid"
    })
    .await
    .unwrap();
    assert_eq!(answer, None, "the caller is answered at the bound");
    assert_eq!(
        permits.available_permits(),
        0,
        "the validation still runs, so its permit is not free"
    );
    release.send(()).unwrap();
    let freed = tokio::time::timeout(Duration::from_secs(30), permits.acquire()).await;
    assert!(
        freed.is_ok(),
        "the permit comes back when the thread returns"
    );
}

#[tokio::test]
async fn a_validation_within_its_bound_answers_and_frees_the_permit() {
    let permits = Arc::new(Semaphore::new(1));
    let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
    let answer = off_runtime(permit, Duration::from_secs(30), || 7)
        .await
        .unwrap();
    assert_eq!(answer, Some(7));
    assert_eq!(permits.available_permits(), 1);
}
