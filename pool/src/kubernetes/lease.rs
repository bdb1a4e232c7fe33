//! Leader election over a `coordination.k8s.io/v1` Lease: with several engine replicas,
//! exactly one — the holder — creates and deletes pods; the others serve the API and
//! claims and take over when the holder stops renewing.
//!
//! The holder renews every third of the lease duration with a replace that names the
//! Lease's `resourceVersion`, so two engines racing for it cannot both win: the loser gets
//! `409 Conflict`. Expiry is judged by this engine's own clock, from when it last saw the
//! Lease change (as client-go does), so clocks that disagree between machines do not
//! matter.
//!
//! Invariants:
//! - An engine acts as leader only while its last successful renewal is younger than the
//!   lease duration; if it cannot reach the API server it steps down before another engine
//!   can take over.
//! - A stopping leader gives the Lease up (empties the holder), so a successor takes over at
//!   once instead of after the lease duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::Api;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::retry::{self, Policy};

pub(super) struct Election {
    pub(super) api: Api<Lease>,
    pub(super) name: String,
    pub(super) identity: String,
    pub(super) duration: Duration,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Election {
    fn quick(&self) -> Policy {
        Policy {
            attempt_timeout: (self.duration / 3).max(Duration::from_millis(200)),
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            budget: (self.duration / 3).max(Duration::from_millis(300)),
        }
    }

    fn lease(&self, existing: Option<&Lease>) -> Lease {
        let transitions = existing
            .and_then(|l| l.spec.as_ref())
            .map(|s| {
                let same = s.holder_identity.as_deref() == Some(self.identity.as_str());
                s.lease_transitions.unwrap_or(0) + i32::from(!same)
            })
            .unwrap_or(0);
        let acquired = existing
            .and_then(|l| l.spec.as_ref())
            .filter(|s| s.holder_identity.as_deref() == Some(self.identity.as_str()))
            .and_then(|s| s.acquire_time.clone())
            .unwrap_or_else(now);
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: existing.and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
                acquire_time: Some(acquired),
                renew_time: Some(now()),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Campaigns and renews until `shutdown`, publishing whether this engine leads.
    pub(super) async fn run(self, leading: watch::Sender<bool>, shutdown: CancellationToken) {
        // The version last seen and when this engine saw it change.
        let mut observed: Option<(String, Instant)> = None;
        let mut renewed: Option<Instant> = None;
        loop {
            let lead = self.round(&mut observed).await;
            if lead {
                renewed = Some(Instant::now());
            }
            let valid = renewed.is_some_and(|at| at.elapsed() < self.duration);
            let leader_now = lead || (valid && *leading.borrow());
            if leading.send_if_modified(|l| std::mem::replace(l, leader_now) != leader_now) {
                crate::report::record(crate::report::PoolEvent::Leader(leader_now));
                tracing::info!(identity = %self.identity, "pool leadership: {}", if leader_now { "acquired" } else { "lost" });
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.duration / 3) => {}
            }
        }
        if *leading.borrow() {
            self.release().await;
            leading.send_replace(false);
            crate::report::record(crate::report::PoolEvent::Leader(false));
        }
    }

    /// One attempt to acquire or renew; true when this engine holds the Lease now.
    async fn round(&self, observed: &mut Option<(String, Instant)>) -> bool {
        let policy = self.quick();
        let current = match retry::call(policy, "reading the pool lease", || {
            self.api.get_opt(&self.name)
        })
        .await
        {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!("{e}");
                return false;
            }
        };
        let Some(current) = current else {
            let (post, fresh) = (PostParams::default(), self.lease(None));
            let created = retry::call(policy, "creating the pool lease", || {
                self.api.create(&post, &fresh)
            })
            .await;
            return created.is_ok();
        };
        let version = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let seen_at = match observed {
            Some((v, at)) if *v == version => *at,
            _ => {
                *observed = Some((version, Instant::now()));
                Instant::now()
            }
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .map_or(self.duration, |s| Duration::from_secs(s.max(1) as u64));
        let mine = holder == self.identity;
        let free = holder.is_empty() || seen_at.elapsed() > duration;
        if !mine && !free {
            return false;
        }
        let (post, renewed) = (PostParams::default(), self.lease(Some(&current)));
        let replaced = retry::call(policy, "renewing the pool lease", || {
            self.api.replace(&self.name, &post, &renewed)
        })
        .await;
        match replaced {
            Ok(lease) => {
                *observed = lease.metadata.resource_version.map(|v| (v, Instant::now()));
                true
            }
            Err(e) => {
                tracing::debug!("{e}");
                false
            }
        }
    }

    async fn release(&self) {
        let policy = self.quick();
        let Ok(Some(current)) = retry::call(policy, "reading the pool lease", || {
            self.api.get_opt(&self.name)
        })
        .await
        else {
            return;
        };
        if current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            != Some(self.identity.as_str())
        {
            return;
        }
        let post = PostParams::default();
        let mut released = current.clone();
        if let Some(spec) = released.spec.as_mut() {
            spec.holder_identity = None;
        }
        if let Err(e) = retry::call(policy, "releasing the pool lease", || {
            self.api.replace(&self.name, &post, &released)
        })
        .await
        {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use testkit::kube::FakeKube;

    use super::*;

    fn election(client: &kube::Client, identity: &str) -> Election {
        Election {
            api: Api::namespaced(client.clone(), "ci"),
            name: "plue-pool".into(),
            identity: identity.into(),
            duration: Duration::from_secs(1),
        }
    }

    async fn until(what: &str, limit: Duration, check: impl Fn() -> bool) -> Duration {
        let started = Instant::now();
        while !check() {
            assert!(started.elapsed() < limit, "{what} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_engines_racing_for_the_lease_never_both_win() {
        let server = FakeKube::start().unwrap();
        let config = kube::Config::new(server.url().parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let (a, b) = (election(&client, "a"), election(&client, "b"));
        let (mut seen_a, mut seen_b) = (None, None);
        // Both find no Lease and create it: one create is refused (409 AlreadyExists).
        let (won_a, won_b) = tokio::join!(a.round(&mut seen_a), b.round(&mut seen_b));
        assert!(won_a ^ won_b, "a: {won_a}, b: {won_b}");
        // Let it expire in b's eyes, then both write the same resourceVersion at once: the
        // second write is stale (409 Conflict), so again exactly one holds it.
        let (_, _) = tokio::join!(a.round(&mut seen_a), b.round(&mut seen_b));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (won_a, won_b) = tokio::join!(a.round(&mut seen_a), b.round(&mut seen_b));
        assert!(won_a ^ won_b, "a: {won_a}, b: {won_b}");
        // A write naming a version someone else has since replaced is refused: the Lease
        // cannot be taken from a stale read.
        let stale = a.api.get("plue-pool").await.unwrap();
        let leader = if won_a { &a } else { &b };
        let mut seen = None;
        assert!(leader.round(&mut seen).await, "the holder renews");
        let loser = if won_a { &b } else { &a };
        let refused = loser
            .api
            .replace(
                "plue-pool",
                &PostParams::default(),
                &loser.lease(Some(&stale)),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, kube::Error::Api(s) if s.code == 409),
            "{refused}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_engine_leads_and_another_takes_over_when_it_dies_or_steps_down() {
        let server = FakeKube::start().unwrap();
        let config = kube::Config::new(server.url().parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let (a_tx, a) = watch::channel(false);
        let (b_tx, b) = watch::channel(false);
        let a_task = tokio::spawn(election(&client, "a").run(a_tx, CancellationToken::new()));
        until("a leads", Duration::from_secs(5), || *a.borrow()).await;
        let b_stop = CancellationToken::new();
        let b_task = tokio::spawn(election(&client, "b").run(b_tx, b_stop.clone()));
        // Both campaign for several lease periods: only ever one leader.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2500) {
            assert!(!(*a.borrow() && *b.borrow()), "two leaders at once");
            assert!(*a.borrow(), "a keeps renewing");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // a dies without giving the lease up: b takes over once it expires.
        a_task.abort();
        let took = until("b takes over", Duration::from_secs(5), || *b.borrow()).await;
        assert!(took <= Duration::from_millis(2500), "{took:?}");
        // b steps down cleanly: c takes over at once, not after the lease duration.
        let (c_tx, c) = watch::channel(false);
        let c_task = tokio::spawn(election(&client, "c").run(c_tx, CancellationToken::new()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!*c.borrow() && *b.borrow());
        b_stop.cancel();
        b_task.await.unwrap();
        let took = until("c takes over", Duration::from_secs(5), || *c.borrow()).await;
        assert!(took < Duration::from_millis(1000), "{took:?}");
        c_task.abort();
        let lease = server
            .object("coordination.k8s.io/leases", "ci", "plue-pool")
            .unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "c");
        assert_eq!(lease["spec"]["leaseTransitions"], 2);
    }
}
