//! The shadow git directory against a hostile `.git`: only allow-listed settings are
//! kept, nothing is followed out of the workspace, and git still reads the repository.

use std::os::unix::fs::symlink;
use std::process::Command;

use super::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.name=P", "-c", "user.email=p@example.com"])
        .args(["-c", "init.defaultBranch=main"])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// A committed checkout at `<tmp>/work` and a place for shadows at `<tmp>/shadows`.
fn checkout() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("work");
    let shadows = tmp.path().join("shadows");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&shadows).unwrap();
    git(&root, &["init", "-q"]);
    std::fs::write(root.join("a.txt"), "one\n").unwrap();
    git(&root, &["add", "a.txt"]);
    git(&root, &["commit", "-q", "-m", "one"]);
    (tmp, root, shadows)
}

#[test]
fn only_allow_listed_settings_reach_the_shadow_config() {
    let (_tmp, root, shadows) = checkout();
    let hostile = "\
[core]
\tfilemode = false
\tfsmonitor = touch /tmp/x
\tsshCommand = touch /tmp/x
\thooksPath = /tmp
\tworktree = /etc
[filter \"x\"]
\tclean = touch /tmp/x
\tprocess = touch /tmp/x
\trequired = true
[alias]
\tdiff = !touch /tmp/x
[include]
\tpath = /tmp/evil.config
[includeIf \"gitdir:/\"]
\tpath = /tmp/evil.config
[extensions]
\tworktreeConfig = true
\tpartialClone = origin
[core]
\tREPOSITORYFORMATVERSION = 1
\tsymlinks = \"true\"
\tautocrlf = input ; a comment
\teol = \"l\\nf\"
";
    std::fs::write(root.join(".git/config"), hostile).unwrap();
    let shadow = Shadow::build(&root, &shadows, None).unwrap();
    let config = std::fs::read_to_string(shadow.path().join("config")).unwrap();
    assert_eq!(
        config,
        "[core]\n\tbare = false\n\tfilemode = false\n\trepositoryformatversion = 1\n\
         \tsymlinks = true\n\tautocrlf = input\n"
    );
    // No hooks directory, no attributes, no worktree config.
    let mut names: Vec<_> = std::fs::read_dir(shadow.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["HEAD", "config", "index", "info", "objects", "refs"],
        "{names:?}"
    );
    let dir = shadow.path().to_owned();
    drop(shadow);
    assert!(!dir.exists(), "the shadow is removed when dropped");
    assert!(root.join(".git/objects").is_dir(), "never what it links to");
}

#[test]
fn git_reads_the_repository_through_the_shadow() {
    let (_tmp, root, shadows) = checkout();
    std::fs::write(root.join("a.txt"), "two\n").unwrap();
    std::fs::write(root.join("b.txt"), "new\n").unwrap();
    git(&root, &["add", "b.txt"]);
    let shadow = Shadow::build(&root, &shadows, None).unwrap();
    let run = |extra: &[&str]| {
        let output = Command::new("git")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .envs(git_environment())
            .args(shadow.git_args().unwrap())
            .args(extra)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(output.status.success(), "{extra:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(run(&["diff"]).contains("-one\n+two"));
    assert!(run(&["diff", "--cached"]).contains("+new"));
    assert_eq!(run(&["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "main");
}

#[test]
fn a_linked_git_dir_or_config_is_refused_not_followed() {
    let (tmp, root, shadows) = checkout();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "[core]\n\tfilemode = false\n").unwrap();
    let config = root.join(".git/config");
    std::fs::remove_file(&config).unwrap();
    symlink(&secret, &config).unwrap();
    let err = Shadow::build(&root, &shadows, None).unwrap_err();
    assert!(
        err.to_string().contains("config is a symbolic link"),
        "{err}"
    );

    let (_tmp2, other, _) = checkout();
    std::fs::rename(root.join(".git"), tmp.path().join("real-git")).unwrap();
    symlink(other.join(".git"), root.join(".git")).unwrap();
    let err = Shadow::build(&root, &shadows, None).unwrap_err();
    assert!(matches!(err, ShadowError::NotADirectory), "{err}");

    std::fs::remove_file(root.join(".git")).unwrap();
    std::fs::write(root.join(".git"), "gitdir: /etc\n").unwrap();
    let err = Shadow::build(&root, &shadows, None).unwrap_err();
    assert!(matches!(err, ShadowError::NotADirectory), "{err}");

    std::fs::remove_file(root.join(".git")).unwrap();
    let err = Shadow::build(&root, &shadows, None).unwrap_err();
    assert!(matches!(err, ShadowError::NotACheckout), "{err}");
    assert_eq!(std::fs::read_dir(&shadows).unwrap().count(), 0);
}

#[test]
fn head_must_be_a_ref_name_or_an_object_id() {
    for good in [
        "ref: refs/heads/main\n",
        "ref: refs/heads/feature/x-1",
        &"a".repeat(40),
        &"0".repeat(64),
    ] {
        assert!(checked_head(good.as_bytes()).is_ok(), "{good}");
    }
    for bad in [
        "ref: /etc/passwd",
        "ref: refs/../../config",
        "ref: refs/heads/a b",
        "HEAD",
        &"g".repeat(40),
        "",
    ] {
        assert!(checked_head(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn a_step_user_reads_the_repository_through_the_runners_shadow() {
    // A root runner runs the tool's git as the step's user: the shadow (the runner's,
    // under a shared temporary directory) must be readable and accepted by git.
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let (tmp, root, _) = checkout();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("a.txt"), "two\n").unwrap();
    // The workspace's config and index are parsed by git as that user too.
    std::fs::write(root.join(".git/config"), "[core]\n\tfilemode = false\n").unwrap();
    let user = StepUser {
        uid: 3_999_031,
        gid: 3_999_031,
    };
    let shadow = Shadow::of_checkout(&root, Some(user)).unwrap();
    let config = std::fs::read_to_string(shadow.path().join("config")).unwrap();
    assert!(config.contains("filemode = false"), "{config}");
    use std::os::unix::process::CommandExt;
    let output = Command::new("git")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .envs(git_environment())
        .uid(3_999_031)
        .gid(3_999_031)
        .args(shadow.git_args().unwrap())
        .args(["diff", "--no-ext-diff", "--no-textconv"])
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("-one\n+two"), "{stdout}");
}

/// An index of version 2 listing `paths`, each the blob `object`, as a step can write one
/// byte by byte: git checks the paths it adds, never those of an index it reads. Its
/// trailing hash is zeros, which git (2.40 and later) reads as "not computed".
pub(crate) fn hostile_index(paths: &[&[u8]], object: &str) -> Vec<u8> {
    let object: Vec<u8> = (0..object.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&object[i..i + 2], 16).unwrap())
        .collect();
    let mut paths = paths.to_vec();
    paths.sort();
    let mut index = b"DIRC".to_vec();
    index.extend(2u32.to_be_bytes());
    index.extend((paths.len() as u32).to_be_bytes());
    for path in paths {
        let mut entry = vec![0u8; 24];
        entry.extend(0o100644u32.to_be_bytes());
        entry.extend([0u8; 12]);
        entry.extend(&object);
        entry.extend((path.len().min(0xfff) as u16).to_be_bytes());
        entry.extend(path);
        let pad = 8 - entry.len() % 8;
        entry.extend(vec![0u8; pad]);
        index.extend(entry);
    }
    index.extend([0u8; 20]);
    index
}

#[test]
fn an_index_entry_outside_the_working_tree_refuses_the_workspace() {
    // regression (issue 30, B5): entries `../SECRET.txt`, `../../../../etc/hostname` made
    // `git diff` print files outside the workspace.
    let (tmp, root, shadows) = checkout();
    std::fs::write(tmp.path().join("SECRET.txt"), "TOP SECRET OUTSIDE\n").unwrap();
    let object = git(&root, &["rev-parse", "HEAD:a.txt"]);
    let object = object.trim();
    let deep = format!("{}etc/hostname", "../".repeat(12));
    let cases: &[&[u8]] = &[
        b"../SECRET.txt",
        deep.as_bytes(),
        b"/etc/os-release",
        b"sub/../../SECRET.txt",
        b"./a.txt",
        b"sub//a.txt",
        b"sub/",
        b".git/config",
        b"sub/.GIT/config",
        b".git./config",
        b".git::$INDEX_ALLOCATION/config",
        b"git~1/config",
        "sub/.g\u{200c}it/config".as_bytes(),
        b"sub\\.git\\config",
        b"a\nb",
        b"a\x1b[2Jb",
    ];
    for path in cases {
        std::fs::write(
            root.join(".git/index"),
            hostile_index(&[b"a.txt", path], object),
        )
        .unwrap();
        let err = Shadow::build(&root, &shadows, None).unwrap_err();
        assert!(matches!(err, ShadowError::Index(_)), "{path:?}: {err}");
        let shown = String::from_utf8_lossy(path).escape_debug().to_string();
        assert!(err.to_string().contains(&shown), "{err}");
    }
    assert_eq!(std::fs::read_dir(&shadows).unwrap().count(), 0);
    // A plain index of the same shape is read.
    std::fs::write(
        root.join(".git/index"),
        hostile_index(
            &[b"a.txt", b"sub/.gitignore", b"a\\b", b".github/x"],
            object,
        ),
    )
    .unwrap();
    Shadow::build(&root, &shadows, None).unwrap();
}

/// regression: `llm::tools` tests' `git_diff` missed a rewrite of the same size made within
/// the second of the index's last write when the copy was made a second later: git
/// trusts an entry's cached stat only when the entry is older than the index file.
#[test]
fn the_index_copy_keeps_the_index_s_modification_time() {
    let (_tmp, root, shadows) = checkout();
    let index = root.join(".git/index");
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(&index)
        .unwrap()
        .set_modified(when)
        .unwrap();
    let shadow = Shadow::build(&root, &shadows, None).unwrap();
    let copied = std::fs::metadata(shadow.path().join("index")).unwrap();
    assert_eq!(copied.modified().unwrap(), when);
}

#[test]
fn the_shadow_reads_a_copy_of_the_index_and_no_alternates() {
    let (tmp, root, shadows) = checkout();
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    git(&other, &["init", "-q"]);
    std::fs::write(
        root.join(".git/objects/info/alternates"),
        format!("{}\n", other.join(".git/objects").display()),
    )
    .unwrap();
    let shadow = Shadow::build(&root, &shadows, None).unwrap();
    let index = shadow.path().join("index");
    assert!(index.symlink_metadata().unwrap().is_file(), "a copy");
    assert_eq!(
        std::fs::read(&index).unwrap(),
        std::fs::read(root.join(".git/index")).unwrap()
    );
    let objects = shadow.path().join("objects");
    assert!(objects.symlink_metadata().unwrap().is_dir(), "a directory");
    for entry in std::fs::read_dir(&objects).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name == "pack" || (name.len() == 2 && u8::from_str_radix(&name, 16).is_ok()),
            "{name}"
        );
    }
    assert!(!objects.join("info").exists());
}

#[test]
fn index_files_that_are_links_or_too_many_are_refused() {
    let (tmp, root, shadows) = checkout();
    let index = root.join(".git/index");
    std::fs::rename(&index, tmp.path().join("index")).unwrap();
    symlink(tmp.path().join("index"), &index).unwrap();
    let err = Shadow::build(&root, &shadows, None).unwrap_err();
    assert!(
        err.to_string().contains("index is a symbolic link"),
        "{err}"
    );
    std::fs::remove_file(&index).unwrap();
    std::fs::hard_link(tmp.path().join("index"), &index).unwrap();
    let err = Shadow::build(&root, &shadows, None).unwrap_err();
    assert!(err.to_string().contains("hard links"), "{err}");
    std::fs::remove_file(&index).unwrap();
    let mut huge = b"DIRC".to_vec();
    huge.extend(2u32.to_be_bytes());
    huge.extend(u32::MAX.to_be_bytes());
    std::fs::write(&index, huge).unwrap();
    let err = Shadow::build(&root, &shadows, None).unwrap_err();
    assert!(err.to_string().contains("entries, more than"), "{err}");
    assert_eq!(std::fs::read_dir(&shadows).unwrap().count(), 0);
}

#[test]
fn a_listing_past_its_bounds_is_refused() {
    let record = |path: &str| format!("100644 {} 0\t{path}\0", "0".repeat(40));
    let fine: String = (0..3).map(|i| record(&format!("f{i}"))).collect();
    assert!(index::check_records(fine.as_bytes()).is_ok());
    let long = record(&"a".repeat(index::MAX_ENTRY_PATH + 200));
    let err = index::check_records(long.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
    let cut = "100644 0000 0\ta.txt";
    assert!(index::check_records(cut.as_bytes()).is_err());
}
