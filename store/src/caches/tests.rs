//! Tests of `caches` on both backends: a lookup reads only its partitions and trusts, the
//! first write wins, eviction spares kept partitions, retention dooms unused objects.

use super::*;
use crate::testing::stores;

fn partition(label: &str) -> Partition {
    Partition::parse(label).expect("a partition's label")
}

fn entry<'a>(partition: &str, key: &'a str, size: i64, now: i64) -> NewCacheEntry<'a> {
    NewCacheEntry {
        repo_id: None,
        partition: self::partition(partition),
        name: "rust",
        key,
        digest: "sha256:00",
        size,
        blob_key: "caches/local/00",
        run_id: 1,
        causer: Some("github:alice"),
        trust: Trust::Trusted,
        now,
    }
}

fn labels(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn partitions(list: &[&str]) -> Vec<Partition> {
    list.iter().map(|label| partition(label)).collect()
}

/// Each partition of `list` with the trust every test entry is written under.
fn places(list: &[&str]) -> Vec<CachePlace> {
    list.iter()
        .map(|p| CachePlace {
            partition: partition(p),
            trust: Trust::Trusted,
        })
        .collect()
}

async fn record(store: &Store, new: &NewCacheEntry<'_>) -> CacheEntryRow {
    match store
        .record_cache_entry(new, 1 << 40, &[], &[])
        .await
        .unwrap()
    {
        CacheRecorded::Created { entry, .. } => entry,
        other => panic!("not created: {other:?}"),
    }
}

#[tokio::test]
async fn a_run_keeps_the_partition_it_was_stored_with() {
    for (store, _dir) in stores().await {
        let plan = evaluator::plan::Plan::new("ci", Vec::new());
        let json = serde_json::to_string(&plan).unwrap();
        let local = crate::testing::local_run(&plan, &json);
        let repo_id = crate::testing::create_repo(&store, "acme/app").await;
        let in_repo = crate::NewRun {
            repo: Some(crate::RunRepo {
                repo_id,
                secrets_allowed: true,
            }),
            ..local
        };
        // Stored without one: the least trusted of its kind.
        let without = store.create_run(&local, 4).await.unwrap().id;
        assert_eq!(
            store.run_cache_partition(without).await.unwrap(),
            Some((Partition::Local, None))
        );
        let without = store.create_run(&in_repo, 4).await.unwrap().id;
        assert_eq!(
            store.run_cache_partition(without).await.unwrap(),
            Some((Partition::Untrusted, Some(repo_id)))
        );
        let with = store
            .create_run_in_partition(&in_repo, 4, None, &[], &Partition::Pull(7))
            .await
            .unwrap()
            .id;
        assert_eq!(
            store.run_cache_partition(with).await.unwrap(),
            Some((Partition::Pull(7), Some(repo_id)))
        );
        let stored = store.run(with).await.unwrap().unwrap();
        assert_eq!(stored.cache_partition.as_deref(), Some("pull:7"));
        assert_eq!(stored.partition(), Partition::Pull(7));
        // A label no partition has, or the local scope's in a repository's run: the least
        // trusted.
        for label in ["nonsense", "local"] {
            store
                .execute(
                    Statement::new("UPDATE runs SET cache_partition = $1 WHERE id = $2")
                        .bind(label)
                        .bind(with),
                )
                .await
                .unwrap();
            assert_eq!(
                store.run_cache_partition(with).await.unwrap(),
                Some((Partition::Untrusted, Some(repo_id))),
                "{label}"
            );
            let stored = store.run(with).await.unwrap().unwrap();
            assert_eq!(stored.partition(), Partition::Untrusted, "{label}");
        }
        let with = store
            .create_run_in_partition(&local, 4, None, &[], &Partition::Local)
            .await
            .unwrap()
            .id;
        assert_eq!(
            store.run_cache_partition(with).await.unwrap(),
            Some((Partition::Local, None))
        );
        assert_eq!(store.run_cache_partition(with + 100).await.unwrap(), None);
    }
}

#[tokio::test]
async fn lookup_reads_only_the_given_partitions_in_order() {
    for (store, _dir) in stores().await {
        record(&store, &entry("fork:eve/x", "rust-aa", 1, 10)).await;
        let default = record(&store, &entry("default", "rust-aa", 1, 5)).await;
        let own = record(&store, &entry("pull:1", "rust-aa", 1, 1)).await;
        let none = store
            .lookup_cache("local", &places(&["protected"]), "rust", "rust-aa", &[])
            .await
            .unwrap();
        assert_eq!(none, None);
        let (found, exact) = store
            .lookup_cache(
                "local",
                &places(&["default", "protected"]),
                "rust",
                "rust-aa",
                &[],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.id, exact), (default.id, true));
        let (found, _) = store
            .lookup_cache(
                "local",
                &places(&["pull:1", "default", "protected"]),
                "rust",
                "rust-aa",
                &[],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, own.id, "the run's own partition first");
        // Another scope sees nothing; another cache name sees nothing.
        assert_eq!(
            store
                .lookup_cache("repo-1", &places(&["default"]), "rust", "rust-aa", &[])
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .lookup_cache("local", &places(&["default"]), "node", "rust-aa", &[])
                .await
                .unwrap(),
            None
        );
    }
}

