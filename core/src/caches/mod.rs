//! Step caches on the engine's side: the trust partition a run's caches belong to
//! ([`partition`]: which partition a run from where gets, pure, over the ladder and the
//! trusts of [`plue_types::partition`]; [`origin`]: a new run's partition from what the
//! engine recorded about it; [`causer`]: who caused it and whose words a summons acts on),
//! and the service the runner protocol's cache endpoints call ([`service`]: lookup, save,
//! which entries a run may download), over the store's `cache_entries` and the blob
//! store's content-addressed cache objects ([`crate::artifacts::cache`]).
//!
//! Invariants: the partition is decided by the engine when the run is created and stored
//! on the run; nothing a runner or a step sends names or changes it. A run restores only
//! from the partitions [`Partition::reads`](plue_types::partition::Partition::reads)
//! lists, entries written under a trust it may restore
//! ([`Trust::may_restore`](plue_types::partition::Trust::may_restore)), and saves only
//! into its own, recording its causer and its trust.

pub mod causer;
pub mod origin;
pub mod partition;
pub mod service;

pub use partition::{partition_label, Origin, PlanFacts};
