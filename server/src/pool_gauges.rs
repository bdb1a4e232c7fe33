//! What the pools show on `/metrics`: a [`PoolReader`] that turns the local pool's and the
//! Kubernetes classes' published status into the metrics' own gauge types at each scrape.
//!
//! Invariant: this glue is the one place that knows both the pool crate's status and the
//! metrics' gauge types; the metrics module itself knows no pool type.

use std::sync::Arc;

use plue_pool::kubernetes::ClassStatus;
use plue_pool::PoolStatus;
use tokio::sync::watch;

use crate::ops::{ClassGauges, PoolGauges, PoolReader, RunnerCounts};

/// The reader for whichever pools this engine runs; `None` when it runs none.
pub fn reader(
    local: Option<watch::Receiver<PoolStatus>>,
    classes: Option<watch::Receiver<Vec<ClassStatus>>>,
) -> Option<PoolReader> {
    if local.is_none() && classes.is_none() {
        return None;
    }
    Some(Arc::new(move || PoolGauges {
        local: local.as_ref().map(|status| counts(&status.borrow())),
        classes: classes
            .as_ref()
            .map(|classes| {
                classes
                    .borrow()
                    .iter()
                    .map(|class| ClassGauges {
                        class: class.class.clone(),
                        labels: class.labels.clone(),
                        counts: class.pool.as_ref().map(counts),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }))
}

fn counts(status: &PoolStatus) -> RunnerCounts {
    RunnerCounts {
        warm: status.warm,
        busy: status.busy,
        starting: status.starting,
        backing_off: status.backing_off,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use plue_pool::kubernetes::Failures;

    use super::*;

    #[test]
    fn a_follower_class_has_no_counts_and_the_local_pool_reads_live() {
        let (local_tx, local) = watch::channel(PoolStatus {
            warm: 1,
            ..PoolStatus::default()
        });
        let (_keep, classes) = watch::channel(vec![ClassStatus {
            class: "gpu".into(),
            labels: BTreeMap::from([("gpu".to_string(), "yes".to_string())]),
            pool: None,
            failures: Failures::default(),
        }]);
        let read = reader(Some(local), Some(classes)).expect("a reader");
        let first = read();
        assert_eq!(first.local.map(|c| c.warm), Some(1));
        assert_eq!(first.classes.len(), 1);
        assert_eq!(first.classes[0].counts, None);
        assert_eq!(first.classes[0].labels["gpu"], "yes");
        local_tx.send_modify(|status| status.busy = 4);
        assert_eq!(read().local.map(|c| c.busy), Some(4), "read at each scrape");
        assert!(reader(None, None).is_none());
    }
}
