//! Packing round trips, and every attack a hostile archive can try on [`unpack`].

use std::path::{Path, PathBuf};

use plue_types::handoff::Limits;
use sha2::Digest;

use super::*;
use testkit::hostile_tar::raw_entry;

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn archive(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, link, data) in entries {
        raw_entry(&mut out, path, *kind, link, data);
    }
    finish(out)
}

/// Unpacks into `<tmp>/ws` and returns the error text; asserts nothing appeared beside it.
fn refused(bytes: &[u8], limits: &Limits) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ws");
    std::fs::create_dir(&root).unwrap();
    let err = unpack(bytes, &root, limits).expect_err("the archive must be refused");
    let beside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        beside,
        ["ws"],
        "nothing may be written outside the workspace"
    );
    err.to_string()
}

const FILE: tar::EntryType = tar::EntryType::Regular;

#[test]
fn a_workspace_round_trips_with_modes_and_inner_links() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("dist/deep")).unwrap();
    std::fs::write(src.join("a.txt"), "edited\n").unwrap();
    std::fs::write(src.join("dist/out.txt"), "built\n").unwrap();
    std::fs::write(src.join("dist/deep/x.bin"), [0u8, 1, 2]).unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("dist/out.txt", src.join("inner")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("outer")).unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();

    let mut tar = Vec::new();
    let packed = pack(&src, &Selection::Everything, &Limits::default(), &mut tar).unwrap();
    assert_eq!(packed.files, 4);
    assert_eq!(packed.skipped, 2, "the FIFO and the link pointing outside");

    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    unpack(&tar[..], &dst, &Limits::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dst.join("a.txt")).unwrap(),
        "edited\n"
    );
    assert_eq!(
        std::fs::read(dst.join("dist/deep/x.bin")).unwrap(),
        [0, 1, 2]
    );
    assert_eq!(
        std::fs::read_to_string(dst.join("inner")).unwrap(),
        "built\n"
    );
    assert!(!dst.join("outer").exists() && !dst.join("fifo").exists());
    let mode = std::fs::metadata(dst.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111);

    let mut only = Vec::new();
    let globs = Selection::artifacts(&["dist/**".into(), "*.sh".into()]).unwrap();
    pack(&src, &globs, &Limits::default(), &mut only).unwrap();
    let listed: Vec<_> = list(&only[..], &Limits::default())
        .unwrap()
        .into_iter()
        .map(|f| (f.path, f.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("dist/deep/x.bin".to_string(), 3),
            ("dist/out.txt".to_string(), 6),
            ("run.sh".to_string(), 10)
        ]
    );
    let digest = &list(&only[..], &Limits::default()).unwrap()[1].digest;
    let expected: String = sha2::Sha256::digest(b"built\n")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, &format!("sha256:{expected}"));
}

#[test]
fn packing_stops_at_the_limits() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("big"), vec![7u8; 10_000]).unwrap();
    let small = Limits {
        max_bytes: 4096,
        max_entries: 10,
    };
    let err = pack(tmp.path(), &Selection::Everything, &small, std::io::sink()).unwrap_err();
    assert_eq!(err.to_string(), "larger than the limit of 4 KiB");
    for i in 0..5 {
        std::fs::write(tmp.path().join(format!("f{i}")), "x").unwrap();
    }
    std::fs::remove_file(tmp.path().join("big")).unwrap();
    let few = Limits {
        max_bytes: 1 << 20,
        max_entries: 3,
    };
    let err = pack(tmp.path(), &Selection::Everything, &few, std::io::sink()).unwrap_err();
    assert_eq!(err.to_string(), "more than 3 entries (the limit)");
}

#[test]
fn unpacking_refuses_an_absolute_path() {
    let bytes = archive(&[("/tmp/plue-evil", FILE, "", b"x")]);
    let err = refused(&bytes, &Limits::default());
    assert!(
        err.contains("'/tmp/plue-evil'") && err.contains("must be relative"),
        "{err}"
    );
    assert!(!Path::new("/tmp/plue-evil").exists());
}

#[test]
fn unpacking_refuses_dot_dot() {
    let bytes = archive(&[("a/../../evil", FILE, "", b"x")]);
    let err = refused(&bytes, &Limits::default());
    assert!(err.contains("without '..'"), "{err}");
}

#[test]
fn unpacking_refuses_symlinks_that_point_outside() {
    for target in ["/etc", "../..", "a/../../x"] {
        let bytes = archive(&[("link", tar::EntryType::Symlink, target, b"")]);
        let err = refused(&bytes, &Limits::default());
        assert!(
            err.contains("would point outside the workspace"),
            "{target}: {err}"
        );
    }
}

