//! The bounds of one evaluation. Defaults are the documented ones (the book's "The
//! workflow sandbox"); every bound is configurable, and both the worker and the parent
//! enforce the ones they can.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Resource and size bounds for evaluating one workflow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time for one evaluation; the worker is killed past it.
    pub timeout: Duration,
    /// Memory the evaluation may allocate on top of the warm worker's own.
    pub memory_bytes: u64,
    /// Largest accepted workflow source.
    pub max_source_bytes: usize,
    /// Most steps in one plan.
    pub max_steps: usize,
    /// Largest canonical plan JSON.
    pub max_plan_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(2),
            memory_bytes: 256 * 1024 * 1024,
            max_source_bytes: 256 * 1024,
            max_steps: 1000,
            max_plan_bytes: 1024 * 1024,
        }
    }
}

/// `1048576` → `"1 MiB"`, for messages.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(256 * 1024), "256 KiB");
        assert_eq!(human_bytes(1024 * 1024), "1 MiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