// An entry is found only under the trust it was written with: a run with secrets
// looking in a partition never finds what a lower trust wrote there (an entry saved
// before trust was recorded, a row written wrongly), by key or by prefix.
#[tokio::test]
async fn a_lookup_matches_the_trust_an_entry_was_written_under() {
    for (store, _dir) in stores().await {
        let mut lower = entry("agents", "rust-aa", 1, 1);
        lower.trust = Trust::Relayed;
        lower.causer = Some("github:mallory");
        let written = record(&store, &lower).await;
        assert_eq!(written.trust, "relayed");
        assert_eq!(written.causer.as_deref(), Some("github:mallory"));
        let trusted = places(&["agents"]);
        for prefixes in [vec![], labels(&["rust-"])] {
            let key = if prefixes.is_empty() {
                "rust-aa"
            } else {
                "rust-zz"
            };
            assert_eq!(
                store
                    .lookup_cache("local", &trusted, "rust", key, &prefixes)
                    .await
                    .unwrap(),
                None,
                "{prefixes:?}"
            );
        }
        let relayed = [CachePlace {
            partition: Partition::Agents,
            trust: Trust::Relayed,
        }];
        let (found, _) = store
            .lookup_cache("local", &relayed, "rust", "rust-aa", &[])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, written.id);
    }
}

// A tampered object takes every entry naming it; what names an object is known.
#[tokio::test]
async fn the_entries_of_an_object_go_together() {
    for (store, _dir) in stores().await {
        let first = record(&store, &entry("default", "rust-1", 1, 1)).await;
        record(&store, &entry("pull:2", "rust-1", 1, 2)).await;
        let mut other = entry("default", "rust-2", 1, 3);
        other.blob_key = "caches/local/02";
        record(&store, &other).await;
        assert!(store.cache_object_named(&first.blob_key).await.unwrap());
        assert_eq!(
            store
                .delete_cache_entries_of_blob(&first.blob_key)
                .await
                .unwrap(),
            2
        );
        assert!(!store.cache_object_named(&first.blob_key).await.unwrap());
        assert!(store.cache_object_named("caches/local/02").await.unwrap());
        assert_eq!(kept_keys(&store).await, vec!["rust-2".to_string()]);
    }
}

