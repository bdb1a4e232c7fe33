//! Who is following live logs: a count of open SSE followers per step run, per client
//! address and in all, with caps, and the pacing of an idle follower.
//!
//! Invariants: a follower is counted from [`Followers::enter`] until its [`FollowerGuard`]
//! is dropped — the guard lives inside the SSE stream, which hyper drops as soon as the
//! connection is gone — so [`Followers::live`] is exactly the number of live followers and
//! returns to 0 when every client has left. Entering past a cap changes nothing and says
//! which cap was hit. The counts sit behind one short `std` mutex never held across an
//! `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most live followers of one step run (a whole team watching one step fits easily).
pub const MAX_FOLLOWERS_PER_STEP: usize = 64;
/// Most live followers from one client address (a browser with many tabs fits; a script
/// opening thousands does not). Clients behind one proxy share its address.
pub const MAX_FOLLOWERS_PER_CLIENT: usize = 32;
/// Most live followers in all, whatever their steps and addresses.
pub const MAX_FOLLOWERS: usize = 1024;
/// How often an idle stream sends a comment: a write is what tells the server a client that
/// vanished without closing its connection is gone.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// The first re-check of an idle step's logs without a notification, doubled each time
/// nothing came, up to [`MAX_IDLE_BACKOFF`].
pub const MIN_IDLE_BACKOFF: Duration = Duration::from_millis(250);
/// The longest an idle follower goes without re-reading the store by itself (a line stored
/// by another engine replica, whose notification this engine never sees, waits this long).
pub const MAX_IDLE_BACKOFF: Duration = Duration::from_secs(4);

/// The caps and pacing; [`Default`] gives the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerLimits {
    pub per_step: usize,
    pub per_client: usize,
    pub total: usize,
    pub heartbeat: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for FollowerLimits {
    fn default() -> Self {
        FollowerLimits {
            per_step: MAX_FOLLOWERS_PER_STEP,
            per_client: MAX_FOLLOWERS_PER_CLIENT,
            total: MAX_FOLLOWERS,
            heartbeat: HEARTBEAT,
            min_backoff: MIN_IDLE_BACKOFF,
            max_backoff: MAX_IDLE_BACKOFF,
        }
    }
}

impl FollowerLimits {
    /// The wait after `current` passed with nothing new.
    pub fn next_backoff(&self, current: Duration) -> Duration {
        (current * 2).clamp(self.min_backoff, self.max_backoff.max(self.min_backoff))
    }
}

/// Which cap refused a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The step run already has `per_step` followers.
    #[error("this step already has {0} live followers; try again later")]
    Step(usize),
    /// The client address already has `per_client` followers.
    #[error("this client already follows {0} streams; close one first")]
    Client(usize),
    /// The engine already serves `total` followers.
    #[error("this engine already serves {0} live followers; try again later")]
    Total(usize),
}

/// The live followers of one engine.
#[derive(Debug, Default)]
pub struct Followers {
    limits: FollowerLimits,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_step: HashMap<i64, usize>,
    by_client: HashMap<IpAddr, usize>,
}

impl Followers {
    pub fn new(limits: FollowerLimits) -> Followers {
        Followers {
            limits,
            counts: Mutex::default(),
        }
    }

    pub fn limits(&self) -> &FollowerLimits {
        &self.limits
    }

    /// Live followers in all (a gauge for tests and operators).
    pub fn live(&self) -> usize {
        self.lock().total
    }

    /// Counts a new follower of `step_run_id` from `client` (unknown when the server does
    /// not record addresses), or says which cap it would pass.
    pub fn enter(
        self: &Arc<Self>,
        step_run_id: i64,
        client: Option<IpAddr>,
    ) -> Result<FollowerGuard, Refused> {
        let limits = self.limits;
        let mut counts = self.lock();
        if counts.total >= limits.total {
            return Err(Refused::Total(limits.total));
        }
        if counts.by_step.get(&step_run_id).copied().unwrap_or(0) >= limits.per_step {
            return Err(Refused::Step(limits.per_step));
        }
        if let Some(client) = client {
            if counts.by_client.get(&client).copied().unwrap_or(0) >= limits.per_client {
                return Err(Refused::Client(limits.per_client));
            }
            *counts.by_client.entry(client).or_default() += 1;
        }
        *counts.by_step.entry(step_run_id).or_default() += 1;
        counts.total += 1;
        Ok(FollowerGuard {
            followers: self.clone(),
            step_run_id,
            client,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is complete
        // before the lock is released.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One counted follower; dropping it un-counts it.
#[derive(Debug)]
pub struct FollowerGuard {
    followers: Arc<Followers>,
    step_run_id: i64,
    client: Option<IpAddr>,
}

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        let mut counts = self.followers.lock();
        counts.total = counts.total.saturating_sub(1);
        decrement(&mut counts.by_step, self.step_run_id);
        if let Some(client) = self.client {
            decrement(&mut counts.by_client, client);
        }
    }
}

/// Lowers `key`'s count, removing it at 0 so the maps hold only live keys.
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(count) = map.get_mut(&key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn followers(per_step: usize, per_client: usize, total: usize) -> Arc<Followers> {
        Arc::new(Followers::new(FollowerLimits {
            per_step,
            per_client,
            total,
            ..FollowerLimits::default()
        }))
    }

    #[test]
    fn each_cap_refuses_the_follower_past_it_and_dropping_frees_the_place() {
        let f = followers(2, 3, 4);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let one = f.enter(1, Some(a)).unwrap();
        let _two = f.enter(1, Some(a)).unwrap();
        assert_eq!(f.enter(1, Some(b)).unwrap_err(), Refused::Step(2));
        let _three = f.enter(2, Some(a)).unwrap();
        assert_eq!(f.enter(3, Some(a)).unwrap_err(), Refused::Client(3));
        let _four = f.enter(3, Some(b)).unwrap();
        assert_eq!(f.enter(4, None).unwrap_err(), Refused::Total(4));
        assert_eq!(f.live(), 4);
        drop(one);
        assert_eq!(f.live(), 3);
        let _again = f.enter(1, Some(a)).unwrap();
    }

    #[test]
    fn counts_go_back_to_nothing() {
        let f = followers(10, 10, 10);
        let guards: Vec<_> = (0..10).map(|i| f.enter(i % 3, None).unwrap()).collect();
        assert_eq!(f.live(), 10);
        drop(guards);
        assert_eq!(f.live(), 0);
        let counts = f.lock();
        assert!(counts.by_step.is_empty() && counts.by_client.is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let limits = FollowerLimits::default();
        let mut wait = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..8 {
            wait = limits.next_backoff(wait);
            seen.push(wait.as_millis());
        }
        assert_eq!(seen, [250, 500, 1000, 2000, 4000, 4000, 4000, 4000]);
    }
}