#[test]
fn unpacking_never_writes_through_a_symlink() {
    // An inner link first, then a file "below" it: even a link that stays inside is never
    // followed, so a later entry cannot reach a path the link's target was swapped to.
    let bytes = archive(&[
        ("dir", tar::EntryType::Directory, "", b""),
        ("ok", tar::EntryType::Symlink, "dir", b""),
        ("ok/x", FILE, "", b"x"),
    ]);
    let err = refused(&bytes, &Limits::default());
    assert!(
        err.contains("'ok/x'") && err.contains("parent is a symbolic link"),
        "{err}"
    );

    // A link already in the workspace (a checkout's own) that points outside.
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let root = tmp.path().join("ws");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    let bytes = archive(&[("evil/planted", FILE, "", b"x")]);
    assert!(unpack(&bytes[..], &root, &Limits::default()).is_err());
    assert!(!outside.join("planted").exists());

    // A file entry over an existing link replaces the link, never writes to its target.
    std::fs::write(outside.join("target"), "keep").unwrap();
    std::os::unix::fs::symlink(outside.join("target"), root.join("over")).unwrap();
    let bytes = archive(&[("over", FILE, "", b"new")]);
    unpack(&bytes[..], &root, &Limits::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(outside.join("target")).unwrap(),
        "keep"
    );
    assert_eq!(std::fs::read_to_string(root.join("over")).unwrap(), "new");
}

#[test]
fn unpacking_refuses_devices_fifos_and_hard_links() {
    for (kind, name) in [
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "FIFO"),
        (tar::EntryType::Link, "hard link"),
    ] {
        let bytes = archive(&[("dev", kind, "/etc/shadow", b"")]);
        let err = refused(&bytes, &Limits::default());
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn unpacking_refuses_archives_over_the_size_limit() {
    let limits = Limits {
        max_bytes: 1000,
        max_entries: 100,
    };
    let bytes = archive(&[("a", FILE, "", &[1u8; 600]), ("b", FILE, "", &[2u8; 600])]);
    let err = refused(&bytes, &limits);
    assert!(err.contains("larger than the limit of 1000 bytes"), "{err}");

    // A header that claims a huge size is refused before its content is read.
    let mut out = Vec::new();
    raw_entry(&mut out, "huge", FILE, "", b"");
    let header = tar::Header::from_byte_slice(&out[..512]);
    let mut header = header.clone();
    header.set_size(1 << 40);
    header.set_cksum();
    out[..512].copy_from_slice(header.as_bytes());
    let err = refused(&finish(out), &limits);
    assert!(err.contains("larger than the limit"), "{err}");

    // A long name (read into memory by the tar reader) past the stream's bound fails on
    // the byte count instead of being allocated whole.
    let mut long = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut long);
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        builder
            .append_data(&mut header, "n".repeat(2 << 20), &b"x"[..])
            .unwrap();
        builder.finish().unwrap();
    }
    let tiny = Limits {
        max_bytes: 0,
        max_entries: 1,
    };
    refused(&long, &tiny);
}

#[test]
fn unpacking_refuses_too_many_entries() {
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 3,
    };
    let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    let entries: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), FILE, "", &b"x"[..]))
        .collect();
    let err = refused(&archive(&entries), &limits);
    assert!(err.contains("more than 3 entries"), "{err}");
}

const LINK: tar::EntryType = tar::EntryType::Symlink;

#[test]
fn unpacking_refuses_a_link_whose_chain_leads_outside() {
    // regression: the check read each target's text alone, so `a -> .` and then
    // `b -> a/..` (one name down, one up) passed while `b` reached the parent.
    let chains: [&[(&str, &str)]; 5] = [
        &[("a", "."), ("b", "a/..")],
        &[("a", "."), ("b", "a/a/a/../../..")],
        // The link the chain goes through comes later in the archive.
        &[("b", "a/.."), ("a", ".")],
        // A later entry re-points a link an earlier one was checked through.
        &[("a", "sub"), ("b", "a/.."), ("a", ".")],
        // Deeper: `d/up -> ..` is the root; `d/x -> up/..` above it.
        &[("d/up", ".."), ("d/x", "up/..")],
    ];
    for chain in chains {
        let mut entries = vec![("sub/", tar::EntryType::Directory, "", &b""[..])];
        entries.push(("d/", tar::EntryType::Directory, "", b""));
        entries.extend(
            chain
                .iter()
                .map(|(path, target)| (*path, LINK, *target, &b""[..])),
        );
        let err = refused(&archive(&entries), &Limits::default());
        assert!(err.contains("through other links"), "{chain:?}: {err}");
    }
    // Loops lead nowhere; they are refused rather than followed forever.
    let err = refused(
        &archive(&[("a", LINK, "b", b""), ("b", LINK, "a/x", b"")]),
        &Limits::default(),
    );
    assert!(err.contains("through other links"), "{err}");
}

