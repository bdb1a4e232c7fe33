//! The tools against real workspaces: confinement (links, `..`, `.git`, FIFOs), caps,
//! timeouts, and what each tool returns.

use std::os::unix::fs::symlink;

use super::*;

fn toolbox(root: &Path) -> Toolbox {
    let all: Vec<String> = ALL.iter().map(|t| t.to_string()).collect();
    Toolbox::new(
        root,
        &all,
        BTreeMap::new(),
        Vec::new(),
        CancellationToken::new(),
    )
    .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

/// `work/` (the workspace, with `a.txt`, `sub/b.txt`, links in and out) next to
/// `outside/secret.txt`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("work");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("a.txt"), "alpha\nbeta\ngamma\n").unwrap();
    std::fs::write(root.join("sub/b.txt"), "inner").unwrap();
    std::fs::write(outside.join("secret.txt"), "do not touch").unwrap();
    symlink("sub/b.txt", root.join("inside-link")).unwrap();
    symlink(outside.join("secret.txt"), root.join("out-file")).unwrap();
    symlink(&outside, root.join("out-dir")).unwrap();
    symlink(outside.join("missing"), root.join("dangling-out")).unwrap();
    Fixture {
        _dir: dir,
        root,
        outside,
    }
}

async fn call(tools: &Toolbox, name: &str, input: Value) -> ToolOutput {
    tools.call(name, &input).await
}

#[tokio::test]
async fn reads_inside_and_through_inner_links() {
    let f = fixture();
    let tools = toolbox(&f.root);
    let out = call(&tools, "read_file", json!({"path": "a.txt"})).await;
    assert_eq!(out, ToolOutput::ok("alpha\nbeta\ngamma\n"));
    let out = call(&tools, "read_file", json!({"path": "./inside-link"})).await;
    assert_eq!(out.content, "inner");
    let out = call(
        &tools,
        "read_file",
        json!({"path": "a.txt", "start_line": 2, "line_count": 1}),
    )
    .await;
    assert_eq!(out.content, "beta\n");
}

#[tokio::test]
async fn paths_leading_out_are_error_results() {
    let f = fixture();
    let tools = toolbox(&f.root);
    for path in [
        "../outside/secret.txt",
        "../../etc/passwd",
        "/etc/passwd",
        "sub/../../outside/secret.txt",
        "out-file",
        "out-dir/secret.txt",
        "dangling-out",
    ] {
        let out = call(&tools, "read_file", json!({ "path": path })).await;
        assert!(out.is_error, "{path}: {out:?}");
        assert!(!out.content.contains("do not touch"), "{path}: {out:?}");
    }
    let out = call(&tools, "list_files", json!({"path": "out-dir"})).await;
    assert!(out.is_error && out.content.contains("outside"), "{out:?}");
    let out = call(
        &tools,
        "grep",
        json!({"pattern": "touch", "path": "out-dir"}),
    )
    .await;
    assert!(out.is_error, "{out:?}");
}

#[tokio::test]
async fn writes_stay_inside_and_never_follow_links() {
    let f = fixture();
    let tools = toolbox(&f.root);
    let out = call(
        &tools,
        "write_file",
        json!({"path": "new/dir/c.txt", "content": "gamma ✓"}),
    )
    .await;
    assert!(!out.is_error, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(f.root.join("new/dir/c.txt")).unwrap(),
        "gamma ✓"
    );
    for path in [
        "out-file",
        "out-dir/new.txt",
        "inside-link",
        "dangling-out",
        "../outside/secret.txt",
        "/tmp/plue-escape.txt",
    ] {
        let out = call(&tools, "write_file", json!({"path": path, "content": "x"})).await;
        assert!(out.is_error, "{path}: {out:?}");
    }
    assert_eq!(
        std::fs::read_to_string(f.outside.join("secret.txt")).unwrap(),
        "do not touch"
    );
    assert!(!f.outside.join("new.txt").exists());
    assert!(!f.outside.join("missing").exists());
    assert_eq!(
        std::fs::read_to_string(f.root.join("sub/b.txt")).unwrap(),
        "inner"
    );
}

