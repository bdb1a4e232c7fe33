//! Step caches on the engine's side: the trust partition a run's caches belong to
//! ([`partition`]: the ladder, pure; [`origin`]: a new run's partition from what the engine
//! recorded about it), and the service the runner protocol's cache endpoints call
//! ([`service`]: lookup, save, which entries a run may download), over the store's
//! `cache_entries` and the blob store's content-addressed cache objects
//! ([`crate::artifacts::cache`]).
//!
//! Invariants: the partition is decided by the engine when the run is created and stored
//! on the run; nothing a runner or a step sends names or changes it. A run restores only
//! from the partitions [`partition::Partition::reads`] lists, and saves only into its own.

pub mod origin;
pub mod partition;
pub mod service;

pub use partition::{partition_label, Origin, Partition, PlanFacts};