#[test]
fn links_whose_chain_stays_inside_are_unpacked() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = archive(&[
        ("vendor/real/", tar::EntryType::Directory, "", b""),
        ("vendor/real/lib.txt", FILE, "", b"lib"),
        ("vendor/lib", LINK, "real", b""),
        ("lib", LINK, "vendor/lib", b""),
        ("here", LINK, ".", b""),
        ("deep", LINK, "here/here/vendor/lib/../real/lib.txt", b""),
        ("dangling", LINK, "missing/file", b""),
    ]);
    unpack(&bytes[..], tmp.path(), &Limits::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("deep")).unwrap(),
        "lib"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("lib/lib.txt")).unwrap(),
        "lib"
    );
}

#[test]
fn packing_leaves_out_a_link_whose_chain_leads_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::os::unix::fs::symlink(".", src.join("a")).unwrap();
    std::os::unix::fs::symlink("a/..", src.join("b")).unwrap();
    std::os::unix::fs::symlink("sub/../a/a/sub", src.join("c")).unwrap();
    let mut tar = Vec::new();
    let packed = pack(&src, &Selection::Everything, &Limits::default(), &mut tar).unwrap();
    assert_eq!(packed.skipped, 1, "only b leads outside");
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    unpack(&tar[..], &dst, &Limits::default()).unwrap();
    assert!(dst.join("a").is_symlink() && dst.join("c").is_symlink());
    assert!(dst.join("b").symlink_metadata().is_err());
}

/// A sink that, when it first sees `trigger` written (an entry's header), runs `swap`: the
/// step swapping its workspace while the runner packs.
struct SwapWhenWritten<F: FnMut()> {
    out: Vec<u8>,
    trigger: &'static [u8],
    swap: Option<F>,
}

impl<F: FnMut()> std::io::Write for SwapWhenWritten<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.windows(self.trigger.len()).any(|w| w == self.trigger) {
            if let Some(mut swap) = self.swap.take() {
                swap();
            }
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_directory_swapped_for_a_link_mid_pack_is_not_read_through() {
    // regression: the walk opened directories by path, and files with O_NOFOLLOW on the
    // last name only: `d` swapped for a link to another attempt's directory after the
    // listing was walked into, and its secret packed.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let other = tmp.path().join("other-attempt");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("secret.txt"), "DEPLOY_KEY=hunter2").unwrap();
    std::fs::write(src.join("c.txt"), "first").unwrap();
    std::fs::write(src.join("d/secret.txt"), "mine").unwrap();
    for target in [other.clone(), PathBuf::from("/etc")] {
        let (d, src2) = (src.join("d"), src.clone());
        let moved = tmp.path().join("moved");
        let _ = std::fs::remove_dir_all(&moved);
        if d.is_symlink() {
            std::fs::remove_file(&d).unwrap();
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("secret.txt"), "mine").unwrap();
        }
        let swap = {
            let target = target.clone();
            move || {
                std::fs::rename(src2.join("d"), &moved).unwrap();
                std::os::unix::fs::symlink(&target, src2.join("d")).unwrap();
            }
        };
        let mut out = SwapWhenWritten {
            out: Vec::new(),
            trigger: b"c.txt",
            swap: Some(swap),
        };
        pack(&src, &Selection::Everything, &Limits::default(), &mut out).unwrap();
        assert!(out.swap.is_none(), "the swap ran");
        let text = String::from_utf8_lossy(&out.out);
        assert!(
            !text.contains("hunter2"),
            "another attempt's file was packed"
        );
        let paths: Vec<_> = list(&out.out[..], &Limits::default())
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(paths, ["c.txt"], "{target:?}");
    }
}

#[test]
fn a_tree_deeper_than_the_open_directory_bound_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut deep = src.clone();
    for i in 0..super::pack::MAX_OPEN_DIRS + 10 {
        deep.push(format!("{i}"));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), format!("{i}")).unwrap();
    }
    std::fs::write(src.join("z-after"), "last").unwrap();
    let mut tar = Vec::new();
    let packed = pack(&src, &Selection::Everything, &Limits::default(), &mut tar).unwrap();
    assert_eq!(packed.files, super::pack::MAX_OPEN_DIRS as u64 + 11);
    let names: Vec<_> = list(&tar[..], &Limits::default())
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(names.last().unwrap(), "z-after");
}