#[tokio::test]
async fn lists_and_greps() {
    let f = fixture();
    let tools = toolbox(&f.root);
    let out = call(&tools, "list_files", json!({})).await;
    assert_eq!(
        out.content,
        "a.txt\ndangling-out@\ninside-link@\nout-dir@\nout-file@\nsub/"
    );
    let out = call(
        &tools,
        "list_files",
        json!({"path": "sub", "recursive": true}),
    )
    .await;
    assert_eq!(out.content, "sub/b.txt");
    let out = call(&tools, "grep", json!({"pattern": "^be"})).await;
    assert_eq!(out, ToolOutput::ok("./a.txt:2:beta\n"));
    let out = call(&tools, "grep", json!({"pattern": "nothing-here"})).await;
    assert!(!out.is_error && out.content.starts_with("no matches"));
    let out = call(&tools, "grep", json!({"pattern": "("})).await;
    assert!(out.is_error, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_reports_output_and_exit_codes_and_times_out() {
    let f = fixture();
    let tools = toolbox(&f.root);
    let out = call(&tools, "bash", json!({"command": "cat a.txt | wc -l"})).await;
    assert_eq!(out, ToolOutput::ok("3\n[exit code 0]"));
    let out = call(&tools, "bash", json!({"command": "echo oops >&2; exit 4"})).await;
    assert_eq!(out, ToolOutput::error("oops\n[exit code 4]"));
    let started = std::time::Instant::now();
    let out = call(
        &tools,
        "bash",
        json!({"command": "echo begun; sleep 30", "timeout_secs": 1}),
    )
    .await;
    assert!(out.is_error);
    assert!(
        out.content.starts_with("begun\n[timed out after 1s"),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn unoffered_tools_and_bad_input_are_error_results() {
    let f = fixture();
    let tools = Toolbox::new(
        &f.root,
        &["read_file".to_string()],
        BTreeMap::new(),
        Vec::new(),
        CancellationToken::new(),
    )
    .unwrap();
    assert_eq!(tools.definitions().len(), 1);
    assert_eq!(tools.definitions()[0]["name"], "read_file");
    let out = call(&tools, "bash", json!({"command": "true"})).await;
    assert!(
        out.is_error && out.content.contains("not available"),
        "{out:?}"
    );
    let out = call(&tools, "read_file", json!({"path": 3})).await;
    assert!(out.is_error && out.content.contains("needs a string 'path'"));
    let err = Toolbox::new(
        &f.root,
        &["rm_rf".to_string()],
        BTreeMap::new(),
        Vec::new(),
        CancellationToken::new(),
    )
    .unwrap_err();
    assert!(err.contains("unknown tool 'rm_rf'"), "{err}");
}

#[tokio::test]
async fn git_diff_shows_changes_and_untracked_files() {
    let f = fixture();
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(["-c", "user.name=P", "-c", "user.email=p@example.com"])
            .arg("-C")
            .arg(&f.root)
            .args(args)
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "a.txt"]);
    git(&["commit", "-q", "-m", "one"]);
    std::fs::write(f.root.join("a.txt"), "alpha\nBETA\ngamma\n").unwrap();
    let tools = toolbox(&f.root);
    let out = call(&tools, "git_diff", json!({})).await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.content.contains("-beta\n+BETA"), "{}", out.content);
    assert!(out.content.contains("# untracked files"), "{}", out.content);
    let out = call(&tools, "git_diff", json!({"path": "../x"})).await;
    assert!(out.is_error);
}

fn git_in(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(["-c", "user.name=P", "-c", "user.email=p@example.com"])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
}

#[tokio::test]
async fn writes_under_dot_git_are_refused() {
    // regression: write_file .git/config + git_diff ran commands through git's config.
    let f = fixture();
    git_in(&f.root, &["init", "-q"]);
    symlink(".git", f.root.join("innocent")).unwrap();
    std::fs::create_dir(f.root.join("sub/.GIT")).unwrap();
    let config = std::fs::read_to_string(f.root.join(".git/config")).unwrap();
    let tools = toolbox(&f.root);
    for path in [
        ".git/config",
        "./.git/hooks/pre-commit",
        ".GIT/config",
        "sub/.Git/x",
        ".git",
        "innocent/config",
    ] {
        let out = call(&tools, "write_file", json!({"path": path, "content": "x"})).await;
        assert!(out.is_error, "{path}: {out:?}");
        assert!(out.content.contains("inside .git"), "{path}: {out:?}");
    }
    assert_eq!(
        std::fs::read_to_string(f.root.join(".git/config")).unwrap(),
        config
    );
    assert!(!f.root.join("sub/.GIT/x").exists());
    let out = call(
        &tools,
        "write_file",
        json!({"path": "gitignore.git", "content": "x"}),
    )
    .await;
    assert!(!out.is_error, "{out:?}");
}

#[tokio::test]
async fn git_diff_runs_no_command_from_the_repository_config() {
    let f = fixture();
    git_in(&f.root, &["init", "-q"]);
    git_in(&f.root, &["add", "a.txt"]);
    git_in(&f.root, &["commit", "-q", "-m", "one"]);
    // A workspace whose repository asks git to run commands (as a prepared checkout, or
    // a bash call, could arrange).
    let marker = f.outside.join("ran");
    let run = format!("touch {}; cat", marker.display());
    for (key, value) in [
        ("core.fsmonitor", run.as_str()),
        ("diff.evil.textconv", run.as_str()),
        ("diff.external", run.as_str()),
        ("core.pager", run.as_str()),
    ] {
        git_in(&f.root, &["config", key, value]);
    }
    std::fs::write(f.root.join(".gitattributes"), "*.txt diff=evil\n").unwrap();
    std::fs::write(f.root.join("a.txt"), "alpha\nBETA\ngamma\n").unwrap();
    let tools = toolbox(&f.root);
    let out = call(&tools, "git_diff", json!({})).await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.content.contains("-beta\n+BETA"), "{}", out.content);
    assert!(
        !marker.exists(),
        "git ran a command from the workspace's config"
    );
}