#[tokio::test]
async fn prefixes_match_literally_and_the_newest_wins() {
    for (store, _dir) in stores().await {
        record(&store, &entry("default", "rust-a1", 1, 1)).await;
        let newer = record(&store, &entry("default", "rust-a2", 1, 2)).await;
        record(&store, &entry("default", "rust-xy", 1, 3)).await;
        let parts = places(&["default"]);
        let (found, exact) = store
            .lookup_cache("local", &parts, "rust", "rust-zz", &labels(&["rust-a"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.id, exact), (newer.id, false));
        // `_` and `%` are no wildcards.
        for pattern in ["rust-_", "rust-%", "rust-a%", "rust_"] {
            assert_eq!(
                store
                    .lookup_cache("local", &parts, "rust", "rust-zz", &labels(&[pattern]))
                    .await
                    .unwrap(),
                None,
                "{pattern}"
            );
        }
    }
}

#[tokio::test]
async fn the_first_write_wins() {
    for (store, _dir) in stores().await {
        let first = record(&store, &entry("default", "rust-aa", 1, 1)).await;
        let mut second = entry("default", "rust-aa", 2, 2);
        second.digest = "sha256:11";
        match store
            .record_cache_entry(&second, 1 << 40, &[], &[])
            .await
            .unwrap()
        {
            CacheRecorded::Kept(kept) => assert_eq!(kept, first),
            other => panic!("replaced: {other:?}"),
        }
        // The same key in another partition is its own entry.
        record(&store, &entry("branch:x", "rust-aa", 1, 3)).await;
    }
}

#[tokio::test]
async fn eviction_is_least_recently_used_and_spares_kept_partitions() {
    for (store, _dir) in stores().await {
        let old = record(&store, &entry("default", "rust-1", 40, 1)).await;
        let used = record(&store, &entry("default", "rust-2", 40, 2)).await;
        store.touch_cache_entry(old.id, 10).await.unwrap();
        // A fork may not evict the default's entries: over quota, nothing recorded.
        let keep = partitions(&["default", "protected"]);
        let forked = store
            .record_cache_entry(&entry("fork:eve/x", "rust-3", 40, 11), 100, &keep, &keep)
            .await
            .unwrap();
        assert_eq!(forked, CacheRecorded::OverQuota { used: 80 });
        assert_eq!(store.cache_usage("local").await.unwrap(), 80);
        // The default branch evicts the least recently used (rust-2, untouched).
        match store
            .record_cache_entry(&entry("default", "rust-3", 40, 12), 100, &[], &[])
            .await
            .unwrap()
        {
            CacheRecorded::Created { evicted, .. } => {
                assert_eq!(evicted, vec!["caches/local/00".to_string()])
            }
            other => panic!("{other:?}"),
        }
        let kept = kept_keys(&store).await;
        assert_eq!(kept, vec!["rust-1".to_string(), "rust-3".to_string()]);
        assert_ne!(used.key, old.key);
        // Larger than the quota: never recorded.
        assert!(matches!(
            store
                .record_cache_entry(&entry("default", "rust-4", 101, 13), 100, &[], &[])
                .await
                .unwrap(),
            CacheRecorded::OverQuota { .. }
        ));
    }
}

/// The keys of scope `local`'s entries, sorted.
async fn kept_keys(store: &Store) -> Vec<String> {
    let mut kept: Vec<String> = store
        .cache_entries_of("local", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    kept.sort();
    kept
}

// The attack: forks fill the quota with entries used more recently than the default
// branch's; the default branch's next save must evict theirs, not its own older one.
#[tokio::test]
async fn less_trusted_entries_go_before_a_spared_partitions_own() {
    for (store, _dir) in stores().await {
        let spare = partitions(&["default", "protected"]);
        let main = record(&store, &entry("default", "rust-1", 40, 1)).await;
        let tag = record(&store, &entry("protected", "rust-t", 10, 2)).await;
        for (i, key) in ["rust-2", "rust-3"].into_iter().enumerate() {
            let recorded = store
                .record_cache_entry(
                    &entry("fork:eve/x", key, 20, 10 + i as i64),
                    100,
                    &spare,
                    &spare,
                )
                .await
                .unwrap();
            assert!(matches!(recorded, CacheRecorded::Created { .. }));
        }
        // Full (90 of 100): a pull request evicts the fork's oldest, never `default`'s
        // or `protected`'s; more than the others hold is refused.
        let pull = store
            .record_cache_entry(&entry("pull:4", "rust-4", 20, 20), 100, &spare, &spare)
            .await
            .unwrap();
        assert!(
            matches!(&pull, CacheRecorded::Created { evicted, .. } if evicted.len() == 1),
            "{pull:?}"
        );
        let refused = store
            .record_cache_entry(&entry("pull:4", "rust-6", 60, 21), 100, &spare, &spare)
            .await
            .unwrap();
        assert_eq!(refused, CacheRecorded::OverQuota { used: 90 });
        // The default branch's save evicts the fork's and the pull request's entries, though
        // more recently used than its own.
        match store
            .record_cache_entry(&entry("default", "rust-5", 40, 30), 100, &[], &spare)
            .await
            .unwrap()
        {
            CacheRecorded::Created { evicted, .. } => assert_eq!(evicted.len(), 2),
            other => panic!("{other:?}"),
        }
        let kept = kept_keys(&store).await;
        assert_eq!(kept, vec![main.key, "rust-5".to_string(), tag.key]);
    }
}

#[tokio::test]
async fn retention_deletes_unused_entries_and_dooms_their_objects() {
    for (store, _dir) in stores().await {
        let stale = record(&store, &entry("default", "rust-1", 1, 1)).await;
        let mut fresh = entry("default", "rust-2", 1, 100);
        fresh.blob_key = "caches/local/02";
        let fresh = record(&store, &fresh).await;
        assert_eq!(store.delete_unused_cache_entries(50).await.unwrap(), 1);
        assert_eq!(store.cache_entry(stale.id).await.unwrap(), None);
        assert_eq!(
            store.cache_entries_of("local", 10).await.unwrap(),
            vec![fresh]
        );
        assert_eq!(
            store.doomed_blobs(10).await.unwrap(),
            vec!["caches/local/00".to_string()]
        );
        // An object another entry still names is not doomed.
        let mut again = entry("default", "rust-3", 1, 100);
        again.blob_key = "caches/local/02";
        record(&store, &again).await;
        let second = store.cache_entries_of("local", 10).await.unwrap();
        store.delete_cache_entry(second[0].id).await.unwrap();
        store.forget_doomed_blob("caches/local/00").await.unwrap();
        assert_eq!(store.doomed_blobs(10).await.unwrap(), Vec::<String>::new());
        store.doom_blob_key("caches/local/03").await.unwrap();
        store.doom_blob_key("caches/local/03").await.unwrap();
        assert_eq!(
            store.doomed_blobs(10).await.unwrap(),
            vec!["caches/local/03".to_string()]
        );
    }
}
