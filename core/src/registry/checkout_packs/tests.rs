use super::{CheckoutPacks, MAX_PACK_BYTES};
use crate::registry::git::{tests::sh, Mirror, Packed};

/// A mirror `7.git` under a fresh mirrors directory holding two commits of an origin:
/// the directory, the origin, and the second commit.
async fn mirror_of_two_commits() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    std::fs::create_dir_all(&origin).unwrap();
    sh(
        &origin,
        "git init -q -b main . && echo one > README && git add -A && git commit -qm one && \
         echo two > README && mkdir -p src && echo fn > src/lib.rs && git add -A && \
         git commit -qm two",
    );
    let sha = sh(&origin, "git rev-parse HEAD");
    let mirror = Mirror::open(tmp.path().join("mirrors/7.git"))
        .await
        .unwrap();
    mirror
        .fetch(origin.to_str().unwrap(), &[sha.as_str()])
        .await
        .unwrap();
    (tmp, origin, sha)
}

#[tokio::test]
async fn a_commit_is_packed_once_without_its_history() {
    let (tmp, origin, sha) = mirror_of_two_commits().await;
    let packs = CheckoutPacks::new(tmp.path().join("mirrors"));
    let pack = packs.pack(7, &sha).await.unwrap().expect("served");
    let again = packs.pack(7, &sha).await.unwrap().expect("served");
    assert_eq!(pack.as_ptr(), again.as_ptr(), "made twice");

    let checkout = tmp.path().join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    runner::workspace::checkout_pack(&pack[..], &sha, &checkout)
        .await
        .unwrap();
    assert_eq!(sh(&checkout, "git rev-parse HEAD"), sha);
    assert_eq!(sh(&checkout, "git rev-list --count HEAD"), "1");
    assert_eq!(sh(&checkout, "git status --porcelain"), "");
    assert_eq!(sh(&checkout, "cat README src/lib.rs"), "two\nfn");
    let parent = sh(&origin, "git rev-parse HEAD~1");
    assert_eq!(
        sh(
            &checkout,
            &format!("git cat-file -e {parent} || echo absent")
        ),
        "absent"
    );

    // Dropped with its repository's mirror: made anew afterwards.
    packs.forget_repo(7);
    let anew = packs.pack(7, &sha).await.unwrap().expect("served");
    assert_ne!(pack.as_ptr(), anew.as_ptr());
    assert_eq!(pack, anew, "the same commit packs the same");
}

#[tokio::test]
async fn what_no_mirror_holds_is_not_served_and_no_mirror_is_made() {
    let (tmp, origin, sha) = mirror_of_two_commits().await;
    let mirrors = tmp.path().join("mirrors");
    let packs = CheckoutPacks::new(mirrors.clone());
    sh(&origin, "echo three > README && git commit -qam three");
    let unfetched = sh(&origin, "git rev-parse HEAD");
    assert!(packs.pack(7, &unfetched).await.unwrap().is_none());
    // Once the mirror has it, it is served: a commit not held is not remembered as such.
    Mirror::open(mirrors.join("7.git"))
        .await
        .unwrap()
        .fetch(origin.to_str().unwrap(), &[unfetched.as_str()])
        .await
        .unwrap();
    assert!(packs.pack(7, &unfetched).await.unwrap().is_some());
    // No such repository's mirror, an abbreviated id, something else than an id.
    assert!(packs.pack(8, &sha).await.unwrap().is_none());
    assert!(!mirrors.join("8.git").exists(), "a mirror was made");
    for odd in [&sha[..12], "--all", "HEAD", "../7.git"] {
        assert!(packs.pack(7, odd).await.unwrap().is_none(), "{odd}");
    }
}

#[tokio::test]
async fn a_pack_past_the_limit_is_refused_without_reading_it_all() {
    let (tmp, _origin, sha) = mirror_of_two_commits().await;
    let mirror = Mirror::open(tmp.path().join("mirrors/7.git"))
        .await
        .unwrap();
    assert_eq!(
        mirror.shallow_pack(&sha, 16).await.unwrap(),
        Packed::TooLarge
    );
    let Packed::Pack(whole) = mirror.shallow_pack(&sha, MAX_PACK_BYTES).await.unwrap() else {
        panic!("no pack");
    };
    assert!(whole.len() > 16 && whole.starts_with(b"PACK"));
    assert_eq!(
        mirror.shallow_pack(&sha, whole.len()).await.unwrap(),
        Packed::Pack(whole.clone()),
        "a pack exactly at the limit is served"
    );
}

#[tokio::test]
async fn a_tag_is_not_served_and_a_failure_is_shared_for_a_while() {
    let (tmp, origin, sha) = mirror_of_two_commits().await;
    let mirrors = tmp.path().join("mirrors");
    let packs = CheckoutPacks::new(mirrors.clone());
    // An annotated tag's id names a commit only once peeled: not served (the runner's
    // checkout of it fetches from the forge).
    sh(&origin, "git tag -a -m release v1");
    let tag = sh(&origin, "git rev-parse v1");
    let mirror = Mirror::open(mirrors.join("7.git")).await.unwrap();
    mirror
        .fetch(origin.to_str().unwrap(), &["refs/tags/v1"])
        .await
        .unwrap();
    assert_eq!(
        sh(&mirrors.join("7.git"), &format!("git cat-file -t {tag}")),
        "tag"
    );
    assert!(packs.pack(7, &tag).await.unwrap().is_none());

    // A commit whose objects are broken cannot be packed: the failure is the answer of
    // every request for a while, not a new pack-objects each.
    let blob = sh(&origin, "git rev-parse HEAD:src/lib.rs");
    let loose = mirrors.join(format!("7.git/objects/{}/{}", &blob[..2], &blob[2..]));
    let kept = std::fs::read(&loose).unwrap();
    std::fs::remove_file(&loose).unwrap();
    std::fs::write(&loose, b"not zlib").unwrap();
    let first = packs.pack(7, &sha).await.unwrap_err();
    std::fs::remove_file(&loose).unwrap();
    std::fs::write(&loose, kept).unwrap();
    let second = packs.pack(7, &sha).await.unwrap_err();
    assert_eq!(format!("{first:#}"), format!("{second:#}"));
    assert!(format!("{first:#}").contains("pack-objects"), "{first:#}");
}