#[tokio::test]
async fn git_diff_runs_no_filter_alias_hook_or_include_the_workspace_configures() {
    // regression: a handed-on workspace's `filter.<x>.clean` (named by `.gitattributes`)
    // ran when a reviewer with no `bash` tool called git_diff.
    let f = fixture();
    git_in(&f.root, &["init", "-q"]);
    std::fs::write(f.root.join("b.md"), "one\n").unwrap();
    git_in(&f.root, &["add", "a.txt", "b.md"]);
    git_in(&f.root, &["commit", "-q", "-m", "one"]);
    std::fs::write(f.root.join("b.md"), "two\n").unwrap();
    git_in(&f.root, &["add", "b.md"]);
    // Each setting runs `evil <its name>`, which leaves a marker file named after it.
    let evil = f.outside.join("evil.sh");
    let markers = f.outside.join("ran");
    std::fs::create_dir(&markers).unwrap();
    std::fs::write(
        &evil,
        format!("#!/bin/sh\ntouch {}/\"$1\"\ncat\n", markers.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |name: &str| format!("{} {name}", evil.display());
    let hooks = f.outside.join("hooks");
    std::fs::create_dir(&hooks).unwrap();
    for hook in ["post-checkout", "post-index-change", "pre-auto-gc"] {
        std::fs::copy(&evil, hooks.join(hook)).unwrap();
    }
    let included = f.outside.join("included.config");
    std::fs::write(
        &included,
        format!("[filter \"inc\"]\n\tclean = {}\n", run("include")),
    )
    .unwrap();
    for (key, value) in [
        ("filter.x.clean", run("clean")),
        ("filter.x.smudge", run("smudge")),
        ("filter.x.process", run("process")),
        ("filter.x.required", "true".into()),
        ("diff.x.textconv", run("textconv")),
        ("diff.x.command", run("diff-command")),
        ("diff.external", run("external")),
        ("core.fsmonitor", run("fsmonitor")),
        ("core.pager", run("pager")),
        ("pager.diff", run("pager-diff")),
        ("core.sshCommand", run("ssh")),
        ("core.editor", run("editor")),
        ("alias.diff", format!("!{}", run("alias"))),
        ("alias.ls-files", format!("!{}", run("alias"))),
        ("core.hooksPath", hooks.display().to_string()),
        ("include.path", included.display().to_string()),
        ("submodule.recurse", "true".into()),
    ] {
        git_in(&f.root, &["config", key, &value]);
    }
    std::fs::write(f.root.join(".gitattributes"), "*.txt filter=x diff=x\n").unwrap();
    std::fs::write(f.root.join(".git/info/attributes"), "*.md filter=inc\n").unwrap();
    std::fs::write(f.root.join("a.txt"), "alpha\nBETA\ngamma\n").unwrap();
    std::fs::write(f.root.join("b.md"), "three\n").unwrap();
    let tools = toolbox(&f.root);
    let out = call(&tools, "git_diff", json!({})).await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.content.contains("-beta\n+BETA"), "{}", out.content);
    assert!(out.content.contains("-two\n+three"), "{}", out.content);
    let out = call(&tools, "git_diff", json!({"staged": true, "path": "b.md"})).await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.content.contains("-one\n+two"), "{}", out.content);
    let ran: Vec<_> = std::fs::read_dir(&markers)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(ran.is_empty(), "git ran the workspace's commands: {ran:?}");
}