#[test]
fn a_later_archive_cannot_re_point_an_earlier_link_outside() {
    // The first archive's `b -> x/..` is inside (x is missing); the second's `x -> a/a`
    // with `a -> .` makes b lead above the root.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ws");
    std::fs::create_dir(&root).unwrap();
    let first = archive(&[("b", LINK, "x/..", b"")]);
    unpack(&first[..], &root, &Limits::default()).unwrap();
    let second = archive(&[("a", LINK, ".", b""), ("x", LINK, "a/a", b"")]);
    let err = unpack(&second[..], &root, &Limits::default()).unwrap_err();
    assert!(
        err.to_string().contains("'b'") && err.to_string().contains("through other links"),
        "{err}"
    );
    // A link of the workspace's own that already points outside is left alone.
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/usr/share", tmp.path().join("system")).unwrap();
    let honest = archive(&[
        ("lib", LINK, "dist", b""),
        ("dist/", tar::EntryType::Directory, "", b""),
    ]);
    unpack(&honest[..], tmp.path(), &Limits::default()).unwrap();
}

/// The attacker's tree of issue 30: `d/` `depth` times, then `e/` and links `L0` … `L40`
/// where `L<i>` steps `e/..` down and up `steps` times before naming `L<i+1>` (817 make a
/// target of 4,088 bytes) and `L40 -> e`; and `heads` more links `H<k> -> L1` (40 hops, the most). Returns the root and
/// the deepest directory, relative.
fn costly_tree(depth: usize, heads: usize, steps: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ws");
    let deep: PathBuf = std::iter::repeat_n("d", depth).collect();
    std::fs::create_dir_all(root.join(&deep).join("e")).unwrap();
    for i in 0..MAX_HOPS {
        let target = format!("e/..{}/L{}", "/e/..".repeat(steps - 1), i + 1);
        std::os::unix::fs::symlink(&target, root.join(&deep).join(format!("L{i}"))).unwrap();
    }
    std::os::unix::fs::symlink("e", root.join(&deep).join(format!("L{MAX_HOPS}"))).unwrap();
    for k in 0..heads {
        std::os::unix::fs::symlink("L1", root.join(&deep).join(format!("H{k:03}"))).unwrap();
    }
    (tmp, root, deep)
}

use super::links::{Resolver, MAX_HOPS};

#[test]
fn resolving_a_link_costs_per_name_not_per_name_times_depth() {
    // regression (issue 30): every name of a target reopened every directory from the
    // root: links x (hops+1) x names x depth openat calls, ~60M for one link at depth 1,800.
    let lookups = |depth: usize| {
        let (_tmp, root, deep) = costly_tree(depth, 0, 817);
        let dir = std::fs::File::open(&root).unwrap();
        let mut resolver = Resolver::new(std::os::fd::AsFd::as_fd(&dir));
        let link = deep.join("L0");
        let target = std::fs::read_link(root.join(&link)).unwrap();
        assert_eq!(resolver.resolves_inside(&link, &target), Ok(true));
        resolver.lookups()
    };
    let (shallow, deep) = (lookups(10), lookups(400));
    // 41 targets of ~818 `e/..` steps: one `openat` each, `..` free, plus the way down.
    assert!(shallow <= 41 * 820 + 50, "{shallow}");
    assert!(deep <= shallow + 400 + 50, "depth {deep} vs {shallow}");
}

#[test]
fn a_tree_made_to_be_costly_stays_within_the_lookup_budget() {
    // regression (issue 30): 200,000 such links made pack and unpack run for hours. Past
    // the archive's budget, pack leaves the remaining links out and unpack refuses.
    let (_tmp, root, deep) = costly_tree(50, 12, 100);
    let budget = 20_000;
    let mut tar = Vec::new();
    let packed = pack::pack_within(
        &root,
        &Selection::Everything,
        &Limits::default(),
        &mut tar,
        budget,
    )
    .unwrap();
    assert!(packed.link_lookups <= budget, "{packed:?}");
    assert!(packed.links_unresolved > 0, "{packed:?}");
    let kept: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type() == tar::EntryType::Symlink)
        .map(|e| e.path().unwrap().display().to_string())
        .collect();
    assert!(kept.len() < 12 + MAX_HOPS + 1, "{kept:?}");

    // The whole tree, packed within the default budget, then unpacked within a small one.
    let mut tar = Vec::new();
    let packed = pack(&root, &Selection::Everything, &Limits::default(), &mut tar).unwrap();
    assert_eq!(packed.links_unresolved, 0, "{packed:?}");
    assert!(packed.link_lookups <= links::MAX_LOOKUPS, "{packed:?}");
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack::unpack_within(&tar[..], tmp.path(), &Limits::default(), budget)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lookups to resolve"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let unpacked = unpack(&tar[..], tmp.path(), &Limits::default()).unwrap();
    assert!(unpacked.link_lookups <= links::MAX_LOOKUPS, "{unpacked:?}");
    assert!(tmp.path().join(&deep).join("H011").is_symlink());
}
