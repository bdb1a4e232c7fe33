//! Plue's hardened pod defaults and a class's template merged over them: the spec the
//! pod builder ([`crate::kubernetes`]'s pod builder) starts from and the hardening checks
//! ([`super`]) judge. Pure.
//!
//! Invariant: the defaults are the safe side of every setting the hardening forces (non-root
//! user, no privilege escalation, every capability dropped, `RuntimeDefault` seccomp,
//! read-only root file system, no service-account token, no service links).

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::DeepMerge;

use crate::class::RUNNER_CONTAINER;

/// The uid and gid runner pods run as unless the template says otherwise.
pub(crate) const RUNNER_UID: i64 = 65532;

/// Plue's defaults, under the template.
fn defaults() -> PodSpec {
    let seccomp = SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    };
    PodSpec {
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(30),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUNNER_UID),
            run_as_group: Some(RUNNER_UID),
            fs_group: Some(RUNNER_UID),
            seccomp_profile: Some(seccomp.clone()),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: RUNNER_CONTAINER.into(),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                seccomp_profile: Some(seccomp),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }],
        ..PodSpec::default()
    }
}

/// The class's pod spec as the template makes it: the template merged over Plue's
/// defaults, before the hardening is forced and Plue's own parts are added (what
/// [`hardening::problems`] checks).
pub(crate) fn merged_spec(template: &PodTemplateSpec) -> PodSpec {
    let mut spec = defaults();
    spec.merge_from(template.spec.clone().unwrap_or_default());
    spec
}
