use super::lock::{LockEntry, LockFile};
use super::*;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn entry(git_ref: &str) -> LockEntry {
    LockEntry {
        repository: "acme/plue-steps".into(),
        path: "rust.plue.py".into(),
        git_ref: git_ref.into(),
        commit: SHA.into(),
    }
}

#[test]
fn names_that_could_escape_or_read_as_options_are_refused() {
    for bad in [
        "acme", "acme/", "/x", "acme/x/y", "../x", "acme/..", "-o/x", "a b/x",
    ] {
        assert!(check_repository(bad).is_err(), "{bad}");
    }
    check_repository("acme/plue-steps").unwrap();
    check_repository("a.b_c/d-e.f").unwrap();
    for bad in [
        "",
        "/etc/passwd.plue.py",
        "../x.plue.py",
        "a/../x.plue.py",
        "./x.plue.py",
        "-x.plue.py",
        "x.py",
        "a//x.plue.py",
        "a x.plue.py",
    ] {
        assert!(check_path(bad).is_err(), "{bad}");
    }
    check_path("ci/rust.plue.py").unwrap();
    for bad in ["", "-v", "a..b", "a:b", "v1^", "HEAD@{1}", "x.lock", "a b"] {
        assert!(check_ref(bad).is_err(), "{bad}");
    }
    check_ref("v1").unwrap();
    check_ref("release/2.x").unwrap();
    assert!(check_commit("abc123").is_err());
    assert!(check_commit(&SHA.to_uppercase()).is_err());
    check_commit(SHA).unwrap();
}

#[test]
fn the_parent_fetches_only_full_commits() {
    let mut request = ModuleRequest {
        repository: "acme/plue-steps".into(),
        path: "rust.plue.py".into(),
        commit: None,
        git_ref: None,
    };
    let unpinned = check_request(&request, true).unwrap_err();
    assert_eq!(
        unpinned,
        "use(\"acme/plue-steps\", \"rust.plue.py\"): not pinned to a commit"
    );
    request.git_ref = Some("v1".into());
    assert!(
        check_request(&request, false).is_err(),
        "a ref outside plue lock"
    );
    check_request(&request, true).unwrap();
    request.commit = Some("main".into());
    assert!(check_request(&request, true).is_err());
    request.commit = Some(SHA.into());
    check_request(&request, false).unwrap();
}

#[test]
fn a_lock_file_round_trips_and_finds_its_pins() {
    let lock = LockFile::of(vec![entry("v2"), entry("v1"), entry("v1")]);
    assert_eq!(lock.modules.len(), 2, "sorted and deduplicated");
    assert_eq!(lock.modules[0].git_ref, "v1");
    let text = lock.to_text();
    assert!(text.contains("\"ref\": \"v1\""), "{text}");
    let back = LockFile::parse(&text).unwrap();
    assert_eq!(back, lock);
    assert_eq!(
        back.commit_of("acme/plue-steps", "rust.plue.py", "v1"),
        Some(SHA)
    );
    assert_eq!(
        back.commit_of("acme/plue-steps", "rust.plue.py", "v3"),
        None
    );
    assert_eq!(back.commit_of("acme/plue-steps", "go.plue.py", "v1"), None);
}

#[test]
fn a_wrong_lock_file_is_refused_with_its_reason() {
    let twice = format!(
        "{{\"version\":1,\"modules\":[{0},{0}]}}",
        serde_json::to_string(&entry("v1")).unwrap()
    );
    assert!(LockFile::parse(&twice)
        .unwrap_err()
        .contains("listed twice"));
    let short = twice.replace(SHA, "abc");
    assert!(LockFile::parse(&short)
        .unwrap_err()
        .contains("not a full commit"));
    let unknown = "{\"version\":1,\"modules\":[],\"extra\":1}";
    assert!(LockFile::parse(unknown)
        .unwrap_err()
        .contains("unknown field"));
    let version = "{\"version\":2,\"modules\":[]}";
    assert!(LockFile::parse(version).unwrap_err().contains("version 2"));
    let escape = twice.replace("rust.plue.py", "../rust.plue.py");
    assert!(LockFile::parse(&escape).is_err());
}