#[tokio::test]
async fn git_diff_never_shows_the_repository_above_the_workspace() {
    // regression: a copied workspace (no .git) under <repo>/.plue/... diffed the host.
    let f = fixture();
    let host = f.root.parent().unwrap();
    git_in(host, &["init", "-q"]);
    std::fs::write(host.join("host.txt"), "host secret\n").unwrap();
    git_in(host, &["add", "host.txt"]);
    git_in(host, &["commit", "-q", "-m", "host"]);
    std::fs::write(host.join("host.txt"), "host changed\n").unwrap();
    let tools = toolbox(&f.root);
    let out = call(&tools, "git_diff", json!({})).await;
    assert!(out.is_error, "{out:?}");
    assert!(out.content.contains("not a git checkout"), "{out:?}");
    assert!(!out.content.contains("host"), "{out:?}");
}

#[tokio::test]
async fn git_diff_never_prints_a_file_an_index_entry_names_outside_the_workspace() {
    // regression (issue 30, B5): index entries `../outside/secret.txt` and
    // `/…/outside/secret.txt` made git_diff print the file.
    let f = fixture();
    git_in(&f.root, &["init", "-q"]);
    git_in(&f.root, &["add", "a.txt"]);
    git_in(&f.root, &["commit", "-q", "-m", "one"]);
    let object = std::process::Command::new("git")
        .arg("-C")
        .arg(&f.root)
        .args(["rev-parse", "HEAD:a.txt"])
        .output()
        .unwrap();
    let object = String::from_utf8(object.stdout).unwrap();
    let secret = f.outside.join("secret.txt");
    let absolute = secret.to_str().unwrap();
    let tools = toolbox(&f.root);
    for path in ["../outside/secret.txt", absolute] {
        let index =
            crate::git_sandbox::tests::hostile_index(&[b"a.txt", path.as_bytes()], object.trim());
        std::fs::write(f.root.join(".git/index"), index).unwrap();
        for staged in [false, true] {
            let out = call(&tools, "git_diff", json!({"staged": staged})).await;
            assert!(out.is_error, "{path}: {out:?}");
            assert!(!out.content.contains("do not touch"), "{path}: {out:?}");
            assert!(out.content.contains(".git/index is refused"), "{out:?}");
        }
    }
}

