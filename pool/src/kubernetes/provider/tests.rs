//! Tests of `provider`: the kinds a pod's failure reason is counted under are few and fixed.

use super::*;

#[test]
fn failure_kinds_are_few_and_fixed() {
    for (reason, kind) in [
        (
            "ImagePullBackOff: Back-off pulling image \"x\"",
            "ImagePullBackOff",
        ),
        ("OOMKilled", "OOMKilled"),
        ("exit code 3", "Error"),
        ("not running after 120s", "StartTimeout"),
        ("class no longer configured", "Other"),
        ("deleted", "deleted"),
    ] {
        assert_eq!(reason_kind(reason), kind);
    }
    assert!(is_start_failure("ErrImagePull: not found"));
    assert!(is_start_failure(
        "ErrImageNeverPull: Container image \"plue-missing:0\" is not present with pull policy of Never"
    ));
    assert!(is_start_failure("Unschedulable"));
    assert!(!is_start_failure("OOMKilled"));
}
