//! Keys, the pack → receive → restore round trip, the digest check, and what a hostile
//! archive or workspace tries on a restore.

use std::io::Write;
use std::path::Path;

use super::*;
use testkit::hostile_tar::raw_entry;

fn spec(paths: &[&str], key_files: &[&str]) -> CacheSpec {
    CacheSpec {
        name: "deps".into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        key_files: key_files.iter().map(|k| k.to_string()).collect(),
        restore_prefixes: Vec::new(),
        partition: "default".into(),
        max_bytes: 0,
    }
}

/// An attempt's workspace and home in a temporary directory.
struct Attempt {
    tmp: tempfile::TempDir,
}

impl Attempt {
    fn new() -> Attempt {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("workspace")).unwrap();
        std::fs::create_dir(tmp.path().join("home")).unwrap();
        Attempt { tmp }
    }

    fn ws(&self) -> PathBuf {
        self.tmp.path().join("workspace")
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn with<R>(&self, f: impl FnOnce(Dirs<'_>) -> R) -> R {
        let (ws, home) = (self.ws(), self.home());
        f(Dirs {
            workspace: &ws,
            home: &home,
        })
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// What the engine records of `bytes` saved with `digest`.
fn recorded<'a>(digest: &'a str, bytes: &[u8]) -> Recorded<'a> {
    Recorded {
        digest,
        size: bytes.len() as u64,
    }
}

/// `bytes` received (digest checked) into a file, then restored into `attempt`.
fn restore_bytes(
    attempt: &Attempt,
    spec: &CacheSpec,
    bytes: &[u8],
) -> Result<handoff::Unpacked, CacheError> {
    let path = attempt.tmp.path().join("entry");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let digest = sha256(bytes);
    receive(bytes, &mut file, recorded(&digest, bytes), 1 << 30)?;
    let file = File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    attempt.with(|dirs| restore(file, dirs, spec, &Limits::default()))
}

#[test]
fn a_key_is_the_name_and_the_digest_of_the_key_files_paths_and_contents() {
    let a = Attempt::new();
    std::fs::write(a.ws().join("Cargo.lock"), "v1").unwrap();
    let spec = spec(&["target"], &["Cargo.lock", "rust-toolchain.toml"]);
    let first = key(&a.ws(), &spec).unwrap();
    assert!(
        first.key.starts_with("deps-") && first.key.len() == 5 + 64,
        "{first:?}"
    );
    assert_eq!(
        first.absent,
        [("rust-toolchain.toml".to_string(), "is missing")]
    );
    assert_eq!(key(&a.ws(), &spec).unwrap(), first, "deterministic");
    // An empty file is not a missing one.
    std::fs::write(a.ws().join("rust-toolchain.toml"), "").unwrap();
    let empty = key(&a.ws(), &spec).unwrap();
    assert!(empty.absent.is_empty());
    assert_ne!(empty.key, first.key);
    std::fs::write(a.ws().join("Cargo.lock"), "v2").unwrap();
    assert_ne!(key(&a.ws(), &spec).unwrap().key, empty.key);
    // The same bytes split differently between path and content make another key.
    std::fs::write(a.ws().join("ab"), "c").unwrap();
    std::fs::write(a.ws().join("a"), "bc").unwrap();
    assert_ne!(
        key(&a.ws(), &self::spec(&["t"], &["ab"])).unwrap().key,
        key(&a.ws(), &self::spec(&["t"], &["a"])).unwrap().key
    );
}

#[test]
fn a_key_file_that_is_a_link_is_never_followed() {
    let a = Attempt::new();
    let secret = a.tmp.path().join("secret");
    std::fs::write(&secret, "hunter2").unwrap();
    std::os::unix::fs::symlink(&secret, a.ws().join("Cargo.lock")).unwrap();
    std::os::unix::fs::symlink(a.tmp.path(), a.ws().join("up")).unwrap();
    let spec = spec(&["target"], &["Cargo.lock", "up/secret"]);
    let key = key(&a.ws(), &spec).unwrap();
    assert_eq!(
        key.absent,
        [
            ("Cargo.lock".to_string(), "is a symbolic link"),
            ("up/secret".to_string(), "is below a link or a file"),
        ]
    );
    // The key is that of two absent files: the secret's content never entered it.
    std::fs::remove_file(a.ws().join("Cargo.lock")).unwrap();
    std::fs::remove_file(a.ws().join("up")).unwrap();
    assert_eq!(super::key(&a.ws(), &spec).unwrap().key, key.key);
}

#[test]
fn paths_are_checked_again_on_the_runner() {
    for bad in ["/etc", "../x", "a/../../b", "~root/x", "~/", "", "."] {
        assert!(split(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        split("~/.cargo/registry").unwrap(),
        (true, vec![".cargo", "registry"])
    );
    assert_eq!(split("./target/").unwrap(), (false, vec!["target"]));
}

#[test]
fn paths_round_trip_through_an_archive_into_the_workspace_and_the_home() {
    let a = Attempt::new();
    std::fs::create_dir_all(a.ws().join("target/debug")).unwrap();
    std::fs::write(a.ws().join("target/debug/app"), "binary").unwrap();
    std::os::unix::fs::symlink("debug/app", a.ws().join("target/latest")).unwrap();
    // A link out of the cached path (even if inside the workspace) is left out.
    std::fs::write(a.ws().join("Cargo.lock"), "lock").unwrap();
    std::os::unix::fs::symlink("../Cargo.lock", a.ws().join("target/lock")).unwrap();
    std::fs::create_dir_all(a.home().join(".cargo/registry")).unwrap();
    std::fs::write(a.home().join(".cargo/registry/index"), "crates").unwrap();
    let spec = spec(
        &["target", "~/.cargo/registry", "node_modules"],
        &["Cargo.lock"],
    );
    let mut bytes = Vec::new();
    let packed = a
        .with(|dirs| pack(dirs, &spec, &Limits::default(), &mut bytes))
        .unwrap()
        .expect("two paths are there");
    assert_eq!(packed.archive.files, 2);
    assert_eq!(packed.archive.skipped, 1, "the link out of target");
    assert_eq!(
        packed.left_out,
        [("node_modules".to_string(), "does not exist")]
    );
    assert_eq!(
        &bytes[..4],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "zstd's magic number"
    );

    let b = Attempt::new();
    let unpacked = restore_bytes(&b, &spec, &bytes).unwrap();
    assert!(unpacked.entries >= 3, "{unpacked:?}");
    assert_eq!(
        std::fs::read_to_string(b.ws().join("target/debug/app")).unwrap(),
        "binary"
    );
    assert_eq!(
        std::fs::read_link(b.ws().join("target/latest")).unwrap(),
        Path::new("debug/app")
    );
    assert!(!b.ws().join("target/lock").exists());
    assert_eq!(
        std::fs::read_to_string(b.home().join(".cargo/registry/index")).unwrap(),
        "crates"
    );
}

#[test]
fn nothing_to_save_writes_nothing() {
    let a = Attempt::new();
    let mut bytes = Vec::new();
    let packed = a
        .with(|dirs| {
            pack(
                dirs,
                &spec(&["target"], &["k"]),
                &Limits::default(),
                &mut bytes,
            )
        })
        .unwrap();
    assert!(packed.is_none() && bytes.is_empty());
}

#[test]
fn a_tampered_entry_is_refused_before_anything_is_unpacked() {
    let a = Attempt::new();
    std::fs::create_dir_all(a.ws().join("target")).unwrap();
    std::fs::write(a.ws().join("target/x"), "x").unwrap();
    let spec = spec(&["target"], &["k"]);
    let mut bytes = Vec::new();
    a.with(|dirs| pack(dirs, &spec, &Limits::default(), &mut bytes))
        .unwrap();
    let saved = bytes.clone();
    let digest = sha256(&saved);
    let at_save = recorded(&digest, &saved);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut into = tempfile::tempfile().unwrap();
    let err = receive(&bytes[..], &mut into, at_save, 1 << 30).unwrap_err();
    assert!(matches!(err, CacheError::Digest), "{err}");
    assert_eq!(err.to_string(), "does not match its digest");
    // Longer or shorter than recorded, whatever its digest: not the saved entry.
    let mut longer = saved.clone();
    longer.push(0);
    let err = receive(&longer[..], &mut into, at_save, 1 << 30).unwrap_err();
    assert!(matches!(err, CacheError::Digest), "{err}");
    let err = receive(&saved[..saved.len() - 1], &mut into, at_save, 1 << 30).unwrap_err();
    assert!(matches!(err, CacheError::Digest), "{err}");
    // Recorded larger than the bound: refused before a byte is read.
    let err = receive(&saved[..], &mut into, at_save, 10).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    // The saved bytes themselves pass.
    assert_eq!(
        receive(&saved[..], &mut into, at_save, 1 << 30).unwrap(),
        saved.len() as u64
    );
}

// The attack (issue 69): a step leaves a 200 MiB sparse file in a cached path; it takes no
// disk and compresses to almost nothing, so only its length tells. Under a 64 MiB bound it
// is refused before a byte of it is packed.
#[test]
fn a_sparse_file_counts_at_its_full_length() {
    let a = Attempt::new();
    std::fs::create_dir_all(a.ws().join("target")).unwrap();
    let sparse = File::create(a.ws().join("target/sparse")).unwrap();
    sparse.set_len(200 << 20).unwrap();
    let limits = Limits {
        max_bytes: 64 << 20,
        max_entries: 100,
    };
    let mut out = Vec::new();
    let err = a
        .with(|dirs| pack(dirs, &spec(&["target"], &["k"]), &limits, &mut out))
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    assert!(out.len() < 1 << 20, "packed {} bytes first", out.len());
}

// A frame asking for a window larger than [`WINDOW_LOG_MAX`] is refused, not allocated.
#[test]
fn a_frame_asking_for_a_huge_window_is_refused() {
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
    encoder.window_log(27).unwrap();
    encoder.include_contentsize(false).unwrap();
    let mut tar = Vec::new();
    raw_entry(&mut tar, "0/x", tar::EntryType::Regular, "", b"x");
    tar.extend_from_slice(&[0u8; 1024]);
    encoder.write_all(&tar).unwrap();
    let bytes = encoder.finish().unwrap();
    let a = Attempt::new();
    let err = restore_bytes(&a, &spec(&["t"], &["k"]), &bytes).unwrap_err();
    assert!(
        matches!(err, CacheError::Archive(_) | CacheError::Io(_)),
        "{err}"
    );
    assert!(!a.ws().join("t").exists());
}

fn hostile(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (path, kind, link, data) in entries {
        raw_entry(&mut tar, path, *kind, link, data);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    zstd::encode_all(&tar[..], 3).unwrap()
}

/// Every file below `dir`, relative, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            e.path().strip_prefix(dir).unwrap().display().to_string()
        })
        .collect();
    found.sort();
    found
}

#[test]
fn a_hostile_entry_writes_nothing_outside_and_leaves_nothing_it_made() {
    use tar::EntryType::{Regular, Symlink};
    let cases: [(&str, Vec<u8>); 6] = [
        (
            "dot-dot",
            hostile(&[("0/../../escaped", Regular, "", b"x")]),
        ),
        ("absolute", hostile(&[("/tmp/escaped", Regular, "", b"x")])),
        (
            "link out",
            hostile(&[("0/evil", Symlink, "../../../..", b"")]),
        ),
        (
            "link then write through it",
            hostile(&[
                ("0/d", Symlink, "..", b""),
                ("0/d/escaped", Regular, "", b"x"),
            ]),
        ),
        // Inside the archive, but out of its own tree into the other path's.
        (
            "link into the other tree",
            hostile(&[("0/x", Symlink, "../1", b"")]),
        ),
        ("no tree", hostile(&[("7/x", Regular, "", b"x")])),
    ];
    for (what, bytes) in cases {
        let a = Attempt::new();
        let spec = spec(&["target", "~/.cache/pip"], &["k"]);
        let err = restore_bytes(&a, &spec, &bytes).expect_err(what);
        assert!(matches!(err, CacheError::Archive(_)), "{what}: {err}");
        assert_eq!(
            files_below(a.tmp.path()),
            ["home", "workspace"],
            "{what}: nothing written outside, nothing of the restore left ({err})"
        );
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_bound() {
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        "0/zeros",
        tar::EntryType::Regular,
        "",
        &vec![0u8; 4 << 20],
    );
    tar.extend_from_slice(&[0u8; 1024]);
    let bytes = zstd::encode_all(&tar[..], 19).unwrap();
    assert!(bytes.len() < 4096, "a small entry: {}", bytes.len());
    let a = Attempt::new();
    let path = a.tmp.path().join("entry");
    std::fs::write(&path, &bytes).unwrap();
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 10,
    };
    let err = a
        .with(|dirs| {
            restore(
                File::open(&path).unwrap(),
                dirs,
                &spec(&["t"], &["k"]),
                &limits,
            )
        })
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    assert!(!a.ws().join("t").exists());
}

#[test]
fn a_link_in_the_workspace_where_a_cache_goes_is_never_followed() {
    let a = Attempt::new();
    let outside = a.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // A checked-in `target -> ../outside`, and `deps -> ../outside` above a cached path.
    std::os::unix::fs::symlink(&outside, a.ws().join("target")).unwrap();
    std::os::unix::fs::symlink(&outside, a.ws().join("deps")).unwrap();
    for path in ["target", "deps/cache"] {
        let spec = spec(&[path], &["k"]);
        let bytes = hostile(&[("0/planted", tar::EntryType::Regular, "", b"x")]);
        let err = restore_bytes(&a, &spec, &bytes).unwrap_err();
        assert!(
            err.to_string().contains("link or a file in the way"),
            "{err}"
        );
        // Nor is what is behind the link packed.
        std::fs::write(outside.join("secret"), "s").unwrap();
        let mut out = Vec::new();
        let packed = a
            .with(|dirs| pack(dirs, &spec, &Limits::default(), &mut out))
            .unwrap();
        assert!(packed.is_none(), "{path}");
        std::fs::remove_file(outside.join("secret")).unwrap();
    }
    assert!(files_below(&outside).is_empty());
}

#[test]
fn sizes_read_as_people_write_them() {
    assert_eq!(size(512), "512 bytes");
    assert_eq!(size(1536), "1.5 KiB");
    assert_eq!(size(12 << 20), "12.0 MiB");
}

#[test]
fn files_keep_their_modification_times() {
    // A build tool compares them: a restored output must not look newer than the sources
    // of a later checkout.
    let a = Attempt::new();
    std::fs::create_dir_all(a.ws().join("target")).unwrap();
    let built = a.ws().join("target/built");
    std::fs::write(&built, "x").unwrap();
    let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    File::options()
        .write(true)
        .open(&built)
        .unwrap()
        .set_modified(then)
        .unwrap();
    let spec = spec(&["target"], &["k"]);
    let mut bytes = Vec::new();
    a.with(|dirs| pack(dirs, &spec, &Limits::default(), &mut bytes))
        .unwrap();
    let b = Attempt::new();
    restore_bytes(&b, &spec, &bytes).unwrap();
    let restored = std::fs::metadata(b.ws().join("target/built")).unwrap();
    assert_eq!(restored.modified().unwrap(), then);
}

// The attack: an entry whose file has a modification time past what the clock holds (a
// GNU header's base-256 field, up to 2^64 s). The restore neither panics (which skipped
// its clean-up) nor fails the step: the file is restored with its restore's time, or the
// entry refused leaving nothing.
#[test]
fn a_time_past_the_clock_neither_panics_nor_escapes() {
    for mtime in [u64::MAX, i64::MAX as u64, 1 << 40] {
        let mut tar = Vec::new();
        let mut header = tar::Header::new_gnu();
        header.set_path("0/f").unwrap();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(1);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(b"x");
        tar.resize(1024, 0);
        tar.extend_from_slice(&[0u8; 1024]);
        let bytes = zstd::encode_all(&tar[..], 3).unwrap();
        let a = Attempt::new();
        let spec = spec(&["target"], &["k"]);
        let restored = std::panic::catch_unwind(|| restore_bytes(&a, &spec, &bytes))
            .unwrap_or_else(|_| panic!("the restore panicked at mtime {mtime}"));
        match restored {
            Ok(_) => assert_eq!(std::fs::read(a.ws().join("target/f")).unwrap(), b"x"),
            Err(e) => assert_eq!(
                files_below(a.tmp.path()),
                ["home", "workspace"],
                "{mtime}: {e}"
            ),
        }
    }
}

// The attack: where `fs.protected_hardlinks` is off, a step hard-links a file it may not
// read (another user's, root's) into its cached `target` before the save; the runner
// reads everything, so it would pack it into an entry the step's next run restores. A
// file of more than one link is packed only when it belongs to the cached path's owner.
#[test]
fn a_hard_link_to_a_file_of_another_user_is_never_packed() {
    use std::os::unix::fs::{chown, MetadataExt};
    let a = Attempt::new();
    let target = a.ws().join("target");
    std::fs::create_dir(&target).unwrap();
    let secret = a.tmp.path().join("secret");
    std::fs::write(&secret, "root's").unwrap();
    std::fs::write(target.join("own"), "the step's").unwrap();
    std::fs::hard_link(target.join("own"), target.join("own-again")).unwrap();
    std::fs::hard_link(&secret, target.join("stolen")).unwrap();
    // The step's user owns its tree and its own files; the secret stays another's.
    let step_uid = 65534;
    if std::fs::metadata(&secret).unwrap().uid() == step_uid
        || chown(&target, Some(step_uid), Some(step_uid)).is_err()
    {
        eprintln!("not root: the hard-link case needs two users");
        return;
    }
    for name in ["own", "own-again"] {
        chown(target.join(name), Some(step_uid), Some(step_uid)).unwrap();
    }
    let spec = spec(&["target"], &["k"]);
    let mut bytes = Vec::new();
    let packed = a
        .with(|dirs| pack(dirs, &spec, &Limits::default(), &mut bytes))
        .unwrap()
        .expect("target is there");
    assert_eq!(packed.archive.skipped, 1, "the link to the secret");
    let b = Attempt::new();
    restore_bytes(&b, &spec, &bytes).unwrap();
    assert!(!b.ws().join("target/stolen").exists());
    assert_eq!(
        std::fs::read_to_string(b.ws().join("target/own-again")).unwrap(),
        "the step's"
    );
}