#[tokio::test]
async fn git_diff_reads_no_other_repository_through_alternates_or_the_step_environment() {
    // regression (issue 30): `.git/objects/info/alternates` naming another repository let
    // git_diff print that repository's blobs; so could `GIT_ALTERNATE_OBJECT_DIRECTORIES`
    // or `GIT_OBJECT_DIRECTORY` if a step's environment reached git.
    let f = fixture();
    let other = f.outside.join("other");
    std::fs::create_dir(&other).unwrap();
    git_in(&other, &["init", "-q"]);
    let secret = other.join("secret");
    std::fs::write(&secret, "OTHER REPOSITORY SECRET\n").unwrap();
    let object = std::process::Command::new("git")
        .arg("-C")
        .arg(&other)
        .args(["hash-object", "-w", "secret"])
        .output()
        .unwrap();
    let object = String::from_utf8(object.stdout).unwrap();
    let objects = other.join(".git/objects");
    git_in(&f.root, &["init", "-q"]);
    git_in(&f.root, &["add", "a.txt"]);
    git_in(&f.root, &["commit", "-q", "-m", "one"]);
    std::fs::write(
        f.root.join(".git/objects/info/alternates"),
        format!("{}\n", objects.display()),
    )
    .unwrap();
    let cacheinfo = format!("100644,{},leak.txt", object.trim());
    git_in(
        &f.root,
        &["update-index", "--add", "--cacheinfo", &cacheinfo],
    );
    std::fs::write(f.root.join("leak.txt"), "x\n").unwrap();
    std::fs::remove_file(f.root.join(".git/objects/info/alternates")).unwrap();
    let all: Vec<String> = ALL.iter().map(|t| t.to_string()).collect();
    let objects = objects.display().to_string();
    let env: BTreeMap<String, String> = [
        ("GIT_ALTERNATE_OBJECT_DIRECTORIES", objects.as_str()),
        ("GIT_OBJECT_DIRECTORY", objects.as_str()),
        ("GIT_DIR", other.to_str().unwrap()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let tools = Toolbox::new(&f.root, &all, env, Vec::new(), CancellationToken::new()).unwrap();
    // Through the step's environment only, then through alternates too.
    for alternates in [false, true] {
        if alternates {
            std::fs::write(
                f.root.join(".git/objects/info/alternates"),
                format!("{objects}\n"),
            )
            .unwrap();
        }
        for staged in [false, true] {
            let out = call(&tools, "git_diff", json!({"staged": staged})).await;
            assert!(
                !out.content.contains("OTHER REPOSITORY SECRET"),
                "alternates {alternates}, staged {staged}: {out:?}"
            );
        }
    }
}

#[tokio::test]
async fn git_diff_runs_the_runners_git_not_one_on_the_steps_path() {
    // regression (issue 30): the tool's `git` was looked up on the step's `PATH`, so a
    // workspace `bin/git` ran as the tool's git.
    let f = fixture();
    git_in(&f.root, &["init", "-q"]);
    git_in(&f.root, &["add", "a.txt"]);
    git_in(&f.root, &["commit", "-q", "-m", "one"]);
    std::fs::write(f.root.join("a.txt"), "alpha\nBETA\ngamma\n").unwrap();
    let bin = f.root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let marker = f.outside.join("fake-git-ran");
    std::fs::write(
        bin.join("git"),
        format!("#!/bin/sh\ntouch {}\necho FAKE GIT\n", marker.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let all: Vec<String> = ALL.iter().map(|t| t.to_string()).collect();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    let env = BTreeMap::from([("PATH".to_owned(), path)]);
    let tools = Toolbox::new(&f.root, &all, env, Vec::new(), CancellationToken::new()).unwrap();
    let out = call(&tools, "git_diff", json!({})).await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.content.contains("-beta\n+BETA"), "{}", out.content);
    assert!(!out.content.contains("FAKE GIT"), "{}", out.content);
    assert!(!marker.exists(), "the workspace's git ran");
}

#[tokio::test]
async fn grep_output_past_the_cap_stops_grep() {
    let f = fixture();
    let line = format!("{}\n", "match ".repeat(20));
    std::fs::write(f.root.join("big.txt"), line.repeat(200_000)).unwrap();
    let tools = toolbox(&f.root);
    let out = call(
        &tools,
        "grep",
        json!({"pattern": "match", "path": "big.txt"}),
    )
    .await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.content.len() <= OUTPUT_CAP, "{}", out.content.len());
    assert!(
        out.content.ends_with("; grep was stopped there]"),
        "{}",
        &out.content[out.content.len() - 200..]
    );
}

#[tokio::test]
async fn fifos_are_refused_without_blocking() {
    let f = fixture();
    let made = std::process::Command::new("mkfifo")
        .arg(f.root.join("pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    let tools = toolbox(&f.root);
    for (name, input) in [
        ("read_file", json!({"path": "pipe"})),
        ("write_file", json!({"path": "pipe", "content": "x"})),
    ] {
        let out = tokio::time::timeout(Duration::from_secs(5), call(&tools, name, input))
            .await
            .unwrap_or_else(|_| panic!("{name} blocked on a FIFO"));
        assert!(
            out.is_error && out.content.contains("not a regular file"),
            "{out:?}"
        );
    }
}

#[test]
fn caps_cut_on_char_boundaries() {
    let text = "é".repeat(10);
    let capped = cap(text, 5);
    assert!(capped.starts_with("éé\n[truncated: showing the first 4 of 20 bytes]"));
    assert_eq!(cap("short".into(), 5), "short");
}
